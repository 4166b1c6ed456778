"""The Numba CSV fast path of ``crossentropy score``: the same numbers as pyarrow's parser, or a fallback to it.

``crossentropy.cli._kernels._csv`` parses plain numeric CSV and scores it in one pass; anything else
goes through pyarrow. These tests hold the fast path to ``float(text)`` (correct rounding) and
to the pyarrow path (the same figures), and check that unusual input falls back cleanly.
"""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pyarrow", reason="crossentropy score reads files with pyarrow (the cli extra)")

from numba import njit

from crossentropy.cli._kernels._csv import decimal_to_double
from crossentropy.cli._scoring import FileScorer as Scorer
from crossentropy.cli._scoring import ScoreSpec
from crossentropy.cli._sources import CsvSource, PlainLayout
from crossentropy.cli.score import Selection, score_source


@njit
def _convert(ws, qs, out, ok):
    for i in range(ws.shape[0]):
        out[i], ok[i] = decimal_to_double(ws[i], qs[i])


def test_decimal_to_double_rounds_as_python_float():
    rng = random.Random(1)
    ws, qs = [], []
    for _ in range(100_000):
        digits = rng.randint(1, 19)
        ws.append(rng.randrange(10 ** (digits - 1), 10**digits))
        qs.append(rng.randint(-330, 300))
    # Halfway and near-halfway cases around powers of two, and Clinger's exact range.
    for k in range(1, 64):
        for w in (2**k - 1, 2**k, 2**k + 1):
            if w < 10**19:
                ws += [w, w, w]
                qs += [0, -22, 22]
    ws += [9007199254740993, 9007199254740995, 1, 17976931348623157, 22250738585072014]
    qs += [0, 0, 23, 292, -324]
    out = np.empty(len(ws))
    ok = np.zeros(len(ws), dtype=bool)
    _convert(np.array(ws, dtype=np.uint64), np.array(qs, dtype=np.int64), out, ok)
    expected = np.array([float(f"{w}e{q}") for w, q in zip(ws, qs, strict=True)])
    # Results below the normal range are refused (the caller falls back); everything else is exact.
    assert np.all(ok | (np.abs(expected) < 2.3e-308))
    np.testing.assert_array_equal(out[ok], expected[ok])


@pytest.mark.parametrize(
    "text",
    ["0.25", ".25", "2.5e-1", "2.5E-1", "+0.25", "0.250000", "000.25", "25e-2", "0.1", "0.30000000000000004",
     "0.12065869025767821", "1e-300", "0.9999999999999999", "1", "1.", "0.2500000000000000000"],
)  # fmt: skip
def test_number_formats_are_read_exactly(tmp_path, text):
    """With two classes the log loss of one row is -log(p), so it shows the parsed double exactly."""
    path = tmp_path / "one.csv"
    path.write_text(f"label,a,b\na,{text},0\n")
    selection = Selection(predictions=("a", "b"), classes=("a", "b"), target="label")
    scorer = Scorer(ScoreSpec(classes=("a", "b"), tolerance=1.0))
    block = path.read_bytes().split(b"\n", 1)[1]
    layout = PlainLayout(["label", "a", "b"], ["a", "b"], "label", ["a", "b"], ",")
    assert scorer.add_csv_lines(np.frombuffer(block, dtype=np.uint8), layout) == 1  # the fast path took it
    report = score_source(CsvSource(path), selection, tolerance=1.0)
    assert scorer.report().log_loss == report.log_loss
    assert report.log_loss == -math.log(min(max(float(text), 2.220446049250313e-16), 1 - 2.220446049250313e-16))


def write_mixed_file(path: Path, n: int = 3000, seed: int = 0) -> None:
    """Quoted labels, CRLF line ends, skipped text columns with commas, numbers in several notations."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, 3)) * 3
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = rng.integers(0, 3, n)
    formats = ("{!r}", "{:.17e}", "{:.6f}", "{:.3E}")
    lines = ['id,"note",label,p_x,p_y,p_z,w']
    for r in range(n):
        cells = [formats[(r + k) % len(formats)].format(float(probs[r, k])) for k in range(3)]
        note = '"a, ""quoted"" note"' if r % 7 == 0 else "plain"
        label = ["x", "y", "z"][labels[r]]
        label = f'"{label}"' if r % 3 == 0 else label
        lines.append(f"{r},{note},{label},{','.join(cells)},{0.5 + r % 3}")
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode())


def scored(path: Path, *, fast: bool, monkeypatch, **options):
    """Score ``path``; with ``fast``, every block must go through the fast path."""
    original = Scorer.add_csv_lines
    taken = []

    def spy(self, *args, **kwargs):
        rows = original(self, *args, **kwargs) if fast else None
        taken.append(rows is not None)
        return rows

    monkeypatch.setattr(Scorer, "add_csv_lines", spy)
    selection = Selection(predictions=("p_x", "p_y", "p_z"), classes=("x", "y", "z"), target="label", sample_weight="w")
    report = score_source(CsvSource(path, block_bytes=8192), selection, **options)
    monkeypatch.undo()
    assert len(taken) > 10  # many blocks
    assert all(taken) if fast else not any(taken)
    return report


@pytest.mark.parametrize("options", [{}, {"renormalize": True}, {"n_bins": 7, "base": 2.0}])
def test_fast_path_equals_the_pyarrow_path(tmp_path, monkeypatch, options):
    path = tmp_path / "mixed.csv"
    write_mixed_file(path)
    fast = scored(path, fast=True, monkeypatch=monkeypatch, **options)
    slow = scored(path, fast=False, monkeypatch=monkeypatch, **options)
    assert fast.rows == slow.rows == 3000
    for name in (
        "weight",
        "log_loss",
        "accuracy",
        "brier_score",
        "expected_calibration_error",
        "mean_predicted_entropy",
    ):
        assert getattr(fast, name) == pytest.approx(getattr(slow, name), rel=1e-13), name
    assert fast.unnormalized_predictions == slow.unnormalized_predictions > 0
    assert [row["rows"] for row in fast.per_class] == [row["rows"] for row in slow.per_class]
    assert fast.warnings == slow.warnings


def test_a_bad_block_after_good_ones_falls_back_and_is_located(tmp_path):
    path = tmp_path / "late.csv"
    write_mixed_file(path)
    lines = path.read_bytes().split(b"\r\n")
    fields = lines[2500].split(b",")
    fields[-2] = b"oops"
    lines[2500] = b",".join(fields)
    path.write_bytes(b"\r\n".join(lines))
    selection = Selection(predictions=("p_x", "p_y", "p_z"), classes=("x", "y", "z"), target="label")
    with pytest.raises(ValueError, match=r"row 2500 \(line 2501\), column 'p_z': 'oops' is not a number"):
        score_source(CsvSource(path, block_bytes=8192), selection)
