"""One sweep against a scripted RDS client: what it cancels, deletes, leaves for later and reports."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from lambdas.snapshot_sweeper.sweep import (
    DATABASE_ENV,
    MIN_AGE_ENV,
    PREFIX_ENV,
    SettingsError,
    SweepFailed,
    SweepSettings,
    run_sweep,
)
from tests.snapshot_sweeper.names import run_name

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
DATABASE = "loan-db"
ENV = {DATABASE_ENV: DATABASE, PREFIX_ENV: "train-", MIN_AGE_ENV: str(14 * 3600)}
OLD = NOW - timedelta(days=2)
SWEEP_LOGGER = "lambdas.snapshot_sweeper.sweep"


class ClientError(Exception):
    """What botocore raises for an AWS error answer: the code is in ``response``."""

    def __init__(self, code: str) -> None:
        super().__init__(f"An error occurred ({code})")
        self.response = {"Error": {"Code": code, "Message": code}}


class FakeRds:
    """RDS's snapshot and export-task calls over in-memory state; ``refuse`` maps a call to an error."""

    def __init__(self, snapshots: list[dict[str, Any]], exports: Mapping[str, str], page_size: int = 100):
        self.snapshots = list(snapshots)
        self.exports = dict(exports)
        self.page_size = page_size
        self.refuse: dict[tuple[str, str], Exception] = {}
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def _check(self, call: str, name: str) -> None:
        if (call, name) in self.refuse:
            raise self.refuse[(call, name)]

    def describe_db_snapshots(self, **kwargs: Any) -> Mapping[str, Any]:
        self.calls.append(("describe_db_snapshots", kwargs))
        matching = [
            s
            for s in self.snapshots
            if s["DBInstanceIdentifier"] == kwargs["DBInstanceIdentifier"]
            and s["SnapshotType"] == kwargs["SnapshotType"]
        ]
        start = int(kwargs.get("Marker", 0))
        page: dict[str, Any] = {"DBSnapshots": matching[start : start + self.page_size]}
        if start + self.page_size < len(matching):
            page["Marker"] = str(start + self.page_size)
        return page

    def describe_export_tasks(self, **kwargs: Any) -> Mapping[str, Any]:
        name = kwargs["ExportTaskIdentifier"]
        self.calls.append(("describe_export_tasks", kwargs))
        self._check("describe_export_tasks", name)
        if name not in self.exports:
            raise ClientError("ExportTaskNotFound")
        return {"ExportTasks": [{"ExportTaskIdentifier": name, "Status": self.exports[name]}]}

    def cancel_export_task(self, **kwargs: Any) -> Mapping[str, Any]:
        name = kwargs["ExportTaskIdentifier"]
        self.calls.append(("cancel_export_task", kwargs))
        self._check("cancel_export_task", name)
        self.exports[name] = "CANCELING"
        return {"ExportTaskIdentifier": name, "Status": "CANCELING"}

    def delete_db_snapshot(self, **kwargs: Any) -> Mapping[str, Any]:
        name = kwargs["DBSnapshotIdentifier"]
        self.calls.append(("delete_db_snapshot", kwargs))
        self._check("delete_db_snapshot", name)
        if not any(s["DBSnapshotIdentifier"] == name for s in self.snapshots):
            raise ClientError("DBSnapshotNotFound")
        self.snapshots = [s for s in self.snapshots if s["DBSnapshotIdentifier"] != name]
        return {"DBSnapshot": {"DBSnapshotIdentifier": name, "Status": "deleted"}}

    @property
    def names(self) -> set[str]:
        return {s["DBSnapshotIdentifier"] for s in self.snapshots}

    def called(self, call: str) -> list[dict[str, Any]]:
        return [kwargs for name, kwargs in self.calls if name == call]


def entry(name: str, *, created_at: datetime = OLD, snapshot_type: str = "manual") -> dict[str, Any]:
    return {
        "DBSnapshotIdentifier": name,
        "DBInstanceIdentifier": DATABASE,
        "SnapshotType": snapshot_type,
        "Status": "available",
        "SnapshotCreateTime": created_at,
    }


def test_given_stale_snapshots_with_and_without_a_finished_export_then_both_are_deleted() -> None:
    rds = FakeRds(
        [entry(run_name("done")), entry(run_name("noexport")), entry(run_name("young"), created_at=NOW)],
        exports={run_name("done"): "COMPLETE"},
    )
    report = run_sweep(ENV, rds, NOW)
    assert sorted(report.deleted) == sorted([run_name("done"), run_name("noexport")])
    assert (report.waiting, report.failed) == ([], {})
    assert rds.names == {run_name("young")}
    # Only the database's manual snapshots are listed
    assert rds.called("describe_db_snapshots") == [
        {"DBInstanceIdentifier": DATABASE, "SnapshotType": "manual"}
    ]


def test_given_an_export_still_running_then_it_is_cancelled_and_the_snapshot_kept_for_a_later_sweep(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Given a stale run snapshot whose export is still running (RDS will not delete it meanwhile)
    rds = FakeRds(
        [entry(run_name("running")), entry(run_name("canceling"))],
        exports={run_name("running"): "IN_PROGRESS", run_name("canceling"): "CANCELING"},
    )
    with caplog.at_level(logging.INFO, logger=SWEEP_LOGGER):
        report = run_sweep(ENV, rds, NOW)
    # Then the running export is cancelled, one being cancelled is left alone, and neither snapshot is
    # deleted yet; that is not a failure
    assert rds.called("cancel_export_task") == [{"ExportTaskIdentifier": run_name("running")}]
    assert not rds.called("delete_db_snapshot")
    assert sorted(report.waiting) == sorted([run_name("canceling"), run_name("running")])
    assert report.failed == {}
    cancelled = [r for r in caplog.records if r.getMessage().startswith("cancelled a stale run's export")]
    assert [getattr(r, "snapshot", None) for r in cancelled] == [run_name("running")]
    # And once the export has stopped, the next sweep deletes the snapshot
    rds.exports[run_name("running")] = "CANCELED"
    rds.exports[run_name("canceling")] = "CANCELED"
    assert sorted(run_sweep(ENV, rds, NOW + timedelta(days=1)).deleted) == sorted(
        [run_name("canceling"), run_name("running")]
    )
    assert rds.names == set()


def test_given_a_refused_deletion_then_the_others_are_still_swept_and_the_sweep_fails_naming_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rds = FakeRds([entry(run_name("a")), entry(run_name("b")), entry(run_name("c"))], exports={})
    rds.refuse[("delete_db_snapshot", run_name("b"))] = ClientError("InvalidDBSnapshotState")
    rds.refuse[("describe_export_tasks", run_name("c"))] = ClientError("AccessDenied")
    with caplog.at_level(logging.INFO, logger=SWEEP_LOGGER), pytest.raises(SweepFailed) as failed:
        run_sweep(ENV, rds, NOW)
    # Then every stale snapshot was tried, and the failure (Lambda counts an error: the alarm) names
    # each one left and why
    assert rds.names == {run_name("b"), run_name("c")}
    message = str(failed.value)
    assert "2 stale run snapshot(s)" in message
    assert run_name("b") in message
    assert "InvalidDBSnapshotState" in message
    assert run_name("c") in message
    assert "AccessDenied" in message
    # And the log says what was deleted
    deleted = [r for r in caplog.records if r.getMessage() == "deleted a stale run snapshot"]
    assert [getattr(r, "snapshot", None) for r in deleted] == [run_name("a")]
    assert getattr(deleted[0], "age_hours", None) == 48.0


def test_given_a_snapshot_deleted_meanwhile_then_the_sweep_does_not_fail() -> None:
    rds = FakeRds([entry(run_name("gone"))], exports={})
    rds.refuse[("delete_db_snapshot", run_name("gone"))] = ClientError("DBSnapshotNotFound")
    report = run_sweep(ENV, rds, NOW)
    assert (report.deleted, report.failed) == ([], {})


def test_given_more_snapshots_than_one_page_then_every_page_is_swept() -> None:
    rds = FakeRds([entry(run_name(str(n))) for n in range(5)], exports={}, page_size=2)
    report = run_sweep(ENV, rds, NOW)
    assert len(report.deleted) == 5
    assert [c.get("Marker") for c in rds.called("describe_db_snapshots")] == [None, "2", "4"]


@pytest.mark.parametrize(
    ("variable", "value"),
    [(DATABASE_ENV, ""), (PREFIX_ENV, " "), (MIN_AGE_ENV, "0"), (MIN_AGE_ENV, "14h"), (MIN_AGE_ENV, "")],
)
def test_given_a_bad_setting_then_the_sweep_stops_naming_it_before_any_call(
    variable: str, value: str
) -> None:
    rds = FakeRds([entry(run_name("a"))], exports={})
    with pytest.raises(SettingsError, match=variable):
        run_sweep({**ENV, variable: value}, rds, NOW)
    assert rds.calls == []


def test_given_good_settings_then_they_are_read() -> None:
    settings = SweepSettings.from_env(ENV)
    assert settings == SweepSettings(database=DATABASE, prefix="train-", min_age=timedelta(hours=14))
