"""The backward's product of a kept gradient and the incoming gradient: in place, no value read on the host."""

from __future__ import annotations

import pytest
import torch

from crossentropy.torch._autograd import scaled
from tests._support import triton_devices

DEVICES = triton_devices()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("factor", [1.0, 0.25, -3.0, float("inf")])
def test_scale_unless_one_multiplies_in_place(device, dtype, factor):
    from crossentropy.kernels.triton import scale_unless_one

    grad = torch.randn(3, 5000, dtype=torch.float64).to(device=device, dtype=dtype)
    expected = (grad.to(torch.float64 if dtype == torch.float64 else torch.float32) * factor).to(dtype)
    result = scale_unless_one(grad, torch.tensor(factor, device=device))
    assert result is grad
    # float32/float64 exactly; half precision within one rounding (Triton's interpreter may round a
    # float32 product to bfloat16 by another rule than PyTorch's).
    exact = {"rtol": 0, "atol": 0} if dtype in (torch.float32, torch.float64) else {}
    torch.testing.assert_close(grad, expected, equal_nan=True, **exact)


@pytest.mark.parametrize("device", DEVICES)
def test_each_program_strides_over_several_blocks(device, monkeypatch):
    from crossentropy.kernels.triton import _scale

    monkeypatch.setattr(_scale, "MAX_PROGRAMS", 2)  # 5 blocks of 4096 on 2 programs: 3 and 2 blocks each
    grad = torch.randn(5 * _scale.BLOCK - 7, dtype=torch.float64, device=device)
    expected = grad * 0.5
    _scale.scale_unless_one(grad, torch.tensor(0.5, device=device))
    torch.testing.assert_close(grad, expected, rtol=0, atol=0)


@pytest.mark.parametrize("device", DEVICES)
def test_scale_unless_one_refuses_what_it_cannot_scale_in_place(device):
    from crossentropy.kernels.triton import scale_unless_one

    with pytest.raises(ValueError, match="`grad` must be contiguous"):
        scale_unless_one(torch.zeros(4, 6, device=device).T, torch.tensor(2.0, device=device))
    with pytest.raises(ValueError, match="`factor` one element"):
        scale_unless_one(torch.zeros(4, 6, device=device), torch.ones(2, device=device))


def test_scaling_a_device_gradient_reads_no_value_on_the_host():
    """A meta tensor has no values to read: scaling one succeeds only if nothing compares it with 1 on the host."""
    grad = torch.empty(4, 6, device="meta")
    assert scaled(grad, torch.ones((), device="meta")) is grad


def test_scaling_a_host_gradient_by_one_leaves_it_untouched():
    grad = torch.tensor([[1.0, -2.0]])
    assert scaled(grad, torch.ones(())) is grad
    assert grad.tolist() == [[1.0, -2.0]]
    assert scaled(grad, torch.tensor(3.0)).tolist() == [[3.0, -6.0]]
