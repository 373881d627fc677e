"""Champion gate and immutable registration in a folder and in emulated S3."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from training.registry import (
    GateRule,
    RegistryError,
    VersionExistsError,
    champion_card,
    download_bundle,
    gate,
    latest_pointer,
    register_bundle,
)


def _card(
    version: str, roc_auc: float, brier: float, *, parity: bool = True, sha: str = "data-1"
) -> dict[str, Any]:
    return {
        "model_name": "credit-risk-default-risk",
        "model_version": version,
        "dataset": "credit_risk",
        "onnx": {"sha256": "set-by-bundle"},
        "holdout_metrics": {"roc_auc": roc_auc, "brier": brier},
        "parity": {"passed": parity},
        "data": {"sha256": sha, "holdout": "stratified random 20% (seed 7)"},
    }


def _bundle(folder: Path, card: dict[str, Any], model: bytes) -> Path:
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(model)
    card = {**card, "onnx": {"sha256": hashlib.sha256(model).hexdigest()}}
    (folder / "model_card.json").write_text(json.dumps(card))
    return folder


# --- gate -----------------------------------------------------------------------------------


def test_a_candidate_within_tolerance_of_the_champion_passes() -> None:
    decision = gate(_card("v2", 0.930, 0.080), _card("v1", 0.934, 0.078))
    assert decision.passed, decision.reasons
    assert decision.champion_version == "v1"


def test_a_candidate_worse_on_roc_auc_beyond_tolerance_fails_with_the_numbers() -> None:
    decision = gate(_card("v2", 0.925, 0.078), _card("v1", 0.934, 0.078))
    assert not decision.passed
    assert "ROC AUC 0.9250 is worse than the champion's 0.9340" in decision.reasons[0]


def test_a_candidate_worse_on_brier_beyond_tolerance_fails() -> None:
    decision = gate(_card("v2", 0.940, 0.090), _card("v1", 0.934, 0.078), GateRule(brier_tolerance=0.005))
    assert not decision.passed
    assert any("Brier 0.0900" in reason for reason in decision.reasons)


def test_a_candidate_that_failed_parity_never_passes_even_without_champion() -> None:
    assert not gate(_card("v1", 0.99, 0.01, parity=False), None).passed
    assert gate(_card("v1", 0.60, 0.20), None).passed


def test_cards_on_different_holdouts_are_not_compared_unless_champion_metrics_are_given() -> None:
    candidate, champion = _card("v2", 0.93, 0.08, sha="data-2"), _card("v1", 0.90, 0.09, sha="data-1")
    refused = gate(candidate, champion)
    assert not refused.passed
    assert "holdouts differ" in refused.reasons[0]
    # When the champion was re-scored on the candidate's holdout, the comparison is valid
    assert gate(
        candidate, champion, champion_metrics_on_candidate_holdout={"roc_auc": 0.92, "brier": 0.085}
    ).passed


def test_a_card_without_metrics_is_an_error_naming_the_key() -> None:
    card = _card("v2", 0.9, 0.1)
    del card["holdout_metrics"]["brier"]
    with pytest.raises(RegistryError, match=r"lacks holdout_metrics\.brier"):
        gate(card, None)


# --- registration ---------------------------------------------------------------------------


def test_registering_stores_the_bundle_and_moves_latest(registry: str, tmp_path: Path) -> None:
    # Given two bundles registered one after the other
    first = _bundle(tmp_path / "b1", _card("v1", 0.9, 0.1), b"onnx-one")
    second = _bundle(tmp_path / "b2", _card("v2", 0.91, 0.09), b"onnx-two")
    assert register_bundle(first, registry) == "v1"
    assert register_bundle(second, registry) == "v2"

    # Then latest points at the second, the champion card is its card, and both versions stay downloadable
    pointer = latest_pointer(registry, "credit-risk-default-risk")
    assert pointer is not None
    assert pointer["model_version"] == "v2"
    champion = champion_card(registry, "credit-risk-default-risk")
    assert champion is not None
    assert champion["model_version"] == "v2"
    assert download_bundle(registry, "credit-risk-default-risk", tmp_path / "got-v1", version="v1") == "v1"
    assert (tmp_path / "got-v1" / "model.onnx").read_bytes() == b"onnx-one"
    assert download_bundle(registry, "credit-risk-default-risk", tmp_path / "got-latest") == "v2"


def test_an_existing_version_is_never_overwritten(registry: str, tmp_path: Path) -> None:
    register_bundle(_bundle(tmp_path / "b1", _card("v1", 0.9, 0.1), b"original"), registry)
    impostor = _bundle(tmp_path / "b1-again", _card("v1", 0.99, 0.01), b"different bytes")
    with pytest.raises(VersionExistsError, match="versions are immutable"):
        register_bundle(impostor, registry)
    download_bundle(registry, "credit-risk-default-risk", tmp_path / "got")
    assert (tmp_path / "got" / "model.onnx").read_bytes() == b"original"


def test_a_bundle_whose_model_does_not_match_its_card_is_refused(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path / "b", _card("v1", 0.9, 0.1), b"model")
    (bundle / "model.onnx").write_bytes(b"tampered")
    with pytest.raises(RegistryError, match="has sha256"):
        register_bundle(bundle, tmp_path / "registry")
    assert not (tmp_path / "registry").exists()


def test_unsafe_version_names_are_refused(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path / "b", _card("../escape", 0.9, 0.1), b"model")
    with pytest.raises(RegistryError, match=r"model_version '\.\./escape'"):
        register_bundle(bundle, tmp_path / "registry")


def test_the_cli_registers_a_passing_bundle_and_refuses_a_worse_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from training.registry import main

    registry = str(tmp_path / "registry")
    # Given a champion registered through the CLI
    first = _bundle(tmp_path / "b1", _card("v1", 0.93, 0.08), b"champion")
    assert main(["register", "--bundle", str(first), "--registry", registry]) == 0
    assert json.loads(capsys.readouterr().out)["registered_version"] == "v1"

    # When a clearly worse candidate on the same holdout is offered
    worse = _bundle(tmp_path / "b2", _card("v2", 0.80, 0.12), b"worse")
    code = main(["register", "--bundle", str(worse), "--registry", registry])

    # Then it is refused (exit 1), nothing is stored, and latest still points at the champion
    assert code == 1
    assert json.loads(capsys.readouterr().out)["registered_version"] is None
    assert not (tmp_path / "registry" / "credit-risk-default-risk" / "v2").exists()
    pointer = latest_pointer(registry, "credit-risk-default-risk")
    assert pointer is not None
    assert pointer["model_version"] == "v1"
