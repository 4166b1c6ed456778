"""``crossentropy score``'s fitted temperature against ``Scorer`` and ``fit_temperature`` on the same rows.

Moved from ``tests/core/test_scorer.py`` (the core suite runs without the command line's
dependencies); the data come from its ``make_data``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import crossentropy as ce
from crossentropy.metrics import Scorer
from tests.core.test_scorer import RTOL, batches, make_data


def test_score_fits_the_temperature_of_fit_temperature(tmp_path, capsys):
    from crossentropy.cli import main

    logits, _, labels, _ = make_data(n=3000, n_classes=5, seed=14)
    logits *= 3  # over-confident
    path = tmp_path / "logits.npz"
    np.savez(path, labels=labels, logits=logits)
    assert main(["score", str(path), "--target", "labels", "--logits", "logits_*", "--json", "--no-progress"]) == 0
    fit = json.loads(capsys.readouterr().out)["temperature"]
    temperature = ce.fit_temperature(logits, labels)
    assert fit["value"] == temperature
    assert fit["rows"] == 3000
    assert not fit["sampled"]
    at_fit = Scorer().update(logits / temperature, labels, from_logits=True).compute()
    assert fit["log_loss_nats"] == at_fit.log_loss
    assert fit["expected_calibration_error"] == at_fit.expected_calibration_error
    assert fit["expected_calibration_error"] < fit["expected_calibration_error_at_1"]
    assert fit["log_loss_nats_at_1"] == pytest.approx(float(ce.softmax_cross_entropy(logits, labels)), rel=RTOL)
    # A cap below the rows: a sample of that many rows, said so in the report.
    assert main(["score", str(path), "--target", "labels", "--logits", "logits_*", "--temperature-rows", "500"]) == 0
    text = capsys.readouterr().out
    assert "temperature fitted on a sample of 500 of 3,000 rows" in text
    assert main(["score", str(path), "--target", "labels", "--logits", "logits_*", "--temperature-rows", "0"]) == 0
    assert "temperature" not in capsys.readouterr().out


def test_the_csv_fast_path_samples_the_rows_the_array_path_samples(tmp_path, monkeypatch):
    """Same rows, same seeded draws: the sample of CSV blocks parsed in the kernel is the sample of arrays."""
    import pyarrow as pa
    import pyarrow.csv as pa_csv

    from crossentropy.cli._sources import CsvSource, open_source
    from crossentropy.cli.score import Selection, score_source

    logits, _, labels, weight = make_data(n=4000, n_classes=3, seed=15)
    columns = {"y": [f"c{k}" for k in labels], "w": weight, **{f"c{k}": logits[:, k] for k in range(3)}}
    csv_path = tmp_path / "logits.csv"
    pa_csv.write_csv(pa.table(columns), csv_path)
    npz_path = tmp_path / "logits.npz"
    np.savez(npz_path, y=np.array(columns["y"]), w=weight, **{f"c{k}": logits[:, k] for k in range(3)})
    selection = Selection(
        predictions=("c0", "c1", "c2"), classes=("c0", "c1", "c2"), target="y", sample_weight="w", is_logits=True
    )
    from crossentropy.cli._scoring import FileScorer

    fast_blocks = []
    original = FileScorer.add_csv_lines

    def spy(self, *args, **kwargs):
        rows = original(self, *args, **kwargs)
        fast_blocks.append(rows is not None and self.sample is not None)
        return rows

    monkeypatch.setattr(FileScorer, "add_csv_lines", spy)
    fits = []
    for source in (CsvSource(csv_path, block_bytes=8192), open_source(npz_path)):
        for rows in (700, 4000):
            fits.append(score_source(source, selection, fit_rows=rows, batch_rows=333).temperature)
            fresh = isinstance(source, CsvSource)
            source = CsvSource(csv_path, block_bytes=8192) if fresh else open_source(npz_path)
    csv_sampled, csv_whole, npz_sampled, npz_whole = fits
    assert len(fast_blocks) > 20  # the CSV blocks went through the fast path and its sampling
    assert all(fast_blocks)
    assert csv_sampled == npz_sampled
    assert csv_sampled["sampled"]
    assert csv_sampled["rows"] == 700
    assert csv_whole == npz_whole
    assert not csv_whole["sampled"]
    assert csv_whole["value"] == ce.fit_temperature(logits, labels, sample_weight=weight)


def test_the_reservoir_sample_is_uniform():
    from crossentropy.cli._scoring import TemperatureSample

    n, capacity, trials = 40, 10, 3000
    counts = np.zeros(n)
    for seed in range(trials):
        sample = TemperatureSample(capacity, seed=seed)
        rows = np.arange(n, dtype=np.float64)
        for part in batches(n, [7, 8, 25]):
            sample.add(rows[part, None], np.zeros(part.stop - part.start, dtype=np.int64), None)
        kept = sample._logits[: sample.rows]  # a column of one logit is kept as one dimension
        assert len(set(kept)) == capacity
        counts[kept.astype(int)] += 1
    expected = trials * capacity / n  # 750 each; binomial sd about 24
    assert np.abs(counts - expected).max() < 6 * np.sqrt(expected * (1 - capacity / n))
