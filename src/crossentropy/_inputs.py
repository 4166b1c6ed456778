"""Preparation of (logits, targets) pairs shared by every classification loss.

One place turns what a user passes into what the loss formulas need: the namespace, the
logits with the class axis moved last in their compute dtype, the targets as either safe
class indices with a validity mask or as a probability array, per-sample weights, and the
reduction with its documented denominators. Losses in :mod:`crossentropy.losses` and
:mod:`crossentropy.robust` build on it.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import cached_property

import array_api_compat
import numpy as np

from ._array import as_namespace_array, compute_dtype, concrete_bool, get_namespace, is_integer, move_axes, xmul
from ._typing import Array, ArrayLike, DType, Namespace, Reduction
from ._validation import (
    check_axis,
    check_class_indices,
    check_floating,
    check_in_unit_interval,
    check_ndim,
    check_nonnegative,
    check_not_empty,
    check_shape,
    checks_values,
    shown,
)

__all__ = [
    "ClassInputs",
    "ProbabilitiesAsLogitsWarning",
    "mean_scale",
    "prepare_class_inputs",
    "prepare_class_weight",
    "prepare_logits",
    "prepare_sample_weight",
    "reduce_loss",
    "safe_divide",
    "total",
    "warn_if_probabilities",
    "weighted_rows",
]


class ProbabilitiesAsLogitsWarning(UserWarning):
    """Issued when a loss that expects logits receives rows that look like probabilities.

    Softmax of probabilities is nearly uniform, so the loss barely moves and training stalls:
    a classic silent bug. The check reads a few rows only. Silence it with
    ``warnings.filterwarnings("ignore", category=ProbabilitiesAsLogitsWarning)``.
    """


# The default ``ignore_index`` of every loss, as PyTorch's; with probability targets only it is allowed.
DEFAULT_IGNORE_INDEX = -100
# Rows inspected by the probabilities-as-logits check: a few, so it costs nothing measurable; and the
# classes of the first row looked at first for a negative entry, which settles it for most logits.
_ROWS_CHECKED = 8
_PREFIX_CHECKED = 1024


@dataclass(frozen=True)
class ClassInputs:
    """Logits and targets of a multi-class loss, normalized.

    Attributes
    ----------
    xp : namespace
    stored : array (*batch, n_classes), the caller's logits and dtype, class axis last (a view)
    dtype : the compute dtype (float32 at least, float64 for float64 logits)
    axis : the caller's class axis, normalized (to move gradients back)
    indices : int array (*batch), or None for probability targets; ignored entries replaced by 0
    valid : bool array (*batch) or None; False where the target equals ``ignore_index``
    probs : array (*batch, n_classes) in compute dtype, or None for index targets
    sample_weight : array (*batch) in compute dtype, or None
    """

    xp: Namespace
    stored: Array
    dtype: DType
    axis: int
    indices: Array | None
    valid: Array | None
    probs: Array | None
    sample_weight: Array | None

    @cached_property
    def logits(self) -> Array:
        """The logits in the compute dtype, class axis last (converted on first use: the fused
        kernels read half precision as stored and never ask for it)."""
        return self.xp.astype(self.stored, self.dtype, copy=False)

    @property
    def out_dtype(self) -> DType:
        """The caller's dtype, the dtype results are returned in."""
        return self.stored.dtype

    @property
    def num_classes(self) -> int:
        return int(self.stored.shape[-1])

    @property
    def is_index(self) -> bool:
        return self.indices is not None

    def row_weight(self) -> Array | None:
        """Per-sample factor ``s_n * [target_n != ignore_index]``, or None if all ones."""
        xp, weight = self.xp, self.sample_weight
        if self.valid is None:
            return weight
        valid = xp.astype(self.valid, self.dtype)
        return valid if weight is None else weight * valid

    def to_caller(self, dlogits: Array) -> Array:
        """Gradient with respect to the caller's logits: dtype and axis restored."""
        xp = self.xp
        out = xp.astype(dlogits, self.out_dtype, copy=False)
        return move_axes(out, -1, self.axis, xp) if self.axis != out.ndim - 1 else out


def warn_if_probabilities(x: Array, xp: Namespace, *, name: str = "logits") -> None:
    """Warn if the first few rows of ``x`` (class axis last) are non-negative and sum to 1 (not inside
    :func:`~crossentropy.checks_disabled` for logits on a device)."""
    if x.shape[-1] < 2 or not checks_values(x):
        return
    # A negative entry, as nearly every row of logits has within its first classes, settles it at the
    # cost of a reduction small enough to run on one thread: PyTorch splits larger ones over its
    # OpenMP threads, which then spin for milliseconds, on the cores the kernel that follows needs.
    # (A tuple sum, not `(*(0,) * k, ...)`: mypy reads that as the 3.11 `x[*a, b]` form on Python 3.10.)
    prefix = x[(0,) * (x.ndim - 1) + (slice(0, min(_PREFIX_CHECKED, x.shape[-1])),)]
    if concrete_bool(xp.min(prefix) >= 0) is False:
        return
    rows = x[(0,) * (x.ndim - 2) + (slice(0, min(_ROWS_CHECKED, x.shape[-2])), ...)] if x.ndim > 1 else x
    # Reductions only (no temporary of the rows' size); half precision sums in float32. Rows with an
    # entry outside [0, 1] are not probabilities and are not summed (logits of ±3e38 would overflow).
    non_negative = xp.min(rows) >= 0
    if concrete_bool(non_negative) is False:
        return
    in_unit_interval = non_negative & (xp.max(rows) <= 1)
    if concrete_bool(in_unit_interval) is False:
        return
    sums = xp.sum(rows, axis=-1, dtype=compute_dtype(xp, rows.dtype))
    looks_like = in_unit_interval & xp.all(xp.abs(sums - 1) <= 1e-3)
    if concrete_bool(looks_like):
        warnings.warn(
            f"`{shown(name)}` look like probabilities (non-negative rows summing to 1), but this loss "
            "expects unnormalized logits and applies a softmax itself; pass logits, or use a "
            "loss on probabilities (nll_loss on log-probabilities, binary_cross_entropy).",
            ProbabilitiesAsLogitsWarning,
            stacklevel=3,
        )


def prepare_logits(
    logits: ArrayLike, *, axis: int, name: str = "logits", xp: Namespace | None = None
) -> tuple[Namespace, Array, DType, int]:
    """Validate floating logits; return ``(xp, logits in compute dtype with axis last, dtype, axis)``."""
    xp, stored, axis = _validated_logits(logits, axis=axis, name=name, xp=xp)
    return xp, xp.astype(stored, compute_dtype(xp, stored.dtype), copy=False), stored.dtype, axis


def _validated_logits(logits: ArrayLike, *, axis: int, name: str, xp: Namespace | None) -> tuple[Namespace, Array, int]:
    """Validate floating logits; return ``(xp, logits with the class axis last, axis)``, dtype unchanged."""
    xp = xp or get_namespace(logits)
    logits = as_namespace_array(logits, xp, name=name)
    check_floating(name, logits, xp)
    check_ndim(name, logits, at_least=1)
    check_not_empty(name, logits)
    axis = check_axis("axis", axis, logits.ndim)
    if axis != logits.ndim - 1:
        logits = move_axes(logits, axis, -1, xp)
    return xp, logits, axis


def prepare_sample_weight(
    sample_weight: ArrayLike | None,
    xp: Namespace,
    *,
    like: Array,
    batch_shape: tuple[int, ...],
    dtype: DType | None = None,
) -> Array | None:
    """Validated per-sample weights of shape ``batch_shape`` in ``dtype`` (default: that of ``like``), or None."""
    if sample_weight is None:
        return None
    sample_weight = as_namespace_array(sample_weight, xp, name="sample_weight", like=like)
    check_shape("sample_weight", sample_weight, batch_shape, rule="one weight per sample")
    if not xp.isdtype(sample_weight.dtype, ("real floating", "integral", "bool")):
        raise TypeError(f"`sample_weight` must be real numbers; got dtype {sample_weight.dtype}")
    sample_weight = xp.astype(sample_weight, like.dtype if dtype is None else dtype)
    check_nonnegative("sample_weight", sample_weight, xp)
    return sample_weight


def prepare_class_weight(weight: ArrayLike | None, inputs: ClassInputs, *, name: str = "weight") -> Array | None:
    """Validated per-class weights of shape ``(n_classes,)`` in the compute dtype, or None."""
    if weight is None:
        return None
    xp = inputs.xp
    weight = as_namespace_array(weight, xp, name=name, like=inputs.stored)
    check_shape(name, weight, (inputs.num_classes,), rule="one weight per class")
    if not xp.isdtype(weight.dtype, ("real floating", "integral")):
        raise TypeError(f"`{shown(name)}` must be real numbers; got dtype {weight.dtype}")
    weight = xp.astype(weight, inputs.dtype)
    check_nonnegative(name, weight, xp)
    return weight


def prepare_class_inputs(
    logits: ArrayLike,
    targets: ArrayLike,
    *,
    axis: int,
    ignore_index: int | None,
    sample_weight: ArrayLike | None,
    logits_name: str = "logits",
    allow_probs: bool = True,
    warn_probabilities: bool = True,
    check_probabilities: bool = True,
) -> ClassInputs:
    """Validate a (logits, targets) pair of a multi-class loss and normalize it.

    Integer ``targets`` are class indices of shape ``logits.shape`` without ``axis``; floating
    ``targets`` (when ``allow_probs``) are probabilities of the logits' shape, checked to lie in
    [0, 1] unless ``check_probabilities`` is False.
    """
    xp = get_namespace(logits, targets)
    logits = as_namespace_array(logits, xp, name=logits_name)
    caller_shape = tuple(logits.shape)
    xp, stored, axis = _validated_logits(logits, axis=axis, name=logits_name, xp=xp)
    dtype = compute_dtype(xp, stored.dtype)
    if ignore_index is not None and (isinstance(ignore_index, bool) or not isinstance(ignore_index, int)):
        raise TypeError(f"`ignore_index` must be an integer; got {ignore_index!r}")
    targets = as_namespace_array(targets, xp, name="targets", like=stored)
    num_classes = int(stored.shape[-1])
    batch_shape = tuple(stored.shape[:-1])

    indices = valid = probs = None
    if is_integer(xp, targets):
        if allow_probs and tuple(targets.shape) == caller_shape and caller_shape != batch_shape:
            # The logits' own shape with an integer dtype: probabilities stored as integers, most likely.
            raise TypeError(
                f"`{shown('targets')}` of the shape {caller_shape} of `{shown(logits_name)}` must be floating-point "
                f"class probabilities (class indices have shape {batch_shape}); got dtype {targets.dtype}"
            )
        rule = f"class indices: the shape {caller_shape} of `{shown(logits_name)}` without the class axis"
        check_shape("targets", targets, batch_shape, rule=rule)
        check_class_indices("targets", targets, xp, num_classes, ignore_index)
        indices = targets
        if ignore_index is not None:
            # ignore_index may also name a real class (say 0 for padding): those samples drop out.
            valid = targets != ignore_index
            indices = xp.where(valid, targets, xp.zeros_like(targets))
    elif xp.isdtype(targets.dtype, "real floating"):
        if not allow_probs:
            raise TypeError(f"`{shown('targets')}` must be integer class indices; got dtype {targets.dtype}")
        if tuple(targets.shape) == batch_shape:
            # The shape of class indices with a floating dtype: indices stored as floats, most likely.
            cast = f"{shown('targets')}.long()" if array_api_compat.is_torch_array(targets) else "targets.astype(int)"
            raise TypeError(
                f"`{shown('targets')}` must be integer class indices for shape {batch_shape} (cast them, e.g. "
                f"`{cast}`), or class probabilities of the shape {caller_shape} of `{shown(logits_name)}`; "
                f"got dtype {targets.dtype}"
            )
        check_shape("targets", targets, caller_shape, rule=f"class probabilities: the shape of `{shown(logits_name)}`")
        if ignore_index is not None and ignore_index != DEFAULT_IGNORE_INDEX:
            # As PyTorch: probability targets have no index to compare, so ignoring cannot apply.
            raise ValueError(
                f"`ignore_index` applies to class-index targets only, not to class probabilities (to leave a "
                f"sample out, give it a `sample_weight` of 0); got ignore_index={ignore_index} with "
                f"`{shown('targets')}` of dtype {targets.dtype}"
            )
        probs = xp.astype(targets, dtype, copy=False)
        if axis != stored.ndim - 1:
            probs = move_axes(probs, axis, -1, xp)
        if check_probabilities:
            check_in_unit_interval("targets", probs, xp)
    else:
        expected = "integer class indices" + (" or floating-point class probabilities" if allow_probs else "")
        raise TypeError(f"`{shown('targets')}` must be {expected}; got dtype {targets.dtype}")

    if warn_probabilities:
        warn_if_probabilities(stored, xp, name=logits_name)
    weights = prepare_sample_weight(sample_weight, xp, like=stored, dtype=dtype, batch_shape=batch_shape)
    return ClassInputs(xp, stored, dtype, axis, indices, valid, probs, weights)


def weighted_rows(loss: Array, row_weight: Array | None, xp: Namespace) -> Array:
    """``row_weight * loss`` with ``0 * inf = 0``: ignored or zero-weight rows contribute 0."""
    return loss if row_weight is None else xmul(row_weight, loss, xp)


def total(x: Array, xp: Namespace) -> Array:
    """Sum over every axis (a 0-d array)."""
    return xp.sum(xp.reshape(x, (-1,)))


def reduce_loss(
    loss: Array, denominator: Array | float, reduction: Reduction, xp: Namespace, out_dtype: DType
) -> Array:
    """Apply ``reduction`` to per-sample ``loss`` (already weighted).

    ``mean`` divides the sum by ``denominator`` (a 0-d array or a number); an empty
    denominator gives 0, not NaN, and a zero gradient. Where the sum passes the dtype's largest
    number but the mean does not, the mean is the sum of the losses each divided first:
    :math:`\\sum_n (\\ell_n / D)`, whose partial sums never exceed the mean when the losses are
    non-negative. Elsewhere it is :math:`(\\sum_n \\ell_n) / D`, as rounded before.
    """
    if reduction == "none":
        return xp.astype(loss, out_dtype, copy=False)
    with np.errstate(over="ignore"):  # inf without a warning, as on the kernels; a mean replaces it below
        summed = total(loss, xp)
    if reduction == "sum":
        return xp.astype(summed, out_dtype, copy=False)
    mean = safe_divide(summed, denominator, xp)
    # Both are formed on every call (no data-dependent branch: JAX's jit, no device sync); the
    # second costs a pass over the per-sample losses and one temporary of their size. An empty
    # denominator keeps the mean's 0 (its scale 0 would turn an infinite loss into NaN).
    scale = mean_scale(denominator, "mean", xp, summed)
    scaled = total(loss * scale, xp)
    return xp.astype(xp.where(xp.isinf(summed) & (scale != 0), scaled, mean), out_dtype, copy=False)


def safe_divide(numerator: Array, denominator: Array | float, xp: Namespace) -> Array:
    """``numerator / denominator``, and 0 where the denominator is 0."""
    if isinstance(denominator, (int, float)):
        denominator = xp.asarray(denominator, dtype=numerator.dtype, device=array_api_compat.device(numerator))
    else:
        denominator = xp.astype(denominator, numerator.dtype, copy=False)
    empty = denominator == 0
    ratio = numerator / xp.where(empty, xp.ones_like(denominator), denominator)
    return xp.where(empty, xp.zeros_like(ratio), ratio)


def mean_scale(denominator: Array | float, reduction: Reduction, xp: Namespace, like: Array) -> Array:
    """Factor the gradient of the per-sample losses is multiplied by: ``1/denominator`` for
    ``mean`` (0 for an empty denominator), 1 otherwise (the gradient of the sum)."""
    one = xp.ones((), dtype=like.dtype, device=array_api_compat.device(like))
    return safe_divide(one, denominator, xp) if reduction == "mean" else one
