"""A progress bar on stderr for long work: rich's on a terminal, nothing in pipes and logs."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["Progress", "progress_bar"]


class Progress:
    """``update(done, total)`` reports how far the work is. This base class shows nothing."""

    def update(self, done: float, total: float) -> None:
        pass


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
