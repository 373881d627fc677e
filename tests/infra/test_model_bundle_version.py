"""modelBundleVersion: the API and batch Lambdas load the same registered bundle, with read on that
version only."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.infra.conftest import REGISTERED_MODEL, Resources, Synthesised

_API_HANDLER = "lambdas.api.handler.handler"
_BATCH_HANDLER = "lambdas.batch.handler.handler"
_PREFIX = f"models/{REGISTERED_MODEL}/"
# Construct paths of the two functions, where their cdk-nag acknowledgements are recorded.
_FUNCTION_PATHS = ("/Serving/ScoringFunction", "/Batch/BatchFunction")


def _resources(synthesised: Synthesised) -> Resources:
    found: Resources = synthesised.template_json["Resources"]
    return found


def _function(resources: Resources, handler: str) -> tuple[str, dict[str, Any]]:
    return next(
        (name, r)
        for name, r in resources.items()
        if r["Type"] == "AWS::Lambda::Function" and r["Properties"]["Handler"] == handler
    )


def _role_statements(resources: Resources, function: dict[str, Any]) -> list[dict[str, Any]]:
    role = function["Properties"]["Role"]["Fn::GetAtt"][0]
    return [
        statement
        for r in resources.values()
        if r["Type"] == "AWS::IAM::Policy" and {"Ref": role} in r["Properties"]["Roles"]
        for statement in r["Properties"]["PolicyDocument"]["Statement"]
    ]


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
    artifacts = _logical_id(resources, "AWS::S3::Bucket", "TrainingArtifactBucket")
    assert artifacts not in json.dumps(_role_statements(resources, function))


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


@pytest.mark.parametrize("handler", [_API_HANDLER, _BATCH_HANDLER])
def test_given_a_registered_version_when_synthesised_then_the_function_reads_only_that_version(
    synthesised_with_registry_model: Synthesised, handler: str
) -> None:
    resources = _resources(synthesised_with_registry_model)
    artifacts = _logical_id(resources, "AWS::S3::Bucket", "TrainingArtifactBucket")
    artifact_key = _logical_id(resources, "AWS::KMS::Key", "TrainingArtifactKey")
    bucket_arn = {"Fn::GetAtt": [artifacts, "Arn"]}
    version_objects = {"Fn::Join": ["", [bucket_arn, f"/{_PREFIX}*"]]}
    _, function = _function(resources, handler)
    statements = _role_statements(resources, function)
    on_registry = [s for s in statements if artifacts in json.dumps(s["Resource"])]
    # Given the function's role, then only read statements name the artifact bucket (CDK merges the
    # batch's read on its own incoming/ into the same statement, having the same actions)...
    assert on_registry
    for statement in on_registry:
        assert statement["Effect"] == "Allow"
        assert "s3:GetObject*" in statement["Action"]
        assert not any(a.startswith(("s3:Put", "s3:Delete", "s3:Abort")) for a in statement["Action"])
    # ...and the artifact resources they name are this version's objects and the bucket ARN (which
    # carries no object access): never bucket/* or models/*.
    on_artifacts = [r for s in on_registry for r in _as_list(s["Resource"]) if artifacts in json.dumps(r)]
    assert sorted(map(json.dumps, on_artifacts)) == sorted(map(json.dumps, [bucket_arn, version_objects]))
    # And the artifact key is usable for decryption only.
    on_key = [s for s in statements if artifact_key in json.dumps(s["Resource"])]
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
    # And the wildcard acknowledged on each role is this version's folder, with its reason.
    resources = _resources(synthesised_with_registry_model)
    artifacts = _logical_id(resources, "AWS::S3::Bucket", "TrainingArtifactBucket")
    finding = f"AwsSolutions::AwsSolutions-IAM5[Resource::<{artifacts}.Arn>/{_PREFIX}*]"
    for path in _FUNCTION_PATHS:
        on_function = {
            s["acknowledgedId"]: s["reason"]
            for s in report["suppressedViolations"]
            if s["acknowledgedAt"].endswith(path) and "IAM5" in s["ruleName"]
        }
        assert finding in on_function, path
        assert _PREFIX in on_function[finding]
        assert not any(f"<{artifacts}.Arn>/*" in found or "/models/*" in found for found in on_function)


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
