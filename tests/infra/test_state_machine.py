"""The training state machine's definition is Amazon States Language: structural checks plus asl-validator.

CloudFormation receives the definition as an ``Fn::Join`` of JSON fragments and ``Ref``/``Fn::GetAtt`` tokens;
``_resolve`` turns the tokens into plausible placeholders (partition, ARNs, bucket names, subnet/group ids),
so the result is the JSON Step Functions will see. asl-validator (npm, pinned in package.json, installed by
``npm ci``) then validates it offline against the ASL schemas, transition targets and path syntax.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aws_cdk.assertions import Template

from infra.training_pipeline import EXPORT_ALREADY_EXISTS, SNAPSHOT_ALREADY_EXISTS, SNAPSHOT_NOT_FOUND
from tests.infra.conftest import REPO_ROOT, Resources, Synthesised

STATE_TYPES = {"Task", "Pass", "Choice", "Wait", "Succeed", "Fail", "Parallel", "Map"}
ASL_VALIDATOR = REPO_ROOT / "node_modules" / ".bin" / "asl-validator"
ACCOUNT, REGION = "123456789012", "eu-west-1"
PSEUDO_PARAMETERS = {
    "AWS::Partition": "aws",
    "AWS::Region": REGION,
    "AWS::AccountId": ACCOUNT,
    "AWS::URLSuffix": "amazonaws.com",
    "AWS::StackName": "LoanScoring-dev",
}


def _hex_id(logical_id: str) -> str:
    return hashlib.sha256(logical_id.encode()).hexdigest()[:17]


def _ref(logical_id: str, resources: Resources) -> str:
    if logical_id in PSEUDO_PARAMETERS:
        return PSEUDO_PARAMETERS[logical_id]
    kind = resources.get(logical_id, {}).get("Type")
    if kind == "AWS::EC2::Subnet":
        return f"subnet-{_hex_id(logical_id)}"
    if kind == "AWS::EC2::SecurityGroup":
        return f"sg-{_hex_id(logical_id)}"
    return logical_id.lower()  # a physical name: valid for buckets, DB instances, clusters, parameters


def _get_att(logical_id: str, attribute: str, resources: Resources) -> str:
    if attribute == "GroupId":
        return f"sg-{_hex_id(logical_id)}"
    if attribute != "Arn":
        return f"{logical_id.lower()}-{attribute.lower()}"
    _, service, resource_type = resources[logical_id]["Type"].split("::")
    region = "" if service == "IAM" else REGION  # IAM ARNs are global
    return f"arn:aws:{service.lower()}:{region}:{ACCOUNT}:{resource_type.lower()}/{logical_id.lower()}"


def _resolve(value: Any, resources: Resources) -> str:
    """Render the Fn::Join CloudFormation builds the definition with, tokens replaced by placeholders."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and len(value) == 1:
        (function, argument), *_ = value.items()
        if function == "Fn::Join":
            separator, parts = argument
            return str(separator).join(_resolve(part, resources) for part in parts)
        if function == "Ref":
            return _ref(argument, resources)
        if function == "Fn::GetAtt":
            logical_id, attribute = argument if isinstance(argument, list) else argument.split(".", 1)
            return _get_att(logical_id, attribute, resources)
    raise ValueError(f"no placeholder for {value!r}: teach _resolve this intrinsic function")


@pytest.fixture(scope="module")
def definition(resources: Resources) -> dict[str, Any]:
    machine = next(r for r in resources.values() if r["Type"] == "AWS::StepFunctions::StateMachine")
    parsed: dict[str, Any] = json.loads(_resolve(machine["Properties"]["DefinitionString"], resources))
    return parsed


def _successors(state: dict[str, Any]) -> list[str]:
    nexts = [state["Next"]] if "Next" in state else []
    nexts += [choice["Next"] for choice in state.get("Choices", [])]
    nexts += [state["Default"]] if "Default" in state else []
    nexts += [catch["Next"] for catch in state.get("Catch", [])]
    return nexts


def test_definition_is_well_formed_asl(definition: dict[str, Any]) -> None:
    states = definition["States"]
    assert definition["StartAt"] in states
    for name, state in states.items():
        assert state["Type"] in STATE_TYPES, name
        assert len(name) <= 80
        terminal = state["Type"] in ("Succeed", "Fail", "Choice") or state.get("End") is True
        assert terminal or "Next" in state, f"{name} neither ends nor has Next"
        for successor in _successors(state):
            assert successor in states, f"{name} -> unknown state {successor}"
    reachable, frontier = set(), [definition["StartAt"]]
    while frontier:
        current = frontier.pop()
        if current not in reachable:
            reachable.add(current)
            frontier += _successors(states[current])
    assert reachable == set(states), f"unreachable: {set(states) - reachable}"


def test_pipeline_runs_snapshot_export_train_gate_register_in_order(definition: dict[str, Any]) -> None:
    states = definition["States"]
    resources = {name: s.get("Resource", "") for name, s in states.items()}
    assert resources["Snapshot the database"].endswith(":rds:createDBSnapshot")
    assert resources["Export the snapshot to S3"].endswith(":rds:startExportTask")
    for step in ("Train the candidate", "Gate against the champion", "Register the bundle"):
        assert resources[step].endswith(":ecs:runTask.sync")
        assert states[step]["Parameters"]["Overrides"]["ContainerOverrides"][0]["Command.$"].startswith(
            "$.commands."
        )
    commands = states["Plan the training commands"]["Parameters"]
    for step in ("train", "gate", "register"):
        assert f"'{step}'" in commands[f"{step}.$"]
    assert states["Gate against the champion"]["Next"] == "Read the gate verdict"
    assert states["Read the gate verdict"]["Next"] == "Did the candidate win?"


def _reachable_from(start: str, states: dict[str, Any]) -> set[str]:
    reachable, frontier = set(), [start]
    while frontier:
        current = frontier.pop()
        if current not in reachable:
            reachable.add(current)
            frontier += _successors(states[current])
    return reachable


def test_given_a_failed_container_step_then_the_run_cannot_end_in_a_succeed_state(
    definition: dict[str, Any],
) -> None:
    # Given the three container steps: a crash, OOM kill or access denial is States.TaskFailed.
    states = definition["States"]
    for step in ("Train the candidate", "Gate against the champion", "Register the bundle"):
        # Then no step catches it: the execution fails, which is what raises the TrainingFailures alarm.
        assert "Catch" not in states[step], step
    # And no catcher that can lead to a Succeed state catches a failure: the only ones are the RDS
    # calls' "already done" answers after a lost reply (a retry meeting its own first attempt's result),
    # and each goes exactly where the answered call goes. Everything else ends in a Fail state.
    already_done = set(SNAPSHOT_ALREADY_EXISTS + EXPORT_ALREADY_EXISTS + SNAPSHOT_NOT_FOUND)
    continuing = []
    for name, state in states.items():
        for catcher in state.get("Catch", []):
            ends = {s for s in _reachable_from(catcher["Next"], states) if states[s]["Type"] == "Succeed"}
            if not ends:
                continue
            assert set(catcher["ErrorEquals"]) <= already_done, f"{name} catches {catcher['ErrorEquals']}"
            assert catcher["Next"] == state["Next"], f"{name}: {catcher['Next']} is not {state['Next']}"
            continuing.append(name)
    assert sorted(continuing) == ["Delete the snapshot", "Export the snapshot to S3", "Snapshot the database"]


def test_given_the_gate_decided_then_the_choice_branches_on_the_verdict_it_wrote(
    definition: dict[str, Any],
) -> None:
    states = definition["States"]
    # Given the gate command writes its verdict to <artifact bucket>/candidates/<execution name>/...
    read = states["Read the gate verdict"]
    bucket = read["Parameters"]["Bucket"]
    gate_command = states["Plan the training commands"]["Parameters"]["gate.$"]
    assert (
        f"'--verdict', States.Format('s3://{{}}/candidates/{{}}/gate_verdict.json', '{bucket}', "
        "$.run.executionId)" in gate_command
    )

    # When the state machine reads that same object (SDK s3:getObject) and parses the body as JSON
    assert read["Resource"].endswith(":states:::aws-sdk:s3:getObject")
    assert (
        read["Parameters"]["Key.$"] == "States.Format('candidates/{}/gate_verdict.json', $.run.executionId)"
    )
    assert read["ResultSelector"] == {"verdict.$": "States.StringToJson($.Body)"}
    assert read["ResultPath"] == "$.gate"
    assert "Catch" not in read  # a missing or unreadable verdict fails the run

    # Then the Choice sends passed=true to registration, passed=false to "Champion kept", anything else
    # to a Fail state
    choice = states["Did the candidate win?"]
    assert choice["Type"] == "Choice"
    branches = {(c["Variable"], c["BooleanEquals"]): c["Next"] for c in choice["Choices"]}
    assert branches == {
        ("$.gate.verdict.passed", True): "Register the bundle",
        ("$.gate.verdict.passed", False): "Champion kept",
    }
    assert states[choice["Default"]]["Type"] == "Fail"
    assert states["Register the bundle"]["Next"] == "Candidate registered"
    # And "Champion kept" is reached from the verdict only
    into_kept = [name for name, state in states.items() if "Champion kept" in _successors(state)]
    assert into_kept == ["Did the candidate win?"]


def test_training_runs_on_a_schedule(template: Template) -> None:
    template.has_resource_properties("AWS::Events::Rule", {"ScheduleExpression": "rate(30 days)"})


SCHEDULE_QUEUE_PREFIX = "TrainingScheduleDeadLetterQueue"


def _training_rules(resources: Resources) -> list[dict[str, Any]]:
    """The EventBridge rules that start the state machine (the snapshot sweeper has its own rule)."""
    return [
        r["Properties"]
        for r in resources.values()
        if r["Type"] == "AWS::Events::Rule"
        and any(
            resources[t["Arn"]["Ref"]]["Type"] == "AWS::StepFunctions::StateMachine"
            for t in r["Properties"]["Targets"]
            if "Ref" in t["Arn"]
        )
    ]


def test_given_the_schedule_when_a_start_cannot_be_delivered_then_it_lands_in_a_watched_queue(
    resources: Resources,
) -> None:
    # Given the schedule rule and its one target (the state machine)
    (rule,) = _training_rules(resources)
    (target,) = rule["Targets"]
    # Then undelivered starts are retried, then kept in an encrypted dead-letter queue
    assert target["RetryPolicy"] == {"MaximumRetryAttempts": 8, "MaximumEventAgeInSeconds": 6 * 3600}
    queue_id = target["DeadLetterConfig"]["Arn"]["Fn::GetAtt"][0]
    assert queue_id.startswith(SCHEDULE_QUEUE_PREFIX)
    queue = resources[queue_id]
    assert queue["Type"] == "AWS::SQS::Queue"
    assert queue["Properties"]["SqsManagedSseEnabled"] is True
    # And EventBridge may send to it for this rule only
    (policy,) = [
        r["Properties"]["PolicyDocument"]
        for r in resources.values()
        if r["Type"] == "AWS::SQS::QueuePolicy" and {"Ref": queue_id} in r["Properties"]["Queues"]
    ]
    (send,) = [s for s in policy["Statement"] if s["Effect"] == "Allow"]
    assert send["Principal"] == {"Service": "events.amazonaws.com"}
    assert send["Action"] == "sqs:SendMessage"
    assert "aws:SourceArn" in send["Condition"]["ArnEquals"]
    # And a message there raises an alarm
    watched = [
        a["Properties"]
        for a in resources.values()
        if a["Type"] == "AWS::CloudWatch::Alarm"
        and {"Name": "QueueName", "Value": {"Fn::GetAtt": [queue_id, "QueueName"]}}
        in a["Properties"].get("Dimensions", [])
    ]
    assert [a["MetricName"] for a in watched] == ["ApproximateNumberOfMessagesVisible"]
    assert watched[0]["Threshold"] == 0


def test_given_no_schedule_when_synthesised_then_there_is_no_schedule_queue(
    synthesised_with_options: Synthesised,
) -> None:
    # Given trainingSchedule=none (one of the options)
    resources = synthesised_with_options.template_json["Resources"]
    # Then neither the rule nor its dead-letter queue exists
    assert not _training_rules(resources)
    assert not [name for name in resources if name.startswith(SCHEDULE_QUEUE_PREFIX)]


def _run_asl_validator(definition: dict[str, Any], workdir: Path) -> subprocess.CompletedProcess[str]:
    """Validate with the pinned asl-validator CLI; fails in CI and skips locally without `npm ci`."""
    if not ASL_VALIDATOR.exists() or shutil.which("node") is None:
        if os.environ.get("CI") == "true":
            pytest.fail(
                "CI must run `npm ci` (make setup) before the infra tests: asl-validator or node missing"
            )
        pytest.skip("node_modules/.bin/asl-validator (or node) missing: run `npm ci`")
    path = workdir / "training.asl.json"
    path.write_text(json.dumps(definition, indent=2))
    return subprocess.run(
        [str(ASL_VALIDATOR), "--json-path", str(path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def _output(completed: subprocess.CompletedProcess[str]) -> str:
    return f"exit {completed.returncode}\nstdout:\n{completed.stdout}\nstderr:\n{completed.stderr}"


def test_given_the_synthesised_definition_when_asl_validator_runs_then_it_is_valid_asl(
    definition: dict[str, Any], tmp_path: Path
) -> None:
    completed = _run_asl_validator(definition, tmp_path)
    assert completed.returncode == 0, _output(completed)
    assert "is valid" in completed.stdout, _output(completed)


def _next_names_a_missing_state(states: dict[str, Any]) -> None:
    states["Wait for the snapshot"]["Next"] = "No such state"


def _unknown_state_type(states: dict[str, Any]) -> None:
    states["Candidate registered"]["Type"] = "Sleep"


def _malformed_result_path(states: dict[str, Any]) -> None:
    states["Check the snapshot"]["ResultPath"] = "$.snapshotStatus[["


@pytest.mark.parametrize(
    ("breakage", "expected_in_output"),
    [
        (_next_names_a_missing_state, "Missing 'StartAt'|'Next'|'Default' target: No such state"),
        (_unknown_state_type, "/States/Candidate registered/Type is invalid"),
        (_malformed_result_path, "/States/Check the snapshot/ResultPath is invalid"),
    ],
    ids=["missing-next-target", "unknown-state-type", "malformed-result-path"],
)
def test_given_a_broken_copy_of_the_definition_when_asl_validator_runs_then_it_is_rejected(
    definition: dict[str, Any],
    tmp_path: Path,
    breakage: Callable[[dict[str, Any]], None],
    expected_in_output: str,
) -> None:
    # Negative control: the same run on a deliberately broken copy must fail, so the check above can fail
    broken = copy.deepcopy(definition)
    breakage(broken["States"])
    completed = _run_asl_validator(broken, tmp_path)
    assert completed.returncode == 1, _output(completed)  # 1 = invalid definition, 2 = the validator crashed
    assert expected_in_output in completed.stdout + completed.stderr, _output(completed)
