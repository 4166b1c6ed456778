"""``vocab_parallel_cross_entropy`` on 2 and 3 real processes (gloo backend) against one process.

Every rank builds the same seeded logits and targets, keeps its (uneven) slice of the vocabulary,
and computes the loss and its gradient; the test checks that every rank's loss equals
``crossentropy.torch.cross_entropy`` on the whole logits and that the gradient slices, put back
together, equal its gradient.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import crossentropy.torch as cet
from tests._support import assert_close, free_port

N_ROWS, VOCAB = 11, 10
CASES = [
    {},
    {"label_smoothing": 0.2},
    {"z_loss": 1e-2},
    {"reduction": "sum"},
    {"reduction": "none"},
    {"label_smoothing": 0.1, "z_loss": 1e-3, "reduction": "none"},
    {"normalizer": 40.0},
    {"weight": "class"},
    {"weight": "class", "label_smoothing": 0.2, "reduction": "none"},
    {"softcap": 2.0, "z_loss": 1e-2},
    {"sample_weight": "rows"},
    {"weight": "class", "sample_weight": "rows", "label_smoothing": 0.1, "softcap": 3.0, "z_loss": 1e-3},
    {"weight": "class", "sample_weight": "rows", "normalizer": 7.5},
    {"temperature": 0.5, "softcap": 2.0, "label_smoothing": 0.1, "reduction": "none"},
]


def resolved(options: dict, dtype, columns: slice = slice(None)) -> dict:
    """The case's options with its markers replaced: "class" by (this rank's slice of) the class weights,
    "rows" by the sample weights."""
    gen = torch.Generator().manual_seed(11)
    class_weight = (torch.rand(VOCAB, generator=gen, dtype=torch.float64) + 0.2).to(dtype)
    sample_weight = torch.rand(N_ROWS, generator=gen, dtype=torch.float64).to(dtype)
    marks = {"class": class_weight[columns], "rows": sample_weight}
    return {k: marks[v] if isinstance(v, str) and v in marks else v for k, v in options.items()}


def shard_bounds(world: int) -> list[tuple[int, int]]:
    """Uneven contiguous slices of the vocabulary: 10 classes over 3 ranks are 4, 3 and 3."""
    sizes = [VOCAB // world + (1 if r < VOCAB % world else 0) for r in range(world)]
    starts = [sum(sizes[:r]) for r in range(world)]
    return [(start, start + size) for start, size in zip(starts, sizes, strict=True)]


def make_inputs(dtype):
    gen = torch.Generator().manual_seed(5)
    logits = (torch.randn(N_ROWS, VOCAB, generator=gen, dtype=torch.float64) * 3).to(dtype)
    targets = torch.randint(0, VOCAB, (N_ROWS,), generator=gen)
    targets[[2, 7]] = -100
    cotangent = torch.rand(N_ROWS, generator=gen, dtype=torch.float64)
    return logits, targets, cotangent


def worker(rank: int, world: int, port: int, dtype, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        logits, targets, cotangent = make_inputs(dtype)
        start, stop = shard_bounds(world)[rank]
        results = []
        for options in CASES:
            local = logits[:, start:stop].clone().requires_grad_()
            loss = cet.vocab_parallel_cross_entropy(
                local, targets, vocab_start=start, **resolved(options, dtype, slice(start, stop))
            )
            weights = cotangent.to(loss.dtype) if loss.ndim else torch.ones((), dtype=loss.dtype)
            (loss * weights).sum().backward()
            results.append((loss.detach(), local.grad))
        torch.save(results, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_sharded_vocabulary_gives_the_single_process_loss_and_gradient(world, dtype, tmp_path):
    mp.spawn(worker, args=(world, free_port(), dtype, str(tmp_path)), nprocs=world, join=True)
    logits, targets, cotangent = make_inputs(dtype)
    per_rank = [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(world)]
    for case, options in enumerate(CASES):
        reference_options = {
            k: v for k, v in resolved(options, dtype).items() if k not in ("normalizer", "temperature")
        }
        x = logits.clone().requires_grad_()
        scaled = x / options.get("temperature", 1.0)
        expected = cet.cross_entropy(scaled, targets, **reference_options)
        if "normalizer" in options:  # the sum over the tokens, divided by the given count
            expected = cet.cross_entropy(scaled, targets, reduction="sum", **reference_options) / options["normalizer"]
        weights = cotangent.to(expected.dtype) if expected.ndim else torch.ones((), dtype=expected.dtype)
        (expected * weights).sum().backward()
        what = f"world={world} {options}"
        for rank in range(world):
            assert_close(per_rank[rank][case][0], expected.detach(), dtype, err_msg=f"{what} loss on rank {rank}")
        gathered = torch.cat([per_rank[rank][case][1] for rank in range(world)], dim=1)
        assert gathered.dtype == dtype
        assert_close(gathered, x.grad, dtype, err_msg=f"{what} gradient")


def test_without_a_process_group_the_error_says_so():
    with pytest.raises(RuntimeError, match=r"needs an initialized torch\.distributed process group"):
        cet.vocab_parallel_cross_entropy(torch.zeros(2, 3), torch.tensor([0, 1]), vocab_start=0)


def second_derivative_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        logits, targets, _ = make_inputs(torch.float64)
        local = logits.clone().requires_grad_()
        loss = cet.vocab_parallel_cross_entropy(local, targets, vocab_start=0)
        try:
            (grad,) = torch.autograd.grad(loss, local, create_graph=True)
            torch.autograd.grad(grad.pow(2).sum(), local)
            outcome = "no error"
        except RuntimeError as error:
            outcome = str(error)
        (Path(out_dir) / "outcome.txt").write_text(outcome)
    finally:
        dist.destroy_process_group()


def test_a_second_derivative_is_refused_not_silently_partial(tmp_path):
    # The backward pass has no all-reduce, so it cannot differentiate the global LSE again:
    # autograd must say so instead of returning a second derivative that misses that term.
    mp.spawn(second_derivative_worker, args=(1, free_port(), str(tmp_path)), nprocs=1, join=True)
    assert "cannot be differentiated twice (create_graph=True)" in (tmp_path / "outcome.txt").read_text()
