"""Training: snapshot -> export -> train -> gate -> register, as a Step Functions state machine.

Why Fargate and not SageMaker for the training container: the job is a CPU-only scikit-learn fit on a
few hundred thousand rows (minutes, a few GB of memory), and the same container image also runs the
dataset loader, which must sit inside the VPC next to RDS. A Fargate task gives both with one image,
no extra SageMaker execution role, model registry or per-job instance minimum, and Step Functions can
run it synchronously (``ecs:runTask.sync``). SageMaker would pay off for GPUs, distributed training or
managed spot; none apply here.

Each container step runs with its own task role, so only the register step can write to the model
registry (``models/``), and only as create-only writes plus the ``latest.json`` pointer: train and gate
read it. The gate writes its verdict (JSON) under the run's own prefix and exits 0 for either decision;
the state machine reads the verdict and branches on it, so a crashed gate fails the run instead of
looking like "champion kept".
"""

from __future__ import annotations

from typing import Any

from aws_cdk import ArnFormat, Duration, IgnoreMode, RemovalPolicy, Stack
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

from infra.alarms import alarm_on_any
from infra.buckets import grant_read_under, rotating_key, secure_bucket
from infra.config import AppConfig
from infra.data import EXPORT_PREFIX, Data
from infra.lambda_package import REPO_ROOT
from infra.log_groups import encrypted_log_group
from infra.nag import (
    ANY_RESOURCE,
    S3_OBJECT_READ_ACTIONS,
    bucket_objects,
    suppress,
    task_definition_revisions,
)
from infra.network import Network
from infra.queues import dead_letter_queue
from training.provenance import checkout_commit

CANDIDATES_PREFIX = "candidates/"
REGISTRY_PREFIX = "models/"
# The files of a registered version, models/<model_name>/<model_version>/<file> (training/registry.py
# MODEL_FILE and CARD_FILE, which tests/infra check against these).
REGISTERED_VERSION_FILES = ("model.onnx", "model_card.json")
SNAPSHOT_PREFIX = "train-"
# Polling bounds: the snapshot is checked every 2 min for up to 1 h, the export every 5 min for up to 4 h.
# With the three container steps (2 h each) and waiting out a busy instance before the snapshot (~40 min)
# that stays inside the state machine's 12 h, so a snapshot or export that never finishes ends the run
# through the snapshot cleanup instead of an execution timeout.
SNAPSHOT_CHECK_INTERVAL = Duration.minutes(2)
SNAPSHOT_MAX_CHECKS = 30
EXPORT_CHECK_INTERVAL = Duration.minutes(5)
EXPORT_MAX_CHECKS = 48
STEP_TIMEOUT = Duration.hours(2)
STATE_MACHINE_TIMEOUT = Duration.hours(12)
# Step Functions names SDK errors <Service>.<Exception>; an error code the SDK does not model (RDS's
# "Throttling" among them) arrives as the service's base exception, hence Rds.RdsException / S3.S3Exception.
RDS_TRANSIENT_ERRORS = ["Rds.RdsException", "Rds.SdkClientException"]
S3_TRANSIENT_ERRORS = ["S3.S3Exception", "S3.SdkClientException"]
# The RunTask call itself refused (throttled), or answered with a non-empty Failures list (no task started,
# e.g. no Fargate capacity), which the .sync integration reports as AmazonECS.Unknown (Step Functions
# developer guide, "Run Amazon ECS or Fargate tasks with Step Functions"). Neither started a task.
ECS_TRANSIENT_ERRORS = ["ECS.AmazonECSException", "AmazonECS.Unknown"]
# A retried RDS call whose first attempt was carried out but whose answer was lost (a timeout, a dropped
# connection: Rds.SdkClientException above) meets the result of that attempt: the snapshot or export of
# this run's unique name already exists, or the snapshot it deleted is gone. That is the call's success,
# so each is caught and the run goes on exactly where the answered call would have gone. The RDS API
# reference names the errors DBSnapshotAlreadyExists, ExportTaskAlreadyExists and DBSnapshotNotFound;
# Step Functions appends "Exception" and writes the SDK's class name (Db...), which was not verified on
# AWS, so both spellings are listed.
SNAPSHOT_ALREADY_EXISTS = ["Rds.DbSnapshotAlreadyExistsException", "Rds.DBSnapshotAlreadyExistsException"]
EXPORT_ALREADY_EXISTS = ["Rds.ExportTaskAlreadyExistsException"]
SNAPSHOT_NOT_FOUND = ["Rds.DbSnapshotNotFoundException", "Rds.DBSnapshotNotFoundException"]
# Written by `python -m training gate --verdict` in candidates/<execution name>/, read by the state machine.
VERDICT_FILE = "gate_verdict.json"
LATEST_POINTER = "latest.json"  # training/registry.py: the one registry object that is replaced in place
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
        logs_key: kms.IKey,
    ) -> None:
        """``logs_key`` encrypts the container steps' (and the loader's) logs and the state machine's."""
        super().__init__(scope, construct_id)
        self.logs_key = logs_key
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
        self._keep_registered_versions_immutable()
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
                # Cards record the code that trained them; the image has no .git to ask.
                build_args={"SOURCE_COMMIT": checkout_commit(REPO_ROOT)},
            )
        )
        self.log_group = encrypted_log_group(
            self, "TaskLogs", key=logs_key, retention=logs.RetentionDays.THREE_MONTHS
        )
        self.task_security_group = ec2.SecurityGroup(
            self, "TaskSecurityGroup", vpc=network.vpc, description="Training tasks", allow_all_outbound=True
        )
        # One execution role (image pull, log writes) shared by the three steps; each has its own task role.
        self.task_execution_role = iam.Role(
            self, "TaskExecutionRole", assumed_by=iam.ServicePrincipal("ecs-tasks.amazonaws.com")
        )
        suppress(
            self.task_execution_role,
            "AwsSolutions-IAM5",
            "ecr:GetAuthorizationToken has no resource-level permissions; pulls and log writes are scoped.",
            findings=[ANY_RESOURCE],
        )
        self.train_task = self._build_train_task(data)
        self.gate_task = self._build_gate_task()
        self.register_task = self._build_register_task()
        self.loader_task = data.build_loader_task(self.cluster, self.image, self.log_group)
        self.state_machine = self._build_state_machine(network, data)
        self.schedule_alarm: cloudwatch.Alarm | None = None
        if config.training_schedule:
            self.schedule_alarm = self._build_schedule(config.training_schedule)

    def _build_schedule(self, expression: str) -> cloudwatch.Alarm:
        """The retraining schedule. A start that EventBridge cannot deliver (state machine throttled or
        deleted, a role gone) lands in a dead-letter queue after its retries instead of vanishing,
        and raises an alarm: otherwise a skipped month of retraining would go unnoticed."""
        dead_letters = dead_letter_queue(
            self,
            "ScheduleDeadLetterQueue",
            holds="the schedule events EventBridge could not deliver",
            then="starts the missed run by hand (docs/deploy.md: retraining)",
        )
        events.Rule(
            self,
            "Schedule",
            schedule=events.Schedule.expression(expression),
            targets=[
                targets.SfnStateMachine(
                    self.state_machine,
                    dead_letter_queue=dead_letters,
                    retry_attempts=8,
                    max_event_age=Duration.hours(6),
                )
            ],
        )
        return alarm_on_any(
            self,
            "ScheduleDeadLetterAlarm",
            dead_letters.metric_approximate_number_of_messages_visible(period=Duration.minutes(5)),
            "A scheduled retraining run could not be started; its event is in the schedule's "
            "dead-letter queue",
        )

    def _step_task(
        self, construct_id: str, step: str, *, cpu: int, memory_mib: int
    ) -> ecs.FargateTaskDefinition:
        """A task definition running the training image for one step (the state overrides the command)."""
        task = ecs.FargateTaskDefinition(
            self,
            construct_id,
            cpu=cpu,
            memory_limit_mib=memory_mib,
            execution_role=self.task_execution_role,
        )
        task.add_container(
            "training",
            image=self.image,
            command=["python", "-m", "training", "--help"],
            logging=ecs.LogDrivers.aws_logs(stream_prefix=step, log_group=self.log_group),
        )
        return task

    def _keep_registered_versions_immutable(self) -> None:
        """A registered version's model and card can only be created, never replaced, by any principal:
        the bucket policy refuses a put without If-None-Match on them (an IAM grant, administrators'
        included, cannot lift an explicit deny). The serving functions read these keys at each cold start,
        so a replaced file would change what a deployed version serves. The champion pointer
        (latest.json) is not covered: registration moves it."""
        registered_files = [
            self.artifact_bucket.arn_for_objects(f"{REGISTRY_PREFIX}*/{name}")
            for name in REGISTERED_VERSION_FILES
        ]
        self.artifact_bucket.add_to_resource_policy(
            iam.PolicyStatement(
                sid="RegisteredVersionsAreNeverReplaced",
                effect=iam.Effect.DENY,
                principals=[iam.AnyPrincipal()],
                actions=["s3:PutObject"],
                resources=registered_files,
                conditions={"Null": {"s3:if-none-match": "true"}},
            )
        )
        # Nor deleted: to S3 a deleted key is absent, so the create-only put above would then succeed
        # and put other files under a deployed version (and a plain delete fails every cold start of it).
        # Lifecycle rules are not subject to bucket policies; teardown must remove this statement first.
        self.artifact_bucket.add_to_resource_policy(
            iam.PolicyStatement(
                sid="RegisteredVersionsAreNeverDeleted",
                effect=iam.Effect.DENY,
                principals=[iam.AnyPrincipal()],
                actions=["s3:DeleteObject", "s3:DeleteObjectVersion"],
                resources=registered_files,
            )
        )

    def _allow_put(self, role: iam.IRole, key_pattern: str, conditions: dict[str, Any] | None = None) -> None:
        """s3:PutObject only (no delete, retention or tagging) on artifact objects, and the key to encrypt."""
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["s3:PutObject"],
                resources=[self.artifact_bucket.arn_for_objects(key_pattern)],
                conditions=conditions,
            )
        )
        # SSE-KMS uploads need a data key; the read grants already give kms:Decrypt.
        self.artifact_key.grant(role, "kms:GenerateDataKey")

    def _build_train_task(self, data: Data) -> ecs.FargateTaskDefinition:
        task = self._step_task("TrainingTask", "train", cpu=2048, memory_mib=8192)
        # The snapshot exports only: not the loader's datasets/ files, nor other key names in the bucket.
        grant_read_under(data.export_bucket, task.task_role, EXPORT_PREFIX + "*", probes_missing_keys=False)
        # The champion to compare against (a first run has no latest.json: S3 must answer 404)
        grant_read_under(
            self.artifact_bucket, task.task_role, REGISTRY_PREFIX + "*", probes_missing_keys=True
        )
        self._allow_put(task.task_role, CANDIDATES_PREFIX + "*")
        suppress(
            task.task_role,
            "AwsSolutions-IAM5",
            "Train reads the exports/ prefix of the export bucket and the models/ registry, and may only "
            "put objects under candidates/ (one folder per run, named at run time).",
            findings=[
                *S3_OBJECT_READ_ACTIONS,
                bucket_objects(data.export_bucket, EXPORT_PREFIX + "*"),
                bucket_objects(self.artifact_bucket, REGISTRY_PREFIX + "*"),
                bucket_objects(self.artifact_bucket, CANDIDATES_PREFIX + "*"),
            ],
        )
        return task

    def _grant_candidates_and_registry_read(self, role: iam.IRole) -> None:
        """The gate and register steps read the run's candidate and the registry (whose latest.json a
        first run does not have: S3 must answer 404, hence listing, see grant_read_under)."""
        grant_read_under(
            self.artifact_bucket,
            role,
            CANDIDATES_PREFIX + "*",
            REGISTRY_PREFIX + "*",
            probes_missing_keys=True,
        )

    def _build_gate_task(self) -> ecs.FargateTaskDefinition:
        # The gate only reads two cards and a small ONNX file.
        task = self._step_task("GateTask", "gate", cpu=1024, memory_mib=2048)
        self._grant_candidates_and_registry_read(task.task_role)
        self._allow_put(task.task_role, f"{CANDIDATES_PREFIX}*/{VERDICT_FILE}")
        suppress(
            task.task_role,
            "AwsSolutions-IAM5",
            "Gate reads candidates/ and the models/ registry, and may only put the verdict file of a run "
            f"(candidates/<run>/{VERDICT_FILE}; the run is named at run time).",
            findings=[
                *S3_OBJECT_READ_ACTIONS,
                *(
                    bucket_objects(self.artifact_bucket, p + "*")
                    for p in (CANDIDATES_PREFIX, REGISTRY_PREFIX)
                ),
                bucket_objects(self.artifact_bucket, f"{CANDIDATES_PREFIX}*/{VERDICT_FILE}"),
            ],
        )
        return task

    def _build_register_task(self) -> ecs.FargateTaskDefinition:
        task = self._step_task("RegisterTask", "register", cpu=1024, memory_mib=2048)
        self._grant_candidates_and_registry_read(task.task_role)
        # Registered versions are immutable: new objects only, as S3 conditional writes (If-None-Match: *,
        # which training/registry.py sends), so an existing model.onnx or card can never be replaced...
        self._allow_put(
            task.task_role, REGISTRY_PREFIX + "*", conditions={"Null": {"s3:if-none-match": "false"}}
        )
        # ...except the champion pointer, which registration moves to the new version.
        self._allow_put(task.task_role, f"{REGISTRY_PREFIX}*/{LATEST_POINTER}")
        suppress(
            task.task_role,
            "AwsSolutions-IAM5",
            "Register reads candidates/ and models/; under models/ it may only create objects that do not "
            f"exist yet (conditional put) and replace the {LATEST_POINTER} pointer. Model names and versions "
            "are known only at run time. No delete, retention or tagging actions.",
            findings=[
                *S3_OBJECT_READ_ACTIONS,
                *(
                    bucket_objects(self.artifact_bucket, p + "*")
                    for p in (CANDIDATES_PREFIX, REGISTRY_PREFIX)
                ),
                bucket_objects(self.artifact_bucket, f"{REGISTRY_PREFIX}*/{LATEST_POINTER}"),
            ],
        )
        return task

    def _run_step(
        self, state_id: str, task_definition: ecs.FargateTaskDefinition, command_path: str
    ) -> tasks.EcsRunTask:
        step = tasks.EcsRunTask(
            self,
            state_id,
            cluster=self.cluster,
            task_definition=task_definition,
            launch_target=tasks.EcsFargateLaunchTarget(platform_version=ecs.FargatePlatformVersion.LATEST),
            integration_pattern=sfn.IntegrationPattern.RUN_JOB,
            subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_ISOLATED),
            security_groups=[self.task_security_group],
            container_overrides=[
                tasks.ContainerOverride(
                    container_definition=task_definition.default_container,  # type: ignore[arg-type]
                    command=sfn.JsonPath.list_at(command_path),
                )
            ],
            result_path=sfn.JsonPath.DISCARD,
            task_timeout=sfn.Timeout.duration(STEP_TIMEOUT),
        )
        # Only the RunTask call is retried; a task that ran and failed (exit code, OOM) is not.
        _retry(step, ECS_TRANSIENT_ERRORS)
        return step

    def _delete_snapshot(self, state_id: str, snapshot_arn: str) -> tasks.CallAwsService:
        """Delete the run's manual snapshot: RDS keeps manual snapshots until someone deletes them."""
        delete = tasks.CallAwsService(
            self,
            state_id,
            service="rds",
            action="deleteDBSnapshot",
            parameters={"DbSnapshotIdentifier": sfn.JsonPath.string_at("$.run.snapshotId")},
            iam_resources=[snapshot_arn],
            result_path=sfn.JsonPath.DISCARD,
        )
        _retry(delete, RDS_TRANSIENT_ERRORS)
        return delete

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
                "checks": {"snapshot": 0, "export": 0},
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
            additional_iam_statements=[
                # CopyTagsToSnapshot: RDS checks that the caller may tag the snapshot it creates.
                iam.PolicyStatement(actions=["rds:AddTagsToResource"], resources=[snapshot_arn])
            ],
            # The snapshot's ARN is read from the describe call: after a lost answer there is no other.
            result_path=sfn.JsonPath.DISCARD,
        )
        _retry(create_snapshot, RDS_TRANSIENT_ERRORS)
        # RDS refuses a snapshot while the instance is backing up or being modified: wait that out
        # (5 + 7.5 + 11 + 17 min, ~40 min, which the 12 h timeout budget above leaves room for).
        create_snapshot.add_retry(
            errors=["Rds.InvalidDbInstanceStateException"],
            interval=Duration.minutes(5),
            max_attempts=4,
            backoff_rate=1.5,
        )
        wait_snapshot = sfn.Wait(
            self, "Wait for the snapshot", time=sfn.WaitTime.duration(SNAPSHOT_CHECK_INTERVAL)
        )
        describe_snapshot = tasks.CallAwsService(
            self,
            "Check the snapshot",
            service="rds",
            action="describeDBSnapshots",
            parameters={"DbSnapshotIdentifier": sfn.JsonPath.string_at("$.run.snapshotId")},
            iam_resources=[snapshot_arn],
            iam_action="rds:DescribeDBSnapshots",
            result_selector={
                "status": sfn.JsonPath.string_at("$.DbSnapshots[0].Status"),
                "arn": sfn.JsonPath.string_at("$.DbSnapshots[0].DbSnapshotArn"),
            },
            result_path="$.snapshotStatus",
        )
        _retry(describe_snapshot, RDS_TRANSIENT_ERRORS)
        start_export = tasks.CallAwsService(
            self,
            "Export the snapshot to S3",
            service="rds",
            action="startExportTask",
            parameters={
                "ExportTaskIdentifier": sfn.JsonPath.string_at("$.run.snapshotId"),
                "SourceArn": sfn.JsonPath.string_at("$.snapshotStatus.arn"),
                "S3BucketName": data.export_bucket.bucket_name,
                "S3Prefix": EXPORT_PREFIX.rstrip("/"),
                "IamRoleArn": data.export_role.role_arn,
                "KmsKeyId": data.key.key_arn,
            },
            iam_resources=[snapshot_arn],
            additional_iam_statements=[
                iam.PolicyStatement(actions=["iam:PassRole"], resources=[data.export_role.role_arn]),
                iam.PolicyStatement(
                    actions=["kms:DescribeKey", "kms:RetireGrant"], resources=[data.key.key_arn]
                ),
                # Only grants RDS creates for the export: the key also encrypts the database and its secret.
                iam.PolicyStatement(
                    actions=["kms:CreateGrant"],
                    resources=[data.key.key_arn],
                    conditions={"Bool": {"kms:GrantIsForAWSResource": "true"}},
                ),
            ],
            result_path=sfn.JsonPath.DISCARD,
        )
        _retry(start_export, RDS_TRANSIENT_ERRORS)
        wait_export = sfn.Wait(self, "Wait for the export", time=sfn.WaitTime.duration(EXPORT_CHECK_INTERVAL))
        # Before the States.ALL catcher added below: catchers are tried in order.
        start_export.add_catch(wait_export, errors=EXPORT_ALREADY_EXISTS, result_path=sfn.JsonPath.DISCARD)
        describe_export = tasks.CallAwsService(
            self,
            "Check the export",
            service="rds",
            action="describeExportTasks",
            parameters={"ExportTaskIdentifier": sfn.JsonPath.string_at("$.run.snapshotId")},
            # DescribeExportTasks has no resource-level permissions (IAM requires "*").
            iam_resources=["*"],
            iam_action="rds:DescribeExportTasks",
            # The whole task too: on FAILED or CANCELED its FailureCause goes into the run's failure.
            result_selector={
                "status": sfn.JsonPath.string_at("$.ExportTasks[0].Status"),
                "task": sfn.JsonPath.object_at("$.ExportTasks[0]"),
            },
            result_path="$.exportStatus",
        )
        _retry(describe_export, RDS_TRANSIENT_ERRORS)
        # RDS writes an export to s3://<bucket>/<S3Prefix>/<ExportTaskIdentifier>/: the prefix is the export
        # location and the identifier names the export in it.
        export_source = sfn.JsonPath.format(
            "export:s3://{}/" + EXPORT_PREFIX.rstrip("/") + "#{}",
            data.export_bucket.bucket_name,
            sfn.JsonPath.string_at("$.run.snapshotId"),
        )
        candidate_uri = sfn.JsonPath.format(
            "s3://{}/" + CANDIDATES_PREFIX + "{}/",
            self.artifact_bucket.bucket_name,
            sfn.JsonPath.string_at("$.run.executionId"),
        )
        verdict_key = sfn.JsonPath.format(
            CANDIDATES_PREFIX + "{}/" + VERDICT_FILE, sfn.JsonPath.string_at("$.run.executionId")
        )
        verdict_uri = sfn.JsonPath.format(
            "s3://{}/" + CANDIDATES_PREFIX + "{}/" + VERDICT_FILE,
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
                    export_source,
                    "--out",
                    candidate_uri,
                    "--champion-registry",
                    registry_uri,
                ),
                "gate": _command(
                    "gate", "--candidate", candidate_uri, "--registry", registry_uri, "--verdict", verdict_uri
                ),
                "register": _command("register", "--candidate", candidate_uri, "--registry", registry_uri),
            },
            result_path="$.commands",
        )
        # No Catch on the container steps: any task failure (crash, OOM kill, access denied, non-zero exit)
        # fails the execution, which raises the TrainingFailures alarm.
        train = self._run_step("Train the candidate", self.train_task, "$.commands.train")
        gate = self._run_step("Gate against the champion", self.gate_task, "$.commands.gate")
        register = self._run_step("Register the bundle", self.register_task, "$.commands.register")
        read_verdict = tasks.CallAwsService(
            self,
            "Read the gate verdict",
            service="s3",
            action="getObject",
            parameters={"Bucket": self.artifact_bucket.bucket_name, "Key": verdict_key},
            iam_resources=[self.artifact_bucket.arn_for_objects(f"{CANDIDATES_PREFIX}*/{VERDICT_FILE}")],
            iam_action="s3:GetObject",
            additional_iam_statements=[
                iam.PolicyStatement(actions=["kms:Decrypt"], resources=[self.artifact_key.key_arn])
            ],
            result_selector={"verdict": sfn.JsonPath.string_to_json(sfn.JsonPath.string_at("$.Body"))},
            result_path="$.gate",
        )
        # Transient S3 errors only: a missing verdict (S3.NoSuchKeyException) fails the run at once.
        _retry(read_verdict, S3_TRANSIENT_ERRORS)
        delete_snapshot = self._delete_snapshot("Delete the snapshot", snapshot_arn)
        kept = sfn.Succeed(self, "Champion kept", comment="The gate decided the challenger is not better")
        registered = sfn.Succeed(self, "Candidate registered")
        verdict_invalid = sfn.Fail(
            self,
            "Gate verdict invalid",
            error="GateVerdictInvalid",
            cause=f"{VERDICT_FILE} has no boolean 'passed'",
        )
        # "passed" is the JSON boolean the gate writes (training/cli.py, _write_verdict).
        passed = "$.gate.verdict.passed"
        decide = (
            sfn.Choice(self, "Did the candidate win?")
            .when(sfn.Condition.boolean_equals(passed, True), register.next(registered))
            .when(sfn.Condition.boolean_equals(passed, False), kept)
            .otherwise(verdict_invalid)
        )

        # Once the snapshot exists, every way the snapshot or export can go wrong (an RDS call failing
        # after its retries, a failed snapshot, a FAILED or CANCELED export, polls exhausted: the export
        # cancelled first) records $.failure, deletes the manual snapshot (RDS keeps manual snapshots
        # forever) and fails the run with that error and cause, which raises the TrainingFailures alarm.
        # An aborted or timed-out execution runs none of this: infra/snapshot_sweeper.py catches those.
        snapshot_export_failed = sfn.Fail(
            self, "Snapshot or export failed", error_path="$.failure.Error", cause_path="$.failure.Cause"
        )
        cleanup = self._delete_snapshot("Delete the snapshot after the failure", snapshot_arn)
        # A cleanup that fails too (say, the snapshot was never created) must not hide the first error.
        cleanup.add_catch(snapshot_export_failed, errors=["States.ALL"], result_path="$.cleanupFailure")
        cleanup.next(snapshot_export_failed)
        for state in (describe_snapshot, start_export, describe_export):
            state.add_catch(cleanup, errors=["States.ALL"], result_path="$.failure")

        def failure(
            state_id: str, error: str, cause: str, *paths: str, then: sfn.IChainable = cleanup
        ) -> sfn.Pass:
            """A Pass state that records why the run fails in $.failure, then cleans up (``then``)."""
            recorded = sfn.Pass(
                self,
                state_id,
                parameters={"Error": error, "Cause": sfn.JsonPath.format(cause, *paths)},
                result_path="$.failure",
            )
            recorded.next(then)
            return recorded

        # An export still running when the polls run out keeps writing to the export bucket, and RDS
        # will not delete a snapshot while it is being exported: cancel it first. CancelExportTask has
        # no resource-level permissions (IAM requires "*"). A cancel that fails (the export finished
        # meanwhile, RDS refuses) still goes on to the cleanup, recorded beside $.failure, not over it.
        cancel_export = tasks.CallAwsService(
            self,
            "Cancel the export",
            service="rds",
            action="cancelExportTask",
            parameters={"ExportTaskIdentifier": sfn.JsonPath.string_at("$.run.snapshotId")},
            iam_resources=["*"],
            iam_action="rds:CancelExportTask",
            result_path=sfn.JsonPath.DISCARD,
        )
        _retry(cancel_export, RDS_TRANSIENT_ERRORS)
        cancel_export.add_catch(cleanup, errors=["States.ALL"], result_path="$.cancelFailure")
        cancel_export.next(cleanup)

        snapshot_id = sfn.JsonPath.string_at("$.run.snapshotId")
        snapshot_status = sfn.JsonPath.string_at("$.snapshotStatus.status")
        count_snapshot_check = sfn.Pass(
            self,
            "Count the snapshot check",
            parameters={
                "snapshot": sfn.JsonPath.math_add(sfn.JsonPath.number_at("$.run.checks.snapshot"), 1),
                "export": sfn.JsonPath.number_at("$.run.checks.export"),
            },
            result_path="$.run.checks",
        )
        count_export_check = sfn.Pass(
            self,
            "Count the export check",
            parameters={
                "snapshot": sfn.JsonPath.number_at("$.run.checks.snapshot"),
                "export": sfn.JsonPath.math_add(sfn.JsonPath.number_at("$.run.checks.export"), 1),
            },
            result_path="$.run.checks",
        )
        snapshot_ready = (
            sfn.Choice(self, "Snapshot ready?")
            .when(sfn.Condition.string_equals("$.snapshotStatus.status", "available"), start_export)
            .when(
                sfn.Condition.string_equals("$.snapshotStatus.status", "failed"),
                failure("Snapshot failed", "SnapshotFailed", "RDS snapshot {} failed", snapshot_id),
            )
            .when(
                sfn.Condition.number_greater_than_equals("$.run.checks.snapshot", SNAPSHOT_MAX_CHECKS),
                failure(
                    "Snapshot took too long",
                    "SnapshotTimeout",
                    f"RDS snapshot {{}} still {{}} after {SNAPSHOT_MAX_CHECKS} checks",
                    snapshot_id,
                    snapshot_status,
                ),
            )
            .otherwise(wait_snapshot)
        )
        export_finished = (
            sfn.Choice(self, "Export finished?")
            .when(
                sfn.Condition.string_equals("$.exportStatus.status", "COMPLETE"),
                delete_snapshot.next(commands).next(train).next(gate).next(read_verdict).next(decide),
            )
            .when(
                sfn.Condition.or_(
                    sfn.Condition.string_equals("$.exportStatus.status", "FAILED"),
                    sfn.Condition.string_equals("$.exportStatus.status", "CANCELED"),
                ),
                failure(
                    "Export failed",
                    "ExportFailed",
                    "RDS export task: {}",
                    sfn.JsonPath.json_to_string(sfn.JsonPath.object_at("$.exportStatus.task")),
                ),
            )
            .when(
                sfn.Condition.number_greater_than_equals("$.run.checks.export", EXPORT_MAX_CHECKS),
                failure(
                    "Export took too long",
                    "ExportTimeout",
                    f"RDS export {{}} still {{}} after {EXPORT_MAX_CHECKS} checks; the run cancels it and "
                    "deletes the snapshot of the same name (a snapshot RDS will not delete yet is left to "
                    "the daily snapshot sweeper)",
                    snapshot_id,
                    sfn.JsonPath.string_at("$.exportStatus.status"),
                    then=cancel_export,
                ),
            )
            .otherwise(wait_export)
        )
        create_snapshot.add_catch(
            wait_snapshot, errors=SNAPSHOT_ALREADY_EXISTS, result_path=sfn.JsonPath.DISCARD
        )
        delete_snapshot.add_catch(commands, errors=SNAPSHOT_NOT_FOUND, result_path=sfn.JsonPath.DISCARD)
        definition = (
            ids.next(create_snapshot)
            .next(wait_snapshot)
            .next(describe_snapshot)
            .next(count_snapshot_check)
            .next(snapshot_ready)
        )
        start_export.next(wait_export).next(describe_export).next(count_export_check).next(export_finished)
        # Execution data is logged (include_execution_data): run inputs, commands and the gate verdict.
        state_machine_logs = encrypted_log_group(
            self, "StateMachineLogs", key=self.logs_key, retention=logs.RetentionDays.THREE_MONTHS
        )
        state_machine = sfn.StateMachine(
            self,
            "StateMachine",
            definition_body=sfn.DefinitionBody.from_chainable(definition),
            timeout=STATE_MACHINE_TIMEOUT,
            tracing_enabled=True,
            logs=sfn.LogOptions(
                destination=state_machine_logs, level=sfn.LogLevel.ALL, include_execution_data=True
            ),
        )
        # CDK's ecs:runTask.sync integration allows ecs:StopTask and ecs:DescribeTasks on "*" (hard-coded in
        # EcsRunTask, no option to scope it). Step Functions needs both to watch the task it started and to
        # stop it when the state times out or the execution is aborted; this deny keeps them to this cluster.
        state_machine.add_to_role_policy(
            iam.PolicyStatement(
                effect=iam.Effect.DENY,
                actions=["ecs:StopTask", "ecs:DescribeTasks"],
                resources=["*"],
                conditions={"ArnNotEquals": {"ecs:cluster": self.cluster.cluster_arn}},
            )
        )
        suppress(
            state_machine,
            "AwsSolutions-IAM5",
            "Resource '*' is needed by: ecs:StopTask and ecs:DescribeTasks (granted by CDK's runTask.sync "
            "integration to follow and stop the task it started; an explicit deny limits both to this "
            "cluster's tasks), rds:DescribeExportTasks (no resource-level permissions), rds:CancelExportTask "
            "(IAM's service authorization reference lists no resource type for it), and the CloudWatch Logs "
            "delivery and X-Ray actions. Other wildcards: the train-* snapshot name pattern, the "
            f"revisions of the three step task definitions, and the per-run candidates/*/{VERDICT_FILE}.",
            findings=[
                ANY_RESOURCE,
                snapshot_finding,
                *(
                    task_definition_revisions(task)
                    for task in (self.train_task, self.gate_task, self.register_task)
                ),
                bucket_objects(self.artifact_bucket, f"{CANDIDATES_PREFIX}*/{VERDICT_FILE}"),
            ],
        )
        return state_machine


def _retry(state: sfn.TaskStateBase, errors: list[str]) -> None:
    """Retry throttling and other transient service errors with exponential backoff (5 s to ~80 s)."""
    state.add_retry(
        errors=errors,
        interval=Duration.seconds(5),
        max_attempts=5,
        backoff_rate=2,
        jitter_strategy=sfn.JitterType.FULL,
    )


def _command(*arguments: str) -> str:
    """A States.Array intrinsic for ``python -m training <arguments>`` (arguments may be JSONPath)."""
    return sfn.JsonPath.array("python", "-m", "training", *arguments)
