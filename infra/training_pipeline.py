"""Training: snapshot -> export -> train -> gate -> register, as a Step Functions state machine.

Why Fargate and not SageMaker for the training container: the job is a CPU-only scikit-learn fit on a
few hundred thousand rows (minutes, a few GB of memory), and the same container image also runs the
dataset loader, which must sit inside the VPC next to RDS. A Fargate task gives both with one image,
no extra SageMaker execution role, model registry or per-job instance minimum, and Step Functions can
run it synchronously (``ecs:runTask.sync``). SageMaker would pay off for GPUs, distributed training or
managed spot; none apply here.
"""

from __future__ import annotations

from aws_cdk import ArnFormat, Duration, IgnoreMode, RemovalPolicy, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

from infra.buckets import rotating_key, secure_bucket
from infra.config import AppConfig
from infra.data import Data
from infra.lambda_package import REPO_ROOT
from infra.nag import (
    ANY_RESOURCE,
    KMS_WRITE_ACTIONS,
    S3_READ_ACTIONS,
    S3_WRITE_ACTIONS,
    bucket_objects,
    suppress,
    task_definition_revisions,
)
from infra.network import Network

CANDIDATES_PREFIX = "candidates/"
REGISTRY_PREFIX = "models/"
SNAPSHOT_PREFIX = "train-"
# Docker build context is the repo root (uv.lock + pyproject + training/ + lambdas/scoring/); only
# those are staged into the asset so synthesis never copies .venv, node_modules or data.
_IMAGE_CONTEXT_EXCLUDES = [
    "*",
    "!pyproject.toml",
    "!uv.lock",
    "!training",
    "!lambdas/__init__.py",
    "!lambdas/scoring",
    "**/__pycache__",
    "**/tests",
]


class TrainingPipeline(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: AppConfig,
        network: Network,
        data: Data,
        access_logs: s3.IBucket,
        removal_policy: RemovalPolicy,
    ) -> None:
        super().__init__(scope, construct_id)
        self.artifact_key = rotating_key(
            self, "ArtifactKey", description="Model artifacts", removal_policy=removal_policy
        )
        self.artifact_bucket = secure_bucket(
            self,
            "ArtifactBucket",
            key=self.artifact_key,
            access_logs=access_logs,
            removal_policy=removal_policy,
        )
        self.cluster = ecs.Cluster(
            self, "Cluster", vpc=network.vpc, container_insights_v2=ecs.ContainerInsights.ENABLED
        )
        self.image = ecs.ContainerImage.from_docker_image_asset(
            ecr_assets.DockerImageAsset(
                self,
                "TrainingImage",
                directory=str(REPO_ROOT),
                file="training/Dockerfile",
                exclude=_IMAGE_CONTEXT_EXCLUDES,
                ignore_mode=IgnoreMode.DOCKER,
                platform=ecr_assets.Platform.LINUX_AMD64,
            )
        )
        self.log_group = logs.LogGroup(
            self, "TaskLogs", retention=logs.RetentionDays.THREE_MONTHS, removal_policy=RemovalPolicy.DESTROY
        )
        self.task_security_group = ec2.SecurityGroup(
            self, "TaskSecurityGroup", vpc=network.vpc, description="Training tasks", allow_all_outbound=True
        )
        self.training_task = self._build_training_task(data)
        self.loader_task = data.build_loader_task(self.cluster, self.image, self.log_group)
        self.state_machine = self._build_state_machine(network, data)
        if config.training_schedule:
            events.Rule(
                self,
                "Schedule",
                schedule=events.Schedule.expression(config.training_schedule),
                targets=[targets.SfnStateMachine(self.state_machine)],
            )

    def _build_training_task(self, data: Data) -> ecs.FargateTaskDefinition:
        task = ecs.FargateTaskDefinition(self, "TrainingTask", cpu=2048, memory_limit_mib=8192)
        task.add_container(
            "training",
            image=self.image,
            command=["python", "-m", "training", "--help"],  # each state overrides the command
            logging=ecs.LogDrivers.aws_logs(stream_prefix="training", log_group=self.log_group),
        )
        data.export_bucket.grant_read(task.task_role)
        self.artifact_bucket.grant_read_write(task.task_role, CANDIDATES_PREFIX + "*")
        self.artifact_bucket.grant_read_write(task.task_role, REGISTRY_PREFIX + "*")
        suppress(
            task.task_role,
            "AwsSolutions-IAM5",
            "Object wildcards are limited to the export bucket (read) and the candidates/ and "
            "models/ prefixes of the artifact bucket, with grant_* action groups on their KMS keys.",
            findings=[
                *S3_READ_ACTIONS,
                *S3_WRITE_ACTIONS,
                *KMS_WRITE_ACTIONS,
                bucket_objects(data.export_bucket, "*"),
                *(
                    bucket_objects(self.artifact_bucket, p + "*")
                    for p in (CANDIDATES_PREFIX, REGISTRY_PREFIX)
                ),
            ],
        )
        suppress(
            task.obtain_execution_role(),
            "AwsSolutions-IAM5",
            "ecr:GetAuthorizationToken has no resource-level permissions; pulls and log writes are scoped.",
            findings=[ANY_RESOURCE],
        )
        return task

    def _run_training(self, state_id: str, command_path: str) -> tasks.EcsRunTask:
        return tasks.EcsRunTask(
            self,
            state_id,
            cluster=self.cluster,
            task_definition=self.training_task,
            launch_target=tasks.EcsFargateLaunchTarget(platform_version=ecs.FargatePlatformVersion.LATEST),
            integration_pattern=sfn.IntegrationPattern.RUN_JOB,
            subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_ISOLATED),
            security_groups=[self.task_security_group],
            container_overrides=[
                tasks.ContainerOverride(
                    container_definition=self.training_task.default_container,  # type: ignore[arg-type]
                    command=sfn.JsonPath.list_at(command_path),
                )
            ],
            result_path=sfn.JsonPath.DISCARD,
            task_timeout=sfn.Timeout.duration(Duration.hours(2)),
        )

    def _build_state_machine(self, network: Network, data: Data) -> sfn.StateMachine:
        stack = Stack.of(self)
        snapshot_arn = stack.format_arn(
            service="rds",
            resource="snapshot",
            resource_name=SNAPSHOT_PREFIX + "*",
            arn_format=ArnFormat.COLON_RESOURCE_NAME,  # arn:aws:rds:region:account:snapshot:name
        )
        snapshot_finding = (
            f"Resource::arn:<AWS::Partition>:rds:<AWS::Region>:<AWS::AccountId>:snapshot:{SNAPSHOT_PREFIX}*"
        )
        ids = sfn.Pass(
            self,
            "Name the run",
            parameters={
                "snapshotId": sfn.JsonPath.format(SNAPSHOT_PREFIX + "{}", sfn.JsonPath.uuid()),
                "executionId": sfn.JsonPath.execution_name,
            },
            result_path="$.run",
        )
        create_snapshot = tasks.CallAwsService(
            self,
            "Snapshot the database",
            service="rds",
            action="createDBSnapshot",
            parameters={
                "DbInstanceIdentifier": data.database.instance_identifier,
                "DbSnapshotIdentifier": sfn.JsonPath.string_at("$.run.snapshotId"),
            },
            iam_resources=[data.database.instance_arn, snapshot_arn],
            result_selector={"arn": sfn.JsonPath.string_at("$.DbSnapshot.DbSnapshotArn")},
            result_path="$.snapshot",
        )
        wait_snapshot = sfn.Wait(
            self, "Wait for the snapshot", time=sfn.WaitTime.duration(Duration.minutes(2))
        )
        describe_snapshot = tasks.CallAwsService(
            self,
            "Check the snapshot",
            service="rds",
            action="describeDBSnapshots",
            parameters={"DbSnapshotIdentifier": sfn.JsonPath.string_at("$.run.snapshotId")},
            iam_resources=[snapshot_arn],
            iam_action="rds:DescribeDBSnapshots",
            result_selector={"status": sfn.JsonPath.string_at("$.DbSnapshots[0].Status")},
            result_path="$.snapshotStatus",
        )
        start_export = tasks.CallAwsService(
            self,
            "Export the snapshot to S3",
            service="rds",
            action="startExportTask",
            parameters={
                "ExportTaskIdentifier": sfn.JsonPath.string_at("$.run.snapshotId"),
                "SourceArn": sfn.JsonPath.string_at("$.snapshot.arn"),
                "S3BucketName": data.export_bucket.bucket_name,
                "IamRoleArn": data.export_role.role_arn,
                "KmsKeyId": data.key.key_arn,
            },
            iam_resources=[snapshot_arn],
            additional_iam_statements=[
                iam.PolicyStatement(actions=["iam:PassRole"], resources=[data.export_role.role_arn]),
                iam.PolicyStatement(
                    actions=["kms:CreateGrant", "kms:DescribeKey", "kms:RetireGrant"],
                    resources=[data.key.key_arn],
                ),
            ],
            result_path=sfn.JsonPath.DISCARD,
        )
        wait_export = sfn.Wait(self, "Wait for the export", time=sfn.WaitTime.duration(Duration.minutes(5)))
        describe_export = tasks.CallAwsService(
            self,
            "Check the export",
            service="rds",
            action="describeExportTasks",
            parameters={"ExportTaskIdentifier": sfn.JsonPath.string_at("$.run.snapshotId")},
            # DescribeExportTasks has no resource-level permissions (IAM requires "*").
            iam_resources=["*"],
            iam_action="rds:DescribeExportTasks",
            result_selector={"status": sfn.JsonPath.string_at("$.ExportTasks[0].Status")},
            result_path="$.exportStatus",
        )
        export_uri = sfn.JsonPath.format(
            "s3://{}/{}", data.export_bucket.bucket_name, sfn.JsonPath.string_at("$.run.snapshotId")
        )
        candidate_uri = sfn.JsonPath.format(
            "s3://{}/" + CANDIDATES_PREFIX + "{}/",
            self.artifact_bucket.bucket_name,
            sfn.JsonPath.string_at("$.run.executionId"),
        )
        registry_uri = f"s3://{self.artifact_bucket.bucket_name}/{REGISTRY_PREFIX}"
        # ECS command overrides cannot mix JSONPath into a list, so one Pass state builds each command
        # as an array (States.Array) and the ECS tasks read it with list_at.
        commands = sfn.Pass(
            self,
            "Plan the training commands",
            parameters={
                "train": _command(
                    "train",
                    "--dataset",
                    "credit_risk",
                    "--source",
                    sfn.JsonPath.format("export:{}", export_uri),
                    "--out",
                    candidate_uri,
                    "--champion-registry",
                    registry_uri,
                ),
                "gate": _command("gate", "--candidate", candidate_uri, "--registry", registry_uri),
                "register": _command("register", "--candidate", candidate_uri, "--registry", registry_uri),
            },
            result_path="$.commands",
        )
        train = self._run_training("Train the candidate", "$.commands.train")
        gate = self._run_training("Gate against the champion", "$.commands.gate")
        register = self._run_training("Register the bundle", "$.commands.register")
        delete_snapshot = tasks.CallAwsService(
            self,
            "Delete the snapshot",
            service="rds",
            action="deleteDBSnapshot",
            parameters={"DbSnapshotIdentifier": sfn.JsonPath.string_at("$.run.snapshotId")},
            iam_resources=[snapshot_arn],
            result_path=sfn.JsonPath.DISCARD,
        )
        kept = sfn.Succeed(self, "Champion kept", comment="The gate exits non-zero when the candidate loses")
        registered = sfn.Succeed(self, "Candidate registered")
        export_failed = sfn.Fail(
            self, "Export failed", error="ExportFailed", cause="RDS snapshot export failed"
        )
        gate.add_catch(kept, errors=["States.TaskFailed"], result_path="$.gate")

        definition = (
            ids.next(create_snapshot)
            .next(wait_snapshot)
            .next(describe_snapshot)
            .next(
                sfn.Choice(self, "Snapshot ready?")
                .when(sfn.Condition.string_equals("$.snapshotStatus.status", "available"), start_export)
                .otherwise(wait_snapshot)
            )
        )
        start_export.next(wait_export).next(describe_export).next(
            sfn.Choice(self, "Export finished?")
            .when(
                sfn.Condition.string_equals("$.exportStatus.status", "COMPLETE"),
                delete_snapshot.next(commands).next(train).next(gate).next(register).next(registered),
            )
            .when(
                sfn.Condition.or_(
                    sfn.Condition.string_equals("$.exportStatus.status", "FAILED"),
                    sfn.Condition.string_equals("$.exportStatus.status", "CANCELED"),
                ),
                export_failed,
            )
            .otherwise(wait_export)
        )
        state_machine_logs = logs.LogGroup(
            self,
            "StateMachineLogs",
            retention=logs.RetentionDays.THREE_MONTHS,
            removal_policy=RemovalPolicy.DESTROY,
        )
        state_machine = sfn.StateMachine(
            self,
            "StateMachine",
            definition_body=sfn.DefinitionBody.from_chainable(definition),
            timeout=Duration.hours(12),
            tracing_enabled=True,
            logs=sfn.LogOptions(
                destination=state_machine_logs, level=sfn.LogLevel.ALL, include_execution_data=True
            ),
        )
        suppress(
            state_machine,
            "AwsSolutions-IAM5",
            "Wildcards are the train-* snapshot name pattern, rds:DescribeExportTasks (no resource-level "
            "permissions), and the CloudWatch Logs delivery and X-Ray actions that require '*'.",
            findings=[ANY_RESOURCE, snapshot_finding, task_definition_revisions(self.training_task)],
        )
        return state_machine


def _command(*arguments: str) -> str:
    """A States.Array intrinsic for ``python -m training <arguments>`` (arguments may be JSONPath)."""
    return sfn.JsonPath.array("python", "-m", "training", *arguments)
