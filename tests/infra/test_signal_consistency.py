"""Signal consistency: each stack's alarms read its own functions' metrics, and the names the docs give
(namespaces, dimensions, Logs Insights fields) are the ones the code writes.

The functions publish their custom metrics with Powertools EMF under the namespace and service name the
stack gives them (POWERTOOLS_METRICS_NAMESPACE, POWERTOOLS_SERVICE_NAME). Two stacks of one account
(``-c environment=prod`` next to ``dev``, docs/deploy.md) must not publish into the same series: an alarm
of one would count the other's data, and the API's ``Faults`` alarm stops and rolls back a rollout.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.infra.conftest import REPO_ROOT, Resources, synthesise

MetricKey = tuple[str, str, frozenset[tuple[str, str]]]
DEPLOY_DOC = REPO_ROOT / "docs" / "deploy.md"
BATCH_DOC = REPO_ROOT / "docs" / "batch.md"


def _text(value: Any) -> str:
    """A template value as text (a Ref or GetAtt as a placeholder that is equal in two templates)."""
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True)


def _custom_alarm_metrics(resources: Resources) -> set[MetricKey]:
    """(namespace, name, dimensions) of every non-AWS metric an alarm reads, plain or in metric math."""
    found: set[MetricKey] = set()
    for resource in resources.values():
        if resource["Type"] != "AWS::CloudWatch::Alarm":
            continue
        alarm = resource["Properties"]
        metrics = (
            [alarm]
            if "MetricName" in alarm
            else [query["MetricStat"]["Metric"] for query in alarm["Metrics"] if "MetricStat" in query]
        )
        for metric in metrics:
            if metric["Namespace"].startswith("AWS/"):
                continue
            dimensions = frozenset((d["Name"], _text(d["Value"])) for d in metric.get("Dimensions", []))
            found.add((metric["Namespace"], metric["MetricName"], dimensions))
    return found


def _emf_settings(resources: Resources) -> set[tuple[str, str]]:
    """(namespace, service) each function publishes its EMF metrics under."""
    found = set()
    for resource in resources.values():
        if resource["Type"] != "AWS::Lambda::Function":
            continue
        variables = resource["Properties"].get("Environment", {}).get("Variables", {})
        if "POWERTOOLS_METRICS_NAMESPACE" in variables:
            found.add((variables["POWERTOOLS_METRICS_NAMESPACE"], variables["POWERTOOLS_SERVICE_NAME"]))
    return found


def _doc(path: Path) -> str:
    # Line breaks inside a sentence are spaces to the reader (and to the patterns below).
    return re.sub(r"\s+", " ", path.read_text())


@pytest.fixture(scope="module")
def prod_resources(tmp_path_factory: pytest.TempPathFactory) -> Resources:
    """The same app deployed as a second environment (``-c environment=prod``)."""
    found: Resources = synthesise(tmp_path_factory.mktemp("cdk-out-prod"), environment="prod").template_json[
        "Resources"
    ]
    return found


def test_given_two_environments_in_one_account_then_neither_alarms_on_the_others_metrics(
    resources: Resources, prod_resources: Resources
) -> None:
    # Given the dev stack and a prod stack of the same app, deployed into one account and region
    dev_alarmed, prod_alarmed = _custom_alarm_metrics(resources), _custom_alarm_metrics(prod_resources)
    assert dev_alarmed
    assert prod_alarmed
    # Then no function of one publishes into the namespace and service of the other's functions ...
    assert _emf_settings(resources) & _emf_settings(prod_resources) == set()
    # ... and no custom metric an alarm of one reads is a metric the other's alarms read: otherwise a
    # drifted test file in dev raises prod's ScoringDrift, and a fault in dev rolls back prod's rollout
    assert sorted(dev_alarmed & prod_alarmed, key=str) == []


def test_given_the_docs_namespace_and_dimension_of_a_metric_then_a_scoring_function_emits_under_them(
    resources: Resources,
) -> None:
    # Given every "namespace `N`, dimension `service=S`" the docs give for the handlers' metrics
    pattern = re.compile(r"namespace `(?P<namespace>[^`]+)`, dimension `service=(?P<service>[^`]+)`")
    documented = {
        (found["namespace"].replace("<env>", "dev"), found["service"])  # the synthesised environment
        for path in (DEPLOY_DOC, BATCH_DOC)
        for found in pattern.finditer(_doc(path))
    }
    assert {service for _, service in documented} == {"loan-scoring-api", "loan-scoring-batch"}
    # Then each is what a function of the stack is configured to publish under (a reader building a
    # graph or an alarm from the docs finds the series)
    assert documented - _emf_settings(resources) == set()


def test_given_the_docs_logs_insights_query_on_the_access_log_then_it_names_fields_the_log_has(
    resources: Resources,
) -> None:
    # Given the stage's access log format (one JSON object per request)
    (stage,) = [r["Properties"] for r in resources.values() if r["Type"] == "AWS::ApiGateway::Stage"]
    fields = set(json.loads(stage["AccessLogSetting"]["Format"]))
    # When an operator runs the query docs/deploy.md gives for the API's 429 answers
    queries = re.findall(r"`(filter [^`]*\| stats [^`]*)`", _doc(DEPLOY_DOC))
    assert len(queries) == 1, queries
    (query,) = queries
    filtered = re.findall(r"filter (\w+) =", query)
    grouped = [name.strip() for name in query.split(" by ", 1)[1].split(",")]
    # Then every field it filters or groups by is a key of those lines (Logs Insights returns nothing,
    # silently, for a field no line has)
    assert filtered
    assert grouped
    assert sorted(set(filtered + grouped) - fields) == []
    # and the status compares as the string the format writes ("status":"429"), as the metric filter does
    assert '"status":"$context.status"' in stage["AccessLogSetting"]["Format"]
    assert 'status = "429"' in query
