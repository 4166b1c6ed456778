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
results go to ``benchmarks/results/score_dask.md``. A quick check: ``--size-gb 0.02 --files 4
--repeat 1 --workdir /tmp/sd --out /tmp/sd-out``.

The child processes' measurement (wall and CPU time), the timing of the in-process rates and of
the in-memory scoring, the medians, the environment record, the tables and the progress lines
are :mod:`crossentropy._tools`'.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from crossentropy._tools.environment import environment, load_average
from crossentropy._tools.progress import StepProgress, step_progress
from crossentropy._tools.tables import Table, render_markdown
from crossentropy._tools.timing import median, run_process, time_call

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
    """``script`` in a fresh interpreter: its JSON line, wall time, and the CPU seconds of the child and of every
    descendant it reaped (Dask's workers)."""
    run = run_process([sys.executable, "-c", script, *args])
    if run.returncode != 0:
        raise RuntimeError(f"child failed ({' '.join(args)}):\n{run.stderr[-3000:]}")
    result = json.loads(run.last_line())
    result.update(wall_s=run.wall_s, user_s=run.user_s, sys_s=run.sys_s, cpu_s=run.user_s + run.sys_s)
    return result


def _file_bytes(paths: list[Path]) -> int:
    return sum(p.stat().st_size for p in paths)


def page_cache_read(paths: list[Path]) -> float:
    """GB/s of reading the files' bytes into one reused buffer (they are in the page cache)."""
    view = memoryview(bytearray(16 << 20))

    def read() -> None:
        for path in paths:
            with path.open("rb", buffering=0) as file:
                while file.readinto(view):
                    pass

    return _file_bytes(paths) / time_call(read) / 1e9


def direct_read(paths: list[Path], readers: int) -> float | None:
    """GB/s of ``readers`` concurrent ``dd iflag=direct`` reads (bypassing the page cache) of the files."""
    if shutil.which("dd") is None:
        return None
    groups = [paths[k::readers] for k in range(readers)]
    failed: list[int] = []

    def read() -> None:
        processes = [
            subprocess.Popen(
                ["sh", "-c", " && ".join(f"dd if={p} of=/dev/null bs=4M iflag=direct status=none" for p in group)],
                stderr=subprocess.PIPE,
            )
            for group in groups
        ]
        failed.extend(process.wait() for process in processes)

    elapsed = time_call(read)
    if any(failed):
        return None
    return _file_bytes(paths) / elapsed / 1e9


def parquet_decode(paths: list[Path], columns: list[str], use_threads: bool) -> float:
    """GB/s (of file) of decoding the columns to Arrow, and to float64 NumPy arrays, file by file."""
    import pyarrow.parquet as pq

    def decode() -> None:
        for path in paths:
            table = pq.ParquetFile(path).read(columns=columns, use_threads=use_threads)
            for name in columns[1:]:
                table.column(name).to_numpy()

    return _file_bytes(paths) / time_call(decode) / 1e9


KERNEL = """
import json, sys
import numba, numpy as np, pyarrow.parquet as pq
numba.set_num_threads(int(sys.argv[2]))
from crossentropy._tools.timing import median, time_calls
from crossentropy.cli.score import Selection, file_scorer
table = pq.read_table(sys.argv[1])
names = [n for n in table.column_names if n != "label"]
probs = np.column_stack([table.column(n).to_numpy() for n in names])
labels = table.column("label").to_numpy()
selection = Selection(predictions=tuple(names), classes=tuple(names), target="label")
file_scorer(selection).add(probs[:1000], labels[:1000])  # compile or load the kernel
scorers = []
def score():
    for first in range(0, len(labels), 1 << 17):
        scorers[-1].add(probs[first:first + (1 << 17)], labels[first:first + (1 << 17)])
times = time_calls(score, repeat=5, warmup=0, prepare=lambda: scorers.append(file_scorer(selection)))
print(json.dumps({"score_s": median(times), "bytes": probs.nbytes + labels.nbytes}))
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

    load_before = load_average()
    data = args.workdir / "preds"
    # Steps: the data set, each round's methods and the single process after dask, the rest.
    steps = 1 + args.repeat * (len(ENGINES) + 1) + 3
    try:
        with step_progress(steps, prefix="score_dask") as progress:
            progress.step(f"data set: {args.files} files of {args.size_gb / args.files * 1e3:.0f} MB")
            paths = write_data(data, args.size_gb, args.files, args.classes)
            results = measure(paths, data, args, progress)
    finally:
        if not args.keep:
            shutil.rmtree(args.workdir, ignore_errors=True)
    results["load_before"], results["load_after"] = load_before, load_average()
    write_results(results, args)


ENGINES = {
    "single process (--engine local)": [],
    "--engine dask --workers 1": ["--engine", "dask", "--workers", "1"],
    "--engine dask --workers 2": ["--engine", "dask", "--workers", "2"],
}


def _summary(method: str, results: list[dict], fixed_s: float) -> dict:
    """One row of the results: the medians of one method's timed runs."""
    row = {"method": method}
    row.update({key: median(r[key] for r in results) for key in ("wall_s", "work_s", "cpu_s", "user_s", "sys_s")})
    row.update(
        fixed_s=fixed_s,
        walls=[r["wall_s"] for r in results],
        rows=results[0]["rows"],
        log_loss=results[0]["log_loss"],
    )
    return row


def measure(paths: list[Path], data: Path, args: argparse.Namespace, progress: StepProgress) -> dict:
    size = _file_bytes(paths)
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
            progress.step(f"round {round_ + 1}/{args.repeat}: {name}")
            run_child(CHILD, str(data), *target, *engine)
            runs[name].append(run_child(CHILD, str(data), *target, *engine))
            fixed[name].append(run_child(CHILD, str(tiny), *target, *engine))
        progress.step(f"round {round_ + 1}/{args.repeat}: single process after a dask run")
        after_dask.append(run_child(CHILD, str(data), *target))
    table = [_summary(name, results, median(r["wall_s"] for r in fixed[name])) for name, results in runs.items()]
    progress.step("LocalCluster start and stop")
    clusters = {n: run_child(CLUSTER, str(n)) for n in (1, 2)}
    progress.step("reading and decoding the files")
    columns = ["label", *[str(k) for k in range(args.classes)]]
    reads = {
        "page cache, 1 reader": page_cache_read(paths),
        "disk (O_DIRECT), 1 reader": direct_read(paths, 1),
        "disk (O_DIRECT), 2 readers": direct_read(paths, 2),
        "Parquet decode, 1 thread": parquet_decode(paths, columns, use_threads=False),
        "Parquet decode, pyarrow's threads": parquet_decode(paths, columns, use_threads=True),
    }
    progress.step("scoring in-memory arrays")
    kernel = {n: run_child(KERNEL, str(paths[0]), str(n)) for n in (1, 2)}
    from crossentropy.cli.score import Selection, file_scorer

    names = tuple(str(k) for k in range(args.classes))
    state = file_scorer(Selection(predictions=names, classes=names, target="label")).scorer.state_dict()
    import pickle

    table.append(_summary("single process, right after a dask run", after_dask, table[0]["fixed_s"]))
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


def _load(load: tuple[float, float, float] | None) -> str:
    return "n/a" if load is None else f"{load[0]:.2f}"


def write_results(results: dict, args: argparse.Namespace) -> None:
    size_mb = results["size"] / 1e6
    local = results["table"][0]
    env = environment(numba=False)
    headers = ["method", "wall s", "work s", "wall MB/s", "speed-up (wall)", "user s", "sys s", "CPU / wall"]
    headers += ["fixed s", "MB/s past the fixed cost", "runs (wall s)", "log loss"]
    methods = Table("", headers, [])
    for r in results["table"]:
        methods.rows.append(
            [
                r["method"],
                f"{r['wall_s']:.2f}",
                f"{r['work_s']:.2f}",
                f"{size_mb / r['wall_s']:.0f}",
                f"{local['wall_s'] / r['wall_s']:.2f}x",
                f"{r['user_s']:.2f}",
                f"{r['sys_s']:.2f}",
                f"{r['cpu_s'] / r['wall_s']:.2f}",
                f"{r['fixed_s']:.2f}",
                _past_fixed(size_mb, r),
                ", ".join(f"{w:.2f}" for w in r["walls"]),
                f"{r['log_loss']:.12f}",
            ]
        )
    rates = Table("", ["measurement", "rate"], [])
    for name, rate in results["reads"].items():
        rates.rows.append([name, "n/a" if rate is None else f"{rate * 1000:,.0f} MB/s"])
    for n, kernel in results["kernel"].items():
        rate = kernel["bytes"] / kernel["score_s"] / 1e6
        threads = f"{n} Numba thread{'s' if n > 1 else ''}"
        rates.rows.append([f"scoring in-memory arrays alone (FileScorer.add), {threads}", f"{rate:,.0f} MB/s"])
    headers = ["LocalCluster", "import distributed s", "start s", "import crossentropy on workers s", "close s"]
    clusters = Table("", headers, [])
    for n, c in results["clusters"].items():
        clusters.rows.append(
            [f"{n} worker{'s' if n > 1 else ''}"]
            + [f"{c[key]:.2f}" for key in ("import_s", "start_s", "warm_s", "close_s")]
        )
    lines = [
        "# `crossentropy score` on a partitioned Parquet data set: single process against `--engine dask`",
        "",
        f"Machine: {env['machine']}, {env['cpu_count']} cores, shared with other work (load average "
        f"{_load(results['load_before'])} before, {_load(results['load_after'])} after); Python "
        f"{env['python']}. Command: `.venv/bin/python benchmarks/score_dask.py` (defaults: "
        f"--size-gb {args.size_gb:g} --files {args.files} --classes {args.classes} --repeat {args.repeat}). "
        f"Data: {results['files']} Parquet files of {results['file_size'] / 1e6:.1f} MB "
        f"({size_mb:,.0f} MB in all, {local['rows']:,} rows, {args.classes} float64 probability columns and an "
        "int64 label; one row group per file, so a file is one partition), in the page cache. Fresh processes, "
        f"the three methods interleaved, medians of {args.repeat}. `wall`: the whole command (imports, and for "
        "dask the LocalCluster's start and stop); `work`: after the imports; `user`, `sys`: CPU seconds of the "
        "command and all its processes (the Dask workers included). Each timed run follows an untimed run of "
        "the same method; the last row times the single-process engine right after a Dask run instead.",
        "",
        render_markdown(methods, align=False),
        "",
        "`fixed s`: the same command on one file of 1,000 rows (imports, the kernel's load from Numba's cache, "
        "for dask the cluster's start and stop); `MB/s past the fixed cost`: data set size / (wall - fixed).",
        "",
        "What the machine can do on the same files:",
        "",
        render_markdown(rates, align=False),
        "",
        render_markdown(clusters, align=False),
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
