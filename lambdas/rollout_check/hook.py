"""One CodeDeploy lifecycle event: check the new version, then report the verdict exactly once.

Whatever goes wrong while checking (a bad setting, an invocation that raises, an answer that is not
what a healthy version gives, a bug here) is reported as ``Failed`` with the reason logged, so the
deployment stops and rolls back at once instead of waiting out CodeDeploy's one-hour hook timeout.
Only an event without its two ids cannot be reported; it is logged and raised.

The time budget is fixed so the report always fits: each invocation may take the target's own
timeout plus a margin, twice (one retry), and the hook's Lambda timeout
(:func:`required_timeout_seconds`, used by the CDK app) leaves room for both steps and the report.
Before each step the remaining time is checked too, so a slow step fails the check, not the hook.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from lambdas.rollout_check.checks import (
    CheckFailed,
    CheckIdentity,
    judge_model,
    judge_score,
    model_request,
    score_request,
)

# Environment of the hook function (infra/rollout.py sets them).
TARGET_ENV = "TARGET_FUNCTION_VERSION_ARN"  # the published version being deployed
EXPECTED_MODEL_VERSION_ENV = "EXPECTED_MODEL_VERSION"  # "" when the deploy cannot know it
TARGET_TIMEOUT_ENV = "TARGET_TIMEOUT_SECONDS"  # the target function's own timeout

CONNECT_TIMEOUT_SECONDS = 5
# Beyond the target's own timeout: Lambda answers a timed-out invocation (FunctionError) just after it.
READ_TIMEOUT_MARGIN_SECONDS = 10
INVOKE_ATTEMPTS = 2  # one retry: throttling and transient network errors
REPORT_CONNECT_TIMEOUT_SECONDS = 5
REPORT_READ_TIMEOUT_SECONDS = 10
REPORT_ATTEMPTS = 3
STEPS = 2  # GET /v1/model, POST /v1/score
_INIT_AND_SLACK_SECONDS = 10
_MAX_LAMBDA_TIMEOUT_SECONDS = 900
_QUOTED_CHARS = 1000

Status = Literal["Succeeded", "Failed"]
SUCCEEDED: Status = "Succeeded"
FAILED: Status = "Failed"
# CodeDeploy's answer when a verdict was already recorded (a retried invocation of this function).
ALREADY_REPORTED = "LifecycleEventAlreadyCompletedException"

logger = logging.getLogger(__name__)


class LambdaClient(Protocol):
    def invoke(self, **kwargs: Any) -> Mapping[str, Any]: ...


class CodeDeployClient(Protocol):
    def put_lifecycle_event_hook_execution_status(self, **kwargs: Any) -> Mapping[str, Any]: ...


class SettingsError(ValueError):
    """An environment variable of the hook function is missing or malformed (the message names it)."""


class HookEventError(ValueError):
    """The invocation is not a CodeDeploy lifecycle event: there is nothing to report the verdict to."""


@dataclass(frozen=True)
class HookSettings:
    target: str  # arn:<partition>:lambda:<region>:<account>:function:<name>:<version>
    target_version: str
    expected_model_version: str | None
    target_timeout_seconds: int

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> HookSettings:
        target = env.get(TARGET_ENV, "").strip()
        parts = target.split(":")
        published = (
            len(parts) == 8
            and parts[0] == "arn"
            and parts[2] == "lambda"
            and parts[5] == "function"
            and parts[7].isdigit()
        )
        if not published:
            raise SettingsError(
                f"{TARGET_ENV} must be the ARN of a published function version "
                f"(arn:<partition>:lambda:<region>:<account>:function:<name>:<number>), got {target!r}"
            )
        raw_timeout = env.get(TARGET_TIMEOUT_ENV, "").strip()
        if not raw_timeout.isdigit() or not 1 <= int(raw_timeout) <= _MAX_LAMBDA_TIMEOUT_SECONDS:
            raise SettingsError(
                f"{TARGET_TIMEOUT_ENV} must be the target's timeout in whole seconds (1 to "
                f"{_MAX_LAMBDA_TIMEOUT_SECONDS}), got {raw_timeout!r}"
            )
        return cls(
            target=target,
            target_version=parts[7],
            expected_model_version=env.get(EXPECTED_MODEL_VERSION_ENV, "").strip() or None,
            target_timeout_seconds=int(raw_timeout),
        )


def invoke_budget_seconds(target_timeout_seconds: int) -> int:
    """The longest one step's invocation can take: every attempt at its connect and read timeouts."""
    read = target_timeout_seconds + READ_TIMEOUT_MARGIN_SECONDS
    return INVOKE_ATTEMPTS * (CONNECT_TIMEOUT_SECONDS + read)


def report_budget_seconds() -> int:
    return REPORT_ATTEMPTS * (REPORT_CONNECT_TIMEOUT_SECONDS + REPORT_READ_TIMEOUT_SECONDS)


def required_timeout_seconds(target_timeout_seconds: int) -> int:
    """The hook function's Lambda timeout: both steps and the report at their worst, plus init."""
    steps = STEPS * invoke_budget_seconds(target_timeout_seconds)
    return steps + report_budget_seconds() + _INIT_AND_SLACK_SECONDS


def invoke_client_options(target_timeout_seconds: int) -> dict[str, Any]:
    """botocore ``Config`` options of the Lambda client (standard retries: throttling, 5xx, network)."""
    return {
        "connect_timeout": CONNECT_TIMEOUT_SECONDS,
        "read_timeout": target_timeout_seconds + READ_TIMEOUT_MARGIN_SECONDS,
        "retries": {"mode": "standard", "max_attempts": INVOKE_ATTEMPTS},
    }


def report_client_options() -> dict[str, Any]:
    """botocore ``Config`` options of the CodeDeploy client."""
    return {
        "connect_timeout": REPORT_CONNECT_TIMEOUT_SECONDS,
        "read_timeout": REPORT_READ_TIMEOUT_SECONDS,
        "retries": {"mode": "standard", "max_attempts": REPORT_ATTEMPTS},
    }


def hook_identity(event: Any) -> CheckIdentity:
    """The two ids CodeDeploy sends; HookEventError when either is missing."""
    fields = event if isinstance(event, Mapping) else {}
    deployment_id = fields.get("DeploymentId")
    execution_id = fields.get("LifecycleEventHookExecutionId")
    both_given = isinstance(deployment_id, str) and isinstance(execution_id, str)
    if not (both_given and deployment_id and execution_id):
        raise HookEventError(
            "not a CodeDeploy lifecycle event: DeploymentId and LifecycleEventHookExecutionId are required"
        )
    return CheckIdentity(deployment_id=deployment_id, lifecycle_event_hook_execution_id=execution_id)


def run_hook(
    event: Any,
    env: Mapping[str, str],
    *,
    lambda_client_for: Callable[[HookSettings], LambdaClient],
    codedeploy: CodeDeployClient,
    remaining_ms: Callable[[], int],
) -> dict[str, str]:
    """Check the version ``env`` names for the lifecycle event ``event``; report and return the verdict."""
    try:
        identity = hook_identity(event)
    except HookEventError:
        shown = repr(event)[:_QUOTED_CHARS]
        logger.exception("rollout check invoked without a lifecycle event", extra={"event": shown})
        raise
    ids = {
        "deployment_id": identity.deployment_id,
        "lifecycle_event_hook_execution_id": identity.lifecycle_event_hook_execution_id,
    }
    target = env.get(TARGET_ENV)
    logger.info("rollout check started", extra={**ids, "target": target})
    status: Status
    try:
        settings = HookSettings.from_env(env)
        outcome = _check(identity, settings, lambda_client_for(settings), remaining_ms)
    except (CheckFailed, SettingsError) as failure:
        status, reason = FAILED, _quoted(str(failure))
        logger.error("rollout check failed", extra={**ids, "target": target, "reason": reason})
    except Exception as fault:  # a client error, a network error, a bug here: never leave it hanging
        status, reason = FAILED, _quoted(f"{type(fault).__name__}: {fault}")
        logger.exception("rollout check failed", extra={**ids, "target": target, "reason": reason})
    else:
        status, reason = SUCCEEDED, "the new version loaded its model and scored an application"
        logger.info("rollout check passed", extra={**ids, "target": target, **outcome})
    _report(codedeploy, identity, status)
    return {"status": status, "reason": reason}


def _check(
    identity: CheckIdentity,
    settings: HookSettings,
    client: LambdaClient,
    remaining_ms: Callable[[], int],
) -> dict[str, Any]:
    served = judge_model(
        _invoke(client, settings, model_request(identity), remaining_ms), settings.expected_model_version
    )
    scored = judge_score(
        _invoke(client, settings, score_request(identity, served), remaining_ms), served, identity
    )
    return {
        "model_version": scored.model_version,
        "probability_of_default": scored.probability_of_default,
        "decision": scored.decision,
    }


def _invoke(
    client: LambdaClient,
    settings: HookSettings,
    request: Mapping[str, Any],
    remaining_ms: Callable[[], int],
) -> Mapping[str, Any]:
    """The new version's proxy result for one request (invoked directly, synchronously)."""
    what = f"{request['httpMethod']} {request['path']}"
    needed = (invoke_budget_seconds(settings.target_timeout_seconds) + report_budget_seconds()) * 1000
    left = remaining_ms()
    if left < needed:
        raise CheckFailed(f"{what}: only {left} ms left of the hook's time, {needed} ms needed")
    response = client.invoke(
        FunctionName=settings.target,
        InvocationType="RequestResponse",
        Payload=json.dumps(request).encode("utf-8"),
    )
    payload = _payload_text(response.get("Payload"))
    if response.get("FunctionError"):
        failure = f"{response['FunctionError']}): {_lambda_error(payload)}"
        raise CheckFailed(f"{what}: the new version failed ({failure}")
    if response.get("StatusCode") != 200:
        raise CheckFailed(f"{what}: Lambda answered the invocation with {response.get('StatusCode')!r}")
    executed = response.get("ExecutedVersion")
    if executed != settings.target_version:
        raise CheckFailed(f"{what}: version {executed!r} answered, not version {settings.target_version}")
    try:
        result = json.loads(payload)
    except ValueError:
        result = None
    if not isinstance(result, Mapping):
        shown = payload[:_QUOTED_CHARS]
        raise CheckFailed(f"{what}: the answer is not an API Gateway proxy result: {shown!r}")
    return result


def _report(codedeploy: CodeDeployClient, identity: CheckIdentity, status: Status) -> None:
    """Tell CodeDeploy the verdict. If that fails, raise: Lambda's retry runs the check again."""
    try:
        codedeploy.put_lifecycle_event_hook_execution_status(
            deploymentId=identity.deployment_id,
            lifecycleEventHookExecutionId=identity.lifecycle_event_hook_execution_id,
            status=status,
        )
    except Exception as error:
        if _error_code(error) == ALREADY_REPORTED:
            logger.warning(
                "rollout check verdict was already reported",
                extra={"deployment_id": identity.deployment_id, "status": status},
            )
            return
        logger.exception(
            "rollout check could not report its verdict",
            extra={"deployment_id": identity.deployment_id, "status": status},
        )
        raise
    logger.info("rollout check reported", extra={"deployment_id": identity.deployment_id, "status": status})


def _payload_text(payload: Any) -> str:
    """The invocation's payload: botocore's streaming body, or bytes/text (tests' fakes)."""
    if payload is None:
        return ""
    data = payload.read() if hasattr(payload, "read") else payload
    return data.decode("utf-8", errors="replace") if isinstance(data, bytes | bytearray) else str(data)


def _lambda_error(payload: str) -> str:
    """Lambda's error document (``errorType``, ``errorMessage``) of a failed invocation, quoted."""
    try:
        error = json.loads(payload)
    except ValueError:
        return _quoted(payload)
    if isinstance(error, Mapping) and ("errorType" in error or "errorMessage" in error):
        return _quoted(f"{error.get('errorType')}: {error.get('errorMessage')}")
    return _quoted(payload)


def _error_code(error: Exception) -> str | None:
    """botocore's ClientError code, read without importing botocore."""
    response = getattr(error, "response", None)
    if isinstance(response, Mapping):
        code = (response.get("Error") or {}).get("Code")
        return str(code) if code else None
    return None


def _quoted(text: str) -> str:
    return text if len(text) <= _QUOTED_CHARS else text[:_QUOTED_CHARS] + "..."
