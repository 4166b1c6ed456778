r"""``gradient``: the gradient of cross-entropy with respect to the logits is prediction minus truth.

For a linear model with logits :math:`z = \tilde x \Theta` (the features :math:`x` with a 1
appended for the bias), the mean cross-entropy has the gradient

.. math::

    \frac{\partial L}{\partial z_n} = \frac{\hat y_n - y_n}{N}, \qquad
    \nabla_\Theta L = \tilde X^\top \frac{\hat Y - Y}{N},

with :math:`\hat y = \sigma(z)` for the sigmoid (binary) cross-entropy and
:math:`\hat y = \operatorname{softmax}(z)` against the one-hot :math:`y` for the softmax
cross-entropy: the update of plain gradient descent is :math:`\Theta \leftarrow \Theta - \eta\,
\tilde X^\top (\hat Y - Y)/N`, the error times the input. The experiment takes the ``dlogits``
of :func:`crossentropy.sigmoid_cross_entropy_with_grad` and
:func:`crossentropy.softmax_cross_entropy_with_grad`, checks :math:`\tilde X^\top` ``dlogits``
against central finite differences of the loss (:func:`crossentropy.sigmoid_cross_entropy`,
:func:`crossentropy.softmax_cross_entropy`) in float64 at a random point, and trains from zero
weights, where the loss is that of the uniform guess, :math:`\ln K` for :math:`K` classes:

1. logistic regression on the breast-cancer data (:func:`crossentropy.data.load_breast_cancer`,
   :math:`K = 2`, start :math:`\ln 2`);
2. softmax regression on the digits (:func:`crossentropy.data.load_digits`, :math:`K = 10`,
   start :math:`\ln 10`).

Both data sets are split 75/25 per class with ``context.rng()`` and standardized with the
training rows' statistics.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from ..data import load_breast_cancer, load_digits
from ..losses import (
    sigmoid_cross_entropy,
    sigmoid_cross_entropy_with_grad,
    softmax_cross_entropy,
    softmax_cross_entropy_with_grad,
)
from ._common import (
    Context,
    Experiment,
    Result,
    Table,
    pyplot,
    save_figure,
    single_thread,
    standardize,
    stratified_split,
)

__all__ = [
    "EXPERIMENT",
    "LOGISTIC",
    "SOFTMAX",
    "History",
    "LinearModel",
    "Split",
    "breast_cancer_split",
    "digits_split",
    "finite_difference_gradient",
    "relative_error",
    "train",
]

TEST_FRACTION = 0.25
# Central differences in float64: truncation error ~h^2, rounding error ~1e-16 / h.
DIFFERENCE_STEP = 1e-5
# Standard deviation of the random parameters at which the gradient is checked.
CHECK_SCALE = 0.1


@dataclass(frozen=True)
class Split:
    """Training and test rows as design matrices: standardized features and a last column of ones.

    Attributes
    ----------
    name : str
        The data set.
    train_x : float64 array of shape (n_train, n_features + 1)
    train_y : int64 array of shape (n_train,)
    test_x : float64 array of shape (n_test, n_features + 1)
    test_y : int64 array of shape (n_test,)
    """

    name: str
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray


def _split(name: str, features: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> Split:
    train, test = stratified_split(labels, TEST_FRACTION, rng)
    train_x, test_x = standardize(np.asarray(features[train], dtype=np.float64), features[test])

    def with_ones(x: np.ndarray) -> np.ndarray:
        return np.hstack([x, np.ones((x.shape[0], 1))])

    return Split(name, with_ones(train_x), labels[train], with_ones(test_x), labels[test])


def breast_cancer_split(rng: np.random.Generator) -> Split:
    """The breast-cancer data (label 1 = benign), 75/25 per class by ``rng``, standardized."""
    data = load_breast_cancer()
    return _split("breast cancer", data.features, data.labels, rng)


def digits_split(rng: np.random.Generator) -> Split:
    """The digits (64 pixels, labels 0 to 9), 75/25 per class by ``rng``, standardized."""
    images, labels = load_digits()
    return _split("digits", images, labels, rng)


@dataclass(frozen=True)
class LinearModel:
    """A linear classifier, logits ``x @ theta`` of shape (n_samples, n_outputs), and its cross-entropy.

    Attributes
    ----------
    name : str
    n_classes : int
    n_outputs : int
        Columns of the logits: 1 for the sigmoid (binary) model, ``n_classes`` for softmax.
    loss : callable
        ``loss(logits, targets)``: the library's mean cross-entropy.
    loss_with_grad : callable
        ``loss_with_grad(logits, targets) -> (loss, dlogits)``: the library's fused loss and gradient.
    targets : callable
        Integer labels as the library's targets for ``loss``.
    predict : callable
        Logits to predicted integer labels.
    """

    name: str
    n_classes: int
    n_outputs: int
    loss: Callable[[np.ndarray, np.ndarray], Any]
    loss_with_grad: Callable[[np.ndarray, np.ndarray], tuple[Any, np.ndarray]]
    targets: Callable[[np.ndarray], np.ndarray]
    predict: Callable[[np.ndarray], np.ndarray]


LOGISTIC = LinearModel(
    name="logistic regression",
    n_classes=2,
    n_outputs=1,
    loss=sigmoid_cross_entropy,
    loss_with_grad=sigmoid_cross_entropy_with_grad,
    targets=lambda labels: labels[:, None].astype(np.float64),
    predict=lambda logits: (logits[:, 0] > 0).astype(np.int64),
)
SOFTMAX = LinearModel(
    name="softmax regression",
    n_classes=10,
    n_outputs=10,
    loss=softmax_cross_entropy,
    loss_with_grad=softmax_cross_entropy_with_grad,
    targets=lambda labels: labels,
    predict=lambda logits: np.argmax(logits, axis=1),
)


def finite_difference_gradient(
    model: LinearModel, x: np.ndarray, labels: np.ndarray, theta: np.ndarray, step: float = DIFFERENCE_STEP
) -> np.ndarray:
    r"""Central differences of the model's mean loss with respect to each parameter.

    .. math::

        \frac{\partial L}{\partial \Theta_{jk}} \approx
        \frac{L(\Theta + h E_{jk}) - L(\Theta - h E_{jk})}{2h}

    The logits are linear in :math:`\Theta`, so those at :math:`\Theta \pm h E_{jk}` are the
    logits at :math:`\Theta` with :math:`\pm h x_j` added to column :math:`k`: each evaluation
    costs one loss, not a matrix product.

    Parameters
    ----------
    model : LinearModel
    x : float64 array of shape (n_samples, n_features)
    labels : int array of shape (n_samples,)
    theta : float64 array of shape (n_features, model.n_outputs)
    step : float
        :math:`h`.

    Returns
    -------
    float64 array of the shape of ``theta``

    Examples
    --------
    >>> x, labels = np.array([[1.0, 2.0]]), np.array([1])
    >>> finite_difference_gradient(LOGISTIC, x, labels, np.zeros((2, 1))).round(6).tolist()
    [[-0.5], [-1.0]]
    """
    targets = model.targets(labels)
    logits = x @ theta
    gradient = np.empty_like(theta)
    for j, k in np.ndindex(theta.shape):
        plus, minus = logits.copy(), logits.copy()
        plus[:, k] += step * x[:, j]
        minus[:, k] -= step * x[:, j]
        gradient[j, k] = (float(model.loss(plus, targets)) - float(model.loss(minus, targets))) / (2 * step)
    return gradient


def relative_error(analytic: np.ndarray, numeric: np.ndarray) -> float:
    r"""Largest difference relative to the largest gradient component.

    .. math::

        \frac{\max_i |g_i - \hat g_i|}{\max_i |g_i|}

    Normalized by the whole gradient, not component by component, so that components that are
    exactly 0 (pixels constant over the training rows) do not divide by 0.
    """
    return float(np.max(np.abs(analytic - numeric)) / np.max(np.abs(analytic)))


@dataclass
class History:
    """Loss and accuracy on both parts, after 0, 1, ..., ``steps`` gradient steps (``steps + 1`` entries)."""

    learning_rate: float
    steps: int
    train_loss: list[float]
    test_loss: list[float]
    train_accuracy: list[float]
    test_accuracy: list[float]


def train(model: LinearModel, split: Split, *, learning_rate: float, steps: int) -> History:
    r"""Full-batch gradient descent from zero weights on the mean cross-entropy.

    .. math::

        \Theta \leftarrow \Theta - \eta\, \tilde X^\top \frac{\hat Y - Y}{N},

    with :math:`(\hat Y - Y)/N` the ``dlogits`` of ``model.loss_with_grad``.

    Returns
    -------
    History
        Entry 0 is the start, where the loss is :math:`\ln K`.
    """
    theta = np.zeros((split.train_x.shape[1], model.n_outputs))
    train_targets, test_targets = model.targets(split.train_y), model.targets(split.test_y)
    history = History(learning_rate, steps, [], [], [], [])
    with single_thread():
        for step in range(steps + 1):
            train_logits, test_logits = split.train_x @ theta, split.test_x @ theta
            loss, dlogits = model.loss_with_grad(train_logits, train_targets)
            history.train_loss.append(float(loss))
            history.test_loss.append(float(model.loss(test_logits, test_targets)))
            history.train_accuracy.append(float(np.mean(model.predict(train_logits) == split.train_y)))
            history.test_accuracy.append(float(np.mean(model.predict(test_logits) == split.test_y)))
            if step < steps:
                theta = theta - learning_rate * (split.train_x.T @ dlogits)
    return history


@dataclass
class _Check:
    """The analytic gradient at a random point and its finite-difference estimate."""

    analytic: np.ndarray
    numeric: np.ndarray

    @property
    def error(self) -> float:
        return relative_error(self.analytic, self.numeric)


def _check(model: LinearModel, split: Split, rng: np.random.Generator) -> _Check:
    theta = rng.normal(0.0, CHECK_SCALE, size=(split.train_x.shape[1], model.n_outputs))
    with single_thread():
        _, dlogits = model.loss_with_grad(split.train_x @ theta, model.targets(split.train_y))
        analytic = split.train_x.T @ dlogits
        numeric = finite_difference_gradient(model, split.train_x, split.train_y, theta)
    return _Check(analytic, numeric)


class _Case(NamedTuple):
    """One model's configuration: its key in the numbers, data, step size and step counts."""

    key: str
    model: LinearModel
    load: Callable[[np.random.Generator], Split]
    learning_rate: float
    full_steps: int
    quick_steps: int


_CASES = (
    _Case("logistic", LOGISTIC, breast_cancer_split, learning_rate=0.5, full_steps=300, quick_steps=100),
    _Case("softmax", SOFTMAX, digits_split, learning_rate=1.0, full_steps=300, quick_steps=50),
)


class _Outcome(NamedTuple):
    """What one case gave: its split, its gradient check and its training history."""

    case: _Case
    split: Split
    check: _Check
    history: History


def run(context: Context) -> Result:
    """Check the gradient and train each model of :data:`_CASES`; tables, figures and numbers."""
    outcomes = []
    for index, case in enumerate(_CASES):
        # Independent streams: the split of case i from rng(2 i), its random check point from rng(2 i + 1).
        split = case.load(context.rng(2 * index))
        check = _check(case.model, split, context.rng(2 * index + 1))
        steps = case.quick_steps if context.quick else case.full_steps
        outcomes.append(
            _Outcome(case, split, check, train(case.model, split, learning_rate=case.learning_rate, steps=steps))
        )

    numbers = {
        case.key: {
            "data": split.name,
            "train_rows": int(split.train_y.size),
            "test_rows": int(split.test_y.size),
            "parameters": int(check.analytic.size),
            "gradient_check_relative_error": check.error,
            "gradient_max_abs": float(np.max(np.abs(check.analytic))),
            "learning_rate": history.learning_rate,
            "steps": history.steps,
            "initial_loss": history.train_loss[0],
            "ln_classes": math.log(case.model.n_classes),
            "final_train_loss": history.train_loss[-1],
            "final_test_loss": history.test_loss[-1],
            "final_train_accuracy": history.train_accuracy[-1],
            "final_test_accuracy": history.test_accuracy[-1],
        }
        for case, split, check, history in outcomes
    }
    tables = [
        Table(
            f"Analytic gradient X^T (y_hat - y) / N against central differences (h = {DIFFERENCE_STEP:g}), float64",
            ("model", "data", "parameters", "max |gradient|", "max |difference|", "relative error"),
            [
                (
                    case.model.name,
                    split.name,
                    check.analytic.size,
                    float(np.max(np.abs(check.analytic))),
                    float(np.max(np.abs(check.analytic - check.numeric))),
                    check.error,
                )
                for case, split, check, _ in outcomes
            ],
        ),
        Table(
            "Gradient descent from zero weights",
            ("model", "eta", "steps", "start loss", "ln K", "train loss", "test loss", "train acc", "test acc"),
            [
                (
                    case.model.name,
                    history.learning_rate,
                    history.steps,
                    history.train_loss[0],
                    math.log(case.model.n_classes),
                    history.train_loss[-1],
                    history.test_loss[-1],
                    history.train_accuracy[-1],
                    history.test_accuracy[-1],
                )
                for case, _, _, history in outcomes
            ],
        ),
    ]
    figures = [
        save_figure(context, "gradient_check.png", _check_figure(outcomes)),
        save_figure(context, "training.png", _training_figure(outcomes)),
    ]
    return Result(numbers=numbers, tables=tables, figures=figures)


def _check_figure(outcomes: list[_Outcome]) -> Any:
    plt = pyplot()
    figure, axes = plt.subplots(1, len(outcomes), figsize=(10, 4.4))
    for ax, (case, split, check, _) in zip(axes, outcomes, strict=True):
        size = np.abs(check.analytic).ravel()
        difference = np.abs(check.analytic - check.numeric).ravel()
        shown = (size > 0) & (difference > 0)  # constant pixels: both exactly 0
        ax.scatter(size[shown], difference[shown], s=10)
        ax.set_xscale("log")
        ax.set_yscale("log")
        low = min(float(size[shown].min()), float(difference[shown].min()))
        ax.plot([low, 1.0], [low, 1.0], color="0.6", linewidth=1, label="difference = |gradient|")
        ax.set_xlabel("|analytic gradient component|, X^T (y_hat - y) / N")
        ax.set_ylabel("|analytic - central difference|")
        ax.set_title(
            f"{case.model.name}, {split.name}\n{check.analytic.size} parameters, relative error {check.error:.1e}"
        )
        ax.legend(loc="upper left")
    figure.tight_layout()
    return figure


def _training_figure(outcomes: list[_Outcome]) -> Any:
    plt = pyplot()
    figure, axes = plt.subplots(len(outcomes), 2, figsize=(10, 7.5))
    for (loss_ax, accuracy_ax), (case, split, _, history) in zip(axes, outcomes, strict=True):
        model = case.model
        steps = np.arange(history.steps + 1)
        loss_ax.plot(steps, history.train_loss, label="training")
        loss_ax.plot(steps, history.test_loss, label="test")
        ln_k = math.log(model.n_classes)
        loss_ax.axhline(ln_k, color="0.6", linestyle="--", linewidth=1, label=f"ln {model.n_classes} (zero weights)")
        loss_ax.set_ylim(0, 1.05 * ln_k)
        loss_ax.set_ylabel("mean cross-entropy (nats)")
        loss_ax.set_title(f"{model.name}, {split.name}, eta = {history.learning_rate:g}")
        accuracy_ax.plot(steps, history.train_accuracy, label="training")
        accuracy_ax.plot(steps, history.test_accuracy, label="test")
        accuracy_ax.set_ylabel("accuracy")
        accuracy_ax.set_ylim(min(history.test_accuracy[0], history.train_accuracy[0], 0.8) - 0.02, 1.0)
        accuracy_ax.set_title(
            f"test accuracy {history.test_accuracy[-1]:.4f} after {history.steps} steps",
        )
        for ax in (loss_ax, accuracy_ax):
            ax.set_xscale("symlog", linthresh=1)
            ax.set_xlabel("gradient steps (full batch; linear to 1, then logarithmic)")
            ax.set_xlim(0, history.steps)
            ax.legend()
    figure.tight_layout()
    return figure


EXPERIMENT = Experiment(
    name="gradient",
    title="The gradient of cross-entropy is (prediction - truth) x input",
    claim=(
        "X^T (y_hat - y) / N from the library's dlogits equals central differences of the loss "
        "(relative error ~1e-10 in float64); gradient descent with it starts at ln K and trains logistic "
        "regression on breast cancer and softmax regression on the digits to high test accuracy."
    ),
    run=run,
)
