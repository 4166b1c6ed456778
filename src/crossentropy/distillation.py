r"""Knowledge distillation on logits: divergences between a teacher's and a student's softmax.

:func:`distillation_loss` takes the two models' logits and returns one of four divergences
between :math:`p = \operatorname{softmax}(t / T)` (teacher) and
:math:`q = \operatorname{softmax}(s / T)` (student), per position, then reduced. Everything is
computed from the two log-softmaxes (log-sum-exp, never ``log(softmax)``), through the
difference :math:`d = \log p - \log q` of log-probabilities, so that:

* logits of any magnitude (±1e4) and ``-inf`` entries (masked classes) give exact results;
* nearly equal distributions keep their accuracy: each term is formed from :math:`d` with
  ``expm1``/``log1p`` (the Jensen–Shannon mixture as
  :math:`\log p - \log m = -\log(1 + (1-\beta)\,\operatorname{expm1}(-d))`), never as a
  difference of two probabilities, and the gradients autograd takes of them are the
  stable closed forms (forward KL: :math:`(q - p) / T` for the student);
* half precision (float16, bfloat16) is accumulated in float32 and returned in its dtype.

The building blocks (:func:`divergence_rows`) serve :mod:`crossentropy.torch.distillation` too.
"""

from __future__ import annotations

import math
from typing import get_args

import numpy as np

from ._array import as_namespace_array, as_result_array, compute_dtype, get_namespace, move_axes
from ._inputs import prepare_sample_weight, reduce_loss, total, warn_if_probabilities, weighted_rows
from ._typing import Array, ArrayLike, Divergence, Namespace, Reduction
from ._validation import (
    check_axis,
    check_floating,
    check_ndim,
    check_not_empty,
    check_number,
    check_reduction,
    check_shape,
    shown,
)
from .special import stable_log_softmax

__all__ = [
    "DIVERGENCES",
    "check_distillation_options",
    "distillation_loss",
    "divergence_rows",
    "jsd_log_ratios",
    "log_space_rows",
]

DIVERGENCES: tuple[Divergence, ...] = get_args(Divergence)


def check_distillation_options(
    divergence: object, beta: object, temperature: object
) -> tuple[Divergence, float, float]:
    """``(divergence, beta, temperature)`` checked: a known divergence, 0 < β < 1, T > 0 finite."""
    if not isinstance(divergence, str) or divergence not in DIVERGENCES:
        choices = ", ".join(repr(d) for d in DIVERGENCES)
        raise ValueError(f"`divergence` must be one of {choices}; got {divergence!r}")
    beta = check_number("beta", beta, low=0.0, high=1.0, low_open=True, high_open=True)
    temperature = check_number("temperature", temperature, low=0.0, low_open=True)
    return divergence, beta, temperature


def _masked_difference(lp: Array, lq: Array, zero: Array, xp: Namespace) -> Array:
    """``lp - lq`` with 0 where ``zero``: the masked entries (a ``-inf`` log-probability whose term is
    0) get no NaN (``-inf + inf``) in the forward pass and a zero gradient in the backward pass."""
    return xp.where(zero, xp.zeros_like(lp), lp - lq)


def _weighted_sum(weight_log: Array, values: Array, zero: Array, xp: Namespace) -> Array:
    r""":math:`\sum_c e^{w_c} v_c` over the class axis, with 0 where ``zero`` and :math:`+\infty` where
    :math:`v_c = +\infty` (a positive weight that underflows to 0 keeps its infinite term). The double
    ``where`` keeps autograd from meeting :math:`0 \cdot \infty`."""
    infinite = values == math.inf
    skip = zero | infinite
    safe_log = xp.where(skip, xp.zeros_like(weight_log), weight_log)
    safe_values = xp.where(skip, xp.zeros_like(values), values)
    terms = xp.exp(safe_log) * safe_values
    terms = xp.where(infinite & ~zero, xp.full_like(terms, math.inf), terms)
    return xp.sum(xp.where(zero, xp.zeros_like(terms), terms), axis=-1)


def _kl_rows(lp: Array, lq: Array, xp: Namespace) -> Array:
    r""":math:`\sum_c p_c (\log p_c - \log q_c)`: 0 where :math:`p_c = 0`, :math:`+\infty` where
    :math:`q_c = 0 < p_c`."""
    zero = lp == -math.inf
    return _weighted_sum(lp, _masked_difference(lp, lq, zero, xp), zero, xp)


def _jsd_rows(lp: Array, lq: Array, beta: float, xp: Namespace) -> Array:
    r""":math:`\beta\,\mathrm{KL}(p \| m) + (1-\beta)\,\mathrm{KL}(q \| m)`, :math:`m = \beta p + (1-\beta) q`.

    With :math:`d = \log p - \log q`, the log-ratios to the mixture are

    .. math::

        \log p - \log m = \begin{cases} -\log(1 + (1-\beta)\operatorname{expm1}(-d)) & d \ge 0 \\
                                          d - \log(1 + \beta \operatorname{expm1}(d)) & d < 0 \end{cases}
        \qquad \log q - \log m = \log p - \log m - d,

    each branch smooth, exact (no ``expm1`` of a positive number overflows, nothing cancels near
    :math:`p = q`, where both are 0) and finite where one of :math:`p, q` is 0 (:math:`-\log\beta`
    or :math:`-\log(1-\beta)`). Each branch is evaluated on its own side only (a double ``where``),
    so autograd differentiates the branch that is taken, also at :math:`d = 0`.
    """
    lp_zero, lq_zero = lp == -math.inf, lq == -math.inf
    ratio_p, ratio_q = jsd_log_ratios(lp, lq, beta, xp)
    return beta * _weighted_sum(lp, ratio_p, lp_zero, xp) + (1.0 - beta) * _weighted_sum(lq, ratio_q, lq_zero, xp)


def jsd_log_ratios(lp: Array, lq: Array, beta: float, xp: Namespace) -> tuple[Array, Array]:
    """``(log p - log m, log q - log m)`` of :func:`_jsd_rows`, 0 where ``p`` (``q``) is 0."""
    lp_zero, lq_zero = lp == -math.inf, lq == -math.inf
    d = _masked_difference(lp, lq, lp_zero & lq_zero, xp)
    positive = d >= 0
    zeros = xp.zeros_like(d)
    d_pos, d_neg = xp.where(positive, d, zeros), xp.where(positive, zeros, d)
    log_pos = xp.log1p((1.0 - beta) * xp.expm1(-d_pos))  # the d >= 0 side
    log_neg = xp.log1p(beta * xp.expm1(d_neg))  # the d < 0 side
    # log p - log m: -inf - ... where p = 0 (d = -inf), a term _weighted_sum drops; likewise for q.
    ratio_p = xp.where(positive, -log_pos, xp.where(lp_zero, zeros, d_neg) - log_neg)
    ratio_q = xp.where(positive, xp.where(lq_zero, zeros, -d_pos) - log_pos, -log_neg)
    return xp.where(lp_zero, zeros, ratio_p), xp.where(lq_zero, zeros, ratio_q)


def _tvd_rows(lp: Array, lq: Array, xp: Namespace) -> Array:
    r""":math:`\tfrac12 \sum_c |p_c - q_c|`, each term :math:`\max(p_c, q_c)\,(-\operatorname{expm1}(-|d_c|))`
    (no difference of two nearly equal probabilities)."""
    both = (lp == -math.inf) & (lq == -math.inf)
    d = _masked_difference(lp, lq, both, xp)
    larger = xp.where(d >= 0, lp, lq)
    return 0.5 * _weighted_sum(larger, -xp.expm1(-xp.abs(d)), both, xp)


def divergence_rows(
    student: Array, teacher: Array, xp: Namespace, *, divergence: Divergence, beta: float, temperature: float
) -> Array:
    """Per-position divergence of logits in their compute dtype, class axis last (options checked).

    Returns an array of the batch shape (the logits' shape without the last axis).
    """
    if temperature != 1.0:
        student, teacher = student / temperature, teacher / temperature
    lq, _ = stable_log_softmax(student, xp, axis=-1)
    lp, _ = stable_log_softmax(teacher, xp, axis=-1)
    return log_space_rows(lp, lq, xp, divergence=divergence, beta=beta)


def log_space_rows(lp: Array, lq: Array, xp: Namespace, *, divergence: Divergence, beta: float) -> Array:
    """Per-position divergence from the teacher's and the student's log-probabilities (class axis last)."""
    if divergence == "forward_kl":
        return _kl_rows(lp, lq, xp)
    if divergence == "reverse_kl":
        return _kl_rows(lq, lp, xp)
    if divergence == "jsd":
        return _jsd_rows(lp, lq, beta, xp)
    return _tvd_rows(lp, lq, xp)


def distillation_loss(
    student_logits: ArrayLike,
    teacher_logits: ArrayLike,
    /,
    *,
    axis: int = -1,
    divergence: Divergence = "forward_kl",
    beta: float = 0.5,
    temperature: float = 1.0,
    sample_weight: ArrayLike | None = None,
    reduction: Reduction = "mean",
) -> Array:
    r"""Distillation loss: a divergence between the teacher's and the student's softmax, on logits.

    With :math:`p_n = \operatorname{softmax}(t_n / T)` (teacher) and
    :math:`q_n = \operatorname{softmax}(s_n / T)` (student) at position :math:`n`:

    .. math::

        D_n = \begin{cases}
            \mathrm{KL}(p_n \| q_n) = \sum_c p_{n,c} \log \frac{p_{n,c}}{q_{n,c}}
                & \text{"forward_kl"} \\
            \mathrm{KL}(q_n \| p_n) & \text{"reverse_kl"} \\
            \beta\, \mathrm{KL}(p_n \| m_n) + (1-\beta)\, \mathrm{KL}(q_n \| m_n),\;
                m_n = \beta p_n + (1-\beta) q_n & \text{"jsd"} \\
            \tfrac12 \sum_c |p_{n,c} - q_{n,c}| & \text{"tvd"}
        \end{cases}

    and the loss is :math:`\sum_n s_n D_n / \sum_n s_n` for ``"mean"`` (:math:`\sum_n D_n / N`
    without ``sample_weight``; 0, with a zero gradient, when the weights sum to 0),
    :math:`\sum_n s_n D_n` for ``"sum"``, :math:`s_n D_n` for ``"none"``: the denominators of
    the library's losses with probability targets. The result is **not** multiplied by
    :math:`T^2` (Hinton et al.'s factor that keeps the gradients' scale across temperatures):
    multiply by ``temperature**2`` yourself if you want it.

    ``"jsd"`` with ``beta=0.5`` is the Jensen–Shannon divergence (at most :math:`\log 2`);
    ``"tvd"`` is the total variation distance (at most 1). The gradient with respect to the
    student's logits is :math:`(q - p) / T` for ``"forward_kl"``; the teacher's logits get their
    gradient too when they are differentiable (detach them for the usual distillation), as
    ``torch.nn.functional.kl_div`` gives its target one.

    Computed in log space from the two log-softmaxes, so logits of ±1e4 are exact and
    ``-inf`` logits (masked classes) are allowed: a class with :math:`p_c = 0` contributes 0 to
    :math:`\mathrm{KL}(p \| \cdot)`, and a class with :math:`q_c = 0 < p_c` makes
    :math:`\mathrm{KL}(p \| q) = +\infty`, as the definition says (likewise
    :math:`\mathrm{KL}(q \| p) = +\infty` where :math:`p_c = 0 < q_c`). An infinite divergence has
    no meaningful gradient (autograd returns numbers there, finite or NaN, not to be used).
    ``"jsd"`` and ``"tvd"`` stay finite, with finite gradients, for any such entries. A position
    whose logits are all ``-inf`` is no distribution and gives NaN.

    Parameters
    ----------
    student_logits, teacher_logits : arrays of shape (..., n_classes)
        The two models' logits, of one shape; classes along ``axis``.
    axis : int, default -1
        The class axis.
    divergence : {"forward_kl", "reverse_kl", "jsd", "tvd"}, default "forward_kl"
        Which divergence :math:`D_n`.
    beta : float in (0, 1), default 0.5
        The mixture weight of ``"jsd"`` (checked for every divergence).
    temperature : float > 0, default 1
        Both logits are divided by it before the softmax.
    sample_weight : array of the batch shape, optional
        Per-position weights :math:`s_n \ge 0`; they enter the mean's denominator.
    reduction : {"mean", "sum", "none"}, default "mean"

    Returns
    -------
    array
        0-d for ``"mean"``/``"sum"``, the batch shape for ``"none"``; the inputs' array type and
        common dtype (half precision is computed in float32).

    Raises
    ------
    TypeError
        If the logits are not floating-point arrays, or an option has the wrong type.
    ValueError
        If the shapes differ, the logits are empty, or ``axis``, ``divergence``, ``beta``,
        ``temperature``, ``sample_weight`` or ``reduction`` is invalid.

    Warns
    -----
    ProbabilitiesAsLogitsWarning
        When the first few rows of either logits are non-negative and sum to 1.

    Examples
    --------
    The 0.9/0.1 coin against 0.7/0.3, given as log-probabilities:

    >>> import numpy as np
    >>> teacher, student = np.log([0.9, 0.1]), np.log([0.7, 0.3])
    >>> round(float(distillation_loss(student, teacher)), 4)  # KL(p || q)
    0.1163
    >>> round(float(distillation_loss(student, teacher, divergence="reverse_kl")), 4)
    0.1537
    >>> round(float(distillation_loss(student, teacher, divergence="tvd")), 4)
    0.2
    >>> float(distillation_loss(teacher, teacher, divergence="jsd"))
    0.0
    """
    divergence, beta, temperature = check_distillation_options(divergence, beta, temperature)
    reduction = check_reduction(reduction)
    xp = get_namespace(student_logits, teacher_logits)
    student = as_namespace_array(student_logits, xp, name="student_logits")
    teacher = as_namespace_array(teacher_logits, xp, name="teacher_logits", like=student)
    check_floating("student_logits", student, xp)
    check_floating("teacher_logits", teacher, xp)
    check_ndim("student_logits", student, at_least=1)
    check_shape("teacher_logits", teacher, tuple(student.shape), rule=f"the shape of `{shown('student_logits')}`")
    check_not_empty("student_logits", student)
    axis = check_axis("axis", axis, student.ndim)
    if axis != student.ndim - 1:
        student, teacher = move_axes(student, axis, -1, xp), move_axes(teacher, axis, -1, xp)
    warn_if_probabilities(student, xp, name="student_logits")
    warn_if_probabilities(teacher, xp, name="teacher_logits")
    out_dtype = xp.result_type(student.dtype, teacher.dtype)
    work = compute_dtype(xp, out_dtype)
    student, teacher = xp.astype(student, work, copy=False), xp.astype(teacher, work, copy=False)
    batch_shape = tuple(student.shape[:-1])
    weights = prepare_sample_weight(sample_weight, xp, like=student, batch_shape=batch_shape, dtype=work)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # masked NaN/inf, replaced by where
        rows = divergence_rows(student, teacher, xp, divergence=divergence, beta=beta, temperature=temperature)
        denominator = math.prod(batch_shape) if weights is None else total(weights, xp)
        loss = reduce_loss(weighted_rows(rows, weights, xp), denominator, reduction, xp, out_dtype)
    return as_result_array(loss, xp)
