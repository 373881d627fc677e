"""The three commands the Step Functions pipeline runs in the training container, against S3 (moto):
``train --out s3://…/candidates/<run>/ --champion-registry``, ``gate --candidate --registry`` and
``register --candidate --registry``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training.cli import main as training_main
from training.registry import latest_pointer

pytestmark = pytest.mark.slow


def test_given_an_s3_candidate_when_gated_and_registered_then_the_registry_holds_it(
    shared_data: Path, s3_bucket: str, s3_client: object, capsys: pytest.CaptureFixture[str]
) -> None:
    candidate = f"s3://{s3_bucket}/candidates/run-1/"
    registry = f"s3://{s3_bucket}/models"
    source = f"files:{shared_data / 'jpmc_loan_data' / 'Loan_Data.csv'}"
    common = ["--dataset", "jpmc_loans", "--source", source, "--candidates", "logistic_regression"]

    # Given a candidate trained straight into the artifact bucket (no champion registered yet)
    train = ["train", *common, "--jobs", "1", "--out", candidate, "--champion-registry", registry]
    assert training_main(train) == 0
    keys = {item["Key"] for item in s3_client.list_objects_v2(Bucket=s3_bucket)["Contents"]}  # type: ignore[attr-defined]
    assert {"candidates/run-1/model.onnx", "candidates/run-1/model_card.json"} <= keys
    capsys.readouterr()

    # When the gate runs: it passes (parity only, no champion), and register stores the version
    assert training_main(["gate", "--candidate", candidate, "--registry", registry]) == 0
    assert json.loads(capsys.readouterr().out)["passed"] is True
    assert training_main(["register", "--candidate", candidate, "--registry", registry]) == 0
    registered = json.loads(capsys.readouterr().out)["registered_version"]

    # Then latest.json names it, and a gate of the same bundle against it still passes
    pointer = latest_pointer(registry, "jpmc_loans-default-risk")
    assert pointer is not None
    assert pointer["model_version"] == registered
    assert training_main(["gate", "--candidate", candidate, "--registry", registry]) == 0


def test_given_a_missing_candidate_when_gated_then_the_error_is_clear(
    s3_bucket: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = training_main(
        [
            "gate",
            "--candidate",
            f"s3://{s3_bucket}/candidates/none/",
            "--registry",
            f"s3://{s3_bucket}/models",
        ]
    )
    assert code == 2
    assert "nothing found under" in capsys.readouterr().err
