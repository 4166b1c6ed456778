"""`crossentropy score` against what a user would do instead: pandas + scikit-learn.

Writes a prediction file of about ``--size-gb`` (10 classes, probabilities written as
float64's shortest round-trip text, integer labels), the same data as Parquet, and a CSV of the
same size with probabilities rounded to 6 decimals (twice the rows), and times in fresh
processes, median of ``--repeat`` runs:

- ``crossentropy score FILE --target label`` (the command, streaming);
- ``pandas.read_csv`` / ``pandas.read_parquet`` + ``sklearn.metrics.log_loss`` on the frame.

For each it reports the whole process's wall time (imports included) and the time of the work
itself (reading + scoring, measured inside the process), the throughput in MB/s of file per
second, and the peak resident memory (``ru_maxrss`` of the process). The log losses of both
are compared. The command's peak memory is also measured on files of other sizes
(``--memory-sizes-gb``) to show that it does not grow with the file.

Run: ``.venv/bin/python benchmarks/score.py`` (about 4 minutes and 2.5 GB of disk in
``--workdir``); results go to ``benchmarks/results/score.{md,csv}``. A quick check:
``--size-gb 0.01 --memory-sizes-gb 0.005 --repeat 1 --workdir /tmp/s --out /tmp/s``.

The child processes' measurement (wall time, peak RSS), the medians, the environment record, the
table and the progress lines are :mod:`crossentropy._tools`'.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

from crossentropy._tools.environment import environment
from crossentropy._tools.progress import step_progress
from crossentropy._tools.tables import Table, render_markdown
from crossentropy._tools.timing import median, run_process

RESULTS = Path(__file__).parent / "results"
N_CLASSES = 10
CLASSES = [str(k) for k in range(N_CLASSES)]

OURS = """
import json, sys, time
start = time.perf_counter()
from crossentropy.cli import main
imported = time.perf_counter()
import contextlib, io
out = io.StringIO()
with contextlib.redirect_stdout(out):
    code = main(["score", sys.argv[1], "--target", "label", "--json", "--no-progress"])
done = time.perf_counter()
figures = json.loads(out.getvalue())
print(json.dumps({"import_s": imported - start, "work_s": done - imported, "log_loss": figures["log_loss_nats"],
                  "rows": figures["rows"], "code": code}))
"""

PEER = """
import json, sys, time
start = time.perf_counter()
import pandas as pd
from sklearn.metrics import log_loss
imported = time.perf_counter()
path = sys.argv[1]
frame = pd.read_parquet(path) if path.endswith(".parquet") else pd.read_csv(path)
loaded = time.perf_counter()
classes = [str(k) for k in range(10)]
value = log_loss(frame["label"].to_numpy(), frame[classes].to_numpy(), labels=list(range(10)))
done = time.perf_counter()
print(json.dumps({"import_s": imported - start, "work_s": done - imported, "read_s": loaded - imported,
                  "log_loss": float(value), "rows": len(frame)}))
"""


def write_data(directory: Path, size_gb: float, seed: int = 0, decimals: int | None = None) -> tuple[Path, Path]:
    """A CSV of about ``size_gb`` and the same rows as Parquet; reused when already there.

    Probabilities are written as float64's shortest round-trip text (about 19 characters), or
    rounded to ``decimals`` places (so rows sum to 1 only within about 5e-6 for 6 decimals).
    """
    import pyarrow as pa
    import pyarrow.csv as pa_csv
    import pyarrow.parquet as pq

    suffix = "" if decimals is None else f"_{decimals}dp"
    stem = directory / f"predictions_{round(size_gb * 1000)}mb{suffix}"
    csv_path, parquet_path = stem.with_suffix(".csv"), stem.with_suffix(".parquet")
    if csv_path.exists() and parquet_path.exists():
        return csv_path, parquet_path
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    target_bytes = int(size_gb * 1e9)
    batch = 200_000
    with pa_csv.CSVWriter(csv_path, _schema()) as csv_writer, pq.ParquetWriter(parquet_path, _schema()) as pq_writer:
        while csv_path.stat().st_size < target_bytes:
            labels = rng.integers(0, N_CLASSES, batch)
            logits = rng.normal(size=(batch, N_CLASSES)) * 2.0
            logits[np.arange(batch), labels] += 2.0  # a model that is right more often than not
            probs = np.exp(logits - logits.max(axis=1, keepdims=True))
            probs /= probs.sum(axis=1, keepdims=True)
            if decimals is not None:
                probs = np.round(probs, decimals)
            table = pa.table({"label": labels, **{c: probs[:, k] for k, c in enumerate(CLASSES)}}, schema=_schema())
            csv_writer.write_table(table)
            pq_writer.write_table(table)
    return csv_path, parquet_path


def _schema():
    import pyarrow as pa

    return pa.schema([("label", pa.int64()), *[(c, pa.float64()) for c in CLASSES]])


def run_child(script: str, path: Path) -> dict:
    """Run ``script`` on ``path`` in a fresh interpreter: its JSON line, wall time and peak RSS."""
    run = run_process([sys.executable, "-c", script, str(path)])
    if run.returncode != 0:
        raise RuntimeError(f"child failed on {path}:\n{run.stderr[-2000:]}")
    result = json.loads(run.last_line())
    result.update(wall_s=run.wall_s, peak_rss_mb=run.peak_rss_bytes / 2**20)
    return result


def measure(method: str, script: str, path: Path, repeat: int) -> dict:
    runs = [run_child(script, path) for _ in range(repeat)]
    size_mb = path.stat().st_size / 1e6
    wall = median(r["wall_s"] for r in runs)
    work = median(r["work_s"] for r in runs)
    return {
        "method": method,
        "file": path.name,
        "format": path.suffix[1:],
        "file_mb": round(size_mb, 1),
        "rows": runs[0]["rows"],
        "wall_s": round(wall, 3),
        "work_s": round(work, 3),
        "wall_mb_per_s": round(size_mb / wall, 1),
        "work_mb_per_s": round(size_mb / work, 1),
        "peak_rss_mb": round(max(r["peak_rss_mb"] for r in runs), 1),
        "log_loss": runs[0]["log_loss"],
        "runs": repeat,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-gb", type=float, default=1.0)
    parser.add_argument("--memory-sizes-gb", type=float, nargs="*", default=[0.25])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/crossentropy-bench-score"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    rows = []
    csv_path, parquet_path = write_data(args.workdir, args.size_gb)
    short_csv, _ = write_data(args.workdir, args.size_gb, decimals=6)
    with step_progress(3 * 2 + 2 * len(args.memory_sizes_gb), prefix="score") as progress:
        for path in (csv_path, parquet_path, short_csv):
            progress.step(f"crossentropy score on {path.name}, {args.repeat} runs")
            # Warm the page cache and the kernel cache once, so that every run reads from memory.
            run_child(OURS, path)
            rows.append(measure("crossentropy score", OURS, path, args.repeat))
            progress.step(f"pandas + scikit-learn on {path.name}, {args.repeat} runs")
            rows.append(measure("pandas + sklearn.metrics.log_loss", PEER, path, args.repeat))
        for size in args.memory_sizes_gb:
            for path in write_data(args.workdir, size):
                progress.step(f"crossentropy score on {path.name} (peak memory), 1 run")
                rows.append(measure("crossentropy score", OURS, path, 1))
    write_results(rows, args.out)


def write_results(rows: list[dict], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with (out / "score.csv").open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    env = environment(numba=False)
    table = Table("", ["method", "file", "MB", "rows", "wall s", "work s", "wall MB/s", "work MB/s"], [])
    table.headers += ["peak RSS MB", "log loss"]
    for r in rows:
        table.rows.append(
            [
                r["method"],
                r["file"],
                f"{r['file_mb']}",
                f"{r['rows']:,}",
                f"{r['wall_s']}",
                f"{r['work_s']}",
                f"{r['wall_mb_per_s']}",
                f"{r['work_mb_per_s']}",
                f"{r['peak_rss_mb']}",
                f"{r['log_loss']:.12f}",
            ]
        )
    lines = [
        "# `crossentropy score` against pandas + scikit-learn",
        "",
        f"Machine: {env['processor']}, {env['cpu_count']} cores; Python "
        f"{env['python']}. Command: `.venv/bin/python benchmarks/score.py`. Medians of "
        f"{rows[0]['runs']} fresh processes; the files are in the page cache. `wall`: the whole process, "
        "imports included; `work`: reading and scoring, timed inside the process. MB/s = file size / time.",
        "",
        render_markdown(table, align=False),
    ]
    lines.append("")
    by = {(r["method"], r["file"]): r for r in rows}
    for r in rows:
        if r["method"] != "crossentropy score":
            continue
        peer = by.get(("pandas + sklearn.metrics.log_loss", r["file"]))
        if peer is None:
            continue
        lines.append(
            f"- {r['file']}: {peer['wall_s'] / r['wall_s']:.2f}x the whole-process throughput of pandas + "
            f"scikit-learn ({peer['work_s'] / r['work_s']:.2f}x on the work alone); peak memory "
            f"{r['peak_rss_mb']:.0f} MB against {peer['peak_rss_mb']:.0f} MB; log losses differ by "
            f"{abs(r['log_loss'] - peer['log_loss']):.1e}."
        )
    (out / "score.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
