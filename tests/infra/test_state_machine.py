"""The training state machine's definition is valid Amazon States Language (structural checks)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aws_cdk.assertions import Template

from tests.infra.conftest import Resources

STATE_TYPES = {"Task", "Pass", "Choice", "Wait", "Succeed", "Fail", "Parallel", "Map"}


def _render(value: Any) -> str:
    """Resolve the Fn::Join CloudFormation builds the definition with, using placeholders for refs."""
    if isinstance(value, str):
        return value
    if "Fn::Join" in value:
        separator, parts = value["Fn::Join"]
        return str(separator).join(_render(part) for part in parts)
    return "PLACEHOLDER"


@pytest.fixture(scope="module")
def definition(resources: Resources) -> dict[str, Any]:
    machine = next(r for r in resources.values() if r["Type"] == "AWS::StepFunctions::StateMachine")
    parsed: dict[str, Any] = json.loads(_render(machine["Properties"]["DefinitionString"]))
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
    assert states["Gate against the champion"]["Next"] == "Register the bundle"
    assert states["Gate against the champion"]["Catch"][0]["Next"] == "Champion kept"


def test_training_runs_on_a_schedule(template: Template) -> None:
    template.has_resource_properties("AWS::Events::Rule", {"ScheduleExpression": "rate(30 days)"})
