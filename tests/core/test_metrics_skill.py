"""Skill scores and temperature scaling against scikit-learn (and SciPy): d2_log_loss_score,
d2_brier_score, top_k_accuracy and fit_temperature."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import scipy.optimize
import sklearn.metrics
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import crossentropy
from crossentropy.metrics import d2_brier_score, d2_log_loss_score, fit_temperature, log_loss, top_k_accuracy
from tests._support import requires_torch, torch


def sk_quiet(func, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return func(*args, **kwargs)


def sampled(rng: np.random.Generator, n: int, c: int) -> tuple[np.ndarray, np.ndarray]:
    probs = rng.dirichlet(np.full(c, 0.8), size=n)
    targets = np.array([rng.choice(c, p=row) for row in probs])
    return probs, targets


# --------------------------------------------------------------------------------------------
# D^2 scores


@pytest.mark.parametrize(
    ("ours", "theirs"), [(d2_log_loss_score, "d2_log_loss_score"), (d2_brier_score, "d2_brier_score")]
)
@pytest.mark.parametrize("n_classes", [2, 3, 7])
def test_d2_equals_sklearn(ours, theirs, n_classes: int) -> None:
    reference = getattr(sklearn.metrics, theirs)
    rng = np.random.default_rng(n_classes)
    probs, targets = sampled(rng, 300, n_classes)
    probs = 0.7 * probs + 0.3 * rng.dirichlet(np.ones(n_classes), size=300)  # not the sampling distribution
    weights = rng.uniform(0.0, 3.0, size=300)
    for w in (None, weights):
        expected = reference(targets, probs, sample_weight=w)
        assert float(ours(probs, targets, sample_weight=w)) == pytest.approx(expected, rel=1e-12, abs=1e-14)
    if n_classes == 2:  # the positive-class column alone
        expected = reference(targets, probs[:, 1], sample_weight=weights)
        assert float(ours(probs[:, 1], targets, sample_weight=weights)) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    ("ours", "theirs"), [(d2_log_loss_score, "d2_log_loss_score"), (d2_brier_score, "d2_brier_score")]
)
def test_d2_string_labels_and_absent_class(ours, theirs) -> None:
    reference = getattr(sklearn.metrics, theirs)
    rng = np.random.default_rng(1)
    probs, targets = sampled(rng, 200, 4)
    targets[targets == 3] = 0  # class "d" never occurs
    names = np.array(["a", "b", "c", "d"])
    expected = sk_quiet(reference, names[targets], probs, labels=names)
    assert float(ours(probs, names[targets], labels=names)) == pytest.approx(expected, rel=1e-12)
    # a poor model has a negative score; the class frequencies themselves score 0
    assert float(ours(probs[:, ::-1].copy(), names[targets], labels=names)) < 0
    freq = np.bincount(targets, minlength=4) / 200
    assert float(ours(np.tile(freq, (200, 1)), names[targets], labels=names)) == pytest.approx(0.0, abs=1e-12)


@requires_torch
def test_d2_torch_and_gradient() -> None:
    rng = np.random.default_rng(2)
    probs, targets = sampled(rng, 100, 3)
    for func in (d2_log_loss_score, d2_brier_score):
        t = torch.tensor(probs, requires_grad=True)
        out = func(t, torch.tensor(targets))
        assert isinstance(out, torch.Tensor)
        assert out.dtype == torch.float64
        assert float(out.detach()) == pytest.approx(float(func(probs, targets)), rel=1e-13)
        out.backward()
        assert torch.isfinite(t.grad).all()


def test_d2_too_few_samples_and_errors() -> None:
    for func in (d2_log_loss_score, d2_brier_score):
        with pytest.warns(UserWarning, match="less than two samples"):
            assert math.isnan(float(func(np.array([[0.3, 0.7]]), [1])))
        with pytest.raises(ValueError, match="`sample_weight` must not sum to 0"):
            func(np.array([[0.3, 0.7], [0.6, 0.4]]), [1, 0], sample_weight=[0, 0])
        with pytest.raises(ValueError, match="`probs` must have one column per class"):
            func(np.array([[0.3, 0.7], [0.6, 0.4]]), [1, 0], labels=[0, 1, 2])
        with pytest.raises(ValueError, match="`targets`"):
            func(np.array([[0.3, 0.7], [0.6, 0.4]]), [1, 0, 1])
        with pytest.raises(ValueError, match="`probs`"):
            func(np.array([[1.3, -0.3], [0.6, 0.4]]), [1, 0])


# --------------------------------------------------------------------------------------------
# top_k_accuracy


@pytest.mark.parametrize("n_classes", [3, 5, 10])
def test_top_k_equals_sklearn_with_ties(n_classes: int) -> None:
    rng = np.random.default_rng(n_classes)
    scores = rng.integers(0, 4, size=(400, n_classes)).astype(np.float64)  # many ties
    targets = rng.integers(0, n_classes, size=400)
    weights = rng.uniform(0.0, 2.0, size=400)
    for k in range(1, n_classes + 1):
        for w in (None, weights):
            for normalize in (True, False):
                expected = sk_quiet(
                    sklearn.metrics.top_k_accuracy_score,
                    targets,
                    scores,
                    k=k,
                    sample_weight=w,
                    normalize=normalize,
                    labels=np.arange(n_classes),
                )
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    got = top_k_accuracy(scores, targets, k=k, sample_weight=w, normalize=normalize)
                assert float(got) == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_top_k_tie_at_the_cut_goes_to_the_higher_index() -> None:
    scores = np.array([[0.4, 0.4, 0.2], [0.4, 0.4, 0.2]])
    # k=1: class 1 ranks first among the tie, so target 1 is a hit and target 0 is not
    assert float(top_k_accuracy(scores, np.array([1, 0]), k=1, labels=[0, 1, 2])) == 0.5
    assert sklearn.metrics.top_k_accuracy_score([1, 0], scores, k=1, labels=[0, 1, 2]) == 0.5


@pytest.mark.parametrize("k", [1, 2])
def test_top_k_binary_equals_sklearn(k: int) -> None:
    rng = np.random.default_rng(k)
    probs = np.round(rng.uniform(size=200), 1)  # some exactly 0.5
    decision = rng.normal(size=200)
    decision[:5] = 0.0
    y = rng.integers(0, 2, size=200)
    for scores in (probs, decision):
        for labels in (None,):
            expected = sk_quiet(sklearn.metrics.top_k_accuracy_score, y, scores, k=k, labels=labels)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                got = top_k_accuracy(scores, y, k=k)
            assert float(got) == pytest.approx(expected, rel=1e-14)
    strings = np.array(["neg", "pos"])[y]
    expected = sk_quiet(sklearn.metrics.top_k_accuracy_score, strings, decision, k=k)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert float(top_k_accuracy(decision, strings, k=k)) == pytest.approx(expected, rel=1e-14)


@requires_torch
def test_top_k_string_labels_torch_and_dtype() -> None:
    rng = np.random.default_rng(3)
    scores = rng.normal(size=(100, 4))
    targets = rng.integers(0, 3, size=100)  # class 3 absent
    names = np.array(["ant", "bee", "cat", "dog"])
    expected = sklearn.metrics.top_k_accuracy_score(names[targets], scores, k=2, labels=names)
    assert float(top_k_accuracy(scores, names[targets], k=2, labels=names)) == pytest.approx(expected, rel=1e-14)
    t = torch.tensor(scores, dtype=torch.float32)
    out = top_k_accuracy(t, torch.tensor(targets), k=3, labels=np.arange(4))
    assert isinstance(out, torch.Tensor)
    assert out.dtype == torch.float32
    expected = sklearn.metrics.top_k_accuracy_score(targets, scores, k=3, labels=np.arange(4))
    assert float(out) == pytest.approx(expected, rel=1e-6)
    ints = top_k_accuracy(np.array([[3, 1, 2], [0, 5, 1]]), np.array([0, 2]), k=1, labels=[0, 1, 2])
    assert ints.dtype == np.float64
    assert float(ints) == 0.5


@settings(max_examples=60, deadline=None)
@given(
    hnp.arrays(np.int64, st.tuples(st.integers(1, 30), st.integers(3, 6)), elements=st.integers(-2, 2)),
    st.integers(1, 6),
    st.data(),
)
def test_property_top_k_equals_sklearn(scores: np.ndarray, k: int, data) -> None:
    n, c = scores.shape
    targets = np.array(data.draw(st.lists(st.integers(0, c - 1), min_size=n, max_size=n)))
    expected = sk_quiet(sklearn.metrics.top_k_accuracy_score, targets, scores, k=k, labels=np.arange(c))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = float(top_k_accuracy(scores.astype(np.float64), targets, k=k, labels=np.arange(c)))
    assert got == pytest.approx(expected, rel=1e-14)
    # monotone in k
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        more = float(top_k_accuracy(scores.astype(np.float64), targets, k=k + 1, labels=np.arange(c)))
    assert more >= got


def test_top_k_errors_and_warning() -> None:
    scores = np.array([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3]])
    targets = np.array([0, 2])
    with pytest.raises(ValueError, match="`k` must be >= 1; got 0"):
        top_k_accuracy(scores, targets, k=0, labels=[0, 1, 2])
    with pytest.raises(TypeError, match="`k` must be an integer"):
        top_k_accuracy(scores, targets, k=1.5, labels=[0, 1, 2])
    with pytest.raises(TypeError, match="`normalize`"):
        top_k_accuracy(scores, targets, normalize="yes", labels=[0, 1, 2])
    with pytest.raises(ValueError, match=r"`scores` must not contain NaN; got NaN at index \(1, 2\)"):
        top_k_accuracy(np.array([[0.5, 0.3, 0.2], [0.1, 0.6, np.nan]]), targets, labels=[0, 1, 2])
    with pytest.raises(ValueError, match="`scores` must have one column per class"):
        top_k_accuracy(scores, targets)  # only 2 classes seen: pass labels
    with pytest.raises(ValueError, match="`scores` of shape"):
        top_k_accuracy(np.array([0.2, 0.7, 0.9]), np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="`scores` must have shape"):
        top_k_accuracy(np.zeros((2, 2, 2)), targets)
    with pytest.raises(ValueError, match="`sample_weight` must not sum to 0"):
        top_k_accuracy(scores, targets, k=1, labels=[0, 1, 2], sample_weight=[0, 0])
    with pytest.warns(UserWarning, match=r"`k` \(3\) is at least the number of classes \(3\)"):
        assert float(top_k_accuracy(scores, targets, k=3, labels=[0, 1, 2])) == 1.0


# --------------------------------------------------------------------------------------------
# fit_temperature


def nll(logits: np.ndarray, targets: np.ndarray, temperature: float, weights=None) -> float:
    z = logits / temperature
    z = z - z.max(axis=1, keepdims=True)
    loss = np.log(np.exp(z).sum(axis=1)) - z[np.arange(len(targets)), targets]
    return float(np.average(loss, weights=weights))


def calibration_data(rng: np.random.Generator, n: int, c: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    true = rng.normal(size=(n, c)) * 1.5
    p = np.exp(true) / np.exp(true).sum(axis=1, keepdims=True)
    targets = np.array([rng.choice(c, p=row) for row in p])
    return true * scale, targets


def sklearn_temperature(logits: np.ndarray, targets: np.ndarray, weights=None) -> float:
    """1 / beta_ of scikit-learn's CalibratedClassifierCV(method="temperature") on fixed logits."""
    from sklearn.base import BaseEstimator, ClassifierMixin
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.frozen import FrozenEstimator

    class FixedLogits(ClassifierMixin, BaseEstimator):
        def fit(self, X, y):
            self.classes_ = np.unique(y)
            return self

        def predict(self, X):
            return self.classes_[np.argmax(X, axis=1)]

        def decision_function(self, X):
            # binary: scikit-learn reads x as the logits (-x, x), the same model as (z0, z1)
            return (X[:, 1] - X[:, 0]) / 2 if X.shape[1] == 2 else X

    model = FixedLogits().fit(logits, targets)
    calibrated = sk_quiet(
        CalibratedClassifierCV(FrozenEstimator(model), method="temperature").fit,
        logits,
        targets,
        sample_weight=weights,
    )
    return 1.0 / float(calibrated.calibrated_classifiers_[0].calibrators[0].beta_)


@pytest.mark.parametrize("n_classes", [2, 3, 10])
@pytest.mark.parametrize("scale", [0.3, 1.0, 4.0])
def test_fit_temperature_matches_sklearn(n_classes: int, scale: float) -> None:
    rng = np.random.default_rng(n_classes * 10 + int(scale * 10))
    logits, targets = calibration_data(rng, 600, n_classes, scale)
    weights = rng.uniform(0.1, 2.0, size=600)
    for w in (None, weights):
        ours = fit_temperature(logits, targets, sample_weight=w)
        theirs = sklearn_temperature(logits, targets, w)
        assert isinstance(ours, float)
        assert nll(logits, targets, ours, w) == pytest.approx(nll(logits, targets, theirs, w), abs=1e-6)
        assert nll(logits, targets, ours, w) <= nll(logits, targets, theirs, w) + 1e-12
        assert ours == pytest.approx(theirs, rel=1e-5)
        assert ours == pytest.approx(scale, rel=0.35)


def test_fit_temperature_is_the_minimum_of_scipy() -> None:
    # scipy's bounded Brent on log T over a fine bracket, run to its tolerance floor
    rng = np.random.default_rng(7)
    logits, targets = calibration_data(rng, 800, 5, 2.5)
    weights = rng.uniform(0.0, 2.0, size=800)
    ours = fit_temperature(logits, targets, sample_weight=weights)
    result = scipy.optimize.minimize_scalar(
        lambda log_t: nll(logits, targets, math.exp(log_t), weights),
        bounds=(math.log(0.1), math.log(50.0)),
        method="bounded",
        options={"xatol": 1e-12},
    )
    assert ours == pytest.approx(math.exp(result.x), rel=1e-6)
    assert nll(logits, targets, ours, weights) <= result.fun + 1e-14
    # the derivative of the loss in beta = 1/T vanishes at the optimum
    beta, h = 1 / ours, 1e-5
    slope = (nll(logits, targets, 1 / (beta + h), weights) - nll(logits, targets, 1 / (beta - h), weights)) / (2 * h)
    assert abs(slope) < 1e-8


@requires_torch
def test_fit_temperature_binary_logits_and_torch() -> None:
    rng = np.random.default_rng(4)
    logits, targets = calibration_data(rng, 300, 2, 3.0)
    log_odds = logits[:, 1] - logits[:, 0]
    two_columns = fit_temperature(logits, targets)
    assert fit_temperature(log_odds, targets) == pytest.approx(two_columns, rel=1e-12)
    assert fit_temperature(np.stack([np.zeros(300), log_odds], axis=1), targets) == pytest.approx(
        two_columns, rel=1e-12
    )
    logits, targets = calibration_data(rng, 300, 4, 3.0)
    expected = fit_temperature(logits, targets)
    for dtype in (torch.float64, torch.float32):
        t = torch.tensor(logits, dtype=dtype, requires_grad=True)
        got = fit_temperature(t, torch.tensor(targets), sample_weight=torch.ones(300, dtype=dtype))
        assert isinstance(got, float)
        assert got == pytest.approx(expected, rel=1e-5 if dtype == torch.float32 else 1e-12)
    # batch dimensions: (..., n_classes) with targets (...)
    assert fit_temperature(logits.reshape(3, 100, 4), targets.reshape(3, 100)) == pytest.approx(expected, rel=1e-12)


def test_fit_temperature_degenerate_cases() -> None:
    # separated: every target is the arg-max, so the loss falls down to T -> 0
    assert fit_temperature(np.array([[3.0, 1.0], [0.0, 2.0]]), np.array([0, 1])) == 0.0
    # a tie at the maximum still decreases towards T -> 0 when some row is not constant
    assert fit_temperature(np.array([[2.0, 2.0, 0.0], [0.0, 1.0, 0.0]]), np.array([0, 1])) == 0.0
    # constant rows: the loss is log C for every T
    assert fit_temperature(np.full((4, 3), 0.7), np.array([0, 1, 2, 0])) == 1.0
    # anti-correlated: uniform predictions (T = inf) are best
    assert fit_temperature(np.array([[0.0, 3.0], [2.0, 0.0], [0.0, 1.0]]), np.array([0, 1, 0])) == math.inf
    # zero-weight rows do not count: the misclassified row below is weighted 0
    logits = np.array([[3.0, 1.0], [0.0, 2.0], [5.0, 0.0]])
    assert fit_temperature(logits, np.array([0, 1, 1]), sample_weight=[1.0, 1.0, 0.0]) == 0.0
    # -inf logits (masked classes) are fine away from the target
    rng = np.random.default_rng(5)
    logits, targets = calibration_data(rng, 200, 4, 2.0)
    masked = np.concatenate([logits, np.full((200, 1), -np.inf)], axis=1)
    assert fit_temperature(masked, targets) == pytest.approx(fit_temperature(logits, targets), rel=1e-12)


def test_fit_temperature_nearly_separated_and_extreme_scales(monkeypatch) -> None:
    import crossentropy.metrics as metrics

    evaluations = []
    original = metrics._temperature_derivatives

    def counted(*args):
        evaluations.append(args[3])
        return original(*args)

    monkeypatch.setattr(metrics, "_temperature_derivatives", counted)
    # a thousand confident right answers and one wrong one by a hair: the optimum is at a small T
    logits = np.array([[5.0, 0.0]] * 1000 + [[0.0, 1e-3]])
    targets = np.zeros(1001, dtype=np.int64)
    t = fit_temperature(logits, targets)
    result = scipy.optimize.minimize_scalar(
        lambda log_t: nll(logits, targets, math.exp(log_t)),
        bounds=(-8.0, 3.0),
        method="bounded",
        options={"xatol": 1e-12},
    )
    assert t == pytest.approx(math.exp(result.x), rel=1e-6)
    assert len(evaluations) < 40
    rng = np.random.default_rng(8)
    true, targets = calibration_data(rng, 500, 6, 1.0)
    reference = fit_temperature(true, targets)
    for scale in (1e-8, 1e-3, 1e3, 1e8):
        evaluations.clear()
        assert fit_temperature(true * scale, targets) == pytest.approx(reference * scale, rel=1e-10)
        assert len(evaluations) < 60


def test_fit_temperature_errors() -> None:
    logits = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 2.0]])
    targets = np.array([0, 1, 0])
    with pytest.raises(ValueError, match=r"`logits` must be finite at the target class.*row 2"):
        fit_temperature(np.array([[1.0, 0.0], [0.0, 1.0], [-np.inf, 2.0]]), targets)
    with pytest.raises(ValueError, match="`logits` must not contain NaN or \\+inf; got one in row 1"):
        fit_temperature(np.array([[1.0, 0.0], [np.nan, 1.0], [1.0, 2.0]]), targets)
    with pytest.raises(ValueError, match="`sample_weight` must not sum to 0"):
        fit_temperature(logits, targets, sample_weight=[0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="`sample_weight`"):
        fit_temperature(logits, targets, sample_weight=[1.0, -1.0, 1.0])
    with pytest.raises(ValueError, match="`targets`"):
        fit_temperature(logits, np.array([0, 1, 2]))
    with pytest.raises(TypeError, match="`targets` must be integer class indices"):
        fit_temperature(logits, np.array([0.0, 1.0, 0.0]))
    with pytest.raises(TypeError, match="`logits`"):
        fit_temperature(np.array([[1, 0], [0, 1]]), np.array([0, 1]))
    with pytest.warns(crossentropy.ProbabilitiesAsLogitsWarning):
        fit_temperature(np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]]), targets)


@settings(max_examples=40, deadline=None)
@given(
    hnp.arrays(np.float64, st.tuples(st.integers(2, 30), st.integers(2, 5)), elements=st.floats(-8, 8)),
    st.data(),
)
def test_property_fit_temperature_is_a_minimum(logits: np.ndarray, data) -> None:
    n, c = logits.shape
    targets = np.array(data.draw(st.lists(st.integers(0, c - 1), min_size=n, max_size=n)))
    t = fit_temperature(logits, targets)
    assert t >= 0
    if 0 < t < math.inf:
        best = nll(logits, targets, t)
        for factor in (0.5, 0.9, 0.999, 1.001, 1.1, 2.0):
            assert best <= nll(logits, targets, t * factor) + 1e-12
    elif t == 0:
        # separated: the loss keeps falling as T shrinks
        assert nll(logits, targets, 1e-3) <= nll(logits, targets, 1.0) + 1e-12
    elif t == math.inf:
        assert nll(logits, targets, 1e6) <= nll(logits, targets, 1.0) + 1e-12


def test_log_loss_after_temperature_and_exports() -> None:
    rng = np.random.default_rng(6)
    logits, targets = calibration_data(rng, 500, 3, 5.0)
    t = fit_temperature(logits, targets)

    def softmax(z):
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    assert float(log_loss(softmax(logits / t), targets)) < float(log_loss(softmax(logits), targets))
    for name in ("d2_log_loss_score", "d2_brier_score", "top_k_accuracy", "fit_temperature"):
        assert getattr(crossentropy, name) is getattr(crossentropy.metrics, name)
