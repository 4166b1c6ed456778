"""``fairness``: a demographic-parity penalty halves the approval gap between groups for little accuracy."""

from __future__ import annotations

import json

import numpy as np
import pytest

from crossentropy import demographic_parity_gap
from crossentropy.gallery import Context
from crossentropy.gallery.fairness import EXPERIMENT, MODELS, QUICK_LAMBDAS, group_gaps, sample_applications

WITH_GROUP, WITHOUT_GROUP = MODELS


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    return EXPERIMENT(Context(out=tmp_path_factory.mktemp("fairness"), quick=True, seed=0))


@pytest.fixture(scope="module")
def models(finished):
    return finished.result.numbers["models"]


def test_figure_tables_and_json(finished):
    assert [figure.name for figure in finished.result.figures] == ["tradeoff.png"]
    assert finished.result.figures[0].read_bytes()[:4] == b"\x89PNG"
    assert json.loads(json.dumps(finished.as_dict()))["numbers"] == finished.result.numbers
    assert [len(table.rows) for table in finished.result.tables] == [len(QUICK_LAMBDAS)] * 2
    assert finished.result.numbers["data"]["label_rate_gap"] > 0.15


def test_penalty_halves_the_gap_for_under_a_point_or_two(models):
    sweep = models[WITH_GROUP]
    runs = sweep["runs"]
    assert [run["lambda"] for run in runs] == list(QUICK_LAMBDAS)
    assert runs[0]["probability_gap"] > 0.15
    assert runs[0]["approval_rate_gap"] > 0.2
    assert sweep["chosen_lambda"] > 0
    assert sweep["gap_ratio"] <= 0.5
    assert sweep["accuracy_cost"] < 0.02  # 0.9 points in the quick run, 0.4 in the full one
    # A large lambda nearly closes both gaps for about two points.
    assert runs[-1]["probability_gap"] < 0.04
    assert runs[-1]["approval_rate_gap"] < 0.06
    assert runs[0]["accuracy"] - runs[-1]["accuracy"] < 0.03
    # In effect a lower offset for group 1: the group's weight turns negative.
    assert runs[-1]["weights"]["group"] < -0.3 < 0.1 < runs[-1]["weights"]["income"]


def test_without_the_group_parity_costs_income(models):
    sweep = models[WITHOUT_GROUP]
    runs = sweep["runs"]
    incomes = [run["weights"]["income"] for run in runs]
    assert incomes == sorted(incomes, reverse=True)
    assert incomes[-1] < 0.1 * incomes[0]
    assert sweep["gap_ratio"] <= 0.5
    assert sweep["accuracy_cost"] > models[WITH_GROUP]["accuracy_cost"] + 0.02
    assert runs[0]["accuracy"] - runs[-1]["accuracy"] > 0.07


def test_group_gaps_by_hand_and_against_the_penalty():
    gaps = group_gaps(np.array([0.9, 0.7, 0.2, 0.6, 0.4]), np.array([1, 1, 0, 0, 0]))
    assert gaps["probability_gap"] == pytest.approx(0.8 - 0.4)
    assert gaps["approval_rate_gap"] == pytest.approx(1 - 1 / 3)
    rng = np.random.default_rng(4)
    probabilities, groups = rng.random(300), rng.integers(0, 2, size=300)
    assert group_gaps(probabilities, groups)["probability_gap"] == pytest.approx(
        float(demographic_parity_gap(probabilities, groups)), rel=1e-12
    )


def test_applications_follow_the_stated_model():
    features, groups, labels = sample_applications(np.random.default_rng(1), 40_000)
    income_shift = features[groups == 1, 0].mean() - features[groups == 0, 0].mean()
    assert income_shift == pytest.approx(1.0, abs=0.05)
    for column in (1, 2):
        assert features[groups == 1, column].mean() == pytest.approx(features[groups == 0, column].mean(), abs=0.05)
    assert set(np.unique(labels)) == {0, 1}
    assert labels[groups == 1].mean() > labels[groups == 0].mean() + 0.15


def test_deterministic(finished, tmp_path):
    again = EXPERIMENT(Context(out=tmp_path, quick=True, seed=0))
    assert again.result.numbers == finished.result.numbers
    other_seed = EXPERIMENT(Context(out=tmp_path, quick=True, seed=1))
    assert other_seed.result.numbers != finished.result.numbers
