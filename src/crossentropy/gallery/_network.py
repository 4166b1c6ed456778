"""The small PyTorch network several gallery experiments train on the digits: one hidden ReLU layer, full-batch Adam."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..torch.functional import cross_entropy
from ._common import single_thread

__all__ = ["Loss", "train_network"]

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def train_network(
    x: torch.Tensor,
    y: torch.Tensor,
    loss: Loss,
    *,
    hidden_units: int,
    n_classes: int,
    learning_rate: float,
    steps: int,
    seed: int,
    validation: tuple[torch.Tensor, torch.Tensor] | None = None,
    check_every: int = 5,
) -> tuple[torch.nn.Module, int]:
    """An ``n_features``-``hidden_units``-``n_classes`` ReLU network trained by full-batch Adam on ``loss(logits, y)``.

    Parameters
    ----------
    x : float32 tensor of shape (n_samples, n_features)
    y : int64 tensor of shape (n_samples,)
    loss : callable
        ``loss(logits, y)``, a scalar tensor to minimize.
    hidden_units, n_classes : int
    learning_rate : float
        Adam's step size.
    steps : int
        Adam steps, each on the whole of ``x``.
    seed : int
        ``torch.manual_seed`` just before the weights are drawn, so equal seeds give equal starts.
    validation : (x, y) tensors, optional
        When given, the network returned is the one of the lowest cross-entropy on them, checked
        every ``check_every`` steps (early stopping).

    Returns
    -------
    network : torch.nn.Module
        Logits out.
    step : int
        The number of steps the returned weights have had (``steps`` without ``validation``).
    """
    torch.manual_seed(seed)
    network = torch.nn.Sequential(
        torch.nn.Linear(x.shape[1], hidden_units), torch.nn.ReLU(), torch.nn.Linear(hidden_units, n_classes)
    )
    optimizer = torch.optim.Adam(network.parameters(), lr=learning_rate)
    best_loss, best_step, best_state = float("inf"), steps, None
    with single_thread():
        for step in range(1, steps + 1):
            optimizer.zero_grad()
            loss(network(x), y).backward()
            optimizer.step()
            if validation is not None and step % check_every == 0:
                with torch.no_grad():
                    held_out = float(cross_entropy(network(validation[0]), validation[1]))
                if held_out < best_loss:
                    best_loss, best_step = held_out, step
                    best_state = {name: value.clone() for name, value in network.state_dict().items()}
    if best_state is not None:
        network.load_state_dict(best_state)
    return network, best_step
