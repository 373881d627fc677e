"""Rollout review 4: what a deployed registered version serves stays what was gated and rolled out.

Both tests reproduce defects in files outside this review's reach (infra/training_pipeline.py and
infra/stack.py): registered files could be deleted (and then replaced by a create-only put), and the
batch function took a new model before the API's rollout had judged it.
"""

from __future__ import annotations

import json
from typing import Any

from infra.training_pipeline import REGISTERED_VERSION_FILES, REGISTRY_PREFIX
from tests.infra.conftest import Resources, Synthesised

_BATCH_HANDLER = "lambdas.batch.handler.handler"


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _logical_id(resources: Resources, kind: str, prefix: str) -> str:
    (found,) = [name for name, r in resources.items() if r["Type"] == kind and name.startswith(prefix)]
    return found


def test_given_the_artifact_bucket_then_no_principal_may_delete_a_registered_versions_files(
    synthesised: Synthesised,
) -> None:
    resources: Resources = synthesised.template_json["Resources"]
    bucket = _logical_id(resources, "AWS::S3::Bucket", "TrainingArtifactBucket")
    (statements,) = [
        r["Properties"]["PolicyDocument"]["Statement"]
        for r in resources.values()
        if r["Type"] == "AWS::S3::BucketPolicy" and r["Properties"]["Bucket"] == {"Ref": bucket}
    ]
    # A deleted model.onnx or card is "absent" to S3, so the If-None-Match put the bucket policy requires
    # then succeeds: the deployed version's folder would serve another card (or, for a hand-named
    # version, another model) under the same model_version, and a deleted one fails every cold start.
    wanted = {f"{REGISTRY_PREFIX}*/{name}" for name in REGISTERED_VERSION_FILES}
    for action in ("s3:DeleteObject", "s3:DeleteObjectVersion"):
        denied: set[str] = set()
        for statement in statements:
            if statement["Effect"] != "Deny" or statement["Principal"] != {"AWS": "*"}:
                continue
            if action not in _as_list(statement["Action"]) or statement.get("Condition"):
                continue
            for resource in _as_list(statement["Resource"]):
                denied.add(str(resource["Fn::Join"][1][-1]).removeprefix("/"))
        assert wanted <= denied, (action, json.dumps(statements)[:2000])


def _depends_on(resources: Resources, logical_id: str, seen: set[str] | None = None) -> set[str]:
    """Every resource ``logical_id`` waits for in CloudFormation: DependsOn, Ref and GetAtt, transitively."""
    seen = set() if seen is None else seen

    def references(value: Any) -> set[str]:
        if isinstance(value, dict):
            found = {value["Ref"]} if isinstance(value.get("Ref"), str) else set()
            if "Fn::GetAtt" in value:
                found.add(value["Fn::GetAtt"][0])
            return found.union(*(references(v) for v in value.values()))
        if isinstance(value, list):
            return set().union(*(references(v) for v in value))
        return set()

    resource = resources[logical_id]
    direct = set(_as_list(resource.get("DependsOn", []))) | references(resource.get("Properties", {}))
    for found in direct & set(resources) - seen:
        seen.add(found)
        _depends_on(resources, found, seen)
    return seen


def test_given_a_registered_version_then_the_batch_function_moves_to_it_only_after_the_api_rollout(
    synthesised_with_registry_model: Synthesised,
) -> None:
    resources: Resources = synthesised_with_registry_model.template_json["Resources"]
    alias = _logical_id(resources, "AWS::Lambda::Alias", "ServingLive")
    (batch,) = [
        name
        for name, r in resources.items()
        if r["Type"] == "AWS::Lambda::Function" and r["Properties"].get("Handler") == _BATCH_HANDLER
    ]
    role = resources[batch]["Properties"]["Role"]["Fn::GetAtt"][0]
    role_policies = [
        name
        for name, r in resources.items()
        if r["Type"] == "AWS::IAM::Policy" and {"Ref": role} in r["Properties"].get("Roles", [])
    ]
    # The alias's update is the CodeDeploy deployment (pre-traffic check, canary, alarms): until it
    # succeeds, batch files must be scored by the version the API's traffic is on, and a failed check
    # must leave the batch function untouched. Its role policy waits too: the batch may read the
    # configured version only, and a policy moved ahead of the configuration would deny the running one.
    for waiting in (batch, *role_policies):
        assert alias in _depends_on(resources, waiting), waiting
