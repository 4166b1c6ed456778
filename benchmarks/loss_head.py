"""The loss statistics' cost on the fused CPU path (issue 18 §3: at most 5% over the loss alone).

Times ``crossentropy.softmax_cross_entropy_with_grad`` (the fused step: loss and gradient) and the
forward-only ``softmax_cross_entropy`` on the Numba kernels, with and without
``return_stats=True``, in one process, interleaved, and reports medians and their ratio.

    python benchmarks/loss_head.py [--rows 2048] [--classes 32768] [--repeats 15]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np

import crossentropy as ce
from crossentropy import kernels


def _time(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2048)
    parser.add_argument("--classes", type=int, default=32768)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "loss_head.md")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.rows, args.classes), dtype=np.float32)
    y = rng.integers(0, args.classes, args.rows)
    y[rng.random(args.rows) < 0.1] = -100
    buffer = np.empty_like(x)
    cases = {
        "loss + gradient": lambda: ce.softmax_cross_entropy_with_grad(x, y, out=buffer),
        "loss + gradient + stats": lambda: ce.softmax_cross_entropy_with_grad(x, y, out=buffer, return_stats=True),
        "loss (forward only)": lambda: ce.softmax_cross_entropy(x, y),
        "loss + stats (forward only)": lambda: ce.softmax_cross_entropy(x, y, return_stats=True),
    }
    times = {name: [] for name in cases}
    with kernels.backend("numba"):
        for function in cases.values():  # compile and warm
            function()
            function()
        for _ in range(args.repeats):
            for name, function in cases.items():
                times[name].append(_time(function))
    medians = {name: statistics.median(values) for name, values in times.items()}
    gigabytes = x.nbytes / 1e9
    lines = [
        "# Loss statistics on the fused CPU path (Numba)",
        "",
        f"`python benchmarks/loss_head.py --rows {args.rows} --classes {args.classes} --repeats {args.repeats}`: "
        f"float32 logits {args.rows} x {args.classes} ({gigabytes:.2f} GB), 10% of targets ignored, "
        f"{platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f} at the end; medians of "
        f"{args.repeats} interleaved runs in one process.",
        "",
        "| call | median (ms) | min (ms) | ratio to the loss alone |",
        "|---|---|---|---|",
    ]
    for name, value in medians.items():
        base = medians["loss + gradient"] if "gradient" in name else medians["loss (forward only)"]
        lines.append(f"| {name} | {value * 1e3:.1f} | {min(times[name]) * 1e3:.1f} | {value / base:.3f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    args.output.write_text(text)


if __name__ == "__main__":
    main()
