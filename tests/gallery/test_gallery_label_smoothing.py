"""``label-smoothing``: label smoothing lowers the held-out confidence of a network, not its accuracy."""

from __future__ import annotations

import json
from itertools import pairwise

import numpy as np
import pytest
from sklearn import metrics as sklearn

from crossentropy.gallery import Context, experiment
from crossentropy.gallery.label_smoothing import EPSILONS, calibration_summary


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    return experiment("label-smoothing")(Context(out=tmp_path_factory.mktemp("label-smoothing"), quick=True, seed=0))


@pytest.fixture(scope="module")
def runs(finished):
    return finished.result.numbers["runs"]


def test_figure_tables_and_json(finished):
    assert [figure.name for figure in finished.result.figures] == ["reliability.png"]
    assert finished.result.figures[0].read_bytes()[:4] == b"\x89PNG"
    assert json.loads(json.dumps(finished.as_dict()))["numbers"] == finished.result.numbers
    assert [len(table.rows) for table in finished.result.tables] == [len(EPSILONS), len(EPSILONS)]
    assert finished.result.numbers["data"] == {"train_rows": 899, "test_rows": 898}


def test_mean_confidence_falls_as_epsilon_grows(runs):
    assert [run["epsilon"] for run in runs] == list(EPSILONS)
    confidences = [run["mean_confidence"] for run in runs]
    assert all(later < earlier - 0.03 for earlier, later in pairwise(confidences))


def test_accuracy_stays_within_two_points(runs):
    accuracies = [run["accuracy"] for run in runs]
    assert min(accuracies) > 0.95
    assert max(accuracies) - min(accuracies) < 0.02


def test_smoothed_networks_are_underconfident_and_their_ece_grows(runs):
    # The unsmoothed network is close to calibrated on these digits (slightly overconfident after the full run's
    # 2,000 steps); every smoothed one is underconfident, by more as epsilon grows.
    assert abs(runs[0]["confidence_gap"]) < 0.03
    gaps = [run["confidence_gap"] for run in runs[1:]]
    assert gaps[0] < -0.05
    assert all(later < earlier for earlier, later in pairwise(gaps))
    eces = [run["ece"] for run in runs]
    assert all(later > earlier + 0.03 for earlier, later in pairwise(eces))
    assert all(run["ece"] >= abs(run["confidence_gap"]) - 1e-12 for run in runs)  # |sum of gaps| <= sum of |gaps|


def test_training_confidence_reaches_the_smoothed_target(runs):
    for run in runs:
        assert run["target_confidence"] == pytest.approx(1 - 0.9 * run["epsilon"])
        assert run["train_accuracy"] == 1.0
        # The loss is minimal at the smoothed target: the training confidence stops just below it.
        assert run["target_confidence"] - 0.02 < run["train_mean_confidence"] <= run["target_confidence"] + 1e-6
        assert run["mean_confidence"] < run["train_mean_confidence"]


def test_calibration_summary_against_scikit_learn_and_by_hand():
    rng = np.random.default_rng(3)
    probabilities = rng.dirichlet(np.full(10, 0.3), size=500)
    labels = rng.integers(0, 10, size=500)
    summary = calibration_summary(probabilities, labels)
    assert summary["accuracy"] == pytest.approx(sklearn.accuracy_score(labels, probabilities.argmax(axis=1)))
    assert summary["log_loss"] == pytest.approx(
        sklearn.log_loss(labels, probabilities, labels=np.arange(10)), rel=1e-12
    )
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    bins = np.clip(np.ceil(confidence * 15).astype(int) - 1, 0, 14)  # right-closed bins (lo, hi]
    expected_ece = (
        sum(abs(np.sum(correct[bins == b]) - np.sum(confidence[bins == b])) for b in range(15)) / confidence.size
    )
    assert summary["ece"] == pytest.approx(expected_ece, rel=1e-12)
    assert summary["confidence_gap"] == pytest.approx(confidence.mean() - correct.mean(), rel=1e-12)


def test_deterministic(finished, tmp_path):
    again = experiment("label-smoothing")(Context(out=tmp_path, quick=True, seed=0))
    assert again.result.numbers == finished.result.numbers
    other_seed = experiment("label-smoothing")(Context(out=tmp_path, quick=True, seed=1))
    assert other_seed.result.numbers != finished.result.numbers
