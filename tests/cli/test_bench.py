"""``crossentropy bench``, driven as a user would: in a subprocess, on the tiny ``--quick`` shapes.

No timing and no speed ratio is asserted here (they depend on the machine and its load); the
tests check that every case runs, that the files are complete, that the derived numbers are
consistent with the measured ones, and that the forward pass's extra memory is O(N).
"""

from __future__ import annotations

import csv
import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from crossentropy.cli.bench import CSV_COLUMNS, QUICK_SHAPES, BenchConfig

DTYPES = ("float32", "bfloat16")
ITEMSIZE = {"float32": 4, "bfloat16": 2}
LOSS_CASES = {
    ("torch", "forward"),
    ("torch", "forward+grad"),
    ("generic", "forward"),
    ("generic", "forward+grad"),
    ("kernels", "forward"),
    ("kernels", "forward+grad"),
    ("kernels out=", "forward+grad"),
}
BANDWIDTH_CASES = {
    ("numpy x.max()", "read"),
    ("numpy x.sum()", "read"),
    ("numpy x @ ones", "read"),
    ("numpy copyto(dst, x)", "copy"),
    ("numpy x.copy()", "copy, new array"),
}
FILES = ("softmax_cross_entropy.csv", "softmax_cross_entropy.png", "softmax_cross_entropy.md")


def bench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "crossentropy.cli", "bench", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture(scope="module")
def quick(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    """One ``--quick --json`` run shared by the tests that read its output and files."""
    out = tmp_path_factory.mktemp("bench")
    return bench("--quick", "--json", "--out", str(out)), out


@pytest.fixture(scope="module")
def report(quick) -> dict:
    result, _ = quick
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return json.loads(result.stdout)


def shape_text(shape) -> str:
    return f"{shape[0]}x{shape[1]}"


def test_quick_run_writes_complete_files_atomically(quick, report):
    _, out = quick
    assert sorted(path.name for path in out.iterdir()) == sorted(FILES)  # no temporary file left behind
    assert report["files"] == [str(out / name) for name in FILES]

    with open(out / FILES[0], newline="") as stream:
        reader = csv.DictReader(stream)
        assert tuple(reader.fieldnames) == CSV_COLUMNS
        rows = list(reader)
    expected = {
        (shape_text(shape), dtype, method, pass_name)
        for shape in QUICK_SHAPES
        for dtype in DTYPES
        for method, pass_name in LOSS_CASES | BANDWIDTH_CASES
    }
    assert len(rows) == len(expected)
    assert {(row["shape"], row["dtype"], row["method"], row["pass"]) for row in rows} == expected
    for row in rows:
        if row["status"] == "ok":
            times = [float(value) for value in row["times_ms"].split(";")]
            assert float(row["median_ms"]) == pytest.approx(statistics.median(times), rel=1e-12)

    assert (out / FILES[1]).read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    summary = (out / FILES[2]).read_text()
    assert summary.startswith("# Softmax cross-entropy benchmark")
    for section in ("## Bandwidth floor", "## Median milliseconds", "## Peak extra memory", "## Compilation"):
        assert section in summary


def test_every_case_runs_and_only_the_generic_bfloat16_case_is_not_applicable(report):
    statuses = {(row["dtype"], row["method"], row["pass"]): row["status"] for row in report["measurements"]}
    assert {key for key, status in statuses.items() if status != "ok"} == {
        ("bfloat16", "generic", "forward"),
        ("bfloat16", "generic", "forward+grad"),
    }
    assert {statuses["bfloat16", "generic", pass_name] for pass_name in ("forward", "forward+grad")} == {"n/a"}
    assert report["failures"] == []


def test_json_numbers_are_positive_and_consistent(report):
    config = BenchConfig.quick()
    bandwidth = {(tuple(b["shape"]), b["dtype"]): b for b in report["bandwidth"]}
    assert len(bandwidth) == len(QUICK_SHAPES) * len(DTYPES)
    for floor in bandwidth.values():
        for key in ("read_ms", "copy_ms", "copy_new_ms", "read_gb_per_s", "copy_gb_per_s", "copy_new_gb_per_s"):
            assert floor[key] > 0
        reads = [
            row
            for row in report["measurements"]
            if (tuple(row["shape"]), row["dtype"]) == (tuple(floor["shape"]), floor["dtype"]) and row["pass"] == "read"
        ]
        assert floor["read_ms"] == min(row["median_ms"] for row in reads)
        assert floor["read_method"] in {row["method"] for row in reads}

    torch_ms = {
        (tuple(row["shape"]), row["dtype"], row["pass"]): row["median_ms"]
        for row in report["measurements"]
        if row["method"] == "torch"
    }
    for row in report["measurements"]:
        if row["status"] != "ok":
            continue
        assert len(row["times_ms"]) == (config.generic_repeat if row["method"] == "generic" else config.repeat)
        assert all(value > 0 for value in row["times_ms"])
        assert row["median_ms"] == pytest.approx(statistics.median(row["times_ms"]), rel=1e-12)
        assert row["gb_per_s"] == pytest.approx(row["bytes_moved"] / (row["median_ms"] * 1e-3) / 1e9, rel=1e-12)
        if row["pass"] not in ("forward", "forward+grad"):
            continue
        key = (tuple(row["shape"]), row["dtype"])
        n, v = row["shape"]
        moved = n * v * ITEMSIZE[row["dtype"]] * (1 if row["pass"] == "forward" else 2)
        assert row["bytes_moved"] == moved
        assert row["torch_ms"] == torch_ms[(*key, row["pass"])]
        assert row["speedup_vs_torch"] == pytest.approx(row["torch_ms"] / row["median_ms"], rel=1e-12)
        floor = bandwidth[key]
        if row["pass"] == "forward":
            assert row["floor_ms"] == floor["read_ms"]
            assert row["fraction_of_floor_alloc"] is None
        else:
            assert (row["floor_ms"], row["floor_alloc_ms"]) == (floor["copy_ms"], floor["copy_new_ms"])
            assert row["fraction_of_floor_alloc"] == pytest.approx(row["floor_alloc_ms"] / row["median_ms"], rel=1e-12)
        assert row["fraction_of_floor"] == pytest.approx(row["floor_ms"] / row["median_ms"], rel=1e-12)


def test_every_method_computes_the_same_loss(report):
    # A benchmark of a wrong result would be meaningless: the methods agree on the loss they time.
    tolerance = {"float32": 1e-5, "bfloat16": 2e-2}  # PyTorch returns a bfloat16 loss for bfloat16 logits
    groups: dict = {}
    for row in report["measurements"]:
        if row["status"] == "ok" and row["pass"] in ("forward", "forward+grad"):
            groups.setdefault((tuple(row["shape"]), row["dtype"]), []).append(row)
    for (_, dtype), rows in groups.items():
        reference = next(row["loss"] for row in rows if row["method"] == "torch" and row["pass"] == "forward")
        for row in rows:
            assert row["loss"] == pytest.approx(reference, rel=tolerance[dtype]), (row["method"], row["pass"])


def test_forward_pass_extra_memory_is_o_of_n(report):
    peaks = [peak for peak in report["memory"] if peak["tool"] == "tracemalloc"]
    assert {(tuple(peak["shape"]), peak["dtype"]) for peak in peaks} == {
        (shape, dtype) for shape in QUICK_SHAPES for dtype in DTYPES
    }
    for peak in peaks:
        n, v = peak["shape"]
        logits_bytes = n * v * ITEMSIZE[peak["dtype"]]
        assert peak["status"] == "ok", peak["note"]
        assert (peak["method"], peak["pass"], peak["logits_bytes"]) == ("kernels", "forward", logits_bytes)
        assert 0 < peak["peak_bytes"] < logits_bytes / 4
        assert peak["bytes_per_row"] == pytest.approx(peak["peak_bytes"] / n)
    resident = [peak for peak in report["memory"] if peak["tool"] == "rss"]
    assert {(peak["method"], peak["pass"]) for peak in resident} == {
        (method, pass_name) for method in ("torch", "kernels") for pass_name in ("forward", "forward+grad")
    }
    assert all(peak["status"] in ("ok", "n/a") for peak in resident)
    assert all(peak["peak_bytes"] >= 0 for peak in resident if peak["status"] == "ok")


def test_compilation_is_timed_with_an_empty_and_a_filled_cache(report):
    compilation = report["compilation"]
    assert compilation["status"] == "ok", compilation["note"]
    for run in (compilation["cold"], compilation["warm"]):
        assert set(run) == {"import_s", "forward_s", "grad_s", "total_s"}
        assert all(value > 0 for value in run.values())
        assert run["total_s"] == pytest.approx(run["import_s"] + run["forward_s"] + run["grad_s"])


def test_table_on_the_terminal(tmp_path):
    result = bench("--shapes", "32x512", "--dtypes", "float32", "--repeat", "1", "--no-generic", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    text = result.stdout
    for expected in ("Bandwidth floor", "median milliseconds", "kernels out=", "forward+grad", "tracemalloc", "32x512"):
        assert expected in text
    assert "generic" not in text
    assert "bench [" in result.stderr  # progress lines on stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(FILES)


def test_help_has_examples():
    result = bench("--help")
    assert result.returncode == 0
    assert "examples:" in result.stdout
    assert "--quick" in result.stdout


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--shapes", "4096by32000"),
        ("--shapes", "0x10"),
        ("--dtypes", "float8"),
        ("--repeat", "0"),
        ("--repeat", "many"),
    ],
)
def test_bad_option_exits_2_with_one_line_naming_it(tmp_path, option, value):
    result = bench(option, value, "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    message = result.stderr.strip().splitlines()[-1]
    assert option in message
    assert repr(value) in message
    assert not (tmp_path / "out").exists()


def test_out_that_is_a_file_is_refused_and_left_alone(tmp_path):
    existing = tmp_path / "results.csv"
    existing.write_text("keep me\n")
    result = bench("--quick", "--out", str(existing))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "`--out`" in lines[0]
    assert str(existing) in lines[0]
    assert existing.read_text() == "keep me\n"
