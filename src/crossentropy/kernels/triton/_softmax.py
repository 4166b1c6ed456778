r"""Triton kernel of the softmax cross-entropy: every option of the core API, one or two reads of the logits.

:func:`softmax_cross_entropy_rows` is the GPU backend's twin of the Numba backend's entry point
of the same name (``crossentropy.kernels.numba``): the same arguments, the same per-row
losses and gradient, for PyTorch tensors on a CUDA device (or on the CPU under
``TRITON_INTERPRET=1``, Triton's interpreter, which must be in the environment before this
module is imported).

Per row :math:`n`, with :math:`u = c \tanh(x / c)` under a soft-cap :math:`c` (else :math:`u =
x`), :math:`\operatorname{LSE}_n = \log \sum_c e^{u_{n,c}}` and the target weights :math:`a_{n,c}`
(PyTorch's label smoothing and class weights), the kernel computes

.. math::

    \ell_n = \sum_c a_{n,c} (\operatorname{LSE}_n - u_{n,c}) + z\, \omega_n \operatorname{LSE}_n^2,
    \qquad
    g_{n,c} = f_n \big(\kappa_n \operatorname{softmax}(u_n)_c - a_{n,c}\big)
    \frac{\partial u_{n,c}}{\partial x_{n,c}},

with :math:`\kappa_n = \sum_c a_{n,c} + 2 z \omega_n \operatorname{LSE}_n` and :math:`f_n` the
row's gradient factor.

Layout of the work:

- **Rows that fit one tile** (up to :data:`SINGLE_TILE_MAX` classes): a program holds one tile
  of ``ROWS`` rows in registers (several rows for small class counts, so that each program
  moves a few thousand elements), reduces it and writes the gradient from the same registers:
  the logits are read once and the gradient written once.
- **Longer rows** (any width; a vocabulary of 256k and more): one program per row, two passes
  over tiles of :data:`TILE` elements. The first pass keeps, per lane of the tile, a running
  maximum and a running sum of exponentials (``s = s e^{-|u - m|} + 1`` when ``u`` raises the
  lane's maximum, else ``s + e^{-|u - m|}``): one exponential per element and no
  synchronization between the warps inside the loop; the lanes are combined once at the end.
  The second pass walks the tiles in reverse order, so that the tiles read last by the first
  pass, the likeliest to be still in the L2 cache, are read again first, and writes the
  gradient.

Accuracy follows the Numba kernel: sums of :math:`a_c (u_c - m)` are taken relative to the
row's (lane's) running maximum, in halves (:math:`\tfrac12 u - \tfrac12 m`, exact, finite for
any two finite floats), so that logits with a large common offset (``1e4 + x`` in float32)
lose no digits and logits of ±3e38 overflow only where the loss itself does; ``-inf`` logits
are impossible classes (zero probability, zero gradient; an infinite loss only where they carry
target mass); a NaN logit makes its row NaN and no other; a row with :math:`r_n = 0`
contributes exactly 0 and a zero gradient, whatever its logits. Half precision is read as
stored and accumulated in float32; float64 in float64.

Row offsets are 64-bit, so inputs of more than :math:`2^{31}` elements are addressed
correctly. The float options reach the kernel as the bit patterns of float64 numbers, exact in
float64 (a Python float argument would be rounded to float32). Nothing here synchronizes with
the host.
"""

from __future__ import annotations

import math
import struct
from typing import Any

import torch
import triton
import triton.language as tl

from ..._array import may_overlap, same_memory
from . import INTERPRETED, LOGIT_DTYPES, interpreter_errstate

__all__ = ["SINGLE_TILE_MAX", "TILE", "softmax_cross_entropy_rows"]

# Whether the kernels below were defined for Triton's interpreter (triton.jit reads the variable then).

# Launch configurations, by element size in bytes, for "light" calls (index targets without label
# smoothing or soft-cap: the per-element work is a max, an exponential and a sum) and "heavy" ones
# (smoothing or probability targets sum target weights over the row, a soft-cap adds a tanh).
# Chosen from ptxas's register counts for sm_90 (no spills at these sizes; the heavy calls spill
# beyond them) and for a few thousand elements in flight per program; not yet timed on a GPU,
# so these tables are the place to tune.
#
# Widest padded row that a program keeps whole in registers (one read of the logits).
SINGLE_TILE_MAX = {"light": {2: 32768, 4: 32768, 8: 8192}, "heavy": {2: 8192, 4: 8192, 8: 4096}}
# (tile width, warps) of the two-pass loop over longer rows.
TILE = {"light": {2: (8192, 16), 4: (8192, 16), 8: (2048, 16)}, "heavy": {2: (4096, 16), 4: (4096, 16), 8: (2048, 16)}}
# Elements (rows times the padded class count) of a program of several short rows.
_ROWS_ELEMENTS = {2: 2048, 4: 2048, 8: 1024}
# Elements a thread holds in a program that keeps its rows in registers (sets its warps, 4 to 32).
_PER_THREAD = {2: 8, 4: 8, 8: 4}


@triton.jit
def _option(bits, ACC: tl.constexpr):
    """The float64 whose bit pattern is the integer ``bits``, in the accumulation dtype."""
    return bits.to(tl.int64).to(tl.float64, bitcast=True).to(ACC)


@triton.jit
def _soft_cap(x, cap, inv_cap):
    r""":math:`u = c \tanh(x / c)` and its derivative :math:`1 - \tanh^2(x / c) = 4e / (1 + e)^2`, where
    :math:`e = e^{-2|x/c|}`.

    The derivative from :math:`e` has no cancellation where :math:`\tanh` nears ±1, and
    :math:`\pm\infty` give :math:`\pm c` with a zero derivative.
    """
    y = x * inv_cap
    e = tl.exp(-2.0 * tl.abs(y))
    r = 1.0 / (1.0 + e)
    t = (1.0 - e) * r
    t = tl.where(y < 0, -t, t)
    return cap * t, 4.0 * e * r * r


# The options' bit patterns are values, not shapes: no recompilation for their divisibility by 16.
@triton.jit(do_not_specialize=["keep_bits", "floor_bits", "z_bits", "cap_bits", "inv_t_bits"])
def _softmax_cross_entropy_kernel(
    x_ptr,
    x_stride,
    t_ptr,
    t_stride,
    w_ptr,
    r_ptr,
    f_ptr,
    loss_ptr,
    g_ptr,
    g_stride,
    lse_ptr,
    ent_ptr,
    hit_ptr,
    n_rows,
    n_classes,
    keep_bits,
    floor_bits,
    z_bits,
    cap_bits,
    inv_t_bits,
    ACC: tl.constexpr,
    INDEX: tl.constexpr,
    WEIGHTED: tl.constexpr,
    SMOOTH: tl.constexpr,
    ZLOSS: tl.constexpr,
    CAPPED: tl.constexpr,
    GRAD: tl.constexpr,
    SCALED: tl.constexpr,
    STATS: tl.constexpr,
    HALVES: tl.constexpr,
    SINGLE: tl.constexpr,
    ROWS: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """Losses ``r_n l_n`` of ``ROWS`` rows and, if ``GRAD``, their gradient (see the module docstring).

    ``x``: logits, rows ``x_stride`` apart, classes contiguous; ``t``: int64 indices (``INDEX``)
    or probability rows ``t_stride`` apart; ``w``: class weights (``WEIGHTED``); ``r``, ``f``:
    row weights and gradient factors; ``g``: gradient rows ``g_stride`` apart (may be ``x``
    itself: every element is read before it is written). ``keep`` = 1 - smoothing and ``floor``
    = smoothing / C, ``z`` and the cap arrive as float64 bit patterns. ``HALVES``: sum the
    half-unit differences :math:`a_c (u_c - m) / 2` over the row (smoothing or probability
    targets put target mass on every class; index targets without smoothing need only the
    target logit). ``SCALED``: the logits are multiplied by :math:`1/T` (``inv_t``) as they are
    read, before the cap (the gradient's factor :math:`1/T` is in ``f``). ``STATS`` (index
    targets): per row the log-sum-exp, the entropy and whether the first maximum is the target,
    into ``lse``, ``ent`` and ``hit`` (0 and False for rows with ``r = 0``).
    """
    pid = tl.program_id(0).to(tl.int64)
    rows = pid * ROWS + tl.arange(0, ROWS)  # int64: row offsets below are 64-bit
    in_batch = rows < n_rows
    r = tl.load(r_ptr + rows, mask=in_batch, other=0.0).to(ACC)
    live = r != 0  # rows whose loss counts; the others are not read
    keep = _option(keep_bits, ACC)
    floor = _option(floor_bits, ACC)
    z = _option(z_bits, ACC)
    cap = _option(cap_bits, ACC)
    inv_cap = 1.0 / cap
    inv_t = _option(inv_t_bits, ACC)
    x_rows = x_ptr + rows * x_stride
    cols = tl.arange(0, BLOCK)

    if INDEX:
        y = tl.load(t_ptr + rows, mask=in_batch, other=0)
        valid = (y >= 0) & (y < n_classes)
        y_safe = tl.where(valid, y, 0)  # never read outside the row
        u_y = tl.load(x_rows + y_safe, mask=live, other=0.0).to(ACC)
        if SCALED:
            u_y = u_y * inv_t
        if CAPPED:
            u_y, _target_slope = _soft_cap(u_y, cap, inv_cap)
        if WEIGHTED:  # noqa: SIM108 (constexpr branches)
            w_y = tl.load(w_ptr + y_safe, mask=live, other=0.0).to(ACC)
        else:
            w_y = tl.full([ROWS], 1.0, ACC)
        peak = keep * w_y  # the target's own weight, beside the smoothing floor
        omega = w_y
    else:
        omega = tl.full([ROWS], 1.0, ACC)

    if SINGLE:
        # The whole row in registers: reduce it, then write the gradient from the same values.
        cmask = cols < n_classes
        mask = live[:, None] & cmask[None, :]
        x = tl.load(x_rows[:, None] + cols[None, :], mask=mask, other=-float("inf")).to(ACC)
        if SCALED:
            x = x * inv_t
        if CAPPED:
            u, slope = _soft_cap(x, cap, inv_cap)
            u = tl.where(mask, u, -float("inf"))  # padding stays out of the sums (the cap maps -inf to -c)
        else:
            u = x
        if INDEX:  # noqa: SIM108 (constexpr branches)
            # The target is in the row, so the maximum is the same; fed to the reduction by every
            # thread holding a copy of it, its read comes before any gradient is written over it.
            m = tl.max(tl.maximum(u, u_y[:, None]), axis=1)
        else:
            m = tl.max(u, axis=1)
        ref = tl.where(m == -float("inf"), 0.0, m)  # all -inf: exponentials of 0, not NaN
        e = tl.exp(u - ref[:, None])
        s = tl.sum(e, axis=1)
        if STATS:
            # sum e^{u - m} (u - m): the entropy is log s - t / s; the first column holding the maximum.
            t_sum = tl.sum(tl.where(e > 0, e * (u - ref[:, None]), 0.0), axis=1)
            first = tl.min(tl.where(u == m[:, None], cols[None, :], n_classes), axis=1)
        if HALVES:
            if INDEX:
                if WEIGHTED:
                    a = floor * tl.load(w_ptr + cols, mask=cmask, other=0.0).to(ACC)
                else:
                    a = tl.where(cmask, floor, 0.0)
                a = tl.broadcast_to(a[None, :], [ROWS, BLOCK])
            else:
                t = tl.load(t_ptr + rows[:, None] * t_stride + cols[None, :], mask=mask, other=0.0).to(ACC)
                a = keep * t + floor
                if WEIGHTED:
                    a = a * tl.load(w_ptr + cols, mask=cmask, other=0.0).to(ACC)[None, :]
                a = tl.where(mask, a, 0.0)
            half_sum = tl.sum(tl.where(a != 0, a * (0.5 * u - 0.5 * ref[:, None]), 0.0), axis=1)
            total_a = tl.sum(a, axis=1)
    else:
        # Pass 1: per lane a running maximum, sum of exponentials and (HALVES) sums of a and of
        # a (u - m) / 2, with no synchronization between the warps; lanes combine after the loop.
        lane_m = tl.full([ROWS, BLOCK], -float("inf"), ACC)
        lane_s = tl.zeros([ROWS, BLOCK], ACC)
        if STATS:
            lane_t = tl.zeros([ROWS, BLOCK], ACC)  # sum e^{u - lane_m} (u - lane_m)
            lane_first = tl.zeros([ROWS, BLOCK], tl.int64)  # the lane's first column of its maximum
        if HALVES:
            lane_half = tl.zeros([ROWS, BLOCK], ACC)
            lane_a = tl.zeros([ROWS, BLOCK], ACC)
        for start in range(0, n_classes, BLOCK):
            c = start + cols
            cmask = c < n_classes
            mask = live[:, None] & cmask[None, :]
            x = tl.load(x_rows[:, None] + c[None, :], mask=mask, other=-float("inf")).to(ACC)
            if SCALED:
                x = x * inv_t
            if CAPPED:
                u, _tile_slope = _soft_cap(x, cap, inv_cap)
                u = tl.where(mask, u, -float("inf"))
            else:
                u = x
            # e^{-|u - m|} is the new term (u <= m) or the old sum's factor (u > m); -inf adds 0.
            e = tl.where(u == -float("inf"), 0.0, tl.exp(-tl.abs(u - lane_m)))
            raised = u > lane_m
            if STATS:
                # raised: t = e^{m - u} (t + (m - u) s) (nothing before: 0); else t + e^{u - m} (u - m).
                lifted = tl.where(lane_s > 0, e * (lane_t + (lane_m - u) * lane_s), 0.0)
                lane_t = tl.where(raised, lifted, lane_t + tl.where(e > 0, e * (u - lane_m), 0.0))
                lane_first = tl.where(raised, c[None, :].to(tl.int64), lane_first)
            lane_s = tl.where(raised, lane_s * e + 1.0, lane_s + e)
            new_m = tl.maximum(lane_m, u)
            if HALVES:
                if INDEX:
                    if WEIGHTED:
                        a = floor * tl.load(w_ptr + c, mask=cmask, other=0.0).to(ACC)
                    else:
                        a = tl.where(cmask, floor, 0.0)
                    a = tl.where(mask, a[None, :], 0.0)
                else:
                    t = tl.load(t_ptr + rows[:, None] * t_stride + c[None, :], mask=mask, other=0.0).to(ACC)
                    a = keep * t + floor
                    if WEIGHTED:
                        a = a * tl.load(w_ptr + c, mask=cmask, other=0.0).to(ACC)[None, :]
                    a = tl.where(mask, a, 0.0)
                old_ref = tl.where(lane_m == -float("inf"), 0.0, lane_m)
                new_ref = tl.where(new_m == -float("inf"), 0.0, new_m)
                lane_half += tl.where(lane_a != 0, lane_a * (0.5 * old_ref - 0.5 * new_ref), 0.0)
                lane_half += tl.where(a != 0, a * (0.5 * u - 0.5 * new_ref), 0.0)
                lane_a += a
            lane_m = new_m
        if INDEX:  # noqa: SIM108 (constexpr branches)
            m = tl.max(tl.maximum(lane_m, u_y[:, None]), axis=1)  # as above: u_y read before pass 2 writes
        else:
            m = tl.max(lane_m, axis=1)
        ref = tl.where(m == -float("inf"), 0.0, m)
        lane_factor = tl.exp(lane_m - ref[:, None])
        s = tl.sum(lane_s * lane_factor, axis=1)
        if STATS:
            lane_shift = tl.where(lane_s > 0, lane_t + (lane_m - ref[:, None]) * lane_s, 0.0)
            t_sum = tl.sum(tl.where(lane_factor > 0, lane_factor * lane_shift, 0.0), axis=1)
            first = tl.min(tl.where(lane_m == m[:, None], lane_first, n_classes), axis=1)
        if HALVES:
            lane_ref = tl.where(lane_m == -float("inf"), 0.0, lane_m)
            shift = tl.where(lane_a != 0, lane_a * (0.5 * lane_ref - 0.5 * ref[:, None]), 0.0)
            half_sum = tl.sum(lane_half + shift, axis=1)
            total_a = tl.sum(lane_a, axis=1)

    log_s = tl.log(s)
    lse = ref + log_s
    # sum_c a_c (LSE - u_c) = (sum_c a_c) log s - sum_c a_c (u_c - m), the latter in halves.
    loss = tl.zeros([ROWS], ACC)
    kappa = tl.zeros([ROWS], ACC)
    if HALVES:
        loss = total_a * log_s - 2.0 * half_sum
        kappa = total_a
    if INDEX:
        # peak (LSE - u_y) = 2 peak ((m - u_y) / 2 + log(s) / 2): exact for 1e4 + x, finite for ±3e38.
        target = 2.0 * (peak * ((0.5 * ref - 0.5 * u_y) + 0.5 * log_s))
        loss += tl.where(peak != 0, target, 0.0)
        kappa += peak
    if ZLOSS:
        loss += z * omega * lse * lse
        kappa += 2.0 * z * omega * lse
    if INDEX:
        loss = tl.where(valid, loss, float("nan"))  # a class index outside [0, C): NaN, nothing read
    tl.store(loss_ptr + rows, tl.where(live, r * loss, 0.0), mask=in_batch)
    if STATS:
        tl.store(lse_ptr + rows, tl.where(live, lse, 0.0), mask=in_batch)
        tl.store(ent_ptr + rows, tl.where(live, log_s - t_sum / s, 0.0), mask=in_batch)
        first = tl.where(first == n_classes, 0, first)  # every logit -inf: torch.argmax's 0
        tl.store(hit_ptr + rows, (live & (first == y)).to(tl.int8), mask=in_batch)

    if GRAD:
        f = tl.load(f_ptr + rows, mask=in_batch, other=0.0).to(ACC)
        active = live & (f != 0)  # the other rows get a zero gradient, without a read
        scale = f * kappa / s
        if INDEX:
            scale = tl.where(valid, scale, float("nan"))
            target_shift = f * peak
        g_rows = g_ptr + rows * g_stride
        if SINGLE:
            g = scale[:, None] * e
            if HALVES:
                g -= f[:, None] * a
            if INDEX:
                g -= tl.where(cols[None, :] == y[:, None], target_shift[:, None], 0.0)
            if CAPPED:
                g *= slope
            g = tl.where(active[:, None], g, 0.0)
            store_mask = in_batch[:, None] & (cols < n_classes)[None, :]
            tl.store(g_rows[:, None] + cols[None, :], g.to(g_ptr.dtype.element_ty), mask=store_mask)
        else:
            # Pass 2, last tile first: the tiles pass 1 read last are the likeliest to be in L2.
            n_tiles = tl.cdiv(n_classes, BLOCK)
            for i in range(0, n_tiles):
                c = (n_tiles - 1 - i) * BLOCK + cols
                cmask = c < n_classes
                mask = active[:, None] & cmask[None, :]
                x = tl.load(x_rows[:, None] + c[None, :], mask=mask, other=0.0).to(ACC)
                if SCALED:
                    x = x * inv_t
                if CAPPED:
                    u, slope = _soft_cap(x, cap, inv_cap)
                else:
                    u = x
                g = scale[:, None] * tl.exp(u - ref[:, None])
                if HALVES:
                    if INDEX:
                        if WEIGHTED:
                            a = floor * tl.load(w_ptr + c, mask=cmask, other=0.0).to(ACC)
                        else:
                            a = tl.where(cmask, floor, 0.0)
                        g -= f[:, None] * a[None, :]
                    else:
                        t = tl.load(t_ptr + rows[:, None] * t_stride + c[None, :], mask=mask, other=0.0).to(ACC)
                        a = keep * t + floor
                        if WEIGHTED:
                            a = a * tl.load(w_ptr + c, mask=cmask, other=0.0).to(ACC)[None, :]
                        g -= f[:, None] * a
                if INDEX:
                    g -= tl.where(c[None, :] == y[:, None], target_shift[:, None], 0.0)
                if CAPPED:
                    g *= slope
                g = tl.where(active[:, None], g, 0.0)
                store_mask = in_batch[:, None] & cmask[None, :]
                tl.store(g_rows[:, None] + c[None, :], g.to(g_ptr.dtype.element_ty), mask=store_mask)


def _bits(value: float) -> int:
    """The bit pattern of ``value`` as a float64, a signed 64-bit integer (how the kernel receives floats)."""
    return struct.unpack("<q", struct.pack("<d", value))[0]


def _rows(x: torch.Tensor) -> torch.Tensor | None:
    """``x`` as an (N, C) view whose class stride is 1 (rows read through their stride), or None."""
    n_classes = x.shape[-1]
    if x.dim() > 0 and x.stride(-1) != 1 and n_classes > 1:
        return None
    try:
        return x.view(-1, n_classes)
    except RuntimeError:  # batch axes that no single row stride describes
        return None


def _per_row(value: Any, name: str, batch_shape: tuple[int, ...], dtype: torch.dtype, device: torch.device):
    """``value`` (of the batch shape, or broadcastable to it) as a contiguous (N,) tensor."""
    tensor = torch.as_tensor(value, dtype=dtype, device=device)
    try:
        tensor = tensor.broadcast_to(batch_shape)
    except RuntimeError:
        raise ValueError(f"`{name}` must have the batch shape {batch_shape}; got shape {tuple(tensor.shape)}") from None
    return tensor.reshape(-1).contiguous()


def _launch_config(n_rows: int, n_classes: int, element_size: int, *, light: bool, block_v: int | None) -> dict:
    """``SINGLE``, ``ROWS``, ``BLOCK`` and ``num_warps`` for rows of ``n_classes`` elements of ``element_size``
    bytes (``light``: see :data:`SINGLE_TILE_MAX`)."""
    kind = "light" if light else "heavy"
    padded = triton.next_power_of_2(n_classes)
    single_max = block_v if block_v is not None else SINGLE_TILE_MAX[kind][element_size]
    if padded <= single_max:
        rows = max(1, min(_ROWS_ELEMENTS[element_size] // padded, triton.next_power_of_2(n_rows)))
        warps = max(4, min(32, rows * padded // (32 * _PER_THREAD[element_size])))
        return {"SINGLE": True, "ROWS": rows, "BLOCK": padded, "num_warps": warps}
    block, warps = TILE[kind][element_size]
    if block_v is not None:
        block, warps = block_v, max(4, min(16, block_v // 256))
    return {"SINGLE": False, "ROWS": 1, "BLOCK": block, "num_warps": warps}


def softmax_cross_entropy_rows(
    logits: torch.Tensor,
    targets: torch.Tensor,
    *,
    weight: torch.Tensor | None,
    row_weight: torch.Tensor,
    grad_factor: torch.Tensor | None,
    smoothing: float,
    z: float,
    cap: float | None,
    out: torch.Tensor | None = None,
    block_v: int | None = None,
    temperature: float = 1.0,
    stats: bool = False,
) -> tuple:
    r"""Per-row weighted losses :math:`r_n \ell_n` and, when ``grad_factor`` is given, the gradient.

    The Triton twin of the Numba backend's ``softmax_cross_entropy_rows``, for PyTorch
    tensors on a CUDA device (on the CPU under ``TRITON_INTERPRET=1``). With :math:`u = c
    \tanh(x / c)` under a soft-cap :math:`c` (else :math:`u = x`), :math:`\varepsilon` the label
    smoothing, :math:`w` the class weights (1 without) and :math:`C` the class count, the target
    weights are

    .. math::

        a_{n,c} = (1 - \varepsilon)\, w_{y_n} [c = y_n] + \frac{\varepsilon}{C} w_c
        \quad\text{(index targets)}, \qquad
        a_{n,c} = w_c \Big((1 - \varepsilon)\, t_{n,c} + \frac{\varepsilon}{C}\Big)
        \quad\text{(probabilities)},

    and, with :math:`\omega_n = w_{y_n}` for index targets with class weights (else 1),

    .. math::

        \ell_n = \sum_c a_{n,c} (\operatorname{LSE}_n - u_{n,c}) + z\, \omega_n \operatorname{LSE}_n^2,
        \qquad
        g_{n,c} = f_n \big(\kappa_n \operatorname{softmax}(u_n)_c - a_{n,c}\big)
        \Big(1 - \tanh^2 \frac{x_{n,c}}{c}\Big),

    :math:`\kappa_n = \sum_c a_{n,c} + 2 z \omega_n \operatorname{LSE}_n` (the last factor only
    under a soft-cap). A row with :math:`r_n = 0` has loss exactly 0 (even with infinite logits)
    and a row with :math:`f_n = 0` a zero gradient; neither is read for it.

    Parameters
    ----------
    logits : torch.Tensor of shape (..., n_classes)
        Class axis last; float16, bfloat16, float32 or float64, on a CUDA device (CPU under
        ``TRITON_INTERPRET=1``). Rows are read through their stride when the class stride is 1
        (a view is fine); other layouts are copied first. Half precision accumulates in
        float32, float64 in float64.
    targets : torch.Tensor
        int64 class indices of the batch shape (ignored samples carry index 0 and a
        ``row_weight`` of 0), or probabilities of the logits' shape in the accumulation dtype.
        An index outside ``[0, n_classes)`` is never used to read or write: that row's loss and
        gradient are NaN.
    weight : torch.Tensor of shape (n_classes,) or None
        Class weights :math:`w_c`.
    row_weight : torch.Tensor of the batch shape
        :math:`r_n`, the sample weight times "not ignored".
    grad_factor : torch.Tensor of the batch shape, or None
        :math:`f_n`, :math:`r_n` times the reduction's scale; None computes the losses only,
        allocating O(N) (for logits whose rows need no copy).
    smoothing, z : float
        Label smoothing :math:`\varepsilon` and z-loss coefficient :math:`z`.
    cap : float or None
        Soft-cap :math:`c`.
    out : torch.Tensor of the logits' shape and dtype, optional
        Receives the gradient and is returned (ignored without ``grad_factor``, as by the Numba
        backend); its class stride must be 1. It must not overlap the logits unless it is the
        logits themselves (same start, shape and strides): then the gradient overwrites the
        logits, which works for every dtype and option (each tile is read before it is written)
        and needs rows with class stride 1 that do not overlap.
    block_v : int, optional
        Tile width, a power of two: rows wider than it run the two-pass loop over tiles of this
        width (the default chooses from :data:`SINGLE_TILE_MAX` and :data:`TILE`). For tests and
        tuning.
    temperature : float > 0, default 1
        :math:`T`: every logit is multiplied by :math:`1/T` as it is read, before the soft-cap
        (:math:`u = c \tanh(x / (T c))`), and the gradient carries the factor :math:`1/T`.
    stats : bool, default False
        Index targets only: also return per row the log-sum-exp of :math:`u`, the entropy of
        :math:`\operatorname{softmax}(u)` and whether the first maximum of :math:`u` is the
        target (bool), from the same pass (0, 0 and False where ``row_weight`` is 0).

    Returns
    -------
    (losses, grad) or, with ``stats``, (losses, grad, (lse, entropy, correct))
        ``losses`` of the batch shape in the accumulation dtype; ``grad`` of the logits' shape
        and dtype (``out`` itself when given), or None without ``grad_factor``; the statistics
        of the batch shape (``lse`` and ``entropy`` in the accumulation dtype).

    Raises
    ------
    TypeError
        For arguments that are not PyTorch tensors of the supported dtypes.
    ValueError
        For shapes that do not match, a device Triton cannot run on, or an ``out`` that breaks
        the rules above.

    Examples
    --------
    On a CUDA GPU (the CPU runs it under ``TRITON_INTERPRET=1`` only, as the tests do): the
    second row's uniform logits give :math:`\ln 3`.

    >>> import torch
    >>> from crossentropy.kernels.triton._softmax import softmax_cross_entropy_rows
    >>> device = "cuda" if torch.cuda.is_available() else "cpu"
    >>> x = torch.tensor([[2.0, 1.0, 0.1], [0.0, 0.0, 0.0]], device=device)
    >>> y = torch.tensor([0, 2], device=device)
    >>> ones = torch.ones(2, device=device)
    >>> losses, grad = softmax_cross_entropy_rows(
    ...     x, y, weight=None, row_weight=ones, grad_factor=ones, smoothing=0.0, z=0.0, cap=None
    ... )
    >>> [round(v, 4) for v in losses.tolist()]
    [0.417, 1.0986]
    >>> [[round(v, 4) for v in row] for row in grad.tolist()]
    [[-0.341, 0.2424, 0.0986], [0.3333, 0.3333, -0.6667]]
    """
    if not isinstance(logits, torch.Tensor) or logits.dtype not in LOGIT_DTYPES:
        got = logits.dtype if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise TypeError(f"`logits` must be a float16, bfloat16, float32 or float64 torch.Tensor; got {got}")
    device = logits.device
    if device.type != "cuda" and not (INTERPRETED and device.type == "cpu"):
        raise ValueError(
            "`logits` must be on a CUDA device (CPU tensors run only under TRITON_INTERPRET=1, set before "
            f"crossentropy.kernels.triton is imported); got device {device}"
        )
    if logits.dim() == 0 or logits.shape[-1] == 0:
        raise ValueError(f"`logits` must have a class axis of at least one class; got shape {tuple(logits.shape)}")
    if block_v is not None and (block_v < 1 or block_v & (block_v - 1)):
        raise ValueError(f"`block_v` must be a power of two; got {block_v}")
    if not isinstance(targets, torch.Tensor):
        raise TypeError(f"`targets` must be a torch.Tensor; got {type(targets).__name__}")
    acc = torch.float64 if logits.dtype == torch.float64 else torch.float32
    shape = tuple(logits.shape)
    batch_shape, n_classes = shape[:-1], shape[-1]
    n_rows = math.prod(batch_shape)

    index = targets.dim() == logits.dim() - 1
    if stats and not index:
        raise ValueError("`stats` needs class-index targets; got probabilities of the logits' shape")
    if index:
        if targets.is_floating_point() or targets.is_complex() or tuple(targets.shape) != batch_shape:
            raise ValueError(
                f"`targets` must be integer class indices of the batch shape {batch_shape} or probabilities of the "
                f"logits' shape {shape}; got shape {tuple(targets.shape)} and dtype {targets.dtype}"
            )
        target_rows = targets.to(device=device, dtype=torch.int64).reshape(-1).contiguous()
        target_stride = 0
    else:
        if tuple(targets.shape) != shape:
            raise ValueError(
                f"`targets` must be integer class indices of the batch shape {batch_shape} or probabilities of the "
                f"logits' shape {shape}; got shape {tuple(targets.shape)}"
            )
        probs = targets.to(device=device, dtype=acc)
        target_rows = _rows(probs)
        if target_rows is None:
            target_rows = probs.contiguous().view(-1, n_classes)
        target_stride = target_rows.stride(0)
    if weight is not None:
        weight = torch.as_tensor(weight, dtype=acc, device=device)
        if tuple(weight.shape) != (n_classes,):
            raise ValueError(f"`weight` must have shape ({n_classes},); got {tuple(weight.shape)}")
        weight = weight.contiguous()
    r = _per_row(row_weight, "row_weight", batch_shape, acc, device)
    f = None if grad_factor is None else _per_row(grad_factor, "grad_factor", batch_shape, acc, device)
    temperature = float(temperature)
    if f is not None and temperature != 1.0:  # the gradient's factor 1/T, once per row
        f = f * (1.0 / temperature)

    x = _rows(logits)
    in_place = False
    grad = None
    if f is not None:
        in_place = _check_out(out, logits, x)
        if in_place:
            grad = logits
        elif out is not None:
            grad = out
        else:
            grad = torch.empty(shape, dtype=logits.dtype, device=device)
    if x is None:
        x = logits.contiguous().view(-1, n_classes)
    g = x if in_place else (None if grad is None else grad.view(-1, n_classes))

    smoothing, z = float(smoothing), float(z)
    losses = torch.empty(n_rows, dtype=acc, device=device)
    lse = entropy = hits = losses  # placeholders the kernel does not touch without STATS
    if stats:
        lse, entropy = torch.empty(n_rows, dtype=acc, device=device), torch.empty(n_rows, dtype=acc, device=device)
        hits = torch.empty(n_rows, dtype=torch.int8, device=device)
    if n_rows > 0:
        light = index and not smoothing and cap is None
        config = _launch_config(n_rows, n_classes, logits.element_size(), light=light, block_v=block_v)
        grid = (triton.cdiv(n_rows, config["ROWS"]),)
        # Placeholders for pointers the specialization never reads (a constexpr flag is off).
        with interpreter_errstate():
            _softmax_cross_entropy_kernel[grid](
                x,
                x.stride(0),
                target_rows,
                target_stride,
                r if weight is None else weight,
                r,
                r if f is None else f,
                losses,
                x if g is None else g,
                x.stride(0) if g is None else g.stride(0),
                lse,
                entropy,
                hits,
                n_rows,
                n_classes,
                _bits(1.0 - smoothing),
                _bits(smoothing / n_classes),
                _bits(z),
                _bits(1.0 if cap is None else float(cap)),
                _bits(1.0 / temperature),
                ACC=tl.float64 if acc == torch.float64 else tl.float32,
                INDEX=index,
                WEIGHTED=weight is not None,
                SMOOTH=smoothing > 0,
                ZLOSS=z > 0,
                CAPPED=cap is not None,
                GRAD=f is not None,
                SCALED=temperature != 1.0,
                STATS=stats,
                HALVES=smoothing > 0 or not index,
                SINGLE=config["SINGLE"],
                ROWS=config["ROWS"],
                BLOCK=config["BLOCK"],
                num_warps=config["num_warps"],
                enable_fp_fusion=True,
            )
    if stats:
        return (
            losses.view(batch_shape),
            grad,
            (lse.view(batch_shape), entropy.view(batch_shape), hits.bool().view(batch_shape)),
        )
    return losses.view(batch_shape), grad


def _check_out(out: torch.Tensor | None, logits: torch.Tensor, rows: torch.Tensor | None) -> bool:
    """Check ``out``, where the gradient goes; True when it is ``logits`` itself (the gradient in place).

    ``rows``: the (N, C) view of the logits with class stride 1, or None when there is none.
    """
    if out is None:
        return False
    shape = tuple(logits.shape)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != shape or out.dtype != logits.dtype:
        got = f"shape {tuple(out.shape)} and dtype {out.dtype}" if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"`out` must be a tensor of the logits' shape {shape} and dtype {logits.dtype}; got {got}")
    if out.device != logits.device:
        raise ValueError(f"`out` must be on the logits' device {logits.device}; got {out.device}")
    if same_memory(out, logits):
        n_rows = rows.shape[0] if rows is not None else 0
        if rows is None or (n_rows > 1 and rows.stride(0) < logits.shape[-1]):
            raise ValueError(
                "writing the gradient over the logits (`out=logits`) needs rows with class stride 1 that do not "
                f"overlap; got logits of shape {shape} and strides {logits.stride()}"
            )
        return True
    out_rows = _rows(out)
    if out_rows is None or (out_rows.shape[0] > 1 and out_rows.stride(0) < logits.shape[-1]):
        raise ValueError(f"`out` must have rows with class stride 1 that do not overlap; got strides {out.stride()}")
    if may_overlap(out, logits):
        raise ValueError("`out` must not overlap `logits` unless it is `logits` itself (the gradient written in place)")
    return False
