"""The gallery: the claims of cross-entropy as runnable experiments on real data.

Each experiment (``crossentropy gallery NAME``) is built on the library's own losses and
gradients, runs on data sets bundled with the package (:mod:`crossentropy.data`) or generated
with a fixed seed, prints its tables, writes its figures and returns its numbers, so that the
tests can check the claim. :func:`run` runs several and :func:`write_index` writes the HTML page
of their figures and tables; :func:`write_markdown` writes the numbers for ``docs/gallery.md``.
"""

from __future__ import annotations

import html
import importlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path

from .._tools.tables import Table as TextTable
from .._tools.tables import render_html
from ._common import Context, Experiment, Finished, Result, Table, format_value

__all__ = ["NAMES", "Context", "Experiment", "Finished", "Result", "Table", "experiment", "run", "write_index"]

# Module of each experiment, in the order of the gallery.
_MODULES = {
    "surprise": "surprise",
    "gradient": "gradient",
    "mse-vs-ce": "mse_vs_ce",
    "imbalance": "imbalance",
    "label-smoothing": "label_smoothing",
    "multilabel": "multilabel",
    "noisy-labels": "noisy_labels",
    "sequence-smoothness": "sequence_smoothness",
    "fairness": "fairness",
    "adversarial": "adversarial",
    "vae": "vae",
    "gan": "gan",
    "self-supervised": "self_supervised",
}
NAMES = tuple(_MODULES)


def experiment(name: str) -> Experiment:
    """The experiment called ``name`` (one of :data:`NAMES`)."""
    if name not in _MODULES:
        raise ValueError(f"`name` must be one of {', '.join(NAMES)}; got {name!r}")
    module = importlib.import_module(f"{__name__}.{_MODULES[name]}")
    return module.EXPERIMENT


def run(
    names: Sequence[str],
    out: Path,
    *,
    quick: bool = False,
    seed: int = 0,
    announce: Callable[[str], None] | None = None,
) -> list[Finished]:
    """Run the experiments ``names`` in order, each with its figures in ``out / name``."""
    finished = []
    for name in names:
        chosen = experiment(name)
        if announce is not None:
            announce(name)
        finished.append(chosen(Context(out=out / name, quick=quick, seed=seed)))
    return finished


_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 66rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
table { border-collapse: collapse; margin: 0.6rem 0 1.2rem; }
th, td { padding: 0.2rem 0.7rem; border-bottom: 1px solid #ddd; text-align: right; }
th:first-child, td:first-child { text-align: left; }
img { max-width: 100%; margin: 0.4rem 0; }
.claim { font-style: italic; }
"""


def write_index(finished: Sequence[Finished], out: Path) -> Path:
    """Write ``out / index.html`` (every experiment's claim, tables and figures) and ``out / gallery.json``."""
    from .._tools.files import write_atomic

    sections = []
    for done in finished:
        name = done.experiment.name
        parts = [
            f'<h2 id="{html.escape(name)}">{html.escape(name)}: {html.escape(done.experiment.title)}</h2>',
            f'<p class="claim">{html.escape(done.experiment.claim)}</p>',
        ]
        for table in done.result.tables:
            cells = TextTable(
                table.title, [str(c) for c in table.columns], [[format_value(v) for v in row] for row in table.rows]
            )
            parts.append(f"<h3>{html.escape(table.title)}</h3>{render_html(cells)}")
        for figure in done.result.figures:
            relative = figure.relative_to(out) if figure.is_relative_to(out) else figure
            parts.append(f'<p><img src="{html.escape(str(relative))}" alt="{html.escape(figure.stem)}"></p>')
        mode = "quick" if done.context.quick else "full"
        parts.append(f"<p>{done.seconds:.1f} s, {mode} run, seed {done.context.seed}.</p>")
        sections.append("\n".join(parts))
    contents = "".join(
        f'<li><a href="#{html.escape(d.experiment.name)}">{html.escape(d.experiment.name)}</a></li>' for d in finished
    )
    page = (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>crossentropy gallery</title>'
        f"<style>{_STYLE}</style></head><body>\n<h1>crossentropy gallery</h1>\n<ul>{contents}</ul>\n"
        + "\n".join(sections)
        + "\n</body></html>\n"
    )
    write_atomic(out / "gallery.json", lambda file: json.dump([d.as_dict() for d in finished], file, indent=2))
    return write_atomic(out / "index.html", lambda file: file.write(page))


def write_markdown(finished: Sequence[Finished], path: Path) -> Path:
    """The experiments' claims and tables as markdown (``docs/gallery.md`` holds the full run's)."""
    from .._tools.files import write_atomic

    lines = [
        "# Gallery",
        "",
        "The claims of cross-entropy as experiments on real data: `crossentropy gallery NAME` runs one,",
        "`crossentropy gallery` all of them and writes an HTML page of figures and tables. The numbers",
        "below are those of the full run (`crossentropy gallery --markdown docs/gallery.md`), on a 2-core machine.",
        "",
    ]
    for done in finished:
        lines += [f"## `{done.experiment.name}`: {done.experiment.title}", "", f"*{done.experiment.claim}*", ""]
        for table in done.result.tables:
            lines += [table.as_markdown(), ""]
        lines += [
            f"({done.seconds:.1f} s, {'quick' if done.context.quick else 'full'} run, seed {done.context.seed})",
            "",
        ]
    return write_atomic(path, lambda file: file.write("\n".join(lines)))
