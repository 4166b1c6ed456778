r"""Noise-robust and noise-corrected classification losses on logits.

Two families for training with noisy labels:

- **robust losses** bound the penalty of a confidently contradicted label, so that mislabeled
  samples pull less on the model: :func:`generalized_cross_entropy` (Zhang & Sabuncu 2018)
  and :func:`symmetric_cross_entropy` (Wang et al. 2019);
- **loss correction** with a known (or estimated) noise transition matrix
  :math:`T_{ij} = P(\tilde y = j \mid y = i)`: :func:`forward_corrected_cross_entropy` and
  :func:`backward_corrected_cross_entropy` (Patrini et al. 2017).

Every function takes logits (the class axis ``axis``, default last) and integer class indices
(``ignore_index`` drops a sample) or, for the robust losses, class probabilities of the logits'
shape. All are computed in log space from ``log_softmax = x - logsumexp(x)``, so logits of
``±1e4`` and ``-inf`` logits on classes other than the target give finite losses and gradients.

The ``mean`` reduction divides by :math:`\sum_n s_n` over non-ignored samples, with
:math:`s_n` the ``sample_weight`` (1 when not given, so: the number of non-ignored samples).
When every sample is ignored the mean is 0, with a zero gradient, not NaN.
"""

from __future__ import annotations

import math

from ._array import as_namespace_array, concrete_bool, host_float, take_last, xmul
from ._inputs import ClassInputs, prepare_class_inputs, reduce_loss, total, weighted_rows
from ._typing import Array, ArrayLike, Namespace, Reduction
from ._validation import (
    check_floating,
    check_in_unit_interval,
    check_number,
    check_reduction,
    check_rows_sum_to_one,
    check_shape,
)
from .special import stable_log_softmax, stable_logsumexp

__all__ = [
    "backward_corrected_cross_entropy",
    "forward_corrected_cross_entropy",
    "generalized_cross_entropy",
    "symmetric_cross_entropy",
]


def _log_softmax(inputs: ClassInputs) -> Array:
    return stable_log_softmax(inputs.logits, inputs.xp, axis=-1)[0]


def _finish(loss: Array, inputs: ClassInputs, reduction: Reduction) -> Array:
    """Weight the per-sample ``loss`` and reduce it; ``mean`` divides by sum of s_n over kept samples."""
    xp = inputs.xp
    row_weight = inputs.row_weight()
    loss = weighted_rows(loss, row_weight, xp)
    denominator = math.prod(loss.shape) if row_weight is None else total(row_weight, xp)
    return reduce_loss(loss, denominator, reduction, xp, inputs.out_dtype)


def generalized_cross_entropy(
    logits: ArrayLike,
    targets: ArrayLike,
    /,
    *,
    q: float = 0.7,
    axis: int = -1,
    ignore_index: int = -100,
    sample_weight: ArrayLike | None = None,
    reduction: Reduction = "mean",
) -> Array:
    r"""Generalized cross-entropy :math:`\mathcal{L}_q`, a noise-robust loss between CE and MAE.

    .. math::

        \ell_n = \frac{1 - p_{n,y_n}^{\,q}}{q}, \qquad
        p_{n,c} = \operatorname{softmax}(x_n)_c

    and for probability targets :math:`\ell_n = \sum_c t_{n,c}\,(1 - p_{n,c}^{\,q}) / q`.
    As :math:`q \to 0` it tends to the cross-entropy :math:`-\log p_{n,y_n}`; at :math:`q = 1`
    it is :math:`1 - p_{n,y_n}`, half the mean absolute error between the softmax and the
    one-hot target. The loss is bounded by :math:`1/q`, which limits the pull of mislabeled
    samples. :math:`p^q` is computed as :math:`\exp(q \log p)` from ``log_softmax`` and
    :math:`1 - p^q` as ``-expm1(q log p)``, so it stays exact for tiny ``q`` and extreme logits.

    Parameters
    ----------
    logits : array of shape (n_samples, n_classes) or (..., n_classes)
        Unnormalized scores; the class axis is ``axis``.
    targets : array of shape (n_samples,) or (n_samples, n_classes)
        Integer class indices (the logits' shape without ``axis``), or class probabilities of
        the logits' shape.
    q : float, default 0.7
        Exponent in (0, 1] (the paper uses 0.7).
    axis : int, default -1
        Class axis of ``logits`` (and of probability ``targets``).
    ignore_index : int, default -100
        Integer targets equal to it contribute nothing, neither to the sum nor to the mean's
        denominator.
    sample_weight : array of shape (n_samples,), optional
        Non-negative per-sample weights :math:`s_n`.
    reduction : {"mean", "sum", "none"}, default "mean"
        ``mean``: :math:`\sum_n s_n \ell_n / \sum_n s_n` over non-ignored samples (the number
        of non-ignored samples without ``sample_weight``; 0 when every sample is ignored).
        ``none``: per-sample losses of shape ``(n_samples,)`` (ignored samples give 0).

    Returns
    -------
    array
        The logits' array type and dtype (half precision is computed in float32).

    References
    ----------
    Z. Zhang and M. R. Sabuncu, "Generalized Cross Entropy Loss for Training Deep Neural
    Networks with Noisy Labels", NeurIPS 2018.

    Examples
    --------
    >>> import numpy as np
    >>> logits = np.log(np.array([[0.25, 0.75], [0.5, 0.5]]))
    >>> generalized_cross_entropy(logits, np.array([1, 0]), q=1.0, reduction="none")  # 1 - p_y
    array([0.25, 0.5 ])
    >>> float(generalized_cross_entropy(logits, np.array([1, 0]), q=0.5))
    0.4268678150290139
    """
    q = check_number("q", q, low=0.0, high=1.0, low_open=True)
    reduction = check_reduction(reduction)
    inputs = prepare_class_inputs(logits, targets, axis=axis, ignore_index=ignore_index, sample_weight=sample_weight)
    xp = inputs.xp
    log_p = _log_softmax(inputs)
    if inputs.is_index:
        loss = -xp.expm1(q * take_last(log_p, inputs.indices, xp)) / q
    else:
        loss = xp.sum(xmul(inputs.probs, -xp.expm1(q * log_p) / q, xp), axis=-1)
    return _finish(loss, inputs, reduction)


def symmetric_cross_entropy(
    logits: ArrayLike,
    targets: ArrayLike,
    /,
    *,
    alpha: float = 0.1,
    beta: float = 1.0,
    log_zero: float = -4.0,
    axis: int = -1,
    ignore_index: int = -100,
    sample_weight: ArrayLike | None = None,
    reduction: Reduction = "mean",
) -> Array:
    r"""Symmetric cross-entropy: cross-entropy plus reverse cross-entropy.

    .. math::

        \ell_n = \alpha\,\underbrace{\Bigl(-\sum_c t_{n,c} \log p_{n,c}\Bigr)}_{\text{CE}}
        + \beta\,\underbrace{\Bigl(-\sum_c p_{n,c} \max(\log t_{n,c}, A)\Bigr)}_{\text{RCE}},
        \qquad p_{n,c} = \operatorname{softmax}(x_n)_c

    with :math:`A` = ``log_zero`` standing for :math:`\log 0` (the paper's :math:`A = -4`).
    For integer targets (one-hot :math:`t`) this is
    :math:`\alpha(-\log p_{n,y_n}) - \beta A\,(1 - p_{n,y_n})`, the reverse term being a
    scaled mean absolute error. For probability targets, :math:`\log t` is clamped below at
    :math:`A` (as the authors' code clamps :math:`t` from below), so the loss is continuous in
    :math:`t` and equals the one-hot value at one-hot :math:`t`.

    Parameters
    ----------
    logits : array of shape (n_samples, n_classes) or (..., n_classes)
        Unnormalized scores; the class axis is ``axis``.
    targets : array of shape (n_samples,) or (n_samples, n_classes)
        Integer class indices, or class probabilities of the logits' shape.
    alpha, beta : float, default 0.1 and 1.0
        Non-negative weights of the cross-entropy and of the reverse cross-entropy.
    log_zero : float, default -4.0
        The negative value :math:`A` that replaces :math:`\log 0` in the reverse term.
    axis : int, default -1
        Class axis.
    ignore_index : int, default -100
        Integer targets equal to it contribute nothing.
    sample_weight : array of shape (n_samples,), optional
        Non-negative per-sample weights :math:`s_n`.
    reduction : {"mean", "sum", "none"}, default "mean"
        ``mean``: :math:`\sum_n s_n \ell_n / \sum_n s_n` over non-ignored samples (0 when
        every sample is ignored); ``none``: shape ``(n_samples,)``.

    Returns
    -------
    array
        The logits' array type and dtype.

    References
    ----------
    Y. Wang, X. Ma, Z. Chen, Y. Luo, J. Yi and J. Bailey, "Symmetric Cross Entropy for Robust
    Learning with Noisy Labels", ICCV 2019.

    Examples
    --------
    >>> import numpy as np
    >>> logits = np.log(np.array([[0.25, 0.75]]))
    >>> float(symmetric_cross_entropy(logits, np.array([1]), alpha=0.0, beta=1.0))  # 4 * (1 - 0.75)
    1.0
    >>> float(symmetric_cross_entropy(logits, np.array([1])))  # 0.1 * ln(4/3) + 1.0
    1.0287682072451782
    """
    alpha = check_number("alpha", alpha, low=0.0)
    beta = check_number("beta", beta, low=0.0)
    log_zero = check_number("log_zero", log_zero, high=0.0, low_open=True, high_open=True)
    reduction = check_reduction(reduction)
    inputs = prepare_class_inputs(logits, targets, axis=axis, ignore_index=ignore_index, sample_weight=sample_weight)
    xp = inputs.xp
    log_p = _log_softmax(inputs)
    if inputs.is_index:
        log_p_y = take_last(log_p, inputs.indices, xp)
        ce = -log_p_y
        rce = log_zero * xp.expm1(log_p_y)  # -A (1 - p_y)
    else:
        t: Array = inputs.probs  # probability targets: not None
        ce = -xp.sum(xmul(t, log_p, xp), axis=-1)
        positive = t > 0
        log_t = xp.log(xp.where(positive, t, xp.ones_like(t)))
        floor = xp.full_like(log_t, log_zero)
        log_t = xp.where(positive, xp.maximum(log_t, floor), floor)
        rce = -xp.sum(xp.exp(log_p) * log_t, axis=-1)
    loss = alpha * ce + beta * rce if alpha != 0 else beta * rce
    return _finish(loss, inputs, reduction)


def _prepare_transition(transition: ArrayLike, inputs: ClassInputs) -> Array:
    """Validated transition matrix of shape (n_classes, n_classes) in the compute dtype."""
    xp = inputs.xp
    transition = as_namespace_array(transition, xp, name="transition", like=inputs.stored)
    check_floating("transition", transition, xp)
    c = inputs.num_classes
    check_shape("transition", transition, (c, c), rule="(n_classes, n_classes)")
    # Checked in the caller's precision, so the sum tolerance is that of the given dtype.
    check_in_unit_interval("transition", transition, xp)
    check_rows_sum_to_one("transition", transition, xp, what="rows (row-stochastic: P(noisy | clean))")
    return xp.astype(transition, inputs.dtype)


def _rows(matrix: Array, indices: Array, xp: Namespace) -> Array:
    """``matrix[indices]``: one row per sample, shape ``indices.shape + (n_classes,)``."""
    flat = xp.reshape(indices, (-1,))
    return xp.reshape(xp.take(matrix, flat, axis=0), (*indices.shape, matrix.shape[-1]))


def forward_corrected_cross_entropy(
    logits: ArrayLike,
    targets: ArrayLike,
    transition: ArrayLike,
    /,
    *,
    axis: int = -1,
    ignore_index: int = -100,
    sample_weight: ArrayLike | None = None,
    reduction: Reduction = "mean",
) -> Array:
    r"""Forward-corrected cross-entropy for noisy labels with a known transition matrix.

    The model's clean-class posterior :math:`p = \operatorname{softmax}(x)` is pushed through
    the noise process, and the cross-entropy is taken against the observed noisy label
    :math:`\tilde y`:

    .. math::

        \ell_n = -\log\bigl(p_n^\top T\bigr)_{\tilde y_n}
        = -\operatorname{LSE}_i\bigl(\log p_{n,i} + \log T_{i,\tilde y_n}\bigr),
        \qquad T_{ij} = P(\tilde y = j \mid y = i)

    computed in log space as on the right, so zeros in :math:`T` (``log 0 = -inf``) and
    extreme logits are exact. With :math:`T = I` it is the plain cross-entropy. The loss is
    infinite only where the noisy label is impossible under :math:`T` and :math:`p`.

    Parameters
    ----------
    logits : array of shape (n_samples, n_classes) or (..., n_classes)
        Unnormalized scores for the clean classes; the class axis is ``axis``.
    targets : int array of shape (n_samples,)
        Observed (noisy) class indices. Probability targets are not supported (TypeError).
    transition : array of shape (n_classes, n_classes)
        Row-stochastic noise matrix, ``transition[i, j] = P(noisy = j | clean = i)``: floating
        entries in [0, 1], each row summing to 1 (within sqrt of its dtype's epsilon).
    axis : int, default -1
        Class axis.
    ignore_index : int, default -100
        Targets equal to it contribute nothing.
    sample_weight : array of shape (n_samples,), optional
        Non-negative per-sample weights :math:`s_n`.
    reduction : {"mean", "sum", "none"}, default "mean"
        ``mean``: :math:`\sum_n s_n \ell_n / \sum_n s_n` over non-ignored samples (0 when
        every sample is ignored); ``none``: shape ``(n_samples,)``.

    Returns
    -------
    array
        The logits' array type and dtype. Gradients flow to ``logits`` (and to
        ``transition`` when it is a tensor that requires them).

    References
    ----------
    G. Patrini, A. Rozza, A. K. Menon, R. Nock and L. Qu, "Making Deep Neural Networks Robust
    to Label Noise: a Loss Correction Approach", CVPR 2017.

    Examples
    --------
    >>> import numpy as np
    >>> logits = np.log(np.array([[0.9, 0.1]]))
    >>> T = np.array([[0.8, 0.2], [0.3, 0.7]])
    >>> float(forward_corrected_cross_entropy(logits, np.array([1]), T))  # -ln(0.9*0.2 + 0.1*0.7)
    1.3862943611198906
    """
    reduction = check_reduction(reduction)
    inputs = prepare_class_inputs(
        logits, targets, axis=axis, ignore_index=ignore_index, sample_weight=sample_weight, allow_probs=False
    )
    xp = inputs.xp
    transition = _prepare_transition(transition, inputs)
    positive = transition > 0
    log_t = xp.where(
        positive,
        xp.log(xp.where(positive, transition, xp.ones_like(transition))),
        xp.full_like(transition, -math.inf),
    )
    # Column y~ of log T for each sample: rows of log T transposed.
    z = _log_softmax(inputs) + _rows(xp.permute_dims(log_t, (1, 0)), inputs.indices, xp)
    if inputs.valid is not None:
        # Ignored samples: a finite stand-in, so no NaN reaches the gradient through an
        # all -inf row (their loss is zeroed afterwards in any case).
        z = xp.where(xp.expand_dims(inputs.valid, axis=-1), z, xp.zeros_like(z))
    loss = -stable_logsumexp(z, xp, axis=-1)
    return _finish(loss, inputs, reduction)


def backward_corrected_cross_entropy(
    logits: ArrayLike,
    targets: ArrayLike,
    transition: ArrayLike,
    /,
    *,
    axis: int = -1,
    ignore_index: int = -100,
    sample_weight: ArrayLike | None = None,
    reduction: Reduction = "mean",
) -> Array:
    r"""Backward-corrected cross-entropy for noisy labels with a known transition matrix.

    The vector of per-class losses is corrected by the inverse of the noise matrix, which
    makes the loss unbiased: its expectation over the label noise is the clean loss.

    .. math::

        \ell_n = \bigl(T^{-1} \boldsymbol\ell_n\bigr)_{\tilde y_n}
        = \sum_j (T^{-1})_{\tilde y_n, j}\,\bigl(-\log p_{n,j}\bigr),
        \qquad T_{ij} = P(\tilde y = j \mid y = i)

    :math:`T^{-1}` has negative entries, so **the loss can be negative** (unbounded below as
    a prediction grows confident), a known property of backward correction. With
    :math:`T = I` it is the plain cross-entropy. A ``-inf`` logit gives
    :math:`-\log p_j = \infty`: the loss is then not finite (``inf``, or NaN for
    :math:`\infty - \infty` when entries of both signs meet infinite terms) wherever the matching
    entry of :math:`T^{-1}` is non-zero; that is the definition, not a numerical failure. Zero
    entries of :math:`T^{-1}` contribute exactly 0, and logits of any finite size are exact.

    Parameters
    ----------
    logits : array of shape (n_samples, n_classes) or (..., n_classes)
        Unnormalized scores; the class axis is ``axis``.
    targets : int array of shape (n_samples,)
        Observed (noisy) class indices. Probability targets are not supported (TypeError).
    transition : array of shape (n_classes, n_classes)
        Row-stochastic noise matrix as in :func:`forward_corrected_cross_entropy`. It must be
        invertible and well conditioned: a condition number above :math:`1/\sqrt{\epsilon}` of
        the compute dtype (about 2.9e3 for float32, 6.7e7 for float64) raises ValueError.
    axis : int, default -1
        Class axis.
    ignore_index : int, default -100
        Targets equal to it contribute nothing.
    sample_weight : array of shape (n_samples,), optional
        Non-negative per-sample weights :math:`s_n`.
    reduction : {"mean", "sum", "none"}, default "mean"
        ``mean``: :math:`\sum_n s_n \ell_n / \sum_n s_n` over non-ignored samples (0 when
        every sample is ignored); ``none``: shape ``(n_samples,)``.

    Returns
    -------
    array
        The logits' array type and dtype.

    References
    ----------
    G. Patrini, A. Rozza, A. K. Menon, R. Nock and L. Qu, "Making Deep Neural Networks Robust
    to Label Noise: a Loss Correction Approach", CVPR 2017.

    Examples
    --------
    >>> import numpy as np
    >>> logits = np.log(np.array([[0.5, 0.5], [0.9, 0.1]]))
    >>> T = np.array([[0.8, 0.2], [0.2, 0.8]])
    >>> backward_corrected_cross_entropy(logits, np.array([0, 0]), T, reduction="none")
    array([ 0.69314718, -0.62704768])
    """
    reduction = check_reduction(reduction)
    inputs = prepare_class_inputs(
        logits, targets, axis=axis, ignore_index=ignore_index, sample_weight=sample_weight, allow_probs=False
    )
    xp = inputs.xp
    transition = _prepare_transition(transition, inputs)
    singular = xp.linalg.svdvals(transition)  # descending
    limit = 1.0 / math.sqrt(xp.finfo(transition.dtype).eps)
    ill = ~(singular[0] <= limit * singular[-1])
    if concrete_bool(ill):
        s_max, s_min = host_float(singular[0]), host_float(singular[-1])
        cond = s_max / s_min if s_min > 0 else math.inf
        raise ValueError(
            "`transition` must be invertible and well conditioned (condition number at most "
            f"1/sqrt(eps) = {limit:.3g} for {transition.dtype}); got a condition number of {cond:.3g}"
        )
    inverse_rows = _rows(xp.linalg.inv(transition), inputs.indices, xp)
    loss = xp.sum(xmul(inverse_rows, -_log_softmax(inputs), xp), axis=-1)
    return _finish(loss, inputs, reduction)
