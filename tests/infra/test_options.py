"""The optional features (cdk.json context) as synthesised: NAT gateway, Cognito, alarm e-mails, SnapStart."""

from __future__ import annotations

import ipaddress
import json
from typing import Any

import pytest

from infra.network import EGRESS_VPC_CIDR
from tests.infra.conftest import Resources, Synthesised


def _of_type(resources: Resources, kind: str) -> dict[str, dict[str, Any]]:
    return {name: r for name, r in resources.items() if r["Type"] == kind}


def _subnet_cidrs(resources: Resources) -> dict[str, str]:
    return {name: r["Properties"]["CidrBlock"] for name, r in _of_type(resources, "AWS::EC2::Subnet").items()}


def _default_routes(resources: Resources) -> dict[str, dict[str, Any]]:
    """Route table logical id -> its 0.0.0.0/0 route's properties."""
    return {
        r["Properties"]["RouteTableId"]["Ref"]: r["Properties"]
        for r in _of_type(resources, "AWS::EC2::Route").values()
        if r["Properties"].get("DestinationCidrBlock") == "0.0.0.0/0"
    }


def _route_table_of(resources: Resources, subnet_id: str) -> str:
    (table,) = [
        str(r["Properties"]["RouteTableId"]["Ref"])
        for r in _of_type(resources, "AWS::EC2::SubnetRouteTableAssociation").values()
        if r["Properties"]["SubnetId"] == {"Ref": subnet_id}
    ]
    return table


@pytest.fixture(scope="module")
def options(synthesised_with_options: Synthesised) -> Resources:
    found: Resources = synthesised_with_options.template_json["Resources"]
    return found


# --- useNatGateway ---------------------------------------------------------------------------------


def test_given_the_nat_gateway_when_switched_on_then_the_isolated_subnets_keep_their_ids_and_cidrs(
    resources: Resources, options: Resources
) -> None:
    # Given the default (no NAT) and the NAT variant, then the isolated subnets are the same resources
    # with the same CIDRs (a changed CIDR replaces the subnet and the database's subnet group)
    isolated = {name: cidr for name, cidr in _subnet_cidrs(resources).items() if "isolated" in name}
    assert sorted(isolated.values()) == ["10.0.0.0/17", "10.0.128.0/17"]
    assert {name: cidr for name, cidr in _subnet_cidrs(options).items() if "isolated" in name} == isolated
    # And the VPC's primary block is unchanged; the new subnets sit in a second block, overlapping nothing
    (vpc,) = _of_type(options, "AWS::EC2::VPC").values()
    assert vpc["Properties"]["CidrBlock"] == "10.0.0.0/16"
    (block,) = _of_type(options, "AWS::EC2::VPCCidrBlock").values()
    assert block["Properties"]["CidrBlock"] == EGRESS_VPC_CIDR
    networks = [ipaddress.IPv4Network(cidr) for cidr in _subnet_cidrs(options).values()]
    assert len(networks) == 5  # 2 isolated, 1 public (NAT), 2 egress
    for index, network in enumerate(networks):
        assert network.subnet_of(ipaddress.IPv4Network("10.0.0.0/16")) or network.subnet_of(
            ipaddress.IPv4Network(EGRESS_VPC_CIDR)
        )
        assert not any(network.overlaps(other) for other in networks[index + 1 :]), network


def test_given_the_nat_gateway_then_the_task_subnets_route_through_it_and_isolated_ones_never_do(
    options: Resources, synthesised_with_options: Synthesised
) -> None:
    (nat_id,) = _of_type(options, "AWS::EC2::NatGateway")
    routes = _default_routes(options)
    egress = [name for name in _of_type(options, "AWS::EC2::Subnet") if name.startswith("NetworkEgress")]
    assert len(egress) == 2
    for subnet in egress:
        assert routes[_route_table_of(options, subnet)]["NatGatewayId"] == {"Ref": nat_id}
    for subnet in (name for name in _of_type(options, "AWS::EC2::Subnet") if "isolated" in name):
        assert _route_table_of(options, subnet) not in routes  # the database's subnets have no way out
    # And the loader is told to run in the egress subnets
    task_subnets = json.dumps(synthesised_with_options.template_json["Outputs"]["TaskSubnetIds"]["Value"])
    assert all(subnet in task_subnets for subnet in egress)
    assert "isolated" not in task_subnets
    # And their S3 traffic takes the gateway endpoint, their AWS API calls the interface endpoints
    (s3_gateway,) = [
        e["Properties"]
        for e in _of_type(options, "AWS::EC2::VPCEndpoint").values()
        if e["Properties"].get("VpcEndpointType") == "Gateway"
    ]
    gateway_tables = {ref["Ref"] for ref in s3_gateway["RouteTableIds"]}
    assert {_route_table_of(options, subnet) for subnet in egress} <= gateway_tables
    endpoint_groups = [
        options[group["Fn::GetAtt"][0]]
        for e in _of_type(options, "AWS::EC2::VPCEndpoint").values()
        if e["Properties"].get("VpcEndpointType") == "Interface"
        for group in e["Properties"]["SecurityGroupIds"]
    ]
    assert len(endpoint_groups) == 6
    for group in endpoint_groups:
        ingress = group["Properties"]["SecurityGroupIngress"]
        assert {"CidrIp": EGRESS_VPC_CIDR, "FromPort": 443, "ToPort": 443} in [
            {k: rule[k] for k in ("CidrIp", "FromPort", "ToPort")} for rule in ingress
        ]


# --- authMode=cognito -------------------------------------------------------------------------------


def test_given_cognito_then_clients_can_obtain_the_id_token_the_authoriser_checks(
    options: Resources, synthesised_with_options: Synthesised
) -> None:
    ((pool_id, pool),) = _of_type(options, "AWS::Cognito::UserPool").items()
    ((client_id, client),) = _of_type(options, "AWS::Cognito::UserPoolClient").items()
    properties = client["Properties"]
    assert properties["UserPoolId"] == {"Ref": pool_id}
    assert properties["GenerateSecret"] is False
    # SRP for apps, password auth for the AWS CLI, refresh tokens for scripts; no OAuth grants
    assert set(properties["ExplicitAuthFlows"]) == {
        "ALLOW_USER_SRP_AUTH",
        "ALLOW_USER_PASSWORD_AUTH",
        "ALLOW_REFRESH_TOKEN_AUTH",
    }
    assert properties["AllowedOAuthFlowsUserPoolClient"] is False
    # The authoriser has no scopes on its methods, so it checks ID tokens, which these flows issue
    (authorizer,) = _of_type(options, "AWS::ApiGateway::Authorizer").values()
    assert authorizer["Properties"]["Type"] == "COGNITO_USER_POOLS"
    assert all(
        "AuthorizationScopes" not in m["Properties"]
        for m in _of_type(options, "AWS::ApiGateway::Method").values()
    )
    # And the stack outputs what a client needs to sign in
    outputs = synthesised_with_options.template_json["Outputs"]
    assert outputs["UserPoolClientId"]["Value"] == {"Ref": client_id}
    assert outputs["UserPoolId"]["Value"] == {"Ref": pool_id}
    # And a forgotten password is recovered by e-mail only (the pool sends no SMS)
    assert pool["Properties"]["AccountRecoverySetting"] == {
        "RecoveryMechanisms": [{"Name": "verified_email", "Priority": 1}]
    }


def test_given_iam_auth_then_there_is_no_user_pool_client_output(synthesised: Synthesised) -> None:
    assert not {"UserPoolId", "UserPoolClientId"} & set(synthesised.template_json["Outputs"])


# --- alarmEmail -------------------------------------------------------------------------------------


def test_given_alarm_emails_then_cloudwatch_may_publish_to_the_encrypted_topic(options: Resources) -> None:
    ((topic_id, topic),) = _of_type(options, "AWS::SNS::Topic").items()
    # Encrypted with a key of this stack (CloudWatch cannot use the AWS-managed alias/aws/sns)
    key_id = topic["Properties"]["KmsMasterKeyId"]["Fn::GetAtt"][0]
    key = options[key_id]
    assert key["Type"] == "AWS::KMS::Key"
    assert key["Properties"]["EnableKeyRotation"] is True
    from_this_account = {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}}
    cloudwatch = {"Service": "cloudwatch.amazonaws.com"}
    key_grants = [s for s in key["Properties"]["KeyPolicy"]["Statement"] if s["Principal"] == cloudwatch]
    assert [(s["Effect"], sorted(s["Action"]), s["Condition"]) for s in key_grants] == [
        ("Allow", ["kms:Decrypt", "kms:GenerateDataKey*"], from_this_account)
    ]
    # And the topic policy lets CloudWatch publish, next to the TLS-only denial
    (policy,) = [
        p
        for p in _of_type(options, "AWS::SNS::TopicPolicy").values()
        if p["Properties"]["Topics"] == [{"Ref": topic_id}]
    ]
    statements = policy["Properties"]["PolicyDocument"]["Statement"]
    assert [
        (s["Effect"], s["Action"], s["Condition"]) for s in statements if s.get("Principal") == cloudwatch
    ] == [("Allow", "sns:Publish", from_this_account)]
    assert any(
        s["Effect"] == "Deny" and s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
        for s in statements
    )
    # And every alarm, the canary's included, notifies the topic
    alarms = _of_type(options, "AWS::CloudWatch::Alarm")
    assert alarms
    assert all({"Ref": topic_id} in a["Properties"].get("AlarmActions", []) for a in alarms.values())


def test_given_alarm_emails_when_one_cannot_be_delivered_then_it_is_kept_in_a_queue(
    options: Resources,
) -> None:
    (subscription,) = [s["Properties"] for s in _of_type(options, "AWS::SNS::Subscription").values()]
    assert subscription["Protocol"] == "email"
    queue_id = subscription["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0]
    queue = options[queue_id]
    assert queue["Type"] == "AWS::SQS::Queue"
    assert queue["Properties"]["SqsManagedSseEnabled"] is True
    assert queue["Properties"]["MessageRetentionPeriod"] == 14 * 24 * 3600
    # And SNS may send to it for the alarm topic only
    (policy,) = [
        p["Properties"]["PolicyDocument"]
        for p in _of_type(options, "AWS::SQS::QueuePolicy").values()
        if {"Ref": queue_id} in p["Properties"]["Queues"]
    ]
    (send,) = [s for s in policy["Statement"] if s["Effect"] == "Allow"]
    assert send["Principal"] == {"Service": "sns.amazonaws.com"}
    assert "aws:SourceArn" in send["Condition"]["ArnEquals"]


# --- apiSnapStart ----------------------------------------------------------------------------------


def _snap_start_by_handler(resources: Resources) -> dict[str, object]:
    """Each scoring function's handler -> its SnapStart setting (None when absent)."""
    return {
        r["Properties"]["Handler"]: r["Properties"].get("SnapStart")
        for r in _of_type(resources, "AWS::Lambda::Function").values()
        if r["Properties"].get("Handler", "").startswith("lambdas.")
    }


def test_given_the_defaults_then_no_function_uses_snap_start(resources: Resources) -> None:
    assert _snap_start_by_handler(resources) == {
        "lambdas.api.handler.handler": None,
        "lambdas.batch.handler.handler": None,
        "lambdas.rollout_check.handler.handler": None,
        "lambdas.snapshot_sweeper.handler.handler": None,
    }


def test_given_snap_start_then_the_api_versions_resume_from_a_snapshot_and_batch_is_unchanged(
    options: Resources,
) -> None:
    # Given apiSnapStart, then the API function's published versions (what the live alias serves) are
    # snapshotted; the batch function, invoked unaliased ($LATEST) by SQS, could not use it
    assert _snap_start_by_handler(options) == {
        "lambdas.api.handler.handler": {"ApplyOn": "PublishedVersions"},
        "lambdas.batch.handler.handler": None,
        "lambdas.rollout_check.handler.handler": None,
        "lambdas.snapshot_sweeper.handler.handler": None,
    }
    # And Lambda's precondition holds: nothing keeps provisioned environments behind the alias
    (alias,) = _of_type(options, "AWS::Lambda::Alias").values()
    assert "ProvisionedConcurrencyConfig" not in alias["Properties"]
