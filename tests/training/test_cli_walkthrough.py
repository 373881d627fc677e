"""A first-time user's walkthrough of the README with ``python -m training``: each mistake is one line
that says what to check or pass (a mistyped local registry, missing AWS settings, several exports, no
shared data, a database that refuses the connection), and the output names what stays behind (the
registered folder, not a deleted temporary one) and tells the gate's failed checks from those that passed.

Commands run in-process through ``training.cli.main``. Bundles for the gate are tiny hand-made folders
(the gate reads cards as JSON and checks the model's sha256); training uses a small synthetic table and
a spec file (logistic regression only, one process).
"""

from __future__ import annotations

import hashlib
import json
import socket
from pathlib import Path
from typing import Any

import boto3
import pytest

from lambdas.scoring.card import ChampionComparison, DifferenceIntervals, Interval, ModelCard
from tests.training.test_cli_review import (
    QUICK,
    _one_error_line,
    _refuse_training,
    _toy_arguments,
)
from training import cli
from training.cli import main as training_main
from training.dataload.datasets import read_dataset_files
from training.datasets.catalog import LoadedDataset, load_dataset
from training.pipeline import TrainingConfig, train
from training.registry import gate, latest_pointer, register_bundle

MODEL_NAME = "credit_risk-default-risk"


def _bundle(folder: Path, version: str, roc_auc: float, brier: float) -> Path:
    """A hand-made bundle of credit_risk's model with the README run's holdout counts."""
    model = f"onnx bytes of {version}".encode()
    card = {
        "model_name": MODEL_NAME,
        "model_version": version,
        "dataset": "credit_risk",
        "onnx": {"sha256": hashlib.sha256(model).hexdigest()},
        "holdout_metrics": {"roc_auc": roc_auc, "brier": brier},
        "parity": {"passed": True},
        "data": {
            "sha256": "data-1",
            "holdout": "records by keyed hash 20% (seed 42)",
            "holdout_positives": 1398,
            "holdout_negatives": 4991,
        },
        "features": [{"name": "loan_amnt"}],
    }
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(model)
    (folder / "model_card.json").write_text(json.dumps(card))
    return folder


def _toy_dataset(folder: Path) -> LoadedDataset:
    arguments = _toy_arguments(folder)
    return load_dataset("toy", arguments[1], Path(arguments[3]))


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


# --- 1. a mistyped local registry -----------------------------------------------------------------


def test_given_a_local_registry_folder_that_does_not_exist_when_gated_then_it_is_refused_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a typo in a local registry path: the gate found "no champion registered" and passed anything
    candidate = _bundle(tmp_path / "candidate", "v2", 0.700, 0.150)
    registry, verdict = tmp_path / "nonexistent_reg", tmp_path / "gate_verdict.json"
    arguments = ["gate", "--candidate", str(candidate), "--registry", str(registry)]

    for extra in ([], ["--verdict", str(verdict)]):
        assert training_main([*arguments, *extra]) == 2
        captured = capsys.readouterr()
        line = _one_error_line(captured.err)
        assert f"--registry '{registry}' does not exist" in line
        assert "python -m training register" in line
        assert captured.out == ""
    assert not verdict.exists()
    assert not registry.exists()


def test_given_a_champion_registry_folder_that_does_not_exist_then_train_refuses_before_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a typo in --champion-registry: the champion comparison was skipped without a word
    monkeypatch.setattr(cli, "train_bundle", _refuse_training)
    registry = tmp_path / "typo"
    arguments = [*_toy_arguments(tmp_path / "data"), "--out", str(tmp_path / "out")]

    assert training_main(["train", *arguments, "--champion-registry", str(registry)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert f"--champion-registry '{registry}' does not exist" in line
    assert "python -m training register" in line


def test_given_a_new_registry_folder_when_registering_then_it_is_created_and_then_read_by_the_gate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    candidate = _bundle(tmp_path / "candidate", "v1", 0.900, 0.100)
    registry = tmp_path / "registries" / "new"

    assert training_main(["register", "--candidate", str(candidate), "--registry", str(registry)]) == 0
    assert json.loads(capsys.readouterr().out)["registered_version"] == "v1"
    assert training_main(["gate", "--candidate", str(candidate), "--registry", str(registry)]) == 0
    assert json.loads(capsys.readouterr().out)["champion_version"] == "v1"


def test_given_an_empty_registry_folder_when_gated_then_the_note_names_the_registry(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    candidate = _bundle(tmp_path / "candidate", "v1", 0.900, 0.100)
    registry = tmp_path / "registry"
    registry.mkdir()

    assert training_main(["gate", "--candidate", str(candidate), "--registry", str(registry)]) == 0
    assert json.loads(capsys.readouterr().out)["reasons"] == [
        f"note: no champion registered at {registry}: only the parity check applies"
    ]


# --- 5, 6. the loop names the registered folder; the comparison is read once -----------------------


def test_given_a_fresh_local_registry_when_the_loop_runs_twice_then_it_names_the_registered_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given the README's loop on a registry folder that does not exist yet (MariaDB and its export
    # replaced: the loop trains the toy table whatever source it names)
    dataset = _toy_dataset(tmp_path / "data")
    monkeypatch.setattr(cli, "_load", lambda *_, **__: None)
    monkeypatch.setattr(cli, "_export", lambda *_, **__: None)
    monkeypatch.setattr(cli, "load_dataset", lambda *_, **__: dataset)
    registry = tmp_path / "registry"
    arguments = ["loop", "--exports", str(tmp_path / "exports"), "--registry", str(registry), *QUICK]

    # When it runs the first time: nothing to compare with, the candidate is registered
    assert training_main(arguments) == 0
    first = capsys.readouterr().out
    pointer = latest_pointer(registry, "toy-default-risk")
    assert pointer is not None
    registered = registry / "toy-default-risk" / str(pointer["model_version"])
    # Then the last line names the registered bundle, not the temporary folder the loop deleted
    assert first.rstrip().splitlines()[-1] == f"registered at {registered}"
    assert "bundle written to" not in first
    assert (registered / "model.onnx").is_file()

    # And the second run compares with that champion in one readable line, not a Python dict
    assert training_main(arguments) == 0
    second = capsys.readouterr().out
    assert f"vs registered champion {pointer['model_version']} on this holdout" in second
    assert "champion comparison: {" not in second
    assert second.rstrip().splitlines()[-1] == f"registered at {registered}"


@pytest.fixture(scope="module")
def toy_card(tmp_path_factory: pytest.TempPathFactory) -> ModelCard:
    dataset = _toy_dataset(tmp_path_factory.mktemp("toy"))
    return train(dataset, TrainingConfig(candidates=["logistic_regression"], n_jobs=1)).card


def test_given_a_champion_a_hair_apart_then_the_summary_shows_no_negative_zero(toy_card: ModelCard) -> None:
    # Given an identical champion whose figures differ from the candidate's in the last bits
    metrics = toy_card.holdout_metrics
    champion = metrics.model_copy(update={"roc_auc": metrics.roc_auc + 1e-9, "brier": metrics.brier - 1e-9})
    intervals = DifferenceIntervals(
        method="paired",
        resamples=10,
        seed=42,
        confidence=0.95,
        roc_auc=Interval(lower=-1e-18, upper=0.0),
        brier=Interval(lower=-1.3e-18, upper=2.3e-18),
    )
    comparison = ChampionComparison(
        champion_version="v1", champion_metrics=champion, note="scored", difference_intervals=intervals
    )
    card = toy_card.model_copy(update={"champion_comparison": comparison})

    line = next(line for line in cli.card_summary(card).splitlines() if line.startswith("vs registered"))

    assert line == (
        "vs registered champion v1 on this holdout: ROC AUC +0.0000 (95% paired bootstrap interval "
        "+0.0000 to +0.0000), Brier +0.0000 (95% paired bootstrap interval +0.0000 to +0.0000)"
    )


def test_given_a_champion_a_hair_apart_then_the_gate_notes_show_no_negative_zero() -> None:
    candidate = json.loads(_bundle_card(roc_auc=0.87, brier=0.10))
    candidate["champion_comparison"] = {
        "champion_version": "v1",
        "champion_metrics": {"roc_auc": 0.87 + 1e-9, "brier": 0.10 - 1e-9},
        "difference_intervals": {
            "confidence": 0.95,
            "roc_auc": {"lower": -1e-18, "upper": 0.0},
            "brier": {"lower": -1.3e-18, "upper": 2.3e-18},
        },
    }
    champion = json.loads(_bundle_card(roc_auc=0.87, brier=0.10, version="v1"))

    notes = [reason for reason in gate(candidate, champion).reasons if "paired bootstrap" in reason]

    assert notes == [
        "note: ROC AUC difference +0.0000 (95% paired bootstrap interval +0.0000 to +0.0000; "
        "holds 0: within holdout noise)",
        "note: Brier difference +0.0000 (95% paired bootstrap interval +0.0000 to +0.0000; "
        "holds 0: within holdout noise)",
    ]


def _bundle_card(*, roc_auc: float, brier: float, version: str = "v2") -> str:
    model = f"onnx bytes of {version}".encode()
    return json.dumps(
        {
            "model_name": MODEL_NAME,
            "model_version": version,
            "onnx": {"sha256": hashlib.sha256(model).hexdigest()},
            "holdout_metrics": {"roc_auc": roc_auc, "brier": brier},
            "parity": {"passed": True},
            "data": {"holdout_positives": 1398, "holdout_negatives": 4991},
        }
    )


# --- 7. the gate's failed checks apart from those that passed -------------------------------------


def test_given_a_losing_candidate_when_gated_then_failed_checks_come_first_and_passed_ones_say_ok(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    registry = tmp_path / "registry"
    register_bundle(_bundle(tmp_path / "champion", "v1", 0.940, 0.060), registry)
    candidate = _bundle(tmp_path / "candidate", "v2", 0.900, 0.060)

    assert training_main(["gate", "--candidate", str(candidate), "--registry", str(registry)]) == 1

    verdict: dict[str, Any] = json.loads(capsys.readouterr().out)
    assert verdict["passed"] is False
    assert verdict["champion_version"] == "v1"
    assert verdict["reasons"] == [
        "holdout ROC AUC 0.9000 is worse than the champion's 0.9400 by more than 0.005",
        "ok: holdout has 1398 positives and 4991 negatives (needs at least 30 positives and 30 negatives)",
        "ok: both cards describe the same data and holdout",
        "ok: Brier 0.0600 vs champion 0.0600 (tolerance 0.005)",
    ]


# --- 2. AWS settings that are missing -------------------------------------------------------------


def _aws_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, **values: str) -> None:
    """No AWS setting from this machine: only ``values``."""
    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_S3",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_ROLE_ARN",
        "DB_SECRET_ARN",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    # boto3's default session keeps the credentials an earlier test resolved: start a new one
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)


def test_given_no_aws_credentials_when_registering_to_s3_then_one_line_names_them(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    _aws_environment(monkeypatch, tmp_path)
    candidate = _bundle(tmp_path / "candidate", "v1", 0.900, 0.100)

    assert training_main(["register", "--candidate", str(candidate), "--registry", "s3://nobucket/x"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "no AWS credentials found" in line
    assert "AWS_ACCESS_KEY_ID" in line
    assert "unexpected fault" not in caplog.text  # no traceback logged


def test_given_an_s3_endpoint_that_does_not_answer_then_one_line_names_aws_endpoint_url(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    _aws_environment(
        monkeypatch,
        tmp_path,
        AWS_ENDPOINT_URL=endpoint,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
    )
    candidate = _bundle(tmp_path / "candidate", "v1", 0.900, 0.100)

    assert training_main(["gate", "--candidate", str(candidate), "--registry", "s3://nobucket/x"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert endpoint in line
    assert "AWS_ENDPOINT_URL" in line
    assert "unexpected fault" not in caplog.text


def test_given_a_database_secret_and_no_aws_region_when_loading_then_one_line_names_the_region(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    _aws_environment(monkeypatch, tmp_path, DB_SECRET_ARN="arn:aws:secretsmanager:eu-west-1:1:secret:db")

    # (the loader says it itself, and its failures end the command with exit 2 from inside it)
    with pytest.raises(SystemExit) as exited:
        training_main(["load", "--dataset", "credit_risk", "--files", str(tmp_path)])
    assert exited.value.code == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "no AWS region" in line
    assert "AWS_REGION" in line
    assert "unexpected fault" not in caplog.text


def test_given_a_database_secret_and_no_aws_region_when_the_loader_runs_alone_then_one_line_names_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The loader's own entry point (python -m training.dataload), which the Fargate task runs
    from training.dataload.__main__ import main as loader_main

    _aws_environment(monkeypatch, tmp_path, DB_SECRET_ARN="arn:aws:secretsmanager:eu-west-1:1:secret:db")

    assert loader_main(["load", "--dataset", "credit_risk", "--files", str(tmp_path)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "no AWS region" in line
    assert "AWS_REGION" in line


# --- 3, 4. where the data is ----------------------------------------------------------------------


def test_given_two_exports_and_no_export_id_then_the_error_shows_the_source_to_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli, "train_bundle", _refuse_training)
    exports = tmp_path / "exports"
    for export_id in ("credit_risk-1", "credit_risk-2"):
        (exports / export_id).mkdir(parents=True)
        (exports / export_id / f"export_info_{export_id}.json").write_text('{"status": "COMPLETE"}')

    arguments = ["train", "--source", f"export:{exports}", "--out", str(tmp_path / "out"), *QUICK]
    assert training_main(arguments) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "2 exports under" in line
    assert f"add #<export id> to the source, e.g. export:{exports}#credit_risk-2" in line


@pytest.mark.parametrize("dataset", ["berka", "jpmc_loans"])
def test_given_no_shared_data_when_training_a_shared_dataset_then_the_error_says_how_to_point_at_it(
    dataset: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a clone without ../shared/data beside it
    monkeypatch.setenv("LOAN_SHARED_DATA", str(tmp_path / "no-shared-data"))
    monkeypatch.setattr(cli, "train_bundle", _refuse_training)

    assert training_main(["train", "--dataset", dataset, "--out", str(tmp_path / "out"), *QUICK]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert str(tmp_path / "no-shared-data") in line
    assert line.endswith("(set LOAN_SHARED_DATA or pass --source files:<folder>)")


# --- 8. the MariaDB loader ------------------------------------------------------------------------


def test_given_a_database_port_nothing_listens_on_when_loading_then_the_error_names_the_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    port = _closed_port()
    monkeypatch.delenv("DB_SECRET_ARN", raising=False)
    monkeypatch.setenv("DB_HOST", "127.0.0.1")
    monkeypatch.setenv("DB_PORT", str(port))
    monkeypatch.setenv("DB_USER", "loader")

    # (the loader's own failures end the command with exit 2 from inside it)
    with pytest.raises(SystemExit) as exited:
        training_main(["load", "--dataset", "credit_risk", "--files", str(tmp_path)])
    assert exited.value.code == 2
    line = _one_error_line(capsys.readouterr().err)
    assert f"cannot connect to MariaDB at 127.0.0.1:{port} as 'loader'" in line
    assert "check DB_HOST, DB_PORT, DB_USER and DB_PASSWORD" in line
    assert not line.startswith("error: (2003,")


def test_given_a_folder_without_the_dataset_file_then_the_error_says_the_gz_is_accepted_too(
    tmp_path: Path,
) -> None:
    with pytest.raises(FileNotFoundError) as raised:
        read_dataset_files("credit_risk", tmp_path)
    assert "credit_risk_dataset.csv.gz" in str(raised.value)
    assert str(tmp_path / "credit_risk_dataset.csv") in str(raised.value)
