"""The loss statistics' cost on the fused CPU path (issue 18 §3: at most 5% over the loss alone).

Times ``crossentropy.softmax_cross_entropy_with_grad`` (the fused step: loss and gradient) and the
forward-only ``softmax_cross_entropy`` on the Numba kernels, with and without
``return_stats=True``, and the linear loss ``crossentropy.torch.linear_cross_entropy`` (forward
and backward, chunked engine on the CPU; ``--hidden`` wide) likewise, with the garbage collector
off. Each repeat runs the pair in the order A B B A, so that a drift of the machine's speed falls
on both; a process's ratio is the median of its repeats' own ratios, which a slow moment shared by
the pair does not move.

A process's ratio still carries a bias of its own on this machine (where its arrays landed in
memory; forward-only ratios below 1 show it, since the statistics cannot make a call faster), so
the kernels' pairs run in ``--processes`` fresh processes and the table gives the median of their
ratios and the lowest and highest. The linear loss, whose ratio is 1 within that bias and whose
calls take seconds, runs once, in this process.

    python benchmarks/loss_head.py [--rows 2048] [--classes 32768] [--repeats 21] [--processes 9]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numba
import numpy as np
import torch

import crossentropy as ce
import crossentropy.torch as cet
from crossentropy import kernels
from crossentropy._tools.environment import load_average, machine_text
from crossentropy._tools.progress import step_progress
from crossentropy._tools.tables import Table, render_markdown
from crossentropy._tools.timing import median, run_process, time_interleaved


def _data(rows: int, classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Logits, targets (10% ignored) and the same targets set to each row's arg-max (accuracy 1: the
    accuracy's search of the row then runs in every row, where with random targets it almost never does)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((rows, classes), dtype=np.float32)
    y = rng.integers(0, classes, rows)
    y[rng.random(rows) < 0.1] = -100
    return x, y, np.where(y == -100, -100, np.argmax(x, axis=1))


def _thread_counts() -> list[int]:
    """All threads (how the library runs), then one (the arithmetic's own cost without the other core's noise)."""
    return sorted({numba.get_num_threads(), 1}, reverse=True)


def _label(name: str, threads: int) -> str:
    return f"{name}, {threads} thread{'s' if threads > 1 else ''}"


def _time_pairs(pairs: dict, repeats: int) -> dict[str, tuple[list[float], list[float]]]:
    """Each pair's ``(alone, with stats)`` seconds per repeat, on every thread count, by label."""
    for alone, with_stats in pairs.values():  # compile and warm
        for function in (alone, with_stats, alone, with_stats):
            function()
    all_threads, torch_threads = numba.get_num_threads(), torch.get_num_threads()
    times = {}
    try:
        for threads in _thread_counts():
            numba.set_num_threads(threads)
            torch.set_num_threads(min(threads, torch_threads))
            for name, (alone, with_stats) in pairs.items():
                pair = time_interleaved({"alone": alone, "stats": with_stats}, repeat=repeats, warmup=0, mirrored=True)
                times[_label(name, threads)] = (pair["alone"], pair["stats"])
    finally:
        numba.set_num_threads(all_threads)
        torch.set_num_threads(torch_threads)
    return times


def _kernel_pairs(rows: int, classes: int) -> dict:
    x, y, y_max = _data(rows, classes)
    buffer = np.empty_like(x)
    return {
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


def _linear_pair(rows: int, classes: int, hidden_size: int) -> dict:
    _, y, _ = _data(rows, classes)
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(rows, hidden_size, generator=generator, requires_grad=True)
    head = (torch.randn(classes, hidden_size, generator=generator) / hidden_size**0.5).requires_grad_()
    tokens = torch.from_numpy(y)

    def step(return_stats: bool) -> None:
        hidden.grad = head.grad = None
        loss = cet.linear_cross_entropy(hidden, head, tokens, return_stats=return_stats)
        (loss[0] if return_stats else loss).backward()

    return {"linear loss, forward + backward": (lambda: step(False), lambda: step(True))}


def _summary(alone: list[float], with_stats: list[float]) -> dict[str, float]:
    """One process's medians (seconds) and the median of its repeats' ratios."""
    ratios = [b / a for a, b in zip(alone, with_stats, strict=True)]
    return {"alone": median(alone), "stats": median(with_stats), "ratio": median(ratios)}


def _child(args: argparse.Namespace) -> None:
    """One process's kernel pairs; its summaries as one JSON line on stdout."""
    with kernels.backend("numba"):
        times = _time_pairs(_kernel_pairs(args.rows, args.classes), args.repeats)
    print(json.dumps({label: _summary(*pair) for label, pair in times.items()}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2048)
    parser.add_argument("--classes", type=int, default=32768)
    parser.add_argument("--hidden", type=int, default=512, help="the linear loss's hidden size")
    parser.add_argument("--repeats", type=int, default=21, help="A B B A rounds per pair and process")
    parser.add_argument("--processes", type=int, default=9, help="fresh processes timing the kernels' pairs")
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "loss_head.md")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args)
        return

    command = [sys.executable, __file__, "--child", "--rows", str(args.rows), "--classes", str(args.classes),
               "--repeats", str(args.repeats)]  # fmt: skip
    per_process: list[dict[str, dict[str, float]]] = []
    with step_progress(args.processes + 1, prefix="loss_head") as progress:
        for k in range(args.processes):
            progress.step(f"kernels, process {k + 1} of {args.processes}")
            run = run_process(command)
            if run.returncode != 0:
                raise SystemExit(f"the timing process failed ({run.returncode}):\n{run.stderr}")
            per_process.append(json.loads(run.last_line()))
        progress.step("the linear loss, in this process")
        linear = _time_pairs(_linear_pair(args.rows, args.classes, args.hidden), args.repeats)

    headers = ["call", "loss alone, median (ms)", "with stats, median (ms)", "ratio: median", "lowest - highest"]
    table = Table("", headers, [])
    for label in per_process[0]:
        summaries = [process[label] for process in per_process]
        ratios = [s["ratio"] for s in summaries]
        table.rows.append(
            [
                label,
                f"{median(s['alone'] for s in summaries) * 1e3:.1f}",
                f"{median(s['stats'] for s in summaries) * 1e3:.1f}",
                f"{median(ratios):.3f}",
                f"{min(ratios):.3f} - {max(ratios):.3f}",
            ]
        )
    for label, pair in linear.items():
        summary = _summary(*pair)
        ratios = sorted(b / a for a, b in zip(*pair, strict=True))
        low, _, high = statistics.quantiles(ratios, n=4)
        table.rows.append(
            [
                f"{label} (one process; quartiles of its repeats)",
                f"{summary['alone'] * 1e3:.1f}",
                f"{summary['stats'] * 1e3:.1f}",
                f"{summary['ratio']:.3f}",
                f"{low:.3f} - {high:.3f}",
            ]
        )
    gigabytes = args.rows * args.classes * 4 / 1e9
    lines = [
        "# Loss statistics on the fused CPU path (Numba)",
        "",
        f"`python benchmarks/loss_head.py --rows {args.rows} --classes {args.classes} --hidden {args.hidden} "
        f"--repeats {args.repeats} --processes {args.processes}`: float32 logits {args.rows} x {args.classes} "
        f"({gigabytes:.2f} GB), 10% of targets ignored (the linear loss: hidden states {args.rows} x "
        f"{args.hidden}, head {args.classes} x {args.hidden}, PyTorch {torch.__version__} on "
        f"{torch.get_num_threads()} threads), {machine_text()}, load "
        f"{(load_average() or (float('nan'),))[0]:.1f} at the end. Each kernel row: {args.processes} fresh "
        f"processes of {args.repeats} rounds A B B A each, garbage collector off; the ratio is each "
        "process's median of its rounds' ratios, and the table gives the median, lowest and highest "
        "of those over the processes.",
        "",
        render_markdown(table, align=False),
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    args.output.write_text(text)


if __name__ == "__main__":
    main()
