"""The ``crossentropy`` command, driven as a user would: in a subprocess."""

from __future__ import annotations

import subprocess

from tests._support import run_cli


def run(*args: str) -> subprocess.CompletedProcess:
    return run_cli(*args)


def test_help_has_examples_and_bad_usage_exits_2():
    result = run("--help")
    assert result.returncode == 0
    assert "examples:" in result.stdout
    assert run().returncode == 2
    bad = run("no-such-command")
    assert bad.returncode == 2
    assert "Traceback" not in bad.stderr
