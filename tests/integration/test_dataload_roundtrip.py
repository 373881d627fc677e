"""Round trips: dataset files -> MariaDB -> RDS-layout export (folder or emulated S3) -> training frames."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from training.dataload.__main__ import main as dataload_main
from training.dataload.datasets import read_credit_risk_csv, read_dataset_files, schema_for
from training.dataload.exporter import export_database
from training.dataload.loader import load_tables
from training.sources.export import read_export_tables

pytestmark = pytest.mark.mariadb


def test_credit_risk_files_to_mariadb_to_export_give_the_frame_read_from_the_csv(
    shared_data: Path, mariadb_connection: Any, mariadb_database: str, tmp_path: Path
) -> None:
    # Given the credit_risk CSV loaded into MariaDB
    folder = shared_data / "credit_risk_dataset"
    frames = read_dataset_files("credit_risk", folder)
    result = load_tables(mariadb_connection, schema_for("credit_risk"), frames, database=mariadb_database)
    assert result.row_counts == {"applications": 32_581}

    # When the database is exported in the RDS layout and read back as training reads it
    summary = export_database(mariadb_connection, mariadb_database, tmp_path, "export-cr-1")
    exported = read_export_tables(tmp_path, mariadb_database)

    # Then the layout is RDS's and the frame equals the one read from the file (values and dtypes)
    assert (
        summary.tables[0]
        .files[0]
        .startswith(f"export-cr-1/{mariadb_database}/{mariadb_database}.applications/1/part-00000-")
    )
    assert (tmp_path / "export-cr-1" / "export_info_export-cr-1.json").is_file()
    applications = exported["applications"]
    assert applications["application_id"].tolist() == list(range(1, 32_582))
    pd.testing.assert_frame_equal(
        applications.drop(columns="application_id"),
        read_credit_risk_csv(folder / "credit_risk_dataset.csv"),
        check_exact=True,
    )


def test_jpmc_loans_round_trip_through_emulated_s3_in_several_part_files(
    shared_data: Path, mariadb_connection: Any, mariadb_database: str, s3_bucket: str
) -> None:
    # Given the JPMC loans in MariaDB
    frames = read_dataset_files("jpmc_loans", shared_data / "jpmc_loan_data")
    load_tables(mariadb_connection, schema_for("jpmc_loans"), frames, database=mariadb_database)

    # When exported to S3 (moto over HTTP) in parts of at most 3,000 rows and read back from s3://
    location = f"s3://{s3_bucket}/exports"
    summary = export_database(mariadb_connection, mariadb_database, location, "jpmc-1", rows_per_file=3_000)
    exported = read_export_tables(location, mariadb_database, tables=["loans"])

    # Then four part files hold the 10,000 rows, and the frame equals the CSV's (8-decimal amounts exact)
    assert [len(table.files) for table in summary.tables] == [4]
    expected = pd.read_csv(shared_data / "jpmc_loan_data" / "Loan_Data.csv")
    expected = expected.sort_values("customer_id", ignore_index=True)
    pd.testing.assert_frame_equal(exported["loans"], expected, check_exact=True)


@pytest.mark.slow
def test_berka_round_trip_with_the_seven_tables_and_the_assembled_transactions(
    shared_data: Path, mariadb_connection: Any, mariadb_database: str, tmp_path: Path
) -> None:
    from training.datasets.berka import coerce_berka_tables

    # Given the seven complete PKDD'99 tables and the assembled (79,302-row) transactions file
    trans_file = shared_data / "pkdd99_financial_trans_assembled" / "trans.asc"
    frames = read_dataset_files("berka", shared_data / "pkdd99_financial", trans_file)

    # When loaded into MariaDB (keys enforced), exported and read back
    result = load_tables(mariadb_connection, schema_for("berka"), frames, database=mariadb_database)
    export_database(mariadb_connection, mariadb_database, tmp_path, "berka-1")
    exported = coerce_berka_tables(read_export_tables(tmp_path, mariadb_database))

    # Then every table has its rows and equals the decoded files (the export is in primary-key order)
    assert result.row_counts == {
        "district": 77,
        "account": 4_500,
        "client": 5_369,
        "disp": 5_369,
        "card": 892,
        "loan": 682,
        "order": 6_471,
        "trans": 79_302,
        "complete_history_loans": 392,
    }
    assert set(exported) == set(frames)
    for table, frame in frames.items():
        key = frame.columns[0]
        pd.testing.assert_frame_equal(
            exported[table], frame.sort_values(key, ignore_index=True), check_exact=True, obj=table
        )


def test_cli_loads_and_exports_to_s3(
    shared_data: Path,
    mariadb_env: Any,
    mariadb_database: str,
    s3_bucket: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given connection settings in the environment (mariadb_env), as the container task gets them

    # When the CLI loads jpmc_loans and exports the database to s3://
    load_code = dataload_main(
        [
            "load",
            "--dataset",
            "jpmc_loans",
            "--files",
            str(shared_data / "jpmc_loan_data"),
            "--database",
            mariadb_database,
        ]
    )
    location = f"s3://{s3_bucket}/rds"
    export_code = dataload_main(
        ["export", "--database", mariadb_database, "--out", location, "--export-id", "cli-1"]
    )

    # Then both succeed and the export is readable without naming the export id
    assert (load_code, export_code) == (0, 0)
    assert '"loans": 10000' in capsys.readouterr().out
    assert len(read_export_tables(location, mariadb_database)["loans"]) == 10_000


def test_cli_reports_a_missing_files_folder_as_an_error(
    tmp_path: Path, mariadb_settings: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DB_HOST", mariadb_settings.host)
    monkeypatch.setenv("DB_PORT", str(mariadb_settings.port))
    code = dataload_main(["load", "--dataset", "credit_risk", "--files", str(tmp_path / "nowhere")])
    assert code == 2
    assert "credit_risk_dataset.csv" in capsys.readouterr().err
