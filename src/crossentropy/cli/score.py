"""``crossentropy score FILE``: log loss, perplexity, accuracy, Brier score and calibration of a prediction file.

The file (CSV, Parquet, ``.npy`` or ``.npz``) is read in batches, so its size does not matter;
the figures are sums over rows, added up by the library's streaming scorer
(:class:`crossentropy.metrics.Scorer`, adapted to files by :mod:`crossentropy.cli._scoring`),
and equal those of the whole file at once. For logits, the temperature that minimizes the log
loss is fitted on (a uniform sample of) the rows, and the calibration it gives reported. Bad
input stops the command with exit code 2 and one line naming the file, the row and the column;
nothing is written over the input, and outputs are written atomically.
"""

from __future__ import annotations

import argparse
import difflib
import fnmatch
import json
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from .._tools.progress import progress_bar
from ._options import logarithm_base, non_negative_int, positive_int, unit_fraction
from ._report import OUTPUT_NAMES
from ._scoring import FileScorer, InvalidValue, ScoreReport, ScoreSpec, temperature_rows
from ._sources import FORMATS, CsvLines, InputError, MatrixBatch, MultiSource, Source, open_inputs, repeated

__all__ = ["Selection", "add_arguments", "command", "score_source"]

EXAMPLES = """\
examples:
  crossentropy score preds.csv --target label
      every other column is the probability of the class it is named after
  crossentropy score preds.parquet --target y --probs 'p_*'
      columns p_cat, p_dog, ... hold the probabilities of classes cat, dog, ...
  crossentropy score out.npz --target labels --logits 'logits_*'
      an .npz with members `labels` (n,) and `logits` (n, k): softmax of the logits; also the
      temperature that fits them best and the calibration error it gives
  crossentropy score logits.csv --target label --from-logits
      every other column is the logit of the class it is named after
  crossentropy score clicks.csv --target clicked --probs p_click
      binary: one column, the probability of the positive class (named by --positive, default the column's class)
  crossentropy score soft.csv --target-probs 'teacher_*' --probs 'student_*'
      targets are distributions: also H(P) and KL, with H(P,Q) = H(P) + KL
  crossentropy score preds.csv --target label --json --report report/
      figures as JSON on stdout, and an HTML page with a reliability diagram in report/
  crossentropy score preds/ --target label          (or 'preds/*.parquet', or a.csv b.csv ...)
      every file of a directory (a Parquet data set; key=value directories are columns) as one data set
  crossentropy score preds/ --target label --engine dask --workers 4
      each file (or run of Parquet row groups) scored on a worker of a local Dask cluster; --scheduler
      ADDRESS uses a running cluster

Patterns are shell-style (*, ?, [..]); several may be given, separated by commas or repeated.
With one `*`, the class is the text it matches; otherwise the class is the column name.
Rows are counted from 1 without the header; lines count the header. In a data set of several
files, messages name the file and the row and line within it; every file must have the same columns.
CSV lines end in \\n or \\r\\n and hold at most 16 MiB (the header too); a file has at most
1,048,576 columns. Ctrl-C stops with exit code 130, leaving no half-written report.
"""

_BATCH_ROWS = 1 << 17
_BATCH_BYTES = 16 << 20  # of float64 numbers a batch: fewer rows for wide files, so memory stays bounded
_MAX_LISTED = 12


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "file",
        metavar="FILE",
        type=Path,
        help="CSV, Parquet, .npy or .npz file of predictions; a directory (a Parquet data set, Hive partitions "
        "too) or a quoted glob ('preds/*.parquet') is scored as one data set",
    )
    parser.add_argument(
        "more_files", metavar="FILE", type=Path, nargs="*", help="more files, scored with the first as one data set"
    )
    target = parser.add_argument_group("targets (one of)")
    target.add_argument("--target", metavar="COL", help="column of true class labels (text or integers)")
    target.add_argument(
        "--target-probs",
        metavar="PATTERN",
        action="append",
        help="columns of target distributions, one per class (adds H(P) and KL to the report)",
    )
    predictions = parser.add_argument_group("predictions (default: every other column, as probabilities)")
    predictions.add_argument("--probs", metavar="PATTERN", action="append", help="probability columns, one per class")
    predictions.add_argument("--logits", metavar="PATTERN", action="append", help="logit columns, one per class")
    predictions.add_argument(
        "--from-logits",
        action="store_true",
        help="the prediction columns (--probs, or every other column) hold logits, as --logits says of its own",
    )
    predictions.add_argument(
        "--positive",
        metavar="LABEL",
        help="with one prediction column: the label of the positive class (default: the column's class name)",
    )
    options = parser.add_argument_group("options")
    options.add_argument("--sample-weight", metavar="COL", help="column of non-negative sample weights")
    options.add_argument(
        "--base",
        metavar="B",
        type=logarithm_base,
        default=None,
        help="logarithm base of entropies besides nats and bits (2, 10, e)",
    )
    options.add_argument("--bins", metavar="N", type=positive_int, default=15, help="calibration bins (default 15)")
    options.add_argument(
        "--renormalize",
        action="store_true",
        help="divide each probability row by its sum (default: warn and use as given)",
    )
    options.add_argument(
        "--tolerance",
        metavar="T",
        type=unit_fraction,
        default=1e-6,
        help="probability rows must sum to 1 within T (default 1e-6)",
    )
    options.add_argument(
        "--temperature-rows",
        metavar="N",
        type=non_negative_int,
        default=None,
        help="logits: fit the temperature on a uniform sample of at most N rows (default: as many as fit in "
        "256 MB with the fit's work; all rows when the file has fewer; 0: no fit)",
    )
    options.add_argument("--format", choices=FORMATS, help="file format, when the suffix does not tell")
    options.add_argument("--delimiter", metavar="CHAR", help="CSV field delimiter (default ',' and tab for .tsv)")
    options.add_argument("--json", action="store_true", help="print the figures as JSON")
    options.add_argument(
        "--report",
        metavar="DIR",
        type=Path,
        help="write an HTML report with a reliability diagram and a per-class chart",
    )
    options.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=None, help="progress bar (default: on a terminal)"
    )
    engine = parser.add_argument_group("engine (crossentropy.dask; needs pip install 'crossentropy[dask]')")
    engine.add_argument(
        "--engine",
        choices=("local", "dask"),
        default="local",
        help="local: this process, the files one after the other (default); dask: each partition (a file, a run "
        "of Parquet row groups) scored on a Dask worker, the sums merged",
    )
    engine.add_argument(
        "--workers",
        metavar="N",
        type=positive_int,
        help="with --engine dask: start a Dask LocalCluster of N worker processes here (default: one per core)",
    )
    engine.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="with --engine dask: use the running Dask cluster at ADDRESS (tcp://host:8786); its workers must "
        "see the files at the same paths",
    )


# ---------------------------------------------------------------------------------------------
# Columns


@dataclass(frozen=True)
class Selection:
    """Which columns are what.

    Attributes
    ----------
    predictions : tuple of str
        Prediction columns, one per class (one column: binary, the positive class).
    classes : tuple of str
        Class names in the order of ``predictions`` (binary: negative first, then positive;
        the negative one is learnt from the targets).
    target : str or None
        Column of class labels.
    target_probs : tuple of str
        Columns of target distributions, in the order of ``classes``.
    sample_weight : str or None
    is_logits : bool
    """

    predictions: tuple[str, ...]
    classes: tuple[str, ...]
    target: str | None = None
    target_probs: tuple[str, ...] = ()
    sample_weight: str | None = None
    is_logits: bool = False

    @property
    def binary(self) -> bool:
        return len(self.predictions) == 1

    @property
    def numeric(self) -> list[str]:
        return [*self.predictions, *self.target_probs] + ([self.sample_weight] if self.sample_weight else [])


def _listing(names: Sequence[str]) -> str:
    shown = ", ".join(names[:_MAX_LISTED])
    return shown + (f", ... ({len(names)} in all)" if len(names) > _MAX_LISTED else "")


def _missing(source: Source, name: str, option: str) -> InputError:
    close = difflib.get_close_matches(name, source.columns, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return InputError(f"{source.where()}: no column {name!r} ({option}){hint} Columns: {_listing(source.columns)}")


def _patterns(values: Sequence[str] | None) -> list[str]:
    return [part.strip() for value in values or () for part in value.split(",") if part.strip()]


def _match(source: Source, patterns: list[str], option: str) -> list[tuple[str, str]]:
    """``(column, class)`` pairs selected by ``patterns``, in pattern then file order.

    Linear in the number of columns for each pattern (a wide file has hundreds of thousands).
    """
    names = set(source.columns)
    chosen: list[tuple[str, str]] = []
    for pattern in patterns:
        if pattern in names:
            chosen.append((pattern, pattern))
            continue
        if not any(c in pattern for c in "*?["):
            raise _missing(source, pattern, option)
        matched = fnmatch.filter(source.columns, pattern)
        if not matched:
            raise InputError(
                f"{source.where()}: no column matches {option} {pattern!r}. Columns: {_listing(source.columns)}"
            )
        capture = pattern.count("*") == 1 and not any(c in pattern for c in "?[")
        head, _, tail = pattern.partition("*")
        for name in matched:
            chosen.append((name, name[len(head) : len(name) - len(tail)] if capture else name))
    if twice := repeated([column for column, _ in chosen]):
        raise InputError(f"{source.where()}: {option} selects column {min(twice)!r} twice")
    if twice := repeated([name for _, name in chosen]):
        raise InputError(f"{source.where()}: {option} names class {min(twice)!r} twice")
    return chosen


def select_columns(source: Source, args: argparse.Namespace) -> Selection:
    """Resolve the column options against the file's header."""
    if (args.target is None) == (not args.target_probs):
        raise InputError(f"{source.where()}: give the targets either as --target COL or as --target-probs PATTERN")
    if args.probs and args.logits:
        raise InputError(f"{source.where()}: give the predictions either as --probs or as --logits, not both")
    names = set(source.columns)
    used: set[str] = set()
    if args.target is not None:
        if args.target not in names:
            raise _missing(source, args.target, "--target")
        used.add(args.target)
    if args.sample_weight is not None:
        if args.sample_weight not in names:
            raise _missing(source, args.sample_weight, "--sample-weight")
        used.add(args.sample_weight)
    target_pairs = _match(source, _patterns(args.target_probs), "--target-probs") if args.target_probs else []
    used.update(column for column, _ in target_pairs)
    option = "--logits" if args.logits else "--probs"
    if args.logits or args.probs:
        pairs = _match(source, _patterns(args.logits or args.probs), option)
    else:
        pairs = [(name, name) for name in source.columns if name not in used]
        if not pairs:
            raise InputError(f"{source.where()}: has no prediction columns besides the targets and weights")
    overlap = [column for column, _ in pairs if column in used]
    if overlap:
        raise InputError(
            f"{source.where(column=overlap[0])}: is selected both as a prediction and as a target or weight"
        )
    columns = tuple(column for column, _ in pairs)
    classes = tuple(name for _, name in pairs)
    if len(columns) == 1:
        if target_pairs:
            raise InputError(f"{source.where()}: --target-probs needs one prediction column per class; got one")
        classes = ("", args.positive if args.positive is not None else classes[0])
    elif args.positive is not None:
        raise InputError(f"{source.where()}: --positive applies to one prediction column; got {len(columns)}")
    ordered_targets: tuple[str, ...] = ()
    if target_pairs:
        by_class = dict((name, column) for column, name in target_pairs)
        predicted = set(classes)
        missing = [name for name in classes if name not in by_class]
        extra = [name for name in by_class if name not in predicted]
        if missing or extra:
            raise InputError(
                f"{source.where()}: the classes of --target-probs and of {option} must be the same; "
                + "; ".join(
                    part
                    for part in (
                        f"no target column for {_listing(missing)}" if missing else "",
                        f"no prediction column for {_listing(extra)}" if extra else "",
                    )
                    if part
                )
            )
        ordered_targets = tuple(by_class[name] for name in classes)
    return Selection(
        predictions=columns,
        classes=classes,
        target=args.target,
        target_probs=ordered_targets,
        sample_weight=args.sample_weight,
        is_logits=bool(args.logits) or bool(getattr(args, "from_logits", False)),
    )


# ---------------------------------------------------------------------------------------------
# Scoring


class _Labels:
    """Maps label text to class indices batch by batch; with one prediction column, learns the negative label."""

    def __init__(self, source: Source, selection: Selection) -> None:
        self.source, self.selection = source, selection
        self.index = {name: k for k, name in enumerate(selection.classes)}
        self.negative: str | None = None
        self.negative_row: int | None = None  # where the negative label first occurs
        self.positive_seen = False

    def encode(self, column: Any, first_row: int) -> np.ndarray:
        import pyarrow as pa
        import pyarrow.compute as pc

        name = self.selection.target
        if column.null_count:
            row = int(np.argmax(np.asarray(column.is_null())))
            raise InputError(f"{self.source.where(first_row + row, name)}: the label is missing")
        if not pa.types.is_dictionary(column.type):
            column = pc.dictionary_encode(column)
        encoded = column.combine_chunks()
        values = [_label_text(v) for v in encoded.dictionary.to_pylist()]
        if self.selection.binary:
            positive = self.selection.classes[1]
            lookup = np.zeros(len(values), dtype=np.int64)
            for k, value in enumerate(values):
                if value == positive:
                    lookup[k] = 1
                    self.positive_seen = True
                elif self.negative is None:
                    self.negative = value
                    self.negative_row = first_row + int(np.argmax(np.asarray(encoded.indices) == k))
                elif value != self.negative:
                    codes = np.asarray(encoded.indices)
                    row = int(np.argmax(codes == k))
                    raise third_label(self.source.where(first_row + row, name), value, self.negative, self.selection)
        else:
            lookup = np.array([self.index.get(value, -1) for value in values], dtype=np.int64)
            if (lookup < 0).any():
                unknown = int(np.argmax(lookup < 0))
                codes = np.asarray(encoded.indices)
                row = int(np.argmax(codes == unknown))
                raise InputError(
                    f"{self.source.where(first_row + row, name)}: label {values[unknown]!r} has no prediction column; "
                    f"the classes are {_listing(list(self.selection.classes))}{self._prefix_hint(values[unknown])}"
                )
        return lookup[np.asarray(encoded.indices)]

    def _prefix_hint(self, label: str) -> str:
        columns = self.selection.predictions
        prefix = os.path.commonprefix(list(columns))  # noqa: RUF071 - column names: a character-wise prefix
        if prefix and any(column == prefix + label for column in columns):
            return f" (columns are named {prefix}<class>: pass --probs '{prefix}*')"
        return ""


def third_label(where: str, value: str, negative: str, selection: Selection) -> InputError:
    """The error for a label besides the negative one and the positive class of one prediction column."""
    return InputError(
        f"{where}: label {value!r} is a third label besides {negative!r} and the positive class "
        f"{selection.classes[1]!r} of the one prediction column {selection.predictions[0]!r}; binary predictions "
        "need two labels (see --positive)"
    )


def _label_text(value: Any) -> str:
    """A label as the text a column name would hold: whole floats without their ``.0``."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def score_source(
    source: Source,
    selection: Selection,
    *,
    n_bins: int = 15,
    renormalize: bool = False,
    tolerance: float = 1e-6,
    base: float | None = None,
    progress: bool | None = None,
    batch_rows: int | None = None,
    fit_rows: int | None = 0,
) -> ScoreReport:
    """Score every row of ``source``; bad input raises :class:`InputError` naming the row and column.

    ``batch_rows`` (Parquet and NumPy files; CSV is read in blocks of bytes) defaults to
    131,072 rows, fewer when the columns would make a batch larger than 32 MiB of float64.
    With logits and class targets and ``fit_rows`` other than 0, the report's ``temperature`` is
    fitted on a uniform sample of at most ``fit_rows`` rows (None: as many as
    :func:`crossentropy.cli._scoring.temperature_rows` allows within 256 MB). The command asks
    for it by default; called from Python, no temperature is fitted unless asked, and the
    memory is that of a batch.

    It is :func:`file_scorer`, :func:`add_rows` and :func:`finish_report` in turn; the Dask
    engine (:mod:`crossentropy.dask`) runs :func:`add_rows` on each partition and merges.
    """
    if fit_rows is None:
        fit_rows = temperature_rows(len(selection.classes))
    scorer = file_scorer(
        selection, n_bins=n_bins, renormalize=renormalize, tolerance=tolerance, base=base, fit_rows=fit_rows
    )
    labels = _Labels(source, selection) if selection.target is not None else None
    add_rows(source, selection, scorer, labels, progress=progress, batch_rows=batch_rows)
    return finish_report(
        source,
        selection,
        scorer,
        negative=labels.negative if labels is not None else None,
        positive_seen=labels is not None and labels.positive_seen,
        renormalize=renormalize,
        tolerance=tolerance,
    )


def file_scorer(
    selection: Selection,
    *,
    n_bins: int = 15,
    renormalize: bool = False,
    tolerance: float = 1e-6,
    base: float | None = None,
    fit_rows: int = 0,
) -> FileScorer:
    """A new :class:`FileScorer` for the columns of ``selection`` (``fit_rows``: its temperature sample)."""
    spec = ScoreSpec(
        classes=selection.classes,
        is_logits=selection.is_logits,
        soft_targets=bool(selection.target_probs),
        n_bins=n_bins,
        renormalize=renormalize,
        tolerance=tolerance,
        base=base,
    )
    return FileScorer(spec, temperature_rows=fit_rows)


def add_rows(
    source: Source,
    selection: Selection,
    scorer: FileScorer,
    labels: _Labels | None,
    *,
    progress: bool | None = None,
    batch_rows: int | None = None,
) -> None:
    """Add every row of ``source`` to ``scorer``, its labels encoded by ``labels`` (None: no label column)."""
    if batch_rows is None:
        batch_rows = max(1, min(_BATCH_ROWS, _BATCH_BYTES // (8 * (len(selection.numeric) + 1))))
    description = f"scoring {source.path.name}"
    with progress_bar(description, unit=source.progress_unit, enabled=progress) as bar:
        bar.update(*source.progress())
        known = selection.classes if selection.target is not None and not selection.binary else None
        n_classes = len(selection.predictions)
        target_slot = n_classes if selection.target_probs else -1
        weight_slot = len(selection.numeric) - 1 if selection.sample_weight else -1
        for first_row, item in source.batches(selection.numeric, selection.target, batch_rows, known, lines=True):
            if isinstance(item, CsvLines):
                # The fast path; a block it cannot take is parsed by pyarrow and scored below.
                item.n_rows = scorer.add_csv_lines(
                    item.array(), item.layout, target_slot=target_slot, weight_slot=weight_slot
                )
                if item.n_rows is not None:
                    bar.update(*source.progress())
                    continue
                table = item.table()
            else:
                table = item
            if table.num_rows == 0:
                continue
            predictions = _numbers(source, table, selection.predictions, first_row)
            target_probs = (
                _numbers(source, table, selection.target_probs, first_row) if selection.target_probs else None
            )
            weight = (
                _numbers(source, table, [selection.sample_weight], first_row)[:, 0] if selection.sample_weight else None
            )
            targets = labels.encode(table.column(selection.target), first_row) if labels is not None else None
            try:
                scorer.add(predictions, targets, target_probs=target_probs, sample_weight=weight)
            except InvalidValue as problem:
                raise _located(source, selection, problem) from None
            bar.update(*source.progress())


def finish_report(
    source: Source,
    selection: Selection,
    scorer: FileScorer,
    *,
    negative: str | None,
    positive_seen: bool,
    renormalize: bool,
    tolerance: float,
    first_unnormalized: Sequence[str | None] | None = None,
) -> ScoreReport:
    """The report of every row added to ``scorer``; the checks that need all of them first.

    ``negative`` and ``positive_seen`` (one prediction column and class labels): the label taken
    for the negative class, and whether the positive class's occurred. ``first_unnormalized``:
    where the first prediction and target rows that do not sum to 1 are, as text (default:
    ``row R`` of ``source``, by the scorer's count).
    """
    if selection.target is not None and selection.binary:
        positive = selection.classes[1]
        if not positive_seen and negative is not None:
            raise InputError(
                f"{source.where(column=selection.target)}: no label equals the positive class {positive!r} "
                f"of the one prediction column {selection.predictions[0]!r}; name it with --positive LABEL"
            )
        scorer.spec = replace(scorer.spec, classes=(negative if negative is not None else f"not {positive}", positive))
    if scorer.rows_seen == 0:
        raise InputError(f"{source.where()}: has a header but no rows")
    try:
        report = scorer.report()
    except ValueError as error:
        raise InputError(f"{source.where()}: {error}") from None
    report.temperature = scorer.fit_temperature()
    if first_unnormalized is None:
        first_unnormalized = [
            None if row is None else _row_name(source, row)
            for row in (scorer.first_unnormalized(), scorer.first_unnormalized(targets=True))
        ]
    report.warnings += _normalization_warnings(source, selection, report, renormalize, tolerance, first_unnormalized)
    report.source = {"file": str(source.path), "format": source.kind, "bytes": source.size_bytes}
    if isinstance(source, MultiSource):
        report.source["files"] = len({part.path for part in source.parts})
    return report


def _row_name(source: Source, row: int) -> str:
    """``row R`` of a file; in a data set of several files, ``FILE: row R`` of the file that holds it."""
    return source.where(row) if isinstance(source, MultiSource) else f"row {row + 1}"


def _numbers(source: Source, table: Any, names: Sequence[str], first_row: int) -> np.ndarray:
    """The columns ``names`` of a batch as a float64 array of shape ``(n_rows, len(names))``.

    A pyarrow table's missing cell (an empty CSV field, ``NA``) is an :class:`InputError`; a
    :class:`MatrixBatch` (NumPy files, wide CSV blocks) holds the numbers already checked.
    """
    if isinstance(table, MatrixBatch):
        return table.numbers(names)
    columns = [table.column(name) for name in names]
    for name, column in zip(names, columns, strict=True):
        if column.null_count:
            raise source.missing_value(first_row + int(np.argmax(np.asarray(column.is_null()))), name)
    return np.column_stack([column.to_numpy() for column in columns])


def _located(source: Source, selection: Selection, problem: InvalidValue) -> InputError:
    if problem.role == "weight":
        column = selection.sample_weight
    elif problem.role == "target" and selection.target_probs:
        column = selection.target_probs[problem.column]
    elif problem.role == "target":
        column = selection.target
    elif problem.role == "prediction":
        column = selection.predictions[0] if selection.binary else selection.predictions[problem.column]
    else:
        column = None
    value = "" if problem.value is None else f"{problem.value!r} "
    subject = "the row" if problem.role == "row" else f"the {problem.role} {value}".rstrip()
    return InputError(f"{source.where(problem.row, column)}: {subject} {problem.reason}")


def _normalization_warnings(
    source: Source,
    selection: Selection,
    report: ScoreReport,
    renormalize: bool,
    tolerance: float,
    first_unnormalized: Sequence[str | None],
) -> list[str]:
    messages = []
    action = (
        "divided by their sums (--renormalize)"
        if renormalize
        else "used as given; --renormalize divides them by their sums"
    )
    for count, is_target, what in (
        (report.unnormalized_predictions, False, "predicted probabilities"),
        (report.unnormalized_targets, True, "target probabilities"),
    ):
        if count and not (selection.is_logits and not is_target):
            first = first_unnormalized[1 if is_target else 0]
            messages.append(
                f"{source.where()}: {count:,} of {report.rows:,} rows of {what} do not sum to 1 within {tolerance:g} "
                f"(first: {first}); {action}"
            )
    return messages


# ---------------------------------------------------------------------------------------------
# The command


def command(args: argparse.Namespace) -> int:
    """Run ``crossentropy score`` with parsed options; returns the exit code."""
    files = [args.file, *getattr(args, "more_files", ())]
    try:
        if args.engine != "dask" and (args.workers is not None or args.scheduler is not None):
            raise InputError("--workers and --scheduler choose the cluster of --engine dask; add --engine dask")
        if args.workers is not None and args.scheduler is not None:
            raise InputError("--engine dask takes either --workers N (a new local cluster) or --scheduler ADDRESS")
        source = open_inputs(files, file_format=args.format, delimiter=args.delimiter)
        inputs = [part.path for part in source.parts] if isinstance(source, MultiSource) else [source.path]
        report_dir = _check_report_dir(args.report, inputs) if args.report is not None else None
        selection = select_columns(source, args)
        options = {
            "n_bins": args.bins,
            "renormalize": args.renormalize,
            "tolerance": args.tolerance,
            "base": args.base,
            "progress": args.progress,
            "fit_rows": args.temperature_rows,
        }
        if args.engine == "dask":
            from .. import dask as dask_engine

            try:
                report = dask_engine.score_source(
                    source, selection, workers=args.workers, scheduler=args.scheduler, **options
                )
            except ImportError as error:
                raise InputError(f"--engine dask: {error}") from None
        else:
            report = score_source(source, selection, **options)
    except InputError as error:
        return _error(error)
    name = str(files[0]) if len(files) == 1 else str(source.path)
    for warning in report.warnings:
        print(f"crossentropy score: warning: {warning}", file=sys.stderr)
    written: list[Path] = []
    if report_dir is not None:
        from ._report import write_report

        try:
            written = write_report(report, report_dir, title=f"crossentropy score {Path(name).name or name}")
        except OSError as error:
            return _error(f"{report_dir}: the report cannot be written: {error.strerror or error}")
    if args.json:
        figures = report.as_dict()
        if written:
            figures["report"] = [str(path) for path in written]
        print(json.dumps(figures, indent=2))
    else:
        print(f"{name}: {report.source['format']}, {selection_text(report)}")
        print(report.as_text())
        if written:
            print(f"\nreport: {written[0]}")
    return 0


def _error(message: object) -> int:
    """Print ``message`` as the one line of an error on stderr; returns exit code 2."""
    text = re.sub(r"\s*[\r\n]+\s*", " ", str(message)).strip()
    print(f"crossentropy score: error: {text}", file=sys.stderr)
    return 2


def selection_text(report: ScoreReport) -> str:
    spec = report.spec
    what = "logits" if spec.is_logits else "probabilities"
    target = "target distributions" if spec.soft_targets else "class labels"
    return f"{what} against {target}"


def _check_report_dir(directory: Path, input_files: Sequence[Path]) -> Path:
    """``--report DIR`` must be a directory we may write to and must not be, or hold, an input file."""
    try:
        if directory.exists() and not directory.is_dir():
            raise InputError(f"{directory}: --report must name a directory; this is a file (it is left alone)")
        resolved = directory.resolve()
        for input_file in input_files:
            if input_file.name in OUTPUT_NAMES and resolved == input_file.resolve().parent:
                raise InputError(f"{input_file}: --report {directory} would write over the input file")
    except OSError as error:
        raise InputError(f"{directory}: --report cannot be used: {error.strerror or error}") from None
    return directory
