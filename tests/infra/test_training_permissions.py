"""Least privilege in the retraining pipeline (infra/training_pipeline.py), read from the template.

Each container step (train, gate, register) runs its own task definition with its own task role; only
register may write under ``models/``, create-only (S3 conditional put) apart from ``latest.json``, and
nothing may delete or lock registry objects. The state machine's role is checked for the ECS and RDS
grants the review named.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.infra.conftest import Resources, role_statements

Statement = dict[str, Any]
STEPS = {
    "train": "Train the candidate",
    "gate": "Gate against the champion",
    "register": "Register the bundle",
}


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _logical_id(resources: Resources, kind: str, prefix: str) -> str:
    [found] = [name for name, r in resources.items() if r["Type"] == kind and name.startswith(prefix)]
    return found


def _object_patterns(statement: Statement, bucket: str) -> list[str]:
    """The key patterns (``models/*``) a statement names in ``bucket``; "" for the bucket itself."""
    patterns = []
    for resource in _as_list(statement["Resource"]):
        if resource == {"Fn::GetAtt": [bucket, "Arn"]}:
            patterns.append("")
        elif isinstance(resource, dict) and "Fn::Join" in resource:
            parts = resource["Fn::Join"][1]
            if parts[0] == {"Fn::GetAtt": [bucket, "Arn"]}:
                patterns.append("".join(parts[1:]).lstrip("/"))
    return patterns


def _step_roles(resources: Resources) -> dict[str, str]:
    """step -> task role logical id, following each ECS state's TaskDefinition (a family name)."""
    machine = next(r for r in resources.values() if r["Type"] == "AWS::StepFunctions::StateMachine")
    # The definition is an Fn::Join; every token sits inside a JSON string, so a placeholder keeps it JSON.
    parts = machine["Properties"]["DefinitionString"]["Fn::Join"][1]
    states = json.loads("".join(p if isinstance(p, str) else "token" for p in parts))["States"]
    role_of_family = {
        task["Properties"]["Family"]: task["Properties"]["TaskRoleArn"]["Fn::GetAtt"][0]
        for task in resources.values()
        if task["Type"] == "AWS::ECS::TaskDefinition"
    }
    return {
        step: role_of_family[states[state]["Parameters"]["TaskDefinition"]] for step, state in STEPS.items()
    }


@pytest.fixture(scope="module")
def step_roles(resources: Resources) -> dict[str, str]:
    roles = _step_roles(resources)
    assert set(roles) == set(STEPS), roles
    assert len(set(roles.values())) == 3, "each step needs its own task role"
    return roles


@pytest.fixture(scope="module")
def artifacts(resources: Resources) -> str:
    return _logical_id(resources, "AWS::S3::Bucket", "TrainingArtifactBucket")


def _writes(statements: list[Statement], bucket: str) -> list[tuple[str, str, Any]]:
    """(action, key pattern, condition) for every allowed non-read S3 action on ``bucket``."""
    found = []
    for statement in statements:
        if statement["Effect"] != "Allow":
            continue
        for action in _as_list(statement["Action"]):
            if action.startswith("s3:") and not action.startswith(("s3:Get", "s3:List")):
                found += [
                    (action, p, statement.get("Condition")) for p in _object_patterns(statement, bucket)
                ]
    return found


def test_given_train_and_gate_then_they_only_read_the_registry_and_write_their_run_prefix(
    resources: Resources, step_roles: dict[str, str], artifacts: str
) -> None:
    expected_writes = {
        "train": [("s3:PutObject", "candidates/*", None)],
        "gate": [("s3:PutObject", "candidates/*/gate_verdict.json", None)],
    }
    for step, writes in expected_writes.items():
        statements = role_statements(resources, step_roles[step])
        assert _writes(statements, artifacts) == writes, step
        reads = [
            p
            for s in statements
            if "s3:GetObject*" in _as_list(s["Action"])
            for p in _object_patterns(s, artifacts)
        ]
        assert "models/*" in reads, step


def test_given_each_step_then_it_reads_only_its_artifact_prefixes_and_may_list_key_names(
    resources: Resources, step_roles: dict[str, str], artifacts: str
) -> None:
    reads_by_step = {
        "train": ["models/*"],  # the champion; it only writes its candidate
        "gate": ["candidates/*", "models/*"],
        "register": ["candidates/*", "models/*"],
    }
    for step, patterns in reads_by_step.items():
        statements = role_statements(resources, step_roles[step])
        # Then on the bucket itself only s3:ListBucket (no s3:GetBucket*), unconditioned: S3 documents
        # a 404 rather than a 403 for a missing latest.json (a first run has no champion) only to a
        # caller with s3:ListBucket on the bucket
        on_bucket = [s for s in statements if "" in _object_patterns(s, artifacts)]
        assert on_bucket == [
            {"Action": "s3:ListBucket", "Effect": "Allow", "Resource": {"Fn::GetAtt": [artifacts, "Arn"]}}
        ], step
        reads = [
            p
            for s in statements
            if "s3:GetObject*" in _as_list(s["Action"])
            for p in _object_patterns(s, artifacts)
        ]
        assert sorted(reads) == patterns, step


def test_given_register_then_it_only_creates_new_registry_objects_and_moves_latest(
    resources: Resources, step_roles: dict[str, str], artifacts: str
) -> None:
    writes = _writes(role_statements(resources, step_roles["register"]), artifacts)
    # Only s3:PutObject: no DeleteObject*, PutObjectRetention, PutObjectLegalHold, tagging or Abort*
    assert {action for action, _, _ in writes} == {"s3:PutObject"}
    assert sorted(writes, key=lambda w: w[1]) == [
        # Create-only: the request must carry If-None-Match (S3 refuses it when the key exists)
        ("s3:PutObject", "models/*", {"Null": {"s3:if-none-match": "false"}}),
        # The champion pointer is the one registry object that is replaced
        ("s3:PutObject", "models/*/latest.json", None),
    ]


def test_given_any_training_task_role_then_nothing_deletes_or_locks_artifacts(
    resources: Resources, step_roles: dict[str, str]
) -> None:
    for step, role in step_roles.items():
        actions = {a for s in role_statements(resources, role) for a in _as_list(s["Action"])}
        forbidden = {
            a for a in actions if a.startswith(("s3:Delete", "s3:PutObjectRetention", "s3:PutObjectLegal"))
        }
        assert not forbidden, (step, forbidden)
        assert "s3:PutObject*" not in actions, step


def _machine_statements(resources: Resources) -> list[Statement]:
    machine = next(r for r in resources.values() if r["Type"] == "AWS::StepFunctions::StateMachine")
    return role_statements(resources, machine["Properties"]["RoleArn"]["Fn::GetAtt"][0])


def test_given_the_state_machine_role_then_stop_and_describe_tasks_are_limited_to_the_cluster(
    resources: Resources,
) -> None:
    cluster = _logical_id(resources, "AWS::ECS::Cluster", "TrainingCluster")
    statements = _machine_statements(resources)
    denies = [s for s in statements if s["Effect"] == "Deny"]
    assert denies == [
        {
            "Action": ["ecs:DescribeTasks", "ecs:StopTask"],
            "Condition": {"ArnNotEquals": {"ecs:cluster": {"Fn::GetAtt": [cluster, "Arn"]}}},
            "Effect": "Deny",
            "Resource": "*",
        }
    ]


def test_given_the_state_machine_creates_a_tagged_snapshot_then_it_may_tag_train_snapshots_only(
    resources: Resources,
) -> None:
    tagging = [s for s in _machine_statements(resources) if "rds:AddTagsToResource" in _as_list(s["Action"])]
    assert len(tagging) == 1
    [resource] = _as_list(tagging[0]["Resource"])
    assert json.dumps(resource).endswith(':snapshot:train-*"]]}')


def test_given_the_state_machine_reads_the_verdict_then_it_reads_nothing_else_in_the_artifact_bucket(
    resources: Resources, artifacts: str
) -> None:
    reads = [
        (action, pattern)
        for s in _machine_statements(resources)
        for action in _as_list(s["Action"])
        for pattern in _object_patterns(s, artifacts)
    ]
    assert reads == [("s3:GetObject", "candidates/*/gate_verdict.json")]


def test_given_train_then_it_reads_the_snapshot_exports_only_and_they_alone_expire(
    resources: Resources, step_roles: dict[str, str]
) -> None:
    exports = _logical_id(resources, "AWS::S3::Bucket", "DataExportBucket")
    statements = role_statements(resources, step_roles["train"])
    # Then train reads objects under exports/ (where StartExportTask writes), not the loader's datasets/
    reads = [
        p
        for s in statements
        if "s3:GetObject*" in _as_list(s["Action"])
        for p in _object_patterns(s, exports)
    ]
    assert reads == ["exports/*"]
    # And lists key names under that prefix only
    (listing,) = [s for s in statements if "" in _object_patterns(s, exports)]
    assert listing["Action"] == "s3:ListBucket"
    assert listing["Condition"] == {"StringLike": {"s3:prefix": ["exports/*"]}}
    # And the 90-day expiry applies to exports, not to files waiting for the loader
    rules = resources[exports]["Properties"]["LifecycleConfiguration"]["Rules"]
    assert [(r["Id"], r.get("Prefix")) for r in rules if "ExpirationInDays" in r] == [
        ("expire-exports", "exports/")
    ]
