"""The torch layer on the GPU kernels: PyTorch's own losses and gradients, on every device that has them.

The device axis: ``cuda`` on a machine with a CUDA GPU (the Triton backend as it runs in
training), and ``cpu-triton``, the same kernels in Triton's interpreter on CPU tensors with the
backend forced (``TRITON_INTERPRET=1``, which ``conftest.py`` sets without a GPU). Each case is
skipped with its reason where its device is missing. The whole torch suite also runs with the
backend forced: ``CROSSENTROPY_KERNELS=triton python -m pytest tests/torch/test_torch_*.py``.
"""

from __future__ import annotations

import contextlib

import pytest
import torch
import torch.nn.functional as F

import crossentropy as ce
from crossentropy import kernels
from crossentropy import torch as cet
from tests._support import NEEDS_CUDA, tolerance, triton_devices

DEVICES = triton_devices("cpu-triton")


@contextlib.contextmanager
def on(device: str):
    """The torch device to put tensors on, with the Triton backend forced where it would not be chosen."""
    if device == "cuda":
        yield torch.device("cuda")
    else:
        with kernels.backend("triton"):
            yield torch.device("cpu")


def _close(got, want, dtype):
    torch.testing.assert_close(got.float().cpu(), want.float().cpu(), **tolerance(dtype))


def _fused_ran(device_name: str, logits: torch.Tensor) -> None:
    assert kernels.for_torch(logits).name == "triton", device_name


@pytest.mark.parametrize("device_name", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize(
    "options",
    [{}, {"label_smoothing": 0.1}, {"weight": "class", "ignore_index": 2}, {"reduction": "none"}, {"reduction": "sum"}],
    ids=lambda o: "+".join(f"{k}={v}" for k, v in o.items()) or "plain",
)
def test_cross_entropy_matches_pytorch(device_name, dtype, options):
    generator = torch.Generator().manual_seed(5)
    with on(device_name) as device:
        logits = (torch.randn(24, 300, generator=generator) * 3).to(device=device, dtype=dtype)
        target = torch.randint(0, 300, (24,), generator=generator).to(device)
        resolved = dict(options)
        if options.get("weight") == "class":
            resolved["weight"] = (torch.rand(300, generator=generator) + 0.5).to(device=device, dtype=dtype)
        _fused_ran(device_name, logits)
        ours_x, theirs_x = logits.clone().requires_grad_(), logits.clone().requires_grad_()
        ours = cet.cross_entropy(ours_x, target, **resolved)
        theirs = F.cross_entropy(theirs_x, target, **resolved)
        cotangent = torch.rand_like(ours, dtype=torch.float32).to(dtype)
        (ours * cotangent).sum().backward()
        (theirs * cotangent).sum().backward()
    assert ours.dtype == dtype
    _close(ours, theirs, dtype)
    _close(ours_x.grad, theirs_x.grad, dtype)


@pytest.mark.parametrize("device_name", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
def test_inplace_overwrites_the_logits_with_their_gradient(device_name, dtype):
    """On a GPU in place works in half precision too (the CPU kernels refuse it)."""
    if device_name == "cpu-triton" and dtype != torch.float32:
        pytest.skip("the in-place rules follow where the logits live: CPU tensors keep the CPU kernels' float32/64")
    generator = torch.Generator().manual_seed(6)
    with on(device_name) as device:
        hidden = torch.randn(16, 32, generator=generator).to(device=device, dtype=dtype)
        head = (torch.randn(200, 32, generator=generator) / 4).to(device=device, dtype=dtype).requires_grad_()
        target = torch.randint(0, 200, (16,), generator=generator).to(device)
        reference_head = head.detach().clone().requires_grad_()
        F.cross_entropy(hidden @ reference_head.T, target, label_smoothing=0.1).backward()
        cet.cross_entropy(hidden @ head.T, target, label_smoothing=0.1, inplace=True).backward()
    _close(head.grad, reference_head.grad, dtype)


@pytest.mark.parametrize("device_name", DEVICES)
def test_binary_cross_entropy_with_logits_matches_pytorch(device_name):
    generator = torch.Generator().manual_seed(7)
    with on(device_name) as device:
        logits = (torch.randn(8, 50, generator=generator) * 3).to(device)
        target = torch.rand(8, 50, generator=generator).to(device)
        pos_weight = (torch.rand(50, generator=generator) + 0.5).to(device)
        ours_x, theirs_x = logits.clone().requires_grad_(), logits.clone().requires_grad_()
        ours = cet.binary_cross_entropy_with_logits(ours_x, target, pos_weight=pos_weight)
        theirs = F.binary_cross_entropy_with_logits(theirs_x, target, pos_weight=pos_weight)
        ours.backward()
        theirs.backward()
    _close(ours, theirs, torch.float32)
    _close(ours_x.grad, theirs_x.grad, torch.float32)


@pytest.mark.parametrize("device_name", DEVICES)
def test_linear_cross_entropy_matches_the_materialized_logits(device_name):
    generator = torch.Generator().manual_seed(8)
    with on(device_name) as device:
        hidden = torch.randn(20, 16, generator=generator).to(device).requires_grad_()
        head = torch.randn(100, 16, generator=generator).to(device).requires_grad_()
        target = torch.randint(0, 100, (20,), generator=generator).to(device)
        ours = cet.linear_cross_entropy(hidden, head, target, chunk_size=8, label_smoothing=0.1)
        ours_grads = torch.autograd.grad(ours, (hidden, head))
        theirs = F.cross_entropy(hidden @ head.T, target, label_smoothing=0.1)
        theirs_grads = torch.autograd.grad(theirs, (hidden, head))
    _close(ours, theirs, torch.float32)
    for got, want in zip(ours_grads, theirs_grads, strict=True):
        _close(got, want, torch.float32)


@NEEDS_CUDA
def test_a_cuda_training_step_never_waits_for_the_device():
    """Under checks_disabled(), forward and backward of the fused losses make no host synchronization."""
    logits = torch.randn(64, 1000, device="cuda", requires_grad=True)
    target = torch.randint(0, 1000, (64,), device="cuda")
    binary = torch.randn(64, 10, device="cuda", requires_grad=True)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        with ce.checks_disabled():
            loss = cet.cross_entropy(logits, target, label_smoothing=0.1) + cet.binary_cross_entropy_with_logits(
                binary, torch.rand(64, 10, device="cuda")
            )
            loss.backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert logits.grad is not None
    assert binary.grad is not None
