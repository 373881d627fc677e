"""`python -m training loop`: the one command that loads, exports, trains, gates and registers,
after which the API pointed at the registry serves the new version."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from lambdas.local_context import LocalLambdaContext
from training.cli import main as training_main
from training.registry import latest_pointer

pytestmark = [pytest.mark.mariadb, pytest.mark.slow]


def test_given_files_when_loop_runs_twice_then_one_version_is_registered_and_served(
    shared_data: Path,
    mariadb_env: Any,
    mariadb_database: str,
    s3_bucket: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given MariaDB connection settings in the environment (mariadb_env), as the in-VPC task gets them
    exports, registry = f"s3://{s3_bucket}/rds-exports", f"s3://{s3_bucket}/models"
    common = ["--dataset", "jpmc_loans", "--database", mariadb_database, "--exports", exports]
    common += ["--registry", registry, "--candidates", "logistic_regression", "--jobs", "1"]

    # When the loop runs with files: load → export → train → gate (no champion) → register
    assert training_main(["loop", "--files", str(shared_data / "jpmc_loan_data"), *common]) == 0
    first = latest_pointer(registry, "jpmc_loans-default-risk")
    assert first is not None
    capsys.readouterr()

    # And runs again on the same data without reloading: the champion is scored on the same
    # holdout, the gate passes, and the identical (content-addressed) version is not duplicated
    assert training_main(["loop", *common]) == 0
    output = capsys.readouterr().out
    assert f"vs registered champion {first['model_version']} on this holdout" in output
    assert f"version {first['model_version']} is already registered" in output
    assert latest_pointer(registry, "jpmc_loans-default-risk") == first

    # Then the API loaded from the registry serves that version
    from lambdas.api.wiring import create_handler

    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "LoanScoringTest")
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")
    version = first["model_version"]
    handler = create_handler({"MODEL_BUNDLE_URI": f"{registry}/jpmc_loans-default-risk/{version}/"})
    row = pd.read_csv(shared_data / "jpmc_loan_data" / "Loan_Data.csv").iloc[0]
    names = ["credit_lines_outstanding", "loan_amt_outstanding", "total_debt_outstanding", "income"]
    names += ["years_employed", "fico_score"]
    event = {
        "resource": "/v1/score",
        "path": "/v1/score",
        "httpMethod": "POST",
        "headers": {"Content-Type": "application/json"},
        "multiValueHeaders": {},
        "queryStringParameters": None,
        "pathParameters": None,
        "requestContext": {
            "requestId": "loop-cli-1",
            "stage": "v1",
            "httpMethod": "POST",
            "path": "/v1/score",
        },
        "body": json.dumps({"features": {name: row[name].item() for name in names}}),
        "isBase64Encoded": False,
    }
    response = handler(event, LocalLambdaContext("loan-scoring-api-local", aws_request_id="loop-cli-1"))  # type: ignore[arg-type]
    assert response["statusCode"] == 200, response["body"]
    assert json.loads(response["body"])["model_version"] == version
