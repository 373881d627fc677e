"""One sweep: list the database's manual snapshots, and for each stale run snapshot cancel a running
export of the same name or delete the snapshot. Talks to RDS through a small client interface (boto3's
RDS client in Lambda), so it runs without a network in tests.

Every stale snapshot listed is tried, then any that could not be dealt with, or a page of snapshots RDS
would not list, fail the invocation (:class:`SweepFailed`): Lambda counts an error, which raises the
sweeper's alarm. A snapshot whose export was just cancelled, or is still being cancelled, is not a
failure: RDS will not delete it while the export runs, and the next day's sweep deletes it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from lambdas.snapshot_sweeper.selection import ExportStep, Snapshot, export_step, stale_snapshots

# Environment of the sweeper function (infra/snapshot_sweeper.py sets them).
DATABASE_ENV = "DB_INSTANCE_IDENTIFIER"  # the stack's database: only its snapshots are swept
PREFIX_ENV = "SNAPSHOT_PREFIX"  # the runs' snapshot names start with it ("train-")
MIN_AGE_ENV = "MIN_AGE_SECONDS"  # longer than any execution of the state machine runs

# RDS's error codes (botocore's ClientError) the sweep expects.
EXPORT_NOT_FOUND = "ExportTaskNotFound"
SNAPSHOT_NOT_FOUND = "DBSnapshotNotFound"
_QUOTED_CHARS = 500

logger = logging.getLogger(__name__)


class RdsClient(Protocol):
    def describe_db_snapshots(self, **kwargs: Any) -> Mapping[str, Any]: ...

    def describe_export_tasks(self, **kwargs: Any) -> Mapping[str, Any]: ...

    def cancel_export_task(self, **kwargs: Any) -> Mapping[str, Any]: ...

    def delete_db_snapshot(self, **kwargs: Any) -> Mapping[str, Any]: ...


class SettingsError(ValueError):
    """An environment variable of the sweeper is missing or malformed (the message names it)."""


class SweepFailed(RuntimeError):  # noqa: N818 - the invocation's verdict, raised so Lambda counts an error
    """Some stale snapshots could not be dealt with; the message names each one and why."""


@dataclass(frozen=True)
class SweepSettings:
    database: str
    prefix: str
    min_age: timedelta

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> SweepSettings:
        database = env.get(DATABASE_ENV, "").strip()
        if not database:
            raise SettingsError(f"{DATABASE_ENV} must name the database whose snapshots are swept")
        prefix = env.get(PREFIX_ENV, "").strip()
        if not prefix:
            raise SettingsError(f"{PREFIX_ENV} must be the runs' snapshot name prefix (empty matches all)")
        raw_age = env.get(MIN_AGE_ENV, "").strip()
        if not raw_age.isdigit() or int(raw_age) <= 0:
            raise SettingsError(f"{MIN_AGE_ENV} must be a positive number of seconds, got {raw_age!r}")
        return cls(database=database, prefix=prefix, min_age=timedelta(seconds=int(raw_age)))


@dataclass
class SweepReport:
    deleted: list[str] = field(default_factory=list)
    # Exports cancelled now or still being cancelled: their snapshots are deleted on a later run.
    waiting: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"deleted": self.deleted, "waiting": self.waiting, "failed": self.failed}


def run_sweep(env: Mapping[str, str], rds: RdsClient, now: datetime) -> SweepReport:
    """Sweep with the settings of ``env``; SweepFailed if any stale snapshot could not be dealt with, or
    RDS would not list every page of snapshots (those it listed are swept first)."""
    settings = SweepSettings.from_env(env)
    snapshots: list[Snapshot] = []
    unlisted: str | None = None
    try:
        for entry in _manual_snapshots(rds, settings.database):
            snapshots.append(Snapshot.from_rds(entry))
    except Exception as error:  # a page RDS would not list: sweep the pages it did, then fail
        unlisted = _quoted(f"{type(error).__name__}: {error}")
        logger.exception(
            "could not list every manual snapshot of the database",
            extra={"database": settings.database, "listed": len(snapshots), "reason": unlisted},
        )
    stale = stale_snapshots(
        snapshots, database=settings.database, prefix=settings.prefix, min_age=settings.min_age, now=now
    )
    report = SweepReport()
    for snapshot in stale:
        try:
            _sweep_one(rds, snapshot, now, report)
        except Exception as error:  # an RDS refusal, a network error: try the others, then fail
            reason = _quoted(f"{type(error).__name__}: {error}")
            report.failed[snapshot.identifier] = reason
            logger.exception(
                "could not clean up a stale run snapshot",
                extra={"snapshot": snapshot.identifier, "reason": reason},
            )
    logger.info(
        "snapshot sweep finished",
        extra={"database": settings.database, "manual_snapshots": len(snapshots), **report.as_dict()},
    )
    problems = []
    if unlisted is not None:
        problems.append(f"listing the manual snapshots stopped after {len(snapshots)}: {unlisted}")
    if report.failed:
        listed = "; ".join(f"{name}: {reason}" for name, reason in sorted(report.failed.items()))
        problems.append(f"{len(report.failed)} stale run snapshot(s) could not be cleaned up: {listed}")
    if problems:
        raise SweepFailed("; ".join(problems))
    return report


def _sweep_one(rds: RdsClient, snapshot: Snapshot, now: datetime, report: SweepReport) -> None:
    name = snapshot.identifier
    age = snapshot.age(now)
    about = {
        "snapshot": name,
        "created_at": snapshot.created_at.isoformat() if snapshot.created_at else None,
        "age_hours": round(age.total_seconds() / 3600, 1) if age else None,
    }
    # The run named its export task like its snapshot.
    export_status = _export_status(rds, name)
    step = export_step(export_status)
    if step is ExportStep.CANCEL:
        rds.cancel_export_task(ExportTaskIdentifier=name)
        report.waiting.append(name)
        logger.warning(
            "cancelled a stale run's export; its snapshot is deleted once the export has stopped",
            extra={**about, "export_status": export_status},
        )
        return
    if step is ExportStep.WAIT:
        report.waiting.append(name)
        logger.info(
            "a stale run's export is being cancelled; its snapshot is deleted on a later run",
            extra={**about, "export_status": export_status},
        )
        return
    try:
        rds.delete_db_snapshot(DBSnapshotIdentifier=name)
    except Exception as error:
        if _error_code(error) != SNAPSHOT_NOT_FOUND:
            raise
        logger.info("a stale run snapshot was already gone", extra=about)  # deleted meanwhile: done
        return
    report.deleted.append(name)
    logger.warning("deleted a stale run snapshot", extra={**about, "export_status": export_status})


def _manual_snapshots(rds: RdsClient, database: str) -> Iterator[Mapping[str, Any]]:
    """Every manual snapshot of ``database``, page by page."""
    marker: str | None = None
    while True:
        request: dict[str, Any] = {"DBInstanceIdentifier": database, "SnapshotType": "manual"}
        if marker:
            request["Marker"] = marker
        page = rds.describe_db_snapshots(**request)
        yield from page.get("DBSnapshots", [])
        marker = page.get("Marker")
        if not marker:
            return


def _export_status(rds: RdsClient, name: str) -> str | None:
    """The Status of the export task ``name``, or None when RDS has none of that name."""
    try:
        tasks = rds.describe_export_tasks(ExportTaskIdentifier=name).get("ExportTasks", [])
    except Exception as error:
        if _error_code(error) == EXPORT_NOT_FOUND:
            return None
        raise
    return str(tasks[0].get("Status")) if tasks else None


def _error_code(error: Exception) -> str | None:
    """botocore's ClientError code, read without importing botocore."""
    response = getattr(error, "response", None)
    if isinstance(response, Mapping):
        code = (response.get("Error") or {}).get("Code")
        return str(code) if code else None
    return None


def _quoted(text: str) -> str:
    return text if len(text) <= _QUOTED_CHARS else text[:_QUOTED_CHARS] + "..."
