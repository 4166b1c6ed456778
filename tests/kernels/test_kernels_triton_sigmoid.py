"""The Triton sigmoid cross-entropy kernel against three oracles.

:func:`crossentropy.kernels.triton._sigmoid.sigmoid_cross_entropy_elements` must give, for the
same arguments, what the Numba backend's entry point of the same name gives (its CPU twin), what
the generic array-API path gives (``kernels.disabled()``), and what PyTorch's
``binary_cross_entropy_with_logits`` and its autograd gradient give in float64 (label smoothing
is a change of targets there, sample weights a factor of the weight): for every layout of the
options, every reduction, inputs longer than a block, half precision, ``out=``, in place,
infinite logits, the mean whose plain sum overflows, and scalars given as device tensors.

Each test runs on a device axis: ``"cpu"`` runs the kernels in Triton's interpreter
(``TRITON_INTERPRET=1``, which ``conftest.py`` sets where there is no CUDA GPU), ``"cuda"`` compiles
them for the GPU. The tests of more than 2^31 elements, of host synchronization and of memory
need a GPU.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import crossentropy as ce
from crossentropy import kernels
from crossentropy.kernels import numba as numba_backend
from crossentropy.kernels.triton._sigmoid import BLOCK, BLOCK_FLOAT64, sigmoid_cross_entropy_elements
from tests._support import NEEDS_CUDA, assert_close, triton_devices

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
CUDA = torch.cuda.is_available()
DEVICES = triton_devices()
DTYPES = [torch.float32, torch.float64]
HALF = [torch.float16, torch.bfloat16]
# Longer than a block of either accumulation dtype, the class axis not a divisor of the block.
LARGE = (3, BLOCK // 2 + 76)
SHAPES = [(7,), (5, 3), (4, 3, 6), LARGE]
OPTIONS = [
    {},
    {"weight": "scalar"},
    {"weight": "class"},
    {"weight": "full"},
    {"pos_weight": "class"},
    {"smoothing": 0.2},
    {"sample_weight": "leading"},
    {"weight": "class", "pos_weight": "class", "sample_weight": "leading", "smoothing": 0.1},
]
REDUCTIONS = ["none", "sum", "mean"]


NUMBA = numba_backend  # the oracle: the Numba backend's entry points


def _ids(options: dict) -> str:
    return "+".join(f"{k}={v}" for k, v in options.items()) or "plain"


class Case:
    """Inputs in float64 NumPy (the oracles') and as the kernel takes them, for one shape and option set.

    ``sample_weight`` is the core's form (the leading axis) in :attr:`core`; the kernels take it
    with trailing axes of length 1.
    """

    def __init__(self, shape: tuple[int, ...], options: dict, *, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.shape = shape
        self.smoothing = float(options.get("smoothing", 0.0))
        self.x = rng.standard_normal(shape) * 4
        self.t = rng.uniform(0, 1, shape)
        self.weight = self._option(rng, options.get("weight"), shape)
        self.pos_weight = self._option(rng, options.get("pos_weight"), shape)
        self.sample_weight = None
        if options.get("sample_weight") == "leading":
            self.sample_weight = rng.uniform(0.0, 2.0, shape[:1])

    @staticmethod
    def _option(rng: np.random.Generator, kind: str | None, shape: tuple[int, ...]) -> np.ndarray | None:
        if kind is None:
            return None
        if kind == "scalar":
            return np.asarray(rng.uniform(0.5, 2.0))
        if kind == "class":
            return rng.uniform(0.0, 2.0, shape[-1:])
        return rng.uniform(0.0, 2.0, shape)

    def denominator(self) -> float:
        """What the mean divides by: the number of elements, or the sample weights spread over them."""
        size = math.prod(self.shape)
        if self.sample_weight is None:
            return float(size)
        return size // self.sample_weight.size * float(self.sample_weight.sum())

    def reduction(self, reduction: str) -> dict:
        """The kernel's ``per_element``, ``grad_scale`` and ``denominator`` for ``reduction``."""
        if reduction == "none":
            return {"per_element": True, "grad_scale": 1.0}
        if reduction == "sum":
            return {"per_element": False, "grad_scale": 1.0}
        d = self.denominator()
        return {"per_element": False, "grad_scale": 1.0 / d if d else 0.0, "denominator": d}

    def tensors(self, dtype: torch.dtype, device: str, accumulation: torch.dtype | None = None) -> dict:
        """Logits in ``dtype``, the rest in the accumulation dtype, on ``device``: the kernel's arguments."""
        accumulation = accumulation or (torch.float64 if dtype == torch.float64 else torch.float32)

        def tensor(a):
            return None if a is None else torch.tensor(a, dtype=accumulation, device=device)

        sample = self.sample_weight
        if sample is not None:
            sample = sample.reshape(sample.shape + (1,) * (len(self.shape) - 1))
        return {
            "logits": torch.tensor(self.x, dtype=dtype, device=device),
            "targets": tensor(self.t),
            "weight": tensor(self.weight),
            "pos_weight": tensor(self.pos_weight),
            "sample_weight": tensor(sample),
            "smoothing": self.smoothing,
        }


def _kernel(arguments: dict, **reduction) -> tuple[torch.Tensor, torch.Tensor | None]:
    arguments = dict(arguments)
    return sigmoid_cross_entropy_elements(arguments.pop("logits"), arguments.pop("targets"), **arguments, **reduction)


def _numba(arguments: dict, **reduction) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The Numba backend on CPU copies of the same arguments."""
    host = {k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in arguments.items()}
    return NUMBA.sigmoid_cross_entropy_elements(host.pop("logits"), host.pop("targets"), **host, **reduction)


def _reference(case: Case, logits: torch.Tensor, reduction: str, dtype: torch.dtype) -> tuple[np.ndarray, np.ndarray]:
    """The generic array-API path on NumPy arrays of ``dtype`` (float32 or float64), the same logit values."""
    np_dtype = np.float64 if dtype == torch.float64 else np.float32

    def array(a):
        return None if a is None else np.asarray(a, dtype=np_dtype)

    with kernels.disabled():
        return ce.sigmoid_cross_entropy_with_grad(
            logits.detach().cpu().to(torch.float64).numpy().astype(np_dtype),
            array(case.t),
            weight=array(case.weight),
            pos_weight=array(case.pos_weight),
            label_smoothing=case.smoothing,
            sample_weight=array(case.sample_weight),
            reduction=reduction,
        )


def _torch_oracle(case: Case, logits: torch.Tensor, reduction: str) -> tuple[torch.Tensor, torch.Tensor]:
    """PyTorch's ``binary_cross_entropy_with_logits`` in float64 on the same logit values, and its autograd gradient."""
    x = logits.detach().cpu().to(torch.float64).requires_grad_()
    y = torch.tensor((1 - case.smoothing) * case.t + case.smoothing / 2)
    weight = None if case.weight is None else np.broadcast_to(case.weight, case.shape)
    if case.sample_weight is not None:
        sample = np.broadcast_to(case.sample_weight.reshape((-1,) + (1,) * (len(case.shape) - 1)), case.shape)
        weight = sample if weight is None else weight * sample
    loss = F.binary_cross_entropy_with_logits(
        x,
        y,
        weight=None if weight is None else torch.tensor(weight),
        pos_weight=None if case.pos_weight is None else torch.tensor(case.pos_weight),
        reduction="none" if reduction == "none" else "sum",
    )
    if reduction == "mean":
        loss = loss / case.denominator()
    loss.sum().backward()
    return loss.detach(), x.grad


def _check_kinds(loss, grad, logits, per_element: bool) -> None:
    accumulation = torch.float64 if logits.dtype == torch.float64 else torch.float32
    assert loss.dtype == accumulation
    assert loss.device == logits.device
    assert tuple(loss.shape) == (tuple(logits.shape) if per_element else ())
    if grad is not None:
        assert grad.dtype == logits.dtype
        assert grad.device == logits.device
        assert grad.shape == logits.shape


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("options", OPTIONS, ids=_ids)
def test_matches_numba_reference_and_torch(device, dtype, shape, options):
    case = Case(shape, options)
    arguments = case.tensors(dtype, device)
    for reduction in REDUCTIONS:
        what = f"{shape} {options} {reduction}"
        scales = case.reduction(reduction)
        loss, grad = _kernel(arguments, **scales)
        _check_kinds(loss, grad, arguments["logits"], scales["per_element"])
        numba_loss, numba_grad = _numba(arguments, **scales)
        assert_close(loss, numba_loss, dtype, err_msg=f"{what}: loss against Numba")
        assert_close(grad, numba_grad, dtype, err_msg=f"{what}: gradient against Numba")
        reference_loss, reference_grad = _reference(case, arguments["logits"], reduction, dtype)
        assert_close(loss, reference_loss, dtype, err_msg=f"{what}: loss against the reference")
        assert_close(grad, reference_grad, dtype, err_msg=f"{what}: gradient against the reference")
        torch_loss, torch_grad = _torch_oracle(case, arguments["logits"], reduction)
        assert_close(loss, torch_loss, dtype, err_msg=f"{what}: loss against PyTorch")
        assert_close(grad, torch_grad, dtype, err_msg=f"{what}: gradient against PyTorch")
        forward, none = _kernel(arguments, **{**scales, "grad_scale": None})
        assert none is None
        assert_close(forward, numba_loss, dtype, err_msg=f"{what}: forward-only loss against Numba")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", HALF, ids=str)
@pytest.mark.parametrize("shape", [(5, 3), LARGE], ids=str)
@pytest.mark.parametrize("options", [OPTIONS[0], OPTIONS[-1]], ids=_ids)
def test_half_precision_matches_float32_on_the_rounded_logits(device, dtype, shape, options):
    """Half logits are read as stored and accumulated in float32: the losses are those of the float32
    kernel on the same (rounded) values to float32's tolerance; the gradient, rounded once to half
    precision, is the float32 gradient to the half dtype's tolerance."""
    case = Case(shape, options)
    half = case.tensors(dtype, device)
    single = {**half, "logits": half["logits"].to(torch.float32)}
    for reduction in REDUCTIONS:
        what = f"{dtype} {shape} {options} {reduction}"
        scales = case.reduction(reduction)
        loss, grad = _kernel(half, **scales)
        _check_kinds(loss, grad, half["logits"], scales["per_element"])
        numba_loss, numba_grad = _numba(single, **scales)
        assert_close(loss, numba_loss, torch.float32, err_msg=f"{what}: loss against float32 Numba")
        assert_close(grad, numba_grad, dtype, err_msg=f"{what}: gradient against float32 Numba")
        reference_loss, reference_grad = _reference(case, half["logits"], reduction, torch.float32)
        assert_close(loss, reference_loss, torch.float32, err_msg=f"{what}: loss against the reference")
        assert_close(grad, reference_grad, dtype, err_msg=f"{what}: gradient against the reference")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [*DTYPES, *HALF], ids=str)
def test_out_receives_the_gradient(device, dtype):
    case = Case(LARGE, OPTIONS[-1])
    arguments = case.tensors(dtype, device)
    scales = case.reduction("mean")
    out = torch.full(LARGE, float("nan"), dtype=dtype, device=device)
    loss, grad = _kernel(arguments, **scales, out=out)
    assert grad is out
    expected_loss, expected_grad = _kernel(arguments, **scales)
    torch.testing.assert_close(out, expected_grad, rtol=0, atol=0)
    torch.testing.assert_close(loss, expected_loss, rtol=0, atol=0)
    single = {**arguments, "logits": arguments["logits"].to(torch.float32)} if dtype in HALF else arguments
    assert_close(out, _numba(single, **scales)[1], dtype, err_msg="out= against Numba")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [*DTYPES, *HALF], ids=str)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_gradient_overwrites_the_logits_in_place(device, dtype, reduction):
    case = Case(LARGE, OPTIONS[-1])
    arguments = case.tensors(dtype, device)
    scales = case.reduction(reduction)
    expected_loss, expected_grad = _kernel(arguments, **scales)  # on the logits before they are overwritten
    single = {**arguments, "logits": arguments["logits"].to(torch.float32)} if dtype in HALF else arguments
    numba_loss, numba_grad = _numba(single, **scales)
    logits = arguments["logits"]
    address = logits.data_ptr()
    loss, grad = _kernel(arguments, **scales, out=logits)
    assert grad is logits
    assert logits.data_ptr() == address
    torch.testing.assert_close(logits, expected_grad, rtol=0, atol=0)
    torch.testing.assert_close(loss, expected_loss, rtol=0, atol=0)
    accumulation = torch.float64 if dtype == torch.float64 else torch.float32
    assert_close(loss, numba_loss, accumulation, err_msg="in place: loss against Numba")
    assert_close(logits, numba_grad, dtype, err_msg="in place: gradient against Numba")


@pytest.mark.parametrize("device", DEVICES)
def test_in_place_needs_contiguous_logits(device):
    logits = torch.randn(6, 5, device=device).t()  # a transposed view: not contiguous
    targets = torch.rand(5, 6, device=device)
    options = {"weight": None, "pos_weight": None, "sample_weight": None, "smoothing": 0.0}
    with pytest.raises(ValueError, match=r"`out=logits`\) needs contiguous logits"):
        sigmoid_cross_entropy_elements(logits, targets, **options, grad_scale=1.0, per_element=True, out=logits)
    # Without out=, non-contiguous logits are read through a contiguous copy.
    loss, grad = sigmoid_cross_entropy_elements(logits, targets, **options, grad_scale=1.0, per_element=True)
    assert_close(loss, _numba({"logits": logits, "targets": targets, **options}, grad_scale=1.0, per_element=True)[0],
                 torch.float32)  # fmt: skip
    assert_close(grad, torch.sigmoid(logits) - targets, torch.float32)


@pytest.mark.parametrize("device", DEVICES)
def test_out_must_fit(device):
    logits = torch.randn(4, 6, device=device)
    targets = torch.rand(4, 6, device=device)
    options = {"weight": None, "pos_weight": None, "sample_weight": None, "smoothing": 0.0}

    def call(out):
        return sigmoid_cross_entropy_elements(logits, targets, **options, grad_scale=1.0, per_element=False, out=out)

    with pytest.raises(ValueError, match=r"`out` must be a tensor of the logits' shape \(4, 6\), dtype torch.float32"):
        call(torch.empty(4, 5, device=device))
    with pytest.raises(ValueError, match=r"got shape \(4, 6\), dtype torch\.float64"):
        call(torch.empty(4, 6, dtype=torch.float64, device=device))
    with pytest.raises(ValueError, match="`out` must be contiguous"):
        call(torch.empty(6, 4, device=device).t())
    with pytest.raises(TypeError, match=r"`out` must be a torch\.Tensor; got ndarray"):
        call(np.empty((4, 6), dtype=np.float32))
    storage = torch.randn(25, device=device)
    with pytest.raises(ValueError, match="`out` must not overlap `logits`"):
        sigmoid_cross_entropy_elements(
            storage[:24].view(4, 6), targets, **options, grad_scale=1.0, per_element=False, out=storage[1:].view(4, 6)
        )


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_extreme_and_infinite_logits(device, dtype):
    inf, nan = float("inf"), float("nan")
    logits = torch.tensor([1e4, -1e4, inf, -inf, inf, -inf, 0.0, 88.0, -104.0, nan, 30.0], dtype=dtype, device=device)
    targets = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.5, 0.0, 1.0, 1.0, 1.0], dtype=dtype, device=device)
    options = {"weight": None, "pos_weight": None, "sample_weight": None, "smoothing": 0.0}
    loss, grad = sigmoid_cross_entropy_elements(logits, targets, **options, grad_scale=1.0, per_element=True)
    with kernels.disabled():
        reference_loss, reference_grad = ce.sigmoid_cross_entropy_with_grad(
            logits.cpu().numpy(), targets.cpu().numpy(), reduction="none"
        )
    assert_close(loss, reference_loss, dtype, err_msg="extreme logits: loss against the reference")
    assert_close(grad, reference_grad, dtype, err_msg="extreme logits: gradient against the reference")
    loss, grad = loss.cpu(), grad.cpu()
    # Confident and right costs nothing; confident and wrong costs |x|, or infinity at an infinite logit.
    assert loss[:4].tolist() == [0.0, 0.0, 0.0, 0.0]
    assert loss[4].item() == inf
    assert loss[5].item() == inf
    assert grad[[2, 3]].tolist() == [0.0, 0.0]
    assert grad[[4, 5]].tolist() == [1.0, -1.0]
    assert_close(loss[[6, 7, 8]], [math.log(2.0), 88.0, 104.0], dtype)
    assert math.isnan(loss[9].item())
    assert math.isnan(grad[9].item())
    assert_close(loss[10], math.exp(-30.0), dtype)  # ln(1 + e^-30): the log1p form keeps it
    assert_close(grad[10], -math.exp(-30.0) / (1 + math.exp(-30.0)), dtype)
    # A zero weight silences an infinite loss (0 * inf = 0), and the NaN stays in its own element.
    weight = torch.ones_like(logits)
    weight[[4, 5, 9]] = 0.0
    total, _ = sigmoid_cross_entropy_elements(
        logits, targets, **{**options, "weight": weight}, grad_scale=None, per_element=False
    )
    expected = math.log(2.0) + 88.0 + 104.0 + math.exp(-30.0)
    assert_close(total, expected, dtype)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("tensor_denominator", [False, True], ids=["number", "tensor"])
def test_mean_whose_sum_overflows(device, tensor_denominator):
    """float32 losses of 3e37 each: their sum passes the largest float32 (3.4e38), in every block
    too, while their mean is 3e37 (Σ ℓ/D instead of (Σ ℓ)/D); a zero denominator gives 0."""
    n = 3 * BLOCK // 2
    logits = torch.full((n,), -3e37, device=device)
    targets = torch.ones(n, device=device)
    options = {"weight": None, "pos_weight": None, "sample_weight": None, "smoothing": 0.0}

    def denominator(value):
        return torch.tensor(value, device=device) if tensor_denominator else value

    total, _ = sigmoid_cross_entropy_elements(logits, targets, **options, grad_scale=None, per_element=False)
    assert total.item() == float("inf")
    mean, grad = sigmoid_cross_entropy_elements(
        logits, targets, **options, grad_scale=1.0 / n, per_element=False, denominator=denominator(float(n))
    )
    assert_close(mean, 3e37, torch.float32)
    assert_close(grad, torch.full((n,), -1.0 / n), torch.float32)
    numba_mean, _ = _numba({"logits": logits, "targets": targets, **options}, grad_scale=None, per_element=False,
                           denominator=float(n))  # fmt: skip
    assert_close(mean, numba_mean, torch.float32)
    # A mean that overflows too (finite losses of 3e38, D = 1) is infinite; a zero denominator gives 0.
    twice, _ = sigmoid_cross_entropy_elements(
        logits * 10, targets, **options, grad_scale=None, per_element=False, denominator=denominator(1.0)
    )
    assert twice.item() == float("inf")
    empty, _ = sigmoid_cross_entropy_elements(
        logits, targets, **options, grad_scale=None, per_element=False, denominator=denominator(0.0)
    )
    assert empty.item() == 0.0
    # An infinite loss keeps the mean infinite.
    logits[5] = -float("inf")
    infinite, _ = sigmoid_cross_entropy_elements(
        logits, targets, **options, grad_scale=None, per_element=False, denominator=denominator(float(n))
    )
    assert infinite.item() == float("inf")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_grad_scale_and_denominator_as_device_tensors(device, dtype):
    case = Case(LARGE, OPTIONS[-1])
    arguments = case.tensors(dtype, device)
    scales = case.reduction("mean")
    expected_loss, expected_grad = _kernel(arguments, **scales)
    # Tensors of the accumulation dtype, of another dtype, 0-d and of one element.
    for tensor_dtype, shape in ((dtype, ()), (torch.float64, (1,)), (torch.float32, ())):
        what = f"{tensor_dtype} {shape}"
        grad_scale = torch.full(shape, scales["grad_scale"], dtype=tensor_dtype, device=device)
        denominator = torch.full(shape, scales["denominator"], dtype=tensor_dtype, device=device)
        loss, grad = _kernel(arguments, per_element=False, grad_scale=grad_scale, denominator=denominator)
        tensor_tolerance = torch.float32 if torch.float32 in (dtype, tensor_dtype) else dtype
        assert_close(loss, expected_loss, tensor_tolerance, err_msg=what)
        assert_close(grad, expected_grad, tensor_tolerance, err_msg=what)
        _check_kinds(loss, grad, arguments["logits"], False)
    # A zero denominator: the mean is 0 and, with a zero scale, so is the gradient.
    zero = torch.zeros((), dtype=dtype, device=device)
    loss, grad = _kernel(arguments, per_element=False, grad_scale=zero, denominator=zero)
    assert loss.item() == 0.0
    assert not grad.any()


# Layouts of an option over logits of shape (4, 3, 6): how the kernel receives it, from a full array.
LAYOUTS = {
    "scalar-0d": lambda full: full[0, 0, 0],
    "one-element": lambda full: full[:1, :1, :1],
    "class": lambda full: full[0, 0, :],
    "class-with-leading-ones": lambda full: full[:1, :1, :],
    "class-with-extra-axis": lambda full: full[0, 0, :].reshape(1, 1, 1, 6),
    "row": lambda full: full[:, :, :1],
    "leading": lambda full: full[:, :1, :1],
    "middle": lambda full: full[:1, :, :1],
    "other": lambda full: full[:, :1, :],
    "full": lambda full: full,
    "full-transposed": lambda full: full.transpose(0, 1).contiguous().transpose(0, 1),
}
LAYOUT_SHAPE = (4, 3, 6)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("name", ["weight", "pos_weight", "sample_weight"])
def test_every_layout_of_an_option(device, layout, name):
    """Every broadcast layout of each option gives PyTorch's float64 loss and gradient with that option
    broadcast to the full shape (sample weights as a factor of the weight)."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal(LAYOUT_SHAPE) * 3
    t = rng.uniform(0, 1, LAYOUT_SHAPE)
    full = torch.tensor(rng.uniform(0.2, 2.0, LAYOUT_SHAPE), dtype=torch.float64)
    given = LAYOUTS[layout](full)
    broadcast = torch.broadcast_to(given.reshape(given.shape[-3:]) if given.dim() > 3 else given, LAYOUT_SHAPE)
    logits = torch.tensor(x, device=device)
    targets = torch.tensor(t, device=device)
    options = {"weight": None, "pos_weight": None, "sample_weight": None, "smoothing": 0.0}
    options[name] = given.to(device)
    for per_element in (True, False):
        loss, grad = sigmoid_cross_entropy_elements(logits, targets, **options, grad_scale=0.5, per_element=per_element)
        oracle_x = torch.tensor(x, requires_grad=True)
        weight = broadcast if name in ("weight", "sample_weight") else None
        pos_weight = broadcast if name == "pos_weight" else None
        expected = F.binary_cross_entropy_with_logits(
            oracle_x, torch.tensor(t), weight=weight, pos_weight=pos_weight, reduction="none" if per_element else "sum"
        )
        (0.5 * expected.sum()).backward()
        assert_close(loss, expected.detach(), torch.float64, err_msg=f"{name} {layout}: loss")
        assert_close(grad, oracle_x.grad, torch.float64, err_msg=f"{name} {layout}: gradient")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_block_boundaries(device, dtype):
    """Lengths just around one and two blocks (the last block masked, or none), with a full weight, a
    scalar positive weight and label smoothing, against PyTorch in float64."""
    block = BLOCK_FLOAT64 if dtype == torch.float64 else BLOCK
    rng = np.random.default_rng(5)
    for n in (block - 1, block, block + 1, 2 * block):
        x, t, w = rng.standard_normal(n) * 3, rng.uniform(0, 1, n), rng.uniform(0, 2, n)
        q = 1.5
        loss, grad = sigmoid_cross_entropy_elements(
            torch.tensor(x, dtype=dtype, device=device),
            torch.tensor(t, dtype=dtype, device=device),
            weight=torch.tensor(w, dtype=dtype, device=device),
            pos_weight=torch.tensor(q, dtype=dtype, device=device),
            sample_weight=None,
            smoothing=0.1,
            grad_scale=1.0,
            per_element=False,
        )
        oracle_x = torch.tensor(x, dtype=dtype).to(torch.float64).requires_grad_()
        expected = F.binary_cross_entropy_with_logits(
            oracle_x,
            torch.tensor(0.9 * t + 0.05),
            weight=torch.tensor(w, dtype=dtype).double(),
            pos_weight=torch.tensor(q, dtype=torch.float64),
            reduction="sum",
        )
        expected.backward()
        assert_close(loss, expected.detach(), dtype, err_msg=f"n={n}: loss")
        assert_close(grad, oracle_x.grad, dtype, err_msg=f"n={n}: gradient")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_zero_dimensional_and_empty_logits(device, dtype):
    """One logit of shape () with every option (all scalars), against PyTorch in float64; an empty input
    sums to 0 (a mean too, whatever its denominator) and has an empty gradient."""
    x, t, w, q, s = 1.5, 0.25, 0.7, 2.0, 1.5

    def tensor(value):
        return torch.tensor(value, dtype=dtype, device=device)

    loss, grad = sigmoid_cross_entropy_elements(
        tensor(x), tensor(t), weight=tensor(w), pos_weight=tensor(q), sample_weight=tensor(s), smoothing=0.2,
        grad_scale=0.5, per_element=True,
    )  # fmt: skip
    oracle_x = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    expected = F.binary_cross_entropy_with_logits(
        oracle_x, torch.tensor(0.8 * t + 0.1, dtype=torch.float64), weight=torch.tensor(w * s, dtype=torch.float64),
        pos_weight=torch.tensor(q, dtype=torch.float64),
    )  # fmt: skip
    (0.5 * expected).backward()
    _check_kinds(loss, grad, tensor(x), True)
    assert_close(loss, expected.detach(), dtype)
    assert_close(grad, oracle_x.grad, dtype)
    empty = torch.empty(0, 3, dtype=dtype, device=device)
    options = {"weight": None, "pos_weight": None, "sample_weight": None, "smoothing": 0.0}
    losses, grad = sigmoid_cross_entropy_elements(empty, empty, **options, grad_scale=1.0, per_element=True)
    assert losses.shape == (0, 3)
    assert grad.shape == (0, 3)
    for denominator in (None, 0.0, 2.0):
        total, _ = sigmoid_cross_entropy_elements(
            empty, empty, **options, grad_scale=None, per_element=False, denominator=denominator
        )
        assert total.item() == 0.0


@pytest.mark.parametrize("device", DEVICES)
def test_bad_arguments_name_the_parameter(device):
    logits = torch.randn(4, 3, device=device)
    targets = torch.rand(4, 3, device=device)
    options = {"weight": None, "pos_weight": None, "sample_weight": None, "smoothing": 0.0}

    def call(logits=logits, targets=targets, **changes):
        arguments = {**options, "grad_scale": 1.0, "per_element": False, **changes}
        return sigmoid_cross_entropy_elements(logits, targets, **arguments)

    with pytest.raises(TypeError, match=r"`logits` must be a torch\.Tensor; got ndarray"):
        call(logits=logits.cpu().numpy())
    with pytest.raises(
        TypeError, match=r"`logits` must be float16, bfloat16, float32 or float64; got dtype torch\.int64"
    ):
        call(logits=torch.ones(4, 3, dtype=torch.int64, device=device))
    with pytest.raises(ValueError, match=r"`targets` must have the logits' shape \(4, 3\); got shape \(4, 2\)"):
        call(targets=targets[:, :2])
    with pytest.raises(ValueError, match=r"`smoothing` must be a number in \[0, 1\]; got 1.5"):
        call(smoothing=1.5)
    with pytest.raises(
        ValueError, match=r"`weight` must be broadcastable to the logits' shape \(4, 3\); got shape \(2,\)"
    ):
        call(weight=torch.ones(2, device=device))
    with pytest.raises(TypeError, match=r"`pos_weight` must be a torch\.Tensor; got list"):
        call(pos_weight=[1.0, 2.0, 3.0])
    with pytest.raises(TypeError, match="`grad_scale` must be a real number or a one-element tensor; got str"):
        call(grad_scale="1")
    with pytest.raises(ValueError, match=r"`denominator` must be a number or a one-element tensor; got shape \(2,\)"):
        call(denominator=torch.ones(2, device=device))
    with pytest.raises(TypeError, match="`sample_weight` must hold real numbers"):
        call(sample_weight=torch.ones(4, 1, dtype=torch.complex64, device=device))


@pytest.mark.skipif(
    INTERPRETED or not CUDA, reason="needs a CUDA GPU and TRITON_INTERPRET unset (CPU tensors are refused then)"
)
def test_cpu_tensors_need_the_interpreter():
    with pytest.raises(ValueError, match="`logits` must be on a CUDA device"):
        sigmoid_cross_entropy_elements(
            torch.zeros(3), torch.zeros(3), weight=None, pos_weight=None, sample_weight=None, smoothing=0.0,
            grad_scale=None, per_element=False,
        )  # fmt: skip


@NEEDS_CUDA
def test_options_on_another_device_are_refused():
    logits = torch.zeros(4, 3, device="cuda")
    with pytest.raises(ValueError, match="`weight` must be on the logits' device cuda:0; got cpu"):
        sigmoid_cross_entropy_elements(
            logits, torch.zeros_like(logits), weight=torch.ones(3), pos_weight=None, sample_weight=None,
            smoothing=0.0, grad_scale=None, per_element=False,
        )  # fmt: skip


@NEEDS_CUDA
def test_more_than_2_31_elements():
    """2^31 + 2048 float16 logits of zeros (ℓ = ln 2, g = κ/2 each) with a few distinct entries past
    index 2^31, a per-class positive weight and per-row sample weights (the offsets there need 64
    bits): those entries against the formula, the sum against n ln 2."""
    n_classes = 2048
    rows = 2**31 // n_classes + 1
    n = rows * n_classes
    logits = torch.zeros(rows, n_classes, dtype=torch.float16, device="cuda")
    targets = torch.zeros(rows, n_classes, dtype=torch.float16, device="cuda")
    logits[-1, -3:] = torch.tensor([5.0, -5.0, 2.0])
    targets[-1, -3:] = torch.tensor([1.0, 0.0, 0.5])
    pos_weight = torch.ones(n_classes, device="cuda")
    pos_weight[-1] = 3.0
    sample_weight = torch.ones(rows, 1, device="cuda")
    sample_weight[-1] = 0.5
    options = {"weight": None, "pos_weight": pos_weight, "sample_weight": sample_weight, "smoothing": 0.0}
    losses, _ = sigmoid_cross_entropy_elements(logits, targets, **options, grad_scale=None, per_element=True)
    tail = losses[-1, -3:].double().cpu()
    del losses

    def softplus(v):
        return math.log1p(math.exp(-abs(v))) + max(v, 0.0)

    expected = [0.5 * softplus(-5.0), 0.5 * softplus(-5.0), 0.5 * (3.0 * 0.5 * softplus(-2.0) + 0.5 * softplus(2.0))]
    assert_close(tail, expected, torch.float32)
    total, grad = sigmoid_cross_entropy_elements(
        logits, targets, **options, grad_scale=2.0, per_element=False, out=logits
    )
    ordinary = (n - n_classes) * math.log(2.0) + (n_classes - 3) * 0.5 * math.log(2.0)
    assert_close(total, ordinary + sum(expected), torch.float32)
    sigmoid = [1 / (1 + math.exp(-5.0)), 1 / (1 + math.exp(5.0)), 1 / (1 + math.exp(-2.0))]
    expected_grad = [
        2.0 * 0.5 * (sigmoid[0] * 1.0 - 1.0),
        2.0 * 0.5 * sigmoid[1],
        2.0 * 0.5 * (sigmoid[2] * (1.5 + 0.5) - 1.5),
    ]
    assert_close(grad[-1, -3:], expected_grad, torch.float16)
    assert grad[0, 0].item() == 1.0  # 2 * (1/2 - 0)
    assert grad[-1, 0].item() == 0.5  # the last row's sample weight


@NEEDS_CUDA
def test_no_host_synchronization():
    """Every mode runs with no read back to the host (PyTorch raises on a synchronizing call)."""
    case = Case(LARGE, OPTIONS[-1])
    for dtype in (torch.float32, torch.float64, torch.bfloat16):
        arguments = case.tensors(dtype, "cuda")
        scales = case.reduction("mean")
        grad_scale = torch.tensor(scales["grad_scale"], device="cuda")
        denominator = torch.tensor(scales["denominator"], device="cuda")
        calls = [
            {"per_element": True, "grad_scale": 1.0},
            {"per_element": False, "grad_scale": 1.0},
            {"per_element": False, "grad_scale": grad_scale, "denominator": denominator},
            {"per_element": False, "grad_scale": scales["grad_scale"], "denominator": scales["denominator"]},
            {"per_element": False, "grad_scale": None, "denominator": denominator},
        ]
        for call in calls:  # compiled first, outside the check
            _kernel(arguments, **call)
        _kernel(arguments, **calls[2], out=arguments["logits"].clone())
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            for call in calls:
                _kernel(arguments, **call)
            _kernel(arguments, **calls[2], out=arguments["logits"].clone())
        finally:
            torch.cuda.set_sync_debug_mode("default")


@NEEDS_CUDA
def test_forward_only_allocates_only_the_partial_sums():
    n = 2**24
    logits = torch.randn(n, device="cuda")
    targets = torch.rand(n, device="cuda")
    weight = torch.rand(n, device="cuda")
    options = {"weight": weight, "pos_weight": None, "sample_weight": None, "smoothing": 0.1}
    sigmoid_cross_entropy_elements(logits, targets, **options, grad_scale=None, per_element=False, denominator=n)
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    sigmoid_cross_entropy_elements(logits, targets, **options, grad_scale=None, per_element=False, denominator=n)
    torch.cuda.synchronize()
    partials = 2 * (n // BLOCK) * 4
    assert torch.cuda.max_memory_allocated() - before <= partials + 2**20  # the logits take 64 MiB


@NEEDS_CUDA
def test_sums_are_the_same_from_run_to_run():
    case = Case((1000, 1000), {"pos_weight": "class"})
    arguments = case.tensors(torch.float32, "cuda")
    first = _kernel(arguments, **case.reduction("mean"))
    for _ in range(3):
        again = _kernel(arguments, **case.reduction("mean"))
        torch.testing.assert_close(again, first, rtol=0, atol=0)
