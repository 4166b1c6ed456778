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
    .venv/bin/python benchmarks/sigmoid_cross_entropy.py --shapes 64x100 --repeat 2 --out /tmp/sig  # a check

The timing loop, the environment record and the table are :mod:`crossentropy._tools`'.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
import torch

import crossentropy as ce
from crossentropy._tools.environment import environment
from crossentropy._tools.tables import Table, render_markdown
from crossentropy._tools.timing import median, time_calls

RESULTS = Path(__file__).resolve().parent / "results"
SHAPES = ((4096, 8192), (33_554_432,), (65536, 16))
REPEAT = 11


def median_ms(call, repeat: int = REPEAT) -> float:
    """Median milliseconds of ``repeat`` calls after a warm-up, garbage collector off."""
    return median(time_calls(call, repeat=repeat, warmup=1)) * 1e3


def measure(shape: tuple[int, ...], with_pos_weight: bool, repeat: int = REPEAT) -> dict:
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
        "torch_forward_ms": median_ms(torch_forward, repeat),
        "torch_forward_grad_ms": median_ms(torch_backward, repeat),
        "forward_ms": median_ms(lambda: ce.sigmoid_cross_entropy(x, y, pos_weight=pos_weight), repeat),
        "forward_grad_ms": median_ms(lambda: ce.sigmoid_cross_entropy_with_grad(x, y, pos_weight=pos_weight), repeat),
        "forward_grad_out_ms": median_ms(
            lambda: ce.sigmoid_cross_entropy_with_grad(x, y, pos_weight=pos_weight, out=buffer), repeat
        ),
        "copy_new_ms": median_ms(x.copy, repeat),
        "copy_into_ms": median_ms(lambda: np.copyto(buffer, x), repeat),
    }
    row["forward_speedup"] = row["torch_forward_ms"] / row["forward_ms"]
    row["forward_grad_speedup"] = row["torch_forward_grad_ms"] / row["forward_grad_ms"]
    row["forward_grad_out_speedup"] = row["torch_forward_grad_ms"] / row["forward_grad_out_ms"]
    # Bytes moved per second against the copy's: three arrays (logits, targets, gradient) for two.
    row["forward_grad_of_copy_new"] = 1.5 * row["copy_new_ms"] / row["forward_grad_ms"]
    row["forward_grad_out_of_copy_into"] = 1.5 * row["copy_into_ms"] / row["forward_grad_out_ms"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default=None, help="comma-separated shapes such as 4096x8192,65536x16")
    parser.add_argument("--repeat", type=int, default=REPEAT, help="timed calls per case")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder of the .md and .csv files")
    args = parser.parse_args()
    shapes = SHAPES
    if args.shapes:
        shapes = tuple(tuple(int(n) for n in shape.split("x")) for shape in args.shapes.split(","))
    rows = [measure(shape, with_pos_weight, args.repeat) for shape in shapes for with_pos_weight in (False, True)]
    ce.sigmoid_cross_entropy(np.zeros(2, np.float32), np.zeros(2, np.float32))  # Numba's threading layer is set
    env = environment(torch=True)
    headers = ["shape", "pos_weight", "PyTorch forward", "kernel forward", "speed-up", "PyTorch fwd+grad"]
    headers += ["kernel fwd+grad", "speed-up", "of `x.copy()`", "kernel fwd+grad, `out=`", "speed-up", "of `copyto`"]
    table = Table("", headers, [], numeric=[False, False] + [True] * 10)
    for row in rows:
        table.rows.append(
            [
                row["shape"],
                row["pos_weight"],
                f"{row['torch_forward_ms']:.1f}",
                f"{row['forward_ms']:.1f}",
                f"{row['forward_speedup']:.1f}×",
                f"{row['torch_forward_grad_ms']:.1f}",
                f"{row['forward_grad_ms']:.1f}",
                f"{row['forward_grad_speedup']:.1f}×",
                f"{row['forward_grad_of_copy_new']:.0%}",
                f"{row['forward_grad_out_ms']:.1f}",
                f"{row['forward_grad_out_speedup']:.1f}×",
                f"{row['forward_grad_out_of_copy_into']:.0%}",
            ]
        )
    lines = [
        "# Sigmoid cross-entropy benchmark",
        "",
        f"NumPy {env['numpy']}, PyTorch {env['torch']} ({env['torch_threads']} threads), Numba "
        f"{env['numba']} ({env['numba_threads']} threads, {env['numba_threading_layer']} layer); float32, "
        f"median of {args.repeat} after a warm-up, milliseconds. `benchmarks/sigmoid_cross_entropy.py`.",
        "",
        "Forward + gradient into a new array and into a reused buffer (`out=`), each also as a fraction of "
        "NumPy's copy bandwidth on the same logits: against `x.copy()` (a new array, fresh pages) and "
        "`np.copyto(buffer, x)` respectively, counting the logits and targets read and the gradient written "
        "(three arrays, where a copy moves two).",
        "",
        render_markdown(table),
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "sigmoid_cross_entropy.md").write_text(text)
    with open(args.out / "sigmoid_cross_entropy.csv", "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


if __name__ == "__main__":
    main()
