"""The torch layer under ``torch.compile``, and its ``torch.library`` custom operators.

- A training step (a small model, the three fused losses with their options, the gradients by
  ``torch.autograd.grad`` or ``loss.backward()``, an SGD update) compiles with
  ``fullgraph=True`` and dynamic shapes, gives eager's loss and gradients, and compiles once for
  every batch size (``error_on_recompile``). So does an evaluation step under ``torch.no_grad()``.
- The compiled graphs hold the operators: the forward graph the ``_with_grad`` operators, whose
  gradient the backward graph scales instead of computing it again.
- ``torch.library.opcheck`` passes for every operator, on representative arguments.
- ``inplace=True`` stays eager: ``fullgraph=True`` refuses its graph break.

The oracle is the same step run eagerly (held to PyTorch itself by the other test files), and
PyTorch's own functions for the options PyTorch has. Most tests compile with the ``aot_eager``
backend: AOTAutograd traces, functionalizes and partitions the graphs as for Inductor, without
the C++ code generation, which takes a minute on a small machine; one test runs Inductor itself.
"""

from __future__ import annotations

import zlib

import pytest
import torch
import torch.nn.functional as F
from functorch.compile import make_boxed_func
from torch._dynamo.backends.common import aot_autograd
from torch._dynamo.utils import counters

import crossentropy.torch as cet
from crossentropy import kernels
from tests._support import assert_close, record_entry_calls

DTYPE = torch.float32


def generator(*params) -> torch.Generator:
    return torch.Generator().manual_seed(zlib.crc32(repr(params).encode()))


@pytest.fixture(scope="module", autouse=True)
def kernels_started():
    """The kernels' threads start before anything compiles. Numba's GNU OpenMP layer, starting on
    the kernels' first call, sets the process's OpenMP thread count, which PyTorch reads as its own
    (``torch.get_num_threads()``), and Dynamo guards on it: a graph compiled before that first call
    would compile again after it, whatever the batch size. The count is set back afterwards."""
    threads = torch.get_num_threads()
    cet.cross_entropy(torch.zeros(2, 3), torch.tensor([0, 1]))
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def fresh_dynamo(kernels_started):
    """Each test compiles afresh, with Dynamo tracing ``autograd.grad``/``backward`` into the graph."""
    torch._dynamo.reset()
    counters.clear()
    with torch._dynamo.config.patch(trace_autograd_ops=True):
        yield
    torch._dynamo.reset()


class Model(torch.nn.Module):
    """A small classifier whose heads feed every loss: a softmax head of 5 classes (also spatial,
    (N, 5, 3)), a sigmoid head of 4 labels, and hidden states for a linear head of 11 classes."""

    def __init__(self):
        super().__init__()
        gen = generator("model")
        self.body = torch.nn.Linear(6, 8)
        self.classes = torch.nn.Linear(8, 5)
        self.spatial = torch.nn.Linear(8, 15)
        self.labels = torch.nn.Linear(8, 4)
        self.vocabulary = torch.nn.Linear(8, 11)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)

    def forward(self, x):
        hidden = torch.tanh(self.body(x))
        spatial = self.spatial(hidden).reshape(-1, 5, 3)
        return self.classes(hidden), spatial, self.labels(hidden), hidden


def batch(n: int, seed=0):
    """Inputs and targets for ``n`` samples; the second and fifth class targets are ignored (-100)."""
    gen = generator("batch", n, seed)
    x = torch.randn(n, 6, generator=gen)
    y = torch.randint(0, 5, (n,), generator=gen)
    y[1] = -100
    return {
        "x": x,
        "y": y,
        "probs": torch.softmax(torch.randn(n, 5, generator=gen), dim=1),
        "y_spatial": torch.randint(0, 5, (n, 3), generator=gen),
        "labels": torch.rand(n, 4, generator=gen),
        "tokens": torch.where(torch.arange(n) == 4 % n, -100, torch.randint(0, 11, (n,), generator=gen)),
        "sample_weight": torch.rand(n, generator=gen) + 0.5,
    }


# Batch sizes other than the model's static sizes (3, 4, 5, 6, 8, 11, 15): Dynamo gives equal sizes one
# symbol ("duck sizing"), so a batch of 6 would be tied to the 6 input features, and specialized.
BATCH_SIZES = (7, 10, 13)

CLASS_WEIGHT = torch.tensor([0.5, 1.0, 2.0, 1.5, 0.8])
POS_WEIGHT = torch.tensor([1.0, 3.0, 0.5, 2.0])


def losses(model: Model, data: dict) -> torch.Tensor:
    """Every fused loss with a few of its options, summed."""
    logits, spatial, label_logits, hidden = model(data["x"])
    y, sample_weight = data["y"], data["sample_weight"]
    terms = [
        cet.cross_entropy(logits, y),
        cet.cross_entropy(logits, y, weight=CLASS_WEIGHT, label_smoothing=0.1, reduction="sum"),
        cet.cross_entropy(logits, y, z_loss=1e-2, softcap=3.0, sample_weight=sample_weight),
        cet.cross_entropy(logits, y, reduction="none").square().mean(),  # a per-sample incoming gradient
        cet.cross_entropy(logits, data["probs"], label_smoothing=0.05),
        cet.cross_entropy(spatial, data["y_spatial"], weight=CLASS_WEIGHT),
        cet.binary_cross_entropy_with_logits(label_logits, data["labels"], pos_weight=POS_WEIGHT),
        cet.binary_cross_entropy_with_logits(
            label_logits, data["labels"], label_smoothing=0.1, sample_weight=sample_weight, reduction="sum"
        ),
        cet.binary_cross_entropy_with_logits(label_logits, data["labels"], reduction="none").mean(dim=0).sum(),
        cet.linear_cross_entropy(hidden, model.vocabulary.weight, data["tokens"], linear_bias=model.vocabulary.bias),
        cet.linear_cross_entropy(hidden, model.vocabulary.weight, data["tokens"], z_loss=1e-2, softcap=4.0),
        cet.linear_cross_entropy(
            hidden, model.vocabulary.weight, data["tokens"], label_smoothing=0.1, reduction="none", chunk_size=3
        ).sum(),
    ]
    return sum(terms)


def grad_step(model: Model, data: dict):
    loss = losses(model, data)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    return loss.detach(), grads


def sgd_step(model: Model, data: dict) -> torch.Tensor:
    loss = losses(model, data)
    loss.backward()
    with torch.no_grad():
        for p in model.parameters():
            p -= 0.1 * p.grad
    return loss.detach()


def assert_grads_close(got, expected, dtype=DTYPE):
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        assert_close(g, e, dtype)


def compiled_graphs() -> int:
    """Graphs Dynamo compiled since the test began (an analysis it restarts within one compilation,
    as it does to specialize Python floats it first took as symbols, counts once)."""
    return counters["stats"]["unique_graphs"]


def recording_backend():
    """``aot_eager`` that also keeps the forward and backward graphs' code."""
    graphs = {"forward": [], "backward": [], "inference": []}

    def keep(kind):
        def compiler(gm, example_inputs):
            graphs[kind].append(gm.code)
            return make_boxed_func(gm)

        return compiler

    backend = aot_autograd(
        fw_compiler=keep("forward"), bw_compiler=keep("backward"), inference_compiler=keep("inference")
    )
    return backend, graphs


# --------------------------------------------------------------------------------------------
# Training and evaluation steps
# --------------------------------------------------------------------------------------------


def test_a_training_step_compiles_in_one_graph_once_for_every_batch_size_and_equals_eager():
    model = Model()
    backend, graphs = recording_backend()
    compiled = torch.compile(grad_step, backend=backend, fullgraph=True, dynamic=True)
    with torch._dynamo.config.patch(error_on_recompile=True):
        for n in BATCH_SIZES:
            data = batch(n)
            loss, grads = compiled(model, data)
            expected_loss, expected_grads = grad_step(model, data)
            assert_close(loss, expected_loss, DTYPE)
            assert_grads_close(grads, expected_grads)
    assert compiled_graphs() == 1
    # Dynamo traced autograd.grad: forward and backward are one graph without autograd, in which each
    # loss's operator runs once (the kept gradients are scaled, not computed again).
    (graph,) = graphs["inference"]
    assert graph.count("crossentropy.softmax_cross_entropy_with_grad.default(") == 6
    assert graph.count("crossentropy.sigmoid_cross_entropy_with_grad.default(") == 3
    assert graph.count("crossentropy.linear_cross_entropy_with_grad.default(") == 2
    # reduction="none": the per-row incoming gradient is known in the backward only
    assert graph.count("crossentropy.linear_cross_entropy.default(") == 1
    assert graph.count("crossentropy.linear_cross_entropy_backward.default(") == 1
    assert "crossentropy.softmax_cross_entropy.default(" not in graph


def test_a_compiled_loss_differentiated_outside_gives_eagers_gradients_from_its_backward_graph():
    """The usual split: the compiled forward returns the loss, ``loss.backward()`` runs the backward
    graph AOTAutograd partitioned from it, where the operators' registered backward was traced."""
    model = Model()
    backend, graphs = recording_backend()
    compiled = torch.compile(losses, backend=backend, fullgraph=True, dynamic=True)
    with torch._dynamo.config.patch(error_on_recompile=True):
        for n in BATCH_SIZES:
            data = batch(n, seed="outside")
            model.zero_grad()
            loss = compiled(model, data)
            loss.backward()
            got = [p.grad.clone() for p in model.parameters()]
            model.zero_grad()
            expected = losses(model, data)
            expected.backward()
            assert_close(loss.detach(), expected.detach(), DTYPE)
            assert_grads_close(got, [p.grad for p in model.parameters()])
    assert compiled_graphs() == 1
    (forward,) = graphs["forward"]
    (backward,) = graphs["backward"]
    for operator in ("softmax_cross_entropy_with_grad", "sigmoid_cross_entropy_with_grad"):
        assert f"crossentropy.{operator}.default(" in forward
        assert f"crossentropy.{operator}.default(" not in backward  # the kept gradient is scaled, not recomputed
    assert "crossentropy.linear_cross_entropy_with_grad.default(" in forward
    assert "crossentropy.linear_cross_entropy_backward.default(" in backward


def test_the_compiled_training_step_equals_pytorchs_own_losses():
    """An independent oracle: ``torch.nn.functional``'s losses in an eager step."""

    def ours(model, data):
        logits, _, label_logits, hidden = model(data["x"])
        loss = cet.cross_entropy(logits, data["y"], weight=CLASS_WEIGHT, label_smoothing=0.1)
        loss = loss + cet.binary_cross_entropy_with_logits(label_logits, data["labels"], pos_weight=POS_WEIGHT)
        loss = loss + cet.linear_cross_entropy(
            hidden, model.vocabulary.weight, data["tokens"], linear_bias=model.vocabulary.bias
        )
        return loss.detach(), torch.autograd.grad(loss, list(model.parameters()), allow_unused=True)

    def theirs(model, data):
        logits, _, label_logits, hidden = model(data["x"])
        loss = F.cross_entropy(logits, data["y"], weight=CLASS_WEIGHT, label_smoothing=0.1)
        loss = loss + F.binary_cross_entropy_with_logits(label_logits, data["labels"], pos_weight=POS_WEIGHT)
        loss = loss + F.cross_entropy(model.vocabulary(hidden), data["tokens"])
        return loss.detach(), torch.autograd.grad(loss, list(model.parameters()), allow_unused=True)

    model = Model()
    compiled = torch.compile(ours, backend="aot_eager", fullgraph=True, dynamic=True)
    for n in (9, 10):
        data = batch(n, seed="pytorch")
        loss, grads = compiled(model, data)
        expected_loss, expected_grads = theirs(model, data)
        assert_close(loss, expected_loss, DTYPE)
        for g, e in zip(grads, expected_grads, strict=True):
            assert (g is None) == (e is None)
            if g is not None:
                assert_close(g, e, DTYPE)


def test_backward_and_an_sgd_update_compile_and_equal_eager():
    compiled_model, eager_model = Model(), Model()
    compiled = torch.compile(sgd_step, backend="aot_eager", fullgraph=True, dynamic=True)
    with torch._dynamo.config.patch(error_on_recompile=True):
        for step, n in enumerate(BATCH_SIZES):
            data = batch(n, seed=step)
            for model in (compiled_model, eager_model):
                for p in model.parameters():
                    p.grad = None
            assert_close(compiled(compiled_model, data), sgd_step(eager_model, data), DTYPE)
            assert_grads_close(
                [p.grad for p in compiled_model.parameters()], [p.grad for p in eager_model.parameters()]
            )
            assert_grads_close(list(compiled_model.parameters()), list(eager_model.parameters()))
    assert compiled_graphs() == 1


def test_an_evaluation_step_without_grad_compiles_and_equals_eager():
    model = Model()
    backend, graphs = recording_backend()
    compiled = torch.compile(losses, backend=backend, fullgraph=True, dynamic=True)
    with torch.no_grad(), torch._dynamo.config.patch(error_on_recompile=True):
        for n in (7, 12):
            data = batch(n, seed="eval")
            assert_close(compiled(model, data), losses(model, data), DTYPE)
    assert compiled_graphs() == 1
    (inference,) = graphs["inference"]  # AOTAutograd's graph without autograd
    assert not graphs["forward"]
    assert not graphs["backward"]
    for operator in ("softmax_cross_entropy", "sigmoid_cross_entropy", "linear_cross_entropy"):
        assert f"crossentropy.{operator}.default" in inference
        assert f"crossentropy.{operator}_with_grad.default" not in inference  # no gradient formed


@pytest.mark.filterwarnings(
    "ignore:`torch.jit.script_method` is deprecated:DeprecationWarning"
)  # Inductor's own import
def test_inductor_compiles_the_training_step_too():
    model = Model()
    compiled = torch.compile(grad_step, backend="inductor", fullgraph=True, dynamic=True)
    with torch._dynamo.config.patch(error_on_recompile=True):
        for n in (7, 9):
            data = batch(n, seed="inductor")
            loss, grads = compiled(model, data)
            expected_loss, expected_grads = grad_step(model, data)
            assert_close(loss, expected_loss, DTYPE)
            assert_grads_close(grads, expected_grads)
    assert compiled_graphs() == 1


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16], ids=str)
def test_other_dtypes_give_eagers_loss_and_gradients_in_their_dtype(dtype):
    gen = generator("dtype", dtype)
    x = torch.randn(6, 5, generator=gen).to(dtype).requires_grad_()
    y = torch.randint(0, 5, (6,), generator=gen)

    def step(x, y):
        loss = cet.cross_entropy(x, y, label_smoothing=0.1) + cet.binary_cross_entropy_with_logits(
            x, torch.sigmoid(x.detach())
        )
        return loss.detach(), torch.autograd.grad(loss, x)[0]

    loss, grad = torch.compile(step, backend="aot_eager", fullgraph=True, dynamic=True)(x, y)
    expected_loss, expected_grad = step(x, y)
    assert loss.dtype == grad.dtype == dtype
    assert_close(loss, expected_loss, dtype)
    assert_close(grad, expected_grad, dtype)


def test_a_bad_target_inside_the_compiled_graph_gets_the_eager_message():
    compiled = torch.compile(lambda x, y: cet.cross_entropy(x, y), backend="aot_eager", fullgraph=True)
    with pytest.raises(ValueError, match=r"`target` must be class indices in \[0, 5\)"):
        compiled(torch.randn(3, 5, requires_grad=True), torch.tensor([0, 7, 1]))


# Dynamo itself, resuming after the graph break, looks up `.grad` of the non-leaf logits.
@pytest.mark.filterwarnings("ignore:The .grad attribute of a Tensor that is not a leaf Tensor:UserWarning")
def test_inplace_stays_eager_and_fullgraph_refuses_its_graph_break():
    def step(x, y):
        return cet.cross_entropy(x * 1.0, y, inplace=True)

    x, y = torch.randn(4, 5, requires_grad=True), torch.tensor([0, 1, 2, 3])
    with pytest.raises(torch._dynamo.exc.Unsupported):
        torch.compile(step, backend="aot_eager", fullgraph=True)(x, y)
    loss = torch.compile(step, backend="aot_eager")(x, y)  # without fullgraph: a graph break, then eager
    loss.backward()
    expected = torch.func.grad(lambda x: F.cross_entropy(x, y))(x.detach())
    assert_close(x.grad, expected, DTYPE)


def test_the_compiled_training_step_runs_each_kernel_once_per_loss(monkeypatch):
    """The kernels compute inside the compiled graph, once per loss call: the backward scales their
    gradient. (The entry points of the backend that computes CPU tensors are counted: Numba, or the one
    ``CROSSENTROPY_KERNELS`` forces.)"""
    backend = kernels.for_torch(torch.zeros(2, 3))
    calls = record_entry_calls(monkeypatch, backend.load(), [])
    fused_linear = backend.has_fused_linear()  # then the linear loss runs on the fused linear kernels
    model = Model()
    compiled = torch.compile(grad_step, backend="aot_eager", fullgraph=True, dynamic=True)
    compiled(model, batch(7, seed="spy"))
    calls.clear()
    compiled(model, batch(10, seed="spy"))
    assert calls.count("sigmoid_cross_entropy_elements") == 3  # 3 binary losses
    if not fused_linear:
        # 6 cross_entropy calls; the linear loss: 2 x 1 chunk forward with gradients, then
        # reduction="none" in chunks of 3 rows: 4 chunks forward, 4 again in the backward
        assert calls.count("softmax_cross_entropy_rows") == 6 + 2 + 4 + 4
        return
    # 6 cross_entropy calls; the linear loss: twice forward with gradients (log-sum-exp, gradients), then
    # reduction="none": its log-sum-exp, and in the backward the log-sum-exp again and the gradients
    assert calls.count("softmax_cross_entropy_rows") == 6
    assert calls.count("linear_logsumexp") == 2 + 1 + 1
    assert calls.count("linear_cross_entropy_gradients") == 2 + 1


def test_a_graph_traced_with_the_kernels_on_runs_the_reference_code_inside_disabled():
    """The routing is read when Dynamo traces; the operators read the kernels' switch each time they run."""
    model = Model()
    compiled = torch.compile(grad_step, backend="aot_eager", fullgraph=True, dynamic=True)
    data = batch(7, seed="switch")
    on = compiled(model, data)
    with kernels.disabled(), torch._dynamo.config.patch(error_on_recompile=True):
        off = compiled(model, data)
        reference = grad_step(model, data)
    assert_close(off[0], reference[0], DTYPE)
    assert_grads_close(off[1], reference[1])
    assert_close(on[0], reference[0], DTYPE)
    assert_grads_close(on[1], reference[1])


# --------------------------------------------------------------------------------------------
# torch.library.opcheck
# --------------------------------------------------------------------------------------------


def _softmax_samples():
    gen = generator("opcheck-softmax")
    x = torch.randn(4, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 1, -100, 3])
    w = torch.rand(5, generator=gen, dtype=torch.float64) + 0.5
    s = torch.rand(4, generator=gen, dtype=torch.float64)
    probs = torch.softmax(torch.randn(4, 5, generator=gen, dtype=torch.float64), 1)
    spatial = torch.randn(2, 5, 3, generator=gen, requires_grad=True)
    half = torch.randn(3, 7, generator=gen).to(torch.bfloat16).requires_grad_()
    return [
        ("plain", (x, y, None, None, None, 1, -100, 0.0, 0.0, None, "mean", 1.0)),
        ("every-option", (x, y, w, s, None, 1, -100, 0.1, 0.01, 2.0, "mean", 1.0)),
        ("none", (x, y, w, None, None, 1, -100, 0.0, 0.01, None, "none", 1.0)),
        ("probabilities", (x, probs, w, None, None, 1, -100, 0.2, 0.0, None, "sum", 1.0)),
        (
            "spatial",
            (
                spatial,
                torch.randint(0, 5, (2, 3), generator=gen),
                None,
                None,
                None,
                1,
                -100,
                0.0,
                0.0,
                None,
                "none",
                1.0,
            ),
        ),
        (
            "unbatched",
            (x[0].detach().requires_grad_(), torch.tensor(2), None, None, None, 0, -100, 0.0, 0.0, None, "none", 1.0),
        ),
        ("temperature", (x, y, w, s, None, 1, -100, 0.1, 0.01, 2.0, "mean", 0.7)),
        ("normalizer", (x, y, w, s, torch.tensor(9.0, dtype=torch.float64), 1, -100, 0.1, 0.01, 2.0, "mean", 0.7)),
        ("bfloat16", (half, torch.tensor([0, 6, 3]), None, None, None, 1, -100, 0.1, 0.0, None, "mean", 1.0)),
    ]


def _sigmoid_samples():
    gen = generator("opcheck-sigmoid")
    x = torch.randn(4, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    t = torch.rand(4, 3, generator=gen, dtype=torch.float64)
    w = torch.rand(3, generator=gen, dtype=torch.float64)
    s = torch.rand(4, generator=gen, dtype=torch.float64)
    return [
        ("plain", (x, t, None, None, None, 0.0, "mean")),
        ("every-option", (x, t, w, w * 2, s, 0.1, "sum")),
        ("none", (x, (t > 0.5).to(torch.int64), None, w, None, 0.0, "none")),
        ("float32", (x.detach().float().requires_grad_(), t.float(), None, None, None, 0.0, "none")),
    ]


def _linear_samples():
    gen = generator("opcheck-linear")
    h = torch.randn(6, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn(7, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    b = torch.randn(7, generator=gen, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0, 1, -100, 3, 4, 6])
    p = torch.softmax(torch.randn(6, 7, generator=gen, dtype=torch.float64), dim=1)
    cw, s = torch.rand(7, generator=gen, dtype=torch.float64), torch.rand(6, generator=gen, dtype=torch.float64)
    f64, f32 = torch.float64, torch.float32
    options, plain, warm = (-100, 0.1, 0.01, 2.0, 1.0), (-100, 0.0, 0.0, None, 1.0), (-100, 0.0, 0.0, None, 0.5)
    count = torch.tensor(9.0, dtype=torch.float64)
    detached, some_detached = (h.detach(), w.detach(), b.detach(), t), (h.detach(), w.detach(), None, t)
    cotangent, scalar = torch.rand(6, generator=gen, dtype=torch.float64), torch.tensor(2.0, dtype=torch.float64)
    all_needed, weight_only, none = (True, True, True), (False, True, False), (False, False, False)
    # The statistics of the "backward-stats" sample's logits: soft-capped at 2, as its options say.
    logits = 2.0 * torch.tanh(torch.nn.functional.linear(h.detach(), w.detach(), b.detach()) / 2.0)
    lse = torch.logsumexp(logits, dim=1)
    entropy = -(torch.softmax(logits, dim=1) * torch.log_softmax(logits, dim=1)).sum(dim=1)
    return [
        ("loss-none", "linear_cross_entropy", (h, w, b, t, None, None, None, *options, "none", 4, f64, None)),
        ("loss-mean", "linear_cross_entropy", (h, w, None, t, None, None, count, *warm, "mean", 4, f64, None)),
        ("loss-probabilities", "linear_cross_entropy", (h, w, b, p, cw, s, None, *options, "mean", 4, f64, None)),
        (
            "with-grad-mean",
            "linear_cross_entropy_with_grad",
            (h, w, b, t, cw, s, count, *options, "mean", 4, f64, None, *all_needed),
        ),
        (
            "with-grad-some",
            "linear_cross_entropy_with_grad",
            (h, w, b, t, None, None, None, *options, "sum", 5, f64, None, *weight_only),
        ),
        (
            "with-grad-filtered",
            "linear_cross_entropy_with_grad",
            (
                *(a.detach().float().requires_grad_() for a in (h, w)),
                None,
                t,
                None,
                None,
                None,
                *plain,
                "mean",
                4,
                f32,  # float32 inputs: the fused kernels' tiles are float32 whatever the accumulation
                0.05,
                *all_needed,
            ),
        ),
        (
            "backward",
            "linear_cross_entropy_backward",
            (*detached, cw, None, None, cotangent, *options, "none", 4, f64, None, *all_needed),
        ),
        (
            "backward-some",
            "linear_cross_entropy_backward",
            (*some_detached, None, s, count, scalar, *warm, "mean", 2, f32, None, *weight_only),
        ),
        (
            "stats-none",
            "linear_cross_entropy_stats",
            (h, w, b, t, None, s, None, *options, "none", 4, f64, None, *none),
        ),
        (
            "stats-with-grad",
            "linear_cross_entropy_stats",
            (h, w, b, t, cw, s, count, *warm, "mean", 4, f64, None, *all_needed),
        ),
        (
            "backward-stats",
            "linear_cross_entropy_backward",
            (
                *detached,
                None,
                s,
                None,
                scalar,
                *options,
                "sum",
                4,
                f64,
                None,
                *all_needed,
                lse,
                entropy,
                cotangent,
                None,
            ),
        ),
        (
            "backward-stats-only",
            "linear_cross_entropy_backward",
            (
                *some_detached,
                cw,
                None,
                None,
                None,
                *warm,
                "none",
                3,
                f64,
                None,
                *weight_only,
                lse,
                entropy,
                None,
                cotangent,
            ),
        ),
    ]


OPCHECK_CASES = (
    [
        (f"softmax-{name}", operator, args)
        for name, args in _softmax_samples()
        for operator in ("softmax_cross_entropy", "softmax_cross_entropy_with_grad")
    ]
    + [
        (f"softmax-stats-{name}-{'grad' if with_grad else 'loss'}", "softmax_cross_entropy_stats", (*args, with_grad))
        for name, args in _softmax_samples()
        if name != "probabilities"  # the statistics take class-index targets only
        for with_grad in (True, False)
    ]
    + [
        (f"sigmoid-{name}", operator, args)
        for name, args in _sigmoid_samples()
        for operator in ("sigmoid_cross_entropy", "sigmoid_cross_entropy_with_grad")
    ]
    + [(f"linear-{name}", operator, args) for name, operator, args in _linear_samples()]
)


@pytest.mark.parametrize(
    ("operator", "args"), [case[1:] for case in OPCHECK_CASES], ids=[f"{c[0]}-{c[1]}" for c in OPCHECK_CASES]
)
def test_opcheck_passes(operator, args):
    torch.library.opcheck(getattr(torch.ops.crossentropy, operator), args)


@pytest.mark.parametrize(
    ("operator", "args"), [case[1:] for case in OPCHECK_CASES], ids=[f"{c[0]}-{c[1]}" for c in OPCHECK_CASES]
)
def test_each_operator_gives_the_kernels_results_with_the_kernels_off(operator, args):
    """With the kernels switched off where an operator runs, its implementation runs the generic code
    (softmax, sigmoid) or plain-PyTorch chunks differentiated by autograd (linear): the same outputs."""
    function = getattr(torch.ops.crossentropy, operator)
    detached = [a.detach() if isinstance(a, torch.Tensor) else a for a in args]
    on = function(*detached)
    with kernels.disabled():
        off = function(*detached)
    for got, expected in zip(
        off if isinstance(off, tuple) else (off,), on if isinstance(on, tuple) else (on,), strict=True
    ):
        assert got.dtype == expected.dtype
        if expected.dtype == torch.bool:  # the statistics' accuracy
            assert torch.equal(got, expected)
        else:
            assert_close(got, expected, expected.dtype)


def test_every_registered_operator_has_an_opcheck_case():
    registered = {name for name in torch._C._dispatch_get_all_op_names() if name.startswith("crossentropy::")}
    assert registered == {f"crossentropy::{operator}" for _, operator, _ in OPCHECK_CASES}
