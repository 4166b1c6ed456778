"""Fused kernels behind the core losses: a registry of backends, and the switches that choose one.

:func:`crossentropy.softmax_cross_entropy`, :func:`crossentropy.softmax_cross_entropy_with_grad`,
their sigmoid twins and the fused paths of :mod:`crossentropy.torch` validate their input once,
then ask :func:`select` which backend computes: the first registered backend that accepts the
logits as stored (array library, device, dtype). Where none does, or inside :func:`disabled`,
the generic array-API code runs: the reference every backend is tested against.

=========  ==================================================  ================================
backend    accepts                                             module
=========  ==================================================  ================================
numba      NumPy float16/32/64 arrays; CPU PyTorch tensors     :mod:`crossentropy.kernels.numba`
           (float16/32/64, bfloat16)
triton     CUDA PyTorch tensors (float16/32/64, bfloat16);     :mod:`crossentropy.kernels.triton`
           CPU tensors too under ``TRITON_INTERPRET=1``
=========  ==================================================  ================================

Every backend implements the same two entry points with the same options and semantics:
``softmax_cross_entropy_rows`` (rows of logits, class axis last, index or probability targets)
and ``sigmoid_cross_entropy_elements`` (elementwise binary and multi-label loss). Arrays that
autograd tracks, and PyTorch tensors under a ``torch.func`` transform or carrying a forward-mode
tangent, never reach a backend from the core: autograd cannot see through a kernel
(:mod:`crossentropy.torch` wraps the kernels in autograd of its own, see :func:`for_torch`).

Choosing a backend (``auto``: the first that accepts):

- :func:`backend` (a context manager): ``backend("numba")``, ``backend("triton")``,
  ``backend("reference")`` (same as :func:`disabled`) or ``backend("auto")``; a forced backend is
  the only one considered, and arrays it does not accept run the reference code;
- the environment variable ``CROSSENTROPY_KERNELS`` (``auto`` by default), read on each call,
  with the same names; :func:`backend` takes precedence over it.

Adding a backend: ``docs/kernels.md``.

>>> import numpy as np
>>> import crossentropy as ce
>>> from crossentropy import kernels
>>> x, y = np.array([[2.0, 1.0, 0.1]], dtype=np.float32), np.array([0])
>>> kernels.select(np, x).name
'numba'
>>> with kernels.disabled():  # the generic array-API path
...     reference = ce.softmax_cross_entropy(x, y)
>>> bool(np.isclose(ce.softmax_cross_entropy(x, y), reference))
True
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import importlib.util
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import array_api_compat

from .._array import is_torch_tensor, is_transformed_tensor
from ._in_place import IN_PLACE, check_softmax_in_place

__all__ = [
    "BACKENDS",
    "IN_PLACE",
    "Backend",
    "accepts_torch",
    "backend",
    "check_softmax_in_place",
    "disabled",
    "enabled",
    "for_torch",
    "forced",
    "select",
]

# The environment variable that forces a backend, and the names it and backend() take.
ENVIRONMENT_VARIABLE = "CROSSENTROPY_KERNELS"
AUTO, REFERENCE = "auto", "reference"


@dataclass(frozen=True)
class Backend:
    """A kernel backend: a name, which logits it accepts, and the module with its entry points.

    Attributes
    ----------
    name : str
        What :func:`backend` and ``CROSSENTROPY_KERNELS`` call it.
    module : str
        The module implementing ``softmax_cross_entropy_rows`` and
        ``sigmoid_cross_entropy_elements``; imported on first use, so a backend whose package
        (Triton) is absent costs nothing.
    accepts : callable
        ``accepts(logits) -> bool`` for the logits as stored: array library, device and dtype,
        and whether the backend can run here at all. Cheap (called on every loss call) and
        without importing the backend's module.
    requirement : str
        What to install when the backend is forced and cannot run, for the error message.
    installed : callable
        ``installed() -> bool``: whether the backend's package is there (cheap; no import).
    """

    name: str
    module: str
    accepts: Callable[[Any], bool]
    requirement: str = ""
    installed: Callable[[], bool] = lambda: True

    def load(self) -> ModuleType:
        """Import the module with the entry points (on the first call; later calls are cheap).

        Returns
        -------
        module
            The backend's module, :attr:`module`.
        """
        return importlib.import_module(self.module)

    def softmax_cross_entropy_rows(self, *args: Any, **options: Any) -> Any:
        """Call this backend's ``softmax_cross_entropy_rows``.

        Parameters
        ----------
        *args, **options
            The entry point's arguments: :func:`crossentropy.kernels.numba.softmax_cross_entropy_rows`.

        Returns
        -------
        object
            What the entry point returns.
        """
        return self.load().softmax_cross_entropy_rows(*args, **options)

    def scale_unless_one(self, grad: Any, factor: Any) -> Any:
        """Multiply ``grad`` by the one-element ``factor`` in place, unless ``factor`` is 1.

        Without reading ``factor`` on the host: the backend's own ``scale_unless_one`` if it has
        one, else a product.

        Parameters
        ----------
        grad : Tensor
            Contiguous; scaled in place.
        factor : Tensor
            One element, on ``grad``'s device.

        Returns
        -------
        Tensor
            ``grad``.
        """
        scale = getattr(self.load(), "scale_unless_one", None)
        return scale(grad, factor) if scale is not None else grad.mul_(factor)

    def has_fused_linear(self) -> bool:
        """Tell whether the module also has the fused linear cross-entropy.

        That is ``linear_logsumexp`` and ``linear_cross_entropy_gradients`` (arguments:
        :mod:`crossentropy.kernels.triton._linear`), which
        :func:`crossentropy.torch.linear_cross_entropy` then uses for index targets instead of
        chunks of logits.

        Returns
        -------
        bool
            Whether the two entry points are there.
        """
        return hasattr(self.load(), "linear_logsumexp")

    def linear_logsumexp(self, *args: Any, **options: Any) -> Any:
        """Call this backend's ``linear_logsumexp`` (see :meth:`has_fused_linear`).

        Parameters
        ----------
        *args, **options
            The entry point's arguments: ``crossentropy.kernels.triton._linear.linear_logsumexp``.

        Returns
        -------
        object
            What the entry point returns.
        """
        return self.load().linear_logsumexp(*args, **options)

    def linear_cross_entropy_gradients(self, *args: Any, **options: Any) -> Any:
        """Call this backend's ``linear_cross_entropy_gradients`` (see :meth:`has_fused_linear`).

        Parameters
        ----------
        *args, **options
            The entry point's arguments: ``crossentropy.kernels.triton._linear.linear_cross_entropy_gradients``.

        Returns
        -------
        object
            What the entry point returns.
        """
        return self.load().linear_cross_entropy_gradients(*args, **options)

    def sigmoid_cross_entropy_elements(self, *args: Any, **options: Any) -> Any:
        """Call this backend's ``sigmoid_cross_entropy_elements``.

        Parameters
        ----------
        *args, **options
            The entry point's arguments: :func:`crossentropy.kernels.numba.sigmoid_cross_entropy_elements`.

        Returns
        -------
        object
            What the entry point returns.
        """
        return self.load().sigmoid_cross_entropy_elements(*args, **options)


def _numba_accepts(x: Any) -> bool:
    from . import numba  # the core dependency: always there

    return numba.accepts(x)


def _triton_accepts(x: Any) -> bool:
    if not is_torch_tensor(x) or not _triton_installed():
        return False
    from . import triton

    return triton.accepts(x)


_TRITON_SPEC: list[bool] = []


def _triton_installed() -> bool:
    if not _TRITON_SPEC:
        _TRITON_SPEC.append(importlib.util.find_spec("triton") is not None)
    return _TRITON_SPEC[0]


# In the order ``auto`` tries them.
BACKENDS: tuple[Backend, ...] = (
    Backend("numba", f"{__name__}.numba", _numba_accepts),
    Backend(
        "triton",
        f"{__name__}.triton",
        _triton_accepts,
        "the triton package (pip install 'crossentropy[triton]')",
        _triton_installed,
    ),
)
_NAMES = (AUTO, *(b.name for b in BACKENDS), REFERENCE)

_ENABLED = contextvars.ContextVar("crossentropy_kernels_enabled", default=True)
_FORCED: contextvars.ContextVar[str | None] = contextvars.ContextVar("crossentropy_kernels_backend", default=None)


def _check_name(name: Any, where: str) -> str:
    if not isinstance(name, str) or name not in _NAMES:
        raise ValueError(f"{where} must be one of {', '.join(map(repr, _NAMES))}; got {name!r}")
    return name


def _by_name(name: str) -> Backend:
    return next(b for b in BACKENDS if b.name == name)


def _check_runnable(chosen: Backend, where: str) -> None:
    """Raise when a forced backend's package is missing (a clear error, not a silent reference path)."""
    if not chosen.installed():
        raise RuntimeError(f"{where} chose the {chosen.name!r} backend, which needs {chosen.requirement}")


def forced() -> str:
    """Name the backend in force.

    Returns
    -------
    str
        :func:`backend`'s, else ``CROSSENTROPY_KERNELS``'s, else ``"auto"``; ``"reference"`` inside
        :func:`disabled`.
    """
    if not _ENABLED.get():
        return REFERENCE
    name = _FORCED.get()
    if name is not None:
        return name
    name = _check_name(os.environ.get(ENVIRONMENT_VARIABLE, AUTO).strip().lower() or AUTO, f"`{ENVIRONMENT_VARIABLE}`")
    if name not in (AUTO, REFERENCE):
        _check_runnable(_by_name(name), f"`{ENVIRONMENT_VARIABLE}={name}`")
    return name


@contextlib.contextmanager
def backend(name: str) -> Iterator[None]:
    """Within the ``with`` block, compute on backend ``name`` only.

    Arrays the chosen backend does not accept (a NumPy array under ``"triton"``) run the reference
    code. A backend that cannot run here at all (``"triton"`` without the triton package) is an
    error. Under ``TRITON_INTERPRET=1`` the Triton backend also accepts CPU tensors, so the GPU
    kernels run (slowly, exactly) on any machine.

    Parameters
    ----------
    name : {"numba", "triton", "reference", "auto"}
        A backend of :data:`BACKENDS`, ``"reference"`` (the generic array-API code, as
        :func:`disabled`) or ``"auto"`` (the first that accepts the logits, ignoring
        ``CROSSENTROPY_KERNELS``).

    Yields
    ------
    None
        The block runs on that backend; the previous choice is back when it ends.

    Raises
    ------
    ValueError
        For another name.
    RuntimeError
        When the backend's package is not installed.

    Examples
    --------
    >>> import numpy as np
    >>> from crossentropy import kernels
    >>> with kernels.backend("reference"):
    ...     print(kernels.select(np, np.zeros((2, 3))))
    None
    """
    name = _check_name(name, "`name`")
    if name not in (AUTO, REFERENCE):
        _check_runnable(_by_name(name), f"kernels.backend({name!r})")
    token = _FORCED.set(name)
    try:
        yield
    finally:
        _FORCED.reset(token)


def enabled() -> bool:
    """Tell whether the CPU kernels run.

    Returns
    -------
    bool
        False inside :func:`disabled` or ``backend("reference")``, with
        ``CROSSENTROPY_KERNELS=reference``, and in a ``fork`` child of a process whose CPU kernels
        ran on GNU OpenMP, which cannot run there (the generic code computes; see
        :mod:`crossentropy.kernels.numba._threading`).
    """
    from .numba import _threading

    return forced() != REFERENCE and _threading.usable()


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """Run the generic array-API path (the reference) within the ``with`` block, for every array.

    For comparing the paths (tests, benchmarks) or for bisecting a numerical question.

    Yields
    ------
    None
        The block runs the reference code; the kernels are back when it ends.
    """
    token = _ENABLED.set(False)
    try:
        yield
    finally:
        _ENABLED.reset(token)


def for_torch(x: Any, *others: Any) -> Backend | None:
    """The backend that computes the PyTorch tensor ``x`` for :mod:`crossentropy.torch`'s fused functions.

    Autograd tracking does not matter here (the torch layer wraps the kernels in autograd of its
    own); never when ``x`` or a tensor among ``others`` is transformed: wrapped by ``torch.func``
    (``grad``, ``vmap``, ``jvp``, ...) or carrying a forward-mode tangent
    (``torch.autograd.forward_ad``). The kernels read plain memory, so a transform would lose its
    batch dimension or its tangent; those calls run the generic code, which PyTorch
    differentiates and batches like any other.

    Parameters
    ----------
    x : Tensor
        The logits, as stored.
    *others : Tensor or None
        The call's other tensors (targets, weights).

    Returns
    -------
    Backend or None
        None: the generic code computes.
    """
    chosen = _accepting(x)
    if chosen is None or any(is_transformed_tensor(t) for t in (x, *others)):
        return None
    return chosen


def select(xp: Any, x: Any, *others: Any) -> Backend | None:
    """The backend that computes logits ``x`` as the caller stored them, for the core's functions.

    :func:`for_torch`'s rule, and never for PyTorch tensors that autograd tracks (``x`` or
    ``others``), since autograd cannot see through the kernels.

    Parameters
    ----------
    xp : namespace
        The array namespace of ``x`` (``array_api_compat.array_namespace``).
    x : array
        The logits.
    *others : array or None
        The call's other arrays (targets, weights).

    Returns
    -------
    Backend or None
        None: the generic (reference) code computes.
    """
    if array_api_compat.is_torch_namespace(xp):
        import torch

        if torch.is_grad_enabled() and any(a is not None and getattr(a, "requires_grad", False) for a in (x, *others)):
            return None
        return for_torch(x, *others)
    return _accepting(x)


def _accepting(x: Any) -> Backend | None:
    name = forced()
    if name == REFERENCE:
        return None
    candidates = BACKENDS if name == AUTO else (_by_name(name),)
    return next((b for b in candidates if b.accepts(x)), None)


def accepts_torch(x: Any, *others: Any) -> bool:
    """Tell whether :func:`for_torch` finds a backend for these tensors.

    Parameters
    ----------
    x : Tensor
        The logits, as stored.
    *others : Tensor or None
        The call's other tensors.

    Returns
    -------
    bool
        ``for_torch(x, *others) is not None``.
    """
    return for_torch(x, *others) is not None
