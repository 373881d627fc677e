"""Security review of the network, buckets, API, firewall and batch constructs (one shared synthesis)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.infra.conftest import Resources, Synthesised


def _of_type(resources: Resources, kind: str) -> dict[str, dict[str, Any]]:
    return {name: r for name, r in resources.items() if r["Type"] == kind}


def _variants(synthesised: Synthesised, synthesised_with_options: Synthesised) -> list[Resources]:
    return [synthesised.template_json["Resources"], synthesised_with_options.template_json["Resources"]]


def test_given_the_api_then_its_endpoint_refuses_tls_older_than_1_2(
    synthesised: Synthesised, synthesised_with_options: Synthesised
) -> None:
    # A Regional API's default endpoint accepts TLS 1.0 and 1.1 unless a security policy says otherwise
    for resources in _variants(synthesised, synthesised_with_options):
        (api,) = _of_type(resources, "AWS::ApiGateway::RestApi").values()
        assert api["Properties"].get("SecurityPolicy") == "TLS_1_2"


def test_given_the_alias_then_only_the_deployed_stage_may_invoke_it(
    synthesised: Synthesised, synthesised_with_options: Synthesised
) -> None:
    for resources in _variants(synthesised, synthesised_with_options):
        (stage_id,) = _of_type(resources, "AWS::ApiGateway::Stage")
        permissions = [
            p["Properties"]
            for p in _of_type(resources, "AWS::Lambda::Permission").values()
            if p["Properties"]["Principal"] == "apigateway.amazonaws.com"
        ]
        assert len(permissions) == 5  # one per method
        for permission in permissions:
            # Not the console's test-invoke-stage, which skips the method's authorisation and the web ACL
            parts = permission["SourceArn"]["Fn::Join"][1]
            assert {"Ref": stage_id} in parts, parts
            assert not any("test-invoke-stage" in str(part) for part in parts), parts


def test_given_the_incoming_queue_then_s3_may_only_send_messages_to_it(resources: Resources) -> None:
    (queue_id,) = [name for name in _of_type(resources, "AWS::SQS::Queue") if "IncomingQueue" in name]
    statements = [
        statement
        for policy in _of_type(resources, "AWS::SQS::QueuePolicy").values()
        if policy["Properties"]["Queues"] == [{"Ref": queue_id}]
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
        if statement.get("Principal") == {"Service": "s3.amazonaws.com"}
    ]
    assert [s["Action"] for s in statements] == ["sqs:SendMessage"]


@pytest.mark.parametrize(
    "bucket_prefix", ["DataExportBucket", "TrainingArtifactBucket", "BatchScoringBucket", "AuditAuditBucket"]
)
def test_given_a_data_bucket_then_abandoned_multipart_uploads_do_not_stay(
    resources: Resources, bucket_prefix: str
) -> None:
    # A batch function killed at its timeout mid-upload leaves parts (scored rows) no listing shows
    (bucket,) = [r for n, r in _of_type(resources, "AWS::S3::Bucket").items() if n.startswith(bucket_prefix)]
    aborting = [
        rule
        for rule in bucket["Properties"]["LifecycleConfiguration"]["Rules"]
        if "AbortIncompleteMultipartUpload" in rule
    ]
    assert len(aborting) == 1
    (rule,) = aborting
    assert rule["Status"] == "Enabled"
    # The whole bucket
    assert "Prefix" not in rule
    assert "TagFilters" not in rule
    assert 1 <= rule["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"] <= 7


def test_given_the_web_acl_log_then_no_credential_header_is_written(resources: Resources) -> None:
    (logging,) = _of_type(resources, "AWS::WAFv2::LoggingConfiguration").values()
    redacted = {field["SingleHeader"]["Name"] for field in logging["Properties"]["RedactedFields"]}
    # The SigV4 signature or Cognito token, and the session token of temporary credentials
    assert redacted == {"authorization", "x-amz-security-token"}


def test_given_the_web_acl_log_then_it_keeps_blocked_and_counted_requests_only(resources: Resources) -> None:
    (logging,) = _of_type(resources, "AWS::WAFv2::LoggingConfiguration").values()
    # Without a filter WAF logs every allowed request too (each caller's address, path and headers)
    assert logging["Properties"].get("LoggingFilter") == {
        "DefaultBehavior": "DROP",
        "Filters": [
            {
                "Behavior": "KEEP",
                "Requirement": "MEETS_ANY",
                "Conditions": [
                    {"ActionCondition": {"Action": "BLOCK"}},
                    {"ActionCondition": {"Action": "COUNT"}},
                    # A managed group's rule overridden to count (SizeRestrictions_BODY) logs as this
                    {"ActionCondition": {"Action": "EXCLUDED_AS_COUNT"}},
                ],
            }
        ],
    }
