"""``crossentropy.metrics.Scorer``: the streaming scorer against the array functions on the whole data.

Oracles: the library's array functions (``log_loss``, ``brier_score``, ``expected_calibration_error``
in its three norms, ``top_k_accuracy``, ``entropy``, ``kl_divergence``, ``perplexity``,
``softmax_cross_entropy``) on the concatenated batches, to float64 rounding; hypothesis over
random splits into batches and merge orders; pickled state dicts; two processes over gloo
(``sync``); and ``fit_temperature`` on the whole array for ``crossentropy score``'s temperature.
"""

from __future__ import annotations

import itertools
import multiprocessing
import pickle
import sys
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import crossentropy as ce
from crossentropy.metrics import CalibrationBin, ClassScore, InvalidValue, Scorer, ScoreResult
from tests._support import TORCH_INSTALLED, free_port, requires_torch, torch

RTOL, ATOL = 1e-12, 1e-15


def make_data(n: int = 600, n_classes: int = 4, seed: int = 0, *, weighted: bool = True):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, n_classes)) * 2.0
    labels = rng.integers(0, n_classes, n)
    logits[np.arange(n), labels] += 1.0
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    weight = rng.random(n) * 2 if weighted else None
    return logits, probs, labels, weight


def batches(n: int, cuts) -> list[slice]:
    edges = [0, *sorted(cuts), n]
    return [slice(a, b) for a, b in itertools.pairwise(edges)]


def close(a, b, rtol=RTOL, atol=ATOL) -> bool:
    return bool(np.isclose(a, b, rtol=rtol, atol=atol))


def assert_results_close(a: ScoreResult, b: ScoreResult, rtol=RTOL, atol=ATOL) -> None:
    assert (a.rows, a.classes, a.n_bins, a.base) == (b.rows, b.classes, b.n_bins, b.base)
    for name in (
        "weight", "log_loss", "perplexity", "brier_score", "accuracy", "expected_calibration_error",
        "rms_calibration_error", "max_calibration_error", "mean_predicted_entropy",
    ):  # fmt: skip
        assert close(getattr(a, name), getattr(b, name), rtol, atol), (name, getattr(a, name), getattr(b, name))
    for name in ("target_entropy", "kl_divergence"):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None)
        if x is not None:
            assert close(x, y, rtol, atol), name
    assert a.top_k_accuracy.keys() == b.top_k_accuracy.keys()
    for k in a.top_k_accuracy:
        assert close(a.top_k_accuracy[k], b.top_k_accuracy[k], rtol, atol)
    for p, q in zip(a.per_class, b.per_class, strict=True):
        assert (p.label, p.rows) == (q.label, q.rows)
        assert close(p.weight, q.weight, rtol, atol)
        for name in ("log_loss", "recall"):
            x, y = getattr(p, name), getattr(q, name)
            assert (x is None) == (y is None)
            assert x is None or close(x, y, rtol, atol)
    for p, q in zip(a.reliability, b.reliability, strict=True):
        assert close(p.weight, q.weight, rtol, atol)


# ---------------------------------------------------------------------------------------------
# The figures equal the array functions on the whole data


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_probabilities_equal_the_array_functions(weighted):
    _, probs, labels, weight = make_data(weighted=weighted)
    scorer = Scorer(top_k=(1, 2, 3), n_bins=10)
    for part in batches(len(labels), [100, 101, 377]):
        scorer.update(probs[part], labels[part], sample_weight=None if weight is None else weight[part])
    r = scorer.compute()
    options = {"sample_weight": weight}
    assert r.rows == 600
    assert r.classes == (0, 1, 2, 3)
    assert r.weight == pytest.approx(600 if weight is None else weight.sum(), rel=RTOL)
    assert close(r.log_loss, float(ce.log_loss(probs, labels, **options)))
    assert close(r.perplexity, np.exp(float(ce.log_loss(probs, labels, **options))))
    assert close(r.brier_score, float(ce.brier_score(probs, labels, **options)))
    for norm, value in (
        ("l1", r.expected_calibration_error),
        ("l2", r.rms_calibration_error),
        ("max", r.max_calibration_error),
    ):
        assert close(value, float(ce.expected_calibration_error(probs, labels, n_bins=10, norm=norm, **options)))
    for k in (1, 2, 3):
        assert close(r.top_k_accuracy[k], float(ce.top_k_accuracy(probs, labels, k=k, **options)))
    w = np.ones(600) if weight is None else weight
    hits = probs.argmax(axis=1) == labels
    assert close(r.accuracy, (w * hits).sum() / w.sum())
    assert close(r.mean_predicted_entropy, (w * ce.entropy(probs)).sum() / w.sum())
    assert r.target_entropy is None
    assert r.kl_divergence is None
    losses = -np.log(probs[np.arange(600), labels])
    for k, row in enumerate(r.per_class):
        mine = labels == k
        assert isinstance(row, ClassScore)
        assert (row.label, row.rows) == (k, int(mine.sum()))
        assert close(row.log_loss, (w * losses)[mine].sum() / w[mine].sum())
        assert close(row.recall, (w * hits)[mine].sum() / w[mine].sum())
    assert len(r.reliability) == 10
    assert all(isinstance(b, CalibrationBin) for b in r.reliability)
    if weight is None:
        curve = ce.reliability_curve(probs, labels, n_bins=10)
        filled = [b for b in r.reliability if b.weight > 0]
        np.testing.assert_allclose([b.confidence for b in filled], curve.confidence, rtol=RTOL)
        np.testing.assert_allclose([b.accuracy for b in filled], curve.accuracy, rtol=RTOL)
        np.testing.assert_array_equal([b.weight for b in filled], curve.count)


def test_logits_equal_the_softmax_losses():
    logits, _, labels, weight = make_data(seed=1)
    scorer = Scorer()
    for part in batches(len(labels), [250]):
        scorer.update(logits[part], labels[part], from_logits=True, sample_weight=weight[part])
    r = scorer.compute()
    assert close(r.log_loss, float(ce.softmax_cross_entropy(logits, labels, sample_weight=weight)))
    unweighted = Scorer().update(logits, labels, from_logits=True).compute()
    assert close(unweighted.perplexity, float(ce.perplexity(logits, labels)))
    probs = ce.softmax(logits)
    assert close(r.brier_score, float(ce.brier_score(probs, labels, sample_weight=weight)))
    assert close(
        r.expected_calibration_error, float(ce.expected_calibration_error(probs, labels, sample_weight=weight))
    )


def test_binary_one_dimensional_predictions():
    rng = np.random.default_rng(2)
    p = rng.random(500)
    y = (rng.random(500) < p).astype(np.int64)
    w = rng.random(500)
    scorer = Scorer(top_k=(1, 2))
    scorer.update(p[:123], y[:123], sample_weight=w[:123]).update(p[123:, None], y[123:], sample_weight=w[123:])
    r = scorer.compute()
    assert r.classes == (0, 1)
    assert close(r.log_loss, float(ce.log_loss(p, y, sample_weight=w)))
    assert close(r.brier_score, float(ce.brier_score(p, y, sample_weight=w)))  # halved: two classes
    for norm, value in (("l1", r.expected_calibration_error), ("max", r.max_calibration_error)):
        assert close(value, float(ce.expected_calibration_error(p, y, norm=norm, sample_weight=w)))
    assert close(r.top_k_accuracy[1], float(ce.top_k_accuracy(p, y, k=1, sample_weight=w)))
    assert r.top_k_accuracy[2] == 1.0
    # Logits of the positive class: the softmax of (0, z), i.e. the sigmoid.
    z = np.log(p) - np.log1p(-p)
    logit_result = Scorer().update(z, y, from_logits=True).compute()
    assert close(logit_result.log_loss, float(ce.sigmoid_cross_entropy(z, y.astype(np.float64))), rtol=1e-10)


def test_soft_targets_give_entropy_and_kl():
    rng = np.random.default_rng(3)
    logits, probs, _, weight = make_data(seed=4)
    targets = rng.dirichlet(np.ones(4) * 0.7, len(probs))
    scorer = Scorer()
    for part in batches(len(probs), [10, 300]):
        scorer.update(probs[part], targets[part], sample_weight=weight[part])
    r = scorer.compute()
    mean = lambda v: (weight * v).sum() / weight.sum()  # noqa: E731
    assert close(r.log_loss, mean(ce.cross_entropy(targets, probs)))
    assert close(r.target_entropy, mean(ce.entropy(targets)))
    assert close(r.kl_divergence, mean(ce.kl_divergence(targets, probs)), atol=1e-14)
    assert close(r.target_entropy + r.kl_divergence, r.log_loss)
    onehot_mean = mean(((probs - targets) ** 2).sum(axis=1))
    assert close(r.brier_score, onehot_mean)
    assert close(r.accuracy, mean(probs.argmax(1) == targets.argmax(1)))
    assert close(
        r.expected_calibration_error,
        float(ce.expected_calibration_error(probs, targets.argmax(1), sample_weight=weight)),
    )
    # Logits with soft targets: the cross-entropy of their softmax.
    from_logits = Scorer().update(logits, targets, from_logits=True).compute()
    assert close(from_logits.log_loss, float(ce.softmax_cross_entropy(logits, targets)))


def test_labels_are_sorted_as_log_loss_sorts_them():
    _, probs, labels, _ = make_data(n=200, n_classes=3, seed=5)
    names = np.array(["ant", "bee", "cat"])[labels]
    scorer = Scorer(labels=["ant", "bee", "cat"]).update(probs, names)
    r = scorer.compute()
    assert r.classes == ("ant", "bee", "cat")
    assert close(r.log_loss, float(ce.log_loss(probs, names, labels=["ant", "bee", "cat"])))
    with pytest.warns(UserWarning, match="sorted label order"):
        unsorted = Scorer(labels=["cat", "ant", "bee"])
    assert close(unsorted.update(probs, names).compute().log_loss, r.log_loss)
    with pytest.raises(InvalidValue, match=r"`targets` at row 3 .*'dog' is not one of `labels`") as error:
        Scorer(labels=["ant", "bee", "cat"]).update(probs[:5], np.array(["ant", "bee", "cat", "dog", "ant"]))
    assert (error.value.row, error.value.role) == (3, "target")


def test_base_and_top_k_options():
    _, probs, labels, _ = make_data(n=300, n_classes=6, seed=6)
    nats = Scorer(top_k=(5, 1, 3, 3)).update(probs, labels).compute()
    bits = Scorer(base=2).update(probs, labels).compute()
    assert list(nats.top_k_accuracy) == [1, 3, 5]
    assert close(bits.log_loss, nats.log_loss / np.log(2))
    assert close(bits.mean_predicted_entropy, nats.mean_predicted_entropy / np.log(2))
    assert bits.perplexity == nats.perplexity
    assert close(bits.per_class[0].log_loss, nats.per_class[0].log_loss / np.log(2))
    for bad in (0, -1, 1.5, "2"):
        with pytest.raises((TypeError, ValueError), match="top_k"):
            Scorer(top_k=(bad,))
    with pytest.raises(TypeError, match="n_bins"):
        Scorer(n_bins=2.0)
    with pytest.raises(ValueError, match="base"):
        Scorer(base=1)


def test_ties_follow_each_functions_rule():
    """Accuracy takes the first arg-max (as the calibration error); top-k breaks ties as scikit-learn."""
    probs = np.array([[0.4, 0.4, 0.2], [0.25, 0.25, 0.5], [0.5, 0.25, 0.25]])
    labels = np.array([0, 1, 1])
    r = Scorer(top_k=(1, 2)).update(probs, labels).compute()
    assert r.accuracy == pytest.approx(1 / 3)
    assert r.top_k_accuracy[1] == float(ce.top_k_accuracy(probs, labels, k=1, labels=[0, 1, 2])) == 0.0
    assert r.top_k_accuracy[2] == float(ce.top_k_accuracy(probs, labels, k=2, labels=[0, 1, 2])) == pytest.approx(2 / 3)


# ---------------------------------------------------------------------------------------------
# Merging, state dicts, reset


def _scorer_of(parts, probs, labels, weight) -> Scorer:
    scorer = Scorer(top_k=(1, 2), n_bins=7)
    for part in parts:
        scorer.update(probs[part], labels[part], sample_weight=weight[part])
    return scorer


@settings(max_examples=40, deadline=None)
@given(
    cuts=st.lists(st.integers(1, 399), max_size=8, unique=True),
    groups=st.integers(1, 5),
    order=st.randoms(use_true_random=False),
)
def test_merge_order_and_batching_do_not_matter(cuts, groups, order):
    _, probs, labels, weight = make_data(n=400, seed=7)
    whole = Scorer(top_k=(1, 2), n_bins=7).update(probs, labels, sample_weight=weight).compute()
    parts = batches(400, cuts)
    shards = [_scorer_of(parts[g::groups], probs, labels, weight) for g in range(groups)]
    order.shuffle(shards)
    while len(shards) > 1:  # merge in a random tree
        i, j = sorted(order.sample(range(len(shards)), 2))
        right = shards.pop(j)
        shards[i].merge(right)
    assert_results_close(shards[0].compute(), whole)


def test_state_dict_round_trips_through_pickle():
    _, probs, labels, weight = make_data(seed=8)
    scorer = Scorer(labels=[0, 1, 2, 3], top_k=(1, 3), base=2, n_bins=9)
    scorer.update(probs[:300], labels[:300], sample_weight=weight[:300])
    state = scorer.state_dict()
    for value in state.values():
        if isinstance(value, np.ndarray):
            assert value.dtype in (np.float64, np.int64)
        else:
            assert value is None or isinstance(value, (str, int, float, tuple))
    blob = pickle.dumps(state)
    assert len(blob) < 4096
    restored = Scorer(labels=[0, 1, 2, 3], top_k=(1, 3), base=2, n_bins=9)
    restored.load_state_dict(pickle.loads(blob))
    assert_results_close(restored.compute(), scorer.compute(), rtol=0, atol=0)
    # The restored scorer goes on counting rows where the first left off.
    restored.update(probs[300:], labels[300:], sample_weight=weight[300:])
    whole = Scorer(labels=[0, 1, 2, 3], top_k=(1, 3), base=2, n_bins=9).update(probs, labels, sample_weight=weight)
    assert_results_close(restored.compute(), whole.compute())
    bad = probs[300:302].copy()
    bad[1, 2] = np.nan
    with pytest.raises(InvalidValue) as error:
        restored.update(bad, labels[300:302])
    assert (error.value.row, error.value.column) == (601, 2)


def test_state_dict_of_another_kind_of_scorer_is_refused():
    state = Scorer(n_bins=5).update(np.array([[0.2, 0.8]]), np.array([1])).state_dict()
    with pytest.raises(ValueError, match="`n_bins` 5, this scorer 15"):
        Scorer().load_state_dict(state)
    with pytest.raises(ValueError, match="version"):
        Scorer().load_state_dict({"version": 99})
    broken = dict(state, bins=np.zeros((3, 3)))
    with pytest.raises(ValueError, match=r"state\['bins'\]"):
        Scorer(n_bins=5).load_state_dict(broken)


def test_merging_unlike_scorers_raises():
    two = Scorer().update(np.array([[0.2, 0.8]]), np.array([1]))
    three = Scorer().update(np.array([[0.2, 0.7, 0.1]]), np.array([1]))
    soft = Scorer().update(np.array([[0.2, 0.8]]), np.array([[0.5, 0.5]]))
    with pytest.raises(ValueError, match="2 classes"):
        three.merge(two)
    with pytest.raises(ValueError, match="probabilities targets"):
        two.merge(soft)
    for other in (Scorer(n_bins=3), Scorer(top_k=(1, 2)), Scorer(labels=["a", "b"]), Scorer(base=2)):
        with pytest.raises(ValueError, match="only alike scorers combine"):
            Scorer().merge(other)
    with pytest.raises(TypeError, match="Scorer"):
        Scorer().merge(two.state_dict())
    # An empty scorer merges either way.
    assert Scorer().merge(two).compute().rows == 1
    assert two.merge(Scorer()).compute().rows == 1


def test_reset_forgets_everything():
    scorer = Scorer().update(np.array([[0.2, 0.8]]), np.array([1]))
    scorer.reset()
    with pytest.raises(ValueError, match="no rows were scored"):
        scorer.compute()
    result = scorer.update(np.array([[0.2, 0.7, 0.1]]), np.array([[0.0, 1.0, 0.0]])).compute()  # other classes, kind
    assert result.rows == 1
    assert result.classes == (0, 1, 2)


# ---------------------------------------------------------------------------------------------
# Inputs and errors


@requires_torch
def test_torch_and_numpy_inputs_agree():
    logits, probs, labels, weight = make_data(seed=9)
    reference = Scorer().update(probs, labels, sample_weight=weight).compute()
    tensors = Scorer().update(torch.from_numpy(probs), torch.from_numpy(labels), sample_weight=torch.from_numpy(weight))
    assert_results_close(tensors.compute(), reference, rtol=0, atol=0)
    graph = torch.from_numpy(logits).requires_grad_()
    from_graph = Scorer().update(graph, torch.from_numpy(labels), from_logits=True).compute()
    assert close(from_graph.log_loss, float(ce.softmax_cross_entropy(logits, labels)))
    half = Scorer().update(torch.from_numpy(logits).to(torch.bfloat16), labels, from_logits=True).compute()
    rounded = torch.from_numpy(logits).to(torch.bfloat16).double().numpy()
    assert close(half.log_loss, float(ce.softmax_cross_entropy(rounded, labels)))
    lists = Scorer().update(probs.tolist(), labels.tolist()).compute()
    assert close(lists.log_loss, Scorer().update(probs, labels).compute().log_loss, rtol=0, atol=0)
    as_float = Scorer().update(probs, labels.astype(np.float32)).compute()
    assert as_float.log_loss == lists.log_loss


def test_other_array_api_libraries_are_read_on_the_host():
    xp = pytest.importorskip("array_api_strict")
    _, probs, labels, weight = make_data(seed=16)
    reference = Scorer().update(probs, labels, sample_weight=weight).compute()
    strict = Scorer().update(xp.asarray(probs), xp.asarray(labels), sample_weight=xp.asarray(weight)).compute()
    assert_results_close(strict, reference, rtol=0, atol=0)


@pytest.mark.skipif(not (TORCH_INSTALLED and torch.cuda.is_available()), reason="needs a CUDA GPU")
def test_cuda_tensors_are_moved_to_the_host():
    logits, _, labels, _ = make_data(seed=10)
    on_gpu = Scorer().update(torch.from_numpy(logits).cuda(), torch.from_numpy(labels).cuda(), from_logits=True)
    assert close(on_gpu.compute().log_loss, float(ce.softmax_cross_entropy(logits, labels)))


@pytest.mark.parametrize(
    ("column", "value", "role", "reason"),
    [
        (2, np.nan, "prediction", "is NaN"),
        (1, 1.5, "prediction", r"is not a probability in \[0, 1\]"),
        (0, -0.1, "prediction", r"is not a probability in \[0, 1\]"),
    ],
)
def test_bad_predictions_name_their_row_and_column(column, value, role, reason):
    _, probs, labels, _ = make_data(n=50, seed=11)
    scorer = Scorer().update(probs[:20], labels[:20])
    bad = probs[20:].copy()
    bad[7, column] = value
    with pytest.raises(InvalidValue, match=rf"`predictions` at row 27, column {column} .*: \S+ {reason}") as error:
        scorer.update(bad, labels[20:])
    assert (error.value.row, error.value.role, error.value.column) == (27, role, column)
    assert scorer.compute().rows == 20  # the bad batch added nothing


def test_other_bad_values_are_named():
    probs = np.array([[0.2, 0.8], [0.5, 0.5], [0.9, 0.1]])
    with pytest.raises(InvalidValue, match=r"`sample_weight` at row 1 .*-1.0 is not a finite non-negative weight"):
        Scorer().update(probs, np.array([0, 1, 0]), sample_weight=np.array([1.0, -1.0, 1.0]))
    with pytest.raises(InvalidValue, match=r"`targets` at row 2 .*: 2 is not a class index in \[0, 2\)"):
        Scorer().update(probs, np.array([0, 1, 2]))
    with pytest.raises(InvalidValue, match=r"`targets` at row 1 .*: 0.5 is not a class index"):
        Scorer().update(probs, np.array([0.0, 0.5, 1.0]))
    with pytest.raises(InvalidValue, match=r"`targets` at row 0, column 1 .*: nan is NaN"):
        Scorer().update(probs, np.array([[0.5, np.nan], [0.5, 0.5], [1.0, 0.0]]))
    with pytest.raises(InvalidValue, match=r"`predictions` at row 0, column 1 .*inf is \+inf"):
        Scorer().update(np.array([[0.0, np.inf]]), np.array([0]), from_logits=True)
    with pytest.raises(InvalidValue, match=r"`predictions` at row 0 .*the row is -inf in every class"):
        Scorer().update(np.full((1, 3), -np.inf), np.array([0]), from_logits=True)
    with pytest.raises(InvalidValue, match=r"`predictions` at row 1, column 1 .*: 1.2 is not a probability"):
        Scorer().update(np.array([0.3, 1.2]), np.array([0, 1]))  # 1-d: the positive class's column


def test_bad_shapes_and_kinds_are_refused():
    scorer = Scorer().update(np.array([[0.2, 0.7, 0.1]]), np.array([1]))
    with pytest.raises(ValueError, match=r"`predictions` must have one column per class \(3"):
        scorer.update(np.array([[0.2, 0.8]]), np.array([1]))
    with pytest.raises(ValueError, match=r"hold the positive class of 2 classes; this scorer has 3"):
        scorer.update(np.array([0.3]), np.array([1]))
    with pytest.raises(ValueError, match=r"`targets` must have shape \(1,\)"):
        scorer.update(np.array([[0.2, 0.7, 0.1]]), np.array([1, 2]))
    with pytest.raises(ValueError, match=r"`targets` must have shape \(1, 3\)"):
        scorer.update(np.array([[0.2, 0.7, 0.1]]), np.array([[0.5, 0.5]]))
    with pytest.raises(ValueError, match="`targets` must be index targets, as before"):
        scorer.update(np.array([[0.2, 0.7, 0.1]]), np.array([[0.0, 1.0, 0.0]]))
    with pytest.raises(ValueError, match=r"`sample_weight` must have shape \(1,\)"):
        scorer.update(np.array([[0.2, 0.7, 0.1]]), np.array([1]), sample_weight=np.ones(2))
    with pytest.raises(ValueError, match=r"`predictions` must have shape"):
        scorer.update(np.zeros((1, 3, 1)), np.array([1]))
    with pytest.raises(TypeError, match="`predictions` must be a real numeric array"):
        scorer.update(np.array([["a", "b", "c"]]), np.array([1]))
    with pytest.raises(TypeError, match="`targets` must be class indices"):
        scorer.update(np.array([[0.2, 0.7, 0.1]]), np.array(["b"]))
    with pytest.raises(ValueError, match="every sample weight is 0"):
        Scorer().update(np.array([[0.2, 0.8]]), np.array([1]), sample_weight=np.zeros(1)).compute()
    with pytest.raises(ValueError, match="labels"):
        Scorer(labels=["a", "a", "b"])


def test_unnormalized_rows_warn_once_and_are_counted():
    probs = np.array([[0.2, 0.7], [0.5, 0.5], [0.1, 0.1]])
    scorer = Scorer()
    with pytest.warns(UserWarning, match="row 0 .* does not"):
        scorer.update(probs, np.array([0, 1, 0]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scorer.update(probs, np.array([0, 1, 0]))
    assert scorer.compute().unnormalized_predictions == 4


@requires_torch
def test_sync_without_a_process_group_says_so():
    with pytest.raises(RuntimeError, match=r"initialized torch\.distributed process group"):
        Scorer().sync()


def _fork_child(connection, probs, labels) -> None:
    from crossentropy.kernels.numba import _threading

    connection.send((Scorer().update(probs, labels).compute().log_loss, _threading.usable()))
    connection.close()


@pytest.mark.skipif(sys.platform == "win32" or "fork" not in multiprocessing.get_all_start_methods(), reason="fork")
@requires_torch  # its premise: PyTorch's GNU OpenMP threads started in this process
def test_a_fork_child_of_a_gnu_openmp_parent_scores_on_one_thread():
    """After the parallel kernel ran on PyTorch's OpenMP threads here, a fork child cannot start them: serial kernel."""
    _, probs, labels, _ = make_data(seed=12)
    want = Scorer().update(probs, labels).compute().log_loss
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        child = context.Process(target=_fork_child, args=(sender, probs, labels))
        child.start()
    sender.close()
    child.join(120)
    assert child.exitcode == 0
    got, threads_usable = receiver.recv()
    assert close(got, want)
    assert not threads_usable  # so the serial kernel scored it


# ---------------------------------------------------------------------------------------------
# torch.distributed: every rank scores its shard, sync(), every rank has the whole data's figures


SHARDS = [slice(0, 170), slice(170, 600)]


def sync_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        _, probs, labels, weight = make_data(seed=13)
        scorer = Scorer(top_k=(1, 2), n_bins=11)
        shard = SHARDS[rank]
        for part in batches(shard.stop - shard.start, [37]):  # a DDP evaluation loop's batches
            rows = slice(shard.start + part.start, shard.start + part.stop)
            scorer.update(torch.from_numpy(probs[rows]), torch.from_numpy(labels[rows]), sample_weight=weight[rows])
        scorer.sync()
        empty = Scorer().sync()  # a rank may have no rows; so may all
        with open(f"{out_dir}/rank{rank}.pkl", "wb") as file:
            pickle.dump((scorer.compute(), empty.state_dict()["rows"]), file)
    finally:
        dist.destroy_process_group()


@requires_torch
def test_sync_over_gloo_equals_one_process(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(sync_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    _, probs, labels, weight = make_data(seed=13)
    whole = Scorer(top_k=(1, 2), n_bins=11).update(probs, labels, sample_weight=weight).compute()
    for rank in range(2):
        with open(tmp_path / f"rank{rank}.pkl", "rb") as file:
            result, empty_rows = pickle.load(file)
        assert_results_close(result, whole)
        assert empty_rows == 0
