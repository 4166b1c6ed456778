"""Scalar math for the kernels, written so that LLVM vectorizes the loops that call it.

Numba calls the C library for ``math.exp`` and ``math.tanh`` one element at a time (this
machine's llvmlite has no SVML), which caps a softmax at a third of the memory bandwidth. The
float32 versions here are branch-free polynomials with bit manipulation, which the loop
vectorizer turns into SIMD code; float64 keeps the C library, since float64 is the accuracy
path, not the speed path.

- :func:`exp_nonpositive`: :math:`e^t` for :math:`t \\le 0` (arguments are always
  ``logit - row max``), relative error below 3 float32 ulps, exactly 0 below ``-87`` and for
  ``-inf``.
- :func:`tanh`: odd polynomial near 0, :math:`(1 - e^{-2|y|}) / (1 + e^{-2|y|})` elsewhere.
- :func:`maxnum`: LLVM's ``maxnum`` (the larger operand, NaN ignored), which, unlike Python's
  ``max``, the vectorizer accepts in a reduction; :func:`select` and :func:`copysign`, LLVM's
  branch-free choices.

The scalar functions are inlined into the loops at the Numba IR level and contain no branch
(every choice is a ``select``), which is what lets the loops vectorize.
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, overload

# Every flag but "no NaNs" and "no infinities": -inf logits and NaN propagation must stay exact.
FASTMATH = {"reassoc", "contract", "arcp", "nsz", "afn"}
# error_model="numpy": a float division by zero gives inf/NaN instead of raising, which removes the
# branch that would otherwise stop every loop with a division from vectorizing.
# The kernels' own row-level arithmetic is not fast-math: reassociation could turn
# (m - u_y) + log s back into (m + log s) - u_y, which loses float32 digits for large logits.
JIT_OPTIONS = {"error_model": "numpy", "cache": True}
# Helpers called from the kernels' loops.
INLINE_OPTIONS = {"fastmath": FASTMATH, "error_model": "numpy"}

_LOG2E = np.float32(1.4426950408889634)
_LN2_HI = np.float32(0.693359375)  # ln 2 split in two (Cody-Waite): k * _LN2_HI is exact
_LN2_LO = np.float32(-2.12194440e-4)
_EXP_FLOOR = np.float32(-87.0)  # e^-87 = 1.6e-38: below it the result is flushed to 0


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


def exp_nonpositive(t):  # pragma: no cover - replaced by the overload inside jitted code
    """``exp(t)`` for ``t <= 0`` (see the module docstring)."""
    raise NotImplementedError


def tanh(y):  # pragma: no cover - replaced by the overload inside jitted code
    """``tanh(y)`` (see the module docstring)."""
    raise NotImplementedError


def _exp_nonpositive_f32(t):
    # e^t = 2^k e^r with k = round(t / ln 2) and |r| <= ln2 / 2; e^r by the Cephes expf polynomial.
    clamped = maxnum(t, _EXP_FLOOR)
    k = np.float32(math.floor(clamped * _LOG2E + np.float32(0.5)))
    r = clamped - k * _LN2_HI - k * _LN2_LO
    p = np.float32(1.9875691500e-4)
    p = p * r + np.float32(1.3981999507e-3)
    p = p * r + np.float32(8.3334519073e-3)
    p = p * r + np.float32(4.1665795894e-2)
    p = p * r + np.float32(1.6666665459e-1)
    p = p * r + np.float32(5.0000001201e-1)
    p = p * r * r + r + np.float32(1.0)
    # Multiply by 2^k by adding k to the exponent field: k >= -126, so the result stays normal.
    bits = np.int32(np.float32(p).view(np.int32) + (np.int32(k) << np.int32(23)))
    value = select(t < _EXP_FLOOR, np.float32(0.0), np.int32(bits).view(np.float32))
    return select(t != t, t, value)  # NaN in, NaN out (the clamp above would hide it)


def _exp_f64(t):
    return math.exp(t)


@overload(exp_nonpositive, inline="always")
def _exp_nonpositive_overload(t):
    if t == types.float32:
        return _exp_nonpositive_f32
    if t == types.float64:
        return _exp_f64
    return None


def _tanh_f32(y):
    a = math.fabs(y)
    # |y| < 0.625: Cephes tanhf odd polynomial; otherwise through e^{-2|y|} in (0, 0.29].
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
    return select(y != y, y, copysign(magnitude, y))


def _tanh_f64(y):
    return math.tanh(y)


@overload(tanh, inline="always")
def _tanh_overload(y):
    if y == types.float32:
        return _tanh_f32
    if y == types.float64:
        return _tanh_f64
    return None
