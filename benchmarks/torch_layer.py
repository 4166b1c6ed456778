"""The PyTorch layer on this machine's CPU: ``crossentropy.torch`` against PyTorch, time and peak memory.

1. ``linear_cross_entropy`` at N=4096 tokens, hidden 512, vocabulary 65536, float32, forward +
   backward (gradients of the hidden states and the weight), against the unfused
   ``F.cross_entropy(x @ W.T, y)`` and PyTorch's own chunked ``F.linear_cross_entropy`` (with
   ``LinearCrossEntropyOptions()``, its chunking on).
2. ``crossentropy.torch.cross_entropy`` against ``F.cross_entropy`` on 4096×32000 float32 logits,
   forward and forward + backward.

Each method runs in a fresh process (so that one's memory does not hide another's): two warm-up
calls, then ``--repeat`` timed calls; the peak resident memory of each call is read from
``/proc/self/status`` (VmHWM, reset before the call through ``/proc/self/clear_refs``) above the
resident memory just before it. Medians are reported. Results go to
``results/torch_layer.md`` and ``.csv`` next to this script.

    .venv/bin/python benchmarks/torch_layer.py            # about four minutes
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import textwrap
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"

WORKER = textwrap.dedent(
    """
    import gc, json, os, sys, time
    import torch
    import torch.nn.functional as F
    import crossentropy.torch as cet

    def status(key):
        with open("/proc/self/status") as lines:
            for line in lines:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
        raise OSError(key)

    def reset_peak():
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")

    method, repeat = sys.argv[1], int(sys.argv[2])
    torch.manual_seed(0)
    if method.startswith("linear"):
        n, h, v = 4096, 512, 65536
        x = torch.randn(n, h).requires_grad_()
        w = (torch.randn(v, h) * 0.02).requires_grad_()
        y = torch.randint(0, v, (n,))
        calls = {
            "linear eager": lambda: F.cross_entropy(x @ w.T, y),
            "linear torch chunked": lambda: F.linear_cross_entropy(
                x, w, y, options=torch.nn.LinearCrossEntropyOptions()
            ),
            "linear crossentropy": lambda: cet.linear_cross_entropy(x, w, y),
        }
        leaves = (x, w)
        backward = True
    else:
        logits = torch.randn(4096, 32000)
        y = torch.randint(0, 32000, (4096,))
        function = F.cross_entropy if "torch" in method else cet.cross_entropy
        backward = method.endswith("backward")
        if backward:
            leaf = logits.requires_grad_()
            leaves = (leaf,)
            calls = {method: lambda: function(leaf, y)}
        else:
            leaves = ()
            calls = {method: lambda: function(logits, y)}
    call = calls[method]

    def run():
        for leaf in leaves:
            leaf.grad = None
        if backward:
            loss = call()
            loss.backward()
        else:
            with torch.no_grad():
                loss = call()
        return loss.item()

    # Warm-up: compilation, thread pools, and the first large allocations of a fresh process, which
    # here pay for the kernel's page zeroing and huge-page compaction (hundreds of milliseconds).
    run()
    run()
    times, peaks, loss = [], [], None
    for _ in range(repeat):
        for leaf in leaves:
            leaf.grad = None
        gc.collect()
        reset_peak()
        before = status("VmRSS")
        start = time.perf_counter()
        loss = run()
        times.append(time.perf_counter() - start)
        peaks.append(status("VmHWM") - before)
    print(json.dumps({"method": method, "times_s": times, "peaks_bytes": peaks, "loss": loss,
                      "threads": torch.get_num_threads()}))
    """
)

LINEAR = ("linear eager", "linear torch chunked", "linear crossentropy")
SOFTMAX = ("torch forward", "crossentropy forward", "torch forward+backward", "crossentropy forward+backward")


def measure(method: str, repeat: int) -> dict:
    process = subprocess.run(
        [sys.executable, "-c", WORKER, method, str(repeat)],
        capture_output=True,
        text=True,
        check=False,
        # glibc raises its mmap threshold as large blocks are freed, after which a call can reuse
        # pages the process already holds, unseen by the peak; fixing it at its default keeps every
        # large block fresh.
        env={**os.environ, "MALLOC_MMAP_THRESHOLD_": str(128 * 1024)},
    )
    if process.returncode != 0:
        raise SystemExit(f"{method}: the worker failed: {process.stderr.strip().splitlines()[-1]}")
    result = json.loads(process.stdout.strip().splitlines()[-1])
    result["median_s"] = statistics.median(result["times_s"])
    result["peak_gb"] = max(result["peaks_bytes"]) / 1e9
    print(f"  {method}: {result['median_s'] * 1e3:.1f} ms, peak {result['peak_gb']:.3f} GB", file=sys.stderr)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="timed calls per method (default 5)")
    args = parser.parse_args()
    results = {method: measure(method, args.repeat) for method in (*LINEAR, *SOFTMAX)}
    eager = results["linear eager"]
    lines = [
        "# The PyTorch layer against PyTorch",
        "",
        f"Fresh process per method, {results[LINEAR[0]]['threads']} PyTorch threads, median of {args.repeat} calls "
        "after two warm-up calls; peak = resident memory high-water mark during the call above the memory before it. "
        "`benchmarks/torch_layer.py`.",
        "",
        "## linear_cross_entropy: N=4096, hidden 512, vocabulary 65536, float32, forward + backward",
        "",
        "| method | seconds | vs eager | peak GB | loss |",
        "|---|---:|---:|---:|---:|",
    ]
    for method in LINEAR:
        r = results[method]
        lines.append(
            f"| {method.removeprefix('linear ')} | {r['median_s']:.2f} | {eager['median_s'] / r['median_s']:.2f}× | "
            f"{r['peak_gb']:.3f} | {r['loss']:.6f} |"
        )
    lines += [
        "",
        "eager: `F.cross_entropy(x @ W.T, y)`; torch chunked: `F.linear_cross_entropy(x, W, y, "
        "options=LinearCrossEntropyOptions())`; crossentropy: `crossentropy.torch.linear_cross_entropy(x, W, y)`.",
        "",
        "## cross_entropy: 4096×32000 float32 logits",
        "",
        "| pass | F.cross_entropy ms | crossentropy.torch ms | speed-up | peak GB (torch / ours) |",
        "|---|---:|---:|---:|---:|",
    ]
    for pass_name in ("forward", "forward+backward"):
        theirs, ours = results[f"torch {pass_name}"], results[f"crossentropy {pass_name}"]
        lines.append(
            f"| {pass_name} | {theirs['median_s'] * 1e3:.1f} | {ours['median_s'] * 1e3:.1f} | "
            f"{theirs['median_s'] / ours['median_s']:.1f}× | {theirs['peak_gb']:.3f} / {ours['peak_gb']:.3f} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "torch_layer.md").write_text(text)
    with open(RESULTS / "torch_layer.csv", "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["method", "median_s", "times_s", "peak_gb", "loss", "threads"])
        for method, r in results.items():
            times = ";".join(f"{t:.4f}" for t in r["times_s"])
            writer.writerow([method, f"{r['median_s']:.4f}", times, f"{r['peak_gb']:.4f}", r["loss"], r["threads"]])


if __name__ == "__main__":
    main()
