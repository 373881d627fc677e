"""The retraining loop end to end: files -> MariaDB -> RDS-layout export in S3 -> train -> gate ->
register in the artifact bucket -> the scoring API loaded from the registered version serves it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from lambdas.local_context import LocalLambdaContext
from training.dataload.datasets import read_dataset_files, schema_for
from training.dataload.exporter import export_database
from training.dataload.loader import load_tables
from training.registry import VersionExistsError, champion_card, gate, register_bundle

pytestmark = [pytest.mark.mariadb, pytest.mark.slow]


def _score_event(features: dict[str, Any]) -> dict[str, Any]:
    return {
        "resource": "/v1/score",
        "path": "/v1/score",
        "httpMethod": "POST",
        "headers": {"Content-Type": "application/json", "Accept": "application/json"},
        "multiValueHeaders": {},
        "queryStringParameters": None,
        "pathParameters": None,
        "requestContext": {
            "requestId": "loop-test-1",
            "stage": "v1",
            "httpMethod": "POST",
            "path": "/v1/score",
        },
        "body": json.dumps({"application_id": "loop-1", "features": features}),
        "isBase64Encoded": False,
    }


def test_loaded_exported_trained_gated_registered_and_served(
    shared_data: Path,
    mariadb_connection: Any,
    mariadb_database: str,
    s3_bucket: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from lambdas.api.wiring import create_handler
    from training.datasets.catalog import load_dataset
    from training.pipeline import TrainingConfig, train_bundle

    # Given the JPMC loans loaded into MariaDB and exported to the (emulated) export bucket
    frames = read_dataset_files("jpmc_loans", shared_data / "jpmc_loan_data")
    load_tables(mariadb_connection, schema_for("jpmc_loans"), frames, database=mariadb_database)
    exports = f"s3://{s3_bucket}/rds-exports"
    export_database(mariadb_connection, mariadb_database, exports, "loop-1", layout_database="jpmc_loans")

    # When training reads the export from S3 and writes a bundle
    dataset = load_dataset("jpmc_loans", f"export:{exports}#loop-1")
    assert dataset.rows_raw == 10_000
    bundle = tmp_path / "bundle"
    card = train_bundle(dataset, bundle, TrainingConfig(candidates=["logistic_regression"], folds=3))

    # And the gate (no champion yet) lets it through, and it is registered in the artifact bucket
    registry = f"s3://{s3_bucket}/models"
    candidate_card = json.loads((bundle / "model_card.json").read_text())
    assert champion_card(registry, card.model_name) is None
    decision = gate(candidate_card, None)
    assert decision.passed, decision.reasons
    version = register_bundle(bundle, registry)
    assert version == card.model_version

    # Then the same candidate gated against the registered champion (same data, same holdout) passes,
    # and registering it again is refused: the version is immutable
    champion = champion_card(registry, card.model_name)
    assert champion is not None
    assert gate(candidate_card, champion).passed
    with pytest.raises(VersionExistsError):
        register_bundle(bundle, registry)

    # And the API pointed at the registered version answers with that version
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "LoanScoringTest")
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")
    handler = create_handler({"MODEL_BUNDLE_URI": f"{registry}/{card.model_name}/{version}/"})
    row = pd.read_csv(shared_data / "jpmc_loan_data" / "Loan_Data.csv").iloc[0]
    features = {feature.name: row[feature.name].item() for feature in card.features}
    context = LocalLambdaContext("loan-scoring-api-local", aws_request_id="loop-test-1")
    response = handler(_score_event(features), context)  # type: ignore[arg-type]
    body = json.loads(response["body"])
    assert response["statusCode"] == 200, body
    assert body["model_version"] == version
    assert 0.0 <= body["probability_of_default"] <= 1.0
