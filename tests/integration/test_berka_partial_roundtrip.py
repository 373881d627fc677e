"""Berka round trip with the seven complete tables and the partial (cut-off) transactions file.

pkdd99_financial_trans_partial/trans.asc is the first 3 MiB of the original trans.asc: 49,102
complete rows and a last line cut mid-row (``3526882;11021;940331;"PRIJE``, no line end). It is
loaded with the CLI's opt-in ``--truncated-trans``, exported in the RDS layout to a folder, read
back and compared with the decoded files.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from training.dataload.__main__ import main as dataload_main
from training.dataload.datasets import read_dataset_files
from training.dataload.exporter import export_database
from training.datasets.berka import coerce_berka_tables
from training.sources.export import read_export_tables

pytestmark = pytest.mark.mariadb

BERKA_ROWS = {
    "district": 77,
    "account": 4_500,
    "client": 5_369,
    "disp": 5_369,
    "card": 892,
    "loan": 682,
    "order": 6_471,
    "trans": 49_102,
}


@pytest.fixture
def db_env(mariadb_env: Any) -> None:
    """Connection settings in the environment, as the CLI (and the container task) gets them."""


def _load_arguments(shared_data: Path, database: str) -> list[str]:
    return [
        "load",
        "--dataset",
        "berka",
        "--files",
        str(shared_data / "pkdd99_financial"),
        "--trans-file",
        str(shared_data / "pkdd99_financial_trans_partial" / "trans.asc"),
        "--database",
        database,
    ]


def test_berka_round_trip_with_the_seven_complete_tables_and_the_partial_transactions_file(
    shared_data: Path,
    db_env: None,
    mariadb_connection: Any,
    mariadb_database: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Given the seven complete PKDD'99 tables and the 3 MiB prefix of trans.asc, loaded by the CLI
    # with --truncated-trans (the incomplete last line is dropped with a warning)
    with caplog.at_level(logging.WARNING, logger="training.datasets.berka"):
        code = dataload_main([*_load_arguments(shared_data, mariadb_database), "--truncated-trans"])
    assert code == 0, capsys.readouterr().err
    assert '"trans": 49102' in capsys.readouterr().out
    assert any(
        "dropped the incomplete last line" in record.getMessage() and "PRIJE" in record.getMessage()
        for record in caplog.records
    )

    # When the database is exported in the RDS layout to a folder and read back as training reads it
    summary = export_database(mariadb_connection, mariadb_database, tmp_path, "berka-partial-1")
    exported = coerce_berka_tables(read_export_tables(tmp_path, mariadb_database))

    # Then every table has its rows and equals the decoded files (the export is in primary-key order)
    frames = read_dataset_files(
        "berka",
        shared_data / "pkdd99_financial",
        shared_data / "pkdd99_financial_trans_partial" / "trans.asc",
        truncated_trans=True,
    )
    assert {table.table: table.rows for table in summary.tables} == BERKA_ROWS
    assert {name: len(frame) for name, frame in exported.items()} == BERKA_ROWS
    for table, frame in coerce_berka_tables(frames).items():
        key = frame.columns[0]
        pd.testing.assert_frame_equal(
            exported[table], frame.sort_values(key, ignore_index=True), check_exact=True, obj=table
        )
    trans = exported["trans"]
    assert trans["date"].min() == pd.Timestamp("1993-01-01")
    assert trans["date"].max() == pd.Timestamp("1994-03-31")
    assert 3526882 not in set(trans["trans_id"])  # the cut row


def test_cli_without_the_option_rejects_the_partial_file_and_names_it(
    shared_data: Path, db_env: None, mariadb_database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = dataload_main(_load_arguments(shared_data, mariadb_database))
    error = capsys.readouterr().err
    assert code == 2
    assert "pkdd99_financial_trans_partial" in error
    assert "cut off mid-line" in error
    assert "--truncated-trans" in error


def test_cli_accepts_the_option_for_berka_only(
    shared_data: Path, db_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    code = dataload_main(
        [
            "load",
            "--dataset",
            "credit_risk",
            "--files",
            str(shared_data / "credit_risk_dataset"),
            "--truncated-trans",
        ]
    )
    assert code == 2
    assert "--truncated-trans applies to the berka dataset only" in capsys.readouterr().err
