"""DTensor inputs of ``cross_entropy`` and ``linear_cross_entropy`` on 2 and 3 real processes (gloo).

One launch of ``world`` processes per world size (a module fixture) runs every case on a 1-D
``init_device_mesh("cpu", (world,))`` and saves what each rank got: the loss (``full_tensor()``
of a DTensor), the placements of the result and of the gradients, and the gradients
(``full_tensor()``). The tests compare them with one process computing on the whole tensors:
``crossentropy.torch.cross_entropy`` (and ``torch.nn.functional.cross_entropy`` where it has the
options) and ``crossentropy.torch.linear.linear_cross_entropy``. For the FSDP-style linear cases
every rank has its own tokens: its loss is the one of its tokens, and the gradient of the
sharded weight is the sum over the ranks of their gradients (what the reduce-scatter gives).
"""

from __future__ import annotations

import datetime
import inspect

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

import crossentropy.torch as cet
from crossentropy.torch import linear as linear_module
from tests._support import assert_close, free_port

if not dist.is_available():  # pragma: no cover - builds without torch.distributed
    pytest.skip("torch.distributed is not available in this PyTorch build", allow_module_level=True)

from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import DTensor, Partial, Replicate, Shard, distribute_tensor
from torch.distributed.tensor.parallel import loss_parallel

from crossentropy.torch import _dtensor

N, C = 7, 10  # 10 classes over 3 ranks are 4, 4 and 2 (torch.chunk's layout); 7 rows are 3, 3, 1

# cross_entropy cases: the layout of the logits and the options. "weight"/"sample_weight": True makes them.
CE_CASES = {
    "vocab-mean": {"layout": "vocab"},
    "vocab-smoothing": {"layout": "vocab", "options": {"label_smoothing": 0.2}},
    "vocab-z-loss-sum": {"layout": "vocab", "options": {"z_loss": 1e-2, "reduction": "sum"}},
    "vocab-none": {"layout": "vocab", "options": {"reduction": "none", "label_smoothing": 0.1}},
    "vocab-ignore-index": {"layout": "vocab", "options": {"ignore_index": 3, "z_loss": 1e-3}},
    "vocab-k-dimensional": {"layout": "vocab", "shape": (3, C, 4), "options": {"label_smoothing": 0.1}},
    "vocab-k-dimensional-none": {"layout": "vocab", "shape": (3, C, 4), "options": {"reduction": "none"}},
    "vocab-float32": {"layout": "vocab", "dtype": torch.float32, "options": {"label_smoothing": 0.1}},
    "vocab-few-classes": {"layout": "vocab", "shape": (N, 4), "options": {"z_loss": 1e-2}},  # 2, 2, 0 on 3 ranks
    "vocab-replicated-target": {"layout": "vocab", "target": "replicate", "options": {"reduction": "sum"}},
    "vocab-unbatched": {"layout": "vocab", "shape": (C,), "options": {"label_smoothing": 0.1}},
    "vocab-all-ignored": {"layout": "vocab", "ignore_all": True},
    "batch-weight": {"layout": "batch", "weight": True, "options": {"label_smoothing": 0.1}},
    "batch-sample-weight": {"layout": "batch", "weight": True, "sample_weight": True, "options": {"z_loss": 1e-2}},
    "batch-sum": {"layout": "batch", "sample_weight": True, "options": {"reduction": "sum", "softcap": 3.0}},
    "batch-none": {"layout": "batch", "options": {"reduction": "none", "label_smoothing": 0.1}},
    "batch-probabilities": {"layout": "batch", "probabilities": True, "options": {"label_smoothing": 0.1}},
    "batch-all-ignored": {"layout": "batch", "ignore_all": True},
    "spatial-k-dimensional": {"layout": "spatial", "shape": (3, C, 5), "weight": True},
    "spatial-none": {"layout": "spatial", "shape": (3, C, 5), "options": {"reduction": "none"}},
    "replicate": {
        "layout": "replicate",
        "weight": True,
        "sample_weight": True,
        "options": {"label_smoothing": 0.1, "softcap": 4.0, "z_loss": 1e-3},
    },
    "partial": {"layout": "partial", "options": {"label_smoothing": 0.1}},
}

# Cases PyTorch's loss_parallel() computes too (it has no label smoothing, z-loss or soft-cap): an oracle.
LOSS_PARALLEL_CASES = ["vocab-mean", "vocab-k-dimensional-none", "vocab-replicated-target"]

# Options the vocabulary-parallel path has once vocab_parallel_cross_entropy has them (then they must give the
# single-process numbers), and refuses, naming them, before: name -> (the options it needs, the case).
VOCAB_OPTION_CASES = {
    "vocab-weight": (("weight",), {"layout": "vocab", "weight": True, "options": {"label_smoothing": 0.1}}),
    "vocab-softcap": (("softcap",), {"layout": "vocab", "options": {"softcap": 3.0, "z_loss": 1e-3}}),
    "vocab-sample-weight": (("sample_weight",), {"layout": "vocab", "sample_weight": True}),
    "vocab-weights-k-dimensional-none": (
        ("weight", "sample_weight"),
        {
            "layout": "vocab",
            "shape": (3, C, 4),
            "weight": True,
            "sample_weight": True,
            "options": {"reduction": "none"},
        },
    ),
    "vocab-few-classes-weight": (("weight",), {"layout": "vocab", "shape": (N, 4), "weight": True}),
}

# What the vocabulary-parallel path cannot do: each must raise, naming it, not compute.
VOCAB_REFUSALS = {
    "probabilities": {"probabilities": True},
    "inplace": {"options": {"inplace": True}},
    "smoothing without a class on a rank": {"shape": (N, 2), "options": {"label_smoothing": 0.1}},  # 1, 1, 0
}

# `normalizer` and `return_stats` (issue 18) on every layout, through the public cross_entropy.
# "normalizer": "dtensor" passes NORMALIZER as a replicated 0-d DTensor.
NORMALIZER = 9.0
A_LSE, B_ENTROPY = 0.3, -0.7  # the statistics' coefficients in the differentiated total
STATS_CASES = {
    "vocab-stats": {"layout": "vocab", "options": {"label_smoothing": 0.1, "softcap": 3.0, "return_stats": True}},
    "vocab-stats-k-dimensional-none": {
        "layout": "vocab",
        "shape": (3, C, 4),
        "sample_weight": True,
        "options": {"reduction": "none", "return_stats": True},
    },
    "vocab-stats-few-classes": {"layout": "vocab", "shape": (N, 4), "options": {"z_loss": 1e-2, "return_stats": True}},
    "vocab-normalizer": {"layout": "vocab", "weight": True, "options": {"normalizer": NORMALIZER}},
    "vocab-stats-dtensor-normalizer": {"layout": "vocab", "options": {"normalizer": "dtensor", "return_stats": True}},
    "batch-normalizer": {"layout": "batch", "weight": True, "sample_weight": True, "options": {"normalizer": 4.0}},
    "batch-stats-normalizer": {
        "layout": "batch",
        "sample_weight": True,
        "options": {"normalizer": "dtensor", "return_stats": True, "z_loss": 1e-3},
    },
    "batch-stats-none": {"layout": "batch", "options": {"reduction": "none", "return_stats": True}},
    "spatial-stats-sum": {
        "layout": "spatial",
        "shape": (3, C, 5),
        "options": {"reduction": "sum", "return_stats": True},
    },
    "replicate-stats-normalizer": {
        "layout": "replicate",
        "weight": True,
        "options": {"normalizer": 6.0, "softcap": 4.0, "return_stats": True},
    },
    "partial-stats": {"layout": "partial", "options": {"return_stats": True}},
}

H = 6
LINEAR_CASES = {
    "fsdp-mean": {"layout": "fsdp"},
    "fsdp-bias-sum": {"layout": "fsdp", "bias": True, "options": {"reduction": "sum", "label_smoothing": 0.1}},
    "fsdp-none": {"layout": "fsdp", "bias": True, "options": {"reduction": "none", "z_loss": 1e-2}},
    "fsdp-class-weight": {"layout": "fsdp", "weight": True, "options": {"softcap": 5.0, "chunk_size": 2}},
    "tp-mean": {"layout": "tp", "bias": True},
    "tp-options-sum": {
        "layout": "tp",
        "options": {"reduction": "sum", "label_smoothing": 0.1, "z_loss": 1e-2, "softcap": 5.0},
    },
    "tp-weights-none": {"layout": "tp", "weight": True, "sample_weight": True, "options": {"reduction": "none"}},
    "tp-replicated-bias": {"layout": "tp", "bias": "replicate", "options": {"label_smoothing": 0.1}},
    "replicate": {"layout": "replicate", "bias": True, "options": {"z_loss": 1e-3}},
}
# return_stats=True on each linear layout, through the public linear_cross_entropy.
LINEAR_STATS_CASES = {
    "fsdp-stats": {"layout": "fsdp", "bias": True, "options": {"label_smoothing": 0.1}},
    "tp-stats-none": {
        "layout": "tp",
        "bias": True,
        "sample_weight": True,
        "options": {"softcap": 5.0, "reduction": "none"},
    },
    "tp-stats-normalizer": {"layout": "tp", "weight": True, "options": {"normalizer": 4.0, "temperature": 0.8}},
    "replicate-stats": {"layout": "replicate", "bias": True, "options": {"z_loss": 1e-3}},
}


# --------------------------------------------------------------------------------------------
# Inputs, the same on every rank (seeded by the case's name)
# --------------------------------------------------------------------------------------------


def _generator(name: str) -> torch.Generator:
    return torch.Generator().manual_seed(sum(map(ord, name)))


def ce_inputs(name: str, case: dict) -> dict:
    gen = _generator(name)
    shape = case.get("shape", (N, C))
    dtype = case.get("dtype", torch.float64)
    classes = shape[1] if len(shape) >= 2 else shape[0]
    batch = shape[:1] + shape[2:] if len(shape) >= 2 else ()
    logits = (torch.randn(shape, generator=gen, dtype=torch.float64) * 3).to(dtype)
    if case.get("probabilities"):
        target = torch.softmax(torch.randn(shape, generator=gen, dtype=torch.float64), dim=min(1, len(shape) - 1))
        target = target.to(dtype)
    else:
        target = torch.randint(0, classes, batch, generator=gen)
        if case.get("ignore_all"):
            target.fill_(case.get("options", {}).get("ignore_index", -100))
        elif target.ndim:
            target.view(-1)[-1] = classes - 1  # a class of the last rank
            target.view(-1)[::3] = case.get("options", {}).get("ignore_index", -100)
    weight = torch.rand(classes, generator=gen, dtype=torch.float64).to(dtype) + 0.5 if case.get("weight") else None
    sample = torch.rand(batch, generator=gen, dtype=torch.float64).to(dtype) if case.get("sample_weight") else None
    cotangent = torch.rand(batch, generator=gen, dtype=torch.float64).to(dtype)
    return {"logits": logits, "target": target, "weight": weight, "sample_weight": sample, "cotangent": cotangent}


def linear_inputs(name: str, case: dict, rank: int) -> dict:
    """The head (the same on every rank) and the tokens: rank ``rank``'s own for FSDP, else shared."""
    gen = _generator(name)
    head = torch.randn(C, H, generator=gen, dtype=torch.float64)
    bias = torch.randn(C, generator=gen, dtype=torch.float64) if case.get("bias") else None
    weight = torch.rand(C, generator=gen, dtype=torch.float64) + 0.5 if case.get("weight") else None
    tokens = _generator(f"{name}/{rank if case['layout'] == 'fsdp' else 0}")
    rows = 5 + rank if case["layout"] == "fsdp" else N
    hidden = torch.randn(rows, H, generator=tokens, dtype=torch.float64)
    target = torch.randint(0, C, (rows,), generator=tokens)
    target[1::3] = -100
    target[-1] = C - 1  # a class of the last rank
    sample = torch.rand(rows, generator=tokens, dtype=torch.float64) if case.get("sample_weight") else None
    cotangent = torch.rand(rows, generator=tokens, dtype=torch.float64)
    return {
        "hidden": hidden,
        "head": head,
        "bias": bias,
        "weight": weight,
        "target": target,
        "sample_weight": sample,
        "cotangent": cotangent,
    }


# --------------------------------------------------------------------------------------------
# The ranks
# --------------------------------------------------------------------------------------------


def _grad_of(tensor) -> tuple[str, torch.Tensor] | None:
    if tensor is None or tensor.grad is None:
        return None
    grad = tensor.grad
    if isinstance(grad, DTensor):
        return str(tuple(grad.placements)), grad.full_tensor()
    return "plain", grad


def _backward(loss, cotangent, mesh) -> None:
    if loss.ndim == 0:
        loss.backward()
    elif isinstance(loss, DTensor):
        loss.backward(distribute_tensor(cotangent.to(loss.dtype), mesh, loss.placements))
    else:
        loss.backward(cotangent.to(loss.dtype))


def _layout_placements(layout: str, ndim: int) -> tuple:
    return {
        "vocab": (Shard(1 if ndim >= 2 else 0),),
        "batch": (Shard(0),),
        "spatial": (Shard(2),),
        "replicate": (Replicate(),),
    }[layout]


def ce_arguments(name: str, case: dict, mesh, world: int):
    """``(data, input, target, extras, leaf)`` of a cross_entropy case on ``mesh``: the DTensor logits laid out as
    the case says, the target and weights as that layout takes them, and the plain leaf of a ``Partial`` input
    (None otherwise: ``input`` is the leaf)."""
    data = ce_inputs(name, case)
    logits, target = data["logits"], data["target"]
    layout = case["layout"]
    leaf = None
    if layout == "partial":  # every rank holds logits / world: the pending sum is the logits
        leaf = (logits / world).requires_grad_()
        input = DTensor.from_local(leaf, mesh, (Partial(),), run_check=False)
    else:
        input = distribute_tensor(logits, mesh, _layout_placements(layout, logits.ndim)).requires_grad_()
    extras = {}
    if layout in ("batch", "spatial"):  # the targets and sample weights sharded like the batch
        target_dim = 0 if layout == "batch" else 1
        if case.get("probabilities"):
            target_dim = 0 if layout == "batch" else 2
        target = distribute_tensor(target, mesh, (Shard(target_dim),))
        if data["sample_weight"] is not None:
            extras["sample_weight"] = distribute_tensor(data["sample_weight"], mesh, (Shard(target_dim),))
        if data["weight"] is not None:  # a replicated DTensor, to take that road too
            extras["weight"] = distribute_tensor(data["weight"], mesh, (Replicate(),))
    else:
        if case.get("target") == "replicate":
            target = distribute_tensor(target, mesh, (Replicate(),))
        for key in ("weight", "sample_weight"):
            if data[key] is not None:
                extras[key] = data[key]
    return data, input, target, extras, leaf


def run_ce_case(name: str, case: dict, mesh, world: int, *, function=None) -> dict:
    data, input, target, extras, leaf = ce_arguments(name, case, mesh, world)
    if function is None:
        loss = cet.cross_entropy(input, target, **extras, **case.get("options", {}))
    else:
        loss = function(input, target, **extras, **case.get("options", {}))
    result = {
        "type": type(loss).__name__,
        "placements": str(tuple(loss.placements)) if isinstance(loss, DTensor) else None,
        "dtype": loss.dtype,
        "loss": loss.full_tensor().detach() if isinstance(loss, DTensor) else loss.detach(),
    }
    _backward(loss, data["cotangent"], mesh)
    result["grad"] = ("plain", leaf.grad) if leaf is not None else _grad_of(input)
    return result


def _total_cotangents(outputs: list, cotangent: torch.Tensor, mesh) -> list:
    """The cotangents of ``[loss, lse, entropy]`` (or ``[loss]``) for the total ``loss·cotangent + A·lse + B·entropy``,
    DTensors laid out as the outputs where they are DTensors."""
    grads = []
    for index, output in enumerate(outputs):
        if index == 0:
            full = cotangent.reshape(output.shape) if output.ndim else torch.ones(())
        else:
            full = torch.full(tuple(output.shape), A_LSE if index == 1 else B_ENTROPY)
        full = full.to(output.dtype)
        grads.append(distribute_tensor(full, mesh, output.placements) if isinstance(output, DTensor) else full)
    return grads


def _full(tensor):
    return tensor.full_tensor().detach() if isinstance(tensor, DTensor) else tensor.detach()


def _layout_of(tensor) -> str:
    return str(tuple(tensor.placements)) if isinstance(tensor, DTensor) else "plain"


def _outputs_record(found, stats_wanted: bool) -> tuple[dict, list]:
    """What a rank saves of a loss (with its statistics), and the outputs to differentiate."""
    loss, stats = found if stats_wanted else (found, None)
    record = {"layout": _layout_of(loss), "dtype": loss.dtype, "loss": _full(loss)}
    outputs = [loss]
    if stats is not None:
        record["stats"] = [_full(t) for t in stats]
        record["stats_layouts"] = [_layout_of(t) for t in stats]
        outputs += [stats.lse, stats.entropy]
    return record, outputs


def run_stats_case(name: str, case: dict, mesh, world: int) -> dict:
    """``normalizer`` / ``return_stats`` through ``cet.cross_entropy``, and the gradient of the total
    (``_total_cotangents``)."""
    data, input, target, extras, leaf = ce_arguments(name, case, mesh, world)
    options = dict(case.get("options", {}))
    if options.get("normalizer") == "dtensor":
        options["normalizer"] = distribute_tensor(torch.tensor(NORMALIZER, dtype=torch.float64), mesh, (Replicate(),))
    found = cet.cross_entropy(input, target, **extras, **options)
    result, outputs = _outputs_record(found, options.get("return_stats", False))
    torch.autograd.backward(outputs, _total_cotangents(outputs, data["cotangent"], mesh))
    result["grad"] = ("plain", leaf.grad) if leaf is not None else _grad_of(input)
    return result


def run_loss_parallel(name: str, mesh, world: int) -> dict:
    """PyTorch's own F.cross_entropy on the same DTensor, forward and backward inside loss_parallel()."""
    with loss_parallel():
        return run_ce_case(name, CE_CASES[name], mesh, world, function=F.cross_entropy)


def _outcome(run, name, case, mesh, world):
    """``run``'s results, or the error it raised (on every rank alike: before any collective)."""
    try:
        return run(name, case, mesh, world)
    except (NotImplementedError, ValueError, TypeError) as error:
        return f"{type(error).__name__}: {error}"


def run_refusal(name: str, case: dict, mesh) -> str:
    data = ce_inputs(name, case)
    input = distribute_tensor(data["logits"], mesh, (Shard(1),)).requires_grad_()
    extras = {key: data[key] for key in ("weight", "sample_weight") if data[key] is not None}
    try:
        cet.cross_entropy(input, data["target"], **extras, **case.get("options", {}))
    except (NotImplementedError, ValueError, TypeError) as error:
        return f"{type(error).__name__}: {error}"
    return "no error"


def run_linear_case(name: str, case: dict, mesh, rank: int) -> dict:
    data = linear_inputs(name, case, rank)
    layout = case["layout"]
    vocab_placement = (Replicate(),) if layout == "replicate" else (Shard(0),)
    head = distribute_tensor(data["head"], mesh, vocab_placement).requires_grad_()
    keywords = dict(case.get("options", {}))
    bias = None
    if data["bias"] is not None:
        placement = (Replicate(),) if case["bias"] == "replicate" else vocab_placement
        bias = distribute_tensor(data["bias"], mesh, placement).requires_grad_()
        keywords["linear_bias"] = bias
    for key in ("weight", "sample_weight"):
        if data[key] is not None:
            keywords[key] = data[key]
    hidden = data["hidden"].clone().requires_grad_()
    input = hidden if layout == "fsdp" else DTensor.from_local(hidden, mesh, (Replicate(),), run_check=False)
    loss = _dtensor.linear_cross_entropy_dtensor(input, head, data["target"], **keywords)
    result = {
        "type": type(loss).__name__,
        "placements": str(tuple(loss.placements)) if isinstance(loss, DTensor) else None,
        "loss": loss.full_tensor().detach() if isinstance(loss, DTensor) else loss.detach(),
    }
    _backward(loss, data["cotangent"], mesh)
    result["grad_input"] = hidden.grad
    result["grad_head"] = _grad_of(head)
    result["grad_bias"] = _grad_of(bias)
    return result


def run_linear_stats_case(name: str, case: dict, mesh, rank: int) -> dict:
    """``return_stats=True`` through ``cet.linear_cross_entropy``, and the gradient of the total."""
    data = linear_inputs(name, case, rank)
    layout = case["layout"]
    vocab_placement = (Replicate(),) if layout == "replicate" else (Shard(0),)
    head = distribute_tensor(data["head"], mesh, vocab_placement).requires_grad_()
    keywords = dict(case.get("options", {}))
    bias = None
    if data["bias"] is not None:
        bias = distribute_tensor(data["bias"], mesh, vocab_placement).requires_grad_()
        keywords["linear_bias"] = bias
    for key in ("weight", "sample_weight"):
        if data[key] is not None:
            keywords[key] = data[key]
    hidden = data["hidden"].clone().requires_grad_()
    input = hidden if layout == "fsdp" else DTensor.from_local(hidden, mesh, (Replicate(),), run_check=False)
    found = cet.linear_cross_entropy(input, head, data["target"], return_stats=True, **keywords)
    result, outputs = _outputs_record(found, True)
    torch.autograd.backward(outputs, _total_cotangents(outputs, data["cotangent"], mesh))
    result["grad_input"] = hidden.grad
    result["grad_head"] = _grad_of(head)
    result["grad_bias"] = _grad_of(bias)
    return result


def run_stats_refusals(mesh) -> dict:
    """A normalizer with another reduction than the mean: refused on every layout, naming it."""
    data = ce_inputs("stats refusals", {"layout": "vocab"})
    outcomes = {}
    for layout in ("vocab", "batch", "replicate"):
        input = distribute_tensor(data["logits"], mesh, _layout_placements(layout, 2))
        target = distribute_tensor(data["target"], mesh, (Shard(0),)) if layout == "batch" else data["target"]
        try:
            cet.cross_entropy(input, target, reduction="sum", normalizer=3.0)
            outcomes[layout] = "no error"
        except ValueError as error:
            outcomes[layout] = f"ValueError: {error}"
    return outcomes


def run_linear_refusals(mesh) -> dict:
    data = linear_inputs("refusals", {"layout": "tp"}, 0)
    head = distribute_tensor(data["head"], mesh, (Shard(0),))
    outcomes = {}
    attempts = {
        "filter_eps": lambda: _dtensor.linear_cross_entropy_dtensor(
            distribute_tensor(data["hidden"], mesh, (Replicate(),)), head, data["target"], filter_eps=0.01
        ),
        "sharded input": lambda: _dtensor.linear_cross_entropy_dtensor(
            distribute_tensor(data["hidden"], mesh, (Shard(0),)), head, data["target"]
        ),
    }
    for key, attempt in attempts.items():
        try:
            attempt()
            outcomes[key] = "no error"
        except (NotImplementedError, ValueError, TypeError) as error:
            outcomes[key] = f"{type(error).__name__}: {error}"
    return outcomes


def public_linear_entry_point(mesh) -> torch.Tensor:
    """``cet.linear_cross_entropy`` on a sharded weight: the public function takes the DTensor path."""
    data = linear_inputs("public", {"layout": "fsdp"}, dist.get_rank())
    head = distribute_tensor(data["head"], mesh, (Shard(0),))
    return cet.linear_cross_entropy(data["hidden"], head, data["target"]).detach()


def worker(rank: int, world: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=60),  # a rank that fails alone makes the others fail, not hang
    )
    try:
        mesh = init_device_mesh("cpu", (world,))
        results = {
            "ce": {name: run_ce_case(name, case, mesh, world) for name, case in CE_CASES.items()},
            "loss_parallel": {name: run_loss_parallel(name, mesh, world) for name in LOSS_PARALLEL_CASES},
            "vocab_options": {
                name: _outcome(run_ce_case, name, case, mesh, world) for name, (_, case) in VOCAB_OPTION_CASES.items()
            },
            "refusals": {name: run_refusal(name, case, mesh) for name, case in VOCAB_REFUSALS.items()},
            "linear": {name: run_linear_case(name, case, mesh, rank) for name, case in LINEAR_CASES.items()},
            "linear_refusals": run_linear_refusals(mesh),
            "stats": {name: run_stats_case(name, case, mesh, world) for name, case in STATS_CASES.items()},
            "linear_stats": {
                name: run_linear_stats_case(name, case, mesh, rank) for name, case in LINEAR_STATS_CASES.items()
            },
            "stats_refusals": run_stats_refusals(mesh),
            "public_linear": public_linear_entry_point(mesh),
        }
        torch.save(results, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module", params=[2, 3], ids=lambda world: f"world={world}")
def ranks(request, tmp_path_factory):
    """What every rank saved, after one launch of ``world`` processes: (world, [results per rank])."""
    world = request.param
    out_dir = tmp_path_factory.mktemp(f"dtensor{world}")
    mp.spawn(worker, args=(world, free_port(), str(out_dir)), nprocs=world, join=True)
    return world, [torch.load(out_dir / f"rank{rank}.pt", weights_only=False) for rank in range(world)]


# --------------------------------------------------------------------------------------------
# cross_entropy
# --------------------------------------------------------------------------------------------


def _expected_layout(case: dict, reduction: str) -> str:
    layout = case["layout"]
    if reduction == "none" and layout == "batch":
        return str((Shard(0),))
    if reduction == "none" and layout == "spatial":
        return str((Shard(1),))
    return str((Replicate(),))


def _expected_grad_layout(case: dict, ndim: int) -> str:
    return "plain" if case["layout"] == "partial" else str(_layout_placements(case["layout"], ndim))


def _check_cross_entropy(name: str, case: dict, world: int, results_per_rank: list) -> None:
    data = ce_inputs(name, case)
    options = dict(case.get("options", {}))
    reduction = options.get("reduction", "mean")
    x = data["logits"].clone().requires_grad_()
    expected = cet.cross_entropy(x, data["target"], data["weight"], sample_weight=data["sample_weight"], **options)
    if not {"z_loss", "softcap"} & set(options) and data["sample_weight"] is None and not case.get("ignore_all"):
        torch_loss = F.cross_entropy(data["logits"], data["target"], data["weight"], **options)
        assert_close(expected, torch_loss, data["logits"].dtype, err_msg=f"{name}: the reference against PyTorch")
    expected.backward(data["cotangent"] if expected.ndim else None)
    dtype = data["logits"].dtype
    for rank, got in enumerate(results_per_rank):
        what = f"world={world} {name} rank {rank}"
        assert isinstance(got, dict), f"{what}: {got}"
        assert got["type"] == "DTensor", what
        assert got["placements"] == _expected_layout(case, reduction), what
        assert got["dtype"] == dtype, what
        assert_close(got["loss"], expected.detach(), dtype, err_msg=f"{what}: loss")
        layout, grad = got["grad"]
        assert layout == _expected_grad_layout(case, data["logits"].ndim), what
        assert_close(grad, x.grad, dtype, err_msg=f"{what}: gradient")


@pytest.mark.parametrize("name", list(CE_CASES))
def test_cross_entropy_of_a_dtensor_is_the_single_process_loss_and_gradient(ranks, name):
    world, per_rank = ranks
    _check_cross_entropy(name, CE_CASES[name], world, [results["ce"][name] for results in per_rank])


@pytest.mark.parametrize("name", list(VOCAB_OPTION_CASES))
def test_options_of_the_vocabulary_parallel_path_compute_or_raise_naming_them(ranks, name):
    world, per_rank = ranks
    needs, case = VOCAB_OPTION_CASES[name]
    outcomes = [results["vocab_options"][name] for results in per_rank]
    missing = [
        option for option in needs if option not in inspect.signature(cet.vocab_parallel_cross_entropy).parameters
    ]
    if not missing:
        _check_cross_entropy(name, case, world, outcomes)
        return
    for outcome in outcomes:
        assert isinstance(outcome, str), outcome
        assert outcome.startswith("NotImplementedError"), outcome
        assert f"`{missing[0]}`" in outcome, outcome


@pytest.mark.parametrize("name", LOSS_PARALLEL_CASES)
def test_cross_entropy_returns_what_pytorch_s_loss_parallel_returns(ranks, name):
    world, per_rank = ranks
    for rank, results in enumerate(per_rank):
        ours, theirs = results["ce"][name], results["loss_parallel"][name]
        what = f"world={world} {name} rank {rank}"
        for key in ("type", "placements", "dtype"):
            assert ours[key] == theirs[key], f"{what}: {key}"
        assert_close(ours["loss"], theirs["loss"], torch.float64, err_msg=f"{what}: loss")
        assert ours["grad"][0] == theirs["grad"][0], f"{what}: the gradient's placements"
        assert_close(ours["grad"][1], theirs["grad"][1], torch.float64, err_msg=f"{what}: gradient")


@pytest.mark.parametrize("name", list(VOCAB_REFUSALS))
def test_what_the_vocabulary_parallel_path_lacks_raises_naming_it(ranks, name):
    world, per_rank = ranks
    outcome = per_rank[0]["refusals"][name]
    assert all(results["refusals"][name] == outcome for results in per_rank)
    if name == "smoothing without a class on a rank" and world == 2:  # one class on each rank: computed
        assert outcome == "no error"
        return
    assert outcome.startswith("NotImplementedError"), outcome
    assert {"probabilities": "probability targets", "inplace": "`inplace=True`"}.get(name, "need a class") in outcome


# --------------------------------------------------------------------------------------------
# linear_cross_entropy
# --------------------------------------------------------------------------------------------


def _linear_reference(name: str, case: dict, rank: int) -> dict:
    data = linear_inputs(name, case, rank)
    hidden = data["hidden"].clone().requires_grad_()
    head = data["head"].clone().requires_grad_()
    bias = None if data["bias"] is None else data["bias"].clone().requires_grad_()
    loss = linear_module.linear_cross_entropy(
        hidden,
        head,
        data["target"],
        linear_bias=bias,
        weight=data["weight"],
        sample_weight=data["sample_weight"],
        **case.get("options", {}),
    )
    loss.backward(data["cotangent"] if loss.ndim else None)
    return {"loss": loss.detach(), "input": hidden.grad, "head": head.grad, "bias": None if bias is None else bias.grad}


@pytest.mark.parametrize("name", [name for name, case in LINEAR_CASES.items() if case["layout"] == "fsdp"])
def test_a_sharded_weight_with_each_rank_s_tokens_gives_each_its_loss_and_the_summed_gradient(ranks, name):
    world, per_rank = ranks
    case = LINEAR_CASES[name]
    references = [_linear_reference(name, case, rank) for rank in range(world)]
    head_grad = sum(reference["head"] for reference in references)
    bias_grad = None if case.get("bias") is None else sum(reference["bias"] for reference in references)
    for rank, results in enumerate(per_rank):
        got, expected = results["linear"][name], references[rank]
        what = f"world={world} {name} rank {rank}"
        assert got["type"] == "Tensor", what  # this rank's own loss, a plain tensor
        assert_close(got["loss"], expected["loss"], torch.float64, err_msg=f"{what}: loss")
        assert_close(got["grad_input"], expected["input"], torch.float64, err_msg=f"{what}: input gradient")
        assert got["grad_head"][0] == str((Shard(0),)), what
        assert_close(got["grad_head"][1], head_grad, torch.float64, err_msg=f"{what}: weight gradient")
        if bias_grad is not None:
            assert got["grad_bias"][0] == str((Shard(0),)), what
            assert_close(got["grad_bias"][1], bias_grad, torch.float64, err_msg=f"{what}: bias gradient")


@pytest.mark.parametrize("name", [name for name, case in LINEAR_CASES.items() if case["layout"] != "fsdp"])
def test_a_replicated_input_gives_the_single_process_loss_and_gradients(ranks, name):
    world, per_rank = ranks
    case = LINEAR_CASES[name]
    expected = _linear_reference(name, case, 0)
    weight_layout = str((Replicate(),)) if case["layout"] == "replicate" else str((Shard(0),))
    for rank, results in enumerate(per_rank):
        got = results["linear"][name]
        what = f"world={world} {name} rank {rank}"
        assert (got["type"], got["placements"]) == ("DTensor", str((Replicate(),))), what
        assert_close(got["loss"], expected["loss"], torch.float64, err_msg=f"{what}: loss")
        assert_close(got["grad_input"], expected["input"], torch.float64, err_msg=f"{what}: input gradient")
        assert got["grad_head"][0] == weight_layout, what
        assert_close(got["grad_head"][1], expected["head"], torch.float64, err_msg=f"{what}: weight gradient")
        if expected["bias"] is not None:
            assert_close(got["grad_bias"][1], expected["bias"], torch.float64, err_msg=f"{what}: bias gradient")


def test_linear_layouts_the_paths_lack_raise_clearly(ranks):
    _, per_rank = ranks
    outcomes = per_rank[0]["linear_refusals"]
    assert outcomes["filter_eps"].startswith("NotImplementedError: `filter_eps`"), outcomes
    assert outcomes["sharded input"].startswith("NotImplementedError: a DTensor `input` must be replicated"), outcomes


def test_the_public_linear_entry_point_takes_a_sharded_weight(ranks):
    world, per_rank = ranks
    for rank, results in enumerate(per_rank):
        data = linear_inputs("public", {"layout": "fsdp"}, rank)
        expected = linear_module.linear_cross_entropy(data["hidden"], data["head"], data["target"])
        assert_close(results["public_linear"], expected, torch.float64, err_msg=f"world={world} rank {rank}")


def test_plain_tensors_never_take_the_dtensor_path():
    assert not isinstance(torch.zeros(2, 3), _dtensor.TYPES)
    assert DTensor in _dtensor.TYPES


# --------------------------------------------------------------------------------------------
# normalizer and return_stats (issue 18)
# --------------------------------------------------------------------------------------------


def _reference_total(found, stats_wanted: bool, cotangent: torch.Tensor) -> tuple:
    """The single-process loss (and statistics) of ``found``, differentiated as the ranks did."""
    loss, stats = found if stats_wanted else (found, None)
    outputs = [loss] if stats is None else [loss, stats.lse, stats.entropy]
    torch.autograd.backward(outputs, _total_cotangents(outputs, cotangent, None))
    return loss.detach(), stats


def _check_outputs(got: dict, loss, stats, layout: str, stats_layout: str, what: str) -> None:
    """A rank's loss and statistics (``stats`` None: none returned) against the single-process ones, and the
    layouts of its results."""
    assert got["layout"] == layout, f"{what}: {got['layout']}"
    assert_close(got["loss"], loss, torch.float64, err_msg=f"{what}: loss")
    if stats is None:
        assert "stats" not in got, what
        return
    assert got["stats_layouts"] == [stats_layout] * 3, f"{what}: {got['stats_layouts']}"
    for name, mine, theirs in zip(("lse", "entropy"), got["stats"][:2], stats[:2], strict=True):
        assert mine.dtype == theirs.dtype, f"{what}: {name}"
        assert_close(mine, theirs.detach(), torch.float64, err_msg=f"{what}: {name}")
    assert got["stats"][2].dtype == torch.bool, what
    assert torch.equal(got["stats"][2], stats.accuracy), f"{what}: accuracy"


@pytest.mark.parametrize("name", list(STATS_CASES))
def test_normalizer_and_statistics_of_a_dtensor_equal_the_single_process_ones(ranks, name):
    world, per_rank = ranks
    case = STATS_CASES[name]
    data = ce_inputs(name, case)
    options = dict(case.get("options", {}))
    if options.get("normalizer") == "dtensor":
        options["normalizer"] = NORMALIZER
    wanted = options.get("return_stats", False)
    x = data["logits"].clone().requires_grad_()
    found = cet.cross_entropy(x, data["target"], data["weight"], sample_weight=data["sample_weight"], **options)
    loss, stats = _reference_total(found, wanted, data["cotangent"])
    reduction = options.get("reduction", "mean")
    for rank, results in enumerate(per_rank):
        got = results["stats"][name]
        what = f"world={world} {name} rank {rank}"
        # the statistics are laid out as the per-token losses of "none" would be
        _check_outputs(got, loss, stats, _expected_layout(case, reduction), _expected_layout(case, "none"), what)
        layout, grad = got["grad"]
        assert layout == _expected_grad_layout(case, data["logits"].ndim), what
        assert_close(grad, x.grad, torch.float64, err_msg=f"{what}: gradient")


def test_a_normalizer_with_another_reduction_is_refused_on_every_layout(ranks):
    _, per_rank = ranks
    for results in per_rank:
        for layout, outcome in results["stats_refusals"].items():
            assert outcome.startswith("ValueError: `normalizer` replaces the mean's denominator"), (layout, outcome)
            assert "got 'sum'" in outcome, outcome


@pytest.mark.parametrize("name", list(LINEAR_STATS_CASES))
def test_linear_statistics_of_each_layout_equal_the_single_process_ones(ranks, name):
    world, per_rank = ranks
    case = LINEAR_STATS_CASES[name]
    fsdp = case["layout"] == "fsdp"
    references = []
    for rank in range(world if fsdp else 1):
        data = linear_inputs(name, case, rank)
        hidden = data["hidden"].clone().requires_grad_()
        head = data["head"].clone().requires_grad_()
        bias = None if data["bias"] is None else data["bias"].clone().requires_grad_()
        found = linear_module.linear_cross_entropy(
            hidden,
            head,
            data["target"],
            linear_bias=bias,
            weight=data["weight"],
            sample_weight=data["sample_weight"],
            return_stats=True,
            **case.get("options", {}),
        )
        loss, stats = _reference_total(found, True, data["cotangent"])
        references.append((loss, stats, hidden.grad, head.grad, None if bias is None else bias.grad))
    head_grad = sum(reference[3] for reference in references)  # FSDP: the sum over the ranks' tokens
    bias_grad = None if references[0][4] is None else sum(reference[4] for reference in references)
    for rank, results in enumerate(per_rank):
        got = results["linear_stats"][name]
        loss, stats, input_grad, *_ = references[rank if fsdp else 0]
        what = f"world={world} {name} rank {rank}"
        layout = "plain" if fsdp else str((Replicate(),))
        _check_outputs(got, loss, stats, layout, layout, what)
        assert_close(got["grad_input"], input_grad, torch.float64, err_msg=f"{what}: input gradient")
        assert_close(got["grad_head"][1], head_grad, torch.float64, err_msg=f"{what}: weight gradient")
        if bias_grad is not None:
            assert_close(got["grad_bias"][1], bias_grad, torch.float64, err_msg=f"{what}: bias gradient")
