"""Inputs and timed cases of ``crossentropy bench``: the floor's NumPy passes, PyTorch, the generic path, kernels."""

from __future__ import annotations

import gc
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..._tools.timing import time_calls
from ._config import (
    COPY,
    COPY_FRESH,
    COPY_INTO,
    COPY_NEW,
    FAILED,
    FORWARD,
    FORWARD_GRAD,
    GENERIC,
    KERNELS,
    KERNELS_OUT,
    NOT_APPLICABLE,
    OK,
    READ,
    READ_GEMV,
    READ_MAX,
    READ_SUM,
    TORCH,
    Bandwidth,
    BenchConfig,
    Measurement,
    MissingDependencyError,
)


def _import_torch() -> Any:
    try:
        import torch
    except ImportError:
        raise MissingDependencyError("PyTorch is not installed; pip install 'crossentropy[bench]'") from None
    return torch


@dataclass(frozen=True)
class _Inputs:
    """Logits and targets of one case, as NumPy and PyTorch views of the same memory.

    ``logits`` is float32, or for bfloat16 the tensor's bit patterns as uint16 (the kernel
    layer's ``storage="bfloat16"`` input).
    """

    shape: tuple[int, int]
    dtype: str
    logits: np.ndarray
    targets: np.ndarray
    torch_logits: Any
    torch_targets: Any

    def head(self, rows: int) -> _Inputs:
        """The first ``rows`` rows (views): a cheap call that compiles and initializes what the big one uses."""
        return _Inputs(
            (min(rows, self.shape[0]), self.shape[1]),
            self.dtype,
            self.logits[:rows],
            self.targets[:rows],
            self.torch_logits[:rows],
            self.torch_targets[:rows],
        )


def _make_inputs(shape: tuple[int, int], dtype: str, seed: int) -> _Inputs:
    """Standard-normal logits and uniform targets; only one copy of the logits stays alive."""
    torch = _import_torch()
    rng = np.random.default_rng(seed)
    n_rows, n_classes = shape
    logits = rng.standard_normal(shape, dtype=np.float32)
    targets = rng.integers(0, n_classes, size=n_rows, dtype=np.int64)
    torch_logits = torch.from_numpy(logits)
    if dtype == "bfloat16":
        torch_logits = torch_logits.to(torch.bfloat16)
        logits = torch_logits.view(torch.uint16).numpy()  # the tensor's memory, read as bit patterns
    return _Inputs(shape, dtype, logits, targets, torch_logits, torch.from_numpy(targets))


@dataclass(frozen=True)
class _Case:
    """A timed case. ``make`` builds the call to time (and its buffers, alive only during the case)."""

    method: str
    pass_name: str
    bytes_moved: int
    repeat: int
    make: Callable[[], Callable[[], Any]] | None  # None: the method does not apply
    note: str = ""
    loss_of: Callable[[Any], float | None] = lambda result: None


def _first_float(result: Any) -> float:
    """The loss of a call that returns the loss, or a tuple starting with it."""
    return float(result[0] if isinstance(result, tuple) else result)


def _time_calls(
    call: Callable[[], Any], repeat: int, loss_of: Callable[[Any], float | None]
) -> tuple[list[float], float | None]:
    """Milliseconds of ``repeat`` calls after one warm-up, and the loss of the last one.

    The timing loop is :func:`crossentropy._tools.timing.time_calls` (garbage collector off, each
    result kept until its timer stops).
    """
    losses: list[float | None] = []
    times = time_calls(call, repeat=repeat, warmup=1, on_result=lambda result: losses.append(loss_of(result)))
    return [seconds * 1e3 for seconds in times], (losses[-1] if losses else None)


def _measure(case: _Case, inputs: _Inputs) -> Measurement:
    row = Measurement(inputs.shape, inputs.dtype, case.method, case.pass_name, case.bytes_moved, note=case.note)
    if case.make is None:
        row.status = NOT_APPLICABLE
        return row
    try:
        call = case.make()
        times, row.loss = _time_calls(call, case.repeat, case.loss_of)
        row.times_ms = tuple(times)
    # A broken path is a finding to report next to the others, not a reason to lose the run.
    except Exception as error:
        row.status, row.note = FAILED, _one_line(error)
    finally:
        call = None  # release the case's buffers before the next case
        gc.collect()
    return row


def _one_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def _bandwidth_cases(inputs: _Inputs, repeat: int) -> list[_Case]:
    x = inputs.logits
    nbytes = x.nbytes

    def read_view() -> np.ndarray:
        # bfloat16 bit patterns have no BLAS: the same bytes are read as float32 (normal
        # numbers, since the high half of each pair is a bfloat16 of a standard normal).
        if x.dtype == np.uint16 and x.shape[-1] % 2 == 0:
            return x.view(np.float32)
        return x

    def gemv() -> Callable[[], Any]:
        view = read_view()
        ones = np.ones(view.shape[-1], dtype=view.dtype)
        return lambda: view @ ones

    def copy_into() -> Callable[[], Any]:
        dst = np.empty_like(x)
        return lambda: np.copyto(dst, x)

    def reduction(name: str) -> Callable[[], Callable[[], Any]]:
        def make() -> Callable[[], Any]:
            return getattr(read_view(), name)

        return make

    cases = [
        _Case(READ_MAX, READ, nbytes, repeat, reduction("max")),
        _Case(READ_SUM, READ, nbytes, repeat, reduction("sum")),
    ]
    if read_view().dtype.kind == "f":
        cases.append(_Case(READ_GEMV, READ, nbytes, repeat, gemv))
    cases.append(_Case(COPY_INTO, COPY, 2 * nbytes, repeat, copy_into))
    cases.append(_Case(COPY_FRESH, COPY_NEW, 2 * nbytes, repeat, lambda: x.copy))
    return cases


def _torch_forward(inputs: _Inputs) -> Callable[[], Any]:
    torch = _import_torch()
    logits, targets = inputs.torch_logits, inputs.torch_targets

    def call() -> Any:
        with torch.no_grad():
            return torch.nn.functional.cross_entropy(logits, targets)

    return call


def _torch_forward_backward(inputs: _Inputs) -> Callable[[], Any]:
    torch = _import_torch()
    logits, targets = inputs.torch_logits, inputs.torch_targets

    def call() -> Any:
        leaf = logits.detach().requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(leaf, targets)
        loss.backward()
        return loss.detach(), leaf  # the leaf keeps its .grad alive until the timer stops

    return call


def _public_call(inputs: _Inputs, *, with_grad: bool, generic: bool) -> Callable[[], Any]:
    """The public function on float32 logits, on the kernels or (``generic``) the array-API path."""
    from ... import kernels
    from ...losses import softmax_cross_entropy, softmax_cross_entropy_with_grad

    function = softmax_cross_entropy_with_grad if with_grad else softmax_cross_entropy
    logits, targets = inputs.logits, inputs.targets
    if not generic:
        return lambda: function(logits, targets)

    def call() -> Any:
        with kernels.disabled():
            return function(logits, targets)

    return call


def _kernel_call(inputs: _Inputs, *, with_grad: bool) -> Callable[[], Any]:
    """The Numba kernel layer: plain mean cross-entropy, with a new gradient when ``with_grad``."""
    from ...kernels import numba as numba_kernels

    n_rows = inputs.shape[0]
    row_weight = np.ones(n_rows, np.float32)
    grad_factor = np.full(n_rows, 1.0 / n_rows, np.float32) if with_grad else None
    storage = "bfloat16" if inputs.dtype == "bfloat16" else None
    logits, targets = inputs.logits, inputs.targets

    def call() -> Any:
        losses, grad = numba_kernels.softmax_cross_entropy_rows(
            logits,
            targets,
            weight=None,
            row_weight=row_weight,
            grad_factor=grad_factor,
            smoothing=0.0,
            z=0.0,
            cap=None,
            storage=storage,
        )
        return losses.sum() / n_rows, grad

    return call


def _public_out_call(inputs: _Inputs) -> Callable[[], Any]:
    """``softmax_cross_entropy_with_grad(x, y, out=buffer)`` with one buffer reused across calls.

    float32 on the NumPy arrays; bfloat16 on the PyTorch tensors (NumPy has no bfloat16), which
    run on the same kernels outside autograd.
    """
    from ...losses import softmax_cross_entropy_with_grad

    if inputs.dtype == "bfloat16":
        logits, targets = inputs.torch_logits, inputs.torch_targets
        buffer = _import_torch().empty_like(logits)
    else:
        logits, targets = inputs.logits, inputs.targets
        buffer = np.empty_like(logits)
    return lambda: softmax_cross_entropy_with_grad(logits, targets, out=buffer)


def _kernels_forward(inputs: _Inputs) -> Callable[[], Any]:
    """What a user runs for the forward pass: the public function, or the kernel layer for bfloat16."""
    if inputs.dtype == "bfloat16":
        return _kernel_call(inputs, with_grad=False)
    return _public_call(inputs, with_grad=False, generic=False)


def _kernels_forward_grad(inputs: _Inputs) -> Callable[[], Any]:
    if inputs.dtype == "bfloat16":
        return _kernel_call(inputs, with_grad=True)
    return _public_call(inputs, with_grad=True, generic=False)


def _loss_cases(inputs: _Inputs, config: BenchConfig) -> list[_Case]:
    nbytes = inputs.logits.nbytes
    read, read_write = nbytes, 2 * nbytes

    def case(method: str, pass_name: str, make: Callable[[], Callable[[], Any]] | None, **options: Any) -> _Case:
        moved = read if pass_name == FORWARD else read_write
        repeat = options.pop("repeat", config.repeat)
        return _Case(method, pass_name, moved, repeat, make, loss_of=_first_float, **options)

    cases = [
        case(TORCH, FORWARD, lambda: _torch_forward(inputs)),
        case(TORCH, FORWARD_GRAD, lambda: _torch_forward_backward(inputs)),
    ]
    if config.generic and inputs.dtype == "bfloat16":
        cases += [case(GENERIC, FORWARD, None, note="NumPy has no bfloat16")]
        cases += [case(GENERIC, FORWARD_GRAD, None, note="NumPy has no bfloat16")]
    elif config.generic:
        repeat = config.generic_repeat
        cases += [
            case(GENERIC, FORWARD, lambda: _public_call(inputs, with_grad=False, generic=True), repeat=repeat),
            case(GENERIC, FORWARD_GRAD, lambda: _public_call(inputs, with_grad=True, generic=True), repeat=repeat),
        ]
    cases += [
        case(KERNELS, FORWARD, lambda: _kernels_forward(inputs)),
        case(KERNELS, FORWARD_GRAD, lambda: _kernels_forward_grad(inputs)),
        case(KERNELS_OUT, FORWARD_GRAD, lambda: _public_out_call(inputs)),
    ]
    return cases


def _bandwidth_of(rows: Sequence[Measurement], inputs: _Inputs) -> Bandwidth:
    def median(pass_name: str) -> tuple[float | None, str | None]:
        timed = [(row.median_ms, row.method) for row in rows if row.pass_name == pass_name and row.status == OK]
        return min(timed) if timed else (None, None)

    read_ms, read_method = median(READ)
    return Bandwidth(
        inputs.shape, inputs.dtype, inputs.logits.nbytes, read_ms, read_method, median(COPY)[0], median(COPY_NEW)[0]
    )


def _attach_references(rows: Sequence[Measurement], bandwidth: Bandwidth) -> None:
    torch_ms = {row.pass_name: row.median_ms for row in rows if row.method == TORCH and row.status == OK}
    for row in rows:
        if row.status != OK:
            continue
        row.torch_ms = torch_ms.get(row.pass_name)
        if row.pass_name == FORWARD:
            row.floor_ms = bandwidth.read_ms
        else:
            row.floor_ms, row.floor_alloc_ms = bandwidth.copy_ms, bandwidth.copy_new_ms
