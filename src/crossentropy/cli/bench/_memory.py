"""Peak memory and compilation of ``crossentropy bench``: tracemalloc here, the rest in subprocesses."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from ..._tools.memory import proc_status_bytes, reset_peak_rss, rss_peak, tracemalloc_peak, worker_env
from ._cases import (
    _Inputs,
    _kernels_forward,
    _kernels_forward_grad,
    _make_inputs,
    _one_line,
    _torch_forward,
    _torch_forward_backward,
)
from ._config import (
    FAILED,
    FORWARD,
    FORWARD_GRAD,
    KERNELS,
    NOT_APPLICABLE,
    OK,
    TORCH,
    BenchConfig,
    Compilation,
    MemoryPeak,
)


def _tracemalloc_forward_peak(inputs: _Inputs) -> MemoryPeak:
    """Peak bytes NumPy and Python allocate during the kernels' forward pass (NumPy reports to tracemalloc)."""
    peak = MemoryPeak(inputs.shape, inputs.dtype, KERNELS, FORWARD, "tracemalloc", inputs.logits.nbytes, None)
    try:
        forward = _kernels_forward(inputs)
        forward()  # compiles and initializes outside the trace
        high = tracemalloc_peak(forward)
    except Exception as error:
        return replace(peak, status=FAILED, note=_one_line(error))
    return replace(peak, peak_bytes=high)


_RSS_CALLS: tuple[tuple[str, str, Callable[[_Inputs], Callable[[], Any]]], ...] = (
    (TORCH, FORWARD, _torch_forward),
    (KERNELS, FORWARD, _kernels_forward),
    (TORCH, FORWARD_GRAD, _torch_forward_backward),
    (KERNELS, FORWARD_GRAD, _kernels_forward_grad),
)


def _rss_worker() -> None:
    """Subprocess body of :func:`_rss_peaks`: reads the spec on stdin, prints JSON on stdout's last line."""
    spec = json.load(sys.stdin)
    peaks: list[dict[str, Any]] = []
    try:
        reset_peak_rss()
        proc_status_bytes("VmHWM")
    except OSError as error:
        print(json.dumps({"error": f"the peak resident set cannot be reset here ({error.strerror or error})"}))
        return
    for shape in spec["shapes"]:
        for dtype in spec["dtypes"]:
            inputs = _make_inputs(tuple(shape), dtype, spec["seed"])
            for method, pass_name, make in _RSS_CALLS:
                entry: dict[str, Any] = {"shape": shape, "dtype": dtype, "method": method, "pass": pass_name}
                try:
                    make(inputs.head(2))()  # compiles and initializes on two rows
                    entry["peak_bytes"] = rss_peak(make(inputs))
                except Exception as error:
                    entry["error"] = _one_line(error)
                peaks.append(entry)
            del inputs
            gc.collect()
    print(json.dumps({"peaks": peaks}))


def _rss_peaks(config: BenchConfig) -> list[MemoryPeak]:
    """Peak resident-set growth of PyTorch's and the kernels' calls, measured in a fresh subprocess.

    A fresh process, a frozen mmap threshold and a warm-up on two rows only keep memory freed by
    earlier calls from being reused unseen. Page-granular and subject to the allocator's
    bookkeeping: exact to a fraction of a percent at hundreds of megabytes, noisy below a megabyte.
    """
    spec = {"shapes": [list(shape) for shape in config.shapes], "dtypes": list(config.dtypes), "seed": config.seed}
    worker = "from crossentropy.cli.bench._memory import _rss_worker; _rss_worker()"
    # A frozen mmap threshold: every large block gets fresh pages (crossentropy._tools.memory.WORKER_ENV).
    env = worker_env()
    process = subprocess.run(
        [sys.executable, "-c", worker], input=json.dumps(spec), capture_output=True, text=True, env=env, check=False
    )
    nbytes = {"float32": 4, "bfloat16": 2}

    def peak(shape: Sequence[int], dtype: str, method: str, pass_name: str, **fields: Any) -> MemoryPeak:
        n_rows, n_classes = shape
        logits_bytes = n_rows * n_classes * nbytes[dtype]
        return MemoryPeak((n_rows, n_classes), dtype, method, pass_name, "rss", logits_bytes, **fields)

    lines = process.stdout.strip().splitlines()
    report = json.loads(lines[-1]) if process.returncode == 0 and lines else {"error": _stderr_tail(process)}
    if "error" in report:
        return [
            peak(shape, dtype, method, pass_name, peak_bytes=None, status=NOT_APPLICABLE, note=report["error"])
            for shape in config.shapes
            for dtype in config.dtypes
            for method, pass_name, _ in _RSS_CALLS
        ]
    return [
        peak(
            entry["shape"],
            entry["dtype"],
            entry["method"],
            entry["pass"],
            peak_bytes=entry.get("peak_bytes"),
            status=FAILED if "error" in entry else OK,
            note=entry.get("error", ""),
        )
        for entry in report["peaks"]
    ]


def _stderr_tail(process: subprocess.CompletedProcess) -> str:
    lines = [line for line in process.stderr.strip().splitlines() if line.strip()]
    return f"exit code {process.returncode}: {lines[-1].strip() if lines else 'no message'}"


_COMPILE_PROBE = """\
import json, time
start = time.perf_counter()
import numpy as np
import crossentropy
imported = time.perf_counter()
logits = np.random.default_rng(0).standard_normal((8, 100), dtype=np.float32)
targets = np.arange(8)
crossentropy.softmax_cross_entropy(logits, targets)
forward = time.perf_counter()
crossentropy.softmax_cross_entropy_with_grad(logits, targets)
grad = time.perf_counter()
print(json.dumps({"import_s": imported - start, "forward_s": forward - imported, "grad_s": grad - forward,
                  "total_s": grad - start}))
"""


def _measure_compilation() -> Compilation:
    """Two fresh processes on one new ``NUMBA_CACHE_DIR``: the first compiles, the second loads the cache."""
    with tempfile.TemporaryDirectory(prefix="crossentropy-numba-cache-") as cache_dir:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache_dir}
        timings = []
        for _ in ("cold", "warm"):
            process = subprocess.run(
                [sys.executable, "-c", _COMPILE_PROBE], capture_output=True, text=True, env=env, check=False
            )
            if process.returncode != 0:
                return Compilation(None, None, FAILED, _stderr_tail(process))
            timings.append(json.loads(process.stdout.strip().splitlines()[-1]))
    return Compilation(timings[0], timings[1])
