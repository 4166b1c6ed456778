r"""The command line's side of :class:`crossentropy.metrics.Scorer`: columns, CSV blocks, the report, the temperature.

``crossentropy score`` scores on the library's streaming scorer (:mod:`crossentropy._scorer`,
whose kernel is :mod:`crossentropy.kernels.numba._scoring`); this module adapts it to files:

- :class:`ScoreSpec` says what the columns mean (class names, logits, distributions,
  renormalization);
- :class:`FileScorer` feeds a :class:`~crossentropy.metrics.Scorer` batches of arrays, and
  blocks of plain CSV lines parsed and scored in one pass by
  :func:`crossentropy.cli._kernels._csv.score_lines` into the same scorer's sums;
- :class:`ScoreReport` turns the scorer's :class:`~crossentropy.metrics.ScoreResult` into the
  table, the JSON and the HTML report, in nats, bits and ``--base``;
- :class:`TemperatureSample` keeps a uniform sample of the rows of logits (all of them when they
  fit), on which ``score`` fits the temperature (:func:`crossentropy.metrics.fit_temperature`)
  and reports the calibration it gives.

The figures' definitions are those of :class:`crossentropy.metrics.Scorer`: every figure is a
ratio of sums, so the figures of a file read in batches are those of the whole file at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._scorer import _CLIP_EPS, InvalidValue, Scorer, ScoreResult
from .._tools.tables import Table, render_plain
from ..kernels.numba._threading import launch_lock

__all__ = ["FileScorer", "InvalidValue", "ScoreReport", "ScoreSpec", "TemperatureSample", "temperature_rows"]

# A sample of logits rows for the temperature, with the fit's working arrays, stays under this.
TEMPERATURE_BYTES = 256 << 20
# fit_temperature's peak is about 8-11 float64 copies of its logits (measured, 2 to 100 classes);
# with the sample itself, its targets and weights: this many float64 per class and row, plus 4 per row.
_FIT_COPIES = 12
_NO_STORE = np.zeros((0, 1))
_NO_STORE_FIRST = np.zeros(0, dtype=np.int64)


def temperature_rows(n_classes: int, budget_bytes: int = TEMPERATURE_BYTES) -> int:
    """The default number of rows of logits kept for the temperature fit: within ``budget_bytes`` in all."""
    return max(1, budget_bytes // (8 * (_FIT_COPIES * n_classes + 4)))


@dataclass(frozen=True)
class ScoreSpec:
    """What the columns mean and how to score them.

    Attributes
    ----------
    classes : tuple of str
        Class names in column order. Binary predictions (one column) have two: the negative
        class first, then the positive one.
    is_logits : bool
        Predictions are logits (softmax; a single binary column is the positive-class logit).
    soft_targets : bool
        Targets are distributions over ``classes`` rather than class indices.
    n_bins : int
        Equal-width confidence bins for the calibration error and the reliability diagram.
    renormalize : bool
        Divide each probability row by its sum before scoring.
    tolerance : float
        Probability rows must sum to 1 within this; others are counted (and renormalized if asked).
    base : float or None
        Logarithm base of the entropy-valued figures besides nats and bits (None: nats only).
    """

    classes: tuple[str, ...]
    is_logits: bool = False
    soft_targets: bool = False
    n_bins: int = 15
    renormalize: bool = False
    tolerance: float = 1e-6
    base: float | None = None

    @property
    def n_classes(self) -> int:
        return len(self.classes)


@dataclass
class ScoreReport:
    """The figures of a scored file; :meth:`as_dict` is the ``--json`` output.

    Entropy-valued figures are kept in nats and shown in nats, bits and ``spec.base``.
    ``temperature``, for logits: the fitted temperature and the calibration it gives
    (:meth:`TemperatureSample.fit`).
    """

    spec: ScoreSpec
    rows: int
    weight: float
    log_loss: float
    accuracy: float
    brier_score: float
    expected_calibration_error: float
    mean_predicted_entropy: float
    target_entropy: float | None
    kl_divergence: float | None
    per_class: list[dict[str, Any]]
    reliability: list[dict[str, float]]
    unnormalized_predictions: int
    unnormalized_targets: int
    warnings: list[str] = field(default_factory=list)
    source: dict[str, Any] = field(default_factory=dict)
    temperature: dict[str, Any] | None = None

    @classmethod
    def from_result(cls, spec: ScoreSpec, result: ScoreResult) -> ScoreReport:
        """The report of a scorer's figures (computed in nats), its classes named by ``spec``."""
        return cls(
            spec=spec,
            rows=result.rows,
            weight=result.weight,
            log_loss=result.log_loss,
            accuracy=result.accuracy,
            brier_score=result.brier_score,
            expected_calibration_error=result.expected_calibration_error,
            mean_predicted_entropy=result.mean_predicted_entropy,
            target_entropy=result.target_entropy,
            kl_divergence=result.kl_divergence,
            per_class=[
                {
                    "class": name,
                    "rows": row.rows,
                    "weight": row.weight,
                    "mean_cross_entropy": row.log_loss,
                    "recall": row.recall,
                }
                for name, row in zip(spec.classes, result.per_class, strict=True)
            ],
            reliability=[
                {
                    "low": b.low,
                    "high": b.high,
                    "weight": b.weight,
                    "confidence": b.confidence,
                    "accuracy": b.accuracy,
                }
                for b in result.reliability
            ],
            unnormalized_predictions=result.unnormalized_predictions,
            unnormalized_targets=result.unnormalized_targets,
        )

    @property
    def perplexity(self) -> float:
        return math.exp(self.log_loss)

    def in_base(self, nats: float | None, base: float | None) -> float | None:
        if nats is None:
            return None
        return nats if base is None else nats / math.log(base)

    def as_dict(self) -> dict[str, Any]:
        spec = self.spec
        unit = "nats" if spec.base is None else f"base {spec.base:g}"
        figures: dict[str, Any] = {
            "rows": self.rows,
            "weight": self.weight,
            "classes": list(spec.classes),
            "log_loss_nats": self.log_loss,
            "log_loss_bits": self.log_loss / math.log(2),
        }
        if spec.base is not None:
            figures["log_loss_base"] = self.in_base(self.log_loss, spec.base)
        figures.update(
            {
                "perplexity": self.perplexity,
                "accuracy": self.accuracy,
                "brier_score": self.brier_score,
                "expected_calibration_error": self.expected_calibration_error,
                "calibration_bins": spec.n_bins,
                "mean_predicted_entropy": self.in_base(self.mean_predicted_entropy, spec.base),
                "entropy_unit": unit,
            }
        )
        if spec.soft_targets:
            figures["target_entropy"] = self.in_base(self.target_entropy, spec.base)
            figures["kl_divergence"] = self.in_base(self.kl_divergence, spec.base)
            figures["cross_entropy"] = self.in_base(self.log_loss, spec.base)
        figures["per_class"] = [
            {**row, "mean_cross_entropy": self.in_base(row["mean_cross_entropy"], spec.base)} for row in self.per_class
        ]
        figures["reliability"] = self.reliability
        figures["unnormalized_prediction_rows"] = self.unnormalized_predictions
        if spec.soft_targets:
            figures["unnormalized_target_rows"] = self.unnormalized_targets
        if self.temperature is not None:
            figures["temperature"] = dict(self.temperature)
        figures["warnings"] = list(self.warnings)
        if self.source:
            figures["source"] = dict(self.source)
        return figures

    def summary_rows(self) -> list[tuple[str, str]]:
        """``(label, formatted value)`` pairs of the headline figures, in reading order."""
        spec = self.spec
        unit = "nats" if spec.base is None else f"base {spec.base:g}"
        rows = [
            ("rows", f"{self.rows:,}"),
            ("classes", f"{spec.n_classes}"),
        ]
        if self.weight != self.rows:
            rows.append(("total sample weight", f"{self.weight:.6g}"))
        label = "cross-entropy H(P,Q)" if spec.soft_targets else "log loss"
        rows += [
            (f"{label} (nats)", f"{self.log_loss:.6f}"),
            (f"{label} (bits)", f"{self.log_loss / math.log(2):.6f}"),
        ]
        if spec.base is not None and spec.base not in (2, math.e):
            rows.append((f"{label} ({unit})", f"{self.in_base(self.log_loss, spec.base):.6f}"))
        if spec.soft_targets:
            rows += [
                (f"entropy H(P) of the targets ({unit})", f"{self.in_base(self.target_entropy, spec.base):.6f}"),
                (f"KL(P||Q) ({unit})", f"{self.in_base(self.kl_divergence, spec.base):.6f}"),
                ("H(P) + KL - H(P,Q)", f"{self.target_entropy + self.kl_divergence - self.log_loss:.1e}"),
            ]
        rows += [
            ("perplexity", f"{self.perplexity:.6g}"),
            ("accuracy" + (" (arg-max of the targets)" if spec.soft_targets else ""), f"{self.accuracy:.6f}"),
            ("Brier score" + (" (halved, two classes)" if spec.n_classes == 2 else ""), f"{self.brier_score:.6f}"),
            (f"expected calibration error ({spec.n_bins} bins)", f"{self.expected_calibration_error:.6f}"),
            (f"mean predicted entropy ({unit})", f"{self.in_base(self.mean_predicted_entropy, spec.base):.6f}"),
        ]
        return rows + self.temperature_rows()

    def temperature_rows(self) -> list[tuple[str, str]]:
        """The summary lines of the fitted temperature (none without one)."""
        fit = self.temperature
        if fit is None:
            return []
        used = f"{fit['rows']:,} rows" if not fit["sampled"] else f"a sample of {fit['rows']:,} of {self.rows:,} rows"
        if fit.get("error"):
            return [(f"temperature fitted on {used}", f"none: {fit['error']}")]
        rows = [(f"temperature fitted on {used}", f"{fit['value']:.6g}")]
        if fit["log_loss_nats"] is None:
            return rows
        on = "on the sample" if fit["sampled"] else "at T = 1"
        ece_at_one = f"{fit['expected_calibration_error_at_1']:.6f}"
        loss_at_one = f"{fit['log_loss_nats_at_1']:.6f}"
        if fit["sampled"]:
            ece_at_one, loss_at_one = f"{ece_at_one} at T = 1", f"{loss_at_one} at T = 1"
        rows.append(("  log loss at that temperature (nats)", f"{fit['log_loss_nats']:.6f} ({on}: {loss_at_one})"))
        ece = f"{fit['expected_calibration_error']:.6f} ({on}: {ece_at_one})"
        rows.append((f"  expected calibration error at that temperature ({self.spec.n_bins} bins)", ece))
        return rows

    def as_text(self) -> str:
        rows = self.summary_rows()
        width = max(len(label) for label, _ in rows)
        lines = [f"  {label:<{width}}  {value}" for label, value in rows]
        lines += ["", self.per_class_text()]
        return "\n".join(lines)

    def per_class_rows(self) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
        """Header and formatted rows of the per-class table: class, rows, mean cross-entropy, recall."""
        unit = "nats" if self.spec.base is None else f"base {self.spec.base:g}"
        header = ("class", "rows", f"mean cross-entropy ({unit})", "recall")
        body = []
        for row in self.per_class:
            mean = self.in_base(row["mean_cross_entropy"], self.spec.base)
            recall = row["recall"]
            body.append(
                (
                    str(row["class"]),
                    f"{row['rows']:,}",
                    "-" if mean is None else f"{mean:.6f}",
                    "-" if recall is None else f"{recall:.4f}",
                )
            )
        return header, body

    def per_class_text(self) -> str:
        header, body = self.per_class_rows()
        return render_plain(Table("", list(header), [list(row) for row in body]), title=False, rule=False, indent="  ")


class FileScorer:
    """Scores the batches of a file on one :class:`crossentropy.metrics.Scorer` (``self.scorer``).

    Parameters
    ----------
    spec : ScoreSpec
        Columns and options.
    n_chunks : int, optional
        Independent partial sums a batch is split into (parallel over rows); default four per
        Numba thread, fewer for many classes (the sums of all chunks stay under 16 MiB).
    temperature_rows : int, optional
        With logits and class targets: keep a uniform sample of up to this many rows of logits
        (:class:`TemperatureSample`) for :meth:`fit_temperature`; None or 0, no sample.
    """

    def __init__(self, spec: ScoreSpec, *, n_chunks: int | None = None, temperature_rows: int | None = None) -> None:
        if spec.n_classes < 2:
            raise ValueError(f"`spec.classes` must name at least 2 classes; got {list(spec.classes)}")
        self.spec = spec
        # No top-k beyond the accuracy: the command does not report it, and its pass is saved.
        self.scorer = Scorer(n_bins=spec.n_bins, top_k=())._configure(
            n_classes=spec.n_classes,
            targets="probabilities" if spec.soft_targets else "index",
            renormalize=spec.renormalize,
            tolerance=spec.tolerance,
            n_chunks=n_chunks,
            warn=False,  # the command words its own warnings
        )
        self.sample: TemperatureSample | None = None
        if temperature_rows and spec.is_logits and not spec.soft_targets:
            self.sample = TemperatureSample(temperature_rows)

    @property
    def rows_seen(self) -> int:
        return self.scorer._rows

    def add(
        self,
        predictions: np.ndarray,
        targets: np.ndarray | None = None,
        *,
        target_probs: np.ndarray | None = None,
        sample_weight: np.ndarray | None = None,
    ) -> None:
        """Score one batch (:meth:`crossentropy.metrics.Scorer.update`).

        Parameters
        ----------
        predictions : float array of shape (n_rows, n_classes), or (n_rows,) for binary
            Probabilities or logits (``spec.is_logits``); a 1-d array is the positive class.
        targets : int array of shape (n_rows,), optional
            Class indices (required unless ``spec.soft_targets``).
        target_probs : float array of shape (n_rows, n_classes), optional
            Target distributions (``spec.soft_targets``).
        sample_weight : float array of shape (n_rows,), optional

        Raises
        ------
        InvalidValue
            At the first value that cannot be scored, with its row counted from the first batch.
        """
        if self.spec.soft_targets:
            if target_probs is None:
                raise ValueError("`target_probs` must be given when `spec.soft_targets` is set")
            given = target_probs
        else:
            if targets is None:
                raise ValueError("`targets` must be given unless `spec.soft_targets` is set")
            given = targets
        self.scorer.update(predictions, given, sample_weight=sample_weight, from_logits=self.spec.is_logits)
        if self.sample is not None:
            self.sample.add(np.asarray(predictions), np.asarray(targets), sample_weight)

    def add_csv_lines(
        self, data: np.ndarray, layout: Any, *, target_slot: int = -1, weight_slot: int = -1
    ) -> int | None:
        """Parse and score a block of plain CSV lines in one pass (:func:`crossentropy.cli._kernels._csv.score_lines`).

        ``data`` holds complete lines, each ending in a line break; ``layout`` (a
        :class:`crossentropy.cli._sources.PlainLayout`) puts the ``n_classes`` predictions at
        slots 0 ..., the target distribution at ``target_slot`` and the weight at ``weight_slot``
        (-1: none). Returns the number of rows, or None, having added nothing, if the block is
        not plain or holds a value that cannot be scored: the caller then scores it through
        :meth:`add`, which explains what is wrong. With a temperature sample, the same pass
        keeps the parsed numbers of every line, from which the sample takes its rows.
        """
        from ._kernels import _csv

        spec, scorer = self.spec, self.scorer
        size = int(data.shape[0])
        n_segments = scorer._chunks(size >> 16, layout.n_numbers + 2 * spec.n_classes)
        totals, per_class, bins, top_hits, problems = scorer._accumulators(n_segments)
        rows = np.zeros(n_segments, dtype=np.int64)
        failed = np.full(n_segments, -1, dtype=np.int64)
        scratch = np.zeros((n_segments, layout.n_numbers + 2 * spec.n_classes))
        store, store_first = _NO_STORE, _NO_STORE_FIRST
        if self.sample is not None:
            # Where each segment's lines start, so that the kernel stores line r of segment s at
            # store_first[s] + r: segment s takes the lines that start in its byte range.
            starts = np.flatnonzero(data == 10) + 1
            starts = np.concatenate(([0], starts[starts < size]))
            store = self._store_buffer(starts.shape[0], layout.n_numbers + 1)
            store_first = np.searchsorted(starts, np.arange(n_segments) * size // n_segments).astype(np.int64)
        with launch_lock():
            _csv.score_lines(
                data, size, n_segments, layout.roles, layout.slots, layout.delimiter, layout.names, layout.offsets,
                spec.n_classes, target_slot, weight_slot, spec.is_logits, spec.renormalize, spec.tolerance, _CLIP_EPS,
                scorer._edges, scorer._top_k_array, totals, per_class, bins, top_hits, problems, rows, failed, scratch,
                store, store_first,
            )  # fmt: skip
        if (failed >= 0).any() or (problems[:, 0] >= 0).any():  # column 0: BAD_ROW
            return None
        first_rows = np.concatenate(([0], np.cumsum(rows)[:-1]))
        n_rows = int(rows.sum())
        scorer._add_sums(totals, per_class, bins, top_hits, problems, first_rows, n_rows)
        if self.sample is not None:
            if n_rows != starts.shape[0]:  # pragma: no cover - a plain block has one row per line
                raise RuntimeError(f"a plain CSV block of {n_rows} rows has {starts.shape[0]} lines")
            positions, slots = self.sample.select(n_rows)
            if positions.size:
                kept = store[positions]
                weight = kept[:, weight_slot] if weight_slot >= 0 else None
                self.sample.put(slots, kept[:, : spec.n_classes], kept[:, -1].astype(np.int64), weight)
        return n_rows

    def _store_buffer(self, n_lines: int, width: int) -> np.ndarray:
        """A reused float64 buffer of ``n_lines`` rows of ``width`` for the parsed lines of a block."""
        buffer = getattr(self, "_store", None)
        if buffer is None or buffer.shape[0] < n_lines or buffer.shape[1] != width:
            buffer = np.empty((max(n_lines, 1), width))
            self._store = buffer
        return buffer[:n_lines]

    def first_unnormalized(self, targets: bool = False) -> int | None:
        """0-based row of the first prediction (or target) row whose probabilities do not sum to 1."""
        return self.scorer._first_unnormalized[1 if targets else 0]

    def report(self) -> ScoreReport:
        """The figures of everything added so far."""
        return ScoreReport.from_result(self.spec, self.scorer.compute())

    def fit_temperature(self) -> dict[str, Any] | None:
        """The temperature fitted on the sample and the calibration it gives (:meth:`TemperatureSample.fit`)."""
        if self.sample is None or self.sample.rows == 0:
            return None
        return self.sample.fit(n_bins=self.spec.n_bins)


class TemperatureSample:
    r"""A uniform sample of up to ``capacity`` rows of logits, targets and weights (reservoir sampling).

    Vitter's algorithm R, a batch at a time: the first ``capacity`` rows are all kept; row
    :math:`i > \text{capacity}` (0-based) replaces a uniformly chosen kept row with probability
    :math:`\text{capacity} / (i + 1)`, so at any point every row seen so far is in the sample with
    the same probability. When the file has at most ``capacity`` rows, the sample is the file.
    The random choices are seeded, so a run is reproducible.
    """

    def __init__(self, capacity: int, *, seed: int = 0) -> None:
        if capacity < 1:
            raise ValueError(f"`capacity` must be at least 1; got {capacity}")
        self.capacity = int(capacity)
        self.seen = 0
        self._rng = np.random.default_rng(seed)
        self._logits: np.ndarray | None = None
        self._targets = np.zeros(0, dtype=np.int64)
        self._weight: np.ndarray | None = None
        self._weighted = False

    @property
    def rows(self) -> int:
        """Rows in the sample."""
        return min(self.seen, self.capacity)

    def select(self, n_rows: int) -> tuple[np.ndarray, np.ndarray]:
        """For the next ``n_rows`` rows: the positions (increasing) of those the sample takes, and their slots.

        Advances the count of rows seen; the caller then writes those rows with :meth:`put`.
        """
        capacity, seen = self.capacity, self.seen
        filling = max(0, min(n_rows, capacity - seen))
        positions = np.arange(filling, dtype=np.int64)
        slots = seen + positions
        if filling < n_rows:
            rest = np.arange(filling, n_rows, dtype=np.int64)
            draws = self._rng.integers(0, seen + rest + 1)  # row i's slot, kept when below the capacity
            taken = draws < capacity
            positions = np.concatenate((positions, rest[taken]))
            slots = np.concatenate((slots, draws[taken]))
            # A slot taken twice in the batch keeps the later row.
            _, last = np.unique(slots[::-1], return_index=True)
            keep = np.sort(slots.shape[0] - 1 - last)
            positions, slots = positions[keep], slots[keep]
        self.seen = seen + n_rows
        return positions, slots

    def put(self, slots: np.ndarray, logits: np.ndarray, targets: np.ndarray, weight: np.ndarray | None) -> None:
        """Write rows into their slots (from :meth:`select`)."""
        logits = np.asarray(logits, dtype=np.float64)
        if logits.ndim == 2 and logits.shape[1] == 1:
            logits = logits[:, 0]
        if self._logits is None:
            self._logits = np.empty((self.capacity, *logits.shape[1:]))
            self._targets = np.empty(self.capacity, dtype=np.int64)
            self._weight = np.ones(self.capacity)
        self._logits[slots] = logits
        self._targets[slots] = targets
        if weight is not None:
            self._weight[slots] = weight
            self._weighted = True

    def add(self, logits: np.ndarray, targets: np.ndarray, weight: np.ndarray | None) -> None:
        """Offer a batch of rows (logits of shape (n, C), (n, 1) or (n,); class indices; weights or None)."""
        positions, slots = self.select(int(np.shape(logits)[0]))
        if positions.size:
            self.put(
                slots,
                np.asarray(logits)[positions],
                np.asarray(targets)[positions],
                None if weight is None else np.asarray(weight)[positions],
            )

    def fit(self, *, n_bins: int = 15) -> dict[str, Any]:
        """Fit the temperature on the sample; the log loss and calibration error at it and at T = 1, on the sample.

        Returns a dict: ``value`` (the temperature: 0 or inf at the limits that
        :func:`crossentropy.metrics.fit_temperature` returns for separated or useless logits), ``rows``
        (in the sample), ``sampled`` (whether the sample is less than every row), then
        ``log_loss_nats`` and ``expected_calibration_error`` of the sample's logits divided by the
        temperature and ``log_loss_nats_at_1``, ``expected_calibration_error_at_1`` of the same
        rows as given (None for a temperature of 0 or inf); ``error``, instead, when no
        temperature can be fitted (for example every weight of the sample is 0).
        """
        from ..metrics import fit_temperature

        n = self.rows
        logits, targets = self._logits[:n], self._targets[:n]
        weight = self._weight[:n] if self._weighted else None
        fit: dict[str, Any] = {"value": None, "rows": n, "sampled": self.seen > n}
        try:
            temperature = fit_temperature(logits, targets, sample_weight=weight)
        except ValueError as error:
            return {**fit, "error": str(error)}
        fit.update(
            value=temperature,
            log_loss_nats=None,
            expected_calibration_error=None,
            log_loss_nats_at_1=None,
            expected_calibration_error_at_1=None,
        )
        if not 0 < temperature < math.inf:
            return fit
        at_fit = Scorer(n_bins=n_bins).update(logits / temperature, targets, sample_weight=weight, from_logits=True)
        as_given = Scorer(n_bins=n_bins).update(logits, targets, sample_weight=weight, from_logits=True)
        for suffix, scorer in (("", at_fit), ("_at_1", as_given)):
            result = scorer.compute()
            fit["log_loss_nats" + suffix] = result.log_loss
            fit["expected_calibration_error" + suffix] = result.expected_calibration_error
        return fit
