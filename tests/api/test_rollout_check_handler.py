"""The rollout check (CodeDeploy's BeforeAllowTraffic hook): its verdicts with fake Lambda and CodeDeploy
clients, and the whole check run against the real API handler with the committed champion bundle."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from lambdas.api.app import create_api
from lambdas.api.bundle import load_model
from lambdas.api.observability import logger as api_logger
from lambdas.api.settings import Settings
from lambdas.api.wiring import LambdaHandler, make_handler
from lambdas.audit import API_DECISION
from lambdas.local_context import LocalLambdaContext
from lambdas.rollout_check import marker
from lambdas.rollout_check.checks import (
    CheckFailed,
    CheckIdentity,
    ServedModel,
    application_features,
)
from lambdas.rollout_check.hook import (
    EXPECTED_MODEL_VERSION_ENV,
    TARGET_ENV,
    TARGET_TIMEOUT_ENV,
    HookEventError,
    HookSettings,
    invoke_budget_seconds,
    invoke_client_options,
    report_budget_seconds,
    required_timeout_seconds,
    run_hook,
)
from tests.conftest import captured_log

REPO_ROOT = Path(__file__).resolve().parents[2]
CHAMPION = REPO_ROOT / "model_artifacts" / "credit_risk"
TARGET = "arn:aws:lambda:eu-west-1:123456789012:function:loan-scoring-api:7"
EVENT = {"DeploymentId": "d-ABCDEF123", "LifecycleEventHookExecutionId": "hook-execution-1"}
ENV = {TARGET_ENV: TARGET, EXPECTED_MODEL_VERSION_ENV: "m-1", TARGET_TIMEOUT_ENV: "15"}
PLENTY_OF_TIME_MS = 900_000
CHECK_LOGGER = "lambdas.rollout_check.hook"

# What GET /v1/model of a healthy version answers (the fields the check reads).
MODEL_VIEW: dict[str, Any] = {
    "model_version": "m-1",
    "decision_policy": {
        "threshold": 0.2,
        "approve_below_threshold": True,
        "decision_labels": {"approve": "approve", "decline": "decline"},
    },
    "features": [
        {"name": "income", "type": "number", "minimum": 0.0, "maximum": 100.0},
        {"name": "grade", "type": "category", "categories": ["A", "B"]},
    ],
}


# ---- fakes ---------------------------------------------------------------------------------------


class FakeCodeDeploy:
    """Records every status report; raises ``error`` when given one."""

    def __init__(self, error: Exception | None = None) -> None:
        self.reports: list[dict[str, Any]] = []
        self._error = error

    def put_lifecycle_event_hook_execution_status(self, **kwargs: Any) -> Mapping[str, Any]:
        self.reports.append(kwargs)
        if self._error is not None:
            raise self._error
        return {"lifecycleEventHookExecutionId": kwargs["lifecycleEventHookExecutionId"]}


Answer = Callable[[dict[str, Any]], Mapping[str, Any]]


class FakeLambda:
    """Lambda's Invoke: hands each request's proxy event to ``answer`` and returns what it gives."""

    def __init__(self, answer: Answer) -> None:
        self.invocations: list[dict[str, Any]] = []
        self._answer = answer

    def invoke(self, **kwargs: Any) -> Mapping[str, Any]:
        self.invocations.append(kwargs)
        return self._answer(json.loads(kwargs["Payload"]))

    @property
    def events(self) -> list[dict[str, Any]]:
        return [json.loads(invocation["Payload"]) for invocation in self.invocations]


class ClientError(Exception):
    """What botocore raises for an AWS error answer: the code is in ``response``."""

    def __init__(self, code: str) -> None:
        super().__init__(f"An error occurred ({code})")
        self.response = {"Error": {"Code": code, "Message": code}}


def invoked(result: Mapping[str, Any], version: str = "7") -> dict[str, Any]:
    """Lambda's answer to a synchronous Invoke that returned ``result``."""
    return {
        "StatusCode": 200,
        "ExecutedVersion": version,
        "Payload": io.BytesIO(json.dumps(result).encode()),
    }


def proxy_result(status: int, body: Any, model_version: str = "m-1") -> dict[str, Any]:
    return {
        "statusCode": status,
        "headers": {
            "Content-Type": "application/json",
            "X-Model-Version": model_version,
            "X-Request-Id": "r-1",
        },
        "multiValueHeaders": {},
        "body": body if isinstance(body, str) else json.dumps(body),
        "isBase64Encoded": False,
    }


def score_body(event: dict[str, Any], **changes: Any) -> dict[str, Any]:
    application_id = json.loads(event["body"])["application_id"]
    body = {
        "application_id": application_id,
        "model_version": "m-1",
        "probability_of_default": 0.05,
        "decision": "approve",
        "threshold": 0.2,
        "reasons": [],
    }
    return body | changes


def healthy(event: dict[str, Any]) -> Mapping[str, Any]:
    if event["path"] == "/v1/model":
        return invoked(proxy_result(200, MODEL_VIEW))
    return invoked(proxy_result(200, score_body(event)))


def score_answers(result: Callable[[dict[str, Any]], Mapping[str, Any]]) -> Answer:
    """A version that answers GET /v1/model correctly and POST /v1/score with ``result(event)``."""

    def answer(event: dict[str, Any]) -> Mapping[str, Any]:
        return healthy(event) if event["path"] == "/v1/model" else invoked(result(event))

    return answer


def run(
    answer: Answer,
    *,
    env: Mapping[str, str] = ENV,
    codedeploy: FakeCodeDeploy | None = None,
    remaining_ms: int = PLENTY_OF_TIME_MS,
) -> tuple[dict[str, str], FakeLambda, FakeCodeDeploy]:
    client, reporter = FakeLambda(answer), codedeploy or FakeCodeDeploy()
    verdict = run_hook(
        dict(EVENT),
        env,
        lambda_client_for=lambda _settings: client,
        codedeploy=reporter,
        remaining_ms=lambda: remaining_ms,
    )
    return verdict, client, reporter


def reported(status: str) -> list[dict[str, Any]]:
    """The one status report expected for EVENT."""
    return [
        {
            "deploymentId": EVENT["DeploymentId"],
            "lifecycleEventHookExecutionId": EVENT["LifecycleEventHookExecutionId"],
            "status": status,
        }
    ]


def failure_reasons(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        str(getattr(record, "reason", ""))
        for record in caplog.records
        if record.name == CHECK_LOGGER and record.getMessage() == "rollout check failed"
    ]


# ---- verdicts with fake clients -------------------------------------------------------------------


def test_given_a_healthy_new_version_when_the_hook_runs_then_it_reports_succeeded_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=CHECK_LOGGER)
    verdict, client, codedeploy = run(healthy)
    assert verdict["status"] == "Succeeded"
    assert codedeploy.reports == reported("Succeeded")
    # The version under deployment was invoked directly and synchronously: the model first, then a score
    assert [i["FunctionName"] for i in client.invocations] == [TARGET, TARGET]
    assert {i["InvocationType"] for i in client.invocations} == {"RequestResponse"}
    model_event, score_event = client.events
    assert (model_event["httpMethod"], model_event["path"]) == ("GET", "/v1/model")
    assert (score_event["httpMethod"], score_event["path"]) == ("POST", "/v1/score")
    assert score_event["headers"]["Content-Type"] == "application/json"
    # The application is built from the served schema: middle of the range, first category
    assert json.loads(score_event["body"]) == {
        "application_id": "rollout-check-d-ABCDEF123",
        "features": {"income": 50.0, "grade": "A"},
    }
    # Both requests are marked as this deployment's check, where no API Gateway caller can write
    assert {marker.rollout_check_of(event) for event in client.events} == {"d-ABCDEF123"}
    assert failure_reasons(caplog) == []
    assert any(record.getMessage() == "rollout check passed" for record in caplog.records)


def test_given_the_new_version_answers_500_when_the_hook_runs_then_it_reports_failed_once_with_why(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fault = {"error": {"code": "internal_error", "message": "Internal error; quote the request id"}}
    verdict, _, codedeploy = run(score_answers(lambda _event: proxy_result(500, fault)))
    assert verdict["status"] == "Failed"
    assert codedeploy.reports == reported("Failed")
    (reason,) = failure_reasons(caplog)
    assert "POST /v1/score answered 500 (internal_error" in reason
    assert "request id r-1" in reason


def test_given_the_invocation_raises_when_the_hook_runs_then_it_reports_failed_once_and_logs_the_trace(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def denied(_event: dict[str, Any]) -> Mapping[str, Any]:
        raise ClientError("AccessDeniedException")

    verdict, client, codedeploy = run(denied)
    assert verdict["status"] == "Failed"
    assert codedeploy.reports == reported("Failed")
    assert len(client.invocations) == 1  # stopped at the first step
    (record,) = [r for r in caplog.records if r.getMessage() == "rollout check failed"]
    reason = str(getattr(record, "reason", ""))
    assert "ClientError" in reason
    assert "AccessDeniedException" in reason
    assert record.exc_info is not None  # an unexpected fault keeps its stack trace in the log


def test_given_the_new_version_cannot_start_when_the_hook_runs_then_lambdas_error_is_the_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Given an init failure (the bundle's hash disagrees with its card): Lambda answers FunctionError
    def broken(_event: dict[str, Any]) -> Mapping[str, Any]:
        error = {"errorType": "BundleError", "errorMessage": "model.onnx sha256 does not match the card"}
        return invoked(error) | {"FunctionError": "Unhandled"}

    verdict, _, codedeploy = run(broken)
    assert codedeploy.reports == reported("Failed")
    (reason,) = failure_reasons(caplog)
    assert "GET /v1/model: the new version failed (Unhandled)" in reason
    assert "BundleError: model.onnx sha256 does not match the card" in reason
    assert verdict["reason"] == reason


BAD_SCORE_ANSWERS: dict[str, tuple[Callable[[dict[str, Any]], dict[str, Any]], str]] = {
    "not-json": (lambda e: proxy_result(200, "<html>oops</html>"), "without a JSON object"),
    "probability-above-one": (
        lambda e: proxy_result(200, score_body(e, probability_of_default=1.7)),
        "is not a probability",
    ),
    "probability-missing": (
        lambda e: proxy_result(200, score_body(e, probability_of_default=None)),
        "is not a probability",
    ),
    "probability-is-text": (
        lambda e: proxy_result(200, score_body(e, probability_of_default="0.1")),
        "is not a probability",
    ),
    "decision-against-policy": (
        lambda e: proxy_result(200, score_body(e, probability_of_default=0.5, decision="approve")),
        "the decision policy (threshold 0.2) gives 'decline'",
    ),
    "no-decision": (lambda e: proxy_result(200, score_body(e, decision=None)), "decision None"),
    "other-model": (lambda e: proxy_result(200, score_body(e, model_version="m-0")), "scored with model"),
    "other-threshold": (lambda e: proxy_result(200, score_body(e, threshold=0.5)), "threshold 0.5"),
    "validation-error": (
        lambda e: proxy_result(400, {"error": {"code": "validation_error", "message": "Invalid"}}),
        "answered 400 (validation_error",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_SCORE_ANSWERS))
def test_given_a_bad_score_answer_when_the_hook_runs_then_it_reports_failed_once(
    case: str, caplog: pytest.LogCaptureFixture
) -> None:
    result, expected_reason = BAD_SCORE_ANSWERS[case]
    verdict, client, codedeploy = run(score_answers(result))
    assert verdict["status"] == "Failed"
    assert codedeploy.reports == reported("Failed")
    assert len(client.invocations) == 2
    (reason,) = failure_reasons(caplog)
    assert expected_reason in reason


def test_given_the_new_version_serves_another_model_than_configured_then_the_check_fails(
    caplog: pytest.LogCaptureFixture,
) -> None:
    _, client, codedeploy = run(healthy, env=ENV | {EXPECTED_MODEL_VERSION_ENV: "m-2"})
    assert codedeploy.reports == reported("Failed")
    assert len(client.invocations) == 1  # no application is scored by the wrong model
    (reason,) = failure_reasons(caplog)
    assert "serves model m-1, but the deploy configured m-2" in reason


def test_given_no_expected_model_version_then_any_served_version_passes() -> None:
    _, _, codedeploy = run(healthy, env=ENV | {EXPECTED_MODEL_VERSION_ENV: ""})
    assert codedeploy.reports == reported("Succeeded")


def test_given_another_version_answers_than_the_one_deployed_then_the_check_fails(
    caplog: pytest.LogCaptureFixture,
) -> None:
    _, _, codedeploy = run(lambda event: invoked(proxy_result(200, MODEL_VIEW), version="6"))
    assert codedeploy.reports == reported("Failed")
    (reason,) = failure_reasons(caplog)
    assert "version '6' answered, not version 7" in reason


def test_given_model_headers_that_disagree_with_the_body_then_the_check_fails() -> None:
    _, _, codedeploy = run(lambda event: invoked(proxy_result(200, MODEL_VIEW, model_version="m-9")))
    assert codedeploy.reports == reported("Failed")


@pytest.mark.parametrize(
    "env",
    [
        {TARGET_ENV: "", TARGET_TIMEOUT_ENV: "15"},
        {TARGET_ENV: TARGET.rsplit(":", 1)[0] + ":$LATEST", TARGET_TIMEOUT_ENV: "15"},
        {TARGET_ENV: TARGET.rsplit(":", 1)[0] + ":live", TARGET_TIMEOUT_ENV: "15"},
        {TARGET_ENV: TARGET, TARGET_TIMEOUT_ENV: "fifteen"},
        {TARGET_ENV: TARGET, TARGET_TIMEOUT_ENV: "0"},
    ],
    ids=["no-target", "latest", "alias", "timeout-not-a-number", "timeout-zero"],
)
def test_given_a_bad_setting_when_the_hook_runs_then_it_reports_failed_without_invoking(
    env: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    _, client, codedeploy = run(healthy, env=env)
    assert codedeploy.reports == reported("Failed")
    assert client.invocations == []
    (reason,) = failure_reasons(caplog)
    assert TARGET_ENV in reason or TARGET_TIMEOUT_ENV in reason


def test_given_too_little_time_left_when_the_hook_runs_then_it_fails_before_invoking() -> None:
    needed_ms = (invoke_budget_seconds(15) + report_budget_seconds()) * 1000
    _, client, codedeploy = run(healthy, remaining_ms=needed_ms - 1)
    assert codedeploy.reports == reported("Failed")
    assert client.invocations == []


@pytest.mark.parametrize(
    "event",
    [{}, {"DeploymentId": "d-1"}, {"LifecycleEventHookExecutionId": "h-1"}, {"DeploymentId": ""}, None],
)
def test_given_an_event_without_both_ids_then_nothing_is_reported_and_the_invocation_fails(
    event: Any,
) -> None:
    client, codedeploy = FakeLambda(healthy), FakeCodeDeploy()
    with pytest.raises(HookEventError, match="DeploymentId and LifecycleEventHookExecutionId"):
        run_hook(
            event,
            ENV,
            lambda_client_for=lambda _settings: client,
            codedeploy=codedeploy,
            remaining_ms=lambda: PLENTY_OF_TIME_MS,
        )
    assert (client.invocations, codedeploy.reports) == ([], [])


def test_given_codedeploy_refuses_the_report_then_the_invocation_fails_so_lambda_retries_it() -> None:
    codedeploy = FakeCodeDeploy(error=ClientError("ThrottlingException"))
    with pytest.raises(ClientError):
        run(healthy, codedeploy=codedeploy)
    assert codedeploy.reports == reported("Succeeded")  # tried once; the retry is Lambda's


def test_given_a_verdict_already_reported_then_a_retried_invocation_ends_quietly() -> None:
    codedeploy = FakeCodeDeploy(error=ClientError("LifecycleEventAlreadyCompletedException"))
    verdict, _, _ = run(healthy, codedeploy=codedeploy)
    assert verdict["status"] == "Succeeded"
    assert codedeploy.reports == reported("Succeeded")


# ---- the time budget ------------------------------------------------------------------------------


@pytest.mark.parametrize("target_timeout", [3, 15, 60])
def test_the_hook_timeout_fits_both_steps_at_their_worst_and_the_report(target_timeout: int) -> None:
    options = invoke_client_options(target_timeout)
    # Each attempt may wait for the target's whole timeout before Lambda answers
    assert options["read_timeout"] > target_timeout
    per_step = options["retries"]["max_attempts"] * (options["connect_timeout"] + options["read_timeout"])
    assert per_step == invoke_budget_seconds(target_timeout)
    # The second step still finds its budget and the report's after the first took all of its own
    assert required_timeout_seconds(target_timeout) - per_step >= per_step + report_budget_seconds()


# ---- the synthetic application ---------------------------------------------------------------------


def _served(*features: dict[str, Any]) -> ServedModel:
    return ServedModel("m-1", 0.2, True, "approve", "decline", tuple(features))


def test_given_each_feature_type_then_the_application_holds_a_value_its_schema_accepts() -> None:
    served = _served(
        {"name": "count", "type": "integer", "minimum": 1, "maximum": 4},
        {"name": "narrow", "type": "integer", "minimum": 2.5, "maximum": 2.9},
        {"name": "open_above", "type": "number", "minimum": 3.0, "maximum": None},
        {"name": "open_below", "type": "number", "maximum": -1.0},
        {"name": "unbounded", "type": "integer"},
        {"name": "flag", "type": "boolean"},
        {"name": "home", "type": "category", "categories": ["RENT", "OWN"]},
    )
    assert application_features(served) == {
        "count": 2,
        "narrow": 3,  # rounded up into the range, not down out of it
        "open_above": 3.0,
        "open_below": -1.0,
        "unbounded": 0,
        "flag": False,
        "home": "RENT",
    }


@pytest.mark.parametrize(
    "feature",
    [
        {"name": "when", "type": "date"},
        {"name": "home", "type": "category", "categories": []},
        {"name": "amount", "type": "number", "minimum": "zero"},
    ],
)
def test_given_a_feature_the_check_cannot_fill_then_it_fails_naming_the_feature(
    feature: dict[str, Any],
) -> None:
    with pytest.raises(CheckFailed, match=f"feature {feature['name']}"):
        application_features(_served(feature))


def test_a_long_deployment_id_still_gives_an_application_id_the_api_accepts() -> None:
    identity = CheckIdentity(deployment_id="d-" + "X" * 300, lifecycle_event_hook_execution_id="h")
    assert len(identity.application_id) == 128


def test_settings_name_the_version_under_deployment() -> None:
    settings = HookSettings.from_env(ENV)
    assert (settings.target, settings.target_version, settings.expected_model_version) == (TARGET, "7", "m-1")


# ---- the handler module ----------------------------------------------------------------------------


def test_given_the_lambda_entry_point_then_it_wires_real_clients_with_the_budgeted_timeouts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # boto3 makes clients offline; the region is what Lambda's environment always provides
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    from lambdas.rollout_check import handler as entry

    client = entry._lambda_client(HookSettings.from_env(ENV))
    expected = invoke_client_options(15)
    assert client.meta.config.read_timeout == expected["read_timeout"]  # type: ignore[attr-defined]
    assert client.meta.config.connect_timeout == expected["connect_timeout"]  # type: ignore[attr-defined]
    # And the entry point runs the hook with those clients and the context's remaining time
    fake_lambda, fake_codedeploy = FakeLambda(healthy), FakeCodeDeploy()
    monkeypatch.setattr(entry, "_lambda_client", lambda _settings: fake_lambda)
    monkeypatch.setattr(entry, "_CODEDEPLOY", fake_codedeploy)
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    verdict = entry.handler(dict(EVENT), LocalLambdaContext("rollout-check"))
    assert verdict["status"] == "Succeeded"
    assert fake_codedeploy.reports == reported("Succeeded")


# ---- against the real API handler and the committed champion ----------------------------------------


def _champion_version() -> str:
    version: str = json.loads((CHAMPION / "model_card.json").read_text())["model_version"]
    return version


class DriftSpy:
    """Stands in for the API's drift window: records how many applications reach it."""

    def __init__(self) -> None:
        self.applications = 0

    def record(self, feed: Any, probability: Any) -> None:
        self.applications += len(probability)


@pytest.fixture(scope="module")
def champion_api() -> tuple[LambdaHandler, DriftSpy]:
    settings = Settings(
        model_bundle_dir=CHAMPION,
        model_bundle_uri=None,
        log_applicant_values=False,
        max_batch_applications=100,
        drift_window_applications=500,
    )
    api = create_api(load_model(settings), settings)
    spy = DriftSpy()
    api._drift = spy  # type: ignore[assignment]
    return make_handler(api), spy


def real_api(handler: LambdaHandler) -> Answer:
    """Lambda's Invoke of the new version: the event and the result cross JSON, as over the wire."""

    def answer(event: dict[str, Any]) -> Mapping[str, Any]:
        result = handler(event, LocalLambdaContext("loan-scoring-api"))  # type: ignore[arg-type]
        return invoked(json.loads(json.dumps(result)))

    return answer


def _audit_lines(buffer: io.StringIO) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in buffer.getvalue().splitlines() if line.strip()]
    return [line for line in lines if line.get("message") == API_DECISION]


def test_given_the_real_api_and_the_champion_when_the_hook_runs_then_the_synthetic_requests_pass(
    champion_api: tuple[LambdaHandler, DriftSpy],
) -> None:
    handler, drift = champion_api
    before = drift.applications
    env = ENV | {EXPECTED_MODEL_VERSION_ENV: _champion_version()}
    with captured_log(api_logger) as buffer:
        verdict, client, codedeploy = run(real_api(handler), env=env)
    assert verdict["status"] == "Succeeded", verdict["reason"]
    assert codedeploy.reports == reported("Succeeded")
    # The application was built from the champion's own card (every feature, no extra one)
    card = json.loads((CHAMPION / "model_card.json").read_text())
    sent = json.loads(client.events[1]["body"])["features"]
    assert set(sent) == {feature["name"] for feature in card["features"]}
    # And its audit record says it is this deployment's check, not an applicant
    (audit,) = _audit_lines(buffer)
    assert audit[marker.LOG_KEY] == EVENT["DeploymentId"]
    assert audit["application_id"] == "rollout-check-d-ABCDEF123"
    assert audit["correlation_id"] == "rollout-check-d-ABCDEF123-score"
    assert audit["model_version"] == _champion_version()
    # And the synthetic application stayed out of the drift window
    assert drift.applications == before


def test_given_the_same_request_without_the_marker_then_it_is_an_applicants_record(
    champion_api: tuple[LambdaHandler, DriftSpy],
) -> None:
    # Given the check's score request as API Gateway would deliver it (the stage cannot carry the marker)
    handler, drift = champion_api
    recorder = FakeLambda(real_api(handler))
    run_hook(
        dict(EVENT),
        ENV | {EXPECTED_MODEL_VERSION_ENV: ""},
        lambda_client_for=lambda _settings: recorder,
        codedeploy=FakeCodeDeploy(),
        remaining_ms=lambda: PLENTY_OF_TIME_MS,
    )
    request = recorder.events[1]
    del request["requestContext"][marker.CONTEXT_KEY]
    before = drift.applications
    with captured_log(api_logger) as buffer:
        result = handler(request, LocalLambdaContext("loan-scoring-api"))  # type: ignore[arg-type]
    assert result["statusCode"] == 200
    (audit,) = _audit_lines(buffer)
    assert marker.LOG_KEY not in audit
    assert drift.applications == before + 1
