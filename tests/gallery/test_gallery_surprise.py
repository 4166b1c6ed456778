"""``surprise``: the background notes' numbers, and H(P,Q) = H(P) + KL with its minimum at Q = P."""

from __future__ import annotations

import math

import pytest

from crossentropy.gallery import Context, experiment


@pytest.fixture(scope="module")
def numbers(tmp_path_factory):
    finished = experiment("surprise")(Context(out=tmp_path_factory.mktemp("surprise"), quick=True))
    for figure in finished.result.figures:
        assert figure.read_bytes()[:4] == b"\x89PNG"
    return finished.result.numbers


def test_surprise_of_the_background_notes(numbers):
    assert numbers["surprise_nats"]["0.001"] == pytest.approx(6.9078, abs=1e-4)
    assert numbers["surprise_nats"]["0.92"] == pytest.approx(0.0834, abs=1e-4)
    for p, value in numbers["surprise_nats"].items():
        assert value == pytest.approx(-math.log(float(p)), rel=1e-12)


def test_coin_decomposition(numbers):
    coin = numbers["coin"]
    h = -(0.9 * math.log(0.9) + 0.1 * math.log(0.1))
    h_pq = -(0.9 * math.log(0.7) + 0.1 * math.log(0.3))
    assert coin["entropy"] == pytest.approx(h, rel=1e-12)
    assert coin["cross_entropy"] == pytest.approx(h_pq, rel=1e-12)
    assert coin["kl_divergence"] == pytest.approx(h_pq - h, rel=1e-12)
    assert (coin["entropy"], coin["cross_entropy"], coin["kl_divergence"]) == pytest.approx(
        (0.3251, 0.4414, 0.1163), abs=1e-4
    )
    assert abs(coin["identity_residual"]) < 1e-15


def test_cross_entropy_is_smallest_at_q_equal_p(numbers):
    sweep = numbers["sweep"]
    assert sweep["argmin_q"] == pytest.approx(0.9, abs=1e-9)
    assert sweep["min_cross_entropy"] == pytest.approx(sweep["entropy"], abs=1e-12)
    assert sweep["min_kl_away_from_p"] > 0
    assert sweep["max_identity_residual"] < 1e-14
