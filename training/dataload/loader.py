"""Bulk-load a dataset's tables into MariaDB so that a failed load leaves the previous data whole.

How: the tables are created if missing (DDL commits on its own, so it runs first), then ONE
InnoDB transaction deletes the old rows (children first), inserts the new ones in chunks
(multi-row INSERTs via executemany, parents first), checks every table's row count against the
input, and commits. Any error - a bad value, a broken key, a count that does not match, a lost
connection - rolls the whole transaction back, so readers see either the old data or the new,
never a mix. Loading the same files twice gives the same tables (the surrogate keys come from
the files, not from AUTO_INCREMENT). An optional table the input leaves out is not created; if an
earlier load left one, its rows are deleted in the same transaction (they described that load).

Values are converted chunk by chunk (memory stays bounded and a bad row midway fails after
earlier rows were written, which the rollback then undoes); the error names the table, the
row, the column and the value. Values are stored exactly or refused: a DECIMAL value with more
decimal places than its column is an error (MariaDB would round it with only a note, even in
strict mode), as are a DECIMAL value with more digits before the point than its column holds and a
DATE given a time of day (MariaDB would drop it); and an existing table must have the schema's
column types, precision and scale included.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal, InvalidOperation
from typing import Any

import pandas as pd
import pymysql

from training.dataload.connection import rollback_quietly
from training.dataload.schemas import Column, DatabaseSchema, TableSchema, quote

DEFAULT_CHUNK_ROWS = 5_000


class LoadError(Exception):
    """The load failed; the database still holds what it held before."""


@dataclass(frozen=True)
class LoadResult:
    database: str
    row_counts: dict[str, int]
    seconds: float


def _is_missing(value: object) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    return isinstance(value, float) and math.isnan(value)


def _to_int(value: object) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError("not a whole number")
        return int(value)
    text = str(value).strip()
    return int(text)


def _to_decimal(value: object) -> Decimal:
    if isinstance(value, float):
        if math.isinf(value):
            raise ValueError("infinite")
        # repr gives the shortest text that reads back as the same float: "16.02", not 16.0199...
        return Decimal(repr(value))
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation as error:
        raise ValueError("not a decimal number") from error
    if not number.is_finite():
        raise ValueError("not a finite number")
    return number


def _to_float(value: object) -> float:
    number = float(str(value).strip()) if isinstance(value, str) else float(value)  # type: ignore[arg-type]
    if math.isinf(number):
        raise ValueError("infinite")
    return number


def _to_date(value: object) -> dt.date:
    if isinstance(value, dt.datetime):  # pd.Timestamp included
        if value.time() != dt.time(0):
            # A DATE column would keep the day and drop the time without an error.
            raise ValueError("has a time of day, which a DATE column would drop")
        return value.date()
    if isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(str(value).strip())


def _to_datetime(value: object) -> dt.datetime:
    if isinstance(value, pd.Timestamp):
        converted: dt.datetime = value.to_pydatetime()
        return converted
    if isinstance(value, dt.datetime):
        return value
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day)
    return dt.datetime.fromisoformat(str(value).strip())


def _to_string(value: object) -> str:
    return value if isinstance(value, str) else str(value)


CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "int": _to_int,
    "decimal": _to_decimal,
    "float": _to_float,
    "date": _to_date,
    "datetime": _to_datetime,
    "string": _to_string,
}


def _check_frame(table: TableSchema, frame: pd.DataFrame) -> None:
    expected = table.column_names
    missing = [name for name in expected if name not in frame.columns]
    extra = [str(name) for name in frame.columns if name not in expected]
    if missing or extra:
        raise LoadError(
            f"table {table.name}: the input's columns do not match the schema "
            f"(missing {missing or 'none'}, unexpected {extra or 'none'})"
        )


def _converted_rows(table: TableSchema, frame: pd.DataFrame, start: int, stop: int) -> list[tuple[Any, ...]]:
    """Rows start..stop of the frame as DB-ready Python values; errors name row, column and value."""
    columns: list[list[Any]] = []
    for column in table.columns:
        raw_values = frame[column.name].iloc[start:stop].tolist()
        columns.append(
            [_convert(table, column, start + offset, value) for offset, value in enumerate(raw_values)]
        )
    return list(zip(*columns, strict=True))


def _convert(table: TableSchema, column: Column, row_index: int, value: object) -> Any:
    if _is_missing(value):
        if not column.nullable:
            raise LoadError(f"table {table.name}, row {row_index + 1}: {column.name} is missing")
        return None
    try:
        converted = CONVERTERS[column.kind](value)
        scale = column.decimal_scale
        if scale is not None and _digits_beyond_scale(converted, scale):
            # MariaDB would round it with only a note, which strict mode lets pass.
            raise ValueError(f"more than {scale} decimal places; MariaDB would round it")
        precision = column.decimal_precision
        if precision is not None and scale is not None and _integer_digits(converted) > precision - scale:
            # Checked here: sending 1E+400000000000 would make the driver spell out every digit.
            raise ValueError(f"more than {precision - scale} digits before the decimal point")
    except (ValueError, TypeError, OverflowError) as error:
        raise LoadError(
            f"table {table.name}, row {row_index + 1}: {column.name} = {value!r} "
            f"is not a valid {column.sql_type} ({error})"
        ) from error
    return converted


def _digits_beyond_scale(value: Decimal, scale: int) -> bool:
    """Whether ``value`` has non-zero digits after its ``scale``-th decimal (exact: no rounding context)."""
    _, digits, exponent = value.as_tuple()
    if not isinstance(exponent, int):  # NaN or infinity, which _to_decimal refuses
        return True
    extra = -scale - exponent
    return extra > 0 and any(digits[-extra:])


def _integer_digits(value: Decimal) -> int:
    """How many digits ``value`` has before its decimal point (0 for zero and for |value| < 1)."""
    return max(value.adjusted() + 1, 0) if value else 0


def _chunks(total: int, size: int) -> Iterator[tuple[int, int]]:
    for start in range(0, total, size):
        yield start, min(start + size, total)


def _column_type(column: Column) -> str:
    """The type as information_schema's COLUMN_TYPE spells it, integer display widths left out."""
    text = column.sql_type.lower().replace(" ", "")
    return text.split("(")[0] if column.kind == "int" else text


def _existing_columns(cursor: Any, database: str, table: str) -> list[tuple[str, str]]:
    cursor.execute(
        "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE FROM information_schema.COLUMNS "
        "WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s ORDER BY ORDINAL_POSITION",
        (database, table),
    )
    columns: list[tuple[str, str]] = []
    for name, data_type, column_type in cursor.fetchall():
        # The full type, not only its kind: a DECIMAL(15,2) left by an earlier schema where
        # DECIMAL(16,8) is expected would round every value to cents without an error.
        integer = Column(str(name), str(data_type)).kind == "int"
        text = str(data_type if integer else column_type).lower().replace(" ", "")
        columns.append((str(name), text))
    return columns


def _existing_tables(
    connection: pymysql.connections.Connection[Any], database: str, names: Sequence[str]
) -> list[str]:
    """Which of ``names`` exist as tables of ``database``."""
    if not names:
        return []
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s",
            (database,),
        )
        present = {str(name) for (name,) in cursor.fetchall()}
    return [name for name in names if name in present]


def ensure_schema(
    connection: pymysql.connections.Connection[Any], schema: DatabaseSchema, database: str
) -> None:
    """Create the database and its tables if missing; refuse a table whose columns or types differ."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s", (database,))
        if cursor.fetchone() is None:
            cursor.execute(f"CREATE DATABASE {quote(database)} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
        for table in schema.tables:
            cursor.execute(table.create_sql(database))
            existing = _existing_columns(cursor, database, table.name)
            expected = [(column.name, _column_type(column)) for column in table.columns]
            if existing != expected:
                raise LoadError(
                    f"table {database}.{table.name} exists with columns {existing}, "
                    f"but the schema expects {expected}; drop it (or the database) to recreate it"
                )


def load_tables(
    connection: pymysql.connections.Connection[Any],
    schema: DatabaseSchema,
    frames: Mapping[str, pd.DataFrame],
    *,
    database: str | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> LoadResult:
    """Replace the contents of the schema's tables with ``frames`` in one transaction.

    Optional tables may be left out of ``frames``: such a table is not created, and emptied if it
    exists. ``row_counts`` of the result names the tables loaded.
    """
    target = database or schema.default_database
    started = time.perf_counter()
    unknown = sorted(set(frames) - {table.name for table in schema.tables})
    missing = [table.name for table in schema.tables if table.name not in frames and not table.optional]
    if unknown or missing:
        raise LoadError(
            f"dataset {schema.dataset}: tables missing from the input: {missing or 'none'}; "
            f"unknown tables: {unknown or 'none'}"
        )
    loaded = tuple(table for table in schema.tables if table.name in frames)
    for table in loaded:
        _check_frame(table, frames[table.name])
    if chunk_rows < 1:
        raise ValueError("chunk_rows must be at least 1")

    try:
        ensure_schema(connection, replace(schema, tables=loaded), target)
        left_out = [table.name for table in schema.tables if table.name not in frames]
        stale = set(_existing_tables(connection, target, left_out))
        connection.begin()
        with connection.cursor() as cursor:
            for table in reversed(schema.tables):
                if table.name in frames or table.name in stale:
                    cursor.execute(f"DELETE FROM {quote(target)}.{quote(table.name)}")  # noqa: S608 - quoted names
            for table in loaded:
                _insert_table(cursor, target, table, frames[table.name], chunk_rows)
            counts = _verify_counts(cursor, target, loaded, frames)
        connection.commit()
    except BaseException:
        rollback_quietly(connection)
        raise
    return LoadResult(database=target, row_counts=counts, seconds=time.perf_counter() - started)


def _insert_table(
    cursor: Any, database: str, table: TableSchema, frame: pd.DataFrame, chunk_rows: int
) -> None:
    column_list = ", ".join(quote(name) for name in table.column_names)
    placeholders = ", ".join(["%s"] * len(table.columns))
    # Identifiers are backtick-quoted by quote(); every value goes as a parameter.
    statement = f"INSERT INTO {quote(database)}.{quote(table.name)} ({column_list}) VALUES ({placeholders})"  # noqa: S608
    for start, stop in _chunks(len(frame), chunk_rows):
        rows = _converted_rows(table, frame, start, stop)
        try:
            cursor.executemany(statement, rows)
        except pymysql.MySQLError as error:
            raise LoadError(
                f"table {table.name}: MariaDB rejected rows {start + 1}..{stop}: {error}"
            ) from error


def _verify_counts(
    cursor: Any, database: str, tables: Sequence[TableSchema], frames: Mapping[str, pd.DataFrame]
) -> dict[str, int]:
    counts: dict[str, int] = {}
    for table in tables:
        cursor.execute(f"SELECT COUNT(*) FROM {quote(database)}.{quote(table.name)}")  # noqa: S608
        (count,) = cursor.fetchone()
        expected = len(frames[table.name])
        if int(count) != expected:
            raise LoadError(
                f"table {table.name}: {count} rows in MariaDB after the load, expected {expected}"
            )
        counts[table.name] = int(count)
    return counts
