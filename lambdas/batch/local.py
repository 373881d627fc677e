"""Run the batch Lambda locally against an emulator: receive from SQS, invoke, delete like Lambda does.

For tests and the demo (``AWS_ENDPOINT_URL`` pointing at a moto server)::

    from lambdas.batch.local import drain_queue_once
    result = drain_queue_once(sqs_client, queue_url, s3_client)
    for manifest in result.manifests: print(manifest["status"], manifest["counts"])

The event handed to the handler has the real shape of a Lambda SQS event; messages the handler
reports as failed stay in the queue (and return after the visibility timeout), the others are
deleted, as the Lambda event source mapping does with ReportBatchItemFailures.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from lambdas.batch.events import MalformedEventError, parse_s3_notification
from lambdas.batch.layout import is_incoming_key, manifest_key_for
from lambdas.local_context import LocalLambdaContext

MAX_MESSAGES = 10  # SQS ReceiveMessage maximum per call


@dataclass
class DrainResult:
    received: int = 0
    failed_message_ids: list[str] = field(default_factory=list)
    manifests: list[dict[str, Any]] = field(default_factory=list)


def sqs_event(messages: list[dict[str, Any]], queue_arn: str, region: str = "us-east-1") -> dict[str, Any]:
    """A Lambda SQS event built from ReceiveMessage results (same fields Lambda sends)."""
    records = []
    for message in messages:
        body = message["Body"]
        records.append(
            {
                "messageId": message["MessageId"],
                "receiptHandle": message["ReceiptHandle"],
                "body": body,
                "attributes": message.get("Attributes", {}),
                "messageAttributes": message.get("MessageAttributes", {}),
                "md5OfBody": message.get(
                    "MD5OfBody", hashlib.md5(body.encode(), usedforsecurity=False).hexdigest()
                ),
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": region,
            }
        )
    return {"Records": records}


def drain_queue_once(
    sqs: Any, queue_url: str, s3: Any | None = None, *, wait_seconds: int = 1, context: Any | None = None
) -> DrainResult:
    """Receive up to 10 messages, run the handler on them, delete the ones it did not report failed.

    With ``s3`` given, the manifests of the files named in the messages are read back into the result.
    """
    # The function Lambda runs, without the entry module's init phase (which loads the model at import).
    # Imported late: loading it reads the environment.
    from lambdas.batch.wiring import handler

    response = sqs.receive_message(
        QueueUrl=queue_url,
        MaxNumberOfMessages=MAX_MESSAGES,
        WaitTimeSeconds=wait_seconds,
        AttributeNames=["All"],
    )
    messages: list[dict[str, Any]] = response.get("Messages", [])
    result = DrainResult(received=len(messages))
    if not messages:
        return result
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    # A failed message is in batchItemFailures (the handler never fails the whole batch for it).
    outcome = handler(sqs_event(messages, queue_arn), context or _batch_context())
    result.failed_message_ids = [
        failure["itemIdentifier"] for failure in outcome.get("batchItemFailures", [])
    ]
    for message in messages:
        if message["MessageId"] not in result.failed_message_ids:
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    if s3 is not None:
        result.manifests = _manifests_named_by(s3, messages)
    return result


def _manifests_named_by(s3: Any, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    manifests = []
    for message in messages:
        try:
            created = parse_s3_notification(message["Body"])
        except MalformedEventError:
            continue
        for item in created:
            if not is_incoming_key(item.key):
                continue
            try:
                body = s3.get_object(Bucket=item.bucket, Key=manifest_key_for(item.key))["Body"].read()
            except s3.exceptions.NoSuchKey:
                continue
            manifests.append(json.loads(body))
    return manifests


def create_notified_bucket(s3: Any, sqs: Any, bucket: str, queue_name: str | None = None) -> str:
    """Create (or reuse) a bucket whose ObjectCreated events under incoming/ go to an SQS queue.

    The same wiring as the CDK stack (S3 -> SQS, prefix filter); returns the queue URL. S3 sends an
    ``s3:TestEvent`` to the queue when the notification is configured; the handler ignores it.
    """
    existing = {item["Name"] for item in s3.list_buckets().get("Buckets", [])}
    if bucket not in existing:
        s3.create_bucket(Bucket=bucket)
    queue_url: str = sqs.create_queue(QueueName=queue_name or f"{bucket}-incoming")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    s3.put_bucket_notification_configuration(
        Bucket=bucket,
        NotificationConfiguration={
            "QueueConfigurations": [
                {
                    "QueueArn": queue_arn,
                    "Events": ["s3:ObjectCreated:*"],
                    "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "incoming/"}]}},
                }
            ]
        },
    )
    return queue_url


def drain_queue(sqs: Any, queue_url: str, s3: Any | None = None, *, max_rounds: int = 100) -> DrainResult:
    """``drain_queue_once`` until the queue has nothing visible; results are merged."""
    total = DrainResult()
    for _ in range(max_rounds):
        result = drain_queue_once(sqs, queue_url, s3, wait_seconds=0)
        if result.received == 0:
            break
        total.received += result.received
        total.failed_message_ids += result.failed_message_ids
        total.manifests += result.manifests
    return total


def _batch_context() -> LocalLambdaContext:
    return LocalLambdaContext("loan-scoring-batch-local", memory_limit_in_mb=2048, remaining_millis=300_000)
