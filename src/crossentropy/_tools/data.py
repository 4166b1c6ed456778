"""Data helpers shared by the applications: thread limits for small training loops, splits, scaling.

Used by ``crossentropy demo`` (:mod:`crossentropy.cli.demo`) and the gallery's experiments
(:mod:`crossentropy.gallery`), which import them from here rather than from each other.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

__all__ = ["single_thread", "standardize", "stratified_split"]


@contextmanager
def single_thread() -> Iterator[None]:
    """Run the library's Numba kernels, BLAS (with threadpoolctl) and PyTorch (if imported) on one thread.

    For training loops on small arrays, whose operations are too small to gain from threads.
    Between kernel calls, Numba's OpenMP workers keep spinning while the BLAS threads run the
    matrix products, each side waiting on the other: a loop alternating the two ran about 30
    times slower on a 2-core machine; and the BLAS and PyTorch thread pools slowed small
    operations 10- to 30-fold whenever another process held a core.
    """
    import sys

    import numba

    torch = sys.modules.get("torch")
    threads = numba.get_num_threads()
    torch_threads = torch.get_num_threads() if torch is not None else None
    numba.set_num_threads(1)
    if torch is not None:
        torch.set_num_threads(1)
    try:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:  # pragma: no cover - the cli extra installs it
            yield
        else:
            with threadpool_limits(limits=1, user_api="blas"):
                yield
    finally:
        numba.set_num_threads(threads)
        if torch is not None:
            torch.set_num_threads(torch_threads)


def stratified_split(
    labels: np.ndarray, test_fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train, test)``: each class's rows shuffled by ``rng``, ``round(test_fraction * n_c)`` to test.

    Both index arrays are sorted, so the parts keep the data set's order.
    """
    test = np.zeros(labels.shape[0], dtype=bool)
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        test[members[: round(test_fraction * members.size)]] = True
    return np.flatnonzero(~test), np.flatnonzero(test)


def standardize(train: np.ndarray, *others: np.ndarray) -> tuple[np.ndarray, ...]:
    """Scale features to mean 0 and variance 1 with the training rows' statistics (constant features: scale 1)."""
    mean = train.mean(axis=0)
    scale = train.std(axis=0)
    scale[scale == 0] = 1.0
    return tuple((x - mean) / scale for x in (train, *others))
