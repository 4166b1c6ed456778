"""``crossentropy.torch.linear_cross_entropy`` as a drop-in for PyTorch 2.13's ``F.linear_cross_entropy``.

Every option the two share (class ``weight``, ``ignore_index``, ``label_smoothing``, reductions,
probability targets, unbatched and K-dimensional inputs, ``options``) is compared with
``F.linear_cross_entropy`` itself, loss and the gradients of input, weight and bias; the chunk size
that ``options`` asks for with PyTorch's own resolution of it; our extras (z-loss, soft-cap,
sample weights, accumulation dtype) with ``crossentropy.torch.cross_entropy`` on the materialized
logits, itself tested against PyTorch; gradient filtering with its definition written out on the
materialized logits; and the errors.
"""

from __future__ import annotations

import zlib

import pytest
import torch
import torch.nn.functional as F

import crossentropy.torch as cet
from crossentropy import kernels
from crossentropy.torch import linear as linear_module
from tests._support import assert_close, triton_devices

N_ROWS, HIDDEN, VOCAB = 13, 8, 37


def generator(*params) -> torch.Generator:
    return torch.Generator().manual_seed(zlib.crc32(repr(params).encode()))


def make_case(*, probabilities=False, dtype=torch.float64, seed=()):
    gen = generator("linear-pytorch", probabilities, dtype, seed)
    x = torch.randn(N_ROWS, HIDDEN, generator=gen, dtype=torch.float64).to(dtype)
    w = (torch.randn(VOCAB, HIDDEN, generator=gen, dtype=torch.float64) * 0.7).to(dtype)
    b = (torch.randn(VOCAB, generator=gen, dtype=torch.float64) * 0.3).to(dtype)
    if probabilities:
        y = torch.softmax(torch.randn(N_ROWS, VOCAB, generator=gen, dtype=torch.float64) * 2, dim=1).to(dtype)
    else:
        y = torch.randint(0, VOCAB, (N_ROWS,), generator=gen)
        y[[2, 7, 11]] = -100
    class_weight = (torch.rand(VOCAB, generator=gen, dtype=torch.float64) + 0.2).to(dtype)
    cotangent = torch.rand(N_ROWS, generator=gen, dtype=torch.float64).to(dtype)
    return x, w, b, y, class_weight, cotangent


def value_and_grads(function, x, w, b, y, *, cotangent, **options):
    leaves = [t.detach().clone().requires_grad_() if t is not None else None for t in (x, w, b)]
    loss = function(leaves[0], leaves[1], y, linear_bias=leaves[2], **options)
    factor = cotangent if loss.ndim else torch.ones_like(loss)
    (loss * factor).sum().backward()
    return [loss.detach()] + [None if t is None else t.grad for t in leaves]


def assert_all_close(ours, theirs, dtype, what):
    for got, want in zip(ours, theirs, strict=True):
        if want is None:
            assert got is None, what
            continue
        assert got.dtype == want.dtype, what
        assert got.shape == want.shape, what
        assert_close(got, want, dtype, err_msg=what)


SHARED_INDEX_OPTIONS = [
    {},
    {"ignore_index": 5},
    {"label_smoothing": 0.15},
    {"weight": "class"},
    {"weight": "class", "label_smoothing": 0.2},
]


def _resolved(options: dict, class_weight) -> dict:
    return {k: class_weight if v == "class" else v for k, v in options.items()}


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("options", SHARED_INDEX_OPTIONS, ids=lambda o: ",".join(o) or "plain")
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
def test_index_targets_match_pytorchs_linear_cross_entropy(options, reduction, bias):
    x, w, b, y, class_weight, cotangent = make_case()
    if "ignore_index" in options:
        y = torch.where(y == -100, 5, y)
    keywords = {**_resolved(options, class_weight), "reduction": reduction}
    b = b if bias else None
    theirs = value_and_grads(F.linear_cross_entropy, x, w, b, y, cotangent=cotangent, **keywords)
    for chunk_size in (4, 13):
        ours = value_and_grads(
            cet.linear_cross_entropy, x, w, b, y, cotangent=cotangent, chunk_size=chunk_size, **keywords
        )
        assert_all_close(ours, theirs, torch.float64, f"{keywords} chunk={chunk_size}")


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize(
    "options",
    [{}, {"label_smoothing": 0.1}, {"weight": "class"}, {"weight": "class", "label_smoothing": 0.3}],
    ids=lambda o: ",".join(o) or "plain",
)
def test_probability_targets_match_pytorchs_linear_cross_entropy(options, reduction):
    x, w, b, y, class_weight, cotangent = make_case(probabilities=True)
    keywords = {**_resolved(options, class_weight), "reduction": reduction}
    theirs = value_and_grads(F.linear_cross_entropy, x, w, b, y, cotangent=cotangent, **keywords)
    ours = value_and_grads(cet.linear_cross_entropy, x, w, b, y, cotangent=cotangent, chunk_size=5, **keywords)
    assert_all_close(ours, theirs, torch.float64, str(keywords))


def test_the_gradient_of_probability_targets_matches_pytorch():
    x, w, b, y, class_weight, _ = make_case(probabilities=True)
    grads = []
    for function in (F.linear_cross_entropy, cet.linear_cross_entropy):
        target = y.clone().requires_grad_()
        loss = function(x, w, target, linear_bias=b, weight=class_weight, label_smoothing=0.1)
        grads.append(torch.autograd.grad(loss, target)[0])
    assert_close(grads[1], grads[0], torch.float64)


@pytest.mark.parametrize("probabilities", [False, True], ids=["index", "probabilities"])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_unbatched_input_matches_pytorch(probabilities, reduction):
    x, w, b, y, class_weight, _ = make_case(probabilities=probabilities)
    row = 0 if probabilities else 1  # an index row that is not ignored
    results = []
    for function in (F.linear_cross_entropy, cet.linear_cross_entropy):
        leaves = [t.clone().requires_grad_() for t in (x[row], w, b)]
        loss = function(leaves[0], leaves[1], y[row], linear_bias=leaves[2], weight=class_weight, reduction=reduction)
        results.append([loss.detach(), *torch.autograd.grad(loss, leaves)])
    assert results[1][0].shape == results[0][0].shape == ()
    assert_all_close(results[1], results[0], torch.float64, "unbatched")


def test_k_dimensional_linear_weight_matches_pytorch():
    gen = generator("k-dimensional")
    x = torch.randn(N_ROWS, HIDDEN, generator=gen, dtype=torch.float64)
    w = torch.randn(5, 3, HIDDEN, generator=gen, dtype=torch.float64)
    b = torch.randn(5, 3, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 5, (N_ROWS, 3), generator=gen)
    y[0, 1] = -100
    for reduction in ("mean", "none"):
        results = []
        for function in (F.linear_cross_entropy, cet.linear_cross_entropy):
            leaves = [t.clone().requires_grad_() for t in (x, w, b)]
            loss = function(leaves[0], leaves[1], y, linear_bias=leaves[2], label_smoothing=0.1, reduction=reduction)
            results.append([loss.detach(), *torch.autograd.grad(loss.sum(), leaves)])
        assert_all_close(results[1], results[0], torch.float64, reduction)


@pytest.mark.filterwarnings("ignore:linear_cross_entropy. forcing allow_retain_graph")
@pytest.mark.parametrize(
    "options",
    [
        {"batch_chunk_size": 4},
        {"chunking_method": "aspect_ratio"},
        {"chunking_method": "aspect_ratio:2"},
        {},
        {"acc_dtype": torch.float32},
    ],
    ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "default",
)
def test_pytorchs_options_give_pytorchs_result_and_chunk_size(options):
    x, w, b, y, _, cotangent = make_case(dtype=torch.float32)
    settings = torch.nn.LinearCrossEntropyOptions(**options)
    theirs = value_and_grads(F.linear_cross_entropy, x, w, b, y, cotangent=cotangent, options=settings)
    ours = value_and_grads(cet.linear_cross_entropy, x, w, b, y, cotangent=cotangent, options=settings)
    assert_all_close(ours, theirs, torch.float32, str(options))
    if options.get("batch_chunk_size") or options.get("chunking_method"):
        # PyTorch's own resolution of the chunking rule is the oracle of the rows per chunk.
        adjusted = settings._adjust(
            num_batches=N_ROWS, in_features=HIDDEN, num_classes=VOCAB, dtype=torch.float32, device=x.device
        )
        assert linear_module._chunk_size(None, settings, N_ROWS, HIDDEN, VOCAB) == adjusted.batch_chunk_size


def test_the_chunk_size_of_options_is_the_one_used(monkeypatch):
    """By the chunked engine (probability targets always take it; the fused kernels have no chunks)."""
    x, w, _, y, _, _ = make_case(probabilities=True)
    sizes = []
    original = linear_module._chunked

    def spy(input, weight, bias, rows, options, **kwargs):
        sizes.append(options.chunk_size)
        return original(input, weight, bias, rows, options, **kwargs)

    monkeypatch.setattr(linear_module, "_chunked", spy)
    cet.linear_cross_entropy(x, w, y, options=torch.nn.LinearCrossEntropyOptions(batch_chunk_size=3))
    assert sizes == [3]


# --------------------------------------------------------------------------------------------
# Our extras, against cross_entropy on the materialized logits
# --------------------------------------------------------------------------------------------

EXTRAS = [
    {"z_loss": 0.02},
    {"softcap": 2.5},
    {"sample_weight": "rows"},
    {"sample_weight": "rows", "weight": "class", "label_smoothing": 0.1, "z_loss": 0.01, "softcap": 3.0},
]


def materialized(input, linear_weight, target, *, linear_bias=None, temperature=1.0, **options):
    logits = F.linear(input, linear_weight, linear_bias) / temperature
    return cet.cross_entropy(logits, target, **options)


@pytest.mark.parametrize("probabilities", [False, True], ids=["index", "probabilities"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("options", EXTRAS, ids=lambda o: ",".join(o))
def test_extras_equal_cross_entropy_on_the_materialized_logits(options, reduction, probabilities):
    x, w, b, y, class_weight, cotangent = make_case(probabilities=probabilities)
    sample_weight = torch.rand(N_ROWS, generator=generator("sample"), dtype=torch.float64)
    keywords = {k: class_weight if v == "class" else sample_weight if v == "rows" else v for k, v in options.items()}
    keywords["reduction"] = reduction
    theirs = value_and_grads(materialized, x, w, b, y, cotangent=cotangent, **keywords)
    ours = value_and_grads(cet.linear_cross_entropy, x, w, b, y, cotangent=cotangent, chunk_size=4, **keywords)
    assert_all_close(ours, theirs, torch.float64, str(options))


def test_gradients_of_sample_weights_and_class_weights_flow_through_autograd():
    x, w, b, y, class_weight, _ = make_case()
    sample_weight = torch.rand(N_ROWS, generator=generator("sample"), dtype=torch.float64)
    grads = []
    for function in (materialized, cet.linear_cross_entropy):
        s, cw = sample_weight.clone().requires_grad_(), class_weight.clone().requires_grad_()
        loss = function(x, w, y, linear_bias=b, weight=cw, sample_weight=s, label_smoothing=0.1)
        grads.append(torch.autograd.grad(loss, (s, cw)))
    for got, want in zip(grads[1], grads[0], strict=True):
        assert_close(got, want, torch.float64)


@pytest.mark.parametrize("probabilities", [False, True], ids=["index", "probabilities"])
def test_float64_accumulation_of_a_float32_model_is_the_float64_result_rounded(probabilities):
    x, w, b, y, class_weight, cotangent = make_case(probabilities=probabilities)
    exact = value_and_grads(
        cet.linear_cross_entropy, x, w, b, y, cotangent=cotangent, weight=class_weight, label_smoothing=0.1
    )
    x32, w32, b32, y32 = (t.float() if t.dtype.is_floating_point else t for t in (x, w, b, y))
    for how in (
        {"accumulation_dtype": torch.float64},
        {"options": torch.nn.LinearCrossEntropyOptions(acc_dtype=torch.float64)},
    ):
        ours = value_and_grads(
            cet.linear_cross_entropy,
            x32,
            w32,
            b32,
            y32,
            cotangent=cotangent.float(),
            weight=class_weight.float(),
            label_smoothing=0.1,
            **how,
        )
        # The float32 inputs are the float64 ones rounded; the rest is computed in float64 and rounded once.
        assert_all_close(ours, [e.float() for e in exact], torch.float32, str(how))
        # An exact float64 computation from the rounded inputs, rounded once: a few ulps at most.
        rounded = value_and_grads(
            cet.linear_cross_entropy,
            x32.double(),
            w32.double(),
            b32.double(),
            y32.double() if probabilities else y32,
            cotangent=cotangent.float().double(),
            weight=class_weight.float().double(),
            label_smoothing=0.1,
        )
        for got, want in zip(ours, rounded, strict=True):
            torch.testing.assert_close(got, want.float(), rtol=4 * 2.0**-24, atol=1e-7)


# --------------------------------------------------------------------------------------------
# Gradient filtering
# --------------------------------------------------------------------------------------------


def filtered_by_definition(x, w, b, y, eps, *, z_loss=0.0, class_weight=None, label_smoothing=0.0):
    """The filtered gradients written out: autograd's gradient of the logits, minus its softmax term
    ``f_n κ_n p`` where ``p < eps``, then through the linear layer."""
    logits = F.linear(x, w, b).requires_grad_()
    keywords = {"weight": class_weight, "label_smoothing": label_smoothing, "z_loss": z_loss}
    loss = cet.cross_entropy(logits, y, **keywords)
    (g,) = torch.autograd.grad(loss, logits)
    p = torch.softmax(logits.detach(), dim=1)
    lse = torch.logsumexp(logits.detach(), dim=1)
    valid = y != -100
    safe = torch.where(valid, y, 0)
    omega = torch.ones(len(y), dtype=x.dtype) if class_weight is None else class_weight[safe]
    spread = label_smoothing * (1.0 if class_weight is None else class_weight.mean())
    kappa = (1 - label_smoothing) * omega + spread + 2 * z_loss * omega * lse
    factor = valid.to(x.dtype) / (valid.to(x.dtype) * omega).sum()
    g = g - torch.where(p < eps, p, 0.0) * (factor * kappa)[:, None]
    return loss.detach(), g.T @ x, g @ w, g.sum(dim=0)


@pytest.mark.parametrize(
    "options",
    [{}, {"z_loss": 0.05}, {"class_weight": "class", "label_smoothing": 0.1}],
    ids=lambda o: ",".join(o) or "plain",
)
def test_filtering_drops_exactly_the_small_softmax_terms(options):
    x, w, b, y, class_weight, _ = make_case(seed="filter")
    w = w * 4  # peaked rows: many probabilities below the threshold
    options = {k: class_weight if v == "class" else v for k, v in options.items()}
    eps = 2.0**-8
    loss, grad_w, grad_x, grad_b = filtered_by_definition(x, w, b, y, eps, **options)
    keywords = {"weight" if k == "class_weight" else k: v for k, v in options.items()}
    leaves = [t.clone().requires_grad_() for t in (x, w, b)]
    ours = cet.linear_cross_entropy(*leaves[:2], y, linear_bias=leaves[2], filter_eps=eps, chunk_size=5, **keywords)
    got_x, got_w, got_b = torch.autograd.grad(ours, leaves)
    assert_close(ours.detach(), loss, torch.float64)
    assert_close(got_x, grad_x, torch.float64)
    assert_close(got_w, grad_w, torch.float64)
    assert_close(got_b, grad_b, torch.float64)
    exact = torch.autograd.grad(cet.linear_cross_entropy(*leaves[:2], y, linear_bias=leaves[2], **keywords), leaves[1])
    assert not torch.equal(exact[0], got_w), "the threshold dropped nothing: the case does not test filtering"


def test_filtering_refuses_second_order_gradients():
    x, w, _, y, _, _ = make_case()
    leaves = [t.clone().requires_grad_() for t in (x, w)]
    loss = cet.linear_cross_entropy(*leaves, y, filter_eps=1e-3)
    with pytest.raises(NotImplementedError, match="`filter_eps` changes the first-order gradient only"):
        torch.autograd.grad(loss, leaves, create_graph=True)


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        (
            {"target": "probabilities", "ignore_index": -100},
            ValueError,
            r"`ignore_index` cannot be specified when `target` holds probabilities; got ignore_index=-100",
        ),
        ({"target": torch.zeros(N_ROWS)}, TypeError, r"`target` of shape \(13,\) must be integer class indices"),
        (
            {"target": torch.zeros(N_ROWS, VOCAB, dtype=torch.int64)},
            TypeError,
            r"`target` of shape \(13, 37\) holds class probabilities and must be floating point; got dtype torch.int64",
        ),
        ({"weight": torch.ones(VOCAB - 1, dtype=torch.float64)}, ValueError, r"`weight` must have shape \(37,\)"),
        ({"weight": -torch.ones(VOCAB, dtype=torch.float64)}, ValueError, r"`weight` must be finite and non-negative"),
        ({"sample_weight": torch.ones(4, dtype=torch.float64)}, ValueError, r"`sample_weight` must have shape \(13,\)"),
        ({"options": {"batch_chunk_size": 4}}, TypeError, r"`options` must be a torch.nn.LinearCrossEntropyOptions"),
        (
            {"options": torch.nn.LinearCrossEntropyOptions(batch_chunk_size=4), "chunk_size": 5},
            ValueError,
            r"`chunk_size` \(5\) and `options` \(which asks for 4 rows per chunk\) disagree",
        ),
        (
            {"options": torch.nn.LinearCrossEntropyOptions(acc_dtype=torch.bfloat16)},
            ValueError,
            r"`options.acc_dtype` must be None, torch.float32 or torch.float64",
        ),
        ({"accumulation_dtype": torch.float16}, ValueError, r"`accumulation_dtype` must be torch.float32 or"),
        ({"filter_eps": 0.0}, ValueError, r"`filter_eps` must be in \(0, 1\); got 0"),
        ({"filter_eps": 1.0}, ValueError, r"`filter_eps` must be in \(0, 1\); got 1"),
        ({"linear_bias": [0.0] * VOCAB}, TypeError, r"`linear_bias` must be a torch.Tensor or None; got list"),
    ],
)
def test_bad_arguments_are_named(change, error, message):
    x, w, _, y, _, _ = make_case()
    if change.get("target") == "probabilities":
        change = {**change, "target": torch.full((N_ROWS, VOCAB), 1.0 / VOCAB, dtype=torch.float64)}
    arguments = {"target": y, **change}
    with pytest.raises(error, match=message):
        cet.linear_cross_entropy(x, w, arguments.pop("target"), **arguments)


def test_probabilities_outside_the_unit_interval_are_refused():
    x, w, _, _, _, _ = make_case()
    target = torch.full((N_ROWS, VOCAB), 1.0 / VOCAB, dtype=torch.float64)
    target[3, 4] = 1.5
    with pytest.raises(ValueError, match=r"`target` must contain probabilities in \[0, 1\]; got 1.5 at index \(3, 4\)"):
        cet.linear_cross_entropy(x, w, target)


def test_nothing_the_caller_passed_is_written():
    x, w, b, y, class_weight, _ = make_case()
    sample_weight = torch.rand(N_ROWS, dtype=torch.float64)
    tensors = [t.clone().requires_grad_() for t in (x, w, b)]
    before = [t.detach().clone() for t in (*tensors, y, class_weight, sample_weight)]
    loss = cet.linear_cross_entropy(
        *tensors[:2], y, linear_bias=tensors[2], weight=class_weight, sample_weight=sample_weight, softcap=3.0
    )
    loss.backward()
    for original, now in zip(before, (*tensors, y, class_weight, sample_weight), strict=True):
        assert torch.equal(original, now.detach())


# --------------------------------------------------------------------------------------------
# The fused engine (Triton's linear kernels: CUDA, or the CPU under TRITON_INTERPRET=1)
# --------------------------------------------------------------------------------------------

FUSED_OPTIONS = [
    {},
    {"weight": "class", "label_smoothing": 0.1},
    {"z_loss": 0.02, "softcap": 2.5},
    {"sample_weight": "rows", "weight": "class", "z_loss": 0.01},
    {"filter_eps": 1e-3},
    {"temperature": 0.7, "softcap": 2.0, "label_smoothing": 0.1},
]


def spy_on_fused_kernels(monkeypatch) -> list:
    import crossentropy.kernels.triton._linear as fused_module

    calls = []
    for name in ("linear_logsumexp", "linear_cross_entropy_gradients"):
        original = getattr(fused_module, name)

        def spy(*args, _original=original, _name=name, **kwargs):
            calls.append(_name)
            return _original(*args, **kwargs)

        monkeypatch.setattr(fused_module, name, spy)
    return calls


@pytest.mark.parametrize("device", triton_devices())
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize(
    ("options", "reduction"),
    # filtered_by_definition writes out the mean's gradient
    [(o, r) for o in FUSED_OPTIONS for r in ("mean", "none") if r == "mean" or "filter_eps" not in o],
    ids=lambda v: v if isinstance(v, str) else ",".join(v) or "plain",
)
def test_the_fused_engine_computes_and_matches_the_materialized_logits(options, reduction, dtype, device, monkeypatch):
    x, w, b, y, class_weight, cotangent = make_case(seed="fused")
    sample_weight = torch.rand(N_ROWS, generator=generator("sample"), dtype=torch.float64)
    keywords = {k: class_weight if v == "class" else sample_weight if v == "rows" else v for k, v in options.items()}
    keywords["reduction"] = reduction
    eps = keywords.pop("filter_eps", None)
    # The reference: float64 from the same (rounded) inputs, logits materialized.
    rounded = [t.to(dtype).double() for t in (x, w, b)]
    if eps is None:
        theirs = value_and_grads(materialized, *rounded, y, cotangent=cotangent, **keywords)
    else:
        loss, grad_w, grad_x, grad_b = filtered_by_definition(*rounded, y, eps)
        theirs = [loss, grad_x, grad_w, grad_b]
    calls = spy_on_fused_kernels(monkeypatch)
    on_device = [t.to(device=device, dtype=dtype) for t in (x, w, b)]
    moved = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in keywords.items()}
    with kernels.backend("triton"):
        ours = value_and_grads(
            cet.linear_cross_entropy,
            *on_device,
            y.to(device),
            cotangent=cotangent.to(device=device, dtype=dtype),
            filter_eps=eps,
            **moved,
        )
    # "mean": the gradients in the forward call; "none": the backward forms them, its log-sum-exp again.
    forward = ["linear_logsumexp"] if reduction == "mean" else ["linear_logsumexp", "linear_logsumexp"]
    assert calls == [*forward, "linear_cross_entropy_gradients"]
    for got, want in zip(ours, theirs, strict=True):
        assert got.dtype == dtype
        assert got.device.type == device
        # The tiles accumulate in float32 (float64 for float64) and the result is rounded once to the dtype.
        assert_close(got.double().cpu(), want.to(dtype).double(), dtype)


# --------------------------------------------------------------------------------------------
# The module
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "configuration",
    [{}, {"bias": True, "label_smoothing": 0.1, "weight": "class"}, {"out_features": (4, 3), "bias": True}],
    ids=["plain", "bias,smoothing,weight", "k-dimensional"],
)
def test_the_module_loads_pytorchs_state_and_gives_its_loss_and_gradients(configuration):
    gen = generator("module", repr(configuration))
    class_weight = torch.rand(VOCAB, generator=gen, dtype=torch.float64) + 0.1
    keywords = {k: class_weight if v == "class" else v for k, v in configuration.items()}
    theirs = torch.nn.LinearCrossEntropyLoss(HIDDEN, VOCAB, dtype=torch.float64, **keywords)
    ours = cet.LinearCrossEntropyLoss(HIDDEN, VOCAB, dtype=torch.float64, **keywords)
    assert sorted(ours.state_dict()) == sorted(theirs.state_dict())
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(N_ROWS, HIDDEN, generator=gen, dtype=torch.float64)
    y = torch.randint(0, VOCAB, (N_ROWS, *keywords.get("out_features", ())), generator=gen)
    results = []
    for module in (theirs, ours):
        loss = module(x, y)
        results.append([loss.detach(), *torch.autograd.grad(loss, list(module.parameters()))])
    assert_all_close(results[1], results[0], torch.float64, repr(configuration))


def test_the_module_passes_its_extras_and_sample_weights_to_the_function():
    x, w, b, y, class_weight, _ = make_case()
    sample_weight = torch.rand(N_ROWS, generator=generator("sample"), dtype=torch.float64)
    module = cet.LinearCrossEntropyLoss(
        HIDDEN, VOCAB, bias=True, dtype=torch.float64, weight=class_weight, z_loss=0.01, softcap=3.0
    )
    with torch.no_grad():
        module.linear.weight.copy_(w)
        module.linear.bias.copy_(b)
    got = module(x, y, sample_weight=sample_weight)
    want = materialized(
        x, w, y, linear_bias=b, weight=class_weight, z_loss=0.01, softcap=3.0, sample_weight=sample_weight
    )
    assert_close(got.detach(), want, torch.float64)


def test_the_module_refuses_bad_configuration_by_name():
    with pytest.raises(ValueError, match=r"`weight` must have shape \(37,\); got \(36,\)"):
        cet.LinearCrossEntropyLoss(HIDDEN, VOCAB, weight=torch.ones(36))
    with pytest.raises(ValueError, match=r"`label_smoothing` must be in \[0, 1\]; got 1.5"):
        cet.LinearCrossEntropyLoss(HIDDEN, VOCAB, label_smoothing=1.5)


# --------------------------------------------------------------------------------------------
# Language-model options: temperature, normalizer, shift
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize(
    "options", [{"temperature": 0.6}, {"temperature": 2.5, "softcap": 3.0, "z_loss": 0.01}], ids=["t", "t,cap,z"]
)
def test_temperature_divides_the_logits_first(options, reduction):
    x, w, b, y, class_weight, cotangent = make_case()
    t = options["temperature"]
    rest = {k: v for k, v in options.items() if k != "temperature"}

    def divided(input, linear_weight, target, *, linear_bias=None, **keywords):
        return cet.cross_entropy(F.linear(input, linear_weight, linear_bias) / t, target, **keywords)

    keywords = {"weight": class_weight, "label_smoothing": 0.1, "reduction": reduction, **rest}
    theirs = value_and_grads(divided, x, w, b, y, cotangent=cotangent, **keywords)
    ours = value_and_grads(
        cet.linear_cross_entropy, x, w, b, y, cotangent=cotangent, temperature=t, chunk_size=5, **keywords
    )
    assert_all_close(ours, theirs, torch.float64, str(options))


def test_temperature_one_changes_nothing_and_others_are_checked():
    x, w, _, y, _, _ = make_case()
    assert torch.equal(cet.linear_cross_entropy(x, w, y, temperature=1.0), cet.linear_cross_entropy(x, w, y))
    for bad in (0.0, -1.0, float("inf")):
        with pytest.raises(ValueError, match="`temperature` must be"):
            cet.linear_cross_entropy(x, w, y, temperature=bad)


@pytest.mark.parametrize("probabilities", [False, True], ids=["index", "probabilities"])
def test_micro_batches_with_the_global_normalizer_sum_to_the_full_batch(probabilities):
    """A padded batch split at random into k micro-batches: each divides by the whole batch's count, and
    the micro-batches' gradients add up to the full batch's."""
    x, w, b, y, class_weight, _ = make_case(probabilities=probabilities, seed="micro")
    keywords = {} if probabilities else {"weight": class_weight}
    full = value_and_grads(cet.linear_cross_entropy, x, w, b, y, cotangent=None, label_smoothing=0.1, **keywords)
    # The whole batch's mean denominator: N for probabilities, the weights of the targets (a 0-d tensor).
    count = float(N_ROWS) if probabilities else class_weight[y[y != -100]].sum()
    gen = generator("split")
    cuts = sorted(torch.randperm(N_ROWS - 1, generator=gen)[:3].add(1).tolist())
    total = [torch.zeros(()), torch.zeros_like(x), torch.zeros_like(w), torch.zeros_like(b)]
    for piece in torch.tensor_split(torch.arange(N_ROWS), cuts):
        part = value_and_grads(
            cet.linear_cross_entropy,
            x[piece],
            w,
            b,
            y[piece],
            cotangent=None,
            label_smoothing=0.1,
            normalizer=count,
            **keywords,
        )
        total[0] = total[0] + part[0]
        total[1][piece] = part[1]
        total[2] += part[2]
        total[3] += part[3]
    for got, want in zip(total, full, strict=True):
        torch.testing.assert_close(got.to(want.dtype), want, rtol=1e-12, atol=1e-12)


def test_normalizer_is_checked():
    x, w, _, y, _, _ = make_case()
    with pytest.raises(ValueError, match=r"`normalizer` replaces the denominator of reduction='mean'"):
        cet.linear_cross_entropy(x, w, y, normalizer=10.0, reduction="sum")
    with pytest.raises(ValueError, match=r"`normalizer` must be >= 0; got -2.0"):
        cet.linear_cross_entropy(x, w, y, normalizer=-2.0)
    with pytest.raises(ValueError, match=r"`normalizer` must be a number or a 0-d array"):
        cet.linear_cross_entropy(x, w, y, normalizer=torch.ones(2))


def test_normalizer_zero_gives_zero_as_cross_entropy_does():
    """A step with no counted token (Hugging Face's num_items_in_batch = 0): loss 0, gradients 0."""
    x, w, _, y, _, _ = make_case()
    x, w = x.detach().requires_grad_(), w.detach().requires_grad_()
    loss = cet.linear_cross_entropy(x, w, y, normalizer=0)
    loss.backward()
    assert loss.item() == 0.0
    assert not x.grad.any()
    assert not w.grad.any()


def sequences(seed="shift", batch=3, length=7):
    gen = generator(seed)
    x = torch.randn(batch, length, HIDDEN, generator=gen, dtype=torch.float64)
    w = torch.randn(VOCAB, HIDDEN, generator=gen, dtype=torch.float64) * 0.7
    b = torch.randn(VOCAB, generator=gen, dtype=torch.float64) * 0.3
    y = torch.randint(0, VOCAB, (batch, length), generator=gen)
    y[0, 3] = y[2, 1] = -100
    s = torch.rand(batch, length, generator=gen, dtype=torch.float64)
    return x, w, b, y, s


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True], ids=["plain", "sample-weight"])
def test_shift_equals_the_explicit_slicing(reduction, weighted):
    x, w, b, y, s = sequences()
    keywords = {"reduction": reduction, "label_smoothing": 0.1}
    leaves = [t.clone().requires_grad_() for t in (x, w, b)]
    sliced_weight = s[:, :-1] if weighted else None
    theirs = cet.linear_cross_entropy(
        leaves[0][:, :-1], leaves[1], y[:, 1:], linear_bias=leaves[2], sample_weight=sliced_weight, **keywords
    )
    theirs_grads = torch.autograd.grad(theirs.sum(), leaves)
    ours = cet.linear_cross_entropy(
        *leaves[:2],
        y,
        linear_bias=leaves[2],
        shift=True,
        sample_weight=s if weighted else None,
        chunk_size=4,
        **keywords,
    )
    ours_grads = torch.autograd.grad(ours.sum(), leaves)
    if reduction == "none":
        assert ours.shape == y.shape
        assert torch.equal(ours[:, -1], torch.zeros(3, dtype=ours.dtype))
        ours = ours[:, :-1]
    assert_close(ours.detach(), theirs.detach(), torch.float64)
    for got, want in zip(ours_grads, theirs_grads, strict=True):
        assert_close(got, want, torch.float64)


def test_shift_copies_neither_the_input_nor_the_target(monkeypatch):
    x, w, _, y, _ = sequences()
    seen = []
    original = linear_module._losses_and_gradients

    def spy(input, weight, bias, target, *rest, **kwargs):
        seen.append((input, target))
        return original(input, weight, bias, target, *rest, **kwargs)

    monkeypatch.setattr(linear_module, "_losses_and_gradients", spy)
    cet.linear_cross_entropy(x, w, y, shift=True)
    (rows, row_target), *_ = seen
    assert rows.untyped_storage().data_ptr() == x.untyped_storage().data_ptr()
    assert row_target.untyped_storage().data_ptr() == y.untyped_storage().data_ptr()


def test_shift_needs_sequences():
    x, w, _, y, _, _ = make_case()
    with pytest.raises(ValueError, match=r"`shift` needs `input` of shape \(\.\.\., T, H\)"):
        cet.linear_cross_entropy(x[0], w, y[0], shift=True)


def test_the_module_passes_temperature_shift_and_the_normalizer():
    x, w, b, y, _ = sequences()
    module = cet.LinearCrossEntropyLoss(HIDDEN, VOCAB, bias=True, dtype=torch.float64, temperature=1.5, shift=True)
    with torch.no_grad():
        module.linear.weight.copy_(w)
        module.linear.bias.copy_(b)
    got = module(x, y, normalizer=11.0)
    want = cet.linear_cross_entropy(x, w, y, linear_bias=b, temperature=1.5, shift=True, normalizer=11.0)
    assert_close(got.detach(), want, torch.float64)
