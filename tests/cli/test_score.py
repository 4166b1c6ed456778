"""``crossentropy score``: figures against scikit-learn and the library, every file format, bad input.

The figures are checked against independent computations on the whole data at once
(``sklearn.metrics.log_loss``, NumPy, SciPy and the library's own metrics); the command is driven
in a subprocess, as a user runs it.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow", reason="crossentropy score reads files with pyarrow (the cli extra)")
import pyarrow.csv as pa_csv  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from scipy.special import softmax  # noqa: E402
from scipy.stats import entropy as scipy_entropy  # noqa: E402
from sklearn.metrics import log_loss as sklearn_log_loss  # noqa: E402

import crossentropy as ce  # noqa: E402
from crossentropy.cli import main  # noqa: E402
from crossentropy.cli._sources import CsvSource, InputError, open_source  # noqa: E402
from crossentropy.cli.score import Selection, score_source  # noqa: E402
from tests._support import run_cli  # noqa: E402

CLASSES = ["cat", "dog", "owl"]


def run(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return run_cli("score", *args, cwd=cwd)


def make_data(n: int = 500, seed: int = 0, n_classes: int = 3):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, n_classes)) * 2
    labels = rng.integers(0, n_classes, n)
    logits[np.arange(n), labels] += 1.5
    return logits, softmax(logits, axis=1), labels


def write_csv(path: Path, columns: dict[str, np.ndarray]) -> Path:
    pa_csv.write_csv(pa.table(columns), path)
    return path


def prob_table(probs: np.ndarray, labels: np.ndarray, names=CLASSES) -> dict[str, np.ndarray]:
    return {"label": np.array(names)[labels], **{name: probs[:, k] for k, name in enumerate(names)}}


def score_json(*args) -> dict:
    result = run(*args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


# ---------------------------------------------------------------------------------------------
# Figures


def test_csv_figures_equal_sklearn_and_the_library(tmp_path):
    _, probs, labels = make_data()
    path = write_csv(tmp_path / "preds.csv", prob_table(probs, labels))
    report = score_json(path, "--target", "label")
    names = np.array(CLASSES)[labels]
    # scikit-learn orders the columns by sorted label, which CLASSES already is.
    assert report["log_loss_nats"] == pytest.approx(sklearn_log_loss(names, probs), abs=1e-9, rel=0)
    assert report["log_loss_bits"] == pytest.approx(sklearn_log_loss(names, probs) / math.log(2), abs=1e-9, rel=0)
    assert report["perplexity"] == pytest.approx(math.exp(sklearn_log_loss(names, probs)), rel=1e-12)
    assert report["accuracy"] == pytest.approx(np.mean(probs.argmax(1) == labels), abs=1e-15)
    assert report["brier_score"] == pytest.approx(float(ce.brier_score(probs, labels)), rel=1e-12)
    assert report["expected_calibration_error"] == pytest.approx(
        float(ce.expected_calibration_error(probs, labels)), rel=1e-12
    )
    assert report["mean_predicted_entropy"] == pytest.approx(np.mean(scipy_entropy(probs, axis=1)), rel=1e-12)
    assert report["rows"] == 500
    assert report["classes"] == CLASSES
    for k, row in enumerate(report["per_class"]):
        rows = labels == k
        assert row["class"] == CLASSES[k]
        assert row["rows"] == rows.sum()
        assert row["mean_cross_entropy"] == pytest.approx(-np.log(probs[rows, k]).mean(), rel=1e-12)
        assert row["recall"] == pytest.approx(np.mean(probs[rows].argmax(1) == k), abs=1e-15)


def test_sample_weights_and_bases(tmp_path):
    _, probs, labels = make_data(seed=1)
    weight = np.random.default_rng(2).random(500) * 3
    path = write_csv(tmp_path / "w.csv", {**prob_table(probs, labels), "w": weight})
    report = score_json(path, "--target", "label", "--sample-weight", "w", "--base", "10")
    names = np.array(CLASSES)[labels]
    expected = sklearn_log_loss(names, probs, sample_weight=weight)
    assert report["log_loss_nats"] == pytest.approx(expected, abs=1e-9, rel=0)
    assert report["log_loss_base"] == pytest.approx(expected / math.log(10), abs=1e-9, rel=0)
    assert report["weight"] == pytest.approx(weight.sum(), rel=1e-12)
    assert report["accuracy"] == pytest.approx(np.average(probs.argmax(1) == labels, weights=weight), rel=1e-12)
    assert report["mean_predicted_entropy"] == pytest.approx(
        np.average(scipy_entropy(probs, axis=1, base=10), weights=weight), rel=1e-12
    )
    assert report["entropy_unit"] == "base 10"


def test_streaming_in_small_batches_equals_the_whole_file(tmp_path):
    _logits, probs, labels = make_data(n=5000, seed=3, n_classes=4)
    names = ["a", "b", "c", "d"]
    path = write_csv(tmp_path / "big.csv", prob_table(probs, labels, names))
    source = CsvSource(path, block_bytes=4096)  # about 40 blocks of text, each parsed on its own
    selection = Selection(predictions=tuple(names), classes=tuple(names), target="label")
    report = score_source(source, selection, batch_rows=97)
    assert report.rows == 5000
    assert report.log_loss == pytest.approx(float(ce.log_loss(probs, np.array(names)[labels])), rel=1e-12)
    assert report.brier_score == pytest.approx(float(ce.brier_score(probs, labels)), rel=1e-12)
    assert report.expected_calibration_error == pytest.approx(
        float(ce.expected_calibration_error(probs, labels)), rel=1e-12
    )


@pytest.mark.parametrize("file_format", ["parquet", "npy-structured", "npy-2d", "npz", "npz-compressed"])
def test_every_format_gives_the_same_figures(tmp_path, file_format):
    _, probs, labels = make_data(n=300, seed=4)
    expected = sklearn_log_loss(labels, probs)
    if file_format == "parquet":
        path = tmp_path / "p.parquet"
        pq.write_table(pa.table({"y": labels, "0": probs[:, 0], "1": probs[:, 1], "2": probs[:, 2]}), path)
        args = [path, "--target", "y"]
    elif file_format == "npy-structured":
        path = tmp_path / "p.npy"
        array = np.zeros(300, dtype=[("y", "i8"), ("0", "f8"), ("1", "f8"), ("2", "f8")])
        array["y"] = labels
        for k in range(3):
            array[str(k)] = probs[:, k]
        np.save(path, array)
        args = [path, "--target", "y"]
    elif file_format == "npy-2d":
        path = tmp_path / "p.npy"
        np.save(path, np.column_stack([probs, labels]))  # columns 0, 1, 2 and 3 (the label, as a float)
        args = [path, "--target", "3", "--probs", "0,1,2"]
    else:
        path = tmp_path / "p.npz"
        save = np.savez_compressed if file_format == "npz-compressed" else np.savez
        save(path, labels=labels, probs=probs)
        args = [path, "--target", "labels", "--probs", "probs_*"]
    report = score_json(*args)
    assert report["log_loss_nats"] == pytest.approx(expected, abs=1e-9, rel=0)
    assert report["classes"] == ["0", "1", "2"]


def test_logits_columns_take_the_softmax(tmp_path):
    logits, _, labels = make_data(seed=5)
    columns = {"label": labels, **{f"z_{name}": logits[:, k] for k, name in enumerate(["0", "1", "2"])}}
    path = write_csv(tmp_path / "logits.csv", columns)
    report = score_json(path, "--target", "label", "--logits", "z_*")
    assert report["log_loss_nats"] == pytest.approx(float(ce.softmax_cross_entropy(logits, labels)), rel=1e-12)
    assert report["log_loss_nats"] == pytest.approx(sklearn_log_loss(labels, softmax(logits, axis=1)), abs=1e-9)


def test_binary_single_column_equals_sklearn(tmp_path):
    rng = np.random.default_rng(6)
    p = rng.random(400)
    y = (rng.random(400) < p).astype(int)
    path = write_csv(tmp_path / "binary.csv", {"clicked": y, "p": p})
    report = score_json(path, "--target", "clicked", "--probs", "p", "--positive", "1")
    assert report["log_loss_nats"] == pytest.approx(sklearn_log_loss(y, p), abs=1e-9, rel=0)
    assert report["classes"] == ["0", "1"]
    assert report["brier_score"] == pytest.approx(np.mean((p - y) ** 2), rel=1e-12)
    # A column named after the positive class needs no --positive; a logit column takes the sigmoid.
    z = np.log(p) - np.log1p(-p)
    named = write_csv(tmp_path / "named.csv", {"label": np.where(y == 1, "spam", "ham"), "spam": z})
    report = score_json(named, "--target", "label", "--logits", "spam")
    assert report["classes"][1] == "spam"
    assert report["log_loss_nats"] == pytest.approx(sklearn_log_loss(y, p), abs=1e-9, rel=0)


def test_target_distributions_report_entropy_and_kl(tmp_path):
    _, q, _ = make_data(seed=7)
    _, p, _ = make_data(seed=8)
    columns = {
        **{f"t_{c}": p[:, k] for k, c in enumerate(CLASSES)},
        **{f"s_{c}": q[:, k] for k, c in enumerate(CLASSES)},
    }
    path = write_csv(tmp_path / "soft.csv", columns)
    report = score_json(path, "--target-probs", "t_*", "--probs", "s_*", "--base", "2")
    cross = np.mean(-(p * np.log(q)).sum(1))
    h = np.mean(scipy_entropy(p, axis=1))
    kl = np.mean(scipy_entropy(p, q, axis=1))
    assert report["log_loss_nats"] == pytest.approx(cross, rel=1e-12)
    assert report["target_entropy"] == pytest.approx(h / math.log(2), rel=1e-12)
    assert report["kl_divergence"] == pytest.approx(kl / math.log(2), rel=1e-12)
    assert report["target_entropy"] + report["kl_divergence"] == pytest.approx(report["cross_entropy"], rel=1e-12)
    assert report["accuracy"] == pytest.approx(np.mean(q.argmax(1) == p.argmax(1)), abs=1e-15)
    text = run(path, "--target-probs", "t_*", "--probs", "s_*").stdout
    assert "KL(P||Q)" in text
    assert "H(P) + KL - H(P,Q)" in text


def test_the_coin_of_the_background_notes(tmp_path):
    path = write_csv(tmp_path / "coin.csv", {"p_heads": [0.9], "p_tails": [0.1], "q_heads": [0.7], "q_tails": [0.3]})
    report = score_json(path, "--target-probs", "p_*", "--probs", "q_*")
    assert report["target_entropy"] == pytest.approx(0.3251, abs=1e-4)
    assert report["cross_entropy"] == pytest.approx(0.4414, abs=1e-4)
    assert report["kl_divergence"] == pytest.approx(0.1163, abs=1e-4)


def test_text_output_has_the_table_and_per_class_rows(tmp_path):
    _, probs, labels = make_data()
    path = write_csv(tmp_path / "preds.csv", prob_table(probs, labels))
    result = run(path, "--target", "label")
    assert result.returncode == 0, result.stderr
    for fragment in ("log loss (nats)", "log loss (bits)", "perplexity", "accuracy", "Brier score", "calibration"):
        assert fragment in result.stdout
    for name in CLASSES:
        assert any(line.strip().startswith(name) for line in result.stdout.splitlines())


def test_report_directory_has_html_and_figures_and_leaves_the_input_alone(tmp_path):
    _, probs, labels = make_data()
    path = write_csv(tmp_path / "preds.csv", prob_table(probs, labels))
    before = path.read_bytes()
    out = tmp_path / "report"
    result = run(path, "--target", "label", "--report", out)
    assert result.returncode == 0, result.stderr
    assert path.read_bytes() == before
    page = (out / "index.html").read_text()
    assert "reliability.png" in page
    assert "per_class.png" in page
    assert "log loss" in page
    for name in ("reliability.png", "per_class.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((out / "report.json").read_text())
    assert saved["log_loss_nats"] == pytest.approx(sklearn_log_loss(np.array(CLASSES)[labels], probs), abs=1e-9)
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left
    occupied = tmp_path / "occupied"
    occupied.write_text("keep me")
    assert_one_line_error(run(path, "--target", "label", "--report", occupied), "occupied", "directory")
    assert occupied.read_text() == "keep me"


def test_memory_does_not_grow_with_the_file(tmp_path):
    """Peak pyarrow memory while streaming is that of a block, for a file 10 times larger."""
    peaks = []
    for n in (20_000, 200_000):
        _, probs, labels = make_data(n=n, seed=9)
        path = write_csv(tmp_path / f"rows{n}.csv", prob_table(probs, labels))
        script = textwrap.dedent(
            f"""
            import pyarrow as pa
            from crossentropy.cli._sources import CsvSource
            from crossentropy.cli.score import Selection, score_source
            source = CsvSource(__import__("pathlib").Path({str(path)!r}), block_bytes=1 << 20)
            names = ("cat", "dog", "owl")
            score_source(source, Selection(predictions=names, classes=names, target="label"), batch_rows=1 << 14)
            print(pa.default_memory_pool().max_memory())
            """
        )
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
        peaks.append((int(result.stdout.strip()), path.stat().st_size))
    (small_peak, small_size), (big_peak, big_size) = peaks
    assert big_size > 9 * small_size
    assert big_peak < 1.5 * small_peak + (1 << 20)
    assert big_peak < big_size / 4


# ---------------------------------------------------------------------------------------------
# Bad input: exit code 2, one line naming the file, row and column


def test_missing_column_suggests_the_closest(tmp_path):
    _, probs, labels = make_data(n=5)
    path = write_csv(tmp_path / "preds.csv", prob_table(probs, labels))
    assert_one_line_error(run(path, "--target", "lable"), "preds.csv", "'lable'", "did you mean 'label'")
    assert_one_line_error(run(path, "--target", "label", "--probs", "p_*"), "no column matches", "'p_*'")
    assert_one_line_error(run(path, "--target", "label", "--sample-weight", "weight"), "'weight'")


def test_non_numeric_cell_names_row_line_and_column(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("label,cat,dog\ncat,0.9,0.1\ndog,0.2,0.8\ncat,abc,0.5\n")
    assert_one_line_error(run(path, "--target", "label"), "bad.csv", "row 3 (line 4)", "column 'cat'", "'abc'")


def test_probability_outside_the_unit_interval(tmp_path):
    path = tmp_path / "range.csv"
    path.write_text("label,cat,dog\ncat,0.9,0.1\ndog,1.2,-0.2\n")
    assert_one_line_error(run(path, "--target", "label"), "row 2 (line 3)", "column 'cat'", "1.2", "[0, 1]")


def test_nan_and_empty_cells(tmp_path):
    path = tmp_path / "nan.csv"
    path.write_text("label,cat,dog\ncat,0.9,0.1\ndog,nan,0.8\n")
    assert_one_line_error(run(path, "--target", "label"), "row 2 (line 3)", "column 'cat'", "'nan'")
    path.write_text("label,cat,dog\ncat,0.9,0.1\ndog,0.2,\n")
    assert_one_line_error(run(path, "--target", "label"), "row 2 (line 3)", "column 'dog'", "empty")
    np.save(tmp_path / "nan.npy", np.array([[0.5, 0.5, 0], [np.nan, 0.5, 1]]))
    assert_one_line_error(run(tmp_path / "nan.npy", "--target", "2"), "row 2", "column '0'", "NaN")


def test_rows_not_summing_to_one_warn_with_the_count_or_are_renormalized(tmp_path):
    path = tmp_path / "sums.csv"
    path.write_text("label,cat,dog\ncat,0.9,0.1\ndog,0.3,0.6\ncat,0.5,0.4\n")
    result = run(path, "--target", "label", "--json")
    assert result.returncode == 0
    assert "2 of 3 rows" in result.stderr
    assert "first: row 2" in result.stderr
    assert "--renormalize" in result.stderr
    as_given = json.loads(result.stdout)
    probs = np.array([[0.9, 0.1], [0.3, 0.6], [0.5, 0.4]])
    labels = np.array([0, 1, 0])
    assert as_given["log_loss_nats"] == pytest.approx(-np.log(probs[np.arange(3), labels]).mean(), rel=1e-12)
    renormalized = score_json(path, "--target", "label", "--renormalize")
    normalized = probs / probs.sum(1, keepdims=True)
    assert renormalized["log_loss_nats"] == pytest.approx(sklearn_log_loss(labels, normalized), abs=1e-9)
    assert renormalized["unnormalized_prediction_rows"] == 2
    assert "2 of 3 rows" in as_given["warnings"][0]


def test_label_without_a_probability_column(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("label,cat,dog\ncat,0.9,0.1\nowl,0.2,0.8\n")
    assert_one_line_error(run(path, "--target", "label"), "row 2 (line 3)", "column 'label'", "'owl'", "cat, dog")
    prefixed = write_csv(tmp_path / "prefixed.csv", {"y": [0, 1], "p_0": [0.9, 0.2], "p_1": [0.1, 0.8]})
    assert_one_line_error(run(prefixed, "--target", "y"), "--probs 'p_*'")


def test_empty_and_header_only_files_and_unknown_types(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    assert_one_line_error(run(empty, "--target", "label"), "empty.csv", "empty")
    header = tmp_path / "header.csv"
    header.write_text("label,cat,dog\n")
    assert_one_line_error(run(header, "--target", "label"), "header.csv", "no rows")
    other = tmp_path / "preds.xlsx"
    other.write_bytes(b"PK")
    assert_one_line_error(run(other, "--target", "label"), "preds.xlsx", "--format")
    assert_one_line_error(run(tmp_path / "missing.csv", "--target", "label"), "missing.csv", "no such file")
    not_parquet = tmp_path / "fake.parquet"
    not_parquet.write_text("label,cat\n")
    assert_one_line_error(run(not_parquet, "--target", "label"), "fake.parquet", "not a Parquet file")


def test_numpy_files_are_read_without_pickle(tmp_path):
    path = tmp_path / "objects.npy"
    np.save(path, np.array([[0.5, "a"], [0.5, "b"]], dtype=object), allow_pickle=True)
    assert_one_line_error(run(path, "--target", "1"), "objects.npy", "pickle")


def test_bad_weights_and_option_conflicts(tmp_path):
    path = tmp_path / "w.csv"
    path.write_text("label,cat,dog,w\ncat,0.9,0.1,1\ndog,0.2,0.8,-1\n")
    assert_one_line_error(run(path, "--target", "label", "--sample-weight", "w"), "row 2 (line 3)", "column 'w'", "-1")
    assert_one_line_error(run(path, "--probs", "cat,dog"), "--target")
    assert_one_line_error(run(path, "--target", "label", "--probs", "cat", "--logits", "dog"), "not both")
    bad_option = run(path, "--target", "label", "--bins", "0")
    assert bad_option.returncode == 2
    assert "--bins" in bad_option.stderr


def test_ragged_rows_and_a_third_binary_label(tmp_path):
    path = tmp_path / "ragged.csv"
    path.write_text("label,cat,dog\ncat,0.9,0.1\ndog,0.8\n")
    assert_one_line_error(run(path, "--target", "label"), "row 2 (line 3)", "2 fields", "3")
    binary = tmp_path / "binary.csv"
    binary.write_text("y,p\n1,0.9\n0,0.2\n2,0.5\n")
    assert_one_line_error(run(binary, "--target", "y", "--probs", "p", "--positive", "1"), "row 3", "'2'", "third")
    assert_one_line_error(run(binary, "--target", "y", "--probs", "p"), "positive class 'p'", "--positive")


def test_blank_lines_are_skipped_and_counted_in_line_numbers(tmp_path):
    path = tmp_path / "blank.csv"
    path.write_text("label,cat,dog\ncat,0.9,0.1\n\ndog,0.2,0.8\ncat,x,0.5\n")
    assert_one_line_error(run(path, "--target", "label"), "row 3 (line 5)", "'x'")


def test_source_errors_in_process(tmp_path):
    path = tmp_path / "dup.csv"
    path.write_text("a,a,b\n1,2,3\n")
    with pytest.raises(InputError, match="unique"):
        open_source(path)
    code = main(["score", str(path), "--target", "b"])
    assert code == 2
