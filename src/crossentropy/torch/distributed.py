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

from .._validation import check_integer_option, check_number, check_reduction

__all__ = ["vocab_parallel_cross_entropy"]


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
