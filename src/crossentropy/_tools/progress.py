"""Progress on stderr for long work: rich's bar on a terminal; in pipes and logs nothing, or one line per step.

:func:`progress_bar` reports amounts (``update(done, total)``: rows, bytes, epochs), silent off a
terminal; :func:`step_progress` announces named steps (``step(description)``), as one line each
off a terminal (``crossentropy bench`` runs for minutes and its log should say where it is).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

__all__ = ["Progress", "StepProgress", "progress_bar", "step_progress"]


class Progress:
    """``update(done, total)`` reports how far the work is. This base class shows nothing."""

    def update(self, done: float, total: float) -> None:
        """Report ``done`` of ``total``.

        Parameters
        ----------
        done, total : float
        """


class _RichBar(Progress):
    def __init__(self, bar: Any, task: Any) -> None:
        self.bar, self.task = bar, task

    def update(self, done: float, total: float) -> None:
        self.bar.update(self.task, completed=done, total=total)


@contextmanager
def progress_bar(description: str, *, unit: str = "rows", enabled: bool | None = None) -> Iterator[Progress]:
    """A transient bar while the block runs.

    Parameters
    ----------
    description : str
        Text left of the bar.
    unit : {"rows", "bytes", "epochs"}
        How the amounts are shown (``"bytes"`` as sizes and a transfer rate).
    enabled : bool, optional
        Force the bar on or off; by default it is shown when stderr is a terminal and rich is installed.

    Yields
    ------
    Progress
        Its ``update(done, total)`` moves the bar.
    """
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        yield Progress()
        return
    try:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )
        from rich.progress import Progress as RichProgress
    except ImportError:
        yield Progress()
        return
    amounts = (DownloadColumn(), TransferSpeedColumn()) if unit == "bytes" else (MofNCompleteColumn(),)
    columns = (TextColumn("{task.description}"), BarColumn(), *amounts, TimeElapsedColumn(), TimeRemainingColumn())
    with RichProgress(*columns, console=Console(stderr=True), transient=True) as bar:
        yield _RichBar(bar, bar.add_task(description, total=None))


class StepProgress:
    """``step(description)`` announces the next step. This base class is silent."""

    def step(self, description: str) -> None:
        """Announce the next step.

        Parameters
        ----------
        description : str
        """


class _LineSteps(StepProgress):
    """One line per step, for logs and pipes: ``PREFIX [i/n] description``."""

    def __init__(self, total: int, prefix: str, stream: IO[str]) -> None:
        self.total, self.done, self.prefix, self.stream = total, 0, prefix, stream

    def step(self, description: str) -> None:
        self.done += 1
        print(f"{self.prefix} [{self.done}/{self.total}] {description}", file=self.stream, flush=True)


class _RichSteps(StepProgress):
    def __init__(self, progress: Any, task: Any) -> None:
        self.progress, self.task, self.started = progress, task, False

    def step(self, description: str) -> None:
        self.progress.update(self.task, description=description, advance=1 if self.started else 0)
        self.started = True


@contextmanager
def step_progress(total: int, *, prefix: str, lines: bool = True) -> Iterator[StepProgress]:
    """A rich bar of ``total`` named steps on an interactive stderr; otherwise one line per step, or nothing.

    Parameters
    ----------
    total : int
        Steps expected.
    prefix : str
        Start of each line off a terminal (``"bench"`` gives ``bench [3/40] ...``).
    lines : bool, default True
        Off a terminal (or without rich), print one line per step; False: stay silent.

    Yields
    ------
    StepProgress
        Its ``step(description)`` announces each step.
    """
    rich_progress = None
    if sys.stderr.isatty():
        try:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
            from rich.progress import Progress as RichProgress
        except ImportError:
            pass
        else:
            columns = (TextColumn("{task.description:<60}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
            rich_progress = RichProgress(*columns, console=Console(stderr=True), transient=True)
    if rich_progress is None:
        yield _LineSteps(total, prefix, sys.stderr) if lines else StepProgress()
        return
    with rich_progress:
        yield _RichSteps(rich_progress, rich_progress.add_task("starting", total=total))
