"""Mutation-testing gaps of the tool functions: the rollout check (whether a new model version may take
traffic) and the snapshot sweeper (which RDS snapshots are deleted). Each test pins a decision that a
small change of the source (a flipped comparison, a dropped check) used to leave unnoticed."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Mapping
from typing import Any

import pytest

from lambdas.rollout_check import marker
from lambdas.rollout_check.checks import (
    CheckFailed,
    CheckIdentity,
    ServedModel,
    application_features,
    judge_model,
    judge_score,
)
from lambdas.rollout_check.hook import (
    EXPECTED_MODEL_VERSION_ENV,
    TARGET_ENV,
    TARGET_TIMEOUT_ENV,
    HookEventError,
    HookSettings,
    SettingsError,
    run_hook,
)
from lambdas.snapshot_sweeper.sweep import SweepFailed, run_sweep
from tests.snapshot_sweeper.names import run_name
from tests.snapshot_sweeper.test_sweep import ENV as SWEEP_ENV
from tests.snapshot_sweeper.test_sweep import NOW, ClientError, FakeRds, entry

IDENTITY = CheckIdentity(deployment_id="d-ABCDEF123", lifecycle_event_hook_execution_id="hook-1")
TARGET = "arn:aws:lambda:eu-west-1:123456789012:function:loan-scoring-api:7"
HOOK_ENV = {TARGET_ENV: TARGET, EXPECTED_MODEL_VERSION_ENV: "m-1", TARGET_TIMEOUT_ENV: "15"}
HOOK_EVENT = {"DeploymentId": "d-ABCDEF123", "LifecycleEventHookExecutionId": "hook-1"}


def model_view(**policy_changes: Any) -> dict[str, Any]:
    """What GET /v1/model of a healthy version answers (the fields the check reads)."""
    policy = {
        "threshold": 0.2,
        "approve_below_threshold": True,
        "decision_labels": {"approve": "approve", "decline": "decline"},
    }
    return {
        "model_version": "m-1",
        "decision_policy": {**policy, **policy_changes},
        "features": [{"name": "income", "type": "number", "minimum": 0.0, "maximum": 100.0}],
    }


def proxy_result(body: Any, *, headers: Mapping[str, str] | None = None, status: int = 200) -> dict[str, Any]:
    return {
        "statusCode": status,
        "headers": {"Content-Type": "application/json", "X-Model-Version": "m-1"}
        if headers is None
        else headers,
        "multiValueHeaders": {},
        "body": json.dumps(body),
        "isBase64Encoded": False,
    }


def served(*, approve_below_threshold: bool = True) -> ServedModel:
    features = ({"name": "income", "type": "number", "minimum": 0.0, "maximum": 100.0},)
    return ServedModel("m-1", 0.2, approve_below_threshold, "approve", "decline", features)


def score_body(probability: float, decision: str, **changes: Any) -> dict[str, Any]:
    body = {
        "application_id": IDENTITY.application_id,
        "model_version": "m-1",
        "probability_of_default": probability,
        "decision": decision,
        "threshold": 0.2,
        "reasons": [],
    }
    return body | changes


# ---- GET /v1/model: what a healthy version must publish -------------------------------------------


def test_given_an_empty_model_version_then_the_model_answer_fails_even_when_none_is_expected() -> None:
    body = model_view() | {"model_version": ""}
    with pytest.raises(CheckFailed, match="no model_version"):
        judge_model(proxy_result(body, headers={"X-Model-Version": ""}), None)


def test_given_no_model_version_header_then_the_model_answer_fails() -> None:
    with pytest.raises(CheckFailed, match="X-Model-Version is None"):
        judge_model(proxy_result(model_view(), headers={"Content-Type": "application/json"}), "m-1")


def test_given_the_header_in_lower_case_or_only_multi_valued_then_it_is_read() -> None:
    lower = proxy_result(model_view(), headers={"x-model-version": "m-1"})
    multi = proxy_result(model_view(), headers={}) | {"multiValueHeaders": {"X-Model-Version": ["m-1"]}}
    assert judge_model(lower, "m-1").model_version == "m-1"
    assert judge_model(multi, "m-1").model_version == "m-1"


def test_given_a_base64_encoded_answer_then_it_is_decoded() -> None:
    result = proxy_result(model_view())
    result |= {"body": base64.b64encode(result["body"].encode()).decode(), "isBase64Encoded": True}
    assert judge_model(result, "m-1").threshold == 0.2


@pytest.mark.parametrize(
    "labels", [{"approve": "approve"}, {"approve": "approve", "decline": ""}, {"decline": "decline"}]
)
def test_given_decision_labels_without_both_decisions_then_the_model_answer_fails(
    labels: dict[str, str],
) -> None:
    with pytest.raises(CheckFailed, match="do not name approve and decline"):
        judge_model(proxy_result(model_view(decision_labels=labels)), "m-1")


def test_given_no_features_then_the_model_answer_fails() -> None:
    with pytest.raises(CheckFailed, match="lists no features"):
        judge_model(proxy_result(model_view() | {"features": []}), "m-1")


@pytest.mark.parametrize("value", [None, "false", 0, 1])
def test_given_a_policy_direction_that_is_not_a_boolean_then_the_model_answer_fails(value: Any) -> None:
    # The check cannot tell which decision is right without the direction; it must not guess one.
    with pytest.raises(CheckFailed, match="approve_below_threshold"):
        judge_model(proxy_result(model_view(approve_below_threshold=value)), "m-1")


def test_given_a_policy_without_a_direction_then_the_model_answer_fails() -> None:
    body = model_view()
    del body["decision_policy"]["approve_below_threshold"]
    with pytest.raises(CheckFailed, match="approve_below_threshold"):
        judge_model(proxy_result(body), "m-1")


@pytest.mark.parametrize("direction", [True, False])
def test_given_a_boolean_policy_direction_then_it_is_the_one_served(direction: bool) -> None:
    assert judge_model(proxy_result(model_view(approve_below_threshold=direction)), "m-1") == ServedModel(
        "m-1", 0.2, direction, "approve", "decline", tuple(model_view()["features"])
    )


@pytest.mark.parametrize("bound", [float("inf"), float("-inf"), float("nan")])
def test_given_a_feature_with_a_bound_that_is_not_finite_then_the_application_cannot_be_built(
    bound: float,
) -> None:
    feature = {"name": "amount", "type": "number", "minimum": 0.0, "maximum": bound}
    model = ServedModel("m-1", 0.2, True, "approve", "decline", (feature,))
    with pytest.raises(CheckFailed, match="feature amount: maximum"):
        application_features(model)


# ---- POST /v1/score: the decision the card's policy gives -----------------------------------------


@pytest.mark.parametrize(
    ("approve_below", "probability", "decision"),
    [
        (True, 0.2, "decline"),  # at the threshold the API declines (lambdas/scoring/runtime.py)
        (True, 0.1999, "approve"),
        (True, 0.0, "approve"),  # a probability of exactly 0 is a probability
        (True, 1.0, "decline"),
        (False, 0.2, "approve"),  # approve-above policies: at the threshold the API approves
        (False, 0.1999, "decline"),
        (False, 0.9, "approve"),
    ],
)
def test_given_the_decision_the_policy_gives_then_the_score_answer_passes(
    approve_below: bool, probability: float, decision: str
) -> None:
    outcome = judge_score(
        proxy_result(score_body(probability, decision)),
        served(approve_below_threshold=approve_below),
        IDENTITY,
    )
    assert (outcome.probability_of_default, outcome.decision) == (probability, decision)


@pytest.mark.parametrize(
    ("approve_below", "probability", "wrong"),
    [(True, 0.2, "approve"), (False, 0.2, "decline"), (False, 0.1999, "approve"), (False, 0.9, "decline")],
)
def test_given_a_decision_against_the_policy_then_the_score_answer_fails(
    approve_below: bool, probability: float, wrong: str
) -> None:
    with pytest.raises(CheckFailed, match=f"decision '{wrong}' for probability {probability}"):
        judge_score(
            proxy_result(score_body(probability, wrong)),
            served(approve_below_threshold=approve_below),
            IDENTITY,
        )


def test_given_an_answer_for_another_application_then_the_score_answer_fails() -> None:
    body = score_body(0.05, "approve", application_id="someone-else")
    with pytest.raises(CheckFailed, match="answered for application 'someone-else'"):
        judge_score(proxy_result(body), served(), IDENTITY)


def test_given_an_answer_without_reasons_then_the_score_answer_fails() -> None:
    body = score_body(0.05, "approve")
    del body["reasons"]
    with pytest.raises(CheckFailed, match="no list of reasons"):
        judge_score(proxy_result(body), served(), IDENTITY)


# ---- the marker: a check's request is never an applicant ------------------------------------------


@pytest.mark.parametrize("mark", [None, "d-1", {}, {"deploymentId": ""}, {"deploymentId": 7}])
def test_given_a_marked_request_with_an_unreadable_deployment_then_it_is_still_a_check(mark: Any) -> None:
    event = {"requestContext": {marker.CONTEXT_KEY: mark}}
    assert marker.rollout_check_of(event) == marker.UNKNOWN_DEPLOYMENT


def test_given_an_unmarked_request_then_it_is_an_applicants() -> None:
    assert marker.rollout_check_of({"requestContext": {"stage": "v1"}}) is None
    assert marker.rollout_check_of({}) is None


# ---- the hook: settings, event and Lambda's answer ------------------------------------------------


class FakeCodeDeploy:
    def __init__(self) -> None:
        self.statuses: list[str] = []

    def put_lifecycle_event_hook_execution_status(self, **kwargs: Any) -> Mapping[str, Any]:
        self.statuses.append(kwargs["status"])
        return {}


class FakeLambda:
    """Answers GET /v1/model healthily, with the Invoke status code given."""

    def __init__(self, status_code: int) -> None:
        self.status_code = status_code
        self.calls = 0

    def invoke(self, **kwargs: Any) -> Mapping[str, Any]:
        self.calls += 1
        payload = json.dumps(proxy_result(model_view())).encode()
        return {"StatusCode": self.status_code, "ExecutedVersion": "7", "Payload": io.BytesIO(payload)}


def test_given_a_target_timeout_beyond_lambdas_maximum_then_the_settings_are_refused() -> None:
    with pytest.raises(SettingsError, match=TARGET_TIMEOUT_ENV):
        HookSettings.from_env(HOOK_ENV | {TARGET_TIMEOUT_ENV: "901"})
    assert HookSettings.from_env(HOOK_ENV | {TARGET_TIMEOUT_ENV: "900"}).target_timeout_seconds == 900


def test_given_an_invocation_lambda_did_not_answer_with_200_then_the_check_fails() -> None:
    codedeploy, client = FakeCodeDeploy(), FakeLambda(status_code=202)
    verdict = run_hook(
        dict(HOOK_EVENT),
        HOOK_ENV,
        lambda_client_for=lambda _settings: client,
        codedeploy=codedeploy,
        remaining_ms=lambda: 900_000,
    )
    assert (verdict["status"], codedeploy.statuses, client.calls) == ("Failed", ["Failed"], 1)
    assert "Lambda answered the invocation with 202" in verdict["reason"]


def test_given_an_event_with_an_empty_execution_id_then_nothing_is_reported() -> None:
    codedeploy, client = FakeCodeDeploy(), FakeLambda(status_code=200)
    with pytest.raises(HookEventError):
        run_hook(
            {"DeploymentId": "d-1", "LifecycleEventHookExecutionId": ""},
            HOOK_ENV,
            lambda_client_for=lambda _settings: client,
            codedeploy=codedeploy,
            remaining_ms=lambda: 900_000,
        )
    assert (codedeploy.statuses, client.calls) == ([], 0)


# ---- the sweeper: which snapshots are deleted -----------------------------------------------------


def test_given_a_run_name_with_a_suffix_then_the_snapshot_is_kept() -> None:
    kept = run_name("x") + "-before-upgrade"
    rds = FakeRds([entry(kept), entry(run_name("y"))], exports={})
    report = run_sweep(SWEEP_ENV, rds, NOW)
    assert (report.deleted, rds.names) == ([run_name("y")], {kept})


def test_given_a_running_export_then_it_is_cancelled_and_its_snapshot_not_deleted_in_the_same_run() -> None:
    name = run_name("exporting")
    rds = FakeRds([entry(name)], exports={name: "IN_PROGRESS"})
    report = run_sweep(SWEEP_ENV, rds, NOW)
    assert (report.deleted, report.waiting) == ([], [name])
    assert rds.called("delete_db_snapshot") == []
    assert rds.names == {name}


def test_given_rds_will_not_say_whether_an_export_runs_then_the_snapshot_is_kept_and_the_sweep_fails() -> (
    None
):
    name, other = run_name("unknown-export"), run_name("no-export")
    rds = FakeRds([entry(name), entry(other)], exports={})
    rds.refuse[("describe_export_tasks", name)] = ClientError("AccessDenied")
    with pytest.raises(SweepFailed, match=f"{name}: ClientError"):
        run_sweep(SWEEP_ENV, rds, NOW)
    assert rds.names == {name}  # the other was still deleted; this one is kept
    assert [call["DBSnapshotIdentifier"] for call in rds.called("delete_db_snapshot")] == [other]
