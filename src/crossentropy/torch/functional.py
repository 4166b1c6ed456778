r"""Drop-in PyTorch losses: ``torch.nn.functional``'s signatures and results, faster on the CPU, with extras.

:func:`cross_entropy`, :func:`nll_loss`, :func:`binary_cross_entropy_with_logits` and
:func:`binary_cross_entropy` take the arguments of their ``torch.nn.functional`` namesakes, in
the same order with the same defaults (class dimension 1, K-dimensional inputs, index or
probability targets, the deprecated ``size_average``/``reduce`` pair), and give the same
losses and gradients. Keyword-only extras follow: ``z_loss``, ``softcap`` and
``sample_weight`` for the softmax loss, ``label_smoothing`` and ``sample_weight`` for the
sigmoid one. The other losses of the library (focal, poly-1, noise-robust, noise-corrected)
come with PyTorch's layout (classes on dimension 1).

On tensors a kernel backend takes (:mod:`crossentropy.kernels`) the softmax and sigmoid
cross-entropies run on the fused kernels: the loss and its gradient in one pass, in the forward
call, handed to autograd by ``torch.library`` custom operators (:mod:`crossentropy.torch._ops`),
which ``torch.compile`` keeps in its graph (``fullgraph=True``). Other tensors, and inputs for
which autograd must also differentiate the targets or weights, run the library's generic code,
which autograd differentiates. The caller's tensors are never written to, unless ``cross_entropy(...,
inplace=True)`` asks for the gradient to overwrite the logits.

Deliberate differences from PyTorch:

- when every target is ignored, the mean is 0 with a zero gradient, not NaN;
- negative class weights (``weight``, and ``pos_weight``) raise a ``ValueError``: PyTorch
  computes a loss that is then not a weighted cross-entropy;
- binary cross-entropy targets outside [0, 1] raise a ``ValueError``, for the same reason
  (``cross_entropy`` takes probability targets as given, as PyTorch: a finite-difference step
  may take a target just below 0);
- class weights of another floating dtype than the input are cast to it, where PyTorch raises.

Error messages name PyTorch's parameters (``input``, ``target``).

>>> import torch
>>> import crossentropy.torch as cet
>>> logits = torch.tensor([[2.0, 1.0, 0.1], [0.5, 2.5, 0.3]], requires_grad=True)
>>> labels = torch.tensor([0, 1])
>>> loss = cet.cross_entropy(logits, labels, label_smoothing=0.1)
>>> bool(torch.isclose(loss, torch.nn.functional.cross_entropy(logits, labels, label_smoothing=0.1)))
True
>>> loss.backward()
>>> logits.grad.shape
torch.Size([2, 3])
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Literal, TypeVar, cast, overload

import torch
from torch.nn import _reduction

from .. import losses, robust
from .._typing import Reduction
from .._validation import parameter_names
from ..losses import LossStats
from . import _dtensor, _ops
from ._autograd import InplaceSoftmaxCrossEntropy, SigmoidOptions, SoftmaxOptions

__all__ = [
    "backward_corrected_cross_entropy",
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "cross_entropy",
    "forward_corrected_cross_entropy",
    "generalized_cross_entropy",
    "nll_loss",
    "poly1_cross_entropy",
    "sigmoid_focal_loss",
    "softmax_focal_loss",
    "symmetric_cross_entropy",
]


_Function = TypeVar("_Function", bound=Callable[..., Any])

# The core's parameter names and PyTorch's for them, for the core's messages.
_PYTORCH_NAMES = {"logits": "input", "log_probs": "input", "probs": "input", "targets": "target"}


def _pytorch_names(**names: str) -> Callable[[_Function], _Function]:
    """Messages of the core's checks name this function's parameters (``input``, ``target``), not the core's."""
    shown = {**_PYTORCH_NAMES, **names}

    def decorate(function: _Function) -> _Function:
        @functools.wraps(function)
        def named(*args: Any, **kwargs: Any) -> Any:
            if torch.compiler.is_compiling():  # TorchDynamo cannot trace the names' context variable
                return function(*args, **kwargs)
            with parameter_names(**shown):
                return function(*args, **kwargs)

        return named  # type: ignore[return-value]

    return decorate


def _reduction_of(size_average: bool | None, reduce: bool | None, reduction: Reduction) -> Reduction:
    """PyTorch's rule: the deprecated ``size_average``/``reduce`` pair, when given, overrides ``reduction``."""
    if size_average is not None or reduce is not None:
        # PyTorch's rule gives "mean", "sum" or "none"; its annotation says str.
        return cast(Reduction, _reduction.legacy_get_string(size_average, reduce))
    return reduction


def _class_dim(input: torch.Tensor) -> int:
    """PyTorch's class dimension: 1, or 0 for an unbatched ``(C,)`` input."""
    if not isinstance(input, torch.Tensor):
        raise TypeError(f"`input` must be a torch.Tensor; got {type(input).__name__}")
    return 1 if input.ndim >= 2 else 0


def _on_kernels(input: Any, target: Any, *others: Any) -> bool:
    """Whether the custom operators of :mod:`._ops` take the call, to run it on the fused kernels:
    tensors (``others`` may be None) the kernels take, none but the input tracked by autograd
    (autograd differentiates the generic code in the targets and weights). Anything else, such as
    nested lists, goes to the generic code, which converts or refuses it.

    Calls under ``torch.func`` transforms or with forward-mode tangents run the generic code
    (see :func:`crossentropy.kernels.accepts_torch`), which PyTorch differentiates and batches.
    """
    tensors = isinstance(input, torch.Tensor) and isinstance(target, torch.Tensor)
    if not (tensors and all(t is None or isinstance(t, torch.Tensor) for t in others)):
        return False
    others = (target, *others)
    if not _ops.kernels_take(input, *others):
        return False
    return not (torch.is_grad_enabled() and any(isinstance(t, torch.Tensor) and t.requires_grad for t in others))


def _needs_grad(input: Any) -> bool:
    return isinstance(input, torch.Tensor) and torch.is_grad_enabled() and input.requires_grad


def _operator(input: Any, target: Any, *others: Any) -> str | None:
    """Which custom operator of :mod:`._ops` computes the call: ``"with_grad"`` when the input needs a
    gradient, ``"loss"`` for other calls under ``torch.compile``; None for the calls the operators do
    not take (:func:`_on_kernels`), and for eager calls without a gradient, which the core function
    runs on the same kernels directly, without the operator's dispatch (tens of microseconds)."""
    if _needs_grad(input):
        kind = "with_grad"
    elif torch.compiler.is_compiling():
        kind = "loss"
    else:
        return None
    return kind if _on_kernels(input, target, *others) else None


# ``inplace=True`` cannot be a custom operator (see ._autograd): an autograd function, which runs
# eagerly between the compiled graphs under torch.compile (a graph break).
@torch.compiler.disable  # type: ignore[untyped-decorator]  # unannotated in PyTorch; returns the function
def _softmax_inplace(*args: Any) -> torch.Tensor:
    return InplaceSoftmaxCrossEntropy.apply(*args)


@overload
def cross_entropy(
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    size_average: bool | None = None,
    ignore_index: int = -100,
    reduce: bool | None = None,
    reduction: Reduction = "mean",
    label_smoothing: float = 0.0,
    *,
    z_loss: float = 0.0,
    softcap: float | None = None,
    sample_weight: torch.Tensor | None = None,
    inplace: bool = False,
    temperature: float = 1.0,
    normalizer: float | torch.Tensor | None = None,
    return_stats: Literal[False] = False,
) -> torch.Tensor: ...


@overload
def cross_entropy(
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    size_average: bool | None = None,
    ignore_index: int = -100,
    reduce: bool | None = None,
    reduction: Reduction = "mean",
    label_smoothing: float = 0.0,
    *,
    z_loss: float = 0.0,
    softcap: float | None = None,
    sample_weight: torch.Tensor | None = None,
    inplace: bool = False,
    temperature: float = 1.0,
    normalizer: float | torch.Tensor | None = None,
    return_stats: Literal[True],
) -> tuple[torch.Tensor, LossStats]: ...


@overload
def cross_entropy(
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    size_average: bool | None = None,
    ignore_index: int = -100,
    reduce: bool | None = None,
    reduction: Reduction = "mean",
    label_smoothing: float = 0.0,
    *,
    z_loss: float = 0.0,
    softcap: float | None = None,
    sample_weight: torch.Tensor | None = None,
    inplace: bool = False,
    temperature: float = 1.0,
    normalizer: float | torch.Tensor | None = None,
    return_stats: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, LossStats]: ...


@_pytorch_names()
def cross_entropy(
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    size_average: bool | None = None,
    ignore_index: int = -100,
    reduce: bool | None = None,
    reduction: Reduction = "mean",
    label_smoothing: float = 0.0,
    *,
    z_loss: float = 0.0,
    softcap: float | None = None,
    sample_weight: torch.Tensor | None = None,
    inplace: bool = False,
    temperature: float = 1.0,
    normalizer: float | torch.Tensor | None = None,
    return_stats: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, LossStats]:
    r"""Softmax cross-entropy: ``torch.nn.functional.cross_entropy``, plus z-loss, soft-capping and sample weights.

    .. math::

        \ell_n = s_n \Big( -\sum_c a_{n,c} \log \operatorname{softmax}(u_n)_c
                 + z\, w_{y_n} \operatorname{LSE}(u_n)^2 \Big), \qquad
        u = c \tanh(x / c) \text{ if soft-capped, else } x,

    with PyTorch's target weights :math:`a_{n,c} = (1-\varepsilon) w_{y_n} [c = y_n] +
    \tfrac{\varepsilon}{C} w_c` (index targets) or :math:`w_c ((1-\varepsilon) t_{n,c} +
    \tfrac{\varepsilon}{C})` (probability targets); the mean divides by
    :math:`\sum_n s_n w_{y_n}` over non-ignored samples (index targets) or :math:`\sum_n s_n`
    (probability targets). See :func:`crossentropy.softmax_cross_entropy`.

    Parameters
    ----------
    input : Tensor of shape (C,), (N, C) or (N, C, d1, ..., dK)
        Logits, classes on dimension 1.
    target : Tensor
        Class indices of shape (), (N,) or (N, d1, ..., dK), or class probabilities of the
        input's shape (taken as given, as PyTorch does; the core function checks them to lie in
        [0, 1]).
    weight : Tensor of shape (C,), optional
        Class weights :math:`w_c \ge 0`, as PyTorch's.
    size_average : bool, optional
        Deprecated, as in PyTorch: when given, it sets ``reduction`` as PyTorch's does.
    ignore_index : int, default -100
        Class-index targets equal to it contribute nothing, to the loss nor to the mean's
        denominator.
    reduce : bool, optional
        Deprecated, as in PyTorch: when given, it sets ``reduction`` as PyTorch's does.
    reduction : {"mean", "sum", "none"}, default "mean"
        ``"mean"`` over all-ignored targets gives 0, not NaN.
    label_smoothing : float in [0, 1], default 0
        :math:`\varepsilon`, PyTorch's label smoothing.
    z_loss : float >= 0, default 0
        Adds :math:`z \operatorname{LSE}^2` per sample (PaLM).
    softcap : float > 0, optional
        Logits become :math:`c \tanh(x / c)` first (Gemma 2).
    sample_weight : Tensor of the batch shape, optional
        Per-sample weights :math:`s_n \ge 0`; they also enter the mean's denominator.
    inplace : bool, default False
        Write the gradient over ``input`` during the forward call, saving the memory of a
        second N×C tensor (as Liger-Kernel does): afterwards ``input`` holds the gradient, not
        the logits, and autograd refuses any other use of it that needs its values; the
        backward hands autograd that memory, scaled in place. Needs (N, C) or (C,) contiguous
        logits on the kernels: on a GPU (Triton) any dtype and option; on the CPU (Numba)
        float32/float64 logits, class-index targets, no ``softcap`` and no label smoothing with
        class weights (a clear error otherwise). It changes nothing elsewhere (devices without
        kernels, forward-only calls). An eager call: under ``torch.compile`` a graph break.
    temperature : float > 0, default 1
        :math:`T`: the logits are divided by it first, before the soft-cap: the loss and
        gradients of ``F.cross_entropy(input / T, ...)``. The kernels scale each logit as they
        read it (no N×C copy, ``inplace=True`` included); the generic code divides a copy. For a
        DTensor ``input``, the division is that of DTensor before its own path.
    normalizer : number or 0-d Tensor, optional
        With ``reduction="mean"``: the (weighted) sum of the losses divided by it instead of by
        this call's own count (0 gives 0). Pass the number of counted targets of the whole
        optimizer step (Hugging Face's ``num_items_in_batch``, summed across micro-batches and
        data-parallel ranks): the gradients summed over the micro-batches then equal the full
        batch's. Another reduction with a normalizer raises a ``ValueError``. A constant: a
        tensor normalizer that requires grad gets none from the kernels' path (the generic code,
        which takes such calls, differentiates it).
    return_stats : bool, default False
        Return ``(loss, stats)``, ``stats`` a :class:`crossentropy.LossStats` ``(lse, entropy,
        accuracy)`` of tensors of the target's shape (class-index targets only; probability
        targets raise a ``ValueError``): the log-sum-exp of the scaled, capped logits, the
        entropy of their softmax, and whether their first arg-max (``torch.argmax``) is the
        target, a bool tensor. Zero (False) where the target is ignored or the sample weight is
        0, with no gradient there. Computed in the same pass as the loss (on the kernels: O(N)
        more memory, no second read of the logits). ``lse`` and ``entropy`` are differentiable
        (an entropy bonus can join the loss): on the kernels' path the backward adds
        :math:`p(\lambda - \eta(\log p + H))` times the cap's slope and :math:`1/T` to the
        kept gradient, recomputing :math:`p` from the logits that the operator saves anyway,
        only when ``lse`` or ``entropy`` receives a gradient. Not with ``inplace=True`` (the
        logits are gone). For DTensor logits sharded on the class dimension the statistics come
        back as ``Replicate`` DTensors, sharded like the batch otherwise.

    Returns
    -------
    Tensor
        0-d for ``"mean"`` and ``"sum"``, the batch shape for ``"none"``; the input's dtype.

    Examples
    --------
    >>> import torch
    >>> logits = torch.log(torch.tensor([[0.001, 0.999], [0.92, 0.08]]))
    >>> [round(v, 4) for v in cross_entropy(logits, torch.tensor([0, 0]), reduction="none").tolist()]
    [6.9078, 0.0834]
    """
    reduction = _reduction_of(size_average, reduce, reduction)
    if isinstance(input, _dtensor.TYPES) or isinstance(target, _dtensor.TYPES):  # torch.distributed.tensor
        if not (_ops.plain_number(temperature) and temperature == 1.0):
            input = input / losses.check_temperature(temperature)
        return _dtensor.cross_entropy_dtensor(
            input,
            target,
            weight,
            ignore_index=ignore_index,
            reduction=reduction,
            label_smoothing=label_smoothing,
            z_loss=z_loss,
            softcap=softcap,
            sample_weight=sample_weight,
            inplace=inplace,
            normalizer=normalizer,
            return_stats=return_stats,
        )
    options = SoftmaxOptions(_class_dim(input), ignore_index, label_smoothing, z_loss, softcap, reduction, temperature)
    arguments = _ops.softmax_arguments(options) or ()  # None (no operator) becomes (), never unpacked
    count = _ops.normalizer_argument(normalizer, input, reduction)
    operator = None if not arguments else _operator(input, target, weight, sample_weight, count)
    if return_stats:
        if inplace and _needs_grad(input):
            raise ValueError(
                "`return_stats=True` cannot go with `inplace=True`: the statistics' gradient needs the logits, "
                "which the gradient overwrites; call with inplace=False"
            )
        if operator is None:
            loss, stats = options.compute(
                input, target, weight, sample_weight, normalizer, with_grad=False, return_stats=True
            )
            return loss, stats
        loss, _, lse, entropy, accuracy = _ops.softmax_cross_entropy_stats(
            input, target, weight, sample_weight, count, *arguments, operator == "with_grad"
        )
        return loss, losses.LossStats(lse, entropy, accuracy)
    if operator == "with_grad" and inplace:
        return _softmax_inplace(input, target, weight, sample_weight, count, options)
    if operator == "with_grad":
        return _ops.softmax_cross_entropy_with_grad(input, target, weight, sample_weight, count, *arguments)[0]
    if operator == "loss":
        return _ops.softmax_cross_entropy(input, target, weight, sample_weight, count, *arguments)
    return options.compute(input, target, weight, sample_weight, normalizer, with_grad=False)


@_pytorch_names()
def binary_cross_entropy_with_logits(
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: Reduction = "mean",
    pos_weight: torch.Tensor | None = None,
    *,
    label_smoothing: float = 0.0,
    sample_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Binary and multi-label cross-entropy on logits: ``torch.nn.functional.binary_cross_entropy_with_logits``.

    .. math::

        \ell = -s\, w \big( q\, y \log \sigma(x) + (1 - y) \log \sigma(-x) \big), \qquad
        y = (1 - \varepsilon)\, t + \varepsilon / 2,

    elementwise; see :func:`crossentropy.sigmoid_cross_entropy`.

    Parameters
    ----------
    input : Tensor of any shape
        Logits.
    target : Tensor of the input's shape
        Probabilities in [0, 1] (or 0/1 labels).
    weight : Tensor broadcastable to the input's shape, optional
        Elementwise rescaling :math:`w`, as PyTorch's.
    size_average : bool, optional
        Deprecated, as in PyTorch: when given, it sets ``reduction`` as PyTorch's does.
    reduce : bool, optional
        Deprecated, as in PyTorch: when given, it sets ``reduction`` as PyTorch's does.
    reduction : {"mean", "sum", "none"}, default "mean"
        ``"mean"`` divides by the number of elements, as PyTorch's.
    pos_weight : Tensor broadcastable to the input's shape (typically (n_labels,)), optional
        :math:`q`: weight of the positive term, as PyTorch's.
    label_smoothing : float in [0, 1], default 0
        Targets become :math:`(1-\varepsilon) t + \varepsilon/2`.
    sample_weight : Tensor of the input's leading dimensions, optional
        One weight per sample; the mean divides by the total sample weight spread over the elements.

    Returns
    -------
    Tensor
        0-d for ``"mean"``/``"sum"``, the input's shape for ``"none"``.

    Examples
    --------
    >>> import torch
    >>> float(binary_cross_entropy_with_logits(torch.tensor([0.0]), torch.tensor([1.0])))  # ln 2
    0.6931471824645996
    """
    reduction = _reduction_of(size_average, reduce, reduction)
    options = SigmoidOptions(label_smoothing, reduction)
    arguments = _ops.sigmoid_arguments(options) or ()  # None (no operator) becomes (), never unpacked
    operator = None if not arguments else _operator(input, target, weight, pos_weight, sample_weight)
    if operator == "with_grad":
        return _ops.sigmoid_cross_entropy_with_grad(input, target, weight, pos_weight, sample_weight, *arguments)[0]
    if operator == "loss":
        return _ops.sigmoid_cross_entropy(input, target, weight, pos_weight, sample_weight, *arguments)
    return losses.sigmoid_cross_entropy(
        input, target, weight=weight, pos_weight=pos_weight, sample_weight=sample_weight, **options.keywords()
    )


@_pytorch_names()
def binary_cross_entropy(
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: Reduction = "mean",
    *,
    sample_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Binary cross-entropy on probabilities: ``torch.nn.functional.binary_cross_entropy`` (logs clamped at -100).

    See :func:`crossentropy.binary_cross_entropy`; prefer :func:`binary_cross_entropy_with_logits`.

    Parameters
    ----------
    input : Tensor of any shape
        Probabilities in [0, 1].
    target : Tensor of the input's shape
        Probabilities in [0, 1] (or 0/1 labels).
    weight : Tensor broadcastable to the input's shape, optional
        Elementwise rescaling, as PyTorch's.
    size_average : bool, optional
        Deprecated, as in PyTorch: when given, it sets ``reduction`` as PyTorch's does.
    reduce : bool, optional
        Deprecated, as in PyTorch: when given, it sets ``reduction`` as PyTorch's does.
    reduction : {"mean", "sum", "none"}, default "mean"
        ``"mean"`` divides by the number of elements, as PyTorch's.
    sample_weight : Tensor of the input's leading dimensions, optional
        One weight per sample; the mean divides by the total sample weight spread over the elements.

    Returns
    -------
    Tensor
        0-d for ``"mean"``/``"sum"``, the input's shape for ``"none"``.
    """
    reduction = _reduction_of(size_average, reduce, reduction)
    return losses.binary_cross_entropy(input, target, weight=weight, sample_weight=sample_weight, reduction=reduction)


@_pytorch_names()
def nll_loss(
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    size_average: bool | None = None,
    ignore_index: int = -100,
    reduce: bool | None = None,
    reduction: Reduction = "mean",
    *,
    sample_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Negative log-likelihood of log-probabilities: ``torch.nn.functional.nll_loss``.

    See :func:`crossentropy.nll_loss`; classes on dimension 1.

    Parameters
    ----------
    input : Tensor of shape (N, C) or (N, C, d1, ..., dK)
        Log-probabilities, classes on dimension 1.
    target : int Tensor of shape (N,) or (N, d1, ..., dK)
        Class indices.
    weight : Tensor of shape (C,), optional
        Class weights :math:`w_c \ge 0`, as PyTorch's.
    size_average : bool, optional
        Deprecated, as in PyTorch: when given, it sets ``reduction`` as PyTorch's does.
    ignore_index : int, default -100
        Class-index targets equal to it contribute nothing, to the loss nor to the mean's
        denominator.
    reduce : bool, optional
        Deprecated, as in PyTorch: when given, it sets ``reduction`` as PyTorch's does.
    reduction : {"mean", "sum", "none"}, default "mean"
        ``"mean"`` over all-ignored targets gives 0, not NaN.
    sample_weight : Tensor of the target's batch shape, optional
        Per-sample weights :math:`s_n \ge 0`, also in the mean's denominator.

    Returns
    -------
    Tensor
        0-d for ``"mean"``/``"sum"``, the batch shape (the target's) for ``"none"``.
    """
    reduction = _reduction_of(size_average, reduce, reduction)
    return losses.nll_loss(
        input,
        target,
        axis=_class_dim(input),
        weight=weight,
        ignore_index=ignore_index,
        sample_weight=sample_weight,
        reduction=reduction,
    )


@_pytorch_names()
def softmax_focal_loss(
    input: torch.Tensor,
    target: torch.Tensor,
    *,
    gamma: float = 2.0,
    alpha: Any = None,
    ignore_index: int = -100,
    sample_weight: torch.Tensor | None = None,
    reduction: Reduction = "mean",
) -> torch.Tensor:
    r"""Multi-class focal loss (Lin et al. 2017) on logits, classes on dimension 1.

    See :func:`crossentropy.softmax_focal_loss` for the definition and the options.

    Parameters
    ----------
    input : Tensor of shape (N, C) or (N, C, d1, ..., dK)
        Logits, classes on dimension 1.
    target : Tensor
        Class indices of shape (N,) or (N, d1, ..., dK), or class probabilities of the input's
        shape.
    gamma : float >= 0, default 2
        Focusing parameter: down-weights well-classified samples.
    alpha : None, float >= 0 or Tensor of shape (C,), optional
        Class balancing factor; None means 1.
    ignore_index : int, default -100
        Class-index targets equal to it contribute nothing, to the loss nor to the mean's
        denominator.
    sample_weight : Tensor of the target's batch shape, optional
        Per-sample weights :math:`s_n \ge 0`, also in the mean's denominator.
    reduction : {"mean", "sum", "none"}, default "mean"
        ``"mean"`` over all-ignored targets gives 0, not NaN.

    Returns
    -------
    Tensor
        0-d for ``"mean"``/``"sum"``, the batch shape (the target's) for ``"none"``.
    """
    return losses.softmax_focal_loss(
        input,
        target,
        gamma=gamma,
        alpha=alpha,
        axis=_class_dim(input),
        ignore_index=ignore_index,
        sample_weight=sample_weight,
        reduction=reduction,
    )


@_pytorch_names(logits="inputs", targets="targets")  # torchvision's names
def sigmoid_focal_loss(
    inputs: torch.Tensor,
    targets: torch.Tensor,
    alpha: float | None = 0.25,
    gamma: float = 2.0,
    reduction: Reduction = "none",
    *,
    sample_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Binary and multi-label focal loss: ``torchvision.ops.sigmoid_focal_loss``'s signature and defaults.

    Note the default ``reduction="none"``, as torchvision's (the library's own
    :func:`crossentropy.sigmoid_focal_loss` defaults to ``"mean"``). ``alpha=None`` (or a
    negative ``alpha``, torchvision's way) disables the balancing factor.

    Parameters
    ----------
    inputs : Tensor of any shape
        Logits.
    targets : Tensor of the inputs' shape
        Probabilities in [0, 1] (or 0/1 labels).
    alpha : float in [0, 1] or None, default 0.25
        Weight of the positive class; None or negative: no balancing.
    gamma : float >= 0, default 2
        Focusing parameter: down-weights well-classified elements.
    reduction : {"none", "mean", "sum"}, default "none"
        As torchvision's.
    sample_weight : Tensor of the inputs' leading dimensions, optional
        One weight per sample.

    Returns
    -------
    Tensor
        0-d for ``"mean"``/``"sum"``, the inputs' shape for ``"none"``.
    """
    if alpha is not None and not isinstance(alpha, torch.Tensor) and alpha < 0:
        alpha = None
    return losses.sigmoid_focal_loss(
        inputs, targets, gamma=gamma, alpha=alpha, sample_weight=sample_weight, reduction=reduction
    )


@_pytorch_names()
def poly1_cross_entropy(
    input: torch.Tensor,
    target: torch.Tensor,
    *,
    epsilon: float = 1.0,
    weight: torch.Tensor | None = None,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    sample_weight: torch.Tensor | None = None,
    reduction: Reduction = "mean",
) -> torch.Tensor:
    r"""Poly-1 cross-entropy (Leng et al. 2022): CE + epsilon (1 - p_t), classes on dimension 1.

    See :func:`crossentropy.poly1_cross_entropy`.

    Parameters
    ----------
    input : Tensor of shape (N, C) or (N, C, d1, ..., dK)
        Logits, classes on dimension 1.
    target : Tensor
        Class indices of shape (N,) or (N, d1, ..., dK), or class probabilities of the input's
        shape.
    epsilon : float >= -1, default 1
        Weight of the polynomial term :math:`1 - p_t`.
    weight : Tensor of shape (C,), optional
        Class weights :math:`w_c \ge 0`, as ``F.cross_entropy``'s.
    ignore_index : int, default -100
        Class-index targets equal to it contribute nothing, to the loss nor to the mean's
        denominator.
    label_smoothing : float in [0, 1], default 0
        PyTorch's label smoothing.
    sample_weight : Tensor of the target's batch shape, optional
        Per-sample weights :math:`s_n \ge 0`, also in the mean's denominator.
    reduction : {"mean", "sum", "none"}, default "mean"
        ``"mean"`` over all-ignored targets gives 0, not NaN.

    Returns
    -------
    Tensor
        0-d for ``"mean"``/``"sum"``, the batch shape (the target's) for ``"none"``.
    """
    return losses.poly1_cross_entropy(
        input,
        target,
        epsilon=epsilon,
        axis=_class_dim(input),
        weight=weight,
        ignore_index=ignore_index,
        label_smoothing=label_smoothing,
        sample_weight=sample_weight,
        reduction=reduction,
    )


@_pytorch_names()
def generalized_cross_entropy(
    input: torch.Tensor,
    target: torch.Tensor,
    *,
    q: float = 0.7,
    ignore_index: int = -100,
    sample_weight: torch.Tensor | None = None,
    reduction: Reduction = "mean",
) -> torch.Tensor:
    r"""Generalized cross-entropy (Zhang & Sabuncu 2018), classes on dimension 1.

    See :func:`crossentropy.generalized_cross_entropy`.

    Parameters
    ----------
    input : Tensor of shape (N, C) or (N, C, d1, ..., dK)
        Logits, classes on dimension 1.
    target : Tensor
        Class indices of shape (N,) or (N, d1, ..., dK), or class probabilities of the input's
        shape.
    q : float in (0, 1], default 0.7
        The exponent (the paper uses 0.7).
    ignore_index : int, default -100
        Class-index targets equal to it contribute nothing, to the loss nor to the mean's
        denominator.
    sample_weight : Tensor of the target's batch shape, optional
        Per-sample weights :math:`s_n \ge 0`, also in the mean's denominator.
    reduction : {"mean", "sum", "none"}, default "mean"
        ``"mean"`` over all-ignored targets gives 0, not NaN.

    Returns
    -------
    Tensor
        0-d for ``"mean"``/``"sum"``, the batch shape (the target's) for ``"none"``.
    """
    return robust.generalized_cross_entropy(
        input,
        target,
        q=q,
        axis=_class_dim(input),
        ignore_index=ignore_index,
        sample_weight=sample_weight,
        reduction=reduction,
    )


@_pytorch_names()
def symmetric_cross_entropy(
    input: torch.Tensor,
    target: torch.Tensor,
    *,
    alpha: float = 0.1,
    beta: float = 1.0,
    log_zero: float = -4.0,
    ignore_index: int = -100,
    sample_weight: torch.Tensor | None = None,
    reduction: Reduction = "mean",
) -> torch.Tensor:
    r"""Symmetric cross-entropy (Wang et al. 2019), classes on dimension 1.

    See :func:`crossentropy.symmetric_cross_entropy`.

    Parameters
    ----------
    input : Tensor of shape (N, C) or (N, C, d1, ..., dK)
        Logits, classes on dimension 1.
    target : Tensor
        Class indices of shape (N,) or (N, d1, ..., dK), or class probabilities of the input's
        shape.
    alpha, beta : float >= 0, default 0.1 and 1.0
        Weights of the cross-entropy and of the reverse cross-entropy.
    log_zero : float < 0, default -4.0
        The value that replaces :math:`\log 0` in the reverse term.
    ignore_index : int, default -100
        Class-index targets equal to it contribute nothing, to the loss nor to the mean's
        denominator.
    sample_weight : Tensor of the target's batch shape, optional
        Per-sample weights :math:`s_n \ge 0`, also in the mean's denominator.
    reduction : {"mean", "sum", "none"}, default "mean"
        ``"mean"`` over all-ignored targets gives 0, not NaN.

    Returns
    -------
    Tensor
        0-d for ``"mean"``/``"sum"``, the batch shape (the target's) for ``"none"``.
    """
    return robust.symmetric_cross_entropy(
        input,
        target,
        alpha=alpha,
        beta=beta,
        log_zero=log_zero,
        axis=_class_dim(input),
        ignore_index=ignore_index,
        sample_weight=sample_weight,
        reduction=reduction,
    )


@_pytorch_names()
def forward_corrected_cross_entropy(
    input: torch.Tensor,
    target: torch.Tensor,
    transition: torch.Tensor,
    *,
    ignore_index: int = -100,
    sample_weight: torch.Tensor | None = None,
    reduction: Reduction = "mean",
) -> torch.Tensor:
    r"""Forward-corrected cross-entropy for noisy labels (Patrini et al. 2017), classes on dimension 1.

    See :func:`crossentropy.forward_corrected_cross_entropy`.

    Parameters
    ----------
    input : Tensor of shape (N, C) or (N, C, d1, ..., dK)
        Logits of the clean classes, classes on dimension 1.
    target : int Tensor of shape (N,) or (N, d1, ..., dK)
        Observed (noisy) class indices.
    transition : Tensor of shape (C, C)
        Row-stochastic noise matrix, ``transition[i, j] = P(noisy = j | clean = i)``.
    ignore_index : int, default -100
        Class-index targets equal to it contribute nothing, to the loss nor to the mean's
        denominator.
    sample_weight : Tensor of the target's batch shape, optional
        Per-sample weights :math:`s_n \ge 0`, also in the mean's denominator.
    reduction : {"mean", "sum", "none"}, default "mean"
        ``"mean"`` over all-ignored targets gives 0, not NaN.

    Returns
    -------
    Tensor
        0-d for ``"mean"``/``"sum"``, the batch shape (the target's) for ``"none"``.
    """
    return robust.forward_corrected_cross_entropy(
        input,
        target,
        transition,
        axis=_class_dim(input),
        ignore_index=ignore_index,
        sample_weight=sample_weight,
        reduction=reduction,
    )


@_pytorch_names()
def backward_corrected_cross_entropy(
    input: torch.Tensor,
    target: torch.Tensor,
    transition: torch.Tensor,
    *,
    ignore_index: int = -100,
    sample_weight: torch.Tensor | None = None,
    reduction: Reduction = "mean",
) -> torch.Tensor:
    r"""Backward-corrected cross-entropy for noisy labels (Patrini et al. 2017), classes on dimension 1.

    See :func:`crossentropy.backward_corrected_cross_entropy`.

    Parameters
    ----------
    input : Tensor of shape (N, C) or (N, C, d1, ..., dK)
        Logits, classes on dimension 1.
    target : int Tensor of shape (N,) or (N, d1, ..., dK)
        Observed (noisy) class indices.
    transition : Tensor of shape (C, C)
        Row-stochastic noise matrix, ``transition[i, j] = P(noisy = j | clean = i)``; invertible and well conditioned.
    ignore_index : int, default -100
        Class-index targets equal to it contribute nothing, to the loss nor to the mean's
        denominator.
    sample_weight : Tensor of the target's batch shape, optional
        Per-sample weights :math:`s_n \ge 0`, also in the mean's denominator.
    reduction : {"mean", "sum", "none"}, default "mean"
        ``"mean"`` over all-ignored targets gives 0, not NaN.

    Returns
    -------
    Tensor
        0-d for ``"mean"``/``"sum"``, the batch shape (the target's) for ``"none"``.
    """
    return robust.backward_corrected_cross_entropy(
        input,
        target,
        transition,
        axis=_class_dim(input),
        ignore_index=ignore_index,
        sample_weight=sample_weight,
        reduction=reduction,
    )
