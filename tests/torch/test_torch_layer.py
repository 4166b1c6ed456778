"""``crossentropy.torch``: PyTorch's functions and modules, value for value and gradient for gradient.

The oracle is PyTorch itself (``F.cross_entropy``, ``F.binary_cross_entropy_with_logits``,
``F.nll_loss``, ``F.binary_cross_entropy``) for every option it has, ``gradcheck`` in float64
for the fused autograd functions, and the library's generic path (checked against PyTorch in
``test_losses_torch.py``) for the extras PyTorch lacks.
"""

from __future__ import annotations

import itertools
import warnings
import zlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import crossentropy as ce
import crossentropy.torch as cet
from crossentropy import kernels
from tests._support import assert_close

DTYPES = [torch.float64, torch.float32]
REDUCTIONS = ["mean", "sum", "none"]
SHAPES = {"1d": (6,), "2d": (7, 5), "3d": (3, 4, 5), "4d": (2, 3, 3, 2)}


def generator(*params) -> torch.Generator:
    return torch.Generator().manual_seed(zlib.crc32(repr(params).encode()))


def make_logits(shape, dtype, gen):
    return (torch.randn(shape, generator=gen, dtype=torch.float64) * 2).to(dtype)


def make_index_targets(shape, gen, *, ignore_index=-100):
    batch = shape[:1] + shape[2:] if len(shape) > 1 else ()
    n_classes = shape[1] if len(shape) > 1 else shape[0]
    y = torch.randint(0, n_classes, batch, generator=gen)
    if y.ndim:
        mask = torch.rand(batch, generator=gen) < 0.25
        mask.view(-1)[0] = False
        y[mask] = ignore_index
    return y


def make_prob_targets(shape, dtype, gen):
    dim = 1 if len(shape) > 1 else 0
    return torch.softmax(torch.randn(shape, generator=gen, dtype=torch.float64), dim=dim).to(dtype)


def loss_and_grad(function, logits, *args, cotangent=None, **kwargs):
    """The loss, and the gradient of ``sum(loss * cotangent)`` with respect to the logits."""
    x = logits.detach().clone().requires_grad_()
    loss = function(x, *args, **kwargs)
    weights = torch.ones_like(loss) if cotangent is None else cotangent
    (loss * weights).sum().backward()
    return loss.detach(), x.grad


# --------------------------------------------------------------------------------------------
# cross_entropy against F.cross_entropy


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape_name", SHAPES)
@pytest.mark.parametrize("targets_kind", ["index", "probs"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_matches_pytorch(dtype, shape_name, targets_kind, reduction):
    shape = SHAPES[shape_name]
    gen = generator("ce", dtype, shape_name, targets_kind, reduction)
    logits = make_logits(shape, dtype, gen)
    targets = make_index_targets(shape, gen) if targets_kind == "index" else make_prob_targets(shape, dtype, gen)
    n_classes = shape[1] if len(shape) > 1 else shape[0]
    weight = torch.rand(n_classes, generator=gen, dtype=torch.float64).to(dtype) + 0.2
    batch = shape[:1] + shape[2:] if len(shape) > 1 else ()
    cotangent = torch.rand(batch, generator=gen, dtype=torch.float64).to(dtype) if reduction == "none" else None
    for options in ({}, {"weight": weight}, {"label_smoothing": 0.15}, {"weight": weight, "label_smoothing": 0.3}):
        what = f"{shape_name} {targets_kind} {reduction} {sorted(options)}"
        ours = loss_and_grad(cet.cross_entropy, logits, targets, reduction=reduction, cotangent=cotangent, **options)
        theirs = loss_and_grad(F.cross_entropy, logits, targets, reduction=reduction, cotangent=cotangent, **options)
        for got, want in zip(ours, theirs, strict=True):
            assert got.dtype == want.dtype, what
            assert_close(got, want, dtype, err_msg=what)


@pytest.mark.parametrize("ignore_index", [-100, 0, 3])
def test_ignore_index_may_name_a_real_class(ignore_index):
    gen = generator("ignore", ignore_index)
    logits = make_logits((9, 5), torch.float64, gen)
    targets = torch.tensor([0, 1, 2, 3, 4, 0, 3, -100, 2])
    targets = targets[targets != -100] if ignore_index != -100 else targets
    logits = logits[: len(targets)]
    ours = loss_and_grad(cet.cross_entropy, logits, targets, ignore_index=ignore_index)
    theirs = loss_and_grad(F.cross_entropy, logits, targets, ignore_index=ignore_index)
    for got, want in zip(ours, theirs, strict=True):
        assert_close(got, want, torch.float64)


def test_positional_arguments_and_defaults_are_pytorchs():
    gen = generator("positional")
    logits = make_logits((6, 4), torch.float64, gen)
    targets = torch.tensor([0, 3, 1, 1, 2, 0])
    weight = torch.tensor([1.0, 2.0, 0.5, 1.5], dtype=torch.float64)
    # input, target, weight, size_average, ignore_index, reduce, reduction, label_smoothing
    ours = cet.cross_entropy(logits, targets, weight, None, 1, None, "sum", 0.1)
    theirs = F.cross_entropy(logits, targets, weight, None, 1, None, "sum", 0.1)
    assert_close(ours, theirs, torch.float64)


@pytest.mark.parametrize(("size_average", "reduce"), list(itertools.product([None, True, False], repeat=2))[1:])
def test_deprecated_size_average_and_reduce_behave_as_in_pytorch(size_average, reduce):
    gen = generator("legacy", size_average, reduce)
    logits = make_logits((5, 3), torch.float64, gen)
    targets = torch.tensor([0, 2, 1, 1, 0])
    with pytest.warns(UserWarning, match="deprecated"):
        ours = cet.cross_entropy(logits, targets, size_average=size_average, reduce=reduce)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = F.cross_entropy(logits, targets, size_average=size_average, reduce=reduce)
    assert_close(ours, theirs, torch.float64)


def test_all_ignored_gives_zero_not_nan():
    """The documented difference from PyTorch (which gives NaN)."""
    logits = make_logits((4, 3), torch.float32, generator("all-ignored")).requires_grad_()
    loss = cet.cross_entropy(logits, torch.full((4,), -100))
    loss.backward()
    assert loss.item() == 0.0
    assert not logits.grad.any()
    assert torch.isnan(F.cross_entropy(logits.detach(), torch.full((4,), -100)))


@pytest.mark.parametrize("targets_kind", ["index", "probs"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_gradcheck_in_float64(targets_kind, reduction):
    gen = generator("gradcheck", targets_kind, reduction)
    logits = make_logits((4, 5, 2), torch.float64, gen).requires_grad_()
    shape = tuple(logits.shape)
    targets = (
        make_index_targets(shape, gen) if targets_kind == "index" else make_prob_targets(shape, torch.float64, gen)
    )
    weight = torch.rand(5, generator=gen, dtype=torch.float64) + 0.5
    sample_weight = torch.rand((4, 2), generator=gen, dtype=torch.float64)

    def loss(x):
        return cet.cross_entropy(
            x,
            targets,
            weight=weight,
            reduction=reduction,
            label_smoothing=0.1,
            z_loss=1e-2,
            softcap=3.0,
            sample_weight=sample_weight,
        )

    assert torch.autograd.gradcheck(loss, (logits,))


@pytest.mark.parametrize("targets_kind", ["index", "probs"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_extras_on_the_fused_path_match_the_generic_path(targets_kind, reduction):
    """z-loss, soft-cap and sample weights: PyTorch lacks them; the generic path is the reference."""
    gen = generator("extras", targets_kind, reduction)
    shape = (6, 7, 3)
    logits = make_logits(shape, torch.float32, gen)
    targets = (
        make_index_targets(shape, gen) if targets_kind == "index" else make_prob_targets(shape, torch.float32, gen)
    )
    options = {
        "weight": torch.rand(7, generator=gen) + 0.2,
        "label_smoothing": 0.05,
        "z_loss": 1e-3,
        "softcap": 5.0,
        "sample_weight": torch.rand((6, 3), generator=gen),
        "reduction": reduction,
    }
    cotangent = torch.rand((6, 3), generator=gen) if reduction == "none" else None
    fused = loss_and_grad(cet.cross_entropy, logits, targets, cotangent=cotangent, **options)
    with kernels.disabled():
        generic = loss_and_grad(cet.cross_entropy, logits, targets, cotangent=cotangent, **options)
    for got, want in zip(fused, generic, strict=True):
        assert_close(got, want, torch.float32)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_half_precision_matches_pytorch(dtype):
    gen = generator("half", dtype)
    logits = make_logits((16, 300), dtype, gen)
    targets = make_index_targets((16, 300), gen)
    ours = loss_and_grad(cet.cross_entropy, logits, targets, label_smoothing=0.1)
    theirs = loss_and_grad(F.cross_entropy, logits, targets, label_smoothing=0.1)
    for got, want in zip(ours, theirs, strict=True):
        assert got.dtype == dtype
        assert_close(got, want, dtype)


def test_inputs_are_never_written_and_the_gradient_is_fresh_memory():
    gen = generator("untouched")
    logits = make_logits((5, 6), torch.float32, gen).requires_grad_()
    targets = make_prob_targets((5, 6), torch.float32, gen)
    weight = torch.rand(6, generator=gen) + 0.5
    sample_weight = torch.rand(5, generator=gen)
    given = [t.detach().clone() for t in (logits, targets, weight, sample_weight)]
    cet.cross_entropy(logits, targets, weight=weight, sample_weight=sample_weight, softcap=2.0).backward()
    for original, copy in zip((logits, targets, weight, sample_weight), given, strict=True):
        assert torch.equal(original.detach(), copy)
    assert logits.grad.data_ptr() != logits.data_ptr()


def test_a_second_backward_through_a_retained_graph_gives_the_same_gradient():
    gen = generator("retain")
    logits = make_logits((4, 9), torch.float64, gen).requires_grad_()
    targets = torch.tensor([1, 8, 0, 4])
    loss = cet.cross_entropy(logits, targets, label_smoothing=0.2) * 3.0
    (first,) = torch.autograd.grad(loss, logits, retain_graph=True)
    (second,) = torch.autograd.grad(loss, logits)
    expected = torch.autograd.grad(F.cross_entropy(logits, targets, label_smoothing=0.2) * 3.0, logits)[0]
    assert_close(first, expected, torch.float64)
    assert_close(second, expected, torch.float64)


def test_targets_that_autograd_tracks_get_their_gradient_too():
    """Soft targets from a network (distillation): the generic path differentiates both inputs."""
    gen = generator("teacher")
    student = make_logits((4, 6), torch.float64, gen).requires_grad_()
    teacher = make_logits((4, 6), torch.float64, gen).requires_grad_()
    cet.cross_entropy(student, torch.softmax(teacher, dim=1)).backward()
    reference_student = student.detach().clone().requires_grad_()
    reference_teacher = teacher.detach().clone().requires_grad_()
    F.cross_entropy(reference_student, torch.softmax(reference_teacher, dim=1)).backward()
    assert_close(student.grad, reference_student.grad, torch.float64)
    assert_close(teacher.grad, reference_teacher.grad, torch.float64)


def test_tensors_off_the_cpu_take_the_pure_pytorch_path():
    """The meta device stands in for a GPU here: shapes flow through without touching the kernels."""
    logits = torch.empty((8, 5), device="meta", requires_grad=True)
    targets = torch.empty((8,), dtype=torch.int64, device="meta")
    loss = cet.cross_entropy(logits, targets, reduction="none")
    assert loss.device.type == "meta"
    assert loss.shape == (8,)


def test_a_numpy_input_is_refused_with_a_clear_message():
    with pytest.raises(TypeError, match=r"`input` must be a torch\.Tensor; got ndarray"):
        cet.cross_entropy(np.zeros((2, 3)), torch.tensor([0, 1]))


# --------------------------------------------------------------------------------------------
# binary_cross_entropy_with_logits, nll_loss, binary_cross_entropy against PyTorch


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(7,), (5, 4), (3, 2, 6)], ids=str)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_binary_cross_entropy_with_logits_matches_pytorch(dtype, shape, reduction):
    gen = generator("bce-logits", dtype, shape, reduction)
    logits = make_logits(shape, dtype, gen) * 3
    targets = torch.rand(shape, generator=gen, dtype=torch.float64).to(dtype)
    weight = (torch.rand(shape[-1:], generator=gen, dtype=torch.float64) + 0.2).to(dtype)
    pos_weight = (torch.rand(shape[-1:], generator=gen, dtype=torch.float64) * 3).to(dtype)
    cotangent = torch.rand(shape, generator=gen, dtype=torch.float64).to(dtype) if reduction == "none" else None
    for options in ({}, {"weight": weight}, {"pos_weight": pos_weight}, {"weight": weight, "pos_weight": pos_weight}):
        what = f"{shape} {reduction} {sorted(options)}"
        ours = loss_and_grad(
            cet.binary_cross_entropy_with_logits, logits, targets, reduction=reduction, cotangent=cotangent, **options
        )
        theirs = loss_and_grad(
            F.binary_cross_entropy_with_logits, logits, targets, reduction=reduction, cotangent=cotangent, **options
        )
        for got, want in zip(ours, theirs, strict=True):
            assert_close(got, want, dtype, err_msg=what)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_sigmoid_gradcheck_in_float64(reduction):
    gen = generator("sigmoid-gradcheck", reduction)
    logits = make_logits((4, 3), torch.float64, gen).requires_grad_()
    targets = torch.rand((4, 3), generator=gen, dtype=torch.float64)
    pos_weight = torch.rand(3, generator=gen, dtype=torch.float64) + 0.5
    sample_weight = torch.rand(4, generator=gen, dtype=torch.float64)

    def loss(x):
        return cet.binary_cross_entropy_with_logits(
            x, targets, pos_weight=pos_weight, reduction=reduction, label_smoothing=0.1, sample_weight=sample_weight
        )

    assert torch.autograd.gradcheck(loss, (logits,))


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_nll_loss_and_binary_cross_entropy_match_pytorch(reduction):
    gen = generator("nll-bce", reduction)
    log_probs = torch.log_softmax(make_logits((5, 4, 3), torch.float64, gen), dim=1)
    targets = make_index_targets((5, 4, 3), gen)
    weight = torch.rand(4, generator=gen, dtype=torch.float64) + 0.2
    for got, want in zip(
        loss_and_grad(cet.nll_loss, log_probs, targets, weight, reduction=reduction),
        loss_and_grad(F.nll_loss, log_probs, targets, weight, reduction=reduction),
        strict=True,
    ):
        assert_close(got, want, torch.float64)
    probs = torch.rand((6, 2), generator=gen, dtype=torch.float64) * 0.98 + 0.01
    labels = torch.rand((6, 2), generator=gen, dtype=torch.float64)
    for got, want in zip(
        loss_and_grad(cet.binary_cross_entropy, probs, labels, reduction=reduction),
        loss_and_grad(F.binary_cross_entropy, probs, labels, reduction=reduction),
        strict=True,
    ):
        assert_close(got, want, torch.float64)


# --------------------------------------------------------------------------------------------
# the library's other losses, in PyTorch's layout


def test_other_losses_take_classes_on_dimension_one():
    gen = generator("layout")
    logits = make_logits((4, 5, 3), torch.float64, gen)
    targets = make_index_targets((4, 5, 3), gen)
    transition = torch.full((5, 5), 0.05, dtype=torch.float64) + torch.eye(5, dtype=torch.float64) * 0.75
    pairs = [
        (cet.softmax_focal_loss(logits, targets, gamma=2.0), ce.softmax_focal_loss(logits, targets, gamma=2.0, axis=1)),
        (
            cet.poly1_cross_entropy(logits, targets, epsilon=0.5),
            ce.poly1_cross_entropy(logits, targets, epsilon=0.5, axis=1),
        ),
        (cet.generalized_cross_entropy(logits, targets), ce.generalized_cross_entropy(logits, targets, axis=1)),
        (cet.symmetric_cross_entropy(logits, targets), ce.symmetric_cross_entropy(logits, targets, axis=1)),
        (
            cet.forward_corrected_cross_entropy(logits, targets, transition),
            ce.forward_corrected_cross_entropy(logits, targets, transition, axis=1),
        ),
        (
            cet.backward_corrected_cross_entropy(logits, targets, transition),
            ce.backward_corrected_cross_entropy(logits, targets, transition, axis=1),
        ),
    ]
    for ours, reference in pairs:
        assert_close(ours, reference, torch.float64)


def test_sigmoid_focal_loss_has_torchvisions_signature_and_defaults():
    gen = generator("focal")
    logits = make_logits((6, 3), torch.float64, gen)
    targets = (torch.rand((6, 3), generator=gen) < 0.4).to(torch.float64)
    loss = cet.sigmoid_focal_loss(logits, targets)  # alpha=0.25, gamma=2, reduction="none"
    assert loss.shape == (6, 3)
    p = torch.sigmoid(logits)
    ce_term = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    alpha_t = 0.25 * targets + 0.75 * (1 - targets)
    assert_close(loss, alpha_t * ce_term * (1 - p_t) ** 2, torch.float64)
    assert_close(
        cet.sigmoid_focal_loss(logits, targets, -1, 2.0, "sum"), (ce_term * (1 - p_t) ** 2).sum(), torch.float64
    )


# --------------------------------------------------------------------------------------------
# modules


def test_modules_hold_configuration_and_match_the_functions():
    gen = generator("modules")
    logits = make_logits((6, 4), torch.float64, gen)
    targets = torch.tensor([0, 3, 1, 1, 2, 0])
    weight = torch.tensor([1.0, 2.0, 0.5, 1.5], dtype=torch.float64)
    sample_weight = torch.rand(6, generator=gen, dtype=torch.float64)
    criterion = cet.CrossEntropyLoss(weight, label_smoothing=0.1, z_loss=1e-3, softcap=4.0)
    assert repr(criterion) == "CrossEntropyLoss(label_smoothing=0.1, z_loss=0.001, softcap=4.0)"
    assert [name for name, _ in criterion.named_buffers()] == ["weight"]
    assert list(criterion.parameters()) == []
    expected = cet.cross_entropy(
        logits, targets, weight, label_smoothing=0.1, z_loss=1e-3, softcap=4.0, sample_weight=sample_weight
    )
    assert_close(criterion(logits, targets, sample_weight=sample_weight), expected, torch.float64)
    assert_close(
        cet.CrossEntropyLoss(weight, reduction="sum")(logits, targets),
        torch.nn.CrossEntropyLoss(weight, reduction="sum")(logits, targets),
        torch.float64,
    )
    state = criterion.state_dict()
    assert torch.equal(state["weight"], weight)
    assert criterion.to(torch.float32).weight.dtype == torch.float32

    probabilities = torch.rand((6, 4), generator=gen, dtype=torch.float64)
    pos_weight = torch.rand(4, generator=gen, dtype=torch.float64)
    assert_close(
        cet.BCEWithLogitsLoss(pos_weight=pos_weight)(logits, probabilities),
        torch.nn.BCEWithLogitsLoss(pos_weight=pos_weight)(logits, probabilities),
        torch.float64,
    )
    assert_close(
        cet.NLLLoss(weight)(torch.log_softmax(logits, 1), targets),
        torch.nn.NLLLoss(weight)(torch.log_softmax(logits, 1), targets),
        torch.float64,
    )
    squashed = torch.sigmoid(logits)
    assert_close(cet.BCELoss()(squashed, probabilities), torch.nn.BCELoss()(squashed, probabilities), torch.float64)
    assert_close(
        cet.SoftmaxFocalLoss(gamma=1.0)(logits, targets),
        cet.softmax_focal_loss(logits, targets, gamma=1.0),
        torch.float64,
    )
    assert_close(
        cet.SigmoidFocalLoss()(logits, probabilities), cet.sigmoid_focal_loss(logits, probabilities), torch.float64
    )
    assert_close(
        cet.Poly1CrossEntropyLoss(epsilon=2.0)(logits, targets),
        cet.poly1_cross_entropy(logits, targets, epsilon=2.0),
        torch.float64,
    )
    transition = torch.full((4, 4), 0.1, dtype=torch.float64) + torch.eye(4, dtype=torch.float64) * 0.6
    assert_close(
        cet.ForwardCorrectedCrossEntropyLoss(transition)(logits, targets),
        cet.forward_corrected_cross_entropy(logits, targets, transition),
        torch.float64,
    )
    assert_close(
        cet.BackwardCorrectedCrossEntropyLoss(transition)(logits, targets),
        cet.backward_corrected_cross_entropy(logits, targets, transition),
        torch.float64,
    )
    assert_close(
        cet.GeneralizedCrossEntropyLoss(q=0.5)(logits, targets),
        cet.generalized_cross_entropy(logits, targets, q=0.5),
        torch.float64,
    )
    assert_close(
        cet.SymmetricCrossEntropyLoss(alpha=0.2)(logits, targets),
        cet.symmetric_cross_entropy(logits, targets, alpha=0.2),
        torch.float64,
    )


# --------------------------------------------------------------------------------------------
# torch.compile (its own imports raise a DeprecationWarning about torch.jit in PyTorch 2.13)

TORCH_JIT_DEPRECATION = "ignore:`torch.jit.script_method` is deprecated:DeprecationWarning"


@pytest.mark.filterwarnings(TORCH_JIT_DEPRECATION)
def test_a_compiled_model_with_the_loss_trains_as_the_eager_one():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 5))
    criterion = cet.CrossEntropyLoss(label_smoothing=0.1)
    inputs = torch.randn(32, 8)
    targets = torch.randint(0, 5, (32,))

    def step(m):
        loss = criterion(m(inputs), targets)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in m.parameters()]

    eager_model = model
    compiled_model = torch.nn.Sequential(*[torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 5)])
    compiled_model.load_state_dict(eager_model.state_dict())
    eager = step(eager_model)
    compiled = step(torch.compile(compiled_model))
    assert_close(compiled[0], eager[0], torch.float32)
    for got, want in zip(compiled[1], eager[1], strict=True):
        assert_close(got, want, torch.float32)


@pytest.mark.filterwarnings(TORCH_JIT_DEPRECATION)
def test_the_loss_itself_compiles():
    logits = torch.randn(16, 10, requires_grad=True)
    targets = torch.randint(0, 10, (16,))
    compiled = torch.compile(lambda x, y: cet.cross_entropy(x, y, z_loss=1e-3))
    loss = compiled(logits, targets)
    loss.backward()
    reference = logits.detach().clone().requires_grad_()
    with kernels.disabled():
        cet.cross_entropy(reference, targets, z_loss=1e-3).backward()
    assert_close(logits.grad, reference.grad, torch.float32)


# --------------------------------------------------------------------------------------------
# inplace=True


def test_inplace_writes_the_gradient_over_the_logits_and_changes_nothing_else():
    gen = generator("inplace")
    hidden = torch.randn(12, 8, generator=gen, dtype=torch.float64)
    head = torch.randn(30, 8, generator=gen, dtype=torch.float64).requires_grad_()
    targets = torch.randint(0, 30, (12,), generator=gen)
    targets[3] = -100

    logits = hidden @ head.T
    loss = cet.cross_entropy(logits, targets, label_smoothing=0.1, inplace=True)
    loss.backward()
    reference_head = head.detach().clone().requires_grad_()
    reference_logits = hidden @ reference_head.T
    reference_logits.retain_grad()
    reference = F.cross_entropy(reference_logits, targets, label_smoothing=0.1)
    reference.backward()
    assert_close(loss, reference, torch.float64)
    assert_close(head.grad, reference_head.grad, torch.float64)
    assert_close(logits.detach(), reference_logits.grad, torch.float64)  # the logits now hold dL/dlogits


@pytest.mark.parametrize("factor", [1.0, 0.5])
def test_inplace_backward_hands_over_the_logits_own_memory(factor):
    """No N x C tensor is allocated in backward: the gradient autograd receives is the logits' storage,
    scaled in place by the incoming gradient."""
    logits = torch.randn(6, 40, dtype=torch.float64, requires_grad=True)
    targets = torch.tensor([0, 5, 9, 39, 2, 7])
    with torch.no_grad():
        leaf_logits = logits * 1.0
    leaf_logits.requires_grad_()
    reference = logits.detach().clone().requires_grad_()
    (F.cross_entropy(reference, targets) * factor).backward()
    storage = leaf_logits.untyped_storage().data_ptr()
    (cet.cross_entropy(leaf_logits, targets, inplace=True) * factor).backward()
    assert leaf_logits.grad.untyped_storage().data_ptr() == storage
    assert_close(leaf_logits.grad, reference.grad, torch.float64)


def test_inplace_logits_needed_elsewhere_make_autograd_complain():
    logits = torch.randn(4, 6, dtype=torch.float64, requires_grad=True) * 1.0
    penalty = logits.pow(2).sum()  # pow saves its input for backward
    loss = cet.cross_entropy(logits, torch.tensor([0, 1, 2, 3]), inplace=True) + 1e-3 * penalty
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"softcap": 4.0}, "cannot be used with `softcap`"),
        ({"label_smoothing": 0.1, "weight": torch.ones(6)}, "cannot be used with label smoothing with class weights"),
    ],
    ids=["softcap", "weighted-smoothing"],
)
def test_inplace_is_refused_where_the_logits_are_read_twice(options, message):
    logits = torch.randn(4, 6, requires_grad=True) * 1.0
    with pytest.raises(ValueError, match=message):
        cet.cross_entropy(logits, torch.tensor([0, 1, 2, 3]), inplace=True, **options)


def test_inplace_is_refused_for_probability_targets_and_k_dimensional_logits():
    logits = torch.randn(4, 6, requires_grad=True) * 1.0
    with pytest.raises(ValueError, match="needs class-index targets"):
        cet.cross_entropy(logits, torch.softmax(torch.randn(4, 6), 1), inplace=True)
    spatial = torch.randn(2, 6, 3, requires_grad=True) * 1.0
    with pytest.raises(ValueError, match="needs writeable C-contiguous logits"):
        cet.cross_entropy(spatial, torch.zeros(2, 3, dtype=torch.int64), inplace=True)


def test_inplace_refuses_a_second_backward_it_cannot_recompute():
    logits = torch.randn(4, 6, dtype=torch.float64, requires_grad=True) * 1.0
    loss = cet.cross_entropy(logits, torch.tensor([0, 1, 2, 3]), inplace=True)
    loss.backward(retain_graph=True)
    expected = r"cannot be recomputed for a second backward .*call the loss again with inplace=False"
    with pytest.raises(RuntimeError, match=expected):
        loss.backward()
