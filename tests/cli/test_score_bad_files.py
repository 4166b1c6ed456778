"""``crossentropy score`` on files it cannot use: CSV the :mod:`csv` module rejects, files that cannot be read.

Each stops the command with exit code 2 and one line naming the file (and the row and line where
they are known), never a traceback. Most cases run the command in-process (``main([...])``), so
that a read error can be injected where the operating system would raise it; the permission
test runs a real subprocess, without the capabilities that let root read any file.
"""

from __future__ import annotations

import ctypes
import errno
import io
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow", reason="crossentropy score reads files with pyarrow (the cli extra)")
import pyarrow.parquet as pq  # noqa: E402

from crossentropy.cli import main  # noqa: E402
from tests._support import assert_one_line, run_cli  # noqa: E402

HEADER = b"label,cat,dog\n"
ROWS = b"cat,0.9,0.1\ndog,0.2,0.8\ncat,0.6,0.4\n"
FORMATS = ("csv", "parquet", "npy", "npz")


def score(capsys, path: Path, *args: str) -> tuple[int, str]:
    """Run ``crossentropy score`` in this process; returns the exit code and stderr."""
    code = main(["score", str(path), *args])
    return code, capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# CSV that the csv module rejects


@pytest.mark.parametrize(
    ("content", "fragments"),
    [
        # Old Mac line endings: the whole file is one line of the csv module, many of pyarrow.
        (b"label,cat,dog\rcat,0.9,0.1\rdog,0.2,0.8\r", ("line 1", "carriage return")),
        (b"label,cat,dog\rcat,0.9,0.1\rdog,0.2,0.8", ("line 1", "carriage return")),
        # A stray \r inside a field of a data row, of the label column, of the header.
        (HEADER + b"cat,0.9,0.1\ndog,0.2\r,0.8\n", ("row 2 (line 3)", "carriage return")),
        (HEADER + b"cat,0.9,0.1\nd\rog,0.2,0.8\n", ("row 2 (line 3)", "carriage return")),
        (b"label,cat\r,dog\n" + ROWS, ("line 1", "carriage return")),
        # A stray \r in a block of the fast path, far from the start.
        (HEADER + ROWS * 3000 + b"dog,0.2,0.8\rcat,0.9,0.1\n", ("row 9001 (line 9002)", "carriage return")),
    ],
    ids=["cr-only", "cr-only-no-final-break", "cr-in-number", "cr-in-label", "cr-in-header", "cr-late"],
)
def test_carriage_returns_that_do_not_end_a_line(tmp_path, capsys, content, fragments):
    path = tmp_path / "preds.csv"
    path.write_bytes(content)
    assert_one_line(*score(capsys, path, "--target", "label"), "preds.csv", *fragments)


def test_crlf_line_endings_and_a_final_carriage_return_are_fine(tmp_path, capsys):
    path = tmp_path / "crlf.csv"
    path.write_bytes(b"label,cat,dog\r\ncat,0.9,0.1\r\ndog,0.2,0.8\r\ncat,0.6,0.4\r")
    assert score(capsys, path, "--target", "label") == (0, "")


@pytest.mark.parametrize("seed", range(24))
def test_random_bytes_after_a_valid_header(tmp_path, capsys, seed):
    rng = random.Random(seed)
    path = tmp_path / "noise.csv"
    path.write_bytes(HEADER + ROWS + rng.randbytes(rng.choice((1, 40, 2000, 20_000))))
    assert_one_line(*score(capsys, path, "--target", "label"), "noise.csv")


def test_random_bytes_with_nul_and_quotes(tmp_path, capsys):
    path = tmp_path / "noise.csv"
    path.write_bytes(HEADER + ROWS + b'cat,"0.9\x00,0.1\n"dog",0.2,0.8\n\x00\x00\n')
    assert_one_line(*score(capsys, path, "--target", "label"), "noise.csv", "row 4 (line 5)")


# ---------------------------------------------------------------------------------------------
# Files that cannot be read


def write_predictions(path: Path, file_format: str, n: int = 60_000) -> Path:
    """A valid file of ``n`` rows with columns label, cat, dog (about 1 MB or more)."""
    rng = np.random.default_rng(0)
    cat = rng.uniform(0.05, 0.95, n)
    labels = rng.integers(0, 2, n)
    if file_format == "csv":
        text = "label,cat,dog\n" + "".join(
            f"{'cat' if y == 0 else 'dog'},{p!r},{1 - p!r}\n"
            for y, p in zip(labels.tolist(), cat.tolist(), strict=True)
        )
        path.write_text(text)
    elif file_format == "parquet":
        names = np.array(["cat", "dog"])[labels]
        pq.write_table(pa.table({"label": names, "cat": cat, "dog": 1 - cat}), path, row_group_size=n // 4)
    elif file_format == "npy":
        table = np.zeros(n, dtype=[("label", "U3"), ("cat", "f8"), ("dog", "f8")])
        table["label"], table["cat"], table["dog"] = np.array(["cat", "dog"])[labels], cat, 1 - cat
        np.save(path, table)
    else:
        np.savez(path, probs=np.column_stack([cat, 1 - cat]), label=labels)
    return path


def target_args(file_format: str) -> list[str]:
    if file_format == "csv":
        return ["--target", "label"]
    if file_format == "npz":
        return ["--target", "label", "--probs", "probs_*"]
    return ["--target", "label", "--probs", "cat,dog"]


@pytest.mark.parametrize("file_format", FORMATS)
def test_every_format_is_readable_here(tmp_path, capsys, file_format):
    """The files of the tests below are valid: only the injected error stops them."""
    path = write_predictions(tmp_path / f"preds.{file_format}", file_format)
    code, err = score(capsys, path, *target_args(file_format))
    assert code == 0, err


def _drop_file_capabilities() -> None:
    """In the child: give up root's right to read any file (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH)."""
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2):
        if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def _run_without_file_capabilities(*args: str | Path) -> subprocess.CompletedProcess:
    return run_cli("score", *args, preexec_fn=_drop_file_capabilities if os.geteuid() == 0 else None)


@pytest.mark.parametrize("file_format", FORMATS)
def test_permission_denied_exits_2_with_one_line(tmp_path, file_format):
    path = write_predictions(tmp_path / f"locked.{file_format}", file_format)
    path.chmod(0)
    try:
        probe = subprocess.run(
            ["cat", str(path)],
            capture_output=True,
            check=False,
            preexec_fn=_drop_file_capabilities if os.geteuid() == 0 else None,
        )
    except (OSError, subprocess.SubprocessError) as error:
        pytest.skip(f"cannot run a process that is denied the file here: {error}")
    if probe.returncode == 0:
        pytest.skip("this user reads files whatever their mode (root with its capabilities)")
    result = _run_without_file_capabilities(path, *target_args(file_format))
    path.chmod(0o644)
    assert result.stdout == ""
    assert_one_line(result.returncode, result.stderr, f"locked.{file_format}", "Permission denied")


@pytest.mark.parametrize("file_format", FORMATS)
def test_a_directory_is_not_a_file(tmp_path, capsys, file_format):
    folder = tmp_path / f"folder.{file_format}"
    folder.mkdir()
    assert_one_line(*score(capsys, folder, "--target", "label"), f"folder.{file_format}", "directory")


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path):
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    result = subprocess.run(
        [sys.executable, "-m", "crossentropy.cli", "score", str(fifo), "--target", "label"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert_one_line(result.returncode, result.stderr, "pipe.csv", "not a regular file")


class _FailingRaw(io.RawIOBase):
    """A file whose reads of bytes in ``[fail_from, fail_to)`` raise ``OSError(EIO)``, as a bad disk does."""

    def __init__(self, path: Path, fail_from: int, fail_to: int, real_open) -> None:
        self._file = real_open(path, "rb", buffering=0)
        self._fail_from, self._fail_to = fail_from, fail_to

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._file.seek(offset, whence)

    def tell(self) -> int:
        return self._file.tell()

    def readinto(self, buffer) -> int:
        start = self._file.tell()
        if start < self._fail_to and start + len(buffer) > self._fail_from:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return self._file.readinto(buffer)

    def close(self) -> None:
        self._file.close()
        super().close()


def _patch_open(monkeypatch, target: Path, opener) -> None:
    """Route every Python-level open of ``target`` (builtins, io, pathlib) through ``opener``."""
    real_open = io.open

    def fake_open(file, mode="r", *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and Path(file).resolve() == target.resolve() and "r" in mode:
            return opener(file, mode, *args, real_open=real_open, **kwargs)
        return real_open(file, mode, *args, **kwargs)

    import builtins

    monkeypatch.setattr(builtins, "open", fake_open)
    monkeypatch.setattr(io, "open", fake_open)


@pytest.mark.parametrize("file_format", FORMATS)
def test_permission_denied_on_open_in_process(tmp_path, capsys, monkeypatch, file_format):
    """``open`` refusing the file, as it does for a user without read permission (root included)."""
    path = write_predictions(tmp_path / f"preds.{file_format}", file_format)

    def refuse(file, mode, *args, real_open, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(file))

    _patch_open(monkeypatch, path, refuse)
    line = assert_one_line(*score(capsys, path, *target_args(file_format)), f"preds.{file_format}")
    assert "Permission denied" in line


@pytest.mark.parametrize("file_format", FORMATS)
def test_input_output_error_in_the_middle_of_the_file(tmp_path, capsys, monkeypatch, file_format):
    """A read error after the header (EIO), while the rows are read."""
    path = write_predictions(tmp_path / f"preds.{file_format}", file_format)
    size = path.stat().st_size
    if file_format == "parquet":

        def fail(self, *args, **kwargs):
            raise OSError(errno.EIO, os.strerror(errno.EIO))
            yield  # pragma: no cover

        monkeypatch.setattr(pq.ParquetFile, "iter_batches", fail)
    else:

        def flaky(file, mode, *args, real_open, **kwargs):
            raw = _FailingRaw(Path(file), size // 2, size // 2 + 1, real_open)
            return raw if kwargs.get("buffering") == 0 else io.BufferedReader(raw)

        _patch_open(monkeypatch, path, flaky)
    line = assert_one_line(*score(capsys, path, *target_args(file_format)), f"preds.{file_format}")
    assert "Input/output error" in line


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed], ids=["stored", "compressed"])
def test_a_damaged_npz_archive(tmp_path, capsys, save):
    """Bytes overwritten inside a member: its CRC (or the deflate stream) fails while the rows are read."""
    rng = np.random.default_rng(3)
    path = tmp_path / "damaged.npz"
    save(path, labels=rng.integers(0, 3, 100_000), logits=rng.normal(size=(100_000, 3)))
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = rng.integers(0, 256, 64, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    line = assert_one_line(*score(capsys, path, "--target", "labels", "--logits", "logits_*"), "damaged.npz")
    assert "the archive is damaged" in line


def test_a_report_folder_that_cannot_be_written(tmp_path, capsys):
    """``--report`` under a file: the folder cannot be made; one line, and the file is left alone."""
    path = tmp_path / "preds.csv"
    path.write_bytes(HEADER + ROWS)
    blocker = tmp_path / "blocker"
    blocker.write_text("keep")
    code, err = score(capsys, path, "--target", "label", "--report", str(blocker / "report"))
    line = assert_one_line(code, err, "blocker")
    assert "report" in line
    assert blocker.read_text() == "keep"


@pytest.mark.parametrize("delimiter", ["", ";;"])
def test_a_delimiter_of_other_than_one_character(tmp_path, capsys, delimiter):
    path = tmp_path / "preds.csv"
    path.write_bytes(HEADER + ROWS)
    code, err = score(capsys, path, "--target", "label", "--delimiter", delimiter)
    assert_one_line(code, err, "preds.csv", "--delimiter")


def test_damaged_parquet_pages(tmp_path, capsys):
    """Bytes overwritten near the start of the data (page headers, dictionaries): one line if it shows."""
    path = write_predictions(tmp_path / "good.parquet", "parquet")
    data = path.read_bytes()
    rng = np.random.default_rng(0)
    codes = []
    for position in range(4, 244, 20):
        damaged = tmp_path / "damaged.parquet"
        noise = rng.integers(0, 256, 16, dtype=np.uint8).tobytes()
        damaged.write_bytes(data[:position] + noise + data[position + 16 :])
        code, err = score(capsys, damaged, *target_args("parquet"))
        if code != 0:  # damage inside the numbers may go unnoticed, or show as a value out of range
            assert_one_line(code, err, "damaged.parquet")
        codes.append(code)
    assert 2 in codes
