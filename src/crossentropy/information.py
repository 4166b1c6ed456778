"""Information measures between discrete distributions: entropy, cross-entropy, KL and JS.

Every function takes probability vectors along ``axis`` (default the last one) and returns
the array without that axis. Inputs are validated, never repaired: entries must lie in
[0, 1] and each distribution must sum to 1 within ``sqrt(eps)`` of its dtype. Unlike
:func:`scipy.stats.entropy`, nothing is renormalized silently; an unnormalized vector is an
error, so a forgotten softmax does not go unnoticed.

Conventions shared by all of them: ``0 · log 0 = 0`` (a zero-probability outcome contributes
nothing), ``p · log(p / 0) = +inf`` for ``p > 0``, ``base=None`` gives nats and ``base=2``
bits. Half precision inputs are computed in float32 and returned in their own dtype, and
PyTorch gradients flow through (never NaN at zero probabilities).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple, ParamSpec, TypeVar

import numpy as np

from ._array import (
    as_namespace_array,
    as_result_array,
    compute_dtype,
    get_namespace,
    log_base_divisor,
    xlogy,
)
from ._typing import Array, ArrayLike, DType, Namespace
from ._validation import (
    check_axis,
    check_base,
    check_floating,
    check_in_unit_interval,
    check_ndim,
    check_not_empty,
    check_rows_sum_to_one,
    check_shape,
)

__all__ = ["Decomposition", "cross_entropy", "decompose", "entropy", "js_divergence", "kl_divergence"]


class Decomposition(NamedTuple):
    """Cross-entropy split into entropy and KL divergence: ``cross_entropy = entropy + kl_divergence``.

    Attributes
    ----------
    cross_entropy : array
        :math:`H(P, Q)`.
    entropy : array
        :math:`H(P)`, the part no choice of ``Q`` can remove.
    kl_divergence : array
        :math:`D_{KL}(P \\| Q)`, the excess cost of coding ``P`` with ``Q``.
    """

    cross_entropy: Array
    entropy: Array
    kl_divergence: Array


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _quiet(func: Callable[_P, _R]) -> Callable[_P, _R]:
    """Silence NumPy's divide and overflow warnings: ``log 0 = -inf`` and ``p / 0 = inf`` are intended here.

    A fresh ``np.errstate`` per call keeps it re-entrant and thread-safe on every NumPy version.
    """

    @functools.wraps(func)
    def quiet(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        with np.errstate(divide="ignore", over="ignore"):
            return func(*args, **kwargs)

    return quiet


def _check_distribution(name: str, x: Array, xp: Namespace, axis: int) -> None:
    """Entries in [0, 1], each slice along ``axis`` summing to 1 (tolerance of the caller's dtype)."""
    check_in_unit_interval(name, x, xp)
    check_rows_sum_to_one(name, x, xp, axis=axis, what=f"distributions along axis {axis}")


def _prepare_one(p: ArrayLike, axis: int) -> tuple[Namespace, Array, DType, int]:
    """Validate one distribution array; return ``(xp, p in compute dtype, out dtype, axis)``."""
    xp = get_namespace(p)
    p = as_namespace_array(p, xp, name="p")
    check_floating("p", p, xp)
    check_ndim("p", p, at_least=1)
    check_not_empty("p", p)
    axis = check_axis("axis", axis, p.ndim)
    _check_distribution("p", p, xp, axis)
    return xp, xp.astype(p, compute_dtype(xp, p.dtype), copy=False), p.dtype, axis


def _prepare_pair(p: ArrayLike, q: ArrayLike, axis: int) -> tuple[Namespace, Array, Array, DType, int]:
    """Validate two distribution arrays of one shape; return ``(xp, p, q, out dtype, axis)``.

    ``p`` and ``q`` come back in the compute dtype of their common dtype.
    """
    xp = get_namespace(p, q)
    p = as_namespace_array(p, xp, name="p")
    q = as_namespace_array(q, xp, name="q", like=p)
    check_floating("p", p, xp)
    check_floating("q", q, xp)
    check_ndim("p", p, at_least=1)
    check_shape("q", q, tuple(p.shape), rule="the shape of `p`")
    check_not_empty("p", p)
    axis = check_axis("axis", axis, p.ndim)
    _check_distribution("p", p, xp, axis)
    _check_distribution("q", q, xp, axis)
    out_dtype = xp.result_type(p.dtype, q.dtype)
    work = compute_dtype(xp, out_dtype)
    return xp, xp.astype(p, work, copy=False), xp.astype(q, work, copy=False), out_dtype, axis


def _finish(x: Array, xp: Namespace, base: float | None, out_dtype: DType) -> Array:
    if base is not None:
        x = x / log_base_divisor(base)
    return as_result_array(xp.astype(x, out_dtype, copy=False), xp)


def _entropy(p: Array, xp: Namespace, axis: int) -> Array:
    return -xp.sum(xlogy(p, p, xp), axis=axis)


def _cross_entropy(p: Array, q: Array, xp: Namespace, axis: int) -> Array:
    return -xp.sum(xlogy(p, q, xp), axis=axis)


def _rel_entr(p: Array, q: Array, xp: Namespace) -> Array:
    """Elementwise ``p log(p / q)`` as :func:`scipy.special.rel_entr`: 0 where ``p = 0``.

    One division then one log keeps the term accurate when ``q`` is close to ``p``. Where that
    ratio is infinite (``q = 0 < p``, or a subnormal ``q`` overflowing it) ``log p - log q`` is
    used instead, which is ``+inf`` only for ``q = 0`` and keeps the gradient ``-p/q`` free of
    ``0 * inf``. Masked entries are replaced by 1 before every division and log, so autograd
    never meets ``0 / 0``.
    """
    zero = p == 0
    one = xp.ones_like(p)
    p1 = xp.where(zero, one, p)
    q1 = xp.where(zero, one, q)
    split = xp.isinf(p1 / q1)  # a mask only: no gradient flows through it
    ratio_log = xp.log(p1 / xp.where(split, one, q1))
    split_log = xp.log(xp.where(split, p1, one)) - xp.log(xp.where(split, q1, one))
    term = p * xp.where(split, split_log, ratio_log)
    return xp.where(zero, xp.zeros_like(term), term)


def _kl_divergence(p: Array, q: Array, xp: Namespace, axis: int) -> Array:
    return xp.sum(_rel_entr(p, q, xp), axis=axis)


@_quiet
def entropy(p: ArrayLike, /, *, axis: int = -1, base: float | None = None) -> Array:
    r"""Shannon entropy of the distributions along ``axis``.

    .. math::

        H(P) = -\sum_i p_i \log p_i, \qquad 0 \log 0 = 0

    Parameters
    ----------
    p : array of shape (..., n_classes)
        Probabilities in [0, 1], each slice along ``axis`` summing to 1 within
        ``sqrt(eps)`` of the dtype. Not renormalized (unlike :func:`scipy.stats.entropy`).
    axis : int, default -1
        The axis holding the outcomes.
    base : float, optional
        Logarithm base: ``None`` for nats, ``2`` for bits.

    Returns
    -------
    array
        Shape of ``p`` without ``axis``, the input's array type and dtype (half precision is
        computed in float32).

    Raises
    ------
    TypeError
        If ``p`` is not a floating-point array.
    ValueError
        If ``p`` is empty, has entries outside [0, 1] or slices not summing to 1, or if
        ``axis`` or ``base`` is invalid.

    Examples
    --------
    A biased coin carries less than one bit:

    >>> import numpy as np
    >>> float(entropy(np.array([0.9, 0.1])))
    0.3251
    >>> float(entropy(np.array([0.5, 0.5]), base=2))
    1.0
    >>> entropy(np.array([[1.0, 0.0], [0.5, 0.5]])).tolist()  # 0 log 0 = 0
    [0.0, 0.6931471805599453]
    """
    base = check_base(base)
    xp, p, out_dtype, axis = _prepare_one(p, axis)
    return _finish(_entropy(p, xp, axis), xp, base, out_dtype)


@_quiet
def cross_entropy(p: ArrayLike, q: ArrayLike, /, *, axis: int = -1, base: float | None = None) -> Array:
    r"""Cross-entropy of ``q`` relative to ``p``: the mean code length of ``P`` coded with ``Q``.

    .. math::

        H(P, Q) = -\sum_i p_i \log q_i

    with :math:`0 \log q = 0` for any ``q`` (also 0), and :math:`H(P, Q) = +\infty` where some
    :math:`q_i = 0 < p_i`. With a one-hot ``p`` it is the surprise :math:`-\log q_y` of the
    observed outcome. The gradient with respect to ``q`` is :math:`-p / q`.

    Parameters
    ----------
    p, q : arrays of shape (..., n_classes)
        Probabilities in [0, 1] of one shape, each slice along ``axis`` summing to 1 within
        ``sqrt(eps)`` of the dtype. Not renormalized.
    axis : int, default -1
        The axis holding the outcomes.
    base : float, optional
        Logarithm base: ``None`` for nats, ``2`` for bits.

    Returns
    -------
    array
        Shape of the inputs without ``axis``, their array type and common dtype.

    Raises
    ------
    TypeError
        If ``p`` or ``q`` is not a floating-point array.
    ValueError
        If the shapes differ, the inputs are empty, out of [0, 1] or not normalized, or if
        ``axis`` or ``base`` is invalid.

    Examples
    --------
    >>> import numpy as np
    >>> float(cross_entropy(np.array([0.9, 0.1]), np.array([0.7, 0.3])))
    0.4414
    >>> float(cross_entropy(np.array([0.0, 1.0]), np.array([0.999, 0.001])))  # -ln 0.001
    6.9078
    """
    base = check_base(base)
    xp, p, q, out_dtype, axis = _prepare_pair(p, q, axis)
    return _finish(_cross_entropy(p, q, xp, axis), xp, base, out_dtype)


@_quiet
def kl_divergence(p: ArrayLike, q: ArrayLike, /, *, axis: int = -1, base: float | None = None) -> Array:
    r"""Kullback-Leibler divergence of ``q`` from ``p``.

    .. math::

        D_{KL}(P \,\|\, Q) = \sum_i p_i \log \frac{p_i}{q_i}

    Each term is computed as :math:`p_i \log(p_i / q_i)`, like :func:`scipy.special.rel_entr`,
    not as a difference of two cross-entropies, so the result stays accurate when ``q`` is
    close to ``p``. Terms with :math:`p_i = 0` are 0; a term with :math:`q_i = 0 < p_i` makes
    the divergence :math:`+\infty`, and only such a term: where :math:`p_i / q_i` overflows for
    a subnormal :math:`q_i` the term is computed as :math:`p_i (\log p_i - \log q_i)` and stays
    finite (``rel_entr`` gives ``inf`` there). The result is not clamped at 0: mathematically
    :math:`D_{KL} \ge 0`, but rounding can give tiny negative values (about ``-1e-17`` in
    float64) for nearly equal distributions.

    Parameters
    ----------
    p, q : arrays of shape (..., n_classes)
        Probabilities in [0, 1] of one shape, each slice along ``axis`` summing to 1 within
        ``sqrt(eps)`` of the dtype. Not renormalized.
    axis : int, default -1
        The axis holding the outcomes.
    base : float, optional
        Logarithm base: ``None`` for nats, ``2`` for bits.

    Returns
    -------
    array
        Shape of the inputs without ``axis``, their array type and common dtype.

    Raises
    ------
    TypeError
        If ``p`` or ``q`` is not a floating-point array.
    ValueError
        If the shapes differ, the inputs are empty, out of [0, 1] or not normalized, or if
        ``axis`` or ``base`` is invalid.

    Examples
    --------
    >>> import numpy as np
    >>> float(kl_divergence(np.array([0.9, 0.1]), np.array([0.7, 0.3])))
    0.1163
    >>> float(kl_divergence(np.array([0.5, 0.5]), np.array([1.0, 0.0])))
    inf
    """
    base = check_base(base)
    xp, p, q, out_dtype, axis = _prepare_pair(p, q, axis)
    return _finish(_kl_divergence(p, q, xp, axis), xp, base, out_dtype)


@_quiet
def js_divergence(p: ArrayLike, q: ArrayLike, /, *, axis: int = -1, base: float | None = None) -> Array:
    r"""Jensen-Shannon divergence: the symmetrized, bounded KL divergence.

    .. math::

        \operatorname{JS}(P, Q) = \tfrac12 D_{KL}(P \,\|\, M) + \tfrac12 D_{KL}(Q \,\|\, M),
        \qquad M = \tfrac12 (P + Q)

    It is symmetric, finite even where one distribution has zeros, and lies in
    :math:`[0, \ln 2]` nats (:math:`[0, 1]` bit). This is the divergence itself;
    :func:`scipy.spatial.distance.jensenshannon` returns its square root (a metric). Like
    :func:`kl_divergence` the result is not clamped, so rounding can leave it a few ulps
    outside that interval.

    Parameters
    ----------
    p, q : arrays of shape (..., n_classes)
        Probabilities in [0, 1] of one shape, each slice along ``axis`` summing to 1 within
        ``sqrt(eps)`` of the dtype. Not renormalized.
    axis : int, default -1
        The axis holding the outcomes.
    base : float, optional
        Logarithm base: ``None`` for nats, ``2`` for bits.

    Returns
    -------
    array
        Shape of the inputs without ``axis``, their array type and common dtype.

    Raises
    ------
    TypeError
        If ``p`` or ``q`` is not a floating-point array.
    ValueError
        If the shapes differ, the inputs are empty, out of [0, 1] or not normalized, or if
        ``axis`` or ``base`` is invalid.

    Examples
    --------
    Disjoint supports reach the bound of one bit:

    >>> import numpy as np
    >>> float(js_divergence(np.array([1.0, 0.0]), np.array([0.0, 1.0]), base=2))
    1.0
    >>> float(js_divergence(np.array([0.9, 0.1]), np.array([0.7, 0.3])))
    0.0324
    """
    base = check_base(base)
    xp, p, q, out_dtype, axis = _prepare_pair(p, q, axis)
    # p log(p / m) = (2p log(2p / s)) / 2 with s = p + q: the same ratios (halving is exact), but
    # without (p + q) / 2 underflowing to 0 next to a subnormal q, which would make JS infinite.
    s = p + q
    js = (xp.sum(_rel_entr(2 * p, s, xp), axis=axis) + xp.sum(_rel_entr(2 * q, s, xp), axis=axis)) / 4
    return _finish(js, xp, base, out_dtype)


@_quiet
def decompose(p: ArrayLike, q: ArrayLike, /, *, axis: int = -1, base: float | None = None) -> Decomposition:
    r"""Cross-entropy, entropy and KL divergence at once, validating the inputs once.

    .. math::

        \underbrace{H(P, Q)}_{\text{cross-entropy}}
        = \underbrace{H(P)}_{\text{entropy}}
        + \underbrace{D_{KL}(P \,\|\, Q)}_{\text{KL divergence}}

    Minimizing cross-entropy over ``Q`` therefore minimizes the KL divergence: the entropy is
    the floor no model can go below. Each of the three parts is computed directly (as by
    :func:`cross_entropy`, :func:`entropy` and :func:`kl_divergence`), so the identity holds up
    to rounding, not bit for bit.

    Parameters
    ----------
    p, q : arrays of shape (..., n_classes)
        Probabilities in [0, 1] of one shape, each slice along ``axis`` summing to 1 within
        ``sqrt(eps)`` of the dtype. Not renormalized.
    axis : int, default -1
        The axis holding the outcomes.
    base : float, optional
        Logarithm base: ``None`` for nats, ``2`` for bits.

    Returns
    -------
    Decomposition
        Named tuple ``(cross_entropy, entropy, kl_divergence)`` of arrays shaped like the
        inputs without ``axis``.

    Examples
    --------
    >>> import numpy as np
    >>> parts = decompose(np.array([0.9, 0.1]), np.array([0.7, 0.3]))
    >>> [round(float(x), 4) for x in parts]
    [0.4414, 0.3251, 0.1163]
    """
    base = check_base(base)
    xp, p, q, out_dtype, axis = _prepare_pair(p, q, axis)
    return Decomposition(
        cross_entropy=_finish(_cross_entropy(p, q, xp, axis), xp, base, out_dtype),
        entropy=_finish(_entropy(p, xp, axis), xp, base, out_dtype),
        kl_divergence=_finish(_kl_divergence(p, q, xp, axis), xp, base, out_dtype),
    )
