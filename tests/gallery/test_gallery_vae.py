"""``vae``: the negative ELBO of a small VAE on binarized digits falls; its reconstruction gradient is x̂ − x."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from crossentropy import kl_divergence
from crossentropy.gallery import Context
from crossentropy.gallery.vae import EXPERIMENT, gaussian_kl


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    return EXPERIMENT(Context(out=tmp_path_factory.mktemp("vae"), quick=True, seed=0))


@pytest.fixture(scope="module")
def numbers(finished):
    return finished.result.numbers


def test_figures_tables_and_json(finished):
    assert [figure.name for figure in finished.result.figures] == ["elbo.png", "reconstructions.png", "samples.png"]
    assert all(figure.read_bytes()[:4] == b"\x89PNG" for figure in finished.result.figures)
    assert json.loads(json.dumps(finished.as_dict()))["numbers"] == finished.result.numbers
    assert finished.result.numbers["data"] == {"train_rows": 1438, "test_rows": 359, "pixels": 64}
    assert len(finished.result.tables) == 2


def test_negative_elbo_starts_near_64_ln_2_and_falls(numbers):
    elbo = numbers["negative_elbo"]
    assert numbers["uniform_decoder_nats"] == pytest.approx(64 * math.log(2))
    # The decoder's logits start near 0: about ln 2 per pixel, and a KL near 0.
    assert elbo["train_initial"] == pytest.approx(numbers["uniform_decoder_nats"], abs=2.0)
    assert elbo["test_initial"] == pytest.approx(numbers["uniform_decoder_nats"], abs=2.0)
    assert elbo["train_final"] < 22.0
    assert elbo["test_final"] < 22.0
    assert elbo["train_final"] == pytest.approx(elbo["train_reconstruction_final"] + elbo["train_kl_final"])
    assert elbo["train_kl_final"] > 1.0  # the posterior does move away from the prior
    curves = numbers["curves"]
    assert len(curves["train"]) == len(curves["test"]) == numbers["epochs"] + 1
    assert curves["train"][1] < curves["train"][0] - 10  # most of the fall comes in the first epoch
    assert curves["test"][-1] < min(curves["test"][:5])


def test_reconstruction_gradient_is_sigmoid_minus_target(numbers):
    check = numbers["gradient_check"]
    assert check["n_logits"] == 359 * 64
    assert check["max_abs_autograd_minus_formula"] < 1e-15
    assert check["max_abs_numpy_minus_formula"] < 1e-15
    assert check["max_abs_gradient"] > 0.5  # the comparison is not between zeros
    assert check["relative_loss_difference_numpy"] < 1e-12
    assert check["relative_loss_difference_pytorch"] < 1e-12


def test_gaussian_kl_against_a_discretized_kl_divergence():
    mean, log_variance = 0.7, math.log(0.3**2)
    grid = np.linspace(-8.0, 8.0, 40_001)
    posterior = np.exp(-0.5 * (grid - mean) ** 2 / 0.3**2)
    prior = np.exp(-0.5 * grid**2)
    discretized = kl_divergence(posterior / posterior.sum(), prior / prior.sum())
    closed_form = gaussian_kl(torch.tensor([[mean]], dtype=torch.float64), torch.tensor([[log_variance]]))
    assert float(closed_form[0]) == pytest.approx(float(discretized), rel=1e-6)


def test_deterministic(finished, tmp_path):
    again = EXPERIMENT(Context(out=tmp_path, quick=True, seed=0))
    assert again.result.numbers == finished.result.numbers
