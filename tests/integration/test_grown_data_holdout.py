"""The holdout by record hash on every data path, and a retrain on grown data gated against its champion.

The committed champion was trained from the CSV files; retraining in AWS reads the RDS snapshot export
(Parquet written from the MariaDB tables). An applicant record must land on the same side of the split
whichever path its values came through, or a champion's training rows would reach a candidate's holdout.

- files vs MariaDB: every credit_risk row (32,581) read back from the database as its driver gives it
  (Decimal, int, str, None) is split as the CSV row is (compared by the surrogate key, the row number).
- files vs export: the rows training reads from ``files`` and from ``export:`` (after loading and
  exporting all rows) give the same holdout and training records (compared by content), and the
  committed champion scored on the export's holdout reproduces its own card's holdout figures.
- grown data: a champion trained on 90% of the rows (every tenth left out; from the export or from the
  files), a candidate trained on the export of all rows with the champion in the registry: none of the
  champion's training records is in the candidate's holdout, the card scored the champion, the gate
  compared them.
"""

from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from lambdas.scoring.card import ModelCard
from training.cli import main as training_main
from training.dataload.__main__ import main as dataload_main
from training.dataload.datasets import CREDIT_RISK_FILE, read_dataset_files, schema_for
from training.dataload.exporter import export_database
from training.dataload.loader import load_tables
from training.dataload.schemas import quote
from training.datasets.catalog import CREDIT_RISK, LoadedDataset, load_dataset
from training.pipeline import (
    Split,
    TrainingConfig,
    _record_texts,
    compare_with_champion,
    data_fingerprint,
    split_holdout,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
DATA_FOLDER = REPO_ROOT / "training" / "data"  # the shipped credit_risk CSV (gzip) that `files` reads
COMMITTED_CHAMPION = REPO_ROOT / "model_artifacts" / "credit_risk"
CSV_ROWS = 32_581
LEFT_OUT_EVERY = 10  # the champion's data: every tenth row of the file left out (90% of the rows)
# What the tests in tests/integration train with: one quick candidate, fits one at a time.
FAST_TRAINING = ["--candidates", "logistic_regression", "--jobs", "1"]

Record = tuple[object, ...]


def _split(frame: pd.DataFrame, source: str) -> Split:
    """The holdout split training makes (default seed and fraction) of these rows."""
    return split_holdout(LoadedDataset(CREDIT_RISK, frame, {}, source, len(frame)), TrainingConfig())


def _records(frame: pd.DataFrame) -> Counter[Record]:
    """Each row as a tuple of its values (columns in name order, a missing value as None)."""
    columns = sorted(frame.columns)
    values = frame[columns].astype(object).where(frame[columns].notna(), None)
    return Counter(values.itertuples(index=False, name=None))


def _unmatched(left: Counter[Record], right: Counter[Record]) -> int:
    """How many records one side has that the other lacks (both ways)."""
    return sum((left - right).values()) + sum((right - left).values())


def _mariadb_rows(connection: Any, database: str) -> pd.DataFrame:
    """The applications table as the database driver returns it (as the exporter reads it), last row
    first: a split that depended on the rows' positions would not survive the reversal."""
    columns = schema_for("credit_risk").table("applications").column_names
    select = (
        f"SELECT {', '.join(quote(name) for name in columns)} "
        f"FROM {quote(database)}.{quote('applications')} ORDER BY {quote('application_id')} DESC"
    )
    with connection.cursor() as cursor:
        cursor.execute(select)
        rows = cursor.fetchall()
    connection.rollback()
    return pd.DataFrame(list(rows), columns=columns)


@pytest.mark.mariadb
def test_given_every_row_loaded_into_mariadb_then_each_lands_on_the_side_its_csv_row_does(
    mariadb_connection: Any, mariadb_database: str
) -> None:
    # Given every row of the CSV (with its surrogate key, the row number) loaded into MariaDB, and read
    # back in the reverse order
    files = read_dataset_files("credit_risk", DATA_FOLDER)["applications"]
    load_tables(
        mariadb_connection, schema_for("credit_risk"), {"applications": files}, database=mariadb_database
    )
    database = _mariadb_rows(mariadb_connection, mariadb_database)
    # (in the driver's own types: the DECIMAL columns as Decimal objects, NULL as None)
    assert len(database) == len(files) == CSV_ROWS

    # When the rows from each are split
    from_files, from_database = _split(files, "files"), _split(database, "mariadb")

    # Then the same rows (by application_id) are in the holdout, about a fifth of them
    files_ids = set(from_files.holdout["application_id"])
    database_ids = set(from_database.holdout["application_id"])
    differing = sorted(files_ids ^ database_ids)
    texts = dict(zip(files["application_id"], _record_texts(files, CREDIT_RISK), strict=True))
    database_texts = dict(zip(database["application_id"], _record_texts(database, CREDIT_RISK), strict=True))
    examples = [(key, texts[key], database_texts[key]) for key in differing[:3]]
    assert not differing, f"{len(differing)} of {CSV_ROWS} rows change sides through MariaDB, e.g. {examples}"
    assert 0.19 < len(files_ids) / CSV_ROWS < 0.21


@pytest.mark.mariadb
def test_given_all_rows_exported_then_training_from_the_export_holds_out_the_records_the_files_do(
    mariadb_connection: Any, mariadb_database: str, tmp_path: Path
) -> None:
    # Given every row loaded into MariaDB and exported in the RDS layout, as retraining reads it
    frames = read_dataset_files("credit_risk", DATA_FOLDER)
    load_tables(mariadb_connection, schema_for("credit_risk"), frames, database=mariadb_database)
    exports = tmp_path / "exports"
    export_database(mariadb_connection, mariadb_database, exports, "all-rows", layout_database="credit_risk")

    # When training reads the rows from the files and from the export, and splits each
    from_files = load_dataset("credit_risk")
    from_export = load_dataset("credit_risk", f"export:{exports}#all-rows")
    files_split, export_split = _split(from_files.frame, "files"), _split(from_export.frame, "export")

    # Then both hold the same records out, and train on the same records
    assert from_export.cleaning == from_files.cleaning
    files_holdout, export_holdout = _records(files_split.holdout), _records(export_split.holdout)
    holdout_mismatches = _unmatched(files_holdout, export_holdout)
    train_mismatches = _unmatched(_records(files_split.train), _records(export_split.train))
    assert (holdout_mismatches, train_mismatches) == (0, 0), (
        f"{holdout_mismatches} holdout and {train_mismatches} training records differ between the paths"
    )

    # And they are the committed champion's holdout (trained from the files): scored on the rows read
    # from the export, it gives the figures its card reports on its own holdout
    champion = ModelCard.model_validate_json((COMMITTED_CHAMPION / "model_card.json").read_text())
    positives = int(export_split.holdout["loan_status"].sum())
    assert (len(export_split.holdout), positives) == (
        champion.data.rows_holdout,
        champion.data.holdout_positives,
    )
    comparison = compare_with_champion(
        COMMITTED_CHAMPION, export_split.holdout, "loan_status", data_fingerprint(from_export, export_split)
    )
    assert comparison.champion_metrics is not None, comparison.note
    # The card's figures come from the sklearn model, the comparison's from its ONNX export: each score
    # differs by at most the parity difference d, so the Brier score by at most (2 + d) * d
    difference = champion.parity.max_abs_difference
    assert comparison.champion_metrics.brier == pytest.approx(
        champion.holdout_metrics.brier, abs=3 * difference
    )
    assert comparison.champion_metrics.roc_auc == pytest.approx(champion.holdout_metrics.roc_auc, abs=1e-6)


def _write_nine_tenths(folder: Path) -> Path:
    """The shipped CSV without every tenth data row, its lines copied as they are (no re-formatting)."""
    lines = gzip.decompress((DATA_FOLDER / f"{CREDIT_RISK_FILE}.gz").read_bytes()).decode().splitlines(True)
    header, rows = lines[0], lines[1:]
    assert len(rows) == CSV_ROWS
    folder.mkdir(parents=True)
    path = folder / CREDIT_RISK_FILE
    kept = [row for index, row in enumerate(rows) if index % LEFT_OUT_EVERY != LEFT_OUT_EVERY - 1]
    path.write_text(header + "".join(kept))
    return path


def _card(bundle: Path) -> ModelCard:
    return ModelCard.model_validate_json((bundle / "model_card.json").read_text())


@pytest.mark.mariadb
@pytest.mark.slow
@pytest.mark.parametrize("champion_source", ["export", "files"])
def test_given_a_champion_on_nine_tenths_when_retrained_on_all_rows_then_no_training_row_is_held_out(
    champion_source: str, mariadb_env: Any, mariadb_database: str, s3_bucket: str, tmp_path: Path
) -> None:
    exports, registry = f"s3://{s3_bucket}/rds-exports", f"s3://{s3_bucket}/models"

    def loaded_and_exported(files: Path, export_id: str) -> str:
        load = ["load", "--dataset", "credit_risk", "--files", str(files), "--database", mariadb_database]
        assert dataload_main(load) == 0
        export = ["export", "--database", mariadb_database, "--out", exports, "--export-id", export_id]
        assert dataload_main([*export, "--as-database", "credit_risk"]) == 0
        return f"export:{exports}#{export_id}"

    # Given a champion trained on 90% of the rows (from their export, or from their CSV) and registered
    subset = _write_nine_tenths(tmp_path / "nine-tenths")
    champion_data = (
        loaded_and_exported(subset.parent, "nine-tenths")
        if champion_source == "export"
        else (f"files:{subset}")
    )
    champion_bundle, candidate_bundle = tmp_path / "champion", tmp_path / "candidate"
    train = ["train", "--dataset", "credit_risk", *FAST_TRAINING]
    assert training_main([*train, "--source", champion_data, "--out", str(champion_bundle)]) == 0
    assert training_main(["register", "--candidate", str(champion_bundle), "--registry", registry]) == 0

    # When all rows are loaded and exported, a candidate is trained on the export with the champion
    # in the registry, and the gate decides
    candidate_data = loaded_and_exported(DATA_FOLDER, "all-rows")
    candidate_training = [*train, "--source", candidate_data, "--out", str(candidate_bundle)]
    assert training_main([*candidate_training, "--champion-registry", registry]) == 0
    verdict_file = tmp_path / "gate_verdict.json"
    gate = ["gate", "--candidate", str(candidate_bundle), "--registry", registry]
    assert training_main([*gate, "--verdict", str(verdict_file)]) == 0

    # Then none of the champion's training records is in the candidate's holdout, which holds all of
    # the champion's holdout (the splits recomputed here are the ones the cards describe)
    champion, candidate = _card(champion_bundle), _card(candidate_bundle)
    champion_split = _split(load_dataset("credit_risk", champion_data).frame, champion_data)
    candidate_split = _split(load_dataset("credit_risk", candidate_data).frame, candidate_data)
    assert (champion.data.rows_train, champion.data.rows_holdout) == (
        len(champion_split.train),
        len(champion_split.holdout),
    )
    assert (candidate.data.rows_train, candidate.data.rows_holdout) == (
        len(candidate_split.train),
        len(candidate_split.holdout),
    )
    assert candidate.data.rows_used > champion.data.rows_used
    champion_training = set(_records(champion_split.train))
    candidate_holdout = set(_records(candidate_split.holdout))
    leaked = champion_training & candidate_holdout
    assert not leaked, f"{len(leaked)} of the champion's training records are in the candidate's holdout"
    assert set(_records(champion_split.holdout)) <= candidate_holdout

    # And the candidate's card scored that champion on its holdout, and the gate compared the two on it
    comparison = candidate.champion_comparison
    assert comparison is not None
    assert comparison.champion_version == champion.model_version
    assert comparison.champion_metrics is not None, comparison.note
    verdict = json.loads(verdict_file.read_text())
    assert verdict["champion_version"] == champion.model_version
    assert not [reason for reason in verdict["reasons"] if "holdouts differ" in reason], verdict["reasons"]
    assert "ok: champion metrics computed on the candidate's holdout" in verdict["reasons"]
