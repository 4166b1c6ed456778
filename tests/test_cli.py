"""The ``crossentropy`` command, driven as a user would: in a subprocess."""

from __future__ import annotations

import subprocess
import sys


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "crossentropy.cli", *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_help_has_examples_and_bad_usage_exits_2():
    result = run("--help")
    assert result.returncode == 0
    assert "examples:" in result.stdout
    assert run().returncode == 2
    bad = run("no-such-command")
    assert bad.returncode == 2
    assert "Traceback" not in bad.stderr
