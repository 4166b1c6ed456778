"""``sequence-smoothness``: a neighbour Jensen-Shannon penalty halves the fragmentation of per-position predictions."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from crossentropy.gallery import Context
from crossentropy.gallery.sequence_smoothness import (
    EXPERIMENT,
    QUICK_LAMBDAS,
    count_segments,
    emission_means,
    fragmentation,
    posterior_states,
    sample_sequences,
    transition_matrix,
)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    return EXPERIMENT(Context(out=tmp_path_factory.mktemp("sequence-smoothness"), quick=True, seed=0))


@pytest.fixture(scope="module")
def numbers(finished):
    return finished.result.numbers


def test_figures_tables_and_json(finished):
    assert [figure.name for figure in finished.result.figures] == ["accuracy_fragmentation.png", "example_sequence.png"]
    assert all(figure.read_bytes()[:4] == b"\x89PNG" for figure in finished.result.figures)
    assert json.loads(json.dumps(finished.as_dict()))["numbers"] == finished.result.numbers
    assert [len(table.rows) for table in finished.result.tables] == [len(QUICK_LAMBDAS) + 2]


def test_penalty_halves_fragmentation_without_losing_accuracy(numbers):
    runs = numbers["runs"]
    assert [run["lambda"] for run in runs] == list(QUICK_LAMBDAS)
    baseline = runs[0]
    chosen = next(run for run in runs if run["lambda"] == numbers["chosen_lambda"])
    assert numbers["chosen_lambda"] > 0
    assert baseline["fragmentation"] > 1.5  # plain cross-entropy breaks segments apart
    assert numbers["fragmentation_ratio"] == pytest.approx(chosen["fragmentation"] / baseline["fragmentation"])
    assert numbers["fragmentation_ratio"] < 0.6  # 0.49 in the quick run, 0.50 in the full one
    assert numbers["accuracy_change"] > -0.01  # +1.7 points in the quick run
    # Fragmentation falls as lambda grows.
    fragmentations = [run["fragmentation"] for run in runs]
    assert fragmentations == sorted(fragmentations, reverse=True)


def test_references_bracket_the_networks(numbers):
    references = numbers["references"]
    accuracies = [run["accuracy"] for run in numbers["runs"]]
    # Emissions alone are barely better than chance; the true model's posterior is the ceiling.
    assert 0.45 < references["emission_only"]["accuracy"] < 0.6
    assert references["emission_only"]["fragmentation"] > 5
    assert max(accuracies) < references["true_model_posterior"]["accuracy"] + 0.01
    assert min(accuracies) > references["emission_only"]["accuracy"] + 0.15


def test_segments_and_fragmentation_by_hand():
    true = np.array([[0, 0, 0, 1, 1, 1, 2, 2], [2, 2, 2, 2, 2, 2, 2, 2]])  # 3 + 1 segments
    predicted = np.array([[0, 1, 0, 1, 1, 2, 2, 2], [2, 2, 0, 2, 2, 2, 2, 2]])  # 5 + 3 segments
    assert count_segments(true) == 4
    assert count_segments(predicted) == 8
    assert fragmentation(predicted, true) == 2.0
    assert fragmentation(true, true) == 1.0


def test_sampled_chain_has_the_stated_persistence():
    features, states = sample_sequences(np.random.default_rng(5), 400)
    assert features.shape == (400, 100, 3)
    stays = np.mean(states[:, 1:] == states[:, :-1])
    assert stays == pytest.approx(transition_matrix()[0, 0], abs=0.01)
    assert np.bincount(states.ravel(), minlength=3) / states.size == pytest.approx(np.full(3, 1 / 3), abs=0.03)
    residuals = features - emission_means()[states]
    assert residuals.mean() == pytest.approx(0.0, abs=0.01)
    assert residuals.std() == pytest.approx(1.0, abs=0.01)


def test_posterior_states_against_enumeration_of_all_paths():
    rng = np.random.default_rng(2)
    features = rng.normal(size=(3, 4, 3))
    transitions = transition_matrix()
    means = emission_means()
    expected = np.empty((3, 4), dtype=np.int64)
    for n in range(3):
        marginals = np.zeros((4, 3))
        for path in itertools.product(range(3), repeat=4):
            joint = 1 / 3 * np.prod([transitions[a, b] for a, b in itertools.pairwise(path)])
            joint *= np.prod([np.exp(-np.sum((features[n, t] - means[s]) ** 2) / 2) for t, s in enumerate(path)])
            marginals[np.arange(4), path] += joint
        expected[n] = marginals.argmax(axis=1)
    np.testing.assert_array_equal(posterior_states(features), expected)
