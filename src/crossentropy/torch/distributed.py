r"""Cross-entropy of logits sharded by vocabulary across ``torch.distributed`` ranks (tensor parallelism).

Two functions: :func:`vocab_parallel_cross_entropy` takes each rank's slice of the logits;
:func:`vocab_parallel_linear_cross_entropy` takes the hidden states and each rank's slice of the
output projection, and never forms the logits at once (its own docstring has the details).

For the first, each rank of ``group`` holds the logits of a contiguous slice of the vocabulary,
``[vocab_start, vocab_start + V_local)``, for the same tokens and targets. With target weights
:math:`a_{n,c}` (label smoothing, class weights), the loss needs per token, from the whole
vocabulary, the log-sum-exp :math:`L_n`, :math:`\sum_c a_{n,c} u_{n,c}` (the target's logit
and the smoothing term) and, with class weights, :math:`\omega_n = w_{y_n}` and
:math:`\sum_c w_c`. Each rank forms them over its classes; they travel in two all-reduces of
O(N) numbers (a maximum, then one sum of the stacked rest), never the N×V logits
(:func:`_combine`, shared by both functions). The backward pass of the logits needs no
communication: each rank's slice of the gradient,

.. math::

    \frac{\partial \ell_n}{\partial x_{n,c}} = f_n \big(\kappa_n\, p_{n,c} - a_{n,c}\big)
        \Big(1 - \tanh^2 \frac{x_{n,c}}{c}\Big),
    \qquad p_{n,c} = e^{u_{n,c} - L_n}, \quad \kappa_n = \sum_c a_{n,c} + 2 z\, \omega_n L_n,

(the last factor under a soft-cap :math:`c`) depends only on its own logits and the per-token
numbers kept from the forward pass (:func:`_logit_gradient`). Results equal
:func:`crossentropy.torch.cross_entropy` on the gathered logits.

**Statistics** (``return_stats=True``, :func:`_combine` too): the global log-sum-exp is the loss's;
the entropy and the first arg-max travel in the same two all-reduces. With the ranks' local
log-sum-exps :math:`\ell_r`, local entropies :math:`H_r` and :math:`M = \max_r \ell_r`,

.. math::

    S_n = \sum_r e^{\ell_r - M}, \qquad
    T_n = \sum_r e^{\ell_r - M} (\ell_r - M - H_r) = \sum_c e^{u_{n,c} - M} (u_{n,c} - M), \qquad
    H_n = \log S_n - T_n / S_n,

(every term of :math:`T_n` is :math:`\le 0`: no cancellation), :math:`T_n` one more number per row
in the stacked sum. The arg-max: each rank's largest logit :math:`m_r` joins the maximum's
all-reduce, and then each rank adds to the stacked sum :math:`[r \text{ holds the target as its first
maximum and } m_r = m] - [m_r = m \text{ at a class before the target}]`, whose total is 1
exactly when the target is the first global maximum (ties go to the lowest class, as
``torch.argmax``). The statistics' gradient, :math:`p_{n,c} (\lambda_n - \eta_n (\log p_{n,c} +
H_n))` for incoming gradients :math:`\lambda, \eta` of ``lse`` and ``entropy``, needs no
communication either (:func:`_stats_logit_term`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Literal, overload

import torch
import torch.distributed as dist

from .._array import get_namespace
from .._typing import Reduction
from .._validation import (
    check_class_indices,
    check_integer_option,
    check_nonnegative,
    check_not_empty,
    check_number,
    check_reduction,
    check_shape,
    checks_values,
)
from ..losses import LossStats
from ._ops import checked_normalizer
from .linear import CHUNK_ELEMENTS, fused_linear_backend, sequence_rows

__all__ = ["vocab_parallel_cross_entropy", "vocab_parallel_linear_cross_entropy"]


@dataclass(frozen=True)
class _Options:
    vocab_start: int
    group: Any
    ignore_index: int
    label_smoothing: float
    z_loss: float
    softcap: float | None
    temperature: float
    reduction: Reduction


class VocabParallelCrossEntropy(torch.autograd.Function):
    """``apply(local_logits (R, V_local), target (R,), class_weight, sample_weight, normalizer, options, vocab,
    stats)``: per-row losses times their factor (``s_n / D`` for ``"mean"``, ``s_n`` otherwise), in the
    accumulation dtype; the caller sums them for ``"mean"`` and ``"sum"``. ``vocab``: the global vocabulary size,
    a 0-d tensor in the accumulation dtype. With ``stats``, ``(losses, lse, entropy, hits)``: the per-row
    statistics too (0 / False at rows that do not count), ``lse`` and ``entropy`` differentiable."""

    @staticmethod
    def forward(ctx, local_logits, target, class_weight, sample_weight, normalizer, options: _Options, vocab, stats):
        dtype = _accumulation(local_logits.dtype)
        class_acc = None if class_weight is None else class_weight.to(dtype)
        u, _ = _capped(local_logits.to(dtype), options)
        shard = _ShardRows.of(target, class_acc, options, u.shape[1], dtype)
        local_dot = _local_target_dot(u, shard, class_acc, options.label_smoothing, vocab)
        local_lse = torch.logsumexp(u, dim=1)
        local = _local_stats(u, local_lse, options.vocab_start) if stats else None
        rows = _combine(local_lse, local_dot, shard, class_acc, sample_weight, normalizer, options, vocab, local)
        ctx.options = options
        saved = (rows.lse, rows.kappa, rows.omega, rows.scale, vocab, rows.entropy, rows.live)
        ctx.save_for_backward(local_logits, target, class_weight, *saved)
        if not stats:
            return rows.losses
        ctx.set_materialize_grads(False)
        ctx.mark_non_differentiable(rows.hits)
        return rows.losses, *rows.statistics()

    @staticmethod
    def backward(ctx, grad_losses, grad_lse=None, grad_entropy=None, _grad_hits=None):
        _refuse_second_derivative("vocab_parallel_cross_entropy", "cross_entropy on gathered logits")
        local_logits, target, class_weight, lse, kappa, omega, scale, vocab, entropy, live = ctx.saved_tensors
        options, dtype = ctx.options, lse.dtype
        class_acc = None if class_weight is None else class_weight.to(dtype)
        u, squashed = _capped(local_logits.to(dtype), options)
        grad = None
        if grad_losses is not None:
            shard = _ShardRows.of(target, class_acc, options, u.shape[1], dtype)
            factor = grad_losses.to(dtype) * scale / options.temperature  # the chain rule's 1/T
            grad = _logit_gradient(u, squashed, lse, kappa, omega, factor, shard, class_acc, options, vocab)
        if grad_lse is not None or grad_entropy is not None:
            lam, eta = _stats_cotangents(live, grad_lse, grad_entropy, dtype)
            term = _stats_logit_term(u, squashed, lse, entropy, lam, eta, options.temperature)
            grad = term if grad is None else grad.add_(term)
        if grad is None:
            grad = torch.zeros_like(u)
        return grad.to(local_logits.dtype), *(None,) * 7


def _refuse_second_derivative(function: str, alternative: str) -> None:
    """Raise in a backward that builds a graph (``create_graph=True``): the gradient depends on the
    all-reduced log-sum-exp, which the backward pass does not differentiate across ranks."""
    if torch.is_grad_enabled():
        raise RuntimeError(
            f"{function} cannot be differentiated twice (create_graph=True): its gradient depends on the "
            "log-sum-exp of the whole vocabulary, which the backward pass does not all-reduce again; use "
            f"{alternative} for second derivatives"
        )


@dataclass
class _ShardRows:
    """Per row, where its target sits in this rank's classes: ``valid`` (not ignored), ``owned`` (the target is
    one of this rank's classes), ``safe_index`` (its local index, 0 where not owned), ``local_omega``
    (:math:`w_{y_n}` where owned, else 0; None without class weights) and ``target`` (the global index)."""

    target: torch.Tensor
    valid: torch.Tensor
    owned: torch.Tensor
    safe_index: torch.Tensor
    local_omega: torch.Tensor | None

    @classmethod
    def of(cls, target, class_acc, options: _Options, n_local: int, dtype: torch.dtype) -> _ShardRows:
        valid = target != options.ignore_index
        local_index = target - options.vocab_start
        owned = valid & (local_index >= 0) & (local_index < n_local)
        safe_index = torch.where(owned, local_index, torch.zeros_like(local_index))
        local_omega = None
        if class_acc is not None:
            zero = torch.zeros((), dtype=dtype, device=target.device)
            local_omega = torch.where(owned, class_acc[safe_index], zero)
        return cls(target, valid, owned, safe_index, local_omega)

    def __getitem__(self, rows: slice) -> _ShardRows:
        omega = None if self.local_omega is None else self.local_omega[rows]
        return _ShardRows(self.target[rows], self.valid[rows], self.owned[rows], self.safe_index[rows], omega)


def _capped(x: torch.Tensor, options: _Options) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The logits over the temperature ``T``, ``y = x / T``, soft-capped: ``u = c tanh(y / c)`` and ``tanh(y / c)``
    (for the derivative) under a soft-cap ``c``; ``(y, None)`` without."""
    softcap = options.softcap
    if options.temperature != 1:
        x = x / options.temperature
    if softcap is None:
        return x, None
    squashed = torch.tanh(x / softcap)
    return softcap * squashed, squashed


def _local_target_dot(u, shard: _ShardRows, class_acc, eps: float, vocab) -> torch.Tensor:
    r""":math:`\sum_c a_{n,c} u_{n,c}` over this rank's classes (the rows of ``u``)."""
    coefficient = (1 - eps) * (shard.owned.to(u.dtype) if shard.local_omega is None else shard.local_omega)
    picked = u.gather(1, shard.safe_index[:, None])[:, 0]
    dot = torch.where(shard.owned, coefficient * picked, torch.zeros_like(picked))
    if eps > 0:  # + eps / V sum_c w_c u_c over this rank's classes
        dot = dot + eps / vocab * (u.sum(dim=1) if class_acc is None else u @ class_acc)
    return dot


@dataclass
class _GlobalRows:
    r"""Per row, over the whole vocabulary: the losses times ``scale``, the log-sum-exp, :math:`\kappa_n`
    (the coefficient of :math:`p` in the gradient), :math:`\omega_n`, and ``scale`` (:math:`s_n / D` for
    ``"mean"``, :math:`s_n` otherwise, 0 for ignored rows). With the statistics, also the entropy
    :math:`H_n`, whether the target is the first arg-max (``hits``), and ``live``: the rows whose statistics
    count (target not ignored, sample weight not 0); else these three are None."""

    losses: torch.Tensor
    lse: torch.Tensor
    kappa: torch.Tensor
    omega: torch.Tensor
    scale: torch.Tensor
    entropy: torch.Tensor | None = None
    hits: torch.Tensor | None = None
    live: torch.Tensor | None = None

    def statistics(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(lse, entropy, hits)``, 0 (False) at the rows that do not count: the outputs of ``return_stats``."""
        zero = torch.zeros_like(self.lse)
        return (
            torch.where(self.live, self.lse, zero),
            torch.where(self.live, self.entropy, zero),
            self.hits & self.live,
        )


@dataclass
class _LocalStats:
    """Per row, over this rank's classes: the entropy of their softmax, the largest logit and the global
    class index of its first occurrence."""

    entropy: torch.Tensor
    top: torch.Tensor
    arg: torch.Tensor


def _local_stats(u: torch.Tensor, local_lse: torch.Tensor, vocab_start: int) -> _LocalStats:
    """:class:`_LocalStats` of the rows ``u`` (this rank's classes), ``local_lse`` their log-sum-exp."""
    log_p = u - local_lse[:, None]
    p = torch.exp(log_p)
    entropy = -torch.where(p > 0, p * log_p, torch.zeros_like(p)).sum(dim=1)  # 0 log 0 = 0 (-inf logits)
    top, arg = torch.max(u, dim=1)  # the first maximum, as torch.argmax
    return _LocalStats(entropy, top, arg + vocab_start)


def _combine(
    local_lse, local_dot, shard: _ShardRows, class_acc, sample_weight, normalizer, options, vocab, local=None
) -> _GlobalRows:
    r"""The ranks' per-row statistics combined (the communication of the forward pass: the maximum, then one
    sum of the stacked rest), and the loss :math:`A_n L_n - \sum_c a_{n,c} u_{n,c} + z\,\omega_n L_n^2`.

    With ``local`` (:class:`_LocalStats`), also the entropy and the arg-max hits, in the same two all-reduces:
    the maximum takes the ranks' largest logits too (2N numbers), the sum :math:`T_n` and the hit count (2N
    more); see the module docstring."""
    dtype, n_rows, eps, valid = local_lse.dtype, local_lse.shape[0], options.label_smoothing, shard.valid
    maxima = local_lse.clone() if local is None else torch.cat([local_lse, local.top.to(dtype)])
    dist.all_reduce(maxima, op=dist.ReduceOp.MAX, group=options.group)
    global_max = maxima[:n_rows]
    global_max = torch.where(torch.isfinite(global_max), global_max, torch.zeros_like(global_max))
    shares = torch.exp(local_lse - global_max)
    pieces = [shares, local_dot]
    if local is not None:
        # T_n's part: e^{l_r - M} (l_r - M - H_r), 0 for a rank whose logits of the row are all -inf
        relative = local_lse - global_max
        entropy_part = shares * (relative - local.entropy.to(dtype))
        pieces.append(torch.where(torch.isfinite(local_lse), entropy_part, torch.zeros_like(entropy_part)))
        holds = local.top.to(dtype) == maxima[n_rows:]
        first_is_target = holds & shard.owned & (local.arg == shard.target)
        earlier = holds & valid & (local.arg < shard.target)  # a maximum before the target: it is not the first
        pieces.append(first_is_target.to(dtype) - earlier.to(dtype))
    if class_acc is not None:
        pieces.append(shard.local_omega)
        if eps > 0:
            pieces.append(class_acc.sum()[None])
    stats = torch.cat(pieces)
    dist.all_reduce(stats, op=dist.ReduceOp.SUM, group=options.group)
    total = stats[:n_rows]
    lse = global_max + torch.log(total)
    target_dot = stats[n_rows : 2 * n_rows]
    after = 2 * n_rows
    entropy = hits = live = None
    if local is not None:
        entropy = torch.log(total) - stats[after : after + n_rows] / total
        hits = stats[after + n_rows : after + 2 * n_rows] > 0.5  # 1 exactly when the target is the first maximum
        live = valid if sample_weight is None else valid & (sample_weight != 0)
        after += 2 * n_rows
    if class_acc is None:
        omega, class_total = valid.to(dtype), vocab
    else:
        omega, class_total = stats[after : after + n_rows], stats[-1] if eps > 0 else None

    # A_n = sum_c a_{n,c}
    mass = (1 - eps) * omega
    if eps > 0:
        mass = mass + eps * class_total / vocab
    losses = mass * lse - target_dot
    if options.z_loss > 0:
        losses = losses + options.z_loss * omega * lse**2
    losses = torch.where(valid, losses, torch.zeros_like(losses))

    scale = valid.to(dtype) if sample_weight is None else torch.where(valid, sample_weight.to(dtype), 0)
    if options.reduction == "mean":
        denominator = (scale * omega).sum() if normalizer is None else normalizer.to(dtype)
        empty = denominator == 0
        scale = torch.where(empty, torch.zeros_like(scale), scale / torch.where(empty, 1, denominator))

    kappa = mass + 2 * options.z_loss * omega * lse if options.z_loss > 0 else mass
    kappa = torch.where(valid, kappa, torch.zeros_like(kappa))
    return _GlobalRows(losses * scale, lse, kappa, omega, scale, entropy, hits, live)


def _stats_cotangents(live, grad_lse, grad_entropy, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    r"""The incoming gradients :math:`\lambda_n, \eta_n` of ``lse`` and ``entropy`` (None: 0) in ``dtype``, 0 at
    the rows whose statistics are the constant 0."""
    zero = torch.zeros(live.shape, dtype=dtype, device=live.device)
    lam = zero if grad_lse is None else torch.where(live, grad_lse.to(dtype), zero)
    eta = zero if grad_entropy is None else torch.where(live, grad_entropy.to(dtype), zero)
    return lam, eta


def _stats_logit_term(u, squashed, lse, entropy, lam, eta, temperature: float) -> torch.Tensor:
    r"""The logits' gradient of :math:`\sum_n \lambda_n \operatorname{LSE}_n + \eta_n H_n` on this rank's
    classes: with :math:`\partial \operatorname{LSE}_n / \partial u_{n,c} = p_{n,c}` and
    :math:`\partial H_n / \partial u_{n,c} = -p_{n,c} (\log p_{n,c} + H_n)`,

    .. math::

        p_{n,c} \big(\lambda_n - \eta_n (\log p_{n,c} + H_n)\big) \Big(1 - \tanh^2 \frac{x_{n,c}}{c}\Big) / T,

    from the global ``lse`` and ``entropy`` of the rows ``u`` (``squashed``: the tanh under a soft-cap); 0 where
    :math:`p = 0` and at rows with :math:`\lambda_n = \eta_n = 0`."""
    log_p = u - lse[:, None]
    p = torch.exp(log_p)
    term = p * (lam[:, None] - eta[:, None] * (log_p + entropy[:, None]))
    active = (p > 0) & ((lam != 0) | (eta != 0))[:, None]
    term = torch.where(active, term, torch.zeros_like(term))
    if squashed is not None:
        term *= 1 - squashed**2
    if temperature != 1:
        term /= temperature
    return term


def _logit_gradient(u, squashed, lse, kappa, omega, factor, shard: _ShardRows, class_acc, options, vocab):
    """This rank's slice of the logits' gradient, ``g = f (kappa p - a) (1 - tanh^2(x / c))``, for rows ``u``
    (and the ``lse``, ``kappa``, ``omega``, ``factor`` and ``shard`` of the same rows); written over ``u``'s
    exponentials (a new tensor)."""
    eps = options.label_smoothing
    grad = torch.exp(u - lse[:, None]).mul_(kappa[:, None])
    if eps > 0:
        grad -= eps / vocab * (1.0 if class_acc is None else class_acc)
    target_coefficient = torch.where(shard.owned, (1 - eps) * omega, torch.zeros_like(omega))
    grad.scatter_add_(1, shard.safe_index[:, None], -target_coefficient[:, None])
    grad *= factor[:, None]
    if squashed is not None:
        grad *= 1 - squashed**2
    return grad


@overload
def vocab_parallel_cross_entropy(
    local_logits: torch.Tensor,
    target: torch.Tensor,
    *,
    vocab_start: int,
    group: Any = None,
    weight: torch.Tensor | None = None,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
    temperature: float = 1.0,
    sample_weight: torch.Tensor | None = None,
    reduction: Reduction = "mean",
    normalizer: float | torch.Tensor | None = None,
    return_stats: Literal[False] = False,
) -> torch.Tensor: ...


@overload
def vocab_parallel_cross_entropy(
    local_logits: torch.Tensor,
    target: torch.Tensor,
    *,
    vocab_start: int,
    group: Any = None,
    weight: torch.Tensor | None = None,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
    temperature: float = 1.0,
    sample_weight: torch.Tensor | None = None,
    reduction: Reduction = "mean",
    normalizer: float | torch.Tensor | None = None,
    return_stats: Literal[True],
) -> tuple[torch.Tensor, LossStats]: ...


@overload
def vocab_parallel_cross_entropy(
    local_logits: torch.Tensor,
    target: torch.Tensor,
    *,
    vocab_start: int,
    group: Any = None,
    weight: torch.Tensor | None = None,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
    temperature: float = 1.0,
    sample_weight: torch.Tensor | None = None,
    reduction: Reduction = "mean",
    normalizer: float | torch.Tensor | None = None,
    return_stats: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, LossStats]: ...


def vocab_parallel_cross_entropy(
    local_logits: torch.Tensor,
    target: torch.Tensor,
    *,
    vocab_start: int,
    group: Any = None,
    weight: torch.Tensor | None = None,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
    temperature: float = 1.0,
    sample_weight: torch.Tensor | None = None,
    reduction: Reduction = "mean",
    normalizer: float | torch.Tensor | None = None,
    return_stats: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, LossStats]:
    r"""Softmax cross-entropy of vocabulary-sharded logits: every rank of ``group`` holds a slice.

    :func:`crossentropy.torch.cross_entropy` of the gathered logits, every option included:

    .. math::

        \ell_n = s_n \Big(\sum_c a_{n,c} (\operatorname{LSE}_n - u_{n,c})
                 + z\,\omega_n \operatorname{LSE}_n^2\Big), \qquad
        a_{n,c} = (1 - \varepsilon)\, w_{y_n} [c = y_n] + \frac{\varepsilon}{V} w_c,

    over the whole vocabulary of size :math:`V = \sum_{\text{ranks}} V_\text{local}` (the label
    smoothing spreads over the global :math:`V`), :math:`u = c \tanh(x / c)` under a soft-cap,
    :math:`\omega_n = w_{y_n}`, and the mean dividing by :math:`\sum_n s_n \omega_n`. The forward
    pass sends one all-gather of two integers per rank (the shards' layout, checked) and two
    all-reduces of O(N) numbers (a maximum of N, then one stacked sum of 2N, 3N + 1 with class
    weights); the backward pass none. ``return_stats=True`` adds no collective: N more numbers in
    the maximum and 2N more in the sum (the module docstring has the formulas). Differentiable
    once: a backward with ``create_graph=True`` raises, since the second derivative would need the
    all-reduced log-sum-exp differentiated across ranks.

    Parameters
    ----------
    local_logits : Tensor of shape (..., V_local)
        This rank's slice of the logits, the vocabulary on the last dimension (as in
        Megatron-style tensor parallelism; ranks may hold slices of different sizes, which must
        tile ``[0, V)``).
    target : int Tensor of shape (...)
        Global class indices in ``[0, V)`` (the same on every rank of ``group``), or ``ignore_index``.
    vocab_start : int
        The global index of this rank's first class.
    group : ProcessGroup, optional
        The tensor-parallel group (default: the whole world).
    weight : Tensor of shape (V_local,), optional
        This rank's slice of the class weights :math:`w` (non-negative). Not differentiated.
    ignore_index : int, default -100
        Targets equal to it contribute nothing.
    label_smoothing : float in [0, 1], default 0
        :math:`\varepsilon`, PyTorch's label smoothing over the global vocabulary.
    z_loss : float >= 0, default 0
        The z-loss coefficient :math:`z` (of the global log-sum-exp).
    softcap : float > 0, optional
        The soft-cap :math:`c`: logits become :math:`c \tanh(x / c)` first.
    temperature : float, default 1.0
        :math:`T > 0`: the logits are divided by it first (before the soft-cap).
    sample_weight : Tensor of ``target``'s shape, optional
        Per-token weights :math:`s_n \ge 0`, also in the mean's denominator. Not differentiated.
    reduction : {"mean", "sum", "none"}, default "mean"
    normalizer : float or 0-d Tensor, optional
        The mean's denominator instead of :math:`\sum_n s_n \omega_n`, e.g. the token count
        summed over data-parallel ranks, so that their gradients add up to the global mean.
        Only with ``reduction="mean"``.
    return_stats : bool, default False
        Also return a :class:`crossentropy.LossStats` ``(lse, entropy, accuracy)`` of ``target``'s
        shape, over the whole vocabulary, as :func:`crossentropy.torch.cross_entropy` returns them
        for the gathered logits: :math:`\operatorname{LSE}_n`, the entropy :math:`H_n = -\sum_c
        p_{n,c} \log p_{n,c}` of :math:`p_n = \operatorname{softmax}(u_n)` (the logits' dtype)
        and whether the first global arg-max of :math:`u_n` is the target (bool; ties go to the
        lowest class index, on whichever rank it is, as ``torch.argmax``), of the logits the loss
        reads (over the temperature, soft-capped). 0 (False) where the target is ignored or the
        sample weight is 0. From the same pass and the same two all-reduces as the loss, O(N)
        more memory. ``lse`` and ``entropy`` are differentiable: with incoming gradients
        :math:`\lambda_n, \eta_n` each rank's slice of the logits' gradient gains
        :math:`p_{n,c} (\lambda_n - \eta_n (\log p_{n,c} + H_n))` times the soft-cap's slope over
        :math:`T`, from its own logits and the global :math:`\operatorname{LSE}_n, H_n` (no
        communication).

    Returns
    -------
    Tensor, or (Tensor, LossStats) with ``return_stats``
        0-d for ``"mean"``/``"sum"``, ``target``'s shape for ``"none"``, in float32 (float64
        for float64 logits); identical on every rank of ``group``, the statistics too.
    """
    if not isinstance(local_logits, torch.Tensor) or not isinstance(target, torch.Tensor):
        raise TypeError("`local_logits` and `target` must be torch.Tensors")
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError("vocab_parallel_cross_entropy needs an initialized torch.distributed process group")
    if local_logits.ndim < 1 or tuple(target.shape) != tuple(local_logits.shape[:-1]):
        raise ValueError(
            f"`target` must have the shape of `local_logits` without its last (vocabulary) dimension, "
            f"{tuple(local_logits.shape[:-1])}; got {tuple(target.shape)}"
        )
    if target.dtype.is_floating_point or target.dtype.is_complex or target.dtype == torch.bool:
        raise TypeError(f"`target` must be integer class indices; got dtype {target.dtype}")
    n_local = local_logits.shape[-1]
    options = _checked_options(
        vocab_start, group, ignore_index, label_smoothing, z_loss, softcap, temperature, reduction
    )
    accumulation = _accumulation(local_logits.dtype)
    weight, sample_weight, normalizer = _checked_weights(
        weight, sample_weight, normalizer, n_local, target, reduction, accumulation, local_logits.device
    )
    vocab, _ = _checked_layout(options, n_local, target, local_logits.device)
    return_stats = _checked_flag("return_stats", return_stats)
    result = VocabParallelCrossEntropy.apply(
        local_logits.reshape(-1, n_local),
        target.reshape(-1),
        weight,
        sample_weight,
        normalizer,
        options,
        vocab.to(accumulation),
        return_stats,
    )
    losses = result[0] if return_stats else result
    loss = losses.reshape(target.shape) if reduction == "none" else losses.sum()
    if not return_stats:
        return loss
    lse, entropy, hits = result[1:]
    dtype = local_logits.dtype
    return loss, LossStats(
        lse.to(dtype).reshape(target.shape), entropy.to(dtype).reshape(target.shape), hits.reshape(target.shape)
    )


def _checked_options(
    vocab_start, group, ignore_index, label_smoothing, z_loss, softcap, temperature, reduction
) -> _Options:
    return _Options(
        vocab_start=check_integer_option("vocab_start", vocab_start, low=0),
        group=group,
        ignore_index=check_integer_option("ignore_index", ignore_index),
        label_smoothing=check_number("label_smoothing", label_smoothing, low=0.0, high=1.0),
        z_loss=check_number("z_loss", z_loss, low=0.0),
        softcap=None if softcap is None else check_number("softcap", softcap, low=0.0, low_open=True),
        temperature=check_number("temperature", temperature, low=0.0, low_open=True, high=math.inf, high_open=True),
        reduction=check_reduction(reduction),
    )


def _checked_flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"`{name}` must be True or False; got {value!r}")
    return value


def _checked_weights(weight, sample_weight, normalizer, n_local, target, reduction, accumulation, device):
    """Class weights (V_local,), sample weights (flat) and the normalizer, checked, in the accumulation dtype."""
    for name, tensor in (("weight", weight), ("sample_weight", sample_weight)):
        if tensor is not None and not isinstance(tensor, torch.Tensor):
            raise TypeError(f"`{name}` must be a torch.Tensor or None; got {type(tensor).__name__}")
        if tensor is not None and (tensor.dtype.is_complex or tensor.dtype == torch.bool):
            raise TypeError(f"`{name}` must be real numbers; got dtype {tensor.dtype}")
    if weight is not None:
        check_shape("weight", weight, (n_local,), rule="one per class of this rank, V_local")
        weight = weight.to(accumulation)
        check_nonnegative("weight", weight, get_namespace(weight))
    if sample_weight is not None:
        check_shape("sample_weight", sample_weight, tuple(target.shape), rule="one weight per token")
        sample_weight = sample_weight.to(accumulation).reshape(-1)
        check_nonnegative("sample_weight", sample_weight, get_namespace(sample_weight))
    normalizer = checked_normalizer(normalizer, reduction, target, accumulation)
    return weight, sample_weight, normalizer


def _checked_layout(options: _Options, n_local: int, target: torch.Tensor, device: torch.device):
    """The global vocabulary size as :func:`_shard_layout` returns it, the targets checked against it where
    their values may be read."""
    check = checks_values(target)
    vocab, vocab_size = _shard_layout(options.vocab_start, n_local, options.group, device, check)
    if check:
        check_class_indices("target", target, get_namespace(target), vocab_size, options.ignore_index)
    return vocab, vocab_size


# --------------------------------------------------------------------------------------------
# The output projection sharded by vocabulary: vocab_parallel_linear_cross_entropy
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _LinearOptions(_Options):
    chunk_size: int
    fused: Any = None  # a kernel backend with the fused linear kernels, or None for chunks in PyTorch
    vocab_size: int | None = None  # V on the host (the fused kernels take it), when read


def _accumulation(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _chunk_logits(rows, weight_acc, bias_acc, options):
    """The chunk's logits ``rows @ W.T + b`` in the accumulation dtype, scaled and soft-capped as :func:`_capped`
    returns them."""
    logits = torch.mm(rows, weight_acc.T) if bias_acc is None else torch.addmm(bias_acc, rows, weight_acc.T)
    return _capped(logits, options)


class VocabParallelLinearCrossEntropy(torch.autograd.Function):
    r"""``apply(input (N, H), weight_shard (V_local, H), bias, class_weight, target (N,), sample_weight,
    normalizer, options, vocab, stats)``: per-row losses times their factor (``s_n / D`` for ``"mean"``,
    ``s_n`` otherwise), in the accumulation dtype; the caller sums them for ``"mean"`` and ``"sum"``. With
    ``stats``, ``(losses, lse, entropy, hits)`` as :class:`VocabParallelCrossEntropy` returns them.

    ``vocab`` is the global vocabulary size (a 0-d tensor in the accumulation dtype). Each rank
    forms, per row, the log-sum-exp of its classes and :math:`\sum_c a_{n,c} u_{n,c}` over them
    (and with ``stats`` their entropy and first maximum), with ``options.fused``, a kernel backend's
    fused linear kernels, else chunks of logits in PyTorch; then the ranks combine them.
    """

    @staticmethod
    def forward(
        ctx,
        input,
        weight_shard,
        bias,
        class_weight,
        target,
        sample_weight,
        normalizer,
        options: _LinearOptions,
        vocab,
        stats,
    ):
        dtype = _accumulation(input.dtype)
        class_acc = None if class_weight is None else class_weight.to(dtype)
        shard = _ShardRows.of(target, class_acc, options, weight_shard.shape[0], dtype)
        local = None
        if options.fused is not None:
            found = options.fused.linear_logsumexp(
                input,
                weight_shard,
                bias,
                _kernel_target(target, shard.valid),
                **_fused_options(options, class_acc),
                stats=stats,
            )
            local_lse, local_dot = found[0].to(dtype), found[1].to(dtype)
            if stats:  # the kernel gives the first maximum's column; its value, for the ranks to compare
                column = found[3]
                top = _logits_at(input, weight_shard, bias, column, options, dtype)
                local = _LocalStats(found[2].to(dtype), top, column + options.vocab_start)
        else:
            local_lse, local_dot, local = _chunked_statistics(
                input, weight_shard, bias, class_acc, shard, options, vocab, stats
            )
        rows = _combine(local_lse, local_dot, shard, class_acc, sample_weight, normalizer, options, vocab, local)
        ctx.options = options
        ctx.save_for_backward(
            input,
            weight_shard,
            bias,
            class_weight,
            target,
            rows.lse,
            rows.kappa,
            rows.omega,
            rows.scale,
            vocab,
            rows.entropy,
            rows.live,
        )
        if not stats:
            return rows.losses
        ctx.set_materialize_grads(False)
        ctx.mark_non_differentiable(rows.hits)
        return rows.losses, *rows.statistics()

    @staticmethod
    def backward(ctx, grad_losses, grad_lse=None, grad_entropy=None, _grad_hits=None):
        _refuse_second_derivative("vocab_parallel_linear_cross_entropy", "linear_cross_entropy on the gathered weight")
        input, weight_shard, bias, class_weight, target, lse, kappa, omega, scale, vocab, entropy, live = (
            ctx.saved_tensors
        )
        options = ctx.options
        need_input, need_weight, need_bias = ctx.needs_input_grad[:3]
        need_bias = need_bias and bias is not None
        with_stats = grad_lse is not None or grad_entropy is not None
        if not (need_input or need_weight or need_bias) or (grad_losses is None and not with_stats):
            return (None,) * 10
        dtype = lse.dtype
        class_acc = None if class_weight is None else class_weight.to(dtype)
        factor = None if grad_losses is None else grad_losses.to(dtype) * scale
        lam = eta = None
        if with_stats:
            lam, eta = _stats_cotangents(live, grad_lse, grad_entropy, dtype)
        if options.fused is not None:
            extra = {}
            if with_stats:  # the kernel's p (c - eta u): c = lambda + eta (LSE - H), 0 where nothing flows
                coefficient = lam + eta * (lse - entropy)
                coefficient = torch.where(live, coefficient, torch.zeros_like(coefficient))
                extra = {"p_coefficient": coefficient.contiguous(), "entropy_weight": eta.contiguous()}
            grad_input, grad_weight, grad_bias = options.fused.linear_cross_entropy_gradients(
                input,
                weight_shard,
                bias,
                _kernel_target(target, target != options.ignore_index),
                lse,
                kappa.contiguous(),
                torch.zeros_like(lse) if factor is None else factor.contiguous(),
                **_fused_options(options, class_acc),
                need_input=need_input,
                need_weight=need_weight,
                need_bias=need_bias,
                accumulation_dtype=dtype,
                **extra,
            )
        else:
            grad_input, grad_weight, grad_bias = _chunked_gradients(
                input,
                weight_shard,
                bias,
                class_acc,
                target,
                lse,
                kappa,
                omega,
                # the chain rule's 1/T (the fused kernels apply it themselves)
                None if factor is None else factor / options.temperature,
                options,
                vocab,
                (need_input, need_weight, need_bias),
                None if lam is None else (entropy, lam, eta),
            )
        if grad_input is not None:  # every rank holds the part of the input's gradient from its classes
            dist.all_reduce(grad_input, op=dist.ReduceOp.SUM, group=options.group)
        return (
            None if grad_input is None else grad_input.to(input.dtype),
            None if grad_weight is None else grad_weight.to(weight_shard.dtype),
            None if grad_bias is None else grad_bias.to(bias.dtype),
            *(None,) * 7,
        )


def _logits_at(input, weight_shard, bias, column, options, dtype) -> torch.Tensor:
    """Per row, the logit ``u`` (over the temperature, soft-capped) of this rank's class ``column[n]``, in
    ``dtype``: O(N H) work, in chunks of rows."""
    n_rows, hidden = input.shape
    values = input.new_empty(n_rows, dtype=dtype)
    step = max(1, CHUNK_ELEMENTS // max(hidden, 1))
    for start in range(0, n_rows, step):
        piece = slice(start, min(start + step, n_rows))
        picked = column[piece]
        logit = (input[piece].to(dtype) * weight_shard[picked].to(dtype)).sum(dim=1)
        if bias is not None:
            logit = logit + bias[picked].to(dtype)
        values[piece] = _capped(logit, options)[0]
    return values


def _kernel_target(target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """The targets as the fused kernels take them: -1 (no class of any shard) for ignored rows, so that an
    ``ignore_index`` inside this rank's classes marks no target."""
    return torch.where(valid, target, torch.full_like(target, -1))


def _fused_options(options: _LinearOptions, class_weight: torch.Tensor | None) -> dict:
    return {
        "class_weight": class_weight,
        "smoothing": options.label_smoothing,
        "total_classes": options.vocab_size,
        "vocab_start": options.vocab_start,
        "cap": options.softcap,
        "temperature": options.temperature,
    }


def _chunked_statistics(input, weight_shard, bias, class_acc, shard: _ShardRows, options, vocab, stats=False):
    r"""Per row, over this rank's classes, the log-sum-exp of ``u`` and :math:`\sum_c a_{n,c} u_{n,c}`
    (and with ``stats`` their :class:`_LocalStats`, else None), from chunks of ``options.chunk_size`` rows of
    logits in PyTorch (the accumulation dtype)."""
    dtype = _accumulation(input.dtype)
    n_rows = input.shape[0]
    weight_acc = weight_shard.to(dtype)
    bias_acc = None if bias is None else bias.to(dtype)
    local_lse = input.new_empty(n_rows, dtype=dtype)
    local_dot = input.new_empty(n_rows, dtype=dtype)
    local = None
    if stats:
        local = _LocalStats(
            input.new_empty(n_rows, dtype=dtype),
            input.new_empty(n_rows, dtype=dtype),
            input.new_empty(n_rows, dtype=torch.int64),
        )
    for start in range(0, n_rows, options.chunk_size):
        piece = slice(start, min(start + options.chunk_size, n_rows))
        u, _ = _chunk_logits(input[piece].to(dtype), weight_acc, bias_acc, options)
        local_lse[piece] = torch.logsumexp(u, dim=1)
        local_dot[piece] = _local_target_dot(u, shard[piece], class_acc, options.label_smoothing, vocab)
        if local is not None:
            found = _local_stats(u, local_lse[piece], options.vocab_start)
            local.entropy[piece], local.top[piece], local.arg[piece] = found.entropy, found.top, found.arg
    return local_lse, local_dot, local


def _chunked_gradients(
    input, weight_shard, bias, class_acc, target, lse, kappa, omega, factor, options, vocab, needs, stats=None
):
    """The gradients of ``input``, this rank's ``weight_shard`` and ``bias`` (None where not needed),
    recomputing chunks of logits in PyTorch: of the losses times ``factor`` (:func:`_logit_gradient`; None:
    no loss term) and, with ``stats`` ``(entropy, lam, eta)``, of the statistics (:func:`_stats_logit_term`)."""
    dtype = lse.dtype
    n_rows, n_local = input.shape[0], weight_shard.shape[0]
    weight_acc = weight_shard.to(dtype)
    bias_acc = None if bias is None else bias.to(dtype)
    shard = _ShardRows.of(target, class_acc, options, n_local, dtype)
    need_input, need_weight, need_bias = needs
    grad_input = input.new_empty(input.shape, dtype=dtype) if need_input else None
    grad_weight = input.new_zeros(weight_shard.shape, dtype=dtype) if need_weight else None
    grad_bias = input.new_zeros(n_local, dtype=dtype) if need_bias else None
    for start in range(0, n_rows, options.chunk_size):
        piece = slice(start, min(start + options.chunk_size, n_rows))
        rows = input[piece].to(dtype)
        u, squashed = _chunk_logits(rows, weight_acc, bias_acc, options)
        grad = None
        if factor is not None:
            per_row = (lse[piece], kappa[piece], omega[piece], factor[piece], shard[piece])
            grad = _logit_gradient(u, squashed, *per_row, class_acc, options, vocab)
        if stats is not None:
            entropy, lam, eta = (t[piece] for t in stats)
            term = _stats_logit_term(u, squashed, lse[piece], entropy, lam, eta, options.temperature)
            grad = term if grad is None else grad.add_(term)
        if grad_input is not None:
            torch.mm(grad, weight_acc, out=grad_input[piece])
        if grad_weight is not None:
            grad_weight.addmm_(grad.T, rows)
        if grad_bias is not None:
            grad_bias += grad.sum(dim=0)
    return grad_input, grad_weight, grad_bias


def _shard_layout(
    vocab_start: int, n_local: int, group: Any, device: torch.device, check: bool
) -> tuple[torch.Tensor, int | None]:
    """The global vocabulary size from one all-gather of every rank's ``(vocab_start, V_local)``,
    as a tensor on ``device``; with ``check``, also read on the host (it is then returned as an int too),
    after checking that the shards tile ``[0, V)`` without gap or overlap (the same answer on every rank,
    so all raise together)."""
    mine = torch.tensor([vocab_start, n_local], dtype=torch.int64, device=device)
    layout = [torch.empty_like(mine) for _ in range(dist.get_world_size(group))]
    dist.all_gather(layout, mine, group=group)
    vocab = torch.stack(layout)[:, 1].sum()
    if not check:
        return vocab, None
    shards = [tuple(int(v) for v in shard.tolist()) for shard in layout]
    end = 0
    for start, size in sorted(shards):
        if start != end or size < 1:
            raise ValueError(
                "the ranks' `vocab_start` and slices of the vocabulary must tile the vocabulary [0, V) with "
                "contiguous, non-empty slices; got (vocab_start, V_local) per rank "
                f"{shards}"
            )
        end = start + size
    return vocab, end


@overload
def vocab_parallel_linear_cross_entropy(
    input: torch.Tensor,
    linear_weight_shard: torch.Tensor,
    target: torch.Tensor,
    *,
    vocab_start: int,
    group: Any = None,
    linear_bias: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
    reduction: Reduction = "mean",
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
    temperature: float = 1.0,
    sample_weight: torch.Tensor | None = None,
    normalizer: float | torch.Tensor | None = None,
    shift: bool = False,
    chunk_size: int | None = None,
    return_stats: Literal[False] = False,
) -> torch.Tensor: ...


@overload
def vocab_parallel_linear_cross_entropy(
    input: torch.Tensor,
    linear_weight_shard: torch.Tensor,
    target: torch.Tensor,
    *,
    vocab_start: int,
    group: Any = None,
    linear_bias: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
    reduction: Reduction = "mean",
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
    temperature: float = 1.0,
    sample_weight: torch.Tensor | None = None,
    normalizer: float | torch.Tensor | None = None,
    shift: bool = False,
    chunk_size: int | None = None,
    return_stats: Literal[True],
) -> tuple[torch.Tensor, LossStats]: ...


@overload
def vocab_parallel_linear_cross_entropy(
    input: torch.Tensor,
    linear_weight_shard: torch.Tensor,
    target: torch.Tensor,
    *,
    vocab_start: int,
    group: Any = None,
    linear_bias: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
    reduction: Reduction = "mean",
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
    temperature: float = 1.0,
    sample_weight: torch.Tensor | None = None,
    normalizer: float | torch.Tensor | None = None,
    shift: bool = False,
    chunk_size: int | None = None,
    return_stats: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, LossStats]: ...


def vocab_parallel_linear_cross_entropy(
    input: torch.Tensor,
    linear_weight_shard: torch.Tensor,
    target: torch.Tensor,
    *,
    vocab_start: int,
    group: Any = None,
    linear_bias: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
    reduction: Reduction = "mean",
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
    temperature: float = 1.0,
    sample_weight: torch.Tensor | None = None,
    normalizer: float | torch.Tensor | None = None,
    shift: bool = False,
    chunk_size: int | None = None,
    return_stats: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, LossStats]:
    r"""Linear layer and cross-entropy with the output projection sharded by vocabulary across ranks.

    Tensor parallelism of a language model's head: every rank of ``group`` holds the same tokens
    ``input`` and ``target`` and a contiguous slice of the rows of the projection, the classes
    ``[vocab_start, vocab_start + V_local)``. The result, on every rank, is
    ``crossentropy.torch.cross_entropy(input @ W.T + b, target, weight=w, ...)`` with ``W``, ``b``
    and ``w`` the gathered slices:

    .. math::

        \ell_n = s_n \Big( (1-\varepsilon)\, \omega_n \big(\operatorname{LSE}_n - u_{n,y_n}\big)
                 + \frac{\varepsilon}{V} \sum_{c} w_c \big(\operatorname{LSE}_n - u_{n,c}\big)
                 + z\, \omega_n \operatorname{LSE}_n^2 \Big),
        \qquad u_n = \operatorname{cap}(W x_n + b),

    with :math:`\omega_n = w_{y_n}` (1 without class weights), :math:`\operatorname{LSE}_n =
    \log \sum_c e^{u_{n,c}}` and the sums over the whole vocabulary of size
    :math:`V = \sum_\text{ranks} V_\text{local}`, :math:`\operatorname{cap}(x) = c \tanh(x / c)`
    with ``softcap`` (the identity without). Rows whose target is ``ignore_index`` give 0. The
    mean is :math:`\sum_n \ell_n / \sum_n s_n \omega_n` (0 when the denominator is 0), or
    :math:`\sum_n \ell_n /` ``normalizer``.

    The N×V_local logits never exist at once: the tokens go through in chunks of ``chunk_size``
    rows. The forward pass keeps per row the log-sum-exp of this rank's classes and their
    :math:`\sum_c a_{n,c} u_{n,c}` (with :math:`a` below), and combines them across ranks into
    :math:`\ell_n = s_n (A_n \operatorname{LSE}_n - \sum_c a_{n,c} u_{n,c} + z\, \omega_n
    \operatorname{LSE}_n^2)`, :math:`A_n = \sum_c a_{n,c}`; it saves O(N) numbers per row besides
    the inputs. The backward pass recomputes each chunk's logits and forms this rank's slice of
    their gradient from the global log-sum-exp,

    .. math::

        g_{n,c} = f_n \big(\kappa_n p_{n,c} - a_{n,c}\big)\big(1 - \tanh^2(x_{n,c}/c)\big),
        \qquad p_{n,c} = e^{u_{n,c} - \operatorname{LSE}_n},
        \quad a_{n,c} = (1-\varepsilon)\, \omega_n [c = y_n] + \tfrac{\varepsilon}{V} w_c,
        \quad \kappa_n = \textstyle\sum_c a_{n,c} + 2 z\, \omega_n \operatorname{LSE}_n,

    (:math:`f_n` the incoming gradient times :math:`s_n`, over the mean's denominator; the tanh
    factor only with ``softcap``), then :math:`\partial L / \partial W_\text{local} = g^\top X`,
    :math:`\partial L / \partial b_\text{local} = \sum_n g_n` and the input's gradient
    :math:`\sum_\text{ranks} g W_\text{local}`.

    **Communication**, on ``group``: per forward call one all-gather of two integers per rank
    (the shard layout), an all-reduce (maximum) of N numbers and an all-reduce (sum) of 2N
    numbers (3N + 1 with class weights); per backward call one all-reduce (sum) of the input's
    gradient, N×H numbers (none when ``input`` does not require a gradient). ``return_stats=True``
    adds no collective: the maximum carries 2N numbers (the ranks' largest logits too), the sum
    2N more (the entropy's :math:`T_n` and the arg-max hit count; formulas in
    :mod:`crossentropy.torch.distributed`'s docstring). Never the N×V logits. The shard layout
    is read on the host (a device sync) for its checks, skipped on a device under
    :func:`crossentropy.checks_disabled` except where the fused kernels need :math:`V`.

    **Kernels.** Where a kernel backend with fused linear kernels takes the tensors (Triton: CUDA
    tensors of one dtype for ``input``, the shard and the bias), the per-row statistics and the
    gradients come from :func:`crossentropy.kernels.triton.linear_logsumexp` and
    :func:`crossentropy.kernels.triton.linear_cross_entropy_gradients`, which compute tiles of
    logits on chip (``chunk_size`` is then unused); elsewhere from chunks of logits in PyTorch.

    Parameters
    ----------
    input : Tensor of shape (..., H)
        Hidden states, e.g. (batch, sequence, hidden); the same on every rank of ``group``.
    linear_weight_shard : Tensor of shape (V_local, H)
        This rank's rows of the output projection, the global classes
        ``[vocab_start, vocab_start + V_local)``. The ranks' slices must tile ``[0, V)``; their
        sizes may differ.
    target : int Tensor of shape (...)
        Global class indices in ``[0, V)``, or ``ignore_index``; the same on every rank.
    vocab_start : int
        The global index of this rank's first class.
    group : ProcessGroup, optional
        The tensor-parallel group (default: the whole world).
    linear_bias : Tensor of shape (V_local,), optional
        This rank's slice of the projection's bias.
    weight : Tensor of shape (V_local,), optional
        This rank's slice of the class weights :math:`w` (non-negative), as ``weight`` of
        :func:`crossentropy.torch.cross_entropy`. Not differentiated.
    reduction : {"mean", "sum", "none"}, default "mean"
    ignore_index : int, default -100
        Targets equal to it contribute nothing.
    label_smoothing : float in [0, 1], default 0
        :math:`\varepsilon`, PyTorch's label smoothing: :math:`\varepsilon / V` over the global
        vocabulary.
    z_loss : float >= 0, default 0
        The z-loss coefficient :math:`z` (of the global log-sum-exp).
    softcap : float > 0, optional
        The soft-cap :math:`c`: logits become :math:`c \tanh(x / c)` first.
    temperature : float, default 1.0
        :math:`T > 0`: the logits are divided by it first (before the soft-cap).
    sample_weight : Tensor of ``target``'s shape, optional
        Per-token weights :math:`s_n \ge 0`, also in the mean's denominator. Not differentiated.
    normalizer : float or 0-d Tensor, optional
        The mean's denominator instead of :math:`\sum_n s_n \omega_n`, e.g. the token count
        summed over data-parallel ranks, so that their gradients add up to the global mean.
        Only with ``reduction="mean"``.
    shift : bool, default False
        Causal language modelling, as :func:`crossentropy.torch.linear_cross_entropy`'s: position
        :math:`t` of ``input`` (..., T, H) scored against ``target[..., t + 1]`` through views, the
        last position of each sequence not counted (0 there for ``"none"``).
    chunk_size : int, optional
        Tokens per chunk of the PyTorch path; by default as many as make 64 MiB of float32
        logits of this rank's classes. Peak memory is about two chunks of logits plus the
        gradients of ``input`` and of the shard, accumulated in float32 (float64 for float64
        input) and cast to the tensors' dtypes at the end.
    return_stats : bool, default False
        Also return a :class:`crossentropy.LossStats` ``(lse, entropy, accuracy)`` of
        ``target``'s shape, over the whole vocabulary, as
        :func:`crossentropy.torch.linear_cross_entropy` returns them for the gathered projection:
        :math:`\operatorname{LSE}_n`, the entropy :math:`H_n` of :math:`\operatorname{softmax}(u_n)`
        (the input's dtype) and whether the first global arg-max of :math:`u_n` is the target
        (bool; ties to the lowest class index, as ``torch.argmax``). 0 (False) where the target
        is ignored, the sample weight is 0 or, with ``shift``, at the last position of each
        sequence. From the same pass as the loss (fused kernels: ``linear_logsumexp(...,
        stats=True)``, and the value of each row's largest logit recomputed from its column, O(N
        H); chunks: the chunk's logits), O(N) more memory. ``lse`` and ``entropy`` are
        differentiable: with incoming gradients :math:`\lambda_n, \eta_n` the logits' gradient
        :math:`g_{n,c}` gains :math:`p_{n,c} (\lambda_n - \eta_n (\log p_{n,c} + H_n))` times
        the soft-cap's slope over :math:`T` (fused kernels: ``p_coefficient`` :math:`\lambda_n +
        \eta_n (\operatorname{LSE}_n - H_n)` and ``entropy_weight`` :math:`\eta_n` of the same
        backward kernel; chunks: :math:`p` recomputed per chunk), and flows into the gradients of
        ``input``, the shard and the bias as the loss's does (the input's in the same all-reduce).

    Returns
    -------
    Tensor, or (Tensor, LossStats) with ``return_stats``
        0-d for ``"mean"``/``"sum"``, ``target``'s shape for ``"none"``, in the input's dtype;
        identical on every rank of ``group``, the statistics too.

    Raises
    ------
    RuntimeError
        Without an initialized ``torch.distributed`` process group; from a backward pass with
        ``create_graph=True`` (the function is differentiable once).
    ValueError, TypeError
        For shapes, options and class indices outside ``[0, V)``, naming the parameter. Every
        rank must call with the same tokens, targets and options (and ``input`` requiring a
        gradient on all or none): a rank that raises alone leaves the others waiting.

    Examples
    --------
    Two ranks, each with half of a 50-class head (run under ``torchrun --nproc-per-node 2``)::

        rank = dist.get_rank()
        head = torch.nn.Linear(16, 50)                   # the same seed on every rank
        rows = slice(25 * rank, 25 * (rank + 1))
        weight = head.weight[rows].detach().requires_grad_()
        loss = vocab_parallel_linear_cross_entropy(hidden, weight, tokens, vocab_start=25 * rank)
        loss.backward()                                  # weight.grad: this rank's rows
    """
    for name, tensor in (("input", input), ("linear_weight_shard", linear_weight_shard), ("target", target)):
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"`{name}` must be a torch.Tensor; got {type(tensor).__name__}")
    for name, tensor in (("linear_bias", linear_bias), ("weight", weight), ("sample_weight", sample_weight)):
        if tensor is not None and not isinstance(tensor, torch.Tensor):
            raise TypeError(f"`{name}` must be a torch.Tensor or None; got {type(tensor).__name__}")
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError("vocab_parallel_linear_cross_entropy needs an initialized torch.distributed process group")
    if not input.dtype.is_floating_point:
        raise TypeError(f"`input` must be a floating-point tensor; got dtype {input.dtype}")
    if target.dtype.is_floating_point or target.dtype.is_complex or target.dtype == torch.bool:
        raise TypeError(f"`target` must be integer class indices; got dtype {target.dtype}")
    if input.ndim < 1 or linear_weight_shard.ndim != 2 or input.shape[-1] != linear_weight_shard.shape[1]:
        raise ValueError(
            f"`linear_weight_shard` must have shape (V_local, H) with H = input.shape[-1]; got input "
            f"{tuple(input.shape)} and linear_weight_shard {tuple(linear_weight_shard.shape)}"
        )
    check_not_empty("input", input)
    check_shape("target", target, tuple(input.shape[:-1]), rule="the input's without the hidden dimension")
    n_local = linear_weight_shard.shape[0]
    if linear_bias is not None:
        check_shape("linear_bias", linear_bias, (n_local,), rule="one per row of `linear_weight_shard`, V_local")
    if chunk_size is None:
        chunk_size = max(1, CHUNK_ELEMENTS // max(n_local, 1))
    common = _checked_options(
        vocab_start, group, ignore_index, label_smoothing, z_loss, softcap, temperature, reduction
    )
    options = _LinearOptions(**vars(common), chunk_size=check_integer_option("chunk_size", chunk_size, low=1))
    accumulation = _accumulation(input.dtype)
    weight, sample_weight, normalizer = _checked_weights(
        weight, sample_weight, normalizer, n_local, target, reduction, accumulation, input.device
    )
    vocab, vocab_size = _checked_layout(options, n_local, target, input.device)
    fused = fused_linear_backend(input, linear_weight_shard, linear_bias, target)
    if fused is not None:  # the kernels take V as a number
        options = replace(options, fused=fused, vocab_size=int(vocab) if vocab_size is None else vocab_size)
    return_stats = _checked_flag("return_stats", return_stats)
    rows, row_target, sample_weight = sequence_rows(input, target, sample_weight, False, shift, accumulation)
    result = VocabParallelLinearCrossEntropy.apply(
        rows,
        linear_weight_shard,
        linear_bias,
        weight,
        row_target,
        sample_weight,
        normalizer,
        options,
        vocab.to(accumulation),
        return_stats,
    )
    losses = result[0] if return_stats else result
    loss = losses.sum().to(input.dtype) if reduction != "none" else _positions(losses, shift, target.shape, input.dtype)
    if not return_stats:
        return loss
    lse, entropy = (_positions(t, shift, target.shape, input.dtype) for t in result[1:3])
    return loss, LossStats(lse, entropy, _positions(result[3], shift, target.shape, torch.bool))


def _positions(values: torch.Tensor, shift: bool, shape, dtype: torch.dtype) -> torch.Tensor:
    """Per-row ``values`` in ``shape`` and ``dtype``; with ``shift`` the last position (scoring nothing) is 0."""
    if shift:
        values = torch.cat([values, values.new_zeros(1)])
    return values.reshape(shape).to(dtype)
