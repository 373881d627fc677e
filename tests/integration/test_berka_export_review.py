"""PKDD'99 (Berka): the complete-history restriction holds on every path into training.

The assembled ``trans.asc`` (``pkdd99_financial_trans_assembled``) holds the whole pre-loan history
of only the 392 loans listed in ``complete_history_loans.csv`` beside it; features of the other 290
loans would be computed from part of their history (wrong, silently). Training from the files kept
only the listed loans, training from the loader -> MariaDB -> RDS-export path kept all 682. Here:

- the loader carries the list as the table ``complete_history_loans``, the exporter writes it like
  every other table, and training from the export keeps exactly the loans training from the files
  keeps;
- an export (or a folder) with the assembled transactions but without the list is refused, naming
  what is missing, and a reload without a list never leaves an earlier list behind;
- ``files:<folder>`` reads the transactions from that folder only (no silent mix with another
  place), with the list beside them when there is one;
- a malformed list names its file and line.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from training.dataload.__main__ import main as dataload_main
from training.dataload.datasets import read_dataset_files, schema_for
from training.dataload.exporter import export_database
from training.dataload.loader import load_tables
from training.datasets import berka
from training.datasets.catalog import load_dataset

ASSEMBLED = "pkdd99_financial_trans_assembled"
LIST_FILE = "complete_history_loans.csv"
SEVEN_TABLES = [name for name in berka.BERKA_TABLES if name != "trans"]


@pytest.fixture(scope="module")
def files_dataset(shared_data: Path) -> Any:
    """The reference: berka trained from the files (default source), 392 listed loans."""
    return load_dataset("berka")


def _berka_folder(shared_data: Path, folder: Path, *, trans: bool, with_list: bool) -> Path:
    """A folder with links to the seven tables, and optionally the assembled trans.asc and its list."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in SEVEN_TABLES:
        (folder / f"{name}.asc").symlink_to(shared_data / "pkdd99_financial" / f"{name}.asc")
    if trans:
        (folder / "trans.asc").symlink_to(shared_data / ASSEMBLED / "trans.asc")
    if with_list:
        (folder / LIST_FILE).symlink_to(shared_data / ASSEMBLED / LIST_FILE)
    return folder


def _count_rows(connection: Any, database: str, table: str) -> int | None:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s",
            (database, table),
        )
        (exists,) = cursor.fetchone()
        if not exists:
            return None
        cursor.execute(f"SELECT COUNT(*) FROM `{database}`.`{table}`")
        (count,) = cursor.fetchone()
    connection.commit()
    return int(count)


# ------------------------------------------------------------------------------------------
# Loader -> MariaDB -> export -> training
# ------------------------------------------------------------------------------------------


@pytest.mark.mariadb
def test_given_the_assembled_transactions_loaded_by_the_cli_when_trained_from_the_export_then_listed_loans(
    shared_data: Path,
    mariadb_env: Any,
    mariadb_connection: Any,
    mariadb_database: str,
    files_dataset: Any,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given the seven tables and the assembled transactions loaded by the CLI (the container's path)
    code = dataload_main(
        [
            "load",
            "--dataset",
            "berka",
            "--files",
            str(shared_data / "pkdd99_financial"),
            "--trans-file",
            str(shared_data / ASSEMBLED / "trans.asc"),
            "--database",
            mariadb_database,
        ]
    )
    output = capsys.readouterr()
    assert code == 0, output.err
    # Then the list beside the transactions file is loaded as its own table
    assert '"complete_history_loans": 392' in output.out
    assert '"trans": 79302' in output.out

    # When the database is exported in the RDS layout and training reads the export
    summary = export_database(
        mariadb_connection, mariadb_database, tmp_path, "berka-complete-1", layout_database="berka"
    )
    assert {table.table: table.rows for table in summary.tables}["complete_history_loans"] == 392
    from_export = load_dataset("berka", f"export:{tmp_path}#berka-complete-1")

    # Then training sees exactly the 392 listed loans (less the 158 observed for under a year), with the
    # frame the files give
    assert from_export.rows_raw == 392
    assert len(from_export.frame) == 234
    assert int(from_export.frame["defaulted"].sum()) == 31
    pd.testing.assert_frame_equal(from_export.frame, files_dataset.frame, check_exact=True)


@pytest.mark.mariadb
def test_given_an_export_of_the_assembled_transactions_without_the_list_table_when_trained_then_refused(
    shared_data: Path, mariadb_connection: Any, mariadb_database: str, tmp_path: Path
) -> None:
    # Given the assembled transactions in MariaDB, exported without the list table (e.g. an export
    # of only the eight PKDD'99 tables, or one made before the list was loaded)
    frames = read_dataset_files(
        "berka", shared_data / "pkdd99_financial", shared_data / ASSEMBLED / "trans.asc"
    )
    load_tables(mariadb_connection, schema_for("berka"), frames, database=mariadb_database)
    export_database(
        mariadb_connection,
        mariadb_database,
        tmp_path,
        "berka-nolist-1",
        tables=list(berka.BERKA_TABLES),
        layout_database="berka",
    )

    # When training reads it, then it refuses (instead of computing 290 loans' features from part of
    # their history) and says what is missing and why
    with pytest.raises(ValueError, match=r"complete_history_loans") as raised:
        load_dataset("berka", f"export:{tmp_path}#berka-nolist-1")
    assert "1994-04" in str(raised.value)  # the months the transactions do not cover


@pytest.mark.mariadb
def test_given_a_database_loaded_with_a_list_when_reloaded_without_one_then_no_stale_list_is_left(
    shared_data: Path,
    mariadb_connection: Any,
    mariadb_database: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Given berka loaded with the assembled transactions and their list
    first = read_dataset_files(
        "berka", shared_data / "pkdd99_financial", shared_data / ASSEMBLED / "trans.asc"
    )
    load_tables(mariadb_connection, schema_for("berka"), first, database=mariadb_database)
    assert _count_rows(mariadb_connection, mariadb_database, "complete_history_loans") == 392

    # When the same transactions are reloaded from a folder without the list (a warning says so)
    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copyfile(shared_data / ASSEMBLED / "trans.asc", lone / "trans.asc")
    with caplog.at_level("WARNING", logger="training.dataload.datasets"):
        second = read_dataset_files("berka", shared_data / "pkdd99_financial", lone / "trans.asc")
    assert "complete_history_loans" not in second
    assert any(LIST_FILE in record.getMessage() for record in caplog.records)
    load_tables(mariadb_connection, schema_for("berka"), second, database=mariadb_database)

    # Then the earlier list is gone (it described another load) and training from the export refuses
    assert _count_rows(mariadb_connection, mariadb_database, "complete_history_loans") == 0
    export_database(
        mariadb_connection, mariadb_database, tmp_path / "out", "reload-1", layout_database="berka"
    )
    with pytest.raises(ValueError, match=r"complete_history_loans"):
        load_dataset("berka", f"export:{tmp_path / 'out'}#reload-1")


# ------------------------------------------------------------------------------------------
# The list file itself
# ------------------------------------------------------------------------------------------


def test_given_a_list_with_an_empty_loan_id_then_the_error_names_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / LIST_FILE
    path.write_text("loan_id,account_id\n5314,1787\n,1801\n")
    with pytest.raises(ValueError, match=r"complete_history_loans\.csv.*line 3.*loan_id"):
        berka.read_complete_history_loan_ids(path)


def test_given_a_list_naming_a_loan_the_loan_table_lacks_when_read_for_loading_then_refused(
    shared_data: Path, tmp_path: Path
) -> None:
    # A list from another version of the data must not be loaded beside these loans
    folder = tmp_path / "assembled"
    folder.mkdir()
    (folder / "trans.asc").symlink_to(shared_data / ASSEMBLED / "trans.asc")
    (folder / LIST_FILE).write_text("loan_id,history_source\n5314,prefix\n999999,prefix\n")
    with pytest.raises(ValueError, match=r"complete_history_loans\.csv.*999999"):
        read_dataset_files("berka", shared_data / "pkdd99_financial", folder / "trans.asc")


# ------------------------------------------------------------------------------------------
# files:<folder>: the transactions come from that folder, never silently from another place
# ------------------------------------------------------------------------------------------


def test_given_a_files_folder_without_trans_asc_when_loading_berka_then_refused_naming_it(
    shared_data: Path, tmp_path: Path
) -> None:
    folder = _berka_folder(shared_data, tmp_path / "seven", trans=False, with_list=False)
    with pytest.raises(FileNotFoundError, match=r"trans\.asc") as raised:
        load_dataset("berka", f"files:{folder}")
    assert str(folder) in str(raised.value)


def test_given_a_files_folder_with_the_assembled_transactions_and_their_list_then_only_listed_loans(
    shared_data: Path, tmp_path: Path, files_dataset: Any
) -> None:
    folder = _berka_folder(shared_data, tmp_path / "eight", trans=True, with_list=True)
    dataset = load_dataset("berka", f"files:{folder}")
    assert (dataset.rows_raw, len(dataset.frame)) == (392, 234)
    pd.testing.assert_frame_equal(dataset.frame, files_dataset.frame, check_exact=True)


def test_given_a_files_folder_with_the_assembled_transactions_without_their_list_then_refused(
    shared_data: Path, tmp_path: Path
) -> None:
    folder = _berka_folder(shared_data, tmp_path / "nolist", trans=True, with_list=False)
    with pytest.raises(FileNotFoundError, match=r"complete_history_loans\.csv") as raised:
        load_dataset("berka", f"files:{folder}")
    assert "1994-04" in str(raised.value)


# ------------------------------------------------------------------------------------------
# The coverage check behind the refusals: months without any transaction
# ------------------------------------------------------------------------------------------


def test_given_transactions_in_every_month_then_no_gap_and_a_missing_month_is_named() -> None:
    loan = pd.DataFrame({"loan_id": [1], "account_id": [1], "date": [pd.Timestamp("1995-04-15")]})
    account = pd.DataFrame({"account_id": [1], "date": [pd.Timestamp("1995-01-10")]})
    dates = ["1995-01-10", "1995-02-28", "1995-03-31", "1995-04-01"]
    trans = pd.DataFrame({"account_id": [1] * 4, "date": pd.to_datetime(dates)})
    tables = {"loan": loan, "account": account, "trans": trans}
    assert berka.trans_coverage_gaps(tables) == []
    # The loan-day transaction is not history; without February the history has a hole
    assert berka.trans_coverage_gaps({**tables, "trans": trans.drop(index=1)}) == ["1995-02"]
