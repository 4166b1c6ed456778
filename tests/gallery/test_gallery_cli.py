"""``crossentropy gallery``, driven as a user would: tables, figures, the HTML index, JSON, markdown, bad input."""

from __future__ import annotations

import json
import subprocess

import pytest

from crossentropy.gallery import NAMES, experiment
from tests._support import run_cli


def run(*args) -> subprocess.CompletedProcess:
    return run_cli("gallery", *args, timeout=300)


def test_every_name_has_an_experiment():
    for name in NAMES:
        chosen = experiment(name)
        assert chosen.name == name
        assert chosen.title
        assert chosen.claim
    with pytest.raises(ValueError, match="`name` must be one of"):
        experiment("nosuch")


def test_one_experiment_prints_tables_and_writes_figures_and_the_index(tmp_path):
    markdown = tmp_path / "gallery.md"
    result = run("surprise", "--quick", "--out", tmp_path / "out", "--markdown", markdown)
    assert result.returncode == 0, result.stderr
    assert "Coin P = (0.9, 0.1)" in result.stdout
    assert "0.4414" in result.stdout
    index = (tmp_path / "out" / "index.html").read_text()
    assert 'src="surprise/coin.png"' in index
    assert (tmp_path / "out" / "surprise" / "coin.png").read_bytes()[:4] == b"\x89PNG"
    saved = json.loads((tmp_path / "out" / "gallery.json").read_text())
    assert saved[0]["numbers"]["coin"]["kl_divergence"] == pytest.approx(0.1163, abs=1e-4)
    text = markdown.read_text()
    assert "## `surprise`" in text
    assert "| H(P, Q) | 0.4414 |" in text


def test_json_output(tmp_path):
    result = run("surprise", "--quick", "--json", "--out", tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["experiments"][0]["name"] == "surprise"
    assert report["experiments"][0]["quick"] is True


def test_bad_input_exits_2_with_one_line(tmp_path):
    unknown = run("nosuch", "--out", tmp_path)
    assert unknown.returncode == 2
    assert "no experiment 'nosuch'" in unknown.stderr
    assert "Traceback" not in unknown.stderr
    occupied = tmp_path / "file"
    occupied.write_text("keep")
    taken = run("surprise", "--quick", "--out", occupied)
    assert taken.returncode == 2
    assert occupied.read_text() == "keep"
    assert len(taken.stderr.strip().splitlines()) == 1
