r"""Differentiable penalties added to a training loss.

- :func:`z_loss`: the squared log-partition function, which keeps logits from drifting
  (PaLM's auxiliary z-loss, without its coefficient);
- :func:`neighbor_js_penalty`: Jensen-Shannon divergence between the predicted distributions of
  adjacent positions of a sequence, a temporal smoothness penalty;
- :func:`demographic_parity_gap`: the largest difference between groups' mean predicted
  probability of the positive outcome, a fairness penalty.

Each is written with array-API operations only, so gradients flow in PyTorch (and JAX).
"""

from __future__ import annotations

import math

from ._array import as_namespace_array, compute_dtype, get_namespace, is_integer, move_axes, xlogy
from ._inputs import prepare_logits, prepare_sample_weight, reduce_loss
from ._typing import Array, ArrayLike, Reduction
from ._validation import (
    check_axis,
    check_floating,
    check_in_unit_interval,
    check_ndim,
    check_not_empty,
    check_reduction,
    check_rows_sum_to_one,
    check_shape,
)
from .special import stable_logsumexp

__all__ = ["demographic_parity_gap", "neighbor_js_penalty", "z_loss"]


def z_loss(logits: ArrayLike, /, *, axis: int = -1, reduction: Reduction = "mean") -> Array:
    r"""Squared log-partition function of each row of logits (the auxiliary z-loss).

    .. math::

        \ell_n = \Bigl(\log \sum_c e^{x_{n,c}}\Bigr)^2 = \operatorname{LSE}(x_n)^2

    It pulls :math:`\operatorname{LSE}(x)` (the softmax normalizer) towards 0, which keeps
    logits from drifting to large magnitudes where low-precision training breaks down. The
    function returns the penalty **without a coefficient**: multiply it yourself, as PaLM does
    with :math:`10^{-4}` (``loss = ce + 1e-4 * z_loss(logits)``).

    Parameters
    ----------
    logits : array of shape (n_samples, n_classes) or (..., n_classes)
        Unnormalized scores; the class axis is ``axis``.
    axis : int, default -1
        Class axis.
    reduction : {"mean", "sum", "none"}, default "mean"
        ``mean`` divides by the number of rows (every position of the logits but ``axis``);
        ``none`` returns the logits' shape without ``axis``.

    Returns
    -------
    array
        The logits' array type and dtype (half precision is computed in float32).

    References
    ----------
    A. Chowdhery et al., "PaLM: Scaling Language Modeling with Pathways", JMLR 2023 (sec. 5).

    Examples
    --------
    >>> import numpy as np
    >>> z_loss(np.array([[0.0, 0.0], [1e4, 1e4]]), reduction="none")  # (ln 2)^2, (1e4 + ln 2)^2
    array([4.80453014e-01, 1.00013863e+08])
    """
    reduction = check_reduction(reduction)
    xp, x, out_dtype, _ = prepare_logits(logits, axis=axis)
    loss = stable_logsumexp(x, xp, axis=-1) ** 2
    return reduce_loss(loss, math.prod(loss.shape), reduction, xp, out_dtype)


def neighbor_js_penalty(
    probs: ArrayLike, /, *, axis: int = -1, sequence_axis: int = -2, reduction: Reduction = "mean"
) -> Array:
    r"""Jensen-Shannon divergence between the predictions of adjacent sequence positions.

    For each sequence and each pair of neighbouring positions :math:`(t, t+1)` along
    ``sequence_axis``:

    .. math::

        \ell_{t} = \tfrac12 \operatorname{KL}\bigl(p_t \,\|\, m_t\bigr)
                 + \tfrac12 \operatorname{KL}\bigl(p_{t+1} \,\|\, m_t\bigr),
        \qquad m_t = \tfrac12 (p_t + p_{t+1})

    in nats, between 0 and :math:`\ln 2`. It penalizes predictions that jump from one position
    (frame, token, time step) to the next. Terms use :math:`0 \log 0 = 0`, so probabilities of
    exactly 0 give a finite value and finite gradients (where an entry is 0, its own
    :math:`p \log p` term contributes gradient 0, as ``torch.xlogy``).

    Parameters
    ----------
    probs : array of shape (n_sequences, length, n_classes), or any shape with these two axes
        Probability distributions along ``axis`` (entries in [0, 1], summing to 1).
    axis : int, default -1
        Class axis.
    sequence_axis : int, default -2
        Axis along which positions are adjacent; must differ from ``axis``.
    reduction : {"mean", "sum", "none"}, default "mean"
        ``mean`` averages over all adjacent pairs (every sequence, every position); ``none``
        returns ``probs``' shape without ``axis`` and with ``length - 1`` along the sequence
        axis. Sequences of length 1 have no pairs: ``mean`` and ``sum`` are then 0.

    Returns
    -------
    array
        The input's array type and dtype (half precision is computed in float32).

    Examples
    --------
    >>> import numpy as np
    >>> p = np.array([[[0.9, 0.1], [0.1, 0.9], [0.1, 0.9]]])  # (1 sequence, length 3, 2 classes)
    >>> neighbor_js_penalty(p, reduction="none")
    array([[0.36806421, 0.        ]])
    """
    reduction = check_reduction(reduction)
    xp = get_namespace(probs)
    probs = as_namespace_array(probs, xp, name="probs")
    check_floating("probs", probs, xp)
    check_ndim("probs", probs, at_least=2)
    check_not_empty("probs", probs)
    ndim = probs.ndim
    axis = check_axis("axis", axis, ndim)
    sequence_axis = check_axis("sequence_axis", sequence_axis, ndim)
    if axis == sequence_axis:
        raise ValueError(f"`sequence_axis` must differ from `axis` (the class axis); got {sequence_axis} for both")
    out_dtype = probs.dtype
    # (..., length, n_classes): sequence axis second to last, class axis last.
    p = move_axes(probs, (sequence_axis, axis), (-2, -1), xp)
    check_in_unit_interval("probs", p, xp)
    check_rows_sum_to_one("probs", p, xp, what="distributions along `axis`")
    p = xp.astype(p, compute_dtype(xp, out_dtype), copy=False)
    a, b = p[..., :-1, :], p[..., 1:, :]
    m = (a + b) / 2
    terms = xlogy(a, a, xp) - xlogy(a, m, xp) + xlogy(b, b, xp) - xlogy(b, m, xp)
    js = xp.sum(terms, axis=-1) / 2
    js = xp.maximum(js, xp.zeros_like(js))  # rounding can leave -1e-17 where the two are equal
    if reduction == "none":
        # The sequence axis sits last now; put it back where it is in the output.
        out_axis = sequence_axis - (1 if axis < sequence_axis else 0)
        js = move_axes(js, -1, out_axis, xp)
    return reduce_loss(js, math.prod(js.shape), reduction, xp, out_dtype)


def demographic_parity_gap(probs: ArrayLike, groups: ArrayLike, /, *, sample_weight: ArrayLike | None = None) -> Array:
    r"""Largest difference between groups in the mean predicted probability of the positive outcome.

    .. math::

        \Delta = \max_g \bar p_g - \min_g \bar p_g, \qquad
        \bar p_g = \frac{\sum_n s_n\,[g_n = g]\,p_n}{\sum_n s_n\,[g_n = g]}

    over the groups present in the batch (with positive total weight). For two groups it is
    :math:`|\bar p_a - \bar p_b|`; 0 means demographic parity. It is differentiable in
    ``probs`` (group means are products with a one-hot membership matrix; the gradient of
    max/min goes to the extreme groups). With a single group present there is nothing to
    compare within the batch and the gap is 0 (gradient 0); so it is when every weight is 0.

    Parameters
    ----------
    probs : array of shape (n_samples,)
        Predicted probability of the positive outcome, in [0, 1].
    groups : int or bool array of shape (n_samples,)
        Group label of each sample (any integer values).
    sample_weight : array of shape (n_samples,), optional
        Non-negative per-sample weights :math:`s_n` (1 when not given: plain group means).

    Returns
    -------
    array
        0-d, ``probs``' array type and dtype (half precision is computed in float32).

    References
    ----------
    C. Dwork, M. Hardt, T. Pitassi, O. Reingold and R. Zemel, "Fairness Through Awareness",
    ITCS 2012 (statistical parity).

    Examples
    --------
    >>> import numpy as np
    >>> probs = np.array([0.9, 0.7, 0.2, 0.4, 0.5])
    >>> float(demographic_parity_gap(probs, np.array([0, 0, 1, 1, 2])))  # 0.8 - 0.3
    0.5
    """
    xp = get_namespace(probs, groups)
    probs = as_namespace_array(probs, xp, name="probs")
    check_floating("probs", probs, xp)
    if probs.ndim != 1:
        raise ValueError(f"`probs` must have shape (n_samples,); got shape {tuple(probs.shape)}")
    check_not_empty("probs", probs)
    check_in_unit_interval("probs", probs, xp)
    groups = as_namespace_array(groups, xp, name="groups", like=probs)
    if groups.dtype == xp.bool:
        groups = xp.astype(groups, xp.int64)
    if not is_integer(xp, groups):
        raise TypeError(f"`groups` must be integer (or boolean) group labels; got dtype {groups.dtype}")
    check_shape("groups", groups, tuple(probs.shape), rule="one group label per sample")
    out_dtype = probs.dtype
    p = xp.astype(probs, compute_dtype(xp, out_dtype), copy=False)
    weight = prepare_sample_weight(sample_weight, xp, like=p, batch_shape=tuple(p.shape))

    labels = xp.unique_values(groups)
    membership = xp.astype(xp.expand_dims(groups, axis=-1) == labels, p.dtype)  # (n_samples, n_groups)
    if weight is not None:
        membership = membership * xp.expand_dims(weight, axis=-1)
    counts = xp.sum(membership, axis=0)
    sums = xp.sum(membership * xp.expand_dims(p, axis=-1), axis=0)
    present = counts > 0
    means = sums / xp.where(present, counts, xp.ones_like(counts))
    highest = xp.max(xp.where(present, means, xp.full_like(means, -math.inf)))
    lowest = xp.min(xp.where(present, means, xp.full_like(means, math.inf)))
    gap = xp.where(xp.any(present), highest - lowest, xp.zeros_like(highest))
    return xp.astype(gap, out_dtype, copy=False)
