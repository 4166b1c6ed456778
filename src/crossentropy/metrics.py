"""Evaluation of probabilistic predictions: log loss, perplexity, Brier score, skill and calibration.

:func:`log_loss` and :func:`brier_score` follow scikit-learn's ``sklearn.metrics.log_loss``
and ``sklearn.metrics.brier_score_loss`` (labels of any kind, columns in sorted label order,
weighted means); :func:`perplexity` works on logits with class-index targets like PyTorch's
``cross_entropy``; :func:`expected_calibration_error` (norms ``"l1"``, ``"l2"``, ``"max"`` as
torchmetrics' ``CalibrationError``), :func:`classwise_calibration_error` and
:func:`reliability_curve` measure how far confidence is from accuracy, :func:`reliability_curve`
matching ``sklearn.calibration.calibration_curve`` for binary predictions;
:func:`brier_score_decomposition` splits the Brier score into reliability, resolution and
uncertainty (Murphy 1973). :func:`d2_log_loss_score`, :func:`d2_brier_score` and
:func:`top_k_accuracy` are scikit-learn's ``d2_log_loss_score``, ``d2_brier_score`` and
``top_k_accuracy_score``; :func:`fit_temperature` fits temperature scaling.

The arithmetic runs in the namespace of the predictions (NumPy, PyTorch, ...), so the results
are 0-d arrays of that library, differentiable where it is; use ``float(...)`` for a Python
number. Labels (strings or numbers) are matched on the host through NumPy, since they never
need a gradient.
"""

from __future__ import annotations

import math
import numbers
import warnings
from typing import Literal, NamedTuple, get_args

import array_api_compat
import numpy as np

from ._array import (
    as_namespace_array,
    as_result_array,
    compute_dtype,
    concrete_bool,
    get_namespace,
    host_float,
    is_real_floating,
    log_base_divisor,
    onehot_mask,
    take_last,
)
from ._inputs import prepare_class_inputs, prepare_sample_weight, safe_divide, total, weighted_rows
from ._scorer import CalibrationBin, ClassScore, InvalidValue, Scorer, ScoreResult
from ._typing import Array, ArrayLike, BinStrategy, CalibrationNorm, DType, Namespace
from ._validation import (
    check_base,
    check_class_indices,
    check_in_unit_interval,
    check_integer_option,
    check_not_empty,
    check_shape,
)
from .special import stable_log_softmax

__all__ = [
    "BrierDecomposition",
    "CalibrationBin",
    "ClassScore",
    "InvalidValue",
    "ReliabilityCurve",
    "ScoreResult",
    "Scorer",
    "brier_score",
    "brier_score_decomposition",
    "classwise_calibration_error",
    "d2_brier_score",
    "d2_log_loss_score",
    "expected_calibration_error",
    "fit_temperature",
    "log_loss",
    "perplexity",
    "reliability_curve",
    "top_k_accuracy",
]

_STRATEGIES: tuple[BinStrategy, ...] = get_args(BinStrategy)
_NORMS: tuple[CalibrationNorm, ...] = get_args(CalibrationNorm)


class ReliabilityCurve(NamedTuple):
    """Points of a reliability diagram, one per non-empty bin, in increasing bin order.

    Attributes
    ----------
    confidence : array of shape (n_nonempty_bins,)
        Mean predicted probability in the bin (of the positive class for binary input, of the
        predicted class otherwise). The x-axis of the diagram.
    accuracy : array of shape (n_nonempty_bins,)
        Fraction of positives (binary input) or of correct predictions in the bin. The y-axis.
    count : int array of shape (n_nonempty_bins,)
        Number of samples in the bin.
    """

    confidence: Array
    accuracy: Array
    count: Array


# ---------------------------------------------------------------------------------------------
# Shared preparation


def _prepare_probs(probs: ArrayLike) -> tuple[Namespace, Array, DType]:
    """Validate predicted probabilities of shape (n_samples,) or (n_samples, n_classes).

    Returns ``(xp, probs in the compute dtype, dtype results are returned in)``. Integer and
    boolean arrays are converted to the namespace's default floating dtype first.
    """
    xp = get_namespace(probs)
    probs = as_namespace_array(probs, xp, name="probs")
    if not is_real_floating(xp, probs):
        if not xp.isdtype(probs.dtype, ("integral", "bool")):
            raise TypeError(f"`probs` must be real probabilities; got dtype {probs.dtype}")
        probs = xp.astype(probs, xp.__array_namespace_info__().default_dtypes()["real floating"])
    if probs.ndim not in (1, 2):
        raise ValueError(
            f"`probs` must have shape (n_samples,) or (n_samples, n_classes); got shape {tuple(probs.shape)}"
        )
    check_not_empty("probs", probs)
    check_in_unit_interval("probs", probs, xp)
    return xp, xp.astype(probs, compute_dtype(xp, probs.dtype), copy=False), probs.dtype


def _host_labels(x: ArrayLike, name: str, n_samples: int | None = None) -> np.ndarray:
    """A 1-d NumPy array of labels (targets or label sets never need a gradient)."""
    if array_api_compat.is_torch_array(x):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if n_samples is not None:
        check_shape(name, arr, (n_samples,), rule="one label per row of `probs`")
    elif arr.ndim != 1:
        raise ValueError(f"`{name}` must be a 1-d array of labels; got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"`{name}` must not be empty; got shape {arr.shape}")
    if arr.dtype.kind in "fc" and np.any(np.isnan(arr)):
        raise ValueError(f"`{name}` must not contain NaN labels; got NaN at index {int(np.argmax(np.isnan(arr)))}")
    return arr


def _unique(name: str, arr: np.ndarray) -> np.ndarray:
    try:
        return np.unique(arr)
    except TypeError as exc:
        kinds = sorted({type(v).__name__ for v in arr.tolist()})
        raise TypeError(f"`{name}` must hold labels of one sortable kind (numbers or strings); got {kinds}") from exc


def _check_known(y: np.ndarray, classes: np.ndarray) -> None:
    known = np.isin(y, classes)
    if not np.all(known):
        missing = sorted({str(v) for v in y[~known].tolist()})
        raise ValueError(
            f"`targets` must only hold labels listed in `labels` {classes.tolist()}; got {', '.join(missing)}"
        )


def _encode_targets(
    targets: ArrayLike, labels: ArrayLike | None, n_samples: int, *, stacklevel: int = 3
) -> tuple[np.ndarray, np.ndarray]:
    """Map labels to column indices of the sorted label set; return ``(indices, classes)``.

    Follows scikit-learn's ``LabelBinarizer``: the classes are the sorted unique ``labels``
    (or targets when ``labels`` is None), and there must be at least two of them.
    """
    y = _host_labels(targets, "targets", n_samples)
    if labels is None:
        classes = _unique("targets", y)
        if classes.shape[0] < 2:
            raise ValueError(
                "`targets` must hold at least 2 distinct labels when `labels` is not given "
                f"(pass the full label set through `labels`); got only {classes.tolist()}"
            )
    else:
        given = _host_labels(labels, "labels")
        classes = _unique("labels", given)
        if classes.shape[0] < 2:
            raise ValueError(f"`labels` must hold at least 2 distinct labels; got {classes.tolist()}")
        if classes.shape != given.shape or not np.all(classes == given):
            warnings.warn(
                f"`labels` were given as {given.tolist()}, but the columns of `probs` are taken in sorted "
                f"label order {classes.tolist()}; pass labels in that order and make sure the columns match it.",
                UserWarning,
                stacklevel=stacklevel,
            )
        _check_known(y, classes)
    return np.searchsorted(classes, y), classes


def _as_columns(p: Array, xp: Namespace) -> Array:
    """(n_samples,) or (n_samples, 1) positive-class probabilities -> (n_samples, 2) ``[1 - p, p]``."""
    if p.ndim == 1:
        p = xp.reshape(p, (-1, 1))
    if p.shape[1] == 1:
        p = xp.concat([1 - p, p], axis=1)
    return p


def _check_columns(p: Array, classes: np.ndarray, labels: ArrayLike | None, *, name: str = "probs") -> None:
    n_columns, n_classes = int(p.shape[1]), int(classes.shape[0])
    if n_columns == n_classes:
        return
    if labels is None:
        raise ValueError(
            f"`{name}` must have one column per class; the targets hold {n_classes} classes {classes.tolist()}, "
            f"got {n_columns} columns (pass the full label set through `labels`)"
        )
    raise ValueError(
        f"`{name}` must have one column per class in `labels` ({n_classes}: {classes.tolist()}); "
        f"got {n_columns} columns"
    )


def _warn_unnormalized(p: Array, xp: Namespace, dtype: DType, *, stacklevel: int = 3) -> None:
    """Warn, as scikit-learn does, when rows do not sum to 1 (``isclose(sum, 1, rtol=sqrt(eps))``)."""
    sums = xp.sum(p, axis=1)
    tolerance = math.sqrt(float(xp.finfo(dtype).eps)) + 1e-8
    bad = ~(xp.abs(sums - 1) <= tolerance)
    if concrete_bool(xp.any(bad)):
        row = int(xp.nonzero(bad)[0][0])
        warnings.warn(
            f"`probs` rows should sum to 1; got a sum of {host_float(sums[row])!r} at row {row}. Make sure to pass "
            "probabilities: they are used as given, not renormalized.",
            UserWarning,
            stacklevel=stacklevel,
        )


def _device_indices(indices: np.ndarray, xp: Namespace, like: Array) -> Array:
    return xp.asarray(indices.astype(np.int64), device=array_api_compat.device(like))


def _weighted_mean(values: Array, sample_weight: ArrayLike | None, xp: Namespace) -> Array:
    """``mean`` of per-sample ``values``, or ``sum(w * values) / sum(w)`` (NumPy's ``average``)."""
    if sample_weight is None:
        return xp.mean(values)
    weight = prepare_sample_weight(sample_weight, xp, like=values, batch_shape=tuple(values.shape))
    weight_sum = xp.sum(weight)
    if concrete_bool(weight_sum == 0):
        raise ValueError("`sample_weight` must not sum to 0 (the weighted mean is undefined); got a sum of 0.0")
    return xp.sum(values * weight) / weight_sum


def _finish(x: Array, xp: Namespace, out_dtype: DType) -> Array:
    return as_result_array(xp.astype(x, out_dtype, copy=False), xp)


# ---------------------------------------------------------------------------------------------
# Scores


def log_loss(
    probs: ArrayLike,
    targets: ArrayLike,
    /,
    *,
    labels: ArrayLike | None = None,
    sample_weight: ArrayLike | None = None,
    base: float | None = None,
) -> Array:
    r"""Log loss (cross-entropy) of predicted probabilities, with scikit-learn's semantics.

    .. math::

        L = \frac{\sum_n s_n \, \bigl(-\log \operatorname{clip}(p_{n, y_n}, \epsilon, 1 - \epsilon)\bigr)}
                 {\sum_n s_n}

    where :math:`y_n` is the column of the true label, :math:`s_n` the sample weights (1 by
    default) and :math:`\epsilon` the machine epsilon of the dtype ``probs`` arrive in (as
    ``sklearn.metrics.log_loss`` does; half precision uses its own epsilon while the arithmetic
    runs in float32). The clipping keeps a confidently wrong prediction finite: it costs at
    most :math:`-\log \epsilon` (36.04 nats in float64). For probability predictions,
    ``exp(log_loss(probs, targets))`` is their :func:`perplexity`.

    Parameters
    ----------
    probs : array of shape (n_samples,) or (n_samples, n_classes)
        Predicted probabilities in [0, 1]. One dimension (or one column): the probability of
        the positive class, the greater of two labels. Otherwise one column per class in
        sorted label order (as ``LabelBinarizer`` and ``predict_proba``). Rows that do not sum
        to 1 within ``sqrt(eps)`` give a ``UserWarning`` and are used as given, not
        renormalized. Integer or boolean arrays are converted to the default floating dtype.
    targets : array-like of shape (n_samples,)
        True labels: integers, strings or any sortable values (matched on the host).
    labels : array-like, optional
        The full label set, when ``targets`` do not show every class. Sorted before use; a
        ``UserWarning`` says so if it was not given sorted.
    sample_weight : array-like of shape (n_samples,), optional
        Non-negative weights, not all zero (scikit-learn also accepts negative weights; this
        function rejects them).
    base : float, optional
        Logarithm base: ``None`` for nats (scikit-learn's unit), ``2`` for bits.

    Returns
    -------
    array
        A 0-d array of the namespace and dtype of ``probs``; ``float()`` gives the number
        ``sklearn.metrics.log_loss`` returns. Differentiable with respect to ``probs``.

    Raises
    ------
    ValueError
        If ``probs`` is empty, not 1-d or 2-d or outside [0, 1]; if its columns do not match
        the classes; if fewer than two classes are known; if a target is missing from
        ``labels``; if ``sample_weight`` is invalid or sums to 0.
    TypeError
        If ``probs`` is not numeric or the labels cannot be sorted together.

    Examples
    --------
    >>> import numpy as np
    >>> float(log_loss(np.array([[0.1, 0.9], [0.9, 0.1], [0.8, 0.2], [0.35, 0.65]]),
    ...                ["spam", "ham", "ham", "spam"]))
    0.21616
    >>> float(log_loss(np.array([0.9, 0.2]), [1, 0], base=2))  # positive-class probabilities, in bits
    0.2370
    """
    base = check_base(base)
    xp, p, out_dtype = _prepare_probs(probs)
    indices, classes = _encode_targets(targets, labels, int(p.shape[0]))
    p = _as_columns(p, xp)
    _check_columns(p, classes, labels)
    _warn_unnormalized(p, xp, out_dtype)
    eps = float(xp.finfo(out_dtype).eps)
    picked = take_last(p, _device_indices(indices, xp, p), xp)
    loss = -xp.log(xp.clip(picked, eps, 1 - eps))
    mean = _weighted_mean(loss, sample_weight, xp)
    if base is not None:
        mean = mean / log_base_divisor(base)
    return _finish(mean, xp, out_dtype)


def _binary_positive(targets: ArrayLike, labels: ArrayLike | None, n_samples: int) -> np.ndarray:
    """Boolean array, true where the target is the positive label (scikit-learn's rules)."""
    y = _host_labels(targets, "targets", n_samples)
    if labels is not None:
        classes = _unique("labels", _host_labels(labels, "labels"))
        if classes.shape[0] != 2:
            raise ValueError(
                f"`labels` must hold exactly 2 labels for binary `probs` of shape (n_samples,); got {classes.tolist()}"
            )
        _check_known(y, classes)
        return np.asarray(y == classes[1])
    classes = _unique("targets", y)
    if classes.shape[0] > 2:
        raise ValueError(
            "`targets` must hold at most 2 distinct labels for binary `probs` of shape (n_samples,) "
            f"(pass one column per class for more); got {classes.tolist()}"
        )
    if classes.shape[0] == 2:
        return np.asarray(y == classes[1])
    only = classes[0]
    if not isinstance(only, (numbers.Number, np.number, np.bool_)):
        raise ValueError(
            "`targets` hold a single label, so which one is positive is unknown; pass both labels through "
            f"`labels`; got only {classes.tolist()}"
        )
    # scikit-learn: a lone 0 or -1 is the negative class of {0, 1} or {-1, 1}; any other lone number is positive.
    if only in (0, -1):
        return np.zeros(y.shape, dtype=bool)
    return np.ones(y.shape, dtype=bool)


def brier_score(
    probs: ArrayLike,
    targets: ArrayLike,
    /,
    *,
    labels: ArrayLike | None = None,
    sample_weight: ArrayLike | None = None,
    scale_by_half: bool | Literal["auto"] = "auto",
) -> Array:
    r"""Brier score: mean squared distance between predicted probabilities and one-hot outcomes.

    .. math::

        \operatorname{BS} = \frac{c}{\sum_n s_n} \sum_n s_n \sum_{k=1}^{C} \bigl(p_{nk} - [y_n = k]\bigr)^2

    with :math:`c = 1/2` when ``scale_by_half`` applies and 1 otherwise. This is
    ``sklearn.metrics.brier_score_loss`` (version 1.7 and later): with the default
    ``scale_by_half="auto"``, binary problems (``probs`` of shape (n_samples,), or two
    columns) are halved, giving the customary :math:`\frac1N\sum_n (p_n - y_n)^2` in [0, 1],
    while three or more classes keep the unscaled sum over classes, in [0, 2].

    Parameters
    ----------
    probs : array of shape (n_samples,) or (n_samples, n_classes)
        Predicted probabilities in [0, 1]. One dimension (or one column): the probability of
        the positive class. Otherwise one column per class in sorted label order; rows that
        do not sum to 1 give a ``UserWarning`` and are used as given.
    targets : array-like of shape (n_samples,)
        True labels: integers, strings or any sortable values.
    labels : array-like, optional
        The full label set. With binary ``probs`` it must hold two labels and the greater one
        is the positive class (scikit-learn's ``pos_label=max(labels)``).
    sample_weight : array-like of shape (n_samples,), optional
        Non-negative weights, not all zero.
    scale_by_half : bool or "auto", default "auto"
        Multiply by 1/2; ``"auto"`` does so for two classes only, as scikit-learn.

    Returns
    -------
    array
        A 0-d array of the namespace and dtype of ``probs``, differentiable with respect to it.

    Notes
    -----
    For binary ``probs`` without ``labels`` the positive class is chosen as scikit-learn
    chooses ``pos_label``: 1 for targets in {0, 1} or {-1, 1} (also when only one of them
    occurs), otherwise the greater label. There is no ``pos_label`` argument: where
    scikit-learn demands one (two string labels), the greater label is positive, as for
    :func:`log_loss`; a single string label is an error (pass ``labels``).

    Examples
    --------
    >>> import numpy as np
    >>> float(brier_score(np.array([0.1, 0.9, 0.8, 0.3]), [0, 1, 1, 0]))
    0.0375
    >>> float(brier_score(np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.2, 0.2, 0.6]]),
    ...                   ["eggs", "ham", "spam"]))
    0.146
    """
    is_auto = isinstance(scale_by_half, str) and scale_by_half == "auto"
    if not (is_auto or isinstance(scale_by_half, (bool, np.bool_))):
        raise ValueError(f"`scale_by_half` must be True, False or 'auto'; got {scale_by_half!r}")
    xp, p, out_dtype = _prepare_probs(probs)
    n_samples = int(p.shape[0])
    if p.ndim == 1 or p.shape[1] == 1:
        positive = _binary_positive(targets, labels, n_samples)
        y = xp.asarray(positive.astype(np.float64), dtype=p.dtype, device=array_api_compat.device(p))
        p = _as_columns(xp.reshape(p, (-1,)), xp)
        onehot = xp.stack([1 - y, y], axis=1)
    else:
        indices, classes = _encode_targets(targets, labels, n_samples)
        _check_columns(p, classes, labels)
        _warn_unnormalized(p, xp, out_dtype)
        mask = onehot_mask(_device_indices(indices, xp, p), int(p.shape[1]), xp, like=p)
        onehot = xp.astype(mask, p.dtype)
    score = _weighted_mean(xp.sum((onehot - p) ** 2, axis=1), sample_weight, xp)
    if scale_by_half == "auto":
        scale_by_half = p.shape[1] < 3
    if scale_by_half:
        score = score * 0.5
    return _finish(score, xp, out_dtype)


def perplexity(
    logits: ArrayLike,
    targets: ArrayLike,
    /,
    *,
    axis: int = -1,
    ignore_index: int | None = -100,
    sample_weight: ArrayLike | None = None,
) -> Array:
    r"""Perplexity: the exponential of the mean softmax cross-entropy of class-index targets.

    .. math::

        \operatorname{PPL} = \exp\left(\frac{\sum_n s_n m_n \, \bigl(\operatorname{LSE}(z_n) - z_{n, y_n}\bigr)}
                                            {\sum_n s_n m_n}\right)

    with :math:`m_n = [y_n \ne \text{ignore\_index}]` and sample weights :math:`s_n` (1 by
    default): ``torch.exp(torch.nn.functional.cross_entropy(logits, targets))`` for the class
    axis last. Uniform logits over :math:`C` classes give exactly :math:`C`, the effective
    number of equally likely choices. If every target is ignored (or every weight is 0) the
    mean cross-entropy is taken as 0, as for the library's losses, and the perplexity is 1.
    For predictions given as probabilities rather than logits, the perplexity is
    ``exp(log_loss(probs, targets))``.

    Parameters
    ----------
    logits : array of shape (..., n_classes)
        Unnormalized scores (log-probabilities work as well). Half precision is computed in
        float32.
    targets : int array of shape (...,)
        Class indices in ``[0, n_classes)``, the logits' shape without ``axis``, or
        ``ignore_index``.
    axis : int, default -1
        The class axis of ``logits``.
    ignore_index : int or None, default -100
        Target value that is left out (padding).
    sample_weight : array of shape (...,), optional
        Non-negative per-target weights.

    Returns
    -------
    array
        A 0-d array of the logits' namespace and dtype, differentiable with respect to them.

    Examples
    --------
    >>> import numpy as np
    >>> float(perplexity(np.zeros((4, 10)), np.array([0, 3, 9, 2])))  # uniform over 10 classes
    10.0
    >>> float(perplexity(np.log(np.array([[0.5, 0.25, 0.25]])), np.array([0])))
    2.0
    """
    inputs = prepare_class_inputs(
        logits, targets, axis=axis, ignore_index=ignore_index, sample_weight=sample_weight, allow_probs=False
    )
    xp, x = inputs.xp, inputs.logits
    loss = -take_last(stable_log_softmax(x, xp, axis=-1)[0], inputs.indices, xp)
    row_weight = inputs.row_weight()
    numerator = total(weighted_rows(loss, row_weight, xp), xp)
    denominator = math.prod(x.shape[:-1]) if row_weight is None else total(row_weight, xp)
    return _finish(xp.exp(safe_divide(numerator, denominator, xp)), xp, inputs.out_dtype)


# ---------------------------------------------------------------------------------------------
# Calibration


def _check_binning(n_bins: object, strategy: object) -> int:
    n_bins = check_integer_option("n_bins", n_bins, low=1)
    if not isinstance(strategy, str) or strategy not in _STRATEGIES:
        raise ValueError(f"`strategy` must be one of 'uniform', 'quantile'; got {strategy!r}")
    return n_bins


def _check_norm(norm: object) -> CalibrationNorm:
    if not isinstance(norm, str) or norm not in _NORMS:
        raise ValueError(f"`norm` must be one of 'l1', 'l2', 'max'; got {norm!r}")
    return norm


def _calibration_norm(
    confidence_sums: Array, outcome_sums: Array, weight_sums: Array, norm: CalibrationNorm, xp: Namespace
) -> Array:
    r"""The calibration error of per-bin sums, in the namespace ``xp`` (differentiable through the sums).

    ``confidence_sums``, ``outcome_sums``: per-bin sums of (weighted) confidences and outcomes;
    ``weight_sums``: per-bin total weight (or count), of the same floating dtype. With
    :math:`W_b` the bin's weight, :math:`W = \sum_b W_b` and the gap
    :math:`g_b = (\sum_{i \in b} w_i a_i - \sum_{i \in b} w_i c_i) / W_b`:
    ``"l1"`` :math:`\sum_b (W_b / W) |g_b|`, ``"l2"`` :math:`\sqrt{\sum_b (W_b / W) g_b^2}`,
    ``"max"`` :math:`\max_b |g_b|` over the non-empty bins (torchmetrics' three norms).
    Arrays of shape (n_bins, n_columns) give one error per column (reductions along axis 0).
    """
    differences = outcome_sums - confidence_sums
    total_weight = xp.sum(weight_sums, axis=0)
    if norm == "l1":
        return xp.sum(xp.abs(differences), axis=0) / total_weight
    nonempty = weight_sums > 0
    safe = xp.where(nonempty, weight_sums, xp.ones_like(weight_sums))
    gaps = xp.where(nonempty, differences / safe, xp.zeros_like(differences))
    if norm == "max":
        return xp.max(xp.abs(gaps), axis=0)
    # sum_b (W_b / W) g_b^2 = sum_b (W_b g_b) g_b / W, with W_b g_b the difference of the sums
    mean_square = xp.sum(differences * gaps, axis=0) / total_weight
    # sqrt has an infinite derivative at 0; a perfectly calibrated input gets a zero gradient instead
    positive = mean_square > 0
    return xp.where(positive, xp.sqrt(xp.where(positive, mean_square, xp.ones_like(mean_square))), mean_square * 0)


def _calibration_from_bins(
    confidence_sum: np.ndarray, outcome_sum: np.ndarray, weight_sum: np.ndarray, *, norm: CalibrationNorm
) -> float:
    r"""The calibration error of accumulated per-bin sums, as a Python float.

    The arithmetic behind :func:`expected_calibration_error` and the classwise error, for
    callers that accumulate the bins themselves (the streaming scorer): ``confidence_sum[b]``
    :math:`= \sum_{i \in b} w_i c_i`, ``outcome_sum[b]`` :math:`= \sum_{i \in b} w_i a_i`
    and ``weight_sum[b]`` :math:`= \sum_{i \in b} w_i` (the count without weights), 1-d
    arrays of one length (converted to float64 NumPy). For the classwise error, call it once
    per class column and average. ``norm``: ``"l1"``, ``"l2"`` or ``"max"``
    as in :func:`expected_calibration_error`. Returns NaN when every bin is empty (total weight
    0): the error of no data is undefined.
    """
    norm = _check_norm(norm)
    conf = np.asarray(confidence_sum, dtype=np.float64)
    outcome = np.asarray(outcome_sum, dtype=np.float64)
    weight = np.asarray(weight_sum, dtype=np.float64)
    if not (conf.ndim == 1 and conf.shape == outcome.shape == weight.shape):
        raise ValueError(
            "`confidence_sum`, `outcome_sum` and `weight_sum` must have one entry per bin each; "
            f"got shapes {conf.shape}, {outcome.shape}, {weight.shape}"
        )
    if weight.size == 0 or not np.sum(weight) > 0:
        return math.nan
    return float(_calibration_norm(conf, outcome, weight, norm, np))


def _class_targets(targets: ArrayLike, xp: Namespace, like: Array, num_classes: int) -> Array:
    targets = as_namespace_array(targets, xp, name="targets", like=like)
    check_shape("targets", targets, (int(like.shape[0]),), rule="one class index per row of `probs`")
    check_class_indices("targets", targets, xp, num_classes, None)
    return targets


def _top_label(p: Array, targets: ArrayLike, xp: Namespace) -> tuple[Array, Array]:
    """Return ``(confidence, correct)``: probability of the predicted class and a 0/1 hit array."""
    if p.ndim == 1:
        targets = _class_targets(targets, xp, p, 2)
        predicted_positive = p >= 0.5
        confidence = xp.where(predicted_positive, p, 1 - p)
        correct = predicted_positive == (targets == 1)
    else:
        if p.shape[1] < 2:
            raise ValueError(
                f"`probs` must have shape (n_samples,) or at least 2 columns (n_samples, n_classes); "
                f"got shape {tuple(p.shape)}"
            )
        targets = _class_targets(targets, xp, p, int(p.shape[1]))
        confidence = xp.max(p, axis=1)
        correct = xp.argmax(p, axis=1) == targets
    return confidence, xp.astype(correct, p.dtype)


def _inner_edges(values: Array, n_bins: int, strategy: BinStrategy, xp: Namespace) -> list[float] | list[Array]:
    """The ``n_bins - 1`` inner bin edges, as ``calibration_curve`` computes them.

    ``"uniform"``: ``np.linspace(0, 1, n_bins + 1)``. ``"quantile"``: ``np.percentile`` of the
    values (linear interpolation, NumPy's rounding-safe two-sided form) at equally spaced levels,
    along axis 0: for ``values`` of shape (n_samples, n_columns) each edge is a row of one
    quantile per column.
    """
    levels = np.linspace(0.0, 1.0, n_bins + 1)
    if strategy == "uniform":
        return [float(e) for e in levels[1:-1]]
    if n_bins == 1:
        return []
    n = int(values.shape[0])
    virtual = (n - 1) * (np.true_divide(levels * 100, 100)[1:-1])
    previous = np.floor(virtual)
    gamma = virtual - previous
    previous = np.minimum(previous.astype(np.int64), n - 1)
    following = np.minimum(previous + 1, n - 1)
    ordered = xp.sort(values, axis=0)
    device = array_api_compat.device(values)
    a = xp.take(ordered, xp.asarray(previous, device=device), axis=0)
    b = xp.take(ordered, xp.asarray(following, device=device), axis=0)
    t = xp.reshape(xp.asarray(gamma, dtype=values.dtype, device=device), (-1,) + (1,) * (values.ndim - 1))
    diff = b - a
    edges = xp.where(t >= 0.5, b - diff * (1 - t), a + diff * t)
    return [edges[k] for k in range(n_bins - 1)]


def _bin_sums(
    values: Array, outcomes: Array, weight: Array | None, n_bins: int, strategy: BinStrategy, xp: Namespace
) -> tuple[Array, Array, Array]:
    """Per bin: size, sum of ``values`` and sum of ``outcomes``, each term weighted by ``weight``.

    The size is an exact integer count without ``weight``, the total weight with it. A value
    goes to the bin whose interval ``(lo, hi]`` holds it (the first bin also holds its lower
    edge), as ``np.searchsorted(inner_edges, value)`` assigns it; edges are rounded to the
    values' dtype. ``values`` of shape (n_samples,) give arrays of shape (n_bins,); of shape
    (n_samples, n_columns) (each column binned on its own, ``weight`` per sample) arrays of
    shape (n_bins, n_columns).
    """
    bins = xp.zeros(values.shape, dtype=xp.int64, device=array_api_compat.device(values))
    for edge in _inner_edges(values, n_bins, strategy, xp):
        bins = bins + xp.astype(values > edge, xp.int64)
    zero = xp.zeros_like(values)
    if weight is not None and values.ndim == 2:
        weight = xp.reshape(weight, (-1, 1))
    sizes, value_sums, outcome_sums = [], [], []
    for k in range(n_bins):
        in_bin = bins == k
        if weight is None:
            sizes.append(xp.sum(xp.astype(in_bin, xp.int64), axis=0))
            value_sums.append(xp.sum(xp.where(in_bin, values, zero), axis=0))
            outcome_sums.append(xp.sum(xp.where(in_bin, outcomes, zero), axis=0))
        else:
            w = xp.where(in_bin, weight, zero)
            sizes.append(xp.sum(w, axis=0))
            value_sums.append(xp.sum(w * values, axis=0))
            outcome_sums.append(xp.sum(w * outcomes, axis=0))
    return xp.stack(sizes), xp.stack(value_sums), xp.stack(outcome_sums)


def _calibration_weight(sample_weight: ArrayLike | None, like: Array, xp: Namespace) -> Array | None:
    if sample_weight is None:
        return None
    weight = prepare_sample_weight(sample_weight, xp, like=like, batch_shape=tuple(like.shape))
    if concrete_bool(xp.sum(weight) == 0):
        raise ValueError("`sample_weight` must not sum to 0 (the weighted mean is undefined); got a sum of 0.0")
    return weight


def _binned_calibration(
    values: Array,
    outcomes: Array,
    weight: Array | None,
    n_bins: int,
    strategy: BinStrategy,
    norm: CalibrationNorm,
    xp: Namespace,
) -> Array:
    """Bin ``values`` (confidences) with their 0/1 ``outcomes`` and return the calibration error."""
    sizes, value_sums, outcome_sums = _bin_sums(values, outcomes, weight, n_bins, strategy, xp)
    if weight is None:
        sizes = xp.astype(sizes, values.dtype)
    return _calibration_norm(value_sums, outcome_sums, sizes, norm, xp)


def expected_calibration_error(
    probs: ArrayLike,
    targets: ArrayLike,
    /,
    *,
    n_bins: int = 15,
    strategy: BinStrategy = "uniform",
    norm: CalibrationNorm = "l1",
    sample_weight: ArrayLike | None = None,
) -> Array:
    r"""Top-label expected calibration error (ECE): the gap between confidence and accuracy.

    .. math::

        \operatorname{ECE} = \sum_{b=1}^{B} \frac{n_b}{N} \,\bigl|\operatorname{acc}_b - \operatorname{conf}_b\bigr|

    Each sample's confidence is the probability of its predicted class; it falls in one of
    :math:`B` bins over [0, 1]; :math:`\operatorname{conf}_b` is the mean confidence in bin
    :math:`b`, :math:`\operatorname{acc}_b` the fraction of its predictions that are right and
    :math:`n_b` its number of samples (with ``sample_weight``: weighted means and
    :math:`n_b/N` the bin's share of the total weight). 0 means perfectly calibrated.

    ``norm`` picks torchmetrics' ``CalibrationError(norm=...)``: the L1 norm above, the L2 norm
    (root-mean-square calibration error; torchmetrics' form, the square root of the
    bin-weighted mean of the squared gaps, without its optional debiasing) or the maximum
    calibration error; for the same bins ``l1 <= l2 <= max``. On confidences off the bin edges
    the results equal torchmetrics' multiclass task. Two differences in the binning:
    torchmetrics' bins are left-closed ``[lo, hi)`` on float32 edges and a confidence of exactly
    1 gets a bin of its own, where these are right-closed ``(lo, hi]`` as
    ``sklearn.calibration.calibration_curve``; and its *binary* task bins the positive-class
    probability against the outcome, which is :func:`classwise_calibration_error` of binary
    ``probs`` here, while this function reads one-dimensional ``probs`` top-label.

    Parameters
    ----------
    probs : array of shape (n_samples,) or (n_samples, n_classes)
        Predicted probabilities in [0, 1]. Two or more columns: the predicted class is the
        arg-max (the first on ties) and its probability the confidence. One dimension: the
        probability of class 1; the prediction is 1 where ``p >= 0.5`` (so a tie predicts 1)
        and the confidence ``max(p, 1 - p)``. Rows are not checked to sum to 1.
    targets : int array of shape (n_samples,)
        True class indices (here not arbitrary labels): in ``[0, n_classes)``, or {0, 1} for
        one-dimensional ``probs``.
    n_bins : int, default 15
        Number of bins.
    strategy : {"uniform", "quantile"}, default "uniform"
        ``"uniform"``: equal widths over [0, 1]; ``"quantile"``: edges at quantiles of the
        confidences (unweighted), so bins hold about equal numbers of samples. Bins are
        right-closed intervals ``(lo, hi]`` as in :func:`reliability_curve`.
    norm : {"l1", "l2", "max"}, default "l1"
        How the per-bin gaps are combined (torchmetrics' ``CalibrationError(norm=...)``):
        ``"l1"`` the ECE above; ``"l2"`` the root-mean-square calibration error
        :math:`\sqrt{\sum_b (n_b/N)(\operatorname{acc}_b - \operatorname{conf}_b)^2}`;
        ``"max"`` the maximum calibration error
        :math:`\max_b |\operatorname{acc}_b - \operatorname{conf}_b|` over the non-empty bins.
    sample_weight : array of shape (n_samples,), optional
        Non-negative weights, not all zero.

    Returns
    -------
    array
        A 0-d array of the namespace and dtype of ``probs``, in [0, 1]. Differentiable with
        respect to ``probs`` through the confidences (the binning itself is piecewise constant).

    Examples
    --------
    Four predictions at 0.9 confidence, three of them right: the gap is 0.9 - 0.75.

    >>> import numpy as np
    >>> probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.1, 0.9], [0.1, 0.9]])
    >>> float(expected_calibration_error(probs, np.array([0, 0, 1, 0])))
    0.15
    >>> probs = np.array([[0.25, 0.20, 0.55], [0.55, 0.05, 0.40], [0.10, 0.30, 0.60], [0.90, 0.05, 0.05]])
    >>> [round(float(expected_calibration_error(probs, np.array([0, 1, 2, 0]), n_bins=3, norm=n)), 4)
    ...  for n in ("l1", "l2", "max")]
    [0.2, 0.2082, 0.2333]
    """
    n_bins = _check_binning(n_bins, strategy)
    norm = _check_norm(norm)
    xp, p, out_dtype = _prepare_probs(probs)
    confidence, correct = _top_label(p, targets, xp)
    weight = _calibration_weight(sample_weight, confidence, xp)
    ece = _binned_calibration(confidence, correct, weight, n_bins, strategy, norm, xp)
    return _finish(ece, xp, out_dtype)


def reliability_curve(
    probs: ArrayLike,
    targets: ArrayLike,
    /,
    *,
    n_bins: int = 10,
    strategy: BinStrategy = "uniform",
) -> ReliabilityCurve:
    r"""The points of a reliability diagram: mean confidence against accuracy in each bin.

    .. math::

        \operatorname{conf}_b = \frac{1}{n_b} \sum_{i \in b} c_i, \qquad
        \operatorname{acc}_b = \frac{1}{n_b} \sum_{i \in b} a_i

    A calibrated model lies on the diagonal. Two readings, by the shape of ``probs``:

    - **binary**, shape (n_samples,): :math:`c_i` is the predicted probability of class 1 and
      :math:`a_i = [y_i = 1]`, so the curve is the fraction of positives against the mean
      predicted probability, exactly ``sklearn.calibration.calibration_curve(y_true, y_prob)``
      (whose ``(prob_true, prob_pred)`` are ``(accuracy, confidence)`` here);
    - **multi-class**, shape (n_samples, n_classes): top-label, :math:`c_i` the probability of
      the predicted class (arg-max) and :math:`a_i` whether that prediction is right, the
      points whose weighted gaps :func:`expected_calibration_error` sums.

    Parameters
    ----------
    probs : array of shape (n_samples,) or (n_samples, n_classes)
        Predicted probabilities in [0, 1].
    targets : int array of shape (n_samples,)
        True class indices: {0, 1} for binary ``probs`` (scikit-learn also accepts {-1, 1}
        and other ``pos_label`` choices; map them to 0/1 first), ``[0, n_classes)`` otherwise.
    n_bins : int, default 10
        Number of bins; empty bins are left out, so fewer points may come back.
    strategy : {"uniform", "quantile"}, default "uniform"
        Equal-width bins over [0, 1], or edges at quantiles of the values (NumPy's
        ``percentile``, as scikit-learn), right-closed ``(lo, hi]``.

    Returns
    -------
    ReliabilityCurve
        Named tuple ``(confidence, accuracy, count)`` of 1-d arrays with one entry per
        non-empty bin, in the namespace of ``probs``. Their length depends on the data, so
        the function cannot be traced by JAX's ``jit``.

    Examples
    --------
    >>> import numpy as np
    >>> curve = reliability_curve(np.array([0.1, 0.2, 0.8, 0.9]), np.array([0, 1, 1, 1]), n_bins=2)
    >>> curve.confidence.tolist(), curve.accuracy.tolist(), curve.count.tolist()
    ([0.15, 0.85], [0.5, 1.0], [2, 2])
    """
    n_bins = _check_binning(n_bins, strategy)
    xp, p, out_dtype = _prepare_probs(probs)
    if p.ndim == 1:
        values = p
        outcomes = xp.astype(_class_targets(targets, xp, p, 2) == 1, p.dtype)
    else:
        values, outcomes = _top_label(p, targets, xp)
    counts, value_sums, outcome_sums = _bin_sums(values, outcomes, None, n_bins, strategy, xp)
    nonempty = counts > 0
    counts = counts[nonempty]
    sizes = xp.astype(counts, values.dtype)
    return ReliabilityCurve(
        confidence=_finish(value_sums[nonempty] / sizes, xp, out_dtype),
        accuracy=_finish(outcome_sums[nonempty] / sizes, xp, out_dtype),
        count=counts,
    )


def _column_outcomes(
    probs: ArrayLike, targets: ArrayLike, labels: ArrayLike | None
) -> tuple[Namespace, Array, Array, DType]:
    """``(xp, probs as (n_samples, n_classes) columns, one-hot outcomes of that shape, out dtype)``.

    Targets are class indices (``labels`` None: ``[0, n_classes)``, {0, 1} for one-dimensional
    ``probs``) or, with ``labels``, labels matched to the columns in sorted label order.
    """
    xp, p, out_dtype = _prepare_probs(probs)
    n_samples = int(p.shape[0])
    binary = p.ndim == 1 or p.shape[1] == 1
    if binary:
        p = xp.reshape(p, (-1,))
    elif p.shape[1] < 2:  # pragma: no cover - shape (n, 0) is refused as empty
        raise ValueError(f"`probs` must have at least 1 column; got shape {tuple(p.shape)}")
    n_classes = 2 if binary else int(p.shape[1])
    if labels is None:
        indices = _class_targets(targets, xp, p, n_classes)
    else:
        if binary:
            host = _binary_positive(targets, labels, n_samples).astype(np.int64)
        else:
            host, classes = _encode_targets(targets, labels, n_samples, stacklevel=5)
            _check_columns(p, classes, labels)
        indices = _device_indices(host, xp, p)
    p = _as_columns(p, xp)
    outcomes = xp.astype(onehot_mask(indices, n_classes, xp, like=p), p.dtype)
    return xp, p, outcomes, out_dtype


def classwise_calibration_error(
    probs: ArrayLike,
    targets: ArrayLike,
    /,
    *,
    n_bins: int = 15,
    norm: CalibrationNorm = "l1",
    strategy: BinStrategy = "uniform",
    sample_weight: ArrayLike | None = None,
    labels: ArrayLike | None = None,
) -> Array:
    r"""Classwise calibration error: the mean over classes of each class's one-vs-rest calibration error.

    .. math::

        \operatorname{cwCE} = \frac{1}{C} \sum_{k=1}^{C} \operatorname{CE}_k, \qquad
        \operatorname{CE}_k = \sum_{b=1}^{B} \frac{n_{bk}}{N}
            \bigl|\bar y_{bk} - \bar p_{bk}\bigr| \quad (\text{norm } \texttt{"l1"})

    (Kull et al. 2019, "classwise-ECE"). For each class :math:`k` the probabilities
    :math:`p_{nk}` of that column alone are binned over [0, 1]; in bin :math:`b`,
    :math:`\bar p_{bk}` is their mean, :math:`\bar y_{bk}` the fraction of its samples whose
    target is :math:`k`, and :math:`n_{bk}` its number of samples (with ``sample_weight``: weighted
    means, :math:`n_{bk}/N` the bin's share of the total weight). Every class counts, also one
    that never occurs. ``norm`` combines the gaps of one class as in
    :func:`expected_calibration_error`: ``"l2"`` gives
    :math:`\operatorname{CE}_k = \sqrt{\sum_b (n_{bk}/N)(\bar y_{bk} - \bar p_{bk})^2}` and
    ``"max"`` :math:`\max_b |\bar y_{bk} - \bar p_{bk}|`; the mean over classes is the same.
    Unlike the top-label :func:`expected_calibration_error`, it looks at every column, not only
    the predicted class.

    For two classes the two columns are mirror images (:math:`p_{n0} = 1 - p_{n1}`), their
    errors are equal, and the result is the calibration error of the positive-class probability:
    torchmetrics' ``BinaryCalibrationError`` (for probabilities off the bin edges; see
    :func:`expected_calibration_error` for how bin edges are closed).

    Parameters
    ----------
    probs : array of shape (n_samples,) or (n_samples, n_classes)
        Predicted probabilities in [0, 1], one column per class. One dimension (or one
        column): the probability of the positive class, taken as the columns ``[1 - p, p]``.
        Rows are not checked to sum to 1.
    targets : array-like of shape (n_samples,)
        Without ``labels``: class indices in ``[0, n_classes)`` ({0, 1} for one-dimensional
        ``probs``), as :func:`expected_calibration_error`. With ``labels``: labels of any
        sortable kind, the columns being in sorted label order (as :func:`log_loss`; for
        one-dimensional ``probs`` the greater label is the positive class).
    n_bins : int, default 15
        Number of bins per class.
    norm : {"l1", "l2", "max"}, default "l1"
        How the per-bin gaps of one class are combined.
    strategy : {"uniform", "quantile"}, default "uniform"
        Equal-width bins over [0, 1], or edges at the (unweighted) quantiles of each column's
        probabilities; right-closed ``(lo, hi]`` as in :func:`reliability_curve`.
    sample_weight : array of shape (n_samples,), optional
        Non-negative weights, not all zero.
    labels : array-like, optional
        The full label set, for targets given as labels.

    Returns
    -------
    array
        A 0-d array of the namespace and dtype of ``probs``. Differentiable with respect to
        ``probs`` (the binning itself is piecewise constant).

    Examples
    --------
    A binary forecaster saying 0.8 four times, right three times: each column is off by 0.05.

    >>> import numpy as np
    >>> p = np.array([0.8, 0.8, 0.8, 0.8])
    >>> round(float(classwise_calibration_error(p, np.array([1, 1, 1, 0]))), 12)
    0.05
    >>> probs = np.array([[0.7, 0.2, 0.1], [0.2, 0.7, 0.1], [0.1, 0.2, 0.7]])
    >>> round(float(classwise_calibration_error(probs, ["a", "b", "b"], n_bins=5, labels=["a", "b", "c"])), 4)
    0.2667
    """
    n_bins = _check_binning(n_bins, strategy)
    norm = _check_norm(norm)
    xp, p, outcomes, out_dtype = _column_outcomes(probs, targets, labels)
    weight = _calibration_weight(sample_weight, p[:, 0], xp)
    per_class = _binned_calibration(p, outcomes, weight, n_bins, strategy, norm, xp)
    return _finish(xp.mean(per_class), xp, out_dtype)


class BrierDecomposition(NamedTuple):
    r"""The Murphy (1973) decomposition of the Brier score, with the two within-bin terms.

    ``brier = reliability - resolution + uncertainty + within_bin_variance - 2 * within_bin_covariance``;
    the last two are 0 when forecasts are grouped by their distinct values
    (``n_bins=None``). See :func:`brier_score_decomposition`.

    Attributes
    ----------
    reliability : array
        Weighted mean squared gap between the mean forecast and the observed frequency of each
        group (lower is better; 0 for a calibrated forecaster).
    resolution : array
        Weighted spread of the groups' observed frequencies around the overall frequency
        (higher is better).
    uncertainty : array
        :math:`\bar o (1 - \bar o)` summed over classes: the Brier score of always forecasting
        the overall frequency; a property of the data, not of the forecasts.
    within_bin_variance : array
        Weighted variance of the forecasts inside their bins.
    within_bin_covariance : array
        Weighted covariance of forecasts and outcomes inside their bins.
    """

    reliability: Array
    resolution: Array
    uncertainty: Array
    within_bin_variance: Array
    within_bin_covariance: Array


def brier_score_decomposition(
    probs: ArrayLike,
    targets: ArrayLike,
    /,
    *,
    n_bins: int | None = 10,
    strategy: BinStrategy = "uniform",
    sample_weight: ArrayLike | None = None,
    labels: ArrayLike | None = None,
    scale_by_half: bool | Literal["auto"] = "auto",
) -> BrierDecomposition:
    r"""The decomposition of the Brier score into reliability, resolution and uncertainty (Murphy).

    The multi-class Brier score of :func:`brier_score` is a sum over classes of the squared
    errors of each column, :math:`\operatorname{BS} = c \sum_k \operatorname{BS}_k`, and each
    column is decomposed on its own. Group the forecasts :math:`f_n = p_{nk}` of class :math:`k`
    (by distinct value, or into bins); with :math:`o_n = [y_n = k]`, weights :math:`w_n`,
    :math:`W_g` the weight of group :math:`g`, :math:`\bar f_g, \bar o_g` its weighted means and
    :math:`\bar o` the overall frequency:

    .. math::

        \operatorname{REL}_k = \frac{1}{W}\sum_g W_g (\bar f_g - \bar o_g)^2, \quad
        \operatorname{RES}_k = \frac{1}{W}\sum_g W_g (\bar o_g - \bar o)^2, \quad
        \operatorname{UNC}_k = \bar o (1 - \bar o),

        \operatorname{WBV}_k = \frac{1}{W}\sum_n w_n (f_n - \bar f_{g(n)})^2, \quad
        \operatorname{WBC}_k = \frac{1}{W}\sum_n w_n (f_n - \bar f_{g(n)})(o_n - \bar o_{g(n)}),

        \operatorname{BS}_k = \operatorname{REL}_k - \operatorname{RES}_k + \operatorname{UNC}_k
            + \operatorname{WBV}_k - 2\,\operatorname{WBC}_k .

    The identity is exact (to rounding). Grouped by distinct values (``n_bins=None``), every
    group holds one forecast value, so WBV = WBC = 0 and this is Murphy's (1973)
    :math:`\operatorname{BS} = \operatorname{REL} - \operatorname{RES} + \operatorname{UNC}`;
    with bins, the two within-bin terms (Stephenson, Coelho & Jolliffe 2008) close the gap. Each
    returned component is :math:`c \sum_k (\cdot)_k`, with the scale :math:`c` of
    :func:`brier_score` (1/2 for two classes by default: then every component is that of the
    positive-class probability alone, the customary binary decomposition).

    Parameters
    ----------
    probs : array of shape (n_samples,) or (n_samples, n_classes)
        Predicted probabilities in [0, 1], as for :func:`brier_score` (one dimension: the
        positive class).
    targets : array-like of shape (n_samples,)
        True labels (any sortable kind), as for :func:`brier_score`.
    n_bins : int or None, default 10
        Number of bins per class; ``None`` groups by distinct forecast values (exact Murphy
        decomposition; with continuous forecasts each sample is then its own group, so
        reliability equals the Brier score and resolution the uncertainty, which says little).
    strategy : {"uniform", "quantile"}, default "uniform"
        Bins of equal width over [0, 1], or edges at the quantiles of each column, right-closed
        ``(lo, hi]`` as in :func:`reliability_curve`. Ignored when ``n_bins`` is None.
    sample_weight : array-like of shape (n_samples,), optional
        Non-negative weights, not all zero.
    labels : array-like, optional
        The full label set, as for :func:`brier_score`.
    scale_by_half : bool or "auto", default "auto"
        As for :func:`brier_score`, so that the components add up to it.

    Returns
    -------
    BrierDecomposition
        Named tuple ``(reliability, resolution, uncertainty, within_bin_variance,
        within_bin_covariance)`` of 0-d arrays of the namespace and dtype of ``probs``. They
        are computed on the host in float64 (the grouping needs a scatter-add that the array
        API lacks) and carry no gradient.

    Examples
    --------
    >>> import numpy as np
    >>> p = np.array([0.9, 0.9, 0.9, 0.9, 0.2, 0.2, 0.2, 0.2, 0.2])
    >>> y = np.array([1, 1, 1, 0, 0, 0, 0, 0, 1])
    >>> d = brier_score_decomposition(p, y, n_bins=None)
    >>> [round(float(v), 4) for v in d[:3]]  # grouped by the values 0.9 and 0.2
    [0.01, 0.0747, 0.2469]
    >>> round(float(d.reliability - d.resolution + d.uncertainty), 12) == round(float(brier_score(p, y)), 12)
    True
    """
    if n_bins is not None:
        n_bins = _check_binning(n_bins, strategy)
    elif not isinstance(strategy, str) or strategy not in _STRATEGIES:
        raise ValueError(f"`strategy` must be one of 'uniform', 'quantile'; got {strategy!r}")
    is_auto = isinstance(scale_by_half, str) and scale_by_half == "auto"
    if not (is_auto or isinstance(scale_by_half, (bool, np.bool_))):
        raise ValueError(f"`scale_by_half` must be True, False or 'auto'; got {scale_by_half!r}")
    xp, p, outcomes, out_dtype = _brier_columns(probs, targets, labels)
    weight = _calibration_weight(sample_weight, p[:, 0], xp)
    f = _host_float64(p)
    o = _host_float64(outcomes)
    w = np.ones(f.shape[0]) if weight is None else _host_float64(weight)
    total_weight = float(np.sum(w))
    if n_bins is not None and n_bins > 1:
        npx = array_api_compat.array_namespace(f)
        edges = np.stack([np.broadcast_to(np.asarray(e), f.shape[1:]) for e in _inner_edges(f, n_bins, strategy, npx)])
    parts = np.zeros(5)
    for k in range(f.shape[1]):
        fk, ok = f[:, k], o[:, k]
        if n_bins is None:
            values, groups = np.unique(fk, return_inverse=True)
            groups = groups.reshape(-1)
        else:
            groups = np.searchsorted(edges[:, k], fk, side="left") if n_bins > 1 else np.zeros(fk.shape, np.int64)
        size = np.bincount(groups, weights=w)
        occupied = size > 0
        safe = np.where(occupied, size, 1.0)
        # a distinct-value group's forecasts all equal its value: no rounding, WBV = WBC = 0 exactly
        f_mean = values if n_bins is None else np.where(occupied, np.bincount(groups, weights=w * fk) / safe, 0.0)
        o_mean = np.where(occupied, np.bincount(groups, weights=w * ok) / safe, 0.0)
        base_rate = float(np.sum(w * ok)) / total_weight
        f_dev = fk - f_mean[groups]
        parts += [
            np.sum(size * (f_mean - o_mean) ** 2) / total_weight,
            np.sum(size * (o_mean - base_rate) ** 2) / total_weight,
            base_rate * (1.0 - base_rate),
            np.sum(w * f_dev**2) / total_weight,
            np.sum(w * f_dev * (ok - o_mean[groups])) / total_weight,
        ]
    if is_auto:
        scale_by_half = p.shape[1] < 3
    if scale_by_half:
        parts *= 0.5
    device = array_api_compat.device(p)
    return BrierDecomposition(
        *(as_result_array(xp.asarray(float(v), dtype=out_dtype, device=device), xp) for v in parts)
    )


def _host_float64(x: Array) -> np.ndarray:
    if array_api_compat.is_torch_array(x):
        x = x.detach().cpu()
    return np.asarray(x, dtype=np.float64)


def _brier_columns(
    probs: ArrayLike, targets: ArrayLike, labels: ArrayLike | None, *, stacklevel: int = 5
) -> tuple[Namespace, Array, Array, DType]:
    """As :func:`brier_score` reads its inputs: ``(xp, (n, C) probabilities, one-hot outcomes, out dtype)``."""
    xp, p, out_dtype = _prepare_probs(probs)
    n_samples = int(p.shape[0])
    if p.ndim == 1 or p.shape[1] == 1:
        positive = _binary_positive(targets, labels, n_samples)
        y = xp.asarray(positive.astype(np.float64), dtype=p.dtype, device=array_api_compat.device(p))
        p = _as_columns(xp.reshape(p, (-1,)), xp)
        return xp, p, xp.stack([1 - y, y], axis=1), out_dtype
    indices, classes = _encode_targets(targets, labels, n_samples, stacklevel=stacklevel)
    _check_columns(p, classes, labels)
    _warn_unnormalized(p, xp, out_dtype, stacklevel=stacklevel)
    mask = onehot_mask(_device_indices(indices, xp, p), int(p.shape[1]), xp, like=p)
    return xp, p, xp.astype(mask, p.dtype), out_dtype


# ---------------------------------------------------------------------------------------------
# Skill scores


def _too_few_for_d2(n_samples: int, xp: Namespace, like: Array, out_dtype: DType) -> Array:
    warnings.warn(
        f"D^2 score is not well-defined with less than two samples; got {n_samples}: returning NaN",
        UserWarning,
        stacklevel=3,
    )
    return as_result_array(xp.asarray(math.nan, dtype=out_dtype, device=array_api_compat.device(like)), xp)


def _weights_or_ones(sample_weight: ArrayLike | None, xp: Namespace, like: Array) -> Array:
    """Validated sample weights (not summing to 0), or ones, in the dtype of ``like`` (n_samples, ...)."""
    n = int(like.shape[0])
    if sample_weight is None:
        return xp.ones((n,), dtype=like.dtype, device=array_api_compat.device(like))
    weight = prepare_sample_weight(sample_weight, xp, like=like, batch_shape=(n,))
    if concrete_bool(xp.sum(weight) == 0):
        raise ValueError("`sample_weight` must not sum to 0 (the weighted mean is undefined); got a sum of 0.0")
    return weight


def d2_log_loss_score(
    probs: ArrayLike, targets: ArrayLike, /, *, labels: ArrayLike | None = None, sample_weight: ArrayLike | None = None
) -> Array:
    r""":math:`D^2` for the log loss: the fraction of the log loss of the class frequencies explained.

    .. math::

        D^2 = 1 - \frac{\sum_n s_n \,\bigl(-\log p_{n, y_n}\bigr)}{\sum_n s_n \,\bigl(-\log \pi_{y_n}\bigr)},
        \qquad \pi_k = \frac{\sum_n s_n [y_n = k]}{\sum_n s_n}

    the log loss of the predictions against that of the null model that predicts the
    (weighted) class frequencies :math:`\pi` of the targets for every sample, both clipped as in
    :func:`log_loss`. This is ``sklearn.metrics.d2_log_loss_score``: 1 is perfect, 0 is no
    better than the frequencies, and it is negative for worse predictions.

    Parameters
    ----------
    probs : array of shape (n_samples,) or (n_samples, n_classes)
        Predicted probabilities, read as by :func:`log_loss`.
    targets : array-like of shape (n_samples,)
        True labels of any sortable kind.
    labels : array-like, optional
        The full label set, as for :func:`log_loss` (classes absent from the targets have
        frequency 0 in the null model).
    sample_weight : array-like of shape (n_samples,), optional
        Non-negative weights, not all zero.

    Returns
    -------
    array
        A 0-d array of the namespace and dtype of ``probs``, differentiable with respect to it.
        Fewer than two samples give NaN with a ``UserWarning``, as scikit-learn.

    Examples
    --------
    >>> import numpy as np
    >>> y = ["a", "b", "b", "a"]
    >>> round(float(d2_log_loss_score(np.array([0.2, 0.9, 0.7, 0.1]), y)), 6)
    0.714873
    >>> float(d2_log_loss_score(np.array([0.5, 0.5, 0.5, 0.5]), y))  # the frequencies themselves
    0.0
    """
    xp, p, out_dtype = _prepare_probs(probs)
    n_samples = int(p.shape[0])
    _host_labels(targets, "targets", n_samples)
    if n_samples < 2:
        return _too_few_for_d2(n_samples, xp, p, out_dtype)
    indices, classes = _encode_targets(targets, labels, n_samples)
    p = _as_columns(p, xp)
    _check_columns(p, classes, labels)
    _warn_unnormalized(p, xp, out_dtype)
    weight = _weights_or_ones(sample_weight, xp, p)
    target_columns = _device_indices(indices, xp, p)
    frequencies = xp.sum(
        xp.astype(onehot_mask(target_columns, int(p.shape[1]), xp, like=p), p.dtype) * weight[:, None], axis=0
    )
    frequencies = frequencies / xp.sum(weight)
    eps = float(xp.finfo(out_dtype).eps)
    model = -xp.log(xp.clip(take_last(p, target_columns, xp), eps, 1 - eps))
    null = -xp.log(xp.clip(xp.take(frequencies, target_columns, axis=0), eps, 1 - eps))
    return _finish(1 - xp.sum(weight * model) / xp.sum(weight * null), xp, out_dtype)


def d2_brier_score(
    probs: ArrayLike, targets: ArrayLike, /, *, labels: ArrayLike | None = None, sample_weight: ArrayLike | None = None
) -> Array:
    r""":math:`D^2` for the Brier score: the fraction of the Brier score of the class frequencies explained.

    .. math::

        D^2 = 1 - \frac{\sum_n s_n \sum_k (p_{nk} - [y_n = k])^2}{\sum_n s_n \sum_k (\pi_k - [y_n = k])^2},
        \qquad \pi_k = \frac{\sum_n s_n [y_n = k]}{\sum_n s_n}

    the Brier score of the predictions against that of the null model predicting the
    (weighted) class frequencies for every sample; the scale of :func:`brier_score` cancels.
    This is ``sklearn.metrics.d2_brier_score``: 1 is perfect, 0 is no better than the
    frequencies, negative is worse.

    Parameters
    ----------
    probs : array of shape (n_samples,) or (n_samples, n_classes)
        Predicted probabilities, read as by :func:`brier_score` (one dimension: the positive
        class, chosen as scikit-learn chooses ``pos_label`` by default).
    targets : array-like of shape (n_samples,)
        True labels of any sortable kind.
    labels : array-like, optional
        The full label set, as for :func:`brier_score`.
    sample_weight : array-like of shape (n_samples,), optional
        Non-negative weights, not all zero.

    Returns
    -------
    array
        A 0-d array of the namespace and dtype of ``probs``, differentiable with respect to it.
        Fewer than two samples give NaN with a ``UserWarning``, as scikit-learn.

    Examples
    --------
    >>> import numpy as np
    >>> round(float(d2_brier_score(np.array([0.1, 0.9, 0.8, 0.3]), [0, 1, 1, 0])), 4)
    0.85
    """
    xp, p, out_dtype = _prepare_probs(probs)
    n_samples = int(p.shape[0])
    _host_labels(targets, "targets", n_samples)
    if n_samples < 2:
        return _too_few_for_d2(n_samples, xp, p, out_dtype)
    xp, p, outcomes, out_dtype = _brier_columns(probs, targets, labels, stacklevel=4)
    weight = _weights_or_ones(sample_weight, xp, p)
    frequencies = xp.sum(outcomes * weight[:, None], axis=0) / xp.sum(weight)
    model = xp.sum(weight * xp.sum((outcomes - p) ** 2, axis=1))
    null = xp.sum(weight * xp.sum((outcomes - frequencies) ** 2, axis=1))
    return _finish(1 - model / null, xp, out_dtype)


def top_k_accuracy(
    scores: ArrayLike,
    targets: ArrayLike,
    /,
    *,
    k: int = 2,
    labels: ArrayLike | None = None,
    sample_weight: ArrayLike | None = None,
    normalize: bool = True,
) -> Array:
    r"""Top-k accuracy: how often the true class is among the ``k`` highest scores.

    .. math::

        \operatorname{acc}_k = \frac{\sum_n s_n \, [\operatorname{rank}_n(y_n) < k]}{\sum_n s_n},
        \qquad \operatorname{rank}_n(t) = \#\{c : z_{nc} > z_{nt}\} + \#\{c > t : z_{nc} = z_{nt}\}

    This is ``sklearn.metrics.top_k_accuracy_score``, ties included: among equal scores the
    class with the higher index ranks first (scikit-learn's stable sort, reversed), so a tie at
    the cut-off counts against a target of lower index. ``normalize=False`` gives the
    (weighted) number of hits instead of the fraction.

    **Binary scores** of shape (n_samples,) (or one column) score the positive class, the
    greater of the two labels: with ``k=1`` the prediction is positive where the score exceeds
    0.5 if every score is in [0, 1] (probabilities), else where it exceeds 0 (decision values);
    with ``k >= 2`` every sample is a hit. Scores of two columns use the ranking above (where
    scikit-learn refuses two columns for binary targets).

    Parameters
    ----------
    scores : array of shape (n_samples,) or (n_samples, n_classes)
        Probabilities, logits or any scores, one column per class in sorted label order.
        NaN is refused; infinities rank as numbers do.
    targets : array-like of shape (n_samples,)
        True labels of any sortable kind.
    k : int, default 2
        Number of top classes that count as a hit (scikit-learn's default). ``k`` at least the
        number of classes gives a ``UserWarning``: every sample is then a hit.
    labels : array-like, optional
        The full label set, when the targets do not show every class (sorted before use, with
        a ``UserWarning`` if it was not; scikit-learn raises there).
    sample_weight : array-like of shape (n_samples,), optional
        Non-negative weights, not all zero when normalizing.
    normalize : bool, default True
        The fraction of hits, or (False) their number.

    Returns
    -------
    array
        A 0-d array of the namespace of ``scores``, in their floating dtype (the default
        floating dtype for integer scores). Not differentiable (a count).

    Examples
    --------
    >>> import numpy as np
    >>> scores = np.array([[0.5, 0.2, 0.2], [0.3, 0.4, 0.2], [0.2, 0.4, 0.3], [0.7, 0.2, 0.1]])
    >>> float(top_k_accuracy(scores, np.array([0, 1, 2, 2]), k=2))
    0.75
    >>> float(top_k_accuracy(scores, np.array([0, 1, 2, 2]), k=2, normalize=False))
    3.0
    """
    k = check_integer_option("k", k, low=1)
    if not isinstance(normalize, (bool, np.bool_)):
        raise TypeError(f"`normalize` must be True or False; got {normalize!r}")
    xp = get_namespace(scores)
    s = as_namespace_array(scores, xp, name="scores")
    if not is_real_floating(xp, s):
        if not xp.isdtype(s.dtype, ("integral", "bool")):
            raise TypeError(f"`scores` must be real numbers; got dtype {s.dtype}")
        s = xp.astype(s, xp.__array_namespace_info__().default_dtypes()["real floating"])
    if s.ndim not in (1, 2):
        raise ValueError(f"`scores` must have shape (n_samples,) or (n_samples, n_classes); got shape {tuple(s.shape)}")
    check_not_empty("scores", s)
    nan = xp.isnan(s)
    if concrete_bool(xp.any(nan)):
        where = tuple(int(i[0]) for i in xp.nonzero(nan))
        raise ValueError(f"`scores` must not contain NaN; got NaN at index {where}")
    out_dtype = s.dtype
    n_samples = int(s.shape[0])
    indices, classes = _encode_targets(targets, labels, n_samples)
    n_classes = int(classes.shape[0])
    binary = s.ndim == 1 or s.shape[1] == 1
    if binary:
        if n_classes != 2:
            raise ValueError(
                "`scores` of shape (n_samples,) score the positive class of 2 labels; "
                f"got {n_classes} labels {classes.tolist()} (pass one column per class)"
            )
        s = xp.reshape(s, (-1,))
    else:
        _check_columns(s, classes, labels, name="scores")
    if k >= n_classes:
        warnings.warn(
            f"`k` ({k}) is at least the number of classes ({n_classes}): every sample is a hit",
            UserWarning,
            stacklevel=2,
        )
    target = _device_indices(indices, xp, s)
    if binary:
        if k == 1:
            probabilities = concrete_bool(xp.all((s >= 0) & (s <= 1)))
            hits = (s > (0.5 if probabilities else 0.0)) == (target == 1)
        else:
            hits = xp.ones(s.shape, dtype=xp.bool, device=array_api_compat.device(s))
    else:
        target_score = take_last(s, target, xp)[:, None]
        columns = xp.arange(int(s.shape[1]), dtype=target.dtype, device=array_api_compat.device(s))
        ahead = (s > target_score) | ((s == target_score) & (columns > target[:, None]))
        hits = xp.sum(xp.astype(ahead, xp.int64), axis=1) < k
    hits = xp.astype(hits, compute_dtype(xp, out_dtype))
    if sample_weight is None:
        result = xp.mean(hits) if normalize else xp.sum(hits)
    else:
        weight = prepare_sample_weight(sample_weight, xp, like=hits, batch_shape=(n_samples,))
        result = xp.sum(weight * hits)
        if normalize:
            weight_sum = xp.sum(weight)
            if concrete_bool(weight_sum == 0):
                raise ValueError("`sample_weight` must not sum to 0 (the weighted mean is undefined); got a sum of 0.0")
            result = result / weight_sum
    return _finish(result, xp, out_dtype)


# ---------------------------------------------------------------------------------------------
# Temperature scaling


def _temperature_derivatives(z: Array, gap: Array, weight: Array, beta: float, xp: Namespace) -> tuple[float, float]:
    """First and second derivative in ``beta`` of the weighted mean log loss of ``softmax(beta z)``.

    ``z``: logits minus their row maximum (<= 0, -inf allowed), ``gap``: the target's entry of
    ``z``; the mean over the weights is taken by the caller's normalization (weights sum to 1).
    ``f'(beta) = sum_n w_n (E_p[z_n] - gap_n)``, ``f''(beta) = sum_n w_n Var_p[z_n]``.
    """
    finite = z > -math.inf
    safe_z = xp.where(finite, z, xp.zeros_like(z))
    exponent = xp.where(finite, safe_z * beta, xp.full_like(z, -math.inf))
    unnormalized = xp.exp(exponent)
    p = unnormalized / xp.sum(unnormalized, axis=1, keepdims=True)
    mean = xp.sum(p * safe_z, axis=1)
    variance = xp.sum(p * (safe_z - mean[:, None]) ** 2, axis=1)
    return float(xp.sum(weight * (mean - gap))), float(xp.sum(weight * variance))


def fit_temperature(logits: ArrayLike, targets: ArrayLike, /, *, sample_weight: ArrayLike | None = None) -> float:
    r"""The temperature :math:`T > 0` that minimizes the log loss of ``softmax(logits / T)``.

    .. math::

        T^\star = 1/\beta^\star, \qquad \beta^\star = \operatorname*{arg\,min}_{\beta \ge 0}\;
        f(\beta), \qquad f(\beta) = \frac{\sum_n s_n \bigl(\operatorname{LSE}(\beta z_n) - \beta z_{n, y_n}\bigr)}
                                       {\sum_n s_n}

    Temperature scaling (Guo et al. 2017): one parameter fitted on held-out data, which leaves
    the arg-max (the accuracy) unchanged and usually repairs most of the miscalibration of a
    neural network. :math:`f` is convex in the inverse temperature :math:`\beta`
    (:math:`f'' = \sum_n s_n \operatorname{Var}_{p_n}[z_n] / \sum_n s_n \ge 0`), so the fit is a 1-D
    root search for :math:`f'(\beta) = 0`: a bracket grown from :math:`\beta = 1`, then Newton
    steps safeguarded by bisection, in float64 (no SciPy). The optimum's log loss matches
    scikit-learn's ``CalibratedClassifierCV(method="temperature")``.

    Degenerate inputs, where no finite positive optimum exists, return the limit:

    - every (weighted) sample's target logit is a maximum of its row, and some row is not
      constant (the data are separated: the loss falls all the way to :math:`T \to 0`):
      returns ``0.0``;
    - the loss rises from :math:`T = \infty` on (:math:`f'(0) \ge 0`: the logits are no better
      than uniform predictions, or anti-correlated with the targets): returns ``math.inf``,
      i.e. uniform predictions;
    - every row is constant (the loss does not depend on :math:`T`): returns ``1.0``.

    Parameters
    ----------
    logits : array of shape (n_samples, n_classes), or (..., n_classes), or (n_samples,)
        Unnormalized scores, class axis last (-inf entries allowed, not at a target); rows that
        look like probabilities give a ``ProbabilitiesAsLogitsWarning`` (pass their log). One
        dimension: binary log-odds :math:`z` of class 1, the logits ``(0, z)``, so the fitted
        model is ``sigmoid(z / T)``. scikit-learn reads a one-dimensional decision function
        :math:`x` as the logits ``(-x, x)``, i.e. log-odds :math:`2x`, so its temperature is
        half of this one for the same numbers; the fitted probabilities are the same.
    targets : int array of shape (n_samples,) or (...)
        Class indices in ``[0, n_classes)``; {0, 1} for one-dimensional logits.
    sample_weight : array of shape (n_samples,) or (...), optional
        Non-negative weights, not all zero.

    Returns
    -------
    float
        The temperature, a Python number (whatever the array library; it is read back to the
        host in any case to steer the solver). Divide the logits by it.

    Raises
    ------
    ValueError
        If the logits hold NaN or +inf, or -inf at a target (the loss is infinite for every
        :math:`T`); if ``targets`` or ``sample_weight`` are invalid or the weights sum to 0.

    Examples
    --------
    Over-confident logits (ten times too large) get a temperature near 10:

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> true_logits = rng.normal(size=(2000, 5))
    >>> p = np.exp(true_logits) / np.exp(true_logits).sum(axis=1, keepdims=True)
    >>> targets = np.array([rng.choice(5, p=row) for row in p])
    >>> T = fit_temperature(10 * true_logits, targets)
    >>> 8 < T < 12
    True
    >>> fit_temperature(np.array([[3.0, 1.0], [0.0, 2.0]]), np.array([0, 1]))  # separated: T -> 0
    0.0
    """
    xp = get_namespace(logits, targets)
    x = as_namespace_array(logits, xp, name="logits")
    if array_api_compat.is_torch_array(x):
        x = x.detach()  # the temperature is a number read back to the host: no gradient to keep
    log_odds = x.ndim == 1 and is_real_floating(xp, x)
    if log_odds:
        x = xp.stack([xp.zeros_like(x), x], axis=1)
    inputs = prepare_class_inputs(
        x,
        targets,
        axis=-1,
        ignore_index=None,
        sample_weight=sample_weight,
        allow_probs=False,
        warn_probabilities=not log_odds,
    )
    n_classes = inputs.num_classes
    z = xp.reshape(xp.astype(inputs.stored, xp.float64), (-1, n_classes))
    indices = xp.reshape(inputs.indices, (-1,))
    bad = xp.isnan(z) | (z == math.inf)
    if concrete_bool(xp.any(bad)):
        row = int(xp.nonzero(xp.any(bad, axis=1))[0][0])
        raise ValueError(f"`logits` must not contain NaN or +inf; got one in row {row}")
    if inputs.sample_weight is None:
        weight = xp.ones((int(z.shape[0]),), dtype=xp.float64, device=array_api_compat.device(z))
    else:
        weight = xp.reshape(xp.astype(inputs.sample_weight, xp.float64), (-1,))
    weight_sum = float(xp.sum(weight))
    if weight_sum == 0:
        raise ValueError("`sample_weight` must not sum to 0 (the weighted mean is undefined); got a sum of 0.0")
    weight = weight / weight_sum
    z = xp.where(weight[:, None] > 0, z, xp.zeros_like(z))  # rows weighted 0 drop out (all -inf ones too)
    z = z - xp.max(z, axis=1, keepdims=True)
    gap = take_last(z, indices, xp)
    infinite_target = (gap == -math.inf) & (weight > 0)
    if concrete_bool(xp.any(infinite_target)):
        row = int(xp.nonzero(infinite_target)[0][0])
        raise ValueError(
            f"`logits` must be finite at the target class (the log loss is infinite for every temperature); "
            f"got -inf at row {row}"
        )
    gap = xp.where(weight > 0, gap, xp.zeros_like(gap))
    slope0, curvature0 = _temperature_derivatives(z, gap, weight, 0.0, xp)
    if curvature0 == 0:
        return 1.0  # every row constant: the loss is the same for every temperature
    if float(xp.sum(weight * -gap)) == 0:
        return 0.0  # every target at its row's maximum: the loss decreases down to T -> 0
    if slope0 >= 0:
        return math.inf  # the loss increases with beta = 1/T from 0 on: uniform predictions are best
    lo, hi = 0.0, math.inf
    beta = 1.0
    slope, curvature = _temperature_derivatives(z, gap, weight, beta, xp)
    while slope < 0 and beta < 1e300:  # grow the bracket; f' -> sum_n w_n (-gap_n) > 0 as beta -> inf
        lo, beta = beta, beta * 4.0
        slope, curvature = _temperature_derivatives(z, gap, weight, beta, xp)
    if slope < 0:  # pragma: no cover - needs logits gaps below 1e-300
        return 0.0
    if slope == 0:
        return 1.0 / beta
    hi = beta
    beta = lo if lo > 0 else hi / 2
    tolerance = 4 * float(np.finfo(np.float64).eps)
    previous_step = older_step = hi - lo
    for _ in range(200):
        slope, curvature = _temperature_derivatives(z, gap, weight, beta, xp)
        if slope == 0:
            break
        if slope < 0:
            lo = beta
        else:
            hi = beta
        step = slope / curvature if curvature > 0 else math.inf
        if abs(step) <= tolerance * beta:  # converged: the next Newton step is below rounding
            break
        candidate = beta - step
        # Newton unless it leaves the bracket or does not halve the step before last (rtsafe's rule:
        # Newton crawls on the exponential tails of a nearly separated data set)
        if not lo < candidate < hi or 2 * abs(step) > older_step:
            # bisect, geometrically while the bracket spans orders of magnitude
            candidate = math.sqrt(lo * hi) if lo > 0 and hi > 4 * lo else 0.5 * (lo + hi)
        if hi - lo <= tolerance * hi:
            break
        older_step, previous_step = previous_step, abs(candidate - beta)
        beta = candidate
    return 1.0 / beta
