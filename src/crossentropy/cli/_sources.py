"""Tables read in batches from CSV, Parquet and NumPy files, for ``crossentropy score``.

A source knows its column names, yields ``(first_row, pyarrow.Table)`` batches of the columns
asked for (numeric ones as float64, the label column as text) with memory bounded by the batch,
reports its progress, and names any cell as ``FILE: row R (line L), column 'C'`` in errors.
Rows are counted from 1 without the header; NumPy files are read with ``allow_pickle=False``.

A file that cannot be read (no permission, an I/O error, a directory, a pipe) is an
:class:`InputError` too, raised when it is opened or while its rows are read. A CSV line may
hold at most :data:`MAX_LINE_BYTES` bytes and a file at most :data:`MAX_COLUMNS` columns, so that
memory stays bounded whatever the file holds.
"""

from __future__ import annotations

import bisect
import contextlib
import csv
import dataclasses
import glob
import io
import os
import re
import stat
import tempfile
import urllib.parse
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "FORMATS",
    "MAX_COLUMNS",
    "MAX_LINE_BYTES",
    "ArrayBatch",
    "CsvLines",
    "CsvMatrix",
    "CsvSource",
    "FrameSource",
    "InputError",
    "MatrixBatch",
    "MultiSource",
    "Part",
    "PlainLayout",
    "Source",
    "expand_inputs",
    "open_inputs",
    "open_source",
    "parts_of",
    "split_parts",
]

FORMATS = ("csv", "parquet", "npy", "npz")
_SUFFIXES = {".csv": "csv", ".tsv": "csv", ".txt": "csv", ".parquet": "parquet", ".pq": "parquet"}
_SUFFIXES |= {".npy": "npy", ".npz": "npz"}

MAX_LINE_BYTES = 16 << 20
"""The longest CSV line, header included, in bytes (16 MiB): a longer one is an error, not unbounded memory."""
MAX_COLUMNS = 1 << 20
"""The most columns a file may have (1,048,576)."""

# pyarrow converts the columns of a CSV block in groups of this many, or in this many groups.
_CONVERT_COLUMNS, _CONVERT_PASSES = 8192, 32
# A carriage return that neither ends a line (before its line feed) nor the file.
_BARE_CARRIAGE_RETURN = re.compile(rb"\r(?!\n|\Z)")


class InputError(ValueError):
    """Bad input: the message names the file and, where it applies, the row and column."""


def _reason(error: OSError) -> str:
    """The operating system's reason for ``error`` on one line (``Permission denied``)."""
    return error.strerror or re.sub(r"\s+", " ", str(error)).strip() or type(error).__name__


def unreadable(path: Path, error: OSError) -> InputError:
    """The :class:`InputError` for an ``OSError`` raised opening or reading ``path``."""
    return InputError(f"{path}: cannot be read: {_reason(error)}")


@contextlib.contextmanager
def _csv_field_limit(size: int) -> Iterator[None]:
    """Let :mod:`csv` read fields of up to ``size`` characters (its default stops at 131,072)."""
    previous = csv.field_size_limit()
    csv.field_size_limit(max(previous, size))
    try:
        yield
    finally:
        csv.field_size_limit(previous)


def _bare_carriage_return(text: Any) -> int:
    """Offset of the first ``\\r`` of ``text`` outside quotes that neither ends a line nor the text; -1 if none.

    Such a carriage return is a line break to pyarrow but not to :mod:`csv` (nor to the line
    numbers of the messages), so it is refused rather than guessed at: lines end in ``\\n`` or
    ``\\r\\n``. Quotes are counted within the line (quoted fields do not span lines here).
    """
    data = None
    for match in _BARE_CARRIAGE_RETURN.finditer(text):
        if data is None:
            data = bytes(text)  # one copy, for rfind and count
        position = match.start()
        if data.count(b'"', data.rfind(b"\n", 0, position) + 1, position) % 2 == 0:
            return position
    return -1


def repeated(values: Sequence[str]) -> set[str]:
    """The values that occur more than once (one pass with a set: linear in the number of values)."""
    seen: set[str] = set()
    again: set[str] = set()
    for value in values:
        if value in seen:
            again.add(value)
        seen.add(value)
    return again


def _check_unique(path: Path, columns: Sequence[str], where: str = "") -> None:
    """Column names must be unique, and at most :data:`MAX_COLUMNS`."""
    if len(columns) > MAX_COLUMNS:
        raise InputError(f"{path}: {where}has {len(columns):,} columns; at most {MAX_COLUMNS:,} are allowed")
    if twice := repeated(columns):
        raise InputError(f"{path}: {where}column names must be unique; {', '.join(map(repr, sorted(twice)))} repeat")


def _pyarrow() -> Any:
    try:
        import pyarrow
        import pyarrow.compute
        import pyarrow.csv
        import pyarrow.parquet
    except ImportError as error:  # pragma: no cover - the cli extra installs it
        raise InputError(
            "reading prediction files needs pyarrow; install it with `pip install 'crossentropy[cli]'`"
        ) from error
    return pyarrow


class Source:
    """Base class: a file of named columns read in batches."""

    kind = "file"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.columns: list[str] = []
        self.size_bytes = path.stat().st_size

    def batches(
        self,
        numeric: Sequence[str],
        labels: str | None,
        batch_rows: int,
        known_labels: Sequence[str] | None = None,
        lines: bool = False,
    ) -> Iterator[tuple[int, Any]]:
        """Yield ``(first_row, table)``: the ``numeric`` columns as float64 and ``labels`` as text.

        ``known_labels`` (the class names the labels should spell) and ``lines`` let a CSV
        source hand out unparsed blocks for the fast path (:meth:`CsvSource._batches`); the
        other sources ignore them. An ``OSError`` while reading becomes an :class:`InputError`.
        """
        try:
            yield from self._batches(numeric, labels, batch_rows, known_labels, lines)
        except OSError as error:
            raise unreadable(self.path, error) from None

    def _batches(
        self,
        numeric: Sequence[str],
        labels: str | None,
        batch_rows: int,
        known_labels: Sequence[str] | None,
        lines: bool,
    ) -> Iterator[tuple[int, Any]]:
        wanted = list(numeric) + ([labels] if labels is not None else [])
        first_row = 0
        for table in self._tables(wanted, labels, batch_rows):
            table = self._float_columns(table, numeric, first_row)
            self._done = first_row + table.num_rows
            yield first_row, table
            first_row += table.num_rows

    def _tables(self, wanted: list[str], labels: str | None, batch_rows: int) -> Iterator[Any]:
        """pyarrow tables of the ``wanted`` columns, in order, about ``batch_rows`` rows each."""
        raise NotImplementedError

    def progress(self) -> tuple[float, float]:
        """``(done, total)`` in the unit of :attr:`progress_unit`."""
        raise NotImplementedError

    progress_unit = "rows"

    def where(self, row: int | None = None, column: str | None = None) -> str:
        """``FILE: row R, column 'C'`` for the 0-based ``row``."""
        text = str(self.path)
        parts = []
        if row is not None:
            parts.append(self._row_text(row))
        if column is not None:
            parts.append(f"column {column!r}")
        return text + (": " + ", ".join(parts) if parts else "")

    def _row_text(self, row: int) -> str:
        return f"row {row + 1}"

    def cell_text(self, row: int, column: str) -> str | None:
        """The raw text of a cell, where the format has one (for error messages)."""
        return None

    def missing_value(self, row: int, column: str) -> InputError:
        """The error for a missing number (an empty cell, ``NA``) at 0-based ``row`` of ``column``."""
        raw = self.cell_text(row, column)
        shown = "empty" if raw is None or not raw.strip() else f"{raw!r}, read as missing"
        return InputError(f"{self.where(row, column)}: the value is {shown}; a number is needed")

    def _float_columns(self, table: Any, numeric: Sequence[str], first_row: int) -> Any:
        """Cast ``numeric`` columns to float64; a cell that is not a number is an :class:`InputError`."""
        pa = _pyarrow()
        numeric = set(numeric)
        columns = table.columns
        cast = False
        for index, name in enumerate(table.column_names):
            column = columns[index]
            if name not in numeric or column.type == pa.float64():
                continue
            if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)):
                for offset, value in enumerate(column.to_pylist()):
                    try:
                        float(value)
                    except (TypeError, ValueError):
                        raise InputError(f"{self.where(first_row + offset, name)}: {value!r} is not a number") from None
            try:
                column = pa.compute.cast(column, pa.float64())
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
                raise InputError(f"{self.where(column=name)}: cannot be read as numbers ({error})") from None
            columns[index], cast = column, True
        return pa.Table.from_arrays(columns, names=table.column_names) if cast else table


class CsvSource(Source):
    """A CSV file with a header line, read in blocks of about ``block_bytes`` of complete lines.

    A block is parsed by pyarrow (threads within a block), or, through :class:`CsvLines`, scored
    in place by the Numba fast path when its lines are plain. Lines end in ``\\n`` or ``\\r\\n``
    and hold at most :data:`MAX_LINE_BYTES` bytes, the header at most :data:`MAX_COLUMNS` fields.
    """

    kind = "CSV"
    progress_unit = "bytes"

    def __init__(self, path: Path, *, delimiter: str = ",", block_bytes: int = 16 << 20) -> None:
        super().__init__(path)
        if len(delimiter) != 1:
            raise InputError(f"{path}: --delimiter must be one character; got {delimiter!r}")
        self.delimiter = delimiter
        self.block_bytes = block_bytes
        self._done = 0
        self._blocks: list[tuple[int, int, int]] = []  # first row, start and end byte of each block read
        with path.open("rb") as file:
            header = file.readline(MAX_LINE_BYTES + 1)
        self._header_bytes = len(header)
        if header.startswith(b"\xef\xbb\xbf"):
            header = header[3:]
        if not header.strip():
            raise InputError(f"{path}: is empty (expected a header line naming the columns)")
        if _bare_carriage_return(header) >= 0:
            raise InputError(
                f"{path}: line 1: has a carriage return (\\r) that does not end the line; lines must end in \\n "
                "or \\r\\n (for a file with old Mac line endings, convert them first: tr '\\r' '\\n')"
            )
        if len(header.rstrip(b"\r\n")) > MAX_LINE_BYTES:
            raise InputError(
                f"{path}: line 1: the header line is longer than {MAX_LINE_BYTES:,} bytes, the most crossentropy "
                "score reads in one line (is this a CSV file with a header line?)"
            )
        if header.count(delimiter.encode()) >= MAX_COLUMNS:
            raise InputError(f"{path}: line 1: the header has more than {MAX_COLUMNS:,} columns, the most allowed")
        try:
            with _csv_field_limit(MAX_LINE_BYTES):
                self.columns = next(csv.reader([header.decode("utf-8")], delimiter=delimiter))
        except UnicodeDecodeError:
            raise InputError(f"{path}: line 1: the header is not UTF-8 text") from None
        except csv.Error as error:
            raise InputError(f"{path}: line 1: the header cannot be read as CSV ({error})") from None
        self.columns = [name.strip() for name in self.columns]
        _check_unique(path, self.columns, "line 1: ")

    def progress(self) -> tuple[float, float]:
        return float(self._done), float(self.size_bytes)

    def _row_text(self, row: int) -> str:
        return f"row {row + 1} (line {self._line_of(row)})"

    def _block_of(self, row: int) -> tuple[int, int, bytes] | None:
        """``(first row, first line, text)`` of the block holding data row ``row``, read again from the file.

        Only for error messages, so the blocks' text is not kept: their byte ranges are. None
        if there is no such block or the file cannot be read again.
        """
        index = bisect.bisect_right([first for first, _, _ in self._blocks], row) - 1
        if index < 0:
            return None
        first_row, start, end = self._blocks[index]
        try:
            return first_row, self._line_at(start), self._read(start, end)
        except OSError:
            return None

    def _line_at(self, offset: int) -> int:
        """The 1-based line of the byte at ``offset`` (error messages only: reads the file up to it)."""
        line = 1
        with self.path.open("rb") as file:
            while file.tell() < offset:
                chunk = file.read(min(1 << 20, offset - file.tell()))
                if not chunk:
                    break
                line += chunk.count(b"\n")
        return line

    def _read(self, start: int, end: int) -> bytes:
        with self.path.open("rb") as file:
            file.seek(start)
            return file.read(end - start)

    def _line_of(self, row: int) -> int | str:
        """The 1-based line of data row ``row``, counting the blank lines pyarrow skips."""
        block = self._block_of(row)
        if block is None:
            return "?"
        first_row, line, text = block
        seen = first_row - 1
        for raw in text.split(b"\n"):
            if raw.strip(b"\r"):
                seen += 1
                if seen == row:
                    return line
            line += 1
        return "?"

    def _batches(
        self,
        numeric: Sequence[str],
        labels: str | None,
        batch_rows: int,
        known_labels: Sequence[str] | None,
        lines: bool,
    ) -> Iterator[tuple[int, Any]]:
        """Yield ``(first_row, table)`` per block of about :attr:`block_bytes`.

        With ``lines``, when the columns allow the Numba fast path (``known_labels`` given for a
        label column), blocks come as :class:`CsvLines` instead, which the consumer either scores
        in place or turns into a table; either sets their ``n_rows``.
        """
        layout = PlainLayout(self.columns, numeric, labels, known_labels, self.delimiter) if lines else None
        lines = lines and layout.usable
        first_row, offset = 0, self._header_bytes
        self._done = offset
        with self.path.open("rb") as file:
            file.seek(offset)
            carry = b""
            # One buffer for every block, so its pages are faulted in once. Each block is scored,
            # or parsed into a table in pyarrow's own memory, before the next one is read.
            buffer = bytearray(self.block_bytes)
            while True:
                # One copy: the file into the buffer, behind the unfinished line of the last block.
                if len(buffer) < len(carry) + self.block_bytes:
                    buffer = bytearray(len(carry) + self.block_bytes)
                buffer[: len(carry)] = carry
                n_read = file.readinto(memoryview(buffer)[len(carry) :])
                size = len(carry) + n_read
                cut = buffer.rfind(b"\n", 0, size) + 1 if n_read else size
                carry = bytes(buffer[cut:size])
                if size == 0:
                    break
                if cut == 0 and len(carry) > MAX_LINE_BYTES:
                    raise InputError(
                        f"{self.path}: row {first_row + 1} (line {self._line_at(offset + cut)}): the line is longer "
                        f"than {MAX_LINE_BYTES:,} bytes, the most crossentropy score reads in one line"
                    )
                if cut == 0:
                    continue
                self._blocks.append((first_row, offset, offset + cut))
                block = CsvLines(self, memoryview(buffer)[:cut], first_row, numeric, labels, layout)
                if lines:
                    yield first_row, block
                    if block.n_rows is None:
                        raise RuntimeError("a CsvLines block must be scored or turned into a table before the next one")
                else:
                    table = block.table()
                    if table.num_rows:
                        yield first_row, table
                offset += cut
                self._done = offset
                first_row += block.n_rows
                if not n_read:
                    break

    def parse(self, text: Any, first_row: int, numeric: Sequence[str], labels: str | None) -> Any:
        """A block of complete lines as a pyarrow table of the ``numeric`` and ``labels`` columns.

        A carriage return inside a line (outside quotes) is an :class:`InputError`: pyarrow would
        take it for a line break, the line numbers of the messages would not.
        """
        position = _bare_carriage_return(text)
        if position >= 0:
            head = bytes(text[:position])
            row = first_row + sum(1 for line in head[: head.rfind(b"\n") + 1].split(b"\n") if line.strip(b"\r"))
            raise InputError(
                f"{self.where(row)}: has a carriage return (\\r) that does not end the line; lines must end in "
                "\\n or \\r\\n"
            )
        wanted = list(numeric) + ([labels] if labels is not None else [])
        if len(wanted) <= _CONVERT_COLUMNS:
            return self._read_csv(text, first_row, numeric, labels, wanted)
        # pyarrow's conversion takes about 9 kB a column while it runs, and a table a few more kB
        # a column: many columns are converted a group at a time, straight into one matrix. Each
        # group parses the whole block again, so there are at most _CONVERT_PASSES groups.
        index = {name: k for k, name in enumerate(numeric)}
        matrix, label_column = None, None
        size = max(_CONVERT_COLUMNS, -(-len(wanted) // _CONVERT_PASSES))
        for start in range(0, len(wanted), size):
            group = wanted[start : start + size]
            table = self._read_csv(text, first_row, numeric, labels, group)
            if matrix is None:
                matrix = np.empty((table.num_rows, len(numeric)))
            for name, column in zip(group, table.columns, strict=True):
                if name == labels:
                    label_column = column
                    continue
                if column.null_count:
                    raise self.missing_value(first_row + int(np.argmax(np.asarray(column.is_null()))), name)
                matrix[:, index[name]] = column.to_numpy()
        return CsvMatrix(matrix, numeric, label_column)

    def _read_csv(self, text: Any, first_row: int, numeric: Sequence[str], labels: str | None, group: list[str]) -> Any:
        """The columns ``group`` of a block, parsed by pyarrow."""
        pa = _pyarrow()
        types = {name: pa.float64() for name in group if name != labels}
        if labels in group:
            types[labels] = pa.dictionary(pa.int32(), pa.string())
        parse = pa.csv.ParseOptions(delimiter=self.delimiter)
        convert = pa.csv.ConvertOptions(column_types=types, include_columns=group, strings_can_be_null=False)
        # pyarrow fails on a line that spans more than two of its blocks ("straddling object"):
        # blocks of 1 MiB, or of four header lines for wide files, and a block that still fails is
        # parsed again in one piece before it is called bad.
        block_size = max(1 << 20, 4 * self._header_bytes)
        while True:
            read = pa.csv.ReadOptions(column_names=self.columns, use_threads=True, block_size=block_size)
            try:
                return pa.csv.read_csv(
                    pa.py_buffer(text), read_options=read, parse_options=parse, convert_options=convert
                )
            except pa.ArrowInvalid as error:
                if block_size <= len(text):
                    block_size = len(text) + 1
                    continue
                raise self._locate(text, first_row, numeric, error) from None

    def _locate(self, text: Any, first_row: int, numeric: Sequence[str], error: Exception) -> Exception:
        """An :class:`InputError` at the cell behind pyarrow's ``error`` (found by re-reading the block)."""
        index = {name: k for k, name in enumerate(self.columns)}
        positions = [(name, index[name]) for name in numeric]
        for offset, row in enumerate(self._rows_of(text)):
            if isinstance(row, InputError):
                return InputError(f"{self.where(first_row + offset)}: {row}")
            if len(row) != len(self.columns):
                return InputError(
                    f"{self.where(first_row + offset)}: has {len(row)} fields; the header names {len(self.columns)}"
                )
            for name, position in positions:
                cell = row[position]
                try:
                    float(cell)
                except ValueError:
                    if cell.strip() in ("", "NA", "N/A", "NULL", "null", "nan", "NaN", "-nan", "-NaN", "n/a"):
                        continue  # read as missing; reported by the caller with the others
                    return InputError(f"{self.where(first_row + offset, name)}: {cell!r} is not a number")
        message = re.sub(r"\s+", " ", str(error)).strip()
        return InputError(f"{self.where()}: cannot be parsed as CSV near row {first_row + 1}: {message}")

    def _rows_of(self, text: Any) -> Iterator[list[str] | InputError]:
        """The non-blank rows of a block, split by the csv module, one at a time (error path only).

        A row the csv module rejects comes as an :class:`InputError` saying why, and ends the rows.
        """
        lines = io.StringIO(bytes(text).decode("utf-8", "replace"))
        reader = csv.reader(lines, delimiter=self.delimiter)
        while True:
            try:
                with _csv_field_limit(MAX_LINE_BYTES):
                    row = next(reader)
            except StopIteration:
                return
            except csv.Error as error:
                yield InputError(f"cannot be read as CSV ({error})")
                return
            if row:
                yield row

    def cell_text(self, row: int, column: str) -> str | None:
        """The raw text of a cell (for error messages)."""
        block = self._block_of(row)
        if block is None:
            return None
        first_row, _, text = block
        for offset, cells in enumerate(self._rows_of(text)):
            if offset == row - first_row:
                if isinstance(cells, list) and len(cells) == len(self.columns):
                    return cells[self.columns.index(column)]
                break
        return None


class PlainLayout:
    """Where the fields of a CSV line go, for the Numba fast path (:mod:`crossentropy.cli._kernels._csv`).

    ``roles`` and ``slots`` per field: skipped, a number stored at a slot (the order of
    ``numeric``), or the label, matched against ``known_labels``. Usable only when every label
    can be matched that way and the delimiter is one byte.
    """

    def __init__(
        self,
        columns: Sequence[str],
        numeric: Sequence[str],
        labels: str | None,
        known_labels: Sequence[str] | None,
        delimiter: str,
    ) -> None:
        from ._kernels import _csv

        self.usable = (labels is None or known_labels is not None) and len(delimiter.encode()) == 1
        self.roles = np.zeros(len(columns), dtype=np.int8)
        self.slots = np.zeros(len(columns), dtype=np.int64)
        self.n_numbers = len(numeric)
        index = {name: k for k, name in enumerate(columns)}
        for slot, name in enumerate(numeric):
            self.roles[index[name]], self.slots[index[name]] = _csv.NUMBER, slot
        if labels is not None:
            self.roles[index[labels]] = _csv.LABEL
        encoded = [name.encode() for name in known_labels or ()]
        self.names = np.frombuffer(b"".join(encoded) or b"\0", dtype=np.uint8)
        self.offsets = np.cumsum([0, *(len(name) for name in encoded)]).astype(np.int64)
        self.delimiter = delimiter.encode()[0] if self.usable else 0


class CsvLines:
    """A block of complete lines of a CSV file, not parsed yet.

    :meth:`table` parses it with pyarrow; a consumer that scored it in place (the fast path)
    sets ``n_rows`` instead. The buffer is reused for the next block.
    """

    def __init__(
        self,
        source: CsvSource,
        data: Any,
        first_row: int,
        numeric: Sequence[str],
        labels: str | None,
        layout: PlainLayout,
    ) -> None:
        self.source, self.data, self.first_row = source, data, first_row
        self.numeric, self.labels, self.layout = numeric, labels, layout
        self.n_rows: int | None = None

    def array(self) -> np.ndarray:
        """The bytes of the block as a uint8 array (no copy)."""
        return np.frombuffer(self.data, dtype=np.uint8)

    def table(self) -> Any:
        table = self.source.parse(self.data, self.first_row, self.numeric, self.labels)
        self.n_rows = table.num_rows
        return table


class ParquetSource(Source):
    """A Parquet file, read one row group at a time: memory follows the row-group size, not the file size.

    ``row_groups=(start, stop)`` reads those row groups only (a partition of the Dask engine);
    rows are then counted from the first of them, and :meth:`where` names them by their row in
    the whole file.
    """

    kind = "Parquet"

    def __init__(self, path: Path, *, row_groups: tuple[int, int] | None = None) -> None:
        super().__init__(path)
        pa = _pyarrow()
        if self.size_bytes == 0:
            raise InputError(f"{path}: is empty")
        try:
            self._file = pa.parquet.ParquetFile(path, buffer_size=1 << 20)
        except (pa.ArrowInvalid, OSError) as error:
            raise InputError(f"{path}: is not a Parquet file ({error})") from None
        self.columns = list(self._file.schema_arrow.names)
        _check_unique(path, self.columns)
        metadata = self._file.metadata
        group_rows = [metadata.row_group(k).num_rows for k in range(metadata.num_row_groups)]
        start, stop = row_groups if row_groups is not None else (0, len(group_rows))
        if not 0 <= start <= stop <= len(group_rows):
            raise InputError(f"{path}: has {len(group_rows)} row groups; row groups {start}:{stop} asked for")
        self._groups = range(start, stop)
        self.row_offset = sum(group_rows[:start])
        self._rows = sum(group_rows[start:stop]) if row_groups is not None else metadata.num_rows
        self._done = 0

    @property
    def group_rows(self) -> list[int]:
        """The number of rows of each row group of the file."""
        metadata = self._file.metadata
        return [metadata.row_group(k).num_rows for k in range(metadata.num_row_groups)]

    def close(self) -> None:
        """Close the file (a source of many files keeps one open at a time)."""
        self._file.close()

    def progress(self) -> tuple[float, float]:
        return float(self._done), float(self._rows)

    def _row_text(self, row: int) -> str:
        return f"row {self.row_offset + row + 1}"

    def _tables(self, wanted: list[str], labels: str | None, batch_rows: int) -> Iterator[Any]:
        pa = _pyarrow()
        # One row group at a time: over the whole file, pyarrow reads ahead without bound.
        for group in self._groups:
            batches = self._file.iter_batches(
                batch_size=batch_rows, row_groups=[group], columns=wanted, use_threads=True
            )
            try:
                for batch in batches:
                    yield pa.Table.from_batches([batch])
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:  # damaged pages (I/O errors are OSError)
                message = re.sub(r"\s+", " ", str(error)).strip()
                raise InputError(f"{self.path}: row group {group + 1} cannot be read ({message})") from None


def _read_exactly(descriptor: int, view: memoryview, offset: int) -> bool:
    """Fill the bytes ``view`` from ``offset`` of the file; False if the file ends first."""
    while len(view):
        n_read = os.preadv(descriptor, [view], offset)
        if n_read == 0:
            return False
        view, offset = view[n_read:], offset + n_read
    return True


def _open_npy_stream(stream: Any, where: str) -> tuple[np.dtype, tuple[int, ...], bool]:
    """Read the header of a ``.npy`` stream; returns ``(dtype, shape, fortran_order)``."""
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(stream)
        else:
            shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(stream)
    except ValueError as error:
        raise InputError(f"{where}: is not a NumPy .npy array ({error})") from None
    if dtype.hasobject:
        raise InputError(f"{where}: holds Python objects, which are only read with pickle (not allowed)")
    return dtype, shape, fortran_order


class _Block:
    """Columns backed by one array: a 2-d array's columns or a structured array's fields."""

    def __init__(self, names: list[str], read: Any, dtype: np.dtype, shape: tuple[int, ...], fields: list[Any]) -> None:
        self.names, self.read, self.dtype, self.shape, self.fields = names, read, dtype, shape, fields


class MatrixBatch:
    """A batch whose numeric columns come as one float64 matrix rather than as a pyarrow array each.

    For files of many columns: no Python object per column and batch. ``num_rows`` rows;
    :meth:`numbers` gives columns as a float64 array, :meth:`column` the label column as a
    pyarrow chunked array (as a table's :meth:`pyarrow.Table.column` does).
    """

    num_rows: int

    def numbers(self, names: Sequence[str]) -> np.ndarray:
        """The columns ``names`` as a float64 array of shape ``(num_rows, len(names))``."""
        raise NotImplementedError

    def column(self, name: str) -> Any:
        """The label column ``name`` as a pyarrow chunked array."""
        raise NotImplementedError


class CsvMatrix(MatrixBatch):
    """A block of a wide CSV file parsed by pyarrow: the ``numeric`` columns in one matrix, in their order."""

    def __init__(self, matrix: np.ndarray, numeric: Sequence[str], labels: Any) -> None:
        self.matrix, self.num_rows, self._labels = matrix, matrix.shape[0], labels
        self._index = {name: k for k, name in enumerate(numeric)}

    def numbers(self, names: Sequence[str]) -> np.ndarray:
        positions = [self._index[name] for name in names]
        first = positions[0] if positions else 0
        if positions == list(range(first, first + len(positions))):
            return self.matrix[:, first : first + len(positions)]  # neighbours: a view
        return self.matrix[:, positions]

    def column(self, name: str) -> Any:
        return self._labels


class ArrayBatch(MatrixBatch):
    """Rows ``first_row ...`` of a NumPy file, as one block of rows of each member it reads.

    ``crossentropy score`` takes the numeric columns as one float64 matrix (:meth:`numbers`: a
    run of neighbouring columns of a 2-d member in one copy) and the label column as a pyarrow
    array (:meth:`column`), so a file of many columns costs no Python work per column and batch.
    NumPy arrays have no missing values.
    """

    def __init__(self, source: NumpySource, blocks: dict[str, np.ndarray], first_row: int, num_rows: int) -> None:
        self.source, self.blocks, self.first_row, self.num_rows = source, blocks, first_row, num_rows

    def _values(self, name: str) -> np.ndarray:
        member, index = self.source.member_of(name)
        block = self.blocks[member]
        values = block[name] if block.dtype.names is not None else block
        return values[:, index] if index is not None else values

    def column(self, name: str) -> Any:
        """The column ``name`` as a pyarrow chunked array (as a table's), read as labels (text or whole numbers)."""
        return _pyarrow().chunked_array([self.source.label_column(self._values(name), name, self.first_row)])

    def numbers(self, names: Sequence[str]) -> np.ndarray:
        """The columns ``names`` as a C-ordered float64 array of shape ``(num_rows, len(names))``."""
        out = np.empty((self.num_rows, len(names)))
        for member, index, start, end in self.source.column_runs(tuple(names)):
            block = self.blocks[member]
            if index is None:
                out[:, start] = self._number_column(names[start])
                continue
            self._check_numbers(block.dtype, names[start])
            # A Fortran-ordered block is transposed in slabs of columns that stay in the cache.
            step = end - start if block.flags.c_contiguous else 256
            for first in range(start, end, step):
                last = min(first + step, end)
                out[:, first:last] = block[:, index + first - start : index + last - start]
        return out

    def _check_numbers(self, dtype: np.dtype, name: str) -> None:
        if dtype.kind not in "biuf":
            raise InputError(f"{self.source.where(column=name)}: dtype {dtype} holds neither numbers nor text")

    def _number_column(self, name: str) -> np.ndarray:
        values = self._values(name)
        if values.dtype.kind in "SU":
            text = np.char.decode(values, "utf-8", "replace") if values.dtype.kind == "S" else values
            for offset, cell in enumerate(text.tolist()):
                try:
                    float(cell)
                except ValueError:
                    raise InputError(
                        f"{self.source.where(self.first_row + offset, name)}: {cell!r} is not a number"
                    ) from None
            return text.astype(np.float64)
        self._check_numbers(values.dtype, name)
        return values


class NumpySource(Source):
    """A ``.npy`` array (structured: one column per field; 2-d: columns ``0``, ``1``, ...) or a ``.npz`` archive.

    In an archive, a 1-d member is the column of its name and a 2-d member ``key`` of width k the
    columns ``key_0`` ... ``key_{k-1}``; every member has one entry per row. Members are read
    in blocks of rows, so memory follows the batch, not the file: C-ordered members as streams
    (compressed ones too), Fortran-ordered 2-d members one column slice at a time at its offset
    in the file; a compressed Fortran-ordered member, which cannot be read at an offset, is
    first decompressed into an anonymous temporary file (disk the size of the member).
    Batches are :class:`ArrayBatch` objects.
    """

    kind = "NumPy"

    def __init__(self, path: Path, kind: str) -> None:
        super().__init__(path)
        if self.size_bytes == 0:
            raise InputError(f"{path}: is empty")
        self.kind = kind
        self._done = 0
        self._members: dict[str, tuple[str, int | None]] = {}  # column -> (member, index within a 2-d member)
        self._member_info: dict[str, tuple[np.dtype, tuple[int, ...], bool]] = {}
        self._runs: dict[tuple[str, ...], list[tuple[str, int | None, int, int]]] = {}
        if kind == "npy":
            with path.open("rb") as stream:
                self._add_member("", *_open_npy_stream(stream, str(path)))
        else:
            try:
                with zipfile.ZipFile(path) as archive:
                    names = [name for name in archive.namelist() if name.endswith(".npy")]
                    for name in names:
                        with archive.open(name) as stream:
                            self._add_member(name[:-4], *_open_npy_stream(stream, f"{path}: member {name!r}"))
            except zipfile.BadZipFile:
                raise InputError(f"{path}: is not a NumPy .npz archive (not a zip file)") from None
        lengths = {info[1][0] for info in self._member_info.values() if info[1]}
        if len(lengths) > 1:
            raise InputError(f"{path}: members must have one entry per row; their lengths differ: {sorted(lengths)}")
        self._rows = lengths.pop() if lengths else 0
        if self._rows == 0:
            raise InputError(f"{path}: has no rows")

    def _add_member(self, member: str, dtype: np.dtype, shape: tuple[int, ...], fortran: bool) -> None:
        where = f"{self.path}" + (f": member {member!r}" if member else "")
        width = len(dtype.names) if dtype.names is not None else shape[1] if len(shape) == 2 else 1
        if len(self.columns) + width > MAX_COLUMNS:
            raise InputError(
                f"{where}: brings the columns to {len(self.columns) + width:,}; at most {MAX_COLUMNS:,} are allowed"
            )
        if dtype.names is not None:
            if len(shape) != 1:
                raise InputError(f"{where}: a structured array must be 1-d; got shape {shape}")
            for name in dtype.names:
                self._member_columns(name, member, None)
        elif len(shape) == 2 and not member:
            for k in range(shape[1]):
                self._member_columns(str(k), member, k)
        elif len(shape) == 2:
            for k in range(shape[1]):
                self._member_columns(f"{member}_{k}", member, k)
        elif len(shape) == 1 and member:
            self._member_columns(member, member, None)
        else:
            raise InputError(
                f"{where}: must be a structured array or a 2-d array of columns"
                + (" (or, in an .npz archive, 1-d columns)" if member else "")
                + f"; got shape {shape}"
            )
        self._member_info[member] = (dtype, shape, fortran)

    def _member_columns(self, column: str, member: str, index: int | None) -> None:
        if column in self._members:
            raise InputError(f"{self.path}: column names must be unique; {column!r} repeats")
        self.columns.append(column)
        self._members[column] = (member, index)

    def progress(self) -> tuple[float, float]:
        return float(self._done), float(self._rows)

    def member_of(self, column: str) -> tuple[str, int | None]:
        """``(member, index)``: the member holding ``column`` and its index in a 2-d member (else None)."""
        return self._members[column]

    def column_runs(self, names: tuple[str, ...]) -> list[tuple[str, int | None, int, int]]:
        """``(member, index, start, end)``: ``names[start:end]`` are the columns ``index, index + 1, ...`` of a
        2-d ``member``; a column of a 1-d member or a field is a run of its own, with ``index`` None.

        Worked out once per tuple of names, not per batch.
        """
        runs = self._runs.get(names)
        if runs is None:
            runs = []
            for j, name in enumerate(names):
                member, index = self._members[name]
                last = runs[-1] if runs else None
                if index is not None and last and last[:2] == (member, index - (j - last[2])) and last[3] == j:
                    runs[-1] = (member, last[1], last[2], j + 1)
                else:
                    runs.append((member, index, j, j + 1))
            self._runs[names] = runs
        return runs

    def _batches(
        self,
        numeric: Sequence[str],
        labels: str | None,
        batch_rows: int,
        known_labels: Sequence[str] | None,
        lines: bool,
    ) -> Iterator[tuple[int, Any]]:
        """Yield ``(first_row, ArrayBatch)`` of ``batch_rows`` rows (the last one fewer)."""
        try:
            yield from self._array_batches(numeric, labels, batch_rows)
        except (zipfile.BadZipFile, zlib.error, EOFError) as error:  # a CRC or deflate error of a member
            raise InputError(f"{self.path}: the archive is damaged ({error})") from None

    def _array_batches(self, numeric: Sequence[str], labels: str | None, batch_rows: int) -> Iterator[tuple[int, Any]]:
        wanted = list(numeric) + ([labels] if labels is not None else [])
        members = sorted({self._members[name][0] for name in wanted})
        with contextlib.ExitStack() as stack:
            archive = stack.enter_context(zipfile.ZipFile(self.path)) if self.kind == "npz" else None
            iterators = {member: self._member_batches(member, batch_rows, archive) for member in members}
            for iterator in iterators.values():
                stack.callback(iterator.close)
            for first_row in range(0, self._rows, batch_rows):
                count = min(batch_rows, self._rows - first_row)
                blocks = {member: next(iterator) for member, iterator in iterators.items()}
                self._done = first_row + count
                yield first_row, ArrayBatch(self, blocks, first_row, count)

    def _member_batches(self, member: str, batch_rows: int, archive: Any) -> Iterator[np.ndarray]:
        dtype, shape, fortran = self._member_info[member]
        if fortran and len(shape) == 2:
            yield from self._fortran_batches(member, batch_rows, archive)
            return
        row_bytes = dtype.itemsize * (shape[1] if len(shape) == 2 else 1)
        stream = self.path.open("rb") if not member else archive.open(member + ".npy")
        with stream:
            _open_npy_stream(stream, str(self.path))
            for start in range(0, shape[0], batch_rows):
                count = min(batch_rows, shape[0] - start)
                data = stream.read(count * row_bytes)
                if len(data) != count * row_bytes:
                    raise InputError(f"{self.where(start)}: the file ends early (truncated array)")
                block = np.frombuffer(data, dtype=dtype)
                yield block.reshape(count, shape[1]) if len(shape) == 2 else block

    def _fortran_batches(self, member: str, batch_rows: int, archive: Any) -> Iterator[np.ndarray]:
        """Row blocks of a Fortran-ordered 2-d member: its columns are contiguous, its rows are not.

        A block of rows is one read per column, at the column's offset; the block is
        Fortran-ordered too, so each read lands in one contiguous slice of it.
        """
        dtype, (n_rows, n_columns), _ = self._member_info[member]
        with self._data_at_offsets(member, archive) as (descriptor, offset):
            for start in range(0, n_rows, batch_rows):
                count = min(batch_rows, n_rows - start)
                block = np.empty((count, n_columns), dtype=dtype, order="F")
                size = count * dtype.itemsize
                data = memoryview(block.T.reshape(-1).view(np.uint8))  # column k is data[k * size : (k + 1) * size]
                for k in range(n_columns):
                    where = offset + (k * n_rows + start) * dtype.itemsize
                    part = data[k * size : (k + 1) * size]
                    if os.preadv(descriptor, [part], where) != size and not _read_exactly(descriptor, part, where):
                        raise InputError(f"{self.where(start)}: the file ends early (truncated array)")
                yield block

    @contextlib.contextmanager
    def _data_at_offsets(self, member: str, archive: Any) -> Iterator[tuple[int, int]]:
        """``(file descriptor, offset of the array data)`` of ``member``, for reads at offsets.

        The ``.npy`` file itself, or the archive for a stored (uncompressed) member; a compressed
        member is decompressed into an anonymous temporary file first.
        """
        with contextlib.ExitStack() as stack:
            if not member:
                stream = stack.enter_context(self.path.open("rb"))
            else:
                info = archive.getinfo(member + ".npy")
                if info.compress_type == zipfile.ZIP_STORED and not info.flag_bits & 1:
                    stream = stack.enter_context(self.path.open("rb"))
                    stream.seek(info.header_offset)
                    local = stream.read(30)  # the local file header, whose name and extra field precede the data
                    if len(local) < 30 or local[:4] != b"PK\x03\x04":
                        raise InputError(f"{self.path}: member {member!r}: the archive is damaged")
                    lengths = int.from_bytes(local[26:28], "little") + int.from_bytes(local[28:30], "little")
                    stream.seek(info.header_offset + 30 + lengths)
                else:
                    stream = stack.enter_context(tempfile.TemporaryFile())
                    with archive.open(info) as packed:
                        while chunk := packed.read(1 << 20):
                            try:
                                stream.write(chunk)
                            except OSError as error:
                                raise InputError(
                                    f"{self.path}: member {member!r}: a compressed Fortran-ordered member is "
                                    f"decompressed into a temporary file in {tempfile.gettempdir()} first, which "
                                    f"failed: {_reason(error)}"
                                ) from None
                    stream.flush()
                    stream.seek(0)
            _open_npy_stream(stream, f"{self.path}: member {member!r}" if member else str(self.path))
            yield stream.fileno(), stream.tell()

    def label_column(self, values: np.ndarray, name: str, first_row: int) -> Any:
        """A column of labels as a pyarrow array: text, or whole numbers as int64."""
        pa = _pyarrow()
        if values.dtype.kind == "S":
            values = np.char.decode(values, "utf-8", "replace")
        if values.dtype.kind in "US":
            return pa.array(values.astype(str))
        if values.dtype.kind not in "biuf":
            raise InputError(f"{self.where(column=name)}: dtype {values.dtype} holds neither numbers nor text")
        if values.dtype.kind == "f":
            whole = np.isfinite(values) & (values == np.round(values))
            if not whole.all():
                row = int(np.argmin(whole))
                raise InputError(f"{self.where(first_row + row, name)}: label {values[row]!r} is not a whole number")
            values = values.astype(np.int64)
        return pa.array(values.astype(np.int64) if values.dtype.kind in "bu" else values)


def open_source(path: str | Path, *, file_format: str | None = None, delimiter: str | None = None) -> Source:
    """Open ``path`` by its format (from the suffix unless ``file_format`` is given).

    A path that is not a readable regular file, or an ``OSError`` while the header is read, is
    an :class:`InputError` naming the file and the reason.
    """
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except OSError as error:
        raise unreadable(path, error) from None
    if stat.S_ISDIR(mode):
        raise InputError(f"{path}: is a directory, not a file")
    if not stat.S_ISREG(mode):
        # A pipe would block here until a writer came, and its rows could not be read a second time.
        raise InputError(f"{path}: is not a regular file (a pipe, socket or device); save its content to a file first")
    try:
        return _open(path, file_format, delimiter)
    except OSError as error:
        raise unreadable(path, error) from None


def _open(path: Path, file_format: str | None, delimiter: str | None) -> Source:
    with path.open("rb"):
        pass  # readable at all (permissions), before pyarrow opens it in its own way
    if file_format is None:
        file_format = _SUFFIXES.get(path.suffix.lower())
        if file_format is None:
            raise InputError(
                f"{path}: unknown file type {path.suffix!r}; name it .csv, .parquet, .npy or .npz, or pass --format"
            )
    if file_format == "csv":
        if delimiter is None:
            delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
        return CsvSource(path, delimiter=delimiter)
    if file_format == "parquet":
        return ParquetSource(path)
    if file_format in ("npy", "npz"):
        return NumpySource(path, file_format)
    raise InputError(f"{path}: unknown format {file_format!r}; expected one of {', '.join(FORMATS)}")


# ---------------------------------------------------------------------------------------------
# Several files as one data set: a directory, a glob, several paths

_GLOB_MAGIC = re.compile(r"[*?[]")
_HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"


@dataclasses.dataclass(frozen=True)
class Part:
    """One file of a data set, or a run of row groups of one Parquet file: a unit that is read on its own.

    Attributes
    ----------
    path : Path
    file_format : str
        One of :data:`FORMATS`.
    delimiter : str or None
        CSV field delimiter (None: ``,``, tab for ``.tsv``).
    partition : tuple of (str, str or None)
        Hive partition columns from the directory names below the data set's root
        (``date=2024-01-01/``): each is a column of that constant value for every row of the file
        (None: missing, Hive's ``__HIVE_DEFAULT_PARTITION__``).
    row_groups : (int, int) or None
        Parquet: the row groups ``start:stop`` only (None: the whole file).
    """

    path: Path
    file_format: str
    delimiter: str | None = None
    partition: tuple[tuple[str, str | None], ...] = ()
    row_groups: tuple[int, int] | None = None

    def open(self) -> Source:
        """The part as a :class:`Source` of its own columns (:class:`MultiSource` adds the partition columns)."""
        if self.row_groups is None:
            return open_source(self.path, file_format=self.file_format, delimiter=self.delimiter)
        try:
            return ParquetSource(self.path, row_groups=self.row_groups)
        except OSError as error:
            raise unreadable(self.path, error) from None


def _is_hidden(name: str) -> bool:
    """Names that are no part of a data set: Spark's and Hadoop's markers (``_SUCCESS``, ``.crc``), as pyarrow skips."""
    return name.startswith((".", "_"))


def _hive_partition(root: Path, path: Path) -> tuple[tuple[str, str | None], ...]:
    """The ``key=value`` directory names between ``root`` and the file ``path``, values URL-decoded."""
    pairs = []
    for name in path.relative_to(root).parts[:-1]:
        key, equals, value = name.partition("=")
        if equals and key:
            value = urllib.parse.unquote(value)
            pairs.append((urllib.parse.unquote(key), None if value == _HIVE_NULL else value))
    return tuple(pairs)


def _directory_parts(root: Path, file_format: str | None, delimiter: str | None) -> list[Part]:
    """The data files under the directory ``root``, in sorted order of their paths."""
    found: list[Path] = []
    for directory, subdirectories, files in os.walk(root, onerror=_raise_walk_error):
        subdirectories[:] = sorted(name for name in subdirectories if not _is_hidden(name))
        for name in sorted(files):
            if _is_hidden(name):
                continue
            path = Path(directory, name)
            if file_format is not None or path.suffix.lower() in _SUFFIXES:
                found.append(path)
    if not found:
        raise InputError(
            f"{root}: the directory holds no .csv, .tsv, .txt, .parquet, .pq, .npy or .npz file (names starting "
            "with . or _ are skipped; pass --format to read files of other names)"
        )
    return [Part(path, _format_of(path, file_format), delimiter, _hive_partition(root, path)) for path in found]


def _raise_walk_error(error: OSError) -> None:
    raise unreadable(Path(error.filename or "?"), error)


def _format_of(path: Path, file_format: str | None) -> str:
    if file_format is not None:
        if file_format not in FORMATS:
            raise InputError(f"{path}: unknown format {file_format!r}; expected one of {', '.join(FORMATS)}")
        return file_format
    found = _SUFFIXES.get(path.suffix.lower())
    if found is None:
        raise InputError(
            f"{path}: unknown file type {path.suffix!r}; name it .csv, .parquet, .npy or .npz, or pass --format"
        )
    return found


def expand_inputs(
    arguments: Sequence[str | Path], *, file_format: str | None = None, delimiter: str | None = None
) -> list[Part]:
    """The files that ``arguments`` name, in order: files as given, directories walked, globs expanded.

    A directory is walked recursively in sorted order; its files with a known suffix are read (all
    files with ``file_format``), skipping names that start with ``.`` or ``_`` (Spark's
    ``_SUCCESS``, ``.crc`` files, ``_metadata``); ``key=value`` directories below it add
    partition columns (Hive's layout). A path that does not exist and holds ``*``, ``?`` or ``[``
    is a glob (``**`` spans directories), sorted; a directory it matches is walked. A glob that
    matches nothing, and a file named twice, are errors.
    """
    parts: list[Part] = []
    for argument in arguments:
        path = Path(argument)
        text = str(argument)
        try:
            exists = path.exists() or path.is_symlink()
            is_directory = path.is_dir()
        except OSError as error:
            raise unreadable(path, error) from None
        if is_directory:
            parts += _directory_parts(path, file_format, delimiter)
        elif exists or not _GLOB_MAGIC.search(text):
            parts.append(Part(path, _format_of(path, file_format), delimiter))
        else:
            matches = sorted(glob.glob(text, recursive=True))
            if not matches:
                raise InputError(f"{text}: no file matches this pattern")
            for match in matches:
                matched = Path(match)
                if matched.is_dir():
                    parts += _directory_parts(matched, file_format, delimiter)
                elif not _is_hidden(matched.name):
                    parts.append(Part(matched, _format_of(matched, file_format), delimiter))
    seen: set[Path] = set()
    for part in parts:
        key = Path(os.path.abspath(part.path))
        if key in seen:
            raise InputError(f"{part.path}: is named twice among the inputs; each file is scored once")
        seen.add(key)
    return parts


def open_inputs(
    arguments: Sequence[str | Path], *, file_format: str | None = None, delimiter: str | None = None
) -> Source:
    """One source for every file that ``arguments`` name (see :func:`expand_inputs`).

    A single argument that is not a directory nor a glob opens that file as
    :func:`open_source` does, with its messages; anything else is a :class:`MultiSource`.
    """
    if len(arguments) == 1:
        path = Path(arguments[0])
        try:
            plain = not path.is_dir() and (path.exists() or path.is_symlink() or not _GLOB_MAGIC.search(str(path)))
        except OSError:
            plain = True
        if plain:
            return open_source(path, file_format=file_format, delimiter=delimiter)
    parts = expand_inputs(arguments, file_format=file_format, delimiter=delimiter)
    return MultiSource(parts, name=_display_name(arguments))


def _display_name(arguments: Sequence[str | Path]) -> str:
    texts = [str(argument) for argument in arguments]
    return ", ".join(texts) if len(texts) <= 3 else f"{texts[0]}, ... ({len(texts)} inputs)"


def _item_rows(item: Any) -> int:
    """Rows of a batch: a pyarrow table, a :class:`MatrixBatch` or a scored :class:`CsvLines` block."""
    if isinstance(item, CsvLines):
        return item.n_rows or 0
    return int(item.num_rows)


class MultiSource(Source):
    """Several files (or parts of files) read one after the other as one table: a data set of many files.

    Every part must have the same columns, as a set (their order may differ): the first part's,
    and its partition columns. Rows are numbered across the parts for the consumer, but
    :meth:`where` names the file and the row within it, so messages read ``FILE: row R, column
    'C'`` for the file that holds the cell. One part is open at a time. Progress is in bytes of
    files.

    Parameters
    ----------
    parts : sequence of Part
    name : str
        How messages about the whole data set name it (the directory, the glob, the paths).
    """

    progress_unit = "bytes"

    def __init__(self, parts: Sequence[Part], *, name: str) -> None:
        if not parts:
            raise InputError(f"{name}: no file to score")
        self.path = Path(name)
        self.name = name
        self.parts = list(parts)
        self.size_bytes = 0
        self._part_bytes: list[int] = []
        kinds: list[str] = []
        columns: list[str] | None = None
        for part in self.parts:
            source = part.open()
            try:
                own = list(source.columns)
                keys = [key for key, _ in part.partition]
                if clash := sorted(set(own) & set(keys)):
                    raise InputError(
                        f"{part.path}: column {clash[0]!r} is also a partition directory ({clash[0]}=...) above it"
                    )
                if columns is None:
                    columns, first = own + keys, part.path
                elif set(own + keys) != set(columns):
                    raise InputError(f"{part.path}: {_column_difference(own + keys, columns, first)}")
                self._part_bytes.append(source.size_bytes)
                if source.kind not in kinds:
                    kinds.append(source.kind)
            finally:
                _close(source)
        self.columns = columns or []
        self.size_bytes = sum(self._part_bytes)
        self.kind = ", ".join(kinds)
        self._read: list[tuple[int, Source]] = []  # (first row across the parts, source) of each part read
        self._bytes_done = 0
        self._current: Source | None = None

    def progress(self) -> tuple[float, float]:
        done = float(self._bytes_done)
        if self._current is not None:
            current, total = self._current.progress()
            if total > 0:
                done += self._current.size_bytes * min(1.0, current / total)
        return done, float(self.size_bytes)

    def _locate(self, row: int) -> tuple[Source, int] | None:
        index = bisect.bisect_right([start for start, _ in self._read], row) - 1
        if index < 0:
            return None
        start, source = self._read[index]
        return source, row - start

    def where(self, row: int | None = None, column: str | None = None) -> str:
        """``FILE: row R, column 'C'`` of the file holding the ``row``-th row of the data set (0-based)."""
        located = self._locate(row) if row is not None else None
        if located is not None:
            source, local = located
            return source.where(local, column)
        return super().where(None, column)

    def cell_text(self, row: int, column: str) -> str | None:
        located = self._locate(row)
        return located[0].cell_text(located[1], column) if located is not None else None

    def missing_value(self, row: int, column: str) -> InputError:
        located = self._locate(row)
        if located is None:
            return super().missing_value(row, column)
        return located[0].missing_value(located[1], column)

    def _batches(
        self,
        numeric: Sequence[str],
        labels: str | None,
        batch_rows: int,
        known_labels: Sequence[str] | None,
        lines: bool,
    ) -> Iterator[tuple[int, Any]]:
        self._read, self._bytes_done, start = [], 0, 0
        for part, size in zip(self.parts, self._part_bytes, strict=True):
            source = part.open()
            self._current = source
            self._read.append((start, source))
            try:
                if set(source.columns) | {key for key, _ in part.partition} != set(self.columns):
                    raise InputError(f"{part.path}: its columns changed while the data set was read")
                constants = dict(part.partition)
                own_numeric = [name for name in numeric if name not in constants]
                own_labels = labels if labels not in constants else None
                added = [name for name in [*numeric, labels] if name is not None and name in constants]
                end = 0
                for first_row, item in source.batches(
                    own_numeric, own_labels, batch_rows, known_labels, lines and not added
                ):
                    if added:
                        item = _with_constants(source, item, first_row, added, constants, numeric)
                    yield start + first_row, item
                    end = first_row + _item_rows(item)
            finally:
                _close(source)
                self._current = None
            self._bytes_done += size
            start += end


def _close(source: Source) -> None:
    if isinstance(source, ParquetSource):
        source.close()


def _column_difference(columns: Sequence[str], expected: Sequence[str], first: Path) -> str:
    missing = [name for name in expected if name not in set(columns)]
    extra = [name for name in columns if name not in set(expected)]
    parts = []
    if missing:
        parts.append(f"lacks {_names(missing)}")
    if extra:
        parts.append(f"has {_names(extra)}, which the first has not")
    return f"the files of a data set must have the columns of the first, {first}; this one {' and '.join(parts)}"


def _names(names: Sequence[str]) -> str:
    shown = ", ".join(map(repr, names[:5])) + (f", ... ({len(names)} in all)" if len(names) > 5 else "")
    return ("column " if len(names) == 1 else "columns ") + shown


def _with_constants(
    source: Source,
    item: Any,
    first_row: int,
    added: list[str],
    constants: dict[str, str | None],
    numeric: Sequence[str],
) -> Any:
    """``item`` (a table or a :class:`MatrixBatch`) with the partition columns ``added``, constant over its rows."""
    pa = _pyarrow()
    n_rows = _item_rows(item)
    values: dict[str, Any] = {}
    for name in added:
        value = constants[name]
        if name in numeric:
            if value is None:
                raise InputError(
                    f"{source.where(first_row, name)}: the value is missing (the directory {name}={_HIVE_NULL})"
                )
            try:
                number = float(value)
            except ValueError:
                raise InputError(
                    f"{source.where(first_row, name)}: {value!r} is not a number (the directory {name}={value})"
                ) from None
            values[name] = pa.repeat(pa.scalar(number, pa.float64()), n_rows)
        else:
            if value is None:
                raise InputError(
                    f"{source.where(first_row, name)}: the label is missing (the directory {name}={_HIVE_NULL})"
                )
            values[name] = pa.repeat(pa.scalar(value, pa.string()), n_rows)
    if isinstance(item, MatrixBatch):
        return _ConstantColumns(item, values)
    for name, array in values.items():
        item = item.append_column(name, array)
    return item


class _ConstantColumns(MatrixBatch):
    """A :class:`MatrixBatch` with more columns, each one value repeated (partition columns)."""

    def __init__(self, batch: MatrixBatch, values: dict[str, Any]) -> None:
        self.batch, self.values, self.num_rows = batch, values, batch.num_rows

    def numbers(self, names: Sequence[str]) -> np.ndarray:
        own = [name for name in names if name not in self.values]
        matrix = self.batch.numbers(own) if own else np.empty((self.num_rows, 0))
        if len(own) == len(names):
            return matrix
        out = np.empty((self.num_rows, len(names)))
        index = {name: k for k, name in enumerate(own)}
        for j, name in enumerate(names):
            out[:, j] = self.values[name].to_numpy() if name in self.values else matrix[:, index[name]]
        return out

    def column(self, name: str) -> Any:
        if name in self.values:
            return _pyarrow().chunked_array([self.values[name]])
        return self.batch.column(name)


def split_parts(parts: Sequence[Part], *, target_bytes: int = 128 << 20) -> list[Part]:
    """The parts as units of parallel work: a Parquet file of several row groups as runs of them.

    A run closes once its row groups hold ``target_bytes`` of uncompressed data, so each unit
    is at least one row group and about ``target_bytes``; a file in one run stays whole. Other
    formats stay whole files (a CSV file is read from its header to its end; its rows and lines
    are counted from the start, which names them in messages).
    """
    units: list[Part] = []
    for part in parts:
        if part.file_format != "parquet" or part.row_groups is not None:
            units.append(part)
            continue
        source = part.open()
        try:
            metadata = source._file.metadata
            sizes = [metadata.row_group(k).total_byte_size for k in range(metadata.num_row_groups)]
        finally:
            _close(source)
        runs, start, size = [], 0, 0
        for k, group_bytes in enumerate(sizes):
            size += group_bytes
            if size >= target_bytes or k == len(sizes) - 1:
                runs.append((start, k + 1))
                start, size = k + 1, 0
        if len(runs) <= 1:
            units.append(part)
        else:
            units += [dataclasses.replace(part, row_groups=run) for run in runs]
    return units


class FrameSource(Source):
    """A pandas DataFrame (a partition of a Dask DataFrame) as a source: ``name: row R, column 'C'``.

    Rows are counted from 1 within the frame; column names are the frame's, as text.
    """

    kind = "DataFrame"

    def __init__(self, frame: Any, name: str) -> None:
        self.path = Path(name)
        self.name = name
        self.frame = frame
        self.columns = [str(column) for column in frame.columns]
        _check_unique(self.path, self.columns)
        self.size_bytes = 0
        self._rows = len(frame)
        self._done = 0

    def where(self, row: int | None = None, column: str | None = None) -> str:
        parts = ([self._row_text(row)] if row is not None else []) + ([f"column {column!r}"] if column else [])
        return self.name + (": " + ", ".join(parts) if parts else "")

    def progress(self) -> tuple[float, float]:
        return float(self._done), float(self._rows)

    def _tables(self, wanted: list[str], labels: str | None, batch_rows: int) -> Iterator[Any]:
        pa = _pyarrow()
        frame = self.frame
        frame = frame.set_axis(self.columns, axis=1) if list(frame.columns) != self.columns else frame
        for start in range(0, len(frame), batch_rows):
            piece = frame.iloc[start : start + batch_rows][wanted]
            try:
                table = pa.Table.from_pandas(piece, preserve_index=False)
            except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
                message = re.sub(r"\s+", " ", str(error)).strip()
                raise InputError(f"{self.where()}: rows {start + 1} on cannot be read ({message})") from None
            yield table


def parts_of(source: Source) -> list[Part]:
    """The files of ``source`` as :class:`Part` objects: a :class:`MultiSource`'s parts, or the one file."""
    if isinstance(source, MultiSource):
        return list(source.parts)
    if isinstance(source, CsvSource):
        return [Part(source.path, "csv", source.delimiter)]
    if isinstance(source, ParquetSource):
        return [Part(source.path, "parquet")]
    if isinstance(source, NumpySource):
        return [Part(source.path, source.kind)]
    raise TypeError(f"a {type(source).__name__} is not made of files")
