"""Review of the API's observability, response headers and OpenAPI document (Given/When/Then in names)."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Generator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from aws_xray_sdk.core.models.segment import Segment
from aws_xray_sdk.core.models.subsegment import Subsegment
from openapi_spec_validator import validate

from lambdas.api.app import ScoringApi, create_api
from lambdas.api.observability import NoOpTracingProvider, tracer
from lambdas.api.wiring import make_handler
from lambdas.scoring.runtime import ScoringModel
from tests.api.conftest import Invoke, api_context, settings_for, stored_event
from tests.scoring.bundles import MODEL_VERSION, good_application

REQUEST_ID = "c6af9ac6-7b61-11e6-9a41-93e8deadbeef"
# CloudWatch Logs keeps events up to 256 KB; a longer line is cut and no longer JSON.
LOG_EVENT_LIMIT = 256 * 1024


def _log_lines(output: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def _event(name: str, **changes: Any) -> dict[str, Any]:
    event = stored_event(name)
    if "body" in changes:
        event["body"] = json.dumps(changes.pop("body"))
    if "path" in changes:
        event["path"] = event["resource"] = changes.pop("path")
    if "method" in changes:
        event["httpMethod"] = event["requestContext"]["httpMethod"] = changes.pop("method")
    if "content_type" in changes:
        event["headers"]["Content-Type"] = changes.pop("content_type")
        event["multiValueHeaders"].pop("Content-Type", None)
    assert not changes, changes
    return event


def _broken_api(api_bundle: Path, monkeypatch: pytest.MonkeyPatch) -> ScoringApi:
    api = create_api(ScoringModel.load_directory(api_bundle), settings_for(api_bundle))

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("onnxruntime exploded")

    monkeypatch.setattr(api.model, "score", broken)
    return api


# ---- response headers ---------------------------------------------------------------------------

RESPONSES: dict[str, tuple[Callable[[], dict[str, Any]], int]] = {
    "score": (lambda: stored_event("score.json"), 200),
    "batch": (lambda: stored_event("score_batch.json"), 200),
    "model": (lambda: stored_event("model.json"), 200),
    "health": (lambda: stored_event("health.json"), 200),
    "openapi": (lambda: stored_event("openapi.json"), 200),
    "validation": (lambda: _event("score.json", body={"features": {**good_application(), "age": 3}}), 400),
    "malformed": (lambda: {**stored_event("score.json"), "body": "{"}, 400),
    "unsupported media type": (lambda: _event("score.json", content_type="text/plain"), 415),
    "not found": (lambda: _event("health.json", path="/v1/nothing"), 404),
    "method not allowed": (lambda: _event("health.json", method="DELETE"), 405),
}


@pytest.mark.parametrize("kind", sorted(RESPONSES))
def test_given_any_response_when_answered_then_it_is_not_cacheable_nor_sniffable_and_names_version_and_id(
    invoke: Invoke, kind: str
) -> None:
    # Given a request of each kind the function answers (routes, its own errors, Powertools' 404/405)
    make_event, expected_status = RESPONSES[kind]
    # When it is handled
    status, body, headers = invoke(make_event())
    # Then the answer carries the model version and request id, is JSON, and is never cached or sniffed
    assert status == expected_status, body
    assert headers["X-Model-Version"] == MODEL_VERSION
    assert headers["X-Request-Id"] == REQUEST_ID
    assert headers["Content-Type"] == "application/json"
    assert headers["Cache-Control"] == "no-store"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert not any(name.lower().startswith("access-control-") for name in headers)  # no CORS configured


def test_given_a_fault_when_answered_then_500_has_the_same_headers_and_no_detail(
    api_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = make_handler(_broken_api(api_bundle, monkeypatch))(stored_event("score.json"), api_context())  # type: ignore[arg-type]
    headers = {key: values[-1] for key, values in result["multiValueHeaders"].items()}
    assert result["statusCode"] == 500
    assert (headers["Cache-Control"], headers["X-Content-Type-Options"]) == ("no-store", "nosniff")
    assert (headers["X-Model-Version"], headers["X-Request-Id"]) == (MODEL_VERSION, REQUEST_ID)
    assert json.loads(result["body"])["error"] == {
        "code": "internal_error",
        "message": "Internal error; quote the request id",
        "details": [],
        "request_id": REQUEST_ID,
    }


# ---- the OpenAPI document -----------------------------------------------------------------------


def test_given_the_openapi_document_when_validated_then_it_is_valid_openapi_3(invoke: Invoke) -> None:
    _, document, _ = invoke(stored_event("openapi.json"))
    validate(document)  # raises on any problem, a $ref to a removed schema included


def test_given_the_openapi_document_then_every_route_documents_its_result_and_faults(
    invoke: Invoke,
) -> None:
    _, document, _ = invoke(stored_event("openapi.json"))
    error_ref = {"$ref": "#/components/schemas/ErrorResponse"}
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            assert operation["responses"]["200"]["content"]["application/json"]["schema"]
            response = operation["responses"].get("500")
            assert response is not None, f"{method} {path} does not document its 500"
            assert response["content"]["application/json"]["schema"] == error_ref


# ---- logs ---------------------------------------------------------------------------------------


def test_given_a_thousand_long_unknown_fields_when_rejected_then_the_log_line_stays_one_json_event(
    invoke: Invoke, log_stream: io.StringIO
) -> None:
    # Given an application with 1,200 unknown keys, each hundreds of 4-byte characters long
    noise = {f"{index:04d}" + "\U0001f600" * 250: 1 for index in range(1200)}
    status, body, _ = invoke(_event("score.json", body={"features": {**good_application(), **noise}}))
    assert status == 400, body
    # Then its rejection is logged in one line CloudWatch keeps whole: the first fields and the count
    raw = [line for line in log_stream.getvalue().splitlines() if '"message":"rejected"' in line]
    assert len(raw) == 1
    assert len(raw[0].encode()) < LOG_EVENT_LIMIT
    rejected = json.loads(raw[0])
    assert rejected["error_count"] == 1200
    assert rejected["error_fields"][0].startswith("features.0000")
    assert (rejected["correlation_id"], rejected["model_version"]) == (REQUEST_ID, MODEL_VERSION)


def test_given_a_cognito_id_token_when_scored_then_the_log_names_the_user_pool_subject(
    invoke: Invoke, log_stream: io.StringIO
) -> None:
    # Given the event API Gateway sends behind a Cognito user pool authoriser: no IAM identity, the
    # ID token's claims under requestContext.authorizer.claims
    event = stored_event("score.json")
    identity = event["requestContext"]["identity"]
    identity.update(userArn=None, caller=None, user=None, accessKey=None, accountId=None)
    event["requestContext"]["authorizer"] = {
        "claims": {
            "sub": "7d8ca528-4931-4254-9273-ea5ee853f271",
            "cognito:username": "alice",
            "token_use": "id",
        }
    }
    invoke(event)
    (scored,) = [line for line in _log_lines(log_stream.getvalue()) if line.get("message") == "scored"]
    assert scored["caller"] == "7d8ca528-4931-4254-9273-ea5ee853f271"
    assert scored["correlation_id"] == REQUEST_ID


def test_given_any_request_when_metrics_flush_then_dimensions_are_bounded(
    invoke: Invoke, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given requests of several kinds, a cold start's included
    for make_event, _ in RESPONSES.values():
        invoke(make_event())
    blobs = [line for line in _log_lines(capsys.readouterr().out) if "_aws" in line]
    # Then one blob per request besides the cold start metric, every dimension from a fixed set
    assert len([blob for blob in blobs if "Requests" in blob]) == len(RESPONSES)
    for blob in blobs:
        (directive,) = blob["_aws"]["CloudWatchMetrics"]
        dimensions = {name for names in directive["Dimensions"] for name in names}
        assert dimensions <= {"service", "function_name"}, dimensions


# ---- traces -------------------------------------------------------------------------------------


class _RecordingProvider(NoOpTracingProvider):
    """Real X-Ray subsegments (not sent anywhere), kept for inspection."""

    def __init__(self) -> None:
        self.segment = Segment("loan-scoring-api")
        self.subsegments: list[Subsegment] = []
        self.annotations: dict[str, Any] = {}
        self.metadata: dict[str, Any] = {}

    @contextmanager
    def in_subsegment(self, name: Any = None, **kwargs: Any) -> Generator[Any, None, None]:
        subsegment = Subsegment(name, "local", self.segment)
        self.subsegments.append(subsegment)
        yield subsegment

    def put_annotation(self, key: str, value: Any) -> None:
        self.annotations[key] = value

    def put_metadata(self, key: str, value: Any, namespace: str = "default") -> None:
        self.metadata[key] = value


@pytest.fixture
def recorded_trace(monkeypatch: pytest.MonkeyPatch) -> _RecordingProvider:
    provider = _RecordingProvider()
    monkeypatch.setattr(tracer, "provider", provider)
    monkeypatch.setattr(tracer, "disabled", False)
    return provider


def test_given_a_fault_when_answered_then_the_trace_records_it(
    api_bundle: Path, monkeypatch: pytest.MonkeyPatch, recorded_trace: _RecordingProvider
) -> None:
    # Given a fault inside scoring, answered 500 by the resolver (so nothing is raised to the tracer)
    result = make_handler(_broken_api(api_bundle, monkeypatch))(stored_event("score.json"), api_context())  # type: ignore[arg-type]
    assert result["statusCode"] == 500
    # Then a subsegment carries X-Ray's fault flag and the exception as its cause
    faulted = [subsegment for subsegment in recorded_trace.subsegments if getattr(subsegment, "fault", False)]
    assert len(faulted) == 1
    (exception,) = faulted[0].cause["exceptions"]
    assert exception.type == "RuntimeError"
    assert exception.stack


def test_given_a_scored_request_when_traced_then_no_score_or_applicant_value_reaches_the_trace(
    invoke: Invoke, recorded_trace: _RecordingProvider
) -> None:
    status, body, _ = invoke(stored_event("score.json"))
    assert status == 200
    recorded = json.dumps(
        [recorded_trace.annotations, recorded_trace.metadata]
        + [subsegment.to_dict() for subsegment in recorded_trace.subsegments],
        default=str,
    )
    assert recorded_trace.annotations["model_version"] == MODEL_VERSION
    assert not any(getattr(subsegment, "fault", False) for subsegment in recorded_trace.subsegments)
    assert str(body["probability_of_default"]) not in recorded
    assert "32000" not in recorded  # the stored application's income
