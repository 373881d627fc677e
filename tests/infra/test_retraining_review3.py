"""Retraining on AWS, third review: what synthesises and passes the happy path but would misbehave when AWS
answers as it documents.

- Fargate's RunTask can answer HTTP 200 with a non-empty ``Failures`` list (no task started, e.g. no
  capacity in the subnets' zones); the ``.sync`` integration then fails the state with
  ``AmazonECS.Unknown`` (Step Functions developer guide, "Run Amazon ECS or Fargate tasks with Step
  Functions"). Nothing ran, so it is retried like throttling instead of failing the month's run.
- DeleteDBSnapshot works only on an ``available`` snapshot (RDS API reference, DeleteDBSnapshot). A
  snapshot still ``creating`` when its polls run out cannot be deleted by the run's cleanup: the run must
  still fail as SnapshotTimeout (not with the cleanup's error), and the daily sweeper takes the snapshot
  once it is available.

The runs use the ASL interpreter of tests/infra/test_retraining_review.py (Retry is not simulated: a scripted
error is what the state sees after its retries).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from infra.snapshot_sweeper import MIN_SNAPSHOT_AGE
from infra.training_pipeline import SNAPSHOT_PREFIX
from lambdas.snapshot_sweeper.selection import Snapshot, stale_snapshots
from tests.infra.conftest import Resources
from tests.infra.test_retraining_review import Json, TaskError, _services, execute
from tests.infra.test_state_machine import _resolve


@pytest.fixture(scope="module")
def definition(resources: Resources) -> Json:
    machine = next(r for r in resources.values() if r["Type"] == "AWS::StepFunctions::StateMachine")
    return json.loads(_resolve(machine["Properties"]["DefinitionString"], resources))


def test_given_fargate_starts_no_task_then_run_task_is_retried_with_backoff(definition: Json) -> None:
    container_steps = {
        name: state
        for name, state in definition["States"].items()
        if state.get("Resource", "").endswith(":ecs:runTask.sync")
    }
    assert len(container_steps) == 3
    for name, state in container_steps.items():
        retriers = [r for r in state.get("Retry", []) if "AmazonECS.Unknown" in r["ErrorEquals"]]
        assert retriers, f"{name}: a RunTask answered with Failures (no task started) is not retried"
        (retrier,) = retriers
        assert retrier["MaxAttempts"] >= 3, (name, retrier)
        assert retrier["BackoffRate"] > 1, (name, retrier)
        # A task that started and failed (States.TaskFailed: exit code, OOM) is still not retried
        assert not {"States.ALL", "States.TaskFailed"} & set(retrier["ErrorEquals"]), name


def test_given_a_snapshot_still_creating_when_polls_run_out_then_the_run_times_out_and_the_sweeper_takes_it(
    definition: Json,
) -> None:
    # Given a snapshot that stays "creating", which RDS refuses to delete (InvalidDBSnapshotState)
    services = _services(snapshot_status=lambda _: "creating")

    def refuse(_: dict[str, Json]) -> Json:
        raise TaskError("Rds.InvalidDbSnapshotStateException", "The snapshot is not in the available state")

    services["rds:deleteDBSnapshot"] = refuse
    run = execute(definition, services)

    # Then the cleanup was tried, and the run fails as SnapshotTimeout, not with the cleanup's refusal
    snapshot_id = run.called("rds:createDBSnapshot")[0]["DbSnapshotIdentifier"]
    assert run.called("rds:deleteDBSnapshot") == [{"DbSnapshotIdentifier": snapshot_id}]
    assert (run.status, run.error) == ("FAILED", "SnapshotTimeout")
    assert run.cause is not None
    assert snapshot_id in run.cause
    assert "available state" not in run.cause
    assert not run.called("rds:startExportTask")

    # And once RDS has finished it, the sweeper deletes it after the age that no execution outlives
    created = datetime(2026, 1, 1, tzinfo=UTC)
    finished = Snapshot(
        identifier=snapshot_id,
        instance="loan-db",
        snapshot_type="manual",
        status="available",
        created_at=created,
    )
    now = created + timedelta(seconds=MIN_SNAPSHOT_AGE.to_seconds()) + timedelta(minutes=1)
    assert snapshot_id.startswith(SNAPSHOT_PREFIX)
    assert stale_snapshots(
        [finished],
        database="loan-db",
        prefix=SNAPSHOT_PREFIX,
        min_age=timedelta(seconds=MIN_SNAPSHOT_AGE.to_seconds()),
        now=now,
    ) == [finished]
