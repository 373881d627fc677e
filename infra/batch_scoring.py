"""Batch: files dropped under incoming/ -> SQS -> batch Lambda -> scored/, rejected/, manifests/."""

from __future__ import annotations

import jsii
from aws_cdk import Duration, RemovalPolicy, Size, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sqs as sqs
from aws_cdk.interfaces.aws_s3 import IBucketRef
from constructs import Construct

from infra.alarms import alarm_on_any
from infra.buckets import (
    grant_put_under,
    grant_read_under,
    refuse_other_encryption,
    rotating_key,
    secure_bucket,
)
from infra.config import AppConfig
from infra.execution_roles import role_of
from infra.nag import (
    ANY_RESOURCE,
    S3_OBJECT_READ_ACTIONS,
    bucket_objects,
    suppress,
)
from infra.queues import dead_letter_queue
from infra.registered_bundle import RegisteredBundle
from infra.scoring_functions import scoring_function

INCOMING_PREFIX = "incoming/"
MANIFEST_PREFIX = "manifests/"
OUTPUT_PREFIXES = ("scored/", "rejected/", MANIFEST_PREFIX)
# Lambda's maximum, so one invocation takes the largest file it can (docs/batch.md: ~50 M credit_risk
# rows with the committed champion); scored and rejected files are staged in /tmp, hence its size.
BATCH_TIMEOUT = Duration.minutes(15)
BATCH_EPHEMERAL_STORAGE = Size.gibibytes(10)
# AWS guidance: queue visibility timeout >= 6x the function timeout, so a message is never handed to a
# second invocation while the first is still working on it (including retries inside the batch window).
VISIBILITY_TIMEOUT = Duration.minutes(90)
MAX_RECEIVE_COUNT = 3


class BatchScoring(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: AppConfig,
        access_logs: s3.IBucket,
        removal_policy: RemovalPolicy,
        model_registry: s3.IBucket,
        logs_key: kms.IKey,
    ) -> None:
        """``model_registry`` is the artifact bucket; it is only used when ``modelBundleVersion`` is set.

        ``logs_key`` encrypts the function's log group.
        """
        super().__init__(scope, construct_id)
        # The same registered version as the API serves, or None for the packaged bundle.
        self.model_bundle = RegisteredBundle.of(config, model_registry)
        self.key = rotating_key(
            self, "ScoringKey", description="Batch scoring files", removal_policy=removal_policy
        )
        self.bucket = secure_bucket(
            self,
            "ScoringBucket",
            key=self.key,
            access_logs=access_logs,
            removal_policy=removal_policy,
            lifecycle_rules=[
                s3.LifecycleRule(id="expire-incoming", prefix=INCOMING_PREFIX, expiration=Duration.days(30))
            ],
        )
        # Files dropped and files written: all under the bucket's key.
        refuse_other_encryption(self.bucket, self.key, "*")
        # SSE-SQS rather than KMS: S3 event notifications cannot publish to a queue under a key
        # whose policy does not name s3.amazonaws.com, and the messages carry only object keys.
        self.dead_letter_queue = dead_letter_queue(
            self,
            "DeadLetterQueue",
            holds=f"the notifications of files that failed {MAX_RECEIVE_COUNT} times",
            then="redrives them to the incoming queue once the cause is fixed",
            named_in_redrive_policy=True,
        )
        self.queue = sqs.Queue(
            self,
            "IncomingQueue",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            visibility_timeout=VISIBILITY_TIMEOUT,
            retention_period=Duration.days(4),
            dead_letter_queue=sqs.DeadLetterQueue(
                queue=self.dead_letter_queue, max_receive_count=MAX_RECEIVE_COUNT
            ),
        )
        self.bucket.add_event_notification(
            s3.EventType.OBJECT_CREATED,
            _QueueForThisAccountsBucket(self.queue),
            s3.NotificationKeyFilter(prefix=INCOMING_PREFIX),
        )
        self.function = scoring_function(
            self,
            "BatchFunction",
            config=config,
            function="batch",
            logs_key=logs_key,
            memory_mb=config.batch_memory_mb,
            timeout=BATCH_TIMEOUT,
            # The bucket comes with each S3 event: the function reads no bucket name from its settings.
            extra_environment={
                "BATCH_ONNX_THREADS": str(config.batch_onnx_threads),
                **(self.model_bundle.environment() if self.model_bundle else {}),
            },
            ephemeral_storage=BATCH_EPHEMERAL_STORAGE,
        )
        self.function.add_event_source(
            sources.SqsEventSource(
                self.queue,
                batch_size=1,
                report_batch_item_failures=True,
                # Leaves account concurrency for the API however many files arrive at once.
                max_concurrency=config.batch_max_concurrency,
            )
        )
        # Reads its input and its own manifests (lambdas/batch/service.py: a file whose complete manifest
        # exists is not scored again; a new file has none, which S3 must answer with 404), and lists
        # incoming/ to refuse an input whose output names another input already has (x.csv, x.parquet).
        grant_read_under(
            self.bucket, self.function, INCOMING_PREFIX + "*", MANIFEST_PREFIX + "*", probes_missing_keys=True
        )
        grant_put_under(self.bucket, self.function, *(prefix + "*" for prefix in OUTPUT_PREFIXES))
        if self.model_bundle:
            self.model_bundle.grant_read(self.function, reader="The batch function")
        self.dlq_alarm = alarm_on_any(
            self,
            "DeadLetterAlarm",
            self.dead_letter_queue.metric_approximate_number_of_messages_visible(period=Duration.minutes(5)),
            "Batch files that failed 3 times are waiting in the dead-letter queue",
        )
        for rule in ("Serverless-LambdaDLQ", "NIST.800.53.R5-LambdaDLQ"):
            suppress(
                self.function,
                rule,
                "The SQS event source mapping invokes the function synchronously; a failed message returns "
                f"to the incoming queue and after {MAX_RECEIVE_COUNT} receives goes to its dead-letter "
                "queue. A Lambda dead-letter queue only receives failed asynchronous invocations.",
            )
        suppress(
            self.function,
            "NIST.800.53.R5-LambdaConcurrency",
            "SC-6 asks for resource availability. The function's concurrency is already capped by the SQS "
            f"event source's maximum concurrency (batchMaxConcurrency, {config.batch_max_concurrency}), "
            "which keeps the account's concurrency for the API; files beyond it wait in the queue. "
            "Reserved concurrency would only add a floor, taken from the account's unreserved pool.",
        )
        suppress(
            self.function,
            "Serverless-LambdaEventSourceMappingDestination",
            "On-failure destinations exist only for stream and Kafka event sources, not SQS; failed "
            "messages reach the incoming queue's dead-letter queue through its redrive policy.",
        )
        suppress(
            role_of(self.function),
            "AwsSolutions-IAM5",
            "Wildcards are the incoming/ and manifests/ (read) and scored/, rejected/, manifests/ (write: "
            "s3:PutObject and s3:AbortMultipartUpload only) prefixes of the scoring bucket, s3:GetObject* "
            "on the read prefixes, and X-Ray's '*' resource.",
            findings=[
                *S3_OBJECT_READ_ACTIONS,
                ANY_RESOURCE,
                *(bucket_objects(self.bucket, p + "*") for p in (INCOMING_PREFIX, *OUTPUT_PREFIXES)),
            ],
        )


@jsii.implements(s3.IBucketNotificationDestination)
class _QueueForThisAccountsBucket:
    """S3 -> SQS notification destination whose queue policy also names this account.

    CDK's ``SqsDestination`` lets s3.amazonaws.com send when ``aws:SourceArn`` is the bucket; a bucket
    ARN holds no account, so a bucket of the same name in another account (after this one is deleted)
    would match too. ``aws:SourceAccount`` closes that (confused deputy).
    """

    def __init__(self, queue: sqs.IQueue) -> None:
        self._queue = queue

    def bind(self, scope: Construct, bucket: IBucketRef) -> s3.BucketNotificationDestinationConfig:
        # sqs:SendMessage only: all S3 needs to deliver (and test) notifications; grant_send_messages
        # would add sqs:GetQueueAttributes and sqs:GetQueueUrl.
        self._queue.add_to_resource_policy(
            iam.PolicyStatement(
                principals=[iam.ServicePrincipal("s3.amazonaws.com")],
                actions=["sqs:SendMessage"],
                resources=[self._queue.queue_arn],
                conditions={
                    "ArnLike": {"aws:SourceArn": bucket.bucket_ref.bucket_arn},
                    "StringEquals": {"aws:SourceAccount": Stack.of(scope).account},
                },
            )
        )
        # SSE-SQS queue (no KMS key to grant); the dependency makes S3 validate the destination only
        # once the queue policy allows it.
        return s3.BucketNotificationDestinationConfig(
            arn=self._queue.queue_arn,
            type=s3.BucketNotificationDestinationType.QUEUE,
            dependencies=[self._queue],
        )
