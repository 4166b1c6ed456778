"""The fused CPU kernels against the generic array-API path (the reference), option by option.

The generic path is itself checked against PyTorch in ``test_losses_torch.py``; here every kernel
path must reproduce it within the tolerance of the dtype, including the edge cases (logits of
±1e4, -inf logits, all targets ignored, rows longer than a kernel block, K-dimensional input).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from _support import tolerance

import crossentropy as ce
from crossentropy import kernels
from crossentropy.kernels._math import exp_nonpositive, tanh
from crossentropy.kernels._softmax import BLOCK

RNG = np.random.default_rng(31)
DTYPES = [np.float32, np.float64]
# Class counts: tiny, one partial block, several blocks with a ragged last one.
WIDTHS = [3, 1000, 2 * BLOCK + 17]
OPTIONS = [
    {},
    {"weight": "class"},
    {"label_smoothing": 0.1},
    {"label_smoothing": 0.3, "weight": "class"},
    {"z_loss": 1e-2},
    {"softcap": 4.0},
    {"sample_weight": "sample"},
    {"softcap": 3.0, "label_smoothing": 0.2, "z_loss": 1e-3, "weight": "class", "sample_weight": "sample"},
]


def _resolve(options: dict, n_rows: int, n_classes: int, dtype) -> dict:
    resolved = dict(options)
    if options.get("weight") == "class":
        resolved["weight"] = RNG.uniform(0.2, 2.0, n_classes).astype(dtype)
    if options.get("sample_weight") == "sample":
        resolved["sample_weight"] = RNG.uniform(0.0, 2.0, n_rows).astype(dtype)
    return resolved


def _both_paths(function, *args, **options):
    with kernels.disabled():
        reference = function(*args, **options)
    return function(*args, **options), reference


def _assert_matches(actual, expected, dtype, what: str) -> None:
    actual = actual if isinstance(actual, tuple) else (actual,)
    expected = expected if isinstance(expected, tuple) else (expected,)
    for got, want in zip(actual, expected, strict=True):
        assert isinstance(got, np.ndarray | np.generic)
        assert got.dtype == want.dtype, what
        assert got.shape == want.shape, what
        np.testing.assert_allclose(got, want, **tolerance(dtype), err_msg=what)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("n_classes", WIDTHS)
@pytest.mark.parametrize("targets_kind", ["index", "probs"])
@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: "+".join(o) or "plain")
def test_kernel_matches_reference(dtype, n_classes, targets_kind, options):
    n_rows = 9
    logits = (RNG.standard_normal((n_rows, n_classes)) * 3).astype(dtype)
    if targets_kind == "index":
        targets = RNG.integers(0, n_classes, n_rows)
        targets[2] = -100
    else:
        targets = ce.softmax(RNG.standard_normal((n_rows, n_classes))).astype(dtype)
    resolved = _resolve(options, n_rows, n_classes, dtype)
    for reduction in ("mean", "sum", "none"):
        what = f"{targets_kind} {options} {reduction}"
        args = (logits, targets)
        kernel, reference = _both_paths(ce.softmax_cross_entropy_with_grad, *args, reduction=reduction, **resolved)
        _assert_matches(kernel, reference, dtype, what)
        forward, _ = _both_paths(ce.softmax_cross_entropy, *args, reduction=reduction, **resolved)
        _assert_matches(forward, reference[0], dtype, what + " (forward only)")


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_extreme_and_infinite_logits(dtype):
    logits = np.array(
        [
            [1e4, -1e4, 0.0, 5.0],
            [-np.inf, 2.0, -np.inf, 1.0],  # -inf on non-target classes
            [-1e4, -1e4, -1e4, -1e4 + 1],
            [3.0, -np.inf, -np.inf, -np.inf],
        ],
        dtype=dtype,
    )
    targets = np.array([1, 3, 0, 0])
    weight = np.array([1.0, 0.5, 0.0, 2.0], dtype)
    for options in ({}, {"z_loss": 1e-4}, {"weight": weight}, {"label_smoothing": 0.1, "weight": weight}):
        kernel, reference = _both_paths(
            ce.softmax_cross_entropy_with_grad, logits, targets, reduction="none", **options
        )
        assert np.all(np.isfinite(kernel[1]))
        _assert_matches(kernel, reference, dtype, f"extreme {options}")
        if "label_smoothing" not in options:  # smoothing puts target mass on the -inf classes: infinite loss
            assert np.all(np.isfinite(kernel[0]))
            assert np.all(kernel[1][1, [0, 2]] == 0), "a -inf logit gets exactly zero gradient"


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_all_ignored_gives_zero_loss_and_gradient(dtype):
    logits = RNG.standard_normal((5, 7)).astype(dtype)
    targets = np.full(5, -100)
    loss, grad = ce.softmax_cross_entropy_with_grad(logits, targets)
    assert float(loss) == 0.0
    assert not np.any(grad)
    assert float(ce.softmax_cross_entropy(logits, targets, label_smoothing=0.2)) == 0.0


def test_nan_logit_propagates_to_its_row():
    logits = RNG.standard_normal((3, 6)).astype(np.float32)
    logits[1, 4] = np.nan
    loss, grad = ce.softmax_cross_entropy_with_grad(logits, np.array([0, 1, 2]), reduction="none")
    assert np.isnan(loss[1])
    assert np.all(np.isnan(grad[1]))
    assert np.all(np.isfinite(loss[[0, 2]]))


def test_k_dimensional_input_and_class_axis():
    logits = RNG.standard_normal((2, 5, 3, 4)).astype(np.float32)  # (N, C, d1, d2): class axis 1
    targets = RNG.integers(0, 5, (2, 3, 4))
    targets[0, 1, 2] = -100
    kernel, reference = _both_paths(
        ce.softmax_cross_entropy_with_grad, logits, targets, axis=1, label_smoothing=0.1, reduction="none"
    )
    _assert_matches(kernel, reference, np.float32, "K-dimensional")


def test_half_precision_input_runs_on_the_kernel_and_returns_half():
    logits = RNG.standard_normal((4, 10)).astype(np.float16)
    targets = np.array([0, 3, 9, 2])
    kernel, reference = _both_paths(ce.softmax_cross_entropy_with_grad, logits, targets)
    _assert_matches(kernel, reference, np.float16, "float16")


def test_long_rows_stay_exact():
    """A row of a million classes: many blocks, the running maximum rising late in the row."""
    n_classes = 1_000_000
    logits = RNG.standard_normal((2, n_classes)).astype(np.float32)
    logits[0, -3] = 25.0  # the maximum in the last block
    logits[1, 5] = 25.0  # the maximum in the first block
    targets = np.array([n_classes - 3, 7])
    kernel, reference = _both_paths(ce.softmax_cross_entropy_with_grad, logits, targets, reduction="sum")
    _assert_matches(kernel, reference, np.float32, "long rows")
    # An independent float64 oracle for the loss.
    x = logits.astype(np.float64)
    m = x.max(axis=1)
    expected = np.sum(m + np.log(np.exp(x - m[:, None]).sum(axis=1)) - x[[0, 1], targets])
    np.testing.assert_allclose(float(kernel[0]), expected, rtol=1e-5)


def test_kernel_does_not_touch_its_inputs():
    logits = RNG.standard_normal((6, 9)).astype(np.float32)
    targets = ce.softmax(RNG.standard_normal((6, 9))).astype(np.float32)
    weight = RNG.uniform(0.5, 1.5, 9).astype(np.float32)
    copies = [a.copy() for a in (logits, targets, weight)]
    ce.softmax_cross_entropy_with_grad(logits, targets, weight=weight, softcap=2.0, label_smoothing=0.1)
    for original, copy in zip((logits, targets, weight), copies, strict=True):
        np.testing.assert_array_equal(original, copy)


def test_disabled_is_scoped():
    assert kernels.enabled()
    with kernels.disabled():
        assert not kernels.enabled()
    assert kernels.enabled()


# --------------------------------------------------------------------------------------------
# The vectorizable scalar math, against float64 NumPy


def _jit_map(function):
    from numba import njit

    @njit
    def apply(values, out):
        for i in range(values.shape[0]):
            out[i] = function(values[i])

    return apply


def test_float32_exp_is_accurate_to_three_ulps():
    t = -np.concatenate([np.linspace(0, 87, 400_001), [0.0, 1e-8, 86.99, 87.5, 100.0, np.inf]]).astype(np.float32)
    out = np.empty_like(t)
    _jit_map(exp_nonpositive)(t, out)
    expected = np.exp(t.astype(np.float64))
    normal = expected >= np.finfo(np.float32).tiny
    relative = np.abs(out[normal] - expected[normal]) / expected[normal]
    assert relative.max() <= 3 * np.finfo(np.float32).eps
    assert np.all(out[t < -87] == 0)  # flushed below e^-87, exactly 0 for -inf


def test_float32_tanh_is_accurate_to_two_ulps():
    y = np.concatenate([np.linspace(-12, 12, 400_001), [1e-30, -1e-20, 0.624, 0.626, 40.0, np.inf, -np.inf]])
    y = y.astype(np.float32)
    out = np.empty_like(y)
    _jit_map(tanh)(y, out)
    expected = np.tanh(y.astype(np.float64))
    nonzero = expected != 0
    relative = np.abs(out[nonzero] - expected[nonzero]) / np.abs(expected[nonzero])
    assert relative.max() <= 2 * np.finfo(np.float32).eps
    assert out[y == 0].tolist() == [0.0] * int(np.sum(y == 0))


@pytest.mark.parametrize(("function", "name"), [(exp_nonpositive, "exp"), (tanh, "tanh")])
def test_nan_in_nan_out(function, name):
    values = np.array([np.nan, -1.0], dtype=np.float32)
    out = np.empty_like(values)
    _jit_map(function)(values, out)
    assert math.isnan(out[0]), name
    assert not math.isnan(out[1]), name


def test_every_option_combination_compiles_once_per_dtype():
    """A cheap sweep over all option combinations on a tiny input: the kernels accept every one."""
    logits = RNG.standard_normal((3, 5)).astype(np.float32)
    targets = np.array([0, 4, -100])
    flags = itertools.product([None, np.ones(5, np.float32)], [0.0, 0.1], [0.0, 1e-3], [None, 2.0])
    for weight, smoothing, z, cap in flags:
        options = {"weight": weight, "label_smoothing": smoothing, "z_loss": z, "softcap": cap}
        kernel, reference = _both_paths(ce.softmax_cross_entropy_with_grad, logits, targets, **options)
        _assert_matches(kernel, reference, np.float32, str(options))
