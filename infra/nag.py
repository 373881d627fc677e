"""cdk-nag (v3) acknowledgements: every one carries the reason it is acceptable, next to its resource.

cdk-nag v3 runs as CDK policy-validation plugins (app.py: the AwsSolutions, Serverless and NIST 800-53
Rev 5 packs): any finding that is not acknowledged here fails synthesis, so a successful ``cdk synth``
is itself the proof of zero unsuppressed findings.
"""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import Acknowledgment, Validations
from constructs import IConstruct

_MIN_REASON_LENGTH = 20


def suppress(construct: IConstruct, rule_id: str, reason: str, findings: Sequence[str] = ()) -> None:
    """Acknowledge one cdk-nag rule (``AwsSolutions-L1``, ``Serverless-LambdaDLQ``,
    ``NIST.800.53.R5-LambdaDLQ``) on ``construct`` and its children, with a written reason.

    Rules that report several findings per resource (IAM4, IAM5) are acknowledged finding by finding
    (``AwsSolutions-IAM5[Resource::...]``), so a new wildcard still fails synthesis.
    """
    if len(reason.strip()) < _MIN_REASON_LENGTH:
        raise ValueError(f"acknowledging {rule_id} needs a real reason, got {reason!r}")
    # The pack's name ("AwsSolutions::", "Serverless::", "NIST.800.53.R5::") routes the acknowledgement
    # to its plugin's report.
    pack = rule_id.split("-", 1)[0]
    ids = [f"{pack}::{rule_id}[{finding}]" for finding in findings] if findings else [f"{pack}::{rule_id}"]
    Validations.of(construct).acknowledge(*(Acknowledgment(id=rule_id_, reason=reason) for rule_id_ in ids))


# Action groups that CDK's grant_read / grant_write / grant_read_write emit on buckets and keys.
S3_READ_ACTIONS = ("Action::s3:GetObject*", "Action::s3:GetBucket*", "Action::s3:List*")
# What infra/buckets.py's grant_read_under emits (its s3:ListBucket names the bucket, no wildcard).
S3_OBJECT_READ_ACTIONS = ("Action::s3:GetObject*",)
S3_WRITE_ACTIONS = ("Action::s3:DeleteObject*", "Action::s3:Abort*")
KMS_WRITE_ACTIONS = ("Action::kms:ReEncrypt*", "Action::kms:GenerateDataKey*")
ANY_RESOURCE = "Resource::*"
BASIC_EXECUTION_POLICY = (
    "Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"
)


def bucket_objects(bucket: IConstruct, key_pattern: str) -> str:
    """The finding cdk-nag reports for a grant on ``<bucket ARN>/<key_pattern>``."""
    return f"Resource::<{_logical_id(bucket)}.Arn>/{key_pattern}"


def task_definition_revisions(task_definition: IConstruct) -> str:
    """The finding for Step Functions' ecs:RunTask grant on every revision of a task definition family."""
    ref = '{"Ref":"' + _logical_id(task_definition) + '"}'
    colon = [f'{{"Fn::Select":[{i},{{"Fn::Split":[":",{ref}]}}]}}' for i in range(1, 6)]
    family = [f'{{"Fn::Select":[{i},{{"Fn::Split":["/",{colon[4]}]}}]}}' for i in range(2)]
    return f"Resource::arn:{colon[0]}:{colon[1]}:{colon[2]}:{colon[3]}:{family[0]}/{family[1]}:*"


def _logical_id(construct: IConstruct) -> str:
    from aws_cdk import CfnElement, Stack

    element = construct.node.default_child if not isinstance(construct, CfnElement) else construct
    assert isinstance(element, CfnElement)
    return Stack.of(construct).get_logical_id(element)
