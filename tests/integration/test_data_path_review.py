"""The data path into training, at its failure edges: interrupted registrations, spec-file mistakes,
tables training cannot use, and exports that are incomplete."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pymysql
import pytest

from training.cli import main as training_main
from training.dataload import exporter
from training.dataload.storage import open_storage
from training.datasets.catalog import load_dataset
from training.datasets.spec import spec_from_file
from training.registry import VersionExistsError, latest_pointer, register_bundle
from training.sources.export import ExportReadError, read_export_tables

MODEL_NAME = "review-default-risk"

# --- registry: a registration interrupted halfway is completed by running it again ---------------


def _bundle(folder: Path, version: str, model: bytes) -> Path:
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(model)
    card = {
        "model_name": MODEL_NAME,
        "model_version": version,
        "dataset": "review",
        "onnx": {"sha256": hashlib.sha256(model).hexdigest()},
        "holdout_metrics": {"roc_auc": 0.9, "brier": 0.1},
        "parity": {"passed": True},
        "data": {"sha256": "data-1", "holdout": "stratified random 20% (seed 1)"},
    }
    (folder / "model_card.json").write_text(json.dumps(card))
    return folder


def test_given_a_model_stored_without_its_card_when_registered_again_then_the_version_is_completed(
    registry: str, tmp_path: Path
) -> None:
    # Given a registration that stopped after the model (the card and latest.json never written)
    bundle = _bundle(tmp_path / "b1", "v1", b"onnx-one")
    storage = open_storage(registry)
    storage.write_bytes(f"{MODEL_NAME}/v1/model.onnx", b"onnx-one", overwrite=False)

    # When the same bundle is registered again
    version = register_bundle(bundle, registry)

    # Then the card is stored beside its model and latest.json points at the version
    assert version == "v1"
    assert storage.read_bytes(f"{MODEL_NAME}/v1/model_card.json") == (bundle / "model_card.json").read_bytes()
    pointer = latest_pointer(registry, MODEL_NAME)
    assert pointer is not None
    assert pointer["model_version"] == "v1"


def test_given_a_version_stored_but_latest_not_moved_when_the_cli_registers_again_then_latest_moves(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    registry = str(tmp_path / "registry")
    register_bundle(_bundle(tmp_path / "b1", "v1", b"champion"), registry)
    # Given v2's files stored by a register step that died before moving latest.json
    candidate = _bundle(tmp_path / "b2", "v2", b"challenger")
    storage = open_storage(registry)
    for name in ("model.onnx", "model_card.json"):
        storage.write_bytes(f"{MODEL_NAME}/v2/{name}", (candidate / name).read_bytes(), overwrite=False)
    capsys.readouterr()

    # When the pipeline's register step runs again (the gate passes: same metrics, same holdout)
    code = training_main(["register", "--candidate", str(candidate), "--registry", registry])

    # Then it reports v2 as registered and v2 is the champion, not "already registered; nothing to do"
    assert code == 0
    output = capsys.readouterr().out
    assert "already registered" not in output
    assert json.loads(output)["registered_version"] == "v2"
    pointer = latest_pointer(registry, MODEL_NAME)
    assert pointer is not None
    assert pointer["model_version"] == "v2"

    # And registering the complete, current version once more changes nothing
    with pytest.raises(VersionExistsError, match="versions are immutable"):
        register_bundle(candidate, registry)
    assert latest_pointer(registry, MODEL_NAME) == pointer


# --- spec files: mistakes are errors naming the file and the key -------------------------------

TABLE = pd.DataFrame(
    {
        "id": range(8),
        "income": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0],
        "region": list("abababab"),
        "gender": list("FMFMFMFM"),
        "bad": [0, 1] * 4,
    }
)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        # The target as a feature leaks the label into the model
        (
            {"name": "t", "target": "bad", "features": {"income": {}, "bad": {"type": "integer"}}},
            r"feature 'bad' is the target",
        ),
        # Protected attributes are for fairness figures only, never model features
        (
            {"name": "t", "target": "bad", "protected": ["gender"], "features": {"gender": {}}},
            r"feature 'gender' is protected",
        ),
        ({"name": "t", "target": "bad", "features": ["income"]}, r"'features' must be an object"),
        ({"name": "t", "target": "bad", "features": {"income": "number"}}, r"feature 'income' must map"),
        (
            {"name": "t", "target": "bad", "features": {"income": {"minimum": "0"}}},
            r"feature 'income' minimum must be a number",
        ),
        (
            {"name": "t", "target": "bad", "features": {"income": {"minimum": 5, "maximum": 1}}},
            r"feature 'income' has minimum 5 above maximum 1",
        ),
        (
            {"name": "t", "target": "bad", "features": {"income": {"maximun": 10}}},
            r"feature 'income' has unknown options \['maximun'\]",
        ),
        ({"name": "t", "target": "bad", "drop": "id"}, r"'drop' must be a list"),
        ({"name": "t", "target": "bad", "drop": ["idd"]}, r"'drop' names columns not in the table"),
        (
            {"name": "t", "target": "bad", "protected": {"gender": {"bands": "x"}}},
            r"protected 'gender' bands must be a list of numbers",
        ),
        ({"name": "my loans!", "target": "bad"}, r"name 'my loans!' must be"),
    ],
)
def test_given_a_spec_file_with_a_mistake_when_read_then_the_error_names_the_key(
    spec: dict[str, Any], message: str, tmp_path: Path
) -> None:
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(spec))
    with pytest.raises(ValueError, match=message) as raised:
        spec_from_file(spec_file, TABLE)
    assert str(spec_file) in str(raised.value)


def test_given_a_spec_file_that_is_not_json_when_read_then_the_error_names_the_file(tmp_path: Path) -> None:
    spec_file = tmp_path / "spec.json"
    spec_file.write_text("{name: 't'}")
    with pytest.raises(ValueError, match=rf"spec file {spec_file} is not valid JSON"):
        spec_from_file(spec_file, TABLE)


# --- tables training cannot use are refused when loaded, naming why ----------------------------


def _load(tmp_path: Path, table: pd.DataFrame, features: dict[str, Any]) -> None:
    table.to_csv(tmp_path / "table.csv", index=False)
    (tmp_path / "spec.json").write_text(json.dumps({"name": "t", "target": "bad", "features": features}))
    load_dataset("t", f"files:{tmp_path / 'table.csv'}", tmp_path / "spec.json")


def test_given_a_number_feature_holding_text_when_loaded_then_the_feature_is_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"feature 'region' is declared number but 8 values are not numbers"):
        _load(tmp_path, TABLE, {"income": {"type": "number"}, "region": {"type": "number"}})


def test_given_a_single_class_target_when_loaded_then_the_error_says_both_classes_are_needed(
    tmp_path: Path,
) -> None:
    with pytest.raises(ValueError, match=r"target 'bad' counts \{'0': 8\}; training needs rows of both"):
        _load(tmp_path, TABLE.assign(bad=0), {"income": {"type": "number"}})


def test_given_a_table_with_zero_rows_when_loaded_then_the_error_says_so(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"0 rows left of 0 after cleaning"):
        _load(tmp_path, TABLE.head(0), {"income": {"type": "number"}})


# --- exports: a failed or partial export is never read as complete -----------------------------


def test_given_a_table_marked_failed_in_the_tables_info_when_read_then_it_is_refused(tmp_path: Path) -> None:
    part = tmp_path / "exp-a/bank/bank.loan/1/part-00000-a.gz.parquet"
    part.parent.mkdir(parents=True)
    pq.write_table(pa.table({"loan_id": pa.array([1], pa.int32())}), part)
    info = {"perTableStatus": [{"target": "bank.loan", "status": "FAILED", "schemaMetadata": {}}]}
    (tmp_path / "exp-a/export_tables_info_exp-a_from_1_to_1.json").write_text(json.dumps(info))
    with pytest.raises(ExportReadError, match=r"table bank\.loan has status 'FAILED', not COMPLETE"):
        read_export_tables(tmp_path, "bank")


@pytest.mark.mariadb
def test_given_an_export_that_fails_midway_when_read_then_it_is_refused_not_read_partially(
    mariadb_connection: Any, mariadb_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a five-row table exported in parts of two rows, where the connection drops at the second part
    with mariadb_connection.cursor() as cursor:
        cursor.execute(f"CREATE TABLE `{mariadb_database}`.`loans` (id INT PRIMARY KEY, amount DOUBLE)")
        cursor.executemany(
            f"INSERT INTO `{mariadb_database}`.`loans` VALUES (%s, %s)",
            [(i, i * 10.0) for i in range(5)],
        )
    mariadb_connection.commit()
    info_file = tmp_path / "exp-1" / "export_info_exp-1.json"
    status_while_writing: list[str] = []
    write_part = exporter._parquet_bytes

    def dropping_connection(table: pa.Table) -> bytes:
        status_while_writing.append(json.loads(info_file.read_text())["status"])
        if len(status_while_writing) == 2:
            raise pymysql.OperationalError(2013, "Lost connection to MySQL server during query")
        return write_part(table)

    monkeypatch.setattr(exporter, "_parquet_bytes", dropping_connection)
    with pytest.raises(pymysql.OperationalError):
        exporter.export_database(mariadb_connection, mariadb_database, tmp_path, "exp-1", rows_per_file=2)

    # Then the export was marked in progress while parts were written, failed afterwards,
    # and the reader refuses it instead of returning the first part's two rows
    assert status_while_writing == ["IN_PROGRESS", "IN_PROGRESS"]
    assert len(list(tmp_path.glob("exp-1/**/part-*.parquet"))) == 1
    with pytest.raises(ExportReadError, match=r"export exp-1 has status 'FAILED', not COMPLETE"):
        read_export_tables(tmp_path, mariadb_database)
