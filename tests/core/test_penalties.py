"""Tests of crossentropy.penalties: z-loss, neighbour JS smoothness, demographic-parity gap.

Oracles: torch.logsumexp / scipy.special.logsumexp, scipy.spatial.distance.jensenshannon,
pure-Python loops, hand-derived gradients, finite differences (torch.autograd.gradcheck) and
hypothesis properties.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy.spatial.distance import jensenshannon
from scipy.special import logsumexp as np_logsumexp

from crossentropy.penalties import demographic_parity_gap, neighbor_js_penalty, z_loss
from tests._support import BACKENDS, assert_close, requires_torch, to_backend, to_numpy, tolerance, torch, torch_params

DTYPES = [np.float32, np.float64]


def random_distributions(rng, shape, dtype=np.float64):
    """Softmax of random logits, computed in float64 and rounded once to ``dtype``."""
    z = rng.normal(scale=2.0, size=shape)
    p = np.exp(z - np_logsumexp(z, axis=-1, keepdims=True))
    return p.astype(dtype)


# ----------------------------------------------------------------------------------------------
# z_loss
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", torch_params("float32", "float64"))
def test_z_loss_vs_torch_logsumexp(dtype):
    x = torch.randn(6, 5, generator=torch.Generator().manual_seed(0), dtype=dtype) * 3
    expected = torch.logsumexp(x.double(), dim=-1) ** 2
    out = z_loss(x, reduction="none")
    assert out.dtype == dtype
    torch.testing.assert_close(out.double(), expected, **tolerance(dtype))
    torch.testing.assert_close(z_loss(x).double(), expected.mean(), **tolerance(dtype))
    torch.testing.assert_close(z_loss(x, reduction="sum").double(), expected.sum(), **tolerance(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_z_loss_numpy_and_axis(dtype):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 4, 3)).astype(dtype)  # class axis 1
    out = z_loss(x, axis=1, reduction="none")
    assert isinstance(out, np.ndarray)
    assert out.dtype == dtype
    assert out.shape == (2, 3)
    assert_close(out, np_logsumexp(x.astype(np.float64), axis=1) ** 2, dtype)
    assert_close(z_loss(x, axis=1), np.mean(np_logsumexp(x.astype(np.float64), axis=1) ** 2), dtype)


def test_z_loss_hand_constants():
    x = np.array([[0.0, 0.0], [1e4, 1e4], [0.0, -math.inf]])
    np.testing.assert_allclose(
        z_loss(x, reduction="none"), [math.log(2) ** 2, (1e4 + math.log(2)) ** 2, 0.0], rtol=1e-14, atol=0
    )


@pytest.mark.parametrize("dtype", torch_params("float32", "float64"))
def test_z_loss_gradient_extreme_logits(dtype):
    x = torch.tensor([[1e4, -1e4, float("-inf")], [0.5, float("-inf"), -0.5]], dtype=dtype, requires_grad=True)
    out = z_loss(x)
    (grad,) = torch.autograd.grad(out, x)
    assert torch.isfinite(grad).all()
    # d/dx LSE^2 / n = 2 LSE softmax / n, written out by hand.
    xd = x.detach().double()
    lse = torch.logsumexp(xd, dim=-1, keepdim=True)
    expected = 2 * lse * torch.softmax(xd, dim=-1) / 2
    torch.testing.assert_close(grad.double(), expected, **tolerance(dtype))


@requires_torch
def test_z_loss_gradcheck():
    x = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2), requires_grad=True)
    assert torch.autograd.gradcheck(lambda z: z_loss(z), (x,))
    assert torch.autograd.gradcheck(lambda z: z_loss(z, axis=0, reduction="none"), (x,))


@requires_torch
def test_z_loss_half_precision():
    x = torch.randn(8, 6, generator=torch.Generator().manual_seed(3)) * 4
    for dtype in (torch.float16, torch.bfloat16):
        out = z_loss(x.to(dtype))
        assert out.dtype == dtype
        torch.testing.assert_close(out, z_loss(x.to(dtype).double()).to(dtype))


def test_z_loss_bad_input():
    with pytest.raises(ValueError, match="`reduction` must be one of"):
        z_loss(np.zeros((2, 3)), reduction="max")
    with pytest.raises(TypeError, match="`logits` must be a real floating-point array"):
        z_loss(np.zeros((2, 3), dtype=int))
    with pytest.raises(ValueError, match="`logits` must not be empty"):
        z_loss(np.zeros((2, 0)))
    with pytest.raises(ValueError, match=r"`axis` must be in \[-2, 2\)"):
        z_loss(np.zeros((2, 3)), axis=2)


# ----------------------------------------------------------------------------------------------
# neighbor_js_penalty
# ----------------------------------------------------------------------------------------------


def js_reference(p: np.ndarray) -> np.ndarray:
    """Pairwise JS (nats) along axis 1 of (n_sequences, length, n_classes), with SciPy."""
    n, length, _ = p.shape
    out = np.empty((n, length - 1))
    for i in range(n):
        for t in range(length - 1):
            out[i, t] = jensenshannon(p[i, t].astype(np.float64), p[i, t + 1].astype(np.float64)) ** 2
    return out


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_neighbor_js_vs_scipy(backend, dtype):
    rng = np.random.default_rng(10)
    p = random_distributions(rng, (3, 5, 4), dtype)
    p[0, 2] = [0.0, 1.0, 0.0, 0.0]  # zeros are allowed
    expected = js_reference(p)
    x = to_backend(p, backend)
    out = neighbor_js_penalty(x, reduction="none")
    assert type(out) is type(x)
    assert out.dtype == x.dtype
    assert tuple(out.shape) == (3, 4)
    assert_close(out, expected, dtype)
    assert_close(neighbor_js_penalty(x), expected.mean(), dtype)
    assert_close(neighbor_js_penalty(x, reduction="sum"), expected.sum(), dtype)


def test_neighbor_js_hand_constant():
    # JS((0.9, 0.1), (0.1, 0.9)) = 0.9 ln 1.8 + 0.1 ln 0.2; disjoint supports give ln 2.
    p = np.array([[[0.9, 0.1], [0.1, 0.9], [0.0, 1.0], [1.0, 0.0]]])
    out = neighbor_js_penalty(p, reduction="none")
    expected = [0.9 * math.log(1.8) + 0.1 * math.log(0.2), None, math.log(2)]
    np.testing.assert_allclose(out[0, 0], expected[0], rtol=1e-14)
    np.testing.assert_allclose(out[0, 2], expected[2], rtol=1e-14)


@pytest.mark.parametrize("backend", BACKENDS)
def test_neighbor_js_constant_sequence_is_zero(backend):
    rng = np.random.default_rng(11)
    row = random_distributions(rng, (1, 1, 6))
    p = np.broadcast_to(row, (2, 7, 6)).copy()
    out = neighbor_js_penalty(to_backend(p, backend), reduction="none")
    assert np.all(to_numpy(out) == 0.0)


def test_neighbor_js_axes():
    rng = np.random.default_rng(12)
    p = random_distributions(rng, (3, 5, 4))  # (n_sequences, length, n_classes)
    expected = js_reference(p)
    # (length, n_sequences, n_classes) with sequence_axis=0: output (length - 1, n_sequences).
    out = neighbor_js_penalty(np.transpose(p, (1, 0, 2)), sequence_axis=0, reduction="none")
    np.testing.assert_allclose(out, expected.T, rtol=1e-12, atol=1e-15)
    # (n_classes, n_sequences, length) with axis=0, sequence_axis=-1: output (n_sequences, length - 1).
    out = neighbor_js_penalty(np.transpose(p, (2, 0, 1)), axis=0, sequence_axis=-1, reduction="none")
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-15)
    # (length, n_classes) alone: one sequence.
    out = neighbor_js_penalty(p[1], sequence_axis=0, reduction="none")
    np.testing.assert_allclose(out, expected[1], rtol=1e-12, atol=1e-15)


def test_neighbor_js_length_one_has_no_pairs():
    p = np.full((3, 1, 4), 0.25)
    assert neighbor_js_penalty(p, reduction="none").shape == (3, 0)
    assert float(neighbor_js_penalty(p)) == 0.0
    assert float(neighbor_js_penalty(p, reduction="sum")) == 0.0


@pytest.mark.parametrize("dtype", torch_params("float32", "float64"))
def test_neighbor_js_gradient_finite_with_zeros(dtype):
    p = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.5, 0.0, 0.5], [0.5, 0.0, 0.5]]], dtype=dtype)
    p.requires_grad_(True)
    out = neighbor_js_penalty(p)
    (grad,) = torch.autograd.grad(out, p)
    assert torch.isfinite(grad).all()
    torch.testing.assert_close(out.double(), torch.tensor(2 * math.log(2) / 3, dtype=torch.float64), **tolerance(dtype))


@requires_torch
def test_neighbor_js_gradcheck():
    """Through a softmax so that perturbed inputs stay distributions."""
    z = torch.randn(2, 4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(13), requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: neighbor_js_penalty(torch.softmax(v, dim=-1)), (z,))
    assert torch.autograd.gradcheck(lambda v: neighbor_js_penalty(torch.softmax(v, dim=-1), reduction="none"), (z,))


@requires_torch
def test_neighbor_js_gradient_vs_torch_formula():
    """Autograd of the penalty equals autograd of the JS formula written with torch ops."""
    p = torch.softmax(torch.randn(2, 5, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(14)), dim=-1)
    p.requires_grad_(True)
    (grad,) = torch.autograd.grad(neighbor_js_penalty(p, reduction="sum"), p)
    q = p.detach().clone().requires_grad_(True)
    a, b = q[:, :-1], q[:, 1:]
    m = (a + b) / 2
    reference = 0.5 * (a * (a / m).log()).sum() + 0.5 * (b * (b / m).log()).sum()
    (expected,) = torch.autograd.grad(reference, q)
    torch.testing.assert_close(grad, expected, rtol=1e-12, atol=1e-12)


@requires_torch
def test_neighbor_js_half_precision():
    p = torch.softmax(torch.randn(2, 6, 5, generator=torch.Generator().manual_seed(15)), dim=-1)
    for dtype in (torch.float16, torch.bfloat16):
        ph = p.to(dtype)
        out = neighbor_js_penalty(ph)
        assert out.dtype == dtype
        # The half inputs do not sum to 1 exactly; the reference works on the same rounded values.
        expected = js_reference(ph.double().numpy()).mean()
        torch.testing.assert_close(out.double(), torch.tensor(expected, dtype=torch.float64).to(dtype).double())


@settings(max_examples=40, deadline=None)
@given(hnp.arrays(np.float64, (2, 4, 3), elements=st.floats(-20, 20)))
def test_neighbor_js_properties(z):
    p = np.exp(z - np_logsumexp(z, axis=-1, keepdims=True))
    out = neighbor_js_penalty(p, reduction="none")
    assert np.all(out >= 0)
    assert np.all(out <= math.log(2) + 1e-12)
    # Reversing each sequence reverses the pairs (JS is symmetric).
    np.testing.assert_allclose(neighbor_js_penalty(p[:, ::-1], reduction="none"), out[:, ::-1], rtol=1e-10, atol=1e-14)


def test_neighbor_js_bad_input():
    good = np.full((2, 3, 4), 0.25)
    too_much = good.copy()
    too_much[1, 2, 0] = 0.45
    with pytest.raises(
        ValueError, match=r"`probs` must have distributions along `axis` summing to 1; got a sum of 1\.2"
    ):
        neighbor_js_penalty(too_much)
    negative = good.copy()
    negative[0, 0] = [-0.25, 0.75, 0.25, 0.25]
    with pytest.raises(ValueError, match=r"`probs` must contain probabilities in \[0, 1\]; got -0.25"):
        neighbor_js_penalty(negative)
    with pytest.raises(ValueError, match="`sequence_axis` must differ from `axis`"):
        neighbor_js_penalty(good, axis=-1, sequence_axis=2)
    with pytest.raises(ValueError, match="`probs` must have at least 2 dimension"):
        neighbor_js_penalty(np.full(4, 0.25))
    with pytest.raises(ValueError, match="`probs` must not be empty"):
        neighbor_js_penalty(np.zeros((0, 3, 4)))
    with pytest.raises(TypeError, match="`probs` must be a real floating-point array"):
        neighbor_js_penalty(np.ones((2, 3, 1), dtype=int))
    with pytest.raises(ValueError, match=r"`sequence_axis` must be in \[-3, 3\)"):
        neighbor_js_penalty(good, sequence_axis=5)
    with pytest.raises(ValueError, match="`reduction` must be one of"):
        neighbor_js_penalty(good, reduction="mean ")


# ----------------------------------------------------------------------------------------------
# demographic_parity_gap
# ----------------------------------------------------------------------------------------------


def gap_reference(probs, groups, weight=None) -> float:
    sums: dict = {}
    counts: dict = {}
    for i, (p, g) in enumerate(zip(probs.tolist(), groups.tolist(), strict=True)):
        w = 1.0 if weight is None else float(weight[i])
        sums[g] = sums.get(g, 0.0) + w * p
        counts[g] = counts.get(g, 0.0) + w
    means = [sums[g] / counts[g] for g in sums if counts[g] > 0]
    return max(means) - min(means) if means else 0.0


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_gap_vs_python_loop(backend, dtype):
    rng = np.random.default_rng(20)
    probs = rng.uniform(size=30).astype(dtype)
    groups = rng.choice(np.array([-3, 0, 7, 11]), size=30)
    w = rng.uniform(0, 2, size=30)
    x = to_backend(probs, backend)
    out = demographic_parity_gap(x, to_backend(groups, backend))
    assert type(out) is type(x)
    assert out.dtype == x.dtype
    assert tuple(out.shape) == ()
    assert_close(out, gap_reference(probs, groups), dtype)
    out = demographic_parity_gap(x, to_backend(groups, backend), sample_weight=to_backend(w, backend))
    assert_close(out, gap_reference(probs, groups, w), dtype)


def test_gap_hand_constants():
    probs = np.array([0.9, 0.7, 0.2, 0.4])
    np.testing.assert_allclose(demographic_parity_gap(probs, np.array([0, 0, 1, 1])), 0.5, rtol=1e-14)
    np.testing.assert_allclose(demographic_parity_gap(probs, np.array([True, True, False, False])), 0.5, rtol=1e-14)
    # Weights 3:1 in group 0 -> 0.85; group 1 -> 0.3.
    w = np.array([3.0, 1.0, 1.0, 1.0])
    np.testing.assert_allclose(demographic_parity_gap(probs, np.array([0, 0, 1, 1]), sample_weight=w), 0.55, rtol=1e-14)
    # Two groups: |mean_a - mean_b| whichever is larger.
    np.testing.assert_allclose(demographic_parity_gap(probs, np.array([1, 1, 0, 0])), 0.5, rtol=1e-14)


@requires_torch
def test_gap_gradient_vs_hand_derivation():
    """d gap / d p_n = s_n / S_max for n in the highest group, -s_n / S_min in the lowest, else 0."""
    probs = torch.tensor([0.9, 0.7, 0.2, 0.4, 0.5, 0.6], dtype=torch.float64, requires_grad=True)
    groups = torch.tensor([0, 0, 1, 1, 2, 2])
    w = torch.tensor([3.0, 1.0, 1.0, 2.0, 1.0, 1.0], dtype=torch.float64)
    # Means: g0 = (2.7 + 0.7) / 4 = 0.85, g1 = (0.2 + 0.8) / 3 = 1/3, g2 = 0.55.
    (grad,) = torch.autograd.grad(demographic_parity_gap(probs, groups, sample_weight=w), probs)
    expected = torch.tensor([3 / 4, 1 / 4, -1 / 3, -2 / 3, 0.0, 0.0], dtype=torch.float64)
    torch.testing.assert_close(grad, expected, rtol=1e-14, atol=1e-15)


@requires_torch
def test_gap_gradcheck():
    probs = torch.tensor([0.9, 0.7, 0.2, 0.4, 0.5, 0.65], dtype=torch.float64, requires_grad=True)
    groups = torch.tensor([0, 0, 1, 1, 2, 2])
    assert torch.autograd.gradcheck(lambda p: demographic_parity_gap(p, groups), (probs,))


@requires_torch
def test_gap_single_group_is_zero():
    probs = torch.tensor([0.9, 0.1, 0.4], requires_grad=True)
    out = demographic_parity_gap(probs, torch.tensor([5, 5, 5]))
    (grad,) = torch.autograd.grad(out, probs)
    assert out.item() == 0.0
    assert torch.equal(grad, torch.zeros(3))
    # A group whose samples all have weight 0 is absent.
    out = demographic_parity_gap(np.array([0.9, 0.1, 0.4]), np.array([0, 1, 1]), sample_weight=np.array([0.0, 1, 1]))
    assert float(out) == 0.0
    out = demographic_parity_gap(np.array([0.9, 0.1]), np.array([0, 1]), sample_weight=np.array([0.0, 0.0]))
    assert float(out) == 0.0


@requires_torch
def test_gap_half_precision():
    probs = torch.tensor([0.9, 0.7, 0.2, 0.4])
    out = demographic_parity_gap(probs.half(), torch.tensor([0, 0, 1, 1]))
    assert out.dtype == torch.float16
    torch.testing.assert_close(out, torch.tensor(0.5, dtype=torch.float16))


def test_gap_bad_input():
    g = np.array([0, 1, 1])
    with pytest.raises(ValueError, match=r"`probs` must contain probabilities in \[0, 1\]; got 1.5 at index \(1,\)"):
        demographic_parity_gap(np.array([0.2, 1.5, 0.3]), g)
    with pytest.raises(ValueError, match=r"`probs` must have shape \(n_samples,\)"):
        demographic_parity_gap(np.full((3, 2), 0.5), g)
    with pytest.raises(ValueError, match="`probs` must not be empty"):
        demographic_parity_gap(np.zeros(0), np.zeros(0, dtype=int))
    with pytest.raises(TypeError, match="`groups` must be integer"):
        demographic_parity_gap(np.full(3, 0.5), np.array([0.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match=r"`groups` must have shape \(3,\)"):
        demographic_parity_gap(np.full(3, 0.5), np.array([0, 1]))
    with pytest.raises(TypeError, match="`probs` must be a real floating-point array"):
        demographic_parity_gap(np.array([0, 1, 1]), g)
    with pytest.raises(ValueError, match="`sample_weight` must be finite and non-negative"):
        demographic_parity_gap(np.full(3, 0.5), g, sample_weight=np.array([1.0, -1.0, 1.0]))
