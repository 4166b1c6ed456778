"""``out=`` of ``softmax_cross_entropy_with_grad`` and ``sigmoid_cross_entropy_with_grad``.

NumPy's convention: an array of the logits' shape and dtype receives the gradient and is
returned, on the fused kernels (written in place of a new array) and on the generic path
(computed, then copied in); ``out=logits`` overwrites the logits with their gradient.
"""

from __future__ import annotations

import array_api_strict
import numpy as np
import pytest
import torch

import crossentropy as ce
from crossentropy import kernels
from crossentropy.kernels.numba._softmax import BLOCK
from tests._support import assert_close, tolerance

RNG = np.random.default_rng(7)
FUNCTIONS = {"softmax": ce.softmax_cross_entropy_with_grad, "sigmoid": ce.sigmoid_cross_entropy_with_grad}
PATHS = ["kernels", "generic"]


def _inputs(kind: str, dtype, shape=(3, 2 * BLOCK + 9)):  # float16 sums of 3 rows stay finite
    logits = (RNG.standard_normal(shape) * 3).astype(dtype)
    if kind == "softmax":
        targets = RNG.integers(0, shape[-1], shape[:-1])
        targets[1] = -100
    else:
        targets = (RNG.random(shape) < 0.3).astype(dtype)
    return logits, targets


def _call(path: str, function, *args, **options):
    if path == "generic":
        with kernels.disabled():
            return function(*args, **options)
    return function(*args, **options)


SOFTMAX_OPTIONS = [{}, {"label_smoothing": 0.1}, {"weight": "class", "z_loss": 1e-3}, {"reduction": "none"}]
SIGMOID_OPTIONS = [{}, {"pos_weight": "class", "label_smoothing": 0.2}, {"reduction": "sum"}, {"reduction": "none"}]


def _resolve(options: dict, n_classes: int, dtype) -> dict:
    resolved = dict(options)
    for name in ("weight", "pos_weight"):
        if options.get(name) == "class":
            resolved[name] = RNG.uniform(0.5, 2.0, n_classes).astype(dtype)
    return resolved


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize(
    ("kind", "options"),
    [("softmax", o) for o in SOFTMAX_OPTIONS] + [("sigmoid", o) for o in SIGMOID_OPTIONS],
    ids=lambda v: v if isinstance(v, str) else "+".join(f"{k}={v}" for k, v in v.items()) or "plain",
)
def test_out_receives_exactly_the_gradient_and_is_returned(kind, options, dtype, path):
    logits, targets = _inputs(kind, dtype)
    resolved = _resolve(options, logits.shape[-1], dtype)
    before = logits.copy()
    loss, fresh = _call(path, FUNCTIONS[kind], logits, targets, **resolved)
    out = np.full_like(logits, np.nan)
    loss_out, written = _call(path, FUNCTIONS[kind], logits, targets, out=out, **resolved)
    assert written is out
    np.testing.assert_array_equal(out, fresh)  # bitwise
    np.testing.assert_array_equal(loss_out, loss)
    np.testing.assert_array_equal(logits, before)  # the caller's logits are untouched


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize(
    "options",
    [{}, {"label_smoothing": 0.1}, {"z_loss": 1e-3, "sample_weight": "sample"}, {"reduction": "sum"}],
    ids=lambda o: "+".join(o) or "plain",
)
def test_softmax_gradient_over_the_logits(options, dtype, path):
    logits, targets = _inputs("softmax", dtype)
    resolved = dict(options)
    if options.get("sample_weight") == "sample":
        resolved["sample_weight"] = RNG.uniform(0.0, 2.0, logits.shape[0]).astype(dtype)
    loss, fresh = _call(path, ce.softmax_cross_entropy_with_grad, logits, targets, **resolved)
    overwritten = logits.copy()
    loss_in_place, written = _call(
        path, ce.softmax_cross_entropy_with_grad, overwritten, targets, out=overwritten, **resolved
    )
    assert written is overwritten
    # In place the kernels sum the smoothing term in another order: equal within the dtype.
    assert_close(loss_in_place, loss, dtype)
    assert_close(overwritten, fresh, dtype)
    if path == "generic" or "label_smoothing" not in options:
        np.testing.assert_array_equal(overwritten, fresh)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize(
    "options", SIGMOID_OPTIONS, ids=lambda o: "+".join(f"{k}={v}" for k, v in o.items()) or "plain"
)
def test_sigmoid_gradient_over_the_logits_in_any_dtype(options, dtype, path):
    logits, targets = _inputs("sigmoid", dtype)
    resolved = _resolve(options, logits.shape[-1], dtype)
    loss, fresh = _call(path, ce.sigmoid_cross_entropy_with_grad, logits, targets, **resolved)
    overwritten = logits.copy()
    loss_in_place, written = _call(
        path, ce.sigmoid_cross_entropy_with_grad, overwritten, targets, out=overwritten, **resolved
    )
    assert written is overwritten
    np.testing.assert_array_equal(overwritten, fresh)  # elementwise: the same arithmetic, bitwise
    assert_close(loss_in_place, loss, dtype)


def test_a_view_of_the_logits_memory_counts_as_the_logits():
    logits, targets = _inputs("softmax", np.float32, (4, 50))
    _, fresh = ce.softmax_cross_entropy_with_grad(logits, targets)
    view = logits[...]
    _, written = ce.softmax_cross_entropy_with_grad(logits, targets, out=view)
    assert written is view
    np.testing.assert_array_equal(logits, fresh)


@pytest.mark.parametrize("path", PATHS)
def test_class_axis_other_than_the_last_keeps_the_callers_layout(path):
    logits = RNG.standard_normal((3, 7, 4, 5)).astype(np.float32)  # (N, C, d1, d2)
    targets = RNG.integers(0, 7, (3, 4, 5))
    options = {"axis": 1, "label_smoothing": 0.1}
    _, fresh = _call(path, ce.softmax_cross_entropy_with_grad, logits, targets, **options)
    out = np.full_like(logits, np.nan)
    _, written = _call(path, ce.softmax_cross_entropy_with_grad, logits, targets, out=out, **options)
    assert written is out
    np.testing.assert_array_equal(out, fresh)
    with pytest.raises(ValueError, match="needs writeable C-contiguous logits, with the class axis last"):
        _call(path, ce.softmax_cross_entropy_with_grad, logits, targets, out=logits, **options)


@pytest.mark.parametrize("kind", ["softmax", "sigmoid"])
@pytest.mark.parametrize("torch_dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("path", PATHS)
def test_torch_tensors_as_out(kind, torch_dtype, path):
    logits, targets = _inputs(kind, np.float32, (5, 300))
    x = torch.from_numpy(logits).to(torch_dtype)
    t = torch.from_numpy(targets).to(torch_dtype if kind == "sigmoid" else torch.int64)
    loss, fresh = _call(path, FUNCTIONS[kind], x, t)
    out = torch.full_like(x, float("nan"))
    loss_out, written = _call(path, FUNCTIONS[kind], x, t, out=out)
    assert written is out
    assert torch.equal(out, fresh)
    assert torch.equal(loss_out, loss)
    if kind == "softmax" and torch_dtype in (torch.float16, torch.bfloat16):
        return  # the softmax overwrites float32/float64 logits only
    overwritten = x.clone()
    _, written = _call(path, FUNCTIONS[kind], overwritten, t, out=overwritten)
    assert written is overwritten
    assert_close(overwritten, fresh, torch_dtype)


def test_torch_out_refuses_autograd_as_pytorch_does():
    logits = torch.randn(4, 6, requires_grad=True)
    with pytest.raises(ValueError, match=r"`out` takes no part in autograd.*logits requiring grad"):
        ce.softmax_cross_entropy_with_grad(logits, torch.tensor([0, 1, 2, 3]), out=torch.empty(4, 6))
    with torch.no_grad():
        _, grad = ce.softmax_cross_entropy_with_grad(logits, torch.tensor([0, 1, 2, 3]), out=torch.empty(4, 6))
    assert torch.isfinite(grad).all()
    out = torch.empty(4, 6, requires_grad=True)
    with pytest.raises(ValueError, match="out requiring grad"):
        ce.sigmoid_cross_entropy_with_grad(torch.randn(4, 6), torch.rand(4, 6), out=out)


def test_array_api_strict_takes_the_gradient_by_copy():
    logits, targets = _inputs("softmax", np.float64, (4, 9))
    x, t = array_api_strict.asarray(logits), array_api_strict.asarray(targets)
    _, fresh = ce.softmax_cross_entropy_with_grad(x, t)
    out = array_api_strict.zeros((4, 9), dtype=array_api_strict.float64)
    _, written = ce.softmax_cross_entropy_with_grad(x, t, out=out)
    assert written is out
    np.testing.assert_array_equal(np.asarray(out), np.asarray(fresh))
    with pytest.raises(TypeError, match=r"`out` must be an array of the logits' kind \(Array\); got ndarray"):
        ce.softmax_cross_entropy_with_grad(x, t, out=np.empty((4, 9)))


def test_jax_arrays_are_refused_as_immutable():
    jnp = pytest.importorskip("jax.numpy")
    x = jnp.zeros((2, 3))
    with pytest.raises(TypeError, match="JAX arrays are immutable"):
        ce.softmax_cross_entropy_with_grad(x, jnp.array([0, 1]), out=jnp.zeros((2, 3)))


def _read_only(shape, dtype):
    a = np.zeros(shape, dtype)
    a.flags.writeable = False
    return a


@pytest.mark.parametrize("kind", ["softmax", "sigmoid"])
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(
    ("make_out", "error", "message"),
    [
        (
            lambda x: np.empty((*x.shape[:-1], x.shape[-1] + 1), x.dtype),
            ValueError,
            r"logits' shape \(4, 9\) .*got shape \(4, 10\)",
        ),
        (lambda x: np.empty(x.shape, np.float64), ValueError, r"dtype float32; got shape \(4, 9\) and dtype float64"),
        (lambda x: np.empty(x.shape[::-1], x.dtype).T, ValueError, r"`out` must be C-contiguous .*got strides"),
        (lambda x: _read_only(x.shape, x.dtype), ValueError, r"`out` must be writeable; got a read-only ndarray"),
        (lambda x: [[0.0] * 9] * 4, TypeError, r"`out` must be an array of the logits' kind \(ndarray\); got list"),
        (lambda x: torch.empty(4, 9), TypeError, r"`out` must be an array of the logits' kind \(ndarray\); got Tensor"),
    ],
    ids=["shape", "dtype", "not-contiguous", "read-only", "list", "other-library"],
)
def test_a_bad_out_is_refused(kind, path, make_out, error, message):
    logits, targets = _inputs(kind, np.float32, (4, 9))
    with pytest.raises(error, match=message):
        _call(path, FUNCTIONS[kind], logits, targets, out=make_out(logits))


@pytest.mark.parametrize("kind", ["softmax", "sigmoid"])
@pytest.mark.parametrize("path", PATHS)
def test_out_overlapping_the_logits_but_not_them_is_refused(kind, path):
    storage = RNG.standard_normal(5 * 9).astype(np.float32)
    logits, shifted = storage[: 4 * 9].reshape(4, 9), storage[9:].reshape(4, 9)
    targets = _inputs(kind, np.float32, (4, 9))[1]
    before = storage.copy()
    with pytest.raises(ValueError, match="`out` must not overlap `logits` unless it is `logits` itself"):
        _call(path, FUNCTIONS[kind], logits, targets, out=shifted)
    np.testing.assert_array_equal(storage, before)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"softcap": 5.0}, "cannot be used with `softcap`, which reads the logits twice"),
        ({"label_smoothing": 0.1, "weight": np.ones(9, np.float32)}, "cannot be used with label smoothing with class"),
        ({"probs": True}, "needs class-index targets, not probabilities"),
        ({"dtype": np.float16}, "needs float32 or float64 logits; got float16"),
        ({"read_only": True}, "needs writeable C-contiguous logits"),
    ],
    ids=["softcap", "weighted-smoothing", "probabilities", "float16", "read-only"],
)
def test_softmax_in_place_rules_are_the_same_on_every_path(path, options, message):
    options = dict(options)
    logits, targets = _inputs("softmax", options.pop("dtype", np.float32), (4, 9))
    if options.pop("probs", False):
        targets = ce.softmax(RNG.standard_normal((4, 9))).astype(np.float32)
    if options.pop("read_only", False):
        logits.flags.writeable = False
    before = logits.copy()
    with pytest.raises(ValueError, match=f"writing the gradient over the logits .*{message}"):
        _call(path, ce.softmax_cross_entropy_with_grad, logits, targets, out=logits, **options)
    np.testing.assert_array_equal(logits, before)


@pytest.mark.parametrize("path", PATHS)
def test_sigmoid_in_place_needs_writeable_contiguous_logits(path):
    logits = np.asfortranarray(RNG.standard_normal((4, 9)).astype(np.float32))
    with pytest.raises(ValueError, match="needs writeable C-contiguous logits"):
        _call(path, ce.sigmoid_cross_entropy_with_grad, logits, np.zeros((4, 9), np.float32), out=logits)


@pytest.mark.parametrize("path", PATHS)
def test_in_place_means_whose_sums_overflow(path):
    """In place the logits are gone once read: the sigmoid mean sums the scaled losses in the same pass."""
    big = float(np.float32(3e38))
    logits = np.full(3 * 8192 + 4, big, np.float32)
    logits[:2] = -big
    targets = np.ones_like(logits)
    grad = np.zeros(logits.shape)
    grad[:2] = -1.0 / logits.size
    loss, written = _call(path, ce.sigmoid_cross_entropy_with_grad, logits, targets, out=logits)
    assert written is logits
    assert_close(loss, np.asarray(big * (2 / logits.size)), np.float32)
    assert_close(logits, grad, np.float32)
    smoothed = np.full((1, 3 * BLOCK + 5), -big, np.float32)
    smoothed[0, 2 * BLOCK + 1] = big
    loss, _ = _call(
        path, ce.softmax_cross_entropy_with_grad, smoothed, np.array([2 * BLOCK + 1]), label_smoothing=0.1, out=smoothed
    )
    n_classes = smoothed.shape[1]
    assert_close(loss, np.asarray(0.1 / n_classes * (n_classes - 1) * 2 * big), np.float32)


def test_the_rules_are_documented():
    for function in FUNCTIONS.values():
        doc = function.__doc__
        assert "out : array of the logits' shape and dtype, optional" in doc
        assert "``out=logits``" in doc
    assert "class-index targets" in ce.softmax_cross_entropy_with_grad.__doc__
    assert tolerance(np.float32)  # the shared tolerances are in use here


def test_nested_lists_as_logits_take_an_ndarray_out():
    for function, targets, shape in (
        (ce.softmax_cross_entropy_with_grad, [1], (1, 2)),
        (ce.sigmoid_cross_entropy_with_grad, [[1.0, 0.0]], (1, 2)),
    ):
        out = np.empty(shape)
        _, written = function([[0.0, 0.0]], targets, out=out)
        assert written is out
        np.testing.assert_array_equal(out, function(np.zeros(shape), np.asarray(targets))[1])
