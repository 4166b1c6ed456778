"""``gan``: a small GAN on 8 Gaussians covers most modes; its discriminator's cross-entropies stay near ln 2."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from crossentropy.gallery import Context
from crossentropy.gallery.gan import EXPERIMENT, MODE_STD, N_MODES, mode_coverage, ring_centers, sample_ring


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    return EXPERIMENT(Context(out=tmp_path_factory.mktemp("gan"), quick=True, seed=0))


@pytest.fixture(scope="module")
def numbers(finished):
    return finished.result.numbers


def test_figures_tables_and_json(finished):
    assert [figure.name for figure in finished.result.figures] == ["samples.png", "cross_entropy.png"]
    assert all(figure.read_bytes()[:4] == b"\x89PNG" for figure in finished.result.figures)
    assert json.loads(json.dumps(finished.as_dict()))["numbers"] == finished.result.numbers
    assert len(finished.result.tables[0].rows) == len(finished.result.numbers["history"])


def test_generator_covers_most_modes(numbers):
    # Quick runs of seeds 0 to 3 covered 6, 7, 8 and 8 modes, with 57% to 77% of the points near a center.
    history = numbers["history"]
    assert history[0]["modes_covered"] <= 1
    final = numbers["final"]
    assert final == history[-1]
    assert final["modes_covered"] >= 6
    assert final["high_quality_fraction"] > 0.5
    assert final["high_quality_fraction"] > history[0]["high_quality_fraction"] + 0.4
    assert sum(final["mode_shares"]) == pytest.approx(final["high_quality_fraction"])


def test_discriminator_cross_entropies_stay_near_ln_2(numbers):
    assert numbers["ln2"] == pytest.approx(math.log(2))
    for entry in numbers["history"][-4:]:
        assert 0.45 < entry["ce_real"] < 0.8
        assert 0.45 < entry["ce_generated"] < 0.8
    # The discriminator never wins: its cross-entropy is never driven far below ln 2.
    assert min(min(entry["ce_real"], entry["ce_generated"]) for entry in numbers["history"]) > 0.35


def test_mode_coverage_by_hand():
    rng = np.random.default_rng(0)
    real = sample_ring(20_000, rng)
    coverage = mode_coverage(real)
    assert coverage["modes_covered"] == N_MODES
    # The distance of a 2-D standard normal point to its center is Rayleigh: P(r <= 3) = 1 - exp(-9 / 2).
    assert coverage["high_quality_fraction"] == pytest.approx(1 - math.exp(-4.5), abs=0.003)
    collapsed = ring_centers()[[0, 1]][rng.integers(0, 2, size=1000)] + MODE_STD * rng.standard_normal((1000, 2))
    assert mode_coverage(collapsed)["modes_covered"] == 2
    far = np.full((10, 2), 10.0)
    assert mode_coverage(far) == {"modes_covered": 0, "high_quality_fraction": 0.0, "mode_shares": [0.0] * N_MODES}
