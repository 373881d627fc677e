"""Leftover retraining snapshots: a run whose export polls run out cancels the export before its snapshot
cleanup, and a daily sweeper deletes the train-* snapshots that aborted or timed-out executions leave.

The state machine is run with the ASL interpreter of tests/infra/test_retraining_review.py; the sweeper's
role is checked statement by statement (IAM wildcards, as in tests/infra/test_rollout_check.py).
"""

from __future__ import annotations

import fnmatch
import json
from pathlib import Path
from typing import Any

import pytest

from infra.snapshot_sweeper import MIN_SNAPSHOT_AGE, SWEEP_INTERVAL, SWEEPER_HANDLER
from infra.training_pipeline import SNAPSHOT_PREFIX
from lambdas.snapshot_sweeper.sweep import DATABASE_ENV, MIN_AGE_ENV, PREFIX_ENV
from tests.infra.conftest import Resources, Synthesised, check_tool_package, role_statements
from tests.infra.test_retraining_review import STUCK, Json, Run, TaskError, _services, execute
from tests.infra.test_state_machine import _resolve

_REGION, _ACCOUNT = "us-east-1", "123456789012"
_DATABASE = "loan-db"  # what the database's Ref resolves to below
_SWEEPER_PATH = "/SnapshotSweeper/"
_SWEEPER_ACTIONS = {
    "rds:DescribeDBSnapshots",
    "rds:DeleteDBSnapshot",
    "rds:DescribeExportTasks",
    "rds:CancelExportTask",
    "xray:PutTraceSegments",
    "xray:PutTelemetryRecords",
    # Its own log group only (tests/infra/test_log_permissions.py)
    "logs:CreateLogStream",
    "logs:PutLogEvents",
}


@pytest.fixture(scope="module")
def definition(resources: Resources) -> Json:
    machine = next(r for r in resources.values() if r["Type"] == "AWS::StepFunctions::StateMachine")
    return json.loads(_resolve(machine["Properties"]["DefinitionString"], resources))


def _export_stuck(**overrides: Any) -> dict[str, Any]:
    """The scripted AWS answers of a run whose export stays IN_PROGRESS until the polls run out."""
    return {**_services(export_task=lambda _: {"Status": "IN_PROGRESS", "PercentProgress": 40}), **overrides}


def _rds_calls(run: Run) -> list[str]:
    return [action for action, _ in run.calls if action in ("rds:cancelExportTask", "rds:deleteDBSnapshot")]


def _refuse(error: str, cause: str) -> Any:
    def refuse(_: dict[str, Json]) -> Json:
        raise TaskError(error, cause)

    return refuse


# ---- the state machine: export polls exhausted -----------------------------------------------------


def test_given_an_export_still_running_when_the_polls_run_out_then_it_is_cancelled_before_the_cleanup(
    definition: Json,
) -> None:
    # Given an export that is still IN_PROGRESS after the last poll
    run = execute(definition, _export_stuck())

    # Then the run cancels that export, then deletes the snapshot of the same name, in that order
    snapshot_id = run.called("rds:createDBSnapshot")[0]["DbSnapshotIdentifier"]
    assert _rds_calls(run) == ["rds:cancelExportTask", "rds:deleteDBSnapshot"]
    assert run.called("rds:cancelExportTask") == [{"ExportTaskIdentifier": snapshot_id}]
    assert run.called("rds:deleteDBSnapshot") == [{"DbSnapshotIdentifier": snapshot_id}]
    # And it fails as ExportTimeout (raising TrainingFailures), the cause naming the export and the cancel
    assert (run.status, run.error) == ("FAILED", "ExportTimeout")
    assert run.cause is not None
    assert snapshot_id in run.cause
    assert "IN_PROGRESS" in run.cause
    assert "cancels it" in run.cause
    assert "cancel-export-task" not in run.cause  # no longer left to the operator
    assert not run.called("ecs:runTask.sync")


@pytest.mark.parametrize(
    ("cancel_error", "cleanup_fails"),
    [
        # The export ended between the last poll and the cancel: RDS refuses to cancel it
        ("Rds.InvalidExportTaskStateException", False),
        # RDS still refuses after the retries, and the snapshot (still being exported) cannot be deleted
        ("Rds.RdsException", True),
    ],
)
def test_given_the_cancel_fails_then_the_cleanup_still_runs_and_the_timeout_stays_the_runs_error(
    definition: Json, cancel_error: str, cleanup_fails: bool
) -> None:
    # Given a run whose export polls run out and whose cancel RDS refuses (and maybe the cleanup too)
    services = _export_stuck(**{"rds:cancelExportTask": _refuse(cancel_error, "cannot cancel")})
    if cleanup_fails:
        services["rds:deleteDBSnapshot"] = _refuse("Rds.InvalidDbSnapshotStateException", "being exported")
    run = execute(definition, services)

    # Then the cleanup still runs after the failed cancel
    assert _rds_calls(run) == ["rds:cancelExportTask", "rds:deleteDBSnapshot"]
    # And neither refusal replaces the run's own error and cause
    assert (run.status, run.error) == ("FAILED", "ExportTimeout")
    assert run.cause is not None
    assert "cannot cancel" not in run.cause
    assert "being exported" not in run.cause


@pytest.mark.parametrize(
    "services",
    [
        STUCK["snapshot"],
        _services(export_task=lambda _: {"Status": "FAILED", "FailureCause": "no access"}),
        _services(),
    ],
    ids=["snapshot-timeout", "export-failed", "success"],
)
def test_given_any_other_ending_then_no_export_is_cancelled(definition: Json, services: Any) -> None:
    # An export that ended by itself (or never started) has nothing to cancel
    run = execute(definition, services)
    assert not run.called("rds:cancelExportTask")
    assert len(run.called("rds:deleteDBSnapshot")) == 1


def test_given_the_state_machines_role_then_it_may_cancel_exports(resources: Resources) -> None:
    (machine,) = [r for r in resources.values() if r["Type"] == "AWS::StepFunctions::StateMachine"]
    role = machine["Properties"]["RoleArn"]["Fn::GetAtt"][0]
    # CancelExportTask has no resource type in IAM's service authorization reference: "*" is the only grant
    assert any(
        "rds:CancelExportTask" in _as_list(s["Action"]) and s["Resource"] == "*" and s["Effect"] == "Allow"
        for s in role_statements(resources, role)
    )


# ---- the sweeper: wiring, settings and schedule ----------------------------------------------------


def _sweeper(resources: Resources) -> tuple[str, dict[str, Any]]:
    (found,) = [
        (name, r)
        for name, r in resources.items()
        if r["Type"] == "AWS::Lambda::Function" and r["Properties"].get("Handler") == SWEEPER_HANDLER
    ]
    return found


def _one(resources: Resources, kind: str) -> tuple[str, dict[str, Any]]:
    (found,) = [(name, r) for name, r in resources.items() if r["Type"] == kind]
    return found


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def test_given_the_sweeper_then_it_sweeps_the_stacks_database_for_run_snapshots_older_than_any_run(
    resources: Resources, definition: Json
) -> None:
    _, function = _sweeper(resources)
    database, _ = _one(resources, "AWS::RDS::DBInstance")
    variables = function["Properties"]["Environment"]["Variables"]
    # The stack's database and the runs' snapshot prefix (the state machine's name for its snapshots)
    assert variables[DATABASE_ENV] == {"Ref": database}
    assert variables[PREFIX_ENV] == SNAPSHOT_PREFIX
    assert definition["States"]["Name the run"]["Parameters"]["snapshotId.$"].startswith(
        f"States.Format('{SNAPSHOT_PREFIX}{{}}'"
    )
    # Older than the state machine's timeout with a margin: a running execution's snapshot is never swept
    min_age = int(variables[MIN_AGE_ENV])
    assert min_age == MIN_SNAPSHOT_AGE.to_seconds()
    assert min_age >= definition["TimeoutSeconds"] + 3600


def test_given_the_sweeper_then_it_runs_daily_on_a_schedule_that_retries_delivery(
    resources: Resources,
) -> None:
    function_id, _ = _sweeper(resources)
    rules = [
        r["Properties"]
        for r in resources.values()
        if r["Type"] == "AWS::Events::Rule"
        and any(t["Arn"] == {"Fn::GetAtt": [function_id, "Arn"]} for t in r["Properties"].get("Targets", []))
    ]
    assert len(rules) == 1
    (rule,) = rules
    assert rule["ScheduleExpression"] == "rate(1 day)"
    assert SWEEP_INTERVAL.to_days() == 1
    assert rule["State"] == "ENABLED"
    assert rule["Targets"][0]["RetryPolicy"]["MaximumRetryAttempts"] > 0
    # And EventBridge may invoke the function
    permissions = [
        p["Properties"]
        for p in resources.values()
        if p["Type"] == "AWS::Lambda::Permission"
        and p["Properties"]["FunctionName"] == {"Fn::GetAtt": [function_id, "Arn"]}
    ]
    assert [p["Principal"] for p in permissions] == ["events.amazonaws.com"]


def test_given_manual_retraining_only_then_the_sweeper_still_runs(
    synthesised_with_options: Synthesised,
) -> None:
    # trainingSchedule=none: runs started by hand can be aborted just the same
    resources: Resources = synthesised_with_options.template_json["Resources"]
    _, function = _sweeper(resources)
    assert function["Properties"]["Environment"]["Variables"][PREFIX_ENV] == SNAPSHOT_PREFIX


def test_given_the_sweeper_then_a_failed_or_undelivered_sweep_raises_an_alarm(resources: Resources) -> None:
    function_id, _ = _sweeper(resources)
    rule_id = next(
        name
        for name, r in resources.items()
        if r["Type"] == "AWS::Events::Rule" and name.startswith("SnapshotSweeper")
    )
    alarms = [
        a["Properties"]
        for a in resources.values()
        if a["Type"] == "AWS::CloudWatch::Alarm"
        and "snapshots" in a["Properties"].get("AlarmDescription", "")
    ]
    assert len(alarms) == 1
    (alarm,) = alarms
    watched = {
        (m["MetricStat"]["Metric"]["Namespace"], m["MetricStat"]["Metric"]["MetricName"]): m["MetricStat"][
            "Metric"
        ]["Dimensions"]
        for m in alarm["Metrics"]
        if "MetricStat" in m
    }
    assert watched == {
        ("AWS/Lambda", "Errors"): [{"Name": "FunctionName", "Value": {"Ref": function_id}}],
        ("AWS/Events", "FailedInvocations"): [{"Name": "RuleName", "Value": {"Ref": rule_id}}],
    }
    assert (alarm["Threshold"], alarm["ComparisonOperator"]) == (0, "GreaterThanThreshold")
    assert alarm["TreatMissingData"] == "notBreaching"


# ---- the sweeper: least privilege ------------------------------------------------------------------


def _arn(value: Any, resources: Resources) -> str:
    """A policy resource as the ARN it names at deploy time (the database named _DATABASE)."""
    if isinstance(value, str):
        return value
    if "Fn::Join" in value:
        separator, parts = value["Fn::Join"]
        return str(separator).join(_arn(part, resources) for part in parts)
    if "Ref" in value:
        pseudo = {"AWS::Partition": "aws", "AWS::Region": _REGION, "AWS::AccountId": _ACCOUNT}
        name = value["Ref"]
        if name in pseudo:
            return pseudo[name]
        assert resources[name]["Type"] == "AWS::RDS::DBInstance", value
        return _DATABASE
    raise AssertionError(f"unexpected expression {value}")


def _allowed(resources: Resources, role: str, action: str, arn: str) -> bool:
    statements = role_statements(resources, role)
    assert all(s["Effect"] == "Allow" and "Condition" not in s for s in statements)
    return any(
        action in _as_list(s["Action"])
        and any(fnmatch.fnmatchcase(arn, _arn(r, resources)) for r in _as_list(s["Resource"]))
        for s in statements
    )


def _snapshot_arn(name: str) -> str:
    return f"arn:aws:rds:{_REGION}:{_ACCOUNT}:snapshot:{name}"


def _role(resources: Resources) -> str:
    _, function = _sweeper(resources)
    role: str = function["Properties"]["Role"]["Fn::GetAtt"][0]
    return role


def test_given_the_sweepers_role_then_it_may_delete_run_snapshots_only(resources: Resources) -> None:
    role = _role(resources)
    assert _allowed(resources, role, "rds:DeleteDBSnapshot", _snapshot_arn("train-0b1c"))
    for kept in ("manual-before-upgrade", "rds:loan-db-2026-01-01-03-00", "xtrain-0b1c"):
        assert not _allowed(resources, role, "rds:DeleteDBSnapshot", _snapshot_arn(kept)), kept
    # It never deletes a database, a cluster snapshot or anything but a snapshot
    db = f"arn:aws:rds:{_REGION}:{_ACCOUNT}:db:{_DATABASE}"
    assert not _allowed(resources, role, "rds:DeleteDBInstance", db)
    assert not _allowed(resources, role, "rds:DeleteDBSnapshot", db)


def test_given_the_sweepers_role_then_it_lists_the_databases_snapshots_and_holds_nothing_more(
    resources: Resources,
) -> None:
    role = _role(resources)
    db = f"arn:aws:rds:{_REGION}:{_ACCOUNT}:db:{_DATABASE}"
    assert _allowed(resources, role, "rds:DescribeDBSnapshots", db)
    assert _allowed(resources, role, "rds:DescribeDBSnapshots", _snapshot_arn("train-0b1c"))
    assert not _allowed(
        resources, role, "rds:DescribeDBSnapshots", f"arn:aws:rds:{_REGION}:{_ACCOUNT}:db:other"
    )
    statements = role_statements(resources, role)
    assert {a for s in statements for a in _as_list(s["Action"])} == _SWEEPER_ACTIONS
    # "*" only where IAM has no resource type: the export-task actions and X-Ray
    for statement in statements:
        if "*" in _as_list(statement["Resource"]):
            assert set(_as_list(statement["Action"])) <= {
                "rds:DescribeExportTasks",
                "rds:CancelExportTask",
                "xray:PutTraceSegments",
                "xray:PutTelemetryRecords",
            }
    # And no AWS-managed policy (AWSLambdaBasicExecutionRole would let it write every log group)
    assert "ManagedPolicyArns" not in resources[role]["Properties"]


# ---- logs, packaging, cdk-nag -----------------------------------------------------------------------


def test_given_the_sweeper_then_it_logs_json_to_a_group_encrypted_with_the_stacks_logs_key(
    resources: Resources,
) -> None:
    _, function = _sweeper(resources)
    logging_config = function["Properties"]["LoggingConfig"]
    assert (logging_config["LogFormat"], logging_config["ApplicationLogLevel"]) == ("JSON", "INFO")
    group = resources[logging_config["LogGroup"]["Ref"]]["Properties"]
    key_id = group["KmsKeyId"]["Fn::GetAtt"][0]
    assert key_id.startswith("LogsKey")
    assert resources[key_id]["Type"] == "AWS::KMS::Key"
    assert group["RetentionInDays"] > 0


def test_given_the_sweeper_then_cdk_nag_finds_nothing_unacknowledged_and_each_acknowledgement_is_known(
    synthesised: Synthesised,
) -> None:
    found: dict[str, set[str]] = {}
    for report in synthesised.validation_report["pluginReports"]:
        for violation in report.get("violations", []):
            paths = [c["constructPath"] for c in violation["violatingConstructs"]]
            assert not any(_SWEEPER_PATH in path for path in paths), violation["ruleName"]
        for acknowledged in report.get("suppressedViolations", []):
            paths = [c["constructPath"] for c in acknowledged["violatingConstructs"]]
            if any(_SWEEPER_PATH in path for path in paths):
                assert len(acknowledged["reason"].strip()) >= 80, acknowledged["ruleName"]
                found.setdefault(report["pluginName"], set()).add(acknowledged["ruleName"])
    # A new finding on the sweeper is a decision to write down (infra/snapshot_sweeper.py)
    assert found == {
        "AwsSolutions": {
            "AwsSolutions-L1",
            "AwsSolutions-IAM5[Resource::*]",
            "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:rds:<AWS::Region>:<AWS::AccountId>:snapshot:train-*]",
        },
        "Serverless": {"Serverless-LambdaDLQ", "Serverless-LambdaLatestVersion", "Serverless-EventBusDLQ"},
        "NIST.800.53.R5": {
            "NIST.800.53.R5-CloudWatchAlarmAction",
            "NIST.800.53.R5-IAMNoInlinePolicy",
            "NIST.800.53.R5-LambdaConcurrency",
            "NIST.800.53.R5-LambdaDLQ",
            "NIST.800.53.R5-LambdaInsideVPC",
        },
    }


def test_given_the_sweeper_package_then_it_holds_its_own_code_only_and_imports_on_a_bare_python(
    tmp_path: Path,
) -> None:
    check_tool_package("snapshot_sweeper", ["__init__", "handler", "selection", "sweep"], "sweep", tmp_path)
