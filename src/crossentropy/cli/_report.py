"""The report of ``crossentropy score --report DIR``: an HTML page with PNG figures and the numbers as JSON.

Everything is rendered in memory first, then the four files are written together
(:func:`crossentropy._tools.files.write_all_atomic`): an interrupted or failed run leaves the
directory as it was.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .._tools.files import figure_png, pyplot, write_all_atomic
from .._tools.tables import Table, render_html
from ._scoring import ScoreReport

__all__ = ["OUTPUT_NAMES", "per_class_figure", "reliability_figure", "write_report"]

OUTPUT_NAMES = ("index.html", "reliability.png", "per_class.png", "report.json")


def reliability_figure(report: ScoreReport, title: str = "Reliability diagram") -> Any:
    """Accuracy against mean confidence per bin (top label), with the bins' share of the weight below."""
    plt = pyplot()
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(5.2, 6), height_ratios=(3, 1), sharex=True)
    bins = [b for b in report.reliability if b["weight"] > 0]
    top.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=1, label="calibrated")
    top.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], marker="o", label="model")
    top.set_ylabel("accuracy")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_title(f"{title}\nECE = {report.expected_calibration_error:.4f} ({report.spec.n_bins} bins)")
    top.legend(loc="upper left")
    widths = [b["high"] - b["low"] for b in report.reliability]
    shares = [b["weight"] / report.weight for b in report.reliability]
    bottom.bar([b["low"] for b in report.reliability], shares, width=widths, align="edge", color="C0", alpha=0.6)
    bottom.set_xlabel("confidence (probability of the predicted class)")
    bottom.set_ylabel("share")
    figure.tight_layout()
    return figure


def per_class_figure(report: ScoreReport) -> Any:
    """Mean cross-entropy and recall of each true class."""
    plt = pyplot()
    rows = report.per_class
    names = [str(row["class"]) for row in rows]
    figure, (left, right) = plt.subplots(1, 2, figsize=(9, max(2.5, 0.32 * len(rows) + 1.2)), sharey=True)
    positions = list(range(len(rows)))
    left.barh(positions, [row["mean_cross_entropy"] or 0.0 for row in rows], color="C3")
    left.set_xlabel("mean cross-entropy (nats)")
    left.set_yticks(positions, names)
    left.invert_yaxis()
    right.barh(positions, [row["recall"] or 0.0 for row in rows], color="C2")
    right.set_xlabel("recall")
    right.set_xlim(0, 1)
    figure.suptitle("Per true class")
    figure.tight_layout()
    return figure


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    return render_html(Table("", list(header), [list(row) for row in rows]))


_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 62rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
table { border-collapse: collapse; margin: 1rem 0; }
th, td { padding: 0.25rem 0.8rem; border-bottom: 1px solid #ddd; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.warning { color: #8a5300; }
img { max-width: 100%; }
"""


def write_report(report: ScoreReport, directory: Path, *, title: str) -> list[Path]:
    """Write ``index.html``, ``reliability.png``, ``per_class.png`` and ``report.json`` into ``directory``.

    Returns the paths written, the HTML page first.
    """
    index, reliability, per_class, data = (directory / name for name in OUTPUT_NAMES)
    reliability_png = figure_png(reliability_figure(report))
    per_class_png = figure_png(per_class_figure(report))
    numbers = json.dumps(report.as_dict(), indent=2)
    class_header, class_rows = report.per_class_rows()
    warnings = "".join(f'<p class="warning">{html.escape(w)}</p>' for w in report.warnings)
    source = report.source
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>{_STYLE}</style></head>
<body>
<h1>{html.escape(title)}</h1>
<p>{html.escape(str(source.get("file", "")))} ({html.escape(str(source.get("format", "")))},
{int(source.get("bytes", 0)):,} bytes)</p>
{warnings}
<h2>Figures</h2>
{_table(("figure", "value"), report.summary_rows())}
<h2>Per class</h2>
{_table(class_header, class_rows)}
<h2>Calibration</h2>
<p><img src="{reliability.name}" alt="reliability diagram"></p>
<h2>Classes</h2>
<p><img src="{per_class.name}" alt="per-class cross-entropy and recall"></p>
<p>The numbers as JSON: <a href="{data.name}">{data.name}</a>.</p>
</body></html>
"""
    return write_all_atomic(
        {
            index: page.encode(),
            reliability: reliability_png,
            per_class: per_class_png,
            data: numbers.encode(),
        }
    )
