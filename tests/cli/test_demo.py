"""``crossentropy demo``: training on the bundled digits, scoring and figures, driven as a user would.

The command runs in a subprocess into a temporary folder; its claims are checked against
hand-computed constants (ln 10, the coin), scikit-learn (the data, the log loss of the file it
wrote) and finite differences (the gradient-descent update).
"""

from __future__ import annotations

import json
import math
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from crossentropy.cli.demo import DEFAULT_EPOCHS, gradient_step, split_digits
from crossentropy.data import load_digits
from tests._support import run_cli

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def run(*args: str | Path) -> subprocess.CompletedProcess:
    return run_cli(*args)


@pytest.fixture(scope="module")
def json_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("demo-json")
    result = run("demo", "--json", "--no-progress", "--out", out)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return json.loads(result.stdout), out


@pytest.fixture(scope="module")
def text_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp_path_factory.mktemp("demo-text")
    result = run("demo", "--no-progress", "--out", out)
    assert result.returncode == 0, result.stderr
    return result, out


def read_predictions(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The ``label,0,...,9`` file the demo wrote: labels and probabilities, read with NumPy."""
    header = path.read_text(encoding="utf-8").splitlines()[0].split(",")
    assert header == ["label", *(str(k) for k in range(10))]
    table = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float64)
    return table[:, 0].astype(np.int64), table[:, 1:]


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, path
    length, kind, width, height = struct.unpack(">I4sII", data[8:24])
    assert (length, kind) == (13, b"IHDR")
    assert width > 100
    assert height > 100
    assert data[-12:] == b"\x00\x00\x00\x00IEND\xaeB`\x82", "the PNG is complete"


# ---------------------------------------------------------------------------------------------
# The bundled data


def test_bundled_digits_equal_scikit_learns_copy():
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    reference = sklearn_datasets.load_digits()
    images, labels = load_digits()
    assert images.dtype == np.uint8
    assert images.shape == (1797, 64)
    assert labels.dtype == np.int64
    assert labels.shape == (1797,)
    np.testing.assert_array_equal(images.astype(np.float64), reference.data)
    np.testing.assert_array_equal(labels, reference.target)


def test_split_is_stratified_seeded_and_standardized_with_training_statistics():
    images, labels = load_digits()
    split = split_digits(images, labels, seed=0)
    again = split_digits(images, labels, seed=0)
    other = split_digits(images, labels, seed=1)
    np.testing.assert_array_equal(split.held_out_x, again.held_out_x)
    assert not np.array_equal(split.held_out_x, other.held_out_x)
    assert split.train_y.size + split.held_out_y.size == 1797
    for label, count in enumerate(np.bincount(labels)):
        assert np.sum(split.held_out_y == label) == round(0.25 * count)
    np.testing.assert_allclose(split.train_x.mean(axis=0), 0.0, atol=1e-12)
    spread = split.train_x.std(axis=0)
    np.testing.assert_allclose(spread[spread > 0], 1.0, rtol=1e-12)
    assert np.all(split.train_x[:, spread == 0] == 0), "pixels that never vary are 0, not NaN"
    # Held-out rows use the training statistics, not their own.
    assert np.abs(split.held_out_x.mean(axis=0)).max() > 1e-3


# ---------------------------------------------------------------------------------------------
# The update


def test_gradient_step_equals_finite_differences_of_the_loss():
    images, labels = load_digits()
    split = split_digits(images, labels, seed=0)
    x, y = split.train_x[:40], split.train_y[:40]
    rng = np.random.default_rng(7)
    weights, bias = 0.1 * rng.standard_normal((64, 10)), 0.1 * rng.standard_normal(10)
    learning_rate = 0.5

    def loss(w: np.ndarray, b: np.ndarray) -> float:
        # Independent of the library: mean of logsumexp(z) - z_y, written out in NumPy.
        z = x @ w + b
        top = z.max(axis=1, keepdims=True)
        lse = top[:, 0] + np.log(np.exp(z - top).sum(axis=1))
        return float(np.mean(lse - z[np.arange(y.size), y]))

    value, new_weights, new_bias = gradient_step(weights, bias, x, y, learning_rate)
    assert value == pytest.approx(loss(weights, bias), rel=1e-12)
    step_w = (weights - new_weights) / learning_rate
    step_b = (bias - new_bias) / learning_rate

    h = 1e-6
    numeric_w = np.zeros_like(weights)
    for i, k in np.ndindex(*weights.shape):
        e = np.zeros_like(weights)
        e[i, k] = h
        numeric_w[i, k] = (loss(weights + e, bias) - loss(weights - e, bias)) / (2 * h)
    numeric_b = np.array([(loss(weights, bias + h * e) - loss(weights, bias - h * e)) / (2 * h) for e in np.eye(10)])
    np.testing.assert_allclose(step_w, numeric_w, rtol=1e-6, atol=1e-6 * np.abs(numeric_w).max())
    np.testing.assert_allclose(step_b, numeric_b, rtol=1e-6, atol=1e-6 * np.abs(numeric_b).max())


# ---------------------------------------------------------------------------------------------
# The command


def test_training_starts_at_ln_10_and_the_loss_decreases(json_run):
    figures, _ = json_run
    training = figures["training"]
    assert training["epochs"] == DEFAULT_EPOCHS
    train_loss, held_out_loss = np.array(training["train_loss"]), np.array(training["held_out_loss"])
    assert train_loss.shape == held_out_loss.shape == (DEFAULT_EPOCHS + 1,)
    # Weights start at 0: every class gets 1/10.
    assert train_loss[0] == pytest.approx(math.log(10), rel=1e-12)
    assert held_out_loss[0] == pytest.approx(math.log(10), rel=1e-12)
    assert train_loss[-1] < train_loss[0]
    assert np.all(np.diff(train_loss) < 0), "gradient descent with this step decreases the training loss every epoch"
    assert held_out_loss[-1] < 0.2
    assert training["final_held_out_accuracy"] >= 0.9


def test_held_out_score_equals_scikit_learn_on_the_written_file(json_run):
    metrics = pytest.importorskip("sklearn.metrics")
    figures, out = json_run
    score = figures["held_out_score"]
    labels, probabilities = read_predictions(out / "predictions.csv")
    assert labels.shape == (figures["data"]["held_out_rows"],) == (score["rows"],)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-12)
    expected = metrics.log_loss(labels, probabilities, labels=list(range(10)))
    assert score["log_loss_nats"] == pytest.approx(expected, abs=1e-9)
    assert score["log_loss_bits"] == pytest.approx(expected / math.log(2), abs=1e-9)
    accuracy = float(np.mean(probabilities.argmax(axis=1) == labels))
    assert score["accuracy"] == pytest.approx(accuracy, abs=1e-12)
    assert score["accuracy"] >= 0.9
    assert score["accuracy"] == pytest.approx(figures["training"]["final_held_out_accuracy"], abs=1e-12)
    # The training loop's held-out loss (from the logits) is the scored one (from the file).
    assert score["log_loss_nats"] == pytest.approx(figures["training"]["final_held_out_loss"], abs=1e-9)
    assert score["warnings"] == []


def test_the_suggested_score_command_gives_the_same_figures(json_run):
    figures, out = json_run
    result = run("score", out / "predictions.csv", "--target", "label", "--json")
    assert result.returncode == 0, result.stderr
    scored = json.loads(result.stdout)
    for name in ("rows", "log_loss_nats", "accuracy", "brier_score", "expected_calibration_error"):
        assert scored[name] == figures["held_out_score"][name]


def test_coin_decomposition_matches_hand_computed_constants(json_run):
    coin = json_run[0]["coin"]
    assert coin["entropy_nats"] == pytest.approx(0.3251, abs=1e-4)
    assert coin["cross_entropy_nats"] == pytest.approx(0.4414, abs=1e-4)
    assert coin["kl_divergence_nats"] == pytest.approx(0.1163, abs=1e-4)
    assert coin["entropy_nats"] + coin["kl_divergence_nats"] == pytest.approx(coin["cross_entropy_nats"], rel=1e-12)
    assert coin["cross_entropy_bits"] == pytest.approx(coin["cross_entropy_nats"] / math.log(2), rel=1e-12)
    surprise = {row["p"]: row["nats"] for row in json_run[0]["surprise"]}
    assert surprise[0.92] == pytest.approx(0.0834, abs=1e-4)
    assert surprise[0.001] == pytest.approx(6.9078, abs=1e-4)
    gradient = json_run[0]["gradient"]
    p = gradient["softmax"]
    assert gradient["gradient"] == pytest.approx([p[0] - 1.0, p[1], p[2]], abs=1e-15)


def test_figures_and_predictions_are_written_to_out(json_run):
    figures, out = json_run
    assert sorted(path.name for path in out.iterdir()) == ["loss_curve.png", "predictions.csv", "reliability.png"]
    assert_png(out / "loss_curve.png")
    assert_png(out / "reliability.png")
    assert figures["outputs"] == {
        "directory": str(out),
        "predictions": str(out / "predictions.csv"),
        "loss_curve": str(out / "loss_curve.png"),
        "reliability": str(out / "reliability.png"),
    }


def test_text_output_tells_the_story_and_ends_with_the_folder(text_run):
    result, out = text_run
    text = result.stdout
    for expected in ("0.0834", "6.9078", "0.3251", "0.4414", "0.1163", "2.302585", "log loss (nats)"):
        assert expected in text
    assert f"crossentropy score {out / 'predictions.csv'} --target label" in text
    assert text.splitlines()[-1] == str(out)
    assert "Traceback" not in result.stderr
    assert_png(out / "loss_curve.png")


def test_out_naming_an_existing_file_exits_2_and_leaves_it_alone(tmp_path):
    target = tmp_path / "notes.txt"
    target.write_bytes(b"keep me\n")
    result = run("demo", "--no-progress", "--out", target)
    assert result.returncode == 2
    assert target.read_bytes() == b"keep me\n"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["notes.txt"]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert str(target) in lines[0]
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("option", "value"),
    [("--epochs", "0"), ("--epochs", "ten"), ("--learning-rate", "nan"), ("--learning-rate", "-1"), ("--seed", "-1")],
)
def test_bad_option_values_exit_2(option, value, tmp_path):
    result = run("demo", "--out", tmp_path / "out", option, value)
    assert result.returncode == 2
    assert f"argument {option}" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_help_has_examples():
    result = run("demo", "--help")
    assert result.returncode == 0
    assert "examples:" in result.stdout
    assert "--out DIR" in result.stdout
