r"""Numba kernel of sigmoid (binary and multi-label) cross-entropy: one pass, elementwise.

For each element, with smoothed target :math:`y = (1-\varepsilon) t + \varepsilon / 2`, positive
weight :math:`q`, weight :math:`w` and :math:`e = e^{-|x|}`:

.. math::

    \ell = w \big( q y \operatorname{sp}(-x) + (1 - y) \operatorname{sp}(x) \big), \qquad
    \operatorname{sp}(\pm x) = \max(\pm x, 0) + \ln(1 + e),

    \frac{\partial \ell}{\partial x} = w \big( \sigma(x) (q y + 1 - y) - q y \big), \qquad
    \sigma(x) = \frac{1}{1 + e} \text{ for } x \ge 0, \ \frac{e}{1 + e} \text{ otherwise},

with products ``0 * inf = 0`` (an infinite logit with no target mass on its side costs nothing).
One exponential and one logarithm an element, both the vectorizable float32 versions of
:mod:`crossentropy.kernels.numba._math`.

The flat input is processed in rows of ``width`` elements, in parallel over rows. Every option
is either a vector of ``width`` entries repeated along each row (class weights, scalars) or an
array of the whole flat length, and each row has one factor (its sample weight); the layout is
chosen by :mod:`crossentropy.kernels.numba`.

The gradient can overwrite the logits (``in_place``): each element is read before its gradient
is written, in a loop of its own over the one array, which LLVM vectorizes (two views of one
memory would fail its run-time overlap check and run element by element, 18 times slower).
Since the logits are gone afterwards, that loop also sums the losses times ``loss_scale`` (the
mean's :math:`1/D`), so that a mean whose plain sum overflows can still be formed.
"""

from __future__ import annotations

from numba import njit, prange
from numba.extending import overload

from ._cache import refresh
from ._math import INLINE_OPTIONS, JIT_OPTIONS, accumulator, exp_nonpositive, log1p_unit, narrow, select, widen


@njit(**INLINE_OPTIONS)
def _times(factor, value):
    """``factor * value`` with ``0 * inf = 0``."""
    return select(factor == 0, accumulator(factor)(0), factor * value)


@njit(**INLINE_OPTIONS)
def _element(v, target, q, weight, keep, lift):
    """``(loss, dloss/dx)`` of one element with logit ``v`` (module docstring), the weight applied."""
    zero = accumulator(v)(0)
    one = accumulator(v)(1)
    y = keep * target + lift
    qy = q * y
    not_y = one - y
    e = exp_nonpositive(-abs(v))
    log_term = log1p_unit(e)
    softplus_pos = select(v > 0, v, zero) + log_term  # -log sigmoid(-x)
    softplus_neg = select(v < 0, -v, zero) + log_term  # -log sigmoid(x)
    loss = _times(weight, _times(qy, softplus_neg) + _times(not_y, softplus_pos))
    inverse = one / (one + e)
    sigmoid = select(v >= 0, inverse, e * inverse)
    return loss, (sigmoid * (qy + not_y) - qy) * weight


@njit(**INLINE_OPTIONS)
def _row(x, t, w, q, row_factor, keep, lift, grad_scale, losses, grad, store, per_element):
    """One row: losses into ``losses`` (per element) or summed and returned; the gradient into ``grad`` if ``store``.

    One loop per combination of the two flags, so that each is a plain loop the vectorizer takes.
    """
    total = accumulator(x)(0)
    if store and per_element:
        for j in range(x.shape[0]):
            loss, slope = _element(widen(x[j]), t[j], q[j], w[j] * row_factor, keep, lift)
            losses[j] = loss
            grad[j] = narrow(slope * grad_scale, grad)
    elif store:
        for j in range(x.shape[0]):
            loss, slope = _element(widen(x[j]), t[j], q[j], w[j] * row_factor, keep, lift)
            total += loss
            grad[j] = narrow(slope * grad_scale, grad)
    elif per_element:
        for j in range(x.shape[0]):
            losses[j] = _element(widen(x[j]), t[j], q[j], w[j] * row_factor, keep, lift)[0]
    else:
        for j in range(x.shape[0]):
            total += _element(widen(x[j]), t[j], q[j], w[j] * row_factor, keep, lift)[0]
    return total


def _row_in_place(x, t, w, q, row_factor, keep, lift, grad_scale, losses, per_element, loss_scale):  # pragma: no cover
    """:func:`_row` with the gradient written over ``x``: ``(sum, sum of loss * loss_scale)`` of the row.

    One array read and written in one loop: LLVM sees no aliasing and vectorizes it. Read-only
    logits (never written in place) get a stub that is never called.
    """
    raise NotImplementedError


def _row_over_itself(x, t, w, q, row_factor, keep, lift, grad_scale, losses, per_element, loss_scale):
    total = accumulator(x)(0)
    scaled = accumulator(x)(0)
    if per_element:
        for j in range(x.shape[0]):
            loss, slope = _element(widen(x[j]), t[j], q[j], w[j] * row_factor, keep, lift)
            losses[j] = loss
            x[j] = narrow(slope * grad_scale, x)
    else:
        for j in range(x.shape[0]):
            loss, slope = _element(widen(x[j]), t[j], q[j], w[j] * row_factor, keep, lift)
            total += loss
            scaled += loss * loss_scale
            x[j] = narrow(slope * grad_scale, x)
    return total, scaled


@overload(_row_in_place, jit_options=INLINE_OPTIONS)
def _row_in_place_overload(x, t, w, q, row_factor, keep, lift, grad_scale, losses, per_element, loss_scale):
    if x.mutable:
        return _row_over_itself
    return lambda x, t, w, q, row_factor, keep, lift, grad_scale, losses, per_element, loss_scale: (
        row_factor,
        row_factor,
    )  # never called: read-only logits are not written in place


@njit(parallel=True, **JIT_OPTIONS)
def sigmoid_cross_entropy_flat(
    logits,
    targets,
    w_vector,
    w_full,
    q_vector,
    q_full,
    row_factor,
    smoothing,
    grad_scale,
    losses,
    grad,
    store,
    in_place,
    scaled_losses,
    loss_scale,
):
    r"""Elementwise sigmoid cross-entropy of flat arrays, in rows of ``w_vector.shape[0]`` elements.

    Parameters (all validated by the caller)
    ----------
    logits : (L,) float32/float64, or half-precision bit patterns
    targets : (L,) probabilities in the accumulation dtype
    w_vector, q_vector : (width,) weight and positive weight repeated along every row
    w_full, q_full : (L,) the same for the whole input, or empty to use the vectors
    row_factor : (number of rows,) one factor a row (sample weights)
    smoothing : label smoothing
    grad_scale : the reduction's scale of the gradient
    losses : (L,) per-element losses, or (number of rows,) row sums
    grad : (L,) output of the logits' type when ``store`` (and not ``in_place``), else (1,)
    in_place : write the gradient over ``logits`` (with ``store``)
    scaled_losses : (number of rows,) row sums of loss * ``loss_scale`` when ``in_place`` with row
        sums, else (1,)
    loss_scale : the factor of ``scaled_losses``

    Everything but ``logits`` and ``grad`` is in the accumulation dtype.
    """
    size = logits.shape[0]
    width = w_vector.shape[0]
    n_rows = row_factor.shape[0]
    dtype = accumulator(logits)
    keep = dtype(1) - smoothing
    lift = smoothing / dtype(2)
    per_element = losses.shape[0] == size
    for r in prange(n_rows):
        start = r * width
        stop = min(start + width, size)
        length = stop - start
        w = w_full[start:stop] if w_full.shape[0] > 0 else w_vector[:length]
        q = q_full[start:stop] if q_full.shape[0] > 0 else q_vector[:length]
        if store and in_place:
            total, scaled = _row_in_place(
                logits[start:stop],
                targets[start:stop],
                w,
                q,
                row_factor[r],
                keep,
                lift,
                grad_scale,
                losses[start:stop] if per_element else losses[:0],
                per_element,
                loss_scale,
            )
            if not per_element:
                losses[r] = total
                scaled_losses[r] = scaled
            continue
        total = _row(
            logits[start:stop],
            targets[start:stop],
            w,
            q,
            row_factor[r],
            keep,
            lift,
            grad_scale,
            losses[start:stop] if per_element else losses[:0],
            grad[start:stop] if store else grad,
            store,
            per_element,
        )
        if not per_element:
            losses[r] = total


refresh(sigmoid_cross_entropy_flat)
