"""Request validation and error answers that a mutation run of lambdas/api showed no test would notice
if they broke (Given/When/Then in names)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from lambdas.api.app import ScoringApi, create_api
from lambdas.api.observability import logger
from lambdas.api.wiring import make_handler
from lambdas.audit import API_DECISION, API_NOT_DELIVERED
from lambdas.scoring.runtime import ScoringModel
from tests.api.conftest import Invoke, api_context, settings_for, stored_event
from tests.conftest import captured_log
from tests.scoring.bundles import MODEL_VERSION, good_application, write_logistic_bundle

REQUEST_ID = "c6af9ac6-7b61-11e6-9a41-93e8deadbeef"  # the stored events' request id
_CONTEXT: Any = api_context()  # what Lambda passes the handler


def _score_event(body: Any) -> dict[str, Any]:
    event = stored_event("score.json")
    event["body"] = json.dumps(body)
    return event


def _error(answer: tuple[int, dict[str, Any], dict[str, str]], status: int, code: str) -> dict[str, Any]:
    got_status, body, _ = answer
    assert (got_status, body["error"]["code"]) == (status, code), body
    assert body["error"]["request_id"] == REQUEST_ID
    assert body["model_version"] == MODEL_VERSION
    return body["error"]  # type: ignore[no-any-return]


def test_given_21_unknown_fields_when_scored_then_the_message_names_20_and_says_1_more(
    invoke: Invoke,
) -> None:
    # The message lists the first 20 fields; the 21st must still be counted, or a client reading only
    # the message would think it had every problem.
    extra = {f"extra_{index:02d}": 1 for index in range(21)}
    error = _error(invoke(_score_event({"features": good_application()} | extra)), 400, "validation_error")
    assert len(error["details"]) == 21
    shown = ", ".join(f"extra_{index:02d}" for index in range(20))
    assert error["message"] == f"Invalid request: {shown} and 1 more"


def _details(error: dict[str, Any]) -> list[tuple[str, str]]:
    return [(d["field"], d["code"]) for d in error["details"]]


def test_given_an_empty_application_id_when_scored_then_400_naming_it(invoke: Invoke) -> None:
    # An empty id cannot tie a decision to an application: refused, not scored under "".
    error = _error(
        invoke(_score_event({"application_id": "", "features": good_application()})), 400, "validation_error"
    )
    assert _details(error) == [("application_id", "invalid_value")]


def test_given_an_application_id_of_129_characters_when_scored_then_400_and_128_is_scored(
    invoke: Invoke,
) -> None:
    error = _error(
        invoke(_score_event({"application_id": "x" * 129, "features": good_application()})),
        400,
        "validation_error",
    )
    assert _details(error) == [("application_id", "invalid_value")]
    status, body, _ = invoke(_score_event({"application_id": "x" * 128, "features": good_application()}))
    assert (status, body["application_id"]) == (200, "x" * 128)


def test_given_a_number_feature_as_text_when_scored_then_400_wrong_type(invoke: Invoke) -> None:
    error = _error(
        invoke(_score_event({"features": good_application() | {"loan_ratio": "0.45"}})),
        400,
        "validation_error",
    )
    assert _details(error) == [("features.loan_ratio", "wrong_type")]


def test_given_the_openapi_document_then_each_feature_carries_the_cards_type_range_and_categories(
    scoring_api: ScoringApi,
) -> None:
    # Generated clients validate against this document: a bound missing here is a value they send and
    # then see refused (the runtime still checks it, so only the document would tell).
    features = json.loads(scoring_api.openapi_json())["components"]["schemas"]["Features"]
    assert features["additionalProperties"] is False
    assert features["required"] == [feature.name for feature in scoring_api.model.card.features]
    kinds = {"integer": "integer", "number": "number", "boolean": "boolean", "category": "string"}
    for feature in scoring_api.model.card.features:
        declared = features["properties"][feature.name]
        options = [o for o in declared.get("anyOf", [declared]) if o.get("type") != "null"]
        assert len(options) == 1, declared
        (schema,) = options
        assert schema["type"] == kinds[feature.type], feature.name
        assert schema.get("minimum") == feature.minimum, feature.name
        assert schema.get("maximum") == feature.maximum, feature.name
        assert schema.get("enum") == (list(feature.categories) if feature.categories else None), feature.name
        assert ("anyOf" in declared) is feature.nullable, feature.name


def test_given_a_scored_request_then_a_fault_before_scoring_then_the_trail_claims_no_undelivered_decision(
    api_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a warm function that has just answered one application
    api = create_api(ScoringModel.load_directory(api_bundle), settings_for(api_bundle))
    handler = make_handler(api)
    assert handler(_score_event({"features": good_application()}), _CONTEXT)["statusCode"] == 200

    # When the next request fails before any decision is made
    def broken(*_: Any, **__: Any) -> Any:
        raise RuntimeError("the model failed")

    monkeypatch.setattr(ScoringModel, "score", broken)
    with captured_log(logger) as log:
        result = handler(_score_event({"features": good_application()}), _CONTEXT)

    # Then a 500, and the trail does not say that this request's (nonexistent) decisions went undelivered
    assert result["statusCode"] == 500
    messages = [json.loads(line)["message"] for line in log.getvalue().splitlines() if line.startswith("{")]
    assert "unhandled fault" in messages
    assert API_NOT_DELIVERED not in messages
    assert API_DECISION not in messages


def test_given_a_probability_of_exactly_one_when_scored_then_it_is_counted_in_the_top_score_bucket(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a card whose age has no bounds, and an age that saturates the model (probability 1.0)
    bundle = write_logistic_bundle(tmp_path / "unbounded")
    card_path = bundle / "model_card.json"
    card = json.loads(card_path.read_text())
    for feature in card["features"]:
        if feature["name"] == "age":
            feature.update(minimum=None, maximum=None)
    card_path.write_text(json.dumps(card))
    handler = make_handler(create_api(ScoringModel.load_directory(bundle), settings_for(bundle)))
    capsys.readouterr()

    result = handler(_score_event({"features": good_application() | {"age": -(10**308)}}), _CONTEXT)

    # Then it is declined, and the score histogram's top bucket counts it (no bucket beyond 100%)
    assert result["statusCode"] == 200, result
    answer = json.loads(result["body"])
    assert (answer["probability_of_default"], answer["decision"]) == (1.0, "decline")
    emf = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    buckets = {
        name: values for line in emf for name, values in line.items() if name.startswith("ScoreBucket_")
    }
    assert buckets == {"ScoreBucket_90_100": [1.0]}


# ---- defect found while reading the mutants: a key named "body" vanished from the field path ------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"features": good_application() | {"body": 1}}, "features.body"),
        ({"features": good_application(), "body": 1}, "body"),
        ({"features": good_application() | {"body": {"body": 1}}}, "features.body"),
    ],
)
def test_given_an_unknown_key_named_body_when_scored_then_the_detail_names_where_it_is(
    invoke: Invoke, body: dict[str, Any], field: str
) -> None:
    # Powertools places the request body under "body" in its error locations; only that first part is
    # the body itself, so an unknown key of that name inside features is features.body, not features
    # (which would tell the client its valid features object is the thing not accepted).
    error = _error(invoke(_score_event(body)), 400, "validation_error")
    assert _details(error) == [(field, "unknown_field")]
    assert error["message"] == f"Invalid request: {field}"


def test_given_a_flood_of_unknown_keys_with_one_named_body_when_scored_then_it_is_named_in_features(
    invoke: Invoke,
) -> None:
    # More unknown keys than an answer lists are found before validation (a separate path): the same names
    noise = {"body": 1} | {f"extra_{index:04d}": 1 for index in range(1100)}
    error = _error(invoke(_score_event({"features": good_application() | noise})), 400, "validation_error")
    assert _details(error)[0] == ("features.body", "unknown_field")
    assert _details(error)[-1] == ("body", "too_many_errors")
