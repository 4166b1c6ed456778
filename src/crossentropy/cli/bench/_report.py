"""Reports of ``crossentropy bench``: tables on the terminal, the CSV, the PNG chart, the Markdown summary."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

from ..._tools.files import write_atomic
from ..._tools.tables import Table, print_tables, render_markdown
from ._config import (
    FAILED,
    FILE_STEM,
    FORWARD,
    FORWARD_GRAD,
    KERNELS,
    KERNELS_OUT,
    LOSS_METHODS,
    OK,
    BenchResult,
    _shape_text,
)


def _ms(value: float | None) -> str:
    if value is None:
        return ""
    if value >= 100:
        return f"{value:.0f}"
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}" if value >= 1 else f"{value:.3f}"


def _times(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:.1f}×" if value >= 10 else f"{value:.2f}×" if value >= 0.1 else f"{value:.2g}×"


def _percent(value: float | None) -> str:
    if value is None:
        return ""
    return f"{100 * value:.0f}%" if value >= 0.1 else f"{100 * value:.2g}%"


def _number(value: float | None, digits: int = 1) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _bytes(value: float | None) -> str:
    if value is None:
        return ""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(value) >= size:
            return f"{value / size:.1f} {unit}"
    return f"{value:.0f} B"


def _timing_table(result: BenchResult) -> Table:
    headers = ["shape", "dtype", "method", "pass", "ms", "vs torch", "of floor", "of floor, new array", "GB/s"]
    table = Table("Softmax cross-entropy: median milliseconds", headers, [], [False] * 4 + [True] * 5)
    rows = result.loss_rows()
    for index, row in enumerate(rows):
        if row.status == OK:
            cells = [
                _ms(row.median_ms),
                _times(row.speedup_vs_torch),
                _percent(row.fraction_of_floor),
                _percent(row.fraction_of_floor_alloc),
                _number(row.gb_per_s),
            ]
        else:
            cells = [row.status, "", "", "", ""]
        table.rows.append([_shape_text(row.shape), row.dtype, row.method, row.pass_name, *cells])
        if index + 1 < len(rows) and (rows[index + 1].shape, rows[index + 1].dtype) != (row.shape, row.dtype):
            table.section_ends.add(index)
    return table


def _bandwidth_table(result: BenchResult) -> Table:
    headers = ["shape", "dtype", "size", "read GB/s", "fastest read", "copy GB/s", "copy, new array GB/s"]
    numeric = [False, False, True, True, False, True, True]
    table = Table("Bandwidth floor: NumPy passes over the same array", headers, [], numeric)
    for bandwidth in result.bandwidths:
        table.rows.append(
            [
                _shape_text(bandwidth.shape),
                bandwidth.dtype,
                _bytes(bandwidth.nbytes),
                _number(bandwidth.read_gb_per_s),
                bandwidth.read_method or "",
                _number(bandwidth.copy_gb_per_s),
                _number(bandwidth.copy_new_gb_per_s),
            ]
        )
    return table


def _memory_table(result: BenchResult) -> Table:
    headers = ["shape", "dtype", "method", "pass", "tool", "peak extra", "per row", "of logits"]
    table = Table("Peak extra memory of one call", headers, [], [False] * 5 + [True] * 3)
    for peak in sorted(result.memory, key=lambda p: (p.tool != "tracemalloc", p.shape, p.dtype, p.pass_name, p.method)):
        cells = (
            [_bytes(peak.peak_bytes), _bytes(peak.bytes_per_row), _percent(peak.fraction_of_logits)]
            if peak.status == OK
            else [peak.status, "", ""]
        )
        table.rows.append([_shape_text(peak.shape), peak.dtype, peak.method, peak.pass_name, peak.tool, *cells])
    return table


def _compilation_text(result: BenchResult) -> str:
    compilation = result.compilation
    if compilation is None:
        return ""
    if compilation.status != OK or compilation.cold is None or compilation.warm is None:
        return f"Compilation: {compilation.status}: {compilation.note}"
    return (
        "Compilation, import + first forward and forward+grad calls in a fresh process: "
        f"{compilation.cold['total_s']:.2f} s with an empty NUMBA_CACHE_DIR (compiling), "
        f"{compilation.warm['total_s']:.2f} s with the cache filled "
        f"(of which import {compilation.warm['import_s']:.2f} s)"
    )


def _environment_text(result: BenchResult) -> str:
    env, config = result.environment, result.config
    return (
        f"{env['processor']}, {env['cpu_count']} cores; NumPy {env['numpy']}, PyTorch {env['torch']} "
        f"({env['torch_threads']} threads), Numba {env['numba']} ({env['numba_threads']} threads, "
        f"{env.get('numba_threading_layer', 'unknown')} layer). "
        f"Median of {config.repeat} repetitions after a warm-up"
        f"{f' (generic path: {config.generic_repeat})' if config.generic else ''}; run time {result.total_s:.0f} s; "
        f"other processes used {_percent(env.get('other_processes_cpu_share')) or 'an unknown share'} of the cores."
    )


def _print_tables(result: BenchResult) -> None:
    tables = [_bandwidth_table(result), _timing_table(result), _memory_table(result)]
    footer = [_compilation_text(result), _environment_text(result), "Files: " + ", ".join(result.files)]
    print_tables(tables, footer)


def _csv_rows(result: BenchResult) -> Iterator[dict[str, Any]]:
    for row in result.measurements:
        record = row.as_dict()
        record["shape"] = _shape_text(row.shape)
        record["n"], record["v"] = row.shape
        record["times_ms"] = ";".join(repr(value) for value in row.times_ms)
        yield {key: "" if value is None else value for key, value in record.items()}


CSV_COLUMNS = (
    "shape",
    "n",
    "v",
    "dtype",
    "method",
    "pass",
    "status",
    "median_ms",
    "times_ms",
    "torch_ms",
    "speedup_vs_torch",
    "floor_ms",
    "fraction_of_floor",
    "floor_alloc_ms",
    "fraction_of_floor_alloc",
    "bytes_moved",
    "gb_per_s",
    "loss",
    "note",
)


def _write_csv(result: BenchResult, stream: IO[str]) -> None:
    writer = csv.DictWriter(stream, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for record in _csv_rows(result):
        writer.writerow(record)


def _write_chart(result: BenchResult, stream: IO[bytes]) -> None:
    """Grouped bars of the median milliseconds per (shape, dtype), log scale, with the floor drawn across each group."""
    from matplotlib.figure import Figure

    groups = [(bandwidth.shape, bandwidth.dtype, bandwidth) for bandwidth in result.bandwidths]
    rows = {(row.shape, row.dtype, row.method, row.pass_name): row for row in result.loss_rows() if row.status == OK}
    methods = [method for method in LOSS_METHODS if any(key[2] == method for key in rows)]
    figure = Figure(figsize=(max(8.0, 1.7 * len(groups)), 8.0), layout="constrained")
    axes = figure.subplots(2, 1, sharex=True)
    width = 0.8 / max(1, len(methods))
    positions = np.arange(len(groups), dtype=float)
    for axis, pass_name, floor_label in (
        (axes[0], FORWARD, "floor: logits read once"),
        (axes[1], FORWARD_GRAD, "floor: copy into a buffer"),
    ):
        for index, method in enumerate(methods):
            offset = (index - (len(methods) - 1) / 2) * width
            bars = [
                (position + offset, rows[shape, dtype, method, pass_name].median_ms)
                for position, (shape, dtype, _) in zip(positions, groups, strict=True)
                if (shape, dtype, method, pass_name) in rows
            ]
            if bars:
                axis.bar([x for x, _ in bars], [ms for _, ms in bars], width, label=method, color=f"C{index}")
        floors = [
            (position, bandwidth.read_ms if pass_name == FORWARD else bandwidth.copy_ms)
            for position, (_, _, bandwidth) in zip(positions, groups, strict=True)
        ]
        floors = [(x, ms) for x, ms in floors if ms is not None]
        if floors:
            axis.hlines(
                [ms for _, ms in floors],
                [x - 0.45 for x, _ in floors],
                [x + 0.45 for x, _ in floors],
                colors="black",
                linestyles="dashed",
                label=floor_label,
            )
        axis.set_yscale("log")
        axis.set_ylabel("milliseconds (median, log scale)")
        axis.set_title(f"softmax cross-entropy, {pass_name}", loc="left")
        axis.grid(axis="y", which="both", alpha=0.3)
        axis.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    axes[1].set_xticks(positions, [f"{_shape_text(shape)}\n{dtype}" for shape, dtype, _ in groups])
    figure.savefig(stream, format="png", dpi=110)


def _headlines(result: BenchResult) -> list[str]:
    rows = {(row.shape, row.dtype, row.method, row.pass_name): row for row in result.loss_rows()}
    lines = []
    for bandwidth in result.bandwidths:
        key = (bandwidth.shape, bandwidth.dtype)
        forward, grad, out = (rows.get((*key, method, pass_name)) for method, pass_name in _HEADLINE_ROWS)
        parts = []
        if forward is not None and forward.status == OK:
            speedup, fraction = _times(forward.speedup_vs_torch), _percent(forward.fraction_of_floor)
            parts.append(f"forward {speedup} PyTorch, {fraction} of the read floor")
        if grad is not None and grad.status == OK:
            parts.append(
                f"forward+grad {_times(grad.speedup_vs_torch)} PyTorch, {_percent(grad.fraction_of_floor)} of the copy "
                f"floor ({_percent(grad.fraction_of_floor_alloc)} of a copy into a new array)"
            )
        if out is not None and out.status == OK:
            speedup, fraction = _times(out.speedup_vs_torch), _percent(out.fraction_of_floor)
            parts.append(f"into a reused buffer (`out=`) {speedup}, {fraction} of the copy floor")
        failed = [row for row in (forward, grad, out) if row is not None and row.status == FAILED]
        if failed:
            parts.append(f"{len(failed)} kernel measurement(s) failed")
        summary = "; ".join(parts) or "no kernel timing"
        lines.append(f"- **{_shape_text(bandwidth.shape)} {bandwidth.dtype}**: {summary}")
    return lines


_HEADLINE_ROWS = ((KERNELS, FORWARD), (KERNELS, FORWARD_GRAD), (KERNELS_OUT, FORWARD_GRAD))


def _markdown(result: BenchResult) -> str:
    sections = [
        "# Softmax cross-entropy benchmark",
        _environment_text(result),
        "Kernels against PyTorch's `cross_entropy` (speed-up = PyTorch ms / kernels ms) and against the "
        "memory-bandwidth floor (floor time / measured time; the floor is the logits read once for the forward "
        "pass, read once plus the gradient written once for forward+grad):",
        "\n".join(_headlines(result)),
        "## Bandwidth floor",
        render_markdown(_bandwidth_table(result)),
        "## Median milliseconds",
        "`of floor`: against the read floor (forward) or a copy into an existing buffer (forward+grad); "
        "`of floor, new array`: against `x.copy()`, which also pays for fresh pages. All repetitions are in the CSV.",
        render_markdown(_timing_table(result)),
        "## Peak extra memory",
        "`tracemalloc`: NumPy and Python allocations during the call; `rss`: growth of the peak resident set "
        "in a fresh subprocess (page-granular, sees PyTorch's allocator too).",
        render_markdown(_memory_table(result)),
        "## Compilation",
        _compilation_text(result),
    ]
    failures = result.failures()
    if failures:
        sections += ["## Failed measurements", "\n".join(f"- {line}" for line in failures)]
    return "\n\n".join(sections) + "\n"


def write_outputs(result: BenchResult, out_dir: Path) -> list[Path]:
    """Write the CSV, the PNG chart and the markdown summary into ``out_dir``, each atomically.

    Parameters
    ----------
    result : BenchResult
        What :func:`run_benchmark` returned; its ``files`` are set to the paths written.
    out_dir : Path
        An existing directory.

    Returns
    -------
    list of Path
        ``<stem>.csv``, ``<stem>.png`` and ``<stem>.md``.
    """
    csv_path, png_path, md_path = (out_dir / f"{FILE_STEM}{suffix}" for suffix in (".csv", ".png", ".md"))
    result.files = [str(path) for path in (csv_path, png_path, md_path)]
    write_atomic(csv_path, lambda stream: _write_csv(result, stream))
    write_atomic(png_path, lambda stream: _write_chart(result, stream), binary=True)
    write_atomic(md_path, lambda stream: stream.write(_markdown(result)))
    return [csv_path, png_path, md_path]
