"""The audit trail: decision and batch-file log lines shipped to a write-once, KMS-encrypted bucket."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from aws_cdk.assertions import Match, Template

from infra.audit_trail import RECORDS_PREFIX
from lambdas.audit import AUDIT_MESSAGES
from tests.infra.conftest import Resources, synthesise


def _audit_bucket(resources: Resources) -> dict[str, Any]:
    (bucket,) = [
        r
        for r in resources.values()
        if r["Type"] == "AWS::S3::Bucket" and "ObjectLockConfiguration" in r["Properties"]
    ]
    return bucket


def test_given_the_default_app_then_audit_records_are_locked_for_seven_years_and_kept_on_destroy(
    resources: Resources,
) -> None:
    bucket = _audit_bucket(resources)
    properties = bucket["Properties"]
    assert properties["ObjectLockEnabled"] is True
    assert properties["ObjectLockConfiguration"]["Rule"]["DefaultRetention"] == {
        "Days": 2557,
        "Mode": "GOVERNANCE",
    }
    assert properties["VersioningConfiguration"] == {"Status": "Enabled"}
    assert (
        properties["BucketEncryption"]["ServerSideEncryptionConfiguration"][0][
            "ServerSideEncryptionByDefault"
        ]["SSEAlgorithm"]
        == "aws:kms"
    )
    assert bucket["DeletionPolicy"] == "Retain"


def test_given_compliance_mode_and_destroy_when_synthesised_then_the_lock_follows_and_records_stay(
    tmp_path: Path,
) -> None:
    variant = synthesise(
        tmp_path, auditLockMode="compliance", auditRetentionDays=800, dataRemovalPolicy="destroy"
    )
    bucket = _audit_bucket(variant.template_json["Resources"])
    assert bucket["Properties"]["ObjectLockConfiguration"]["Rule"]["DefaultRetention"] == {
        "Days": 800,
        "Mode": "COMPLIANCE",
    }
    # dataRemovalPolicy=destroy empties the other buckets on `cdk destroy`, never the audit trail
    assert bucket["DeletionPolicy"] == "Retain"
    assert "expire-after-retention" in {
        rule["Id"] for rule in bucket["Properties"]["LifecycleConfiguration"]["Rules"]
    }


def _audit_bucket_policy_statements(resources: Resources) -> list[dict[str, Any]]:
    bucket_id = next(name for name, r in resources.items() if r is _audit_bucket(resources))
    (policy,) = [
        r
        for r in resources.values()
        if r["Type"] == "AWS::S3::BucketPolicy" and r["Properties"]["Bucket"] == {"Ref": bucket_id}
    ]
    return policy["Properties"]["PolicyDocument"]["Statement"]  # type: ignore[no-any-return]


def test_given_the_audit_bucket_then_no_principal_may_delete_a_record(resources: Resources) -> None:
    bucket_id = next(name for name, r in resources.items() if r is _audit_bucket(resources))
    denials = [
        s for s in _audit_bucket_policy_statements(resources) if s.get("Sid") == "AuditRecordsAreNeverDeleted"
    ]
    assert denials == [
        {
            "Sid": "AuditRecordsAreNeverDeleted",
            "Effect": "Deny",
            "Principal": {"AWS": "*"},
            "Action": ["s3:DeleteObject", "s3:DeleteObjectVersion"],
            "Resource": {"Fn::Join": ["", [{"Fn::GetAtt": [bucket_id, "Arn"]}, "/*"]]},
        }
    ]


def test_given_the_stream_then_it_unpacks_log_batches_into_json_lines_under_the_records_prefix(
    template: Template,
) -> None:
    template.has_resource_properties(
        "AWS::KinesisFirehose::DeliveryStream",
        {
            "DeliveryStreamEncryptionConfigurationInput": {
                "KeyType": "CUSTOMER_MANAGED_CMK",
                "KeyARN": Match.any_value(),
            },
            "ExtendedS3DestinationConfiguration": Match.object_like(
                {
                    "Prefix": Match.string_like_regexp(f"^{RECORDS_PREFIX}"),
                    "CompressionFormat": "GZIP",
                    "EncryptionConfiguration": {"KMSEncryptionConfig": {"AWSKMSKeyARN": Match.any_value()}},
                    "ProcessingConfiguration": {
                        "Enabled": True,
                        "Processors": [
                            Match.object_like({"Type": "Decompression"}),
                            {
                                "Type": "CloudWatchLogProcessing",
                                "Parameters": [
                                    {"ParameterName": "DataMessageExtraction", "ParameterValue": "true"}
                                ],
                            },
                            Match.object_like({"Type": "AppendDelimiterToRecord"}),
                        ],
                    },
                }
            ),
        },
    )


def test_given_both_scoring_functions_then_only_their_audit_lines_are_subscribed(
    resources: Resources,
) -> None:
    filters = [r["Properties"] for r in resources.values() if r["Type"] == "AWS::Logs::SubscriptionFilter"]
    function_log_groups = {
        r["Properties"]["LoggingConfig"]["LogGroup"]["Ref"]
        for r in resources.values()
        if r["Type"] == "AWS::Lambda::Function"
        and "MODEL_BUNDLE_DIR" in r["Properties"].get("Environment", {}).get("Variables", {})
    }
    assert len(function_log_groups) == 2  # the API and the batch function
    assert {f["LogGroupName"]["Ref"] for f in filters} == function_log_groups
    expected = " || ".join(f'($.message = "{message}")' for message in AUDIT_MESSAGES)
    assert all(f["FilterPattern"] == f"{{ {expected} }}" for f in filters)
    assert all("AuditAuditStream" in f["DestinationArn"]["Fn::GetAtt"][0] for f in filters)


def test_given_records_stuck_in_the_stream_then_an_alarm_fires_and_is_on_the_dashboard(
    resources: Resources,
) -> None:
    (alarm,) = [
        r["Properties"]
        for name, r in resources.items()
        if r["Type"] == "AWS::CloudWatch::Alarm" and name.startswith("AuditAuditDelivery")
    ]
    assert alarm["MetricName"] == "DeliveryToS3.DataFreshness"
    assert alarm["Namespace"] == "AWS/Firehose"
    assert alarm["Statistic"] == "Maximum"
    assert alarm["Threshold"] == 900
    assert alarm["ComparisonOperator"] == "GreaterThanThreshold"
    (dashboard,) = [r for r in resources.values() if r["Type"] == "AWS::CloudWatch::Dashboard"]
    assert "AuditAuditDelivery" in json.dumps(dashboard["Properties"]["DashboardBody"])


def test_given_the_audit_key_then_no_principal_may_disable_it_or_schedule_its_deletion(
    resources: Resources,
) -> None:
    (key,) = [
        r
        for name, r in resources.items()
        if r["Type"] == "AWS::KMS::Key" and name.startswith("AuditAuditKey")
    ]
    denials = [s for s in key["Properties"]["KeyPolicy"]["Statement"] if s["Effect"] == "Deny"]
    assert denials == [
        {
            "Sid": "AuditKeyIsNeverDisabledOrDeleted",
            "Effect": "Deny",
            "Principal": {"AWS": "*"},
            "Action": ["kms:DisableKey", "kms:ScheduleKeyDeletion"],
            "Resource": "*",
        }
    ]
    # And the account can still administer the key policy (the deliberate way to lift the denial)
    assert any(
        s["Effect"] == "Allow" and s["Action"] == "kms:*" and ":root" in json.dumps(s["Principal"])
        for s in key["Properties"]["KeyPolicy"]["Statement"]
    )
    assert key["DeletionPolicy"] == "Retain"


def test_given_governance_mode_then_no_principal_may_bypass_the_retention(resources: Resources) -> None:
    bucket_id = next(name for name, r in resources.items() if r is _audit_bucket(resources))
    denials = [
        s
        for s in _audit_bucket_policy_statements(resources)
        if s["Effect"] == "Deny" and "s3:BypassGovernanceRetention" in json.dumps(s["Action"])
    ]
    assert denials == [
        {
            "Sid": "AuditRetentionIsNeverBypassed",
            "Effect": "Deny",
            "Principal": {"AWS": "*"},
            "Action": "s3:BypassGovernanceRetention",
            "Resource": {"Fn::Join": ["", [{"Fn::GetAtt": [bucket_id, "Arn"]}, "/*"]]},
        }
    ]
