"""Handler tests: stored API Gateway REST events in, proxy responses out (Given/When/Then in names)."""

from __future__ import annotations

import base64
import io
import json
import logging
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from lambdas.api.app import create_api
from lambdas.api.errors import MAX_ERROR_DETAILS, MAX_FIELD_CHARS
from lambdas.api.schemas import build_schemas
from lambdas.api.settings import Settings, SettingsError
from lambdas.api.wiring import make_handler
from lambdas.audit import API_DECISION, API_DECISIONS
from lambdas.scoring.runtime import ScoringModel
from tests.api.conftest import Invoke, api_context, settings_for, stored_event
from tests.scoring.bundles import MODEL_VERSION, THRESHOLD, good_application

REPO_ROOT = Path(__file__).resolve().parents[2]


def _with_body(name: str, body: Any, raw: str | None = None) -> dict[str, Any]:
    event = stored_event(name)
    event["body"] = raw if raw is not None else json.dumps(body)
    return event


def _score_event(features: dict[str, Any]) -> dict[str, Any]:
    return _with_body("score.json", {"application_id": "a-1", "features": features})


def _assert_error(
    status: int, body: dict[str, Any], headers: dict[str, str], expected_status: int, code: str
) -> dict[str, Any]:
    assert status == expected_status, body
    assert body["error"]["code"] == code
    assert body["error"]["request_id"] == "c6af9ac6-7b61-11e6-9a41-93e8deadbeef"
    assert body["model_version"] == MODEL_VERSION
    assert headers["X-Model-Version"] == MODEL_VERSION
    assert "Traceback" not in json.dumps(body)
    return body["error"]  # type: ignore[no-any-return]


# ---- happy paths --------------------------------------------------------------------------------


def test_given_a_stored_score_event_when_handled_then_result_has_probability_decision_and_reasons(
    invoke: Invoke,
) -> None:
    status, body, headers = invoke(stored_event("score.json"))
    assert status == 200, body
    assert body["application_id"] == "app-001"
    assert body["model_version"] == MODEL_VERSION == headers["X-Model-Version"]
    assert 0.0 < body["probability_of_default"] < 1.0
    assert body["threshold"] == THRESHOLD
    assert body["decision"] == ("decline" if body["probability_of_default"] >= THRESHOLD else "approve")
    assert [r["feature"] for r in body["reasons"]] == ["loan_ratio", "prior_default", "home"]
    assert body["reasons"][0]["reason"] == "Loan is large relative to income"
    assert headers["X-Request-Id"] == "c6af9ac6-7b61-11e6-9a41-93e8deadbeef"


def test_given_the_same_application_when_scored_then_api_and_runtime_agree(
    invoke: Invoke, api_bundle: Path
) -> None:
    model = ScoringModel.load_directory(api_bundle)
    expected = model.score(model.prepare_records([good_application()]).feed).probability[0]
    _, body, _ = invoke(_score_event(good_application()))
    assert body["probability_of_default"] == pytest.approx(float(expected), abs=1e-15)


def test_given_a_stored_batch_event_when_handled_then_each_application_is_scored_in_order(
    invoke: Invoke,
) -> None:
    status, body, _ = invoke(stored_event("score_batch.json"))
    assert status == 200, body
    assert body["model_version"] == MODEL_VERSION
    assert [r["application_id"] for r in body["results"]] == ["app-001", "app-002", None]
    assert body["results"][0]["decision"] == "decline"
    assert body["results"][1]["decision"] == "approve"
    _single_status, single, _ = invoke(stored_event("score.json"))
    assert body["results"][0]["probability_of_default"] == single["probability_of_default"]


def test_given_model_and_health_events_when_handled_then_they_show_the_card_and_version(
    invoke: Invoke,
) -> None:
    status, card, headers = invoke(stored_event("model.json"))
    assert status == 200
    assert card["model_version"] == MODEL_VERSION == headers["X-Model-Version"]
    assert [f["name"] for f in card["features"]] == ["age", "income", "home", "loan_ratio", "prior_default"]
    assert card["max_batch_applications"] == 5
    assert "lineage" not in card
    # The holdout's class counts: PR AUC and the decision rates cannot be read without the base rate
    assert set(card["data"]) == {"rows_holdout", "holdout_positives", "holdout_negatives"}
    status, health, _ = invoke(stored_event("health.json"))
    assert (status, health) == (200, {"status": "ok", "model_version": MODEL_VERSION})


def test_given_the_openapi_event_when_handled_then_the_document_is_built_from_the_card(
    invoke: Invoke,
) -> None:
    status, document, _ = invoke(stored_event("openapi.json"))
    assert status == 200
    assert set(document["paths"]) == {"/v1/score", "/v1/score/batch", "/v1/model", "/v1/health"}
    schemas = document["components"]["schemas"]
    features = schemas["Features"]
    assert features["additionalProperties"] is False
    assert set(features["required"]) == {"age", "income", "home", "loan_ratio", "prior_default"}
    assert features["properties"]["age"]["minimum"] == 18
    assert features["properties"]["home"]["enum"] == ["RENT", "OWN", "MORTGAGE"]
    assert schemas["BatchScoreRequest"]["properties"]["applications"]["maxItems"] == 5
    responses = document["paths"]["/v1/score"]["post"]["responses"]
    assert {"200", "400", "415", "500"} <= set(responses)
    assert "422" not in responses


# ---- bad input: each a 4xx naming the field -----------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "code"),
    [
        ("age", "24", "wrong_type"),
        ("age", 24.5, "wrong_type"),
        ("age", 17, "out_of_range"),
        ("loan_ratio", 1.01, "out_of_range"),
        ("home", "CASTLE", "unknown_category"),
        ("home", 7, "wrong_type"),
        ("prior_default", "yes", "wrong_type"),
        ("age", None, "null_not_allowed"),
    ],
)
def test_given_a_bad_feature_value_when_scored_then_400_names_the_field_and_code(
    invoke: Invoke, field: str, value: object, code: str
) -> None:
    error = _assert_error(
        *invoke(_score_event({**good_application(), field: value})), 400, "validation_error"
    )
    assert [(d["field"], d["code"]) for d in error["details"]] == [(f"features.{field}", code)]


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_given_nan_or_infinity_in_the_json_when_scored_then_400_not_finite(
    invoke: Invoke, literal: str
) -> None:
    raw = json.dumps({"features": good_application()}).replace(
        '"loan_ratio": 0.45', f'"loan_ratio": {literal}'
    )
    error = _assert_error(*invoke(_with_body("score.json", None, raw=raw)), 400, "validation_error")
    assert [(d["field"], d["code"]) for d in error["details"]] == [("features.loan_ratio", "not_finite")]


def test_given_missing_and_unknown_fields_when_scored_then_both_are_named(invoke: Invoke) -> None:
    features = {k: v for k, v in good_application().items() if k != "income"} | {"shoe_size": 44}
    error = _assert_error(*invoke(_score_event(features)), 400, "validation_error")
    assert {(d["field"], d["code"]) for d in error["details"]} == {
        ("features.income", "missing"),
        ("features.shoe_size", "unknown_field"),
    }


def test_given_an_unknown_top_level_field_when_scored_then_it_is_named(invoke: Invoke) -> None:
    event = _with_body("score.json", {"features": good_application(), "priority": "high"})
    error = _assert_error(*invoke(event), 400, "validation_error")
    assert [(d["field"], d["code"]) for d in error["details"]] == [("priority", "unknown_field")]


def test_given_malformed_json_when_scored_then_400_malformed_json(invoke: Invoke) -> None:
    _assert_error(*invoke(_with_body("score.json", None, raw='{"features": {')), 400, "malformed_json")


@pytest.mark.parametrize("raw", ["", None, "null"])
def test_given_an_empty_body_when_scored_then_400_empty_body(invoke: Invoke, raw: str | None) -> None:
    event = stored_event("score.json")
    event["body"] = raw
    error = _assert_error(*invoke(event), 400, "empty_body")
    assert error["message"] == "The request body is empty or JSON null; send a JSON object"


def test_given_a_json_array_body_when_scored_then_400_names_the_body(invoke: Invoke) -> None:
    error = _assert_error(*invoke(_with_body("score.json", [1, 2])), 400, "validation_error")
    assert error["details"][0]["code"] == "wrong_type"


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_given_a_wrong_content_type_when_scored_then_415(invoke: Invoke, content_type: str | None) -> None:
    event = stored_event("score.json")
    del event["headers"]["Content-Type"], event["multiValueHeaders"]["Content-Type"]
    if content_type:
        event["headers"]["content-type"] = content_type
    _assert_error(*invoke(event), 415, "unsupported_media_type")


def test_given_json_with_charset_when_scored_then_accepted(invoke: Invoke) -> None:
    event = stored_event("score.json")
    event["headers"]["Content-Type"] = "application/json; charset=utf-8"
    assert invoke(event)[0] == 200


def test_given_an_oversized_batch_when_scored_then_400_batch_too_large(invoke: Invoke) -> None:
    event = _with_body("score_batch.json", {"applications": [{"features": good_application()}] * 6})
    error = _assert_error(*invoke(event), 400, "validation_error")
    assert [(d["field"], d["code"]) for d in error["details"]] == [("applications", "batch_too_large")]


def test_given_an_empty_batch_when_scored_then_400_empty_batch(invoke: Invoke) -> None:
    error = _assert_error(
        *invoke(_with_body("score_batch.json", {"applications": []})), 400, "validation_error"
    )
    assert error["details"][0]["code"] == "empty_batch"


def test_given_one_bad_application_in_a_batch_when_scored_then_its_index_and_field_are_named(
    invoke: Invoke,
) -> None:
    applications = [{"features": good_application()}, {"features": {**good_application(), "home": "CASTLE"}}]
    error = _assert_error(
        *invoke(_with_body("score_batch.json", {"applications": applications})), 400, "validation_error"
    )
    assert [(d["field"], d["code"]) for d in error["details"]] == [
        ("applications[1].features.home", "unknown_category")
    ]


def test_given_an_unknown_route_when_called_then_404_in_the_error_format(invoke: Invoke) -> None:
    event = stored_event("health.json")
    event["path"] = event["resource"] = "/v1/nothing"
    _assert_error(*invoke(event), 404, "not_found")


@pytest.mark.parametrize("raw", ["[" * 5000 + "]" * 5000, '{"features": ' + "[" * 5000 + "]" * 5000 + "}"])
def test_given_json_nested_thousands_deep_when_scored_then_400_malformed_json_not_a_fault(
    invoke: Invoke, log_stream: io.StringIO, raw: str
) -> None:
    _assert_error(*invoke(_with_body("score.json", None, raw=raw)), 400, "malformed_json")
    assert "unhandled fault" not in log_stream.getvalue()


def test_given_an_integer_beyond_a_double_when_scored_then_400_out_of_range(invoke: Invoke) -> None:
    error = _assert_error(
        *invoke(_score_event({**good_application(), "income": 10**400})), 400, "validation_error"
    )
    assert [(d["field"], d["code"]) for d in error["details"]] == [("features.income", "out_of_range")]


def test_given_thousands_of_unknown_fields_when_scored_then_the_details_are_capped(
    invoke: Invoke, log_stream: io.StringIO
) -> None:
    features = {**good_application(), **{f"extra_{i}": 1 for i in range(MAX_ERROR_DETAILS + 500)}}
    features["x" * 100_000] = 1
    status, body, headers = invoke(_score_event(features))
    error = _assert_error(status, body, headers, 400, "validation_error")
    details = error["details"]
    assert len(details) == MAX_ERROR_DETAILS + 1
    assert details[-1] == {
        "field": "body",
        "code": "too_many_errors",
        "message": "501 more problems are not listed",
    }
    assert "and 1481 more" in error["message"]
    assert len(json.dumps(body)) < 300_000
    assert max(len(line) for line in log_stream.getvalue().splitlines()) < 256 * 1024


@pytest.mark.parametrize(("age", "accepted"), [(10**400, False), (1e300, True), (2**70, True)])
def test_given_an_integer_feature_without_maximum_when_a_huge_number_comes_then_it_is_judged_not_a_fault(
    api_bundle: Path, age: float, accepted: bool
) -> None:
    card = json.loads((api_bundle / "model_card.json").read_text())
    (age_feature,) = [f for f in card["features"] if f["name"] == "age"]
    age_feature["maximum"] = None
    model = ScoringModel.from_bytes((api_bundle / "model.onnx").read_bytes(), json.dumps(card).encode())
    features = build_schemas(model.card, max_batch_applications=5).features
    prepared = model.prepare_records([{**good_application(), "age": age}])
    if accepted:
        assert features.model_validate({**good_application(), "age": age}).age == int(age)  # type: ignore[attr-defined]
        assert not prepared.errors
    else:
        with pytest.raises(ValidationError) as raised:
            features.model_validate({**good_application(), "age": age})
        assert [e["type"] for e in raised.value.errors()] == ["number_too_large"]
        assert [(e.field, e.code) for e in prepared.errors[0]] == [("age", "out_of_range")]


def test_given_a_megabyte_long_unknown_field_when_scored_then_its_name_is_shortened(invoke: Invoke) -> None:
    error = _assert_error(
        *invoke(_score_event({**good_application(), "y" * 1_000_000: 1})), 400, "validation_error"
    )
    (detail,) = error["details"]
    assert detail["code"] == "unknown_field"
    assert detail["field"] == "features." + "y" * (MAX_FIELD_CHARS - len("features.")) + "…"
    assert len(error["message"]) < 1000


@pytest.mark.parametrize(
    "content_type", ["APPLICATION/JSON", "application/problem+json", "Application/Json; charset=UTF-8"]
)
def test_given_a_json_media_type_in_any_case_when_scored_then_accepted(
    invoke: Invoke, content_type: str
) -> None:
    event = stored_event("score.json")
    event["headers"]["Content-Type"] = content_type
    assert invoke(event)[0] == 200


def test_given_the_content_type_only_in_multi_value_headers_when_scored_then_accepted(invoke: Invoke) -> None:
    event = stored_event("score.json")
    event["headers"] = None
    assert event["multiValueHeaders"]["Content-Type"] == ["application/json"]
    assert invoke(event)[0] == 200


@pytest.mark.parametrize(
    ("name", "method", "path", "allowed"),
    [
        ("score.json", "PUT", "/v1/score", "POST"),
        ("score.json", "GET", "/v1/score/batch", "POST"),
        ("health.json", "POST", "/v1/model", "GET"),
        ("health.json", "DELETE", "/v1/health/", "GET"),
    ],
)
def test_given_a_known_path_with_another_method_when_called_then_405_with_allow(
    invoke: Invoke, name: str, method: str, path: str, allowed: str
) -> None:
    event = stored_event(name)
    event["httpMethod"] = event["requestContext"]["httpMethod"] = method
    event["path"] = event["resource"] = path
    event["headers"]["Content-Type"] = "text/plain"  # the media type of a non-route is not judged
    status, body, headers = invoke(event)
    _assert_error(status, body, headers, 405, "method_not_allowed")
    assert headers["Allow"] == allowed


def test_given_a_non_json_post_to_an_unknown_route_when_called_then_404(invoke: Invoke) -> None:
    event = stored_event("score.json")
    event["path"] = event["resource"] = "/v1/nothing"
    event["headers"]["Content-Type"] = "text/plain"
    _assert_error(*invoke(event), 404, "not_found")


# ---- faults -------------------------------------------------------------------------------------


def test_given_a_fault_inside_scoring_when_scored_then_500_without_stack_trace(
    api_bundle: Path, monkeypatch: pytest.MonkeyPatch, log_stream: io.StringIO
) -> None:
    api = create_api(ScoringModel.load_directory(api_bundle), settings_for(api_bundle))

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("onnxruntime exploded at /secret/path")

    monkeypatch.setattr(api.model, "score", broken)
    result = make_handler(api)(stored_event("score.json"), api_context())  # type: ignore[arg-type]
    assert result["statusCode"] == 500
    body = json.loads(result["body"])
    assert body["error"]["code"] == "internal_error"
    assert "exploded" not in result["body"]
    assert "secret" not in result["body"]
    assert "RuntimeError" in log_stream.getvalue()  # logged for operators, not returned


# ---- observability ------------------------------------------------------------------------------


def _log_lines(output: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def test_given_a_scored_request_when_logged_then_correlation_caller_version_decision_but_no_values(
    invoke: Invoke, capsys: pytest.CaptureFixture[str], log_stream: io.StringIO
) -> None:
    invoke(stored_event("score.json"))
    (scored,) = [line for line in _log_lines(log_stream.getvalue()) if line.get("message") == "scored"]
    assert scored["correlation_id"] == "c6af9ac6-7b61-11e6-9a41-93e8deadbeef"
    assert scored["caller"] == "arn:aws:iam::123456789012:user/risk-analyst"
    assert scored["model_version"] == MODEL_VERSION
    assert scored["function_version"] == api_context().function_version  # the Lambda version that answered
    assert scored["decision"] == "decline"
    assert "features" not in scored
    assert "32000" not in json.dumps(scored)
    (emf,) = [line for line in _log_lines(capsys.readouterr().out) if "_aws" in line]
    names = {m["Name"] for m in emf["_aws"]["CloudWatchMetrics"][0]["Metrics"]}
    assert {"Requests", "Decision_decline", "LatencyMs"} <= names
    assert any(name.startswith("ScoreBucket_") for name in names)


def test_given_a_scored_request_when_logged_then_the_audit_line_matches_the_response(
    invoke: Invoke, log_stream: io.StringIO
) -> None:
    # Given one application scored
    status, body, _ = invoke(stored_event("score.json"))
    assert status == 200
    # Then its audit line (lambdas/audit.py) records the decision as answered: the exact probability,
    # the threshold it was compared with and the reasons given, in order
    (line,) = [entry for entry in _log_lines(log_stream.getvalue()) if entry.get("message") == API_DECISION]
    assert line["probability_of_default"] == body["probability_of_default"]
    assert line["threshold"] == body["threshold"]
    assert line["decision"] == body["decision"]
    assert line["reasons"] == [reason["feature"] for reason in body["reasons"]]
    assert line["reasons"]  # the stored application is declined, with reasons


def test_given_a_batch_when_logged_then_every_result_has_its_audit_record(
    invoke: Invoke, log_stream: io.StringIO
) -> None:
    status, body, _ = invoke(stored_event("score_batch.json"))
    assert status == 200
    (line,) = [entry for entry in _log_lines(log_stream.getvalue()) if entry.get("message") == API_DECISIONS]
    assert line["threshold"] == body["results"][0]["threshold"]
    assert [(r["probability_of_default"], r["reasons"]) for r in line["results"]] == [
        (r["probability_of_default"], [reason["feature"] for reason in r["reasons"]]) for r in body["results"]
    ]


def test_given_the_largest_batch_with_values_logged_when_scored_then_every_audit_line_fits_a_log_event(
    api_bundle: Path, log_stream: io.StringIO
) -> None:
    # Given the largest batch the settings allow, ids of the longest non-ASCII kind, values logged
    limit = 1000
    api = create_api(
        ScoringModel.load_directory(api_bundle),
        settings_for(api_bundle, log_applicant_values=True, max_batch_applications=limit),
    )
    event = stored_event("score_batch.json")
    applications = [
        {"application_id": f"{index:04d}" + "é" * 124, "features": good_application()}
        for index in range(limit)
    ]
    event["body"] = json.dumps({"applications": applications})

    # When it is scored
    result = make_handler(api)(event, api_context())  # type: ignore[arg-type]
    assert result["statusCode"] == 200

    # Then the audit record comes in parts, each under CloudWatch's 256 KB event limit, that together
    # hold every result in order
    raw = [line for line in log_stream.getvalue().splitlines() if f'"message":"{API_DECISIONS}"' in line]
    assert sum(len(line.encode()) for line in raw) > 256 * 1024  # one line would have been cut
    assert all(len(line.encode()) < 256 * 1024 for line in raw)
    parts = [json.loads(line) for line in raw]
    assert [(p["part"], p["parts"]) for p in parts] == [(i, len(parts)) for i in range(1, len(parts) + 1)]
    logged = [r for p in parts for r in p["results"]]
    assert [p["first_index"] for p in parts] == [
        sum(len(q["results"]) for q in parts[:i]) for i in range(len(parts))
    ]
    answered = json.loads(result["body"])["results"]
    assert [r["application_id"] for r in logged] == [a["application_id"] for a in applications]
    assert [r["probability_of_default"] for r in logged] == [r["probability_of_default"] for r in answered]


def test_given_applicant_logging_enabled_when_scored_then_values_are_logged(
    api_bundle: Path, log_stream: io.StringIO
) -> None:
    api = create_api(
        ScoringModel.load_directory(api_bundle), settings_for(api_bundle, log_applicant_values=True)
    )
    make_handler(api)(stored_event("score.json"), api_context())  # type: ignore[arg-type]
    (scored,) = [line for line in _log_lines(log_stream.getvalue()) if line.get("message") == "scored"]
    assert scored["features"]["income"] == 32000.0


def test_given_powertools_debug_logging_when_scored_then_no_applicant_value_reaches_the_log(
    invoke: Invoke,
) -> None:
    # Given Powertools' own debug logging on (it formats the route arguments on every request)
    captured = io.StringIO()
    debug_handler = logging.StreamHandler(captured)
    powertools_logger = logging.getLogger("aws_lambda_powertools")
    previous_level = powertools_logger.level
    powertools_logger.addHandler(debug_handler)
    powertools_logger.setLevel(logging.DEBUG)
    try:
        # When an application is scored
        invoke(stored_event("score.json"))
    finally:
        powertools_logger.removeHandler(debug_handler)
        powertools_logger.setLevel(previous_level)
    # Then the request model shows up by name only, never with the applicant's values
    debug_output = captured.getvalue()
    assert "ScoreRequest(<applicant data not shown>)" in debug_output
    # The income as a number of its own: digits inside another number (a latency of 1.5059320001 ms
    # once) are not the applicant's value
    assert re.search(r"(?<![\d.])32000(?:\.0)?(?![\d.])", debug_output) is None


def test_given_a_drift_window_when_it_fills_then_its_psi_is_emitted_and_logged(
    api_bundle: Path, capsys: pytest.CaptureFixture[str], log_stream: io.StringIO
) -> None:
    # Given an API that measures drift every 500 applications, and a population far from the test
    # card's references (which put half of every number below 0.5: these applicants are all above)
    api = create_api(
        ScoringModel.load_directory(api_bundle),
        settings_for(api_bundle, drift_window_applications=500, max_batch_applications=100),
    )
    handler = make_handler(api)
    shifted = {**good_application(), "income": 990000.0}
    batch = _with_body("score_batch.json", {"applications": [{"features": shifted}] * 100})
    # When 4 full batches are scored, nothing is measured yet; the fifth fills the window
    for _ in range(4):
        assert handler(batch, api_context())["statusCode"] == 200  # type: ignore[arg-type]
    assert "ScorePsi" not in capsys.readouterr().out
    assert handler(batch, api_context())["statusCode"] == 200  # type: ignore[arg-type]
    # Then the window's PSI is emitted as metrics and the significant shift is logged per feature
    (emf,) = [line for line in _log_lines(capsys.readouterr().out) if "_aws" in line]
    assert emf["WindowsDrifted"] == [1.0]
    assert emf["ScorePsi"][0] >= 0.0
    assert emf["MaxFeaturePsi"][0] > 0.25
    (warning,) = [line for line in _log_lines(log_stream.getvalue()) if "drift" in line]
    assert warning["level"] == "WARNING"
    assert warning["drift"]["applications"] == 500
    assert warning["drift"]["status"] == "significant"
    assert warning["drift"]["feature_psi"]["income"] > 0.25


def test_given_a_drift_window_below_the_verdict_minimum_when_configured_then_the_setting_is_refused() -> None:
    with pytest.raises(SettingsError, match="DRIFT_WINDOW_APPLICATIONS must be 0"):
        Settings.from_env({"DRIFT_WINDOW_APPLICATIONS": "20"})
    assert Settings.from_env({"DRIFT_WINDOW_APPLICATIONS": "0"}).drift_window_applications == 0
    assert Settings.from_env({}).drift_window_applications == 1000


def test_given_a_validation_error_when_handled_then_the_metric_is_emitted(
    invoke: Invoke, capsys: pytest.CaptureFixture[str]
) -> None:
    invoke(_score_event({**good_application(), "age": 3}))
    (emf,) = [line for line in _log_lines(capsys.readouterr().out) if "_aws" in line]
    assert emf["ValidationErrors"] == [1.0]


# ---- leanness and cold start --------------------------------------------------------------------


def test_given_the_handler_module_when_imported_locally_then_no_pandas_sklearn_boto3_or_xray_is_loaded(
    api_bundle: Path,
) -> None:
    heavy = ("pandas", "sklearn", "boto3", "botocore.session", "aws_xray_sdk.core")
    code = f"import sys, lambdas.api.handler; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    env = {"MODEL_BUNDLE_DIR": str(api_bundle), "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_given_a_missing_bundle_when_the_handler_module_loads_then_it_fails_naming_the_folder(
    tmp_path: Path,
) -> None:
    env = {"MODEL_BUNDLE_DIR": str(tmp_path / "nowhere"), "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-c", "import lambdas.api.handler"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "ModelBundleError" in result.stderr
    assert "nowhere" in result.stderr


def test_given_a_base64_body_that_is_not_utf8_when_scored_then_400_malformed_json(invoke: Invoke) -> None:
    event = stored_event("score.json")
    event["body"], event["isBase64Encoded"] = base64.b64encode(b"\xff\xfeX\x80").decode(), True
    _assert_error(*invoke(event), 400, "malformed_json")


def test_given_a_base64_json_body_when_scored_then_it_is_decoded_and_scored(invoke: Invoke) -> None:
    event = stored_event("score.json")
    event["body"], event["isBase64Encoded"] = base64.b64encode(event["body"].encode()).decode(), True
    assert invoke(event)[0] == 200


def test_given_a_batch_when_scored_then_one_log_line_and_one_datapoint_per_metric(
    invoke: Invoke, capsys: pytest.CaptureFixture[str], log_stream: io.StringIO
) -> None:
    invoke(stored_event("score_batch.json"))
    (line,) = [
        entry for entry in _log_lines(log_stream.getvalue()) if entry.get("message", "").startswith("scored")
    ]
    assert line["message"] == "scored batch"
    assert (line["part"], line["parts"], line["first_index"]) == (1, 1, 0)
    assert line["applications"] == 3
    assert line["decisions"] == {"decline": 2, "approve": 1}
    assert [r["application_id"] for r in line["results"]] == ["app-001", "app-002", None]
    (emf,) = [entry for entry in _log_lines(capsys.readouterr().out) if "_aws" in entry]
    assert emf["Decision_decline"] == [2.0]
    assert emf["Decision_approve"] == [1.0]
