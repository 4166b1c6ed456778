"""``crossentropy.checks_disabled()``: device arrays skip the value checks that read data back to the host.

PyTorch's ``meta`` device stands in for a GPU: its tensors have shapes and dtypes but no values,
so any read of a value raises (``float``, ``int``, ``.item()``). The value checks read through
``concrete_bool``, which turns a refused read into "unknown" (for JAX tracers); the tests count
its calls. A loss that runs on meta tensors end to end without a call therefore reads nothing
back to the host, which is what the context promises for a CUDA tensor.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import crossentropy as ce
from crossentropy import _array, _inputs, _validation, robust
from crossentropy import torch as cet


@pytest.fixture
def device_reads(monkeypatch):
    """The arrays outside host memory whose values the checks asked for, in order."""
    reads = []

    def spy(condition):
        if not _array.in_host_memory(condition):
            reads.append(condition)
        return _array.concrete_bool(condition)

    for module in (_validation, _inputs, robust):
        monkeypatch.setattr(module, "concrete_bool", spy)
    return reads


def _meta_batch(n: int = 4, c: int = 5):
    logits = torch.empty(n, c, device="meta")
    target = torch.empty(n, dtype=torch.int64, device="meta")
    return logits, target


def test_device_values_are_checked_by_default(device_reads):
    logits, target = _meta_batch()
    ce.softmax_cross_entropy(logits, target)
    assert device_reads  # the index range and the probabilities-as-logits look


@pytest.mark.parametrize(
    ("function", "options"),
    [
        (cet.cross_entropy, {}),
        (cet.cross_entropy, {"label_smoothing": 0.1, "z_loss": 1e-3, "softcap": 5.0}),
        (cet.cross_entropy, {"weight": "class", "sample_weight": "sample"}),
    ],
    ids=["plain", "smoothing+z+cap", "weights"],
)
def test_a_loss_on_device_tensors_reads_no_value_inside_checks_disabled(function, options, device_reads):
    logits, target = _meta_batch()
    resolved = dict(options)
    if options.get("weight") == "class":
        resolved["weight"] = torch.empty(5, device="meta")
    if options.get("sample_weight") == "sample":
        resolved["sample_weight"] = torch.empty(4, device="meta")
    with ce.checks_disabled():
        loss = function(logits, target, **resolved)
    assert loss.device.type == "meta"
    assert loss.shape == ()
    assert device_reads == []


def test_probability_targets_and_sigmoid_read_no_value_inside_checks_disabled(device_reads):
    logits = torch.empty(3, 4, device="meta")
    with ce.checks_disabled():
        soft = ce.softmax_cross_entropy(logits, torch.empty(3, 4, device="meta"))
        binary = ce.sigmoid_cross_entropy(
            logits, torch.empty(3, 4, device="meta"), pos_weight=torch.empty(4, device="meta")
        )
    assert soft.device.type == binary.device.type == "meta"
    assert device_reads == []


def test_host_arrays_are_still_checked_inside_checks_disabled():
    with ce.checks_disabled(), pytest.raises(ValueError, match=r"`targets` must be class indices in \[0, 3\)"):
        ce.softmax_cross_entropy(np.zeros((2, 3)), np.array([0, 7]))
    with ce.checks_disabled(), pytest.raises(ValueError, match="`weight` must be finite and non-negative"):
        cet.cross_entropy(torch.zeros(2, 3), torch.tensor([0, 1]), weight=torch.tensor([1.0, -1.0, 1.0]))


def test_checks_disabled_is_scoped_and_a_decorator(device_reads):
    logits, target = _meta_batch()

    @ce.checks_disabled()
    def unchecked():
        return ce.softmax_cross_entropy(logits, target)

    assert unchecked().device.type == "meta"
    assert device_reads == []
    ce.softmax_cross_entropy(logits, target)  # checks are back after the call
    assert device_reads
