r"""``gan``: a GAN is two cross-entropies; at equilibrium the discriminator's is :math:`\ln 2` on each side.

**Data** (generated). A mixture of :data:`N_MODES` Gaussians with standard deviation
:data:`MODE_STD` whose centers lie evenly on a circle of radius :data:`RADIUS`; every batch of real
points is drawn from ``context.rng()``.

**Model.** A generator :math:`G` 2 → 64 → 64 → 2 (ReLU) of standard normal noise :math:`z \in
\mathbb{R}^2` and a discriminator :math:`D` 2 → 64 → 64 → 1 (LeakyReLU) returning a logit, in
PyTorch, initialized from ``torch.manual_seed(context.seed)``. Each of :data:`FULL_STEPS` (quick:
:data:`QUICK_STEPS`) steps on batches of :data:`BATCH_SIZE` updates :math:`D` by binary
cross-entropy (real → 1, generated → 0) and then :math:`G` by the non-saturating loss, the
cross-entropy of :math:`D(G(z))` against the label 1,

.. math::

    L_D = \operatorname{BCE}(D(x), 1) + \operatorname{BCE}(D(G(z)), 0), \qquad
    L_G = \operatorname{BCE}(D(G(z)), 1) = -\ln \sigma(D(G(z))),

both with :func:`crossentropy.torch.functional.binary_cross_entropy_with_logits` and Adam
(learning rate :data:`LEARNING_RATE`, betas (0.5, 0.999)). If the generator matches the data,
the best discriminator outputs :math:`\sigma = 1/2` everywhere and its cross-entropy is
:math:`\ln 2 \approx 0.693` on real and on generated points alike.

**Metrics.** At :data:`N_CHECKPOINTS` checkpoints, on a fixed set of :data:`N_EVALUATION` real
points and of noise: the discriminator's cross-entropy on real and on generated points; each
generated point's nearest mode; a mode is *covered* if at least :data:`COVERAGE_SHARE` of the
generated points lie within :data:`QUALITY_STDS` standard deviations of its center, and the
*high-quality* fraction is the share of generated points within that distance of any center.

**What it shows** (full run, seed 0, 5,000 steps). The generator covers 6 of the 8 modes from
step 1,000 on and never finds the other two (at 45° and 225°, which get 0.15% and 0.03% of its
points); 91% of its points end within 3 standard deviations of a center. Over seeds 0 to 3 the
full run covers 6, 7, 8 and 8 modes (high-quality fraction 0.89 to 0.93); a quick run (1,500
steps) covers the same numbers of modes, less tightly (0.57 to 0.77). The discriminator never
wins: its cross-entropies stay between 0.52 and 0.66 nats after the first checkpoints (0.63 on
real and 0.58 on generated points at the end), near :math:`\ln 2 = 0.693` but below it, since
the real points of the missed modes are easy to tell; with all 8 modes covered (seeds 2 and 3)
they end at 0.65 to 0.70. An untrained discriminator also sits near :math:`\ln 2` (its logits
start near 0), so the point is not that the cross-entropies reach :math:`\ln 2` but that the
discriminator cannot push them far below it while the generator keeps up.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..torch.functional import binary_cross_entropy_with_logits
from ._common import Context, Experiment, Result, Table, pyplot, save_figure, single_thread

__all__ = ["EXPERIMENT", "mode_coverage", "ring_centers", "sample_ring"]

N_MODES = 8
RADIUS = 2.0
MODE_STD = 0.05
NOISE_DIM = 2
HIDDEN_UNITS = 64
LEARNING_RATE = 1e-3
BETAS = (0.5, 0.999)
BATCH_SIZE = 256
FULL_STEPS, QUICK_STEPS = 5000, 1500
N_CHECKPOINTS = 10
N_EVALUATION = 4000
QUALITY_STDS = 3.0
COVERAGE_SHARE = 0.02
SCATTER_CHECKPOINTS = (0, 2, 4, N_CHECKPOINTS)  # which checkpoints the scatter plots show


def ring_centers(n_modes: int = N_MODES, radius: float = RADIUS) -> np.ndarray:
    """The ``n_modes`` centers, evenly spaced on a circle of ``radius``, shape (n_modes, 2)."""
    angles = 2 * np.pi * np.arange(n_modes) / n_modes
    return radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)


def sample_ring(n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` points of the mixture: a uniformly chosen center plus Gaussian noise of :data:`MODE_STD`."""
    centers = ring_centers()
    return centers[rng.integers(0, N_MODES, size=n)] + MODE_STD * rng.standard_normal((n, 2))


def mode_coverage(points: np.ndarray) -> dict[str, Any]:
    r"""Which modes the points cover, and how many of them are close to some mode.

    A point belongs to its nearest center if it lies within :data:`QUALITY_STDS` :math:`\times`
    :data:`MODE_STD` of it (a high-quality point); a mode is covered if at least
    :data:`COVERAGE_SHARE` of all the points belong to it.

    Parameters
    ----------
    points : array of shape (n_points, 2)

    Returns
    -------
    dict
        ``modes_covered`` (int), ``high_quality_fraction`` (float) and ``mode_shares`` (the share of
        the points belonging to each mode, a list of :data:`N_MODES` floats).

    Examples
    --------
    >>> mode_coverage(ring_centers()[[0, 0, 1, 1]])["modes_covered"]
    2
    """
    distances = np.linalg.norm(points[:, None, :] - ring_centers()[None, :, :], axis=2)
    nearest = np.argmin(distances, axis=1)
    close = distances[np.arange(points.shape[0]), nearest] <= QUALITY_STDS * MODE_STD
    shares = np.bincount(nearest[close], minlength=N_MODES) / points.shape[0]
    return {
        "modes_covered": int(np.sum(shares >= COVERAGE_SHARE)),
        "high_quality_fraction": float(np.mean(close)),
        "mode_shares": [float(share) for share in shares],
    }


def _mlp(n_in: int, n_out: int, activation: type[torch.nn.Module]) -> torch.nn.Sequential:
    return torch.nn.Sequential(
        torch.nn.Linear(n_in, HIDDEN_UNITS),
        activation(),
        torch.nn.Linear(HIDDEN_UNITS, HIDDEN_UNITS),
        activation(),
        torch.nn.Linear(HIDDEN_UNITS, n_out),
    )


def _discriminator_cross_entropies(
    discriminator: torch.nn.Module, real: torch.Tensor, fake: torch.Tensor
) -> tuple[float, float]:
    """Mean binary cross-entropy of the discriminator on real points (label 1) and generated points (label 0)."""
    with torch.no_grad():
        real_logits, fake_logits = discriminator(real), discriminator(fake)
        on_real = binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
        on_fake = binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
    return float(on_real), float(on_fake)


def run(context: Context) -> Result:
    """Train the GAN on the ring; discriminator cross-entropies, mode coverage, figures and numbers."""
    steps = QUICK_STEPS if context.quick else FULL_STEPS
    rng = context.rng()
    evaluation_real = torch.tensor(sample_ring(N_EVALUATION, context.rng(1)), dtype=torch.float32)
    evaluation_noise = torch.tensor(context.rng(2).standard_normal((N_EVALUATION, NOISE_DIM)), dtype=torch.float32)
    torch.manual_seed(context.seed)
    generator = _mlp(NOISE_DIM, 2, torch.nn.ReLU)
    discriminator = _mlp(2, 1, torch.nn.LeakyReLU)
    generator_optimizer = torch.optim.Adam(generator.parameters(), lr=LEARNING_RATE, betas=BETAS)
    discriminator_optimizer = torch.optim.Adam(discriminator.parameters(), lr=LEARNING_RATE, betas=BETAS)
    ones = torch.ones(BATCH_SIZE, 1)
    zeros = torch.zeros(BATCH_SIZE, 1)
    checkpoints = np.linspace(0, steps, N_CHECKPOINTS + 1).round().astype(int).tolist()
    history: list[dict[str, Any]] = []
    scatters: dict[int, np.ndarray] = {}
    scatter_steps = {checkpoints[index] for index in SCATTER_CHECKPOINTS}

    def record(step: int) -> None:
        with torch.no_grad():
            generated = generator(evaluation_noise)
        on_real, on_fake = _discriminator_cross_entropies(discriminator, evaluation_real, generated)
        coverage = mode_coverage(generated.double().numpy())
        history.append({"step": step, "ce_real": on_real, "ce_generated": on_fake, **coverage})
        if step in scatter_steps:
            scatters[step] = generated.numpy()

    with single_thread():
        for step in range(steps + 1):
            if step in checkpoints:
                record(step)
            if step == steps:
                break
            real = torch.tensor(sample_ring(BATCH_SIZE, rng), dtype=torch.float32)
            noise = torch.tensor(rng.standard_normal((BATCH_SIZE, NOISE_DIM)), dtype=torch.float32)
            fake = generator(noise)
            discriminator_optimizer.zero_grad()
            discriminator_loss = binary_cross_entropy_with_logits(
                discriminator(real), ones
            ) + binary_cross_entropy_with_logits(discriminator(fake.detach()), zeros)
            discriminator_loss.backward()
            discriminator_optimizer.step()
            generator_optimizer.zero_grad()
            binary_cross_entropy_with_logits(discriminator(fake), ones).backward()
            generator_optimizer.step()
    final = history[-1]
    numbers = {
        "n_modes": N_MODES,
        "radius": RADIUS,
        "mode_std": MODE_STD,
        "steps": steps,
        "batch_size": BATCH_SIZE,
        "learning_rate": LEARNING_RATE,
        "coverage_share": COVERAGE_SHARE,
        "quality_stds": QUALITY_STDS,
        "ln2": float(np.log(2.0)),
        "final": final,
        "history": history,
    }
    tables = [
        Table(
            f"Training a 2-64-64-2 generator against a 2-64-64-1 discriminator on {N_MODES} Gaussians on a ring "
            f"(batches of {BATCH_SIZE}; evaluated on {N_EVALUATION} real and {N_EVALUATION} generated points)",
            (
                "step",
                "D cross-entropy on real",
                "D cross-entropy on generated",
                f"modes covered (>= {COVERAGE_SHARE:.0%})",
                f"high-quality (within {QUALITY_STDS:g} sd)",
            ),
            [
                (
                    entry["step"],
                    entry["ce_real"],
                    entry["ce_generated"],
                    entry["modes_covered"],
                    entry["high_quality_fraction"],
                )
                for entry in history
            ],
        ),
        Table(
            f"Share of the generated points at each mode at step {steps} (uniform: {1 / N_MODES:.3f})",
            ("mode", "angle (degrees)", "share"),
            [(mode, 360 * mode / N_MODES, share) for mode, share in enumerate(final["mode_shares"])],
        ),
    ]
    figures = [
        save_figure(context, "samples.png", _scatter_figure(evaluation_real.numpy(), scatters)),
        save_figure(context, "cross_entropy.png", _cross_entropy_figure(history)),
    ]
    return Result(numbers=numbers, tables=tables, figures=figures)


def _scatter_figure(real: np.ndarray, scatters: dict[int, np.ndarray]) -> Any:
    """Real points and generated ones at each scatter checkpoint, one panel each."""
    plt = pyplot()
    figure, panels = plt.subplots(1, len(scatters), figsize=(3.4 * len(scatters), 3.6), sharex=True, sharey=True)
    for axes, (step, generated) in zip(panels, sorted(scatters.items()), strict=True):
        axes.scatter(real[:, 0], real[:, 1], s=2, color="0.6", label="real")
        axes.scatter(generated[:, 0], generated[:, 1], s=2, color="C3", alpha=0.5, label="generated")
        axes.set_title(f"step {step}")
        axes.set_aspect("equal")
        axes.set_xlim(-3, 3)
        axes.set_ylim(-3, 3)
    panels[0].legend(loc="upper left", fontsize="small", markerscale=4)
    figure.tight_layout()
    return figure


def _cross_entropy_figure(history: list[dict[str, Any]]) -> Any:
    """The discriminator's cross-entropy on real and generated points per checkpoint, with ln 2 marked."""
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(7.2, 4.5))
    steps = [entry["step"] for entry in history]
    axes.plot(steps, [entry["ce_real"] for entry in history], marker="o", label="on real points (label 1)")
    axes.plot(steps, [entry["ce_generated"] for entry in history], marker="o", label="on generated points (label 0)")
    axes.axhline(np.log(2.0), color="0.6", linestyle="--", linewidth=1, label="ln 2")
    axes.set_xlabel("training step")
    axes.set_ylabel("discriminator cross-entropy (nats)")
    axes.set_title("GAN on 8 Gaussians: the discriminator's cross-entropies")
    axes.legend()
    figure.tight_layout()
    return figure


EXPERIMENT = Experiment(
    name="gan",
    title="A GAN's two cross-entropies",
    claim=(
        "A small GAN on 8 Gaussians on a ring, its discriminator trained by the library's binary cross-entropy "
        "(real 1, generated 0) and its generator by the non-saturating cross-entropy: the generator covers most "
        "modes (6 of 8 at seed 0, 6 to 8 over seeds 0-3) with most of its points within 3 standard deviations of a "
        "center, and the discriminator's cross-entropy on real and on generated points stays near ln 2 = 0.693 "
        "(0.55 to 0.7 at the end): it never wins."
    ),
    run=run,
)
