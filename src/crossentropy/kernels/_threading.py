"""Numba's threading layer for the kernels: fork-safe, thread-safe, and idle between calls.

Numba runs the kernels' ``prange`` loops on one of three threading layers. The layer is
process-wide, and it is fixed at Numba's first parallel launch in the process (the first call
of any parallel function, or ``numba.get_num_threads()``/``set_num_threads()``): choosing one
later changes nothing.

============  ===================================  ==========================  =======================
layer         a ``fork`` child calling a kernel    kernels on several threads  between calls
============  ===================================  ==========================  =======================
``omp``       killed: "fork() called from a        safe                        workers spin (GNU
              process already using GNU OpenMP"                                OpenMP, ~3 ms a call)
``tbb``       safe                                 safe                        asleep
``workqueue`` safe                                 aborts the process, unless  asleep
                                                   the launches are serialized
============  ===================================  ==========================  =======================

Numba's default order is ``tbb``, ``omp``, ``workqueue``, and TBB is rarely there (it needs
``pip install tbb``, and even then Numba does not find ``libtbb`` in a plain virtual
environment without ``LD_LIBRARY_PATH``), so on Linux Numba's default is GNU OpenMP: a
``multiprocessing`` fork child or a ``torch.utils.data.DataLoader`` worker that computes a loss
after the parent did is killed, and the OpenMP workers spin after each kernel, taking cores from
BLAS and PyTorch in the same process.

What this package does, at import (:func:`configure`): unless the user chose
(``NUMBA_THREADING_LAYER`` or ``NUMBA_THREADING_LAYER_PRIORITY`` in the environment, a
``.numba_config.yaml``, or ``numba.config.THREADING_LAYER``/``THREADING_LAYER_PRIORITY`` changed
before the first parallel launch) and unless Numba's threads already run, it moves ``workqueue``
ahead of ``omp`` in Numba's priority. The layer is then TBB where Numba can load it (fork- and
thread-safe), else ``workqueue``, which is built into Numba on every platform: fork-safe and
asleep between calls. ``workqueue`` is not thread-safe, so :func:`launch_lock` serializes the
kernels' launches under it (a lock, only for that layer). A kernel uses every Numba thread
already, so callers on several threads lose little by taking turns. Other Numba code of the
process is not covered by the lock: whoever runs parallel Numba functions of their own on
several threads at once should choose ``NUMBA_THREADING_LAYER=tbb`` (with TBB installed) or
``omp`` (not fork-safe), which this package respects. The choice is measured in
``benchmarks/threads_after_kernel.py`` (``benchmarks/results/threads_after_kernel.md``).
"""

from __future__ import annotations

import contextlib
import os
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
    """Put ``workqueue`` ahead of GNU OpenMP in Numba's priority, unless the user chose or the layer is fixed."""
    if not started() and not user_chose():
        numba.config.THREADING_LAYER_PRIORITY = list(_PRIORITY)


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
