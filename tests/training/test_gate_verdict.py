"""`python -m training gate --verdict`: the file the Step Functions pipeline branches on.

The gate exits 0 for both decisions and writes ``{"passed": true|false, ...}``; when the gate itself
fails (unreadable candidate, tampered model, broken registry) it exits non-zero and writes nothing, so
the pipeline's task fails instead of reading as "champion kept". Bundles here are tiny hand-made
folders (the gate reads cards as JSON and checks the model's sha256), no training involved.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from training import cli
from training.cli import main as training_main
from training.registry import GateDecision, register_bundle

MODEL_NAME = "credit_risk-default-risk"


def _bundle(folder: Path, version: str, roc_auc: float, brier: float, *, parity: bool = True) -> Path:
    model = f"onnx bytes of {version}".encode()
    card = {
        "model_name": MODEL_NAME,
        "model_version": version,
        "dataset": "credit_risk",
        "onnx": {"sha256": hashlib.sha256(model).hexdigest()},
        "holdout_metrics": {"roc_auc": roc_auc, "brier": brier},
        "parity": {"passed": parity},
        "data": {"sha256": "data-1", "holdout": "stratified random 20% (seed 42)"},
    }
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(model)
    (folder / "model_card.json").write_text(json.dumps(card))
    return folder


@pytest.fixture
def registry(tmp_path: Path) -> Path:
    """A registry whose champion has holdout ROC AUC 0.940 and Brier 0.060."""
    location = tmp_path / "registry"
    register_bundle(_bundle(tmp_path / "champion", "v1", 0.940, 0.060), location)
    return location


def _gate(candidate: Path, registry: Path, verdict: Path) -> int:
    arguments = ["gate", "--candidate", str(candidate), "--registry", str(registry)]
    return training_main([*arguments, "--verdict", str(verdict)])


def _verdict(path: Path) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(path.read_text())
    return found


def test_given_a_better_candidate_when_gated_then_it_exits_0_and_the_verdict_says_passed(
    tmp_path: Path, registry: Path
) -> None:
    candidate = _bundle(tmp_path / "candidate", "v2", 0.950, 0.055)
    verdict = tmp_path / "run" / "gate_verdict.json"

    assert _gate(candidate, registry, verdict) == 0

    written = _verdict(verdict)
    assert written["passed"] is True  # a JSON boolean: the state machine's Choice uses BooleanEquals
    assert written["model_name"] == MODEL_NAME
    assert (written["candidate_version"], written["champion_version"]) == ("v2", "v1")


def test_given_a_worse_candidate_when_gated_then_it_still_exits_0_and_the_verdict_says_not_passed(
    tmp_path: Path, registry: Path
) -> None:
    # Given a challenger 0.02 ROC AUC below the champion (tolerance 0.005)
    candidate = _bundle(tmp_path / "candidate", "v2", 0.920, 0.060)
    verdict = tmp_path / "gate_verdict.json"

    # When gated with --verdict, then "not better" is a decision (exit 0), not a failure
    assert _gate(candidate, registry, verdict) == 0

    written = _verdict(verdict)
    assert written["passed"] is False
    assert any("ROC AUC" in reason for reason in written["reasons"])


def test_given_no_champion_when_gated_then_the_verdict_says_passed(tmp_path: Path) -> None:
    candidate = _bundle(tmp_path / "candidate", "v1", 0.700, 0.150)
    verdict = tmp_path / "gate_verdict.json"

    registry = tmp_path / "empty-registry"
    registry.mkdir()  # an empty registry, not a mistyped path (which gate refuses)
    assert _gate(candidate, registry, verdict) == 0

    written = _verdict(verdict)
    assert written["passed"] is True
    assert written["champion_version"] is None


def test_given_a_candidate_that_failed_parity_when_gated_then_the_verdict_says_not_passed(
    tmp_path: Path,
) -> None:
    candidate = _bundle(tmp_path / "candidate", "v1", 0.990, 0.010, parity=False)
    verdict = tmp_path / "gate_verdict.json"

    registry = tmp_path / "empty-registry"
    registry.mkdir()  # an empty registry, not a mistyped path (which gate refuses)
    assert _gate(candidate, registry, verdict) == 0
    assert _verdict(verdict)["passed"] is False


def test_given_a_tampered_candidate_when_gated_then_the_gate_fails_and_writes_no_verdict(
    tmp_path: Path, registry: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a candidate whose model.onnx no longer matches its card's sha256
    candidate = _bundle(tmp_path / "candidate", "v2", 0.950, 0.055)
    (candidate / "model.onnx").write_bytes(b"tampered")
    verdict = tmp_path / "gate_verdict.json"

    # When gated, then the gate fails (non-zero, a clear message) and leaves no verdict to branch on
    assert _gate(candidate, registry, verdict) == 2
    assert "sha256" in capsys.readouterr().err
    assert not verdict.exists()


def test_given_a_missing_candidate_when_gated_then_the_gate_fails_and_writes_no_verdict(
    tmp_path: Path, registry: Path
) -> None:
    verdict = tmp_path / "gate_verdict.json"
    assert _gate(tmp_path / "no-such-candidate", registry, verdict) != 0
    assert not verdict.exists()


def test_given_a_champion_card_that_cannot_be_read_when_gated_then_the_gate_fails(
    tmp_path: Path, registry: Path
) -> None:
    # Given latest.json pointing at a version whose card is not in the registry
    (registry / MODEL_NAME / "latest.json").write_text(json.dumps({"model_version": "gone"}))
    candidate = _bundle(tmp_path / "candidate", "v2", 0.950, 0.055)
    verdict = tmp_path / "gate_verdict.json"

    assert _gate(candidate, registry, verdict) == 2
    assert not verdict.exists()


def test_given_no_verdict_option_when_a_worse_candidate_is_gated_then_it_exits_1(
    tmp_path: Path, registry: Path
) -> None:
    # Used by hand: without --verdict the exit code still carries the decision (0 passed, 1 not)
    candidate = _bundle(tmp_path / "candidate", "v2", 0.920, 0.060)
    arguments = ["gate", "--candidate", str(candidate), "--registry", str(registry)]
    assert training_main(arguments) == 1


class _RecordingStorage:
    def __init__(self, location: str, writes: list[tuple[str, str, bytes, str | None]]) -> None:
        self.location, self.writes = location, writes

    def write_bytes(
        self, key: str, data: bytes, *, overwrite: bool = True, content_type: str | None = None
    ) -> None:
        self.writes.append((self.location, key, data, content_type))


def test_given_an_s3_verdict_location_when_written_then_it_is_one_json_object_at_that_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    writes: list[tuple[str, str, bytes, str | None]] = []
    monkeypatch.setattr(cli, "open_storage", lambda location: _RecordingStorage(location, writes))
    decision = GateDecision(False, "v2", "v1", ["holdout ROC AUC worse"])

    cli._write_verdict("s3://artifacts/candidates/run-7/gate_verdict.json", MODEL_NAME, decision)

    [(location, key, data, content_type)] = writes
    assert (location, key) == ("s3://artifacts/candidates/run-7", "gate_verdict.json")
    assert content_type == "application/json"  # Step Functions' s3:getObject returns it as text
    assert json.loads(data) == {"model_name": MODEL_NAME, **decision.as_dict()}


@pytest.mark.parametrize("location", ["s3://artifacts", "s3://artifacts/", "s3://artifacts/run/"])
def test_given_an_s3_verdict_location_without_an_object_key_then_it_is_refused(location: str) -> None:
    with pytest.raises(ValueError, match="must name an object"):
        cli._write_verdict(location, MODEL_NAME, GateDecision(True, "v2", None))
