r"""Streaming evaluation: :class:`Scorer`, the mergeable sums behind ``crossentropy score``.

A :class:`Scorer` takes batches of predictions (probabilities or logits, one column per class)
and targets (class indices, labels or distributions) and adds their sums in one pass of a fused
Numba kernel (:mod:`crossentropy.kernels.numba._scoring`). Every figure of
:meth:`Scorer.compute` is a ratio of these sums, so memory is that of one batch, the figures are
those of the whole data at once, and two scorers' states add up (:meth:`Scorer.merge`,
:meth:`Scorer.sync`): exactly, up to the rounding of float64 additions, in any order.

Re-exported by :mod:`crossentropy.metrics`; the command line's ``crossentropy score`` runs on it.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import array_api_compat
import numpy as np

from ._validation import check_base, check_integer_option

__all__ = ["CalibrationBin", "ClassScore", "InvalidValue", "ScoreResult", "Scorer"]

_STATE_VERSION = 1
_CLIP_EPS = float(np.finfo(np.float64).eps)
# The partial sums of a batch (per chunk: per-class totals and scratch rows) stay under this,
# so a batch of many classes is split into fewer chunks rather than taking memory per class and thread.
_CHUNK_BYTES = 16 << 20
_TARGET_KINDS = ("index", "probabilities")

_kernel: Any = None


def _scoring_kernel() -> Any:
    """The kernel module, imported on first use (Numba loads with it; ``import crossentropy`` stays light)."""
    global _kernel
    if _kernel is None:
        from .kernels.numba import _scoring

        _kernel = _scoring
    return _kernel


def _problem_text(kernel: Any, code: int) -> str:
    return {
        kernel.BAD_NAN: "is NaN",
        kernel.BAD_PROBABILITY: "is not a probability in [0, 1]",
        kernel.BAD_POSITIVE_INFINITY: "is +inf (logits must be finite or -inf)",
        kernel.BAD_WEIGHT: "is not a finite non-negative weight",
        kernel.BAD_TARGET_NAN: "is NaN",
        kernel.BAD_TARGET_PROBABILITY: "is not a probability in [0, 1]",
        kernel.BAD_ZERO_SUM: "sums to 0, so it cannot be renormalized",
        kernel.BAD_ALL_NEGATIVE_INFINITY: "is -inf in every class (no probability left)",
    }[code]


_PARAMETER = {"prediction": "predictions", "target": "targets", "weight": "sample_weight", "row": "predictions"}


class InvalidValue(ValueError):
    """A value a :class:`Scorer` cannot use: its row, the role of its column, the value and why.

    Attributes
    ----------
    row : int
        0-based, counted over every row the scorer was given since it was created or reset (the
        first row of the first :meth:`Scorer.update` is 0).
    role : str
        ``"prediction"``, ``"target"``, ``"weight"`` or ``"row"`` (the whole prediction row).
    column : int
        The class's column for predictions and target distributions; -1 otherwise.
    value : float or None
        The offending value (None for a whole row).
    reason : str
        What is wrong, e.g. ``"is NaN"``.
    """

    def __init__(self, row: int, role: str, column: int, value: Any, reason: str) -> None:
        self.row, self.role, self.column, self.value, self.reason = row, role, column, value, reason
        where = f"row {row}" + (f", column {column}" if column >= 0 else "")
        subject = "the row" if value is None else repr(value)
        super().__init__(
            f"`{_PARAMETER.get(role, role)}` at {where} (rows counted from 0 over every update): {subject} {reason}"
        )


@dataclass(frozen=True)
class ClassScore:
    """The figures of the rows whose true class is ``label`` (the arg-max of the target for distributions).

    Attributes
    ----------
    label : int, float or str
        The class: its entry of ``labels``, or its column index.
    rows : int
        Rows of this true class.
    weight : float
        Their total sample weight.
    log_loss : float or None
        Their weighted mean cross-entropy, in the scorer's ``base``; None when ``weight`` is 0.
    recall : float or None
        The weighted share of them predicted as this class (arg-max); None when ``weight`` is 0.
    """

    label: Any
    rows: int
    weight: float
    log_loss: float | None
    recall: float | None


@dataclass(frozen=True)
class CalibrationBin:
    """One confidence bin ``(low, high]`` of a reliability diagram (the first bin also holds 0).

    Attributes
    ----------
    low, high : float
        The bin's edges.
    weight : float
        The bin's share of the sample weight before dividing by the total (the row count without
        weights).
    confidence, accuracy : float or None
        The weighted means of the top-label confidence and of the hits of the rows in the bin;
        None for an empty bin.
    """

    low: float
    high: float
    weight: float
    confidence: float | None
    accuracy: float | None


@dataclass(frozen=True)
class ScoreResult:
    r"""The figures of every row a :class:`Scorer` was given (:meth:`Scorer.compute`).

    Entropy-valued figures (``log_loss``, ``mean_predicted_entropy``, ``target_entropy``,
    ``kl_divergence``, the per-class ``log_loss``) are in the scorer's ``base`` (nats for None).

    Attributes
    ----------
    rows : int
        Rows scored.
    weight : float
        Their total sample weight :math:`W` (``rows`` without weights).
    classes : tuple
        The classes in column order: the sorted ``labels``, or ``0 ... C-1``.
    log_loss : float
        :math:`\frac1W \sum_n w_n \ell_n`: :func:`crossentropy.log_loss` for class targets, the
        cross-entropy :math:`H(P, Q)` for distributions.
    perplexity : float
        :math:`e^{\text{log loss in nats}}`, whatever the base.
    brier_score : float
        :func:`crossentropy.brier_score` (halved for two classes, as scikit-learn).
    accuracy : float
        Weighted share of rows whose first arg-max is the true class (the target's arg-max for
        distributions).
    top_k_accuracy : dict of int to float
        For each k of ``top_k``: the weighted share of rows whose true class is among the k most
        probable, :func:`crossentropy.top_k_accuracy` (ties as scikit-learn breaks them: the greater
        index ranks first, so ``top_k_accuracy[1]`` differs from ``accuracy``, which takes the first
        arg-max, only on rows whose top probability is tied).
    expected_calibration_error, rms_calibration_error, max_calibration_error : float
        Top-label calibration error over ``n_bins`` equal-width bins, in the L1, L2 and max norms
        (:func:`crossentropy.expected_calibration_error` with ``norm="l1"``, ``"l2"``, ``"max"``).
    mean_predicted_entropy : float
        :math:`\frac1W \sum_n w_n H(Q_n)`.
    target_entropy, kl_divergence : float or None
        For target distributions: :math:`\frac1W \sum_n w_n H(P_n)` and the mean
        :math:`D_{KL}(P_n \| Q_n)`, so ``log_loss == target_entropy + kl_divergence``; None for
        class targets.
    per_class : tuple of ClassScore
        One entry per class, in column order.
    reliability : tuple of CalibrationBin
        The ``n_bins`` bins behind the calibration errors, empty ones included.
    n_bins : int
        The scorer's number of confidence bins.
    base : float or None
        The scorer's logarithm base (None: nats).
    unnormalized_predictions, unnormalized_targets : int
        Rows of probabilities that did not sum to 1 within 1e-6 (used as given).
    """

    rows: int
    weight: float
    classes: tuple[Any, ...]
    log_loss: float
    perplexity: float
    brier_score: float
    accuracy: float
    top_k_accuracy: dict[int, float]
    expected_calibration_error: float
    rms_calibration_error: float
    max_calibration_error: float
    mean_predicted_entropy: float
    target_entropy: float | None
    kl_divergence: float | None
    per_class: tuple[ClassScore, ...]
    reliability: tuple[CalibrationBin, ...]
    n_bins: int
    base: float | None
    unnormalized_predictions: int
    unnormalized_targets: int


def _calibration_errors(confidence: np.ndarray, outcome: np.ndarray, weight: np.ndarray) -> tuple[float, float, float]:
    """L1, L2 and max calibration errors of per-bin sums (:func:`crossentropy.metrics._calibration_from_bins`)."""
    from .metrics import _calibration_from_bins

    l1, l2, top = (_calibration_from_bins(confidence, outcome, weight, norm=norm) for norm in ("l1", "l2", "max"))
    return l1, l2, top


def _to_host(x: Any, name: str) -> np.ndarray:
    """A NumPy array of ``x``: PyTorch tensors detached and moved to the host, CuPy and JAX arrays copied there."""
    if isinstance(x, np.ndarray):
        return x
    if array_api_compat.is_torch_array(x):
        import torch

        x = x.detach()
        if x.dtype in (torch.bfloat16, torch.float16):
            x = x.float()
        host: np.ndarray = x.cpu().numpy()
        return host
    if array_api_compat.is_cupy_array(x):
        copied: np.ndarray = x.get()
        return copied
    try:
        return np.asarray(x)
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"`{name}` must be an array (NumPy, PyTorch, JAX, CuPy) or a list; got {type(x).__name__}"
        ) from error


def _float_array(x: np.ndarray, name: str) -> np.ndarray:
    if x.dtype.kind not in "fiub":
        raise TypeError(f"`{name}` must be a real numeric array; got dtype {x.dtype}")
    return np.ascontiguousarray(x, dtype=np.float64)


def _check_top_k(top_k: Any) -> tuple[int, ...]:
    if isinstance(top_k, (numbers.Integral, np.integer)) and not isinstance(top_k, bool):
        top_k = (top_k,)
    if not isinstance(top_k, Iterable) or isinstance(top_k, (str, bytes)):
        raise TypeError(f"`top_k` must be a tuple of positive integers; got {top_k!r}")
    values = []
    for k in top_k:
        if isinstance(k, bool) or not isinstance(k, (numbers.Integral, np.integer)) or k < 1:
            raise ValueError(f"`top_k` must hold positive integers; got {tuple(top_k)!r}")
        values.append(int(k))
    return tuple(sorted(set(values)))


def _check_labels(labels: Any) -> tuple[np.ndarray, tuple[Any, ...]]:
    """The sorted label set (as :func:`crossentropy.log_loss` takes ``labels``) and its Python values."""
    if isinstance(labels, (str, bytes)):
        raise TypeError(f"`labels` must be a sequence of labels; got {labels!r}")
    given = _to_host(labels, "labels")
    if given.ndim != 1:
        raise ValueError(f"`labels` must be a 1-d sequence of labels; got shape {given.shape}")
    if given.dtype.kind == "f" and np.isnan(given).any():
        raise ValueError(f"`labels` must not contain NaN; got {given.tolist()}")
    try:
        classes = np.unique(given)
    except TypeError as error:
        kinds = sorted({type(v).__name__ for v in given.tolist()})
        raise TypeError(f"`labels` must hold labels of one sortable kind (numbers or strings); got {kinds}") from error
    if classes.shape[0] < 2 or classes.shape[0] != given.shape[0]:
        raise ValueError(f"`labels` must hold at least 2 labels, each once; got {given.tolist()}")
    if not np.all(classes == given):
        warnings.warn(
            f"`labels` were given as {given.tolist()}, but the columns of `predictions` are taken in sorted "
            f"label order {classes.tolist()} (as crossentropy.log_loss takes them); pass labels in that order and "
            "make sure the columns match it.",
            UserWarning,
            stacklevel=3,
        )
    return classes, tuple(classes.tolist())


class Scorer:
    r"""Streaming, mergeable evaluation of probabilistic predictions: log loss, accuracy, Brier, calibration.

    Feed batches with :meth:`update` (any number, any size); :meth:`compute` returns the figures
    of all of them at once as a :class:`ScoreResult`. The state is a few float64 arrays of sums
    (per class, per confidence bin, totals), independent of the number of rows, so scorers of
    different shards combine exactly (:meth:`merge` here, :meth:`sync` over
    ``torch.distributed``, :meth:`state_dict` to ship them anywhere), in any order, up to the
    rounding of float64 additions.

    With sample weights :math:`w_n` (1 by default), :math:`W = \sum_n w_n`, predicted
    distributions :math:`q_n` (probabilities as given, or :math:`\operatorname{softmax}(z_n)` of
    logits) over :math:`C` classes, targets :math:`t_n` (one-hot of the class :math:`y_n`, or a
    distribution), the top-label confidence :math:`c_n = \max_k q_{nk}` and the hit
    :math:`a_n = [\arg\max_k q_{nk} = y_n]` (:math:`y_n = \arg\max_k t_{nk}` for distributions):

    .. math::

        \ell_n = -\sum_k t_{nk} \log \operatorname{clip}(q_{nk}, \epsilon, 1 - \epsilon), \qquad
        \text{log loss} = \frac1W \sum_n w_n \ell_n, \qquad
        \text{perplexity} = e^{\text{log loss (nats)}},

        \text{Brier} = \frac{c}{W} \sum_n w_n \sum_k (q_{nk} - t_{nk})^2, \qquad
        \text{accuracy} = \frac1W \sum_n w_n a_n,

        \text{ECE}_{L1} = \frac1W \sum_b \Bigl| \sum_{n \in b} w_n (a_n - c_n) \Bigr|, \qquad
        \text{ECE}_{L2} = \Bigl(\sum_b \frac{W_b}{W} g_b^2\Bigr)^{1/2}, \qquad
        \text{ECE}_{\max} = \max_{b : W_b > 0} |g_b|,

    with :math:`c = 1/2` for two classes (scikit-learn's ``brier_score_loss``) and 1 otherwise,
    :math:`\epsilon` float64's machine epsilon (no clipping for logits: the log-softmax is exact),
    :math:`b` the equal-width confidence bins ``(lo, hi]`` over [0, 1], :math:`W_b` their weight
    and :math:`g_b = \sum_{n \in b} w_n (a_n - c_n) / W_b`. These equal, to float64 rounding,
    :func:`crossentropy.log_loss`, :func:`crossentropy.brier_score` and
    :func:`crossentropy.expected_calibration_error` (``norm="l1"``, ``"l2"``, ``"max"``) of the
    whole data concatenated; for distributions also the mean :func:`crossentropy.entropy`
    :math:`H(P)` and :func:`crossentropy.kl_divergence`, with :math:`H(P,Q) = H(P) + KL`.

    Parameters
    ----------
    labels : array-like, optional
        The class labels, when targets are given as labels (any sortable values: strings,
        integers) rather than column indices. Sorted before use, as :func:`crossentropy.log_loss`
        takes them: column ``k`` of the predictions is the ``k``-th smallest label (a
        ``UserWarning`` says so when they were not given sorted). Without ``labels``, targets are
        column indices and the number of classes is the predictions' number of columns (2 for
        one column or 1-d predictions), fixed by the first :meth:`update`.
    n_bins : int, default 15
        Equal-width confidence bins of the calibration errors and the reliability diagram.
    base : float, optional
        Logarithm base of the entropy-valued figures: None for nats, 2 for bits.
    top_k : tuple of int, default (1,)
        The k of the top-k accuracies to report (k = 1 costs nothing more; any k > 1 one more pass
        over each row's classes).

    Notes
    -----
    Inputs of any array library (NumPy, PyTorch, JAX, CuPy, lists) are copied to the host as
    float64 (CUDA tensors included, one transfer per batch); the arithmetic is float64 whatever
    the input's dtype, so float32 probabilities are clipped at float64's epsilon, not float32's
    as :func:`crossentropy.log_loss` clips them. Predictions of shape ``(n,)`` or ``(n, 1)`` are
    the positive class's (``(1 - p, p)``, or the softmax of ``(0, z)`` for a logit); at exactly
    0.5 the predicted class is the negative one (the first arg-max), where
    :func:`crossentropy.expected_calibration_error` on 1-d input predicts the positive one.
    Probability rows that do not sum to 1 within 1e-6 are used as given, counted in the result,
    and a ``UserWarning`` names the first. An :meth:`update` whose batch holds a bad value adds
    nothing and raises :class:`InvalidValue` naming the row and column.

    Examples
    --------
    >>> import numpy as np
    >>> from crossentropy.metrics import Scorer
    >>> scorer = Scorer()
    >>> for probs, targets in [(np.array([[0.9, 0.1], [0.2, 0.8]]), np.array([0, 1])),
    ...                        (np.array([[0.6, 0.4]]), np.array([1]))]:
    ...     _ = scorer.update(probs, targets)
    >>> result = scorer.compute()
    >>> result.rows, round(result.log_loss, 6), round(result.accuracy, 6)
    (3, 0.414932, 0.666667)
    >>> other = Scorer().update(np.array([[0.5, 0.5]]), np.array([0]))
    >>> scorer.merge(other).compute().rows
    4
    """

    def __init__(self, *, labels: Any = None, n_bins: int = 15, base: float | None = None, top_k: Any = (1,)) -> None:
        self._n_bins = check_integer_option("n_bins", n_bins, low=1)
        self._base = check_base(base)
        self._top_k = _check_top_k(top_k)
        if labels is None:
            self._labels, self._label_values = None, None
        else:
            self._labels, self._label_values = _check_labels(labels)
        # Private options, for the command line: renormalize probability rows, the tolerance of
        # their sums, the number of chunks of a batch, and whether to warn about unnormalized rows.
        self._renormalize = False
        self._tolerance = 1e-6
        self._n_chunks: int | None = None
        self._warn = True
        self._edges = np.linspace(0.0, 1.0, self._n_bins + 1)[1:-1].copy()
        self._top_k_array = np.array(self._top_k, dtype=np.int64)
        self.reset()

    # -----------------------------------------------------------------------------------------
    # State

    def reset(self) -> None:
        """Forget every row: back to the state of a new scorer with the same options."""
        self._n_classes: int | None = None if self._labels is None else int(self._labels.shape[0])
        self._targets: str | None = None
        self._rows = 0
        self._first_unnormalized: list[int | None] = [None, None]
        self._warned = False
        kernel = _scoring_kernel()
        self._totals = np.zeros(kernel.N_TOTALS)
        self._bins = np.zeros((self._n_bins, kernel.N_BIN_TOTALS))
        self._top_hits = np.zeros(len(self._top_k))
        self._per_class = None if self._n_classes is None else np.zeros((self._n_classes, kernel.N_CLASS_TOTALS))

    def _configure(
        self,
        *,
        n_classes: int | None = None,
        targets: str | None = None,
        renormalize: bool = False,
        tolerance: float = 1e-6,
        n_chunks: int | None = None,
        warn: bool = True,
    ) -> Scorer:
        """Private options of the command line (see ``__init__``); returns self."""
        if n_classes is not None:
            self._set_classes(n_classes, "n_classes")
        if targets is not None:
            self._targets = targets
        self._renormalize, self._tolerance, self._n_chunks, self._warn = (
            bool(renormalize),
            float(tolerance),
            n_chunks,
            warn,
        )
        return self

    def _set_classes(self, n_classes: int, what: str) -> None:
        if self._n_classes is None:
            if n_classes < 2:
                raise ValueError(f"`{what}` must give at least 2 classes; got {n_classes}")
            self._n_classes = int(n_classes)
            self._per_class = np.zeros((self._n_classes, _scoring_kernel().N_CLASS_TOTALS))
        elif n_classes != self._n_classes:
            raise ValueError(
                f"`{what}` must have one column per class ({self._n_classes}, as "
                f"{'`labels` give' if self._labels is not None else 'the first update had'}); got {n_classes}"
            )

    def _config(self) -> tuple[Any, ...]:
        return (self._label_values, self._n_bins, self._base, self._top_k, self._renormalize, self._tolerance)

    def _check_compatible(self, config: tuple[Any, ...], what: str) -> None:
        names = ("labels", "n_bins", "base", "top_k", "renormalize", "tolerance")
        for name, mine, theirs in zip(names, self._config(), config, strict=True):
            if mine != theirs:
                raise ValueError(f"{what} has `{name}` {theirs!r}, this scorer {mine!r}; only alike scorers combine")

    def _check_kinds(self, n_classes: int | None, targets: str | None, what: str) -> None:
        if n_classes is not None and self._n_classes is not None and n_classes != self._n_classes:
            raise ValueError(
                f"{what} scored {n_classes} classes, this scorer {self._n_classes}; only alike scorers combine"
            )
        if targets is not None and self._targets is not None and targets != self._targets:
            raise ValueError(
                f"{what} scored {targets} targets, this scorer {self._targets} targets; only alike scorers combine"
            )

    def merge(self, other: Scorer) -> Scorer:
        """Add the sums of ``other`` into this scorer; returns self.

        The result is that of one scorer given this scorer's rows, then ``other``'s (the rows of
        later errors and warnings count on from this scorer's). Exact up to float64 rounding,
        and independent of the order of merges to that rounding.

        Parameters
        ----------
        other : Scorer
            A scorer with the same options; it is left unchanged.

        Returns
        -------
        Scorer
            This scorer.

        Raises
        ------
        ValueError
            If the scorers differ in ``labels``, ``n_bins``, ``base`` or ``top_k``, in their
            number of classes, or one scored class targets and the other distributions.
        """
        if not isinstance(other, Scorer):
            raise TypeError(f"`other` must be a Scorer; got {type(other).__name__}")
        self._check_compatible(other._config(), "`other`")
        self._check_kinds(other._n_classes, other._targets, "`other`")
        self._add_state(
            other._n_classes, other._targets, other._rows, list(other._first_unnormalized),
            other._totals.copy(), None if other._per_class is None else other._per_class.copy(), other._bins.copy(),
            other._top_hits.copy(),
        )  # fmt: skip
        return self

    def _add_state(
        self,
        n_classes: int | None,
        targets: str | None,
        rows: int,
        first_unnormalized: list[int | None],
        totals: np.ndarray,
        per_class: np.ndarray | None,
        bins: np.ndarray,
        top_hits: np.ndarray,
    ) -> None:
        if n_classes is not None:
            self._set_classes(n_classes, "n_classes")
        if targets is not None:
            self._targets = targets
        for slot in (0, 1):
            first = first_unnormalized[slot]
            if self._first_unnormalized[slot] is None and first is not None:
                self._first_unnormalized[slot] = self._rows + first
        self._totals += totals
        if per_class is not None:
            self._per_class += per_class
        self._bins += bins
        self._top_hits += top_hits
        self._rows += rows

    def state_dict(self) -> dict[str, Any]:
        """The scorer's state: its options and sums, as plain values and float64/int64 NumPy arrays.

        Small (O(classes + bins)), picklable, and the same on every platform. The arrays'
        layout is internal and versioned (``"version"``); :meth:`load_state_dict` reads it back.

        Returns
        -------
        dict
            A new dictionary; later updates of the scorer do not change it.
        """
        n_classes = self._n_classes
        return {
            "version": _STATE_VERSION,
            "labels": self._label_values,
            "n_bins": self._n_bins,
            "base": self._base,
            "top_k": self._top_k,
            "renormalize": self._renormalize,
            "tolerance": self._tolerance,
            "n_classes": n_classes,
            "targets": self._targets,
            "rows": self._rows,
            "first_unnormalized": tuple(self._first_unnormalized),
            "totals": self._totals.copy(),
            "per_class": np.zeros((0, 4)) if self._per_class is None else self._per_class.copy(),
            "bins": self._bins.copy(),
            "top_k_hits": self._top_hits.copy(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Replace this scorer's rows by those of ``state`` (from :meth:`state_dict` of an alike scorer).

        Parameters
        ----------
        state : dict
            What :meth:`state_dict` returned, of a scorer with the same options.

        Raises
        ------
        ValueError
            If ``state`` is not a scorer's state, or comes from a scorer with other ``labels``,
            ``n_bins``, ``base`` or ``top_k``.
        """
        if not isinstance(state, dict) or state.get("version") != _STATE_VERSION:
            raise ValueError(
                f"`state` must be a Scorer.state_dict() of version {_STATE_VERSION}; got "
                + (f"version {state.get('version')!r}" if isinstance(state, dict) else type(state).__name__)
            )
        try:
            labels = state["labels"]
            config = (
                None if labels is None else tuple(labels),
                state["n_bins"], state["base"], tuple(state["top_k"]), bool(state["renormalize"]),
                float(state["tolerance"]),
            )  # fmt: skip
            n_classes, targets, rows = state["n_classes"], state["targets"], int(state["rows"])
            first = [None if v is None else int(v) for v in state["first_unnormalized"]]
            arrays = {
                name: np.asarray(state[name], dtype=np.float64)
                for name in ("totals", "per_class", "bins", "top_k_hits")
            }
        except (KeyError, TypeError) as error:
            raise ValueError(f"`state` must be a Scorer.state_dict(); it lacks or mangles {error}") from None
        public = ("labels", "n_bins", "base", "top_k")
        for name, mine, theirs in zip(public, self._config(), config, strict=False):
            if mine != theirs:
                raise ValueError(f"`state` has `{name}` {theirs!r}, this scorer {mine!r}; create the scorer alike")
        expected = {
            "totals": self._totals.shape,
            "per_class": (0 if n_classes is None else n_classes, 4),
            "bins": self._bins.shape,
            "top_k_hits": self._top_hits.shape,
        }
        for name, shape in expected.items():
            if arrays[name].shape != shape:
                raise ValueError(f"`state['{name}']` must have shape {shape}; got {arrays[name].shape}")
        if targets not in (None, *_TARGET_KINDS):
            raise ValueError(f"`state['targets']` must be one of None, 'index', 'probabilities'; got {targets!r}")
        self._renormalize, self._tolerance = config[4], config[5]
        self.reset()
        self._add_state(
            n_classes, targets, rows, first, arrays["totals"], arrays["per_class"] if n_classes else None,
            arrays["bins"], arrays["top_k_hits"],
        )  # fmt: skip

    def sync(self, group: Any = None) -> Scorer:
        """All-reduce (sum) the state over the ranks of a ``torch.distributed`` process group, in place.

        Every rank must call it (a collective). Afterwards every rank holds the sums of all ranks'
        rows, so :meth:`compute` gives, on each, the figures of the whole data, as one process
        given the ranks' rows in rank order. One small exchange of the options and counts
        (``all_gather_object``) and one all-reduce of the float64 sums (on the current CUDA
        device under NCCL). Returns self.

        Parameters
        ----------
        group : ProcessGroup, optional
            The group; the default (world) group when None.

        Returns
        -------
        Scorer
            This scorer.

        Raises
        ------
        RuntimeError
            Without an initialized ``torch.distributed`` process group.
        ValueError
            If the ranks' scorers differ in their options, classes or kind of targets.
        """
        import torch
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError(
                "`Scorer.sync` needs an initialized torch.distributed process group "
                "(torch.distributed.init_process_group); use merge() to combine scorers in one process"
            )
        world = dist.get_world_size(group)
        mine = (self._config(), self._n_classes, self._targets, self._rows, tuple(self._first_unnormalized))
        everyone: list[Any] = [None] * world
        dist.all_gather_object(everyone, mine, group=group)
        for rank, (config, n_classes, targets, _, _) in enumerate(everyone):
            self._check_compatible(config, f"the scorer of rank {rank}")
            self._check_kinds(n_classes, targets, f"the scorer of rank {rank}")
        for _, n_classes, targets, _, _ in everyone:
            if n_classes is not None:
                self._set_classes(n_classes, "n_classes")
            if targets is not None:
                self._targets = targets
        per_class = self._per_class if self._per_class is not None else np.zeros((0, 4))
        flat = np.concatenate([self._totals, per_class.ravel(), self._bins.ravel(), self._top_hits])
        backend = str(dist.get_backend(group))
        device = torch.device("cuda", torch.cuda.current_device()) if "nccl" in backend else torch.device("cpu")
        tensor = torch.from_numpy(flat).to(device)
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM, group=group)
        flat = tensor.cpu().numpy().astype(np.float64, copy=True)
        sizes = np.cumsum([self._totals.size, per_class.size, self._bins.size])
        self._totals = flat[: sizes[0]].copy()
        if self._per_class is not None:
            self._per_class = flat[sizes[0] : sizes[1]].reshape(self._per_class.shape).copy()
        self._bins = flat[sizes[1] : sizes[2]].reshape(self._bins.shape).copy()
        self._top_hits = flat[sizes[2] :].copy()
        offset = 0
        first: list[int | None] = [None, None]
        for _, _, _, rows, rank_first in everyone:
            for slot in (0, 1):
                if first[slot] is None and rank_first[slot] is not None:
                    first[slot] = offset + rank_first[slot]
            offset += rows
        self._first_unnormalized, self._rows = first, offset
        return self

    # -----------------------------------------------------------------------------------------
    # Rows

    @property
    def _chunk_count(self) -> int:
        if self._n_chunks is None:
            import numba

            self._n_chunks = 4 * numba.get_num_threads()
        return self._n_chunks

    def _chunks(self, at_most: int, scratch_columns: int) -> int:
        """How many chunks (or segments) a batch is split into.

        At most ``at_most`` and the scorer's chunk count, and few enough that their partial
        sums and ``scratch_columns`` float64 each stay under :data:`_CHUNK_BYTES` in all.
        """
        kernel = _scoring_kernel()
        per_chunk: int = 8 * (
            self._n_classes * kernel.N_CLASS_TOTALS
            + self._n_bins * kernel.N_BIN_TOTALS
            + kernel.N_TOTALS
            + kernel.N_PROBLEMS
            + self._top_k_array.shape[0]
            + scratch_columns
        )
        return max(1, min(self._chunk_count, at_most, _CHUNK_BYTES // per_chunk))

    def _accumulators(self, n_chunks: int) -> tuple[np.ndarray, ...]:
        """Zeroed per-chunk ``(totals, per_class, bins, top_hits, problems)`` for the kernels."""
        kernel = _scoring_kernel()
        assert self._n_classes is not None  # set by the batch being scored
        return (
            np.zeros((n_chunks, kernel.N_TOTALS)),
            np.zeros((n_chunks, self._n_classes, kernel.N_CLASS_TOTALS)),
            np.zeros((n_chunks, self._n_bins, kernel.N_BIN_TOTALS)),
            np.zeros((n_chunks, self._top_k_array.shape[0])),
            np.full((n_chunks, kernel.N_PROBLEMS), -1, dtype=np.int64),
        )

    def update(
        self, predictions: Any, targets: Any, /, *, sample_weight: Any = None, from_logits: bool = False
    ) -> Scorer:
        """Add a batch of rows; returns self.

        Parameters
        ----------
        predictions : array of shape (n_rows, n_classes), or (n_rows,) for two classes
            Probabilities in [0, 1] (rows summing to 1), or logits with ``from_logits`` (finite or
            -inf, softmax over the row). 1-d (or one column): the positive class's probability
            or logit.
        targets : array of shape (n_rows,) or (n_rows, n_classes)
            Class indices in ``[0, n_classes)`` (integers, or floats holding whole numbers), the
            labels themselves when the scorer has ``labels``, or target distributions of the
            predictions' shape (two columns for 1-d predictions). A scorer takes one kind of
            target.
        sample_weight : array of shape (n_rows,), optional
            Finite non-negative weights.
        from_logits : bool, default False
            ``predictions`` are logits.

        Returns
        -------
        Scorer
            This scorer.

        Raises
        ------
        InvalidValue
            At the first value that cannot be scored (NaN, a probability outside [0, 1], +inf
            logits, a bad weight or target), naming its row (counted from the first row of the
            first update) and column; the batch adds nothing.
        ValueError
            If the shapes do not match each other or the scorer's classes.
        """
        pred = _float_array(_to_host(predictions, "predictions"), "predictions")
        given_columns = 1 if pred.ndim == 1 else (pred.shape[1] if pred.ndim == 2 else -1)
        if pred.ndim not in (1, 2):
            raise ValueError(f"`predictions` must have shape (n_rows, n_classes) or (n_rows,); got shape {pred.shape}")
        if given_columns == 1:
            if self._n_classes not in (None, 2):
                raise ValueError(
                    f"`predictions` of shape {pred.shape} hold the positive class of 2 classes; this scorer has "
                    f"{self._n_classes} (one column per class)"
                )
            self._set_classes(2, "predictions")
            pred = pred.reshape(-1)
            # Positive-class probability p -> (1 - p, p); positive-class logit z -> softmax of (0, z).
            first = np.zeros_like(pred) if from_logits else 1.0 - pred
            pred = np.stack([first, pred], axis=1)
        else:
            self._set_classes(given_columns, "predictions")
        n_rows, n_classes = pred.shape
        given_targets = _to_host(targets, "targets")
        if given_targets.ndim == 2:
            kind = "probabilities"
            soft = _float_array(given_targets, "targets")
            if soft.shape != (n_rows, n_classes):
                raise ValueError(
                    f"`targets` must have shape {(n_rows, n_classes)} (distributions: one column per class) or "
                    f"({n_rows},) (classes); got shape {soft.shape}"
                )
            index = np.zeros(0, dtype=np.int64)
        elif given_targets.ndim == 1:
            kind = "index"
            if given_targets.shape[0] != n_rows:
                raise ValueError(
                    f"`targets` must have shape ({n_rows},) (one class per row); got shape {given_targets.shape}"
                )
            index = self._class_indices(given_targets)
            soft = np.zeros((0, n_classes))
        else:
            raise ValueError(
                f"`targets` must have shape ({n_rows},) or {(n_rows, n_classes)}; got shape {given_targets.shape}"
            )
        if self._targets is not None and kind != self._targets:
            raise ValueError(f"`targets` must be {self._targets} targets, as before; got {kind} targets")
        weight = np.zeros(0)
        if sample_weight is not None:
            weight = _float_array(_to_host(sample_weight, "sample_weight"), "sample_weight").reshape(-1)
            if weight.shape != (n_rows,) or np.ndim(sample_weight) > 2:
                raise ValueError(f"`sample_weight` must have shape ({n_rows},); got shape {np.shape(sample_weight)}")
        self._targets = kind
        if n_rows == 0:
            return self
        self._score(pred, bool(from_logits), index, soft, weight, given_columns == 1)
        return self

    def _class_indices(self, targets: np.ndarray) -> np.ndarray:
        """Column indices of 1-d targets, checked; :class:`InvalidValue` at the first that is not a class."""
        n_classes = self._n_classes
        assert n_classes is not None  # set by the predictions, read first
        if self._labels is not None:
            classes = self._labels
            try:
                position = np.searchsorted(classes, targets)
                inside = np.minimum(position, n_classes - 1)
                known = classes[inside] == targets
            except TypeError:  # labels of another kind than the targets: none is known
                known = np.zeros(targets.shape, dtype=bool)
                inside = np.zeros(targets.shape, dtype=np.int64)
            known = np.asarray(known, dtype=bool)
            if not known.all():
                row = int(np.argmin(known))
                expected = f"is not one of `labels` {list(self._label_values or ())}"
                raise InvalidValue(self._rows + row, "target", -1, _plain(targets[row]), expected)
            return inside.astype(np.int64)
        if targets.dtype.kind in "iub":
            index = targets.astype(np.int64, copy=False)
        elif targets.dtype.kind == "f":
            whole = np.isfinite(targets) & (targets == np.round(targets))
            if not whole.all():
                row = int(np.argmin(whole))
                raise InvalidValue(self._rows + row, "target", -1, float(targets[row]), "is not a class index")
            index = targets.astype(np.int64)
        else:
            raise TypeError(
                f"`targets` must be class indices (integers) or distributions unless the scorer has `labels`; "
                f"got dtype {targets.dtype}"
            )
        outside = (index < 0) | (index >= n_classes)
        if outside.any():
            row = int(np.argmax(outside))
            raise InvalidValue(
                self._rows + row, "target", -1, int(index[row]), f"is not a class index in [0, {n_classes})"
            )
        return np.ascontiguousarray(index)

    def _score(
        self, pred: np.ndarray, is_logits: bool, index: np.ndarray, soft: np.ndarray, weight: np.ndarray, binary: bool
    ) -> None:
        from .kernels.numba._threading import launch_lock, usable

        kernel = _scoring_kernel()
        n_rows, n_classes = pred.shape
        n_chunks = self._chunks(n_rows, 2 * n_classes)
        totals, per_class, bins, top_hits, problems = self._accumulators(n_chunks)
        scratch = np.empty((n_chunks, 2 * n_classes))
        arguments = (
            pred, is_logits, index, soft, weight, self._renormalize, self._tolerance, _CLIP_EPS, self._edges,
            self._top_k_array, totals, per_class, bins, top_hits, problems, scratch,
        )  # fmt: skip
        if usable():
            with launch_lock():  # serializes the kernels' launches where Numba's threading layer needs it
                kernel.score_rows(*arguments)
        else:  # a fork child of a process whose kernels ran on GNU OpenMP: no Numba threads here
            kernel.score_rows_serial(*arguments)
        self._raise_first_problem(problems, pred, soft, weight, binary)
        self._add_sums(totals, per_class, bins, top_hits, problems, np.zeros(n_chunks, dtype=np.int64), n_rows)

    def _add_sums(
        self,
        totals: np.ndarray,
        per_class: np.ndarray,
        bins: np.ndarray,
        top_hits: np.ndarray,
        problems: np.ndarray,
        first_rows: np.ndarray,
        n_rows: int,
    ) -> None:
        """Add a batch's per-chunk sums; ``first_rows[c]`` turns chunk ``c``'s recorded rows into batch rows."""
        kernel = _scoring_kernel()
        for slot, column in enumerate((kernel.FIRST_UNNORMALIZED_PREDICTION, kernel.FIRST_UNNORMALIZED_TARGET)):
            found = problems[:, column] >= 0
            if self._first_unnormalized[slot] is None and found.any():
                self._first_unnormalized[slot] = self._rows + int((first_rows + problems[:, column])[found].min())
        self._totals += totals.sum(axis=0)
        self._per_class += per_class.sum(axis=0)
        self._bins += bins.sum(axis=0)
        self._top_hits += top_hits.sum(axis=0)
        self._rows += n_rows
        if self._warn and not self._warned:
            for slot, what in ((0, "`predictions`"), (1, "`targets`")):
                if self._first_unnormalized[slot] is not None:
                    self._warned = True
                    warnings.warn(
                        f"{what} rows should sum to 1 within {self._tolerance:g}; row {self._first_unnormalized[slot]} "
                        "(counted from 0 over every update) does not. They are used as given, not renormalized.",
                        UserWarning,
                        stacklevel=4,
                    )
                    break

    def _raise_first_problem(
        self, problems: np.ndarray, pred: np.ndarray, soft: np.ndarray, weight: np.ndarray, binary: bool
    ) -> None:
        kernel = _scoring_kernel()
        bad = problems[:, kernel.BAD_ROW] >= 0
        if not bad.any():
            return
        chunk = int(np.argmin(np.where(bad, problems[:, kernel.BAD_ROW], np.iinfo(np.int64).max)))
        row, column, code = (int(v) for v in problems[chunk, : kernel.BAD_CODE + 1])
        reason = _problem_text(kernel, code)
        global_row = self._rows + row
        if code == kernel.BAD_WEIGHT:
            raise InvalidValue(global_row, "weight", -1, float(weight[row]), reason)
        if code in (kernel.BAD_TARGET_NAN, kernel.BAD_TARGET_PROBABILITY):
            raise InvalidValue(global_row, "target", column, float(soft[row, column]), reason)
        if column < 0:
            raise InvalidValue(global_row, "row", -1, None, reason)
        if binary:
            column = 1  # the one given column is the positive class's
        raise InvalidValue(global_row, "prediction", column, float(pred[row, column]), reason)

    # -----------------------------------------------------------------------------------------
    # Figures

    @property
    def _classes(self) -> tuple[Any, ...]:
        if self._label_values is not None:
            return self._label_values
        return tuple(range(self._n_classes or 0))

    def compute(self) -> ScoreResult:
        """The figures of every row given so far (see the class docstring for their definitions).

        Returns
        -------
        ScoreResult
            A new, frozen result; the scorer can go on taking rows.

        Raises
        ------
        ValueError
            If no rows were given, or every sample weight was 0.
        """
        kernel = _scoring_kernel()
        t = self._totals
        if t[kernel.ROWS] == 0:
            raise ValueError("no rows were scored")
        weight = float(t[kernel.WEIGHT])
        if weight == 0:
            raise ValueError("every sample weight is 0, so the weighted means are undefined")
        divisor = 1.0 if self._base is None else math.log(self._base)
        soft = self._targets == "probabilities"
        per_class = []
        assert self._per_class is not None  # rows were scored
        for label, (rows, w, cross_entropy, hits) in zip(self._classes, self._per_class, strict=True):
            per_class.append(
                ClassScore(
                    label=label,
                    rows=int(rows),
                    weight=float(w),
                    log_loss=float(cross_entropy / w / divisor) if w > 0 else None,
                    recall=float(hits / w) if w > 0 else None,
                )
            )
        edges = np.linspace(0.0, 1.0, self._n_bins + 1)
        reliability = tuple(
            CalibrationBin(
                low=float(edges[b]),
                high=float(edges[b + 1]),
                weight=float(w),
                confidence=float(confidence / w) if w > 0 else None,
                accuracy=float(hits / w) if w > 0 else None,
            )
            for b, (w, confidence, hits) in enumerate(self._bins)
        )
        l1, l2, worst = _calibration_errors(
            self._bins[:, kernel.BIN_CONFIDENCE], self._bins[:, kernel.BIN_CORRECT], self._bins[:, kernel.BIN_WEIGHT]
        )
        accuracy = float(t[kernel.CORRECT] / weight)
        log_loss = float(t[kernel.CROSS_ENTROPY] / weight)
        return ScoreResult(
            rows=int(t[kernel.ROWS]),
            weight=weight,
            classes=self._classes,
            log_loss=log_loss / divisor,
            perplexity=math.exp(log_loss),
            brier_score=float((0.5 if self._n_classes == 2 else 1.0) * t[kernel.SQUARED_ERROR] / weight),
            accuracy=accuracy,
            top_k_accuracy=dict(zip(self._top_k, (self._top_hits / weight).tolist(), strict=True)),
            expected_calibration_error=l1,
            rms_calibration_error=l2,
            max_calibration_error=worst,
            mean_predicted_entropy=float(t[kernel.PREDICTED_ENTROPY] / weight) / divisor,
            target_entropy=float(t[kernel.TARGET_ENTROPY] / weight) / divisor if soft else None,
            kl_divergence=float(t[kernel.KL] / weight) / divisor if soft else None,
            per_class=tuple(per_class),
            reliability=reliability,
            n_bins=self._n_bins,
            base=self._base,
            unnormalized_predictions=int(t[kernel.UNNORMALIZED_PREDICTIONS]),
            unnormalized_targets=int(t[kernel.UNNORMALIZED_TARGETS]),
        )

    def __repr__(self) -> str:
        labels = "" if self._label_values is None else f"labels={list(self._label_values)!r}, "
        return (
            f"Scorer({labels}n_bins={self._n_bins}, base={self._base!r}, top_k={self._top_k!r}; "
            f"{self._rows:,} rows of {self._n_classes if self._n_classes is not None else '?'} classes)"
        )


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value
