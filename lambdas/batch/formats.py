"""Chunked readers and writers for the batch formats: CSV, gzip CSV, JSON Lines and Parquet.

Pure I/O on file objects (no AWS): the caller hands in an open input stream and output sinks.
Readers yield bounded chunks, so memory depends on the chunk size, never on the file size:
CSV is parsed by pyarrow's streaming reader in blocks of ``block_bytes``, Parquet one batch of
``chunk_rows`` at a time, JSON Lines ``chunk_rows`` lines at a time.

CSV values are kept as the text the file had (every column is read as a string, and only an
empty cell is null), so extra columns come out as they went in and the rejected file shows what
was sent.
"""

from __future__ import annotations

import bisect
import codecs
import csv
import gzip
import io
import json
import math
import re
import struct
import tempfile
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO, Any, Protocol, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from numpy.typing import NDArray

from lambdas.batch.layout import FileFormat
from lambdas.scoring.card import BATCH_OUTPUT_COLUMNS
from lambdas.scoring.runtime import (
    REPEATED_KEY_CODE,
    REPEATED_KEY_MESSAGE,
    RepeatedKeyError,
    repeated_key_paths,
    unique_keys_object,
)

# ~4 MiB of CSV is ~63k credit_risk rows. The runtime scores a chunk's rows in locality order, which
# pays more the more rows it can sort: 4 MiB blocks were ~9 % faster than 2 MiB for ~55 MB more peak
# RSS (300k rows, two runs each); 8 MiB were no faster and peaked ~100 MB higher again.
DEFAULT_CSV_BLOCK_BYTES = 4 * 1024 * 1024
DEFAULT_CHUNK_ROWS = 60_000
# JSON Lines: a line longer than this makes the file unreadable (one object per line is expected; a
# whole file on one line would otherwise be held in memory at once), and a chunk ends at
# DEFAULT_CHUNK_ROWS lines or this much text, whichever comes first, so memory stays bounded.
JSON_LINE_MAX_CHARS = 1024 * 1024
JSON_CHUNK_MAX_CHARS = 4 * 1024 * 1024
PARQUET_BUFFER_BYTES = 8 * 1024 * 1024
# Columns the batch adds to every scored row (an input column of the same name is replaced).
OUTPUT_COLUMNS = BATCH_OUTPUT_COLUMNS  # the card refuses a feature of one of these names
REJECTED_FIXED_COLUMNS = ("row_number", "error_code", "error")
JSONL_RECORD_COLUMN = "record"
# CSV only: the full text of a line that could not be split into the header's fields.
RAW_LINE_COLUMN = "raw_line"
# An input column whose name is one of the rejected file's own columns gets this prefix there.
COLLISION_PREFIX = "input_"
# First bytes of files that are not text, for a helpful error when one is named .csv or .jsonl.
GZIP_MAGIC = b"\x1f\x8b"
PARQUET_MAGIC = b"PAR1"
ZIP_MAGIC = b"PK\x03\x04"  # an Excel .xlsx workbook is a zip archive
OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # an Excel 97-2003 .xls workbook
UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)  # Excel's "Unicode Text" export
SAVE_AS_CSV = 'save the sheet as "CSV UTF-8 (comma delimited)"'
# CSV outputs only: spreadsheets run a cell starting with one of these as a formula (OWASP's "CSV
# injection"), so such a text cell is written with a leading "'" unless it is a plain number (-3.5).
FORMULA_TRIGGERS = "=+-@\t\r"
_PLAIN_NUMBER = r"[ \t]*[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?[ \t]*"
_PLAIN_NUMBER_RE = re.compile(_PLAIN_NUMBER)
_TRIGGER_BYTES = np.zeros(256, dtype=np.bool_)
_TRIGGER_BYTES[list(FORMULA_TRIGGERS.encode())] = True


class UnreadableFileError(Exception):
    """The file as a whole cannot be scored; retrying will not help. ``code`` goes to the manifest."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True)
class RejectedRow:
    row_number: int
    error_code: str
    error: str
    values: dict[str, str]
    raw_line: str = ""  # CSV lines with the wrong number of fields: their text, in full


@dataclass
class Chunk:
    """A block of rows read from a file.

    Exactly one of ``table`` (CSV, Parquet) or ``records`` (JSON Lines) holds the rows.
    ``row_numbers`` are 1-based data-row numbers (CSV: after the header; JSON Lines: line number).
    ``pre_rejected`` maps a row index to the errors found while reading (JSON Lines rows that
    miss a feature key), before the model's validation runs.
    """

    row_numbers: NDArray[np.int64]
    table: pa.Table | None = None
    records: list[dict[str, Any]] | None = None
    raw_lines: list[str] | None = None
    pre_rejected: dict[int, list[tuple[str, str, str]]] = field(default_factory=dict)

    @property
    def n_rows(self) -> int:
        return len(self.row_numbers)

    def column_values(self, name: str) -> Sequence[object] | NDArray[Any]:
        if self.table is not None:
            return self.table.column(name)  # type: ignore[no-any-return]
        assert self.records is not None
        # One object per row, also when a JSON value is a list: as a list of lists (every row holding
        # a one-element list, or lists of one length) numpy would make the column 2-D.
        return np.fromiter((record.get(name) for record in self.records), dtype=object, count=self.n_rows)

    def original_values(self, indices: Sequence[int]) -> list[dict[str, str]]:
        """The rows' values as text, as the rejected file shows them."""
        if self.table is None:
            assert self.raw_lines is not None
            return [{JSONL_RECORD_COLUMN: self.raw_lines[index]} for index in indices]
        # One take for all the rows, not a scalar per cell (~6 us each: a wide file's rejected rows
        # took 11x as long as scoring them).
        taken = _selectable(self.table).take(pa.array(indices, pa.int64()))
        columns = [(name, taken.column(index).to_pylist()) for index, name in enumerate(taken.column_names)]
        return [{name: _text(values[row]) for name, values in columns} for row in range(len(indices))]


@dataclass
class ChunkRead:
    chunk: Chunk
    malformed: list[RejectedRow]


class TableSource(Protocol):
    @property
    def columns(self) -> list[str]:
        """The header's column names as the file has them (JSON Lines has no header: [])."""
        ...

    @property
    def schema(self) -> pa.Schema | None:
        """The Arrow schema of every chunk's table (None for JSON Lines, whose chunks are records)."""
        ...

    def chunks(self) -> Iterator[ChunkRead]: ...


def open_source(
    file_format: FileFormat,
    stream: IO[bytes],
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    csv_block_bytes: int = DEFAULT_CSV_BLOCK_BYTES,
) -> TableSource:
    """Open a chunked reader; Parquet needs a seekable stream (a local file), the others do not."""
    if file_format == "csv":
        return CsvSource(stream, block_bytes=csv_block_bytes)
    if file_format == "csv.gz":
        return CsvSource(_GunzipStream(stream), block_bytes=csv_block_bytes)
    if file_format == "jsonl":
        return JsonLinesSource(stream, chunk_rows=chunk_rows)
    return ParquetSource(stream, chunk_rows=chunk_rows)


# ----------------------------------------------------------------------------------------------
# Readers
# ----------------------------------------------------------------------------------------------


class _GunzipStream(io.RawIOBase):
    """Decompresses on the fly and turns a corrupt or truncated gzip into ``UnreadableFileError``."""

    def __init__(self, compressed: IO[bytes]) -> None:
        self._gzip = gzip.GzipFile(fileobj=compressed, mode="rb")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        try:
            data = self._gzip.read(len(buffer))
        except (gzip.BadGzipFile, EOFError, zlib.error) as error:
            raise UnreadableFileError(
                "corrupt_gzip", f"the gzip stream cannot be decompressed: {error}"
            ) from error
        buffer[: len(data)] = data
        return len(data)


class _RawStream(io.RawIOBase):
    """Adapts any object with ``read(n)`` (e.g. botocore's StreamingBody) to ``io.BufferedReader``."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._stream.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


class CsvSource:
    """Streaming CSV: the header is read here, the rest by pyarrow with every column as text.

    Leading blank lines are skipped; the first other line is the header, whose names are kept as
    written (features are matched ignoring surrounding spaces, see ``scoring.feature_column_names``).
    Quoted values may span lines. Rows with the wrong number of fields do not stop the file: they
    come back as ``malformed`` rejected rows with their row number and full text.
    """

    def __init__(self, stream: IO[bytes] | io.RawIOBase, *, block_bytes: int) -> None:
        raw: io.RawIOBase = stream if isinstance(stream, io.RawIOBase) else _RawStream(stream)
        self._buffered = io.BufferedReader(raw, buffer_size=1024 * 1024)
        if (what := _not_text(self._buffered.peek(len(OLE_MAGIC))[: len(OLE_MAGIC)], "CSV")) is not None:
            raise UnreadableFileError("not_utf8", what)
        # The BOM is skipped before the header is scanned: read as part of the first name, it would
        # hide that name's opening quote (and a line break quoted in it would end the header).
        if self._buffered.peek(len(codecs.BOM_UTF8)).startswith(codecs.BOM_UTF8):
            self._buffered.read(len(codecs.BOM_UTF8))
        header_line = _read_header_record(self._buffered, block_bytes)
        blank_bytes = 0
        while header_line and not header_line.strip():
            # Bounded like the header: a gzip bomb of blank lines is gigabytes, searched byte by byte.
            blank_bytes += len(header_line)
            if blank_bytes > block_bytes:
                raise UnreadableFileError(
                    "not_a_table",
                    f"no header line in the first {block_bytes} bytes, only blank lines: the file is "
                    "padded with blank lines or is not CSV text",
                )
            header_line = _read_header_record(self._buffered, block_bytes)
        if not header_line:
            raise UnreadableFileError("empty_file", "the file is empty (no header line)")
        try:
            header_text = header_line.decode("utf-8")
        except UnicodeDecodeError as error:
            raise UnreadableFileError("not_utf8", f"the header line is not UTF-8 text: {error}") from error
        try:
            header = next(csv.reader([header_text]))
        except csv.Error as error:
            raise UnreadableFileError("not_a_table", f"the header line is not CSV: {error}") from error
        self._columns = header
        _check_unique(self._columns)
        self._block_bytes = block_bytes
        self._malformed = _MalformedRows(piece_bytes=block_bytes)
        # What _on_invalid_row raised: pyarrow prints it and fails the file with a parse error.
        self._handler_error: Exception | None = None

    @property
    def columns(self) -> list[str]:
        return list(self._columns)

    @property
    def schema(self) -> pa.Schema:
        return pa.schema([(name, pa.string()) for name in self._columns])

    def _on_invalid_row(self, row: Any) -> str:
        # pyarrow numbers the records it sees (blank lines skipped, quoted newlines inside one
        # record); it sees the file after the header, so its number is our data-row number.
        number = int(row.number) if row.number is not None else -1
        try:
            self._malformed.push(number, int(row.expected_columns), int(row.actual_columns), str(row.text))
        except Exception as error:
            self._handler_error = error
            raise
        return "skip"

    def chunks(self) -> Iterator[ChunkRead]:
        malformed = self._malformed
        try:
            reader = self._open_reader()
            while reader is not None:  # None: nothing after the header, no data rows
                try:
                    batch = reader.read_next_batch()
                except StopIteration:
                    break
                except UnicodeDecodeError as error:
                    raise UnreadableFileError("not_utf8", f"the file is not UTF-8 text: {error}") from error
                except pa.ArrowInvalid as error:
                    raise self._error(error) from error
                # The rejected file is written in row order: malformed rows before this batch's first
                # row go first, those among its rows with it, those after it (pyarrow may report the
                # next block's while returning this one) once no later good row can precede them.
                row_numbers = malformed.good_row_numbers(batch.num_rows)
                if batch.num_rows:
                    yield from malformed.pieces(through=int(row_numbers[0]))
                    among: list[RejectedRow] = []
                    while piece := malformed.pop(int(row_numbers[-1])):  # at most a block's rows
                        among += piece
                    table = pa.Table.from_batches([batch])
                    yield ChunkRead(Chunk(row_numbers=row_numbers, table=table), among)
                yield from malformed.pieces(through=malformed.settled)
            yield from malformed.pieces(through=None)
        finally:
            malformed.close()

    def _open_reader(self) -> pa_csv.CSVStreamingReader | None:
        if not self._buffered.peek(1):
            return None
        try:
            return pa_csv.open_csv(
                self._buffered,
                read_options=pa_csv.ReadOptions(
                    column_names=self._columns, block_size=self._block_bytes, use_threads=False
                ),
                parse_options=pa_csv.ParseOptions(
                    invalid_row_handler=self._on_invalid_row,
                    # Quoted values may hold line breaks; without this a block boundary inside one
                    # makes a valid file unreadable.
                    newlines_in_values=True,
                ),
                convert_options=pa_csv.ConvertOptions(
                    column_types={name: pa.string() for name in self._columns},
                    # Only an unquoted empty cell is null: NA, NULL, NaN, ... stay the text they are.
                    null_values=[""],
                    strings_can_be_null=True,
                    quoted_strings_can_be_null=False,
                ),
            )
        except UnicodeDecodeError as error:
            raise UnreadableFileError("not_utf8", f"the file is not UTF-8 text: {error}") from error
        except pa.ArrowInvalid as error:
            if "Empty CSV file" in str(error):  # only blank lines after the header
                return None
            raise self._error(error) from error

    def _error(self, error: pa.ArrowInvalid) -> Exception:
        if self._handler_error is not None:  # our fault (e.g. /tmp full), not the file's: retried
            return self._handler_error
        return _csv_error(error, self._block_bytes, self._columns)


def _read_header_record(buffered: io.BufferedReader[io.RawIOBase], limit: int) -> bytes:
    """The next CSV record's bytes, its line break included: up to the first LF, CRLF or lone CR
    (pyarrow reads all three) outside a quoted value; b"" at the end of the file.

    Read byte by byte, never past the record (pyarrow reads the rest); a record longer than
    ``limit`` bytes makes the file unreadable instead of being held in memory whole.
    """
    record = bytearray()
    quoted = False  # inside a quoted value
    field_start = True  # a quote opens a quoted value only as a field's first character
    closed = False  # just after a quoted value's closing quote: '""' is one escaped quote
    while len(record) < limit:
        byte = buffered.read(1)
        if not byte:
            return bytes(record)
        record += byte
        if quoted:
            if byte == b'"':
                quoted, closed = False, True
            continue
        if byte == b'"' and (field_start or closed):
            quoted = True
        elif byte == b",":
            field_start, closed = True, False
            continue
        elif byte in (b"\n", b"\r"):
            if byte == b"\r" and buffered.peek(1)[:1] == b"\n":
                record += buffered.read(1)
            return bytes(record)
        field_start = closed = False
    raise UnreadableFileError(
        "not_a_table",
        f"no line break in the first {limit} bytes: the header line is longer than a block,"
        " a quote in it is never closed, or the file is not CSV text",
    )


def _not_text(start: bytes, text: str) -> str | None:
    """What a file is that starts with these bytes and is no UTF-8 text, and what to do; else None."""
    if start.startswith(GZIP_MAGIC):
        if text == "CSV":
            return "the data is gzip-compressed, not CSV text: name a gzip CSV .csv.gz (compressed once)"
        return f"the data is gzip-compressed, not {text} text: only CSV is read compressed (.csv.gz)"
    if start.startswith(PARQUET_MAGIC):
        return f"the file is Parquet, not {text} text: name it .parquet"
    advice = SAVE_AS_CSV if text == "CSV" else "write it as UTF-8 text, one JSON object per line"
    if start.startswith(ZIP_MAGIC):
        return f"the file is a zip archive (an Excel .xlsx workbook?), not {text} text: {advice}"
    if start.startswith(OLE_MAGIC):
        return f"the file is an Excel 97-2003 workbook (.xls), not {text} text: {advice}"
    if start.startswith(UTF16_BOMS):
        return f'the file is UTF-16 text (Excel\'s "Unicode Text" export), not UTF-8: {advice}'
    return None


# pyarrow's words for a cell that is not UTF-8, and for a row its invalid-row handler never saw.
_ARROW_NOT_UTF8 = re.compile(
    r"In CSV column #(\d+): Row #(\d+): CSV conversion error to string: invalid UTF8"
)
_ARROW_FIELD_COUNT = re.compile(r"Row #(\d+): Expected \d+ columns, got \d+")
NOT_UTF8_HINT = f"(a Windows-1252 or Latin-1 export? {SAVE_AS_CSV})"


def _csv_error(error: pa.ArrowInvalid, block_bytes: int, columns: Sequence[str]) -> UnreadableFileError:
    if match := _ARROW_NOT_UTF8.search(str(error)):
        index, row = int(match[1]), int(match[2])  # pyarrow's row: our data-row number
        column = repr(columns[index]) if index < len(columns) else f"#{index + 1}"
        return UnreadableFileError(
            "not_utf8", f"the file is not UTF-8 text: data row {row}, column {column} {NOT_UTF8_HINT}"
        )
    if "UTF8" in str(error):
        return UnreadableFileError("not_utf8", f"the file is not UTF-8 text {NOT_UTF8_HINT}: {error}")
    if match := _ARROW_FIELD_COUNT.search(str(error)):
        # The invalid-row handler takes every such row; pyarrow hands it the line as text and fails
        # the file instead when the line is not UTF-8 (the handler's own errors are raised as they are).
        return UnreadableFileError(
            "not_utf8",
            f"the file is not UTF-8 text: data row {match[1]}, which also has another number of fields"
            f" than the header {NOT_UTF8_HINT}: {error}",
        )
    if "straddl" in str(error):  # pyarrow's words for a row that does not fit in one block
        return UnreadableFileError(
            "not_a_table",
            f"a quoted value is never closed, or one row is longer than {block_bytes} bytes: {error}",
        )
    return UnreadableFileError("not_a_table", f"the CSV cannot be parsed: {error}")


class _MalformedRows:
    """CSV rows with the wrong field count, in row order, until their place in the rejected file is
    known, and the numbers they take from the well-formed rows.

    pyarrow's reader returns no batch until a block holds a well-formed row, so in a file whose rows
    all have a field too many (a header one name short) every row is reported before the reader
    returns. Their text is therefore kept in a temporary file past ``piece_bytes`` (held as Python
    objects, each had cost ~10 times its text), their numbers as runs of consecutive numbers, and
    they are handed on in pieces of about ``piece_bytes``.
    """

    # Per row: number, expected and actual field counts, byte length of the line's UTF-8 text.
    _RECORD = struct.Struct("<qiiI")

    def __init__(self, *, piece_bytes: int) -> None:
        self._spool = tempfile.SpooledTemporaryFile(max_size=piece_bytes)  # noqa: SIM115 (see close())
        self._piece_bytes = piece_bytes
        self._read_at = 0
        self._write_at = 0
        # Every data row numbered up to ``settled`` is placed: a good row already returned, or a
        # malformed one. ``_runs`` holds the malformed numbers after it as ascending [first, last].
        self.settled = 0
        self._runs: list[list[int]] = []

    def push(self, number: int, expected: int, actual: int, text: str) -> None:
        encoded = text.encode("utf-8", "surrogatepass")
        if self._spool.tell() != self._write_at:  # after a pop (a seek per row would cost ~5 us)
            self._spool.seek(self._write_at)
        self._spool.write(self._RECORD.pack(number, expected, actual, len(encoded)) + encoded)
        self._write_at += self._RECORD.size + len(encoded)
        if number <= self.settled:  # unknown (-1): placed where it was reported
            return
        if self._runs and number == self._runs[-1][1] + 1:
            self._runs[-1][1] = number
        else:
            bisect.insort(self._runs, [number, number])

    def good_row_numbers(self, count: int) -> NDArray[np.int64]:
        """Data-row numbers of the next ``count`` well-formed rows: those not taken by malformed rows."""
        parts: list[NDArray[np.int64]] = []
        next_number, remaining = self.settled + 1, count
        for first, last in self._runs:
            if not remaining:
                break
            take = min(first - next_number, remaining)
            parts.append(np.arange(next_number, next_number + take, dtype=np.int64))
            next_number, remaining = next_number + take, remaining - take
            if remaining:
                next_number = last + 1
        parts.append(np.arange(next_number, next_number + remaining, dtype=np.int64))
        numbers = np.concatenate(parts)
        if count:
            self.settled = int(numbers[-1])
        self._runs = [run for run in self._runs if run[1] > self.settled]
        # Malformed rows right after the last good row come before any later good row.
        while self._runs and self._runs[0][0] <= self.settled + 1:
            self.settled = max(self.settled, self._runs.pop(0)[1])
        return numbers

    def pop(self, through: int | None) -> list[RejectedRow]:
        """The first rows numbered at most ``through`` (None: any), about ``piece_bytes`` of them."""
        self._spool.seek(self._read_at)
        data = self._spool.read(
            min(max(self._piece_bytes, self._RECORD.size), self._write_at - self._read_at)
        )
        rows: list[RejectedRow] = []
        used = 0
        while used + self._RECORD.size <= len(data):
            number, expected, actual, size = self._RECORD.unpack_from(data, used)
            if through is not None and number > through:
                break
            end = used + self._RECORD.size + size
            if end > len(data):
                if rows:  # the rest of this one comes with the next piece
                    break
                data += self._spool.read(end - len(data))  # one line longer than a piece
            text = data[used + self._RECORD.size : end].decode("utf-8", "surrogatepass")
            message = f"expected {expected} fields, got {actual} (the line is in {RAW_LINE_COLUMN})"
            rows.append(RejectedRow(number, "wrong_field_count", message, {}, raw_line=text))
            used = end
        self._read_at += used
        if self._read_at == self._write_at:  # all handed on: start the file again
            self._spool.seek(0)
            self._spool.truncate()
            self._read_at = self._write_at = 0
        return rows

    def pieces(self, *, through: int | None) -> Iterator[ChunkRead]:
        """The rows numbered at most ``through`` (None: all), as reads with no table rows."""
        while rows := self.pop(through):
            yield ChunkRead(Chunk(row_numbers=np.empty(0, dtype=np.int64), records=[]), rows)

    def close(self) -> None:
        self._spool.close()


class ParquetSource:
    def __init__(self, stream: IO[bytes], *, chunk_rows: int) -> None:
        try:
            # Not pre-buffered (pyarrow then holds every row group read: 678 MB of Parquet in 120 row
            # groups grew peak RSS by 732 MiB) and column chunks read through a buffer, not whole (one
            # row group may be the whole file). Both ~100-140 MiB this way, as fast.
            self._file = pq.ParquetFile(stream, buffer_size=PARQUET_BUFFER_BYTES, pre_buffer=False)
        except (pa.ArrowInvalid, OSError) as error:
            raise UnreadableFileError("not_a_table", f"not a readable Parquet file: {error}") from error
        self._columns = list(self._file.schema_arrow.names)
        _check_unique(self._columns)
        self._chunk_rows = chunk_rows

    @property
    def columns(self) -> list[str]:
        return list(self._columns)

    @property
    def schema(self) -> pa.Schema:
        return self._file.schema_arrow

    def chunks(self) -> Iterator[ChunkRead]:
        rows_before = 0
        # One thread: the columns decoded at once each hold their pages (~40 MiB more, no faster here).
        batches = self._file.iter_batches(batch_size=self._chunk_rows, use_threads=False)
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                break
            except (pa.ArrowInvalid, OSError) as error:
                raise UnreadableFileError(
                    "not_a_table", f"the Parquet data cannot be read: {error}"
                ) from error
            numbers = np.arange(rows_before + 1, rows_before + batch.num_rows + 1, dtype=np.int64)
            rows_before += batch.num_rows
            yield ChunkRead(Chunk(row_numbers=numbers, table=pa.Table.from_batches([batch])), [])


class JsonLinesSource:
    """One JSON object per line; blank lines are skipped, other bad lines are rejected rows.

    JSON Lines has no header: each line is judged alone (a line without a feature key is a
    rejected row naming it). The file as a whole is "not a table" only when its first non-blank
    line is not a JSON object.
    """

    def __init__(self, stream: IO[bytes], *, chunk_rows: int) -> None:
        raw: io.RawIOBase = stream if isinstance(stream, io.RawIOBase) else _RawStream(stream)
        buffered = io.BufferedReader(raw)
        if (what := _not_text(buffered.peek(len(OLE_MAGIC))[: len(OLE_MAGIC)], "JSON Lines")) is not None:
            raise UnreadableFileError("not_utf8", what)
        self._lines = io.TextIOWrapper(buffered, encoding="utf-8-sig", newline=None)
        self._chunk_rows = chunk_rows
        self._decode, self._non_finite_read = _row_decoder()
        self._line_number = 0
        self._first: tuple[int, str] | None = None
        for number, line in self._numbered_lines():
            if isinstance(problem := _json_object(line), str):
                raise UnreadableFileError(
                    "not_a_table", f"line {number} is not a JSON object ({problem}): {line[:80]!r}"
                )
            self._first = (number, line)
            break
        if self._first is None:
            raise UnreadableFileError("empty_file", "the file has no JSON lines")
        self._required: list[str] = []

    @property
    def columns(self) -> list[str]:
        return []

    @property
    def schema(self) -> None:
        return None

    def require(self, names: Sequence[str]) -> None:
        """Feature keys every row must have; a row without one is rejected as 'missing'."""
        self._required = list(names)

    def _numbered_lines(self) -> Iterator[tuple[int, str]]:
        while True:
            try:
                # Never more than a bounded line, its line break included (newline=None gives "\n").
                line = self._lines.readline(JSON_LINE_MAX_CHARS + 1)
            except UnicodeDecodeError as error:
                raise UnreadableFileError(
                    "not_utf8", f"line {self._line_number + 1} is not UTF-8: {error}"
                ) from error
            if not line:
                return
            self._line_number += 1
            if len(line) > JSON_LINE_MAX_CHARS and not line.endswith("\n"):  # cut off: longer still
                raise UnreadableFileError(
                    "not_a_table",
                    f"line {self._line_number} is longer than {JSON_LINE_MAX_CHARS:,} characters: JSON Lines "
                    "holds one object per line (a JSON array or a file on one line is not JSON Lines)",
                )
            stripped = line.strip()
            if stripped:
                yield self._line_number, stripped

    def chunks(self) -> Iterator[ChunkRead]:
        assert self._first is not None
        pending: list[tuple[int, str]] = [self._first]
        pending_chars = len(self._first[1])
        for numbered in self._numbered_lines():
            pending.append(numbered)
            pending_chars += len(numbered[1])
            if len(pending) >= self._chunk_rows or pending_chars >= JSON_CHUNK_MAX_CHARS:
                yield self._chunk(pending)
                pending, pending_chars = [], 0
        if pending:
            yield self._chunk(pending)

    def _chunk(self, lines: list[tuple[int, str]]) -> ChunkRead:
        numbers: list[int] = []
        records: list[dict[str, Any]] = []
        raw_lines: list[str] = []
        pre_rejected: dict[int, list[tuple[str, str, str]]] = {}
        malformed: list[RejectedRow] = []
        decode, non_finite_read = self._decode, self._non_finite_read
        for number, line in lines:
            if non_finite_read:
                non_finite_read.clear()
            repeats = False
            try:
                record = _json_object(line, decode)
            except RepeatedKeyError:
                # Rare: json's own reading (each repeated key's last value) for the row's other checks.
                record, repeats = _json_object(line), True
            if isinstance(record, str):
                malformed.append(
                    RejectedRow(
                        number,
                        "not_json_object",
                        f"the line is not a JSON object ({record})",
                        {JSONL_RECORD_COLUMN: line},
                    )
                )
                continue
            errors = [
                (name, "missing", f"{name} is required") for name in self._required if name not in record
            ]
            if repeats:
                errors = _repeated_key_errors(line) + errors
            # Only a line whose parse read a NaN or an infinity holds one (json's own decoder, for a
            # repeated key, notes none): the usual line's values are not searched.
            if non_finite_read or repeats:
                errors += [
                    (name, "not_finite", f"{name} holds NaN or Infinity, which JSON does not allow")
                    for name in _non_finite_fields(record)
                ]
            if errors:
                pre_rejected[len(records)] = errors
            numbers.append(number)
            records.append(record)
            raw_lines.append(line)
        chunk = Chunk(
            row_numbers=np.asarray(numbers, dtype=np.int64),
            records=records,
            raw_lines=raw_lines,
            pre_rejected=pre_rejected,
        )
        return ChunkRead(chunk, malformed)


def _repeated_key_errors(line: str) -> list[tuple[str, str, str]]:
    """A duplicate_key error for each key the line repeats within one object (json alone would have
    kept its last value; another reader of the file may keep the first), named where it is."""
    try:
        paths = repeated_key_paths(line)
    except RecursionError:
        # Only within a level or two of json's own limit: the decoder's hook adds a frame per object.
        return [(JSONL_RECORD_COLUMN, "not_json_object", "nested too deeply to check for repeated keys")]
    return [(path, REPEATED_KEY_CODE, f"{path} {REPEATED_KEY_MESSAGE}") for path in paths]


def _json_object(line: str, decode: Callable[[str], Any] = json.loads) -> dict[str, Any] | str:
    """The line's JSON object, or why it is not one (``decode`` may also raise RepeatedKeyError)."""
    try:
        value = decode(line)
    except ValueError as error:
        # JSONDecodeError, and also an integer of more than 4300 digits (Python's int limit).
        return f"not valid JSON: {error}"
    except RecursionError:
        return "not valid JSON: nested too deeply"
    if isinstance(value, dict):
        return value
    return f"a JSON {_JSON_KINDS.get(type(value), 'value')}, not an object"


def _row_decoder() -> tuple[Callable[[str], Any], list[str]]:
    """The decoder JSON Lines rows are read with, and the list it appends each NaN or infinity it reads to.

    A key repeated within one object raises RepeatedKeyError. Python's json reads the tokens NaN,
    Infinity and -Infinity (``parse_constant``) and numbers beyond a double (``parse_float``: 1e999,
    400 digits and a fraction) as floats JSON has no text for: its hooks note each one, so only a line
    that holds one has its values searched for the keys to name. Letters inside a string never reach
    them. Built once per file: json.loads(line, object_pairs_hook=...) would build a decoder per line
    (measured: +55 % on the parse, against +11 % for the repeated-key hook; docs/batch.md).
    """
    read: list[str] = []

    def constant(token: str) -> float:
        read.append(token)
        return float(token)  # float("NaN"), float("Infinity"), float("-Infinity"): json's own values

    def number(text: str) -> float:
        value = float(text)  # what json makes of the text without the hook
        if value - value != 0.0:  # inf - inf is NaN; a finite value gives 0.0
            read.append(text)
        return value

    decoder = json.JSONDecoder(
        object_pairs_hook=unique_keys_object, parse_constant=constant, parse_float=number
    )
    return decoder.decode, read


_JSON_KINDS: dict[type, str] = {list: "array", str: "string", int: "number", float: "number", bool: "boolean"}
_JSON_KINDS[type(None)] = "null"


def _non_finite_fields(record: dict[str, Any]) -> list[str]:
    """Keys holding NaN or ±Infinity anywhere: Python's json reads the tokens NaN and Infinity and
    numbers beyond a double (1e999) as such floats, which JSON has no text for, so the row could not
    be written back as JSON."""
    return [name for name, value in record.items() if _has_non_finite(value)]


def _has_non_finite(value: object) -> bool:
    # A stack, not recursion: json.loads accepts nesting deeper than Python's recursion limit.
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float):
            if not math.isfinite(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _check_unique(columns: list[str]) -> None:
    counts = Counter(columns)
    duplicates = sorted(name for name, count in counts.items() if count > 1 and name)
    problems = [f"column names appear more than once: {duplicates}"] if duplicates else []
    if counts[""] > 1:  # a header ending in ",,": "['']" alone would not tell anyone what is wrong
        problems.append(f"{counts['']} columns have no name (empty header cells; remove them or name them)")
    if problems:
        raise UnreadableFileError("duplicate_columns", "; ".join(problems))


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):  # Parquet BINARY: its text where it is UTF-8, else escapes, not b'...'
        return value.decode("utf-8", "backslashreplace")
    if isinstance(value, (dict, list)):
        # Parquet nested values may hold dates or decimals, which JSON has no type for.
        return json.dumps(value, default=str)
    return str(value)


# ----------------------------------------------------------------------------------------------
# Writers
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScoredColumns:
    """What the model adds to each scored row (one entry per scored row)."""

    probability: NDArray[np.float64]
    decision: list[str]
    reasons: list[str]
    model_version: str


class ScoredWriter(Protocol):
    def write(self, chunk: Chunk, keep: NDArray[np.bool_], scored: ScoredColumns) -> None: ...

    def close(self) -> None: ...


def scored_writer(file_format: FileFormat, sink: IO[bytes], input_schema: pa.Schema | None) -> ScoredWriter:
    """The scored file's writer; CSV and Parquet need the input's schema (JSON Lines: None)."""
    if file_format == "jsonl":
        return JsonLinesWriter(sink)
    if input_schema is None:
        raise ValueError(f"a {file_format} scored file needs the input's schema")
    if file_format in ("csv", "csv.gz"):
        return ArrowTableWriter(sink, "csv", input_schema, compress=file_format == "csv.gz")
    return ArrowTableWriter(sink, "parquet", input_schema, compress=False)


def scored_schema(input_schema: pa.Schema) -> pa.Schema:
    """Input columns (an input column named like one of the model's is replaced), then the model's."""
    kept = [column for column in input_schema if column.name not in OUTPUT_COLUMNS]
    added = [
        pa.field("probability_of_default", pa.float64()),
        pa.field("decision", pa.string()),
        pa.field("reasons", pa.string()),
        pa.field("model_version", pa.string()),
    ]
    return pa.schema(kept + added, metadata=input_schema.metadata)


class ArrowTableWriter:
    """CSV (optionally gzip) or Parquet: input columns + the model's columns, one schema per file.

    The writer is opened with the full schema before any row, so a file whose rows are all
    rejected still gets a valid scored file (a header, or a Parquet footer) with zero rows.
    """

    def __init__(self, sink: IO[bytes], kind: str, input_schema: pa.Schema, *, compress: bool) -> None:
        self._gzip = gzip.GzipFile(fileobj=sink, mode="wb", compresslevel=6, mtime=0) if compress else None
        target: IO[bytes] | gzip.GzipFile = self._gzip if self._gzip is not None else sink
        self._schema = scored_schema(input_schema)
        self._csv_schema: pa.Schema | None = None
        self._writer: pa_csv.CSVWriter | pq.ParquetWriter
        if kind == "parquet":
            self._writer = pq.ParquetWriter(target, self._schema, compression="snappy")
        else:
            # The header is a row a spreadsheet reads too: input names are made safe like the cells.
            self._csv_schema = pa.schema(
                [column.with_name(spreadsheet_safe(column.name)) for column in self._schema]
            )
            self._writer = pa_csv.CSVWriter(target, self._csv_schema)

    def write(self, chunk: Chunk, keep: NDArray[np.bool_], scored: ScoredColumns) -> None:
        assert chunk.table is not None
        table = _selectable(chunk.table).filter(pa.array(keep)) if not keep.all() else chunk.table
        table = table.drop_columns([name for name in OUTPUT_COLUMNS if name in table.column_names])
        table = table.append_column("probability_of_default", pa.array(scored.probability, pa.float64()))
        table = table.append_column("decision", pa.array(scored.decision, pa.string()))
        table = table.append_column("reasons", pa.array(scored.reasons, pa.string()))
        table = table.append_column(
            "model_version", pa.repeat(pa.scalar(scored.model_version, pa.string()), table.num_rows)
        )
        if not table.schema.equals(self._schema):
            table = table.cast(self._schema)
        if self._csv_schema is not None:
            # Only the input's columns: the model's are the card's texts and numbers.
            carried = len(table.column_names) - len(OUTPUT_COLUMNS)
            columns = [
                _spreadsheet_safe_column(values) if index < carried else values
                for index, values in enumerate(table.columns)
            ]
            table = pa.Table.from_arrays(columns, schema=self._csv_schema)
        self._writer.write_table(table)

    def close(self) -> None:
        self._writer.close()
        if self._gzip is not None:
            self._gzip.close()


def _selectable(table: pa.Table) -> pa.Table:
    """``table`` with view columns (string_view, binary_view, also nested) in their plain layouts:
    pyarrow has no kernel to select rows of those. ``write`` casts them back to the file's types."""
    fields = [column.with_type(_without_views(column.type)) for column in table.schema]
    schema = pa.schema(fields, metadata=table.schema.metadata)
    return table if schema.equals(table.schema) else table.cast(schema)


def _without_views(kind: pa.DataType) -> pa.DataType:
    if pa.types.is_string_view(kind):
        return pa.large_string()
    if pa.types.is_binary_view(kind):
        return pa.large_binary()
    if pa.types.is_struct(kind):
        return pa.struct(
            [kind.field(i).with_type(_without_views(kind.field(i).type)) for i in range(kind.num_fields)]
        )
    if pa.types.is_map(kind):
        key, item = kind.key_field, kind.item_field
        return pa.map_(
            key.with_type(_without_views(key.type)),
            item.with_type(_without_views(item.type)),
            kind.keys_sorted,
        )
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        value = kind.value_field.with_type(_without_views(kind.value_type))
        if pa.types.is_large_list(kind):
            return pa.large_list(value)
        return pa.list_(value, kind.list_size if pa.types.is_fixed_size_list(kind) else -1)
    return kind


class JsonLinesWriter:
    """One JSON object per scored row; zero scored rows make an empty file (valid JSON Lines)."""

    def __init__(self, sink: IO[bytes]) -> None:
        self._sink = sink

    def write(self, chunk: Chunk, keep: NDArray[np.bool_], scored: ScoredColumns) -> None:
        assert chunk.records is not None
        kept = [record for record, flag in zip(chunk.records, keep.tolist(), strict=True) if flag]
        lines: list[str] = []
        for record, probability, decision, reasons in zip(
            kept, scored.probability.tolist(), scored.decision, scored.reasons, strict=True
        ):
            row = {name: value for name, value in record.items() if name not in OUTPUT_COLUMNS}
            row["probability_of_default"] = probability
            row["decision"] = decision
            row["reasons"] = reasons
            row["model_version"] = scored.model_version
            # Strict JSON: rows holding NaN/Infinity were rejected when read, so this never raises.
            lines.append(json.dumps(row, ensure_ascii=False, separators=(",", ":"), allow_nan=False))
        if lines:
            text = "\n".join(lines) + "\n"
            try:
                encoded = text.encode("utf-8")
            except UnicodeEncodeError:
                # A lone surrogate ("\ud800" in the input's JSON) has no UTF-8 form: those lines keep
                # it as the \u escape the input had (ensure_ascii), the others stay as they are.
                # (Per dumped line, not text.splitlines(), which also splits at U+2028 inside a string.)
                encoded = "".join(_utf8_line(line) + "\n" for line in lines).encode()
            self._sink.write(encoded)

    def close(self) -> None:
        return None


class RejectedWriter:
    """``rejected/…csv``: row number, error code(s), error text, the original values, then (CSV
    inputs) ``raw_line``. An input column named like one of these gets the ``input_`` prefix."""

    def __init__(self, sink: IO[bytes], value_columns: Sequence[str], *, raw_line: bool) -> None:
        self._text = io.TextIOWrapper(sink, encoding="utf-8", newline="", write_through=True)
        self._value_columns = list(value_columns)
        self._raw_line = raw_line
        own = [*REJECTED_FIXED_COLUMNS, *([RAW_LINE_COLUMN] if raw_line else [])]
        self.header = [*REJECTED_FIXED_COLUMNS, *_value_headers(own, self._value_columns)]
        if raw_line:
            self.header.append(RAW_LINE_COLUMN)
        self._writer = csv.writer(self._text)
        self._writer.writerow([spreadsheet_safe(name) for name in self.header])
        self.rows = 0

    def write(self, rows: Sequence[RejectedRow]) -> None:
        for row in rows:
            values = [row.values.get(name, "") for name in self._value_columns]
            extra = [row.raw_line] if self._raw_line else []
            cells = [row.error_code, row.error, *values, *extra]
            self._writer.writerow([row.row_number, *(spreadsheet_safe(cell) for cell in cells)])
        self.rows += len(rows)

    def close(self) -> None:
        self._text.flush()
        self._text.detach()


def _value_headers(own: Sequence[str], value_columns: Sequence[str]) -> list[str]:
    """Input column names for the rejected file's header, prefixed where they collide with ``own``."""
    taken = {*own, *value_columns}
    headers: list[str] = []
    for name in value_columns:
        if name in own:
            renamed = COLLISION_PREFIX + name
            while renamed in taken:
                renamed = COLLISION_PREFIX + renamed
            taken.add(renamed)
            name = renamed
        headers.append(name)
    return headers


def _utf8_line(line: str) -> str:
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(json.loads(line), ensure_ascii=True, separators=(",", ":"), allow_nan=False)
    return line


def spreadsheet_safe(cell: str) -> str:
    """``cell`` for a CSV output: with a leading "'" when a spreadsheet would run it as a formula."""
    if cell and cell[0] in FORMULA_TRIGGERS and not _PLAIN_NUMBER_RE.fullmatch(cell):
        return "'" + cell
    return cell


def _spreadsheet_safe_column(values: pa.ChunkedArray) -> pa.ChunkedArray:
    """:func:`spreadsheet_safe` for a text column, in C; other types cannot hold a formula."""
    if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
        return values
    if not _may_start_formula(values):  # the usual chunk: one numpy gather per column, no regex
        return values
    starts = pc.match_substring_regex(values, "^[=+\\-@\t\r]")  # FORMULA_TRIGGERS
    number = pc.match_substring_regex(values, "^" + _PLAIN_NUMBER + "$")
    formula = pc.fill_null(pc.and_(starts, pc.invert(number)), False)  # null cells stay null
    return pc.if_else(formula, pc.binary_join_element_wise("'", values, ""), values)


def _may_start_formula(values: pa.ChunkedArray) -> bool:
    """Whether any cell may start with a trigger: looks at the byte where each cell starts (for an
    empty cell that is the next cell's first byte: a false alarm only costs the exact check)."""
    offset_type = np.int64 if pa.types.is_large_string(values.type) else np.int32
    for array in values.chunks:
        _, offsets, data = array.buffers()
        if offsets is None or data is None or data.size == 0 or len(array) == 0:
            continue
        starts = cast(
            "NDArray[np.signedinteger[Any]]",
            np.frombuffer(offsets, dtype=offset_type)[array.offset : array.offset + len(array)],
        )
        first_bytes = np.take(np.frombuffer(data, dtype=np.uint8), starts, mode="clip")
        if np.take(_TRIGGER_BYTES, first_bytes).any():  # np.take: ~3x quicker than indexing
            return True
    return False
