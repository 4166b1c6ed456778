"""``crossentropy score`` at scale: many columns, long lines, Fortran-ordered arrays, bounded memory.

Work that grows with the columns must be linear (a wide file has hundreds of thousands); a line
longer than the bound is an error, not a buffer that grows with the file; and peak memory must
not grow with the file's size, whatever its layout. Wide cases run in a subprocess with a
generous time limit, a guard against quadratic work (minutes to hours), not a timing assertion;
memory is compared between a file and one ten times larger, as peak resident sets of
subprocesses.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pyarrow", reason="crossentropy score reads files with pyarrow (the cli extra)")
from scipy.special import log_softmax

from crossentropy.cli import main
from crossentropy.cli._sources import MAX_COLUMNS, MAX_LINE_BYTES
from tests._support import assert_one_line

GUARD_SECONDS = 300


def run_python(script: str) -> subprocess.CompletedProcess:
    """Run ``script`` in a fresh interpreter; a quadratic algorithm would not finish within the guard."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=GUARD_SECONDS,
        check=False,
    )


def _scoring_script(path: Path, args: tuple[str, ...], batch_rows: int | None = None) -> str:
    return textwrap.dedent(
        f"""
        import argparse
        from crossentropy.cli._sources import open_source
        from crossentropy.cli.score import add_arguments, score_source, select_columns
        parser = argparse.ArgumentParser()
        add_arguments(parser)
        args = parser.parse_args({[str(path), *args]!r})
        source = open_source(args.file)
        print(repr(score_source(source, select_columns(source, args), batch_rows={batch_rows!r}).log_loss))
        """
    )


def score_in_child(path: Path, *args: str) -> str:
    """``score_source`` of ``path`` in a subprocess; returns the log loss it printed."""
    result = run_python(_scoring_script(path, args))
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


# Runs the command as its only child and reports the child's peak resident set on its last stderr line.
_MEASURE = (
    "import resource, subprocess, sys\n"
    "code = subprocess.run(sys.argv[1:]).returncode\n"
    "sys.stderr.write(f'\\npeak {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}\\n')\n"
    "sys.exit(code)\n"
)


def run_cli(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "crossentropy.cli", "score", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=GUARD_SECONDS,
        check=False,
    )


def peak_rss_kib(*command: str | Path) -> tuple[int, subprocess.CompletedProcess]:
    """Peak resident set (KiB) of ``python COMMAND`` and its result.

    Through a small wrapper process: a child's peak counts its parent's resident set at the
    fork, and this test process holds the test's arrays.
    """
    result = subprocess.run(
        [sys.executable, "-c", _MEASURE, sys.executable, *map(str, command)],
        capture_output=True,
        text=True,
        timeout=GUARD_SECONDS,
        check=False,
    )
    stderr, _, peak = result.stderr.rstrip().rpartition("\npeak ")
    return int(peak), subprocess.CompletedProcess(result.args, result.returncode, result.stdout, stderr)


# ---------------------------------------------------------------------------------------------
# Many columns: linear matching and duplicate checks


def test_npz_of_262144_logit_columns_matches_the_log_softmax(tmp_path):
    """``--logits 'logits_*'`` over 262,144 columns (took 20 s at 32,768, and grew with their square)."""
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4, 1 << 18)).astype(np.float32)
    labels = rng.integers(0, 1 << 18, 4)
    path = tmp_path / "wide.npz"
    np.savez(path, labels=labels, logits=logits)
    expected = -log_softmax(logits.astype(np.float64), axis=1)[np.arange(4), labels].mean()
    assert float(score_in_child(path, "--target", "labels", "--logits", "logits_*")) == pytest.approx(
        expected, rel=1e-12
    )


@pytest.mark.parametrize("quoted", [False, True], ids=["fast-path", "pyarrow"])
def test_csv_of_262144_fields_matches_the_log_softmax(tmp_path, quoted):
    """A header of 262,144 fields (the duplicate check took minutes), scored by either parser."""
    n_classes = (1 << 18) - 1
    logits = np.zeros((3, n_classes))
    labels = np.array([7, 100, n_classes - 1])
    logits[np.arange(3), labels] = [2.0, 0.0, -1.0]
    logits[1, 5] = 3.0
    path = tmp_path / "wide.csv"
    with path.open("w") as file:
        file.write("label," + ",".join(f"c{k}" for k in range(n_classes)) + "\n")
        for label, row in zip(labels, logits, strict=True):
            cells = [f"{v:g}" for v in row]
            if quoted:
                cells[0] = f'"{cells[0]}"'  # not plain: the block goes through pyarrow
            file.write(f"{label}," + ",".join(cells) + "\n")
    expected = -log_softmax(logits, axis=1)[np.arange(3), labels].mean()
    assert float(score_in_child(path, "--target", "label", "--logits", "c*")) == pytest.approx(expected, rel=1e-12)


def test_lines_longer_than_pyarrows_blocks_are_parsed(tmp_path, capsys):
    """pyarrow parses in blocks of 1 MiB and fails on a line over two of them ("straddling object")."""
    path = tmp_path / "long.csv"
    long_zero = "0." + "0" * (5 << 20) + "9"  # 5 MiB of digits
    # The quoted cell is not plain, so pyarrow parses the block rather than the fast path.
    path.write_text(f'label,cat,dog\ncat,"0.9",0.1\ndog,{long_zero},0.1\ndog,0.3,{long_zero}\n')
    code = main(["score", str(path), "--target", "label", "--renormalize", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert json.loads(out)["rows"] == 3


def test_more_columns_than_allowed(tmp_path):
    csv_path = tmp_path / "many.csv"
    csv_path.write_text(",".join(f"c{k}" for k in range(MAX_COLUMNS + 1)) + "\n" + "0," * MAX_COLUMNS + "0\n")
    result = run_cli(csv_path, "--target", "c0")
    assert_one_line(result.returncode, result.stderr, "many.csv", f"{MAX_COLUMNS:,} columns")
    npz_path = tmp_path / "many.npz"
    np.savez(npz_path, y=np.zeros(1, dtype=np.int8), p=np.zeros((1, MAX_COLUMNS + 1), dtype=np.int8))
    result = run_cli(npz_path, "--target", "y")
    assert_one_line(result.returncode, result.stderr, "many.npz", f"{MAX_COLUMNS:,} are allowed")


# ---------------------------------------------------------------------------------------------
# Long lines


def test_a_header_line_longer_than_the_bound(tmp_path, capsys):
    path = tmp_path / "oneline.csv"
    path.write_bytes(b"x" * (MAX_LINE_BYTES + 10))
    line = assert_one_line(main(["score", str(path), "--target", "x"]), capsys.readouterr().err, "oneline.csv")
    assert "line 1" in line
    assert f"{MAX_LINE_BYTES:,} bytes" in line


def test_a_data_line_longer_than_the_bound(tmp_path, capsys):
    path = tmp_path / "longrow.csv"
    with path.open("wb") as file:
        file.write(b"label,cat,dog\ncat,0.9,0.1\n\ndog,0.2,")
        file.write(b"8" * (MAX_LINE_BYTES + 10))
    err = (main(["score", str(path), "--target", "label"]), capsys.readouterr().err)
    line = assert_one_line(*err, "longrow.csv", "row 2 (line 4)")
    assert f"{MAX_LINE_BYTES:,} bytes" in line


def _one_line_file(path: Path, size: int, header: bool) -> Path:
    """``size`` bytes without a line break after the first line (fields of 1,000 bytes)."""
    with path.open("wb") as file:
        if header:
            file.write(b"label,cat,dog\n")
        field = b"x" * 999 + b","
        written = 0
        while written < size:
            chunk = b"".join(b"%08d" % (written + k) + field[8:] for k in range(0, 1 << 20, 1000))
            file.write(chunk)
            written += len(chunk)
    return path


@pytest.mark.parametrize("header", [False, True], ids=["header-line", "data-line"])
def test_memory_of_a_long_line_does_not_grow_with_the_file(tmp_path, header):
    """A 20 MB and a 200 MB line without a line break: the same clean error and the same peak.

    Before the bound, the 200 MB header was split into 200,000 fields (gigabytes at shorter
    fields), and the 200 MB data line was buffered whole.
    """
    peaks = []
    for size in (20 << 20, 200 << 20):
        path = _one_line_file(tmp_path / f"line{size}.csv", size, header)
        peak, result = peak_rss_kib("-m", "crossentropy.cli", "score", path, "--target", "label")
        path.unlink()
        assert_one_line(result.returncode, result.stderr, f"line{size}.csv", f"{MAX_LINE_BYTES:,} bytes")
        peaks.append(peak)
    small, big = peaks
    assert big < small + 48 * 1024, peaks  # KiB: 180 MB more file, under 48 MiB more memory


# ---------------------------------------------------------------------------------------------
# Bounded memory for every layout of a NumPy file


@pytest.mark.parametrize(
    ("layout", "save"),
    [
        ("fortran", np.savez),
        ("fortran-compressed", np.savez_compressed),
        ("fortran-npy", None),
        ("c-order", np.savez),
    ],
)
def test_numpy_memory_does_not_grow_with_the_file(tmp_path, layout, save):
    """Peak memory of scoring a (n, 16) float64 member is the same for n and 10 n.

    A Fortran-ordered member used to be read whole (the 537 MB member of the issue peaked at
    963 MB); it is now read one block of rows at a time, one column slice per read. Batches
    of 16,384 rows (2 MiB), so that the allocator settles within the smaller file.
    """
    peaks = []
    for n in (100_000, 1_000_000):
        rng = np.random.default_rng(n)
        logits = rng.normal(size=(n, 16))
        labels = rng.integers(0, 16, n)
        member = np.asfortranarray(logits) if layout.startswith("fortran") else logits
        if layout == "fortran-npy":
            path = tmp_path / f"{layout}{n}.npy"
            table = np.empty((n, 17), order="F")
            table[:, 0], table[:, 1:] = labels + 1, logits  # classes are the column names 1 ... 16
            np.save(path, table)
            args = ["--target", "0", "--logits", ",".join(str(k) for k in range(1, 17))]
        else:
            path = tmp_path / f"{layout}{n}.npz"
            save(path, labels=labels, logits=member)
            args = ["--target", "labels", "--logits", "logits_*"]
        peak, result = peak_rss_kib("-c", _scoring_script(path, tuple(args), batch_rows=1 << 14))
        path.unlink()
        assert result.returncode == 0, result.stderr
        peaks.append(peak)
        expected = -log_softmax(logits, axis=1)[np.arange(n), labels].mean()
        assert float(result.stdout) == pytest.approx(expected, rel=1e-12)
    small, big = peaks
    assert big < small + 16 * 1024, peaks  # KiB: the big file holds 115 MB more numbers


def test_wide_batches_hold_a_bounded_number_of_values(tmp_path, monkeypatch):
    """Batches of a wide file have fewer rows, so that a batch stays near 16 MiB of float64."""
    from crossentropy.cli import _scoring, score
    from crossentropy.cli._sources import open_source

    n_rows, n_columns = 2048, 4096
    path = tmp_path / "wide.npz"
    rng = np.random.default_rng(1)
    np.savez(path, y=rng.integers(0, n_columns, n_rows), z=rng.normal(size=(n_rows, n_columns)).astype(np.float16))
    shapes = []
    add = _scoring.FileScorer.add

    def recording_add(self, predictions, *args, **kwargs):
        shapes.append(predictions.shape)
        return add(self, predictions, *args, **kwargs)

    monkeypatch.setattr(_scoring.FileScorer, "add", recording_add)
    source = open_source(path)
    columns = tuple(f"z_{k}" for k in range(n_columns))
    classes = tuple(str(k) for k in range(n_columns))
    score.score_source(source, score.Selection(predictions=columns, classes=classes, target="y", is_logits=True))
    assert sum(rows for rows, _ in shapes) == n_rows
    assert max(rows * columns * 8 for rows, columns in shapes) <= 16 << 20
