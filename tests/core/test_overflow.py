"""Losses near the largest float: no ``inf`` where the exact answer fits in the dtype.

Logits of ±3e38 in float32 (±1e308 in float64) with soft targets, label smoothing or a mean
over several large losses: the difference of two logits of opposite signs, or the sum of two
large losses, passes the dtype's largest number, while the loss itself (a fraction of that
difference, or a mean) fits. Every case is computed exactly in Python floats and checked on the
kernels, the generic array-API path and the PyTorch layer (with and without autograd), loss and
gradient.
"""

from __future__ import annotations

import numpy as np
import pytest

import crossentropy as ce
from crossentropy import kernels
from crossentropy.kernels.numba._softmax import BLOCK
from tests._support import TORCH_INSTALLED, assert_close, requires_torch, torch

if TORCH_INSTALLED:  # the PyTorch paths skip without it (the core suite runs without PyTorch)
    import crossentropy.torch as cet

# Logit magnitude per dtype: the difference of two opposite logits (2B) passes the largest number.
BIG = {np.float32: 3e38, np.float64: 1e308}
DTYPES = [np.float32, np.float64]
# NumPy through the kernels and the generic path; PyTorch CPU tensors through crossentropy.torch
# without autograd (the kernels), with autograd (the fused autograd function), and with the
# kernels switched off (PyTorch's autograd through the generic path).
PATHS = [
    "kernels",
    "generic",
    *(pytest.param(path, marks=requires_torch) for path in ("torch", "torch-autograd", "torch-generic")),
]


def _big(dtype) -> float:
    """The logit magnitude B as the dtype stores it, as a Python float (exact)."""
    return float(dtype(BIG[dtype]))


def _softmax(path, logits, targets, **options):
    """``(loss, gradient)`` of the softmax cross-entropy on ``path`` (gradient None where not computed)."""
    if path in ("kernels", "generic"):
        if path == "generic":
            with kernels.disabled():
                return ce.softmax_cross_entropy_with_grad(logits, targets, **options)
        return ce.softmax_cross_entropy_with_grad(logits, targets, **options)
    torch_options = {k: _tensor(v) for k, v in options.items()}
    return _through_torch(path, lambda x: cet.cross_entropy(x, _tensor(targets), **torch_options), logits)


def _sigmoid(path, logits, targets, **options):
    if path in ("kernels", "generic"):
        if path == "generic":
            with kernels.disabled():
                return ce.sigmoid_cross_entropy_with_grad(logits, targets, **options)
        return ce.sigmoid_cross_entropy_with_grad(logits, targets, **options)
    torch_options = {k: _tensor(v) for k, v in options.items()}
    return _through_torch(
        path, lambda x: cet.binary_cross_entropy_with_logits(x, _tensor(targets), **torch_options), logits
    )


def _tensor(value):
    return torch.from_numpy(np.ascontiguousarray(value)) if isinstance(value, np.ndarray) else value


def _through_torch(path, loss_of, logits):
    x = torch.from_numpy(logits.copy())
    if path == "torch":
        return loss_of(x), None
    x.requires_grad_(True)
    if path == "torch-generic":
        with kernels.disabled():
            loss = loss_of(x)
    else:
        loss = loss_of(x)
    (loss.sum() if loss.ndim else loss).backward()
    return loss.detach(), x.grad


def _check(result, loss, grad, dtype, what):
    got_loss, got_grad = result
    assert np.all(np.isfinite(np.asarray(got_loss, dtype=np.float64))), f"{what}: loss {got_loss}"
    assert_close(got_loss, np.asarray(loss), dtype, err_msg=f"{what}: loss")
    if got_grad is not None:
        assert_close(got_grad, np.asarray(grad), dtype, err_msg=f"{what}: gradient")


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("path", PATHS)
def test_soft_targets_of_opposite_logits(path, dtype):
    """Logits [B, -B], targets [0.7, 0.3]: the loss is 0.3 * 2B (1.8e38 in float32), not inf.

    Two such rows: each loss fits and so does their mean, while their sum does not.
    """
    big = _big(dtype)
    logits = np.array([[big, -big], [big, -big]], dtype)
    targets = np.array([[0.7, 0.3], [0.7, 0.3]], dtype)
    t0, t1 = (float(dtype(v)) for v in (0.7, 0.3))
    loss = t1 * 2 * big  # lse = B exactly: exp(-2B) vanishes
    grad = np.array([[1 - t0, -t1], [1 - t0, -t1]]) / 2
    _check(_softmax(path, logits, targets), loss, grad, dtype, f"soft targets, {path}")
    per_sample = _softmax(path, logits, targets, reduction="none")
    _check(per_sample, [loss, loss], grad * 2, dtype, f"soft targets, none, {path}")


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("path", PATHS)
def test_soft_targets_with_the_maximum_in_a_later_block(path, dtype):
    """The running maximum jumps from -B to B between kernel blocks: the sums re-referenced to it stay finite."""
    big = _big(dtype)
    n_classes = BLOCK + 10
    logits = np.full((1, n_classes), -big, dtype)
    logits[0, BLOCK + 3] = big
    targets = np.zeros((1, n_classes), dtype)
    targets[0, 0], targets[0, BLOCK + 3] = 0.3, 0.7
    t0 = float(dtype(0.3))
    grad = np.zeros((1, n_classes))
    grad[0, 0], grad[0, BLOCK + 3] = -t0, 1 - float(dtype(0.7))
    _check(_softmax(path, logits, targets), t0 * 2 * big, grad, dtype, f"soft targets, two blocks, {path}")


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("n_classes", [2, 3 * BLOCK + 5])
def test_label_smoothing_of_opposite_logits(path, dtype, n_classes):
    """Logits B (the target) and -B elsewhere, smoothing 0.1: the loss is 0.1 (C-1)/C 2B, not inf.

    With many classes even the half-differences summed over the row pass the largest number; the
    target sits in a later block than the first, so the maximum moves from -B to B on the way.
    """
    big = _big(dtype)
    target = 0 if n_classes == 2 else 2 * BLOCK + 1
    logits = np.full((1, n_classes), -big, dtype)
    logits[0, target] = big
    floor = 0.1 / n_classes
    loss = floor * (n_classes - 1) * 2 * big
    grad = np.full((1, n_classes), -floor)
    grad[0, target] = 1 - (0.9 + floor)
    _check(_softmax(path, logits, np.array([target]), label_smoothing=0.1), loss, grad, dtype, f"smoothing, {path}")


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("path", PATHS)
def test_label_smoothing_with_class_weights(path, dtype):
    """Class weights (a second pass over the row): logits [B, -B, -B], target 0, eps 0.3: 0.1 (0.5 + 2) 2B."""
    big = _big(dtype)
    logits = np.array([[big, -big, -big]], dtype)
    weight = np.array([1.0, 0.5, 2.0], dtype)
    floor = 0.3 / 3
    loss = floor * (0.5 + 2.0) * 2 * big  # the weighted mean divides by w_0 = 1
    a = 0.7 * np.array([1.0, 0.0, 0.0]) + floor * weight.astype(np.float64)
    grad = a.sum() * np.array([1.0, 0.0, 0.0]) - a
    result = _softmax(path, logits, np.array([0]), weight=weight, label_smoothing=0.3)
    _check(result, loss, grad[None, :], dtype, f"weighted smoothing, {path}")


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("path", PATHS)
def test_label_smoothing_with_the_target_on_the_low_logit(path, dtype):
    """Logits [B, -0.8 B], target 1, eps 0.9: (0.1 + 0.45) 1.8 B fits although lse - x_1 = 1.8 B does not."""
    big = _big(dtype)
    logits = np.array([[big, -0.8 * big]], dtype)
    loss = 0.55 * big + 0.55 * -float(dtype(-0.8 * big))  # 0.55 (lse - x_1), the gap summed after scaling
    grad = np.array([[1.0 - 0.45, -0.55]])
    result = _softmax(path, logits, np.array([1]), label_smoothing=0.9)
    _check(result, loss, grad, dtype, f"smoothing, low target, {path}")


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("path", PATHS)
def test_mean_of_index_targets_whose_sum_overflows(path, dtype):
    """Two rows whose losses are each about B: their mean fits, their sum does not."""
    big = _big(dtype)
    logits = np.array([[big, 0.0], [big, 0.0]], dtype)
    loss = big  # target 1 on the logit 0: lse - 0 = B
    grad = np.array([[0.5, -0.5], [0.5, -0.5]])
    _check(_softmax(path, logits, np.array([1, 1])), loss, grad, dtype, f"index mean, {path}")


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("size", [4, 3 * 8192 + 4])
def test_sigmoid_mean_whose_sum_overflows(path, dtype, size):
    """Logits [-B, -B, B, B, ...] with targets 1: losses [B, B, 0, 0, ...]; the mean B/2 (1.5e38) fits.

    With more elements than a kernel row holds, the large losses sit in one row and their sum
    overflows inside it.
    """
    big = _big(dtype)
    logits = np.full(size, big, dtype)
    logits[:2] = -big
    targets = np.ones(size, dtype)
    grad = np.zeros(size)
    grad[:2] = -1.0 / size
    _check(_sigmoid(path, logits, targets), big * (2 / size), grad, dtype, f"sigmoid mean, {path}")


@pytest.mark.parametrize("path", PATHS)
def test_sigmoid_mean_with_sample_weights(path):
    """Sample weights (one kernel row a sample) enter the mean's denominator: losses B weighted 1 and 0.5 give B."""
    big = _big(np.float32)
    logits = np.full((2, 2), -big, np.float32)
    targets = np.ones((2, 2), np.float32)
    sample_weight = np.array([1.0, 0.5], np.float32)
    grad = -np.array([[1.0, 1.0], [0.5, 0.5]]) / 3  # the denominator: 2 elements * total weight 1.5
    result = _sigmoid(path, logits, targets, sample_weight=sample_weight)
    _check(result, big, grad, np.float32, f"sigmoid sample weights, {path}")


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_a_sum_past_the_largest_number_is_still_inf(dtype):
    """Only where the exact answer fits: the sum of two losses of B each is 2B, which does not."""
    big = _big(dtype)
    logits = np.array([[big, 0.0], [big, 0.0]], dtype)
    for path in ("kernels", "generic"):
        loss, grad = _softmax(path, logits, np.array([1, 1]), reduction="sum")
        assert np.isinf(loss), path
        assert np.all(np.isfinite(grad)), path
        loss, _ = _sigmoid(path, np.array([-big, -big], dtype), np.ones(2, dtype), reduction="sum")
        assert np.isinf(loss), path


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("n_classes", [2, 3 * BLOCK + 5])
@requires_torch
def test_label_smoothing_with_the_gradient_written_over_the_logits(dtype, n_classes):
    """In place (``inplace=True``) the row is overwritten as it is read: its sums are scaled from the start."""
    big = _big(dtype)
    target = 0 if n_classes == 2 else 2 * BLOCK + 1
    logits = np.full((1, n_classes), -big, dtype)
    logits[0, target] = big
    floor = 0.1 / n_classes
    x = torch.from_numpy(logits.copy()).requires_grad_(True)
    loss = cet.cross_entropy(x, torch.tensor([target]), label_smoothing=0.1, inplace=True)
    assert_close(loss.detach(), np.asarray(floor * (n_classes - 1) * 2 * big), dtype, err_msg="in place")
    loss.backward()
    grad = np.full((1, n_classes), -floor)
    grad[0, target] = 1 - (0.9 + floor)
    assert_close(x.grad, grad, dtype, err_msg="in place")
