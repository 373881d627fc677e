"""The stack's small tool functions (the rollout check, the snapshot sweeper): no model, no wheels (the
standard library and the runtime's boto3), an encrypted log group and an execution role of their own,
and the runtime's JSON log lines."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra.assets import lambda_architecture, lambda_code
from infra.config import AppConfig
from infra.execution_roles import execution_role
from infra.lambda_package import LambdaFunction
from infra.log_groups import encrypted_log_group
from infra.nag import suppress


def tool_function(
    scope: Construct,
    *,
    function: LambdaFunction,
    handler: str,
    description: str,
    config: AppConfig,
    logs_key: kms.IKey,
    memory_mb: int,
    timeout: Duration,
    environment: dict[str, str],
) -> tuple[lambda_.Function, logs.ILogGroup]:
    """The function ``Function`` in ``scope``, with its log group (``FunctionLogs``, encrypted with
    ``logs_key``) and a role (``FunctionRole``) that may write that log group only: never the scoring
    functions', whose lines are the audit trail."""
    log_group = encrypted_log_group(
        scope, "FunctionLogs", key=logs_key, retention=logs.RetentionDays.THREE_MONTHS
    )
    fn = lambda_.Function(
        scope,
        "Function",
        description=description,
        runtime=lambda_.Runtime.PYTHON_3_12,
        architecture=lambda_architecture(config),
        handler=handler,
        code=lambda_code(function, config),
        memory_size=memory_mb,
        timeout=timeout,
        tracing=lambda_.Tracing.ACTIVE,
        role=execution_role(scope, "FunctionRole", log_group=log_group),
        log_group=log_group,
        # The runtime's JSON log lines: each record's extra keys (a deployment id, a snapshot) become fields.
        logging_format=lambda_.LoggingFormat.JSON,
        application_log_level_v2=lambda_.ApplicationLogLevel.INFO,
        environment=environment,
    )
    for rule in ("AwsSolutions-L1", "Serverless-LambdaLatestVersion"):
        suppress(
            fn,
            rule,
            "python3.12 is pinned on purpose: the package builder compiles CPython 3.12 bytecode, the "
            "runtime of every function of the stack.",
        )
    return fn, log_group
