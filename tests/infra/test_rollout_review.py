"""Review of model rollout and sourcing: new model -> new Lambda version -> canary on the alias; the
registry's promotion (gate, create-only versions, latest.json) and what a Lambda loads from S3."""

from __future__ import annotations

import hashlib
import io
import json
import math
import shutil
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3

from infra.config import AppConfig
from infra.serving import Serving
from lambdas.model_source import load_model_from_s3, parse_s3_uri
from tests.infra.conftest import REPO_ROOT
from training.dataload.storage import StorageError
from training.registry import (
    CARD_FILE,
    LATEST_FILE,
    MODEL_FILE,
    RegistryError,
    VersionExistsError,
    champion_card,
    download_bundle,
    gate,
    latest_pointer,
    read_bundle_card,
    register_bundle,
)

COMMITTED_BUNDLE = REPO_ROOT / "model_artifacts" / "credit_risk"
MODEL_NAME = "credit-risk-default-risk"

# ---- infra: one model version -> one published Lambda version behind the live alias ------------------


def _serving_template(model_bundle_version: str | None) -> dict[str, Any]:
    """Only the Serving construct in a small stack: cheaper than synthesising the whole app."""
    stack = cdk.Stack(cdk.App())
    Serving(
        stack,
        "Serving",
        config=AppConfig(lightweight_assets=True, model_bundle_version=model_bundle_version),
        model_registry=s3.Bucket(stack, "Registry"),
        logs_key=kms.Key(stack, "LogsKey"),
    )
    template = dict(cdk.assertions.Template.from_stack(stack).to_json())
    return template


def _of_type(resources: dict[str, Any], kind: str) -> dict[str, Any]:
    return {name: r for name, r in resources.items() if r["Type"] == kind}


@pytest.fixture(scope="module")
def serving_variants() -> dict[str | None, dict[str, Any]]:
    return {
        version: _serving_template(version)["Resources"]
        for version in (
            None,
            "credit_risk-default-risk/credit_risk-aaaaaaaaaaaa",
            "credit_risk-default-risk/credit_risk-bbbbbbbbbbbb",
        )
    }


def test_given_each_model_version_when_synthesised_then_each_gets_its_own_published_lambda_version(
    serving_variants: dict[str | None, dict[str, Any]],
) -> None:
    # Given the packaged bundle and two registered versions, When each is synthesised
    published = []
    for resources in serving_variants.values():
        (version,) = _of_type(resources, "AWS::Lambda::Version")
        (alias,) = _of_type(resources, "AWS::Lambda::Alias").values()
        # Then the alias serves that published version, and CodeDeploy (not CloudFormation) moves it
        assert alias["Properties"]["FunctionVersion"] == {"Fn::GetAtt": [version, "Version"]}
        assert "CodeDeployLambdaAliasUpdate" in alias["UpdatePolicy"]
        published.append(version)
    # And every model is a different Lambda version: a new model is a canary, never an in-place swap
    assert len(set(published)) == 3


def test_given_the_api_when_synthesised_then_api_gateway_only_reaches_the_live_alias(
    serving_variants: dict[str | None, dict[str, Any]],
) -> None:
    for resources in serving_variants.values():
        (alias,) = _of_type(resources, "AWS::Lambda::Alias")
        methods = _of_type(resources, "AWS::ApiGateway::Method")
        integrations = [
            m["Properties"]["Integration"] for m in methods.values() if "Integration" in m["Properties"]
        ]
        assert integrations
        for integration in integrations:
            # The alias's ARN ({"Ref": alias}), never the function (its $LATEST) or a fixed version
            uri = json.dumps(integration["Uri"])
            assert json.dumps({"Ref": alias}) in uri, uri
        permissions = _of_type(resources, "AWS::Lambda::Permission").values()
        assert permissions
        assert all(p["Properties"]["FunctionName"] == {"Ref": alias} for p in permissions)
        assert "$LATEST" not in json.dumps(resources)


def test_given_the_rollout_when_synthesised_then_its_error_alarm_watches_the_alias_the_new_version_serves(
    serving_variants: dict[str | None, dict[str, Any]],
) -> None:
    resources = serving_variants["credit_risk-default-risk/credit_risk-bbbbbbbbbbbb"]
    (alias_id,) = _of_type(resources, "AWS::Lambda::Alias")
    (group,) = _of_type(resources, "AWS::CodeDeploy::DeploymentGroup").values()
    alarms = [
        resources[a["Name"]["Ref"]]["Properties"] for a in group["Properties"]["AlarmConfiguration"]["Alarms"]
    ]
    (errors,) = [a for a in alarms if a["MetricName"] == "Errors"]
    function = resources[alias_id]["Properties"]["FunctionName"]
    # Resource=<function>:live: Lambda reports both versions' invocations through the weighted alias there
    assert {"Name": "Resource", "Value": {"Fn::Join": ["", [function, ":live"]]}} in errors["Dimensions"]
    assert group["Properties"]["AutoRollbackConfiguration"]["Enabled"] is True


# ---- registry ---------------------------------------------------------------------------------------


def _card(version: str, roc_auc: float = 0.93, brier: float = 0.08) -> dict[str, Any]:
    return {
        "model_name": MODEL_NAME,
        "model_version": version,
        "dataset": "credit_risk",
        "onnx": {"sha256": "set-by-bundle"},
        "holdout_metrics": {"roc_auc": roc_auc, "brier": brier},
        "parity": {"passed": True},
        "data": {"sha256": "data-1", "holdout": "stratified random 20% (seed 7)"},
    }


def _bundle(folder: Path, card: dict[str, Any], model: bytes) -> Path:
    folder.mkdir(parents=True)
    (folder / MODEL_FILE).write_bytes(model)
    onnx = {**card["onnx"], "sha256": hashlib.sha256(model).hexdigest()}
    (folder / CARD_FILE).write_text(json.dumps({**card, "onnx": onnx}))
    return folder


@pytest.mark.parametrize("metric", ["roc_auc", "brier"])
def test_given_a_candidate_with_a_nan_metric_when_gated_then_it_never_passes(metric: str) -> None:
    # Given a champion and a candidate whose holdout metric is NaN (e.g. a one-class holdout): every
    # comparison with NaN is False, so "worse than the champion" was never found and the gate passed.
    candidate = _card("v2")
    candidate["holdout_metrics"][metric] = math.nan
    # When gated, Then it is refused: an error naming the metric
    with pytest.raises(RegistryError, match=rf"holdout_metrics\.{metric} must be a finite number"):
        gate(candidate, _card("v1"))


def test_given_a_nan_metric_in_a_card_file_when_gated_then_it_is_refused(tmp_path: Path) -> None:
    # json.loads reads NaN, which json.dumps writes for a float('nan') metric
    bundle = _bundle(tmp_path / "b", _card("v2", roc_auc=math.nan, brier=math.nan), b"model")
    with pytest.raises(RegistryError, match="finite"):
        gate(read_bundle_card(bundle), _card("v1"))


def test_given_nan_champion_metrics_on_the_candidate_holdout_when_gated_then_it_is_refused() -> None:
    with pytest.raises(RegistryError, match="finite"):
        gate(
            _card("v2"),
            _card("v1"),
            champion_metrics_on_candidate_holdout={"roc_auc": math.nan, "brier": 0.1},
        )


def test_given_a_card_naming_another_onnx_file_when_registered_then_it_is_refused(tmp_path: Path) -> None:
    # Given a bundle whose card names "credit.onnx": the registry stores model.onnx, but the Lambdas load
    # the file the card names (lambdas/model_source.py), so the registered version could never be served.
    card = {**_card("v1"), "onnx": {"sha256": "", "file": "credit.onnx"}}
    bundle = _bundle(tmp_path / "b", card, b"model")
    # When registered, Then it is refused before anything is stored
    with pytest.raises(RegistryError, match=r"onnx\.file"):
        register_bundle(bundle, tmp_path / "registry")
    assert not (tmp_path / "registry").exists()


def test_given_a_stored_card_for_another_model_when_registering_then_latest_is_not_moved(
    tmp_path: Path,
) -> None:
    # Given a registry whose v2 folder already holds a card describing another model (left there by hand
    # or by a foreign tool), and a champion v1
    registry = tmp_path / "registry"
    register_bundle(_bundle(tmp_path / "b1", _card("v1"), b"one"), registry)
    stray = _bundle(tmp_path / "stray", _card("v2"), b"some other model")
    (registry / MODEL_NAME / "v2").mkdir()
    shutil.copy(stray / CARD_FILE, registry / MODEL_NAME / "v2" / CARD_FILE)
    # When v2 is registered, Then it is refused: its stored card does not describe its stored model
    with pytest.raises(RegistryError, match="does not describe"):
        register_bundle(_bundle(tmp_path / "b2", _card("v2"), b"two"), registry)
    # And latest still points at a version whose card matches its model
    pointer = latest_pointer(registry, MODEL_NAME)
    assert pointer is not None
    assert pointer["model_version"] == "v1"


def test_given_a_promotion_when_latest_moves_then_it_names_the_champion_it_replaced(tmp_path: Path) -> None:
    # Given v1 then v2 registered
    registry = tmp_path / "registry"
    register_bundle(_bundle(tmp_path / "b1", _card("v1"), b"one"), registry)
    first = latest_pointer(registry, MODEL_NAME)
    assert first is not None
    assert first["previous_model_version"] is None
    register_bundle(_bundle(tmp_path / "b2", _card("v2"), b"two"), registry)
    # Then latest.json says which champion v2 replaced (its older S3 versions expire after 30 days),
    # and that version is still downloadable for a rollback
    pointer = latest_pointer(registry, MODEL_NAME)
    assert pointer is not None
    assert (pointer["model_version"], pointer["previous_model_version"]) == ("v2", "v1")
    previous = download_bundle(registry, MODEL_NAME, tmp_path / "rollback", pointer["previous_model_version"])
    assert previous == "v1"
    assert (tmp_path / "rollback" / MODEL_FILE).read_bytes() == b"one"


def test_given_an_interrupted_registration_when_downloading_it_then_the_destination_keeps_its_bundle(
    tmp_path: Path,
) -> None:
    # Given a destination holding v1, and v2 whose registration stopped after its model was stored
    registry = tmp_path / "registry"
    register_bundle(_bundle(tmp_path / "b1", _card("v1"), b"one"), registry)
    destination = tmp_path / "champion"
    download_bundle(registry, MODEL_NAME, destination)
    (registry / MODEL_NAME / "v2").mkdir()
    (registry / MODEL_NAME / "v2" / MODEL_FILE).write_bytes(b"two")
    # When v2 is downloaded, Then it fails
    with pytest.raises((RegistryError, StorageError)):
        download_bundle(registry, MODEL_NAME, destination, version="v2")
    # And the destination still holds v1's matching pair, not v2's model beside v1's card
    assert (destination / MODEL_FILE).read_bytes() == b"one"
    assert read_bundle_card(destination)["model_version"] == "v1"


def test_given_a_registered_pair_that_no_longer_matches_when_downloading_then_nothing_is_written(
    tmp_path: Path,
) -> None:
    registry = tmp_path / "registry"
    register_bundle(_bundle(tmp_path / "b1", _card("v1"), b"one"), registry)
    (registry / MODEL_NAME / "v1" / MODEL_FILE).write_bytes(b"changed under the card")
    with pytest.raises(RegistryError, match="sha256"):
        download_bundle(registry, MODEL_NAME, tmp_path / "got")
    assert not (tmp_path / "got" / MODEL_FILE).exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b"[]", "JSON object"),
        (b'{"model_name": "x"}', "model_version"),
        (b'{"model_version": "../../elsewhere"}', "model_version"),
    ],
)
def test_given_a_corrupt_latest_pointer_when_reading_the_champion_then_a_registry_error_names_it(
    tmp_path: Path, content: bytes, message: str
) -> None:
    registry = tmp_path / "registry"
    register_bundle(_bundle(tmp_path / "b1", _card("v1"), b"one"), registry)
    (registry / MODEL_NAME / LATEST_FILE).write_bytes(content)
    with pytest.raises(RegistryError, match=message):
        champion_card(registry, MODEL_NAME)


def test_given_the_committed_bundle_when_registered_then_the_served_card_and_model_match(
    tmp_path: Path,
) -> None:
    # The real bundle goes through the same checks as the synthetic ones above.
    registry = tmp_path / "registry"
    version = register_bundle(COMMITTED_BUNDLE, registry)
    stored = registry / "credit_risk-default-risk" / version
    assert (stored / MODEL_FILE).read_bytes() == (COMMITTED_BUNDLE / MODEL_FILE).read_bytes()
    with pytest.raises(VersionExistsError):
        register_bundle(COMMITTED_BUNDLE, registry)


class _FolderS3:
    """The part of a boto3 S3 client model_source uses, reading a local registry folder."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def get_object(self, *, Bucket: str, Key: str) -> dict[str, Any]:  # noqa: N803 (boto3 names)
        return {"Body": io.BytesIO((self.root / Key).read_bytes())}


def test_given_a_registered_version_when_a_lambda_loads_it_from_its_folder_then_it_serves_that_version(
    tmp_path: Path,
) -> None:
    # Given the committed bundle registered as the pipeline does
    registry = tmp_path / "registry"
    version = register_bundle(COMMITTED_BUNDLE, registry)
    # When a Lambda loads MODEL_BUNDLE_URI=s3://<bucket>/models/<name>/<version>/ (here: the folder)
    location = parse_s3_uri(f"s3://artifacts/credit_risk-default-risk/{version}/")
    model = load_model_from_s3(_FolderS3(registry), location, threads=1)
    # Then it serves exactly the registered version
    assert model.model_version == version


def test_given_another_model_under_a_registered_version_when_the_cli_registers_it_then_it_fails(
    tmp_path: Path,
) -> None:
    from training.cli import main

    registry = tmp_path / "registry"
    register_bundle(_bundle(tmp_path / "b1", _card("v1"), b"one"), registry)
    impostor = _bundle(tmp_path / "b1-again", _card("v1"), b"another model")
    # The pipeline's register step must fail (the run would otherwise end "Candidate registered")
    assert main(["register", "--candidate", str(impostor), "--registry", str(registry)]) != 0
