"""Deploy review: what synthesises cleanly but would fail on the first ``cdk deploy``, or deploy and then
not work. Each test reads a property of the synthesised template (and, where the failure is in CDK's own
helper code, that code as the cloud assembly ships it).

- CDK's log-retention helper sets the retention of the database's exported log groups
  (``/aws/rds/instance/<id>/<log>``). Its handler first calls ``logs:CreateLogGroup`` on each group (it
  only tolerates "already exists"); the scoped role it was given allowed that on ``/aws/lambda/*`` only,
  so IAM refused it and the ``Custom::LogRetention`` resources failed the first deploy.
- The secret-rotation function was pointed at ``https://<vpce id>.secretsmanager.<region>.<suffix>``,
  a host name the endpoint's DNS does not document (endpoint-specific names end in ``vpce.amazonaws.com``
  and carry a suffix after the id). With private DNS on the endpoint, the standard host name resolves
  to it (CDK's RotationSingleUserOptions.endpoint documentation), so that is what the function gets.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.infra.conftest import Synthesised, role_statements

RDS_LOG_GROUP_PREFIX = "/aws/rds/instance/"


@pytest.fixture(params=["synthesised", "synthesised_with_options"])
def any_synthesis(request: pytest.FixtureRequest) -> Synthesised:
    """The default app and the app with every option (NAT gateway, multi-AZ, snapshot removal, ...)."""
    found: Synthesised = request.getfixturevalue(request.param)
    return found


def _render(value: Any) -> str:
    """A CloudFormation string expression as text: ``Ref X`` -> ``${X}``, ``GetAtt X.Arn`` -> ``${X.Arn}``."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and len(value) == 1:
        ((function, argument),) = value.items()
        if function == "Ref":
            return "${" + str(argument) + "}"
        if function == "Fn::GetAtt":
            return "${" + ".".join(argument) + "}"
        if function == "Fn::Join":
            separator, parts = argument
            return str(separator).join(_render(part) for part in parts)
    raise AssertionError(f"cannot render {json.dumps(value)}")


def _iam_matches(pattern: str, value: str) -> bool:
    """IAM resource matching: ``*`` any run of characters, ``?`` one character."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value) is not None


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _log_group_arn(name: str) -> str:
    return "arn:${AWS::Partition}:logs:${AWS::Region}:${AWS::AccountId}:log-group:" + name


def _rds_log_retentions(resources: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for resource in resources.values():
        if resource["Type"] != "Custom::LogRetention":
            continue
        name = _render(resource["Properties"]["LogGroupName"])
        if name.startswith(RDS_LOG_GROUP_PREFIX):
            yield name, resource


def _allows(statements: list[dict[str, Any]], action: str, resource: str) -> bool:
    allowed = denied = False
    for statement in statements:
        assert "NotAction" not in statement, statement
        assert "NotResource" not in statement, statement
        actions = [a.lower() for a in _as_list(statement["Action"])]
        if not any(_iam_matches(pattern, action.lower()) for pattern in actions):
            continue
        if not any(_iam_matches(_render(r), resource) for r in _as_list(statement["Resource"])):
            continue
        # Nothing here is conditional: a condition would need evaluating, not ignoring.
        assert "Condition" not in statement, statement
        allowed |= statement["Effect"] == "Allow"
        denied |= statement["Effect"] == "Deny"
    return allowed and not denied


def _helper_code(synthesised: Synthesised, function: dict[str, Any]) -> str:
    """The handler source CDK ships for a helper function (its asset folder in the cloud assembly)."""
    asset_hash = function["Properties"]["Code"]["S3Key"].removesuffix(".zip")
    folder = Path(synthesised.template_path).parent / f"asset.{asset_hash}"
    return "".join(path.read_text() for path in sorted(folder.glob("*.js")))


def test_given_the_database_log_retention_then_its_helper_may_create_the_exported_log_groups(
    any_synthesis: Synthesised,
) -> None:
    resources = any_synthesis.template_json["Resources"]
    retentions = list(_rds_log_retentions(resources))
    # Given the retention of every log the database exports (audit, error, slowquery)
    assert {name.rsplit("/", 1)[1] for name, _ in retentions} == {"audit", "error", "slowquery"}
    for name, retention in retentions:
        helper_id = retention["Properties"]["ServiceToken"]["Fn::GetAtt"][0]
        helper = resources[helper_id]
        # CDK's handler calls CreateLogGroup on the target group before setting its retention, and fails
        # on anything but "already exists" (RDS creates the group only once it first exports a log line)
        assert "CreateLogGroupCommand" in _helper_code(any_synthesis, helper)
        role = helper["Properties"]["Role"]["Fn::GetAtt"][0]
        statements = role_statements(resources, role)
        # Then the helper's role may create that group and set its retention
        assert _allows(statements, "logs:CreateLogGroup", _log_group_arn(name)), name
        assert _allows(statements, "logs:PutRetentionPolicy", _log_group_arn(name)), name
        # And the policy is attached before the helper runs (the function waits for it)
        policies = {
            logical_id
            for logical_id, r in resources.items()
            if r["Type"] == "AWS::IAM::Policy" and {"Ref": role} in r["Properties"]["Roles"]
        }
        assert policies <= set(helper.get("DependsOn", [])), helper_id


def test_given_the_database_log_retention_helper_then_it_may_create_no_group_outside_the_databases(
    synthesised: Synthesised,
) -> None:
    resources = synthesised.template_json["Resources"]
    ((name, retention), *_) = list(_rds_log_retentions(resources))
    helper = resources[retention["Properties"]["ServiceToken"]["Fn::GetAtt"][0]]
    statements = role_statements(resources, helper["Properties"]["Role"]["Fn::GetAtt"][0])
    database_prefix = name.rsplit("/", 1)[0]
    # Then not another database's export groups, nor the stack's own log groups (the audit trail's
    # sources are named after the stack, not /aws/rds/...)
    assert not _allows(statements, "logs:CreateLogGroup", _log_group_arn("/aws/rds/instance/other-db/audit"))
    assert not _allows(statements, "logs:CreateLogGroup", _log_group_arn("LoanScoring-dev-ApiLogs-Ab12"))
    # And writing into the database's groups is not among what it gained
    assert not _allows(statements, "logs:PutLogEvents", _log_group_arn(database_prefix + "/audit:*"))


def test_given_the_helpers_grant_removed_then_the_check_sees_the_deploy_would_fail(
    synthesised: Synthesised,
) -> None:
    resources = json.loads(json.dumps(synthesised.template_json["Resources"]))
    ((name, retention), *_) = list(_rds_log_retentions(resources))
    role = resources[retention["Properties"]["ServiceToken"]["Fn::GetAtt"][0]]["Properties"]["Role"]
    statements = role_statements(resources, role["Fn::GetAtt"][0])
    assert _allows(statements, "logs:CreateLogGroup", _log_group_arn(name))
    # When the statements naming the database's groups are taken out (the role as it was)
    for statement in statements:
        resources_named = [r for r in _as_list(statement["Resource"]) if RDS_LOG_GROUP_PREFIX in _render(r)]
        if resources_named:
            statement["Resource"] = [r for r in _as_list(statement["Resource"]) if r not in resources_named]
    # Then the check says CreateLogGroup is refused
    assert not _allows(statements, "logs:CreateLogGroup", _log_group_arn(name))


def test_given_secret_rotation_then_the_function_calls_secrets_manager_by_its_standard_host_name(
    any_synthesis: Synthesised,
) -> None:
    resources = any_synthesis.template_json["Resources"]
    (rotation,) = [r for r in resources.values() if r["Type"] == "AWS::Serverless::Application"]
    endpoint = _render(rotation["Properties"]["Parameters"]["endpoint"])
    # Then the rotation function (isolated subnets, no route out) calls the standard regional host name
    assert endpoint == "https://secretsmanager.${AWS::Region}.${AWS::URLSuffix}"
    # And the VPC's Secrets Manager endpoint answers that name (private DNS), in the function's subnets
    (interface,) = [
        r["Properties"]
        for r in resources.values()
        if r["Type"] == "AWS::EC2::VPCEndpoint"
        and _render(r["Properties"]["ServiceName"]).endswith(".secretsmanager")
    ]
    assert interface["PrivateDnsEnabled"] is True
    function_subnets = _render(rotation["Properties"]["Parameters"]["vpcSubnetIds"]).split(",")
    assert {_render(s) for s in interface["SubnetIds"]} == set(function_subnets)
