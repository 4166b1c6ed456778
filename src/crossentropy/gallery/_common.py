"""What every gallery experiment shares: its context, its result, tables, figures and data helpers.

An experiment is a module of :mod:`crossentropy.gallery` with a module-level ``EXPERIMENT``
(an :class:`Experiment`) whose ``run(context)`` returns a :class:`Result`: the numbers that
make its claim (checked by the tests), the tables it prints and the PNG figures it wrote into
``context.out``. ``context.quick`` asks for a run of seconds (fewer epochs, fewer repeats),
which must still show the claim; everything is deterministic under ``context.seed``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._tools import tables
from .._tools.data import single_thread, standardize, stratified_split
from .._tools.files import pyplot, write_figure

__all__ = [
    "Context",
    "Experiment",
    "Result",
    "Table",
    "format_value",
    "pyplot",
    "save_figure",
    "single_thread",
    "standardize",
    "stratified_split",
]


@dataclass(frozen=True)
class Context:
    """Where and how an experiment runs.

    Attributes
    ----------
    out : Path
        The experiment's own folder for figures (created by the runner).
    quick : bool
        A run of seconds for tests and CI; the full run's numbers go into ``docs/gallery.md``.
    seed : int
        Every random choice derives from it (``numpy.random.default_rng(seed)``, ``torch.manual_seed``).
    """

    out: Path
    quick: bool = False
    seed: int = 0

    def rng(self, offset: int = 0) -> np.random.Generator:
        """A generator seeded with ``seed + offset`` (offsets keep independent streams apart)."""
        return np.random.default_rng(self.seed + offset)


@dataclass
class Table:
    """A titled table: column names and rows of values (numbers are formatted on output)."""

    title: str
    columns: Sequence[str]
    rows: list[Sequence[Any]]

    def _cells(self) -> tables.Table:
        return tables.Table(
            self.title, [str(c) for c in self.columns], [[format_value(v) for v in row] for row in self.rows]
        )

    def as_text(self) -> str:
        """The table as aligned text, the title underlined (:func:`crossentropy._tools.tables.render_plain`)."""
        return tables.render_plain(self._cells(), underline_title=True, strip=False)

    def as_markdown(self) -> str:
        """The table in Markdown under its title in bold (:func:`crossentropy._tools.tables.render_markdown`)."""
        return tables.render_markdown(self._cells(), title=True, align=False)

    def as_dict(self) -> dict[str, Any]:
        return {"title": self.title, "columns": list(self.columns), "rows": [list(row) for row in self.rows]}


def format_value(value: Any) -> str:
    """Numbers with four significant decimals (or an integer as is); anything else as ``str``."""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}" if abs(int(value)) >= 10_000 else str(int(value))
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if math.isnan(value) or math.isinf(value):
            return str(value)
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
            return f"{value:.3e}"
        return f"{value:.4f}"
    return str(value)


@dataclass
class Result:
    """What an experiment found.

    Attributes
    ----------
    numbers : dict
        The figures that make the claim, JSON-friendly (floats, ints, bools, lists, dicts); the
        tests assert the claim on them.
    tables : list of Table
    figures : list of Path
        PNG files written into ``context.out``.
    """

    numbers: dict[str, Any]
    tables: list[Table] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)


@dataclass(frozen=True)
class Experiment:
    """A named, runnable claim of the gallery."""

    name: str
    title: str
    claim: str
    run: Callable[[Context], Result]

    def __call__(self, context: Context) -> Finished:
        context.out.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        result = self.run(context)
        return Finished(self, context, result, time.perf_counter() - start)


@dataclass
class Finished:
    """An experiment's result with what ran it and how long it took."""

    experiment: Experiment
    context: Context
    result: Result
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.experiment.name,
            "title": self.experiment.title,
            "claim": self.experiment.claim,
            "quick": self.context.quick,
            "seed": self.context.seed,
            "seconds": self.seconds,
            "numbers": _plain(self.result.numbers),
            "tables": [table.as_dict() for table in self.result.tables],
            "figures": [str(path) for path in self.result.figures],
        }

    def as_text(self) -> str:
        head = f"{self.experiment.name}: {self.experiment.title}"
        parts = [head, "=" * len(head), f"Claim: {self.experiment.claim}", ""]
        for table in self.result.tables:
            parts += [table.as_text(), ""]
        if self.result.figures:
            parts.append("figures: " + ", ".join(str(path) for path in self.result.figures))
        parts.append(
            f"({self.seconds:.1f} s, {'quick' if self.context.quick else 'full'} run, seed {self.context.seed})"
        )
        return "\n".join(parts)


def _plain(value: Any) -> Any:
    """NumPy scalars and arrays inside ``value`` as Python numbers and lists (for JSON)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    return value


def save_figure(context: Context, name: str, figure: Any) -> Path:
    """Write a matplotlib figure as ``context.out / name`` (PNG, atomically) and close it."""
    return write_figure(context.out / name, figure)
