"""Lambda entry point of the rollout check (``lambdas.rollout_check.handler.handler``).

CodeDeploy calls it with ``{"DeploymentId", "LifecycleEventHookExecutionId"}`` before it moves any
traffic to a new API version (BeforeAllowTraffic). boto3 comes with Lambda's Python runtime; the
CodeDeploy client is made at init, so a verdict can be reported even when a setting is wrong.
"""

from __future__ import annotations

import os
from typing import Any, cast

import boto3
from botocore.config import Config

from lambdas.rollout_check.hook import (
    CodeDeployClient,
    HookSettings,
    LambdaClient,
    invoke_client_options,
    report_client_options,
    run_hook,
)

_CODEDEPLOY = cast(CodeDeployClient, boto3.client("codedeploy", config=Config(**report_client_options())))


def _lambda_client(settings: HookSettings) -> LambdaClient:
    options = invoke_client_options(settings.target_timeout_seconds)
    return cast(LambdaClient, boto3.client("lambda", config=Config(**options)))


def handler(event: Any, context: Any) -> dict[str, str]:
    return run_hook(
        event,
        os.environ,
        lambda_client_for=_lambda_client,
        codedeploy=_CODEDEPLOY,
        remaining_ms=context.get_remaining_time_in_millis,
    )
