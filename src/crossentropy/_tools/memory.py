"""Peak-memory probes: tracemalloc in this process, and the peak resident set of a worker process.

The resident-set probe is Linux's: ``VmHWM`` in ``/proc/self/status`` is the process's peak
resident set, and writing ``5`` to ``/proc/self/clear_refs`` resets it to the current one, so the
growth during one call is ``VmHWM`` after it minus ``VmRSS`` before it. Measure it in a fresh
worker process started with :data:`WORKER_ENV` (glibc's mmap threshold frozen at its default, so
that every large block gets fresh pages instead of pages an earlier call freed): memory freed
by earlier calls is then not reused unseen. Page-granular: exact to a fraction of a percent at
hundreds of megabytes, noisy below a megabyte. Worker scripts written as source text (the
benchmarks') import :func:`proc_status_bytes` and :func:`reset_peak_rss`.
"""

from __future__ import annotations

import gc
import os
import tracemalloc
from collections.abc import Callable
from typing import Any

__all__ = [
    "WORKER_ENV",
    "proc_status_bytes",
    "reset_peak_rss",
    "rss_peak",
    "tracemalloc_peak",
    "worker_env",
]

#: Environment for a worker process that measures resident-set peaks: glibc adjusts its mmap
#: threshold upwards as large blocks are freed, after which a call can reuse pages the process
#: already holds; setting it (to glibc's own default, 128 KiB) freezes it.
WORKER_ENV = {"MALLOC_MMAP_THRESHOLD_": str(128 * 1024)}


def proc_status_bytes(key: str) -> int:
    """Bytes of an entry of ``/proc/self/status`` (``"VmRSS"``, ``"VmHWM"``; Linux).

    Parameters
    ----------
    key : str

    Returns
    -------
    int

    Raises
    ------
    OSError
        Not on Linux, or no such entry.
    """
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024  # reported in kB
    raise OSError(f"no {key} in /proc/self/status")


def reset_peak_rss() -> None:
    """Reset the process's peak resident set (``VmHWM``) to the current one (Linux).

    Raises
    ------
    OSError
        Where ``/proc/self/clear_refs`` cannot be written.
    """
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")


def rss_peak(call: Callable[[], Any]) -> int:
    """Growth of the peak resident set during one call of ``call``, in bytes (Linux).

    Run it in a worker process started with :data:`WORKER_ENV` (see the module's notes), after a
    warm-up on small inputs.

    Parameters
    ----------
    call : callable
        Called once with no argument.

    Returns
    -------
    int
        ``VmHWM`` after the call minus ``VmRSS`` before it, at least 0.
    """
    gc.collect()
    reset_peak_rss()
    before = proc_status_bytes("VmRSS")
    result = call()
    peak = max(0, proc_status_bytes("VmHWM") - before)
    del result
    return peak


def tracemalloc_peak(call: Callable[[], Any]) -> int:
    """Peak bytes that Python and NumPy allocate during one call of ``call`` (NumPy reports to tracemalloc).

    Parameters
    ----------
    call : callable
        Called once with no argument; warm it up first (compilation allocates too).

    Returns
    -------
    int
        The traced peak above the traced memory at the start.
    """
    gc.collect()
    tracemalloc.start()
    try:
        baseline, _ = tracemalloc.get_traced_memory()
        result = call()
        _, high = tracemalloc.get_traced_memory()
        del result
    finally:
        tracemalloc.stop()
    return high - baseline


def worker_env() -> dict[str, str]:
    """This process's environment with :data:`WORKER_ENV` added, for a worker that measures peaks.

    Returns
    -------
    dict of str to str
    """
    return {**os.environ, **WORKER_ENV}
