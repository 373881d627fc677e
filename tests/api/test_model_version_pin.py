"""MODEL_BUNDLE_VERSION pins what a registered bundle serves to what was deployed.

``modelBundleVersion=<model>/<version>`` gives the API and the batch Lambda ``MODEL_BUNDLE_URI`` (the
version's folder in the artifact bucket) and ``MODEL_BUNDLE_VERSION`` (``<version>``). The folder's
card must name that version: an out-of-band overwrite of both files (a mistaken copy, a bucket
restored from elsewhere) fails the cold start instead of serving, and auditing, a model nobody
deployed. A version of the training pipeline's form ``<dataset>-<first 12 hex of the ONNX sha256>``
also pins the ONNX file. Without MODEL_BUNDLE_VERSION (local runs) the card's version is served.
S3 is moto over HTTP (``s3_endpoint``).
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Iterator

import boto3
import pytest

from lambdas.api.bundle import load_model
from lambdas.api.settings import Settings, SettingsError
from lambdas.api.wiring import create_handler
from lambdas.batch import wiring as batch_wiring
from lambdas.model_source import load_model_from_s3, parse_s3_uri
from lambdas.scoring.runtime import CARD_FILE, ModelBundleError
from tests.scoring.bundles import logistic_card, logistic_onnx_bytes

DEPLOYED = "test-logistic-2026-03-01-deployed"
OTHER = "test-logistic-2026-02-01-other"
ONNX = logistic_onnx_bytes()
SHA256 = hashlib.sha256(ONNX).hexdigest()
# The logistic card's dataset is "synthetic": the pipeline would name this model synthetic-<12 hex>.
DERIVED = f"synthetic-{SHA256[:12]}"
# The pipeline's form, but not this ONNX file's hash (a card edited to claim the deployed version).
WRONG_HASH = "synthetic-" + ("0" if SHA256[0] != "0" else "1") * 12


@pytest.fixture
def aws_env(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """boto3 pointed at the emulator (the API and batch Lambdas create their clients from the environment)."""
    env = {
        "AWS_ENDPOINT_URL": s3_endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("MODEL_BUNDLE_VERSION", raising=False)
    batch_wiring.loaded_model.cache_clear()
    batch_wiring.object_store.cache_clear()
    yield env
    batch_wiring.loaded_model.cache_clear()
    batch_wiring.object_store.cache_clear()


@pytest.fixture
def registry(aws_env: dict[str, str]) -> str:
    """A fresh bucket standing in for the artifact bucket (buckets are shared in the emulator)."""
    name = f"pin-{uuid.uuid4().hex[:12]}"
    boto3.client("s3").create_bucket(Bucket=name)
    return name


def register(bucket: str, folder: str, *, card_version: str) -> str:
    """The logistic bundle in ``models/<folder>/`` whose card names ``card_version``; returns the URI."""
    card = logistic_card(ONNX).model_copy(update={"model_version": card_version})
    s3 = boto3.client("s3")
    s3.put_object(Bucket=bucket, Key=f"models/{folder}/model.onnx", Body=ONNX)
    s3.put_object(Bucket=bucket, Key=f"models/{folder}/{CARD_FILE}", Body=card.model_dump_json().encode())
    return f"s3://{bucket}/models/{folder}/"


def deployed_env(uri: str, version: str) -> dict[str, str]:
    """What RegisteredBundle.environment() gives both functions (plus what the test process has)."""
    return {"MODEL_BUNDLE_URI": uri, "MODEL_BUNDLE_VERSION": version}


def assert_names(error: BaseException, uri: str, expected: str, found: str) -> None:
    """The refusal names the folder, the version deployed and the version found there."""
    message = str(error)
    assert uri in message
    assert f"{found!r}" in message
    assert f"{expected!r}" in message


# ---- the API's init ---------------------------------------------------------------------------------


def test_given_a_registered_folder_whose_card_names_another_version_when_the_api_starts_then_it_refuses(
    registry: str,
) -> None:
    # Given: the deployed version's folder holds a card (and its model) of another version
    uri = register(registry, f"logistic/{DEPLOYED}", card_version=OTHER)

    # When / Then: the cold start fails, naming the folder, the deployed and the found version
    with pytest.raises(ModelBundleError) as raised:
        create_handler(deployed_env(uri, DEPLOYED))
    assert_names(raised.value, uri, DEPLOYED, OTHER)


def test_given_the_deployed_version_in_its_folder_when_the_api_starts_then_it_serves_that_version(
    registry: str,
) -> None:
    uri = register(registry, f"logistic/{DEPLOYED}", card_version=DEPLOYED)

    settings = Settings.from_env(deployed_env(uri, DEPLOYED))

    assert settings.model_bundle_version == DEPLOYED
    assert load_model(settings).model_version == DEPLOYED


def test_given_no_model_bundle_version_when_the_api_loads_a_uri_then_the_cards_version_is_served(
    registry: str,
) -> None:
    # Given: a local run pointing at a folder, with no deployed version to compare with
    uri = register(registry, "logistic/local", card_version=OTHER)

    settings = Settings.from_env({"MODEL_BUNDLE_URI": uri})

    # Then: no check, explicitly: whatever the card names is served
    assert settings.model_bundle_version is None
    assert load_model(settings).model_version == OTHER


@pytest.mark.parametrize(
    ("env", "message"),
    [
        # The version pins a registered bundle: without its folder it would pin nothing.
        ({"MODEL_BUNDLE_VERSION": DEPLOYED}, "MODEL_BUNDLE_VERSION is set but MODEL_BUNDLE_URI is not"),
        (
            {"MODEL_BUNDLE_URI": "s3://models/logistic/v2/", "MODEL_BUNDLE_VERSION": "v2/../v3"},
            "MODEL_BUNDLE_VERSION must be",
        ),
    ],
)
def test_given_a_bad_model_bundle_version_when_api_settings_load_then_the_error_names_it(
    env: dict[str, str], message: str
) -> None:
    with pytest.raises(SettingsError, match=re.escape(message)):
        Settings.from_env(env)


# ---- the batch Lambda's init ------------------------------------------------------------------------


def test_given_a_registered_folder_whose_card_names_another_version_when_the_batch_starts_then_it_refuses(
    registry: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = register(registry, f"logistic/{DEPLOYED}", card_version=OTHER)
    for name, value in deployed_env(uri, DEPLOYED).items():
        monkeypatch.setenv(name, value)

    with pytest.raises(ModelBundleError) as raised:
        batch_wiring.loaded_model()
    assert_names(raised.value, uri, DEPLOYED, OTHER)


def test_given_the_deployed_version_in_its_folder_when_the_batch_starts_then_it_scores_with_it(
    registry: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = register(registry, f"logistic/{DEPLOYED}", card_version=DEPLOYED)
    for name, value in deployed_env(uri, DEPLOYED).items():
        monkeypatch.setenv(name, value)

    assert batch_wiring.model_bundle_version() == DEPLOYED
    assert batch_wiring.loaded_model().model_version == DEPLOYED


def test_given_no_model_bundle_version_when_the_batch_loads_a_uri_then_the_cards_version_is_served(
    registry: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = register(registry, "logistic/local", card_version=OTHER)
    monkeypatch.setenv("MODEL_BUNDLE_URI", uri)

    assert batch_wiring.model_bundle_version() is None
    assert batch_wiring.loaded_model().model_version == OTHER


def test_given_a_model_bundle_version_without_a_uri_when_the_batch_starts_then_the_error_names_both(
    aws_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MODEL_BUNDLE_URI", raising=False)
    monkeypatch.setenv("MODEL_BUNDLE_VERSION", DEPLOYED)

    with pytest.raises(
        batch_wiring.SettingsError, match="MODEL_BUNDLE_VERSION is set but MODEL_BUNDLE_URI is not"
    ):
        batch_wiring.loaded_model()


# ---- versions the training pipeline derives from the ONNX file --------------------------------------


def test_given_a_card_claiming_a_derived_version_of_another_model_when_loaded_then_it_is_refused(
    registry: str,
) -> None:
    # Given: the folder of version synthetic-<12 hex> holds a card naming that version, but the card's
    # (consistent) sha256 and model are another model's: the version is not this ONNX file's hash
    uri = register(registry, f"logistic/{WRONG_HASH}", card_version=WRONG_HASH)

    # When / Then
    with pytest.raises(ModelBundleError, match=re.escape(uri)) as raised:
        load_model_from_s3(boto3.client("s3"), parse_s3_uri(uri), threads=1, expected_version=WRONG_HASH)
    assert SHA256 in str(raised.value)
    assert WRONG_HASH.removeprefix("synthetic-") in str(raised.value)


def test_given_a_derived_version_that_is_the_models_hash_when_loaded_then_it_is_served(
    registry: str,
) -> None:
    uri = register(registry, f"logistic/{DERIVED}", card_version=DERIVED)

    model = load_model_from_s3(boto3.client("s3"), parse_s3_uri(uri), threads=1, expected_version=DERIVED)

    assert model.model_version == DERIVED


def test_given_a_version_not_of_the_pipelines_form_when_loaded_then_only_the_name_is_checked(
    registry: str,
) -> None:
    # A hand-named version ending like a hash but not <dataset>-<hash> (dataset "synthetic"): the 12
    # digits are not derived from the model, so they are not compared with its sha256.
    hand_named = "logistic-202603011230"
    uri = register(registry, f"logistic/{hand_named}", card_version=hand_named)

    model = load_model_from_s3(boto3.client("s3"), parse_s3_uri(uri), threads=1, expected_version=hand_named)

    assert model.model_version == hand_named
