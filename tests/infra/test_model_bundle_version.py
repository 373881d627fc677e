"""modelBundleVersion: the API and batch Lambdas load the same registered bundle. The batch function
reads that version only; the API reads the registry's bundles (its canary keeps the previous version
serving while the alias shifts, and that version must still load its own bundle)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.infra.conftest import REGISTERED_MODEL, Resources, Synthesised, role_statements

_API_HANDLER = "lambdas.api.handler.handler"
_BATCH_HANDLER = "lambdas.batch.handler.handler"
_PREFIX = f"models/{REGISTERED_MODEL}/"
# Construct paths of the two functions' execution roles (infra/execution_roles.py), where their grants
# and cdk-nag acknowledgements are recorded.
_FUNCTION_PATHS = ("/Serving/ScoringFunctionRole", "/Batch/BatchFunctionRole")


def _resources(synthesised: Synthesised) -> Resources:
    found: Resources = synthesised.template_json["Resources"]
    return found


def _function(resources: Resources, handler: str) -> tuple[str, dict[str, Any]]:
    return next(
        (name, r)
        for name, r in resources.items()
        if r["Type"] == "AWS::Lambda::Function" and r["Properties"]["Handler"] == handler
    )


def _statements_of(resources: Resources, function: dict[str, Any]) -> list[dict[str, Any]]:
    return role_statements(resources, function["Properties"]["Role"]["Fn::GetAtt"][0])


def _logical_id(resources: Resources, kind: str, prefix: str) -> str:
    return next(name for name, r in resources.items() if r["Type"] == kind and name.startswith(prefix))


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


@pytest.mark.parametrize("handler", [_API_HANDLER, _BATCH_HANDLER])
def test_given_the_default_context_when_synthesised_then_each_function_serves_its_packaged_bundle(
    resources: Resources, handler: str
) -> None:
    _, function = _function(resources, handler)
    assert "MODEL_BUNDLE_URI" not in function["Properties"]["Environment"]["Variables"]


def test_given_the_default_context_when_synthesised_then_only_the_api_may_read_registered_bundles(
    resources: Resources,
) -> None:
    artifacts = _logical_id(resources, "AWS::S3::Bucket", "TrainingArtifactBucket")
    _, batch = _function(resources, _BATCH_HANDLER)
    assert artifacts not in json.dumps(_statements_of(resources, batch))
    _, api = _function(resources, _API_HANDLER)
    assert _artifact_resources(resources, api) == _expected(artifacts, "models/*")


def _expected(artifacts: str, objects: str) -> list[str]:
    bucket_arn = {"Fn::GetAtt": [artifacts, "Arn"]}
    return sorted(map(json.dumps, [bucket_arn, {"Fn::Join": ["", [bucket_arn, f"/{objects}"]]}]))


def _artifact_resources(resources: Resources, function: dict[str, Any]) -> list[str]:
    """The artifact-bucket resources the function's role names, after checking they are read-only."""
    artifacts = _logical_id(resources, "AWS::S3::Bucket", "TrainingArtifactBucket")
    on_registry = [s for s in _statements_of(resources, function) if artifacts in json.dumps(s["Resource"])]
    # Only read statements name the artifact bucket (CDK merges the batch's read on its own incoming/
    # into the same statement, having the same actions).
    assert on_registry
    for statement in on_registry:
        assert statement["Effect"] == "Allow"
        actions = _as_list(statement["Action"])
        assert "s3:GetObject*" in actions or actions == ["s3:ListBucket"]
        assert not any(a.startswith(("s3:Put", "s3:Delete", "s3:Abort")) for a in actions)
    found = [r for s in on_registry for r in _as_list(s["Resource"]) if artifacts in json.dumps(r)]
    return sorted(map(json.dumps, found))


def test_given_a_registered_version_when_synthesised_then_api_and_batch_load_it_from_the_registry(
    synthesised_with_registry_model: Synthesised,
) -> None:
    resources = _resources(synthesised_with_registry_model)
    artifacts = _logical_id(resources, "AWS::S3::Bucket", "TrainingArtifactBucket")
    expected = {"Fn::Join": ["", ["s3://", {"Ref": artifacts}, f"/{_PREFIX}"]]}
    # Then both functions serve the same version: the API and batch scoring decide with one model.
    for handler in (_API_HANDLER, _BATCH_HANDLER):
        _, function = _function(resources, handler)
        assert function["Properties"]["Environment"]["Variables"]["MODEL_BUNDLE_URI"] == expected, handler


@pytest.mark.parametrize(
    ("handler", "objects"), [(_BATCH_HANDLER, f"{_PREFIX}*"), (_API_HANDLER, "models/*")]
)
def test_given_a_registered_version_when_synthesised_then_batch_reads_that_version_and_the_api_the_registry(
    synthesised_with_registry_model: Synthesised, handler: str, objects: str
) -> None:
    resources = _resources(synthesised_with_registry_model)
    artifacts = _logical_id(resources, "AWS::S3::Bucket", "TrainingArtifactBucket")
    artifact_key = _logical_id(resources, "AWS::KMS::Key", "TrainingArtifactKey")
    _, function = _function(resources, handler)
    # The artifact resources are the bucket ARN (no object access) and the allowed objects: never bucket/*
    assert _artifact_resources(resources, function) == _expected(artifacts, objects)
    # And on the bucket ARN it may only list key names under those objects
    on_bucket = [
        s for s in _statements_of(resources, function) if s["Resource"] == {"Fn::GetAtt": [artifacts, "Arn"]}
    ]
    assert [(s["Action"], s.get("Condition")) for s in on_bucket] == [
        ("s3:ListBucket", {"StringLike": {"s3:prefix": [objects]}})
    ]
    # And the artifact key is usable for decryption only.
    on_key = [s for s in _statements_of(resources, function) if artifact_key in json.dumps(s["Resource"])]
    assert [sorted(_as_list(s["Action"])) for s in on_key] == [["kms:Decrypt", "kms:DescribeKey"]]


def test_given_a_registered_version_when_synthesised_then_cdk_nag_reports_nothing_unacknowledged(
    synthesised_with_registry_model: Synthesised,
) -> None:
    (report,) = [
        r
        for r in synthesised_with_registry_model.validation_report["pluginReports"]
        if r["pluginName"] == "AwsSolutions"
    ]
    assert report.get("violations", []) == []
    # And the wildcard acknowledged on each role is its allowed folder, with a reason naming it.
    resources = _resources(synthesised_with_registry_model)
    artifacts = _logical_id(resources, "AWS::S3::Bucket", "TrainingArtifactBucket")
    for path, objects in zip(_FUNCTION_PATHS, ("models/*", f"{_PREFIX}*"), strict=True):
        finding = f"AwsSolutions::AwsSolutions-IAM5[Resource::<{artifacts}.Arn>/{objects}]"
        on_function = {
            s["acknowledgedId"]: s["reason"]
            for s in report["suppressedViolations"]
            if s["acknowledgedAt"].endswith(path) and "IAM5" in s["ruleName"]
        }
        assert finding in on_function, path
        assert objects in on_function[finding]
        assert not any(f"<{artifacts}.Arn>/*]" in found for found in on_function)


def test_given_a_new_version_when_synthesised_then_the_live_alias_gets_a_new_lambda_version(
    synthesised: Synthesised, synthesised_with_registry_model: Synthesised
) -> None:
    # Changing modelBundleVersion changes the function's configuration, so a deploy publishes a new
    # Lambda version and moves the live alias to it (rollback: deploy the previous value again).
    versions = []
    for variant in (synthesised, synthesised_with_registry_model):
        resources = _resources(variant)
        version = _logical_id(resources, "AWS::Lambda::Version", "ServingScoringFunctionCurrentVersion")
        alias = next(r for r in resources.values() if r["Type"] == "AWS::Lambda::Alias")
        assert alias["Properties"]["Name"] == "live"
        assert alias["Properties"]["FunctionVersion"] == {"Fn::GetAtt": [version, "Version"]}
        versions.append(version)
    assert versions[0] != versions[1]
