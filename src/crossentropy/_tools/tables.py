"""One table type, rendered as plain text, Markdown, HTML or a rich table.

A :class:`Table` holds cells already formatted as text (the caller decides the digits) and which
columns are numeric (right-aligned). :func:`render_plain` writes it for logs and pipes,
:func:`render_markdown` for result files, :func:`render_html` for web pages, and
:func:`print_tables` prints tables on stdout, as rich tables on a terminal (when rich is installed)
and as plain text otherwise.
"""

from __future__ import annotations

import html
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["Table", "print_tables", "render_html", "render_markdown", "render_plain"]


@dataclass
class Table:
    """A titled table of text cells.

    Attributes
    ----------
    title : str
        Shown above the table.
    headers : list of str
        Column names.
    rows : list of list of str
        Formatted cells, one list per row.
    numeric : list of bool, optional
        Which columns are right-aligned; by default all but the first.
    section_ends : set of int
        Indices of rows followed by a break (a blank line in plain text, a rule in rich).
    """

    title: str
    headers: list[str]
    rows: list[list[str]]
    numeric: list[bool] | None = None
    section_ends: set[int] = field(default_factory=set)

    def alignment(self) -> list[bool]:
        """Whether each column is right-aligned.

        Returns
        -------
        list of bool
        """
        if self.numeric is not None:
            return list(self.numeric)
        return [index > 0 for index in range(len(self.headers))]


def render_plain(
    table: Table,
    *,
    title: bool = True,
    underline_title: bool = False,
    rule: bool = True,
    indent: str = "",
    strip: bool = True,
) -> str:
    """The table as aligned plain text: title, header, a rule of dashes, rows.

    Parameters
    ----------
    table : Table
    title : bool, default True
        Open with the title line.
    underline_title : bool, default False
        A line of dashes under the title.
    rule : bool, default True
        A rule of dashes under the header.
    indent : str, default ""
        Put before every line of the header, the rule and the rows.
    strip : bool, default True
        Strip the spaces that pad a last, left-aligned column.

    Returns
    -------
    str
    """
    widths = [max(len(cell) for cell in column) for column in zip(table.headers, *table.rows, strict=True)]
    numeric = table.alignment()

    def line(cells: Sequence[str]) -> str:
        parts = [
            cell.rjust(width) if right else cell.ljust(width)
            for cell, width, right in zip(cells, widths, numeric, strict=True)
        ]
        text = indent + "  ".join(parts)
        return text.rstrip() if strip else text

    lines = []
    if title:
        lines.append(table.title)
        if underline_title:
            lines.append("-" * len(table.title))
    lines.append(line(table.headers))
    if rule:
        lines.append(indent + "  ".join("-" * width for width in widths))
    for index, row in enumerate(table.rows):
        lines.append(line(row))
        if index in table.section_ends:
            lines.append("")
    return "\n".join(lines)


def render_markdown(table: Table, *, title: bool = False, align: bool = True) -> str:
    """The table as a Markdown (GitHub) table; a bar inside a cell is escaped.

    Parameters
    ----------
    table : Table
    title : bool, default False
        Open with the title in bold and a blank line.
    align : bool, default True
        Right-align the numeric columns (``---:``); otherwise a plain ``---`` rule.

    Returns
    -------
    str
    """

    def cell(text: str) -> str:
        return text.replace("|", "\\|")  # a bar inside a cell would end it

    numeric = table.alignment()
    rule = "|" + "|".join("---:" if align and right else "---" for right in numeric) + "|"
    lines = ["| " + " | ".join(cell(header) for header in table.headers) + " |", rule]
    lines += ["| " + " | ".join(cell(text) for text in row) + " |" for row in table.rows]
    if title:
        lines = [f"**{table.title}**", "", *lines]
    return "\n".join(lines)


def render_html(table: Table) -> str:
    """The table as one line of HTML: a ``<table>`` with the header in ``<thead>``, the rows in ``<tbody>``.

    Every header and cell is escaped. The title and the alignment are left to the page (a heading, a
    style sheet).

    Parameters
    ----------
    table : Table

    Returns
    -------
    str
    """
    head = "".join(f"<th>{html.escape(header)}</th>" for header in table.headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>" for row in table.rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def print_tables(tables: Sequence[Table], footer: Sequence[str] = ()) -> None:
    """Print tables and footer lines on stdout: rich tables on a terminal, else plain text.

    Parameters
    ----------
    tables : sequence of Table
    footer : sequence of str
        Lines printed after the tables (plain: together, after a blank line).
    """
    console = None
    if sys.stdout.isatty():
        try:
            from rich.console import Console
            from rich.table import Table as RichTable
        except ImportError:
            pass
        else:
            console = Console()
    if console is None:
        blocks = [render_plain(table) for table in tables]
        if footer:
            blocks.append("\n".join(footer))
        print("\n\n".join(blocks))
        return
    for table in tables:
        rich_table = RichTable(title=table.title, title_justify="left")
        for header, right in zip(table.headers, table.alignment(), strict=True):
            rich_table.add_column(header, justify="right" if right else "left")
        for index, row in enumerate(table.rows):
            rich_table.add_row(*row, end_section=index in table.section_ends)
        console.print(rich_table)
    for line in footer:
        console.print(line, highlight=False)
