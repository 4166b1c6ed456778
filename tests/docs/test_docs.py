"""The documentation's promises: every public name in the reference, every public docstring numpydoc-clean.

- The docstring check (numpydoc's validator over every public name and the members the reference
  shows, with the checks of ``[tool.numpydoc_validation]`` in ``pyproject.toml``: the set
  ``make docs`` enforces too) needs no build and runs with the suite.
- The reference check reads the objects inventory (``objects.inv``) of the site that ``make docs``
  has just built; ``make docs`` runs it after the build (``CROSSENTROPY_DOCS_BUILT=1``), and
  elsewhere it is skipped, so a stale build is never judged.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import re
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # Sphinx depends on tomli there
    tomllib = pytest.importorskip("tomli")

numpydoc_validate = pytest.importorskip("numpydoc.validate", reason="numpydoc is in the docs extra (part of dev)")
from numpydoc.docscrape import NumpyDocString  # noqa: E402

ROOT = Path(__file__).parents[2]
INVENTORY = ROOT / "docs" / "_build" / "html" / "objects.inv"

# The modules whose __all__ the reference documents in full (docs/api/).
PUBLIC_MODULES = ["crossentropy", "crossentropy.torch", "crossentropy.kernels", "crossentropy.metrics"]
if importlib.util.find_spec("crossentropy.dask") is not None:
    PUBLIC_MODULES.append("crossentropy.dask")


def public_names() -> list[str]:
    """``module.name`` for every name of each public module's ``__all__``."""
    return [f"{module}.{name}" for module in PUBLIC_MODULES for name in importlib.import_module(module).__all__]


def _documented_members(cls: type) -> list[str]:
    """The members of ``cls`` its reference page shows: its own public methods and properties with a
    docstring of their own (autodoc's ``:members:``; field aliases of named tuples left out, as
    docs/_ext/crossentropy_docs.py does)."""
    names = []
    for name, value in vars(cls).items():
        if name.startswith("_"):
            continue
        function = value.__func__ if isinstance(value, (classmethod, staticmethod)) else value
        if not (inspect.isfunction(function) or isinstance(function, property)):
            continue
        doc = function.__doc__ or ""
        if doc and not doc.startswith("Alias for field number"):
            names.append(name)
    return names


def docstring_objects() -> list[str]:
    """Every object whose docstring the reference renders through numpydoc: the public functions and
    classes, and the documented members of the classes. Data (``__version__``, ``BACKENDS``,
    ``IN_PLACE``) have no docstring of their own and are left out."""
    names = []
    for full in public_names():
        module, _, name = full.rpartition(".")
        obj = getattr(importlib.import_module(module), name)
        if not (inspect.isclass(obj) or callable(obj)):
            continue
        names.append(full)
        if inspect.isclass(obj):
            names += [f"{full}.{member}" for member in _documented_members(obj)]
    return names


def _validation_config() -> tuple[set[str], list[re.Pattern], dict[str, re.Pattern]]:
    table = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["numpydoc_validation"]
    checks = numpydoc_validate.get_validation_checks(set(table["checks"]))
    exclude = [re.compile(pattern) for pattern in table.get("exclude", ())]
    overrides = {
        key.removeprefix("override_"): re.compile("|".join(patterns))
        for key, patterns in table.items()
        if key.startswith("override_")
    }
    return checks, exclude, overrides


def test_the_checked_set_is_the_whole_public_surface():
    names = docstring_objects()
    assert len(names) > 100
    assert {"crossentropy.softmax_cross_entropy", "crossentropy.metrics.Scorer.update"} <= set(names)
    assert "crossentropy.kernels.BACKENDS" not in names


def test_public_docstrings_pass_numpydoc_validation():
    checks, exclude, overrides = _validation_config()
    assert {"PR01", "RT01", "GL08"} <= checks
    assert "EX01" not in checks
    failures = []
    for name in docstring_objects():
        if any(pattern.search(name) for pattern in exclude):
            continue
        report = numpydoc_validate.validate(name)
        for code, message in report["errors"]:
            if code not in checks:
                continue
            override = overrides.get(code)
            if override is not None and override.search(report["docstring"]):
                if code == "PR01":  # waived for records: each field must then be an attribute
                    documented = NumpyDocString(report["docstring"])["Attributes"]
                    attributes = {name.strip() for a in documented for name in a.name.split(",")}
                    missing = set(re.findall(r"'([^']+)'", message)) - attributes
                    if missing:
                        failures.append(f"{name}: PR01: {sorted(missing)} neither parameters nor attributes")
                continue
            failures.append(f"{name}: {code}: {message}")
    assert not failures, f"{len(failures)} numpydoc findings:\n" + "\n".join(failures)


@pytest.mark.skipif(
    os.environ.get("CROSSENTROPY_DOCS_BUILT") != "1",
    reason="checks the site `make docs` has just built; `make docs` runs it (CROSSENTROPY_DOCS_BUILT=1)",
)
def test_built_docs_reference_every_public_name():
    from sphinx.util.inventory import InventoryFile

    assert INVENTORY.is_file(), f"{INVENTORY} is missing: make docs builds it"
    with INVENTORY.open("rb") as stream:
        inventory = InventoryFile.load(stream, "", lambda base, uri: uri)  # {role: {name: entry}}
    documented = {name for role, entries in inventory.items() if role.startswith("py:") for name in entries}
    missing = [name for name in public_names() if name not in documented]
    listing = "\n".join(missing)
    assert not missing, f"public names without a page in the API reference (add them to docs/api/*.rst):\n{listing}"
    assert "crossentropy.cross_entropy" in documented
    assert "crossentropy.torch.cross_entropy" in documented
