"""``return_stats=True`` of the vocabulary-parallel losses on 2 and 3 real processes (gloo) against one process.

Every rank builds the same seeded float64 data, keeps its (uneven) slice of the vocabulary (of the
logits, or of the projection's rows, bias and class weights) and computes the loss with its
statistics, the loss without them, and the gradients of ``loss + a·lse.sum() + b·entropy.sum()``.
The oracles are float64 PyTorch on the whole vocabulary: ``torch.logsumexp``, the entropy
``torch.special.entr(softmax(u)).sum()`` and ``argmax(u) == target`` of the logits the loss reads
(over the temperature, soft-capped), 0 / False where the target is ignored or the sample weight is 0,
and autograd through them (plus :func:`crossentropy.torch.cross_entropy` for the loss) for the
gradients. The data hold exact ties of the maximum across shard boundaries (the first maximum on the
lower rank: a hit only when the target is that class), ``-inf`` logits (a whole shard of a row, and
scattered), ignored rows and a sample weight of 0. One launch per world size runs every case; one more,
on two ranks, runs the linear loss on the Triton backend's fused kernels under Triton's interpreter.
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
from tests._support import NEEDS_TRITON_ON_CPU, TRITON_INSTALLED, free_port

N_ROWS, VOCAB = 12, 11  # 11 classes: 6 + 5 over 2 ranks, 4 + 4 + 3 over 3
BATCH, SEQUENCE, HIDDEN = 3, 4, 5
A_LSE, B_ENTROPY = 0.3, -0.7  # the statistics' coefficients in the differentiated total
TIGHT = {"rtol": 1e-10, "atol": 1e-12}

# Logits cases. Markers: "weight"/"sample_weight" True pass the seeded tensors. The -inf logits of the data
# would make a label-smoothed loss infinite: that case soft-caps them.
LOGITS_CASES = [
    {},
    {"temperature": 0.7, "softcap": 3.0},
    {"reduction": "none", "sample_weight": True},
    {"reduction": "sum", "weight": True, "label_smoothing": 0.1, "z_loss": 1e-3, "sample_weight": True, "softcap": 4.0},
    {"normalizer": 9.0, "temperature": 1.3, "sample_weight": True},
]
# Linear cases. "input_3d": (batch, sequence, hidden) input; "masked_class": the bias of one class is -inf.
LINEAR_CASES = [
    {},
    {"temperature": 0.6, "softcap": 2.0, "chunk_size": 5},
    {"weight": True, "label_smoothing": 0.1, "sample_weight": True, "reduction": "none", "chunk_size": 4},
    {"shift": True, "input_3d": True, "sample_weight": True},
    {"shift": True, "input_3d": True, "reduction": "none", "temperature": 1.7},
    {"normalizer": 9.0, "z_loss": 1e-3, "chunk_size": 2, "sample_weight": True},
    {"masked_class": True, "reduction": "sum"},
]
TRITON_CASES = [0, 1, 3]  # of LINEAR_CASES: tiny shapes, the interpreter is slow


def shard_bounds(world: int) -> list[tuple[int, int]]:
    sizes = [VOCAB // world + (1 if r < VOCAB % world else 0) for r in range(world)]
    starts = [sum(sizes[:r]) for r in range(world)]
    return [(start, start + size) for start, size in zip(starts, sizes, strict=True)]


# --------------------------------------------------------------------------------------------
# Data, the same on every rank (and in the checking process) for a world size
# --------------------------------------------------------------------------------------------


def logits_data(world: int) -> dict:
    """Logits with ties across the shard boundaries, -inf entries, an ignored row and a sample weight of 0."""
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(N_ROWS, VOCAB, generator=gen, dtype=torch.float64) * 2
    target = torch.randint(0, VOCAB, (N_ROWS,), generator=gen)
    first = shard_bounds(world)[0][1]  # the first class of rank 1
    target[0] = -100
    for row, label in ((1, first - 1), (2, first)):  # a tie across the boundary: the first maximum on rank 0
        logits[row, [first - 1, first]] = logits[row].max() + 1
        target[row] = label
    logits[3, [0, VOCAB - 1]] = logits[3].max() + 1  # a tie between the first and the last rank
    target[3] = VOCAB - 1
    logits[4, :first] = -torch.inf  # every class of rank 0 masked
    logits[5, 1::3] = -torch.inf  # scattered
    logits[6, [2, 9]] = logits[6].max() + 0.5  # a tie on rank 0 and the last rank, the target the first
    target[6] = 2
    for row in (4, 5, 7, 8):
        target[row] = logits[row].argmax()  # hits
    sample_weight = torch.rand(N_ROWS, generator=gen, dtype=torch.float64) + 0.5
    sample_weight[8] = 0.0  # a hit with weight 0: no statistics
    return {
        "logits": logits,
        "target": target,
        "weight": torch.rand(VOCAB, generator=gen, dtype=torch.float64) + 0.2,
        "sample_weight": sample_weight,
        "cotangent": torch.rand(N_ROWS, generator=gen, dtype=torch.float64),
    }


def linear_data(world: int) -> dict:
    """A head and hidden states of small multiples of 1/2, so that every logit is exact in float64 and equal
    logits are ties whatever the order of the products' sums; rows 1 and 2 tie across the first shard
    boundary (two equal rows of the head, scaled up), row 3 is ignored, row 5 has sample weight 0."""
    gen = torch.Generator().manual_seed(7)

    def halves(*shape):
        return torch.randint(-2, 3, shape, generator=gen).to(torch.float64) / 2

    head, bias = halves(VOCAB, HIDDEN), halves(VOCAB)
    hidden = halves(BATCH * SEQUENCE, HIDDEN)
    first = shard_bounds(world)[0][1]
    head[first - 1] = head[first] = torch.tensor([2.0, -2.0, 1.5, 2.0, -1.0], dtype=torch.float64)
    bias[first - 1] = bias[first] = 0.5
    hidden[[1, 2, 6]] = torch.tensor([1.0, -1.0, 0.5, 1.0, -0.5], dtype=torch.float64)  # the tied classes lead by far
    target = torch.randint(0, VOCAB, (BATCH * SEQUENCE,), generator=gen)
    target[[1, 2, 6]] = torch.tensor([first - 1, first, first - 1])
    target[3] = -100
    target[[4, 5]] = (F.linear(hidden[[4, 5]], head, bias)).argmax(dim=1)
    sample_weight = torch.rand(BATCH * SEQUENCE, generator=gen, dtype=torch.float64) + 0.5
    sample_weight[5] = 0.0
    return {
        "hidden": hidden.reshape(BATCH, SEQUENCE, HIDDEN),
        "head": head,
        "bias": bias,
        "target": target.reshape(BATCH, SEQUENCE),
        "weight": torch.rand(VOCAB, generator=gen, dtype=torch.float64) + 0.2,
        "sample_weight": sample_weight.reshape(BATCH, SEQUENCE),
        "cotangent": torch.rand(BATCH, SEQUENCE, generator=gen, dtype=torch.float64),
    }


def logits_keywords(data: dict, case: dict, columns: slice = slice(None)) -> dict:
    keywords = {k: v for k, v in case.items() if k not in ("weight", "sample_weight")}
    if case.get("weight"):
        keywords["weight"] = data["weight"][columns]
    if case.get("sample_weight"):
        keywords["sample_weight"] = data["sample_weight"]
    return keywords


def linear_arguments(data: dict, case: dict, columns: slice = slice(None)):
    """``(input, head, bias, target, keywords)`` of ``case`` for the classes ``columns``."""
    keywords = {k: v for k, v in case.items() if k not in ("weight", "sample_weight", "input_3d", "masked_class")}
    hidden = data["hidden"] if case.get("input_3d") else data["hidden"].reshape(-1, HIDDEN)
    target = data["target"] if case.get("input_3d") else data["target"].reshape(-1)
    bias = data["bias"].clone()
    if case.get("masked_class"):
        bias[0] = -torch.inf
        target = torch.where(target == 0, 1, target)
    if case.get("weight"):
        keywords["weight"] = data["weight"][columns]
    if case.get("sample_weight"):
        keywords["sample_weight"] = data["sample_weight"].reshape(target.shape)
    return hidden, data["head"][columns], bias[columns], target, keywords


def total(loss: torch.Tensor, stats, cotangent: torch.Tensor) -> torch.Tensor:
    """What the tests differentiate: the loss (times a cotangent for ``"none"``) plus a·lse + b·entropy."""
    weighted = (loss * cotangent.reshape(loss.shape)).sum() if loss.ndim else loss
    return weighted + A_LSE * stats[0].sum() + B_ENTROPY * stats[1].sum()


# --------------------------------------------------------------------------------------------
# The ranks
# --------------------------------------------------------------------------------------------


def run_logits(world: int, rank: int) -> list:
    data = logits_data(world)
    start, stop = shard_bounds(world)[rank]
    results = []
    for case in LOGITS_CASES:
        keywords = logits_keywords(data, case, slice(start, stop))
        local = data["logits"][:, start:stop].clone().requires_grad_()
        loss, stats = cet.vocab_parallel_cross_entropy(
            local, data["target"], vocab_start=start, return_stats=True, **keywords
        )
        plain = cet.vocab_parallel_cross_entropy(local.detach(), data["target"], vocab_start=start, **keywords)
        (grad,) = torch.autograd.grad(total(loss, stats, data["cotangent"]), local)
        results.append({"loss": loss.detach(), "plain": plain, "stats": [t.detach() for t in stats], "grad": grad})
    # the statistics alone reach the backward (no gradient of the loss)
    local = data["logits"][:, start:stop].clone().requires_grad_()
    _, stats = cet.vocab_parallel_cross_entropy(local, data["target"], vocab_start=start, return_stats=True)
    results.append({"grad": torch.autograd.grad(stats.entropy.sum() - stats.lse.sum(), local)[0]})
    return results


def run_linear(world: int, rank: int, cases: list[int], backend: str) -> dict:
    data = linear_data(world)
    start, stop = shard_bounds(world)[rank]
    results = {}
    for index in cases:
        case = LINEAR_CASES[index]
        hidden, head, bias, target, keywords = linear_arguments(data, case, slice(start, stop))
        leaves = [t.clone().requires_grad_() for t in (hidden, head, bias)]
        with kernels.backend(backend):
            loss, stats = cet.vocab_parallel_linear_cross_entropy(
                leaves[0], leaves[1], target, vocab_start=start, linear_bias=leaves[2], return_stats=True, **keywords
            )
            plain = cet.vocab_parallel_linear_cross_entropy(
                hidden, head, target, vocab_start=start, linear_bias=bias, **keywords
            )
            grads = torch.autograd.grad(total(loss, stats, data["cotangent"]), leaves)
        results[index] = {"loss": loss.detach(), "plain": plain, "stats": [t.detach() for t in stats], "grads": grads}
    return results


def worker(rank: int, world: int, port: int, out_dir: str, backend: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        if backend == "triton":  # the fused kernels must compute the statistics and their gradient
            from crossentropy.kernels.triton import _linear

            calls = []
            for name in ("linear_logsumexp", "linear_cross_entropy_gradients"):
                original = getattr(_linear, name)

                def spy(*args, _original=original, _name=name, **options):
                    calls.append((_name, bool(options.get("stats")), options.get("entropy_weight") is not None))
                    return _original(*args, **options)

                setattr(_linear, name, spy)
            results = {"linear": run_linear(world, rank, TRITON_CASES, "triton"), "calls": calls}
        else:
            linear = run_linear(world, rank, list(range(len(LINEAR_CASES))), backend)
            results = {"logits": run_logits(world, rank), "linear": linear}
        torch.save(results, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def launch(world: int, backend: str, out_dir) -> list[dict]:
    mp.spawn(worker, args=(world, free_port(), str(out_dir), backend), nprocs=world, join=True)
    return [torch.load(out_dir / f"rank{rank}.pt") for rank in range(world)]


@pytest.fixture(scope="module", params=[2, 3], ids=lambda world: f"world={world}")
def ranks(request, tmp_path_factory):
    world = request.param
    return world, launch(world, "auto", tmp_path_factory.mktemp(f"stats{world}"))


# --------------------------------------------------------------------------------------------
# The float64 references on the whole vocabulary
# --------------------------------------------------------------------------------------------


def capped(x: torch.Tensor, case: dict) -> torch.Tensor:
    u = x / case.get("temperature", 1.0)
    softcap = case.get("softcap")
    return u if softcap is None else softcap * torch.tanh(u / softcap)


def reference_stats(u: torch.Tensor, target: torch.Tensor, live: torch.Tensor):
    """``(lse, entropy, hits)`` of the rows ``u``, 0 / False where not ``live``. The entropy is
    ``entr(softmax(u)).sum()`` in value and ``-sum(p log p)`` with ``log p`` of -inf logits replaced by 0 in
    its gradient (``entr``'s is NaN at p = 0); the two agree in value."""
    lse = torch.logsumexp(u, dim=1)
    log_p = torch.log_softmax(u, dim=1)
    differentiable = -(log_p.exp() * torch.where(torch.isfinite(log_p), log_p, 0.0)).sum(dim=1)
    entropy = torch.special.entr(torch.softmax(u.detach(), dim=1)).sum(dim=1)
    torch.testing.assert_close(differentiable.detach(), entropy, rtol=1e-14, atol=1e-15)
    zero = torch.zeros_like(lse)
    return torch.where(live, lse, zero), torch.where(live, differentiable, zero), live & (u.argmax(dim=1) == target)


def check_stats(got: list, expected: tuple, what: str) -> None:
    lse, entropy, hits = got
    assert lse.dtype == entropy.dtype == torch.float64, what
    assert hits.dtype == torch.bool, what
    torch.testing.assert_close(lse, expected[0].detach(), **TIGHT, msg=f"{what}: lse")
    torch.testing.assert_close(entropy, expected[1].detach(), **TIGHT, msg=f"{what}: entropy")
    assert hits.tolist() == expected[2].tolist(), f"{what}: accuracy"


def logits_reference(data: dict, case: dict):
    """The loss, the statistics and the gradient of :func:`total` with respect to the whole logits."""
    x = data["logits"].clone().requires_grad_()
    keywords = logits_keywords(data, case)
    normalizer = keywords.pop("normalizer", None)
    if normalizer is not None:
        keywords["reduction"] = "sum"
    loss = cet.cross_entropy(x, data["target"], **keywords)
    if normalizer is not None:
        loss = loss / normalizer
    live = data["target"] != -100
    if case.get("sample_weight"):
        live = live & (data["sample_weight"] != 0)
    stats = reference_stats(capped(x, case), data["target"], live)
    (grad,) = torch.autograd.grad(total(loss, stats, data["cotangent"]), x)
    return loss.detach(), stats, grad


def linear_reference(data: dict, case: dict):
    """The loss, the statistics and the gradients of :func:`total` with respect to the input, the head and the
    bias, from the materialized logits; ``shift`` by explicit slicing (the last position 0 / False)."""
    hidden, head, bias, target, keywords = linear_arguments(data, case)
    leaves = [t.clone().requires_grad_() for t in (hidden, head, bias)]
    x, rows_target, sample = leaves[0], target, keywords.pop("sample_weight", None)
    keywords.pop("chunk_size", None)
    shift = keywords.pop("shift", False)
    if shift:
        x, rows_target = x[:, :-1], target[:, 1:]
        sample = None if sample is None else sample[:, :-1]
    logits = F.linear(x, leaves[1], leaves[2]).reshape(-1, VOCAB)
    rows_target = rows_target.reshape(-1)
    sample = None if sample is None else sample.reshape(-1)
    normalizer = keywords.pop("normalizer", None)
    if normalizer is not None:
        keywords["reduction"] = "sum"
    loss = cet.cross_entropy(logits, rows_target, sample_weight=sample, **keywords)
    if normalizer is not None:
        loss = loss / normalizer
    live = rows_target != -100
    if sample is not None:
        live = live & (sample != 0)
    stats = reference_stats(capped(logits, case), rows_target, live)
    if shift:  # back to the positions of the input: the last of each sequence scores nothing

        def pad(t):
            return torch.cat([t.reshape(BATCH, SEQUENCE - 1), t.new_zeros(BATCH, 1)], dim=1)

        stats = tuple(pad(t) for t in stats)
        loss = pad(loss) if loss.ndim else loss
    else:
        stats = tuple(t.reshape(target.shape) for t in stats)
        loss = loss.reshape(target.shape) if loss.ndim else loss
    grads = torch.autograd.grad(total(loss, stats, data["cotangent"]), leaves)
    return loss.detach(), stats, grads


def test_the_data_hold_ties_across_shards_masked_logits_and_rows_without_statistics():
    """The cases the tests are about are in the data (the references' own verdicts)."""
    for world in (2, 3):
        data = logits_data(world)
        live = (data["target"] != -100) & (data["sample_weight"] != 0)
        _, _, hits = reference_stats(data["logits"], data["target"], live)
        assert hits[[2, 3]].tolist() == [False, False]  # tied with an earlier class of a lower rank
        assert hits[[1, 4, 5, 6, 7]].all()  # row 4: a whole shard of -inf; 6: the first of a tie
        assert not hits[[0, 8]].any()  # ignored, weight 0
        assert torch.isinf(data["logits"][4]).sum() == shard_bounds(world)[0][1]
        data = linear_data(world)
        logits = F.linear(data["hidden"], data["head"], data["bias"]).reshape(-1, VOCAB)
        first = shard_bounds(world)[0][1]
        assert (logits[[1, 2, 6]].argmax(dim=1) == first - 1).all()
        assert (logits[[1, 2, 6], first - 1] == logits[[1, 2, 6], first]).all()


# --------------------------------------------------------------------------------------------
# The tests
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("index", range(len(LOGITS_CASES)))
def test_logits_statistics_loss_and_gradients_equal_the_whole_vocabulary(ranks, index):
    world, per_rank = ranks
    case = LOGITS_CASES[index]
    data = logits_data(world)
    loss, stats, grad = logits_reference(data, case)
    what = f"world={world} {case}"
    for rank, results in enumerate(per_rank):
        got = results["logits"][index]
        check_stats(got["stats"], stats, f"{what} rank {rank}")
        torch.testing.assert_close(got["loss"], loss, **TIGHT, msg=f"{what} rank {rank}: loss")
        torch.testing.assert_close(got["loss"], got["plain"], rtol=1e-13, atol=1e-15, msg=f"{what}: changed")
    gathered = torch.cat([results["logits"][index]["grad"] for results in per_rank], dim=1)
    assert torch.isfinite(gathered).all(), what
    torch.testing.assert_close(gathered, grad, **TIGHT, msg=f"{what}: gradient")


def test_the_gradient_of_the_statistics_alone(ranks):
    world, per_rank = ranks
    data = logits_data(world)
    x = data["logits"].clone().requires_grad_()
    lse, entropy, _ = reference_stats(x, data["target"], data["target"] != -100)
    (expected,) = torch.autograd.grad(entropy.sum() - lse.sum(), x)
    gathered = torch.cat([results["logits"][-1]["grad"] for results in per_rank], dim=1)
    torch.testing.assert_close(gathered, expected, **TIGHT)


def check_linear(world: int, per_rank: list, index: int, backend: str) -> None:
    case = LINEAR_CASES[index]
    loss, stats, (grad_input, grad_head, grad_bias) = linear_reference(linear_data(world), case)
    what = f"world={world} {backend} {case}"
    for rank, results in enumerate(per_rank):
        got = results["linear"][index]
        check_stats(got["stats"], stats, f"{what} rank {rank}")
        torch.testing.assert_close(got["loss"], loss, **TIGHT, msg=f"{what} rank {rank}: loss")
        torch.testing.assert_close(got["loss"], got["plain"], rtol=1e-13, atol=1e-15, msg=f"{what}: changed")
        torch.testing.assert_close(got["grads"][0], grad_input, **TIGHT, msg=f"{what} rank {rank}: input gradient")
    for position, expected, name in ((1, grad_head, "weight"), (2, grad_bias, "bias")):
        gathered = torch.cat([results["linear"][index]["grads"][position] for results in per_rank])
        torch.testing.assert_close(gathered, expected, **TIGHT, msg=f"{what}: {name} gradient")


@pytest.mark.parametrize("index", range(len(LINEAR_CASES)))
def test_linear_statistics_loss_and_gradients_equal_the_whole_vocabulary(ranks, index):
    world, per_rank = ranks
    check_linear(world, per_rank, index, "chunks")


@NEEDS_TRITON_ON_CPU
@pytest.mark.skipif(not TRITON_INSTALLED, reason="needs triton")
def test_linear_statistics_on_the_fused_triton_kernels(tmp_path):
    with kernels.backend("triton"):
        fused = distributed.fused_linear_backend(
            torch.zeros(1, 1), torch.zeros(1, 1), None, torch.zeros(1, dtype=torch.int64)
        )
    if fused is None:
        pytest.skip("the Triton backend has no fused linear kernels here")
    per_rank = launch(2, "triton", tmp_path)
    for results in per_rank:  # every call of the statistics on the fused kernels, forward and backward
        assert ("linear_logsumexp", True, False) in results["calls"]
        assert ("linear_cross_entropy_gradients", False, True) in results["calls"]
    for index in TRITON_CASES:
        check_linear(2, per_rank, index, "triton")


# --------------------------------------------------------------------------------------------
# One process: the flag is checked
# --------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("one_rank_group")
def test_return_stats_must_be_a_bool():
    with pytest.raises(TypeError, match=r"`return_stats` must be True or False; got 'yes'"):
        cet.vocab_parallel_cross_entropy(torch.zeros(2, 3), torch.tensor([0, 1]), vocab_start=0, return_stats="yes")
    with pytest.raises(TypeError, match=r"`return_stats` must be True or False; got 1"):
        cet.vocab_parallel_linear_cross_entropy(
            torch.zeros(2, 3), torch.zeros(4, 3), torch.tensor([0, 1]), vocab_start=0, return_stats=1
        )


@pytest.mark.usefixtures("one_rank_group")
def test_a_second_derivative_through_the_statistics_is_refused():
    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    _, stats = cet.vocab_parallel_cross_entropy(x, torch.tensor([0, 1, 2]), vocab_start=0, return_stats=True)
    with pytest.raises(RuntimeError, match=r"cannot be differentiated twice \(create_graph=True\)"):
        torch.autograd.grad(stats.entropy.sum(), x, create_graph=True)
