"""Fused CPU kernels (Numba) behind the core losses, for NumPy arrays.

:func:`crossentropy.softmax_cross_entropy` and :func:`crossentropy.softmax_cross_entropy_with_grad`
(and their sigmoid twins) validate their input once, then hand NumPy float32/float64 arrays to
the kernels here; every other array library, and NumPy when the kernels are switched off, runs
the generic array-API code, which stays the reference the kernels are tested against.

The first call in a process compiles the kernels it needs (a few seconds) and stores them in
Numba's on-disk cache, next to this package or in ``NUMBA_CACHE_DIR``; later processes load
them in a fraction of a second. (Numba checks only the file of the kernel itself for changes:
after editing ``_math.py``, delete ``kernels/__pycache__`` to recompile.)

>>> import numpy as np
>>> import crossentropy as ce
>>> from crossentropy import kernels
>>> x, y = np.array([[2.0, 1.0, 0.1]], dtype=np.float32), np.array([0])
>>> with kernels.disabled():  # the generic array-API path
...     reference = ce.softmax_cross_entropy(x, y)
>>> bool(np.isclose(ce.softmax_cross_entropy(x, y), reference))
True
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any

import array_api_compat
import numba
import numpy as np

from ._math import BFLOAT16_BITS, FLOAT16_BITS

__all__ = ["disabled", "enabled", "softmax_cross_entropy_rows"]

_ENABLED = contextvars.ContextVar("crossentropy_kernels_enabled", default=True)
# NumPy dtypes the kernels read as stored; half precision accumulates in float32.
_KERNEL_DTYPES = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))


def enabled() -> bool:
    """Whether NumPy inputs run the fused kernels (True unless inside :func:`disabled`)."""
    return _ENABLED.get()


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """Run the generic array-API path for NumPy inputs too, within the ``with`` block.

    For comparing the two paths (tests, benchmarks) or for bisecting a numerical question.
    """
    token = _ENABLED.set(False)
    try:
        yield
    finally:
        _ENABLED.reset(token)


def accepts(xp: Any, x: Any) -> bool:
    """True when ``x`` (in namespace ``xp``, as the caller stored it) should run on the kernels."""
    return enabled() and array_api_compat.is_numpy_namespace(xp) and x.dtype in _KERNEL_DTYPES


def _storage(x: np.ndarray, storage: str | None) -> tuple[np.ndarray, np.dtype]:
    """``x`` as the kernels read it (half precision as bit patterns) and the accumulation dtype."""
    if storage == "bfloat16":
        if x.dtype != np.uint16:
            raise TypeError(f"`storage='bfloat16'` takes the bit patterns as uint16; got dtype {x.dtype}")
        return x.view(BFLOAT16_BITS), np.dtype(np.float32)
    if storage is not None:
        raise ValueError(f"`storage` must be None or 'bfloat16'; got {storage!r}")
    if x.dtype == np.float16:
        return x.view(FLOAT16_BITS), np.dtype(np.float32)
    if x.dtype not in _KERNEL_DTYPES:
        raise TypeError(f"the kernels take float16, float32 or float64 logits; got dtype {x.dtype}")
    return x, x.dtype


def softmax_cross_entropy_rows(
    logits: np.ndarray,
    targets: np.ndarray,
    *,
    weight: np.ndarray | None,
    row_weight: np.ndarray,
    grad_factor: np.ndarray | None,
    smoothing: float,
    z: float,
    cap: float | None,
    storage: str | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    r"""Per-row weighted losses :math:`r_n \ell_n` and, when ``grad_factor`` is given, the gradient.

    Parameters
    ----------
    logits : ndarray of shape (..., n_classes)
        Validated logits, class axis last: float16, float32 or float64, or bfloat16 bit
        patterns as uint16 with ``storage="bfloat16"`` (how PyTorch's bfloat16 reaches NumPy).
        Half precision is read as stored and accumulated in float32.
    targets : ndarray
        Integer class indices of the batch shape, every entry in ``[0, n_classes)`` (ignored
        samples carry any valid index and a ``row_weight`` of 0), or probabilities of the
        logits' shape.
    weight : ndarray of shape (n_classes,) or None
        Class weights.
    row_weight : ndarray of the batch shape
        :math:`r_n`, the sample weight times "not ignored".
    grad_factor : ndarray of the batch shape, or None
        :math:`r_n` times the reduction's scale; None computes the loss only, with O(N) extra
        memory.
    smoothing, z : float
        Label smoothing and z-loss coefficient.
    cap : float or None
        Soft-cap.
    storage : {None, "bfloat16"}
        How to read uint16 ``logits``.

    Returns
    -------
    (losses, grad)
        ``losses`` of the batch shape in the accumulation dtype (float32 for half precision);
        ``grad`` of the logits' shape and dtype (uint16 bit patterns for bfloat16), or None.
    """
    from ._softmax import BLOCK, softmax_cross_entropy_index, softmax_cross_entropy_soft

    stored, dtype = _storage(logits, storage)
    scalar = dtype.type
    x = np.ascontiguousarray(stored.reshape(-1, stored.shape[-1]))
    n_rows, n_classes = x.shape
    index_targets = targets.ndim == logits.ndim - 1
    t = np.ascontiguousarray(targets.reshape(-1), dtype=np.int64) if index_targets else _rows(targets, dtype)
    w = np.empty(0, dtype) if weight is None else np.ascontiguousarray(weight, dtype=dtype)
    r = np.ascontiguousarray(row_weight.reshape(-1), dtype=dtype)
    store = grad_factor is not None
    losses = np.empty(n_rows, dtype)
    half = x.dtype != dtype
    # Placeholders for the buffers a forward-only call does not use.
    factor, grad, block_ref = r, np.empty((1, 1), x.dtype), np.empty((1, 1), dtype)
    scratch = np.empty((numba.get_num_threads(), 1), dtype)
    if store:
        factor = np.ascontiguousarray(grad_factor.reshape(-1), dtype=dtype)
        grad = np.empty((n_rows, n_classes), x.dtype)
        if half:  # exponentials are kept in float32 rows, one per thread
            scratch = np.empty((numba.get_num_threads(), n_classes), dtype)
        block_ref = np.empty((n_rows, -(-n_classes // BLOCK)), dtype)
    options = (scalar(smoothing), scalar(z), scalar(cap or 0.0))
    kernel = softmax_cross_entropy_index if index_targets else softmax_cross_entropy_soft
    kernel(x, t, w, r, factor, *options, losses, grad, scratch, block_ref, store)
    batch_shape = logits.shape[:-1]
    if not store:
        return losses.reshape(batch_shape), None
    return losses.reshape(batch_shape), grad.view(logits.dtype).reshape(logits.shape)


def _rows(x: np.ndarray, dtype: Any) -> np.ndarray:
    """``x`` as C-contiguous (rows, classes) of ``dtype`` (a view when it already is)."""
    return np.ascontiguousarray(x.reshape(-1, x.shape[-1]), dtype=dtype)
