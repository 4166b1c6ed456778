"""Output files of the commands, written atomically, and matplotlib without a window.

A file goes to a temporary name in its directory first and is renamed over the final name only
when complete, so a reader never sees half a file and an interrupted run leaves the old one.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["pyplot", "write_atomic", "write_figure"]


def write_atomic(path: Path, write: Callable[[Any], None], *, binary: bool = False) -> Path:
    """Write ``path`` through ``write(file)`` into a temporary file, then rename it into place.

    ``file`` is binary with ``binary``, else UTF-8 text written as given (no newline translation,
    as :mod:`csv` writers need). The file gets the mode a plain ``open`` would give it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    text = {} if binary else {"encoding": "utf-8", "newline": ""}
    try:
        with os.fdopen(descriptor, "wb" if binary else "w", **text) as file:
            write(file)
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes it private; give it the mode a plain open would
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_figure(path: Path, figure: Any) -> Path:
    """Save a matplotlib figure as PNG atomically and close it."""
    import matplotlib.pyplot as plt

    try:
        return write_atomic(path, lambda file: figure.savefig(file, format="png", dpi=110), binary=True)
    finally:
        plt.close(figure)


def pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend (files only, no window)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
