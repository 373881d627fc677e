"""JSON Lines: a line whose object holds a key twice is a rejected row (``duplicate_key``), never scored.

Python's json keeps the last value of a repeated key, other readers of the same file may keep the
first: the row would be scored with a value that an auditor re-reading the input does not see. The
line is rejected naming the key; the other lines are scored exactly as without it.
"""

from __future__ import annotations

import io
import json
import random
from typing import Any

import pytest

from lambdas.batch.formats import _repeated_key_errors, open_source
from lambdas.scoring.runtime import ScoringModel
from tests.batch.helpers import GOOD_ROWS, expected_probability, jsonl_bytes, read_scored, score


def _line(row: dict[str, Any], *extra: tuple[str, str]) -> str:
    """``row`` as a JSON line with ``extra`` (key, raw JSON value) pairs appended, repeats allowed."""
    text = json.dumps(row)[:-1]
    return text + "".join(f", {json.dumps(key)}: {value}" for key, value in extra) + "}"


def test_given_one_line_with_a_feature_twice_among_good_lines_then_only_it_is_rejected_naming_the_key(
    model: ScoringModel,
) -> None:
    # Given age 12 (below the card's minimum of 18) and then 45 on line 3: json alone would score 45.
    bad = _line(GOOD_ROWS[1] | {"application_id": "DUP", "age": 12}, ("age", "45"))
    lines = [json.dumps(GOOD_ROWS[0]), json.dumps(GOOD_ROWS[1]), bad, json.dumps(GOOD_ROWS[2])]

    outcome = score(model, "jsonl", "\n".join(lines).encode())

    counts = outcome.counts
    assert (counts.rows_in, counts.rows_scored, counts.rows_rejected) == (4, 3, 1)
    (rejected,) = outcome.rejected_rows()
    assert rejected["row_number"] == "3"
    assert rejected["error_code"] == "duplicate_key"
    assert rejected["error"].startswith("age: ")
    assert "more than once" in rejected["error"]
    assert rejected["record"] == bad  # the line as sent, both values visible
    # Nothing else changes: the good lines come out as they do from a file without the bad one.
    alone = score(model, "jsonl", jsonl_bytes(GOOD_ROWS))
    assert read_scored("jsonl", outcome.scored) == read_scored("jsonl", alone.scored)
    scored = read_scored("jsonl", outcome.scored)
    assert [row["application_id"] for row in scored] == ["A-1", "A-2", "A-3"]
    assert scored[0]["probability_of_default"] == pytest.approx(expected_probability(GOOD_ROWS[0]))


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ((("income", "32000.0"),), "income"),  # the same value again: still ambiguous text
        ((("application_id", '"OTHER"'),), "application_id"),  # a carried-through key, not a feature
        ((("note", '{"by": "a", "by": "b"}'),), "note.by"),  # inside a nested object
        ((("note", '[{"x": 1}, {"x": 2, "x": 3}]'),), "note[1].x"),  # inside a list
        ((("\\u0061ge", "45"),), "age"),  # the same key spelled with an escape
    ],
)
def test_given_a_repeated_key_anywhere_in_the_line_then_the_row_is_rejected_naming_its_path(
    model: ScoringModel, extra: tuple[tuple[str, str], ...], field: str
) -> None:
    text = json.dumps(GOOD_ROWS[0])[:-1] + "".join(f', "{key}": {value}' for key, value in extra) + "}"

    outcome = score(model, "jsonl", (json.dumps(GOOD_ROWS[1]) + "\n" + text + "\n").encode())

    assert (outcome.counts.rows_scored, outcome.counts.rows_rejected) == (1, 1)
    (rejected,) = outcome.rejected_rows()
    assert (rejected["row_number"], rejected["error_code"]) == ("2", "duplicate_key")
    assert rejected["error"].split(": ")[0] == field


def test_given_whitespace_around_the_colon_of_a_repeated_key_then_it_is_found(model: ScoringModel) -> None:
    # JSON allows spaces and tabs between a key and its colon (line breaks would end the line here).
    text = json.dumps(GOOD_ROWS[0], separators=(" , ", " :\t "))[:-1] + ' , "age"\t :  45}'
    outcome = score(model, "jsonl", text.encode())
    assert [row["error_code"] for row in outcome.rejected_rows()] == ["duplicate_key"]


def test_given_the_first_line_with_a_repeated_key_then_the_file_is_read_and_that_row_rejected(
    model: ScoringModel,
) -> None:
    # Only a first line that is not a JSON object makes the file unreadable; this one is an object.
    data = "\n".join([_line(GOOD_ROWS[0], ("age", "45")), json.dumps(GOOD_ROWS[1])]).encode()

    outcome = score(model, "jsonl", data)

    assert (outcome.counts.rows_scored, outcome.counts.rows_rejected) == (1, 1)
    assert [(row["row_number"], row["error_code"]) for row in outcome.rejected_rows()] == [
        ("1", "duplicate_key")
    ]


def test_given_a_repeated_key_before_a_syntax_error_then_the_line_is_not_a_json_object(
    model: ScoringModel,
) -> None:
    line = json.dumps(GOOD_ROWS[0])[:-1] + ', "x": {"a": 1, "a": 2}, "note": ]}'
    outcome = score(model, "jsonl", (json.dumps(GOOD_ROWS[1]) + "\n" + line).encode())
    assert [(row["row_number"], row["error_code"]) for row in outcome.rejected_rows()] == [
        ("2", "not_json_object")
    ]


def test_given_a_repeated_key_and_a_bad_value_on_one_line_then_both_are_named(model: ScoringModel) -> None:
    line = _line(GOOD_ROWS[0] | {"home": "CASTLE"}, ("age", "45"))
    outcome = score(model, "jsonl", line.encode())
    (rejected,) = outcome.rejected_rows()
    assert rejected["error_code"] == "duplicate_key;unknown_category"
    assert [part.split(":")[0] for part in rejected["error"].split("; ")] == ["age", "home"]


def test_given_several_keys_repeated_then_each_is_named_once_where_it_first_appears(
    model: ScoringModel,
) -> None:
    line = _line(GOOD_ROWS[0], ("home", '"OWN"'), ("age", "45"), ("home", '"RENT"'))
    (rejected,) = score(model, "jsonl", line.encode()).rejected_rows()
    assert rejected["error_code"] == "duplicate_key"
    assert [part.split(":")[0] for part in rejected["error"].split("; ")] == ["age", "home"]


def test_given_text_that_looks_like_keys_inside_strings_then_good_lines_are_still_scored(
    model: ScoringModel,
) -> None:
    # Quotes, colons and braces inside string values (and in keys) are not keys: nothing is rejected.
    tricky = [
        _line(GOOD_ROWS[0], ("note", json.dumps('"age": 45, "age": 46')), ("x", json.dumps("{{{"))),
        _line(GOOD_ROWS[1], ('a":b', "1"), ('a:"b', "2"), ("note", json.dumps('\\": {"'))),
        _line(GOOD_ROWS[2], ("nested", '{"age": {"age": [{"age": 1}]}}')),
    ]
    outcome = score(model, "jsonl", "\n".join(tricky).encode())
    assert (outcome.counts.rows_scored, outcome.counts.rows_rejected) == (3, 0)


# ---- exactness: the reader finds exactly the lines a duplicate-refusing parser refuses ------------

_KEYS = ["age", "income", "a", "b", 'q"', "c:d", "\u00e9", ""]


def _random_value(rng: random.Random, depth: int) -> str:
    kind = rng.randrange(7 if depth < 3 else 4)
    if kind == 0:
        return str(rng.randint(-5, 5))
    if kind == 1:
        return json.dumps(rng.choice(['"x": 1', "{", "}", '\\"', 'a":', "plain", ""]))
    if kind == 2:
        return rng.choice(["true", "null", "1.5e3"])
    if kind == 3:
        return json.dumps(rng.choice(_KEYS))
    if kind == 4:
        return "[" + ", ".join(_random_value(rng, depth + 1) for _ in range(rng.randrange(3))) + "]"
    return _random_object(rng, depth + 1)


def _random_object(rng: random.Random, depth: int) -> str:
    pairs = []
    for _ in range(rng.randrange(4)):
        key = rng.choice(_KEYS)
        spelled = json.dumps(key, ensure_ascii=rng.random() < 0.5)
        if key == "a" and rng.random() < 0.3:
            spelled = '"\\u0061"'
        colon = rng.choice([":", " :", ": ", "\t:\t"])
        pairs.append(f"{spelled}{colon}{_random_value(rng, depth)}")
    return "{" + ", ".join(pairs) + "}"


def _has_repeat(line: str) -> bool:
    found = False

    def check(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        nonlocal found
        found = found or len({key for key, _ in pairs}) != len(pairs)
        return dict(pairs)

    json.loads(line, object_pairs_hook=check)
    return found


@pytest.mark.parametrize("chunk_rows", [1, 7, 500])
def test_given_random_lines_then_exactly_those_with_a_repeated_key_are_pre_rejected(chunk_rows: int) -> None:
    rng = random.Random(20260310)
    lines = [
        '{"first": 1}',
        *('{"id": %d, "v": %s}' % (i, _random_object(rng, 0)) for i in range(400)),  # noqa: UP031
    ]
    expected = {number for number, line in enumerate(lines, start=1) if _has_repeat(line)}
    assert 40 < len(expected) < 360  # both kinds are well represented

    source = open_source("jsonl", io.BytesIO("\n".join(lines).encode()), chunk_rows=chunk_rows)
    found = set()
    for read in source.chunks():
        assert not read.malformed
        for index, errors in read.chunk.pre_rejected.items():
            assert {code for _, code, _ in errors} == {"duplicate_key"}
            found.add(int(read.chunk.row_numbers[index]))

    assert found == expected


def _nested(depth: int, *extra: tuple[str, str]) -> str:
    """GOOD_ROWS[0] with ``extra`` pairs, then a note nested ``depth`` objects deep."""
    return _line(GOOD_ROWS[0], *extra, ("note", '{"a": ' * depth + "1" + "}" * depth))


def _deepest_json_reads() -> int:
    """The deepest note json.loads reads from here (its limit counts the caller's C stack too)."""
    low, high = 1, 5000
    while low < high:
        middle = (low + high + 1) // 2
        try:
            json.loads(_nested(middle))
        except RecursionError:
            high = middle - 1
        else:
            low = middle
    return low


def test_given_a_repeat_then_a_note_nested_at_json_limit_then_the_row_error_says_so_never_a_crash() -> None:
    # The repeat in "x" is met before the note is read; naming it parses the whole line again with a
    # hook that adds a frame per object, which at json's own depth limit gives up where json did not.
    repeat = ("x", '{"a": 1, "a": 2}')
    assert _repeated_key_errors(_nested(_deepest_json_reads(), repeat)) == [
        ("record", "not_json_object", "nested too deeply to check for repeated keys")
    ]
    assert [path for path, _, _ in _repeated_key_errors(_nested(100, repeat))] == ["x.a"]


def test_given_lines_nested_near_the_parsers_limit_then_the_file_is_read_and_every_row_counted(
    model: ScoringModel,
) -> None:
    deepest = _deepest_json_reads()
    lines = [
        json.dumps(GOOD_ROWS[1]),
        *(_nested(deepest - step) for step in range(8)),
        json.dumps(GOOD_ROWS[2]),
    ]

    outcome = score(model, "jsonl", "\n".join(lines).encode())

    assert outcome.counts.rows_in == len(lines)
    assert outcome.counts.rows_scored >= 2
    for row in outcome.rejected_rows():
        assert row["error_code"] == "not_json_object"
        assert "nested too deeply" in row["error"]
