"""Bad input to :mod:`crossentropy.losses`: ``ValueError``/``TypeError`` naming the parameter.

docs/design.md: "User errors raise ValueError/TypeError, never assert. Message: name the
parameter in backticks, state the rule, echo the value".
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

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
from tests._support import AS_TORCH, requires_torch, torch

RNG = np.random.default_rng(2024)
X = RNG.normal(size=(4, 3))
LOG_PROBS = X - np.log(np.exp(X).sum(axis=1, keepdims=True))
Y = np.array([0, 1, 2, 0])
P_TARGETS = np.exp(LOG_PROBS[::-1].copy())
B_TARGETS = RNG.random((4, 3))
PROBS = RNG.uniform(0.1, 0.9, size=(4, 3))

# Losses on class logits with index targets: (function, name of the first argument, valid first argument).
CLASS_FNS = [
    (softmax_cross_entropy, "logits", X),
    (softmax_cross_entropy_with_grad, "logits", X),
    (nll_loss, "log_probs", LOG_PROBS),
    (softmax_focal_loss, "logits", X),
    (poly1_cross_entropy, "logits", X),
]
CLASS_IDS = ["softmax_ce", "softmax_ce_with_grad", "nll_loss", "softmax_focal", "poly1"]

# Losses whose targets may be probabilities of the logits' shape.
SOFT_FNS = [softmax_cross_entropy, softmax_cross_entropy_with_grad, softmax_focal_loss, poly1_cross_entropy]
SOFT_IDS = ["softmax_ce", "softmax_ce_with_grad", "softmax_focal", "poly1"]

# Element-wise binary losses: (function, name of the first argument, valid first argument).
BINARY_FNS = [
    (sigmoid_cross_entropy, "logits", X),
    (sigmoid_cross_entropy_with_grad, "logits", X),
    (sigmoid_focal_loss, "logits", X),
    (binary_cross_entropy, "probs", PROBS),
]
BINARY_IDS = ["sigmoid_ce", "sigmoid_ce_with_grad", "sigmoid_focal", "binary_cross_entropy"]

ALL_FNS = [(fn, name, x, Y) for fn, name, x in CLASS_FNS] + [(fn, name, x, B_TARGETS) for fn, name, x in BINARY_FNS]
ALL_IDS = CLASS_IDS + BINARY_IDS


def test_valid_inputs_do_not_raise():
    """The inputs the error tests perturb are themselves valid."""
    for fn, _, x in CLASS_FNS:
        fn(x, Y)
    for fn in SOFT_FNS:
        fn(X, P_TARGETS)
    for fn, _, x in BINARY_FNS:
        fn(x, B_TARGETS)


# --------------------------------------------------------------------------------------------
# targets
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [3, 7, -1, -99])
@pytest.mark.parametrize("as_torch", AS_TORCH)
@pytest.mark.parametrize(("fn", "name", "x"), CLASS_FNS, ids=CLASS_IDS)
def test_target_index_out_of_range(fn, name, x, as_torch, bad):
    y = Y.copy()
    y[2] = bad
    if as_torch:
        x, y = torch.from_numpy(x), torch.from_numpy(y)
    with pytest.raises(ValueError, match="`targets`"):
        fn(x, y)


@pytest.mark.parametrize(("fn", "name", "x"), CLASS_FNS, ids=CLASS_IDS)
def test_target_index_out_of_range_with_custom_ignore_index(fn, name, x):
    """-100 is only special while it is the ``ignore_index``."""
    y = Y.copy()
    y[1] = -100
    with pytest.raises(ValueError, match="`targets`"):
        fn(x, y, ignore_index=-1)


def test_target_index_out_of_range_k_dimensional():
    x = RNG.normal(size=(2, 3, 4))
    y = np.zeros((2, 4), dtype=np.int64)
    y[1, 3] = 3
    with pytest.raises(ValueError, match="`targets`"):
        softmax_cross_entropy(x, y, axis=1)


@pytest.mark.parametrize("y_shape", [(5,), (3,), (4, 1), ()])
@pytest.mark.parametrize(("fn", "name", "x"), CLASS_FNS, ids=CLASS_IDS)
def test_index_target_shape_mismatch(fn, name, x, y_shape):
    y = np.zeros(y_shape, dtype=np.int64)
    with pytest.raises(ValueError, match="`targets`"):
        fn(x, y)


@pytest.mark.parametrize(("fn", "name", "x"), CLASS_FNS, ids=CLASS_IDS)
def test_integer_targets_of_the_logits_shape(fn, name, x):
    # Probabilities stored as integers, most likely: say so where probabilities are allowed.
    y = np.zeros(x.shape, dtype=np.int64)
    if fn is nll_loss:  # class indices only
        with pytest.raises(ValueError, match=r"^`targets` must have shape \(4,\) \(class indices"):
            fn(x, y)
    else:
        with pytest.raises(TypeError, match=r"^`targets` of the shape \(4, 3\) of `logits` must be floating-point"):
            fn(x, y)


def test_index_target_shape_mismatch_k_dimensional():
    x = RNG.normal(size=(2, 3, 4))
    with pytest.raises(ValueError, match="`targets`"):
        softmax_cross_entropy(x, np.zeros((2, 3), dtype=np.int64), axis=1)  # the shape for axis=-1, not axis=1


@pytest.mark.parametrize("t_shape", [(4, 2), (4, 4), (3, 3), (4, 3, 1), (12,)])
@pytest.mark.parametrize("fn", SOFT_FNS, ids=SOFT_IDS)
def test_probability_targets_wrong_shape(fn, t_shape):
    t = np.full(t_shape, 1.0 / (t_shape[1] if len(t_shape) > 1 else 12))
    with pytest.raises(ValueError, match="`targets`"):
        fn(X, t)


@pytest.mark.parametrize("t_shape", [(4, 2), (4,), (3, 3), (4, 3, 1)])
@pytest.mark.parametrize(("fn", "name", "x"), BINARY_FNS, ids=BINARY_IDS)
def test_binary_targets_wrong_shape(fn, name, x, t_shape):
    with pytest.raises(ValueError, match="`targets`"):
        fn(x, np.full(t_shape, 0.5))


@pytest.mark.parametrize("as_torch", AS_TORCH)
@pytest.mark.parametrize(("fn", "name", "x"), CLASS_FNS, ids=CLASS_IDS)
def test_bool_targets(fn, name, x, as_torch):
    y = np.array([True, False, True, False])
    if as_torch:
        x, y = torch.from_numpy(x), torch.from_numpy(y)
    with pytest.raises(TypeError, match="`targets`"):
        fn(x, y)


@pytest.mark.parametrize("value", [1.5, -0.2])
@pytest.mark.parametrize("fn", SOFT_FNS, ids=SOFT_IDS)
def test_probability_targets_outside_unit_interval(fn, value):
    t = P_TARGETS.copy()
    t[1, 0] = value
    with pytest.raises(ValueError, match="`targets`"):
        fn(X, t)


@pytest.mark.parametrize("value", [1.5, -0.2])
@pytest.mark.parametrize(("fn", "name", "x"), BINARY_FNS, ids=BINARY_IDS)
def test_binary_targets_outside_unit_interval(fn, name, x, value):
    t = B_TARGETS.copy()
    t[2, 1] = value
    with pytest.raises(ValueError, match="`targets`"):
        fn(x, t)


# --------------------------------------------------------------------------------------------
# logits / probabilities
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("as_torch", AS_TORCH)
@pytest.mark.parametrize(("fn", "name", "x", "y"), ALL_FNS, ids=ALL_IDS)
def test_integer_logits(fn, name, x, y, as_torch):
    xi = np.round(x * 10).astype(np.int64)
    if fn is binary_cross_entropy:
        xi = np.ones_like(xi)
    if as_torch:
        xi, y = torch.from_numpy(xi), torch.from_numpy(y)
    with pytest.raises(TypeError, match=f"`{name}`"):
        fn(xi, y)


@pytest.mark.parametrize(("fn", "name", "x", "y"), ALL_FNS, ids=ALL_IDS)
def test_bool_logits(fn, name, x, y):
    with pytest.raises(TypeError, match=f"`{name}`"):
        fn(x > 0, y)


@pytest.mark.parametrize("shape", [(0, 3), (4, 0)])
@pytest.mark.parametrize(("fn", "name", "x", "y"), ALL_FNS, ids=ALL_IDS)
def test_empty_logits(fn, name, x, y, shape):
    xe = np.zeros(shape) + (0.5 if fn is binary_cross_entropy else 0.0)
    ye = np.zeros(shape) if y.dtype.kind == "f" else np.zeros(shape[:1], dtype=np.int64)
    with pytest.raises(ValueError, match=f"`{name}`"):
        fn(xe, ye)


@pytest.mark.parametrize("value", [1.2, -0.1, np.nan])
@requires_torch
def test_probs_outside_unit_interval(value):
    p = PROBS.copy()
    p[0, 2] = value
    with pytest.raises(ValueError, match="`probs`"):
        binary_cross_entropy(p, B_TARGETS)
    with pytest.raises(ValueError, match="`probs`"):
        binary_cross_entropy(torch.from_numpy(p), torch.from_numpy(B_TARGETS))


# --------------------------------------------------------------------------------------------
# options
# --------------------------------------------------------------------------------------------

SMOOTHING_FNS = [
    (softmax_cross_entropy, X, Y),
    (softmax_cross_entropy_with_grad, X, Y),
    (poly1_cross_entropy, X, Y),
    (sigmoid_cross_entropy, X, B_TARGETS),
    (sigmoid_cross_entropy_with_grad, X, B_TARGETS),
]
SMOOTHING_IDS = ["softmax_ce", "softmax_ce_with_grad", "poly1", "sigmoid_ce", "sigmoid_ce_with_grad"]


@pytest.mark.parametrize("value", [1.5, -0.1])
@pytest.mark.parametrize(("fn", "x", "y"), SMOOTHING_FNS, ids=SMOOTHING_IDS)
def test_label_smoothing_out_of_range(fn, x, y, value):
    with pytest.raises(ValueError, match=r"`label_smoothing`.*" + re.escape(str(value))):
        fn(x, y, label_smoothing=value)


WEIGHTED_CLASS_FNS = [
    (softmax_cross_entropy, X),
    (softmax_cross_entropy_with_grad, X),
    (nll_loss, LOG_PROBS),
    (poly1_cross_entropy, X),
]
WEIGHTED_CLASS_IDS = ["softmax_ce", "softmax_ce_with_grad", "nll_loss", "poly1"]


@pytest.mark.parametrize("as_torch", AS_TORCH)
@pytest.mark.parametrize(("fn", "x"), WEIGHTED_CLASS_FNS, ids=WEIGHTED_CLASS_IDS)
def test_negative_class_weight(fn, x, as_torch):
    w = np.array([1.0, -0.5, 2.0])
    y = Y
    if as_torch:
        x, y, w = torch.from_numpy(x), torch.from_numpy(Y), torch.from_numpy(w)
    with pytest.raises(ValueError, match="`weight`"):
        fn(x, y, weight=w)


@pytest.mark.parametrize("length", [2, 4])
@pytest.mark.parametrize(("fn", "x"), WEIGHTED_CLASS_FNS, ids=WEIGHTED_CLASS_IDS)
def test_wrong_class_weight_length(fn, x, length):
    with pytest.raises(ValueError, match="`weight`"):
        fn(x, Y, weight=np.ones(length))


@pytest.mark.parametrize("fn", SOFT_FNS[:2] + SOFT_FNS[3:], ids=["softmax_ce", "softmax_ce_with_grad", "poly1"])
def test_wrong_class_weight_length_probability_targets(fn):
    with pytest.raises(ValueError, match="`weight`"):
        fn(X, P_TARGETS, weight=np.ones(4))


@pytest.mark.parametrize("length", [2, 4])
@pytest.mark.parametrize("fn", [softmax_focal_loss, sigmoid_focal_loss], ids=["softmax_focal", "sigmoid_focal"])
def test_wrong_alpha_length(fn, length):
    y = Y if fn is softmax_focal_loss else B_TARGETS
    with pytest.raises(ValueError, match="`alpha`"):
        fn(X, y, alpha=np.full(length, 0.5))


@pytest.mark.parametrize(("fn", "name", "x", "y"), ALL_FNS, ids=ALL_IDS)
def test_negative_sample_weight(fn, name, x, y):
    with pytest.raises(ValueError, match="`sample_weight`"):
        fn(x, y, sample_weight=np.array([1.0, 2.0, -0.1, 1.0]))


@pytest.mark.parametrize(("fn", "name", "x", "y"), ALL_FNS, ids=ALL_IDS)
def test_wrong_sample_weight_shape(fn, name, x, y):
    with pytest.raises(ValueError, match="`sample_weight`"):
        fn(x, y, sample_weight=np.ones(5))


@pytest.mark.parametrize("reduction", ["avg", "MEAN", ""])
@pytest.mark.parametrize(("fn", "name", "x", "y"), ALL_FNS, ids=ALL_IDS)
def test_bad_reduction(fn, name, x, y, reduction):
    with pytest.raises(ValueError, match="`reduction`"):
        fn(x, y, reduction=reduction)


@pytest.mark.parametrize("fn", [softmax_cross_entropy, softmax_cross_entropy_with_grad], ids=["ce", "ce_with_grad"])
def test_negative_z_loss(fn):
    with pytest.raises(ValueError, match="`z_loss`"):
        fn(X, Y, z_loss=-1e-4)


@pytest.mark.parametrize("value", [0.0, -1.0])
@pytest.mark.parametrize("fn", [softmax_cross_entropy, softmax_cross_entropy_with_grad], ids=["ce", "ce_with_grad"])
def test_non_positive_softcap(fn, value):
    with pytest.raises(ValueError, match="`softcap`"):
        fn(X, Y, softcap=value)


@pytest.mark.parametrize(
    ("fn", "y"), [(softmax_focal_loss, Y), (sigmoid_focal_loss, B_TARGETS)], ids=["softmax_focal", "sigmoid_focal"]
)
def test_negative_gamma(fn, y):
    with pytest.raises(ValueError, match="`gamma`"):
        fn(X, y, gamma=-0.5)


@pytest.mark.parametrize(("fn", "name", "x"), CLASS_FNS, ids=CLASS_IDS)
def test_bad_axis(fn, name, x):
    with pytest.raises(ValueError, match="`axis`"):
        fn(x, Y, axis=2)


def test_errors_are_not_assertions():
    """Input checks must survive ``python -O``: they are exceptions, not asserts (a smoke check on one path)."""
    with pytest.raises(ValueError, match="label_smoothing") as info:
        softmax_cross_entropy(X, Y, label_smoothing=1.5)
    assert not isinstance(info.value, AssertionError)
    assert "1.5" in str(info.value)


def test_nll_loss_rejects_probability_targets():
    """nll_loss takes class indices only."""
    with pytest.raises((TypeError, ValueError), match="`targets`"):
        nll_loss(LOG_PROBS, P_TARGETS)


def test_message_has_the_design_style_exactly():
    """docs/design.md's own example message, to the letter."""
    contract = (Path(__file__).parents[2] / "docs" / "design.md").read_text(encoding="utf-8")
    example = '``"`label_smoothing` must be in [0, 1]; got 1.5"``'
    assert example in contract
    with pytest.raises(ValueError, match=re.escape(example[3:-3])):
        softmax_cross_entropy(X, Y, label_smoothing=1.5)


@pytest.mark.parametrize(
    "fn", [softmax_cross_entropy, softmax_cross_entropy_with_grad, poly1_cross_entropy], ids=lambda f: f.__name__
)
def test_class_indices_stored_as_floats_are_a_type_error(fn):
    """Float targets of the index shape: a dtype mistake, said as one (not as a shape mismatch)."""
    with pytest.raises(TypeError, match=r"`targets` must be integer class indices for shape \(4,\).*got dtype float64"):
        fn(X, Y.astype(np.float64))
