"""The API's web application firewall: an AWS WAF web ACL on the REST API stage.

The stage is a regional endpoint, reachable from the internet. Signed requests (IAM or Cognito) are
all the function ever sees, but unsigned traffic still reaches API Gateway, and one caller can use up
the stage's shared throttle. The web ACL stops, before API Gateway's authoriser:
- addresses on Amazon's IP reputation list (bots, scanners, known attackers);
- request patterns of known exploits (AWS's "known bad inputs" and common rule groups);
- any one address above ``apiRateLimitPerAddress`` requests per 5 minutes (429, JSON body);
- a body whose Content-Length says it is ``MAX_BODY_BYTES`` or more (413, JSON body). API Gateway
  takes up to 10 MB, but Lambda refuses an event (body and headers) over 6 MB before the function
  runs, and API Gateway answers that with a 5xx. A request without a Content-Length (a chunked body)
  is not matched: it goes on as before (API Gateway's own 413 above 10 MB, else that 5xx).

Its log (blocked and counted requests only; the Authorization and X-Amz-Security-Token headers
redacted) goes to a CloudWatch log group encrypted with the stack's logs key.
"""

from __future__ import annotations

import json

from aws_cdk import ArnFormat, Stack
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_wafv2 as wafv2
from constructs import Construct

from infra.config import AppConfig
from infra.gateway_responses import SECURITY_HEADERS
from infra.log_groups import encrypted_log_group

# AWS managed rule groups, in evaluation order after the rate and body size limits (vendor "AWS").
MANAGED_RULE_GROUPS = (
    "AWSManagedRulesAmazonIpReputationList",
    "AWSManagedRulesKnownBadInputsRuleSet",
    "AWSManagedRulesCommonRuleSet",
)
# Capacity: 2 (rate limit) + 3 (body size: a regex, no text transformation) + 25 + 200 + 700 (the groups'
# published capacities) = 930 WCUs, within the 1,500 a web ACL has at its base price.
# Rules of those groups that only count: the common rule set blocks bodies over 8 KB, and a batch of up
# to the API's maximum applications (100 by default) is larger. The function enforces that maximum (a
# 400 naming it) and the body size rule below the whole body's size.
COUNT_ONLY_RULES = {"AWSManagedRulesCommonRuleSet": ("SizeRestrictions_BODY",)}
RATE_WINDOW_SECONDS = 300
RATE_LIMITED_BODY_KEY = "rate_limited"
# Bodies of this many bytes or more (by their Content-Length) are refused with a 413. A synchronous
# Lambda invoke takes an event of at most 6,291,456 bytes, and the proxy event holds the body as a JSON
# string (each quote escaped: about 6% more for a batch), the headers twice and the request context:
# a 6,000,000-byte body of applications makes a 6.38 MB event, a 5,000,000-byte one 5.32 MB
# (tests/infra/test_body_size_rule.py). The largest valid batch (1,000 applications) is far smaller.
MAX_BODY_BYTES = 5_000_000
# Content-Length values of MAX_BODY_BYTES or more: 7 digits from 5, or 8 and more; leading zeros and
# blanks around skipped. WAF has no numeric comparison of a header. [0-9], not \d (Python's \d also
# takes other scripts' digits); no capturing group (WAF refuses them).
BODY_TOO_LARGE_PATTERN = r"^[ \t]*0*(?:[5-9][0-9]{6}|[1-9][0-9]{7,})[ \t]*$"
REQUEST_TOO_LARGE_BODY_KEY = "request_too_large"
# Credentials a signed or token-bearing request carries in its headers (WAF matches names lowercase).
REDACTED_HEADERS = ("authorization", "x-amz-security-token")
# What the log keeps: blocks, and matches of counting rules (EXCLUDED_AS_COUNT: a rule of a managed group
# overridden to count, such as SizeRestrictions_BODY).
LOGGED_ACTIONS = ("BLOCK", "COUNT", "EXCLUDED_AS_COUNT")
# WAF delivers only to log groups whose name starts with this.
WAF_LOG_GROUP_PREFIX = "aws-waf-logs-"


class ApiFirewall(Construct):
    """A web ACL in front of ``stage``, with its log group."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: AppConfig,
        stage: apigw.Stage,
        logs_key: kms.IKey,
    ) -> None:
        super().__init__(scope, construct_id)
        metric_prefix = f"loan-scoring-{config.environment}"
        rules = [
            self._rate_limit(metric_prefix, config.api_rate_limit_per_address),
            # After the rate limit, so that an address's oversized requests still count towards it.
            self._body_size_limit(metric_prefix, priority=1),
        ]
        rules += [
            _managed_group(metric_prefix, name, priority)
            for priority, name in enumerate(MANAGED_RULE_GROUPS, start=len(rules))
        ]
        self.web_acl = wafv2.CfnWebACL(
            self,
            "WebAcl",
            scope="REGIONAL",
            description="Loan scoring API: IP reputation, bad inputs, common exploits, rate per address, "
            "body size",
            default_action=wafv2.CfnWebACL.DefaultActionProperty(allow={}),
            visibility_config=_visibility(f"{metric_prefix}-api"),
            rules=rules,
            custom_response_bodies={
                key: wafv2.CfnWebACL.CustomResponseBodyProperty(
                    content_type="APPLICATION_JSON", content=content
                )
                for key, content in CUSTOM_RESPONSE_BODIES.items()
            },
        )
        self.association = wafv2.CfnWebACLAssociation(
            self, "Association", resource_arn=stage.stage_arn, web_acl_arn=self.web_acl.attr_arn
        )
        self.log_group = encrypted_log_group(
            self,
            "Log",
            key=logs_key,
            retention=logs.RetentionDays.THREE_MONTHS,
            name=f"{WAF_LOG_GROUP_PREFIX}{metric_prefix}",
        )
        wafv2.CfnLoggingConfiguration(
            self,
            "Logging",
            resource_arn=self.web_acl.attr_arn,
            # WAF wants the log group's ARN without the ":*" that CloudFormation's Arn attribute ends with.
            log_destination_configs=[
                Stack.of(self).format_arn(
                    service="logs",
                    resource="log-group",
                    resource_name=self.log_group.log_group_name,
                    arn_format=ArnFormat.COLON_RESOURCE_NAME,
                )
            ],
            # Signatures and tokens stay out of the log: the Authorization header (SigV4 signature or
            # Cognito ID token) and the session token that temporary credentials send beside it.
            redacted_fields=[
                wafv2.CfnLoggingConfiguration.FieldToMatchProperty(single_header={"Name": header})
                for header in REDACTED_HEADERS
            ],
            # Blocked and counted requests only: without a filter WAF logs every request it allows too.
            logging_filter={
                "DefaultBehavior": "DROP",
                "Filters": [
                    {
                        "Behavior": "KEEP",
                        "Requirement": "MEETS_ANY",
                        "Conditions": [{"ActionCondition": {"Action": action}} for action in LOGGED_ACTIONS],
                    }
                ],
            },
        )

    @staticmethod
    def _rate_limit(metric_prefix: str, limit: int) -> wafv2.CfnWebACL.RuleProperty:
        return wafv2.CfnWebACL.RuleProperty(
            name="RateLimitPerAddress",
            priority=0,
            statement=wafv2.CfnWebACL.StatementProperty(
                rate_based_statement=wafv2.CfnWebACL.RateBasedStatementProperty(
                    aggregate_key_type="IP", limit=limit, evaluation_window_sec=RATE_WINDOW_SECONDS
                )
            ),
            action=_block_with(429, RATE_LIMITED_BODY_KEY),
            visibility_config=_visibility(f"{metric_prefix}-rate-limit"),
        )

    @staticmethod
    def _body_size_limit(metric_prefix: str, priority: int) -> wafv2.CfnWebACL.RuleProperty:
        return wafv2.CfnWebACL.RuleProperty(
            name="RequestTooLarge",
            priority=priority,
            statement=wafv2.CfnWebACL.StatementProperty(
                regex_match_statement=wafv2.CfnWebACL.RegexMatchStatementProperty(
                    # WAF matches the header's name in any case.
                    field_to_match=wafv2.CfnWebACL.FieldToMatchProperty(
                        single_header={"Name": "content-length"}
                    ),
                    regex_string=BODY_TOO_LARGE_PATTERN,
                    text_transformations=[
                        wafv2.CfnWebACL.TextTransformationProperty(priority=0, type="NONE")
                    ],
                )
            ),
            action=_block_with(413, REQUEST_TOO_LARGE_BODY_KEY),
            visibility_config=_visibility(f"{metric_prefix}-request-too-large"),
        )


def _error_body(code: str, message: str) -> str:
    """A web ACL answer in the API's error format; no request id or model version: the request never
    reached API Gateway's integration or the function."""
    return json.dumps(
        {
            "error": {"code": code, "message": message, "details": [], "request_id": None},
            "model_version": None,
        }
    )


# The web ACL's own answers, by key.
CUSTOM_RESPONSE_BODIES = {
    RATE_LIMITED_BODY_KEY: _error_body(
        "rate_limited", "Too many requests from this address; retry after a few minutes"
    ),
    # The code of API Gateway's own 413 (infra/gateway_responses.py).
    REQUEST_TOO_LARGE_BODY_KEY: _error_body(
        "request_too_large",
        f"The body is {MAX_BODY_BYTES:,} bytes or more (Content-Length), more than the API accepts; "
        "send fewer applications per call",
    ),
}


def _block_with(status: int, body_key: str) -> wafv2.CfnWebACL.RuleActionProperty:
    return wafv2.CfnWebACL.RuleActionProperty(
        block=wafv2.CfnWebACL.BlockActionProperty(
            custom_response=wafv2.CfnWebACL.CustomResponseProperty(
                response_code=status,
                custom_response_body_key=body_key,
                # As on the function's and API Gateway's answers (infra/gateway_responses.py): not
                # cached, not sniffed. WAF adds custom response headers as named (any but
                # content-type, which the body's content type sets).
                response_headers=[
                    wafv2.CfnWebACL.CustomHTTPHeaderProperty(name=name, value=value)
                    for name, value in SECURITY_HEADERS.items()
                ],
            )
        )
    )


def _managed_group(metric_prefix: str, name: str, priority: int) -> wafv2.CfnWebACL.RuleProperty:
    overrides = [
        wafv2.CfnWebACL.RuleActionOverrideProperty(
            name=rule, action_to_use=wafv2.CfnWebACL.RuleActionProperty(count={})
        )
        for rule in COUNT_ONLY_RULES.get(name, ())
    ]
    return wafv2.CfnWebACL.RuleProperty(
        name=name,
        priority=priority,
        statement=wafv2.CfnWebACL.StatementProperty(
            managed_rule_group_statement=wafv2.CfnWebACL.ManagedRuleGroupStatementProperty(
                vendor_name="AWS", name=name, rule_action_overrides=overrides or None
            )
        ),
        override_action=wafv2.CfnWebACL.OverrideActionProperty(none={}),  # the group's own actions apply
        visibility_config=_visibility(f"{metric_prefix}-{name}"),
    )


def _visibility(metric_name: str) -> wafv2.CfnWebACL.VisibilityConfigProperty:
    return wafv2.CfnWebACL.VisibilityConfigProperty(
        cloud_watch_metrics_enabled=True, metric_name=metric_name, sampled_requests_enabled=True
    )
