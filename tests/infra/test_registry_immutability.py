"""Registered model versions are immutable for every principal, not only for the register role: the
artifact bucket's policy refuses a put of a version's model or card that does not carry If-None-Match
(S3's "Enforce conditional writes" bucket-policy pattern), so even an administrator cannot replace what a
deployed version serves; the champion pointer stays replaceable."""

from __future__ import annotations

from typing import Any

from infra.training_pipeline import REGISTERED_VERSION_FILES, REGISTRY_PREFIX
from tests.infra.conftest import Synthesised
from training.registry import CARD_FILE, LATEST_FILE, MODEL_FILE


def _artifact_bucket_policy(synthesised: Synthesised) -> list[dict[str, Any]]:
    resources = synthesised.template_json["Resources"]
    (bucket_id,) = [
        logical_id
        for logical_id, r in resources.items()
        if r["Type"] == "AWS::S3::Bucket" and "ArtifactBucket" in logical_id
    ]
    (policy,) = [
        r["Properties"]["PolicyDocument"]["Statement"]
        for r in resources.values()
        if r["Type"] == "AWS::S3::BucketPolicy" and r["Properties"]["Bucket"] == {"Ref": bucket_id}
    ]
    statements: list[dict[str, Any]] = policy
    return statements


def _object_pattern(resource: Any) -> str:
    """The key pattern of an ``arn_for_objects`` resource: the last literal part of its Fn::Join."""
    parts = resource["Fn::Join"][1]
    assert isinstance(parts[-1], str), resource
    return str(parts[-1]).removeprefix("/")


def test_given_the_registry_files_then_they_are_the_registrys_own_names() -> None:
    assert set(REGISTERED_VERSION_FILES) == {MODEL_FILE, CARD_FILE}
    assert LATEST_FILE not in REGISTERED_VERSION_FILES


def test_given_the_artifact_bucket_then_a_put_without_if_none_match_on_a_version_is_denied_to_all(
    synthesised: Synthesised,
) -> None:
    statements = _artifact_bucket_policy(synthesised)
    (deny,) = [s for s in statements if s.get("Sid") == "RegisteredVersionsAreNeverReplaced"]
    # Then every principal (an explicit deny no IAM grant lifts) ...
    assert deny["Effect"] == "Deny"
    assert deny["Principal"] == {"AWS": "*"}
    assert deny["Action"] == "s3:PutObject"
    # ... is refused a put without the header ...
    assert deny["Condition"] == {"Null": {"s3:if-none-match": "true"}}
    # ... on a registered version's model and card, and on nothing else (latest.json moves)
    patterns = sorted(_object_pattern(r) for r in deny["Resource"])
    assert patterns == sorted(f"{REGISTRY_PREFIX}*/{name}" for name in (MODEL_FILE, CARD_FILE))
    assert not any(p.endswith(LATEST_FILE) for p in patterns)
