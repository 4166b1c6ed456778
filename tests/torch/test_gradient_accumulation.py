"""Gradient accumulation with ``normalizer=``: micro-batches and data-parallel ranks add up to the full batch.

A padded batch of sequences (ignored targets at the padding) is split unevenly across 2 and 3 real
gloo processes, and on each of them into micro-batches; every call divides by the count of target
tokens of the whole step (all-reduced once, as a training loop would), the gradients are summed
over micro-batches and all-reduced over the ranks, and they must equal the gradients of the whole
batch in one call, in float64 (1e-6, as issue 18 asks; they agree far closer). Without the
normalizer — each micro-batch dividing by its own count, the usual bug — they do not, which the
test checks too, so it can fail.
"""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import crossentropy.torch as cet
from tests._support import free_port

BATCH, LENGTH, HIDDEN, VOCAB = 7, 9, 6, 23


def make_batch():
    gen = torch.Generator().manual_seed(31)
    hidden = torch.randn(BATCH, LENGTH, HIDDEN, generator=gen, dtype=torch.float64)
    weight = torch.randn(VOCAB, HIDDEN, generator=gen, dtype=torch.float64)
    bias = torch.randn(VOCAB, generator=gen, dtype=torch.float64)
    target = torch.randint(0, VOCAB, (BATCH, LENGTH), generator=gen)
    lengths = torch.randint(2, LENGTH + 1, (BATCH,), generator=gen)
    target[torch.arange(LENGTH)[None, :] >= lengths[:, None]] = -100  # padding
    return hidden, weight, bias, target


def loss_of(hidden, weight, bias, target, **options):
    return cet.linear_cross_entropy(
        hidden, weight, target, linear_bias=bias, shift=True, label_smoothing=0.1, **options
    )


def full_batch_gradients():
    hidden, weight, bias, target = make_batch()
    leaves = [t.clone().requires_grad_() for t in (weight, bias)]
    loss = loss_of(hidden, *leaves, target)
    return [g.detach() for g in torch.autograd.grad(loss, leaves)]


def rank_sequences(world: int, rank: int) -> torch.Tensor:
    """Uneven, shuffled shares of the sequences: rank r takes its slice of a fixed permutation."""
    order = torch.randperm(BATCH, generator=torch.Generator().manual_seed(5))
    cuts = torch.linspace(0, BATCH, world + 1).round().long().tolist()
    cuts[1] = max(1, cuts[1] - 1)  # uneven
    return order[cuts[rank] : cuts[rank + 1]]


def worker(rank: int, world: int, port: int, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        hidden, weight, bias, target = make_batch()
        mine = rank_sequences(world, rank)
        hidden, target = hidden[mine], target[mine]
        # The step's count of scored tokens (shift: position t scores target t + 1), all-reduced once.
        count = (target[:, 1:] != -100).sum().to(torch.float64)
        dist.all_reduce(count)
        results = {}
        for name, normalizer in (("global", count), ("own", None)):
            leaves = [t.clone().requires_grad_() for t in (weight, bias)]
            micro = torch.tensor_split(torch.arange(len(mine)), 2)  # micro-batches of this rank's sequences
            for piece in micro:
                if len(piece):
                    loss = loss_of(hidden[piece], *leaves, target[piece], normalizer=normalizer)
                    loss.backward()
            grads = [leaf.grad if leaf.grad is not None else torch.zeros_like(leaf) for leaf in leaves]
            for grad in grads:
                dist.all_reduce(grad)
            results[name] = grads
        torch.save(results, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("world", [2, 3])
def test_data_parallel_micro_batches_with_the_global_normalizer_give_the_full_batch_gradients(world, tmp_path):
    mp.spawn(worker, args=(world, free_port(), str(tmp_path)), nprocs=world, join=True)
    expected = full_batch_gradients()
    per_rank = [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(world)]
    for rank, results in enumerate(per_rank):
        for got, want in zip(results["global"], expected, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6, msg=lambda m, r=rank: f"rank {r}: {m}")
        # Each micro-batch dividing by its own count gives another (wrong) gradient.
        own = results["own"][0]
        assert not torch.allclose(own, expected[0], rtol=1e-3, atol=1e-6)
