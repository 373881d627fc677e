"""Which snapshots the sweeper deletes, and what it does about their exports. Pure: no AWS, no I/O."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any

# What follows the prefix in a run's snapshot name: the state machine names it <prefix><States.UUID()>
# (infra/training_pipeline.py). A person's "train-before-upgrade" is not a run's, and is never deleted.
RUN_NAME_SUFFIX = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# RDS can delete a snapshot in these states only; one still "creating" (copying, ...) waits for a later run.
DELETABLE_STATUSES = frozenset({"available", "failed"})
# Export task states (DescribeExportTasks' Status) in which RDS is still writing to the export bucket.
RUNNING_EXPORT_STATUSES = frozenset({"STARTING", "IN_PROGRESS"})
CANCELING_EXPORT_STATUS = "CANCELING"


@dataclass(frozen=True)
class Snapshot:
    """The fields of one DescribeDBSnapshots entry the sweeper decides on."""

    identifier: str
    instance: str
    snapshot_type: str  # "manual", "automated", ...
    status: str
    created_at: datetime | None  # RDS gives no creation time to a snapshot still being created

    @classmethod
    def from_rds(cls, entry: Mapping[str, Any]) -> Snapshot:
        created = entry.get("SnapshotCreateTime")
        if isinstance(created, datetime) and created.tzinfo is None:
            created = created.replace(tzinfo=UTC)  # RDS times are UTC; an aware time compares with now
        return cls(
            identifier=str(entry.get("DBSnapshotIdentifier", "")),
            instance=str(entry.get("DBInstanceIdentifier", "")),
            snapshot_type=str(entry.get("SnapshotType", "")),
            status=str(entry.get("Status", "")),
            created_at=created if isinstance(created, datetime) else None,
        )

    def age(self, now: datetime) -> timedelta | None:
        return None if self.created_at is None else now - self.created_at


def stale_snapshots(
    snapshots: Iterable[Snapshot], *, database: str, prefix: str, min_age: timedelta, now: datetime
) -> list[Snapshot]:
    """The run snapshots to delete: manual snapshots of ``database`` named ``<prefix><uuid>``, in a state
    RDS can delete, and older than ``min_age`` (longer than any execution runs). Anything else is kept:
    automated backups, other snapshots of the database, another database's, a young or unfinished one."""
    if not prefix:
        raise ValueError("an empty prefix would select every manual snapshot of the database")
    selected = []
    for snapshot in snapshots:
        age = snapshot.age(now)
        if (
            snapshot.snapshot_type == "manual"
            and snapshot.instance.lower() == database.lower()
            and snapshot.identifier.startswith(prefix)
            and RUN_NAME_SUFFIX.fullmatch(snapshot.identifier[len(prefix) :]) is not None
            and snapshot.status in DELETABLE_STATUSES
            and age is not None
            and age > min_age
        ):
            selected.append(snapshot)
    return selected


class ExportStep(Enum):
    """What to do about the export task named like a stale snapshot, before deleting the snapshot."""

    NONE = "none"  # no export, or one that ended (COMPLETE, FAILED, CANCELED): delete the snapshot now
    CANCEL = "cancel"  # still exporting: cancel it; the snapshot is deleted on a later run
    WAIT = "wait"  # being cancelled: the snapshot is deleted on a later run, once the export ended


def export_step(status: str | None) -> ExportStep:
    """``status`` is the export task's Status, or None when there is no export of that name."""
    normalized = (status or "").upper()
    if normalized in RUNNING_EXPORT_STATUSES:
        return ExportStep.CANCEL
    if normalized == CANCELING_EXPORT_STATUS:
        return ExportStep.WAIT
    return ExportStep.NONE
