"""``noisy-labels``: forward correction with the true T undoes most of the damage of asymmetric label noise."""

from __future__ import annotations

import json

import numpy as np
import pytest

from crossentropy.gallery import Context, experiment
from crossentropy.gallery.noisy_labels import (
    METHODS,
    NOISES,
    corrupt_labels,
    cyclic_transition,
    estimate_transition,
    symmetric_transition,
)

NOMINAL_RATES = {"symmetric_20": 0.2, "symmetric_40": 0.4, "asymmetric_40": 0.4}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    return experiment("noisy-labels")(Context(out=tmp_path_factory.mktemp("noisy-labels"), quick=True, seed=0))


@pytest.fixture(scope="module")
def numbers(finished):
    return finished.result.numbers


def test_figures_tables_and_json(finished):
    assert [figure.name for figure in finished.result.figures] == ["accuracy.png", "transition_matrices.png"]
    for figure in finished.result.figures:
        assert figure.read_bytes()[:4] == b"\x89PNG"
    assert json.loads(json.dumps(finished.result.numbers)) == finished.result.numbers
    accuracy_table = finished.result.tables[0]
    assert [row[0] for row in accuracy_table.rows[1:]] == [method.label for method in METHODS]
    assert list(accuracy_table.columns[1:]) == [noise.label for noise in NOISES]


def test_only_the_training_labels_are_flipped_at_the_requested_rates(numbers):
    assert numbers["data"] == {"train_rows": 1258, "test_rows": 539}
    assert list(numbers["noise"]) == list(NOMINAL_RATES)
    for key, rate in NOMINAL_RATES.items():
        assert numbers["noise"][key]["realized_noise_rate"] == pytest.approx(rate, abs=0.04), key


def test_noise_costs_plain_cross_entropy_accuracy(numbers):
    clean = numbers["clean_accuracy"]
    assert clean > 0.95
    lost = {key: clean - setting["accuracy"]["cross_entropy"] for key, setting in numbers["noise"].items()}
    assert lost["symmetric_20"] > 0.03
    assert lost["symmetric_40"] > 0.2
    assert lost["asymmetric_40"] > 0.25


def test_forward_correction_with_the_true_t_recovers_most_of_the_asymmetric_loss(numbers):
    setting = numbers["noise"]["asymmetric_40"]
    accuracy = setting["accuracy"]
    assert accuracy["forward"] > accuracy["cross_entropy"] + 0.2
    assert setting["recovered"]["forward"] > 0.75
    assert accuracy["forward"] == max(accuracy.values())
    # It helps under symmetric noise too, less.
    for key in ("symmetric_20", "symmetric_40"):
        assert numbers["noise"][key]["recovered"]["forward"] > 0.2, key


def test_generalized_cross_entropy_beats_plain_cross_entropy_under_symmetric_noise(numbers):
    for key, margin in (("symmetric_20", 0.02), ("symmetric_40", 0.1)):
        accuracy = numbers["noise"][key]["accuracy"]
        assert accuracy["generalized"] > accuracy["cross_entropy"] + margin, key
        assert accuracy["generalized"] > accuracy["forward"], key


def test_estimated_t_finds_the_flips_but_underestimates_them(numbers):
    for key, setting in numbers["noise"].items():
        estimated = np.array(setting["estimated_transition"])
        np.testing.assert_allclose(estimated.sum(axis=1), 1.0, rtol=0, atol=1e-12)
        assert setting["transition_mean_absolute_error"] < 0.06, key
        assert abs(setting["estimated_diagonal_mean"] - np.mean(np.diag(setting["transition"]))) < 0.15, key
    setting = numbers["noise"]["asymmetric_40"]
    estimated = np.array(setting["estimated_transition"])
    off_diagonal = estimated - np.diag(np.diag(estimated))
    assert np.sum(np.argmax(off_diagonal, axis=1) == (np.arange(10) + 1) % 10) >= 6
    assert setting["estimated_diagonal_mean"] > 0.6  # the noise looks rarer than it is
    accuracy = setting["accuracy"]
    assert accuracy["cross_entropy"] + 0.05 < accuracy["forward_estimated"] < accuracy["forward"]


@pytest.mark.parametrize("transition", [symmetric_transition(0.4), cyclic_transition(0.4)])
def test_corrupt_labels_draws_from_the_rows_of_t(transition):
    labels = np.repeat(np.arange(10), 20_000)
    noisy = corrupt_labels(labels, transition, np.random.default_rng(5))
    frequencies = np.stack([np.bincount(noisy[labels == i], minlength=10) / 20_000 for i in range(10)])
    np.testing.assert_allclose(frequencies, transition, rtol=0, atol=0.012)
    assert np.all(frequencies[transition == 0] == 0)


@pytest.mark.parametrize("transition", [symmetric_transition(0.3), cyclic_transition(0.4)])
@pytest.mark.parametrize("percentile", [100.0, 97.0])
def test_estimate_is_exact_from_the_true_noisy_posterior_with_pure_anchors(transition, percentile):
    # Clean posteriors: 30 certain samples per class (5% of the rows) and 300 mixtures; the noisy
    # posterior is T^T p(y | x). Each column's highest values are those of the pure samples.
    rng = np.random.default_rng(11)
    clean = np.concatenate([np.repeat(np.eye(10), 30, axis=0), rng.dirichlet(np.ones(10), size=300)])
    noisy_posterior = clean @ transition
    np.testing.assert_allclose(estimate_transition(noisy_posterior, percentile), transition, rtol=0, atol=1e-12)
