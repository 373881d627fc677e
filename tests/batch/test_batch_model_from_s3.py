"""MODEL_BUNDLE_URI: the batch Lambda serves a registered bundle from S3 (moto over HTTP), like the API.

With ``modelBundleVersion`` deployed both functions get the same URI, so batch files are scored (and
their manifests stamped) with the version the API serves; MODEL_BUNDLE_DIR stays set but is ignored.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from lambdas.batch import wiring as batch_wiring
from lambdas.scoring.runtime import CARD_FILE, ModelBundleError
from tests.batch.conftest import NotifiedBucket
from tests.batch.helpers import GOOD_ROWS, csv_bytes, expected_probability, read_scored
from tests.scoring.bundles import MODEL_VERSION, logistic_card, logistic_onnx_bytes

REGISTERED_VERSION = "test-logistic-2026-02-01-registered"
ONNX_FILE = "model.onnx"


@pytest.fixture
def registry_bucket(s3_client: Any) -> str:
    """A fresh bucket standing in for the training pipeline's artifact bucket (models/ registry)."""
    name = f"registry-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=name)
    return name


def put_bundle(
    s3: Any, bucket: str, prefix: str, *, onnx_body: bytes | None = None, skip: str | None = None
) -> None:
    """The logistic bundle under ``prefix``, as the training pipeline registers it, with its own version.

    ``onnx_body`` replaces the model object's bytes (the card keeps the true sha256); ``skip`` leaves
    one of the two objects out.
    """
    onnx_bytes = logistic_onnx_bytes()
    card = logistic_card(onnx_bytes).model_copy(update={"model_version": REGISTERED_VERSION})
    objects = {CARD_FILE: card.model_dump_json().encode(), ONNX_FILE: onnx_body or onnx_bytes}
    for name, body in objects.items():
        if name != skip:
            s3.put_object(Bucket=bucket, Key=f"{prefix}{name}", Body=body)


def test_given_a_model_bundle_uri_when_a_file_is_delivered_then_the_registered_version_scores_it(
    notified_bucket: NotifiedBucket, registry_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given: a registered version in S3 and MODEL_BUNDLE_URI pointing at it (MODEL_BUNDLE_DIR still
    # names the packaged bundle, of another version, as in the deployed function)
    put_bundle(notified_bucket.s3, registry_bucket, "models/logistic/v2/")
    monkeypatch.setenv("MODEL_BUNDLE_URI", f"s3://{registry_bucket}/models/logistic/v2")
    batch_wiring.loaded_model.cache_clear()
    notified_bucket.put("incoming/registry/applications.csv", csv_bytes(GOOD_ROWS))

    # When
    (manifest,) = notified_bucket.drain().manifests

    # Then: the manifest and every scored row carry the registered version, not the packaged one
    assert manifest["status"] == "succeeded"
    assert manifest["model_version"] == REGISTERED_VERSION != MODEL_VERSION
    assert manifest["counts"]["rows_scored"] == len(GOOD_ROWS)
    scored = read_scored("csv", notified_bucket.get("scored/registry/applications.csv"))
    assert [row["model_version"] for row in scored] == [REGISTERED_VERSION] * len(GOOD_ROWS)
    for row, original in zip(scored, GOOD_ROWS, strict=True):
        assert float(row["probability_of_default"]) == pytest.approx(expected_probability(original), abs=1e-9)


def test_given_a_tampered_model_object_in_s3_when_the_batch_loads_then_the_sha256_check_fails(
    batch_environment: None, s3_client: Any, registry_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    put_bundle(s3_client, registry_bucket, "models/logistic/tampered/", onnx_body=b"not the model")
    monkeypatch.setenv("MODEL_BUNDLE_URI", f"s3://{registry_bucket}/models/logistic/tampered/")

    with pytest.raises(
        ModelBundleError, match=rf"s3://{registry_bucket}/models/logistic/tampered/ does not match its card"
    ):
        batch_wiring.loaded_model()


@pytest.mark.parametrize("missing", [CARD_FILE, ONNX_FILE])
def test_given_an_incomplete_bundle_in_s3_when_the_batch_loads_then_the_error_names_the_uri_and_file(
    batch_environment: None,
    s3_client: Any,
    registry_bucket: str,
    monkeypatch: pytest.MonkeyPatch,
    missing: str,
) -> None:
    put_bundle(s3_client, registry_bucket, "models/logistic/partial/", skip=missing)
    monkeypatch.setenv("MODEL_BUNDLE_URI", f"s3://{registry_bucket}/models/logistic/partial/")

    with pytest.raises(
        ModelBundleError,
        match=rf"model bundle s3://{registry_bucket}/models/logistic/partial/ has no {missing}",
    ):
        batch_wiring.loaded_model()


@pytest.mark.parametrize(
    ("value", "message"),
    [("https://models/credit/", "must look like s3://"), ("s3:///credit/", "has no bucket")],
)
def test_given_a_malformed_model_bundle_uri_when_the_batch_loads_then_the_error_names_the_variable(
    batch_environment: None, monkeypatch: pytest.MonkeyPatch, value: str, message: str
) -> None:
    monkeypatch.setenv("MODEL_BUNDLE_URI", value)

    with pytest.raises(batch_wiring.SettingsError, match=f"MODEL_BUNDLE_URI {message}"):
        batch_wiring.loaded_model()
