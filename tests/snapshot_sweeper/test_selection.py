"""The sweeper's choice of snapshots and export steps (pure: no AWS, no clock)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from lambdas.snapshot_sweeper.selection import ExportStep, Snapshot, export_step, stale_snapshots
from tests.snapshot_sweeper.names import run_name

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
MIN_AGE = timedelta(hours=14)
DATABASE = "loan-db"
OLD = NOW - MIN_AGE - timedelta(hours=1)


def snapshot(
    identifier: str = run_name("0b1c"),
    *,
    created_at: datetime | None = OLD,
    instance: str = DATABASE,
    snapshot_type: str = "manual",
    status: str = "available",
) -> Snapshot:
    return Snapshot(
        identifier=identifier,
        instance=instance,
        snapshot_type=snapshot_type,
        status=status,
        created_at=created_at,
    )


def select(*snapshots: Snapshot) -> list[str]:
    chosen = stale_snapshots(snapshots, database=DATABASE, prefix="train-", min_age=MIN_AGE, now=NOW)
    return [s.identifier for s in chosen]


def test_given_an_old_run_snapshot_then_it_is_selected() -> None:
    assert select(snapshot()) == [run_name("0b1c")]


def test_given_the_age_boundary_then_only_a_snapshot_older_than_the_minimum_age_is_selected() -> None:
    # Exactly the minimum age: a run started then could in principle still be cleaning up
    at_boundary = snapshot(run_name("edge"), created_at=NOW - MIN_AGE)
    just_past = snapshot(run_name("past"), created_at=NOW - MIN_AGE - timedelta(seconds=1))
    young = snapshot(run_name("young"), created_at=NOW - timedelta(hours=2))  # a run still going
    assert select(at_boundary, just_past, young) == [run_name("past")]


def test_given_other_names_then_only_the_prefix_is_selected() -> None:
    named = [
        snapshot(name)
        for name in (run_name("a"), "manual-before-upgrade", "x" + run_name("a"), "Train-b", "train")
    ]
    assert select(*named) == [run_name("a")]


def test_given_an_automated_backup_or_another_databases_snapshot_then_it_is_kept() -> None:
    automated = snapshot(run_name("auto"), snapshot_type="automated")
    other_database = snapshot(run_name("other"), instance="another-db")
    same_database_other_case = snapshot(run_name("case"), instance="Loan-DB")  # RDS identifiers ignore case
    assert select(automated, other_database, same_database_other_case) == [run_name("case")]


@pytest.mark.parametrize("status", ["creating", "copying", "deleting"])
def test_given_a_snapshot_rds_cannot_delete_yet_then_it_waits_for_a_later_sweep(status: str) -> None:
    assert select(snapshot(status=status)) == []


def test_given_a_snapshot_still_being_created_without_a_creation_time_then_it_is_kept() -> None:
    assert select(snapshot(status="creating", created_at=None)) == []
    assert select(snapshot(status="available", created_at=None)) == []


def test_given_a_failed_snapshot_then_it_is_selected() -> None:
    assert select(snapshot(status="failed")) == [run_name("0b1c")]


def test_given_an_empty_prefix_then_selection_refuses() -> None:
    with pytest.raises(ValueError, match="empty prefix"):
        stale_snapshots([snapshot()], database=DATABASE, prefix="", min_age=MIN_AGE, now=NOW)


def test_given_an_rds_entry_then_its_fields_are_read_and_a_naive_time_is_taken_as_utc() -> None:
    entry = {
        "DBSnapshotIdentifier": run_name("0b1c"),
        "DBInstanceIdentifier": DATABASE,
        "SnapshotType": "manual",
        "Status": "available",
        "SnapshotCreateTime": datetime(2026, 2, 28, 1, 0),
    }
    parsed = Snapshot.from_rds(entry)
    assert parsed == snapshot(created_at=datetime(2026, 2, 28, 1, 0, tzinfo=UTC))
    assert Snapshot.from_rds({**entry, "SnapshotCreateTime": None}).created_at is None


@pytest.mark.parametrize(
    ("status", "step"),
    [
        (None, ExportStep.NONE),
        ("COMPLETE", ExportStep.NONE),
        ("complete", ExportStep.NONE),  # moto answers in lower case
        ("FAILED", ExportStep.NONE),
        ("CANCELED", ExportStep.NONE),
        ("STARTING", ExportStep.CANCEL),
        ("IN_PROGRESS", ExportStep.CANCEL),
        ("in_progress", ExportStep.CANCEL),
        ("CANCELING", ExportStep.WAIT),
    ],
)
def test_given_an_export_status_then_the_step_before_deleting_follows(
    status: str | None, step: ExportStep
) -> None:
    assert export_step(status) is step
