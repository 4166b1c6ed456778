"""The fused sigmoid cross-entropy kernel against the generic array-API path (the reference).

The generic path is checked against PyTorch's ``binary_cross_entropy_with_logits`` in
``test_losses_torch.py``. Here the kernel must reproduce it, within the tolerance of the dtype,
for every layout of the options (scalar, per class, full, per sample, per element), every
reduction, inputs longer than a kernel row, and the edge cases (logits of ±1e4, ±inf, NaN).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import crossentropy as ce
from crossentropy.kernels.numba._math import log1p_unit
from tests._support import assert_matches, both_paths, tolerance

RNG = np.random.default_rng(47)
DTYPES = [np.float32, np.float64]
# 0-d, 1-D longer than a kernel row (8192), 2-D with few and with many classes, 3-D.
SHAPES = [(), (20_000,), (6, 3), (3, 9000), (4, 3, 5)]
OPTIONS = [
    {},
    {"weight": "class"},
    {"weight": "full"},
    {"weight": "scalar"},
    {"pos_weight": "class"},
    {"pos_weight": "full"},
    {"pos_weight": "scalar"},
    {"label_smoothing": 0.2},
    {"sample_weight": "leading"},
    {"sample_weight": "every"},
    {"weight": "class", "pos_weight": "class", "sample_weight": "leading", "label_smoothing": 0.1},
    {"weight": "full", "pos_weight": "scalar", "sample_weight": "every"},
]


def _option(kind: str, shape: tuple[int, ...], dtype, *, low: float = 0.0) -> np.ndarray:
    if kind == "scalar":
        return np.asarray(RNG.uniform(0.5, 2.0), dtype=dtype)
    if kind == "class":  # one entry per class of the last axis (a scalar for 0-d input)
        return np.asarray(RNG.uniform(low, 2.0, shape[-1:]), dtype=dtype)
    return RNG.uniform(low, 2.0, shape).astype(dtype)


def _resolve(options: dict, shape: tuple[int, ...], dtype) -> dict:
    resolved = dict(options)
    for name in ("weight", "pos_weight"):
        if name in options:
            resolved[name] = _option(options[name], shape, dtype)
    if options.get("sample_weight") == "leading":
        resolved["sample_weight"] = RNG.uniform(0.0, 2.0, shape[:1]).astype(dtype) if shape else None
    elif options.get("sample_weight") == "every":
        resolved["sample_weight"] = RNG.uniform(0.0, 2.0, shape).astype(dtype) if shape else None
    return resolved


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: "+".join(f"{k}={v}" for k, v in o.items()) or "plain")
def test_kernel_matches_reference(dtype, shape, options):
    logits = (RNG.standard_normal(shape) * 4).astype(dtype)
    targets = RNG.uniform(0, 1, shape).astype(dtype)
    resolved = _resolve(options, shape, dtype)
    for reduction in ("mean", "sum", "none"):
        what = f"{shape} {options} {reduction}"
        kernel, reference = both_paths(
            ce.sigmoid_cross_entropy_with_grad, logits, targets, reduction=reduction, **resolved
        )
        assert_matches(kernel, reference, dtype, what)
        forward, _ = both_paths(ce.sigmoid_cross_entropy, logits, targets, reduction=reduction, **resolved)
        assert_matches(forward, reference[0], dtype, what + " (forward only)")


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_extreme_and_infinite_logits(dtype):
    logits = np.array([1e4, -1e4, np.inf, -np.inf, np.inf, -np.inf, 0.0, 88.0, -104.0], dtype=dtype)
    targets = np.array([1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.5, 0.0, 1.0], dtype=dtype)
    kernel, reference = both_paths(ce.sigmoid_cross_entropy_with_grad, logits, targets, reduction="none")
    assert_matches(kernel, reference, dtype, "extreme")
    loss, grad = kernel
    # Confident and right costs nothing; confident and wrong costs |x|, or infinity at infinite logits.
    assert loss[[0, 1, 2, 3]].tolist() == [0.0, 0.0, 0.0, 0.0]
    assert np.isinf(loss[4])
    assert np.isinf(loss[5])
    assert grad[[2, 3]].tolist() == [0.0, 0.0]
    assert grad[[4, 5]].tolist() == [1.0, -1.0]
    np.testing.assert_allclose(loss[7], 88.0, rtol=tolerance(dtype)["rtol"])


def test_nan_logit_propagates_to_its_element_only():
    logits = np.array([0.5, np.nan, -2.0], dtype=np.float32)
    targets = np.array([1.0, 0.0, 1.0], dtype=np.float32)
    loss, grad = ce.sigmoid_cross_entropy_with_grad(logits, targets, reduction="none")
    assert np.isnan(loss[1])
    assert np.isnan(grad[1])
    assert np.all(np.isfinite(loss[[0, 2]]))
    assert np.all(np.isfinite(grad[[0, 2]]))


def test_zero_weight_silences_an_infinite_loss():
    logits = np.array([-np.inf, 1.0], dtype=np.float32)
    targets = np.array([1.0, 1.0], dtype=np.float32)
    weight = np.array([0.0, 1.0], dtype=np.float32)
    loss, grad = ce.sigmoid_cross_entropy_with_grad(logits, targets, weight=weight, reduction="sum")
    assert np.isfinite(loss)
    assert grad[0] == 0.0


def test_half_precision_input_runs_on_the_kernel_and_returns_half():
    logits = (RNG.standard_normal((5, 7)) * 3).astype(np.float16)
    targets = RNG.uniform(0, 1, (5, 7)).astype(np.float16)
    pos_weight = RNG.uniform(0.5, 2, 7).astype(np.float16)
    kernel, reference = both_paths(ce.sigmoid_cross_entropy_with_grad, logits, targets, pos_weight=pos_weight)
    assert_matches(kernel, reference, np.float16, "float16")


def test_matches_torch_on_a_large_multilabel_batch():
    """An external oracle at a size where every row of the kernel is full."""
    logits = (RNG.standard_normal((64, 5000)) * 3).astype(np.float32)
    targets = (RNG.uniform(0, 1, (64, 5000)) < 0.1).astype(np.float32)
    pos_weight = RNG.uniform(0.5, 4, 5000).astype(np.float32)
    loss, grad = ce.sigmoid_cross_entropy_with_grad(logits, targets, pos_weight=pos_weight)
    x = torch.from_numpy(logits).double().requires_grad_()
    expected = torch.nn.functional.binary_cross_entropy_with_logits(
        x, torch.from_numpy(targets).double(), pos_weight=torch.from_numpy(pos_weight).double()
    )
    expected.backward()
    np.testing.assert_allclose(loss, expected.item(), **tolerance(np.float32))
    np.testing.assert_allclose(grad, x.grad.numpy(), rtol=1e-5, atol=1e-10)


def test_kernel_does_not_touch_its_inputs():
    logits = RNG.standard_normal((6, 9)).astype(np.float32)
    targets = RNG.uniform(0, 1, (6, 9)).astype(np.float32)
    weight = RNG.uniform(0.5, 1.5, (6, 9)).astype(np.float32)
    pos_weight = RNG.uniform(0.5, 1.5, 9).astype(np.float32)
    sample_weight = RNG.uniform(0.5, 1.5, 6).astype(np.float32)
    given = (logits, targets, weight, pos_weight, sample_weight)
    copies = [a.copy() for a in given]
    ce.sigmoid_cross_entropy_with_grad(
        logits, targets, weight=weight, pos_weight=pos_weight, sample_weight=sample_weight, label_smoothing=0.1
    )
    for original, copy in zip(given, copies, strict=True):
        np.testing.assert_array_equal(original, copy)


def test_float32_log1p_is_accurate_to_two_ulps():
    from numba import njit

    @njit
    def apply(values, out):
        for i in range(values.shape[0]):
            out[i] = log1p_unit(values[i])

    e = np.concatenate([np.linspace(0, 1, 400_001), np.geomspace(1e-38, 1, 20_001)]).astype(np.float32)
    out = np.empty_like(e)
    apply(e, out)
    expected = np.log1p(e.astype(np.float64))
    assert out[e == 0].tolist() == [0.0] * int(np.sum(e == 0))
    positive = expected > 0
    relative = np.abs(out[positive] - expected[positive]) / expected[positive]
    assert relative.max() <= 2 * np.finfo(np.float32).eps
