"""The API's web ACL (infra/firewall.py) as synthesised: rules, their order, the stage it guards, its log."""

from __future__ import annotations

import json
from typing import Any

from infra.config import AppConfig
from infra.firewall import MANAGED_RULE_GROUPS, RATE_LIMITED_BODY_KEY, WAF_LOG_GROUP_PREFIX
from tests.infra.conftest import Resources, Synthesised


def _only(resources: Resources, kind: str) -> tuple[str, dict[str, Any]]:
    (found,) = [(name, r) for name, r in resources.items() if r["Type"] == kind]
    return found


def _logical_id(resources: Resources, kind: str) -> str:
    return _only(resources, kind)[0]


def test_given_the_default_app_when_synthesised_then_a_regional_web_acl_allows_by_default(
    resources: Resources,
) -> None:
    _, acl = _only(resources, "AWS::WAFv2::WebACL")
    properties = acl["Properties"]
    assert properties["Scope"] == "REGIONAL"
    assert properties["DefaultAction"] == {"Allow": {}}
    assert properties["VisibilityConfig"]["CloudWatchMetricsEnabled"] is True
    assert properties["VisibilityConfig"]["SampledRequestsEnabled"] is True


def test_given_the_web_acl_when_read_then_the_rate_limit_comes_first_then_body_size_then_managed_groups(
    resources: Resources,
) -> None:
    rules = sorted(
        _only(resources, "AWS::WAFv2::WebACL")[1]["Properties"]["Rules"], key=lambda r: r["Priority"]
    )
    assert [r["Priority"] for r in rules] == list(range(len(rules)))
    rate, body_size, *managed = rules
    # Then one address is limited to the configured requests per 5 minutes, answered with 429
    statement = rate["Statement"]["RateBasedStatement"]
    assert statement == {
        "AggregateKeyType": "IP",
        "Limit": AppConfig().api_rate_limit_per_address,
        "EvaluationWindowSec": 300,
    }
    assert rate["Action"] == {
        "Block": {
            "CustomResponse": {
                "ResponseCode": 429,
                "CustomResponseBodyKey": RATE_LIMITED_BODY_KEY,
                # Not cached, not sniffed, like every other answer of the API
                "ResponseHeaders": [
                    {"Name": "Cache-Control", "Value": "no-store"},
                    {"Name": "X-Content-Type-Options", "Value": "nosniff"},
                ],
            }
        }
    }
    # And the body size limit follows (tests/infra/test_body_size_rule.py), then the AWS managed groups,
    # each with its own actions (no override to count)
    assert body_size["Name"] == "RequestTooLarge"
    assert [r["Statement"]["ManagedRuleGroupStatement"]["Name"] for r in managed] == list(MANAGED_RULE_GROUPS)
    for rule in managed:
        assert rule["Statement"]["ManagedRuleGroupStatement"]["VendorName"] == "AWS"
        assert rule["OverrideAction"] == {"None": {}}
        assert rule["VisibilityConfig"]["CloudWatchMetricsEnabled"] is True
    metric_names = [r["VisibilityConfig"]["MetricName"] for r in rules]
    assert len(set(metric_names)) == len(metric_names)


def test_given_the_common_rule_set_when_read_then_only_its_8_kb_body_rule_merely_counts(
    resources: Resources,
) -> None:
    # A batch of 100 applications is ~30 KB: the common rule set's body size rule would block it
    rules = _only(resources, "AWS::WAFv2::WebACL")[1]["Properties"]["Rules"]
    overrides = {
        r["Statement"]["ManagedRuleGroupStatement"]["Name"]: r["Statement"]["ManagedRuleGroupStatement"].get(
            "RuleActionOverrides", []
        )
        for r in rules
        if "ManagedRuleGroupStatement" in r["Statement"]
    }
    assert overrides.pop("AWSManagedRulesCommonRuleSet") == [
        {"Name": "SizeRestrictions_BODY", "ActionToUse": {"Count": {}}}
    ]
    assert all(not rule_overrides for rule_overrides in overrides.values())


def test_given_a_rate_limited_client_when_answered_then_the_body_is_the_api_error_format(
    resources: Resources,
) -> None:
    bodies = _only(resources, "AWS::WAFv2::WebACL")[1]["Properties"]["CustomResponseBodies"]
    body = bodies[RATE_LIMITED_BODY_KEY]
    assert body["ContentType"] == "APPLICATION_JSON"
    parsed = json.loads(body["Content"])
    assert parsed["error"]["code"] == "rate_limited"
    assert set(parsed) == {"error", "model_version"}
    assert set(parsed["error"]) == {"code", "message", "details", "request_id"}


def test_given_the_web_acl_when_associated_then_it_guards_the_api_stage(resources: Resources) -> None:
    _, association = _only(resources, "AWS::WAFv2::WebACLAssociation")
    properties = association["Properties"]
    assert properties["WebACLArn"] == {"Fn::GetAtt": [_logical_id(resources, "AWS::WAFv2::WebACL"), "Arn"]}
    # The stage ARN: arn:<partition>:apigateway:<region>::/restapis/<api id>/stages/<stage name>
    parts = properties["ResourceArn"]["Fn::Join"][1]
    api, stage = (
        _logical_id(resources, "AWS::ApiGateway::RestApi"),
        _logical_id(resources, "AWS::ApiGateway::Stage"),
    )
    assert parts[-4:] == ["::/restapis/", {"Ref": api}, "/stages/", {"Ref": stage}]
    assert ":apigateway:" in parts


def test_given_the_web_acl_when_logged_then_its_log_group_is_encrypted_and_tokens_redacted(
    resources: Resources,
) -> None:
    _, logging = _only(resources, "AWS::WAFv2::LoggingConfiguration")
    properties = logging["Properties"]
    assert properties["ResourceArn"] == {"Fn::GetAtt": [_logical_id(resources, "AWS::WAFv2::WebACL"), "Arn"]}
    assert {"SingleHeader": {"Name": "authorization"}} in properties["RedactedFields"]
    (destination,) = properties["LogDestinationConfigs"]
    waf_groups = {
        name: r
        for name, r in resources.items()
        if r["Type"] == "AWS::Logs::LogGroup"
        and str(r["Properties"].get("LogGroupName", "")).startswith(WAF_LOG_GROUP_PREFIX)
    }
    ((group_id, group),) = waf_groups.items()
    # The destination is that log group's ARN ending in its name, without the ":*" WAF rejects
    parts = destination["Fn::Join"][1]
    assert parts[-2:] == [":log-group:", {"Ref": group_id}]
    logs_key = _logical_id_of_logs_key(resources)
    assert group["Properties"]["KmsKeyId"] == {"Fn::GetAtt": [logs_key, "Arn"]}
    assert group["Properties"]["RetentionInDays"] == 90


def _logical_id_of_logs_key(resources: Resources) -> str:
    (key,) = [
        name
        for name, r in resources.items()
        if r["Type"] == "AWS::KMS::Key" and "CloudWatch Logs" in r["Properties"].get("Description", "")
    ]
    return key


def test_given_api_firewall_off_when_synthesised_then_there_is_no_web_acl(
    synthesised_with_options: Synthesised,
) -> None:
    resources = synthesised_with_options.template_json["Resources"]
    kinds = {r["Type"] for r in resources.values()}
    assert not kinds & {
        "AWS::WAFv2::WebACL",
        "AWS::WAFv2::WebACLAssociation",
        "AWS::WAFv2::LoggingConfiguration",
    }
