"""The stack composes the capability constructs; each construct builds one part of the system."""

from __future__ import annotations

from aws_cdk import CfnOutput, CfnResource, RemovalPolicy, Stack
from constructs import Construct

from infra.audit_trail import AuditTrail
from infra.batch_scoring import INCOMING_PREFIX, BatchScoring
from infra.buckets import access_log_bucket
from infra.config import AppConfig
from infra.data import DATASET_PREFIX, EXPORT_PREFIX, Data
from infra.execution_roles import role_of
from infra.firewall import ApiFirewall
from infra.log_groups import logs_key
from infra.nag import BASIC_EXECUTION_POLICY, suppress
from infra.network import Network
from infra.observability import Observability
from infra.serving import Serving
from infra.snapshot_sweeper import SnapshotSweeper
from infra.training_pipeline import CANDIDATES_PREFIX, REGISTRY_PREFIX, TrainingPipeline

_REMOVAL_POLICIES = {
    "retain": RemovalPolicy.RETAIN,
    "snapshot": RemovalPolicy.SNAPSHOT,
    "destroy": RemovalPolicy.DESTROY,
}


class LoanScoringStack(Stack):
    def __init__(self, scope: Construct, construct_id: str, *, config: AppConfig, **kwargs: object) -> None:
        super().__init__(scope, construct_id, **kwargs)  # type: ignore[arg-type]
        data_removal = _REMOVAL_POLICIES[config.data_removal_policy]
        # Buckets cannot be snapshotted: "snapshot" keeps them (RETAIN) and snapshots only the database.
        bucket_removal = (
            RemovalPolicy.DESTROY if config.data_removal_policy == "destroy" else RemovalPolicy.RETAIN
        )

        # One key for every log group the stack creates (decisions, request metadata, flow logs, ...).
        self.logs_key = logs_key(self, "LogsKey")
        self.network = Network(
            self, "Network", use_nat_gateway=config.use_nat_gateway, logs_key=self.logs_key
        )
        access_logs = access_log_bucket(self, "AccessLogs", bucket_removal)
        self.data = Data(
            self,
            "Data",
            config=config,
            network=self.network,
            access_logs=access_logs,
            removal_policy=data_removal,
        )
        self.training = TrainingPipeline(
            self,
            "Training",
            config=config,
            network=self.network,
            data=self.data,
            access_logs=access_logs,
            removal_policy=bucket_removal,
            logs_key=self.logs_key,
        )
        # Deletes the run snapshots that aborted or timed-out executions leave (no cleanup state ran).
        self.snapshot_sweeper = SnapshotSweeper(
            self, "SnapshotSweeper", config=config, database=self.data.database, logs_key=self.logs_key
        )
        # After the training pipeline: with modelBundleVersion, the API and the batch function both load
        # that registered bundle from its artifact bucket (the same model decides in both).
        self.serving = Serving(
            self,
            "Serving",
            config=config,
            model_registry=self.training.artifact_bucket,
            logs_key=self.logs_key,
        )
        # A web ACL in front of the API stage unless apiFirewall is off (then cdk-nag's APIG3 says so).
        self.firewall = (
            ApiFirewall(
                self,
                "Firewall",
                config=config,
                stage=self.serving.api.deployment_stage,
                logs_key=self.logs_key,
            )
            if config.api_firewall
            else None
        )
        self.batch = BatchScoring(
            self,
            "Batch",
            config=config,
            access_logs=access_logs,
            removal_policy=bucket_removal,
            model_registry=self.training.artifact_bucket,
            logs_key=self.logs_key,
        )
        # The alias's update is the API's CodeDeploy rollout (pre-traffic check, canary, alarms): the batch
        # function and its grant (the configured version only) move to a new model after it succeeds, and
        # stay as they are when it fails, so files are never scored by a version the API rolled back.
        self.batch.function.node.add_dependency(self.serving.alias)
        batch_policy = role_of(self.batch.function).node.find_child("DefaultPolicy")
        batch_policy.node.add_dependency(self.serving.alias)
        self.audit = AuditTrail(
            self,
            "Audit",
            config=config,
            access_logs=access_logs,
            log_groups={"Api": self.serving.function.log_group, "Batch": self.batch.function.log_group},
            logs_key=self.logs_key,
        )
        self.observability = Observability(
            self,
            "Observability",
            config=config,
            api=self.serving.api,
            api_access_logs=self.serving.access_logs,
            api_function=self.serving.function,
            batch=self.batch,
            state_machine=self.training.state_machine,
            schedule_alarm=self.training.schedule_alarm,
            snapshot_sweeper_alarm=self.snapshot_sweeper.alarm,
            rollout_alarms=self.serving.rollout.alarms,
            audit_delivery_alarm=self.audit.delivery_alarm,
            audit_forwarding_alarm=self.audit.forwarding_alarm,
        )
        self._outputs()
        self._acknowledge_cdk_singletons()
        self._acknowledge_inline_policies()

    def _acknowledge_cdk_singletons(self) -> None:
        """CDK's S3 bucket-notifications helper function lives at the stack root with AWS's managed
        AWSLambdaBasicExecutionRole, which CDK attaches to any role it is given (the log-retention
        helper takes a scoped role instead: infra/data.py)."""
        for child in self.node.children:
            if child.node.id.startswith("BucketNotificationsHandler"):
                suppress(
                    child,
                    "AwsSolutions-IAM4",
                    "CDK's bucket-notifications helper keeps AWS's AWSLambdaBasicExecutionRole, which "
                    "allows writing any log group of the account, not only its own: CDK attaches the policy "
                    "to any role the helper is given and has no log group setting for it, so narrowing it "
                    "would mean overriding CDK's own resources. The helper runs CDK's code, only when "
                    "CloudFormation sends it the scoring bucket's notification settings during a deploy.",
                    findings=[BASIC_EXECUTION_POLICY],
                )

    def _acknowledge_inline_policies(self) -> None:
        """NIST.800.53.R5-IAMNoInlinePolicy on each AWS::IAM::Policy of the stack, once all are built.

        Every one is a CDK grant (``grant_*``, ``add_to_policy``) or a CDK helper's policy, attached to
        the one role it was written for. Only these resources are acknowledged: an inline ``policies``
        list written on a role, user or group would still fail synthesis.
        """
        for construct in self.node.find_all():
            if isinstance(construct, CfnResource) and construct.cfn_resource_type == "AWS::IAM::Policy":
                suppress(
                    construct,
                    "NIST.800.53.R5-IAMNoInlinePolicy",
                    "AC-6 asks for least privilege, and the rule prefers reusable managed policies for "
                    "review. Each inline policy here is CDK's per-role grant policy, scoped to that role's "
                    "own resources and reviewed statement by statement (AwsSolutions-IAM5 acknowledges "
                    "every wildcard); a shared managed policy would widen it to every role attached. A "
                    "deployer whose policy forbids inline policies converts them to customer-managed "
                    "policies (iam.ManagedPolicy) attached to the same single role.",
                )

    def _outputs(self) -> None:
        outputs = {
            "ApiUrl": (self.serving.api.url, "Base URL of the scoring API (SigV4-signed calls to /v1/...)"),
            "ScoringBucketName": (
                self.batch.bucket.bucket_name,
                f"Drop files under {INCOMING_PREFIX} for batch scoring",
            ),
            "ExportBucketName": (
                self.data.export_bucket.bucket_name,
                f"RDS snapshot exports (under {EXPORT_PREFIX}); "
                f"put loader input files under {DATASET_PREFIX}<dataset>/",
            ),
            "ArtifactBucketName": (
                self.training.artifact_bucket.bucket_name,
                f"Model candidates ({CANDIDATES_PREFIX}) and the {REGISTRY_PREFIX} registry "
                f"(the champion: {REGISTRY_PREFIX}<model>/latest.json)",
            ),
            "TrainingStateMachineArn": (
                self.training.state_machine.state_machine_arn,
                "Start a retraining run",
            ),
            "DatabaseEndpoint": (self.data.database.db_instance_endpoint_address, "RDS endpoint (VPC only)"),
            "DatabaseSecretArn": (self.data.secret.secret_arn, "Generated RDS credentials (rotated)"),
            "ClusterName": (
                self.training.cluster.cluster_name,
                "ECS cluster for the loader and training tasks",
            ),
            "LoaderTaskDefinitionArn": (
                self.training.loader_task.task_definition_arn,
                "Run to load a dataset",
            ),
            "TaskSubnetIds": (
                ",".join(subnet.subnet_id for subnet in self.network.task_subnets.subnets or []),
                "Subnets for ecs run-task",
            ),
            "LoaderSecurityGroupId": (
                self.data.loader_security_group.security_group_id,
                "Security group for the loader",
            ),
            "DeadLetterQueueUrl": (
                self.batch.dead_letter_queue.queue_url,
                "Batch messages that failed 3 times",
            ),
            "AuditBucketName": (
                self.audit.bucket.bucket_name,
                "Audit records of every decision and batch file (Object Lock, gzipped JSON lines)",
            ),
            "DashboardName": (self.observability.dashboard.dashboard_name, "CloudWatch dashboard"),
            "RolloutCheckLogGroupName": (
                self.serving.rollout_check.log_group.log_group_name,
                "Why an API rollout's pre-traffic check passed or failed (CodeDeploy BeforeAllowTraffic)",
            ),
        }
        # authMode=cognito: what a client needs to sign in and get the ID token the API accepts.
        if self.serving.user_pool and self.serving.user_pool_client:
            outputs["UserPoolId"] = (self.serving.user_pool.user_pool_id, "Cognito user pool of API users")
            outputs["UserPoolClientId"] = (
                self.serving.user_pool_client.user_pool_client_id,
                "App client to sign in with (SRP or USER_PASSWORD_AUTH, no secret); send the ID token",
            )
        for name, (value, description) in outputs.items():
            CfnOutput(self, name, value=value, description=description)
