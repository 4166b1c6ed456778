"""Argument checks shared by every public function.

Every message names the parameter in backticks, states the rule and echoes the value::

    `label_smoothing` must be in [0, 1]; got 1.5

Checks that need the data (ranges, sums) read one boolean back to the host; under a lazy
array library (a JAX tracer inside ``jit``) they are skipped, since the values do not exist yet,
and so are they for arrays outside host memory inside :func:`checks_disabled`, where that read
would make the host wait for the device.

A message names a parameter as the caller knows it: the core's ``logits`` and ``targets`` are
``input`` and ``target`` when :mod:`crossentropy.torch` calls the core inside
:func:`parameter_names`; every message formats its parameter names through :func:`shown`.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import numbers
import types
from collections.abc import Iterator, Mapping
from typing import NoReturn, get_args

import array_api_compat

from ._array import concrete_bool, host_float, in_host_memory, is_integer, is_real_floating
from ._typing import Array, DType, Namespace, Reduction

REDUCTIONS: tuple[Reduction, ...] = get_args(Reduction)

_SHOWN_NAMES: contextvars.ContextVar[Mapping[str, str]] = contextvars.ContextVar(
    "crossentropy_shown_names", default=types.MappingProxyType({})
)


_VALUE_CHECKS = contextvars.ContextVar("crossentropy_value_checks", default=True)


@contextlib.contextmanager
def checks_disabled() -> Iterator[None]:
    """Within the block, skip the checks of values that live on a device (a GPU), not in host memory.

    Checking that class indices lie in ``[0, C)``, that weights are finite and non-negative,
    that probabilities lie in [0, 1] or rows sum to 1, and that logits do not look like
    probabilities reads a result back from the device, and the host waits for every kernel queued
    before it: a synchronization in each training step, which costs throughput and keeps the host
    from queueing work ahead. Inside ``checks_disabled()`` those checks are skipped for arrays on a
    device (CUDA tensors, CuPy arrays); checks of shapes, dtypes and options, which read no data,
    still run, and so do all checks of arrays in host memory (NumPy, CPU tensors), which cost no
    synchronization. A class index out of range then gives a NaN loss on the GPU kernels instead
    of an error; invalid weights or probabilities give whatever the formulas make of them.

    Usable as a context manager or a decorator; it applies to the current thread (or task).

    Yields
    ------
    None
        The block runs with the device checks off; they are back on when it ends.

    Examples
    --------
    >>> import numpy as np
    >>> import crossentropy as ce
    >>> with ce.checks_disabled():  # host arrays are still checked
    ...     ce.softmax_cross_entropy(np.zeros((1, 2)), np.array([5]))
    Traceback (most recent call last):
    ...
    ValueError: `targets` must be class indices in [0, 2) or ignore_index=-100; got 5 at index (0,)
    """
    token = _VALUE_CHECKS.set(False)
    try:
        yield
    finally:
        _VALUE_CHECKS.reset(token)


def checks_values(x: Array) -> bool:
    """Whether a check may read the values of ``x``: always in host memory, outside :func:`checks_disabled`
    on a device."""
    return _VALUE_CHECKS.get() or in_host_memory(x)


def shown(name: str) -> str:
    """The name messages give the core's parameter ``name``: the caller's own inside :func:`parameter_names`."""
    return _SHOWN_NAMES.get().get(name, name)


@contextlib.contextmanager
def parameter_names(**names: str) -> Iterator[None]:
    """Within the block, messages call the core's parameters by other names (``logits="input"``).

    For wrappers with their own signatures, such as :mod:`crossentropy.torch`, whose users
    pass ``input`` and ``target``: a message about ``logits`` would name nothing they wrote.
    """
    token = _SHOWN_NAMES.set(types.MappingProxyType({**_SHOWN_NAMES.get(), **names}))
    try:
        yield
    finally:
        _SHOWN_NAMES.reset(token)


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return repr(value)
    return str(value)


def _fmt_bound(bound: float) -> str:
    """An interval end as a reader writes it: ``1`` rather than ``1.0``."""
    return str(int(bound)) if float(bound).is_integer() else repr(float(bound))


def check_reduction(reduction: object) -> Reduction:
    if not isinstance(reduction, str) or reduction not in REDUCTIONS:
        raise ValueError(f"`reduction` must be one of 'mean', 'sum', 'none'; got {_fmt(reduction)}")
    return reduction


def check_number(
    name: str,
    value: object,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """Check that ``value`` is a finite real number in the given interval; return it as float."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{shown(name)}` must be a real number; got {_fmt(value)} of type {type(value).__name__}")
    value = float(value)
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if not math.isfinite(value) or too_low or too_high:
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        lo = "-inf" if low is None else _fmt_bound(low)
        hi = "inf" if high is None else _fmt_bound(high)
        rule = f"must be {'>' if low_open else '>='} {lo}" if high is None else f"must be in {left}{lo}, {hi}{right}"
        raise ValueError(f"`{shown(name)}` {rule}; got {_fmt(value)}")
    return value


def check_integer_option(name: str, value: object, *, low: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"`{shown(name)}` must be an integer; got {_fmt(value)} of type {type(value).__name__}")
    value = int(value)
    if low is not None and value < low:
        raise ValueError(f"`{shown(name)}` must be >= {low}; got {value}")
    return value


def check_base(base: object) -> float | None:
    """``None`` (nats) or a positive number other than 1."""
    if base is None:
        return None
    value = check_number("base", base, low=0.0, low_open=True)
    if value == 1.0:
        raise ValueError("`base` must be positive and not 1 (None means nats, 2 bits); got 1.0")
    return value


def check_axis(name: str, axis: object, ndim: int) -> int:
    """Normalize ``axis`` to a non-negative index into an array of ``ndim`` dimensions."""
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
        raise TypeError(f"`{shown(name)}` must be an integer; got {_fmt(axis)}")
    if not -ndim <= int(axis) < ndim:
        raise ValueError(f"`{shown(name)}` must be in [{-ndim}, {ndim}) for an array of {ndim} dimensions; got {axis}")
    return int(axis) % ndim


def check_floating(name: str, x: Array, xp: Namespace) -> None:
    if not is_real_floating(xp, x):
        raise TypeError(f"`{shown(name)}` must be a real floating-point array; got dtype {x.dtype}")


def check_ndim(name: str, x: Array, *, at_least: int) -> None:
    if x.ndim < at_least:
        raise ValueError(f"`{shown(name)}` must have at least {at_least} dimension(s); got shape {tuple(x.shape)}")


def check_not_empty(name: str, x: Array) -> None:
    if any(n == 0 for n in x.shape):
        raise ValueError(f"`{shown(name)}` must not be empty; got shape {tuple(x.shape)}")


def check_shape(name: str, x: Array, expected: tuple[int, ...], *, rule: str) -> None:
    """Raise unless ``x.shape == expected``; ``rule`` says what the shape must match."""
    if tuple(x.shape) != tuple(expected):
        raise ValueError(f"`{shown(name)}` must have shape {tuple(expected)} ({rule}); got shape {tuple(x.shape)}")


def _first_index(mask: Array, xp: Namespace) -> tuple[int, ...]:
    """Index of the first true entry of ``mask`` (``()`` for a 0-d mask)."""
    if mask.ndim == 0:
        return ()
    hits = xp.nonzero(mask)
    return tuple(int(h[0]) for h in hits)


def _value_at(x: Array, index: tuple[int, ...]) -> str:
    value = x[index] if index else x
    xp = array_api_compat.array_namespace(value)
    if is_integer(xp, value):
        return str(int(value))
    number = host_float(value)
    if math.isfinite(number) and xp.finfo(value.dtype).bits < 64:
        return f"{number:.8g}"  # shortest readable form of a float32/float16 value, not its float64 expansion
    return _fmt(number)


def _raise_at(name: str, rule: str, x: Array, bad: Array, xp: Namespace) -> NoReturn:
    index = _first_index(bad, xp)
    where = f" at index {index}" if x.ndim else ""
    count = int(xp.sum(xp.astype(bad, xp.int64)))
    more = f" ({count} such entries)" if count > 1 else ""
    raise ValueError(f"`{shown(name)}` {rule}; got {_value_at(x, index)}{where}{more}")


def _within(x: Array, xp: Namespace, *, high: float, high_open: bool) -> bool:
    """True unless the minimum and maximum of ``x`` show an entry outside ``[0, high]`` (or ``[0, high)``).

    Two fast reductions answer for valid input (a NaN makes them NaN, hence False); the
    elementwise mask that finds the first bad entry is built only when this returns False.
    Values that are not known yet (a lazy array) count as within.
    """
    if math.prod(x.shape) == 0 or not checks_values(x):
        return True
    top = xp.max(x)
    within = (xp.min(x) >= 0) & ((top < high) if high_open else (top <= high))
    return concrete_bool(within) is not False


def check_in_unit_interval(name: str, x: Array, xp: Namespace) -> None:
    """Every entry in [0, 1] (NaN fails)."""
    if _within(x, xp, high=1.0, high_open=False):
        return
    bad = ~((x >= 0) & (x <= 1))
    if concrete_bool(xp.any(bad)):
        _raise_at(name, "must contain probabilities in [0, 1]", x, bad, xp)


def check_nonnegative(name: str, x: Array, xp: Namespace) -> None:
    """Every entry finite and >= 0 (weights)."""
    if _within(x, xp, high=math.inf, high_open=True):
        return
    bad = ~((x >= 0) & (x < math.inf))
    if concrete_bool(xp.any(bad)):
        _raise_at(name, "must be finite and non-negative", x, bad, xp)


def sum_tolerance(xp: Namespace, dtype: DType) -> float:
    """Tolerance for "sums to 1": sqrt(machine epsilon) of ``dtype``, as scikit-learn uses."""
    return math.sqrt(xp.finfo(dtype).eps)


def check_rows_sum_to_one(name: str, x: Array, xp: Namespace, *, axis: int = -1, what: str = "rows") -> None:
    """Each slice along ``axis`` sums to 1 within :func:`sum_tolerance`."""
    if not checks_values(x):
        return
    sums = xp.sum(x, axis=axis)
    bad = ~(xp.abs(sums - 1) <= sum_tolerance(xp, x.dtype))
    if concrete_bool(xp.any(bad)):
        index = _first_index(bad, xp)
        where = f" at {index}" if sums.ndim else ""
        raise ValueError(f"`{shown(name)}` must have {what} summing to 1; got a sum of {_value_at(sums, index)}{where}")


def check_class_indices(name: str, targets: Array, xp: Namespace, num_classes: int, ignore_index: int | None) -> None:
    """Integer targets in ``[0, num_classes)``, or equal to ``ignore_index``."""
    if not is_integer(xp, targets):
        kind = "boolean" if targets.dtype == xp.bool else f"dtype {targets.dtype}"
        raise TypeError(f"`{shown(name)}` must be integer class indices; got {kind}")
    if not checks_values(targets):
        return
    bad = (targets < 0) | (targets >= num_classes)
    if ignore_index is not None:
        bad = bad & (targets != ignore_index)
    if concrete_bool(xp.any(bad)):
        ignore = f" or ignore_index={ignore_index}" if ignore_index is not None else ""
        _raise_at(name, f"must be class indices in [0, {num_classes}){ignore}", targets, bad, xp)
