r"""Numba kernel that scores a batch of predictions in one pass: the sums of :class:`crossentropy.metrics.Scorer`.

Each row holds :math:`C` predicted probabilities :math:`q` (or logits :math:`z`, turned into
:math:`\log q = z - \operatorname{LSE}(z)`), a target (a class index :math:`y` or a distribution
:math:`t`) and a sample weight :math:`w`. The kernel adds, per row, :math:`w` times

- the cross-entropy :math:`-\log \operatorname{clip}(q_y, \epsilon, 1-\epsilon)`, or
  :math:`-\sum_k t_k \log \operatorname{clip}(q_k, \epsilon, 1-\epsilon)` for distributions
  (no clipping for logits: the log-softmax is exact);
- the target's entropy :math:`-\sum_k t_k \log t_k` and the KL divergence (their difference);
- :math:`[\arg\max_k q_k = y]`, the squared error :math:`\sum_k (q_k - t_k)^2` and the
  predicted entropy :math:`-\sum_k q_k \log q_k`;

into per-chunk totals, per-class totals (keyed by :math:`y`, or :math:`\arg\max_k t_k`),
reliability bins of the top-label confidence :math:`\max_k q_k` and, for each :math:`k` asked
for, top-:math:`k` hits: :math:`[r < k]` with the rank
:math:`r = \#\{j : q_j > q_y\} + \#\{j > y : q_j = q_y\}` of the true class (ties go to the
greater index, as ``sklearn.metrics.top_k_accuracy_score``, so top-1 is the last arg-max,
where the accuracy counts the first). Sums run in float64 in ``n_chunks`` independent
chunks (the first axis of every accumulator), added up by the caller.

The same per-row code (:func:`score_row`) serves the command line's one-pass CSV parser
(:mod:`crossentropy.cli._kernels._csv`), which calls it on each parsed line.

Invalid values are not skipped silently: the first offending row of each chunk is recorded in
``problems`` with its column and a code (``BAD_*``), and rows whose probabilities do not sum to 1
within ``tolerance`` are counted. The caller turns them into messages.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ._cache import refresh
from ._math import JIT_OPTIONS

# Columns of ``totals``.
ROWS, WEIGHT, CROSS_ENTROPY, CORRECT, SQUARED_ERROR, PREDICTED_ENTROPY, TARGET_ENTROPY, KL = range(8)
UNNORMALIZED_PREDICTIONS, UNNORMALIZED_TARGETS = 8, 9
N_TOTALS = 10
# Columns of ``per_class``: rows, weight, weighted cross-entropy, weighted hits.
CLASS_ROWS, CLASS_WEIGHT, CLASS_CROSS_ENTROPY, CLASS_CORRECT = range(4)
N_CLASS_TOTALS = 4
# Columns of ``bins``: weight, weighted confidence, weighted hits.
BIN_WEIGHT, BIN_CONFIDENCE, BIN_CORRECT = range(3)
N_BIN_TOTALS = 3
# Columns of ``problems`` (row indices are -1 when there is none).
BAD_ROW, BAD_COLUMN, BAD_CODE, FIRST_UNNORMALIZED_PREDICTION, FIRST_UNNORMALIZED_TARGET = range(5)
N_PROBLEMS = 5
# Codes in ``problems[:, BAD_CODE]``.
BAD_NAN, BAD_PROBABILITY, BAD_POSITIVE_INFINITY, BAD_WEIGHT, BAD_TARGET_NAN, BAD_TARGET_PROBABILITY = range(1, 7)
BAD_ZERO_SUM, BAD_ALL_NEGATIVE_INFINITY = 7, 8


# Helpers taking arrays are inlined: a call passing an array costs reference counting per row.
_INLINE = {"inline": "always", "error_model": "numpy"}


@njit(**_INLINE)
def _first_problem(p, t, soft, w, is_logits):
    """``(column, code)`` of the first invalid value of a row, or ``(-1, 0)``."""
    n_classes = p.shape[0]
    if not (w >= 0.0 and w < np.inf):
        return -1, BAD_WEIGHT
    any_finite = False
    for k in range(n_classes):
        v = p[k]
        if np.isnan(v):
            return k, BAD_NAN
        if is_logits:
            if v == np.inf:
                return k, BAD_POSITIVE_INFINITY
            any_finite = any_finite or v > -np.inf
        elif not (0.0 <= v <= 1.0):
            return k, BAD_PROBABILITY
    if is_logits and not any_finite:
        return -1, BAD_ALL_NEGATIVE_INFINITY
    if soft:
        for k in range(n_classes):
            v = t[k]
            if np.isnan(v):
                return k, BAD_TARGET_NAN
            if not (0.0 <= v <= 1.0):
                return k, BAD_TARGET_PROBABILITY
    return -1, 0


@njit(**JIT_OPTIONS)
def _log_clipped(q, clip_eps):
    return np.log(min(max(q, clip_eps), 1.0 - clip_eps))


@njit(**_INLINE)
def _record(problems, chunk, n, column, code):
    if problems[chunk, BAD_ROW] < 0:
        problems[chunk, BAD_ROW] = n
        problems[chunk, BAD_COLUMN] = column
        problems[chunk, BAD_CODE] = code


@njit(**_INLINE)
def _normalizer(x, tolerance, renormalize, totals, problems, chunk, n, count_column, first_column):
    """The factor that makes probability row ``x`` sum to 1 if ``renormalize``, else 1.

    A row off by more than ``tolerance`` is counted in ``totals[chunk, count_column]`` (the
    first one's number in ``problems[chunk, first_column]``). Returns -1 for a row that sums to
    0 and must be renormalized, recorded as a problem.
    """
    s = 0.0
    for k in range(x.shape[0]):
        s += x[k]
    if abs(s - 1.0) <= tolerance:
        return 1.0
    totals[chunk, count_column] += 1.0
    if problems[chunk, first_column] < 0:
        problems[chunk, first_column] = n
    if not renormalize:
        return 1.0
    if s == 0.0:
        _record(problems, chunk, n, -1, BAD_ZERO_SUM)
        return -1.0
    return 1.0 / s


@njit(**_INLINE)
def score_row(
    p, t, soft, w, y, n, is_logits, renormalize, tolerance, clip_eps, edges, top_k, totals, per_class, bins, top_hits,
    problems, chunk, log_q,
):  # fmt: skip
    """Add one row to the accumulators of ``chunk`` (module docstring).

    ``p``: the row's predictions (n_classes,); ``t``: its target distribution if ``soft``, else
    ``y`` is its class index; ``w`` its weight; ``n`` the row number problems are recorded
    under; ``top_k``: the k of the top-k hits added to ``top_hits[chunk]`` (empty: none, and
    no work); ``log_q``: scratch of 2 * n_classes.
    """
    n_classes = p.shape[0]
    column, code = _first_problem(p, t, soft, w, is_logits)
    if code != 0:
        _record(problems, chunk, n, column, code)
        return

    # log q (clipped for the cross-entropy) and the unclipped log q for the entropy.
    scale = 1.0
    if is_logits:
        top = -np.inf
        for k in range(n_classes):
            top = max(top, p[k])
        s = 0.0
        for k in range(n_classes):
            s += np.exp(p[k] - top)
        lse = top + np.log(s)
        for k in range(n_classes):
            log_q[k] = p[k] - lse
            log_q[n_classes + k] = log_q[k]
    else:
        scale = _normalizer(p, tolerance, renormalize, totals, problems, chunk, n, UNNORMALIZED_PREDICTIONS,
                            FIRST_UNNORMALIZED_PREDICTION)  # fmt: skip
        if scale < 0.0:
            return
        for k in range(n_classes):
            q = p[k] * scale
            log_q[n_classes + k] = np.log(q)
            log_q[k] = log_q[n_classes + k] if clip_eps <= q <= 1.0 - clip_eps else _log_clipped(q, clip_eps)

    target_scale = 1.0
    if soft:
        target_scale = _normalizer(t, tolerance, renormalize, totals, problems, chunk, n, UNNORMALIZED_TARGETS,
                                   FIRST_UNNORMALIZED_TARGET)  # fmt: skip
        if target_scale < 0.0:
            return

    # One pass over the classes: top label, squared error, entropies, cross-entropy.
    top_class, confidence, last_top = 0, -1.0, 0
    true_class, true_mass = 0, -1.0
    squared_error, predicted_entropy, cross_entropy, target_entropy = 0.0, 0.0, 0.0, 0.0
    for k in range(n_classes):
        q = np.exp(log_q[k]) if is_logits else p[k] * scale
        if q >= confidence:
            last_top = k
        if q > confidence:
            top_class, confidence = k, q
        if q > 0.0:
            predicted_entropy -= q * log_q[n_classes + k]
        if soft:
            target = t[k] * target_scale
            if target > true_mass:
                true_class, true_mass = k, target
            if target > 0.0:
                cross_entropy -= target * log_q[k]
                target_entropy -= target * np.log(target)
        else:
            target = 1.0 if k == y else 0.0
        squared_error += (q - target) * (q - target)
    if not soft:
        true_class = y
        cross_entropy = -log_q[y]
    correct = 1.0 if top_class == true_class else 0.0

    totals[chunk, ROWS] += 1.0
    totals[chunk, WEIGHT] += w
    totals[chunk, CROSS_ENTROPY] += w * cross_entropy
    totals[chunk, CORRECT] += w * correct
    totals[chunk, SQUARED_ERROR] += w * squared_error
    totals[chunk, PREDICTED_ENTROPY] += w * predicted_entropy
    totals[chunk, TARGET_ENTROPY] += w * target_entropy
    totals[chunk, KL] += w * (cross_entropy - target_entropy)
    per_class[chunk, true_class, CLASS_ROWS] += 1.0
    per_class[chunk, true_class, CLASS_WEIGHT] += w
    per_class[chunk, true_class, CLASS_CROSS_ENTROPY] += w * cross_entropy
    per_class[chunk, true_class, CLASS_CORRECT] += w * correct
    b = 0
    while b < edges.shape[0] and confidence > edges[b]:
        b += 1
    bins[chunk, b, BIN_WEIGHT] += w
    bins[chunk, b, BIN_CONFIDENCE] += w * confidence
    bins[chunk, b, BIN_CORRECT] += w * correct
    n_top = top_k.shape[0]
    if n_top > 0:
        ahead = 0 if last_top == true_class else 1
        if top_k[n_top - 1] > 1:
            # The rank of the true class among the q computed as above: a second pass, for k > 1 only.
            q_true = np.exp(log_q[true_class]) if is_logits else p[true_class] * scale
            ahead = 0
            for k in range(n_classes):
                q = np.exp(log_q[k]) if is_logits else p[k] * scale
                if q > q_true or (q == q_true and k > true_class):
                    ahead += 1
        for j in range(n_top):
            if ahead < top_k[j]:
                top_hits[chunk, j] += w


@njit(**_INLINE)
def _score_chunk(
    pred, is_logits, targets, target_probs, weight, renormalize, tolerance, clip_eps, edges, top_k, totals, per_class,
    bins, top_hits, problems, log_q, chunk,
):  # fmt: skip
    n_rows = pred.shape[0]
    n_chunks = totals.shape[0]
    soft = target_probs.shape[0] > 0
    weighted = weight.shape[0] > 0
    for n in range(chunk * n_rows // n_chunks, (chunk + 1) * n_rows // n_chunks):
        t = target_probs[n] if soft else pred[n]  # t is read only when soft
        score_row(
            pred[n], t, soft, weight[n] if weighted else 1.0, 0 if soft else targets[n], n, is_logits,
            renormalize, tolerance, clip_eps, edges, top_k, totals, per_class, bins, top_hits, problems, chunk,
            log_q[chunk],
        )  # fmt: skip


@njit(parallel=True, nogil=True, **JIT_OPTIONS)
def score_rows(
    pred, is_logits, targets, target_probs, weight, renormalize, tolerance, clip_eps, edges, top_k, totals, per_class,
    bins, top_hits, problems, log_q,
):  # fmt: skip
    """Add the sums of the rows of ``pred`` to the accumulators (module docstring).

    Parameters
    ----------
    pred : float64 array of shape (n_rows, n_classes)
        Probabilities, or logits if ``is_logits``.
    targets : int64 array of shape (n_rows,), or (0,) when ``target_probs`` are given
        Class indices in ``[0, n_classes)``.
    target_probs : float64 array of shape (n_rows, n_classes), or (0, n_classes)
        Target distributions.
    weight : float64 array of shape (n_rows,), or (0,) for weight 1
    renormalize : bool
        Divide probability rows (predictions and targets) by their sums.
    tolerance : float
        Rows whose probabilities sum to 1 within this are normalized.
    clip_eps : float
        Probabilities are clipped to ``[clip_eps, 1 - clip_eps]`` inside logarithms.
    edges : float64 array of shape (n_bins - 1,)
        Inner edges of the confidence bins, increasing; a confidence goes to the bin counting
        the edges below it (right-closed bins, as ``np.searchsorted``).
    top_k : int64 array of shape (n_top,)
        The k of the top-k hits to count, increasing (may be empty).
    totals, per_class, bins, top_hits, problems
        Accumulators of shapes (n_chunks, N_TOTALS), (n_chunks, n_classes, N_CLASS_TOTALS),
        (n_chunks, n_bins, N_BIN_TOTALS), (n_chunks, n_top) and (n_chunks, N_PROBLEMS), zero
        (``problems``: -1). Rows in ``problems`` are row indices of ``pred``.
    log_q : float64 array of shape (n_chunks, 2 * n_classes)
        Scratch rows, one per chunk.
    """
    for chunk in prange(totals.shape[0]):
        _score_chunk(
            pred, is_logits, targets, target_probs, weight, renormalize, tolerance, clip_eps, edges, top_k, totals,
            per_class, bins, top_hits, problems, log_q, chunk,
        )  # fmt: skip


@njit(nogil=True, **JIT_OPTIONS)
def score_rows_serial(
    pred, is_logits, targets, target_probs, weight, renormalize, tolerance, clip_eps, edges, top_k, totals, per_class,
    bins, top_hits, problems, log_q,
):  # fmt: skip
    """:func:`score_rows` on the calling thread, for a process where Numba's threads cannot run.

    (A ``fork`` child of a process whose kernels ran on GNU OpenMP:
    :func:`crossentropy.kernels.numba._threading.usable`.)
    """
    for chunk in range(totals.shape[0]):
        _score_chunk(
            pred, is_logits, targets, target_probs, weight, renormalize, tolerance, clip_eps, edges, top_k, totals,
            per_class, bins, top_hits, problems, log_q, chunk,
        )  # fmt: skip


refresh(score_rows, score_rows_serial)
