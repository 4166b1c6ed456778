r"""Triton kernel of sigmoid (binary and multi-label) cross-entropy: one pass, elementwise.

The GPU twin of the Numba backend's entry point of the same name
(:func:`crossentropy.kernels.numba.sigmoid_cross_entropy_elements`, the math in
:mod:`crossentropy.kernels.numba._sigmoid`), for PyTorch tensors on a CUDA device, or on the CPU
under ``TRITON_INTERPRET=1`` (set before this module is imported). For each element, with
smoothed target :math:`y = (1-\varepsilon) t + \varepsilon / 2`, positive weight :math:`q`,
weight :math:`w`, sample weight :math:`s` and :math:`e = e^{-|x|}`:

.. math::

    \ell = s w \big( q y \operatorname{sp}(-x) + (1 - y) \operatorname{sp}(x) \big), \qquad
    \operatorname{sp}(\pm x) = -\log \sigma(\mp x) = \max(\pm x, 0) + \ln(1 + e),

    g = \kappa\, s w \big( \sigma(x) (q y + 1 - y) - q y \big), \qquad
    \sigma(x) = \frac{1}{1 + e} \text{ for } x \ge 0, \ \frac{e}{1 + e} \text{ otherwise},

with :math:`\kappa` the reduction's gradient scale and products ``0 * inf = 0`` (an infinite
logit with no target mass on its side costs nothing). :math:`\ln(1 + e)` is formed as
:math:`\ln(u) \cdot e / (u - 1)` with :math:`u = 1 + e` (:math:`e` itself where :math:`u` rounds
to 1), accurate to a few units in the last place with an ordinary logarithm.

One program covers ``BLOCK`` consecutive elements of the flat input with 64-bit offsets (inputs
of more than 2^31 elements are fine); only the last block is masked, so the others load and
store whole vectors. Options are read in their broadcast layout (:func:`_layout`): a scalar,
one value per class of the last axis, one value per row of the class axis, or one per element;
only other layouts are expanded to the full shape first. A sum or mean is formed from one
partial sum per program, added in float64 by PyTorch's reduction (in a fixed order for a given
size), and rounded once; for the mean, the main kernel sums each block's :math:`\ell / D` too,
so that :math:`\sum_n (\ell_n / D)` is there when :math:`\sum_n \ell_n` passes the largest
float while the mean does not, and a one-program kernel chooses. Nothing is read back to the
host: ``grad_scale`` and ``denominator`` may be 0-d tensors on the device, read by the kernels.
"""

from __future__ import annotations

import numbers
from typing import Any

import torch
import triton
import triton.language as tl

from ..._array import may_overlap, same_memory
from . import INTERPRETED, LOGIT_DTYPES, interpreter_errstate

__all__ = ["BLOCK", "BLOCK_FLOAT64", "sigmoid_cross_entropy_elements"]

# Elements a program covers, and its warps: 8 elements a thread (two 16-byte loads of float32), 48 to
# 80 registers on sm_90 by ptxas, no spills; float64 takes half the block (4 a thread, about 100
# registers, where 8 took 150-180).
BLOCK = 2048
BLOCK_FLOAT64 = 1024
NUM_WARPS = 8
# Floating-point contraction (a * b + c as one FMA), as Triton's default so far; given explicitly,
# as Triton 3.9 warns when it is left to a default that 3.10 changes.
_FP_FUSION = True

# Layouts of an option (weight, positive weight, sample weight) over the flat input.
_NONE = tl.constexpr(0)  # absent: a factor of 1
_SCALAR = tl.constexpr(1)  # one value
_CLASS = tl.constexpr(2)  # one value per class of the last axis: index (offset mod C)
_ROW = tl.constexpr(3)  # one value per row of the class axis: index (offset div C)
_FULL = tl.constexpr(4)  # one value per element

_REAL_DTYPES = (*LOGIT_DTYPES, torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)
_TRITON_DTYPES = {torch.float32: tl.float32, torch.float64: tl.float64}


@triton.jit
def _load(pointer, mask, MASKED: tl.constexpr):
    """``tl.load`` with the mask only where the block may run past the end."""
    if MASKED:
        return tl.load(pointer, mask=mask, other=0)
    else:
        return tl.load(pointer)


@triton.jit
def _option(pointer, base, local, mask, n_classes, MODE: tl.constexpr, MASKED: tl.constexpr, ACC: tl.constexpr,
            IDX: tl.constexpr):  # fmt: skip
    """The values of an option (not ``_NONE``) for the block that starts at flat offset ``base``."""
    if MODE == _SCALAR:
        value = tl.load(pointer).to(ACC)
    elif MODE == _CLASS:
        first = (base % n_classes).to(IDX)  # the block's first class; per-element indices in IDX
        value = _load(pointer + (first + local.to(IDX)) % n_classes, mask, MASKED).to(ACC)
    elif MODE == _ROW:
        first = (base % n_classes).to(IDX)
        value = _load(pointer + base // n_classes + (first + local.to(IDX)) // n_classes, mask, MASKED).to(ACC)
    else:
        value = _load(pointer + base + local, mask, MASKED).to(ACC)
    return value


@triton.jit
def _weight(w_ptr, s_ptr, base, local, mask, n_classes, W_MODE: tl.constexpr, S_MODE: tl.constexpr,
            MASKED: tl.constexpr, ACC: tl.constexpr, IDX: tl.constexpr):  # fmt: skip
    """:math:`s w` for the block (at least one of the two given)."""
    if W_MODE == _NONE:
        weight = _option(s_ptr, base, local, mask, n_classes, S_MODE, MASKED, ACC, IDX)
    elif S_MODE == _NONE:
        weight = _option(w_ptr, base, local, mask, n_classes, W_MODE, MASKED, ACC, IDX)
    else:
        weight = _option(w_ptr, base, local, mask, n_classes, W_MODE, MASKED, ACC, IDX) * _option(
            s_ptr, base, local, mask, n_classes, S_MODE, MASKED, ACC, IDX
        )
    return weight


@triton.jit
def _times(factor, value):
    """``factor * value`` with ``0 * inf = 0``."""
    return tl.where(factor == 0, 0.0, factor * value)


@triton.jit
def _block(x_ptr, t_ptr, w_ptr, q_ptr, s_ptr, grad_ptr, loss_ptr, partial_ptr, base, pid, n_elements, n_classes,
           n_blocks, keep, lift, scale, inverse, W_MODE: tl.constexpr, Q_MODE: tl.constexpr, S_MODE: tl.constexpr,
           WEIGHTED: tl.constexpr, STORE: tl.constexpr, PER_ELEMENT: tl.constexpr, MEAN: tl.constexpr,
           SMOOTH: tl.constexpr, MASKED: tl.constexpr, ACC: tl.constexpr, IDX: tl.constexpr,
           BLOCK: tl.constexpr):  # fmt: skip
    """Losses (and gradient) of the ``BLOCK`` elements from flat offset ``base`` (module docstring)."""
    local = tl.arange(0, BLOCK)
    mask = local < (n_elements - base).to(tl.int32) if MASKED else None  # a whole block takes no mask
    x = _load(x_ptr + base + local, mask, MASKED).to(ACC)
    y = _load(t_ptr + base + local, mask, MASKED).to(ACC)
    if SMOOTH:
        y = keep * y + lift
    q = 1.0 if Q_MODE == _NONE else _option(q_ptr, base, local, mask, n_classes, Q_MODE, MASKED, ACC, IDX)
    qy = q * y
    not_y = 1.0 - y
    e = tl.exp(-tl.abs(x))
    u = 1.0 + e
    exact = u == 1.0  # ln(1 + e) = e to the last place
    log_term = tl.where(exact, e, tl.log(u) * (e / tl.where(exact, 1.0, u - 1.0)))
    softplus_pos = tl.where(x > 0, x, 0.0) + log_term  # -log sigmoid(-x)
    softplus_neg = tl.where(x < 0, -x, 0.0) + log_term  # -log sigmoid(x)
    loss = _times(qy, softplus_neg) + _times(not_y, softplus_pos)
    if WEIGHTED:
        weight = _weight(w_ptr, s_ptr, base, local, mask, n_classes, W_MODE, S_MODE, MASKED, ACC, IDX)
        loss = _times(weight, loss)
    if STORE:
        inv_u = 1.0 / u
        sigmoid = tl.where(x >= 0, inv_u, e * inv_u)
        grad = sigmoid * (qy + not_y) - qy
        if WEIGHTED:
            grad = grad * weight
        grad = (grad * scale).to(grad_ptr.dtype.element_ty)
        if MASKED:
            tl.store(grad_ptr + base + local, grad, mask=mask)
        else:
            tl.store(grad_ptr + base + local, grad)
    if PER_ELEMENT:
        if MASKED:
            tl.store(loss_ptr + base + local, loss, mask=mask)
        else:
            tl.store(loss_ptr + base + local, loss)
    else:
        if MASKED:
            loss = tl.where(mask, loss, 0.0)
        tl.store(partial_ptr + pid, tl.sum(loss, axis=0))
        if MEAN:  # the losses each divided by D: the mean when the plain sum overflows
            tl.store(partial_ptr + n_blocks + pid, tl.sum(loss * inverse, axis=0))


@triton.jit
def _sigmoid_cross_entropy_kernel(x_ptr, t_ptr, w_ptr, q_ptr, s_ptr, grad_ptr, loss_ptr, partial_ptr, scale_ptr,
                                  scale_value, den_ptr, inverse_value, smooth_ptr, smoothing, n_elements, n_classes,
                                  n_blocks, W_MODE: tl.constexpr, Q_MODE: tl.constexpr, S_MODE: tl.constexpr,
                                  WEIGHTED: tl.constexpr, STORE: tl.constexpr, PER_ELEMENT: tl.constexpr,
                                  MEAN: tl.constexpr, SMOOTH: tl.constexpr, SCALE_FROM_PTR: tl.constexpr,
                                  DEN_FROM_PTR: tl.constexpr, SMOOTH_FROM_PTR: tl.constexpr, ACC: tl.constexpr,
                                  IDX: tl.constexpr, BLOCK: tl.constexpr):  # fmt: skip
    """One block of the flat input: its losses (per element, or its partial sums) and its gradient.

    Scalars come as kernel arguments (float32 accumulation) or from 0-d tensors on the device
    (``*_FROM_PTR``: a tensor the caller passed, or a float64 value, which an argument cannot
    carry). The mean's inverse :math:`1/D` is 0 for :math:`D = 0`.
    """
    pid = tl.program_id(0)
    base = pid.to(tl.int64) * BLOCK
    scale = tl.load(scale_ptr).to(ACC) if SCALE_FROM_PTR else tl.cast(scale_value, ACC)
    if DEN_FROM_PTR:
        denominator = tl.load(den_ptr).to(ACC)
        inverse = tl.where(denominator == 0, 0.0, 1.0 / tl.where(denominator == 0, 1.0, denominator)).to(ACC)
    else:
        inverse = tl.cast(inverse_value, ACC)
    epsilon = tl.load(smooth_ptr).to(ACC) if SMOOTH_FROM_PTR else tl.cast(smoothing, ACC)
    keep = 1.0 - epsilon
    lift = epsilon / 2.0
    if base + BLOCK <= n_elements:
        _block(x_ptr, t_ptr, w_ptr, q_ptr, s_ptr, grad_ptr, loss_ptr, partial_ptr, base, pid, n_elements, n_classes,
               n_blocks, keep, lift, scale, inverse, W_MODE, Q_MODE, S_MODE, WEIGHTED, STORE, PER_ELEMENT, MEAN,
               SMOOTH, False, ACC, IDX, BLOCK)  # fmt: skip
    else:
        _block(x_ptr, t_ptr, w_ptr, q_ptr, s_ptr, grad_ptr, loss_ptr, partial_ptr, base, pid, n_elements, n_classes,
               n_blocks, keep, lift, scale, inverse, W_MODE, Q_MODE, S_MODE, WEIGHTED, STORE, PER_ELEMENT, MEAN,
               SMOOTH, True, ACC, IDX, BLOCK)  # fmt: skip


@triton.jit
def _mean_kernel(sums_ptr, loss_ptr, den_ptr, den_value, DEN_FROM_PTR: tl.constexpr, LARGEST: tl.constexpr,
                 ACC: tl.constexpr):  # fmt: skip
    r"""The mean from the float64 sums :math:`\sum \ell` and :math:`\sum (\ell / D)` (module docstring).

    :math:`(\sum \ell) / D`, or :math:`\sum (\ell / D)` where the plain sum passes ``LARGEST``
    (the accumulation dtype's largest number) while :math:`D \ne 0`, and 0 for :math:`D = 0`;
    rounded once to the accumulation dtype.
    """
    total = tl.load(sums_ptr)
    scaled = tl.load(sums_ptr + 1)
    denominator = tl.load(den_ptr).to(ACC) if DEN_FROM_PTR else tl.cast(den_value, ACC)
    denominator = denominator.to(tl.float64)
    empty = denominator == 0
    mean = total / tl.where(empty, 1.0, denominator)
    overflow = tl.abs(total) > LARGEST  # inf in the accumulation dtype; NaN stays NaN through the plain mean
    tl.store(loss_ptr, tl.where(empty, 0.0, tl.where(overflow, scaled, mean)).to(ACC))


def _check_tensor(name: str, value: Any, device: torch.device) -> torch.Tensor:
    """``value`` (detached) if it is a real tensor on ``device``; else a TypeError or ValueError naming ``name``."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor; got {type(value).__name__}")
    if value.device != device:
        raise ValueError(f"`{name}` must be on the logits' device {device}; got {value.device}")
    if value.dtype not in _REAL_DTYPES:
        raise TypeError(f"`{name}` must hold real numbers (floating, integer or bool); got dtype {value.dtype}")
    return value.detach()


def _layout(name: str, option: Any, shape: tuple[int, ...], device: torch.device) -> tuple[int, torch.Tensor | None]:
    """``(mode, values)``: how the kernel reads an option broadcastable to ``shape`` (``_NONE`` ... ``_FULL``).

    A scalar, one value per class of the last axis and one value per row of the class axis
    (shape ``(..., 1)``) are read as they are (made contiguous, at most the size of a row or
    of the batch); any other layout is expanded to the whole shape, unless it already is.
    """
    if option is None:
        return _NONE.value, None
    option = _check_tensor(name, option, device)
    given = tuple(option.shape)
    extra = option.dim() - len(shape)
    if extra > 0 and all(n == 1 for n in option.shape[:extra]):  # leading axes of length 1 beyond the logits' own
        option = option.reshape(option.shape[extra:])
    try:
        broadcast = torch.broadcast_shapes(tuple(option.shape), shape)
    except RuntimeError:
        broadcast = None
    if broadcast != shape:
        raise ValueError(f"`{name}` must be broadcastable to the logits' shape {shape}; got shape {given}")
    if option.numel() == 1:
        return _SCALAR.value, option.reshape(1)
    if tuple(option.shape) == shape:
        return _FULL.value, option.contiguous()
    if option.shape[-1] == shape[-1] and all(n == 1 for n in option.shape[:-1]):
        return _CLASS.value, option.reshape(-1).contiguous()
    if len(shape) >= 2 and option.shape[-1] == 1:
        rows = torch.broadcast_to(option[..., 0], shape[:-1])
        return _ROW.value, rows.contiguous().reshape(-1)
    return _FULL.value, torch.broadcast_to(option, shape).contiguous()


def _scalar(name: str, value: Any, accumulation: torch.dtype, device: torch.device) -> tuple[Any, bool]:
    """``(argument, from_pointer)``: a number as a float32 kernel argument, or a 0-d tensor on the device.

    A tensor the caller passed is read by the kernel (no host read); a Python number with
    float64 accumulation becomes a float64 tensor filled on the device (a kernel argument
    would round it to float32), with no copy from the host.
    """
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"`{name}` must be a number or a one-element tensor; got shape {tuple(value.shape)}")
        _check_tensor(name, value, device)
        return value.reshape(1), True
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{name}` must be a real number or a one-element tensor; got {type(value).__name__}")
    if accumulation == torch.float64:
        return torch.full((1,), float(value), dtype=torch.float64, device=device), True
    return float(value), False


def sigmoid_cross_entropy_elements(
    logits: torch.Tensor,
    targets: torch.Tensor,
    *,
    weight: torch.Tensor | None,
    pos_weight: torch.Tensor | None,
    sample_weight: torch.Tensor | None,
    smoothing: float,
    grad_scale: float | torch.Tensor | None,
    per_element: bool,
    denominator: float | torch.Tensor | None = None,
    out: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    r"""Weighted sigmoid cross-entropy losses and, when ``grad_scale`` is given, the gradient, on the GPU.

    The semantics of the Numba backend's :func:`crossentropy.kernels.numba.sigmoid_cross_entropy_elements`
    for CUDA tensors, or CPU tensors under ``TRITON_INTERPRET=1``. Elementwise,

    .. math::

        \ell = -s\, w \big( q\, y \log \sigma(x) + (1 - y) \log \sigma(-x) \big), \qquad
        y = (1 - \varepsilon)\, t + \varepsilon / 2,

        \frac{\partial \ell}{\partial x} \cdot \kappa
            = \kappa\, s\, w \big( \sigma(x) (q y + 1 - y) - q y \big),

    with :math:`\kappa` = ``grad_scale``, stable for any logit (:math:`\log\sigma` through
    softplus forms) and ``0 * inf = 0``.

    Parameters
    ----------
    logits : torch.Tensor of any shape
        float16, bfloat16, float32 or float64, on a CUDA device (or the CPU under
        ``TRITON_INTERPRET=1``). Accumulated in float32 (float64 for float64).
    targets : torch.Tensor of the logits' shape
        Probabilities in [0, 1] (normally in the accumulation dtype; any real dtype is read
        and converted by the kernel).
    weight, pos_weight : torch.Tensor broadcastable to the logits' shape, or None
        :math:`w` and :math:`q`. A scalar, one value per class of the last axis and one value
        per row of the class axis are read in place; other layouts are expanded first.
    sample_weight : torch.Tensor or None
        :math:`s`: the leading axes' weights with trailing axes of length 1 (any layout
        broadcastable to the logits' shape is read like ``weight``).
    smoothing : float
        Label smoothing :math:`\varepsilon` in [0, 1].
    grad_scale : float, one-element tensor on the device, or None
        :math:`\kappa`, the reduction's factor of the gradient; None computes the losses only
        (no gradient, nothing but the partial sums allocated).
    per_element : bool
        Return every element's loss (``reduction="none"``) instead of their sum.
    denominator : float, one-element tensor on the device, or None
        Return the mean :math:`\sum_n \ell_n / D` instead of the sum (``per_element`` False):
        0 for :math:`D = 0`, and :math:`\sum_n (\ell_n / D)` where the plain sum passes the
        largest float while the mean may not; both are formed on the device and chosen there.
    out : torch.Tensor of the logits' shape and dtype, optional
        Where to write the gradient (with ``grad_scale``), C-contiguous and not overlapping the
        logits, unless it is the logits themselves (same memory, shape and strides): the
        gradient then overwrites them, element by element (contiguous logits required).

    Returns
    -------
    (loss, grad)
        ``loss``: every element's loss in the logits' shape, or their sum (or mean) as a 0-d
        tensor, in the accumulation dtype. ``grad``: the gradient in the logits' shape and
        dtype (``out`` itself when given), or None without ``grad_scale``.

    Raises
    ------
    TypeError
        For inputs that are not tensors, or of dtypes the kernel does not read.
    ValueError
        For shapes, devices, ``smoothing`` out of [0, 1], an ``out`` that does not fit, or
        writing over non-contiguous logits.

    Notes
    -----
    Nothing synchronizes with the host: tensor scalars are read by the kernels, the mean's
    choice is made on the device. The sum is one partial sum per block of ``BLOCK`` elements,
    summed in a fixed order (deterministic from run to run).

    Examples
    --------
    On a CUDA GPU (the CPU runs it under ``TRITON_INTERPRET=1`` only, as the tests do):

    >>> import torch
    >>> from crossentropy.kernels.triton._sigmoid import sigmoid_cross_entropy_elements
    >>> device = "cuda" if torch.cuda.is_available() else "cpu"
    >>> x = torch.tensor([0.0, 2.0], device=device)  # ln 2 and ln(1 + e^2)
    >>> t = torch.tensor([1.0, 0.0], device=device)
    >>> loss, grad = sigmoid_cross_entropy_elements(
    ...     x, t, weight=None, pos_weight=None, sample_weight=None, smoothing=0.0, grad_scale=1.0, per_element=True
    ... )
    >>> [round(v, 4) for v in loss.tolist()], [round(v, 4) for v in grad.tolist()]
    ([0.6931, 2.1269], [-0.5, 0.8808])
    """
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"`logits` must be a torch.Tensor; got {type(logits).__name__}")
    if logits.dtype not in LOGIT_DTYPES:
        raise TypeError(f"`logits` must be float16, bfloat16, float32 or float64; got dtype {logits.dtype}")
    device = logits.device
    if device.type == "cpu" and not INTERPRETED:
        raise ValueError(
            "`logits` must be on a CUDA device (CPU tensors run only in Triton's interpreter, with "
            f"TRITON_INTERPRET=1 set before {__name__} is imported); got device {device}"
        )
    shape = tuple(logits.shape)
    targets = _check_tensor("targets", targets, device)
    if tuple(targets.shape) != shape:
        raise ValueError(f"`targets` must have the logits' shape {shape}; got shape {tuple(targets.shape)}")
    if isinstance(smoothing, bool) or not isinstance(smoothing, numbers.Real) or not 0.0 <= smoothing <= 1.0:
        raise ValueError(f"`smoothing` must be a number in [0, 1]; got {smoothing!r}")
    accumulation = torch.float64 if logits.dtype == torch.float64 else torch.float32
    w_mode, w = _layout("weight", weight, shape, device)
    q_mode, q = _layout("pos_weight", pos_weight, shape, device)
    s_mode, s = _layout("sample_weight", sample_weight, shape, device)
    size = logits.numel()
    n_classes = shape[-1] if shape else 1
    store = grad_scale is not None
    mean = denominator is not None and not per_element

    in_place = False
    if store and out is not None:
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"`out` must be a torch.Tensor; got {type(out).__name__}")
        if tuple(out.shape) != shape or out.dtype != logits.dtype or out.device != device:
            raise ValueError(
                f"`out` must be a tensor of the logits' shape {shape}, dtype {logits.dtype} and device {device}; "
                f"got shape {tuple(out.shape)}, dtype {out.dtype} and device {out.device}"
            )
        in_place = same_memory(out, logits)
        if in_place and not logits.is_contiguous():
            raise ValueError(
                "writing the gradient over the logits (`out=logits`) needs contiguous logits; "
                f"got strides {logits.stride()}"
            )
        if not in_place and not out.is_contiguous():
            raise ValueError(f"`out` must be contiguous (row-major, no gaps); got strides {out.stride()}")
        if not in_place and may_overlap(out, logits):
            raise ValueError(
                "`out` must not overlap `logits` unless it is `logits` itself (the gradient written in place)"
            )

    logits = logits.detach()
    x = logits if in_place else logits.contiguous()
    t = targets.contiguous()
    if not store:
        grad = None
    elif out is not None:
        grad = out
    else:
        grad = torch.empty(shape, dtype=logits.dtype, device=device)

    # Unused scalars (no gradient, no smoothing) stay plain arguments: no tensor to fill for float64.
    scale_arg, scale_from_ptr = _scalar("grad_scale", grad_scale, accumulation, device) if store else (0.0, False)
    smooth_arg, smooth_from_ptr = (
        _scalar("smoothing", float(smoothing), accumulation, device) if smoothing != 0 else (0.0, False)
    )
    den_arg, den_from_ptr, inverse_arg = 0.0, False, 0.0
    if mean:
        # A tensor D (or a float64 one) is read by the kernels, which form 1/D themselves; a
        # float32 number comes as D and 1/D (rounded once from float64, as the Numba layer).
        den_arg, den_from_ptr = _scalar("denominator", denominator, accumulation, device)
        if not den_from_ptr:
            inverse_arg = 1.0 / denominator if denominator != 0 else 0.0

    block = BLOCK_FLOAT64 if accumulation == torch.float64 else BLOCK
    n_blocks = triton.cdiv(size, block)
    if per_element:
        losses = torch.empty(shape, dtype=accumulation, device=device)
        partials = losses  # unused
    else:  # one partial sum per block (and one of the losses divided by D, for the mean)
        make = torch.empty if n_blocks else torch.zeros  # every block writes its own; none: a sum of 0
        partials = make((2 if mean else 1) * max(n_blocks, 1), dtype=accumulation, device=device)
        losses = partials  # unused
    placeholder = x

    def pointer(value: Any) -> Any:
        return value if isinstance(value, torch.Tensor) else placeholder

    index_dtype = tl.int64 if n_classes >= 2**31 - 2 * block else tl.int32
    acc = _TRITON_DTYPES[accumulation]
    with interpreter_errstate():
        if n_blocks:
            _sigmoid_cross_entropy_kernel[(n_blocks,)](
                x, t, pointer(w), pointer(q), pointer(s), x if in_place else pointer(grad), losses, partials,
                pointer(scale_arg), 0.0 if scale_from_ptr else scale_arg,
                pointer(den_arg) if den_from_ptr else placeholder, inverse_arg,
                pointer(smooth_arg), 0.0 if smooth_from_ptr else smooth_arg,
                size, n_classes, n_blocks,
                W_MODE=w_mode, Q_MODE=q_mode, S_MODE=s_mode, WEIGHTED=w_mode != _NONE.value or s_mode != _NONE.value,
                STORE=store, PER_ELEMENT=per_element, MEAN=mean,
                SMOOTH=smoothing != 0, SCALE_FROM_PTR=scale_from_ptr, DEN_FROM_PTR=den_from_ptr,
                SMOOTH_FROM_PTR=smooth_from_ptr, ACC=acc, IDX=index_dtype, BLOCK=block, num_warps=NUM_WARPS,
                enable_fp_fusion=_FP_FUSION,
            )  # fmt: skip
    if per_element:
        return losses, grad
    # The partial sums added in float64 by PyTorch's reduction (a fixed order for a given size), then
    # rounded once: a million float32 partial sums of 2^31 elements would lose digits added in float32.
    sums = partials.view(2 if mean else 1, -1).sum(dim=1, dtype=torch.float64)
    if not mean:
        return sums[0].to(accumulation), grad
    loss = torch.empty((), dtype=accumulation, device=device)
    with interpreter_errstate():
        _mean_kernel[(1,)](
            sums, loss, pointer(den_arg) if den_from_ptr else placeholder, 0.0 if den_from_ptr else den_arg,
            DEN_FROM_PTR=den_from_ptr, LARGEST=float(torch.finfo(accumulation).max), ACC=acc, num_warps=1,
            enable_fp_fusion=_FP_FUSION,
        )  # fmt: skip
    return loss, grad
