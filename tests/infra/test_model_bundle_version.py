"""modelBundleVersion: the API Lambda loads a registered bundle, with read on that version only."""

from __future__ import annotations

import json
from typing import Any

from tests.infra.conftest import REGISTERED_MODEL, Resources, Synthesised

_API_HANDLER = "lambdas.api.handler.handler"
_BATCH_HANDLER = "lambdas.batch.handler.handler"
_PREFIX = f"models/{REGISTERED_MODEL}/"


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


def test_given_the_default_context_when_synthesised_then_the_api_serves_its_packaged_bundle(
    resources: Resources,
) -> None:
    _, api = _function(resources, _API_HANDLER)
    assert "MODEL_BUNDLE_URI" not in api["Properties"]["Environment"]["Variables"]
    artifacts = _logical_id(resources, "AWS::S3::Bucket", "TrainingArtifactBucket")
    assert artifacts not in json.dumps(_role_statements(resources, api))


def test_given_a_registered_version_when_synthesised_then_the_api_loads_it_from_the_registry(
    synthesised_with_registry_model: Synthesised,
) -> None:
    resources = _resources(synthesised_with_registry_model)
    artifacts = _logical_id(resources, "AWS::S3::Bucket", "TrainingArtifactBucket")
    _, api = _function(resources, _API_HANDLER)
    variables = api["Properties"]["Environment"]["Variables"]
    assert variables["MODEL_BUNDLE_URI"] == {"Fn::Join": ["", ["s3://", {"Ref": artifacts}, f"/{_PREFIX}"]]}
    # The batch handler only reads MODEL_BUNDLE_DIR, so it keeps its packaged bundle and gets no grant.
    _, batch = _function(resources, _BATCH_HANDLER)
    assert "MODEL_BUNDLE_URI" not in batch["Properties"]["Environment"]["Variables"]
    assert "models/" not in json.dumps(_role_statements(resources, batch))


def test_given_a_registered_version_when_synthesised_then_the_api_reads_only_that_version(
    synthesised_with_registry_model: Synthesised,
) -> None:
    resources = _resources(synthesised_with_registry_model)
    artifacts = _logical_id(resources, "AWS::S3::Bucket", "TrainingArtifactBucket")
    artifact_key = _logical_id(resources, "AWS::KMS::Key", "TrainingArtifactKey")
    bucket_arn = {"Fn::GetAtt": [artifacts, "Arn"]}
    version_objects = {"Fn::Join": ["", [bucket_arn, f"/{_PREFIX}*"]]}
    _, api = _function(resources, _API_HANDLER)
    on_registry = [s for s in _role_statements(resources, api) if artifacts in json.dumps(s["Resource"])]
    # Given the API role, then exactly one statement reads the artifact bucket: objects of this
    # version's folder only (the bucket ARN itself carries no object access), never bucket/* or models/*.
    assert len(on_registry) == 1
    (statement,) = on_registry
    assert statement["Effect"] == "Allow"
    assert "s3:GetObject*" in statement["Action"]
    assert not any(a.startswith(("s3:Put", "s3:Delete", "s3:Abort")) for a in statement["Action"])
    assert sorted(map(json.dumps, _as_list(statement["Resource"]))) == sorted(
        map(json.dumps, [bucket_arn, version_objects])
    )
    # And the artifact key is usable for decryption only.
    on_key = [s for s in _role_statements(resources, api) if artifact_key in json.dumps(s["Resource"])]
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
    # And the wildcard acknowledged on the API role is this version's folder, with its reason.
    resources = _resources(synthesised_with_registry_model)
    artifacts = _logical_id(resources, "AWS::S3::Bucket", "TrainingArtifactBucket")
    on_api = {
        s["acknowledgedId"]: s["reason"]
        for s in report["suppressedViolations"]
        if s["acknowledgedAt"].endswith("/Serving/ScoringFunction") and "IAM5" in s["ruleName"]
    }
    finding = f"AwsSolutions::AwsSolutions-IAM5[Resource::<{artifacts}.Arn>/{_PREFIX}*]"
    assert finding in on_api
    assert _PREFIX in on_api[finding]
    assert not any(f"<{artifacts}.Arn>/*" in found or "/models/*" in found for found in on_api)


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
