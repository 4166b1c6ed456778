"""The scripts in ``examples/`` run as a user runs them, and show what they claim."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_tiny_language_model_loss_falls_and_the_fused_head_equals_the_unfused_one():
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "tiny_language_model.py"), "--steps", "60", "--batch", "512", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert abs(summary["first_loss"] - summary["uniform_nats"]) < 0.2  # starts near a uniform guess
    assert summary["last_loss"] < summary["first_loss"] - 0.3  # and learns
    assert abs(summary["held_out_fused"] - summary["held_out_unfused"]) < 1e-4 * summary["held_out_unfused"]
