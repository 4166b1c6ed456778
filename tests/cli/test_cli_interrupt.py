"""Ctrl-C in the middle of a command: exit code 130, one line, no traceback, no half-written output.

Each command runs in a subprocess that is sent SIGINT once it is demonstrably at work (it has
its input file open, or has created its output folder); the report writer's all-or-nothing
promise is checked in-process, where the interrupt can be put between two files.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow", reason="crossentropy score reads files with pyarrow (the cli extra)")
import pyarrow.parquet as pq  # noqa: E402

from crossentropy._tools import files as _files  # noqa: E402
from crossentropy.cli import _report, main  # noqa: E402

pytestmark = pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="watches the command through /proc")


def _default_sigint() -> None:
    # As at a terminal. A job a non-interactive shell started with `&` ignores SIGINT, and so would
    # every process it starts (Python then installs no KeyboardInterrupt handler at all).
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(*args: str | Path, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "crossentropy.cli", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
        preexec_fn=_default_sigint,
    )


def interrupt_when(process: subprocess.Popen, ready: Callable[[], bool], timeout: float = 120) -> tuple[str, str]:
    """Send SIGINT as soon as ``ready()``; returns the command's stdout and stderr."""
    deadline = time.monotonic() + timeout
    while not ready():
        if process.poll() is not None:
            _, err = process.communicate()
            pytest.fail(f"the command ended (code {process.returncode}) before it could be interrupted: {err}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("the command never got to work")
        time.sleep(0.005)
    process.send_signal(signal.SIGINT)
    return process.communicate(timeout=120)


def has_open(process: subprocess.Popen, path: Path) -> bool:
    folder = Path(f"/proc/{process.pid}/fd")
    try:
        return any(os.readlink(folder / fd) == str(path) for fd in os.listdir(folder))
    except OSError:  # a descriptor closed while we looked
        return False


def assert_interrupted(process: subprocess.Popen, err: str, command: str) -> None:
    # 130 = 128 + SIGINT. CPython itself ends the process by SIGINT instead (which a shell reports
    # as 130 too) when the KeyboardInterrupt once passed through code run by PyRun_* (the import of
    # some C extensions, torch's), even though main() handled it; both are the same to the caller.
    assert process.returncode in (130, -signal.SIGINT), err
    assert "Traceback" not in err
    assert err.strip().splitlines() == [f"crossentropy {command}: interrupted"], err


def temporaries(folder: Path) -> list[Path]:
    return [path for path in folder.rglob("*") if path.name.endswith(".tmp")]


def test_score_interrupted_while_reading(tmp_path):
    """The report folder is not created and nothing is printed on stdout."""
    n = 200_000
    rng = np.random.default_rng(0)
    cat = rng.uniform(0.05, 0.95, n)
    table = pa.table({"label": np.array(["cat", "dog"])[rng.integers(0, 2, n)], "cat": cat, "dog": 1 - cat})
    path = tmp_path / "slow.parquet"
    pq.write_table(table, path, row_group_size=10)  # 20,000 row groups: seconds of reading
    process = start("score", path, "--target", "label", "--json", "--report", "report", cwd=tmp_path)
    out, err = interrupt_when(process, lambda: has_open(process, path))
    assert_interrupted(process, err, "score")
    assert out == ""
    assert not (tmp_path / "report").exists()


def test_demo_interrupted(tmp_path):
    out_dir = tmp_path / "demo"
    process = start("demo", "--out", out_dir, cwd=tmp_path)
    out, err = interrupt_when(process, out_dir.exists)
    assert_interrupted(process, err, "demo")
    assert out == ""
    assert temporaries(out_dir) == []


def test_gallery_interrupted_between_experiments(tmp_path):
    """Interrupted once the first experiment has written its figures: the index, written last, is not."""
    out_dir = tmp_path / "gallery"
    process = start("gallery", "surprise", "adversarial", "--quick", "--out", out_dir, cwd=tmp_path)
    _, err = interrupt_when(process, (out_dir / "surprise").exists)
    assert_interrupted(process, err, "gallery")
    assert not (out_dir / "index.html").exists()
    assert temporaries(out_dir) == []


def test_bench_interrupted(tmp_path):
    pytest.importorskip("torch")
    out_dir = tmp_path / "bench"
    process = start("bench", "--quick", "--out", out_dir, cwd=tmp_path)
    _, err = interrupt_when(process, out_dir.exists)
    assert_interrupted(process, err, "bench")
    assert list(out_dir.iterdir()) == []


def test_report_interrupted_while_written_leaves_the_old_one(tmp_path, capsys, monkeypatch):
    """Ctrl-C while the report is drawn: the previous report stays whole, with no temporary file."""
    path = tmp_path / "preds.csv"
    path.write_text("label,cat,dog\ncat,0.9,0.1\ndog,0.2,0.8\ncat,0.6,0.4\n")
    report = tmp_path / "report"
    assert main(["score", str(path), "--target", "label", "--report", str(report)]) == 0
    before = {name: (report / name).read_bytes() for name in _report.OUTPUT_NAMES}
    path.write_text("label,cat,dog\ncat,0.5,0.5\ndog,0.5,0.5\n")
    capsys.readouterr()

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(_report, "per_class_figure", interrupted)
    try:
        code = main(["score", str(path), "--target", "label", "--report", str(report)])
    except KeyboardInterrupt:
        pytest.fail("the interrupt escaped main()")
    assert code == 130
    captured = capsys.readouterr()
    assert captured.err.strip() == "crossentropy score: interrupted"
    assert captured.out == ""
    assert {name: (report / name).read_bytes() for name in _report.OUTPUT_NAMES} == before
    assert temporaries(report) == []


def test_write_all_atomic_interrupted_between_files(tmp_path, monkeypatch):
    """An interrupt after some temporary files are written leaves every final name as it was."""
    (tmp_path / "b.txt").write_bytes(b"old b")
    written = []
    real_fdopen = os.fdopen

    def fdopen(*args, **kwargs):
        if len(written) == 2:
            raise KeyboardInterrupt
        written.append(args)
        return real_fdopen(*args, **kwargs)

    monkeypatch.setattr(_files.os, "fdopen", fdopen)
    with pytest.raises(KeyboardInterrupt):
        _files.write_all_atomic({tmp_path / name: b"new" for name in ("a.txt", "b.txt", "c.txt")})
    assert sorted(path.name for path in tmp_path.iterdir()) == ["b.txt"]
    assert (tmp_path / "b.txt").read_bytes() == b"old b"
