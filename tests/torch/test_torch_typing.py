"""The PyTorch layer's static types as a user's type checker sees them (issue 20 §4; docs/design.md, "Types").

mypy checks a small user script through its API (``mypy.api.run``), reading PyTorch's own
annotations: the overloads on ``return_stats`` give :func:`crossentropy.torch.cross_entropy`,
:func:`~crossentropy.torch.linear_cross_entropy` and the vocabulary-parallel losses a ``Tensor``, a
``(Tensor, LossStats)`` pair with ``return_stats=True``, and the union of both for a plain ``bool``;
an option outside its literal (``reduction="avg"``) is a type error, while it stays a ``ValueError``
at run time. The core's types are checked by ``tests/core/test_typing.py``, in the same way.
"""

from __future__ import annotations

import re

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("mypy.api", reason="mypy is not installed (it is in the `test-core` extra)")

import crossentropy.torch as cet  # noqa: E402
from tests._support import marked_line, mypy_messages, normalized_type  # noqa: E402

USER_SCRIPT = """\
import torch

import crossentropy.torch as cet

x = torch.zeros(4, 3)
y = torch.tensor([0, 2, 1, 1])
h = torch.zeros(4, 5)
w = torch.zeros(3, 5)
flag: bool = bool(y.numel())

reveal_type(cet.cross_entropy(x, y))  # 1
reveal_type(cet.cross_entropy(x, y, return_stats=True))  # 2
reveal_type(cet.cross_entropy(x, y, return_stats=False))  # 3
reveal_type(cet.cross_entropy(x, y, return_stats=flag))  # 4
reveal_type(cet.linear_cross_entropy(h, w, y))  # 5
reveal_type(cet.linear_cross_entropy(h, w, y, return_stats=True))  # 6
reveal_type(cet.vocab_parallel_cross_entropy(x, y, vocab_start=0))  # 7
reveal_type(cet.vocab_parallel_cross_entropy(x, y, vocab_start=0, return_stats=True))  # 8
reveal_type(cet.vocab_parallel_linear_cross_entropy(h, w, y, vocab_start=0, return_stats=True))  # 9
loss, stats = cet.cross_entropy(x, y, return_stats=True)
reveal_type(stats)  # 10
reveal_type(cet.nll_loss(x, y))  # 11
reveal_type(cet.CrossEntropyLoss(label_smoothing=0.1).forward(x, y))  # 12
cet.cross_entropy(x, y).detach().item()
cet.linear_cross_entropy(h, w, y).item()

cet.cross_entropy(x, y, reduction="avg")  # E1
cet.linear_cross_entropy(h, w, y, reduction="avg")  # E2
cet.nll_loss(x, y, reduction="avg")  # E3
cet.binary_cross_entropy_with_logits(x, x, reduction="avg")  # E4
cet.CrossEntropyLoss(reduction="avg")  # E5
cet.distillation_loss(x, x, divergence="kl")  # E6
cet.cross_entropy(x, y, return_stats=True).item()  # E7
cet.cross_entropy(x, y, reduction="sum")  # fine
"""

# What mypy reveals at each `# n` line (as `normalized_type` writes it).
REVEALED = {
    1: "Tensor",
    2: "tuple[Tensor, LossStats]",
    3: "Tensor",
    4: "Tensor | tuple[Tensor, LossStats]",
    5: "Tensor",
    6: "tuple[Tensor, LossStats]",
    7: "Tensor",
    8: "tuple[Tensor, LossStats]",
    9: "tuple[Tensor, LossStats]",
    10: "LossStats",
    11: "Tensor",
    12: "Tensor | tuple[Tensor, LossStats]",
}

# The errors expected at each `# En` line: an option outside its literal names the parameter (or,
# for an overloaded function, finds no overload); a pair has no `item`.
ERRORS = {
    "E1": "reduction",
    "E2": "reduction",
    "E3": "reduction",
    "E4": "reduction",
    "E5": "reduction",
    "E6": "divergence",
    "E7": "item",
}


# mypy's configuration for the user's script: strict, reading PyTorch's annotations (the first run
# analyses PyTorch, some seconds); Numba skipped, as in pyproject.toml.
CONFIG = """\
[mypy]
strict = True
warn_unused_configs = False

[mypy-numba,numba.*]
follow_imports = skip
ignore_missing_imports = True

[mypy-crossentropy.*]
follow_imports = silent
"""


@pytest.fixture(scope="module")
def mypy_report(tmp_path_factory: pytest.TempPathFactory) -> dict[int, list[str]]:
    """mypy's messages on the user script, by line number."""
    return mypy_messages(USER_SCRIPT, CONFIG, tmp_path_factory.mktemp("torch_typing"))


@pytest.mark.parametrize("n", sorted(REVEALED))
def test_revealed_types(mypy_report: dict[int, list[str]], n: int) -> None:
    notes = mypy_report.get(marked_line(USER_SCRIPT, str(n)), [])
    assert len(notes) == 1, notes
    match = re.fullmatch(r'note: Revealed type is "(.*)"', notes[0])
    assert match, notes
    assert normalized_type(match.group(1)) == REVEALED[n], notes


@pytest.mark.parametrize(("marker", "word"), sorted(ERRORS.items()))
def test_misuse_is_a_type_error(mypy_report: dict[int, list[str]], marker: str, word: str) -> None:
    errors = [m for m in mypy_report.get(marked_line(USER_SCRIPT, marker), []) if m.startswith("error:")]
    assert errors, f"mypy accepted line {marker}"
    assert any(f'"{word}"' in m or "No overload variant" in m for m in errors), errors


def test_nothing_else_reported(mypy_report: dict[int, list[str]]) -> None:
    """Everything else type-checks: a loss's own methods among it (``.detach()``, ``.item()``; not
    ``.backward()``, which PyTorch leaves unannotated, a call strict mypy refuses)."""
    expected = {marked_line(USER_SCRIPT, str(n)) for n in REVEALED} | {
        marked_line(USER_SCRIPT, marker) for marker in ERRORS
    }
    unexpected = {line: m for line, m in mypy_report.items() if line not in expected}
    assert not unexpected, unexpected


def test_literal_options_still_checked_at_run_time() -> None:
    """The literals constrain a checker only: any value still reaches the runtime checks."""
    x, y = torch.zeros(2, 3), torch.tensor([0, 1])
    with pytest.raises(ValueError, match="avg"):
        cet.cross_entropy(x, y, reduction="avg")  # type: ignore[call-overload]
