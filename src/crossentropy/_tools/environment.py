"""The environment record of a measurement: machine, cores, library versions and threads, load.

Every result file says where it was measured: :func:`environment` gathers it, :func:`load_average`
and :class:`OtherProcessesCpu` say how busy the (often shared) machine was, which distorts every
timing, and :func:`machine_text` is the one-line summary the results' Markdown opens with.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from typing import Any

__all__ = ["OtherProcessesCpu", "environment", "load_average", "machine_text"]


def load_average() -> tuple[float, float, float] | None:
    """The 1-, 5- and 15-minute load averages, or None where the system has none.

    Returns
    -------
    tuple of float or None
    """
    try:
        return os.getloadavg()
    except (AttributeError, OSError):
        return None


def environment(*, torch: bool | None = None, numba: bool = True, load: bool = False) -> dict[str, Any]:
    """The machine and the libraries that a measurement ran on.

    Parameters
    ----------
    torch : bool, optional
        Record PyTorch's version and threads; by default when PyTorch is already imported.
    numba : bool, default True
        Record Numba's version, threads and threading layer (the layer is known only after a
        kernel's first call: make one first).
    load : bool, default False
        Add ``"load"``, the load averages now.

    Returns
    -------
    dict
        ``crossentropy``, ``python``, ``platform``, ``machine``, ``processor``, ``cpu_count``,
        ``numpy``, then ``numba``, ``numba_threads``, ``numba_threading_layer``, ``torch``,
        ``torch_threads`` and ``load`` as asked.
    """
    import numpy as np

    from .. import __version__

    record: dict[str, Any] = {
        "crossentropy": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "numpy": np.__version__,
    }
    if numba:
        import numba as numba_module

        record["numba"] = numba_module.__version__
        record["numba_threads"] = numba_module.get_num_threads()
        try:
            record["numba_threading_layer"] = numba_module.threading_layer()
        except ValueError:  # no parallel kernel has run yet
            record["numba_threading_layer"] = "unknown"
    if torch is None:
        torch = "torch" in sys.modules
    if torch:
        import torch as torch_module

        record["torch"] = torch_module.__version__
        record["torch_threads"] = torch_module.get_num_threads()
    if load:
        record["load"] = load_average()
    return record


def machine_text(record: dict[str, Any] | None = None) -> str:
    """``"x86_64, 2 cores"``: the machine and its cores, from :func:`environment`'s record.

    Parameters
    ----------
    record : dict, optional
        An :func:`environment` record; by default this machine's.

    Returns
    -------
    str
    """
    if record is None:
        record = {"machine": platform.machine(), "cpu_count": os.cpu_count()}
    return f"{record['machine']}, {record['cpu_count']} cores"


class OtherProcessesCpu:
    """The share of the machine's cores that other processes used since creation (Linux; None elsewhere).

    Other processes on the cores distort every timing, and the reader of the results should know.
    It is the busy time of all cores (``/proc/stat``) minus this process's and its waited-for
    children's (``os.times``), over the wall time times the number of cores.
    """

    def __init__(self) -> None:
        self.start_busy, self.start_own, self.start_wall = _busy_cpu_s(), _own_cpu_s(), time.perf_counter()

    def share(self) -> float | None:
        """The share so far, in [0, 1], or None where ``/proc/stat`` cannot be read.

        Returns
        -------
        float or None
        """
        busy = _busy_cpu_s()
        if busy is None or self.start_busy is None:
            return None
        others = (busy - self.start_busy) - (_own_cpu_s() - self.start_own)
        capacity = (time.perf_counter() - self.start_wall) * (os.cpu_count() or 1)
        return min(1.0, max(0.0, others / capacity))


def _busy_cpu_s() -> float | None:
    try:
        with open("/proc/stat") as stat:
            fields = stat.readline().split()
    except OSError:
        return None
    # cpu user nice system idle iowait irq softirq steal ...: everything but idle and iowait is busy.
    ticks = [int(value) for value in fields[1:9]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def _own_cpu_s() -> float:
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system
