r"""Triton kernels of the fused linear cross-entropy: the log-sum-exp and the gradients of a linear head
without ever materializing its (N, V) logits.

With an input :math:`X` of shape (N, H), a weight :math:`W` of shape (V, H) and a bias :math:`b`,
the logits are :math:`x_{n,c} = X_n \cdot W_c + b_c`, soft-capped to :math:`u = \gamma \tanh(x /
\gamma)` under a cap :math:`\gamma` (else :math:`u = x`). With the target weights

.. math::

    a_{n,c} = (1 - \varepsilon)\, w_{y_n} [c = y_n - v_0] + \frac{\varepsilon}{C_\text{total}} w_c

(class weights :math:`w`, label smoothing :math:`\varepsilon`, :math:`v_0` the first class of this
vocabulary shard, :math:`C_\text{total}` the class count of the whole vocabulary), the two entry
points compute

- :func:`linear_logsumexp`: :math:`\operatorname{LSE}_n = \log \sum_c e^{u_{n,c}}` and
  :math:`\sum_c a_{n,c} u_{n,c}`, from which the caller forms any loss of the family
  (:math:`\ell_n = \sum_c a_{n,c} \operatorname{LSE}_n - \sum_c a_{n,c} u_{n,c}`, plus a z-loss,
  or the shards' global log-sum-exp first);
- :func:`linear_cross_entropy_gradients`: :math:`\nabla_X = G W`, :math:`\nabla_W = G^\top X`,
  :math:`\nabla_b = \mathbf 1^\top G` for :math:`g_{n,c} = f_n (\kappa_n p_{n,c} - a_{n,c})\,
  \partial u_{n,c} / \partial x_{n,c}` with :math:`p = e^{u - \operatorname{LSE}}`.

**Tiling.** Both kernels walk tiles of ``BLOCK_N`` tokens by ``BLOCK_V`` classes. A tile of
logits is computed on chip by ``tl.dot`` over chunks of ``BLOCK_H`` features (products of the
input's dtype, accumulated in float32; float64 for float64; float32 input is multiplied in IEEE
float32, not TF32), soft-capped, and used there; nothing of size N×V is ever written to global
memory.

- The forward launches a grid of token blocks by ``v_splits`` contiguous ranges of vocabulary
  tiles (on a GPU enough splits to give every SM a few programs, one under the interpreter).
  Each program keeps, per row, an online log-sum-exp (running maximum and sum of exponentials
  relative to it) and the running :math:`\sum_c a_{n,c} u_{n,c}`; each split writes its partial
  log-sum-exp and dot product, (v_splits, N) values, combined by ``torch.logsumexp`` and a sum.
  The state saved for the backward is O(N): the log-sum-exp (and whatever per-row factors the
  caller derives from it, :math:`\kappa_n` and :math:`f_n`).
- The backward launches one program per (token block, vocabulary block), grouped so that
  programs running together share input rows and weight rows in the L2 cache. Each program
  recomputes its logits tile, forms :math:`g` on chip, and adds its contributions
  :math:`G_\text{tile} W_\text{tile}` to the rows of :math:`\nabla_X`,
  :math:`G_\text{tile}^\top X_\text{tile}` to the rows of :math:`\nabla_W` and the column sums
  to :math:`\nabla_b`, chunk by chunk of ``BLOCK_H`` features. Half-precision inputs round the
  tile of :math:`g` to their own dtype for the two products (tensor cores; PyTorch's backward of
  a half-precision linear layer rounds the logits' gradient the same way), accumulated in
  float32. A token block whose rows all have :math:`f_n = 0` (ignored rows) stops before the
  first product.

**Accumulation: atomics** (as Cut Cross-Entropy, Wijmans et al. 2025). The contributions of the
tiles to :math:`\nabla_X` (one per vocabulary block) and :math:`\nabla_W`, :math:`\nabla_b` (one
per token block) are added with ``tl.atomic_add`` into zero-initialised buffers of the
accumulation dtype (float32; float64 for float64 input or when asked). This needs no memory
beyond the outputs and no second pass, where a split reduction would keep one partial
:math:`\nabla_X` per vocabulary block (O(N H V / BLOCK_V)) or recompute the logits once per
feature block. The consequence: on a GPU the order of the additions changes from run to run, so
float32 results may differ in their last bits between two identical calls (not bit-for-bit
reproducible; ``torch.use_deterministic_algorithms`` is not honoured here), within the rounding
of a float32 sum. Triton's interpreter adds in a fixed order.

**Gradient filtering** (``filter_eps``, as Cut Cross-Entropy): probabilities below the threshold
are dropped from :math:`g`, and a tile in which every probability is below it, no row has its
target and there is no label smoothing contributes exactly zero, so its two products are
skipped: for a large vocabulary most tiles, since a trained model's softmax is peaked.

Row and feature offsets are 64-bit, so inputs and weights of more than :math:`2^{31}` elements
are addressed correctly. Nothing here reads a value back to the host: the tile skips are
branches on the device.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import triton
import triton.language as tl

from . import INTERPRETED, LOGIT_DTYPES, interpreter_errstate
from ._softmax import _bits, _option, _soft_cap

__all__ = ["BACKWARD_BLOCKS", "FORWARD_BLOCKS", "linear_cross_entropy_gradients", "linear_logsumexp"]

# (BLOCK_N, BLOCK_V, BLOCK_H, num_warps) by element size in bytes, on a GPU. Chosen from ptxas's register
# and spill counts for sm_90 (the kernels compiled ahead of time without a GPU, with every option on):
# no spills but the backward's 80 bytes for half precision, 40 to 48 for float32 (IEEE float32 products
# run on the FMA units, with larger operand tiles in registers); larger tiles spill hundreds of bytes.
# Not yet timed on a GPU, so these tables are the place to tune.
FORWARD_BLOCKS = {2: (128, 128, 32, 8), 4: (128, 64, 16, 8), 8: (64, 64, 16, 8)}
BACKWARD_BLOCKS = {2: (128, 128, 32, 8), 4: (128, 64, 16, 8), 8: (64, 64, 16, 8)}
# Under Triton's interpreter each program runs in Python: few, large programs.
_INTERPRETED_BLOCKS = (64, 64, 64, 4)
# Token blocks whose programs run side by side in the backward's launch order (L2 reuse).
_GROUP_N = 8
# Programs per SM the forward's vocabulary splits aim for.
_PROGRAMS_PER_SM = 4


@triton.jit
def _dot_operand(x, UPCAST: tl.constexpr):
    """``x`` as ``tl.dot`` takes it: bfloat16 widened to float32 (exactly) under the interpreter, whose
    ``tl.dot`` misreads bfloat16."""
    if UPCAST:
        return x.to(tl.float32)
    return x


@triton.jit
def _logits_tile(
    x_ptr,
    x_s0,
    x_s1,
    w_ptr,
    w_s0,
    w_s1,
    b_ptr,
    rows,
    cols,
    row_in,
    cmask,
    n_features,
    scale,
    cap,
    inv_cap,
    ACC: tl.constexpr,
    BIAS: tl.constexpr,
    SCALED: tl.constexpr,
    CAPPED: tl.constexpr,
    UPCAST: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_V: tl.constexpr,
    BLOCK_H: tl.constexpr,
):
    """The (BLOCK_N, BLOCK_V) tile of logits ``x`` (plus bias) times ``scale`` (the inverse
    temperature), its soft-capped ``u`` (-inf outside the vocabulary) and the slope ``du/dx`` (the
    scale times the cap's; 1 without either)."""
    acc = tl.zeros([BLOCK_N, BLOCK_V], ACC)
    x_rows = x_ptr + rows * x_s0
    w_cols = w_ptr + cols * w_s0
    for start in range(0, n_features, BLOCK_H):
        h = start + tl.arange(0, BLOCK_H).to(tl.int64)
        hmask = h < n_features
        xt = tl.load(x_rows[:, None] + h[None, :] * x_s1, mask=row_in[:, None] & hmask[None, :], other=0.0)
        wt = tl.load(w_cols[None, :] + h[:, None] * w_s1, mask=hmask[:, None] & cmask[None, :], other=0.0)
        acc = tl.dot(_dot_operand(xt, UPCAST), _dot_operand(wt, UPCAST), acc, input_precision=PRECISION)
    if BIAS:
        acc += tl.load(b_ptr + cols, mask=cmask, other=0.0).to(ACC)[None, :]
    if SCALED:
        acc = acc * scale
    if CAPPED:
        u, slope = _soft_cap(acc, cap, inv_cap)
    else:
        u = acc
        slope = tl.full([BLOCK_N, BLOCK_V], 1.0, ACC)
    if SCALED:
        slope = slope * scale
    u = tl.where(cmask[None, :], u, -float("inf"))
    return u, slope


@triton.jit
def _target_weights(
    t_ptr,
    cw_ptr,
    rows,
    cols,
    row_in,
    cmask,
    vocab_start,
    keep,
    floor,
    ACC: tl.constexpr,
    WEIGHTED: tl.constexpr,
    SMOOTH: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_V: tl.constexpr,
):
    """The tile of target weights ``a`` and whether each element is its row's target.

    A target outside ``[vocab_start, vocab_start + V)`` matches no column: it is compared, never
    used as an address.
    """
    y = tl.load(t_ptr + rows, mask=row_in, other=-1) - vocab_start
    is_target = (cols[None, :] == y[:, None]) & cmask[None, :]
    a = tl.where(is_target, keep, 0.0)
    if SMOOTH:
        a = tl.where(cmask[None, :], a + floor, 0.0)
    if WEIGHTED:
        a = a * tl.load(cw_ptr + cols, mask=cmask, other=0.0).to(ACC)[None, :]
    return a, is_target


# The options' bit patterns and the shard's offset are values, not shapes: no recompilation for
# their divisibility by 16.
@triton.jit(do_not_specialize=["vocab_start", "keep_bits", "floor_bits", "scale_bits", "cap_bits"])
def _linear_logsumexp_kernel(
    x_ptr,
    x_s0,
    x_s1,
    w_ptr,
    w_s0,
    w_s1,
    b_ptr,
    cw_ptr,
    t_ptr,
    lse_ptr,
    dot_ptr,
    ent_ptr,
    top_ptr,
    arg_ptr,
    n_rows,
    n_classes,
    n_features,
    tiles_per_split,
    vocab_start,
    keep_bits,
    floor_bits,
    scale_bits,
    cap_bits,
    ACC: tl.constexpr,
    BIAS: tl.constexpr,
    WEIGHTED: tl.constexpr,
    SMOOTH: tl.constexpr,
    SCALED: tl.constexpr,
    CAPPED: tl.constexpr,
    UPCAST: tl.constexpr,
    STATS: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_V: tl.constexpr,
    BLOCK_H: tl.constexpr,
):
    r"""Partial log-sum-exp and target dot product of ``BLOCK_N`` rows over the vocabulary tiles
    ``[split * tiles_per_split, (split + 1) * tiles_per_split)``, written at ``split * n_rows + row``.

    With ``STATS`` also the split's entropy (of the softmax over its columns, from the online
    :math:`t = \sum_c e^{u_c - m} (u_c - m)`, rescaled with the running maximum), its maximum and
    the column of its first maximum."""
    pid_n = tl.program_id(0).to(tl.int64)
    split = tl.program_id(1).to(tl.int64)
    rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # int64: offsets below are 64-bit
    row_in = rows < n_rows
    keep = _option(keep_bits, ACC)
    floor = _option(floor_bits, ACC)
    scale = _option(scale_bits, ACC)
    cap = _option(cap_bits, ACC)
    inv_cap = 1.0 / cap
    m = tl.full([BLOCK_N], -float("inf"), ACC)
    s = tl.zeros([BLOCK_N], ACC)
    dot = tl.zeros([BLOCK_N], ACC)
    t = tl.zeros([BLOCK_N], ACC)
    best = tl.zeros([BLOCK_N], tl.int64)
    first = split * tiles_per_split * BLOCK_V
    last = tl.minimum(first + tiles_per_split * BLOCK_V, n_classes)
    for start in range(first, last, BLOCK_V):
        cols = start + tl.arange(0, BLOCK_V)
        cmask = cols < n_classes
        u, _slope = _logits_tile(
            x_ptr,
            x_s0,
            x_s1,
            w_ptr,
            w_s0,
            w_s1,
            b_ptr,
            rows,
            cols,
            row_in,
            cmask,
            n_features,
            scale,
            cap,
            inv_cap,
            ACC,
            BIAS,
            SCALED,
            CAPPED,
            UPCAST,
            PRECISION,
            BLOCK_N,
            BLOCK_V,
            BLOCK_H,
        )
        tile_max = tl.max(u, axis=1)
        new_m = tl.maximum(m, tile_max)
        ref = tl.where(new_m == -float("inf"), 0.0, new_m)  # all -inf so far: exponentials of -inf, not NaN
        alpha = tl.exp(m - ref)
        e = tl.exp(u - ref[:, None])
        if STATS:
            # t relative to the new reference: alpha (t + s (m - ref)); columns outside the vocabulary add 0
            # (their e (u - ref) would be 0 * -inf).
            moved = tl.where(m == -float("inf"), 0.0, m - ref)
            t = (t + s * moved) * alpha + tl.sum(tl.where(cmask[None, :], e * (u - ref[:, None]), 0.0), axis=1)
            # the first maximum: the tile's first, where it beats every earlier tile strictly
            best = tl.where(tile_max > m, start + tl.argmax(u, axis=1).to(tl.int64), best)
        s = s * alpha + tl.sum(e, axis=1)
        m = new_m
        a, _is_target = _target_weights(
            t_ptr, cw_ptr, rows, cols, row_in, cmask, vocab_start, keep, floor, ACC, WEIGHTED, SMOOTH, BLOCK_N, BLOCK_V
        )
        dot += tl.sum(tl.where(a != 0, a * u, 0.0), axis=1)  # classes without target mass add nothing
    ref = tl.where(m == -float("inf"), 0.0, m)
    out = split * n_rows + rows
    tl.store(lse_ptr + out, ref + tl.log(s), mask=row_in)
    tl.store(dot_ptr + out, dot, mask=row_in)
    if STATS:
        tl.store(ent_ptr + out, tl.log(s) - t / s, mask=row_in)
        tl.store(top_ptr + out, m, mask=row_in)
        tl.store(arg_ptr + out, best, mask=row_in)


@triton.jit(do_not_specialize=["vocab_start", "keep_bits", "floor_bits", "scale_bits", "cap_bits", "eps_bits"])
def _linear_gradients_kernel(
    x_ptr,
    x_s0,
    x_s1,
    w_ptr,
    w_s0,
    w_s1,
    b_ptr,
    cw_ptr,
    t_ptr,
    lse_ptr,
    kappa_ptr,
    f_ptr,
    pc_ptr,
    eta_ptr,
    dx_ptr,
    dw_ptr,
    db_ptr,
    n_rows,
    n_classes,
    n_features,
    vocab_start,
    keep_bits,
    floor_bits,
    scale_bits,
    cap_bits,
    eps_bits,
    ACC: tl.constexpr,
    OUT: tl.constexpr,
    BIAS: tl.constexpr,
    WEIGHTED: tl.constexpr,
    SMOOTH: tl.constexpr,
    SCALED: tl.constexpr,
    CAPPED: tl.constexpr,
    FILTER: tl.constexpr,
    STATS: tl.constexpr,
    NEED_X: tl.constexpr,
    NEED_W: tl.constexpr,
    NEED_B: tl.constexpr,
    UPCAST: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_V: tl.constexpr,
    BLOCK_H: tl.constexpr,
    GROUP_N: tl.constexpr,
):
    """The contributions of one (token block, vocabulary block) tile of ``g`` to the three gradients,
    added atomically (see the module docstring)."""
    pid = tl.program_id(0)
    n_blocks_n = tl.cdiv(n_rows, BLOCK_N)
    n_blocks_v = tl.cdiv(n_classes, BLOCK_V)
    per_group = GROUP_N * n_blocks_v
    first_n = (pid // per_group) * GROUP_N
    group_size = tl.minimum(n_blocks_n - first_n, GROUP_N)
    pid_n = (first_n + (pid % per_group) % group_size).to(tl.int64)
    pid_v = ((pid % per_group) // group_size).to(tl.int64)
    rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # int64: offsets below are 64-bit
    cols = pid_v * BLOCK_V + tl.arange(0, BLOCK_V)
    row_in = rows < n_rows
    cmask = cols < n_classes
    f = tl.load(f_ptr + rows, mask=row_in, other=0.0).to(ACC)
    if STATS:
        pc = tl.load(pc_ptr + rows, mask=row_in, other=0.0).to(ACC)
        eta = tl.load(eta_ptr + rows, mask=row_in, other=0.0).to(ACC)
        active = row_in & ((f != 0) | (pc != 0) | (eta != 0))  # rows with nothing to add contribute nothing
    else:
        active = row_in & (f != 0)  # rows with f = 0 contribute nothing
    if tl.max(active.to(tl.int32), axis=0) > 0:
        keep = _option(keep_bits, ACC)
        floor = _option(floor_bits, ACC)
        scale = _option(scale_bits, ACC)
        cap = _option(cap_bits, ACC)
        inv_cap = 1.0 / cap
        u, slope = _logits_tile(
            x_ptr,
            x_s0,
            x_s1,
            w_ptr,
            w_s0,
            w_s1,
            b_ptr,
            rows,
            cols,
            row_in,
            cmask,
            n_features,
            scale,
            cap,
            inv_cap,
            ACC,
            BIAS,
            SCALED,
            CAPPED,
            UPCAST,
            PRECISION,
            BLOCK_N,
            BLOCK_V,
            BLOCK_H,
        )
        lse = tl.load(lse_ptr + rows, mask=active, other=0.0).to(ACC)
        kappa = tl.load(kappa_ptr + rows, mask=active, other=0.0).to(ACC)
        p = tl.exp(u - lse[:, None])
        a, is_target = _target_weights(
            t_ptr, cw_ptr, rows, cols, row_in, cmask, vocab_start, keep, floor, ACC, WEIGHTED, SMOOTH, BLOCK_N, BLOCK_V
        )
        tile = active[:, None] & cmask[None, :]
        if STATS:  # p (lambda + eta u_bar - eta u), unfiltered; 0 outside the tile (where u may be -inf)
            h = p * (pc[:, None] - eta[:, None] * tl.where(tile, u, 0.0))
        if FILTER:
            eps = _option(eps_bits, ACC)
            kept = p >= eps
            p = tl.where(kept, p, 0.0)
        g = kappa[:, None] * p - a
        if STATS:
            g = f[:, None] * g + h
            if CAPPED or SCALED:
                g = g * slope
            g = tl.where(tile, g, 0.0)
        else:
            if CAPPED or SCALED:
                g = g * slope
            g = tl.where(tile, f[:, None] * g, 0.0)
        work = True
        if FILTER and not SMOOTH and not STATS:
            # every p < eps and no target here: g is exactly 0, skip the products.
            work = tl.max((tile & (kept | is_target)).to(tl.int32)) > 0
        if work:
            if NEED_B:
                tl.atomic_add(db_ptr + cols, tl.sum(g, axis=0).to(OUT), mask=cmask)
            if NEED_X or NEED_W:
                gd = _dot_operand(g.to(x_ptr.dtype.element_ty), UPCAST)  # the input's dtype (tensor cores)
                x_rows = x_ptr + rows * x_s0
                w_cols = w_ptr + cols * w_s0
                for start in range(0, n_features, BLOCK_H):
                    h = start + tl.arange(0, BLOCK_H).to(tl.int64)
                    hmask = h < n_features
                    if NEED_X:
                        wt = tl.load(
                            w_cols[:, None] + h[None, :] * w_s1, mask=cmask[:, None] & hmask[None, :], other=0.0
                        )
                        dx = tl.dot(gd, _dot_operand(wt, UPCAST), input_precision=PRECISION, out_dtype=ACC)
                        tl.atomic_add(
                            dx_ptr + rows[:, None] * n_features + h[None, :],
                            dx.to(OUT),
                            mask=active[:, None] & hmask[None, :],
                        )
                    if NEED_W:
                        xt = tl.load(
                            x_rows[:, None] + h[None, :] * x_s1, mask=row_in[:, None] & hmask[None, :], other=0.0
                        )
                        dw = tl.dot(tl.trans(gd), _dot_operand(xt, UPCAST), input_precision=PRECISION, out_dtype=ACC)
                        tl.atomic_add(
                            dw_ptr + cols[:, None] * n_features + h[None, :],
                            dw.to(OUT),
                            mask=cmask[:, None] & hmask[None, :],
                        )


_TL = {torch.float32: tl.float32, torch.float64: tl.float64}


def _blocks(kind: str, dtype: torch.dtype, block_n, block_v, block_h) -> tuple[int, int, int, int]:
    """``(BLOCK_N, BLOCK_V, BLOCK_H, num_warps)``: the defaults of ``kind`` ("forward" or "backward") for
    ``dtype`` (small ones under the interpreter), with the given overrides."""
    if INTERPRETED:
        defaults = _INTERPRETED_BLOCKS
    else:
        table = FORWARD_BLOCKS if kind == "forward" else BACKWARD_BLOCKS
        defaults = table[torch.empty((), dtype=dtype).element_size()]
    chosen = []
    for name, value, default in zip(
        ("block_n", "block_v", "block_h"), (block_n, block_v, block_h), defaults[:3], strict=True
    ):
        if value is None:
            value = default
        elif isinstance(value, bool) or not isinstance(value, int) or value < 16 or value & (value - 1):
            raise ValueError(f"`{name}` must be a power of two of at least 16 (tl.dot's smallest tile); got {value!r}")
        chosen.append(value)
    return (*chosen, defaults[3])


def _check_device(tensor: torch.Tensor, name: str) -> None:
    device = tensor.device
    if device.type != "cuda" and not (INTERPRETED and device.type == "cpu"):
        raise ValueError(
            f"`{name}` must be on a CUDA device (CPU tensors run only under TRITON_INTERPRET=1, set before "
            f"crossentropy.kernels.triton is imported); got device {device}"
        )


def _check_linear(input, weight, bias) -> tuple[int, int, int]:
    """Check the linear layer's tensors; return ``(N, V, H)``."""
    for name, tensor in (("input", input), ("weight", weight)):
        if not isinstance(tensor, torch.Tensor) or tensor.dtype not in LOGIT_DTYPES:
            got = tensor.dtype if isinstance(tensor, torch.Tensor) else type(tensor).__name__
            raise TypeError(f"`{name}` must be a float16, bfloat16, float32 or float64 torch.Tensor; got {got}")
        if tensor.dim() != 2:
            raise ValueError(f"`{name}` must be 2-dimensional; got shape {tuple(tensor.shape)}")
    _check_device(input, "input")
    if weight.dtype != input.dtype:
        raise TypeError(f"`weight` must have the input's dtype {input.dtype}; got {weight.dtype}")
    if weight.device != input.device:
        raise ValueError(f"`weight` must be on the input's device {input.device}; got {weight.device}")
    n_rows, n_features = input.shape
    n_classes = weight.shape[0]
    if weight.shape[1] != n_features:
        raise ValueError(
            f"`weight` must have shape (n_classes, {n_features}) for an input of shape {tuple(input.shape)}; "
            f"got {tuple(weight.shape)}"
        )
    if bias is not None:
        if not isinstance(bias, torch.Tensor):
            raise TypeError(f"`bias` must be a torch.Tensor or None; got {type(bias).__name__}")
        if bias.dtype != input.dtype:
            raise TypeError(f"`bias` must have the input's dtype {input.dtype}; got {bias.dtype}")
        if tuple(bias.shape) != (n_classes,) or bias.device != input.device:
            raise ValueError(
                f"`bias` must have shape ({n_classes},) on device {input.device}; got shape {tuple(bias.shape)} "
                f"on {bias.device}"
            )
    return n_rows, n_classes, n_features


def _options(
    input, targets, class_weight, smoothing, total_classes, vocab_start, cap, temperature, n_rows, n_classes, acc
):
    """Checked targets, class weights and float options (as the kernels take them)."""
    if not isinstance(targets, torch.Tensor) or targets.is_floating_point() or targets.is_complex():
        got = targets.dtype if isinstance(targets, torch.Tensor) else type(targets).__name__
        raise TypeError(f"`targets` must be an integer torch.Tensor of class indices; got {got}")
    if tuple(targets.shape) != (n_rows,):
        raise ValueError(f"`targets` must have shape ({n_rows},); got {tuple(targets.shape)}")
    targets = targets.to(device=input.device, dtype=torch.int64).contiguous()
    if class_weight is not None:
        class_weight = torch.as_tensor(class_weight, dtype=acc, device=input.device)
        if tuple(class_weight.shape) != (n_classes,):
            raise ValueError(f"`class_weight` must have shape ({n_classes},); got {tuple(class_weight.shape)}")
        class_weight = class_weight.contiguous()
    smoothing = float(smoothing)
    if not 0.0 <= smoothing <= 1.0:
        raise ValueError(f"`smoothing` must be in [0, 1]; got {smoothing}")
    if total_classes is None:
        total_classes = n_classes
    if isinstance(total_classes, bool) or not isinstance(total_classes, int) or total_classes < 1:
        raise ValueError(f"`total_classes` must be a positive integer; got {total_classes!r}")
    if isinstance(vocab_start, bool) or not isinstance(vocab_start, int) or vocab_start < 0:
        raise ValueError(f"`vocab_start` must be a non-negative integer; got {vocab_start!r}")
    if cap is not None:
        cap = float(cap)
        if not cap > 0.0:
            raise ValueError(f"`cap` must be positive; got {cap}")
    temperature = float(temperature)
    if not 0.0 < temperature < math.inf:
        raise ValueError(f"`temperature` must be a positive number; got {temperature}")
    return targets, class_weight, smoothing, total_classes, cap, temperature


def _per_row(value: Any, name: str, n_rows: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``value``, of shape (N,), as a contiguous tensor of ``dtype``."""
    tensor = torch.as_tensor(value, dtype=dtype, device=device)
    if tuple(tensor.shape) != (n_rows,):
        raise ValueError(f"`{name}` must have shape ({n_rows},); got {tuple(tensor.shape)}")
    return tensor.contiguous()


def _common(input, bias, class_weight, smoothing, cap, temperature, acc) -> dict:
    """The kernel arguments both entry points share."""
    return {
        "ACC": _TL[acc],
        "BIAS": bias is not None,
        "WEIGHTED": class_weight is not None,
        "SMOOTH": smoothing > 0,
        "SCALED": temperature != 1.0,
        "CAPPED": cap is not None,
        "UPCAST": INTERPRETED and input.dtype == torch.bfloat16,
        "PRECISION": "ieee" if input.dtype in (torch.float32, torch.float64) else "tf32",
    }


def linear_logsumexp(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    targets: torch.Tensor,
    *,
    class_weight: torch.Tensor | None = None,
    smoothing: float = 0.0,
    total_classes: int | None = None,
    vocab_start: int = 0,
    cap: float | None = None,
    temperature: float = 1.0,
    block_n: int | None = None,
    block_v: int | None = None,
    block_h: int | None = None,
    v_splits: int | None = None,
    stats: bool = False,
) -> tuple:
    r"""Per row, the log-sum-exp of the logits of a linear layer and their target-weighted sum, without
    materializing the logits.

    With the logits :math:`x_{n,c} = (\mathrm{input}_n \cdot \mathrm{weight}_c + \mathrm{bias}_c) / T`
    (:math:`T` the temperature), :math:`u = \gamma \tanh(x / \gamma)` under a soft-cap
    :math:`\gamma` (else :math:`u = x`), and
    the target weights

    .. math::

        a_{n,c} = (1 - \varepsilon)\, w_{y_n} [c = y_n - v_0] + \frac{\varepsilon}{C_\text{total}} w_c,

    it returns

    .. math::

        \operatorname{LSE}_n = \log \sum_{c=0}^{V-1} e^{u_{n,c}}, \qquad
        \mathrm{dot}_n = \sum_{c=0}^{V-1} a_{n,c} u_{n,c}

    (a class with :math:`a_{n,c} = 0` adds nothing to the dot product, even at an infinite logit).
    The loss of the family follows as :math:`\ell_n = \operatorname{LSE}_n \sum_c a_{n,c} -
    \mathrm{dot}_n`; for a vocabulary split across shards each shard calls this with its slice of
    the weight and its ``vocab_start``, then the shards combine their log-sum-exps and sum their
    dot products. One pass over tiles of tokens by vocabulary (see the module docstring); the
    outputs are O(N) and nothing of size N×V is written.

    Parameters
    ----------
    input : torch.Tensor of shape (n_rows, n_features)
        float16, bfloat16, float32 or float64, on a CUDA device (CPU under ``TRITON_INTERPRET=1``);
        any strides.
    weight : torch.Tensor of shape (n_classes, n_features)
        The input's dtype and device; any strides.
    bias : torch.Tensor of shape (n_classes,) or None
        The input's dtype.
    targets : torch.Tensor of shape (n_rows,)
        Integer class indices :math:`y_n` of the whole vocabulary. An index in ``[vocab_start,
        vocab_start + n_classes)`` marks column ``y_n - vocab_start``; any other value (an ignored
        row's placeholder, a class of another shard) contributes no target term and is never used
        as an address.
    class_weight : torch.Tensor of shape (n_classes,), optional
        :math:`w_c` (1 without), this shard's slice.
    smoothing : float
        Label smoothing :math:`\varepsilon` in [0, 1].
    total_classes : int, optional
        :math:`C_\text{total}`, the class count of the whole vocabulary (default ``n_classes``).
    vocab_start : int
        :math:`v_0`, the class index of this shard's first row of ``weight``.
    cap : float, optional
        Soft-cap :math:`\gamma > 0`.
    temperature : float, default 1.0
        :math:`T > 0`: the logits are divided by it before the soft-cap.
    block_n, block_v, block_h : int, optional
        Tile sizes (powers of two, at least 16), for tests and tuning; the defaults come from
        :data:`FORWARD_BLOCKS` (larger under the interpreter).
    v_splits : int, optional
        How many programs share a token block's vocabulary (default: a few programs per SM on a
        GPU, 1 under the interpreter).
    stats : bool, default False
        Also return, from the same tiles, the entropy :math:`H_n = \operatorname{LSE}_n -
        \bar u_n` of :math:`p_n = \operatorname{softmax}(u_n)` (:math:`\bar u_n = \sum_c p_{n,c}
        u_{n,c}`, kept online relative to the running maximum, so that a peaked row's entropy
        does not cancel) and the column of the first maximum of :math:`u_n` (as ``torch.argmax``;
        ties across vocabulary splits go to the first split).

    Returns
    -------
    (lse, target_dot) : tuple of torch.Tensor of shape (n_rows,)
        In the accumulation dtype: float32, float64 for float64 input. With ``stats``,
        ``(lse, target_dot, entropy, argmax)``, the entropy in the accumulation dtype, the arg-max
        int64 (a column of this ``weight``, to compare with ``targets - vocab_start``).

    Raises
    ------
    TypeError
        For tensors of other dtypes (the input, weight and bias must share one), or non-integer
        targets.
    ValueError
        For shapes that do not match, a device Triton cannot run on, or options out of range.

    Examples
    --------
    On a CUDA GPU (the CPU runs it under ``TRITON_INTERPRET=1`` only, as the tests do): the
    identity weight makes the logits the input's rows.

    >>> import torch
    >>> from crossentropy.kernels.triton._linear import linear_logsumexp
    >>> device = "cuda" if torch.cuda.is_available() else "cpu"
    >>> x = torch.tensor([[2.0, 1.0, 0.1], [0.0, 0.0, 0.0]], device=device)
    >>> lse, dot = linear_logsumexp(x, torch.eye(3, device=device), None, torch.tensor([0, 2], device=device))
    >>> [round(v, 4) for v in lse.tolist()], dot.tolist()
    ([2.417, 1.0986], [2.0, 0.0])
    """
    n_rows, n_classes, n_features = _check_linear(input, weight, bias)
    acc = torch.float64 if input.dtype == torch.float64 else torch.float32
    targets, class_weight, smoothing, total_classes, cap, temperature = _options(
        input, targets, class_weight, smoothing, total_classes, vocab_start, cap, temperature, n_rows, n_classes, acc
    )
    bn, bv, bh, warps = _blocks("forward", input.dtype, block_n, block_v, block_h)
    n_blocks_n, n_tiles = triton.cdiv(n_rows, bn), triton.cdiv(n_classes, bv)
    if v_splits is None:
        v_splits = 1
        if input.device.type == "cuda":
            sms = torch.cuda.get_device_properties(input.device).multi_processor_count
            v_splits = max(1, min(n_tiles, math.ceil(_PROGRAMS_PER_SM * sms / max(n_blocks_n, 1))))
    elif isinstance(v_splits, bool) or not isinstance(v_splits, int) or v_splits < 1:
        raise ValueError(f"`v_splits` must be a positive integer; got {v_splits!r}")
    tiles_per_split = max(1, triton.cdiv(n_tiles, v_splits))
    v_splits = max(1, triton.cdiv(n_tiles, tiles_per_split))  # no split without a tile

    lse = torch.empty((v_splits, n_rows), dtype=acc, device=input.device)
    dot = torch.empty((v_splits, n_rows), dtype=acc, device=input.device)
    placeholder = lse  # pointers the specialization never reads
    entropy = top = arg = placeholder
    if stats:
        entropy = torch.empty((v_splits, n_rows), dtype=acc, device=input.device)
        top = torch.empty((v_splits, n_rows), dtype=acc, device=input.device)
        arg = torch.empty((v_splits, n_rows), dtype=torch.int64, device=input.device)
    if n_rows > 0:
        with interpreter_errstate():
            _linear_logsumexp_kernel[(n_blocks_n, v_splits)](
                input,
                input.stride(0),
                input.stride(1),
                weight,
                weight.stride(0),
                weight.stride(1),
                placeholder if bias is None else bias,
                placeholder if class_weight is None else class_weight,
                targets,
                lse,
                dot,
                entropy,
                top,
                arg,
                n_rows,
                n_classes,
                n_features,
                tiles_per_split,
                vocab_start,
                _bits(1.0 - smoothing),
                _bits(smoothing / total_classes),
                _bits(1.0 / temperature),
                _bits(1.0 if cap is None else cap),
                **_common(input, bias, class_weight, smoothing, cap, temperature, acc),
                BLOCK_N=bn,
                BLOCK_V=bv,
                STATS=stats,
                BLOCK_H=bh,
                num_warps=warps,
                enable_fp_fusion=True,
            )
    if v_splits == 1:
        return (lse[0], dot[0], entropy[0], arg[0]) if stats else (lse[0], dot[0])
    total = torch.logsumexp(lse, dim=0)
    if not stats:
        return total, dot.sum(dim=0)
    return total, dot.sum(dim=0), *_combined_stats(lse, total, entropy, top, arg)


def _combined_stats(lse, total, entropy, top, arg) -> tuple[torch.Tensor, torch.Tensor]:
    r"""The entropy and first arg-max of whole rows from those of the vocabulary splits (v_splits, N):
    with the splits' shares :math:`w_k = e^{\operatorname{LSE}_k - \operatorname{LSE}}`,
    :math:`H = \sum_k w_k (H_k - \log w_k)`; the arg-max is the first split's that reaches the maximum."""
    log_share = lse - total
    share = torch.exp(log_share)
    combined = (share * (entropy - torch.where(share > 0, log_share, torch.zeros_like(log_share)))).sum(dim=0)
    peak = top.amax(dim=0)
    first = torch.argmax((top == peak).to(torch.int8), dim=0)  # the first split holding the maximum
    return combined, arg.gather(0, first[None]).squeeze(0)


def linear_cross_entropy_gradients(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    targets: torch.Tensor,
    lse: torch.Tensor,
    kappa: torch.Tensor,
    grad_factor: torch.Tensor,
    *,
    class_weight: torch.Tensor | None = None,
    smoothing: float = 0.0,
    total_classes: int | None = None,
    vocab_start: int = 0,
    cap: float | None = None,
    temperature: float = 1.0,
    filter_eps: float | None = None,
    need_input: bool = True,
    need_weight: bool = True,
    need_bias: bool = True,
    accumulation_dtype: torch.dtype | None = None,
    block_n: int | None = None,
    block_v: int | None = None,
    block_h: int | None = None,
    p_coefficient: torch.Tensor | None = None,
    entropy_weight: torch.Tensor | None = None,
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    r"""The gradients of a linear cross-entropy with respect to the input, the weight and the bias,
    recomputing the logits tile by tile on chip.

    With the logits :math:`x`, soft-capped logits :math:`u` and target weights :math:`a` of
    :func:`linear_logsumexp`, the given log-sum-exp :math:`\operatorname{LSE}_n` (this
    vocabulary's, or the global one across vocabulary shards), :math:`p_{n,c} = e^{u_{n,c} -
    \operatorname{LSE}_n}`, the given per-row :math:`\kappa_n` and gradient factor :math:`f_n`,

    .. math::

        g_{n,c} = \frac{f_n}{T} \big(\kappa_n\, p_{n,c}\, [p_{n,c} \ge \epsilon] - a_{n,c}\big)
        \Big(1 - \tanh^2 \frac{x_{n,c}}{\gamma}\Big),

    (the bracket only with ``filter_eps`` :math:`\epsilon`, the last factor only under a soft-cap
    :math:`\gamma`; :math:`T` the temperature), and

    .. math::

        \nabla_\mathrm{input} = G\, \mathrm{weight}, \qquad
        \nabla_\mathrm{weight} = G^\top \mathrm{input}, \qquad
        \nabla_\mathrm{bias} = \textstyle\sum_n g_{n,\cdot}.

    For the loss :math:`\sum_n f_n \ell_n` with :math:`\ell_n = \sum_c a_{n,c}
    (\operatorname{LSE}_n - u_{n,c}) + z \operatorname{LSE}_n^2`, :math:`\kappa_n = \sum_c
    a_{n,c} + 2 z \operatorname{LSE}_n`. Rows with :math:`f_n = 0` contribute nothing (a token
    block of such rows is skipped before its first product), whatever their targets and
    log-sum-exp.

    **Filtering.** With ``filter_eps``, probabilities below :math:`\epsilon` are dropped
    elementwise, as the formula says, and a tile where every :math:`p < \epsilon`, no row has its
    target and there is no label smoothing (so :math:`g = 0` there exactly) skips its products:
    the result does not depend on the tile sizes. The dropped terms change each entry of row
    :math:`n` of :math:`\nabla_\mathrm{input}` by at most :math:`|f_n \kappa_n| \, m_n \max_c
    \lVert \mathrm{weight}_c \rVert_\infty` (a soft-cap's slope is at most 1), where the dropped
    mass :math:`m_n = \sum_{c:\, p_{n,c} < \epsilon} p_{n,c}` is at most :math:`V \epsilon` and in
    practice far less. Measured (``tests/kernels/test_kernels_triton_linear.py``,
    ``test_filtering_error_is_small_on_a_peaked_softmax``, float64, 8 random draws): for
    :math:`\epsilon = 2^{-12}` on a peaked softmax of 100 classes (the target logit about 8 above
    the median of the others, whose spread is about 1.8; target probability about 0.9; 44 to 50%
    of the probabilities below :math:`\epsilon`), the dropped mass per row is at most 0.007, and
    the largest error of each gradient relative to its largest entry at most 3.4e-3
    (:math:`\nabla_\mathrm{input}`), 1.9e-3 (:math:`\nabla_\mathrm{weight}`) and 5.6e-3
    (:math:`\nabla_\mathrm{bias}`). The bound the test keeps: **dropped mass at most 0.01 per row
    and relative error at most 1e-2 for each gradient.** The relative error grows as the model
    gets better, since the gradient shrinks while the dropped mass does not: with the target 10
    above (target probability 0.98, 78% dropped) it reached 1.6e-2.

    **Precision.** The logits tile is computed as by :func:`linear_logsumexp`; :math:`g` in float32
    (float64 for float64 input). For float16 and bfloat16 inputs the tile of :math:`g` is rounded
    to the input's dtype for the two products (tensor cores), whose sums accumulate in float32: an
    entry of a gradient carries a relative error of about one unit in the last place of the half
    dtype times the sum of the magnitudes of its terms, as PyTorch's backward of a half-precision
    linear layer. float32 and float64 inputs keep :math:`g` as computed.

    Parameters
    ----------
    input, weight, bias, targets
        As for :func:`linear_logsumexp`.
    lse, kappa, grad_factor : torch.Tensor of shape (n_rows,)
        :math:`\operatorname{LSE}_n`, :math:`\kappa_n`, :math:`f_n` (taken in the accumulation
        dtype of the products: float32, float64 for float64 input).
    class_weight, smoothing, total_classes, vocab_start, cap, temperature
        As for :func:`linear_logsumexp`.
    filter_eps : float, optional
        :math:`\epsilon \ge 0`: drop probabilities below it (None: keep them all).
    need_input, need_weight, need_bias : bool
        Which gradients to compute; the others come back as None (and the bias's when ``bias`` is
        None).
    accumulation_dtype : torch.dtype, optional
        float32 or float64: the dtype of the returned gradients, into which the tiles'
        contributions are added (default float32, float64 for float64 input). The tiles
        themselves are computed in float32 (float64 for float64 input).
    block_n, block_v, block_h : int, optional
        Tile sizes (powers of two, at least 16), for tests and tuning; the defaults come from
        :data:`BACKWARD_BLOCKS` (larger under the interpreter).
    p_coefficient, entropy_weight : torch.Tensor of shape (n_rows,), optional
        :math:`c_n` and :math:`\eta_n` (either alone means 0 for the other): :math:`g` gains
        :math:`p_{n,c} (c_n - \eta_n u_{n,c})` times the soft-cap's slope over :math:`T`,
        unfiltered, which is the gradient of :math:`\sum_n \lambda_n \operatorname{LSE}_n +
        \eta_n H_n` (entropy :math:`H_n = \operatorname{LSE}_n - \sum_c p_{n,c} u_{n,c}`) for
        :math:`c_n = \lambda_n + \eta_n \sum_c p_{n,c} u_{n,c}`. A row then counts when any of
        :math:`f_n, c_n, \eta_n` is nonzero.

    Returns
    -------
    (d_input, d_weight, d_bias)
        Of shapes (n_rows, n_features), (n_classes, n_features), (n_classes,), in
        ``accumulation_dtype``; None where not needed. On a GPU float32 results may differ in
        their last bits from run to run (atomic additions in a varying order; see the module
        docstring).

    Raises
    ------
    TypeError
        As :func:`linear_logsumexp`.
    ValueError
        As :func:`linear_logsumexp`, and for per-row tensors of another shape, a negative
        ``filter_eps`` or another ``accumulation_dtype``.

    Examples
    --------
    The gradient of the mean loss of the two rows of :func:`linear_logsumexp`'s example, with
    respect to the identity weight's input: the softmax minus the one-hot targets, halved.

    >>> import torch
    >>> from crossentropy.kernels.triton._linear import linear_cross_entropy_gradients, linear_logsumexp
    >>> device = "cuda" if torch.cuda.is_available() else "cpu"
    >>> x = torch.tensor([[2.0, 1.0, 0.1], [0.0, 0.0, 0.0]], device=device)
    >>> w, y = torch.eye(3, device=device), torch.tensor([0, 2], device=device)
    >>> lse, _ = linear_logsumexp(x, w, None, y)
    >>> ones = torch.ones(2, device=device)
    >>> d_input, d_weight, d_bias = linear_cross_entropy_gradients(x, w, None, y, lse, ones, ones / 2)
    >>> [[round(v, 4) for v in row] for row in d_input.tolist()], d_bias
    ([[-0.1705, 0.1212, 0.0493], [0.1667, 0.1667, -0.3333]], None)
    """
    n_rows, n_classes, n_features = _check_linear(input, weight, bias)
    acc = torch.float64 if input.dtype == torch.float64 else torch.float32
    if accumulation_dtype is None:
        out_dtype = acc
    elif accumulation_dtype in (torch.float32, torch.float64):
        out_dtype = accumulation_dtype
    else:
        raise ValueError(f"`accumulation_dtype` must be torch.float32 or torch.float64; got {accumulation_dtype}")
    targets, class_weight, smoothing, total_classes, cap, temperature = _options(
        input, targets, class_weight, smoothing, total_classes, vocab_start, cap, temperature, n_rows, n_classes, acc
    )
    device = input.device
    lse = _per_row(lse, "lse", n_rows, acc, device)
    kappa = _per_row(kappa, "kappa", n_rows, acc, device)
    f = _per_row(grad_factor, "grad_factor", n_rows, acc, device)
    with_stats = p_coefficient is not None or entropy_weight is not None
    if with_stats:
        zeros = torch.zeros(n_rows, dtype=acc, device=device)
        pc = zeros if p_coefficient is None else _per_row(p_coefficient, "p_coefficient", n_rows, acc, device)
        eta = zeros if entropy_weight is None else _per_row(entropy_weight, "entropy_weight", n_rows, acc, device)
    if filter_eps is not None:
        filter_eps = float(filter_eps)
        if not filter_eps >= 0.0:
            raise ValueError(f"`filter_eps` must be a non-negative number or None; got {filter_eps}")
    need_bias = need_bias and bias is not None
    d_input = torch.zeros((n_rows, n_features), dtype=out_dtype, device=device) if need_input else None
    d_weight = torch.zeros((n_classes, n_features), dtype=out_dtype, device=device) if need_weight else None
    d_bias = torch.zeros(n_classes, dtype=out_dtype, device=device) if need_bias else None
    if n_rows == 0 or n_classes == 0 or not (need_input or need_weight or need_bias):
        return d_input, d_weight, d_bias

    bn, bv, bh, warps = _blocks("backward", input.dtype, block_n, block_v, block_h)
    grid = (triton.cdiv(n_rows, bn) * triton.cdiv(n_classes, bv),)
    placeholder = f  # pointers the specialization never reads
    with interpreter_errstate():
        _linear_gradients_kernel[grid](
            input,
            input.stride(0),
            input.stride(1),
            weight,
            weight.stride(0),
            weight.stride(1),
            placeholder if bias is None else bias,
            placeholder if class_weight is None else class_weight,
            targets,
            lse,
            kappa,
            f,
            pc if with_stats else placeholder,
            eta if with_stats else placeholder,
            placeholder if d_input is None else d_input,
            placeholder if d_weight is None else d_weight,
            placeholder if d_bias is None else d_bias,
            n_rows,
            n_classes,
            n_features,
            vocab_start,
            _bits(1.0 - smoothing),
            _bits(smoothing / total_classes),
            _bits(1.0 / temperature),
            _bits(1.0 if cap is None else cap),
            _bits(0.0 if filter_eps is None else filter_eps),
            **_common(input, bias, class_weight, smoothing, cap, temperature, acc),
            OUT=_TL[out_dtype],
            FILTER=filter_eps is not None,
            STATS=with_stats,
            NEED_X=need_input,
            NEED_W=need_weight,
            NEED_B=need_bias,
            BLOCK_N=bn,
            BLOCK_V=bv,
            BLOCK_H=bh,
            GROUP_N=_GROUP_N,
            num_warps=warps,
            enable_fp_fusion=True,
        )
    return d_input, d_weight, d_bias
