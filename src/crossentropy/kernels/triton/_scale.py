r"""Scaling a gradient the kernels computed by the incoming gradient of the loss, on the device, in place.

A fused loss computes its gradient in the forward pass; the backward multiplies it by the
incoming gradient :math:`\bar\ell` of the loss, which is 1 for the usual ``loss.backward()``.
On the host the factor is compared with 1 and the multiplication skipped: no pass over the
gradient. On a GPU that comparison would read the factor back to the host and make it wait for
every kernel queued before it; multiplying unconditionally would cost a pass over the whole N×V
gradient. :func:`scale_unless_one` does neither: each program of the kernel reads the factor on
the device and returns at once when it is 1, so the usual backward costs one launch.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import interpreter_errstate

__all__ = ["scale_unless_one"]

BLOCK = 4096


# At most this many programs, each striding over blocks: when the factor is 1 the launch costs
# about as much as an empty kernel, however large the gradient.
MAX_PROGRAMS = 1024


@triton.jit
def _scale_unless_one_kernel(grad_ptr, factor_ptr, size, n_blocks, BLOCK: tl.constexpr):
    factor = tl.load(factor_ptr)  # float32, or float64 for a float64 gradient
    if factor != 1.0:
        for block in range(tl.program_id(0), n_blocks, tl.num_programs(0)):
            offsets = tl.cast(block, tl.int64) * BLOCK + tl.arange(0, BLOCK)
            mask = offsets < size
            values = tl.load(grad_ptr + offsets, mask=mask)
            scaled = values.to(factor.dtype) * factor
            tl.store(grad_ptr + offsets, scaled.to(values.dtype), mask=mask)


def scale_unless_one(grad: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Multiply the contiguous tensor ``grad`` in place by the one-element tensor ``factor``, unless it is 1.

    Parameters
    ----------
    grad : Tensor
        Contiguous, on the device of the kernels (any floating dtype; half precision is multiplied
        in float32 and rounded once).
    factor : Tensor with one element
        On the same device; read there, never on the host.

    Returns
    -------
    Tensor
        ``grad`` itself.
    """
    if not grad.is_contiguous() or factor.numel() != 1 or factor.device != grad.device:
        raise ValueError(
            "`grad` must be contiguous and `factor` one element on its device; got "
            f"strides {grad.stride()}, factor of shape {tuple(factor.shape)} on {factor.device}"
        )
    size = grad.numel()
    if size:
        factor = factor.reshape(1)
        factor = factor.to(torch.float64 if grad.dtype == torch.float64 else torch.float32)
        with interpreter_errstate():
            n_blocks = triton.cdiv(size, BLOCK)
            _scale_unless_one_kernel[(min(n_blocks, MAX_PROGRAMS),)](
                grad.view(-1), factor, size, n_blocks, BLOCK=BLOCK, enable_fp_fusion=True
            )
    return grad
