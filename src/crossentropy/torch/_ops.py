"""The fused softmax and sigmoid cross-entropies as ``torch.library`` custom operators.

:func:`crossentropy.torch.cross_entropy` and :func:`crossentropy.torch.binary_cross_entropy_with_logits`
send the calls the kernels take (:func:`kernels_take`) to four operators of the ``crossentropy``
namespace, so that ``torch.compile`` (``fullgraph=True``, dynamic shapes included) puts them in
its graph as they are, without a graph break, forward and backward:

``crossentropy::softmax_cross_entropy_with_grad`` and ``crossentropy::sigmoid_cross_entropy_with_grad``
    Return ``(loss, gradient)``: the kernels compute both in one pass. Custom operators are
    functional, so the gradient of the (mean, sum or per-sample) loss with respect to the logits
    is an output; ``setup_context`` keeps it (not as an input of the graph: no copy), marks it
    non-differentiable, and the registered backward multiplies it by the incoming gradient.
    For training steps, where the logits require grad.
``crossentropy::softmax_cross_entropy`` and ``crossentropy::sigmoid_cross_entropy``
    Return the loss alone (O(N) memory on the kernels): under ``torch.compile``, for evaluation
    (``torch.no_grad()``) and inputs that need no gradient. Eager calls without a gradient skip
    the operators' dispatch and call the core function, which runs the same kernels. Their
    registered backward, which the torch layer does not use (it picks the ``_with_grad``
    operator when a gradient is wanted), computes the gradient through the ``_with_grad``
    operator, so they are differentiable all the same.

Each operator's implementation calls the library's core functions
(:meth:`~crossentropy.torch._autograd.SoftmaxOptions.compute`,
:func:`crossentropy.sigmoid_cross_entropy_with_grad`), which pick the kernels or the generic
array-API code themselves; the operators are registered for every device, with no branch on one.
Their fake implementations give the shapes and dtypes: the loss is 0-d for ``"mean"`` and
``"sum"`` and of the batch shape for ``"none"`` (the logits' shape without the class dimension
for the softmax loss, the logits' shape for the sigmoid one), the gradient of the logits' shape,
both in the logits' dtype (the accumulation in float32 at least happens inside). Both outputs are
contiguous. The tensors ``target`` (class indices or probabilities) and the optional ``weight``,
``pos_weight``, ``sample_weight`` and ``normalizer`` (0-d: the mean's denominator) are arguments;
the options are ``int``, ``float``, ``float?``, ``int?`` and ``str`` arguments. Messages of the
checks inside name PyTorch's parameters (``input``, ``target``).

The backward:

- eager, first backward: the kept gradient, scaled in place by the incoming gradient (untouched
  for a factor of 1) and handed over, as the ``torch.autograd.Function`` before did;
- traced (``torch.compile``, ``opcheck``), or an incoming gradient that is batched (``vmap``,
  batched gradcheck): the product, a new tensor (no data-dependent branch);
- a second backward through the same graph (``retain_graph=True``): the gradient again from the
  ``_with_grad`` operator, equal to the first;
- a backward that builds a graph (``create_graph=True``: double backward, Hessian-vector
  products, ``gradgradcheck``): the closed-form gradient in PyTorch operations, computed from the
  saved logits with the kernels off, which autograd differentiates again (in eager mode;
  ``torch.compile`` itself does not compile double backward).

Forward-mode AD and ``torch.func`` transforms never reach the operators: the torch layer sends
them to the generic code, which PyTorch differentiates and batches itself (see
:func:`crossentropy.kernels.accepts_torch`). ``cross_entropy(..., inplace=True)``, which writes
the gradient over the logits, cannot be such an operator (``register_autograd`` takes functional
operators only): it stays a ``torch.autograd.Function`` (eager; a graph break under
``torch.compile``).

>>> import torch
>>> logits, labels = torch.tensor([[2.0, 1.0, 0.1]]), torch.tensor([0])
>>> loss, grad = torch.ops.crossentropy.softmax_cross_entropy_with_grad(
...     logits, labels, None, None, None, 1, -100, 0.0, 0.0, None, "mean", 1.0)
>>> bool(torch.allclose(grad, torch.softmax(logits, 1) - torch.tensor([[1.0, 0.0, 0.0]])))
True
"""

from __future__ import annotations

from typing import Any

import array_api_compat.torch as torch_namespace
import torch
from torch import Tensor

from .. import kernels, losses
from .._validation import parameter_names
from ._autograd import SigmoidOptions, SoftmaxOptions, scaled

__all__ = [
    "kernels_take",
    "sigmoid_arguments",
    "sigmoid_cross_entropy",
    "sigmoid_cross_entropy_with_grad",
    "softmax_arguments",
    "softmax_cross_entropy",
    "softmax_cross_entropy_stats",
    "softmax_cross_entropy_with_grad",
]

# Messages of the core's checks inside the operators name PyTorch's parameters.
_PYTORCH_NAMES = {"logits": "input", "targets": "target"}


def kernels_take(input: Tensor, *others: Any) -> bool:
    """Whether a call goes to the operators: :func:`crossentropy.kernels.accepts_torch` of its tensors.

    Under ``torch.compile`` TorchDynamo cannot read the kernels' switch (a context variable), and
    tensors are never transformed there: the answer is that of a tensor of the input's device and
    dtype, taken once when the graph is traced (:func:`torch.compiler.assume_constant_result`).
    A call traced inside :func:`crossentropy.kernels.disabled` therefore runs the generic code in
    its graph; the operators read the switch again each time they run.
    """
    if torch.compiler.is_compiling():
        return _kernels_take_kind(input.device, input.dtype)
    return kernels.accepts_torch(input, *others)


@torch.compiler.assume_constant_result
def _kernels_take_kind(device: torch.device, dtype: torch.dtype) -> bool:
    return kernels.accepts_torch(torch.empty(0, device=device, dtype=dtype))


def plain_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def softmax_arguments(options: SoftmaxOptions) -> tuple[Any, ...] | None:
    """The options as the softmax operators' arguments, or None when one is not a Python number
    (``int`` or ``float``, a NumPy ``float64`` included) or string where the operators take one (a
    bool, a tensor, other NumPy scalars): the generic code then takes the call, and checks it."""
    o = options
    plain = (
        type(o.axis) is int
        and (o.ignore_index is None or (isinstance(o.ignore_index, int) and not isinstance(o.ignore_index, bool)))
        and plain_number(o.label_smoothing)
        and plain_number(o.z_loss)
        and (o.softcap is None or plain_number(o.softcap))
        and isinstance(o.reduction, str)
        and plain_number(o.temperature)
    )
    if not plain:
        return None
    ignore_index = None if o.ignore_index is None else int(o.ignore_index)
    softcap = None if o.softcap is None else float(o.softcap)
    reduction, temperature = str(o.reduction), float(o.temperature)
    return o.axis, ignore_index, float(o.label_smoothing), float(o.z_loss), softcap, reduction, temperature


def normalizer_argument(normalizer: Any, input: Any, reduction: Any) -> Any:
    """``normalizer`` as the softmax operators take it: None, or a 0-d tensor on the input's device (a
    Python number becomes one, in float64). Anything else is passed on as it is, for the core's checks
    to refuse (an operator's schema would refuse it less clearly)."""
    if normalizer is None or not isinstance(input, Tensor):
        return normalizer
    if plain_number(normalizer):
        if reduction != "mean" or not (normalizer >= 0 and normalizer < float("inf")):
            return normalizer  # refused by the core, with its message
        return torch.tensor(float(normalizer), dtype=torch.float64, device=input.device)
    if isinstance(normalizer, Tensor) and normalizer.device != input.device and normalizer.ndim == 0:
        return normalizer.to(input.device)
    return normalizer


def checked_normalizer(normalizer: Any, reduction: str, like: Tensor, dtype: torch.dtype) -> Tensor | None:
    """``normalizer`` by the core's rules (:func:`crossentropy.losses.check_normalizer`: a number or 0-d
    tensor >= 0, with ``reduction="mean"`` only; 0 makes the loss 0), as a 0-d tensor in ``dtype`` on
    ``like``'s device, detached (a constant), or None: for the losses that divide by it themselves."""
    value = losses.check_normalizer(normalizer, reduction, torch_namespace, like, dtype)
    return None if value is None else torch.as_tensor(value, dtype=dtype, device=like.device).detach()


def sigmoid_arguments(options: SigmoidOptions) -> tuple[Any, ...] | None:
    """As :func:`softmax_arguments`, for the sigmoid operators."""
    if not (plain_number(options.label_smoothing) and isinstance(options.reduction, str)):
        return None
    return float(options.label_smoothing), str(options.reduction)


def _contiguous(*tensors: Tensor) -> tuple[Tensor, ...]:
    return tuple(t.contiguous() for t in tensors)


# --------------------------------------------------------------------------------------------
# Softmax cross-entropy
# --------------------------------------------------------------------------------------------


@torch.library.custom_op("crossentropy::softmax_cross_entropy_with_grad", mutates_args=())
def softmax_cross_entropy_with_grad(
    logits: Tensor,
    target: Tensor,
    weight: Tensor | None,
    sample_weight: Tensor | None,
    normalizer: Tensor | None,
    axis: int,
    ignore_index: int | None,
    label_smoothing: float,
    z_loss: float,
    softcap: float | None,
    reduction: str,
    temperature: float,
) -> tuple[Tensor, Tensor]:
    """The softmax cross-entropy and its gradient with respect to ``logits`` (class dimension ``axis``)."""
    options = SoftmaxOptions(axis, ignore_index, label_smoothing, z_loss, softcap, reduction, temperature)
    with parameter_names(**_PYTORCH_NAMES):
        loss, grad = options.compute(logits, target, weight, sample_weight, normalizer, with_grad=True)
    return _contiguous(loss, grad)


@torch.library.custom_op("crossentropy::softmax_cross_entropy", mutates_args=())
def softmax_cross_entropy(
    logits: Tensor,
    target: Tensor,
    weight: Tensor | None,
    sample_weight: Tensor | None,
    normalizer: Tensor | None,
    axis: int,
    ignore_index: int | None,
    label_smoothing: float,
    z_loss: float,
    softcap: float | None,
    reduction: str,
    temperature: float,
) -> Tensor:
    """The softmax cross-entropy alone (no gradient formed)."""
    options = SoftmaxOptions(axis, ignore_index, label_smoothing, z_loss, softcap, reduction, temperature)
    with parameter_names(**_PYTORCH_NAMES):
        (loss,) = _contiguous(options.compute(logits, target, weight, sample_weight, normalizer, with_grad=False))
    return loss


def _softmax_loss_shape(logits: Tensor, axis: int, reduction: str) -> list[Any]:
    """The loss's shape: the logits' without the class dimension for ``"none"``, else ()."""
    if reduction != "none":
        return []
    shape = list(logits.shape)
    del shape[axis]
    return shape


@softmax_cross_entropy_with_grad.register_fake
def _softmax_with_grad_fake(
    logits,
    target,
    weight,
    sample_weight,
    normalizer,
    axis,
    ignore_index,
    label_smoothing,
    z_loss,
    softcap,
    reduction,
    temperature,
):
    return logits.new_empty(_softmax_loss_shape(logits, axis, reduction)), logits.new_empty(logits.shape)


@softmax_cross_entropy.register_fake
def _softmax_fake(
    logits,
    target,
    weight,
    sample_weight,
    normalizer,
    axis,
    ignore_index,
    label_smoothing,
    z_loss,
    softcap,
    reduction,
    temperature,
):
    return logits.new_empty(_softmax_loss_shape(logits, axis, reduction))


def _softmax_setup_context(ctx, inputs, output) -> None:
    logits, target, weight, sample_weight, normalizer, *options = inputs
    ctx.options = SoftmaxOptions(*options)
    ctx.save_for_backward(logits, target, weight, sample_weight, normalizer)
    ctx.grad = None
    if isinstance(output, tuple):  # the _with_grad operator: keep the gradient for backward
        ctx.grad = output[1]
        ctx.mark_non_differentiable(output[1])
    ctx.set_materialize_grads(False)


def _softmax_gradient_again(ctx) -> Tensor:
    """The gradient of the loss, again from the saved inputs: in PyTorch operations from the closed
    form when the backward builds a graph (``create_graph=True``), else from the operator (the
    kernels, which repeat the first gradient exactly)."""
    logits, target, weight, sample_weight, normalizer = ctx.saved_tensors
    options = ctx.options
    if torch.is_grad_enabled():
        with kernels.disabled(), parameter_names(**_PYTORCH_NAMES):
            return options.compute(logits, target, weight, sample_weight, normalizer, with_grad=True)[1]
    arguments = (options.axis, options.ignore_index, options.label_smoothing, options.z_loss, options.softcap)
    return softmax_cross_entropy_with_grad(
        logits, target, weight, sample_weight, normalizer, *arguments, options.reduction, options.temperature
    )[1]


def _softmax_backward(ctx, grad_output, *_):
    nothing = (None,) * 11
    if grad_output is None or not ctx.needs_input_grad[0]:
        return (None, *nothing)
    grad, ctx.grad = ctx.grad, None  # the first backward hands the kept gradient over
    if grad is None or torch.is_grad_enabled():  # a second backward, or one that builds a graph
        grad = _softmax_gradient_again(ctx)
    if ctx.options.reduction == "none" and grad_output.ndim:  # one per sample: spread over the classes
        grad_output = grad_output.unsqueeze(ctx.options.axis)
    return (scaled(grad, grad_output), *nothing)


softmax_cross_entropy_with_grad.register_autograd(_softmax_backward, setup_context=_softmax_setup_context)
softmax_cross_entropy.register_autograd(_softmax_backward, setup_context=_softmax_setup_context)


# --------------------------------------------------------------------------------------------
# Softmax cross-entropy with its statistics (return_stats=True)
# --------------------------------------------------------------------------------------------


@torch.library.custom_op("crossentropy::softmax_cross_entropy_stats", mutates_args=())
def softmax_cross_entropy_stats(
    logits: Tensor,
    target: Tensor,
    weight: Tensor | None,
    sample_weight: Tensor | None,
    normalizer: Tensor | None,
    axis: int,
    ignore_index: int | None,
    label_smoothing: float,
    z_loss: float,
    softcap: float | None,
    reduction: str,
    temperature: float,
    with_grad: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """``(loss, dlogits, lse, entropy, accuracy)``: the loss, its gradient (an empty tensor unless
    ``with_grad``) and the per-sample statistics of :class:`crossentropy.LossStats`, one pass."""
    options = SoftmaxOptions(axis, ignore_index, label_smoothing, z_loss, softcap, reduction, temperature)
    with parameter_names(**_PYTORCH_NAMES):
        result = options.compute(
            logits, target, weight, sample_weight, normalizer, with_grad=with_grad, return_stats=True
        )
    loss, stats = result[0], result[-1]
    grad = result[1] if with_grad else logits.new_empty(0)
    return _contiguous(loss, grad, stats.lse, stats.entropy, stats.accuracy)


@softmax_cross_entropy_stats.register_fake
def _softmax_stats_fake(
    logits,
    target,
    weight,
    sample_weight,
    normalizer,
    axis,
    ignore_index,
    label_smoothing,
    z_loss,
    softcap,
    reduction,
    temperature,
    with_grad,
):
    batch = _softmax_loss_shape(logits, axis, "none")
    grad = logits.new_empty(logits.shape) if with_grad else logits.new_empty(0)
    stats = (logits.new_empty(batch), logits.new_empty(batch), logits.new_empty(batch, dtype=torch.bool))
    return logits.new_empty(_softmax_loss_shape(logits, axis, reduction)), grad, *stats


def _softmax_stats_setup_context(ctx, inputs, output) -> None:
    logits, target, weight, sample_weight, normalizer, *options, with_grad = inputs
    ctx.options = SoftmaxOptions(*options)
    ctx.save_for_backward(logits, target, weight, sample_weight, normalizer)
    ctx.grad = output[1] if with_grad else None
    ctx.mark_non_differentiable(output[1], output[4])
    ctx.set_materialize_grads(False)


def stats_gradient(logits, target, sample_weight, options: SoftmaxOptions, grad_lse, grad_entropy) -> Tensor:
    r"""The logits' gradient of :math:`\sum_n \lambda_n \operatorname{LSE}_n + \eta_n H_n`, in PyTorch
    operations (differentiable again): :math:`p (\lambda - \eta (\log p + H))` times the soft-cap's
    slope and :math:`1/T`, zero at the positions whose statistics are zero (target ignored, sample
    weight 0). Recomputes :math:`p` from the saved logits: one more read of them and a few N×C
    temporaries, only in a backward where ``lse`` or ``entropy`` receives a gradient."""
    axis = options.axis
    acc = torch.promote_types(logits.dtype, torch.float32)
    u = logits.to(acc) / options.temperature
    slope = None
    if options.softcap is not None:
        t = torch.tanh(u / options.softcap)
        u, slope = options.softcap * t, 1 - t * t
    log_p = torch.log_softmax(u, axis)
    p = log_p.exp()
    live = torch.ones_like(target, dtype=torch.bool) if options.ignore_index is None else target != options.ignore_index
    if sample_weight is not None:
        live = live & (sample_weight != 0)
    zero = torch.zeros((), dtype=acc, device=logits.device)
    coefficient = torch.zeros_like(log_p)
    if grad_lse is not None:
        coefficient = coefficient + torch.where(live, grad_lse.to(acc), zero).unsqueeze(axis)
    if grad_entropy is not None:
        entropy = -torch.where(p > 0, p * log_p, zero).sum(axis, keepdim=True)
        eta = torch.where(live, grad_entropy.to(acc), zero).unsqueeze(axis)
        coefficient = coefficient - eta * torch.where(p > 0, log_p + entropy, zero)
    grad = p * coefficient / options.temperature
    if slope is not None:
        grad = grad * slope
    return grad.to(logits.dtype)


def _softmax_stats_backward(ctx, grad_output, _grad_of_grad, grad_lse, grad_entropy, _grad_of_accuracy):
    nothing = (None,) * 12
    if not ctx.needs_input_grad[0] or (grad_output is None and grad_lse is None and grad_entropy is None):
        return (None, *nothing)
    total = None
    if grad_output is not None:
        grad, ctx.grad = ctx.grad, None
        if torch.is_grad_enabled():
            grad = _softmax_gradient_again(ctx)
        elif grad is None:  # a second backward: this operator again, bitwise the first's gradient
            logits, target, weight, sample_weight, normalizer = ctx.saved_tensors
            o = ctx.options
            arguments = (o.axis, o.ignore_index, o.label_smoothing, o.z_loss, o.softcap, o.reduction, o.temperature)
            grad = softmax_cross_entropy_stats(logits, target, weight, sample_weight, normalizer, *arguments, True)[1]
        if ctx.options.reduction == "none" and grad_output.ndim:
            grad_output = grad_output.unsqueeze(ctx.options.axis)
        total = scaled(grad, grad_output)
    if grad_lse is not None or grad_entropy is not None:
        logits, target, _weight, sample_weight, _normalizer = ctx.saved_tensors
        extra = stats_gradient(logits, target, sample_weight, ctx.options, grad_lse, grad_entropy)
        total = extra if total is None else total + extra
    return (total, *nothing)


softmax_cross_entropy_stats.register_autograd(_softmax_stats_backward, setup_context=_softmax_stats_setup_context)


# --------------------------------------------------------------------------------------------
# Sigmoid cross-entropy
# --------------------------------------------------------------------------------------------


@torch.library.custom_op("crossentropy::sigmoid_cross_entropy_with_grad", mutates_args=())
def sigmoid_cross_entropy_with_grad(
    logits: Tensor,
    target: Tensor,
    weight: Tensor | None,
    pos_weight: Tensor | None,
    sample_weight: Tensor | None,
    label_smoothing: float,
    reduction: str,
) -> tuple[Tensor, Tensor]:
    """The sigmoid cross-entropy and its gradient with respect to ``logits``."""
    options = SigmoidOptions(label_smoothing, reduction)
    tensors = {"weight": weight, "pos_weight": pos_weight, "sample_weight": sample_weight}
    with parameter_names(**_PYTORCH_NAMES):
        loss, grad = losses.sigmoid_cross_entropy_with_grad(logits, target, **tensors, **options.keywords())
    return _contiguous(loss, grad)


@torch.library.custom_op("crossentropy::sigmoid_cross_entropy", mutates_args=())
def sigmoid_cross_entropy(
    logits: Tensor,
    target: Tensor,
    weight: Tensor | None,
    pos_weight: Tensor | None,
    sample_weight: Tensor | None,
    label_smoothing: float,
    reduction: str,
) -> Tensor:
    """The sigmoid cross-entropy alone (no gradient formed)."""
    options = SigmoidOptions(label_smoothing, reduction)
    tensors = {"weight": weight, "pos_weight": pos_weight, "sample_weight": sample_weight}
    with parameter_names(**_PYTORCH_NAMES):
        (loss,) = _contiguous(losses.sigmoid_cross_entropy(logits, target, **tensors, **options.keywords()))
    return loss


@sigmoid_cross_entropy_with_grad.register_fake
def _sigmoid_with_grad_fake(logits, target, weight, pos_weight, sample_weight, label_smoothing, reduction):
    shape = logits.shape if reduction == "none" else ()
    return logits.new_empty(shape), logits.new_empty(logits.shape)


@sigmoid_cross_entropy.register_fake
def _sigmoid_fake(logits, target, weight, pos_weight, sample_weight, label_smoothing, reduction):
    return logits.new_empty(logits.shape if reduction == "none" else ())


def _sigmoid_setup_context(ctx, inputs, output) -> None:
    logits, target, weight, pos_weight, sample_weight, *options = inputs
    ctx.options = SigmoidOptions(*options)
    ctx.save_for_backward(logits, target, weight, pos_weight, sample_weight)
    ctx.grad = None
    if isinstance(output, tuple):
        ctx.grad = output[1]
        ctx.mark_non_differentiable(output[1])
    ctx.set_materialize_grads(False)


def _sigmoid_gradient_again(ctx) -> Tensor:
    """As :func:`_softmax_gradient_again`, for the sigmoid loss."""
    logits, target, weight, pos_weight, sample_weight = ctx.saved_tensors
    options = ctx.options
    if torch.is_grad_enabled():
        tensors = {"weight": weight, "pos_weight": pos_weight, "sample_weight": sample_weight}
        with kernels.disabled(), parameter_names(**_PYTORCH_NAMES):
            return losses.sigmoid_cross_entropy_with_grad(logits, target, **tensors, **options.keywords())[1]
    arguments = (options.label_smoothing, options.reduction)
    return sigmoid_cross_entropy_with_grad(logits, target, weight, pos_weight, sample_weight, *arguments)[1]


def _sigmoid_backward(ctx, grad_output, *_):
    nothing = (None,) * 6
    if grad_output is None or not ctx.needs_input_grad[0]:
        return (None, *nothing)
    grad, ctx.grad = ctx.grad, None
    if grad is None or torch.is_grad_enabled():
        grad = _sigmoid_gradient_again(ctx)
    return (scaled(grad, grad_output), *nothing)


sigmoid_cross_entropy_with_grad.register_autograd(_sigmoid_backward, setup_context=_sigmoid_setup_context)
sigmoid_cross_entropy.register_autograd(_sigmoid_backward, setup_context=_sigmoid_setup_context)
