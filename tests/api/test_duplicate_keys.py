"""A JSON object with a key twice is refused, never scored with one of its values.

Python's json keeps the last value of a repeated key; API Gateway's validator, a WAF, a client library
or an auditor re-reading the request may keep the first. The same bytes would then be checked with one
value and scored with another (a parser differential), so the API answers 400 ``duplicate_key`` naming
every repeated key where it is (``features.age``, ``applications[1].features.age``), and scores nothing.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable
from typing import Any

import pytest

from lambdas.audit import API_DECISION, API_DECISIONS
from tests.api.conftest import Invoke, stored_event
from tests.scoring.bundles import MODEL_VERSION, good_application

REQUEST_ID = "c6af9ac6-7b61-11e6-9a41-93e8deadbeef"  # the stored events' requestContext.requestId


def _event(name: str, raw: str) -> dict[str, Any]:
    event = stored_event(name)
    event["body"] = raw
    return event


def _object(*pairs: tuple[str, str]) -> str:
    """A JSON object written pair by pair: key as text, value as raw JSON (so a key may repeat)."""
    return "{" + ", ".join(f"{json.dumps(key)}: {value}" for key, value in pairs) + "}"


def _features(*extra: tuple[str, str]) -> str:
    """The good application's features as JSON text, then ``extra`` pairs (repeats of its keys)."""
    return _object(*((key, json.dumps(value)) for key, value in good_application().items()), *extra)


def _duplicate_error(
    result: tuple[int, dict[str, Any], dict[str, str]], log_stream: io.StringIO
) -> list[tuple[str, str]]:
    """Asserts a 400 duplicate_key in the API's error format; returns the details' (field, code)."""
    status, body, headers = result
    assert status == 400, body
    error = body["error"]
    assert error["code"] == "duplicate_key"
    assert error["request_id"] == REQUEST_ID == headers["X-Request-Id"]
    assert body["model_version"] == MODEL_VERSION == headers["X-Model-Version"]
    assert headers["Cache-Control"] == "no-store"
    for detail in error["details"]:
        assert detail["field"] in error["message"]  # the message names each repeated key too
        assert "more than once" in detail["message"]
    # Nothing was scored: no decision reached the audit trail.
    logged = [json.loads(line) for line in log_stream.getvalue().splitlines() if line.startswith("{")]
    assert not [line for line in logged if line.get("message") in (API_DECISION, API_DECISIONS)]
    return [(detail["field"], detail["code"]) for detail in error["details"]]


# ---- POST /v1/score ---------------------------------------------------------------------------------


def test_given_a_feature_twice_with_a_bad_then_a_good_value_when_scored_then_400_names_it(
    invoke: Invoke, log_stream: io.StringIO
) -> None:
    # Given age 17 (below the card's minimum of 18) and then age 45: Python's json would keep 45 and score.
    raw = _object(("application_id", '"a-1"'), ("features", _features(("age", "17"), ("age", "45"))))

    details = _duplicate_error(invoke(_event("score.json", raw)), log_stream)

    assert details == [("features.age", "duplicate_key")]


def test_given_the_same_value_twice_when_scored_then_it_is_still_refused(
    invoke: Invoke, log_stream: io.StringIO
) -> None:
    # Equal values are no excuse: the body is still one that parsers may read differently (and a
    # rule "equal repeats are fine" would have to compare 1 with 1.0 and true with 1).
    raw = _object(("features", _features(("income", "32000.0"))))
    assert _duplicate_error(invoke(_event("score.json", raw)), log_stream) == [
        ("features.income", "duplicate_key")
    ]


@pytest.mark.parametrize(
    ("pairs", "fields"),
    [
        (
            (("application_id", '"a-1"'), ("features", _features()), ("application_id", '"a-2"')),
            ["application_id"],
        ),
        # The first "features" object, which Python's json would drop, is checked too.
        ((("features", _features(("age", "17"))), ("features", _features())), ["features", "features.age"]),
    ],
)
def test_given_a_top_level_key_twice_when_scored_then_400_names_it(
    invoke: Invoke, log_stream: io.StringIO, pairs: tuple[tuple[str, str], ...], fields: list[str]
) -> None:
    details = _duplicate_error(invoke(_event("score.json", _object(*pairs))), log_stream)
    assert details == [(field, "duplicate_key") for field in fields]


def test_given_a_key_spelled_with_an_escape_when_scored_then_it_is_the_same_key(
    invoke: Invoke, log_stream: io.StringIO
) -> None:
    # "\u0061ge" is "age": a parser that compares the raw text of keys would see two different keys.
    raw = '{"features": ' + _features()[:-1] + ', "\\u0061ge": 45}}'
    assert _duplicate_error(invoke(_event("score.json", raw)), log_stream) == [
        ("features.age", "duplicate_key")
    ]


def test_given_a_duplicate_in_an_unknown_nested_object_when_scored_then_400_names_its_path(
    invoke: Invoke, log_stream: io.StringIO
) -> None:
    # Any nested object counts, also one the schema would refuse anyway: the body is ambiguous first.
    raw = _object(("features", _features()), ("meta", _object(("source", '"web"'), ("source", '"batch"'))))
    assert _duplicate_error(invoke(_event("score.json", raw)), log_stream) == [
        ("meta.source", "duplicate_key")
    ]


def test_given_several_repeated_keys_when_scored_then_each_is_named_once_in_body_order(
    invoke: Invoke, log_stream: io.StringIO
) -> None:
    raw = _object(
        ("application_id", '"a-1"'),
        ("features", _features(("home", '"OWN"'), ("age", "30"), ("home", '"RENT"'))),
        ("application_id", '"a-1"'),
    )
    # Where each repeated key first appears: application_id, then age and home inside features.
    assert _duplicate_error(invoke(_event("score.json", raw)), log_stream) == [
        ("application_id", "duplicate_key"),
        ("features.age", "duplicate_key"),
        ("features.home", "duplicate_key"),
    ]


def test_given_a_base64_encoded_body_with_a_repeated_key_when_scored_then_400_names_it(
    invoke: Invoke, log_stream: io.StringIO
) -> None:
    raw = _object(("features", _features(("loan_ratio", "0.05"))))
    event = _event("score.json", base64.b64encode(raw.encode()).decode())
    event["isBase64Encoded"] = True
    assert _duplicate_error(invoke(event), log_stream) == [("features.loan_ratio", "duplicate_key")]


def test_given_a_repeated_key_and_an_integer_beyond_the_digit_limit_when_scored_then_400_duplicate_key(
    invoke: Invoke, log_stream: io.StringIO
) -> None:
    # An integer of 5,000 digits makes the API parse the body a second time: that parse checks too.
    raw = _object(("features", _features(("age", "45"))), ("note", "9" * 5000))
    assert _duplicate_error(invoke(_event("score.json", raw)), log_stream) == [
        ("features.age", "duplicate_key")
    ]


def test_given_a_huge_key_repeated_when_scored_then_the_field_is_shortened_in_the_answer(
    invoke: Invoke, log_stream: io.StringIO
) -> None:
    key = "k" * 100_000
    raw = _object(("features", _features()), (key, "1"), (key, "2"))
    status, body, _ = invoke(_event("score.json", raw))
    assert status == 400
    assert body["error"]["code"] == "duplicate_key"
    (detail,) = body["error"]["details"]
    assert detail["field"].startswith("kkk")
    assert len(detail["field"]) < 1000
    assert len(body["error"]["message"]) < 2000
    assert key not in log_stream.getvalue()  # nor is the whole key logged


def test_given_a_repeated_key_before_a_syntax_error_when_scored_then_400_malformed_json(
    invoke: Invoke,
) -> None:
    # The repeat is met first, but text that is not JSON is malformed whatever else it holds.
    raw = '{"features": ' + _features(("age", "45")) + ', "note": ]}'
    status, body, _ = invoke(_event("score.json", raw))
    assert status == 400
    assert body["error"]["code"] == "malformed_json"


# ---- POST /v1/score/batch ---------------------------------------------------------------------------


def test_given_a_repeated_feature_in_the_second_application_when_batch_scored_then_its_index_is_named(
    invoke: Invoke, log_stream: io.StringIO
) -> None:
    raw = _object(
        (
            "applications",
            "["
            + ", ".join(
                [
                    _object(("application_id", '"a-0"'), ("features", _features())),
                    _object(
                        ("application_id", '"a-1"'), ("features", _features(("age", "17"), ("age", "45")))
                    ),
                    _object(("application_id", '"a-2"'), ("features", _features())),
                ]
            )
            + "]",
        )
    )
    details = _duplicate_error(invoke(_event("score_batch.json", raw)), log_stream)
    assert details == [("applications[1].features.age", "duplicate_key")]


def test_given_an_application_id_twice_in_one_batch_item_when_batch_scored_then_the_item_is_named(
    invoke: Invoke, log_stream: io.StringIO
) -> None:
    item = _object(("application_id", '"a-0"'), ("features", _features()), ("application_id", '"a-9"'))
    raw = _object(("applications", f"[{_object(('features', _features()))}, {item}]"))
    assert _duplicate_error(invoke(_event("score_batch.json", raw)), log_stream) == [
        ("applications[1].application_id", "duplicate_key")
    ]


def test_given_the_applications_key_twice_when_batch_scored_then_400_names_it(
    invoke: Invoke, log_stream: io.StringIO
) -> None:
    one = f"[{_object(('features', _features()))}]"
    raw = _object(("applications", one), ("applications", one))
    assert _duplicate_error(invoke(_event("score_batch.json", raw)), log_stream) == [
        ("applications", "duplicate_key")
    ]


# ---- what is not a duplicate ------------------------------------------------------------------------


def test_given_the_same_keys_in_different_objects_when_batch_scored_then_every_application_is_scored(
    invoke: Invoke,
) -> None:
    # Every application repeats the keys of the others, and features repeat no top-level key: all fine.
    raw = _object(("applications", "[" + ", ".join([_object(("features", _features()))] * 3) + "]"))
    status, body, _ = invoke(_event("score_batch.json", raw))
    assert status == 200, body
    assert len(body["results"]) == 3


def test_given_keys_that_differ_only_in_case_when_scored_then_it_is_an_unknown_field_not_a_duplicate(
    invoke: Invoke,
) -> None:
    raw = _object(("features", _features(("Age", "45"))))
    status, body, _ = invoke(_event("score.json", raw))
    assert status == 400
    assert body["error"]["code"] == "validation_error"
    assert [(d["field"], d["code"]) for d in body["error"]["details"]] == [("features.Age", "unknown_field")]


def test_given_the_openapi_document_then_duplicate_key_is_among_the_documented_codes(invoke: Invoke) -> None:
    _, document, _ = invoke(stored_event("openapi.json"))
    schemas = document["components"]["schemas"]
    assert "duplicate_key" in schemas["ErrorBody"]["properties"]["code"]["description"]
    assert "duplicate_key" in schemas["ErrorDetail"]["properties"]["code"]["description"]


def _deepest_json_reads(make: Callable[[int], str]) -> int:
    """The deepest nesting json.loads reads from here."""
    low, high = 1, 5000
    while low < high:
        middle = (low + high + 1) // 2
        try:
            json.loads(make(middle))
        except RecursionError:
            high = middle - 1
        else:
            low = middle
    return low


def test_given_bodies_nested_near_the_parsers_limit_when_scored_then_400_never_a_fault(
    invoke: Invoke, log_stream: io.StringIO
) -> None:
    # The decoder that refuses repeats adds a frame per object: near json's own limit it may give up
    # where json alone did not. That is the nested-too-deeply answer, never a 500.
    def body(depth: int) -> str:
        return _object(("features", _features()), ("note", '{"a": ' * depth + "1" + "}" * depth))

    deepest = _deepest_json_reads(body)
    codes = set()
    for depth in range(deepest - 6, deepest + 2):
        status, response, _ = invoke(_event("score.json", body(depth)))
        assert status == 400, response
        codes.add(response["error"]["code"])
    assert codes <= {"malformed_json", "validation_error"}  # validation_error: "note" is not a field
    assert "malformed_json" in codes
    assert "unhandled fault" not in log_stream.getvalue()
