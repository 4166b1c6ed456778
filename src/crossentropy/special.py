"""Numerically stable primitives: log-sum-exp, (log-)softmax and log-sigmoid.

These are the building blocks of every loss. Each is exact for logits of any magnitude
(±1e4 and beyond) and for ``-inf`` entries, and accumulates half precision in float32.
"""

from __future__ import annotations

import math
from typing import overload

from ._array import as_namespace_array, compute_dtype, get_namespace, is_real_floating
from ._typing import Array, ArrayLike, DType, Namespace
from ._validation import check_axis, check_not_empty

__all__ = ["log_sigmoid", "log_softmax", "logsumexp", "softmax"]


@overload
def _prepare(x: ArrayLike, axis: int) -> tuple[Namespace, Array, DType, int]: ...
@overload
def _prepare(x: ArrayLike, axis: None) -> tuple[Namespace, Array, DType, None]: ...
def _prepare(x: ArrayLike, axis: int | None) -> tuple[Namespace, Array, DType, int | None]:
    """Return ``(xp, x in its compute dtype, dtype to return, normalized axis)``."""
    xp = get_namespace(x)
    x = as_namespace_array(x, xp, name="x")
    if not is_real_floating(xp, x):
        x = xp.astype(x, xp.__array_namespace_info__().default_dtypes()["real floating"])
    out_dtype = x.dtype
    x = xp.astype(x, compute_dtype(xp, x.dtype), copy=False)
    if axis is not None:
        check_not_empty("x", x)
        axis = check_axis("axis", axis, x.ndim)
    return xp, x, out_dtype, axis


def _log_of_sum(total: Array, xp: Namespace) -> Array:
    """``log(total)`` with ``log(0) = -inf`` and no divide-by-zero warning (an all ``-inf`` row)."""
    positive = total > 0
    safe = xp.where(positive, total, xp.ones_like(total))
    return xp.where(positive, xp.log(safe), xp.full_like(total, -math.inf))


def _shift_and_log_total(x: Array, xp: Namespace, axis: int) -> tuple[Array, Array, Array]:
    """``(m, x - m, log sum exp(x - m))`` along ``axis`` (kept); ``m`` is the row maximum, or 0 where infinite."""
    row_max = xp.max(x, axis=axis, keepdims=True)
    shift = xp.where(xp.isfinite(row_max), row_max, xp.zeros_like(row_max))
    shifted = x - shift
    return shift, shifted, _log_of_sum(xp.sum(xp.exp(shifted), axis=axis, keepdims=True), xp)


def stable_logsumexp(x: Array, xp: Namespace, *, axis: int = -1, keepdims: bool = False) -> Array:
    """Log-sum-exp of an array already in its compute dtype (internal building block).

    Subtracts the row maximum first, so no exponential overflows. A row whose maximum is
    ``-inf`` (all entries ``-inf``) gives ``-inf``, not NaN; a row holding ``+inf`` gives
    ``+inf``.
    """
    shift, _, log_total = _shift_and_log_total(x, xp, axis)
    out = log_total + shift
    return out if keepdims else xp.squeeze(out, axis=axis)


def stable_log_softmax(x: Array, xp: Namespace, *, axis: int = -1) -> tuple[Array, Array]:
    """``(log_softmax(x), logsumexp(x, keepdims=True))`` of an array in its compute dtype.

    The log-softmax is formed as ``(x - m) - log(sum exp(x - m))`` rather than ``x - lse``:
    when the logits carry a large common offset (``1e4 + small``), ``x - lse`` subtracts two
    large numbers and loses the small differences in float32, while ``x - m`` is exact.
    """
    shift, shifted, log_total = _shift_and_log_total(x, xp, axis)
    return shifted - log_total, log_total + shift


def stable_log_sigmoid(x: Array, xp: Namespace) -> Array:
    """``log(sigmoid(x)) = min(x, 0) - log1p(exp(-|x|))``, exact for large ``|x|``."""
    return xp.minimum(x, xp.zeros_like(x)) - xp.log1p(xp.exp(-xp.abs(x)))


def logsumexp(x: ArrayLike, /, *, axis: int = -1, keepdims: bool = False) -> Array:
    r"""Log of the sum of exponentials along ``axis``, computed without overflow.

    .. math::

        \operatorname{LSE}(x) = m + \log \sum_i e^{x_i - m}, \qquad m = \max_i x_i

    Parameters
    ----------
    x : array of shape (..., n_classes)
        Real values (logits). ``-inf`` entries contribute nothing.
    axis : int, default -1
        Axis to reduce.
    keepdims : bool, default False
        Keep the reduced axis with length 1.

    Returns
    -------
    array
        The input's array type and floating dtype (half precision is accumulated in float32).

    Examples
    --------
    >>> import numpy as np
    >>> float(logsumexp(np.array([1000.0, 1000.0])))  # 1000 + ln 2, no overflow
    1000.6931471805599
    """
    xp, x, out_dtype, axis = _prepare(x, axis)
    return xp.astype(stable_logsumexp(x, xp, axis=axis, keepdims=keepdims), out_dtype, copy=False)


def log_softmax(x: ArrayLike, /, *, axis: int = -1) -> Array:
    r"""Logarithm of the softmax along ``axis``.

    .. math::

        \log \operatorname{softmax}(x)_i = x_i - \operatorname{LSE}(x)

    Computed as a difference, never as ``log(softmax)``, so very negative values stay exact
    instead of underflowing to ``-inf``.

    Parameters
    ----------
    x : array of shape (..., n_classes)
        Real values (logits). ``-inf`` entries get probability 0.
    axis : int, default -1
        The class axis.

    Returns
    -------
    array
        The log-probabilities, of the input's shape, array type and floating dtype (half
        precision is accumulated in float32).

    Examples
    --------
    >>> import numpy as np
    >>> log_softmax(np.array([0.0, 0.0])).tolist()
    [-0.6931471805599453, -0.6931471805599453]
    """
    xp, x, out_dtype, axis = _prepare(x, axis)
    out, _ = stable_log_softmax(x, xp, axis=axis)
    return xp.astype(out, out_dtype, copy=False)


def softmax(x: ArrayLike, /, *, axis: int = -1) -> Array:
    r"""Softmax along ``axis``: non-negative values that sum to 1.

    .. math::

        \operatorname{softmax}(x)_i = \frac{e^{x_i - m}}{\sum_j e^{x_j - m}}, \qquad m = \max_j x_j

    Parameters
    ----------
    x : array of shape (..., n_classes)
        Real values (logits). ``-inf`` entries get probability 0.
    axis : int, default -1
        The class axis.

    Returns
    -------
    array
        The probabilities, of the input's shape, array type and floating dtype (half precision
        is accumulated in float32).

    Examples
    --------
    >>> import numpy as np
    >>> softmax(np.array([1e4, 0.0])).tolist()
    [1.0, 0.0]
    """
    xp, x, out_dtype, axis = _prepare(x, axis)
    out = xp.exp(stable_log_softmax(x, xp, axis=axis)[0])
    return xp.astype(out, out_dtype, copy=False)


def log_sigmoid(x: ArrayLike, /) -> Array:
    r"""Elementwise logarithm of the logistic sigmoid.

    .. math::

        \log \sigma(x) = \min(x, 0) - \log\left(1 + e^{-|x|}\right)

    Exact for large ``|x|``: ``log_sigmoid(-1e4) = -1e4`` rather than ``-inf``.

    Parameters
    ----------
    x : array of any shape
        Real values (log-odds).

    Returns
    -------
    array
        :math:`\log \sigma(x)`, of the input's shape, array type and floating dtype (half
        precision is computed in float32).

    Examples
    --------
    >>> import numpy as np
    >>> log_sigmoid(np.array([-1e4, 0.0])).tolist()
    [-10000.0, -0.6931471805599453]
    """
    xp, x, out_dtype, _ = _prepare(x, None)
    return xp.astype(stable_log_sigmoid(x, xp), out_dtype, copy=False)
