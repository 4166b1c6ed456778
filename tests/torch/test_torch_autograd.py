"""Every autograd path of the drop-ins: double backward, forward-mode AD and ``torch.func``.

On CPU tensors that require grad, ``cross_entropy`` and ``binary_cross_entropy_with_logits``
run the fused kernels inside a custom operator with registered autograd. These tests hold them, option by
option, to what PyTorch's own functions do beyond the first-order gradient:

- ``create_graph=True`` gives a gradient autograd differentiates again (``gradgradcheck``
  against finite differences, and Hessian-vector products equal to PyTorch's);
- forward-mode AD (``torch.autograd.forward_ad``, ``gradcheck(check_forward_ad=True)``) gives
  the directional derivative, equal to PyTorch's tangent;
- ``torch.func.grad`` and ``torch.func.vmap`` work and equal PyTorch's, inputs with extra
  dimensions ``(N, C, d1)`` included;
- the ordinary first-order call still runs on the fused kernels.
"""

from __future__ import annotations

import zlib

import pytest
import torch
import torch.nn.functional as F
from torch.autograd import forward_ad

import crossentropy.torch as cet

REDUCTIONS = ["mean", "sum", "none"]

# gradcheck's forward-mode checks import a module of PyTorch that scripts a function with
# torch.jit, which PyTorch 2.13 itself deprecates: its warning, not ours.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")


def generator(*params) -> torch.Generator:
    return torch.Generator().manual_seed(zlib.crc32(repr(params).encode()))


def softmax_case(option: str, shape=(4, 5), *, seed=0):
    """``(logits, target, kwargs, pytorch_has_it)`` for one option of ``cross_entropy``, float64."""
    gen = generator(option, shape, seed)
    n_classes = shape[1]
    batch = shape[:1] + shape[2:]
    x = torch.randn(shape, generator=gen, dtype=torch.float64) * 2
    y = torch.randint(0, n_classes, batch, generator=gen)
    probs = torch.softmax(torch.randn(shape, generator=gen, dtype=torch.float64), dim=1)
    weight = torch.rand(n_classes, generator=gen, dtype=torch.float64) + 0.5
    kwargs, target, pytorch_has_it = {}, y, True
    if option == "weight":
        kwargs = {"weight": weight}
    elif option == "label_smoothing":
        kwargs = {"label_smoothing": 0.2}
    elif option == "weight+label_smoothing":
        kwargs = {"weight": weight, "label_smoothing": 0.2}
    elif option == "ignore_index":
        y = y.clone()
        y.view(-1)[1] = 2
        target, kwargs = y, {"ignore_index": 2}
    elif option == "probs":
        target = probs
    elif option == "probs+weight+label_smoothing":
        target, kwargs = probs, {"weight": weight, "label_smoothing": 0.1}
    elif option == "z_loss":
        kwargs, pytorch_has_it = {"z_loss": 0.05}, False
    elif option == "softcap":
        kwargs, pytorch_has_it = {"softcap": 2.0}, False
    elif option == "sample_weight":
        kwargs, pytorch_has_it = {"sample_weight": torch.rand(batch, generator=gen, dtype=torch.float64)}, False
    elif option != "plain":
        raise ValueError(option)
    return x, target, kwargs, pytorch_has_it


SOFTMAX_OPTIONS = [
    "plain",
    "weight",
    "label_smoothing",
    "weight+label_smoothing",
    "ignore_index",
    "probs",
    "probs+weight+label_smoothing",
    "z_loss",
    "softcap",
    "sample_weight",
]


def sigmoid_case(option: str, shape=(3, 4), *, seed=0):
    """``(logits, target, kwargs, pytorch_has_it)`` for one option of ``binary_cross_entropy_with_logits``."""
    gen = generator(option, shape, seed)
    x = torch.randn(shape, generator=gen, dtype=torch.float64) * 2
    target = torch.rand(shape, generator=gen, dtype=torch.float64)
    kwargs, pytorch_has_it = {}, True
    if option == "weight":
        kwargs = {"weight": torch.rand(shape[-1], generator=gen, dtype=torch.float64) + 0.5}
    elif option == "pos_weight":
        kwargs = {"pos_weight": torch.rand(shape[-1], generator=gen, dtype=torch.float64) * 3}
    elif option == "label_smoothing":
        kwargs, pytorch_has_it = {"label_smoothing": 0.1}, False
    elif option == "sample_weight":
        kwargs, pytorch_has_it = {"sample_weight": torch.rand(shape[0], generator=gen, dtype=torch.float64)}, False
    elif option != "plain":
        raise ValueError(option)
    return x, target, kwargs, pytorch_has_it


SIGMOID_OPTIONS = ["plain", "weight", "pos_weight", "label_smoothing", "sample_weight"]

CASES = [("cross_entropy", option) for option in SOFTMAX_OPTIONS] + [
    ("binary_cross_entropy_with_logits", option) for option in SIGMOID_OPTIONS
]


def make_case(function_name: str, option: str, **kwargs):
    case = softmax_case if function_name == "cross_entropy" else sigmoid_case
    return case(option, **kwargs)


def functions(function_name: str):
    return getattr(cet, function_name), getattr(F, function_name)


# --------------------------------------------------------------------------------------------
# The fused path is still the one an ordinary first-order call takes
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("function_name", "option"), CASES)
def test_first_order_calls_still_run_on_the_fused_kernels(function_name, option):
    x, target, kwargs, _ = make_case(function_name, option)
    ours, _ = functions(function_name)
    loss = ours(x.requires_grad_(), target, **kwargs)
    operator = "softmax" if function_name == "cross_entropy" else "sigmoid"  # the custom operator's backward
    assert f"crossentropy_{operator}_cross_entropy_with_grad" in type(loss.grad_fn).__name__


# --------------------------------------------------------------------------------------------
# Double backward
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(("function_name", "option"), CASES)
def test_gradgradcheck_passes_for_every_option(function_name, option, reduction):
    x, target, kwargs, _ = make_case(function_name, option)
    ours, _ = functions(function_name)
    x.requires_grad_()
    assert torch.autograd.gradgradcheck(lambda a: ours(a, target, reduction=reduction, **kwargs), (x,))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(("function_name", "option"), CASES)
def test_batched_gradients_pass_gradcheck_for_every_option(function_name, option, reduction):
    # gradcheck's batched check runs the backward under vmap, with a batch of incoming gradients.
    x, target, kwargs, _ = make_case(function_name, option)
    ours, _ = functions(function_name)
    x.requires_grad_()
    assert torch.autograd.gradcheck(
        lambda a: ours(a, target, reduction=reduction, **kwargs), (x,), check_batched_grad=True
    )


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(("function_name", "option"), CASES)
def test_hessian_vector_products_equal_pytorch(function_name, option, reduction):
    x, target, kwargs, pytorch_has_it = make_case(function_name, option)
    if not pytorch_has_it:
        pytest.skip("PyTorch's function has no such option; gradgradcheck checks it against finite differences")
    ours, theirs = functions(function_name)
    direction = torch.randn(x.shape, generator=generator("direction"), dtype=torch.float64)

    def hvp(function):
        a = x.detach().clone().requires_grad_()
        loss = function(a, target, reduction=reduction, **kwargs)
        (grad,) = torch.autograd.grad(loss.sum(), a, create_graph=True)
        (second,) = torch.autograd.grad((grad * direction).sum(), a)
        return grad.detach(), second

    grad, second = hvp(ours)
    expected_grad, expected_second = hvp(theirs)
    torch.testing.assert_close(grad, expected_grad)
    torch.testing.assert_close(second, expected_second)
    assert second.abs().max() > 0  # a nonzero second derivative, not a detached gradient


def test_the_second_derivative_also_flows_to_the_incoming_gradient():
    x, target, _, _ = softmax_case("plain")
    x.requires_grad_()
    cotangent = torch.rand(x.shape[0], dtype=torch.float64, requires_grad=True)
    loss = cet.cross_entropy(x, target, reduction="none")
    (grad,) = torch.autograd.grad(loss, x, cotangent, create_graph=True)
    (dcotangent,) = torch.autograd.grad(grad.sum(), cotangent)
    expected_loss = F.cross_entropy(x, target, reduction="none")
    (expected_grad,) = torch.autograd.grad(expected_loss, x, cotangent, create_graph=True)
    (expected,) = torch.autograd.grad(expected_grad.sum(), cotangent)
    torch.testing.assert_close(dcotangent, expected)


def test_inplace_refuses_create_graph_with_a_clear_error():
    x = torch.randn(4, 5, dtype=torch.float64).requires_grad_()
    a = x * 1  # a non-leaf: the logits may be overwritten
    loss = cet.cross_entropy(a, torch.tensor([0, 1, 2, 3]), inplace=True)
    with pytest.raises(RuntimeError, match=r"inplace=True.*create_graph=True"):
        torch.autograd.grad(loss, x, create_graph=True)


def test_a_second_backward_through_the_graph_repeats_the_gradient_exactly():
    x, target, kwargs, _ = softmax_case("weight+label_smoothing")
    x.requires_grad_()
    loss = cet.cross_entropy(x, target, **kwargs)
    (first,) = torch.autograd.grad(loss, x, retain_graph=True)
    (second,) = torch.autograd.grad(loss, x)
    assert torch.equal(first, second)


# --------------------------------------------------------------------------------------------
# Forward-mode AD
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(("function_name", "option"), CASES)
def test_gradcheck_with_forward_ad_passes_for_every_option(function_name, option, reduction):
    x, target, kwargs, _ = make_case(function_name, option)
    ours, _ = functions(function_name)
    x.requires_grad_()
    assert torch.autograd.gradcheck(
        lambda a: ours(a, target, reduction=reduction, **kwargs),
        (x,),
        check_forward_ad=True,
        check_backward_ad=False,  # reverse mode: test_gradgradcheck_passes_for_every_option and the layer's tests
    )


@pytest.mark.parametrize("requires_grad", [True, False], ids=["tracked", "untracked"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(("function_name", "option"), CASES)
def test_forward_ad_tangent_equals_pytorch(function_name, option, reduction, requires_grad):
    x, target, kwargs, pytorch_has_it = make_case(function_name, option)
    ours, theirs = functions(function_name)
    tangent = torch.randn(x.shape, generator=generator("tangent"), dtype=torch.float64)

    def jvp(function):
        with forward_ad.dual_level():
            dual = forward_ad.make_dual(x.detach().clone().requires_grad_(requires_grad), tangent)
            return forward_ad.unpack_dual(function(dual, target, reduction=reduction, **kwargs)).tangent

    got = jvp(ours)
    assert got is not None, "the tangent was dropped"
    if pytorch_has_it:
        expected = jvp(theirs)
    else:  # the directional derivative from reverse mode: <d loss / dx, tangent>
        a = x.detach().clone().requires_grad_()
        loss = ours(a, target, reduction=reduction, **kwargs)
        rows = [torch.autograd.grad(value, a, retain_graph=True)[0] for value in loss.reshape(-1)]
        expected = torch.stack([(row * tangent).sum() for row in rows]).reshape(loss.shape)
    torch.testing.assert_close(got, expected)


# --------------------------------------------------------------------------------------------
# torch.func
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("function_name", "option"), CASES)
def test_torch_func_grad_equals_pytorch(function_name, option):
    x, target, kwargs, pytorch_has_it = make_case(function_name, option)
    ours, theirs = functions(function_name)
    got = torch.func.grad(lambda a: ours(a, target, **kwargs))(x)
    if pytorch_has_it:
        expected = torch.func.grad(lambda a: theirs(a, target, **kwargs))(x)
    else:
        a = x.clone().requires_grad_()
        (expected,) = torch.autograd.grad(ours(a, target, **kwargs), a)
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(("function_name", "option"), CASES)
def test_torch_func_vmap_equals_a_loop(function_name, option, reduction):
    cases = [make_case(function_name, option, seed=seed) for seed in range(3)]
    xs = torch.stack([case[0] for case in cases])
    targets = torch.stack([case[1] for case in cases])
    kwargs = cases[0][2]
    ours, _ = functions(function_name)
    got = torch.func.vmap(lambda a, t: ours(a, t, reduction=reduction, **kwargs))(xs, targets)
    expected = torch.stack([ours(a, t, reduction=reduction, **kwargs) for a, t in zip(xs, targets, strict=True)])
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("requires_grad", [True, False], ids=["tracked", "untracked"])
@pytest.mark.parametrize("function_name", ["cross_entropy", "nll_loss"])
def test_vmap_over_inputs_with_extra_dimensions_equals_pytorch(function_name, requires_grad):
    gen = generator(function_name)
    x = torch.randn((3, 2, 4, 5), generator=gen, dtype=torch.float64).requires_grad_(requires_grad)
    target = torch.randint(0, 4, (3, 2, 5), generator=gen)
    ours, theirs = functions(function_name)
    got = torch.func.vmap(ours)(x, target)
    torch.testing.assert_close(got, torch.func.vmap(theirs)(x, target))


@pytest.mark.parametrize(("function_name", "option"), CASES)
def test_vmap_of_grad_per_sample_gradients_equal_pytorch(function_name, option):
    x, target, kwargs, pytorch_has_it = make_case(function_name, option)
    ours, theirs = functions(function_name)
    per_sample_weight = kwargs.pop("sample_weight", None)  # one per sample: mapped with the sample

    def loss(function, a, t, s=None):
        extra = {} if s is None else {"sample_weight": s.unsqueeze(0)}
        return function(a.unsqueeze(0), t.unsqueeze(0), **kwargs, **extra)

    inputs = (x, target) if per_sample_weight is None else (x, target, per_sample_weight)
    got = torch.func.vmap(torch.func.grad(lambda *args: loss(ours, *args)))(*inputs)
    if pytorch_has_it:
        expected = torch.func.vmap(torch.func.grad(lambda *args: loss(theirs, *args)))(*inputs)
    else:  # reverse mode, one sample at a time
        samples = [[t[n] for t in inputs] for n in range(x.shape[0])]
        expected = torch.stack(
            [torch.autograd.grad(loss(ours, a.requires_grad_(), *rest), a)[0] for a, *rest in samples]
        )
    torch.testing.assert_close(got, expected)
