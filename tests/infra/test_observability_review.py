"""Observability review: the alarms and the dashboard agree with what the code emits and with how
CloudWatch stamps and keeps the data they watch.

- A Lambda metric (``Errors``) is stamped with the invocation's *start*, so a batch file that fails at
  minute 14 of 15 lands in a period the alarm has long evaluated: the alarm must look back at least the
  function's timeout.
- The incoming queue drops a message silently when its retention ends (no dead-letter queue then): a
  backlog that stops moving needs its own alarm, well before that (tests/infra/test_options.py checks
  that every alarm, this one included, notifies the topic).
- Every metric an alarm watches is graphed, so an alarm e-mail leads to a graph of what set it off.
- Every custom metric an alarm or widget reads is emitted by the handlers with the same namespace, name
  and dimensions, under the environment the stack gives the functions.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.infra.conftest import REPO_ROOT, Resources

MetricKey = tuple[str, str, frozenset[tuple[str, str]]]


# ---- template helpers ------------------------------------------------------------------------------


def _token(value: Any) -> str:
    """A CloudFormation value as text: Ref/GetAtt become a stable placeholder (dashboard and alarm alike)."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "Ref" in value:
        return f"<Ref {value['Ref']}>"
    if isinstance(value, dict) and "Fn::GetAtt" in value:
        return f"<GetAtt {'.'.join(value['Fn::GetAtt'])}>"
    if isinstance(value, dict) and "Fn::Join" in value:
        separator, parts = value["Fn::Join"]
        return str(separator).join(_token(part) for part in parts)
    return json.dumps(value, sort_keys=True)


def _alarms(resources: Resources, prefix: str = "") -> dict[str, dict[str, Any]]:
    return {
        name: r["Properties"]
        for name, r in resources.items()
        if r["Type"] == "AWS::CloudWatch::Alarm" and name.startswith(prefix)
    }


def _one_alarm(resources: Resources, prefix: str) -> dict[str, Any]:
    (alarm,) = _alarms(resources, prefix).values()
    return alarm


def _dimensions(dimensions: list[dict[str, Any]]) -> frozenset[tuple[str, str]]:
    return frozenset((d["Name"], _token(d["Value"])) for d in dimensions)


def _alarm_metrics(alarm: dict[str, Any]) -> set[MetricKey]:
    """(namespace, name, dimensions) of every metric an alarm reads, plain or inside metric math."""
    if "MetricName" in alarm:
        return {(alarm["Namespace"], alarm["MetricName"], _dimensions(alarm.get("Dimensions", [])))}
    found = set()
    for query in alarm["Metrics"]:
        if "MetricStat" in query:
            metric = query["MetricStat"]["Metric"]
            found.add((metric["Namespace"], metric["MetricName"], _dimensions(metric.get("Dimensions", []))))
    return found


def _dashboard_widgets(resources: Resources) -> list[dict[str, Any]]:
    (dashboard,) = [r for r in resources.values() if r["Type"] == "AWS::CloudWatch::Dashboard"]
    body = _token(dashboard["Properties"]["DashboardBody"])
    widgets: list[dict[str, Any]] = json.loads(body)["widgets"]
    return widgets


def _graphed_metrics(resources: Resources) -> set[MetricKey]:
    """(namespace, name, dimensions) of every metric on the dashboard's graphs (hidden math terms too)."""
    found = set()
    for widget in _dashboard_widgets(resources):
        for row in widget["properties"].get("metrics", []):
            names = [item for item in row if isinstance(item, str)]
            if len(names) < 2:
                continue  # a math expression row
            namespace, metric_name, *pairs = names
            dimensions = frozenset(zip(pairs[0::2], pairs[1::2], strict=True))
            found.add((namespace, metric_name, dimensions))
    return found


def _function(resources: Resources, logical_prefix: str) -> dict[str, Any]:
    (function,) = [
        r["Properties"]
        for name, r in resources.items()
        if r["Type"] == "AWS::Lambda::Function" and name.startswith(logical_prefix)
    ]
    found: dict[str, Any] = function
    return found


def _queue_id(resources: Resources, logical_prefix: str) -> str:
    (name,) = [
        n for n, r in resources.items() if r["Type"] == "AWS::SQS::Queue" and n.startswith(logical_prefix)
    ]
    return name


# ---- alarm windows ---------------------------------------------------------------------------------


def test_given_the_batch_failures_alarm_then_it_looks_back_at_least_the_batch_functions_timeout(
    resources: Resources,
) -> None:
    # Given the batch function (up to 15 minutes per file) and the alarm on its Errors (and failed messages)
    timeout = int(_function(resources, "BatchBatchFunction")["Timeout"])
    alarm = _one_alarm(resources, "ObservabilityBatchFailures")
    (period,) = {int(m["MetricStat"]["Period"]) for m in alarm["Metrics"] if "MetricStat" in m}
    assert "Lambda" in {
        m["MetricStat"]["Metric"]["Namespace"].split("/")[-1] for m in alarm["Metrics"] if "MetricStat" in m
    }
    # Lambda stamps Errors with the invocation's start: a file failing (timeout, out of memory, S3 error)
    # after 14 minutes arrives in a period 14 minutes old, which a one-period alarm no longer evaluates.
    window = period * int(alarm["EvaluationPeriods"])
    # Then the alarm evaluates enough periods to hold the start of any invocation that ends now, and one
    # such datapoint is enough
    assert window >= timeout + period, (window, timeout)
    assert alarm.get("DatapointsToAlarm", alarm["EvaluationPeriods"]) == 1
    assert alarm["TreatMissingData"] == "notBreaching"


def test_given_files_waiting_in_the_incoming_queue_then_an_alarm_fires_before_the_queue_drops_them(
    resources: Resources,
) -> None:
    # Given the incoming queue: a message older than its retention is deleted without reaching the
    # dead-letter queue (event source disabled or starved, the function never taking the message)
    queue_id = _queue_id(resources, "BatchIncomingQueue")
    incoming = resources[queue_id]["Properties"]
    retention = int(incoming["MessageRetentionPeriod"])
    visibility = int(incoming["VisibilityTimeout"])
    receives = int(incoming["RedrivePolicy"]["maxReceiveCount"])
    # Then an alarm watches the age of the oldest message in that queue
    backlog = [
        alarm
        for alarm in _alarms(resources).values()
        if alarm.get("MetricName") == "ApproximateAgeOfOldestMessage"
        and _dimensions(alarm["Dimensions"]) == {("QueueName", f"<GetAtt {queue_id}.QueueName>")}
    ]
    assert len(backlog) == 1, "no alarm on the incoming queue's oldest message"
    (alarm,) = backlog
    threshold = float(alarm["Threshold"])
    # above what a message legitimately spends there (all its tries, each hidden for the visibility
    # timeout), and early enough to act before the retention ends
    assert receives * visibility < threshold <= retention / 2
    assert alarm["ComparisonOperator"] == "GreaterThanThreshold"
    assert alarm["Statistic"] == "Maximum"


# ---- dashboard -------------------------------------------------------------------------------------


def test_given_the_dashboard_then_every_metric_an_alarm_watches_is_graphed(resources: Resources) -> None:
    # Given every alarm of the stack (the e-mailed ones, the canary's included)
    watched = {name: _alarm_metrics(alarm) for name, alarm in _alarms(resources).items()}
    graphed = _graphed_metrics(resources)
    # Then each metric it reads is on a dashboard graph (a timed-out training run, an API fault, an audit
    # line not forwarded: the alarm panel says that something fired, a graph shows when and how much)
    missing = {
        name: sorted(f"{namespace}/{metric}" for namespace, metric, _ in metrics - graphed)
        for name, metrics in watched.items()
        if metrics - graphed
    }
    assert missing == {}


# ---- emitted metrics agree with the template -------------------------------------------------------

_EMIT_ALL = r"""
import json, sys
from pathlib import Path

bundle = Path(sys.argv[1])
from lambdas.local_context import LocalLambdaContext
from lambdas.scoring.runtime import ScoringModel

if sys.argv[4] == "api":
    # A drift window filled with shifted applications, a rejected request, then a fault.
    from lambdas.api.app import create_api
    from lambdas.api.settings import Settings
    from lambdas.api.wiring import make_handler

    settings = Settings(model_bundle_dir=bundle, model_bundle_uri=None, log_applicant_values=False,
                        max_batch_applications=100, drift_window_applications=500)
    handler = make_handler(create_api(ScoringModel.load_directory(bundle), settings))
    context = LocalLambdaContext("api", aws_request_id="00000000-0000-4000-8000-000000000001")
    event = json.loads(sys.argv[3])
    event["body"] = json.dumps({"applications": [{"features": json.loads(sys.argv[2])}] * 100})
    for _ in range(5):
        assert handler(event, context)["statusCode"] == 200
    assert handler({**event, "body": "{}"}, context)["statusCode"] == 400

    def boom(*args, **kwargs):
        raise RuntimeError("injected fault")

    ScoringModel.score = boom
    assert handler(event, context)["statusCode"] == 500
else:
    # The batch handler on one message per outcome: a drifted file scored, an unreadable file.
    from lambdas.batch import wiring
    from lambdas.batch.service import Outcome
    from lambdas.batch.manifest import Manifest

    def manifest(status, error, drift):
        return Manifest.model_validate({
            "status": status,
            "input": {"bucket": "b", "key": "incoming/x.csv", "etag": "e", "size_bytes": 1, "format": "csv"},
            "model_name": "m", "model_version": "v", "outputs": {},
            "counts": {"rows_in": 1000, "rows_scored": 990, "rows_rejected": 10},
            "error": error, "reasons": {"top_k": 3}, "drift": drift,
            "timings": {"started_at": "t", "finished_at": "t", "total_seconds": 1.0, "phases": {}},
        })

    drift = {"rows": 990, "status": "significant", "score_psi": 0.3, "max_feature_psi": 0.9,
             "most_drifted_feature": "income", "feature_psi": {"income": 0.9}}
    outcomes = [Outcome(manifest("succeeded", None, drift)),
                Outcome(manifest("failed", {"code": "corrupt_gzip", "message": "m"}, None))]
    wiring.process_object = lambda *args: outcomes.pop(0)
    wiring.object_store = lambda: None
    wiring.loaded_model = lambda: None
    body = json.dumps({"Records": [{"eventName": "ObjectCreated:Put",
                                    "s3": {"bucket": {"name": "b"}, "object": {"key": "incoming/x.csv"}}}]})
    records = [{"messageId": str(i), "receiptHandle": "r", "body": body, "attributes": {},
                "messageAttributes": {}, "md5OfBody": "", "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:q", "awsRegion": "us-east-1"}
               for i in range(2)]
    for record in records:
        assert wiring.handler({"Records": [record]}, LocalLambdaContext("batch")) == {"batchItemFailures": []}

    # And a message that fails on a fault: reported for a retry, counted as MessagesFailed
    def fault(*args):
        raise RuntimeError("injected fault")

    wiring.process_object = fault
    failing = {**records[0], "messageId": "fault"}
    assert wiring.handler({"Records": [failing]}, LocalLambdaContext("batch")) == {
        "batchItemFailures": [{"itemIdentifier": "fault"}]}
"""


def _lambda_environment(resources: Resources, logical_prefix: str) -> dict[str, str]:
    variables = _function(resources, logical_prefix)["Environment"]["Variables"]
    return {k: v for k, v in variables.items() if k.startswith("POWERTOOLS_")}


def test_given_the_functions_environment_when_handlers_emit_then_custom_metrics_match_alarms_and_graphs(
    resources: Resources, tmp_path: Path
) -> None:
    from tests.api.conftest import stored_event
    from tests.scoring.bundles import good_application, write_logistic_bundle

    # Given the POWERTOOLS_* settings the stack gives each function (service name, namespace)
    api_env = _lambda_environment(resources, "ServingScoringFunction")
    batch_env = _lambda_environment(resources, "BatchBatchFunction")
    assert api_env["POWERTOOLS_METRICS_NAMESPACE"] == batch_env["POWERTOOLS_METRICS_NAMESPACE"]
    bundle = write_logistic_bundle(tmp_path / "bundle")
    shifted = {**good_application(), "income": 990000.0}
    emitted: list[dict[str, Any]] = []
    # When each function's code runs under its own settings (one process each, as in Lambda)
    for function, env in (("api", api_env), ("batch", batch_env)):
        completed = subprocess.run(
            [
                sys.executable,
                "-c",
                _EMIT_ALL,
                str(bundle),
                json.dumps(shifted),
                json.dumps(stored_event("score_batch.json")),
                function,
            ],
            cwd=REPO_ROOT,
            env={"PATH": "/usr/bin:/bin", "POWERTOOLS_TRACE_DISABLED": "true", **env},
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert completed.returncode == 0, completed.stderr[-3000:]
        emitted += [json.loads(line) for line in completed.stdout.splitlines() if '"_aws"' in line]
    # Then every custom metric an alarm or graph reads was emitted with that namespace, name and exactly
    # those dimensions: anything else is a metric CloudWatch never has, an alarm that cannot fire
    emitted_keys: set[MetricKey] = set()
    for blob in emitted:
        for directive in blob["_aws"]["CloudWatchMetrics"]:
            for dimension_names in directive["Dimensions"]:
                dimensions = frozenset((name, str(blob[name])) for name in dimension_names)
                for metric in directive["Metrics"]:
                    emitted_keys.add((directive["Namespace"], metric["Name"], dimensions))
    namespace = api_env["POWERTOOLS_METRICS_NAMESPACE"]

    # (the access log's 429 metric filter writes into the same namespace, under its own name)
    def handlers(key: MetricKey) -> bool:
        return key[0] == namespace and key[1] != "ApiTooManyRequests"

    referenced = {key for key in _graphed_metrics(resources) if handlers(key)}
    for alarm in _alarms(resources).values():
        referenced |= {key for key in _alarm_metrics(alarm) if handlers(key)}
    assert {"Faults", "WindowsDrifted", "FilesDrifted", "ScorePsi"} <= {key[1] for key in referenced}
    assert sorted(referenced - emitted_keys, key=str) == []
