"""Review of the training command line and its outputs: clear errors for bad input (one line, exit 2),
exit codes that never read an unexpected fault as "the gate said no", bundles that are never left
half-written, true lineage, and the RDS-export reader on drifted or broken part files.

Training here uses a tiny synthetic table and a spec file (logistic regression only, one process).
"""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lambdas.scoring.card import ModelCard
from training import cli, provenance
from training.candidates import candidates_by_name
from training.cli import main as training_main
from training.datasets.catalog import load_dataset
from training.pipeline import TrainingConfig, TrainingOutcome, train, write_bundle
from training.sources.export import ExportReadError, read_export_tables

TOY_SPEC = {
    "name": "toy",
    "target": "default",
    "features": {
        "income": {"type": "number", "minimum": 0, "maximum": 1e7, "reason": "Low income"},
        "grade": {"type": "category", "reason": "Weak grade"},
    },
}
QUICK = ["--candidates", "logistic_regression", "--jobs", "1"]


def _toy_files(folder: Path) -> tuple[Path, Path]:
    """A small flat table whose default rate depends on income and grade, and its spec file."""
    rng = np.random.default_rng(7)
    rows = 300
    income = rng.uniform(10_000, 120_000, rows)
    grade = rng.choice(["A", "B", "C"], rows)
    risk = 1.5 - income / 40_000 + np.where(grade == "C", 1.0, 0.0)
    default = (rng.uniform(size=rows) < 1 / (1 + np.exp(-risk))).astype(int)
    folder.mkdir(parents=True, exist_ok=True)
    table, spec = folder / "toy.csv", folder / "spec.json"
    pd.DataFrame({"income": income.round(2), "grade": grade, "default": default}).to_csv(table, index=False)
    spec.write_text(json.dumps(TOY_SPEC))
    return table, spec


def _toy_arguments(folder: Path) -> list[str]:
    table, spec = _toy_files(folder)
    return ["--source", f"files:{table}", "--spec-file", str(spec), *QUICK]


@pytest.fixture(scope="module")
def toy_outcome(tmp_path_factory: pytest.TempPathFactory) -> TrainingOutcome:
    table, spec = _toy_files(tmp_path_factory.mktemp("toy"))
    dataset = load_dataset("toy", f"files:{table}", spec)
    return train(dataset, TrainingConfig(candidates=["logistic_regression"], n_jobs=1))


def _one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr  # one clear line, no traceback
    assert lines[0].startswith("error: ")
    return lines[0]


class _NotTrainedError(Exception):
    """Raised by a stand-in for train_bundle: the command should have stopped before training."""


def _refuse_training(*_: object, **__: object) -> ModelCard:
    raise _NotTrainedError("training started although the arguments were invalid")


# --- errors: one line, exit 2 ---------------------------------------------------------------------


def test_given_an_export_source_without_an_export_when_trained_then_one_line_names_it_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a --source export: folder that holds no RDS export
    (tmp_path / "exports").mkdir()
    arguments = ["train", "--source", f"export:{tmp_path / 'exports'}", "--out", str(tmp_path / "b")]

    # When trained, then the export reader's error is one line and the exit code says "clear error"
    assert training_main(arguments) == 2
    assert "no RDS export found under" in _one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "b").exists()


def test_given_an_unexpected_fault_in_the_gate_then_the_exit_code_is_not_the_gate_saying_no(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a gate that crashes (a bug, not a decision)
    def crash(*_: object, **__: object) -> None:
        raise KeyError("holdout_metrics")

    monkeypatch.setattr(cli, "read_bundle_card", crash)
    arguments = ["gate", "--candidate", str(tmp_path), "--registry", str(tmp_path / "registry")]

    # Then it exits 3 (a fault), never 1, which is the documented "the candidate lost the gate"
    assert training_main(arguments) == 3
    assert "KeyError" in capsys.readouterr().err


@pytest.mark.parametrize("out", ["gs://bucket/bundle", "S3://bucket/bundle", "s3://"])
def test_given_an_out_location_of_another_scheme_then_it_is_refused_before_training(
    out: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given an --out that is not a folder nor s3://bucket/... (it used to become a local folder "gs:")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli, "train_bundle", _refuse_training)

    assert training_main(["train", *_toy_arguments(tmp_path / "data"), "--out", out]) == 2
    assert out in _one_error_line(capsys.readouterr().err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_given_an_out_that_is_a_file_then_it_is_refused_before_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given --out naming an existing file (the bundle folder cannot be created there)
    out = tmp_path / "bundle"
    out.write_text("not a folder")
    monkeypatch.setattr(cli, "train_bundle", _refuse_training)

    assert training_main(["train", *_toy_arguments(tmp_path / "data"), "--out", str(out)]) == 2
    assert str(out) in _one_error_line(capsys.readouterr().err)
    assert out.read_text() == "not a folder"


def test_given_a_verdict_location_of_another_scheme_then_the_gate_fails_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a valid candidate and an empty registry, and --verdict gs://… (not a file, not S3)
    model = b"onnx bytes"
    card = {
        "model_name": "toy-default-risk",
        "model_version": "toy-1",
        "onnx": {"sha256": hashlib.sha256(model).hexdigest()},
        "holdout_metrics": {"roc_auc": 0.9, "brier": 0.1},
        "parity": {"passed": True},
    }
    candidate = tmp_path / "candidate"
    candidate.mkdir()
    (candidate / "model.onnx").write_bytes(model)
    (candidate / "model_card.json").write_text(json.dumps(card))
    monkeypatch.chdir(tmp_path)
    arguments = ["gate", "--candidate", str(candidate), "--registry", str(tmp_path / "registry")]

    assert training_main([*arguments, "--verdict", "gs://bucket/verdict.json"]) == 2
    assert "gs://bucket/verdict.json" in _one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "gs:").exists()


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--cost-approve-defaulter", "nan"),
        ("--cost-approve-defaulter", "inf"),
        ("--cost-decline-good", "0"),
        ("--cost-decline-good", "-1"),
        ("--jobs", "0"),
        ("--seed", "-1"),
    ],
)
def test_given_an_invalid_number_option_then_it_is_named_before_training(
    option: str,
    value: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given a cost, job count or seed that training cannot use (NaN used to train for minutes and
    # then fail writing the card, leaving a stray model.onnx.tmp)
    monkeypatch.setattr(cli, "train_bundle", _refuse_training)
    arguments = ["train", *_toy_arguments(tmp_path), option, value, "--out", str(tmp_path / "b")]

    # Then argparse refuses it like any malformed option: exit 2, the option named
    with pytest.raises(SystemExit) as exited:
        training_main(arguments)
    assert exited.value.code == 2
    assert f"argument {option}: " in capsys.readouterr().err


@pytest.mark.parametrize(
    "config",
    [
        {"cost_of_approving_defaulter": math.nan},
        {"cost_of_declining_good_applicant": math.inf},
        {"cost_of_approving_defaulter": 0.0},
        {"n_jobs": 0},
        {"seed": -1},
        {"seed": 2**32},
    ],
)
def test_given_invalid_training_settings_then_the_config_refuses_them(config: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(config))):
        TrainingConfig(**config)


def test_given_loop_with_a_source_or_spec_file_then_it_is_refused_before_loading_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the loop, which always trains on its own fresh export: --source would be silently replaced
    def must_not_run(*_: object, **__: object) -> None:
        raise AssertionError("the loop started loading or exporting")

    monkeypatch.setattr(cli, "_load", must_not_run)
    monkeypatch.setattr(cli, "_export", must_not_run)
    common = ["loop", "--exports", str(tmp_path / "e"), "--registry", str(tmp_path / "r")]
    for extra in (["--source", f"files:{tmp_path}"], ["--spec-file", str(tmp_path / "spec.json")]):
        with pytest.raises(SystemExit) as exited:
            training_main([*common, *extra])
        assert exited.value.code == 2


def test_given_a_candidate_named_twice_then_it_is_refused() -> None:
    # One name twice would train it twice and list two identical candidates in the card
    with pytest.raises(ValueError, match="more than once"):
        candidates_by_name(["logistic_regression", "logistic_regression"])


def test_given_loop_with_an_unknown_candidate_then_it_fails_before_loading_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a typo in --candidates: it used to surface only after the load and the export
    def must_not_run(*_: object, **__: object) -> None:
        raise AssertionError("the loop started loading or exporting")

    monkeypatch.setattr(cli, "_load", must_not_run)
    monkeypatch.setattr(cli, "_export", must_not_run)
    arguments = ["loop", "--exports", str(tmp_path / "e"), "--registry", str(tmp_path / "r")]

    assert training_main([*arguments, "--candidates", "xgboost"]) == 2
    assert "unknown candidates ['xgboost']" in _one_error_line(capsys.readouterr().err)


# --- the champion and the model's name with a spec file -------------------------------------------


def test_given_a_spec_file_and_a_champion_registry_then_the_spec_models_champion_is_compared(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a registry whose toy champion was trained from a spec file (no --dataset given)
    arguments = _toy_arguments(tmp_path / "data")
    registry = tmp_path / "registry"
    assert training_main(["train", *arguments, "--out", str(tmp_path / "first")]) == 0
    assert (
        training_main(["register", "--candidate", str(tmp_path / "first"), "--registry", str(registry)]) == 0
    )
    registered = json.loads((tmp_path / "first" / "model_card.json").read_text())["model_version"]
    capsys.readouterr()

    # When the same spec is trained again against that registry
    second = tmp_path / "second"
    assert (
        training_main(["train", *arguments, "--out", str(second), "--champion-registry", str(registry)]) == 0
    )

    # Then the toy champion (not credit_risk's, the --dataset default) was scored on the new holdout
    card = ModelCard.model_validate_json((second / "model_card.json").read_text())
    assert card.champion_comparison is not None
    assert card.champion_comparison.champion_version == registered
    assert card.champion_comparison.champion_metrics is not None


def test_given_a_dataset_name_that_differs_from_the_spec_name_then_it_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given --dataset loans but a spec file naming the model "toy": the flag would be silently ignored
    monkeypatch.setattr(cli, "train_bundle", _refuse_training)
    arguments = ["train", "--dataset", "loans", *_toy_arguments(tmp_path), "--out", str(tmp_path / "b")]

    assert training_main(arguments) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "'loans'" in line
    assert "'toy'" in line


# --- the bundle on disk ---------------------------------------------------------------------------


def test_given_a_bundle_when_a_rewrite_fails_midway_then_no_card_describes_another_model(
    tmp_path: Path, toy_outcome: TrainingOutcome, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a bundle folder written once (as `train --out model_artifacts/…` is re-run)
    out = tmp_path / "bundle"
    write_bundle(toy_outcome, out)
    retrained = replace(toy_outcome, onnx_bytes=toy_outcome.onnx_bytes + b"\x00")

    # When the rewrite fails after the model is in place but before the card is
    real_replace = Path.replace

    def failing_replace(self: Path, target: Any) -> Path:
        if Path(target).name == "model_card.json":
            raise OSError("disk full")
        return real_replace(self, target)

    monkeypatch.setattr(Path, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        write_bundle(retrained, out)

    # Then the folder never pairs a model with a card describing another one, and no temporaries stay
    card_file, model_file = out / "model_card.json", out / "model.onnx"
    if card_file.exists():
        card = json.loads(card_file.read_text())
        assert card["onnx"]["sha256"] == hashlib.sha256(model_file.read_bytes()).hexdigest()
    assert sorted(p.name for p in out.iterdir() if p.name.endswith(".tmp")) == []


def test_given_a_card_that_cannot_be_serialised_then_no_temporary_file_is_left(
    tmp_path: Path, toy_outcome: TrainingOutcome
) -> None:
    # Given a card holding a NaN (json with allow_nan=False refuses it)
    policy = toy_outcome.card.decision_policy.model_copy(update={"expected_cost_per_application": math.nan})
    broken = replace(toy_outcome, card=toy_outcome.card.model_copy(update={"decision_policy": policy}))
    out = tmp_path / "bundle"

    with pytest.raises(ValueError, match="JSON compliant"):
        write_bundle(broken, out)
    assert list(out.iterdir()) == []


# --- lineage ----------------------------------------------------------------------------------------


def _git(folder: Path, *arguments: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *arguments],
        cwd=folder,
        check=True,
        capture_output=True,
    )


def test_given_uncommitted_changes_then_the_card_commit_says_dirty(tmp_path: Path) -> None:
    # Given a checkout (the training code's own folder) whose tracked code differs from HEAD
    _git(tmp_path, "init", "-q")
    (tmp_path / "pipeline.py").write_text("x = 1\n")
    (tmp_path / "notes.txt").write_text("untracked files change no code\n")
    _git(tmp_path, "add", "pipeline.py")
    _git(tmp_path, "commit", "-q", "-m", "one")
    clean = provenance.source_commit(tmp_path)
    assert len(clean) == 40

    (tmp_path / "pipeline.py").write_text("x = 2\n")

    # Then the recorded commit does not claim the model came from HEAD's code
    assert provenance.source_commit(tmp_path) == f"{clean}-dirty"


def test_given_no_checkout_then_the_commit_is_the_one_stamped_in_the_image(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a folder outside any git checkout (the training image holds no .git)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    monkeypatch.delenv(provenance.SOURCE_COMMIT_VARIABLE, raising=False)
    assert provenance.source_commit(tmp_path) == "unknown"

    # When the image was built with the commit stamped in (training/Dockerfile)
    monkeypatch.setenv(provenance.SOURCE_COMMIT_VARIABLE, "abc123")

    # Then the card records that commit
    assert provenance.source_commit(tmp_path) == "abc123"


# --- the RDS export reader --------------------------------------------------------------------------


def _write_part(root: Path, name: str, table: pa.Table) -> None:
    path = root / "exp-1" / "bank" / "bank.loan" / "1" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)


def test_given_parts_with_different_columns_then_the_table_is_refused_not_filled_with_nulls(
    tmp_path: Path,
) -> None:
    # Given two parts of one table, the second without the "amount" column
    _write_part(tmp_path, "part-00000-a.gz.parquet", pa.table({"loan_id": [1, 2], "amount": [1.0, 2.0]}))
    _write_part(tmp_path, "part-00001-b.gz.parquet", pa.table({"loan_id": [3]}))

    # Then reading it names the drift rather than giving loan 3 a missing amount
    with pytest.raises(ExportReadError, match=r"part-00001-b\.gz\.parquet.*amount"):
        read_export_tables(tmp_path, "bank")


def test_given_parts_with_the_same_columns_in_another_order_then_they_are_read(tmp_path: Path) -> None:
    _write_part(tmp_path, "part-00000-a.gz.parquet", pa.table({"loan_id": [1], "amount": [1.0]}))
    _write_part(tmp_path, "part-00001-b.gz.parquet", pa.table({"amount": [3.0], "loan_id": [3]}))

    loans = read_export_tables(tmp_path, "bank")["loan"]
    assert loans.to_dict("list") == {"loan_id": [1, 3], "amount": [1.0, 3.0]}


def test_given_parts_whose_column_types_conflict_then_the_error_is_an_export_error(tmp_path: Path) -> None:
    _write_part(tmp_path, "part-00000-a.gz.parquet", pa.table({"loan_id": [1, 2]}))
    _write_part(tmp_path, "part-00001-b.gz.parquet", pa.table({"loan_id": ["x"]}))

    with pytest.raises(ExportReadError, match="disagree on their schema"):
        read_export_tables(tmp_path, "bank")


def test_given_a_date_column_with_an_invalid_date_then_the_error_names_table_and_column(
    tmp_path: Path,
) -> None:
    # Given a DATE column (per the tables-info file) holding a value that is no date
    _write_part(tmp_path, "part-00000-a.gz.parquet", pa.table({"granted": ["1994-13-01"]}))
    info = {
        "perTableStatus": [
            {
                "target": "bank.loan",
                "status": "COMPLETE",
                "schemaMetadata": {
                    "originalTypeMappings": [{"columnName": "granted", "originalType": "date"}]
                },
            }
        ]
    }
    (tmp_path / "exp-1" / "export_tables_info_exp-1_from_1_to_1.json").write_text(json.dumps(info))

    with pytest.raises(ExportReadError, match=r"bank\.loan.*'granted'.*1994-13-01"):
        read_export_tables(tmp_path, "bank")
