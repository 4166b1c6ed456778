r"""Distillation losses in PyTorch's layout: on logits, and fused with the two models' output projections.

:func:`distillation_loss` is :func:`crossentropy.distillation_loss` with classes on dimension 1
(K-dimensional inputs too), positions masked by a target equal to ``ignore_index``, and a
``normalizer`` for the mean. :func:`linear_distillation_loss` takes the student's hidden states
and output projection, and the teacher's logits or hidden states and projection, and never
forms the N×V logits of either model:

Fast path (plain tensors)
    An ``autograd.Function``. Its forward pass takes chunks of rows: the chunk's student (and
    teacher) logits are formed in a buffer of the accumulation dtype (float32; float64 for
    float64 input), turned into the chunk's divergences, and, when a gradient will be wanted
    and the reduction is ``"mean"`` or ``"sum"``, into their closed-form gradients with respect
    to the logits, from which the gradients of the hidden states, projections and biases are
    accumulated before the next chunk. The backward pass scales those by the incoming
    gradient. With ``reduction="none"`` (or a second backward through the same graph) the
    backward pass recomputes each chunk's logits instead, with the per-row incoming gradient.
    The chosen design does the four matrix products an unfused forward + backward does
    (student and teacher logits; the student's ``g @ W`` and ``gᵀ @ x``), not the six of a
    checkpointed chunk (which recomputes both logits in backward); peak memory is a few chunks
    of logits plus the gradients (the same size as the parameters).
Autograd path
    A backward that builds a graph (``create_graph=True``: double backward), and calls under
    ``torch.func`` transforms or forward-mode AD, run plain PyTorch chunks through
    :func:`crossentropy.distillation.divergence_rows`, which autograd differentiates (under a
    transform the chunks keep their logits).

Closed-form gradients of the divergence :math:`D` of one position with respect to the logits
(:math:`d = \log p - \log q`; :math:`r_p = \log p - \log m`, :math:`r_q = \log q - \log m`;
:math:`\sigma = \operatorname{sign}(d)`):

.. math::

    \begin{array}{lll}
    \text{forward_kl:} & \partial_s D = (q - p) / T, & \partial_t D = p\,(d - D) / T \\
    \text{reverse_kl:} & \partial_s D = q\,(-d - D) / T, & \partial_t D = (p - q) / T \\
    \text{jsd:} & \partial_s D = (1-\beta)\, q\,(r_q - K_q) / T, & \partial_t D = \beta\, p\,(r_p - K_p) / T \\
    \text{tvd:} & \partial_s D = q\,(\textstyle\sum_j q_j \sigma_j - \sigma) / 2T, &
                  \partial_t D = p\,(\sigma - \textstyle\sum_j p_j \sigma_j) / 2T
    \end{array}

with :math:`K_p = \mathrm{KL}(p \| m)` and :math:`K_q = \mathrm{KL}(q \| m)` (the subgradient
:math:`\sigma = 0` at :math:`p_c = q_c` for ``"tvd"``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import array_api_compat.torch as torch_namespace
import torch

from .._array import is_transformed_tensor, move_axes
from .._inputs import safe_divide, warn_if_probabilities
from .._typing import Divergence, Reduction
from .._validation import check_integer_option, check_reduction
from ..distillation import check_distillation_options, divergence_rows, jsd_log_ratios, log_space_rows
from ._ops import checked_normalizer

__all__ = ["distillation_loss", "linear_distillation_loss"]

# Elements of one chunk of logits when no chunk size is given: 2^23 float32 = 32 MiB (a few such
# tensors live at once: the two models' logits, their log-softmaxes, the gradient).
CHUNK_ELEMENTS = 2**23


@dataclass(frozen=True)
class _Options:
    divergence: Divergence
    beta: float
    temperature: float
    reduction: Reduction
    chunk_size: int
    dtype: torch.dtype  # the accumulation dtype


def _check_tensor(name: str, tensor: Any, *, optional: bool = False) -> None:
    if tensor is None and optional:
        return
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor; got {type(tensor).__name__}")
    if not tensor.dtype.is_floating_point:
        raise TypeError(f"`{name}` must be a real floating-point tensor; got dtype {tensor.dtype}")


def _mask(target: Any, batch_shape: tuple[int, ...], ignore_index: int) -> torch.Tensor | None:
    """``target != ignore_index`` (positions that count), or None without a target."""
    if target is None:
        return None
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"`target` must be a torch.Tensor or None; got {type(target).__name__}")
    if target.dtype.is_floating_point or target.dtype.is_complex or target.dtype == torch.bool:
        raise TypeError(
            f"`target` must be integer class indices (only its ignore_index entries matter); got dtype {target.dtype}"
        )
    if tuple(target.shape) != tuple(batch_shape):
        raise ValueError(
            f"`target` must have shape {tuple(batch_shape)} (the input's without the class dimension); got shape "
            f"{tuple(target.shape)}"
        )
    return target != ignore_index


def _work_dtype(*tensors: torch.Tensor) -> torch.dtype:
    return torch.float64 if any(t is not None and t.dtype == torch.float64 for t in tensors) else torch.float32


def _row_factor(mask: torch.Tensor | None, n_rows: int, reduction: str, normalizer: Any, dtype, device) -> torch.Tensor:
    """Per-row factor :math:`f_n` of the reduced loss :math:`\\sum_n f_n D_n`: the mask over the mean's
    denominator (the normalizer, or the count of unmasked rows; 0 when none is), or the mask."""
    factor = torch.ones(n_rows, dtype=dtype, device=device) if mask is None else mask.to(dtype)
    if reduction != "mean":
        return factor
    denominator = normalizer if normalizer is not None else factor.sum()
    return factor * safe_divide(torch.ones((), dtype=dtype, device=device), denominator, torch_namespace)


def _reduce(rows: torch.Tensor, factor: torch.Tensor, reduction: str, out_dtype: torch.dtype) -> torch.Tensor:
    """``rows`` (work dtype) weighted by ``factor`` (0 drops a row, even an infinite or NaN one), reduced."""
    weighted = torch.where(factor == 0, torch.zeros_like(rows), rows * factor)
    return (weighted if reduction == "none" else weighted.sum()).to(out_dtype)


def distillation_loss(
    input: torch.Tensor,
    teacher: torch.Tensor,
    target: torch.Tensor | None = None,
    *,
    divergence: Divergence = "forward_kl",
    beta: float = 0.5,
    temperature: float = 1.0,
    ignore_index: int = -100,
    reduction: Reduction = "mean",
    normalizer: float | torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Distillation loss between a student's logits ``input`` and a teacher's logits, classes on dimension 1.

    With :math:`p_n = \operatorname{softmax}(t_n / T)` and :math:`q_n = \operatorname{softmax}(s_n / T)`
    at position :math:`n`, :math:`D_n` is :math:`\mathrm{KL}(p_n \| q_n)` (``"forward_kl"``),
    :math:`\mathrm{KL}(q_n \| p_n)` (``"reverse_kl"``), :math:`\beta\,\mathrm{KL}(p_n \| m_n) +
    (1-\beta)\,\mathrm{KL}(q_n \| m_n)` with :math:`m_n = \beta p_n + (1-\beta) q_n` (``"jsd"``) or
    :math:`\tfrac12 \sum_c |p_{n,c} - q_{n,c}|` (``"tvd"``), and

    .. math::

        \text{loss} = \frac{1}{Z} \sum_{n:\, y_n \ne \text{ignore_index}} D_n, \qquad
        Z = \text{normalizer, or } |\{n : y_n \ne \text{ignore_index}\}|

    for ``"mean"`` (0, with a zero gradient, when no position counts), the sum for ``"sum"``, and
    :math:`D_n` (0 at masked positions) for ``"none"``. Not multiplied by :math:`T^2`. See
    :func:`crossentropy.distillation_loss` for the numerics (log space, ±1e4 and ``-inf`` logits,
    infinite KL where the support of one distribution leaves the other's). The teacher gets a
    gradient when it requires one (as with ``F.kl_div``); detach it for the usual distillation.
    Half precision is computed in float32 and the result returned in the inputs' dtype.

    Parameters
    ----------
    input : Tensor of shape (C,), (N, C) or (N, C, d1, ..., dK)
        The student's logits, classes on dimension 1.
    teacher : Tensor of the input's shape
        The teacher's logits.
    target : int Tensor of shape (), (N,) or (N, d1, ..., dK), optional
        Only used to mask: positions whose target equals ``ignore_index`` do not count.
    divergence : {"forward_kl", "reverse_kl", "jsd", "tvd"}, default "forward_kl"
        :math:`D`: KL(P‖Q), KL(Q‖P), the Jensen-Shannon divergence of weight ``beta``, or the
        total variation distance, P the teacher's distribution and Q the student's.
    beta : float in (0, 1), default 0.5
        The mixture weight of ``"jsd"``.
    temperature : float > 0, default 1
        :math:`T`: both models' logits are divided by it before their softmax.
    ignore_index : int, default -100
        The ``target`` value that masks a position.
    reduction : {"mean", "sum", "none"}, default "mean"
    normalizer : float or 0-d Tensor, optional
        With ``reduction="mean"``, the denominator instead of this call's count of unmasked
        positions (e.g. the count of the whole optimizer step across micro-batches and ranks);
        not differentiated; 0 gives 0. Any other reduction with a normalizer is a ``ValueError``.

    Returns
    -------
    Tensor
        0-d for ``"mean"``/``"sum"``, the batch shape for ``"none"``.

    Examples
    --------
    >>> import torch
    >>> teacher = torch.log(torch.tensor([[0.9, 0.1], [0.5, 0.5]]))
    >>> student = torch.log(torch.tensor([[0.7, 0.3], [0.5, 0.5]]))
    >>> [round(v, 4) for v in distillation_loss(student, teacher, reduction="none").tolist()]
    [0.1163, 0.0]
    >>> round(float(distillation_loss(student, teacher, torch.tensor([0, -100]))), 4)  # second masked
    0.1163
    """
    divergence, beta, temperature = check_distillation_options(divergence, beta, temperature)
    reduction = check_reduction(reduction)
    ignore_index = check_integer_option("ignore_index", ignore_index)
    _check_tensor("input", input)
    _check_tensor("teacher", teacher)
    if teacher.shape != input.shape:
        raise ValueError(f"`teacher` must have shape {tuple(input.shape)} (the input's); got {tuple(teacher.shape)}")
    if input.ndim == 0 or input.numel() == 0:
        raise ValueError(f"`input` must have at least one class and position; got shape {tuple(input.shape)}")
    dim = 1 if input.ndim >= 2 else 0
    out_dtype = torch.promote_types(input.dtype, teacher.dtype)
    work = _work_dtype(input, teacher)
    xp = torch_namespace  # not array_namespace(), whose cache wrapper TorchDynamo warns about
    student_rows = move_axes(input, dim, -1, xp) if dim != input.ndim - 1 else input
    teacher_rows = move_axes(teacher, dim, -1, xp) if dim != input.ndim - 1 else teacher
    batch_shape = tuple(student_rows.shape[:-1])
    mask = _mask(target, batch_shape, ignore_index)
    normalizer = checked_normalizer(normalizer, reduction, input, work)
    if not torch.compiler.is_compiling():
        warn_if_probabilities(student_rows, xp, name="input")
        warn_if_probabilities(teacher_rows, xp, name="teacher")
    rows = divergence_rows(
        student_rows.to(work), teacher_rows.to(work), xp, divergence=divergence, beta=beta, temperature=temperature
    )
    flat_mask = None if mask is None else mask.reshape(-1)
    factor = _row_factor(flat_mask, rows.numel(), reduction, normalizer, work, input.device)
    loss = _reduce(rows.reshape(-1), factor, reduction, out_dtype)
    return loss.reshape(batch_shape) if reduction == "none" else loss


# --------------------------------------------------------------------------------------------
# The linear distillation loss
# --------------------------------------------------------------------------------------------


def _logits(rows: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
    return torch.nn.functional.linear(rows.to(dtype), weight.to(dtype), None if bias is None else bias.to(dtype))


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    r"""Row-wise :math:`\sum_c a_{n,c} b_{n,c}` of two (c, V) tensors, shape (c, 1), without a (c, V) temporary."""
    return torch.bmm(a.unsqueeze(1), b.unsqueeze(2)).squeeze(2)


def _chunk_gradients(s: torch.Tensor, t: torch.Tensor, options: _Options, need_s: bool, need_t: bool):
    """``(D, dD/ds, dD/dt)`` of one chunk of logits (closed forms of the module's docstring; None where not
    needed). ``s`` and ``t`` are the raw logits (before the temperature), in the accumulation dtype; both
    may be overwritten.

    Where every log-probability is finite (the rule for logits of a linear layer) the divergences and
    gradients are formed in a few in-place passes over the chunk; a chunk with ``-inf`` log-probabilities
    takes the masked forms of :mod:`crossentropy.distillation` for its values and gradients.
    """
    inverse, beta = 1.0 / options.temperature, options.beta
    if inverse != 1.0:
        s, t = s.mul_(inverse), t.mul_(inverse)
    lq = torch.log_softmax(s, dim=-1)
    lp = torch.log_softmax(t, dim=-1)
    del s, t
    d = lp - lq
    if not bool(torch.isfinite(d.sum())):  # one reduction, no temporary; conservative (a sum that overflows)
        return _masked_chunk_gradients(lp, lq, options, need_s, need_t)
    divergence = options.divergence
    ds = dt = None
    if divergence == "forward_kl":
        p = lp.exp_()
        rows = _dot(p, d)
        if need_s:
            ds = lq.exp_().sub_(p).mul_(inverse)
        if need_t:
            dt = d.sub_(rows).mul_(p).mul_(inverse)
    elif divergence == "reverse_kl":
        q = lq.exp_()
        rows = -_dot(q, d)
        if need_t:
            dt = lp.exp_().sub_(q).mul_(inverse)
        if need_s:
            ds = d.neg_().sub_(rows).mul_(q).mul_(inverse)
    elif divergence == "jsd":
        # L = log1p(c e), e = expm1(-|d|), c = 1 - beta where d >= 0, else beta; r_p = min(d, 0) - L; r_q = r_p - d.
        coefficient = (d >= 0).to(d.dtype).mul_(1.0 - 2.0 * beta).add_(beta)
        log_one_plus = d.abs().neg_().expm1_().mul_(coefficient).log1p_()
        del coefficient
        ratio_p = d.clamp(max=0.0).sub_(log_one_plus)
        del log_one_plus
        ratio_q = d.neg_().add_(ratio_p)
        p, q = lp.exp_(), lq.exp_()
        k_p, k_q = _dot(p, ratio_p), _dot(q, ratio_q)
        rows = beta * k_p + (1.0 - beta) * k_q
        if need_s:
            ds = ratio_q.sub_(k_q).mul_(q).mul_((1.0 - beta) * inverse)
        if need_t:
            dt = ratio_p.sub_(k_p).mul_(p).mul_(beta * inverse)
    else:  # tvd
        p, q = lp.exp_(), lq.exp_()
        rows = 0.5 * (p - q).abs_().sum(-1, keepdim=True)
        sigma = d.sign_()
        k_q, k_p = _dot(q, sigma), _dot(p, sigma)
        if need_s:
            ds = (k_q - sigma).mul_(q).mul_(0.5 * inverse)
        if need_t:
            dt = sigma.sub_(k_p).mul_(p).mul_(0.5 * inverse)
    return rows.squeeze(-1), ds, dt


def _masked_chunk_gradients(lp: torch.Tensor, lq: torch.Tensor, options: _Options, need_s: bool, need_t: bool):
    """:func:`_chunk_gradients` for log-probabilities with ``-inf`` entries: masked forms, 0 for absent classes."""
    inverse = 1.0 / options.temperature
    xp = torch_namespace
    rows = log_space_rows(lp, lq, xp, divergence=options.divergence, beta=options.beta)
    if not (need_s or need_t):
        return rows, None, None
    p, q = lp.exp(), lq.exp()
    D = rows.unsqueeze(-1)
    ds = dt = None
    if options.divergence == "forward_kl":
        if need_s:
            ds = (q - p).mul_(inverse)
        if need_t:
            d = torch.where(lp == -math.inf, torch.zeros_like(lp), lp - lq)
            dt = p.mul(d.sub_(D)).mul_(inverse)
    elif options.divergence == "reverse_kl":
        if need_s:
            d = torch.where(lq == -math.inf, torch.zeros_like(lq), lq - lp)
            ds = q.mul(d.sub_(D)).mul_(inverse)
        if need_t:
            dt = (p - q).mul_(inverse)
    elif options.divergence == "jsd":
        ratio_p, ratio_q = jsd_log_ratios(lp, lq, options.beta, xp)
        if need_s:
            k_q = (q * ratio_q).sum(-1, keepdim=True)
            ds = q.mul(ratio_q.sub_(k_q)).mul_((1.0 - options.beta) * inverse)
        if need_t:
            k_p = (p * ratio_p).sum(-1, keepdim=True)
            dt = p.mul(ratio_p.sub_(k_p)).mul_(options.beta * inverse)
    else:  # tvd
        both = (lp == -math.inf) & (lq == -math.inf)
        sigma = torch.where(both, torch.zeros_like(lp), lp - lq).sign_()
        if need_s:
            ds = q.mul((q * sigma).sum(-1, keepdim=True) - sigma).mul_(0.5 * inverse)
        if need_t:
            dt = p.mul(sigma - (p * sigma).sum(-1, keepdim=True)).mul_(0.5 * inverse)
    return rows, ds, dt


def _row_scaled(gradient: torch.Tensor | None, factor: torch.Tensor) -> torch.Tensor | None:
    """``factor[:, None] * gradient``, exactly 0 on the rows whose factor is 0 (masked, even if not finite)."""
    if gradient is None:
        return None
    gradient.mul_(factor.unsqueeze(-1))
    dropped = (factor == 0).nonzero().squeeze(-1)
    if dropped.numel():  # only those rows are touched
        gradient[dropped] = 0.0
    return gradient


def _chunks(tensors, factor: torch.Tensor, options: _Options, needs, *, gradients: bool):
    """``(Σ_n f_n D_n, rows D_n with masked rows 0, gradients)`` over chunks of rows.

    ``tensors``: ``(input, weight, bias, teacher, teacher_weight, teacher_bias)`` (rows flattened; the
    teacher's logits when ``teacher_weight`` is None). With ``gradients``, the gradients of
    :math:`\\sum_n f_n D_n` with respect to the tensors ``needs`` asks for (else None), in the
    accumulation dtype.
    """
    x, w, b, teacher, wt, bt = tensors
    dtype, n_rows = options.dtype, x.shape[0]
    hidden_teacher = wt is not None
    need_s = gradients and any(needs[:3])
    need_t = gradients and any(needs[3:])
    # The projections in the accumulation dtype once (no copy when they are in it already).
    w, b = w.to(dtype), None if b is None else b.to(dtype)
    if hidden_teacher:
        wt, bt = wt.to(dtype), None if bt is None else bt.to(dtype)
    grads: list[torch.Tensor | None] = [None] * 6
    if gradients:
        for i, tensor in enumerate(tensors):
            if needs[i]:
                grads[i] = torch.zeros(tensor.shape, dtype=dtype, device=tensor.device)
    rows = torch.empty(n_rows, dtype=dtype, device=x.device)
    for start in range(0, n_rows, options.chunk_size):
        piece = slice(start, min(start + options.chunk_size, n_rows))
        s = _logits(x[piece], w, b, dtype)
        t = _logits(teacher[piece], wt, bt, dtype) if hidden_teacher else teacher[piece].to(dtype, copy=True)
        chunk_rows, ds, dt = _chunk_gradients(s, t, options, need_s, need_t)
        del s, t
        f = factor[piece]
        rows[piece] = torch.where(f == 0, torch.zeros_like(chunk_rows), chunk_rows)
        ds, dt = _row_scaled(ds, f), _row_scaled(dt, f)
        if ds is not None:
            if needs[0]:
                grads[0][piece] = ds @ w
            if needs[1]:
                grads[1].addmm_(ds.T, x[piece].to(dtype))
            if needs[2]:
                grads[2].add_(ds.sum(0))
        if dt is not None:
            if not hidden_teacher:
                grads[3][piece] = dt
            else:
                if needs[3]:
                    grads[3][piece] = dt @ wt
                if needs[4]:
                    grads[4].addmm_(dt.T, teacher[piece].to(dtype))
                if needs[5]:
                    grads[5].add_(dt.sum(0))
    total = torch.where(factor == 0, torch.zeros_like(rows), rows * factor).sum()
    return total, rows, grads


def _plain_rows(tensors, options: _Options) -> torch.Tensor:
    """Per-row divergences in plain PyTorch chunks that keep their logits, differentiable by autograd
    (double backward, ``torch.func``, forward-mode AD)."""
    x, w, b, teacher, wt, bt = tensors
    w, b = w.to(options.dtype), None if b is None else b.to(options.dtype)
    if wt is not None:
        wt, bt = wt.to(options.dtype), None if bt is None else bt.to(options.dtype)
    pieces = []
    for start in range(0, x.shape[0], options.chunk_size):
        piece = slice(start, start + options.chunk_size)
        s = _logits(x[piece], w, b, options.dtype)
        t = _logits(teacher[piece], wt, bt, options.dtype) if wt is not None else teacher[piece].to(options.dtype)
        pieces.append(
            divergence_rows(
                s,
                t,
                torch_namespace,
                divergence=options.divergence,
                beta=options.beta,
                temperature=options.temperature,
            )
        )
    return torch.cat(pieces)


class _LinearDistillation(torch.autograd.Function):
    """``apply(input, weight, bias, teacher, teacher_weight, teacher_bias, factor, options)``: the reduced
    loss :math:`\\sum_n f_n D_n` (``"mean"``/``"sum"``) or the rows :math:`f_n`-masked (``"none"``)."""

    @staticmethod
    def forward(ctx, x, w, b, teacher, wt, bt, factor, options: _Options):
        tensors = (x, w, b, teacher, wt, bt)
        needs = tuple(ctx.needs_input_grad[:6])
        early = any(needs) and options.reduction != "none"
        total, rows, grads = _chunks(tensors, factor, options, needs, gradients=early)
        ctx.save_for_backward(*tensors, factor)
        ctx.options, ctx.needs = options, needs
        ctx.grads = grads if early else None
        ctx.dtypes = tuple(None if t is None else t.dtype for t in tensors)
        ctx.set_materialize_grads(False)
        if options.reduction == "none":
            return torch.where(factor == 0, torch.zeros_like(rows), rows)
        return total

    @staticmethod
    def backward(ctx, grad_output):
        grads, ctx.grads = ctx.grads, None  # the first backward hands the kept gradients over
        nothing = (None, None)
        if grad_output is None or not any(ctx.needs):
            return (None,) * 6 + nothing
        *tensors, factor = ctx.saved_tensors
        if torch.is_grad_enabled() or is_transformed_tensor(grad_output):  # a graph to build: autograd
            wanted = [t for t, need in zip(tensors, ctx.needs, strict=True) if need]
            with torch.enable_grad():
                rows = _plain_rows(tensors, ctx.options)
                weighted = torch.where(factor == 0, torch.zeros_like(rows), rows * factor)
                if ctx.options.reduction != "none":
                    weighted = weighted.sum()
                found = iter(torch.autograd.grad(weighted, wanted, grad_output, create_graph=torch.is_grad_enabled()))
            return (*(next(found) if need else None for need in ctx.needs), *nothing)
        if grads is not None:
            grads = [None if g is None else g.mul_(grad_output.to(g.dtype)) for g in grads]
        else:  # reduction="none", or a second backward: recompute the chunks with the incoming factor
            incoming = grad_output.to(factor.dtype)
            scaled = torch.where(factor == 0, torch.zeros_like(factor), factor * incoming)
            _, _, grads = _chunks(tuple(tensors), scaled, ctx.options, ctx.needs, gradients=True)
        cast = (None if g is None else g.to(dtype) for g, dtype in zip(grads, ctx.dtypes, strict=True))
        return (*cast, *nothing)


def _check_linear_shapes(input, linear_weight, teacher, linear_bias, teacher_linear_weight, teacher_linear_bias):
    """The shape rules of :func:`linear_distillation_loss`; returns ``(batch_shape, V)``."""
    _check_tensor("input", input)
    _check_tensor("linear_weight", linear_weight)
    _check_tensor("teacher", teacher)
    _check_tensor("linear_bias", linear_bias, optional=True)
    _check_tensor("teacher_linear_weight", teacher_linear_weight, optional=True)
    _check_tensor("teacher_linear_bias", teacher_linear_bias, optional=True)
    if input.ndim < 1 or input.numel() == 0:
        raise ValueError(f"`input` must have shape (..., H) with at least one row; got {tuple(input.shape)}")
    if linear_weight.ndim != 2 or linear_weight.shape[1] != input.shape[-1]:
        raise ValueError(
            f"`linear_weight` must have shape (V, {input.shape[-1]}) (input's last dimension is H); got "
            f"{tuple(linear_weight.shape)}"
        )
    n_classes, batch = linear_weight.shape[0], tuple(input.shape[:-1])
    if linear_bias is not None and tuple(linear_bias.shape) != (n_classes,):
        raise ValueError(f"`linear_bias` must have shape {(n_classes,)}; got {tuple(linear_bias.shape)}")
    if teacher_linear_weight is None:
        if teacher_linear_bias is not None:
            raise ValueError("`teacher_linear_bias` needs `teacher_linear_weight` (teacher's hidden states)")
        if tuple(teacher.shape) != (*batch, n_classes):
            raise ValueError(
                f"`teacher` must be the teacher's logits of shape {(*batch, n_classes)} (or its hidden states, with "
                f"`teacher_linear_weight`); got {tuple(teacher.shape)}"
            )
    else:
        if teacher.ndim < 1 or tuple(teacher.shape[:-1]) != batch:
            raise ValueError(
                f"`teacher` must be the teacher's hidden states of shape {(*batch, 'H_t')} with "
                f"`teacher_linear_weight`; got {tuple(teacher.shape)}"
            )
        expected = (n_classes, teacher.shape[-1])
        if tuple(teacher_linear_weight.shape) != expected:
            raise ValueError(
                f"`teacher_linear_weight` must have shape {expected} (V of `linear_weight`, the teacher's hidden "
                f"size); got {tuple(teacher_linear_weight.shape)}"
            )
        if teacher_linear_bias is not None and tuple(teacher_linear_bias.shape) != (n_classes,):
            raise ValueError(
                f"`teacher_linear_bias` must have shape {(n_classes,)}; got {tuple(teacher_linear_bias.shape)}"
            )
    return batch, n_classes


def linear_distillation_loss(
    input: torch.Tensor,
    linear_weight: torch.Tensor,
    teacher: torch.Tensor,
    target: torch.Tensor | None = None,
    *,
    linear_bias: torch.Tensor | None = None,
    teacher_linear_weight: torch.Tensor | None = None,
    teacher_linear_bias: torch.Tensor | None = None,
    divergence: Divergence = "forward_kl",
    beta: float = 0.5,
    temperature: float = 1.0,
    ignore_index: int = -100,
    reduction: Reduction = "mean",
    normalizer: float | torch.Tensor | None = None,
    chunk_size: int | None = None,
) -> torch.Tensor:
    r"""Distillation loss of a student's output projection, without materializing the N×V logits.

    The same loss as :func:`distillation_loss` (class dimension last here) of the student's logits
    :math:`s = x W^\top + b` and the teacher's logits :math:`t` (given, or
    :math:`t = x_t W_t^\top + b_t` from the teacher's hidden states):

    .. math::

        \text{loss} = \frac{1}{Z} \sum_{n:\, y_n \ne \text{ignore_index}}
            D\big(\operatorname{softmax}(t_n / T),\ \operatorname{softmax}(s_n / T)\big)

    (``"mean"``; :math:`Z` the normalizer or the count of unmasked rows), not multiplied by
    :math:`T^2`. Computed in chunks of rows (see :mod:`crossentropy.torch.distillation`): at no
    time does an N×V tensor of either model exist, and peak memory beyond the inputs is a few
    chunks of logits plus the gradients of the parameters. Gradients for ``input``,
    ``linear_weight``, ``linear_bias`` and, when they require grad, the teacher's tensors; they
    accumulate in float32 (float64 for float64 input) and come back in each tensor's dtype.
    Double backward, ``torch.func`` transforms and forward-mode AD work (through plain chunks).
    Under ``torch.compile`` the chunk loop runs eagerly behind a graph break (it branches on the
    data: a non-finite log-ratio takes the masked path), so ``fullgraph=True`` is refused;
    :func:`distillation_loss` compiles to one graph.

    Parameters
    ----------
    input : Tensor of shape (..., H)
        The student's hidden states.
    linear_weight : Tensor of shape (V, H)
        The student's output projection.
    teacher : Tensor of shape (..., V), or (..., H_t) with ``teacher_linear_weight``
        The teacher's logits, or its hidden states.
    target : int Tensor of shape (...), optional
        Rows whose target equals ``ignore_index`` do not count.
    linear_bias : Tensor of shape (V,), optional
        The student's output bias.
    teacher_linear_weight : Tensor of shape (V, H_t), optional
        The teacher's output projection: ``teacher`` then holds hidden states.
    teacher_linear_bias : Tensor of shape (V,), optional
        The teacher's output bias.
    divergence : {"forward_kl", "reverse_kl", "jsd", "tvd"}, default "forward_kl"
        As :func:`distillation_loss`.
    beta : float in (0, 1), default 0.5
        The mixture weight of ``"jsd"``.
    temperature : float > 0, default 1
        Both models' logits are divided by it before their softmax.
    ignore_index : int, default -100
        The ``target`` value that masks a row.
    reduction : {"mean", "sum", "none"}, default "mean"
        As :func:`distillation_loss`.
    normalizer : float or 0-d Tensor, optional
        With ``reduction="mean"``, the denominator instead of this call's count of unmasked rows,
        as :func:`distillation_loss`'s.
    chunk_size : int, optional
        Rows per chunk; by default as many as make 2^23 logits (32 MiB of float32) per model.

    Returns
    -------
    Tensor
        0-d for ``"mean"``/``"sum"``, the batch shape ``input.shape[:-1]`` for ``"none"``; the
        input's dtype.

    Examples
    --------
    >>> import torch
    >>> hidden, head = torch.randn(6, 16), torch.nn.Linear(16, 50)
    >>> teacher_logits = torch.randn(6, 50)
    >>> loss = linear_distillation_loss(hidden, head.weight, teacher_logits, linear_bias=head.bias, chunk_size=4)
    >>> bool(torch.isclose(loss, distillation_loss(head(hidden), teacher_logits), atol=1e-6))
    True
    """
    divergence, beta, temperature = check_distillation_options(divergence, beta, temperature)
    reduction = check_reduction(reduction)
    ignore_index = check_integer_option("ignore_index", ignore_index)
    batch, n_classes = _check_linear_shapes(
        input, linear_weight, teacher, linear_bias, teacher_linear_weight, teacher_linear_bias
    )
    if chunk_size is None:
        chunk_size = max(1, CHUNK_ELEMENTS // n_classes)
    chunk_size = check_integer_option("chunk_size", chunk_size, low=1)
    tensors = (input, linear_weight, linear_bias, teacher, teacher_linear_weight, teacher_linear_bias)
    dtype = _work_dtype(*tensors)
    options = _Options(divergence, beta, temperature, reduction, chunk_size, dtype)
    mask = _mask(target, batch, ignore_index)
    normalizer = checked_normalizer(normalizer, reduction, input, dtype)
    n_rows = math.prod(batch)
    factor = _row_factor(None if mask is None else mask.reshape(-1), n_rows, reduction, normalizer, dtype, input.device)
    flat = (
        input.reshape(n_rows, input.shape[-1]),
        linear_weight,
        linear_bias,
        teacher.reshape(n_rows, teacher.shape[-1]),
        teacher_linear_weight,
        teacher_linear_bias,
    )
    if any(t is not None and is_transformed_tensor(t) for t in (*flat, factor)):
        loss = _reduce(_plain_rows(flat, options), factor, reduction, input.dtype)  # torch.func, forward AD
    else:
        loss = _LinearDistillation.apply(*flat, factor, options).to(input.dtype)
    return loss.reshape(batch) if reduction == "none" else loss
