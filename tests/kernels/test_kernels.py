"""The fused CPU kernels against the generic array-API path (the reference), option by option.

The generic path is itself checked against PyTorch in ``test_losses_torch.py``; here every kernel
path must reproduce it within the tolerance of the dtype, including the edge cases (logits of
±1e4, -inf logits, all targets ignored, rows longer than a kernel block, K-dimensional input).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

import crossentropy as ce
from crossentropy import kernels
from crossentropy.kernels import numba as numba_kernels
from crossentropy.kernels.numba._math import exp_nonpositive, tanh
from crossentropy.kernels.numba._softmax import BLOCK
from tests._support import assert_matches, both_paths, record_entry_calls, tolerance

RNG = np.random.default_rng(31)
DTYPES = [np.float32, np.float64]
# Class counts: tiny, one partial block, several blocks with a ragged last one.
WIDTHS = [3, 1000, 2 * BLOCK + 17]
OPTIONS = [
    {},
    {"weight": "class"},
    {"label_smoothing": 0.1},
    {"label_smoothing": 0.3, "weight": "class"},
    {"z_loss": 1e-2},
    {"softcap": 4.0},
    {"sample_weight": "sample"},
    {"softcap": 3.0, "label_smoothing": 0.2, "z_loss": 1e-3, "weight": "class", "sample_weight": "sample"},
]


def _resolve(options: dict, n_rows: int, n_classes: int, dtype) -> dict:
    resolved = dict(options)
    if options.get("weight") == "class":
        resolved["weight"] = RNG.uniform(0.2, 2.0, n_classes).astype(dtype)
    if options.get("sample_weight") == "sample":
        resolved["sample_weight"] = RNG.uniform(0.0, 2.0, n_rows).astype(dtype)
    return resolved


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("n_classes", WIDTHS)
@pytest.mark.parametrize("targets_kind", ["index", "probs"])
@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: "+".join(o) or "plain")
def test_kernel_matches_reference(dtype, n_classes, targets_kind, options):
    n_rows = 9
    logits = (RNG.standard_normal((n_rows, n_classes)) * 3).astype(dtype)
    if targets_kind == "index":
        targets = RNG.integers(0, n_classes, n_rows)
        targets[2] = -100
    else:
        targets = ce.softmax(RNG.standard_normal((n_rows, n_classes))).astype(dtype)
    resolved = _resolve(options, n_rows, n_classes, dtype)
    for reduction in ("mean", "sum", "none"):
        what = f"{targets_kind} {options} {reduction}"
        args = (logits, targets)
        kernel, reference = both_paths(ce.softmax_cross_entropy_with_grad, *args, reduction=reduction, **resolved)
        assert_matches(kernel, reference, dtype, what)
        forward, _ = both_paths(ce.softmax_cross_entropy, *args, reduction=reduction, **resolved)
        assert_matches(forward, reference[0], dtype, what + " (forward only)")


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_extreme_and_infinite_logits(dtype):
    logits = np.array(
        [
            [1e4, -1e4, 0.0, 5.0],
            [-np.inf, 2.0, -np.inf, 1.0],  # -inf on non-target classes
            [-1e4, -1e4, -1e4, -1e4 + 1],
            [3.0, -np.inf, -np.inf, -np.inf],
        ],
        dtype=dtype,
    )
    targets = np.array([1, 3, 0, 0])
    weight = np.array([1.0, 0.5, 0.0, 2.0], dtype)
    for options in ({}, {"z_loss": 1e-4}, {"weight": weight}, {"label_smoothing": 0.1, "weight": weight}):
        kernel, reference = both_paths(ce.softmax_cross_entropy_with_grad, logits, targets, reduction="none", **options)
        assert np.all(np.isfinite(kernel[1]))
        assert_matches(kernel, reference, dtype, f"extreme {options}")
        if "label_smoothing" not in options:  # smoothing puts target mass on the -inf classes: infinite loss
            assert np.all(np.isfinite(kernel[0]))
            assert np.all(kernel[1][1, [0, 2]] == 0), "a -inf logit gets exactly zero gradient"


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_all_ignored_gives_zero_loss_and_gradient(dtype):
    logits = RNG.standard_normal((5, 7)).astype(dtype)
    targets = np.full(5, -100)
    loss, grad = ce.softmax_cross_entropy_with_grad(logits, targets)
    assert float(loss) == 0.0
    assert not np.any(grad)
    assert float(ce.softmax_cross_entropy(logits, targets, label_smoothing=0.2)) == 0.0


def test_nan_logit_propagates_to_its_row():
    logits = RNG.standard_normal((3, 6)).astype(np.float32)
    logits[1, 4] = np.nan
    loss, grad = ce.softmax_cross_entropy_with_grad(logits, np.array([0, 1, 2]), reduction="none")
    assert np.isnan(loss[1])
    assert np.all(np.isnan(grad[1]))
    assert np.all(np.isfinite(loss[[0, 2]]))


def test_k_dimensional_input_and_class_axis():
    logits = RNG.standard_normal((2, 5, 3, 4)).astype(np.float32)  # (N, C, d1, d2): class axis 1
    targets = RNG.integers(0, 5, (2, 3, 4))
    targets[0, 1, 2] = -100
    kernel, reference = both_paths(
        ce.softmax_cross_entropy_with_grad, logits, targets, axis=1, label_smoothing=0.1, reduction="none"
    )
    assert_matches(kernel, reference, np.float32, "K-dimensional")


@pytest.mark.parametrize("targets_kind", ["index", "probs"])
@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: "+".join(o) or "plain")
def test_half_precision_input_runs_on_the_kernel_and_returns_half(targets_kind, options):
    """float16 read as stored, accumulated in float32, the gradient rounded once to float16."""
    n_rows, n_classes = 5, 2 * BLOCK + 17
    logits = (RNG.standard_normal((n_rows, n_classes)) * 3).astype(np.float16)
    if targets_kind == "index":
        targets = RNG.integers(0, n_classes, n_rows)
    else:
        targets = ce.softmax(RNG.standard_normal((n_rows, n_classes))).astype(np.float32)
    resolved = _resolve(options, n_rows, n_classes, np.float32)
    kernel, reference = both_paths(ce.softmax_cross_entropy_with_grad, logits, targets, **resolved)
    assert_matches(kernel, reference, np.float16, f"float16 {targets_kind} {options}")


def test_long_rows_stay_exact():
    """A row of a million classes: many blocks, the running maximum rising late in the row."""
    n_classes = 1_000_000
    logits = RNG.standard_normal((2, n_classes)).astype(np.float32)
    logits[0, -3] = 25.0  # the maximum in the last block
    logits[1, 5] = 25.0  # the maximum in the first block
    targets = np.array([n_classes - 3, 7])
    kernel, reference = both_paths(ce.softmax_cross_entropy_with_grad, logits, targets, reduction="sum")
    assert_matches(kernel, reference, np.float32, "long rows")
    # An independent float64 oracle for the loss.
    x = logits.astype(np.float64)
    m = x.max(axis=1)
    expected = np.sum(m + np.log(np.exp(x - m[:, None]).sum(axis=1)) - x[[0, 1], targets])
    np.testing.assert_allclose(float(kernel[0]), expected, rtol=1e-5)


def test_kernel_does_not_touch_its_inputs():
    logits = RNG.standard_normal((6, 9)).astype(np.float32)
    targets = ce.softmax(RNG.standard_normal((6, 9))).astype(np.float32)
    weight = RNG.uniform(0.5, 1.5, 9).astype(np.float32)
    copies = [a.copy() for a in (logits, targets, weight)]
    ce.softmax_cross_entropy_with_grad(logits, targets, weight=weight, softcap=2.0, label_smoothing=0.1)
    for original, copy in zip((logits, targets, weight), copies, strict=True):
        np.testing.assert_array_equal(original, copy)


def test_disabled_is_scoped():
    assert kernels.enabled()
    with kernels.disabled():
        assert not kernels.enabled()
    assert kernels.enabled()


# --------------------------------------------------------------------------------------------
# The vectorizable scalar math, against float64 NumPy


def _jit_map(function):
    from numba import njit

    @njit
    def apply(values, out):
        for i in range(values.shape[0]):
            out[i] = function(values[i])

    return apply


def test_float32_exp_is_accurate_to_one_ulp():
    t = -np.concatenate([np.linspace(0, 87, 400_001), [0.0, 1e-8, 86.99, 86.999, 87.0, 87.5, 100.0, np.inf]])
    t = t.astype(np.float32)
    out = np.empty_like(t)
    _jit_map(exp_nonpositive)(t, out)
    expected = np.exp(t.astype(np.float64))
    kept = t >= -87
    ulps = np.abs(out[kept] - expected[kept]) / np.spacing(expected[kept].astype(np.float32))
    assert ulps.max() <= 1.1
    assert np.all(out[t < -87] == 0)  # flushed below e^-87, exactly 0 for -inf


def test_float32_tanh_is_accurate_to_two_ulps():
    y = np.concatenate([np.linspace(-12, 12, 400_001), [1e-30, -1e-20, 0.624, 0.626, 40.0, np.inf, -np.inf]])
    y = y.astype(np.float32)
    out = np.empty_like(y)
    _jit_map(tanh)(y, out)
    expected = np.tanh(y.astype(np.float64))
    nonzero = expected != 0
    relative = np.abs(out[nonzero] - expected[nonzero]) / np.abs(expected[nonzero])
    assert relative.max() <= 2 * np.finfo(np.float32).eps
    assert out[y == 0].tolist() == [0.0] * int(np.sum(y == 0))


@pytest.mark.parametrize(("function", "name"), [(exp_nonpositive, "exp"), (tanh, "tanh")])
def test_nan_in_nan_out(function, name):
    values = np.array([np.nan, -1.0], dtype=np.float32)
    out = np.empty_like(values)
    _jit_map(function)(values, out)
    assert math.isnan(out[0]), name
    assert not math.isnan(out[1]), name


def test_every_option_combination_compiles_once_per_dtype():
    """A cheap sweep over all option combinations on a tiny input: the kernels accept every one."""
    logits = RNG.standard_normal((3, 5)).astype(np.float32)
    targets = np.array([0, 4, -100])
    flags = itertools.product([None, np.ones(5, np.float32)], [0.0, 0.1], [0.0, 1e-3], [None, 2.0])
    for weight, smoothing, z, cap in flags:
        options = {"weight": weight, "label_smoothing": smoothing, "z_loss": z, "softcap": cap}
        kernel, reference = both_paths(ce.softmax_cross_entropy_with_grad, logits, targets, **options)
        assert_matches(kernel, reference, np.float32, str(options))


# --------------------------------------------------------------------------------------------
# Dispatch, buffers, memory, storage formats


def _spy_on_kernels(monkeypatch) -> list[str]:
    """Record the names of the Numba backend's entry points called from now on."""
    return record_entry_calls(monkeypatch, numba_kernels, [])


def test_numpy_floats_dispatch_to_the_kernels(monkeypatch):
    calls = _spy_on_kernels(monkeypatch)
    logits = RNG.standard_normal((4, 5))
    for dtype in (np.float16, np.float32, np.float64):
        x = logits.astype(dtype)
        ce.softmax_cross_entropy(x, np.array([0, 1, 2, 3]))
        ce.sigmoid_cross_entropy(x, np.ones_like(x))
    assert calls == ["softmax_cross_entropy_rows", "sigmoid_cross_entropy_elements"] * 3
    calls.clear()
    with kernels.disabled():
        ce.softmax_cross_entropy(logits, np.array([0, 1, 2, 3]))
        ce.sigmoid_cross_entropy(logits, np.ones_like(logits))
    assert calls == []


def test_torch_tensors_dispatch_to_the_kernels_only_outside_autograd(monkeypatch):
    import torch

    calls = _spy_on_kernels(monkeypatch)
    logits = torch.randn(4, 5, dtype=torch.float64)
    targets = torch.tensor([0, 1, 2, 3])
    for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        loss, grad = ce.softmax_cross_entropy_with_grad(logits.to(dtype), targets)
        assert loss.dtype == grad.dtype == dtype
        ce.sigmoid_cross_entropy(logits.to(dtype), torch.ones(4, 5))
    assert calls == ["softmax_cross_entropy_rows", "sigmoid_cross_entropy_elements"] * 4
    calls.clear()
    tracked = logits.clone().requires_grad_()
    ce.softmax_cross_entropy(tracked, targets).backward()  # autograd needs the generic path
    ce.softmax_cross_entropy(logits, targets, weight=torch.ones(5, dtype=torch.float64, requires_grad=True))
    assert calls == []
    with torch.no_grad():
        ce.softmax_cross_entropy(tracked, targets)
    assert calls == ["softmax_cross_entropy_rows"]


def _plain_rows(logits, targets, **options):
    """The kernel layer with the plain mean's factors (no weights)."""
    n = targets.shape[0]
    ones = np.ones(n, np.float32)
    return numba_kernels.softmax_cross_entropy_rows(
        logits,
        targets,
        weight=None,
        row_weight=ones,
        grad_factor=ones / n,
        smoothing=options.pop("smoothing", 0.0),
        z=0.0,
        cap=options.pop("cap", None),
        **options,
    )


def test_gradient_into_a_reused_buffer_equals_a_fresh_one():
    logits = RNG.standard_normal((7, 300)).astype(np.float32)
    targets = RNG.integers(0, 300, 7)
    losses, fresh = _plain_rows(logits, targets, smoothing=0.1)
    buffer = np.full_like(logits, np.nan)
    losses_again, written = _plain_rows(logits, targets, smoothing=0.1, out=buffer)
    assert written is buffer
    np.testing.assert_array_equal(buffer, fresh)
    np.testing.assert_array_equal(losses_again, losses)


@pytest.mark.parametrize(
    ("out", "message"),
    [
        (np.empty((7, 299), np.float32), "`out` must be an array of the logits' shape"),
        (np.empty((7, 300), np.float64), "`out` must be an array of the logits' shape"),
        (np.empty((300, 7), np.float32).T, "`out` must be a writeable C-contiguous array"),
    ],
)
def test_a_wrong_gradient_buffer_is_refused(out, message):
    logits = RNG.standard_normal((7, 300)).astype(np.float32)
    with pytest.raises(ValueError, match=message):
        _plain_rows(logits, RNG.integers(0, 300, 7), out=out)


def test_a_gradient_buffer_overlapping_the_logits_is_refused():
    storage = RNG.standard_normal(8 * 300).astype(np.float32)
    logits, shifted = storage[: 7 * 300].reshape(7, 300), storage[300:].reshape(7, 300)
    with pytest.raises(ValueError, match="`out` must not overlap `logits` unless it is `logits` itself"):
        _plain_rows(logits, RNG.integers(0, 300, 7), out=shifted)


@pytest.mark.parametrize("options", [{}, {"smoothing": 0.1}], ids=["plain", "smoothing"])
def test_the_gradient_can_overwrite_the_logits(options):
    logits = (RNG.standard_normal((5, 2 * BLOCK + 3)) * 3).astype(np.float32)
    targets = RNG.integers(0, logits.shape[1], 5)
    losses, fresh = _plain_rows(logits, targets, **options)
    overwritten = logits.copy()
    losses_in_place, written = _plain_rows(overwritten, targets, out=overwritten, **options)
    assert written is overwritten
    np.testing.assert_allclose(losses_in_place, losses, **tolerance(np.float32))  # sums may be ordered otherwise
    np.testing.assert_allclose(overwritten, fresh, **tolerance(np.float32))


@pytest.mark.parametrize(
    ("logits", "options", "message"),
    [
        (np.zeros((3, 4), np.float32), {"cap": 5.0}, "cannot be used with `softcap`"),
        (np.zeros((3, 4), np.float16), {}, "needs float32 or float64 logits; got float16"),
        (np.zeros((4, 3), np.float32).T, {}, "needs writeable C-contiguous logits"),
    ],
    ids=["softcap", "float16", "strided"],
)
def test_overwriting_the_logits_is_refused_where_the_kernels_read_them_twice(logits, options, message):
    with pytest.raises(ValueError, match=message):
        _plain_rows(logits, np.array([0, 1, 2]), out=logits, **options)


def test_overwriting_the_logits_needs_index_targets():
    logits = np.zeros((3, 4), np.float32)
    with pytest.raises(ValueError, match="needs class-index targets"):
        _plain_rows(logits, np.full((3, 4), 0.25, np.float32), out=logits)


def test_bfloat16_bit_patterns_match_pytorch_in_float32():
    """bfloat16 read as stored (PyTorch's bits, no copy), accumulated in float32, gradient rounded once."""
    import torch

    logits = torch.randn(6, 5000, generator=torch.Generator().manual_seed(3), dtype=torch.float32) * 4
    logits[0, 7] = 60.0
    stored = logits.to(torch.bfloat16)
    targets = np.array([7, 1, 4999, 0, 2500, 3])
    for smoothing, cap in ((0.0, None), (0.1, 30.0)):
        losses, grad = _plain_rows(
            stored.view(torch.uint16).numpy(), targets, storage="bfloat16", smoothing=smoothing, cap=cap
        )
        assert grad.dtype == np.uint16
        assert grad.shape == (6, 5000)
        upcast = stored.float().requires_grad_()
        capped = upcast if cap is None else cap * torch.tanh(upcast / cap)
        expected = torch.nn.functional.cross_entropy(
            capped, torch.from_numpy(targets), label_smoothing=smoothing, reduction="sum"
        )
        expected.backward()
        np.testing.assert_allclose(losses.sum(), expected.item() * 1.0, **tolerance(np.float32))
        got = torch.from_numpy(grad).view(torch.bfloat16).float()
        want = (upcast.grad / 6).to(torch.bfloat16).float()  # the mean's gradient, rounded once
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=2.0**-7, atol=1e-30)


def test_bfloat16_storage_is_checked():
    with pytest.raises(TypeError, match="`storage='bfloat16'` takes the bit patterns as uint16"):
        _plain_rows(np.zeros((2, 3), np.float32), np.array([0, 1]), storage="bfloat16")
    with pytest.raises(ValueError, match="`storage` must be None or 'bfloat16'"):
        _plain_rows(np.zeros((2, 3), np.uint16), np.array([0, 1]), storage="float8")


@pytest.mark.parametrize("dtype", [np.float16, np.float32], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("targets_kind", ["index", "probs"])
def test_forward_allocates_memory_proportional_to_the_rows_only(dtype, targets_kind):
    """Peak extra memory of the forward pass: O(N), not O(N·V) (NumPy reports to tracemalloc)."""
    import tracemalloc

    n_rows, n_classes = 64, 40_000
    logits = RNG.standard_normal((n_rows, n_classes)).astype(dtype)
    if targets_kind == "index":
        targets = RNG.integers(0, n_classes, n_rows)
    else:
        targets = np.full((n_rows, n_classes), 1.0 / n_classes, dtype=np.float32 if dtype == np.float16 else dtype)
    ce.softmax_cross_entropy(logits, targets)  # compile outside the measurement
    tracemalloc.start()
    try:
        ce.softmax_cross_entropy(logits, targets, label_smoothing=0.1)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < logits.nbytes / 50, f"peak {peak} bytes for logits of {logits.nbytes} bytes"


def test_row_offsets_do_not_overflow_past_two_to_the_31_elements():
    """N·V > 2^31: the last rows must be read where they are, not at an int32-wrapped offset.

    The logits are mostly untouched zeros (pages the OS maps lazily), so the array costs only the
    memory of the rows written here.
    """
    n_classes = 2**16
    n_rows = 2**15 + 4  # 2^31 + 2^18 elements
    logits = np.zeros((n_rows, n_classes), dtype=np.float32)
    tail = RNG.standard_normal((4, n_classes)).astype(np.float32) * 3
    logits[-4:] = tail
    head = RNG.standard_normal((4, n_classes)).astype(np.float32) * 3
    logits[:4] = head
    targets = RNG.integers(0, n_classes, n_rows)
    losses = ce.softmax_cross_entropy(logits, targets, reduction="none")

    def expected(rows, y):
        x = rows.astype(np.float64)
        m = x.max(axis=1)
        return m + np.log(np.exp(x - m[:, None]).sum(axis=1)) - x[np.arange(len(y)), y]

    np.testing.assert_allclose(losses[-4:], expected(tail, targets[-4:]), rtol=1e-5)
    np.testing.assert_allclose(losses[:4], expected(head, targets[:4]), rtol=1e-5)
    np.testing.assert_allclose(losses[4:-4], np.log(n_classes), rtol=1e-5)


def test_the_numba_cache_is_cleared_when_a_kernel_source_changes(tmp_path):
    from types import SimpleNamespace

    from crossentropy.kernels.numba import _cache

    dispatcher = SimpleNamespace(
        _cache=SimpleNamespace(_cache_path=str(tmp_path)),
        py_func=SimpleNamespace(__module__="crossentropy.kernels.numba._softmax"),
    )
    stale = [tmp_path / "_softmax.kernel-12.py311.nbi", tmp_path / "_softmax.kernel-12.py311.1.nbc"]
    other = tmp_path / "_sigmoid.kernel-3.py311.nbi"
    for path in [*stale, other]:
        path.write_bytes(b"compiled")
    (tmp_path / "_softmax.sources.sha256").write_text("digest of older sources")
    _cache.refresh(dispatcher)
    assert not any(path.exists() for path in stale)
    assert other.exists(), "another module's cache is its own business"
    fresh = tmp_path / "_softmax.kernel-12.py311.nbi"
    fresh.write_bytes(b"compiled again")
    _cache.refresh(dispatcher)  # same sources: nothing to clear
    assert fresh.exists()


@pytest.mark.parametrize("shape", [(0, 5), (3, 0), (0,)], ids=str)
def test_empty_input_is_refused_before_either_path(shape):
    """Empty logits are an error on both paths, with the same message (the check precedes dispatch)."""
    logits = np.zeros(shape, np.float32)
    targets = np.zeros(shape[:-1], np.int64)
    with pytest.raises(ValueError, match="`logits` must not be empty") as on_kernels:
        ce.softmax_cross_entropy_with_grad(logits, targets)
    with kernels.disabled(), pytest.raises(ValueError, match="`logits` must not be empty") as on_generic:
        ce.softmax_cross_entropy_with_grad(logits, targets)
    assert str(on_kernels.value) == str(on_generic.value)
    with pytest.raises(ValueError, match="`logits` must not be empty"):
        ce.sigmoid_cross_entropy(logits, np.zeros(shape, np.float32))


@pytest.mark.parametrize("targets_kind", ["index", "probs"])
@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: "+".join(o) or "plain")
def test_torch_tensors_on_the_kernels_match_the_generic_path(targets_kind, options):
    """CPU PyTorch tensors outside autograd run on the kernels, read in place; results are tensors."""
    import torch

    n_rows, n_classes = 6, BLOCK + 9
    logits = torch.from_numpy(RNG.standard_normal((n_rows, n_classes)) * 3)
    if targets_kind == "index":
        targets = torch.from_numpy(RNG.integers(0, n_classes, n_rows))
        targets[1] = -100
    else:
        targets = torch.softmax(torch.from_numpy(RNG.standard_normal((n_rows, n_classes))), dim=-1)
    resolved = _resolve(options, n_rows, n_classes, np.float64)
    for dtype in (torch.float64, torch.float32, torch.bfloat16):
        compute = torch.float32 if dtype == torch.bfloat16 else dtype
        as_compute = {
            k: torch.from_numpy(v).to(compute) if isinstance(v, np.ndarray) else v for k, v in resolved.items()
        }
        t = targets if targets_kind == "index" else targets.to(compute)
        kernel = ce.softmax_cross_entropy_with_grad(logits.to(dtype), t, **as_compute)
        with kernels.disabled():
            reference = ce.softmax_cross_entropy_with_grad(logits.to(dtype), t, **as_compute)
        for got, want in zip(kernel, reference, strict=True):
            assert isinstance(got, torch.Tensor)
            assert got.dtype == want.dtype == dtype
            np.testing.assert_allclose(got.float().numpy(), want.float().numpy(), **tolerance(dtype))


def _rows_with_tied_maxima(dtype):
    """Rows of three and a half blocks whose maximum (8.0) appears where the accuracy is easy to get wrong,
    and the target of each: the first maximum in a later block than a second one, a tie within a
    block, the first entry of the row or of a block, the last entry of the row, and a target that
    is not a maximum at all."""
    n_classes = 3 * BLOCK + 5
    logits = RNG.standard_normal((9, n_classes)).astype(dtype)
    rows = [  # (where the maximum is, the target)
        ((BLOCK + 10, 2 * BLOCK + 7), 2 * BLOCK + 7),  # a later block ties: not the first maximum
        ((BLOCK + 10, 2 * BLOCK + 7), BLOCK + 10),
        ((BLOCK + 3, BLOCK + 10), BLOCK + 10),  # a tie within a block
        ((BLOCK + 3, BLOCK + 10), BLOCK + 3),
        ((5,), 6),  # not a maximum
        ((0, 1), 0),
        ((n_classes - 1,), n_classes - 1),  # in the last, partial block
        ((2 * BLOCK, 2 * BLOCK + 1), 2 * BLOCK),  # at a block's start
        ((2 * BLOCK, 2 * BLOCK + 1), 2 * BLOCK + 1),
    ]
    targets = np.empty(len(rows), np.int64)
    for n, (maxima, target) in enumerate(rows):
        logits[n, list(maxima)] = 8.0
        targets[n] = target
    return logits, targets


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize(
    "options", [{}, {"temperature": 0.5}, {"softcap": 3.0}, {"temperature": 2.0, "softcap": 5.0}],
    ids=["plain", "temperature", "softcap", "both"],
)  # fmt: skip
def test_stats_accuracy_is_the_first_maximum_across_blocks(dtype, options):
    """``return_stats``'s accuracy is ``argmax == target`` with the first maximum (NumPy's and torch's
    ``argmax``), on the forward kernel, the fused step and (without a soft-cap) the step written
    over the logits, which searches for the maximum while it overwrites the blocks."""
    logits, targets = _rows_with_tied_maxima(dtype)
    expected = np.argmax(logits, axis=1) == targets
    assert expected.tolist() == [False, True, False, True, False, True, True, True, False]
    _, stats = ce.softmax_cross_entropy(logits, targets, reduction="none", return_stats=True, **options)
    np.testing.assert_array_equal(stats.accuracy, expected)
    *_, stats = ce.softmax_cross_entropy_with_grad(logits, targets, return_stats=True, **options)
    np.testing.assert_array_equal(stats.accuracy, expected)
    if "softcap" not in options:
        overwritten = logits.copy()
        *_, stats = ce.softmax_cross_entropy_with_grad(
            overwritten, targets, out=overwritten, return_stats=True, **options
        )
        np.testing.assert_array_equal(stats.accuracy, expected)
