"""Semantics PyTorch enforces, and messages that name what the caller wrote.

- Probability targets with an ``ignore_index`` other than the default raise, as PyTorch's
  ``F.cross_entropy`` does ("ignore_index is not supported for floating point target").
- Errors raised through :mod:`crossentropy.torch` name PyTorch's parameters (``input``,
  ``target``), not the core's (``logits``, ``targets``); the core keeps its own names.
- Ragged nested lists get a message naming the parameter, not NumPy's "inhomogeneous shape".
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import crossentropy as ce
import crossentropy.torch as cet

X = torch.randn(4, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
Y = torch.tensor([0, 1, 2, 0])
P = torch.softmax(torch.randn(4, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64), dim=1)

# --------------------------------------------------------------------------------------------
# ignore_index with probability targets
# --------------------------------------------------------------------------------------------


def test_pytorch_itself_refuses_ignore_index_with_probability_targets():
    with pytest.raises(RuntimeError, match="ignore_index is not supported for floating point target"):
        F.cross_entropy(X, P, ignore_index=1)


@pytest.mark.parametrize("requires_grad", [False, True], ids=["untracked", "tracked"])
@pytest.mark.parametrize("ignore_index", [1, 0, -1])
def test_torch_cross_entropy_refuses_ignore_index_with_probability_targets(ignore_index, requires_grad):
    with pytest.raises(ValueError, match=rf"`ignore_index` applies to class-index targets only.*{ignore_index}"):
        cet.cross_entropy(X.clone().requires_grad_(requires_grad), P, ignore_index=ignore_index)


@pytest.mark.parametrize(
    "function",
    [ce.softmax_cross_entropy, ce.softmax_cross_entropy_with_grad, ce.poly1_cross_entropy, ce.softmax_focal_loss],
)
def test_core_losses_refuse_ignore_index_with_probability_targets(function):
    with pytest.raises(ValueError, match="`ignore_index` applies to class-index targets only"):
        function(X.numpy(), P.numpy(), ignore_index=2)


@pytest.mark.parametrize("ignore_index", [-100, None])
def test_the_default_ignore_index_and_none_stay_allowed_with_probability_targets(ignore_index):
    loss = ce.softmax_cross_entropy(X.numpy(), P.numpy(), ignore_index=ignore_index)
    expected = F.cross_entropy(X, P)
    np.testing.assert_allclose(loss, expected.numpy(), rtol=1e-12)


# --------------------------------------------------------------------------------------------
# The torch layer's messages name input and target
# --------------------------------------------------------------------------------------------

# (call through crossentropy.torch, pattern its message must match)
TORCH_ERRORS = [
    (lambda: cet.cross_entropy(X, torch.tensor([0, 1, 2, 7])), r"^`target` must be class indices in \[0, 3\)"),
    (lambda: cet.cross_entropy(X, torch.rand(4, 5, dtype=torch.float64)), r"^`target` must have shape .*`input`"),
    (lambda: cet.cross_entropy(X, Y[:3]), r"^`target` must have shape \(4,\) \(class indices: .*`input`"),
    (lambda: cet.cross_entropy(X.long(), Y), r"^`input` must be a real floating-point array"),
    (lambda: cet.cross_entropy(X, P.long()), r"^`target` of the shape \(4, 3\) of `input` must be floating-point"),
    (lambda: cet.cross_entropy(X, Y.double()), r"^`target` must be integer class indices .*`target\.long\(\)`"),
    (lambda: cet.cross_entropy(X, Y.bool()), r"^`target` must be integer class indices"),
    (lambda: cet.cross_entropy(X.clone().requires_grad_(), Y.float()), r"^`target` must be integer class indices"),
    (lambda: cet.nll_loss(X, torch.tensor([0, 1, 2, 3])), r"^`target` must be class indices"),
    (lambda: cet.nll_loss(X, Y.float()), r"^`target` must be integer class indices"),
    (lambda: cet.nll_loss(X[:, :0], Y), r"^`input` must not be empty"),
    (lambda: cet.binary_cross_entropy_with_logits(X, X), r"^`target` must contain probabilities"),
    (lambda: cet.binary_cross_entropy_with_logits(X, torch.rand(3)), r"^`target` must have shape .*`input`"),
    (lambda: cet.binary_cross_entropy_with_logits(X, Y.reshape(4, 1).expand(4, 3)), r"^`target` given as integers"),
    (
        lambda: cet.binary_cross_entropy(P, torch.rand(4, 2)),
        r"^`target` must have shape \(4, 3\) \(the shape of `input`",
    ),
    (lambda: cet.binary_cross_entropy(P * 3, P), r"^`input` must contain probabilities"),
    (lambda: cet.softmax_focal_loss(X, Y[:2]), r"^`target` must have shape"),
    (lambda: cet.poly1_cross_entropy(X, Y + 5), r"^`target` must be class indices"),
    (lambda: cet.generalized_cross_entropy(X, Y.float()), r"^`target` must be integer class indices"),
    (lambda: cet.sigmoid_focal_loss(X, torch.rand(2)), r"^`targets` must have shape .*`inputs`"),  # torchvision's
    (lambda: cet.CrossEntropyLoss()(X, Y + 3), r"^`target` must be class indices"),
    (lambda: cet.BCEWithLogitsLoss()(X, X), r"^`target` must contain probabilities"),
]


@pytest.mark.parametrize(("call", "pattern"), TORCH_ERRORS, ids=[p for _, p in TORCH_ERRORS])
def test_torch_layer_messages_name_pytorchs_parameters(call, pattern):
    with pytest.raises((ValueError, TypeError)) as error:
        call()
    message = str(error.value)
    assert re.search(pattern, message), message
    assert "`logits`" not in message


def test_the_core_keeps_its_own_names_also_after_a_torch_layer_error():
    with pytest.raises(ValueError, match=r"^`target` must be class indices"):
        cet.cross_entropy(X, Y + 3)
    with pytest.raises(ValueError, match=r"^`targets` must be class indices"):
        ce.softmax_cross_entropy(X, Y + 3)
    with pytest.raises(TypeError, match=r"^`logits` must be a real floating-point array"):
        ce.softmax_cross_entropy(X.long(), Y)


def test_the_probabilities_as_logits_warning_names_input_in_the_torch_layer():
    with pytest.warns(ce.ProbabilitiesAsLogitsWarning, match=r"^`input` look like probabilities"):
        cet.cross_entropy(P, Y)
    with pytest.warns(ce.ProbabilitiesAsLogitsWarning, match=r"^`logits` look like probabilities"):
        ce.softmax_cross_entropy(P, Y)


# --------------------------------------------------------------------------------------------
# Ragged lists
# --------------------------------------------------------------------------------------------

RAGGED = [[0.1, 2.0, 0.3], [1.0, 0.5]]

RAGGED_CALLS = [
    ("logits", lambda: ce.softmax_cross_entropy(RAGGED, [0, 1])),
    ("logits", lambda: ce.softmax_cross_entropy_with_grad(RAGGED, [0, 1])),
    ("targets", lambda: ce.softmax_cross_entropy([[0.1, 2.0], [1.0, 0.5]], [[0.5, 0.5], [1.0]])),
    ("logits", lambda: ce.sigmoid_cross_entropy(RAGGED, [[0, 1, 0], [1, 0]])),
    ("log_probs", lambda: ce.nll_loss(RAGGED, [0, 1])),
    ("probs", lambda: ce.binary_cross_entropy(RAGGED, [[0, 1, 0], [1, 0]])),
    ("p", lambda: ce.entropy(RAGGED)),
    ("q", lambda: ce.kl_divergence([[0.5, 0.5], [0.5, 0.5]], [[0.5, 0.5], [1.0]])),
    ("x", lambda: ce.log_softmax(RAGGED)),
    ("probs", lambda: ce.log_loss([[0.5, 0.5], [1.0]], [0, 1])),
    ("sample_weight", lambda: ce.softmax_cross_entropy([[0.1, 2.0]], [0], sample_weight=[[1.0], []])),
    ("target", lambda: cet.cross_entropy(X, [[0, 1], [2]])),
]


@pytest.mark.parametrize(("name", "call"), RAGGED_CALLS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(RAGGED_CALLS)])
def test_ragged_lists_get_a_message_naming_the_parameter(name, call):
    with pytest.raises(ValueError, match=rf"^`{name}` must be an array, or nested lists of numbers") as error:
        call()
    assert "inhomogeneous" not in str(error.value)
    assert "at depth 1" in str(error.value)


# --------------------------------------------------------------------------------------------
# Probability targets are taken as given, as PyTorch does
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("requires_grad", [False, True], ids=["untracked", "tracked"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_torch_cross_entropy_takes_probability_targets_outside_the_unit_interval_as_pytorch(
    requires_grad, label_smoothing
):
    # A finite-difference step (gradcheck's 1e-6) takes a target of 1e-8 below 0: PyTorch computes on.
    target = P.clone()
    target[0, 2] = -1e-6
    target[1, 0] = 1 + 1e-6
    ours_input = X.clone().requires_grad_(requires_grad)
    theirs_input = X.clone().requires_grad_(requires_grad)
    loss = cet.cross_entropy(ours_input, target, label_smoothing=label_smoothing)
    expected = F.cross_entropy(theirs_input, target, label_smoothing=label_smoothing)
    torch.testing.assert_close(loss, expected)
    if requires_grad:
        loss.backward()
        expected.backward()
        torch.testing.assert_close(ours_input.grad, theirs_input.grad)


def test_the_core_still_checks_probability_targets():
    target = P.clone().numpy()
    target[0, 2] = -1e-6
    with pytest.raises(ValueError, match=r"`targets` must contain probabilities in \[0, 1\]"):
        ce.softmax_cross_entropy(X.numpy(), target)
