"""Output files of the applications, written atomically, and matplotlib without a window.

A file goes to a temporary name in its directory first and is renamed over the final name only
when complete, so a reader never sees half a file and an interrupted run leaves the old one.
:func:`write_all_atomic` does so for several files at once: all are complete before any is
renamed, so an interrupted run leaves the old set (or none), not a mix.
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["figure_png", "pyplot", "write_all_atomic", "write_atomic", "write_figure"]


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


def write_all_atomic(contents: Mapping[Path, bytes]) -> list[Path]:
    """Write each ``path: content`` pair, renaming them into place only once every one is complete.

    An exception or an interrupt before the renames leaves every final name as it was and no
    temporary file behind. Returns the paths, in order.
    """
    temporaries: list[str] = []
    try:
        for path, data in contents.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            temporaries.append(temporary)
            with os.fdopen(descriptor, "wb") as file:
                file.write(data)
            os.chmod(temporary, 0o666 & ~_umask())
        for temporary, path in zip(temporaries, contents, strict=True):
            os.replace(temporary, path)
    except BaseException:
        for temporary in temporaries:
            Path(temporary).unlink(missing_ok=True)
        raise
    return list(contents)


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


def figure_png(figure: Any) -> bytes:
    """A matplotlib figure as PNG bytes (rendered in memory, then closed)."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    try:
        figure.savefig(buffer, format="png", dpi=110)
    finally:
        plt.close(figure)
    return buffer.getvalue()


def pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend (files only, no window)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
