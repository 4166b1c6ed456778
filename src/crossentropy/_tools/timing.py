"""The timing loop of ``crossentropy bench`` and ``benchmarks/*.py``: warm-ups, garbage collector off, medians.

One loop for every measurement in the repository, with :mod:`timeit`'s discipline: the garbage
collector is off while a call is timed, each call's result is kept until its timer has stopped
(so freeing a large result is not charged to the call), and warm-up calls run first (compilation,
lazy initialization, first touch of buffers). :func:`time_interleaved` times several candidates in
turn, so that a slow moment of a shared machine falls on all of them alike.
"""

from __future__ import annotations

import gc
import math
import statistics
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

__all__ = ["gc_disabled", "median", "time_call", "time_calls", "time_interleaved"]


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

    Returns
    -------
    list of float
        Wall-clock seconds of each timed call, in order.
    """
    for _ in range(warmup):
        call()
    times: list[float] = []
    with gc_disabled():
        for _ in range(repeat):
            start = time.perf_counter()
            result = call()
            times.append(time.perf_counter() - start)
            if on_result is not None:
                on_result(result)
            del result
    return times


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
