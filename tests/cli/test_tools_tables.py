"""``crossentropy._tools.tables``: the HTML renderer read back by an HTML parser, and the plain renderer's options."""

from __future__ import annotations

from html.parser import HTMLParser

from crossentropy._tools.tables import Table, render_html, render_plain


class _TableReader(HTMLParser):
    """The text of each ``<th>``/``<td>`` per row, and the tags in the order they open."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.rows: list[list[str]] = []
        self.tags: list[str] = []
        self.cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag == "tr":
            self.rows.append([])
        elif tag in ("th", "td"):
            self.cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("th", "td") and self.cell is not None:
            self.rows[-1].append("".join(self.cell))
            self.cell = None

    def handle_data(self, data: str) -> None:
        if self.cell is not None:
            self.cell.append(data)


def test_render_html_reads_back_as_the_table_with_every_cell_escaped():
    headers = ["class", "<b>loss</b>", "a & b"]
    rows = [["0", "1.5", "x < y"], ['"quoted"', "'single'", "</table>"], ["", "ünïcödé", "&amp;"]]
    reader = _TableReader()
    reader.feed(render_html(Table("ignored title", headers, rows)))
    reader.close()
    assert reader.rows == [headers, *rows]
    assert reader.tags == ["table", "thead", "tr", *["th"] * 3, "tbody", *(["tr", *["td"] * 3] * len(rows))]


def test_render_html_of_a_table_without_rows_has_an_empty_body():
    text = render_html(Table("", ["a", "b"], []))
    assert text == "<table><thead><tr><th>a</th><th>b</th></tr></thead><tbody></tbody></table>"


def test_render_plain_without_title_or_rule_and_indented():
    table = Table("title", ["n", "value"], [["1", "0.5"], ["10", "12.25"]], numeric=[True, True])
    assert render_plain(table, title=False, rule=False, indent="  ").splitlines() == [
        "   n  value",
        "   1    0.5",
        "  10  12.25",
    ]
    # The defaults: title, header, a rule of dashes, no indent.
    assert render_plain(table).splitlines() == ["title", " n  value", "--  -----", " 1    0.5", "10  12.25"]
