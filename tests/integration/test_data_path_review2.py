"""The data path, second review: exact values into MariaDB, lost connections, and exports with a
part file lost or duplicated in a copy."""

from __future__ import annotations

import gc
import json
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pymysql
import pytest

from training.dataload import __main__ as dataload_cli
from training.dataload import exporter, loader
from training.dataload.connection import DbSettings, connect
from training.dataload.datasets import read_dataset_files, schema_for
from training.dataload.loader import LoadError, load_tables
from training.sources.export import ExportReadError, read_export_tables

pytestmark = pytest.mark.mariadb


def _rows(connection: Any, database: str, table: str, columns: str, key: str) -> list[tuple[Any, ...]]:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {columns} FROM `{database}`.`{table}` ORDER BY `{key}`")
        return list(cursor.fetchall())


@pytest.fixture(scope="module")
def credit_risk_frame(shared_data: Path) -> pd.DataFrame:
    return read_dataset_files("credit_risk", shared_data / "credit_risk_dataset")["applications"]


# --- values with more decimals than their column are refused, not rounded -----------------------


@pytest.mark.parametrize(
    ("column", "value", "scale"),
    [("loan_int_rate", 11.125, 2), ("person_emp_length", 4.25, 1), ("loan_percent_income", "0.105", 2)],
)
def test_given_a_value_with_more_decimals_than_its_column_when_loaded_then_refused_not_rounded(
    credit_risk_frame: pd.DataFrame,
    mariadb_connection: Any,
    mariadb_database: str,
    column: str,
    value: Any,
    scale: int,
) -> None:
    # Given rows whose 4th row has a value MariaDB's DECIMAL column would round (with a note only,
    # which strict mode lets pass: 11.125 would be stored as 11.13 and the holdout hash would move)
    frame = credit_risk_frame.head(10).astype({column: object})
    frame.loc[3, column] = value

    # When loaded, then the load is refused naming the row, the column and the value
    with pytest.raises(LoadError, match=rf"row 4: {column} = {value!r} .*more than {scale} decimal places"):
        load_tables(
            mariadb_connection, schema_for("credit_risk"), {"applications": frame}, database=mariadb_database
        )
    assert _rows(mariadb_connection, mariadb_database, "applications", "*", "application_id") == []


def test_given_values_within_the_scale_written_with_trailing_zeros_when_loaded_then_stored_exactly(
    credit_risk_frame: pd.DataFrame, mariadb_connection: Any, mariadb_database: str
) -> None:
    frame = credit_risk_frame.head(3).astype({"loan_int_rate": object})
    frame.loc[0, "loan_int_rate"] = "11.1200"
    frame.loc[1, "loan_int_rate"] = 7.5
    load_tables(
        mariadb_connection, schema_for("credit_risk"), {"applications": frame}, database=mariadb_database
    )
    stored = _rows(mariadb_connection, mariadb_database, "applications", "loan_int_rate", "application_id")
    assert [str(rate) for (rate,) in stored[:2]] == ["11.12", "7.50"]


def test_given_a_table_an_earlier_schema_made_with_fewer_decimals_when_loaded_then_refused(
    shared_data: Path, mariadb_connection: Any, mariadb_database: str
) -> None:
    # Given jpmc_loans' table as made with money at 2 decimals (the schema now keeps the file's 8)
    with mariadb_connection.cursor() as cursor:
        cursor.execute(
            f"CREATE TABLE `{mariadb_database}`.`loans` (customer_id INT NOT NULL PRIMARY KEY, "
            "credit_lines_outstanding INT NOT NULL, loan_amt_outstanding DECIMAL(15,2) NOT NULL, "
            "total_debt_outstanding DECIMAL(15,2) NOT NULL, income DECIMAL(15,2) NOT NULL, "
            "years_employed INT NOT NULL, fico_score INT NOT NULL, `default` TINYINT NOT NULL)"
        )
    frames = read_dataset_files("jpmc_loans", shared_data / "jpmc_loan_data")

    # When the files are loaded into it, then the load is refused instead of rounding every amount
    with pytest.raises(
        LoadError, match=r"\('income', 'decimal\(15,2\)'\).*expects.*\('income', 'decimal\(16,8\)'\)"
    ):
        load_tables(mariadb_connection, schema_for("jpmc_loans"), frames, database=mariadb_database)
    assert _rows(mariadb_connection, mariadb_database, "loans", "*", "customer_id") == []


# --- a connection lost midway: the error says so, and the data is the old data -----------------


def _kill(settings: DbSettings, connection: Any) -> None:
    admin = connect(settings, autocommit=True)
    try:
        with admin.cursor() as cursor:
            cursor.execute(f"KILL {connection.thread_id()}")
    finally:
        admin.close()


def test_given_the_connection_lost_midway_when_the_cli_loads_then_it_reports_the_lost_connection(
    shared_data: Path,
    mariadb_env: DbSettings,
    mariadb_connection: Any,
    mariadb_database: str,
    credit_risk_frame: pd.DataFrame,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given 100 applications loaded earlier
    load_tables(
        mariadb_connection,
        schema_for("credit_risk"),
        {"applications": credit_risk_frame.head(100)},
        database=mariadb_database,
    )
    mariadb_connection.commit()
    before = _rows(mariadb_connection, mariadb_database, "applications", "*", "application_id")
    mariadb_connection.commit()  # end the read so the load's DELETE does not wait for it

    # And a CLI load whose connection the server drops while the third chunk is prepared
    opened: list[Any] = []

    def tracking_connect(settings: DbSettings, **options: Any) -> Any:
        opened.append(connect(settings, **options))
        return opened[-1]

    chunks: list[int] = []
    convert = loader._converted_rows

    def dropping(*arguments: Any) -> list[tuple[Any, ...]]:
        chunks.append(1)
        if len(chunks) == 3:
            _kill(mariadb_env, opened[0])
        return convert(*arguments)

    monkeypatch.setattr(dataload_cli, "connect", tracking_connect)
    monkeypatch.setattr(loader, "_converted_rows", dropping)
    capsys.readouterr()

    # When it runs
    code = dataload_cli.main(
        [
            "load",
            "--dataset",
            "credit_risk",
            "--files",
            str(shared_data / "credit_risk_dataset"),
            "--database",
            mariadb_database,
            "--chunk-rows",
            "1000",
        ]
    )

    # Then it fails saying the connection was lost (not pymysql's "(0, '')" from the ROLLBACK it
    # could not send), and the table still holds the earlier 100 rows
    error = capsys.readouterr().err
    assert code == 2
    assert "Lost connection" in error, error
    assert "(0, '')" not in error
    assert _rows(mariadb_connection, mariadb_database, "applications", "*", "application_id") == before


# pymysql's finalisers of the dead cursor must stay quiet ("Exception ignored" is a warning here).
@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
def test_given_the_connection_lost_midway_when_exporting_then_the_lost_connection_is_raised_and_recorded(
    mariadb_settings: DbSettings,
    mariadb_connection: Any,
    mariadb_database: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a table larger than the socket buffers (so rows are still unread when the server drops)
    with mariadb_connection.cursor() as cursor:
        cursor.execute(f"CREATE TABLE `{mariadb_database}`.`notes` (id INT PRIMARY KEY, body TEXT)")
        cursor.executemany(
            f"INSERT INTO `{mariadb_database}`.`notes` VALUES (%s, %s)",
            [(i, "x" * 10_000) for i in range(3_000)],
        )
    mariadb_connection.commit()
    parts: list[int] = []
    write_part = exporter._parquet_bytes

    def dropping(table: pa.Table) -> bytes:
        parts.append(1)
        if len(parts) == 2:
            _kill(mariadb_settings, mariadb_connection)
        return write_part(table)

    monkeypatch.setattr(exporter, "_parquet_bytes", dropping)

    # When the export loses its connection at the second part
    with pytest.raises(pymysql.MySQLError) as raised:
        exporter.export_database(mariadb_connection, mariadb_database, tmp_path, "exp-1", rows_per_file=500)

    # Then the error raised and the failure recorded are the lost connection, not pymysql's
    # AttributeError from draining a dead result nor "(0, '')" from the ROLLBACK it could not send
    assert raised.type is pymysql.OperationalError
    assert raised.value.args[0] == 2013
    info = json.loads((tmp_path / "exp-1" / "export_info_exp-1.json").read_text())
    assert info["status"] == "FAILED"
    assert "Lost connection" in info["failureCause"]
    del raised  # its traceback holds the cursor: collected here, inside the test, not in a later one
    gc.collect()


# --- a part file lost or duplicated in a copy is noticed ----------------------------------------


@pytest.fixture
def exported_in_parts(
    mariadb_connection: Any, mariadb_database: str, tmp_path: Path
) -> tuple[Path, list[str]]:
    """A seven-row table exported in parts of at most three rows: parts of 3, 3 and 1 rows."""
    with mariadb_connection.cursor() as cursor:
        cursor.execute(f"CREATE TABLE `{mariadb_database}`.`loans` (id INT PRIMARY KEY, amount DECIMAL(9,2))")
        cursor.executemany(
            f"INSERT INTO `{mariadb_database}`.`loans` VALUES (%s, %s)", [(i, f"{i}.25") for i in range(7)]
        )
    mariadb_connection.commit()
    out = tmp_path / "exports"
    summary = exporter.export_database(mariadb_connection, mariadb_database, out, "exp-1", rows_per_file=3)
    files = summary.tables[0].files
    assert len(files) == 3
    assert len(read_export_tables(out, mariadb_database)["loans"]) == 7
    return out, files


def test_given_an_export_copied_without_one_part_when_read_then_refused(
    exported_in_parts: tuple[Path, list[str]], mariadb_database: str
) -> None:
    out, files = exported_in_parts
    (out / files[1]).unlink()
    with pytest.raises(
        ExportReadError, match=r"has 4 rows in its 2 part files, but its tables-info counted 7"
    ):
        read_export_tables(out, mariadb_database)


def test_given_an_export_with_a_part_copied_twice_when_read_then_refused(
    exported_in_parts: tuple[Path, list[str]], mariadb_database: str
) -> None:
    out, files = exported_in_parts
    shutil.copy(out / files[0], out / files[0].replace("part-00000-", "part-00000-copy-"))
    with pytest.raises(
        ExportReadError, match=r"has 10 rows in its 4 part files, but its tables-info counted 7"
    ):
        read_export_tables(out, mariadb_database)
