"""The language-model loss head of the softmax cross-entropy (issue 18 §1): ``temperature``.

Every path (the reference code, the Numba kernels, the Triton kernels under the interpreter) is
compared with independent float64 references: PyTorch's ``F.cross_entropy(input / T, ...)`` and
its autograd. A spy on the backends' entry points checks that the forced backend computed.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import crossentropy as ce
import crossentropy.torch as cet
from crossentropy import kernels
from tests._support import NEEDS_TRITON_ON_CPU, record_entry_calls

# torch.func imports torch.jit.script's machinery, deprecated in PyTorch 2.13.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")

PATHS = [
    pytest.param("reference", id="reference"),
    pytest.param("numba", id="numba"),
    pytest.param("triton", id="triton", marks=NEEDS_TRITON_ON_CPU),
]
# Options of F.cross_entropy, and our extras computed by hand in the reference below.
OPTIONS = [
    {},
    {"label_smoothing": 0.1},
    {"weight": True, "label_smoothing": 0.2},
    {"softcap": 2.0},
    {"z_loss": 0.01, "softcap": 3.0, "weight": True},
]


@pytest.fixture
def entry_calls(monkeypatch):
    calls = []
    for chosen in kernels.BACKENDS:
        if chosen.installed():
            record_entry_calls(monkeypatch, chosen.load(), calls, chosen.name)
    return calls


def _expect_backend(path: str, calls: list) -> None:
    assert calls == ([] if path == "reference" else [path] * len(calls)), calls
    assert path == "reference" or calls, "the kernels did not run"


def _reference_loss(x, target, *, temperature=1.0, weight=None, label_smoothing=0.0, softcap=None, z_loss=0.0,
                    reduction="mean"):  # fmt: skip
    """float64 PyTorch: F.cross_entropy of the scaled, capped logits, plus the z-loss by hand."""
    u = x / temperature
    if softcap is not None:
        u = softcap * torch.tanh(u / softcap)
    loss = F.cross_entropy(u, target, weight, label_smoothing=label_smoothing, reduction="none")
    if z_loss:
        index = target.dim() == x.dim() - 1
        omega = torch.ones_like(loss) if weight is None or not index else weight[target.clamp(min=0)]
        valid = (target != -100) if index else torch.ones_like(loss, dtype=torch.bool)
        loss = loss + torch.where(valid, z_loss * omega * torch.logsumexp(u, 1) ** 2, 0.0)
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    if target.dim() == x.dim() - 1:
        valid = target != -100
        omega = torch.ones_like(loss) if weight is None else weight[target.clamp(min=0)]
        return loss.sum() / (omega * valid).sum()
    return loss.sum() / loss.numel()


def _case(seed: int, n: int = 6, c: int = 11, *, probs: bool = False):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, generator=gen, dtype=torch.float64) * 3
    if probs:
        target = torch.softmax(torch.randn(n, c, generator=gen, dtype=torch.float64), 1)
    else:
        target = torch.randint(0, c, (n,), generator=gen)
        target[1] = -100
    weight = torch.rand(c, generator=gen, dtype=torch.float64) + 0.5
    return x, target, weight


def _with_weight(options: dict, weight):
    return {**options, "weight": weight} if options.get("weight") else options


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: "+".join(o) or "plain")
@pytest.mark.parametrize("probs", [False, True], ids=["index", "probs"])
@pytest.mark.parametrize("temperature", [0.5, 2.0])
def test_temperature_torch_layer(path, options, probs, temperature, entry_calls):
    x, target, weight = _case(3, probs=probs)
    options = _with_weight(options, weight)
    for reduction in ("mean", "sum", "none"):
        ours_x = x.clone().requires_grad_()
        ref_x = x.clone().requires_grad_()
        entry_calls.clear()
        with kernels.backend(path):
            ours = cet.cross_entropy(ours_x, target, reduction=reduction, temperature=temperature, **options)
            cotangent = torch.linspace(0.5, 1.5, ours.numel(), dtype=ours.dtype).reshape(ours.shape)
            (ours * cotangent).sum().backward()
        _expect_backend(path, entry_calls)
        expected = _reference_loss(ref_x, target, temperature=temperature, reduction=reduction, **options)
        (expected * cotangent).sum().backward()
        torch.testing.assert_close(ours, expected, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(ours_x.grad, ref_x.grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("path", ["reference", "numba"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_temperature_core_numpy(path, dtype, entry_calls):
    """The core on NumPy arrays: loss and gradient of ``logits / T``, multi-block rows (C > 4096) included."""
    rng = np.random.default_rng(5)
    for c in (13, 9000):
        x = (rng.standard_normal((4, c)) * 4).astype(dtype)
        y = rng.integers(0, c, 4)
        entry_calls.clear()
        with kernels.backend(path):
            loss, grad = ce.softmax_cross_entropy_with_grad(x, y, temperature=0.3, softcap=5.0, z_loss=0.001)
            forward = ce.softmax_cross_entropy(x, y, temperature=0.3, softcap=5.0, z_loss=0.001)
        _expect_backend(path, entry_calls)
        xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
        expected = _reference_loss(xt, torch.tensor(y), temperature=0.3, softcap=5.0, z_loss=0.001)
        expected.backward()
        tol = {"rtol": 1e-5, "atol": 1e-6} if dtype == np.float32 else {"rtol": 1e-11, "atol": 1e-13}
        np.testing.assert_allclose(loss, expected.item(), **tol)
        np.testing.assert_allclose(forward, expected.item(), **tol)
        np.testing.assert_allclose(grad, xt.grad.numpy(), **tol)


@pytest.mark.parametrize("path", ["numba", pytest.param("triton", marks=NEEDS_TRITON_ON_CPU)])
def test_temperature_inplace(path, entry_calls):
    x, target, _ = _case(8)
    x = x.float()
    expected_x = x.clone().requires_grad_()
    _reference_loss(expected_x, target, temperature=1.7).backward()
    ours = x.clone().requires_grad_()
    leaf = ours.clone()  # inplace needs a non-leaf tensor: the gradient is written over it
    with kernels.backend(path):
        loss = cet.cross_entropy(leaf, target, temperature=1.7, inplace=True)
    loss.backward()
    _expect_backend(path, entry_calls)
    torch.testing.assert_close(loss, _reference_loss(x, target, temperature=1.7), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(ours.grad, expected_x.grad, rtol=1e-5, atol=1e-7)


def test_temperature_autograd_paths():
    """Double backward, forward-mode AD and torch.func (the pure-torch path) see the temperature."""
    x, target, weight = _case(12)
    x.requires_grad_()
    options = {"weight": weight, "label_smoothing": 0.1, "softcap": 4.0, "temperature": 0.8}

    def ours(logits):
        return cet.cross_entropy(logits, target, **options)

    def theirs(logits):
        return _reference_loss(logits, target, **{k: v for k, v in options.items()})

    torch.autograd.gradcheck(ours, (x,))
    torch.autograd.gradgradcheck(ours, (x,))
    torch.testing.assert_close(torch.func.grad(ours)(x.detach()), torch.func.grad(theirs)(x.detach()))
    tangent = torch.randn_like(x)
    torch.testing.assert_close(
        torch.func.jvp(ours, (x.detach(),), (tangent,))[1], torch.func.jvp(theirs, (x.detach(),), (tangent,))[1]
    )
    module = cet.CrossEntropyLoss(weight, label_smoothing=0.1, softcap=4.0, temperature=0.8)
    torch.testing.assert_close(module(x, target), theirs(x))
    assert "temperature=0.8" in repr(module)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("inf"), float("nan")])
def test_temperature_refused(bad):
    x, target, _ = _case(1)
    with pytest.raises(ValueError, match=r"`temperature` must be > 0; got"):
        cet.cross_entropy(x, target, temperature=bad)
    with pytest.raises(ValueError, match=r"`temperature` must be > 0; got"):
        ce.softmax_cross_entropy(x.numpy(), target.numpy(), temperature=bad)
    with pytest.raises(TypeError, match=r"`temperature` must be a real number"):
        ce.softmax_cross_entropy(x.numpy(), target.numpy(), temperature="hot")


# --------------------------------------------------------------------------------------------
# normalizer
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("k", [2, 3, 5])
@pytest.mark.parametrize("as_tensor", [False, True], ids=["number", "tensor"])
def test_normalizer_micro_batches_sum_to_the_full_batch(path, k, as_tensor, entry_calls):
    """A padded batch split at random into k micro-batches, each divided by the global count: the
    summed gradients equal the full batch's mean gradient (float64, tight)."""
    gen = torch.Generator().manual_seed(100 + k)
    n, c = 23, 17
    x = torch.randn(n, c, generator=gen, dtype=torch.float64) * 2
    target = torch.randint(0, c, (n,), generator=gen)
    target[torch.rand(n, generator=gen) < 0.3] = -100  # padding
    options = {"label_smoothing": 0.1, "z_loss": 1e-3, "temperature": 1.3}
    full_x = x.clone().requires_grad_()
    cet.cross_entropy(full_x, target, **options).backward()
    count = int((target != -100).sum())
    normalizer = torch.tensor(count) if as_tensor else count
    cuts = sorted(torch.randperm(n - 1, generator=gen)[: k - 1].add(1).tolist())
    micro_x = x.clone().requires_grad_()
    total = torch.zeros((), dtype=torch.float64)
    entry_calls.clear()
    with kernels.backend(path):
        for rows in torch.tensor_split(torch.arange(n), cuts):
            loss = cet.cross_entropy(micro_x[rows], target[rows], normalizer=normalizer, **options)
            loss.backward()
            total += loss.detach()
    _expect_backend(path, entry_calls)
    torch.testing.assert_close(micro_x.grad, full_x.grad, rtol=1e-12, atol=1e-14)
    expected = _reference_loss(x, target, temperature=1.3, label_smoothing=0.1, z_loss=1e-3)
    torch.testing.assert_close(total, expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("path", PATHS)
def test_normalizer_core_and_weights(path, entry_calls):
    """The (weighted) sum over the normalizer, on the core and the torch layer; 0 gives 0."""
    x, target, weight = _case(21)
    arrays = (x.numpy(), target.numpy()) if path != "triton" else (x, target)
    with kernels.backend(path):
        loss, grad = ce.softmax_cross_entropy_with_grad(*arrays, weight=arrays[0][0] * 0 + 1, normalizer=7.5)
        summed, summed_grad = ce.softmax_cross_entropy_with_grad(*arrays, reduction="sum")
        zero, zero_grad = ce.softmax_cross_entropy_with_grad(*arrays, normalizer=0)
        ours = cet.cross_entropy(x, target, weight, normalizer=torch.tensor(4.0), sample_weight=torch.rand(6) + 0.5)
    np.testing.assert_allclose(np.asarray(loss), np.asarray(summed) / 7.5, rtol=1e-13)
    np.testing.assert_allclose(np.asarray(grad), np.asarray(summed_grad) / 7.5, rtol=1e-13, atol=1e-16)
    assert float(zero) == 0.0
    assert not np.asarray(zero_grad).any()
    assert torch.isfinite(ours)


def test_normalizer_refused():
    x, target, _ = _case(2)
    for reduction in ("sum", "none"):
        with pytest.raises(ValueError, match=r"`normalizer` .* reduction='mean' .*; got reduction="):
            cet.cross_entropy(x, target, reduction=reduction, normalizer=4)
        with pytest.raises(ValueError, match=r"`normalizer` .* reduction='mean'"):
            ce.softmax_cross_entropy(x.numpy(), target.numpy(), reduction=reduction, normalizer=4)
    with pytest.raises(ValueError, match=r"`normalizer` must be >= 0; got -1"):
        cet.cross_entropy(x, target, normalizer=-1)
    with pytest.raises(ValueError, match=r"`normalizer` must be a number or a 0-d array; got shape \(2,\)"):
        cet.cross_entropy(x, target, normalizer=torch.ones(2))
    with pytest.raises(TypeError, match=r"`normalizer` must be a number or a 0-d array; got str"):
        ce.softmax_cross_entropy(x.numpy(), target.numpy(), normalizer="all")


def test_normalizer_differentiable_on_the_generic_path():
    """A normalizer that requires grad runs the generic code, which autograd differentiates in it."""
    x, target, _ = _case(4)
    count = torch.tensor(5.0, dtype=torch.float64, requires_grad=True)
    loss = cet.cross_entropy(x.requires_grad_(), target, normalizer=count)
    (d_count,) = torch.autograd.grad(loss, count)
    torch.testing.assert_close(d_count, -loss.detach() / 5.0)


# --------------------------------------------------------------------------------------------
# return_stats
# --------------------------------------------------------------------------------------------


def _reference_stats(x, target, *, temperature=1.0, softcap=None, sample_weight=None):
    """float64 PyTorch: logsumexp, entropy (torch.special.entr) and argmax hits of the scaled, capped logits."""
    u = x / temperature
    if softcap is not None:
        u = softcap * torch.tanh(u / softcap)
    live = target != -100
    if sample_weight is not None:
        live = live & (sample_weight != 0)
    lse = torch.where(live, torch.logsumexp(u, 1), 0.0)
    entropy = torch.where(live, torch.special.entr(torch.softmax(u, 1)).sum(1), 0.0)
    return lse, entropy, live & (u.argmax(1) == target)


def _stats_case(seed: int, c: int = 11, n: int = 8):
    x, target, weight = _case(seed, n=n, c=c)
    x[2, 1] = x[2, 4] = x[2].max() + 1  # a tie: the first maximum counts
    target[2] = 4
    target[3] = x[3].argmax()
    target[4] = x[4].argmax()
    return x, target, weight


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("c", [11, 9000], ids=["one-block", "multi-block"])
@pytest.mark.parametrize(
    "options", [{}, {"temperature": 0.7, "softcap": 3.0, "label_smoothing": 0.1}], ids=["plain", "T+cap"]
)
def test_stats_equal_float64_references(path, c, options, entry_calls):
    if path == "triton" and c > 100:
        c = 300  # the interpreter is slow; block_v below splits the row into tiles instead
    x, target, weight = _stats_case(31, c=c)
    sample_weight = torch.rand(8, dtype=torch.float64) + 0.5
    sample_weight[5] = 0
    entry_calls.clear()
    with kernels.backend(path):
        loss, stats = cet.cross_entropy(x, target, weight, sample_weight=sample_weight, return_stats=True, **options)
        with_grad_x = x.clone().requires_grad_()
        loss_g, stats_g = cet.cross_entropy(
            with_grad_x, target, weight, sample_weight=sample_weight, return_stats=True, **options
        )
        core_loss, core_stats = ce.softmax_cross_entropy(
            x, target, weight=weight, sample_weight=sample_weight, return_stats=True, **options
        )
    _expect_backend(path, entry_calls)
    expected = _reference_stats(x, target, temperature=options.get("temperature", 1.0),
                                softcap=options.get("softcap"), sample_weight=sample_weight)  # fmt: skip
    plain = cet.cross_entropy(x, target, weight, sample_weight=sample_weight, **options)
    for got_loss, got in ((loss, stats), (loss_g, stats_g), (core_loss, core_stats)):
        assert isinstance(got, ce.LossStats)
        torch.testing.assert_close(got_loss.detach(), plain, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(got.lse.detach(), expected[0], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(got.entropy.detach(), expected[1], rtol=1e-10, atol=1e-12)
        assert got.accuracy.dtype == torch.bool
        assert torch.equal(got.accuracy, expected[2])
    assert stats.accuracy[2].item() is False  # the tie: argmax is 1, the target 4
    assert stats.accuracy[3].item() is True


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("c", [11, 9000], ids=["one-block", "multi-block"])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_stats_with_masked_logits(path, c, temperature, entry_calls):
    """``-inf`` logits (a masked vocabulary) add nothing to the entropy: ``0 log 0 = 0``, never NaN."""
    if path == "triton" and c > 100:
        c = 300
    x, target, _ = _stats_case(37, c=c)
    x[0, : c // 2] = -torch.inf  # the first blocks masked: the maximum is found later
    x[1, 3::5] = -torch.inf  # scattered
    x[4, -1] = -torch.inf  # the last entry only
    target[0] = c - 1
    entry_calls.clear()
    with kernels.backend(path):
        loss, stats = cet.cross_entropy(x, target, temperature=temperature, return_stats=True)
        for dtype in (np.float32, np.float64):
            logits = x.numpy().astype(dtype)
            core_loss, core_stats = ce.softmax_cross_entropy(
                logits, target.numpy(), temperature=temperature, return_stats=True, reduction="none"
            )
            expected = _reference_stats(torch.from_numpy(logits).double(), target, temperature=temperature)
            tolerance = {"rtol": 2e-5, "atol": 1e-5} if dtype == np.float32 else {"rtol": 1e-12, "atol": 1e-12}
            expected_loss = F.cross_entropy(torch.from_numpy(logits).double() / temperature, target, reduction="none")
            np.testing.assert_allclose(core_loss, expected_loss.numpy(), **tolerance)
            np.testing.assert_allclose(core_stats.lse, expected[0].numpy(), **tolerance)
            np.testing.assert_allclose(core_stats.entropy, expected[1].numpy(), **tolerance)
            np.testing.assert_array_equal(core_stats.accuracy, expected[2].numpy())
    if path != "reference":
        assert entry_calls, "the kernels did not run"
    expected = _reference_stats(x, target, temperature=temperature)
    assert torch.isfinite(loss)
    torch.testing.assert_close(stats.lse, expected[0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(stats.entropy, expected[1], rtol=1e-10, atol=1e-12)
    assert torch.equal(stats.accuracy, expected[2])


@pytest.mark.parametrize("path", PATHS)
def test_stats_gradients(path, entry_calls):
    """loss + a lse term + an entropy bonus: the gradient equals float64 autograd through the references."""
    x, target, _ = _stats_case(41)
    options = {"temperature": 1.4, "softcap": 4.0}
    ours_x, ref_x = x.clone().requires_grad_(), x.clone().requires_grad_()
    with kernels.backend(path):
        loss, stats = cet.cross_entropy(ours_x, target, return_stats=True, **options)
        (loss + 0.3 * stats.lse.square().sum() - 0.05 * stats.entropy.sum()).backward()
    _expect_backend(path, entry_calls)
    lse, entropy, _ = _reference_stats(ref_x, target, **options)
    expected = _reference_loss(ref_x, target, **options) + 0.3 * lse.square().sum() - 0.05 * entropy.sum()
    expected.backward()
    torch.testing.assert_close(ours_x.grad, ref_x.grad, rtol=1e-10, atol=1e-13)
    # only the entropy differentiated (no loss gradient): the stats' backward alone
    only_x = x.clone().requires_grad_()
    with kernels.backend(path):
        _, stats = cet.cross_entropy(only_x, target, return_stats=True, **options)
        stats.entropy.sum().backward()
    ref_only = x.clone().requires_grad_()
    _reference_stats(ref_only, target, **options)[1].sum().backward()
    torch.testing.assert_close(only_x.grad, ref_only.grad, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("path", ["reference", "numba"])
def test_stats_gradcheck_and_gradgradcheck(path):
    x, target, _ = _stats_case(51, c=6, n=5)
    x = x.requires_grad_()

    def head(logits):
        loss, stats = cet.cross_entropy(logits, target, return_stats=True, temperature=0.9, softcap=5.0)
        return loss, stats.lse, stats.entropy

    with kernels.backend(path):
        torch.autograd.gradcheck(head, (x,))
        torch.autograd.gradgradcheck(head, (x,))


def test_stats_compile_fullgraph():
    """torch.compile(fullgraph=True) keeps the stats operator in one graph, forward and backward."""
    x, target, _ = _stats_case(61)
    torch._dynamo.reset()

    def step(logits, labels):
        loss, stats = cet.cross_entropy(logits, labels, return_stats=True, temperature=1.5, normalizer=5)
        return loss - 0.01 * stats.entropy.sum(), stats.accuracy

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    ours_x, ref_x = x.clone().requires_grad_(), x.clone().requires_grad_()
    value, hits = compiled(ours_x, target)
    value.backward()
    expected, expected_hits = step(ref_x, target)
    expected.backward()
    torch.testing.assert_close(value, expected)
    torch.testing.assert_close(ours_x.grad, ref_x.grad)
    assert torch.equal(hits, expected_hits)


def test_stats_opcheck():
    x, target, weight = _stats_case(71, c=5, n=5)
    x = x.requires_grad_()
    args = (x, target, weight, None, None, 1, -100, 0.1, 0.01, 2.0, "mean", 0.8)
    for with_grad in (True, False):
        torch.library.opcheck(torch.ops.crossentropy.softmax_cross_entropy_stats.default, (*args, with_grad))


def test_stats_refused_and_module():
    x, target, _ = _case(81)
    probs = torch.softmax(x, 1)
    with pytest.raises(ValueError, match=r"`return_stats` needs class-index targets"):
        cet.cross_entropy(x, probs, return_stats=True)
    with pytest.raises(ValueError, match=r"`return_stats=True` cannot go with `inplace=True`"):
        cet.cross_entropy(x.float().requires_grad_().clone(), target, return_stats=True, inplace=True)
    module = cet.CrossEntropyLoss(return_stats=True, temperature=2.0)
    _, stats = module(x, target, normalizer=3)
    torch.testing.assert_close(stats.lse, _reference_stats(x, target, temperature=2.0)[0])
    assert cet.LossStats is ce.LossStats
