"""The site's own Sphinx hooks: README sections included where they belong, gallery figures, offline MathJax.

- ``% readme: HEADING`` on a line of its own in a page is replaced, when Sphinx reads the page, by
  that section of ``README.md`` (from the heading to the next heading of the same or a higher
  level, the heading itself left out; ``% readme: HEADING (intro)``: to its first subsection),
  its links rewritten for the site: ``docs/X.md`` to the
  page ``X``, ``benchmarks/results/X.md`` to the page ``benchmarks/X``, any other path of the
  repository to plain text (the site holds no copy of it). The README stays the one source.
- The gallery page (``docs/gallery.md``, written by ``crossentropy gallery --markdown``) gets,
  after each experiment's tables, the figures of the same full run, committed in
  ``docs/_figures/gallery/NAME/``.
- MathJax 3 (from the ``sphinx-mathjax-offline`` package) is copied into ``_static/mathjax``, so
  the formulas render with no network.
- Members that only restate a record's fields (a named tuple's "Alias for field number 0") are
  left out of the reference: the class's Attributes section documents its fields.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import posixpath
import re
import textwrap
from pathlib import Path

from sphinx.application import Sphinx
from sphinx.errors import ExtensionError
from sphinx.util.fileutil import copy_asset

DOCS = Path(__file__).resolve().parents[1]
ROOT = DOCS.parent
README = ROOT / "README.md"
GALLERY_FIGURES = DOCS / "_figures" / "gallery"

_MARKER = re.compile(r"^% readme: (?P<heading>.+?)\s*$", re.MULTILINE)
_HEADING = re.compile(r"^(?P<hashes>#{1,6}) (?P<title>.+?)\s*$")
_LINK = re.compile(r"(?<!!)\[(?P<text>[^\]]+)\]\((?P<target>[^)\s]+)\)")


def _headings(lines: list[str]):
    """(line number, level, title) of each Markdown heading outside fenced code."""
    fenced = False
    for number, line in enumerate(lines):
        if line.startswith("```"):
            fenced = not fenced
        match = None if fenced else _HEADING.match(line)
        if match is not None:
            yield number, len(match["hashes"]), match["title"]


def readme_section(title: str, text: str | None = None, *, level: int | None = None) -> str:
    """The body of the README section headed ``title`` (without the heading line itself).

    ``title`` ending in `` (intro)`` stops at the section's first heading of any level: the text
    before its subsections. ``level``: the level of the page's heading the body goes under; the
    body's own headings move with it (a README ``####`` under a ``###`` becomes a ``###`` under a
    page's ``##``). Raises an ``ExtensionError`` naming the heading when the README has no such
    section, so a renamed heading fails the build instead of leaving a page empty.
    """
    lines = (README.read_text(encoding="utf-8") if text is None else text).splitlines()
    intro = title.endswith(" (intro)")
    title = title.removesuffix(" (intro)")
    start = depth = None
    stop = len(lines)
    for number, heading_level, heading in _headings(lines):
        if start is None:
            if heading == title:
                start, depth = number + 1, heading_level
        elif heading_level <= depth or intro:
            stop = number
            break
    if start is None:
        raise ExtensionError(f"README.md has no section headed {title!r} (docs/_ext/crossentropy_docs.py)")
    body = lines[start:stop]
    if level is not None and level != depth:
        for number, heading_level, heading in list(_headings(body)):
            body[number] = "#" * max(1, heading_level + level - depth) + " " + heading
    return "\n".join(body).strip("\n")


def rewrite_links(text: str, docname: str) -> str:
    """Links of the README (relative to the repository root) as links of the page ``docname``."""
    here = posixpath.dirname(docname)

    def page(target: str) -> str:
        return posixpath.relpath(target, here or ".")

    def replace(match: re.Match) -> str:
        text, target = match["text"], match["target"]
        if re.match(r"^[a-z]+:", target) or target.startswith("#"):
            return match[0]  # a web address or an anchor
        path, _, anchor = target.partition("#")
        anchor = f"#{anchor}" if anchor else ""
        if path.startswith("docs/") and path.endswith(".md"):
            return f"[{text}]({page(path.removeprefix('docs/'))}{anchor})"
        if path.startswith("benchmarks/results/") and path.endswith(".md"):
            return f"[{text}]({page('benchmarks/' + path.removeprefix('benchmarks/results/'))}{anchor})"
        if path.rstrip("/") == "benchmarks/results":
            return f"[{text}]({page('benchmarks/index.md')})"
        return text  # a file of the repository the site has no page for

    return _LINK.sub(replace, text)


def _include_readme(app: Sphinx, docname: str, source: list[str]) -> None:
    if "% readme: " not in source[0]:
        return
    app.env.note_dependency(str(README))
    readme = README.read_text(encoding="utf-8")
    lines = source[0].splitlines()
    headings = list(_headings(lines))
    for number, line in enumerate(lines):
        match = _MARKER.match(line)
        if match is not None:
            above = [depth for at, depth, _ in headings if at < number]
            level = above[-1] if above else 1
            lines[number] = rewrite_links(readme_section(match["heading"], readme, level=level), docname)
    source[0] = "\n".join(lines) + "\n"


def _gallery_figures(app: Sphinx, docname: str, source: list[str]) -> None:
    """After each experiment's section of the gallery page, the figures of its full run."""
    if docname != "gallery":
        return
    sections = re.split(r"(?m)^(?=## `)", source[0])
    for index, section in enumerate(sections):
        name = re.match(r"## `([\w-]+)`", section)
        if name is None:
            continue
        figures = sorted((GALLERY_FIGURES / name[1]).glob("*.png"))
        for figure in figures:
            app.env.note_dependency(str(figure))
        images = "".join(
            f"![{name[1]}: {figure.stem.replace('_', ' ')}](_figures/gallery/{name[1]}/{figure.name})\n\n"
            for figure in figures
        )
        sections[index] = section.rstrip("\n") + "\n\n" + images
    source[0] = "".join(sections)


def _skip_field_aliases(app: Sphinx, what: str, name: str, obj: object, skip: bool, options: object) -> bool | None:
    doc = getattr(obj, "__doc__", None) or ""
    if what == "class" and doc.startswith("Alias for field number"):
        return True
    return None


def _copy_mathjax(app: Sphinx, exception: Exception | None) -> None:
    if exception is not None or app.builder.format != "html":
        return
    source = Path(str(importlib.metadata.distribution("sphinx-mathjax-offline").locate_file("")))
    source = source / "sphinx-mathjax-offline" / "static" / "mathjax"
    target = Path(app.outdir) / "_static" / "mathjax"
    target.mkdir(parents=True, exist_ok=True)
    # tex-chtml.js and what it loads on demand (fonts, TeX extensions, the menu); not the other bundles.
    (target / "tex-chtml.js").write_bytes((source / "tex-chtml.js").read_bytes())
    for folder in ("input", "output", "ui", "a11y", "sre", "adaptors"):
        copy_asset(source / folder, target / folder)


def _rst_text(text: str) -> str:
    """Plain help text as reStructuredText that shows it as written (``*``, backquotes, ``|``, ``_``)."""
    return re.sub(r"([\\*`|_])", r"\\\1", text)


def _rst_literal(text: str) -> str:
    """A description or epilog, laid out by hand for the terminal, as a literal block."""
    return "::\n\n" + textwrap.indent(text.strip("\n"), "    ") + "\n"


def cli_parser() -> argparse.ArgumentParser:
    """The ``crossentropy`` command's parser (``crossentropy.cli._parser``) for sphinx-argparse.

    Its help is plain text written for a terminal; sphinx-argparse reads help as
    reStructuredText, so the descriptions and the help of each option are escaped, and the
    epilogs (examples laid out by hand) become literal blocks: the page shows the commands' own
    ``--help`` text, as written. The top-level epilog (a summary of the commands' examples, which
    sphinx-argparse would print as one run-on paragraph) is left to the page's own text.
    """
    from crossentropy.cli import _parser

    parser = _parser()
    parsers = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            parsers += list(action.choices.values())
            for choice in action._choices_actions:
                choice.help = _rst_text(choice.help or "")
    parser.epilog = None
    for each in parsers:
        each.description = _rst_text(each.description) if each.description else None
        each.epilog = _rst_literal(each.epilog) if each.epilog else None
        for action in each._actions:
            if action.help and action.help is not argparse.SUPPRESS:
                action.help = _rst_text(action.help)
    return parser


def setup(app: Sphinx) -> dict:
    app.connect("source-read", _include_readme)
    app.connect("source-read", _gallery_figures)
    app.connect("autodoc-skip-member", _skip_field_aliases)
    app.connect("build-finished", _copy_mathjax)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
