r"""``crossentropy demo``: train a classifier with cross-entropy on bundled data, then score it.

The run, end to end, in a few seconds:

1. **Background.** The surprise :math:`-\ln p` of an outcome, the biased coin P = (0.9, 0.1)
   modelled by Q = (0.7, 0.3) with :math:`H(P, Q) = H(P) + D_\mathrm{KL}(P \| Q)`, and the
   gradient :math:`p - y` of softmax cross-entropy on one row.
2. **Training.** Softmax regression, logits :math:`z = xW + b` with :math:`W` of shape
   (64, 10), on the bundled digits (:func:`crossentropy.data.load_digits`): a stratified
   75/25 split drawn with ``numpy.random.default_rng(seed)``, pixels standardized with the
   training rows' mean and standard deviation, and full-batch gradient descent on the mean
   cross-entropy with :func:`crossentropy.softmax_cross_entropy_with_grad`, whose gradient
   with respect to the logits is :math:`(p - y)/N`:

   .. math::

       W \leftarrow W - \eta\, X^\top \frac{P - Y}{N}, \qquad
       b \leftarrow b - \eta\, \mathbf{1}^\top \frac{P - Y}{N}.

   The weights start at 0, so the loss before the first step is :math:`\ln 10`.
3. **Scoring.** The held-out probabilities are written to ``predictions.csv`` and scored by
   the code of ``crossentropy score`` (:func:`crossentropy.cli.score.score_source`), so the
   figures are those the user gets by running that command on the file.
4. **Files.** ``predictions.csv``, ``loss_curve.png`` (training and held-out loss per epoch)
   and ``reliability.png`` in ``--out``, each written atomically.

>>> images, labels = load_digits()
>>> split = split_digits(images, labels, seed=0)
>>> split.train_x.shape, split.held_out_x.shape
((1347, 64), (450, 64))
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from .._tools.data import single_thread, standardize, stratified_split
from .._tools.tables import Table, render_plain
from ..data import load_digits
from ..information import decompose
from ..losses import softmax_cross_entropy, softmax_cross_entropy_with_grad
from ..special import softmax
from ._options import non_negative_int, positive_float, positive_int

__all__ = [
    "DEFAULT_EPOCHS",
    "DEFAULT_LEARNING_RATE",
    "DEFAULT_OUT",
    "EXAMPLES",
    "OUTPUT_NAMES",
    "DemoResult",
    "Split",
    "TrainingRun",
    "add_arguments",
    "coin_decomposition",
    "command",
    "gradient_example",
    "gradient_step",
    "prepare_out_dir",
    "split_digits",
    "surprise_rows",
    "train",
    "train_and_score",
]

DEFAULT_OUT = "crossentropy-demo"
DEFAULT_EPOCHS = 200
DEFAULT_LEARNING_RATE = 1.0
DEFAULT_SEED = 0
HELD_OUT_FRACTION = 0.25
N_CLASSES = 10
PREDICTIONS, LOSS_CURVE, RELIABILITY = "predictions.csv", "loss_curve.png", "reliability.png"
OUTPUT_NAMES = (PREDICTIONS, LOSS_CURVE, RELIABILITY)
CLASS_COLUMNS = tuple(str(k) for k in range(N_CLASSES))
COIN_P, COIN_Q = (0.9, 0.1), (0.7, 0.3)
SURPRISE_PROBABILITIES = (0.92, 0.5, 0.1, 0.001)
DATA_SOURCE = (
    "UCI Optical Recognition of Handwritten Digits (Alpaydin and Kaynak 1998), as shipped by scikit-learn; CC BY 4.0"
)

EXAMPLES = f"""\
examples:
  crossentropy demo                        train, score and plot; files in ./{DEFAULT_OUT}/
  crossentropy demo --out /tmp/demo        the files somewhere else
  crossentropy demo --epochs 50 --learning-rate 0.5 --seed 1
                                           a shorter run, a smaller step, another split
  crossentropy demo --json                 every figure as JSON on stdout
  crossentropy score {DEFAULT_OUT}/predictions.csv --target label
                                           afterwards: score the held-out predictions yourself
"""


# ---------------------------------------------------------------------------------------------
# Options


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``crossentropy demo`` to ``parser``."""
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(DEFAULT_OUT),
        metavar="DIR",
        help=f"folder for {', '.join(OUTPUT_NAMES)} (default: ./{DEFAULT_OUT}/)",
    )
    parser.add_argument(
        "--epochs",
        type=positive_int,
        default=DEFAULT_EPOCHS,
        metavar="N",
        help=f"full-batch gradient steps (default {DEFAULT_EPOCHS})",
    )
    parser.add_argument(
        "--learning-rate",
        type=positive_float,
        default=DEFAULT_LEARNING_RATE,
        metavar="ETA",
        help=f"gradient-descent step size on standardized pixels (default {DEFAULT_LEARNING_RATE:g})",
    )
    parser.add_argument(
        "--seed",
        type=non_negative_int,
        default=DEFAULT_SEED,
        metavar="S",
        help=f"seed of the training/held-out split (default {DEFAULT_SEED})",
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON instead of text")
    parser.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=None, help="progress bar (default: on a terminal)"
    )


# ---------------------------------------------------------------------------------------------
# Data and model


@dataclass(frozen=True)
class Split:
    """Standardized training and held-out rows of the digits.

    Attributes
    ----------
    train_x : float64 array of shape (n_train, 64)
    train_y : int64 array of shape (n_train,)
    held_out_x : float64 array of shape (n_held_out, 64)
    held_out_y : int64 array of shape (n_held_out,)
    seed : int
    """

    train_x: np.ndarray
    train_y: np.ndarray
    held_out_x: np.ndarray
    held_out_y: np.ndarray
    seed: int


def split_digits(
    images: np.ndarray, labels: np.ndarray, *, seed: int = DEFAULT_SEED, held_out_fraction: float = HELD_OUT_FRACTION
) -> Split:
    """Stratified, seeded split into training and held-out rows, standardized with training statistics.

    Each class's rows are shuffled by one ``numpy.random.default_rng(seed)`` and the first
    ``round(held_out_fraction * n_class)`` are held out; both parts keep the data set's row order.

    Parameters
    ----------
    images : array of shape (n_samples, n_features)
    labels : int array of shape (n_samples,)
    seed : int
    held_out_fraction : float

    Returns
    -------
    Split
    """
    train, held_out = stratified_split(labels, held_out_fraction, np.random.default_rng(seed))
    pixels = np.asarray(images, dtype=np.float64)
    train_x, held_out_x = standardize(pixels[train], pixels[held_out])
    return Split(train_x=train_x, train_y=labels[train], held_out_x=held_out_x, held_out_y=labels[held_out], seed=seed)


def gradient_step(
    weights: np.ndarray, bias: np.ndarray, x: np.ndarray, y: np.ndarray, learning_rate: float
) -> tuple[float, np.ndarray, np.ndarray]:
    r"""One full-batch gradient-descent step of softmax regression on the mean cross-entropy.

    .. math::

        L = -\frac{1}{N} \sum_n \ln \operatorname{softmax}(x_n W + b)_{y_n}, \qquad
        \frac{\partial L}{\partial W} = X^\top \frac{P - Y}{N}, \qquad
        \frac{\partial L}{\partial b} = \mathbf{1}^\top \frac{P - Y}{N},

    with :math:`(P - Y)/N` the ``dlogits`` of :func:`crossentropy.softmax_cross_entropy_with_grad`.

    Parameters
    ----------
    weights : float array of shape (n_features, n_classes)
    bias : float array of shape (n_classes,)
    x : float array of shape (n_samples, n_features)
    y : int array of shape (n_samples,)
    learning_rate : float

    Returns
    -------
    loss : float
        The loss at the given weights (before the step).
    weights, bias : new arrays
        After the step; the inputs are not modified.

    Examples
    --------
    >>> loss, w, b = gradient_step(np.zeros((1, 2)), np.zeros(2), np.array([[1.0]]), np.array([1]), 1.0)
    >>> round(loss, 4), w.tolist(), b.tolist()
    (0.6931, [[-0.5, 0.5]], [-0.5, 0.5])
    """
    loss, dlogits = softmax_cross_entropy_with_grad(x @ weights + bias, y)
    return float(loss), weights - learning_rate * (x.T @ dlogits), bias - learning_rate * dlogits.sum(axis=0)


@dataclass
class TrainingRun:
    """Losses per epoch and the final model.

    Entry ``e`` of each list is measured after ``e`` gradient steps, so entry 0 is the start
    (weights 0: loss ln 10) and the lists have ``epochs + 1`` entries.
    """

    epochs: int
    learning_rate: float
    train_loss: list[float]
    held_out_loss: list[float]
    held_out_accuracy: list[float]
    weights: np.ndarray
    bias: np.ndarray
    seconds: float

    def held_out_probabilities(self, split: Split) -> np.ndarray:
        """Softmax of the final model's held-out logits, shape (n_held_out, n_classes)."""
        return np.asarray(softmax(split.held_out_x @ self.weights + self.bias))


def train(
    split: Split, *, epochs: int = DEFAULT_EPOCHS, learning_rate: float = DEFAULT_LEARNING_RATE, progress: Any = None
) -> TrainingRun:
    """Softmax regression from zero weights by ``epochs`` full-batch steps of :func:`gradient_step`.

    Parameters
    ----------
    split : Split
    epochs : int
    learning_rate : float
    progress : object with ``update(done, total)``, optional
        Told after each epoch.

    Returns
    -------
    TrainingRun

    Raises
    ------
    ValueError
        If the loss or the weights stop being finite (a far too large ``learning_rate``).
    """
    n_features = split.train_x.shape[1]
    weights, bias = np.zeros((n_features, N_CLASSES)), np.zeros(N_CLASSES)
    train_loss: list[float] = []
    held_out_loss: list[float] = []
    held_out_accuracy: list[float] = []

    def evaluate_held_out() -> None:
        logits = split.held_out_x @ weights + bias
        held_out_loss.append(float(softmax_cross_entropy(logits, split.held_out_y)))
        held_out_accuracy.append(float(np.mean(np.argmax(logits, axis=1) == split.held_out_y)))

    start = time.perf_counter()
    # Overflow only happens on divergence, which is reported below as an error rather than as warnings.
    with single_thread(), np.errstate(over="ignore", invalid="ignore"):
        for epoch in range(epochs):
            evaluate_held_out()
            loss, weights, bias = gradient_step(weights, bias, split.train_x, split.train_y, learning_rate)
            if not (math.isfinite(loss) and np.isfinite(weights).all()):
                raise ValueError(
                    f"`learning_rate` is too large: gradient descent diverged at epoch {epoch + 1}; "
                    f"got {learning_rate:g}"
                )
            train_loss.append(loss)
            if progress is not None:
                progress.update(epoch + 1, epochs)
        evaluate_held_out()
        train_loss.append(float(softmax_cross_entropy(split.train_x @ weights + bias, split.train_y)))
    return TrainingRun(
        epochs=epochs,
        learning_rate=learning_rate,
        train_loss=train_loss,
        held_out_loss=held_out_loss,
        held_out_accuracy=held_out_accuracy,
        weights=weights,
        bias=bias,
        seconds=time.perf_counter() - start,
    )


# ---------------------------------------------------------------------------------------------
# Background numbers


def surprise_rows() -> list[dict[str, float]]:
    """``-ln p`` of an outcome given probability ``p``: the cross-entropy against a one-hot truth."""
    rows = []
    for p in SURPRISE_PROBABILITIES:
        nats = float(softmax_cross_entropy(np.log(np.array([[p, 1.0 - p]])), np.array([0])))
        rows.append({"p": p, "nats": nats, "bits": nats / math.log(2)})
    return rows


def coin_decomposition() -> dict[str, Any]:
    """H(P), H(P,Q) and KL(P||Q) of the coin P = (0.9, 0.1) modelled by Q = (0.7, 0.3), in nats and bits."""
    p, q = np.array(COIN_P), np.array(COIN_Q)
    nats, bits = decompose(p, q), decompose(p, q, base=2)
    return {
        "p": list(COIN_P),
        "q": list(COIN_Q),
        "entropy_nats": float(nats.entropy),
        "cross_entropy_nats": float(nats.cross_entropy),
        "kl_divergence_nats": float(nats.kl_divergence),
        "entropy_bits": float(bits.entropy),
        "cross_entropy_bits": float(bits.cross_entropy),
        "kl_divergence_bits": float(bits.kl_divergence),
        "identity_residual_nats": float(nats.entropy + nats.kl_divergence - nats.cross_entropy),
    }


def gradient_example() -> dict[str, Any]:
    """Softmax cross-entropy and its gradient ``p - y`` for logits (2, 1, 0.1) and true class 0."""
    logits = np.array([[2.0, 1.0, 0.1]])
    loss, dlogits = softmax_cross_entropy_with_grad(logits, np.array([0]))
    return {
        "logits": logits[0].tolist(),
        "true_class": 0,
        "softmax": [float(v) for v in softmax(logits)[0]],
        "gradient": [float(v) for v in dlogits[0]],
        "loss": float(loss),
    }


# ---------------------------------------------------------------------------------------------
# The run


@dataclass
class DemoResult:
    """Everything the demo computed; :meth:`as_dict` is the ``--json`` output."""

    split: Split
    run: TrainingRun
    report: Any  # crossentropy.cli._scoring.ScoreReport
    outputs: dict[str, Path]
    surprise: list[dict[str, float]] = field(default_factory=surprise_rows)
    coin: dict[str, Any] = field(default_factory=coin_decomposition)
    gradient: dict[str, Any] = field(default_factory=gradient_example)

    def as_dict(self) -> dict[str, Any]:
        split, run = self.split, self.run
        return {
            "data": {
                "name": "digits",
                "source": DATA_SOURCE,
                "samples": int(split.train_y.size + split.held_out_y.size),
                "features": int(split.train_x.shape[1]),
                "classes": N_CLASSES,
                "train_rows": int(split.train_y.size),
                "held_out_rows": int(split.held_out_y.size),
                "seed": split.seed,
            },
            "training": {
                "model": "softmax regression",
                "optimizer": "full-batch gradient descent",
                "epochs": run.epochs,
                "learning_rate": run.learning_rate,
                "train_loss": run.train_loss,
                "held_out_loss": run.held_out_loss,
                "held_out_accuracy": run.held_out_accuracy,
                "final_train_loss": run.train_loss[-1],
                "final_held_out_loss": run.held_out_loss[-1],
                "final_held_out_accuracy": run.held_out_accuracy[-1],
            },
            "held_out_score": self.report.as_dict(),
            "coin": self.coin,
            "surprise": self.surprise,
            "gradient": self.gradient,
            "outputs": {name: str(path) for name, path in self.outputs.items()},
        }

    def as_text(self) -> str:
        split, run, report = self.split, self.run, self.report
        n_samples = split.train_y.size + split.held_out_y.size
        lines = [
            "Surprise of the true outcome, -ln p: the cross-entropy against a certain truth",
            *(f"  p = {row['p']:<6g} {row['nats']:.4f} nats  {row['bits']:.4f} bits" for row in self.surprise),
            "",
            _coin_text(self.coin),
            "",
            _gradient_text(self.gradient),
            "",
            f"Training: softmax regression on the bundled digits ({n_samples:,} images of 8x8 pixels, "
            f"{N_CLASSES} classes)",
            f"  split       {split.train_y.size:,} training / {split.held_out_y.size:,} held-out images, "
            f"stratified, seed {split.seed}; pixels standardized with training statistics",
            f"  model       logits = x W + b, W of shape {run.weights.shape}, starting at 0 (loss ln 10 = "
            f"{math.log(N_CLASSES):.4f})",
            f"  update      W <- W - eta X^T (p - y) / N, eta = {run.learning_rate:g}, {run.epochs} full-batch "
            f"epochs in {run.seconds:.2f} s",
            "",
            _epoch_table(run),
            "",
            "Held-out predictions, scored by the code of `crossentropy score`",
            report.as_text(),
            f"  (the training loop's held-out loss, from the logits: {run.held_out_loss[-1]:.6f} nats)",
            "",
            f"Score the file yourself:  crossentropy score {self.outputs['predictions']} --target label",
            "",
            f"Files in {self.outputs['directory']}:",
            f"  {PREDICTIONS:<16} held-out probabilities of each class, with the true label",
            f"  {LOSS_CURVE:<16} training and held-out loss per epoch",
            f"  {RELIABILITY:<16} reliability diagram of the held-out predictions",
            str(self.outputs["directory"]),
        ]
        return "\n".join(lines)


def _coin_text(coin: dict[str, Any]) -> str:
    rows = [
        ("H(P)    entropy", coin["entropy_nats"], coin["entropy_bits"]),
        ("H(P,Q)  cross-entropy", coin["cross_entropy_nats"], coin["cross_entropy_bits"]),
        ("KL(P||Q)", coin["kl_divergence_nats"], coin["kl_divergence_bits"]),
    ]
    lines = ["Coin P = (0.9, 0.1) modelled by Q = (0.7, 0.3): H(P,Q) = H(P) + KL(P||Q)"]
    lines += [f"  {label:<22} {nats:.4f} nats  {bits:.4f} bits" for label, nats, bits in rows]
    lines.append(f"  {'H(P) + KL - H(P,Q)':<22} {coin['identity_residual_nats']:.1e}")
    return "\n".join(lines)


def _gradient_text(gradient: dict[str, Any]) -> str:
    def vector(values: Sequence[float]) -> str:
        return "(" + ", ".join(f"{v:.4f}" for v in values) + ")"

    return "\n".join(
        [
            "Gradient of softmax cross-entropy: p - y (logits (2, 1, 0.1), true class 0)",
            f"  softmax p              {vector(gradient['softmax'])}",
            f"  dL/dlogits = p - y     {vector(gradient['gradient'])}",
            f"  loss -ln p_0           {gradient['loss']:.4f} nats",
        ]
    )


def _shown_epochs(epochs: int) -> list[int]:
    """0, 1, 2, 5, 10, 20, 50, ... up to ``epochs``, and ``epochs`` itself."""
    shown, scale = [0], 1
    while scale < epochs:
        shown += [e for e in (scale, 2 * scale, 5 * scale) if e < epochs]
        scale *= 10
    return [*shown, epochs]


def _epoch_table(run: TrainingRun) -> str:
    header = ["epoch", "train loss", "held-out loss", "held-out accuracy"]
    rows = [
        [f"{e}", f"{run.train_loss[e]:.6f}", f"{run.held_out_loss[e]:.6f}", f"{run.held_out_accuracy[e]:.4f}"]
        for e in _shown_epochs(run.epochs)
    ]
    table = Table("", header, rows, numeric=[True] * len(header))
    return render_plain(table, title=False, rule=False, indent="  ")


def _write_predictions(path: Path, labels: np.ndarray, probabilities: np.ndarray) -> Path:
    """``label,0,...,9`` rows; probabilities with 17 significant digits, so they read back exactly."""
    from .._tools.files import write_atomic

    def write(file: IO[str]) -> None:
        file.write(",".join(("label", *CLASS_COLUMNS)) + "\n")
        for label, row in zip(labels.tolist(), probabilities.tolist(), strict=True):
            file.write(f"{label}," + ",".join(repr(p) for p in row) + "\n")

    return write_atomic(path, write)


def _loss_curve_figure(run: TrainingRun) -> Any:
    from .._tools.files import pyplot

    plt = pyplot()
    figure, axes = plt.subplots(figsize=(6.4, 4.2))
    epochs = np.arange(run.epochs + 1)
    axes.plot(epochs, run.train_loss, label="training")
    axes.plot(epochs, run.held_out_loss, label="held-out")
    axes.axhline(math.log(N_CLASSES), color="0.6", linestyle="--", linewidth=1, label="uniform guess, ln 10")
    axes.set_xlabel("epoch (full-batch gradient steps)")
    axes.set_ylabel("mean cross-entropy (nats)")
    axes.set_xlim(0, run.epochs)
    axes.set_ylim(0, math.log(N_CLASSES) * 1.05)
    axes.set_title(
        f"Softmax regression on the digits, eta = {run.learning_rate:g}\n"
        f"held-out: loss {run.held_out_loss[-1]:.4f}, accuracy {run.held_out_accuracy[-1]:.4f}"
    )
    axes.legend(loc="center right")
    figure.tight_layout()
    return figure


def prepare_out_dir(out: Path) -> Path:
    """Create ``out`` if needed; raise ``ValueError`` if it is a file or an output name is taken by a non-file.

    Only the demo's own outputs (:data:`OUTPUT_NAMES`) are ever written, replacing earlier runs'.
    """
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out}: `--out` must be a directory; this is a file (it is left alone)")
    for name in OUTPUT_NAMES:
        path = out / name
        if path.exists() and not path.is_file():
            raise ValueError(f"{path}: is in the way of the demo's output {name!r}; it is not a file (left alone)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(f"{out}: `--out` cannot be created: {error.strerror}") from None
    return out


def train_and_score(
    out: Path,
    *,
    epochs: int = DEFAULT_EPOCHS,
    learning_rate: float = DEFAULT_LEARNING_RATE,
    seed: int = DEFAULT_SEED,
    progress: bool | None = None,
) -> DemoResult:
    """Train on the bundled digits, write and score the held-out predictions, and draw the figures.

    Parameters
    ----------
    out : Path
        An existing directory (see :func:`prepare_out_dir`); receives :data:`OUTPUT_NAMES`.
    epochs, learning_rate, seed :
        As :func:`train` and :func:`split_digits`.
    progress : bool, optional
        Progress bar while training (default: on a terminal).

    Returns
    -------
    DemoResult
    """
    from .._tools.files import write_figure
    from .._tools.progress import progress_bar
    from ._report import reliability_figure
    from ._sources import open_source
    from .score import Selection, score_source

    images, labels = load_digits()
    split = split_digits(images, labels, seed=seed)
    with progress_bar("training", unit="epochs", enabled=progress) as bar:
        run = train(split, epochs=epochs, learning_rate=learning_rate, progress=bar)
    predictions = _write_predictions(out / PREDICTIONS, split.held_out_y, run.held_out_probabilities(split))
    selection = Selection(predictions=CLASS_COLUMNS, classes=CLASS_COLUMNS, target="label")
    report = score_source(open_source(predictions), selection, progress=False)
    loss_curve = write_figure(out / LOSS_CURVE, _loss_curve_figure(run))
    reliability = write_figure(out / RELIABILITY, reliability_figure(report, title="Held-out digits"))
    outputs = {"directory": out, "predictions": predictions, "loss_curve": loss_curve, "reliability": reliability}
    return DemoResult(split=split, run=run, report=report, outputs=outputs)


def _missing_dependency() -> str | None:
    for module, why in (("matplotlib", "for its figures"), ("pyarrow", "to read the predictions back")):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed; `crossentropy demo` needs it {why}: pip install {module}"
    return None


def command(args: argparse.Namespace) -> int:
    """Run ``crossentropy demo`` with parsed options; returns the exit code.

    An unusable ``--out`` or a missing optional dependency stops the command before any work,
    with one line on stderr and exit code 2.
    """
    try:
        missing = _missing_dependency()
        if missing is not None:
            raise ValueError(missing)
        out = prepare_out_dir(args.out)
    except ValueError as error:
        print(f"crossentropy demo: error: {error}", file=sys.stderr)
        return 2
    try:
        result = train_and_score(
            out, epochs=args.epochs, learning_rate=args.learning_rate, seed=args.seed, progress=args.progress
        )
    except (ValueError, OSError) as error:  # InputError is a ValueError
        print(f"crossentropy demo: error: {error}", file=sys.stderr)
        return 2
    for warning in result.report.warnings:
        print(f"crossentropy demo: warning: {warning}", file=sys.stderr)
    if args.json:
        print(json.dumps(result.as_dict(), indent=2))
    else:
        print(result.as_text())
    return 0
