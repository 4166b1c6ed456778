"""Configuration and results of ``crossentropy bench``: constants, :class:`BenchConfig`, the result records."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..._tools.timing import median

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
        return median(self.times_ms) if self.times_ms else None

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


def _shape_text(shape: Sequence[int]) -> str:
    return f"{shape[0]}x{shape[1]}"


def _shapes_text(shapes: Iterable[Sequence[int]]) -> str:
    return ",".join(_shape_text(shape) for shape in shapes)
