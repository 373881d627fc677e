"""Score one table file, chunk by chunk: read -> validate -> score -> reasons -> write.

Pure domain code: file objects in, file objects out, a :class:`ScoringModel` in between (no AWS).
Every input row ends up in exactly one of the two outputs, so ``rows_in = rows_scored +
rows_rejected`` holds by construction and is checked at the end.

Reasons are computed for declined rows only: they explain a decline, and each explained row
costs one extra row through the model per feature whose value differs from its baseline (see
docs/batch.md for the measured cost).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import NDArray

from lambdas.batch.formats import (
    JSONL_RECORD_COLUMN,
    Chunk,
    ChunkRead,
    CsvSource,
    JsonLinesSource,
    RejectedRow,
    RejectedWriter,
    ScoredColumns,
    ScoredWriter,
    TableSource,
    UnreadableFileError,
    scored_writer,
)
from lambdas.batch.layout import FileFormat
from lambdas.scoring.card import FeatureSchema
from lambdas.scoring.drift import DriftMonitor, DriftSummary
from lambdas.scoring.runtime import (
    TOP_REASONS,
    BatchScores,
    CodedColumn,
    ColumnInput,
    FieldError,
    PreparedBatch,
    ScoringModel,
)

REASONS_TOP_K = TOP_REASONS  # the same count as the API's
REASON_SEPARATOR = "; "
# Scoring stops, and the file fails as too_large, once the time left would not cover uploading what was
# written so far and publishing the manifest: a floor plus the outputs at a conservative 50 MB/s for one
# multipart upload (assumed, not measured on AWS). Else a file too big for one invocation timed out
# three times and went to the dead-letter queue with only its claim as a manifest.
PUBLISH_FLOOR_SECONDS = 60.0
UPLOAD_BYTES_PER_SECOND = 50 * 1024 * 1024
# The outputs are hashed for the manifest before they are uploaded (1.4-1.6 GB/s measured on a CPU with
# SHA instructions; a conservative figure for one without).
HASH_BYTES_PER_SECOND = 300 * 1024 * 1024


@dataclass
class FileCounts:
    rows_in: int = 0
    rows_scored: int = 0
    rows_rejected: int = 0
    approved: int = 0
    declined: int = 0
    chunks: int = 0
    max_chunk_rows: int = 0


@dataclass
class PhaseSeconds:
    read: float = 0.0
    validate: float = 0.0
    score: float = 0.0
    reasons: float = 0.0
    drift: float = 0.0
    write: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return {name: round(value, 4) for name, value in vars(self).items()}


@dataclass
class FileResult:
    counts: FileCounts = field(default_factory=FileCounts)
    seconds: PhaseSeconds = field(default_factory=PhaseSeconds)
    columns: list[str] = field(default_factory=list)
    drift: DriftSummary | None = None  # of the scored rows against the card's references


def feature_column_names(model: ScoringModel, columns: Sequence[str]) -> dict[str, str]:
    """The file column holding each feature. A table file must have one column per feature; names
    match ignoring surrounding spaces (``income , age`` headers are common), and the file keeps its
    own names in the outputs. A wrong or missing header makes the file unreadable."""
    by_name: dict[str, list[str]] = {}
    for column in columns:
        by_name.setdefault(column.strip(), []).append(column)
    missing = [feature.name for feature in model.features if feature.name not in by_name]
    if missing:
        shown = ", ".join(repr(column) for column in columns[:20]) + (", …" if len(columns) > 20 else "")
        raise UnreadableFileError(
            "missing_columns",
            f"missing feature column(s): {', '.join(missing)}; the file has: {shown or '(no columns)'}"
            + _header_hint(missing, columns),
        )
    ambiguous = {
        feature.name: by_name[feature.name] for feature in model.features if len(by_name[feature.name]) > 1
    }
    if ambiguous:
        raise UnreadableFileError(
            "duplicate_columns",
            f"more than one column holds a feature (names differ only in spaces): {ambiguous}",
        )
    return {feature.name: by_name[feature.name][0] for feature in model.features}


# Delimiters of CSV exports the reader does not take (a semicolon: Excel in locales whose decimal
# separator is a comma; a tab: "Unicode Text"), named when the header holds the features split by one.
OTHER_DELIMITERS = {";": "semicolons", "\t": "tabs", "|": "pipes"}


def _header_hint(missing: Sequence[str], columns: Sequence[str]) -> str:
    """Why the features are not found, when the header shows it: another delimiter, or another case."""
    for delimiter, name in OTHER_DELIMITERS.items():
        parts = {part.strip().strip('"').strip() for column in columns for part in column.split(delimiter)}
        if len(parts) > len(columns) and all(feature in parts for feature in missing):
            return (
                f" (the header holds them separated by {name}: the batch reads comma-separated values only;"
                " Excel writes its region's list separator, which is ';' where the decimal mark is ',')"
            )
    by_case = {column.strip().casefold(): column for column in columns}
    differ = [f"{by_case[name.casefold()]!r} for {name!r}" for name in missing if name.casefold() in by_case]
    if differ:
        return f" (names are case-sensitive: the file has {', '.join(differ)})"
    return ""


def score_source(
    model: ScoringModel,
    source: TableSource,
    file_format: FileFormat,
    scored_sink: IO[bytes],
    rejected_sink: IO[bytes],
    *,
    deadline: float | None = None,
) -> FileResult:
    """Score every row of ``source`` into the two sinks; raises :class:`UnreadableFileError` for bad files.

    ``deadline`` (``time.monotonic()`` seconds) is when the invocation ends; past each chunk, scoring stops
    with ``too_large`` once what is left of it would not cover publishing the outputs written so far.
    """
    result = FileResult(columns=source.columns)
    if isinstance(source, JsonLinesSource):
        # No header: every line is checked for the feature keys on its own.
        source.require([feature.name for feature in model.features])
        column_of = {feature.name: feature.name for feature in model.features}
        rejected_columns = [JSONL_RECORD_COLUMN]
    else:
        column_of = feature_column_names(model, result.columns)
        rejected_columns = result.columns
    writer = scored_writer(file_format, scored_sink, source.schema)
    rejected = RejectedWriter(rejected_sink, rejected_columns, raw_line=isinstance(source, CsvSource))
    seconds = result.seconds
    drift = DriftMonitor(model.card)
    for read in _timed(source.chunks(), seconds):
        _score_chunk(model, read, column_of, writer, rejected, result, drift)
        if deadline is not None:
            _require_time_to_publish(deadline, result.counts.rows_in, scored_sink, rejected_sink)
    started = time.perf_counter()
    writer.close()
    rejected.close()
    seconds.write += time.perf_counter() - started
    counts = result.counts
    if counts.rows_in == 0:
        raise UnreadableFileError("no_data_rows", "the file has a header but no data rows")
    if counts.rows_in != counts.rows_scored + counts.rows_rejected:  # a bug, never bad input
        raise AssertionError(f"row accounting broken: {counts}")
    result.drift = drift.summary()
    return result


def _require_time_to_publish(deadline: float, rows_read: int, *sinks: IO[bytes]) -> None:
    written = sum(sink.tell() for sink in sinks)
    needed = PUBLISH_FLOOR_SECONDS + written / UPLOAD_BYTES_PER_SECOND + written / HASH_BYTES_PER_SECOND
    if time.monotonic() + needed > deadline:
        raise UnreadableFileError(
            "too_large",
            f"the file cannot be scored within one invocation: {rows_read:,} rows were read when the time "
            f"left ({max(deadline - time.monotonic(), 0.0):.0f} s) was needed to publish them; split it into "
            f"files of fewer rows and upload those (docs/batch.md, Limits)",
        )


def _timed(chunks: Iterator[ChunkRead], seconds: PhaseSeconds) -> Iterator[ChunkRead]:
    while True:
        started = time.perf_counter()
        try:
            read = next(chunks)
        except StopIteration:
            seconds.read += time.perf_counter() - started
            return
        seconds.read += time.perf_counter() - started
        yield read


def _score_chunk(
    model: ScoringModel,
    read: ChunkRead,
    column_of: Mapping[str, str],
    writer: ScoredWriter,
    rejected: RejectedWriter,
    result: FileResult,
    drift: DriftMonitor,
) -> None:
    counts, seconds, chunk = result.counts, result.seconds, read.chunk
    counts.rows_in += chunk.n_rows + len(read.malformed)
    counts.chunks += 1
    counts.max_chunk_rows = max(counts.max_chunk_rows, chunk.n_rows)
    rejected_rows: list[RejectedRow] = list(read.malformed)
    if chunk.n_rows:
        started = time.perf_counter()
        prepared = _prepare(model, chunk, column_of)
        valid = prepared.valid.copy()
        for row in chunk.pre_rejected:
            valid[row] = False
        seconds.validate += time.perf_counter() - started

        if valid.any():
            started = time.perf_counter()
            feed = prepared.feed if valid.all() else _rows(prepared.feed, valid)
            scores = model.score(feed, reasons_for=False)
            seconds.score += time.perf_counter() - started

            started = time.perf_counter()
            reasons = _reasons_for_declined(model, feed, scores)
            seconds.reasons += time.perf_counter() - started

            started = time.perf_counter()
            drift.add(feed, scores.probability)
            seconds.drift += time.perf_counter() - started

            started = time.perf_counter()
            labels = model.card.decision_policy.decision_labels
            decisions = np.where(scores.decline, labels["decline"], labels["approve"]).tolist()
            writer.write(
                chunk,
                valid,
                ScoredColumns(scores.probability, decisions, reasons, model.model_version),
            )
            seconds.write += time.perf_counter() - started
            declined = int(scores.decline.sum())
            counts.rows_scored += int(valid.sum())
            counts.declined += declined
            counts.approved += int(valid.sum()) - declined
        invalid = np.flatnonzero(~valid).tolist()
        for row, values in zip(invalid, chunk.original_values(invalid), strict=True):
            errors = _row_errors(chunk.pre_rejected.get(row, []), prepared.errors.get(row, []))
            rejected_rows.append(
                RejectedRow(
                    row_number=int(chunk.row_numbers[row]),
                    error_code=";".join(dict.fromkeys(error.code for error in errors)),
                    error="; ".join(f"{error.field}: {error.message}" for error in errors),
                    values=values,
                )
            )
    if rejected_rows:
        started = time.perf_counter()
        rejected_rows.sort(key=lambda rejected_row: rejected_row.row_number)
        rejected.write(rejected_rows)
        counts.rows_rejected += len(rejected_rows)
        seconds.write += time.perf_counter() - started


# The JSON values the API takes for each feature type, by exact type (a JSON true is not the number 1).
_API_JSON_TYPES: dict[str, frozenset[type]] = {
    "number": frozenset({int, float, type(None)}),
    "integer": frozenset({int, float, type(None)}),
    "boolean": frozenset({bool, type(None)}),
    "category": frozenset({str, type(None)}),
}


def _prepare(model: ScoringModel, chunk: Chunk, column_of: Mapping[str, str]) -> PreparedBatch:
    """The chunk validated. A JSON Lines row is a JSON object, like the API's ``features``, and is judged
    by the API's rules: strict JSON types ("24" is no integer, "" no missing income, 1 no boolean).

    ``prepare_columns`` reads text as CSV cells do, so it judges a JSON Lines chunk only when every
    feature value has a type the API takes (there both give the same error codes, and it was 1.2-1.9x
    quicker on 60k rows); a chunk holding any other value goes to the API's own ``prepare_records``.
    """
    if chunk.records is None:
        return model.prepare_columns(feature_columns(model, chunk, column_of))
    columns: dict[str, ColumnInput] = {}
    for feature in model.features:
        values = chunk.column_values(feature.name)  # None for a missing key, which was pre-rejected
        strict = set(map(type, values)) <= _API_JSON_TYPES[feature.type]
        if not strict or (feature.type == "category" and "" in set(values)):  # "" is null to the columns
            names = [each.name for each in model.features]  # its other keys are carried through, unjudged
            return model.prepare_records([{n: row[n] for n in names if n in row} for row in chunk.records])
        columns[feature.name] = values
    return model.prepare_columns(columns)


def _rows(feed: Mapping[str, np.ndarray], mask: NDArray[np.bool_]) -> dict[str, np.ndarray]:
    return {name: column[mask] for name, column in feed.items()}


def _reasons_for_declined(model: ScoringModel, feed: dict[str, np.ndarray], scores: BatchScores) -> list[str]:
    """Reason texts for declined rows ('' for approved ones): one batched run of their perturbed rows."""
    texts = [""] * len(scores.decline)
    declined = np.flatnonzero(scores.decline)
    explained = model.explain_texts(
        feed, scores.probability, declined, top_k=REASONS_TOP_K, separator=REASON_SEPARATOR
    )
    for position, text in zip(declined.tolist(), explained, strict=True):
        texts[position] = text
    return texts


def _row_errors(pre: list[tuple[str, str, str]], validation: list[FieldError]) -> list[FieldError]:
    errors = [FieldError(field_name, code, message) for field_name, code, message in pre]
    seen = {error.field for error in errors}
    return errors + [error for error in validation if error.field not in seen]


def feature_columns(
    model: ScoringModel, chunk: Chunk, column_of: Mapping[str, str]
) -> dict[str, ColumnInput]:
    """The chunk's feature columns (``column_of``: feature -> file column) in the cheapest form the
    runtime accepts.

    Arrow text columns of numeric features are cast to float64 in C when every cell parses (the
    common case); otherwise the raw text goes to the runtime, which names the bad cells. Text
    columns of categories go dictionary-encoded, so each distinct value is judged once.
    """
    columns: dict[str, ColumnInput] = {}
    for feature in model.features:
        values = chunk.column_values(column_of[feature.name])
        if isinstance(values, pa.ChunkedArray):
            columns[feature.name] = _arrow_column(feature, values)
        else:
            columns[feature.name] = values
    return columns


class _UnsupportedValue:
    """Stands for a cell whose Arrow type no feature accepts (a date, a list, ...): the runtime
    rejects it as wrong_type, like any other value that is neither a number nor text."""

    def __repr__(self) -> str:
        return "<unsupported value>"


_UNSUPPORTED = _UnsupportedValue()


def _arrow_column(feature: FeatureSchema, values: pa.ChunkedArray) -> ColumnInput:
    kind = values.type
    if pa.types.is_dictionary(kind):  # Parquet string columns often arrive dictionary-encoded
        values = values.cast(kind.value_type)
        kind = values.type
    if pa.types.is_string_view(kind):  # Arrow's other text layout (Polars 1.38 wrote it to Parquet)
        values = values.cast(pa.large_string())
        kind = values.type
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or pa.types.is_binary_view(kind):
        # Text stored without Parquet's UTF8 annotation (older Hive and Impala writers) is text when its
        # bytes are UTF-8, as Spark's binaryAsString reads it; other bytes stay bytes, a wrong_type.
        values = values.cast(pa.large_binary())
        try:
            values = values.cast(pa.large_string())
        except pa.ArrowInvalid:
            return _coded_bytes(values)
        kind = values.type
    numeric = feature.onnx_type == "double"
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return _text_numbers(values) if numeric and feature.type != "boolean" else _coded(values)
    if pa.types.is_null(kind):
        return np.full(len(values), None, dtype=object)
    if numeric and (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind)):
        if pa.types.is_floating(kind) and pc.any(pc.is_nan(values)).as_py():
            # A NaN stored in a float column is a value, unlike a null (the missing cell): the runtime
            # names it not_finite, as it does "nan" typed in a CSV. Rare, so Python objects are fine.
            return np.asarray(values.to_pylist(), dtype=object)
        # Not the safe cast: integers beyond 2**53 and decimals become the nearest double, as the
        # same number written in a CSV does; the card's range check then judges the value.
        numbers = pc.cast(values, pa.float64(), safe=False)
        return np.asarray(numbers.to_numpy(zero_copy_only=False), dtype=np.float64)
    if pa.types.is_boolean(kind) or (not numeric and pa.types.is_integer(kind)):
        return np.asarray(values.to_numpy(zero_copy_only=False), dtype=object)
    return _unsupported(values)


def _text_numbers(values: pa.ChunkedArray) -> ColumnInput:
    try:
        # Empty cells are missing values (null, then NaN), not a reason to parse in Python.
        numbers = pc.cast(pc.if_else(pc.equal(values, ""), None, values), pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return _coded(values)
    # "nan" written in a cell is an error for the runtime, not an empty cell, and a cell that became
    # infinite may be "inf" (not_finite) or an integer too long for a double (out_of_range): the
    # runtime reads the text and says which.
    if not pc.all(pc.is_finite(numbers)).as_py():  # nulls (empty cells) are skipped
        return _coded(values)
    return np.asarray(numbers.to_numpy(zero_copy_only=False), dtype=np.float64)


def _unsupported(values: pa.ChunkedArray) -> NDArray[np.object_]:
    """Nulls stay missing; every other cell is a value of a type no feature accepts."""
    cells = np.full(len(values), _UNSUPPORTED, dtype=object)
    cells[np.asarray(values.is_null().to_numpy(zero_copy_only=False), dtype=np.bool_)] = None
    return cells


def _coded_bytes(values: pa.ChunkedArray) -> CodedColumn:
    """Binary cells as codes into their distinct values, each decoded as UTF-8 where it is."""
    encoded = pc.dictionary_encode(values.combine_chunks(), null_encoding="encode")
    return CodedColumn(
        codes=np.asarray(encoded.indices.to_numpy(zero_copy_only=False), dtype=np.intp),
        values=[_utf8_or_bytes(value) for value in encoded.dictionary.to_pylist()],
    )


def _utf8_or_bytes(value: bytes | None) -> str | bytes | None:
    if value is None:
        return None
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value


def _coded(values: pa.ChunkedArray) -> CodedColumn:
    """Text as codes into its distinct values (nulls become the value None)."""
    encoded = pc.dictionary_encode(values.combine_chunks(), null_encoding="encode")
    return CodedColumn(
        codes=np.asarray(encoded.indices.to_numpy(zero_copy_only=False), dtype=np.intp),
        values=encoded.dictionary.to_pylist(),
    )
