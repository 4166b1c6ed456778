"""Every kernel backend against the reference path, through the public functions, and the registry's switches.

The same option grid as ``test_kernels.py`` and ``test_kernels_sigmoid.py`` runs on each backend
where it can run: the Numba backend on NumPy arrays and CPU tensors, the Triton backend on CUDA
tensors, or on CPU tensors under ``TRITON_INTERPRET=1`` (which ``conftest.py`` sets when there is
no GPU). Each case checks that the forced backend really computed (a spy on its entry points),
so a backend that silently fell back to the reference could not pass.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

import crossentropy as ce
from crossentropy import kernels
from tests._support import NEEDS_CUDA, NEEDS_TRITON_ON_CPU, TRITON_INSTALLED, record_entry_calls, tolerance
from tests.kernels import test_kernels, test_kernels_sigmoid

RNG = np.random.default_rng(53)
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
# (backend, device) pairs, each skipped with its reason where it cannot run.
TARGETS = [
    pytest.param("numba", "cpu", id="numba-cpu"),
    pytest.param("triton", "cpu", id="triton-cpu", marks=NEEDS_TRITON_ON_CPU),
    pytest.param("triton", "cuda", id="triton-cuda", marks=NEEDS_CUDA),
]
# The option grids of the Numba backend's own tests, the same for every backend.
SOFTMAX_OPTIONS = test_kernels.OPTIONS
SIGMOID_OPTIONS = test_kernels_sigmoid.OPTIONS
DTYPES = [torch.float32, torch.float64]


def _ids(options: dict) -> str:
    return "+".join(f"{k}={v}" for k, v in options.items()) or "plain"


def _tensor(values: np.ndarray, dtype, device: str) -> torch.Tensor:
    return torch.as_tensor(values).to(device=device, dtype=dtype)


@pytest.fixture
def entry_calls(monkeypatch):
    """The names of the backends whose entry points ran, in order (a spy on each backend's module)."""
    calls = []
    for chosen in kernels.BACKENDS:
        if chosen.installed():
            record_entry_calls(monkeypatch, chosen.load(), calls, chosen.name)
    return calls


def _assert_close(got, want, dtype, what: str) -> None:
    got = got if isinstance(got, tuple) else (got,)
    want = want if isinstance(want, tuple) else (want,)
    for a, b in zip(got, want, strict=True):
        assert (a.dtype, a.shape, a.device) == (b.dtype, b.shape, b.device), what
        np.testing.assert_allclose(a.cpu().numpy(), b.cpu().numpy(), **tolerance(dtype), err_msg=what)


def _assert_backend_matches_reference(backend, losses, arrays, options, dtype, entry_calls) -> None:
    """``losses`` (the loss and its ``_with_grad`` twin) on ``backend`` equal the reference, for every reduction,
    and ran on that backend."""
    loss, loss_with_grad = losses
    for reduction in ("mean", "sum", "none"):
        what = f"{backend} {loss.__name__} {options} {reduction}"
        with kernels.disabled():
            reference = loss_with_grad(*arrays, reduction=reduction, **options)
        entry_calls.clear()
        with kernels.backend(backend):
            fused = loss_with_grad(*arrays, reduction=reduction, **options)
            forward = loss(*arrays, reduction=reduction, **options)
        assert entry_calls == [backend, backend], what
        _assert_close(fused, reference, dtype, what)
        _assert_close(forward, reference[0], dtype, what + " (forward only)")


@pytest.mark.parametrize(("backend", "device"), TARGETS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("n_classes", [3, 700])
@pytest.mark.parametrize("targets_kind", ["index", "probs"])
@pytest.mark.parametrize("options", SOFTMAX_OPTIONS, ids=_ids)
def test_softmax_backend_matches_reference(backend, device, dtype, n_classes, targets_kind, options, entry_calls):
    n_rows = 5
    logits = _tensor(RNG.standard_normal((n_rows, n_classes)) * 3, dtype, device)
    if targets_kind == "index":
        indices = RNG.integers(0, n_classes, n_rows)
        indices[2] = -100
        targets = torch.as_tensor(indices, device=device)
    else:
        targets = _tensor(np.asarray(ce.softmax(RNG.standard_normal((n_rows, n_classes)))), dtype, device)
    resolved = dict(options)
    if options.get("weight") == "class":
        resolved["weight"] = _tensor(RNG.uniform(0.2, 2.0, n_classes), dtype, device)
    if options.get("sample_weight") == "sample":
        resolved["sample_weight"] = _tensor(RNG.uniform(0.0, 2.0, n_rows), dtype, device)
    losses = (ce.softmax_cross_entropy, ce.softmax_cross_entropy_with_grad)
    _assert_backend_matches_reference(backend, losses, (logits, targets), resolved, dtype, entry_calls)


@pytest.mark.parametrize(("backend", "device"), TARGETS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(7,), (4, 3), (2, 3, 5)], ids=str)
@pytest.mark.parametrize("options", SIGMOID_OPTIONS, ids=_ids)
def test_sigmoid_backend_matches_reference(backend, device, dtype, shape, options, entry_calls):
    logits = _tensor(RNG.standard_normal(shape) * 4, dtype, device)
    targets = _tensor(RNG.uniform(0, 1, shape), dtype, device)
    layouts = {"scalar": (), "class": shape[-1:], "full": shape, "leading": shape[:1], "every": shape}
    resolved = dict(options)
    for name in ("weight", "pos_weight", "sample_weight"):
        if name in options:
            resolved[name] = _tensor(RNG.uniform(0.2, 2.0, layouts[options[name]]), dtype, device)
    losses = (ce.sigmoid_cross_entropy, ce.sigmoid_cross_entropy_with_grad)
    _assert_backend_matches_reference(backend, losses, (logits, targets), resolved, dtype, entry_calls)


@pytest.mark.parametrize(("backend", "device"), TARGETS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_half_precision_on_every_backend_matches_float32_of_the_same_values(backend, device, dtype, entry_calls):
    logits = _tensor(RNG.standard_normal((6, 50)) * 3, dtype, device)
    targets = torch.as_tensor(RNG.integers(0, 50, 6), device=device)
    with kernels.backend(backend):
        loss, grad = ce.softmax_cross_entropy_with_grad(logits, targets, label_smoothing=0.1)
    assert entry_calls == [backend]
    assert loss.dtype == grad.dtype == dtype
    with kernels.disabled():
        want_loss, want_grad = ce.softmax_cross_entropy_with_grad(logits.float(), targets, label_smoothing=0.1)
    np.testing.assert_allclose(float(loss), float(want_loss), **tolerance(dtype))
    np.testing.assert_allclose(grad.float().cpu().numpy(), want_grad.cpu().numpy(), **tolerance(dtype))


# --------------------------------------------------------------------------------------------
# The registry's switches


def test_auto_picks_numba_for_host_arrays():
    x = np.zeros((2, 3), np.float32)
    assert kernels.select(np, x).name == "numba"
    assert kernels.for_torch(torch.zeros(2, 3)).name == "numba"
    assert kernels.select(np, np.zeros((2, 3), np.int64)) is None  # no backend reads integer logits


@pytest.mark.skipif(not (TRITON_INSTALLED and INTERPRETED), reason="needs triton and TRITON_INTERPRET=1")
def test_a_forced_backend_is_the_only_one_considered():
    cpu_tensor, array = torch.zeros(2, 3), np.zeros((2, 3), np.float32)
    with kernels.backend("triton"):
        assert kernels.for_torch(cpu_tensor).name == "triton"
        assert kernels.select(np, array) is None  # Triton takes no NumPy array: the reference computes
    with kernels.backend("numba"):
        assert kernels.for_torch(cpu_tensor).name == "numba"
    with kernels.backend("reference"):
        assert kernels.for_torch(cpu_tensor) is None
        assert not kernels.enabled()
    assert kernels.for_torch(cpu_tensor).name == "numba"  # scoped


def test_the_environment_variable_forces_a_backend(monkeypatch):
    x = np.zeros((2, 3), np.float32)
    monkeypatch.setenv("CROSSENTROPY_KERNELS", "reference")
    assert kernels.select(np, x) is None
    assert not kernels.enabled()
    with kernels.backend("auto"):  # the context manager takes precedence
        assert kernels.select(np, x).name == "numba"
    monkeypatch.setenv("CROSSENTROPY_KERNELS", "Numba ")
    assert kernels.select(np, x).name == "numba"
    monkeypatch.setenv("CROSSENTROPY_KERNELS", "cuda")
    with pytest.raises(ValueError, match=r"`CROSSENTROPY_KERNELS` must be one of 'auto', 'numba', .*; got 'cuda'"):
        ce.softmax_cross_entropy(x, np.array([0, 1]))


def test_an_unknown_backend_name_is_refused():
    message = r"`name` must be one of 'auto', 'numba', 'triton', 'reference'; got 'cuda'"
    with pytest.raises(ValueError, match=message), kernels.backend("cuda"):
        pass


def test_a_forced_backend_that_cannot_run_is_an_error(monkeypatch):
    monkeypatch.setattr(kernels, "_TRITON_SPEC", [False])  # as without the triton package
    with (
        pytest.raises(
            RuntimeError, match=r"kernels.backend\('triton'\) chose the 'triton' backend, which needs the triton"
        ),
        kernels.backend("triton"),
    ):
        pass
    monkeypatch.setenv("CROSSENTROPY_KERNELS", "triton")
    with pytest.raises(RuntimeError, match="`CROSSENTROPY_KERNELS=triton` chose the 'triton' backend"):
        ce.softmax_cross_entropy(np.zeros((2, 3)), np.array([0, 1]))
    monkeypatch.delenv("CROSSENTROPY_KERNELS")
    assert kernels.for_torch(torch.zeros(2, 3)).name == "numba"  # auto simply skips it


def test_tracked_and_transformed_tensors_never_reach_a_backend_from_the_core():
    x = torch.zeros(2, 3, requires_grad=True)
    assert kernels.select(torch, x) is None
    assert kernels.for_torch(x).name == "numba"  # the torch layer wraps the kernels in its own autograd
    with torch.no_grad():
        assert kernels.select(torch, x).name == "numba"
    seen = []
    torch.func.vmap(lambda row: seen.append(kernels.for_torch(row)) or row)(torch.zeros(2, 3))
    assert seen == [None]
