"""Edge-case inputs found in review, through ``score_source``: each used to crash the whole file (the
SQS message retried, then dead-lettered, with no manifest), score a value the API rejects, make a
readable file unreadable, hang on its header, or give an error that did not say what was wrong.
"""

from __future__ import annotations

import gzip
import io
import json

import pytest

from lambdas.batch.formats import JSON_CHUNK_MAX_CHARS, JSON_LINE_MAX_CHARS, UnreadableFileError, open_source
from lambdas.scoring.runtime import ScoringModel
from tests.batch.helpers import (
    COLUMNS,
    GOOD_LINE,
    GOOD_ROWS,
    HEADER,
    expected_probability,
    parquet_bytes,
    read_rejected,
    read_scored,
    score,
)


def json_line(**extra: object) -> str:
    """GOOD_ROWS[0] as a JSON line, with extra keys (raw JSON text) appended."""
    text = json.dumps(GOOD_ROWS[0])[:-1]
    return text + "".join(f', "{name}": {raw}' for name, raw in extra.items()) + "}"


# ---- JSON Lines: a line the parser cannot take rejects that line, never the file -----------------


def test_given_a_json_line_with_an_integer_too_long_for_python_then_only_that_line_is_rejected(
    model: ScoringModel,
) -> None:
    # Python refuses to convert integers of more than 4300 digits (ValueError, not JSONDecodeError).
    long_integer = "9" * 5000
    data = "\n".join([json_line(), json_line(note=long_integer), json_line()]).encode()

    outcome = score(model, "jsonl", data)

    assert (outcome.counts.rows_in, outcome.counts.rows_scored, outcome.counts.rows_rejected) == (3, 2, 1)
    (rejected,) = read_rejected(outcome.rejected)
    assert (rejected["row_number"], rejected["error_code"]) == ("2", "not_json_object")
    assert "4300" in rejected["error"]  # says why the line could not be read
    assert rejected["record"] == json_line(note=long_integer)


def test_given_a_first_json_line_with_an_integer_too_long_for_python_then_the_file_is_not_a_table(
    model: ScoringModel,
) -> None:
    data = (json_line(note="9" * 5000) + "\n" + json_line() + "\n").encode()

    with pytest.raises(UnreadableFileError) as raised:
        score(model, "jsonl", data)

    assert raised.value.code == "not_a_table"


def test_given_a_json_line_longer_than_the_bound_then_the_file_is_not_a_table_without_reading_it_whole(
    model: ScoringModel,
) -> None:
    # Given good lines, then one line (an extra value) longer than a JSON line may be, then more
    padding = "x" * (JSON_LINE_MAX_CHARS + 10)
    data = "\n".join([json_line(), json_line(note=f'"{padding}"'), json_line()]).encode()

    with pytest.raises(UnreadableFileError) as raised:
        score(model, "jsonl", data)

    assert raised.value.code == "not_a_table"
    assert "line 2 is longer than 1,048,576 characters" in raised.value.message


def test_given_a_json_line_of_exactly_the_bound_then_it_is_a_row_like_any_other(model: ScoringModel) -> None:
    # Given lines exactly JSON_LINE_MAX_CHARS long (the last without a line break)
    short = json_line(note='""')
    line = json_line(note=f'"{"x" * (JSON_LINE_MAX_CHARS - len(short))}"')
    assert len(line) == JSON_LINE_MAX_CHARS
    outcome = score(model, "jsonl", f"{line}\n{line}".encode())
    assert (outcome.counts.rows_scored, outcome.counts.rows_rejected) == (2, 0)


def test_given_long_json_lines_then_a_chunk_ends_at_the_text_bound_before_the_row_bound(
    model: ScoringModel,
) -> None:
    # Given 12 lines of ~1 MB each (48 MB of text would otherwise be one 60,000-row chunk)
    line = json_line(note=f'"{"x" * (JSON_LINE_MAX_CHARS - 1000)}"')
    outcome = score(model, "jsonl", "\n".join([line] * 12).encode())
    # Then every row is scored, a chunk ending at the line that reaches JSON_CHUNK_MAX_CHARS (5 lines)
    assert outcome.counts.rows_scored == 12
    assert outcome.counts.max_chunk_rows == JSON_CHUNK_MAX_CHARS // len(line) + 1
    assert outcome.counts.chunks == 3


def test_given_a_json_line_nested_too_deep_to_parse_then_only_that_line_is_rejected(
    model: ScoringModel,
) -> None:
    deep = "[" * 20_000 + "]" * 20_000  # json.loads gives up (RecursionError) well before this
    data = "\n".join([json_line(), json_line(note=deep)]).encode()

    outcome = score(model, "jsonl", data)

    assert (outcome.counts.rows_scored, outcome.counts.rows_rejected) == (1, 1)
    assert [row["error_code"] for row in read_rejected(outcome.rejected)] == ["not_json_object"]


def test_given_deeply_nested_extra_values_in_a_chunk_that_holds_a_nan_then_the_file_is_scored(
    model: ScoringModel,
) -> None:
    # The NaN makes the chunk "suspect", so every record is searched for non-finite floats.
    nested = "[" * 800 + "1.5" + "]" * 800
    data = "\n".join([json_line(note=nested), json_line(note="NaN")]).encode()

    outcome = score(model, "jsonl", data)

    (scored,) = read_scored("jsonl", outcome.scored)
    assert scored["probability_of_default"] == pytest.approx(expected_probability(GOOD_ROWS[0]))
    assert [(row["row_number"], row["error_code"]) for row in read_rejected(outcome.rejected)] == [
        ("2", "not_finite")
    ]


@pytest.mark.parametrize("overflowing", ["9" * 250 + "e99", "9" * 308 + ".9e2", "-" + "1" * 220 + "e90"])
def test_given_a_json_float_that_overflows_without_a_three_digit_exponent_then_the_row_is_not_finite(
    model: ScoringModel, overflowing: str
) -> None:
    assert float(overflowing) in (float("inf"), float("-inf"))
    data = "\n".join([json_line(), json_line(note=overflowing)]).encode()

    outcome = score(model, "jsonl", data)

    assert (outcome.counts.rows_scored, outcome.counts.rows_rejected) == (1, 1)
    (rejected,) = read_rejected(outcome.rejected)
    assert (rejected["row_number"], rejected["error_code"]) == ("2", "not_finite")
    assert rejected["error"].startswith("note:")
    # The scored file stays strict JSON.
    for line in outcome.scored.decode().splitlines():
        json.loads(line, parse_constant=lambda name: pytest.fail(f"{name} in the scored file"))


@pytest.mark.parametrize(
    ("field", "values"),
    [
        ("home", ['["RENT"]']),  # one line, a one-element list: was scored as if it were "RENT"
        ("age", ["[24]", "[30]"]),
        ("age", ["[24, 25]", "[30, 31]"]),  # same-length lists on every line: the file crashed
        ("home", ['["RENT", "OWN"]', '["OWN", "RENT"]']),
        ("loan_ratio", ["[]", "[]"]),
    ],
)
def test_given_json_lists_in_a_feature_then_those_rows_are_wrong_type_as_in_the_api(
    model: ScoringModel, field: str, values: list[str]
) -> None:
    row = {**GOOD_ROWS[0]}
    del row[field]
    lines = [json.dumps(row)[:-1] + f', "{field}": {value}}}' for value in values]
    data = "\n".join([*lines, json_line()]).encode()

    # A chunk holding only list values: the runtime must not take them for a 2-D column.
    outcome = score(model, "jsonl", data, chunk_rows=len(values))

    assert outcome.counts.rows_scored == 1
    rejected = read_rejected(outcome.rejected)
    assert [(line["error_code"], line["error"].split(":")[0]) for line in rejected] == [
        ("wrong_type", field)
    ] * len(values)


# ---- CSV: how the header line ends ------------------------------------------------------------


def test_given_csv_with_carriage_return_line_endings_then_every_row_is_scored(model: ScoringModel) -> None:
    # Classic Mac / some Excel exports end lines with a lone CR; pyarrow reads those, so must the header.
    data = "\r".join([HEADER, GOOD_LINE, "A-2,52,90000.0,OWN,0.05,false", "A-3,12,1,RENT,0.1,false"]).encode()

    outcome = score(model, "csv", data)

    assert (outcome.counts.rows_in, outcome.counts.rows_scored, outcome.counts.rows_rejected) == (3, 2, 1)
    scored = read_scored("csv", outcome.scored)
    assert [row["application_id"] for row in scored] == ["A-1", "A-2"]
    assert float(scored[0]["probability_of_default"]) == pytest.approx(expected_probability(GOOD_ROWS[0]))
    assert [row["row_number"] for row in read_rejected(outcome.rejected)] == ["3"]


def test_given_a_header_name_quoted_across_lines_then_the_header_is_one_record(model: ScoringModel) -> None:
    data = f'"application\nid",{",".join(COLUMNS[1:])}\r\n{GOOD_LINE}\r\n'.encode()

    outcome = score(model, "csv", data)

    (scored,) = read_scored("csv", outcome.scored)
    assert scored["application\nid"] == "A-1"
    assert float(scored["probability_of_default"]) == pytest.approx(expected_probability(GOOD_ROWS[0]))


def test_given_a_csv_without_a_line_break_in_a_block_then_it_is_not_a_table_and_not_read_whole() -> None:
    class CountingStream(io.BytesIO):
        requested = 0

        def read(self, size: int | None = -1) -> bytes:
            data = super().read(size)
            CountingStream.requested += len(data)
            return data

    data = b"x," * 4_000_000  # 8 MB, one "line"
    with pytest.raises(UnreadableFileError) as raised:
        open_source("csv", CountingStream(data), csv_block_bytes=64 * 1024)

    assert raised.value.code == "not_a_table"
    assert "line break" in raised.value.message
    assert CountingStream.requested < 4 * 1024 * 1024


def test_given_a_very_wide_header_with_a_repeated_name_then_the_name_is_reported(model: ScoringModel) -> None:
    # 200k names, one of them twice. The duplicate check used list.count per name: 4e10 comparisons
    # (minutes); it now counts once. No timing is asserted here: a quadratic check shows as a slow test.
    names = [f"c{i}" for i in range(200_000)]
    names[-1] = "c7"
    header = ",".join(names)

    with pytest.raises(UnreadableFileError) as raised:
        score(model, "csv", f"{header}\n{'1,' * 199_999}1\n".encode())

    assert raised.value.code == "duplicate_columns"
    assert "['c7']" in raised.value.message


def test_given_a_json_line_that_is_an_array_then_the_error_names_what_it_is(model: ScoringModel) -> None:
    data = "\n".join([json_line(), "[1, 2]", "null"]).encode()

    outcome = score(model, "jsonl", data)

    assert [row["error"] for row in read_rejected(outcome.rejected)] == [
        "the line is not a JSON object (a JSON array, not an object)",
        "the line is not a JSON object (a JSON null, not an object)",
    ]


def test_given_gzip_bytes_under_a_csv_name_then_the_error_says_it_is_gzip(model: ScoringModel) -> None:
    data = gzip.compress(f"{HEADER}\n{GOOD_LINE}\n".encode())

    with pytest.raises(UnreadableFileError) as raised:
        score(model, "csv", data)

    assert raised.value.code == "not_utf8"
    assert ".csv.gz" in raised.value.message


def test_given_parquet_bytes_under_a_csv_name_then_the_error_says_it_is_parquet(model: ScoringModel) -> None:
    data = parquet_bytes(GOOD_ROWS)

    with pytest.raises(UnreadableFileError) as raised:
        score(model, "csv", data)

    assert raised.value.code == "not_utf8"
    assert ".parquet" in raised.value.message
