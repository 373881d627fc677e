"""Dead-letter queues: where a message, an event or a notification that could not be delivered waits."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra.nag import suppress

DEAD_LETTER_RETENTION = Duration.days(14)  # SQS's maximum


def dead_letter_queue(
    scope: Construct, construct_id: str, *, holds: str, then: str, named_in_redrive_policy: bool = False
) -> sqs.Queue:
    """An SSE-SQS, TLS-only queue keeping ``holds`` for 14 days; ``then`` says what an operator does.

    ``named_in_redrive_policy``: another queue of the stack sends its failed messages here. cdk-nag then
    knows it for a dead-letter queue and reports no AwsSolutions-SQS3, so none is acknowledged (a stale
    acknowledgement would hide the finding should the queue stop being one).

    SSE-SQS rather than KMS: S3, SNS and EventBridge can all deliver to it without a key policy
    naming them, and what lands here is a notification or an event, not applicant data.
    """
    queue = sqs.Queue(
        scope,
        construct_id,
        encryption=sqs.QueueEncryption.SQS_MANAGED,
        enforce_ssl=True,
        retention_period=DEAD_LETTER_RETENTION,
    )
    if not named_in_redrive_policy:
        suppress(queue, "AwsSolutions-SQS3", f"This queue is itself a dead-letter queue: it holds {holds}.")
    suppress(
        queue,
        "Serverless-SQSRedrivePolicy",
        f"This queue is itself a dead-letter queue: {holds} stay 14 days for an operator, who {then}.",
    )
    return queue
