r"""Numba kernels of softmax cross-entropy: one read of the logits, one write of the gradient.

Each row is processed in blocks of :data:`BLOCK` elements (16 KB of float32, resident in the L1
cache). For every block: its maximum, read from memory; the running maximum :math:`m` and the
running sum :math:`s = \sum e^{u - m}`, rescaled when :math:`m` grows (the "online softmax");
and, while the block is still in cache, the exponentials :math:`e^{u - m_k}` written into the
gradient buffer, with :math:`m_k` the running maximum when block :math:`k` was done. A last
pass turns them into the gradient in place:

.. math::

    g_c = \rho_n \left(\kappa_n \, \frac{e^{m_k - m}}{s}\, e^{u_c - m_k} - a_{n,c}\right)

with :math:`a_{n,c}` the target weights, :math:`\kappa_n = \sum_c a_{n,c} + 2 z \omega_n
\operatorname{LSE}` and :math:`\rho_n` the row's share of the reduction (sample weight over
the mean's denominator). For rows that fit in the L2 cache that last pass never touches
memory, so the logits are read once and the gradient written once; longer rows (up to
millions of classes) stay exact and pay one more pass over the gradient.

``u = c \tanh(x / c)`` with a soft-cap, else ``u = x``. The row maximum of ``u`` is the cap
of the maximum of ``x`` (``tanh`` is increasing), so the cap costs one ``tanh`` per element
and nothing else.

The kernels take arrays already validated and laid out by :mod:`crossentropy.kernels`: 2-d
C-contiguous logits, targets made safe (ignored rows have a row weight of 0 and are skipped,
with a zero gradient), and per-row factors computed there.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from ._math import INLINE_OPTIONS, JIT_OPTIONS, exp_nonpositive, maxnum, tanh

BLOCK = 4096  # elements per block: 16 KB of float32


@njit(**INLINE_OPTIONS)
def _capped(value, cap):
    """``cap * tanh(value / cap)``, or ``value`` when ``cap == 0`` (no soft-cap)."""
    return cap * tanh(value / cap) if cap > 0 else value


@njit(**INLINE_OPTIONS)
def _block_max(block):
    m = block[0]
    for j in range(block.shape[0]):
        m = maxnum(m, block[j])
    return m


@njit(**INLINE_OPTIONS)
def _exp_block(block, out, m, cap, store):
    """Sums of ``exp(u - m)`` and of ``u - m`` over one block; the exponentials go to ``out`` if ``store``.

    Sums relative to ``m`` keep float32 exact for logits with a large common offset (``1e4 + x``).
    """
    s = block.dtype.type(0)
    su = block.dtype.type(0)
    if cap > 0:
        for j in range(block.shape[0]):
            u = cap * tanh(block[j] / cap)
            e = exp_nonpositive(u - m)
            if store:
                out[j] = e
            s += e
            su += u - m
    elif store:
        for j in range(block.shape[0]):
            u = block[j]
            e = exp_nonpositive(u - m)
            out[j] = e
            s += e
            su += u - m
    else:
        for j in range(block.shape[0]):
            u = block[j]
            s += exp_nonpositive(u - m)
            su += u - m
    return s, su


@njit(**INLINE_OPTIONS)
def _exp_block_soft(block, target, weight, out, n_classes, m, cap, smoothing, store):
    r"""For probability targets: sums of ``exp(u - m)``, of :math:`a_c` and of :math:`a_c (u_c - m)` (``0·(-inf) = 0``).

    :math:`a_c = w_c ((1-\varepsilon) t_c + \varepsilon / C)`; ``weight`` is empty when absent.
    """
    zero = block.dtype.type(0)
    s = zero
    total_a = zero
    total_au = zero
    keep = block.dtype.type(1) - smoothing
    floor = smoothing / block.dtype.type(n_classes)
    weighted = weight.shape[0] > 0
    live = m > -np.inf  # False while every logit so far is -inf: their exponentials are 0
    for j in range(block.shape[0]):
        u = _capped(block[j], cap)
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
def _online_row(row, out, block_ref, cap, store):
    """Max, sum of exponentials and sum of ``u - m`` of a row, block by block (see the module docstring)."""
    n_classes = row.shape[0]
    m = row.dtype.type(-np.inf)
    s = row.dtype.type(0)
    su = row.dtype.type(0)
    for k in range((n_classes + BLOCK - 1) // BLOCK):
        start = k * BLOCK
        stop = min(start + BLOCK, n_classes)
        block = row[start:stop]
        block_m = _capped(_block_max(block), cap)
        if block_m > m:
            s = s * exp_nonpositive(m - block_m)
            if start > 0:  # re-reference the sum of u - m to the new maximum
                su += row.dtype.type(start) * (m - block_m)
            m = block_m
        if store:
            block_ref[k] = m
        if m == -np.inf:  # every logit so far is -inf: their exponentials are 0
            if store:
                out[start:stop] = 0
            su = row.dtype.type(-np.inf)
            continue
        block_s, block_su = _exp_block(block, out[start:stop] if store else out, m, cap, store)
        s += block_s
        su += block_su
    return m, s, su


@njit(**INLINE_OPTIONS)
def _online_row_soft(row, target, weight, out, block_ref, cap, smoothing, store):
    """Max, sums of exponentials, of :math:`a_c` and of :math:`a_c (u_c - m)`, block by block."""
    n_classes = row.shape[0]
    zero = row.dtype.type(0)
    m = row.dtype.type(-np.inf)
    s = zero
    total_a = zero
    total_au = zero
    for k in range((n_classes + BLOCK - 1) // BLOCK):
        start = k * BLOCK
        stop = min(start + BLOCK, n_classes)
        block = row[start:stop]
        block_m = _capped(_block_max(block), cap)
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
            cap,
            smoothing,
            store,
        )
        s += block_s
        total_a += block_a
        total_au += block_au
    return m, s, total_a, total_au


@njit(**INLINE_OPTIONS)
def _cap_chain_rule(block, out, cap):
    """``out *= 1 - tanh(x / c)^2``: the derivative of the soft-cap ``c tanh(x / c)``."""
    one = block.dtype.type(1)
    for j in range(block.shape[0]):
        t = tanh(block[j] / cap)
        out[j] *= one - t * t


@njit(**INLINE_OPTIONS)
def _finish_gradient(row, out, block_ref, m, s, coefficient, floor, weight, target, peak, factor, cap):
    """``out[c] = factor * (coefficient * p_c - floor * w_c - peak [c = target])``, then the cap's chain rule.

    Computed from the stored exponentials; ``weight`` is empty when absent (``w_c = 1``).
    """
    n_classes = row.shape[0]
    weighted = weight.shape[0] > 0
    shift = factor * floor
    for k in range((n_classes + BLOCK - 1) // BLOCK):
        start = k * BLOCK
        stop = min(start + BLOCK, n_classes)
        scale = factor * coefficient * exp_nonpositive(block_ref[k] - m) / s
        block_out = out[start:stop]
        if weighted:
            block_weight = weight[start:stop]
            for j in range(block_out.shape[0]):
                block_out[j] = scale * block_out[j] - shift * block_weight[j]
        else:
            for j in range(block_out.shape[0]):
                block_out[j] = scale * block_out[j] - shift
        if start <= target < stop:
            out[target] -= factor * peak
        if cap > 0:
            _cap_chain_rule(row[start:stop], block_out, cap)


@njit(**INLINE_OPTIONS)
def _finish_gradient_soft(row, target, weight, out, block_ref, m, s, coefficient, smoothing, factor, cap):
    """``out[c] = factor * (coefficient * p_c - a_c)`` for probability targets, then the cap's chain rule."""
    n_classes = row.shape[0]
    weighted = weight.shape[0] > 0
    keep = factor * (row.dtype.type(1) - smoothing)
    floor = factor * smoothing / row.dtype.type(n_classes)
    for k in range((n_classes + BLOCK - 1) // BLOCK):
        start = k * BLOCK
        stop = min(start + BLOCK, n_classes)
        scale = factor * coefficient * exp_nonpositive(block_ref[k] - m) / s
        block_out = out[start:stop]
        block_target = target[start:stop]
        if weighted:
            block_weight = weight[start:stop]
            for j in range(block_out.shape[0]):
                block_out[j] = scale * block_out[j] - (keep * block_target[j] + floor) * block_weight[j]
        else:
            for j in range(block_out.shape[0]):
                block_out[j] = scale * block_out[j] - (keep * block_target[j] + floor)
        if cap > 0:
            _cap_chain_rule(row[start:stop], block_out, cap)


@njit(**INLINE_OPTIONS)
def _weighted_sum(row, weight, m, cap):
    """:math:`\\sum_c w_c (u_c - m)` with ``0·(-inf) = 0`` (label smoothing with class weights)."""
    total = row.dtype.type(0)
    for j in range(row.shape[0]):
        w = weight[j]
        total += w * (_capped(row[j], cap) - m) if w != 0 else row.dtype.type(0)
    return total


@njit(parallel=True, **JIT_OPTIONS)
def softmax_cross_entropy_index(
    logits, targets, weight, row_weight, grad_factor, smoothing, z, cap, losses, grad, block_ref, store
):
    r"""Per-row weighted losses :math:`\rho_n \ell_n` (into ``losses``) and, if ``store``, the gradient.

    Parameters (all validated by the caller)
    ----------
    logits : (N, C) C-contiguous float32/float64
    targets : (N,) int64, every entry in [0, C) (ignored rows have ``row_weight`` 0)
    weight : (C,) class weights, or an empty array
    row_weight : (N,) :math:`r_n`: sample weight times "not ignored"
    grad_factor : (N,) :math:`r_n` times the reduction's scale (1 / denominator for the mean)
    smoothing, z, cap : label smoothing, z-loss coefficient, soft-cap (0: none)
    losses : (N,) output
    grad : (N, C) output when ``store``
    block_ref : (N, number of blocks) scratch when ``store``
    """
    n_rows, n_classes = logits.shape
    dtype = logits.dtype.type
    weighted = weight.shape[0] > 0
    total_weight = dtype(n_classes)
    if weighted:
        total_weight = dtype(0)
        for c in range(n_classes):
            total_weight += weight[c]
    keep = dtype(1) - smoothing
    floor = smoothing / dtype(n_classes)
    for n in prange(n_rows):
        if row_weight[n] == 0:
            losses[n] = 0
            if store:
                grad[n, :] = 0
            continue
        row = logits[n]
        y = targets[n]
        out = grad[n] if store else grad[0]
        refs = block_ref[n] if store else block_ref[0]
        m, s, su = _online_row(row, out, refs, cap, store)
        log_s = dtype(math.log(s))
        lse = m + log_s
        target_weight = weight[y] if weighted else dtype(1)
        loss = dtype(0)
        if keep > 0 and target_weight != 0:
            # lse - u_y as (m - u_y) + log s: exact in float32 even for logits like 1e4 + x.
            loss += keep * target_weight * ((m - _capped(row[y], cap)) + log_s)
        if smoothing > 0:
            relative_sum = _weighted_sum(row, weight, m, cap) if weighted else su
            loss += floor * (total_weight * log_s - relative_sum)
        if z > 0:
            loss += z * target_weight * lse * lse
        losses[n] = row_weight[n] * loss
        if store and grad_factor[n] == 0:  # the mean of an all-zero-weight batch: no gradient
            out[:] = 0
        elif store:
            coefficient = keep * target_weight + floor * total_weight + dtype(2) * z * target_weight * lse
            peak = keep * target_weight
            _finish_gradient(row, out, refs, m, s, coefficient, floor, weight, y, peak, grad_factor[n], cap)


@njit(parallel=True, **JIT_OPTIONS)
def softmax_cross_entropy_soft(
    logits, targets, weight, row_weight, grad_factor, smoothing, z, cap, losses, grad, block_ref, store
):
    """Probability targets: as :func:`softmax_cross_entropy_index`, ``targets`` of the logits' shape."""
    n_rows = logits.shape[0]
    dtype = logits.dtype.type
    for n in prange(n_rows):
        if row_weight[n] == 0:
            losses[n] = 0
            if store:
                grad[n, :] = 0
            continue
        row = logits[n]
        target = targets[n]
        out = grad[n] if store else grad[0]
        refs = block_ref[n] if store else block_ref[0]
        m, s, total_a, total_au = _online_row_soft(row, target, weight, out, refs, cap, smoothing, store)
        log_s = dtype(math.log(s))
        lse = m + log_s
        loss = total_a * log_s - total_au
        if z > 0:
            loss += z * lse * lse
        losses[n] = row_weight[n] * loss
        if store and grad_factor[n] == 0:
            out[:] = 0
        elif store:
            coefficient = total_a + dtype(2) * z * lse
            _finish_gradient_soft(row, target, weight, out, refs, m, s, coefficient, smoothing, grad_factor[n], cap)
