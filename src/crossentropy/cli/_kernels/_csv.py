r"""Numba parser for the plain numeric CSV of prediction files: a fast path in front of pyarrow.

``parse_block`` reads a block of complete lines (each ending in ``\n``, optionally ``\r\n``) in
parallel: every numeric field the caller asks for becomes a float64, the label field becomes the
index of the class whose name it spells, other fields are skipped. Anything outside the plain
form (a blank line, a quoted or malformed number, ``nan``, a label that is not a class name, a
wrong number of fields, more than 19 significant digits) makes the whole block fail, and the
caller parses that block with pyarrow instead, which accepts more and locates errors. So this
parser never has to be lenient or to explain anything.

Numbers are rounded correctly, as ``float(text)`` rounds them: exactly representable cases by
Clinger's fast path (:math:`w \le 2^{53}`, :math:`|q| \le 22`: one correctly rounded product or
quotient of exact doubles), the others by the Eisel-Lemire algorithm with a 128-bit truncated
table of powers of five (Lemire, "Number parsing at a gigabyte per second", 2021; Mushtak and
Lemire, "Fast number parsing without fallback", 2023), which needs no fallback for 19 or fewer
significant digits. Results below the normal range (about 2.2e-308) make the block fail.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

from ...kernels.numba._cache import refresh
from ...kernels.numba._math import JIT_OPTIONS
from ...kernels.numba._scoring import score_row

SKIP, NUMBER, LABEL = 0, 1, 2
# Scalar helpers are inlined into the kernel.
_INLINE = {"inline": "always", "error_model": "numpy"}
_SMALLEST_POWER, _LARGEST_POWER = -342, 308


def _powers_of_five() -> np.ndarray:
    """128-bit truncated powers of five, ``(hi, lo)`` per decimal exponent in [-342, 308]."""
    rows = []
    for q in range(_SMALLEST_POWER, 0):
        power5 = 5**-q
        z = 0
        while (1 << z) < power5:
            z += 1
        if q >= -27:
            c = 2 ** (z + 127) // power5 + 1
        else:
            c = 2 ** (2 * z + 2 * 64) // power5 + 1
            while c >= (1 << 128):
                c //= 2
        rows.append(c)
    for q in range(0, _LARGEST_POWER + 1):
        power5 = 5**q
        while power5 < (1 << 127):
            power5 *= 2
        while power5 >= (1 << 128):
            power5 //= 2
        rows.append(power5)
    mask = (1 << 64) - 1
    return np.array([[c >> 64, c & mask] for c in rows], dtype=np.uint64)


POWERS_OF_FIVE = _powers_of_five()
EXACT_POWERS_OF_TEN = np.array([10.0**k for k in range(23)])

_U0 = np.uint64(0)
_U1 = np.uint64(1)
_U10 = np.uint64(10)
_U4, _U8, _U16, _U24, _U32 = np.uint64(4), np.uint64(8), np.uint64(16), np.uint64(24), np.uint64(32)
_U40, _U48, _U56 = np.uint64(40), np.uint64(48), np.uint64(56)
# Eight ASCII digits at once (SWAR): a check that all eight are digits, and their value.
_LOW_NIBBLES = np.uint64(0x0F0F0F0F0F0F0F0F)
_HIGH_NIBBLES = np.uint64(0xF0F0F0F0F0F0F0F0)
_SIXES = np.uint64(0x0606060606060606)
_THREES = np.uint64(0x3333333333333333)
_BYTE_PAIRS = np.uint64(0x00FF00FF00FF00FF)
_WORD_PAIRS = np.uint64(0x0000FFFF0000FFFF)
_U2561, _U6553601, _U42949672960001 = np.uint64(2561), np.uint64(6553601), np.uint64(42949672960001)
_U100000000 = np.uint64(100000000)
_PRECISION_MASK = np.uint64(0x1FF)
_TWO53 = np.uint64(1 << 53)


@intrinsic
def _multiply(typingctx, a, b):
    """Full 64 x 64 -> 128-bit product ``(high, low)`` of two uint64: one ``mul`` instruction on x86-64."""
    if a != types.uint64 or b != types.uint64:
        return None
    signature = types.UniTuple(types.uint64, 2)(types.uint64, types.uint64)

    def codegen(context, builder, sig, args):
        wide = ir.IntType(128)
        product = builder.mul(builder.zext(args[0], wide), builder.zext(args[1], wide))
        high = builder.trunc(builder.lshr(product, ir.Constant(wide, 64)), ir.IntType(64))
        low = builder.trunc(product, ir.IntType(64))
        return context.make_tuple(builder, sig.return_type, (high, low))

    return signature, codegen


@intrinsic
def _double_from_bits(typingctx, bits):
    """The float64 whose IEEE-754 bit pattern is the uint64 ``bits``."""
    if bits != types.uint64:
        return None

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(types.uint64), codegen


@intrinsic
def _leading_zeros(typingctx, w):
    """Leading zero bits of a nonzero uint64: one ``lzcnt`` (LLVM's ``ctlz``)."""
    if w != types.uint64:
        return None

    def codegen(context, builder, sig, args):
        return builder.ctlz(args[0], ir.Constant(ir.IntType(1), 1))

    return types.int64(types.uint64), codegen


@njit(**_INLINE)
def decimal_to_double(w, q):
    """``w * 10**q`` correctly rounded, for ``w < 10**19``; returns ``(value, ok)``.

    ``ok`` is False when the result would be subnormal (the caller falls back). The tables are
    module globals, which Numba freezes into the code: no array arguments, so a call costs no
    reference counting.
    """
    exact = EXACT_POWERS_OF_TEN
    powers = POWERS_OF_FIVE
    if w == _U0 or q < _SMALLEST_POWER:
        return 0.0, True
    if q > _LARGEST_POWER:
        return np.inf, True
    if w <= _TWO53 and -22 <= q <= 22:
        if q >= 0:
            return float(w) * exact[q], True
        return float(w) / exact[-q], True
    lz = _leading_zeros(w)
    w = w << np.uint64(lz)
    index = q - _SMALLEST_POWER
    high, low = _multiply(w, powers[index, 0])
    if (high & _PRECISION_MASK) == _PRECISION_MASK:
        second_high, _ = _multiply(w, powers[index, 1])
        low = low + second_high
        if second_high > low:
            high = high + _U1
    upperbit = int(high >> np.uint64(63))
    shift = np.uint64(upperbit + 9)
    mantissa = high >> shift
    power2 = (((152170 + 65536) * q) >> 16) + 63 + upperbit - lz + 1023
    if power2 <= 0:
        return 0.0, False
    if low <= _U1 and -4 <= q <= 23 and (mantissa & np.uint64(3)) == _U1 and (mantissa << shift) == high:
        mantissa = mantissa & ~_U1
    mantissa = mantissa + (mantissa & _U1)
    mantissa = mantissa >> _U1
    if mantissa >= _TWO53:
        mantissa = np.uint64(1 << 52)
        power2 += 1
    if power2 >= 2047:
        return np.inf, True
    mantissa = mantissa & ~np.uint64(1 << 52)  # the implicit bit
    return _double_from_bits(mantissa | (np.uint64(power2) << np.uint64(52))), True


@njit(parallel=True, nogil=True, **JIT_OPTIONS)
def score_lines(
    buf, n_bytes, n_segments, roles, slots, delimiter, names, offsets, n_classes, target_slot, weight_slot, is_logits,
    renormalize, tolerance, clip_eps, edges, top_k, totals, per_class, bins, top_hits, problems, rows, failed, scratch,
    store, store_first,
):  # fmt: skip
    """Parse and score the lines of ``buf[:n_bytes]`` in one pass, without storing the parsed rows.

    ``buf[:n_bytes]`` holds complete lines. Segment ``s`` of ``n_segments`` equal byte ranges
    takes the lines that start in it. Each line is parsed into the segment's scratch row
    (``roles`` and ``slots`` per field: numbers at their slots, the ``n_classes`` predictions
    first, the target distribution from ``target_slot`` if it is not -1, the weight at
    ``weight_slot`` if it is not -1; the label matched against the class ``names``) and scored by
    :func:`crossentropy.kernels.numba._scoring.score_row` into the accumulators of its segment.
    ``rows[s]`` counts the lines of segment ``s``; problems are recorded under the row number
    within the segment (the caller adds the rows of the segments before it). ``failed[s]`` is
    the first row of segment ``s`` that is not plain (its sums are then incomplete), or -1.

    ``store`` (float64, (n_lines, n_numbers + 1)), unless it has no rows, receives each parsed
    line: its numbers by slot, then its label's class index, line ``row`` of segment ``s`` at
    ``store[store_first[s] + row]`` (the caller knows where the segments' lines begin). It keeps
    the rows of a sample, with the rest of the call's work as usual.

    The parsing is written out in this one loop on purpose: the same code split into inlined
    helper functions ran 2.5 times slower.
    """
    soft = target_slot >= 0
    n_fields = roles.shape[0]
    n_names = offsets.shape[0] - 1
    for s in prange(n_segments):
        lo = s * n_bytes // n_segments
        hi = (s + 1) * n_bytes // n_segments
        i = lo
        if s > 0:
            while i < hi and buf[i - 1] != 10:
                i += 1
        row = 0
        values = scratch[s]
        log_q = values[values.shape[0] - 2 * n_classes :]
        label = 0
        while i < hi:
            ok = True
            for field in range(n_fields):
                role = roles[field]
                if role == NUMBER:
                    negative = False
                    if i < n_bytes and (buf[i] == 45 or buf[i] == 43):  # - +
                        negative = buf[i] == 45
                        i += 1
                    # Digits accumulate into w; leading zeros are skipped first, so that at most 19
                    # significant digits fit (more: not plain). Eight digits at a time where possible.
                    w = _U0
                    exponent = 0
                    begin = i
                    while i < n_bytes and buf[i] == 48:
                        i += 1
                    first = i
                    while i < n_bytes:
                        c = buf[i]
                        if c < 48 or c > 57:
                            break
                        w = w * _U10 + np.uint64(c - 48)
                        i += 1
                    digits = i - first
                    any_digit = i > begin
                    if i < n_bytes and buf[i] == 46:  # .
                        i += 1
                        start = i
                        if digits == 0:
                            while i < n_bytes and buf[i] == 48:
                                i += 1
                        first = i
                        while i + 8 <= n_bytes:
                            chunk = (
                                np.uint64(buf[i]) | (np.uint64(buf[i + 1]) << _U8) | (np.uint64(buf[i + 2]) << _U16)
                                | (np.uint64(buf[i + 3]) << _U24) | (np.uint64(buf[i + 4]) << _U32)
                                | (np.uint64(buf[i + 5]) << _U40) | (np.uint64(buf[i + 6]) << _U48)
                                | (np.uint64(buf[i + 7]) << _U56)
                            )  # fmt: skip
                            if ((chunk & _HIGH_NIBBLES) | (((chunk + _SIXES) & _HIGH_NIBBLES) >> _U4)) != _THREES:
                                break
                            chunk = ((chunk & _LOW_NIBBLES) * _U2561) >> _U8
                            chunk = ((chunk & _BYTE_PAIRS) * _U6553601) >> _U16
                            chunk = ((chunk & _WORD_PAIRS) * _U42949672960001) >> _U32
                            w = w * _U100000000 + chunk
                            i += 8
                        while i < n_bytes:
                            c = buf[i]
                            if c < 48 or c > 57:
                                break
                            w = w * _U10 + np.uint64(c - 48)
                            i += 1
                        digits += i - first
                        any_digit = any_digit or i > start
                        exponent = start - i
                    if digits > 19 or not any_digit:
                        ok = False
                        break
                    if i < n_bytes and (buf[i] == 101 or buf[i] == 69):  # e E
                        i += 1
                        sign = 1
                        if i < n_bytes and (buf[i] == 45 or buf[i] == 43):
                            sign = -1 if buf[i] == 45 else 1
                            i += 1
                        if i >= n_bytes or buf[i] < 48 or buf[i] > 57:
                            ok = False
                            break
                        e = 0
                        while i < n_bytes and 48 <= buf[i] <= 57:
                            e = min(e * 10 + (buf[i] - 48), 100000)
                            i += 1
                        exponent += sign * e
                    value, exact = decimal_to_double(w, exponent)
                    if not exact:
                        ok = False
                        break
                    values[slots[field]] = -value if negative else value
                else:
                    a = i
                    if i < n_bytes and buf[i] == 34:  # a quoted field: up to the closing quote ("" escapes one)
                        i += 1
                        while i < n_bytes and buf[i] != 10:
                            if buf[i] == 34:
                                if i + 1 < n_bytes and buf[i + 1] == 34:
                                    i += 2
                                    continue
                                break
                            i += 1
                        if i >= n_bytes or buf[i] != 34:
                            ok = False
                            break
                        i += 1
                    else:
                        while i < n_bytes:
                            c = buf[i]
                            if c == delimiter or c == 10 or c == 13 or c == 34:
                                break
                            i += 1
                    if role == LABEL:
                        b = i
                        if b - a >= 2 and buf[a] == 34:
                            a, b = a + 1, b - 1
                        label = -1
                        for k in range(n_names):
                            if offsets[k + 1] - offsets[k] != b - a:
                                continue
                            same = True
                            for j in range(b - a):
                                if buf[a + j] != names[offsets[k] + j]:
                                    same = False
                                    break
                            if same:
                                label = k
                                break
                        if label < 0:
                            ok = False
                            break
                # The separator after the field: the delimiter, or a line break after the last one.
                if field < n_fields - 1:
                    if i < n_bytes and buf[i] == delimiter:
                        i += 1
                    else:
                        ok = False
                        break
                elif i < n_bytes and buf[i] == 10:
                    i += 1
                elif i + 1 < n_bytes and buf[i] == 13 and buf[i + 1] == 10:
                    i += 2
                else:
                    ok = False
                    break
            if not ok:
                failed[s] = row
                break
            p = values[:n_classes]
            t = values[target_slot : target_slot + n_classes] if soft else p
            w_row = values[weight_slot] if weight_slot >= 0 else 1.0
            score_row(
                p, t, soft, w_row, label, row, is_logits, renormalize, tolerance, clip_eps, edges, top_k, totals,
                per_class, bins, top_hits, problems, s, log_q,
            )  # fmt: skip
            if store.shape[0] > 0:
                kept = store[store_first[s] + row]
                for j in range(kept.shape[0] - 1):
                    kept[j] = values[j]
                kept[kept.shape[0] - 1] = label
            row += 1
        rows[s] = row


refresh(score_lines, decimal_to_double)
