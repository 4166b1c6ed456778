"""Numba's threading layer for the kernels: fork-safe, thread-safe, idle between calls, and PyTorch's neighbour.

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
without ``LD_LIBRARY_PATH``), so on Linux Numba's default is GNU OpenMP.

**What this package does.** Unless the user chose (``NUMBA_THREADING_LAYER`` or
``NUMBA_THREADING_LAYER_PRIORITY`` in the environment, a ``.numba_config.yaml``, or
``numba.config.THREADING_LAYER``/``THREADING_LAYER_PRIORITY`` changed before the first parallel
launch) and unless Numba's threads already run, it sets Numba's priority when the kernels first
launch (:func:`launch_lock`), by whether PyTorch is in the process then:

- **Without PyTorch:** ``tbb`` (when installed), else ``workqueue``, ahead of GNU OpenMP.
  ``workqueue`` is built into Numba everywhere: fork-safe and asleep between calls. It is not
  thread-safe, so :func:`launch_lock` makes the kernels' launches take turns under it (a lock,
  only for that layer; a kernel uses every Numba thread already, so callers on several threads
  lose little by waiting).
- **With PyTorch** (``crossentropy.torch`` imports it before any kernel runs): GNU OpenMP first.
  PyTorch's CPU wheels load their OpenMP runtime into the process's global symbols, so Numba's
  ``omp`` layer runs the kernels on PyTorch's own OpenMP threads: one pool for both, and a kernel
  right after a PyTorch operation finds those threads awake instead of fighting them for the
  cores while they spin. On ``workqueue`` it does fight them, and loses:
  ``crossentropy.torch.cross_entropy`` on 4096x32000 float32 logits right after a PyTorch
  operation took 23-30 ms there against 17-18 ms on PyTorch's threads (two runs of
  ``benchmarks/threads_after_kernel.py``). After a kernel, the threads wait as they do after any
  PyTorch operation (PyTorch's wait policy, ``OMP_WAIT_POLICY``): a PyTorch matmul right after
  one runs as fast as with no kernel before it, and a NumPy matmul as slowly as after a PyTorch
  operation (1024²: 1.75x and 1.47x the time with nothing before it).

  GNU OpenMP cannot run in a ``fork`` child of a process that used it (Numba kills the child,
  which would otherwise hang). So in such a child (a ``multiprocessing`` "fork" worker, a
  ``torch.utils.data.DataLoader`` worker), :func:`usable` is False: the losses run the library's
  generic code, exact and single-threaded there, as PyTorch's DataLoader workers are; direct
  callers of the kernels get a clear error from :func:`launch_lock`. Children started with
  "spawn" or "forkserver" run the kernels as usual.

On Linux an installed ``tbb`` package's ``libtbb`` is loaded so that Numba finds it (also when
the user chose ``tbb``). ``tbb`` is not a dependency: its wheels exist for x86-64 only (no ARM
Linux, no Apple silicon), under Intel's own licence, and add 10 MB. The price of ``workqueue`` is
the hand-over to its worker threads: about 120 µs more per small call than GNU OpenMP (a 64x1000
forward pass: 190 µs against 71 µs). Other Numba code of the process is not covered
by the lock: whoever runs parallel Numba functions of their own on several threads at once
without PyTorch should install ``tbb`` or choose ``NUMBA_THREADING_LAYER=omp`` (not fork-safe),
which this package respects. Measured by ``benchmarks/threads_after_kernel.py``
(``benchmarks/results/threads_after_kernel.md``).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import threading
from typing import Any

import numba

# Numba's default priority, and this package's two (module docstring): without PyTorch in the
# process, workqueue ahead of GNU OpenMP; with it, GNU OpenMP first, to run on PyTorch's threads.
_NUMBA_PRIORITY = ["tbb", "omp", "workqueue"]
_PRIORITY_WITHOUT_TORCH = ["tbb", "workqueue", "omp"]
_PRIORITY_WITH_TORCH = ["omp", "tbb", "workqueue"]
# Layers that abort when two threads launch parallel work at once.
_NOT_THREAD_SAFE = frozenset({"workqueue"})

_lock = threading.Lock()
_serialize: bool | None = None  # whether the active layer needs the lock; None until known
_tbb_preloaded = False
_fork_child_of_gnu_openmp = False  # this process is a fork child of one whose GNU OpenMP threads ran


def _after_fork_in_child() -> None:
    global _lock, _fork_child_of_gnu_openmp
    # A lock held by another thread at the fork stays held in the child, where no thread releases it.
    _lock = threading.Lock()
    if _runs_gnu_openmp():  # the parent's threads ran on GNU OpenMP, which cannot run here
        _fork_child_of_gnu_openmp = True


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _runs_gnu_openmp() -> bool:
    """Whether Numba's threads were started, on GNU OpenMP (inherited by a fork child as it was in the parent)."""
    if not started() or numba.threading_layer() != "omp":
        return False
    from numba.np.ufunc import omppool

    return getattr(omppool, "openmp_vendor", "GNU") == "GNU"


def usable() -> bool:
    """Whether the kernels can run in this process: not in a fork child of a process whose kernels ran on GNU OpenMP."""
    return not _fork_child_of_gnu_openmp


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
    ours = (_NUMBA_PRIORITY, _PRIORITY_WITHOUT_TORCH, _PRIORITY_WITH_TORCH)
    return list(numba.config.THREADING_LAYER_PRIORITY) not in ours


def configure() -> None:
    """Set Numba's priority by whether PyTorch is in the process (module docstring), unless the user
    chose or the layer is fixed.

    Also makes an installed ``tbb`` package findable by Numba, unless the layer cannot be TBB.
    """
    if started():
        return
    if not user_chose():
        with_torch = "torch" in sys.modules
        numba.config.THREADING_LAYER_PRIORITY = list(_PRIORITY_WITH_TORCH if with_torch else _PRIORITY_WITHOUT_TORCH)
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
        torch = sys.modules.get("torch")
        torch_threads = torch.get_num_threads() if torch is not None else None
        numba.get_num_threads()
        # Starting on GNU OpenMP sets the shared runtime's thread count to Numba's, which is also
        # PyTorch's: the user's torch.set_num_threads() (and TorchDynamo's guard on it) is restored.
        if torch_threads is not None and torch.get_num_threads() != torch_threads:
            torch.set_num_threads(torch_threads)
    return numba.threading_layer() in _NOT_THREAD_SAFE


def launch_lock() -> Any:
    """A context manager to hold around a kernel call: the process's lock under ``workqueue``, else a no-op.

    Starts Numba's threads first, on the layer of :func:`configure` unless they run already.

    Raises
    ------
    RuntimeError
        In a fork child of a process whose kernels ran on GNU OpenMP (:func:`usable`).
    """
    global _serialize
    if not usable():
        raise RuntimeError(
            "crossentropy's kernels cannot run in a fork child of a process whose kernels ran on GNU OpenMP "
            "(it would hang); the losses run their generic code here, and a child started with the 'spawn' or "
            "'forkserver' method runs the kernels"
        )
    if _serialize is None:
        _serialize = _start()
    return _lock if _serialize else contextlib.nullcontext()
