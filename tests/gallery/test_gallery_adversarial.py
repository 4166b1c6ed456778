"""``adversarial``: the sign of the input gradient of the cross-entropy fools a digits classifier; noise does not."""

from __future__ import annotations

import json
from itertools import pairwise

import numpy as np
import pytest
import torch

from crossentropy.gallery import Context
from crossentropy.gallery.adversarial import EPSILONS, EXPERIMENT, fgsm, finite_difference_check, input_gradient


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    return EXPERIMENT(Context(out=tmp_path_factory.mktemp("adversarial"), quick=True, seed=0))


@pytest.fixture(scope="module")
def curve(finished):
    return {point["epsilon"]: point for point in finished.result.numbers["curve"]}


def test_figures_tables_and_json(finished):
    assert [figure.name for figure in finished.result.figures] == ["accuracy.png", "examples.png"]
    assert all(figure.read_bytes()[:4] == b"\x89PNG" for figure in finished.result.figures)
    assert json.loads(json.dumps(finished.as_dict()))["numbers"] == finished.result.numbers
    assert [len(table.rows) for table in finished.result.tables] == [len(EPSILONS), 6]
    assert finished.result.numbers["data"] == {"train_rows": 899, "test_rows": 898}


def test_fgsm_breaks_the_classifier_while_random_signs_barely_hurt(curve):
    assert list(curve) == list(EPSILONS)
    assert curve[0.0]["fgsm_accuracy"] == curve[0.0]["random_accuracy"] > 0.95
    fgsm_accuracies = [point["fgsm_accuracy"] for point in curve.values()]
    assert all(later <= earlier for earlier, later in pairwise(fgsm_accuracies))
    assert curve[0.1]["fgsm_accuracy"] < 0.6
    assert curve[0.2]["fgsm_accuracy"] < 0.1
    assert curve[0.2]["random_accuracy"] > 0.8
    for epsilon in EPSILONS[1:]:
        assert curve[epsilon]["fgsm_accuracy"] < curve[epsilon]["random_accuracy"] - 0.03


def test_input_gradient_matches_finite_differences(finished):
    check = finished.result.numbers["gradient_check"]
    assert len(check["pixels"]) == 6
    assert max(abs(g) for g in check["autograd"]) > 0.1  # the hardest image: a gradient worth checking
    assert check["autograd"] == pytest.approx(check["finite_difference"], rel=1e-7, abs=1e-9)
    assert check["max_rel_error"] < 1e-7


def _network(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(64, 16), torch.nn.Tanh(), torch.nn.Linear(16, 10))


def test_input_gradient_against_torch_and_finite_differences():
    network = _network(1)
    x = torch.rand(5, 64, generator=torch.Generator().manual_seed(2))
    y = torch.tensor([0, 3, 9, 3, 7])
    ours = input_gradient(network, x, y)
    assert all(parameter.grad is None for parameter in network.parameters())
    pixels = x.clone().requires_grad_(True)
    torch.nn.functional.cross_entropy(network(pixels), y, reduction="sum").backward()
    torch.testing.assert_close(ours, pixels.grad, rtol=1e-5, atol=1e-7)
    check = finite_difference_check(network, x[1], 3, n_pixels=10)
    assert check["max_rel_error"] < 1e-7


def test_fgsm_stays_in_the_box_and_moves_each_pixel_by_at_most_epsilon():
    network = _network(3)
    x = torch.rand(20, 64, generator=torch.Generator().manual_seed(4))
    y = torch.arange(20) % 10
    adversarial = fgsm(network, x, y, 0.1)
    assert float(adversarial.min()) >= 0.0
    assert float(adversarial.max()) <= 1.0
    assert float((adversarial - x).abs().max()) <= 0.1 + 1e-6
    inside = ((x > 0.1) & (x < 0.9)).numpy()
    change = (adversarial - x).numpy()
    expected = 0.1 * np.sign(input_gradient(network, x, y).numpy())
    np.testing.assert_allclose(change[inside], expected[inside], atol=1e-6)
    with torch.no_grad():
        before = torch.nn.functional.cross_entropy(network(x), y)
        after = torch.nn.functional.cross_entropy(network(adversarial), y)
    assert float(after) > float(before)


def test_deterministic(finished, tmp_path):
    again = EXPERIMENT(Context(out=tmp_path, quick=True, seed=0))
    assert again.result.numbers == finished.result.numbers
