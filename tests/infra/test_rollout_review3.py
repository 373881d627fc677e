"""Rollout review 3: a version label must name one model across a rollout.

The pre-traffic check and the audit trail tell versions apart by ``model_version`` only. A packaged
bundle whose card keeps a training-form version (``<dataset>-<12 hex of the ONNX sha256>``) while its
model changed would let a canary serve two models under one label, and the check would pass it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from infra.config import AppConfig, ConfigError
from infra.rollout import expected_model_version
from tests.infra.conftest import REPO_ROOT

_COMMITTED_CARD = REPO_ROOT / "model_artifacts" / "credit_risk" / "model_card.json"
_OTHER_SHA256 = "0123456789ab" + "c" * 52


def _bundle(folder: Path, *, model_version: str, sha256: str) -> Path:
    card = json.loads(_COMMITTED_CARD.read_text())
    card["model_version"] = model_version
    card["onnx"]["sha256"] = sha256
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model_card.json").write_text(json.dumps(card))
    return folder


def test_given_a_packaged_card_whose_version_names_another_model_when_synthesised_then_it_is_refused(
    tmp_path: Path,
) -> None:
    committed = json.loads(_COMMITTED_CARD.read_text())
    # The committed label, but the card now describes (and the loader would verify) another ONNX file.
    bundle = _bundle(tmp_path / "bundle", model_version=committed["model_version"], sha256=_OTHER_SHA256)

    with pytest.raises(ConfigError) as raised:
        expected_model_version(AppConfig(model_bundle_dir=str(bundle)))

    message = str(raised.value)
    assert "modelBundleDir" in message
    assert committed["model_version"] in message
    assert _OTHER_SHA256 in message


def test_given_a_packaged_card_whose_version_is_its_models_hash_when_synthesised_then_it_is_expected(
    tmp_path: Path,
) -> None:
    bundle = _bundle(tmp_path / "bundle", model_version="credit_risk-0123456789ab", sha256=_OTHER_SHA256)

    assert expected_model_version(AppConfig(model_bundle_dir=str(bundle))) == "credit_risk-0123456789ab"


def test_given_a_packaged_card_with_a_hand_named_version_when_synthesised_then_only_the_name_is_expected(
    tmp_path: Path,
) -> None:
    # Not training's form: the name embeds no hash, so there is nothing to compare (no false refusal).
    bundle = _bundle(tmp_path / "bundle", model_version="release-7", sha256=_OTHER_SHA256)

    assert expected_model_version(AppConfig(model_bundle_dir=str(bundle))) == "release-7"


def test_given_a_packaged_card_with_an_upper_case_digest_of_its_version_then_it_is_expected(
    tmp_path: Path,
) -> None:
    # The card's validator lower-cases onnx.sha256: the same hash must not fail the synthesis.
    upper = _OTHER_SHA256.upper()
    bundle = _bundle(tmp_path / "bundle", model_version="credit_risk-0123456789ab", sha256=upper)

    assert expected_model_version(AppConfig(model_bundle_dir=str(bundle))) == "credit_risk-0123456789ab"
