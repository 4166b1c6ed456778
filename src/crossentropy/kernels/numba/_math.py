"""Scalar math for the kernels, written so that LLVM vectorizes the loops that call it.

Numba calls the C library for ``math.exp``, ``math.tanh`` and ``math.log1p`` one element at a
time (this machine's llvmlite has no SVML), which caps a softmax at a third of the memory
bandwidth. The float32 versions here are branch-free polynomials with bit manipulation, which
the loop vectorizer turns into SIMD code; float64 keeps the C library, since float64 is the
accuracy path, not the speed path.

- :func:`exp_nonpositive`: :math:`e^t` for :math:`t \\le 0` (arguments are always
  ``logit - row max``), within 1.1 float32 ulps, exactly 0 below ``-87`` and for ``-inf``.
- :func:`tanh`: odd polynomial near 0, :math:`(1 - e^{-2|y|}) / (1 + e^{-2|y|})` elsewhere.
- :func:`log1p_unit`: :math:`\\ln(1 + e)` for :math:`e \\in [0, 1]` (the ``log1p(exp(-|x|))``
  of a softplus), through :math:`2 \\operatorname{artanh}(e / (2 + e))`.
- :func:`scaled_difference`: :math:`s a - s b` for a power of two :math:`s \\le 1/2`, which is
  :math:`s (a - b)` rounded once, finite for any two finite floats (``a - b`` alone overflows
  for operands of opposite signs beyond half the largest float).
- :func:`maxnum`: LLVM's ``maxnum`` (the larger operand, NaN ignored), which, unlike Python's
  ``max``, the vectorizer accepts in a reduction; :func:`select` and :func:`copysign`, LLVM's
  branch-free choices.
- :func:`widen` and :func:`narrow`: half-precision storage. The kernels receive float16 data as
  its ``int16`` bit patterns and bfloat16 data as ``uint16`` bit patterns (Numba has no half
  type on the CPU); :func:`widen` turns a stored element into float32, :func:`narrow` rounds a
  float32 to the storage format (to nearest, ties to even), :func:`accumulator` is the scalar
  type arithmetic on an array's elements is carried out in.

The scalar functions contain no branch (every choice is a ``select``), which is what lets the
loops that call them vectorize. They are compiled without the ``reassoc`` flag, which would
let LLVM undo the rounding tricks they rely on; the loops around them keep it, for their sums.
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic, overload
from numba.np.numpy_support import as_dtype

# Every flag but "no NaNs" and "no infinities": -inf logits and NaN propagation must stay exact.
FASTMATH = {"reassoc", "contract", "arcp", "nsz", "afn"}
# error_model="numpy": a float division by zero gives inf/NaN instead of raising, which removes the
# branch that would otherwise stop every loop with a division from vectorizing.
# The kernels' own row-level arithmetic is not fast-math: reassociation could turn
# (m - u_y) + log s back into (m + log s) - u_y, which loses float32 digits for large logits.
# No cache=True: Numba would keep the cache in this package's folder; kernels/numba/_cache.py's refresh()
# gives each kernel an on-disk cache in the user's cache folder instead.
JIT_OPTIONS = {"error_model": "numpy"}
# Helpers called from the kernels' loops.
INLINE_OPTIONS = {"fastmath": FASTMATH, "error_model": "numpy"}
# The scalar functions below: fused multiply-adds allowed, nothing reassociated.
_SCALAR_OPTIONS = {"fastmath": {"contract"}, "error_model": "numpy"}

_LOG2E = np.float32(1.4426950408889634)
_LN2_HI = np.float32(0.693359375)  # ln 2 split in two (Cody-Waite): k * _LN2_HI is exact
_LN2_LO = np.float32(-2.12194440e-4)
_EXP_FLOOR = np.float32(-87.0)  # e^-87 = 1.6e-38: below it the result is flushed to 0
# Adding 1.5 * 2^23 to a float32 of magnitude below 2^22 rounds it to an integer (to nearest,
# ties to even) and leaves that integer in the low bits of the sum's bit pattern.
_ROUNDING_SHIFTER = np.float32(12582912.0)


def _binary_float_intrinsic(name):
    """An intrinsic ``f(a, b)`` of two floats of one type calling ``llvm.<name>.f32/.f64``."""

    def typer(typingctx, a, b):
        if not isinstance(a, types.Float) or a != b:
            return None

        def codegen(context, builder, signature, args):
            value_type = args[0].type
            suffix = "f32" if value_type == ir.FloatType() else "f64"
            fnty = ir.FunctionType(value_type, [value_type, value_type])
            return builder.call(cgutils.get_or_insert_function(builder.module, fnty, f"llvm.{name}.{suffix}"), args)

        return a(a, b), codegen

    typer.__name__ = name
    return intrinsic(typer)


maxnum = _binary_float_intrinsic("maxnum")
maxnum.__doc__ = "``llvm.maxnum``: the larger of two floats of one type; a NaN operand is ignored."
copysign = _binary_float_intrinsic("copysign")
copysign.__doc__ = "``llvm.copysign``: the magnitude of the first float with the sign of the second."


@intrinsic
def select(typingctx, condition, if_true, if_false):
    """``if_true if condition else if_false`` as one LLVM ``select``: no branch."""
    if not isinstance(condition, types.Boolean) or if_true != if_false:
        return None

    def codegen(context, builder, signature, args):
        return builder.select(args[0], args[1], args[2])

    return if_true(condition, if_true, if_false), codegen


def exp_nonpositive(x):  # pragma: no cover - replaced by the overload inside jitted code
    """``exp(x)`` for ``x <= 0`` (see the module docstring)."""
    raise NotImplementedError


def tanh(x):  # pragma: no cover - replaced by the overload inside jitted code
    """``tanh(x)`` (see the module docstring)."""
    raise NotImplementedError


def log1p_unit(x):  # pragma: no cover - replaced by the overload inside jitted code
    """``log1p(x)`` for ``0 <= x <= 1`` (see the module docstring)."""
    raise NotImplementedError


def _exp_nonpositive_f32(x):
    # e^x = 2^k e^r with k = round(x / ln 2) and |r| <= ln2 / 2.
    # The shifted sum carries k in its low bits: k as a float by subtracting the shifter again,
    # and 2^k by adding k to the exponent field of e^r, with no float-to-int conversion.
    shifted = x * _LOG2E + _ROUNDING_SHIFTER
    k_float = shifted - _ROUNDING_SHIFTER  # exact; not folded away, as nothing here may reassociate
    r = x - k_float * _LN2_HI - k_float * _LN2_LO
    # e^r = 1 + r + r^2 p(r), p of degree 4 fitted for the least maximum relative error on
    # |r| <= ln2 / 2 (3e-9 before rounding: a twentieth of a float32 ulp).
    p = np.float32(1.381461275741458e-3)
    p = p * r + np.float32(8.368710055947304e-3)
    p = p * r + np.float32(4.166838899254799e-2)
    p = p * r + np.float32(1.666652113199234e-1)
    p = p * r + np.float32(4.999999403953552e-1)
    p = p * r * r + r + np.float32(1.0)
    # For x >= -87, k >= -126 and e^r > 1 when k = -126, so the result stays a normal number.
    # Below -87 (and for -inf) k is meaningless and the result is replaced by 0.
    # k << 23 from the shifted sum's bits: the shifter's own bits (0x4B400000) shift out of 32.
    bits = np.int32(np.float32(p).view(np.int32) + (np.float32(shifted).view(np.int32) << np.int32(23)))
    value = select(x < _EXP_FLOOR, np.float32(0.0), np.int32(bits).view(np.float32))
    return select(x != x, x, value)  # NaN in, NaN out, whatever its payload bits


def _tanh_f32(x):
    a = math.fabs(x)
    # |x| < 0.625: Cephes tanhf odd polynomial; otherwise through e^{-2|x|} in (0, 0.29].
    z = a * a
    small = (
        (
            ((np.float32(-5.70498872745e-3) * z + np.float32(2.06390887954e-2)) * z - np.float32(5.37397155531e-2)) * z
            + np.float32(1.33314422036e-1)
        )
        * z
        - np.float32(3.33332819422e-1)
    ) * z * a + a
    e = exp_nonpositive(np.float32(-2.0) * a)
    large = (np.float32(1.0) - e) / (np.float32(1.0) + e)
    magnitude = select(a < np.float32(0.625), small, large)
    return select(x != x, x, copysign(magnitude, x))


def _log1p_unit_f32(x):
    # ln(1 + x) = 2 artanh(s), s = x / (2 + x) in [0, 1/3]: the odd series in s converges by a
    # factor s^2 <= 1/9 a term, so seven terms reach float32 precision, and for small x the
    # result is s (2 + ...) with no cancellation.
    s = x / (np.float32(2.0) + x)
    z = s * s
    series = np.float32(2.0 / 13.0)
    series = series * z + np.float32(2.0 / 11.0)
    series = series * z + np.float32(2.0 / 9.0)
    series = series * z + np.float32(2.0 / 7.0)
    series = series * z + np.float32(2.0 / 5.0)
    series = series * z + np.float32(2.0 / 3.0)
    return (series * z) * s + np.float32(2.0) * s


def _float32_or_libm(function, float32_version, libm_version):
    """Make ``function`` (a stub of one argument ``x``) run ``float32_version`` on float32 and the C
    library's ``libm_version`` on float64, inside jitted code."""

    @overload(function, jit_options=_SCALAR_OPTIONS)
    def _dispatch(x):
        if x == types.float32:
            return float32_version
        if x == types.float64:
            return lambda x: libm_version(x)
        return None


_float32_or_libm(exp_nonpositive, _exp_nonpositive_f32, math.exp)
_float32_or_libm(tanh, _tanh_f32, math.tanh)
_float32_or_libm(log1p_unit, _log1p_unit_f32, math.log1p)


@njit(**_SCALAR_OPTIONS)
def scaled_difference(a, b, scale):
    """``scale * a - scale * b``: with ``scale`` a power of two, ``scale * (a - b)`` without its overflow.

    Both products are exact (short of the subnormal range), so the result is the difference
    rounded once and scaled, while ``a - b`` of two finite floats of opposite signs can pass the
    largest float. Compiled without ``reassoc``, which would let LLVM factor it back into
    ``scale * (a - b)``.
    """
    return scale * a - scale * b


# --------------------------------------------------------------------------------------------
# Half-precision storage: float16 as int16 bit patterns, bfloat16 as uint16 bit patterns.

FLOAT16_BITS = np.dtype(np.int16)
BFLOAT16_BITS = np.dtype(np.uint16)


def widen(value):  # pragma: no cover - replaced by the overload inside jitted code
    """A stored element as the type arithmetic runs in (see the module docstring)."""
    raise NotImplementedError


def narrow(value, stored):  # pragma: no cover - replaced by the overload inside jitted code
    """``value`` (float32 for half storage) rounded to the type of the array ``stored``."""
    raise NotImplementedError


def accumulator(array):  # pragma: no cover - replaced by the overload inside jitted code
    """The scalar type (``np.float32`` or ``np.float64``) arithmetic on ``array`` (or a float) runs in."""
    raise NotImplementedError


@intrinsic
def _half_bits_to_float(typingctx, bits):
    if bits != types.int16:
        return None

    def codegen(context, builder, signature, args):
        return builder.fpext(builder.bitcast(args[0], ir.HalfType()), ir.FloatType())

    return types.float32(types.int16), codegen


@intrinsic
def _float_to_half_bits(typingctx, value):
    if value != types.float32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(builder.fptrunc(args[0], ir.HalfType()), ir.IntType(16))

    return types.int16(types.float32), codegen


def _bfloat16_to_float(value):
    return np.uint32(np.uint32(value) << np.uint32(16)).view(np.float32)


@njit(**_SCALAR_OPTIONS)
def _float_to_bfloat16(value):
    bits = np.float32(value).view(np.uint32)
    # Round to nearest, ties to even; a NaN keeps its sign and stays a (quiet) NaN.
    rounded = (bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)
    quiet_nan = (bits >> np.uint32(16)) | np.uint32(0x40)
    return np.uint16(select(value != value, quiet_nan, rounded))


@overload(widen, jit_options=_SCALAR_OPTIONS)
def _widen_overload(value):
    if value in (types.float32, types.float64):
        return lambda value: value
    if value == types.int16:
        return lambda value: _half_bits_to_float(value)
    if value == types.uint16:
        return _bfloat16_to_float
    return None


@overload(narrow, jit_options=_SCALAR_OPTIONS)
def _narrow_overload(value, stored):
    dtype = stored.dtype
    if dtype in (types.float32, types.float64):
        return lambda value, stored: value
    if dtype == types.int16 and value == types.float32:
        return lambda value, stored: _float_to_half_bits(value)
    if dtype == types.uint16 and value == types.float32:
        return lambda value, stored: _float_to_bfloat16(value)
    return None


@overload(accumulator)
def _accumulator_overload(array):
    if isinstance(array, types.Float):
        scalar_type = as_dtype(array).type
        return lambda array: scalar_type
    if array.dtype in (types.int16, types.uint16):
        return lambda array: np.float32
    return lambda array: array.dtype.type
