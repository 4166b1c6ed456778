"""The loss statistics' cost on the fused CPU path (issue 18 §3: at most 5% over the loss alone).

Times ``crossentropy.softmax_cross_entropy_with_grad`` (the fused step: loss and gradient) and the
forward-only ``softmax_cross_entropy`` on the Numba kernels, with and without
``return_stats=True``, and the linear loss ``crossentropy.torch.linear_cross_entropy`` (forward
and backward, chunked engine on the CPU; ``--hidden`` wide) likewise, in one process with the
garbage collector off. Each repeat runs the pair in
the order A B B A, so that a drift of the machine's speed falls on both; the ratio reported is
the median of the repeats' own ratios, which a slow moment shared by the pair does not move.

    python benchmarks/loss_head.py [--rows 2048] [--classes 32768] [--repeats 15]
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import numba
import numpy as np
import torch

import crossentropy as ce
import crossentropy.torch as cet
from crossentropy import kernels
from crossentropy._tools.environment import load_average, machine_text
from crossentropy._tools.tables import Table, render_markdown
from crossentropy._tools.timing import median, time_interleaved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2048)
    parser.add_argument("--classes", type=int, default=32768)
    parser.add_argument("--hidden", type=int, default=512, help="the linear loss's hidden size")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "loss_head.md")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.rows, args.classes), dtype=np.float32)
    y = rng.integers(0, args.classes, args.rows)
    y[rng.random(args.rows) < 0.1] = -100
    # Every kept target at its row's arg-max (accuracy 1): the accuracy's search of the row then runs
    # in every row, where with the random targets above it almost never does.
    y_max = np.where(y == -100, -100, np.argmax(x, axis=1))
    buffer = np.empty_like(x)
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(args.rows, args.hidden, generator=generator, requires_grad=True)
    head = (torch.randn(args.classes, args.hidden, generator=generator) / args.hidden**0.5).requires_grad_()
    tokens = torch.from_numpy(y)

    def linear_step(return_stats: bool) -> None:
        hidden.grad = head.grad = None
        loss = cet.linear_cross_entropy(hidden, head, tokens, return_stats=return_stats)
        (loss[0] if return_stats else loss).backward()

    pairs = {
        "linear loss, forward + backward": (lambda: linear_step(False), lambda: linear_step(True)),
        "loss + gradient": (
            lambda: ce.softmax_cross_entropy_with_grad(x, y, out=buffer),
            lambda: ce.softmax_cross_entropy_with_grad(x, y, out=buffer, return_stats=True),
        ),
        "loss + gradient, every target the arg-max": (
            lambda: ce.softmax_cross_entropy_with_grad(x, y_max, out=buffer),
            lambda: ce.softmax_cross_entropy_with_grad(x, y_max, out=buffer, return_stats=True),
        ),
        "loss (forward only)": (
            lambda: ce.softmax_cross_entropy(x, y),
            lambda: ce.softmax_cross_entropy(x, y, return_stats=True),
        ),
    }
    rows = []
    all_threads, torch_threads = numba.get_num_threads(), torch.get_num_threads()
    with kernels.backend("numba"):
        for alone, with_stats in pairs.values():  # compile and warm
            for function in (alone, with_stats, alone, with_stats):
                function()
        try:
            # All threads is how the library runs; one thread shows the arithmetic's own cost
            # without the other core's noise.
            for threads in sorted({all_threads, 1}, reverse=True):
                numba.set_num_threads(threads)
                torch.set_num_threads(min(threads, torch_threads))
                for name, (alone, with_stats) in pairs.items():
                    times = time_interleaved(
                        {"alone": alone, "stats": with_stats}, repeat=args.repeats, warmup=0, mirrored=True
                    )
                    rows.append(
                        (f"{name}, {threads} thread{'s' if threads > 1 else ''}", times["alone"], times["stats"])
                    )
        finally:
            numba.set_num_threads(all_threads)
            torch.set_num_threads(torch_threads)
    gigabytes = x.nbytes / 1e9
    lines = [
        "# Loss statistics on the fused CPU path (Numba)",
        "",
        f"`python benchmarks/loss_head.py --rows {args.rows} --classes {args.classes} --hidden {args.hidden} "
        f"--repeats {args.repeats}`: float32 logits {args.rows} x {args.classes} ({gigabytes:.2f} GB), 10% of "
        f"targets ignored (the linear loss: hidden states {args.rows} x {args.hidden}, head "
        f"{args.classes} x {args.hidden}, PyTorch {torch.__version__} on {torch.get_num_threads()} threads), "
        f"{machine_text()}, load {(load_average() or (float('nan'),))[0]:.1f} at the end; "
        f"{args.repeats} repeats of A B B A in one process, garbage collector off.",
        "",
    ]
    headers = ["call", "loss alone, median (ms)", "with stats, median (ms)", "median of the repeats' ratios"]
    table = Table("", [*headers, "quartiles of the ratios"], [])
    for name, plain_times, stats_times in rows:
        ratios = sorted(b / a for a, b in zip(plain_times, stats_times, strict=True))
        low, _, high = statistics.quantiles(ratios, n=4)
        table.rows.append(
            [
                name,
                f"{median(plain_times) * 1e3:.1f}",
                f"{median(stats_times) * 1e3:.1f}",
                f"{median(ratios):.3f}",
                f"{low:.3f} - {high:.3f}",
            ]
        )
    lines.append(render_markdown(table, align=False))
    text = "\n".join(lines) + "\n"
    print(text)
    args.output.write_text(text)


if __name__ == "__main__":
    main()
