r"""``fairness``: a demographic-parity penalty trades a little accuracy for a much smaller gap between groups.

**Data** (generated from ``context.rng()``). Loan applications with a protected group
:math:`g \in \{0, 1\}` (each with probability 1/2) and three features: an income-like one
shifted by :data:`INCOME_SHIFT` standard deviations in group 1, a credit history and a debt
load, both independent of the group. Repayment (the label) follows a logistic model of the
features alone,

.. math::

    P(y = 1 \mid x) = \sigma(1.5\, x_\text{income} + 1.5\, x_\text{history} - x_\text{debt} - 0.75),

so group 1 repays more often only through its income. Features are standardized with the
training rows' statistics.

**Models.** Logistic regression in PyTorch, :math:`p = \sigma(w^\top x + b)`, from
``torch.manual_seed(context.seed)``, trained by full-batch Adam on

.. math::

    L = \frac{1}{N} \sum_n \operatorname{BCE}(p_n, y_n) + \lambda\, \bigl|\bar p_{g=1} - \bar p_{g=0}\bigr|,

:func:`crossentropy.torch.functional.binary_cross_entropy_with_logits` plus :math:`\lambda` times
:func:`crossentropy.demographic_parity_gap` of the predicted approval probabilities, for each
:math:`\lambda` of :data:`FULL_LAMBDAS` (quick: :data:`QUICK_LAMBDAS`); once with the group as a
fourth input (:data:`MODELS`) and once without it.

**Metrics** on held-out applications: accuracy of approving at :math:`p > 0.5`; the gap in mean
approval probability between the groups (the penalized quantity); the gap in approval rates at
0.5. For each model the chosen :math:`\lambda` is the smallest that cuts the probability gap to
half of its unpenalized value or less.

**What it shows** (full run, seed 0). Unpenalized, both models carry the income gap into their
approvals (a probability gap of 0.207, the labels' own base-rate gap). With the group as input,
the penalty gives the group a negative weight (a lower offset for group 1, in effect a threshold
per group) and leaves the features almost as they were: :math:`\lambda = 0.2` halves the gap
(0.207 to 0.096) for 0.4 points of accuracy, and :math:`\lambda \ge 0.4` closes it for 2 points.
Without the group the model can only shrink the gap by leaning less on income: halving it costs
3.6 points (:math:`\lambda = 0.9`) and closing it about 10, the price of ignoring income.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..penalties import demographic_parity_gap
from ..torch.functional import binary_cross_entropy_with_logits
from ._common import Context, Experiment, Result, Table, pyplot, save_figure, single_thread, standardize

__all__ = ["EXPERIMENT", "FULL_LAMBDAS", "QUICK_LAMBDAS", "group_gaps", "sample_applications", "train"]

INCOME_SHIFT = 1.0
COEFFICIENTS = np.array([1.5, 1.5, -1.0])  # income, credit history, debt
INTERCEPT = -0.75
FEATURE_NAMES = ("income", "history", "debt")
FULL_TRAIN, QUICK_TRAIN = 20_000, 4_000
N_TEST = 10_000
STEPS = 300
LEARNING_RATE = 0.05
FULL_LAMBDAS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.6, 0.8, 0.9, 1.0, 1.5, 2.0, 5.0)
QUICK_LAMBDAS = (0.0, 0.2, 0.4, 1.0, 2.0)
# Model name -> whether the group is one of its inputs.
MODELS = {"with the group as input": True, "without the group": False}


def sample_applications(rng: np.random.Generator, n_rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features (n_rows, 3), groups (n_rows,) and repayment labels (n_rows,) of the loan model above."""
    groups = rng.integers(0, 2, size=n_rows)
    features = rng.standard_normal((n_rows, 3))
    features[:, 0] += INCOME_SHIFT * groups
    repay_probability = 1.0 / (1.0 + np.exp(-(features @ COEFFICIENTS + INTERCEPT)))
    labels = (rng.random(n_rows) < repay_probability).astype(np.int64)
    return features, groups, labels


def group_gaps(probabilities: np.ndarray, groups: np.ndarray) -> dict[str, float]:
    r"""Gaps between groups 1 and 0 in mean approval probability and in approval rate at 0.5.

    .. math::

        \Delta_p = \bigl|\bar p_{g=1} - \bar p_{g=0}\bigr|, \qquad
        \Delta_{0.5} = \bigl|\overline{[p > 0.5]}_{g=1} - \overline{[p > 0.5]}_{g=0}\bigr|

    Examples
    --------
    >>> gaps = group_gaps(np.array([0.9, 0.7, 0.2, 0.6]), np.array([1, 1, 0, 0]))
    >>> round(gaps["probability_gap"], 4), gaps["approval_rate_gap"]
    (0.4, 0.5)
    """
    approved = probabilities > 0.5
    return {
        "probability_gap": float(abs(probabilities[groups == 1].mean() - probabilities[groups == 0].mean())),
        "approval_rate_gap": float(abs(approved[groups == 1].mean() - approved[groups == 0].mean())),
    }


def train(x: torch.Tensor, y: torch.Tensor, groups: torch.Tensor, *, penalty: float, seed: int) -> torch.nn.Linear:
    """Logistic regression by full-batch Adam on cross-entropy + ``penalty`` × demographic-parity gap.

    Parameters
    ----------
    x : float32 tensor of shape (n_samples, n_features)
    y : float32 tensor of shape (n_samples,)
        Labels 0 or 1.
    groups : int64 tensor of shape (n_samples,)
    penalty : float
        :math:`\\lambda`, the weight of :func:`crossentropy.demographic_parity_gap`.
    seed : int
        ``torch.manual_seed`` before the weights are drawn.

    Returns
    -------
    torch.nn.Linear
        The model (one logit out).
    """
    torch.manual_seed(seed)
    model = torch.nn.Linear(x.shape[1], 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    with single_thread():
        for _ in range(STEPS):
            optimizer.zero_grad()
            logits = model(x)[:, 0]
            loss = binary_cross_entropy_with_logits(logits, y)
            if penalty:
                loss = loss + penalty * demographic_parity_gap(torch.sigmoid(logits), groups)
            loss.backward()
            optimizer.step()
    return model


def _sweep(
    train_x: np.ndarray,
    train_labels: np.ndarray,
    train_groups: np.ndarray,
    test_x: np.ndarray,
    test_labels: np.ndarray,
    test_groups: np.ndarray,
    *,
    lambdas: tuple[float, ...],
    seed: int,
) -> dict[str, Any]:
    """One model per lambda on the given inputs: its held-out accuracy, gaps and weights, and the chosen lambda."""
    x = torch.tensor(train_x, dtype=torch.float32)
    y = torch.tensor(train_labels, dtype=torch.float32)
    groups = torch.tensor(train_groups)
    names = FEATURE_NAMES + ("group",) * (train_x.shape[1] - len(FEATURE_NAMES))
    runs = []
    for penalty in lambdas:
        model = train(x, y, groups, penalty=penalty, seed=seed)
        with torch.no_grad():
            probabilities = torch.sigmoid(model(torch.tensor(test_x, dtype=torch.float32))[:, 0]).double().numpy()
        runs.append(
            {
                "lambda": penalty,
                "accuracy": float(np.mean((probabilities > 0.5) == test_labels)),
                **group_gaps(probabilities, test_groups),
                "weights": dict(zip(names, model.weight.detach().double().numpy()[0].tolist(), strict=True)),
            }
        )
    baseline = runs[0]
    halved = [r for r in runs[1:] if r["probability_gap"] <= baseline["probability_gap"] / 2]
    chosen = halved[0] if halved else None
    return {
        "runs": runs,
        "chosen_lambda": None if chosen is None else chosen["lambda"],
        "gap_ratio": None if chosen is None else chosen["probability_gap"] / baseline["probability_gap"],
        "accuracy_cost": None if chosen is None else baseline["accuracy"] - chosen["accuracy"],
    }


def run(context: Context) -> Result:
    """Sweep lambda for the model with and without the group as input; held-out tables and trade-off figure."""
    rng = context.rng()
    n_train = QUICK_TRAIN if context.quick else FULL_TRAIN
    train_features, train_groups, train_labels = sample_applications(rng, n_train)
    test_features, test_groups, test_labels = sample_applications(rng, N_TEST)
    lambdas = QUICK_LAMBDAS if context.quick else FULL_LAMBDAS
    models = {}
    for model_name, with_group in MODELS.items():
        if with_group:
            train_inputs = np.column_stack([train_features, train_groups])
            test_inputs = np.column_stack([test_features, test_groups])
        else:
            train_inputs, test_inputs = train_features, test_features
        train_x, test_x = standardize(train_inputs, test_inputs)
        models[model_name] = _sweep(
            train_x, train_labels, train_groups, test_x, test_labels, test_groups, lambdas=lambdas, seed=context.seed
        )
    label_gap = float(abs(test_labels[test_groups == 1].mean() - test_labels[test_groups == 0].mean()))
    numbers = {
        "data": {"train_rows": n_train, "test_rows": N_TEST, "label_rate_gap": label_gap},
        "steps": STEPS,
        "models": models,
    }
    tables = [
        Table(
            f"{model_name}: held-out applications ({N_TEST} rows; repayment rates differ by {label_gap:.3f} between "
            f"the groups), one logistic model per lambda ({STEPS} full-batch Adam steps on {n_train} rows)",
            (
                "penalty",
                "accuracy",
                "gap in mean approval probability",
                "gap in approval rate at 0.5",
                *(f"weight of {name}" for name in sweep["runs"][0]["weights"]),
            ),
            [
                (
                    f"lambda = {r['lambda']:g}{' (chosen)' if r['lambda'] == sweep['chosen_lambda'] else ''}",
                    r["accuracy"],
                    r["probability_gap"],
                    r["approval_rate_gap"],
                    *r["weights"].values(),
                )
                for r in sweep["runs"]
            ],
        )
        for model_name, sweep in models.items()
    ]
    figures = [save_figure(context, "tradeoff.png", _tradeoff_figure(models))]
    return Result(numbers=numbers, tables=tables, figures=figures)


def _tradeoff_figure(models: dict[str, dict[str, Any]]) -> Any:
    """Left: gap against accuracy, one point per lambda and a line per model; right: both gaps against lambda."""
    plt = pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    for color, (model_name, sweep) in zip(("C0", "C1"), models.items(), strict=True):
        runs = sweep["runs"]
        left.plot(
            [r["accuracy"] for r in runs],
            [r["probability_gap"] for r in runs],
            marker="o",
            color=color,
            label=model_name,
        )
        for r in runs:
            left.annotate(
                f"{r['lambda']:g}",
                (r["accuracy"], r["probability_gap"]),
                textcoords="offset points",
                xytext=(4, 3),
                fontsize="small",
                color=color,
            )
        left.axhline(runs[0]["probability_gap"] / 2, color=color, linestyle=":", linewidth=1)
        lambdas = [r["lambda"] for r in runs]
        right.plot(
            lambdas,
            [r["probability_gap"] for r in runs],
            marker="o",
            color=color,
            label=f"{model_name}: mean probability",
        )
        right.plot(
            lambdas,
            [r["approval_rate_gap"] for r in runs],
            marker="s",
            linestyle="--",
            color=color,
            label=f"{model_name}: approval rate at 0.5",
        )
    left.set_xlabel("held-out accuracy")
    left.set_ylabel("gap in mean approval probability")
    left.set_title("Trade-off (labels: lambda; dotted: half the unpenalized gap)")
    left.legend()
    right.set_xscale("symlog", linthresh=0.2)
    right.set_xlabel("lambda (weight of the demographic-parity penalty)")
    right.set_ylabel("gap between groups")
    right.legend(fontsize="small")
    figure.tight_layout()
    return figure


EXPERIMENT = Experiment(
    name="fairness",
    title="Demographic parity as a penalty: the accuracy-gap trade-off",
    claim=(
        "A logistic loan-approval model whose income feature differs between two groups approves them at different "
        "rates; adding lambda times the demographic-parity gap to cross-entropy halves the gap in mean approval "
        "probability for under a point of accuracy when the group is an input (it learns a per-group offset), and "
        "for about 3.6 points when it is not (it has to give up income)."
    ),
    run=run,
)
