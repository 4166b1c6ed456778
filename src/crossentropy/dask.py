r"""Score predictions spread over many files, or a Dask DataFrame, on a Dask cluster.

:func:`score` (and ``crossentropy score --engine dask``) cuts a data set into **partitions**:

- a file (CSV, ``.npy``, ``.npz``, or a Parquet file of one row group);
- a run of row groups of a Parquet file of several, about 128 MB of uncompressed data each (at
  least one row group);
- a partition of a :class:`dask.dataframe.DataFrame`.

A CSV file is one partition however large: its rows and lines are counted from its start, which
is how messages name them, so it is not cut into byte ranges (split a large CSV file into
several, or convert it to Parquet, to spread it over workers).

Each partition is scored on a worker, by the same code as the single-process command
(:func:`crossentropy.cli.score.add_rows`), into the state of a
:class:`crossentropy.metrics.Scorer` (:meth:`~crossentropy.metrics.Scorer.state_dict`: a few
float64 arrays, O(classes + bins)). The client merges the states in the order of the
partitions (:meth:`~crossentropy.metrics.Scorer.merge`) and computes the figures, which are
those of one process reading every row in that order, to float64 rounding (the sums are added
in another order). No partition's rows travel to the client: only the states and, for the
command's temperature fit on logits, a uniform sample of at most ``--temperature-rows`` rows
drawn across the partitions (an allocation drawn from the multivariate hypergeometric
distribution, then a uniform draw from each partition's own reservoir sample).

Bad input stops the scoring with the error of the first bad partition in order (the workers
name the file, the row within it and the column, as the single-process command does), and the
partitions still running are cancelled. With one prediction column and class labels the
negative label is that of the first partition that has one; another one in a later partition
is the error of a third label, at its row.

Dask is an optional dependency: ``pip install 'crossentropy[dask]'``. ``import crossentropy``
does not import it, nor does importing this module: its functions do, and without it raise an
``ImportError`` that says how to install it.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from ._scorer import ScoreResult

__all__ = ["score"]


def _dask() -> tuple[Any, Any]:
    """``(dask, distributed)``, or an ImportError that says how to install them."""
    try:
        import dask
        import distributed
    except ImportError as error:
        raise ImportError(
            "crossentropy.dask needs Dask with its distributed scheduler; install it with "
            "`pip install 'crossentropy[dask]'` (dask[distributed,dataframe])"
        ) from error
    return dask, distributed


# The sample of logits rows for the temperature is merged with this seed (the reservoirs have their own).
_SAMPLE_SEED = 0
# A Parquet file of several row groups is cut into runs of about this much uncompressed data.
_PARTITION_BYTES = 128 << 20
# How long --scheduler ADDRESS may take to answer.
_CONNECT_TIMEOUT = "20s"


@dataclasses.dataclass(frozen=True)
class _Options:
    """How each partition is scored (sent to the workers with it)."""

    n_bins: int = 15
    renormalize: bool = False
    tolerance: float = 1e-6
    base: float | None = None
    fit_rows: int = 0
    threads: int | None = None  # Numba threads per task (a local cluster shares the cores between its workers)
    batch_rows: int | None = None


@dataclasses.dataclass
class _Partial:
    """What scoring one partition leaves on its worker; :meth:`summary` is what the client fetches.

    Rows are counted within the partition. ``error``: the message of the partition's bad input,
    after ``rows_before_error`` rows were added. ``negative``: the first label that is not the
    positive class (one prediction column and class labels), at ``negative_row`` (``negative_where``
    names it as the error of a third label would). ``first_unnormalized``: where the first
    prediction and target rows that do not sum to 1 are, as ``(text, row in its file)``.
    """

    index: int
    rows: int = 0
    state: dict[str, Any] | None = None
    error: str | None = None
    rows_before_error: int = 0
    negative: str | None = None
    negative_row: int | None = None
    negative_where: str | None = None
    positive_seen: bool = False
    first_unnormalized: tuple[tuple[str, int] | None, tuple[str, int] | None] = (None, None)
    sample_rows: int = 0
    sample: Any = None  # the partition's TemperatureSample; stays on the worker

    def summary(self) -> _Partial:
        """A copy without the sample: what travels to the client."""
        return dataclasses.replace(self, sample=None)


# ---------------------------------------------------------------------------------------------
# On the workers


def _score_partition(unit: Any, selection: Any, options: _Options, index: int, name: str | None = None) -> _Partial:
    """Score one partition: a :class:`~crossentropy.cli._sources.Part` of a file, or a pandas DataFrame (``name``)."""
    from .cli import score as command
    from .cli._sources import FrameSource, InputError, MultiSource, Part

    if options.threads is not None:
        import numba

        from .kernels.numba._threading import launch_lock

        with launch_lock():  # starts Numba's threads on the layer the kernels pick, before asking for fewer
            pass
        numba.set_num_threads(max(1, min(options.threads, numba.config.NUMBA_NUM_THREADS)))
    partial = _Partial(index)
    scorer = _new_scorer(selection, options, options.fit_rows)
    labels = None
    source = None
    try:
        if isinstance(unit, Part):
            source = MultiSource([unit], name=str(unit.path))
        else:
            source = FrameSource(unit, name or f"partition {index + 1}")
        labels = command._Labels(source, selection) if selection.target is not None else None
        command.add_rows(source, selection, scorer, labels, progress=False, batch_rows=options.batch_rows)
    except InputError as error:
        partial.error = str(error)
        partial.rows_before_error = scorer.rows_seen
    if labels is not None:
        partial.negative, partial.negative_row = labels.negative, labels.negative_row
        partial.positive_seen = labels.positive_seen
        if labels.negative_row is not None:
            partial.negative_where = source.where(labels.negative_row, selection.target)
    if partial.error is not None:
        return partial
    partial.rows = scorer.rows_seen
    partial.state = scorer.scorer.state_dict()
    partial.first_unnormalized = tuple(
        None if row is None else (source.where(row), _row_in_file(source, row))
        for row in (scorer.first_unnormalized(), scorer.first_unnormalized(targets=True))
    )
    if scorer.sample is not None and scorer.sample.rows:
        partial.sample, partial.sample_rows = scorer.sample, scorer.sample.rows
    return partial


def _row_in_file(source: Any, row: int) -> int:
    """The 0-based row of the file that holds row ``row`` of a partition (a run of row groups starts later)."""
    from .cli._sources import MultiSource

    if isinstance(source, MultiSource):
        located = source._locate(row)
        if located is not None:
            inner, local = located
            return local + getattr(inner, "row_offset", 0)
    return row


def _summary(partial: _Partial) -> _Partial:
    return partial.summary()


def _take_sample(partial: _Partial, count: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``count`` rows drawn uniformly without replacement from the partition's sample, in their order."""
    sample = partial.sample
    rows = sample.rows
    chosen = (
        np.arange(rows) if count >= rows else np.sort(np.random.default_rng(seed).choice(rows, count, replace=False))
    )
    weight = sample._weight[chosen] if sample._weighted else None
    return sample._logits[chosen], sample._targets[chosen], weight


# ---------------------------------------------------------------------------------------------
# On the client


class _Run:
    """The partitions' tasks and their partials: on a distributed client (futures), or computed here."""

    def __init__(self, client: Any, tasks: list[Any]) -> None:
        """``tasks``: futures of :func:`_score_partition` on ``client``, or delayed calls of it (computed on
        ``client``, or by ``dask.compute`` without one)."""
        dask, _ = _dask()
        self.client = client
        self.n = len(tasks)
        if client is not None:
            delayed = [task for task in tasks if dask.is_dask_collection(task)]
            self.futures = client.compute(tasks) if delayed else list(tasks)
            self.summaries = [client.submit(_summary, future, pure=False) for future in self.futures]
        else:
            self.partials = list(dask.compute(*tasks))

    def collect(self, progress: Any) -> list[_Partial]:
        """The summaries of the partitions, in order; after a bad partition, those before it only."""
        if self.client is None:
            progress.update(self.n, self.n)
            return [partial.summary() for partial in self.partials]
        _, distributed = _dask()
        done: dict[int, _Partial] = {}
        progress.update(0, self.n)
        for future in distributed.as_completed(self.summaries, loop=self.client.loop):
            summary = future.result()
            done[summary.index] = summary
            progress.update(len(done), self.n)
            failed = [index for index, partial in done.items() if partial.error is not None]
            if failed and all(index in done for index in range(min(failed))):
                self.client.cancel([*self.futures, *self.summaries])
                break
        return [done[index] for index in range(self.n) if index in done]

    def take(self, index: int, count: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        if self.client is None:
            return _take_sample(self.partials[index], count, seed)
        return self.client.submit(_take_sample, self.futures[index], count, seed, pure=False).result()

    def release(self) -> None:
        if self.client is not None:
            self.client.cancel([*self.futures, *self.summaries])


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


@contextlib.contextmanager
def _cluster(workers: int | None, scheduler: str | None) -> Iterator[tuple[Any, int | None]]:
    """``(client, Numba threads per task)``: a client of the cluster at ``scheduler``, or of a new local one."""
    from .cli._sources import InputError

    _, distributed = _dask()
    if scheduler is not None:
        try:
            client = distributed.Client(scheduler, timeout=_CONNECT_TIMEOUT, set_as_default=False)
        except (OSError, TimeoutError, ValueError) as error:
            raise InputError(f"--scheduler {scheduler}: cannot connect to a Dask scheduler there ({error})") from None
        with client:
            yield client, None
        return
    cores = _cores()
    n_workers = workers or cores
    cluster = distributed.LocalCluster(
        n_workers=n_workers,
        threads_per_worker=1,
        processes=True,
        dashboard_address=":0",  # any free port: None would still try 8787 and warn when it is taken
        silence_logs=logging.ERROR,
    )
    with cluster, distributed.Client(cluster, set_as_default=False) as client:
        yield client, max(1, cores // n_workers)


def _merge(
    partials: list[_Partial], run: _Run, selection: Any, options: _Options
) -> tuple[Any, str | None, bool, list[str | None]]:
    """The merged file scorer, the negative label, whether the positive occurred, where the first unnormalized rows are.

    Raises the error of the first bad partition, or of a third label that a later partition's
    own negative label is.
    """
    from .cli import score as command
    from .cli._scoring import TemperatureSample
    from .cli._sources import InputError

    negative: str | None = None
    for partial in partials:
        conflict = (
            negative is not None
            and partial.negative is not None
            and partial.negative != negative
            and (partial.error is None or partial.negative_row < partial.rows_before_error)
        )
        if conflict:
            raise command.third_label(partial.negative_where, partial.negative, negative, selection)
        if partial.error is not None:
            raise InputError(partial.error)
        if negative is None:
            negative = partial.negative
    merged = _new_scorer(selection, options)
    first: list[tuple[str, int] | None] = [None, None]
    for partial in partials:
        part = _new_scorer(selection, options).scorer
        part.load_state_dict(partial.state)
        merged.scorer.merge(part)
        for slot in (0, 1):
            if first[slot] is None:
                first[slot] = partial.first_unnormalized[slot]
    total = sum(partial.rows for partial in partials)
    sampled = [partial for partial in partials if partial.sample_rows]
    if options.fit_rows and sampled:
        capacity = options.fit_rows
        seen = [partial.rows for partial in sampled]
        if sum(seen) <= capacity:
            counts = seen
        else:
            counts = np.random.default_rng(_SAMPLE_SEED).multivariate_hypergeometric(seen, capacity).tolist()
        pieces = [
            run.take(partial.index, count, _SAMPLE_SEED + 1 + partial.index)
            for partial, count in zip(sampled, counts, strict=True)
            if count
        ]
        sample = TemperatureSample(capacity)
        logits = np.concatenate([piece[0] for piece in pieces])
        targets = np.concatenate([piece[1] for piece in pieces])
        weighted = any(piece[2] is not None for piece in pieces)
        weight = (
            np.concatenate([piece[2] if piece[2] is not None else np.ones(piece[0].shape[0]) for piece in pieces])
            if weighted
            else None
        )
        sample.put(np.arange(logits.shape[0]), logits, targets, weight)
        sample.seen = total
        merged.sample = sample
    positive_seen = any(partial.positive_seen for partial in partials)
    return merged, negative, positive_seen, first


def _new_scorer(selection: Any, options: _Options, fit_rows: int = 0) -> Any:
    """A new :class:`~crossentropy.cli._scoring.FileScorer` for ``selection`` with ``options``."""
    from .cli import score as command

    return command.file_scorer(
        selection,
        n_bins=options.n_bins,
        renormalize=options.renormalize,
        tolerance=options.tolerance,
        base=options.base,
        fit_rows=fit_rows,
    )


def _first_texts(first: list[tuple[str, int] | None], single_file: bool) -> list[str | None]:
    """Where the first unnormalized rows are, as the single-process command says it: ``row R`` of one file."""
    return [None if located is None else (f"row {located[1] + 1}" if single_file else located[0]) for located in first]


def _score_tasks(
    tasks: list[Any],
    client: Any,
    source: Any,
    selection: Any,
    options: _Options,
    *,
    progress: bool | None,
    single_file: bool,
) -> tuple[Any, Any]:
    """Run the partitions' tasks, merge them; ``(file scorer, report)``."""
    from ._tools.progress import progress_bar
    from .cli import score as command

    run = _Run(client, tasks)
    try:
        noun = "partition" if len(tasks) == 1 else "partitions"
        with progress_bar(f"scoring {len(tasks)} {noun} on Dask", unit="partitions", enabled=progress) as bar:
            partials = run.collect(bar)
        merged, negative, positive_seen, first = _merge(partials, run, selection, options)
    finally:
        run.release()
    report = command.finish_report(
        source,
        selection,
        merged,
        negative=negative,
        positive_seen=positive_seen,
        renormalize=options.renormalize,
        tolerance=options.tolerance,
        first_unnormalized=_first_texts(first, single_file),
    )
    return merged, report


def score_source(
    source: Any,
    selection: Any,
    *,
    n_bins: int = 15,
    renormalize: bool = False,
    tolerance: float = 1e-6,
    base: float | None = None,
    progress: bool | None = None,
    fit_rows: int | None = 0,
    workers: int | None = None,
    scheduler: str | None = None,
    client: Any = None,
    batch_rows: int | None = None,
) -> Any:
    """``crossentropy score --engine dask``: the report of :func:`crossentropy.cli.score.score_source` from a cluster.

    ``source`` (a file, or a :class:`~crossentropy.cli._sources.MultiSource`) is cut into
    partitions (:func:`~crossentropy.cli._sources.split_parts`); ``client``, else the cluster at
    ``scheduler``, else a new :class:`distributed.LocalCluster` of ``workers`` processes (one per
    core by default) scores them.
    """
    from .cli._scoring import temperature_rows
    from .cli._sources import MultiSource, parts_of, split_parts

    _dask()
    if fit_rows is None:
        fit_rows = temperature_rows(len(selection.classes))
    units = split_parts(parts_of(source), target_bytes=_PARTITION_BYTES)
    single_file = not isinstance(source, MultiSource)
    with contextlib.ExitStack() as stack:
        threads = None
        if client is None:
            client, threads = stack.enter_context(_cluster(workers, scheduler))
        options = _Options(n_bins, renormalize, tolerance, base, fit_rows, threads, batch_rows)
        tasks = [
            client.submit(_score_partition, unit, selection, options, index, pure=False)
            for index, unit in enumerate(units)
        ]
        _, report = _score_tasks(tasks, client, source, selection, options, progress=progress, single_file=single_file)
    return report


# ---------------------------------------------------------------------------------------------
# The Python function


def _patterns(value: str | Sequence[str] | None) -> list[str] | None:
    if value is None:
        return None
    return [value] if isinstance(value, str) else [str(v) for v in value]


def score(
    source: Any,
    *,
    target: str | None = None,
    target_probs: str | Sequence[str] | None = None,
    probs: str | Sequence[str] | None = None,
    logits: str | Sequence[str] | None = None,
    from_logits: bool = False,
    positive: str | None = None,
    sample_weight: str | None = None,
    base: float | None = None,
    n_bins: int = 15,
    renormalize: bool = False,
    tolerance: float = 1e-6,
    file_format: str | None = None,
    delimiter: str | None = None,
    client: Any = None,
    progress: bool = False,
) -> ScoreResult:
    r"""Score the predictions of a data set of many files, or of a Dask DataFrame, on a Dask cluster.

    The same figures as ``crossentropy score`` (and as one :class:`crossentropy.metrics.Scorer`
    given every row in order, to float64 rounding): each partition is scored on a worker into
    a scorer's state, and the states are merged here. No rows travel to the caller.

    Parameters
    ----------
    source : str, Path, sequence of them, or dask.dataframe.DataFrame
        A file (CSV, Parquet, ``.npy``, ``.npz``), a directory (walked; a Parquet data set,
        ``key=value`` directories adding columns), a glob (``"preds/*.parquet"``), a list of
        these, or a Dask DataFrame whose partitions are scored where they are computed.
    target : str, optional
        Column of class labels (text or integers), as ``--target``.
    target_probs : str or sequence of str, optional
        Pattern(s) of the columns of target distributions, as ``--target-probs``.
    probs, logits : str or sequence of str, optional
        Pattern(s) of the prediction columns (default: every other column, as probabilities);
        shell-style, a single ``*`` naming the class (``"p_*"``), as ``--probs`` / ``--logits``.
    from_logits : bool, default False
        The ``probs`` columns (or every other column) hold logits, as ``--from-logits``.
    positive : str, optional
        With one prediction column: the label of the positive class, as ``--positive``.
    sample_weight : str, optional
        Column of non-negative sample weights.
    base : float, optional
        Logarithm base of the entropy-valued figures (None: nats).
    n_bins : int, default 15
        Calibration bins, as ``--bins``.
    renormalize : bool, default False
        Divide each probability row by its sum.
    tolerance : float, default 1e-6
        Probability rows must sum to 1 within this (others are counted).
    file_format : {"csv", "parquet", "npy", "npz"}, optional
        The files' format when their suffix does not tell, as ``--format``.
    delimiter : str, optional
        CSV field delimiter.
    client : distributed.Client, optional
        The cluster. Default: the current default client, if there is one; otherwise Dask's
        current scheduler (``dask.compute``; the threads of this process unless configured).
    progress : bool, default False
        A progress bar of partitions done on stderr (with a distributed client).

    Returns
    -------
    ScoreResult
        :meth:`crossentropy.metrics.Scorer.compute`'s figures, its ``classes`` (and each
        ``per_class`` entry's ``label``) the class names the columns give; ``top_k_accuracy``
        is empty (the accuracy is ``accuracy``).

    Raises
    ------
    ValueError
        Bad input (:class:`crossentropy.cli._sources.InputError`, a ``ValueError``), naming the
        file, the row within it and the column (for a DataFrame: ``partition P: row R``).

    Examples
    --------
    >>> import crossentropy.dask  # doctest: +SKIP
    >>> result = crossentropy.dask.score("preds/*.parquet", target="label", probs="p_*")  # doctest: +SKIP
    >>> result.log_loss, result.accuracy  # doctest: +SKIP
    """
    from .cli import score as command
    from .cli._sources import FrameSource, MultiSource, open_inputs, parts_of, split_parts

    dask, distributed = _dask()

    args = argparse.Namespace(
        target=target,
        target_probs=_patterns(target_probs),
        probs=_patterns(probs),
        logits=_patterns(logits),
        from_logits=from_logits,
        positive=positive,
        sample_weight=sample_weight,
    )
    options = _Options(n_bins=n_bins, renormalize=renormalize, tolerance=tolerance, base=base)
    if client is None:
        with contextlib.suppress(ValueError):
            client = distributed.default_client()
    frame_partitions = None
    if hasattr(source, "to_delayed") and hasattr(source, "npartitions"):
        schema = FrameSource(source._meta, "the DataFrame")
        selection = command.select_columns(schema, args)
        frame_partitions = source.to_delayed()
        tasks = [
            dask.delayed(_score_partition, pure=False)(partition, selection, options, index)
            for index, partition in enumerate(frame_partitions)
        ]
        data_set: Any = schema
    else:
        paths = [source] if isinstance(source, (str, os.PathLike)) else list(source)
        data_set = open_inputs(paths, file_format=file_format, delimiter=delimiter)
        selection = command.select_columns(data_set, args)
        units = split_parts(parts_of(data_set), target_bytes=_PARTITION_BYTES)
        tasks = [
            dask.delayed(_score_partition, pure=False)(unit, selection, options, index)
            for index, unit in enumerate(units)
        ]
    single_file = frame_partitions is None and not isinstance(data_set, MultiSource)
    merged, report = _score_tasks(
        tasks, client, data_set, selection, options, progress=progress, single_file=single_file
    )
    return _named_result(merged, report, base)


def _named_result(merged: Any, report: Any, base: float | None) -> ScoreResult:
    """The merged scorer's figures in ``base``, its classes named as the report names them."""
    from .metrics import Scorer

    state = merged.scorer.state_dict()
    scorer = Scorer(n_bins=state["n_bins"], base=base, top_k=state["top_k"])
    scorer.load_state_dict({**state, "base": base})  # the sums are in nats; the base scales the figures
    result = scorer.compute()
    names = tuple(report.spec.classes)
    per_class = tuple(
        dataclasses.replace(entry, label=name) for entry, name in zip(result.per_class, names, strict=True)
    )
    return dataclasses.replace(result, classes=names, per_class=per_class)
