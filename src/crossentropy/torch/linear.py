r"""Linear layer and cross-entropy in one, for large vocabularies: the N×V logits never exist at once.

:func:`linear_cross_entropy` is ``torch.nn.functional.linear_cross_entropy`` (PyTorch 2.13's
signature and results) with keyword extras. It computes the cross-entropy of the logits
``input @ linear_weight.T + linear_bias`` by one of two engines:

Fused (a backend with linear kernels: Triton, on CUDA tensors; index targets)
    :mod:`crossentropy.kernels.triton._linear`: the forward pass reads tiles of tokens ×
    vocabulary that live on chip only, keeps an online log-sum-exp and the target's logit, and
    saves O(N); the backward pass recomputes each tile, forms the gradient of the logits on chip
    and accumulates those of ``input``, ``linear_weight`` and ``linear_bias`` in float32. Peak
    memory beyond the inputs: the float32 gradients of the parameters and O(N).
Chunked (every other case)
    For each chunk of rows (tokens) the logits are formed in a reused buffer of the accumulation
    dtype, the backend's softmax kernel (or the core's generic code) turns them into losses and
    writes their gradient over them, and the gradients of ``input``, ``linear_weight`` and
    ``linear_bias`` are accumulated from it before the next chunk overwrites it. Peak memory is
    one chunk of logits (two with a soft-cap or gradient filtering, which need the logits after
    the gradient is formed) plus the gradient of ``linear_weight``.

Both run as ``torch.library`` custom operators, which ``torch.compile`` keeps in its graph
(``fullgraph=True``, dynamic shapes), forward and backward:

``crossentropy::linear_cross_entropy_with_grad``
    With ``reduction="mean"`` or ``"sum"`` and a gradient wanted: the loss and, in the same
    pass, the gradients asked for (``need_input``, ``need_weight``, ``need_bias``; a 0-element
    placeholder for the others), in the accumulation dtype. ``setup_context`` keeps them,
    marked non-differentiable; the backward scales them by the incoming scalar (in place in
    eager mode) and casts them to the parameters' dtypes.
``crossentropy::linear_cross_entropy``
    The loss alone (evaluation, ``reduction="none"``). Its backward, where the per-row incoming
    gradient is known, recomputes the logits in
``crossentropy::linear_cross_entropy_stats``
    ``return_stats=True``: the loss, its per-row statistics (log-sum-exp, entropy, arg-max hits)
    from the same pass, and the loss's gradients as the operator above. The statistics are saved
    (O(N)); when ``lse`` or ``entropy`` receive a gradient the backward adds theirs through
    ``linear_cross_entropy_backward``.
``crossentropy::linear_cross_entropy_backward``
    The gradients of ``sum(grad_output * loss)``; also a second backward through the same graph
    (``retain_graph=True``) of either operator. Not differentiable itself: a backward that builds
    a graph (``create_graph=True``), and one with a batched incoming gradient (``vmap``, batched
    gradcheck), differentiate the plain-PyTorch chunks with autograd instead (eager).

The operators serve every call on plain tensors, on any device (they are registered for every
device; the targets' and weights' values are checked inside them): where the kernels do not take
a chunk's logits (switched off, a device without kernels), the chunk's losses and logit gradient
come from the core's generic code instead. Other calls, those under ``torch.func`` transforms,
with forward-mode tangents among them, or asking the gradient of the targets, class weights or
sample weights, run the chunks in plain PyTorch under activation checkpointing (the logits of a
chunk are recomputed in the backward pass instead of kept), which autograd differentiates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, overload

import torch
from torch.utils.checkpoint import checkpoint

from .. import kernels
from .._array import get_namespace, in_host_memory, is_transformed_tensor
from .._inputs import mean_scale, reduce_loss
from .._typing import Reduction
from .._validation import (
    check_class_indices,
    check_in_unit_interval,
    check_integer_option,
    check_nonnegative,
    check_not_empty,
    check_number,
    check_reduction,
)
from ..losses import LossStats, softmax_cross_entropy, softmax_cross_entropy_with_grad
from . import _dtensor, _ops
from ._autograd import scaled

__all__ = ["linear_cross_entropy"]

# Elements of one chunk of logits when no chunk size is given: 2^24 float32 = 64 MiB.
CHUNK_ELEMENTS = 2**24
# What the logits and the gradients may accumulate in (``accumulation_dtype``).
_ACCUMULATION_DTYPES = (torch.float32, torch.float64)


@dataclass(frozen=True)
class LinearOptions:
    """Non-tensor options of the linear cross-entropy, in the operators' order."""

    ignore_index: int
    label_smoothing: float
    z_loss: float
    softcap: float | None
    temperature: float
    reduction: Reduction
    chunk_size: int
    accumulation_dtype: torch.dtype
    filter_eps: float | None

    def arguments(self) -> tuple:
        """The options as the operators' positional arguments."""
        return (
            self.ignore_index,
            self.label_smoothing,
            self.z_loss,
            self.softcap,
            self.temperature,
            self.reduction,
            self.chunk_size,
            self.accumulation_dtype,
            self.filter_eps,
        )


_N_OPTIONS = 9


def _checked_options(
    ignore_index, label_smoothing, z_loss, softcap, temperature, reduction, chunk_size, accumulation_dtype, filter_eps
) -> LinearOptions:
    if accumulation_dtype not in _ACCUMULATION_DTYPES:
        raise ValueError(f"`accumulation_dtype` must be torch.float32 or torch.float64; got {accumulation_dtype!r}")
    return LinearOptions(
        ignore_index=check_integer_option("ignore_index", ignore_index),
        label_smoothing=check_number("label_smoothing", label_smoothing, low=0.0, high=1.0),
        z_loss=check_number("z_loss", z_loss, low=0.0),
        softcap=None if softcap is None else check_number("softcap", softcap, low=0.0, low_open=True),
        temperature=check_number("temperature", temperature, low=0.0, low_open=True, high=math.inf, high_open=True),
        reduction=check_reduction(reduction),
        chunk_size=check_integer_option("chunk_size", chunk_size, low=1),
        accumulation_dtype=accumulation_dtype,
        filter_eps=None
        if filter_eps is None
        else check_number("filter_eps", filter_eps, low=0.0, high=1.0, low_open=True, high_open=True),
    )


@dataclass
class _Gradients:
    """Gradients of the input, the weight and the bias in the accumulation dtype (None where not asked for)."""

    input: torch.Tensor | None
    weight: torch.Tensor | None
    bias: torch.Tensor | None


@dataclass
class _Rows:
    r"""The per-row terms of the loss, in the accumulation dtype.

    ``target``: class indices with ignored rows at 0, or probabilities (N, V); ``row_weight``
    :math:`r_n = s_n [y_n \ne` ``ignore_index``:math:`]`; ``omega`` :math:`\omega_n = w_{y_n}` (index
    targets with class weights, else None); ``class_weight`` :math:`w` (or None); ``denominator``
    the mean's :math:`\sum_n r_n \omega_n`.
    """

    target: torch.Tensor
    row_weight: torch.Tensor
    omega: torch.Tensor | None
    class_weight: torch.Tensor | None
    denominator: torch.Tensor

    @property
    def probabilities(self) -> bool:
        return self.target.ndim == 2


def _row_terms(
    target: torch.Tensor,
    class_weight: torch.Tensor | None,
    sample_weight: torch.Tensor | None,
    normalizer: torch.Tensor | None,
    options: LinearOptions,
) -> _Rows:
    """The :class:`_Rows` of ``target`` (N,) or (N, V), in plain PyTorch operations (differentiable); the
    mean's denominator is ``normalizer`` when given."""
    dtype = options.accumulation_dtype
    weight = None if class_weight is None else class_weight.to(dtype)
    if target.dtype.is_floating_point:  # probabilities: every row counts, with weight 1 in the mean
        rows_target, omega = target.to(dtype), None
        row_weight = torch.ones(target.shape[0], dtype=dtype, device=target.device)
    else:
        valid = target != options.ignore_index
        rows_target = torch.where(valid, target, torch.zeros_like(target))
        omega = None if weight is None else weight[rows_target]
        row_weight = valid.to(dtype)
    if sample_weight is not None:
        row_weight = row_weight * sample_weight.to(dtype)
    if normalizer is not None:
        denominator = normalizer.to(dtype)
    else:
        denominator = (row_weight if omega is None else row_weight * omega).sum()
    return _Rows(rows_target, row_weight, omega, weight, denominator)


def _target_mass(rows: _Rows, options: LinearOptions, n_classes: int) -> torch.Tensor:
    r""":math:`A_n = \sum_c a_{n,c}`, the total weight of row :math:`n`'s target distribution:
    :math:`(1-\varepsilon)\,\omega_n + \tfrac{\varepsilon}{V} \sum_c w_c` for index targets,
    :math:`\sum_c w_c \big((1-\varepsilon)\, t_{n,c} + \tfrac{\varepsilon}{V}\big)` for probabilities."""
    eps, weight = options.label_smoothing, rows.class_weight
    if rows.probabilities:
        mixed = (1 - eps) * rows.target + eps / n_classes
        return (mixed if weight is None else mixed * weight).sum(dim=1)
    omega = rows.omega if rows.omega is not None else torch.ones_like(rows.row_weight)
    spread = eps if weight is None else eps / n_classes * weight.sum()
    return (1 - eps) * omega + spread


def _grad_factor(rows: _Rows, options: LinearOptions, grad_output: torch.Tensor) -> torch.Tensor:
    """Per-row factor of the gradient :math:`f_n`: :math:`r_n`, over the mean's denominator, times the
    incoming gradient."""
    scale = mean_scale(rows.denominator, options.reduction, get_namespace(rows.denominator), rows.denominator)
    return (rows.row_weight * scale * grad_output.to(rows.row_weight.dtype)).contiguous()


def _chunked(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    rows: _Rows,
    options: LinearOptions,
    *,
    factor: torch.Tensor | None,
    needs: tuple[bool, bool, bool],
    stats: bool = False,
    coefficients: _StatsTerms | None = None,
) -> tuple[torch.Tensor, _Gradients, tuple | None]:
    """Per-row losses :math:`r_n \\ell_n` and, when ``factor`` is given, the gradients of
    :math:`\\sum_n f_n \\ell_n` that ``needs`` asks for, one chunk of rows at a time, in the
    accumulation dtype. On the kernels when they take the chunk's logits; else (switched off, or
    a device without kernels) each chunk's losses and logit gradient come from the core's generic
    code (:func:`_generic_rows`), the rest being the same.

    With ``stats``, also the per-row ``(lse, entropy, hits)`` (the row kernels' ``stats=True`` where
    the backend has it, else PyTorch operations on the chunk). With ``coefficients`` (the incoming
    gradients of the statistics), their gradient is added to the logits' one, from :math:`p`
    recomputed on the chunk (:func:`_stats_term`); without ``factor`` the chunks then form that term
    alone (the losses are not computed).
    """
    n_rows, n_classes = input.shape[0], weight.shape[0]
    dtype = options.accumulation_dtype
    weight_acc, bias_acc = weight.to(dtype), None if bias is None else bias.to(dtype)
    store = factor is not None or coefficients is not None
    grads = _Gradients(
        input.new_empty(input.shape, dtype=dtype) if store and needs[0] else None,
        input.new_zeros(weight.shape, dtype=dtype) if store and needs[1] else None,
        input.new_zeros(n_classes, dtype=dtype) if store and needs[2] and bias is not None else None,
    )
    chunk = min(options.chunk_size, n_rows)
    logits_buffer = input.new_empty((chunk, n_classes), dtype=dtype)
    over_logits = coefficients is None and _writes_over_logits(logits_buffer, rows, options)
    grad_buffer = input.new_empty((chunk, n_classes), dtype=dtype) if store and not over_logits else None
    losses = input.new_empty(n_rows, dtype=dtype)
    found = (
        (
            input.new_empty(n_rows, dtype=dtype),
            input.new_empty(n_rows, dtype=dtype),
            input.new_empty(n_rows, dtype=torch.bool),
        )
        if stats
        else None
    )
    backend = kernels.for_torch(logits_buffer)  # asked once: every chunk has the buffer's device and dtype
    row_stats = stats and backend is not None  # the row kernels' stats=True, until the backend turns out to lack it
    temperature = options.temperature
    if factor is not None and temperature != 1:  # the kernels differentiate the logits over the temperature
        factor = factor / temperature
    for start in range(0, n_rows, chunk):
        piece = slice(start, min(start + chunk, n_rows))
        x = input[piece].to(dtype)
        logits = logits_buffer[: piece.stop - start]
        if bias_acc is None:
            torch.mm(x, weight_acc.T, out=logits)
        else:
            torch.addmm(bias_acc, x, weight_acc.T, out=logits)
        if temperature != 1:
            logits.div_(temperature)
        f = factor[piece] if factor is not None else None
        if stats and not row_stats:  # before a kernel may write the gradient over the logits
            found_lse, found_entropy, found_hits = _torch_stats(
                logits, rows.target[piece], rows.row_weight[piece] != 0, options.softcap
            )
            found[0][piece], found[1][piece], found[2][piece] = found_lse, found_entropy, found_hits
        if f is None and coefficients is not None:  # the statistics' gradient alone
            dlogits = None
        elif backend is None:
            losses[piece], dlogits = _generic_rows(logits, rows, piece, f, options)
        else:
            arguments = (logits, rows.target[piece])
            keywords = {
                "weight": rows.class_weight,
                "row_weight": rows.row_weight[piece],
                "grad_factor": f,
                "smoothing": options.label_smoothing,
                "z": options.z_loss,
                "cap": options.softcap,
                "out": (logits if grad_buffer is None else grad_buffer[: piece.stop - start])
                if f is not None
                else None,
            }
            if row_stats:
                try:
                    losses[piece], dlogits, (found_lse, found_entropy, found_hits) = backend.softmax_cross_entropy_rows(
                        *arguments, **keywords, stats=True
                    )
                except TypeError as error:  # a backend without the statistics: PyTorch operations on the chunk
                    if "stats" not in str(error):
                        raise
                    row_stats = False
                    found_lse, found_entropy, found_hits = _torch_stats(
                        logits, rows.target[piece], rows.row_weight[piece] != 0, options.softcap
                    )
                    losses[piece], dlogits = backend.softmax_cross_entropy_rows(*arguments, **keywords)
                found[0][piece], found[1][piece], found[2][piece] = found_lse, found_entropy, found_hits
            else:
                losses[piece], dlogits = backend.softmax_cross_entropy_rows(*arguments, **keywords)
        if options.filter_eps is not None and dlogits is not None:
            _drop_small_probabilities(dlogits, logits, rows, piece, f, options)
        if coefficients is not None:
            term = _stats_term(logits, coefficients, piece, options)
            dlogits = term if dlogits is None else dlogits.add_(term)
        if dlogits is None:
            continue
        if grads.input is not None:
            torch.mm(dlogits, weight_acc, out=grads.input[piece])
        if grads.weight is not None:
            grads.weight.addmm_(dlogits.T, x)
        if grads.bias is not None:
            grads.bias += dlogits.sum(dim=0)
    return losses, grads, found


@dataclass
class _StatsTerms:
    r"""The incoming gradients of the statistics as per-row terms of the logits' gradient (accumulation
    dtype, 0 at rows whose statistics are the constant 0): :math:`c_n = \lambda_n + \eta_n \bar u_n`
    (``p_coefficient``), :math:`\eta_n` (``entropy_weight``) and the log-sum-exp :math:`L_n` that
    gives :math:`p = e^{u - L_n}`; the gradient of :math:`\sum_n \lambda_n L_n + \eta_n H_n` with
    respect to :math:`u` is :math:`p\,(c_n - \eta_n u)`."""

    p_coefficient: torch.Tensor
    entropy_weight: torch.Tensor
    lse: torch.Tensor


def _stats_terms(rows: _Rows, lse, entropy, grad_lse, grad_entropy, dtype: torch.dtype) -> _StatsTerms:
    """:class:`_StatsTerms` from the saved statistics and their incoming gradients (None: 0)."""
    live = rows.row_weight != 0
    zero = torch.zeros_like(rows.row_weight)
    lam = zero if grad_lse is None else torch.where(live, grad_lse.to(dtype), zero)
    eta = zero if grad_entropy is None else torch.where(live, grad_entropy.to(dtype), zero)
    lse = lse.to(dtype)
    u_bar = lse - entropy.to(dtype)
    return _StatsTerms((lam + eta * u_bar).contiguous(), eta.contiguous(), lse.contiguous())


def _stats_term(logits: torch.Tensor, terms: _StatsTerms, piece: slice, options: LinearOptions) -> torch.Tensor:
    r"""The statistics' part of a chunk's logits' gradient (``logits`` already over the temperature):
    :math:`p\,(c_n - \eta_n u)` times the soft-cap's slope, over :math:`T`."""
    cap = options.softcap
    tanh = None if cap is None else torch.tanh(logits / cap)
    u = logits if cap is None else cap * tanh
    c, eta = terms.p_coefficient[piece, None], terms.entropy_weight[piece, None]
    term = torch.exp(u - terms.lse[piece, None]) * (c - eta * u)
    if cap is not None:
        term *= 1 - tanh**2
    if options.temperature != 1:
        term /= options.temperature
    active = (c != 0) | (eta != 0)  # elsewhere p may overflow (a saved log-sum-exp of 0)
    return torch.where(active, term, torch.zeros_like(term))


def _torch_stats(logits: torch.Tensor, target: torch.Tensor, live: torch.Tensor, cap: float | None):
    """``(lse, entropy, hits)`` of each row of ``logits`` (already over the temperature) in PyTorch
    operations (differentiable), soft-capped by ``cap``; 0 (False) where ``live`` is False."""
    u = logits if cap is None else cap * torch.tanh(logits / cap)
    lse = torch.logsumexp(u, dim=1)
    log_p = u - lse[:, None]
    entropy = -(torch.exp(log_p) * log_p).sum(dim=1)
    hits = (torch.argmax(u, dim=1) == target) & live
    zero = torch.zeros_like(lse)
    return torch.where(live, lse, zero), torch.where(live, entropy, zero), hits


def _writes_over_logits(logits: torch.Tensor, rows: _Rows, options: LinearOptions) -> bool:
    """Whether the kernel may write a chunk's gradient over its logits: the kernels' rules of doing so
    (:func:`crossentropy.kernels.check_softmax_in_place`) allow it, and nothing reads the logits after
    (the soft-cap's derivative and the gradient filter do)."""
    if options.softcap is not None or options.filter_eps is not None:
        return False
    try:
        kernels.check_softmax_in_place(
            contiguous=True,
            dtype=logits.dtype,
            index_targets=not rows.probabilities,
            weighted_smoothing=rows.class_weight is not None and options.label_smoothing > 0,
            cap=None,
            on_host=in_host_memory(logits),
        )
    except ValueError:
        return False
    return True


def _generic_rows(logits: torch.Tensor, rows: _Rows, piece: slice, factor: torch.Tensor | None, options: LinearOptions):
    """What the kernels give for one chunk, from the core's generic code: the per-row losses
    :math:`r_n \\ell_n` and, when ``factor`` is given, the gradient of :math:`\\sum_n f_n \\ell_n`
    with respect to ``logits`` (None otherwise)."""
    keywords = {
        "weight": rows.class_weight,
        "ignore_index": None,  # ignored rows carry index 0 and a row weight of 0
        "label_smoothing": options.label_smoothing,
        "z_loss": options.z_loss,
        "softcap": options.softcap,
        "reduction": "none",
    }
    row_weight = rows.row_weight[piece]
    with kernels.disabled():
        if factor is None:
            losses = softmax_cross_entropy(logits, rows.target[piece], **keywords)
            return torch.where(row_weight != 0, losses * row_weight, torch.zeros_like(losses)), None
        losses, dlogits = softmax_cross_entropy_with_grad(logits, rows.target[piece], **keywords)
    losses = torch.where(row_weight != 0, losses * row_weight, torch.zeros_like(losses))
    return losses, dlogits * factor.unsqueeze(-1)


def _drop_small_probabilities(
    dlogits: torch.Tensor,
    logits: torch.Tensor,
    rows: _Rows,
    piece: slice,
    factor: torch.Tensor,
    options: LinearOptions,
) -> None:
    r"""Gradient filtering on a chunk, in place: the softmax term :math:`f_n \kappa_n p_{n,c}` of the
    gradient is dropped where :math:`p_{n,c}` < ``filter_eps`` (the fused kernels' definition,
    :func:`crossentropy.kernels.triton._linear.linear_cross_entropy_gradients`)."""
    cap = options.softcap
    u = logits if cap is None else cap * torch.tanh(logits / cap)
    lse = torch.logsumexp(u, dim=1)
    p = torch.exp(u - lse[:, None])
    chunk_rows = _Rows(
        rows.target[piece],
        rows.row_weight[piece],
        None if rows.omega is None else rows.omega[piece],
        rows.class_weight,
        rows.denominator,
    )
    kappa = _target_mass(chunk_rows, options, logits.shape[1])
    if options.z_loss > 0:
        omega = chunk_rows.omega if chunk_rows.omega is not None else 1.0
        kappa = kappa + 2 * options.z_loss * omega * lse
    dropped = torch.where(p < options.filter_eps, p, torch.zeros_like(p)) * (factor * kappa)[:, None]
    if cap is not None:
        dropped *= 1 - torch.tanh(logits / cap) ** 2
    dlogits -= dropped


def _fused(
    backend: kernels.Backend,
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    rows: _Rows,
    options: LinearOptions,
    *,
    factor: torch.Tensor | None,
    needs: tuple[bool, bool, bool],
    stats: bool = False,
    coefficients: _StatsTerms | None = None,
) -> tuple[torch.Tensor, _Gradients, tuple | None]:
    r"""What :func:`_chunked` returns, from a backend's fused linear kernels (index targets): the
    log-sum-exp :math:`L_n` and :math:`\sum_c a_{n,c} u_{n,c}` per row give
    :math:`\ell_n = A_n L_n - \sum_c a_{n,c} u_{n,c} + z\,\omega_n L_n^2`, and the gradient kernel
    takes :math:`\kappa_n = A_n + 2 z\,\omega_n L_n`. The statistics come from the same forward
    tiles (``linear_logsumexp(..., stats=True)``: the entropy and the first arg-max); their gradient
    from the same backward kernel (``p_coefficient`` :math:`c_n`, ``entropy_weight`` :math:`\eta_n`).
    Without ``factor`` but with ``coefficients`` the forward is not recomputed: the saved
    log-sum-exp serves (exact at every row the term touches), and no loss is formed."""
    n_classes, dtype = weight.shape[0], options.accumulation_dtype
    shared = {
        "class_weight": rows.class_weight,
        "smoothing": options.label_smoothing,
        "cap": options.softcap,
        "temperature": options.temperature,
    }
    live = rows.row_weight != 0
    found_stats = None
    if factor is None and coefficients is not None:
        lse, losses, kappa = coefficients.lse, None, torch.zeros_like(coefficients.lse)
    else:
        if stats:
            lse, target_dot, entropy, arg = backend.linear_logsumexp(
                input, weight, bias, rows.target, **shared, stats=True
            )
            zero = torch.zeros_like(rows.row_weight)
            found_stats = (
                torch.where(live, lse.to(dtype), zero),
                torch.where(live, entropy.to(dtype), zero),
                (arg == rows.target) & live,
            )
        else:
            lse, target_dot = backend.linear_logsumexp(input, weight, bias, rows.target, **shared)
        lse, target_dot = lse.to(dtype), target_dot.to(dtype)
        mass = _target_mass(rows, options, n_classes)
        omega = rows.omega if rows.omega is not None else torch.ones_like(lse)
        losses = mass * lse - target_dot
        if options.z_loss > 0:
            losses = losses + options.z_loss * omega * lse**2
        losses = torch.where(live, rows.row_weight * losses, torch.zeros_like(losses))
        if (factor is None and coefficients is None) or not any(needs):
            return losses, _Gradients(None, None, None), found_stats
        kappa = mass + 2 * options.z_loss * omega * lse if options.z_loss > 0 else mass
    extra = {}
    if coefficients is not None:
        extra = {"p_coefficient": coefficients.p_coefficient, "entropy_weight": coefficients.entropy_weight}
    found = backend.linear_cross_entropy_gradients(
        input,
        weight,
        bias,
        rows.target,
        lse,
        kappa.contiguous(),
        torch.zeros_like(lse) if factor is None else factor,
        **shared,
        filter_eps=options.filter_eps,
        need_input=needs[0],
        need_weight=needs[1],
        need_bias=needs[2] and bias is not None,
        accumulation_dtype=dtype,
        **extra,
    )
    return losses, _Gradients(*found), found_stats


def fused_linear_backend(input, weight, bias, target) -> kernels.Backend | None:
    """The backend whose fused linear kernels compute this call, or None for the chunks: one that has
    them, index targets, and one dtype for the input, the weight and the bias."""
    if (
        target.dtype.is_floating_point
        or weight.dtype != input.dtype
        or (bias is not None and bias.dtype != input.dtype)
    ):
        return None
    backend = kernels.for_torch(input, weight)
    return backend if backend is not None and backend.has_fused_linear() else None


def _losses_and_gradients(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    target: torch.Tensor,
    class_weight: torch.Tensor | None,
    sample_weight: torch.Tensor | None,
    normalizer: torch.Tensor | None,
    options: LinearOptions,
    *,
    grad_output: torch.Tensor | None,
    needs: tuple[bool, bool, bool],
    stats: bool = False,
    stats_grad: tuple | None = None,
) -> tuple[torch.Tensor, torch.Tensor, _Gradients, tuple | None]:
    """Per-row losses, the mean's denominator, the gradients ``needs`` asks for of
    ``sum(grad_output * loss)`` (``grad_output``: 0-d or one per row; None, or nothing needed,
    forms no gradient) and, with ``stats``, the per-row ``(lse, entropy, hits)``, in the
    accumulation dtype: the body of the operators. ``stats_grad``: ``(lse, entropy, grad_lse,
    grad_entropy)``, the saved statistics and their incoming gradients (None: 0), whose gradient is
    then added (without ``grad_output`` the losses are not formed).

    The values of the targets and weights are checked first.
    """
    _check_values(target, class_weight, sample_weight, weight.shape[0], options)
    rows = _row_terms(target, class_weight, sample_weight, normalizer, options)
    factor = _grad_factor(rows, options, grad_output) if grad_output is not None and any(needs) else None
    coefficients = None
    if stats_grad is not None and any(needs):
        coefficients = _stats_terms(rows, *stats_grad, options.accumulation_dtype)
    backend = fused_linear_backend(input, weight, bias, target)
    engine = _fused if backend is not None else _chunked
    arguments = (backend, input) if backend is not None else (input,)
    losses, grads, found = engine(
        *arguments, weight, bias, rows, options, factor=factor, needs=needs, stats=stats, coefficients=coefficients
    )
    return losses, rows.denominator, grads, found


def _check_values(target, class_weight, sample_weight, n_classes: int, options: LinearOptions) -> None:
    """The values rules of the targets and weights (each a read on the host; off on a device under
    :func:`crossentropy.checks_disabled`)."""
    xp = get_namespace(target)
    if target.dtype.is_floating_point:
        check_in_unit_interval("target", target, xp)
    else:
        check_class_indices("target", target, xp, n_classes, options.ignore_index)
    if class_weight is not None:
        check_nonnegative("weight", class_weight, xp)
    if sample_weight is not None:
        check_nonnegative("sample_weight", sample_weight, xp)


def _gradients_by_autograd(
    ctx: Any, grad_output: torch.Tensor | None, grad_lse: Any = None, grad_entropy: Any = None
) -> tuple[torch.Tensor | None, ...]:
    """The gradients of ``input``, ``weight`` and ``bias`` by autograd through plain PyTorch chunks.

    For a backward that builds a graph (``create_graph=True``), whose gradients autograd must
    differentiate again, and for a batched incoming gradient (``vmap``, gradcheck's batched
    gradients), which the kernels cannot read: the loss is formed again from the saved tensors
    in chunks that keep their logits, and differentiated.
    """
    _refuse_filtering_under_autograd(ctx.options)
    create_graph = torch.is_grad_enabled()
    input, weight, bias, target, class_weight, sample_weight, normalizer = ctx.saved_tensors[:_N_TENSORS]
    wanted = [t for t, need in zip((input, weight, bias), ctx.needs, strict=True) if need]
    stats = grad_lse is not None or grad_entropy is not None
    with torch.enable_grad(), kernels.disabled():
        result = _pytorch_chunks(
            input,
            weight,
            bias,
            target,
            class_weight,
            sample_weight,
            normalizer,
            ctx.options,
            recompute=False,
            stats=stats,
        )
        outputs = result[:3] if stats else (result,)
        pairs = [(o, g) for o, g in zip(outputs, (grad_output, grad_lse, grad_entropy), strict=False) if g is not None]
        found = torch.autograd.grad(
            [o for o, _ in pairs], wanted, [g for _, g in pairs], create_graph=create_graph, allow_unused=True
        )
        found = iter(torch.zeros_like(t) if g is None else g for g, t in zip(found, wanted, strict=True))
    return tuple(next(found) if need else None for need in ctx.needs)


def _refuse_filtering_under_autograd(options: LinearOptions) -> None:
    if options.filter_eps is not None:
        raise NotImplementedError(
            "`filter_eps` changes the first-order gradient only: it cannot be combined with a backward that builds "
            "a graph (create_graph=True), batched or forward-mode gradients, torch.func transforms, or gradients "
            "of `target`, `weight` or `sample_weight`"
        )


# --------------------------------------------------------------------------------------------
# The custom operators (see the module's docstring)
# --------------------------------------------------------------------------------------------


def _gradient_outputs(input: torch.Tensor, grads: _Gradients, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    """The gradients as operator outputs: a 0-element placeholder where not asked for."""
    return tuple(input.new_empty(0, dtype=dtype) if g is None else g for g in (grads.input, grads.weight, grads.bias))


@torch.library.custom_op("crossentropy::linear_cross_entropy", mutates_args=())
def _linear_cross_entropy(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    target: torch.Tensor,
    class_weight: torch.Tensor | None,
    sample_weight: torch.Tensor | None,
    normalizer: torch.Tensor | None,
    ignore_index: int,
    label_smoothing: float,
    z_loss: float,
    softcap: float | None,
    temperature: float,
    reduction: str,
    chunk_size: int,
    accumulation_dtype: torch.dtype,
    filter_eps: float | None,
) -> torch.Tensor:
    """The loss of ``input`` (N, H) through ``weight`` (V, H) and ``bias``, for ``target`` (N,) or
    (N, V); no gradient formed."""
    options = _checked_options(
        ignore_index,
        label_smoothing,
        z_loss,
        softcap,
        temperature,
        reduction,
        chunk_size,
        accumulation_dtype,
        filter_eps,
    )
    losses, denominator, _, _ = _losses_and_gradients(
        input, weight, bias, target, class_weight, sample_weight, normalizer, options, grad_output=None, needs=_NO_NEEDS
    )
    return reduce_loss(losses, denominator, reduction, get_namespace(losses), input.dtype).contiguous()


@torch.library.custom_op("crossentropy::linear_cross_entropy_with_grad", mutates_args=())
def _linear_cross_entropy_with_grad(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    target: torch.Tensor,
    class_weight: torch.Tensor | None,
    sample_weight: torch.Tensor | None,
    normalizer: torch.Tensor | None,
    ignore_index: int,
    label_smoothing: float,
    z_loss: float,
    softcap: float | None,
    temperature: float,
    reduction: str,
    chunk_size: int,
    accumulation_dtype: torch.dtype,
    filter_eps: float | None,
    need_input: bool,
    need_weight: bool,
    need_bias: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The loss and its gradients that ``need_*`` ask for (of the losses' sum for ``"none"``), in the
    accumulation dtype; a 0-element placeholder for each other one."""
    options = _checked_options(
        ignore_index,
        label_smoothing,
        z_loss,
        softcap,
        temperature,
        reduction,
        chunk_size,
        accumulation_dtype,
        filter_eps,
    )
    needs = (need_input, need_weight, need_bias and bias is not None)
    one = torch.ones((), dtype=accumulation_dtype, device=input.device)
    losses, denominator, grads, _ = _losses_and_gradients(
        input, weight, bias, target, class_weight, sample_weight, normalizer, options, grad_output=one, needs=needs
    )
    loss = reduce_loss(losses, denominator, reduction, get_namespace(losses), input.dtype).contiguous()
    return loss, *_gradient_outputs(input, grads, accumulation_dtype)


@torch.library.custom_op("crossentropy::linear_cross_entropy_stats", mutates_args=())
def _linear_cross_entropy_stats(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    target: torch.Tensor,
    class_weight: torch.Tensor | None,
    sample_weight: torch.Tensor | None,
    normalizer: torch.Tensor | None,
    ignore_index: int,
    label_smoothing: float,
    z_loss: float,
    softcap: float | None,
    temperature: float,
    reduction: str,
    chunk_size: int,
    accumulation_dtype: torch.dtype,
    filter_eps: float | None,
    need_input: bool,
    need_weight: bool,
    need_bias: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``return_stats=True``: the loss, the per-row log-sum-exp and entropy (accumulation dtype) and
    hits (bool) of index targets, and the loss's gradients that ``need_*`` ask for (of the losses'
    sum for ``"none"``; none asked for: the loss alone), a 0-element placeholder for each other one."""
    options = _checked_options(
        ignore_index,
        label_smoothing,
        z_loss,
        softcap,
        temperature,
        reduction,
        chunk_size,
        accumulation_dtype,
        filter_eps,
    )
    needs = (need_input, need_weight, need_bias and bias is not None)
    one = torch.ones((), dtype=accumulation_dtype, device=input.device) if any(needs) else None
    losses, denominator, grads, found = _losses_and_gradients(
        input,
        weight,
        bias,
        target,
        class_weight,
        sample_weight,
        normalizer,
        options,
        grad_output=one,
        needs=needs,
        stats=True,
    )
    loss = reduce_loss(losses, denominator, reduction, get_namespace(losses), input.dtype).contiguous()
    lse, entropy, hits = (t.contiguous() for t in found)
    return loss, lse, entropy, hits, *_gradient_outputs(input, grads, accumulation_dtype)


@torch.library.custom_op("crossentropy::linear_cross_entropy_backward", mutates_args=())
def _linear_cross_entropy_backward(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    target: torch.Tensor,
    class_weight: torch.Tensor | None,
    sample_weight: torch.Tensor | None,
    normalizer: torch.Tensor | None,
    grad_output: torch.Tensor | None,
    ignore_index: int,
    label_smoothing: float,
    z_loss: float,
    softcap: float | None,
    temperature: float,
    reduction: str,
    chunk_size: int,
    accumulation_dtype: torch.dtype,
    filter_eps: float | None,
    need_input: bool,
    need_weight: bool,
    need_bias: bool,
    lse: torch.Tensor | None = None,
    entropy: torch.Tensor | None = None,
    grad_lse: torch.Tensor | None = None,
    grad_entropy: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The gradients of ``sum(grad_output * loss)`` (``grad_output``: 0-d, or one per row for
    ``"none"``; None: no loss term) that ``need_*`` ask for, in the accumulation dtype; a 0-element
    placeholder for each other one. With the saved statistics ``lse`` and ``entropy`` of
    ``linear_cross_entropy_stats``, plus ``sum(grad_lse * lse + grad_entropy * entropy)`` (either
    incoming gradient may be None). The backward of the operators above; not differentiable itself."""
    options = LinearOptions(
        ignore_index,
        label_smoothing,
        z_loss,
        softcap,
        temperature,
        reduction,
        chunk_size,
        accumulation_dtype,
        filter_eps,
    )
    needs = (need_input, need_weight, need_bias and bias is not None)
    with_stats = lse is not None and entropy is not None and (grad_lse is not None or grad_entropy is not None)
    _, _, grads, _ = _losses_and_gradients(
        input,
        weight,
        bias,
        target,
        class_weight,
        sample_weight,
        normalizer,
        options,
        grad_output=grad_output,
        needs=needs,
        stats_grad=(lse, entropy, grad_lse, grad_entropy) if with_stats else None,
    )
    return _gradient_outputs(input, grads, accumulation_dtype)


_NO_NEEDS = (False, False, False)


def _fake_gradients(input, weight, bias, needs, dtype) -> tuple[torch.Tensor, ...]:
    shapes = (input.shape, weight.shape, (weight.shape[0],))
    return tuple(
        input.new_empty(shape if need else (0,), dtype=dtype)
        for shape, need in zip(shapes, (needs[0], needs[1], needs[2] and bias is not None), strict=True)
    )


@_linear_cross_entropy.register_fake
def _linear_fake(input, weight, bias, target, class_weight, sample_weight, normalizer, *options):
    reduction = options[5]
    return input.new_empty((input.shape[0],) if reduction == "none" else ())


@_linear_cross_entropy_with_grad.register_fake
def _linear_with_grad_fake(input, weight, bias, target, class_weight, sample_weight, normalizer, *options_and_needs):
    options, needs = options_and_needs[:_N_OPTIONS], options_and_needs[_N_OPTIONS:]
    loss = input.new_empty((input.shape[0],) if options[5] == "none" else ())
    return loss, *_fake_gradients(input, weight, bias, needs, options[7])


@_linear_cross_entropy_stats.register_fake
def _linear_stats_fake(input, weight, bias, target, class_weight, sample_weight, normalizer, *options_and_needs):
    options, needs = options_and_needs[:_N_OPTIONS], options_and_needs[_N_OPTIONS:]
    loss = input.new_empty((input.shape[0],) if options[5] == "none" else ())
    rows = input.shape[0]
    per_row = (input.new_empty(rows, dtype=options[7]), input.new_empty(rows, dtype=options[7]))
    return (
        loss,
        *per_row,
        input.new_empty(rows, dtype=torch.bool),
        *_fake_gradients(input, weight, bias, needs, options[7]),
    )


@_linear_cross_entropy_backward.register_fake
def _linear_backward_fake(
    input, weight, bias, target, class_weight, sample_weight, normalizer, grad_output, *options_and_needs, **_stats
):
    return _fake_gradients(input, weight, bias, options_and_needs[_N_OPTIONS : _N_OPTIONS + 3], options_and_needs[7])


_N_TENSORS = 7  # input, weight, bias, target, class_weight, sample_weight, normalizer


def _linear_setup_context(ctx, inputs, output) -> None:
    tensors, rest = inputs[:_N_TENSORS], inputs[_N_TENSORS:]
    input, weight, bias = tensors[:3]
    ctx.options = LinearOptions(*rest[:_N_OPTIONS])
    ctx.dtypes = (input.dtype, weight.dtype, None if bias is None else bias.dtype)
    ctx.needs = tuple(ctx.needs_input_grad[:3])
    ctx.save_for_backward(*tensors)
    ctx.n_inputs = len(inputs)
    ctx.grads = None
    if isinstance(output, tuple):  # the _with_grad operator: keep the gradients for backward
        kept = rest[_N_OPTIONS:]  # need_input, need_weight, need_bias
        if all(k or not n for n, k in zip(ctx.needs, kept, strict=True)):  # all that autograd needs
            ctx.grads = output[1:]
        ctx.mark_non_differentiable(*output[1:])
    ctx.set_materialize_grads(False)


def _linear_backward(ctx, grad_output, *_):
    grads, ctx.grads = ctx.grads, None  # the first backward hands the kept gradients over
    nothing = (None,) * (ctx.n_inputs - 3)
    if grad_output is None or not any(ctx.needs):
        return (None, None, None, *nothing)
    if torch.is_grad_enabled() or is_transformed_tensor(grad_output):
        return (*_gradients_by_autograd(ctx, grad_output), *nothing)
    if grads is None or ctx.options.reduction == "none":  # reduction="none", or a second backward
        grads = _linear_cross_entropy_backward(*ctx.saved_tensors, grad_output, *ctx.options.arguments(), *ctx.needs)
    else:
        grads = tuple(scaled(g, grad_output) if need else g for g, need in zip(grads, ctx.needs, strict=True))
    cast = [g.to(dtype) if need else None for g, dtype, need in zip(grads, ctx.dtypes, ctx.needs, strict=True)]
    return (*cast, *nothing)


_linear_cross_entropy.register_autograd(_linear_backward, setup_context=_linear_setup_context)
_linear_cross_entropy_with_grad.register_autograd(_linear_backward, setup_context=_linear_setup_context)


def _stats_setup_context(ctx, inputs, output) -> None:
    tensors, rest = inputs[:_N_TENSORS], inputs[_N_TENSORS:]
    input, weight, bias = tensors[:3]
    ctx.options = LinearOptions(*rest[:_N_OPTIONS])
    ctx.dtypes = (input.dtype, weight.dtype, None if bias is None else bias.dtype)
    ctx.needs = tuple(ctx.needs_input_grad[:3])
    _, lse, entropy, hits, *gradients = output
    ctx.save_for_backward(*tensors, lse, entropy)
    ctx.n_inputs = len(inputs)
    kept = rest[_N_OPTIONS:]  # need_input, need_weight, need_bias
    ctx.grads = (
        tuple(gradients) if any(kept) and all(k or not n for n, k in zip(ctx.needs, kept, strict=True)) else None
    )
    ctx.mark_non_differentiable(hits, *gradients)
    ctx.set_materialize_grads(False)


def _stats_backward(ctx, grad_output, grad_lse, grad_entropy, *_):
    """The loss's gradient as :func:`_linear_backward` forms it, plus the statistics' (one more pass over
    the logits, which the forward could not make: their incoming gradients were not known)."""
    grads, ctx.grads = ctx.grads, None
    nothing = (None,) * (ctx.n_inputs - 3)
    if (grad_output is None and grad_lse is None and grad_entropy is None) or not any(ctx.needs):
        return (None, None, None, *nothing)
    incoming = (grad_output, grad_lse, grad_entropy)
    if torch.is_grad_enabled() or any(g is not None and is_transformed_tensor(g) for g in incoming):
        return (*_gradients_by_autograd(ctx, grad_output, grad_lse, grad_entropy), *nothing)
    tensors, (lse, entropy) = ctx.saved_tensors[:_N_TENSORS], ctx.saved_tensors[_N_TENSORS:]
    stats = (lse, entropy, grad_lse, grad_entropy) if grad_lse is not None or grad_entropy is not None else ()
    found = None
    if grad_output is not None and grads is not None and ctx.options.reduction != "none":
        found = [scaled(g, grad_output) if need else g for g, need in zip(grads, ctx.needs, strict=True)]
        grad_output = None  # the loss's part is done
    if grad_output is not None or stats:
        more = _linear_cross_entropy_backward(*tensors, grad_output, *ctx.options.arguments(), *ctx.needs, *stats)
        found = (
            more if found is None else [g + m if need else g for g, m, need in zip(found, more, ctx.needs, strict=True)]
        )
    cast = [g.to(dtype) if need else None for g, dtype, need in zip(found, ctx.dtypes, ctx.needs, strict=True)]
    return (*cast, *nothing)


_linear_cross_entropy_stats.register_autograd(_stats_backward, setup_context=_stats_setup_context)


def _pytorch_chunks(
    input,
    weight,
    bias,
    target,
    class_weight,
    sample_weight,
    normalizer,
    options: LinearOptions,
    *,
    recompute: bool = True,
    stats: bool = False,
) -> Any:
    """Plain PyTorch (any device): the loss from chunks of rows, differentiable by autograd (the
    targets, class weights and sample weights too).

    With ``recompute`` the chunks run under activation checkpointing (their logits are recomputed
    in the backward pass); without it, or under ``torch.func`` transforms (which refuse the
    saved-tensor hooks of checkpointing), they keep their logits for the backward pass. With
    ``stats`` (index targets): ``(loss, lse, entropy, hits)``, the statistics per row in the
    accumulation dtype (:func:`_torch_stats`), differentiated by autograd too.
    """
    dtype = options.accumulation_dtype
    probabilities = target.dtype.is_floating_point

    def chunk_losses(rows, weight, bias, class_weight, rows_target, rows_sample_weight):
        logits = torch.nn.functional.linear(rows.to(dtype), weight.to(dtype), None if bias is None else bias.to(dtype))
        if options.temperature != 1:
            logits = logits / options.temperature
        losses = softmax_cross_entropy(
            logits,
            rows_target.to(dtype) if probabilities else rows_target,
            weight=None if class_weight is None else class_weight.to(dtype),
            ignore_index=None if probabilities else options.ignore_index,
            label_smoothing=options.label_smoothing,
            z_loss=options.z_loss,
            softcap=options.softcap,
            sample_weight=rows_sample_weight,
            reduction="none",
        )
        if not stats:
            return losses
        live = rows_target != options.ignore_index
        if rows_sample_weight is not None:
            live = live & (rows_sample_weight != 0)
        safe_target = torch.where(live, rows_target, torch.zeros_like(rows_target))
        return (losses, *_torch_stats(logits, safe_target, live, options.softcap))

    size = options.chunk_size
    chunks = [
        (
            input[i : i + size],
            weight,
            bias,
            class_weight,
            target[i : i + size],
            None if sample_weight is None else sample_weight[i : i + size].to(dtype),
        )
        for i in range(0, input.shape[0], size)
    ]
    if recompute and not torch._C._are_functorch_transforms_active():
        pieces = [checkpoint(chunk_losses, *chunk, use_reentrant=False) for chunk in chunks]
    else:
        pieces = [chunk_losses(*chunk) for chunk in chunks]
    # A tensor: under vmap the denominator differs by batch entry.
    denominator = _row_terms(target, class_weight, sample_weight, normalizer, options).denominator
    if stats:
        losses, lse, entropy, hits = (torch.cat(parts) for parts in zip(*pieces, strict=True))
    else:
        losses = torch.cat(pieces)
    loss = reduce_loss(losses, denominator, options.reduction, get_namespace(losses), input.dtype)
    return (loss, lse, entropy, hits) if stats else loss


def _k_dimensional(input, linear_weight, target, linear_bias, keywords: dict) -> torch.Tensor:
    """PyTorch's K-dimensional loss (``linear_weight`` of shape (C, d_1, ..., d_K, H)): as PyTorch
    itself does, the (N, C, d_1, ..., d_K) logits are formed and given to
    :func:`crossentropy.torch.cross_entropy`."""
    from .functional import cross_entropy

    if input.ndim != 2:
        raise ValueError(
            f"a K-dimensional loss (`linear_weight` of shape {tuple(linear_weight.shape)}) needs `input` of shape "
            f"(N, {input.shape[-1]}); got {tuple(input.shape)}"
        )
    if keywords.pop("filter_eps") is not None:
        raise ValueError("`filter_eps` applies to the fused (N, V) loss only, not to a K-dimensional `linear_weight`")
    if keywords.pop("shift"):
        raise ValueError("`shift` applies to the (..., T, H) input of a language model, not to a K-dimensional loss")
    dtype = keywords.pop("accumulation_dtype")
    temperature, normalizer = keywords.pop("temperature"), keywords.pop("normalizer")
    flat_weight = linear_weight.reshape(-1, input.shape[-1]).to(dtype)
    flat_bias = None if linear_bias is None else linear_bias.reshape(-1).to(dtype)
    logits = torch.nn.functional.linear(input.to(dtype), flat_weight, flat_bias)
    logits = logits.reshape(input.shape[0], *linear_weight.shape[:-1]) / temperature
    if normalizer is None:
        return cross_entropy(logits, target, **keywords).to(input.dtype)
    return cross_entropy(logits, target, normalizer=normalizer, **keywords).to(input.dtype)


def _chunk_size(chunk_size: int | None, options: Any, n_rows: int, in_features: int, n_classes: int) -> int:
    """Rows per chunk: ``chunk_size``, or what ``options`` (``torch.nn.LinearCrossEntropyOptions``) asks
    for (``batch_chunk_size``, or its ``"aspect_ratio[:k]"`` rule), or as many rows as make
    :data:`CHUNK_ELEMENTS` logits."""
    asked = None
    if options is not None:
        method = options.chunking_method
        if options.batch_chunk_size is not None:
            asked = options.batch_chunk_size
        elif method is not None and method != "auto":
            # PyTorch's rule: the chunk's logits as large as the input, divided by k.
            _, _, k = method.partition(":")
            ratio = math.ceil(n_classes / in_features)
            asked = max(1, (1 << max(0, math.ceil(n_rows / ratio) - 1).bit_length()) // int(k or 1))
    if chunk_size is not None and asked is not None and chunk_size != asked:
        raise ValueError(
            f"`chunk_size` ({chunk_size}) and `options` (which asks for {asked} rows per chunk) disagree; give one"
        )
    if chunk_size is not None:
        return chunk_size
    return asked if asked is not None else max(1, CHUNK_ELEMENTS // max(n_classes, 1))


def _accumulation(accumulation_dtype: Any, options: Any, input: torch.Tensor) -> Any:
    """The accumulation dtype: ``accumulation_dtype``, else ``options.acc_dtype``, else float32 (float64 for
    float64 input); checked by :func:`_checked_options`."""
    if accumulation_dtype is not None:
        return accumulation_dtype
    if options is not None and options.acc_dtype is not None:
        if options.acc_dtype not in _ACCUMULATION_DTYPES:
            raise ValueError(
                "`options.acc_dtype` must be None, torch.float32 or torch.float64 (the kernels accumulate in at least "
                f"float32); got {options.acc_dtype!r}"
            )
        return options.acc_dtype
    return torch.float64 if input.dtype == torch.float64 else torch.float32


def _check_shapes(input, linear_weight, target, linear_bias, weight, sample_weight, ignore_index) -> bool:
    """The shape rules of :func:`linear_cross_entropy`; returns whether ``target`` holds probabilities."""
    for name, tensor in (("input", input), ("linear_weight", linear_weight), ("target", target)):
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"`{name}` must be a torch.Tensor; got {type(tensor).__name__}")
    for name, tensor in (("linear_bias", linear_bias), ("weight", weight), ("sample_weight", sample_weight)):
        if tensor is not None and not isinstance(tensor, torch.Tensor):
            raise TypeError(f"`{name}` must be a torch.Tensor or None; got {type(tensor).__name__}")
    check_not_empty("input", input)
    if input.ndim < 1 or linear_weight.ndim != 2 or input.shape[-1] != linear_weight.shape[1]:
        raise ValueError(
            "`linear_weight` must have shape (V, H) with H = input.shape[-1]; got input "
            f"{tuple(input.shape)} and linear_weight {tuple(linear_weight.shape)}"
        )
    n_classes, batch = linear_weight.shape[0], tuple(input.shape[:-1])
    probabilities = tuple(target.shape) == (*batch, n_classes)
    if probabilities and not target.dtype.is_floating_point:
        raise TypeError(
            f"`target` of shape {(*batch, n_classes)} holds class probabilities and must be floating point; got "
            f"dtype {target.dtype} (class indices have shape {batch})"
        )
    if not probabilities and tuple(target.shape) != batch:
        raise ValueError(
            f"`target` must have shape {batch} (class indices: the input's without the hidden dimension) or "
            f"{(*batch, n_classes)} (probabilities); got {tuple(target.shape)}"
        )
    if not probabilities and target.dtype.is_floating_point:
        raise TypeError(
            f"`target` of shape {batch} must be integer class indices; got dtype {target.dtype} "
            f"(probabilities have shape {(*batch, n_classes)})"
        )
    if probabilities and ignore_index is not None:
        raise ValueError(
            f"`ignore_index` cannot be specified when `target` holds probabilities; got ignore_index={ignore_index}"
        )
    for name, tensor, shape in (
        ("linear_bias", linear_bias, (n_classes,)),
        ("weight", weight, (n_classes,)),
        ("sample_weight", sample_weight, batch),
    ):
        if tensor is not None and tuple(tensor.shape) != shape:
            raise ValueError(f"`{name}` must have shape {shape}; got {tuple(tensor.shape)}")
    return probabilities


@overload
def linear_cross_entropy(
    input: torch.Tensor,
    linear_weight: torch.Tensor,
    target: torch.Tensor,
    *,
    linear_bias: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
    reduction: Reduction = "mean",
    ignore_index: int | None = None,
    label_smoothing: float = 0.0,
    options: Any = None,
    z_loss: float = 0.0,
    softcap: float | None = None,
    temperature: float = 1.0,
    sample_weight: torch.Tensor | None = None,
    normalizer: float | torch.Tensor | None = None,
    shift: bool = False,
    accumulation_dtype: torch.dtype | None = None,
    filter_eps: float | None = None,
    chunk_size: int | None = None,
    return_stats: Literal[False] = False,
) -> torch.Tensor: ...


@overload
def linear_cross_entropy(
    input: torch.Tensor,
    linear_weight: torch.Tensor,
    target: torch.Tensor,
    *,
    linear_bias: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
    reduction: Reduction = "mean",
    ignore_index: int | None = None,
    label_smoothing: float = 0.0,
    options: Any = None,
    z_loss: float = 0.0,
    softcap: float | None = None,
    temperature: float = 1.0,
    sample_weight: torch.Tensor | None = None,
    normalizer: float | torch.Tensor | None = None,
    shift: bool = False,
    accumulation_dtype: torch.dtype | None = None,
    filter_eps: float | None = None,
    chunk_size: int | None = None,
    return_stats: Literal[True],
) -> tuple[torch.Tensor, LossStats]: ...


@overload
def linear_cross_entropy(
    input: torch.Tensor,
    linear_weight: torch.Tensor,
    target: torch.Tensor,
    *,
    linear_bias: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
    reduction: Reduction = "mean",
    ignore_index: int | None = None,
    label_smoothing: float = 0.0,
    options: Any = None,
    z_loss: float = 0.0,
    softcap: float | None = None,
    temperature: float = 1.0,
    sample_weight: torch.Tensor | None = None,
    normalizer: float | torch.Tensor | None = None,
    shift: bool = False,
    accumulation_dtype: torch.dtype | None = None,
    filter_eps: float | None = None,
    chunk_size: int | None = None,
    return_stats: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, LossStats]: ...


def linear_cross_entropy(
    input: torch.Tensor,
    linear_weight: torch.Tensor,
    target: torch.Tensor,
    *,
    linear_bias: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
    reduction: Reduction = "mean",
    ignore_index: int | None = None,
    label_smoothing: float = 0.0,
    options: Any = None,
    z_loss: float = 0.0,
    softcap: float | None = None,
    temperature: float = 1.0,
    sample_weight: torch.Tensor | None = None,
    normalizer: float | torch.Tensor | None = None,
    shift: bool = False,
    accumulation_dtype: torch.dtype | None = None,
    filter_eps: float | None = None,
    chunk_size: int | None = None,
    return_stats: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, LossStats]:
    r"""Cross-entropy of ``input @ linear_weight.T + linear_bias`` without materializing the N×V logits.

    ``torch.nn.functional.linear_cross_entropy`` (PyTorch 2.13): same parameters, defaults and
    results, equal to ``crossentropy.torch.cross_entropy(F.linear(input, linear_weight,
    linear_bias), target, ...)``:

    .. math::

        \ell_n = s_n \Big( -\sum_c a_{n,c} \log \operatorname{softmax}(u_n)_c
                 + z\, \omega_n \operatorname{LSE}(u_n)^2 \Big),
        \qquad u_n = \operatorname{cap}(W x_n + b),

    with PyTorch's target weights :math:`a_{n,c} = (1-\varepsilon)\, w_{y_n} [c = y_n] +
    \tfrac{\varepsilon}{V} w_c` (index targets; :math:`\omega_n = w_{y_n}`) or :math:`w_c
    ((1-\varepsilon)\, t_{n,c} + \tfrac{\varepsilon}{V})` (probabilities; :math:`\omega_n = 1`),
    and the mean dividing by :math:`\sum_n s_n \omega_n` over the rows not ignored (0 when there
    is none). Unlike PyTorch's, every path is memory-light (``options=None`` included): on a
    backend with fused linear kernels (Triton on CUDA, index targets) the logits exist only in
    tiles on chip; elsewhere in chunks of rows. Gradients for ``input``, ``linear_weight`` and
    ``linear_bias`` accumulate in float32 and come back in their dtypes. Every autograd path
    PyTorch has works (double backward, forward AD, ``torch.func``, ``torch.compile``), where
    PyTorch's chunked path refuses some.

    Parameters
    ----------
    input : Tensor of shape (H,), (N, H) or (..., H)
        Hidden states; more than one batch dimension (e.g. (batch, sequence, hidden)) is an
        extension: PyTorch takes (H,) and (N, H) only.
    linear_weight : Tensor of shape (V, H)
        The output projection (``nn.Linear(H, V).weight``, a tied embedding). PyTorch's
        K-dimensional (C, d_1, ..., d_K, H) is accepted too and, as PyTorch does, materializes
        the logits.
    target : Tensor
        Class indices of the batch shape (``input.shape[:-1]``) in ``[0, V)`` or
        ``ignore_index``, or probabilities of shape ``(*input.shape[:-1], V)``.
    linear_bias : Tensor of shape (V,), optional
        The projection's bias.
    weight : Tensor of shape (V,), optional
        Class weights :math:`w_c`, as PyTorch's.
    reduction : {"mean", "sum", "none"}, default "mean"
    ignore_index : int, optional
        Index targets equal to it are ignored; None means -100 (PyTorch's rule). Not allowed
        with probability targets.
    label_smoothing : float, default 0.0
        :math:`\varepsilon`, PyTorch's label smoothing over the V classes.
    options : torch.nn.LinearCrossEntropyOptions, optional
        PyTorch's chunking options: ``batch_chunk_size`` (or the ``chunking_method``
        ``"aspect_ratio[:k]"`` rule) sets the rows per chunk, ``acc_dtype`` the accumulation
        dtype; ``acc_policy`` and ``allow_retain_graph`` have no effect (the accumulation is
        always in ``accumulation_dtype``, and a second backward always works).
    z_loss : float >= 0, default 0
        The z-loss coefficient :math:`z`, as :func:`crossentropy.torch.cross_entropy`'s.
    softcap : float > 0, optional
        The soft-cap :math:`c` (:math:`u = c \tanh(x / c)`), as :func:`crossentropy.torch.cross_entropy`'s.
    temperature : float, default 1.0
        :math:`T > 0`: the logits are divided by it first (before the soft-cap), the same loss
        and gradients as ``F.linear_cross_entropy(input, linear_weight / T, target, linear_bias=linear_bias / T)``.
    sample_weight : Tensor of the batch shape, optional
        Per-row weights :math:`s_n \ge 0`, also in the mean's denominator.
    normalizer : float or 0-d Tensor, optional
        With ``reduction="mean"``, the (weighted) sum of the losses is divided by it instead of
        by this call's own :math:`\sum_n s_n \omega_n`: e.g. the count of target tokens of the
        whole optimizer step, over its micro-batches and data-parallel ranks (Hugging Face's
        ``num_items_in_batch``), so that the gradients summed over the micro-batches are the
        full batch's exactly. An error with another reduction.
    shift : bool, default False
        Causal language modelling: with ``input`` of shape (..., T, H) and ``target`` (..., T),
        position :math:`t` is scored against target :math:`t + 1` (``input[..., :-1, :]`` against
        ``target[..., 1:]``) without copying either (views one row apart); the last position of
        each sequence scores nothing and is not counted (0 there for ``"none"``, whose result
        keeps the shape (..., T)). ``sample_weight`` then weights the positions of ``input``.
    accumulation_dtype : torch.float32 or torch.float64, optional
        What the logits and the gradients accumulate in; default float32 (float64 for float64
        input). float64 makes a float32 model's loss and gradients exact to float32 rounding at
        twice the memory of the gradient of ``linear_weight`` (the fused kernels compute the
        tiles of half-precision and float32 inputs in float32 and accumulate the gradients in
        this dtype).
    filter_eps : float in (0, 1), optional
        Gradient filtering (Cut Cross-Entropy's ``filter_eps``): the softmax term of the logits'
        gradient, :math:`f_n \kappa_n p_{n,c}`, is dropped where :math:`p_{n,c}` <
        ``filter_eps``; the fused kernels then skip every tile where it is all that is left (no
        target in it, no label smoothing). The loss is unchanged; each dropped entry of the
        logits' gradient is below ``filter_eps`` times the row's factor :math:`f_n \kappa_n`, and
        row :math:`n` loses at most :math:`V` ``filter_eps`` of probability mass. Measured
        (``tests/kernels/test_kernels_triton_linear.py``): at ``filter_eps`` :math:`= 2^{-12}`, 100 classes,
        target probability about 0.9 (half the probabilities dropped), at most 0.007 of the mass
        per row and gradients off by at most 0.6% of their largest entry; the relative error
        grows as predictions sharpen (1.6% at target probability 0.98). Off by default.
        First-order gradients only (a second derivative of a filtered gradient raises).
    chunk_size : int, optional
        Rows per chunk of the chunked engine; by default ``options``'s choice, else as many as
        make 64 MiB of float32 logits. Peak memory is one chunk of logits (two with ``softcap``
        or ``filter_eps``) and the gradient of ``linear_weight``.
    return_stats : bool, default False
        Also return a :class:`crossentropy.LossStats` ``(lse, entropy, accuracy)`` of per-token
        tensors of the target's shape (index targets only; probabilities raise a ``ValueError``),
        from the same pass as the loss with O(N) more memory: :math:`\operatorname{LSE}(u_n)`,
        the entropy :math:`H_n = \operatorname{LSE}(u_n) - \sum_c p_{n,c} u_{n,c}` of
        :math:`p_n = \operatorname{softmax}(u_n)` (the input's dtype) and whether the first
        arg-max of :math:`u_n` is the target (bool), for the logits the loss reads
        (over the temperature, soft-capped). 0 (False) at ignored positions, at a sample weight of
        0 and, with ``shift``, at the last position of each sequence (position :math:`t`
        describes the logits of position :math:`t`). ``lse`` and ``entropy`` are differentiable
        (an entropy bonus or a z-loss of one's own): with incoming gradients :math:`\lambda_n`,
        :math:`\eta_n` the logits' gradient gains :math:`p_{n,c}(\lambda_n + \eta_n \bar u_n -
        \eta_n u_{n,c})` (:math:`\bar u_n = \sum_c p_{n,c} u_{n,c}`) times the soft-cap's slope
        over :math:`T`, formed in one more pass over the logits in the backward (fused engine:
        the same backward kernel as the loss's; chunks: :math:`p` recomputed per chunk), since
        the forward does not know :math:`\lambda, \eta`. With False nothing of them is computed.

    Returns
    -------
    Tensor, or (Tensor, LossStats) with ``return_stats``
        0-d for ``"mean"``/``"sum"``, the target's batch shape for ``"none"``; the input's dtype.

    Examples
    --------
    >>> import torch
    >>> hidden, head = torch.randn(6, 16), torch.nn.Linear(16, 50)
    >>> tokens = torch.randint(0, 50, (6,))
    >>> loss = linear_cross_entropy(hidden, head.weight, tokens, linear_bias=head.bias, chunk_size=4)
    >>> bool(torch.isclose(loss, torch.nn.functional.cross_entropy(head(hidden), tokens), atol=1e-6))
    True

    PyTorch's own function, with the same arguments, gives the same loss:

    >>> theirs = torch.nn.functional.linear_cross_entropy(hidden, head.weight, tokens, linear_bias=head.bias)
    >>> bool(torch.isclose(loss, theirs, atol=1e-6))
    True
    """
    extras = {
        "z_loss": z_loss,
        "softcap": softcap,
        "temperature": temperature,
        "sample_weight": sample_weight,
        "normalizer": normalizer,
        "shift": shift,
        "accumulation_dtype": accumulation_dtype,
        "filter_eps": filter_eps,
    }
    if any(isinstance(t, _dtensor.TYPES) for t in (input, linear_weight, linear_bias)):  # torch.distributed.tensor
        return _dtensor.linear_cross_entropy_dtensor(
            input,
            linear_weight,
            target,
            linear_bias=linear_bias,
            weight=weight,
            reduction=reduction,
            ignore_index=ignore_index,
            label_smoothing=label_smoothing,
            options=options,
            chunk_size=chunk_size,
            return_stats=return_stats,
            **extras,
        )
    if isinstance(linear_weight, torch.Tensor) and linear_weight.ndim > 2 and isinstance(input, torch.Tensor):
        if return_stats:
            raise ValueError(
                "`return_stats` applies to the (N, V) loss of a language model, not to a K-dimensional `linear_weight`"
            )
        keywords = {
            "weight": weight,
            "reduction": reduction,
            "ignore_index": -100 if ignore_index is None else ignore_index,
            "label_smoothing": label_smoothing,
            **extras,
            "accumulation_dtype": _accumulation(accumulation_dtype, options, input),
        }
        return _k_dimensional(input, linear_weight, target, linear_bias, keywords)
    probabilities = _check_shapes(input, linear_weight, target, linear_bias, weight, sample_weight, ignore_index)
    if return_stats and probabilities:
        raise ValueError(
            "`return_stats` needs class-index targets (the accuracy compares the arg-max with the target); got "
            f"probabilities of shape {tuple(target.shape)}"
        )
    if options is not None and not isinstance(options, torch.nn.LinearCrossEntropyOptions):
        raise TypeError(f"`options` must be a torch.nn.LinearCrossEntropyOptions or None; got {type(options).__name__}")
    hidden, n_classes = input.shape[-1], linear_weight.shape[0]
    accumulation = _accumulation(accumulation_dtype, options, input)
    rows, row_target, row_sample_weight = sequence_rows(
        input, target, sample_weight, probabilities, shift, accumulation
    )
    chunk_size = _chunk_size(chunk_size, options, rows.shape[0], hidden, n_classes)
    arguments = (
        -100 if ignore_index is None else ignore_index,
        label_smoothing,
        z_loss,
        softcap,
        temperature,
        reduction,
        chunk_size,
        accumulation,
        filter_eps,
    )
    if torch.compiler.is_compiling():  # TorchDynamo cannot trace the checks: the operators make them when they run
        ignore, smoothing, z, cap, t, *rest = arguments
        cap = None if cap is None else float(cap)
        settings = LinearOptions(int(ignore), float(smoothing), float(z), cap, float(t), *rest)
    else:
        settings = _checked_options(*arguments)
    normalizer = _ops.checked_normalizer(normalizer, settings.reduction, input, settings.accumulation_dtype)
    tensors = (rows, linear_weight, linear_bias, row_target, weight, row_sample_weight, normalizer)
    transformed = any(is_transformed_tensor(t) for t in tensors)
    differentiable_others = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors[3:])
    stats = None
    if not transformed and not differentiable_others:  # the operators check the targets' and weights' values
        needs = [
            torch.is_grad_enabled() and t is not None and t.requires_grad for t in (input, linear_weight, linear_bias)
        ]
        with_grad = any(needs) and settings.reduction != "none"  # the gradients in the forward call, scaled in backward
        if return_stats:
            given = needs if with_grad else (False, False, False)
            loss, *stats = _linear_cross_entropy_stats(*tensors, *settings.arguments(), *given)[:4]
        elif with_grad:
            loss = _linear_cross_entropy_with_grad(*tensors, *settings.arguments(), *needs)[0]
        else:
            loss = _linear_cross_entropy(*tensors, *settings.arguments())
    else:
        if settings.filter_eps is not None:
            _refuse_filtering_under_autograd(settings)
        _check_values(row_target, weight, row_sample_weight, n_classes, settings)
        loss = _pytorch_chunks(*tensors, settings, stats=return_stats)
        if return_stats:
            loss, *stats = loss
    batch = target.shape[: input.ndim - 1]
    if stats is not None:
        stats = LossStats(
            *(_positions(t, shift, batch) for t in (stats[0].to(input.dtype), stats[1].to(input.dtype), stats[2]))
        )
    if settings.reduction != "none":
        return loss if stats is None else (loss, stats)
    loss = _positions(loss, shift, batch)
    return loss if stats is None else (loss, stats)


def _positions(values: torch.Tensor, shift: bool, batch) -> torch.Tensor:
    """Per-row ``values`` in the batch shape; with ``shift`` the last position (scoring nothing) is 0."""
    if shift:
        values = torch.cat([values, values.new_zeros(1)])
    return values.reshape(batch)


def sequence_rows(input, target, sample_weight, probabilities: bool, shift: bool, accumulation: torch.dtype):
    """The rows of ``input`` (N, H), their targets ((N,) or (N, V)) and sample weights ((N,) or None), views
    where they can be. With ``shift``, row n is scored against the target of position n + 1 (views that
    start one later) and the last position of each sequence (the second-to-last dimension) gets weight 0."""
    hidden = input.shape[-1]
    rows = input.reshape(-1, hidden)
    row_target = target.reshape(-1, target.shape[-1]) if probabilities else target.reshape(-1)
    row_sample_weight = None if sample_weight is None else sample_weight.reshape(-1)
    if not shift:
        return rows, row_target, row_sample_weight
    if input.ndim < 2:
        raise ValueError(
            f"`shift` needs `input` of shape (..., T, H), positions of sequences; got {tuple(input.shape)}"
        )
    length = input.shape[-2]
    position = torch.arange(rows.shape[0] - 1, device=input.device) % length
    scored = (position != length - 1).to(accumulation)
    shifted_weight = scored if row_sample_weight is None else row_sample_weight[:-1].to(accumulation) * scored
    return rows[:-1], row_target[1:], shifted_weight
