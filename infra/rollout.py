"""Rollout: CodeDeploy shifts the API's ``live`` alias to a new version gradually, rolling back on alarm.

Any deploy that publishes a new API function version (new code, new packaged bundle or a new
``modelBundleVersion``) moves the alias through CodeDeploy instead of all at once. Two alarms judge the
shift; either one going off stops it, moves all traffic back to the previous version and fails the
CloudFormation update, which then rolls the stack back too.
"""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_codedeploy as codedeploy
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from infra.alarms import alarm_on_any
from infra.config import ApiRollout as ApiRolloutName
from infra.config import AppConfig
from infra.nag import suppress
from infra.scoring_functions import METRICS_NAMESPACE, service_name

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


def deployment_config(rollout: ApiRolloutName) -> codedeploy.ILambdaDeploymentConfig:
    return DEPLOYMENT_CONFIGS[rollout]


class ApiRollout(Construct):
    def __init__(
        self, scope: Construct, construct_id: str, *, config: AppConfig, alias: lambda_.Alias
    ) -> None:
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
                    namespace=METRICS_NAMESPACE,
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
