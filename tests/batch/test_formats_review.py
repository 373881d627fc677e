"""Formats review: what real bank files do to the batch (Excel exports, Polars Parquet, JSON Lines typed
like the API's requests), through ``score_source`` and, where the message's fate differs, the handler.
"""

from __future__ import annotations

import codecs
import gzip
import io
import json
import random
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lambdas.api.app import create_api
from lambdas.api.wiring import make_handler
from lambdas.batch import formats
from lambdas.batch.formats import UnreadableFileError
from lambdas.batch.layout import FileFormat
from lambdas.scoring.runtime import FieldError, ScoringModel
from tests.api.conftest import api_context, settings_for, stored_event
from tests.batch.conftest import NotifiedBucket
from tests.batch.helpers import (
    COLUMNS,
    GOOD_LINE,
    GOOD_ROWS,
    HEADER,
    csv_bytes,
    expected_probability,
    read_scored,
    score,
)


def parquet_bytes(columns: dict[str, pa.Array]) -> bytes:
    sink = io.BytesIO()
    pq.write_table(pa.table(columns), sink)
    return sink.getvalue()


def unreadable(model: ScoringModel, file_format: FileFormat, data: bytes) -> UnreadableFileError:
    with pytest.raises(UnreadableFileError) as raised:
        score(model, file_format, data)
    return raised.value


# ---- Parquet: text columns in Arrow's view layout (Polars 1.38 wrote them so) ---------------------


def test_given_parquet_text_features_as_string_view_then_they_are_read_as_text(model: ScoringModel) -> None:
    # Given: the age as text and the home category, both string_view columns (every row was wrong_type)
    columns = {
        "application_id": pa.array(["A-1", "A-2"], pa.string_view()),
        "age": pa.array(["24", "52"], pa.string_view()),
        "income": pa.array([32000.0, 90000.0]),
        "home": pa.array(["RENT", "OWN"], pa.string_view()),
        "loan_ratio": pa.array([0.45, 0.05]),
        "prior_default": pa.array([True, False]),
    }

    # When
    outcome = score(model, "parquet", parquet_bytes(columns))

    # Then: both rows are scored as the same values in plain text columns are
    assert (outcome.counts.rows_scored, outcome.counts.rows_rejected) == (2, 0)
    scored = read_scored("parquet", outcome.scored)
    assert [row["probability_of_default"] for row in scored] == pytest.approx(
        [expected_probability(GOOD_ROWS[0]), expected_probability(GOOD_ROWS[1])]
    )


def test_given_view_columns_and_a_rejected_row_when_delivered_then_the_file_is_scored_with_its_types(
    notified_bucket: NotifiedBucket,
) -> None:
    # Given: an id (string_view), a note nested in a struct and a list, bytes (binary_view), and a
    # second row whose age is out of range. pyarrow cannot select rows of view columns: the handler
    # raised ArrowNotImplementedError, so SQS retried the message into the dead-letter queue, no manifest.
    columns = {
        "application_id": pa.array(["A-1", "B-1", "A-3"], pa.string_view()),
        "age": pa.array([24, 12, 35]),
        "income": pa.array([32000.0, 1.0, None]),
        "home": pa.array(["RENT", "RENT", "MORTGAGE"]),
        "loan_ratio": pa.array([0.45, 0.1, 0.9]),
        "prior_default": pa.array([True, False, True]),
        "raw": pa.array([b"\x00a", b"b", b""], pa.binary_view()),
        "notes": pa.array([["x"], [], None], pa.list_(pa.string_view())),
        "meta": pa.array([{"by": "ops"}, None, {"by": "risk"}], pa.struct([("by", pa.string_view())])),
    }
    key = "incoming/polars/applications.parquet"
    notified_bucket.put(key, parquet_bytes(columns))

    # When
    result = notified_bucket.drain()

    # Then: the file is scored; the scored file keeps the input's types and values
    assert result.failed_message_ids == []
    (manifest,) = result.manifests
    assert manifest["status"] == "succeeded"
    assert (manifest["counts"]["rows_scored"], manifest["counts"]["rows_rejected"]) == (2, 1)
    table = pq.read_table(io.BytesIO(notified_bucket.get("scored/polars/applications.parquet")))
    for name in ("application_id", "raw", "notes", "meta"):
        assert table.schema.field(name).type == columns[name].type, name
    assert table.select(["application_id", "raw", "notes", "meta"]).to_pylist() == [
        {"application_id": "A-1", "raw": b"\x00a", "notes": ["x"], "meta": {"by": "ops"}},
        {"application_id": "A-3", "raw": b"", "notes": None, "meta": {"by": "risk"}},
    ]


# ---- JSON Lines: a row is a JSON object, judged as the API judges "features" ---------------------


def api_codes(batch_bundle: Path, features: dict[str, Any]) -> list[str]:
    """The error codes of POST /v1/score for these features, through the API's Lambda handler."""
    model = ScoringModel.load_directory(batch_bundle)
    handler = make_handler(create_api(model, settings_for(batch_bundle)))
    event = stored_event("score.json")
    event["body"] = json.dumps({"features": features})
    answer = handler(event, api_context())  # type: ignore[arg-type]
    if answer["statusCode"] == 200:
        return []
    return [detail["code"] for detail in json.loads(answer["body"])["error"]["details"]]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("income", ""),  # was scored as a missing income, with "not provided" as a reason
        ("age", "24"),  # numbers as JSON strings were parsed like CSV cells
        ("income", " 1e3 "),
        ("prior_default", 1),  # a JSON number is no boolean
        ("prior_default", "yes"),
        ("home", ""),  # was null_not_allowed (an empty CSV cell); the API: unknown_category
        ("home", 2),  # was unknown_category; the API: wrong_type
        ("income", "nan"),
        ("age", 24.0),  # what the API takes, the batch takes
    ],
)
def test_given_a_json_value_the_api_refuses_then_the_json_lines_row_is_rejected_with_the_apis_code(
    model: ScoringModel, batch_bundle: Path, field: str, value: object
) -> None:
    # Given: a good line, then the same application with this value
    features = {name: GOOD_ROWS[0][name] for name in COLUMNS if name != "application_id"}
    changed = {**features, field: value}
    lines = [
        json.dumps({"application_id": "A-1", **features}),
        json.dumps({"application_id": "A-2", **changed}),
    ]

    # When
    outcome = score(model, "jsonl", "\n".join(lines).encode())

    # Then: the batch's verdict on the line is the API's on the request
    expected = api_codes(batch_bundle, changed)
    assert [row["error_code"] for row in outcome.rejected_rows()] == (
        [";".join(expected)] if expected else []
    )
    scored = read_scored("jsonl", outcome.scored)
    assert scored[0]["application_id"] == "A-1"  # the good line is scored whatever its chunk holds
    assert scored[0]["probability_of_default"] == pytest.approx(expected_probability(GOOD_ROWS[0]))
    if not expected:
        assert scored[1][field] == value


def test_given_random_values_of_the_types_the_api_takes_then_the_columns_give_the_apis_codes(
    model: ScoringModel,
) -> None:
    # The batch judges such chunks with prepare_columns (quicker), the others with prepare_records
    generator = random.Random(11)
    numbers: list[object] = [
        None,
        0,
        -0.0,
        17,
        18,
        24,
        24.5,
        100,
        101,
        1.5,
        -3,
        10**400,
        float("nan"),
        2.0**60,
    ]
    choices: dict[str, list[object]] = {
        "age": numbers,
        "income": numbers,
        "loan_ratio": numbers,
        "prior_default": [None, True, False],
        "home": [None, "RENT", "OWN", "MORTGAGE", "rent", "CASTLE", "RENT "],
    }
    records = [{name: generator.choice(values) for name, values in choices.items()} for _ in range(2_000)]

    by_columns = model.prepare_columns({name: [row[name] for row in records] for name in choices})
    by_records = model.prepare_records(records)

    def codes(errors: dict[int, list[FieldError]]) -> dict[int, set[tuple[str, str]]]:
        return {row: {(error.field, error.code) for error in found} for row, found in errors.items()}

    assert codes(by_columns.errors) == codes(by_records.errors)
    assert len(by_records.errors) > 500  # every rule was exercised, not only the happy path
    for name, column in by_records.feed.items():
        valid = by_records.valid
        nan_is_missing = column.dtype.kind == "f"
        assert np.array_equal(by_columns.feed[name][valid], column[valid], equal_nan=nan_is_missing), name


# ---- CSV: Excel's other exports -------------------------------------------------------------------


def test_given_a_windows_1252_cell_then_the_error_names_the_data_row_and_the_column(
    model: ScoringModel,
) -> None:
    lines = [HEADER, GOOD_LINE, GOOD_LINE, "A-3,24,32000.0,R\xc9NT,0.45,true"]
    error = unreadable(model, "csv", "\n".join(lines).encode("cp1252"))

    # pyarrow's own words were "In CSV column #3: Row #3" (the column counted from 0)
    assert error.code == "not_utf8"
    assert "data row 3, column 'home'" in error.message
    assert "CSV UTF-8" in error.message


# pyarrow reports what the handler could not be given (or raised) as an unraisable exception.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_given_a_windows_1252_line_with_another_field_count_then_the_file_is_not_utf8(
    model: ScoringModel,
) -> None:
    # pyarrow hands a line with the wrong field count to our handler as text; when it is not UTF-8 it
    # cannot, and failed the file as not_a_table ("Expected 6 columns, got 2"): fixing that line got
    # the next upload refused as not_utf8
    lines = [HEADER, GOOD_LINE, "Caf\xe9,1", GOOD_LINE]
    error = unreadable(model, "csv", "\n".join(lines).encode("cp1252"))

    assert error.code == "not_utf8"
    assert "data row 2" in error.message


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_given_the_rejected_rows_spool_fails_then_that_error_is_raised_not_a_verdict_on_the_file(
    model: ScoringModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given: /tmp full while a line with the wrong field count is kept for the rejected file
    def full(*_: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(formats._MalformedRows, "push", full)

    # When / Then: the fault is raised (SQS retries it), not a failed manifest saying the CSV is bad
    with pytest.raises(OSError, match="No space left"):
        score(model, "csv", f"{HEADER}\n{GOOD_LINE}\nX,1\n".encode())


def xlsx_bytes() -> bytes:
    sink = io.BytesIO()
    with zipfile.ZipFile(sink, "w") as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("xl/workbook.xml", "<workbook/>")
    return sink.getvalue()


def test_given_an_excel_workbook_named_csv_when_delivered_then_the_manifest_says_what_it_is(
    notified_bucket: NotifiedBucket,
) -> None:
    # It was "the header line is not UTF-8 text: 'utf-8' codec can't decode byte 0xec in position 10"
    notified_bucket.put("incoming/team/applications.csv", xlsx_bytes())

    result = notified_bucket.drain()

    assert result.failed_message_ids == []
    (manifest,) = result.manifests
    assert manifest["status"] == "failed"
    assert manifest["error"]["code"] == "not_utf8"
    assert "Excel .xlsx workbook" in manifest["error"]["message"]
    assert "CSV UTF-8" in manifest["error"]["message"]


@pytest.mark.parametrize(
    ("data", "named"),
    [
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(504), "Excel 97-2003 workbook"),  # OLE2's magic
        (codecs.BOM_UTF16_LE + HEADER.replace(",", "\t").encode("utf-16-le"), "UTF-16"),
        (codecs.BOM_UTF16_BE + HEADER.encode("utf-16-be"), "UTF-16"),
    ],
)
def test_given_other_excel_exports_named_csv_then_the_error_names_them(
    model: ScoringModel, data: bytes, named: str
) -> None:
    error = unreadable(model, "csv", data)

    assert error.code == "not_utf8"
    assert named in error.message


@pytest.mark.parametrize(
    ("data", "named"),
    [
        (xlsx_bytes(), "Excel .xlsx workbook"),
        (gzip.compress(json.dumps(GOOD_ROWS[0]).encode()), "gzip-compressed"),
        (parquet_bytes({"a": pa.array([1])}), "name it .parquet"),
    ],
)
def test_given_binary_files_named_jsonl_then_the_error_names_them(
    model: ScoringModel, data: bytes, named: str
) -> None:
    # It was "line 1 is not UTF-8: 'utf-8' codec can't decode byte 0x8b in position 1"
    error = unreadable(model, "jsonl", data)

    assert error.code == "not_utf8"
    assert named in error.message


@pytest.mark.parametrize(("delimiter", "named"), [(";", "semicolons"), ("\t", "tabs")])
def test_given_a_csv_delimited_otherwise_then_missing_columns_says_so(
    model: ScoringModel, delimiter: str, named: str
) -> None:
    data = csv_bytes(GOOD_ROWS).decode().replace(",", delimiter).encode()

    error = unreadable(model, "csv", data)

    assert error.code == "missing_columns"
    assert f"separated by {named}" in error.message


def test_given_header_names_in_another_case_then_missing_columns_names_the_near_misses(
    model: ScoringModel,
) -> None:
    data = (HEADER.replace("age", "Age").replace("home", "HOME ") + "\n" + GOOD_LINE + "\n").encode()

    error = unreadable(model, "csv", data)

    assert error.code == "missing_columns"
    assert "case-sensitive: the file has 'Age' for 'age', 'HOME ' for 'home'" in error.message


def test_given_a_header_that_has_the_features_then_no_hint_is_added(model: ScoringModel) -> None:
    # A missing feature with no near miss: the message is as before
    data = (HEADER.replace("loan_ratio", "ratio") + "\n" + GOOD_LINE + "\n").encode()

    error = unreadable(model, "csv", data)

    assert error.message.endswith("'prior_default'")
