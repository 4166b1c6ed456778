r"""Cross-entropy of logits sharded by vocabulary across ``torch.distributed`` ranks (tensor parallelism).

Each rank of ``group`` holds the logits of a contiguous slice of the vocabulary,
``[vocab_start, vocab_start + V_local)``, for the same tokens and targets. The loss needs three
numbers per token from the whole vocabulary: the maximum logit, the sum of exponentials and the
target's logit (plus the sum of the logits, for label smoothing). They travel in two
all-reduces of O(N) numbers (a maximum, then one sum of the stacked rest), never the N×V logits;
the backward pass needs no communication at all, since each rank's slice of the gradient,

.. math::

    \frac{\partial \ell_n}{\partial x_{n,c}} = \big(1 + 2 z \operatorname{LSE}_n\big)\, p_{n,c}
        - (1 - \varepsilon) [c = y_n] - \frac{\varepsilon}{V},
    \qquad p_{n,c} = e^{x_{n,c} - \operatorname{LSE}_n},

depends only on its own logits and the global :math:`\operatorname{LSE}_n` kept from the forward
pass. Results equal :func:`crossentropy.torch.cross_entropy` on the gathered logits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from .._array import get_namespace
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

__all__ = ["vocab_parallel_cross_entropy", "vocab_parallel_linear_cross_entropy"]


@dataclass(frozen=True)
class _Options:
    vocab_start: int
    group: Any
    ignore_index: int
    label_smoothing: float
    z_loss: float
    reduction: str


class VocabParallelCrossEntropy(torch.autograd.Function):
    """``apply(local_logits (R, V_local), target (R,), options, denominator)``: per-row losses.

    For ``reduction="mean"`` each row's loss is already divided by ``denominator``; the caller sums.
    """

    @staticmethod
    def forward(ctx, local_logits, target, options: _Options, denominator):
        x = local_logits.to(torch.float64 if local_logits.dtype == torch.float64 else torch.float32)
        n_local = x.shape[1]
        valid = target != options.ignore_index
        local_index = target - options.vocab_start
        owned = valid & (local_index >= 0) & (local_index < n_local)

        row_max = x.max(dim=1).values
        dist.all_reduce(row_max, op=dist.ReduceOp.MAX, group=options.group)
        row_max = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))  # all -inf rows
        shifted = x - row_max[:, None]
        picked = shifted.gather(1, torch.where(owned, local_index, 0)[:, None])[:, 0]
        stats = torch.cat(
            [
                shifted.exp().sum(dim=1),
                torch.where(owned, picked, torch.zeros_like(picked)),
                shifted.sum(dim=1) if options.label_smoothing > 0 else torch.zeros_like(picked),
                torch.tensor([float(n_local)], dtype=x.dtype),
            ]
        )
        dist.all_reduce(stats, op=dist.ReduceOp.SUM, group=options.group)
        rows = x.shape[0]
        sum_exp, target_shifted, shifted_total = stats[:rows], stats[rows : 2 * rows], stats[2 * rows : 3 * rows]
        vocab = stats[-1]
        log_sum = torch.log(sum_exp)
        lse = row_max + log_sum
        eps = options.label_smoothing
        losses = (1 - eps) * (log_sum - target_shifted)
        if eps > 0:
            losses = losses + eps * (log_sum - shifted_total / vocab)
        if options.z_loss > 0:
            losses = losses + options.z_loss * lse**2
        losses = torch.where(valid, losses, torch.zeros_like(losses))

        ctx.options, ctx.vocab = options, vocab
        ctx.save_for_backward(local_logits, lse, owned, local_index, valid, denominator)
        return losses / denominator if options.reduction == "mean" else losses

    @staticmethod
    def backward(ctx, grad_losses):
        if torch.is_grad_enabled():
            raise RuntimeError(
                "vocab_parallel_cross_entropy cannot be differentiated twice (create_graph=True): its gradient "
                "depends on the log-sum-exp of the whole vocabulary, which the backward pass does not all-reduce "
                "again; use cross_entropy on gathered logits for second derivatives"
            )
        local_logits, lse, owned, local_index, valid, denominator = ctx.saved_tensors
        options = ctx.options
        x = local_logits.to(lse.dtype)
        probs = torch.exp(x - lse[:, None])
        coefficient = 1 + 2 * options.z_loss * lse if options.z_loss > 0 else torch.ones_like(lse)
        grad = coefficient[:, None] * probs
        if options.label_smoothing > 0:
            grad -= options.label_smoothing / ctx.vocab
        rows = torch.arange(x.shape[0])
        grad[rows[owned], local_index[owned]] -= 1 - options.label_smoothing
        factor = grad_losses.to(lse.dtype) * valid
        if options.reduction == "mean":
            factor = factor / denominator
        grad *= factor[:, None]
        return grad.to(local_logits.dtype), None, None, None


def vocab_parallel_cross_entropy(
    local_logits: torch.Tensor,
    target: torch.Tensor,
    *,
    vocab_start: int,
    group: Any = None,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    reduction: str = "mean",
    normalizer: float | torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Softmax cross-entropy of vocabulary-sharded logits: every rank of ``group`` holds a slice.

    .. math::

        \ell_n = (1 - \varepsilon)\,(\operatorname{LSE}_n - x_{n,y_n})
                 + \varepsilon \Big(\operatorname{LSE}_n - \frac{1}{V}\sum_c x_{n,c}\Big)
                 + z \operatorname{LSE}_n^2,

    over the whole vocabulary of size :math:`V = \sum_{\text{ranks}} V_\text{local}`, with
    PyTorch's label smoothing (normalized by the global :math:`V`). Two all-reduces of O(N)
    numbers in the forward pass, none in the backward pass; the same loss and gradient as
    :func:`crossentropy.torch.cross_entropy` on the gathered logits. Differentiable once: a
    backward with ``create_graph=True`` raises, since the second derivative would need the
    all-reduced log-sum-exp differentiated across ranks.

    Parameters
    ----------
    local_logits : Tensor of shape (..., V_local)
        This rank's slice of the logits, the vocabulary on the last dimension (as in
        Megatron-style tensor parallelism; ranks may hold slices of different sizes).
    target : integer Tensor of shape (...)
        Global class indices in ``[0, V)`` (the same on every rank of ``group``), or ``ignore_index``.
    vocab_start : int
        The global index of this rank's first class.
    group : ProcessGroup, optional
        The tensor-parallel group (default: the whole world).
    ignore_index, label_smoothing, z_loss
        As :func:`crossentropy.torch.cross_entropy`.
    reduction : {"mean", "sum", "none"}, default "mean"
        ``"mean"`` divides by the number of targets not ignored, or by ``normalizer``.
    normalizer : float or 0-d Tensor, optional
        The mean's denominator instead of this process's count of targets, e.g. the token count
        summed over data-parallel ranks, so that their gradients add up to the global mean.
        Only with ``reduction="mean"``.

    Returns
    -------
    Tensor
        0-d for ``"mean"``/``"sum"``, ``target``'s shape for ``"none"``, in float32 (float64
        for float64 logits); identical on every rank of ``group``.
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
    if target.dtype.is_floating_point or target.dtype == torch.bool:
        raise TypeError(f"`target` must be integer class indices; got dtype {target.dtype}")
    reduction = check_reduction(reduction)
    if normalizer is not None and reduction != "mean":
        raise ValueError(f"`normalizer` replaces the mean's denominator: it needs reduction='mean'; got {reduction!r}")
    options = _Options(
        vocab_start=check_integer_option("vocab_start", vocab_start, low=0),
        group=group,
        ignore_index=check_integer_option("ignore_index", ignore_index),
        label_smoothing=check_number("label_smoothing", label_smoothing, low=0.0, high=1.0),
        z_loss=check_number("z_loss", z_loss, low=0.0),
        reduction=reduction,
    )
    rows = local_logits.reshape(-1, local_logits.shape[-1])
    flat_target = target.reshape(-1)
    accumulation = torch.float64 if local_logits.dtype == torch.float64 else torch.float32
    if normalizer is None:
        count = (flat_target != options.ignore_index).sum().to(accumulation)
        denominator = torch.clamp(count, min=1)
    else:
        denominator = torch.as_tensor(normalizer, dtype=accumulation)
        if denominator.ndim != 0 or not bool(denominator > 0):
            raise ValueError(f"`normalizer` must be a positive number; got {normalizer!r}")
    losses = VocabParallelCrossEntropy.apply(rows, flat_target, options, denominator)
    if reduction == "none":
        return losses.reshape(target.shape)
    return losses.sum()


# --------------------------------------------------------------------------------------------
# The output projection sharded by vocabulary: vocab_parallel_linear_cross_entropy
# --------------------------------------------------------------------------------------------

# Elements of one chunk of logits when ``chunk_size`` is not given: 2^24 float32 = 64 MiB.
_CHUNK_ELEMENTS = 2**24


@dataclass(frozen=True)
class _LinearOptions:
    vocab_start: int
    group: Any
    ignore_index: int
    label_smoothing: float
    z_loss: float
    softcap: float | None
    reduction: str
    chunk_size: int


def _accumulation(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _chunk_logits(rows, weight_acc, bias_acc, softcap):
    """The chunk's logits ``rows @ W.T + b`` in the accumulation dtype, and, soft-capped,
    ``u = c tanh(x / c)`` with ``tanh(x / c)`` (for the derivative; None without a cap)."""
    logits = torch.mm(rows, weight_acc.T) if bias_acc is None else torch.addmm(bias_acc, rows, weight_acc.T)
    if softcap is None:
        return logits, None
    squashed = torch.tanh(logits / softcap)
    return softcap * squashed, squashed


class VocabParallelLinearCrossEntropy(torch.autograd.Function):
    """``apply(input (N, H), weight_shard (V_local, H), bias, class_weight, target (N,), sample_weight,
    options, vocab)``: per-row losses times their factor (``s_n / D`` for ``"mean"``, ``s_n`` otherwise),
    in the accumulation dtype; the caller sums them for ``"mean"`` and ``"sum"``.

    ``vocab`` is the global vocabulary size (a 0-d tensor in the accumulation dtype).
    """

    @staticmethod
    def forward(
        ctx, input, weight_shard, bias, class_weight, target, sample_weight, normalizer, options: _LinearOptions, vocab
    ):
        dtype = _accumulation(input.dtype)
        n_rows, n_local = input.shape[0], weight_shard.shape[0]
        weight_acc = weight_shard.to(dtype)
        bias_acc = None if bias is None else bias.to(dtype)
        class_acc = None if class_weight is None else class_weight.to(dtype)
        eps, cap = options.label_smoothing, options.softcap

        valid = target != options.ignore_index
        local_index = target - options.vocab_start
        owned = valid & (local_index >= 0) & (local_index < n_local)
        safe_index = torch.where(owned, local_index, torch.zeros_like(local_index))

        local_max = input.new_empty(n_rows, dtype=dtype)
        local_sum = input.new_empty(n_rows, dtype=dtype)
        target_logit = input.new_zeros(n_rows, dtype=dtype)
        smoothing_sum = input.new_zeros(n_rows, dtype=dtype) if eps > 0 else None
        for start in range(0, n_rows, options.chunk_size):
            stop = min(start + options.chunk_size, n_rows)
            u, _ = _chunk_logits(input[start:stop].to(dtype), weight_acc, bias_acc, cap)
            row_max = u.max(dim=1).values
            row_max = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))
            local_max[start:stop] = row_max
            local_sum[start:stop] = torch.exp(u - row_max[:, None]).sum(dim=1)
            picked = u.gather(1, safe_index[start:stop, None])[:, 0]
            target_logit[start:stop] = torch.where(owned[start:stop], picked, torch.zeros_like(picked))
            if smoothing_sum is not None:  # sum_c w_c u_c over this rank's classes
                smoothing_sum[start:stop] = u.sum(dim=1) if class_acc is None else u @ class_acc

        # Communication: the maximum, then one sum of the stacked per-row statistics.
        global_max = local_max.clone()
        dist.all_reduce(global_max, op=dist.ReduceOp.MAX, group=options.group)
        pieces = [local_sum * torch.exp(local_max - global_max), target_logit]
        if smoothing_sum is not None:
            pieces.append(smoothing_sum)
        if class_acc is not None:  # omega_n = w_{y_n}, held by the rank that owns y_n
            pieces.append(torch.where(owned, class_acc[safe_index], torch.zeros_like(target_logit)))
            if eps > 0:
                pieces.append(class_acc.sum()[None])
        stats = torch.cat(pieces)
        dist.all_reduce(stats, op=dist.ReduceOp.SUM, group=options.group)
        sum_exp, target_logit = stats[:n_rows], stats[n_rows : 2 * n_rows]
        smoothing_sum = stats[2 * n_rows : 3 * n_rows] if eps > 0 else None
        if class_acc is None:
            omega = valid.to(dtype)
            class_total = vocab
        else:
            offset = 3 * n_rows if eps > 0 else 2 * n_rows
            omega = stats[offset : offset + n_rows]
            class_total = stats[-1] if eps > 0 else None

        lse = global_max + torch.log(sum_exp)
        losses = (1 - eps) * omega * (lse - target_logit)
        if eps > 0:
            losses = losses + eps / vocab * (class_total * lse - smoothing_sum)
        if options.z_loss > 0:
            losses = losses + options.z_loss * omega * lse**2
        losses = torch.where(valid, losses, torch.zeros_like(losses))

        scale = valid.to(dtype) if sample_weight is None else torch.where(valid, sample_weight.to(dtype), 0)
        if options.reduction == "mean":
            denominator = (scale * omega).sum() if normalizer is None else normalizer.to(dtype)
            empty = denominator == 0
            scale = torch.where(empty, torch.zeros_like(scale), scale / torch.where(empty, 1, denominator))

        # kappa_n = sum_c a_{n,c} + 2 z omega_n LSE_n: the coefficient of p in the gradient.
        kappa = (1 - eps) * omega + (eps * class_total / vocab if eps > 0 else 0) + 2 * options.z_loss * omega * lse
        ctx.options = options
        ctx.save_for_backward(input, weight_shard, bias, class_weight, target, lse, kappa, omega, scale, vocab)
        return losses * scale

    @staticmethod
    def backward(ctx, grad_losses):
        if torch.is_grad_enabled():
            raise RuntimeError(
                "vocab_parallel_linear_cross_entropy cannot be differentiated twice (create_graph=True): its "
                "gradient depends on the log-sum-exp of the whole vocabulary, which the backward pass does not "
                "all-reduce again; use linear_cross_entropy on the gathered weight for second derivatives"
            )
        input, weight_shard, bias, class_weight, target, lse, kappa, omega, scale, vocab = ctx.saved_tensors
        options = ctx.options
        need_input, need_weight, need_bias = ctx.needs_input_grad[:3]
        if not (need_input or need_weight or need_bias):
            return (None,) * 9
        dtype = lse.dtype
        n_rows, n_local = input.shape[0], weight_shard.shape[0]
        eps, cap = options.label_smoothing, options.softcap
        weight_acc = weight_shard.to(dtype)
        bias_acc = None if bias is None else bias.to(dtype)
        smoothing = None
        if eps > 0:
            smoothing = (
                eps
                / vocab
                * (
                    torch.ones(n_local, dtype=dtype, device=lse.device)
                    if class_weight is None
                    else class_weight.to(dtype)
                )
            )
        local_index = target - options.vocab_start
        owned = (target != options.ignore_index) & (local_index >= 0) & (local_index < n_local)
        safe_index = torch.where(owned, local_index, torch.zeros_like(local_index))
        target_coefficient = torch.where(owned, (1 - eps) * omega, torch.zeros_like(omega))
        factor = grad_losses.to(dtype) * scale

        grad_input = input.new_empty(input.shape, dtype=dtype) if need_input else None
        grad_weight = input.new_zeros(weight_shard.shape, dtype=dtype) if need_weight else None
        grad_bias = input.new_zeros(n_local, dtype=dtype) if need_bias and bias is not None else None
        for start in range(0, n_rows, options.chunk_size):
            stop = min(start + options.chunk_size, n_rows)
            rows = input[start:stop].to(dtype)
            u, squashed = _chunk_logits(rows, weight_acc, bias_acc, cap)
            grad = torch.exp(u - lse[start:stop, None]).mul_(kappa[start:stop, None])
            if smoothing is not None:
                grad -= smoothing
            grad.scatter_add_(1, safe_index[start:stop, None], -target_coefficient[start:stop, None])
            grad *= factor[start:stop, None]
            if squashed is not None:
                grad *= 1 - squashed**2
            if grad_input is not None:
                torch.mm(grad, weight_acc, out=grad_input[start:stop])
            if grad_weight is not None:
                grad_weight.addmm_(grad.T, rows)
            if grad_bias is not None:
                grad_bias += grad.sum(dim=0)
        if grad_input is not None:  # every rank holds the part of the input's gradient from its classes
            dist.all_reduce(grad_input, op=dist.ReduceOp.SUM, group=options.group)
        return (
            None if grad_input is None else grad_input.to(input.dtype),
            None if grad_weight is None else grad_weight.to(weight_shard.dtype),
            None if grad_bias is None else grad_bias.to(bias.dtype),
            *(None,) * 6,
        )


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
                "`vocab_start` and `linear_weight_shard` of the ranks must tile the vocabulary [0, V) with "
                "contiguous, non-empty slices; got (vocab_start, V_local) per rank "
                f"{shards}"
            )
        end = start + size
    return vocab, end


def vocab_parallel_linear_cross_entropy(
    input: torch.Tensor,
    linear_weight_shard: torch.Tensor,
    target: torch.Tensor,
    *,
    vocab_start: int,
    group: Any = None,
    linear_bias: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
    reduction: str = "mean",
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
    sample_weight: torch.Tensor | None = None,
    normalizer: float | torch.Tensor | None = None,
    chunk_size: int | None = None,
) -> torch.Tensor:
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
    rows. The forward pass keeps per row the local maximum, sum of exponentials, target logit
    and (label smoothing) :math:`\sum_c w_c u_{n,c}` of this rank's classes, and combines them
    across ranks; the backward pass recomputes each chunk's logits and forms this rank's slice
    of their gradient from the global log-sum-exp kept from the forward pass,

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
    (the shard layout), an all-reduce (maximum) of N numbers and an all-reduce (sum) of 2N to 4N
    numbers (plus one); per backward call one all-reduce (sum) of the input's gradient, N×H
    numbers (none when ``input`` does not require a gradient). Never the N×V logits.

    Parameters
    ----------
    input : Tensor of shape (..., H)
        Hidden states, e.g. (batch, sequence, hidden); the same on every rank of ``group``.
    linear_weight_shard : Tensor of shape (V_local, H)
        This rank's rows of the output projection, the global classes
        ``[vocab_start, vocab_start + V_local)``. The ranks' slices must tile ``[0, V)``; their
        sizes may differ.
    target : integer Tensor of shape (...)
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
    ignore_index, label_smoothing, z_loss, softcap
        As :func:`crossentropy.torch.cross_entropy`; the label smoothing spreads
        :math:`\varepsilon / V` over the global vocabulary and the z-loss squares the global
        log-sum-exp.
    sample_weight : Tensor of ``target``'s shape, optional
        Per-token weights :math:`s_n \ge 0`, also in the mean's denominator. Not differentiated.
    normalizer : float or 0-d Tensor, optional
        The mean's denominator instead of :math:`\sum_n s_n \omega_n`, e.g. the token count
        summed over data-parallel ranks, so that their gradients add up to the global mean.
        Only with ``reduction="mean"``.
    chunk_size : int, optional
        Tokens per chunk; by default as many as make 64 MiB of float32 logits of this rank's
        classes. Peak memory is about two chunks of logits plus the gradients of ``input`` and
        of the shard, accumulated in float32 (float64 for float64 input) and cast to the
        tensors' dtypes at the end.

    Returns
    -------
    Tensor
        0-d for ``"mean"``/``"sum"``, ``target``'s shape for ``"none"``, in the input's dtype;
        identical on every rank of ``group``.

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
    for name, tensor in (("linear_bias", linear_bias), ("weight", weight)):
        if tensor is not None:
            check_shape(name, tensor, (n_local,), rule="one per row of `linear_weight_shard`, V_local")
    if sample_weight is not None:
        check_shape("sample_weight", sample_weight, tuple(target.shape), rule="one weight per token")
    reduction = check_reduction(reduction)
    if normalizer is not None and reduction != "mean":
        raise ValueError(f"`normalizer` replaces the mean's denominator: it needs reduction='mean'; got {reduction!r}")
    if chunk_size is None:
        chunk_size = max(1, _CHUNK_ELEMENTS // max(n_local, 1))
    options = _LinearOptions(
        vocab_start=check_integer_option("vocab_start", vocab_start, low=0),
        group=group,
        ignore_index=check_integer_option("ignore_index", ignore_index),
        label_smoothing=check_number("label_smoothing", label_smoothing, low=0.0, high=1.0),
        z_loss=check_number("z_loss", z_loss, low=0.0),
        softcap=None if softcap is None else check_number("softcap", softcap, low=0.0, low_open=True),
        reduction=reduction,
        chunk_size=check_integer_option("chunk_size", chunk_size, low=1),
    )
    accumulation = _accumulation(input.dtype)
    if weight is not None:
        weight = weight.to(accumulation)
        check_nonnegative("weight", weight, get_namespace(weight))
    if sample_weight is not None:
        if sample_weight.dtype.is_complex:
            raise TypeError(f"`sample_weight` must be real numbers; got dtype {sample_weight.dtype}")
        sample_weight = sample_weight.to(accumulation).reshape(-1)
        check_nonnegative("sample_weight", sample_weight, get_namespace(sample_weight))
    if normalizer is not None:
        given, normalizer = normalizer, torch.as_tensor(normalizer, dtype=accumulation, device=input.device)
        if normalizer.ndim != 0 or (checks_values(normalizer) and not bool(normalizer > 0)):
            raise ValueError(f"`normalizer` must be a positive number; got {given!r}")

    check = checks_values(target)
    vocab, vocab_size = _shard_layout(options.vocab_start, n_local, group, input.device, check)
    if check:
        check_class_indices("target", target, get_namespace(target), vocab_size, options.ignore_index)
    rows = input.reshape(-1, input.shape[-1])
    losses = VocabParallelLinearCrossEntropy.apply(
        rows,
        linear_weight_shard,
        linear_bias,
        weight,
        target.reshape(-1),
        sample_weight,
        normalizer,
        options,
        vocab.to(accumulation),
    )
    if reduction == "none":
        return losses.reshape(target.shape).to(input.dtype)
    return losses.sum().to(input.dtype)
