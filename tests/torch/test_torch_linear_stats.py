"""``linear_cross_entropy(..., return_stats=True)``: the per-token log-sum-exp, entropy and accuracy of the
logits the loss reads, and their gradients, on every engine, against float64 references that
materialize the logits (``torch.logsumexp``, the entropy from ``log_softmax``, ``torch.argmax``).

Engines: the chunked one on the Numba row kernels, the reference code (``kernels.disabled()``), and
the fused Triton kernels (``kernels.backend("triton")``, under Triton's interpreter on the CPU, small
shapes), with a spy proving the fused kernels computed the statistics and their gradient.
"""

from __future__ import annotations

import pytest
import torch

import crossentropy.torch as cet
from crossentropy import kernels
from crossentropy.losses import LossStats

ENGINES = ["numba", "reference", "triton"]
IGNORED = -100


def _engine(name):
    if name == "triton":
        pytest.importorskip("triton")
    return kernels.backend(name)


def _data(n=11, h=6, v=40, seed=0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, h, generator=gen, dtype=dtype).requires_grad_()
    w = (torch.randn(v, h, generator=gen, dtype=dtype) / 2).requires_grad_()
    b = (torch.randn(v, generator=gen, dtype=dtype) / 2).requires_grad_()
    y = torch.randint(0, v, (n,), generator=gen)
    y[2] = IGNORED
    s = torch.rand(n, generator=gen, dtype=dtype) + 0.5
    s[4] = 0.0
    return x, w, b, y, s


def _reference(x, w, b, y, s, *, softcap=None, temperature=1.0, reduction="mean"):
    """The loss and statistics from the materialized float64 logits."""
    logits = torch.nn.functional.linear(x, w, b) / temperature
    u = logits if softcap is None else softcap * torch.tanh(logits / softcap)
    live = (y != IGNORED) & (s != 0)
    losses = torch.nn.functional.cross_entropy(u, y, reduction="none", ignore_index=IGNORED) * s
    loss = {"mean": losses.sum() / (s * (y != IGNORED)).sum(), "sum": losses.sum(), "none": losses}[reduction]
    log_p = torch.log_softmax(u, dim=1)
    zero = torch.zeros(x.shape[0], dtype=x.dtype)
    lse = torch.where(live, torch.logsumexp(u, dim=1), zero)
    entropy = torch.where(live, -(log_p.exp() * log_p).sum(dim=1), zero)
    hits = (torch.argmax(u, dim=1) == y) & live
    return loss, LossStats(lse, entropy, hits)


OPTIONS = [{}, {"softcap": 2.0, "temperature": 0.6}]
OPTION_IDS = ["plain", "cap-temperature"]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("options", OPTIONS, ids=OPTION_IDS)
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_stats_and_their_gradients_match_materialized_logits(engine, options, reduction):
    x, w, b, y, s = _data()
    a, c = 0.3, -0.7
    with _engine(engine):
        loss, stats = cet.linear_cross_entropy(
            x, w, y, linear_bias=b, sample_weight=s, reduction=reduction, chunk_size=4, return_stats=True, **options
        )
        total = loss.sum() + a * stats.entropy.sum() + c * stats.lse.sum()
        got = torch.autograd.grad(total, (x, w, b))
    assert isinstance(stats, LossStats)
    expected_loss, expected = _reference(x, w, b, y, s, reduction=reduction, **options)
    torch.testing.assert_close(loss, expected_loss, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(stats.lse, expected.lse, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(stats.entropy, expected.entropy, rtol=1e-12, atol=1e-12)
    assert stats.accuracy.dtype == torch.bool
    assert torch.equal(stats.accuracy, expected.accuracy)
    reference_total = expected_loss.sum() + a * expected.entropy.sum() + c * expected.lse.sum()
    for mine, theirs in zip(got, torch.autograd.grad(reference_total, (x, w, b)), strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("engine", ENGINES)
def test_gradient_of_the_statistics_alone(engine):
    """Only the statistics reach the backward (the loss unused): their gradient on its own."""
    x, w, b, y, s = _data(seed=1)
    with _engine(engine):
        _, stats = cet.linear_cross_entropy(x, w, y, linear_bias=b, sample_weight=s, chunk_size=5, return_stats=True)
        got = torch.autograd.grad(stats.entropy.sum(), (x, w, b))
    _, expected = _reference(x, w, b, y, s)
    for mine, theirs in zip(got, torch.autograd.grad(expected.entropy.sum(), (x, w, b)), strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("engine", ENGINES)
def test_arg_max_ties_go_to_the_first_class(engine):
    """Exact ties: the identity projection makes the rows of the input the logits."""
    v = 70
    x = torch.zeros(4, v, dtype=torch.float64)
    x[0, [3, 7]] = 2.0
    x[1, [10, 65]] = 2.0
    x[2] = 1.0
    x[3, [1, 2]] = 5.0
    y = torch.tensor([3, 65, 0, 2])
    with _engine(engine):
        _, stats = cet.linear_cross_entropy(x, torch.eye(v, dtype=torch.float64), y, return_stats=True)
    assert stats.accuracy.tolist() == (torch.argmax(x, dim=1) == y).tolist() == [True, False, True, False]


def test_the_fused_kernels_compute_the_statistics_and_their_gradient(monkeypatch):
    pytest.importorskip("triton")
    from crossentropy.kernels.triton import _linear

    calls = []
    for name in ("linear_logsumexp", "linear_cross_entropy_gradients"):
        original = getattr(_linear, name)

        def spy(*args, _original=original, _name=name, **options):
            calls.append((_name, options.get("stats", False), "entropy_weight" in options))
            return _original(*args, **options)

        monkeypatch.setattr(_linear, name, spy)
    x, w, b, y, s = _data(n=7, v=20)
    with kernels.backend("triton"):
        loss, stats = cet.linear_cross_entropy(x, w, y, linear_bias=b, sample_weight=s, return_stats=True)
        (loss + stats.entropy.sum()).backward()
    assert calls == [
        ("linear_logsumexp", True, False),  # loss, statistics and the loss's gradient in the forward
        ("linear_cross_entropy_gradients", False, False),
        ("linear_cross_entropy_gradients", False, True),  # the statistics' gradient in the backward
    ]
    _, expected = _reference(x, w, b, y, s)
    torch.testing.assert_close(stats.entropy, expected.entropy, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("engine", ["numba", "reference"])
def test_gradcheck_and_gradgradcheck_through_entropy(engine):
    x, w, b, y, s = _data(n=5, h=3, v=7)

    def entropy(x, w, b):
        _, stats = cet.linear_cross_entropy(
            x, w, y, linear_bias=b, sample_weight=s, softcap=3.0, temperature=0.8, chunk_size=2, return_stats=True
        )
        return stats.entropy, stats.lse

    with _engine(engine):
        assert torch.autograd.gradcheck(entropy, (x, w, b))
        assert torch.autograd.gradgradcheck(entropy, (x, w, b))


@pytest.mark.parametrize("engine", ENGINES)
def test_shift_describes_the_logits_of_each_position(engine):
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(2, 5, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn(9, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 9, (2, 5), generator=gen)
    y[1, 2] = IGNORED
    with _engine(engine):
        loss, stats = cet.linear_cross_entropy(x, w, y, shift=True, reduction="none", return_stats=True)
        grads = torch.autograd.grad(loss.sum() + stats.entropy.sum(), (x, w))
    assert stats.lse.shape == stats.entropy.shape == stats.accuracy.shape == y.shape
    with kernels.disabled():
        sliced_loss, sliced = cet.linear_cross_entropy(x[:, :-1], w, y[:, 1:], reduction="none", return_stats=True)
        expected_grads = torch.autograd.grad(sliced_loss.sum() + sliced.entropy.sum(), (x, w))
    for got, expected in ((stats.lse, sliced.lse), (stats.entropy, sliced.entropy)):
        torch.testing.assert_close(got[:, :-1], expected, rtol=1e-12, atol=1e-12)
        assert (got[:, -1] == 0).all()
    assert torch.equal(stats.accuracy[:, :-1], sliced.accuracy)
    assert not stats.accuracy[:, -1].any()
    for got, expected in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("engine", ENGINES)
def test_ignored_rows_and_zero_sample_weights_give_zeros_and_no_gradient(engine):
    x, w, b, y, s = _data(seed=2)
    with _engine(engine):
        _, stats = cet.linear_cross_entropy(x, w, y, linear_bias=b, sample_weight=s, return_stats=True)
        (grad_x,) = torch.autograd.grad((stats.entropy + stats.lse).sum(), (x,))
    for row in (2, 4):  # ignored, sample weight 0
        assert stats.lse[row] == 0
        assert stats.entropy[row] == 0
        assert not stats.accuracy[row]
        assert (grad_x[row] == 0).all()
    assert (stats.lse[[0, 1, 3]] != 0).all()


def test_float32_statistics_come_back_in_the_inputs_dtype():
    x, w, b, y, _ = (t.detach().float() if t.is_floating_point() else t for t in _data())
    with kernels.backend("numba"):
        loss, stats = cet.linear_cross_entropy(x, w, y, linear_bias=b, return_stats=True)
    assert loss.dtype == stats.lse.dtype == stats.entropy.dtype == torch.float32
    _, expected = _reference(x.double(), w.double(), b.double(), y, torch.ones(x.shape[0], dtype=torch.float64))
    torch.testing.assert_close(stats.entropy.double(), expected.entropy, rtol=1e-5, atol=1e-5)


def test_a_backend_without_row_statistics_falls_back_to_pytorch_on_the_chunk(monkeypatch):
    from crossentropy.kernels import numba as numba_kernels

    original = numba_kernels.softmax_cross_entropy_rows

    def without_stats(*args, stats=None, **options):
        if stats is not None:
            raise TypeError("softmax_cross_entropy_rows() got an unexpected keyword argument 'stats'")
        return original(*args, **options)

    monkeypatch.setattr(numba_kernels, "softmax_cross_entropy_rows", without_stats)
    x, w, b, y, s = _data(seed=3)
    with kernels.backend("numba"):
        loss, stats = cet.linear_cross_entropy(x, w, y, linear_bias=b, sample_weight=s, chunk_size=3, return_stats=True)
    expected_loss, expected = _reference(x, w, b, y, s)
    torch.testing.assert_close(loss, expected_loss, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(stats.entropy, expected.entropy, rtol=1e-12, atol=1e-12)
    assert torch.equal(stats.accuracy, expected.accuracy)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")  # PyTorch's own import
def test_torch_func_and_forward_ad_differentiate_the_statistics():
    x, w, b, y, s = (t.detach() for t in _data(n=6, v=12))

    def entropy_sum(w):
        return cet.linear_cross_entropy(x, w, y, linear_bias=b, sample_weight=s, return_stats=True)[1].entropy.sum()

    got = torch.func.grad(entropy_sum)(w)
    w_ = w.clone().requires_grad_()
    expected = torch.autograd.grad(_reference(x, w_, b, y, s)[1].entropy.sum(), w_)[0]
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
    tangent = torch.randn_like(w)
    with torch.autograd.forward_ad.dual_level():
        dual = entropy_sum(torch.autograd.forward_ad.make_dual(w, tangent))
        jvp = torch.autograd.forward_ad.unpack_dual(dual).tangent
    torch.testing.assert_close(jvp, (expected * tangent).sum(), rtol=1e-10, atol=1e-12)


def test_compiled_full_graph():
    x, w, b, y, _ = _data(n=8, v=16)

    def step(x, w, b):
        loss, stats = cet.linear_cross_entropy(x, w, y, linear_bias=b, return_stats=True, chunk_size=3)
        return loss + 0.1 * stats.entropy.sum(), stats.accuracy

    compiled = torch.compile(step, backend="aot_eager", fullgraph=True, dynamic=True)
    total, hits = compiled(x, w, b)
    expected_total, expected_hits = step(x, w, b)
    torch.testing.assert_close(total, expected_total)
    assert torch.equal(hits, expected_hits)
    got = torch.autograd.grad(total, (x, w, b))
    for mine, theirs in zip(got, torch.autograd.grad(expected_total, (x, w, b)), strict=True):
        torch.testing.assert_close(mine, theirs)


def test_return_stats_needs_index_targets_and_is_off_by_default():
    x, w, _, y, _ = _data()
    probabilities = torch.softmax(torch.randn(x.shape[0], w.shape[0], dtype=torch.float64), dim=1)
    with pytest.raises(ValueError, match="return_stats"):
        cet.linear_cross_entropy(x, w, probabilities, return_stats=True)
    assert isinstance(cet.linear_cross_entropy(x, w, y), torch.Tensor)
