"""A local stand-in for the RDS snapshot export: MariaDB tables -> Parquet in the RDS layout.

Layout written under the output location (a folder or ``s3://bucket/prefix``)::

    <export-id>/export_info_<export-id>.json
    <export-id>/export_tables_info_<export-id>_from_1_to_<n>.json
    <export-id>/<database>/<database>.<table>/1/part-00000-<uuid>.gz.parquet
                                              1/part-00001-<uuid>.gz.parquet ...

``1`` is the batch index and ``part-NNNNN`` the partition index, as RDS names them; each part
holds at most ``rows_per_file`` rows (gzip-compressed Parquet, like RDS's ``.gz.parquet``).
All tables are read inside one ``START TRANSACTION WITH CONSISTENT SNAPSHOT``, so the export is
a consistent snapshot; rows are written in primary-key order. ``export_info`` is written before
the data with status ``IN_PROGRESS`` (rewritten as ``FAILED`` if the export fails) and as
``COMPLETE`` last, after the tables-info file, so the reader refuses a partial export.

Column types follow the RDS export's MySQL/MariaDB -> Parquet mapping:

================================  ==========================================================
MariaDB                           Parquet (primitive / logical)
================================  ==========================================================
TINYINT, SMALLINT, MEDIUMINT,     INT32
INT, YEAR, TINYINT/SMALLINT
UNSIGNED
INT UNSIGNED, MEDIUMINT UNSIGNED  INT64
BIGINT                            INT64
BIGINT UNSIGNED                   FIXED_LEN_BYTE_ARRAY / DECIMAL(20,0)
DECIMAL(p,s), NUMERIC, p <= 38    DECIMAL(p,s) (INT32 if p <= 9, INT64 if p <= 18, else FLBA)
DECIMAL(p,s), p > 38              BYTE_ARRAY / STRING (the decimal's text)
FLOAT, DOUBLE                     DOUBLE
DATE                              BYTE_ARRAY / STRING (``YYYY-MM-DD``)
DATETIME, TIMESTAMP               INT64 / TIMESTAMP(MICROS)
TIME                              BYTE_ARRAY / STRING
CHAR, VARCHAR, TEXT, ENUM, SET,   BYTE_ARRAY / STRING (UTF-8)
JSON
BINARY, VARBINARY, BLOB, BIT      BYTE_ARRAY
================================  ==========================================================

The tables-info file records each column's original MariaDB type next to the exported one
(``schemaMetadata.originalTypeMappings``, as RDS does), which is how the reader turns DATE
strings back into dates.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pymysql
import pymysql.cursors

from training.dataload.connection import rollback_quietly
from training.dataload.schemas import quote
from training.dataload.storage import Storage, StorageError, open_storage

DEFAULT_ROWS_PER_FILE = 200_000
BATCH_INDEX = "1"

INT32_TYPES = frozenset({"tinyint", "smallint", "mediumint", "int", "integer", "year"})
STRING_TYPES = frozenset(
    {
        "char",
        "varchar",
        "tinytext",
        "text",
        "mediumtext",
        "longtext",
        "enum",
        "set",
        "json",
        "uuid",
        "inet4",
        "inet6",
    }
)
BINARY_TYPES = frozenset({"binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob", "bit"})


class ExportError(Exception):
    """The export could not be written."""


@dataclass(frozen=True)
class SourceColumn:
    name: str
    data_type: str  # information_schema DATA_TYPE, lower case
    column_type: str  # full COLUMN_TYPE, e.g. "int(10) unsigned"
    precision: int | None
    scale: int | None
    char_max_length: int | None
    datetime_precision: int | None

    @property
    def unsigned(self) -> bool:
        return "unsigned" in self.column_type.lower()


@dataclass(frozen=True)
class ExportedColumn:
    """How one MariaDB column is written: its Arrow type, its RDS-style type label, a value converter."""

    arrow_type: pa.DataType
    exported_type: str
    convert: Callable[[Any], Any] | None = None


@dataclass(frozen=True)
class TableExport:
    table: str
    rows: int
    files: list[str]


@dataclass(frozen=True)
class ExportSummary:
    export_id: str
    database: str
    location: str
    tables: list[TableExport]
    seconds: float


def _date_text(value: dt.date) -> str:
    return value.isoformat()


def _forget_dead_result(stream: Any) -> None:
    """Tell an unbuffered cursor whose connection was lost that nothing is left to drain: else the
    finalisers of the cursor and of its result try, and print an "Exception ignored" AttributeError
    (pymysql 1.1 has no public call for this)."""
    result = getattr(stream, "_result", None)
    if result is not None:
        result.unbuffered_active = False
    stream.connection = None


def _time_text(value: dt.timedelta | dt.time) -> str:
    if isinstance(value, dt.time):
        return value.isoformat()
    # In whole microseconds: TIME(6) keeps fractions, and -00:00:00.5 must keep its sign.
    micros = (value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds
    sign = "-" if micros < 0 else ""
    total, fraction = divmod(abs(micros), 1_000_000)
    hours, remainder = divmod(total, 3600)
    minutes, seconds = divmod(remainder, 60)
    text = f"{sign}{hours:02d}:{minutes:02d}:{seconds:02d}"
    return f"{text}.{fraction:06d}" if fraction else text


def _as_decimal(value: int | Decimal) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(value)


def _as_text(value: object) -> str:
    return value if isinstance(value, str) else str(value)


def _as_bytes(value: object) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def exported_column(column: SourceColumn) -> ExportedColumn:
    """The RDS export mapping of one MariaDB column (see the module docstring)."""
    kind = column.data_type
    if kind in INT32_TYPES:
        if column.unsigned and kind in {"int", "integer", "mediumint"}:
            return ExportedColumn(pa.int64(), "int64")
        return ExportedColumn(pa.int32(), "int32")
    if kind == "bigint":
        if column.unsigned:
            return ExportedColumn(
                pa.decimal128(20, 0), "fixed_len_byte_array(9) (DECIMAL(20,0))", _as_decimal
            )
        return ExportedColumn(pa.int64(), "int64")
    if kind in {"decimal", "numeric"}:
        precision, scale = column.precision or 10, column.scale or 0
        if precision > 38:
            return ExportedColumn(pa.string(), "binary (UTF8)", _as_text)
        return ExportedColumn(pa.decimal128(precision, scale), f"decimal({precision},{scale})")
    if kind in {"float", "double", "real"}:
        return ExportedColumn(pa.float64(), "double", float)
    if kind == "date":
        return ExportedColumn(pa.string(), "binary (UTF8)", _date_text)
    if kind in {"datetime", "timestamp"}:
        return ExportedColumn(pa.timestamp("us"), "int64 (TIMESTAMP_MICROS)")
    if kind == "time":
        return ExportedColumn(pa.string(), "binary (UTF8)", _time_text)
    if kind in STRING_TYPES:
        return ExportedColumn(pa.string(), "binary (UTF8)", _as_text)
    if kind in BINARY_TYPES:
        return ExportedColumn(pa.binary(), "binary", _as_bytes)
    return ExportedColumn(pa.string(), "binary (UTF8)", _as_text)


def _source_columns(cursor: Any, database: str, table: str) -> list[SourceColumn]:
    cursor.execute(
        "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, NUMERIC_PRECISION, NUMERIC_SCALE, "
        "CHARACTER_MAXIMUM_LENGTH, DATETIME_PRECISION FROM information_schema.COLUMNS "
        "WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s ORDER BY ORDINAL_POSITION",
        (database, table),
    )
    rows = cursor.fetchall()
    return [
        SourceColumn(
            name=str(name),
            data_type=str(data_type).lower(),
            column_type=str(column_type),
            precision=None if precision is None else int(precision),
            scale=None if scale is None else int(scale),
            char_max_length=None if char_length is None else int(char_length),
            datetime_precision=None if datetime_precision is None else int(datetime_precision),
        )
        for (name, data_type, column_type, precision, scale, char_length, datetime_precision) in rows
    ]


def _primary_key(cursor: Any, database: str, table: str) -> list[str]:
    cursor.execute(
        "SELECT COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE "
        "WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s AND CONSTRAINT_NAME = 'PRIMARY' "
        "ORDER BY ORDINAL_POSITION",
        (database, table),
    )
    return [str(name) for (name,) in cursor.fetchall()]


def _list_tables(cursor: Any, database: str) -> list[str]:
    cursor.execute(
        "SELECT TABLE_NAME FROM information_schema.TABLES "
        "WHERE TABLE_SCHEMA = %s AND TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_NAME",
        (database,),
    )
    return [str(name) for (name,) in cursor.fetchall()]


def _arrow_batch(
    columns: Sequence[SourceColumn], exported: Sequence[ExportedColumn], rows: Sequence[tuple[Any, ...]]
) -> pa.Table:
    arrays = []
    for index, (column, target) in enumerate(zip(columns, exported, strict=True)):
        values = [row[index] for row in rows]
        if target.convert is not None:
            convert = target.convert
            values = [None if value is None else convert(value) for value in values]
        try:
            arrays.append(pa.array(values, type=target.arrow_type))
        except (pa.ArrowException, TypeError, ValueError) as error:
            raise ExportError(f"column {column.name} ({column.column_type}): {error}") from error
    schema = pa.schema(
        [pa.field(column.name, target.arrow_type) for column, target in zip(columns, exported, strict=True)]
    )
    return pa.Table.from_arrays(arrays, schema=schema)


def _parquet_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    # Decimals with p <= 18 as INT32/INT64, as the RDS export stores them.
    pq.write_table(table, sink, compression="gzip", store_decimal_as_integer=True)
    return sink.getvalue()


def _write_json(storage: Storage, key: str, document: dict[str, Any]) -> None:
    storage.write_bytes(key, json.dumps(document, indent=2).encode())


def _utc_now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def export_database(
    connection: pymysql.connections.Connection[Any],
    database: str,
    out_location: str | Path,
    export_id: str,
    *,
    tables: Sequence[str] | None = None,
    rows_per_file: int = DEFAULT_ROWS_PER_FILE,
    source_arn: str | None = None,
    layout_database: str | None = None,
) -> ExportSummary:
    """Export ``database`` (or only ``tables`` of it) to ``out_location`` under ``export_id``.

    ``layout_database`` names the database in the layout (default: ``database`` itself, as RDS
    does); it lets a copy loaded under another name (a test database, a restore) be exported
    under the name training expects.
    """
    if not export_id or "/" in export_id or export_id.strip() != export_id:
        raise ValueError(f"export id {export_id!r} must be a non-empty name without '/' or spaces")
    if rows_per_file < 1:
        raise ValueError("rows_per_file must be at least 1")
    layout_name = layout_database or database
    storage = open_storage(out_location)
    if storage.list_keys(f"{export_id}/"):
        raise ExportError(f"{storage.describe(export_id)} already holds an export; choose another export id")

    started = time.perf_counter()
    info_key = f"{export_id}/export_info_{export_id}.json"
    export_info: dict[str, Any] = {
        "exportTaskIdentifier": export_id,
        "sourceArn": source_arn or f"local:mariadb/{database}",
        "sourceDatabase": database,
        "taskStartTime": _utc_now(),
        "exportedFilesPath": storage.describe(export_id),
        "exportedBy": "training.dataload.exporter (local stand-in for the RDS snapshot export)",
    }
    table_infos: list[dict[str, Any]] = []
    exported_tables: list[TableExport] = []
    started_writing = False
    try:
        with connection.cursor() as cursor:
            available = _list_tables(cursor, database)
            if not available:
                raise ExportError(f"database {database!r} has no tables (or does not exist)")
            selected = list(tables) if tables is not None else available
            unknown = sorted(set(selected) - set(available))
            if unknown:
                raise ExportError(f"database {database} has no tables {unknown}; it has {available}")
            export_info["exportOnly"] = (
                [layout_name] if tables is None else [f"{layout_name}.{table}" for table in selected]
            )
            # Marked in progress before any data: a reader refuses an export that is still being
            # written, or was cut off, instead of training on the part files that happen to exist.
            _write_json(storage, info_key, {**export_info, "status": "IN_PROGRESS", "percentProgress": 0})
            started_writing = True
            cursor.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT")
            export_info["snapshotTime"] = _utc_now()
            for table in selected:
                info, table_export = _export_table(
                    connection, cursor, storage, database, table, export_id, rows_per_file, layout_database
                )
                table_infos.append(info)
                exported_tables.append(table_export)
        # Inside the try: an export whose tables-info cannot be written is marked FAILED.
        _write_json(
            storage,
            f"{export_id}/export_tables_info_{export_id}_from_1_to_{len(table_infos)}.json",
            {"perTableStatus": table_infos},
        )
    except Exception as error:
        if started_writing:
            # Keep the original error if storage itself failed (a folder raises OSError).
            with contextlib.suppress(StorageError, OSError):
                failed = {**export_info, "status": "FAILED", "failureCause": str(error)}
                _write_json(storage, info_key, failed)
        raise
    finally:
        rollback_quietly(connection)  # read-only work: just end the snapshot transaction

    total_bytes = sum(info["sizeBytes"] for info in table_infos)
    export_info.update(
        {
            "taskEndTime": _utc_now(),
            "status": "COMPLETE",
            "percentProgress": 100,
            "totalExportedDataInGB": total_bytes / 1024**3,
        }
    )
    _write_json(storage, info_key, export_info)  # last: COMPLETE only once every file is there
    return ExportSummary(
        export_id=export_id,
        database=database,
        location=storage.describe(export_id),
        tables=exported_tables,
        seconds=time.perf_counter() - started,
    )


def _export_table(
    connection: pymysql.connections.Connection[Any],
    cursor: Any,
    storage: Storage,
    database: str,
    table: str,
    export_id: str,
    rows_per_file: int,
    layout_database: str | None,
) -> tuple[dict[str, Any], TableExport]:
    extraction_start = _utc_now()
    columns = _source_columns(cursor, database, table)
    exported = [exported_column(column) for column in columns]
    key = _primary_key(cursor, database, table)
    select = (
        f"SELECT {', '.join(quote(column.name) for column in columns)} "  # noqa: S608 - quoted identifiers
        f"FROM {quote(database)}.{quote(table)}"
    )
    if key:
        select += f" ORDER BY {', '.join(quote(name) for name in key)}"

    layout_name = layout_database or database
    table_prefix = f"{export_id}/{layout_name}/{layout_name}.{table}/{BATCH_INDEX}"
    files: list[str] = []
    rows_written = 0
    size_bytes = 0
    # An unbuffered cursor streams rows, so memory holds one file's worth at a time.
    stream = connection.cursor(pymysql.cursors.SSCursor)
    try:
        stream.execute(select)
        while True:
            rows = stream.fetchmany(rows_per_file)
            if not rows and files:
                break
            data = _parquet_bytes(_arrow_batch(columns, exported, rows))  # an empty table still gets one file
            name = f"{table_prefix}/part-{len(files):05d}-{uuid.uuid4()}.gz.parquet"
            storage.write_bytes(name, data)
            files.append(name)
            rows_written += len(rows)
            size_bytes += len(data)
            if len(rows) < rows_per_file:
                break
    finally:
        # Closing drains the rest of the result; on a lost connection there is nothing to drain and
        # pymysql would raise an AttributeError in place of the "Lost connection" error.
        if connection.open:
            stream.close()
        else:
            _forget_dead_result(stream)

    info = {
        "tableStatistics": {
            "extractionStartTime": extraction_start,
            "extractionEndTime": _utc_now(),
            "partitioningInfo": {"numberOfPartitions": len(files), "numberOfCompletedPartitions": len(files)},
        },
        "schemaMetadata": {
            "originalTypeMappings": [
                {
                    "columnName": column.name,
                    "originalType": column.data_type,
                    "originalColumnType": column.column_type,
                    "expectedExportedType": target.exported_type,
                    "originalCharMaxLength": column.char_max_length or 0,
                    "originalNumPrecision": column.precision or 0,
                    "originalNumScale": column.scale or 0,
                    "originalDateTimePrecision": column.datetime_precision or 0,
                }
                for column, target in zip(columns, exported, strict=True)
            ]
        },
        "status": "COMPLETE",
        "sizeGB": size_bytes / 1024**3,
        "sizeBytes": size_bytes,
        "rowCount": rows_written,
        "target": f"{layout_name}.{table}",
    }
    return info, TableExport(table=table, rows=rows_written, files=files)
