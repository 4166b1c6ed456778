"""Autograd functions that run the fused CPU kernels inside PyTorch's autograd.

The kernels compute the loss and its gradient in one pass, in the forward call; the gradient is
kept until ``backward``, which scales it by the incoming gradient in place and hands it over
(no copy, and no second pass over the logits). A second backward through the same graph
(``retain_graph=True``) recomputes it from the saved inputs.

A backward that builds a graph itself (``create_graph=True``: gradient penalties, Hessian-vector
products, ``gradgradcheck``) returns the gradient from its closed form in PyTorch operations
instead, computed from the saved logits, so autograd differentiates it again; the
precomputed one is dropped.

The functions are called only for plain CPU tensors that autograd tracks; everything else goes
through :mod:`crossentropy`'s own functions (the kernels without autograd, or the generic
array-API path, which autograd differentiates): other devices, ``torch.func`` transforms and
forward-mode AD (see :func:`crossentropy.kernels.accepts_torch`).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch

from .. import kernels
from .._array import is_transformed_tensor
from ..losses import (
    _softmax_cross_entropy,
    sigmoid_cross_entropy,
    sigmoid_cross_entropy_with_grad,
)

__all__ = ["FusedSigmoidCrossEntropy", "FusedSoftmaxCrossEntropy", "SigmoidOptions", "SoftmaxOptions"]


@dataclass(frozen=True)
class SoftmaxOptions:
    """Non-tensor options of :class:`FusedSoftmaxCrossEntropy`: those of :func:`crossentropy.softmax_cross_entropy`."""

    axis: int
    ignore_index: int | None
    label_smoothing: float
    z_loss: float
    softcap: float | None
    reduction: str
    inplace: bool = False

    def keywords(self) -> dict[str, Any]:
        return {
            "axis": self.axis,
            "ignore_index": self.ignore_index,
            "label_smoothing": self.label_smoothing,
            "z_loss": self.z_loss,
            "softcap": self.softcap,
            "reduction": self.reduction,
        }

    def compute(self, logits, targets, weight, sample_weight, *, with_grad: bool, gradient_over_logits: bool = False):
        """:func:`crossentropy.softmax_cross_entropy` (``with_grad``: ``_with_grad``) with these options,
        taking probability targets as PyTorch does: any real numbers, not checked to lie in [0, 1]."""
        return _softmax_cross_entropy(
            logits,
            targets,
            weight=weight,
            sample_weight=sample_weight,
            with_grad=with_grad,
            gradient_over_logits=gradient_over_logits,
            check_probabilities=False,
            **self.keywords(),
        )


@dataclass(frozen=True)
class SigmoidOptions:
    """Non-tensor options of :class:`FusedSigmoidCrossEntropy`: those of :func:`crossentropy.sigmoid_cross_entropy`."""

    label_smoothing: float
    reduction: str

    def keywords(self) -> dict[str, Any]:
        return {"label_smoothing": self.label_smoothing, "reduction": self.reduction}


def _scaled(grad: torch.Tensor, grad_output: torch.Tensor) -> torch.Tensor:
    """``grad`` times the incoming gradient (broadcastable to it): in place for the kernels' own
    gradient, untouched for a factor of 1; a new tensor when either has a graph, or when the
    incoming gradient is batched (``vmap``, and gradcheck's batched-gradient check)."""
    if grad.requires_grad or grad_output.requires_grad or is_transformed_tensor(grad_output):
        return grad * grad_output
    if grad_output.numel() != 1 or bool(grad_output != 1):
        grad.mul_(grad_output)
    return grad


def _closed_form_if_graph() -> contextlib.AbstractContextManager:
    """Within ``backward``: the generic closed form when it builds a graph (``create_graph=True``),
    which autograd can differentiate again; else the kernels again, which give the very gradient
    of the first backward (a second backward with ``retain_graph=True`` repeats it exactly)."""
    return kernels.disabled() if torch.is_grad_enabled() else contextlib.nullcontext()


class FusedSoftmaxCrossEntropy(torch.autograd.Function):
    """:func:`crossentropy.softmax_cross_entropy` with its gradient from the fused kernels.

    ``apply(logits, targets, weight, sample_weight, options)``; differentiable in ``logits``
    only (the callers send anything else that autograd tracks to the generic path).
    """

    @staticmethod
    def forward(ctx, logits, targets, weight, sample_weight, options: SoftmaxOptions):
        ctx.options = options
        ctx.grad = None
        if not ctx.needs_input_grad[0]:
            return options.compute(logits, targets, weight, sample_weight, with_grad=False)
        loss, ctx.grad = options.compute(
            logits, targets, weight, sample_weight, with_grad=True, gradient_over_logits=options.inplace
        )
        if options.inplace:  # the logits now hold their gradient: autograd must know they changed
            torch.autograd.graph.increment_version(logits)
        else:
            ctx.save_for_backward(logits, targets, weight, sample_weight)
        return loss

    @staticmethod
    def backward(ctx, grad_output):
        grad, ctx.grad = ctx.grad, None
        if ctx.options.inplace and (grad is None or torch.is_grad_enabled()):
            raise RuntimeError(
                "cross_entropy(inplace=True) wrote the gradient over the logits, so it cannot be recomputed for a "
                "second backward through the same graph (retain_graph=True) nor differentiated again "
                "(create_graph=True); call the loss again with inplace=False"
            )
        if grad is None or torch.is_grad_enabled():  # a second backward, or one that builds a graph
            logits, targets, weight, sample_weight = ctx.saved_tensors
            with _closed_form_if_graph():
                _, grad = ctx.options.compute(logits, targets, weight, sample_weight, with_grad=True)
        if ctx.options.reduction == "none" and grad_output.ndim:  # one per sample: spread over the classes
            grad_output = grad_output.unsqueeze(ctx.options.axis)
        return _scaled(grad, grad_output), None, None, None, None


class FusedSigmoidCrossEntropy(torch.autograd.Function):
    """:func:`crossentropy.sigmoid_cross_entropy` with its gradient from the fused kernel.

    ``apply(logits, targets, weight, pos_weight, sample_weight, options)``; differentiable in
    ``logits`` only.
    """

    @staticmethod
    def forward(ctx, logits, targets, weight, pos_weight, sample_weight, options: SigmoidOptions):
        tensors = {"weight": weight, "pos_weight": pos_weight, "sample_weight": sample_weight}
        ctx.options = options
        ctx.grad = None
        if not ctx.needs_input_grad[0]:
            return sigmoid_cross_entropy(logits, targets, **tensors, **options.keywords())
        loss, ctx.grad = sigmoid_cross_entropy_with_grad(logits, targets, **tensors, **options.keywords())
        ctx.save_for_backward(logits, targets, weight, pos_weight, sample_weight)
        return loss

    @staticmethod
    def backward(ctx, grad_output):
        grad, ctx.grad = ctx.grad, None
        if grad is None or torch.is_grad_enabled():  # a second backward, or one that builds a graph
            logits, targets, weight, pos_weight, sample_weight = ctx.saved_tensors
            tensors = {"weight": weight, "pos_weight": pos_weight, "sample_weight": sample_weight}
            with _closed_form_if_graph():
                _, grad = sigmoid_cross_entropy_with_grad(logits, targets, **tensors, **ctx.options.keywords())
        return _scaled(grad, grad_output), None, None, None, None, None
