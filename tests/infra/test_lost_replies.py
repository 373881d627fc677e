"""A retraining run whose RDS call was carried out but whose answer was lost.

Step Functions retries an RDS call after a timeout or a dropped connection (Rds.SdkClientException). When
the first attempt had in fact been carried out, the retry meets its result: the snapshot or export of the
run's unique name already exists, or the snapshot the run deleted is gone. Each is the call's success, so
the run must go on as if the first answer had arrived, not fail the month's retraining (or, for the
export, delete the snapshot under a running export). Any other error still fails the run.

The runs are executed by the interpreter in test_retraining_review (a scripted error there is what the
state sees after its retries).
"""

from __future__ import annotations

import pytest

from infra.training_pipeline import EXPORT_ALREADY_EXISTS, SNAPSHOT_ALREADY_EXISTS, SNAPSHOT_NOT_FOUND
from tests.infra.test_retraining_review import Json, Service, TaskError, _services, definition, execute

__all__ = ["definition"]  # the module-scoped fixture, shared with test_retraining_review


def _lost_reply(service: Service, error: str) -> Service:
    """The call is carried out (its effect recorded by ``service``), but the caller sees ``error``."""

    def call(params: dict[str, Json]) -> Json:
        service(params)
        raise TaskError(error, "already done by the attempt whose answer was lost")

    return call


@pytest.mark.parametrize("error", SNAPSHOT_ALREADY_EXISTS)
def test_given_the_snapshot_exists_after_a_lost_answer_then_the_run_exports_it_and_trains(
    definition: Json, error: str
) -> None:
    services = _services()
    services["rds:createDBSnapshot"] = _lost_reply(services["rds:createDBSnapshot"], error)

    run = execute(definition, services)

    assert (run.status, run.states[-1]) == ("SUCCEEDED", "Candidate registered"), run.states
    # The export names the snapshot this run created, read from the describe call (no create answer came)
    (snapshot,) = run.called("rds:createDBSnapshot")
    (export,) = run.called("rds:startExportTask")
    assert export["SourceArn"].endswith(":snapshot:" + snapshot["DbSnapshotIdentifier"])
    assert len(run.called("ecs:runTask.sync")) == 3
    assert run.called("rds:deleteDBSnapshot") == [{"DbSnapshotIdentifier": snapshot["DbSnapshotIdentifier"]}]


@pytest.mark.parametrize("error", EXPORT_ALREADY_EXISTS)
def test_given_the_export_exists_after_a_lost_answer_then_the_run_polls_it_instead_of_cleaning_up(
    definition: Json, error: str
) -> None:
    services = _services()
    services["rds:startExportTask"] = _lost_reply(services["rds:startExportTask"], error)

    run = execute(definition, services)

    assert (run.status, run.states[-1]) == ("SUCCEEDED", "Candidate registered"), run.states
    assert "Check the export" in run.states
    # The snapshot is deleted once, after the export completed; the export is not cancelled
    assert len(run.called("rds:deleteDBSnapshot")) == 1
    assert run.states.index("Delete the snapshot") > run.states.index("Check the export")
    assert not run.called("rds:cancelExportTask")


@pytest.mark.parametrize("error", SNAPSHOT_NOT_FOUND)
def test_given_the_snapshot_is_gone_after_a_lost_delete_answer_then_the_run_trains(
    definition: Json, error: str
) -> None:
    services = _services()
    services["rds:deleteDBSnapshot"] = _lost_reply(services["rds:deleteDBSnapshot"], error)

    run = execute(definition, services)

    assert (run.status, run.states[-1]) == ("SUCCEEDED", "Candidate registered"), run.states
    assert len(run.called("ecs:runTask.sync")) == 3


@pytest.mark.parametrize(
    ("action", "error"),
    [
        ("rds:createDBSnapshot", "Rds.SnapshotQuotaExceededException"),
        ("rds:createDBSnapshot", "Rds.DbInstanceNotFoundException"),
        ("rds:startExportTask", "Rds.IamRoleNotFoundException"),
    ],
)
def test_given_any_other_error_then_the_run_still_fails_with_it(
    definition: Json, action: str, error: str
) -> None:
    services = _services()

    def refuse(_: dict[str, Json]) -> Json:
        raise TaskError(error, "refused")

    services[action] = refuse

    run = execute(definition, services)

    assert (run.status, run.error) == ("FAILED", error)
    assert not run.called("ecs:runTask.sync")
