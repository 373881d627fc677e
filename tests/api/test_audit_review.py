"""Audit trail review: the lines the functions really write, held against the limits and the filter that
ship them to the audit bucket (infra/audit_trail.py). No synthesis: the filter pattern is built alone."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from infra.audit_trail import audit_filter_pattern
from lambdas.api.app import create_api
from lambdas.api.observability import logger
from lambdas.api.wiring import make_handler
from lambdas.audit import API_NOT_DELIVERED, AUDIT_MESSAGES, BATCH_FILE
from lambdas.batch import wiring as batch_wiring
from lambdas.batch.manifest import Counts, InputObject, Manifest, Outputs, ReasonsPolicy, Timings
from lambdas.batch.service import Outcome
from lambdas.scoring.runtime import ScoringModel
from tests.api.conftest import api_context, batch_audit_lines, settings_for, stored_event
from tests.conftest import captured_log
from tests.scoring.bundles import write_logistic_bundle


def _audit_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("{")]


def test_given_integer_features_without_bounds_when_the_largest_batch_is_logged_then_every_line_fits(
    tmp_path: Path,
) -> None:
    # Given a card whose integer features have no range (the berka spec's counts and durations have
    # none), applicant values logged, and the largest batch with ids that JSON escapes to 6 bytes a
    # character
    bundle = write_logistic_bundle(tmp_path / "unbounded")
    card_path = bundle / "model_card.json"
    card = json.loads(card_path.read_text())
    for feature in card["features"]:
        if feature["name"] in ("age", "income", "loan_ratio"):
            feature.update(type="integer", minimum=None, maximum=None)
    card_path.write_text(json.dumps(card))
    limit = 1000
    api = create_api(
        ScoringModel.load_directory(bundle),
        settings_for(bundle, log_applicant_values=True, max_batch_applications=limit),
    )
    # Each an integer as long as a double allows (309 digits), the logits staying finite
    features = {
        "age": -(10**308),
        "income": -(10**308),
        "home": "MORTGAGE",
        "loan_ratio": -(10**307),
        "prior_default": False,
    }
    applications = [
        {"application_id": f"{index:04d}" + "\x01" * 124, "features": features} for index in range(limit)
    ]

    # When it is scored, then no audit line is longer than a CloudWatch Logs event (a longer one is cut,
    # is no longer JSON and drops out of the trail), and together they hold every decision
    raw = batch_audit_lines(api, applications)
    logged = [r for line in raw for r in json.loads(line)["results"]]
    assert len(logged) == limit
    assert logged[0]["features"]["age"] == -(10**308)


# ---- the subscription filter against the lines the functions write -----------------------------

_CONDITION = r'\(\$\.message = "([^"*\\]*)"\)'


def _filter_matches(pattern: str, line: str) -> bool:
    """CloudWatch Logs' JSON filter semantics for the one form the audit filter takes,
    ``{ ($.message = "a") || ($.message = "b") }``: an event that is a JSON object whose top-level
    "message" equals one of the strings exactly (no "*", so no wildcard). Any other form is refused."""
    assert re.fullmatch(r"\{ " + _CONDITION + r"(?: \|\| " + _CONDITION + r")* \}", pattern), pattern
    values = set(re.findall(_CONDITION, pattern))
    try:
        event = json.loads(line)
    except json.JSONDecodeError:
        return False
    return isinstance(event, dict) and event.get("message") in values


def _manifest() -> Manifest:
    return Manifest(
        status="succeeded",
        input=InputObject(
            bucket="scoring", key="incoming/a.csv", etag="e1", version_id="v1", size_bytes=10, format="csv"
        ),
        model_name="m",
        model_version="m-1",
        outputs=Outputs(scored="scored/a.csv", rejected=None),
        counts=Counts(rows_in=1, rows_scored=1, approved=1),
        reasons=ReasonsPolicy(top_k=3),
        timings=Timings(started_at="t0", finished_at="t1", total_seconds=0.1, phases={}),
    )


def _batch_function_lines(monkeypatch: pytest.MonkeyPatch, outcome: Outcome) -> list[str]:
    """What the batch function logs for one S3 notification, the file's processing stubbed."""
    monkeypatch.setattr(batch_wiring, "process_object", lambda *args: outcome)
    monkeypatch.setattr(batch_wiring, "object_store", lambda: None)
    monkeypatch.setattr(batch_wiring, "loaded_model", lambda: None)
    body = {
        "Records": [
            {
                "eventName": "ObjectCreated:Put",
                "s3": {
                    "bucket": {"name": "scoring"},
                    "object": {"key": "incoming/a.csv", "eTag": "e1", "versionId": "v1", "size": 10},
                },
            }
        ]
    }
    with captured_log(batch_wiring.logger) as log:
        batch_wiring._handle_notification(json.dumps(body))
    return _audit_lines(log.getvalue())


def test_given_the_lines_both_functions_write_then_the_filter_ships_the_audit_lines_and_nothing_else(
    api_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pattern = audit_filter_pattern().log_pattern_string
    api = create_api(
        ScoringModel.load_directory(api_bundle), settings_for(api_bundle, max_batch_applications=5)
    )
    handler = make_handler(api)
    invalid = stored_event("score.json")
    invalid["body"] = json.dumps({"features": {"age": 3}})
    # Given every kind of line the API writes: a decision, a batch, a rejected request, a 404
    with captured_log(logger) as log:
        for event in (stored_event("score.json"), stored_event("score_batch.json"), invalid):
            handler(event, api_context())  # type: ignore[arg-type]
        handler({**stored_event("health.json"), "path": "/v1/nowhere"}, api_context())  # type: ignore[arg-type]
    api_lines = _audit_lines(log.getvalue())
    # And the batch function's: a scored file, and a redelivered one (not scored again; its line repeated,
    # marked, in case the first invocation stopped before logging it)
    batch_lines = _batch_function_lines(monkeypatch, Outcome(_manifest()))
    batch_lines += _batch_function_lines(monkeypatch, Outcome(_manifest(), skipped="already_done"))

    # Then exactly the decision and file lines match, each one JSON object on one line
    shipped = [json.loads(line) for line in api_lines + batch_lines if _filter_matches(pattern, line)]
    assert [line["message"] for line in shipped] == ["scored", "scored batch", BATCH_FILE, BATCH_FILE]
    # (all but the line of decisions not delivered, which only a fault after scoring writes:
    # tests/test_audit_review15.py)
    assert {line["message"] for line in shipped} == set(AUDIT_MESSAGES) - {API_NOT_DELIVERED}
    assert shipped[0]["correlation_id"] == "c6af9ac6-7b61-11e6-9a41-93e8deadbeef"
    assert shipped[2]["input"]["version_id"] == "v1"
    assert [line["redelivered"] for line in shipped[2:]] == [False, True]
    left_out: list[dict[str, Any]] = [json.loads(line) for line in api_lines + batch_lines]
    assert {"rejected", "skipped"} <= {line["message"] for line in left_out}
