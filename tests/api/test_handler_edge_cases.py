"""Edge cases beyond the other handler tests: integers past Python's digit limit, empty keys, odd shapes."""

from __future__ import annotations

import base64
import io
import json
from typing import Any

import pytest

from tests.api.conftest import Invoke, stored_event
from tests.scoring.bundles import MODEL_VERSION, good_application

REQUEST_ID = "c6af9ac6-7b61-11e6-9a41-93e8deadbeef"
# More digits than Python turns into an int from text (sys.get_int_max_str_digits(), 4,300 by default).
TOO_MANY_DIGITS = "9" * 5000


def _raw_event(name: str, raw: str) -> dict[str, Any]:
    event = stored_event(name)
    event["body"] = raw
    return event


def _with_literal(document: Any, literal: str) -> str:
    """``document`` as JSON with its ``"@"`` value replaced by ``literal`` (json.dumps cannot write
    the literals these tests need)."""
    return json.dumps(document).replace('"@"', literal)


def _error_details(
    status: int, body: dict[str, Any], headers: dict[str, str], expected_status: int = 400
) -> list[tuple[str, str]]:
    assert status == expected_status, body
    assert body["error"]["code"] == "validation_error"
    assert body["error"]["request_id"] == REQUEST_ID
    assert body["model_version"] == MODEL_VERSION == headers["X-Model-Version"]
    return [(d["field"], d["code"]) for d in body["error"]["details"]]


# ---- integers longer than Python's int-from-text limit ------------------------------------------


@pytest.mark.parametrize("feature", ["income", "age"])
@pytest.mark.parametrize("sign", ["", "-"])
def test_given_an_integer_of_5000_digits_in_a_feature_when_scored_then_400_out_of_range_names_it(
    invoke: Invoke, log_stream: io.StringIO, feature: str, sign: str
) -> None:
    raw = _with_literal({"features": {**good_application(), feature: "@"}}, sign + TOO_MANY_DIGITS)
    details = _error_details(*invoke(_raw_event("score.json", raw)))
    assert details == [(f"features.{feature}", "out_of_range")]
    assert "unhandled fault" not in log_stream.getvalue()


def test_given_an_integer_of_5000_digits_as_the_application_id_when_scored_then_400_wrong_type_names_it(
    invoke: Invoke,
) -> None:
    raw = _with_literal({"application_id": "@", "features": good_application()}, TOO_MANY_DIGITS)
    assert _error_details(*invoke(_raw_event("score.json", raw))) == [("application_id", "wrong_type")]


def test_given_an_integer_of_5000_digits_in_a_batch_application_when_scored_then_its_index_is_named(
    invoke: Invoke,
) -> None:
    applications = [{"features": good_application()}, {"features": {**good_application(), "income": "@"}}]
    raw = _with_literal({"applications": applications}, TOO_MANY_DIGITS)
    details = _error_details(*invoke(_raw_event("score_batch.json", raw)))
    assert details == [("applications[1].features.income", "out_of_range")]


def test_given_a_base64_body_with_an_integer_of_5000_digits_when_scored_then_400_names_the_field(
    invoke: Invoke,
) -> None:
    raw = _with_literal({"features": {**good_application(), "income": "@"}}, TOO_MANY_DIGITS)
    event = _raw_event("score.json", base64.b64encode(raw.encode()).decode())
    event["isBase64Encoded"] = True
    assert _error_details(*invoke(event)) == [("features.income", "out_of_range")]


def test_given_an_integer_of_5000_digits_in_an_unknown_field_when_scored_then_the_field_is_named(
    invoke: Invoke,
) -> None:
    raw = _with_literal({"features": {**good_application(), "extra": "@"}}, TOO_MANY_DIGITS)
    assert _error_details(*invoke(_raw_event("score.json", raw))) == [("features.extra", "unknown_field")]


# ---- an empty key is named as one, not as the body ----------------------------------------------


def test_given_an_empty_top_level_key_when_scored_then_the_detail_names_an_empty_key_not_the_body(
    invoke: Invoke,
) -> None:
    raw = json.dumps({"features": good_application(), "": 1})
    assert _error_details(*invoke(_raw_event("score.json", raw))) == [('""', "unknown_field")]


def test_given_an_empty_key_in_the_features_when_scored_then_the_detail_names_it_under_features(
    invoke: Invoke,
) -> None:
    raw = json.dumps({"features": {**good_application(), "": 1}})
    assert _error_details(*invoke(_raw_event("score.json", raw))) == [('features.""', "unknown_field")]


# ---- already handled, pinned here: inputs no other test sends -----------------------------------


@pytest.mark.parametrize(
    ("document", "field"),
    [
        ({"application_id": "@", "features": good_application()}, "application_id"),
        ({"features": {**good_application(), "home": "@"}}, "features.home"),
    ],
)
def test_given_a_lone_surrogate_escape_in_a_string_when_scored_then_400_names_the_field(
    invoke: Invoke, document: dict[str, Any], field: str
) -> None:
    raw = _with_literal(document, '"\\ud800"')
    assert _error_details(*invoke(_raw_event("score.json", raw))) == [(field, "invalid_value")]


@pytest.mark.parametrize(("features", "code"), [(None, "null_not_allowed"), ([1, 2], "wrong_type")])
def test_given_features_that_are_not_an_object_when_scored_then_400_names_features(
    invoke: Invoke, features: object, code: str
) -> None:
    raw = json.dumps({"features": features})
    assert _error_details(*invoke(_raw_event("score.json", raw))) == [("features", code)]


def test_given_exactly_the_maximum_batch_when_scored_then_every_application_is_scored(invoke: Invoke) -> None:
    applications = [{"application_id": str(i), "features": good_application()} for i in range(5)]
    status, body, headers = invoke(_raw_event("score_batch.json", json.dumps({"applications": applications})))
    assert status == 200, body
    assert headers["X-Model-Version"] == body["model_version"] == MODEL_VERSION
    assert [r["application_id"] for r in body["results"]] == ["0", "1", "2", "3", "4"]
