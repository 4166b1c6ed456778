"""Tolerances and array helpers shared by the test modules (imported by ``conftest.py`` too).

Tolerances follow the dtype of the computation under test: float64 ~1e-10 relative, float32
~1e-5 relative, and the half dtypes a couple of units in their last place.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

# PyTorch is optional for the core suite (tests/core runs without it; docs/design.md, "Tests"): without it
# ``torch`` and ``F`` are None, and the cases that need them skip through ``requires_torch``/``torch_params``.
try:
    import torch
    import torch.nn.functional as F
except ImportError:
    torch = F = None

TORCH_INSTALLED = torch is not None
requires_torch = pytest.mark.skipif(not TORCH_INSTALLED, reason="needs PyTorch, which is not installed")


# The array kinds the core's tests run on: NumPy always, torch tensors where PyTorch is installed.
BACKENDS = ["numpy", pytest.param("torch", marks=requires_torch)]
AS_TORCH = [False, pytest.param(True, marks=requires_torch)]


def torch_params(*names: str) -> list:
    """Parameters of torch dtypes by name (``"float32"`` → ``torch.float32``, its id the name), skipped
    with ``requires_torch``'s reason where PyTorch is not installed."""
    if not TORCH_INSTALLED:
        return [pytest.param(name, id=name, marks=requires_torch) for name in names]
    return [pytest.param(getattr(torch, name), id=name) for name in names]


def is_tensor(x) -> bool:
    """Whether ``x`` is a torch tensor (False, not an error, without PyTorch)."""
    return TORCH_INSTALLED and isinstance(x, torch.Tensor)


# Where the Triton kernels can run: on CPU tensors in Triton's interpreter (TRITON_INTERPRET=1, which
# the root conftest.py sets without a GPU), and on a CUDA GPU.
TRITON_INSTALLED = importlib.util.find_spec("triton") is not None
NEEDS_TRITON_ON_CPU = pytest.mark.skipif(
    not (TRITON_INSTALLED and os.environ.get("TRITON_INTERPRET") == "1"),
    reason="needs triton and TRITON_INTERPRET=1 to run Triton on the CPU",
)
NEEDS_CUDA = pytest.mark.skipif(
    not (TRITON_INSTALLED and TORCH_INSTALLED and torch.cuda.is_available()), reason="needs a CUDA GPU"
)


KERNEL_ENTRY_POINTS = ("softmax_cross_entropy_rows", "sigmoid_cross_entropy_elements")
# The optional fused linear kernels (a backend's ``has_fused_linear``).
FUSED_LINEAR_ENTRY_POINTS = ("linear_logsumexp", "linear_cross_entropy_gradients")


def record_entry_calls(monkeypatch, module, calls: list, label: str | None = None) -> list:
    """Spy on a kernel backend's ``module``: each call of an entry point (the fused linear ones too, where
    the module has them) appends ``label`` (default: the entry point's name) to ``calls``, then runs it.
    Returns ``calls``."""
    optional = [name for name in FUSED_LINEAR_ENTRY_POINTS if hasattr(module, name)]
    for name in (*KERNEL_ENTRY_POINTS, *optional):
        original = getattr(module, name)

        def spy(*args, _original=original, _label=label or name, **kwargs):
            calls.append(_label)
            return _original(*args, **kwargs)

        monkeypatch.setattr(module, name, spy)
    return calls


def triton_devices(cpu: str = "cpu") -> list:
    """The device axis of the Triton tests: ``cpu`` (the interpreter; named ``cpu``) and ``cuda``, each
    skipped with its reason where it cannot run."""
    return [pytest.param(cpu, marks=NEEDS_TRITON_ON_CPU), pytest.param("cuda", marks=NEEDS_CUDA)]


# (rtol, atol) per dtype name.
_TOLERANCES = {
    "float64": (1e-10, 1e-12),
    "float32": (1e-5, 1e-6),
    # Half dtypes: a couple of units in the last place of the result.
    "float16": (2 * 2.0**-10, 1e-3),
    "bfloat16": (2 * 2.0**-7, 1e-2),
}


def _dtype_name(dtype) -> str:
    if TORCH_INSTALLED and isinstance(dtype, torch.dtype):
        return str(dtype).removeprefix("torch.")
    return np.dtype(dtype).name


def tolerance(dtype) -> dict[str, float]:
    """``dict(rtol=..., atol=...)`` for results computed in ``dtype``."""
    rtol, atol = _TOLERANCES[_dtype_name(dtype)]
    return {"rtol": rtol, "atol": atol}


def to_numpy(x) -> np.ndarray:
    """Any array (NumPy, torch, Python scalar) as a float64 or integer NumPy array."""
    if is_tensor(x):
        x = x.detach()
        if x.dtype in (torch.float16, torch.bfloat16):
            x = x.float()
        return x.cpu().numpy()
    return np.asarray(x)


def assert_close(actual, expected, dtype, *, err_msg: str = "") -> None:
    """Compare two arrays (any kind) with the tolerance of ``dtype``."""
    a = to_numpy(actual).astype(np.float64)
    e = to_numpy(expected).astype(np.float64)
    assert a.shape == e.shape, f"shape {a.shape} != expected {e.shape} {err_msg}"
    np.testing.assert_allclose(a, e, **tolerance(dtype), err_msg=err_msg)


def result_dtype_name(x) -> str:
    """dtype name of a result that may be a NumPy scalar, NumPy array or torch tensor."""
    if is_tensor(x):
        return _dtype_name(x.dtype)
    return np.asarray(x).dtype.name


def assert_same_kind(result, like) -> None:
    """A result is the same kind of array as the input ``like`` (torch in, torch out; NumPy in, NumPy out)."""
    if is_tensor(like):
        assert isinstance(result, torch.Tensor), f"torch input gave {type(result).__name__}"
    else:
        assert isinstance(result, np.ndarray | np.generic), f"NumPy input gave {type(result).__name__}"
    assert result_dtype_name(result) == result_dtype_name(like), (
        f"result dtype {result_dtype_name(result)} != input dtype {result_dtype_name(like)}"
    )


def to_backend(a, backend: str):
    """A NumPy array as given (``"numpy"``) or as a torch tensor sharing its memory (``"torch"``)."""
    return torch.from_numpy(np.ascontiguousarray(a)) if backend == "torch" else a


def both_paths(function, *args, **options):
    """``function(*args, **options)`` on the fused kernels, and on the generic path (the reference)."""
    from crossentropy import kernels

    with kernels.disabled():
        reference = function(*args, **options)
    return function(*args, **options), reference


def assert_matches(actual, expected, dtype, what: str) -> None:
    """NumPy results (a tuple or one array) equal in kind, dtype and shape, and close for ``dtype``."""
    actual = actual if isinstance(actual, tuple) else (actual,)
    expected = expected if isinstance(expected, tuple) else (expected,)
    for got, want in zip(actual, expected, strict=True):
        assert isinstance(got, np.ndarray | np.generic), what
        assert got.dtype == want.dtype, what
        assert got.shape == want.shape, what
        np.testing.assert_allclose(got, want, **tolerance(dtype), err_msg=what)


def assert_one_line(code: int, err: str, *fragments: str) -> str:
    """A command's exit code 2 and standard error of one line, no traceback, holding every fragment; the line."""
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def run_cli(*args: str | Path, timeout: float = 120, **options) -> subprocess.CompletedProcess:
    """``python -m crossentropy.cli ARGS`` in a fresh process, its output captured as text; ``options``
    go to :func:`subprocess.run` (``cwd``, ``preexec_fn``)."""
    command = [sys.executable, "-m", "crossentropy.cli", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False, **options)


# The figures of `crossentropy score --json` that two ways of scoring the same rows must share.
SCORE_FIGURES = (
    "log_loss_nats",
    "perplexity",
    "accuracy",
    "brier_score",
    "expected_calibration_error",
    "mean_predicted_entropy",
)


def run_score(capsys, *args: str | Path) -> tuple[int, str, str]:
    """``crossentropy score ARGS`` in this process: exit code, standard output and standard error."""
    from crossentropy.cli import main

    code = main(["score", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def score_figures(capsys, *args: str | Path) -> dict:
    """The ``--json`` figures of ``crossentropy score ARGS``, which must succeed."""
    code, out, err = run_score(capsys, *args, "--json")
    assert code == 0, err
    return json.loads(out)


def assert_same_score_figures(got: dict, expected: dict) -> None:
    """Two ``score --json`` results of the same rows agree to float64 rounding (sums added in another order)."""
    assert got["rows"] == expected["rows"]
    assert got["classes"] == expected["classes"]
    for name in (*SCORE_FIGURES, "weight"):
        assert math.isclose(got[name], expected[name], rel_tol=1e-12, abs_tol=1e-15), name
    for row, want in zip(got["per_class"], expected["per_class"], strict=True):
        assert (row["class"], row["rows"]) == (want["class"], want["rows"])
        assert math.isclose(row["mean_cross_entropy"], want["mean_cross_entropy"], rel_tol=1e-12)
    for row, want in zip(got["reliability"], expected["reliability"], strict=True):
        assert math.isclose(row["weight"], want["weight"], rel_tol=1e-12, abs_tol=1e-12)


def free_port() -> int:
    """A TCP port on 127.0.0.1 free right now, for a process group's rendezvous."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def mypy_messages(script: str, config: str, folder: Path) -> dict[int, list[str]]:
    """mypy's messages on the user script ``script`` under the mypy.ini text ``config``, by line number
    (files and mypy's cache in ``folder``)."""
    from mypy import api

    path = folder / "user_script.py"
    path.write_text(script, encoding="utf-8")
    config_path = folder / "mypy.ini"
    config_path.write_text(config, encoding="utf-8")
    stdout, stderr, _ = api.run(
        ["--config-file", str(config_path), "--cache-dir", str(folder / "cache"), "--no-error-summary", str(path)]
    )
    assert not stderr, stderr
    messages: dict[int, list[str]] = {}
    for line in stdout.splitlines():
        match = re.match(rf"{re.escape(str(path))}:(\d+): (.*)", line)
        assert match, f"unexpected mypy output: {line}"
        messages.setdefault(int(match.group(1)), []).append(match.group(2))
    return messages


def marked_line(script: str, marker: str) -> int:
    """The line number of the line of ``script`` ending with the comment ``# marker``."""
    (number,) = [i + 1 for i, line in enumerate(script.splitlines()) if line.endswith(f"# {marker}")]
    return number


def normalized_type(revealed: str) -> str:
    """mypy's spelling of a type, made independent of its version: named tuples by their name
    (``tuple[Any, Any, Any, fallback=crossentropy.losses.LossStats]`` is ``LossStats``), classes
    without their module (``torch._tensor.Tensor`` is ``Tensor``, ``builtins.tuple`` is ``tuple``),
    ``tuple`` and ``X | Y`` rather than ``Tuple`` and ``Union[X, Y]``."""
    revealed = re.sub(r"[Tt]uple\[[^\[\]]*fallback=[\w.]*?(\w+)\]", r"\1", revealed)
    revealed = re.sub(r"\b(?:\w+\.)+(\w+)", r"\1", revealed).replace("Tuple[", "tuple[")
    union = re.fullmatch(r"Union\[(\w+), (.*)\]", revealed)
    return f"{union.group(1)} | {union.group(2)}" if union else revealed
