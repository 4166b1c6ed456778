"""``mse-vs-ce``: cross-entropy's gradient survives a confidently wrong start, the squared error's vanishes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import mean_squared_error

from crossentropy.gallery import Context, experiment
from crossentropy.gallery.mse_vs_ce import logit_gradients, squared_error_with_grad


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    return experiment("mse-vs-ce")(Context(out=tmp_path_factory.mktemp("mse-vs-ce"), quick=True))


def test_figures_and_json(finished):
    assert [figure.name for figure in finished.result.figures] == ["gradient_vs_probability.png", "training.png"]
    for figure in finished.result.figures:
        assert figure.read_bytes()[:4] == b"\x89PNG"
    assert json.loads(json.dumps(finished.as_dict()))["numbers"] == finished.result.numbers


def test_gradient_magnitudes_at_the_tabulated_probabilities(finished):
    gradients = finished.result.numbers["logit_gradient"]
    assert set(gradients) == {"0.001", "0.01", "0.5", "0.99"}
    for key, values in gradients.items():
        p = float(key)
        assert values["cross_entropy"] == pytest.approx(1 - p, rel=1e-9)
        assert values["mse"] == pytest.approx(2 * p * (1 - p) ** 2, rel=1e-9)
    assert gradients["0.001"]["mse"] < gradients["0.001"]["cross_entropy"] / 100
    assert gradients["0.5"]["mse"] == pytest.approx(0.25, rel=1e-9)


def test_the_start_is_confidently_wrong(finished):
    start = finished.result.numbers["start"]
    assert start["least_squares_accuracy"] > 0.9
    assert start["train_accuracy"] < 0.1
    assert start["mean_confidence"] > 0.95
    assert start["mean_true_probability"] < 0.1


def test_cross_entropy_recovers_several_times_faster(finished):
    numbers = finished.result.numbers
    ce, mse = numbers["cross_entropy"], numbers["mse"]
    assert ce["steps_to_target"] is not None
    mse_steps = mse["steps_to_target"] if mse["steps_to_target"] is not None else numbers["steps"] + 1
    assert 3 * ce["steps_to_target"] < mse_steps
    assert ce["initial_gradient_norm"] > 10 * mse["initial_gradient_norm"]
    assert ce["final_test_accuracy"] > 0.9
    for loss in (ce, mse):
        assert 0 <= loss["test_ece"] < 0.2


def test_deterministic(finished, tmp_path):
    again = experiment("mse-vs-ce")(Context(out=tmp_path, quick=True))
    assert again.result.numbers == finished.result.numbers


def test_squared_error_against_finite_differences_and_scikit_learn():
    rng = np.random.default_rng(0)
    logits = rng.normal(0.0, 3.0, size=50)
    targets = rng.integers(0, 2, size=50).astype(np.float64)
    loss, dlogits = squared_error_with_grad(logits, targets)
    assert loss == pytest.approx(mean_squared_error(targets, 1 / (1 + np.exp(-logits))), rel=1e-12)
    step = 1e-5
    numeric = np.array(
        [
            (
                squared_error_with_grad(logits + step * e, targets)[0]
                - squared_error_with_grad(logits - step * e, targets)[0]
            )
            / (2 * step)
            for e in np.eye(logits.size)
        ]
    )
    np.testing.assert_allclose(dlogits, numeric, rtol=1e-6, atol=1e-9)
    # Far from the boundary the squared error's gradient underflows to 0, without overflow warnings.
    _, far = squared_error_with_grad(np.array([-800.0, 800.0]), np.array([1.0, 0.0]))
    assert np.all(np.isfinite(far))
    assert np.all(np.abs(far) < 1e-300)


def test_logit_gradients_signs():
    cross_entropy, squared_error = logit_gradients(np.array([0.2, 0.7]))
    np.testing.assert_allclose(cross_entropy, [-0.8, -0.3], rtol=1e-12)
    np.testing.assert_allclose(squared_error, [-2 * 0.2 * 0.8**2, -2 * 0.7 * 0.3**2], rtol=1e-12)
