"""A message whose file is busy in another invocation is retried without raising the BatchFailures alarm.

The alarm counts the batch function's Lambda Errors and its MessagesFailed metric. A file another
invocation holds (FileBusyError: S3 or SQS delivered its event twice at once) is expected under
at-least-once delivery: the message goes back to the queue (batchItemFailures) and its retry is answered
by the other invocation's manifest; it is counted as FilesBusy only. A fault is reported the same way for
a retry, and counted as MessagesFailed. Neither makes the invocation itself fail (which would retry every
message of the batch and count as a Lambda error even for a busy file).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from lambdas.batch import wiring
from lambdas.batch.service import FileBusyError
from lambdas.local_context import LocalLambdaContext


def _record(message_id: str) -> dict[str, Any]:
    body = json.dumps(
        {
            "Records": [
                {
                    "eventName": "ObjectCreated:Put",
                    "s3": {"bucket": {"name": "b"}, "object": {"key": "incoming/applications.csv"}},
                }
            ]
        }
    )
    return {
        "messageId": message_id,
        "receiptHandle": "r",
        "body": body,
        "attributes": {},
        "messageAttributes": {},
        "md5OfBody": "",
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:incoming",
        "awsRegion": "us-east-1",
    }


def _metrics_emitted(stdout: str) -> dict[str, float]:
    """Metric name -> value of the EMF blobs Powertools printed."""
    found: dict[str, float] = {}
    for line in stdout.splitlines():
        if '"_aws"' not in line:
            continue
        blob = json.loads(line)
        for directive in blob["_aws"]["CloudWatchMetrics"]:
            for metric in directive["Metrics"]:
                value = blob[metric["Name"]]  # a list when the metric was added more than once
                found[metric["Name"]] = sum(value) if isinstance(value, list) else value
    return found


def _run_failing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], failure: Callable[..., Any]
) -> tuple[dict[str, Any], dict[str, float]]:
    monkeypatch.setattr(wiring, "process_object", failure)
    monkeypatch.setattr(wiring, "object_store", lambda: None)
    monkeypatch.setattr(wiring, "loaded_model", lambda: None)
    monkeypatch.setattr(wiring, "batch_settings", lambda: None)
    capsys.readouterr()
    response = wiring.handler({"Records": [_record("m-1")]}, LocalLambdaContext("batch"))
    return dict(response), _metrics_emitted(capsys.readouterr().out)


def test_given_the_only_message_is_a_busy_file_then_it_is_retried_without_a_failure_count(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def busy(*_: Any) -> Any:
        raise FileBusyError("incoming/applications.csv is being processed by another invocation")

    # When the handler meets it (no exception escapes: the invocation succeeds)
    response, emitted = _run_failing(monkeypatch, capsys, busy)

    # Then the message goes back to the queue, counted as a busy file, not as a failed message
    assert response == {"batchItemFailures": [{"itemIdentifier": "m-1"}]}
    assert emitted.get("FilesBusy") == 1
    assert "MessagesFailed" not in emitted


def test_given_the_only_message_fails_on_a_fault_then_it_is_retried_and_counted_for_the_alarm(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def fault(*_: Any) -> Any:
        raise RuntimeError("S3 refused the read")

    response, emitted = _run_failing(monkeypatch, capsys, fault)

    assert response == {"batchItemFailures": [{"itemIdentifier": "m-1"}]}
    assert emitted.get("MessagesFailed") == 1
    assert "FilesBusy" not in emitted
