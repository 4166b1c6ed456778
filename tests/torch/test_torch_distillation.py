"""crossentropy.torch.distillation_loss and linear_distillation_loss: float64 formulas, masking, normalizer,
autograd (gradcheck, gradgradcheck, torch.func), half-precision accuracy, the chunked linear loss, peak memory."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F

import crossentropy.torch as cet
from tests._support import assert_close

DIVERGENCES = ("forward_kl", "reverse_kl", "jsd", "tvd")


def reference_rows(student, teacher, divergence, *, beta=0.5, temperature=1.0):
    """Independent float64 formula, class dimension last: probabilities, then the definitions."""
    p = torch.softmax(teacher.double() / temperature, -1)
    q = torch.softmax(student.double() / temperature, -1)

    def kl(a, b):
        return torch.where(a > 0, a * (a.log() - b.log()), torch.zeros_like(a)).sum(-1)

    if divergence == "forward_kl":
        return kl(p, q)
    if divergence == "reverse_kl":
        return kl(q, p)
    if divergence == "jsd":
        m = beta * p + (1 - beta) * q
        return beta * kl(p, m) + (1 - beta) * kl(q, m)
    return 0.5 * (p - q).abs().sum(-1)


def leaves(*shape, dtype=torch.float64, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(*shape, dtype=dtype, generator=generator).requires_grad_() for _ in range(2))


# --------------------------------------------------------------------------------------------
# distillation_loss on logits
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("divergence", DIVERGENCES)
@pytest.mark.parametrize("shape", [(7,), (6, 7), (2, 7, 3, 2)], ids=["unbatched", "2d", "k-dim"])
def test_equals_the_float64_formula_with_classes_on_dim_1(divergence, shape):
    student, teacher = (t.detach() * 2 for t in leaves(*shape))
    dim = 1 if len(shape) > 1 else 0
    rows = reference_rows(student.movedim(dim, -1), teacher.movedim(dim, -1), divergence, beta=0.3, temperature=1.7)
    options = {"divergence": divergence, "beta": 0.3, "temperature": 1.7}
    assert_close(cet.distillation_loss(student, teacher, reduction="none", **options), rows, torch.float64)
    assert_close(cet.distillation_loss(student, teacher, reduction="sum", **options), rows.sum(), torch.float64)
    assert_close(cet.distillation_loss(student, teacher, **options), rows.mean(), torch.float64)


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_target_masks_ignored_positions_and_normalizer_replaces_the_count(divergence):
    student, teacher = (t.detach() for t in leaves(3, 5, 4))
    target = torch.tensor([[0, -100, 2, 1], [-100, -100, 4, 0], [3, 3, -100, 1]])
    rows = reference_rows(student.movedim(1, -1), teacher.movedim(1, -1), divergence)
    keep = target != -100
    masked = torch.where(keep, rows, torch.zeros_like(rows))
    options = {"divergence": divergence}
    assert_close(cet.distillation_loss(student, teacher, target, reduction="none", **options), masked, torch.float64)
    assert_close(
        cet.distillation_loss(student, teacher, target, reduction="sum", **options), masked.sum(), torch.float64
    )
    assert_close(cet.distillation_loss(student, teacher, target, **options), masked.sum() / keep.sum(), torch.float64)
    assert_close(
        cet.distillation_loss(student, teacher, target, normalizer=20, **options), masked.sum() / 20, torch.float64
    )
    given = torch.tensor(20.0)
    assert_close(
        cet.distillation_loss(student, teacher, target, normalizer=given, **options), masked.sum() / 20, torch.float64
    )
    assert float(cet.distillation_loss(student, teacher, target, normalizer=0, **options)) == 0.0  # as cross_entropy
    padding = target.clone()
    padding[target == 3] = 7  # ignore_index may be any integer, even a real class
    custom = cet.distillation_loss(student, teacher, padding, ignore_index=7, reduction="none", **options)
    assert_close(custom, torch.where(target != 3, rows, torch.zeros_like(rows)), torch.float64)


def test_micro_batches_with_the_global_count_sum_to_the_full_batch_gradient():
    student, teacher = leaves(12, 9)
    target = torch.randint(0, 9, (12,), generator=torch.Generator().manual_seed(1))
    target[[1, 4, 5, 10]] = -100
    full = torch.autograd.grad(cet.distillation_loss(student, teacher.detach(), target, divergence="jsd"), student)[0]
    count = int((target != -100).sum())
    summed = torch.zeros_like(student)
    for rows in (slice(0, 3), slice(3, 8), slice(8, 12)):
        part = cet.distillation_loss(
            student[rows], teacher.detach()[rows], target[rows], divergence="jsd", normalizer=count
        )
        summed += torch.autograd.grad(part, student)[0]
    torch.testing.assert_close(summed, full, rtol=1e-6, atol=1e-12)


def test_all_positions_ignored_give_zero_and_a_zero_gradient():
    student, teacher = leaves(3, 4)
    loss = cet.distillation_loss(student, teacher, torch.full((3,), -100))
    loss.backward()
    assert float(loss.detach()) == 0.0
    assert not student.grad.any()
    assert not teacher.grad.any()


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_gradcheck_and_gradgradcheck_for_student_and_teacher(divergence):
    student, teacher = leaves(3, 4, 2)
    target = torch.tensor([[0, -100], [1, 2], [-100, 3]])

    def loss(s, t):
        return cet.distillation_loss(s, t, target, divergence=divergence, beta=0.3, temperature=1.3)

    assert torch.autograd.gradcheck(loss, (student, teacher))
    assert torch.autograd.gradgradcheck(loss, (student, teacher))


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_torch_func_grad_equals_autograd(divergence):
    student, teacher = (t.detach() for t in leaves(5, 6))
    got = torch.func.grad(lambda s, t: cet.distillation_loss(s, t, divergence=divergence), argnums=(0, 1))(
        student, teacher
    )
    s, t = student.clone().requires_grad_(), teacher.clone().requires_grad_()
    expected = torch.autograd.grad(cet.distillation_loss(s, t, divergence=divergence), (s, t))
    for a, b in zip(got, expected, strict=True):
        assert_close(a, b, torch.float64)


@pytest.mark.parametrize("reduction", ["batchmean", "sum", "none"])
def test_forward_and_reverse_kl_equal_f_kl_div(reduction):
    student, teacher = leaves(6, 10)
    ours_reduction = {"batchmean": "mean"}.get(reduction, reduction)
    for divergence, (a, b) in {"forward_kl": (student, teacher), "reverse_kl": (teacher, student)}.items():
        theirs = F.kl_div(F.log_softmax(a / 2, 1), F.log_softmax(b / 2, 1), log_target=True, reduction=reduction)
        theirs = theirs.sum(1) if reduction == "none" else theirs
        ours = cet.distillation_loss(student, teacher, divergence=divergence, temperature=2.0, reduction=ours_reduction)
        assert_close(ours, theirs, torch.float64)
        ours_grads = torch.autograd.grad(ours.sum(), (student, teacher))
        theirs_grads = torch.autograd.grad(theirs.sum(), (student, teacher))
        for g, e in zip(ours_grads, theirs_grads, strict=True):
            assert_close(g, e, torch.float64)


def _relative_error(gradient, expected):
    return float((gradient.double() - expected).norm() / expected.norm())


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_bfloat16_gradient_stays_accurate_where_p_is_close_to_q(divergence):
    """Student ≈ teacher in bfloat16: our gradient is within 2 bf16 ulps (2^-7, relative, in norm) of the float64
    gradient of the same bf16 logits; the naive computation (F.kl_div of two bf16 log-softmaxes) is off by 10%
    or more there, so the bound is one a careless implementation fails."""
    generator = torch.Generator().manual_seed(5)
    base = torch.randn(64, 1000, dtype=torch.float64, generator=generator) * 2
    teacher = base.to(torch.bfloat16)
    student = (base + 0.05 * torch.randn(64, 1000, dtype=torch.float64, generator=generator)).to(torch.bfloat16)
    exact = student.double().requires_grad_()
    expected = torch.autograd.grad(cet.distillation_loss(exact, teacher.double(), divergence=divergence), exact)[0]
    ours = student.clone().requires_grad_()
    loss = cet.distillation_loss(ours, teacher, divergence=divergence)
    assert loss.dtype == torch.bfloat16
    (gradient,) = torch.autograd.grad(loss, ours)
    assert gradient.dtype == torch.bfloat16
    assert _relative_error(gradient, expected) <= 2**-7
    if divergence == "forward_kl":
        naive = student.clone().requires_grad_()
        kl = F.kl_div(F.log_softmax(naive, 1), F.log_softmax(teacher, 1), log_target=True, reduction="batchmean")
        assert _relative_error(torch.autograd.grad(kl, naive)[0], expected) >= 0.1


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda s, t: cet.distillation_loss(s, t, divergence="kl"), ValueError, "`divergence` must be one of"),
        (lambda s, t: cet.distillation_loss(s, t, beta=1.5), ValueError, r"`beta` must be in \(0, 1\); got 1.5"),
        (lambda s, t: cet.distillation_loss(s, t, temperature=-1), ValueError, "`temperature` must be > 0"),
        (lambda s, t: cet.distillation_loss(s, t, reduction="sum", normalizer=4), ValueError, "reduction='mean' and"),
        (lambda s, t: cet.distillation_loss(s, t, normalizer=-1), ValueError, "`normalizer` must be >= 0; got -1.0"),
        (
            lambda s, t: cet.distillation_loss(s, t, normalizer=torch.ones(2)),
            ValueError,
            r"0-d array; got shape \(2,\)",
        ),
        (lambda s, t: cet.distillation_loss(s, t[:, :2]), ValueError, r"`teacher` must have shape \(3, 4\)"),
        (lambda s, t: cet.distillation_loss(s, t, torch.zeros(3)), TypeError, "`target` must be integer class indices"),
        (lambda s, t: cet.distillation_loss(s, t, torch.zeros(4, dtype=torch.long)), ValueError, r"`target` must have"),
        (lambda s, t: cet.distillation_loss(s.long(), t), TypeError, "`input` must be a real floating-point tensor"),
        (lambda s, t: cet.distillation_loss(s, t.numpy()), TypeError, "`teacher` must be a torch.Tensor"),
        (lambda s, t: cet.distillation_loss(s, t, ignore_index=1.5), TypeError, "`ignore_index` must be an integer"),
    ],
)
def test_bad_arguments_are_named(call, error, message):
    with pytest.raises(error, match=message):
        call(torch.zeros(3, 4), torch.ones(3, 4))


# --------------------------------------------------------------------------------------------
# linear_distillation_loss
# --------------------------------------------------------------------------------------------


def linear_case(n=10, hidden=4, teacher_hidden=3, vocab=7, dtype=torch.float64, seed=0):
    generator = torch.Generator().manual_seed(seed)

    def make(*shape):
        return torch.randn(*shape, dtype=dtype, generator=generator).requires_grad_()

    tensors = {
        "x": make(n, hidden),
        "w": make(vocab, hidden),
        "b": make(vocab),
        "teacher_logits": make(n, vocab),
        "xt": make(n, teacher_hidden),
        "wt": make(vocab, teacher_hidden),
        "bt": make(vocab),
    }
    target = torch.randint(0, vocab, (n,), generator=generator)
    target[[1, n - 2]] = -100
    return tensors, target


def linear_and_materialized(form, tensors, target, **options):
    """The two losses as functions of the differentiable tensors of ``form``."""
    if form == "logits":
        names = ("x", "w", "b", "teacher_logits")

        def linear(x, w, b, t):
            return cet.linear_distillation_loss(x, w, t, target, linear_bias=b, **options)

        def materialized(x, w, b, t):
            options.pop("chunk_size", None)
            return cet.distillation_loss(F.linear(x, w, b), t, target, **options)

    else:
        names = ("x", "w", "b", "xt", "wt", "bt")

        def linear(x, w, b, xt, wt, bt):
            keywords = {"teacher_linear_weight": wt, "teacher_linear_bias": bt}
            return cet.linear_distillation_loss(x, w, xt, target, linear_bias=b, **keywords, **options)

        def materialized(x, w, b, xt, wt, bt):
            options.pop("chunk_size", None)
            return cet.distillation_loss(F.linear(x, w, b), F.linear(xt, wt, bt), target, **options)

    return linear, materialized, tuple(tensors[name] for name in names)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("form", ["logits", "hidden"])
@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_linear_equals_the_materialized_loss_and_gradients(divergence, form, reduction):
    tensors, target = linear_case()
    for chunk_size in (1, 3, 10, None):
        options = {"divergence": divergence, "beta": 0.4, "temperature": 1.5, "reduction": reduction}
        linear, materialized, args = linear_and_materialized(form, tensors, target, chunk_size=chunk_size, **options)
        got, expected = linear(*args), materialized(*args)
        assert got.shape == expected.shape
        assert_close(got, expected, torch.float64)
        incoming = torch.rand(got.shape, dtype=torch.float64) + 0.5
        for g, e in zip(
            torch.autograd.grad(got, args, incoming), torch.autograd.grad(expected, args, incoming), strict=True
        ):
            assert_close(g, e, torch.float64)


def test_linear_with_normalizer_and_a_second_backward():
    tensors, target = linear_case()
    linear, materialized, args = linear_and_materialized("hidden", tensors, target, divergence="jsd", normalizer=13.0)
    got = linear(*args)
    assert_close(got, materialized(*args), torch.float64)
    first = torch.autograd.grad(got, args, retain_graph=True)
    second = torch.autograd.grad(got, args)  # recomputes: the first backward handed its gradients over
    for a, b in zip(first, second, strict=True):
        assert_close(a, b, torch.float64)


def test_linear_teacher_logits_with_minus_inf_take_the_masked_chunk():
    tensors, target = linear_case(seed=2)
    with torch.no_grad():
        tensors["teacher_logits"][:, 3] = -math.inf  # a class the teacher never predicts
    for divergence in ("forward_kl", "jsd", "tvd"):
        linear, materialized, args = linear_and_materialized(
            "logits", tensors, target, divergence=divergence, chunk_size=4
        )
        got, expected = linear(*args), materialized(*args)
        assert_close(got, expected, torch.float64)
        for g, e in zip(torch.autograd.grad(got, args[:3]), torch.autograd.grad(expected, args[:3]), strict=True):
            assert_close(g, e, torch.float64)


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_linear_gradgradcheck_and_torch_func(divergence):
    tensors, target = linear_case(n=5, hidden=3, teacher_hidden=2, vocab=4)
    linear, materialized, args = linear_and_materialized("hidden", tensors, target, divergence=divergence, chunk_size=2)
    assert torch.autograd.gradgradcheck(linear, args)
    detached = tuple(a.detach() for a in args)
    got = torch.func.grad(linear, argnums=(0, 1, 4))(*detached)
    expected = torch.func.grad(materialized, argnums=(0, 1, 4))(*detached)
    for g, e in zip(got, expected, strict=True):
        assert_close(g, e, torch.float64)


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_torch_compile_fullgraph(divergence):
    """distillation_loss is plain tensor code: one graph, the eager loss and gradients."""
    student, teacher = leaves(6, 5, seed=3)
    target = torch.tensor([0, 1, -100, 2, 3, 4])
    options = {"divergence": divergence, "temperature": 2.0, "beta": 0.3}
    compiled = torch.compile(
        lambda s, t: cet.distillation_loss(s, t, target, **options), backend="aot_eager", fullgraph=True
    )
    got, expected = compiled(student, teacher), reference_rows(student, teacher, divergence, beta=0.3, temperature=2.0)
    expected = expected[target != -100].sum() / 5
    assert_close(got, expected, torch.float64)
    for g, e in zip(
        torch.autograd.grad(got, (student, teacher)), torch.autograd.grad(expected, (student, teacher)), strict=True
    ):
        assert_close(g, e, torch.float64)


# TorchDynamo itself instantiates an autograd.Function it traces and reads .grad of the tensors it
# traces, and PyTorch 2.13 warns about both.
@pytest.mark.filterwarnings("ignore:.*should not be instantiated:DeprecationWarning")
@pytest.mark.filterwarnings("ignore:The .grad attribute of a Tensor that is not a leaf Tensor:UserWarning")
def test_linear_torch_compile_runs_the_chunks_eagerly():
    """linear_distillation_loss compiles with graph breaks: its chunk loop branches on the data (a
    non-finite log-ratio takes the masked path), so ``fullgraph=True`` is refused and the loop runs
    eagerly inside the compiled function, with the same loss and gradients."""
    tensors, target = linear_case()
    linear, materialized, args = linear_and_materialized("hidden", tensors, target, divergence="jsd", chunk_size=3)
    got = torch.compile(linear, backend="aot_eager")(*args)
    expected = materialized(*args)
    assert_close(got, expected, torch.float64)
    for g, e in zip(torch.autograd.grad(got, args), torch.autograd.grad(expected, args), strict=True):
        assert_close(g, e, torch.float64)


def test_linear_bfloat16_and_batch_dimensions():
    tensors, target = linear_case(n=12, hidden=8, vocab=30, dtype=torch.float32)
    x = tensors["x"].detach().to(torch.bfloat16).reshape(3, 4, 8).requires_grad_()
    w = tensors["w"].detach().to(torch.bfloat16).requires_grad_()
    teacher = tensors["teacher_logits"].detach().reshape(3, 4, 30)
    got = cet.linear_distillation_loss(x, w, teacher, target.reshape(3, 4), divergence="jsd", chunk_size=5)
    assert got.dtype == torch.bfloat16
    got.backward()
    assert x.grad.dtype == torch.bfloat16
    assert w.grad.dtype == torch.bfloat16
    x64, w64 = x.detach().double().requires_grad_(), w.detach().double().requires_grad_()
    expected = cet.distillation_loss(
        (x64 @ w64.T).reshape(12, 30), teacher.double().reshape(12, 30), target, divergence="jsd"
    )
    expected.backward()
    assert_close(got, expected, torch.bfloat16)
    assert _relative_error(x.grad, x64.grad) <= 2**-7
    assert _relative_error(w.grad, w64.grad) <= 2**-7
    rows = cet.linear_distillation_loss(x, w, teacher, reduction="none")
    assert rows.shape == (3, 4)


@pytest.mark.parametrize(
    ("keywords", "error", "message"),
    [
        ({"linear_weight": torch.zeros(7, 5)}, ValueError, r"`linear_weight` must have shape \(V, 4\)"),
        ({"linear_bias": torch.zeros(6)}, ValueError, r"`linear_bias` must have shape \(7,\)"),
        ({"teacher": torch.zeros(10, 6)}, ValueError, r"`teacher` must be the teacher's logits of shape \(10, 7\)"),
        ({"teacher_linear_bias": torch.zeros(7)}, ValueError, "`teacher_linear_bias` needs `teacher_linear_weight`"),
        ({"teacher_linear_weight": torch.zeros(7, 5)}, ValueError, r"`teacher_linear_weight` must have shape \(7, 7\)"),
        ({"chunk_size": 0}, ValueError, "`chunk_size` must be >= 1; got 0"),
        ({"normalizer": 2.0, "reduction": "none"}, ValueError, "reduction='mean' and"),
        ({"divergence": "js"}, ValueError, "`divergence` must be one of"),
        ({"target": torch.zeros(9, dtype=torch.long)}, ValueError, r"`target` must have shape \(10,\)"),
    ],
)
def test_linear_bad_arguments_are_named(keywords, error, message):
    arguments = {"input": torch.zeros(10, 4), "linear_weight": torch.zeros(7, 4), "teacher": torch.zeros(10, 7)}
    arguments.update(keywords)
    positional = [arguments.pop(name) for name in ("input", "linear_weight", "teacher")]
    with pytest.raises(error, match=message):
        cet.linear_distillation_loss(*positional, **arguments)


def test_linear_peak_memory_stays_far_below_the_logits():
    """2048 tokens × 131072 classes: 1 GiB of float32 logits per model unfused (2 GiB for the two, before their
    log-softmaxes); the chunks (teacher as hidden states and projection) stay under 0.5 GiB."""
    script = textwrap.dedent(
        """
        import json, resource, torch
        import crossentropy.torch as cet
        torch.manual_seed(0)
        n, h, v = 2048, 64, 2**17
        x = torch.randn(n, h, requires_grad=True)
        w = (torch.randn(v, h) * 0.05).requires_grad_()
        xt, wt = torch.randn(n, h), torch.randn(v, h) * 0.05
        cet.linear_distillation_loss(x[:4], w, xt[:4], teacher_linear_weight=wt).backward()  # warm-up
        w.grad = None
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        loss = cet.linear_distillation_loss(x, w, xt, teacher_linear_weight=wt, divergence="jsd")
        loss.backward()
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        print(json.dumps({"growth": after - before, "finite": bool(w.grad.isfinite().all() and loss.isfinite())}))
        """
    )
    environment = {k: v for k, v in os.environ.items() if k not in ("CROSSENTROPY_KERNELS", "TRITON_INTERPRET")}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=False, env=environment
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["finite"]
    assert report["growth"] < 512 * 2**20, f"peak grew by {report['growth'] / 2**20:.0f} MiB"
