"""Audit trail: every decision the API makes and every batch file scored, kept unalterable for years.

The scoring Lambdas already write one structured log line per request (API) and per file (batch) with
what an auditor asks for (lambdas/audit.py). CloudWatch Logs subscriptions send exactly those lines to
a Firehose stream, which unpacks them (decompression, message extraction, one JSON object per line)
and writes them gzipped to a KMS-encrypted bucket under S3 Object Lock. A record can be neither changed
nor deleted before its retention ends, whatever happens to the function logs (three months) or to
the stack. No applicant values are in these lines unless LOG_APPLICANT_VALUES is switched on.
"""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy, Size, Stack
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kinesisfirehose as firehose
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_logs_destinations as log_destinations
from aws_cdk import aws_s3 as s3
from constructs import Construct

from infra.alarms import alarm_on_any
from infra.buckets import rotating_key, secure_bucket
from infra.config import AppConfig
from infra.log_groups import encrypted_log_group
from infra.nag import bucket_objects, suppress
from lambdas.audit import AUDIT_MESSAGES

RECORDS_PREFIX = "decisions/"
# Records are buffered for a minute; a quarter of an hour without delivery means S3 refuses them (for
# example a missing grant or checksum) while Firehose retries, for at most a day, before dropping them.
MAX_DELIVERY_DELAY = Duration.minutes(15)
ERRORS_PREFIX = "delivery-errors/"
_DATE_PATH = "!{timestamp:yyyy}/!{timestamp:MM}/!{timestamp:dd}/"


def audit_filter_pattern() -> logs.IFilterPattern:
    """Matches the JSON log lines whose "message" is one of the audit messages, and nothing else."""
    return logs.FilterPattern.any(
        *(logs.FilterPattern.string_value("$.message", "=", message) for message in AUDIT_MESSAGES)
    )


class AuditTrail(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: AppConfig,
        access_logs: s3.IBucket,
        log_groups: dict[str, logs.ILogGroup],
        logs_key: kms.IKey,
    ) -> None:
        """``log_groups``: the scoring functions' log groups by a short name ("Api", "Batch").

        ``logs_key`` encrypts the stream's own log group (delivery errors).
        """
        super().__init__(scope, construct_id)
        retention = Duration.days(config.audit_retention_days)
        # Audit records outlive the stack whatever dataRemovalPolicy says: RETAIN, never DESTROY.
        self.key = rotating_key(
            self,
            "AuditKey",
            description="Audit trail of scoring decisions",
            removal_policy=RemovalPolicy.RETAIN,
        )
        self._protect_key()
        self.bucket = secure_bucket(
            self,
            "AuditBucket",
            key=self.key,
            access_logs=access_logs,
            removal_policy=RemovalPolicy.RETAIN,
            object_lock_retention=(
                s3.ObjectLockRetention.compliance(retention)
                if config.audit_lock_mode == "compliance"
                else s3.ObjectLockRetention.governance(retention)
            ),
            # Deleted (as far as the lock allows) once the retention has passed: kept as long as required.
            lifecycle_rules=[s3.LifecycleRule(id="expire-after-retention", expiration=retention)],
        )
        # The one principal that writes records (a role of our own, so the bucket policy can name it).
        self.delivery_role = iam.Role(
            self,
            "DeliveryRole",
            # Firehose assumes a delivery role with this account's id as the external id (the
            # condition AWS's CloudWatch Logs guide gives): no other account's stream can use this role.
            assumed_by=iam.ServicePrincipal(
                "firehose.amazonaws.com",
                conditions={"StringEquals": {"sts:ExternalId": Stack.of(self).account}},
            ),
        )
        # Delivery and processing errors, kept two years (Firehose's default), encrypted like the rest.
        stream_errors = encrypted_log_group(
            self, "StreamErrors", key=logs_key, retention=logs.RetentionDays.TWO_YEARS
        )
        # CDK's grants to the role it is given are read-write on the bucket (deletes, retention, legal-hold
        # and tag changes) and any use of the key: the role gets _grant_delivery's instead.
        writer = self.delivery_role.without_policy_updates()
        destination = firehose.S3Bucket(
            self.bucket,
            role=writer,
            encryption_key=self.key,
            compression=firehose.Compression.GZIP,
            data_output_prefix=RECORDS_PREFIX + _DATE_PATH,
            error_output_prefix=ERRORS_PREFIX + "!{firehose:error-output-type}/" + _DATE_PATH,
            buffering_interval=Duration.seconds(60),
            buffering_size=Size.mebibytes(5),
            logging_config=firehose.EnableLogging(stream_errors),
            processors=[
                firehose.DecompressionProcessor(),
                firehose.CloudWatchLogProcessor(data_message_extraction=True),
                firehose.AppendDelimiterToRecordProcessor(),
            ],
        )
        self.stream = firehose.DeliveryStream(
            self,
            "AuditStream",
            destination=destination,
            encryption=firehose.StreamEncryption.customer_managed_key(self.key),
            # Firehose encrypts the stream through a grant it creates on the key, not through a role: without
            # this, CDK adds a role (assumable by any stream of the account) holding the key for nothing.
            role=writer,
        )
        self._grant_delivery(stream_errors)
        # One filter name per stack, the same on every group: the DeliveryErrors query below finds them by it.
        filter_name = f"{Stack.of(self).stack_name}-audit-trail"
        for name, log_group in log_groups.items():
            logs.SubscriptionFilter(
                self,
                f"{name}Records",
                log_group=log_group,
                destination=log_destinations.FirehoseDestination(self.stream),
                filter_pattern=audit_filter_pattern(),
                filter_name=filter_name,
            )
        # Records CloudWatch Logs could not hand to the stream (access denied, stream gone): it drops them
        # rather than retrying, so the stream never sees them and the freshness alarm below stays quiet.
        # CloudWatch Logs publishes DeliveryErrors with the dimensions LogGroupName, DestinationType and
        # FilterName (all three: an alarm naming LogGroupName alone would watch a series that never
        # exists). A Metrics Insights query by this stack's filter name sums them whatever the
        # DestinationType's value; no datapoint (no errors) is not breaching.
        forwarding_errors = cloudwatch.MathExpression(
            # The name is the stack's (letters, digits, '-': infra/config.py), no quote can reach the query.
            expression=f"SELECT SUM(DeliveryErrors) FROM \"AWS/Logs\" WHERE FilterName = '{filter_name}'",  # noqa: S608
            using_metrics={},
            label="Audit lines not forwarded to the stream",
            period=Duration.minutes(5),
        )
        self.forwarding_alarm = alarm_on_any(
            self,
            "AuditForwarding",
            forwarding_errors,
            "CloudWatch Logs failed to forward audit lines to the audit stream (they are dropped, not "
            "retried): check the subscription filters and the stream",
        )
        self.delivery_alarm = cloudwatch.Alarm(
            self,
            "AuditDelivery",
            metric=self.stream.metric(
                "DeliveryToS3.DataFreshness", statistic="Maximum", period=Duration.minutes(5)
            ),
            threshold=MAX_DELIVERY_DELAY.to_seconds(),
            evaluation_periods=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            alarm_description="Audit records are not reaching the audit bucket (oldest record older "
            f"than {MAX_DELIVERY_DELAY.to_minutes()} minutes); see delivery-errors/ and the stream's logs",
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        self._deny_deletes()
        # CDK's Firehose module adds a CIDR-block mapping for Redshift/Splunk destinations to the stack;
        # nothing here refers to it, and an unused mapping is a template lint warning (W7001).
        stack = Stack.of(self)
        for child in stack.node.children:
            if child.node.id.endswith("aws-kinesisfirehose.CidrBlocks"):
                stack.node.try_remove_child(child.node.id)
        self._acknowledge()

    def _grant_delivery(self, stream_errors: logs.ILogGroup) -> None:
        """What AWS documents for a Firehose S3 destination's role, and nothing more: write (and list,
        read back, abort) records, use the key through S3, log delivery errors to the stream's own log
        stream (created by CDK). Created before the stream, which checks its access when created."""
        statements = [
            iam.PolicyStatement(
                actions=["s3:GetBucketLocation", "s3:ListBucket", "s3:ListBucketMultipartUploads"],
                resources=[self.bucket.bucket_arn],
            ),
            iam.PolicyStatement(
                actions=["s3:AbortMultipartUpload", "s3:GetObject", "s3:PutObject"],
                resources=[self.bucket.arn_for_objects("*")],
            ),
            iam.PolicyStatement(
                actions=["kms:Decrypt", "kms:GenerateDataKey"],
                resources=[self.key.key_arn],
                conditions={"StringEquals": {"kms:ViaService": f"s3.{Stack.of(self).region}.amazonaws.com"}},
            ),
            iam.PolicyStatement(actions=["logs:PutLogEvents"], resources=[stream_errors.log_group_arn]),
        ]
        stream = self.stream.node.default_child
        assert stream is not None
        for statement in statements:
            granted = self.delivery_role.add_to_principal_policy(statement)
            if granted.policy_dependable is not None:
                stream.node.add_dependency(granted.policy_dependable)

    def _protect_key(self) -> None:
        """Nobody disables the key or schedules its deletion, which would make every record unreadable.

        The account root still administers the key policy: deleting the key first needs a deliberate
        change of this policy (a PutKeyPolicy call, logged by CloudTrail) that removes this statement.
        """
        self.key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AuditKeyIsNeverDisabledOrDeleted",
                effect=iam.Effect.DENY,
                principals=[iam.AnyPrincipal()],
                actions=["kms:ScheduleKeyDeletion", "kms:DisableKey"],
                resources=["*"],  # in a key policy, "*" is this key
            )
        )

    def _deny_deletes(self) -> None:
        """No principal deletes or hides a record, not even with delete markers (which Object Lock
        allows); only the lifecycle rule, after the retention, removes records. Nor may anyone bypass
        governance-mode retention: only an administrator changing this bucket policy can allow that."""
        self.bucket.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AuditRecordsAreNeverDeleted",
                effect=iam.Effect.DENY,
                principals=[iam.AnyPrincipal()],
                actions=["s3:DeleteObject", "s3:DeleteObjectVersion"],
                resources=[self.bucket.arn_for_objects("*")],
            )
        )
        # Object Lock keeps every version, but a later PutObject on the same key becomes the version
        # readers see: only the stream writes here, so nobody else can add or overwrite a record.
        self.bucket.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AuditRecordsAreWrittenByTheStreamOnly",
                effect=iam.Effect.DENY,
                principals=[iam.AnyPrincipal()],
                actions=["s3:PutObject"],
                resources=[self.bucket.arn_for_objects("*")],
                conditions={"ArnNotEquals": {"aws:PrincipalArn": self.delivery_role.role_arn}},
            )
        )
        self.bucket.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AuditRetentionIsNeverBypassed",
                effect=iam.Effect.DENY,
                principals=[iam.AnyPrincipal()],
                actions=["s3:BypassGovernanceRetention"],
                resources=[self.bucket.arn_for_objects("*")],
            )
        )

    def _acknowledge(self) -> None:
        suppress(
            self.delivery_role,
            "AwsSolutions-IAM5",
            "Firehose writes records under names of its own (date prefix, stream name, time, random "
            "part): put, read back and abort uploads on any object of this one audit bucket, whose policy "
            "denies deletes to every principal and whose Object Lock keeps every version.",
            findings=[bucket_objects(self.bucket, "*")],
        )
