"""The stack's CloudWatch log groups, all encrypted with one customer-managed KMS key.

They hold decisions, probabilities, reasons and request metadata (function, access and state machine
logs), connection records (flow logs) and applicant values when LOG_APPLICANT_VALUES is switched on.
CloudWatch Logs itself encrypts and decrypts with the key (for writers, for readers, for the audit
trail's subscription filters and for metrics extracted from the logs), so no role needs a KMS grant
to write or read logs; the key policy lets the service use the key for this account's log groups only.
"""

from __future__ import annotations

from aws_cdk import ArnFormat, RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra.buckets import rotating_key

# What CloudWatch Logs needs on a key that encrypts log groups (CloudWatch Logs documentation,
# "Encrypt log data in CloudWatch Logs using AWS KMS").
LOGS_KEY_ACTIONS = ("kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*")


def logs_key(scope: Construct, construct_id: str) -> kms.Key:
    """The key every log group of the stack is encrypted with (yearly rotation).

    Deleted with the stack, like the log groups it protects (all of them are destroyed on
    ``cdk destroy``): nothing it encrypted outlives them.
    """
    stack = Stack.of(scope)
    key = rotating_key(
        scope,
        construct_id,
        description="CloudWatch Logs of the loan scoring stack",
        removal_policy=RemovalPolicy.DESTROY,
    )
    key.add_to_resource_policy(
        iam.PolicyStatement(
            sid="CloudWatchLogsEncryptsThisAccountsLogGroups",
            principals=[iam.ServicePrincipal(f"logs.{stack.region}.amazonaws.com")],
            actions=list(LOGS_KEY_ACTIONS),
            resources=["*"],  # in a key policy, "*" is this key
            conditions={
                # CloudWatch Logs passes the log group's ARN as encryption context: log groups of this
                # account and region only, never another account's through the same service principal.
                "ArnLike": {
                    "kms:EncryptionContext:aws:logs:arn": stack.format_arn(
                        service="logs",
                        resource="log-group",
                        resource_name="*",
                        arn_format=ArnFormat.COLON_RESOURCE_NAME,
                    )
                }
            },
        )
    )
    return key


def encrypted_log_group(
    scope: Construct,
    construct_id: str,
    *,
    key: kms.IKey,
    retention: logs.RetentionDays,
    name: str | None = None,
) -> logs.LogGroup:
    """A log group of the stack: encrypted with ``key``, deleted with the stack. ``name`` only where a
    service requires one (WAF delivers to ``aws-waf-logs-*`` only); otherwise CloudFormation names it."""
    return logs.LogGroup(
        scope,
        construct_id,
        log_group_name=name,
        retention=retention,
        encryption_key=key,
        removal_policy=RemovalPolicy.DESTROY,
    )
