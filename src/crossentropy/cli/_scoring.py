r"""Streaming evaluation of probabilistic predictions: the figures of ``crossentropy score``.

A :class:`Scorer` takes batches of predictions (probabilities or logits, one column per class)
and targets (class indices or distributions), adds their sums with the fused kernel of
:mod:`crossentropy.cli._kernels._scoring`, and turns the totals into a :class:`ScoreReport`. Memory
is that of one batch, whatever the number of batches, and the figures are those of the whole
file at once: every figure is a ratio of sums, and sums add up across batches.

With weights :math:`w_n` (1 by default), :math:`W = \sum_n w_n`, cross-entropies :math:`\ell_n`
(see the kernel) and top-label confidences :math:`c_n` with hits :math:`a_n`:

.. math::

    \text{log loss} = \frac{1}{W} \sum_n w_n \ell_n, \qquad
    \text{perplexity} = e^{\text{log loss (nats)}}, \qquad
    \text{accuracy} = \frac{1}{W} \sum_n w_n a_n,

    \text{Brier} = \frac{c}{W} \sum_n w_n \sum_k (q_{nk} - t_{nk})^2, \qquad
    \text{ECE} = \frac{1}{W} \sum_b \Bigl| \sum_{n \in b} w_n (a_n - c_n) \Bigr|,

with :math:`c = 1/2` for two classes (scikit-learn's ``brier_score_loss``) and 1 otherwise. These
are :func:`crossentropy.log_loss`, :func:`crossentropy.brier_score` and
:func:`crossentropy.expected_calibration_error` of the whole data, computed in float64.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..kernels.numba._threading import launch_lock
from ._kernels import _scoring as kernel

__all__ = ["InvalidValue", "ScoreReport", "ScoreSpec", "Scorer"]

_CLIP_EPS = float(np.finfo(np.float64).eps)
# The partial sums of a batch (per chunk: per-class totals and scratch rows) stay under this,
# so a batch of many classes is split into fewer chunks rather than taking memory per class and thread.
_CHUNK_BYTES = 16 << 20

_PROBLEM_TEXT = {
    kernel.BAD_NAN: "is NaN",
    kernel.BAD_PROBABILITY: "is not a probability in [0, 1]",
    kernel.BAD_POSITIVE_INFINITY: "is +inf (logits must be finite or -inf)",
    kernel.BAD_WEIGHT: "is not a finite non-negative weight",
    kernel.BAD_TARGET_NAN: "is NaN",
    kernel.BAD_TARGET_PROBABILITY: "is not a probability in [0, 1]",
    kernel.BAD_ZERO_SUM: "sums to 0, so it cannot be renormalized",
    kernel.BAD_ALL_NEGATIVE_INFINITY: "is -inf in every class (no probability left)",
}


class InvalidValue(ValueError):
    """A value the scorer cannot use: ``row`` (0-based, in the whole input), the role of its column and why.

    ``role`` is ``"prediction"``, ``"target"``, ``"weight"`` or ``"row"`` (the whole row);
    ``column`` indexes the class for predictions and targets.
    """

    def __init__(self, row: int, role: str, column: int, value: float | None, reason: str) -> None:
        self.row, self.role, self.column, self.value, self.reason = row, role, column, value, reason
        super().__init__(f"row {row + 1}: {role} {reason}")


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
    """The figures of a scored file; :meth:`as_dict` is the ``--json`` output."""

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
        widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
        line = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
        return "\n".join("  " + line.format(*r) for r in [header, *body])


class Scorer:
    """Accumulates batches of predictions and targets into a :class:`ScoreReport`.

    Parameters
    ----------
    spec : ScoreSpec
        Columns and options.
    n_chunks : int, optional
        Independent partial sums a batch is split into (parallel over rows); default four per
        Numba thread, fewer for many classes (the sums of all chunks stay under 16 MiB).
    """

    def __init__(self, spec: ScoreSpec, *, n_chunks: int | None = None) -> None:
        if spec.n_classes < 2:
            raise ValueError(f"`spec.classes` must name at least 2 classes; got {list(spec.classes)}")
        if n_chunks is None:
            import numba

            n_chunks = 4 * numba.get_num_threads()
        self.spec = spec
        self._n_chunks = n_chunks
        n_bins = spec.n_bins
        self._edges = np.linspace(0.0, 1.0, n_bins + 1)[1:-1].copy()
        self._totals = np.zeros(kernel.N_TOTALS)
        self._per_class = np.zeros((spec.n_classes, kernel.N_CLASS_TOTALS))
        self._bins = np.zeros((n_bins, kernel.N_BIN_TOTALS))
        self._rows_seen = 0
        self._first_unnormalized: list[int | None] = [None, None]
        self._no_weight = np.zeros(0)
        self._no_target_probs = np.zeros((0, spec.n_classes))
        self._no_targets = np.zeros(0, dtype=np.int64)

    @property
    def rows_seen(self) -> int:
        return self._rows_seen

    def add(
        self,
        predictions: np.ndarray,
        targets: np.ndarray | None = None,
        *,
        target_probs: np.ndarray | None = None,
        sample_weight: np.ndarray | None = None,
    ) -> None:
        """Score one batch.

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
        spec = self.spec
        pred = self._prediction_matrix(predictions)
        n_rows = pred.shape[0]
        if spec.soft_targets:
            if target_probs is None:
                raise ValueError("`target_probs` must be given when `spec.soft_targets` is set")
            soft = np.ascontiguousarray(target_probs, dtype=np.float64)
            if soft.shape != pred.shape:
                raise ValueError(f"`target_probs` must have shape {pred.shape}; got {soft.shape}")
            index = self._no_targets
        else:
            if targets is None:
                raise ValueError("`targets` must be given unless `spec.soft_targets` is set")
            index = np.ascontiguousarray(targets, dtype=np.int64)
            if index.shape != (n_rows,):
                raise ValueError(f"`targets` must have shape ({n_rows},); got {index.shape}")
            outside = (index < 0) | (index >= spec.n_classes)
            if outside.any():
                row = int(np.argmax(outside))
                raise InvalidValue(self._rows_seen + row, "target", -1, float(index[row]), "is not a class index")
            soft = self._no_target_probs
        weight = self._no_weight
        if sample_weight is not None:
            weight = np.ascontiguousarray(sample_weight, dtype=np.float64)
            if weight.shape != (n_rows,):
                raise ValueError(f"`sample_weight` must have shape ({n_rows},); got {weight.shape}")
        n_chunks = self._chunks(n_rows, 2 * spec.n_classes)
        totals = np.zeros((n_chunks, kernel.N_TOTALS))
        per_class = np.zeros((n_chunks, spec.n_classes, kernel.N_CLASS_TOTALS))
        bins = np.zeros((n_chunks, spec.n_bins, kernel.N_BIN_TOTALS))
        problems = np.full((n_chunks, kernel.N_PROBLEMS), -1, dtype=np.int64)
        scratch = np.empty((n_chunks, 2 * spec.n_classes))
        with launch_lock():  # serializes the kernels' launches where Numba's threading layer needs it
            kernel.score_rows(
                pred, spec.is_logits, index, soft, weight, spec.renormalize, spec.tolerance, _CLIP_EPS, self._edges,
                totals, per_class, bins, problems, scratch,
            )  # fmt: skip
        self._raise_first_problem(problems, pred, soft, weight, predictions)
        self._absorb(totals, per_class, bins, problems, np.zeros(n_chunks, dtype=np.int64), n_rows)

    def add_csv_lines(
        self, data: np.ndarray, layout: Any, *, target_slot: int = -1, weight_slot: int = -1
    ) -> int | None:
        """Parse and score a block of plain CSV lines in one pass (:func:`crossentropy.cli._kernels._csv.score_lines`).

        ``data`` holds complete lines, each ending in a line break; ``layout`` (a
        :class:`crossentropy.cli._sources.PlainLayout`) puts the ``n_classes`` predictions at
        slots 0 ..., the target distribution at ``target_slot`` and the weight at ``weight_slot``
        (-1: none). Returns the number of rows, or None, having added nothing, if the block is
        not plain or holds a value that cannot be scored: the caller then scores it through
        :meth:`add`, which explains what is wrong.
        """
        from ._kernels import _csv

        spec = self.spec
        size = int(data.shape[0])
        n_segments = self._chunks(size >> 16, layout.n_numbers + 2 * spec.n_classes)
        totals = np.zeros((n_segments, kernel.N_TOTALS))
        per_class = np.zeros((n_segments, spec.n_classes, kernel.N_CLASS_TOTALS))
        bins = np.zeros((n_segments, spec.n_bins, kernel.N_BIN_TOTALS))
        problems = np.full((n_segments, kernel.N_PROBLEMS), -1, dtype=np.int64)
        rows = np.zeros(n_segments, dtype=np.int64)
        failed = np.full(n_segments, -1, dtype=np.int64)
        scratch = np.zeros((n_segments, layout.n_numbers + 2 * spec.n_classes))
        with launch_lock():
            _csv.score_lines(
                data, size, n_segments, layout.roles, layout.slots, layout.delimiter, layout.names, layout.offsets,
                spec.n_classes, target_slot, weight_slot, spec.is_logits,
                spec.renormalize, spec.tolerance, _CLIP_EPS, self._edges, totals, per_class, bins, problems, rows,
                failed, scratch,
            )  # fmt: skip
        if (failed >= 0).any() or (problems[:, kernel.BAD_ROW] >= 0).any():
            return None
        first_rows = np.concatenate(([0], np.cumsum(rows)[:-1]))
        n_rows = int(rows.sum())
        self._absorb(totals, per_class, bins, problems, first_rows, n_rows)
        return n_rows

    def _chunks(self, at_most: int, scratch_columns: int) -> int:
        """How many chunks (or segments) a batch is split into.

        At most ``at_most`` and the scorer's ``n_chunks``, and few enough that their partial
        sums and ``scratch_columns`` float64 each stay under :data:`_CHUNK_BYTES` in all.
        """
        spec = self.spec
        per_chunk = 8 * (
            spec.n_classes * kernel.N_CLASS_TOTALS
            + spec.n_bins * kernel.N_BIN_TOTALS
            + kernel.N_TOTALS
            + kernel.N_PROBLEMS
            + scratch_columns
        )
        return max(1, min(self._n_chunks, at_most, _CHUNK_BYTES // per_chunk))

    def _absorb(
        self,
        totals: np.ndarray,
        per_class: np.ndarray,
        bins: np.ndarray,
        problems: np.ndarray,
        first_rows: np.ndarray,
        n_rows: int,
    ) -> None:
        """Add a batch's per-chunk sums; ``first_rows[c]`` turns chunk ``c``'s recorded rows into batch rows."""
        for slot, column in enumerate((kernel.FIRST_UNNORMALIZED_PREDICTION, kernel.FIRST_UNNORMALIZED_TARGET)):
            found = problems[:, column] >= 0
            if self._first_unnormalized[slot] is None and found.any():
                self._first_unnormalized[slot] = self._rows_seen + int((first_rows + problems[:, column])[found].min())
        self._totals += totals.sum(axis=0)
        self._per_class += per_class.sum(axis=0)
        self._bins += bins.sum(axis=0)
        self._rows_seen += n_rows

    def _prediction_matrix(self, predictions: np.ndarray) -> np.ndarray:
        spec = self.spec
        pred = np.asarray(predictions, dtype=np.float64)
        if pred.ndim == 2 and pred.shape[1] == 1:
            pred = pred[:, 0]
        if pred.ndim == 1:
            if spec.n_classes != 2:
                raise ValueError(f"one prediction column needs 2 classes; `spec.classes` has {spec.n_classes}")
            # Positive-class probability p -> (1 - p, p); positive-class logit z -> softmax of (0, z).
            first = np.zeros_like(pred) if spec.is_logits else 1.0 - pred
            return np.stack([first, pred], axis=1)
        if pred.ndim != 2 or pred.shape[1] != spec.n_classes:
            raise ValueError(f"`predictions` must have shape (n_rows, {spec.n_classes}); got {pred.shape}")
        return np.ascontiguousarray(pred)

    def _raise_first_problem(
        self, problems: np.ndarray, pred: np.ndarray, soft: np.ndarray, weight: np.ndarray, given: np.ndarray
    ) -> None:
        bad = problems[:, kernel.BAD_ROW] >= 0
        if not bad.any():
            return
        chunk = int(np.argmin(np.where(bad, problems[:, kernel.BAD_ROW], np.iinfo(np.int64).max)))
        row, column, code = (int(v) for v in problems[chunk, : kernel.BAD_CODE + 1])
        reason = _PROBLEM_TEXT[code]
        global_row = self._rows_seen + row
        if code == kernel.BAD_WEIGHT:
            raise InvalidValue(global_row, "weight", -1, float(weight[row]), reason)
        if code in (kernel.BAD_TARGET_NAN, kernel.BAD_TARGET_PROBABILITY):
            raise InvalidValue(global_row, "target", column, float(soft[row, column]), reason)
        if column < 0:
            raise InvalidValue(global_row, "row", -1, None, reason)
        if np.ndim(given) == 1 or (np.ndim(given) == 2 and np.shape(given)[1] == 1):
            column = 1  # the one given column is the positive class's
        raise InvalidValue(global_row, "prediction", column, float(pred[row, column]), reason)

    def first_unnormalized(self, targets: bool = False) -> int | None:
        """0-based row of the first prediction (or target) row whose probabilities do not sum to 1."""
        return self._first_unnormalized[1 if targets else 0]

    def report(self) -> ScoreReport:
        """The figures of everything added so far."""
        spec = self.spec
        t = self._totals
        if t[kernel.ROWS] == 0:
            raise ValueError("no rows were scored")
        weight = t[kernel.WEIGHT]
        if weight == 0:
            raise ValueError("every sample weight is 0, so the weighted means are undefined")
        brier_scale = 0.5 if spec.n_classes == 2 else 1.0
        per_class = []
        for k, name in enumerate(spec.classes):
            rows, w, ce, hits = self._per_class[k]
            per_class.append(
                {
                    "class": name,
                    "rows": int(rows),
                    "weight": float(w),
                    "mean_cross_entropy": float(ce / w) if w > 0 else None,
                    "recall": float(hits / w) if w > 0 else None,
                }
            )
        reliability = []
        edges = np.linspace(0.0, 1.0, spec.n_bins + 1)
        for b in range(spec.n_bins):
            w, confidence, hits = self._bins[b]
            reliability.append(
                {
                    "low": float(edges[b]),
                    "high": float(edges[b + 1]),
                    "weight": float(w),
                    "confidence": float(confidence / w) if w > 0 else None,
                    "accuracy": float(hits / w) if w > 0 else None,
                }
            )
        ece = float(np.abs(self._bins[:, kernel.BIN_CORRECT] - self._bins[:, kernel.BIN_CONFIDENCE]).sum() / weight)
        return ScoreReport(
            spec=spec,
            rows=int(t[kernel.ROWS]),
            weight=float(weight),
            log_loss=float(t[kernel.CROSS_ENTROPY] / weight),
            accuracy=float(t[kernel.CORRECT] / weight),
            brier_score=float(brier_scale * t[kernel.SQUARED_ERROR] / weight),
            expected_calibration_error=ece,
            mean_predicted_entropy=float(t[kernel.PREDICTED_ENTROPY] / weight),
            target_entropy=float(t[kernel.TARGET_ENTROPY] / weight) if spec.soft_targets else None,
            kl_divergence=float(t[kernel.KL] / weight) if spec.soft_targets else None,
            per_class=per_class,
            reliability=reliability,
            unnormalized_predictions=int(t[kernel.UNNORMALIZED_PREDICTIONS]),
            unnormalized_targets=int(t[kernel.UNNORMALIZED_TARGETS]),
        )
