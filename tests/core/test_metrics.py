"""Tests of crossentropy.metrics against scikit-learn, PyTorch, independent loops and properties."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import sklearn.calibration
import sklearn.metrics
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from crossentropy import ProbabilitiesAsLogitsWarning
from crossentropy.metrics import (
    ReliabilityCurve,
    brier_score,
    expected_calibration_error,
    log_loss,
    perplexity,
    reliability_curve,
)
from tests._support import F, requires_torch, torch

EPS64 = float(np.finfo(np.float64).eps)


def dirichlet(rng: np.random.Generator, n: int, c: int) -> np.ndarray:
    return rng.dirichlet(np.ones(c), size=n)


def sk_quiet(func, *args, **kwargs):
    """Call a scikit-learn function, ignoring its warnings (we assert ours separately)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return func(*args, **kwargs)


# --------------------------------------------------------------------------------------------
# log_loss


@pytest.mark.parametrize("n_classes", [2, 3, 7])
def test_log_loss_matches_sklearn_multiclass(n_classes: int) -> None:
    rng = np.random.default_rng(n_classes)
    for _ in range(5):
        probs = dirichlet(rng, 40, n_classes)
        y = rng.integers(0, n_classes, 40)
        y[:n_classes] = np.arange(n_classes)  # every class occurs
        w = rng.random(40)
        out = log_loss(probs, y)
        assert isinstance(out, np.ndarray)
        assert out.shape == ()
        assert float(out) == pytest.approx(sklearn.metrics.log_loss(y, probs), rel=1e-12)
        assert float(log_loss(probs, y, sample_weight=w)) == pytest.approx(
            sklearn.metrics.log_loss(y, probs, sample_weight=w), rel=1e-12
        )


def test_log_loss_binary_positive_class_probabilities() -> None:
    rng = np.random.default_rng(1)
    p = rng.random(50)
    p[:3] = [0.0, 1.0, 0.5]  # clipped ends
    y = rng.integers(0, 2, 50)
    y[:2] = [1, 0]  # confidently wrong: costs -log(eps)
    expected = sklearn.metrics.log_loss(y, p)
    assert float(log_loss(p, y)) == pytest.approx(expected, rel=1e-12)
    assert float(log_loss(p[:, None], y)) == pytest.approx(expected, rel=1e-12)
    assert float(log_loss(np.stack([1 - p, p], axis=1), y)) == pytest.approx(expected, rel=1e-12)
    # The clipping bound by hand: one confidently wrong sample costs -log(eps) = 36.04 nats.
    assert float(log_loss(np.array([0.0, 1.0]), [1, 1], labels=[0, 1])) == pytest.approx(
        -math.log(EPS64) / 2, rel=1e-12
    )
    assert round(-math.log(EPS64), 2) == 36.04


def test_log_loss_string_labels_and_labels_argument() -> None:
    rng = np.random.default_rng(2)
    classes = np.array(["ant", "bee", "cat", "dog"])
    probs = dirichlet(rng, 30, 4)
    y = classes[rng.integers(0, 3, 30)]  # "dog" never occurs
    expected = sklearn.metrics.log_loss(y, probs, labels=classes)
    assert float(log_loss(probs, y, labels=classes)) == pytest.approx(expected, rel=1e-12)
    assert float(log_loss(probs, list(y), labels=list(classes))) == pytest.approx(expected, rel=1e-12)
    y_full = classes[rng.integers(0, 4, 30)]
    y_full[:4] = classes
    assert float(log_loss(probs, y_full)) == pytest.approx(sklearn.metrics.log_loss(y_full, probs), rel=1e-12)
    # Binary string labels: the column is the probability of the greater label, "spam".
    p = np.array([0.9, 0.1, 0.2, 0.65])
    y2 = ["spam", "ham", "ham", "spam"]
    assert float(log_loss(p, y2)) == pytest.approx(sklearn.metrics.log_loss(y2, p), rel=1e-12)
    assert round(float(log_loss(p, y2)), 5) == 0.21616


def test_log_loss_labels_with_weights_and_base() -> None:
    rng = np.random.default_rng(3)
    probs = dirichlet(rng, 25, 3)
    y = rng.integers(0, 2, 25)  # class 2 never occurs
    w = rng.random(25)
    expected = sklearn.metrics.log_loss(y, probs, sample_weight=w, labels=[0, 1, 2])
    assert float(log_loss(probs, y, labels=[0, 1, 2], sample_weight=w)) == pytest.approx(expected, rel=1e-12)
    bits = float(log_loss(probs, y, labels=[0, 1, 2], sample_weight=w, base=2))
    assert bits == pytest.approx(expected / math.log(2), rel=1e-12)


@requires_torch
def test_log_loss_float32_and_torch() -> None:
    rng = np.random.default_rng(4)
    probs = dirichlet(rng, 40, 3).astype(np.float32)
    y = rng.integers(0, 3, 40)
    y[:3] = [0, 1, 2]
    out32 = log_loss(probs, y)
    assert out32.dtype == np.float32
    assert float(out32) == pytest.approx(sklearn.metrics.log_loss(y, probs), rel=2e-6)

    probs64 = probs / probs.sum(axis=1, keepdims=True, dtype=np.float64)  # rows sum to 1 in float64 too
    t = torch.tensor(probs64, requires_grad=True)
    out = log_loss(t, torch.tensor(y))
    assert isinstance(out, torch.Tensor)
    assert out.dtype == torch.float64
    assert out.shape == ()
    assert float(out.detach()) == pytest.approx(sklearn.metrics.log_loss(y, probs64), rel=1e-12)
    out.backward()
    # d/dp of mean(-log p_true): -1 / (N p_true) at the true entries, 0 elsewhere.
    expected = np.zeros_like(probs64)
    rows = np.arange(40)
    expected[rows, y] = -1.0 / (40 * probs64[rows, y])
    np.testing.assert_allclose(t.grad.numpy(), expected, rtol=1e-12)

    for dtype in (torch.bfloat16, torch.float16):
        half = log_loss(torch.tensor(probs, dtype=dtype), y)
        assert half.dtype == dtype
        reference = sk_quiet(sklearn.metrics.log_loss, y, torch.tensor(probs, dtype=dtype).double().numpy())
        assert float(half) == pytest.approx(reference, rel=1e-2)


def test_log_loss_unnormalized_rows_warn_and_are_not_renormalized() -> None:
    probs = np.array([[0.2, 0.2], [0.5, 0.5]])
    y = [0, 1]
    with pytest.warns(UserWarning, match=r"`probs` rows should sum to 1; got a sum of 0.4 at row 0"):
        out = float(log_loss(probs, y))
    assert out == pytest.approx(-(math.log(0.2) + math.log(0.5)) / 2, rel=1e-14)
    assert out == pytest.approx(sk_quiet(sklearn.metrics.log_loss, y, probs), rel=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        log_loss(np.array([[0.3, 0.7 + 1e-9]]), [1], labels=[0, 1])  # within sqrt(eps): silent


@requires_torch
def test_log_loss_warning_on_a_tensor_with_grad_has_no_torch_warning() -> None:
    t = torch.tensor([[0.2, 0.2], [0.5, 0.5]], dtype=torch.float64, requires_grad=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = log_loss(t, [0, 1])
    assert [str(w.message)[:36] for w in caught] == ["`probs` rows should sum to 1; got a "]
    out.backward()
    np.testing.assert_allclose(t.grad.numpy(), [[-1 / (2 * 0.2), 0.0], [0.0, -1 / (2 * 0.5)]], rtol=1e-14)


def test_log_loss_unsorted_labels_warn() -> None:
    probs = np.array([[0.8, 0.2], [0.3, 0.7]])
    with pytest.warns(UserWarning, match=r"sorted label order \['a', 'b'\]"):
        out = float(log_loss(probs, ["a", "b"], labels=["b", "a"]))
    assert out == pytest.approx(-(math.log(0.8) + math.log(0.7)) / 2, rel=1e-14)


def test_log_loss_errors() -> None:
    good = np.array([[0.8, 0.2], [0.3, 0.7]])
    with pytest.raises(ValueError, match=r"`probs` must contain probabilities in \[0, 1\]; got 1.2"):
        log_loss(np.array([[1.2, -0.2], [0.3, 0.7]]), [0, 1])
    with pytest.raises(ValueError, match=r"`targets` must only hold labels listed in `labels` \[0, 1\]; got 5"):
        log_loss(good, [0, 5], labels=[0, 1])
    with pytest.raises(ValueError, match=r"`targets` must only hold labels listed in `labels` \['a', 'b'\]; got 0"):
        log_loss(good, [0, "a"], labels=["a", "b"])
    with pytest.raises(ValueError, match=r"`targets` must hold at least 2 distinct labels .*; got only \[1\]"):
        log_loss(good, [1, 1])
    with pytest.raises(ValueError, match=r"`labels` must hold at least 2 distinct labels; got \[1\]"):
        log_loss(good, [1, 1], labels=[1])
    with pytest.raises(ValueError, match=r"`probs` must have one column per class; the targets hold 3 classes"):
        log_loss(good[[0, 1, 1]], [0, 1, 2])
    with pytest.raises(ValueError, match=r"`probs` must have one column per class in `labels` \(3: \[0, 1, 2\]\)"):
        log_loss(good, [0, 1], labels=[0, 1, 2])
    with pytest.raises(ValueError, match=r"`targets` must have shape \(2,\) \(one label per row of `probs`\)"):
        log_loss(good, [0, 1, 1])
    with pytest.raises(ValueError, match=r"`probs` must have shape \(n_samples,\) or \(n_samples, n_classes\)"):
        log_loss(np.full((2, 2, 2), 0.5), [0, 1])
    with pytest.raises(ValueError, match=r"`probs` must not be empty"):
        log_loss(np.zeros((0, 2)), [])
    with pytest.raises(ValueError, match=r"`sample_weight` must not sum to 0"):
        log_loss(good, [0, 1], sample_weight=[0.0, 0.0])
    with pytest.raises(ValueError, match=r"`sample_weight` must be finite and non-negative; got -1.0"):
        log_loss(good, [0, 1], sample_weight=[1.0, -1.0])
    with pytest.raises(ValueError, match=r"`sample_weight` must have shape \(2,\)"):
        log_loss(good, [0, 1], sample_weight=[1.0])
    with pytest.raises(ValueError, match=r"`base` must be positive and not 1"):
        log_loss(good, [0, 1], base=1)
    with pytest.raises(ValueError, match=r"`targets` must not contain NaN labels"):
        log_loss(good, [0.0, np.nan])
    with pytest.raises(TypeError, match=r"`targets` must hold labels of one sortable kind"):
        log_loss(good, np.array([0, "a"], dtype=object))
    with pytest.raises(TypeError, match=r"`probs` must be real probabilities; got dtype"):
        log_loss(np.array([["a", "b"]]), [0])


def test_log_loss_accepts_integer_probabilities_like_sklearn() -> None:
    probs = np.array([[1, 0], [0, 1], [1, 0]])
    y = [0, 0, 0]
    assert float(log_loss(probs, y, labels=[0, 1])) == pytest.approx(
        sklearn.metrics.log_loss(y, probs, labels=[0, 1]), rel=1e-12
    )


@settings(max_examples=40, deadline=None)
@given(
    hnp.arrays(np.float64, st.integers(2, 30), elements=st.floats(0.0, 1.0)),
    st.randoms(use_true_random=False),
)
def test_property_log_loss_binary_forms_agree_with_sklearn(p: np.ndarray, random) -> None:
    y = np.array([random.randint(0, 1) for _ in range(p.shape[0])])
    y[:2] = [0, 1]
    expected = sklearn.metrics.log_loss(y, p)
    assert float(log_loss(p, y)) == pytest.approx(expected, rel=1e-12)
    assert float(log_loss(np.stack([1 - p, p], axis=1), y)) == pytest.approx(expected, rel=1e-12)
    assert 0.0 <= float(log_loss(p, y)) <= -math.log(EPS64) * (1 + 1e-12)


# --------------------------------------------------------------------------------------------
# perplexity


@pytest.mark.parametrize("n_classes", [1, 2, 10, 50257])
@requires_torch
def test_perplexity_of_uniform_logits_is_the_number_of_classes(n_classes: int) -> None:
    targets = np.array([0, n_classes - 1, n_classes // 2])
    for value in (0.0, 3.5, -20.0):
        out = perplexity(np.full((3, n_classes), value), targets)
        assert float(out) == pytest.approx(n_classes, rel=4 * EPS64)
    out32 = perplexity(torch.zeros(3, n_classes), torch.tensor(targets))
    assert out32.dtype == torch.float32
    assert float(out32) == pytest.approx(n_classes, rel=4 * float(np.finfo(np.float32).eps))


@requires_torch
def test_perplexity_matches_torch_cross_entropy_with_ignore_index() -> None:
    rng = np.random.default_rng(5)
    logits = torch.tensor(rng.normal(size=(6, 5, 4)) * 3, requires_grad=True)  # (N, C, d): class axis 1
    targets = torch.tensor(rng.integers(0, 5, size=(6, 4)))
    targets[0, :2] = -100
    targets[3, 1] = 2
    ours = perplexity(logits, targets, axis=1)
    ref_logits = logits.detach().clone().requires_grad_(True)
    reference = torch.exp(F.cross_entropy(ref_logits, targets))
    torch.testing.assert_close(ours, reference, rtol=1e-12, atol=0)
    ours.backward()
    reference.backward()
    torch.testing.assert_close(logits.grad, ref_logits.grad, rtol=1e-10, atol=1e-14)
    # Another ignore_index, here naming a real class.
    relabeled = targets.masked_fill(targets == -100, 0)
    torch.testing.assert_close(
        perplexity(logits.detach(), relabeled, axis=1, ignore_index=2),
        torch.exp(F.cross_entropy(logits.detach(), relabeled, ignore_index=2)),
        rtol=1e-12,
        atol=0,
    )


@requires_torch
def test_perplexity_sample_weight_and_numpy() -> None:
    rng = np.random.default_rng(6)
    logits = rng.normal(size=(20, 7))
    targets = rng.integers(0, 7, 20)
    targets[:3] = -100
    w = rng.random(20)
    per_sample = F.cross_entropy(torch.tensor(logits), torch.tensor(targets), reduction="none").numpy()
    valid = targets != -100
    expected = math.exp((w * per_sample)[valid].sum() / w[valid].sum())
    out = perplexity(logits, targets, sample_weight=w)
    assert isinstance(out, np.ndarray)
    assert out.shape == ()
    assert float(out) == pytest.approx(expected, rel=1e-12)


def test_perplexity_equals_exp_log_loss_for_probabilities() -> None:
    rng = np.random.default_rng(7)
    probs = dirichlet(rng, 30, 4) * (1 - 1e-6) + 1e-6 / 4  # no clipping involved
    y = rng.integers(0, 4, 30)
    y[:4] = np.arange(4)
    assert float(perplexity(np.log(probs), y)) == pytest.approx(math.exp(float(log_loss(probs, y))), rel=1e-12)


@requires_torch
def test_perplexity_half_precision_and_all_ignored() -> None:
    rng = np.random.default_rng(8)
    logits = torch.tensor(rng.normal(size=(8, 6)), dtype=torch.float32)
    targets = torch.tensor(rng.integers(0, 6, 8))
    reference = float(torch.exp(F.cross_entropy(logits.to(torch.bfloat16).float(), targets)))
    out = perplexity(logits.to(torch.bfloat16), targets)
    assert out.dtype == torch.bfloat16
    assert float(out) == pytest.approx(reference, rel=1e-2)
    # Every target ignored: mean cross-entropy 0 (the library's convention), perplexity 1.
    ignored = torch.full((8,), -100)
    logits.requires_grad_(True)
    out = perplexity(logits, ignored)
    assert float(out.detach()) == 1.0
    out.backward()
    assert torch.count_nonzero(logits.grad) == 0


@settings(max_examples=30, deadline=None)
@given(
    hnp.arrays(np.float64, st.tuples(st.integers(1, 6), st.integers(2, 6)), elements=st.floats(-30, 30)),
    st.floats(-1e3, 1e3),
)
def test_property_perplexity_shift_invariant_and_at_least_one(logits: np.ndarray, shift: float) -> None:
    targets = np.arange(logits.shape[0]) % logits.shape[1]
    with warnings.catch_warnings():
        # Drawn logits can look like probabilities (rows such as [0, 1]); the warning is tested apart.
        warnings.simplefilter("ignore", ProbabilitiesAsLogitsWarning)
        base = float(perplexity(logits, targets))
        shifted = float(perplexity(logits + shift, targets))
    assert base >= 1.0 - 1e-12
    assert shifted == pytest.approx(base, rel=1e-9)


def test_perplexity_warns_on_probabilities() -> None:
    with pytest.warns(ProbabilitiesAsLogitsWarning, match=r"`logits` look like probabilities"):
        perplexity(np.array([[0.2, 0.8], [0.5, 0.5]]), np.array([1, 0]))


def test_perplexity_errors() -> None:
    with pytest.raises(TypeError, match=r"`targets` must be integer class indices; got dtype float64"):
        perplexity(np.zeros((2, 3)), np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"`targets` must be class indices in \[0, 3\) or ignore_index=-100; got 3"):
        perplexity(np.zeros((2, 3)), np.array([0, 3]))
    with pytest.raises(ValueError, match=r"`targets` must have shape \(2,\)"):
        perplexity(np.zeros((2, 3)), np.array([0, 1, 2]))
    with pytest.raises(TypeError, match=r"`logits` must be a real floating-point array"):
        perplexity(np.zeros((2, 3), dtype=np.int64), np.array([0, 1]))
    with pytest.raises(ValueError, match=r"`axis` must be in"):
        perplexity(np.zeros((2, 3)), np.array([0, 1]), axis=2)


# --------------------------------------------------------------------------------------------
# brier_score


@pytest.mark.parametrize("n_classes", [2, 3, 6])
def test_brier_matches_sklearn_multiclass(n_classes: int) -> None:
    rng = np.random.default_rng(10 + n_classes)
    probs = dirichlet(rng, 40, n_classes)
    y = rng.integers(0, n_classes, 40)
    y[:n_classes] = np.arange(n_classes)
    w = rng.random(40)
    for kwargs in ({}, {"sample_weight": w}, {"scale_by_half": True}, {"scale_by_half": False}):
        expected = sklearn.metrics.brier_score_loss(y, probs, **kwargs)
        assert float(brier_score(probs, y, **kwargs)) == pytest.approx(expected, rel=1e-12)


def test_brier_scale_by_half_auto_convention() -> None:
    # Binary: (1/N) sum (p - y)^2, in [0, 1]. Three classes: unhalved sum over classes, in [0, 2].
    assert float(brier_score(np.array([0.1, 0.9, 0.8, 0.3]), [0, 1, 1, 0])) == pytest.approx(0.0375, rel=1e-14)
    two_columns = np.array([[0.9, 0.1], [0.1, 0.9], [0.2, 0.8], [0.7, 0.3]])
    assert float(brier_score(two_columns, [0, 1, 1, 0])) == pytest.approx(0.0375, rel=1e-14)
    three = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.2, 0.2, 0.6]])
    by_hand = ((0.2**2 + 0.1**2 + 0.1**2) + (0.2**2 + 0.3**2 + 0.1**2) + (0.2**2 + 0.2**2 + 0.4**2)) / 3
    assert float(brier_score(three, ["eggs", "ham", "spam"])) == pytest.approx(by_hand, rel=1e-14)
    assert float(brier_score(np.array([1.0, 0.0]), [0, 1])) == 1.0  # worst binary
    hard = np.array([0.1, 0.9, 0.8, 0.3]) > 0.5  # boolean predictions, as in scikit-learn's example
    assert float(brier_score(hard, [0, 1, 1, 0])) == sklearn.metrics.brier_score_loss([0, 1, 1, 0], hard) == 0.0
    assert float(brier_score(np.array([[0.0, 1.0, 0.0]]), [0], labels=[0, 1, 2])) == 2.0  # worst 3-class


def test_brier_binary_matches_sklearn() -> None:
    rng = np.random.default_rng(9)
    p = rng.random(30)
    w = rng.random(30)
    for y in (rng.integers(0, 2, 30), rng.choice([-1, 1], 30), rng.choice([3, 7], 30), rng.random(30) < 0.4):
        assert float(brier_score(p, y)) == pytest.approx(sklearn.metrics.brier_score_loss(y, p), rel=1e-12)
        assert float(brier_score(p, y, sample_weight=w)) == pytest.approx(
            sklearn.metrics.brier_score_loss(y, p, sample_weight=w), rel=1e-12
        )
        assert float(brier_score(p[:, None], y)) == pytest.approx(sklearn.metrics.brier_score_loss(y, p), rel=1e-12)
    # Single observed class: scikit-learn's pos_label inference.
    for y in ([0, 0, 0], [1, 1, 1], [-1, -1, -1], [2, 2, 2], [False, False, False]):
        assert float(brier_score(p[:3], y)) == pytest.approx(sklearn.metrics.brier_score_loss(y, p[:3]), rel=1e-12)
    # String labels: the greater label is positive (scikit-learn needs pos_label for them).
    y = np.where(rng.random(30) < 0.5, "ham", "spam")
    expected = sklearn.metrics.brier_score_loss(y, p, pos_label="spam")
    assert float(brier_score(p, y)) == pytest.approx(expected, rel=1e-12)
    assert float(brier_score(p, y, labels=["spam", "ham"])) == pytest.approx(expected, rel=1e-12)
    assert float(brier_score(p[:3], ["ham"] * 3, labels=["ham", "spam"])) == pytest.approx(
        sklearn.metrics.brier_score_loss(["ham"] * 3, p[:3], pos_label="spam"), rel=1e-12
    )


@requires_torch
def test_brier_multiclass_labels_and_torch_gradient() -> None:
    rng = np.random.default_rng(12)
    probs = dirichlet(rng, 20, 4)
    y = np.array(list("abc"))[rng.integers(0, 3, 20)]
    labels = ["a", "b", "c", "d"]
    expected = sklearn.metrics.brier_score_loss(y, probs, labels=labels)
    assert float(brier_score(probs, y, labels=labels)) == pytest.approx(expected, rel=1e-12)
    t = torch.tensor(probs, requires_grad=True)
    out = brier_score(t, y, labels=labels)
    assert isinstance(out, torch.Tensor)
    assert out.dtype == torch.float64
    out.backward()
    onehot = (y[:, None] == np.array(labels)[None, :]).astype(np.float64)
    np.testing.assert_allclose(t.grad.numpy(), 2 * (probs - onehot) / 20, rtol=1e-12)


def test_brier_errors() -> None:
    p = np.array([0.2, 0.7, 0.4])
    with pytest.raises(ValueError, match=r"`targets` must hold at most 2 distinct labels for binary `probs`"):
        brier_score(p, [0, 1, 2])
    with pytest.raises(ValueError, match=r"`labels` must hold exactly 2 labels for binary `probs`"):
        brier_score(p, [0, 1, 1], labels=[0, 1, 2])
    with pytest.raises(ValueError, match=r"`targets` must only hold labels listed in `labels` \[0, 1\]; got 2"):
        brier_score(p, [0, 1, 2], labels=[0, 1])
    with pytest.raises(ValueError, match=r"`targets` hold a single label.*got only \['ham'\]"):
        brier_score(p, ["ham"] * 3)
    with pytest.raises(ValueError, match=r"`scale_by_half` must be True, False or 'auto'; got 'yes'"):
        brier_score(p, [0, 1, 1], scale_by_half="yes")
    with pytest.raises(ValueError, match=r"`probs` must contain probabilities in \[0, 1\]; got -0.1"):
        brier_score(np.array([-0.1, 0.5]), [0, 1])
    with pytest.raises(ValueError, match=r"`probs` must have one column per class"):
        brier_score(np.full((3, 3), 1 / 3), [0, 1, 1])
    with pytest.warns(UserWarning, match=r"`probs` rows should sum to 1"):
        brier_score(np.full((2, 3), 0.5), [0, 1], labels=[0, 1, 2])


# --------------------------------------------------------------------------------------------
# Calibration: an independent loop implementation


def loop_top_label(probs: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    conf, correct = [], []
    for row, target in zip(probs, targets, strict=True):
        if np.ndim(row) == 0:
            predicted = 1 if row >= 0.5 else 0
            conf.append(row if predicted == 1 else 1 - row)
        else:
            predicted = int(np.argmax(row))
            conf.append(row[predicted])
        correct.append(float(predicted == target))
    return np.array(conf), np.array(correct)


def loop_bins(values: np.ndarray, n_bins: int, strategy: str) -> list[list[int]]:
    """Members of each bin (lo, hi], the first bin also holding its lower edge."""
    if strategy == "uniform":
        edges = [k / n_bins for k in range(n_bins + 1)]
    else:
        # calibration_curve's levels, to the last bit: with ties, a value can sit exactly on an edge.
        edges = list(np.percentile(values, np.linspace(0, 1, n_bins + 1) * 100))
    members: list[list[int]] = [[] for _ in range(n_bins)]
    for i, v in enumerate(values):
        for b in range(n_bins):
            if v <= edges[b + 1] or b == n_bins - 1:
                members[b].append(i)
                break
    return members


def loop_ece(probs, targets, n_bins, strategy, weights=None) -> float:
    conf, correct = loop_top_label(probs, targets)
    w = np.ones(len(conf)) if weights is None else np.asarray(weights)
    total = 0.0
    for members in loop_bins(conf, n_bins, strategy):
        if members:
            wb = w[members]
            acc = np.sum(wb * correct[members]) / wb.sum()
            cb = np.sum(wb * conf[members]) / wb.sum()
            total += wb.sum() / w.sum() * abs(acc - cb)
    return total


def test_ece_hand_computed() -> None:
    # Bins of width 0.25: (0.5, 0.75] holds 0.6 (wrong) and 0.7 (right): |0.5 - 0.65|;
    # (0.75, 1] holds 0.9 and 0.8, both right: |1 - 0.85|.
    probs = np.array([[0.4, 0.6], [0.7, 0.3], [0.1, 0.9], [0.8, 0.2]])
    targets = np.array([0, 0, 1, 0])
    expected = 0.5 * abs(0.5 - 0.65) + 0.5 * abs(1.0 - 0.85)
    assert float(expected_calibration_error(probs, targets, n_bins=4)) == pytest.approx(expected, rel=1e-14)
    # Binary form of the same predictions (probability of class 1): identical.
    assert float(expected_calibration_error(probs[:, 1], targets, n_bins=4)) == pytest.approx(expected, rel=1e-14)
    # One bin: |accuracy - mean confidence| overall.
    assert float(expected_calibration_error(probs, targets, n_bins=1)) == pytest.approx(abs(0.75 - 0.75), abs=1e-15)
    # Perfectly calibrated: 80% confident, 80% right.
    probs = np.tile([0.8, 0.2], (10, 1))
    targets = np.array([0] * 8 + [1] * 2)
    assert float(expected_calibration_error(probs, targets)) == pytest.approx(0.0, abs=1e-15)


@pytest.mark.parametrize("strategy", ["uniform", "quantile"])
@pytest.mark.parametrize("n_bins", [1, 3, 15])
def test_ece_matches_loop(strategy: str, n_bins: int) -> None:
    rng = np.random.default_rng(20 + n_bins)
    probs = dirichlet(rng, 200, 4) ** 2
    probs /= probs.sum(axis=1, keepdims=True)
    targets = rng.integers(0, 4, 200)
    w = rng.random(200)
    for p, y in ((probs, targets), (probs[:, 1] / (probs[:, 0] + probs[:, 1]), targets % 2)):
        assert float(expected_calibration_error(p, y, n_bins=n_bins, strategy=strategy)) == pytest.approx(
            loop_ece(p, y, n_bins, strategy), rel=1e-11, abs=1e-15
        )
        assert float(
            expected_calibration_error(p, y, n_bins=n_bins, strategy=strategy, sample_weight=w)
        ) == pytest.approx(loop_ece(p, y, n_bins, strategy, w), rel=1e-11, abs=1e-15)


def test_ece_binary_tie_predicts_one() -> None:
    # p = 0.5 predicts class 1 with confidence 0.5: right for target 1, wrong for target 0.
    assert float(expected_calibration_error(np.array([0.5]), np.array([1]))) == pytest.approx(0.5)
    assert float(expected_calibration_error(np.array([0.5, 0.5]), np.array([1, 1]))) == pytest.approx(0.5)
    assert float(expected_calibration_error(np.array([0.5, 0.5]), np.array([1, 0]))) == pytest.approx(0.0)


@requires_torch
def test_ece_torch_and_gradient() -> None:
    rng = np.random.default_rng(30)
    probs = dirichlet(rng, 50, 3)
    targets = rng.integers(0, 3, 50)
    t = torch.tensor(probs, requires_grad=True)
    out = expected_calibration_error(t, torch.tensor(targets), n_bins=5)
    assert isinstance(out, torch.Tensor)
    assert out.dtype == torch.float64
    assert float(out.detach()) == pytest.approx(loop_ece(probs, targets, 5, "uniform"), rel=1e-12)
    out.backward()
    # d ECE / d conf_i = -sign(acc_b - conf_b) / N for the top entry of each row, 0 elsewhere.
    conf, correct = loop_top_label(probs, targets)
    expected = np.zeros_like(probs)
    for members in loop_bins(conf, 5, "uniform"):
        if members:
            gap = correct[members].sum() - conf[members].sum()
            for i in members:
                expected[i, np.argmax(probs[i])] = -np.sign(gap) / 50
    np.testing.assert_allclose(t.grad.numpy(), expected, rtol=1e-12, atol=0)
    f32 = expected_calibration_error(t.detach().float(), torch.tensor(targets), n_bins=5)
    assert f32.dtype == torch.float32
    assert float(f32) == pytest.approx(float(out.detach()), rel=1e-5)


@settings(max_examples=40, deadline=None)
@given(
    hnp.arrays(np.float64, st.tuples(st.integers(1, 30), st.integers(2, 5)), elements=st.floats(0.0, 1.0)),
    st.integers(1, 20),
    st.sampled_from(["uniform", "quantile"]),
)
def test_property_ece_in_unit_interval_and_matches_loop(raw: np.ndarray, n_bins: int, strategy: str) -> None:
    raw[:, 0] += 1e-3
    probs = raw / raw.sum(axis=1, keepdims=True)
    targets = np.arange(probs.shape[0]) % probs.shape[1]
    ece = float(expected_calibration_error(probs, targets, n_bins=n_bins, strategy=strategy))
    assert -1e-15 <= ece <= 1 + 1e-15
    assert ece == pytest.approx(loop_ece(probs, targets, n_bins, strategy), rel=1e-9, abs=1e-12)


# --------------------------------------------------------------------------------------------
# reliability_curve


@pytest.mark.parametrize("strategy", ["uniform", "quantile"])
@pytest.mark.parametrize("n_bins", [1, 2, 5, 10, 13])
def test_reliability_binary_matches_sklearn(strategy: str, n_bins: int) -> None:
    rng = np.random.default_rng(40 + n_bins)
    for p in (rng.random(120) ** 2, np.round(rng.random(120), 1)):  # the rounded ones sit on uniform edges
        y = (rng.random(120) < p).astype(np.int64)
        prob_true, prob_pred = sklearn.calibration.calibration_curve(y, p, n_bins=n_bins, strategy=strategy)
        curve = reliability_curve(p, y, n_bins=n_bins, strategy=strategy)
        assert isinstance(curve, ReliabilityCurve)
        assert curve.confidence.shape == prob_pred.shape
        np.testing.assert_allclose(curve.confidence, prob_pred, rtol=1e-12)
        np.testing.assert_allclose(curve.accuracy, prob_true, rtol=1e-12)
        assert curve.count.dtype == np.int64
        assert int(curve.count.sum()) == 120
        assert np.all(curve.count > 0)


def test_reliability_hand_computed_and_empty_bins_dropped() -> None:
    curve = reliability_curve(np.array([0.1, 0.2, 0.8, 0.9]), np.array([0, 1, 1, 1]), n_bins=4)  # 2 bins empty
    np.testing.assert_allclose(curve.confidence, [0.15, 0.85], rtol=1e-14)
    np.testing.assert_allclose(curve.accuracy, [0.5, 1.0], rtol=1e-14)
    assert curve.count.tolist() == [2, 2]
    # Right-closed bins: 0.2 and 0.4 are upper edges of the 5 uniform bins.
    curve = reliability_curve(np.array([0.0, 0.2, 0.4, 0.41]), np.array([0, 0, 1, 1]), n_bins=5)
    assert curve.count.tolist() == [2, 1, 1]


@requires_torch
def test_reliability_multiclass_is_top_label() -> None:
    rng = np.random.default_rng(50)
    probs = dirichlet(rng, 150, 5)
    targets = rng.integers(0, 5, 150)
    curve = reliability_curve(torch.tensor(probs), torch.tensor(targets), n_bins=8, strategy="quantile")
    assert isinstance(curve.confidence, torch.Tensor)
    conf, correct = loop_top_label(probs, targets)
    members = [m for m in loop_bins(conf, 8, "quantile") if m]
    np.testing.assert_allclose(curve.confidence.numpy(), [conf[m].mean() for m in members], rtol=1e-12)
    np.testing.assert_allclose(curve.accuracy.numpy(), [correct[m].mean() for m in members], rtol=1e-12)
    assert curve.count.tolist() == [len(m) for m in members]
    # ECE is the count-weighted gap of the curve.
    ece = float(expected_calibration_error(probs, targets, n_bins=8, strategy="quantile"))
    weighted = float((curve.count.double() * (curve.accuracy - curve.confidence).abs()).sum() / 150)
    assert ece == pytest.approx(weighted, rel=1e-12)


def test_reliability_float32_keeps_dtype() -> None:
    rng = np.random.default_rng(51)
    p = rng.random(60).astype(np.float32)
    y = rng.integers(0, 2, 60)
    curve = reliability_curve(p, y, n_bins=4)
    assert curve.confidence.dtype == np.float32
    assert curve.accuracy.dtype == np.float32
    prob_true, prob_pred = sklearn.calibration.calibration_curve(y, p.astype(np.float64), n_bins=4)
    np.testing.assert_allclose(curve.confidence, prob_pred, rtol=2e-6)
    np.testing.assert_allclose(curve.accuracy, prob_true, rtol=2e-6)


@pytest.mark.parametrize("func", [expected_calibration_error, reliability_curve])
def test_calibration_errors(func) -> None:
    p = np.array([0.2, 0.7, 0.4])
    y = np.array([0, 1, 1])
    with pytest.raises(ValueError, match=r"`n_bins` must be >= 1; got 0"):
        func(p, y, n_bins=0)
    with pytest.raises(TypeError, match=r"`n_bins` must be an integer; got 2.5"):
        func(p, y, n_bins=2.5)
    with pytest.raises(ValueError, match=r"`strategy` must be one of 'uniform', 'quantile'; got 'equal'"):
        func(p, y, strategy="equal")
    with pytest.raises(ValueError, match=r"`targets` must be class indices in \[0, 2\); got 2"):
        func(p, np.array([0, 1, 2]))
    with pytest.raises(ValueError, match=r"`targets` must be class indices in \[0, 3\); got -1"):
        func(np.full((3, 3), 1 / 3), np.array([0, -1, 2]))
    with pytest.raises(TypeError, match=r"`targets` must be integer class indices; got dtype"):
        func(p, np.array([0.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match=r"`targets` must have shape \(3,\) \(one class index per row of `probs`\)"):
        func(p, np.array([0, 1]))
    with pytest.raises(ValueError, match=r"`probs` must contain probabilities in \[0, 1\]; got 1.5"):
        func(np.array([0.2, 1.5]), np.array([0, 1]))
    with pytest.raises(ValueError, match=r"`probs` must not be empty"):
        func(np.zeros(0), np.zeros(0, dtype=np.int64))
    with pytest.raises(ValueError, match=r"`probs` must have shape \(n_samples,\) or at least 2 columns"):
        func(np.full((3, 1), 0.5), y)


def test_ece_weight_errors() -> None:
    p, y = np.array([0.2, 0.7]), np.array([0, 1])
    with pytest.raises(ValueError, match=r"`sample_weight` must not sum to 0"):
        expected_calibration_error(p, y, sample_weight=[0.0, 0.0])
    with pytest.raises(ValueError, match=r"`sample_weight` must be finite and non-negative; got -1.0"):
        expected_calibration_error(p, y, sample_weight=[1.0, -1.0])
