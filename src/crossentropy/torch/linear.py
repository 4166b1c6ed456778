r"""Linear layer and cross-entropy in one, for large vocabularies: the N×V logits never exist at once.

:func:`linear_cross_entropy` computes the cross-entropy of the logits ``input @ weight.T + bias``
in chunks of rows (tokens). On the kernels, for each chunk the logits are formed in a reused
float32 buffer, the fused kernel turns them into losses and writes their gradient over them, and
the gradients of ``input``, ``weight`` and ``bias`` are accumulated from it in float32 before the
next chunk overwrites it. Peak memory is one chunk of logits (two with a soft-cap, whose
derivative needs the logits) plus the float32 gradient of ``weight``, instead of the N×V
logits and their gradient.

This runs as ``torch.library`` custom operators, which ``torch.compile`` keeps in its graph
(``fullgraph=True``, dynamic shapes), forward and backward:

``crossentropy::linear_cross_entropy_with_grad``
    With ``reduction="mean"`` or ``"sum"`` and a gradient wanted: the loss and, in the same
    pass, the gradients asked for (``need_input``, ``need_weight``, ``need_bias``; a 0-element
    placeholder for the others), in float32 (float64 for float64 input). ``setup_context``
    keeps them, marked non-differentiable; the backward scales them by the incoming scalar
    (in place in eager mode) and casts them to the parameters' dtypes.
``crossentropy::linear_cross_entropy``
    The loss alone (evaluation, ``reduction="none"``). Its backward, where the per-row incoming
    gradient is known, recomputes the logits chunk by chunk in
``crossentropy::linear_cross_entropy_backward``
    The gradients of ``sum(grad_output * loss)``; also a second backward through the same graph
    (``retain_graph=True``) of either operator. Not differentiable itself: a backward that builds
    a graph (``create_graph=True``), and one with a batched incoming gradient (``vmap``, batched
    gradcheck), differentiate the plain-PyTorch chunks with autograd instead (eager).

The operators take the tensors the kernels take (:func:`crossentropy.kernels.accepts_torch`;
the class indices are checked inside them); they are registered for every device, and when the
kernels do not take a chunk's logits where they run (switched off, a device without kernels),
the chunk's losses and logit gradient come from the core's generic code instead. Other calls, those
under ``torch.func`` transforms or with forward-mode tangents among them, run the chunks in plain
PyTorch under activation checkpointing (the logits of a chunk are recomputed in the backward pass
instead of kept), which autograd differentiates.
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
from ..losses import softmax_cross_entropy, softmax_cross_entropy_with_grad
from . import _ops
from ._autograd import scaled

__all__ = ["linear_cross_entropy"]

# Elements of one chunk of logits when ``chunk_size`` is not given: 2^24 float32 = 64 MiB.
_CHUNK_ELEMENTS = 2**24


@dataclass(frozen=True)
class LinearOptions:
    """Non-tensor options of the linear cross-entropy."""

    ignore_index: int
    label_smoothing: float
    z_loss: float
    softcap: float | None
    reduction: str
    chunk_size: int


def _checked_options(ignore_index, label_smoothing, z_loss, softcap, reduction, chunk_size) -> LinearOptions:
    return LinearOptions(
        ignore_index=check_integer_option("ignore_index", ignore_index),
        label_smoothing=check_number("label_smoothing", label_smoothing, low=0.0, high=1.0),
        z_loss=check_number("z_loss", z_loss, low=0.0),
        softcap=None if softcap is None else check_number("softcap", softcap, low=0.0, low_open=True),
        reduction=check_reduction(reduction),
        chunk_size=check_integer_option("chunk_size", chunk_size, low=1),
    )


@dataclass
class _Gradients:
    """Gradients of the input, the weight and the bias in the accumulation dtype (None where not asked for)."""

    input: torch.Tensor | None
    weight: torch.Tensor | None
    bias: torch.Tensor | None


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
    that ``needs`` asks for, one chunk of rows at a time; everything in float32 (float64 for
    float64 input). On the kernels when they take the chunk's logits; else (switched off, or a
    device without kernels) each chunk's losses and logit gradient come from the core's generic
    code (:func:`_generic_rows`), the rest being the same."""
    n_rows, n_classes = input.shape[0], weight.shape[0]
    dtype = _accumulation_dtype(input)
    weight_acc, bias_acc = weight.to(dtype), None if bias is None else bias.to(dtype)
    valid = target != options.ignore_index
    safe_target = torch.where(valid, target, torch.zeros_like(target))
    row_weight = valid.to(dtype)
    store = row_factor is not None
    grads = _Gradients(
        input.new_empty(input.shape, dtype=dtype) if store and needs[0] else None,
        input.new_zeros(weight.shape, dtype=dtype) if store and needs[1] else None,
        input.new_zeros(n_classes, dtype=dtype) if store and needs[2] and bias is not None else None,
    )
    chunk = min(options.chunk_size, n_rows)
    logits_buffer = input.new_empty((chunk, n_classes), dtype=dtype)
    # The kernel writes the gradient over the logits, unless the soft-cap's derivative needs them.
    grad_buffer = input.new_empty((chunk, n_classes), dtype=dtype) if store and options.softcap is not None else None
    losses = input.new_empty(n_rows, dtype=dtype)
    backend = kernels.for_torch(logits_buffer)  # asked once: every chunk has the buffer's device and dtype
    for start in range(0, n_rows, chunk):
        stop = min(start + chunk, n_rows)
        rows = input[start:stop].to(dtype)
        logits = logits_buffer[: stop - start]
        if bias_acc is None:
            torch.mm(rows, weight_acc.T, out=logits)
        else:
            torch.addmm(bias_acc, rows, weight_acc.T, out=logits)
        if backend is None:
            factor = row_factor[start:stop].to(dtype) if store else None
            losses[start:stop], dlogits = _generic_rows(logits, target[start:stop], factor, options)
        else:
            losses[start:stop], dlogits = backend.softmax_cross_entropy_rows(
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


def _generic_rows(logits: torch.Tensor, target: torch.Tensor, factor: torch.Tensor | None, options: LinearOptions):
    """What the kernels give for one chunk, from the core's generic code: the per-row losses (0 for
    ignored rows) and, when ``factor`` is given, the gradient of ``sum(factor * loss)`` with respect
    to ``logits`` (None otherwise)."""
    keywords = {
        "ignore_index": options.ignore_index,
        "label_smoothing": options.label_smoothing,
        "z_loss": options.z_loss,
        "softcap": options.softcap,
        "reduction": "none",
    }
    with kernels.disabled():
        if factor is None:
            return softmax_cross_entropy(logits, target, **keywords), None
        losses, dlogits = softmax_cross_entropy_with_grad(logits, target, **keywords)
    return losses, dlogits * factor.unsqueeze(-1)


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


def _losses_and_gradients(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    target: torch.Tensor,
    options: LinearOptions,
    *,
    grad_output: torch.Tensor | None,
    needs: tuple[bool, bool, bool],
) -> tuple[torch.Tensor, int, _Gradients]:
    """Per-row losses, the mean's count and the gradients ``needs`` asks for of ``sum(grad_output * loss)``
    (``grad_output``: 0-d or one per row; None, or nothing needed, forms no gradient), in the
    accumulation dtype: the body of the operators.

    The class indices are checked first.
    """
    check_class_indices("target", target, get_namespace(target), weight.shape[0], options.ignore_index)
    count = int((target != options.ignore_index).sum())
    factor = _row_factor(target, options, count, grad_output) if grad_output is not None and any(needs) else None
    losses, grads = _chunked(input, weight, bias, target, options, row_factor=factor, needs=needs)
    return losses, count, grads


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


# --------------------------------------------------------------------------------------------
# The custom operators (see the module's docstring)
# --------------------------------------------------------------------------------------------


def _gradient_outputs(input: torch.Tensor, grads: _Gradients) -> tuple[torch.Tensor, ...]:
    """The gradients as operator outputs: a 0-element placeholder where not asked for."""
    dtype = _accumulation_dtype(input)
    return tuple(input.new_empty(0, dtype=dtype) if g is None else g for g in (grads.input, grads.weight, grads.bias))


@torch.library.custom_op("crossentropy::linear_cross_entropy", mutates_args=())
def _linear_cross_entropy(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    target: torch.Tensor,
    ignore_index: int,
    label_smoothing: float,
    z_loss: float,
    softcap: float | None,
    reduction: str,
    chunk_size: int,
) -> torch.Tensor:
    """The loss of ``input`` (N, H) through ``weight`` (V, H) and ``bias``, for ``target`` (N,); no gradient formed."""
    options = _checked_options(ignore_index, label_smoothing, z_loss, softcap, reduction, chunk_size)
    losses, count, _ = _losses_and_gradients(input, weight, bias, target, options, grad_output=None, needs=_NO_NEEDS)
    return reduce_loss(losses, count, reduction, get_namespace(losses), input.dtype).contiguous()


@torch.library.custom_op("crossentropy::linear_cross_entropy_with_grad", mutates_args=())
def _linear_cross_entropy_with_grad(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    target: torch.Tensor,
    ignore_index: int,
    label_smoothing: float,
    z_loss: float,
    softcap: float | None,
    reduction: str,
    chunk_size: int,
    need_input: bool,
    need_weight: bool,
    need_bias: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The loss and its gradients that ``need_*`` ask for (of the losses' sum for ``"none"``), in the
    accumulation dtype; a 0-element placeholder for each other one."""
    options = _checked_options(ignore_index, label_smoothing, z_loss, softcap, reduction, chunk_size)
    needs = (need_input, need_weight, need_bias and bias is not None)
    one = torch.ones((), dtype=torch.float64, device=input.device)
    losses, count, grads = _losses_and_gradients(input, weight, bias, target, options, grad_output=one, needs=needs)
    loss = reduce_loss(losses, count, reduction, get_namespace(losses), input.dtype).contiguous()
    return loss, *_gradient_outputs(input, grads)


@torch.library.custom_op("crossentropy::linear_cross_entropy_backward", mutates_args=())
def _linear_cross_entropy_backward(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    target: torch.Tensor,
    grad_output: torch.Tensor,
    ignore_index: int,
    label_smoothing: float,
    z_loss: float,
    softcap: float | None,
    reduction: str,
    chunk_size: int,
    need_input: bool,
    need_weight: bool,
    need_bias: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The gradients of ``sum(grad_output * loss)`` (``grad_output``: 0-d, or one per row for
    ``"none"``) that ``need_*`` ask for, in the accumulation dtype; a 0-element placeholder for each
    other one. The backward of the two operators above; not differentiable itself."""
    options = LinearOptions(ignore_index, label_smoothing, z_loss, softcap, reduction, chunk_size)
    needs = (need_input, need_weight, need_bias and bias is not None)
    _, _, grads = _losses_and_gradients(input, weight, bias, target, options, grad_output=grad_output, needs=needs)
    return _gradient_outputs(input, grads)


_NO_NEEDS = (False, False, False)


def _fake_gradients(input, weight, bias, needs) -> tuple[torch.Tensor, ...]:
    dtype = _accumulation_dtype(input)
    shapes = (input.shape, weight.shape, (weight.shape[0],))
    return tuple(
        input.new_empty(shape if need else (0,), dtype=dtype)
        for shape, need in zip(shapes, (needs[0], needs[1], needs[2] and bias is not None), strict=True)
    )


@_linear_cross_entropy.register_fake
def _linear_fake(input, weight, bias, target, ignore_index, label_smoothing, z_loss, softcap, reduction, chunk_size):
    return input.new_empty((input.shape[0],) if reduction == "none" else ())


@_linear_cross_entropy_with_grad.register_fake
def _linear_with_grad_fake(input, weight, bias, target, *options_and_needs):
    *options, need_input, need_weight, need_bias = options_and_needs
    reduction = options[4]
    loss = input.new_empty((input.shape[0],) if reduction == "none" else ())
    return loss, *_fake_gradients(input, weight, bias, (need_input, need_weight, need_bias))


@_linear_cross_entropy_backward.register_fake
def _linear_backward_fake(input, weight, bias, target, grad_output, *options_and_needs):
    return _fake_gradients(input, weight, bias, options_and_needs[-3:])


def _linear_setup_context(ctx, inputs, output) -> None:
    input, weight, bias, target, *options = inputs
    ctx.options = LinearOptions(*options[:6])
    ctx.dtypes = (input.dtype, weight.dtype, None if bias is None else bias.dtype)
    ctx.needs = tuple(ctx.needs_input_grad[:3])
    ctx.save_for_backward(input, weight, bias, target)
    ctx.n_inputs = len(inputs)
    ctx.grads = None
    if isinstance(output, tuple):  # the _with_grad operator: keep the gradients for backward
        kept = options[6:]  # need_input, need_weight, need_bias
        if all(k or not n for n, k in zip(ctx.needs, kept, strict=True)):  # all that autograd needs
            ctx.grads = output[1:]
        ctx.mark_non_differentiable(*output[1:])
    ctx.set_materialize_grads(False)


def _linear_backward(ctx, grad_output, *_):
    grads, ctx.grads = ctx.grads, None  # the first backward hands the kept gradients over
    nothing = (None,) * ctx.n_inputs
    if grad_output is None or not any(ctx.needs):
        return (None, None, None, *nothing[3:])
    if torch.is_grad_enabled() or is_transformed_tensor(grad_output):
        return (*_gradients_by_autograd(ctx, grad_output), *nothing[3:])
    if grads is None or ctx.options.reduction == "none":  # reduction="none", or a second backward
        input, weight, bias, target = ctx.saved_tensors
        o = ctx.options
        arguments = (o.ignore_index, o.label_smoothing, o.z_loss, o.softcap, o.reduction, o.chunk_size)
        grads = _linear_cross_entropy_backward(input, weight, bias, target, grad_output, *arguments, *ctx.needs)
    else:
        grads = tuple(scaled(g, grad_output) if need else g for g, need in zip(grads, ctx.needs, strict=True))
    cast = [g.to(dtype) if need else None for g, dtype, need in zip(grads, ctx.dtypes, ctx.needs, strict=True)]
    return (*cast, *nothing[3:])


_linear_cross_entropy.register_autograd(_linear_backward, setup_context=_linear_setup_context)
_linear_cross_entropy_with_grad.register_autograd(_linear_backward, setup_context=_linear_setup_context)


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
    if chunk_size is None:
        chunk_size = max(1, _CHUNK_ELEMENTS // max(n_classes, 1))
    if torch.compiler.is_compiling():  # TorchDynamo cannot trace the checks: the operators make them when they run
        softcap = None if softcap is None else float(softcap)
        options = LinearOptions(
            int(ignore_index), float(label_smoothing), float(z_loss), softcap, reduction, chunk_size
        )
    else:
        options = _checked_options(ignore_index, label_smoothing, z_loss, softcap, reduction, chunk_size)
    rows, row_target = input.reshape(-1, input.shape[-1]), target.reshape(-1)
    if all(
        t is None or _ops.kernels_take(t, row_target) for t in (input, weight, bias)
    ):  # the operators check `target`
        o = options
        arguments = (o.ignore_index, o.label_smoothing, o.z_loss, o.softcap, o.reduction, o.chunk_size)
        needs = [torch.is_grad_enabled() and t is not None and t.requires_grad for t in (input, weight, bias)]
        if any(needs) and options.reduction != "none":  # the gradients in the forward call, scaled in backward
            loss = _linear_cross_entropy_with_grad(rows, weight, bias, row_target, *arguments, *needs)[0]
        else:
            loss = _linear_cross_entropy(rows, weight, bias, row_target, *arguments)
    else:
        check_class_indices("target", target, get_namespace(target), n_classes, ignore_index)
        loss = _pytorch_chunks(rows, weight, bias, row_target, options)
    return loss.reshape(target.shape) if options.reduction == "none" else loss
