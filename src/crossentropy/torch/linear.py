r"""Linear layer and cross-entropy in one, for large vocabularies: the N×V logits never exist at once.

:func:`linear_cross_entropy` computes the cross-entropy of the logits ``input @ weight.T + bias``
in chunks of rows (tokens). On the CPU, for each chunk the logits are formed in a reused float32
buffer, the fused kernel turns them into losses and writes their gradient over them, and the
gradients of ``input``, ``weight`` and ``bias`` are accumulated from it in float32 before the
next chunk overwrites it. Peak memory is one chunk of logits (two with a soft-cap, whose
derivative needs the logits) plus the float32 gradient of ``weight``, instead of the N×V
logits and their gradient.

With ``reduction="mean"`` or ``"sum"`` the gradients are computed during the forward call and
scaled by the incoming scalar in ``backward``; with ``reduction="none"`` the per-row incoming
gradient is known only in ``backward``, which recomputes the logits chunk by chunk. Other devices
run the same chunks in plain PyTorch under activation checkpointing (the logits of a chunk are
recomputed in the backward pass instead of kept).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.checkpoint import checkpoint

from .. import kernels
from .._array import get_namespace, is_transformed_tensor
from .._inputs import reduce_loss
from .._validation import (
    check_class_indices,
    check_integer_option,
    check_not_empty,
    check_number,
    check_reduction,
)
from ..losses import softmax_cross_entropy

__all__ = ["linear_cross_entropy"]

# Elements of one chunk of logits when ``chunk_size`` is not given: 2^24 float32 = 64 MiB.
_CHUNK_ELEMENTS = 2**24


@dataclass(frozen=True)
class LinearOptions:
    """Non-tensor options of :class:`LinearCrossEntropyFunction`."""

    ignore_index: int
    label_smoothing: float
    z_loss: float
    softcap: float | None
    reduction: str
    chunk_size: int


@dataclass
class _Gradients:
    """Gradients of the input, the weight and the bias in the accumulation dtype (None where not asked for)."""

    input: torch.Tensor | None
    weight: torch.Tensor | None
    bias: torch.Tensor | None

    def scaled(self, factor: torch.Tensor) -> _Gradients:
        """The gradients times ``factor``: in place, or new tensors when ``factor`` is batched by ``vmap``."""
        if is_transformed_tensor(factor):
            return _Gradients(*(None if g is None else g * factor for g in (self.input, self.weight, self.bias)))
        if bool(factor != 1):
            for gradient in (self.input, self.weight, self.bias):
                if gradient is not None:
                    gradient.mul_(factor)
        return self


def _chunked(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    target: torch.Tensor,
    options: LinearOptions,
    *,
    row_factor: torch.Tensor | None,
    needs: tuple[bool, bool, bool],
) -> tuple[torch.Tensor, _Gradients]:
    """Per-row losses and, when ``row_factor`` is given, the gradients of ``sum(row_factor * loss)``
    that ``needs`` asks for, one chunk of rows at a time on the kernels; everything in float32
    (float64 for float64 input)."""
    n_rows, n_classes = input.shape[0], weight.shape[0]
    dtype = _accumulation_dtype(input)
    weight_acc, bias_acc = weight.to(dtype), None if bias is None else bias.to(dtype)
    valid = target != options.ignore_index
    safe_target = torch.where(valid, target, torch.zeros_like(target))
    row_weight = valid.to(dtype)
    store = row_factor is not None
    grads = _Gradients(
        torch.empty(input.shape, dtype=dtype) if store and needs[0] else None,
        torch.zeros(weight.shape, dtype=dtype) if store and needs[1] else None,
        torch.zeros(n_classes, dtype=dtype) if store and needs[2] and bias is not None else None,
    )
    chunk = min(options.chunk_size, n_rows)
    logits_buffer = torch.empty((chunk, n_classes), dtype=dtype)
    # The kernel writes the gradient over the logits, unless the soft-cap's derivative needs them.
    grad_buffer = torch.empty((chunk, n_classes), dtype=dtype) if store and options.softcap is not None else None
    losses = torch.empty(n_rows, dtype=dtype)
    for start in range(0, n_rows, chunk):
        stop = min(start + chunk, n_rows)
        rows = input[start:stop].to(dtype)
        logits = logits_buffer[: stop - start]
        if bias_acc is None:
            torch.mm(rows, weight_acc.T, out=logits)
        else:
            torch.addmm(bias_acc, rows, weight_acc.T, out=logits)
        losses[start:stop], dlogits = kernels.softmax_cross_entropy_rows(
            logits,
            safe_target[start:stop],
            weight=None,
            row_weight=row_weight[start:stop],
            grad_factor=row_factor[start:stop].to(dtype) if store else None,
            smoothing=options.label_smoothing,
            z=options.z_loss,
            cap=options.softcap,
            out=(logits if grad_buffer is None else grad_buffer[: stop - start]) if store else None,
        )
        if grads.input is not None:
            torch.mm(dlogits, weight_acc, out=grads.input[start:stop])
        if grads.weight is not None:
            grads.weight.addmm_(dlogits.T, rows)
        if grads.bias is not None:
            grads.bias += dlogits.sum(dim=0)
    return losses, grads


def _accumulation_dtype(input: torch.Tensor) -> torch.dtype:
    """float32, or float64 for float64 input."""
    return torch.float64 if input.dtype == torch.float64 else torch.float32


def _row_factor(target: torch.Tensor, options: LinearOptions, count: int, grad_output: torch.Tensor | None):
    """Per-row factor of the gradient: "not ignored", over the mean's count, times the incoming gradient."""
    factor = (target != options.ignore_index).to(torch.float64)
    if options.reduction == "mean":
        factor = factor / max(count, 1)
    if grad_output is not None:
        factor = factor * grad_output.to(torch.float64)
    return factor.contiguous()


class LinearCrossEntropyFunction(torch.autograd.Function):
    """``apply(input (N, H), weight (V, H), bias (V,) or None, target (N,), options)`` on the CPU kernels."""

    @staticmethod
    def forward(ctx, input, weight, bias, target, options: LinearOptions):
        ctx.options = options
        ctx.dtypes = (input.dtype, weight.dtype, None if bias is None else bias.dtype)
        ctx.needs = tuple(ctx.needs_input_grad[:3])
        ctx.count = int((target != options.ignore_index).sum())
        ctx.grads = None
        eager = any(ctx.needs) and options.reduction != "none"
        row_factor = _row_factor(target, options, ctx.count, None) if eager else None
        losses, grads = _chunked(input, weight, bias, target, options, row_factor=row_factor, needs=ctx.needs)
        if eager:
            ctx.grads = grads
        ctx.save_for_backward(input, weight, bias, target)
        return reduce_loss(losses, ctx.count, options.reduction, get_namespace(losses), input.dtype)

    @staticmethod
    def backward(ctx, grad_output):
        grads, ctx.grads = ctx.grads, None
        if torch.is_grad_enabled() or is_transformed_tensor(grad_output):
            return (*_gradients_by_autograd(ctx, grad_output), None, None)
        if grads is not None:
            grads = grads.scaled(grad_output)
        else:  # reduction="none", or a second backward: recompute with the incoming gradient in the factors
            input, weight, bias, target = ctx.saved_tensors
            factor = _row_factor(target, ctx.options, ctx.count, grad_output)
            _, grads = _chunked(input, weight, bias, target, ctx.options, row_factor=factor, needs=ctx.needs)
        gradients = (grads.input, grads.weight, grads.bias)
        cast = [None if g is None else g.to(dtype) for g, dtype in zip(gradients, ctx.dtypes, strict=True)]
        return (*cast, None, None)


def _gradients_by_autograd(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
    """The gradients of ``input``, ``weight`` and ``bias`` by autograd through plain PyTorch chunks.

    For a backward that builds a graph (``create_graph=True``), whose gradients autograd must
    differentiate again, and for a batched incoming gradient (``vmap``, gradcheck's batched
    gradients), which the kernels cannot read: the loss is formed again from the saved tensors
    in chunks that keep their logits, and differentiated.
    """
    create_graph = torch.is_grad_enabled()
    input, weight, bias, target = ctx.saved_tensors
    wanted = [t for t, need in zip((input, weight, bias), ctx.needs, strict=True) if need]
    with torch.enable_grad(), kernels.disabled():
        loss = _pytorch_chunks(input, weight, bias, target, ctx.options, recompute=False)
        found = iter(torch.autograd.grad(loss, wanted, grad_output, create_graph=create_graph))
    return tuple(next(found) if need else None for need in ctx.needs)


@torch.compiler.disable  # NumPy and Numba inside: runs eagerly between compiled graphs
def _fused(*args: Any) -> torch.Tensor:
    return LinearCrossEntropyFunction.apply(*args)


def _pytorch_chunks(input, weight, bias, target, options: LinearOptions, *, recompute: bool = True) -> torch.Tensor:
    """Plain PyTorch (any device): the loss from chunks of rows, differentiable by autograd.

    With ``recompute`` the chunks run under activation checkpointing (their logits are recomputed
    in the backward pass); without it, or under ``torch.func`` transforms (which refuse the
    saved-tensor hooks of checkpointing), they keep their logits for the backward pass.
    """

    def chunk_losses(rows, weight, bias, rows_target):
        dtype = _accumulation_dtype(rows)
        logits = torch.nn.functional.linear(rows.to(dtype), weight.to(dtype), None if bias is None else bias.to(dtype))
        return softmax_cross_entropy(
            logits,
            rows_target,
            ignore_index=options.ignore_index,
            label_smoothing=options.label_smoothing,
            z_loss=options.z_loss,
            softcap=options.softcap,
            reduction="none",
        )

    size = options.chunk_size
    chunks = [(input[i : i + size], weight, bias, target[i : i + size]) for i in range(0, input.shape[0], size)]
    if recompute and not torch._C._are_functorch_transforms_active():
        pieces = [checkpoint(chunk_losses, *chunk, use_reentrant=False) for chunk in chunks]
    else:
        pieces = [chunk_losses(*chunk) for chunk in chunks]
    count = (target != options.ignore_index).sum()  # a tensor: under vmap the count differs by batch entry
    losses = torch.cat(pieces)
    return reduce_loss(losses, count, options.reduction, get_namespace(losses), input.dtype)


def linear_cross_entropy(
    input: torch.Tensor,
    weight: torch.Tensor,
    target: torch.Tensor,
    *,
    bias: torch.Tensor | None = None,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
    reduction: str = "mean",
    chunk_size: int | None = None,
) -> torch.Tensor:
    r"""Cross-entropy of ``input @ weight.T + bias`` without materializing the N×V logits.

    Equal to ``crossentropy.torch.cross_entropy(input @ weight.T + bias, target, ...)``:

    .. math::

        \ell_n = -\sum_c a_{n,c} \log \operatorname{softmax}(u_n)_c + z \operatorname{LSE}(u_n)^2,
        \qquad u_n = \operatorname{cap}(W x_n + b),

    with :math:`a_{n,c} = (1-\varepsilon)[c = y_n] + \varepsilon / V`, the mean over the rows
    whose target is not ``ignore_index`` (0 when there is none). Gradients for ``input``,
    ``weight`` and ``bias`` accumulate in float32 and come back in their dtypes.

    Parameters
    ----------
    input : Tensor of shape (..., H)
        Hidden states, e.g. (batch, sequence, hidden).
    weight : Tensor of shape (V, H)
        The output projection (``nn.Linear(H, V).weight``, a tied embedding).
    target : integer Tensor of shape (...)
        Class indices in ``[0, V)``, or ``ignore_index``.
    bias : Tensor of shape (V,), optional
    ignore_index, label_smoothing, z_loss, softcap, reduction
        As :func:`crossentropy.torch.cross_entropy`.
    chunk_size : int, optional
        Rows per chunk; by default as many as make 64 MiB of float32 logits. Peak memory is one
        chunk of logits (two with ``softcap``) and the float32 gradient of ``weight``.

    Returns
    -------
    Tensor
        0-d for ``"mean"``/``"sum"``, ``target``'s shape for ``"none"``; the input's dtype.

    Examples
    --------
    >>> import torch
    >>> hidden, head = torch.randn(6, 16), torch.nn.Linear(16, 50)
    >>> tokens = torch.randint(0, 50, (6,))
    >>> loss = linear_cross_entropy(hidden, head.weight, tokens, bias=head.bias, chunk_size=4)
    >>> bool(torch.isclose(loss, torch.nn.functional.cross_entropy(head(hidden), tokens), atol=1e-6))
    True
    """
    for name, tensor in (("input", input), ("weight", weight), ("target", target)):
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"`{name}` must be a torch.Tensor; got {type(tensor).__name__}")
    check_not_empty("input", input)
    if input.ndim < 1 or weight.ndim != 2 or input.shape[-1] != weight.shape[1]:
        raise ValueError(
            f"`weight` must have shape (V, H) with H = input.shape[-1]; got input {tuple(input.shape)} "
            f"and weight {tuple(weight.shape)}"
        )
    if tuple(target.shape) != tuple(input.shape[:-1]):
        raise ValueError(
            f"`target` must have shape {tuple(input.shape[:-1])} (the input's without the hidden dimension); "
            f"got {tuple(target.shape)}"
        )
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(f"`bias` must have shape ({weight.shape[0]},); got {tuple(bias.shape)}")
    n_classes = weight.shape[0]
    check_class_indices("target", target, get_namespace(target), n_classes, ignore_index)
    if chunk_size is None:
        chunk_size = max(1, _CHUNK_ELEMENTS // max(n_classes, 1))
    options = LinearOptions(
        ignore_index=check_integer_option("ignore_index", ignore_index),
        label_smoothing=check_number("label_smoothing", label_smoothing, low=0.0, high=1.0),
        z_loss=check_number("z_loss", z_loss, low=0.0),
        softcap=None if softcap is None else check_number("softcap", softcap, low=0.0, low_open=True),
        reduction=check_reduction(reduction),
        chunk_size=check_integer_option("chunk_size", chunk_size, low=1),
    )
    rows, row_target = input.reshape(-1, input.shape[-1]), target.reshape(-1)
    on_kernels = all(t is None or kernels.accepts_torch(t) for t in (input, weight, bias))
    if on_kernels:
        loss = _fused(rows, weight, bias, row_target, options)
    else:
        loss = _pytorch_chunks(rows, weight, bias, row_target, options)
    return loss.reshape(target.shape) if options.reduction == "none" else loss
