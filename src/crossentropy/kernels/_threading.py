"""Numba's threading layer for the kernels: fork-safe, thread-safe, and idle between calls.

Numba runs the kernels' ``prange`` loops on one of three threading layers. The layer is
process-wide, and it is fixed at Numba's first parallel launch in the process (the first call
of any parallel function, or ``numba.get_num_threads()``/``set_num_threads()``): choosing one
later changes nothing.

============  ================================  ==========================  ========================
layer         a ``fork`` child calling a kernel  kernels on several threads  after each call
============  ================================  ==========================  ========================
``omp``       killed: "fork() called from a     safe                        the workers spin: 3-7 ms
              process already using GNU                                     of CPU (GNU OpenMP's
              OpenMP"                                                       default wait policy)
``tbb``       safe                              safe                        0.6-0.9 ms of CPU
``workqueue`` safe                              aborts the process, unless  asleep: 0.05 ms of CPU
                                                the launches take turns
============  ================================  ==========================  ========================

Numba's default order is ``tbb``, ``omp``, ``workqueue``, and TBB is rarely there (it needs
``pip install tbb``, and even then Numba does not find ``libtbb`` in a virtual environment
without ``LD_LIBRARY_PATH``), so on Linux Numba's default is GNU OpenMP: a ``multiprocessing``
fork child or a ``torch.utils.data.DataLoader`` worker that computes a loss after its parent did
is killed, and the OpenMP workers spin after each kernel, on the cores BLAS and PyTorch need next.

What this package does, at import (:func:`configure`): unless the user chose
(``NUMBA_THREADING_LAYER`` or ``NUMBA_THREADING_LAYER_PRIORITY`` in the environment, a
``.numba_config.yaml``, or ``numba.config.THREADING_LAYER``/``THREADING_LAYER_PRIORITY`` changed
before the first parallel launch) and unless Numba's threads already run, it moves ``workqueue``
ahead of ``omp`` in Numba's priority; and on Linux it loads the ``tbb`` package's ``libtbb``
when that package is installed (also when the user chose ``tbb``), so that Numba finds it. The
layer is then TBB when ``tbb`` is installed (fork- and thread-safe, the fastest to start a small
call), else ``workqueue``, which is built into Numba on every platform: fork-safe and asleep
between calls. ``workqueue`` is not thread-safe, so :func:`launch_lock` makes the kernels'
launches take turns under it (a lock, only for that layer); a kernel uses every Numba thread
already, so callers on several threads lose little by waiting. Its price is the hand-over to its
worker threads: about 60 µs more per call than a spinning GNU OpenMP (a 64x1000 forward pass:
110-200 µs against 75-100 µs, TBB 85-90 µs, on this project's loaded 2-core machine, where GNU
OpenMP also took 6-8 ms per call in some processes, its spinning threads waiting for each
other), and none on large inputs (4096x32000 float32, forward and gradient, by ``crossentropy
bench`` in alternating runs with other processes on half the cores: 61 and 40 ms on
``workqueue``, 67 and 71 ms on GNU OpenMP).

``tbb`` is not a dependency: its wheels exist for x86-64 only (no ARM Linux, no Apple silicon),
under Intel's own licence, and add 10 MB; ``workqueue`` meets the three requirements everywhere.
Other Numba code of the process is not covered by the lock: whoever runs parallel Numba
functions of their own on several threads at once should install ``tbb`` or choose
``NUMBA_THREADING_LAYER=omp`` (not fork-safe), which this package respects. Measured by
``benchmarks/threads_after_kernel.py`` (``benchmarks/results/threads_after_kernel.md``).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import threading
from typing import Any

import numba

# Numba's default priority, and this package's: the same without GNU OpenMP ahead of workqueue.
_NUMBA_PRIORITY = ["tbb", "omp", "workqueue"]
_PRIORITY = ["tbb", "workqueue", "omp"]
# Layers that abort when two threads launch parallel work at once.
_NOT_THREAD_SAFE = frozenset({"workqueue"})

_lock = threading.Lock()
_serialize: bool | None = None  # whether the active layer needs the lock; None until known
_tbb_preloaded = False


def _reset_after_fork() -> None:
    # A lock held by another thread at the fork stays held in the child, where no thread releases it.
    global _lock
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


def started() -> bool:
    """Whether Numba's threads run already, and so its threading layer is fixed."""
    try:
        numba.threading_layer()
    except ValueError:
        return False
    return True


def user_chose() -> bool:
    """Whether the user chose Numba's threading layer or its priority (environment, config file or ``numba.config``)."""
    if "NUMBA_THREADING_LAYER" in os.environ or "NUMBA_THREADING_LAYER_PRIORITY" in os.environ:
        return True
    if str(numba.config.THREADING_LAYER).lower() != "default":
        return True
    return list(numba.config.THREADING_LAYER_PRIORITY) not in (_NUMBA_PRIORITY, _PRIORITY)


def configure() -> None:
    """Put ``workqueue`` ahead of GNU OpenMP in Numba's priority, unless the user chose or the layer is fixed.

    Also makes an installed ``tbb`` package findable by Numba, unless the layer cannot be TBB.
    """
    if started():
        return
    if not user_chose():
        numba.config.THREADING_LAYER_PRIORITY = list(_PRIORITY)
    if str(numba.config.THREADING_LAYER).lower() not in ("omp", "workqueue"):
        _preload_tbb()


def _preload_tbb() -> None:
    """Load the ``tbb`` wheel's ``libtbb`` (Linux): Numba looks it up by name and misses it in a virtual environment.

    Once loaded, Numba's own lookup finds it (by its soname) and checks its version as usual; a
    missing or unloadable library leaves the choice to Numba.
    """
    global _tbb_preloaded
    if _tbb_preloaded or not sys.platform.startswith("linux"):
        return
    _tbb_preloaded = True
    try:
        from importlib import metadata

        files = metadata.files("tbb") or []
    except Exception:  # not installed, or metadata unreadable
        return
    for file in files:
        if file.name == "libtbb.so.12":
            with contextlib.suppress(OSError):
                ctypes.CDLL(str(file.locate()), mode=ctypes.RTLD_GLOBAL)
            return


def _start() -> bool:
    """Start Numba's threads on the layer :func:`configure` picks; True when the layer needs :func:`launch_lock`."""
    if not started():
        # Numba re-reads its environment variables when it compiles, which resets the priority if
        # one changed since the import: read them now, pick again, and start the threads at once.
        numba.config.reload_config()
        configure()
        numba.get_num_threads()
    return numba.threading_layer() in _NOT_THREAD_SAFE


def launch_lock() -> Any:
    """A context manager to hold around a kernel call: the process's lock under ``workqueue``, else a no-op.

    Starts Numba's threads first, on the layer of :func:`configure` unless they run already.
    """
    global _serialize
    if _serialize is None:
        _serialize = _start()
    return _lock if _serialize else contextlib.nullcontext()
