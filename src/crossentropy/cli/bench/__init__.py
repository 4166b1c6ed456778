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

The package, one module per part: ``_config`` (constants, options and result records),
``_command`` (option parsing and the command), ``_cases`` (inputs and timed cases), ``_memory``
(peak memory and compilation), ``_run`` (the run) and ``_report`` (tables, CSV, chart,
Markdown). The generic parts (the timing loop, the memory probes, the environment record, the
tables and the progress bar) are :mod:`crossentropy._tools`'.

>>> parse_shapes("4096x32000,64x1000")
((4096, 32000), (64, 1000))
>>> BenchConfig.quick().shapes
((64, 1000), (16, 8192))
"""

from __future__ import annotations

from ._command import add_arguments, command, config_from_args, parse_dtypes, parse_shapes
from ._config import (
    DTYPES,
    EXAMPLES,
    FULL_SHAPES,
    QUICK_SHAPES,
    Bandwidth,
    BenchConfig,
    BenchResult,
    Compilation,
    Measurement,
    MemoryPeak,
    MissingDependencyError,
)
from ._report import CSV_COLUMNS, write_outputs
from ._run import run_benchmark

__all__ = [
    "CSV_COLUMNS",
    "DTYPES",
    "EXAMPLES",
    "FULL_SHAPES",
    "QUICK_SHAPES",
    "Bandwidth",
    "BenchConfig",
    "BenchResult",
    "Compilation",
    "Measurement",
    "MemoryPeak",
    "MissingDependencyError",
    "add_arguments",
    "command",
    "config_from_args",
    "parse_dtypes",
    "parse_shapes",
    "run_benchmark",
    "write_outputs",
]
