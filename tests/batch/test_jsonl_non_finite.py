"""JSON Lines: NaN, Infinity, -Infinity and numbers beyond a double reject their row (``not_finite``).

The reader finds them without a separate search of the text: the property test below compares its
verdicts with the rule it had before (a regular expression over the chunk's text deciding whether
the parsed values are looked at), so it passes against both the old and the new reader. It is a
guard for the change of method, not a new rule: a line is rejected exactly when, and for exactly
the keys where, Python's ``json`` reads a NaN or an infinity. Letters spelling NaN or Infinity inside
a string (a value or a key) are text like any other.
"""

from __future__ import annotations

import io
import json
import math
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lambdas.batch.formats import open_source
from lambdas.scoring.runtime import ScoringModel
from tests.batch.helpers import GOOD_ROWS, read_scored, score

# The reader's former test, copied as the oracle: text without one of these cannot hold a
# non-finite float, and a chunk whose text held one had every object's values looked at.
OLD_NON_FINITE_SPELLING = re.compile(r"NaN|Infinity|[eE]\+?[0-9]{3}|[0-9]{210}")
FIRST_LINE = '{"id": 0}'  # a first line that is a JSON object, so the file is a table

Verdicts = dict[int, list[str] | None]  # row number -> keys rejected as not_finite; None: not an object


def _reader_verdicts(lines: list[str], chunk_rows: int) -> Verdicts:
    data = "\n".join([FIRST_LINE, *lines]).encode()
    verdicts: Verdicts = {}
    for read in open_source("jsonl", io.BytesIO(data), chunk_rows=chunk_rows).chunks():
        for row in read.malformed:
            verdicts[row.row_number] = None
        chunk = read.chunk
        for index, number in enumerate(chunk.row_numbers):
            errors = chunk.pre_rejected.get(index, [])
            verdicts[int(number)] = [name for name, code, _ in errors if code == "not_finite"]
    return verdicts


def _holds_non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_holds_non_finite(item) for item in value.values())
    if isinstance(value, list):
        return any(_holds_non_finite(item) for item in value)
    return False


def _old_rule(lines: list[str], chunk_rows: int) -> Verdicts:
    """The verdicts of the old reader: per chunk of ``chunk_rows`` lines, the old expression over the
    chunk's text; where it matched, each key of each object whose value (json's reading, the last
    value of a repeated key) holds a non-finite float."""
    numbered = list(enumerate([FIRST_LINE, *lines], start=1))
    verdicts: Verdicts = {}
    for start in range(0, len(numbered), chunk_rows):
        chunk = numbered[start : start + chunk_rows]
        suspect = OLD_NON_FINITE_SPELLING.search("\n".join(line for _, line in chunk)) is not None
        for number, line in chunk:
            try:
                record = json.loads(line)
            except (ValueError, RecursionError):
                record = None
            if not isinstance(record, dict):
                verdicts[number] = None
                continue
            verdicts[number] = [
                name for name, value in record.items() if suspect and _holds_non_finite(value)
            ]
    return verdicts


# ---- generated lines ---------------------------------------------------------------------------

_NON_FINITE_TOKENS = ["NaN", "Infinity", "-Infinity"]
# Not JSON, also not to Python's json: the line is not_json_object, old and new alike.
_NEAR_MISSES = ["nan", "inf", "-NaN", "+Infinity", "Infinit", "NaNN", "- Infinity", "-infinity", "NaN1"]
_EDGE_NUMBERS = [
    "1e999",
    "-1e999",
    "1E+400",
    "1e0309",  # leading zeros in the exponent
    "1e-400",  # underflows to 0.0: finite
    "0.0e400",  # 0.0: finite, though the old expression matched it
    "1.7976931348623157e308",  # the largest double: finite
    "1.7976931348623159e308",  # rounds to infinity
    "9" * 250 + "e99",  # no three-digit exponent, still infinite
    "1" + "0" * 209 + "e99",  # 1e308: finite
    "2" + "0" * 209 + "e99",  # 2e308: infinite
    "1" + "0" * 400 + ".5",  # beyond a double, no exponent
    "1" + "0" * 400,  # an integer: json keeps it an int (never a float)
    "17976931348623157" + "0" * 292 + ".0",  # the largest double, written out: finite
]
_STRING_SPELLINGS = [
    '"NaN"',
    '"Infinity"',
    '"-Infinity"',
    '"\\u004eaN"',  # NaN with an escape
    '"Inf\\u0069nity"',
    '"\\"NaN\\""',  # quotes inside the string
    '"\\\\"',  # a string ending in a backslash: what follows is outside it
    '"NaN\\\\"',
    '"1e999"',
    '"' + "9" * 250 + '"',
]
_WORDS = ["NaN", "Infinity", "-Infinity", "1e999", "e+400", "x", "é", '"', "\\", "\u2028"]

_strings = st.one_of(
    st.sampled_from(_STRING_SPELLINGS),
    st.builds(
        lambda words, ascii_only: json.dumps("".join(words), ensure_ascii=ascii_only),
        st.lists(st.sampled_from(_WORDS), max_size=4),
        st.booleans(),
    ),
)
_keys = st.one_of(st.sampled_from(['"a"', '"b"', '"NaN"', '"Infinity"', '"\\u0061"']), _strings)


@st.composite
def _numbers(draw: st.DrawFn) -> str:
    """JSON numbers, some beyond a double: long integer parts, long fractions, long exponents."""
    sign = draw(st.sampled_from(["", "-"]))
    digits = draw(st.sampled_from([0, 1, 3, 208, 209, 210, 320]))
    whole = "0" if digits == 0 else draw(st.sampled_from("123456789")) + "7" * (digits - 1)
    fraction = draw(st.sampled_from(["", ".5", ".000001", "." + "3" * 40]))
    exponent = draw(
        st.one_of(
            st.just(""),
            st.builds(
                lambda e, s, d: e + s + d,
                st.sampled_from("eE"),
                st.sampled_from(["", "+", "-"]),
                st.text("0123456789", min_size=1, max_size=4),
            ),
        )
    )
    return sign + whole + fraction + exponent


_leaves = st.one_of(
    st.sampled_from(_NON_FINITE_TOKENS),
    st.sampled_from(_EDGE_NUMBERS),
    st.sampled_from(["true", "false", "null", "0", "12.5", "-3"]),
    st.floats(allow_nan=False, allow_infinity=False).map(json.dumps),
    _numbers(),
    _strings,
    st.sampled_from(_NEAR_MISSES),
)


def _object(pairs: list[tuple[str, str]]) -> str:
    return "{" + ", ".join(f"{key}: {value}" for key, value in pairs) + "}"


_values = st.recursive(
    _leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=3).map(lambda items: "[" + ",".join(items) + "]"),
        st.lists(st.tuples(_keys, children), max_size=3).map(_object),
    ),
    max_leaves=8,
)
_lines = st.one_of(
    st.lists(st.tuples(_keys, _values), max_size=5).map(_object),
    st.lists(st.tuples(_keys, _values), max_size=5).map(_object),
    _values,  # mostly not an object
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_lines, min_size=1, max_size=6), st.integers(1, 4))
def test_given_any_lines_then_the_not_finite_verdicts_are_the_old_rules(
    lines: list[str], chunk_rows: int
) -> None:
    assert _reader_verdicts(lines, chunk_rows) == _old_rule(lines, chunk_rows)


# ---- explicit cases -----------------------------------------------------------------------------


def _with(row: dict[str, Any], *extra: tuple[str, str]) -> str:
    """``row`` as a JSON line with ``extra`` (key, raw JSON value) pairs appended."""
    return json.dumps(row)[:-1] + "".join(f", {json.dumps(key)}: {value}" for key, value in extra) + "}"


def test_given_nan_in_a_feature_then_the_row_is_rejected_naming_the_field(model: ScoringModel) -> None:
    # Given NaN in the nullable income (it must not pass as a missing value), and -Infinity nested in
    # an extra key, between good rows in one chunk
    nan_income = json.dumps(GOOD_ROWS[0] | {"application_id": "NAN"}).replace("32000.0", "NaN")
    nested = _with(GOOD_ROWS[1] | {"application_id": "NESTED"}, ("history", '{"a": [1, -Infinity]}'))
    data = "\n".join([json.dumps(GOOD_ROWS[0]), nan_income, nested, json.dumps(GOOD_ROWS[2])]).encode()

    outcome = score(model, "jsonl", data)

    # Then each is rejected as not_finite, naming its key; the good rows are scored
    rejected = outcome.rejected_rows()
    assert [(row["row_number"], row["error_code"]) for row in rejected] == [
        ("2", "not_finite"),
        ("3", "not_finite"),
    ]
    assert rejected[0]["error"] == "income: income holds NaN or Infinity, which JSON does not allow"
    assert rejected[1]["error"].startswith("history: ")
    assert [row["application_id"] for row in read_scored("jsonl", outcome.scored)] == ["A-1", "A-3"]


def test_given_the_letters_inside_strings_and_keys_then_the_row_is_scored_with_them_unchanged(
    model: ScoringModel,
) -> None:
    # Given strings and keys spelling NaN and Infinity (also with escapes), in the same chunk as a
    # line whose NaN is a value
    letters = _with(
        GOOD_ROWS[0] | {"application_id": "NaN-Infinity"},
        ("NaN", '"-Infinity"'),
        ("note", '"\\"NaN\\" \\u004eaN Inf\\u0069nity 1e999"'),
        ("path", '"C:\\\\"'),
    )
    nan_value = _with(GOOD_ROWS[1], ("score", "NaN"))

    outcome = score(model, "jsonl", f"{letters}\n{nan_value}\n".encode())

    # Then only the NaN value is rejected; the strings come out as they were read
    assert [(row["row_number"], row["error"].split(":")[0]) for row in outcome.rejected_rows()] == [
        ("2", "score")
    ]
    (scored,) = read_scored("jsonl", outcome.scored)
    assert scored["application_id"] == "NaN-Infinity"
    assert scored["NaN"] == "-Infinity"
    assert scored["note"] == '"NaN" NaN Infinity 1e999'
    assert scored["path"] == "C:\\"


@pytest.mark.parametrize(
    ("number", "rejected"),
    [
        ("1e999", True),
        ("-1E+400", True),
        ("1e0309", True),
        ("1.7976931348623159e308", True),
        ("9" * 250 + "e99", True),  # no three-digit exponent
        ("2" + "0" * 209 + "e99", True),
        ("1" + "0" * 400 + ".5", True),  # no exponent
        ("1e-400", False),  # underflows to 0.0
        ("0.0e400", False),
        ("1.7976931348623157e308", False),  # the largest double
        ("1" + "0" * 209 + "e99", False),  # 1e308
        ("17976931348623157" + "0" * 292 + ".0", False),
        ("1" + "0" * 400, False),  # an integer stays an int (a feature would be out_of_range)
    ],
)
def test_given_a_number_beyond_a_double_then_the_row_is_not_finite_and_one_within_it_is_not(
    number: str, rejected: bool
) -> None:
    line = '{"id": 1, "x": [' + number + "]}"
    assert _reader_verdicts([line], chunk_rows=60_000)[2] == (["x"] if rejected else [])
    assert _old_rule([line], chunk_rows=60_000)[2] == (["x"] if rejected else [])


def test_given_a_repeated_key_then_not_finite_follows_the_value_json_keeps() -> None:
    # Given NaN as the first of two values of a key (json keeps the last), then as the last, then a
    # line that breaks after its NaN, and a clean line after each
    lines = [
        '{"x": NaN, "x": 1}',
        '{"x": 1}',
        '{"x": 1, "x": NaN}',
        '{"y": 2}',
        '{"x": NaN, "y": }',
        '{"x": 1, "y": "NaN"}',
    ]

    source = open_source("jsonl", io.BytesIO("\n".join(lines).encode()))
    (read,) = source.chunks()

    # Then the repeat is named on both; not_finite only where the kept value is NaN; the broken line
    # is not an object; nothing carries over to the next line
    codes = {
        int(read.chunk.row_numbers[index]): [(name, code) for name, code, _ in errors]
        for index, errors in read.chunk.pre_rejected.items()
    }
    assert codes == {1: [("x", "duplicate_key")], 3: [("x", "duplicate_key"), ("x", "not_finite")]}
    assert [(row.row_number, row.error_code) for row in read.malformed] == [(5, "not_json_object")]
    assert list(read.chunk.row_numbers) == [1, 2, 3, 4, 6]
