"""Evaluation of probabilistic predictions: log loss, perplexity, Brier score and calibration.

:func:`log_loss` and :func:`brier_score` follow scikit-learn's ``sklearn.metrics.log_loss``
and ``sklearn.metrics.brier_score_loss`` (labels of any kind, columns in sorted label order,
weighted means); :func:`perplexity` works on logits with class-index targets like PyTorch's
``cross_entropy``; :func:`expected_calibration_error` and :func:`reliability_curve` measure
how far confidence is from accuracy, :func:`reliability_curve` matching
``sklearn.calibration.calibration_curve`` for binary predictions.

The arithmetic runs in the namespace of the predictions (NumPy, PyTorch, ...), so the results
are 0-d arrays of that library, differentiable where it is; use ``float(...)`` for a Python
number. Labels (strings or numbers) are matched on the host through NumPy, since they never
need a gradient.
"""

from __future__ import annotations

import math
import numbers
import warnings
from typing import Any, NamedTuple

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
    "ReliabilityCurve",
    "brier_score",
    "expected_calibration_error",
    "log_loss",
    "perplexity",
    "reliability_curve",
]

_STRATEGIES = ("uniform", "quantile")
_NORMS = ("l1", "l2", "max")


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

    confidence: Any
    accuracy: Any
    count: Any


# ---------------------------------------------------------------------------------------------
# Shared preparation


def _prepare_probs(probs: Any) -> tuple[Any, Any, Any]:
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


def _host_labels(x: Any, name: str, n_samples: int | None = None) -> np.ndarray:
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


def _encode_targets(targets: Any, labels: Any, n_samples: int) -> tuple[np.ndarray, np.ndarray]:
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
                stacklevel=3,
            )
        _check_known(y, classes)
    return np.searchsorted(classes, y), classes


def _as_columns(p: Any, xp: Any) -> Any:
    """(n_samples,) or (n_samples, 1) positive-class probabilities -> (n_samples, 2) ``[1 - p, p]``."""
    if p.ndim == 1:
        p = xp.reshape(p, (-1, 1))
    if p.shape[1] == 1:
        p = xp.concat([1 - p, p], axis=1)
    return p


def _check_columns(p: Any, classes: np.ndarray, labels: Any) -> None:
    n_columns, n_classes = int(p.shape[1]), int(classes.shape[0])
    if n_columns == n_classes:
        return
    if labels is None:
        raise ValueError(
            f"`probs` must have one column per class; the targets hold {n_classes} classes {classes.tolist()}, "
            f"got {n_columns} columns (pass the full label set through `labels`)"
        )
    raise ValueError(
        f"`probs` must have one column per class in `labels` ({n_classes}: {classes.tolist()}); got {n_columns} columns"
    )


def _warn_unnormalized(p: Any, xp: Any, dtype: Any) -> None:
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
            stacklevel=3,
        )


def _device_indices(indices: np.ndarray, xp: Any, like: Any) -> Any:
    return xp.asarray(indices.astype(np.int64), device=array_api_compat.device(like))


def _weighted_mean(values: Any, sample_weight: Any, xp: Any) -> Any:
    """``mean`` of per-sample ``values``, or ``sum(w * values) / sum(w)`` (NumPy's ``average``)."""
    if sample_weight is None:
        return xp.mean(values)
    weight = prepare_sample_weight(sample_weight, xp, like=values, batch_shape=tuple(values.shape))
    weight_sum = xp.sum(weight)
    if concrete_bool(weight_sum == 0):
        raise ValueError("`sample_weight` must not sum to 0 (the weighted mean is undefined); got a sum of 0.0")
    return xp.sum(values * weight) / weight_sum


def _finish(x: Any, xp: Any, out_dtype: Any) -> Any:
    return as_result_array(xp.astype(x, out_dtype, copy=False), xp)


# ---------------------------------------------------------------------------------------------
# Scores


def log_loss(
    probs: Any,
    targets: Any,
    /,
    *,
    labels: Any = None,
    sample_weight: Any = None,
    base: float | None = None,
) -> Any:
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


def _binary_positive(targets: Any, labels: Any, n_samples: int) -> np.ndarray:
    """Boolean array, true where the target is the positive label (scikit-learn's rules)."""
    y = _host_labels(targets, "targets", n_samples)
    if labels is not None:
        classes = _unique("labels", _host_labels(labels, "labels"))
        if classes.shape[0] != 2:
            raise ValueError(
                f"`labels` must hold exactly 2 labels for binary `probs` of shape (n_samples,); got {classes.tolist()}"
            )
        _check_known(y, classes)
        return y == classes[1]
    classes = _unique("targets", y)
    if classes.shape[0] > 2:
        raise ValueError(
            "`targets` must hold at most 2 distinct labels for binary `probs` of shape (n_samples,) "
            f"(pass one column per class for more); got {classes.tolist()}"
        )
    if classes.shape[0] == 2:
        return y == classes[1]
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
    probs: Any,
    targets: Any,
    /,
    *,
    labels: Any = None,
    sample_weight: Any = None,
    scale_by_half: bool | str = "auto",
) -> Any:
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
    logits: Any,
    targets: Any,
    /,
    *,
    axis: int = -1,
    ignore_index: int | None = -100,
    sample_weight: Any = None,
) -> Any:
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


def _check_binning(n_bins: Any, strategy: Any) -> int:
    n_bins = check_integer_option("n_bins", n_bins, low=1)
    if not isinstance(strategy, str) or strategy not in _STRATEGIES:
        raise ValueError(f"`strategy` must be one of 'uniform', 'quantile'; got {strategy!r}")
    return n_bins


def _check_norm(norm: Any) -> str:
    if not isinstance(norm, str) or norm not in _NORMS:
        raise ValueError(f"`norm` must be one of 'l1', 'l2', 'max'; got {norm!r}")
    return norm


def _calibration_norm(confidence_sums: Any, outcome_sums: Any, weight_sums: Any, norm: str, xp: Any) -> Any:
    r"""The calibration error of per-bin sums, in the namespace ``xp`` (differentiable through the sums).

    ``confidence_sums``, ``outcome_sums``: per-bin sums of (weighted) confidences and outcomes;
    ``weight_sums``: per-bin total weight (or count), of the same floating dtype. With
    :math:`W_b` the bin's weight, :math:`W = \sum_b W_b` and the gap
    :math:`g_b = (\sum_{i \in b} w_i a_i - \sum_{i \in b} w_i c_i) / W_b`:
    ``"l1"`` :math:`\sum_b (W_b / W) |g_b|`, ``"l2"`` :math:`\sqrt{\sum_b (W_b / W) g_b^2}`,
    ``"max"`` :math:`\max_b |g_b|` over the non-empty bins (torchmetrics' three norms).
    """
    differences = outcome_sums - confidence_sums
    total_weight = xp.sum(weight_sums)
    if norm == "l1":
        return xp.sum(xp.abs(differences)) / total_weight
    nonempty = weight_sums > 0
    safe = xp.where(nonempty, weight_sums, xp.ones_like(weight_sums))
    gaps = xp.where(nonempty, differences / safe, xp.zeros_like(differences))
    if norm == "max":
        return xp.max(xp.abs(gaps))
    # sum_b (W_b / W) g_b^2 = sum_b (W_b g_b) g_b / W, with W_b g_b the difference of the sums
    mean_square = xp.sum(differences * gaps) / total_weight
    # sqrt has an infinite derivative at 0; a perfectly calibrated input gets a zero gradient instead
    positive = mean_square > 0
    return xp.where(positive, xp.sqrt(xp.where(positive, mean_square, xp.ones_like(mean_square))), mean_square * 0)


def _calibration_from_bins(
    confidence_sum: np.ndarray, outcome_sum: np.ndarray, weight_sum: np.ndarray, *, norm: str
) -> float:
    r"""The calibration error of accumulated per-bin sums, as a Python float.

    The arithmetic behind :func:`expected_calibration_error` and the classwise error, for
    callers that accumulate the bins themselves (the streaming scorer): ``confidence_sum[b]``
    :math:`= \sum_{i \in b} w_i c_i`, ``outcome_sum[b]`` :math:`= \sum_{i \in b} w_i a_i`
    and ``weight_sum[b]`` :math:`= \sum_{i \in b} w_i` (the count without weights), 1-d
    arrays of one length (converted to float64 NumPy). ``norm``: ``"l1"``, ``"l2"`` or ``"max"``
    as in :func:`expected_calibration_error`. Returns NaN when every bin is empty (total weight
    0): the error of no data is undefined.
    """
    norm = _check_norm(norm)
    conf = np.asarray(confidence_sum, dtype=np.float64).reshape(-1)
    outcome = np.asarray(outcome_sum, dtype=np.float64).reshape(-1)
    weight = np.asarray(weight_sum, dtype=np.float64).reshape(-1)
    if not (conf.shape == outcome.shape == weight.shape):
        raise ValueError(
            "`confidence_sum`, `outcome_sum` and `weight_sum` must have one entry per bin each; "
            f"got shapes {conf.shape}, {outcome.shape}, {weight.shape}"
        )
    if weight.size == 0 or not np.sum(weight) > 0:
        return math.nan
    return float(_calibration_norm(conf, outcome, weight, norm, np))


def _class_targets(targets: Any, xp: Any, like: Any, num_classes: int) -> Any:
    targets = as_namespace_array(targets, xp, name="targets", like=like)
    check_shape("targets", targets, (int(like.shape[0]),), rule="one class index per row of `probs`")
    check_class_indices("targets", targets, xp, num_classes, None)
    return targets


def _top_label(p: Any, targets: Any, xp: Any) -> tuple[Any, Any]:
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


def _inner_edges(values: Any, n_bins: int, strategy: str, xp: Any) -> list[Any]:
    """The ``n_bins - 1`` inner bin edges, as ``calibration_curve`` computes them.

    ``"uniform"``: ``np.linspace(0, 1, n_bins + 1)``. ``"quantile"``: ``np.percentile`` of the
    values (linear interpolation, NumPy's rounding-safe two-sided form) at equally spaced levels.
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
    ordered = xp.sort(values)
    device = array_api_compat.device(values)
    a = xp.take(ordered, xp.asarray(previous, device=device), axis=0)
    b = xp.take(ordered, xp.asarray(following, device=device), axis=0)
    t = xp.asarray(gamma, dtype=values.dtype, device=device)
    diff = b - a
    edges = xp.where(t >= 0.5, b - diff * (1 - t), a + diff * t)
    return [edges[k] for k in range(n_bins - 1)]


def _bin_sums(values: Any, outcomes: Any, weight: Any, n_bins: int, strategy: str, xp: Any) -> tuple[Any, Any, Any]:
    """Per bin: size, sum of ``values`` and sum of ``outcomes``, each term weighted by ``weight``.

    The size is an exact integer count without ``weight``, the total weight with it. A value
    goes to the bin whose interval ``(lo, hi]`` holds it (the first bin also holds its lower
    edge), as ``np.searchsorted(inner_edges, value)`` assigns it; edges are rounded to the
    values' dtype.
    """
    bins = xp.zeros(values.shape, dtype=xp.int64, device=array_api_compat.device(values))
    for edge in _inner_edges(values, n_bins, strategy, xp):
        bins = bins + xp.astype(values > edge, xp.int64)
    zero = xp.zeros_like(values)
    sizes, value_sums, outcome_sums = [], [], []
    for k in range(n_bins):
        in_bin = bins == k
        if weight is None:
            sizes.append(xp.sum(xp.astype(in_bin, xp.int64)))
            value_sums.append(xp.sum(xp.where(in_bin, values, zero)))
            outcome_sums.append(xp.sum(xp.where(in_bin, outcomes, zero)))
        else:
            w = xp.where(in_bin, weight, zero)
            sizes.append(xp.sum(w))
            value_sums.append(xp.sum(w * values))
            outcome_sums.append(xp.sum(w * outcomes))
    return xp.stack(sizes), xp.stack(value_sums), xp.stack(outcome_sums)


def _calibration_weight(sample_weight: Any, like: Any, xp: Any) -> Any:
    if sample_weight is None:
        return None
    weight = prepare_sample_weight(sample_weight, xp, like=like, batch_shape=tuple(like.shape))
    if concrete_bool(xp.sum(weight) == 0):
        raise ValueError("`sample_weight` must not sum to 0 (the weighted mean is undefined); got a sum of 0.0")
    return weight


def _binned_calibration(values: Any, outcomes: Any, weight: Any, n_bins: int, strategy: str, norm: str, xp: Any) -> Any:
    """Bin ``values`` (confidences) with their 0/1 ``outcomes`` and return the calibration error."""
    sizes, value_sums, outcome_sums = _bin_sums(values, outcomes, weight, n_bins, strategy, xp)
    if weight is None:
        sizes = xp.astype(sizes, values.dtype)
    return _calibration_norm(value_sums, outcome_sums, sizes, norm, xp)


def expected_calibration_error(
    probs: Any,
    targets: Any,
    /,
    *,
    n_bins: int = 15,
    strategy: str = "uniform",
    norm: str = "l1",
    sample_weight: Any = None,
) -> Any:
    r"""Top-label expected calibration error (ECE): the gap between confidence and accuracy.

    .. math::

        \operatorname{ECE} = \sum_{b=1}^{B} \frac{n_b}{N} \,\bigl|\operatorname{acc}_b - \operatorname{conf}_b\bigr|

    Each sample's confidence is the probability of its predicted class; it falls in one of
    :math:`B` bins over [0, 1]; :math:`\operatorname{conf}_b` is the mean confidence in bin
    :math:`b`, :math:`\operatorname{acc}_b` the fraction of its predictions that are right and
    :math:`n_b` its number of samples (with ``sample_weight``: weighted means and
    :math:`n_b/N` the bin's share of the total weight). 0 means perfectly calibrated.

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
    """
    n_bins = _check_binning(n_bins, strategy)
    norm = _check_norm(norm)
    xp, p, out_dtype = _prepare_probs(probs)
    confidence, correct = _top_label(p, targets, xp)
    weight = _calibration_weight(sample_weight, confidence, xp)
    ece = _binned_calibration(confidence, correct, weight, n_bins, strategy, norm, xp)
    return _finish(ece, xp, out_dtype)


def reliability_curve(
    probs: Any,
    targets: Any,
    /,
    *,
    n_bins: int = 10,
    strategy: str = "uniform",
) -> ReliabilityCurve:
    r"""Points of a reliability diagram: mean confidence against accuracy in each bin.

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
