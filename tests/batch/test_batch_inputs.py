"""Awkward but legal input files, and bad values, through ``score_source`` (no network).

Each test pins one rule: a value problem rejects its row and never fails the file, valid files stay
readable wherever a block boundary falls, carried-through values and names come out as they went
in, and every output is a valid file of its format.
"""

from __future__ import annotations

import csv
import decimal
import gzip
import io
import json
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lambdas.batch.formats import (
    OUTPUT_COLUMNS,
    RAW_LINE_COLUMN,
    REJECTED_FIXED_COLUMNS,
    UnreadableFileError,
)
from lambdas.batch.layout import FileFormat
from lambdas.scoring.runtime import ScoringModel
from tests.batch.helpers import (
    BAD_ROWS,
    COLUMNS,
    GOOD_LINE,
    GOOD_ROWS,
    HEADER,
    Scored,
    csv_bytes,
    expected_probability,
    file_bytes,
    jsonl_bytes,
    read_scored,
    score,
)


def parquet(columns: dict[str, pa.Array]) -> bytes:
    sink = io.BytesIO()
    pq.write_table(pa.table(columns), sink)
    return sink.getvalue()


def good_columns(rows: int) -> dict[str, pa.Array]:
    """GOOD_ROWS[0] repeated, one typed Arrow column per input column."""
    row = GOOD_ROWS[0]
    return {
        "application_id": pa.array([f"A-{i}" for i in range(1, rows + 1)]),
        "age": pa.array([row["age"]] * rows, pa.int64()),
        "income": pa.array([row["income"]] * rows, pa.float64()),
        "home": pa.array([row["home"]] * rows),
        "loan_ratio": pa.array([row["loan_ratio"]] * rows, pa.float64()),
        "prior_default": pa.array([row["prior_default"]] * rows),
    }


def codes(outcome: Scored) -> list[tuple[int, str]]:
    return [(int(row["row_number"]), row["error_code"]) for row in outcome.rejected_rows()]


# ---- 1. a value problem rejects its row, never the file ----------------------------------------


def test_given_parquet_integers_beyond_2_53_then_they_become_doubles_and_the_range_check_judges_them(
    model: ScoringModel,
) -> None:
    # Given int64 ages and uint64 incomes that a safe cast to float64 refuses
    columns = good_columns(3)
    columns["age"] = pa.array([24, 2**60, 9007199254740993], pa.int64())
    columns["income"] = pa.array([2**63 + 5, 1, 2], pa.uint64())

    # When
    outcome = score(model, "parquet", parquet(columns))

    # Then the huge income is the nearest double (no upper bound: scored); the ages are out of range
    assert codes(outcome) == [(2, "out_of_range"), (3, "out_of_range")]
    (scored,) = read_scored("parquet", outcome.scored)
    assert scored["income"] == 2**63 + 5  # carried through as the file had it
    assert scored["age"] == 24


def test_given_cells_no_feature_can_take_then_only_their_rows_are_rejected(
    model: ScoringModel,
) -> None:
    # Given a list column where a number is expected, and a JSON integer beyond a double's range
    columns = good_columns(3)
    columns["income"] = pa.array([[1.0, 2.0], None, [3.0]], pa.list_(pa.float64()))
    from_parquet = score(model, "parquet", parquet(columns))
    huge = jsonl_bytes([GOOD_ROWS[0]]).decode().replace("32000.0", "1" + "0" * 400).encode()
    from_jsonl = score(model, "jsonl", huge + jsonl_bytes([GOOD_ROWS[1]]))

    # Then each bad cell rejects its own row, naming the field
    assert codes(from_parquet) == [(1, "wrong_type"), (3, "wrong_type")]
    assert from_parquet.counts.rows_scored == 1  # the null income is a missing value
    assert codes(from_jsonl) == [(1, "out_of_range")]  # as the API reports it
    assert from_jsonl.rejected_rows()[0]["error"].startswith("income: ")


def test_given_an_integer_beyond_a_double_in_csv_then_out_of_range_but_an_overflowing_float_not_finite(
    model: ScoringModel,
) -> None:
    # Given the same cell written as 401 digits, and as an exponent that overflows to infinity
    lines = [HEADER, GOOD_LINE.replace("32000.0", "1" + "0" * 400), GOOD_LINE.replace("32000.0", "1e400")]
    outcome = score(model, "csv", "\n".join([*lines, GOOD_LINE]).encode())

    # Then the integer is out of range, as the API answers for a JSON integer of that size, and the
    # float that a parser turns into infinity is not finite, as the API answers for 1e400
    assert codes(outcome) == [(1, "out_of_range"), (2, "not_finite")]
    assert outcome.counts.rows_scored == 1


# ---- 2. quoted line breaks, wherever the block boundary falls -----------------------------------


def test_given_quoted_values_with_line_breaks_across_blocks_then_every_row_is_read_and_numbered(
    model: ScoringModel,
) -> None:
    # Given 300 rows whose ids span two lines, a bad age at row 150 and a short line at row 200
    lines = [HEADER]
    for number in range(1, 301):
        age = "12" if number == 150 else "24"
        lines.append(f'"A-{number}\nsecond line",{age},32000.0,RENT,0.45,true')
    lines[200] = '"A-200\nshort",24'
    data = ("\n".join(lines) + "\n").encode()

    # When read in 512-byte blocks, so many boundaries fall inside a quoted value
    outcome = score(model, "csv", data, csv_block_bytes=512)

    # Then the file is readable, and rows are numbered by record, not by physical line
    assert (outcome.counts.rows_in, outcome.counts.rows_scored) == (300, 298)
    assert codes(outcome) == [(150, "out_of_range"), (200, "wrong_field_count")]
    scored = read_scored("csv", outcome.scored)
    assert scored[0]["application_id"] == "A-1\nsecond line"
    assert outcome.rejected_rows()[1][RAW_LINE_COLUMN] == '"A-200\nshort",24'


def test_given_a_quote_that_is_never_closed_then_the_unreadable_file_says_so(model: ScoringModel) -> None:
    lines = [HEADER] + [GOOD_LINE] * 200
    lines[100] = '"A-100,24,32000.0,RENT,0.45,true'

    with pytest.raises(UnreadableFileError) as raised:
        score(model, "csv", ("\n".join(lines) + "\n").encode(), csv_block_bytes=512)

    assert raised.value.code == "not_a_table"
    assert "a quoted value is never closed, or one row is longer than 512 bytes" in raised.value.message


# ---- 3. only the empty cell is null -----------------------------------------------------------


def test_given_na_like_text_then_it_is_kept_as_text_and_nan_in_a_number_is_an_error(
    model: ScoringModel,
) -> None:
    # Given NA-like words in an extra column and in features, and a quoted empty income
    data = (
        f"{HEADER},note\n"
        "A-1,24,,RENT,0.45,true,NA\n"  # empty income: missing (nullable), fine
        'A-2,24,"",RENT,0.45,true,NULL\n'  # quoted empty income: missing too
        "A-3,24,NaN,RENT,0.45,true,#N/A\n"  # NaN typed in a number: an error
        "A-4,24,32000,N/A,0.45,true,null\n"  # N/A is not a home category
    ).encode()

    # When
    outcome = score(model, "csv", data)

    # Then carried-through cells and rejected rows show what was sent
    scored = read_scored("csv", outcome.scored)
    assert [(row["application_id"], row["note"], row["income"]) for row in scored] == [
        ("A-1", "NA", ""),
        ("A-2", "NULL", ""),
    ]
    assert codes(outcome) == [(3, "not_finite"), (4, "unknown_category")]
    rejected = outcome.rejected_rows()
    assert [(row["income"], row["home"], row["note"]) for row in rejected] == [
        ("NaN", "RENT", "#N/A"),
        ("32000", "N/A", "null"),
    ]


# ---- 4. every row rejected: still a valid scored file with the full schema -----------------------


@pytest.mark.parametrize("file_format", ["csv", "csv.gz", "parquet", "jsonl"])
def test_given_a_file_whose_rows_are_all_rejected_then_the_scored_file_is_valid_and_empty(
    model: ScoringModel, file_format: FileFormat
) -> None:
    outcome = score(model, file_format, file_bytes(file_format, [row for row, _ in BAD_ROWS]))

    assert (outcome.counts.rows_scored, outcome.counts.rows_rejected) == (0, len(BAD_ROWS))
    if file_format == "parquet":
        table = pq.read_table(io.BytesIO(outcome.scored))
        assert table.num_rows == 0
        assert table.column_names == [*COLUMNS, *OUTPUT_COLUMNS]
        assert table.schema.field("age").type == pa.int64()
        assert table.schema.field("probability_of_default").type == pa.float64()
    elif file_format == "jsonl":
        assert outcome.scored == b""  # zero JSON lines
    else:
        text = gzip.decompress(outcome.scored) if file_format == "csv.gz" else outcome.scored
        assert list(csv.reader(io.StringIO(text.decode()))) == [[*COLUMNS, *OUTPUT_COLUMNS]]


# ---- 5. decimal columns from database exports ---------------------------------------------------


def test_given_decimal_parquet_columns_then_they_are_numbers(model: ScoringModel) -> None:
    columns = good_columns(2)
    columns["income"] = pa.array([decimal.Decimal("32000.00"), None], pa.decimal128(10, 2))
    columns["loan_ratio"] = pa.array([decimal.Decimal("0.45"), decimal.Decimal("1.50")], pa.decimal128(3, 2))

    outcome = score(model, "parquet", parquet(columns))

    assert codes(outcome) == [(2, "out_of_range")]  # a ratio of 1.5: judged as a number, not a type
    (scored,) = read_scored("parquet", outcome.scored)
    assert scored["income"] == decimal.Decimal("32000.00")
    assert scored["probability_of_default"] == pytest.approx(expected_probability(GOOD_ROWS[0]), abs=1e-12)


def test_given_nan_stored_in_a_parquet_float_column_then_it_is_not_finite_unlike_a_null(
    model: ScoringModel,
) -> None:
    # Given a nullable income column with a value, a NaN, a null and an infinity
    columns = good_columns(4)
    columns["income"] = pa.array([32000.0, float("nan"), None, float("inf")], pa.float64())

    outcome = score(model, "parquet", parquet(columns))

    # Then the NaN and the infinity are errors; the null is a missing income, scored
    assert codes(outcome) == [(2, "not_finite"), (4, "not_finite")]
    assert outcome.counts.rows_scored == 2


# ---- 6. JSON Lines: the first line is not a header ----------------------------------------------


@pytest.mark.parametrize("line", [1, 2])
def test_given_a_json_line_without_a_nullable_feature_then_only_that_row_is_rejected(
    model: ScoringModel, line: int
) -> None:
    rows = [dict(GOOD_ROWS[0]), dict(GOOD_ROWS[1])]
    del rows[line - 1]["income"]

    outcome = score(model, "jsonl", jsonl_bytes(rows))

    assert codes(outcome) == [(line, "missing")]
    assert outcome.rejected_rows()[0]["error"] == "income: income is required"
    assert outcome.counts.rows_scored == 1


# ---- 7. JSON Lines: NaN and Infinity are not JSON --------------------------------------------------


def test_given_nan_or_infinity_in_json_lines_then_the_row_is_rejected_and_the_output_is_strict_json(
    model: ScoringModel,
) -> None:
    good = json.dumps(GOOD_ROWS[0])
    data = "\n".join(
        [
            good.replace("32000.0", "NaN"),  # a nullable feature: NaN must not pass as missing
            good.replace('"A-1"', '"A-2", "score": Infinity'),  # an extra field
            good.replace('"A-1"', '"A-3", "history": [1, -Infinity]'),
            good.replace('"A-1"', '"A-4", "big": 1e999'),
            good.replace('"A-1"', '"A-5", "long": 1' + "0" * 400 + ".5"),  # beyond a double, no exponent
            good,
        ]
    ).encode()

    outcome = score(model, "jsonl", data)

    assert codes(outcome) == [(line, "not_finite") for line in range(1, 6)]
    assert [row["error"].split(":")[0] for row in outcome.rejected_rows()] == [
        "income",
        "score",
        "history",
        "big",
        "long",
    ]

    def no_constants(token: str) -> Any:
        raise ValueError(f"not JSON: {token}")

    scored = [json.loads(line, parse_constant=no_constants) for line in outcome.scored.decode().splitlines()]
    assert [row["application_id"] for row in scored] == ["A-1"]


# ---- 8. a line with the wrong number of fields keeps its full text ----------------------------------


def test_given_a_long_line_with_the_wrong_field_count_then_the_rejected_file_keeps_all_of_it(
    model: ScoringModel,
) -> None:
    long_line = GOOD_LINE + ',"' + "x" * 500 + '",extra'
    data = f"{HEADER}\n{GOOD_LINE}\n{long_line}\n".encode()

    outcome = score(model, "csv", data)

    (rejected,) = outcome.rejected_rows()
    assert (rejected["row_number"], rejected["error_code"]) == ("2", "wrong_field_count")
    assert rejected[RAW_LINE_COLUMN] == long_line
    assert rejected["error"] == f"expected 6 fields, got 8 (the line is in {RAW_LINE_COLUMN})"


# ---- 9. blank lines before the header, and header names with spaces -------------------------------


def test_given_blank_lines_before_the_header_then_the_file_is_read(model: ScoringModel) -> None:
    outcome = score(model, "csv", b"\n  \r\n" + csv_bytes(GOOD_ROWS))

    assert (outcome.counts.rows_in, outcome.counts.rows_scored) == (3, 3)


def test_given_header_names_with_spaces_then_features_match_and_the_names_come_out_as_written(
    model: ScoringModel,
) -> None:
    header = ["application_id ", " age", "income", "home", "loan_ratio", " prior_default "]
    data = (",".join(header) + f"\n{GOOD_LINE}\n").encode()

    outcome = score(model, "csv", data)

    assert outcome.counts.rows_scored == 1
    assert next(csv.reader(io.StringIO(outcome.scored.decode()))) == [*header, *OUTPUT_COLUMNS]
    assert outcome.rejected_header() == [*REJECTED_FIXED_COLUMNS, *header, RAW_LINE_COLUMN]


# ---- 10. the rejected file is in row order ----------------------------------------------------------


def test_given_short_lines_and_bad_values_across_blocks_then_rejected_rows_are_in_row_order(
    model: ScoringModel,
) -> None:
    # Given a bad age every 7 rows and a short line two rows later, read in small blocks
    lines = [GOOD_LINE] * 200
    for start in range(0, 200, 7):
        lines[start] = GOOD_LINE.replace(",24,", ",12,")
        if start + 2 < 200:
            lines[start + 2] = "X,1"
    data = ("\n".join([HEADER, *lines]) + "\n").encode()

    outcome = score(model, "csv", data, csv_block_bytes=512)

    numbers = [number for number, _ in codes(outcome)]
    assert len(numbers) == outcome.counts.rows_rejected == 58
    assert numbers == sorted(numbers)


# ---- 11. input columns named like the rejected file's own ---------------------------------------------


def test_given_input_columns_named_like_the_rejected_files_columns_then_the_header_has_no_duplicates(
    model: ScoringModel,
) -> None:
    extra = ["row_number", "error", "error_code", "input_error", RAW_LINE_COLUMN]
    bad_line = GOOD_LINE.replace(",24,", ",12,")
    data = (f"{HEADER},{','.join(extra)}\n{bad_line},r,e,c,ie,rl\n").encode()

    # When
    outcome = score(model, "csv", data)

    # Then the input's colliding columns get the input_ prefix (again, if that name is taken too)
    header = outcome.rejected_header()
    assert len(header) == len(set(header))
    renamed = ["input_row_number", "input_input_error", "input_error_code", "input_error", "input_raw_line"]
    assert header == [*REJECTED_FIXED_COLUMNS, *COLUMNS, *renamed, RAW_LINE_COLUMN]
    (rejected,) = outcome.rejected_rows()
    assert (rejected["row_number"], rejected["error_code"]) == ("1", "out_of_range")
    assert [rejected[name] for name in renamed] == ["r", "e", "c", "ie", "rl"]
    assert rejected[RAW_LINE_COLUMN] == ""


# ---- 12. numbers in text are plain ASCII decimals ----------------------------------------------------


def test_given_numbers_written_in_other_notations_then_they_are_wrong_type_like_1_comma_000(
    model: ScoringModel,
) -> None:
    incomes = ["1_000", "１２", '"1,000"', "0x10", " 1000 ", "1e3", "+.5", "-inf"]
    data = (
        HEADER + "\n" + "".join(f"A-{i},24,{income},RENT,0.45,true\n" for i, income in enumerate(incomes, 1))
    ).encode()

    outcome = score(model, "csv", data)

    assert codes(outcome) == [
        (1, "wrong_type"),
        (2, "wrong_type"),
        (3, "wrong_type"),
        (4, "wrong_type"),
        (8, "not_finite"),
    ]
    scored = read_scored("csv", outcome.scored)
    assert [row["income"] for row in scored] == [" 1000 ", "1e3", "+.5"]
