"""Tests of crossentropy.weights: class_weights, one_hot, smooth_labels.

Oracles: scikit-learn's compute_class_weight, torch.nn.functional.one_hot, PyTorch's
cross-entropy with label_smoothing, formulas written out with NumPy, hand-computed constants
and hypothesis properties.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.utils.class_weight import compute_class_weight

from crossentropy.weights import class_weights, one_hot, smooth_labels
from tests._support import BACKENDS, F, requires_torch, torch, torch_params

# ----------------------------------------------------------------------------------------------
# class_weights
# ----------------------------------------------------------------------------------------------


def test_balanced_equals_sklearn_exactly():
    rng = np.random.default_rng(0)
    labels = rng.choice(5, size=1000, p=[0.5, 0.2, 0.15, 0.1, 0.05])
    expected = compute_class_weight("balanced", classes=np.arange(5), y=labels)
    out = class_weights(labels)
    assert isinstance(out, np.ndarray)
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, expected)


@requires_torch
def test_balanced_torch_matches_sklearn():
    rng = np.random.default_rng(1)
    labels = rng.choice(4, size=300, p=[0.7, 0.1, 0.1, 0.1])
    expected = compute_class_weight("balanced", classes=np.arange(4), y=labels)
    out = class_weights(torch.from_numpy(labels))
    assert isinstance(out, torch.Tensor)
    assert out.dtype == torch.get_default_dtype()
    torch.testing.assert_close(out.double(), torch.from_numpy(expected), rtol=1.2e-7, atol=0)


def test_balanced_hand_constants_and_any_shape():
    labels = np.array([[0, 0], [0, 1]])  # every entry counts: n = 4
    np.testing.assert_allclose(class_weights(labels), [4 / 6, 2.0], rtol=1e-15)


@pytest.mark.parametrize("backend", BACKENDS)
def test_inverse_frequency(backend):
    labels = np.array([0, 0, 0, 1, 2, 2])
    x = torch.from_numpy(labels) if backend == "torch" else labels
    out = class_weights(x, scheme="inverse_frequency")
    # 1/3 : 1 : 1/2, scaled to sum to 3: total 11/6 -> factor 18/11.
    expected = np.array([1 / 3, 1.0, 0.5]) * 18 / 11
    rtol = 1e-15 if backend == "numpy" else 2e-7
    np.testing.assert_allclose(np.asarray(out), expected, rtol=rtol)
    np.testing.assert_allclose(float(np.asarray(out).sum()), 3.0, rtol=rtol)


def effective_number_reference(counts, beta):
    w = (1 - beta) / (1 - np.power(beta, counts.astype(np.float64)))
    return w * len(counts) / w.sum()


@pytest.mark.parametrize("beta", [0.0, 0.5, 0.9, 0.999, 0.9999])
def test_effective_number_vs_formula(beta):
    rng = np.random.default_rng(2)
    labels = rng.choice(4, size=2000, p=[0.85, 0.1, 0.04, 0.01])
    counts = np.bincount(labels, minlength=4)
    out = class_weights(labels, scheme="effective_number", beta=beta)
    np.testing.assert_allclose(out, effective_number_reference(counts, beta), rtol=1e-10)
    np.testing.assert_allclose(out.sum(), 4.0, rtol=1e-14)


def test_effective_number_limits():
    labels = np.array([0] * 90 + [1] * 10)
    # beta = 0: every class has effective number 1 -> equal weights.
    np.testing.assert_array_equal(class_weights(labels, scheme="effective_number", beta=0.0), [1.0, 1.0])
    # beta -> 1: tends to inverse frequency (here 0.2 and 1.8).
    near_one = class_weights(labels, scheme="effective_number", beta=1 - 1e-12)
    np.testing.assert_allclose(near_one, class_weights(labels, scheme="inverse_frequency"), rtol=1e-8)
    np.testing.assert_allclose(near_one, [0.2, 1.8], rtol=1e-8)
    # In between it is strictly between the two.
    mid = class_weights(labels, scheme="effective_number", beta=0.99)
    assert 0.2 < mid[0] < 1.0 < mid[1] < 1.8


@requires_torch
def test_effective_number_torch():
    labels = torch.tensor([0, 0, 0, 0, 1, 2, 2])
    out = class_weights(labels, scheme="effective_number", beta=0.9)
    expected = effective_number_reference(np.array([4, 1, 2]), 0.9)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), torch.from_numpy(expected), rtol=2e-6, atol=0)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 4), min_size=1, max_size=60), st.floats(0.0, 0.9999))
def test_class_weights_properties(values, beta):
    labels = np.array(values)
    c = int(labels.max()) + 1
    if len(np.unique(labels)) < c:
        with pytest.raises(ValueError, match="got no samples of class"):
            class_weights(labels)
        return
    counts = np.bincount(labels)
    for scheme in ("inverse_frequency", "effective_number"):
        w = class_weights(labels, scheme=scheme, beta=beta)
        np.testing.assert_allclose(w.sum(), c, rtol=1e-12)
        # Rarer classes never get less weight.
        order = np.argsort(counts, kind="stable")
        assert np.all(np.diff(w[order]) <= 1e-12 * c)
    # Balanced weights make every class's total weight n / C.
    w = class_weights(labels)
    np.testing.assert_allclose(w * counts, len(labels) / c, rtol=1e-12)


def test_class_weights_bad_input():
    with pytest.raises(
        ValueError, match=r"`labels` must contain every class in \[0, 4\).*got no samples of class 1, 3"
    ):
        class_weights(np.array([0, 2, 2]), num_classes=4)
    with pytest.raises(ValueError, match=r"`labels` must be class indices in \[0, 3\); got -1 at index \(1,\)"):
        class_weights(np.array([0, -1, 2]))
    with pytest.raises(ValueError, match=r"`labels` must be class indices in \[0, 2\); got 2"):
        class_weights(np.array([0, 1, 2]), num_classes=2)
    with pytest.raises(TypeError, match="`labels` must be integer class indices; got dtype float64"):
        class_weights(np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="`labels` must not be empty"):
        class_weights(np.zeros(0, dtype=int))
    with pytest.raises(ValueError, match="`scheme` must be one of 'balanced', 'inverse_frequency', 'effective_number'"):
        class_weights(np.array([0, 1]), scheme="sqrt")
    with pytest.raises(ValueError, match=r"`beta` must be in \[0, 1\); got 1.0"):
        class_weights(np.array([0, 1]), scheme="effective_number", beta=1.0)
    with pytest.raises(ValueError, match="`num_classes` must be >= 1; got 0"):
        class_weights(np.array([0, 1]), num_classes=0)
    with pytest.raises(TypeError, match="`num_classes` must be an integer"):
        class_weights(np.array([0, 1]), num_classes=2.0)


# ----------------------------------------------------------------------------------------------
# one_hot
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_classes", [None, -1, 6])
@requires_torch
def test_one_hot_vs_torch(num_classes):
    labels = torch.tensor([[0, 3, 1], [4, 4, 2]])
    out = one_hot(labels, num_classes) if num_classes is not None else one_hot(labels)
    expected = F.one_hot(labels, num_classes if num_classes is not None else -1)
    assert out.dtype == torch.get_default_dtype()
    assert out.shape == expected.shape
    assert torch.equal(out, expected.to(out.dtype))
    # With dtype=int64 it is torch's result exactly.
    exact = one_hot(labels, num_classes=num_classes, dtype=torch.int64)
    assert exact.dtype == torch.int64
    assert torch.equal(exact, expected)


def test_one_hot_numpy():
    out = one_hot(np.array([2, 0]), 4)
    assert isinstance(out, np.ndarray)
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, [[0, 0, 1, 0], [1, 0, 0, 0]])
    np.testing.assert_array_equal(one_hot(np.array(1), 3), [0.0, 1.0, 0.0])  # 0-d labels
    assert one_hot(np.array([1]), dtype=np.float32).dtype == np.float32


@requires_torch
def test_one_hot_bad_input():
    with pytest.raises(ValueError, match=r"`labels` must be class indices in \[0, 3\); got 3 at index \(1,\)"):
        one_hot(np.array([0, 3]), 3)
    with pytest.raises(ValueError, match=r"`labels` must be class indices in \[0, 2\); got -2"):
        one_hot(torch.tensor([1, -2]))
    with pytest.raises(TypeError, match="`labels` must be integer class indices; got boolean"):
        one_hot(np.array([True, False]))
    with pytest.raises(ValueError, match="`num_classes` must be >= 1; got 0"):
        one_hot(np.array([0]), 0)
    with pytest.raises(ValueError, match="`labels` must not be empty"):
        one_hot(np.zeros(0, dtype=int), 3)


# ----------------------------------------------------------------------------------------------
# smooth_labels
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.35, 1.0])
@pytest.mark.parametrize("dtype", torch_params("float32", "float64"))
def test_smoothed_cross_entropy_equals_torch_label_smoothing(eps, dtype):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(8, 5, generator=g, dtype=dtype) * 3
    y = torch.randint(0, 5, (8,), generator=g)
    targets = smooth_labels(y, num_classes=5, smoothing=eps, dtype=dtype)
    assert targets.dtype == dtype
    ce = -(targets * torch.log_softmax(x, dim=-1)).sum(dim=-1).mean()
    expected = F.cross_entropy(x, y, label_smoothing=eps)
    tol = {"rtol": 1e-12, "atol": 1e-12} if dtype == torch.float64 else {"rtol": 1e-5, "atol": 1e-6}
    torch.testing.assert_close(ce, expected, **tol)


@requires_torch
def test_smooth_labels_integer_constants():
    out = smooth_labels(np.array([0, 2]), num_classes=4, smoothing=0.2)
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, [[0.85, 0.05, 0.05, 0.05], [0.05, 0.05, 0.85, 0.05]], rtol=1e-15)
    t = smooth_labels(torch.tensor([1]), num_classes=3, smoothing=0.3)
    assert t.dtype == torch.get_default_dtype()
    torch.testing.assert_close(t, torch.tensor([[0.1, 0.8, 0.1]]))
    t = smooth_labels(torch.tensor([1]), num_classes=3, smoothing=0.3, dtype=torch.float64)
    assert t.dtype == torch.float64
    torch.testing.assert_close(t, torch.tensor([[0.1, 0.8, 0.1]], dtype=torch.float64), rtol=1e-15, atol=1e-16)
    f32 = smooth_labels(np.array([[0.5, 0.5]]), smoothing=0.5, dtype=np.float32)
    assert f32.dtype == np.float32
    np.testing.assert_array_equal(f32, [[0.5, 0.5]])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_smooth_labels_probability_targets(backend, dtype):
    rng = np.random.default_rng(4)
    t = rng.dirichlet(np.ones(6), size=(2, 3)).astype(dtype)
    x = torch.from_numpy(t) if backend == "torch" else t
    out = smooth_labels(x, smoothing=0.25)
    assert type(out) is type(x)
    assert out.dtype == x.dtype
    expected = 0.75 * t.astype(np.float64) + 0.25 / 6
    out_np = out.numpy() if backend == "torch" else out
    tol = {"rtol": 1e-15, "atol": 1e-16} if dtype == np.float64 else {"rtol": 1e-6, "atol": 1e-7}
    np.testing.assert_allclose(out_np, expected, **tol)
    np.testing.assert_allclose(out_np.sum(axis=-1), 1.0, **tol)
    # A one-hot row gives the integer-target result.
    onehot = np.eye(6, dtype=dtype)[[3]]
    np.testing.assert_allclose(
        smooth_labels(onehot, num_classes=6, smoothing=0.25),
        smooth_labels(np.array([3]), num_classes=6, smoothing=0.25),
        **tol,
    )


@requires_torch
def test_smooth_labels_half_and_autograd():
    t = torch.tensor([[0.5, 0.25, 0.25]], dtype=torch.float16)
    out = smooth_labels(t, smoothing=0.3)
    assert out.dtype == torch.float16
    torch.testing.assert_close(out, (0.7 * t.float() + 0.1).half())
    soft = torch.tensor([[0.2, 0.8]], dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(smooth_labels(soft, smoothing=0.4).sum(), soft)
    torch.testing.assert_close(grad, torch.full_like(soft, 0.6))


def test_smooth_labels_bad_input():
    with pytest.raises(ValueError, match="`num_classes` must be given for integer targets"):
        smooth_labels(np.array([0, 1]))
    with pytest.raises(ValueError, match=r"`smoothing` must be in \[0, 1\]; got 1.5"):
        smooth_labels(np.array([0, 1]), num_classes=2, smoothing=1.5)
    with pytest.raises(ValueError, match=r"`targets` must be class indices in \[0, 2\); got 2"):
        smooth_labels(np.array([0, 2]), num_classes=2)
    with pytest.raises(ValueError, match=r"`num_classes` must equal the probability targets' last axis \(3\); got 4"):
        smooth_labels(np.full((2, 3), 1 / 3), num_classes=4)
    with pytest.raises(ValueError, match=r"`targets` must have rows summing to 1; got a sum of 0\.9"):
        smooth_labels(np.array([[0.5, 0.4]]))
    with pytest.raises(ValueError, match=r"`targets` must contain probabilities in \[0, 1\]; got 1.5"):
        smooth_labels(np.array([[1.5, -0.5]]))
    with pytest.raises(TypeError, match="`targets` must be integer class indices or floating-point"):
        smooth_labels(np.array([True, False]), num_classes=2)
    with pytest.raises(ValueError, match="`targets` must not be empty"):
        smooth_labels(np.zeros((0, 3)))
    with pytest.raises(TypeError, match="`dtype` must be a real floating-point dtype; got int64"):
        smooth_labels(np.array([0, 1]), num_classes=2, dtype=np.int64)
