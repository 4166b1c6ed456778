"""``imbalance``: at 1:50, class weights and the focal loss raise the minority recall of plain cross-entropy."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn import metrics as sklearn

import crossentropy as ce
from crossentropy.data import load_digits
from crossentropy.gallery import Context, experiment
from crossentropy.gallery.imbalance import (
    METHODS,
    average_precision,
    focal_loss_gradient,
    imbalanced_split,
    precision_recall_curve,
    threshold_metrics,
    train,
)

WEIGHTED = ("inverse_frequency", "effective_number_0.99", "effective_number_0.999", "pos_weight")
FOCAL = ("focal_gamma_1", "focal_gamma_2", "focal_gamma_5")


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    return experiment("imbalance")(Context(out=tmp_path_factory.mktemp("imbalance"), quick=True, seed=0))


def test_figures_tables_and_json(finished):
    assert [figure.name for figure in finished.result.figures] == ["pr_curves.png", "minority_recall.png"]
    for figure in finished.result.figures:
        assert figure.read_bytes()[:4] == b"\x89PNG"
    assert json.loads(json.dumps(finished.as_dict()))["numbers"] == finished.result.numbers
    assert [row[0] for row in finished.result.tables[1].rows] == [method.label for method in METHODS]


def test_the_task_is_one_to_fifty_on_both_sides(finished):
    data = finished.result.numbers["data"]
    assert data["train_positives"] == data["test_positives"] == 16
    assert data["train_negatives"] / data["train_positives"] == pytest.approx(50, rel=0.02)
    assert data["test_negatives"] / data["test_positives"] == pytest.approx(50, rel=0.02)
    # All 1,623 images of the other digits are negatives, 32 eights the positives.
    assert data["train_negatives"] + data["test_negatives"] == 1623


def test_class_weights_beat_plain_cross_entropy_on_minority_recall(finished):
    methods = finished.result.numbers["methods"]
    plain = methods["plain"]
    assert plain["recall"] < 0.4
    for key in WEIGHTED:
        assert methods[key]["recall"] > plain["recall"] + 0.3, key
        assert methods[key]["balanced_accuracy"] > plain["balanced_accuracy"] + 0.1, key
        for weighted, unweighted in zip(
            methods[key]["recall_per_repetition"], plain["recall_per_repetition"], strict=True
        ):
            assert weighted > unweighted, key
        # The price: more false positives.
        assert methods[key]["precision"] < plain["precision"], key


def test_focal_loss_beats_plain_cross_entropy_on_minority_recall(finished):
    methods = finished.result.numbers["methods"]
    plain = methods["plain"]
    for key in FOCAL:
        assert methods[key]["recall"] > plain["recall"], key
        for focal, unweighted in zip(
            methods[key]["recall_per_repetition"], plain["recall_per_repetition"], strict=True
        ):
            assert focal >= unweighted, key
    assert methods["focal_gamma_5"]["recall"] > plain["recall"] + 0.1
    assert methods["focal_gamma_5"]["recall"] > methods["focal_gamma_1"]["recall"]
    # ... but less than the class weights.
    assert methods["focal_gamma_5"]["recall"] < min(methods[key]["recall"] for key in WEIGHTED)


def test_pr_auc_does_not_improve(finished):
    methods = finished.result.numbers["methods"]
    for key, summary in methods.items():
        assert 0.3 < summary["average_precision"] < methods["plain"]["average_precision"] + 0.05, key


def test_equivalent_losses_give_the_same_models(finished):
    methods = finished.result.numbers["methods"]
    # Focal loss with gamma = 0 is cross-entropy; pos_weight n-/n+ is inverse frequency times a constant,
    # which Adam does not see.
    for same, as_ in (("focal_gamma_0", "plain"), ("pos_weight", "inverse_frequency")):
        assert methods[same]["recall_per_repetition"] == methods[as_]["recall_per_repetition"]
        assert methods[same]["average_precision"] == pytest.approx(methods[as_]["average_precision"], abs=1e-6)
    data = finished.result.numbers["data"]
    ratio = data["train_negatives"] / data["train_positives"]
    assert methods["inverse_frequency"]["positive_weight"] == pytest.approx(ratio, rel=1e-12)
    assert methods["pos_weight"]["positive_weight"] == pytest.approx(ratio, rel=1e-12)
    for beta in (0.99, 0.999):
        expected = (1 - beta ** data["train_negatives"]) / (1 - beta ** data["train_positives"])
        assert methods[f"effective_number_{beta:g}"]["positive_weight"] == pytest.approx(expected, rel=1e-9)
    assert methods["plain"]["positive_weight"] == 1.0
    assert methods["focal_gamma_2"]["positive_weight"] is None


def test_deterministic(finished, tmp_path):
    again = experiment("imbalance")(Context(out=tmp_path, quick=True, seed=0))
    assert again.result.numbers == finished.result.numbers
    other_seed = experiment("imbalance")(Context(out=tmp_path, quick=True, seed=1))
    assert other_seed.result.numbers != finished.result.numbers


def test_metrics_match_scikit_learn_on_a_trained_model():
    images, labels = load_digits()
    split = imbalanced_split(images, labels, np.random.default_rng(0))
    for method in (METHODS[0], METHODS[1]):
        scores = split.test_x @ train(split.train_x, method.gradient(split.train_y))
        predicted = scores > 0
        metrics = threshold_metrics(split.test_y, predicted)
        assert metrics["recall"] == pytest.approx(sklearn.recall_score(split.test_y, predicted), abs=1e-12)
        assert metrics["precision"] == pytest.approx(sklearn.precision_score(split.test_y, predicted), abs=1e-12)
        assert metrics["balanced_accuracy"] == pytest.approx(
            sklearn.balanced_accuracy_score(split.test_y, predicted), abs=1e-12
        )
        assert average_precision(split.test_y, scores) == pytest.approx(
            sklearn.average_precision_score(split.test_y, scores), abs=1e-12
        )


@pytest.mark.parametrize("seed", range(5))
def test_metrics_match_scikit_learn_on_random_data_with_ties(seed):
    rng = np.random.default_rng(seed)
    labels = (rng.random(300) < 0.1).astype(np.int64)
    labels[:2] = (0, 1)
    scores = np.round(rng.normal(size=300) + 1.5 * labels, 1)  # many tied scores
    precision, recall = precision_recall_curve(labels, scores)
    expected_precision, expected_recall, _ = sklearn.precision_recall_curve(labels, scores)
    np.testing.assert_allclose(precision, expected_precision[-2::-1], rtol=0, atol=1e-12)
    np.testing.assert_allclose(recall, expected_recall[-2::-1], rtol=0, atol=1e-12)
    assert average_precision(labels, scores) == pytest.approx(
        sklearn.average_precision_score(labels, scores), abs=1e-12
    )
    predicted = scores > 1.0
    metrics = threshold_metrics(labels, predicted)
    assert metrics["recall"] == pytest.approx(sklearn.recall_score(labels, predicted), abs=1e-12)
    assert metrics["precision"] == pytest.approx(sklearn.precision_score(labels, predicted, zero_division=0), abs=1e-12)
    assert metrics["balanced_accuracy"] == pytest.approx(sklearn.balanced_accuracy_score(labels, predicted), abs=1e-12)


def test_precision_is_zero_when_nothing_is_predicted_positive():
    labels = np.array([1, 0, 0, 0])
    metrics = threshold_metrics(labels, np.zeros(4, dtype=bool))
    assert metrics == {
        "recall": 0.0,
        "precision": sklearn.precision_score(labels, np.zeros(4), zero_division=0),
        "balanced_accuracy": 0.5,
    }


@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0, 2.0, 5.0])
def test_focal_gradient_matches_autograd_of_the_library_focal_loss(gamma):
    rng = np.random.default_rng(7)
    logits = np.concatenate([rng.normal(0.0, 3.0, size=200), [-30.0, -8.0, 0.0, 8.0, 30.0]])
    targets = (rng.random(logits.size) < 0.3).astype(np.float64)
    tensor = torch.tensor(logits, requires_grad=True)
    ce.sigmoid_focal_loss(tensor, torch.tensor(targets), gamma=gamma, alpha=None).backward()
    np.testing.assert_allclose(
        focal_loss_gradient(logits, targets, gamma=gamma), tensor.grad.numpy(), rtol=1e-9, atol=1e-15
    )


def test_focal_gradient_with_gamma_zero_is_the_cross_entropy_gradient():
    rng = np.random.default_rng(3)
    logits = rng.normal(0.0, 5.0, size=100)
    targets = (rng.random(100) < 0.5).astype(np.float64)
    _, expected = ce.sigmoid_cross_entropy_with_grad(logits, targets)
    np.testing.assert_allclose(focal_loss_gradient(logits, targets, gamma=0.0), expected, rtol=1e-12, atol=1e-17)
