"""The core's static types as a user's type checker sees them (issue 20 §4; docs/design.md, "Types").

mypy checks a small user script through its API (``mypy.api.run``): the overloads on
``return_stats`` give ``softmax_cross_entropy`` an array (``Array``, which is ``Any``: see
``crossentropy._typing``) or a ``(loss, LossStats)`` pair, the ``*_with_grad`` functions
``(loss, dlogits)`` or ``(loss, dlogits, LossStats)``, and an option outside its literal
(``reduction="avg"``) is a type error, while it stays a ``ValueError`` at run time.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import numpy as np
import pytest

import crossentropy as ce

pytest.importorskip("mypy.api", reason="mypy is not installed (it is in the `test-core` extra)")

from tests._support import marked_line, mypy_messages, normalized_type

USER_SCRIPT = """\
import numpy as np

import crossentropy as ce

x = np.zeros((4, 3))
y = np.array([0, 2, 1, 1])
flag: bool = bool(y.size)

reveal_type(ce.softmax_cross_entropy(x, y))  # 1
reveal_type(ce.softmax_cross_entropy(x, y, return_stats=True))  # 2
reveal_type(ce.softmax_cross_entropy(x, y, return_stats=flag))  # 3
reveal_type(ce.softmax_cross_entropy_with_grad(x, y))  # 4
reveal_type(ce.softmax_cross_entropy_with_grad(x, y, return_stats=True))  # 5
reveal_type(ce.sigmoid_cross_entropy_with_grad(x, x))  # 6
loss, stats = ce.softmax_cross_entropy(x, y, return_stats=True)
reveal_type(stats.lse)  # 7
reveal_type(ce.decompose(x[0] / 1, x[1] / 1))  # 8
reveal_type(ce.fit_temperature(x, y))  # 9

ce.softmax_cross_entropy(x, y, reduction="avg")  # E1
ce.nll_loss(x, y, reduction="avg")  # E2
ce.distillation_loss(x, x, divergence="kl")  # E3
ce.expected_calibration_error(x, y, norm="l3")  # E4
ce.class_weights(y, scheme="balance")  # E5
ce.entropy(x, axis="last")  # E6
ce.softmax_cross_entropy(x, y, reduction="sum")  # fine
"""

# What mypy reveals at each `# n` line (as `normalized_type` writes it); `Any` is the `Array` alias.
REVEALED = {
    1: "Any",
    2: "tuple[Any, LossStats]",
    3: "Any | tuple[Any, LossStats]",
    4: "tuple[Any, Any]",
    5: "tuple[Any, Any, LossStats]",
    6: "tuple[Any, Any]",
    7: "Any",
    8: "Decomposition",
    9: "float",
}


# mypy's configuration for the user's script: strict; PyTorch (imported lazily by the core) and
# Numba skipped, as in pyproject.toml, which keeps the run to seconds.
CONFIG = """\
[mypy]
strict = True
warn_unused_configs = False

[mypy-torch,torch.*,numba,numba.*]
follow_imports = skip
ignore_missing_imports = True

[mypy-crossentropy.*]
follow_imports = silent
"""


@pytest.fixture(scope="module")
def mypy_report(tmp_path_factory: pytest.TempPathFactory) -> dict[int, list[str]]:
    """mypy's messages on the user script, by line number."""
    return mypy_messages(USER_SCRIPT, CONFIG, tmp_path_factory.mktemp("typing"))


@pytest.mark.parametrize("n", sorted(REVEALED))
def test_revealed_types(mypy_report: dict[int, list[str]], n: int) -> None:
    notes = mypy_report.get(marked_line(USER_SCRIPT, str(n)), [])
    assert len(notes) == 1, notes
    match = re.fullmatch(r'note: Revealed type is "(.*)"', notes[0])
    assert match, notes
    assert normalized_type(match.group(1)) == REVEALED[n], notes


@pytest.mark.parametrize(
    ("marker", "option"),
    [("E1", "reduction"), ("E2", "reduction"), ("E3", "divergence"), ("E4", "norm"), ("E5", "scheme"), ("E6", "axis")],
)
def test_option_outside_its_literal_is_a_type_error(
    mypy_report: dict[int, list[str]], marker: str, option: str
) -> None:
    errors = [m for m in mypy_report.get(marked_line(USER_SCRIPT, marker), []) if m.startswith("error:")]
    assert errors, f"mypy accepted line {marker}"
    # One overloaded function (softmax_cross_entropy) reports no matching overload, the others the argument.
    assert any(f'"{option}"' in m or "No overload variant" in m for m in errors), errors


def test_nothing_else_reported(mypy_report: dict[int, list[str]]) -> None:
    expected = {marked_line(USER_SCRIPT, str(n)) for n in REVEALED} | {
        marked_line(USER_SCRIPT, f"E{k}") for k in range(1, 7)
    }
    unexpected = {line: m for line, m in mypy_report.items() if line not in expected}
    assert not unexpected, unexpected


def test_literal_options_still_checked_at_run_time() -> None:
    """The literals constrain a checker only: any value still reaches the runtime checks."""
    x, y = np.zeros((2, 3)), np.array([0, 1])
    with pytest.raises(ValueError, match="`reduction` must be one of 'mean', 'sum', 'none'; got 'avg'"):
        ce.softmax_cross_entropy(x, y, reduction="avg")  # type: ignore[call-overload]


def test_core_modules_are_strict_in_pyproject() -> None:
    """`make lint` runs mypy strict on the core; the modules it lists are the core's files."""
    pyproject = (Path(__file__).parents[2] / "pyproject.toml").read_text(encoding="utf-8")
    section = pyproject[pyproject.index("[tool.mypy]") :]
    assert "strict = true" in section
    files = section[section.index("files = [") :]
    listed = set(re.findall(r'"src/crossentropy/(\w+)\.py"', files[: files.index("]\n")]))
    expected = {
        "__init__", "_array", "_inputs", "_scorer", "_typing", "_validation", "distillation", "information", "losses",
        "metrics", "penalties", "robust", "special", "weights",
    }  # fmt: skip
    assert listed == expected, textwrap.shorten(str(listed ^ expected), 200)
