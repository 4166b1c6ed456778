"""Tests of crossentropy.robust: noise-robust and noise-corrected losses.

Oracles: hand-computed constants, the formulas written out here with NumPy/SciPy or torch
operations, PyTorch's cross-entropy (identity transition, q -> 0), finite differences through
torch.autograd.gradcheck, and hypothesis properties (bounds, unbiasedness of backward
correction).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import log_softmax as np_log_softmax

from crossentropy._inputs import ProbabilitiesAsLogitsWarning
from crossentropy.robust import (
    backward_corrected_cross_entropy,
    forward_corrected_cross_entropy,
    generalized_cross_entropy,
    symmetric_cross_entropy,
)
from tests._support import (
    BACKENDS,
    F,
    assert_close,
    requires_torch,
    to_backend,
    to_numpy,
    tolerance,
    torch,
    torch_params,
)

DTYPES = [np.float32, np.float64]


def random_case(rng, n=7, c=4, dtype=np.float64):
    logits = rng.normal(scale=2.0, size=(n, c)).astype(dtype)
    targets = rng.integers(0, c, size=n)
    return logits, targets


def random_transition(rng, c, *, noise=0.3):
    """A diagonally dominant row-stochastic matrix (invertible, well conditioned)."""
    off = rng.uniform(size=(c, c))
    np.fill_diagonal(off, 0.0)
    off = noise * off / off.sum(axis=1, keepdims=True)
    return off + np.diag(np.full(c, 1.0 - noise))


def soft_targets(rng, n, c, dtype=np.float64):
    t = rng.dirichlet(np.ones(c), size=n)
    t[0] = 0.0
    t[0, 1] = 1.0  # one one-hot row, and zeros elsewhere
    return t.astype(dtype)


# ----------------------------------------------------------------------------------------------
# generalized_cross_entropy
# ----------------------------------------------------------------------------------------------


def gce_reference(logits, targets, q):
    log_p = np_log_softmax(logits.astype(np.float64), axis=-1)
    if targets.dtype.kind == "f":
        return np.sum(targets * (1.0 - np.exp(q * log_p)) / q, axis=-1)
    return (1.0 - np.exp(q * log_p[np.arange(len(targets)), targets])) / q


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("q", [0.1, 0.7, 1.0])
def test_gce_matches_formula(backend, dtype, q):
    rng = np.random.default_rng(0)
    logits, targets = random_case(rng, dtype=dtype)
    expected = gce_reference(logits, targets, q)
    x, y = to_backend(logits, backend), to_backend(targets, backend)
    out = generalized_cross_entropy(x, y, q=q, reduction="none")
    assert type(out) is type(x)
    assert out.dtype == x.dtype
    assert tuple(out.shape) == (7,)
    assert_close(out, expected, dtype)
    assert_close(generalized_cross_entropy(x, y, q=q), expected.mean(), dtype)
    assert_close(generalized_cross_entropy(x, y, q=q, reduction="sum"), expected.sum(), dtype)


def test_gce_hand_constants():
    logits = np.log(np.array([[0.25, 0.75], [0.5, 0.5]]))
    out = generalized_cross_entropy(logits, np.array([1, 0]), q=0.5, reduction="none")
    np.testing.assert_allclose(out, [2 * (1 - math.sqrt(0.75)), 2 * (1 - math.sqrt(0.5))], rtol=1e-14)


@requires_torch
def test_gce_small_q_approaches_cross_entropy():
    rng = np.random.default_rng(1)
    logits, targets = random_case(rng)
    x, y = torch.from_numpy(logits), torch.from_numpy(targets)
    ce = F.cross_entropy(x, y, reduction="none").numpy()
    q = 1e-7
    out = generalized_cross_entropy(x, y, q=q, reduction="none").numpy()
    # (1 - exp(-q l)) / q = l - q l^2 / 2 + O(q^2): the gap is q l^2 / 2 to first order.
    np.testing.assert_allclose(out, ce - q * ce**2 / 2, rtol=1e-12)
    assert np.all(np.abs(out - ce) <= q * ce**2)
    # Further from 0 the gap is clearly visible: the test discriminates.
    assert np.max(np.abs(generalized_cross_entropy(x, y, q=0.1, reduction="none").numpy() - ce)) > 1e-3


@pytest.mark.parametrize("backend", BACKENDS)
def test_gce_q1_is_half_mae(backend):
    rng = np.random.default_rng(2)
    logits, targets = random_case(rng)
    p = np.exp(np_log_softmax(logits, axis=-1))
    onehot = np.eye(4)[targets]
    half_mae = 0.5 * np.abs(p - onehot).sum(axis=-1)
    out = generalized_cross_entropy(to_backend(logits, backend), to_backend(targets, backend), q=1.0, reduction="none")
    assert_close(out, 1.0 - p[np.arange(7), targets], np.float64)
    assert_close(out, half_mae, np.float64)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_gce_soft_targets(backend, dtype):
    rng = np.random.default_rng(3)
    logits, _ = random_case(rng, dtype=dtype)
    t = soft_targets(rng, 7, 4, dtype)
    out = generalized_cross_entropy(to_backend(logits, backend), to_backend(t, backend), q=0.7, reduction="none")
    assert_close(out, gce_reference(logits, t.astype(np.float64), 0.7), dtype)
    # A one-hot probability row equals the index target.
    index = generalized_cross_entropy(logits[:1], np.array([1]), q=0.7, reduction="none")
    assert_close(out[:1], to_numpy(index), dtype)


def test_gce_ignore_index_and_sample_weight():
    rng = np.random.default_rng(4)
    logits, targets = random_case(rng)
    targets[[1, 4]] = -100
    w = rng.uniform(0.5, 2.0, size=7)
    per = gce_reference(logits, np.where(targets < 0, 0, targets), 0.7)
    keep = targets >= 0
    out = generalized_cross_entropy(logits, targets, reduction="none")
    np.testing.assert_allclose(out, np.where(keep, per, 0.0), rtol=1e-12)
    np.testing.assert_allclose(generalized_cross_entropy(logits, targets), per[keep].mean(), rtol=1e-12)
    expected = np.sum(w[keep] * per[keep]) / np.sum(w[keep])
    np.testing.assert_allclose(generalized_cross_entropy(logits, targets, sample_weight=w), expected, rtol=1e-12)
    np.testing.assert_allclose(
        generalized_cross_entropy(logits, targets, sample_weight=w, reduction="sum"),
        np.sum(w[keep] * per[keep]),
        rtol=1e-12,
    )


@pytest.mark.parametrize(
    "loss",
    [
        lambda x, y: generalized_cross_entropy(x, y),
        lambda x, y: symmetric_cross_entropy(x, y),
        lambda x, y: forward_corrected_cross_entropy(
            x, y, torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.8, 0.0], [0, 0, 1.0]])
        ),
        lambda x, y: backward_corrected_cross_entropy(
            x, y, torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.8, 0.0], [0, 0, 1.0]])
        ),
    ],
)
@requires_torch
def test_all_ignored_gives_zero_with_zero_gradient(loss):
    x = torch.tensor([[1.0, -2.0, 0.5], [0.0, float("-inf"), 3.0]], requires_grad=True)
    y = torch.tensor([-100, -100])
    out = loss(x, y)
    (grad,) = torch.autograd.grad(out, x)
    assert out.item() == 0.0
    assert torch.equal(grad, torch.zeros_like(grad))


@pytest.mark.parametrize("dtype", torch_params("float32", "float64"))
def test_gce_extreme_logits_finite(dtype):
    x = torch.tensor([[1e4, -1e4, float("-inf")], [-1e4, 1e4, float("-inf")], [0.0, float("-inf"), 0.0]], dtype=dtype)
    x.requires_grad_(True)
    y = torch.tensor([0, 0, 2])
    out = generalized_cross_entropy(x, y, q=0.7, reduction="none")
    # p_y = 1, 0 (exp(-2e4) underflows), 1/2.
    expected = torch.tensor([0.0, 1 / 0.7, (1 - 0.5**0.7) / 0.7], dtype=torch.float64)
    torch.testing.assert_close(out.double(), expected, **tolerance(dtype))
    (grad,) = torch.autograd.grad(out.sum(), x)
    assert torch.isfinite(grad).all()
    # Soft targets with a zero on the -inf class are finite too.
    t = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.5, 0.0, 0.5]], dtype=dtype)
    (grad,) = torch.autograd.grad(generalized_cross_entropy(x, t), x)
    assert torch.isfinite(grad).all()


@requires_torch
def test_gce_gradcheck():
    rng = np.random.default_rng(5)
    logits, targets = random_case(rng, n=4, c=3)
    x = torch.from_numpy(logits).requires_grad_(True)
    y = torch.from_numpy(targets)
    w = torch.tensor([0.5, 1.0, 2.0, 0.0])
    assert torch.autograd.gradcheck(lambda z: generalized_cross_entropy(z, y, q=0.3, sample_weight=w), (x,))
    t = torch.from_numpy(soft_targets(rng, 4, 3))
    assert torch.autograd.gradcheck(lambda z: generalized_cross_entropy(z, t, q=0.3), (x,))


def test_gce_axis_and_batch_dims():
    rng = np.random.default_rng(6)
    logits = rng.normal(size=(2, 3, 5))  # (batch, classes, positions), class axis 1
    targets = rng.integers(0, 3, size=(2, 5))
    moved = np.moveaxis(logits, 1, -1)
    out = generalized_cross_entropy(logits, targets, axis=1, reduction="none")
    assert out.shape == (2, 5)
    expected = gce_reference(moved.reshape(-1, 3), targets.reshape(-1), 0.7).reshape(2, 5)
    np.testing.assert_allclose(out, expected, rtol=1e-12)


@requires_torch
def test_half_precision_returns_input_dtype():
    rng = np.random.default_rng(7)
    logits, targets = random_case(rng)
    x, y = torch.from_numpy(logits), torch.from_numpy(targets)
    T = torch.from_numpy(random_transition(rng, 4))
    for dtype in (torch.float16, torch.bfloat16):
        xh = x.to(dtype)
        reference_input = xh.double()
        for fn, kwargs in [
            (generalized_cross_entropy, {}),
            (symmetric_cross_entropy, {}),
        ]:
            out = fn(xh, y, **kwargs)
            assert out.dtype == dtype
            torch.testing.assert_close(out, fn(reference_input, y, **kwargs).to(dtype))
        for fn in (forward_corrected_cross_entropy, backward_corrected_cross_entropy):
            out = fn(xh, y, T)
            assert out.dtype == dtype
            torch.testing.assert_close(out, fn(reference_input, y, T).to(dtype))


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.floats(-30, 30), min_size=3, max_size=3),
    st.integers(0, 2),
    st.floats(0.01, 1.0),
)
def test_gce_bounded_and_below_ce(row, target, q):
    x = np.array([row])
    y = np.array([target])
    with warnings.catch_warnings():
        # Hypothesis finds rows such as (0.332, 0.334, 0.334) that look like probabilities.
        warnings.simplefilter("ignore", ProbabilitiesAsLogitsWarning)
        out = float(generalized_cross_entropy(x, y, q=q))
    ce = -np_log_softmax(x, axis=-1)[0, target]
    assert -1e-15 <= out <= 1.0 / q + 1e-12
    # (1 - e^{-q l}) / q <= l for l >= 0.
    assert out <= ce + 1e-12


@pytest.mark.parametrize("q", [0.0, -0.5, 1.5, math.nan])
def test_gce_bad_q(q):
    with pytest.raises(ValueError, match=r"`q` must be in \(0, 1\]"):
        generalized_cross_entropy(np.zeros((2, 3)), np.array([0, 1]), q=q)


def test_gce_bad_inputs():
    with pytest.raises(TypeError, match="`q` must be a real number"):
        generalized_cross_entropy(np.zeros((2, 3)), np.array([0, 1]), q="0.5")
    with pytest.raises(ValueError, match="`reduction` must be one of"):
        generalized_cross_entropy(np.zeros((2, 3)), np.array([0, 1]), reduction="avg")
    with pytest.raises(ValueError, match="`targets` must be class indices in"):
        generalized_cross_entropy(np.zeros((2, 3)), np.array([0, 3]))
    with pytest.raises(ValueError, match="`logits` must not be empty"):
        generalized_cross_entropy(np.zeros((0, 3)), np.zeros(0, dtype=int))
    with pytest.raises(ValueError, match="`sample_weight` must be finite and non-negative"):
        generalized_cross_entropy(np.zeros((2, 3)), np.array([0, 1]), sample_weight=np.array([1.0, -1.0]))


# ----------------------------------------------------------------------------------------------
# symmetric_cross_entropy
# ----------------------------------------------------------------------------------------------


def sce_reference_torch(x, y, alpha, beta, log_zero):
    """alpha * F.cross_entropy + beta * (-A) (1 - p_y), written with torch ops."""
    ce = F.cross_entropy(x, y, reduction="none")
    p_y = torch.softmax(x, dim=-1).gather(-1, y[:, None])[:, 0]
    return alpha * ce - beta * log_zero * (1 - p_y)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@requires_torch
def test_sce_index_targets_vs_torch(backend, dtype):
    rng = np.random.default_rng(10)
    logits, targets = random_case(rng, dtype=dtype)
    expected = sce_reference_torch(torch.from_numpy(logits).double(), torch.from_numpy(targets), 0.3, 1.2, -6.0)
    out = symmetric_cross_entropy(
        to_backend(logits, backend), to_backend(targets, backend), alpha=0.3, beta=1.2, log_zero=-6.0, reduction="none"
    )
    assert type(out) is type(to_backend(logits, backend))
    assert_close(out, expected.numpy(), dtype)
    out = symmetric_cross_entropy(to_backend(logits, backend), to_backend(targets, backend))
    assert_close(
        out,
        sce_reference_torch(torch.from_numpy(logits).double(), torch.from_numpy(targets), 0.1, 1.0, -4.0).mean(),
        dtype,
    )


def test_sce_hand_constants():
    logits = np.log(np.array([[0.25, 0.75]]))
    y = np.array([1])
    # RCE alone: -A (1 - p_y) = 4 * 0.25 = 1; CE alone: ln(4/3).
    np.testing.assert_allclose(symmetric_cross_entropy(logits, y, alpha=0.0, beta=1.0), 1.0, rtol=1e-14)
    np.testing.assert_allclose(symmetric_cross_entropy(logits, y, alpha=1.0, beta=0.0), math.log(4 / 3), rtol=1e-14)
    np.testing.assert_allclose(symmetric_cross_entropy(logits, y), 0.1 * math.log(4 / 3) + 1.0, rtol=1e-14)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_sce_soft_targets(backend, dtype):
    rng = np.random.default_rng(11)
    logits, _ = random_case(rng, dtype=dtype)
    t = soft_targets(rng, 7, 4, dtype)
    t[1] = np.array([1e-3, 0.5, 0.499, 0.0], dtype=dtype)  # an entry below e^A: clamped at A
    t64 = t.astype(np.float64)
    log_p = np_log_softmax(logits.astype(np.float64), axis=-1)
    with np.errstate(divide="ignore"):
        log_t = np.maximum(np.log(t64), -4.0)
    ce = -np.sum(np.where(t64 > 0, t64 * log_p, 0.0), axis=-1)
    rce = -np.sum(np.exp(log_p) * log_t, axis=-1)
    out = symmetric_cross_entropy(
        to_backend(logits, backend), to_backend(t, backend), alpha=0.5, beta=2.0, reduction="none"
    )
    assert_close(out, 0.5 * ce + 2.0 * rce, dtype)
    # The one-hot row equals the index-target value.
    index = symmetric_cross_entropy(logits[:1], np.array([1]), alpha=0.5, beta=2.0, reduction="none")
    assert_close(out[:1], to_numpy(index), dtype)


@pytest.mark.parametrize("dtype", torch_params("float32", "float64"))
def test_sce_extreme_logits_finite(dtype):
    x = torch.tensor([[1e4, -1e4, float("-inf")], [-1e4, 1e4, float("-inf")]], dtype=dtype, requires_grad=True)
    y = torch.tensor([0, 0])
    out = symmetric_cross_entropy(x, y, reduction="none")
    # Row 1: p_y = 1 -> 0. Row 2: CE = 2e4, p_y = 0 -> RCE = 4.
    torch.testing.assert_close(
        out.double(), torch.tensor([0.0, 0.1 * 2e4 + 4.0], dtype=torch.float64), **tolerance(dtype)
    )
    (grad,) = torch.autograd.grad(out.sum(), x)
    assert torch.isfinite(grad).all()
    t = torch.tensor([[0.9, 0.1, 0.0], [0.0, 1.0, 0.0]], dtype=dtype)
    (grad,) = torch.autograd.grad(symmetric_cross_entropy(x, t), x)
    assert torch.isfinite(grad).all()


@requires_torch
def test_sce_gradcheck():
    rng = np.random.default_rng(12)
    logits, targets = random_case(rng, n=4, c=3)
    x = torch.from_numpy(logits).requires_grad_(True)
    y = torch.from_numpy(targets)
    assert torch.autograd.gradcheck(lambda z: symmetric_cross_entropy(z, y, alpha=0.4, beta=0.7), (x,))
    t = torch.from_numpy(soft_targets(rng, 4, 3))
    assert torch.autograd.gradcheck(lambda z: symmetric_cross_entropy(z, t, alpha=0.4, beta=0.7), (x,))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"alpha": -0.1}, "`alpha` must be >= 0; got -0.1"),
        ({"beta": -1.0}, "`beta` must be >= 0; got -1.0"),
        ({"log_zero": 0.0}, r"`log_zero` must be in \(-inf, 0\); got 0.0"),
        ({"log_zero": 2.0}, r"`log_zero` must be in \(-inf, 0\); got 2.0"),
    ],
)
def test_sce_bad_options(kwargs, message):
    with pytest.raises(ValueError, match=message):
        symmetric_cross_entropy(np.zeros((2, 3)), np.array([0, 1]), **kwargs)


# ----------------------------------------------------------------------------------------------
# forward / backward correction
# ----------------------------------------------------------------------------------------------


def forward_reference(logits, targets, T):
    p = np.exp(np_log_softmax(logits.astype(np.float64), axis=-1))
    return -np.log((p @ T)[np.arange(len(targets)), targets])


def backward_reference(logits, targets, T):
    losses = -np_log_softmax(logits.astype(np.float64), axis=-1)  # (n, C)
    return (losses @ np.linalg.inv(T).T)[np.arange(len(targets)), targets]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("fn", [forward_corrected_cross_entropy, backward_corrected_cross_entropy])
@requires_torch
def test_identity_transition_is_cross_entropy(backend, dtype, fn):
    rng = np.random.default_rng(20)
    logits, targets = random_case(rng, dtype=dtype)
    ce = F.cross_entropy(torch.from_numpy(logits).double(), torch.from_numpy(targets), reduction="none").numpy()
    out = fn(
        to_backend(logits, backend),
        to_backend(targets, backend),
        to_backend(np.eye(4, dtype=dtype), backend),
        reduction="none",
    )
    assert type(out) is type(to_backend(logits, backend))
    assert out.dtype == to_backend(logits, backend).dtype
    assert_close(out, ce, dtype)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_forward_matches_formula(backend, dtype):
    rng = np.random.default_rng(21)
    logits, targets = random_case(rng, dtype=dtype)
    T = random_transition(rng, 4)
    T[0, 3] = 0.0  # zeros in T are allowed
    T[0] /= T[0].sum()
    expected = forward_reference(logits, targets, T)
    x, y, t = to_backend(logits, backend), to_backend(targets, backend), to_backend(T.astype(dtype), backend)
    assert_close(forward_corrected_cross_entropy(x, y, t, reduction="none"), expected, dtype)
    assert_close(forward_corrected_cross_entropy(x, y, t), expected.mean(), dtype)
    w = rng.uniform(size=7)
    assert_close(
        forward_corrected_cross_entropy(x, y, t, sample_weight=to_backend(w, backend)),
        (w * expected).sum() / w.sum(),
        dtype,
    )


def test_forward_hand_constant():
    logits = np.log(np.array([[0.9, 0.1]]))
    T = np.array([[0.8, 0.2], [0.3, 0.7]])
    np.testing.assert_allclose(forward_corrected_cross_entropy(logits, np.array([1]), T), -math.log(0.25), rtol=1e-14)
    np.testing.assert_allclose(forward_corrected_cross_entropy(logits, np.array([0]), T), -math.log(0.75), rtol=1e-14)


@pytest.mark.parametrize("dtype", torch_params("float32", "float64"))
def test_forward_extreme_logits_and_zeros_in_transition(dtype):
    T = torch.tensor([[0.8, 0.2, 0.0], [0.1, 0.8, 0.1], [0.0, 0.3, 0.7]], dtype=dtype, requires_grad=True)
    x = torch.tensor([[1e4, -1e4, float("-inf")], [0.0, float("-inf"), 2.0], [-1e4, 1e4, 0.0]], dtype=dtype)
    x.requires_grad_(True)
    y = torch.tensor([1, 2, 0])
    out = forward_corrected_cross_entropy(x, y, T, reduction="none")
    # Row 1: p = e_0 -> -ln T[0,1]; row 2: p = (1, 0, e^2)/(1 + e^2) -> (0 + 0.7 e^2)/(1 + e^2);
    # row 3: p = e_1 -> -ln T[1,0].
    e2 = math.exp(2.0)
    expected = torch.tensor([-math.log(0.2), -math.log(0.7 * e2 / (1 + e2)), -math.log(0.1)], dtype=torch.float64)
    torch.testing.assert_close(out.double(), expected, **tolerance(dtype))
    gx, gT = torch.autograd.grad(out.sum(), (x, T))
    assert torch.isfinite(gx).all()
    assert torch.isfinite(gT).all()


@requires_torch
def test_forward_gradcheck():
    rng = np.random.default_rng(22)
    logits, targets = random_case(rng, n=5, c=3)
    x = torch.from_numpy(logits).requires_grad_(True)
    T = torch.from_numpy(random_transition(rng, 3))
    y = torch.from_numpy(targets)
    assert torch.autograd.gradcheck(lambda z: forward_corrected_cross_entropy(z, y, T), (x,))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_backward_matches_formula(backend, dtype):
    rng = np.random.default_rng(23)
    logits, targets = random_case(rng, dtype=dtype)
    T = random_transition(rng, 4).astype(dtype)
    expected = backward_reference(logits, targets, T.astype(np.float64))
    x, y, t = to_backend(logits, backend), to_backend(targets, backend), to_backend(T, backend)
    assert_close(backward_corrected_cross_entropy(x, y, t, reduction="none"), expected, dtype)
    assert_close(backward_corrected_cross_entropy(x, y, t, reduction="sum"), expected.sum(), dtype)


def test_backward_hand_constant_can_be_negative():
    logits = np.log(np.array([[0.9, 0.1]]))
    T = np.array([[0.8, 0.2], [0.2, 0.8]])
    # T^{-1} = [[0.8, -0.2], [-0.2, 0.8]] / 0.6; loss = (0.8 * -ln 0.9 - 0.2 * -ln 0.1) / 0.6
    expected = (0.8 * -math.log(0.9) + 0.2 * math.log(0.1)) / 0.6
    out = float(backward_corrected_cross_entropy(logits, np.array([0]), T))
    np.testing.assert_allclose(out, expected, rtol=1e-13)
    assert out < 0


def test_backward_is_unbiased():
    """E over noisy labels drawn from T[y, :] of the corrected loss is the clean loss."""
    rng = np.random.default_rng(24)
    c = 5
    logits = rng.normal(size=(1, c))
    T = random_transition(rng, c, noise=0.4)
    clean_ce = -np_log_softmax(logits, axis=-1)[0]
    for clean in range(c):
        expectation = sum(
            T[clean, noisy] * float(backward_corrected_cross_entropy(logits, np.array([noisy]), T))
            for noisy in range(c)
        )
        np.testing.assert_allclose(expectation, clean_ce[clean], rtol=1e-12)


@pytest.mark.parametrize("dtype", torch_params("float32", "float64"))
def test_backward_extreme_logits(dtype):
    T = torch.tensor([[0.8, 0.2, 0.0], [0.3, 0.7, 0.0], [0.0, 0.0, 1.0]], dtype=dtype)
    # -inf only where T^{-1}[y, :] is zero (class 2 decoupled from classes 0, 1): finite.
    x = torch.tensor([[1e4, -1e4, float("-inf")], [0.0, 1.0, float("-inf")]], dtype=dtype, requires_grad=True)
    y = torch.tensor([0, 1])
    out = backward_corrected_cross_entropy(x, y, T, reduction="none")
    inv = torch.linalg.inv(T[:2, :2].double())
    ell = -torch.log_softmax(x[:, :2].double(), dim=-1)
    expected = torch.stack([inv[0] @ ell[0], inv[1] @ ell[1]])
    torch.testing.assert_close(out.double(), expected, **tolerance(dtype))
    (grad,) = torch.autograd.grad(out.sum(), x)
    assert torch.isfinite(grad).all()


@requires_torch
def test_backward_gradcheck():
    rng = np.random.default_rng(25)
    logits, targets = random_case(rng, n=5, c=3)
    x = torch.from_numpy(logits).requires_grad_(True)
    T = torch.from_numpy(random_transition(rng, 3))
    y = torch.from_numpy(targets)
    assert torch.autograd.gradcheck(lambda z: backward_corrected_cross_entropy(z, y, T), (x,))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_backward_singular_transition(dtype):
    x = np.zeros((2, 2), dtype=dtype)
    y = np.array([0, 1])
    with pytest.raises(
        ValueError, match=r"`transition` must be invertible and well conditioned.*got a condition number of "
    ):
        backward_corrected_cross_entropy(x, y, np.full((2, 2), 0.5, dtype=dtype))
    # Nearly singular: condition number 1/(2d), above 1/sqrt(eps) of the dtype.
    d = 1e-5 if dtype == np.float32 else 1e-9
    T = np.array([[0.5 + d, 0.5 - d], [0.5 - d, 0.5 + d]], dtype=dtype)
    with pytest.raises(ValueError, match="`transition` must be invertible and well conditioned"):
        backward_corrected_cross_entropy(x, y, T)
    # Forward correction has no such requirement.
    assert np.isfinite(forward_corrected_cross_entropy(x, y, np.full((2, 2), 0.5, dtype=dtype)))


@pytest.mark.parametrize("fn", [forward_corrected_cross_entropy, backward_corrected_cross_entropy])
def test_transition_validation(fn):
    x = np.zeros((2, 3))
    y = np.array([0, 2])
    good = np.eye(3)
    with pytest.raises(ValueError, match=r"`transition` must have shape \(3, 3\)"):
        fn(x, y, np.eye(2))
    with pytest.raises(TypeError, match="`transition` must be a real floating-point array"):
        fn(x, y, np.eye(3, dtype=int))
    bad = good.copy()
    bad[2] = [0.2, 0.2, 0.5]
    with pytest.raises(ValueError, match=r"`transition` must have rows \(row-stochastic.*got a sum of 0.9 at \(2,\)"):
        fn(x, y, bad)
    bad = np.array([[1.5, -0.5, 0.0], [0, 1, 0], [0, 0, 1]])
    with pytest.raises(ValueError, match=r"`transition` must contain probabilities in \[0, 1\]; got 1.5"):
        fn(x, y, bad)
    with pytest.raises(TypeError, match="`targets` must be integer class indices"):
        fn(x, np.full((2, 3), 1 / 3), good)
    with pytest.raises(ValueError, match="`targets` must be class indices in"):
        fn(x, np.array([0, 3]), good)


@requires_torch
def test_transition_from_another_library():
    rng = np.random.default_rng(26)
    logits, targets = random_case(rng)
    T = random_transition(rng, 4)
    out = forward_corrected_cross_entropy(logits, targets, torch.from_numpy(T), reduction="none")
    assert isinstance(out, np.ndarray)
    np.testing.assert_allclose(out, forward_reference(logits, targets, T), rtol=1e-12)


def test_forward_ignore_index():
    rng = np.random.default_rng(27)
    logits, targets = random_case(rng)
    T = random_transition(rng, 4)
    targets[2] = -100
    keep = targets >= 0
    expected = forward_reference(logits[keep], targets[keep], T)
    np.testing.assert_allclose(forward_corrected_cross_entropy(logits, targets, T), expected.mean(), rtol=1e-12)
    out = backward_corrected_cross_entropy(logits, targets, T, reduction="none")
    assert out[2] == 0.0
    np.testing.assert_allclose(out[keep], backward_reference(logits[keep], targets[keep], T), rtol=1e-12)
