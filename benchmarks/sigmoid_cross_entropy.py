"""Sigmoid (binary, multi-label) cross-entropy on this machine: the fused kernel against PyTorch.

``crossentropy.sigmoid_cross_entropy[_with_grad]`` on NumPy float32 against
``torch.nn.functional.binary_cross_entropy_with_logits`` (forward under ``no_grad``; forward and
``.backward()`` on a leaf), in one process, median of several repetitions after a warm-up, with
and without a per-class ``pos_weight``. Forward + gradient runs twice: into a new array, and
into a buffer reused across calls (``out=``); each is also given as a fraction of NumPy's copy
bandwidth measured on the same logits, ``x.copy()`` (which pays for fresh pages, as a new
gradient does) and ``np.copyto(buffer, x)`` respectively. The kernel moves the logits and the
targets in and the gradient out, three arrays where a copy moves two:

.. math::

    \\text{fraction} = \\frac{3 b / t}{2 b / t_\\text{copy}}

with :math:`b` the bytes of the logits. Writes ``results/sigmoid_cross_entropy.md`` and
``.csv`` next to this script.

    .venv/bin/python benchmarks/sigmoid_cross_entropy.py
"""

from __future__ import annotations

import csv
import statistics
import time
from pathlib import Path

import numba
import numpy as np
import torch

import crossentropy as ce

RESULTS = Path(__file__).resolve().parent / "results"
SHAPES = ((4096, 8192), (33_554_432,), (65536, 16))
REPEAT = 11


def median_ms(call) -> float:
    call()  # warm-up: compilation, first touch
    times = []
    for _ in range(REPEAT):
        start = time.perf_counter()
        result = call()
        times.append((time.perf_counter() - start) * 1e3)
        del result
    return statistics.median(times)


def measure(shape: tuple[int, ...], with_pos_weight: bool) -> dict:
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape, dtype=np.float32) * 3
    y = (rng.random(shape) < 0.3).astype(np.float32)
    pos_weight = rng.uniform(0.5, 4.0, shape[-1]).astype(np.float32) if with_pos_weight else None
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    tpw = None if pos_weight is None else torch.from_numpy(pos_weight)

    def torch_forward():
        with torch.no_grad():
            return torch.nn.functional.binary_cross_entropy_with_logits(tx, ty, pos_weight=tpw)

    def torch_backward():
        leaf = tx.detach().requires_grad_()
        torch.nn.functional.binary_cross_entropy_with_logits(leaf, ty, pos_weight=tpw).backward()
        return leaf

    buffer = np.empty_like(x)
    row = {
        "shape": "x".join(map(str, shape)),
        "pos_weight": "per class" if with_pos_weight else "none",
        "torch_forward_ms": median_ms(torch_forward),
        "torch_forward_grad_ms": median_ms(torch_backward),
        "forward_ms": median_ms(lambda: ce.sigmoid_cross_entropy(x, y, pos_weight=pos_weight)),
        "forward_grad_ms": median_ms(lambda: ce.sigmoid_cross_entropy_with_grad(x, y, pos_weight=pos_weight)),
        "forward_grad_out_ms": median_ms(
            lambda: ce.sigmoid_cross_entropy_with_grad(x, y, pos_weight=pos_weight, out=buffer)
        ),
        "copy_new_ms": median_ms(x.copy),
        "copy_into_ms": median_ms(lambda: np.copyto(buffer, x)),
    }
    row["forward_speedup"] = row["torch_forward_ms"] / row["forward_ms"]
    row["forward_grad_speedup"] = row["torch_forward_grad_ms"] / row["forward_grad_ms"]
    row["forward_grad_out_speedup"] = row["torch_forward_grad_ms"] / row["forward_grad_out_ms"]
    # Bytes moved per second against the copy's: three arrays (logits, targets, gradient) for two.
    row["forward_grad_of_copy_new"] = 1.5 * row["copy_new_ms"] / row["forward_grad_ms"]
    row["forward_grad_out_of_copy_into"] = 1.5 * row["copy_into_ms"] / row["forward_grad_out_ms"]
    return row


def main() -> None:
    rows = [measure(shape, with_pos_weight) for shape in SHAPES for with_pos_weight in (False, True)]
    header = (
        "| shape | pos_weight | PyTorch forward | kernel forward | speed-up "
        "| PyTorch fwd+grad | kernel fwd+grad | speed-up | of `x.copy()` "
        "| kernel fwd+grad, `out=` | speed-up | of `copyto` |"
    )
    lines = [
        "# Sigmoid cross-entropy benchmark",
        "",
        f"NumPy {np.__version__}, PyTorch {torch.__version__} ({torch.get_num_threads()} threads), Numba "
        f"{numba.__version__} ({numba.get_num_threads()} threads, {numba.threading_layer()} layer); float32, "
        f"median of {REPEAT} after a warm-up, milliseconds. `benchmarks/sigmoid_cross_entropy.py`.",
        "",
        "Forward + gradient into a new array and into a reused buffer (`out=`), each also as a fraction of "
        "NumPy's copy bandwidth on the same logits: against `x.copy()` (a new array, fresh pages) and "
        "`np.copyto(buffer, x)` respectively, counting the logits and targets read and the gradient written "
        "(three arrays, where a copy moves two).",
        "",
        header,
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['shape']} | {row['pos_weight']} | {row['torch_forward_ms']:.1f} | {row['forward_ms']:.1f} | "
            f"{row['forward_speedup']:.1f}× | {row['torch_forward_grad_ms']:.1f} | {row['forward_grad_ms']:.1f} | "
            f"{row['forward_grad_speedup']:.1f}× | {row['forward_grad_of_copy_new']:.0%} | "
            f"{row['forward_grad_out_ms']:.1f} | {row['forward_grad_out_speedup']:.1f}× | "
            f"{row['forward_grad_out_of_copy_into']:.0%} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "sigmoid_cross_entropy.md").write_text(text)
    with open(RESULTS / "sigmoid_cross_entropy.csv", "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


if __name__ == "__main__":
    main()
