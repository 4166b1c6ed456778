r"""Classification losses on logits and on probabilities, and their analytic gradients.

Every loss here takes logits (or probabilities, or log-probabilities, as its name says) first
and targets second, works on NumPy, PyTorch, JAX and CuPy arrays, and returns the kind of array
it was given. On PyTorch tensors autograd flows through the plain functions; the
``*_with_grad`` twins return ``(loss, dlogits)`` from closed-form gradients, the seam where the
fused kernels plug in.

Conventions shared by every loss (each docstring restates what applies):

* The class axis is ``axis=-1``; integer targets are class indices (``ignore_index=-100``
  drops a sample), floating targets are probabilities of the logits' shape.
* ``reduction="mean"`` divides by the total weight of the samples that count: with index
  targets :math:`\sum_n s_n w_{y_n}` over non-ignored samples (PyTorch's weighted mean, with
  ``s`` the ``sample_weight`` and ``w`` the class ``weight``), with probability targets
  :math:`\sum_n s_n` (that is ``N``). When that total is zero (every target ignored) the loss
  is 0 with a zero gradient, not NaN: a deliberate difference from PyTorch.
* ``reduction="none"`` returns one loss per sample; the ``*_with_grad`` gradient is then the
  gradient of their sum.
* Half precision is accumulated in float32; results come back in the input's dtype.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from functools import cached_property
from typing import Literal, NamedTuple, TypeAlias, overload

import array_api_compat
import numpy as np

from . import kernels
from ._array import (
    as_namespace_array,
    compute_dtype,
    concrete_bool,
    get_namespace,
    in_host_memory,
    may_overlap,
    onehot_mask,
    same_memory,
    take_last,
    xmul,
)
from ._inputs import (
    ClassInputs,
    mean_scale,
    prepare_class_inputs,
    prepare_class_weight,
    reduce_loss,
    total,
    weighted_rows,
)
from ._typing import Array, ArrayLike, DType, Namespace, Reduction
from ._validation import (
    check_floating,
    check_in_unit_interval,
    check_nonnegative,
    check_not_empty,
    check_number,
    check_reduction,
    check_shape,
    shown,
)
from .special import _shift_and_log_total, stable_log_sigmoid

__all__ = [
    "LossStats",
    "binary_cross_entropy",
    "nll_loss",
    "poly1_cross_entropy",
    "sigmoid_cross_entropy",
    "sigmoid_cross_entropy_with_grad",
    "sigmoid_focal_loss",
    "softmax_cross_entropy",
    "softmax_cross_entropy_with_grad",
    "softmax_focal_loss",
]


# --------------------------------------------------------------------------------------------
# Softmax cross-entropy: shared pieces
# --------------------------------------------------------------------------------------------


class LossStats(NamedTuple):
    r"""Per-token statistics of the softmax cross-entropy, from the same pass over the logits as the loss.

    Each has the targets' shape (the batch shape), for class-index targets, of the logits
    :math:`u` the loss reads (divided by the temperature, then soft-capped). Positions that take
    no part in the loss (target ``ignore_index``, or a sample weight of 0) hold 0 (``False``).

    Attributes
    ----------
    lse : array
        :math:`\operatorname{LSE}(u_n) = \log \sum_c e^{u_{n,c}}`, the logits' dtype; the
        log-probability of class :math:`c` is :math:`u_{n,c} - \operatorname{LSE}(u_n)`.
    entropy : array
        :math:`H_n = -\sum_c p_{n,c} \log p_{n,c}` of :math:`p_n = \operatorname{softmax}(u_n)`,
        the logits' dtype.
    accuracy : bool array
        Whether the first maximum of :math:`u_n` (as ``argmax``) is the target: a bool, so that
        ``accuracy.sum()`` counts the hits; average it over the positions that count.
    """

    lse: Array
    entropy: Array
    accuracy: Array


# What the shared body of the softmax losses returns: the loss, (loss, stats), (loss, dlogits) or
# (loss, dlogits, stats), as `with_grad` and `return_stats` ask; the public functions' overloads say which.
_SoftmaxResult: TypeAlias = "Array | tuple[Array, LossStats] | tuple[Array, Array] | tuple[Array, Array, LossStats]"


class _Capped(NamedTuple):
    r"""Logits after the optional soft-cap, normalized: the log-softmax and the half surprisals.

    With :math:`m` the row maximum and :math:`L = \log \sum_c e^{x_c - m}`, the half surprisal
    :math:`-\log p / 2 = (m/2 - x/2) + L/2` takes the difference of halves: exact, as
    :math:`x - m` is (which keeps logits like ``1e4 + x`` exact in float32), and finite where
    :math:`m - x` overflows (logits of ±3e38 in float32). Losses weight the half surprisals
    before they add them up and double the result, which overflows only when the loss itself
    does not fit; doubled, a half surprisal is bitwise the negated log-softmax.
    """

    xp: Namespace
    logits: Array  # (*batch, C) after the soft-cap
    shift: Array  # (*batch, 1) m, or 0 where it is infinite
    shifted: Array  # (*batch, C) x - m (-inf where it overflows: its exponential is 0 all the same)
    log_total: Array  # (*batch, 1) L
    tanh: Array | None  # (*batch, C) tanh(x / c) when soft-capped (for the chain rule), else None

    @property
    def lse(self) -> Array:
        """Log-sum-exp, shape (*batch,)."""
        return self.xp.squeeze(self.log_total + self.shift, axis=-1)

    @property
    def log_probs(self) -> Array:
        """The log-softmax :math:`(x - m) - L` (``-inf`` where :math:`x - m` overflows)."""
        return self.shifted - self.log_total

    def half_surprisal(self) -> Array:
        """:math:`-\\log p / 2` of every class, shape (*batch, C)."""
        return (0.5 * self.shift - 0.5 * self.logits) + 0.5 * self.log_total

    def half_surprisal_at(self, indices: Array) -> Array:
        """:math:`-\\log p_y / 2` of the classes ``indices`` only, shape (*batch,)."""
        xp = self.xp
        shift, log_total = xp.squeeze(self.shift, axis=-1), xp.squeeze(self.log_total, axis=-1)
        return (0.5 * shift - 0.5 * take_last(self.logits, indices, xp)) + 0.5 * log_total


class _GivenLogProbs(NamedTuple):
    """Log-probabilities given by the caller (:func:`nll_loss`), with :class:`_Capped`'s half surprisals."""

    xp: Namespace
    log_probs: Array

    def half_surprisal(self) -> Array:
        return -0.5 * self.log_probs

    def half_surprisal_at(self, indices: Array) -> Array:
        return -0.5 * take_last(self.log_probs, indices, self.xp)


def _cap_and_normalize(x: Array, softcap: float | None, xp: Namespace) -> _Capped:
    """Soft-cap, then the row maximum and the log of the sum of exponentials (:class:`_Capped`)."""
    tanh = None
    if softcap is not None:
        tanh = xp.tanh(x / softcap)
        x = softcap * tanh
    with np.errstate(over="ignore"):  # x - m of ±3e38 logits: -inf, and exp(-inf) = 0 is the exponential wanted
        shift, shifted, log_total = _shift_and_log_total(x, xp, -1)
    return _Capped(xp, x, shift, shifted, log_total, tanh)


def _gather_class_weight(weight: Array, indices: Array, xp: Namespace) -> Array:
    """``weight[indices]`` for any shape of ``indices``."""
    flat = xp.take(weight, xp.reshape(indices, (-1,)), axis=0)
    return xp.reshape(flat, indices.shape)


def _check_softmax_options(
    label_smoothing: object, z_loss: object, softcap: object, reduction: object
) -> tuple[float, float, float | None, Reduction]:
    smoothing = check_number("label_smoothing", label_smoothing, low=0.0, high=1.0)
    z = check_number("z_loss", z_loss, low=0.0)
    cap = None if softcap is None else check_number("softcap", softcap, low=0.0, low_open=True)
    return smoothing, z, cap, check_reduction(reduction)


def check_temperature(temperature: object) -> float:
    """A finite ``temperature > 0``, as a float."""
    return check_number("temperature", temperature, low=0.0, low_open=True)


def check_normalizer(
    normalizer: object, reduction: Reduction, xp: Namespace, like: Array, dtype: DType
) -> float | Array | None:
    """``normalizer`` for ``reduction="mean"``: a number >= 0 (a float), or a 0-d array of ``like``'s
    library >= 0, in ``dtype`` on ``like``'s device (its value checked in host memory only)."""
    if normalizer is None:
        return None
    if reduction != "mean":
        raise ValueError(
            f"`normalizer` replaces the denominator of reduction='mean' and applies to it only; "
            f"got reduction={reduction!r} with normalizer={normalizer!r}"
        )
    if isinstance(normalizer, numbers.Real) and not isinstance(normalizer, bool):
        return check_number("normalizer", normalizer, low=0.0)
    if isinstance(normalizer, bool) or not array_api_compat.is_array_api_obj(normalizer):
        raise TypeError(f"`normalizer` must be a number or a 0-d array; got {type(normalizer).__name__}")
    value = as_namespace_array(normalizer, xp, name="normalizer", like=like)
    if value.ndim != 0:
        raise ValueError(f"`normalizer` must be a number or a 0-d array; got shape {tuple(value.shape)}")
    if not xp.isdtype(value.dtype, ("real floating", "integral")):
        raise TypeError(f"`normalizer` must be a real number; got dtype {value.dtype}")
    value = xp.astype(value, dtype)
    if array_api_compat.device(value) != array_api_compat.device(like):
        value = xp.asarray(value, device=array_api_compat.device(like))
    check_nonnegative("normalizer", value, xp)
    return value


class _PerSample(NamedTuple):
    """Per-sample losses before sample weights and reduction, and what the mean divides by."""

    loss: Array  # (*batch,), zero contribution from ignored samples not yet applied
    class_factor: Array | None  # (*batch,) w_{y_n} for index targets with class weights, else None
    target_weights: Array | None  # (*batch, C) a_{n,c}: the loss is -sum_c a_{n,c} log p_{n,c}; None if not built


def _denominator(row_weight: Array | None, class_factor: Array | None, count: int, xp: Namespace) -> Array | int:
    """Total weight the mean divides by: the sum of s_n * w_{y_n} (ones where absent)."""
    if row_weight is None and class_factor is None:
        return count
    if row_weight is None:
        return total(class_factor, xp)
    if class_factor is None:
        return total(row_weight, xp)
    return total(row_weight * class_factor, xp)


def _cross_entropy_terms(
    source: _Capped | _GivenLogProbs,
    inputs: ClassInputs,
    weight: Array | None,
    smoothing: float,
    *,
    need_target_weights: bool,
) -> _PerSample:
    r"""Per-sample :math:`-\sum_c a_{n,c} \log p_{n,c}` with PyTorch's weight and smoothing rules.

    Index targets: :math:`a_{n,c} = (1-\varepsilon) w_{y_n} [c = y_n] + \frac{\varepsilon}{C} w_c`.
    Probability targets: :math:`a_{n,c} = w_c \left((1-\varepsilon) t_{n,c} + \frac{\varepsilon}{C}\right)`.
    Formed as :math:`2 \sum_c a_{n,c} h_{n,c}` from the half surprisals :math:`h = -\log p / 2`,
    each term weighted before the sum: no step overflows while the loss fits in the dtype.
    Products use ``0 * inf = 0``, so a ``-inf`` logit with no target mass is harmless.
    """
    xp, num_classes = inputs.xp, inputs.num_classes
    if inputs.is_index:
        target_half = source.half_surprisal_at(inputs.indices)
        class_factor = None if weight is None else _gather_class_weight(weight, inputs.indices, xp)
        half_loss = xp.zeros_like(target_half)
        if smoothing < 1.0:
            nll = target_half if class_factor is None else xmul(class_factor, target_half, xp)
            half_loss = half_loss + (1.0 - smoothing) * nll
        if smoothing > 0.0:
            floor, half_surprisal = smoothing / num_classes, source.half_surprisal()
            per_class = floor * half_surprisal if weight is None else xmul(floor * weight, half_surprisal, xp)
            half_loss = half_loss + xp.sum(per_class, axis=-1)
        with np.errstate(over="ignore"):  # overflows only when the loss does not fit: inf, as on the kernels
            loss = 2.0 * half_loss
        target_weights = None
        if need_target_weights:
            like = inputs.logits
            onehot = xp.astype(onehot_mask(inputs.indices, num_classes, xp, like=like), like.dtype)
            peak = (1.0 - smoothing) if class_factor is None else (1.0 - smoothing) * xp.expand_dims(class_factor, -1)
            floor = smoothing / num_classes if weight is None else (smoothing / num_classes) * weight
            target_weights = peak * onehot + floor
        return _PerSample(loss, class_factor, target_weights)

    targets: Array = inputs.probs  # probability targets: not None
    if smoothing > 0.0:
        targets = (1.0 - smoothing) * targets + smoothing / num_classes
    target_weights = targets if weight is None else targets * weight
    with np.errstate(over="ignore"):  # overflows only when the loss does not fit: inf, as on the kernels
        loss = 2.0 * xp.sum(xmul(target_weights, source.half_surprisal(), xp), axis=-1)
    return _PerSample(loss, None, target_weights)


def _softmax_cross_entropy(
    logits: ArrayLike,
    targets: ArrayLike,
    *,
    axis: int,
    weight: ArrayLike | None,
    ignore_index: int | None,
    label_smoothing: float,
    z_loss: float,
    softcap: float | None,
    sample_weight: ArrayLike | None,
    reduction: Reduction,
    with_grad: bool,
    temperature: float = 1.0,
    normalizer: float | Array | None = None,
    return_stats: bool = False,
    out: Array | None = None,
    gradient_over_logits: bool = False,
    check_probabilities: bool = True,
) -> _SoftmaxResult:
    """The softmax cross-entropy functions' shared body.

    ``gradient_over_logits`` (fused kernels only, for :mod:`crossentropy.torch`'s
    ``inplace=True``) writes the gradient into the logits; ``check_probabilities=False`` (for
    :mod:`crossentropy.torch`, as PyTorch) takes probability targets outside [0, 1] as given.
    """
    smoothing, z, cap, reduction = _check_softmax_options(label_smoothing, z_loss, softcap, reduction)
    temperature = check_temperature(temperature)
    inputs = prepare_class_inputs(
        logits,
        targets,
        axis=axis,
        ignore_index=ignore_index,
        sample_weight=sample_weight,
        check_probabilities=check_probabilities,
    )
    xp = inputs.xp
    if return_stats and not inputs.is_index:
        probs: Array = inputs.probs  # probability targets: not None
        raise ValueError(
            "`return_stats` needs class-index targets (the accuracy compares the arg-max with the target); "
            f"got probability targets of dtype {probs.dtype}"
        )
    weight = prepare_class_weight(weight, inputs)
    normalizer = check_normalizer(normalizer, reduction, xp, inputs.stored, inputs.dtype)
    in_place = False
    if out is not None or gradient_over_logits:
        out = logits if gradient_over_logits else out
        in_place = _check_out(out, logits, xp, targets, weight, sample_weight)
        if in_place:
            _check_softmax_in_place(inputs, weighted_smoothing=bool(smoothing and weight is not None), cap=cap)
    backend = kernels.select(xp, inputs.stored, inputs.indices, inputs.probs, weight, inputs.sample_weight)
    if backend is not None:
        # The kernels write the caller's buffer when its layout is theirs (class axis last), else a new one.
        direct = in_place or (out is not None and inputs.axis == inputs.stored.ndim - 1)
        kernel_out = (inputs.stored if in_place else out) if direct else None
        result = _fused_softmax_cross_entropy(
            backend, inputs, weight, smoothing, z, cap, reduction, with_grad=with_grad, out=kernel_out,
            temperature=temperature, normalizer=normalizer, return_stats=return_stats,
        )  # fmt: skip
        if out is not None:
            result = (result[0], _gradient_into(out, result[1]), *result[2:])
        return result
    # The generic code divides a copy of the logits (the kernels scale each logit as they read it).
    scaled_logits = inputs.logits if temperature == 1.0 else inputs.logits / temperature
    capped = _cap_and_normalize(scaled_logits, cap, xp)
    terms = _cross_entropy_terms(capped, inputs, weight, smoothing, need_target_weights=with_grad)

    per_sample = terms.loss
    if z > 0.0:
        z_term = z * capped.lse**2
        per_sample = per_sample + (z_term if terms.class_factor is None else terms.class_factor * z_term)
    row_weight = inputs.row_weight()
    denominator = normalizer
    if denominator is None:
        denominator = _denominator(row_weight, terms.class_factor, int(np.prod(per_sample.shape)), xp)
    loss = reduce_loss(weighted_rows(per_sample, row_weight, xp), denominator, reduction, xp, inputs.out_dtype)
    stats = _reference_stats(capped, inputs, row_weight) if return_stats else None
    if not with_grad:
        return loss if stats is None else (loss, stats)

    # d/dx [-sum_c a_c log p_c + z w lse^2] = (sum_c a_c + 2 z w lse) p - a, then the soft-cap chain rule.
    probs = xp.exp(capped.log_probs)
    coefficient = xp.sum(terms.target_weights, axis=-1)
    if z > 0.0:
        lse_term = 2.0 * z * capped.lse
        coefficient = coefficient + (lse_term if terms.class_factor is None else terms.class_factor * lse_term)
    grad = xp.expand_dims(coefficient, -1) * probs - terms.target_weights
    scale = mean_scale(denominator, reduction, xp, grad)
    if temperature != 1.0:  # d(x / T) / dx
        scale = scale / temperature
    if row_weight is not None:
        scale = xp.expand_dims(row_weight, -1) * scale
    grad = xmul(scale, grad, xp) if row_weight is not None else grad * scale
    if capped.tanh is not None:
        grad = grad * (1.0 - capped.tanh**2)
    grad = inputs.to_caller(grad)
    grad = grad if out is None else _gradient_into(out, grad)
    return (loss, grad) if stats is None else (loss, grad, stats)


def _reference_stats(capped: _Capped, inputs: ClassInputs, row_weight: Array | None) -> LossStats:
    """:class:`LossStats` from the generic code's normalized logits (0 where ``row_weight`` is 0)."""
    xp = capped.xp
    log_probs = capped.log_probs
    entropy = -xp.sum(xmul(xp.exp(log_probs), log_probs, xp), axis=-1)
    hits = xp.argmax(capped.logits, axis=-1) == inputs.indices
    lse = capped.lse
    if row_weight is not None:
        live = row_weight != 0
        lse, entropy = xp.where(live, lse, xp.zeros_like(lse)), xp.where(live, entropy, xp.zeros_like(entropy))
        hits = hits & live
    dtype = inputs.out_dtype
    return LossStats(xp.astype(lse, dtype, copy=False), xp.astype(entropy, dtype, copy=False), hits)


def _check_out(out: Array, logits: ArrayLike, xp: Namespace, *others: object) -> bool:
    """Validate ``out``, the caller's array for the gradient; True when it is ``logits`` itself (in place).

    ``logits`` as the caller passed them; ``others``: the other inputs, which may not carry
    autograd history either (PyTorch's ``out=`` arguments take no part in autograd).
    """
    logits = as_namespace_array(logits, xp, name="logits")  # the same object for an array; lists become one
    if not array_api_compat.is_array_api_obj(out) or array_api_compat.array_namespace(out) is not xp:
        kind = type(logits).__name__
        raise TypeError(f"`out` must be an array of the logits' kind ({kind}); got {type(out).__name__}")
    if array_api_compat.is_jax_array(out):
        raise TypeError(
            "`out` must be a mutable array to receive the gradient, and JAX arrays are immutable; "
            f"use the returned gradient instead; got {type(out).__name__}"
        )
    if tuple(out.shape) != tuple(logits.shape) or out.dtype != logits.dtype:
        raise ValueError(
            f"`out` must be an array of the logits' shape {tuple(logits.shape)} and dtype {logits.dtype}; "
            f"got shape {tuple(out.shape)} and dtype {out.dtype}"
        )
    if array_api_compat.device(out) != array_api_compat.device(logits):
        raise ValueError(
            f"`out` must be on the logits' device {array_api_compat.device(logits)}; got {array_api_compat.device(out)}"
        )
    if array_api_compat.is_torch_array(out):
        import torch

        tracked = [name for name, a in (("out", out), ("logits", logits)) if a.requires_grad]
        tracked += ["an input"] if any(isinstance(a, torch.Tensor) and a.requires_grad for a in others) else []
        if tracked and torch.is_grad_enabled():
            raise ValueError(
                "`out` takes no part in autograd, as PyTorch's `out=` arguments; got "
                f"{' and '.join(tracked)} requiring grad: call without `out`, or under torch.no_grad()"
            )
    if same_memory(out, logits):
        return True
    if not _is_writeable(out):
        raise ValueError(f"`out` must be writeable; got a read-only {type(out).__name__}")
    if not _is_c_contiguous(out):
        raise ValueError(f"`out` must be C-contiguous (row-major, no gaps); got strides {_strides(out)}")
    if may_overlap(out, logits):
        raise ValueError("`out` must not overlap `logits` unless it is `logits` itself (the gradient written in place)")
    return False


def _check_softmax_in_place(inputs: ClassInputs, *, weighted_smoothing: bool, cap: float | None) -> None:
    """The rules of ``out=logits`` for the softmax cross-entropy (:func:`crossentropy.kernels.check_softmax_in_place`),
    the same on every path."""
    stored = inputs.stored
    kernels.check_softmax_in_place(
        contiguous=_is_writeable(stored) and _is_c_contiguous(stored),
        dtype=stored.dtype,
        index_targets=inputs.is_index,
        weighted_smoothing=weighted_smoothing,
        cap=cap,
        on_host=in_host_memory(stored),
    )


def _gradient_into(out: Array, grad: Array) -> Array:
    """``out`` holding ``grad``: copied unless the kernels wrote it there."""
    if grad is out:
        return out
    try:
        out[...] = grad
    except (TypeError, ValueError, NotImplementedError) as error:
        raise TypeError(
            f"`out` must be a mutable array that takes the gradient by `out[...] = gradient`; "
            f"{type(out).__name__} refused it: {error}"
        ) from None
    return out


def _is_writeable(x: Array) -> bool:
    flags = getattr(x, "flags", None)
    return bool(getattr(flags, "writeable", True)) if flags is not None else True


def _is_c_contiguous(x: Array) -> bool:
    if array_api_compat.is_torch_array(x):
        return bool(x.is_contiguous())
    flags = getattr(x, "flags", None)
    return bool(getattr(flags, "c_contiguous", True)) if flags is not None else True


def _strides(x: Array) -> tuple[int, ...] | None:
    return x.stride() if array_api_compat.is_torch_array(x) else getattr(x, "strides", None)


def _fused_softmax_cross_entropy(
    backend: kernels.Backend,
    inputs: ClassInputs,
    weight: Array | None,
    smoothing: float,
    z: float,
    cap: float | None,
    reduction: Reduction,
    *,
    with_grad: bool,
    out: Array | None = None,
    temperature: float = 1.0,
    normalizer: float | Array | None = None,
    return_stats: bool = False,
) -> _SoftmaxResult:
    """:func:`_softmax_cross_entropy` on the fused kernels of ``backend`` (validated inputs, outside autograd)."""
    xp, x = inputs.xp, inputs.stored
    batch_shape = tuple(x.shape[:-1])
    row_weight = inputs.row_weight()
    if normalizer is None:
        class_factor = (
            None if weight is None or not inputs.is_index else _gather_class_weight(weight, inputs.indices, xp)
        )
        denominator = _denominator(row_weight, class_factor, math.prod(batch_shape), xp)
    else:
        denominator = normalizer
    device = array_api_compat.device(x)  # the kernels' buffers live with the logits (a GPU backend's on the GPU)
    rows = xp.ones(batch_shape, dtype=inputs.dtype, device=device) if row_weight is None else row_weight
    extra = {} if temperature == 1.0 else {"temperature": temperature}  # a backend's other options, when asked
    if return_stats:
        extra["stats"] = True
    losses, grad, *stats = backend.softmax_cross_entropy_rows(
        x,
        inputs.indices if inputs.is_index else inputs.probs,
        weight=weight,
        row_weight=rows,
        grad_factor=rows * mean_scale(denominator, reduction, xp, rows) if with_grad else None,
        smoothing=smoothing,
        z=z,
        cap=cap,
        out=out,
        **extra,
    )
    loss = reduce_loss(losses, denominator, reduction, xp, inputs.out_dtype)
    result = (loss, inputs.to_caller(grad)) if with_grad else (loss,)
    if return_stats:
        lse, entropy, hits = stats[0]
        dtype = inputs.out_dtype
        result = (*result, LossStats(xp.astype(lse, dtype, copy=False), xp.astype(entropy, dtype, copy=False), hits))
    return result if len(result) > 1 else result[0]


_SOFTMAX_PARAMETERS = """
    Parameters
    ----------
    logits : array of shape (n_samples, n_classes) or (..., n_classes, ...)
        Unnormalized scores; the class axis is ``axis``. ``-inf`` marks an impossible class.
    targets : int array of shape (n_samples,) or float array of the logits' shape
        Class indices (``ignore_index`` drops a sample), or class probabilities (soft labels).
    axis : int, default -1
        The class axis (use ``axis=1`` for PyTorch's ``(N, C, d1, ...)`` layout).
    weight : array of shape (n_classes,), optional
        Class weights :math:`w_c \\ge 0`, as PyTorch's ``weight``.
    ignore_index : int or None, default -100
        Index targets equal to it contribute nothing, to the loss nor to the mean's denominator.
    label_smoothing : float in [0, 1], default 0
        :math:`\\varepsilon`: the target becomes :math:`(1-\\varepsilon)\\,\\mathrm{onehot}(y) + \\varepsilon/C`.
    z_loss : float >= 0, default 0
        :math:`z`: adds :math:`z \\operatorname{LSE}(x)^2` per sample (PaLM), weighted like the sample.
    softcap : float > 0, optional
        :math:`c`: logits become :math:`c \\tanh(x / c)` before everything else (Gemma 2).
    sample_weight : array of the batch shape, optional
        Per-sample weights :math:`s_n \\ge 0` multiplying each sample's loss.
    reduction : {"mean", "sum", "none"}, default "mean"
    temperature : float > 0, default 1
        :math:`T`: the logits are divided by it first, before the soft-cap (:math:`x \\to x / T`):
        the loss and gradients of ``softmax_cross_entropy(logits / T, ...)``, the gradient with
        respect to the logits themselves. The fused kernels scale each logit as they read it (no
        scaled copy of the logits); the generic code divides a copy.
    normalizer : number or 0-d array, optional
        With ``reduction="mean"``, what the (weighted) sum of the losses is divided by instead of
        this call's own denominator (an empty one, 0, gives 0): e.g. the number of counted
        targets of a whole optimizer step across micro-batches and data-parallel ranks, so that
        the gradients summed over the micro-batches equal the full batch's. Any other reduction
        with a normalizer raises a ``ValueError``. Not differentiated (a constant).
    return_stats : bool, default False
        Also return a :class:`LossStats` ``(lse, entropy, accuracy)`` of per-sample values of the
        targets' shape (class-index targets only; probability targets raise a ``ValueError``),
        computed in the same pass over the logits as the loss (on the kernels, O(N) more memory
        and no second read): the log-sum-exp of the scaled, capped logits, the entropy of their
        softmax, and whether their first arg-max is the target (bool). 0 (False) where the target
        is ignored or the sample weight is 0. ``softmax_cross_entropy`` then returns ``(loss,
        stats)``, ``softmax_cross_entropy_with_grad`` ``(loss, dlogits, stats)`` (the gradient
        is the loss's).
"""


@overload
def softmax_cross_entropy(
    logits: ArrayLike,
    targets: ArrayLike,
    /,
    *,
    axis: int = -1,
    weight: ArrayLike | None = None,
    ignore_index: int | None = -100,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
    sample_weight: ArrayLike | None = None,
    reduction: Reduction = "mean",
    temperature: float = 1.0,
    normalizer: float | ArrayLike | None = None,
    return_stats: Literal[False] = False,
) -> Array: ...


@overload
def softmax_cross_entropy(
    logits: ArrayLike,
    targets: ArrayLike,
    /,
    *,
    axis: int = -1,
    weight: ArrayLike | None = None,
    ignore_index: int | None = -100,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
    sample_weight: ArrayLike | None = None,
    reduction: Reduction = "mean",
    temperature: float = 1.0,
    normalizer: float | ArrayLike | None = None,
    return_stats: Literal[True],
) -> tuple[Array, LossStats]: ...


@overload
def softmax_cross_entropy(
    logits: ArrayLike,
    targets: ArrayLike,
    /,
    *,
    axis: int = -1,
    weight: ArrayLike | None = None,
    ignore_index: int | None = -100,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
    sample_weight: ArrayLike | None = None,
    reduction: Reduction = "mean",
    temperature: float = 1.0,
    normalizer: float | ArrayLike | None = None,
    return_stats: bool = False,
) -> Array | tuple[Array, LossStats]: ...


def softmax_cross_entropy(
    logits: ArrayLike,
    targets: ArrayLike,
    /,
    *,
    axis: int = -1,
    weight: ArrayLike | None = None,
    ignore_index: int | None = -100,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
    sample_weight: ArrayLike | None = None,
    reduction: Reduction = "mean",
    temperature: float = 1.0,
    normalizer: float | ArrayLike | None = None,
    return_stats: bool = False,
) -> Array | tuple[Array, LossStats]:
    r"""Softmax cross-entropy on logits: PyTorch's ``F.cross_entropy`` and its extras.

    With :math:`\log p = \log\operatorname{softmax}(x)` and target weights
    :math:`a_{n,c} = (1-\varepsilon)\,w_{y_n}[c = y_n] + \tfrac{\varepsilon}{C} w_c` for index
    targets, :math:`a_{n,c} = w_c\big((1-\varepsilon)\,t_{n,c} + \tfrac{\varepsilon}{C}\big)` for
    probability targets, the loss of sample :math:`n` is

    .. math::

        \ell_n = s_n \Big( -\sum_c a_{n,c} \log p_{n,c} + z\, \omega_n \operatorname{LSE}(x_n)^2 \Big)

    where :math:`\omega_n = w_{y_n}` for index targets and 1 for probability targets. The mean is

    .. math::

        \frac{\sum_n \ell_n}{\sum_n s_n \omega_n}

    over non-ignored samples: PyTorch's weighted mean for index targets, :math:`N` for
    probability targets (with unit ``sample_weight``). An all-ignored batch gives 0, not NaN.
    {parameters}
    Returns
    -------
    array
        0-d for ``"mean"``/``"sum"``, the batch shape for ``"none"``; the logits' dtype.

    Warns
    -----
    ProbabilitiesAsLogitsWarning
        When the first few rows of ``logits`` are non-negative and sum to 1.

    Examples
    --------
    The surprise of the true class: ``-ln 0.001`` and ``-ln 0.92``.

    >>> import numpy as np
    >>> logits = np.log(np.array([[0.001, 0.999], [0.92, 0.08]]))
    >>> softmax_cross_entropy(logits, np.array([0, 0]), reduction="none").round(4).tolist()
    [6.9078, 0.0834]
    >>> float(softmax_cross_entropy(logits, np.array([0, -100])))  # second sample ignored
    6.907755278982136
    """
    return _softmax_cross_entropy(
        logits,
        targets,
        axis=axis,
        weight=weight,
        ignore_index=ignore_index,
        label_smoothing=label_smoothing,
        z_loss=z_loss,
        softcap=softcap,
        sample_weight=sample_weight,
        reduction=reduction,
        with_grad=False,
        temperature=temperature,
        normalizer=normalizer,
        return_stats=return_stats,
    )


@overload
def softmax_cross_entropy_with_grad(
    logits: ArrayLike,
    targets: ArrayLike,
    /,
    *,
    axis: int = -1,
    weight: ArrayLike | None = None,
    ignore_index: int | None = -100,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
    sample_weight: ArrayLike | None = None,
    reduction: Reduction = "mean",
    temperature: float = 1.0,
    normalizer: float | ArrayLike | None = None,
    return_stats: Literal[False] = False,
    out: Array | None = None,
) -> tuple[Array, Array]: ...


@overload
def softmax_cross_entropy_with_grad(
    logits: ArrayLike,
    targets: ArrayLike,
    /,
    *,
    axis: int = -1,
    weight: ArrayLike | None = None,
    ignore_index: int | None = -100,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
    sample_weight: ArrayLike | None = None,
    reduction: Reduction = "mean",
    temperature: float = 1.0,
    normalizer: float | ArrayLike | None = None,
    return_stats: Literal[True],
    out: Array | None = None,
) -> tuple[Array, Array, LossStats]: ...


@overload
def softmax_cross_entropy_with_grad(
    logits: ArrayLike,
    targets: ArrayLike,
    /,
    *,
    axis: int = -1,
    weight: ArrayLike | None = None,
    ignore_index: int | None = -100,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
    sample_weight: ArrayLike | None = None,
    reduction: Reduction = "mean",
    temperature: float = 1.0,
    normalizer: float | ArrayLike | None = None,
    return_stats: bool = False,
    out: Array | None = None,
) -> tuple[Array, Array] | tuple[Array, Array, LossStats]: ...


def softmax_cross_entropy_with_grad(
    logits: ArrayLike,
    targets: ArrayLike,
    /,
    *,
    axis: int = -1,
    weight: ArrayLike | None = None,
    ignore_index: int | None = -100,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
    sample_weight: ArrayLike | None = None,
    reduction: Reduction = "mean",
    temperature: float = 1.0,
    normalizer: float | ArrayLike | None = None,
    return_stats: bool = False,
    out: Array | None = None,
) -> tuple[Array, Array] | tuple[Array, Array, LossStats]:
    r"""Softmax cross-entropy and its gradient with respect to the logits, in closed form.

    Same loss and options as :func:`softmax_cross_entropy`. The gradient is

    .. math::

        \frac{\partial L}{\partial x_{n,c}} = \frac{s_n}{D}\Big(
            \big(A_n + 2 z\, \omega_n \operatorname{LSE}(x_n)\big)\, p_{n,c} - a_{n,c} \Big),
        \qquad A_n = \sum_c a_{n,c},

    with :math:`D` the mean's denominator (1 for ``"sum"`` and ``"none"``), times
    :math:`1 - \tanh^2(x/c)` when soft-capped. Without weights or smoothing this is the familiar
    :math:`(p - y)/N`. For ``reduction="none"`` it is the gradient of the sum of the losses.
    The inputs are never written to, unless ``out=logits`` asks for it.
    {parameters}
    Returns
    -------
    loss : array
        As :func:`softmax_cross_entropy`.
    dlogits : array of the logits' shape and dtype
        ``out`` itself when given.

    Examples
    --------
    >>> import numpy as np
    >>> loss, dlogits = softmax_cross_entropy_with_grad(np.array([[0.0, 0.0]]), np.array([1]))
    >>> float(loss), dlogits.tolist()
    (0.6931471805599453, [[0.5, -0.5]])

    A training loop reuses one gradient buffer, or lets the gradient replace the logits:

    >>> logits, buffer = np.array([[0.0, 0.0]]), np.empty((1, 2))
    >>> _, dlogits = softmax_cross_entropy_with_grad(logits, np.array([1]), out=buffer)
    >>> dlogits is buffer, buffer.tolist()
    (True, [[0.5, -0.5]])
    >>> _, dlogits = softmax_cross_entropy_with_grad(logits, np.array([1]), out=logits)
    >>> dlogits is logits, logits.tolist()
    (True, [[0.5, -0.5]])
    """
    return _softmax_cross_entropy(
        logits,
        targets,
        axis=axis,
        weight=weight,
        ignore_index=ignore_index,
        label_smoothing=label_smoothing,
        z_loss=z_loss,
        softcap=softcap,
        sample_weight=sample_weight,
        reduction=reduction,
        with_grad=True,
        temperature=temperature,
        normalizer=normalizer,
        return_stats=return_stats,
        out=out,
    )


_SOFTMAX_OUT = """\
    out : array of the logits' shape and dtype, optional
        Receives the gradient, and is returned as ``dlogits``, as NumPy's ``out=``: a training
        loop that reuses one buffer saves the allocation and the page faults of a new gradient
        every step. It must be writeable, C-contiguous, of the logits' array library and device,
        and must not overlap the logits, except as ``out=logits``: the gradient then overwrites
        the logits in place (they are lost), which needs float32 or float64 C-contiguous logits
        with the class axis last, class-index targets, and neither ``softcap`` nor label
        smoothing with class weights, which read the logits twice (the same rules on every
        path). The fused kernels write straight into ``out`` (copied in for a class axis other
        than the last); the generic path computes the gradient, then copies it in, which needs
        a mutable array (not JAX's). PyTorch tensors that require grad are refused, as by
        PyTorch's own ``out=``.
"""

softmax_cross_entropy.__doc__ = (softmax_cross_entropy.__doc__ or "").replace("{parameters}", _SOFTMAX_PARAMETERS)
softmax_cross_entropy_with_grad.__doc__ = (softmax_cross_entropy_with_grad.__doc__ or "").replace(
    "{parameters}", _SOFTMAX_PARAMETERS + _SOFTMAX_OUT
)


def nll_loss(
    log_probs: ArrayLike,
    targets: ArrayLike,
    /,
    *,
    axis: int = -1,
    weight: ArrayLike | None = None,
    ignore_index: int | None = -100,
    sample_weight: ArrayLike | None = None,
    reduction: Reduction = "mean",
) -> Array:
    r"""Negative log-likelihood of class indices given log-probabilities: PyTorch's ``F.nll_loss``.

    .. math::

        \ell_n = -s_n\, w_{y_n} \log p_{n, y_n}, \qquad
        \text{mean} = \frac{\sum_n \ell_n}{\sum_n s_n w_{y_n}}

    over non-ignored samples (0 when all are ignored). ``log_probs`` are used as given (no
    softmax); ``softmax_cross_entropy(x, y)`` equals ``nll_loss(log_softmax(x), y)``.

    Parameters
    ----------
    log_probs : array of shape (n_samples, n_classes) or (..., n_classes, ...)
        Log-probabilities, class axis ``axis``.
    targets : int array of the log_probs' shape without ``axis``
        Class indices.
    axis : int, default -1
        The class axis.
    weight : array of shape (n_classes,), optional
        Class weights :math:`w_c \ge 0`, as in :func:`softmax_cross_entropy`.
    ignore_index : int or None, default -100
        Targets equal to it contribute nothing, to the loss nor to the mean's denominator.
    sample_weight : array of the targets' shape, optional
        Per-sample weights :math:`s_n \ge 0`.
    reduction : {"mean", "sum", "none"}, default "mean"
        As in :func:`softmax_cross_entropy`.

    Returns
    -------
    array
        0-d for ``"mean"``/``"sum"``, the targets' shape for ``"none"``.

    Examples
    --------
    >>> import numpy as np
    >>> float(nll_loss(np.log(np.array([[0.92, 0.08]])), np.array([0])))
    0.08338160893905101
    """
    reduction = check_reduction(reduction)
    inputs = prepare_class_inputs(
        log_probs,
        targets,
        axis=axis,
        ignore_index=ignore_index,
        sample_weight=sample_weight,
        logits_name="log_probs",
        allow_probs=False,
        warn_probabilities=False,
    )
    xp = inputs.xp
    weight = prepare_class_weight(weight, inputs)
    terms = _cross_entropy_terms(_GivenLogProbs(xp, inputs.logits), inputs, weight, 0.0, need_target_weights=False)
    row_weight = inputs.row_weight()
    denominator = _denominator(row_weight, terms.class_factor, int(np.prod(terms.loss.shape)), xp)
    return reduce_loss(weighted_rows(terms.loss, row_weight, xp), denominator, reduction, xp, inputs.out_dtype)


def _check_alpha(
    alpha: float | ArrayLike | None, inputs_xp: Namespace, like: Array, num_classes: int, *, at_most_one: bool
) -> float | Array | None:
    """``alpha`` as None, a float, or a validated per-class array of length ``num_classes``."""
    if alpha is None:
        return None
    if isinstance(alpha, (int, float)) and not isinstance(alpha, bool):
        return check_number("alpha", alpha, low=0.0, high=1.0 if at_most_one else None)
    alpha = as_namespace_array(alpha, inputs_xp, name="alpha", like=like)
    check_shape("alpha", alpha, (num_classes,), rule="a number or one value per class")
    alpha = inputs_xp.astype(alpha, like.dtype)
    if at_most_one:
        check_in_unit_interval("alpha", alpha, inputs_xp)
    else:
        check_nonnegative("alpha", alpha, inputs_xp)
    return alpha


def softmax_focal_loss(
    logits: ArrayLike,
    targets: ArrayLike,
    /,
    *,
    gamma: float = 2.0,
    alpha: float | ArrayLike | None = None,
    axis: int = -1,
    ignore_index: int | None = -100,
    sample_weight: ArrayLike | None = None,
    reduction: Reduction = "mean",
) -> Array:
    r"""Multi-class focal loss (Lin et al. 2017), computed per sample from log-probabilities.

    .. math::

        \ell_n = -s_n\, \alpha_{y_n} (1 - p_{n,y_n})^{\gamma} \log p_{n,y_n}
        \quad\text{or, for probability targets,}\quad
        \ell_n = -s_n \sum_c t_{n,c}\, \alpha_c (1 - p_{n,c})^{\gamma} \log p_{n,c}

    :math:`1 - p` is computed as ``-expm1(log p)``, exact for confident predictions. The mean
    divides by :math:`\sum_n s_n` over non-ignored samples; ``alpha`` is a loss factor, not part
    of the denominator. ``gamma=0`` with ``alpha=None`` is the plain cross-entropy.

    Parameters
    ----------
    logits : array of shape (n_samples, n_classes) or (..., n_classes, ...)
        Unnormalized scores, class axis ``axis``, as in :func:`softmax_cross_entropy`.
    targets : int array of shape (n_samples,) or float array of the logits' shape
        Class indices or class probabilities, as in :func:`softmax_cross_entropy`.
    gamma : float >= 0, default 2
        Focusing parameter: down-weights well-classified samples.
    alpha : None, float >= 0 or array of shape (n_classes,)
        Class balancing factor; None means 1.
    axis : int, default -1
        The class axis.
    ignore_index : int or None, default -100
        Index targets equal to it contribute nothing, to the loss nor to the mean's denominator.
    sample_weight : array of the batch shape, optional
        Per-sample weights :math:`s_n \ge 0`.
    reduction : {"mean", "sum", "none"}, default "mean"
        As in :func:`softmax_cross_entropy`.

    Returns
    -------
    array
        0-d for ``"mean"``/``"sum"``, the batch shape for ``"none"``.

    References
    ----------
    T.-Y. Lin, P. Goyal, R. Girshick, K. He, P. Dollár. Focal Loss for Dense Object Detection. ICCV 2017.

    Examples
    --------
    >>> import numpy as np
    >>> logits = np.log(np.array([[0.9, 0.1], [0.3, 0.7]]))
    >>> softmax_focal_loss(logits, np.array([0, 0]), gamma=2.0, reduction="none").round(5).tolist()
    [0.00105, 0.58995]
    """
    gamma = check_number("gamma", gamma, low=0.0)
    reduction = check_reduction(reduction)
    inputs = prepare_class_inputs(logits, targets, axis=axis, ignore_index=ignore_index, sample_weight=sample_weight)
    xp = inputs.xp
    alpha = _check_alpha(alpha, xp, inputs.logits, inputs.num_classes, at_most_one=False)
    log_probs = _cap_and_normalize(inputs.logits, None, xp).log_probs

    def focal(log_p: Array) -> Array:
        loss = -log_p
        return loss if gamma == 0.0 else xmul((-xp.expm1(log_p)) ** gamma, loss, xp)

    if inputs.is_index:
        per_sample = focal(take_last(log_probs, inputs.indices, xp))
        if isinstance(alpha, float):
            per_sample = alpha * per_sample
        elif alpha is not None:
            per_sample = _gather_class_weight(alpha, inputs.indices, xp) * per_sample
    else:
        per_class = focal(log_probs)
        if alpha is not None:
            per_class = alpha * per_class
        per_sample = xp.sum(xmul(inputs.probs, per_class, xp), axis=-1)
    row_weight = inputs.row_weight()
    denominator = _denominator(row_weight, None, int(np.prod(per_sample.shape)), xp)
    return reduce_loss(weighted_rows(per_sample, row_weight, xp), denominator, reduction, xp, inputs.out_dtype)


def poly1_cross_entropy(
    logits: ArrayLike,
    targets: ArrayLike,
    /,
    *,
    epsilon: float = 1.0,
    axis: int = -1,
    weight: ArrayLike | None = None,
    ignore_index: int | None = -100,
    label_smoothing: float = 0.0,
    sample_weight: ArrayLike | None = None,
    reduction: Reduction = "mean",
) -> Array:
    r"""Poly-1 loss (Leng et al. 2022): cross-entropy plus :math:`\epsilon (1 - p_t)`.

    .. math::

        \ell_n = s_n\Big(\mathrm{CE}_n + \epsilon\, \omega_n \sum_c t_{n,c} (1 - p_{n,c})\Big)

    where :math:`t_n` is the (smoothed) target distribution, so :math:`\sum_c t_{n,c}(1-p_{n,c})
    = 1 - p_t`, as optax's ``poly_loss_cross_entropy``; :math:`\mathrm{CE}_n` and the weight
    :math:`\omega_n` (:math:`w_{y_n}` for index targets with class weights, else 1) and the mean's
    denominator are those of :func:`softmax_cross_entropy`.

    Parameters
    ----------
    logits : array of shape (n_samples, n_classes) or (..., n_classes, ...)
        Unnormalized scores, class axis ``axis``, as in :func:`softmax_cross_entropy`.
    targets : int array of shape (n_samples,) or float array of the logits' shape
        Class indices or class probabilities, as in :func:`softmax_cross_entropy`.
    epsilon : float >= -1, default 1
        Weight of the first polynomial term; the paper's default 1 (optax defaults to 2).
        ``epsilon >= -1`` keeps the loss non-negative.
    axis : int, default -1
        The class axis.
    weight : array of shape (n_classes,), optional
        Class weights :math:`w_c \ge 0`, as in :func:`softmax_cross_entropy`.
    ignore_index : int or None, default -100
        Index targets equal to it contribute nothing, to the loss nor to the mean's denominator.
    label_smoothing : float in [0, 1], default 0
        PyTorch's label smoothing, as in :func:`softmax_cross_entropy`.
    sample_weight : array of the batch shape, optional
        Per-sample weights :math:`s_n \ge 0`.
    reduction : {"mean", "sum", "none"}, default "mean"
        As in :func:`softmax_cross_entropy`.

    Returns
    -------
    array
        0-d for ``"mean"``/``"sum"``, the batch shape for ``"none"``.

    References
    ----------
    Z. Leng et al. PolyLoss: A Polynomial Expansion Perspective of Classification Loss Functions. ICLR 2022.

    Examples
    --------
    >>> import numpy as np
    >>> logits = np.log(np.array([[0.92, 0.08]]))
    >>> round(float(poly1_cross_entropy(logits, np.array([0]))), 4)  # -ln 0.92 + (1 - 0.92)
    0.1634
    """
    epsilon = check_number("epsilon", epsilon, low=-1.0)
    smoothing, _, _, reduction = _check_softmax_options(label_smoothing, 0.0, None, reduction)
    inputs = prepare_class_inputs(logits, targets, axis=axis, ignore_index=ignore_index, sample_weight=sample_weight)
    xp = inputs.xp
    weight = prepare_class_weight(weight, inputs)
    capped = _cap_and_normalize(inputs.logits, None, xp)
    log_probs = capped.log_probs
    terms = _cross_entropy_terms(capped, inputs, weight, smoothing, need_target_weights=False)

    one_minus_p = -xp.expm1(log_probs)
    num_classes = inputs.num_classes
    if inputs.is_index:
        one_minus_pt = (1.0 - smoothing) * take_last(one_minus_p, inputs.indices, xp)
        if smoothing > 0.0:
            one_minus_pt = one_minus_pt + (smoothing / num_classes) * xp.sum(one_minus_p, axis=-1)
    else:
        probs: Array = inputs.probs  # probability targets: not None
        smoothed = probs if smoothing == 0.0 else (1.0 - smoothing) * probs + smoothing / num_classes
        one_minus_pt = xp.sum(smoothed * one_minus_p, axis=-1)
    poly = epsilon * one_minus_pt
    per_sample = terms.loss + (poly if terms.class_factor is None else terms.class_factor * poly)
    row_weight = inputs.row_weight()
    denominator = _denominator(row_weight, terms.class_factor, int(np.prod(per_sample.shape)), xp)
    return reduce_loss(weighted_rows(per_sample, row_weight, xp), denominator, reduction, xp, inputs.out_dtype)


# --------------------------------------------------------------------------------------------
# Binary and multi-label losses (elementwise)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Elementwise:
    """Inputs of an elementwise binary loss, validated; everything but ``stored`` in the compute dtype."""

    xp: Namespace
    stored: Array  # logits or probabilities as the caller gave them
    dtype: DType  # the compute dtype
    targets: Array  # floating, in [0, 1]
    weight: Array | None  # broadcastable to values, or None
    sample_weight: Array | None  # shape values.shape[:k] + (1,) * (ndim - k), or None

    @cached_property
    def values(self) -> Array:
        """The logits or probabilities in the compute dtype (converted on first use)."""
        return self.xp.astype(self.stored, self.dtype, copy=False)

    @property
    def out_dtype(self) -> DType:
        return self.stored.dtype


def _broadcast_option(
    name: str, value: ArrayLike | None, xp: Namespace, like: Array, *, trailing_rule: str, dtype: DType | None = None
) -> Array | None:
    """A non-negative array broadcastable to ``like`` (NumPy rules, trailing axes aligned), in ``dtype``
    (default: that of ``like``)."""
    if value is None:
        return None
    value = as_namespace_array(value, xp, name=name, like=like)
    if not xp.isdtype(value.dtype, ("real floating", "integral")):
        raise TypeError(f"`{shown(name)}` must be real numbers; got dtype {value.dtype}")
    try:
        broadcast = np.broadcast_shapes(tuple(value.shape), tuple(like.shape))
    except ValueError:
        broadcast = None
    if broadcast != tuple(like.shape):
        raise ValueError(
            f"`{shown(name)}` must broadcast to the input's shape {tuple(like.shape)} ({trailing_rule}); "
            f"got shape {tuple(value.shape)}"
        )
    value = xp.astype(value, like.dtype if dtype is None else dtype)
    check_nonnegative(name, value, xp)
    return value


def _prepare_elementwise(
    values: ArrayLike, targets: ArrayLike, *, name: str, weight: ArrayLike | None, sample_weight: ArrayLike | None
) -> _Elementwise:
    xp = get_namespace(values, targets)
    values = as_namespace_array(values, xp, name=name)
    check_floating(name, values, xp)
    check_not_empty(name, values)
    dtype = compute_dtype(xp, values.dtype)
    targets = as_namespace_array(targets, xp, name="targets", like=values)
    check_shape("targets", targets, tuple(values.shape), rule=f"the shape of `{shown(name)}`")
    if xp.isdtype(targets.dtype, "integral"):
        _check_binary_labels(targets, xp)
    if xp.isdtype(targets.dtype, ("bool", "integral")):
        targets = xp.astype(targets, dtype, copy=False)
    elif xp.isdtype(targets.dtype, "real floating"):
        targets = xp.astype(targets, dtype, copy=False)
        check_in_unit_interval("targets", targets, xp)
    else:
        raise TypeError(
            f"`{shown('targets')}` must be probabilities in [0, 1] or 0/1 labels; got dtype {targets.dtype}"
        )
    weight = _broadcast_option("weight", weight, xp, values, trailing_rule="as PyTorch's `weight`", dtype=dtype)
    if sample_weight is not None:
        sample_weight = as_namespace_array(sample_weight, xp, name="sample_weight", like=values)
        k = sample_weight.ndim
        check_shape(
            "sample_weight",
            sample_weight,
            tuple(values.shape[:k]),
            rule=f"one weight per sample: the leading axes of `{shown(name)}`",
        )
        if not xp.isdtype(sample_weight.dtype, ("real floating", "integral", "bool")):
            raise TypeError(f"`sample_weight` must be real numbers; got dtype {sample_weight.dtype}")
        sample_weight = xp.astype(sample_weight, dtype)
        check_nonnegative("sample_weight", sample_weight, xp)
        sample_weight = xp.reshape(sample_weight, tuple(sample_weight.shape) + (1,) * (values.ndim - k))
    return _Elementwise(xp, values, dtype, targets, weight, sample_weight)


def _check_binary_labels(targets: Array, xp: Namespace) -> None:
    bad = (targets != 0) & (targets != 1)
    if concrete_bool(xp.any(bad)):
        index = tuple(int(h[0]) for h in xp.nonzero(bad))
        raise ValueError(
            f"`{shown('targets')}` given as integers must be 0/1 labels; got {int(targets[index])} at index {index}"
        )


def _reduce_elementwise(loss: Array, inputs: _Elementwise, reduction: Reduction) -> tuple[Array, Array | int]:
    """Weight by ``weight`` and ``sample_weight``, then reduce; also return the mean's denominator.

    The mean divides by the total sample weight broadcast over the elements (the number of
    elements without ``sample_weight``, as PyTorch); ``weight`` is a loss factor only.
    """
    xp = inputs.xp
    if inputs.weight is not None:
        loss = xmul(inputs.weight, loss, xp)
    if inputs.sample_weight is not None:
        loss = xmul(inputs.sample_weight, loss, xp)
    denominator = _elementwise_denominator(inputs)
    return reduce_loss(loss, denominator, reduction, xp, inputs.out_dtype), denominator


def _elementwise_denominator(inputs: _Elementwise) -> Array | int:
    """What the mean divides by: the number of elements, or the total sample weight spread over them."""
    size = math.prod(inputs.stored.shape)
    if inputs.sample_weight is None:
        return size
    per_sample_elements = size // max(math.prod(inputs.sample_weight.shape), 1)
    return per_sample_elements * total(inputs.sample_weight, inputs.xp)


def _check_sigmoid_options(label_smoothing: object, reduction: object) -> tuple[float, Reduction]:
    return check_number("label_smoothing", label_smoothing, low=0.0, high=1.0), check_reduction(reduction)


def _sigmoid_cross_entropy(
    logits: ArrayLike,
    targets: ArrayLike,
    *,
    weight: ArrayLike | None,
    pos_weight: ArrayLike | None,
    label_smoothing: float,
    sample_weight: ArrayLike | None,
    reduction: Reduction,
    with_grad: bool,
    out: Array | None = None,
) -> Array | tuple[Array, Array]:
    smoothing, reduction = _check_sigmoid_options(label_smoothing, reduction)
    inputs = _prepare_elementwise(logits, targets, name="logits", weight=weight, sample_weight=sample_weight)
    xp = inputs.xp
    pos_weight = _broadcast_option(
        "pos_weight", pos_weight, xp, inputs.stored, trailing_rule="one weight per class, last axis", dtype=inputs.dtype
    )
    # Elementwise: each logit is read before its gradient is written, so out=logits needs only a
    # writeable C-contiguous array, in any dtype.
    in_place = out is not None and _check_out(out, logits, xp, targets, weight, pos_weight, sample_weight)
    if in_place and not (_is_writeable(inputs.stored) and _is_c_contiguous(inputs.stored)):
        raise ValueError(f"{kernels.IN_PLACE} needs writeable C-contiguous logits")
    backend = kernels.select(xp, inputs.stored, inputs.targets, inputs.weight, pos_weight, inputs.sample_weight)
    if backend is not None:
        result = _fused_sigmoid_cross_entropy(
            backend, inputs, pos_weight, smoothing, reduction, with_grad=with_grad, out=out
        )
        return result if out is None else (result[0], _gradient_into(out, result[1]))
    x = inputs.values
    y = inputs.targets if smoothing == 0.0 else (1.0 - smoothing) * inputs.targets + 0.5 * smoothing
    positive = y if pos_weight is None else pos_weight * y
    loss = -(xmul(positive, stable_log_sigmoid(x, xp), xp) + xmul(1.0 - y, stable_log_sigmoid(-x, xp), xp))
    loss, denominator = _reduce_elementwise(loss, inputs, reduction)
    if not with_grad:
        return loss
    # d/dx of -(q y log s(x) + (1 - y) log s(-x)) = s(x) (q y + 1 - y) - q y
    sigmoid = xp.exp(stable_log_sigmoid(x, xp))
    grad = sigmoid * (positive + 1.0 - y) - positive
    for factor in (inputs.weight, inputs.sample_weight):
        if factor is not None:
            grad = xmul(factor, grad, xp)
    grad = xp.astype(grad * mean_scale(denominator, reduction, xp, grad), inputs.out_dtype, copy=False)
    return loss, (grad if out is None else _gradient_into(out, grad))


def _fused_sigmoid_cross_entropy(
    backend: kernels.Backend,
    inputs: _Elementwise,
    pos_weight: Array | None,
    smoothing: float,
    reduction: Reduction,
    *,
    with_grad: bool,
    out: Array | None = None,
) -> Array | tuple[Array, Array]:
    """:func:`_sigmoid_cross_entropy` on the fused kernel of ``backend`` (validated inputs, outside autograd).

    The kernel layer forms the mean itself, so that a sum past the largest float can be summed
    again scaled (:func:`crossentropy.kernels.numba.sigmoid_cross_entropy_elements`). The scale
    and the denominator go as 0-d arrays: a GPU backend keeps them on the device.
    """
    xp = inputs.xp
    denominator = _elementwise_denominator(inputs)
    scale = mean_scale(
        denominator, reduction, xp, xp.ones((), dtype=inputs.dtype, device=array_api_compat.device(inputs.stored))
    )
    losses, grad = backend.sigmoid_cross_entropy_elements(
        inputs.stored,
        inputs.targets,
        weight=inputs.weight,
        pos_weight=pos_weight,
        sample_weight=inputs.sample_weight,
        smoothing=smoothing,
        grad_scale=scale if with_grad else None,
        per_element=reduction == "none",
        denominator=denominator if reduction == "mean" else None,
        out=out if with_grad else None,
    )
    if reduction == "mean":
        loss = xp.astype(losses, inputs.out_dtype, copy=False)
    else:
        loss = reduce_loss(losses, denominator, reduction, xp, inputs.out_dtype)
    return (loss, grad) if with_grad else loss


_SIGMOID_PARAMETERS = """
    Parameters
    ----------
    logits : array of any shape, e.g. (n_samples,) or (n_samples, n_labels)
        Unnormalized log-odds.
    targets : array of the logits' shape
        Probabilities in [0, 1], or 0/1 integer or boolean labels.
    weight : array broadcastable to the logits' shape, optional
        Elementwise rescaling :math:`w`, as PyTorch's ``weight``.
    pos_weight : array broadcastable to the logits' shape (typically (n_labels,)), optional
        :math:`q`: weight of the positive term, as PyTorch's ``pos_weight``.
    label_smoothing : float in [0, 1], default 0
        :math:`\\varepsilon`: targets become :math:`y(1-\\varepsilon) + \\varepsilon/2` (Keras, optax).
    sample_weight : array of the leading axes of the logits' shape, optional
        One weight :math:`s_n \\ge 0` per sample, e.g. shape (n_samples,) for (n_samples, n_labels) logits.
    reduction : {"mean", "sum", "none"}, default "mean"
        ``"mean"`` divides by the number of elements (as PyTorch), or by the total sample weight
        spread over the elements when ``sample_weight`` is given.
"""


def sigmoid_cross_entropy(
    logits: ArrayLike,
    targets: ArrayLike,
    /,
    *,
    weight: ArrayLike | None = None,
    pos_weight: ArrayLike | None = None,
    label_smoothing: float = 0.0,
    sample_weight: ArrayLike | None = None,
    reduction: Reduction = "mean",
) -> Array:
    r"""Binary and multi-label cross-entropy on logits: PyTorch's ``F.binary_cross_entropy_with_logits``.

    .. math::

        \ell = -s\, w \big( q\, y \log \sigma(x) + (1 - y) \log \sigma(-x) \big)

    elementwise, with :math:`\log\sigma(x) = \min(x, 0) - \log(1 + e^{-|x|})` exact for any
    :math:`x`. Independent sigmoids: each label is its own binary problem.
    {parameters}
    Returns
    -------
    array
        0-d for ``"mean"``/``"sum"``, the logits' shape for ``"none"``; the logits' dtype.

    Examples
    --------
    >>> import numpy as np
    >>> float(sigmoid_cross_entropy(np.array([0.0]), np.array([1.0])))  # ln 2
    0.6931471805599453
    >>> sigmoid_cross_entropy(np.array([-1e4, 1e4]), np.array([1, 1]), reduction="none").tolist()
    [10000.0, 0.0]
    """
    return _sigmoid_cross_entropy(
        logits,
        targets,
        weight=weight,
        pos_weight=pos_weight,
        label_smoothing=label_smoothing,
        sample_weight=sample_weight,
        reduction=reduction,
        with_grad=False,
    )


def sigmoid_cross_entropy_with_grad(
    logits: ArrayLike,
    targets: ArrayLike,
    /,
    *,
    weight: ArrayLike | None = None,
    pos_weight: ArrayLike | None = None,
    label_smoothing: float = 0.0,
    sample_weight: ArrayLike | None = None,
    reduction: Reduction = "mean",
    out: Array | None = None,
) -> tuple[Array, Array]:
    r"""Sigmoid cross-entropy and its gradient with respect to the logits, in closed form.

    Same loss and options as :func:`sigmoid_cross_entropy`. Elementwise,

    .. math::

        \frac{\partial L}{\partial x} = \frac{s\, w}{D} \big( \sigma(x)(q y + 1 - y) - q y \big),

    :math:`\sigma(x) - y` without weights, with :math:`D` the mean's denominator (1 for
    ``"sum"`` and ``"none"``: then it is the gradient of the summed losses). The inputs are
    never written to, unless ``out=logits`` asks for it.
    {parameters}
    Returns
    -------
    loss : array
        As :func:`sigmoid_cross_entropy` returns it.
    dlogits : array of the logits' shape and dtype
        ``out`` itself when given.

    Examples
    --------
    >>> import numpy as np
    >>> loss, dlogits = sigmoid_cross_entropy_with_grad(np.array([0.0, 0.0]), np.array([1.0, 0.0]))
    >>> dlogits.tolist()
    [-0.25, 0.25]
    """
    return _sigmoid_cross_entropy(
        logits,
        targets,
        weight=weight,
        pos_weight=pos_weight,
        label_smoothing=label_smoothing,
        sample_weight=sample_weight,
        reduction=reduction,
        with_grad=True,
        out=out,
    )


_SIGMOID_OUT = """\
    out : array of the logits' shape and dtype, optional
        Receives the gradient, and is returned as ``dlogits``, as NumPy's ``out=`` (a buffer
        reused across training steps). It must be writeable, C-contiguous, of the logits' array
        library and device, and must not overlap the logits, except as ``out=logits``: the loss
        is elementwise, each logit read before its gradient replaces it, so any writeable
        C-contiguous logits (any dtype) can take their gradient in place. As in
        :func:`softmax_cross_entropy_with_grad`: a mutable array, and no PyTorch tensor that
        requires grad.
"""

sigmoid_cross_entropy.__doc__ = (sigmoid_cross_entropy.__doc__ or "").replace("{parameters}", _SIGMOID_PARAMETERS)
sigmoid_cross_entropy_with_grad.__doc__ = (sigmoid_cross_entropy_with_grad.__doc__ or "").replace(
    "{parameters}", _SIGMOID_PARAMETERS + _SIGMOID_OUT
)

# PyTorch clamps log-probabilities at -100 in binary_cross_entropy, so p = 0 or 1 stays finite.
_LOG_CLAMP = -100.0


def _clamped_log(p: Array, xp: Namespace) -> Array:
    """``max(log p, -100)`` with a finite (zero) gradient at ``p = 0``."""
    positive = p > 0
    logs = xp.log(xp.where(positive, p, xp.ones_like(p)))
    floor = xp.full_like(logs, _LOG_CLAMP)
    return xp.where(positive, xp.maximum(logs, floor), floor)


def binary_cross_entropy(
    probs: ArrayLike,
    targets: ArrayLike,
    /,
    *,
    weight: ArrayLike | None = None,
    sample_weight: ArrayLike | None = None,
    reduction: Reduction = "mean",
) -> Array:
    r"""Binary cross-entropy on probabilities: PyTorch's ``F.binary_cross_entropy``.

    .. math::

        \ell = -s\, w \big( y \max(\log p, -100) + (1 - y) \max(\log(1 - p), -100) \big)

    The logarithms are clamped at -100 as PyTorch does, so :math:`p = 0` or 1 gives a finite
    loss. Prefer :func:`sigmoid_cross_entropy` on logits: it is exact where this one clamps.

    Parameters
    ----------
    probs : array of any shape
        Predicted probabilities in [0, 1] (checked: logits passed here are an error).
    targets : array of the probs' shape
        Probabilities in [0, 1], or 0/1 integer or boolean labels.
    weight : array broadcastable to the probs' shape, optional
        Elementwise rescaling :math:`w`, as in :func:`sigmoid_cross_entropy`.
    sample_weight : array of the leading axes of the probs' shape, optional
        One weight :math:`s_n \ge 0` per sample, as in :func:`sigmoid_cross_entropy`.
    reduction : {"mean", "sum", "none"}, default "mean"
        As in :func:`sigmoid_cross_entropy`.

    Returns
    -------
    array
        0-d for ``"mean"``/``"sum"``, the probs' shape for ``"none"``.

    Examples
    --------
    >>> import numpy as np
    >>> binary_cross_entropy(np.array([0.9, 0.0]), np.array([1.0, 1.0]), reduction="none").round(4).tolist()
    [0.1054, 100.0]
    """
    reduction = check_reduction(reduction)
    inputs = _prepare_elementwise(probs, targets, name="probs", weight=weight, sample_weight=sample_weight)
    xp, p, y = inputs.xp, inputs.values, inputs.targets
    check_in_unit_interval("probs", p, xp)
    loss = -(y * _clamped_log(p, xp) + (1.0 - y) * _clamped_log(1.0 - p, xp))
    return _reduce_elementwise(loss, inputs, reduction)[0]


def sigmoid_focal_loss(
    logits: ArrayLike,
    targets: ArrayLike,
    /,
    *,
    gamma: float = 2.0,
    alpha: float | ArrayLike | None = 0.25,
    sample_weight: ArrayLike | None = None,
    reduction: Reduction = "mean",
) -> Array:
    r"""Binary and multi-label focal loss on logits (Lin et al. 2017), as torchvision's.

    .. math::

        \ell = -s\, \alpha_t (1 - p_t)^{\gamma} \big( y \log \sigma(x) + (1-y) \log \sigma(-x) \big),
        \quad 1 - p_t = y\,\sigma(-x) + (1 - y)\,\sigma(x),
        \quad \alpha_t = \alpha y + (1 - \alpha)(1 - y)

    :math:`1 - p_t` is computed from sigmoids of the logits, exact for confident predictions.
    ``alpha=None`` disables the balancing factor. Mean over elements, as torchvision (whose
    default reduction is ``"none"``; here it is ``"mean"`` like every loss of this library).

    Parameters
    ----------
    logits : array of any shape, e.g. (n_samples,) or (n_samples, n_labels)
        Unnormalized log-odds.
    targets : array of the logits' shape
        Probabilities in [0, 1], or 0/1 integer or boolean labels.
    gamma : float >= 0, default 2
        Focusing parameter: down-weights well-classified elements.
    alpha : None, float in [0, 1] or array of shape (n_labels,), default 0.25
        Weight of the positive class (per label when an array), torchvision's default 0.25.
    sample_weight : array of the leading axes of the logits' shape, optional
        One weight :math:`s_n \ge 0` per sample, as in :func:`sigmoid_cross_entropy`.
    reduction : {"mean", "sum", "none"}, default "mean"
        As in :func:`sigmoid_cross_entropy`.

    Returns
    -------
    array
        0-d for ``"mean"``/``"sum"``, the logits' shape for ``"none"``.

    Examples
    --------
    >>> import numpy as np
    >>> sigmoid_focal_loss(np.array([2.0, -2.0]), np.array([1, 1]), reduction="none").round(5).tolist()
    [0.00045, 0.41252]
    """
    gamma = check_number("gamma", gamma, low=0.0)
    reduction = check_reduction(reduction)
    inputs = _prepare_elementwise(logits, targets, name="logits", weight=None, sample_weight=sample_weight)
    xp, x, y = inputs.xp, inputs.values, inputs.targets
    alpha = _check_alpha(alpha, xp, x, int(x.shape[-1]) if x.ndim else 1, at_most_one=True)
    log_s, log_not_s = stable_log_sigmoid(x, xp), stable_log_sigmoid(-x, xp)
    loss = -(xmul(y, log_s, xp) + xmul(1.0 - y, log_not_s, xp))
    if gamma != 0.0:
        one_minus_pt = y * xp.exp(log_not_s) + (1.0 - y) * xp.exp(log_s)
        loss = xmul(one_minus_pt**gamma, loss, xp)
    if alpha is not None:
        loss = (alpha * y + (1.0 - alpha) * (1.0 - y)) * loss
    return _reduce_elementwise(loss, inputs, reduction)[0]
