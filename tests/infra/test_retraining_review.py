"""The retraining state machine as it runs: its synthesised definition is executed by a small Amazon States
Language interpreter (below) against scripted AWS answers, so each test follows one run from start to end.

The interpreter covers what the definition uses: Pass, Task (Parameters, ResultSelector, ResultPath, Catch),
Wait (not waited), Choice (string, boolean and numeric comparisons, Or), Succeed and Fail (ErrorPath and
CausePath), JSONPath of the form ``$.a.b[0]`` and ``$$.Execution.Name``, and the intrinsic functions
States.Format, States.Array, States.UUID, States.MathAdd, States.JsonToString and States.StringToJson.
Retry is not simulated: a scripted error is what the state sees after its retries.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.infra.conftest import Resources
from tests.infra.test_state_machine import _resolve
from training.datasets.catalog import EXPORT_TABLES, load_dataset

Json = Any
_TOKEN = re.compile(r"\s*(States\.\w+\(|'(?:\\.|[^'\\])*'|\$\$?[\w.\[\]]*|-?\d+(?:\.\d+)?|[),])")


class TaskError(Exception):
    """A scripted service error, as Step Functions reports it (Error and Cause)."""

    def __init__(self, error: str, cause: str) -> None:
        super().__init__(error)
        self.error, self.cause = error, cause


def _path(path: str, data: Json, context: Json) -> Json:
    value = context if path.startswith("$$") else data
    for name, index in re.findall(r"\.(\w+)|\[(\d+)\]", path.lstrip("$")):
        value = value[int(index)] if index else value[name]
    return value


def _set_path(data: Json, path: str | None, result: Json) -> Json:
    if path is None:
        return data
    if path == "$":
        return result
    updated = json.loads(json.dumps(data))
    *parents, last = path[2:].split(".")
    target = updated
    for name in parents:
        target = target.setdefault(name, {})
    target[last] = result
    return updated


def _intrinsic(expression: str, data: Json, context: Json) -> Json:
    tokens = [t for t in _TOKEN.findall(expression) if t != ","]
    position = 0

    def parse() -> Json:
        nonlocal position
        token = tokens[position]
        position += 1
        if token.startswith("States."):
            arguments = []
            while tokens[position] != ")":
                arguments.append(parse())
            position += 1
            return _call(token[len("States.") : -1], arguments)
        if token.startswith("'"):
            return re.sub(r"\\(.)", r"\1", token[1:-1])
        if token.startswith("$"):
            return _path(token, data, context)
        return float(token) if "." in token else int(token)

    return parse()


def _call(function: str, arguments: list[Json]) -> Json:
    if function == "Format":
        template, *values = arguments
        *pieces, last = template.split("{}")
        assert len(pieces) == len(values), (template, values)
        return "".join(piece + str(value) for piece, value in zip(pieces, values, strict=True)) + last
    if function == "Array":
        return arguments
    if function == "UUID":
        return str(uuid.uuid4())
    if function == "MathAdd":
        return arguments[0] + arguments[1]
    if function == "JsonToString":
        return json.dumps(arguments[0], separators=(",", ":"))
    if function == "StringToJson":
        return json.loads(arguments[0])
    raise NotImplementedError(f"States.{function}")


def _render(template: Json, data: Json, context: Json) -> Json:
    if isinstance(template, dict):
        rendered = {}
        for key, value in template.items():
            if key.endswith(".$"):
                rendered[key[:-2]] = _intrinsic(value, data, context)
            else:
                rendered[key] = _render(value, data, context)
        return rendered
    if isinstance(template, list):
        return [_render(item, data, context) for item in template]
    return template


_COMPARISONS: dict[str, Callable[[Json, Json], bool]] = {
    "StringEquals": lambda a, b: isinstance(a, str) and a == b,
    "BooleanEquals": lambda a, b: isinstance(a, bool) and a == b,
    "NumericGreaterThanEquals": lambda a, b: isinstance(a, int | float) and a >= b,
}


def _matches(rule: Json, data: Json, context: Json) -> bool:
    if "Or" in rule:
        return any(_matches(r, data, context) for r in rule["Or"])
    (operator,) = [k for k in rule if k in _COMPARISONS]
    try:
        value = _path(rule["Variable"], data, context)
    except (KeyError, IndexError, TypeError) as missing:
        # Step Functions fails the run on a path the input lacks; only a value of another type is false
        raise TaskError("States.Runtime", f"invalid path {rule['Variable']!r}") from missing
    return _COMPARISONS[operator](value, rule[operator])


Service = Callable[[dict[str, Json]], Json]


@dataclass
class Run:
    """One execution: which states it entered, which AWS calls it made, and how it ended."""

    states: list[str] = field(default_factory=list)
    calls: list[tuple[str, dict[str, Json]]] = field(default_factory=list)
    status: str = "RUNNING"
    error: str | None = None
    cause: str | None = None

    def called(self, action: str) -> list[dict[str, Json]]:
        return [params for name, params in self.calls if name == action]


def execute(definition: Json, services: dict[str, Service], name: str = "run-1", limit: int = 2000) -> Run:
    """Run the definition; ``services`` answers each Task by its action (``rds:startExportTask``)."""
    states, current = definition["States"], definition["StartAt"]
    data: Json = {}
    context = {"Execution": {"Name": name}}
    run = Run()
    for _ in range(limit):
        run.states.append(current)
        state = states[current]
        kind = state["Type"]
        if kind == "Succeed":
            run.status = "SUCCEEDED"
            return run
        if kind == "Fail":
            run.status = "FAILED"
            run.error = state.get("Error") or _path(state["ErrorPath"], data, context)
            run.cause = state.get("Cause") or _path(state["CausePath"], data, context)
            return run
        if kind == "Choice":
            try:
                chosen = [c["Next"] for c in state["Choices"] if _matches(c, data, context)]
            except TaskError as error:  # a Choice state has no Catch: the run fails
                run.status, run.error, run.cause = "FAILED", error.error, error.cause
                return run
            current = chosen[0] if chosen else state["Default"]
            continue
        if kind == "Pass":
            result = _render(state["Parameters"], data, context) if "Parameters" in state else data
            data = _set_path(data, state.get("ResultPath", "$"), result)
        elif kind == "Task":
            action = state["Resource"].rsplit(":", 2)[-2] + ":" + state["Resource"].rsplit(":", 1)[-1]
            action = action.removeprefix("aws-sdk:").removeprefix("states:")
            params = _render(state["Parameters"], data, context)
            run.calls.append((action, params))
            try:
                result = services[action](params)
            except TaskError as error:
                catcher = next(
                    (
                        c
                        for c in state.get("Catch", [])
                        if {"States.ALL", error.error} & set(c["ErrorEquals"])
                    ),
                    None,
                )
                if catcher is None:
                    run.status, run.error, run.cause = "FAILED", error.error, error.cause
                    return run
                data = _set_path(
                    data, catcher.get("ResultPath", "$"), {"Error": error.error, "Cause": error.cause}
                )
                current = catcher["Next"]
                continue
            if "ResultSelector" in state:
                result = _render(state["ResultSelector"], result, context)
            data = _set_path(data, state.get("ResultPath", "$"), result)
        if state.get("End"):
            run.status = "SUCCEEDED"
            return run
        current = state["Next"]
    raise AssertionError(f"the run did not end within {limit} states: {run.states[-10:]}")


@pytest.fixture(scope="module")
def definition(resources: Resources) -> Json:
    machine = next(r for r in resources.values() if r["Type"] == "AWS::StepFunctions::StateMachine")
    return json.loads(_resolve(machine["Properties"]["DefinitionString"], resources))


def _snapshot_arn(identifier: str) -> str:
    return f"arn:aws:rds:eu-west-1:123456789012:snapshot:{identifier}"


def _services(
    snapshot_status: Callable[[int], str] = lambda _: "available",
    export_task: Callable[[int], dict[str, Json]] = lambda _: {"Status": "COMPLETE"},
    passed: bool = True,
) -> dict[str, Service]:
    """Scripted AWS answers; the callables get the 1-based number of the describe call."""
    counts = {"snapshot": 0, "export": 0}

    def describe_snapshot(params: dict[str, Json]) -> Json:
        counts["snapshot"] += 1
        return {
            "DbSnapshots": [
                {
                    "DbSnapshotIdentifier": params["DbSnapshotIdentifier"],
                    "DbSnapshotArn": _snapshot_arn(params["DbSnapshotIdentifier"]),
                    "Status": snapshot_status(counts["snapshot"]),
                }
            ]
        }

    def describe_export(params: dict[str, Json]) -> Json:
        counts["export"] += 1
        return {
            "ExportTasks": [
                {"ExportTaskIdentifier": params["ExportTaskIdentifier"], **export_task(counts["export"])}
            ]
        }

    return {
        "rds:createDBSnapshot": lambda p: {
            "DbSnapshot": {"DbSnapshotArn": _snapshot_arn(p["DbSnapshotIdentifier"])}
        },
        "rds:describeDBSnapshots": describe_snapshot,
        "rds:startExportTask": lambda p: {"Status": "STARTING"},
        "rds:describeExportTasks": describe_export,
        "rds:cancelExportTask": lambda p: {
            "ExportTaskIdentifier": p["ExportTaskIdentifier"],
            "Status": "CANCELING",
        },
        "rds:deleteDBSnapshot": lambda p: {},
        "ecs:runTask.sync": lambda p: {},
        "s3:getObject": lambda p: {"Body": json.dumps({"passed": passed, "reasons": []})},
    }


def _write_rds_export(root: Path, export_id: str) -> int:
    """Write what an RDS snapshot export of the loaded credit_risk database leaves in its bucket:
    ``<bucket>/<ExportTaskIdentifier>/<database>/<database>.<table>/<batch>/part-*.gz.parquet``."""
    from training.dataload.datasets import read_dataset_files
    from training.datasets.catalog import SHIPPED_CREDIT_RISK

    frames = read_dataset_files("credit_risk", SHIPPED_CREDIT_RISK.parent)
    database, table = EXPORT_TABLES["credit_risk"]
    (frame,) = frames.values()
    folder = root / export_id / database / f"{database}.{table}" / "1"
    folder.mkdir(parents=True)
    frame.to_parquet(folder / f"part-00000-{uuid.uuid4()}.gz.parquet", index=False)
    info = {"exportTaskIdentifier": export_id, "status": "COMPLETE"}
    (root / export_id / f"export_info_{export_id}.json").write_text(json.dumps(info))
    return len(frame)


def _argument(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


def _choice_machine(given: Json, variable: str) -> Json:
    """A Pass state that sets ``given``, then a Choice on ``variable`` being true."""
    return {
        "StartAt": "Set",
        "States": {
            "Set": {"Type": "Pass", "Parameters": given, "Next": "Won?"},
            "Won?": {
                "Type": "Choice",
                "Choices": [{"Variable": variable, "BooleanEquals": True, "Next": "Won"}],
                "Default": "Lost",
            },
            "Won": {"Type": "Succeed"},
            "Lost": {"Type": "Succeed"},
        },
    }


@pytest.mark.parametrize("variable", ["$.gate.passed", "$.gate[0]", "$.name.passed"])
def test_given_a_choice_on_a_path_the_input_lacks_then_the_interpreter_fails_the_run_as_step_functions_does(
    variable: str,
) -> None:
    # Given a Choice that reads a field no earlier state set (a renamed ResultPath, say)
    run = execute(_choice_machine({"name": "x"}, variable), {})
    # Then the run fails (States.Runtime), instead of quietly taking the Default branch
    assert (run.status, run.error, run.states) == ("FAILED", "States.Runtime", ["Set", "Won?"])


def test_given_a_choice_on_a_field_of_another_type_then_the_comparison_does_not_hold() -> None:
    run = execute(_choice_machine({"gate": {"passed": "true"}}, "$.gate.passed"), {})
    assert (run.status, run.states[-1]) == ("SUCCEEDED", "Lost")
    run = execute(_choice_machine({"gate": {"passed": True}}, "$.gate.passed"), {})
    assert (run.status, run.states[-1]) == ("SUCCEEDED", "Won")


def test_given_a_completed_export_when_the_run_trains_then_train_reads_the_export_rds_wrote(
    definition: Json, tmp_path: Path
) -> None:
    # Given a run whose snapshot and export complete and whose candidate wins
    run = execute(definition, _services())
    assert run.status == "SUCCEEDED", run.states
    assert run.states[-1] == "Candidate registered"

    # And the export RDS wrote where StartExportTask told it to (<bucket>/<S3Prefix>/<identifier>/)
    (export,) = run.called("rds:startExportTask")
    bucket = export["S3BucketName"]
    root = tmp_path / bucket / export.get("S3Prefix", "")
    rows = _write_rds_export(root, export["ExportTaskIdentifier"])

    # When the train step's --source is read (the same code the container runs), with the bucket as a folder
    train_command = run.called("ecs:runTask.sync")[0]["Overrides"]["ContainerOverrides"][0]["Command"]
    assert train_command[:4] == ["python", "-m", "training", "train"]
    source = _argument(train_command, "--source")
    assert source.startswith(f"export:s3://{bucket}"), source
    dataset = load_dataset(
        _argument(train_command, "--dataset"), source.replace(f"s3://{bucket}", str(tmp_path / bucket), 1)
    )

    # Then training gets every exported row
    assert dataset.rows_raw == rows
    # And the snapshot was deleted once exported
    assert run.called("rds:deleteDBSnapshot") == [{"DbSnapshotIdentifier": export["ExportTaskIdentifier"]}]


def test_given_two_runs_then_their_snapshots_and_exports_have_different_names(definition: Json) -> None:
    first, second = (execute(definition, _services(), name=f"run-{n}") for n in (1, 2))
    names = {r.called("rds:startExportTask")[0]["ExportTaskIdentifier"] for r in (first, second)}
    assert len(names) == 2
    for name in names:  # RDS: a letter first, at most 60 characters (export task identifiers)
        assert re.fullmatch(r"[a-zA-Z][a-zA-Z0-9-]{0,59}", name), name
        assert "--" not in name, name


@pytest.mark.parametrize("status", ["FAILED", "CANCELED"])
def test_given_the_export_does_not_complete_then_the_snapshot_is_deleted_and_the_run_fails_with_its_cause(
    definition: Json, status: str
) -> None:
    # Given an export that RDS ends FAILED (or that someone cancels), with RDS's reason
    reason = "The IAM role doesn't have access to the KMS key"
    run = execute(definition, _services(export_task=lambda _: {"Status": status, "FailureCause": reason}))

    # Then the manual snapshot is deleted (RDS keeps it forever otherwise), nothing is trained
    (snapshot,) = run.called("rds:createDBSnapshot")
    assert run.called("rds:deleteDBSnapshot") == [{"DbSnapshotIdentifier": snapshot["DbSnapshotIdentifier"]}]
    assert not run.called("ecs:runTask.sync")
    # And the run fails (raising TrainingFailures) with RDS's status and reason in its cause
    assert run.status == "FAILED"
    assert run.error == "ExportFailed"
    assert run.cause is not None
    assert status in run.cause
    assert reason in run.cause


def test_given_the_snapshot_fails_then_the_run_fails_clearly_without_polling_on(definition: Json) -> None:
    run = execute(definition, _services(snapshot_status=lambda _: "failed"))
    assert run.status == "FAILED", run.states[-5:]
    assert run.error == "SnapshotFailed"
    assert len(run.called("rds:describeDBSnapshots")) == 1
    assert not run.called("rds:startExportTask")
    assert len(run.called("rds:deleteDBSnapshot")) == 1


def _seconds_waited(definition: Json, run: Run) -> int:
    return sum(definition["States"][name].get("Seconds", 0) for name in run.states)


def _container_timeouts(definition: Json) -> int:
    return sum(
        s.get("TimeoutSeconds", 0)
        for s in definition["States"].values()
        if s.get("Resource", "").endswith("ecs:runTask.sync")
    )


STUCK = {
    "snapshot": _services(snapshot_status=lambda _: "creating"),
    "export": _services(export_task=lambda _: {"Status": "IN_PROGRESS", "PercentProgress": 40}),
}


@pytest.mark.parametrize("stuck", sorted(STUCK))
def test_given_a_snapshot_or_export_that_never_finishes_then_polling_stops_and_the_snapshot_is_deleted(
    definition: Json, stuck: str
) -> None:
    # Given a snapshot that stays "creating", or an export that stays IN_PROGRESS
    run = execute(definition, STUCK[stuck])

    # Then the polling ends by itself, the snapshot is deleted and the run fails naming the stuck step
    assert run.status == "FAILED"
    assert run.error == {"snapshot": "SnapshotTimeout", "export": "ExportTimeout"}[stuck]
    snapshot_id = run.called("rds:createDBSnapshot")[0]["DbSnapshotIdentifier"]
    assert run.cause is not None
    assert snapshot_id in run.cause
    assert len(run.called("rds:deleteDBSnapshot")) == 1
    assert not run.called("ecs:runTask.sync")


def test_given_the_longest_polling_then_the_run_still_ends_before_the_state_machine_timeout(
    definition: Json,
) -> None:
    # Given the longest a run can poll: the whole snapshot bound, then the whole export bound
    waited = {
        name: _seconds_waited(definition, execute(definition, services)) for name, services in STUCK.items()
    }
    longest_polling = waited["snapshot"] + waited["export"]
    # And the longest the snapshot request may be retried first (an instance busy backing up)
    retries = definition["States"]["Snapshot the database"]["Retry"]
    longest_retrying = sum(
        r.get("IntervalSeconds", 1) * r.get("BackoffRate", 2.0) ** attempt
        for r in retries
        for attempt in range(r.get("MaxAttempts", 3))
    )
    # Then with every container step at its timeout the run still ends before the execution timeout,
    # which would skip the snapshot cleanup and report no step
    longest = longest_retrying + longest_polling + _container_timeouts(definition)
    assert longest < definition["TimeoutSeconds"], f"{longest / 3600:.1f} h"


@pytest.mark.parametrize(
    "failing", ["rds:describeDBSnapshots", "rds:startExportTask", "rds:describeExportTasks"]
)
def test_given_an_rds_call_fails_after_the_snapshot_then_it_is_deleted_and_the_error_is_kept(
    definition: Json, failing: str
) -> None:
    # Given an RDS call that still fails after its retries
    services = _services()

    def refuse(_: dict[str, Json]) -> Json:
        raise TaskError("Rds.KmsKeyNotAccessibleException", "The KMS key is disabled")

    def cleanup_refused(_: dict[str, Json]) -> Json:
        raise TaskError("Rds.RdsException", "Rate exceeded")

    services[failing] = refuse
    # And a snapshot cleanup that fails too: its error must not replace the first one
    services["rds:deleteDBSnapshot"] = cleanup_refused
    run = execute(definition, services)

    assert len(run.called("rds:deleteDBSnapshot")) == 1
    assert (run.status, run.error, run.cause) == (
        "FAILED",
        "Rds.KmsKeyNotAccessibleException",
        "The KMS key is disabled",
    )


def test_given_each_aws_call_then_throttling_and_transient_errors_are_retried_with_backoff(
    definition: Json,
) -> None:
    # Step Functions reports an error code the SDK does not model (RDS "Throttling", S3 "SlowDown") as the
    # service's base exception; ECS's optimised integration as ECS.AmazonECSException.
    transient = {"rds": "Rds.RdsException", "s3": "S3.S3Exception", "ecs": "ECS.AmazonECSException"}
    for name, state in definition["States"].items():
        if state["Type"] != "Task":
            continue
        service = state["Resource"].split(":")[-2]
        retriers = [r for r in state.get("Retry", []) if transient[service] in r["ErrorEquals"]]
        assert retriers, f"{name}: no retry on {transient[service]}"
        (retrier,) = retriers
        assert retrier["MaxAttempts"] >= 3, (name, retrier)
        assert retrier["BackoffRate"] > 1, (name, retrier)
        # A task that ran and failed (States.TaskFailed: exit code, OOM) is not retried
        assert not {"States.ALL", "States.TaskFailed"} & set(retrier["ErrorEquals"]), name
