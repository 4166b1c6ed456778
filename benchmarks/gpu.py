"""Cross-entropy on one GPU: ``crossentropy.torch`` against PyTorch, Liger-Kernel and Cut Cross-Entropy.

One command, meant to finish in under eight minutes on one H100: its time budget (``--budget-s``,
default 420 s) stops the measuring before. Not yet run on a GPU. ``benchmarks/gpu_run.sh`` runs it
on a lent machine; ``benchmarks/README.md``, section "GPU", says how::

    python3 benchmarks/gpu.py                           # the full run, files in benchmarks/results/
    python3 benchmarks/gpu.py --quick                   # one small shape, few repeats
    python3 benchmarks/gpu.py --device cpu --quick      # the same code on tiny CPU tensors (the smoke test)

First, the linear cross-entropy section (``--sections``; within ``--linear-budget-s`` of the
budget): the loss of ``x @ W.T`` and the gradients of x and W (N=8192, H=4096, V in {32768,
131072, 262144}, bfloat16, every 61st target ``ignore_index``) for eager ``F.cross_entropy((x @
W.T).float(), y)``, PyTorch's chunked ``F.linear_cross_entropy`` (where torch has it), Liger's
``liger_fused_linear_cross_entropy``, Cut Cross-Entropy's ``linear_cross_entropy`` and ours,
``crossentropy.torch.linear_cross_entropy``: median time (CUDA events) and peak memory above the
inputs of forward + backward, as ratios to CCE's; the loss's relative error and the cosine
similarity of both gradients against a float64 reference computed in chunks of rows; ours'
targets (peak memory <= 1.1x CCE's, time <= CCE's, loss error <= 1e-3, cosines >= 0.9999), met or
not as measured. ``benchmarks/README.md`` has the details.

Then the softmax section. What it measures, for float32 and bfloat16 logits at N in {8192, 32768} x V in {32000, 128256,
262144} (standard-normal logits, uniform class-index targets, ``reduction="mean"``):

* the device-to-device copy bandwidth first (a large ``dst.copy_(src)``, bytes read + written
  over the time), the yardstick of every pass;
* per method, the forward pass (under ``torch.no_grad``) and forward + backward
  (``torch.autograd.grad(loss, logits)``, which returns the gradient without accumulating it
  into ``.grad``), each warmed up and then timed ``--repeat`` times with CUDA events, median
  reported; before every timed call a read of a buffer twice the L2's size evicts the inputs and
  any dirty lines, and methods that write over the logits get them re-filled from the same seed,
  both outside the timed region;
* the peak memory of one call: ``torch.cuda.max_memory_allocated()`` after
  ``reset_peak_memory_stats()``, above the memory allocated just before the call (the inputs);
* the minimum traffic of a pass (forward: the logits read once; forward + backward: the logits
  read once and the gradient written once; targets and the loss are not counted) over the
  median time, as a fraction of the copy bandwidth;
* a correctness spot check per shape and method: the loss against ``F.cross_entropy`` of the
  float32 logits (computed in row chunks), the gradient on 16 sampled rows (the first, the last
  and random ones) against softmax - one-hot in float64, and N times every row's gradient sum
  (0 in exact arithmetic) and L1 norm (2 (1 - p_y)), so that a row left unwritten shows; before
  the checked call a NaN block of the gradient's size is left in the CUDA caching allocator. A
  method that fails has its times marked as invalid; a failure of ours makes the exit code 1, as
  does a device that stops computing (after which nothing more is measured; the files are written).

Methods: ``F.cross_entropy`` eager; ``torch.compile(F.cross_entropy, dynamic=True)`` (one
compilation per dtype and pass; the first call's excess over the median is reported as the
compile time and kept out of the timings); Liger-Kernel's ``LigerCrossEntropyLoss`` ("not
installed" where ``liger_kernel`` is missing); ours, ``crossentropy.torch.cross_entropy`` with
``inplace=False`` and ``inplace=True``, each with its value checks on and under
``crossentropy.checks_disabled()``. A method that runs out of memory on a shape is "OOM"; a
shape whose inputs alone do not fit is skipped, saying so; a time-budget guard (``--budget-s``)
marks the cells it had no time for "not measured (time budget)".

Output in ``--out``: ``gpu.md`` (environment and tables), ``gpu.json`` (every number), ``gpu.png``
(a chart, when matplotlib is installed). Both text files are rewritten after every shape, so a
run cut short still leaves what it measured.

The timing loop (warm-ups, garbage collector off, the device's clock), the medians, the machine's
part of the environment record and the tables are :mod:`crossentropy._tools`' (imported from the
checkout's ``src/`` where crossentropy is not installed).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import importlib
import importlib.metadata
import importlib.util
import json
import math
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
if importlib.util.find_spec("crossentropy") is None:  # not installed: the checkout's own source
    sys.path.insert(0, str(ROOT / "src"))

from crossentropy._tools.environment import environment as machine_record  # noqa: E402
from crossentropy._tools.tables import Table, render_markdown, render_plain  # noqa: E402
from crossentropy._tools.timing import HOST_CLOCK, Clock, median, time_calls  # noqa: E402

FULL_SHAPES = ((8192, 32000), (8192, 128256), (8192, 262144), (32768, 32000), (32768, 128256), (32768, 262144))
QUICK_SHAPES = {"cuda": ((4096, 32000),), "cpu": ((64, 1000),)}
DTYPES = ("bfloat16", "float32")
PASSES = ("fwd", "fwdbwd")
PASS_NAMES = {"fwd": "forward", "fwdbwd": "forward + backward"}
SEED = 1234
CHECK_ROWS = 16  # rows of the gradient compared with the float64 reference
# Spot-check tolerances (relative loss error; relative L2 error of the gradient's softmax part on
# the sampled rows; absolute error of N * their target entries, about -1; on every row, the
# absolute errors of N * the row sum and of N * the row's L1 norm). They let PyTorch's own
# bfloat16 path pass (its log-softmax is rounded to bfloat16: up to 3 per cent per element at
# |log p| in [8, 16), the same sign for many entries of a row) and catch a wrong kernel (rows
# unwritten or shifted, a wrong class, a missing 1/N, NaN).
TOLERANCES = {
    "float32": {"loss": 1e-4, "grad": 1e-3, "target": 1e-4, "rows": 1e-3},
    "bfloat16": {"loss": 2e-2, "grad": 5e-2, "target": 2e-2, "rows": 5e-2},
}
BUDGET_MARGIN_S = 20.0  # kept back from --budget-s for writing the files and the chart

NOT_MEASURED = "not measured (time budget)"
DEVICE_FAILED = "not measured (the device failed)"
FIRST_CALL_NOTE_S = 0.5  # a first call this much longer than the median is listed under "First calls"


@dataclass(frozen=True)
class Method:
    key: str
    label: str
    short: str  # a column of the summary at the end of the output
    ours: bool = False
    writes_input: bool = False  # may write over the logits: re-filled before every call, outside the timed region


METHODS = (
    Method("eager", "F.cross_entropy (eager)", "eager"),
    Method("compiled", "torch.compile(F.cross_entropy)", "compiled"),
    Method("liger", "Liger LigerCrossEntropyLoss", "liger", writes_input=True),
    Method("ours", "ours", "ours", ours=True),
    Method("ours_nochecks", "ours, checks_disabled()", "ours-nochk", ours=True),
    Method("ours_inplace", "ours inplace=True", "inplace", ours=True, writes_input=True),
    Method(
        "ours_inplace_nochecks", "ours inplace=True, checks_disabled()", "inplace-nochk", ours=True, writes_input=True
    ),
)


class Unavailable(Exception):
    """A method that cannot run here; its message is what the tables show."""


# --------------------------------------------------------------------------------------------
# the device: timers, memory, cache flush


class Device:
    def __init__(self, name: str) -> None:
        self.torch = torch.device(name)
        self.cuda = self.torch.type == "cuda"
        self.flush_buffer: torch.Tensor | None = None
        # CUDA: an event recorded on the stream before and after each call, read after a synchronize.
        self.clock = Clock(_recorded_event, _event_seconds, self.sync) if self.cuda else HOST_CLOCK
        if self.cuda:
            props = torch.cuda.get_device_properties(self.torch)
            self.l2_bytes = int(getattr(props, "L2_cache_size", 0) or 50 * 2**20)
            self.flush_buffer = torch.empty(2 * self.l2_bytes // 4, dtype=torch.float32, device=self.torch)
            self.flush_buffer.normal_()

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.torch)

    def flush(self) -> None:
        """Evict the L2: read a buffer twice its size (clean lines of an unrelated buffer afterwards)."""
        if self.flush_buffer is not None:
            self.flush_buffer.sum()

    def free_bytes(self) -> int:
        if self.cuda:
            return torch.cuda.mem_get_info(self.torch)[0]
        with contextlib.suppress(OSError, ValueError), open("/proc/meminfo") as info:
            for line in info:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
        return 2**40

    def cleanup(self) -> None:
        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()

    def poison(self, like: torch.Tensor) -> bool:
        """Leave a block of ``like``'s size full of NaN in PyTorch's caching allocator (CUDA), where the next
        allocation of that size (a gradient) lands: an element the method leaves unwritten then shows as NaN
        instead of as a correct value left there by the method before. False when it did not fit."""
        if not self.cuda:
            return False
        try:
            block = torch.full_like(like, math.nan, requires_grad=False)
        except out_of_memory_errors():
            return False
        del block  # back to the cache, not to the driver
        return True

    def failure(self) -> str | None:
        """None while the device still computes; after a sticky CUDA error (an illegal address, a device-side
        assert) every later call fails, so the run stops measuring: what the error says."""
        if not self.cuda:
            return None
        try:
            torch.cuda.synchronize(self.torch)
            if float(torch.ones(1, device=self.torch) + 1) != 2.0:
                return "the device computes 1 + 1 wrong"
        except Exception as error:
            return error_text(error)
        return None

    def timed(self, call: Callable[[], Any], prepare: Callable[[], None], count: int, warmup: int = 0) -> list[float]:
        """Milliseconds of ``count`` calls of ``call``, each after ``prepare()`` (outside the timed region).

        ``warmup`` untimed calls (each after ``prepare()``) and a synchronize come first; the timed
        calls run with the garbage collector off (:func:`crossentropy._tools.timing.time_calls`).
        CUDA: one pair of events around each call, read after one synchronize at the end; a call
        that reads a value on the host inside is timed with its wait. CPU: the host clock.
        """
        seconds = time_calls(call, repeat=count, warmup=warmup, prepare=prepare, clock=self.clock)
        return [1e3 * s for s in seconds]

    def peak(self, call: Callable[[], Any], prepare: Callable[[], None]) -> int | None:
        """Bytes allocated at the peak of one call above those allocated before it (CUDA only)."""
        if not self.cuda:
            return None
        prepare()
        self.sync()
        torch.cuda.reset_peak_memory_stats(self.torch)
        base = torch.cuda.memory_allocated(self.torch)
        out = call()
        self.sync()
        peak = torch.cuda.max_memory_allocated(self.torch) - base
        del out
        return peak


def _recorded_event() -> torch.cuda.Event:
    """A CUDA event recorded now on the current stream: a mark of the device's clock."""
    event = torch.cuda.Event(enable_timing=True)
    event.record()
    return event


def _event_seconds(start: torch.cuda.Event, end: torch.cuda.Event) -> float:
    return start.elapsed_time(end) / 1e3  # elapsed_time is in milliseconds


def out_of_memory_errors() -> tuple[type[BaseException], ...]:
    return (getattr(torch.cuda, "OutOfMemoryError", MemoryError), MemoryError)


def copy_bandwidth(device: Device, nbytes: int, repeat: int) -> dict[str, Any]:
    """Device-to-device copy bandwidth: bytes read + written by ``dst.copy_(src)`` over its median time."""
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device.torch).normal_()
    dst = torch.empty_like(src)
    times = device.timed(lambda: dst.copy_(src), lambda: None, repeat, warmup=3)
    median_ms = median(times)
    return {
        "bytes_per_buffer": nbytes,
        "times_ms": times,
        "median_ms": median_ms,
        "bytes_per_s": 2 * nbytes / (median_ms / 1e3),
    }


# --------------------------------------------------------------------------------------------
# methods


def _import_ours() -> Any:
    crossentropy = importlib.import_module("crossentropy")
    importlib.import_module("crossentropy.torch")
    return crossentropy


def _plain_cross_entropy(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(x, y)


class Methods:
    """Makes each method's callable ``(logits, targets) -> loss`` and its context, or says why it cannot."""

    def __init__(self, compile_backend: str) -> None:
        self.ours: Any = None
        self._ours_error: str | None = None
        try:
            self.ours = _import_ours()
        except Exception as error:  # a broken checkout: the other methods are still measured
            self._ours_error = "import failed: " + error_text(error)
            print(f"gpu.py: crossentropy could not be imported: {error_text(error)}", file=sys.stderr, flush=True)
        self.compiled = torch.compile(_plain_cross_entropy, dynamic=True, backend=compile_backend)
        self.checks_disabled = getattr(self.ours, "checks_disabled", None)
        self.broken: dict[tuple[str, str, str], str] = {}  # (method, dtype, pass) not to be tried again: why
        self._liger: Any = None
        self._liger_error: str | None = None
        if importlib.util.find_spec("liger_kernel") is None:
            self._liger_error = "not installed"
        else:
            try:
                from liger_kernel.transformers import LigerCrossEntropyLoss

                self._liger = LigerCrossEntropyLoss()
            except Exception as error:
                self._liger_error = f"import failed: {type(error).__name__}: {error}"[:200]

    def backend_of(self, logits: torch.Tensor) -> str:
        """The kernel backend that computes these logits for ours (``crossentropy.kernels.for_torch``)."""
        if self.ours is None:
            return "n/a"
        try:
            chosen = importlib.import_module("crossentropy.kernels").for_torch(logits)
        except Exception as error:
            return f"unknown ({error_text(error)})"
        return "reference (the generic code)" if chosen is None else str(getattr(chosen, "name", chosen))

    def get(self, method: Method) -> tuple[Callable[[torch.Tensor, torch.Tensor], torch.Tensor], Callable[[], Any]]:
        context: Callable[[], Any] = contextlib.nullcontext
        if method.key == "eager":
            return F.cross_entropy, context
        if method.key == "compiled":
            return self.compiled, context
        if method.key == "liger":
            if self._liger is None:
                raise Unavailable(self._liger_error)
            return self._liger, context
        if self.ours is None:
            raise Unavailable(self._ours_error)
        if method.key.endswith("_nochecks"):
            if self.checks_disabled is None:
                raise Unavailable("missing: crossentropy.checks_disabled")
            context = self.checks_disabled
        inplace = "inplace" in method.key
        functional = self.ours.torch.cross_entropy

        def ours(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return functional(x, y, inplace=inplace)

        return ours, context


# --------------------------------------------------------------------------------------------
# one shape: inputs, reference, cells


@dataclass
class Inputs:
    n: int
    v: int
    dtype: torch.dtype
    logits: torch.Tensor  # a leaf that requires grad
    targets: torch.Tensor
    generator: torch.Generator

    def refill(self) -> None:
        """The same standard-normal logits again (a re-seeded generator), for methods that overwrote them."""
        self.generator.manual_seed(SEED)
        with torch.no_grad():
            self.logits.normal_(generator=self.generator)

    @property
    def bytes(self) -> int:
        return self.logits.numel() * self.logits.element_size()


def make_inputs(device: Device, n: int, v: int, dtype: torch.dtype) -> Inputs:
    generator = torch.Generator(device=device.torch)
    generator.manual_seed(SEED + 1)
    targets = torch.randint(0, v, (n,), device=device.torch, generator=generator)
    logits = torch.empty(n, v, dtype=dtype, device=device.torch).requires_grad_()
    inputs = Inputs(n, v, dtype, logits, targets, generator)
    inputs.refill()
    return inputs


@dataclass
class Reference:
    loss: float
    row_losses: torch.Tensor  # float32, one per row
    rows: torch.Tensor
    grad_rows: torch.Tensor  # N * gradient of the mean loss on ``rows``: softmax - one-hot, float64


def make_reference(inputs: Inputs) -> Reference:
    """F.cross_entropy of the float32 logits (summed in row chunks), and softmax - one-hot on sampled rows."""
    x, y, n, v = inputs.logits.detach(), inputs.targets, inputs.n, inputs.v
    chunk = max(1, 2**27 // v)
    row_losses = torch.empty(n, dtype=torch.float32, device=x.device)
    with torch.no_grad():
        for start in range(0, n, chunk):
            part = x[start : start + chunk].float()
            row_losses[start : start + chunk] = F.cross_entropy(part, y[start : start + chunk], reduction="none")
            del part
        total = float(row_losses.double().sum())
        generator = torch.Generator().manual_seed(SEED + 2)
        picked = torch.randperm(n, generator=generator)[: CHECK_ROWS - 8].tolist()
        rows = sorted({*range(min(4, n)), *range(max(0, n - 4), n), *picked})
        rows_t = torch.tensor(rows, device=x.device)
        grad = torch.softmax(x[rows_t].double(), dim=1)
        grad[torch.arange(len(rows), device=x.device), y[rows_t]] -= 1.0
    return Reference(total / n, row_losses, rows_t, grad)


def check_result(inputs: Inputs, reference: Reference, loss: torch.Tensor, grad: torch.Tensor | None) -> dict:
    """Errors of one call's loss (and gradient) against the reference.

    On the sampled rows: the relative L2 error of the non-target entries (the softmax) and the
    error of the target entries (p_y - 1). On every row, so that no row escapes: N times the row
    sum (0 in exact arithmetic) and N times the row's L1 norm against its exact value
    2 (1 - p_y), p_y = exp(-loss_n); a row left unwritten, zeroed, scaled or holding the logits fails.
    """
    out: dict[str, Any] = {}
    value = float(loss.detach().float())
    out["loss"] = value
    out["loss_rel_err"] = abs(value - reference.loss) / abs(reference.loss) if math.isfinite(value) else math.inf
    if grad is None:
        return out
    with torch.no_grad():
        rows = reference.rows
        got = grad[rows].double() * inputs.n
        ref = reference.grad_rows
        cols = inputs.targets[rows]
        index = torch.arange(len(rows), device=got.device)
        target_err = (got[index, cols] - ref[index, cols]).abs().max()
        got[index, cols] = 0.0
        ref = ref.clone()
        ref[index, cols] = 0.0
        grad_err = torch.linalg.vector_norm(got - ref) / torch.linalg.vector_norm(ref)
        # Every row, in chunks of rows (a float32 copy of the whole gradient may not fit).
        row_sums = torch.empty(inputs.n, dtype=torch.float32, device=grad.device)
        row_l1 = torch.empty_like(row_sums)
        chunk = max(1, 2**26 // inputs.v)
        for start in range(0, inputs.n, chunk):
            part = grad[start : start + chunk].float()  # the gradient itself when float32: not modified below
            row_sums[start : start + chunk] = part.sum(dim=1)
            row_l1[start : start + chunk] = part.abs().sum(dim=1)
            del part
        row_sums *= inputs.n
        row_l1_err = (row_l1 * inputs.n - 2 * (1 - torch.exp(-reference.row_losses))).abs()
    out["grad_rel_err"] = _finite_or_inf(grad_err.max())
    out["target_err"] = _finite_or_inf(target_err)
    out["row_sum_err"] = _finite_or_inf(row_sums.abs().max())
    out["row_l1_err"] = _finite_or_inf(row_l1_err.max())
    return out


def _finite_or_inf(value: torch.Tensor) -> float:
    """A 0-d tensor as a float; NaN (which ``max`` propagates) becomes inf, so that it fails."""
    number = float(value)
    return number if math.isfinite(number) else math.inf


def verdict(dtype: str, check: dict) -> str:
    tol = TOLERANCES[dtype]
    keys = [
        ("loss_rel_err_fwd", "loss"),
        ("loss_rel_err", "loss"),
        ("grad_rel_err", "grad"),
        ("target_err", "target"),
        ("row_sum_err", "rows"),
        ("row_l1_err", "rows"),
    ]
    present = [(k, t) for k, t in keys if k in check]
    if not present:
        return "not run"
    bad = [k for k, t in present if not check[k] <= tol[t]]  # NaN fails too
    if bad:
        return "FAIL (" + ", ".join(bad) + ")"
    return "pass" if "grad_rel_err" in check else "pass (forward only)"


# --------------------------------------------------------------------------------------------
# the run


@dataclass
class Budget:
    seconds: float
    start: float = field(default_factory=time.perf_counter)
    rate: dict[str, float] = field(default_factory=dict)  # seconds per logits byte, per method and pass

    def left(self) -> float:
        return self.seconds - (time.perf_counter() - self.start)

    def allows(self, key: str, nbytes: int) -> bool:
        estimate = self.rate.get(key, max(self.rate.values(), default=0.0)) * nbytes
        return self.left() > max(2.0, 1.2 * estimate)

    def record(self, key: str, nbytes: int, seconds: float) -> None:
        self.rate[key] = seconds / max(nbytes, 1)


def error_text(error: BaseException) -> str:
    return f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"[:300]


def run_pass(
    kind: str,
    method: Method,
    fn: Callable,
    context: Callable[[], Any],
    inputs: Inputs,
    reference: Reference,
    device: Device,
    warmup: int,
    repeat: int,
    result: dict,
) -> None:
    """Times one pass of one method into ``result[kind]``; spot-checks its first call into ``result['check']``."""
    x, y = inputs.logits, inputs.targets
    detached = x.detach()

    if kind == "fwd":

        def call() -> torch.Tensor:
            with torch.no_grad(), context():
                return fn(detached, y)

    else:

        def call() -> tuple[torch.Tensor, torch.Tensor]:
            with context():
                loss = fn(x, y)
                (grad,) = torch.autograd.grad(loss, x)
            return loss.detach(), grad

    def prepare() -> None:
        if method.writes_input:
            inputs.refill()
        device.flush()

    entry: dict[str, Any] = {"min_bytes": inputs.bytes * (1 if kind == "fwd" else 2)}
    result[kind] = entry
    failure: str | None = None
    out = loss = grad = None
    try:
        if kind == "fwdbwd":
            entry["poisoned"] = device.poison(detached)
        prepare()
        device.sync()
        start = time.perf_counter()
        out = call()
        device.sync()
        entry["first_call_s"] = time.perf_counter() - start
        loss, grad = (out, None) if kind == "fwd" else out
        check = check_result(inputs, reference, loss, grad)
        suffix = "_fwd" if kind == "fwd" else ""
        result.setdefault("check", {}).update({key + suffix: value for key, value in check.items()})
        out = loss = grad = None
        times = device.timed(call, prepare, repeat, warmup=warmup - 1)
        entry["times_ms"] = times
        entry["median_ms"] = median(times)
        entry["peak_bytes"] = device.peak(call, prepare)
        entry["status"] = "ok"
    except out_of_memory_errors():
        failure = "OOM"
    except Exception as error:
        failure = "error: " + error_text(error)
        entry["traceback"] = traceback.format_exc()
        print(f"  {method.key} {kind}: {failure}", file=sys.stderr, flush=True)
    if failure is not None:  # outside the except clause, so the traceback's frames (and tensors) are gone
        entry["status"] = failure
        out = loss = grad = None  # the call's outputs, if any, back to the allocator before it is emptied
        with contextlib.suppress(Exception):  # raises again on a broken device: measure_shape finds out
            device.cleanup()
    if method.writes_input:
        with contextlib.suppress(Exception):
            inputs.refill()


def measure_shape(
    n: int,
    v: int,
    dtype_name: str,
    device: Device,
    methods: Methods,
    selected: tuple[Method, ...],
    warmup: int,
    repeat: int,
    budget: Budget,
) -> dict:
    """All methods on one shape and dtype; a dict of cells keyed by method."""
    dtype = getattr(torch, dtype_name)
    cells: dict[str, Any] = {m.key: {} for m in selected}
    shape = {"n": n, "v": v, "dtype": dtype_name, "cells": cells}
    input_bytes = n * v * dtype.itemsize + n * 8
    free = device.free_bytes()
    if input_bytes > 0.95 * free:
        shape["skipped"] = f"inputs ({input_bytes / 1e9:.1f} GB) do not fit in the {free / 1e9:.1f} GB free"
        for cell in cells.values():
            cell["status"] = "skipped: inputs do not fit"
        return shape
    if not budget.allows("reference", n * v):
        for cell in cells.values():
            cell["status"] = NOT_MEASURED
        return shape
    start = time.perf_counter()
    inputs = make_inputs(device, n, v, dtype)
    reference = make_reference(inputs)
    device.sync()
    budget.record("reference", n * v, time.perf_counter() - start)
    shape["reference_loss"] = reference.loss
    shape["ours_backend"] = methods.backend_of(inputs.logits)
    shape["check_rows"] = reference.rows.tolist()
    for method in selected:
        cell = cells[method.key]
        try:
            fn, context = methods.get(method)
        except Unavailable as why:
            cell["status"] = str(why)
            continue
        inputs.refill()  # fresh logits whatever the method before did
        for kind in PASSES:
            key = f"{method.key}/{kind}"
            if (method.key, dtype_name, kind) in methods.broken:
                cell[kind] = {"status": methods.broken[(method.key, dtype_name, kind)]}
                continue
            if not budget.allows(key, n * v):
                cell[kind] = {"status": NOT_MEASURED}
                continue
            start = time.perf_counter()
            run_pass(kind, method, fn, context, inputs, reference, device, warmup, repeat, cell)
            elapsed = time.perf_counter() - start
            entry = cell[kind]
            if entry["status"] == "ok":  # the rate of a warm method: without the first call's compilation
                budget.record(key, n * v, elapsed - entry["first_call_s"] + entry["median_ms"] / 1e3)
            elif method.key == "compiled" and entry["status"].startswith("error"):  # each retry would compile again
                methods.broken[(method.key, dtype_name, kind)] = f"not run: the compilation failed at {n}×{v}"
            print(f"  {dtype_name} {n}x{v} {method.key:<22} {kind:<6} {describe(cell[kind])}", flush=True)
            if entry["status"].startswith("error") and (problem := device.failure()):
                shape["device_failure"] = f"{method.label}, {PASS_NAMES[kind]}: {problem}"
                print(f"gpu.py: the device failed ({shape['device_failure']}); measuring stops", file=sys.stderr)
                for other in selected:
                    for other_kind in PASSES:
                        if "status" not in cells[other.key] and other_kind not in cells[other.key]:
                            cells[other.key][other_kind] = {"status": DEVICE_FAILED}
                break
        if "check" in cell:
            cell["check"]["verdict"] = verdict(dtype_name, cell["check"])
        if "device_failure" in shape:
            return shape
        device.cleanup()
    del inputs, reference
    device.cleanup()
    return shape


def unmeasured(n: int, v: int, dtype_name: str, selected: tuple[Method, ...], status: str) -> dict:
    return {"n": n, "v": v, "dtype": dtype_name, "cells": {m.key: {"status": status} for m in selected}}


def describe(entry: dict) -> str:
    if entry.get("status") != "ok":
        return entry.get("status", "?")
    peak = entry.get("peak_bytes")
    return f"{entry['median_ms']:.3f} ms" + (f", peak {peak / 1e9:.2f} GB" if peak is not None else "")


# --------------------------------------------------------------------------------------------
# linear cross-entropy: the loss of x @ W.T without (or with) the N×V logits

LINEAR_FULL = ((8192, 4096, 32768), (8192, 4096, 131072), (8192, 4096, 262144))
LINEAR_QUICK = {"cuda": ((8192, 4096, 32768),), "cpu": ((64, 32, 512),)}
LINEAR_DTYPE = {"cuda": "bfloat16", "cpu": "float32"}
IGNORE_INDEX = -100
IGNORE_EVERY = 61  # every 61st target is ignore_index: 135 rows of 8192 (2 of 64 in the smoke mode)
LINEAR_BUDGET_S = 130.0  # the linear section's share of --budget-s (it runs first)
# What ours is held to, against Cut Cross-Entropy on the same inputs, and every method against the
# float64 reference (the accuracy targets).
LINEAR_TARGETS = {"memory_vs_cce": 1.1, "time_vs_cce": 1.0, "loss_rel_err": 1e-3, "grad_cosine": 0.9999}


@dataclass(frozen=True)
class LinearMethod:
    key: str
    label: str
    ours: bool = False


LINEAR_METHODS = (
    LinearMethod("eager", "eager `F.cross_entropy((x @ W.T).float(), y)`"),
    LinearMethod("torch_chunked", "PyTorch `F.linear_cross_entropy(options=LinearCrossEntropyOptions())`"),
    LinearMethod("liger", "Liger `liger_fused_linear_cross_entropy`"),
    LinearMethod("cce", "CCE `cut_cross_entropy.linear_cross_entropy`"),
    LinearMethod("ours", "ours `crossentropy.torch.linear_cross_entropy`", ours=True),
)


def _eager_linear(x: torch.Tensor, w: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy((x @ w.T).float(), y, ignore_index=IGNORE_INDEX)


class LinearMethods:
    """Each linear method's callable ``(x, W, y) -> loss``, or why it cannot run here (``Unavailable``)."""

    def __init__(self, device: Device, ours: Any, ours_error: str | None) -> None:
        self.device = device
        self.ours = ours
        self.ours_error = ours_error
        self._cache: dict[str, Callable | str] = {}

    def get(self, key: str) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
        if key not in self._cache:
            try:
                self._cache[key] = self._make(key)
            except Unavailable as why:
                self._cache[key] = str(why)
        made = self._cache[key]
        if isinstance(made, str):
            raise Unavailable(made)
        return made

    def _import(self, module: str, distribution: str) -> Any:
        """The module of a peer whose kernels are Triton's: CUDA only."""
        if not self.device.cuda:
            raise Unavailable("skipped: needs a CUDA device (Triton kernels)")
        if importlib.util.find_spec(module) is None:
            raise Unavailable(f"not installed ({distribution})")
        try:
            return importlib.import_module(module)
        except Exception as error:
            raise Unavailable("import failed: " + error_text(error)) from None

    def _make(self, key: str) -> Callable:
        if key == "eager":
            return _eager_linear
        if key == "torch_chunked":
            functional = getattr(F, "linear_cross_entropy", None)
            options_type = getattr(torch.nn, "LinearCrossEntropyOptions", None)
            if functional is None or options_type is None:
                raise Unavailable(f"not in torch {torch.__version__}")
            options = options_type()
            return lambda x, w, y: functional(x, w, y, ignore_index=IGNORE_INDEX, options=options)
        if key == "liger":
            liger = self._import(
                "liger_kernel.transformers.functional", "liger-kernel"
            ).liger_fused_linear_cross_entropy
            return lambda x, w, y: liger(x, w, y, ignore_index=IGNORE_INDEX)
        if key == "cce":
            cce = self._import("cut_cross_entropy", "cut-cross-entropy").linear_cross_entropy
            return lambda x, w, y: cce(x, w, y, ignore_index=IGNORE_INDEX)
        if key == "ours":
            if self.ours is None:
                raise Unavailable(self.ours_error)
            # Positional: input, linear_weight, target; ignore_index is -100 by default, as everywhere here.
            return self.ours.torch.linear_cross_entropy
        raise KeyError(key)


@dataclass
class LinearInputs:
    n: int
    h: int
    v: int
    dtype: torch.dtype
    x: torch.Tensor  # (N, H), a leaf that requires grad
    w: torch.Tensor  # (V, H), a leaf that requires grad
    y: torch.Tensor  # (N,) int64, every IGNORE_EVERY-th row ignore_index


def make_linear_inputs(device: Device, n: int, h: int, v: int, dtype: torch.dtype) -> LinearInputs:
    """Standard-normal hidden states, weights of standard deviation 1/√H (standard-normal logits)."""
    generator = torch.Generator(device=device.torch)
    generator.manual_seed(SEED + 3)
    x = torch.randn(n, h, device=device.torch, generator=generator).to(dtype).requires_grad_()
    w = torch.randn(v, h, device=device.torch, generator=generator).mul_(h**-0.5).to(dtype).requires_grad_()
    y = torch.randint(0, v, (n,), device=device.torch, generator=generator)
    y[::IGNORE_EVERY] = IGNORE_INDEX
    return LinearInputs(n, h, v, dtype, x, w, y)


@dataclass
class LinearReference:
    loss: float
    grad_x: torch.Tensor  # float32, rounded from float64
    grad_w: torch.Tensor


def make_linear_reference(inputs: LinearInputs) -> LinearReference:
    """Loss and gradients in float64 of the very (rounded) inputs, in chunks of rows: the float64 logits of
    one chunk at a time (about 512 MB), never the N×V of them."""
    x64, w64, y = inputs.x.detach().double(), inputs.w.detach().double(), inputs.y
    valid = y != IGNORE_INDEX
    count = int(valid.sum())
    grad_x = torch.empty(inputs.n, inputs.h, dtype=torch.float32, device=x64.device)
    grad_w = torch.zeros(inputs.v, inputs.h, dtype=torch.float64, device=x64.device)
    total = torch.zeros((), dtype=torch.float64, device=x64.device)
    chunk = max(1, 2**26 // inputs.v)
    with torch.no_grad():
        for start in range(0, inputs.n, chunk):
            xs, ys, keep = x64[start : start + chunk], y[start : start + chunk], valid[start : start + chunk]
            logits = xs @ w64.T
            lse = torch.logsumexp(logits, dim=1)
            safe = torch.where(keep, ys, 0)
            picked = logits.gather(1, safe[:, None])[:, 0]
            total += torch.where(keep, lse - picked, 0.0).sum()
            grad = logits.sub_(lse[:, None]).exp_()  # softmax, in place of the logits
            grad[torch.arange(len(ys), device=grad.device), safe] -= 1.0
            grad.mul_((keep.double() / max(count, 1))[:, None])
            grad_x[start : start + chunk] = grad @ w64
            grad_w.addmm_(grad.T, xs)
            del logits, grad
        del w64
        grad_w32 = grad_w.float()
    del grad_w
    return LinearReference(float(total) / max(count, 1), grad_x, grad_w32)


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Cosine similarity of two same-shaped tensors, accumulated in float64 over chunks of rows; NaN stays NaN."""
    dot = torch.zeros((), dtype=torch.float64, device=a.device)
    norm_a, norm_b = torch.zeros_like(dot), torch.zeros_like(dot)
    rows = max(1, 2**24 // a.shape[-1])
    with torch.no_grad():
        for start in range(0, a.shape[0], rows):
            pa, pb = a[start : start + rows].double(), b[start : start + rows].double()
            dot += (pa * pb).sum()
            norm_a += (pa * pa).sum()
            norm_b += (pb * pb).sum()
    return float(dot / (norm_a.sqrt() * norm_b.sqrt()))


def linear_check(reference: LinearReference, loss: torch.Tensor, grad_x: torch.Tensor, grad_w: torch.Tensor) -> dict:
    value = float(loss.detach().double())
    check: dict[str, Any] = {
        "loss": value,
        "loss_rel_err": abs(value - reference.loss) / abs(reference.loss) if math.isfinite(value) else math.inf,
        "cos_grad_x": cosine(grad_x, reference.grad_x),
        "cos_grad_w": cosine(grad_w, reference.grad_w),
    }
    bad = [k for k in ("loss_rel_err",) if not check[k] <= LINEAR_TARGETS["loss_rel_err"]]
    bad += [k for k in ("cos_grad_x", "cos_grad_w") if not check[k] >= LINEAR_TARGETS["grad_cosine"]]  # NaN fails
    check["verdict"] = "FAIL (" + ", ".join(bad) + ")" if bad else "pass"
    return check


def linear_repeat(v: int, override: int | None, quick: bool) -> int:
    if override:
        return override
    return 3 if quick or v >= 262144 else 5


def run_linear_method(
    fn: Callable, inputs: LinearInputs, reference: LinearReference, device: Device, warmup: int, repeat: int
) -> dict:
    """Forward + backward of one method: the checked first call, warm-up, ``repeat`` timed calls, the peak."""
    x, w, y = inputs.x, inputs.w, inputs.y

    def call() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        loss = fn(x, w, y)
        grad_x, grad_w = torch.autograd.grad(loss, (x, w))
        return loss.detach(), grad_x, grad_w

    entry: dict[str, Any] = {}
    out = None
    try:
        device.flush()
        device.sync()
        start = time.perf_counter()
        out = call()
        device.sync()
        entry["first_call_s"] = time.perf_counter() - start
        entry["check"] = linear_check(reference, *out)
        out = None
        times = device.timed(call, device.flush, repeat, warmup=warmup - 1)
        entry.update(times_ms=times, median_ms=median(times))
        entry["peak_bytes"] = device.peak(call, device.flush)
        entry["status"] = "ok"
    except out_of_memory_errors():
        entry["status"] = "OOM"
    except Exception as error:
        entry["status"] = "error: " + error_text(error)
        entry["traceback"] = traceback.format_exc()
    if entry["status"] != "ok":
        out = None
        with contextlib.suppress(Exception):
            device.cleanup()
    return entry


def linear_targets(cells: dict) -> dict:
    """Ours against CCE and the accuracy targets, from the measured numbers: each {value, limit, met, why}."""
    ours, cce = cells.get("ours", {}), cells.get("cce", {})
    targets: dict[str, dict] = {}
    for name, field_, limit in (
        ("memory_vs_cce", "peak_bytes", LINEAR_TARGETS["memory_vs_cce"]),
        ("time_vs_cce", "median_ms", LINEAR_TARGETS["time_vs_cce"]),
    ):
        target: dict[str, Any] = {"limit": limit, "value": None, "met": None}
        mine, theirs = ours.get(field_), cce.get(field_)
        if ours.get("status") != "ok":
            target["why"] = f"ours: {ours.get('status', 'not run')}"
        elif cce.get("status") != "ok":
            target["why"] = f"CCE: {cce.get('status', 'not run')}"
        elif mine is None or not theirs:
            target["why"] = "not measured on this device"
        else:
            target["value"] = mine / theirs
            target["met"] = target["value"] <= limit
        targets[name] = target
    check = ours.get("check")
    for name, keys, limit in (
        ("loss_rel_err", ("loss_rel_err",), LINEAR_TARGETS["loss_rel_err"]),
        ("grad_cosine", ("cos_grad_x", "cos_grad_w"), LINEAR_TARGETS["grad_cosine"]),
    ):
        target = {"limit": limit, "value": None, "met": None}
        if check is None:
            target["why"] = f"ours: {ours.get('status', 'not run')}"
        elif name == "loss_rel_err":
            target["value"] = check["loss_rel_err"]
            target["met"] = check["loss_rel_err"] <= limit
        else:
            target["value"] = min(check[k] for k in keys) if all(check[k] == check[k] for k in keys) else math.nan
            target["met"] = target["value"] >= limit
        targets[name] = target
    return targets


def measure_linear(
    n: int,
    h: int,
    v: int,
    dtype_name: str,
    device: Device,
    methods: LinearMethods,
    selected: tuple[LinearMethod, ...],
    warmup: int,
    repeat: int,
    budget: Budget,
) -> dict:
    """Every linear method on one shape: a dict of cells keyed by method, and the targets."""
    dtype = getattr(torch, dtype_name)
    cells: dict[str, dict] = {m.key: {} for m in selected}
    shape: dict[str, Any] = {"n": n, "h": h, "v": v, "dtype": dtype_name, "repeat": repeat, "cells": cells}
    size = n * v * h
    if not budget.allows("linear/reference", size):
        for cell in cells.values():
            cell["status"] = NOT_MEASURED
        return shape
    start = time.perf_counter()
    inputs = make_linear_inputs(device, n, h, v, dtype)
    reference = make_linear_reference(inputs)
    device.sync()
    budget.record("linear/reference", size, time.perf_counter() - start)
    device.cleanup()
    shape.update(reference_loss=reference.loss, ignored_rows=int((inputs.y == IGNORE_INDEX).sum()))
    for method in selected:
        cell = cells[method.key]
        try:
            fn = methods.get(method.key)
        except Unavailable as why:
            cell["status"] = str(why)
            print(f"  linear {n}x{h}x{v} {method.key:<14} {why}", flush=True)
            continue
        key = f"linear/{method.key}"
        if not budget.allows(key, size):
            cell["status"] = NOT_MEASURED
            continue
        start = time.perf_counter()
        cell.update(run_linear_method(fn, inputs, reference, device, warmup, repeat))
        elapsed = time.perf_counter() - start
        if cell["status"] == "ok":  # the rate of a warm method, without its first call's compilation
            budget.record(key, size, elapsed - cell["first_call_s"] + cell["median_ms"] / 1e3)
        print(f"  linear {n}x{h}x{v} {method.key:<14} {describe_linear(cell)}", flush=True)
        if cell["status"].startswith("error"):
            print(f"  linear {method.key}: {cell['status']}", file=sys.stderr, flush=True)
            if problem := device.failure():
                shape["device_failure"] = f"linear {method.label}: {problem}"
                for other in selected:
                    if not cells[other.key]:
                        cells[other.key]["status"] = DEVICE_FAILED
                break
        device.cleanup()
    shape["targets"] = linear_targets(cells)
    del inputs, reference
    with contextlib.suppress(Exception):
        device.cleanup()
    return shape


def describe_linear(cell: dict) -> str:
    if cell.get("status") != "ok":
        return cell.get("status", "?")
    peak = cell.get("peak_bytes")
    check = cell["check"]
    return (
        f"{cell['median_ms']:.2f} ms"
        + (f", peak {peak / 2**20:.0f} MiB" if peak is not None else "")
        + f", loss err {check['loss_rel_err']:.1e}, cos {min(check['cos_grad_x'], check['cos_grad_w']):.6f}"
        + f" ({check['verdict']})"
    )


def run_linear_section(
    args: argparse.Namespace, device: Device, methods: LinearMethods, budget: Budget, report: dict
) -> str | None:
    """The linear section, shape by shape (smallest first), into ``report['linear']``; the device failure, if any."""
    kind = "cuda" if device.cuda else "cpu"
    shapes = args.linear_shapes or (LINEAR_QUICK[kind] if args.quick else LINEAR_FULL)
    dtype_name = args.linear_dtype or LINEAR_DTYPE[kind]
    warmup = args.warmup or 2
    linear: dict[str, Any] = {
        "settings": {
            "dtype": dtype_name,
            "warmup": warmup,
            "budget_s": budget.seconds,
            "ignore_index": IGNORE_INDEX,
            "ignore_every": IGNORE_EVERY,
            "timer": "CUDA events, a read of a buffer twice the L2's size before each call"
            if device.cuda
            else "host clock",
            "targets": LINEAR_TARGETS,
        },
        "shapes": [],
    }
    report["linear"] = linear
    for n, h, v in sorted(shapes, key=lambda s: s[0] * s[1] * s[2]):
        repeat = linear_repeat(v, args.linear_repeat, args.quick)
        with _section(f"linear cross-entropy {dtype_name} N={n} H={h} V={v}"):
            try:
                shape = measure_linear(n, h, v, dtype_name, device, methods, LINEAR_METHODS, warmup, repeat, budget)
            except Exception as error:  # the inputs or the reference: the shape is lost, not the run
                status = "OOM" if isinstance(error, out_of_memory_errors()) else "error: " + error_text(error)
                print(f"gpu.py: linear {n}x{h}x{v}: {status}", file=sys.stderr, flush=True)
                shape = {"n": n, "h": h, "v": v, "dtype": dtype_name, "repeat": repeat}
                shape["cells"] = {m.key: {"status": f"{status} (inputs or reference)"} for m in LINEAR_METHODS}
                shape["traceback"] = traceback.format_exc()
                with contextlib.suppress(Exception):
                    device.cleanup()
                if problem := device.failure():
                    shape["device_failure"] = problem
        linear["shapes"].append(shape)
        if "device_failure" in shape:
            return shape["device_failure"]
    return None


# --------------------------------------------------------------------------------------------
# environment


def version_of(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def environment(device: Device, methods: Methods, args: argparse.Namespace) -> dict[str, Any]:
    machine = machine_record(torch=True, numba=False)
    env: dict[str, Any] = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python3 benchmarks/gpu.py " + " ".join(sys.argv[1:]),
        "python": machine["python"],
        "platform": machine["platform"],
        "torch": machine["torch"],
        "torch_cuda": torch.version.cuda,
        "triton": version_of("triton"),
        "liger_kernel": version_of("liger-kernel"),
        "cut_cross_entropy": version_of("cut-cross-entropy"),
        "crossentropy": getattr(methods.ours, "__version__", methods._ours_error),
        "crossentropy_path": str(Path(methods.ours.__file__).parent) if methods.ours else "",
        "checks_disabled": methods.checks_disabled is not None,
        "compile": f"torch.compile(F.cross_entropy, dynamic=True, backend={args.compile_backend!r})",
        "device": str(device.torch),
        "triton_interpret": os.environ.get("TRITON_INTERPRET", ""),
    }
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        )
        if commit.returncode == 0:
            env["git_commit"] = commit.stdout.strip()
    if device.cuda:
        props = torch.cuda.get_device_properties(device.torch)
        env.update(
            gpu=torch.cuda.get_device_name(device.torch),
            gpu_memory_bytes=props.total_memory,
            multiprocessors=props.multi_processor_count,
            l2_bytes=device.l2_bytes,
            capability=".".join(map(str, torch.cuda.get_device_capability(device.torch))),
        )
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            smi = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version,clocks.sm,clocks.mem,power.limit", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=20,
            )
            if smi.returncode == 0:
                env["nvidia_smi"] = smi.stdout.strip()
    else:
        env["cpu"] = machine["processor"]
        env["threads"] = machine["torch_threads"]
    if methods._liger is not None:
        with contextlib.suppress(Exception):
            from liger_kernel.backends import resolve_impl

            env["liger_impl"] = resolve_impl("cross_entropy", device=device.torch).impl_name
    return env


# --------------------------------------------------------------------------------------------
# output


def _ms(entry: dict | None) -> float | None:
    if entry and entry.get("status") == "ok":
        return entry["median_ms"]
    return None


def _status(cell: dict, kind: str) -> str:
    """A cell's status for a table: errors by their type alone (the message is under "Errors")."""
    if "status" in cell:
        return cell["status"]
    entry = cell.get(kind)
    status = entry.get("status", "?") if entry else "?"
    return status.split(":")[0] + ": " + status.split(":")[1].strip() if status.startswith("error:") else status


def _gb(nbytes: float | None) -> str:
    return "n/a" if nbytes is None else f"{nbytes / 1e9:.3g}"


def _valid(cell: dict) -> bool:
    return not cell.get("check", {}).get("verdict", "").startswith("FAIL")


SHAPE_HEADERS = ["N×V", "method", "forward ms", "fwd+bwd ms", "peak GB fwd / fwd+bwd", "% copy BW fwd / fwd+bwd"]
SHAPE_HEADERS += ["speed-up vs eager fwd / fwd+bwd", "vs Liger fwd / fwd+bwd"]
CHECK_HEADERS = ["N×V", "method", "loss err fwd", "loss err fwd+bwd", "grad err", "target err", "row sum", "row L1"]
CHECK_HEADERS += ["result"]


def shape_rows(shape: dict, selected: tuple[Method, ...], copy_bps: float) -> list[list[str]]:
    """Table rows of one shape: times, peaks, fraction of the copy bandwidth, speed-ups."""
    cells = shape["cells"]
    label = f"{shape['n']}×{shape['v']}"
    rows = []
    for method in selected:
        cell = cells[method.key]
        if "status" in cell:
            rows.append([label, method.label, cell["status"], "", "", "", "", ""])
            continue
        mark = "" if _valid(cell) else " ✗"
        texts = {}
        for kind in PASSES:
            ms = _ms(cell.get(kind))
            texts[kind] = _status(cell, kind) if ms is None else f"{ms:.3f}{mark}"
        peak_text = " / ".join(_gb(cell[k].get("peak_bytes")) if _ms(cell.get(k)) is not None else "—" for k in PASSES)
        fractions = []
        for kind in PASSES:
            ms = _ms(cell.get(kind))
            if ms is None:
                fractions.append("—")
            else:
                fractions.append(f"{cell[kind]['min_bytes'] / (ms / 1e3) / copy_bps:.0%}")
        speedups = {}
        for ref in ("eager", "liger"):
            parts = []
            for kind in PASSES:
                ms, ref_cell = _ms(cell.get(kind)), cells.get(ref, {})
                ref_ms = _ms(ref_cell.get(kind)) if _valid(ref_cell) else None
                parts.append("—" if ms is None or ref_ms is None else f"{ref_ms / ms:.2f}×")
            speedups[ref] = " / ".join(parts)
        rows.append(
            [
                label,
                method.label,
                texts["fwd"],
                texts["fwdbwd"],
                peak_text,
                " / ".join(fractions),
                speedups["eager"],
                speedups["liger"],
            ]
        )
    return rows


def check_rows(shape: dict, selected: tuple[Method, ...]) -> list[list[str]]:
    rows = []
    label = f"{shape['n']}×{shape['v']}"

    def fmt(value: float | None) -> str:
        return "—" if value is None else f"{value:.1e}"

    for method in selected:
        cell = shape["cells"][method.key]
        check = cell.get("check")
        if check is None:
            rows.append([label, method.label, "", "", "", "", "", "", cell.get("status", "not run")])
            continue
        keys = ("loss_rel_err_fwd", "loss_rel_err", "grad_rel_err", "target_err", "row_sum_err", "row_l1_err")
        rows.append([label, method.label, *(fmt(check.get(key)) for key in keys), check.get("verdict", "not run")])
    return rows


def markdown(report: dict, selected: tuple[Method, ...]) -> str:
    env, copy = report["environment"], report["copy_bandwidth"]
    copy_bps = copy["bytes_per_s"]
    settings = report["settings"]
    lines = ["# Cross-entropy on the GPU: crossentropy against PyTorch, Liger-Kernel and Cut Cross-Entropy", ""]
    lines.append(
        f"`{env['command']}` on {env['date_utc']}; {report.get('elapsed_s', 0):.0f} s. Raw numbers: `gpu.json`."
    )
    if not env["checks_disabled"]:
        lines += ["", "**`crossentropy.checks_disabled` is missing from this checkout: its rows are not measured.**"]
    for shape in report["shapes"]:
        if "device_failure" in shape:
            lines += [
                "",
                f"**The device failed at {shape['dtype']} {shape['n']}×{shape['v']} ({shape['device_failure']}): "
                "nothing after it was measured. Rerun the rest with `--methods` or `--shapes`.**",
            ]
    lines += ["", "## Environment", ""]
    if env.get("gpu"):
        lines.append(
            f"- GPU: {env['gpu']} (compute capability {env['capability']}, {env['multiprocessors']} SMs, "
            f"{env['l2_bytes'] / 2**20:.0f} MiB L2, {env['gpu_memory_bytes'] / 2**30:.1f} GiB); "
            f"nvidia-smi (driver, SM and memory clocks, power limit): {env.get('nvidia_smi', 'n/a')}"
        )
    else:
        lines.append(f"- device: {env['device']} ({env.get('cpu', '')}, {env.get('threads', '?')} threads)")
    lines.append(
        f"- Python {env['python']}, torch {env['torch']} (CUDA {env['torch_cuda']}), triton {env['triton']}, "
        f"liger-kernel {env['liger_kernel']}"
        + (f" (implementation {env['liger_impl']})" if env.get("liger_impl") else "")
        + f", cut-cross-entropy {env.get('cut_cross_entropy', 'n/a')}"
        + f", crossentropy {env['crossentropy']}"
        + (f" (commit {env['git_commit']})" if env.get("git_commit") else "")
        + f" from `{env['crossentropy_path']}`"
        + (f"; TRITON_INTERPRET={env['triton_interpret']}" if env["triton_interpret"] else "")
    )
    lines.append(
        f"- copy bandwidth: **{copy_bps / 1e9:.0f} GB/s** (`dst.copy_(src)` of {copy['bytes_per_buffer'] / 2**30:.2f} "
        f"GiB, bytes read + written over the median of {len(copy['times_ms'])} copies)"
    )
    timer = "CUDA events" if env.get("gpu") else "the host clock (CPU)"
    lines.append(
        f"- timing: {timer}; {settings['warmup']} warm-up call(s), then the median of {settings['repeat']}; "
        + ("before each call a read of a buffer twice the L2's size evicts the inputs; " if env.get("gpu") else "")
        + "methods that may write over the logits (ours inplace=True, Liger) get them re-filled from the same seed "
        "before each call, outside the timed region"
    )
    lines.append(
        "- minimum traffic of a pass, counted against the copy bandwidth: forward = the logits read once "
        "(N·V·bytes per element); forward + backward = the logits read once and the gradient written once "
        "(2·N·V·bytes per element); the targets and the loss are not counted. *% copy BW* = (minimum bytes / "
        "median time) / copy bandwidth"
    )
    lines.append(
        "- forward: under `torch.no_grad()`; forward + backward: `torch.autograd.grad(loss, logits)` on a leaf "
        "(the gradient returned, not accumulated into `.grad`); `reduction='mean'`, standard-normal logits, "
        "uniform class-index targets"
    )
    lines.append(
        "- peak: `torch.cuda.max_memory_allocated()` during one call, above the memory allocated just before it "
        "(the inputs), after `reset_peak_memory_stats()`; forward + backward includes the gradient it returns. "
        "GB = 10⁹ bytes"
    )
    lines.append(
        "- speed-up: the reference's median time over the method's (> 1: faster than eager PyTorch, or than Liger); "
        "✗ marks times of a method that failed its spot check (not a valid result)"
    )
    lines.append(f"- {env['compile']}: compile time (first call minus the median) in its own table, not in the timings")
    lines.append(f"- time budget: {settings['budget_s']:.0f} s")

    if report["shapes"]:
        lines += ["", "# Softmax cross-entropy (logits given)"]
    for dtype in settings["dtypes"]:
        shapes = [s for s in report["shapes"] if s["dtype"] == dtype]
        if not shapes:
            continue
        lines += ["", f"## {dtype}", ""]
        table = Table("", SHAPE_HEADERS, [], numeric=[False, False] + [True] * 6)
        for shape in shapes:
            table.rows += shape_rows(shape, selected, copy_bps)
        lines.append(render_markdown(table))
        backends = sorted({s["ours_backend"] for s in shapes if "ours_backend" in s})
        if backends:
            lines += [
                "",
                "Ours computed on the kernel backend (`crossentropy.kernels.for_torch`): " + ", ".join(backends),
            ]
        lines += ["", "Minimum traffic per shape (GB, forward / forward + backward): "]
        lines.append(
            ", ".join(
                f"{s['n']}×{s['v']}: {_gb(s['n'] * s['v'] * getattr(torch, dtype).itemsize)} / "
                f"{_gb(2 * s['n'] * s['v'] * getattr(torch, dtype).itemsize)}"
                for s in shapes
            )
        )
        skipped = [s for s in shapes if "skipped" in s]
        for s in skipped:
            lines.append(f"\n{s['n']}×{s['v']} skipped: {s['skipped']}.")
        lines += ["", f"### Spot check, {dtype}", ""]
        tol = TOLERANCES[dtype]
        lines.append(
            f"Loss: relative error against F.cross_entropy of the float32 logits (tolerance {tol['loss']:.0e}). "
            f"Gradient g (times N) on {CHECK_ROWS} sampled rows (the first four, the last four, random ones) against "
            f"softmax - one-hot in float64: *grad err*, the relative L2 error of the non-target entries "
            f"({tol['grad']:.0e}), and *target err*, the largest error of the target entries ({tol['target']:.0e}). "
            f"On every row: *row sum*, max |N·Σ_c g_nc| (0 in exact arithmetic), and *row L1*, "
            f"max |N·Σ_c |g_nc| - 2(1 - p_y)| ({tol['rows']:.0e} each): a row unwritten, zeroed or scaled fails. "
            "The checked call is each method's first; on CUDA a block of the gradient's size filled with NaN is "
            "left in PyTorch's caching allocator just before it, so that an element left unwritten in a new "
            "gradient shows as NaN rather than as the correct value of the method before."
        )
        table = Table("", CHECK_HEADERS, [], numeric=[False, False] + [True] * 6 + [False])
        for shape in shapes:
            table.rows += check_rows(shape, selected)
        lines += ["", render_markdown(table)]

    headers = ["dtype", "N×V", "method", "pass", "first call s", "minus median s"]
    compile_table = Table("", headers, [], numeric=[False] * 4 + [True] * 2)
    labels = {m.key: m.label for m in selected}
    for shape in report["shapes"]:
        for key, cell in shape["cells"].items():
            for kind in PASSES:
                entry = cell.get(kind, {})
                if entry.get("status") != "ok":
                    continue
                excess = entry["first_call_s"] - entry["median_ms"] / 1e3
                if key == "compiled" or excess >= FIRST_CALL_NOTE_S:
                    first = f"{entry['first_call_s']:.2f}"
                    row = [shape["dtype"], f"{shape['n']}×{shape['v']}", labels[key], PASS_NAMES[kind], first]
                    compile_table.rows.append([*row, f"{excess:.2f}"])
    if compile_table.rows:
        lines += ["", "## First calls (compilation)", ""]
        lines.append(
            "Not in the timings above. torch.compile: one compiled function for the whole run (`dynamic=True`), so a "
            "dtype or pass seen for the first time compiles and a later shape should not (a first call much longer "
            f"than the median means it recompiled); the other methods where their first call (Triton's JIT) took "
            f"{FIRST_CALL_NOTE_S} s or more over the median."
        )
        lines += ["", render_markdown(compile_table)]

    errors = []
    for shape in report["shapes"]:
        for key, cell in shape["cells"].items():
            for kind in PASSES:
                status = cell.get(kind, {}).get("status", "")
                if status.startswith("error"):
                    errors.append(f"- {shape['dtype']} {shape['n']}×{shape['v']} {key} {PASS_NAMES[kind]}: {status}")
    if errors:
        lines += ["", "## Errors", "", "Full tracebacks in `gpu.json`.", "", *errors]
    if report.get("linear"):
        lines += linear_markdown(report["linear"])
    return "\n".join(lines) + "\n"


def _target_text(target: dict, kind: str) -> str:
    if target["met"] is None:
        return f"not evaluated ({target.get('why', 'not measured')})"
    value = target["value"]
    shown = f"{value:.2f}×" if kind == "ratio" else (f"{value:.1e}" if kind == "err" else f"{value:.6f}")
    return f"**{'met' if target['met'] else 'not met'}** ({shown})"


def linear_markdown(linear: dict) -> list[str]:
    settings = linear["settings"]
    limits = settings["targets"]
    lines = ["", "## Linear cross-entropy: loss of x @ Wᵀ, forward + backward", ""]
    lines.append(
        f"x (N×H) and W (V×H) in {settings['dtype']}, both requiring grad (x standard normal, W of standard "
        f"deviation 1/√H: standard-normal logits); int64 targets, uniform, one in every {settings['ignore_every']} "
        f"(rows 0, {settings['ignore_every']}, …) `ignore_index` ({settings['ignore_index']}); `reduction='mean'`. "
        "One call = the loss and `torch.autograd.grad(loss, (x, W))`; each method's first call is the checked one, "
        f"then {settings['warmup'] - 1} more warm-up call(s), then the median of the timed calls "
        f"({settings['timer']}); peak = `torch.cuda.max_memory_allocated()` during one "
        "call above the memory allocated just before it (the inputs x, W, y), so it includes the two gradients "
        "returned. MiB = 2²⁰ bytes. Ratios to CCE: the method's value over Cut Cross-Entropy's (below 1: faster or "
        "smaller). Accuracy against a float64 reference of the same rounded inputs (computed in chunks of rows): "
        f"relative error of the loss (target ≤ {limits['loss_rel_err']:.0e}) and the cosine similarity of the "
        f"gradients of x and W (target ≥ {limits['grad_cosine']}). Every method with its default options "
        "(Liger: `accum_dtype=None`; CCE: `filter_eps='high'`, its gradient filtering, on)."
    )
    lines.append("")
    lines.append(
        f"Targets for ours: peak memory ≤ {limits['memory_vs_cce']}× CCE's, time ≤ CCE's, "
        f"loss relative error ≤ {limits['loss_rel_err']:.0e}, gradient cosine ≥ {limits['grad_cosine']}; met or not "
        "is computed from the numbers measured in this run."
    )
    for shape in linear["shapes"]:
        cells = shape["cells"]
        lines += ["", f"### N={shape['n']}, H={shape['h']}, V={shape['v']}", ""]
        notes = [shape["dtype"], f"median of {shape['repeat']}"]
        if "reference_loss" in shape:
            notes.append(f"{shape['ignored_rows']} rows ignored, reference loss {shape['reference_loss']:.6f}")
        lines.append("(" + "; ".join(notes) + ")")
        if "device_failure" in shape:
            lines += ["", f"**The device failed: {shape['device_failure']}; nothing after it was measured.**"]
        headers = ["method", "ms", "peak MiB", "time / CCE", "memory / CCE", "loss rel. err", "cos ∇x", "cos ∇W"]
        table = Table("", [*headers, "accuracy"], [], numeric=[False] + [True] * 7 + [False])
        cce = cells.get("cce", {})
        for method in LINEAR_METHODS:
            cell = cells.get(method.key, {})
            if cell.get("status") != "ok":
                status = cell.get("status", "not run")
                if status.startswith("error:"):  # the type alone; the message is under "Errors"
                    status = "error: " + status.split(":")[1].strip()
                table.rows.append([method.label, status, "", "", "", "", "", "", ""])
                continue
            peak = cell.get("peak_bytes")
            ratios = []
            for field_ in ("median_ms", "peak_bytes"):
                mine, theirs = cell.get(field_), cce.get(field_) if cce.get("status") == "ok" else None
                ratios.append("—" if mine is None or not theirs else f"{mine / theirs:.2f}×")
            check = cell["check"]
            table.rows.append(
                [
                    method.label,
                    f"{cell['median_ms']:.2f}",
                    "n/a" if peak is None else f"{peak / 2**20:.0f}",
                    *ratios,
                    f"{check['loss_rel_err']:.1e}",
                    f"{check['cos_grad_x']:.6f}",
                    f"{check['cos_grad_w']:.6f}",
                    check["verdict"],
                ]
            )
        lines += ["", render_markdown(table)]
        targets = shape.get("targets")
        if targets:
            lines += [
                "",
                "Ours: peak memory ≤ "
                f"{limits['memory_vs_cce']}× CCE's: {_target_text(targets['memory_vs_cce'], 'ratio')}; "
                f"time ≤ CCE's: {_target_text(targets['time_vs_cce'], 'ratio')}; "
                f"loss rel. error ≤ {limits['loss_rel_err']:.0e}: {_target_text(targets['loss_rel_err'], 'err')}; "
                f"gradient cosine ≥ {limits['grad_cosine']}: {_target_text(targets['grad_cosine'], 'cos')}.",
            ]
    first = [
        [f"N={s['n']} H={s['h']} V={s['v']}", m.label, f"{c['first_call_s']:.2f}"]
        for s in linear["shapes"]
        for m in LINEAR_METHODS
        for c in [s["cells"].get(m.key, {})]
        if c.get("status") == "ok" and c.get("first_call_s", 0) - c["median_ms"] / 1e3 >= FIRST_CALL_NOTE_S
    ]
    if first:
        lines += ["", "First calls (Triton's JIT, autotuning), not in the timings:", ""]
        lines.append(render_markdown(Table("", ["shape", "method", "first call s"], first, [False, False, True])))
    errors = [
        f"- N={s['n']} H={s['h']} V={s['v']} {key}: {c['status']}"
        for s in linear["shapes"]
        for key, c in s["cells"].items()
        if c.get("status", "").startswith("error")
    ]
    if errors:
        lines += ["", "Errors (tracebacks in `gpu.json`):", "", *errors]
    return lines


def linear_summary(linear: dict) -> list[str]:
    lines = ["linear cross-entropy, forward + backward: median ms / peak MiB (accuracy)"]
    for shape in linear["shapes"]:
        parts = []
        for method in LINEAR_METHODS:
            cell = shape["cells"].get(method.key, {})
            if cell.get("status") == "ok":
                peak = cell.get("peak_bytes")
                text = f"{cell['median_ms']:.2f} ms / {'n/a' if peak is None else f'{peak / 2**20:.0f}'} MiB"
                text += f" ({cell['check']['verdict']})"
            else:
                text = cell.get("status", "not run")[:60]
            parts.append(f"    {method.key}: {text}")
        lines.append(f"  N={shape['n']} H={shape['h']} V={shape['v']}")
        lines += parts
        targets = shape.get("targets", {})
        met = ", ".join(
            f"{name} {'met' if t['met'] else 'NOT met' if t['met'] is False else 'n/a'}" for name, t in targets.items()
        )
        if met:
            lines.append(f"    targets of ours: {met}")
    return lines


def summary(report: dict, selected: tuple[Method, ...]) -> str:
    """A short table for the end of the output: forward + backward milliseconds and the spot checks."""
    table = Table("forward + backward, median ms (✗: failed its spot check)", ["dtype N×V"], [])
    table.headers += [m.short for m in selected]
    for shape in report["shapes"]:
        row = [f"{shape['dtype']} {shape['n']}×{shape['v']}"]
        for method in selected:
            cell = shape["cells"][method.key]
            ms = _ms(cell.get("fwdbwd")) if "status" not in cell else None
            text = _status(cell, "fwdbwd") if ms is None else f"{ms:.3f}" + ("" if _valid(cell) else "✗")
            row.append(text[:13])
        table.rows.append(row)
    lines = [render_plain(table)]
    failed = [
        f"{s['dtype']} {s['n']}x{s['v']} {k}: {c['check']['verdict']}"
        for s in report["shapes"]
        for k, c in s["cells"].items()
        if c.get("check", {}).get("verdict", "").startswith("FAIL")
    ]
    lines.append("spot checks: " + ("; ".join(failed) if failed else "no failure"))
    errors = sum(
        cell.get(kind, {}).get("status", "").startswith("error")
        for shape in report["shapes"]
        for cell in shape["cells"].values()
        for kind in PASSES
    )
    lines.append(f"passes that raised an error: {errors}" + (" (gpu.md, section Errors)" if errors else ""))
    if report.get("linear"):
        lines += linear_summary(report["linear"])
    return "\n".join(lines)


def chart(report: dict, selected: tuple[Method, ...], path: Path) -> str | None:
    """Bars of the fraction of copy bandwidth, per dtype and pass; None, or why there is no chart."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: no chart"
    copy_bps = report["copy_bandwidth"]["bytes_per_s"]
    dtypes = [d for d in report["settings"]["dtypes"] if any(s["dtype"] == d for s in report["shapes"])]
    if not dtypes:
        return "nothing measured: no chart"
    fig, axes = plt.subplots(len(dtypes), 2, figsize=(14, 4.2 * len(dtypes)), squeeze=False)
    width = 0.8 / len(selected)
    for row, dtype in enumerate(dtypes):
        shapes = [s for s in report["shapes"] if s["dtype"] == dtype]
        for col, kind in enumerate(PASSES):
            ax = axes[row][col]
            for i, method in enumerate(selected):
                xs, ys = [], []
                for j, shape in enumerate(shapes):
                    cell = shape["cells"][method.key]
                    ms = _ms(cell.get(kind)) if "status" not in cell and _valid(cell) else None
                    if ms is not None:
                        xs.append(j + (i - (len(selected) - 1) / 2) * width)
                        ys.append(100 * cell[kind]["min_bytes"] / (ms / 1e3) / copy_bps)
                ax.bar(xs, ys, width, label=method.label)
            ax.set_xticks(range(len(shapes)), [f"{s['n']}×{s['v']}" for s in shapes], fontsize=8)
            ax.set_ylabel("% of copy bandwidth")
            ax.set_title(f"{dtype}, {PASS_NAMES[kind]} (minimum traffic / time)")
            ax.axhline(100, color="grey", linewidth=0.8, linestyle="--")
    handles, names = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=4, fontsize=8)
    device = report["environment"].get("gpu") or report["environment"]["device"]
    fig.suptitle(f"Softmax cross-entropy on {device}: missing bars are OOM, skipped or not measured", fontsize=10)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


def write_files(report: dict, selected: tuple[Method, ...], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    (out / "gpu.md").write_text(markdown(report, selected))


# --------------------------------------------------------------------------------------------
# main


def parse_shapes(text: str) -> tuple[tuple[int, int], ...]:
    try:
        shapes = tuple(tuple(int(v) for v in part.lower().split("x")) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"`--shapes` must look like 8192x32000,32768x131072; got {text!r}") from None
    if not shapes or any(len(s) != 2 or min(s) < 1 for s in shapes):
        raise argparse.ArgumentTypeError(f"`--shapes` must look like 8192x32000,32768x131072; got {text!r}")
    return shapes  # type: ignore[return-value]


def parse_linear_shapes(text: str) -> tuple[tuple[int, int, int], ...]:
    message = f"`--linear-shapes` must look like 8192x4096x262144[,NxHxV...]; got {text!r}"
    try:
        shapes = tuple(tuple(int(v) for v in part.lower().split("x")) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(message) from None
    if not shapes or any(len(s) != 3 or min(s) < 1 for s in shapes):
        raise argparse.ArgumentTypeError(message)
    return shapes  # type: ignore[return-value]


SECTIONS = ("linear", "softmax")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder of gpu.md, gpu.json, gpu.png")
    parser.add_argument("--quick", action="store_true", help="one small shape, few repeats")
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:1, or cpu (the smoke mode)")
    parser.add_argument("--budget-s", type=float, default=420.0, help="stop measuring after this many seconds")
    parser.add_argument("--shapes", type=parse_shapes, help="NxV[,NxV...] instead of the default shapes")
    parser.add_argument("--dtypes", default=",".join(DTYPES), help="comma-separated: bfloat16,float32")
    parser.add_argument("--repeat", type=int, help="timed calls per pass (default 10; --quick 3)")
    parser.add_argument("--warmup", type=int, help="untimed calls first, the spot-checked one included (default 2)")
    parser.add_argument("--methods", help="comma-separated subset of: " + ",".join(m.key for m in METHODS))
    parser.add_argument("--compile-backend", default="inductor", help="torch.compile backend (default inductor)")
    parser.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated: linear,softmax (both)")
    parser.add_argument(
        "--linear-shapes", type=parse_linear_shapes, help="NxHxV[,...] (default 8192x4096x{32768,131072,262144})"
    )
    parser.add_argument("--linear-dtype", choices=DTYPES, help="x and W (default bfloat16; float32 on the CPU)")
    parser.add_argument("--linear-repeat", type=int, help="timed linear calls (default 5; 3 at V >= 262144 or --quick)")
    parser.add_argument(
        "--linear-budget-s",
        type=float,
        default=LINEAR_BUDGET_S,
        help=f"the linear section's share of --budget-s (default {LINEAR_BUDGET_S:.0f}); it runs first",
    )
    args = parser.parse_args(argv)
    sections = tuple(x.strip() for x in args.sections.split(",") if x.strip())
    if not sections or any(x not in SECTIONS for x in sections):
        parser.error(f"`--sections` must be a subset of {','.join(SECTIONS)}; got {args.sections!r}")
    args.sections = sections
    dtypes = tuple(d.strip() for d in args.dtypes.split(",") if d.strip())
    if not dtypes or any(d not in DTYPES for d in dtypes):
        parser.error(f"`--dtypes` must be a subset of {','.join(DTYPES)}; got {args.dtypes!r}")
    args.dtypes = dtypes
    keys = [m.key for m in METHODS]
    if args.methods:
        chosen = [k.strip() for k in args.methods.split(",") if k.strip()]
        if not chosen or any(k not in keys for k in chosen):
            parser.error(f"`--methods` must be a subset of {','.join(keys)}; got {args.methods!r}")
        args.methods = tuple(m for m in METHODS if m.key in chosen)
    else:
        args.methods = METHODS
    for name in ("repeat", "warmup", "linear_repeat"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"`--{name.replace('_', '-')}` must be >= 1; got {value}")
    return args


@contextlib.contextmanager
def _section(title: str) -> Iterator[None]:
    print(f"== {title}", flush=True)
    yield


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    budget = Budget(max(args.budget_s - BUDGET_MARGIN_S, 1.0))
    try:
        device = Device(args.device)
    except (RuntimeError, AssertionError) as error:
        print(f"gpu.py: `--device` {args.device!r} is not usable: {error_text(error)}", file=sys.stderr)
        return 2
    if device.cuda and not torch.cuda.is_available():
        print("gpu.py: no CUDA device here; run with `--device cpu --quick` for the smoke mode", file=sys.stderr)
        return 2
    kind = "cuda" if device.cuda else "cpu"
    shapes = args.shapes or (QUICK_SHAPES[kind] if args.quick else FULL_SHAPES)
    repeat = args.repeat or (3 if args.quick else 10)
    warmup = args.warmup or (1 if args.quick else 2)

    methods = Methods(args.compile_backend)
    env = environment(device, methods, args)
    if not env["checks_disabled"]:
        print(
            "gpu.py: crossentropy.checks_disabled is missing from this checkout: the checks_disabled() rows "
            "are reported as missing, not measured",
            file=sys.stderr,
            flush=True,
        )
    with _section("environment"):
        for key, value in env.items():
            print(f"  {key}: {value}", flush=True)

    with _section("copy bandwidth"):
        free = device.free_bytes()
        nbytes = min(2**31, free // 8) if device.cuda else 2**26
        copy = copy_bandwidth(device, nbytes, 20 if device.cuda else 5)
        print(f"  {copy['bytes_per_s'] / 1e9:.0f} GB/s ({nbytes / 2**30:.2f} GiB per buffer)", flush=True)

    report: dict[str, Any] = {
        "environment": env,
        "copy_bandwidth": copy,
        "settings": {
            "shapes": shapes,
            "dtypes": args.dtypes,
            "methods": [m.key for m in args.methods],
            "repeat": repeat,
            "warmup": warmup,
            "budget_s": args.budget_s,
            "tolerances": TOLERANCES,
            "seed": SEED,
        },
        "shapes": [],
    }
    failed: str | None = None
    if "linear" in args.sections:  # first, within its share of the budget; the softmax section gets what it leaves
        share = args.linear_budget_s if "softmax" in args.sections else budget.seconds
        linear_budget = Budget(max(min(share, budget.left()), 1.0))
        linear_methods = LinearMethods(device, methods.ours, methods._ours_error)
        failed = run_linear_section(args, device, linear_methods, linear_budget, report)
        report["elapsed_s"] = time.perf_counter() - budget.start
        write_files(report, args.methods, args.out)
    # Measured smallest first, so that a budget cut drops the largest shapes; reported in --shapes order.
    order = sorted(((d, s) for d in args.dtypes for s in shapes), key=lambda ds: (ds[1][0] * ds[1][1], ds[0]))
    if "softmax" not in args.sections:
        order = []
    measured: dict[tuple[str, int, int], dict] = {}
    for dtype_name, (n, v) in order:
        if failed:
            measured[(dtype_name, n, v)] = unmeasured(n, v, dtype_name, args.methods, DEVICE_FAILED)
            continue
        with _section(f"{dtype_name} {n}x{v}"):
            try:
                shape = measure_shape(n, v, dtype_name, device, methods, args.methods, warmup, repeat, budget)
            except Exception as error:  # outside the passes (the inputs, the reference): the shape is lost
                print(f"gpu.py: {dtype_name} {n}x{v}: {error_text(error)}", file=sys.stderr, flush=True)
                status = "OOM" if isinstance(error, out_of_memory_errors()) else "error: " + error_text(error)
                shape = unmeasured(n, v, dtype_name, args.methods, status)
                shape["traceback"] = traceback.format_exc()
                with contextlib.suppress(Exception):
                    device.cleanup()
                if problem := device.failure():
                    shape["device_failure"] = problem
            measured[(dtype_name, n, v)] = shape
            failed = shape.get("device_failure")
        report["shapes"] = [measured[(d, n_, v_)] for d in args.dtypes for n_, v_ in shapes if (d, n_, v_) in measured]
        report["elapsed_s"] = time.perf_counter() - budget.start
        write_files(report, args.methods, args.out)

    report["elapsed_s"] = time.perf_counter() - budget.start
    write_files(report, args.methods, args.out)
    note = chart(report, args.methods, args.out / "gpu.png")
    if note:
        with open(args.out / "gpu.md", "a") as md:
            md.write(f"\nChart: {note}.\n")
        print(f"chart: {note}", flush=True)
    print(markdown(report, args.methods), flush=True)
    print(summary(report, args.methods), flush=True)
    print(f"files: {args.out / 'gpu.md'}, {args.out / 'gpu.json'}" + ("" if note else f", {args.out / 'gpu.png'}"))
    ours_failed = any(
        c.get("check", {}).get("verdict", "").startswith("FAIL")
        for s in report["shapes"]
        for m in args.methods
        if m.ours
        for c in [s["cells"][m.key]]
    )
    ours_failed = ours_failed or any(
        s["cells"].get("ours", {}).get("check", {}).get("verdict", "").startswith("FAIL")
        for s in report.get("linear", {}).get("shapes", [])
    )
    return 1 if ours_failed or failed else 0


if __name__ == "__main__":
    sys.exit(main())
