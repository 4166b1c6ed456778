"""``nn.Module`` forms of :mod:`crossentropy.torch.functional`: configuration only, the work is the functions'.

:class:`CrossEntropyLoss`, :class:`NLLLoss`, :class:`BCEWithLogitsLoss` and :class:`BCELoss`
take the constructor arguments of their ``torch.nn`` namesakes (tensors such as ``weight`` are
buffers, so ``.to(device)`` moves them) plus the keyword extras of the functions;
``sample_weight`` is an argument of ``forward``, since it changes with every batch.

>>> import torch
>>> import crossentropy.torch as cet
>>> criterion = cet.CrossEntropyLoss(label_smoothing=0.1, z_loss=1e-4)
>>> criterion
CrossEntropyLoss(label_smoothing=0.1, z_loss=0.0001)
>>> loss = criterion(torch.randn(4, 10, requires_grad=True), torch.tensor([1, 0, 9, 3]))
>>> loss.shape
torch.Size([])
"""

from __future__ import annotations

import inspect
import math
from typing import Any, ClassVar

import torch
from torch import nn

from .._typing import Reduction
from .._validation import check_number
from ..losses import LossStats
from . import functional as F
from .functional import _reduction_of
from .linear import linear_cross_entropy

__all__ = [
    "BCELoss",
    "BCEWithLogitsLoss",
    "BackwardCorrectedCrossEntropyLoss",
    "CrossEntropyLoss",
    "ForwardCorrectedCrossEntropyLoss",
    "GeneralizedCrossEntropyLoss",
    "LinearCrossEntropyLoss",
    "NLLLoss",
    "Poly1CrossEntropyLoss",
    "SigmoidFocalLoss",
    "SoftmaxFocalLoss",
    "SymmetricCrossEntropyLoss",
]


class _Loss(nn.Module):
    """Options as attributes, tensors as buffers; ``extra_repr`` lists the options that differ from
    the constructor's defaults."""

    def __init__(self, *, tensors: dict[str, torch.Tensor | None], **options: Any) -> None:
        super().__init__()
        for name, tensor in tensors.items():
            self.register_buffer(name, tensor)
        for name, value in options.items():
            setattr(self, name, value)
        self._option_names = tuple(options)

    def extra_repr(self) -> str:
        defaults = inspect.signature(type(self).__init__).parameters
        shown = [
            f"{name}={getattr(self, name)!r}"
            for name in self._option_names
            if name not in defaults or getattr(self, name) != defaults[name].default
        ]
        return ", ".join(shown)


class CrossEntropyLoss(_Loss):
    """:func:`crossentropy.torch.cross_entropy` as a module: ``torch.nn.CrossEntropyLoss`` plus z-loss and soft-capping.

    ``forward(input, target, *, sample_weight=None, normalizer=None)``: see
    :func:`crossentropy.torch.cross_entropy`.

    Parameters
    ----------
    weight : Tensor of shape (C,), optional
        Class weights, as PyTorch's (a buffer).
    size_average : bool, optional
        Deprecated, as in PyTorch: when given, it sets ``reduction`` as PyTorch's does.
    ignore_index : int, default -100
        Class-index targets equal to it contribute nothing.
    reduce : bool, optional
        Deprecated, as in PyTorch: when given, it sets ``reduction`` as PyTorch's does.
    reduction : {"mean", "sum", "none"}, default "mean"
        ``"mean"`` over all-ignored targets gives 0, not NaN.
    label_smoothing : float in [0, 1], default 0
        PyTorch's label smoothing.
    z_loss : float >= 0, default 0
        The z-loss coefficient (PaLM).
    softcap : float > 0, optional
        Soft-cap of the logits (Gemma 2).
    inplace : bool, default False
        Write the gradient over the logits during the forward call.
    temperature : float > 0, default 1
        The logits are divided by it first.
    return_stats : bool, default False
        ``forward`` returns ``(loss, LossStats)``.
    """

    weight: torch.Tensor | None
    ignore_index: int
    reduction: Reduction
    label_smoothing: float
    z_loss: float
    softcap: float | None
    inplace: bool
    temperature: float
    return_stats: bool

    def __init__(
        self,
        weight: torch.Tensor | None = None,
        size_average: bool | None = None,
        ignore_index: int = -100,
        reduce: bool | None = None,
        reduction: Reduction = "mean",
        label_smoothing: float = 0.0,
        *,
        z_loss: float = 0.0,
        softcap: float | None = None,
        inplace: bool = False,
        temperature: float = 1.0,
        return_stats: bool = False,
    ) -> None:
        super().__init__(
            tensors={"weight": weight},
            ignore_index=ignore_index,
            reduction=_reduction_of(size_average, reduce, reduction),
            label_smoothing=label_smoothing,
            z_loss=z_loss,
            softcap=softcap,
            inplace=inplace,
            temperature=temperature,
            return_stats=return_stats,
        )

    def forward(
        self,
        input: torch.Tensor,
        target: torch.Tensor,
        *,
        sample_weight: torch.Tensor | None = None,
        normalizer: float | torch.Tensor | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, LossStats]:
        return F.cross_entropy(
            input,
            target,
            self.weight,
            normalizer=normalizer,
            return_stats=self.return_stats,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
            label_smoothing=self.label_smoothing,
            z_loss=self.z_loss,
            softcap=self.softcap,
            sample_weight=sample_weight,
            inplace=self.inplace,
            temperature=self.temperature,
        )


class NLLLoss(_Loss):
    """:func:`crossentropy.torch.nll_loss` as a module: ``torch.nn.NLLLoss``.

    ``forward(input, target, *, sample_weight=None)``.

    Parameters
    ----------
    weight : Tensor of shape (C,), optional
        Class weights, as PyTorch's (a buffer).
    size_average : bool, optional
        Deprecated, as in PyTorch: when given, it sets ``reduction`` as PyTorch's does.
    ignore_index : int, default -100
        Class-index targets equal to it contribute nothing.
    reduce : bool, optional
        Deprecated, as in PyTorch: when given, it sets ``reduction`` as PyTorch's does.
    reduction : {"mean", "sum", "none"}, default "mean"
        ``"mean"`` over all-ignored targets gives 0, not NaN.
    """

    weight: torch.Tensor | None
    ignore_index: int
    reduction: Reduction

    def __init__(
        self,
        weight: torch.Tensor | None = None,
        size_average: bool | None = None,
        ignore_index: int = -100,
        reduce: bool | None = None,
        reduction: Reduction = "mean",
    ) -> None:
        super().__init__(
            tensors={"weight": weight},
            ignore_index=ignore_index,
            reduction=_reduction_of(size_average, reduce, reduction),
        )

    def forward(
        self, input: torch.Tensor, target: torch.Tensor, *, sample_weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        return F.nll_loss(
            input,
            target,
            self.weight,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
            sample_weight=sample_weight,
        )


class BCEWithLogitsLoss(_Loss):
    r""":func:`binary_cross_entropy_with_logits` as a module: ``torch.nn.BCEWithLogitsLoss``, label smoothing.

    ``forward(input, target, *, sample_weight=None)``.

    Parameters
    ----------
    weight : Tensor broadcastable to the input's shape, optional
        Elementwise rescaling, as PyTorch's (a buffer).
    size_average : bool, optional
        Deprecated, as in PyTorch: when given, it sets ``reduction`` as PyTorch's does.
    reduce : bool, optional
        Deprecated, as in PyTorch: when given, it sets ``reduction`` as PyTorch's does.
    reduction : {"mean", "sum", "none"}, default "mean"
        As PyTorch's.
    pos_weight : Tensor broadcastable to the input's shape, optional
        Weight of the positive term, as PyTorch's (a buffer).
    label_smoothing : float in [0, 1], default 0
        Targets become :math:`(1-\varepsilon) t + \varepsilon/2`.
    """

    weight: torch.Tensor | None
    reduction: Reduction
    pos_weight: torch.Tensor | None
    label_smoothing: float

    def __init__(
        self,
        weight: torch.Tensor | None = None,
        size_average: bool | None = None,
        reduce: bool | None = None,
        reduction: Reduction = "mean",
        pos_weight: torch.Tensor | None = None,
        *,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__(
            tensors={"weight": weight, "pos_weight": pos_weight},
            reduction=_reduction_of(size_average, reduce, reduction),
            label_smoothing=label_smoothing,
        )

    def forward(
        self, input: torch.Tensor, target: torch.Tensor, *, sample_weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(
            input,
            target,
            self.weight,
            reduction=self.reduction,
            pos_weight=self.pos_weight,
            label_smoothing=self.label_smoothing,
            sample_weight=sample_weight,
        )


class BCELoss(_Loss):
    """:func:`crossentropy.torch.binary_cross_entropy` as a module: ``torch.nn.BCELoss``.

    ``forward(input, target, *, sample_weight=None)``.

    Parameters
    ----------
    weight : Tensor broadcastable to the input's shape, optional
        Elementwise rescaling, as PyTorch's (a buffer).
    size_average : bool, optional
        Deprecated, as in PyTorch: when given, it sets ``reduction`` as PyTorch's does.
    reduce : bool, optional
        Deprecated, as in PyTorch: when given, it sets ``reduction`` as PyTorch's does.
    reduction : {"mean", "sum", "none"}, default "mean"
        As PyTorch's.
    """

    weight: torch.Tensor | None
    reduction: Reduction

    def __init__(
        self,
        weight: torch.Tensor | None = None,
        size_average: bool | None = None,
        reduce: bool | None = None,
        reduction: Reduction = "mean",
    ) -> None:
        super().__init__(tensors={"weight": weight}, reduction=_reduction_of(size_average, reduce, reduction))

    def forward(
        self, input: torch.Tensor, target: torch.Tensor, *, sample_weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        return F.binary_cross_entropy(input, target, self.weight, reduction=self.reduction, sample_weight=sample_weight)


class SoftmaxFocalLoss(_Loss):
    """:func:`crossentropy.torch.softmax_focal_loss` as a module.

    ``forward(input, target, *, sample_weight=None)``.

    Parameters
    ----------
    gamma : float >= 0, default 2
        Focusing parameter.
    alpha : None, float >= 0 or Tensor of shape (C,), optional
        Class balancing factor; None means 1.
    ignore_index : int, default -100
        Class-index targets equal to it contribute nothing.
    reduction : {"mean", "sum", "none"}, default "mean"
        ``"mean"`` over all-ignored targets gives 0, not NaN.
    """

    gamma: float
    alpha: Any
    ignore_index: int
    reduction: Reduction

    def __init__(
        self, *, gamma: float = 2.0, alpha: Any = None, ignore_index: int = -100, reduction: Reduction = "mean"
    ) -> None:
        tensor_alpha = isinstance(alpha, torch.Tensor)
        super().__init__(
            tensors={"alpha_weights": alpha if tensor_alpha else None},
            gamma=gamma,
            alpha=None if tensor_alpha else alpha,
            ignore_index=ignore_index,
            reduction=reduction,
        )

    def forward(
        self, input: torch.Tensor, target: torch.Tensor, *, sample_weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        alpha = self.alpha_weights if self.alpha_weights is not None else self.alpha
        return F.softmax_focal_loss(
            input,
            target,
            gamma=self.gamma,
            alpha=alpha,
            ignore_index=self.ignore_index,
            sample_weight=sample_weight,
            reduction=self.reduction,
        )


class SigmoidFocalLoss(_Loss):
    """:func:`crossentropy.torch.sigmoid_focal_loss` as a module (torchvision's defaults: ``reduction="none"``).

    ``forward(input, target, *, sample_weight=None)``.

    Parameters
    ----------
    alpha : float in [0, 1] or None, default 0.25
        Weight of the positive class; None or negative: no balancing.
    gamma : float >= 0, default 2
        Focusing parameter.
    reduction : {"none", "mean", "sum"}, default "none"
        As torchvision's.
    """

    alpha: float | None
    gamma: float
    reduction: Reduction

    def __init__(self, alpha: float | None = 0.25, gamma: float = 2.0, reduction: Reduction = "none") -> None:
        super().__init__(tensors={}, alpha=alpha, gamma=gamma, reduction=reduction)

    def forward(
        self, input: torch.Tensor, target: torch.Tensor, *, sample_weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        return F.sigmoid_focal_loss(input, target, self.alpha, self.gamma, self.reduction, sample_weight=sample_weight)


class Poly1CrossEntropyLoss(_Loss):
    """:func:`crossentropy.torch.poly1_cross_entropy` as a module.

    ``forward(input, target, *, sample_weight=None)``.

    Parameters
    ----------
    epsilon : float >= -1, default 1
        Weight of the polynomial term.
    weight : Tensor of shape (C,), optional
        Class weights, as PyTorch's (a buffer).
    ignore_index : int, default -100
        Class-index targets equal to it contribute nothing.
    label_smoothing : float in [0, 1], default 0
        PyTorch's label smoothing.
    reduction : {"mean", "sum", "none"}, default "mean"
        ``"mean"`` over all-ignored targets gives 0, not NaN.
    """

    epsilon: float
    weight: torch.Tensor | None
    ignore_index: int
    label_smoothing: float
    reduction: Reduction

    def __init__(
        self,
        *,
        epsilon: float = 1.0,
        weight: torch.Tensor | None = None,
        ignore_index: int = -100,
        label_smoothing: float = 0.0,
        reduction: Reduction = "mean",
    ) -> None:
        super().__init__(
            tensors={"weight": weight},
            epsilon=epsilon,
            ignore_index=ignore_index,
            label_smoothing=label_smoothing,
            reduction=reduction,
        )

    def forward(
        self, input: torch.Tensor, target: torch.Tensor, *, sample_weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        return F.poly1_cross_entropy(
            input,
            target,
            epsilon=self.epsilon,
            weight=self.weight,
            ignore_index=self.ignore_index,
            label_smoothing=self.label_smoothing,
            sample_weight=sample_weight,
            reduction=self.reduction,
        )


class GeneralizedCrossEntropyLoss(_Loss):
    """:func:`crossentropy.torch.generalized_cross_entropy` as a module.

    ``forward(input, target, *, sample_weight=None)``.

    Parameters
    ----------
    q : float in (0, 1], default 0.7
        The exponent.
    ignore_index : int, default -100
        Class-index targets equal to it contribute nothing.
    reduction : {"mean", "sum", "none"}, default "mean"
        ``"mean"`` over all-ignored targets gives 0, not NaN.
    """

    q: float
    ignore_index: int
    reduction: Reduction

    def __init__(self, *, q: float = 0.7, ignore_index: int = -100, reduction: Reduction = "mean") -> None:
        super().__init__(tensors={}, q=q, ignore_index=ignore_index, reduction=reduction)

    def forward(
        self, input: torch.Tensor, target: torch.Tensor, *, sample_weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        return F.generalized_cross_entropy(
            input,
            target,
            q=self.q,
            ignore_index=self.ignore_index,
            sample_weight=sample_weight,
            reduction=self.reduction,
        )


class SymmetricCrossEntropyLoss(_Loss):
    """:func:`crossentropy.torch.symmetric_cross_entropy` as a module.

    ``forward(input, target, *, sample_weight=None)``.

    Parameters
    ----------
    alpha, beta : float >= 0, default 0.1 and 1.0
        Weights of the cross-entropy and of the reverse cross-entropy.
    log_zero : float < 0, default -4.0
        The value that replaces log 0 in the reverse term.
    ignore_index : int, default -100
        Class-index targets equal to it contribute nothing.
    reduction : {"mean", "sum", "none"}, default "mean"
        ``"mean"`` over all-ignored targets gives 0, not NaN.
    """

    alpha: float
    beta: float
    log_zero: float
    ignore_index: int
    reduction: Reduction

    def __init__(
        self,
        *,
        alpha: float = 0.1,
        beta: float = 1.0,
        log_zero: float = -4.0,
        ignore_index: int = -100,
        reduction: Reduction = "mean",
    ) -> None:
        super().__init__(
            tensors={}, alpha=alpha, beta=beta, log_zero=log_zero, ignore_index=ignore_index, reduction=reduction
        )

    def forward(
        self, input: torch.Tensor, target: torch.Tensor, *, sample_weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        return F.symmetric_cross_entropy(
            input,
            target,
            alpha=self.alpha,
            beta=self.beta,
            log_zero=self.log_zero,
            ignore_index=self.ignore_index,
            sample_weight=sample_weight,
            reduction=self.reduction,
        )


class _TransitionCorrectedLoss(_Loss):
    """A noise-corrected loss (the subclass's ``_loss``) as a module; the transition matrix is a buffer."""

    transition: torch.Tensor
    ignore_index: int
    reduction: Reduction

    _loss: ClassVar[Any]

    def __init__(self, transition: torch.Tensor, *, ignore_index: int = -100, reduction: Reduction = "mean") -> None:
        super().__init__(tensors={"transition": transition}, ignore_index=ignore_index, reduction=reduction)

    def forward(
        self, input: torch.Tensor, target: torch.Tensor, *, sample_weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self._loss(
            input,
            target,
            self.transition,
            ignore_index=self.ignore_index,
            sample_weight=sample_weight,
            reduction=self.reduction,
        )


class ForwardCorrectedCrossEntropyLoss(_TransitionCorrectedLoss):
    """:func:`crossentropy.torch.forward_corrected_cross_entropy` as a module; the transition matrix is a buffer.

    ``forward(input, target, *, sample_weight=None)``.

    Parameters
    ----------
    transition : Tensor of shape (C, C)
        Row-stochastic noise matrix, ``transition[i, j] = P(noisy = j | clean = i)`` (a buffer).
    ignore_index : int, default -100
        Class-index targets equal to it contribute nothing.
    reduction : {"mean", "sum", "none"}, default "mean"
        ``"mean"`` over all-ignored targets gives 0, not NaN.
    """

    _loss = staticmethod(F.forward_corrected_cross_entropy)


class BackwardCorrectedCrossEntropyLoss(_TransitionCorrectedLoss):
    """:func:`crossentropy.torch.backward_corrected_cross_entropy` as a module; the transition matrix is a buffer.

    ``forward(input, target, *, sample_weight=None)``.

    Parameters
    ----------
    transition : Tensor of shape (C, C)
        Row-stochastic, invertible noise matrix (a buffer).
    ignore_index : int, default -100
        Class-index targets equal to it contribute nothing.
    reduction : {"mean", "sum", "none"}, default "mean"
        ``"mean"`` over all-ignored targets gives 0, not NaN.
    """

    _loss = staticmethod(F.backward_corrected_cross_entropy)


class LinearCrossEntropyLoss(_Loss):
    r""":func:`crossentropy.torch.linear_cross_entropy` as a module: ``torch.nn.LinearCrossEntropyLoss``.

    The same constructor (its output projection is ``self.linear``, an ``nn.Linear(in_features,
    num_classes * prod(out_features))``, so state dicts load either way; class weights are the
    buffer ``weight``) plus the keyword extras of the function. ``forward(input, target, *,
    sample_weight=None)`` is ``linear_cross_entropy(input, self.linear.weight, target,
    linear_bias=self.linear.bias, ...)``, the weight and bias reshaped to ``(num_classes,
    *out_features, in_features)`` for PyTorch's K-dimensional loss. ``normalizer`` (the step's token
    count) is an argument of ``forward`` too, since it changes with every step.

    Parameters
    ----------
    in_features : int
        :math:`H`, the size of the hidden states.
    num_classes : int
        :math:`V`, the number of classes (the vocabulary).
    out_features : tuple of int, default ()
        PyTorch's extra class dimensions (K-dimensional targets).
    bias : bool, default False
        Whether the projection has a bias.
    device, dtype : optional
        Of the projection's parameters, as ``nn.Linear``'s.
    reduction : {"mean", "sum", "none"}, default "mean"
        As :func:`crossentropy.torch.linear_cross_entropy`'s.
    weight : Tensor of shape (num_classes,), optional
        Class weights (the buffer ``weight``).
    ignore_index : int, optional
        None means -100, PyTorch's rule.
    label_smoothing : float in [0, 1], default 0
        PyTorch's label smoothing.
    options : torch.nn.LinearCrossEntropyOptions, optional
        PyTorch's chunking options.
    z_loss, softcap, temperature, shift, accumulation_dtype, filter_eps, chunk_size : optional
        The keyword extras of :func:`crossentropy.torch.linear_cross_entropy`, with its defaults.

    Examples
    --------
    >>> import torch
    >>> import crossentropy.torch as cet
    >>> head = cet.LinearCrossEntropyLoss(16, 50, bias=True, label_smoothing=0.1)
    >>> loss = head(torch.randn(6, 16), torch.randint(0, 50, (6,)))
    >>> loss.shape
    torch.Size([])
    """

    num_classes: int
    out_features: tuple[int, ...]
    reduction: Reduction
    weight: torch.Tensor | None
    ignore_index: int | None
    label_smoothing: float
    options: Any
    z_loss: float
    softcap: float | None
    temperature: float
    shift: bool
    accumulation_dtype: torch.dtype | None
    filter_eps: float | None
    chunk_size: int | None
    linear: nn.Linear

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        *,
        out_features: tuple[int, ...] = (),
        bias: bool = False,
        device: Any = None,
        dtype: Any = None,
        reduction: Reduction = "mean",
        weight: torch.Tensor | None = None,
        ignore_index: int | None = None,
        label_smoothing: float = 0.0,
        options: Any = None,
        z_loss: float = 0.0,
        softcap: float | None = None,
        temperature: float = 1.0,
        shift: bool = False,
        accumulation_dtype: torch.dtype | None = None,
        filter_eps: float | None = None,
        chunk_size: int | None = None,
    ) -> None:
        if weight is not None and tuple(weight.shape) != (num_classes,):
            raise ValueError(f"`weight` must have shape ({num_classes},); got {tuple(weight.shape)}")
        super().__init__(
            tensors={"weight": weight},
            num_classes=num_classes,
            out_features=tuple(out_features),
            reduction=reduction,
            ignore_index=ignore_index,
            label_smoothing=check_number("label_smoothing", label_smoothing, low=0.0, high=1.0),
            options=options,
            z_loss=z_loss,
            softcap=softcap,
            temperature=temperature,
            shift=shift,
            accumulation_dtype=accumulation_dtype,
            filter_eps=filter_eps,
            chunk_size=chunk_size,
        )
        outputs = num_classes * math.prod(self.out_features)
        self.linear = nn.Linear(in_features, outputs, bias=bias, device=device, dtype=dtype)

    def forward(
        self,
        input: torch.Tensor,
        target: torch.Tensor,
        *,
        sample_weight: torch.Tensor | None = None,
        normalizer: float | torch.Tensor | None = None,
    ) -> torch.Tensor:
        shape = (self.num_classes, *self.out_features)
        bias = self.linear.bias
        return linear_cross_entropy(
            input,
            self.linear.weight.reshape(*shape, self.linear.in_features) if self.out_features else self.linear.weight,
            target,
            linear_bias=bias.reshape(shape) if bias is not None and self.out_features else bias,
            weight=self.weight,
            reduction=self.reduction,
            ignore_index=self.ignore_index,
            label_smoothing=self.label_smoothing,
            options=self.options,
            z_loss=self.z_loss,
            softcap=self.softcap,
            temperature=self.temperature,
            sample_weight=sample_weight,
            normalizer=normalizer,
            shift=self.shift,
            accumulation_dtype=self.accumulation_dtype,
            filter_eps=self.filter_eps,
            chunk_size=self.chunk_size,
        )
