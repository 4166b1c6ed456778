"""Every public function, one implementation, on every array library at hand.

The same call runs on NumPy (the reference), PyTorch, ``array_api_strict`` (the standard's
reference namespace, which rejects anything outside the standard, so it catches NumPy-only idioms)
and JAX when installed. Each must return arrays of the library it was given, with the same
values as NumPy in float64.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import array_api_compat
import numpy as np
import pytest

import crossentropy as ce

rng = np.random.default_rng(20261122)
N, C = 7, 4
LOGITS = rng.normal(size=(N, C)) * 2.0
LOGITS_3D = rng.normal(size=(2, 5, C))
PROBS = ce.softmax(LOGITS)
PROBS_Q = ce.softmax(rng.normal(size=(N, C)))
LABELS = np.array([0, 1, 2, 3, 1, -100, 2])
LABELS_FULL = np.array([0, 1, 2, 3, 1, 0, 2])
BINARY = (rng.random(size=(N, C)) < 0.4).astype(np.float64)
BINARY_1D = np.array([1, 0, 1, 1, 0, 0, 1])
PROB_1D = rng.uniform(0.05, 0.95, size=N)
SOFT_TARGETS = ce.softmax(rng.normal(size=(N, C)))
CLASS_WEIGHT = np.array([1.0, 2.0, 0.5, 1.5])
SAMPLE_WEIGHT = rng.uniform(0.5, 2.0, size=N)
TRANSITION = np.full((C, C), 0.1 / (C - 1)) + np.eye(C) * (0.9 - 0.1 / (C - 1))
GROUPS = np.array([0, 1, 0, 1, 1, 0, 0])


class Case(NamedTuple):
    name: str
    function: Callable[..., Any]
    arrays: tuple  # positional arrays (NumPy); converted per backend
    options: dict  # keyword options; arrays among them are converted too


CASES = [
    Case("entropy", ce.entropy, (PROBS,), {"base": 2}),
    Case("cross_entropy", ce.cross_entropy, (PROBS, PROBS_Q), {}),
    Case("kl_divergence", ce.kl_divergence, (PROBS, PROBS_Q), {}),
    Case("js_divergence", ce.js_divergence, (PROBS, PROBS_Q), {"base": 2}),
    Case("decompose", ce.decompose, (PROBS, PROBS_Q), {}),
    Case("logsumexp", ce.logsumexp, (LOGITS,), {"keepdims": True}),
    Case("log_softmax", ce.log_softmax, (LOGITS_3D,), {"axis": 1}),
    Case("softmax", ce.softmax, (LOGITS,), {}),
    Case("log_sigmoid", ce.log_sigmoid, (LOGITS,), {}),
    Case(
        "softmax_cross_entropy",
        ce.softmax_cross_entropy,
        (LOGITS, LABELS),
        {"weight": CLASS_WEIGHT, "label_smoothing": 0.1, "z_loss": 1e-3, "softcap": 5.0},
    ),
    Case("softmax_cross_entropy/soft", ce.softmax_cross_entropy, (LOGITS, SOFT_TARGETS), {"reduction": "none"}),
    Case(
        "softmax_cross_entropy_with_grad",
        ce.softmax_cross_entropy_with_grad,
        (LOGITS, LABELS),
        {
            "weight": CLASS_WEIGHT,
            "label_smoothing": 0.2,
            "z_loss": 1e-2,
            "softcap": 3.0,
            "sample_weight": SAMPLE_WEIGHT,
        },
    ),
    Case(
        "sigmoid_cross_entropy",
        ce.sigmoid_cross_entropy,
        (LOGITS, BINARY),
        {"pos_weight": CLASS_WEIGHT, "label_smoothing": 0.1},
    ),
    Case(
        "sigmoid_cross_entropy_with_grad",
        ce.sigmoid_cross_entropy_with_grad,
        (LOGITS, BINARY),
        {"weight": CLASS_WEIGHT, "pos_weight": CLASS_WEIGHT, "reduction": "sum"},
    ),
    Case("binary_cross_entropy", ce.binary_cross_entropy, (PROBS, BINARY), {"weight": CLASS_WEIGHT}),
    Case("nll_loss", ce.nll_loss, (ce.log_softmax(LOGITS), LABELS), {"weight": CLASS_WEIGHT}),
    Case("softmax_focal_loss", ce.softmax_focal_loss, (LOGITS, LABELS), {"gamma": 2.0, "alpha": CLASS_WEIGHT}),
    Case("sigmoid_focal_loss", ce.sigmoid_focal_loss, (LOGITS, BINARY), {"gamma": 1.5}),
    Case("poly1_cross_entropy", ce.poly1_cross_entropy, (LOGITS, LABELS), {"epsilon": 2.0, "label_smoothing": 0.1}),
    Case("generalized_cross_entropy", ce.generalized_cross_entropy, (LOGITS, LABELS), {"q": 0.5}),
    Case("symmetric_cross_entropy", ce.symmetric_cross_entropy, (LOGITS, LABELS), {}),
    Case("forward_corrected", ce.forward_corrected_cross_entropy, (LOGITS, LABELS, TRANSITION), {}),
    Case("backward_corrected", ce.backward_corrected_cross_entropy, (LOGITS, LABELS, TRANSITION), {}),
    Case("class_weights", ce.class_weights, (LABELS_FULL,), {"num_classes": C, "scheme": "effective_number"}),
    Case("smooth_labels", ce.smooth_labels, (LABELS_FULL,), {"num_classes": C, "smoothing": 0.1}),
    Case("one_hot", ce.one_hot, (LABELS_FULL, C), {}),
    Case("z_loss", ce.z_loss, (LOGITS,), {}),
    Case("neighbor_js_penalty", ce.neighbor_js_penalty, (ce.softmax(LOGITS_3D),), {}),
    Case("demographic_parity_gap", ce.demographic_parity_gap, (PROB_1D, GROUPS), {}),
    Case("log_loss", ce.log_loss, (PROBS, LABELS_FULL), {"sample_weight": SAMPLE_WEIGHT}),
    Case("perplexity", ce.perplexity, (LOGITS, LABELS), {}),
    Case("brier_score", ce.brier_score, (PROBS, LABELS_FULL), {}),
    Case("expected_calibration_error", ce.expected_calibration_error, (PROB_1D, BINARY_1D), {"n_bins": 4}),
    Case("reliability_curve", ce.reliability_curve, (PROB_1D, BINARY_1D), {"n_bins": 4}),
]


def _torch_backend():
    torch = pytest.importorskip("torch")
    return torch.from_numpy, torch.Tensor


def _strict_backend():
    strict = pytest.importorskip("array_api_strict", reason="array-api-strict is not installed")
    return strict.asarray, type(strict.asarray(0.0))


def _jax_backend():
    jax = pytest.importorskip("jax", reason="JAX is optional and not installed")
    jax.config.update("jax_enable_x64", True)
    return jax.numpy.asarray, jax.Array


BACKENDS = {"torch": _torch_backend, "array_api_strict": _strict_backend, "jax": _jax_backend}


def _convert(value: Any, to_array: Callable) -> Any:
    return to_array(value) if isinstance(value, np.ndarray) else value


def _flatten(result: Any) -> list:
    """A result (array or tuple of arrays) as a flat list of arrays."""
    if isinstance(result, tuple):
        return [leaf for item in result for leaf in _flatten(item)]
    return [result]


def _to_numpy(x: Any) -> np.ndarray:
    if array_api_compat.is_torch_array(x):
        return x.detach().numpy()
    if array_api_compat.is_numpy_array(x):
        return x
    return np.from_dlpack(x)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_same_values_and_array_kind_on_every_backend(case, backend):
    to_array, array_type = BACKENDS[backend]()
    expected = _flatten(case.function(*case.arrays, **case.options))
    arrays = [_convert(a, to_array) for a in case.arrays]
    options = {k: _convert(v, to_array) for k, v in case.options.items()}
    actual = _flatten(case.function(*arrays, **options))
    assert len(actual) == len(expected)
    # Functions of integer labels only return the namespace's default floating dtype (float32 in torch).
    from_labels_only = all(np.issubdtype(np.asarray(a).dtype, np.integer) for a in case.arrays)
    for got, want in zip(actual, expected, strict=True):
        assert isinstance(got, array_type), f"{backend} input gave {type(got).__name__}"
        want_dtype = np.asarray(want).dtype
        if from_labels_only:
            xp = array_api_compat.array_namespace(got)
            want_dtype = np.dtype(str(xp.__array_namespace_info__().default_dtypes()["real floating"]).split(".")[-1])
        got = _to_numpy(got)
        assert got.shape == np.shape(want)
        assert got.dtype == want_dtype
        tolerance = 1e-12 if want_dtype == np.float64 else 1e-6
        np.testing.assert_allclose(got, want, rtol=tolerance, atol=tolerance)


def test_jax_jit_and_grad_agree_with_the_analytic_gradient():
    """Under ``jax.jit`` the data checks are skipped (values are tracers) and the math is unchanged."""
    jax = pytest.importorskip("jax", reason="JAX is optional and not installed")
    jax.config.update("jax_enable_x64", True)
    jnp = jax.numpy
    options = {"label_smoothing": 0.1, "z_loss": 1e-3, "softcap": 5.0}
    expected_loss, expected_grad = ce.softmax_cross_entropy_with_grad(LOGITS, LABELS, weight=CLASS_WEIGHT, **options)

    labels, weight = jnp.asarray(LABELS), jnp.asarray(CLASS_WEIGHT)

    def loss(x):
        return ce.softmax_cross_entropy(x, labels, weight=weight, **options)

    logits = jnp.asarray(LOGITS)
    np.testing.assert_allclose(np.asarray(jax.jit(loss)(logits)), expected_loss, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(jax.jit(jax.grad(loss))(logits)), expected_grad, rtol=1e-10, atol=1e-14)
