"""Stable primitives against SciPy and PyTorch, at ordinary and extreme values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.special
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from crossentropy import log_sigmoid, log_softmax, logsumexp, softmax
from tests._support import F, requires_torch, torch, torch_params

RNG = np.random.default_rng(0)


@pytest.mark.parametrize("axis", [-1, 0, 1])
def test_logsumexp_matches_scipy(axis):
    x = RNG.normal(size=(4, 5, 3)) * 10
    np.testing.assert_allclose(logsumexp(x, axis=axis), scipy.special.logsumexp(x, axis=axis), rtol=1e-14)
    kept = logsumexp(x, axis=axis, keepdims=True)
    assert kept.shape == scipy.special.logsumexp(x, axis=axis, keepdims=True).shape


def test_logsumexp_extremes():
    x = np.array([[1e4, 1e4], [-1e4, -1e4], [-np.inf, 0.0], [-np.inf, -np.inf], [np.inf, 0.0]])
    expected = [1e4 + math.log(2), -1e4 + math.log(2), 0.0, -np.inf, np.inf]
    np.testing.assert_allclose(logsumexp(x), expected, rtol=1e-15)


@pytest.mark.parametrize("dtype", torch_params("float32", "float64"))
def test_log_softmax_and_softmax_match_torch(dtype):
    x = torch.randn(6, 7, dtype=dtype) * 5
    tol = {"rtol": 1e-6, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 1e-13, "atol": 1e-14}
    torch.testing.assert_close(log_softmax(x), torch.log_softmax(x, -1), **tol)
    torch.testing.assert_close(softmax(x, axis=0), torch.softmax(x, 0), **tol)


def test_log_softmax_exact_far_in_the_tail():
    # log(softmax) would underflow to -inf; the difference form keeps -2e4 exactly.
    out = log_softmax(np.array([1e4, -1e4]))
    assert out.tolist() == [0.0, -2e4]
    assert softmax(np.array([-np.inf, 0.0])).tolist() == [0.0, 1.0]


@requires_torch
def test_log_sigmoid_matches_torch_and_is_exact_in_the_tails():
    x = torch.linspace(-50, 50, 101, dtype=torch.float64)
    torch.testing.assert_close(log_sigmoid(x), F.logsigmoid(x), rtol=1e-14, atol=1e-300)
    np.testing.assert_array_equal(log_sigmoid(np.array([-1e4, 1e4])), [-1e4, 0.0])


@pytest.mark.parametrize("dtype", torch_params("float16", "bfloat16"))
def test_half_precision_is_accumulated_in_float32(dtype):
    x = (torch.randn(4, 1000) * 3).to(dtype)
    reference = torch.logsumexp(x.float(), -1)
    out = logsumexp(x)
    assert out.dtype == dtype
    eps = torch.finfo(dtype).eps
    torch.testing.assert_close(out.float(), reference.to(dtype).float(), rtol=eps, atol=0)


@requires_torch
def test_gradients_are_finite_with_minus_inf_entries():
    x = torch.tensor([[-math.inf, 1.0, 2.0]], requires_grad=True)
    log_softmax(x)[0, 2].backward()
    assert torch.isfinite(x.grad).all()
    torch.testing.assert_close(x.grad[0, 1:], torch.tensor([-1.0, 1.0]) * torch.softmax(torch.tensor([1.0, 2.0]), 0)[0])


def test_integer_input_is_promoted_and_lists_give_numpy():
    assert isinstance(logsumexp([0, 0]), np.ndarray | np.floating)
    assert float(logsumexp([0, 0])) == pytest.approx(math.log(2), rel=1e-15)


def test_errors_name_the_parameter():
    with pytest.raises(ValueError, match="`x` must not be empty"):
        logsumexp(np.empty((3, 0)))
    with pytest.raises(ValueError, match="`axis` must be in"):
        softmax(np.zeros((2, 3)), axis=2)


@settings(max_examples=60, deadline=None)
@given(
    arrays(np.float64, st.tuples(st.integers(1, 4), st.integers(1, 6)), elements=st.floats(-1e3, 1e3)),
    st.floats(-1e3, 1e3),
)
def test_shift_invariance_of_log_softmax(x, shift):
    np.testing.assert_allclose(log_softmax(x + shift), log_softmax(x), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(logsumexp(x + shift), logsumexp(x) + shift, rtol=1e-12, atol=1e-9)
