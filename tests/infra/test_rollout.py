"""API rollout: CodeDeploy moves the `live` alias gradually and rolls back on failure or alarm."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk import aws_lambda as lambda_
from aws_cdk.assertions import Template

from infra.config import API_ROLLOUTS, ApiRollout, AppConfig
from infra.rollout import DEPLOYMENT_CONFIGS
from infra.rollout import ApiRollout as ApiRolloutConstruct
from tests.infra.conftest import Resources, synthesise

_API_HANDLER = "lambdas.api.handler.handler"
_DEPLOYMENT_CONFIG_NAMES: dict[ApiRollout, str] = {
    "canary": "CodeDeployDefault.LambdaCanary10Percent5Minutes",
    "linear": "CodeDeployDefault.LambdaLinear10PercentEvery1Minute",
    "all_at_once": "CodeDeployDefault.LambdaAllAtOnce",
}


def _one(resources: Resources, kind: str) -> tuple[str, dict[str, Any]]:
    found = [(name, r) for name, r in resources.items() if r["Type"] == kind]
    assert len(found) == 1, (kind, [name for name, _ in found])
    return found[0]


def _deployment_group(resources: Resources) -> dict[str, Any]:
    properties: dict[str, Any] = _one(resources, "AWS::CodeDeploy::DeploymentGroup")[1]["Properties"]
    return properties


def _rollback_alarms(resources: Resources) -> list[dict[str, Any]]:
    names = [alarm["Name"]["Ref"] for alarm in _deployment_group(resources)["AlarmConfiguration"]["Alarms"]]
    return [resources[name]["Properties"] for name in names]


def _api_function(resources: Resources) -> str:
    return next(
        name
        for name, r in resources.items()
        if r["Type"] == "AWS::Lambda::Function" and r["Properties"]["Handler"] == _API_HANDLER
    )


def test_given_the_default_app_when_synthesised_then_a_canary_deployment_group_moves_the_live_alias(
    resources: Resources,
) -> None:
    alias_name, alias = _one(resources, "AWS::Lambda::Alias")
    assert alias["Properties"]["Name"] == "live"
    assert alias["Properties"]["FunctionName"] == {"Ref": _api_function(resources)}
    group = _deployment_group(resources)
    assert group["DeploymentConfigName"] == _DEPLOYMENT_CONFIG_NAMES["canary"]
    assert group["DeploymentStyle"] == {
        "DeploymentOption": "WITH_TRAFFIC_CONTROL",
        "DeploymentType": "BLUE_GREEN",
    }
    assert group["DeploymentGroupName"] == "live"
    application_name, application = _one(resources, "AWS::CodeDeploy::Application")
    assert application["Properties"]["ApplicationName"] == "loan-scoring-dev-api"
    assert application["Properties"]["ComputePlatform"] == "Lambda"
    # The alias's update policy is what hands a version change to this deployment group.
    assert alias["UpdatePolicy"] == {
        "CodeDeployLambdaAliasUpdate": {
            "ApplicationName": {"Ref": application_name},
            "DeploymentGroupName": {"Ref": _one(resources, "AWS::CodeDeploy::DeploymentGroup")[0]},
            # The pre-traffic check (lambdas/rollout_check) runs before any traffic moves.
            "BeforeAllowTrafficHook": {"Ref": _rollout_check_function(resources)},
        }
    }
    assert alias_name.startswith("ServingLive")


def _rollout_check_function(resources: Resources) -> str:
    (name,) = [
        name
        for name, resource in resources.items()
        if resource["Type"] == "AWS::Lambda::Function"
        and resource["Properties"].get("Handler") == "lambdas.rollout_check.handler.handler"
    ]
    return name


def test_given_the_default_app_when_synthesised_then_a_failed_or_alarmed_rollout_rolls_back(
    resources: Resources,
) -> None:
    group = _deployment_group(resources)
    assert group["AutoRollbackConfiguration"]["Enabled"] is True
    assert {"DEPLOYMENT_FAILURE", "DEPLOYMENT_STOP_ON_ALARM"} <= set(
        group["AutoRollbackConfiguration"]["Events"]
    )
    assert group["AlarmConfiguration"]["Enabled"] is True
    assert group["AlarmConfiguration"].get("IgnorePollAlarmFailure", False) is False
    assert len(_rollback_alarms(resources)) == 2


def test_given_the_rollback_alarms_when_synthesised_then_one_watches_the_live_alias_errors(
    resources: Resources,
) -> None:
    function = _api_function(resources)
    errors = [a for a in _rollback_alarms(resources) if a["MetricName"] == "Errors"]
    assert len(errors) == 1
    alarm = errors[0]
    assert alarm["Namespace"] == "AWS/Lambda"
    assert {"Name": "FunctionName", "Value": {"Ref": function}} in alarm["Dimensions"]
    # The alias's own metric (Resource = "<function>:live"), not the function's unqualified one.
    assert {
        "Name": "Resource",
        "Value": {"Fn::Join": ["", [{"Ref": function}, ":live"]]},
    } in alarm["Dimensions"]
    assert (alarm["Statistic"], alarm["Period"], alarm["Threshold"]) == ("Sum", 60, 0)
    assert alarm["ComparisonOperator"] == "GreaterThanThreshold"
    assert alarm["TreatMissingData"] == "notBreaching"


def test_given_the_rollback_alarms_when_synthesised_then_one_watches_the_api_faults_metric(
    resources: Resources,
) -> None:
    faults = [a for a in _rollback_alarms(resources) if a["MetricName"] == "Faults"]
    assert len(faults) == 1
    alarm = faults[0]
    # Where lambdas/api/app.py's fault handler emits it (Powertools: namespace + service dimension).
    # (the environment's own namespace: a second stack in the account must not roll this one back)
    assert alarm["Namespace"] == "LoanScoring/dev"
    assert alarm["Dimensions"] == [{"Name": "service", "Value": "loan-scoring-api"}]
    assert (alarm["Statistic"], alarm["Period"], alarm["Threshold"]) == ("Sum", 60, 0)
    assert alarm["ComparisonOperator"] == "GreaterThanThreshold"
    assert alarm["TreatMissingData"] == "notBreaching"


def test_every_allowed_api_rollout_has_a_deployment_config() -> None:
    assert set(DEPLOYMENT_CONFIGS) == set(API_ROLLOUTS) == set(_DEPLOYMENT_CONFIG_NAMES)


@pytest.mark.parametrize("rollout", API_ROLLOUTS)
def test_given_an_api_rollout_when_the_construct_is_synthesised_then_the_group_uses_its_config(
    rollout: ApiRollout,
) -> None:
    # A small stack with just an aliased function: cheaper than synthesising the whole app again.
    stack = cdk.Stack(cdk.App())
    function = lambda_.Function(
        stack,
        "Function",
        runtime=lambda_.Runtime.PYTHON_3_12,
        handler="index.handler",
        code=lambda_.Code.from_inline("def handler(event, context):\n    return None\n"),
    )
    alias = lambda_.Alias(stack, "Live", alias_name="live", version=function.current_version)
    ApiRolloutConstruct(stack, "Rollout", config=AppConfig(api_rollout=rollout), alias=alias)
    Template.from_stack(stack).has_resource_properties(
        "AWS::CodeDeploy::DeploymentGroup", {"DeploymentConfigName": _DEPLOYMENT_CONFIG_NAMES[rollout]}
    )


def test_given_no_provisioned_concurrency_then_the_live_alias_is_on_demand(resources: Resources) -> None:
    _, alias = _one(resources, "AWS::Lambda::Alias")
    assert "ProvisionedConcurrencyConfig" not in alias["Properties"]


def test_given_provisioned_concurrency_when_synthesised_then_the_live_alias_keeps_that_many_warm(
    tmp_path: Path,
) -> None:
    variant = synthesise(tmp_path, apiProvisionedConcurrency=3)
    _, alias = _one(variant.template_json["Resources"], "AWS::Lambda::Alias")
    assert alias["Properties"]["Name"] == "live"
    assert alias["Properties"]["ProvisionedConcurrencyConfig"] == {"ProvisionedConcurrentExecutions": 3}
