"""Snapshot sweeper: a daily Lambda that deletes the retraining runs' manual snapshots no run cleaned up.

The state machine deletes its ``train-<uuid>`` snapshot on success and on every snapshot or export
failure, but an execution that is aborted or hits its timeout runs no further state, and RDS keeps a
manual snapshot (a copy of every applicant's data, billed per GB) until it is deleted. Once a day this
function (``lambdas/snapshot_sweeper``) deletes the database's ``train-*`` snapshots that are older than
the state machine's timeout plus a margin: no execution can still be using them. An export still
running from such a snapshot is cancelled first and the snapshot deleted on a later day, once RDS lets
go of it. A sweep that fails, or an invocation EventBridge cannot deliver, raises an alarm.
"""

from __future__ import annotations

from aws_cdk import ArnFormat, Duration, Stack
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_rds as rds
from constructs import Construct

from infra.alarms import alarm_on_any, periods_covering
from infra.config import AppConfig
from infra.execution_roles import role_of
from infra.nag import ANY_RESOURCE, suppress
from infra.tool_functions import tool_function
from infra.training_pipeline import SNAPSHOT_PREFIX, STATE_MACHINE_TIMEOUT
from lambdas.snapshot_sweeper.sweep import DATABASE_ENV, MIN_AGE_ENV, PREFIX_ENV

SWEEPER_HANDLER = "lambdas.snapshot_sweeper.handler.handler"
SWEEP_INTERVAL = Duration.days(1)
# A run's snapshot is taken after its execution started, and the execution ends at the latest at the
# state machine's timeout; the margin leaves room for clock differences and the last cleanup calls.
AGE_MARGIN = Duration.hours(2)
MIN_SNAPSHOT_AGE = STATE_MACHINE_TIMEOUT.plus(AGE_MARGIN)
# A few RDS calls per leftover snapshot (each retried by the client): minutes at most.
SWEEPER_TIMEOUT = Duration.minutes(5)
SWEEPER_MEMORY_MB = 256
ALARM_PERIOD = Duration.minutes(5)


class SnapshotSweeper(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: AppConfig,
        database: rds.IDatabaseInstance,
        logs_key: kms.IKey,
    ) -> None:
        """Sweeps ``database``'s run snapshots; ``logs_key`` encrypts the function's log group."""
        super().__init__(scope, construct_id)
        # What was deleted or cancelled, and why a sweep failed; its role writes its own log group only.
        self.function, self.log_group = tool_function(
            self,
            function="snapshot_sweeper",
            handler=SWEEPER_HANDLER,
            description="Deletes retraining snapshots left by aborted or timed-out runs",
            config=config,
            logs_key=logs_key,
            memory_mb=SWEEPER_MEMORY_MB,
            timeout=SWEEPER_TIMEOUT,
            environment={
                DATABASE_ENV: database.instance_identifier,
                PREFIX_ENV: SNAPSHOT_PREFIX,
                MIN_AGE_ENV: str(int(MIN_SNAPSHOT_AGE.to_seconds())),
            },
        )
        self._grant(database)
        self.rule = events.Rule(
            self,
            "Schedule",
            description="Daily sweep of leftover retraining snapshots",
            schedule=events.Schedule.rate(SWEEP_INTERVAL),
            targets=[
                targets.LambdaFunction(self.function, retry_attempts=8, max_event_age=Duration.hours(6))
            ],
        )
        self.alarm = self._build_alarm()
        self._acknowledge()

    def _grant(self, database: rds.IDatabaseInstance) -> None:
        run_snapshots = Stack.of(self).format_arn(
            service="rds",
            resource="snapshot",
            resource_name=SNAPSHOT_PREFIX + "*",
            arn_format=ArnFormat.COLON_RESOURCE_NAME,  # arn:aws:rds:region:account:snapshot:name
        )
        statements = [
            # Listing the database's snapshots names the instance; each snapshot returned is a run's
            # (the IAM reference lists both db and snapshot as resource types of DescribeDBSnapshots).
            iam.PolicyStatement(
                actions=["rds:DescribeDBSnapshots"], resources=[database.instance_arn, run_snapshots]
            ),
            iam.PolicyStatement(actions=["rds:DeleteDBSnapshot"], resources=[run_snapshots]),
            # CancelExportTask has no resource type in IAM's service authorization reference. The
            # reference lists optional ones for DescribeExportTasks (cluster, snapshot), but not which
            # one RDS checks for a lookup by task identifier: "*", like the state machine's grant.
            iam.PolicyStatement(actions=["rds:DescribeExportTasks", "rds:CancelExportTask"], resources=["*"]),
        ]
        for statement in statements:
            self.function.add_to_role_policy(statement)

    def _build_alarm(self) -> cloudwatch.Alarm:
        # Both terms are sparse (no datapoint while nothing fails): FILLed, or metric math drops the period.
        failures = cloudwatch.MathExpression(
            expression="FILL(errors, 0) + FILL(undelivered, 0)",
            using_metrics={
                "errors": self.function.metric_errors(period=ALARM_PERIOD, statistic="Sum"),
                "undelivered": cloudwatch.Metric(
                    namespace="AWS/Events",
                    metric_name="FailedInvocations",
                    dimensions_map={"RuleName": self.rule.rule_name},
                    statistic="Sum",
                    period=ALARM_PERIOD,
                ),
            },
            label="Snapshot sweeps failed or undelivered",
            period=ALARM_PERIOD,
        )
        return alarm_on_any(
            self,
            "FailureAlarm",
            failures,
            "The daily sweep of leftover retraining snapshots (train-*) failed or could not be invoked: "
            "a snapshot holding applicant data may be kept; the sweeper's log names it and why",
            # Errors is stamped with the invocation's start, up to the function's timeout before it arrives.
            evaluation_periods=periods_covering(SWEEPER_TIMEOUT, ALARM_PERIOD),
        )

    def _acknowledge(self) -> None:
        fn = self.function
        suppress(
            role_of(fn),
            "AwsSolutions-IAM5",
            f"The sweeper deletes only snapshots named {SNAPSHOT_PREFIX}* (the retraining runs' naming; the "
            "names are made at run time) and lists those of the stack's database. Resource '*' is needed "
            "by rds:CancelExportTask (IAM's service authorization reference lists no resource type for "
            "it), rds:DescribeExportTasks (which resource RDS checks for a lookup by task identifier is not "
            "documented; the state machine's grant is the same) and X-Ray PutTraceSegments/"
            "PutTelemetryRecords.",
            findings=[
                ANY_RESOURCE,
                f"Resource::arn:<AWS::Partition>:rds:<AWS::Region>:<AWS::AccountId>:snapshot:{SNAPSHOT_PREFIX}*",
            ],
        )
        suppress(
            fn,
            "NIST.800.53.R5-LambdaInsideVPC",
            "SC-7/AC-4 ask for boundary protection of system resources. The sweeper reaches nothing in the "
            "VPC: it calls the RDS API over TLS with its own least-privilege role (list the database's "
            "snapshots, delete train-* ones, cancel their exports) and reads no data.",
        )
        for rule in ("Serverless-LambdaDLQ", "NIST.800.53.R5-LambdaDLQ"):
            suppress(
                fn,
                rule,
                "EventBridge invokes the sweeper once a day with a schedule event that holds nothing to "
                "replay: a failed sweep raises the sweeper's alarm (Lambda Errors) and the next day's sweep "
                "covers the same snapshots again, so a dead-letter queue would keep an event nobody needs.",
            )
        suppress(
            self.rule,
            "Serverless-EventBusDLQ",
            "The schedule's event is a bare daily tick with nothing to replay. An invocation EventBridge "
            "still cannot deliver after its retries counts in the rule's FailedInvocations, which the "
            "sweeper's alarm watches, and the next day's tick sweeps the same snapshots.",
        )
        suppress(
            fn,
            "NIST.800.53.R5-LambdaConcurrency",
            "SC-6 asks for resource availability. The sweeper runs once a day, invoked only by its "
            "schedule; reserved concurrency would take executions from the account's unreserved pool "
            "(and fails to deploy where the pool is at its minimum) to guard a function that never scales.",
        )
