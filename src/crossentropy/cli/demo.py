"""``crossentropy demo``: the numbers of cross-entropy, each computed by the library.

A short walk: the surprise ``-ln p`` of an outcome, the biased coin P = (0.9, 0.1) modelled
by Q = (0.7, 0.3) with H(P, Q) = H(P) + KL(P || Q), the softmax cross-entropy gradient
``p - y``, stability at logits of ±1e4, and what goes wrong when probabilities are passed
where logits are expected.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..information import decompose
from ..losses import softmax_cross_entropy, softmax_cross_entropy_with_grad
from ..special import softmax


@dataclass
class DemoReport:
    """Sections of ``(title, rows)``; each row is a ``(label, value)`` pair."""

    sections: list[tuple[str, list[tuple[str, Any]]]] = field(default_factory=list)

    def add(self, title: str, rows: list[tuple[str, Any]]) -> None:
        self.sections.append((title, rows))

    def as_dict(self) -> dict[str, dict[str, Any]]:
        return {title: dict(rows) for title, rows in self.sections}

    def as_text(self) -> str:
        width = max(len(label) for _, rows in self.sections for label, _ in rows)
        lines: list[str] = []
        for title, rows in self.sections:
            lines += ["", title, "-" * len(title)]
            lines += [f"  {label:<{width}}  {_format(value)}" for label, value in rows]
        return "\n".join(lines[1:])


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, list):
        return "[" + ", ".join(_format(v) for v in value) + "]"
    return str(value)


def run_demo() -> DemoReport:
    report = DemoReport()

    # Surprise: the cross-entropy against a one-hot truth is -ln of the probability given to it.
    rows = []
    for p in (0.92, 0.5, 0.1, 0.001):
        logits = np.log(np.array([[p, 1.0 - p]]))
        nats = float(softmax_cross_entropy(logits, np.array([0])))
        rows.append((f"-ln {p}", nats))
    rows.append(("-log2 0.5 (bits)", float(softmax_cross_entropy(np.zeros((1, 2)), np.array([0]))) / math.log(2)))
    report.add("Surprise of the true outcome, -ln p (nats)", rows)

    # The biased coin.
    p, q = np.array([0.9, 0.1]), np.array([0.7, 0.3])
    nats, bits = decompose(p, q), decompose(p, q, base=2)
    report.add(
        "Coin P = (0.9, 0.1) modelled by Q = (0.7, 0.3)",
        [
            ("H(P) entropy, nats", float(nats.entropy)),
            ("H(P,Q) cross-entropy, nats", float(nats.cross_entropy)),
            ("KL(P||Q), nats", float(nats.kl_divergence)),
            ("H(P) + KL - H(P,Q)", float(nats.entropy + nats.kl_divergence - nats.cross_entropy)),
            ("H(P,Q), bits", float(bits.cross_entropy)),
        ],
    )

    # The gradient of softmax cross-entropy is p - y.
    logits = np.array([[2.0, 1.0, 0.1]])
    loss, dlogits = softmax_cross_entropy_with_grad(logits, np.array([0]))
    probs = softmax(logits)
    report.add(
        "Softmax cross-entropy gradient, logits (2, 1, 0.1), true class 0",
        [
            ("softmax p", [float(v) for v in probs[0]]),
            ("one-hot y", [1.0, 0.0, 0.0]),
            ("dL/dlogits = p - y", [float(v) for v in dlogits[0]]),
            ("loss -ln p_0", float(loss)),
        ],
    )

    # Stability: no overflow, no NaN, at extreme logits.
    extreme = np.array([[1e4, -1e4], [-np.inf, 0.0]])
    loss, dlogits = softmax_cross_entropy_with_grad(extreme, np.array([1, 1]), reduction="none")
    report.add(
        "Stable at extreme logits",
        [
            ("loss for logits (1e4, -1e4), class 1", float(loss[0])),
            ("loss for logits (-inf, 0), class 1", float(loss[1])),
            ("gradients finite", bool(np.isfinite(dlogits).all())),
        ],
    )

    # A classic bug: probabilities where logits belong. The softmax flattens them.
    confident = np.array([[0.98, 0.01, 0.01]])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        wrong = float(softmax_cross_entropy(confident, np.array([0])))
    right = float(softmax_cross_entropy(np.log(confident), np.array([0])))
    report.add(
        "Probabilities passed as logits (a warning is raised)",
        [
            ("loss with log-probabilities as logits", right),
            ("loss with probabilities as logits", wrong),
            ("warning raised", bool(caught)),
        ],
    )
    return report
