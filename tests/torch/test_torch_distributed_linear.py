"""``vocab_parallel_linear_cross_entropy`` on 2 and 3 real processes (gloo backend) against one process.

Every rank builds the same seeded hidden states, projection and targets, keeps its (uneven) slice
of the projection's rows (and of the bias and class weights), and computes the loss and its
gradients for every case, in float64 and float32, in one launch per world size. The oracle is
single-process plain PyTorch in float64: ``torch.nn.functional.cross_entropy`` on
``input @ W.T + b`` (soft-capped first), with the z-loss and the sample weights written out in
torch operations; ``crossentropy.torch.cross_entropy`` on the same logits is checked against it too.
Every rank's loss and input gradient must equal the oracle's, and the ranks' weight and bias
gradient slices, put back together, its gradients. Errors are checked in-process, on a
one-rank group.
"""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

import crossentropy.torch as cet
from crossentropy import kernels
from crossentropy.torch import distributed
from tests._support import NEEDS_TRITON_ON_CPU, TRITON_INSTALLED, assert_close, free_port

BATCH, SEQUENCE, HIDDEN, VOCAB = 3, 4, 6, 10
IGNORED = [(0, 2), (2, 1)]  # (batch, position) of the two targets set to ignore_index
DTYPES = (torch.float64, torch.float32)
# Markers: "weight"/"sample_weight" True pass the seeded tensors; "bias" False drops the bias;
# "input_3d" passes (batch, sequence, hidden) instead of (tokens, hidden). Ignored rows in every case.
CASES = [
    {},
    {"label_smoothing": 0.2},
    {"z_loss": 1e-2},
    {"softcap": 2.0},
    {"weight": True},
    {"weight": True, "label_smoothing": 0.15},
    {"sample_weight": True},
    {"reduction": "sum"},
    {"reduction": "none"},
    {"normalizer": 40.0},
    {"bias": False},
    {"input_3d": True, "chunk_size": 5},
    {"ignore_index": 4},
    {"temperature": 0.6, "softcap": 2.0},
    {"shift": True, "input_3d": True, "sample_weight": True},
    {"shift": True, "input_3d": True, "reduction": "none", "temperature": 1.7, "label_smoothing": 0.1},
    {"weight": True, "sample_weight": True, "normalizer": 7.5, "chunk_size": 2},
    {
        "weight": True,
        "label_smoothing": 0.1,
        "z_loss": 1e-3,
        "softcap": 3.0,
        "sample_weight": True,
        "reduction": "none",
        "chunk_size": 3,
        "input_3d": True,
    },
]


def shard_bounds(world: int) -> list[tuple[int, int]]:
    """Uneven contiguous slices of the vocabulary: 10 classes over 3 ranks are 4, 3 and 3."""
    sizes = [VOCAB // world + (1 if r < VOCAB % world else 0) for r in range(world)]
    starts = [sum(sizes[:r]) for r in range(world)]
    return [(start, start + size) for start, size in zip(starts, sizes, strict=True)]


def make_inputs(dtype) -> dict[str, torch.Tensor]:
    """The seeded tensors of every case, rounded to ``dtype`` (the class and sample weights too)."""
    gen = torch.Generator().manual_seed(11)
    data = {
        "hidden": torch.randn(BATCH, SEQUENCE, HIDDEN, generator=gen, dtype=torch.float64) * 1.5,
        "linear_weight": torch.randn(VOCAB, HIDDEN, generator=gen, dtype=torch.float64),
        "linear_bias": torch.randn(VOCAB, generator=gen, dtype=torch.float64),
        "weight": torch.rand(VOCAB, generator=gen, dtype=torch.float64) + 0.2,
        "sample_weight": torch.rand(BATCH, SEQUENCE, generator=gen, dtype=torch.float64),
        "cotangent": torch.rand(BATCH, SEQUENCE, generator=gen, dtype=torch.float64),
    }
    data = {name: tensor.to(dtype) for name, tensor in data.items()}
    target = torch.randint(0, VOCAB, (BATCH, SEQUENCE), generator=gen)
    for position in IGNORED:
        target[position] = -100
    data["target"] = target
    return data


def case_tensors(data: dict, case: dict, start: int = 0, stop: int = VOCAB):
    """``(input, linear_weight, linear_bias, target, keywords)`` of ``case`` for the classes [start, stop)."""
    keywords = {k: v for k, v in case.items() if k not in ("weight", "sample_weight", "bias", "input_3d")}
    hidden = data["hidden"] if case.get("input_3d") else data["hidden"].reshape(-1, HIDDEN)
    target = data["target"] if case.get("input_3d") else data["target"].reshape(-1)
    if "ignore_index" in case:
        target = torch.where(target == -100, case["ignore_index"], target)
    if case.get("weight"):
        keywords["weight"] = data["weight"][start:stop]
    if case.get("sample_weight"):
        keywords["sample_weight"] = data["sample_weight"].reshape(target.shape)
    bias = data["linear_bias"][start:stop] if case.get("bias", True) else None
    return hidden, data["linear_weight"][start:stop], bias, target, keywords


def backward(loss: torch.Tensor, cotangent: torch.Tensor) -> None:
    """``loss.backward()``, with a random cotangent for ``reduction="none"``."""
    (loss * cotangent.reshape(loss.shape).to(loss.dtype) if loss.ndim else loss).sum().backward()


def worker(rank: int, world: int, port: int, out_dir: str, backend: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        start, stop = shard_bounds(world)[rank]
        results = {}
        with kernels.backend(backend):
            fused = distributed.fused_linear_backend(
                torch.zeros(1, 1), torch.zeros(1, 1), None, torch.zeros(1, dtype=torch.int64)
            )
        assert (fused is not None) == (backend == "triton"), f"fused linear kernels: {fused}"
        for dtype in DTYPES:
            data = make_inputs(dtype)
            for index, case in enumerate(CASES):
                hidden, weight, bias, target, keywords = case_tensors(data, case, start, stop)
                leaves = [t.clone().requires_grad_() for t in (hidden, weight) + (() if bias is None else (bias,))]
                with kernels.backend(backend):
                    loss = cet.vocab_parallel_linear_cross_entropy(
                        leaves[0],
                        leaves[1],
                        target,
                        vocab_start=start,
                        linear_bias=leaves[2] if bias is not None else None,
                        **keywords,
                    )
                    backward(loss, data["cotangent"])
                results[str(dtype), index] = (loss.detach(), *(leaf.grad for leaf in leaves))
        torch.save(results, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def oracle(hidden, linear_weight, linear_bias, target, keywords):
    """The loss in float64 plain PyTorch, from the gathered projection, and its autograd leaves; ``shift`` by
    explicit slicing (the last position of each sequence 0 for ``"none"``)."""
    leaves = [t.detach().to(torch.float64).requires_grad_() for t in (hidden, linear_weight)]
    if linear_bias is not None:
        leaves.append(linear_bias.detach().to(torch.float64).requires_grad_())
    if keywords.get("shift"):
        keywords = dict(keywords)
        del keywords["shift"]
        if keywords.get("sample_weight") is not None:
            keywords["sample_weight"] = keywords["sample_weight"][:, :-1]
        sliced = (leaves[0][:, :-1], *leaves[1:])
        loss, _ = _oracle_of(sliced, target[:, 1:], keywords)
        if loss.ndim:
            loss = torch.cat([loss, loss.new_zeros(loss.shape[0], 1)], dim=1)
        return loss, leaves
    return _oracle_of(leaves, target, keywords)


def _oracle_of(leaves, target, keywords):
    logits = F.linear(leaves[0], leaves[1], leaves[2] if len(leaves) > 2 else None).reshape(-1, VOCAB)
    logits = logits / keywords.get("temperature", 1.0)
    softcap = keywords.get("softcap")
    if softcap is not None:
        logits = softcap * torch.tanh(logits / softcap)
    rows = target.reshape(-1)
    ignore_index = keywords.get("ignore_index", -100)
    weight = keywords.get("weight")
    weight = None if weight is None else weight.to(torch.float64)
    losses = F.cross_entropy(
        logits,
        rows,
        weight=weight,
        ignore_index=ignore_index,
        label_smoothing=keywords.get("label_smoothing", 0.0),
        reduction="none",
    )
    valid = rows != ignore_index
    omega = valid.to(torch.float64)
    if weight is not None:
        omega = omega * weight[torch.where(valid, rows, 0)]
    losses = losses + keywords.get("z_loss", 0.0) * omega * torch.logsumexp(logits, dim=1) ** 2
    sample = keywords.get("sample_weight")
    sample = torch.ones_like(omega) if sample is None else sample.reshape(-1).to(torch.float64)
    losses = losses * sample
    reduction = keywords.get("reduction", "mean")
    if reduction == "none":
        return losses.reshape(target.shape), leaves
    if reduction == "sum":
        return losses.sum(), leaves
    return losses.sum() / keywords.get("normalizer", (sample * omega).sum()), leaves


def library_loss(hidden, linear_weight, linear_bias, target, keywords):
    """``crossentropy.torch.cross_entropy`` on the gathered logits (the contract's statement); ``shift`` by
    ``crossentropy.torch.linear_cross_entropy``'s, itself tested against explicit slicing."""
    if keywords.get("shift"):
        return cet.linear_cross_entropy(hidden, linear_weight, target, linear_bias=linear_bias, **keywords)
    options = {k: v for k, v in keywords.items() if k not in ("chunk_size", "normalizer", "temperature")}
    logits = F.linear(hidden, linear_weight, linear_bias).reshape(-1, VOCAB).to(torch.float64)
    logits = logits / keywords.get("temperature", 1.0)
    if "normalizer" in keywords:
        options["reduction"] = "sum"
    if "sample_weight" in options:
        options["sample_weight"] = options["sample_weight"].reshape(-1)
    loss = cet.cross_entropy(logits, target.reshape(-1), **options)
    if "normalizer" in keywords:
        return loss / keywords["normalizer"]
    return loss.reshape(target.shape) if loss.ndim else loss


def _has_fused_linear_kernels() -> bool:
    return TRITON_INSTALLED and hasattr(kernels.Backend, "has_fused_linear")


@pytest.mark.parametrize(
    ("world", "backend"),
    [
        (2, "auto"),
        (3, "auto"),
        # The Triton backend's fused linear kernels, run by Triton's interpreter on these CPU tensors.
        pytest.param(
            3,
            "triton",
            marks=[
                NEEDS_TRITON_ON_CPU,
                pytest.mark.skipif(not _has_fused_linear_kernels(), reason="no fused linear kernels"),
            ],
        ),
    ],
)
def test_sharded_projection_gives_the_single_process_loss_and_gradients(world, backend, tmp_path):
    mp.spawn(worker, args=(world, free_port(), str(tmp_path), backend), nprocs=world, join=True)
    per_rank = [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(world)]
    for dtype in DTYPES:
        data = make_inputs(dtype)
        for index, case in enumerate(CASES):
            hidden, weight, bias, target, keywords = case_tensors(data, case)
            expected, leaves = oracle(hidden, weight, bias, target, keywords)
            what = f"world={world} {backend} {dtype} {case}"
            assert_close(library_loss(hidden, weight, bias, target, keywords), expected.detach(), dtype, err_msg=what)
            backward(expected, data["cotangent"].to(torch.float64))
            results = [per_rank[rank][str(dtype), index] for rank in range(world)]
            for rank, (loss, input_grad, *_) in enumerate(results):
                assert loss.dtype == dtype, what
                assert input_grad.dtype == dtype, what
                assert_close(loss, expected.detach(), dtype, err_msg=f"{what} loss on rank {rank}")
                assert_close(input_grad, leaves[0].grad, dtype, err_msg=f"{what} input gradient on rank {rank}")
            for leaf, name, position in ((leaves[1], "weight", 2), (leaves[2:], "bias", 3)):
                if isinstance(leaf, list):  # the bias, when the case has one
                    if not leaf:
                        assert all(len(result) == 3 for result in results), what
                        continue
                    leaf = leaf[0]
                gathered = torch.cat([result[position] for result in results])
                assert gathered.dtype == dtype, what
                assert_close(gathered, leaf.grad, dtype, err_msg=f"{what} {name} gradient")


# --------------------------------------------------------------------------------------------
# One process: errors, and a one-rank group
# --------------------------------------------------------------------------------------------


def test_without_a_process_group_the_error_says_so():
    with pytest.raises(RuntimeError, match=r"needs an initialized torch\.distributed process group"):
        cet.vocab_parallel_linear_cross_entropy(
            torch.zeros(2, 3), torch.zeros(4, 3), torch.tensor([0, 1]), vocab_start=0
        )


def _call(**changes):
    arguments = {
        "input": torch.zeros(5, 3),
        "linear_weight_shard": torch.zeros(4, 3),
        "target": torch.tensor([0, 1, 2, 3, -100]),
        "vocab_start": 0,
    }
    arguments.update(changes)
    return cet.vocab_parallel_linear_cross_entropy(
        arguments.pop("input"), arguments.pop("linear_weight_shard"), arguments.pop("target"), **arguments
    )


@pytest.mark.usefixtures("one_rank_group")
@pytest.mark.parametrize(
    ("changes", "error", "message"),
    [
        ({"input": [[0.0, 1.0]]}, TypeError, r"`input` must be a torch\.Tensor; got list"),
        ({"input": torch.zeros(5, 3, dtype=torch.int64)}, TypeError, r"`input` must be a floating-point"),
        ({"target": torch.zeros(5)}, TypeError, r"`target` must be integer class indices; got dtype torch\.float32"),
        (
            {"linear_weight_shard": torch.zeros(4, 2)},
            ValueError,
            r"`linear_weight_shard` must have shape \(V_local, H\) .* got input \(5, 3\) and "
            r"linear_weight_shard \(4, 2\)",
        ),
        ({"target": torch.tensor([0, 1])}, ValueError, r"`target` must have shape \(5,\) .*got shape \(2,\)"),
        ({"linear_bias": torch.zeros(3)}, ValueError, r"`linear_bias` must have shape \(4,\) .*got shape \(3,\)"),
        ({"weight": torch.zeros(5)}, ValueError, r"`weight` must have shape \(4,\) .*got shape \(5,\)"),
        ({"weight": -torch.ones(4)}, ValueError, r"`weight` must be finite and non-negative; got -1"),
        ({"sample_weight": torch.ones(4)}, ValueError, r"`sample_weight` must have shape \(5,\)"),
        ({"vocab_start": -1}, ValueError, r"`vocab_start` must be >= 0; got -1"),
        ({"vocab_start": 2}, ValueError, r"must tile the vocabulary \[0, V\).*\[\(2, 4\)\]"),
        ({"vocab_start": 1.0}, TypeError, r"`vocab_start` must be an integer"),
        (
            {"target": torch.tensor([0, 1, 4, 3, -100])},
            ValueError,
            r"`target` must be class indices in \[0, 4\).*got 4",
        ),
        ({"label_smoothing": 1.5}, ValueError, r"`label_smoothing` must be in \[0, 1\]; got 1\.5"),
        ({"z_loss": -1.0}, ValueError, r"`z_loss` must be >= 0"),
        ({"softcap": 0.0}, ValueError, r"`softcap` must be > 0; got 0"),
        ({"reduction": "avg"}, ValueError, r"reduction"),
        ({"chunk_size": 0}, ValueError, r"`chunk_size` must be >= 1; got 0"),
        ({"normalizer": 4.0, "reduction": "sum"}, ValueError, r"`normalizer` .* reduction='mean'"),
        ({"normalizer": -2.0}, ValueError, r"`normalizer` must be >= 0; got -2\.0"),
    ],
)
def test_bad_arguments_name_the_parameter(changes, error, message):
    with pytest.raises(error, match=message):
        _call(**changes)


@pytest.mark.usefixtures("one_rank_group")
def test_one_rank_equals_one_process_whatever_the_chunks():
    data = make_inputs(torch.float64)
    hidden, weight, bias = (data[k].clone().requires_grad_() for k in ("hidden", "linear_weight", "linear_bias"))
    target = data["target"]
    results = []
    for chunk_size in (None, 1, 5):
        loss = cet.vocab_parallel_linear_cross_entropy(
            hidden, weight, target, vocab_start=0, linear_bias=bias, label_smoothing=0.1, chunk_size=chunk_size
        )
        grads = torch.autograd.grad(loss, (hidden, weight, bias))
        results.append((loss, *grads))
    expected, leaves = oracle(hidden, weight, bias, target, {"label_smoothing": 0.1})
    expected_grads = torch.autograd.grad(expected, leaves)
    for got in results:
        for actual, want in zip(got, (expected, *expected_grads), strict=True):
            assert_close(actual, want, torch.float64)


@pytest.mark.usefixtures("one_rank_group")
def test_all_ignored_targets_give_zero_and_a_zero_gradient():
    hidden = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    loss = cet.vocab_parallel_linear_cross_entropy(hidden, weight, torch.full((4,), -100), vocab_start=0)
    loss.backward()
    assert float(loss.detach()) == 0.0
    assert not hidden.grad.any()
    assert not weight.grad.any()


@pytest.mark.usefixtures("one_rank_group")
def test_half_precision_input_accumulates_in_float32_and_keeps_its_dtypes():
    data = make_inputs(torch.float64)
    hidden, weight = (data[k].to(torch.bfloat16).requires_grad_() for k in ("hidden", "linear_weight"))
    loss = cet.vocab_parallel_linear_cross_entropy(hidden, weight, data["target"], vocab_start=0)
    loss.backward()
    assert loss.dtype == hidden.grad.dtype == weight.grad.dtype == torch.bfloat16
    expected = F.cross_entropy(F.linear(hidden.float(), weight.float()).reshape(-1, VOCAB), data["target"].reshape(-1))
    assert_close(loss, expected, torch.bfloat16)


@pytest.mark.usefixtures("one_rank_group")
def test_a_second_derivative_is_refused_not_silently_partial():
    hidden = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(5, 3, dtype=torch.float64)
    loss = cet.vocab_parallel_linear_cross_entropy(hidden, weight, torch.tensor([0, 1, 2, 3]), vocab_start=0)
    with pytest.raises(RuntimeError, match=r"cannot be differentiated twice \(create_graph=True\)"):
        torch.autograd.grad(loss, hidden, create_graph=True)


@pytest.mark.usefixtures("one_rank_group")
def test_the_default_chunk_holds_at_most_64_mib_of_float32_logits(monkeypatch):
    assert distributed.CHUNK_ELEMENTS * 4 == 64 * 2**20
    monkeypatch.setattr(distributed, "CHUNK_ELEMENTS", 2 * VOCAB)  # two rows of logits per chunk
    shapes = []
    original = distributed._chunk_logits

    def spy(rows, *args):
        shapes.append(tuple(rows.shape))
        return original(rows, *args)

    monkeypatch.setattr(distributed, "_chunk_logits", spy)
    data = make_inputs(torch.float32)
    hidden = data["hidden"].requires_grad_()
    cet.vocab_parallel_linear_cross_entropy(hidden, data["linear_weight"], data["target"], vocab_start=0).backward()
    assert shapes == [(2, HIDDEN)] * (2 * BATCH * SEQUENCE // 2)  # forward, then the backward's recomputation


@pytest.mark.usefixtures("one_rank_group")
@pytest.mark.parametrize(
    ("changes", "error", "message"),
    [
        ({"weight": torch.zeros(5)}, ValueError, r"`weight` must have shape \(4,\) .*got shape \(5,\)"),
        ({"weight": -torch.ones(4)}, ValueError, r"`weight` must be finite and non-negative; got -1"),
        ({"sample_weight": torch.ones(4)}, ValueError, r"`sample_weight` must have shape \(5,\)"),
        ({"softcap": -1.0}, ValueError, r"`softcap` must be > 0; got -1"),
        ({"vocab_start": 2}, ValueError, r"must tile the vocabulary \[0, V\).*\[\(2, 4\)\]"),
        ({"target": torch.tensor([0, 1, 4, 3, -100])}, ValueError, r"`target` must be class indices in \[0, 4\)"),
    ],
)
def test_the_logits_version_names_bad_arguments_too(changes, error, message):
    arguments = {"local_logits": torch.zeros(5, 4), "target": torch.tensor([0, 1, 2, 3, -100]), "vocab_start": 0}
    arguments.update(changes)
    with pytest.raises(error, match=message):
        cet.vocab_parallel_cross_entropy(arguments.pop("local_logits"), arguments.pop("target"), **arguments)
