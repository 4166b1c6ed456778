r"""``surprise``: the surprise of an outcome, and cross-entropy as entropy plus KL divergence.

The surprise of an outcome of probability :math:`p` is :math:`-\ln p`: an outcome thought
nearly certain (0.92) surprises little (0.083 nats), one thought nearly impossible (0.001) a lot
(6.91 nats). Cross-entropy is the expected surprise under the truth :math:`P` of outcomes
coded by a model :math:`Q`,

.. math::

    H(P, Q) = -\sum_k P_k \ln Q_k = H(P) + D_\mathrm{KL}(P \,\|\, Q),

so it is never below the entropy :math:`H(P)`, and equals it only at :math:`Q = P`. The biased
coin :math:`P = (0.9, 0.1)` modelled by :math:`Q = (0.7, 0.3)` gives :math:`H(P) = 0.3251`,
:math:`H(P, Q) = 0.4414` and :math:`D_\mathrm{KL} = 0.1163` nats; sweeping :math:`Q = (q, 1 - q)`
shows the minimum of :math:`H(P, Q)` at :math:`q = 0.9`.
"""

from __future__ import annotations

import math

import numpy as np

from ..information import cross_entropy, decompose, entropy, kl_divergence
from ..losses import nll_loss
from ._common import Context, Experiment, Result, Table, pyplot, save_figure

__all__ = ["EXPERIMENT"]

PROBABILITIES = (0.001, 0.01, 0.1, 0.5, 0.92, 0.99)
COIN_P, COIN_Q = (0.9, 0.1), (0.7, 0.3)


def _surprise(p: float) -> float:
    """``-ln p`` as the library computes it: the negative log-likelihood of the outcome."""
    log_probs = np.log(np.array([[p, 1.0 - p]]))
    return float(nll_loss(log_probs, np.array([0])))


def run(context: Context) -> Result:
    surprises = {p: _surprise(p) for p in PROBABILITIES}
    p, q = np.array(COIN_P), np.array(COIN_Q)
    nats, bits = decompose(p, q), decompose(p, q, base=2)

    # H(P, Q) over Q = (q, 1 - q): a fine grid in the full run, a coarse one in the quick run.
    grid = np.linspace(0.01, 0.99, 99 if context.quick else 981)
    models = np.stack([grid, 1.0 - grid], axis=1)
    truth = np.broadcast_to(p, models.shape)
    cross = np.asarray(cross_entropy(truth, models))
    kl = np.asarray(kl_divergence(truth, models))
    h = float(entropy(p))
    best = int(np.argmin(cross))
    away = np.abs(grid - COIN_P[0]) > 1e-9

    numbers = {
        "surprise_nats": {str(k): v for k, v in surprises.items()},
        "coin": {
            "entropy": float(nats.entropy),
            "cross_entropy": float(nats.cross_entropy),
            "kl_divergence": float(nats.kl_divergence),
            "identity_residual": float(nats.entropy + nats.kl_divergence - nats.cross_entropy),
            "cross_entropy_bits": float(bits.cross_entropy),
        },
        "sweep": {
            "argmin_q": float(grid[best]),
            "min_cross_entropy": float(cross[best]),
            "entropy": h,
            "min_kl_away_from_p": float(kl[away].min()),
            "max_identity_residual": float(np.max(np.abs(h + kl - cross))),
        },
    }
    tables = [
        Table(
            "Surprise of an outcome of probability p",
            ("p", "-ln p (nats)", "-log2 p (bits)"),
            [(p_, s, s / math.log(2)) for p_, s in surprises.items()],
        ),
        Table(
            "Coin P = (0.9, 0.1) modelled by Q = (0.7, 0.3)",
            ("quantity", "nats", "bits"),
            [
                ("H(P)", float(nats.entropy), float(bits.entropy)),
                ("H(P, Q)", float(nats.cross_entropy), float(bits.cross_entropy)),
                ("KL(P || Q)", float(nats.kl_divergence), float(bits.kl_divergence)),
                (
                    "H(P) + KL - H(P, Q)",
                    numbers["coin"]["identity_residual"],
                    float(bits.entropy + bits.kl_divergence - bits.cross_entropy),
                ),
            ],
        ),
        Table(
            "H(P, Q) over Q = (q, 1 - q)",
            ("quantity", "value"),
            [
                ("q minimizing H(P, Q)", float(grid[best])),
                ("min H(P, Q)", float(cross[best])),
                ("H(P)", h),
                ("smallest KL at q != 0.9", float(kl[away].min())),
            ],
        ),
    ]
    figures = [
        save_figure(context, "surprise.png", _surprise_figure()),
        save_figure(context, "coin.png", _coin_figure(grid, cross, kl, h)),
    ]
    return Result(numbers=numbers, tables=tables, figures=figures)


def _surprise_figure():
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(6, 4))
    p = np.linspace(0.001, 1.0, 1000)
    axes.plot(p, -np.log(p), label="-ln p (nats)")
    axes.plot(p, -np.log2(p), label="-log2 p (bits)", linestyle="--")
    for value in (0.001, 0.92):
        label = f"p = {value}: {-math.log(value):.3f} nats"
        axes.annotate(label, (value, -math.log(value)), textcoords="offset points", xytext=(12, 8))
        axes.plot([value], [-math.log(value)], marker="o", color="C0")
    axes.set_xlabel("probability p of the outcome")
    axes.set_ylabel("surprise")
    axes.set_title("Surprise of an outcome")
    axes.legend()
    figure.tight_layout()
    return figure


def _coin_figure(grid: np.ndarray, cross: np.ndarray, kl: np.ndarray, h: float):
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(6, 4))
    axes.plot(grid, cross, label="H(P, Q)")
    axes.plot(grid, kl, label="KL(P || Q)")
    axes.axhline(h, color="0.5", linestyle="--", label=f"H(P) = {h:.4f}")
    axes.axvline(COIN_P[0], color="0.8", linewidth=1)
    axes.set_xlabel("q, the model's probability of heads (truth: 0.9)")
    axes.set_ylabel("nats")
    axes.set_ylim(0, 2.5)
    axes.set_title("Cross-entropy = entropy + KL; KL = 0 only at Q = P")
    axes.legend()
    figure.tight_layout()
    return figure


EXPERIMENT = Experiment(
    name="surprise",
    title="Surprise, entropy, cross-entropy and KL on a biased coin",
    claim="-ln 0.001 = 6.91 and -ln 0.92 = 0.083 nats; H(P,Q) = H(P) + KL, with KL = 0 only at Q = P.",
    run=run,
)
