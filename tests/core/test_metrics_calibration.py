"""Calibration metrics: the ECE norms (torchmetrics' formulas, written out here), the classwise
error (Kull et al. 2019), ``_calibration_from_bins`` and the Brier score decomposition (Murphy 1973,
with the within-bin terms of Stephenson et al. 2008)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import crossentropy
from crossentropy.metrics import (
    BrierDecomposition,
    _calibration_from_bins,
    brier_score,
    brier_score_decomposition,
    classwise_calibration_error,
    d2_brier_score,
    expected_calibration_error,
)
from tests._support import requires_torch, torch

NORMS = ("l1", "l2", "max")


# --------------------------------------------------------------------------------------------
# References, written independently of the library


def torchmetrics_ce(confidences, accuracies, n_bins: int, norm: str, weights=None) -> float:
    """torchmetrics' ``_ce_compute`` with ``_binning_bucketize``, in NumPy (plus weights).

    Bins from ``torch.linspace(0, 1, n_bins + 1, dtype=torch.float)`` (float32 edges),
    ``bucketize(right=True) - 1`` (left-closed bins, a confidence of exactly 1 in a bin of its
    own), ``nan_to_num`` of the per-bin means, ``prop_bin = count / count.sum()``.
    """
    conf = np.asarray(confidences, dtype=np.float64)
    acc = np.asarray(accuracies, dtype=np.float64)
    w = np.ones_like(conf) if weights is None else np.asarray(weights, dtype=np.float64)
    boundaries = np.linspace(0, 1, n_bins + 1, dtype=np.float32).astype(np.float64)
    index = np.searchsorted(boundaries, conf, side="right") - 1
    count = np.bincount(index, weights=w, minlength=n_bins + 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        conf_bin = np.nan_to_num(np.bincount(index, weights=w * conf, minlength=n_bins + 1) / count)
        acc_bin = np.nan_to_num(np.bincount(index, weights=w * acc, minlength=n_bins + 1) / count)
    prop_bin = count / count.sum()
    if norm == "l1":
        return float(np.sum(np.abs(acc_bin - conf_bin) * prop_bin))
    if norm == "max":
        return float(np.max(np.abs(acc_bin - conf_bin)))
    ce = np.sum((acc_bin - conf_bin) ** 2 * prop_bin)
    return float(np.sqrt(ce)) if ce > 0 else 0.0


def right_closed_bins(values: np.ndarray, n_bins: int, strategy: str) -> np.ndarray:
    """Bin index of each value: ``(lo, hi]`` bins as ``sklearn.calibration.calibration_curve``."""
    if strategy == "quantile":
        edges = np.percentile(values, np.linspace(0, 1, n_bins + 1) * 100)
    else:
        edges = np.linspace(0.0, 1.0, n_bins + 1)
    return np.searchsorted(edges[1:-1], values)


def binned_ce(values, outcomes, n_bins: int, strategy: str, norm: str, weights=None) -> float:
    """Calibration error with right-closed bins, by loops over the bins."""
    values = np.asarray(values, dtype=np.float64)
    w = np.ones_like(values) if weights is None else np.asarray(weights, dtype=np.float64)
    bins = right_closed_bins(values, n_bins, strategy)
    gaps, shares = [], []
    for b in range(n_bins):
        members = bins == b
        if w[members].sum() > 0:
            wb = w[members]
            gaps.append(np.sum(wb * outcomes[members]) / wb.sum() - np.sum(wb * values[members]) / wb.sum())
            shares.append(wb.sum() / w.sum())
    gaps, shares = np.array(gaps), np.array(shares)
    if norm == "l1":
        return float(np.sum(shares * np.abs(gaps)))
    if norm == "l2":
        return float(math.sqrt(np.sum(shares * gaps**2)))
    return float(np.max(np.abs(gaps)))


def top_label(probs: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return probs.max(axis=1), (probs.argmax(axis=1) == targets).astype(np.float64)


def off_edges(rng: np.random.Generator, n: int, c: int) -> tuple[np.ndarray, np.ndarray]:
    """Dirichlet probabilities and sampled targets (continuous: no value on a bin edge)."""
    probs = rng.dirichlet(np.full(c, 0.7), size=n)
    targets = np.array([rng.choice(c, p=row) for row in probs])
    return probs, targets


# --------------------------------------------------------------------------------------------
# expected_calibration_error(norm=...)


def test_torchmetrics_docstring_examples() -> None:
    # torchmetrics' multiclass_calibration_error example: 0.2000, 0.2082, 0.2333.
    probs = np.array([[0.25, 0.20, 0.55], [0.55, 0.05, 0.40], [0.10, 0.30, 0.60], [0.90, 0.05, 0.05]])
    targets = np.array([0, 1, 2, 0])
    got = {n: float(expected_calibration_error(probs, targets, n_bins=3, norm=n)) for n in NORMS}
    assert got["l1"] == pytest.approx(0.2, abs=1e-15)
    assert got["l2"] == pytest.approx(math.sqrt(0.75 * (1.7 / 3 - 1 / 3) ** 2 + 0.25 * 0.1**2), rel=1e-14)
    assert round(got["l2"], 4) == 0.2082
    assert round(got["max"], 4) == 0.2333
    # torchmetrics' binary_calibration_error example (positive-class probability): 0.29, 0.2918, 0.3167;
    # here the classwise error of the two mirrored columns.
    p = np.array([0.25, 0.25, 0.55, 0.75, 0.75])
    y = np.array([0, 0, 1, 1, 1])
    got = {n: float(classwise_calibration_error(p, y, n_bins=2, norm=n)) for n in NORMS}
    assert got["l1"] == pytest.approx(0.29, rel=1e-14)
    assert round(got["l2"], 4) == 0.2918
    assert round(got["max"], 4) == 0.3167


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("n_bins", [1, 3, 10, 15, 40])
@pytest.mark.parametrize("n_classes", [2, 3, 10])
def test_ece_equals_torchmetrics_formula(norm: str, n_bins: int, n_classes: int) -> None:
    rng = np.random.default_rng(n_bins * 100 + n_classes)
    probs, targets = off_edges(rng, 400, n_classes)
    conf, acc = top_label(probs, targets)
    expected = torchmetrics_ce(conf, acc, n_bins, norm)
    got = expected_calibration_error(probs, targets, n_bins=n_bins, norm=norm)
    assert float(got) == pytest.approx(expected, rel=1e-12, abs=1e-15)
    weights = rng.uniform(0.0, 3.0, size=400)
    expected = torchmetrics_ce(conf, acc, n_bins, norm, weights)
    got = expected_calibration_error(probs, targets, n_bins=n_bins, norm=norm, sample_weight=weights)
    assert float(got) == pytest.approx(expected, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("norm", NORMS)
def test_ece_binary_top_label_every_norm(norm: str) -> None:
    rng = np.random.default_rng(3)
    p = rng.uniform(0.0, 1.0, size=300)
    y = (rng.uniform(size=300) < p).astype(np.int64)
    conf = np.maximum(p, 1 - p)
    acc = ((p >= 0.5) == (y == 1)).astype(np.float64)
    got = float(expected_calibration_error(p, y, n_bins=7, norm=norm))
    assert got == pytest.approx(torchmetrics_ce(conf, acc, 7, norm), rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("n_bins", [1, 2, 6, 13])
def test_ece_quantile_bins_every_norm(norm: str, n_bins: int) -> None:
    rng = np.random.default_rng(n_bins)
    probs, targets = off_edges(rng, 250, 4)
    weights = rng.uniform(0.0, 2.0, size=250)
    conf, acc = top_label(probs, targets)
    for w in (None, weights):
        got = float(
            expected_calibration_error(probs, targets, n_bins=n_bins, strategy="quantile", norm=norm, sample_weight=w)
        )
        assert got == pytest.approx(binned_ce(conf, acc, n_bins, "quantile", norm, w), rel=1e-12, abs=1e-15)


def test_ece_l1_default_unchanged_and_integer_weights_repeat_rows() -> None:
    rng = np.random.default_rng(5)
    probs, targets = off_edges(rng, 60, 3)
    assert float(expected_calibration_error(probs, targets)) == float(
        expected_calibration_error(probs, targets, norm="l1")
    )
    counts = rng.integers(0, 4, size=60)
    counts[0] = 1
    repeated = np.repeat(np.arange(60), counts)
    for norm in NORMS:
        for strategy in ("uniform",):
            weighted = expected_calibration_error(probs, targets, norm=norm, strategy=strategy, sample_weight=counts)
            plain = expected_calibration_error(probs[repeated], targets[repeated], norm=norm, strategy=strategy)
            assert float(weighted) == pytest.approx(float(plain), rel=1e-12, abs=1e-15)


def test_ece_perfect_calibration_is_zero_for_every_norm() -> None:
    probs = np.array([[0.75, 0.25]] * 4)
    targets = np.array([0, 0, 0, 1])
    for norm in NORMS:
        assert float(expected_calibration_error(probs, targets, norm=norm)) == 0.0


@settings(max_examples=50, deadline=None)
@given(
    hnp.arrays(np.float64, st.tuples(st.integers(1, 40), st.integers(2, 5)), elements=st.floats(0.0, 1.0)),
    st.integers(1, 20),
    st.sampled_from(["uniform", "quantile"]),
    st.booleans(),
)
def test_property_norms_ordered(raw: np.ndarray, n_bins: int, strategy: str, weighted: bool) -> None:
    # For the same bins: l1 = E|g| <= sqrt(E g^2) = l2 <= max |g| (Jensen; a mean below the maximum).
    raw[:, 0] += 1e-3
    probs = raw / raw.sum(axis=1, keepdims=True)
    targets = np.arange(probs.shape[0]) % probs.shape[1]
    w = np.linspace(0.5, 2.0, probs.shape[0]) if weighted else None
    l1, l2, mx = (
        float(expected_calibration_error(probs, targets, n_bins=n_bins, strategy=strategy, norm=n, sample_weight=w))
        for n in NORMS
    )
    assert 0 <= l1 <= l2 * (1 + 1e-12) + 1e-15
    assert l2 <= mx * (1 + 1e-12) + 1e-15
    assert mx <= 1 + 1e-15
    conf, acc = top_label(probs, targets)
    for norm, got in zip(NORMS, (l1, l2, mx), strict=True):
        assert got == pytest.approx(binned_ce(conf, acc, n_bins, strategy, norm, w), rel=1e-9, abs=1e-12)
    cw = [
        float(classwise_calibration_error(probs, targets, n_bins=n_bins, strategy=strategy, norm=n, sample_weight=w))
        for n in NORMS
    ]
    assert 0 <= cw[0] <= cw[1] * (1 + 1e-12) + 1e-15 <= cw[2] * (1 + 1e-12) + 2e-15


@pytest.mark.parametrize("norm", NORMS)
@requires_torch
def test_ece_torch_matches_numpy_and_has_finite_gradient(norm: str) -> None:
    rng = np.random.default_rng(11)
    probs, targets = off_edges(rng, 120, 4)
    expected = float(expected_calibration_error(probs, targets, n_bins=6, norm=norm))
    t = torch.tensor(probs, requires_grad=True)
    out = expected_calibration_error(t, torch.tensor(targets), n_bins=6, norm=norm)
    assert isinstance(out, torch.Tensor)
    assert out.ndim == 0
    assert out.dtype == torch.float64
    assert float(out.detach()) == pytest.approx(expected, rel=1e-12)
    out.backward()
    assert torch.isfinite(t.grad).all()
    # a perfectly calibrated input: the l2 norm's square root does not make the gradient NaN
    flat = torch.tensor([[0.75, 0.25]] * 4, requires_grad=True)
    zero = expected_calibration_error(flat, torch.tensor([0, 0, 0, 1]), norm=norm)
    zero.backward()
    assert float(zero.detach()) == 0.0
    assert torch.isfinite(flat.grad).all()


def test_ece_norm_errors() -> None:
    p, y = np.array([[0.6, 0.4], [0.3, 0.7]]), np.array([0, 1])
    for bad in ("l3", "L1", None, 2):
        with pytest.raises(ValueError, match=r"`norm` must be one of 'l1', 'l2', 'max'; got"):
            expected_calibration_error(p, y, norm=bad)
    with pytest.raises(ValueError, match=r"`norm`.*'inf'"):
        classwise_calibration_error(p, y, norm="inf")


# --------------------------------------------------------------------------------------------
# _calibration_from_bins (the streaming scorer's entry point)


def test_calibration_from_bins_equals_ece() -> None:
    rng = np.random.default_rng(2)
    probs, targets = off_edges(rng, 500, 5)
    weights = rng.uniform(0.0, 2.0, size=500)
    conf, acc = top_label(probs, targets)
    bins = right_closed_bins(conf, 15, "uniform")
    for w in (np.ones(500), weights):
        sums = [np.bincount(bins, weights=w * v, minlength=15) for v in (conf, acc, np.ones(500))]
        for norm in NORMS:
            got = _calibration_from_bins(sums[0], sums[1], sums[2], norm=norm)
            assert isinstance(got, float)
            expected = float(expected_calibration_error(probs, targets, norm=norm, sample_weight=w))
            assert got == pytest.approx(expected, rel=1e-13, abs=1e-16)


def test_calibration_from_bins_edge_cases() -> None:
    zeros = np.zeros(4)
    for norm in NORMS:
        assert math.isnan(_calibration_from_bins(zeros, zeros, zeros, norm=norm))
    # integer counts and lists are accepted; one bin
    assert _calibration_from_bins([3.0], [2], [4], norm="max") == pytest.approx(0.25)
    # empty bins between full ones do not count, also not for max
    assert _calibration_from_bins([0.9, 0.0, 0.1], [1.0, 0.0, 0.0], [1, 0, 1], norm="max") == pytest.approx(0.1)
    with pytest.raises(ValueError, match="`norm`"):
        _calibration_from_bins(zeros, zeros, zeros, norm="l0")
    with pytest.raises(ValueError, match="one entry per bin"):
        _calibration_from_bins(np.zeros(3), zeros, zeros, norm="l1")
    with pytest.raises(ValueError, match="one entry per bin"):
        _calibration_from_bins(np.zeros((2, 2)), np.zeros((2, 2)), np.zeros((2, 2)), norm="l1")


# --------------------------------------------------------------------------------------------
# classwise_calibration_error


def classwise_reference(probs, targets, n_bins, strategy, norm, weights=None) -> float:
    columns = probs if probs.ndim == 2 else np.stack([1 - probs, probs], axis=1)
    errors = []
    for k in range(columns.shape[1]):
        errors.append(binned_ce(columns[:, k], (targets == k).astype(np.float64), n_bins, strategy, norm, weights))
    return float(np.mean(errors))


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("strategy", ["uniform", "quantile"])
@pytest.mark.parametrize("n_classes", [2, 3, 8])
def test_classwise_equals_reference(norm: str, strategy: str, n_classes: int) -> None:
    rng = np.random.default_rng(n_classes)
    probs, targets = off_edges(rng, 300, n_classes)
    weights = rng.uniform(0.0, 2.0, size=300)
    for w in (None, weights):
        got = classwise_calibration_error(probs, targets, n_bins=10, strategy=strategy, norm=norm, sample_weight=w)
        expected = classwise_reference(probs, targets, 10, strategy, norm, w)
        assert float(got) == pytest.approx(expected, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("norm", NORMS)
def test_classwise_binary_is_torchmetrics_binary(norm: str) -> None:
    # torchmetrics' BinaryCalibrationError bins the positive-class probability against the outcome;
    # the two mirrored columns have equal errors, so their mean is that error.
    rng = np.random.default_rng(8)
    p = rng.uniform(0.001, 0.999, size=500)
    y = (rng.uniform(size=500) < p**1.5).astype(np.int64)
    expected = torchmetrics_ce(p, y, 15, norm)
    assert float(classwise_calibration_error(p, y, norm=norm)) == pytest.approx(expected, rel=1e-12)
    two_columns = np.stack([1 - p, p], axis=1)
    assert float(classwise_calibration_error(two_columns, y, norm=norm)) == pytest.approx(expected, rel=1e-12)


@requires_torch
def test_classwise_with_labels_and_torch() -> None:
    rng = np.random.default_rng(4)
    probs, targets = off_edges(rng, 200, 3)
    names = np.array(["cat", "cow", "dog"])
    expected = float(classwise_calibration_error(probs, targets, n_bins=8))
    assert float(classwise_calibration_error(probs, names[targets], n_bins=8, labels=names)) == pytest.approx(
        expected, rel=1e-14
    )
    # a class absent from the targets still counts (its column is compared with 0 outcomes)
    only_two = np.where(targets == 2, 0, targets)
    got = float(classwise_calibration_error(probs, names[only_two], n_bins=8, labels=names))
    assert got == pytest.approx(classwise_reference(probs, only_two, 8, "uniform", "l1"), rel=1e-12)
    # binary with labels: the greater label is the positive class
    p = rng.uniform(size=50)
    y = (rng.uniform(size=50) < p).astype(np.int64)
    assert float(classwise_calibration_error(p, np.array(["no", "yes"])[y], labels=["no", "yes"])) == pytest.approx(
        float(classwise_calibration_error(p, y)), rel=1e-14
    )
    t = torch.tensor(probs, requires_grad=True)
    out = classwise_calibration_error(t, torch.tensor(targets), n_bins=8, norm="l2")
    assert isinstance(out, torch.Tensor)
    assert out.dtype == torch.float64
    assert float(out.detach()) == pytest.approx(
        float(classwise_calibration_error(probs, targets, n_bins=8, norm="l2")), rel=1e-12
    )
    out.backward()
    assert torch.isfinite(t.grad).all()
    f32 = classwise_calibration_error(t.detach().float(), torch.tensor(targets), n_bins=8)
    assert f32.dtype == torch.float32


def test_classwise_errors() -> None:
    probs = np.array([[0.6, 0.3, 0.1], [0.2, 0.7, 0.1]])
    with pytest.raises(ValueError, match=r"`targets`.*\[0, 3\).*5"):
        classwise_calibration_error(probs, np.array([0, 5]))
    with pytest.raises(ValueError, match="`probs` must have one column per class"):
        classwise_calibration_error(probs, ["a", "b"], labels=["a", "b"])
    with pytest.raises(ValueError, match="`targets` must only hold labels listed in `labels`"):
        classwise_calibration_error(probs, ["a", "z"], labels=["a", "b", "c"])
    with pytest.raises(ValueError, match="`n_bins` must be >= 1; got 0"):
        classwise_calibration_error(probs, np.array([0, 1]), n_bins=0)
    with pytest.raises(ValueError, match=r"`strategy`.*'equal'"):
        classwise_calibration_error(probs, np.array([0, 1]), strategy="equal")
    with pytest.raises(ValueError, match="`sample_weight` must not sum to 0"):
        classwise_calibration_error(probs, np.array([0, 1]), sample_weight=[0.0, 0.0])
    with pytest.raises(ValueError, match="`probs`"):
        classwise_calibration_error(np.array([[1.5, -0.5]]), np.array([0]))


# --------------------------------------------------------------------------------------------
# brier_score_decomposition


def murphy_reference(forecast: np.ndarray, outcome: np.ndarray, weights: np.ndarray) -> tuple[float, float, float]:
    """REL, RES, UNC of one binary column, grouped by distinct forecast values with a dict."""
    groups: dict[float, list[int]] = {}
    for i, f in enumerate(forecast.tolist()):
        groups.setdefault(f, []).append(i)
    total = weights.sum()
    base = np.sum(weights * outcome) / total
    rel = res = 0.0
    for f, members in groups.items():
        wg = weights[members]
        if wg.sum() == 0:
            continue
        og = np.sum(wg * outcome[members]) / wg.sum()
        rel += wg.sum() * (f - og) ** 2
        res += wg.sum() * (og - base) ** 2
    return rel / total, res / total, base * (1 - base)


def test_decomposition_hand_computed() -> None:
    # 0.9 four times (3 hits), 0.2 five times (1 hit): REL = 4 (0.15)^2 / 9 = 0.01,
    # RES = (4 (0.75 - 4/9)^2 + 5 (0.2 - 4/9)^2) / 9, UNC = (4/9)(5/9).
    p = np.array([0.9, 0.9, 0.9, 0.9, 0.2, 0.2, 0.2, 0.2, 0.2])
    y = np.array([1, 1, 1, 0, 0, 0, 0, 0, 1])
    d = brier_score_decomposition(p, y, n_bins=None)
    assert isinstance(d, BrierDecomposition)
    base = 4 / 9
    assert float(d.reliability) == pytest.approx(0.01, rel=1e-13)
    assert float(d.resolution) == pytest.approx((4 * (0.75 - base) ** 2 + 5 * (0.2 - base) ** 2) / 9, rel=1e-13)
    assert float(d.uncertainty) == pytest.approx(base * (1 - base), rel=1e-13)
    assert float(d.within_bin_variance) == 0.0
    assert float(d.within_bin_covariance) == 0.0
    # the brier score of these forecasts: (3 * 0.01 + 0.81 + 4 * 0.04 + 0.64) / 9
    assert float(d.reliability - d.resolution + d.uncertainty) == pytest.approx((0.03 + 0.81 + 0.16 + 0.64) / 9)


@pytest.mark.parametrize("n_classes", [2, 3, 6])
def test_decomposition_distinct_values_equals_murphy_reference(n_classes: int) -> None:
    rng = np.random.default_rng(n_classes)
    # forecasts on a grid of tenths, so groups hold many samples
    raw = rng.integers(1, 10, size=(400, n_classes)).astype(np.float64)
    probs = raw / raw.sum(axis=1, keepdims=True) if n_classes > 2 else np.round(rng.uniform(size=400), 1)
    targets = rng.integers(0, n_classes, size=400)
    weights = rng.uniform(0.0, 2.0, size=400)
    columns = probs if probs.ndim == 2 else np.stack([1 - probs, probs], axis=1)
    scale = 0.5 if n_classes == 2 else 1.0
    for w in (np.ones(400), weights):
        parts = np.zeros(3)
        for k in range(n_classes):
            parts += murphy_reference(columns[:, k], (targets == k).astype(np.float64), w)
        d = brier_score_decomposition(probs, targets, n_bins=None, sample_weight=w)
        for got, expected in zip(d[:3], scale * parts, strict=True):
            assert float(got) == pytest.approx(expected, rel=1e-12, abs=1e-15)
        assert float(d.within_bin_variance) == 0.0
        assert float(d.within_bin_covariance) == 0.0
        assert float(d.reliability - d.resolution + d.uncertainty) == pytest.approx(
            float(brier_score(probs, targets, sample_weight=w)), rel=1e-12
        )


def test_decomposition_binary_halved_is_the_positive_class_alone() -> None:
    rng = np.random.default_rng(6)
    p = np.round(rng.uniform(size=300), 2)
    y = (rng.uniform(size=300) < p).astype(np.int64)
    rel, res, unc = murphy_reference(p, y.astype(np.float64), np.ones(300))
    d = brier_score_decomposition(p, y, n_bins=None)
    assert [float(v) for v in d[:3]] == pytest.approx([rel, res, unc], rel=1e-12)
    unscaled = brier_score_decomposition(p, y, n_bins=None, scale_by_half=False)
    assert [float(v) for v in unscaled[:3]] == pytest.approx([2 * rel, 2 * res, 2 * unc], rel=1e-12)


def test_decomposition_uncertainty_is_the_brier_score_of_the_frequencies() -> None:
    rng = np.random.default_rng(9)
    probs, targets = off_edges(rng, 200, 4)
    w = rng.uniform(0.1, 2.0, size=200)
    d = brier_score_decomposition(probs, targets, sample_weight=w)
    frequencies = np.bincount(targets, weights=w, minlength=4) / w.sum()
    null = np.tile(frequencies, (200, 1))
    assert float(d.uncertainty) == pytest.approx(float(brier_score(null, targets, sample_weight=w)), rel=1e-12)
    # D^2 of the Brier score is then (RES - REL - WBV + 2 WBC) / UNC
    skill = (d.resolution - d.reliability - d.within_bin_variance + 2 * d.within_bin_covariance) / d.uncertainty
    assert float(skill) == pytest.approx(float(d2_brier_score(probs, targets, sample_weight=w)), rel=1e-10)


@settings(max_examples=60, deadline=None)
@given(
    hnp.arrays(np.float64, st.tuples(st.integers(2, 40), st.integers(1, 5)), elements=st.floats(0.0, 1.0)),
    st.one_of(st.none(), st.integers(1, 12)),
    st.sampled_from(["uniform", "quantile"]),
    st.booleans(),
    st.sampled_from([True, False, "auto"]),
)
def test_property_decomposition_identity(raw, n_bins, strategy, weighted, scale_by_half) -> None:
    # BS = REL - RES + UNC + WBV - 2 WBC, for any grouping, weights and scale.
    if raw.shape[1] == 1:
        probs = raw[:, 0]
        n_classes = 2
    else:
        raw[:, 0] += 1e-3
        probs = raw / raw.sum(axis=1, keepdims=True)
        n_classes = raw.shape[1]
    targets = np.arange(raw.shape[0]) % n_classes
    labels = np.arange(n_classes)
    w = np.linspace(0.0, 2.0, raw.shape[0]) if weighted else None
    d = brier_score_decomposition(
        probs, targets, n_bins=n_bins, strategy=strategy, sample_weight=w, labels=labels, scale_by_half=scale_by_half
    )
    total = d.reliability - d.resolution + d.uncertainty + d.within_bin_variance - 2 * d.within_bin_covariance
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = float(brier_score(probs, targets, sample_weight=w, labels=labels, scale_by_half=scale_by_half))
    assert float(total) == pytest.approx(expected, rel=1e-11, abs=1e-14)
    assert float(d.reliability) >= 0
    assert float(d.resolution) >= 0
    assert float(d.uncertainty) >= 0
    assert float(d.within_bin_variance) >= 0
    if n_bins is None:
        assert float(d.within_bin_variance) == 0.0
        assert float(d.within_bin_covariance) == 0.0


def test_decomposition_binned_reliability_is_the_l2_calibration_error_squared() -> None:
    # For binary forecasts in uniform bins, REL (of the positive class) is sum_b (n_b/N)(f_b - o_b)^2:
    # the square of classwise_calibration_error(norm="l2") with the same bins.
    rng = np.random.default_rng(12)
    p = rng.uniform(size=500)
    y = (rng.uniform(size=500) < p**2).astype(np.int64)
    d = brier_score_decomposition(p, y, n_bins=10)
    assert float(d.reliability) == pytest.approx(
        float(classwise_calibration_error(p, y, n_bins=10, norm="l2")) ** 2, rel=1e-12
    )


@requires_torch
def test_decomposition_torch_labels_and_errors() -> None:
    rng = np.random.default_rng(13)
    probs, targets = off_edges(rng, 100, 3)
    names = np.array(["a", "b", "c"])
    expected = brier_score_decomposition(probs, targets)
    labelled = brier_score_decomposition(probs, names[targets], labels=names)
    assert [float(v) for v in labelled] == [float(v) for v in expected]
    out = brier_score_decomposition(torch.tensor(probs, dtype=torch.float32), torch.tensor(targets))
    assert all(isinstance(v, torch.Tensor) and v.ndim == 0 and v.dtype == torch.float32 for v in out)
    assert [float(v) for v in out] == pytest.approx([float(v) for v in expected], rel=1e-5, abs=1e-7)
    with pytest.raises(ValueError, match="`n_bins` must be >= 1; got 0"):
        brier_score_decomposition(probs, targets, n_bins=0)
    with pytest.raises(ValueError, match="`strategy`"):
        brier_score_decomposition(probs, targets, n_bins=None, strategy="bogus")
    with pytest.raises(ValueError, match="`scale_by_half`"):
        brier_score_decomposition(probs, targets, scale_by_half="yes")
    with pytest.raises(ValueError, match="`sample_weight` must not sum to 0"):
        brier_score_decomposition(probs, targets, sample_weight=np.zeros(100))
    with pytest.raises(ValueError, match="`probs` must have one column per class"):
        brier_score_decomposition(probs, targets % 2)


def test_exported_at_top_level() -> None:
    for name in ("classwise_calibration_error", "brier_score_decomposition", "BrierDecomposition"):
        assert getattr(crossentropy, name) is getattr(crossentropy.metrics, name)
