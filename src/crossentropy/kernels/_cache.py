"""Numba's on-disk cache of the kernels, made to notice edits to any kernel source file.

Numba keys a cached kernel on the source file of the jitted function alone, so an edit to a
helper in another file (``_math.py``) would keep loading stale machine code. :func:`refresh`
stamps the cache directory with a digest of every source file of this package and clears a
module's cached kernels when the digest changes.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

_SOURCES = Path(__file__).parent


def _digest() -> str:
    sha = hashlib.sha256()
    for path in sorted(_SOURCES.glob("*.py")):
        sha.update(path.name.encode())
        sha.update(path.read_bytes())
    return sha.hexdigest()


def refresh(*dispatchers: Any) -> None:
    """Clear the cached code of the modules of ``dispatchers`` if a kernel source changed since it was written.

    A cache directory that cannot be read or written is left alone (Numba then compiles in
    memory, as it does without a cache).
    """
    digest = _digest()
    for dispatcher in dispatchers:
        cache = getattr(dispatcher, "_cache", None)
        cache_dir = getattr(cache, "_cache_path", None)
        if cache_dir is None:
            continue
        module = dispatcher.py_func.__module__.rsplit(".", 1)[-1]
        stamp = Path(cache_dir) / f"{module}.sources.sha256"
        try:
            if stamp.is_file() and stamp.read_text() == digest:
                continue
            for stale in Path(cache_dir).glob(f"{module}.*.nb[ic]"):
                stale.unlink()
            stamp.parent.mkdir(parents=True, exist_ok=True)
            stamp.write_text(digest)
        except OSError:
            continue
