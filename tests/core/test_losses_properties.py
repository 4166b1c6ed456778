"""Properties of :mod:`crossentropy.losses`: hypothesis, finite differences, stability, edge cases.

Oracles used here (see docs/design.md, "Tests use four oracles"):

* hand-computed constants (−ln 0.001 ≈ 6.908, −ln 0.92 ≈ 0.0834, the 0.9/0.1 coin against 0.7/0.3);
* hypothesis properties in float64: shift invariance, loss ≥ 0, one-hot probability targets equal
  index targets, and analytic ``dlogits`` of ``*_with_grad`` equal central finite differences;
* stability: ±1e4 and −inf logits, all-ignored batches, half precision.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import crossentropy
from crossentropy.losses import (
    binary_cross_entropy,
    nll_loss,
    poly1_cross_entropy,
    sigmoid_cross_entropy,
    sigmoid_cross_entropy_with_grad,
    sigmoid_focal_loss,
    softmax_cross_entropy,
    softmax_cross_entropy_with_grad,
    softmax_focal_loss,
)
from tests._support import AS_TORCH, F, requires_torch, torch, torch_params

PROPERTY = settings(deadline=None, max_examples=40)
FD = settings(deadline=None, max_examples=25)


def looks_like_probabilities(x: np.ndarray) -> bool:
    """Rows ≥ 0 summing to 1: such logits would (rightly) raise ProbabilitiesAsLogitsWarning."""
    rows = x.reshape(-1, x.shape[-1])
    return bool(np.any(np.all(rows >= 0, axis=-1) & (np.abs(rows.sum(axis=-1) - 1) < 1e-3)))


@st.composite
def logits_arrays(draw, *, max_n=5, max_c=6, bound=20.0):
    n = draw(st.integers(1, max_n))
    c = draw(st.integers(2, max_c))
    x = draw(hnp.arrays(np.float64, (n, c), elements=st.floats(-bound, bound, allow_nan=False, width=64)))
    assume(not looks_like_probabilities(x))
    return x


def prob_targets(rng, shape):
    t = np.exp(rng.normal(size=shape))
    return t / t.sum(axis=-1, keepdims=True)


def index_targets(rng, n, c, *, ignore=False):
    y = rng.integers(0, c, size=n)
    if ignore and n > 1:
        y[rng.random(n) < 0.3] = -100
        y[0] = rng.integers(0, c)  # never all ignored
    return y


# --------------------------------------------------------------------------------------------
# hand-computed constants
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("probs", "target", "expected", "approx"),
    [
        ([0.001, 0.599, 0.4], 0, -math.log(0.001), 6.908),
        ([0.92, 0.05, 0.03], 0, -math.log(0.92), 0.0834),
        ([0.03, 0.05, 0.92], 2, -math.log(0.92), 0.0834),
    ],
)
@pytest.mark.parametrize("as_torch", AS_TORCH)
def test_softmax_ce_hand_constants(probs, target, expected, approx, as_torch, tol):
    x = np.log(np.array([probs]))
    y = np.array([target])
    if as_torch:
        x, y = torch.from_numpy(x), torch.from_numpy(y)
    got = softmax_cross_entropy(x, y)
    tol.assert_close(got, expected, np.float64)
    assert abs(float(got) - approx) < 1e-3
    loss, _ = softmax_cross_entropy_with_grad(x, y)
    tol.assert_close(loss, expected, np.float64)
    # the same with the class axis first
    tol.assert_close(softmax_cross_entropy(x.T, y, axis=0), expected, np.float64)


def test_hand_constants_other_losses(tol):
    """−ln 0.92 through nll_loss, binary cross-entropy and sigmoid cross-entropy too."""
    expected = -math.log(0.92)
    tol.assert_close(nll_loss(np.log(np.array([[0.92, 0.08]])), np.array([0])), expected, np.float64)
    tol.assert_close(binary_cross_entropy(np.array([0.92]), np.array([1.0])), expected, np.float64)
    logit = math.log(0.92 / 0.08)
    tol.assert_close(sigmoid_cross_entropy(np.array([logit]), np.array([1.0])), expected, np.float64)
    tol.assert_close(sigmoid_cross_entropy(np.array([-logit]), np.array([0.0])), expected, np.float64)


def test_coin_cross_entropy(tol):
    """The 0.9/0.1 coin against 0.7/0.3: H(P, Q) = −(0.9 ln 0.7 + 0.1 ln 0.3) ≈ 0.4414."""
    expected = -(0.9 * math.log(0.7) + 0.1 * math.log(0.3))
    assert abs(expected - 0.4414) < 1e-4
    tol.assert_close(
        softmax_cross_entropy(np.log(np.array([[0.7, 0.3]])), np.array([[0.9, 0.1]])), expected, np.float64
    )
    tol.assert_close(binary_cross_entropy(np.array([0.7]), np.array([0.9])), expected, np.float64)
    tol.assert_close(sigmoid_cross_entropy(np.array([math.log(0.7 / 0.3)]), np.array([0.9])), expected, np.float64)


def test_sigmoid_label_smoothing_convention(tol):
    """y ← y(1−ε) + ε/2: a hard 1 with ε = 0.2 becomes 0.9."""
    x = np.array([math.log(0.7 / 0.3)])
    expected = -(0.9 * math.log(0.7) + 0.1 * math.log(0.3))
    tol.assert_close(sigmoid_cross_entropy(x, np.array([1.0]), label_smoothing=0.2), expected, np.float64)


def test_softmax_label_smoothing_hand_value(tol):
    """PyTorch convention: (1−ε)·onehot + ε/C, with C = 2: a hard 0 with ε = 0.2 becomes (0.9, 0.1)."""
    x = np.log(np.array([[0.7, 0.3]]))
    expected = -(0.9 * math.log(0.7) + 0.1 * math.log(0.3))
    tol.assert_close(softmax_cross_entropy(x, np.array([0]), label_smoothing=0.2), expected, np.float64)


# --------------------------------------------------------------------------------------------
# hypothesis properties (float64)
# --------------------------------------------------------------------------------------------


@PROPERTY
@given(
    x=logits_arrays(),
    shift=st.floats(-100, 100, allow_nan=False),
    seed=st.integers(0, 2**32 - 1),
    kind=st.sampled_from(["index", "prob"]),
    label_smoothing=st.sampled_from([0.0, 0.1]),
    use_weight=st.booleans(),
    use_sample_weight=st.booleans(),
)
def test_shift_invariance(x, shift, seed, kind, label_smoothing, use_weight, use_sample_weight, tol):
    """Adding a constant to every logit of a row changes neither the loss nor its gradient."""
    rng = np.random.default_rng(seed)
    n, c = x.shape
    y = index_targets(rng, n, c) if kind == "index" else prob_targets(rng, (n, c))
    per_row = rng.uniform(-1, 1, size=(n, 1)) * shift  # a different constant in each row
    shifted = x + per_row
    assume(not looks_like_probabilities(shifted))
    kwargs = {
        "weight": rng.uniform(0.2, 2, size=c) if use_weight else None,
        "sample_weight": rng.uniform(0.2, 2, size=n) if use_sample_weight else None,
        "label_smoothing": label_smoothing,
        "reduction": "none",
    }
    tol.assert_close(softmax_cross_entropy(shifted, y, **kwargs), softmax_cross_entropy(x, y, **kwargs), np.float64)
    _, d0 = softmax_cross_entropy_with_grad(x, y, **kwargs)
    _, d1 = softmax_cross_entropy_with_grad(shifted, y, **kwargs)
    tol.assert_close(d1, d0, np.float64)


@PROPERTY
@given(
    x=logits_arrays(),
    seed=st.integers(0, 2**32 - 1),
    kind=st.sampled_from(["index", "prob"]),
    label_smoothing=st.sampled_from([0.0, 0.3, 1.0]),
    z_loss=st.sampled_from([0.0, 1e-3]),
    softcap=st.sampled_from([None, 3.0]),
    use_weight=st.booleans(),
)
def test_softmax_ce_nonnegative(x, seed, kind, label_smoothing, z_loss, softcap, use_weight):
    rng = np.random.default_rng(seed)
    n, c = x.shape
    y = index_targets(rng, n, c, ignore=True) if kind == "index" else prob_targets(rng, (n, c))
    loss = softmax_cross_entropy(
        x,
        y,
        weight=rng.uniform(0, 2, size=c) if use_weight else None,
        label_smoothing=label_smoothing,
        z_loss=z_loss,
        softcap=softcap,
        reduction="none",
    )
    assert np.all(np.isfinite(loss))
    assert np.all(loss >= 0), loss


@PROPERTY
@given(
    x=logits_arrays(),
    seed=st.integers(0, 2**32 - 1),
    label_smoothing=st.sampled_from([0.0, 0.2]),
    z_loss=st.sampled_from([0.0, 1e-2]),
    softcap=st.sampled_from([None, 5.0]),
    use_sample_weight=st.booleans(),
    reduction=st.sampled_from(["mean", "sum", "none"]),
)
def test_one_hot_probability_targets_equal_index_targets(
    x, seed, label_smoothing, z_loss, softcap, use_sample_weight, reduction, tol
):
    rng = np.random.default_rng(seed)
    n, c = x.shape
    y = index_targets(rng, n, c)
    onehot = np.eye(c)[y]
    kwargs = {
        "label_smoothing": label_smoothing,
        "z_loss": z_loss,
        "softcap": softcap,
        "reduction": reduction,
        "sample_weight": rng.uniform(0.1, 2, size=n) if use_sample_weight else None,
    }
    tol.assert_close(softmax_cross_entropy(x, onehot, **kwargs), softmax_cross_entropy(x, y, **kwargs), np.float64)
    li, di = softmax_cross_entropy_with_grad(x, y, **kwargs)
    lp, dp = softmax_cross_entropy_with_grad(x, onehot, **kwargs)
    tol.assert_close(lp, li, np.float64)
    tol.assert_close(dp, di, np.float64)
    for fn, extra in ((poly1_cross_entropy, {"epsilon": 1.5}), (softmax_focal_loss, {"gamma": 2.0})):
        kw = {"reduction": reduction, "sample_weight": kwargs["sample_weight"], **extra}
        if fn is poly1_cross_entropy:
            kw["label_smoothing"] = label_smoothing
        tol.assert_close(fn(x, onehot, **kw), fn(x, y, **kw), np.float64, err_msg=fn.__name__)


# Finite differences. Central differences with step h in float64 are accurate to about
# h²·|f'''| + ε·|f|/h ≈ 1e-9 here, so the comparison uses the accuracy of the *oracle*, not of float64.
FD_STEP = 1e-5
FD_TOL = {"rtol": 1e-6, "atol": 1e-7}


def central_differences(f, x):
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[i] += FD_STEP
        xm[i] -= FD_STEP
        g[i] = (float(np.sum(f(xp))) - float(np.sum(f(xm)))) / (2 * FD_STEP)
    return g


@FD
@given(
    x=logits_arrays(max_n=4, max_c=5, bound=5.0),
    seed=st.integers(0, 2**32 - 1),
    kind=st.sampled_from(["index", "prob"]),
    label_smoothing=st.sampled_from([0.0, 0.2]),
    z_loss=st.sampled_from([0.0, 0.05]),
    softcap=st.sampled_from([None, 2.0]),
    use_weight=st.booleans(),
    use_sample_weight=st.booleans(),
    reduction=st.sampled_from(["mean", "sum", "none"]),
)
def test_softmax_ce_grad_equals_finite_differences(
    x, seed, kind, label_smoothing, z_loss, softcap, use_weight, use_sample_weight, reduction
):
    rng = np.random.default_rng(seed)
    n, c = x.shape
    y = index_targets(rng, n, c, ignore=True) if kind == "index" else prob_targets(rng, (n, c))
    kwargs = {
        "weight": rng.uniform(0.2, 2, size=c) if use_weight else None,
        "sample_weight": rng.uniform(0.2, 2, size=n) if use_sample_weight else None,
        "label_smoothing": label_smoothing,
        "z_loss": z_loss,
        "softcap": softcap,
        "reduction": reduction,
    }
    _, dlogits = softmax_cross_entropy_with_grad(x, y, **kwargs)
    numeric = central_differences(lambda z: softmax_cross_entropy_with_grad(z, y, **kwargs)[0], x)
    np.testing.assert_allclose(dlogits, numeric, **FD_TOL)


@FD
@given(
    x=logits_arrays(max_n=4, max_c=4, bound=5.0),
    seed=st.integers(0, 2**32 - 1),
    one_d=st.booleans(),
    label_smoothing=st.sampled_from([0.0, 0.2]),
    use_weight=st.booleans(),
    use_pos_weight=st.booleans(),
    use_sample_weight=st.booleans(),
    reduction=st.sampled_from(["mean", "sum", "none"]),
)
def test_sigmoid_ce_grad_equals_finite_differences(
    x, seed, one_d, label_smoothing, use_weight, use_pos_weight, use_sample_weight, reduction
):
    rng = np.random.default_rng(seed)
    if one_d:
        x = x[0]
    y = rng.random(x.shape)
    kwargs = {
        "weight": rng.uniform(0.2, 2, size=x.shape[-1:]) if use_weight else None,
        "pos_weight": rng.uniform(0.5, 3, size=x.shape[-1:]) if use_pos_weight else None,
        "sample_weight": rng.uniform(0.2, 2, size=x.shape[:1]) if use_sample_weight else None,
        "label_smoothing": label_smoothing,
        "reduction": reduction,
    }
    _, dlogits = sigmoid_cross_entropy_with_grad(x, y, **kwargs)
    numeric = central_differences(lambda z: sigmoid_cross_entropy_with_grad(z, y, **kwargs)[0], x)
    np.testing.assert_allclose(dlogits, numeric, **FD_TOL)


@pytest.mark.parametrize("axis", [0, 1, 2, -1])
def test_with_grad_axis_layout(axis, tol):
    """dlogits has the logits' shape and class-axis layout, for any class axis."""
    rng = np.random.default_rng(7)
    x = rng.normal(size=(2, 3, 4))
    moved = np.moveaxis(x, axis, -1)
    y = rng.integers(0, moved.shape[-1], size=moved.shape[:-1])
    loss, d = softmax_cross_entropy_with_grad(x, y, axis=axis, z_loss=0.01)
    loss_last, d_last = softmax_cross_entropy_with_grad(moved, y, z_loss=0.01)
    assert d.shape == x.shape
    tol.assert_close(loss, loss_last, np.float64)
    tol.assert_close(np.moveaxis(d, axis, -1), d_last, np.float64)
    numeric = central_differences(lambda z: softmax_cross_entropy(z, y, axis=axis, z_loss=0.01), x)
    np.testing.assert_allclose(d, numeric, **FD_TOL)


# --------------------------------------------------------------------------------------------
# stability
# --------------------------------------------------------------------------------------------

HUGE = np.array([[1e4, -1e4, 0.0, 5.0], [-1e4, 1e4, 1e4, -1e4], [1e4, 1e4, -1e4, 0.0], [-1e4, 0.0, 1e4, 3.0]])
HUGE_INDEX = np.array([1, 0, 2, 3])


def as_numpy(a):
    return a.detach().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)


def _finite(a) -> bool:
    return bool(np.all(np.isfinite(np.asarray(as_numpy(a), dtype=np.float64))))


def _softmax_family_calls():
    """(name, function, kwargs, target kind) of the logits losses with an index / probability target."""
    return [
        ("ce", softmax_cross_entropy, {}, "index"),
        ("ce-prob", softmax_cross_entropy, {}, "prob"),
        ("ce-smooth", softmax_cross_entropy, {"label_smoothing": 0.1}, "index"),
        ("ce-smooth-prob", softmax_cross_entropy, {"label_smoothing": 0.1}, "prob"),
        ("ce-zloss", softmax_cross_entropy, {"z_loss": 1e-4}, "index"),
        ("ce-softcap", softmax_cross_entropy, {"softcap": 30.0}, "index"),
        ("ce-all", softmax_cross_entropy, {"z_loss": 1e-4, "softcap": 30.0, "label_smoothing": 0.1}, "prob"),
        ("focal", softmax_focal_loss, {"gamma": 2.0}, "index"),
        ("focal-prob", softmax_focal_loss, {"gamma": 2.0}, "prob"),
        ("poly1", poly1_cross_entropy, {"epsilon": 1.0}, "index"),
        ("poly1-prob", poly1_cross_entropy, {"epsilon": 1.0, "label_smoothing": 0.1}, "prob"),
    ]


@pytest.mark.parametrize("dtype", torch_params("float64", "float32"))
@pytest.mark.parametrize(
    ("name", "fn", "kwargs", "kind"), _softmax_family_calls(), ids=[c[0] for c in _softmax_family_calls()]
)
def test_huge_logits_finite(name, fn, kwargs, kind, dtype):
    x = torch.tensor(HUGE, dtype=dtype, requires_grad=True)
    if kind == "index":
        y = torch.from_numpy(HUGE_INDEX)
    else:
        y = torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.5, 0.0, 0.5, 0.0], [1.0, 0.0, 0.0, 0.0], [0.25] * 4], dtype=dtype)
    for reduction in ("mean", "none"):
        loss = fn(x, y, reduction=reduction, **kwargs)
        assert _finite(loss), (name, reduction, loss)
        (g,) = torch.autograd.grad(loss.sum(), x)
        assert _finite(g), (name, reduction, g)
        if fn is softmax_cross_entropy:
            lw, d = softmax_cross_entropy_with_grad(x.detach(), y, reduction=reduction, **kwargs)
            assert _finite(lw), (name, reduction)
            assert _finite(d), (name, reduction)


@pytest.mark.parametrize("dtype", torch_params("float64", "float32"))
@pytest.mark.parametrize("logits", ["huge", "offset-3000"])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_large_logits_accuracy_matches_torch(logits, reduction, dtype, tol):
    """Loss and gradient stay as accurate as F.cross_entropy when logits are large.

    Subtracting the row maximum is exact for such logits (Sterbenz), so the softmax (and
    p − onehot) can be computed to the dtype's precision, as PyTorch does. "offset-3000" is an
    ordinary row of logits plus a large common offset, which by shift invariance must not matter.
    """
    if logits == "huge":
        x_np, y_np = HUGE, HUGE_INDEX
    else:
        rng = np.random.default_rng(18)
        x_np, y_np = 3000.0 + rng.normal(scale=2.0, size=(16, 8)), rng.integers(0, 8, size=16)
    x = torch.tensor(x_np, dtype=dtype)
    y = torch.from_numpy(y_np)
    xr = x.clone().requires_grad_()
    ref = F.cross_entropy(xr, y, reduction=reduction)
    (gr,) = torch.autograd.grad(ref.sum(), xr)
    xo = x.clone().requires_grad_()
    out = softmax_cross_entropy(xo, y, reduction=reduction)
    tol.assert_close(out, ref, dtype, err_msg="softmax_cross_entropy: loss")
    (g,) = torch.autograd.grad(out.sum(), xo)
    tol.assert_close(g, gr, dtype, err_msg="softmax_cross_entropy: autograd")
    loss, d = softmax_cross_entropy_with_grad(x, y, reduction=reduction)
    tol.assert_close(loss, ref, dtype, err_msg="softmax_cross_entropy_with_grad: loss")
    tol.assert_close(d, gr, dtype, err_msg="softmax_cross_entropy_with_grad: dlogits")


@pytest.mark.parametrize("dtype", torch_params("float64", "float32"))
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_huge_logits_match_torch(dtype, label_smoothing, tol):
    """With ±1e4 logits the values are exactly representable differences: PyTorch is a sound reference."""
    x = torch.tensor(HUGE, dtype=dtype, requires_grad=True)
    y = torch.from_numpy(HUGE_INDEX)
    loss = softmax_cross_entropy(x, y, label_smoothing=label_smoothing, reduction="none")
    xr = torch.tensor(HUGE, dtype=dtype, requires_grad=True)
    ref = F.cross_entropy(xr, y, label_smoothing=label_smoothing, reduction="none")
    tol.assert_close(loss, ref, dtype)
    (g,) = torch.autograd.grad(loss.sum(), x)
    (gr,) = torch.autograd.grad(ref.sum(), xr)
    tol.assert_close(g, gr, dtype)


@pytest.mark.parametrize("dtype", torch_params("float64", "float32"))
def test_huge_logits_sigmoid(dtype, tol):
    x = torch.tensor(HUGE, dtype=dtype, requires_grad=True)
    y = torch.tensor((HUGE > 0).astype(float) * 0.7 + 0.1, dtype=dtype)
    for fn, kwargs in (
        (sigmoid_cross_entropy, {}),
        (sigmoid_cross_entropy, {"pos_weight": torch.full((4,), 2.0, dtype=dtype), "label_smoothing": 0.1}),
        (sigmoid_focal_loss, {}),
    ):
        loss = fn(x, y, reduction="none", **kwargs)
        assert _finite(loss)
        (g,) = torch.autograd.grad(loss.sum(), x)
        assert _finite(g)
    xr = torch.tensor(HUGE, dtype=dtype, requires_grad=True)
    ref = F.binary_cross_entropy_with_logits(xr, y, reduction="none")
    tol.assert_close(sigmoid_cross_entropy(x, y, reduction="none"), ref, dtype)
    loss, d = sigmoid_cross_entropy_with_grad(x.detach(), y, reduction="sum")
    (gr,) = torch.autograd.grad(ref.sum(), xr)
    tol.assert_close(loss, ref.sum(), dtype)
    tol.assert_close(d, gr, dtype)


@pytest.mark.parametrize("as_torch", AS_TORCH)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@requires_torch
def test_neg_inf_logits_on_non_target_classes(reduction, dtype, as_torch, tol):
    inf = np.inf
    x_np = np.array([[-inf, 1.0, 0.5], [2.0, -inf, -inf], [0.3, -0.2, -inf]], dtype=dtype)
    y_np = np.array([1, 0, 1])
    w_np = np.array([1.0, 2.0, 0.5], dtype=dtype)
    ref_x = torch.tensor(x_np, requires_grad=True)
    ref = F.cross_entropy(ref_x, torch.from_numpy(y_np), weight=torch.from_numpy(w_np), reduction=reduction)
    (ref_g,) = torch.autograd.grad(ref.sum(), ref_x)
    assert np.all(np.isfinite(ref_g.numpy()))
    if as_torch:
        x = torch.tensor(x_np, requires_grad=True)
        y, w = torch.from_numpy(y_np), torch.from_numpy(w_np)
    else:
        x, y, w = x_np, y_np, w_np
    loss = softmax_cross_entropy(x, y, weight=w, reduction=reduction)
    tol.assert_close(loss, ref, dtype)
    if as_torch:
        (g,) = torch.autograd.grad(loss.sum(), x)
        tol.assert_close(g, ref_g, dtype)
        x = x.detach()
    loss, d = softmax_cross_entropy_with_grad(x, y, weight=w, reduction=reduction)
    tol.assert_close(loss, ref, dtype)
    tol.assert_close(d, ref_g, dtype)
    assert np.all(as_numpy(d)[np.isneginf(x_np)] == 0)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@requires_torch
def test_neg_inf_logits_other_index_losses(dtype, tol):
    """−inf on non-target classes: focal, poly-1 and z-loss stay finite too (index targets, no smoothing)."""
    x_np = np.array([[-np.inf, 1.0, 0.5], [2.0, -np.inf, -np.inf]], dtype=dtype)
    y = torch.tensor([1, 0])
    for fn, kwargs in (
        (softmax_cross_entropy, {"z_loss": 1e-3}),
        (softmax_cross_entropy, {"sample_weight": torch.tensor([0.5, 2.0], dtype=torch.from_numpy(x_np).dtype)}),
        (softmax_focal_loss, {"gamma": 2.0}),
        (poly1_cross_entropy, {"epsilon": 1.0}),
    ):
        x = torch.tensor(x_np, requires_grad=True)
        loss = fn(x, y, **kwargs)
        assert _finite(loss), fn.__name__
        (g,) = torch.autograd.grad(loss, x)
        assert _finite(g), fn.__name__
        assert np.all(g.numpy()[np.isneginf(x_np)] == 0)


ALL_IGNORED_CALLS = [
    ("ce", softmax_cross_entropy, {}),
    (
        "ce-weighted-smoothed-zloss",
        softmax_cross_entropy,
        {"weight": [1.0, 2.0, 3.0], "label_smoothing": 0.1, "z_loss": 1e-2, "softcap": 5.0},
    ),
    ("ce-sample-weight", softmax_cross_entropy, {"sample_weight": [1.0, 2.0, 3.0, 4.0]}),
    ("nll", nll_loss, {}),
    ("nll-weighted", nll_loss, {"weight": [1.0, 2.0, 3.0]}),
    ("focal", softmax_focal_loss, {"gamma": 2.0, "alpha": 0.25}),
    ("poly1", poly1_cross_entropy, {"epsilon": 1.0, "label_smoothing": 0.1}),
]


@pytest.mark.parametrize("as_torch", AS_TORCH)
@pytest.mark.parametrize(("name", "fn", "kwargs"), ALL_IGNORED_CALLS, ids=[c[0] for c in ALL_IGNORED_CALLS])
@requires_torch
def test_all_ignored_mean_is_zero_with_zero_grad(name, fn, kwargs, as_torch):
    """Every target ignored with reduction="mean": 0 and a zero gradient (PyTorch gives NaN; documented)."""
    rng = np.random.default_rng(3)
    x_np = rng.normal(size=(4, 3))
    x_np -= np.log(np.exp(x_np).sum(axis=1, keepdims=True))  # log-probabilities: valid for nll_loss too
    y_np = np.full(4, -100)
    conv = (lambda a: torch.tensor(a, dtype=torch.float64)) if as_torch else (lambda a: np.asarray(a, dtype=float))
    kw = {k: conv(v) if isinstance(v, list) else v for k, v in kwargs.items()}
    x = torch.tensor(x_np, requires_grad=True) if as_torch else x_np
    y = torch.from_numpy(y_np) if as_torch else y_np
    for reduction in ("mean", "sum"):
        loss = fn(x, y, reduction=reduction, **kw)
        assert float(as_numpy(loss)) == 0.0, (name, reduction, loss)
        if as_torch:
            (g,) = torch.autograd.grad(loss, x)
            assert np.all(g.numpy() == 0), (name, reduction)
    none = fn(x, y, reduction="none", **kw)
    assert np.all(as_numpy(none) == 0)
    if fn is softmax_cross_entropy:
        xd = x.detach() if as_torch else x
        loss, d = softmax_cross_entropy_with_grad(xd, y, **kw)
        assert float(loss) == 0.0
        assert np.all(as_numpy(d) == 0)
        assert d.shape == xd.shape


@requires_torch
def test_all_ignored_mean_k_dimensional():
    x = torch.randn(2, 3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0), requires_grad=True)
    y = torch.full((2, 4), 5)
    loss = softmax_cross_entropy(x, y, axis=1, ignore_index=5)
    assert float(loss.detach()) == 0.0
    (g,) = torch.autograd.grad(loss, x)
    assert torch.all(g == 0)


def test_zero_sample_weights_mean_is_zero():
    """An empty denominator from all-zero sample weights is also 0, not NaN."""
    x = np.random.default_rng(4).normal(size=(3, 4))
    y = np.array([0, 1, 2])
    loss, d = softmax_cross_entropy_with_grad(x, y, sample_weight=np.zeros(3))
    assert float(loss) == 0.0
    assert np.all(d == 0)


@pytest.mark.parametrize("z_loss", [0.0, 0.1])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
def test_ignored_samples_give_zero_in_none(label_smoothing, z_loss):
    rng = np.random.default_rng(5)
    x = rng.normal(size=(5, 4))
    y = np.array([0, -100, 3, -100, 1])
    loss = softmax_cross_entropy(x, y, reduction="none", label_smoothing=label_smoothing, z_loss=z_loss)
    assert loss.shape == (5,)
    assert loss[1] == 0
    assert loss[3] == 0
    assert np.all(loss[[0, 2, 4]] > 0)
    _, d = softmax_cross_entropy_with_grad(x, y, reduction="none", label_smoothing=label_smoothing, z_loss=z_loss)
    assert np.all(d[[1, 3]] == 0)


@pytest.mark.parametrize("fn", [softmax_cross_entropy, softmax_focal_loss, poly1_cross_entropy, nll_loss])
def test_reduction_none_shape_is_batch_shape(fn):
    rng = np.random.default_rng(6)
    x = rng.normal(size=(2, 5, 3, 4))
    if fn is nll_loss:
        x = x - np.log(np.exp(x).sum(axis=1, keepdims=True))
    y = rng.integers(0, 5, size=(2, 3, 4))
    assert fn(x, y, axis=1, reduction="none").shape == (2, 3, 4)
    assert np.asarray(fn(x, y, axis=1)).shape == ()


@pytest.mark.parametrize("fn", [sigmoid_cross_entropy, sigmoid_focal_loss, binary_cross_entropy])
def test_sigmoid_reduction_none_is_elementwise(fn):
    rng = np.random.default_rng(8)
    x = rng.uniform(0.05, 0.95, size=(3, 4, 2)) if fn is binary_cross_entropy else rng.normal(size=(3, 4, 2))
    y = rng.random((3, 4, 2))
    assert fn(x, y, reduction="none").shape == (3, 4, 2)
    assert np.asarray(fn(x, y)).shape == ()


# --------------------------------------------------------------------------------------------
# half precision
# --------------------------------------------------------------------------------------------

HALF = torch_params("float16", "bfloat16")


def _half_cases():
    return [
        ("ce", softmax_cross_entropy, {"label_smoothing": 0.1}, "index"),
        ("ce-prob", softmax_cross_entropy, {"z_loss": 1e-3}, "prob"),
        ("ce-softcap", softmax_cross_entropy, {"softcap": 3.0}, "index"),
        ("focal", softmax_focal_loss, {"gamma": 2.0}, "index"),
        ("poly1", poly1_cross_entropy, {"epsilon": 1.0}, "index"),
        ("sigmoid", sigmoid_cross_entropy, {}, "binary"),
        ("sigmoid-focal", sigmoid_focal_loss, {}, "binary"),
    ]


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("half", HALF, ids=str)
@pytest.mark.parametrize(("name", "fn", "kwargs", "kind"), _half_cases(), ids=[c[0] for c in _half_cases()])
def test_half_precision_torch(name, fn, kwargs, kind, half, reduction, tol):
    """float16/bfloat16 in → that dtype out, close to the float32 computation on the same (rounded) inputs."""
    gen = torch.Generator().manual_seed(11)
    x = (2 * torch.randn(16, 10, generator=gen)).to(half)
    if kind == "index":
        y = torch.randint(0, 10, (16,), generator=gen)
        y32 = y
    elif kind == "prob":
        y32 = torch.softmax(torch.randn(16, 10, generator=gen), dim=-1)
        y = y32.to(half)
        y32 = y.float()
    else:
        y = torch.rand(16, 10, generator=gen).to(half)
        y32 = y.float()
    xh = x.clone().requires_grad_()
    out = fn(xh, y, reduction=reduction, **kwargs)
    assert isinstance(out, torch.Tensor)
    assert out.dtype == half
    x32 = x.float().requires_grad_()
    ref = fn(x32, y32, reduction=reduction, **kwargs)
    assert ref.dtype == torch.float32
    tol.assert_close(out, ref.detach().to(half).float(), half, err_msg=name)
    (g,) = torch.autograd.grad(out.float().sum(), xh)
    (g32,) = torch.autograd.grad(ref.sum(), x32)
    assert g.dtype == half
    tol.assert_close(g, g32.to(half).float(), half, err_msg=f"{name}: grad")


@pytest.mark.parametrize("half", HALF, ids=str)
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_half_precision_with_grad(half, reduction, tol):
    gen = torch.Generator().manual_seed(12)
    x = (2 * torch.randn(16, 10, generator=gen)).to(half)
    y = torch.randint(0, 10, (16,), generator=gen)
    loss, d = softmax_cross_entropy_with_grad(x, y, reduction=reduction, z_loss=1e-3)
    loss32, d32 = softmax_cross_entropy_with_grad(x.float(), y, reduction=reduction, z_loss=1e-3)
    assert loss.dtype == half
    assert d.dtype == half
    tol.assert_close(loss, loss32.to(half).float(), half)
    tol.assert_close(d, d32.to(half).float(), half)
    yb = torch.rand(16, 10, generator=gen).to(half)
    loss, d = sigmoid_cross_entropy_with_grad(x, yb, reduction=reduction)
    loss32, d32 = sigmoid_cross_entropy_with_grad(x.float(), yb.float(), reduction=reduction)
    assert loss.dtype == half
    assert d.dtype == half
    tol.assert_close(loss, loss32.to(half).float(), half)
    tol.assert_close(d, d32.to(half).float(), half)


@requires_torch
def test_half_precision_large_batch_accumulates_in_float32(tol):
    """A sum over many float16 samples must not accumulate in float16 (which would lose ~1e-2 relative)."""
    gen = torch.Generator().manual_seed(13)
    x = torch.randn(10000, 8, generator=gen).to(torch.float16)
    y = torch.randint(0, 8, (10000,), generator=gen)
    for reduction in ("mean", "sum"):
        out = softmax_cross_entropy(x, y, reduction=reduction)
        ref = F.cross_entropy(x.double(), y, reduction=reduction)
        assert out.dtype == torch.float16
        tol.assert_close(out, ref.to(torch.float16).float(), torch.float16, err_msg=reduction)


def test_half_precision_numpy_float16(tol):
    rng = np.random.default_rng(14)
    x = rng.normal(scale=2, size=(12, 6)).astype(np.float16)
    y = rng.integers(0, 6, size=12)
    out = softmax_cross_entropy(x, y)
    assert np.asarray(out).dtype == np.float16
    tol.assert_close(out, np.float16(softmax_cross_entropy(x.astype(np.float32), y)), np.float16)
    loss, d = softmax_cross_entropy_with_grad(x, y)
    assert d.dtype == np.float16
    assert np.asarray(loss).dtype == np.float16


# --------------------------------------------------------------------------------------------
# warning for probabilities passed as logits
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fn", [softmax_cross_entropy, softmax_cross_entropy_with_grad])
@requires_torch
def test_probabilities_as_logits_warns(fn):
    rng = np.random.default_rng(15)
    probs = np.exp(rng.normal(size=(10, 5)))
    probs /= probs.sum(axis=1, keepdims=True)
    y = rng.integers(0, 5, size=10)
    with pytest.warns(crossentropy.ProbabilitiesAsLogitsWarning):
        fn(probs, y)
    with pytest.warns(crossentropy.ProbabilitiesAsLogitsWarning):
        fn(torch.from_numpy(probs), torch.from_numpy(y))


def test_probabilities_as_logits_warns_class_axis_first():
    """The check follows ``axis``: probabilities along axis 0."""
    rng = np.random.default_rng(16)
    probs = np.exp(rng.normal(size=(5, 10)))
    probs /= probs.sum(axis=0, keepdims=True)
    with pytest.warns(crossentropy.ProbabilitiesAsLogitsWarning):
        softmax_cross_entropy(probs, rng.integers(0, 5, size=10), axis=0)


def test_logits_do_not_warn():
    rng = np.random.default_rng(17)
    x = rng.normal(size=(10, 5))
    y = rng.integers(0, 5, size=10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        softmax_cross_entropy(x, y)
        softmax_cross_entropy_with_grad(x, y)
        # log-probabilities are fine logits (≤ 0)
        softmax_cross_entropy(x - np.log(np.exp(x).sum(axis=1, keepdims=True)), y)


@pytest.mark.parametrize("fn", [softmax_cross_entropy_with_grad, sigmoid_cross_entropy_with_grad])
@requires_torch
def test_with_grad_leaves_a_leaf_tensor_alone(fn):
    """No gradient is written into the caller's tensor: values unchanged and ``.grad`` still None."""
    gen = torch.Generator().manual_seed(19)
    x = torch.randn(6, 4, dtype=torch.float64, generator=gen, requires_grad=True)
    before = x.detach().clone()
    y = torch.randint(0, 4, (6,), generator=gen) if fn is softmax_cross_entropy_with_grad else torch.rand(6, 4)
    y = y if y.dtype == torch.int64 else y.double()
    _, d = fn(x, y)
    assert x.grad is None
    assert torch.equal(x.detach(), before)
    assert d.shape == x.shape
    assert d.data_ptr() != x.data_ptr()
