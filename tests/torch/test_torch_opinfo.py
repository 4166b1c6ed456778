"""PyTorch's own test material for the drop-ins, run through ``crossentropy.torch``.

The samples are PyTorch's: the OpInfo entries ``nn.functional.cross_entropy``, ``nll_loss``,
``binary_cross_entropy``, ``binary_cross_entropy_with_logits`` and the three of
``nn.functional.linear_cross_entropy`` (``variant_test_name`` ``""``, ``"chunked"`` and
``"chunked_none"``, ids ``linear_cross_entropy``, ``linear_cross_entropy.chunked`` and
``linear_cross_entropy.chunked_none``; the chunked ones pass ``options=
torch.nn.LinearCrossEntropyOptions(...)``) of
``torch.testing._internal.common_methods_invocations.op_db``, and the ModuleInfo entries
``CrossEntropyLoss``, ``NLLLoss``, ``BCELoss``, ``BCEWithLogitsLoss`` and
``LinearCrossEntropyLoss`` of ``torch.testing._internal.common_modules.module_db`` (CPU, every
dtype they declare). Each sample goes through our function (same positional order as
``torch.nn.functional``) or module as given, and PyTorch's own function or module is the oracle.
Both modules are built with the sample's constructor arguments, and a module with parameters (the
linear loss's projection ``linear``) gets PyTorch's module's state (``load_state_dict``), so that
both compute with the same weights.

One test per check and sample (ids: op or module, sample index, a description of the sample,
dtype); a check runs in up to three variants and reports every variant that fails, with its
error and where it was raised. The variants: ``sample``, tracked as PyTorch's sample is (input,
and probability targets; the linear loss: its projection and bias too); ``input``, the input
tracked only, for ``cross_entropy`` and ``binary_cross_entropy_with_logits`` samples that also
track their targets: our CPU softmax and sigmoid losses run the fused kernels through an
``autograd.Function`` exactly when the input is the only tracked tensor, so this is what puts
those samples on the fused path (index-target samples are on it already); ``params``, the same
for ``linear_cross_entropy`` samples with probability targets: input, projection and bias tracked,
the targets not, which puts them on our custom operators (a tracked target sends the call to
plain-PyTorch chunks); ``nograd``, nothing tracked. The checks:

- ``test_op_forward`` (every dtype the OpInfo declares for the CPU) and ``test_module_forward``;
- ``test_op_grad`` / ``test_module_grad``: our autograd gradient for every tracked tensor (and
  every parameter of the module) against PyTorch's, for a random cotangent (float32, float64);
  ``test_op_gradcheck`` / ``test_module_gradcheck`` in float64, with PyTorch's options for the
  OpInfo (``fast_mode``, ``check_undefined_grad``, ``nondet_tol``) and the ModuleInfo
  (``nondet_tol``); the module checks differentiate the parameters too
  (``torch.func.functional_call``);
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
- ``test_error_inputs``: ModuleInfo's ``module_error_inputs_func`` (``CrossEntropyLoss``,
  ``NLLLoss``, ``LinearCrossEntropyLoss``) through our modules and our functions (the linear
  loss's function with a projection of the module's shape), and ``test_op_error_inputs``: the
  linear OpInfos' ``error_inputs_func`` (one function shared by the three variants: run once;
  the other four OpInfos have none) through our function: ours must raise too (a ValueError,
  TypeError, RuntimeError or IndexError with a message), not necessarily PyTorch's type and
  words;
- ``test_*_collected`` (and ``test_linear_material_collected``, for the subsets below): PyTorch's
  material is there (no check can silently run zero samples).

The linear cross-entropy. Oracles: forward values and first-order gradients (``test_op_forward``,
``test_op_grad``) are compared with PyTorch's op called with the sample as given, chunking options
included (PyTorch's chunked op falls back to its reference path, with a warning, filtered here, for
the samples its chunking does not take: K-dimensional projections, probability targets). PyTorch's
chunked variants have no forward AD, forward-over-reverse, double backward or ``torch.func`` (their
OpInfo flags and expected failures), and ``chunked_none`` no batched gradients; ours has every path
on every variant, so every check runs on all three (the checks the unchunked OpInfo's flags ask
for: :attr:`OpCase.paths`). The gradcheck-based checks need no oracle; where one is needed
(``test_op_jvp``, ``test_op_func_grad``, ``test_op_vmap``, and the half-precision values) it is
PyTorch's reference path, :meth:`OpCase.reference`: the same sample with ``options=None``, which
is ``cross_entropy(linear(...))``.

Subsets, to keep this file's time. The linear OpInfos: forward, grad, gradcheck, forward AD, jvp
and ``torch.func.grad`` run on every sample; gradgradcheck, forward-over-reverse, the three
batched checks and vmap on every third sample of each variant and dtype (``LINEAR_STRIDE``: index
% 3 == 0; 3 is prime to the 7 shapes each group of options cycles through: the subset meets every
shape and every set of keyword arguments, each with index and with probability targets). The
``LinearCrossEntropyLoss`` ModuleInfo gives 857 samples a dtype (a product of shapes, options,
reductions, ignore indices, smoothing, class weights, target kinds and bias):
``test_module_forward``, ``test_module_grad`` and ``test_module_gradcheck`` run on every third
sample (``MODULE_STRIDE``) and a pairwise cover (each sample that shows a pair of feature values,
:func:`_module_features`, not seen before in index order; 109 a dtype), about 365 a dtype;
``test_module_gradgradcheck`` on the pairwise cover. The other four losses run every check on
every sample.

Deliberate, documented refusals are filtered out of the checks above: negative class weights
(``weight`` or ``pos_weight`` with a negative entry: we raise ValueError, PyTorch computes a
number) and BCE targets outside [0, 1] (we raise). ``test_refusal`` checks, per op and module,
that we do raise on each of them, and ``|weight|`` variants (the same sample with the weights'
absolute values, our own derived samples, marked ``absw`` in the ids) keep PyTorch's weight shapes
under test. No linear sample hits a refusal (PyTorch draws their class weights positive), nor our
other documented differences there: their inputs have 1 or 2 dimensions (the OpInfo's error input
with a 3-dimensional one raises with us too, on its target's shape; ours takes any batch shape), and
ours raises ValueError or TypeError with its own words where PyTorch raises RuntimeError, which the
error checks accept. One more documented difference is handled explicitly where it arises: when
every index target is ignored, our mean is 0 with a zero gradient, where PyTorch's is NaN.

Half-precision forward values are compared with PyTorch's float64 result on the same (half)
inputs, rounded to the half dtype, with the dtype's default ``assert_close`` tolerance: PyTorch's
own half computation rounds its intermediates (we accumulate in float32) and misses that
reference by up to 65% relative on bfloat16 elementwise losses, so it cannot be the oracle there.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import random
import re
import traceback
import warnings
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
# The three OpInfo entries of F.linear_cross_entropy, "kind.variant_test_name" (the first has none).
LINEAR_KINDS = ("linear_cross_entropy", "linear_cross_entropy.chunked", "linear_cross_entropy.chunked_none")
CHUNKED_KINDS = LINEAR_KINDS[1:]
OP_KINDS = OP_NAMES + LINEAR_KINDS
MODULE_NAMES = ("CrossEntropyLoss", "NLLLoss", "BCELoss", "BCEWithLogitsLoss", "LinearCrossEntropyLoss")
OPS = {
    kind: next(
        op
        for op in op_db
        if op.name == f"nn.functional.{kind.partition('.')[0]}" and op.variant_test_name == kind.partition(".")[2]
    )
    for kind in OP_KINDS
}
MODULES = {name: next(info for info in module_db if info.module_cls.__name__ == name) for name in MODULE_NAMES}
ERRORS = (ValueError, TypeError, RuntimeError, IndexError)
FUSED_KINDS = ("cross_entropy", "binary_cross_entropy_with_logits")  # a fused autograd.Function on the CPU
BCE_OPS = ("binary_cross_entropy", "binary_cross_entropy_with_logits")
INDEX_TARGET_OPS = ("cross_entropy", "nll_loss", *LINEAR_KINDS)
MODULE_FUNCTION = {
    "CrossEntropyLoss": "cross_entropy",
    "NLLLoss": "nll_loss",
    "BCELoss": "binary_cross_entropy",
    "BCEWithLogitsLoss": "binary_cross_entropy_with_logits",
    "LinearCrossEntropyLoss": "linear_cross_entropy",
}
# The positional arguments after the input, by name (the four losses: the target only).
ARG_NAMES = {kind: ("linear_weight", "target") for kind in LINEAR_KINDS}
# What the "params" variant tracks: the linear loss's input and projection, not its targets.
LINEAR_PARAMS = ("input", "linear_weight", "linear_bias")
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
# One call of a loss: input, positional args (the target; the linear loss: its weight and the
# target) and keyword args, tensors addressable by name ("input", "target", "weight",
# "pos_weight", "linear_weight", "linear_bias") so that transforms can swap them.


@dataclasses.dataclass
class Call:
    input: torch.Tensor
    args: tuple
    kwargs: dict
    arg_names: tuple[str, ...] = ("target",)

    def _arg_name(self, i: int) -> str:
        return self.arg_names[i] if i < len(self.arg_names) else f"arg{i}"

    @property
    def target(self) -> torch.Tensor:
        return self.args[self.arg_names.index("target")]

    def tensors(self) -> dict[str, torch.Tensor]:
        named = {"input": self.input}
        named.update({self._arg_name(i): a for i, a in enumerate(self.args)})
        named.update({k: v for k, v in self.kwargs.items() if isinstance(v, torch.Tensor)})
        return {k: v for k, v in named.items() if isinstance(v, torch.Tensor)}

    def replace(self, tensors: dict[str, torch.Tensor]) -> Call:
        args = tuple(tensors.get(self._arg_name(i), a) for i, a in enumerate(self.args))
        kwargs = {k: tensors.get(k, v) for k, v in self.kwargs.items()}
        return Call(tensors.get("input", self.input), args, kwargs, self.arg_names)

    def map(self, f: Callable[[str, torch.Tensor], torch.Tensor]) -> Call:
        return self.replace({k: f(k, v) for k, v in self.tensors().items()})

    def fresh(self, *, grad: str = "sample") -> Call:
        """Copies as new leaves; ``grad``: "sample" keeps the sample's ``requires_grad``, "input"
        tracks the input only, "params" the linear loss's input, projection and bias (those the
        sample tracks), "none" nothing."""

        def copy(name: str, t: torch.Tensor) -> torch.Tensor:
            tracked = {
                "sample": t.requires_grad,
                "input": name == "input" and t.requires_grad,
                "params": name in LINEAR_PARAMS and t.requires_grad,
                "none": False,
            }[grad]
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
    target = call.target
    if kind not in INDEX_TARGET_OPS or target.is_floating_point() or _effective_reduction(call.kwargs) != "mean":
        return False
    ignore_index = call.kwargs.get("ignore_index")  # None: -100 (the linear loss's default)
    return bool((target == (-100 if ignore_index is None else ignore_index)).all())


def _refusal(kind: str, call: Call) -> str | None:
    """The reason for a documented, deliberate refusal of ours, or None."""
    for name in ("weight", "pos_weight"):
        w = call.kwargs.get(name)
        if isinstance(w, torch.Tensor) and bool((w < 0).any()):
            return (
                f"deliberate refusal: negative class weights (`{name}` has negative entries): "
                "crossentropy raises ValueError, PyTorch computes a number"
            )
    target = call.target
    if kind in BCE_OPS and bool(((target < 0) | (target > 1)).any()):
        return "deliberate refusal: BCE targets outside [0, 1]: crossentropy raises ValueError"
    return None


def _shape(t: torch.Tensor) -> str:
    return "x".join(map(str, t.shape)) or "0d"


def _describe_options(options) -> str:
    """A ``torch.nn.LinearCrossEntropyOptions`` by its fields that are not the defaults (bar ``allow_retain_graph``)."""
    if options is None:
        return "None"
    fields = {"batch_chunk_size": None, "chunking_method": "auto", "acc_policy": "auto", "acc_dtype": None}
    changed = [(k, getattr(options, k)) for k, default in fields.items() if getattr(options, k) != default]
    return "+".join(f"{k}={_dtype_name(v) if isinstance(v, torch.dtype) else v}" for k, v in changed) or "default"


def _describe(kind: str, call: Call) -> str:
    parts = [_shape(call.input)]
    if kind in LINEAR_KINDS:
        parts.append(f"W{_shape(call.args[0])}")
    if kind in ("cross_entropy", *LINEAR_KINDS) and call.target.is_floating_point():
        parts.append("probs")
    for k, v in call.kwargs.items():
        if isinstance(v, torch.Tensor):
            parts.append(f"{k}{_shape(v)}")
        elif k == "options":
            parts.append(f"options={_describe_options(v)}")
        else:
            parts.append(f"{k}={v}")
    return "-".join(parts)


# --------------------------------------------------------------------------------------------
# OpInfo samples


@functools.cache
def _op_samples(kind: str, dtype: torch.dtype) -> tuple[Call, ...]:
    with _seeded("op", kind, dtype):
        samples = OPS[kind].sample_inputs(DEVICE, dtype, requires_grad=True)
        names = ARG_NAMES.get(kind, ("target",))
        return tuple(Call(s.input, tuple(s.args), dict(s.kwargs), names) for s in samples)


def _without_options(fn: Callable) -> Callable:
    """PyTorch's linear cross-entropy on its reference path (``options=None``: ``cross_entropy(linear(...))``)."""

    @functools.wraps(fn)
    def reference(*args, **kwargs):
        return fn(*args, **{**kwargs, "options": None})

    return reference


@dataclasses.dataclass(frozen=True)
class OpCase:
    kind: str
    index: int
    dtype: torch.dtype
    absolute_weights: bool = False  # our derived variant: the sample with |weight|, |pos_weight|

    @property
    def op(self):
        return OPS[self.kind]

    @property
    def paths(self):
        """The OpInfo whose flags say which autograd paths run: the case's own, except for the chunked
        linear variants, whose PyTorch op lacks some paths that ours has: the unchunked one's."""
        return OPS[LINEAR_KINDS[0]] if self.kind in CHUNKED_KINDS else self.op

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
        return getattr(cet, self.kind.partition(".")[0])

    def theirs(self) -> Callable:
        """PyTorch's op, called as the sample is (forward and first-order gradients)."""
        return self.op.op

    def reference(self) -> Callable:
        """PyTorch's op on a path it differentiates in every way (the oracle of forward AD, torch.func and
        half-precision values): the op itself for the four losses; for the linear variants the same sample
        with ``options=None`` (PyTorch's chunked path refuses forward AD and torch.func; the unchunked
        variant's samples have no ``options``, so this is its op as given)."""
        return _without_options(self.op.op) if self.kind in LINEAR_KINDS else self.op.op


def _op_dtypes(kind: str) -> list[torch.dtype]:
    declared = OPS[kind].supported_dtypes(DEVICE)
    return [d for d in (torch.float64, torch.float32, torch.bfloat16, torch.float16) if d in declared]


def _all_op_cases() -> tuple[list[OpCase], list[tuple[OpCase, str]]]:
    checked, refused = [], []
    for kind in OP_KINDS:
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


# The expensive checks (second order, batched, vmap) run on every LINEAR_STRIDE-th sample of each
# linear variant and dtype (index % LINEAR_STRIDE == 0); the stride is prime to the 7 shapes each
# group of options cycles through, so the subset still meets every shape and every option.
LINEAR_STRIDE = 3


def _op_params(dtypes, *, needs: str | None = None, subset: bool = False) -> list:
    """pytest params of the op cases in ``dtypes`` whose paths (:attr:`OpCase.paths`) have the flag
    ``needs``; ``subset``: the linear variants on every ``LINEAR_STRIDE``-th sample only."""
    return [
        pytest.param(case, id=case.id)
        for case in OP_CASES
        if case.dtype in dtypes
        and (needs is None or getattr(case.paths, needs))
        and not (subset and case.kind in LINEAR_KINDS and case.index % LINEAR_STRIDE)
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
        """Ours and PyTorch's, built with the same arguments; a module with parameters (the linear
        loss's projection) gets PyTorch's module's state, so that both compute with the same weights."""
        args, kwargs, _ = self.parts()
        cls = MODULES[self.name].module_cls
        with _seeded("module-init", self.name, self.index, self.dtype):
            theirs = cls(*args, **kwargs)
        ours = getattr(cet, self.name)(*args, **kwargs)
        if any(True for _ in theirs.parameters()):
            ours.load_state_dict(theirs.state_dict())
        return ours, theirs

    def reference_module(self, their_module: torch.nn.Module) -> torch.nn.Module:
        """PyTorch's module in float64 with ``their_module``'s state (the oracle of half-precision
        values; the linear loss on its reference path, ``options=None``)."""
        args, kwargs, _ = self.parts()
        wide = {k: (v.double() if isinstance(v, torch.Tensor) else v) for k, v in kwargs.items()}
        wide.update({k: v for k, v in (("dtype", torch.float64), ("options", None)) if k in wide})
        module = MODULES[self.name].module_cls(*args, **wide)
        if any(True for _ in module.parameters()):
            module.load_state_dict(their_module.state_dict())
        return module

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


# LinearCrossEntropyLoss's ModuleInfo gives 857 samples a dtype, a product of input shapes,
# out_features, chunking options, reductions, ignore indices, label smoothing, class weights,
# target kinds and bias: its checks run on a deterministic subset. The expensive ones
# (gradgradcheck) on a pairwise cover: walking the samples in order, each sample that shows a pair
# of feature values (:func:`_module_features`) not seen yet; the others on that cover and every
# MODULE_STRIDE-th sample (index % MODULE_STRIDE == 0; 3: the product's axes have 2 or 4 values,
# so an even stride would never meet a probability target).
LINEAR_MODULE = "LinearCrossEntropyLoss"
MODULE_STRIDE = 3


def _module_features(case: ModuleCase) -> dict[str, str]:
    """What distinguishes a linear module sample: its constructor's options, its shapes and targets."""
    _, kwargs, call = case.parts()
    target, ignore_index = call.target, kwargs.get("ignore_index")
    hits = None
    if ignore_index is not None and not target.is_floating_point():
        ignored = target == ignore_index
        hits = "all" if bool(ignored.all()) else "some" if bool(ignored.any()) else "no"
    features = {
        "input": _shape(call.input),
        "out_features": kwargs.get("out_features", ()),
        "options": _describe_options(kwargs.get("options")),
        "reduction": kwargs.get("reduction", "mean"),
        "ignore_index": ignore_index,
        "label_smoothing": kwargs.get("label_smoothing", 0.0),
        "weight": kwargs.get("weight") is not None,
        "probabilities": target.is_floating_point(),
        "bias": kwargs.get("bias", False),
        "ignored_targets": hits,
    }
    return {k: str(v) for k, v in features.items()}


@functools.cache
def _module_subset(name: str, dtype: torch.dtype, *, expensive: bool) -> frozenset[int]:
    """The indices of the samples of ``name`` that the checks run on (all, for the four losses)."""
    count = len(_module_samples(name, dtype))
    if name != LINEAR_MODULE:
        return frozenset(range(count))
    seen, cover = set(), set()
    for index in range(count):
        features = _module_features(ModuleCase(name, index, dtype))
        pairs = set(itertools.combinations(features.items(), 2))
        if not pairs <= seen:
            cover.add(index)
            seen |= pairs
    return frozenset(cover if expensive else cover | set(range(0, count, MODULE_STRIDE)))


def _module_params(dtypes, *, needs: str | None = None, expensive: bool = False) -> list:
    return [
        pytest.param(case, id=case.id)
        for case in MODULE_CASES
        if case.dtype in dtypes
        and (needs is None or getattr(MODULES[case.name], needs))
        and case.index in _module_subset(case.name, case.dtype, expensive=expensive)
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
    fused path; ``params``: the same for the linear loss, whose operators serve calls that track its
    input, projection and bias but not its (probability) targets; ``nograd``: nothing tracked."""
    sample = _op_samples(case.kind, case.dtype)[case.index]
    variants = {"sample": functools.partial(check, case, "sample")}
    if case.kind in FUSED_KINDS and len(sample.grad_names()) > 1:
        variants["input"] = functools.partial(check, case, "input")
    if case.kind in LINEAR_KINDS and "target" in sample.grad_names():
        variants["params"] = functools.partial(check, case, "params")
    if nograd:
        variants["nograd"] = functools.partial(check, case, "none")
    return variants


# PyTorch 2.13's forward-mode AD loads its jvp decompositions through torch.jit.script, which the
# same release deprecates: PyTorch's warning (on the first dual_level() of the process), not ours.
_JIT_DEPRECATION = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")

# PyTorch's chunked linear cross-entropy falls back to its reference path, with a warning, for the
# samples its chunking does not take (K-dimensional projections, probability targets, bias with
# out_features): PyTorch's warning, raised by PyTorch's op (ours takes every sample).
pytestmark = pytest.mark.filterwarnings("ignore:linear_cross_entropy. ``options`` ignored:UserWarning")


# --------------------------------------------------------------------------------------------
# Sample counts: the suite cannot silently run zero samples; refusals are the documented ones.


@pytest.mark.parametrize("kind", OP_KINDS)
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
    if kind in OP_NAMES:
        assert OPS[kind].error_inputs_func is None, "PyTorch now has error inputs for this op: test them"
    else:
        assert any(p.values[0] == LINEAR_KINDS[0] for p in OP_ERROR_PARAMS)
        assert OPS[kind].error_inputs_func is OPS[LINEAR_KINDS[0]].error_inputs_func, "test each variant's own"
    # Every check applies to every op today; a flag PyTorch turns off drops the check for that op.
    flags = ("supports_autograd", "supports_gradgrad", "supports_fwgrad_bwgrad", "supports_forward_ad")
    flags += ("check_batched_grad", "check_batched_gradgrad", "check_batched_forward_grad")
    paths = OpCase(kind, 0, torch.float64).paths
    assert all(getattr(paths, flag) for flag in flags), {flag: getattr(paths, flag) for flag in flags}
    if kind in CHUNKED_KINDS:  # PyTorch's chunked path lacks these: the reference path is the oracle there
        assert not OPS[kind].supports_forward_ad, "PyTorch's chunked op has forward AD now: make it the oracle"
        assert not OPS[kind].supports_fwgrad_bwgrad, "PyTorch's chunked op has forward-over-reverse now: the oracle"


def test_linear_material_collected():
    """Every check runs on the linear variants: forward, grad, gradcheck, forward AD, jvp and
    torch.func.grad on every sample, the rest on the ``LINEAR_STRIDE`` subset; the module's checks on
    its subsets (:func:`_module_subset`). No linear sample is a refusal (the docstring says so)."""
    assert not [c for c, _ in OP_REFUSED if c.kind in LINEAR_KINDS]
    assert not [c for c, _ in MODULE_REFUSED if c.name == LINEAR_MODULE]
    for kind in LINEAR_KINDS:
        for test, dtypes, every in (
            (test_op_forward, 4, True),
            (test_op_grad, 2, True),
            (test_op_gradcheck, 1, True),
            (test_op_forward_ad, 1, True),
            (test_op_jvp, 1, True),
            (test_op_func_grad, 1, True),
            (test_op_gradgradcheck, 1, False),
            (test_op_fwgrad_bwgrad, 1, False),
            (test_op_batched_grad, 1, False),
            (test_op_batched_gradgrad, 1, False),
            (test_op_batched_forward_grad, 1, False),
            (test_op_vmap, 1, False),
        ):
            cases = [p.values[0] for p in _parametrized(test) if p.values[0].kind == kind]
            expected = [c for c in OP_CASES if c.kind == kind and (every or c.index % LINEAR_STRIDE == 0)]
            assert len(cases) == sum(1 for c in expected if c.dtype in {c.dtype for c in cases}) > 0, test.__name__
            assert len({c.dtype for c in cases}) == dtypes, test.__name__
    for test, dtypes, expensive in (
        (test_module_forward, 4, False),
        (test_module_grad, 2, False),
        (test_module_gradcheck, 1, False),
        (test_module_gradgradcheck, 1, True),
    ):
        cases = [p.values[0] for p in _parametrized(test) if p.values[0].name == LINEAR_MODULE]
        assert len({c.dtype for c in cases}) == dtypes, test.__name__
        for dtype in {c.dtype for c in cases}:
            subset = _module_subset(LINEAR_MODULE, dtype, expensive=expensive)
            assert sorted(c.index for c in cases if c.dtype == dtype) == sorted(subset), test.__name__

    # The pairwise cover meets every pair of feature values the samples have.
    def pairs(index: int) -> set:
        return set(itertools.combinations(_module_features(ModuleCase(LINEAR_MODULE, index, torch.float64)).items(), 2))

    cover = _module_subset(LINEAR_MODULE, torch.float64, expensive=True)
    every = set().union(*map(pairs, range(len(_module_samples(LINEAR_MODULE, torch.float64)))))
    assert set().union(*map(pairs, cover)) == every
    assert len(cover) < len(_module_samples(LINEAR_MODULE, torch.float64)) / 4


def _parametrized(test) -> list:
    (mark,) = [m for m in test.pytestmark if m.name == "parametrize"]
    return mark.args[1]


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


@pytest.mark.parametrize("name", OP_KINDS + MODULE_NAMES)
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
        expected = _expected_forward(case.kind, call, _reference_half(case.reference(), call, case.dtype))
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


@pytest.mark.parametrize("case", _op_params((torch.float64,), needs="check_batched_grad", subset=True))
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


@pytest.mark.parametrize("case", _op_params((torch.float64,), needs="supports_gradgrad", subset=True))
def test_op_gradgradcheck(case):
    _each(_variants(case, functools.partial(_gradgradcheck, check_batched_grad=False)))


@pytest.mark.parametrize("case", _op_params((torch.float64,), needs="check_batched_gradgrad", subset=True))
def test_op_batched_gradgrad(case):
    _each(_variants(case, functools.partial(_gradgradcheck, contiguities=(False,), check_batched_grad=True)))


@_JIT_DEPRECATION
@pytest.mark.parametrize("case", _op_params((torch.float64,), needs="supports_fwgrad_bwgrad", subset=True))
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
@pytest.mark.parametrize("case", _op_params((torch.float64,), needs="check_batched_forward_grad", subset=True))
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
    theirs, their_tangent = _jvp(case.reference(), call.fresh(grad=grad), names)
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

    theirs = _theirs_or_skip(lambda: torch.func.grad(summed(case.reference()), argnums)(*tensors), "torch.func.grad")
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
    theirs = _theirs_or_skip(
        lambda: torch.func.vmap(call.as_function(case.reference(), names), in_dims)(*batched), "vmap"
    )
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

    theirs = _theirs_or_skip(lambda: per_sample(case.reference())(*batched), "vmap(grad)")
    ours = per_sample(case.ours())(*batched)
    if _all_ignored_mean(case.kind, call):
        theirs = torch.zeros_like(theirs)
    _assert_close(ours, theirs, "per-sample gradient wrt input")


@pytest.mark.parametrize("case", _op_params((torch.float32,), subset=True))
def test_op_vmap(case):
    """``torch.func.vmap`` over a batch dimension in front, against PyTorch's vmap. Variants:
    ``input``: input and target batched, the weights shared, the input tracked (the fused path under
    vmap; the linear loss: its input, projection and bias tracked) and the gradient through the
    vmapped loss compared too; ``nograd``: the same untracked; ``weights``: every tensor batched, the
    weights (and the linear loss's projection and bias) too; ``grad``: vmap of torch.func.grad
    (per-sample gradients)."""
    tracked = "params" if case.kind in LINEAR_KINDS else "input"
    every = ("input", "target", "weight", "pos_weight", "linear_weight", "linear_bias")
    checks = {
        "input": functools.partial(_check_vmap, case, tracked, ("input", "target")),
        "nograd": functools.partial(_check_vmap, case, "none", ("input", "target")),
        "weights": functools.partial(_check_vmap, case, "none", every),
    }
    if case.paths.supports_autograd:
        checks["grad"] = functools.partial(_check_vmap_grad, case)
    _each(checks)


# --------------------------------------------------------------------------------------------
# ModuleInfo checks (a module's parameters, the linear loss's projection, are differentiated too)


def _check_module_forward(case: ModuleCase, grad: str) -> None:
    ours_module, their_module = case.modules()
    _, _, call = case.parts()
    call = call.fresh(grad=grad)
    with contextlib.nullcontext() if grad != "none" else torch.no_grad():  # parameters untracked too
        ours = call(ours_module)
        if case.dtype in HALF_DTYPES:
            expected = _reference_half(case.reference_module(their_module), call, case.dtype)
        else:
            expected = call.fresh(grad="none")(their_module)
    assert ours.dtype == case.dtype, f"dtype {ours.dtype}, expected {case.dtype}"
    _assert_close(ours, _expected_forward(case.kind(), case.full_kwargs(call), expected), "loss")


@pytest.mark.parametrize("case", _module_params((torch.float64, torch.float32, *HALF_DTYPES)))
def test_module_forward(case):
    """The module's forward with the sample's tensors (and the module's parameters) tracked, and
    untracked under ``torch.no_grad()`` (``nograd``)."""
    _each(
        {
            "sample": functools.partial(_check_module_forward, case, "sample"),
            "nograd": functools.partial(_check_module_forward, case, "none"),
        }
    )


def _module_function(module: torch.nn.Module, call: Call) -> tuple[Callable, list[str], tuple[torch.Tensor, ...]]:
    """The module's loss as a function of the call's tracked tensors and then the module's parameters
    (``torch.func.functional_call``), those names, and the tensors (fresh leaves) to call it with."""
    names = call.grad_names()
    parameters = {k: v.detach().clone().requires_grad_() for k, v in module.named_parameters()}

    def f(*tensors: torch.Tensor) -> torch.Tensor:
        swapped = dict(zip(parameters, tensors[len(names) :], strict=True))
        return call.replace(dict(zip(names, tensors[: len(names)], strict=True)))(
            lambda *args, **kwargs: torch.func.functional_call(module, swapped, args, kwargs)
        )

    tensors = tuple(call.tensors()[n] for n in names) + tuple(parameters.values())
    return f, [*names, *parameters], tensors


@pytest.mark.parametrize("case", _module_params(GRAD_DTYPES))
def test_module_grad(case):
    """The gradient wrt every tracked tensor of the forward call and every parameter of the module."""
    ours_module, their_module = case.modules()
    _, _, call = case.parts()
    results = []
    for module, fresh in ((ours_module, call), (their_module, call.fresh())):
        f, names, tensors = _module_function(module, fresh)
        out = f(*tensors)
        results.append(torch.autograd.grad(out, tensors, _cotangent(out), allow_unused=True))
    our_grads, their_grads = results
    if _all_ignored_mean(case.kind(), case.full_kwargs(call)):
        their_grads = tuple(None if g is None else torch.zeros_like(g) for g in their_grads)
    for name, mine, expected in zip(names, our_grads, their_grads, strict=True):
        if expected is None:
            assert mine is None or not mine.any(), f"gradient wrt {name}: PyTorch has none"
        else:
            assert mine is not None, f"gradient wrt {name}: ours is None"
            _assert_close(mine, expected, f"gradient wrt {name}")


@pytest.mark.parametrize("case", _module_params((torch.float64,)))
def test_module_gradcheck(case):
    ours_module, _ = case.modules()
    _, _, call = case.parts()
    f, _, tensors = _module_function(ours_module, call)
    nondet_tol = MODULES[case.name].gradcheck_nondet_tol
    assert torch.autograd.gradcheck(f, tensors, fast_mode=True, nondet_tol=nondet_tol)


@pytest.mark.parametrize("case", _module_params((torch.float64,), needs="supports_gradgrad", expensive=True))
def test_module_gradgradcheck(case):
    ours_module, _ = case.modules()
    _, _, call = case.parts()
    f, _, tensors = _module_function(ours_module, call)
    nondet_tol = MODULES[case.name].gradcheck_nondet_tol
    assert torch.autograd.gradgradcheck(f, tensors, fast_mode=True, nondet_tol=nondet_tol)


# --------------------------------------------------------------------------------------------
# Error inputs: ModuleInfo's, through our modules and our functions; the linear OpInfos', through
# our function


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


def _op_error_params() -> list:
    """The OpInfos' ``error_inputs_func`` (the three linear variants share one: run once)."""
    params, seen = [], set()
    for kind in OP_KINDS:
        func = OPS[kind].error_inputs_func
        if func is None or func in seen:
            continue
        seen.add(func)
        with _seeded("op-errors", kind):
            errors = list(OPS[kind].error_inputs(DEVICE))
        for index, error in enumerate(errors):
            pattern = re.sub(r"\W+", "_", error.error_regex)[:40].strip("_")
            params.append(pytest.param(kind, error, id=f"{kind}-{index}-{pattern}"))
    return params


OP_ERROR_PARAMS = _op_error_params()


def _pattern(regex: str) -> re.Pattern:
    """PyTorch's error regex, compiled: some (``[[]0, 1[]]``) make ``re`` warn of a possible nested set."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return re.compile(regex)


def test_error_inputs_collected():
    assert {p.values[0] for p in ERROR_PARAMS} == {"CrossEntropyLoss", "NLLLoss", LINEAR_MODULE}
    assert {p.values[0] for p in OP_ERROR_PARAMS} == {LINEAR_KINDS[0]}
    assert len(OP_ERROR_PARAMS) >= 6


def _raise_through_torch(name: str, error) -> None:
    module_input = error.module_error_input
    module = MODULES[name].module_cls(*module_input.constructor_input.args, **module_input.constructor_input.kwargs)
    module(*module_input.forward_input.args, **module_input.forward_input.kwargs)


def _linear_function_call(args: tuple, kwargs: dict, forward) -> None:
    """``LinearCrossEntropyLoss(*args, **kwargs)(*forward.args)`` as a call of our function: a projection
    (and bias) of the module's shapes, the module's options as keywords."""
    in_features, num_classes = args
    options = dict(kwargs)
    out_features = tuple(options.pop("out_features", ()))
    bias, dtype = options.pop("bias", False), options.pop("dtype", None)
    options.pop("device", None)
    linear_weight = torch.randn(num_classes, *out_features, in_features, dtype=dtype)
    linear_bias = torch.randn(num_classes, *out_features, dtype=dtype) if bias else None
    input, target = forward.args
    cet.linear_cross_entropy(input, linear_weight, target, linear_bias=linear_bias, **options, **forward.kwargs)


def _raise_through(name: str, error, *, functional: bool) -> None:
    module_input = error.module_error_input
    args, kwargs = module_input.constructor_input.args, module_input.constructor_input.kwargs
    forward = module_input.forward_input
    if functional and name == LINEAR_MODULE:
        _linear_function_call(args, kwargs, forward)
    elif functional:
        getattr(cet, MODULE_FUNCTION[name])(*forward.args, *args, **kwargs, **forward.kwargs)
    else:
        getattr(cet, name)(*args, **kwargs)(*forward.args, **forward.kwargs)


@pytest.mark.parametrize(("name", "error"), ERROR_PARAMS)
@pytest.mark.parametrize("api", ["module", "functional"])
def test_error_inputs(name, error, api):
    """PyTorch raises (its type and message checked, to keep the material honest); so must we, with
    one of the four usual types and a message (not necessarily PyTorch's type and words)."""
    assert error.error_on in (ModuleErrorEnum.CONSTRUCTION_ERROR, ModuleErrorEnum.FORWARD_ERROR)
    with pytest.raises(error.error_type, match=_pattern(error.error_regex)):
        _raise_through_torch(name, error)
    with pytest.raises(ERRORS) as raised:
        _raise_through(name, error, functional=api == "functional")
    assert str(raised.value).strip(), "an error without a message"


@pytest.mark.parametrize(("kind", "error"), OP_ERROR_PARAMS)
def test_op_error_inputs(kind, error):
    """As ``test_error_inputs``, for the OpInfo's error inputs through our function."""
    sample = error.sample_input
    with pytest.raises(error.error_type, match=_pattern(error.error_regex)):
        OPS[kind].op(sample.input, *sample.args, **sample.kwargs)
    with pytest.raises(ERRORS) as raised:
        getattr(cet, kind.partition(".")[0])(sample.input, *sample.args, **sample.kwargs)
    assert str(raised.value).strip(), "an error without a message"
