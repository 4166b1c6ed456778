"""Numba's threading layer between kernel calls: is the machine free again when a kernel returns?

Each threading layer runs in processes of its own (the layer is fixed for a process at Numba's
first parallel launch), alternated over ``--rounds`` rounds so that load from other processes
falls on every layer alike. Each process measures:

- a PyTorch float32 matmul (and a NumPy one, on its BLAS) of three sizes, timed right after a
  softmax cross-entropy kernel call (256x4000 float32, forward and gradient) and right after
  another matmul with no kernel call in the 20 ms before it, the two alternating pair by pair:
  the fastest and the median of each, and their ratios;
- the CPU time the process spends in the 100 ms after a kernel call while its Python thread
  sleeps: the workers spinning;
- whether a ``multiprocessing`` fork child can compute a loss after the parent did;
- the kernel itself: 4096x32000 float32 forward and gradient, and a small 64x1000 forward;
- the other direction: ``crossentropy.torch.cross_entropy``'s forward pass on 4096x32000 float32
  logits right after a PyTorch operation (an elementwise product of 2^20 floats, which PyTorch
  spreads over its OpenMP threads), and with nothing in the 20 ms before it. PyTorch's own
  OpenMP threads spin for milliseconds after an operation, and take the cores of a kernel
  whose threads are not theirs.

Configurations: what crossentropy picks by default in a process with PyTorch (GNU OpenMP, on
PyTorch's own OpenMP runtime) and in one without (``workqueue``, or ``tbb`` if the ``tbb`` package
is installed); ``workqueue`` with PyTorch, to show why the default differs there; GNU OpenMP
without PyTorch (Numba's own default on Linux without TBB); and TBB when it can be loaded. A
process without PyTorch times NumPy's matmuls only. Writes
``results/threads_after_kernel.{md,csv}`` next to this script (``--out`` elsewhere).

    .venv/bin/python benchmarks/threads_after_kernel.py            # about six minutes
    .venv/bin/python benchmarks/threads_after_kernel.py --rounds 1 --repeat 2   # quicker, noisier

The timer (garbage collector off while timing), the medians, the environment record and load, the
tables and the progress lines are :mod:`crossentropy._tools`'. The script imports them inside its
functions: a child process must import PyTorch before crossentropy, as a program using both does.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
NO_TORCH_KEY = "THREADS_AFTER_KERNEL_WITHOUT_TORCH"
NAME = "threads_after_kernel"
# (label, environment) of each layer measured; tbb is added when a process can load it.
NO_TORCH = {NO_TORCH_KEY: "1"}  # the child never imports PyTorch
LAYERS = [
    ("crossentropy's default, with PyTorch", {}),
    ("crossentropy's default, without PyTorch", dict(NO_TORCH)),
    ("workqueue, with PyTorch", {"NUMBA_THREADING_LAYER": "workqueue"}),
    ("GNU OpenMP, without PyTorch", {"NUMBA_THREADING_LAYER": "omp", **NO_TORCH}),
]
TBB = ("TBB", {"NUMBA_THREADING_LAYER": "tbb"})
SIZES = {"512²": 512, "1024²": 1024, "2048²": 2048}  # ~1.5, ~15 and ~150 ms on two idle cores
# Per-process samples pooled across the processes of a layer.
KERNEL_METRICS = (
    "cpu_ms_after_kernel",
    "kernel_4096x32000_ms",
    "kernel_64x1000_us",
    "torch_layer_quiet_ms",
    "torch_layer_after_torch_op_ms",
)


def _child(repeat: int) -> dict:
    """Measure one layer in this process (its environment picks the layer); returns the numbers."""
    import multiprocessing

    import numba
    import numpy as np

    with_torch = os.environ.get(NO_TORCH_KEY) != "1"
    if with_torch:
        import torch

    import crossentropy as ce
    from crossentropy._tools.timing import gc_disabled, time_call

    rng = np.random.default_rng(0)
    step_x = rng.standard_normal((256, 4000), dtype=np.float32)
    step_y = rng.integers(0, 4000, 256)
    out: dict = {}

    def kernel() -> None:
        ce.softmax_cross_entropy_with_grad(step_x, step_y)

    matmuls = {}
    for size_name, n in SIZES.items():
        an, bn = (rng.standard_normal((n, n), dtype=np.float32) for _ in range(2))
        if with_torch:
            a, b = torch.from_numpy(an.copy()), torch.from_numpy(bn.copy())
            matmuls[f"PyTorch {size_name}"] = lambda a=a, b=b: torch.mm(a, b)
        matmuls[f"NumPy {size_name}"] = lambda a=an, b=bn: a @ b

    for function in matmuls.values():  # warm-up, before any kernel ran
        function()
    with gc_disabled():
        out["before_any_kernel_ms"] = {name: 1e3 * min(time_call(f) for _ in range(3)) for name, f in matmuls.items()}
    kernel()  # loads (or compiles) the kernel and starts Numba's threads
    out["layer"] = numba.threading_layer()
    out["numba_threads"] = numba.get_num_threads()
    out["torch_threads"] = torch.get_num_threads() if with_torch else None

    # Pair after pair, so that drift and load from other processes fall on both alike: a kernel
    # call and the matmul right after it; then 20 ms of sleep (past any spinning), one matmul to
    # wake the threads up as the kernel did, and one timed right after it, with no kernel before.
    for name, function in matmuls.items():
        reps = repeat if "2048" in name else 10 * repeat
        plain, after = [], []
        with gc_disabled():
            for _ in range(reps):
                kernel()
                after.append(1e3 * time_call(function))
                time.sleep(0.02)
                function()
                plain.append(1e3 * time_call(function))
        out.setdefault("none_ms", {})[name] = plain
        out.setdefault("after_ms", {})[name] = after

    pause = 0.05  # GNU OpenMP spins about 3 ms after a call: this is well past it
    spins = []
    for _ in range(10):
        time.sleep(pause)
        kernel()
        begin = time.process_time()  # all threads of the process; this one sleeps
        time.sleep(0.1)
        spins.append(1e3 * (time.process_time() - begin))
    out["cpu_ms_after_kernel"] = spins

    big_x = rng.standard_normal((4096, 32000), dtype=np.float32)
    big_y = rng.integers(0, 32000, 4096)
    ce.softmax_cross_entropy_with_grad(big_x, big_y)
    small_x, small_y = step_x[:64, :1000].copy(), step_y[:64] % 1000
    ce.softmax_cross_entropy(small_x, small_y)
    with gc_disabled():
        big = [time_call(lambda: ce.softmax_cross_entropy_with_grad(big_x, big_y)) for _ in range(7)]
        small = [time_call(lambda: ce.softmax_cross_entropy(small_x, small_y)) for _ in range(300)]
    out["kernel_4096x32000_ms"] = [1e3 * t for t in big]
    out["kernel_64x1000_us"] = [1e6 * t for t in small]

    # The other direction: the torch layer's kernel right after a PyTorch operation, or after a pause.
    after_torch, quiet = [], []
    if with_torch:
        import crossentropy.torch as cet

        logits, target = torch.from_numpy(big_x), torch.from_numpy(big_y)
        operand = torch.randn(1024, 1024)

        def loss() -> None:
            with torch.no_grad():
                cet.cross_entropy(logits, target)

        loss()
        with gc_disabled():
            for _ in range(7):
                operand.mul(1.5)
                after_torch.append(1e3 * time_call(loss))
                time.sleep(0.02)
                quiet.append(1e3 * time_call(loss))
    out["torch_layer_after_torch_op_ms"], out["torch_layer_quiet_ms"] = after_torch, quiet

    if hasattr(os, "fork"):
        context = multiprocessing.get_context("fork")
        child = context.Process(target=kernel)
        child.start()
        child.join(120)
        out["fork_child_exit"] = child.exitcode
    return out


def _run_child(env: dict, repeat: int) -> dict:
    environ = {
        k: v for k, v in os.environ.items() if k not in ("NUMBA_THREADING_LAYER", "OMP_WAIT_POLICY", NO_TORCH_KEY)
    }
    result = subprocess.run(
        [sys.executable, __file__, "--child", "--repeat", str(repeat)],
        env={**environ, **env},
        capture_output=True,
        text=True,
        check=False,
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode != 0 or not lines:
        return {"error": (result.stderr.strip().splitlines() or ["no output"])[-1]}
    return json.loads(lines[-1])


def _tbb_loads() -> bool:
    # crossentropy's import makes an installed tbb package findable (crossentropy/kernels/_threading.py).
    probe = "import crossentropy, numpy as np\ncrossentropy.softmax_cross_entropy(np.zeros((2, 3)), np.zeros(2, int))"
    env = {**os.environ, "NUMBA_THREADING_LAYER": "tbb"}
    return subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, check=False).returncode == 0


def _ms(values: list[float], digits: int = 1) -> str:
    """The median for a table cell, or "n/a" where nothing was measured (no PyTorch in the process)."""
    from crossentropy._tools.timing import median

    return f"{median(values):.{digits}f}" if values else "n/a"


def _merge(results: list[dict]) -> dict:
    """The processes of one layer, their repetitions pooled."""
    merged: dict = {"layer": results[0]["layer"], "fork": [r.get("fork_child_exit") for r in results]}
    for key in KERNEL_METRICS:
        merged[key] = [v for r in results for v in r[key]]
    for key in ("none_ms", "after_ms"):
        merged[key] = {name: [v for r in results for v in r[key][name]] for name in results[0][key]}
    before = results[0]["before_any_kernel_ms"]
    merged["before_any_kernel_ms"] = {name: min(r["before_any_kernel_ms"][name] for r in results) for name in before}
    merged["threads"] = (results[0]["numba_threads"], results[0]["torch_threads"])
    return merged


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2, help="processes per layer, alternated (default 2)")
    parser.add_argument(
        "--repeat", type=int, default=10, help="2048² matmul pairs per process (others: 10x; default 10)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder of the .md and .csv (default results/)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_child(args.repeat)))
        return 0

    from crossentropy._tools.environment import load_average
    from crossentropy._tools.progress import step_progress
    from crossentropy._tools.timing import median

    layers = list(LAYERS) + ([TBB] if _tbb_loads() else [])
    load_before = load_average()
    started = time.perf_counter()
    runs: dict[str, list[dict]] = {label: [] for label, _ in layers}
    with step_progress(args.rounds * len(layers), prefix=NAME) as progress:
        for round_ in range(args.rounds):
            for label, env in layers:
                progress.step(f"round {round_ + 1}/{args.rounds}: {label}")
                runs[label].append(_run_child(env, args.repeat))
    elapsed = time.perf_counter() - started
    load_after = load_average()

    summary: dict[str, dict] = {}
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["layers", "active_layer", "metric", "median", "samples"])
    for label, results in runs.items():
        good = [r for r in results if "error" not in r]
        if not good:
            summary[label] = {"error": results[0]["error"]}
            continue
        merged = summary[label] = _merge(good)
        metrics = [
            (f"{name} {key}", merged[key][name]) for name in merged["none_ms"] for key in ("none_ms", "after_ms")
        ]
        metrics += [(key, merged[key]) for key in KERNEL_METRICS]
        for metric, samples in metrics:
            writer.writerow(
                [label, merged["layer"], metric, f"{median(samples):.4g}", ";".join(f"{v:.4g}" for v in samples)]
            )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{NAME}.csv").write_text(buffer.getvalue())
    markdown = _markdown(summary, args, elapsed, load_before, load_after)
    (args.out / f"{NAME}.md").write_text(markdown)
    print(markdown)
    return 0


def _markdown(summary: dict, args, elapsed: float, load_before, load_after) -> str:
    from crossentropy._tools.environment import environment, machine_text
    from crossentropy._tools.tables import Table, render_markdown
    from crossentropy._tools.timing import median

    env = environment(torch=True)
    lines = [
        "# Numba's threading layer between kernel calls",
        "",
        f"`benchmarks/threads_after_kernel.py --rounds {args.rounds} --repeat {args.repeat}`, "
        f"{time.strftime('%Y-%m-%d')}, {elapsed:.0f} s. {machine_text(env)}, "
        f"Python {env['python']}, Numba {env['numba']}, PyTorch {env['torch']}.",
    ]
    if load_before is not None:
        lines.append(
            f"Load average (1 min) {load_before[0]:.1f} before and {load_after[0]:.1f} after the run: other "
            "processes shared the cores, so wall times are noisy (compare the matmuls before any kernel, at the "
            f"bottom); the layers ran alternately, each in {args.rounds} processes, and the figures pool all "
            "their repetitions (medians unless said otherwise). CPU times are the least disturbed."
        )
    good = {label: merged for label, merged in summary.items() if "error" not in merged}
    headers = ["threading layer", "fork child after a kernel", "CPU after a call (ms)"]
    headers += ["kernel 4096x32000 fwd+grad (ms)", "kernel 64x1000 fwd (µs)", "torch layer fwd, quiet (ms)"]
    headers += ["torch layer fwd, after PyTorch (ms)"]
    layers = Table("", headers, [], numeric=[False, False] + [True] * 5)
    for label, merged in summary.items():
        if "error" in merged:
            layers.rows.append([label, f"failed: {merged['error']}", "", "", "", "", ""])
            continue
        fork = merged["fork"]
        fork_text = "computes" if all(code == 0 for code in fork) else f"killed (exit {fork[0]})"
        layers.rows.append(
            [
                f"{label}: `{merged['layer']}`",
                fork_text,
                f"{median(merged['cpu_ms_after_kernel']):.2f}",
                f"{median(merged['kernel_4096x32000_ms']):.1f}",
                f"{median(merged['kernel_64x1000_us']):.0f}",
                _ms(merged["torch_layer_quiet_ms"]),
                _ms(merged["torch_layer_after_torch_op_ms"]),
            ]
        )
    headers = ["threading layer", "matmul", "fastest (ms): none / after = ratio", "median (ms): none / after = ratio"]
    matmuls = Table("", headers, [], numeric=[False, False, True, True])
    for label, merged in good.items():
        for name in merged["none_ms"]:
            none, after = merged["none_ms"][name], merged["after_ms"][name]
            fastest = min(none), min(after)
            typical = median(none), median(after)
            matmuls.rows.append(
                [
                    f"{label}: `{merged['layer']}`",
                    name,
                    f"{fastest[0]:.2f} / {fastest[1]:.2f} = {fastest[1] / fastest[0]:.2f}",
                    f"{typical[0]:.2f} / {typical[1]:.2f} = {typical[1] / typical[0]:.2f}",
                ]
            )
    lines += [
        "",
        "## The layers",
        "",
        "`CPU after a call`: milliseconds of CPU the process spends in the 100 ms after a kernel call (256x4000 "
        "float32, forward and gradient) while its Python thread sleeps: the kernel's threads spinning (with PyTorch "
        "on GNU OpenMP, those are PyTorch's OpenMP threads, which wait after a kernel as after any PyTorch operation).",
        "",
        "`torch layer fwd`: `crossentropy.torch.cross_entropy` on 4096x32000 float32 logits without autograd, with "
        "nothing in the 20 ms before it (`quiet`) and right after a PyTorch operation on 2^20 floats (`after "
        "PyTorch`), whose OpenMP threads then spin.",
        "",
        render_markdown(layers),
        "",
        "## A matmul right after a kernel call",
        "",
        "Each matmul is timed right after a kernel call (`after`), and right after another matmul with no kernel "
        "call in the 20 ms before it (`none`), pair after pair; `after / none` above 1 is time lost to the kernel's "
        "threads still running when it has returned. Other processes only ever slow a matmul down, but "
        "on a shared machine they move the fastest and the median of the repetitions alike, by tens of percent "
        "between runs: read the ratios against that.",
        "",
        render_markdown(matmuls),
    ]
    first = next(iter(good.values()), None)
    if first is not None:
        numba_threads, torch_threads = first["threads"]
        before = ", ".join(f"{name} {ms:.1f} ms" for name, ms in first["before_any_kernel_ms"].items())
        lines += [
            "",
            f"float32 matmuls; PyTorch on {torch_threads} threads, NumPy on its BLAS's, Numba on {numba_threads}. "
            f"In the first process, before any kernel ran (fastest of 3): {before}.",
        ]
    if TBB[0] not in summary:
        lines += ["", "TBB: not measured, Numba cannot load it in this environment (`pip install tbb`)."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
