"""Audit trail review, in the synthesised template: who may write into the audit bucket."""

from __future__ import annotations

from typing import Any

from tests.infra.conftest import Resources


def test_given_the_audit_bucket_then_only_the_delivery_stream_may_write_a_record(
    resources: Resources,
) -> None:
    # Given the audit bucket (Object Lock keeps every version, but the newest version of a key is the one
    # Athena and any reader sees) and the role the stream writes with
    (bucket_id,) = [
        name
        for name, r in resources.items()
        if r["Type"] == "AWS::S3::Bucket" and "ObjectLockConfiguration" in r["Properties"]
    ]
    (stream,) = [r for r in resources.values() if r["Type"] == "AWS::KinesisFirehose::DeliveryStream"]
    writer = stream["Properties"]["ExtendedS3DestinationConfiguration"]["RoleARN"]
    (policy,) = [
        r
        for r in resources.values()
        if r["Type"] == "AWS::S3::BucketPolicy" and r["Properties"]["Bucket"] == {"Ref": bucket_id}
    ]
    statements: list[dict[str, Any]] = policy["Properties"]["PolicyDocument"]["Statement"]
    # Then every other principal is denied PutObject on every record: nobody adds a forged record or
    # overwrites a real one
    denials = [s for s in statements if s["Effect"] == "Deny" and "s3:PutObject" in str(s["Action"])]
    assert denials == [
        {
            "Sid": "AuditRecordsAreWrittenByTheStreamOnly",
            "Effect": "Deny",
            "Principal": {"AWS": "*"},
            "Action": "s3:PutObject",
            "Resource": {"Fn::Join": ["", [{"Fn::GetAtt": [bucket_id, "Arn"]}, "/*"]]},
            "Condition": {"ArnNotEquals": {"aws:PrincipalArn": writer}},
        }
    ]
    # And that role is assumed by Firehose alone
    (role,) = [r for name, r in resources.items() if {"Fn::GetAtt": [name, "Arn"]} == writer]
    assert role["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {
        "Service": "firehose.amazonaws.com"
    }
