"""Encryption and network exposure review: what the synthesised template lets an uploader or the network do.

Each check runs on the default app and on the app with every option (Cognito, alarm e-mails, NAT, ...).
"""

from __future__ import annotations

from typing import Any

import pytest

from infra.network import EGRESS_VPC_CIDR
from tests.infra.conftest import Resources, Synthesised

# CDK's placeholder for "no outbound rule" (a security group without any rule would get AWS's allow-all).
NO_OUTBOUND = [
    {
        "CidrIp": "255.255.255.255/32",
        "Description": "Disallow all traffic",
        "FromPort": 252,
        "IpProtocol": "icmp",
        "ToPort": 86,
    }
]


@pytest.fixture(scope="module", params=["default", "options"])
def variant(
    request: pytest.FixtureRequest, synthesised: Synthesised, synthesised_with_options: Synthesised
) -> Resources:
    chosen = synthesised if request.param == "default" else synthesised_with_options
    found: Resources = chosen.template_json["Resources"]
    return found


def _of_type(resources: Resources, kind: str) -> dict[str, dict[str, Any]]:
    return {name: r for name, r in resources.items() if r["Type"] == kind}


def test_given_any_bucket_when_an_upload_names_a_customer_provided_key_then_s3_refuses_it(
    variant: Resources,
) -> None:
    # An SSE-C object is encrypted with a key S3 does not keep: the batch function cannot read such a
    # file (HeadObject answers 400 without the key, the message ends in the dead-letter queue), and
    # credentials that may overwrite objects could re-encrypt them under a key only their holder has.
    buckets = _of_type(variant, "AWS::S3::Bucket")
    assert len(buckets) == 5
    for name, bucket in buckets.items():
        rules = bucket["Properties"]["BucketEncryption"]["ServerSideEncryptionConfiguration"]
        assert rules, name
        for rule in rules:
            assert rule.get("BlockedEncryptionTypes") == {"EncryptionType": ["SSE-C"]}, name


def test_given_an_interface_endpoint_then_its_group_admits_https_from_the_vpc_and_has_no_outbound_rule(
    variant: Resources,
) -> None:
    endpoints = {
        name: e["Properties"]
        for name, e in _of_type(variant, "AWS::EC2::VPCEndpoint").items()
        if e["Properties"]["VpcEndpointType"] == "Interface"
    }
    assert len(endpoints) == 6
    ((vpc, _),) = _of_type(variant, "AWS::EC2::VPC").items()
    vpc_blocks = [{"Fn::GetAtt": [vpc, "CidrBlock"]}, EGRESS_VPC_CIDR]
    for name, endpoint in endpoints.items():
        (group_ref,) = endpoint["SecurityGroupIds"]
        group = variant[group_ref["Fn::GetAtt"][0]]["Properties"]
        # Then nothing goes out (an endpoint answers connections; it never opens one) ...
        assert group["SecurityGroupEgress"] == NO_OUTBOUND, name
        # ... and only HTTPS comes in, from the VPC's own blocks (the primary one is a reference)
        ingress = group["SecurityGroupIngress"]
        assert ingress, name
        for rule in ingress:
            assert (rule["IpProtocol"], rule["FromPort"], rule["ToPort"]) == ("tcp", 443, 443), name
            assert rule["CidrIp"] in vpc_blocks, name


def test_given_every_security_group_then_none_admits_traffic_from_the_internet(variant: Resources) -> None:
    groups = _of_type(variant, "AWS::EC2::SecurityGroup")
    inline = [
        (name, rule) for name, g in groups.items() for rule in g["Properties"].get("SecurityGroupIngress", [])
    ]
    separate = [
        (name, r["Properties"]) for name, r in _of_type(variant, "AWS::EC2::SecurityGroupIngress").items()
    ]
    assert inline
    assert separate
    for name, rule in inline + separate:
        assert rule.get("CidrIp") != "0.0.0.0/0", name
        assert rule.get("CidrIpv6") != "::/0", name
    # And no subnet hands out public addresses (the NAT gateway's Elastic IP is the one public address)
    for name, subnet in _of_type(variant, "AWS::EC2::Subnet").items():
        assert subnet["Properties"].get("MapPublicIpOnLaunch", False) is False, name


def _denies(condition: dict[str, Any], headers: dict[str, str], key_arn: Any) -> bool:
    """IAM's reading of the statement's condition for a put with these headers (a negated operator
    holds when the key is absent)."""
    ((null_key, null_value),) = condition["Null"].items()
    ((not_equals_key, expected),) = condition["StringNotEquals"].items()
    assert (null_key, null_value, expected) == ("s3:x-amz-server-side-encryption", "false", key_arn)
    named = headers.get(not_equals_key)
    return null_key in headers and (named is None or named != "our-key")


def test_given_an_upload_naming_another_encryption_then_the_batch_and_loader_buckets_deny_it(
    variant: Resources,
) -> None:
    # Given the deny on the scoring bucket (all keys) and on the export bucket's datasets/ (the loader's)
    statements = {
        name: statement
        for name, policy in _of_type(variant, "AWS::S3::BucketPolicy").items()
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
        if statement.get("Sid") == "UploadsUseTheBucketsKey"
    }
    assert sorted(name.split("Policy")[0] for name in statements) == [
        "BatchScoringBucket",
        "DataExportBucket",
    ], sorted(statements)
    for name, statement in statements.items():
        assert (statement["Effect"], statement["Action"], statement["Principal"]) == (
            "Deny",
            "s3:PutObject",
            {"AWS": "*"},
        )
        suffix = statement["Resource"]["Fn::Join"][1][-1]
        assert suffix == ("/*" if name.startswith("BatchScoring") else "/datasets/*"), (name, suffix)
        condition = statement["Condition"]
        key_arn = condition["StringNotEquals"]["s3:x-amz-server-side-encryption-aws-kms-key-id"]
        # Then a put without encryption headers (the bucket's key applies) and one naming this key pass
        assert not _denies(condition, {}, key_arn)
        assert not _denies(
            condition,
            {
                "s3:x-amz-server-side-encryption": "aws:kms",
                "s3:x-amz-server-side-encryption-aws-kms-key-id": "our-key",
            },
            key_arn,
        )
        # And SSE-S3, or SSE-KMS under the AWS-managed aws/s3 key (no key id) or another key, is denied
        for headers in (
            {"s3:x-amz-server-side-encryption": "AES256"},
            {"s3:x-amz-server-side-encryption": "aws:kms"},
            {
                "s3:x-amz-server-side-encryption": "aws:kms",
                "s3:x-amz-server-side-encryption-aws-kms-key-id": "another-key",
            },
        ):
            assert _denies(condition, headers, key_arn), headers
