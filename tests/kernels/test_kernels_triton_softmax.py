"""The Triton softmax cross-entropy kernel against two oracles.

:func:`crossentropy.kernels.triton._softmax.softmax_cross_entropy_rows` must give, for the same
arguments, what the Numba backend's entry point of the same name gives (its CPU twin, run on
CPU copies; half-precision logits are widened to float32 first, so that it computes in float32
on the same rounded inputs), and, built the way the core builds the arguments, what the generic
array-API path gives (``kernels.disabled()``) for the reduced loss and its gradient: for every
option, index and probability targets, ignored rows, a class count of 3, of 1000 (one tile, not
a power of two) and of several tiles (a small forced tile), float32 and float64 at their
tolerances and the half dtypes at theirs, forward-only calls, ``out=``, the gradient written
over the logits, extreme and infinite logits, out-of-range indices, K-dimensional batches and
strided or permuted views.

Each test runs on a device axis: ``"cpu"`` runs the kernel in Triton's interpreter
(``TRITON_INTERPRET=1``, which ``conftest.py`` sets where there is no CUDA GPU), ``"cuda"``
compiles it for the GPU. The tests of more than 2^31 elements, of host synchronization and of
the forward-only call's memory need a GPU.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch

import crossentropy as ce
from crossentropy import kernels
from crossentropy.kernels import numba as numba_backend
from crossentropy.kernels.triton._softmax import softmax_cross_entropy_rows
from tests._support import NEEDS_CUDA, tolerance, triton_devices

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
CUDA = torch.cuda.is_available()
DEVICES = triton_devices()
DTYPES = [torch.float32, torch.float64]
HALF = [torch.float16, torch.bfloat16]
# (class count, forced tile width): a tiny row, one tile that is not a power of two, and rows of
# several tiles (the two-pass loop) with a ragged last tile. Few rows there: the interpreter runs
# each tile of each row in Python.
LAYOUTS = [(3, None, 9), (1000, None, 9), (100, 32, 4)]
LAYOUT_IDS = ["C3", "C1000", "C100-tiles32"]
OPTIONS = [
    {},
    {"weight": True},
    {"smoothing": 0.1},
    {"smoothing": 0.3, "weight": True},
    {"z": 1e-2},
    {"cap": 4.0},
    {"sample_weight": True},
    {"cap": 3.0, "smoothing": 0.2, "z": 1e-3, "weight": True, "sample_weight": True},
]
ALL_OPTIONS = OPTIONS[-1]


NUMBA = numba_backend  # the oracle: the Numba backend's entry points


def _ids(options: dict) -> str:
    return "+".join(options) or "plain"


def _accumulation(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


class Case:
    """Kernel arguments for ``n_rows`` rows of ``n_classes``: float64 values rounded to ``dtype`` on ``device``.

    Row 2 is ignored (index 0, row weight 0) for index targets; with sample weights, row 1 has a
    zero weight. ``grad_factor`` is the row weight over a mean's denominator of 7.
    """

    def __init__(self, n_rows, n_classes, dtype, device, *, index=True, options=None, seed=0, batch_shape=None):
        options = options or {}
        gen = torch.Generator().manual_seed(seed)
        acc = _accumulation(dtype)
        batch_shape = batch_shape or (n_rows,)
        shape = (*batch_shape, n_classes)
        self.logits = (torch.randn(shape, generator=gen, dtype=torch.float64) * 3).to(dtype).to(device)
        row_weight = torch.ones(n_rows, dtype=torch.float64)
        if options.get("sample_weight"):
            row_weight = torch.rand(n_rows, generator=gen, dtype=torch.float64) * 2
            row_weight[1] = 0.0
        if index:
            targets = torch.randint(0, n_classes, (n_rows,), generator=gen)
            targets[2 % n_rows] = 0
            row_weight[2 % n_rows] = 0.0
            self.targets = targets.reshape(batch_shape).to(device)
        else:
            probs = torch.softmax(torch.randn(shape, generator=gen, dtype=torch.float64), dim=-1)
            self.targets = probs.to(acc).to(device)
        weight = None
        if options.get("weight"):
            weight = (torch.rand(n_classes, generator=gen, dtype=torch.float64) * 1.8 + 0.2).to(acc).to(device)
        row_weight = row_weight.reshape(batch_shape).to(acc).to(device)
        self.kwargs = {
            "weight": weight,
            "row_weight": row_weight,
            "grad_factor": row_weight / 7.0,
            "smoothing": float(options.get("smoothing", 0.0)),
            "z": float(options.get("z", 0.0)),
            "cap": options.get("cap"),
        }

    def triton(self, **overrides):
        """The kernel under test on these arguments (``overrides`` replace or add keywords)."""
        return softmax_cross_entropy_rows(self.logits, self.targets, **{**self.kwargs, **overrides})

    def numba(self, **overrides):
        """The Numba backend on CPU copies, half-precision logits widened to float32."""
        return numba_oracle(self.logits, self.targets, **{**self.kwargs, **overrides})


def numba_oracle(logits, targets, **kwargs):
    """:func:`softmax_cross_entropy_rows` of the Numba backend on CPU copies (half logits as float32)."""
    logits = logits.detach().cpu()
    if logits.dtype in HALF:
        logits = logits.float()
    cpu = {k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
    return NUMBA.softmax_cross_entropy_rows(logits.contiguous(), targets.cpu(), **cpu)


def assert_close(actual, expected, dtype, what=""):
    """Same shape, and equal within the tolerance of ``dtype`` (NaN where the other has NaN)."""
    a = actual.detach().cpu().double().numpy()
    e = torch.as_tensor(expected).detach().cpu().double().numpy()
    assert a.shape == e.shape, f"shape {a.shape} != {e.shape} {what}"
    np.testing.assert_allclose(a, e, **tolerance(dtype), err_msg=what)


def assert_result(result, expected, logits_dtype, what=""):
    """``(losses, grad)`` of the accumulation dtype and the logits' dtype, close to ``expected``."""
    losses, grad = result
    acc = _accumulation(logits_dtype)
    assert losses.dtype == acc, what
    assert_close(losses, expected[0], acc, what + " losses")
    if expected[1] is None:
        assert grad is None, what
        return
    assert grad.dtype == logits_dtype, what
    assert_close(grad, expected[1], logits_dtype, what + " gradient")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(("n_classes", "block_v", "n_rows"), LAYOUTS, ids=LAYOUT_IDS)
@pytest.mark.parametrize("index", [True, False], ids=["index", "probs"])
@pytest.mark.parametrize("options", OPTIONS, ids=_ids)
def test_matches_numba(device, dtype, n_classes, block_v, n_rows, index, options):
    case = Case(n_rows, n_classes, dtype, device, index=index, options=options, seed=n_classes)
    result = case.triton(block_v=block_v)
    assert result[0].device.type == device
    assert result[1].shape == case.logits.shape
    assert_result(result, case.numba(), dtype, f"{dtype} C={n_classes} {_ids(options)}")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("index", [True, False], ids=["index", "probs"])
@pytest.mark.parametrize("options", [OPTIONS[0], ALL_OPTIONS], ids=_ids)
def test_vocabulary_of_256k_in_default_tiles(device, index, options):
    """Rows of 2^18 + 17 classes in the default tiles, the maximum in the last tile of one row, the first of another."""
    case = Case(3, 2**18 + 17, torch.float32, device, index=index, options=options, seed=2)
    case.logits[0, -3] = 25.0
    case.logits[1, 5] = 25.0
    result = case.triton()
    assert_result(result, case.numba(), torch.float32, "256k")
    if index and not options:  # an independent float64 oracle of the loss: LSE - x_y
        x = case.logits.double()
        y = case.targets[[0, 1]]
        expected = torch.logsumexp(x[[0, 1]], dim=-1) - x[[0, 1]].gather(1, y[:, None])[:, 0]
        assert_close(result[0][[0, 1]], expected, torch.float32)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", HALF, ids=str)
@pytest.mark.parametrize("index", [True, False], ids=["index", "probs"])
@pytest.mark.parametrize("options", OPTIONS, ids=_ids)
def test_half_precision_against_float32(device, dtype, index, options):
    """Half precision read as stored, accumulated in float32: float32's losses on the same rounded
    logits, and the gradient within a rounding of them."""
    case = Case(9, 1000, dtype, device, index=index, options=options, seed=3)
    assert_result(case.triton(), case.numba(), dtype, f"{dtype} {_ids(options)}")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", HALF, ids=str)
@pytest.mark.parametrize("index", [True, False], ids=["index", "probs"])
def test_half_precision_in_several_tiles(device, dtype, index):
    case = Case(4, 100, dtype, device, index=index, options=ALL_OPTIONS, seed=4)
    assert_result(case.triton(block_v=16), case.numba(), dtype, f"{dtype} tiles")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("n_classes", "block_v", "n_rows"), LAYOUTS, ids=LAYOUT_IDS)
@pytest.mark.parametrize("index", [True, False], ids=["index", "probs"])
def test_forward_only(device, n_classes, block_v, n_rows, index):
    case = Case(n_rows, n_classes, torch.float32, device, index=index, options=ALL_OPTIONS, seed=5)
    losses, grad = case.triton(grad_factor=None, block_v=block_v)
    assert grad is None
    assert_close(losses, case.numba(grad_factor=None)[0], torch.float32)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [*DTYPES, *HALF], ids=str)
def test_out_receives_the_gradient(device, dtype):
    case = Case(9, 1000, dtype, device, options=ALL_OPTIONS, seed=6)
    before = case.logits.clone()
    out = torch.full_like(case.logits, 5.0)
    losses, grad = case.triton(out=out)
    assert grad is out
    assert torch.equal(case.logits, before), "the logits are left alone"
    assert_result((losses, grad), case.numba(), dtype)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [*DTYPES, *HALF], ids=str)
@pytest.mark.parametrize("index", [True, False], ids=["index", "probs"])
@pytest.mark.parametrize(("n_classes", "block_v", "n_rows"), LAYOUTS[1:], ids=LAYOUT_IDS[1:])
def test_gradient_over_the_logits(device, dtype, index, n_classes, block_v, n_rows):
    """``out=logits`` works for every dtype and option here (soft-cap and smoothing with class weights too)."""
    case = Case(n_rows, n_classes, dtype, device, index=index, options=ALL_OPTIONS, seed=7)
    expected = case.numba()
    logits = case.logits
    losses, grad = case.triton(out=logits, block_v=block_v)
    assert grad is logits
    assert_result((losses, logits), expected, dtype, "in place")


@pytest.mark.parametrize("device", DEVICES)
def test_gradient_over_strided_rows(device):
    """Rows that are a view with gaps between them are read and overwritten through their stride."""
    base = torch.randn(5, 40, generator=torch.Generator().manual_seed(8), dtype=torch.float64).to(device)
    logits = base[:, 3:33]
    targets = torch.tensor([0, 29, 3, 7, 11], device=device)
    ones = torch.ones(5, dtype=torch.float64, device=device)
    kwargs = {"weight": None, "row_weight": ones, "grad_factor": ones, "smoothing": 0.1, "z": 0.0, "cap": None}
    expected = numba_oracle(logits, targets, **kwargs)
    outside = torch.cat([base[:, :3], base[:, 33:]], dim=1).clone()
    losses, grad = softmax_cross_entropy_rows(logits, targets, out=logits, **kwargs)
    assert grad is logits
    assert_result((losses, base[:, 3:33]), expected, torch.float64)
    assert torch.equal(torch.cat([base[:, :3], base[:, 33:]], dim=1), outside), "nothing written between the rows"


@pytest.mark.parametrize("device", DEVICES)
def test_gradient_over_permuted_logits_is_refused(device):
    logits = torch.randn(4, 6, 5, device=device).permute(0, 2, 1)  # class stride 5
    ones = torch.ones(4, 5, device=device)
    kwargs = {"weight": None, "row_weight": ones, "grad_factor": ones, "smoothing": 0.0, "z": 0.0, "cap": None}
    targets = torch.zeros(4, 5, dtype=torch.int64, device=device)
    with pytest.raises(ValueError, match=r"over the logits.*class stride 1"):
        softmax_cross_entropy_rows(logits, targets, out=logits, **kwargs)


@pytest.mark.parametrize("device", DEVICES)
def test_out_rules(device):
    case = Case(5, 7, torch.float32, device, seed=9)
    with pytest.raises(ValueError, match="`out` must be a tensor of the logits' shape"):
        case.triton(out=torch.empty(5, 8, device=device))
    with pytest.raises(ValueError, match=r"`out` must be a tensor of the logits' shape .* and dtype"):
        case.triton(out=torch.empty(5, 7, dtype=torch.float64, device=device))
    shared = torch.randn(36, device=device)
    with pytest.raises(ValueError, match="must not overlap `logits`"):
        softmax_cross_entropy_rows(shared[:35].view(5, 7), case.targets, out=shared[1:].view(5, 7), **case.kwargs)
    with pytest.raises(ValueError, match="`out` must have rows with class stride 1"):
        case.triton(out=torch.empty(7, 5, device=device).t())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("block_v", [None, 2], ids=["one-tile", "tiles2"])
def test_extreme_and_infinite_logits(device, dtype, block_v):
    """The rows of tests/kernels/test_kernels.py: ±1e4 and -inf logits; the Numba kernel's results, finite gradients."""
    inf = math.inf
    logits = torch.tensor(
        [[1e4, -1e4, 0.0, 5.0], [-inf, 2.0, -inf, 1.0], [-1e4, -1e4, -1e4, -1e4 + 1], [3.0, -inf, -inf, -inf]],
        dtype=dtype,
        device=device,
    )
    targets = torch.tensor([1, 3, 0, 0], device=device)
    weight = torch.tensor([1.0, 0.5, 0.0, 2.0], dtype=dtype, device=device)
    rows = torch.ones(4, dtype=dtype, device=device)
    for options in ({}, {"z": 1e-4}, {"weight": weight}, {"smoothing": 0.1, "weight": weight}):
        kwargs = {"weight": None, "row_weight": rows, "grad_factor": rows, "smoothing": 0.0, "z": 0.0, "cap": None}
        kwargs.update(options)
        losses, grad = softmax_cross_entropy_rows(logits, targets, block_v=block_v, **kwargs)
        assert torch.isfinite(grad).all()
        assert_result((losses, grad), numba_oracle(logits, targets, **kwargs), dtype, f"extreme {options}")
        if "smoothing" not in options:  # smoothing puts target mass on the -inf classes: infinite loss
            assert torch.isfinite(losses).all()
            assert torch.all(grad[1, [0, 2]] == 0), "a -inf logit gets exactly zero gradient"


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("block_v", [None, 2], ids=["one-tile", "tiles2"])
def test_logits_near_the_largest_float32(device, block_v):
    """±3e38 in float32: differences of logits overflow, the halved sums of the loss do not."""
    logits = torch.tensor([[3e38, -3e38, 0.0, 1.0], [1.0, 2.0, -3e38, 3e38]], device=device)
    targets = torch.tensor([0, 3], device=device)
    rows = torch.ones(2, device=device)
    kwargs = {"weight": None, "row_weight": rows, "grad_factor": rows, "smoothing": 0.1, "z": 0.0, "cap": None}
    losses, grad = softmax_cross_entropy_rows(logits, targets, block_v=block_v, **kwargs)
    # floor * sum_c (LSE - u_c) = 0.025 * (0 + 6e38 + 3e38 + 3e38), exact to float32 rounding.
    assert_close(losses, torch.tensor([0.025 * 12e38, 0.025 * 12e38], dtype=torch.float64), torch.float32)
    assert_result((losses, grad), numba_oracle(logits, targets, **kwargs), torch.float32)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("block_v", [None, 4], ids=["one-tile", "tiles4"])
@pytest.mark.parametrize("index", [True, False], ids=["index", "probs"])
def test_nan_and_inf_logits_stay_in_their_row(device, block_v, index):
    """A NaN or +inf logit makes its row's loss and gradient NaN (as the Numba kernel), and no other row's."""
    case = Case(5, 10, torch.float32, device, index=index, options={"smoothing": 0.1}, seed=10)
    case.logits[1, 4] = math.nan
    case.logits[3, 7] = math.inf
    losses, grad = case.triton(block_v=block_v)
    assert torch.isnan(losses[[1, 3]]).all()
    assert torch.isnan(grad[[1, 3]]).all()
    assert torch.isfinite(losses[[0, 4]]).all()
    assert torch.isfinite(grad[[0, 2, 4]]).all()
    assert_result((losses, grad), case.numba(), torch.float32)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("block_v", [None, 4], ids=["one-tile", "tiles4"])
def test_zero_weight_rows_contribute_nothing_whatever_their_logits(device, block_v):
    """r_n = 0: loss exactly 0 and a zero gradient, for infinite and NaN logits too; f_n = 0: zero gradient."""
    logits = torch.tensor(
        [[math.inf, 1.0, 2.0, 3.0, 0.0], [math.nan, 1.0, 0.0, 0.0, 0.0], [1.0, 2.0, 3.0, 4.0, 5.0]], device=device
    )
    targets = torch.tensor([0, 1, 2], device=device)
    row_weight = torch.tensor([0.0, 0.0, 2.0], device=device)
    grad_factor = torch.tensor([0.0, 0.0, 0.0], device=device)
    out = torch.full_like(logits, 9.0)
    kwargs = {"weight": None, "row_weight": row_weight, "smoothing": 0.2, "z": 1e-3, "cap": None}
    losses, grad = softmax_cross_entropy_rows(
        logits, targets, grad_factor=grad_factor, out=out, block_v=block_v, **kwargs
    )
    assert losses[0] == 0
    assert losses[1] == 0
    assert torch.all(grad == 0)
    expected = numba_oracle(
        logits[2:], targets[2:], grad_factor=grad_factor[2:], **{**kwargs, "row_weight": row_weight[2:]}
    )
    assert_close(losses[2:], expected[0], torch.float32)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("n_classes", "block_v"), [(6, None), (10, 4)], ids=["one-tile", "tiles4"])
@pytest.mark.parametrize("weighted", [False, True], ids=["plain", "weighted"])
def test_index_outside_the_classes_gives_nan_and_stays_in_bounds(device, n_classes, block_v, weighted):
    """Indices C and -1 (value checks off): NaN loss and gradient for those rows, nothing read or written outside."""
    gen = torch.Generator().manual_seed(11)
    buffer = torch.full((6, n_classes), 7.0, dtype=torch.float64)
    buffer[1:5] = torch.randn(4, n_classes, generator=gen, dtype=torch.float64)
    buffer, logits = buffer.to(device), buffer.to(device)[1:5]
    targets = torch.tensor([1, n_classes, -1, 2], device=device)
    rows = torch.ones(4, dtype=torch.float64, device=device)
    weight = torch.linspace(0.5, 1.5, n_classes, dtype=torch.float64, device=device) if weighted else None
    kwargs = {"weight": weight, "row_weight": rows, "grad_factor": rows, "smoothing": 0.1, "z": 1e-2, "cap": None}
    grad_buffer = torch.full((6, n_classes), 7.0, dtype=torch.float64, device=device)
    losses, grad = softmax_cross_entropy_rows(logits, targets, out=grad_buffer[1:5], block_v=block_v, **kwargs)
    assert torch.isnan(losses[1:3]).all()
    assert torch.isnan(grad[1:3]).all()
    assert torch.all(grad_buffer[[0, 5]] == 7.0), "nothing written outside the gradient's rows"
    valid = [0, 3]
    expected = numba_oracle(
        logits[valid], targets[valid], **{**kwargs, "row_weight": rows[valid], "grad_factor": rows[valid]}
    )
    assert_result((losses[valid], grad[valid]), expected, torch.float64)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("index", [True, False], ids=["index", "probs"])
def test_k_dimensional_batch(device, index):
    case = Case(6, 9, torch.float32, device, index=index, options=ALL_OPTIONS, seed=12, batch_shape=(2, 3))
    losses, grad = case.triton()
    assert losses.shape == (2, 3)
    assert grad.shape == (2, 3, 9)
    assert_result((losses, grad), case.numba(), torch.float32)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("index", [True, False], ids=["index", "probs"])
@pytest.mark.parametrize("block_v", [None, 4], ids=["one-tile", "tiles4"])
def test_non_contiguous_views(device, index, block_v):
    """A permuted view (class stride not 1: copied) and a row-strided slice (read through its stride)."""
    gen = torch.Generator().manual_seed(13)
    base = torch.randn(3, 10, 4, generator=gen).to(device)
    permuted = base.permute(0, 2, 1)  # (3, 4, 10), class stride 4
    sliced = torch.randn(12, 14, generator=gen).to(device)[:, 2:12]  # (12, 10), row stride 14
    for logits in (permuted, sliced):
        batch = logits.shape[:-1]
        if index:
            targets = torch.randint(0, 10, batch, generator=gen).to(device)
        else:
            targets = torch.softmax(torch.randn(3, 10, 4, generator=gen), dim=1).permute(0, 2, 1)
            targets = targets.reshape(logits.shape).to(device) if logits is permuted else targets.reshape(12, 10)
        rows = torch.rand(batch, generator=gen).to(device)
        kwargs = {"weight": None, "row_weight": rows, "grad_factor": rows, "smoothing": 0.1, "z": 1e-3, "cap": 3.0}
        result = softmax_cross_entropy_rows(logits, targets, block_v=block_v, **kwargs)
        assert result[1].shape == logits.shape
        assert_result(result, numba_oracle(logits, targets, **kwargs), torch.float32, f"strides {logits.stride()}")


def _core_arguments(logits, targets, *, weight, sample_weight, smoothing, z, cap, ignore_index=-100):
    """The kernel's arguments as ``losses._fused_softmax_cross_entropy`` builds them (``reduction="mean"``),
    and the mean's denominator; ``logits`` with the class axis last."""
    acc = _accumulation(logits.dtype)
    index = not targets.is_floating_point()
    rows = torch.ones(logits.shape[:-1], dtype=acc, device=logits.device)
    if sample_weight is not None:
        rows = rows * sample_weight
    if index:
        valid = targets != ignore_index
        rows = rows * valid.to(acc)
        targets = torch.where(valid, targets, 0)
    factor = rows if weight is None or not index else rows * weight[targets]
    denominator = factor.sum()
    scale = torch.where(denominator != 0, 1.0 / denominator, 0.0)
    kwargs = {
        "weight": weight,
        "row_weight": rows,
        "grad_factor": rows * scale,
        "smoothing": smoothing,
        "z": z,
        "cap": cap,
    }
    return targets, kwargs, denominator


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("index", [True, False], ids=["index", "probs"])
@pytest.mark.parametrize("options", [OPTIONS[0], OPTIONS[3], ALL_OPTIONS], ids=_ids)
def test_end_to_end_against_the_reference_path(device, index, options):
    """The mean loss and its gradient as the core forms them, against the generic array-API path in float64."""
    gen = torch.Generator().manual_seed(14)
    n_rows, n_classes, d = 4, 7, 3
    logits = torch.randn(n_rows, n_classes, d, generator=gen, dtype=torch.float64) * 2  # (N, C, d): class axis 1
    if index:
        targets = torch.randint(0, n_classes, (n_rows, d), generator=gen)
        targets[1, 2] = -100
    else:
        targets = torch.softmax(torch.randn(n_rows, n_classes, d, generator=gen, dtype=torch.float64), dim=1)
    weight = torch.rand(n_classes, generator=gen, dtype=torch.float64) + 0.2 if options.get("weight") else None
    sample_weight = torch.rand(n_rows, d, generator=gen, dtype=torch.float64) if options.get("sample_weight") else None
    smoothing, z, cap = options.get("smoothing", 0.0), options.get("z", 0.0), options.get("cap")

    with kernels.disabled():
        loss, grad = ce.softmax_cross_entropy_with_grad(
            logits.numpy(),
            targets.numpy(),
            axis=1,
            weight=None if weight is None else weight.numpy(),
            label_smoothing=smoothing,
            z_loss=z,
            softcap=cap,
            sample_weight=None if sample_weight is None else sample_weight.numpy(),
        )

    moved = logits.to(device).permute(0, 2, 1)  # the core moves the class axis last: a permuted view
    kernel_targets = targets.to(device) if index else targets.to(device).permute(0, 2, 1)
    kernel_targets, kwargs, denominator = _core_arguments(
        moved,
        kernel_targets,
        weight=None if weight is None else weight.to(device),
        sample_weight=None if sample_weight is None else sample_weight.to(device),
        smoothing=smoothing,
        z=z,
        cap=cap,
    )
    losses, kernel_grad = softmax_cross_entropy_rows(moved, kernel_targets, **kwargs)
    assert_close(losses.sum() / denominator, torch.as_tensor(loss), torch.float64, "mean loss")
    assert_close(kernel_grad.permute(0, 2, 1), torch.as_tensor(grad), torch.float64, "gradient")


@pytest.mark.parametrize("device", DEVICES)
def test_errors_name_the_parameter(device):
    case = Case(4, 5, torch.float32, device, seed=15)
    with pytest.raises(TypeError, match="`logits` must be a float16, bfloat16, float32 or float64"):
        softmax_cross_entropy_rows(case.logits.to(torch.int32), case.targets, **case.kwargs)
    with pytest.raises(ValueError, match="`targets` must be integer class indices"):
        softmax_cross_entropy_rows(case.logits, case.targets[:3], **case.kwargs)
    with pytest.raises(ValueError, match="`targets` must be integer class indices"):
        softmax_cross_entropy_rows(case.logits, case.targets.double(), **case.kwargs)
    with pytest.raises(ValueError, match=r"`weight` must have shape \(5,\)"):
        case.triton(weight=torch.ones(4, device=device))
    with pytest.raises(ValueError, match="`row_weight` must have the batch shape"):
        case.triton(row_weight=torch.ones(3, device=device))
    with pytest.raises(ValueError, match="`block_v` must be a power of two; got 24"):
        case.triton(block_v=24)
    with pytest.raises(ValueError, match="`logits` must have a class axis of at least one class"):
        softmax_cross_entropy_rows(case.logits[:, :0], case.targets, **case.kwargs)


@pytest.mark.parametrize("device", DEVICES)
def test_empty_batch(device):
    logits = torch.empty(0, 5, device=device)
    empty = torch.empty(0, device=device)
    losses, grad = softmax_cross_entropy_rows(
        logits,
        torch.empty(0, dtype=torch.int64, device=device),
        weight=None,
        row_weight=empty,
        grad_factor=empty,
        smoothing=0.0,
        z=0.0,
        cap=None,
    )
    assert losses.shape == (0,)
    assert grad.shape == (0, 5)


@pytest.mark.skipif(INTERPRETED or not CUDA, reason="needs a CUDA GPU with Triton compiling (TRITON_INTERPRET unset)")
def test_cpu_tensors_need_the_interpreter():
    logits = torch.randn(3, 4)
    ones = torch.ones(3)
    with pytest.raises(ValueError, match="`logits` must be on a CUDA device"):
        softmax_cross_entropy_rows(
            logits,
            torch.zeros(3, dtype=torch.int64),
            weight=None,
            row_weight=ones,
            grad_factor=ones,
            smoothing=0.0,
            z=0.0,
            cap=None,
        )


@NEEDS_CUDA
@pytest.mark.parametrize("n_classes", [32000, 131072], ids=["one-tile", "tiles"])
def test_more_than_2_to_the_31_elements(n_classes):
    """64-bit row offsets: rows beyond element 2^31 against float64 PyTorch (the gradient over the logits)."""
    n_rows = 2**31 // n_classes + 3
    gen = torch.Generator(device="cuda").manual_seed(16)
    logits = torch.randn(n_rows, n_classes, device="cuda", dtype=torch.bfloat16, generator=gen)
    targets = torch.randint(0, n_classes, (n_rows,), device="cuda", generator=gen)
    ones = torch.ones(n_rows, device="cuda")
    check = torch.tensor([0, n_rows // 2, n_rows - 2, n_rows - 1], device="cuda")
    x = logits[check].double()
    kwargs = {"weight": None, "row_weight": ones, "grad_factor": ones, "smoothing": 0.0, "z": 0.0, "cap": None}
    losses, grad = softmax_cross_entropy_rows(logits, targets, out=logits, **kwargs)
    assert grad is logits
    expected_loss = torch.logsumexp(x, dim=-1) - x.gather(1, targets[check, None])[:, 0]
    expected_grad = torch.softmax(x, dim=-1) - torch.nn.functional.one_hot(targets[check], n_classes).double()
    assert_close(losses[check], expected_loss, torch.float32)
    assert_close(grad[check], expected_grad, torch.bfloat16)


@NEEDS_CUDA
def test_no_host_synchronization():
    cases = [Case(64, 1000, torch.float32, "cuda", index=i, options=ALL_OPTIONS, seed=17) for i in (True, False)]
    cases.append(Case(8, 40000, torch.bfloat16, "cuda", options={"weight": True}, seed=18))
    calls = []
    for case in cases:
        calls += [
            lambda case=case: case.triton(),
            lambda case=case: case.triton(grad_factor=None),
            lambda case=case: case.triton(out=torch.empty_like(case.logits)),
            lambda case=case: case.triton(out=case.logits),
        ]
    for call in calls:  # compile first
        call()
    torch.cuda.synchronize()
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for call in calls:
            call()
    finally:
        torch.cuda.set_sync_debug_mode(previous)
    torch.cuda.synchronize()


@NEEDS_CUDA
def test_forward_only_allocates_per_row():
    n_rows, n_classes = 4096, 8192
    case = Case(n_rows, n_classes, torch.float32, "cuda", options={"smoothing": 0.1}, seed=19)
    case.triton(grad_factor=None)  # compile first
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    losses, _ = case.triton(grad_factor=None)
    torch.cuda.synchronize()
    assert torch.cuda.max_memory_allocated() - before <= 64 * n_rows + 2**20, "O(N) memory, not O(N C)"
    assert_close(losses, case.numba(grad_factor=None)[0], torch.float32)
