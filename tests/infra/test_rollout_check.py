"""The API rollout's pre-traffic check: CodeDeploy's BeforeAllowTraffic hook invokes the version being
deployed before any traffic moves; its role may invoke only the scoring function and report only to
this deployment group; it is packaged without wheels or model and logs to an encrypted log group."""

from __future__ import annotations

import fnmatch
import json
from pathlib import Path
from typing import Any

import pytest

from infra.config import AppConfig
from infra.rollout import ROLLOUT_CHECK_HANDLER, expected_model_version
from lambdas.rollout_check.hook import (
    EXPECTED_MODEL_VERSION_ENV,
    TARGET_ENV,
    TARGET_TIMEOUT_ENV,
    required_timeout_seconds,
)
from tests.infra.conftest import (
    REGISTERED_MODEL,
    REPO_ROOT,
    Resources,
    Synthesised,
    check_tool_package,
    role_statements,
)

_API_HANDLER = "lambdas.api.handler.handler"
_BATCH_HANDLER = "lambdas.batch.handler.handler"
_REGION, _ACCOUNT = "us-east-1", "123456789012"
_CHECK_PATH = "/Serving/RolloutCheck/"
_HOOK_ACTIONS = {
    "lambda:InvokeFunction",
    "codedeploy:PutLifecycleEventHookExecutionStatus",
    "xray:PutTraceSegments",
    "xray:PutTelemetryRecords",
    # Its own log group only (tests/infra/test_log_permissions.py)
    "logs:CreateLogStream",
    "logs:PutLogEvents",
}


def _function(resources: Resources, handler: str) -> tuple[str, dict[str, Any]]:
    (found,) = [
        (name, r)
        for name, r in resources.items()
        if r["Type"] == "AWS::Lambda::Function" and r["Properties"].get("Handler") == handler
    ]
    return found


def _one(resources: Resources, kind: str) -> tuple[str, dict[str, Any]]:
    (found,) = [(name, r) for name, r in resources.items() if r["Type"] == kind]
    return found


def _role(function: dict[str, Any]) -> str:
    role: str = function["Properties"]["Role"]["Fn::GetAtt"][0]
    return role


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _resolve(resources: Resources, value: Any) -> str:
    """A policy resource as the ARN it names at deploy time (functions named by their logical ids)."""
    if isinstance(value, str):
        return value
    if "Fn::Join" in value:
        separator, parts = value["Fn::Join"]
        return str(separator).join(_resolve(resources, part) for part in parts)
    if "Ref" in value:
        name = value["Ref"]
        pseudo = {"AWS::Partition": "aws", "AWS::Region": _REGION, "AWS::AccountId": _ACCOUNT}
        if name in pseudo:
            return pseudo[name]
        resource = resources[name]
        named_by = {
            "AWS::CodeDeploy::Application": "ApplicationName",
            "AWS::CodeDeploy::DeploymentGroup": "DeploymentGroupName",
        }
        assert resource["Type"] in named_by, value
        return str(resource["Properties"][named_by[resource["Type"]]])
    if "Fn::GetAtt" in value:
        logical_id, attribute = value["Fn::GetAtt"]
        assert (resources[logical_id]["Type"], attribute) == ("AWS::Lambda::Function", "Arn"), value
        return _function_arn(logical_id)
    raise AssertionError(f"unexpected expression {value}")


def _function_arn(logical_id: str) -> str:
    return f"arn:aws:lambda:{_REGION}:{_ACCOUNT}:function:{logical_id}"


def _allowed(resources: Resources, role: str, action: str, arn: str) -> bool:
    """Whether the role's own policies allow ``action`` on ``arn`` (IAM wildcards; none deny)."""
    statements = role_statements(resources, role)
    assert all(s["Effect"] == "Allow" and "Condition" not in s for s in statements)
    return any(
        any(fnmatch.fnmatchcase(action, pattern) for pattern in _as_list(s["Action"]))
        and any(fnmatch.fnmatchcase(arn, _resolve(resources, r)) for r in _as_list(s["Resource"]))
        for s in statements
    )


def _deployment_group_arn(group: str = "live", application: str = "loan-scoring-dev-api") -> str:
    return f"arn:aws:codedeploy:{_REGION}:{_ACCOUNT}:deploymentgroup:{application}/{group}"


# ---- wiring -----------------------------------------------------------------------------------------


def test_given_the_default_app_then_the_live_alias_runs_the_check_before_allowing_traffic(
    resources: Resources,
) -> None:
    hook, _ = _function(resources, ROLLOUT_CHECK_HANDLER)
    _, alias = _one(resources, "AWS::Lambda::Alias")
    group, _ = _one(resources, "AWS::CodeDeploy::DeploymentGroup")
    update = alias["UpdatePolicy"]["CodeDeployLambdaAliasUpdate"]
    assert update["BeforeAllowTrafficHook"] == {"Ref": hook}
    assert update["DeploymentGroupName"] == {"Ref": group}
    assert "AfterAllowTrafficHook" not in update
    # The alias moves only once the hook and CodeDeploy's grant to invoke it exist (first deploy too)
    codedeploy_role = resources[group]["Properties"]["ServiceRoleArn"]["Fn::GetAtt"][0]
    codedeploy_policies = [
        name
        for name, r in resources.items()
        if r["Type"] == "AWS::IAM::Policy" and {"Ref": codedeploy_role} in r["Properties"]["Roles"]
    ]
    assert codedeploy_policies
    assert {hook, *codedeploy_policies} <= set(alias["DependsOn"])


def test_given_the_default_app_then_the_check_targets_the_version_the_alias_moves_to(
    resources: Resources,
) -> None:
    _, hook = _function(resources, ROLLOUT_CHECK_HANDLER)
    _, api = _function(resources, _API_HANDLER)
    _, alias = _one(resources, "AWS::Lambda::Alias")
    variables = hook["Properties"]["Environment"]["Variables"]
    # The version resource the alias points at (its Ref is the version's ARN): new with every publish
    version = alias["Properties"]["FunctionVersion"]["Fn::GetAtt"][0]
    assert resources[version]["Type"] == "AWS::Lambda::Version"
    assert variables[TARGET_ENV] == {"Ref": version}
    card = json.loads((REPO_ROOT / AppConfig().model_bundle_dir / "model_card.json").read_text())
    assert variables[EXPECTED_MODEL_VERSION_ENV] == card["model_version"]
    api_timeout = api["Properties"]["Timeout"]
    assert variables[TARGET_TIMEOUT_ENV] == str(api_timeout)
    # Long enough for both requests at the API's timeout and the report: never times out unreported
    assert hook["Properties"]["Timeout"] == required_timeout_seconds(api_timeout)


def test_given_a_registered_model_version_then_the_check_expects_that_version(
    synthesised_with_registry_model: Synthesised,
) -> None:
    resources: Resources = synthesised_with_registry_model.template_json["Resources"]
    _, hook = _function(resources, ROLLOUT_CHECK_HANDLER)
    variables = hook["Properties"]["Environment"]["Variables"]
    assert variables[EXPECTED_MODEL_VERSION_ENV] == REGISTERED_MODEL.split("/")[1]


def test_given_a_packaged_bundle_without_a_readable_card_then_no_version_is_expected() -> None:
    missing = AppConfig(model_bundle_dir="build/no-such-bundle-for-rollout-check")
    assert expected_model_version(missing) is None
    registered = AppConfig(model_bundle_version="m/m-0123")
    assert expected_model_version(registered) == "m-0123"


def test_given_every_option_then_the_check_is_still_the_pre_traffic_hook(
    synthesised_with_options: Synthesised,
) -> None:
    resources: Resources = synthesised_with_options.template_json["Resources"]
    hook, _ = _function(resources, ROLLOUT_CHECK_HANDLER)
    _, alias = _one(resources, "AWS::Lambda::Alias")
    assert alias["UpdatePolicy"]["CodeDeployLambdaAliasUpdate"]["BeforeAllowTrafficHook"] == {"Ref": hook}


# ---- least privilege --------------------------------------------------------------------------------


def test_given_the_checks_role_then_it_may_invoke_only_the_scoring_functions_versions(
    resources: Resources,
) -> None:
    hook_id, hook = _function(resources, ROLLOUT_CHECK_HANDLER)
    api_id, _ = _function(resources, _API_HANDLER)
    batch_id, _ = _function(resources, _BATCH_HANDLER)
    role = _role(hook)
    api = _function_arn(api_id)
    for allowed in (f"{api}:7", f"{api}:123", f"{api}:live"):
        assert _allowed(resources, role, "lambda:InvokeFunction", allowed), allowed
    for refused in (
        api,
        f"{_function_arn(batch_id)}:1",
        _function_arn(batch_id),
        f"{_function_arn(hook_id)}:1",
    ):
        assert not _allowed(resources, role, "lambda:InvokeFunction", refused), refused
    assert not _allowed(resources, role, "lambda:UpdateAlias", f"{api}:live")


def test_given_the_checks_role_then_it_reports_only_to_this_deployment_group(resources: Resources) -> None:
    _, hook = _function(resources, ROLLOUT_CHECK_HANDLER)
    role, action = _role(hook), "codedeploy:PutLifecycleEventHookExecutionStatus"
    assert _allowed(resources, role, action, _deployment_group_arn())
    assert not _allowed(resources, role, action, _deployment_group_arn(group="other"))
    assert not _allowed(resources, role, action, _deployment_group_arn(application="another-app"))


def test_given_the_checks_role_then_it_holds_nothing_beyond_its_job(resources: Resources) -> None:
    _, hook = _function(resources, ROLLOUT_CHECK_HANDLER)
    role = _role(hook)
    actions = {action for s in role_statements(resources, role) for action in _as_list(s["Action"])}
    assert actions == _HOOK_ACTIONS
    # The one wildcard resource is X-Ray's, which has no resource-level permissions
    for statement in role_statements(resources, role):
        if "*" in _as_list(statement["Resource"]):
            assert set(_as_list(statement["Action"])) <= {"xray:PutTraceSegments", "xray:PutTelemetryRecords"}
    # No AWS-managed policy (AWSLambdaBasicExecutionRole would let it write the API's audit records)
    assert "ManagedPolicyArns" not in resources[role]["Properties"]
    assert resources[role]["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {
        "Service": "lambda.amazonaws.com"
    }


def test_given_codedeploys_role_then_it_may_invoke_the_check(resources: Resources) -> None:
    hook_id, _ = _function(resources, ROLLOUT_CHECK_HANDLER)
    api_id, _ = _function(resources, _API_HANDLER)
    group, _ = _one(resources, "AWS::CodeDeploy::DeploymentGroup")
    codedeploy_role = resources[group]["Properties"]["ServiceRoleArn"]["Fn::GetAtt"][0]
    assert _allowed(resources, codedeploy_role, "lambda:InvokeFunction", _function_arn(hook_id))
    # Its own grants name only the check; AWS's managed Lambda policy covers the alias shift
    assert not _allowed(resources, codedeploy_role, "lambda:InvokeFunction", _function_arn(api_id))


# ---- logs, packaging, cdk-nag -----------------------------------------------------------------------


def test_given_the_check_then_it_logs_json_to_a_group_encrypted_with_the_stacks_logs_key(
    resources: Resources,
) -> None:
    _, hook = _function(resources, ROLLOUT_CHECK_HANDLER)
    _, api = _function(resources, _API_HANDLER)
    logging_config = hook["Properties"]["LoggingConfig"]
    assert (logging_config["LogFormat"], logging_config["ApplicationLogLevel"]) == ("JSON", "INFO")
    group = resources[logging_config["LogGroup"]["Ref"]]
    api_group = resources[api["Properties"]["LoggingConfig"]["LogGroup"]["Ref"]]
    assert group["Properties"]["KmsKeyId"] == api_group["Properties"]["KmsKeyId"]
    assert group["Properties"]["RetentionInDays"] == api_group["Properties"]["RetentionInDays"]


def test_given_the_stack_outputs_then_they_name_the_checks_log_group(synthesised: Synthesised) -> None:
    resources: Resources = synthesised.template_json["Resources"]
    _, hook = _function(resources, ROLLOUT_CHECK_HANDLER)
    output = synthesised.template_json["Outputs"]["RolloutCheckLogGroupName"]
    assert output["Value"] == hook["Properties"]["LoggingConfig"]["LogGroup"]


def _check_acknowledgements(synthesised: Synthesised) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for report in synthesised.validation_report["pluginReports"]:
        for violation in report.get("violations", []):
            paths = [c["constructPath"] for c in violation["violatingConstructs"]]
            assert not any(_CHECK_PATH in path for path in paths), violation["ruleName"]
        for acknowledged in report.get("suppressedViolations", []):
            paths = [c["constructPath"] for c in acknowledged["violatingConstructs"]]
            if any(_CHECK_PATH in path for path in paths):
                assert len(acknowledged["reason"].strip()) >= 80, acknowledged["ruleName"]
                found.setdefault(report["pluginName"], set()).add(acknowledged["ruleName"])
    return found


def test_given_the_check_then_cdk_nag_finds_nothing_unacknowledged_and_each_acknowledgement_is_known(
    synthesised: Synthesised,
) -> None:
    # A new finding on the check is a decision to write down (infra/rollout.py), not a side effect
    api_id, _ = _function(synthesised.template_json["Resources"], _API_HANDLER)
    assert _check_acknowledgements(synthesised) == {
        "AwsSolutions": {
            "AwsSolutions-L1",
            "AwsSolutions-IAM5[Resource::*]",
            f"AwsSolutions-IAM5[Resource::<{api_id}.Arn>:*]",
        },
        "Serverless": {"Serverless-LambdaDLQ", "Serverless-LambdaLatestVersion"},
        "NIST.800.53.R5": {
            "NIST.800.53.R5-IAMNoInlinePolicy",
            "NIST.800.53.R5-LambdaConcurrency",
            "NIST.800.53.R5-LambdaDLQ",
            "NIST.800.53.R5-LambdaInsideVPC",
        },
    }


def test_given_the_check_package_then_it_holds_its_own_code_only_and_imports_on_a_bare_python(
    tmp_path: Path,
) -> None:
    check_tool_package("rollout_check", ["__init__", "checks", "handler", "hook", "marker"], "hook", tmp_path)


@pytest.mark.parametrize("handler", [_API_HANDLER, _BATCH_HANDLER])
def test_given_the_scoring_functions_then_the_check_changed_nothing_of_theirs(
    resources: Resources, handler: str
) -> None:
    # The scoring functions keep their own roles: the check's grant is on the check's role only
    _, function = _function(resources, handler)
    statements = json.dumps(role_statements(resources, _role(function)))
    assert "codedeploy:" not in statements
    assert "lambda:InvokeFunction" not in statements
