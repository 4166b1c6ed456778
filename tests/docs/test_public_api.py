"""The public surface promised by docs/design.md: every name exported, documented with math and an example."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

import crossentropy as ce

CONTRACT = Path(__file__).parents[2] / "docs" / "design.md"


def _core_api_table() -> list[str]:
    """Every function name in the first column of the contract's "Core API" table."""
    text = CONTRACT.read_text(encoding="utf-8")
    section = text[text.index("## Core API") :]
    section = section[: section.index("\n## ", 1)]
    names = []
    for line in section.splitlines():
        if line.startswith("| `"):
            first_cell = line.split(" | ")[0]
            names += re.findall(r"`(\w+)", first_cell)
    return names


DESIGN_TABLE = _core_api_table()


def test_the_contract_table_was_read():
    assert len(DESIGN_TABLE) >= 30
    assert {"softmax_cross_entropy", "one_hot", "reliability_curve"} <= set(DESIGN_TABLE)


def test_all_is_sorted_and_resolvable():
    assert list(ce.__all__) == sorted(ce.__all__)
    for name in ce.__all__:
        assert hasattr(ce, name), name


@pytest.mark.parametrize("name", DESIGN_TABLE)
def test_design_table_name_is_exported_and_documented(name):
    assert name in ce.__all__
    doc = inspect.getdoc(getattr(ce, name))
    assert doc, f"{name} has no docstring"
    assert ".. math::" in doc, f"{name} docstring lacks a .. math:: definition"
    assert "Examples" in doc, f"{name} docstring lacks an Examples section"
    assert ">>>" in doc, f"{name} docstring lacks a runnable example"


# one_hot(labels, num_classes) mirrors torch.nn.functional.one_hot, whose num_classes may be positional.
@pytest.mark.parametrize("name", [n for n in DESIGN_TABLE if n != "one_hot"])
def test_arrays_positional_only_options_keyword_only(name):
    params = list(inspect.signature(getattr(ce, name)).parameters.values())
    kinds = [p.kind for p in params]
    assert inspect.Parameter.POSITIONAL_OR_KEYWORD not in kinds, f"{name}: {params}"
    assert inspect.Parameter.POSITIONAL_ONLY in kinds, f"{name} takes no positional-only array"


@pytest.mark.parametrize(
    "name",
    [n for n in DESIGN_TABLE if "reduction" in inspect.signature(getattr(ce, n)).parameters],
)
def test_reduction_defaults_to_mean(name):
    assert inspect.signature(getattr(ce, name)).parameters["reduction"].default == "mean"


@pytest.mark.parametrize(
    "name",
    [n for n in DESIGN_TABLE if "ignore_index" in inspect.signature(getattr(ce, n)).parameters],
)
def test_ignore_index_defaults_to_minus_100(name):
    assert inspect.signature(getattr(ce, name)).parameters["ignore_index"].default == -100


def test_torch_layer_exports_are_sorted_documented_and_match_pytorchs_signatures():
    import torch.nn.functional as F

    import crossentropy.torch as cet

    assert list(cet.__all__) == sorted(cet.__all__)
    for name in cet.__all__:
        assert inspect.getdoc(getattr(cet, name)), f"crossentropy.torch.{name} has no docstring"
    # Drop-ins: PyTorch's positional parameters first, same names, order and defaults.
    for name in ("cross_entropy", "binary_cross_entropy_with_logits", "binary_cross_entropy", "nll_loss"):
        ours = inspect.signature(getattr(cet, name)).parameters
        theirs = inspect.signature(getattr(F, name)).parameters
        positional = [p for p in ours.values() if p.kind is not inspect.Parameter.KEYWORD_ONLY]
        assert [(p.name, p.default) for p in positional] == [(p.name, p.default) for p in theirs.values()], name


def test_linear_cross_entropy_takes_pytorchs_signature_then_its_extras():
    import torch.nn.functional as F

    import crossentropy.torch as cet

    ours = list(inspect.signature(cet.linear_cross_entropy).parameters.values())
    theirs = list(inspect.signature(F.linear_cross_entropy).parameters.values())
    assert [(p.name, p.kind, p.default) for p in ours[: len(theirs)]] == [(p.name, p.kind, p.default) for p in theirs]
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in ours[len(theirs) :])
