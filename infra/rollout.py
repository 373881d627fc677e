"""Rollout: CodeDeploy shifts the API's ``live`` alias to a new version gradually, rolling back on alarm.

Any deploy that publishes a new API function version (new code, new packaged bundle or a new
``modelBundleVersion``) moves the alias through CodeDeploy instead of all at once. Before any traffic
moves, a pre-traffic check (``PreTrafficCheck``, CodeDeploy's BeforeAllowTraffic hook) invokes the new
version directly and must see it load its model and score an application; then two alarms judge the
shift. A failed check or either alarm going off stops the deployment, moves all traffic back to the
previous version and fails the CloudFormation update, which then rolls the stack back too.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from aws_cdk import CfnElement, Duration, Stack
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_codedeploy as codedeploy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from infra.alarms import alarm_on_any
from infra.config import ApiRollout as ApiRolloutName
from infra.config import AppConfig, ConfigError
from infra.execution_roles import role_of
from infra.lambda_package import REPO_ROOT
from infra.nag import ANY_RESOURCE, suppress
from infra.scoring_functions import metrics_namespace, service_name
from infra.tool_functions import tool_function
from lambdas.rollout_check.hook import (
    EXPECTED_MODEL_VERSION_ENV,
    TARGET_ENV,
    TARGET_TIMEOUT_ENV,
    required_timeout_seconds,
)
from lambdas.version_names import hash_prefix_mismatch

DEPLOYMENT_CONFIGS: Mapping[ApiRolloutName, codedeploy.ILambdaDeploymentConfig] = {
    "canary": codedeploy.LambdaDeploymentConfig.CANARY_10_PERCENT_5_MINUTES,
    "linear": codedeploy.LambdaDeploymentConfig.LINEAR_10_PERCENT_EVERY_1_MINUTE,
    "all_at_once": codedeploy.LambdaDeploymentConfig.ALL_AT_ONCE,
}
# One-minute periods: a bad version must show within the 5-minute canary, not after it.
ALARM_PERIOD = Duration.minutes(1)
CODEDEPLOY_LAMBDA_POLICY = (
    "Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSCodeDeployRoleForLambdaLimited"
)
ROLLOUT_CHECK_HANDLER = "lambdas.rollout_check.handler.handler"
# Two small requests and their JSON, no model and no numpy: a small function is enough.
ROLLOUT_CHECK_MEMORY_MB = 256


def deployment_config(rollout: ApiRolloutName) -> codedeploy.ILambdaDeploymentConfig:
    return DEPLOYMENT_CONFIGS[rollout]


def expected_model_version(config: AppConfig) -> str | None:
    """The model version the API must serve after this deploy, where synthesis can know it: the
    registered version named by ``modelBundleVersion`` (``<model_name>/<model_version>``), else the
    packaged card's ``model_version``; None when the packaged card is missing or unreadable.

    A packaged card whose training-form version (``<dataset>-<12 hex>``) names another model than its
    ``onnx.sha256`` raises ConfigError: the check and the audit trail tell models apart by that label
    alone, so a canary would serve two models under one version (the loader verifies the sha256 only).
    """
    if config.registered_model_version:
        return config.registered_model_version
    card_file = REPO_ROOT / config.model_bundle_dir / "model_card.json"
    try:
        card = json.loads(card_file.read_text())
        version = card.get("model_version")
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(version, str) or not version:
        return None
    onnx, dataset = card.get("onnx"), card.get("dataset")
    sha256 = onnx.get("sha256") if isinstance(onnx, dict) else None
    if isinstance(dataset, str) and isinstance(sha256, str):
        named_prefix = hash_prefix_mismatch(version, dataset, sha256)
        if named_prefix is not None:
            raise ConfigError(
                f"modelBundleDir {config.model_bundle_dir!r}: its card's model_version {version!r} names "
                f"a model whose sha256 starts with {named_prefix}, but the card describes onnx.sha256 "
                f"{sha256}: a new model needs its own version name, or the rollout would serve two "
                "models under one version"
            )
    return version


class PreTrafficCheck(Construct):
    """CodeDeploy's BeforeAllowTraffic hook: a small function that invokes the version being deployed
    with a synthetic ``GET /v1/model`` and ``POST /v1/score`` and reports the verdict
    (``lambdas/rollout_check``), so a version that cannot load its model never gets a request.

    ``version`` is the published version the alias is about to move to: its ARN is the hook's
    ``TARGET_FUNCTION_VERSION_ARN``, so each deploy that publishes one updates the hook before
    CloudFormation hands the alias to CodeDeploy (the alias's update policy names the hook).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: AppConfig,
        target: lambda_.IFunction,
        version: lambda_.IVersion,
        target_timeout: Duration,
        logs_key: kms.IKey,
    ) -> None:
        super().__init__(scope, construct_id)
        timeout_seconds = int(target_timeout.to_seconds())
        expected = expected_model_version(config)
        # Deployment ids, verdicts and why a check failed; its role writes its own log group only.
        self.function, self.log_group = tool_function(
            self,
            function="rollout_check",
            handler=ROLLOUT_CHECK_HANDLER,
            description="CodeDeploy pre-traffic check of the scoring API's new version",
            config=config,
            logs_key=logs_key,
            memory_mb=ROLLOUT_CHECK_MEMORY_MB,
            # Both requests at the target's timeout with one retry each, then the report: a slow version
            # fails the check instead of timing the hook out (which would leave CodeDeploy waiting an hour).
            timeout=Duration.seconds(required_timeout_seconds(timeout_seconds)),
            environment={
                TARGET_ENV: version.function_arn,
                EXPECTED_MODEL_VERSION_ENV: expected or "",
                TARGET_TIMEOUT_ENV: str(timeout_seconds),
            },
        )
        # Invoke the scoring function's published versions and aliases only (qualified ARNs), never
        # another function. Not pinned to one version's ARN: that grant would change with every deploy,
        # and IAM's propagation delay could then refuse the very invocation the deploy is waiting for.
        self.function.add_to_role_policy(
            iam.PolicyStatement(actions=["lambda:InvokeFunction"], resources=[f"{target.function_arn}:*"])
        )
        self._acknowledge(target)

    def _acknowledge(self, target: lambda_.IFunction) -> None:
        fn = self.function
        suppress(
            role_of(fn),
            "AwsSolutions-IAM5",
            "lambda:InvokeFunction on '<scoring function ARN>:*' covers that one function's published "
            "versions and aliases (the version under deployment changes with every deploy; a per-version "
            "grant would race IAM propagation). X-Ray PutTraceSegments/PutTelemetryRecords do not support "
            "resource-level permissions.",
            findings=[f"Resource::<{_logical_id(target)}.Arn>:*", ANY_RESOURCE],
        )
        suppress(
            fn,
            "NIST.800.53.R5-LambdaInsideVPC",
            "SC-7/AC-4 ask for boundary protection of system resources. The check reaches nothing in the "
            "VPC: it calls the Lambda and CodeDeploy APIs over TLS with its own least-privilege role (invoke "
            "the scoring function's versions, report to this deployment group), and holds no data.",
        )
        for rule in ("Serverless-LambdaDLQ", "NIST.800.53.R5-LambdaDLQ"):
            suppress(
                fn,
                rule,
                "CodeDeploy invokes the check once per deployment and waits for its verdict: every failure "
                "inside the check is reported as Failed, and an invocation that fails outright (Lambda "
                "retries it) fails the deployment at CodeDeploy's hook timeout, which rolls it back. A "
                "dead-letter queue would hold an event nobody could act on after that.",
            )
        suppress(
            fn,
            "NIST.800.53.R5-LambdaConcurrency",
            "SC-6 asks for resource availability. The check runs once per API deployment, invoked only by "
            "CodeDeploy; reserved concurrency would take executions from the account's unreserved pool "
            "(and fails to deploy where the pool is at its minimum) to guard a function that never scales.",
        )


class ApiRollout(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: AppConfig,
        alias: lambda_.Alias,
        pre_traffic_check: PreTrafficCheck | None = None,
    ) -> None:
        """``pre_traffic_check`` becomes the deployment group's BeforeAllowTraffic hook."""
        super().__init__(scope, construct_id)
        # Threshold 0: expected failures (bad input) are 4xx answers, so any Lambda error or fault is a
        # defect. Both metrics cover the old and the new version; the old one was healthy before the shift.
        self.alarms: dict[str, cloudwatch.Alarm] = {
            # Errors of invocations through the alias, including a new version whose handler module
            # raises at import (e.g. a model bundle whose sha256 disagrees with its card).
            "AliasErrors": alarm_on_any(
                self,
                "AliasErrors",
                alias.metric_errors(period=ALARM_PERIOD, statistic="Sum"),
                "The API Lambda's live alias returned errors (rolls back a rollout)",
            ),
            # Unexpected exceptions the API catches and answers with 500: no Lambda error, only this
            # Powertools (EMF) metric.
            "ApiFaults": alarm_on_any(
                self,
                "ApiFaults",
                cloudwatch.Metric(
                    namespace=metrics_namespace(config),
                    metric_name="Faults",
                    dimensions_map={"service": service_name("api")},
                    statistic="Sum",
                    period=ALARM_PERIOD,
                ),
                "The API answered 500 after an unexpected fault (rolls back a rollout)",
            ),
        }
        # Fixed names so operators can find deployments: aws deploy list-deployments --application-name ...
        self.application = codedeploy.LambdaApplication(
            self, "Application", application_name=f"loan-scoring-{config.environment}-api"
        )
        self.deployment_group = codedeploy.LambdaDeploymentGroup(
            self,
            "DeploymentGroup",
            application=self.application,
            deployment_group_name=alias.alias_name,
            alias=alias,
            deployment_config=deployment_config(config.api_rollout),
            alarms=list(self.alarms.values()),
            # CDK grants the hook codedeploy:PutLifecycleEventHookExecutionStatus on this deployment
            # group only, and CodeDeploy's role lambda:InvokeFunction on the hook only.
            pre_hook=pre_traffic_check.function if pre_traffic_check else None,
            # Stopping a deployment by hand also moves traffic back: it is the operator's brake.
            auto_rollback=codedeploy.AutoRollbackConfig(
                failed_deployment=True, deployment_in_alarm=True, stopped_deployment=True
            ),
        )
        suppress(
            self.deployment_group,
            "AwsSolutions-IAM4",
            "CodeDeploy's service role (assumable by codedeploy.amazonaws.com only) uses the AWS-managed "
            "AWSCodeDeployRoleForLambdaLimited policy, the narrower of the two Lambda policies (no "
            "sns:Publish): get/update aliases, read alarm states, read CodeDeploy-tagged S3 objects and "
            "invoke CodeDeployHook_* functions (none exist here). AWS keeps it in step with the service.",
            findings=[CODEDEPLOY_LAMBDA_POLICY],
        )
        if pre_traffic_check:
            # A version change of the alias starts a deployment that invokes the hook at once: the hook
            # (its role's grants included) and CodeDeploy's grant to invoke it must exist by then, also on
            # the deploy that adds the hook to a running stack.
            alias.node.add_dependency(pre_traffic_check.function, self.deployment_group.role)
            suppress(
                self.deployment_group,
                "AwsSolutions-IAM5",
                "CDK's pre-hook grant lets CodeDeploy's service role invoke the pre-traffic check function "
                "and its qualified ARNs ('<hook ARN>:*'): that one function, which CodeDeploy must call.",
                findings=[f"Resource::<{_logical_id(pre_traffic_check.function)}.Arn>:*"],
            )


def _logical_id(function: lambda_.IFunction) -> str:
    """The logical id cdk-nag names a function by in its findings."""
    element = function.node.default_child
    assert isinstance(element, CfnElement)
    return Stack.of(function).get_logical_id(element)
