"""Sphinx configuration of the documentation site (``make docs``; HTML in ``docs/_build/html``).

Sphinx, not MkDocs: the docstrings are numpydoc already, and numpydoc both renders them and
validates them (the checks of ``[tool.numpydoc_validation]`` in ``pyproject.toml``, enforced here
as warnings, which ``make docs`` turns into errors). The pages are Markdown (MyST); the
README's sections and the benchmark results are included from where they live, not copied.
"""

from __future__ import annotations

import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: Sphinx depends on tomli there
    import tomli as tomllib

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(DOCS / "_ext"))

import crossentropy  # noqa: E402

project = "crossentropy"
author = "crossentropy developers"
copyright = "crossentropy developers"
version = release = crossentropy.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "numpydoc",
    "myst_parser",
    "sphinxarg.ext",
    "crossentropy_docs",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
smartquotes = False  # the command line's help says --out, not an en dash
root_doc = "index"
exclude_patterns = ["_build", "_templates", "_ext", "Thumbs.db", ".DS_Store"]
templates_path = ["_templates"]

# MathJax from the sphinx-mathjax-offline package, copied into the site by _ext/crossentropy_docs.py: the pages
# render their formulas with no network (the browser tests open them offline).
mathjax_path = "mathjax/tex-chtml.js"

myst_enable_extensions = ["dollarmath", "colon_fence"]
myst_heading_anchors = 3

# API reference: autosummary writes a page per public name (docs/api/generated, not committed).
autosummary_generate = True
autosummary_imported_members = True
autodoc_default_options = {"members": True, "member-order": "bysource"}
autodoc_inherit_docstrings = False  # never show PyTorch's nn.Module docstrings as ours
autodoc_typehints = "none"  # numpydoc's Parameters sections carry the types
autodoc_class_signature = "mixed"

numpydoc_show_class_members = False  # the class template lists the members itself
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False


def _numpydoc_validation() -> tuple[set[str], set[str], dict[str, list[str]]]:
    """The checks, exclusions and overrides of ``[tool.numpydoc_validation]`` in pyproject.toml.

    The same table drives ``tests/docs/test_docs.py`` and numpydoc's own ``numpydoc lint`` hook.
    """
    table = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["numpydoc_validation"]
    overrides = {key.removeprefix("override_"): value for key, value in table.items() if key.startswith("override_")}
    return set(table["checks"]), set(table.get("exclude", ())), overrides


numpydoc_validation_checks, numpydoc_validation_exclude, numpydoc_validation_overrides = _numpydoc_validation()

html_theme = "furo"
html_title = f"crossentropy {release}"
html_static_path = ["_static"]
html_theme_options = {"navigation_with_keys": True}
html_copy_source = False
html_show_sourcelink = False
