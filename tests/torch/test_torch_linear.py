"""``crossentropy.torch.linear_cross_entropy`` against the unfused ``F.cross_entropy(input @ W.T + b, y)``.

Losses and the gradients of input, weight and bias are compared with PyTorch autograd through the
materialized logits, for every option, reduction (with a random cotangent for ``"none"``), chunk
size (dividing the rows or not), ignored rows, K-dimensional input and half precision; the plain
PyTorch path for other devices is exercised by switching the kernels off; peak memory is checked
in a fresh process at a size where the logits alone would take 2 GB.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import zlib

import pytest
import torch
import torch.nn.functional as F

import crossentropy.torch as cet
from crossentropy import kernels
from tests._support import assert_close


def generator(*params) -> torch.Generator:
    return torch.Generator().manual_seed(zlib.crc32(repr(params).encode()))


def make_case(n_rows=13, hidden=8, n_classes=37, dtype=torch.float64, *, bias=True, ignored=3, seed=()):
    gen = generator("linear", n_rows, hidden, n_classes, dtype, bias, ignored, seed)
    x = torch.randn(n_rows, hidden, generator=gen, dtype=torch.float64).to(dtype)
    w = (torch.randn(n_classes, hidden, generator=gen, dtype=torch.float64) * 0.5).to(dtype)
    b = (torch.randn(n_classes, generator=gen, dtype=torch.float64) * 0.1).to(dtype) if bias else None
    y = torch.randint(0, n_classes, (n_rows,), generator=gen)
    y[torch.randperm(n_rows, generator=gen)[:ignored]] = -100
    return x, w, b, y


def reference(x, w, b, y, **options):
    logits = x @ w.T + (0 if b is None else b)
    return cet.cross_entropy(logits, y, **options)


def value_and_grads(function, x, w, b, y, *, cotangent=None, **options):
    leaves = [t.detach().clone().requires_grad_() if t is not None else None for t in (x, w, b)]
    loss = function(leaves[0], leaves[1], leaves[2], y, **options)
    (loss * (torch.ones_like(loss) if cotangent is None else cotangent)).sum().backward()
    return [loss.detach()] + [None if t is None else t.grad for t in leaves]


def fused(x, w, b, y, **options):
    return cet.linear_cross_entropy(x, w, y, linear_bias=b, **options)


def assert_all_close(ours, theirs, dtype, what):
    for got, want in zip(ours, theirs, strict=True):
        if want is None:
            assert got is None, what
            continue
        assert got.dtype == want.dtype, what
        assert_close(got, want, dtype, err_msg=what)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("chunk_size", [1, 4, 13, 100])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
def test_matches_the_unfused_loss_and_gradients(reduction, chunk_size, bias):
    x, w, b, y = make_case(bias=bias)
    cotangent = torch.rand(13, generator=generator("cot"), dtype=torch.float64) if reduction == "none" else None
    for options in ({}, {"label_smoothing": 0.1}, {"z_loss": 1e-2}, {"softcap": 3.0}, {"ignore_index": 5}):
        what = f"{reduction} chunk={chunk_size} bias={bias} {options}"
        targets = torch.where(y == -100, options["ignore_index"], y) if "ignore_index" in options else y
        ours = value_and_grads(
            fused, x, w, b, targets, cotangent=cotangent, reduction=reduction, chunk_size=chunk_size, **options
        )
        theirs = value_and_grads(reference, x, w, b, targets, cotangent=cotangent, reduction=reduction, **options)
        assert_all_close(ours, theirs, torch.float64, what)


def test_matches_pytorchs_own_cross_entropy_on_the_materialized_logits():
    """An external oracle: F.cross_entropy itself (no extras), float32."""
    x, w, b, y = make_case(n_rows=64, hidden=16, n_classes=300, dtype=torch.float32)
    ours = value_and_grads(fused, x, w, b, y, chunk_size=10, label_smoothing=0.05)
    theirs = value_and_grads(
        lambda x, w, b, y, **o: F.cross_entropy(F.linear(x, w, b), y, **o), x, w, b, y, label_smoothing=0.05
    )
    assert_all_close(ours, theirs, torch.float32, "float32 against F.cross_entropy")


def test_k_dimensional_input_keeps_the_target_shape():
    x, w, b, y = make_case(n_rows=12)
    x3, y3 = x.reshape(3, 4, 8), y.reshape(3, 4)
    loss = cet.linear_cross_entropy(x3, w, y3, linear_bias=b, reduction="none", chunk_size=5)
    assert loss.shape == (3, 4)
    assert_close(loss, reference(x, w, b, y, reduction="none").reshape(3, 4), torch.float64)


def test_all_ignored_rows_give_zero_loss_and_zero_gradients():
    x, w, b, y = make_case(ignored=13)
    loss, gx, gw, gb = value_and_grads(fused, x, w, b, y, chunk_size=4)
    assert loss.item() == 0.0
    assert not gx.any()
    assert not gw.any()
    assert not gb.any()


def test_gradcheck_in_float64():
    x, w, b, y = make_case(n_rows=5, hidden=3, n_classes=7, ignored=1)
    leaves = [t.clone().requires_grad_() for t in (x, w, b)]
    for reduction in ("mean", "none"):

        def loss(x, w, b, reduction=reduction):
            return cet.linear_cross_entropy(
                x, w, y, linear_bias=b, reduction=reduction, chunk_size=2, z_loss=1e-2, softcap=2.0
            )

        assert torch.autograd.gradcheck(loss, leaves)


def test_only_requested_gradients_are_computed():
    x, w, b, y = make_case()
    w = w.clone().requires_grad_()
    loss = cet.linear_cross_entropy(x, w, y, linear_bias=b)
    loss.backward()
    assert w.grad is not None
    assert x.grad is None


def test_a_second_backward_recomputes_the_same_gradients():
    x, w, b, y = make_case()
    w = w.clone().requires_grad_()
    loss = cet.linear_cross_entropy(x, w, y, linear_bias=b, chunk_size=5) * 2.0
    (first,) = torch.autograd.grad(loss, w, retain_graph=True)
    (second,) = torch.autograd.grad(loss, w)
    assert_close(first, second, torch.float64)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_half_precision_parameters_get_half_precision_gradients_accumulated_in_float32(dtype):
    x, w, b, y = make_case(n_rows=32, hidden=16, n_classes=64, dtype=dtype)
    ours = value_and_grads(fused, x, w, b, y, chunk_size=8)
    # The oracle: the same computation in float32 (what "accumulated in float32" promises), rounded once.
    exact = value_and_grads(fused, x.float(), w.float(), b.float(), y, chunk_size=8)
    for got, want in zip(ours, exact, strict=True):
        assert got.dtype == dtype
        assert_close(got, want.to(dtype), dtype)


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_the_plain_pytorch_path_for_other_devices_matches(reduction):
    x, w, b, y = make_case()
    cotangent = torch.rand(13, generator=generator("cot2"), dtype=torch.float64) if reduction == "none" else None
    with kernels.disabled():
        ours = value_and_grads(
            fused, x, w, b, y, cotangent=cotangent, reduction=reduction, chunk_size=4, label_smoothing=0.1
        )
    theirs = value_and_grads(reference, x, w, b, y, cotangent=cotangent, reduction=reduction, label_smoothing=0.1)
    assert_all_close(ours, theirs, torch.float64, "checkpointed path")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"linear_weight": torch.zeros(37, 9)},
            r"`linear_weight` must have shape \(V, H\) with H = input.shape\[-1\]",
        ),
        ({"target": torch.zeros(12, dtype=torch.int64)}, r"`target` must have shape \(13,\)"),
        (
            {"target": torch.full((13,), 37)},
            r"`target` must be class indices in \[0, 37\) or ignore_index=-100; got 37",
        ),
        ({"linear_bias": torch.zeros(36)}, r"`linear_bias` must have shape \(37,\)"),
        ({"chunk_size": 0}, r"`chunk_size` must be >= 1; got 0"),
        ({"label_smoothing": 1.5}, r"`label_smoothing` must be in \[0, 1\]; got 1.5"),
        ({"input": torch.zeros(0, 8), "target": torch.zeros(0, dtype=torch.int64)}, r"`input` must not be empty"),
    ],
)
def test_bad_arguments_are_named(change, message):
    x, w, b, y = make_case()
    arguments = {"input": x, "linear_weight": w, "target": y, "linear_bias": b, **change}
    with pytest.raises((ValueError, TypeError), match=message):
        cet.linear_cross_entropy(
            arguments.pop("input"), arguments.pop("linear_weight"), arguments.pop("target"), **arguments
        )


def test_peak_memory_stays_far_below_the_logits(tmp_path):
    """2048 tokens × 262144 classes: 2 GiB of float32 logits unfused; the chunks stay under 0.5 GiB."""
    script = textwrap.dedent(
        """
        import json, resource, torch
        import crossentropy.torch as cet
        torch.manual_seed(0)
        n, h, v = 2048, 64, 2**18
        x = torch.randn(n, h, requires_grad=True)
        w = (torch.randn(v, h) * 0.05).requires_grad_()
        y = torch.randint(0, v, (n,))
        cet.linear_cross_entropy(x[:4], w, y[:4]).backward()  # warm-up: compilation, thread pools
        w.grad = None
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        loss = cet.linear_cross_entropy(x, w, y)
        loss.backward()
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        print(json.dumps({"growth": after - before, "loss": loss.item(), "finite": bool(w.grad.isfinite().all())}))
        """
    )
    # The CPU kernels' memory: a forced Triton backend of the calling suite (interpreted) is not inherited.
    environment = {k: v for k, v in os.environ.items() if k not in ("CROSSENTROPY_KERNELS", "TRITON_INTERPRET")}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=False, env=environment
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["finite"]
    assert report["growth"] < 512 * 2**20, f"peak grew by {report['growth'] / 2**20:.0f} MiB"


# --------------------------------------------------------------------------------------------
# Autograd beyond the first-order gradient
# --------------------------------------------------------------------------------------------

LINEAR_OPTIONS = [{}, {"label_smoothing": 0.1}, {"z_loss": 0.01}, {"softcap": 2.0}]


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")  # PyTorch's own import
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("options", LINEAR_OPTIONS, ids=lambda o: ",".join(o) or "plain")
def test_double_backward_forward_ad_and_batched_gradients_pass_gradcheck(options, reduction):
    x, w, b, y = make_case(n_rows=6, hidden=4, n_classes=7, ignored=1)
    leaves = tuple(t.requires_grad_() for t in (x, w, b))

    def loss(x, w, b):
        return cet.linear_cross_entropy(x, w, y, linear_bias=b, reduction=reduction, chunk_size=4, **options)

    assert torch.autograd.gradgradcheck(loss, leaves, check_batched_grad=True)
    assert torch.autograd.gradcheck(loss, leaves, check_forward_ad=True, check_batched_grad=True)


@pytest.mark.parametrize("options", LINEAR_OPTIONS, ids=lambda o: ",".join(o) or "plain")
def test_torch_func_grad_and_vmap_equal_the_unfused_loss(options):
    x, w, b, y = make_case(n_rows=6, hidden=4, n_classes=7, ignored=1)

    def loss(function, x, w, b, y):
        return function(x, w, b, y, **options)

    got = torch.func.grad(lambda *a: loss(fused, *a, y), argnums=(0, 1, 2))(x, w, b)
    expected = torch.func.grad(lambda *a: loss(reference, *a, y), argnums=(0, 1, 2))(x, w, b)
    for g, e in zip(got, expected, strict=True):
        assert_close(g, e, torch.float64)
    batched = torch.func.vmap(lambda rows, target: loss(fused, rows, w, b, target))(x.reshape(2, 3, 4), y.reshape(2, 3))
    one_by_one = torch.func.vmap(lambda rows, target: loss(reference, rows, w, b, target))(
        x.reshape(2, 3, 4), y.reshape(2, 3)
    )
    assert_close(batched, one_by_one, torch.float64)
