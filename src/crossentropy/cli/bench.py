r"""``crossentropy bench``: softmax cross-entropy speed against PyTorch, next to the memory-bandwidth floor.

For each logits shape ``N×V`` and dtype, one process measures (median of several repetitions,
each case after one warm-up call):

- **the floor**: NumPy passes over the logits array itself. Read bandwidth is the fastest of
  ``x.max()``, ``x.sum()`` and ``x @ ones`` (BLAS gemv, every core); copy bandwidth is measured
  twice, ``np.copyto(dst, x)`` into an existing buffer and ``x.copy()`` into a new array (which
  also pays the operating system's zeroing of fresh pages, as any function returning a new
  gradient does).
- **PyTorch**: ``torch.nn.functional.cross_entropy`` forward (no grad) and forward+backward.
- **the generic path**: the library under :func:`crossentropy.kernels.disabled` (the array-API
  reference); it takes seconds per call at large shapes, so it runs fewer repetitions.
- **the kernels**: :func:`crossentropy.softmax_cross_entropy` (forward) and
  :func:`crossentropy.softmax_cross_entropy_with_grad` (a new gradient array, against
  ``x.copy()``), and the same function writing the gradient into a reused ``out=`` buffer
  (against ``np.copyto``). bfloat16 goes through the kernel layer with ``storage="bfloat16"``
  on the bit patterns of a PyTorch bfloat16 tensor, its ``out=`` through the public function
  on the tensor itself.

Each timing is compared with its PyTorch counterpart (``speedup = torch_ms / ms``) and with
the floor: the logits read once for the forward pass, read once and the gradient written once
for forward+gradient,

.. math::

    \text{fraction of floor} = \frac{t_\text{floor}}{t}, \qquad
    t_\text{floor} = \begin{cases} t_\text{read} & \text{forward} \\
    t_\text{copy} & \text{forward+gradient} \end{cases}

where the forward+gradient floor is reported against both copy measurements. The benchmark
also records the forward pass's peak extra memory (``tracemalloc``, and resident-set growth in a
subprocess for PyTorch and the kernels) and the kernels' compilation time in a fresh process,
with an empty and with a filled Numba cache.

>>> parse_shapes("4096x32000,64x1000")
((4096, 32000), (64, 1000))
>>> BenchConfig.quick().shapes
((64, 1000), (16, 8192))
"""

from __future__ import annotations

import argparse
import csv
import gc
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any

import numpy as np

from .._tools.files import write_atomic
from ._options import positive_int

__all__ = [
    "Bandwidth",
    "BenchConfig",
    "BenchResult",
    "Compilation",
    "Measurement",
    "MemoryPeak",
    "MissingDependencyError",
    "add_arguments",
    "command",
    "parse_dtypes",
    "parse_shapes",
    "run_benchmark",
    "write_outputs",
]

DTYPES = ("float32", "bfloat16")
FULL_SHAPES = ((4096, 32000), (1024, 131072), (16384, 1024), (64, 1_000_000))
QUICK_SHAPES = ((64, 1000), (16, 8192))
DEFAULT_REPEAT = 7
QUICK_REPEAT = 2
# The generic path takes seconds per call at the full shapes: it runs at most this many repetitions.
GENERIC_REPEAT = 3
DEFAULT_OUT = "crossentropy-bench"
FILE_STEM = "softmax_cross_entropy"

FORWARD, FORWARD_GRAD = "forward", "forward+grad"
TORCH, GENERIC, KERNELS, KERNELS_OUT = "torch", "generic", "kernels", "kernels out="
LOSS_METHODS = (TORCH, GENERIC, KERNELS, KERNELS_OUT)
READ, COPY, COPY_NEW = "read", "copy", "copy, new array"
READ_MAX, READ_SUM, READ_GEMV = "numpy x.max()", "numpy x.sum()", "numpy x @ ones"
COPY_INTO, COPY_FRESH = "numpy copyto(dst, x)", "numpy x.copy()"
OK, NOT_APPLICABLE, FAILED = "ok", "n/a", "failed"

EXAMPLES = """\
examples:
  crossentropy bench                              the full benchmark (several minutes), files in ./crossentropy-bench/
  crossentropy bench --quick                      tiny shapes, seconds: checks that everything runs
  crossentropy bench --shapes 4096x32000 --dtypes float32 --no-generic --repeat 11
  crossentropy bench --json --out /tmp/bench      the results as JSON on stdout
"""


class MissingDependencyError(RuntimeError):
    """An optional dependency of the benchmark (PyTorch, matplotlib) is not installed."""


# --------------------------------------------------------------------------------------------
# Configuration and results
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchConfig:
    """What to measure.

    Parameters
    ----------
    shapes : tuple of (n_samples, n_classes)
        Logits shapes ``N×V``.
    dtypes : tuple of {"float32", "bfloat16"}
        Logits dtypes.
    repeat : int
        Timed repetitions of each case after its warm-up call; the generic path runs
        ``min(repeat, GENERIC_REPEAT)``.
    generic : bool
        Whether to time the generic array-API path.
    seed : int
        Seed of the random logits and targets.
    """

    shapes: tuple[tuple[int, int], ...] = FULL_SHAPES
    dtypes: tuple[str, ...] = DTYPES
    repeat: int = DEFAULT_REPEAT
    generic: bool = True
    seed: int = 0

    @classmethod
    def quick(cls) -> BenchConfig:
        """Tiny shapes and two repetitions: the whole run takes seconds (tests, CI)."""
        return cls(shapes=QUICK_SHAPES, repeat=QUICK_REPEAT)

    @property
    def generic_repeat(self) -> int:
        """Repetitions of the generic path."""
        return min(self.repeat, GENERIC_REPEAT)

    def as_dict(self) -> dict[str, Any]:
        return {
            "shapes": [list(shape) for shape in self.shapes],
            "dtypes": list(self.dtypes),
            "repeat": self.repeat,
            "generic_repeat": self.generic_repeat,
            "generic": self.generic,
            "seed": self.seed,
        }


@dataclass
class Measurement:
    """One timed case: a method's pass over one (shape, dtype).

    Bandwidth passes (method ``"numpy ..."``, pass ``"read"``, ``"copy"`` or ``"copy, new
    array"``) and loss passes (method ``"torch"``, ``"generic"``, ``"kernels"`` or ``"kernels
    out="``, pass ``"forward"`` or ``"forward+grad"``) share this record. ``status`` is
    ``"ok"``, ``"n/a"`` (the method does not apply, e.g. the generic path on bfloat16) or
    ``"failed"`` (``note`` holds the error). The references (``torch_ms``, ``floor_ms``,
    ``floor_alloc_ms``) are filled in once the whole (shape, dtype) group is measured.
    """

    shape: tuple[int, int]
    dtype: str
    method: str
    pass_name: str
    bytes_moved: int
    times_ms: tuple[float, ...] = ()
    status: str = OK
    note: str = ""
    loss: float | None = None
    torch_ms: float | None = None
    floor_ms: float | None = None
    floor_alloc_ms: float | None = None

    @property
    def median_ms(self) -> float | None:
        """Median of the repetitions, in milliseconds."""
        return statistics.median(self.times_ms) if self.times_ms else None

    @property
    def speedup_vs_torch(self) -> float | None:
        """``torch_ms / median_ms``: above 1 is faster than PyTorch's same pass."""
        return _ratio(self.torch_ms, self.median_ms)

    @property
    def fraction_of_floor(self) -> float | None:
        """``floor_ms / median_ms``: the read floor (forward) or the copy into an existing buffer (forward+grad)."""
        return _ratio(self.floor_ms, self.median_ms)

    @property
    def fraction_of_floor_alloc(self) -> float | None:
        """``floor_alloc_ms / median_ms``: forward+grad against the copy into a new array."""
        return _ratio(self.floor_alloc_ms, self.median_ms)

    @property
    def gb_per_s(self) -> float | None:
        """Effective bandwidth: the bytes moved at the floor over the median time."""
        median = self.median_ms
        return None if median is None else self.bytes_moved / (median * 1e-3) / 1e9

    def as_dict(self) -> dict[str, Any]:
        return {
            "shape": list(self.shape),
            "dtype": self.dtype,
            "method": self.method,
            "pass": self.pass_name,
            "status": self.status,
            "median_ms": self.median_ms,
            "times_ms": list(self.times_ms),
            "torch_ms": self.torch_ms,
            "speedup_vs_torch": self.speedup_vs_torch,
            "floor_ms": self.floor_ms,
            "fraction_of_floor": self.fraction_of_floor,
            "floor_alloc_ms": self.floor_alloc_ms,
            "fraction_of_floor_alloc": self.fraction_of_floor_alloc,
            "bytes_moved": self.bytes_moved,
            "gb_per_s": self.gb_per_s,
            "loss": self.loss,
            "note": self.note,
        }


@dataclass(frozen=True)
class Bandwidth:
    """The floor of one (shape, dtype): NumPy passes over the logits array's own bytes.

    ``read_ms`` is the fastest read pass (``read_method``); copies move ``2 * nbytes``.
    A value is None when its passes failed.
    """

    shape: tuple[int, int]
    dtype: str
    nbytes: int
    read_ms: float | None
    read_method: str | None
    copy_ms: float | None
    copy_new_ms: float | None

    @property
    def read_gb_per_s(self) -> float | None:
        return _gb_per_s(self.nbytes, self.read_ms)

    @property
    def copy_gb_per_s(self) -> float | None:
        return _gb_per_s(2 * self.nbytes, self.copy_ms)

    @property
    def copy_new_gb_per_s(self) -> float | None:
        return _gb_per_s(2 * self.nbytes, self.copy_new_ms)

    def as_dict(self) -> dict[str, Any]:
        return {
            "shape": list(self.shape),
            "dtype": self.dtype,
            "nbytes": self.nbytes,
            "read_ms": self.read_ms,
            "read_method": self.read_method,
            "read_gb_per_s": self.read_gb_per_s,
            "copy_ms": self.copy_ms,
            "copy_gb_per_s": self.copy_gb_per_s,
            "copy_new_ms": self.copy_new_ms,
            "copy_new_gb_per_s": self.copy_new_gb_per_s,
        }


@dataclass(frozen=True)
class MemoryPeak:
    """Peak extra memory of one call, above what was allocated before it.

    ``tool`` is ``"tracemalloc"`` (Python and NumPy allocations, exact to the byte) or
    ``"rss"`` (growth of the peak resident set in a fresh subprocess, page-granular; it sees
    PyTorch's allocations too, and only allocations whose pages get touched).
    """

    shape: tuple[int, int]
    dtype: str
    method: str
    pass_name: str
    tool: str
    logits_bytes: int
    peak_bytes: int | None
    status: str = OK
    note: str = ""

    @property
    def bytes_per_row(self) -> float | None:
        """``peak_bytes / N``: O(N) memory shows as a constant across shapes."""
        return None if self.peak_bytes is None else self.peak_bytes / self.shape[0]

    @property
    def fraction_of_logits(self) -> float | None:
        """``peak_bytes`` over the logits' own size ``N·V·itemsize``."""
        return _ratio(self.peak_bytes, self.logits_bytes)

    def as_dict(self) -> dict[str, Any]:
        return {
            "shape": list(self.shape),
            "dtype": self.dtype,
            "method": self.method,
            "pass": self.pass_name,
            "tool": self.tool,
            "status": self.status,
            "peak_bytes": self.peak_bytes,
            "bytes_per_row": self.bytes_per_row,
            "logits_bytes": self.logits_bytes,
            "fraction_of_logits": self.fraction_of_logits,
            "note": self.note,
        }


@dataclass(frozen=True)
class Compilation:
    """Import plus first forward and forward+grad calls in a fresh process, in seconds.

    ``cold``: an empty ``NUMBA_CACHE_DIR`` (the kernels compile); ``warm``: a second process on
    the same cache (it loads them). Each maps ``import_s``, ``forward_s``, ``grad_s`` and
    ``total_s``; both are None when a probe failed (``note`` says why).
    """

    cold: dict[str, float] | None
    warm: dict[str, float] | None
    status: str = OK
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"cold": self.cold, "warm": self.warm, "status": self.status, "note": self.note}


@dataclass
class BenchResult:
    """Everything one run measured; :meth:`as_dict` is the ``--json`` output."""

    config: BenchConfig
    environment: dict[str, Any]
    measurements: list[Measurement] = field(default_factory=list)
    bandwidths: list[Bandwidth] = field(default_factory=list)
    memory: list[MemoryPeak] = field(default_factory=list)
    compilation: Compilation | None = None
    total_s: float = 0.0
    files: list[str] = field(default_factory=list)

    def loss_rows(self) -> list[Measurement]:
        """The measurements of the loss methods (not the bandwidth passes)."""
        return [row for row in self.measurements if row.method in LOSS_METHODS]

    def failures(self) -> list[str]:
        """One line per failed measurement."""
        lines = [
            f"{_shape_text(row.shape)} {row.dtype} {row.method} {row.pass_name}: {row.note}"
            for row in self.measurements
            if row.status == FAILED
        ]
        lines += [
            f"memory {_shape_text(peak.shape)} {peak.dtype} {peak.method} {peak.pass_name} ({peak.tool}): {peak.note}"
            for peak in self.memory
            if peak.status == FAILED
        ]
        if self.compilation is not None and self.compilation.status == FAILED:
            lines.append(f"compilation: {self.compilation.note}")
        return lines

    def as_dict(self) -> dict[str, Any]:
        return {
            "config": self.config.as_dict(),
            "environment": self.environment,
            "total_s": self.total_s,
            "bandwidth": [bandwidth.as_dict() for bandwidth in self.bandwidths],
            "measurements": [row.as_dict() for row in self.measurements],
            "memory": [peak.as_dict() for peak in self.memory],
            "compilation": None if self.compilation is None else self.compilation.as_dict(),
            "failures": self.failures(),
            "files": self.files,
        }


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return numerator / denominator


def _gb_per_s(nbytes: int, ms: float | None) -> float | None:
    return None if ms is None or ms <= 0 else nbytes / (ms * 1e-3) / 1e9


# --------------------------------------------------------------------------------------------
# Option parsing
# --------------------------------------------------------------------------------------------


def parse_shapes(text: str) -> tuple[tuple[int, int], ...]:
    """Parse ``"4096x32000,64x1000"`` into ``((4096, 32000), (64, 1000))``; duplicates are dropped.

    Parameters
    ----------
    text : str
        Comma-separated ``NxV`` sizes with positive integers (``x``, ``X`` or ``×``).

    Returns
    -------
    tuple of (int, int)

    Raises
    ------
    argparse.ArgumentTypeError
        On an empty list or an entry that is not ``NxV`` with positive integers.
    """
    shapes: list[tuple[int, int]] = []
    for entry in text.split(","):
        parts = entry.strip().lower().replace("×", "x").split("x")
        if len(parts) != 2 or not all(part.strip().isdigit() and int(part) > 0 for part in parts):
            raise argparse.ArgumentTypeError(
                f"must be comma-separated NxV sizes with positive integers, e.g. 4096x32000; got {entry.strip()!r}"
            )
        shape = (int(parts[0]), int(parts[1]))
        if shape not in shapes:
            shapes.append(shape)
    return tuple(shapes)


def parse_dtypes(text: str) -> tuple[str, ...]:
    """Parse ``"float32,bfloat16"`` into ``("float32", "bfloat16")``; duplicates are dropped.

    Raises
    ------
    argparse.ArgumentTypeError
        On an empty list or a dtype outside :data:`DTYPES`.
    """
    dtypes: list[str] = []
    for entry in text.split(","):
        name = entry.strip().lower()
        if name not in DTYPES:
            choices = ", ".join(DTYPES)
            raise argparse.ArgumentTypeError(f"must be comma-separated among {choices}; got {entry.strip()!r}")
        if name not in dtypes:
            dtypes.append(name)
    return tuple(dtypes)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``crossentropy bench`` to ``parser``."""
    parser.add_argument(
        "--quick", action="store_true", help=f"tiny shapes ({_shapes_text(QUICK_SHAPES)}), {QUICK_REPEAT} repetitions"
    )
    parser.add_argument(
        "--shapes",
        type=parse_shapes,
        metavar="NxV,...",
        help=f"logits shapes (default: {_shapes_text(FULL_SHAPES)})",
    )
    parser.add_argument(
        "--dtypes", type=parse_dtypes, metavar="DTYPE,...", help=f"logits dtypes (default: {','.join(DTYPES)})"
    )
    parser.add_argument(
        "--repeat",
        type=positive_int,
        metavar="K",
        help=f"timed repetitions per case after a warm-up (default: {DEFAULT_REPEAT}; "
        f"the generic path runs at most {GENERIC_REPEAT})",
    )
    parser.add_argument("--no-generic", action="store_true", help="skip the generic array-API path (the slow one)")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(DEFAULT_OUT),
        metavar="DIR",
        help=f"where the CSV, PNG and markdown files go (default: ./{DEFAULT_OUT}/)",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of the table")


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    """The :class:`BenchConfig` of parsed ``crossentropy bench`` options."""
    config = BenchConfig.quick() if args.quick else BenchConfig()
    changes: dict[str, Any] = {"generic": not args.no_generic}
    if args.shapes is not None:
        changes["shapes"] = args.shapes
    if args.dtypes is not None:
        changes["dtypes"] = args.dtypes
    if args.repeat is not None:
        changes["repeat"] = args.repeat
    return replace(config, **changes)


def command(args: argparse.Namespace) -> int:
    """Run ``crossentropy bench`` with parsed options; returns the exit code.

    Missing optional dependencies and an unusable ``--out`` are reported before anything is
    measured, as one line on stderr with exit code 2.
    """
    try:
        _require("torch", "PyTorch")
        _require("matplotlib", "matplotlib")
        out_dir = _prepare_out_dir(args.out)
    except (MissingDependencyError, ValueError) as error:
        print(f"crossentropy bench: error: {error}", file=sys.stderr)
        return 2
    config = config_from_args(args)
    with _progress(_count_steps(config)) as progress:
        result = run_benchmark(config, progress=progress)
    write_outputs(result, out_dir)
    if args.json:
        print(json.dumps(result.as_dict(), indent=2))
    else:
        _print_tables(result)
    for failure in result.failures():
        print(f"crossentropy bench: warning: failed: {failure}", file=sys.stderr)
    return 0


def _require(module: str, name: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise MissingDependencyError(
            f"{name} is not installed; `crossentropy bench` needs it: pip install 'crossentropy[bench]'"
        )


def _prepare_out_dir(out: Path) -> Path:
    if out.exists() and not out.is_dir():
        raise ValueError(f"`--out` must be a directory; got the file {str(out)!r}")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(f"`--out` cannot be created: {error.strerror}; got {str(out)!r}") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise ValueError(f"`--out` must be a writable directory; got {str(out)!r}")
    return out


# --------------------------------------------------------------------------------------------
# Inputs and timed cases
# --------------------------------------------------------------------------------------------


def _import_torch() -> Any:
    try:
        import torch
    except ImportError:
        raise MissingDependencyError("PyTorch is not installed; pip install 'crossentropy[bench]'") from None
    return torch


@dataclass(frozen=True)
class _Inputs:
    """Logits and targets of one case, as NumPy and PyTorch views of the same memory.

    ``logits`` is float32, or for bfloat16 the tensor's bit patterns as uint16 (the kernel
    layer's ``storage="bfloat16"`` input).
    """

    shape: tuple[int, int]
    dtype: str
    logits: np.ndarray
    targets: np.ndarray
    torch_logits: Any
    torch_targets: Any

    def head(self, rows: int) -> _Inputs:
        """The first ``rows`` rows (views): a cheap call that compiles and initializes what the big one uses."""
        return _Inputs(
            (min(rows, self.shape[0]), self.shape[1]),
            self.dtype,
            self.logits[:rows],
            self.targets[:rows],
            self.torch_logits[:rows],
            self.torch_targets[:rows],
        )


def _make_inputs(shape: tuple[int, int], dtype: str, seed: int) -> _Inputs:
    """Standard-normal logits and uniform targets; only one copy of the logits stays alive."""
    torch = _import_torch()
    rng = np.random.default_rng(seed)
    n_rows, n_classes = shape
    logits = rng.standard_normal(shape, dtype=np.float32)
    targets = rng.integers(0, n_classes, size=n_rows, dtype=np.int64)
    torch_logits = torch.from_numpy(logits)
    if dtype == "bfloat16":
        torch_logits = torch_logits.to(torch.bfloat16)
        logits = torch_logits.view(torch.uint16).numpy()  # the tensor's memory, read as bit patterns
    return _Inputs(shape, dtype, logits, targets, torch_logits, torch.from_numpy(targets))


@dataclass(frozen=True)
class _Case:
    """A timed case. ``make`` builds the call to time (and its buffers, alive only during the case)."""

    method: str
    pass_name: str
    bytes_moved: int
    repeat: int
    make: Callable[[], Callable[[], Any]] | None  # None: the method does not apply
    note: str = ""
    loss_of: Callable[[Any], float | None] = lambda result: None


def _first_float(result: Any) -> float:
    """The loss of a call that returns the loss, or a tuple starting with it."""
    return float(result[0] if isinstance(result, tuple) else result)


def _time_calls(
    call: Callable[[], Any], repeat: int, loss_of: Callable[[Any], float | None]
) -> tuple[list[float], float | None]:
    """Milliseconds of ``repeat`` calls after one warm-up, and the loss of the last one.

    Each result is kept until its timer stops, so that freeing it (a large ``munmap``) is not
    charged to the call; the garbage collector is off while timing, as in :mod:`timeit`.
    """
    call()  # warm-up: compilation, lazy initialization, first touch of buffers
    gc_was_enabled = gc.isenabled()
    gc.disable()
    times: list[float] = []
    loss = None
    try:
        for _ in range(repeat):
            start = time.perf_counter()
            result = call()
            times.append((time.perf_counter() - start) * 1e3)
            loss = loss_of(result)
            del result
    finally:
        if gc_was_enabled:
            gc.enable()
    return times, loss


def _measure(case: _Case, inputs: _Inputs) -> Measurement:
    row = Measurement(inputs.shape, inputs.dtype, case.method, case.pass_name, case.bytes_moved, note=case.note)
    if case.make is None:
        row.status = NOT_APPLICABLE
        return row
    try:
        call = case.make()
        times, row.loss = _time_calls(call, case.repeat, case.loss_of)
        row.times_ms = tuple(times)
    # A broken path is a finding to report next to the others, not a reason to lose the run.
    except Exception as error:
        row.status, row.note = FAILED, _one_line(error)
    finally:
        call = None  # release the case's buffers before the next case
        gc.collect()
    return row


def _one_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def _bandwidth_cases(inputs: _Inputs, repeat: int) -> list[_Case]:
    x = inputs.logits
    nbytes = x.nbytes

    def read_view() -> np.ndarray:
        # bfloat16 bit patterns have no BLAS: the same bytes are read as float32 (normal
        # numbers, since the high half of each pair is a bfloat16 of a standard normal).
        if x.dtype == np.uint16 and x.shape[-1] % 2 == 0:
            return x.view(np.float32)
        return x

    def gemv() -> Callable[[], Any]:
        view = read_view()
        ones = np.ones(view.shape[-1], dtype=view.dtype)
        return lambda: view @ ones

    def copy_into() -> Callable[[], Any]:
        dst = np.empty_like(x)
        return lambda: np.copyto(dst, x)

    def reduction(name: str) -> Callable[[], Callable[[], Any]]:
        def make() -> Callable[[], Any]:
            return getattr(read_view(), name)

        return make

    cases = [
        _Case(READ_MAX, READ, nbytes, repeat, reduction("max")),
        _Case(READ_SUM, READ, nbytes, repeat, reduction("sum")),
    ]
    if read_view().dtype.kind == "f":
        cases.append(_Case(READ_GEMV, READ, nbytes, repeat, gemv))
    cases.append(_Case(COPY_INTO, COPY, 2 * nbytes, repeat, copy_into))
    cases.append(_Case(COPY_FRESH, COPY_NEW, 2 * nbytes, repeat, lambda: x.copy))
    return cases


def _torch_forward(inputs: _Inputs) -> Callable[[], Any]:
    torch = _import_torch()
    logits, targets = inputs.torch_logits, inputs.torch_targets

    def call() -> Any:
        with torch.no_grad():
            return torch.nn.functional.cross_entropy(logits, targets)

    return call


def _torch_forward_backward(inputs: _Inputs) -> Callable[[], Any]:
    torch = _import_torch()
    logits, targets = inputs.torch_logits, inputs.torch_targets

    def call() -> Any:
        leaf = logits.detach().requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(leaf, targets)
        loss.backward()
        return loss.detach(), leaf  # the leaf keeps its .grad alive until the timer stops

    return call


def _public_call(inputs: _Inputs, *, with_grad: bool, generic: bool) -> Callable[[], Any]:
    """The public function on float32 logits, on the kernels or (``generic``) the array-API path."""
    from .. import kernels
    from ..losses import softmax_cross_entropy, softmax_cross_entropy_with_grad

    function = softmax_cross_entropy_with_grad if with_grad else softmax_cross_entropy
    logits, targets = inputs.logits, inputs.targets
    if not generic:
        return lambda: function(logits, targets)

    def call() -> Any:
        with kernels.disabled():
            return function(logits, targets)

    return call


def _kernel_call(inputs: _Inputs, *, with_grad: bool) -> Callable[[], Any]:
    """The Numba kernel layer: plain mean cross-entropy, with a new gradient when ``with_grad``."""
    from ..kernels import numba as numba_kernels

    n_rows = inputs.shape[0]
    row_weight = np.ones(n_rows, np.float32)
    grad_factor = np.full(n_rows, 1.0 / n_rows, np.float32) if with_grad else None
    storage = "bfloat16" if inputs.dtype == "bfloat16" else None
    logits, targets = inputs.logits, inputs.targets

    def call() -> Any:
        losses, grad = numba_kernels.softmax_cross_entropy_rows(
            logits,
            targets,
            weight=None,
            row_weight=row_weight,
            grad_factor=grad_factor,
            smoothing=0.0,
            z=0.0,
            cap=None,
            storage=storage,
        )
        return losses.sum() / n_rows, grad

    return call


def _public_out_call(inputs: _Inputs) -> Callable[[], Any]:
    """``softmax_cross_entropy_with_grad(x, y, out=buffer)`` with one buffer reused across calls.

    float32 on the NumPy arrays; bfloat16 on the PyTorch tensors (NumPy has no bfloat16), which
    run on the same kernels outside autograd.
    """
    from ..losses import softmax_cross_entropy_with_grad

    if inputs.dtype == "bfloat16":
        logits, targets = inputs.torch_logits, inputs.torch_targets
        buffer = _import_torch().empty_like(logits)
    else:
        logits, targets = inputs.logits, inputs.targets
        buffer = np.empty_like(logits)
    return lambda: softmax_cross_entropy_with_grad(logits, targets, out=buffer)


def _kernels_forward(inputs: _Inputs) -> Callable[[], Any]:
    """What a user runs for the forward pass: the public function, or the kernel layer for bfloat16."""
    if inputs.dtype == "bfloat16":
        return _kernel_call(inputs, with_grad=False)
    return _public_call(inputs, with_grad=False, generic=False)


def _kernels_forward_grad(inputs: _Inputs) -> Callable[[], Any]:
    if inputs.dtype == "bfloat16":
        return _kernel_call(inputs, with_grad=True)
    return _public_call(inputs, with_grad=True, generic=False)


def _loss_cases(inputs: _Inputs, config: BenchConfig) -> list[_Case]:
    nbytes = inputs.logits.nbytes
    read, read_write = nbytes, 2 * nbytes

    def case(method: str, pass_name: str, make: Callable[[], Callable[[], Any]] | None, **options: Any) -> _Case:
        moved = read if pass_name == FORWARD else read_write
        repeat = options.pop("repeat", config.repeat)
        return _Case(method, pass_name, moved, repeat, make, loss_of=_first_float, **options)

    cases = [
        case(TORCH, FORWARD, lambda: _torch_forward(inputs)),
        case(TORCH, FORWARD_GRAD, lambda: _torch_forward_backward(inputs)),
    ]
    if config.generic and inputs.dtype == "bfloat16":
        cases += [case(GENERIC, FORWARD, None, note="NumPy has no bfloat16")]
        cases += [case(GENERIC, FORWARD_GRAD, None, note="NumPy has no bfloat16")]
    elif config.generic:
        repeat = config.generic_repeat
        cases += [
            case(GENERIC, FORWARD, lambda: _public_call(inputs, with_grad=False, generic=True), repeat=repeat),
            case(GENERIC, FORWARD_GRAD, lambda: _public_call(inputs, with_grad=True, generic=True), repeat=repeat),
        ]
    cases += [
        case(KERNELS, FORWARD, lambda: _kernels_forward(inputs)),
        case(KERNELS, FORWARD_GRAD, lambda: _kernels_forward_grad(inputs)),
        case(KERNELS_OUT, FORWARD_GRAD, lambda: _public_out_call(inputs)),
    ]
    return cases


def _bandwidth_of(rows: Sequence[Measurement], inputs: _Inputs) -> Bandwidth:
    def median(pass_name: str) -> tuple[float | None, str | None]:
        timed = [(row.median_ms, row.method) for row in rows if row.pass_name == pass_name and row.status == OK]
        return min(timed) if timed else (None, None)

    read_ms, read_method = median(READ)
    return Bandwidth(
        inputs.shape, inputs.dtype, inputs.logits.nbytes, read_ms, read_method, median(COPY)[0], median(COPY_NEW)[0]
    )


def _attach_references(rows: Sequence[Measurement], bandwidth: Bandwidth) -> None:
    torch_ms = {row.pass_name: row.median_ms for row in rows if row.method == TORCH and row.status == OK}
    for row in rows:
        if row.status != OK:
            continue
        row.torch_ms = torch_ms.get(row.pass_name)
        if row.pass_name == FORWARD:
            row.floor_ms = bandwidth.read_ms
        else:
            row.floor_ms, row.floor_alloc_ms = bandwidth.copy_ms, bandwidth.copy_new_ms


# --------------------------------------------------------------------------------------------
# Memory and compilation
# --------------------------------------------------------------------------------------------


def _tracemalloc_forward_peak(inputs: _Inputs) -> MemoryPeak:
    """Peak bytes NumPy and Python allocate during the kernels' forward pass (NumPy reports to tracemalloc)."""
    peak = MemoryPeak(inputs.shape, inputs.dtype, KERNELS, FORWARD, "tracemalloc", inputs.logits.nbytes, None)
    try:
        forward = _kernels_forward(inputs)
        forward()  # compiles and initializes outside the trace
        gc.collect()
        tracemalloc.start()
        try:
            baseline, _ = tracemalloc.get_traced_memory()
            result = forward()
            _, high = tracemalloc.get_traced_memory()
            del result
        finally:
            tracemalloc.stop()
    except Exception as error:
        return replace(peak, status=FAILED, note=_one_line(error))
    return replace(peak, peak_bytes=high - baseline)


_RSS_CALLS: tuple[tuple[str, str, Callable[[_Inputs], Callable[[], Any]]], ...] = (
    (TORCH, FORWARD, _torch_forward),
    (KERNELS, FORWARD, _kernels_forward),
    (TORCH, FORWARD_GRAD, _torch_forward_backward),
    (KERNELS, FORWARD_GRAD, _kernels_forward_grad),
)


def _proc_status_bytes(key: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024  # reported in kB
    raise OSError(f"no {key} in /proc/self/status")


def _reset_peak_rss() -> None:
    # Linux: writing 5 to clear_refs resets the peak resident set (VmHWM) to the current one.
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")


def _rss_worker() -> None:
    """Subprocess body of :func:`_rss_peaks`: reads the spec on stdin, prints JSON on stdout's last line."""
    spec = json.load(sys.stdin)
    peaks: list[dict[str, Any]] = []
    try:
        _reset_peak_rss()
        _proc_status_bytes("VmHWM")
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
                    call = make(inputs)
                    gc.collect()
                    _reset_peak_rss()
                    before = _proc_status_bytes("VmRSS")
                    result = call()
                    entry["peak_bytes"] = max(0, _proc_status_bytes("VmHWM") - before)
                    del result
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
    worker = "from crossentropy.cli.bench import _rss_worker; _rss_worker()"
    # glibc adjusts its mmap threshold upwards as large blocks are freed, after which a call can
    # reuse pages the process already holds, unseen by the resident set. Setting the threshold
    # (to glibc's own default, 128 KiB) freezes it: every larger block gets fresh pages.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(128 * 1024)}
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


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------


def _environment() -> dict[str, Any]:
    import numba

    torch = _import_torch()
    from .. import __version__, softmax_cross_entropy

    # The kernels' first call picks Numba's threading layer (by whether PyTorch is loaded, which it
    # is now): start the threads that way, not by numba.get_num_threads() below.
    softmax_cross_entropy(np.zeros((1, 2), np.float32), np.zeros(1, np.int64))

    return {
        "crossentropy": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "numba_threads": numba.get_num_threads(),
        "numba_threading_layer": numba.threading_layer(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }


class _OtherProcessesCpu:
    """The share of the machine's cores that other processes used since creation (Linux; None elsewhere).

    Other processes on the cores distort every timing, and the reader of the results should know.
    It is the busy time of all cores (``/proc/stat``) minus this process's and its waited-for
    children's (``os.times``), over the wall time times the number of cores.
    """

    def __init__(self) -> None:
        self.start_busy, self.start_own, self.start_wall = _busy_cpu_s(), _own_cpu_s(), time.perf_counter()

    def share(self) -> float | None:
        busy = _busy_cpu_s()
        if busy is None or self.start_busy is None:
            return None
        others = (busy - self.start_busy) - (_own_cpu_s() - self.start_own)
        capacity = (time.perf_counter() - self.start_wall) * (os.cpu_count() or 1)
        return min(1.0, max(0.0, others / capacity))


def _busy_cpu_s() -> float | None:
    try:
        with open("/proc/stat") as stat:
            fields = stat.readline().split()
    except OSError:
        return None
    # cpu user nice system idle iowait irq softirq steal ...: everything but idle and iowait is busy.
    ticks = [int(value) for value in fields[1:9]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def _own_cpu_s() -> float:
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def _count_steps(config: BenchConfig) -> int:
    """Steps of :func:`run_benchmark`: per (shape, dtype) inputs, cases, tracemalloc; then RSS and compilation."""
    reads = 3  # max, sum, gemv (bfloat16 with an odd V has no gemv: one step less, harmless for a progress bar)
    losses = 2 + (2 if config.generic else 0) + 3
    per_group = 1 + reads + 2 + losses + 1
    return len(config.shapes) * len(config.dtypes) * per_group + 2


def run_benchmark(config: BenchConfig, *, progress: _Progress | None = None) -> BenchResult:
    """Measure everything of ``config`` in this process (and the memory and compilation subprocesses).

    Parameters
    ----------
    config : BenchConfig
        Shapes, dtypes, repetitions.
    progress : optional
        Receives ``step(description)`` before each step (see :func:`_progress`).

    Returns
    -------
    BenchResult
        Every measurement, with the speed-ups and fractions of the floor attached.

    Raises
    ------
    MissingDependencyError
        When PyTorch is not installed.
    """
    progress = progress or _Progress()
    start = time.perf_counter()
    result = BenchResult(config, _environment())
    other_cpu = _OtherProcessesCpu()
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


class _Progress:
    """Progress on stderr: ``step(description)`` announces the next step. This base class is silent."""

    def step(self, description: str) -> None:
        pass


class _LineProgress(_Progress):
    """One line per step, for logs and pipes."""

    def __init__(self, total: int, stream: IO[str]) -> None:
        self.total, self.done, self.stream = total, 0, stream

    def step(self, description: str) -> None:
        self.done += 1
        print(f"bench [{self.done}/{self.total}] {description}", file=self.stream, flush=True)


class _RichProgress(_Progress):
    def __init__(self, progress: Any, task: Any) -> None:
        self.progress, self.task, self.started = progress, task, False

    def step(self, description: str) -> None:
        self.progress.update(self.task, description=description, advance=1 if self.started else 0)
        self.started = True


@contextmanager
def _progress(total: int) -> Iterator[_Progress]:
    """A rich progress bar on an interactive stderr, else one line per step."""
    rich_progress = None
    if sys.stderr.isatty():
        try:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
        except ImportError:
            pass
        else:
            columns = (TextColumn("{task.description:<60}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
            rich_progress = Progress(*columns, console=Console(stderr=True), transient=True)
    if rich_progress is None:
        yield _LineProgress(total, sys.stderr)
        return
    with rich_progress:
        yield _RichProgress(rich_progress, rich_progress.add_task("starting", total=total))


# --------------------------------------------------------------------------------------------
# Reports: tables, CSV, chart, markdown
# --------------------------------------------------------------------------------------------


def _shape_text(shape: Sequence[int]) -> str:
    return f"{shape[0]}x{shape[1]}"


def _shapes_text(shapes: Iterable[Sequence[int]]) -> str:
    return ",".join(_shape_text(shape) for shape in shapes)


def _ms(value: float | None) -> str:
    if value is None:
        return ""
    if value >= 100:
        return f"{value:.0f}"
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}" if value >= 1 else f"{value:.3f}"


def _times(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:.1f}×" if value >= 10 else f"{value:.2f}×" if value >= 0.1 else f"{value:.2g}×"


def _percent(value: float | None) -> str:
    if value is None:
        return ""
    return f"{100 * value:.0f}%" if value >= 0.1 else f"{100 * value:.2g}%"


def _number(value: float | None, digits: int = 1) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _bytes(value: float | None) -> str:
    if value is None:
        return ""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(value) >= size:
            return f"{value / size:.1f} {unit}"
    return f"{value:.0f} B"


@dataclass
class _Table:
    """Rendered cells, shared by the terminal (rich or plain) and the markdown summary."""

    title: str
    headers: list[str]
    rows: list[list[str]]
    numeric: list[bool]
    section_ends: set[int] = field(default_factory=set)  # a rule goes after these row indices


def _timing_table(result: BenchResult) -> _Table:
    headers = ["shape", "dtype", "method", "pass", "ms", "vs torch", "of floor", "of floor, new array", "GB/s"]
    table = _Table("Softmax cross-entropy: median milliseconds", headers, [], [False] * 4 + [True] * 5)
    rows = result.loss_rows()
    for index, row in enumerate(rows):
        if row.status == OK:
            cells = [
                _ms(row.median_ms),
                _times(row.speedup_vs_torch),
                _percent(row.fraction_of_floor),
                _percent(row.fraction_of_floor_alloc),
                _number(row.gb_per_s),
            ]
        else:
            cells = [row.status, "", "", "", ""]
        table.rows.append([_shape_text(row.shape), row.dtype, row.method, row.pass_name, *cells])
        if index + 1 < len(rows) and (rows[index + 1].shape, rows[index + 1].dtype) != (row.shape, row.dtype):
            table.section_ends.add(index)
    return table


def _bandwidth_table(result: BenchResult) -> _Table:
    headers = ["shape", "dtype", "size", "read GB/s", "fastest read", "copy GB/s", "copy, new array GB/s"]
    numeric = [False, False, True, True, False, True, True]
    table = _Table("Bandwidth floor: NumPy passes over the same array", headers, [], numeric)
    for bandwidth in result.bandwidths:
        table.rows.append(
            [
                _shape_text(bandwidth.shape),
                bandwidth.dtype,
                _bytes(bandwidth.nbytes),
                _number(bandwidth.read_gb_per_s),
                bandwidth.read_method or "",
                _number(bandwidth.copy_gb_per_s),
                _number(bandwidth.copy_new_gb_per_s),
            ]
        )
    return table


def _memory_table(result: BenchResult) -> _Table:
    headers = ["shape", "dtype", "method", "pass", "tool", "peak extra", "per row", "of logits"]
    table = _Table("Peak extra memory of one call", headers, [], [False] * 5 + [True] * 3)
    for peak in sorted(result.memory, key=lambda p: (p.tool != "tracemalloc", p.shape, p.dtype, p.pass_name, p.method)):
        cells = (
            [_bytes(peak.peak_bytes), _bytes(peak.bytes_per_row), _percent(peak.fraction_of_logits)]
            if peak.status == OK
            else [peak.status, "", ""]
        )
        table.rows.append([_shape_text(peak.shape), peak.dtype, peak.method, peak.pass_name, peak.tool, *cells])
    return table


def _compilation_text(result: BenchResult) -> str:
    compilation = result.compilation
    if compilation is None:
        return ""
    if compilation.status != OK or compilation.cold is None or compilation.warm is None:
        return f"Compilation: {compilation.status}: {compilation.note}"
    return (
        "Compilation, import + first forward and forward+grad calls in a fresh process: "
        f"{compilation.cold['total_s']:.2f} s with an empty NUMBA_CACHE_DIR (compiling), "
        f"{compilation.warm['total_s']:.2f} s with the cache filled "
        f"(of which import {compilation.warm['import_s']:.2f} s)"
    )


def _environment_text(result: BenchResult) -> str:
    env, config = result.environment, result.config
    return (
        f"{env['processor']}, {env['cpu_count']} cores; NumPy {env['numpy']}, PyTorch {env['torch']} "
        f"({env['torch_threads']} threads), Numba {env['numba']} ({env['numba_threads']} threads, "
        f"{env.get('numba_threading_layer', 'unknown')} layer). "
        f"Median of {config.repeat} repetitions after a warm-up"
        f"{f' (generic path: {config.generic_repeat})' if config.generic else ''}; run time {result.total_s:.0f} s; "
        f"other processes used {_percent(env.get('other_processes_cpu_share')) or 'an unknown share'} of the cores."
    )


def _render_plain(table: _Table) -> str:
    widths = [max(len(cell) for cell in column) for column in zip(table.headers, *table.rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        parts = [
            cell.rjust(width) if numeric else cell.ljust(width)
            for cell, width, numeric in zip(cells, widths, table.numeric, strict=True)
        ]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * width for width in widths)
    lines = [table.title, line(table.headers), rule]
    for index, row in enumerate(table.rows):
        lines.append(line(row))
        if index in table.section_ends:
            lines.append("")
    return "\n".join(lines)


def _render_markdown(table: _Table) -> str:
    lines = [
        "| " + " | ".join(table.headers) + " |",
        "|" + "|".join("---:" if numeric else "---" for numeric in table.numeric) + "|",
    ]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in table.rows]
    return "\n".join(lines)


def _print_tables(result: BenchResult) -> None:
    tables = [_bandwidth_table(result), _timing_table(result), _memory_table(result)]
    footer = [_compilation_text(result), _environment_text(result), "Files: " + ", ".join(result.files)]
    console = None
    if sys.stdout.isatty():
        try:
            from rich.console import Console
            from rich.table import Table
        except ImportError:
            pass
        else:
            console = Console()
    if console is None:
        print("\n\n".join([_render_plain(table) for table in tables] + ["\n".join(footer)]))
        return
    for table in tables:
        rich_table = Table(title=table.title, title_justify="left")
        for header, numeric in zip(table.headers, table.numeric, strict=True):
            rich_table.add_column(header, justify="right" if numeric else "left")
        for index, row in enumerate(table.rows):
            rich_table.add_row(*row, end_section=index in table.section_ends)
        console.print(rich_table)
    for line in footer:
        console.print(line, highlight=False)


def _csv_rows(result: BenchResult) -> Iterator[dict[str, Any]]:
    for row in result.measurements:
        record = row.as_dict()
        record["shape"] = _shape_text(row.shape)
        record["n"], record["v"] = row.shape
        record["times_ms"] = ";".join(repr(value) for value in row.times_ms)
        yield {key: "" if value is None else value for key, value in record.items()}


CSV_COLUMNS = (
    "shape",
    "n",
    "v",
    "dtype",
    "method",
    "pass",
    "status",
    "median_ms",
    "times_ms",
    "torch_ms",
    "speedup_vs_torch",
    "floor_ms",
    "fraction_of_floor",
    "floor_alloc_ms",
    "fraction_of_floor_alloc",
    "bytes_moved",
    "gb_per_s",
    "loss",
    "note",
)


def _write_csv(result: BenchResult, stream: IO[str]) -> None:
    writer = csv.DictWriter(stream, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for record in _csv_rows(result):
        writer.writerow(record)


def _write_chart(result: BenchResult, stream: IO[bytes]) -> None:
    """Grouped bars of the median milliseconds per (shape, dtype), log scale, with the floor drawn across each group."""
    from matplotlib.figure import Figure

    groups = [(bandwidth.shape, bandwidth.dtype, bandwidth) for bandwidth in result.bandwidths]
    rows = {(row.shape, row.dtype, row.method, row.pass_name): row for row in result.loss_rows() if row.status == OK}
    methods = [method for method in LOSS_METHODS if any(key[2] == method for key in rows)]
    figure = Figure(figsize=(max(8.0, 1.7 * len(groups)), 8.0), layout="constrained")
    axes = figure.subplots(2, 1, sharex=True)
    width = 0.8 / max(1, len(methods))
    positions = np.arange(len(groups), dtype=float)
    for axis, pass_name, floor_label in (
        (axes[0], FORWARD, "floor: logits read once"),
        (axes[1], FORWARD_GRAD, "floor: copy into a buffer"),
    ):
        for index, method in enumerate(methods):
            offset = (index - (len(methods) - 1) / 2) * width
            bars = [
                (position + offset, rows[shape, dtype, method, pass_name].median_ms)
                for position, (shape, dtype, _) in zip(positions, groups, strict=True)
                if (shape, dtype, method, pass_name) in rows
            ]
            if bars:
                axis.bar([x for x, _ in bars], [ms for _, ms in bars], width, label=method, color=f"C{index}")
        floors = [
            (position, bandwidth.read_ms if pass_name == FORWARD else bandwidth.copy_ms)
            for position, (_, _, bandwidth) in zip(positions, groups, strict=True)
        ]
        floors = [(x, ms) for x, ms in floors if ms is not None]
        if floors:
            axis.hlines(
                [ms for _, ms in floors],
                [x - 0.45 for x, _ in floors],
                [x + 0.45 for x, _ in floors],
                colors="black",
                linestyles="dashed",
                label=floor_label,
            )
        axis.set_yscale("log")
        axis.set_ylabel("milliseconds (median, log scale)")
        axis.set_title(f"softmax cross-entropy, {pass_name}", loc="left")
        axis.grid(axis="y", which="both", alpha=0.3)
        axis.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    axes[1].set_xticks(positions, [f"{_shape_text(shape)}\n{dtype}" for shape, dtype, _ in groups])
    figure.savefig(stream, format="png", dpi=110)


def _headlines(result: BenchResult) -> list[str]:
    rows = {(row.shape, row.dtype, row.method, row.pass_name): row for row in result.loss_rows()}
    lines = []
    for bandwidth in result.bandwidths:
        key = (bandwidth.shape, bandwidth.dtype)
        forward, grad, out = (rows.get((*key, method, pass_name)) for method, pass_name in _HEADLINE_ROWS)
        parts = []
        if forward is not None and forward.status == OK:
            speedup, fraction = _times(forward.speedup_vs_torch), _percent(forward.fraction_of_floor)
            parts.append(f"forward {speedup} PyTorch, {fraction} of the read floor")
        if grad is not None and grad.status == OK:
            parts.append(
                f"forward+grad {_times(grad.speedup_vs_torch)} PyTorch, {_percent(grad.fraction_of_floor)} of the copy "
                f"floor ({_percent(grad.fraction_of_floor_alloc)} of a copy into a new array)"
            )
        if out is not None and out.status == OK:
            speedup, fraction = _times(out.speedup_vs_torch), _percent(out.fraction_of_floor)
            parts.append(f"into a reused buffer (`out=`) {speedup}, {fraction} of the copy floor")
        failed = [row for row in (forward, grad, out) if row is not None and row.status == FAILED]
        if failed:
            parts.append(f"{len(failed)} kernel measurement(s) failed")
        summary = "; ".join(parts) or "no kernel timing"
        lines.append(f"- **{_shape_text(bandwidth.shape)} {bandwidth.dtype}**: {summary}")
    return lines


_HEADLINE_ROWS = ((KERNELS, FORWARD), (KERNELS, FORWARD_GRAD), (KERNELS_OUT, FORWARD_GRAD))


def _markdown(result: BenchResult) -> str:
    sections = [
        "# Softmax cross-entropy benchmark",
        _environment_text(result),
        "Kernels against PyTorch's `cross_entropy` (speed-up = PyTorch ms / kernels ms) and against the "
        "memory-bandwidth floor (floor time / measured time; the floor is the logits read once for the forward "
        "pass, read once plus the gradient written once for forward+grad):",
        "\n".join(_headlines(result)),
        "## Bandwidth floor",
        _render_markdown(_bandwidth_table(result)),
        "## Median milliseconds",
        "`of floor`: against the read floor (forward) or a copy into an existing buffer (forward+grad); "
        "`of floor, new array`: against `x.copy()`, which also pays for fresh pages. All repetitions are in the CSV.",
        _render_markdown(_timing_table(result)),
        "## Peak extra memory",
        "`tracemalloc`: NumPy and Python allocations during the call; `rss`: growth of the peak resident set "
        "in a fresh subprocess (page-granular, sees PyTorch's allocator too).",
        _render_markdown(_memory_table(result)),
        "## Compilation",
        _compilation_text(result),
    ]
    failures = result.failures()
    if failures:
        sections += ["## Failed measurements", "\n".join(f"- {line}" for line in failures)]
    return "\n\n".join(sections) + "\n"


def write_outputs(result: BenchResult, out_dir: Path) -> list[Path]:
    """Write the CSV, the PNG chart and the markdown summary into ``out_dir``, each atomically.

    Parameters
    ----------
    result : BenchResult
        What :func:`run_benchmark` returned; its ``files`` are set to the paths written.
    out_dir : Path
        An existing directory.

    Returns
    -------
    list of Path
        ``<stem>.csv``, ``<stem>.png`` and ``<stem>.md``.
    """
    csv_path, png_path, md_path = (out_dir / f"{FILE_STEM}{suffix}" for suffix in (".csv", ".png", ".md"))
    result.files = [str(path) for path in (csv_path, png_path, md_path)]
    write_atomic(csv_path, lambda stream: _write_csv(result, stream))
    write_atomic(png_path, lambda stream: _write_chart(result, stream), binary=True)
    write_atomic(md_path, lambda stream: stream.write(_markdown(result)))
    return [csv_path, png_path, md_path]
