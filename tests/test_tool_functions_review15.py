"""The two tool functions against what they must guarantee: the snapshot sweeper (driven through botocore's
Stubber, so every call is checked against RDS's own request model) and the rollout check."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from lambdas.snapshot_sweeper.sweep import DATABASE_ENV, MIN_AGE_ENV, PREFIX_ENV, SweepFailed, run_sweep
from tests.snapshot_sweeper.names import run_name

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
DATABASE = "loan-db"
ENV = {DATABASE_ENV: DATABASE, PREFIX_ENV: "train-", MIN_AGE_ENV: str(14 * 3600)}
OLD = NOW - timedelta(days=2)
LISTING = {"DBInstanceIdentifier": DATABASE, "SnapshotType": "manual"}


@pytest.fixture
def rds() -> Iterator[tuple[Any, Stubber]]:
    """A real RDS client whose answers are scripted: nothing leaves the process."""
    client = boto3.client(
        "rds", region_name="eu-west-1", aws_access_key_id="testing", aws_secret_access_key="testing"
    )
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()


def snapshot_entry(name: str, created_at: datetime = OLD) -> dict[str, Any]:
    return {
        "DBSnapshotIdentifier": name,
        "DBInstanceIdentifier": DATABASE,
        "SnapshotType": "manual",
        "Status": "available",
        "SnapshotCreateTime": created_at,
    }


def expect_deletion(stubber: Stubber, name: str) -> None:
    """The calls a stale snapshot without an export costs: look the export up, then delete."""
    stubber.add_client_error(
        "describe_export_tasks",
        service_error_code="ExportTaskNotFound",
        http_status_code=404,
        expected_params={"ExportTaskIdentifier": name},
    )
    stubber.add_response(
        "delete_db_snapshot",
        {"DBSnapshot": {"DBSnapshotIdentifier": name, "Status": "deleted"}},
        {"DBSnapshotIdentifier": name},
    )


def test_given_a_later_page_rds_will_not_list_then_the_listed_snapshots_are_still_swept_and_the_sweep_fails(
    rds: tuple[Any, Stubber],
) -> None:
    # Given a first page with a stale run snapshot, and a second page RDS keeps throttling (the client's
    # retries spent)
    client, stubber = rds
    stubber.add_response(
        "describe_db_snapshots", {"DBSnapshots": [snapshot_entry(run_name("a"))], "Marker": "page-2"}, LISTING
    )
    stubber.add_client_error(
        "describe_db_snapshots",
        service_error_code="Throttling",
        service_message="Rate exceeded",
        http_status_code=400,
        expected_params={**LISTING, "Marker": "page-2"},
    )
    expect_deletion(stubber, run_name("a"))

    # When the sweep runs
    with pytest.raises(SweepFailed) as failed:
        run_sweep(ENV, client, NOW)

    # Then the listed snapshot was deleted all the same (the fixture checks every scripted call was
    # made), and the sweep fails saying the listing was cut short and why: the alarm still fires
    message = str(failed.value)
    assert "listing the manual snapshots stopped after 1" in message
    assert "Throttling" in message


def test_given_a_persons_snapshot_named_like_a_run_then_only_the_runs_own_snapshot_is_deleted(
    rds: tuple[Any, Stubber],
) -> None:
    # Given an old run snapshot (the state machine names it train-<uuid>) and a person's old snapshot
    # taken before an upgrade, whose name happens to start with train-
    client, stubber = rds
    run_snapshot = f"train-{uuid.uuid4()}"
    stubber.add_response(
        "describe_db_snapshots",
        {"DBSnapshots": [snapshot_entry(run_snapshot), snapshot_entry("train-before-upgrade")]},
        LISTING,
    )
    expect_deletion(stubber, run_snapshot)

    # When the sweep runs
    report = run_sweep(ENV, client, NOW)

    # Then only the run's snapshot is deleted: the person's is no retraining's leftover
    assert report.deleted == [run_snapshot]
