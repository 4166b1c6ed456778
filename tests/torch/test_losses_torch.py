"""Agreement of :mod:`crossentropy.losses` with PyTorch, in value and in gradient.

Every loss is checked three ways on the same data:

* NumPy input: the returned value (same kind and dtype as the input);
* torch input: the returned value, and the gradient that torch autograd propagates through it
  (a vector-Jacobian product with a random cotangent for ``reduction="none"``);
* the fused ``*_with_grad`` entry points (where they exist): loss and ``dlogits``, which is the
  gradient of the loss (of the sum of the per-sample losses for ``reduction="none"``).

The reference is PyTorch's own function wherever PyTorch has the feature
(``F.cross_entropy``, ``F.binary_cross_entropy_with_logits``, ``F.binary_cross_entropy``,
``F.nll_loss``). For the extras PyTorch lacks (z-loss, soft-capping, sample weights, focal and
poly-1 losses), the formula of the specification is written out below with torch ops and
differentiated by torch autograd; those written-out references are themselves checked against
PyTorch on the options PyTorch has.
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F

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

REDUCTIONS = ["mean", "sum", "none"]
DTYPES = [np.float64, np.float32]

# name -> (logits shape, class axis). PyTorch layouts: (N, C) and (N, C, d1, ...), class dim 1.
LAYOUTS = {
    "2d": ((7, 5), 1),
    "2d-axis-1": ((6, 4), -1),
    "3d": ((3, 4, 5), 1),
    "4d": ((2, 3, 3, 2), 1),
}


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------


def make_rng(*params) -> np.random.Generator:
    """A generator seeded from the test parameters: every case is reproducible on its own."""
    return np.random.default_rng(zlib.crc32(repr(params).encode()))


def batch_shape(shape, axis):
    axis = axis % len(shape)
    return tuple(n for i, n in enumerate(shape) if i != axis)


def make_logits(rng, shape, dtype):
    return rng.normal(scale=2.0, size=shape).astype(dtype)


def make_index_targets(rng, shape, axis, *, ignore_index=-100, ignore=True):
    """Class indices of the batch shape; about a quarter set to ``ignore_index`` (never all)."""
    num_classes = shape[axis]
    bshape = batch_shape(shape, axis)
    y = rng.integers(0, num_classes, size=bshape).astype(np.int64)
    if ignore:
        mask = rng.random(bshape) < 0.25
        mask.flat[0] = False
        if mask.size > 2:
            mask.flat[-1] = True
        y[mask] = ignore_index
    return y


def make_prob_targets(rng, shape, axis, dtype):
    """Soft targets of the logits' shape, rows summing to 1 along ``axis``."""
    t = rng.normal(size=shape)
    t = np.exp(t - t.max(axis=axis, keepdims=True))
    return (t / t.sum(axis=axis, keepdims=True)).astype(dtype)


def make_targets(rng, kind, shape, axis, dtype, *, ignore_index=-100):
    if kind == "index":
        return make_index_targets(rng, shape, axis, ignore_index=ignore_index)
    return make_prob_targets(rng, shape, axis, dtype)


def make_sample_weight(rng, bshape, dtype):
    s = rng.uniform(0.0, 2.0, size=bshape)
    s.flat[0] = 0.0  # a zero weight is legal and must not break anything
    if s.size > 1:
        s.flat[-1] = 1.5
    return s.astype(dtype)


def as_torch(a):
    return None if a is None else torch.from_numpy(np.array(a))


# --------------------------------------------------------------------------------------------
# written-out references (torch ops, differentiable)
# --------------------------------------------------------------------------------------------


def _reduce(loss, denominator, reduction):
    if reduction == "none":
        return loss
    total = loss.sum()
    if reduction == "sum":
        return total
    return total / denominator if bool(denominator != 0) else total * 0.0


def _expand_leading(s, like):
    """Broadcast a leading-dims weight ``s`` over the trailing dims of ``like``."""
    return s.reshape(tuple(s.shape) + (1,) * (like.ndim - s.ndim)).expand_as(like)


def _reduce_elementwise(loss, sample_weight, reduction):
    """Element losses with an optional leading-dims sample weight: mean = Σ s·l / Σ s."""
    if sample_weight is None:
        if reduction == "none":
            return loss
        return loss.sum() if reduction == "sum" else loss.mean()
    s = _expand_leading(sample_weight, loss)
    return _reduce(s * loss, s.sum(), reduction)


def ref_softmax_ce(
    x,
    y,
    weight=None,
    sample_weight=None,
    *,
    axis=-1,
    ignore_index=-100,
    label_smoothing=0.0,
    z_loss=0.0,
    softcap=None,
    reduction="mean",
):
    """Spec item 1 written out: PyTorch's weighted, smoothed CE plus z-loss, softcap, sample weights."""
    x = torch.movedim(x, axis, -1)
    if softcap is not None:
        x = softcap * torch.tanh(x / softcap)
    num_classes = x.shape[-1]
    logp = torch.log_softmax(x, dim=-1)
    lse = torch.logsumexp(x, dim=-1)
    w = weight if weight is not None else torch.ones(num_classes, dtype=x.dtype)
    s = sample_weight if sample_weight is not None else torch.ones(x.shape[:-1], dtype=x.dtype)
    eps = label_smoothing
    if y.dtype.is_floating_point:
        t = (1 - eps) * torch.movedim(y, axis, -1) + eps / num_classes
        ce = -(t * w * logp).sum(-1)
        loss = s * (ce + z_loss * lse**2)
        denominator = s.sum()
    else:
        valid = y != ignore_index
        yi = torch.where(valid, y, torch.zeros_like(y))
        wy = w[yi] * valid
        nll = -logp.gather(-1, yi.unsqueeze(-1)).squeeze(-1)
        smooth = -(logp * w).sum(-1) * valid
        ce = (1 - eps) * wy * nll + eps / num_classes * smooth
        loss = s * (ce + z_loss * wy * lse**2)
        denominator = (s * wy).sum()
    return _reduce(loss, denominator, reduction)


def ref_nll(lp, y, weight=None, sample_weight=None, *, axis=-1, ignore_index=-100, reduction="mean"):
    lp = torch.movedim(lp, axis, -1)
    w = weight if weight is not None else torch.ones(lp.shape[-1], dtype=lp.dtype)
    s = sample_weight if sample_weight is not None else torch.ones(lp.shape[:-1], dtype=lp.dtype)
    valid = y != ignore_index
    yi = torch.where(valid, y, torch.zeros_like(y))
    wy = w[yi] * valid
    loss = s * wy * -lp.gather(-1, yi.unsqueeze(-1)).squeeze(-1)
    return _reduce(loss, (s * wy).sum(), reduction)


def ref_softmax_focal(x, y, sample_weight=None, *, gamma, alpha, axis=-1, ignore_index=-100, reduction="mean"):
    """Spec item 7: −α_y (1−p_y)^γ log p_y; soft targets −Σ_c t_c α_c (1−p_c)^γ log p_c."""
    x = torch.movedim(x, axis, -1)
    num_classes = x.shape[-1]
    logp = torch.log_softmax(x, dim=-1)
    p = logp.exp()
    if alpha is None:
        a = torch.ones(num_classes, dtype=x.dtype)
    elif isinstance(alpha, float):
        a = torch.full((num_classes,), alpha, dtype=x.dtype)
    else:
        a = alpha
    s = sample_weight if sample_weight is not None else torch.ones(x.shape[:-1], dtype=x.dtype)
    if y.dtype.is_floating_point:
        t = torch.movedim(y, axis, -1)
        loss = -(t * a * (1 - p) ** gamma * logp).sum(-1)
        denominator = s.sum()
    else:
        valid = y != ignore_index
        yi = torch.where(valid, y, torch.zeros_like(y)).unsqueeze(-1)
        lp_y = logp.gather(-1, yi).squeeze(-1)
        p_y = p.gather(-1, yi).squeeze(-1)
        loss = -a[yi.squeeze(-1)] * (1 - p_y) ** gamma * lp_y * valid
        denominator = (s * valid).sum()
    return _reduce(s * loss, denominator, reduction)


def ref_poly1(
    x,
    y,
    weight=None,
    sample_weight=None,
    *,
    epsilon=1.0,
    axis=-1,
    ignore_index=-100,
    label_smoothing=0.0,
    reduction="mean",
):
    """Spec item 9 (optax's poly_loss_cross_entropy): CE + ε·Σ_c t_c (1 − p_c), poly term weighted like the sample."""
    ce = ref_softmax_ce(
        x,
        y,
        weight,
        sample_weight,
        axis=axis,
        ignore_index=ignore_index,
        label_smoothing=label_smoothing,
        reduction="none",
    )
    xl = torch.movedim(x, axis, -1)
    num_classes = xl.shape[-1]
    p = torch.softmax(xl, dim=-1)
    w = weight if weight is not None else torch.ones(num_classes, dtype=x.dtype)
    s = sample_weight if sample_weight is not None else torch.ones(xl.shape[:-1], dtype=x.dtype)
    eps = label_smoothing
    if y.dtype.is_floating_point:
        labels = (1 - eps) * torch.movedim(y, axis, -1) + eps / num_classes
        row = s
    else:
        valid = y != ignore_index
        yi = torch.where(valid, y, torch.zeros_like(y))
        labels = (1 - eps) * F.one_hot(yi, num_classes).to(x.dtype) + eps / num_classes
        row = s * w[yi] * valid
    one_minus_pt = (labels * (1 - p)).sum(-1)
    return _reduce(ce + epsilon * row * one_minus_pt, row.sum(), reduction)


def ref_sigmoid_ce(x, y, weight=None, pos_weight=None, sample_weight=None, *, label_smoothing=0.0, reduction="mean"):
    y = y.to(x.dtype)
    if label_smoothing:
        y = y * (1 - label_smoothing) + label_smoothing / 2
    loss = F.binary_cross_entropy_with_logits(x, y, weight=weight, pos_weight=pos_weight, reduction="none")
    return _reduce_elementwise(loss, sample_weight, reduction)


def ref_sigmoid_focal(x, y, alpha_t=None, sample_weight=None, *, gamma, alpha, reduction="mean"):
    """torchvision.ops.sigmoid_focal_loss written out; ``alpha_t`` carries a per-class alpha array."""
    y = y.to(x.dtype)
    p = torch.sigmoid(x)
    ce = F.binary_cross_entropy_with_logits(x, y, reduction="none")
    p_t = p * y + (1 - p) * (1 - y)
    loss = ce * (1 - p_t) ** gamma
    a = alpha_t if alpha_t is not None else alpha
    if a is not None:
        loss = (a * y + (1 - a) * (1 - y)) * loss
    return _reduce_elementwise(loss, sample_weight, reduction)


def ref_bce(p, y, weight=None, sample_weight=None, *, reduction="mean"):
    loss = F.binary_cross_entropy(p, y.to(p.dtype), weight=weight, reduction="none")
    return _reduce_elementwise(loss, sample_weight, reduction)


# --------------------------------------------------------------------------------------------
# the three-way check
# --------------------------------------------------------------------------------------------


def check_agreement(ours, reference, x, y, *, arrays=None, options=None, ours_with_grad=None, tol, grad=True):
    """Compare ``ours`` (NumPy and torch inputs) and ``ours_with_grad`` with ``reference``.

    ``arrays`` are NumPy keyword arrays (weights) passed as the same kind as the logits;
    ``options`` are plain keyword options passed to ``ours`` only (the reference is a closure).
    """
    arrays = {k: v for k, v in (arrays or {}).items() if v is not None}
    options = options or {}
    dtype = x.dtype
    x_before = x.copy()
    y_before = np.array(y, copy=True)

    # reference value, VJP with a random cotangent, and gradient of the sum
    xr = torch.tensor(x, requires_grad=True)
    ref = reference(xr, as_torch(y), **{k: as_torch(v) for k, v in arrays.items()})
    if ref.ndim:
        cot = torch.from_numpy(np.random.default_rng(0).normal(size=tuple(ref.shape)).astype(dtype))
    else:
        cot = torch.ones((), dtype=ref.dtype)
    (ref_vjp,) = torch.autograd.grad(ref, xr, cot, retain_graph=True)
    (ref_grad,) = torch.autograd.grad(ref.sum(), xr)

    # NumPy input
    out = ours(x, y, **arrays, **options)
    tol.assert_same_kind(out, x)
    tol.assert_close(out, ref, dtype, err_msg="NumPy input: loss")

    # torch input, autograd through our function
    xt = torch.tensor(x, requires_grad=True)
    out_t = ours(xt, as_torch(y), **{k: as_torch(v) for k, v in arrays.items()}, **options)
    tol.assert_same_kind(out_t, xt)
    tol.assert_close(out_t, ref, dtype, err_msg="torch input: loss")
    if grad:
        (vjp,) = torch.autograd.grad(out_t, xt, cot)
        tol.assert_close(vjp, ref_vjp, dtype, err_msg="torch input: autograd")

    if ours_with_grad is not None:
        for kind, args in (
            ("NumPy", (x, y, arrays)),
            ("torch", (torch.tensor(x), as_torch(y), {k: as_torch(v) for k, v in arrays.items()})),
        ):
            xi, yi, ai = args
            xi_before = tol.to_numpy(xi).copy()
            loss, dlogits = ours_with_grad(xi, yi, **ai, **options)
            tol.assert_same_kind(loss, xi)
            tol.assert_same_kind(dlogits, xi)
            tol.assert_close(loss, ref, dtype, err_msg=f"{kind} *_with_grad: loss")
            tol.assert_close(dlogits, ref_grad, dtype, err_msg=f"{kind} *_with_grad: dlogits")
            np.testing.assert_array_equal(tol.to_numpy(xi), xi_before, err_msg=f"{kind} input modified")

    np.testing.assert_array_equal(x, x_before, err_msg="logits modified")
    np.testing.assert_array_equal(np.asarray(y), y_before, err_msg="targets modified")


# --------------------------------------------------------------------------------------------
# softmax cross-entropy
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("label_smoothing", [0.0, 0.15])
@pytest.mark.parametrize("use_weight", [False, True])
@pytest.mark.parametrize("kind", ["index", "prob"])
@pytest.mark.parametrize("layout", ["2d", "3d", "4d"])
def test_softmax_ce_matches_torch(layout, kind, use_weight, label_smoothing, reduction, dtype, tol):
    rng = make_rng("softmax", layout, kind, use_weight, label_smoothing, reduction, dtype)
    shape, axis = LAYOUTS[layout]
    x = make_logits(rng, shape, dtype)
    y = make_targets(rng, kind, shape, axis, dtype)
    weight = rng.uniform(0.2, 2.0, size=shape[axis]).astype(dtype) if use_weight else None
    options = {"axis": axis, "label_smoothing": label_smoothing, "reduction": reduction}

    def reference(xt, yt, weight=None):
        return F.cross_entropy(xt, yt, weight=weight, reduction=reduction, label_smoothing=label_smoothing)

    check_agreement(
        softmax_cross_entropy,
        reference,
        x,
        y,
        arrays={"weight": weight},
        options=options,
        ours_with_grad=softmax_cross_entropy_with_grad,
        tol=tol,
    )


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("ignore_index", [0, 2, -1, -100])
def test_softmax_ce_ignore_index_matches_torch(ignore_index, reduction, tol):
    """A custom ``ignore_index``, including a valid class, as PyTorch."""
    rng = make_rng("ignore", ignore_index, reduction)
    shape, axis = (9, 4), 1
    x = make_logits(rng, shape, np.float64)
    y = make_index_targets(rng, shape, axis, ignore_index=ignore_index)
    weight = rng.uniform(0.2, 2.0, size=4)
    options = {"axis": axis, "ignore_index": ignore_index, "label_smoothing": 0.1, "reduction": reduction}

    def reference(xt, yt, weight=None):
        return F.cross_entropy(
            xt, yt, weight=weight, ignore_index=ignore_index, reduction=reduction, label_smoothing=0.1
        )

    check_agreement(
        softmax_cross_entropy,
        reference,
        x,
        y,
        arrays={"weight": weight},
        options=options,
        ours_with_grad=softmax_cross_entropy_with_grad,
        tol=tol,
    )


@pytest.mark.parametrize("kind", ["index", "prob"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_ce_class_axis_last_matches_torch(kind, dtype, tol):
    """Class axis last (the core default) on a K-dimensional array: (N, d1, C), axis=-1."""
    rng = make_rng("axis-last", kind, dtype)
    shape = (3, 4, 5)
    x = make_logits(rng, shape, dtype)
    y = make_targets(rng, kind, shape, -1, dtype)

    def reference(xt, yt):
        yt = yt if kind == "index" else torch.movedim(yt, -1, 1)
        return F.cross_entropy(torch.movedim(xt, -1, 1), yt, reduction="sum", label_smoothing=0.05)

    options = {"reduction": "sum", "label_smoothing": 0.05}  # axis=-1 by default
    check_agreement(
        softmax_cross_entropy,
        reference,
        x,
        y,
        options=options,
        ours_with_grad=softmax_cross_entropy_with_grad,
        tol=tol,
    )


@pytest.mark.parametrize("kind", ["index", "prob"])
def test_softmax_ce_unbatched_matches_torch(kind, tol):
    """A single sample: logits (C,), target a 0-d index or a (C,) distribution, as PyTorch's unbatched input."""
    rng = make_rng("unbatched", kind)
    x = make_logits(rng, (6,), np.float64)
    if kind == "index":
        y = np.asarray(rng.integers(0, 6), dtype=np.int64)
    else:
        y = make_prob_targets(rng, (6,), 0, np.float64)

    def reference(xt, yt):
        return F.cross_entropy(xt, yt, label_smoothing=0.1)

    check_agreement(
        softmax_cross_entropy,
        reference,
        x,
        y,
        options={"label_smoothing": 0.1},
        ours_with_grad=softmax_cross_entropy_with_grad,
        tol=tol,
    )


def test_softmax_ce_int32_targets(tol):
    """Integer class indices of any integer dtype give the int64 result."""
    rng = make_rng("int32")
    x = make_logits(rng, (8, 5), np.float64)
    y = make_index_targets(rng, (8, 5), 1)
    expected = softmax_cross_entropy(x, y, reduction="none")
    for dt in (np.int32, np.int16, np.uint8):
        yy = y.copy()
        yy[yy == -100] = 200 if dt == np.uint8 else -100
        got = softmax_cross_entropy(x, yy.astype(dt), reduction="none", ignore_index=200 if dt == np.uint8 else -100)
        tol.assert_close(got, expected, np.float64, err_msg=str(dt))


# Reference check: the written-out formula equals PyTorch where PyTorch has the option.
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("kind", ["index", "prob"])
@pytest.mark.parametrize("layout", ["2d", "3d"])
def test_oracle_softmax_ce_matches_torch(layout, kind, reduction, tol):
    rng = make_rng("oracle", layout, kind, reduction)
    shape, axis = LAYOUTS[layout]
    x = torch.from_numpy(make_logits(rng, shape, np.float64))
    y = torch.from_numpy(make_targets(rng, kind, shape, axis, np.float64))
    w = torch.from_numpy(rng.uniform(0.2, 2.0, size=shape[axis]))
    ours = ref_softmax_ce(x, y, w, axis=axis, label_smoothing=0.2, reduction=reduction)
    theirs = F.cross_entropy(x, y, weight=w, label_smoothing=0.2, reduction=reduction)
    tol.assert_close(ours, theirs, np.float64)
    lp = torch.log_softmax(x, dim=axis)
    if kind == "index":
        tol.assert_close(
            ref_nll(lp, y, w, axis=axis, reduction=reduction),
            F.nll_loss(lp, y, weight=w, reduction=reduction),
            np.float64,
        )
        # gamma = 0, alpha = None focal and epsilon = 0 poly-1 are the plain CE
        tol.assert_close(
            ref_softmax_focal(x, y, gamma=0.0, alpha=None, axis=axis, reduction=reduction),
            F.cross_entropy(x, y, reduction=reduction),
            np.float64,
        )
    tol.assert_close(
        ref_poly1(x, y, w, epsilon=0.0, axis=axis, label_smoothing=0.2, reduction=reduction), theirs, np.float64
    )


# Extras: z-loss, softcap, sample_weight, alone and together, with and without PyTorch's options.
EXTRAS = {
    "z_loss": {"z_loss": 0.05},
    "softcap": {"softcap": 2.5},
    "sample_weight": {"sample_weight": True},
    "all": {"z_loss": 0.05, "softcap": 2.5, "sample_weight": True},
}


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("torch_options", [False, True], ids=["plain", "weight+smoothing"])
@pytest.mark.parametrize(
    ("extras", "dtype"), [(e, np.float64) for e in EXTRAS] + [("all", np.float32)], ids=[*EXTRAS, "all-float32"]
)
@pytest.mark.parametrize("kind", ["index", "prob"])
@pytest.mark.parametrize("layout", ["2d", "3d"])
def test_softmax_ce_extras_match_reference(layout, kind, extras, torch_options, reduction, dtype, tol):
    rng = make_rng("extras", layout, kind, extras, torch_options, reduction, dtype)
    shape, axis = LAYOUTS[layout]
    x = make_logits(rng, shape, dtype)
    y = make_targets(rng, kind, shape, axis, dtype)
    extra = dict(EXTRAS[extras])
    sample_weight = make_sample_weight(rng, batch_shape(shape, axis), dtype) if extra.pop("sample_weight", 0) else None
    weight = rng.uniform(0.2, 2.0, size=shape[axis]).astype(dtype) if torch_options else None
    label_smoothing = 0.1 if torch_options else 0.0
    options = {"axis": axis, "label_smoothing": label_smoothing, "reduction": reduction, **extra}

    def reference(xt, yt, weight=None, sample_weight=None):
        return ref_softmax_ce(
            xt, yt, weight, sample_weight, axis=axis, label_smoothing=label_smoothing, reduction=reduction, **extra
        )

    check_agreement(
        softmax_cross_entropy,
        reference,
        x,
        y,
        arrays={"weight": weight, "sample_weight": sample_weight},
        options=options,
        ours_with_grad=softmax_cross_entropy_with_grad,
        tol=tol,
    )


def test_softmax_ce_z_loss_hand_value(tol):
    """z-loss adds z·LSE² per sample: a two-sample hand computation."""
    x = np.array([[1.0, 2.0, 3.0], [0.5, -1.0, 0.0]])
    y = np.array([2, 0])
    lse = np.log(np.exp(x).sum(axis=1))
    ce = lse - x[[0, 1], y]
    z = 0.01
    expected = np.mean(ce + z * lse**2)
    tol.assert_close(softmax_cross_entropy(x, y, z_loss=z), expected, np.float64)


def test_softmax_ce_softcap_hand_value(tol):
    """softcap replaces the logits by c·tanh(x/c) before the softmax, z-loss included."""
    x = np.array([[10.0, -3.0, 0.5]])
    y = np.array([1])
    c = 4.0
    capped = c * np.tanh(x / c)
    lse = np.log(np.exp(capped).sum())
    expected = lse - capped[0, 1] + 0.1 * lse**2
    tol.assert_close(softmax_cross_entropy(x, y, softcap=c, z_loss=0.1), expected, np.float64)


def test_softmax_ce_sample_weight_denominator(tol):
    """mean = Σ s_n w_{y_n} l_n / Σ s_n w_{y_n} over non-ignored samples (index targets)."""
    x = np.array([[0.3, -0.2, 1.0], [2.0, 0.0, -1.0], [0.1, 0.2, 0.3], [1.0, 1.0, -2.0]])
    y = np.array([0, 2, -100, 1])
    w = np.array([0.5, 2.0, 1.5])
    s = np.array([1.0, 3.0, 7.0, 0.5])
    logp = x - np.log(np.exp(x).sum(axis=1, keepdims=True))
    keep = y != -100
    n = np.arange(4)[keep]
    num = np.sum(s[keep] * w[y[keep]] * -logp[n, y[keep]])
    den = np.sum(s[keep] * w[y[keep]])
    tol.assert_close(softmax_cross_entropy(x, y, weight=w, sample_weight=s), num / den, np.float64)
    # probability targets: denominator Σ s_n, class weights not in it
    t = np.exp(logp[[1, 0, 3, 2]])
    num = np.sum(s * -(t * w * logp).sum(axis=1))
    tol.assert_close(softmax_cross_entropy(x, t, weight=w, sample_weight=s), num / s.sum(), np.float64)


# --------------------------------------------------------------------------------------------
# nll_loss
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("use_weight", [False, True])
@pytest.mark.parametrize("layout", ["2d", "3d", "4d"])
def test_nll_loss_matches_torch(layout, use_weight, reduction, dtype, tol):
    rng = make_rng("nll", layout, use_weight, reduction, dtype)
    shape, axis = LAYOUTS[layout]
    x = make_logits(rng, shape, dtype)
    lp = (x - np.log(np.exp(x).sum(axis=axis, keepdims=True))).astype(dtype)
    y = make_index_targets(rng, shape, axis)
    weight = rng.uniform(0.2, 2.0, size=shape[axis]).astype(dtype) if use_weight else None

    def reference(lpt, yt, weight=None):
        return F.nll_loss(lpt, yt, weight=weight, reduction=reduction)

    check_agreement(
        nll_loss, reference, lp, y, arrays={"weight": weight}, options={"axis": axis, "reduction": reduction}, tol=tol
    )


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("ignore_index", [1, -100])
def test_nll_loss_sample_weight_and_ignore_index(ignore_index, reduction, tol):
    rng = make_rng("nll-sw", ignore_index, reduction)
    shape, axis = (3, 4, 5), 1
    x = make_logits(rng, shape, np.float64)
    lp = x - np.log(np.exp(x).sum(axis=axis, keepdims=True))
    y = make_index_targets(rng, shape, axis, ignore_index=ignore_index)
    weight = rng.uniform(0.2, 2.0, size=4)
    s = make_sample_weight(rng, batch_shape(shape, axis), np.float64)

    def reference(lpt, yt, weight=None, sample_weight=None):
        return ref_nll(lpt, yt, weight, sample_weight, axis=axis, ignore_index=ignore_index, reduction=reduction)

    check_agreement(
        nll_loss,
        reference,
        lp,
        y,
        arrays={"weight": weight, "sample_weight": s},
        options={"axis": axis, "ignore_index": ignore_index, "reduction": reduction},
        tol=tol,
    )


# --------------------------------------------------------------------------------------------
# sigmoid cross-entropy
# --------------------------------------------------------------------------------------------

SIGMOID_SHAPES = {"1d": (9,), "2d": (6, 4), "3d": (3, 4, 5)}


def make_binary_weights(rng, shape, which, dtype):
    """Element weights that broadcast like PyTorch: 'last' = (shape[-1],), 'general' = another broadcast."""
    if which is None:
        return None
    general = {1: lambda: shape, 2: lambda: (shape[0], 1), 3: lambda: (shape[1], 1)}
    wshape = shape[-1:] if which == "last" else general[len(shape)]()
    return rng.uniform(0.2, 2.0, size=wshape).astype(dtype)


def make_binary_targets(rng, shape, dtype, hard=False):
    if hard:
        return (rng.random(shape) < 0.4).astype(dtype)
    return rng.random(shape).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(
    ("weight", "use_pos_weight"),
    [(None, False), (None, True), ("last", True), ("general", False), ("general", True)],
)
@pytest.mark.parametrize("shape", list(SIGMOID_SHAPES))
def test_sigmoid_ce_matches_torch(shape, weight, use_pos_weight, reduction, dtype, tol):
    rng = make_rng("sigmoid", shape, weight, use_pos_weight, reduction, dtype)
    shape = SIGMOID_SHAPES[shape]
    x = make_logits(rng, shape, dtype)
    y = make_binary_targets(rng, shape, dtype)
    hard = rng.random(shape) < 0.4
    y[hard] = np.round(y[hard])  # a mix of soft and hard 0/1 targets
    w = make_binary_weights(rng, shape, weight, dtype)
    pos_weight = rng.uniform(0.5, 3.0, size=shape[-1:]).astype(dtype) if use_pos_weight else None

    def reference(xt, yt, weight=None, pos_weight=None):
        return F.binary_cross_entropy_with_logits(xt, yt, weight=weight, pos_weight=pos_weight, reduction=reduction)

    check_agreement(
        sigmoid_cross_entropy,
        reference,
        x,
        y,
        arrays={"weight": w, "pos_weight": pos_weight},
        options={"reduction": reduction},
        ours_with_grad=sigmoid_cross_entropy_with_grad,
        tol=tol,
    )


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(
    ("extras", "dtype"),
    [("smoothing", np.float64), ("sample_weight", np.float64), ("all", np.float64), ("all", np.float32)],
)
@pytest.mark.parametrize("shape", list(SIGMOID_SHAPES))
def test_sigmoid_ce_extras_match_reference(shape, extras, reduction, dtype, tol):
    rng = make_rng("sigmoid-extras", shape, extras, reduction, dtype)
    shape = SIGMOID_SHAPES[shape]
    x = make_logits(rng, shape, dtype)
    y = make_binary_targets(rng, shape, dtype, hard=extras == "smoothing")
    label_smoothing = 0.2 if extras in ("smoothing", "all") else 0.0
    s = make_sample_weight(rng, shape[:1], dtype) if extras in ("sample_weight", "all") else None
    w = make_binary_weights(rng, shape, "last", dtype) if extras == "all" else None
    pos_weight = rng.uniform(0.5, 3.0, size=shape[-1:]).astype(dtype) if extras == "all" else None

    def reference(xt, yt, weight=None, pos_weight=None, sample_weight=None):
        return ref_sigmoid_ce(
            xt, yt, weight, pos_weight, sample_weight, label_smoothing=label_smoothing, reduction=reduction
        )

    check_agreement(
        sigmoid_cross_entropy,
        reference,
        x,
        y,
        arrays={"weight": w, "pos_weight": pos_weight, "sample_weight": s},
        options={"label_smoothing": label_smoothing, "reduction": reduction},
        ours_with_grad=sigmoid_cross_entropy_with_grad,
        tol=tol,
    )


@pytest.mark.parametrize("target_dtype", [np.int64, np.int32, np.bool_])
def test_sigmoid_ce_integer_and_bool_targets(target_dtype, tol):
    rng = make_rng("sigmoid-int", target_dtype)
    x = make_logits(rng, (5, 3), np.float64)
    y = rng.random((5, 3)) < 0.5
    expected = sigmoid_cross_entropy(x, y.astype(np.float64), reduction="none")
    got = sigmoid_cross_entropy(x, y.astype(target_dtype), reduction="none")
    tol.assert_close(got, expected, np.float64)
    got_t = sigmoid_cross_entropy(torch.from_numpy(x), torch.from_numpy(y.astype(target_dtype)), reduction="none")
    tol.assert_close(got_t, expected, np.float64)


def test_sigmoid_ce_equals_bce_on_sigmoid(tol):
    """Consistency between variants: sigmoid CE on logits = BCE on σ(logits) for moderate logits."""
    rng = make_rng("sig-bce")
    x = make_logits(rng, (6, 3), np.float64)
    y = rng.random((6, 3))
    tol.assert_close(
        sigmoid_cross_entropy(x, y, reduction="none"),
        binary_cross_entropy(1 / (1 + np.exp(-x)), y, reduction="none"),
        np.float64,
    )


# --------------------------------------------------------------------------------------------
# binary cross-entropy on probabilities
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(
    ("weight", "dtype"), [(None, np.float64), ("last", np.float64), ("general", np.float64), ("general", np.float32)]
)
@pytest.mark.parametrize("shape", list(SIGMOID_SHAPES))
def test_binary_cross_entropy_matches_torch(shape, weight, reduction, dtype, tol):
    rng = make_rng("bce", shape, weight, reduction, dtype)
    shape = SIGMOID_SHAPES[shape]
    p = rng.uniform(0.02, 0.98, size=shape).astype(dtype)
    y = make_binary_targets(rng, shape, dtype)
    w = make_binary_weights(rng, shape, weight, dtype)

    def reference(pt, yt, weight=None):
        return F.binary_cross_entropy(pt, yt, weight=weight, reduction=reduction)

    check_agreement(
        binary_cross_entropy, reference, p, y, arrays={"weight": w}, options={"reduction": reduction}, tol=tol
    )


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_binary_cross_entropy_sample_weight(reduction, tol):
    rng = make_rng("bce-sw", reduction)
    p = rng.uniform(0.02, 0.98, size=(6, 3))
    y = make_binary_targets(rng, (6, 3), np.float64)
    s = make_sample_weight(rng, (6,), np.float64)

    def reference(pt, yt, sample_weight=None):
        return ref_bce(pt, yt, None, sample_weight, reduction=reduction)

    check_agreement(
        binary_cross_entropy, reference, p, y, arrays={"sample_weight": s}, options={"reduction": reduction}, tol=tol
    )


@pytest.mark.parametrize("dtype", DTYPES)
def test_binary_cross_entropy_saturated_probs_match_torch(dtype, tol):
    """Probabilities of exactly 0 and 1: log clamped at −100 like PyTorch, loss 100 when wrong."""
    p = np.array([0.0, 1.0, 0.0, 1.0, 0.5], dtype=dtype)
    y = np.array([1.0, 0.0, 0.0, 1.0, 1.0], dtype=dtype)
    got = binary_cross_entropy(p, y, reduction="none")
    expected = F.binary_cross_entropy(torch.from_numpy(p), torch.from_numpy(y), reduction="none")
    tol.assert_close(got, expected, dtype)
    tol.assert_close(got[:4], np.array([100.0, 100.0, 0.0, 0.0]), dtype)
    assert np.isfinite(tol.to_numpy(binary_cross_entropy(p, y))).all()


# --------------------------------------------------------------------------------------------
# focal losses
# --------------------------------------------------------------------------------------------


FOCAL_CASES = [
    # (gamma, alpha, use_sample_weight, dtype)
    (2.0, None, False, np.float64),
    (2.0, "scalar", True, np.float64),
    (2.0, "per-class", False, np.float64),
    (1.5, "per-class", True, np.float64),
    (0.0, "scalar", False, np.float64),
    (2.0, "per-class", True, np.float32),
]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(("gamma", "alpha", "use_sample_weight", "dtype"), FOCAL_CASES)
@pytest.mark.parametrize("kind", ["index", "prob"])
@pytest.mark.parametrize("layout", ["2d", "3d"])
def test_softmax_focal_matches_reference(layout, kind, gamma, alpha, use_sample_weight, reduction, dtype, tol):
    rng = make_rng("focal", layout, kind, gamma, alpha, use_sample_weight, reduction, dtype)
    shape, axis = LAYOUTS[layout]
    x = make_logits(rng, shape, dtype)
    y = make_targets(rng, kind, shape, axis, dtype)
    s = make_sample_weight(rng, batch_shape(shape, axis), dtype) if use_sample_weight else None
    arrays = {"sample_weight": s}
    options = {"gamma": gamma, "axis": axis, "reduction": reduction}
    alpha_value = None
    if alpha == "scalar":
        options["alpha"] = alpha_value = 0.3
    elif alpha == "per-class":
        arrays["alpha"] = rng.uniform(0.1, 1.0, size=shape[axis]).astype(dtype)

    def reference(xt, yt, sample_weight=None, alpha=None):
        a = alpha if alpha is not None else alpha_value
        return ref_softmax_focal(xt, yt, sample_weight, gamma=gamma, alpha=a, axis=axis, reduction=reduction)

    check_agreement(softmax_focal_loss, reference, x, y, arrays=arrays, options=options, tol=tol)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("kind", ["index", "prob"])
def test_softmax_focal_gamma0_is_cross_entropy(kind, reduction, tol):
    rng = make_rng("focal0", kind, reduction)
    shape, axis = (3, 4, 5), 1
    x = make_logits(rng, shape, np.float64)
    y = make_targets(rng, kind, shape, axis, np.float64)
    tol.assert_close(
        softmax_focal_loss(x, y, gamma=0.0, alpha=None, axis=axis, reduction=reduction),
        softmax_cross_entropy(x, y, axis=axis, reduction=reduction),
        np.float64,
    )


SIGMOID_FOCAL_CASES = [
    # (gamma, alpha, use_sample_weight, dtype)
    (2.0, 0.25, False, np.float64),
    (2.0, None, True, np.float64),
    (2.0, "per-class", False, np.float64),
    (1.5, 0.25, True, np.float64),
    (0.0, "per-class", True, np.float64),
    (2.0, "per-class", True, np.float32),
]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(("gamma", "alpha", "use_sample_weight", "dtype"), SIGMOID_FOCAL_CASES)
@pytest.mark.parametrize("shape", ["1d", "2d"])
def test_sigmoid_focal_matches_torchvision_formula(shape, gamma, alpha, use_sample_weight, reduction, dtype, tol):
    rng = make_rng("sfocal", shape, gamma, alpha, use_sample_weight, reduction, dtype)
    shape = SIGMOID_SHAPES[shape]
    x = make_logits(rng, shape, dtype)
    y = make_binary_targets(rng, shape, dtype, hard=gamma == 2.0)
    arrays = {"sample_weight": make_sample_weight(rng, shape[:1], dtype) if use_sample_weight else None}
    options = {"gamma": gamma, "reduction": reduction}
    if alpha == "per-class":
        arrays["alpha"] = rng.uniform(0.1, 0.9, size=shape[-1:]).astype(dtype)
        scalar_alpha = None
    else:
        options["alpha"] = scalar_alpha = alpha

    def reference(xt, yt, sample_weight=None, alpha=None):
        return ref_sigmoid_focal(xt, yt, alpha, sample_weight, gamma=gamma, alpha=scalar_alpha, reduction=reduction)

    check_agreement(sigmoid_focal_loss, reference, x, y, arrays=arrays, options=options, tol=tol)


def test_sigmoid_focal_default_alpha_is_quarter(tol):
    rng = make_rng("sfocal-default")
    x = make_logits(rng, (4, 3), np.float64)
    y = make_binary_targets(rng, (4, 3), np.float64, hard=True)
    tol.assert_close(sigmoid_focal_loss(x, y), sigmoid_focal_loss(x, y, gamma=2.0, alpha=0.25), np.float64)
    expected = ref_sigmoid_focal(torch.from_numpy(x), torch.from_numpy(y), gamma=2.0, alpha=0.25)
    tol.assert_close(sigmoid_focal_loss(x, y), expected, np.float64)


def test_sigmoid_focal_gamma0_no_alpha_is_sigmoid_ce(tol):
    rng = make_rng("sfocal0")
    x = make_logits(rng, (5, 3), np.float64)
    y = make_binary_targets(rng, (5, 3), np.float64)
    tol.assert_close(sigmoid_focal_loss(x, y, gamma=0.0, alpha=None), sigmoid_cross_entropy(x, y), np.float64)


# --------------------------------------------------------------------------------------------
# poly-1
# --------------------------------------------------------------------------------------------


POLY1_CASES = [
    # (epsilon, options_set, dtype)
    (1.0, "plain", np.float64),
    (2.5, "weight", np.float64),
    (-1.0, "smoothing", np.float64),
    (2.5, "sample_weight", np.float64),
    (2.5, "all", np.float64),
    (1.0, "all", np.float32),
]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(("epsilon", "options_set", "dtype"), POLY1_CASES)
@pytest.mark.parametrize("kind", ["index", "prob"])
@pytest.mark.parametrize("layout", ["2d", "3d"])
def test_poly1_matches_optax_formula(layout, kind, epsilon, options_set, reduction, dtype, tol):
    rng = make_rng("poly1", layout, kind, epsilon, options_set, reduction, dtype)
    shape, axis = LAYOUTS[layout]
    x = make_logits(rng, shape, dtype)
    y = make_targets(rng, kind, shape, axis, dtype)
    use = {"weight", "smoothing", "sample_weight"} if options_set == "all" else {options_set}
    w = rng.uniform(0.2, 2.0, size=shape[axis]).astype(dtype) if "weight" in use else None
    s = make_sample_weight(rng, batch_shape(shape, axis), dtype) if "sample_weight" in use else None
    label_smoothing = 0.1 if "smoothing" in use else 0.0
    options = {"epsilon": epsilon, "axis": axis, "label_smoothing": label_smoothing, "reduction": reduction}

    def reference(xt, yt, weight=None, sample_weight=None):
        return ref_poly1(
            xt,
            yt,
            weight,
            sample_weight,
            epsilon=epsilon,
            axis=axis,
            label_smoothing=label_smoothing,
            reduction=reduction,
        )

    check_agreement(
        poly1_cross_entropy, reference, x, y, arrays={"weight": w, "sample_weight": s}, options=options, tol=tol
    )


@pytest.mark.parametrize("kind", ["index", "prob"])
def test_poly1_epsilon0_is_cross_entropy(kind, tol):
    rng = make_rng("poly0", kind)
    shape, axis = (6, 4), -1
    x = make_logits(rng, shape, np.float64)
    y = make_targets(rng, kind, shape, axis, np.float64)
    w = rng.uniform(0.2, 2.0, size=4)
    tol.assert_close(
        poly1_cross_entropy(x, y, epsilon=0.0, weight=w, label_smoothing=0.1),
        softmax_cross_entropy(x, y, weight=w, label_smoothing=0.1),
        np.float64,
    )


def test_poly1_hand_value(tol):
    """One sample, index target: CE + ε(1 − p_y)."""
    p = np.array([0.7, 0.2, 0.1])
    x = np.log(p)[None, :]
    tol.assert_close(poly1_cross_entropy(x, np.array([0]), epsilon=2.0), -np.log(0.7) + 2.0 * 0.3, np.float64)
