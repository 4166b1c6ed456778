"""The options of the fused losses, the scaling of a kept gradient, and ``cross_entropy(..., inplace=True)``.

The fused calls of :mod:`crossentropy.torch` run as ``torch.library`` custom operators
(:mod:`crossentropy.torch._ops`, and :mod:`crossentropy.torch.linear` for the linear loss), which
``torch.compile`` keeps in its graph. One call cannot: ``cross_entropy(..., inplace=True)`` writes
the gradient over the logits, and PyTorch registers autograd formulas for functional operators
only. It stays the ``torch.autograd.Function`` here, eager: under ``torch.compile`` it runs
between the compiled graphs (a graph break, which ``fullgraph=True`` refuses). Its forward call
computes the loss, the kernels writing the gradient over the logits, and tells autograd that the
logits changed; its backward scales that gradient by the incoming one in place and hands it
over. Having no logits left to recompute it from, a second backward (``retain_graph=True``) or
one that builds a graph (``create_graph=True``) raises a clear error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .. import kernels
from .._array import in_host_memory, is_transformed_tensor
from .._typing import Reduction
from ..losses import _softmax_cross_entropy

__all__ = ["InplaceSoftmaxCrossEntropy", "SigmoidOptions", "SoftmaxOptions", "is_eager", "scaled"]


@dataclass(frozen=True)
class SoftmaxOptions:
    """Non-tensor options of the softmax loss: those of :func:`crossentropy.softmax_cross_entropy`."""

    axis: int
    ignore_index: int | None
    label_smoothing: float
    z_loss: float
    softcap: float | None
    reduction: Reduction
    temperature: float = 1.0

    def keywords(self) -> dict[str, Any]:
        return {
            "axis": self.axis,
            "ignore_index": self.ignore_index,
            "label_smoothing": self.label_smoothing,
            "z_loss": self.z_loss,
            "softcap": self.softcap,
            "reduction": self.reduction,
            "temperature": self.temperature,
        }

    def compute(
        self,
        logits,
        targets,
        weight,
        sample_weight,
        normalizer=None,
        *,
        with_grad: bool,
        gradient_over_logits: bool = False,
        return_stats: bool = False,
    ):
        """:func:`crossentropy.softmax_cross_entropy` (``with_grad``: ``_with_grad``) with these options,
        taking probability targets as PyTorch does: any real numbers, not checked to lie in [0, 1]."""
        return _softmax_cross_entropy(
            logits,
            targets,
            weight=weight,
            sample_weight=sample_weight,
            normalizer=normalizer,
            return_stats=return_stats,
            with_grad=with_grad,
            gradient_over_logits=gradient_over_logits,
            check_probabilities=False,
            **self.keywords(),
        )


@dataclass(frozen=True)
class SigmoidOptions:
    """Non-tensor options of the sigmoid loss: those of :func:`crossentropy.sigmoid_cross_entropy`."""

    label_smoothing: float
    reduction: Reduction

    def keywords(self) -> dict[str, Any]:
        return {"label_smoothing": self.label_smoothing, "reduction": self.reduction}


def is_eager(*tensors: Tensor) -> bool:
    """Whether ``tensors`` are plain tensors of an eager call, whose values may be read and which may
    be written in place: not the fake or functional tensors of a trace (``torch.compile``,
    ``opcheck``), nor batched or wrapped by a transform (``vmap``, batched gradients)."""
    if torch.compiler.is_compiling():
        return False
    return all(type(t) is Tensor and not is_transformed_tensor(t) for t in tensors)


def scaled(grad: Tensor, grad_output: Tensor) -> Tensor:
    """``grad``, a gradient the kernels computed, times the incoming gradient (broadcastable to it).

    In place in an eager call, and untouched for a factor of 1 (the usual ``loss.backward()``):
    no copy. On a device the factor is not read back to the host: the kernel backend's
    ``scale_unless_one`` reads it on the device. A new tensor when either has a graph
    (``create_graph=True``), when the incoming gradient is batched, and under tracing, where no
    value can be read.
    """
    if grad.requires_grad or grad_output.requires_grad or not is_eager(grad, grad_output):
        return grad * grad_output
    if grad_output.numel() != 1:  # reduction="none": one factor per sample
        return grad.mul_(grad_output)
    if in_host_memory(grad_output):
        if bool(grad_output != 1):
            grad.mul_(grad_output)
        return grad
    # On a device, comparing with 1 here would make the host wait for the device: the backend's
    # kernel reads the factor there instead, and skips the pass over the gradient when it is 1.
    backend = kernels.for_torch(grad)
    if backend is not None and grad.is_contiguous():
        return backend.scale_unless_one(grad, grad_output)
    return grad.mul_(grad_output)


class InplaceSoftmaxCrossEntropy(torch.autograd.Function):
    """:func:`crossentropy.softmax_cross_entropy` on the kernels, the gradient written over the logits.

    ``apply(logits, targets, weight, sample_weight, normalizer, options)``, for a call whose logits
    need a gradient and no other input does; differentiable in ``logits`` only, once.
    """

    @staticmethod
    def forward(ctx, logits, targets, weight, sample_weight, normalizer, options: SoftmaxOptions):
        ctx.options = options
        loss, grad = options.compute(
            logits, targets, weight, sample_weight, normalizer, with_grad=True, gradient_over_logits=True
        )
        ctx.grad = grad.detach()  # the logits' own memory, scaled in place in backward (no N x C copy)
        torch.autograd.graph.increment_version(logits)  # the logits now hold their gradient: autograd must know
        return loss

    @staticmethod
    def backward(ctx, grad_output):
        grad, ctx.grad = ctx.grad, None
        if grad is None or torch.is_grad_enabled():
            raise RuntimeError(
                "cross_entropy(inplace=True) wrote the gradient over the logits, so it cannot be recomputed for a "
                "second backward through the same graph (retain_graph=True) nor differentiated again "
                "(create_graph=True); call the loss again with inplace=False"
            )
        if ctx.options.reduction == "none" and grad_output.ndim:  # one per sample: spread over the classes
            grad_output = grad_output.unsqueeze(ctx.options.axis)
        return scaled(grad, grad_output), None, None, None, None, None
