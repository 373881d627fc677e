"""Registry review (rollout and rollback): what a registered version serves must be what was gated.

Both tests reproduced defects of training/registry.py: a version re-registered with another decision
policy was accepted (the stored card kept serving the old one), and of two registers gated against one
champion the weaker could become champion after the better one.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import pytest

import training.registry as registry_module
from tests.integration.test_registry import _bundle
from training.dataload.storage import ObjectChangedError, ObjectExistsError, Storage, open_storage
from training.registry import (
    RegistryError,
    VersionConflictError,
    gate_and_register,
    latest_pointer,
    register_bundle,
)

MODEL_NAME = "credit_risk-default-risk"
# Version names as a hand register gives them (training's <dataset>-<hash> names embed the ONNX hash).
CHAMPION, BETTER, WEAKER = "cand-c", "cand-b", "cand-a"


def _card(version: str, roc_auc: float, brier: float, threshold: float = 0.2) -> dict[str, Any]:
    return {
        "model_name": MODEL_NAME,
        "model_version": version,
        "dataset": "credit_risk",
        "holdout_metrics": {"roc_auc": roc_auc, "brier": brier},
        "parity": {"passed": True},
        "data": {
            "sha256": "data-1",
            "holdout": "stratified random 20% (seed 7)",
            "holdout_positives": 300,
            "holdout_negatives": 900,
        },
        # What the serving functions decide with: the model's probability against this threshold.
        "decision_policy": {"threshold": threshold, "approve_below_threshold": True},
    }


def _stored_card(registry: str, version: str) -> dict[str, Any]:
    storage = open_storage(registry)
    card: dict[str, Any] = json.loads(storage.read_bytes(f"{MODEL_NAME}/{version}/model_card.json"))
    return card


def test_given_a_version_stored_with_another_decision_policy_when_registered_again_then_it_is_refused(
    registry: str, tmp_path: Path
) -> None:
    # Given a version registered with threshold 0.2, then another champion
    model = b"the same onnx bytes"
    register_bundle(_bundle(tmp_path / "first", _card(CHAMPION, 0.80, 0.15, 0.2), model), registry)
    register_bundle(_bundle(tmp_path / "other", _card(BETTER, 0.81, 0.15), b"another model"), registry)
    # When the same model is registered with threshold 0.5 (a retrain with other costs gives the same
    # ONNX bytes, hence the same version name)
    retrained = _bundle(tmp_path / "retrained", _card(CHAMPION, 0.80, 0.15, 0.5), model)
    # Then the registry refuses: it would otherwise report the version registered and make it the
    # champion, while every function loading it decides with the stored threshold, 0.2.
    with pytest.raises(VersionConflictError, match="decision_policy"):
        register_bundle(retrained, registry)
    assert _stored_card(registry, CHAMPION)["decision_policy"]["threshold"] == 0.2
    pointer = latest_pointer(registry, MODEL_NAME)
    assert pointer is not None
    assert pointer["model_version"] == BETTER


def _champion_and_two_candidates(registry: str, tmp_path: Path) -> tuple[Path, Path]:
    """A registered champion, and two candidate bundles gated against it: a better one, and a weaker one
    within the tolerance of the champion but far below the better one."""
    register_bundle(_bundle(tmp_path / "c", _card(CHAMPION, 0.80, 0.15), b"model c"), registry)
    better = _bundle(tmp_path / "b", _card(BETTER, 0.90, 0.10), b"model b")
    weaker = _bundle(tmp_path / "a", _card(WEAKER, 0.797, 0.152), b"model a")
    return better, weaker


class _RegistersAnotherFirst:
    """The registry's storage, where the first write of ``trigger_key`` first lets another register run
    to the end: a retrain and a hand register of two candidates gated against the same champion."""

    def __init__(self, inner: Storage, trigger_key: str, other: Path, location: str) -> None:
        self._inner, self._trigger_key, self._other, self._location = inner, trigger_key, other, location

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def write_bytes(self, key: str, data: bytes, **options: Any) -> None:
        if key == self._trigger_key and not _RegistersAnotherFirst.fired:
            _RegistersAnotherFirst.fired = True
            decision, version = gate_and_register(self._other, self._location)
            assert decision.passed, decision
            assert version == BETTER
        self._inner.write_bytes(key, data, **options)

    fired = False


def _gate_and_register_while_another_registers(
    weaker: Path, better: Path, registry: str, trigger_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``gate_and_register(weaker)``, where its first write of ``trigger_key`` first lets the better
    candidate register to the end."""
    opened = open_storage
    _RegistersAnotherFirst.fired = False

    def interleaved(location: str | Path) -> Any:
        return _RegistersAnotherFirst(opened(location), trigger_key, better, str(location))

    with monkeypatch.context() as patched:
        patched.setattr(registry_module, "open_storage", interleaved)
        gate_and_register(weaker, registry)


def test_given_two_registers_gated_against_one_champion_when_they_overlap_then_the_weaker_is_not_champion(
    registry: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    better, weaker = _champion_and_two_candidates(registry, tmp_path)
    # When the weaker candidate's register (gated against the champion) uploads while the better one
    # registers to the end
    with contextlib.suppress(RegistryError):  # refusing it is correct too
        trigger = f"{MODEL_NAME}/{WEAKER}/model.onnx"
        _gate_and_register_while_another_registers(weaker, better, registry, trigger, monkeypatch)
    # Then the better candidate stays champion: the weaker one was never gated against it.
    assert _RegistersAnotherFirst.fired
    pointer = latest_pointer(registry, MODEL_NAME)
    assert pointer is not None
    assert pointer["model_version"] == BETTER, pointer


def test_given_the_pointer_moves_between_the_check_and_the_write_then_the_register_fails_and_keeps_it(
    registry: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    better, weaker = _champion_and_two_candidates(registry, tmp_path)
    # When the better one moves latest.json after the weaker one's check and before its write (the last
    # moment)
    trigger = f"{MODEL_NAME}/latest.json"
    with pytest.raises(RegistryError, match="another registration moved it meanwhile"):
        _gate_and_register_while_another_registers(weaker, better, registry, trigger, monkeypatch)
    # Then the weaker one's conditional write is refused and the better one stays champion
    assert _RegistersAnotherFirst.fired
    pointer = latest_pointer(registry, MODEL_NAME)
    assert pointer is not None
    assert (pointer["model_version"], pointer["previous_model_version"]) == (BETTER, CHAMPION)


@pytest.mark.parametrize("kind", ["folder", "s3"])
def test_given_a_stale_tag_when_writing_then_the_storage_refuses_and_keeps_the_newer_bytes(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    location = (
        str(tmp_path / "store") if kind == "folder" else f"s3://{request.getfixturevalue('s3_bucket')}/x"
    )
    storage = open_storage(location)
    storage.write_bytes("latest.json", b"first", overwrite=False)
    read = storage.read_versioned("latest.json")
    assert read is not None
    assert read[0] == b"first"
    storage.write_bytes("latest.json", b"second", if_match=read[1])
    # A writer still holding the first version's tag is refused
    with pytest.raises(ObjectChangedError):
        storage.write_bytes("latest.json", b"stale", if_match=read[1])
    assert storage.read_bytes("latest.json") == b"second"
    # And a create-only write of an existing key, as before
    with pytest.raises(ObjectExistsError):
        storage.write_bytes("latest.json", b"again", overwrite=False)
    assert storage.read_versioned("missing.json") is None
