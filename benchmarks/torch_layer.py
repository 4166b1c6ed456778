"""The PyTorch layer on this machine's CPU: ``crossentropy.torch`` against PyTorch, time and peak memory.

1. ``linear_cross_entropy`` at N=4096 tokens, hidden 512, vocabulary 65536, float32, forward +
   backward (gradients of the hidden states and the weight), against the unfused
   ``F.cross_entropy(x @ W.T, y)`` and PyTorch's own chunked ``F.linear_cross_entropy`` (with
   ``LinearCrossEntropyOptions()``, its chunking on); and, as the floor that no linear
   cross-entropy can beat, the three matrix products it cannot avoid at the full N×V×H size
   (forward ``x @ W.T``, backward ``g @ W`` and ``gᵀ @ x``: three ``torch.mm(..., out=...)`` on
   preallocated float32 tensors), each method's time as a multiple of their sum.
2. ``crossentropy.torch.cross_entropy`` against ``F.cross_entropy`` on 4096×32000 float32 logits,
   forward and forward + backward.

Each method runs in a fresh process (so that one's memory does not hide another's): two warm-up
calls, then ``--repeat`` timed calls; the peak resident memory of each call is read from
``/proc/self/status`` (VmHWM, reset before the call through ``/proc/self/clear_refs``) above the
resident memory just before it. Medians are reported. Results go to
``results/torch_layer.md`` and ``.csv`` next to this script.

    .venv/bin/python benchmarks/torch_layer.py                # about four minutes
    .venv/bin/python benchmarks/torch_layer.py --only linear  # the linear section alone (about three)

``--only`` measures one section and rewrites only that section of ``torch_layer.md`` and its rows
of ``torch_layer.csv``; the other section's text and rows stay as they were (each section says
when it was measured).
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

from crossentropy._tools.memory import worker_env
from crossentropy._tools.progress import step_progress
from crossentropy._tools.tables import Table, render_markdown
from crossentropy._tools.timing import median

RESULTS = Path(__file__).resolve().parent / "results"

WORKER = textwrap.dedent(
    """
    import gc, json, os, sys, time
    import torch
    import torch.nn.functional as F
    import crossentropy.torch as cet

    from crossentropy._tools.memory import proc_status_bytes as status, reset_peak_rss as reset_peak

    method, repeat = sys.argv[1], int(sys.argv[2])
    torch.manual_seed(0)
    products = {}  # the floor's products (linear methods only)
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
        # The floor: the three products of the forward and backward at the full size, on preallocated
        # float32 tensors (what is left when the softmax and the memory traffic cost nothing), timed
        # right after each timed call in this process, so that both see the same load.
        g = torch.randn(n, v)
        out_logits, out_x, out_w = torch.empty(n, v), torch.empty(n, h), torch.empty(v, h)
        xd, wd = x.detach(), w.detach()
        products = {
            "forward x @ W.T": lambda: torch.mm(xd, wd.T, out=out_logits),
            "backward g @ W": lambda: torch.mm(g, wd, out=out_x),
            "backward g.T @ x": lambda: torch.mm(g.T, xd, out=out_w),
        }
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

    def floor():
        parts = {}
        for name, product in products.items():
            start = time.perf_counter()
            product()
            parts[name] = time.perf_counter() - start
        return parts

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
    floor()
    times, peaks, loss, floors = [], [], None, []
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
        if products:
            floors.append(floor())
    print(json.dumps({"method": method, "times_s": times, "peaks_bytes": peaks, "loss": loss, "floors_s": floors,
                      "threads": torch.get_num_threads()}))
    """
)

LINEAR = ("linear eager", "linear torch chunked", "linear crossentropy")
SOFTMAX = ("torch forward", "crossentropy forward", "torch forward+backward", "crossentropy forward+backward")
SECTIONS = {"linear": LINEAR, "softmax": SOFTMAX}
HEADINGS = {"linear": "## linear_cross_entropy", "softmax": "## cross_entropy"}
CSV_FIELDS = ["method", "median_s", "times_s", "peak_gb", "loss", "threads"]


def run_worker(worker: str, method: str, repeat: int) -> dict:
    """Run ``worker`` (a script printing a JSON line with ``times_s`` and ``peaks_bytes``) for ``method`` in a
    fresh process; its result with ``median_s`` and ``peak_gb`` added."""
    process = subprocess.run(
        [sys.executable, "-c", worker, method, str(repeat)],
        capture_output=True,
        text=True,
        check=False,
        env=worker_env(),  # glibc's mmap threshold frozen: every large block gets fresh pages
    )
    if process.returncode != 0:
        raise SystemExit(f"{method}: the worker failed: {process.stderr.strip().splitlines()[-1]}")
    result = json.loads(process.stdout.strip().splitlines()[-1])
    result["median_s"] = median(result["times_s"])
    result["peak_gb"] = max(result["peaks_bytes"]) / 1e9
    return result


def measure(method: str, repeat: int) -> dict:
    """One method in a fresh process, with its floor's medians where it has one."""
    result = run_worker(WORKER, method, repeat)
    if result["floors_s"]:  # each timed call against the floor measured right after it, in the same process
        sums = [sum(parts.values()) for parts in result["floors_s"]]
        result["floor_median_s"] = median(sums)
        result["times_floor"] = median(t / f for t, f in zip(result["times_s"], sums, strict=True))
    return result


def measured_line(repeat: int, threads: int, command: str) -> str:
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"Measured {when} (`{command}`): fresh process per method, {threads} PyTorch threads, median of {repeat} "
        "calls after two warm-up calls; peak = resident memory high-water mark during the call above the memory "
        "before it."
    )


def linear_section(results: dict, repeat: int, command: str) -> list[str]:
    eager, ours = results["linear eager"], results["linear crossentropy"]
    lines = [
        "## linear_cross_entropy: N=4096, hidden 512, vocabulary 65536, float32, forward + backward",
        "",
        measured_line(repeat, eager["threads"], command),
        "",
    ]
    table = Table("", ["method", "seconds", "vs eager", "floor s", "× floor", "peak GB", "loss"], [])
    for method in LINEAR:
        r = results[method]
        table.rows.append(
            [
                method.removeprefix("linear "),
                f"{r['median_s']:.2f}",
                f"{eager['median_s'] / r['median_s']:.2f}×",
                f"{r['floor_median_s']:.2f}",
                f"{r['times_floor']:.2f}×",
                f"{r['peak_gb']:.3f}",
                f"{r['loss']:.6f}",
            ]
        )
    products = Table("", ["product", "ms"], [])
    for name in ours["floors_s"][0]:
        products.rows.append([name, f"{median(f[name] for f in ours['floors_s']) * 1e3:.0f}"])
    products.rows.append(["the three together", f"{ours['floor_median_s'] * 1e3:.0f}"])
    lines += [
        render_markdown(table),
        "",
        "eager: `F.cross_entropy(x @ W.T, y)`; torch chunked: `F.linear_cross_entropy(x, W, y, "
        "options=LinearCrossEntropyOptions())`; crossentropy: `crossentropy.torch.linear_cross_entropy(x, W, y)`.",
        "",
        "The floor: the three matrix products no linear cross-entropy can avoid, each at the full N×V×H size in "
        "float32 on preallocated tensors: forward `x @ W.T`, backward `g @ W` and `gᵀ @ x`, three "
        "`torch.mm(..., out=...)`. Each method's process times them right after each of its timed calls, so that "
        "a call and its floor see the same load from other processes: *floor s* is the median of the three "
        "together in that process, *× floor* the median over the calls of the call's time over the floor's "
        "right after it (1× would mean the softmax, the chunking and the memory traffic cost nothing). The "
        "products in ours' process (median ms):",
        "",
        render_markdown(products),
        "",
        f"Ours takes **{ours['times_floor']:.2f}×** the floor ({ours['median_s']:.2f} s; the floor "
        f"{ours['floor_median_s']:.2f} s).",
        "",
    ]
    return lines


def softmax_section(results: dict, repeat: int, command: str) -> list[str]:
    lines = [
        "## cross_entropy: 4096×32000 float32 logits",
        "",
        measured_line(repeat, results[SOFTMAX[0]]["threads"], command),
        "",
    ]
    headers = ["pass", "F.cross_entropy ms", "crossentropy.torch ms", "speed-up", "peak GB (torch / ours)"]
    table = Table("", headers, [])
    for pass_name in ("forward", "forward+backward"):
        theirs, ours = results[f"torch {pass_name}"], results[f"crossentropy {pass_name}"]
        table.rows.append(
            [
                pass_name,
                f"{theirs['median_s'] * 1e3:.1f}",
                f"{ours['median_s'] * 1e3:.1f}",
                f"{theirs['median_s'] / ours['median_s']:.1f}×",
                f"{theirs['peak_gb']:.3f} / {ours['peak_gb']:.3f}",
            ]
        )
    return [*lines, render_markdown(table), ""]


def old_sections(path: Path) -> dict[str, str]:
    """The sections of an existing torch_layer.md, by key (the text from its heading to the next)."""
    if not path.exists():
        return {}
    parts = re.split(r"(?m)^(?=## )", path.read_text())
    return {key: part for part in parts[1:] for key, heading in HEADINGS.items() if part.startswith(heading)}


def csv_rows(results: dict) -> list[dict]:
    rows = []
    for method, r in results.items():
        times = ";".join(f"{t:.4f}" for t in r["times_s"])
        values = [method, f"{r['median_s']:.4f}", times, f"{r['peak_gb']:.4f}", r["loss"], r["threads"]]
        rows.append(dict(zip(CSV_FIELDS, values, strict=True)))
        if r["floors_s"]:  # the floor in this method's process, after each timed call: the sum, then each product
            sums = [sum(parts.values()) for parts in r["floors_s"]]
            series = {"floor": sums, **{name: [f[name] for f in r["floors_s"]] for name in r["floors_s"][0]}}
            for name, part in series.items():
                values = [f"{method} | {name}", f"{median(part):.4f}", ";".join(f"{t:.4f}" for t in part)]
                rows.append(dict(zip(CSV_FIELDS, [*values, "", "", r["threads"]], strict=True)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="timed calls per method (default 5)")
    parser.add_argument(
        "--only", choices=tuple(SECTIONS), help="measure this section alone and rewrite only its part of the results"
    )
    args = parser.parse_args()
    command = "benchmarks/torch_layer.py" + "".join(f" {a}" for a in sys.argv[1:])
    keys = (args.only,) if args.only else tuple(SECTIONS)
    methods = [method for key in keys for method in SECTIONS[key]]
    results = {}
    with step_progress(len(methods), prefix="torch_layer") as progress:
        for method in methods:
            progress.step(f"{method}: a fresh process, {args.repeat} timed calls")
            results[method] = measure(method, args.repeat)
    md_path, csv_path = RESULTS / "torch_layer.md", RESULTS / "torch_layer.csv"
    sections = old_sections(md_path) if args.only else {}
    if "linear" in keys:
        sections["linear"] = "\n".join(linear_section(results, args.repeat, command)) + "\n"
    if "softmax" in keys:
        sections["softmax"] = "\n".join(softmax_section(results, args.repeat, command)) + "\n"
    lines = [
        "# The PyTorch layer against PyTorch",
        "",
        "`benchmarks/torch_layer.py` on this machine's CPU; each section says when and how it was measured.",
        "",
    ]
    text = "\n".join(lines) + "\n" + "".join(sections[key] for key in SECTIONS if key in sections)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    rows = csv_rows(results)
    if args.only and csv_path.exists():  # the other section's rows, as they were
        with open(csv_path, newline="") as stream:
            kept = [
                row
                for row in csv.DictReader(stream)
                if not any(row["method"].split(" | ")[0] == m for m in SECTIONS[args.only])
            ]
        rows = (
            [row for row in kept if row["method"].split(" | ")[0] in SECTIONS["linear"]]
            + rows
            + [row for row in kept if row["method"].split(" | ")[0] not in SECTIONS["linear"]]
        )
    md_path.write_text(text)
    with open(csv_path, "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=CSV_FIELDS)
        writer.writeheader()
        writer.writerows(rows)


if __name__ == "__main__":
    main()
