"""``benchmarks/gpu.py`` in its CPU smoke mode, so that the GPU benchmark cannot rot between GPU runs.

``--device cpu --quick`` runs the very code the GPU run does (methods, passes, spot checks,
tables, chart) on one tiny shape with the host clock instead of CUDA events. No timing is
asserted: the tests check that every method and pass is there, that the spot check passed, and
that the spot check itself catches a wrong gradient.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu.py"


def load_script():
    spec = importlib.util.spec_from_file_location("gpu_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


gpu = load_script()


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp_path_factory.mktemp("gpu")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--device", "cpu", "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env=env,
    )
    return result, out


@pytest.fixture(scope="module")
def report(smoke) -> dict:
    result, out = smoke
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    return json.loads((out / "gpu.json").read_text())


def test_files_and_tables(smoke, report):
    result, out = smoke
    md = (out / "gpu.md").read_text()
    for dtype in gpu.DTYPES:
        assert f"## {dtype}" in md
        assert f"### Spot check, {dtype}" in md
    assert "| N×V | method | forward ms | fwd+bwd ms | peak GB fwd / fwd+bwd |" in md
    assert "copy bandwidth:" in md
    assert "the logits read once and the gradient written once" in md  # the minimum traffic is stated
    tables = md.split("## First calls")[0]
    for method in gpu.METHODS:
        assert tables.count(f"| 64×1000 | {method.label} |") == 4  # two dtypes, times and spot check
    if importlib.util.find_spec("liger_kernel") is None:
        assert md.count("| Liger LigerCrossEntropyLoss | not installed |") == 2
    if importlib.util.find_spec("matplotlib") is not None:
        assert (out / "gpu.png").stat().st_size > 0
    assert "spot checks: no failure" in result.stdout  # the summary at the end of the output
    assert "Ours computed on the kernel backend (`crossentropy.kernels.for_torch`): numba" in md


def test_every_method_and_pass_is_reported_and_the_spot_check_passed(report):
    assert report["copy_bandwidth"]["bytes_per_s"] > 0
    assert {(s["dtype"], s["n"], s["v"]) for s in report["shapes"]} == {(d, 64, 1000) for d in gpu.DTYPES}
    for shape in report["shapes"]:
        assert set(shape["cells"]) == {m.key for m in gpu.METHODS}
        for method in gpu.METHODS:
            cell = shape["cells"][method.key]
            if method.key == "liger" and "status" in cell:
                continue  # not installed here, or cannot run on the CPU: said in the table
            verdict = cell["check"]["verdict"]
            assert verdict.startswith("pass"), (shape["dtype"], method.key, cell["check"])
            assert cell["fwd"]["status"] == "ok"
            assert len(cell["fwd"]["times_ms"]) == report["settings"]["repeat"]
            bf16_inplace = method.key.startswith("ours_inplace") and shape["dtype"] == "bfloat16"
            if not bf16_inplace:  # the CPU kernels write gradients over float32/float64 logits only
                assert cell["fwdbwd"]["status"] == "ok", cell["fwdbwd"]
                assert verdict == "pass"
                assert math.isfinite(cell["fwdbwd"]["median_ms"])


def reference_case(n=32, v=50, dtype=torch.float32):
    inputs = gpu.make_inputs(gpu.Device("cpu"), n, v, dtype)
    return inputs, gpu.make_reference(inputs)


def correct_gradient(inputs):
    x = inputs.logits.detach().clone().requires_grad_()
    loss = torch.nn.functional.cross_entropy(x, inputs.targets)
    (grad,) = torch.autograd.grad(loss, x)
    return loss.detach(), grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_spot_check_passes_pytorch(dtype):
    inputs, reference = reference_case(dtype=dtype)
    loss, grad = correct_gradient(inputs)
    check = gpu.check_result(inputs, reference, loss, grad)
    assert gpu.verdict(str(dtype).removeprefix("torch."), check) == "pass", check


@pytest.mark.parametrize(
    ("damage", "caught"),
    [
        (lambda g, x, rows: g[unsampled(rows)].zero_(), ["row_l1_err"]),  # a row no program wrote
        (lambda g, x, rows: g[unsampled(rows)].copy_(x[unsampled(rows)]), ["row_sum_err", "row_l1_err"]),  # inplace
        (lambda g, x, rows: g.mul_(2), ["grad_rel_err", "target_err", "row_l1_err"]),  # the mean's 1/N wrong
        (lambda g, x, rows: g.copy_(torch.roll(g, 1, dims=0)), ["grad_rel_err", "target_err", "row_l1_err"]),
        (lambda g, x, rows: g[-1, 0].add_(float("nan")), ["grad_rel_err", "row_sum_err", "row_l1_err"]),
    ],
    ids=["zeroed-row", "logits-left-in-a-row", "scale", "shifted-rows", "nan"],
)
def test_the_spot_check_catches_a_wrong_gradient(damage, caught):
    inputs, reference = reference_case()
    loss, grad = correct_gradient(inputs)
    damage(grad, inputs.logits.detach(), reference.rows.tolist())
    check = gpu.check_result(inputs, reference, loss, grad)
    assert gpu.verdict("float32", check) == f"FAIL ({', '.join(caught)})", check


def unsampled(rows: list[int]) -> int:
    """A row the sampled comparison does not look at (only the checks over every row can catch it)."""
    return next(i for i in range(100) if i not in rows)


def test_the_spot_check_catches_a_wrong_loss():
    inputs, reference = reference_case()
    loss, grad = correct_gradient(inputs)
    verdict = gpu.verdict("float32", gpu.check_result(inputs, reference, loss * 1.01, grad))
    assert verdict == "FAIL (loss_rel_err)"


@pytest.mark.parametrize(
    "argv", [["--dtypes", "float16"], ["--methods", "nope"], ["--shapes", "8x"], ["--repeat", "0"]]
)
def test_bad_arguments_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        gpu.parse_args(argv)
    assert exit_.value.code == 2


class FakeMethods:
    """Methods whose callables are given: to drive measure_shape through its failure paths on the CPU."""

    def __init__(self, **calls):
        self.calls = calls
        self.broken = {}

    def get(self, method):
        return self.calls[method.key], gpu.contextlib.nullcontext

    def backend_of(self, logits):
        return "fake"


def measure(methods, selected, device=None):
    device = device or gpu.Device("cpu")
    return gpu.measure_shape(16, 10, "float32", device, methods, selected, 1, 2, gpu.Budget(60))


def raise_(error):
    def call(x, y):
        raise error

    return call


def test_out_of_memory_is_reported_as_oom_and_the_others_still_run():
    eager, ours = gpu.METHODS[0], gpu.METHODS[3]
    methods = FakeMethods(
        eager=raise_(torch.OutOfMemoryError("CUDA out of memory")), ours=torch.nn.functional.cross_entropy
    )
    shape = measure(methods, (eager, ours))
    assert shape["cells"]["eager"]["fwd"]["status"] == "OOM"
    assert shape["cells"]["eager"]["fwdbwd"]["status"] == "OOM"
    assert shape["cells"]["ours"]["fwdbwd"]["status"] == "ok"
    assert shape["cells"]["ours"]["check"]["verdict"] == "pass"


def test_an_error_is_reported_and_a_failed_device_stops_the_shape():
    eager, compiled, ours = gpu.METHODS[0], gpu.METHODS[1], gpu.METHODS[3]
    methods = FakeMethods(eager=raise_(RuntimeError("boom")), compiled=raise_(RuntimeError("inductor")), ours=None)
    shape = measure(methods, (eager, compiled, ours))
    assert shape["cells"]["eager"]["fwd"]["status"] == "error: RuntimeError: boom"
    assert "traceback" in shape["cells"]["eager"]["fwd"]
    assert methods.broken == {  # a failed compilation is not retried on the next shapes
        ("compiled", "float32", "fwd"): "not run: the compilation failed at 16×10",
        ("compiled", "float32", "fwdbwd"): "not run: the compilation failed at 16×10",
    }

    class BrokenDevice(gpu.Device):
        def failure(self):
            return "RuntimeError: CUDA error: an illegal memory access was encountered"

    shape = measure(FakeMethods(eager=raise_(RuntimeError("boom")), ours=None), (eager, ours), BrokenDevice("cpu"))
    assert shape["device_failure"].startswith("F.cross_entropy (eager), forward: RuntimeError: CUDA error")
    assert shape["cells"]["eager"]["fwdbwd"]["status"] == gpu.DEVICE_FAILED
    assert shape["cells"]["ours"] == {"fwd": {"status": gpu.DEVICE_FAILED}, "fwdbwd": {"status": gpu.DEVICE_FAILED}}
    assert "The device failed at float32 16×10" in gpu.markdown(
        {
            "environment": {
                "command": "",
                "date_utc": "",
                "checks_disabled": True,
                "device": "cpu",
                "python": "",
                "torch": "",
                "torch_cuda": "",
                "triton": "",
                "liger_kernel": "",
                "crossentropy": "",
                "crossentropy_path": "",
                "triton_interpret": "",
                "compile": "",
            },
            "copy_bandwidth": {"bytes_per_s": 1e9, "bytes_per_buffer": 1, "times_ms": [1.0]},
            "settings": {"dtypes": ("float32",), "warmup": 1, "repeat": 2, "budget_s": 60},
            "shapes": [shape],
        },
        (eager, ours),
    )


# --------------------------------------------------------------------------------------------
# the linear cross-entropy section


def test_the_linear_section_is_reported(smoke, report):
    result, out = smoke
    md = (out / "gpu.md").read_text()
    assert "## Linear cross-entropy: loss of x @ Wᵀ, forward + backward" in md
    assert "### N=64, H=32, V=512" in md
    assert "| method | ms | peak MiB | time / CCE | memory / CCE | loss rel. err | cos ∇x | cos ∇W | accuracy |" in md
    section = md.split("## Linear cross-entropy")[1].split("First calls")[0]
    for method in gpu.LINEAR_METHODS:
        assert section.count(f"| {method.label} |") == 1
    for label in ("Liger `liger_fused_linear_cross_entropy`", "CCE `cut_cross_entropy.linear_cross_entropy`"):
        assert f"| {label} | skipped: needs a CUDA device (Triton kernels) |" in section
    # The targets are stated, and evaluated from the numbers (against CCE: not on the CPU).
    assert "Targets for ours: peak memory ≤ 1.1× CCE's, time ≤ CCE's" in section
    assert "time ≤ CCE's: not evaluated (CCE: skipped" in section
    assert "loss rel. error ≤ 1e-03: **met**" in section
    assert "gradient cosine ≥ 0.9999: **met**" in section
    assert "linear cross-entropy, forward + backward" in result.stdout


def test_the_linear_methods_that_run_on_the_cpu_pass_their_accuracy_targets(report):
    (shape,) = report["linear"]["shapes"]
    assert (shape["n"], shape["h"], shape["v"], shape["dtype"]) == (64, 32, 512, "float32")
    assert shape["ignored_rows"] == 2  # rows 0 and 61
    cells = shape["cells"]
    expected_ok = {"eager", "ours"} | ({"torch_chunked"} if hasattr(torch.nn, "LinearCrossEntropyOptions") else set())
    for key in expected_ok:
        assert cells[key]["status"] == "ok", cells[key]
        assert cells[key]["check"]["verdict"] == "pass", cells[key]["check"]
        assert len(cells[key]["times_ms"]) == shape["repeat"]
    assert cells["liger"]["status"].startswith("skipped: needs a CUDA device")
    assert cells["cce"]["status"].startswith("skipped: needs a CUDA device")
    targets = shape["targets"]
    assert targets["loss_rel_err"]["met"] is True
    assert targets["grad_cosine"]["met"] is True
    assert targets["memory_vs_cce"]["met"] is None
    assert targets["time_vs_cce"]["met"] is None


def linear_case(n=40, h=8, v=30):
    inputs = gpu.make_linear_inputs(gpu.Device("cpu"), n, h, v, torch.float32)
    return inputs, gpu.make_linear_reference(inputs)


def eager_linear(inputs):
    loss = gpu._eager_linear(inputs.x, inputs.w, inputs.y)
    grad_x, grad_w = torch.autograd.grad(loss, (inputs.x, inputs.w))
    return loss.detach(), grad_x, grad_w


def test_the_chunked_float64_reference_is_autograd_in_float64():
    inputs, reference = linear_case()
    x, w = inputs.x.detach().double().requires_grad_(), inputs.w.detach().double().requires_grad_()
    loss = torch.nn.functional.cross_entropy(x @ w.T, inputs.y, ignore_index=gpu.IGNORE_INDEX)
    grad_x, grad_w = torch.autograd.grad(loss, (x, w))
    assert reference.loss == pytest.approx(float(loss.detach()), rel=1e-12)
    torch.testing.assert_close(reference.grad_x, grad_x.float())
    torch.testing.assert_close(reference.grad_w, grad_w.float())
    assert gpu.linear_check(reference, *eager_linear(inputs))["verdict"] == "pass"


@pytest.mark.parametrize(
    ("damage", "caught"),
    [
        (lambda loss, gx, gw: (loss * 1.01, gx, gw), "loss_rel_err"),
        (lambda loss, gx, gw: (loss, gx.roll(1, 0), gw), "cos_grad_x"),
        (lambda loss, gx, gw: (loss, gx, gw + 0.1 * gw.abs().max() * torch.ones_like(gw)), "cos_grad_w"),
        (lambda loss, gx, gw: (loss, gx, gw.clone().fill_(float("nan"))), "cos_grad_w"),
    ],
    ids=["loss", "shifted-input-grad", "weight-grad-offset", "nan"],
)
def test_the_linear_check_catches_a_wrong_result(damage, caught):
    inputs, reference = linear_case()
    check = gpu.linear_check(reference, *damage(*eager_linear(inputs)))
    assert check["verdict"] == f"FAIL ({caught})", check


def test_the_targets_against_cce_come_from_the_numbers():
    check = {"loss_rel_err": 1e-5, "cos_grad_x": 0.99999, "cos_grad_w": 0.99995, "verdict": "pass"}
    cells = {
        "cce": {"status": "ok", "median_ms": 100.0, "peak_bytes": 1000},
        "ours": {"status": "ok", "median_ms": 90.0, "peak_bytes": 1200, "check": check},
    }
    targets = gpu.linear_targets(cells)
    assert targets["time_vs_cce"]["value"] == pytest.approx(0.9)
    assert targets["time_vs_cce"]["met"] is True
    assert targets["memory_vs_cce"]["value"] == pytest.approx(1.2)
    assert targets["memory_vs_cce"]["met"] is False
    assert targets["loss_rel_err"]["met"] is True
    assert targets["grad_cosine"]["value"] == pytest.approx(0.99995)
    assert targets["grad_cosine"]["met"] is True
    cells["cce"] = {"status": "OOM"}
    targets = gpu.linear_targets(cells)
    assert targets["time_vs_cce"] == {"limit": 1.0, "value": None, "met": None, "why": "CCE: OOM"}
    lines = "\n".join(
        gpu.linear_markdown(
            {
                "settings": {
                    "dtype": "bfloat16",
                    "warmup": 2,
                    "ignore_every": 61,
                    "ignore_index": -100,
                    "timer": "CUDA events",
                    "targets": gpu.LINEAR_TARGETS,
                },
                "shapes": [
                    {"n": 8, "h": 4, "v": 16, "dtype": "bfloat16", "repeat": 3, "cells": cells, "targets": targets}
                ],
            }
        )
    )
    assert "| CCE `cut_cross_entropy.linear_cross_entropy` | OOM |" in lines
    assert "time ≤ CCE's: not evaluated (CCE: OOM)" in lines


def test_a_failing_linear_method_is_reported_and_the_others_still_run():
    class Methods:
        def get(self, key):
            if key == "eager":
                return raise_linear(torch.OutOfMemoryError("CUDA out of memory"))
            if key == "torch_chunked":
                return raise_linear(RuntimeError("boom"))
            if key in ("liger", "cce"):
                raise gpu.Unavailable("not installed")
            return gpu._eager_linear

    shape = gpu.measure_linear(
        16, 4, 10, "float32", gpu.Device("cpu"), Methods(), gpu.LINEAR_METHODS, 1, 2, gpu.Budget(60)
    )
    cells = shape["cells"]
    assert cells["eager"]["status"] == "OOM"
    assert cells["torch_chunked"]["status"] == "error: RuntimeError: boom"
    assert cells["liger"]["status"] == "not installed"
    assert cells["ours"]["status"] == "ok"
    assert cells["ours"]["check"]["verdict"] == "pass"


def raise_linear(error):
    def call(x, w, y):
        raise error

    return call


@pytest.mark.parametrize("argv", [["--linear-shapes", "8x8"], ["--sections", "nope"], ["--linear-repeat", "0"]])
def test_bad_linear_arguments_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        gpu.parse_args(argv)
    assert exit_.value.code == 2
