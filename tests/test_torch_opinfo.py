"""PyTorch's own test material for the four drop-ins, run through ``crossentropy.torch``.

The samples are PyTorch's: the OpInfo entries ``nn.functional.cross_entropy``, ``nll_loss``,
``binary_cross_entropy`` and ``binary_cross_entropy_with_logits`` of
``torch.testing._internal.common_methods_invocations.op_db``, and the ModuleInfo entries
``CrossEntropyLoss``, ``NLLLoss``, ``BCELoss`` and ``BCEWithLogitsLoss`` of
``torch.testing._internal.common_modules.module_db`` (CPU, every dtype they declare). Each sample
goes through our function (same positional order as ``torch.nn.functional``) or module as
given, and PyTorch's own function or module is the oracle.

One test per check and sample (ids: op or module, sample index, a description of the sample,
dtype); a check runs in up to three variants and reports every variant that fails, with its
error and where it was raised. The variants: ``sample``, tracked as PyTorch's sample is (input,
and probability targets); ``input``, the input tracked only, for ``cross_entropy`` and
``binary_cross_entropy_with_logits`` samples that also track their targets: our CPU softmax and
sigmoid losses run the fused kernels through an ``autograd.Function`` exactly when the input is
the only tracked tensor, so this is what puts those samples on the fused path (index-target
samples are on it already); ``nograd``, nothing tracked. The checks:

- ``test_op_forward`` (every dtype the OpInfo declares for the CPU) and ``test_module_forward``;
- ``test_op_grad`` / ``test_module_grad``: our autograd gradient for every tracked tensor against
  PyTorch's, for a random cotangent (float32, float64); ``test_op_gradcheck`` /
  ``test_module_gradcheck`` in float64, with PyTorch's options for the OpInfo (``fast_mode``,
  ``check_undefined_grad``);
- ``test_op_gradgradcheck`` / ``test_module_gradgradcheck`` (double backward) and
  ``test_op_fwgrad_bwgrad`` (forward-over-reverse) in float64, as the OpInfo's
  ``supports_gradgrad`` / ``supports_fwgrad_bwgrad`` ask;
- ``test_op_batched_grad``, ``test_op_batched_gradgrad``, ``test_op_batched_forward_grad``:
  gradcheck's own vmap checks (``check_batched_grad`` and friends), which PyTorch's
  ``test_fn_grad`` / ``test_fn_gradgrad`` / ``test_forward_mode_AD`` run for these OpInfos;
- ``test_op_forward_ad``: ``gradcheck(check_forward_ad=True)`` (the OpInfo ``supports_forward_ad``),
  and ``test_op_jvp``: the tangent of a ``torch.autograd.forward_ad`` dual against PyTorch's;
- ``test_op_func_grad`` (``torch.func.grad`` of the summed loss) and ``test_op_vmap``
  (``torch.func.vmap`` over a batch dimension added in front, several batchings, and
  ``vmap(grad)``), against PyTorch's own ``torch.func``: a sample on which PyTorch's op itself
  fails under the transform is not required (skipped, with PyTorch's error as the reason);
- ``test_error_inputs``: ModuleInfo's ``module_error_inputs_func`` (the four OpInfos have no
  ``error_inputs_func``) through our modules and our functions: ours must raise too (a
  ValueError, TypeError, RuntimeError or IndexError with a message), not necessarily PyTorch's
  type and words;
- ``test_*_collected``: PyTorch's material is there (no check can silently run zero samples).

Deliberate, documented refusals are filtered out of the checks above: negative class weights
(``weight`` or ``pos_weight`` with a negative entry: we raise ValueError, PyTorch computes a
number) and BCE targets outside [0, 1] (we raise). ``test_refusal`` checks, per op and module,
that we do raise on each of them, and ``|weight|`` variants (the same sample with the weights' absolute values, our
own derived samples, marked ``absw`` in the ids) keep PyTorch's weight shapes under test. One
more documented difference is handled explicitly where it arises: when every target is ignored,
our mean is 0 with a zero gradient, where PyTorch's is NaN.

Half-precision forward values are compared with PyTorch's float64 result on the same (half)
inputs, rounded to the half dtype, with the dtype's default ``assert_close`` tolerance: PyTorch's
own half computation rounds its intermediates (we accumulate in float32) and misses that
reference by up to 65% relative on bfloat16 elementwise losses, so it cannot be the oracle there.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import random
import re
import traceback
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import hypothesis
import pytest
import torch
import torch.autograd.forward_ad as fwAD

import crossentropy.torch as cet


@contextlib.contextmanager
def _global_state_kept() -> Iterator[None]:
    """Undo what importing ``torch.testing._internal.common_utils`` does to the whole process.

    That import loads a hypothesis profile of its own (10 examples, no database: it would
    silently weaken every hypothesis test of this suite collected after this file), freezes
    ``torch.backends`` flags (``disable_global_flags``) and wraps TorchScript calls in a profiler.
    """
    settings = hypothesis.settings.default
    backends_mutable = not torch.backends.flags_frozen()
    script_calls = (torch._C.ScriptFunction.__call__, torch._C.ScriptMethod.__call__)
    try:
        yield
    finally:
        hypothesis.settings.register_profile("crossentropy-before-torch-testing", settings)
        hypothesis.settings.load_profile("crossentropy-before-torch-testing")
        # torch.backends has no public way back from disable_global_flags(): reset the flag it reads.
        torch.backends.flags_frozen.__globals__["__allow_nonbracketed_mutation_flag"] = backends_mutable
        torch._C.ScriptFunction.__call__, torch._C.ScriptMethod.__call__ = script_calls


# torch.testing._internal needs the `expecttest` package (a test dependency).
with _global_state_kept():
    from torch.testing._internal.common_methods_invocations import op_db
    from torch.testing._internal.common_modules import ModuleErrorEnum, module_db

DEVICE = "cpu"
OP_NAMES = ("cross_entropy", "nll_loss", "binary_cross_entropy", "binary_cross_entropy_with_logits")
MODULE_NAMES = ("CrossEntropyLoss", "NLLLoss", "BCELoss", "BCEWithLogitsLoss")
OPS = {
    name: next(op for op in op_db if op.name == f"nn.functional.{name}" and not op.variant_test_name)
    for name in OP_NAMES
}
MODULES = {name: next(info for info in module_db if info.module_cls.__name__ == name) for name in MODULE_NAMES}
ERRORS = (ValueError, TypeError, RuntimeError, IndexError)
FUSED_KINDS = ("cross_entropy", "binary_cross_entropy_with_logits")  # a fused autograd.Function on the CPU
BCE_OPS = ("binary_cross_entropy", "binary_cross_entropy_with_logits")
INDEX_TARGET_OPS = ("cross_entropy", "nll_loss")
MODULE_FUNCTION = {
    "CrossEntropyLoss": "cross_entropy",
    "NLLLoss": "nll_loss",
    "BCELoss": "binary_cross_entropy",
    "BCEWithLogitsLoss": "binary_cross_entropy_with_logits",
}
GRAD_DTYPES = (torch.float32, torch.float64)
HALF_DTYPES = (torch.float16, torch.bfloat16)


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


@contextlib.contextmanager
def _seeded(*key: Any) -> Iterator[None]:
    """Seed the generators PyTorch's sample functions draw from (torch's and ``random``'s) from ``key``,
    and leave the process's generators as they were afterwards."""
    seed = zlib.crc32(repr(key).encode())
    state = random.getstate()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        random.seed(seed)
        try:
            yield
        finally:
            random.setstate(state)


# --------------------------------------------------------------------------------------------
# One call of a loss: input, positional args (the target) and keyword args, tensors addressable
# by name ("input", "target", "weight", "pos_weight") so that transforms can swap them.


@dataclasses.dataclass
class Call:
    input: torch.Tensor
    args: tuple
    kwargs: dict

    def tensors(self) -> dict[str, torch.Tensor]:
        named = {"input": self.input}
        named.update({("target" if i == 0 else f"arg{i}"): a for i, a in enumerate(self.args)})
        named.update({k: v for k, v in self.kwargs.items() if isinstance(v, torch.Tensor)})
        return {k: v for k, v in named.items() if isinstance(v, torch.Tensor)}

    def replace(self, tensors: dict[str, torch.Tensor]) -> Call:
        args = tuple(tensors.get("target" if i == 0 else f"arg{i}", a) for i, a in enumerate(self.args))
        kwargs = {k: tensors.get(k, v) for k, v in self.kwargs.items()}
        return Call(tensors.get("input", self.input), args, kwargs)

    def map(self, f: Callable[[str, torch.Tensor], torch.Tensor]) -> Call:
        return self.replace({k: f(k, v) for k, v in self.tensors().items()})

    def fresh(self, *, grad: str = "sample") -> Call:
        """Copies as new leaves; ``grad``: "sample" keeps the sample's ``requires_grad``, "input"
        tracks the input only, "none" nothing."""

        def copy(name: str, t: torch.Tensor) -> torch.Tensor:
            tracked = {"sample": t.requires_grad, "input": name == "input" and t.requires_grad, "none": False}[grad]
            return t.detach().clone().requires_grad_(tracked)

        return self.map(copy)

    def grad_names(self) -> list[str]:
        return [k for k, v in self.tensors().items() if v.requires_grad]

    def __call__(self, fn: Callable) -> torch.Tensor:
        return fn(self.input, *self.args, **self.kwargs)

    def as_function(self, fn: Callable, names: list[str]) -> Callable:
        """``fn`` as a function of the named tensors, positionally (for gradcheck and torch.func)."""

        def f(*tensors: torch.Tensor) -> torch.Tensor:
            return self.replace(dict(zip(names, tensors, strict=True)))(fn)

        return f


def _effective_reduction(kwargs: dict) -> str:
    if kwargs.get("size_average") is not None or kwargs.get("reduce") is not None:
        from torch.nn import _reduction

        return _reduction.legacy_get_string(kwargs.get("size_average"), kwargs.get("reduce"), emit_warning=False)
    return kwargs.get("reduction", "mean")


def _all_ignored_mean(kind: str, call: Call) -> bool:
    """Every index target ignored under a mean: our documented 0 (and zero gradient) where PyTorch gives NaN."""
    target = call.args[0]
    if kind not in INDEX_TARGET_OPS or target.is_floating_point() or _effective_reduction(call.kwargs) != "mean":
        return False
    return bool((target == call.kwargs.get("ignore_index", -100)).all())


def _refusal(kind: str, call: Call) -> str | None:
    """The reason for a documented, deliberate refusal of ours, or None."""
    for name in ("weight", "pos_weight"):
        w = call.kwargs.get(name)
        if isinstance(w, torch.Tensor) and bool((w < 0).any()):
            return (
                f"deliberate refusal: negative class weights (`{name}` has negative entries): "
                "crossentropy raises ValueError, PyTorch computes a number"
            )
    target = call.args[0]
    if kind in BCE_OPS and bool(((target < 0) | (target > 1)).any()):
        return "deliberate refusal: BCE targets outside [0, 1]: crossentropy raises ValueError"
    return None


def _describe(kind: str, call: Call) -> str:
    parts = ["x".join(map(str, call.input.shape)) or "0d"]
    if kind == "cross_entropy" and call.args[0].is_floating_point():
        parts.append("probs")
    for k, v in call.kwargs.items():
        if isinstance(v, torch.Tensor):
            parts.append(f"{k}{'x'.join(map(str, v.shape)) or '0d'}")
        else:
            parts.append(f"{k}={v}")
    return "-".join(parts)


# --------------------------------------------------------------------------------------------
# OpInfo samples


@functools.cache
def _op_samples(kind: str, dtype: torch.dtype) -> tuple[Call, ...]:
    with _seeded("op", kind, dtype):
        samples = OPS[kind].sample_inputs(DEVICE, dtype, requires_grad=True)
        return tuple(Call(s.input, tuple(s.args), dict(s.kwargs)) for s in samples)


@dataclasses.dataclass(frozen=True)
class OpCase:
    kind: str
    index: int
    dtype: torch.dtype
    absolute_weights: bool = False  # our derived variant: the sample with |weight|, |pos_weight|

    @property
    def op(self):
        return OPS[self.kind]

    def call(self) -> Call:
        call = _op_samples(self.kind, self.dtype)[self.index]
        if self.absolute_weights:
            call = call.replace({k: call.kwargs[k].abs() for k in ("weight", "pos_weight") if k in call.kwargs})
        return call.fresh()

    @property
    def id(self) -> str:
        desc = _describe(self.kind, _op_samples(self.kind, self.dtype)[self.index])
        tag = "absw" if self.absolute_weights else ""
        return f"{self.kind}-{self.index:02d}{tag}-{desc}-{_dtype_name(self.dtype)}"

    def ours(self) -> Callable:
        return getattr(cet, self.kind)

    def theirs(self) -> Callable:
        return self.op.op


def _op_dtypes(kind: str) -> list[torch.dtype]:
    declared = OPS[kind].supported_dtypes(DEVICE)
    return [d for d in (torch.float64, torch.float32, torch.bfloat16, torch.float16) if d in declared]


def _all_op_cases() -> tuple[list[OpCase], list[tuple[OpCase, str]]]:
    checked, refused = [], []
    for kind in OP_NAMES:
        for dtype in _op_dtypes(kind):
            for index, call in enumerate(_op_samples(kind, dtype)):
                case = OpCase(kind, index, dtype)
                reason = _refusal(kind, call)
                if reason is None:
                    checked.append(case)
                else:
                    refused.append((case, reason))
                    derived = OpCase(kind, index, dtype, absolute_weights=True)
                    if _refusal(kind, derived.call()) is None:
                        checked.append(derived)
    return checked, refused


OP_CASES, OP_REFUSED = _all_op_cases()


def _op_params(dtypes, *, needs: str | None = None) -> list:
    """pytest params of the op cases in ``dtypes`` whose OpInfo has the flag ``needs``."""
    return [
        pytest.param(case, id=case.id)
        for case in OP_CASES
        if case.dtype in dtypes and (needs is None or getattr(case.op, needs))
    ]


# --------------------------------------------------------------------------------------------
# ModuleInfo samples


@functools.cache
def _module_samples(name: str, dtype: torch.dtype) -> tuple:
    info = MODULES[name]
    with _seeded("module", name, dtype):
        return tuple(info.module_inputs_func(info, device=DEVICE, dtype=dtype, requires_grad=True, training=True))


def _module_call(module_input) -> tuple[tuple, dict, Call]:
    """Constructor args and kwargs, and the forward call with its tensors made leaves."""
    forward = module_input.forward_input
    input, target = forward.args
    call = Call(input, (target,), dict(forward.kwargs)).fresh()
    return tuple(module_input.constructor_input.args), dict(module_input.constructor_input.kwargs), call


@dataclasses.dataclass(frozen=True)
class ModuleCase:
    name: str
    index: int
    dtype: torch.dtype
    absolute_weights: bool = False  # our derived variant: the sample with |weight|, |pos_weight|

    def parts(self) -> tuple[tuple, dict, Call]:
        args, kwargs, call = _module_call(_module_samples(self.name, self.dtype)[self.index])
        if self.absolute_weights:
            kwargs = {k: (v.abs() if k in ("weight", "pos_weight") else v) for k, v in kwargs.items()}
        return args, kwargs, call

    @property
    def id(self) -> str:
        module_input = _module_samples(self.name, self.dtype)[self.index]
        desc = module_input.desc or "default"
        shape = "x".join(map(str, module_input.forward_input.args[0].shape)) or "0d"
        tag = "absw" if self.absolute_weights else ""
        return f"{self.name}-{self.index:02d}{tag}-{desc}-{shape}-{_dtype_name(self.dtype)}"

    def modules(self) -> tuple[torch.nn.Module, torch.nn.Module]:
        args, kwargs, _ = self.parts()
        cls = MODULES[self.name].module_cls
        return getattr(cet, self.name)(*args, **kwargs), cls(*args, **kwargs)

    def kind(self) -> str:
        return MODULE_FUNCTION[self.name]

    def full_kwargs(self, call: Call) -> Call:
        """The forward call with the constructor's options as keyword arguments (the function's view)."""
        _, kwargs, _ = self.parts()
        return Call(call.input, call.args, {**kwargs, **call.kwargs})


def _all_module_cases() -> tuple[list[ModuleCase], list[tuple[ModuleCase, str]]]:
    checked, refused = [], []
    for name, info in MODULES.items():
        for dtype in info.dtypes:
            for index in range(len(_module_samples(name, dtype))):
                case = ModuleCase(name, index, dtype)
                _, _, call = case.parts()
                reason = _refusal(case.kind(), case.full_kwargs(call))
                if reason is None:
                    checked.append(case)
                else:
                    refused.append((case, reason))
                    derived = ModuleCase(name, index, dtype, absolute_weights=True)
                    if _refusal(case.kind(), derived.full_kwargs(call)) is None:
                        checked.append(derived)
    return checked, refused


MODULE_CASES, MODULE_REFUSED = _all_module_cases()


def _module_params(dtypes, *, needs: str | None = None) -> list:
    return [
        pytest.param(case, id=case.id)
        for case in MODULE_CASES
        if case.dtype in dtypes and (needs is None or getattr(MODULES[case.name], needs))
    ]


# --------------------------------------------------------------------------------------------
# Comparison helpers


def _expected_forward(kind: str, call: Call, theirs: torch.Tensor) -> torch.Tensor:
    """PyTorch's value, with our documented difference put in explicitly: when every target is
    ignored, the mean is 0, not NaN (checked to be NaN on PyTorch's side, so that this rewrite
    only ever applies to that case)."""
    if _all_ignored_mean(kind, call):
        assert torch.isnan(theirs).all(), "PyTorch no longer gives NaN when every target is ignored"
        return torch.zeros_like(theirs)
    return theirs


def _reference_half(fn: Callable, call: Call, dtype: torch.dtype) -> torch.Tensor:
    """PyTorch's float64 value on the same half-precision inputs, rounded to ``dtype``."""
    wide = call.map(lambda _, t: t.detach().double() if t.is_floating_point() else t)
    return wide(fn).to(dtype)


def _assert_close(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    torch.testing.assert_close(actual, expected, msg=lambda m: f"{what}: {m}")


def _cotangent(out: torch.Tensor) -> torch.Tensor:
    g = torch.Generator().manual_seed(out.numel())
    return (torch.rand(out.shape, generator=g, dtype=torch.float64) + 0.5).to(out.dtype)


def _autograd_grads(fn: Callable, call: Call, names: list[str]) -> tuple[torch.Tensor, tuple]:
    out = call(fn)
    tensors = [call.tensors()[n] for n in names]
    grads = torch.autograd.grad(out, tensors, _cotangent(out), allow_unused=True)
    return out, grads


def _gradcheck_kwargs(op) -> dict:
    """gradcheck's options as PyTorch's own ``TestGradients`` sets them for this OpInfo."""
    return {
        "check_grad_dtypes": True,
        "nondet_tol": op.gradcheck_nondet_tol,
        "fast_mode": True if op.gradcheck_fast_mode is None else op.gradcheck_fast_mode,
    }


def _where(error: BaseException) -> str:
    """The innermost frame of the library in ``error``'s traceback (or its causes'), and the innermost overall."""
    frames, seen = [], error
    while seen is not None:  # the error's frames, then its cause's (deeper), and so on
        frames += traceback.extract_tb(seen.__traceback__)
        seen = seen.__cause__ or seen.__context__
    ours = [f for f in frames if "/src/crossentropy/" in f.filename]
    shown = list(dict.fromkeys((f.filename, f.lineno, f.name) for f in [*ours[-1:], *frames[-1:]]))
    short = functools.partial(re.sub, r".*/site-packages/|.*/(?=src/crossentropy/)", "")
    return "; ".join(f"{short(path)}:{line} in {name}" for path, line, name in shown)


def _each(checks: dict[str, Callable[[], None]]) -> None:
    """Run every variant of a check; fail once, naming each variant that failed, its error and where.

    A variant that skips (PyTorch's own op fails under the transform) does not stop the others;
    the test skips only when every variant does.
    """
    failures, skips = [], []
    for variant, check in checks.items():
        try:
            check()
        except pytest.skip.Exception as skip:
            skips.append(f"[{variant}] {skip.msg}")
        except Exception as error:
            message = str(error).strip() or repr(error)
            failures.append(f"[{variant}] {type(error).__name__}: {message}\n    at {_where(error)}")
    if failures:
        pytest.fail("\n".join(failures + skips), pytrace=False)
    if skips and len(skips) == len(checks):
        pytest.skip("; ".join(skips))


def _variants(case: OpCase, check: Callable[[OpCase, str], None], *, nograd: bool = False) -> dict:
    """``sample``: tracked as PyTorch's sample is; ``input``: the input only, for the losses with a fused
    path (softmax and sigmoid) when the sample tracks more (the targets): only then do they take the
    fused path; ``nograd``: nothing tracked."""
    sample = _op_samples(case.kind, case.dtype)[case.index]
    variants = {"sample": functools.partial(check, case, "sample")}
    if case.kind in FUSED_KINDS and len(sample.grad_names()) > 1:
        variants["input"] = functools.partial(check, case, "input")
    if nograd:
        variants["nograd"] = functools.partial(check, case, "none")
    return variants


# PyTorch 2.13's forward-mode AD loads its jvp decompositions through torch.jit.script, which the
# same release deprecates: PyTorch's warning (on the first dual_level() of the process), not ours.
_JIT_DEPRECATION = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")


# --------------------------------------------------------------------------------------------
# Sample counts: the suite cannot silently run zero samples; refusals are the documented ones.


@pytest.mark.parametrize("kind", OP_NAMES)
def test_op_samples_collected(kind):
    assert {torch.float32, torch.float64} <= set(_op_dtypes(kind))
    for dtype in _op_dtypes(kind):
        total = len(_op_samples(kind, dtype))
        checked = sum(1 for c in OP_CASES if c.kind == kind and c.dtype == dtype and not c.absolute_weights)
        derived = sum(1 for c in OP_CASES if c.kind == kind and c.dtype == dtype and c.absolute_weights)
        refused = sum(1 for c, _ in OP_REFUSED if c.kind == kind and c.dtype == dtype)
        assert total > 0, f"PyTorch's OpInfo for {kind} gave no {dtype} samples"
        assert checked > 0
        assert checked + refused == total
        assert derived == refused, "every refused sample is checked with |weight| instead"
    assert OPS[kind].error_inputs_func is None, "PyTorch now has error inputs for this op: test them"
    # Every check applies to every op today; a flag PyTorch turns off drops the check for that op.
    flags = ("supports_autograd", "supports_gradgrad", "supports_fwgrad_bwgrad", "supports_forward_ad")
    flags += ("check_batched_grad", "check_batched_gradgrad", "check_batched_forward_grad")
    assert all(getattr(OPS[kind], flag) for flag in flags), {flag: getattr(OPS[kind], flag) for flag in flags}


@pytest.mark.parametrize("name", MODULE_NAMES)
def test_module_samples_collected(name):
    for dtype in MODULES[name].dtypes:
        total = len(_module_samples(name, dtype))
        checked = sum(1 for c in MODULE_CASES if c.name == name and c.dtype == dtype and not c.absolute_weights)
        derived = sum(1 for c in MODULE_CASES if c.name == name and c.dtype == dtype and c.absolute_weights)
        refused = sum(1 for c, _ in MODULE_REFUSED if c.name == name and c.dtype == dtype)
        assert total > 0
        assert checked > 0
        assert checked + refused == total
        assert derived == refused, "every refused sample is checked with |weight| instead"


def test_refusals_are_only_the_documented_ones():
    documented = (
        "deliberate refusal: negative class weights (`weight` has negative entries)",
        "deliberate refusal: negative class weights (`pos_weight` has negative entries)",
        "deliberate refusal: BCE targets outside [0, 1]",
    )
    reasons = Counter(reason.split(":")[0] + ":" + reason.split(":")[1] for _, reason in OP_REFUSED + MODULE_REFUSED)
    assert set(reasons) <= set(documented), reasons


@pytest.mark.parametrize("name", OP_NAMES + MODULE_NAMES)
def test_refusal(name):
    """The samples filtered out as deliberate refusals: we raise a ValueError naming the parameter."""
    refused = [
        (c, r)
        for c, r in OP_REFUSED + MODULE_REFUSED
        if getattr(c, "kind", None) == name or getattr(c, "name", None) == name
    ]
    for case, reason in refused:
        assert "deliberate refusal" in reason
        with pytest.raises(ValueError, match=r"`(weight|pos_weight|targets?)`"):
            _call_ours(case)


def _call_ours(case: OpCase | ModuleCase) -> torch.Tensor:
    if isinstance(case, OpCase):
        return case.call()(case.ours())
    args, kwargs, call = case.parts()
    return call(getattr(cet, case.name)(*args, **kwargs))


# --------------------------------------------------------------------------------------------
# OpInfo checks: forward value


def _check_forward(case: OpCase, grad: str) -> None:
    call = case.call().fresh(grad=grad)
    ours = call(case.ours())
    if case.dtype in HALF_DTYPES:
        expected = _expected_forward(case.kind, call, _reference_half(case.theirs(), call, case.dtype))
    else:
        expected = _expected_forward(case.kind, call, call.fresh(grad="none")(case.theirs()))
    assert ours.dtype == case.dtype, f"dtype {ours.dtype}, expected {case.dtype}"
    _assert_close(ours, expected, "loss")


@pytest.mark.parametrize("case", _op_params((torch.float64, torch.float32, *HALF_DTYPES)))
def test_op_forward(case):
    _each(_variants(case, _check_forward, nograd=True))


# --------------------------------------------------------------------------------------------
# OpInfo checks: first-order gradients


def _check_grad(case: OpCase, grad: str) -> None:
    call = case.call().fresh(grad=grad)
    names = call.grad_names()
    _, our_grads = _autograd_grads(case.ours(), call, names)
    _, their_grads = _autograd_grads(case.theirs(), call.fresh(grad=grad), names)
    if _all_ignored_mean(case.kind, call):  # documented: 0 with a zero gradient (PyTorch: NaN)
        their_grads = tuple(None if g is None else torch.zeros_like(g) for g in their_grads)
    for name, mine, expected in zip(names, our_grads, their_grads, strict=True):
        if expected is None:
            assert mine is None or not mine.any(), f"gradient wrt {name}: PyTorch has none"
        else:
            assert mine is not None, f"gradient wrt {name}: ours is None"
            _assert_close(mine, expected, f"gradient wrt {name}")


@pytest.mark.parametrize("case", _op_params(GRAD_DTYPES, needs="supports_autograd"))
def test_op_grad(case):
    _each(_variants(case, _check_grad))


def _gradcheck(case: OpCase, grad: str, **options) -> None:
    call = case.call().fresh(grad=grad)
    names = call.grad_names()
    tensors = tuple(call.tensors()[n] for n in names)
    assert torch.autograd.gradcheck(
        call.as_function(case.ours(), names), tensors, **{**_gradcheck_kwargs(case.op), **options}
    )


@pytest.mark.parametrize("case", _op_params((torch.float64,), needs="supports_autograd"))
def test_op_gradcheck(case):
    _each(_variants(case, functools.partial(_gradcheck, check_batched_grad=False, check_undefined_grad=True)))


@pytest.mark.parametrize("case", _op_params((torch.float64,), needs="check_batched_grad"))
def test_op_batched_grad(case):
    """gradcheck's vmap over the backward (``check_batched_grad``), as PyTorch's ``test_fn_grad`` runs it."""
    _each(_variants(case, functools.partial(_gradcheck, check_batched_grad=True, check_undefined_grad=True)))


# --------------------------------------------------------------------------------------------
# OpInfo checks: second order


def _gradgradcheck(case: OpCase, grad: str, *, contiguities=(False, True), **options) -> None:
    """``gradgradcheck`` with contiguous and non-contiguous grad outputs, as PyTorch's ``TestGradients``
    (the batched and forward-over-reverse variants use contiguous ones only, to keep this file's time)."""
    call = case.call().fresh(grad=grad)
    names = call.grad_names()
    tensors = tuple(call.tensors()[n] for n in names)
    fn = call.as_function(case.ours(), names)
    for non_contiguous in contiguities:
        assert torch.autograd.gradgradcheck(
            fn, tensors, gen_non_contig_grad_outputs=non_contiguous, **{**_gradcheck_kwargs(case.op), **options}
        )


@pytest.mark.parametrize("case", _op_params((torch.float64,), needs="supports_gradgrad"))
def test_op_gradgradcheck(case):
    _each(_variants(case, functools.partial(_gradgradcheck, check_batched_grad=False)))


@pytest.mark.parametrize("case", _op_params((torch.float64,), needs="check_batched_gradgrad"))
def test_op_batched_gradgrad(case):
    _each(_variants(case, functools.partial(_gradgradcheck, contiguities=(False,), check_batched_grad=True)))


@_JIT_DEPRECATION
@pytest.mark.parametrize("case", _op_params((torch.float64,), needs="supports_fwgrad_bwgrad"))
def test_op_fwgrad_bwgrad(case):
    """Forward-over-reverse (``supports_fwgrad_bwgrad``): the forward AD of our backward."""
    check = functools.partial(
        _gradgradcheck,
        contiguities=(False,),
        check_fwd_over_rev=True,
        check_rev_over_rev=False,
        check_batched_grad=False,
        check_undefined_grad=False,
    )
    _each(_variants(case, check))


# --------------------------------------------------------------------------------------------
# OpInfo checks: forward-mode AD


@_JIT_DEPRECATION
@pytest.mark.parametrize("case", _op_params((torch.float64,), needs="supports_forward_ad"))
def test_op_forward_ad(case):
    check = functools.partial(
        _gradcheck,
        check_forward_ad=True,
        check_backward_ad=False,
        check_undefined_grad=True,
        check_batched_grad=False,
    )
    _each(_variants(case, check))


@_JIT_DEPRECATION
@pytest.mark.parametrize("case", _op_params((torch.float64,), needs="check_batched_forward_grad"))
def test_op_batched_forward_grad(case):
    check = functools.partial(
        _gradcheck,
        check_forward_ad=True,
        check_backward_ad=False,
        check_undefined_grad=False,
        check_batched_grad=False,
        check_batched_forward_grad=True,
    )
    _each(_variants(case, check))


def _jvp(fn: Callable, call: Call, names: list[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
    g = torch.Generator().manual_seed(7)
    with fwAD.dual_level():
        duals = {}
        for n in names:
            t = call.tensors()[n].detach()
            duals[n] = fwAD.make_dual(t, torch.randn(t.shape, generator=g, dtype=torch.float64).to(t.dtype))
        primal, tangent = fwAD.unpack_dual(call.replace(duals)(fn))
        return primal, tangent


def _check_jvp(case: OpCase, grad: str) -> None:
    call = case.call().fresh(grad=grad)
    names = call.grad_names()
    ours, our_tangent = _jvp(case.ours(), call, names)
    theirs, their_tangent = _jvp(case.theirs(), call.fresh(grad=grad), names)
    if _all_ignored_mean(case.kind, call):
        their_tangent = torch.zeros_like(their_tangent)
    _assert_close(ours, _expected_forward(case.kind, call, theirs), "primal")
    assert our_tangent is not None, "the forward-AD tangent was dropped (unpack_dual gives no tangent)"
    _assert_close(our_tangent, their_tangent, "tangent")


@_JIT_DEPRECATION
@pytest.mark.parametrize("case", _op_params((torch.float32,), needs="supports_forward_ad"))
def test_op_jvp(case):
    """The tangent of a ``torch.autograd.forward_ad`` dual against PyTorch's (float32: the kernels' dtype;
    float64 tangents are gradcheck's, in ``test_op_forward_ad``)."""
    _each(_variants(case, _check_jvp))


# --------------------------------------------------------------------------------------------
# OpInfo checks: torch.func


def _theirs_or_skip(thunk: Callable, what: str):
    try:
        return thunk()
    except Exception as error:  # PyTorch's own op fails under the transform: not required of us
        pytest.skip(f"PyTorch's own op fails under {what} for this sample: {type(error).__name__}: {error}")


def _check_func_grad(case: OpCase, grad: str) -> None:
    call = case.call().fresh(grad=grad)
    names = call.grad_names()
    plain = call.fresh(grad="none")
    tensors = tuple(plain.tensors()[n] for n in names)
    argnums = tuple(range(len(names)))

    def summed(fn):
        f = plain.as_function(fn, names)
        return lambda *ts: f(*ts).sum()

    theirs = _theirs_or_skip(lambda: torch.func.grad(summed(case.theirs()), argnums)(*tensors), "torch.func.grad")
    ours = torch.func.grad(summed(case.ours()), argnums)(*tensors)
    if _all_ignored_mean(case.kind, call):
        theirs = tuple(torch.zeros_like(t) for t in theirs)
    for name, mine, expected in zip(names, ours, theirs, strict=True):
        _assert_close(mine, expected, f"torch.func.grad wrt {name}")


@pytest.mark.parametrize("case", _op_params((torch.float32,), needs="supports_autograd"))
def test_op_func_grad(case):
    """``torch.func.grad`` of the summed loss wrt every tensor the sample tracks (``sample``), or the input."""
    _each(_variants(case, _check_func_grad))


def _batched(t: torch.Tensor) -> torch.Tensor:
    """Two rows: the tensor, and the tensor flipped on every dimension (still a valid value of its kind)."""
    return torch.stack([t, t.flip(list(range(t.ndim)))])


def _vmap_case(case: OpCase, grad: str, batch: tuple[str, ...]):
    call = case.call().fresh(grad=grad)
    names = list(call.tensors())
    batched = [_batched(t) if n in batch else t for n, t in call.tensors().items()]
    in_dims = tuple(0 if n in batch else None for n in names)
    return call, names, batched, in_dims


def _check_vmap(case: OpCase, grad: str, batch: tuple[str, ...]) -> None:
    call, names, batched, in_dims = _vmap_case(case, grad, batch)
    theirs = _theirs_or_skip(lambda: torch.func.vmap(call.as_function(case.theirs(), names), in_dims)(*batched), "vmap")
    ours = torch.func.vmap(call.as_function(case.ours(), names), in_dims)(*batched)
    _assert_close(ours, _expected_forward(case.kind, call, theirs), "vmap value")
    tracked = [(n, t) for n, t in zip(names, batched, strict=True) if t.requires_grad]
    if tracked:  # and the backward through the vmapped loss
        cotangent = _cotangent(ours)
        our_grads = torch.autograd.grad(ours, [t for _, t in tracked], cotangent)
        their_grads = torch.autograd.grad(theirs, [t for _, t in tracked], cotangent)
        if _all_ignored_mean(case.kind, call):
            their_grads = tuple(torch.zeros_like(g) for g in their_grads)
        for (name, _), mine, expected in zip(tracked, our_grads, their_grads, strict=True):
            _assert_close(mine, expected, f"gradient through vmap wrt {name}")


def _check_vmap_grad(case: OpCase) -> None:
    """Per-sample gradients: vmap of torch.func.grad wrt the input (input and target batched)."""
    call, names, batched, in_dims = _vmap_case(case, "none", ("input", "target"))

    def per_sample(fn):
        f = call.as_function(fn, names)
        return torch.func.vmap(torch.func.grad(lambda *ts: f(*ts).sum(), argnums=0), in_dims)

    theirs = _theirs_or_skip(lambda: per_sample(case.theirs())(*batched), "vmap(grad)")
    ours = per_sample(case.ours())(*batched)
    if _all_ignored_mean(case.kind, call):
        theirs = torch.zeros_like(theirs)
    _assert_close(ours, theirs, "per-sample gradient wrt input")


@pytest.mark.parametrize("case", _op_params((torch.float32,)))
def test_op_vmap(case):
    """``torch.func.vmap`` over a batch dimension in front, against PyTorch's vmap. Variants:
    ``input``: input and target batched, the weights shared, the input tracked (the fused path under
    vmap) and the gradient through the vmapped loss compared too; ``nograd``: the same untracked;
    ``weights``: every tensor batched, the weights too; ``grad``: vmap of torch.func.grad (per-sample
    gradients)."""
    checks = {
        "input": functools.partial(_check_vmap, case, "input", ("input", "target")),
        "nograd": functools.partial(_check_vmap, case, "none", ("input", "target")),
        "weights": functools.partial(_check_vmap, case, "none", ("input", "target", "weight", "pos_weight")),
    }
    if case.op.supports_autograd:
        checks["grad"] = functools.partial(_check_vmap_grad, case)
    _each(checks)


# --------------------------------------------------------------------------------------------
# ModuleInfo checks


def _check_module_forward(case: ModuleCase, grad: str) -> None:
    ours_module, their_module = case.modules()
    _, their_kwargs, call = case.parts()
    call = call.fresh(grad=grad)
    ours = call(ours_module)
    if case.dtype in HALF_DTYPES:
        wide = {k: (v.double() if isinstance(v, torch.Tensor) else v) for k, v in their_kwargs.items()}
        expected = _reference_half(MODULES[case.name].module_cls(**wide), call, case.dtype)
    else:
        expected = call.fresh(grad="none")(their_module)
    assert ours.dtype == case.dtype, f"dtype {ours.dtype}, expected {case.dtype}"
    _assert_close(ours, _expected_forward(case.kind(), case.full_kwargs(call), expected), "loss")


@pytest.mark.parametrize("case", _module_params((torch.float64, torch.float32, *HALF_DTYPES)))
def test_module_forward(case):
    """The module's forward with the sample's tensors tracked, and untracked (``nograd``)."""
    _each(
        {
            "sample": functools.partial(_check_module_forward, case, "sample"),
            "nograd": functools.partial(_check_module_forward, case, "none"),
        }
    )


@pytest.mark.parametrize("case", _module_params(GRAD_DTYPES))
def test_module_grad(case):
    ours_module, their_module = case.modules()
    _, _, call = case.parts()
    names = call.grad_names()
    _, our_grads = _autograd_grads(ours_module, call, names)
    _, their_grads = _autograd_grads(their_module, call.fresh(), names)
    if _all_ignored_mean(case.kind(), case.full_kwargs(call)):
        their_grads = tuple(torch.zeros_like(g) for g in their_grads)
    for name, mine, expected in zip(names, our_grads, their_grads, strict=True):
        _assert_close(mine, expected, f"gradient wrt {name}")


@pytest.mark.parametrize("case", _module_params((torch.float64,)))
def test_module_gradcheck(case):
    ours_module, _ = case.modules()
    _, _, call = case.parts()
    names = call.grad_names()
    tensors = tuple(call.tensors()[n] for n in names)
    assert torch.autograd.gradcheck(call.as_function(ours_module, names), tensors, fast_mode=True)


@pytest.mark.parametrize("case", _module_params((torch.float64,), needs="supports_gradgrad"))
def test_module_gradgradcheck(case):
    ours_module, _ = case.modules()
    _, _, call = case.parts()
    names = call.grad_names()
    tensors = tuple(call.tensors()[n] for n in names)
    assert torch.autograd.gradgradcheck(call.as_function(ours_module, names), tensors, fast_mode=True)


# --------------------------------------------------------------------------------------------
# Error inputs (ModuleInfo's; the OpInfos have none): through our modules and our functions


def _error_params() -> list:
    params = []
    for name, info in MODULES.items():
        if info.module_error_inputs_func is None:
            continue
        for dtype in info.dtypes:
            with _seeded("errors", name, dtype):
                errors = info.module_error_inputs_func(
                    info, device=DEVICE, dtype=dtype, requires_grad=False, training=True
                )
            for index, error in enumerate(errors):
                pattern = re.sub(r"\W+", "_", error.error_regex)[:40].strip("_")
                params.append(pytest.param(name, error, id=f"{name}-{index}-{pattern}-{_dtype_name(dtype)}"))
    return params


ERROR_PARAMS = _error_params()


def test_error_inputs_collected():
    assert {p.values[0] for p in ERROR_PARAMS} == {"CrossEntropyLoss", "NLLLoss"}


def _raise_through_torch(name: str, error) -> None:
    module_input = error.module_error_input
    module = MODULES[name].module_cls(*module_input.constructor_input.args, **module_input.constructor_input.kwargs)
    module(*module_input.forward_input.args, **module_input.forward_input.kwargs)


def _raise_through(name: str, error, *, functional: bool) -> None:
    module_input = error.module_error_input
    args, kwargs = module_input.constructor_input.args, module_input.constructor_input.kwargs
    forward = module_input.forward_input
    if functional:
        getattr(cet, MODULE_FUNCTION[name])(*forward.args, *args, **kwargs, **forward.kwargs)
    else:
        getattr(cet, name)(*args, **kwargs)(*forward.args, **forward.kwargs)


@pytest.mark.parametrize(("name", "error"), ERROR_PARAMS)
@pytest.mark.parametrize("api", ["module", "functional"])
def test_error_inputs(name, error, api):
    """PyTorch raises (its type and message checked, to keep the material honest); so must we, with
    one of the four usual types and a message (not necessarily PyTorch's type and words)."""
    assert error.error_on in (ModuleErrorEnum.CONSTRUCTION_ERROR, ModuleErrorEnum.FORWARD_ERROR)
    with pytest.raises(error.error_type, match=error.error_regex):
        _raise_through_torch(name, error)
    with pytest.raises(ERRORS) as raised:
        _raise_through(name, error, functional=api == "functional")
    assert str(raised.value).strip(), "an error without a message"
