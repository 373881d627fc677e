"""Settings shared by both scoring Lambdas (runtime, architecture, model bundle env vars, logs)."""

from __future__ import annotations

from aws_cdk import Duration, Size
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
from lambdas.audit import audit_logging_problem

METRICS_NAMESPACE = "LoanScoring"


def metrics_namespace(config: AppConfig) -> str:
    """The namespace of one environment's custom metrics (the handlers' EMF and the stack's metric
    filters): two stacks in one account and region would otherwise write the same series, and each
    would alarm, roll back its canary and graph drift on the other's traffic."""
    return f"{METRICS_NAMESPACE}/{config.environment}"


def service_name(function: str) -> str:
    """Powertools' service name of a function: its logs' "service" key and its metrics' dimension."""
    return f"loan-scoring-{function}"


def scoring_function(
    scope: Construct,
    construct_id: str,
    *,
    config: AppConfig,
    function: LambdaFunction,
    logs_key: kms.IKey,
    memory_mb: int,
    timeout: Duration,
    extra_environment: dict[str, str] | None = None,
    ephemeral_storage: Size | None = None,
    snap_start: bool = False,
) -> lambda_.Function:
    service = service_name(function)
    # Decisions, probabilities and reasons (applicant values too with LOG_APPLICANT_VALUES): encrypted.
    log_group = encrypted_log_group(
        scope, f"{construct_id}Logs", key=logs_key, retention=logs.RetentionDays.THREE_MONTHS
    )
    environment = {
        "MODEL_BUNDLE_DIR": config.model_bundle_dir,
        "POWERTOOLS_SERVICE_NAME": service,
        "POWERTOOLS_METRICS_NAMESPACE": metrics_namespace(config),
        "LOG_APPLICANT_VALUES": "false",
        **(extra_environment or {}),
    }
    # The cold start refuses a logging setting that would lose the audit trail: fail the synth instead.
    # Nor is ApplicationLogLevel set below (Lambda would drop the INFO audit lines under WARN or above).
    problem = audit_logging_problem(environment)
    if problem is not None:
        raise ValueError(f"{construct_id}: {problem}")
    # The audit trail's source: only this function's role may write this log group (and no other).
    role = execution_role(scope, f"{construct_id}Role", log_group=log_group)
    fn = lambda_.Function(
        scope,
        construct_id,
        runtime=lambda_.Runtime.PYTHON_3_12,
        architecture=lambda_architecture(config),
        handler=f"lambdas.{function}.handler.handler",
        code=lambda_code(function, config),
        memory_size=memory_mb,
        timeout=timeout,
        ephemeral_storage_size=ephemeral_storage,
        # Applies to published versions only, which is what the API's alias serves.
        snap_start=lambda_.SnapStartConf.ON_PUBLISHED_VERSIONS if snap_start else None,
        tracing=lambda_.Tracing.ACTIVE,
        role=role,
        log_group=log_group,
        environment=environment,
    )
    for rule in ("AwsSolutions-L1", "Serverless-LambdaLatestVersion"):
        suppress(
            fn,
            rule,
            "python3.12 is pinned on purpose: the wheels are resolved for CPython 3.12 and the design "
            "fixes it.",
        )
    suppress(
        fn,
        "NIST.800.53.R5-LambdaInsideVPC",
        "SC-7/AC-4 ask for boundary protection of system resources. The scoring functions reach nothing "
        "in the VPC (not the database); they only call AWS APIs (S3, KMS, X-Ray) over TLS with their own "
        "least-privilege role, so a VPC would add ENIs and more endpoints but no boundary around data. "
        "Deployers who require it set vpc= (isolated subnets) and add an X-Ray interface endpoint.",
    )
    return fn
