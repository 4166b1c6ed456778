"""The timing loop of ``crossentropy bench`` and ``benchmarks/*.py``: warm-ups, garbage collector off, medians.

One loop for every measurement in the repository, with :mod:`timeit`'s discipline: the garbage
collector is off while a call is timed, each call's result is kept until its timer has stopped
(so freeing a large result is not charged to the call), and warm-up calls run first (compilation,
lazy initialization, first touch of buffers). :func:`time_interleaved` times several candidates in
turn, so that a slow moment of a shared machine falls on all of them alike. The clock is the host's
(:data:`HOST_CLOCK`) unless a :class:`Clock` says otherwise: a GPU benchmark passes one that records
device events and synchronizes before reading them. :func:`run_process` times a fresh process and
reads its peak resident set and CPU time.
"""

from __future__ import annotations

import gc
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

__all__ = [
    "HOST_CLOCK",
    "Clock",
    "ProcessRun",
    "gc_disabled",
    "median",
    "run_process",
    "time_call",
    "time_calls",
    "time_interleaved",
]


def _nothing() -> None:
    return None


@dataclass(frozen=True)
class Clock:
    """How :func:`time_calls` reads time: a mark before and after each call, seconds between two marks.

    Attributes
    ----------
    mark : callable
        Returns a mark of now (the host clock's reading, or an event recorded on a device's queue).
    seconds : callable
        ``seconds(start, stop)``: the seconds between two marks, read only after ``settle()``.
    settle : callable
        Waits until the marks made so far can be read and the work queued so far is done (a device's
        synchronize); called before the first timed call and after the last. The host clock's does
        nothing.
    """

    mark: Callable[[], Any]
    seconds: Callable[[Any, Any], float]
    settle: Callable[[], None] = _nothing


#: The host's clock, :func:`time.perf_counter`.
HOST_CLOCK = Clock(time.perf_counter, lambda start, stop: stop - start)


@contextmanager
def gc_disabled() -> Iterator[None]:
    """Turn the garbage collector off inside the block (and back on after it, if it was on).

    Yields
    ------
    None
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def time_call(call: Callable[[], Any]) -> float:
    """Seconds of one call of ``call`` (the caller decides about warm-ups and the garbage collector).

    Parameters
    ----------
    call : callable
        Called with no argument; its result is released only after the timer stopped.

    Returns
    -------
    float
        Wall-clock seconds (:func:`time.perf_counter`).
    """
    start = time.perf_counter()
    result = call()
    seconds = time.perf_counter() - start
    del result
    return seconds


def time_calls(
    call: Callable[[], Any],
    *,
    repeat: int,
    warmup: int = 1,
    on_result: Callable[[Any], None] | None = None,
    prepare: Callable[[], None] | None = None,
    clock: Clock = HOST_CLOCK,
) -> list[float]:
    """Seconds of ``repeat`` calls of ``call``, after ``warmup`` untimed calls, with the garbage collector off.

    Parameters
    ----------
    call : callable
        Called with no argument.
    repeat : int
        Timed calls.
    warmup : int, default 1
        Untimed calls first.
    on_result : callable, optional
        Given each timed call's result after its timer stopped (to keep a loss, say).
    prepare : callable, optional
        Called with no argument before every call, warm-ups included, outside the timed region (to
        restore inputs that a call overwrites, or evict a cache).
    clock : Clock, default HOST_CLOCK
        Marks the start and end of each timed call; its ``settle()`` runs after the warm-ups and
        after the last timed call, and the marks are read only then.

    Returns
    -------
    list of float
        Seconds of each timed call, in order.
    """
    for _ in range(warmup):
        if prepare is not None:
            prepare()
        call()
    marks: list[tuple[Any, Any]] = []
    clock.settle()
    with gc_disabled():
        for _ in range(repeat):
            if prepare is not None:
                prepare()
            start = clock.mark()
            result = call()
            marks.append((start, clock.mark()))
            if on_result is not None:
                on_result(result)
            del result
    clock.settle()
    return [clock.seconds(start, stop) for start, stop in marks]


def time_interleaved(
    calls: Mapping[str, Callable[[], Any]], *, repeat: int, warmup: int = 1, mirrored: bool = False
) -> dict[str, list[float]]:
    """Seconds of each candidate's calls, the candidates taking turns, with the garbage collector off.

    Parameters
    ----------
    calls : mapping of str to callable
        The candidates by name.
    repeat : int
        Rounds; each round calls every candidate once (twice with ``mirrored``).
    warmup : int, default 1
        Untimed rounds first.
    mirrored : bool, default False
        Each round calls the candidates in order, then in reverse order (``a b b a``), and records
        the mean of each candidate's two calls: a drift of the machine's speed within a round
        cancels.

    Returns
    -------
    dict of str to list of float
        Each candidate's seconds per round.
    """
    names = list(calls)
    for _ in range(warmup):
        for name in names:
            calls[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    with gc_disabled():
        for _ in range(repeat):
            if mirrored:
                first = {name: time_call(calls[name]) for name in names}
                second = {name: time_call(calls[name]) for name in reversed(names)}
                for name in names:
                    times[name].append((first[name] + second[name]) / 2)
            else:
                for name in names:
                    times[name].append(time_call(calls[name]))
    return times


def median(values: Iterable[float]) -> float:
    """The median of ``values``, NaN when there is none.

    Parameters
    ----------
    values : iterable of float

    Returns
    -------
    float
    """
    values = list(values)
    return statistics.median(values) if values else math.nan


@dataclass(frozen=True)
class ProcessRun:
    """What :func:`run_process` saw of one process.

    Attributes
    ----------
    returncode : int
    stdout, stderr : str
    wall_s : float
        Seconds from the start to the end of the process (host clock).
    user_s, sys_s : float
        CPU seconds of the process and of every descendant it waited for (a pool's workers).
    peak_rss_bytes : int
        The largest peak resident set of the process and those descendants.
    """

    returncode: int
    stdout: str
    stderr: str
    wall_s: float
    user_s: float
    sys_s: float
    peak_rss_bytes: int

    def last_line(self) -> str:
        """The last line of stdout (where the benchmarks' children print their JSON), or "".

        Returns
        -------
        str
        """
        lines = self.stdout.strip().splitlines()
        return lines[-1] if lines else ""


def run_process(argv: Sequence[str], *, env: Mapping[str, str] | None = None) -> ProcessRun:
    """Run ``argv`` to its end and measure it: wall time, CPU time and peak resident set (POSIX).

    The resource usage is the kernel's account of the process at its end (``wait4``), its waited-for
    descendants included; its output goes through temporary files, so a talkative process cannot
    fill a pipe and stall.

    Parameters
    ----------
    argv : sequence of str
        The command, as for :class:`subprocess.Popen`.
    env : mapping of str to str, optional
        Its environment; by default this process's.

    Returns
    -------
    ProcessRun
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        process = subprocess.Popen(list(argv), stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait for it
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    # ru_maxrss is in kilobytes on Linux (bytes on macOS).
    scale = 1 if sys.platform == "darwin" else 1024
    return ProcessRun(process.returncode, stdout, stderr, wall, usage.ru_utime, usage.ru_stime, usage.ru_maxrss * scale)
