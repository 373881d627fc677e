"""Second review of the training command line, as a data scientist bringing a CSV and a spec file: a
spec mistake is one line naming the key or column, before any model is fitted (not a silent choice, not
a traceback, not a failure after training); an output, verdict or registry location that cannot work is
refused before training; ``show`` and the gate name a damaged card or model.

Commands run in-process through ``training.cli.main``; where a command must stop before training,
``train_bundle`` is replaced by a stand-in that fails the test if it is reached.
"""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pandas as pd
import pytest

from lambdas.scoring.card import ModelCard
from training import cli
from training.cli import main as training_main
from training.datasets.catalog import load_dataset
from training.pipeline import TrainingConfig, train, write_bundle
from training.registry import register_bundle

QUICK = ["--candidates", "logistic_regression", "--jobs", "1"]
BUCKET = "cli-review2-artifacts"  # moto's buckets are shared in the process: a name no other test uses


def _table(rows: int = 200) -> pd.DataFrame:
    """An applicant table of the kinds a data scientist brings: numbers, text categories, an age."""
    rng = np.random.default_rng(3)
    income = rng.uniform(10_000, 120_000, rows).round(2)
    grade = rng.choice(["A", "B", "C"], rows)
    risk = 1.5 - income / 40_000 + np.where(grade == "C", 1.0, 0.0)
    return pd.DataFrame(
        {
            "income": income,
            "grade": grade,
            "age": rng.integers(18, 80, rows),
            "default": (rng.uniform(size=rows) < 1 / (1 + np.exp(-risk))).astype(int),
        }
    )


def _files(folder: Path, spec: dict[str, Any] | str, table: pd.DataFrame | None = None) -> list[str]:
    """Writes the table and the spec file; the train arguments that read them."""
    folder.mkdir(parents=True, exist_ok=True)
    table_file, spec_file = folder / "loans.csv", folder / "spec.json"
    (_table() if table is None else table).to_csv(table_file, index=False)
    spec_file.write_text(spec if isinstance(spec, str) else json.dumps(spec))
    return ["--source", f"files:{table_file}", "--spec-file", str(spec_file), *QUICK]


class _NotTrainedError(Exception):
    """Raised by a stand-in for train_bundle: the command should have stopped before training."""


def _refuse_training(*_: object, **__: object) -> ModelCard:
    raise _NotTrainedError("training started although the input was invalid")


def _one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr  # one clear line, no traceback
    assert lines[0].startswith("error: ")
    return lines[0]


AGE_BANDS = {"age": {"bands": [30, 50], "band_labels": ["<30", "30-49", "50+"]}}
BASE = {"name": "mine", "target": "default", "protected": AGE_BANDS}


# --- spec files: every mistake named before fitting ----------------------------------------------


@pytest.mark.parametrize(
    ("spec", "table", "message"),
    [
        # A misspelt key was ignored: "protect" trained the model on the protected age.
        (
            {"name": "mine", "target": "default", "protect": ["age"]},
            None,
            r"unknown keys \['protect'\]",
        ),
        # A feature listed twice kept its second options silently (JSON objects keep the last key).
        (
            '{"name": "mine", "target": "default", "protected": ["age"], '
            '"features": {"income": {}, "income": {"type": "category"}}}',
            None,
            r"key 'income' is given twice",
        ),
        # Band labels that do not fit the edges failed only in the fairness figures, after every fit.
        (
            {**BASE, "protected": {"age": {"bands": [30, 50], "band_labels": ["young", "old"]}}},
            None,
            r"protected 'age' has 2 band edges, so needs 3 band_labels",
        ),
        (
            {**BASE, "protected": {"age": {"bands": [50, 30], "band_labels": ["a", "b", "c"]}}},
            None,
            r"protected 'age' bands must be finite and ascend strictly",
        ),
        # Bands on a text column failed in the fairness figures too.
        (
            {**BASE, "protected": {"grade": {"bands": [1, 2]}}},
            None,
            r"protected 'grade' has bands, so must hold numbers, but holds '[ABC]'",
        ),
        # A unit that is not text failed only when the model card was built, after training.
        (
            {**BASE, "features": {"income": {"unit": 5}, "grade": {}}},
            None,
            r"feature 'income' unit must be text, got 5",
        ),
        # An id_column given as a list was an unexpected TypeError (exit 3, traceback).
        ({**BASE, "id_column": ["income"]}, None, r"'id_column' must be a column name"),
        # Columns named by id_column or protected that are not in the table: named by their key.
        ({**BASE, "id_column": "loan_id"}, None, r"id_column column 'loan_id' is not in the table"),
        ({**BASE, "protected": ["gender"]}, None, r"protected 'gender' is not a column of the table"),
        ({**BASE, "id_column": "default"}, None, r"column 'default' is both the target and the id_column"),
        # NaN is not JSON, but Python's reader takes it: a NaN bound dropped no row and broke the card.
        (
            '{"name": "mine", "target": "default", "features": {"income": {"minimum": NaN}}}',
            None,
            r"NaN is not a number a spec can hold",
        ),
        # "integer" on fractional values: the card's schema made the API refuse every such applicant.
        (
            {**BASE, "features": {"income": {"type": "integer"}, "grade": {}}},
            None,
            r"feature 'income' is integer but holds \d+ values that are not whole numbers, e.g. ",
        ),
        # "boolean" on text: "not a boolean: 'C'" named no feature.
        (
            {**BASE, "features": {"income": {}, "grade": {"type": "boolean"}}},
            None,
            r"feature 'grade' is boolean but holds 200 other values, e.g. '[ABC]'",
        ),
        # A date column became a category feature with one value per day.
        (
            BASE,
            _table().assign(applied=pd.date_range("2020-01-01", periods=200, freq="D").strftime("%Y-%m-%d")),
            r"column 'applied' holds dates \(e.g. '2020-01-01'\)",
        ),
        # A numeric column with one text value became a category of every number.
        (
            BASE,
            _table()
            .astype({"income": object})
            .assign(income=lambda t: t["income"].where(t.index != 5, "unknown")),
            r"column 'income' holds numbers and some text \(e.g. 'unknown'\)",
        ),
        # A time column with a value that is no date: pandas' several-line advice, naming no column.
        (
            {**BASE, "time_column": "applied"},
            _table().assign(applied=["2020-01-01"] * 199 + ["soon"]),
            r"time_column 'applied' holds 1 values that do not read as dates in one format, e.g. 'soon'",
        ),
    ],
)
def test_given_a_spec_mistake_then_one_line_names_it_before_any_fitting(
    spec: dict[str, Any] | str,
    table: pd.DataFrame | None,
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(cli, "train_bundle", _refuse_training)
    arguments = _files(tmp_path / "data", spec, table)

    assert training_main(["train", *arguments, "--out", str(tmp_path / "bundle")]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert f"spec file {tmp_path / 'data' / 'spec.json'}" in line
    assert re.search(message, line), line
    assert not (tmp_path / "bundle").exists()


def test_given_a_spec_file_that_is_not_utf8_or_missing_then_the_error_names_the_spec_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli, "train_bundle", _refuse_training)
    arguments = _files(tmp_path / "data", "")
    spec_file = tmp_path / "data" / "spec.json"
    spec_file.write_bytes(b'\xff\xfe{"name": "mine"}')

    assert training_main(["train", *arguments, "--out", str(tmp_path / "b")]) == 2
    assert f"spec file {spec_file} is not UTF-8 text" in _one_error_line(capsys.readouterr().err)

    spec_file.unlink()
    assert training_main(["train", *arguments, "--out", str(tmp_path / "b")]) == 2
    assert f"spec file {spec_file} cannot be read" in _one_error_line(capsys.readouterr().err)


def test_given_valid_declared_types_then_the_spec_still_loads(tmp_path: Path) -> None:
    # The new checks refuse only what the declared type cannot hold: whole numbers as integer, 0/1 and
    # yes/no as boolean, a parsable time column, a date column dropped.
    table = _table().assign(
        applied=pd.date_range("2020-01-01", periods=200, freq="D").strftime("%Y-%m-%d"),
        applied_again=pd.date_range("2020-01-01", periods=200, freq="D").strftime("%Y-%m-%d"),
        owns_home=["yes", "no"] * 100,
        has_card=[0, 1] * 100,
    )
    _files(tmp_path, {**BASE, "time_column": "applied", "drop": ["applied_again"]}, table)
    dataset = load_dataset("mine", f"files:{tmp_path / 'loans.csv'}", tmp_path / "spec.json")
    assert [(f.name, f.kind) for f in dataset.spec.features] == [
        ("income", "number"),
        ("grade", "category"),
        ("owns_home", "category"),
        ("has_card", "integer"),
    ]
    declared = {
        **BASE,
        "features": {"age_years": {"type": "integer"}, "owns_home": {"type": "boolean"}, "grade": {}},
    }
    _files(tmp_path, declared, table.assign(age_years=table["age"].astype(float)))
    spec = load_dataset("mine", f"files:{tmp_path / 'loans.csv'}", tmp_path / "spec.json").spec
    assert [(f.name, f.kind) for f in spec.features] == [
        ("age_years", "integer"),
        ("owns_home", "boolean"),
        ("grade", "category"),
    ]


# --- outputs and registries that cannot work: refused before training ---------------------------


def test_given_an_out_below_a_file_then_it_is_refused_before_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given --out two levels below a file: only --out itself used to be checked, and the folder could
    # not be created when the bundle was written, after training
    monkeypatch.setattr(cli, "train_bundle", _refuse_training)
    (tmp_path / "loans.csv").write_text("not a folder")
    out = tmp_path / "loans.csv" / "runs" / "bundle"

    assert training_main(["train", *_files(tmp_path / "data", BASE), "--out", str(out)]) == 2
    assert f"{tmp_path / 'loans.csv'} is a file, not a folder" in _one_error_line(capsys.readouterr().err)


@pytest.fixture
def aws_env(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    for name, value in {
        "AWS_ENDPOINT_URL": s3_endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    client = boto3.client("s3")
    client.create_bucket(Bucket=BUCKET)
    return client


def test_given_an_out_bucket_that_does_not_exist_then_it_is_refused_before_training(
    aws_env: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a typo in the bucket of --out: the upload failed only after training
    monkeypatch.setattr(cli, "train_bundle", _refuse_training)
    out = f"s3://{BUCKET}-typo/candidates/run-1/"

    assert training_main(["train", *_files(tmp_path / "data", BASE), "--out", out]) == 2
    assert f"bucket '{BUCKET}-typo' does not exist" in _one_error_line(capsys.readouterr().err)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real bundle of the small table (logistic regression, one process)."""
    folder = tmp_path_factory.mktemp("bundle")
    _files(folder, BASE)
    dataset = load_dataset("mine", f"files:{folder / 'loans.csv'}", folder / "spec.json")
    outcome = train(dataset, TrainingConfig(candidates=["logistic_regression"], n_jobs=1))
    return write_bundle(outcome, folder / "bundle")


def test_given_a_registry_bucket_that_does_not_exist_then_the_gate_fails_instead_of_passing(
    aws_env: Any, bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a typo in the registry's bucket: every key read as missing, so the gate found "no champion
    # registered" and passed any candidate (exit 0, and a verdict of passed: true)
    verdict = tmp_path / "verdict.json"
    arguments = ["--candidate", str(bundle), "--registry", f"s3://{BUCKET}-typo/models"]

    assert training_main(["gate", *arguments, "--verdict", str(verdict)]) == 2
    assert f"bucket '{BUCKET}-typo' does not exist" in _one_error_line(capsys.readouterr().err)
    assert not verdict.exists()
    # The bucket that exists, with nothing registered yet: the first version passes as before
    assert training_main(["gate", *arguments[:3], f"s3://{BUCKET}/models", "--verdict", str(verdict)]) == 0
    assert json.loads(verdict.read_text())["passed"] is True


# --- show and the gate on damaged bundles ---------------------------------------------------------


def _copy(bundle: Path, destination: Path) -> Path:
    destination.mkdir()
    for name in ("model.onnx", "model_card.json"):
        (destination / name).write_bytes((bundle / name).read_bytes())
    return destination


def test_given_a_tampered_model_then_show_refuses_to_summarise_the_card(
    bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a bundle whose model.onnx is not the one its card describes: show printed the card's
    # figures as if they were this model's
    tampered = _copy(bundle, tmp_path / "tampered")
    (tampered / "model.onnx").write_bytes((tampered / "model.onnx").read_bytes() + b"\0")

    assert training_main(["show", str(tampered)]) == 2
    captured = capsys.readouterr()
    assert "but the card says" in _one_error_line(captured.err)
    assert captured.out == ""
    assert training_main(["show", str(bundle)]) == 0


def test_given_a_card_that_is_not_a_model_card_then_show_names_the_file_in_one_line(
    bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a card with a wrong field and one missing: show printed pydantic's page of errors, headed
    # "1 validation error for ModelCard", naming no file
    damaged = _copy(bundle, tmp_path / "damaged")
    card = json.loads((damaged / "model_card.json").read_text())
    card["data"]["rows_used"] = "many"
    del card["lineage"]
    (damaged / "model_card.json").write_text(json.dumps(card))

    assert training_main(["show", str(damaged)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert f"{damaged / 'model_card.json'} is not a valid model card" in line
    assert "data.rows_used" in line
    assert "lineage" in line


def test_given_a_damaged_champion_card_then_the_gate_names_the_file(
    bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a registry whose champion card is not JSON: "Expecting value: line 1 column 1 (char 0)"
    registry = tmp_path / "registry"
    version = register_bundle(bundle, registry)
    champion = registry / "mine-default-risk" / version / "model_card.json"
    champion.chmod(0o644)
    champion.write_text("garbage")

    assert training_main(["gate", "--candidate", str(bundle), "--registry", str(registry)]) == 2
    assert f"champion card {champion} is not valid JSON" in _one_error_line(capsys.readouterr().err)


def test_given_ctrl_c_during_training_then_one_line_and_exit_130_and_no_bundle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given an interrupt mid-training: a KeyboardInterrupt traceback through joblib
    def interrupted(*_: object, **__: object) -> ModelCard:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "train_bundle", interrupted)
    out = tmp_path / "bundle"

    assert (
        training_main(["train", *_files(tmp_path / "data", BASE), "--out", str(out)]) == 128 + signal.SIGINT
    )
    assert _one_error_line(capsys.readouterr().err) == "error: train interrupted"
    assert not out.exists()
