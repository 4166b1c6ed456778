"""`crossentropy score` on a partitioned Parquet data set: the single-process engine against `--engine dask`.

Writes a data set of about ``--size-gb`` (``--files`` Parquet files, ``--classes`` float64
probability columns and an integer label; one row group per file, so a file is one partition)
into ``--workdir``, deletes it at the end (unless ``--keep``), and times in fresh processes,
interleaved, median of ``--repeat`` runs each:

- ``crossentropy score DIR --target label`` (the single-process engine: the files one after the
  other, each batch scored by the Numba kernel on all cores);
- the same with ``--engine dask --workers 1`` and ``--workers 2`` (a ``LocalCluster`` started by
  the command: its start and stop are part of the time).

To say what limits the speed-up it also measures, on the same files: the command's CPU time
(every process of it, workers included) over its wall time; the rate of reading the files'
bytes from the page cache and from the disk (``O_DIRECT``, no cache), alone and two readers at
once; pyarrow's Parquet decoding on one thread and on its thread pool; the scoring of
in-memory arrays alone (``FileScorer.add``) on 1 and 2 Numba threads; the start and stop of a
``LocalCluster`` of 1 and 2 workers with the package imported on them; and the size of the
states that travel. The machine's load average is recorded before and after.

Run: ``.venv/bin/python benchmarks/score_dask.py`` (about 5 minutes and ``--size-gb`` of disk);
results go to ``benchmarks/results/score_dask.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"

CHILD = """
import contextlib, io, json, resource, sys, time
start = time.perf_counter()
from crossentropy.cli import main
imported = time.perf_counter()
out = io.StringIO()
with contextlib.redirect_stdout(out):
    code = main(["score", *sys.argv[1:], "--json", "--no-progress"])
done = time.perf_counter()
figures = json.loads(out.getvalue())
print(json.dumps({"import_s": imported - start, "work_s": done - imported, "log_loss": figures["log_loss_nats"],
                  "rows": figures["rows"], "code": code}))
"""

CLUSTER = """
import json, logging, sys, time
start = time.perf_counter()
import distributed
imported = time.perf_counter()
cluster = distributed.LocalCluster(n_workers=int(sys.argv[1]), threads_per_worker=1, processes=True,
                                   dashboard_address=":0", silence_logs=logging.ERROR)
client = distributed.Client(cluster, set_as_default=False)
started = time.perf_counter()
def warm():
    import crossentropy.cli.score, crossentropy.dask  # what the first partition on a worker imports
    return True
client.run(warm)
warmed = time.perf_counter()
client.close(); cluster.close()
closed = time.perf_counter()
print(json.dumps({"import_s": imported - start, "start_s": started - imported, "warm_s": warmed - started,
                  "close_s": closed - warmed}))
"""


def write_data(directory: Path, size_gb: float, n_files: int, n_classes: int, seed: int = 0) -> list[Path]:
    """``n_files`` Parquet files of about ``size_gb`` in all; reused when already there."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / f"part-{k:05d}.parquet" for k in range(n_files)]
    if all(path.exists() for path in paths):
        return paths
    rows = int(size_gb * 1e9 / (8 * (n_classes + 1)) / n_files)
    rng = np.random.default_rng(seed)
    names = [str(k) for k in range(n_classes)]
    for path in paths:
        labels = rng.integers(0, n_classes, rows)
        logits = rng.normal(size=(rows, n_classes)) * 2.0
        logits[np.arange(rows), labels] += 2.0
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        table = pa.table({"label": labels, **{name: probs[:, k] for k, name in enumerate(names)}})
        pq.write_table(table, path, row_group_size=rows)  # one row group: a file is one partition
    return paths


def run_child(script: str, *args: str) -> dict:
    """``script`` in a fresh interpreter: its JSON line, wall time, and the CPU time of it and its descendants."""
    start = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-c", script, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    stdout, stderr = process.communicate()
    wall = time.perf_counter() - start
    if process.returncode != 0:
        raise RuntimeError(f"child failed ({' '.join(args)}):\n{stderr[-3000:]}")
    result = json.loads(stdout.strip().splitlines()[-1])
    result["wall_s"] = wall
    return result


def run_timed(script: str, *args: str) -> dict:
    """As :func:`run_child`, with the CPU seconds of the child and of every descendant it reaped (Dask's workers)."""
    before = os.times()
    result = run_child(script, *args)
    after = os.times()
    result["user_s"] = after.children_user - before.children_user
    result["sys_s"] = after.children_system - before.children_system
    result["cpu_s"] = result["user_s"] + result["sys_s"]
    return result


def page_cache_read(paths: list[Path]) -> float:
    """GB/s of reading the files' bytes into one reused buffer (they are in the page cache)."""
    buffer = bytearray(16 << 20)
    view = memoryview(buffer)
    total = 0
    start = time.perf_counter()
    for path in paths:
        with path.open("rb", buffering=0) as file:
            while n := file.readinto(view):
                total += n
    return total / (time.perf_counter() - start) / 1e9


def direct_read(paths: list[Path], readers: int) -> float | None:
    """GB/s of ``readers`` concurrent ``dd iflag=direct`` reads (bypassing the page cache) of the files."""
    if shutil.which("dd") is None:
        return None
    groups = [paths[k::readers] for k in range(readers)]
    start = time.perf_counter()
    processes = [
        subprocess.Popen(
            ["sh", "-c", " && ".join(f"dd if={p} of=/dev/null bs=4M iflag=direct status=none" for p in group)],
            stderr=subprocess.PIPE,
        )
        for group in groups
    ]
    failed = [process.wait() for process in processes]
    elapsed = time.perf_counter() - start
    if any(failed):
        return None
    return sum(p.stat().st_size for p in paths) / elapsed / 1e9


def parquet_decode(paths: list[Path], columns: list[str], use_threads: bool) -> float:
    """GB/s (of file) of decoding the columns to Arrow, and to float64 NumPy arrays, file by file."""
    import pyarrow.parquet as pq

    start = time.perf_counter()
    for path in paths:
        table = pq.ParquetFile(path).read(columns=columns, use_threads=use_threads)
        for name in columns[1:]:
            table.column(name).to_numpy()
    return sum(p.stat().st_size for p in paths) / (time.perf_counter() - start) / 1e9


KERNEL = """
import json, sys, time
import numba, numpy as np, pyarrow.parquet as pq
numba.set_num_threads(int(sys.argv[2]))
from crossentropy.cli.score import Selection, file_scorer
table = pq.read_table(sys.argv[1])
names = [n for n in table.column_names if n != "label"]
probs = np.column_stack([table.column(n).to_numpy() for n in names])
labels = table.column("label").to_numpy()
selection = Selection(predictions=tuple(names), classes=tuple(names), target="label")
scorer = file_scorer(selection)
scorer.add(probs[:1000], labels[:1000])  # compile or load the kernel
times = []
for _ in range(5):
    scorer = file_scorer(selection)
    start = time.perf_counter()
    for first in range(0, len(labels), 1 << 17):
        scorer.add(probs[first:first + (1 << 17)], labels[first:first + (1 << 17)])
    times.append(time.perf_counter() - start)
print(json.dumps({"score_s": sorted(times)[2], "bytes": probs.nbytes + labels.nbytes}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-gb", type=float, default=2.0)
    parser.add_argument("--files", type=int, default=32)
    parser.add_argument("--classes", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/crossentropy-bench-score-dask"))
    parser.add_argument("--keep", action="store_true", help="keep the data set")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    load_before = os.getloadavg()
    data = args.workdir / "preds"
    try:
        started = time.perf_counter()
        paths = write_data(data, args.size_gb, args.files, args.classes)
        print(f"data set: {len(paths)} files in {time.perf_counter() - started:.1f} s", flush=True)
        results = measure(paths, data, args)
    finally:
        if not args.keep:
            shutil.rmtree(args.workdir, ignore_errors=True)
    results["load_before"], results["load_after"] = load_before, os.getloadavg()
    write_results(results, args)


ENGINES = {
    "single process (--engine local)": [],
    "--engine dask --workers 1": ["--engine", "dask", "--workers", "1"],
    "--engine dask --workers 2": ["--engine", "dask", "--workers", "2"],
}


def measure(paths: list[Path], data: Path, args: argparse.Namespace) -> dict:
    size = sum(p.stat().st_size for p in paths)
    target = ["--target", "label"]
    # The fixed cost of each method: the same command on one file of 1,000 rows (imports, the kernel's
    # load from Numba's cache, the cluster's start and stop).
    tiny = data.parent / "tiny"
    write_data(tiny, 1000 * 8 * (args.classes + 1) / 1e9, 1, args.classes)
    run_child(CHILD, str(data), *target)  # warm the page cache and the kernel cache
    runs: dict[str, list[dict]] = {name: [] for name in ENGINES}
    fixed: dict[str, list[dict]] = {name: [] for name in ENGINES}
    # On this machine (a Firecracker VM that reports freed memory to its host) a process's time depends
    # on what ran before it: each timed run follows an untimed run of the same method, and the
    # single-process engine is also timed right after a Dask run ("after dask"), as an interleaved
    # order would time it.
    after_dask: list[dict] = []
    for round_ in range(args.repeat):
        for name, engine in ENGINES.items():
            run_child(CHILD, str(data), *target, *engine)
            result = run_timed(CHILD, str(data), *target, *engine)
            runs[name].append(result)
            fixed[name].append(run_timed(CHILD, str(tiny), *target, *engine))
            print(
                f"round {round_ + 1}: {name}: {result['wall_s']:.2f} s wall, {result['user_s']:.2f} s user, "
                f"{result['sys_s']:.2f} s sys; 1,000 rows: {fixed[name][-1]['wall_s']:.2f} s",
                flush=True,
            )
        after_dask.append(run_timed(CHILD, str(data), *target))
        print(
            f"round {round_ + 1}: single process after a dask run: {after_dask[-1]['wall_s']:.2f} s wall, "
            f"{after_dask[-1]['user_s']:.2f} s user, {after_dask[-1]['sys_s']:.2f} s sys",
            flush=True,
        )
    table = []
    for name, results in runs.items():
        table.append(
            {
                "method": name,
                "wall_s": statistics.median(r["wall_s"] for r in results),
                "work_s": statistics.median(r["work_s"] for r in results),
                "cpu_s": statistics.median(r["cpu_s"] for r in results),
                "user_s": statistics.median(r["user_s"] for r in results),
                "sys_s": statistics.median(r["sys_s"] for r in results),
                "fixed_s": statistics.median(r["wall_s"] for r in fixed[name]),
                "walls": [r["wall_s"] for r in results],
                "rows": results[0]["rows"],
                "log_loss": results[0]["log_loss"],
            }
        )
    clusters = {n: run_child(CLUSTER, str(n)) for n in (1, 2)}
    columns = ["label", *[str(k) for k in range(args.classes)]]
    reads = {
        "page cache, 1 reader": page_cache_read(paths),
        "disk (O_DIRECT), 1 reader": direct_read(paths, 1),
        "disk (O_DIRECT), 2 readers": direct_read(paths, 2),
        "Parquet decode, 1 thread": parquet_decode(paths, columns, use_threads=False),
        "Parquet decode, pyarrow's threads": parquet_decode(paths, columns, use_threads=True),
    }
    kernel = {n: run_child(KERNEL, str(paths[0]), str(n)) for n in (1, 2)}
    from crossentropy.cli.score import Selection, file_scorer

    names = tuple(str(k) for k in range(args.classes))
    state = file_scorer(Selection(predictions=names, classes=names, target="label")).scorer.state_dict()
    import pickle

    table.append(
        {
            "method": "single process, right after a dask run",
            "wall_s": statistics.median(r["wall_s"] for r in after_dask),
            "work_s": statistics.median(r["work_s"] for r in after_dask),
            "cpu_s": statistics.median(r["cpu_s"] for r in after_dask),
            "user_s": statistics.median(r["user_s"] for r in after_dask),
            "sys_s": statistics.median(r["sys_s"] for r in after_dask),
            "fixed_s": table[0]["fixed_s"],
            "walls": [r["wall_s"] for r in after_dask],
            "rows": after_dask[0]["rows"],
            "log_loss": after_dask[0]["log_loss"],
        }
    )
    return {
        "size": size,
        "files": len(paths),
        "table": table,
        "clusters": clusters,
        "reads": reads,
        "kernel": kernel,
        "state_bytes": len(pickle.dumps(state)),
        "file_size": paths[0].stat().st_size,
    }


def _past_fixed(size_mb: float, row: dict) -> str:
    """MB/s of the time beyond the fixed cost; n/a when that time is within noise (under a tenth of the wall)."""
    beyond = row["wall_s"] - row["fixed_s"]
    return f"{size_mb / beyond:.0f}" if beyond > 0.1 * row["wall_s"] else "n/a"


def write_results(results: dict, args: argparse.Namespace) -> None:
    size_mb = results["size"] / 1e6
    table = results["table"]
    local = table[0]
    lines = [
        "# `crossentropy score` on a partitioned Parquet data set: single process against `--engine dask`",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, shared with other work (load average "
        f"{results['load_before'][0]:.2f} before, {results['load_after'][0]:.2f} after); Python "
        f"{platform.python_version()}. Command: `.venv/bin/python benchmarks/score_dask.py` (defaults: "
        f"--size-gb {args.size_gb:g} --files {args.files} --classes {args.classes} --repeat {args.repeat}). "
        f"Data: {results['files']} Parquet files of {results['file_size'] / 1e6:.1f} MB "
        f"({size_mb:,.0f} MB in all, {local['rows']:,} rows, {args.classes} float64 probability columns and an "
        "int64 label; one row group per file, so a file is one partition), in the page cache. Fresh processes, "
        f"the three methods interleaved, medians of {args.repeat}. `wall`: the whole command (imports, and for "
        "dask the LocalCluster's start and stop); `work`: after the imports; `user`, `sys`: CPU seconds of the "
        "command and all its processes (the Dask workers included). Each timed run follows an untimed run of "
        "the same method; the last row times the single-process engine right after a Dask run instead.",
        "",
        "| method | wall s | work s | wall MB/s | speed-up (wall) | user s | sys s | CPU / wall | fixed s | MB/s past "
        "the fixed cost | runs (wall s) | log loss |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in table:
        lines.append(
            f"| {r['method']} | {r['wall_s']:.2f} | {r['work_s']:.2f} | {size_mb / r['wall_s']:.0f} | "
            f"{local['wall_s'] / r['wall_s']:.2f}x | {r['user_s']:.2f} | {r['sys_s']:.2f} | "
            f"{r['cpu_s'] / r['wall_s']:.2f} | "
            f"{r['fixed_s']:.2f} | {_past_fixed(size_mb, r)} | "
            f"{', '.join(f'{w:.2f}' for w in r['walls'])} | {r['log_loss']:.12f} |"
        )
    lines += [
        "",
        "`fixed s`: the same command on one file of 1,000 rows (imports, the kernel's load from Numba's cache, "
        "for dask the cluster's start and stop); `MB/s past the fixed cost`: data set size / (wall - fixed).",
    ]
    lines += ["", "What the machine can do on the same files:", ""]
    lines += ["| measurement | rate |", "|---|---|"]
    for name, rate in results["reads"].items():
        lines.append(f"| {name} | {'n/a' if rate is None else f'{rate * 1000:,.0f} MB/s'} |")
    for n, kernel in results["kernel"].items():
        rate = kernel["bytes"] / kernel["score_s"] / 1e6
        lines.append(
            f"| scoring in-memory arrays alone (FileScorer.add), {n} Numba thread{'s' if n > 1 else ''} | "
            f"{rate:,.0f} MB/s |"
        )
    lines += ["", "| LocalCluster | import distributed s | start s | import crossentropy on workers s | close s |"]
    lines += ["|---|---|---|---|---|"]
    for n, c in results["clusters"].items():
        lines.append(
            f"| {n} worker{'s' if n > 1 else ''} | {c['import_s']:.2f} | {c['start_s']:.2f} | {c['warm_s']:.2f} | "
            f"{c['close_s']:.2f} |"
        )
    lines += [
        "",
        f"A partition's state (`Scorer.state_dict()`, pickled) is {results['state_bytes']:,} bytes: "
        f"{results['files'] * results['state_bytes'] / 1e3:,.0f} kB travel to the client for the whole data set.",
        "",
    ]
    out = args.out / "score_dask.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
