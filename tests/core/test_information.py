"""Tests of crossentropy.information against hand-computed values, SciPy, PyTorch and properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.spatial.distance
import scipy.special
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from crossentropy.information import (
    Decomposition,
    cross_entropy,
    decompose,
    entropy,
    js_divergence,
    kl_divergence,
)
from tests._support import F, requires_torch, torch

LN2 = math.log(2.0)
PAIR_FUNCTIONS = [cross_entropy, kl_divergence, js_divergence]
ALL_PAIR = [*PAIR_FUNCTIONS, decompose]


def random_dist(rng: np.random.Generator, shape: tuple[int, ...], *, zeros: bool = False) -> np.ndarray:
    """Random probability vectors along the last axis (optionally with some exact zeros)."""
    x = rng.random(shape) + 0.01
    if zeros:
        x = np.where(rng.random(shape) < 0.3, 0.0, x)
        x[..., 0] += 0.5  # every row keeps some mass
    return x / x.sum(axis=-1, keepdims=True)


@st.composite
def dist_pairs(draw: st.DrawFn, *, allow_zeros: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Two float64 arrays of shape (rows, n) whose rows are probability vectors."""
    rows = draw(st.integers(1, 4))
    n = draw(st.integers(1, 8))
    low = 0.0 if allow_zeros else 1e-3
    elements = st.floats(low, 1.0, allow_nan=False, allow_infinity=False)
    p = draw(hnp.arrays(np.float64, (rows, n), elements=elements))
    q = draw(hnp.arrays(np.float64, (rows, n), elements=elements))
    p[:, 0] += 1.0  # no all-zero row
    q[:, -1] += 1.0
    return p / p.sum(axis=1, keepdims=True), q / q.sum(axis=1, keepdims=True)


# --------------------------------------------------------------------------------------------
# Hand-computed constants


def test_coin_printed_digits() -> None:
    p, q = np.array([0.9, 0.1]), np.array([0.7, 0.3])
    assert round(float(entropy(p)), 4) == 0.3251
    assert round(float(cross_entropy(p, q)), 4) == 0.4414
    assert round(float(kl_divergence(p, q)), 4) == 0.1163


def test_coin_exact_by_hand() -> None:
    p, q = np.array([0.9, 0.1]), np.array([0.7, 0.3])
    h = -(0.9 * math.log(0.9) + 0.1 * math.log(0.1))
    ce = -(0.9 * math.log(0.7) + 0.1 * math.log(0.3))
    kl = 0.9 * math.log(0.9 / 0.7) + 0.1 * math.log(0.1 / 0.3)
    assert float(entropy(p)) == pytest.approx(h, rel=1e-14)
    assert float(cross_entropy(p, q)) == pytest.approx(ce, rel=1e-14)
    assert float(kl_divergence(p, q)) == pytest.approx(kl, rel=1e-14)
    parts = decompose(p, q)
    assert isinstance(parts, Decomposition)
    assert parts._fields == ("cross_entropy", "entropy", "kl_divergence")
    assert [float(x) for x in parts] == pytest.approx([ce, h, kl], rel=1e-14)
    # In bits: divide by ln 2.
    assert float(entropy(p, base=2)) == pytest.approx(h / LN2, rel=1e-14)
    assert float(kl_divergence(p, q, base=2)) == pytest.approx(kl / LN2, rel=1e-14)


def test_coin_js_by_hand() -> None:
    p, q = np.array([0.9, 0.1]), np.array([0.7, 0.3])
    m = (0.8, 0.2)
    js = 0.5 * (0.9 * math.log(0.9 / m[0]) + 0.1 * math.log(0.1 / m[1]))
    js += 0.5 * (0.7 * math.log(0.7 / m[0]) + 0.3 * math.log(0.3 / m[1]))
    assert float(js_divergence(p, q)) == pytest.approx(js, rel=1e-14)


def test_surprise_of_one_hot() -> None:
    q = np.array([[0.999, 0.001], [0.08, 0.92]])
    p = np.array([[0.0, 1.0], [0.0, 1.0]])
    out = cross_entropy(p, q)
    assert round(float(out[0]), 3) == 6.908
    assert round(float(out[1]), 4) == 0.0834
    assert out.tolist() == pytest.approx([-math.log(0.001), -math.log(0.92)], rel=1e-14)
    # KL from a one-hot P is the same surprise (its entropy is 0).
    np.testing.assert_allclose(kl_divergence(p, q), out, rtol=1e-14)
    np.testing.assert_array_equal(entropy(p), [0.0, 0.0])


def test_uniform_entropy_is_log_n() -> None:
    for n in (1, 2, 3, 10, 1000):
        u = np.full(n, 1.0 / n)
        assert float(entropy(u)) == pytest.approx(math.log(n), rel=1e-13, abs=1e-15)
        if n > 1:
            assert float(entropy(u, base=n)) == pytest.approx(1.0, rel=1e-13)


# --------------------------------------------------------------------------------------------
# SciPy and PyTorch references


@pytest.mark.parametrize("base", [None, 2, 10])
def test_against_scipy_entropy(base: float | None) -> None:
    rng = np.random.default_rng(0)
    p = random_dist(rng, (20, 7), zeros=True)
    q = random_dist(rng, (20, 7))
    np.testing.assert_allclose(entropy(p, base=base), scipy.stats.entropy(p, base=base, axis=-1), rtol=1e-12)
    np.testing.assert_allclose(
        kl_divergence(p, q, base=base), scipy.stats.entropy(p, q, base=base, axis=-1), rtol=1e-12, atol=1e-15
    )
    # H(P, Q) = H(P) + KL(P || Q), each from SciPy.
    expected = scipy.stats.entropy(p, base=base, axis=-1) + scipy.stats.entropy(p, q, base=base, axis=-1)
    np.testing.assert_allclose(cross_entropy(p, q, base=base), expected, rtol=1e-12)


def test_against_scipy_rel_entr_and_kl_div() -> None:
    rng = np.random.default_rng(1)
    p = random_dist(rng, (30, 5), zeros=True)
    q = random_dist(rng, (30, 5), zeros=True)
    ours = kl_divergence(p, q)
    np.testing.assert_array_equal(np.isinf(ours), np.isinf(scipy.special.rel_entr(p, q).sum(axis=-1)))
    finite = np.isfinite(ours)
    assert finite.sum() > 3
    assert (~finite).sum() > 3
    np.testing.assert_allclose(ours[finite], scipy.special.rel_entr(p, q).sum(axis=-1)[finite], rtol=1e-12, atol=1e-15)
    # kl_div adds -p + q, which sums to 0 over a distribution.
    np.testing.assert_allclose(ours[finite], scipy.special.kl_div(p, q).sum(axis=-1)[finite], rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(cross_entropy(p, q)[finite], -scipy.special.xlogy(p, q).sum(axis=-1)[finite], rtol=1e-12)


@pytest.mark.parametrize("base", [None, 2.0, math.e, 10])
def test_js_against_scipy_jensenshannon(base: float | None) -> None:
    rng = np.random.default_rng(2)
    p = random_dist(rng, (25, 6), zeros=True)
    q = random_dist(rng, (25, 6), zeros=True)
    expected = scipy.spatial.distance.jensenshannon(p, q, base=base, axis=1)
    np.testing.assert_allclose(np.sqrt(js_divergence(p, q, base=base)), expected, rtol=1e-12, atol=1e-15)


@requires_torch
def test_kl_against_torch_kl_div_batchmean() -> None:
    rng = np.random.default_rng(3)
    p = torch.tensor(random_dist(rng, (16, 9), zeros=True))
    q = torch.tensor(random_dist(rng, (16, 9)))
    expected = F.kl_div(q.log(), p, reduction="batchmean")
    ours = kl_divergence(p, q)
    assert isinstance(ours, torch.Tensor)
    assert ours.shape == (16,)
    torch.testing.assert_close(ours.mean(), expected, rtol=1e-12, atol=0)


# --------------------------------------------------------------------------------------------
# Edge cases: zeros, axis, dtypes, array types


def test_zeros_in_p_contribute_nothing() -> None:
    p = np.array([0.0, 0.25, 0.75])
    q = np.array([0.0, 0.5, 0.5])  # q = 0 where p = 0: still finite
    h = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    ce = -(0.25 * math.log(0.5) + 0.75 * math.log(0.5))
    assert float(entropy(p)) == pytest.approx(h, rel=1e-14)
    assert float(cross_entropy(p, q)) == pytest.approx(ce, rel=1e-14)
    assert float(kl_divergence(p, q)) == pytest.approx(ce - h, rel=1e-13)
    assert math.isfinite(float(js_divergence(p, q)))


def test_zeros_in_q_give_inf() -> None:
    p, q = np.array([0.5, 0.5]), np.array([1.0, 0.0])
    assert float(cross_entropy(p, q)) == math.inf
    assert float(kl_divergence(p, q)) == math.inf
    parts = decompose(p, q)
    assert float(parts.cross_entropy) == math.inf
    assert float(parts.kl_divergence) == math.inf
    assert float(parts.entropy) == pytest.approx(LN2, rel=1e-15)
    # JS stays finite: the mixture covers both supports.
    assert float(js_divergence(p, q)) == pytest.approx(
        0.5 * (0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(2)) + 0.5 * (math.log(1 / 0.75)), rel=1e-14
    )


def test_subnormal_q_gives_finite_kl() -> None:
    # p / q overflows for a subnormal q; KL must stay finite (log p - log q), equal to H(P, Q) - H(P).
    p, q = np.array([1.0, 0.0]), np.array([1e-310, 1.0])
    expected = -math.log(1e-310)
    assert float(kl_divergence(p, q)) == pytest.approx(expected, rel=1e-14)
    assert float(cross_entropy(p, q)) == pytest.approx(expected, rel=1e-14)


@requires_torch
def test_kl_gradient_at_q_zero_is_infinite_not_nan() -> None:
    p = torch.tensor([0.5, 0.5, 0.0], dtype=torch.float64, requires_grad=True)
    q = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64, requires_grad=True)
    out = kl_divergence(p, q)
    out.backward()
    assert float(out.detach()) == math.inf
    assert q.grad.tolist() == [-0.5, -math.inf, 0.0]
    assert not torch.isnan(p.grad).any()


def test_js_with_subnormal_entries_stays_finite() -> None:
    # (p + q) / 2 underflows to 0 at the subnormal entries; JS must not become infinite.
    p, q = np.array([1.0, 0.0, 0.0]), np.array([5e-324, 5e-324, 1.0])
    assert float(js_divergence(p, q)) == pytest.approx(LN2, rel=1e-14)


def test_disjoint_supports_reach_js_bound() -> None:
    p, q = np.array([0.5, 0.5, 0.0, 0.0]), np.array([0.0, 0.0, 0.25, 0.75])
    assert float(js_divergence(p, q)) == pytest.approx(LN2, rel=1e-15)
    assert float(js_divergence(p, q, base=2)) == pytest.approx(1.0, rel=1e-15)


def test_no_numpy_warnings_for_zeros() -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        kl_divergence(np.array([0.5, 0.5]), np.array([1.0, 0.0]))
        cross_entropy(np.array([0.5, 0.5]), np.array([1.0, 0.0]))


@pytest.mark.parametrize("func", [entropy, *PAIR_FUNCTIONS])
def test_axis_other_than_last(func) -> None:
    rng = np.random.default_rng(4)
    p = random_dist(rng, (3, 4, 5), zeros=True)
    q = random_dist(rng, (3, 4, 5))
    args_last = (p,) if func is entropy else (p, q)
    expected = func(*args_last)
    for axis in (0, 1, -3, -2):
        moved = tuple(np.moveaxis(a, -1, axis) for a in args_last)
        out = func(*moved, axis=axis)
        assert out.shape == expected.shape == (3, 4)
        np.testing.assert_allclose(out, expected, rtol=1e-13, atol=1e-16)


def test_axis_zero_of_a_matrix_matches_scipy() -> None:
    rng = np.random.default_rng(5)
    p = random_dist(rng, (6, 4)).T  # columns are distributions
    q = random_dist(rng, (6, 4)).T
    np.testing.assert_allclose(entropy(p, axis=0), scipy.stats.entropy(p, axis=0), rtol=1e-12)
    np.testing.assert_allclose(kl_divergence(p, q, axis=0), scipy.stats.entropy(p, q, axis=0), rtol=1e-12)


def test_decompose_with_axis_and_base() -> None:
    rng = np.random.default_rng(6)
    p = random_dist(rng, (5, 3)).T
    q = random_dist(rng, (5, 3)).T
    parts = decompose(p, q, axis=0, base=2)
    np.testing.assert_allclose(parts.cross_entropy, cross_entropy(p, q, axis=0, base=2), rtol=1e-15)
    np.testing.assert_allclose(parts.entropy, entropy(p, axis=0, base=2), rtol=1e-15)
    np.testing.assert_allclose(parts.kl_divergence, kl_divergence(p, q, axis=0, base=2), rtol=1e-15)


def scipy_reference(func, p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """The measure from scipy.special primitives, without validation or renormalization."""
    if func is entropy:
        return -scipy.special.xlogy(p, p).sum(axis=-1)
    if func is cross_entropy:
        return -scipy.special.xlogy(p, q).sum(axis=-1)
    if func is kl_divergence:
        return scipy.special.rel_entr(p, q).sum(axis=-1)
    m = (p + q) / 2
    return (scipy.special.rel_entr(p, m).sum(axis=-1) + scipy.special.rel_entr(q, m).sum(axis=-1)) / 2


@pytest.mark.parametrize(
    ("dtype_name", "rtol"), [("float64", 1e-12), ("float32", 2e-6), ("bfloat16", 1e-2), ("float16", 2e-3)]
)
@pytest.mark.parametrize("func", [entropy, *PAIR_FUNCTIONS])
@requires_torch
def test_torch_dtypes(func, dtype_name: str, rtol: float) -> None:
    dtype = getattr(torch, dtype_name)
    rng = np.random.default_rng(7)
    p, q = torch.tensor(random_dist(rng, (8, 6)), dtype=dtype), torch.tensor(random_dist(rng, (8, 6)), dtype=dtype)
    out = func(p) if func is entropy else func(p, q)
    assert isinstance(out, torch.Tensor)
    assert out.dtype == dtype
    assert out.shape == (8,)
    # Reference: the same rounded inputs in float64 (their sums are off 1 by the rounding, which
    # the float64 validation would reject, so SciPy's primitives are used directly).
    ref = scipy_reference(func, p.double().numpy(), q.double().numpy())
    np.testing.assert_allclose(out.double().numpy(), ref, rtol=rtol, atol=0)


def test_numpy_float32_keeps_dtype_and_mixed_dtypes_promote() -> None:
    rng = np.random.default_rng(8)
    p = random_dist(rng, (4, 3))
    p32 = p.astype(np.float32)
    out32 = entropy(p32)
    assert out32.dtype == np.float32
    np.testing.assert_allclose(
        out32, -scipy.special.xlogy(p32.astype(np.float64), p32.astype(np.float64)).sum(axis=-1), rtol=2e-6
    )
    mixed = kl_divergence(p.astype(np.float32), p.astype(np.float64))
    assert mixed.dtype == np.float64


def test_numpy_results_are_arrays() -> None:
    p = np.array([0.5, 0.5])
    for out in (entropy(p), *(f(p, p) for f in PAIR_FUNCTIONS), *decompose(p, p)):
        assert isinstance(out, np.ndarray)
        assert out.shape == ()
        assert out.dtype == np.float64


def test_lists_are_accepted_as_numpy() -> None:
    out = cross_entropy([0.9, 0.1], [0.7, 0.3])
    assert isinstance(out, np.ndarray)
    assert out.shape == ()
    assert float(out) == pytest.approx(-(0.9 * math.log(0.7) + 0.1 * math.log(0.3)), rel=1e-14)


# --------------------------------------------------------------------------------------------
# Autograd


@requires_torch
def test_cross_entropy_gradient_wrt_q_is_minus_p_over_q() -> None:
    rng = np.random.default_rng(9)
    p = torch.tensor(random_dist(rng, (5, 4), zeros=True))
    q = torch.tensor(random_dist(rng, (5, 4)), requires_grad=True)
    cross_entropy(p, q).sum().backward()
    torch.testing.assert_close(q.grad, -p / q.detach(), rtol=1e-13, atol=0)


@requires_torch
def test_gradients_match_analytic_forms_and_are_finite_at_zeros() -> None:
    rng = np.random.default_rng(10)
    p0 = random_dist(rng, (6, 5), zeros=True)
    q0 = random_dist(rng, (6, 5), zeros=True)
    assert (p0 == 0).any()
    assert (q0 == 0).any()
    p = torch.tensor(p0, requires_grad=True)
    q = torch.tensor(q0, requires_grad=True)
    js_divergence(p, q).sum().backward()
    assert torch.isfinite(p.grad).all()
    assert torch.isfinite(q.grad).all()
    pd, qd = p.detach(), q.detach()
    m = (pd + qd) / 2
    # d JS / d p_i = log(p_i / m_i) / 2 where p_i > 0. At p_i = 0 the masked term p log(p/m)
    # contributes 0 (the 0 log 0 convention) and q log(q/m) gives -q / (4 m) = -1/2 where q_i > 0.
    expected = torch.where(pd > 0, torch.log(pd / m) / 2, torch.where(qd > 0, -0.5, 0.0).double())
    torch.testing.assert_close(p.grad, expected, rtol=1e-12, atol=1e-15)

    p.grad = None
    entropy(p).sum().backward()
    expected = torch.where(pd > 0, -(torch.log(pd) + 1), torch.zeros_like(pd))
    torch.testing.assert_close(p.grad, expected, rtol=1e-12, atol=1e-15)

    # KL with q > 0 everywhere: dKL/dp = log(p/q) + 1 on the support, dKL/dq = -p/q.
    q2 = torch.tensor(random_dist(rng, (6, 5)), requires_grad=True)
    p.grad = None
    kl_divergence(p, q2).sum().backward()
    q2d = q2.detach()
    torch.testing.assert_close(q2.grad, -pd / q2d, rtol=1e-13, atol=0)
    expected = torch.where(pd > 0, torch.log(pd / q2d) + 1, torch.zeros_like(pd))
    torch.testing.assert_close(p.grad, expected, rtol=1e-12, atol=1e-15)


@requires_torch
def test_gradient_matches_finite_differences_along_the_simplex() -> None:
    # Move mass between two outcomes (the perturbation keeps rows summing to 1).
    rng = np.random.default_rng(11)
    p0 = random_dist(rng, (1, 4))[0]
    q0 = random_dist(rng, (1, 4))[0]
    direction = np.array([1.0, -1.0, 0.0, 0.0])
    h = 1e-6
    for func in (kl_divergence, js_divergence, cross_entropy):
        q = torch.tensor(q0, requires_grad=True)
        func(torch.tensor(p0), q).backward()
        numeric = (float(func(p0, q0 + h * direction)) - float(func(p0, q0 - h * direction))) / (2 * h)
        analytic = float(q.grad @ torch.tensor(direction))
        assert analytic == pytest.approx(numeric, rel=1e-7, abs=1e-9)


# --------------------------------------------------------------------------------------------
# Properties


@settings(max_examples=60, deadline=None)
@given(dist_pairs())
def test_property_decomposition_and_nonnegativity(pq: tuple[np.ndarray, np.ndarray]) -> None:
    p, q = pq
    kl = kl_divergence(p, q)
    h = entropy(p)
    ce = cross_entropy(p, q)
    assert np.all(kl >= -1e-15)
    assert np.all(h >= -1e-15)
    finite = np.isfinite(ce)
    np.testing.assert_array_equal(finite, np.isfinite(kl))
    np.testing.assert_allclose(ce[finite], (h + kl)[finite], rtol=1e-12, atol=1e-13)


@settings(max_examples=60, deadline=None)
@given(dist_pairs())
def test_property_js_symmetric_and_bounded(pq: tuple[np.ndarray, np.ndarray]) -> None:
    p, q = pq
    js = js_divergence(p, q)
    np.testing.assert_allclose(js, js_divergence(q, p), rtol=1e-13, atol=1e-16)
    assert np.all(js >= -1e-15)
    assert np.all(js <= LN2 * (1 + 1e-14))
    bits = js_divergence(p, q, base=2)
    assert np.all(bits <= 1 + 1e-14)


@settings(max_examples=60, deadline=None)
@given(dist_pairs(), st.sampled_from([2.0, 10.0, 0.5, 3.7]))
def test_property_base_conversion(pq: tuple[np.ndarray, np.ndarray], base: float) -> None:
    p, q = pq
    for func in (cross_entropy, kl_divergence, js_divergence):
        nats = func(p, q)
        np.testing.assert_allclose(func(p, q, base=base), nats / math.log(base), rtol=1e-14, atol=0)
    np.testing.assert_allclose(entropy(p, base=base), entropy(p) / math.log(base), rtol=1e-14, atol=0)


@settings(max_examples=60, deadline=None)
@given(dist_pairs())
def test_property_divergences_vanish_at_p_equal_q(pq: tuple[np.ndarray, np.ndarray]) -> None:
    p, _ = pq
    np.testing.assert_array_equal(kl_divergence(p, p), 0.0)
    np.testing.assert_allclose(js_divergence(p, p), 0.0, atol=1e-16)
    np.testing.assert_allclose(cross_entropy(p, p), entropy(p), rtol=1e-15, atol=0)


# --------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize("func", [entropy, *ALL_PAIR])
def test_integer_and_bool_inputs_are_rejected(func) -> None:
    good = np.array([0.5, 0.5])
    for bad in (np.array([1, 0]), np.array([True, False])):
        with pytest.raises(TypeError, match=r"`p` must be a real floating-point array"):
            func(bad) if func is entropy else func(bad, good)
        if func is not entropy:
            with pytest.raises(TypeError, match=r"`q` must be a real floating-point array"):
                func(good, bad)


@pytest.mark.parametrize("func", ALL_PAIR)
def test_shape_mismatch(func) -> None:
    with pytest.raises(ValueError, match=r"`q` must have shape \(2,\) \(the shape of `p`\); got shape \(3,\)"):
        func(np.array([0.5, 0.5]), np.array([0.2, 0.3, 0.5]))


@pytest.mark.parametrize("func", [entropy, *ALL_PAIR])
def test_empty_and_scalar_inputs(func) -> None:
    empty = np.zeros((3, 0))
    with pytest.raises(ValueError, match=r"`p` must not be empty; got shape \(3, 0\)"):
        func(empty) if func is entropy else func(empty, empty)
    scalar = np.array(1.0)
    with pytest.raises(ValueError, match=r"`p` must have at least 1 dimension"):
        func(scalar) if func is entropy else func(scalar, scalar)


@pytest.mark.parametrize("func", [entropy, *ALL_PAIR])
def test_out_of_range_and_unnormalized(func) -> None:
    good = np.array([0.5, 0.5])
    cases = [
        ("p", np.array([1.5, -0.5]), r"`p` must contain probabilities in \[0, 1\]; got 1.5"),
        ("p", np.array([0.5, np.nan]), r"`p` must contain probabilities in \[0, 1\]; got nan"),
        ("p", np.array([0.5, 0.4]), r"`p` must have distributions along axis 0 summing to 1; got a sum of 0.9"),
    ]
    if func is not entropy:
        cases += [
            ("q", np.array([-0.1, 1.1]), r"`q` must contain probabilities in \[0, 1\]; got -0.1"),
            ("q", np.array([0.6, 0.6]), r"`q` must have distributions along axis 0 summing to 1; got a sum of 1.2"),
        ]
    for which, bad, message in cases:
        args = (bad,) if func is entropy else (bad, good) if which == "p" else (good, bad)
        with pytest.raises(ValueError, match=message):
            func(*args)


def test_sum_tolerance_follows_dtype() -> None:
    # 1e-6 off: fine for float32 (sqrt eps ~ 3e-4), an error for float64 (sqrt eps ~ 1.5e-8).
    p = np.array([0.5, 0.5 + 1e-6])
    assert np.isfinite(entropy(p.astype(np.float32)))
    with pytest.raises(ValueError, match="`p` must have distributions"):
        entropy(p)


@pytest.mark.parametrize("func", [entropy, *ALL_PAIR])
def test_bad_axis_and_base(func) -> None:
    p = np.array([[0.5, 0.5]])
    args = (p,) if func is entropy else (p, p)
    with pytest.raises(ValueError, match=r"`axis` must be in \[-2, 2\) for an array of 2 dimensions; got 2"):
        func(*args, axis=2)
    with pytest.raises(TypeError, match=r"`axis` must be an integer; got 1.0"):
        func(*args, axis=1.0)
    with pytest.raises(ValueError, match=r"`base` must be positive and not 1 \(None means nats, 2 bits\); got 1.0"):
        func(*args, base=1)
    with pytest.raises(ValueError, match=r"`base` must be > 0; got -2.0"):
        func(*args, base=-2)
    with pytest.raises(TypeError, match=r"`base` must be a real number; got '2'"):
        func(*args, base="2")


def test_rows_are_checked_along_the_given_axis() -> None:
    p = np.array([[0.5, 0.5], [0.5, 0.5]])  # rows sum to 1, columns to 1 as well
    assert entropy(p, axis=0).shape == (2,)
    p = np.array([[0.2, 0.8], [0.2, 0.8]])  # rows fine, columns sum to 0.4 and 1.6
    assert entropy(p, axis=1).shape == (2,)
    with pytest.raises(ValueError, match=r"`p` must have distributions along axis 0 summing to 1; got a sum of 0.4"):
        entropy(p, axis=0)
