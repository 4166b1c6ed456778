"""The Triton fused linear cross-entropy primitives against a float64 reference that materializes the logits.

:func:`crossentropy.kernels.triton._linear.linear_logsumexp` and
:func:`~crossentropy.kernels.triton._linear.linear_cross_entropy_gradients` never form the N×V
logits; the reference here does, in float64 with plain PyTorch operations, from the same
(rounded) inputs: ``torch.logsumexp`` for the log-sum-exp, the target weights written out as a
dense matrix, and the gradients both in closed form and by autograd of the loss. Covered: every
dtype, bias or none, class weights, label smoothing over a vocabulary shard (``vocab_start``,
``total_classes``, targets outside the shard), a soft-cap, gradient filtering (exact dropping of
the probabilities below the threshold, tile skipping that does not depend on the tile sizes, and
the measured error of filtering at 2^-12), every combination of ``need_*``, rows with a zero
gradient factor, shapes that are not multiples of the tiles and tiles forced small enough to
give several in each of N, V and H.

Tolerances follow the dtype (``_support.tolerance``) and the size of what is summed: an entry of a
product is compared within ``atol + rtol * (|A| |B|)`` (its rounding error bound), since an
entry near 0 by cancellation carries the error of its largest terms. Half precision: the logits
are exact products accumulated in float32 (float32's tolerance); the gradients round the tile of
``g`` to the input's dtype before the two products (the half dtype's tolerance).

Each test runs on a device axis: ``"cpu"`` in Triton's interpreter (``TRITON_INTERPRET=1``, which
``conftest.py`` sets without a CUDA GPU), ``"cuda"`` compiled for the GPU; the tests of more than
2^31 elements and of host synchronization need a GPU. Shapes are small: the interpreter runs
every program in Python.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from tests._support import NEEDS_CUDA, tolerance, triton_devices

pytest.importorskip("triton", reason="the Triton backend's kernels need the triton package")

from crossentropy.kernels.triton import _linear
from crossentropy.kernels.triton._linear import linear_cross_entropy_gradients, linear_logsumexp

DEVICES = triton_devices()
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
# Tiles small enough for several in each of N (37 rows: 16 + 16 + 5), V (99 classes: 3 × 32 + 3)
# and H (45 features: 16 + 16 + 13).
SHAPE = (37, 45, 99)
SMALL = {"block_n": 16, "block_v": 32, "block_h": 16}
OPTIONS = [
    {},
    {"bias": True},
    {"class_weight": True, "bias": True},
    {"smoothing": 0.2, "shard": True},
    {"cap": 3.0},
    {"temperature": 0.7, "bias": True},
    {"cap": 2.5, "smoothing": 0.1, "class_weight": True, "bias": True, "shard": True, "temperature": 1.6},
]
OPTION_IDS = ["plain", "bias", "weights", "smoothing-shard", "cap", "temperature", "all"]
# A vocabulary shard: classes [vocab_start, vocab_start + V) of a vocabulary of TOTAL classes.
VOCAB_START, TOTAL = 60, 250
IGNORED = -100


def _acc(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


class Case:
    """Inputs of ``n_rows`` × ``n_features`` and a weight of ``n_classes`` rows: float64 values rounded to
    ``dtype``, on ``device``, with targets (two of them ignored, some outside a shard) and options."""

    def __init__(self, shape, dtype, device, options=None, *, seed=0, peaked=0.0):
        options = options or {}
        n_rows, n_features, n_classes = shape
        gen = torch.Generator().manual_seed(seed)
        self.dtype, self.device, self.acc = dtype, device, _acc(dtype)
        self.shard = bool(options.get("shard"))
        start = VOCAB_START if self.shard else 0
        total = TOTAL if self.shard else n_classes
        weight = torch.randn(n_classes, n_features, generator=gen, dtype=torch.float64) * 2 / math.sqrt(n_features)
        targets = torch.randint(start, start + n_classes, (n_rows,), generator=gen)
        if self.shard:  # a third of the targets on other shards, before and after this one
            other = torch.randint(0, total - n_classes, (n_rows,), generator=gen)
            other = torch.where(other >= start, other + n_classes, other)
            targets = torch.where(torch.arange(n_rows) % 3 == 1, other, targets)
        targets[[2, n_rows - 1]] = IGNORED
        inputs = torch.randn(n_rows, n_features, generator=gen, dtype=torch.float64)
        if peaked:  # each row pointed at its target's weight row: that logit about `peaked` above the others
            local = (targets - start).clamp(0, n_classes - 1)
            unit = weight[local] / weight[local].norm(dim=1, keepdim=True) ** 2
            inputs = inputs * 0.5 + peaked * unit
        self.input = inputs.to(dtype).to(device)
        self.weight = weight.to(dtype).to(device)
        self.bias = None
        if options.get("bias"):
            self.bias = (torch.randn(n_classes, generator=gen, dtype=torch.float64) * 0.5).to(dtype).to(device)
        self.targets = targets.to(device)
        self.class_weight = None
        if options.get("class_weight"):
            self.class_weight = (torch.rand(n_classes, generator=gen, dtype=torch.float64) * 1.8 + 0.2).to(device)
        self.options = {
            "class_weight": None if self.class_weight is None else self.class_weight.to(self.acc),
            "smoothing": float(options.get("smoothing", 0.0)),
            "total_classes": total if self.shard else None,
            "vocab_start": start,
            "cap": options.get("cap"),
            "temperature": float(options.get("temperature", 1.0)),
        }
        self.gen = gen

    # The float64 reference, from the very values the kernel reads.
    def logits(self):
        """``(x, u, slope)``: the logits over the temperature, soft-capped logits and ``du`` over the
        unscaled logits' ``dx``, float64 on the CPU."""
        x = self.input.cpu().double() @ self.weight.cpu().double().T
        if self.bias is not None:
            x = x + self.bias.cpu().double()
        temperature = self.options["temperature"]
        x = x / temperature
        cap = self.options["cap"]
        if cap is None:
            return x, x, torch.ones_like(x) / temperature
        return x, cap * torch.tanh(x / cap), (1 - torch.tanh(x / cap) ** 2) / temperature

    def target_weights(self):
        """The dense (N, V) matrix of target weights ``a``, float64 on the CPU."""
        n_rows, n_classes = self.input.shape[0], self.weight.shape[0]
        start, eps = self.options["vocab_start"], self.options["smoothing"]
        total = self.options["total_classes"] or n_classes
        w = torch.ones(n_classes, dtype=torch.float64)
        if self.class_weight is not None:
            w = self.class_weight.cpu().to(self.acc).double()
        local = self.targets.cpu() - start
        inside = (local >= 0) & (local < n_classes)
        one_hot = torch.zeros(n_rows, n_classes, dtype=torch.float64)
        one_hot[torch.arange(n_rows)[inside], local[inside]] = 1.0
        return ((1 - eps) * one_hot + eps / total) * w

    def reference_forward(self):
        _, u, _ = self.logits()
        return torch.logsumexp(u, dim=1), (self.target_weights() * u).sum(dim=1)

    def row_factors(self, lse=None):
        """``(lse, kappa, grad_factor)`` in float64: kappa = sum_c a (the loss's), f random with zeros."""
        if lse is None:
            lse = self.reference_forward()[0]
        kappa = self.target_weights().sum(dim=1)
        f = torch.rand(lse.shape[0], generator=self.gen, dtype=torch.float64) + 0.5
        f[[1, 5]] = 0.0
        return lse, kappa, f

    def reference_gradients(self, lse, kappa, f, *, filter_eps=None):
        """Closed form: ``(d_input, d_weight, d_bias)`` and the bounds' scales ``|g| |B|`` of each."""
        _, u, slope = self.logits()
        p = torch.exp(u - lse[:, None])
        if filter_eps is not None:
            p = torch.where(p >= filter_eps, p, 0.0)
        a = self.target_weights()
        g = f[:, None] * (kappa[:, None] * p - a) * slope
        size = f.abs()[:, None] * (kappa.abs()[:, None] * p + a.abs()) * slope
        x, w = self.input.cpu().double(), self.weight.cpu().double()
        expected = (g @ w, g.T @ x, g.sum(dim=0))
        scales = (size @ w.abs(), size.T @ x.abs(), size.sum(dim=0))
        return expected, scales

    # The kernels.
    def forward(self, **overrides):
        return linear_logsumexp(
            self.input, self.weight, self.bias, self.targets, **{**self.options, **SMALL, **overrides}
        )

    def gradients(self, lse, kappa, f, **overrides):
        as_acc = [t.to(device=self.device, dtype=self.acc) for t in (lse, kappa, f)]
        return linear_cross_entropy_gradients(
            self.input, self.weight, self.bias, self.targets, *as_acc, **{**self.options, **SMALL, **overrides}
        )

    def forward_scales(self):
        """The bounds' scales of the forward: ``max_c |u|`` for the log-sum-exp, ``sum_c |a| |u|`` for the dot."""
        x_abs = self.input.cpu().double().abs() @ self.weight.cpu().double().abs().T
        if self.bias is not None:
            x_abs = x_abs + self.bias.cpu().double().abs()
        return x_abs.amax(dim=1), (self.target_weights().abs() * x_abs).sum(dim=1)


def assert_within(actual, expected, scale, dtype, what=""):
    """``|actual - expected| <= atol + rtol * scale`` elementwise, with the tolerance of ``dtype``."""
    tol = tolerance(dtype)
    actual = actual.detach().cpu().double()
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    error = (actual - expected).abs()
    bound = tol["atol"] + tol["rtol"] * scale
    worst = int(torch.argmax(error - bound))
    assert bool((error <= bound).all()), (
        f"{what}: error {error.flatten()[worst]:.3g} > bound {bound.flatten()[worst]:.3g} at flat index {worst}"
    )


def assert_gradients(result, expected, scales, case, needs=(True, True, True), what=""):
    """The three gradients in the accumulation dtype, each within the bound of the input's dtype (None
    where not asked for)."""
    for name, got, want, scale, need in zip(
        ("d_input", "d_weight", "d_bias"), result, expected, scales, needs, strict=True
    ):
        if not need or (name == "d_bias" and case.bias is None):
            assert got is None, f"{what} {name}"
            continue
        assert got.dtype == case.acc, f"{what} {name}"
        assert got.device.type == torch.device(case.device).type, f"{what} {name}"
        assert_within(got, want, scale, case.dtype, f"{what} {name}")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("options", OPTIONS, ids=OPTION_IDS)
def test_forward_matches_reference(device, dtype, options):
    case = Case(SHAPE, dtype, device, options, seed=1)
    lse, dot = case.forward()
    expected_lse, expected_dot = case.reference_forward()
    lse_scale, dot_scale = case.forward_scales()
    for got in (lse, dot):
        assert got.dtype == case.acc
        assert got.shape == (SHAPE[0],)
    assert_within(lse, expected_lse, lse_scale, case.acc, "lse")
    assert_within(dot, expected_dot, dot_scale, case.acc, "target_dot")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("options", OPTIONS, ids=OPTION_IDS)
def test_gradients_match_reference(device, dtype, options):
    case = Case(SHAPE, dtype, device, options, seed=2)
    lse, kappa, f = case.row_factors()
    expected, scales = case.reference_gradients(lse, kappa, f)
    assert_gradients(case.gradients(lse, kappa, f), expected, scales, case)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("options", [OPTIONS[2], OPTIONS[-1]], ids=["weights", "all"])
def test_gradients_are_autograd_of_the_loss(device, dtype, options):
    """The gradients of sum_n f_n (sum_c a (LSE - u) + z LSE^2) by autograd, kappa = sum_c a + 2 z LSE,
    with the kernel's own log-sum-exp."""
    z = 0.01
    case = Case(SHAPE, dtype, device, options, seed=3)
    lse, _ = case.forward()
    a = case.target_weights()
    kappa = a.sum(dim=1) + 2 * z * lse.cpu().double()
    f = torch.rand(SHAPE[0], generator=case.gen, dtype=torch.float64)
    f[3] = 0.0
    leaves = [t.detach().cpu().double().requires_grad_() for t in (case.input, case.weight)]
    bias = None if case.bias is None else case.bias.detach().cpu().double().requires_grad_()
    x = (leaves[0] @ leaves[1].T + (0 if bias is None else bias)) / case.options["temperature"]
    cap = case.options["cap"]
    u = x if cap is None else cap * torch.tanh(x / cap)
    full_lse = torch.logsumexp(u, dim=1)
    loss = (f * ((a * (full_lse[:, None] - u)).sum(dim=1) + z * full_lse**2)).sum()
    expected = torch.autograd.grad(loss, [*leaves, *([] if bias is None else [bias])])
    _, scales = case.reference_gradients(lse.cpu().double(), kappa, f)
    result = case.gradients(lse, kappa, f)
    assert_gradients(result, (*expected, None) if bias is None else expected, scales, case)


@pytest.mark.parametrize("device", DEVICES)
def test_vocabulary_shards_combine_to_the_whole(device):
    """Three shards of a vocabulary: their log-sum-exps combine to the whole one, their dot products sum to
    it, and, with the global log-sum-exp, their input gradients sum to the whole one and their weight
    and bias gradients are the whole one's rows."""
    n_rows, n_features, n_classes = 24, 20, 70
    dtype = torch.float32
    case = Case((n_rows, n_features, n_classes), dtype, device, {"bias": True, "class_weight": True}, seed=4)
    case.options["smoothing"] = 0.15
    lse, dot = case.forward()
    lse_full, kappa, f = case.row_factors(lse.cpu().double())
    whole = case.gradients(lse, kappa, f)
    bounds = [0, 20, 52, n_classes]
    shard_lse, shard_dot, shard_grads = [], [], []
    for start, stop in itertools.pairwise(bounds):
        part = {
            "class_weight": case.options["class_weight"][start:stop],
            "smoothing": 0.15,
            "total_classes": n_classes,
            "vocab_start": start,
            **SMALL,
        }
        args = (case.input, case.weight[start:stop], case.bias[start:stop], case.targets)
        lse_k, dot_k = linear_logsumexp(*args, **part)
        shard_lse.append(lse_k)
        shard_dot.append(dot_k)
        as_acc = [t.to(device=device, dtype=torch.float32) for t in (lse_full, kappa, f)]
        shard_grads.append(linear_cross_entropy_gradients(*args, *as_acc, **part))
    tol = tolerance(torch.float32)
    torch.testing.assert_close(torch.logsumexp(torch.stack(shard_lse), dim=0), lse, **tol)
    torch.testing.assert_close(torch.stack(shard_dot).sum(dim=0), dot, **tol)
    torch.testing.assert_close(sum(g[0] for g in shard_grads), whole[0], **tol)
    torch.testing.assert_close(torch.cat([g[1] for g in shard_grads]), whole[1], **tol)
    torch.testing.assert_close(torch.cat([g[2] for g in shard_grads]), whole[2], **tol)


@pytest.mark.parametrize("device", DEVICES)
def test_vocabulary_splits_of_the_forward(device):
    """Any number of programs along the vocabulary (``v_splits``) gives the same forward."""
    case = Case(SHAPE, torch.float64, device, OPTIONS[-1], seed=5)
    one = case.forward(v_splits=1)
    for splits in (2, 3, 50):  # 50: more splits than tiles
        many = case.forward(v_splits=splits)
        for a, b in zip(one, many, strict=True):
            torch.testing.assert_close(a, b, **tolerance(torch.float64))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_default_tiles_and_shapes_not_multiple_of_them(device, dtype):
    case = Case((40, 48, 100), dtype, device, OPTIONS[-1], seed=6)
    lse, dot = case.forward(block_n=None, block_v=None, block_h=None)
    lse_scale, dot_scale = case.forward_scales()
    expected_lse, expected_dot = case.reference_forward()
    assert_within(lse, expected_lse, lse_scale, case.acc, "lse")
    assert_within(dot, expected_dot, dot_scale, case.acc, "target_dot")
    lse64, kappa, f = case.row_factors()
    expected, scales = case.reference_gradients(lse64, kappa, f)
    assert_gradients(case.gradients(lse64, kappa, f, block_n=None, block_v=None, block_h=None), expected, scales, case)


@pytest.mark.parametrize("device", DEVICES)
def test_need_combinations(device):
    """Each subset of the three gradients: None where not asked for (the bias's too without a bias), the
    same values as the full call where asked."""
    case = Case(SHAPE, torch.float32, device, {"bias": True, "cap": 4.0}, seed=7)
    lse, kappa, f = case.row_factors()
    full = case.gradients(lse, kappa, f)
    exact = {"rtol": 0, "atol": 0} if torch.device(device).type == "cpu" else tolerance(torch.float32)
    for needs in [(a, b, c) for a in (True, False) for b in (True, False) for c in (True, False)]:
        flags = dict(zip(("need_input", "need_weight", "need_bias"), needs, strict=True))
        result = case.gradients(lse, kappa, f, **flags)
        for got, want, need in zip(result, full, needs, strict=True):
            if need:
                torch.testing.assert_close(got, want, **exact)
            else:
                assert got is None, needs
    without_bias = linear_cross_entropy_gradients(
        case.input, case.weight, None, case.targets, *(t.float().to(device) for t in (lse, kappa, f)), **SMALL
    )
    assert without_bias[2] is None
    assert without_bias[0] is not None
    assert without_bias[1] is not None


@pytest.mark.parametrize("device", DEVICES)
def test_rows_with_zero_factor_contribute_nothing(device):
    """Rows with f = 0, whatever their log-sum-exp (NaN here) and target, and a whole token block of them
    (rows 16 to 31, skipped before its products), add nothing."""
    case = Case(SHAPE, torch.float32, device, {"bias": True, "smoothing": 0.1}, seed=8)
    lse, kappa, f = case.row_factors()
    f[16:32] = 0.0
    expected, scales = case.reference_gradients(lse, kappa, f)
    garbage = lse.clone()
    garbage[f == 0] = float("nan")
    result = case.gradients(garbage, kappa, f)
    assert_gradients(result, expected, scales, case)
    assert bool((result[0][f.to(device) == 0] == 0).all())
    nothing = case.gradients(garbage, kappa, torch.zeros_like(f))
    for g in nothing:
        assert bool((g == 0).all())


@pytest.mark.parametrize("device", DEVICES)
def test_accumulation_dtype_float64(device):
    case = Case(SHAPE, torch.float32, device, {"bias": True}, seed=9)
    lse, kappa, f = case.row_factors()
    expected, scales = case.reference_gradients(lse, kappa, f)
    result = case.gradients(lse, kappa, f, accumulation_dtype=torch.float64)
    for got, want, scale in zip(result, expected, scales, strict=True):
        assert got.dtype == torch.float64
        assert_within(got, want, scale, torch.float32)


@pytest.mark.parametrize("device", DEVICES)
def test_strided_input_and_weight(device):
    """Transposed storage of the input and the weight are read through their strides."""
    case = Case(SHAPE, torch.float32, device, {"bias": True, "class_weight": True}, seed=10)
    lse, kappa, f = case.row_factors()
    expected, scales = case.reference_gradients(lse, kappa, f)
    expected_lse, expected_dot = case.reference_forward()
    lse_scale, dot_scale = case.forward_scales()
    case.input = case.input.T.contiguous().T
    case.weight = case.weight.T.contiguous().T
    assert case.input.stride(0) == 1
    assert case.weight.stride(0) == 1
    got_lse, got_dot = case.forward()
    assert_within(got_lse, expected_lse, lse_scale, torch.float32, "lse")
    assert_within(got_dot, expected_dot, dot_scale, torch.float32, "target_dot")
    assert_gradients(case.gradients(lse, kappa, f), expected, scales, case)


# Gradient filtering.


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("options", [OPTIONS[1], OPTIONS[-1]], ids=["bias", "all"])
def test_filtering_with_a_tiny_threshold_changes_nothing(device, options):
    case = Case(SHAPE, torch.float32, device, options, seed=11)
    lse, kappa, f = case.row_factors()
    unfiltered = case.gradients(lse, kappa, f)
    filtered = case.gradients(lse, kappa, f, filter_eps=2.0**-100)
    exact = {"rtol": 0, "atol": 0} if torch.device(device).type == "cpu" else tolerance(torch.float32)
    for a, b in zip(unfiltered, filtered, strict=True):
        torch.testing.assert_close(a, b, **exact)


def _threshold_in_a_gap(p: torch.Tensor, quantile: float) -> float:
    """A threshold near the ``quantile`` of the probabilities ``p`` with none of them within 0.05% of it, so that
    float32 rounding cannot move a probability across it."""
    values = p.flatten().sort().values
    values = values[values > 0]
    i = int(quantile * (len(values) - 1))
    while not values[i + 1] > 1.001 * values[i]:
        i += 1
    return float(math.sqrt(values[i] * values[i + 1]))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("options", [OPTIONS[2], OPTIONS[-1]], ids=["weights", "all"])
def test_filtering_drops_exactly_the_small_probabilities(device, dtype, options):
    """With a threshold among the probabilities, the reference with those below it dropped, elementwise;
    the same with tiles of other sizes."""
    case = Case(SHAPE, dtype, device, options, seed=12, peaked=5.0)
    lse, kappa, f = case.row_factors()
    _, u, _ = case.logits()
    eps = _threshold_in_a_gap(torch.exp(u - lse[:, None]), 0.6)
    expected, scales = case.reference_gradients(lse, kappa, f, filter_eps=eps)
    assert_gradients(case.gradients(lse, kappa, f, filter_eps=eps), expected, scales, case)
    other_tiles = {"block_n": 32, "block_v": 16, "block_h": 32}
    assert_gradients(case.gradients(lse, kappa, f, filter_eps=eps, **other_tiles), expected, scales, case)


@pytest.mark.parametrize("device", DEVICES)
def test_filtering_skips_tiles_without_changing_the_result(device):
    """Classes 64 and above are far below the threshold and hold no target: their tiles are skipped, and
    the result is still the reference with the small probabilities dropped, for any tile sizes. That
    the skipped tiles' products never run shows with NaN in those weight rows: the NaN logits are not
    kept (NaN >= eps is false), so a skipped tile adds nothing, where its products would spread NaN
    into the input's gradient."""
    case = Case(SHAPE, torch.float32, device, {"bias": True}, seed=13)
    bias = torch.zeros(SHAPE[2], dtype=torch.float64)
    bias[64:] = -40.0
    case.bias = bias.float().to(device)
    targets = case.targets.cpu()
    targets[targets >= 64] = targets[targets >= 64] % 64
    case.targets = targets.to(device)
    lse, kappa, f = case.row_factors()
    eps = 2.0**-12
    expected, scales = case.reference_gradients(lse, kappa, f, filter_eps=eps)
    poisoned = case.weight.clone()
    poisoned[64:] = float("nan")
    for tiles in (SMALL, {"block_n": 64, "block_v": 64, "block_h": 16}):
        result = case.gradients(lse, kappa, f, filter_eps=eps, **tiles)
        assert_gradients(result, expected, scales, case)
        assert bool((result[1][64:] == 0).all())
        assert bool((result[2][64:] == 0).all())
        weight, case.weight = case.weight, poisoned
        try:
            skipped = case.gradients(lse, kappa, f, filter_eps=eps, **tiles)
        finally:
            case.weight = weight
        torch.testing.assert_close(skipped[0], result[0], rtol=0, atol=0)
        torch.testing.assert_close(skipped[1][:64], result[1][:64], rtol=0, atol=0)
        assert bool((skipped[1][64:] == 0).all())


# Measured: the error of filtering at eps = 2^-12 against the exact gradient, as stated in the docstring of
# linear_cross_entropy_gradients: the dropped probability mass per row, and the largest error of each
# gradient relative to its largest entry.
FILTER_MASS_BOUND = 0.01
FILTER_RELATIVE_BOUND = 1e-2


@pytest.mark.parametrize("device", DEVICES)
def test_filtering_error_is_small_on_a_peaked_softmax(device):
    """A target logit about 8 above the others' median over 100 classes: about half of the probabilities
    fall below 2^-12; the filtered gradients stay within the stated bounds of the exact ones, and each
    row of the input's gradient within its guaranteed bound |f kappa| (dropped mass) max|weight|."""
    eps = 2.0**-12
    case = Case((40, 48, 100), torch.float64, device, {"bias": True}, seed=14, peaked=8.0)
    lse, kappa, f = case.row_factors()
    f[:] = 1.0
    _, u, _ = case.logits()
    p = torch.exp(u - lse[:, None])
    live = case.targets.cpu() != IGNORED
    dropped = float((p[live] < eps).double().mean())
    target_p = float(p[live].max(dim=1).values.median())
    assert dropped > 0.4, dropped  # the regime the bounds are stated for
    assert target_p > 0.85, target_p
    mass = torch.where(p < eps, p, 0.0).sum(dim=1)
    assert float(mass[live].max()) <= FILTER_MASS_BOUND
    exact = case.gradients(lse, kappa, f)
    filtered = case.gradients(lse, kappa, f, filter_eps=eps)
    for name, a, b in zip(("d_input", "d_weight", "d_bias"), exact, filtered, strict=True):
        relative = float((a - b).abs().max() / a.abs().max())
        assert 0 < relative <= FILTER_RELATIVE_BOUND, (name, relative)
    row_bound = (f * kappa * mass)[:, None] * case.weight.cpu().abs().max() * (1 + 1e-9)
    assert bool(((exact[0] - filtered[0]).abs().cpu() <= row_bound).all())


# Arguments.


def test_argument_errors():
    x, w, y = torch.zeros(4, 8), torch.zeros(5, 8), torch.zeros(4, dtype=torch.int64)
    ones = torch.ones(4)
    with pytest.raises(TypeError, match="`input`"):
        linear_logsumexp(x.int(), w, None, y)
    with pytest.raises(TypeError, match="`weight` must have the input's dtype"):
        linear_logsumexp(x, w.double(), None, y)
    with pytest.raises(TypeError, match="`bias` must have the input's dtype"):
        linear_logsumexp(x, w, torch.zeros(5, dtype=torch.float64), y)
    with pytest.raises(ValueError, match="`weight` must have shape"):
        linear_logsumexp(x, torch.zeros(5, 7), None, y)
    with pytest.raises(ValueError, match="`bias` must have shape"):
        linear_logsumexp(x, w, torch.zeros(4), y)
    with pytest.raises(TypeError, match="`targets`"):
        linear_logsumexp(x, w, None, y.float())
    with pytest.raises(ValueError, match="`targets` must have shape"):
        linear_logsumexp(x, w, None, y[:3])
    with pytest.raises(ValueError, match="`smoothing`"):
        linear_logsumexp(x, w, None, y, smoothing=1.5)
    with pytest.raises(ValueError, match="`total_classes`"):
        linear_logsumexp(x, w, None, y, total_classes=0)
    with pytest.raises(ValueError, match="`vocab_start`"):
        linear_logsumexp(x, w, None, y, vocab_start=-1)
    with pytest.raises(ValueError, match="`cap`"):
        linear_logsumexp(x, w, None, y, cap=0.0)
    with pytest.raises(ValueError, match="`class_weight`"):
        linear_logsumexp(x, w, None, y, class_weight=torch.ones(4))
    with pytest.raises(ValueError, match="`block_v`"):
        linear_logsumexp(x, w, None, y, block_v=8)
    with pytest.raises(ValueError, match="`v_splits`"):
        linear_logsumexp(x, w, None, y, v_splits=0)
    with pytest.raises(ValueError, match="`kappa`"):
        linear_cross_entropy_gradients(x, w, None, y, ones, ones[:3], ones)
    with pytest.raises(ValueError, match="`filter_eps`"):
        linear_cross_entropy_gradients(x, w, None, y, ones, ones, ones, filter_eps=-1.0)
    with pytest.raises(ValueError, match="`accumulation_dtype`"):
        linear_cross_entropy_gradients(x, w, None, y, ones, ones, ones, accumulation_dtype=torch.float16)


@pytest.mark.skipif(_linear.INTERPRETED, reason="CPU tensors are accepted under TRITON_INTERPRET=1")
def test_cpu_tensors_are_refused_outside_the_interpreter():
    with pytest.raises(ValueError, match="CUDA device"):
        linear_logsumexp(torch.zeros(2, 4), torch.zeros(3, 4), None, torch.zeros(2, dtype=torch.int64))


@pytest.mark.parametrize("device", DEVICES)
def test_empty_batch_and_no_gradient_asked(device):
    x, w = torch.zeros(0, 8, device=device), torch.ones(5, 8, device=device)
    y, none = torch.zeros(0, dtype=torch.int64, device=device), torch.zeros(0, device=device)
    lse, dot = linear_logsumexp(x, w, None, y)
    assert lse.shape == dot.shape == (0,)
    d_input, d_weight, d_bias = linear_cross_entropy_gradients(x, w, torch.ones(5, device=device), y, none, none, none)
    assert d_input.shape == (0, 8)
    assert bool((d_weight == 0).all())
    assert bool((d_bias == 0).all())


# GPU only.


@NEEDS_CUDA
def test_more_than_2_to_the_31_elements():
    """64-bit offsets: an input of more than 2^31 elements, checked on its last rows against float64."""
    n_features, n_classes = 4096, 256
    n_rows = 2**31 // n_features + 100
    gen = torch.Generator(device="cuda").manual_seed(15)
    x = torch.randn(n_rows, n_features, device="cuda", dtype=torch.bfloat16, generator=gen)
    w = torch.randn(n_classes, n_features, device="cuda", dtype=torch.bfloat16, generator=gen) / 64
    y = torch.randint(0, n_classes, (n_rows,), device="cuda", generator=gen)
    lse, dot = linear_logsumexp(x, w, None, y)
    check = torch.tensor([0, n_rows - 1000, n_rows - 1], device="cuda")
    logits = x[check].double() @ w.double().T
    torch.testing.assert_close(lse[check].double(), torch.logsumexp(logits, dim=1), **tolerance(torch.float32))
    f = torch.zeros(n_rows, device="cuda")
    f[check] = 1.0
    d_input, _, _ = linear_cross_entropy_gradients(x, w, None, y, lse, torch.ones_like(f), f, need_weight=False)
    one_hot = torch.nn.functional.one_hot(y[check], n_classes).double()
    expected = (torch.softmax(logits, dim=1) - one_hot) @ w.double()
    torch.testing.assert_close(d_input[check].double(), expected, rtol=2e-2, atol=2e-3)
    expected_dot = logits.gather(1, y[check, None])[:, 0]
    torch.testing.assert_close(dot[check].double(), expected_dot, **tolerance(torch.float32))


@NEEDS_CUDA
def test_no_host_synchronization():
    case = Case((300, 256, 1000), torch.bfloat16, "cuda", OPTIONS[-1], seed=16)
    lse, kappa, f = (t.float().cuda() for t in case.row_factors())
    calls = [lambda: case.forward(), lambda: case.gradients(lse, kappa, f, filter_eps=2.0**-12)]
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


# --------------------------------------------------------------------------------------------
# stats=True and the statistics' gradient terms (p_coefficient, entropy_weight)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("v_splits", [1, 3])
@pytest.mark.parametrize("options", [{}, {"cap": 2.5, "temperature": 0.7, "bias": True}], ids=["plain", "cap-t"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_stats_match_float64_references(device, v_splits, options, dtype):
    """The entropy and the first arg-max from the forward's tiles, also across vocabulary splits."""
    case = Case(SHAPE, dtype, device, options)
    lse, dot, entropy, arg = case.forward(stats=True, v_splits=v_splits)
    plain = case.forward(v_splits=v_splits)
    assert torch.equal(lse, plain[0])  # stats=True changes neither
    assert torch.equal(dot, plain[1])
    _, u, _ = case.logits()
    log_p = torch.log_softmax(u, dim=1)
    expected = -(log_p.exp() * log_p).sum(dim=1)
    scale = u.abs().amax(dim=1)
    assert entropy.dtype == case.acc
    assert arg.dtype == torch.int64
    assert_within(entropy, expected, scale, dtype, "entropy")
    assert torch.equal(arg.cpu(), torch.argmax(u, dim=1))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("v_splits", [1, 2, 4])
def test_stats_arg_max_is_the_first_on_ties_across_tiles_and_splits(device, v_splits):
    """Exact ties inside a tile, across tiles and across splits: the first column wins, as torch.argmax."""
    n_classes = 128  # four tiles of 32
    x = torch.zeros(4, n_classes, dtype=torch.float64)
    x[0, [5, 9]] = 3.0  # one tile
    x[1, [40, 100]] = 3.0  # tiles 1 and 3 (splits 0 and 1 with 2 splits)
    x[2, [31, 32, 127]] = 2.0  # the edges of tiles 0 and 1
    x[3] = 1.0  # all equal: column 0
    x = x.to(device)
    eye, targets = (
        torch.eye(n_classes, dtype=torch.float64, device=device),
        torch.zeros(4, dtype=torch.int64, device=device),
    )
    _, _, entropy, arg = linear_logsumexp(x, eye, None, targets, **SMALL, v_splits=v_splits, stats=True)
    assert arg.cpu().tolist() == torch.argmax(x.cpu(), dim=1).tolist() == [5, 40, 31, 0]
    assert torch.allclose(entropy.cpu()[3], torch.tensor(math.log(n_classes), dtype=torch.float64))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "options", [{}, {"cap": 2.5, "temperature": 0.7, "bias": True, "smoothing": 0.1}], ids=["plain", "all"]
)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_stats_gradient_terms_match_autograd(device, options, dtype):
    """p_coefficient c and entropy_weight eta add p (c - eta u) slope: with c = lambda + eta u_bar, the gradient
    of sum f l + lambda LSE + eta H, against autograd through the float64 logits; rows whose f, c and eta are
    all 0 contribute nothing, a row with f = 0 but a statistic's gradient does."""
    case = Case(SHAPE, dtype, device, options)
    lse, kappa, f = case.row_factors()
    gen = torch.Generator().manual_seed(3)
    lam = torch.randn(lse.shape[0], generator=gen, dtype=torch.float64)
    eta = torch.randn(lse.shape[0], generator=gen, dtype=torch.float64)
    lam[1] = eta[1] = 0.0  # f[1] = 0 too: the row is skipped; f[5] = 0 with the statistics' terms kept
    _, u, _ = case.logits()
    p = torch.softmax(u, dim=1)
    u_bar = (p * u).sum(dim=1)
    as_acc = [t.to(device=device, dtype=case.acc) for t in (lam + eta * u_bar, eta)]
    found = case.gradients(lse, kappa, f, p_coefficient=as_acc[0], entropy_weight=as_acc[1])

    x = case.input.cpu().double().requires_grad_()
    w = case.weight.cpu().double().requires_grad_()
    b = None if case.bias is None else case.bias.cpu().double().requires_grad_()
    logits = torch.nn.functional.linear(x, w, b) / case.options["temperature"]
    cap = case.options["cap"]
    uu = logits if cap is None else cap * torch.tanh(logits / cap)
    log_p = torch.log_softmax(uu, dim=1)
    a = case.target_weights()
    losses = -(a * log_p).sum(dim=1) + (kappa - a.sum(dim=1)) * torch.logsumexp(uu, dim=1)
    entropy = -(log_p.exp() * log_p).sum(dim=1)
    total = (f * losses).sum() + (lam * torch.logsumexp(uu, dim=1)).sum() + (eta * entropy).sum()
    wanted = [t for t in (x, w, b) if t is not None]
    expected = torch.autograd.grad(total, wanted)
    _, scales = case.reference_gradients(lse, kappa, f)
    extra = (lam.abs() + eta.abs() * (u_bar.abs() + u.abs().amax(dim=1)))[:, None] * p
    xs, ws = x.detach().abs(), w.detach().abs()
    more = (extra @ ws, extra.T @ xs, extra.sum(dim=0))
    for got, want, scale, bound, name in zip(found, expected, scales, more, ("input", "weight", "bias"), strict=False):
        assert_within(got, want, scale + bound, dtype, f"d_{name}")
    if case.bias is None:
        assert found[2] is None


@pytest.mark.parametrize("device", DEVICES)
def test_stats_gradient_terms_default_to_zero_and_leave_the_loss_gradient_unchanged(device):
    case = Case(SHAPE, torch.float64, device, {"bias": True})
    lse, kappa, f = case.row_factors()
    zeros = torch.zeros_like(f)
    plain = case.gradients(lse, kappa, f)
    for extra in (
        {"p_coefficient": zeros},
        {"entropy_weight": zeros},
        {"p_coefficient": zeros, "entropy_weight": zeros},
    ):
        for got, want in zip(case.gradients(lse, kappa, f, **extra), plain, strict=True):
            assert torch.allclose(got, want, rtol=1e-14, atol=1e-14)
    with pytest.raises(ValueError, match="p_coefficient"):
        case.gradients(lse, kappa, f, p_coefficient=zeros[:3])
