"""The ``crossentropy`` command, driven as a user would: in a subprocess."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "crossentropy.cli", *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_demo_prints_the_background_numbers():
    result = run("demo")
    assert result.returncode == 0, result.stderr
    text = result.stdout
    for expected in ("6.9078", "0.0834", "0.3251", "0.4414", "0.1163"):
        assert expected in text
    assert "Traceback" not in result.stderr


def test_demo_json_is_machine_readable_and_consistent():
    result = run("demo", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    coin = report["Coin P = (0.9, 0.1) modelled by Q = (0.7, 0.3)"]
    h_p = -(0.9 * math.log(0.9) + 0.1 * math.log(0.1))
    h_pq = -(0.9 * math.log(0.7) + 0.1 * math.log(0.3))
    assert coin["H(P) entropy, nats"] == pytest.approx(h_p, rel=1e-12)
    assert coin["H(P,Q) cross-entropy, nats"] == pytest.approx(h_pq, rel=1e-12)
    assert coin["KL(P||Q), nats"] == pytest.approx(h_pq - h_p, rel=1e-12)
    assert coin["H(P,Q), bits"] == pytest.approx(h_pq / math.log(2), rel=1e-12)
    gradient = report["Softmax cross-entropy gradient, logits (2, 1, 0.1), true class 0"]
    probs, grad = gradient["softmax p"], gradient["dL/dlogits = p - y"]
    assert grad == pytest.approx([probs[0] - 1.0, probs[1], probs[2]], rel=1e-12)
    assert report["Stable at extreme logits"]["loss for logits (1e4, -1e4), class 1"] == 2e4
    assert report["Probabilities passed as logits (a warning is raised)"]["warning raised"] is True


def test_help_has_examples_and_bad_usage_exits_2():
    result = run("--help")
    assert result.returncode == 0
    assert "examples:" in result.stdout
    assert run().returncode == 2
    bad = run("no-such-command")
    assert bad.returncode == 2
    assert "Traceback" not in bad.stderr
