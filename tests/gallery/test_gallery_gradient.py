"""``gradient``: X^T (y_hat - y) / N equals finite differences, and gradient descent with it learns."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from crossentropy.gallery import Context, experiment
from crossentropy.gallery.gradient import LOGISTIC, SOFTMAX, finite_difference_gradient, relative_error


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    return experiment("gradient")(Context(out=tmp_path_factory.mktemp("gradient"), quick=True))


def test_figures_and_json(finished):
    assert [figure.name for figure in finished.result.figures] == ["gradient_check.png", "training.png"]
    for figure in finished.result.figures:
        assert figure.read_bytes()[:4] == b"\x89PNG"
    assert json.loads(json.dumps(finished.as_dict()))["numbers"] == finished.result.numbers
    assert "relative error" in finished.as_text()


@pytest.mark.parametrize("model", ["logistic", "softmax"])
def test_analytic_gradient_equals_central_differences(finished, model):
    numbers = finished.result.numbers[model]
    assert numbers["parameters"] == {"logistic": 31, "softmax": 650}[model]
    # Central differences with h = 1e-5 in float64 agree to ~1e-10; a wrong gradient would be off by O(1).
    assert numbers["gradient_check_relative_error"] < 1e-6
    assert numbers["gradient_max_abs"] > 0.01


@pytest.mark.parametrize(("model", "classes"), [("logistic", 2), ("softmax", 10)])
def test_zero_weights_start_at_ln_k(finished, model, classes):
    numbers = finished.result.numbers[model]
    assert numbers["initial_loss"] == pytest.approx(math.log(classes), rel=1e-12)
    assert numbers["ln_classes"] == pytest.approx(math.log(classes), rel=1e-15)


def test_gradient_descent_learns(finished):
    logistic, softmax = finished.result.numbers["logistic"], finished.result.numbers["softmax"]
    assert logistic["data"] == "breast cancer"
    assert logistic["final_test_accuracy"] > 0.9
    assert logistic["final_train_loss"] < 0.2
    assert softmax["data"] == "digits"
    assert softmax["final_test_accuracy"] > 0.85
    assert softmax["final_train_loss"] < 0.5


def test_finite_differences_of_a_hand_computed_gradient():
    # One row x = (1, 2, 1) at theta = 0: sigmoid(0) - 1 = -0.5 times x; softmax: (1/3 - [k = 2]) times x.
    x = np.array([[1.0, 2.0, 1.0]])
    logistic = finite_difference_gradient(LOGISTIC, x, np.array([1]), np.zeros((3, 1)))
    np.testing.assert_allclose(logistic[:, 0], [-0.5, -1.0, -0.5], rtol=1e-9)
    softmax = finite_difference_gradient(SOFTMAX, x, np.array([2]), np.zeros((3, 10)))
    expected = np.outer(x[0], np.full(10, 0.1) - np.eye(10)[2])
    assert relative_error(expected, softmax) < 1e-9
