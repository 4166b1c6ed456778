"""The Triton backend: the softmax and sigmoid cross-entropies as GPU kernels, for PyTorch tensors.

It accepts CUDA tensors of float16, bfloat16, float32 and float64 (accumulated in float32, and
float64 for float64), and under ``TRITON_INTERPRET=1`` CPU tensors too: Triton's interpreter then
runs the very same kernels on the CPU, exactly and slowly, which is how every CI run tests them.
The entry points have the arguments and the semantics of the Numba backend's
(:mod:`crossentropy.kernels.numba`):

- :func:`softmax_cross_entropy_rows` (:mod:`._softmax`): per row, an online log-sum-exp over
  tiles of the vocabulary, then the gradient in a second sweep, written into a new tensor, a
  given one, or over the logits themselves (any dtype and option: each tile is read before it
  is written); forward-only calls allocate O(N).
- :func:`sigmoid_cross_entropy_elements` (:mod:`._sigmoid`): the elementwise loss and gradient,
  reduced on the device.
- :func:`linear_logsumexp` and :func:`linear_cross_entropy_gradients` (:mod:`._linear`): the fused
  linear cross-entropy's primitives, per row the log-sum-exp of the logits of a linear layer and
  the target-weighted sum of them, then the gradients of the input, the weight and the bias, from
  tiles of logits computed on chip (nothing of size N×V is written; gradients added atomically in
  float32).
- :func:`scale_unless_one` (:mod:`._scale`): the backward's product of a kept gradient and the
  incoming gradient, in place, skipped on the device when that is 1.

Nothing in them reads a value back to the host: reductions, denominators and the mean's
overflow rule stay on the device, so a training step is not stalled (the value checks before
them can be switched off too: :func:`crossentropy.checks_disabled`).

Triton is imported when a kernel first runs, not when :mod:`crossentropy` is.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import numpy as np
import torch

__all__ = [
    "INTERPRETED",
    "LOGIT_DTYPES",
    "accepts",
    "interpreted",
    "interpreter_errstate",
    "linear_cross_entropy_gradients",
    "linear_logsumexp",
    "scale_unless_one",
    "sigmoid_cross_entropy_elements",
    "softmax_cross_entropy_rows",
]

# The logits' dtypes the kernels read; they accumulate in float32 (float64 for float64).
LOGIT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def interpreted() -> bool:
    """Whether Triton runs its interpreter (``TRITON_INTERPRET=1``): kernels on the CPU, in NumPy."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "yes", "on")


# As the kernel modules were defined: ``triton.jit`` reads the variable when a kernel is defined, and
# they are imported right after this package.
INTERPRETED = interpreted()


def interpreter_errstate() -> contextlib.AbstractContextManager:
    """NumPy's floating-point warnings off while Triton's interpreter runs the kernels on NumPy arrays.

    The kernels compute with IEEE infinities and NaN on purpose (``inf * 0`` in a branch that a
    ``tl.where`` then discards); a GPU raises nothing there, and NumPy's warnings about the same
    operations say nothing about the results.
    """
    return np.errstate(all="ignore") if INTERPRETED else contextlib.nullcontext()


def accepts(x: Any) -> bool:
    """Whether ``x`` is a PyTorch tensor these kernels read: on a CUDA device (any device under
    :func:`interpreted`, where Triton runs on the CPU), float16, bfloat16, float32 or float64."""
    if not isinstance(x, torch.Tensor):
        return False
    on_device = x.device.type == "cuda" or (x.device.type == "cpu" and interpreted())
    return on_device and x.dtype in LOGIT_DTYPES


def softmax_cross_entropy_rows(*args: Any, **options: Any) -> Any:
    """See :func:`crossentropy.kernels.triton._softmax.softmax_cross_entropy_rows`."""
    from ._softmax import softmax_cross_entropy_rows as rows

    return rows(*args, **options)


def sigmoid_cross_entropy_elements(*args: Any, **options: Any) -> Any:
    """See :func:`crossentropy.kernels.triton._sigmoid.sigmoid_cross_entropy_elements`."""
    from ._sigmoid import sigmoid_cross_entropy_elements as elements

    return elements(*args, **options)


def linear_logsumexp(*args: Any, **options: Any) -> Any:
    """See :func:`crossentropy.kernels.triton._linear.linear_logsumexp`."""
    from ._linear import linear_logsumexp as lse

    return lse(*args, **options)


def linear_cross_entropy_gradients(*args: Any, **options: Any) -> Any:
    """See :func:`crossentropy.kernels.triton._linear.linear_cross_entropy_gradients`."""
    from ._linear import linear_cross_entropy_gradients as gradients

    return gradients(*args, **options)


def scale_unless_one(grad: Any, factor: Any) -> Any:
    """See :func:`crossentropy.kernels.triton._scale.scale_unless_one`."""
    from ._scale import scale_unless_one as scale

    return scale(grad, factor)
