"""Train a tiny next-token model whose output head goes through ``linear_cross_entropy``.

The data is a seeded Markov chain over a vocabulary of 16,384 tokens in which every token has
a handful of likely successors, so a model that learns the chain can drive the cross-entropy
from ln(16384) = 9.70 nats (uniform guessing) down towards the chain's own entropy rate, which
is printed for reference. The model embeds the previous token, passes it through a small MLP,
and scores the whole vocabulary with a tied-size output head; the loss of that head is computed
by :func:`crossentropy.torch.linear_cross_entropy`, which never holds the batch × vocabulary
logits in memory.

    .venv/bin/python examples/tiny_language_model.py            # about half a minute
    .venv/bin/python examples/tiny_language_model.py --steps 50 --json
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch

import crossentropy.torch as cet

VOCAB = 16_384
HIDDEN = 64
SUCCESSORS = 4


def markov_chain(generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Each token's likely successors and their probabilities (Dirichlet-like, seeded)."""
    successors = torch.randint(0, VOCAB, (VOCAB, SUCCESSORS), generator=generator)
    weights = torch.rand((VOCAB, SUCCESSORS), generator=generator) ** 2 + 0.05
    return successors, weights / weights.sum(dim=1, keepdim=True)


def entropy_rate(probabilities: torch.Tensor) -> float:
    """The chain's mean next-token entropy in nats (uniform over current tokens; an approximation
    of the stationary average, and a floor no model of the previous token can beat on average)."""
    return float(-(probabilities * probabilities.log()).sum(dim=1).mean())


def sample_batch(successors, probabilities, batch: int, generator: torch.Generator):
    current = torch.randint(0, VOCAB, (batch,), generator=generator)
    choice = torch.multinomial(probabilities[current], 1, generator=generator)[:, 0]
    return current, successors[current, choice]


class NextToken(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(VOCAB, HIDDEN)
        self.body = torch.nn.Sequential(torch.nn.Linear(HIDDEN, HIDDEN), torch.nn.GELU())
        self.head = torch.nn.Linear(HIDDEN, VOCAB)

    def hidden(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.body(self.embed(tokens))


def train(steps: int, batch: int, seed: int) -> dict:
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    successors, probabilities = markov_chain(generator)
    model = NextToken()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-2)
    history = []
    start = time.perf_counter()
    for step in range(1, steps + 1):
        tokens, following = sample_batch(successors, probabilities, batch, generator)
        loss = cet.linear_cross_entropy(model.hidden(tokens), model.head.weight, following, linear_bias=model.head.bias)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        history.append(loss.item())
        if step == 1 or step % max(1, steps // 10) == 0:
            print(f"step {step:5d}  loss {loss.item():.3f} nats")
    # The same head through the unfused loss on a held-out batch: the two must agree.
    tokens, following = sample_batch(successors, probabilities, batch, generator)
    with torch.no_grad():
        hidden = model.hidden(tokens)
        fused = cet.linear_cross_entropy(hidden, model.head.weight, following, linear_bias=model.head.bias).item()
        unfused = torch.nn.functional.cross_entropy(model.head(hidden), following).item()
    return {
        "steps": steps,
        "batch": batch,
        "vocabulary": VOCAB,
        "uniform_nats": math.log(VOCAB),
        "chain_entropy_nats": entropy_rate(probabilities),
        "first_loss": history[0],
        "last_loss": sum(history[-10:]) / len(history[-10:]),
        "held_out_fused": fused,
        "held_out_unfused": unfused,
        "seconds": time.perf_counter() - start,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = parser.parse_args()
    summary = train(args.steps, args.batch, args.seed)
    if args.json:
        print(json.dumps(summary))
        return
    print(
        f"\nloss {summary['first_loss']:.3f} -> {summary['last_loss']:.3f} nats "
        f"(uniform guess {summary['uniform_nats']:.3f}, the chain's entropy {summary['chain_entropy_nats']:.3f}); "
        f"held out: fused {summary['held_out_fused']:.5f}, unfused {summary['held_out_unfused']:.5f}; "
        f"{summary['seconds']:.1f} s"
    )


if __name__ == "__main__":
    main()
