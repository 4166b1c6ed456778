"""The run of ``crossentropy bench``: every case of every shape and dtype, the memory and compilation probes."""

from __future__ import annotations

import gc
import time
from typing import Any

import numpy as np

from ..._tools.environment import OtherProcessesCpu, environment
from ..._tools.progress import StepProgress
from ._cases import (
    _attach_references,
    _bandwidth_cases,
    _bandwidth_of,
    _import_torch,
    _loss_cases,
    _make_inputs,
    _measure,
)
from ._config import BenchConfig, BenchResult, _shape_text
from ._memory import _measure_compilation, _rss_peaks, _tracemalloc_forward_peak


def _environment() -> dict[str, Any]:
    _import_torch()
    from ... import softmax_cross_entropy

    # The kernels' first call picks Numba's threading layer (by whether PyTorch is loaded, which it
    # is now): start the threads that way, not by numba.get_num_threads() below.
    softmax_cross_entropy(np.zeros((1, 2), np.float32), np.zeros(1, np.int64))
    return environment(torch=True, numba=True)


def _count_steps(config: BenchConfig) -> int:
    """Steps of :func:`run_benchmark`: per (shape, dtype) inputs, cases, tracemalloc; then RSS and compilation."""
    reads = 3  # max, sum, gemv (bfloat16 with an odd V has no gemv: one step less, harmless for a progress bar)
    losses = 2 + (2 if config.generic else 0) + 3
    per_group = 1 + reads + 2 + losses + 1
    return len(config.shapes) * len(config.dtypes) * per_group + 2


def run_benchmark(config: BenchConfig, *, progress: StepProgress | None = None) -> BenchResult:
    """Measure everything of ``config`` in this process (and the memory and compilation subprocesses).

    Parameters
    ----------
    config : BenchConfig
        Shapes, dtypes, repetitions.
    progress : optional
        Receives ``step(description)`` before each step (:func:`crossentropy._tools.progress.step_progress`).

    Returns
    -------
    BenchResult
        Every measurement, with the speed-ups and fractions of the floor attached.

    Raises
    ------
    MissingDependencyError
        When PyTorch is not installed.
    """
    progress = progress or StepProgress()
    start = time.perf_counter()
    result = BenchResult(config, _environment())
    other_cpu = OtherProcessesCpu()
    for shape in config.shapes:
        for dtype in config.dtypes:
            label = f"{_shape_text(shape)} {dtype}"
            progress.step(f"{label}: making the logits")
            inputs = _make_inputs(shape, dtype, config.seed)
            floor_rows = []
            for case in _bandwidth_cases(inputs, config.repeat):
                progress.step(f"{label}: {case.method}")
                floor_rows.append(_measure(case, inputs))
            bandwidth = _bandwidth_of(floor_rows, inputs)
            loss_rows = []
            for case in _loss_cases(inputs, config):
                progress.step(f"{label}: {case.method} {case.pass_name}")
                loss_rows.append(_measure(case, inputs))
            _attach_references(loss_rows, bandwidth)
            progress.step(f"{label}: peak memory of the forward pass (tracemalloc)")
            result.memory.append(_tracemalloc_forward_peak(inputs))
            result.measurements += floor_rows + loss_rows
            result.bandwidths.append(bandwidth)
            del inputs
            gc.collect()
    progress.step("peak resident memory of PyTorch and the kernels (subprocess)")
    result.memory += _rss_peaks(config)
    progress.step("compilation in fresh processes (empty, then filled Numba cache)")
    result.compilation = _measure_compilation()
    result.total_s = time.perf_counter() - start
    result.environment["other_processes_cpu_share"] = other_cpu.share()
    return result
