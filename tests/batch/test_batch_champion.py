"""The committed champion bundle scores real credit_risk rows through the emulator, card-driven."""

from __future__ import annotations

import csv
import gzip
import io
import json
from pathlib import Path

import numpy as np
import pytest

from lambdas.audit import BATCH_FILE
from lambdas.batch import wiring as batch_wiring
from lambdas.scoring.card import ModelCard
from tests.batch.conftest import NotifiedBucket
from tests.conftest import skip_unless_ci

REPO_ROOT = Path(__file__).resolve().parents[2]
CHAMPION = REPO_ROOT / "model_artifacts" / "credit_risk"
SHIPPED_CSV = REPO_ROOT / "training" / "data" / "credit_risk_dataset.csv.gz"
ROWS = 2_000


@pytest.fixture
def champion(monkeypatch: pytest.MonkeyPatch) -> ModelCard:
    """The batch handler serving the committed champion bundle (skipped when there is none yet).
    Request it after ``notified_bucket``, which points the handler at the small test bundle."""
    if not (CHAMPION / "model_card.json").is_file():
        skip_unless_ci(f"no committed champion bundle at {CHAMPION}")
    monkeypatch.setenv("MODEL_BUNDLE_DIR", str(CHAMPION))
    batch_wiring.loaded_model.cache_clear()
    return ModelCard.model_validate_json((CHAMPION / "model_card.json").read_bytes())


def test_given_real_credit_risk_rows_when_scored_with_the_champion_then_every_row_is_accounted_for(
    notified_bucket: NotifiedBucket, shared_data: Path, champion: ModelCard
) -> None:
    # Given: the champion bundle and the first 2,000 rows of the public credit_risk file
    card = champion
    with (shared_data / "credit_risk_dataset" / "credit_risk_dataset.csv").open() as source:
        lines = [line for _, line in zip(range(ROWS + 1), source, strict=False)]
    notified_bucket.put("incoming/real/credit_risk.csv", "".join(lines).encode())

    # When
    (manifest,) = notified_bucket.drain().manifests

    # Then: the invariant, the champion's version, and rejections that name a card rule
    counts = manifest["counts"]
    assert manifest["status"] == "succeeded"
    assert manifest["model_version"] == card.model_version
    assert counts["rows_in"] == ROWS
    assert counts["rows_in"] == counts["rows_scored"] + counts["rows_rejected"]
    assert counts["declined"] > 0
    # And the manifest compares the scored rows with the card's reference distributions
    drift = manifest["drift"]
    assert drift["rows"] == counts["rows_scored"]
    assert drift["status"] in ("stable", "moderate", "significant")
    assert set(drift["feature_psi"]) == {feature.name for feature in card.features}
    assert drift["max_feature_psi"] == max(drift["feature_psi"].values())
    scored = list(csv.DictReader(io.StringIO(notified_bucket.get("scored/real/credit_risk.csv").decode())))
    assert len(scored) == counts["rows_scored"]
    declined = [row for row in scored if row["decision"] == card.decision_policy.decision_labels["decline"]]
    assert all(float(row["probability_of_default"]) >= card.decision_policy.threshold for row in declined)
    assert all(row["reasons"] for row in declined)
    assert {"person_age", "loan_status"} <= set(scored[0])  # extra columns carried through
    rejected = list(
        csv.DictReader(io.StringIO(notified_bucket.get("rejected/real/credit_risk.csv").decode()))
    )
    assert len(rejected) == counts["rows_rejected"]
    assert rejected[0]["row_number"] == "1"  # the file's first row has 123 years of employment
    assert rejected[0]["error_code"] == "out_of_range"
    feature_names = {feature.name for feature in card.features}
    assert all(row["error"].split(":")[0] in feature_names for row in rejected)


def test_given_a_scored_file_when_logged_then_its_audit_line_names_the_object_version_and_outputs(
    notified_bucket: NotifiedBucket, champion: ModelCard, batch_log: io.StringIO
) -> None:
    with gzip.open(SHIPPED_CSV, "rt") as handle:
        lines = [line for _, line in zip(range(201), handle, strict=False)]
    notified_bucket.put("incoming/audit/sample.csv", "".join(lines).encode())
    # When the file is scored
    (manifest,) = notified_bucket.drain().manifests

    # Then its audit line (lambdas/audit.py) carries what the manifest says about the object and outputs
    entries = [json.loads(line) for line in batch_log.getvalue().splitlines() if line.startswith("{")]
    (line,) = [entry for entry in entries if entry.get("message") == BATCH_FILE]
    assert line["input"] == manifest["input"]
    assert line["input"]["etag"]
    assert line["outputs"] == manifest["outputs"]
    assert line["model_version"] == manifest["model_version"] == champion.model_version
    assert line["counts"] == manifest["counts"]


def test_given_a_file_whose_incomes_shifted_when_scored_then_the_manifest_and_metrics_flag_drift(
    notified_bucket: NotifiedBucket, champion: ModelCard, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given 2,000 random rows of the shipped credit_risk file, every income tripled
    with gzip.open(SHIPPED_CSV, "rt") as handle:
        header, *lines = handle.read().splitlines()
    income = header.split(",").index("person_income")
    picks = np.random.default_rng(5).choice(len(lines), ROWS, replace=False).tolist()
    shifted = []
    for line in (lines[i] for i in picks):
        cells = line.split(",")
        cells[income] = str(int(cells[income]) * 3)
        shifted.append(",".join(cells))
    notified_bucket.put("incoming/drift/richer.csv", "\n".join([header, *shifted]).encode())

    # When the file is scored
    (manifest,) = notified_bucket.drain().manifests

    # Then the manifest names income as the drifted feature, and a FilesDrifted metric is emitted
    drift = manifest["drift"]
    assert drift["status"] == "significant"
    assert drift["most_drifted_feature"] == "person_income"
    assert drift["feature_psi"]["person_income"] > 0.25
    assert set(drift["feature_psi"]) == {feature.name for feature in champion.features}
    emitted = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    assert any(entry.get("FilesDrifted") == [1.0] for entry in emitted)
