"""The sweep against the RDS emulator (moto over HTTP, the real boto3 client): an old run snapshot is
deleted; a young one, another name, an automated backup and another database's run snapshot are kept.

moto gives every snapshot the time it was created, so "old" is made by sweeping at a later ``now``: the
minimum age after the young snapshot's creation, which the old one (taken over a second before) exceeds.
moto ends an export at once (``complete``); cancelling a running one is covered in test_sweep.py.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import boto3
import pytest

from lambdas.snapshot_sweeper import handler as sweeper_handler
from lambdas.snapshot_sweeper.sweep import DATABASE_ENV, MIN_AGE_ENV, PREFIX_ENV, run_sweep
from tests.integration.conftest import moto_endpoint  # noqa: F401  (fixture)
from tests.snapshot_sweeper.names import run_name

# What infra/snapshot_sweeper.py sets (the state machine's 12 h timeout plus 2 h; checked there).
MIN_AGE_SECONDS = 14 * 3600


@pytest.fixture
def rds(moto_endpoint: str) -> Any:  # noqa: F811
    return boto3.client("rds")


def _database(rds: Any) -> str:
    """A new emulated MariaDB instance (moto needs the engine version spelled out for MariaDB)."""
    name = f"sweep-{uuid.uuid4().hex[:8]}"
    rds.create_db_instance(
        DBInstanceIdentifier=name,
        DBInstanceClass="db.t4g.micro",
        Engine="mariadb",
        EngineVersion="10.11.6",
        MasterUsername="admin",
        MasterUserPassword="not-a-real-password",
        AllocatedStorage=20,
    )
    return name


def _snapshot(rds: Any, database: str, name: str) -> dict[str, Any]:
    created: dict[str, Any] = rds.create_db_snapshot(
        DBInstanceIdentifier=database, DBSnapshotIdentifier=name
    )["DBSnapshot"]
    return created


def _names(rds: Any, database: str) -> set[str]:
    snapshots = rds.describe_db_snapshots(DBInstanceIdentifier=database)["DBSnapshots"]
    return {s["DBSnapshotIdentifier"] for s in snapshots}


def _env(database: str) -> dict[str, str]:
    return {DATABASE_ENV: database, PREFIX_ENV: "train-", MIN_AGE_ENV: str(MIN_AGE_SECONDS)}


def test_given_old_and_young_snapshots_when_swept_then_only_the_old_run_snapshot_is_deleted(rds: Any) -> None:
    # Given the stack's database with an old run snapshot (exported, as a run does) and an old snapshot
    # of another name, another database with an old run snapshot, and then a young run snapshot
    database, other_database = _database(rds), _database(rds)
    tag = uuid.uuid4().hex[:8]
    old = _snapshot(rds, database, run_name(f"old-{tag}"))
    rds.start_export_task(
        ExportTaskIdentifier=old["DBSnapshotIdentifier"],
        SourceArn=old["DBSnapshotArn"],
        S3BucketName="exports",
        IamRoleArn="arn:aws:iam::123456789012:role/export",
        KmsKeyId="arn:aws:kms:us-east-1:123456789012:key/export",
    )
    other_name = _snapshot(rds, database, f"before-upgrade-{tag}")["DBSnapshotIdentifier"]
    elsewhere = _snapshot(rds, other_database, run_name(f"elsewhere-{tag}"))["DBSnapshotIdentifier"]
    time.sleep(1.1)
    young = _snapshot(rds, database, run_name(f"young-{tag}"))
    automated = {n for n in _names(rds, database) if n.startswith("rds:")}
    assert automated  # moto keeps an automated backup of the instance: it must survive too

    # When the sweep runs just before the young snapshot reaches the minimum age
    now = young["SnapshotCreateTime"] + timedelta(seconds=MIN_AGE_SECONDS - 0.5)
    report = run_sweep(_env(database), rds, now)

    # Then only the old run snapshot is deleted (its export had completed)
    assert report.as_dict() == {"deleted": [old["DBSnapshotIdentifier"]], "waiting": [], "failed": {}}
    assert _names(rds, database) == {other_name, young["DBSnapshotIdentifier"], *automated}
    assert elsewhere in _names(rds, other_database)

    # And a sweep once the young one is old too deletes it, and still nothing else
    later = now + timedelta(seconds=1)
    assert run_sweep(_env(database), rds, later).deleted == [young["DBSnapshotIdentifier"]]
    assert _names(rds, database) == {other_name, *automated}


@pytest.fixture
def fresh_client() -> Iterator[None]:
    """The handler keeps its RDS client per execution environment: start and end without one."""
    sweeper_handler._rds.cache_clear()
    yield
    sweeper_handler._rds.cache_clear()


@pytest.mark.usefixtures("fresh_client")
def test_given_the_handler_when_invoked_then_it_sweeps_the_configured_database_and_keeps_young_snapshots(
    rds: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the function's environment (as infra/snapshot_sweeper.py sets it) and a run snapshot taken now
    database = _database(rds)
    young = _snapshot(rds, database, f"train-{uuid.uuid4()}")["DBSnapshotIdentifier"]
    for name, value in _env(database).items():
        monkeypatch.setenv(name, value)

    # When EventBridge's daily event invokes the handler
    result = sweeper_handler.handler({"source": "aws.events", "detail-type": "Scheduled Event"}, None)

    # Then it swept that database over the emulator and kept the young snapshot
    assert result == {"deleted": [], "waiting": [], "failed": {}}
    assert young in _names(rds, database)
