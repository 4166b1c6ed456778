r"""Numba kernels of softmax cross-entropy: one read of the logits, one write of the gradient.

Each row is processed in blocks of :data:`BLOCK` elements (16 KB of float32, resident in the L1
cache). For every block: its maximum, read from memory; the running maximum :math:`m` and the
running sum :math:`s = \sum e^{u - m}`, rescaled when :math:`m` grows (the "online softmax");
and, while the block is still in cache, the exponentials :math:`e^{u - m_k}` written into a row
buffer, with :math:`m_k` the running maximum when block :math:`k` was done. A last pass turns
them into the gradient:

.. math::

    g_c = \rho_n \left(\kappa_n \, \frac{e^{m_k - m}}{s}\, e^{u_c - m_k} - a_{n,c}\right)

with :math:`a_{n,c}` the target weights, :math:`\kappa_n = \sum_c a_{n,c} + 2 z \omega_n
\operatorname{LSE}` and :math:`\rho_n` the row's share of the reduction (sample weight over
the mean's denominator). For float32 and float64 the row buffer is the gradient's own row,
finished in place; for half-precision storage it is a float32 row per thread, and the last pass
rounds into the half-precision gradient. For rows that fit in the L2 cache that last pass never
touches memory but for its writes, so the logits are read once and the gradient written once;
longer rows (up to millions of classes) stay exact and pay one more pass over the buffer.

Sums of differences :math:`u_c - m` (label smoothing, probability targets) overflow for logits
of ±3e38 in float32 (±1e308 in float64) while the loss they enter may fit. The loops keep the
plain differences, which cost nothing beyond the exponentials' own; a row whose sum comes out
``-inf`` is summed again from its logits with
:func:`~crossentropy.kernels.numba._math.scaled_difference`, each term scaled by the coefficient it
enters the loss with, so that no step overflows while the loss fits (a ``-inf`` logit with
target mass gives ``-inf`` again, and an infinite loss). Writing the gradient over the logits
leaves nothing to read again: that loop sums the scaled differences from the start.

``u = c \tanh(x / (T c))`` with a soft-cap, else ``u = x / T`` (``T`` the temperature, applied as
a factor ``1/T`` on each logit as it is read; the gradient's own ``1/T`` is in the row factor).
The row maximum of ``u`` is the cap of the maximum of ``x`` (``tanh`` is increasing), so the cap
costs one ``tanh`` per element and nothing else.

The kernels take arrays already validated and laid out by :mod:`crossentropy.kernels.numba`: 2-d
C-contiguous logits (float32, float64, or half-precision bit patterns, see
:mod:`crossentropy.kernels.numba._math`), targets and options in the accumulation dtype, ignored
rows marked by a row weight of 0 (skipped, with a zero gradient), and per-row factors computed
there.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import njit, prange
from numba.core import types
from numba.extending import overload

from ._cache import refresh
from ._math import (
    INLINE_OPTIONS,
    JIT_OPTIONS,
    accumulator,
    exp_nonpositive,
    maxnum,
    narrow,
    scaled_difference,
    select,
    tanh,
    widen,
)

BLOCK = 4096  # elements per block: 16 KB of float32
# The differences u - m of a block are summed in units of 2^-14: |u - m| < 2^129 (2^1025 in
# float64), so a block's sum of 2^12 of them stays below 2^127 (2^1023) and cannot overflow.
_BLOCK_SCALE = 2.0**-14


def _row_buffers(row, grad, scratch, n, in_place):  # pragma: no cover - replaced by the overload inside jitted code
    """``(buffer, dest)`` for row ``n``: where its exponentials go, and where its gradient goes.

    float32/float64: ``(grad[n], None)``, the gradient finished in place, or ``(row, None)`` when
    ``in_place`` (the gradient overwrites the logits: one array read and written, so the loops
    still vectorize); half precision: this thread's float32 scratch row and ``grad[n]``.
    """
    raise NotImplementedError


@overload(_row_buffers)
def _row_buffers_overload(row, grad, scratch, n, in_place):
    if grad.dtype in (types.float32, types.float64) and not row.mutable:  # read-only logits are never written
        return lambda row, grad, scratch, n, in_place: (grad[n], None)
    if grad.dtype in (types.float32, types.float64):
        return lambda row, grad, scratch, n, in_place: (row if in_place else grad[n], None)
    return lambda row, grad, scratch, n, in_place: (scratch[numba.get_thread_id()], grad[n])


def _part(dest, start, stop):  # pragma: no cover - replaced by the overload inside jitted code
    """``dest[start:stop]``, or None when ``dest`` is None."""
    raise NotImplementedError


@overload(_part)
def _part_overload(dest, start, stop):
    if isinstance(dest, types.NoneType):
        return lambda dest, start, stop: None
    return lambda dest, start, stop: dest[start:stop]


def _store(buffer, dest, index, value):  # pragma: no cover - replaced by the overload inside jitted code
    """``dest[index] = value`` rounded to ``dest``'s storage, or ``buffer[index] = value`` when ``dest`` is None.

    In place, the loop reads and writes one array, so LLVM sees no aliasing and vectorizes it.
    """
    raise NotImplementedError


@overload(_store)
def _store_overload(buffer, dest, index, value):
    if isinstance(dest, types.NoneType):

        def store_in_place(buffer, dest, index, value):
            buffer[index] = value

        return store_in_place

    def store_rounded(buffer, dest, index, value):
        dest[index] = narrow(value, dest)

    return store_rounded


@njit(**INLINE_OPTIONS)
def _capped(value, cap):
    """``cap * tanh(value / cap)``, or ``value`` when ``cap == 0`` (no soft-cap)."""
    return cap * tanh(value / cap) if cap > 0 else value


@njit(**INLINE_OPTIONS)
def _block_max(block):
    m = widen(block[0])
    for j in range(block.shape[0]):
        m = maxnum(m, widen(block[j]))
    return m


@njit(**INLINE_OPTIONS)
def _exp_block(block, out, m, scale, cap, store, relative):
    """Sum of ``exp(u - m)`` over one block and, if ``relative``, of ``u - m`` (``u`` the scaled, capped logits).

    The exponentials go to ``out`` if ``store``. Sums relative to ``m`` keep float32 exact for
    logits with a large common offset (``1e4 + x``); ``-inf`` when they overflow (module docstring).
    """
    s = accumulator(m)(0)
    su = accumulator(m)(0)
    if cap > 0:
        for j in range(block.shape[0]):
            u = cap * tanh(widen(block[j]) * scale / cap)
            e = exp_nonpositive(u - m)
            if store:
                out[j] = e
            s += e
            su += u - m
    elif store and relative:
        for j in range(block.shape[0]):
            u = widen(block[j]) * scale
            e = exp_nonpositive(u - m)
            out[j] = e
            s += e
            su += u - m
    elif store:
        for j in range(block.shape[0]):
            e = exp_nonpositive(widen(block[j]) * scale - m)
            out[j] = e
            s += e
    elif relative:
        for j in range(block.shape[0]):
            u = widen(block[j]) * scale
            s += exp_nonpositive(u - m)
            su += u - m
    else:
        for j in range(block.shape[0]):
            s += exp_nonpositive(widen(block[j]) * scale - m)
    return s, su


def _exp_block_in_place(
    block, m, scale, relative, stats
):  # pragma: no cover - replaced by the overload inside jitted code
    """:func:`_exp_block` writing the exponentials over the block itself (float32/float64, no soft-cap).

    The sum of ``u - m`` is taken in units of 2^-14 (:data:`_BLOCK_SCALE`), finite for any
    logits: nothing is left to sum again once the block holds its exponentials.

    One array read and written in one function: LLVM sees no aliasing and vectorizes the loop
    (two views of one memory would fail its run-time overlap check).
    """
    raise NotImplementedError


def _exp_block_over_itself(block, m, scale, relative, stats):
    s = accumulator(m)(0)
    su = accumulator(m)(0)
    st = accumulator(m)(0)
    if stats:
        unit = accumulator(m)(_BLOCK_SCALE)
        zero = accumulator(m)(0)
        for j in range(block.shape[0]):
            u = block[j] * scale
            d = u - m
            e = exp_nonpositive(d)
            block[j] = e
            s += e
            st += e * d if e > 0 else zero
            if relative:
                su += scaled_difference(u, m, unit)
    elif relative:
        unit = accumulator(m)(_BLOCK_SCALE)
        for j in range(block.shape[0]):
            u = block[j] * scale
            e = exp_nonpositive(u - m)
            block[j] = e
            s += e
            su += scaled_difference(u, m, unit)
    else:
        for j in range(block.shape[0]):
            e = exp_nonpositive(block[j] * scale - m)
            block[j] = e
            s += e
    return s, su, st


@overload(_exp_block_in_place, jit_options=INLINE_OPTIONS)
def _exp_block_in_place_overload(block, m, scale, relative, stats):
    if block.dtype in (types.float32, types.float64) and block.mutable:
        return _exp_block_over_itself
    # Never called: half precision and read-only logits are not written in place.
    return lambda block, m, scale, relative, stats: (m - m, m - m, m - m)


@njit(**INLINE_OPTIONS)
def _exp_block_soft(block, target, weight, out, n_classes, m, scale, cap, smoothing, store):
    r"""For probability targets: sums of ``exp(u - m)``, of :math:`a_c` and of :math:`a_c (u_c - m)` (``0·(-inf) = 0``).

    :math:`a_c = w_c ((1-\varepsilon) t_c + \varepsilon / C)`; ``weight`` is empty when absent.
    """
    dtype = accumulator(m)
    zero = dtype(0)
    s = zero
    total_a = zero
    total_au = zero
    keep = dtype(1) - smoothing
    floor = smoothing / dtype(n_classes)
    weighted = weight.shape[0] > 0
    live = m > -np.inf  # False while every logit so far is -inf: their exponentials are 0
    for j in range(block.shape[0]):
        u = _capped(widen(block[j]) * scale, cap)
        e = exp_nonpositive(u - m) if live else zero
        if store:
            out[j] = e
        a = keep * target[j] + floor
        if weighted:
            a = a * weight[j]
        s += e
        total_a += a
        relative = u - m if live else u  # while m is -inf, u is -inf too: a u is the term
        total_au += a * relative if a != zero else zero
    return s, total_a, total_au


@njit(**INLINE_OPTIONS)
def _target_half_sum(row, target, weight, m, scale, cap, smoothing):
    r""":math:`\sum_c a_c (u_c - m) / 2` of :func:`_exp_block_soft` over a whole row, finite wherever the loss is.

    The slow path of rows whose plain sum overflowed (module docstring): each term is halved
    before it is weighted and added, and no partial sum exceeds half the loss.
    """
    dtype = accumulator(row)
    zero = dtype(0)
    half = dtype(0.5)
    keep = dtype(1) - smoothing
    floor = smoothing / dtype(row.shape[0])
    weighted = weight.shape[0] > 0
    live = m > -np.inf
    total = zero
    for j in range(row.shape[0]):
        a = keep * target[j] + floor
        if weighted:
            a = a * weight[j]
        u = _capped(widen(row[j]) * scale, cap)
        relative = scaled_difference(u, m, half) if live else u
        total += a * relative if a != zero else zero
    return total


@njit(**INLINE_OPTIONS)
def _exp_block_stats(block, out, m, scale, cap, store, relative):
    """:func:`_exp_block` that also sums :math:`e^{u - m} (u - m)` (the entropy's, ``0`` where the exponential is)."""
    dtype = accumulator(m)
    zero = dtype(0)
    s = zero
    su = zero
    st = zero
    if cap > 0 or relative:
        for j in range(block.shape[0]):
            u = _capped(widen(block[j]) * scale, cap)
            d = u - m
            e = exp_nonpositive(d)
            if store:
                out[j] = e
            s += e
            st += e * d if e > 0 else zero
            su += d
    # The common cases, vectorized, with one multiply-add per element: a -inf logit makes its
    # term 0 * -inf = NaN, and the caller then takes the row's sum again (_entropy_sum).
    elif store:
        for j in range(block.shape[0]):
            d = widen(block[j]) * scale - m
            e = exp_nonpositive(d)
            out[j] = e
            s += e
            st += e * d
    else:
        for j in range(block.shape[0]):
            d = widen(block[j]) * scale - m
            e = exp_nonpositive(d)
            s += e
            st += e * d
    return s, su if relative else zero, st


@njit(**INLINE_OPTIONS)
def _entropy_sum(row, m, scale, cap):
    r""":math:`\sum_c e^{u_c - m} (u_c - m)` over a whole row, ``0`` where the exponential is (``-inf`` logits).

    The slow path of rows whose fast sum in :func:`_exp_block_stats` met a ``-inf`` logit.
    """
    dtype = accumulator(m)
    zero = dtype(0)
    total = zero
    for j in range(row.shape[0]):
        d = _capped(widen(row[j]) * scale, cap) - m
        e = exp_nonpositive(d)
        total += e * d if e > zero else zero
    return total


@njit(**INLINE_OPTIONS)
def _first_at(block, value, scale, cap):
    """The first ``j`` whose scaled, capped logit equals ``value`` (the block's maximum), or -1."""
    for j in range(block.shape[0]):
        if _capped(widen(block[j]) * scale, cap) == value:
            return j
    return -1


@njit(**INLINE_OPTIONS)
def _first_equal(block, value):
    """The first ``j`` with ``block[j] == value`` (stored logits), or -1: a branch-free minimum, vectorized.

    The indices are int32 (a block has at most :data:`BLOCK` entries): twice the lanes of int64.
    """
    n = np.int32(block.shape[0])
    first = n
    for j in range(n):
        first = min(first, select(widen(block[j]) == value, np.int32(j), n))
    return np.int64(first) if first < n else np.int64(-1)


@njit(**INLINE_OPTIONS)
def _first_index_of_max(block, raw_m, m, scale, cap, plain):
    """The first ``j`` where the block reaches its maximum ``m`` (``raw_m`` before scaling and capping).

    Unscaled, uncapped logits tie where ``u`` does, and the stored values are compared; otherwise
    ``u`` itself is (a soft-cap can merge distinct logits).
    """
    return _first_equal(block, raw_m) if plain else _first_at(block, m, scale, cap)


@njit(**INLINE_OPTIONS)
def _online_row(row, target, out, block_ref, scale, cap, store, coefficient, in_place, stats):
    """Max, sum of exponentials and (if ``coefficient > 0``) ``coefficient`` times the sum of ``u - m``, block by block.

    Finite whenever the loss it enters is: a plain sum that overflows is taken again from the row
    (:func:`_weighted_sum`); in place, where the row is overwritten, each block's scaled sum is
    multiplied by ``coefficient`` (the smoothing floor) before it is added (module docstring).

    With ``stats``, also :math:`t = \\sum_c e^{u_c - m} (u_c - m)` (rescaled with the running
    maximum, as the sum of exponentials: the entropy is :math:`\\log s - t / s`) and whether
    ``target`` is the first index of the row's maximum (``torch.argmax``'s; index 0 when every
    logit is ``-inf``). That is settled at the end by :func:`_is_first_maximum`, which reads the
    row only where the target's logit is the maximum; in place, where the blocks are overwritten,
    the first index is searched in each block that raises the maximum, before its exponentials
    are written.
    """
    n_classes = row.shape[0]
    dtype = accumulator(row)
    m = dtype(-np.inf)
    s = dtype(0)
    su = dtype(0)
    st = dtype(0)
    first = np.int64(-1)
    max_start = np.int64(-1)  # where the block that last raised the maximum starts
    relative = coefficient > 0
    over_itself = store and in_place
    plain = scale == 1 and cap == 0
    block_coefficient = coefficient / dtype(_BLOCK_SCALE)
    half = dtype(0.5)
    for k in range((n_classes + BLOCK - 1) // BLOCK):
        start = k * BLOCK
        stop = min(start + BLOCK, n_classes)
        block = row[start:stop]
        raw_m = _block_max(block)
        block_m = _capped(raw_m * scale, cap)
        if block_m > m:
            factor = exp_nonpositive(m - block_m)
            if stats:
                # t = sum e^{u-m}(u-m) re-referenced: e^{m-m'} (t + (m - m') s); 0 once the factor underflows.
                st = factor * (st + (m - block_m) * s) if factor > 0 else dtype(0)
                if over_itself:
                    first = np.int64(start) + _first_index_of_max(block, raw_m, block_m, scale, cap, plain)
                max_start = np.int64(start)
            s = s * factor
            if relative and start > 0 and over_itself:  # re-reference the sum of u - m to the new maximum
                su += dtype(2) * ((coefficient * dtype(start)) * scaled_difference(m, block_m, half))
            elif relative and start > 0:
                su += dtype(start) * (m - block_m)
            m = block_m
        if store:
            block_ref[k] = m
        if m == -np.inf:  # every logit so far is -inf: their exponentials are 0
            if store:
                out[start:stop] = 0
            su = dtype(-np.inf)
            continue
        if over_itself:
            block_s, block_su, block_st = _exp_block_in_place(block, m, scale, relative, stats)
            if relative:
                su += block_coefficient * block_su
        elif stats:
            block_s, block_su, block_st = _exp_block_stats(
                block, out[start:stop] if store else out, m, scale, cap, store, relative
            )
            su += block_su
        else:
            block_s, block_su = _exp_block(block, out[start:stop] if store else out, m, scale, cap, store, relative)
            block_st = dtype(0)
            su += block_su
        s += block_s
        st += block_st
    if stats and not over_itself and m > -np.inf and st != st:
        st = _entropy_sum(row, m, scale, cap)  # a -inf logit met the fast sum (or a NaN, found again)
    if over_itself:
        correct = max(first, np.int64(0)) == target  # every logit -inf: torch.argmax's 0
    else:
        correct = stats and _is_first_maximum(row, target, max_start, m, scale, cap, plain)
    if relative and not over_itself:
        # -inf: a difference or the sum overflowed (or a -inf logit, which gives -inf again)
        su = _weighted_sum(row, block_ref[:0], m, scale, cap, coefficient) if su == -np.inf else coefficient * su
    return m, s, su, st, correct


@njit(**INLINE_OPTIONS)
def _is_first_maximum(row, target, max_start, m, scale, cap, plain):
    """Whether ``target`` is the first index where the row's scaled, capped logits reach their maximum ``m``.

    ``max_start`` starts the block that first reached ``m`` (the first maximum is in it). Only a
    target whose logit is ``m``, in that block, needs a search, and only of the entries before it.
    Every logit ``-inf``: index 0, as ``torch.argmax``.
    """
    if m == -np.inf:
        return target == 0
    if not (max_start <= target < max_start + BLOCK) or _capped(widen(row[target]) * scale, cap) != m:
        return False
    return _first_index_of_max(row[max_start:target], m, m, scale, cap, plain) < 0


@njit(**INLINE_OPTIONS)
def _online_row_soft(row, target, weight, out, block_ref, scale, cap, smoothing, store):
    """Max, sums of exponentials, of :math:`a_c` and of :math:`a_c (u_c - m)` (``-inf`` on overflow), block by block."""
    n_classes = row.shape[0]
    dtype = accumulator(row)
    zero = dtype(0)
    m = dtype(-np.inf)
    s = zero
    total_a = zero
    total_au = zero
    for k in range((n_classes + BLOCK - 1) // BLOCK):
        start = k * BLOCK
        stop = min(start + BLOCK, n_classes)
        block = row[start:stop]
        block_m = _capped(_block_max(block) * scale, cap)
        if block_m > m:
            s = s * exp_nonpositive(m - block_m)
            if total_a != zero:  # re-reference the sum of a (u - m) to the new maximum
                total_au += total_a * (m - block_m)
            m = block_m
        if store:
            block_ref[k] = m
        block_s, block_a, block_au = _exp_block_soft(
            block,
            target[start:stop],
            weight[start:stop] if weight.shape[0] > 0 else weight,
            out[start:stop] if store else out,
            n_classes,
            m,
            scale,
            cap,
            smoothing,
            store,
        )
        s += block_s
        total_a += block_a
        total_au += block_au
    return m, s, total_a, total_au


@njit(**INLINE_OPTIONS)
def _cap_derivative(x, cap):
    """:math:`1 - \\tanh^2(x / c)`: the derivative of the soft-cap ``c tanh(x / c)``."""
    t = tanh(x / cap)
    return accumulator(x)(1) - t * t


@njit(**INLINE_OPTIONS)
def _finish_gradient(row, buffer, dest, block_ref, m, s, coefficient, floor, weight, target, peak, factor, scale, cap):
    """``dest[c] = factor * (coefficient * p_c - floor * w_c - peak [c = target])``, times the cap's derivative.

    ``p_c`` comes from the exponentials in ``buffer``; ``dest`` is None (finish in place) or,
    for half-precision storage, the gradient row. ``weight`` is empty when absent (``w_c = 1``).
    """
    n_classes = row.shape[0]
    weighted = weight.shape[0] > 0
    shift = factor * floor
    one = accumulator(row)(1)
    # The target's entry, from its exponential before the loop below may overwrite it.
    target_scale = factor * coefficient * exp_nonpositive(block_ref[target // BLOCK] - m) / s
    target_value = target_scale * buffer[target] - shift * (weight[target] if weighted else one) - factor * peak
    if cap > 0:
        target_value *= _cap_derivative(widen(row[target]) * scale, cap)
    for k in range((n_classes + BLOCK - 1) // BLOCK):
        start = k * BLOCK
        stop = min(start + BLOCK, n_classes)
        block_scale = factor * coefficient * exp_nonpositive(block_ref[k] - m) / s
        _finish_block(
            row[start:stop],
            buffer[start:stop],
            _part(dest, start, stop),
            weight[start:stop] if weighted else weight,
            block_scale,
            shift,
            scale,
            cap,
        )
    _store(buffer, dest, target, target_value)


@njit(**INLINE_OPTIONS)
def _finish_block(row, buffer, dest, weight, scale, shift, x_scale, cap):
    """``(scale * buffer[j] - shift * w_j) * cap'(x_j / T)`` over one block, into ``dest`` or in place when it is None.

    ``x_scale`` is :math:`1/T`; the gradient's own factor :math:`1/T` is in ``scale`` and ``shift``.
    """
    weighted = weight.shape[0] > 0
    if cap > 0:
        one = accumulator(row)(1)
        for j in range(buffer.shape[0]):
            g = scale * buffer[j] - shift * (weight[j] if weighted else one)
            _store(buffer, dest, j, g * _cap_derivative(widen(row[j]) * x_scale, cap))
    elif weighted:
        for j in range(buffer.shape[0]):
            _store(buffer, dest, j, scale * buffer[j] - shift * weight[j])
    else:
        for j in range(buffer.shape[0]):
            _store(buffer, dest, j, scale * buffer[j] - shift)


@njit(**INLINE_OPTIONS)
def _finish_gradient_soft(
    row, target, weight, buffer, dest, block_ref, m, s, coefficient, smoothing, factor, scale, cap
):
    """``dest[c] = factor * (coefficient * p_c - a_c)`` for probability targets, times the cap's derivative.

    As :func:`_finish_gradient`: in place in ``buffer`` when ``dest`` is None.
    """
    n_classes = row.shape[0]
    dtype = accumulator(row)
    keep = factor * (dtype(1) - smoothing)
    floor = factor * smoothing / dtype(n_classes)
    for k in range((n_classes + BLOCK - 1) // BLOCK):
        start = k * BLOCK
        stop = min(start + BLOCK, n_classes)
        _finish_block_soft(
            row[start:stop],
            target[start:stop],
            weight[start:stop] if weight.shape[0] > 0 else weight,
            buffer[start:stop],
            _part(dest, start, stop),
            factor * coefficient * exp_nonpositive(block_ref[k] - m) / s,
            keep,
            floor,
            scale,
            cap,
        )


@njit(**INLINE_OPTIONS)
def _soft_gradient(x, target, weight, j, e, scale, keep, floor, cap):
    """One entry of the probability-target gradient from its exponential ``e``."""
    a = keep * target[j] + floor
    if weight.shape[0] > 0:
        a = a * weight[j]
    g = scale * e - a
    return g * _cap_derivative(x, cap) if cap > 0 else g


@njit(**INLINE_OPTIONS)
def _finish_block_soft(row, target, weight, buffer, dest, scale, keep, floor, x_scale, cap):
    """:func:`_finish_gradient_soft` over one block, into ``dest`` or in place when it is None."""
    for j in range(buffer.shape[0]):
        x = widen(row[j]) * x_scale
        _store(buffer, dest, j, _soft_gradient(x, target, weight, j, buffer[j], scale, keep, floor, cap))


@njit(**INLINE_OPTIONS)
def _weighted_sum(row, weight, m, scale, cap, coefficient):
    """:math:`\\kappa \\sum_c w_c (u_c - m)`, ``0·(-inf) = 0`` (label smoothing; ``w_c = 1`` for an empty ``weight``).

    Each term is scaled by :math:`\\kappa` = ``coefficient`` (the smoothing floor) and halved before
    it is added, so that neither a term nor the sum overflows while the loss fits.
    """
    zero = accumulator(row)(0)
    half = accumulator(row)(0.5)
    weighted = weight.shape[0] > 0
    total = zero
    for j in range(row.shape[0]):
        w = weight[j] * coefficient if weighted else coefficient
        total += w * scaled_difference(_capped(widen(row[j]) * scale, cap), m, half) if w != 0 else zero
    return accumulator(row)(2) * total


@njit(parallel=True, **JIT_OPTIONS)
def softmax_cross_entropy_index(
    logits,
    targets,
    weight,
    row_weight,
    grad_factor,
    smoothing,
    z,
    scale,
    cap,
    losses,
    grad,
    scratch,
    block_ref,
    store,
    in_place,
    stats,
    lse_out,
    entropy_out,
    correct_out,
):
    r"""Per-row weighted losses :math:`\rho_n \ell_n` (into ``losses``) and, if ``store``, the gradient.

    Parameters (all validated by the caller)
    ----------
    logits : (N, C) C-contiguous float32/float64, or half-precision bit patterns
    targets : (N,) int64, every entry in [0, C) (ignored rows have ``row_weight`` 0)
    weight : (C,) class weights, or an empty array
    row_weight : (N,) :math:`r_n`: sample weight times "not ignored"
    grad_factor : (N,) :math:`r_n` times the reduction's scale (1 / denominator for the mean)
    smoothing, z, cap : label smoothing, z-loss coefficient, soft-cap (0: none)
    scale : :math:`1/T`, the logits' factor before the soft-cap (the temperature's inverse; the
        gradient's own factor :math:`1/T` is in ``grad_factor``)
    losses : (N,) output
    grad : (N, C) output of the logits' type when ``store``, else (1, 1)
    scratch : (threads, C) float32 row buffers when ``store`` with half-precision logits, else (threads, 1)
    block_ref : (N, number of blocks) scratch when ``store``
    in_place : the gradient overwrites the logits (``grad`` is ``logits``; index targets,
        float32/float64, no soft-cap and no label smoothing with class weights, which read the
        logits again after the first pass)

    stats : also write, per row, the log-sum-exp of the scaled, capped logits ``u`` (``lse_out``),
        the entropy of their softmax (``entropy_out``) and whether the first maximum of ``u`` is the
        target (``correct_out``, bool); rows with ``row_weight`` 0 get 0 and False. Without it the
        three are placeholders of length 1, never written.

    Everything but ``logits``, ``targets``, ``grad`` and ``correct_out`` is in the accumulation dtype.
    """
    n_rows, n_classes = logits.shape
    dtype = accumulator(logits)
    weighted = weight.shape[0] > 0
    total_weight = dtype(n_classes)
    if weighted:
        total_weight = dtype(0)
        for c in range(n_classes):
            total_weight += weight[c]
    keep = dtype(1) - smoothing
    floor = smoothing / dtype(n_classes)
    half = dtype(0.5)
    relative = floor if smoothing > 0 and not weighted else dtype(0)  # the smoothing term needs floor * sum(u - m)
    for n in prange(n_rows):
        if row_weight[n] == 0:
            losses[n] = 0
            if store:
                grad[n, :] = 0
            if stats:
                lse_out[n] = 0
                entropy_out[n] = 0
                correct_out[n] = False
            continue
        row = logits[n]
        y = targets[n]
        target_logit = _capped(widen(row[y]) * scale, cap)  # read before an in-place pass overwrites it
        out, dest = _row_buffers(row, grad, scratch, np.int64(n) if store else np.int64(0), in_place)  # 0: placeholder
        refs = block_ref[n] if store else block_ref[0]
        m, s, su, st, correct = _online_row(row, y, out, refs, scale, cap, store, relative, in_place, stats)
        log_s = dtype(math.log(s))
        lse = m + log_s
        if stats:
            lse_out[n] = lse
            entropy_out[n] = log_s - st / s
            correct_out[n] = correct
        target_weight = weight[y] if weighted else dtype(1)
        loss = dtype(0)
        if keep > 0 and target_weight != 0:
            # lse - u_y as (m - u_y) + log s: exact in float32 even for logits like 1e4 + x; halved and
            # doubled back (exactly), since m - u_y alone overflows for logits of ±3e38 in float32.
            loss += dtype(2) * (keep * target_weight * (scaled_difference(m, target_logit, half) + half * log_s))
        if smoothing > 0:
            relative_sum = _weighted_sum(row, weight, m, scale, cap, floor) if weighted else su  # floor * sum w (u - m)
            loss += floor * total_weight * log_s - relative_sum
        if z > 0:
            loss += z * target_weight * lse * lse
        losses[n] = row_weight[n] * loss
        if store and grad_factor[n] == 0:  # the mean of an all-zero-weight batch: no gradient
            grad[n, :] = 0
        elif store:
            coefficient = keep * target_weight + floor * total_weight + dtype(2) * z * target_weight * lse
            peak = keep * target_weight
            _finish_gradient(
                row, out, dest, refs, m, s, coefficient, floor, weight, y, peak, grad_factor[n], scale, cap
            )


@njit(parallel=True, **JIT_OPTIONS)
def softmax_cross_entropy_soft(
    logits,
    targets,
    weight,
    row_weight,
    grad_factor,
    smoothing,
    z,
    scale,
    cap,
    losses,
    grad,
    scratch,
    block_ref,
    store,
    in_place,
):
    """Probability targets: as :func:`softmax_cross_entropy_index`, ``targets`` of the logits' shape.

    ``in_place`` is False here (the caller refuses it): writing over the logits is for index targets.
    """
    n_rows = logits.shape[0]
    dtype = accumulator(logits)
    for n in prange(n_rows):
        if row_weight[n] == 0:
            losses[n] = 0
            if store:
                grad[n, :] = 0
            continue
        row = logits[n]
        target = targets[n]
        out, dest = _row_buffers(row, grad, scratch, np.int64(n) if store else np.int64(0), in_place)  # 0: placeholder
        refs = block_ref[n] if store else block_ref[0]
        m, s, total_a, total_au = _online_row_soft(row, target, weight, out, refs, scale, cap, smoothing, store)
        log_s = dtype(math.log(s))
        lse = m + log_s
        if total_au == -np.inf:  # overflowed (or a -inf logit with target mass): again, in halves
            total_au = dtype(2) * _target_half_sum(row, target, weight, m, scale, cap, smoothing)
        loss = total_a * log_s - total_au
        if z > 0:
            loss += z * lse * lse
        losses[n] = row_weight[n] * loss
        if store and grad_factor[n] == 0:
            grad[n, :] = 0
        elif store:
            coefficient = total_a + dtype(2) * z * lse
            _finish_gradient_soft(
                row, target, weight, out, dest, refs, m, s, coefficient, smoothing, grad_factor[n], scale, cap
            )


refresh(softmax_cross_entropy_index, softmax_cross_entropy_soft)
