"""Input files for the batch tests, in every format, over the logistic test bundle's features."""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from lambdas.batch.formats import open_source
from lambdas.batch.layout import FileFormat
from lambdas.batch.scoring import FileCounts, score_source
from lambdas.scoring.runtime import ScoringModel
from tests.scoring.bundles import INTERCEPT, THRESHOLD, coefficient

COLUMNS = ("application_id", "age", "income", "home", "loan_ratio", "prior_default")
GOOD_ROWS: list[dict[str, Any]] = [
    {
        "application_id": "A-1",
        "age": 24,
        "income": 32000.0,
        "home": "RENT",
        "loan_ratio": 0.45,
        "prior_default": True,
    },
    {
        "application_id": "A-2",
        "age": 52,
        "income": 90000.0,
        "home": "OWN",
        "loan_ratio": 0.05,
        "prior_default": False,
    },
    {
        "application_id": "A-3",
        "age": 35,
        "income": None,
        "home": "MORTGAGE",
        "loan_ratio": 0.9,
        "prior_default": True,
    },
]
# Each bad row breaks one rule of the card; the expected error code is the last element.
BAD_ROWS: list[tuple[dict[str, Any], str]] = [
    (
        {
            "application_id": "B-1",
            "age": 12,
            "income": 1.0,
            "home": "RENT",
            "loan_ratio": 0.1,
            "prior_default": False,
        },
        "out_of_range",
    ),
    (
        {
            "application_id": "B-2",
            "age": 40,
            "income": 1.0,
            "home": "CASTLE",
            "loan_ratio": 0.1,
            "prior_default": False,
        },
        "unknown_category",
    ),
    (
        {
            "application_id": "B-3",
            "age": 40,
            "income": 1.0,
            "home": "OWN",
            "loan_ratio": None,
            "prior_default": False,
        },
        "null_not_allowed",
    ),
]


def expected_probability(row: dict[str, Any]) -> float:
    logit = INTERCEPT
    for name in ("age", "income", "home", "loan_ratio", "prior_default"):
        value = row[name]
        if value is None:
            continue
        logit += coefficient(name, float(value) if isinstance(value, bool) else value)
    return 1.0 / (1.0 + math.exp(-logit))


def expected_decision(row: dict[str, Any]) -> str:
    return "decline" if expected_probability(row) >= THRESHOLD else "approve"


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def csv_bytes(rows: list[dict[str, Any]], columns: tuple[str, ...] = COLUMNS) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row.get(name)) for name in columns])
    return out.getvalue().encode()


def jsonl_bytes(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


def parquet_bytes(rows: list[dict[str, Any]]) -> bytes:
    schema = pa.schema(
        [
            ("application_id", pa.string()),
            ("age", pa.int64()),
            ("income", pa.float64()),
            ("home", pa.string()),
            ("loan_ratio", pa.float64()),
            ("prior_default", pa.bool_()),
        ]
    )
    table = pa.Table.from_pylist(rows, schema=schema)
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def file_bytes(file_format: str, rows: list[dict[str, Any]]) -> bytes:
    if file_format == "csv":
        return csv_bytes(rows)
    if file_format == "csv.gz":
        return gzip.compress(csv_bytes(rows), mtime=0)
    if file_format == "jsonl":
        return jsonl_bytes(rows)
    return parquet_bytes(rows)


def read_scored(file_format: str, data: bytes) -> list[dict[str, Any]]:
    if file_format == "csv":
        return list(csv.DictReader(io.StringIO(data.decode())))
    if file_format == "csv.gz":
        return list(csv.DictReader(io.StringIO(gzip.decompress(data).decode())))
    if file_format == "jsonl":
        return [json.loads(line) for line in data.decode().splitlines() if line]
    rows: list[dict[str, Any]] = pq.read_table(io.BytesIO(data)).to_pylist()
    return rows


def read_rejected(data: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(data.decode())))


# ---- scoring a file in memory through score_source (no network) ------------------------------------

HEADER = ",".join(COLUMNS)
GOOD_LINE = "A-1,24,32000.0,RENT,0.45,true"  # GOOD_ROWS[0] as a CSV line


class _Sink(io.BytesIO):
    """Keeps its bytes after the writer closes it (ParquetWriter closes the file it was given)."""

    def close(self) -> None:
        return None


@dataclass
class Scored:
    counts: FileCounts
    scored: bytes
    rejected: bytes

    def rejected_rows(self) -> list[dict[str, str]]:
        return read_rejected(self.rejected)

    def rejected_header(self) -> list[str]:
        return next(csv.reader(io.StringIO(self.rejected.decode())))


def score(model: ScoringModel, file_format: FileFormat, data: bytes, **options: int) -> Scored:
    """``data`` scored as a file of ``file_format``; checks rows in = rows scored + rows rejected."""
    scored, rejected = _Sink(), _Sink()
    source = open_source(file_format, io.BytesIO(data), **options)
    counts = score_source(model, source, file_format, scored, rejected).counts
    assert counts.rows_in == counts.rows_scored + counts.rows_rejected
    return Scored(counts, scored.getvalue(), rejected.getvalue())
