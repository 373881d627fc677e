"""Parquet text stored as plain BINARY, without the UTF8 annotation (older Hive and Impala writers; Spark
reads it as text with spark.sql.parquet.binaryAsString): category features are read as text when their
bytes are UTF-8, so such a file scores as its annotated twin does. Before, every row was rejected ("home
must be text") and the rejected file showed the values as b'RENT'.
"""

from __future__ import annotations

import io
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lambdas.scoring.runtime import ScoringModel
from tests.batch.helpers import GOOD_ROWS, expected_probability, parquet_bytes, read_scored, score


def _binary_text_parquet(rows: list[dict[str, Any]], home: list[bytes | None] | None = None) -> bytes:
    """``rows`` as Parquet whose text columns are BINARY (no UTF8 annotation); ``home`` replaces that
    column's bytes."""
    table = pq.read_table(io.BytesIO(parquet_bytes(rows)))
    for name in ("application_id", "home"):
        index = table.schema.get_field_index(name)
        values = table.column(name).cast(pa.binary())
        if name == "home" and home is not None:
            values = pa.chunked_array([pa.array(home, pa.binary())])
        table = table.set_column(index, pa.field(name, pa.binary()), values)
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def test_given_text_stored_as_binary_when_scored_then_rows_score_as_their_annotated_twin(
    model: ScoringModel,
) -> None:
    data = _binary_text_parquet(GOOD_ROWS)
    assert pq.read_schema(io.BytesIO(data)).field("home").type == pa.binary()  # the layout under test

    outcome = score(model, "parquet", data)

    assert (outcome.counts.rows_scored, outcome.counts.rows_rejected) == (len(GOOD_ROWS), 0)
    scored = read_scored("parquet", outcome.scored)
    for row, given in zip(scored, GOOD_ROWS, strict=True):
        assert row["probability_of_default"] == pytest.approx(expected_probability(given), rel=1e-12)
        assert row["application_id"] == given["application_id"].encode()  # carried through as stored


def test_given_binary_text_that_is_not_utf8_then_its_row_is_rejected_and_shown_readably(
    model: ScoringModel,
) -> None:
    home: list[bytes | None] = [b"RENT", b"\xffOWN", b"MORTGAGE"]

    outcome = score(model, "parquet", _binary_text_parquet(GOOD_ROWS, home=home))

    assert (outcome.counts.rows_scored, outcome.counts.rows_rejected) == (2, 1)
    (rejected,) = outcome.rejected_rows()
    assert rejected["row_number"] == "2"
    assert rejected["error_code"] == "wrong_type"
    assert rejected["home"] == "\\xffOWN"  # the bytes, readable, not "b'\\xffOWN'"
    assert rejected["application_id"] == "A-2"
