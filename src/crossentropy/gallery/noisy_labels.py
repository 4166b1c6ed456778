r"""``noisy-labels``: knowing the noise's transition matrix, forward correction undoes most of the damage of flips.

**Data** (real images, labels corrupted with a fixed seed). The bundled digits
(:func:`crossentropy.data.load_digits`), :data:`TEST_FRACTION` of each class held out
(``context.rng()``), pixels standardized with the training rows' statistics. Only the training
labels are corrupted (:func:`corrupt_labels`): a sample of class :math:`i` gets the label
:math:`j` with probability :math:`T_{ij}`, the noise's transition matrix, drawn from
``context.rng(1 + k)`` for the :math:`k`-th setting of :data:`NOISES`:

- symmetric 20% and 40% (:func:`symmetric_transition`): the label is replaced, with probability
  :math:`r`, by one of the nine other classes at random, :math:`T = (1 - r) I + \frac{r}{9}(J - I)`;
- asymmetric 40% (:func:`cyclic_transition`): with probability 0.4 the label of class :math:`i`
  becomes :math:`i + 1 \bmod 10`, every class flipping into the next one. The true label stays
  the majority (0.6 against 0.4), so a model of the noisy posterior still predicts the right
  class; what breaks plain cross-entropy is a network that fits every flipped label.

The test labels stay clean: every accuracy below is against the true classes.

**Model.** A network with one hidden layer of :data:`HIDDEN_UNITS` ReLU units, 64 → 128 → 10, in
PyTorch, with the same initial weights for every loss (``torch.manual_seed(context.seed)``),
trained by :data:`FULL_STEPS` (quick: :data:`QUICK_STEPS`) full-batch Adam steps at learning rate
:data:`LEARNING_RATE` (:func:`train`): long enough to fit nearly every training label, noisy or
not, so that what a loss lets the network memorize decides its test accuracy.

**Losses** (:data:`METHODS`), all from :mod:`crossentropy.torch.functional`, with
:math:`p = \operatorname{softmax}(z)` and :math:`\tilde y` the noisy label:

- cross-entropy, :math:`-\ln p_{\tilde y}`;
- forward-corrected, :math:`-\ln (p^\top T)_{\tilde y}` (Patrini et al. 2017), with the true
  :math:`T` and with the estimate :math:`\hat T` below;
- backward-corrected, :math:`\sum_c (T^{-1})_{\tilde y c}\,(-\ln p_c)`, with the true :math:`T`;
- generalized cross-entropy (Zhang and Sabuncu 2018), :math:`(1 - p_{\tilde y}^{\,q})/q`,
  :math:`q` = :data:`GCE_Q`;
- symmetric cross-entropy (Wang et al. 2019),
  :math:`\alpha(-\ln p_{\tilde y}) - \beta A (1 - p_{\tilde y})` with the library's defaults
  :math:`\alpha = 0.1`, :math:`\beta = 1`, :math:`A = -4`.

**Estimating T** (:func:`estimate_transition`, Patrini et al.'s estimator). A network is trained
with plain cross-entropy on the noisy labels; for each class :math:`i` the anchor :math:`\bar x^i`
is the training image at the :data:`ANCHOR_PERCENTILE` th percentile of the predicted
:math:`p(\tilde y = i \mid x)` (a guard against outliers, as in the authors' code), and
:math:`\hat T_{ij} = p(\tilde y = j \mid \bar x^i)`. This needs predictions that estimate the
noisy posterior; a network that has memorized the noisy labels predicts them with certainty and
gives :math:`\hat T \approx I`. So the estimating network holds out :data:`VALIDATION_FRACTION`
of the noisy training rows and keeps its weights at the step of lowest cross-entropy on their
noisy labels (checked every :data:`CHECK_EVERY` steps), the best estimate of the noisy
posterior it reaches; its predictions on all training images give :math:`\hat T`.

**Metrics.** Test accuracy against the clean labels, and the share of the accuracy lost to the
noise that a loss wins back, :math:`(a - a_\text{CE}) / (a_\text{clean} - a_\text{CE})`, with
:math:`a_\text{clean}` the accuracy of cross-entropy on clean labels.

**What it shows** (full run, seed 0). Clean labels give a test accuracy of 0.974. The flipped
labels cost plain cross-entropy 15, 35 and 39 points (symmetric 20%, 40%, asymmetric 40%): the
network learns them. Under the asymmetric noise, forward correction with the true :math:`T` gets
back to 0.926, 88% of the lost accuracy (87% to 93% over seeds 0 to 3); backward correction,
whose loss is unbounded below, recovers 19%, the robust losses 14% and nothing. Under symmetric
noise the generalized cross-entropy is the best (0.935 and 0.892), ahead of forward correction
(0.874 and 0.829). The robust losses slow the memorization down more than they stop it: in the
quick run's 150 steps the symmetric cross-entropy is as good as the generalized one under
symmetric noise; after 500 it is back near plain cross-entropy. Patrini et al.'s estimate finds
the direction of most flips (8 of the 10 rows put their largest off-diagonal entry on
:math:`i + 1`) but underestimates their rate on these 1,000 noisy images: about 0.2 instead of
0.4, with a diagonal of 0.71 for 0.6. The anchor is picked for its high predicted
:math:`p(\tilde y = i \mid x)`, and where those predictions are noisy the top ones are too high.
With that :math:`\hat T` the forward correction recovers 22% of the loss (22% to 44% over seeds
0 to 3): loss correction works as well as :math:`T` is known.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data import load_digits
from ..special import softmax
from ..torch.functional import (
    backward_corrected_cross_entropy,
    cross_entropy,
    forward_corrected_cross_entropy,
    generalized_cross_entropy,
    symmetric_cross_entropy,
)
from ._common import (
    Context,
    Experiment,
    Result,
    Table,
    pyplot,
    save_figure,
    standardize,
    stratified_split,
)
from ._network import Loss, train_network

__all__ = [
    "EXPERIMENT",
    "METHODS",
    "NOISES",
    "Method",
    "Noise",
    "corrupt_labels",
    "cyclic_transition",
    "estimate_transition",
    "symmetric_transition",
    "train",
]

N_CLASSES = 10
TEST_FRACTION = 0.3
HIDDEN_UNITS = 128
LEARNING_RATE = 0.003
FULL_STEPS, QUICK_STEPS = 500, 150
VALIDATION_FRACTION = 0.2
CHECK_EVERY = 5
ANCHOR_PERCENTILE = 97.0
GCE_Q = 0.7


def symmetric_transition(rate: float, num_classes: int = N_CLASSES) -> np.ndarray:
    r"""Symmetric noise: the label is replaced, with probability ``rate``, by another class at random.

    .. math::

        T_{ii} = 1 - r, \qquad T_{ij} = \frac{r}{C - 1} \quad (j \ne i)

    Examples
    --------
    >>> symmetric_transition(0.2, 3)
    array([[0.8, 0.1, 0.1],
           [0.1, 0.8, 0.1],
           [0.1, 0.1, 0.8]])
    """
    transition = np.full((num_classes, num_classes), rate / (num_classes - 1))
    np.fill_diagonal(transition, 1.0 - rate)
    return transition


def cyclic_transition(rate: float, num_classes: int = N_CLASSES) -> np.ndarray:
    r"""Asymmetric noise: class :math:`i` is labeled :math:`i + 1 \bmod C` with probability ``rate``.

    .. math::

        T_{ii} = 1 - r, \qquad T_{i,\,(i + 1) \bmod C} = r

    Examples
    --------
    >>> cyclic_transition(0.4, 3)
    array([[0.6, 0.4, 0. ],
           [0. , 0.6, 0.4],
           [0.4, 0. , 0.6]])
    """
    transition = np.eye(num_classes) * (1.0 - rate)
    transition[np.arange(num_classes), (np.arange(num_classes) + 1) % num_classes] = rate
    return transition


@dataclass(frozen=True)
class Noise:
    """A label-noise setting: its key in the numbers, its label in tables and its transition matrix."""

    key: str
    label: str
    transition: np.ndarray


NOISES = (
    Noise("symmetric_20", "symmetric 20%", symmetric_transition(0.2)),
    Noise("symmetric_40", "symmetric 40%", symmetric_transition(0.4)),
    Noise("asymmetric_40", "asymmetric 40% (c -> c+1)", cyclic_transition(0.4)),
)


@dataclass(frozen=True)
class Method:
    """A training loss: its key in the numbers and its label in tables and figures."""

    key: str
    label: str


METHODS = (
    Method("cross_entropy", "cross-entropy"),
    Method("forward", "forward-corrected, true T"),
    Method("forward_estimated", "forward-corrected, estimated T"),
    Method("backward", "backward-corrected, true T"),
    Method("generalized", f"generalized CE, q = {GCE_Q:g}"),
    Method("symmetric", "symmetric CE"),
)


def corrupt_labels(labels: np.ndarray, transition: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Noisy labels: each ``labels[n] = i`` becomes ``j`` with probability ``transition[i, j]``, drawn by ``rng``.

    Examples
    --------
    >>> labels = np.repeat(np.arange(3), 10_000)
    >>> noisy = corrupt_labels(labels, cyclic_transition(0.4, 3), np.random.default_rng(0))
    >>> [round(float(np.mean(noisy[labels == 0] == j)), 2) for j in range(3)]
    [0.6, 0.4, 0.0]
    """
    cumulative = np.cumsum(transition[labels], axis=1)
    draws = rng.random(labels.size)
    # The label is the number of cumulative probabilities at or below the draw (a zero-probability class is never hit).
    return np.minimum(np.sum(cumulative <= draws[:, None], axis=1), transition.shape[1] - 1)


def estimate_transition(probabilities: np.ndarray, percentile: float = ANCHOR_PERCENTILE) -> np.ndarray:
    r"""Patrini et al.'s estimate of :math:`T` from a model's predicted noisy-label probabilities.

    For each class :math:`i`, the anchor :math:`\bar x^i` is the sample at the ``percentile`` th
    percentile of :math:`p(\tilde y = i \mid x)` (NumPy's ``percentile`` with ``method="higher"``,
    the first such sample on ties), and

    .. math::

        \hat T_{ij} = p(\tilde y = j \mid \bar x^i).

    With ``percentile=100`` the anchor is the arg-max, the estimator of the paper; a lower
    percentile guards against outliers (the authors' code takes the largest value below the
    97th percentile, the next sample down). If the anchors are samples of class :math:`i` alone
    and the probabilities are the true noisy posterior, :math:`p(\tilde y \mid x) = T^\top p(y \mid x)`,
    the estimate is exact.

    Parameters
    ----------
    probabilities : array of shape (n_samples, n_classes)
        Predicted distributions of the noisy label, rows summing to 1.
    percentile : float, default :data:`ANCHOR_PERCENTILE`
        In [0, 100].

    Returns
    -------
    array of shape (n_classes, n_classes)
        Row-stochastic: each row is one sample's predicted distribution.

    References
    ----------
    G. Patrini, A. Rozza, A. K. Menon, R. Nock and L. Qu, "Making Deep Neural Networks Robust
    to Label Noise: a Loss Correction Approach", CVPR 2017.

    Examples
    --------
    >>> p = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.1, 0.9], [0.5, 0.5]])
    >>> estimate_transition(p, percentile=100.0)  # anchors: the arg-max of each column
    array([[0.9, 0.1],
           [0.1, 0.9]])
    >>> estimate_transition(p, percentile=75.0)  # anchors: the second-highest of each column
    array([[0.8, 0.2],
           [0.3, 0.7]])
    """
    rows = []
    for column in probabilities.T:
        threshold = np.percentile(column, percentile, method="higher")
        rows.append(probabilities[np.flatnonzero(column == threshold)[0]])
    return np.stack(rows)


def train(
    x: torch.Tensor,
    y: torch.Tensor,
    loss: Loss,
    *,
    steps: int,
    seed: int,
    validation: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.nn.Module, int]:
    """A 64-128-10 ReLU network trained by full-batch Adam on ``loss(logits, y)``.

    Parameters
    ----------
    x : float32 tensor of shape (n_samples, n_features)
    y : int64 tensor of shape (n_samples,)
        Training labels (noisy or clean).
    loss : callable
        ``loss(logits, y)``, a scalar tensor to minimize.
    steps : int
        Adam steps, each on the whole of ``x``.
    seed : int
        ``torch.manual_seed`` before the weights are drawn.
    validation : (x, y) tensors, optional
        When given, the network returned is the one of the lowest cross-entropy on them, checked
        every :data:`CHECK_EVERY` steps (early stopping).

    Returns
    -------
    network : torch.nn.Module
        Logits out.
    step : int
        The number of steps the returned weights have had (``steps`` without ``validation``).
    """
    return train_network(
        x, y, loss, hidden_units=HIDDEN_UNITS, n_classes=N_CLASSES, learning_rate=LEARNING_RATE, steps=steps,
        seed=seed, validation=validation, check_every=CHECK_EVERY,
    )  # fmt: skip


def _accuracy(network: torch.nn.Module, x: torch.Tensor, labels: np.ndarray) -> float:
    with torch.no_grad():
        predicted = network(x).argmax(dim=1).numpy()
    return float(np.mean(predicted == labels))


def _losses(transition: np.ndarray, estimated: np.ndarray) -> dict[str, Loss]:
    """The loss of each method of :data:`METHODS` under the noise ``transition``."""
    true_t = torch.tensor(transition, dtype=torch.float32)
    estimated_t = torch.tensor(estimated, dtype=torch.float32)
    return {
        "cross_entropy": cross_entropy,
        "forward": lambda z, y: forward_corrected_cross_entropy(z, y, true_t),
        "forward_estimated": lambda z, y: forward_corrected_cross_entropy(z, y, estimated_t),
        "backward": lambda z, y: backward_corrected_cross_entropy(z, y, true_t),
        "generalized": lambda z, y: generalized_cross_entropy(z, y, q=GCE_Q),
        "symmetric": symmetric_cross_entropy,
    }


def _recovered(accuracy: float, noisy: float, clean: float) -> float | None:
    """Share of the accuracy lost to noise (``clean - noisy``) that ``accuracy`` wins back; None if none was lost."""
    return (accuracy - noisy) / (clean - noisy) if clean > noisy else None


def run(context: Context) -> Result:
    """Corrupt the training labels by each setting of :data:`NOISES`, train every method; tables, figures, numbers."""
    images, labels = load_digits()
    train_rows, test_rows = stratified_split(labels, TEST_FRACTION, context.rng())
    train_x, test_x = standardize(images[train_rows].astype(np.float64), images[test_rows].astype(np.float64))
    train_y, test_y = labels[train_rows], labels[test_rows]
    x, x_test = torch.tensor(train_x, dtype=torch.float32), torch.tensor(test_x, dtype=torch.float32)
    steps = QUICK_STEPS if context.quick else FULL_STEPS
    clean_network, _ = train(x, torch.tensor(train_y), cross_entropy, steps=steps, seed=context.seed)
    clean = _accuracy(clean_network, x_test, test_y)
    settings = {}
    for offset, noise in enumerate(NOISES, start=1):
        rng = context.rng(offset)
        noisy = corrupt_labels(train_y, noise.transition, rng)
        fit, held_out = stratified_split(noisy, VALIDATION_FRACTION, rng)
        y = torch.tensor(noisy)
        estimator, stopped = train(
            x[fit], y[fit], cross_entropy, steps=steps, seed=context.seed, validation=(x[held_out], y[held_out])
        )
        with torch.no_grad():
            posterior = softmax(estimator(x).double().numpy())
        estimated = estimate_transition(posterior)
        losses = _losses(noise.transition, estimated)
        accuracy = {
            method.key: _accuracy(train(x, y, losses[method.key], steps=steps, seed=context.seed)[0], x_test, test_y)
            for method in METHODS
        }
        error = np.abs(estimated - noise.transition)
        settings[noise.key] = {
            "label": noise.label,
            "realized_noise_rate": float(np.mean(noisy != train_y)),
            "transition": noise.transition.tolist(),
            "estimated_transition": estimated.tolist(),
            "transition_mean_absolute_error": float(error.mean()),
            "transition_max_absolute_error": float(error.max()),
            "estimated_diagonal_mean": float(np.mean(np.diag(estimated))),
            "estimator_steps": stopped,
            "accuracy": accuracy,
            "recovered": {
                method.key: _recovered(accuracy[method.key], accuracy["cross_entropy"], clean) for method in METHODS[1:]
            },
        }
    numbers = {
        "data": {"train_rows": int(train_y.size), "test_rows": int(test_y.size)},
        "hidden_units": HIDDEN_UNITS,
        "steps": steps,
        "learning_rate": LEARNING_RATE,
        "anchor_percentile": ANCHOR_PERCENTILE,
        "clean_accuracy": clean,
        "noise": settings,
    }
    return Result(numbers=numbers, tables=_tables(settings, clean, steps), figures=_figures(context, settings, clean))


def _tables(settings: dict[str, dict[str, Any]], clean: float, steps: int) -> list[Table]:
    columns = [noise.label for noise in NOISES]
    return [
        Table(
            f"Test accuracy on clean labels (64-{HIDDEN_UNITS}-10 ReLU, {steps} full-batch Adam steps on noisy labels)",
            ("training loss", *columns),
            [
                ("cross-entropy on clean labels", *(clean for _ in NOISES)),
                *(
                    (method.label, *(settings[noise.key]["accuracy"][method.key] for noise in NOISES))
                    for method in METHODS
                ),
            ],
        ),
        Table(
            "Share of the accuracy lost to the noise that each loss wins back: (acc - acc_CE) / (acc_clean - acc_CE)",
            ("training loss", *columns),
            [
                (method.label, *(_or_dash(settings[noise.key]["recovered"][method.key]) for noise in NOISES))
                for method in METHODS[1:]
            ],
        ),
        Table(
            f"The noise and Patrini et al.'s estimate of T (anchors at the {ANCHOR_PERCENTILE:g}th percentile)",
            (
                "noise",
                "training labels flipped",
                "mean T_ii",
                "mean estimated T_ii",
                "mean |error|",
                "max |error|",
                "estimator stopped at step",
            ),
            [
                (
                    noise.label,
                    settings[noise.key]["realized_noise_rate"],
                    float(np.mean(np.diag(noise.transition))),
                    settings[noise.key]["estimated_diagonal_mean"],
                    settings[noise.key]["transition_mean_absolute_error"],
                    settings[noise.key]["transition_max_absolute_error"],
                    settings[noise.key]["estimator_steps"],
                )
                for noise in NOISES
            ],
        ),
    ]


def _or_dash(value: float | None) -> float | str:
    return "-" if value is None else value


def _figures(context: Context, settings: dict[str, dict[str, Any]], clean: float) -> list[Path]:
    return [
        save_figure(context, "accuracy.png", _accuracy_figure(settings, clean)),
        save_figure(context, "transition_matrices.png", _transition_figure(settings)),
    ]


def _accuracy_figure(settings: dict[str, dict[str, Any]], clean: float) -> Any:
    """Grouped bars: test accuracy of each method under each noise setting, clean training as a line."""
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(10, 5.6), layout="constrained")
    width = 0.8 / len(METHODS)
    groups = np.arange(len(NOISES))
    for index, method in enumerate(METHODS):
        heights = [settings[noise.key]["accuracy"][method.key] for noise in NOISES]
        axes.bar(groups + (index - (len(METHODS) - 1) / 2) * width, heights, width, label=method.label)
    axes.axhline(
        clean, color="black", linestyle="--", linewidth=1, label=f"cross-entropy on clean labels ({clean:.3f})"
    )
    axes.set_xticks(groups, [noise.label for noise in NOISES])
    axes.set_ylim(0, 1)
    axes.set_ylabel("test accuracy (clean labels)")
    axes.set_title("Training on noisy labels: test accuracy per loss")
    axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.08), fontsize="small", ncols=3)
    return figure


def _transition_figure(settings: dict[str, dict[str, Any]]) -> Any:
    """Heat maps of the true T (top) and Patrini et al.'s estimate (bottom), one column per noise setting."""
    plt = pyplot()
    figure, panels = plt.subplots(2, len(NOISES), figsize=(4 * len(NOISES) + 1, 9.6), layout="constrained")
    for column, noise in enumerate(NOISES):
        setting = settings[noise.key]
        for row, (matrix, name) in enumerate(
            ((noise.transition, "true T"), (np.array(setting["estimated_transition"]), "estimated T"))
        ):
            axes = panels[row, column]
            image = axes.imshow(matrix, vmin=0, vmax=1, cmap="viridis")
            for (i, j), value in np.ndenumerate(matrix):
                if value >= 0.05:
                    axes.text(
                        j,
                        i,
                        f"{value:.2f}".lstrip("0"),
                        ha="center",
                        va="center",
                        fontsize=6,
                        color="black" if value > 0.5 else "white",
                    )
            title = f"{noise.label}\n{name}"
            if row == 1:
                title += f" (mean |error| {setting['transition_mean_absolute_error']:.3f})"
            axes.set_title(title, fontsize="small")
            axes.set_xticks(range(N_CLASSES))
            axes.set_yticks(range(N_CLASSES))
            axes.set_xlabel("noisy label j")
            axes.set_ylabel("true class i")
    figure.colorbar(image, ax=panels, shrink=0.6, label="T_ij = P(noisy label j | class i)")
    return figure


EXPERIMENT = Experiment(
    name="noisy-labels",
    title="Learning from noisy labels: loss correction and robust losses",
    claim=(
        "A small network on the digits, trained with plain cross-entropy on labels flipped symmetrically (20%, 40%) "
        "or into the next class (40%), fits the noise and loses 15 to 40 points of clean test accuracy. Forward "
        "correction with the true transition matrix T wins back most of the loss under the asymmetric noise; the "
        "generalized cross-entropy is the best under symmetric noise. Patrini et al.'s estimate of T finds most "
        "flips but underestimates their rate on this small data set, and wins back much less."
    ),
    run=run,
)
