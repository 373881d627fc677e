"""The API's 429 answers alarm: the stage throttle (50 requests/s, burst 100) and the web ACL's
per-address rate rule turn callers away with 429, which neither Lambda's ``Throttles`` (the function never
runs) nor API Gateway's ``4XXError`` (429 mixed with every validation 400) singles out.

A metric filter on the stage's access log counts the requests answered 429; an alarm fires when that
count stays high, notifies the alarm topic like every other alarm, and its metric is on the dashboard.
"""

from __future__ import annotations

import json
import re
from typing import Any

from tests.infra.conftest import Resources, Synthesised

# The exact pattern the stack uses. The stage's access log format writes "status":"$context.status", a
# JSON *string* ("429", not 429), so the pattern selects that one field and compares it as a quoted
# string: a 429 elsewhere in the line (a response length, a path) is not a throttled request.
TOO_MANY_REQUESTS_PATTERN = '{ $.status = "429" }'
# The metric filter's output: the environment's namespace (a metric filter cannot add a fixed dimension),
# which the handlers' own metrics share under other names.
NAMESPACE = "LoanScoring/dev"
METRIC_NAME = "ApiTooManyRequests"
THRESHOLD = 50  # 429 answers in one 5-minute period (see docs/deploy.md, "Monitoring and drift")
PERIOD_SECONDS = 300

# CloudWatch Logs' JSON filter syntax, the one form used here: { $.<field> = "<string>" }.
_JSON_STRING_EQUALS = re.compile(r'^\{ \$\.(?P<field>[A-Za-z_][A-Za-z0-9_]*) = "(?P<value>[^"*]*)" \}$')


def _of_type(resources: Resources, kind: str) -> dict[str, dict[str, Any]]:
    return {name: r for name, r in resources.items() if r["Type"] == kind}


def _matches(pattern: str, line: str) -> bool:
    """Whether CloudWatch Logs would count ``line`` for ``pattern`` (string equality on one top-level
    JSON field; a line that is not JSON or lacks the field never matches)."""
    parsed = _JSON_STRING_EQUALS.match(pattern)
    assert parsed, f"not a JSON string-equality filter pattern: {pattern!r}"
    try:
        event = json.loads(line)
    except json.JSONDecodeError:
        return False
    value = event.get(parsed["field"]) if isinstance(event, dict) else None
    return isinstance(value, str) and value == parsed["value"]


def _access_log_line(log_format: str, status: str, response_length: str = "120") -> str:
    """One access log line as API Gateway writes it: the stage's format with its variables filled in."""
    values = {
        "$context.status": status,
        "$context.responseLength": response_length,
        "$context.requestId": "7c1e0c7a-1111-4d6b-9c2e-000000000429",
        "$context.identity.sourceIp": "198.51.100.7",
        "$context.httpMethod": "POST",
        "$context.resourcePath": "/v1/score",
        "$context.requestTime": "01/Jan/2025:12:00:00 +0000",
        "$context.protocol": "HTTP/1.1",
    }
    # Longest names first: $context.identity.user must not be cut by a shorter variable's replacement.
    line = log_format
    for variable in sorted(set(re.findall(r"\$context\.[A-Za-z.]+", log_format)), key=len, reverse=True):
        line = line.replace(variable, values.get(variable, "-"))
    return line


def _stage(resources: Resources) -> dict[str, Any]:
    ((_, stage),) = _of_type(resources, "AWS::ApiGateway::Stage").items()
    found: dict[str, Any] = stage["Properties"]
    return found


def _too_many_requests_filter(resources: Resources) -> dict[str, Any]:
    filters = [
        r["Properties"]
        for r in _of_type(resources, "AWS::Logs::MetricFilter").values()
        if any(t["MetricName"] == METRIC_NAME for t in r["Properties"]["MetricTransformations"])
    ]
    assert len(filters) == 1, f"expected one metric filter emitting {METRIC_NAME}, found {len(filters)}"
    found: dict[str, Any] = filters[0]
    return found


def _too_many_requests_alarms(resources: Resources) -> dict[str, dict[str, Any]]:
    return {
        name: r["Properties"]
        for name, r in _of_type(resources, "AWS::CloudWatch::Alarm").items()
        if r["Properties"].get("MetricName") == METRIC_NAME and r["Properties"].get("Namespace") == NAMESPACE
    }


def test_given_the_stage_access_log_then_a_metric_filter_counts_its_429_answers(resources: Resources) -> None:
    # Given the stage's access log: JSON with the status as a quoted string
    access = _stage(resources)["AccessLogSetting"]
    log_format = access["Format"]
    assert '"status":"$context.status"' in log_format
    log_group_id = access["DestinationArn"]["Fn::GetAtt"][0]
    # Then one metric filter on that log group selects the status field equal to "429"
    metric_filter = _too_many_requests_filter(resources)
    assert metric_filter["LogGroupName"] == {"Ref": log_group_id}
    assert metric_filter["FilterPattern"] == TOO_MANY_REQUESTS_PATTERN
    # And counts one per match, 0 for every other line (a busy API without 429s reads 0, not "no data")
    assert metric_filter["MetricTransformations"] == [
        {"MetricNamespace": NAMESPACE, "MetricName": METRIC_NAME, "MetricValue": "1", "DefaultValue": 0}
    ]


def test_given_access_log_lines_when_filtered_then_only_the_429_answers_count(resources: Resources) -> None:
    # Given lines the stage writes: a throttled call, a validation error, a success, and a success whose
    # response happens to be 429 bytes long (a plain-text "429" term would count it)
    log_format = _stage(resources)["AccessLogSetting"]["Format"]
    pattern = _too_many_requests_filter(resources)["FilterPattern"]
    lines = {
        "throttled": _access_log_line(log_format, "429"),
        "invalid": _access_log_line(log_format, "400"),
        "scored": _access_log_line(log_format, "200"),
        "scored, 429 bytes": _access_log_line(log_format, "200", response_length="429"),
    }
    assert all(json.loads(line)["status"] for line in lines.values())  # the lines are the format's JSON
    # Then only the throttled call matches
    assert {name: _matches(pattern, line) for name, line in lines.items()} == {
        "throttled": True,
        "invalid": False,
        "scored": False,
        "scored, 429 bytes": False,
    }


def test_given_the_429_count_then_an_alarm_fires_when_it_stays_above_the_threshold(
    resources: Resources,
) -> None:
    ((name, alarm),) = _too_many_requests_alarms(resources).items()
    assert name.startswith("ObservabilityApiTooManyRequests")
    # A handful of 429s is a burst above the token bucket that the client's retries absorb: the alarm
    # wants more than THRESHOLD in a 5-minute period, in 2 of the last 3 (a caller kept out, not a spike)
    assert alarm["Statistic"] == "Sum"
    assert alarm["Period"] == PERIOD_SECONDS
    assert alarm["Threshold"] == THRESHOLD
    assert alarm["ComparisonOperator"] == "GreaterThanThreshold"
    assert (alarm["EvaluationPeriods"], alarm["DatapointsToAlarm"]) == (3, 2)
    assert alarm["TreatMissingData"] == "notBreaching"  # no traffic at all: nothing turned away


def test_given_alarm_emails_then_the_429_alarm_notifies_the_alarm_topic(
    synthesised_with_options: Synthesised,
) -> None:
    options: Resources = synthesised_with_options.template_json["Resources"]
    ((topic_id, _),) = _of_type(options, "AWS::SNS::Topic").items()
    (alarm,) = _too_many_requests_alarms(options).values()
    assert alarm["AlarmActions"] == [{"Ref": topic_id}]


def test_given_the_dashboard_then_the_429_count_is_graphed(resources: Resources) -> None:
    ((_, dashboard),) = _of_type(resources, "AWS::CloudWatch::Dashboard").items()
    body = dashboard["Properties"]["DashboardBody"]
    # Fn::Join of text and references (function names, queue names): a reference sits inside quotes
    text = (
        body
        if isinstance(body, str)
        else "".join(p if isinstance(p, str) else "<ref>" for p in body["Fn::Join"][1])
    )
    graphed = [
        row
        for widget in json.loads(text)["widgets"]
        if widget["type"] == "metric"
        for row in widget["properties"].get("metrics", [])
    ]
    assert [NAMESPACE, METRIC_NAME] in [
        [item for item in row if isinstance(item, str)][:2] for row in graphed
    ]


def test_given_alarms_comparing_greater_or_equal_then_their_descriptions_do_not_say_more_than(
    resources: Resources,
) -> None:
    # "More than 1%" on a >= comparison promises something the alarm does not do (exactly 1% fires)
    wrong = {
        name: r["Properties"]["AlarmDescription"]
        for name, r in _of_type(resources, "AWS::CloudWatch::Alarm").items()
        if r["Properties"]["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
        and re.search(
            r"\b(more than|above|over|exceeds?)\b", r["Properties"].get("AlarmDescription", ""), re.I
        )
    }
    assert wrong == {}
