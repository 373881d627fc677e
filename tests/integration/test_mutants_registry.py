"""Registry behaviours no test noticed when changed (a hand-made mutation run of training/registry.py).

The first tests reproduce a defect: an S3 registry location with a mistyped prefix read as an empty
registry, so the gate passed any candidate ("no champion registered") and registered it there, beside
the real champion.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

import training.registry as registry_module
from tests.integration.test_registry import _bundle, _card
from training.cli import main as training_main
from training.dataload.storage import Storage, StorageError, open_storage
from training.pipeline import HOLDOUT_BY_RECORD_HASH
from training.registry import (
    GateRule,
    RegistryError,
    champion_card,
    download_bundle,
    gate,
    gate_and_register,
    latest_pointer,
    main,
    read_bundle_card,
    register_bundle,
    signed,
)

MODEL_NAME = "credit-risk-default-risk"


def _keys(s3_client: Any, bucket: str, prefix: str) -> list[str]:
    listed = s3_client.list_objects_v2(Bucket=bucket, Prefix=prefix)
    return [str(item["Key"]) for item in listed.get("Contents", [])]


def _champion_at(registry: str, tmp_path: Path) -> None:
    """A registered champion v1 (ROC AUC 0.93, Brier 0.08) at ``registry``."""
    register_bundle(_bundle(tmp_path / "champion", _card("v1", 0.93, 0.08), b"champion"), registry)


# --- S3 locations that are not the registry ---------------------------------------------------


def test_given_a_mistyped_s3_prefix_beside_the_registry_when_gated_then_it_is_refused_naming_both(
    s3_client: Any, s3_bucket: str, tmp_path: Path
) -> None:
    # Given a champion registered at s3://bucket/models
    _champion_at(f"s3://{s3_bucket}/models", tmp_path)
    # When a much worse candidate is gated and registered at the mistyped s3://bucket/modles
    worse = _bundle(tmp_path / "worse", _card("v2", 0.60, 0.30), b"worse")
    with pytest.raises(RegistryError) as refused:
        gate_and_register(worse, f"s3://{s3_bucket}/modles")

    # Then it is refused, naming the location and the registry beside it, and nothing is written there
    message = str(refused.value)
    assert f"s3://{s3_bucket}/modles/ holds nothing of {MODEL_NAME}" in message
    assert f"s3://{s3_bucket}/models/ holds its registry" in message
    assert _keys(s3_client, s3_bucket, "modles/") == []


@pytest.mark.parametrize(
    "location", ["", "/models/credit-risk-default-risk"], ids=["bucket-root", "model-folder"]
)
def test_given_a_location_above_or_below_the_registry_when_its_champion_is_read_then_it_is_refused(
    s3_bucket: str, tmp_path: Path, location: str
) -> None:
    _champion_at(f"s3://{s3_bucket}/models", tmp_path)
    with pytest.raises(RegistryError, match=f"s3://{s3_bucket}/models/ holds its registry"):
        champion_card(f"s3://{s3_bucket}{location}", MODEL_NAME)


def test_given_a_new_registry_in_a_bucket_with_other_prefixes_then_the_first_registration_passes(
    s3_client: Any, s3_bucket: str, tmp_path: Path
) -> None:
    # Given a bucket holding run candidates and another model's registry, but none of this model's
    s3_client.put_object(Bucket=s3_bucket, Key=f"candidates/run-1/{MODEL_NAME}/model_card.json", Body=b"{}")
    s3_client.put_object(Bucket=s3_bucket, Key="staging/other-model/latest.json", Body=b"{}")
    # (and a stray copy named like a pointer, which is not one)
    s3_client.put_object(Bucket=s3_bucket, Key=f"staging/{MODEL_NAME}/latest.json.old", Body=b"{}")
    registry = f"s3://{s3_bucket}/models"

    # When the first version is gated and registered there
    decision, version = gate_and_register(_bundle(tmp_path / "b1", _card("v1", 0.9, 0.1), b"one"), registry)

    # Then it passes (nothing to replace) and latest points at it
    assert decision.passed, decision.reasons
    assert version == "v1"
    pointer = latest_pointer(registry, MODEL_NAME)
    assert pointer is not None
    assert pointer["model_version"] == "v1"


def test_given_a_registry_started_on_purpose_beside_another_then_new_registry_allows_it(
    s3_bucket: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _champion_at(f"s3://{s3_bucket}/models", tmp_path)
    candidate = _bundle(tmp_path / "b2", _card("v2", 0.60, 0.30), b"two")
    fork = f"s3://{s3_bucket}/models-v2"
    # Without the flag the CLI refuses (exit 2) and says how to start it on purpose
    assert main(["register", "--bundle", str(candidate), "--registry", fork]) == 2
    assert "--new-registry" in capsys.readouterr().err

    assert main(["register", "--bundle", str(candidate), "--registry", fork, "--new-registry"]) == 0
    assert json.loads(capsys.readouterr().out)["registered_version"] == "v2"
    # Once the new registry holds the model, it is read as itself
    assert download_bundle(fork, MODEL_NAME, tmp_path / "got") == "v2"


@pytest.mark.parametrize("command", ["gate", "register"])
def test_given_the_training_cli_then_new_registry_starts_a_registry_beside_another_too(
    s3_bucket: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    # python -m training, the command the deployed pipeline runs, takes the same option
    _champion_at(f"s3://{s3_bucket}/models", tmp_path)
    candidate = str(_bundle(tmp_path / "b2", _card("v2", 0.60, 0.30), b"two"))
    fork = f"s3://{s3_bucket}/models-v2"
    assert training_main([command, "--candidate", candidate, "--registry", fork]) == 2
    assert "pass --new-registry" in capsys.readouterr().err

    assert training_main([command, "--candidate", candidate, "--registry", fork, "--new-registry"]) == 0
    assert json.loads(capsys.readouterr().out)["passed"] is True


def test_given_an_interrupted_first_registration_beside_another_registry_then_registering_completes_it(
    s3_client: Any, s3_bucket: str, tmp_path: Path
) -> None:
    # Given a version stored (model and card) at s3://bucket/team without latest.json, and a registry
    # of the same model at s3://bucket/models
    _champion_at(f"s3://{s3_bucket}/models", tmp_path)
    bundle = _bundle(tmp_path / "b1", _card("t1", 0.9, 0.1), b"team")
    for name in ("model.onnx", "model_card.json"):
        s3_client.put_object(
            Bucket=s3_bucket, Key=f"team/{MODEL_NAME}/t1/{name}", Body=(bundle / name).read_bytes()
        )

    # Then the location holds the model: registering there again completes it
    decision, version = gate_and_register(bundle, f"s3://{s3_bucket}/team")
    assert version == "t1", decision.reasons
    pointer = latest_pointer(f"s3://{s3_bucket}/team", MODEL_NAME)
    assert pointer is not None
    assert pointer["model_version"] == "t1"


def test_given_a_bucket_that_does_not_exist_when_registering_then_the_error_names_it(
    moto_endpoint: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = _bundle(tmp_path / "b1", _card("v1", 0.9, 0.1), b"one")
    code = main(["register", "--bundle", str(bundle), "--registry", "s3://no-such-bucket-anywhere/models"])
    assert code == 2
    assert "bucket 'no-such-bucket-anywhere' does not exist" in capsys.readouterr().err


# --- gate ---------------------------------------------------------------------------------------

RECORD_HASH = f"{HOLDOUT_BY_RECORD_HASH} 20% (seed 7)"


def _record_hash_card(version: str, roc_auc: float, features: list[str], **extra: object) -> dict[str, Any]:
    card = _card(version, roc_auc, 0.08)
    card["data"]["holdout"] = RECORD_HASH
    return {**card, "features": [{"name": name} for name in features], **extra}


def test_given_a_record_hash_holdout_of_other_columns_then_the_cards_are_not_compared() -> None:
    # The same data and rule with other record columns put other rows in the holdout
    candidate = _record_hash_card("v2", 0.95, ["age", "income"])
    champion = _record_hash_card("v1", 0.90, ["age", "income", "debt"])
    decision = gate(candidate, champion)
    assert not decision.passed
    assert "holdouts differ" in decision.reasons[0]


def test_given_a_record_hash_holdout_without_protected_attributes_then_the_cards_are_compared() -> None:
    decision = gate(_record_hash_card("v2", 0.95, ["age"]), _record_hash_card("v1", 0.90, ["age"]))
    assert decision.passed, decision.reasons
    assert "ok: both cards describe the same data and holdout" in decision.reasons


def test_given_cards_of_other_datasets_with_equal_data_fields_then_they_are_not_compared() -> None:
    candidate = {**_card("v2", 0.95, 0.07), "dataset": "pkdd99_financial"}
    decision = gate(candidate, _card("v1", 0.90, 0.08))
    assert not decision.passed
    assert "holdouts differ" in decision.reasons[0]


def test_given_cards_without_a_data_hash_then_they_are_not_compared() -> None:
    # Nothing says the two holdouts are the same rows
    candidate, champion = _card("v2", 0.95, 0.07), _card("v1", 0.90, 0.08)
    for card in (candidate, champion):
        card["data"] = {"holdout": card["data"]["holdout"]}
    decision = gate(candidate, champion)
    assert not decision.passed
    assert "holdouts differ" in decision.reasons[0]


def test_given_champion_metrics_of_another_champion_in_the_card_then_they_are_not_used() -> None:
    # The candidate's card scored v0, but v1 is the champion now (and on another holdout)
    candidate = _card("v2", 0.93, 0.08, sha="data-2")
    candidate["champion_comparison"] = {
        "champion_version": "v0",
        "champion_metrics": {"roc_auc": 0.50, "brier": 0.30},
    }
    decision = gate(candidate, _card("v1", 0.94, 0.07, sha="data-1"))
    assert not decision.passed
    assert "did not score champion v1" in decision.reasons[0]


def test_given_a_boolean_metric_then_the_gate_refuses_the_card_naming_the_key() -> None:
    candidate = _card("v2", 0.93, 0.08)
    candidate["holdout_metrics"]["roc_auc"] = True  # JSON true is an int to Python, 1.0 to a comparison
    with pytest.raises(RegistryError, match=r"holdout_metrics\.roc_auc must be a finite number, got True"):
        gate(candidate, _card("v1", 0.90, 0.08))


def test_given_one_holdout_count_without_the_other_then_the_gate_names_the_missing_one() -> None:
    candidate = _card("v2", 0.93, 0.08)
    candidate["data"]["holdout_positives"] = 300
    with pytest.raises(RegistryError, match=r"data\.holdout_negatives must be a whole number >= 0, got None"):
        gate(candidate, _card("v1", 0.90, 0.08))


@pytest.mark.parametrize("minimum", [True, 1.5, -1])
def test_given_a_minimum_count_that_is_not_a_count_then_the_rule_is_refused(minimum: Any) -> None:
    with pytest.raises(ValueError, match="min_holdout_positives must be a whole number >= 0"):
        GateRule(min_holdout_positives=minimum)


def test_a_difference_that_rounds_to_zero_is_signed_plus() -> None:
    assert signed(-0.00001) == "+0.0000"
    assert signed(-0.00006) == "-0.0001"


# --- bundle cards -------------------------------------------------------------------------------


def _edit_card(bundle: Path, edit: Any) -> None:
    card = json.loads((bundle / "model_card.json").read_text())
    edit(card)
    (bundle / "model_card.json").write_text(json.dumps(card))


@pytest.mark.parametrize("onnx_file", ["other.onnx", ""])
def test_given_a_card_naming_another_onnx_file_then_the_bundle_is_refused(
    tmp_path: Path, onnx_file: str
) -> None:
    bundle = _bundle(tmp_path / "b", _card("v1", 0.9, 0.1), b"model")
    _edit_card(bundle, lambda card: card["onnx"].update(file=onnx_file))
    with pytest.raises(RegistryError, match=f"names onnx.file {onnx_file!r}; a bundle's model is model.onnx"):
        read_bundle_card(bundle)


@pytest.mark.parametrize(
    ("card_bytes", "message"),
    [(b"[1, 2]", "must hold a JSON object"), (b'{"a": "\x80"}', "is not valid JSON")],
    ids=["list", "not-utf8"],
)
def test_given_a_card_that_is_not_a_json_object_then_a_registry_error_names_it(
    tmp_path: Path, card_bytes: bytes, message: str
) -> None:
    bundle = _bundle(tmp_path / "b", _card("v1", 0.9, 0.1), b"model")
    (bundle / "model_card.json").write_bytes(card_bytes)
    with pytest.raises(RegistryError, match=f"model_card.json {message}"):
        read_bundle_card(bundle)


def test_a_version_named_dot_dot_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path / "b", _card("..", 0.9, 0.1), b"model")
    with pytest.raises(RegistryError, match=r"model_version '\.\.' must be 1-128 of letters"):
        register_bundle(bundle, tmp_path / "registry" / "inner")
    assert not (tmp_path / "registry").exists()


def test_the_cli_exits_2_on_an_invalid_bundle_not_1_as_for_a_refused_candidate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = _bundle(tmp_path / "b", _card("v1", 0.9, 0.1), b"model")
    (bundle / "model.onnx").write_bytes(b"tampered")
    assert main(["register", "--bundle", str(bundle), "--registry", str(tmp_path / "registry")]) == 2
    assert "has sha256" in capsys.readouterr().err


# --- registration and the pointer ---------------------------------------------------------------


def test_the_pointer_names_the_versions_files_hash_and_the_champion_it_replaced(
    registry: str, tmp_path: Path
) -> None:
    register_bundle(_bundle(tmp_path / "b1", _card("v1", 0.9, 0.1), b"one"), registry)
    register_bundle(_bundle(tmp_path / "b2", _card("v2", 0.9, 0.1), b"two"), registry)
    pointer = latest_pointer(registry, MODEL_NAME)
    assert pointer is not None
    assert pointer["model_key"] == f"{MODEL_NAME}/v2/model.onnx"
    assert pointer["card_key"] == f"{MODEL_NAME}/v2/model_card.json"
    assert pointer["onnx_sha256"] == hashlib.sha256(b"two").hexdigest()
    assert pointer["previous_model_version"] == "v1"


def test_given_a_stored_card_of_another_model_when_registering_then_latest_does_not_move(
    tmp_path: Path,
) -> None:
    registry = tmp_path / "registry"
    register_bundle(_bundle(tmp_path / "b1", _card("v1", 0.9, 0.1), b"one"), registry)
    # Given v2's model stored with a card describing other bytes (a hand copy gone wrong)
    bundle = _bundle(tmp_path / "b2", _card("v2", 0.9, 0.1), b"two")
    (registry / MODEL_NAME / "v2").mkdir()
    (registry / MODEL_NAME / "v2" / "model.onnx").write_bytes(b"two")
    other = {**_card("v2", 0.9, 0.1), "onnx": {"sha256": hashlib.sha256(b"else").hexdigest()}}
    (registry / MODEL_NAME / "v2" / "model_card.json").write_text(json.dumps(other))

    with pytest.raises(RegistryError, match="does not describe this version's model"):
        register_bundle(bundle, registry)
    pointer = latest_pointer(registry, MODEL_NAME)
    assert pointer is not None
    assert pointer["model_version"] == "v1"


class _Interleaved:
    """Registry storages whose first write of ``trigger`` (by any of them) first runs ``meanwhile``: another
    process acting between two steps of this one."""

    def __init__(self, trigger: str, meanwhile: Any) -> None:
        self.trigger, self.meanwhile = trigger, meanwhile
        self.fired = False

    def storage(self, inner: Storage) -> Any:
        interleaving = self

        class Wrapped:
            def __getattr__(self, name: str) -> Any:
                return getattr(inner, name)

            def write_bytes(self, key: str, data: bytes, **options: Any) -> None:
                if key == interleaving.trigger and not interleaving.fired:
                    interleaving.fired = True  # first: what runs meanwhile writes the key too
                    interleaving.meanwhile(inner)
                inner.write_bytes(key, data, **options)

        return Wrapped()


def _interleave(monkeypatch: pytest.MonkeyPatch, trigger: str, meanwhile: Any) -> _Interleaved:
    opened, interleaving = open_storage, _Interleaved(trigger, meanwhile)
    monkeypatch.setattr(
        registry_module, "open_storage", lambda location: interleaving.storage(opened(location))
    )
    return interleaving


def test_given_another_first_registration_meanwhile_then_the_first_pointer_is_not_overwritten(
    registry: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given two first registrations: the other one writes latest.json after this one read "none"
    other = json.dumps({"model_version": "other"}).encode()
    interleaving = _interleave(
        monkeypatch,
        f"{MODEL_NAME}/latest.json",
        lambda inner: inner.write_bytes(f"{MODEL_NAME}/latest.json", other, overwrite=False),
    )
    with pytest.raises(RegistryError, match="another registration moved it meanwhile"):
        register_bundle(_bundle(tmp_path / "b1", _card("v1", 0.9, 0.1), b"one"), registry)
    assert interleaving.fired
    monkeypatch.undo()
    pointer = latest_pointer(registry, MODEL_NAME)
    assert pointer is not None
    assert pointer["model_version"] == "other"


def test_given_the_same_version_registered_concurrently_then_both_succeed_and_keep_the_replaced_champion(
    registry: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    register_bundle(_bundle(tmp_path / "b1", _card("v1", 0.90, 0.10), b"one"), registry)
    bundle = _bundle(tmp_path / "b2", _card("v2", 0.91, 0.09), b"two")
    # When, between this register's model and card uploads, another register of v2 runs to the end
    interleaving = _interleave(
        monkeypatch, f"{MODEL_NAME}/v2/model_card.json", lambda inner: register_bundle(bundle, registry)
    )
    decision, version = gate_and_register(bundle, registry)
    assert interleaving.fired
    monkeypatch.undo()

    # Then this one completes too (latest already names v2), and v2 still replaced v1
    assert decision.passed, decision.reasons
    assert version == "v2"
    pointer = latest_pointer(registry, MODEL_NAME)
    assert pointer is not None
    assert (pointer["model_version"], pointer["previous_model_version"]) == ("v2", "v1")


def test_given_the_pointer_write_fails_then_a_registry_error_says_the_version_is_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(inner: Storage) -> None:
        raise StorageError("the disk is full")

    _interleave(monkeypatch, f"{MODEL_NAME}/latest.json", fail)
    with pytest.raises(
        RegistryError, match=r"v1 is stored but latest\.json was not updated: the disk is full"
    ):
        register_bundle(_bundle(tmp_path / "b1", _card("v1", 0.9, 0.1), b"one"), tmp_path / "registry")


@pytest.mark.parametrize(
    ("latest", "message"),
    [
        (b'{"model_version": "../v1"}', "latest.json model_version '../v1' must be"),
        (b"not json", "latest.json is not valid JSON"),
    ],
    ids=["unsafe-version", "not-json"],
)
def test_given_a_damaged_pointer_then_reading_the_champion_names_the_file(
    tmp_path: Path, latest: bytes, message: str
) -> None:
    registry = tmp_path / "registry"
    (registry / MODEL_NAME).mkdir(parents=True)
    (registry / MODEL_NAME / "latest.json").write_bytes(latest)
    with pytest.raises(RegistryError, match=message):
        champion_card(registry, MODEL_NAME)


def test_given_a_damaged_champion_card_then_reading_it_names_the_card(tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    register_bundle(_bundle(tmp_path / "b1", _card("v1", 0.9, 0.1), b"one"), registry)
    (registry / MODEL_NAME / "v1" / "model_card.json").write_bytes(b"{broken")
    with pytest.raises(RegistryError, match=r"champion card .*v1/model_card\.json is not valid JSON"):
        champion_card(registry, MODEL_NAME)


# --- download -----------------------------------------------------------------------------------


def test_given_an_unsafe_version_when_downloading_then_it_is_refused(tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    register_bundle(_bundle(tmp_path / "b1", _card("v1", 0.9, 0.1), b"one"), registry)
    with pytest.raises(RegistryError, match=r"version '\.\./v1' must be"):
        download_bundle(registry, MODEL_NAME, tmp_path / "got", version="../v1")


def test_given_a_stored_model_changed_in_place_when_downloading_then_nothing_is_written(
    tmp_path: Path,
) -> None:
    registry = tmp_path / "registry"
    register_bundle(_bundle(tmp_path / "b1", _card("v1", 0.9, 0.1), b"one"), registry)
    (registry / MODEL_NAME / "v1" / "model.onnx").write_bytes(b"swapped")
    with pytest.raises(RegistryError, match="has sha256"):
        download_bundle(registry, MODEL_NAME, tmp_path / "got")
    assert not (tmp_path / "got").exists()


def test_given_a_download_that_fails_half_way_then_no_temporary_file_stays(tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    register_bundle(_bundle(tmp_path / "b1", _card("v1", 0.9, 0.1), b"one"), registry)
    destination = tmp_path / "got"
    (destination / "model_card.json").mkdir(parents=True)  # the card cannot replace a folder
    with pytest.raises(IsADirectoryError, match=r"model_card\.json"):
        download_bundle(registry, MODEL_NAME, destination)
    assert [path.name for path in destination.iterdir() if path.name.endswith(".tmp")] == []
