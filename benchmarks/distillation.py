"""``linear_distillation_loss`` against eager PyTorch on this machine's CPU: time and peak memory.

N=4096 tokens, hidden 512 (student and teacher), vocabulary 65536, float32, forward + backward
(gradients of the student's hidden states and projection; the teacher is frozen):

- eager: ``F.kl_div(F.log_softmax(x @ W.T), F.log_softmax(x_t @ W_t.T), log_target=True,
  reduction="batchmean")``, two materialized N×V logits (1 GiB each) and their log-softmaxes;
- crossentropy: ``crossentropy.torch.linear_distillation_loss(x, W, x_t, teacher_linear_weight=W_t)``
  (the same forward KL, mean over the tokens), in chunks of rows;
- crossentropy jsd: the same with ``divergence="jsd"`` (for its cost; no eager counterpart here).

Each method runs in a fresh process (two warm-up calls, then ``--repeat`` timed calls), ``--rounds``
times, the methods interleaved (so that a change of load on this shared machine falls on all); the peak
resident memory of each call is read from ``/proc/self/status`` (VmHWM, reset through
``/proc/self/clear_refs``) above the resident memory just before it, as ``torch_layer.py`` does
(its ``measured_line`` is reused). Medians are reported, with the load average before and after.
Results go to ``results/distillation.md`` and ``.csv``.

    .venv/bin/python benchmarks/distillation.py             # about six minutes on 2 cores
"""

from __future__ import annotations

import argparse
import csv
import sys
import textwrap
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from torch_layer import RESULTS, measured_line, run_worker

from crossentropy._tools.environment import environment, load_average
from crossentropy._tools.progress import step_progress
from crossentropy._tools.tables import Table, render_markdown
from crossentropy._tools.timing import median

WORKER = textwrap.dedent(
    """
    import gc, json, sys, time
    import torch
    import torch.nn.functional as F
    import crossentropy.torch as cet

    from crossentropy._tools.memory import proc_status_bytes as status, reset_peak_rss as reset_peak

    method, repeat = sys.argv[1], int(sys.argv[2])
    torch.manual_seed(0)
    n, h, v = 4096, 512, 65536
    x = torch.randn(n, h).requires_grad_()
    w = (torch.randn(v, h) * 0.02).requires_grad_()
    xt, wt = torch.randn(n, h), torch.randn(v, h) * 0.02
    calls = {
        "eager": lambda: F.kl_div(
            F.log_softmax(x @ w.T, dim=-1), F.log_softmax(xt @ wt.T, dim=-1), log_target=True, reduction="batchmean"
        ),
        "crossentropy": lambda: cet.linear_distillation_loss(x, w, xt, teacher_linear_weight=wt),
        "crossentropy jsd": lambda: cet.linear_distillation_loss(x, w, xt, teacher_linear_weight=wt, divergence="jsd"),
    }
    call = calls[method]

    def run():
        x.grad = w.grad = None
        loss = call()
        loss.backward()
        return loss.item()

    run()
    run()
    times, peaks, loss = [], [], None
    for _ in range(repeat):
        x.grad = w.grad = None
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

METHODS = ("eager", "crossentropy", "crossentropy jsd")
CSV_FIELDS = ["method", "median_s", "times_s", "peak_gb", "loss", "threads"]


def _load(load: tuple[float, float, float] | None) -> str:
    return "n/a" if load is None else ", ".join(f"{x:.2f}" for x in load)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2, help="timed calls per process (default 2)")
    parser.add_argument("--rounds", type=int, default=2, help="processes per method, interleaved (default 2)")
    args = parser.parse_args()
    command = "benchmarks/distillation.py" + "".join(f" {a}" for a in sys.argv[1:])
    load_before = load_average()
    # Rounds of one process per method, interleaved, so that a change of the machine's load (it is shared)
    # falls on every method alike; the median is over every timed call of every round, the peak their maximum.
    rounds: list[dict] = []
    with step_progress(args.rounds * len(METHODS), prefix="distillation") as progress:
        for round_ in range(args.rounds):
            rounds.append({})
            for method in METHODS:
                progress.step(f"round {round_ + 1}/{args.rounds}: {method}, {args.repeat} timed calls")
                rounds[-1][method] = run_worker(WORKER, method, args.repeat)
    results = {}
    for method in METHODS:
        runs = [r[method] for r in rounds]
        times = [t for run in runs for t in run["times_s"]]
        results[method] = {
            **runs[-1],
            "times_s": times,
            "median_s": median(times),
            "peak_gb": max(run["peak_gb"] for run in runs),
        }
    load_after = load_average()
    eager = results["eager"]
    table = Table("", ["method", "seconds", "eager / method", "peak GB", "peak / eager's", "loss"], [])
    for method in METHODS:
        r = results[method]
        table.rows.append(
            [
                method,
                f"{r['median_s']:.2f}",
                f"{eager['median_s'] / r['median_s']:.2f}×",
                f"{r['peak_gb']:.3f}",
                f"{r['peak_gb'] / eager['peak_gb']:.3f}",
                f"{r['loss']:.6f}",
            ]
        )
    lines = [
        "# linear_distillation_loss against eager PyTorch",
        "",
        "N=4096 tokens, hidden 512 (student and teacher), vocabulary 65536, float32, forward + backward "
        "(gradients of the student's hidden states and projection; the teacher frozen).",
        "",
        measured_line(args.repeat * args.rounds, eager["threads"], command)
        + f" ({args.rounds} rounds of one process per method, interleaved, {args.repeat} timed calls each).",
        f"Load average (1, 5, 15 min) before: {_load(load_before)}; after: {_load(load_after)} "
        f"({environment(numba=False)['cpu_count']} cores; the machine is shared).",
        "",
        render_markdown(table),
        "",
        "eager: `F.kl_div(F.log_softmax(x @ W.T, -1), F.log_softmax(x_t @ W_t.T, -1), log_target=True, "
        'reduction="batchmean")`; crossentropy: `crossentropy.torch.linear_distillation_loss(x, W, x_t, '
        "teacher_linear_weight=W_t)` (the same forward KL; default chunks of 128 rows); crossentropy jsd: the same "
        'with `divergence="jsd"`. Times and ratios come from one run, one method after the other.',
        "",
    ]
    text = "\n".join(lines)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "distillation.md").write_text(text)
    with open(RESULTS / "distillation.csv", "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for method, r in results.items():
            times = ";".join(f"{t:.4f}" for t in r["times_s"])
            values = [method, f"{r['median_s']:.4f}", times, f"{r['peak_gb']:.4f}", r["loss"], r["threads"]]
            writer.writerow(dict(zip(CSV_FIELDS, values, strict=True)))


if __name__ == "__main__":
    main()
