"""Read an RDS snapshot export (Parquet) from a local folder or ``s3://bucket/prefix``.

The layout is RDS's::

    <location>/<export-id>/export_info_<export-id>.json                       (optional here)
    <location>/<export-id>/export_tables_info_<export-id>_from_1_to_<n>.json  (optional here)
    <location>/<export-id>/<database>/<database>.<table>/<batch>/part-<partition>-<uuid>.gz.parquet

The same code reads what AWS writes and what ``training.dataload.exporter`` writes locally.
When present, ``export_info`` must say ``COMPLETE`` (the local exporter writes ``IN_PROGRESS``
first) and a table's tables-info entry must not say otherwise, nor count other rows (``rowCount``,
written by the local exporter) than its part files hold; a folder without them is read as is.
Types come back the way training wants them, undoing the RDS mapping:

- DECIMAL (Parquet decimal, or a string when the precision exceeds 38) -> float64, converted
  through the decimal's text so the float is the nearest one, exactly as parsing a CSV gives;
- DATE (exported by RDS as a ``YYYY-MM-DD`` string; recognised from the tables-info file's
  original types) and Parquet DATE -> datetime64[us]; DATETIME/TIMESTAMP -> datetime64[us];
- integers -> int64 (float64 with NaN where a column has missing values, like ``read_csv``);
- strings -> the pandas string dtype; doubles stay float64.

Rows are concatenated in batch then partition order. The part files of one table must hold the same
columns (in any order); a part that lacks or adds one is refused, not filled with nulls.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from training.dataload.storage import Storage, open_storage

# DESIGN's ``part-*.parquet``: RDS names parts ``part-<partition>-<uuid>.gz.parquet``, but a part named
# otherwise (``part-00000.parquet``) is still table data and must not be skipped silently. Parts sort
# by their leading number (0 without one), then by name.
PART_FILE = re.compile(r"^part-(\d*).*\.parquet$")
DATE_TYPES = frozenset({"date"})
DECIMAL_TYPES = frozenset({"decimal", "numeric"})


class ExportReadError(Exception):
    """The export is missing, ambiguous, incomplete or unreadable."""


@dataclass(frozen=True)
class _PartFile:
    key: str
    batch: int
    partition: int


def _sort_number(text: str) -> int:
    return int(text) if text.isdigit() else 0


def list_exports(storage: Storage) -> list[str]:
    """Export ids under the location: folders holding table data or an export_info file."""
    exports: set[str] = set()
    for key in storage.list_keys():
        parts = key.split("/")
        is_info = len(parts) == 2 and parts[1] == f"export_info_{parts[0]}.json"
        is_data = len(parts) == 5 and PART_FILE.match(parts[4]) is not None
        if is_info or is_data:
            exports.add(parts[0])
    return sorted(exports)


def _choose_export(storage: Storage, export_id: str | None) -> str:
    exports = list_exports(storage)
    if export_id is not None:
        if export_id not in exports:
            raise ExportReadError(
                f"no export {export_id!r} under {storage.describe()}; found {exports or 'none'}"
            )
        return export_id
    if not exports:
        raise ExportReadError(f"no RDS export found under {storage.describe()}")
    if len(exports) > 1:
        raise ExportReadError(
            f"{len(exports)} exports under {storage.describe()} ({', '.join(exports)}): pass export_id, "
            f"or add #<export id> to the source, e.g. export:{storage.describe()}#{exports[-1]}"
        )
    return exports[0]


def _read_json(storage: Storage, key: str) -> dict[str, object]:
    try:
        document = json.loads(storage.read_bytes(key))
    except json.JSONDecodeError as error:
        raise ExportReadError(f"{storage.describe(key)} is not valid JSON: {error}") from error
    if not isinstance(document, dict):
        raise ExportReadError(f"{storage.describe(key)} is not a JSON object")
    return document


def _per_table_status(storage: Storage, export_id: str, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``"<database>.<table>" -> its perTableStatus entry`` from the tables-info files."""
    info_name = re.compile(rf"^{re.escape(export_id)}/export_tables_info_{re.escape(export_id)}_.*\.json$")
    entries: dict[str, dict[str, Any]] = {}
    for key in keys:
        if not info_name.match(key):
            continue
        statuses = _read_json(storage, key).get("perTableStatus", [])
        for status in statuses if isinstance(statuses, list) else []:
            target = status.get("target") if isinstance(status, dict) else None
            if isinstance(target, str):
                entries[target] = status
    return entries


def _original_types(status: dict[str, Any]) -> dict[str, str]:
    """column -> original MariaDB type, from one table's perTableStatus entry."""
    mappings = status.get("schemaMetadata", {}).get("originalTypeMappings", [])
    return {
        str(mapping["columnName"]): str(mapping.get("originalType", "")).lower()
        for mapping in mappings
        if isinstance(mapping, dict) and "columnName" in mapping
    }


def _check_complete(storage: Storage, export_id: str, keys: Sequence[str]) -> None:
    info_key = f"{export_id}/export_info_{export_id}.json"
    if info_key not in keys:
        return  # tolerate exports copied without their info file
    status = _read_json(storage, info_key).get("status")
    if status is not None and str(status).upper() != "COMPLETE":
        raise ExportReadError(f"export {export_id} has status {status!r}, not COMPLETE")


def _part_files(keys: Sequence[str], table_prefix: str) -> list[_PartFile]:
    parts: list[_PartFile] = []
    for key in keys:
        if not key.startswith(table_prefix):
            continue
        rest = key[len(table_prefix) :].split("/")
        if len(rest) != 2:
            continue
        match = PART_FILE.match(rest[1])
        if match:
            parts.append(
                _PartFile(key=key, batch=_sort_number(rest[0]), partition=_sort_number(match.group(1)))
            )
    return sorted(parts, key=lambda part: (part.batch, part.partition, part.key))


def _decimal_to_float(column: pa.ChunkedArray) -> pa.ChunkedArray:
    # Through text: Arrow's direct decimal->float cast can be off by one ulp; parsing the text is exact.
    return pc.cast(pc.cast(column, pa.string()), pa.float64())


def _training_column(column: pa.ChunkedArray, original_type: str) -> pa.ChunkedArray:
    arrow_type = column.type
    if pa.types.is_decimal(arrow_type):
        return _decimal_to_float(column)
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        if original_type in DATE_TYPES:
            return pc.strptime(column, format="%Y-%m-%d", unit="us")
        if original_type in DECIMAL_TYPES:  # precision > 38: RDS writes the decimal's text
            return pc.cast(column, pa.float64())
        return column
    if pa.types.is_date(arrow_type):
        return pc.cast(column, pa.timestamp("us"))
    if pa.types.is_timestamp(arrow_type):
        return pc.cast(column, pa.timestamp("us", tz=arrow_type.tz))
    if pa.types.is_integer(arrow_type):
        return pc.cast(column, pa.int64())
    if pa.types.is_floating(arrow_type):
        return pc.cast(column, pa.float64())
    return column


def _read_table(
    storage: Storage, table_name: str, parts: Sequence[_PartFile], original: dict[str, str]
) -> pd.DataFrame:
    pieces: list[pa.Table] = []
    for part in parts:
        try:
            piece = pq.read_table(io.BytesIO(storage.read_bytes(part.key)))
        except pa.ArrowInvalid as error:
            raise ExportReadError(f"{storage.describe(part.key)} is not readable Parquet: {error}") from error
        # Columns must agree (in any order): concatenating would fill a column a part lacks with
        # nulls, so its rows would silently read as missing values.
        if pieces and set(piece.column_names) != set(pieces[0].column_names):
            first, this = set(pieces[0].column_names), set(piece.column_names)
            raise ExportReadError(
                f"the part files of {table_name} disagree on their columns: {storage.describe(part.key)} "
                f"lacks {sorted(first - this)} and adds {sorted(this - first)} "
                f"against {storage.describe(parts[0].key)}"
            )
        pieces.append(piece.select(pieces[0].column_names) if pieces else piece)
    try:
        table = pa.concat_tables(pieces, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as error:  # int vs string is an ArrowTypeError
        raise ExportReadError(f"the part files of {table_name} disagree on their schema: {error}") from error
    converted = {}
    for name in table.column_names:
        try:
            converted[name] = _training_column(table.column(name), original.get(name, ""))
        except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
            raise ExportReadError(
                f"{table_name} column {name!r} ({original.get(name) or table.column(name).type}): {error}"
            ) from error
    frame: pd.DataFrame = pa.table(converted).to_pandas()
    return frame


def read_export_tables(
    location: str | Path,
    database: str,
    tables: Sequence[str] | None = None,
    export_id: str | None = None,
) -> dict[str, pd.DataFrame]:
    """Tables of ``database`` from the export under ``location``, keyed by table name.

    ``export_id=None`` picks the only export under ``location`` (an error if there are several).
    ``tables=None`` reads every table of the database in the export.
    """
    storage = open_storage(location)
    chosen = _choose_export(storage, export_id)
    keys = storage.list_keys(f"{chosen}/")
    _check_complete(storage, chosen, keys)

    database_prefix = f"{chosen}/{database}/{database}."
    available = sorted(
        {key[len(database_prefix) :].split("/")[0] for key in keys if key.startswith(database_prefix)}
    )
    if not available:
        databases = sorted({key.split("/")[1] for key in keys if key.count("/") >= 4})
        raise ExportReadError(
            f"export {chosen} under {storage.describe()} has no database {database!r}; "
            f"it has {databases or 'no table data'}"
        )
    wanted = list(tables) if tables is not None else available
    missing = [table for table in wanted if table not in available]
    if missing:
        raise ExportReadError(f"export {chosen} has no tables {missing} in {database}; it has {available}")

    table_statuses = _per_table_status(storage, chosen, keys)
    frames: dict[str, pd.DataFrame] = {}
    for table in wanted:
        status = table_statuses.get(f"{database}.{table}", {})
        # A table that failed in an otherwise readable export has only some of its rows.
        if str(status.get("status", "COMPLETE")).upper() != "COMPLETE":
            raise ExportReadError(
                f"export {chosen}: table {database}.{table} has status {status['status']!r}, not COMPLETE"
            )
        parts = _part_files(keys, f"{database_prefix}{table}/")
        if not parts:
            raise ExportReadError(f"export {chosen}: table {database}.{table} has no part files")
        frame = _read_table(storage, f"{database}.{table}", parts, _original_types(status))
        _check_row_count(chosen, f"{database}.{table}", status, len(frame), len(parts))
        frames[table] = frame
    return frames


def _check_row_count(export_id: str, target: str, status: dict[str, Any], rows: int, parts: int) -> None:
    """Refuse a table whose part files hold other rows than its tables-info entry counted.

    A part lost or duplicated in a copy leaves a readable table with too few or too many rows.
    The local exporter records ``rowCount``; an entry without it (RDS's own) cannot be checked.
    """
    expected = status.get("rowCount")
    if not isinstance(expected, int) or isinstance(expected, bool) or expected == rows:
        return
    raise ExportReadError(
        f"export {export_id}: table {target} has {rows} rows in its {parts} part files, but its "
        f"tables-info counted {expected}: a part file is missing or duplicated"
    )
