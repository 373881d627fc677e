"""Audit trail review, in the synthesised template: who may write into the audit bucket."""

from __future__ import annotations

import json
from typing import Any

from tests.infra.conftest import Resources, Synthesised


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


def test_given_audit_lines_that_logs_cannot_forward_then_an_alarm_fires_and_is_e_mailed(
    resources: Resources, synthesised_with_options: Synthesised
) -> None:
    # Given the two function log groups whose audit lines the subscription filters forward
    filters = [r["Properties"] for r in resources.values() if r["Type"] == "AWS::Logs::SubscriptionFilter"]
    filtered_groups = sorted(json.dumps(f["LogGroupName"]) for f in filters)
    (alarm,) = [
        r["Properties"]
        for name, r in resources.items()
        if r["Type"] == "AWS::CloudWatch::Alarm" and name.startswith("AuditAuditForwarding")
    ]
    # Then one alarm sums CloudWatch Logs' DeliveryErrors of every filter of this stack: DeliveryErrors is
    # published per (LogGroupName, DestinationType, FilterName), so the query selects by the one filter
    # name every audit subscription of the stack has, and no other stack's filters have
    (name,) = {f["FilterName"] for f in filters}
    assert name == "LoanScoring-dev-audit-trail"
    assert len(set(filtered_groups)) == 2  # the API's and the batch function's
    ((query,),) = [[m["Expression"] for m in alarm["Metrics"]]]
    assert query == f"SELECT SUM(DeliveryErrors) FROM \"AWS/Logs\" WHERE FilterName = '{name}'"
    assert all("MetricStat" not in m for m in alarm["Metrics"])
    assert (alarm["Threshold"], alarm["ComparisonOperator"]) == (0, "GreaterThanThreshold")
    assert alarm["TreatMissingData"] == "notBreaching"
    # And with alarm e-mails it notifies the topic like every other alarm
    (with_topic,) = [
        r["Properties"]
        for name, r in synthesised_with_options.template_json["Resources"].items()
        if r["Type"] == "AWS::CloudWatch::Alarm" and name.startswith("AuditAuditForwarding")
    ]
    assert with_topic["AlarmActions"]


def test_given_the_audit_delivery_role_then_only_this_accounts_firehose_may_assume_it(
    resources: Resources,
) -> None:
    # Given the one role the audit bucket accepts records from
    (trust,) = [
        r["Properties"]["AssumeRolePolicyDocument"]["Statement"]
        for name, r in resources.items()
        if r["Type"] == "AWS::IAM::Role" and name.startswith("AuditDeliveryRole")
    ]
    # Then Firehose may assume it only with this account's id as the external id (AWS's documented trust
    # for a Firehose delivery role): another account's stream cannot write forged records with it
    (statement,) = trust
    assert statement["Principal"] == {"Service": "firehose.amazonaws.com"}
    assert statement["Condition"] == {"StringEquals": {"sts:ExternalId": {"Ref": "AWS::AccountId"}}}
