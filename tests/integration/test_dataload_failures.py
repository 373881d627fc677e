"""A failed load leaves the previous data whole; loading twice gives the same tables."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from training.dataload.datasets import read_dataset_files, schema_for
from training.dataload.loader import LoadError, load_tables

pytestmark = pytest.mark.mariadb


def _dump(connection: Any, database: str, table: str, key: str) -> list[tuple[Any, ...]]:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM `{database}`.`{table}` ORDER BY `{key}`")
        return list(cursor.fetchall())


@pytest.fixture(scope="module")
def credit_risk_frame(shared_data: Path) -> pd.DataFrame:
    return read_dataset_files("credit_risk", shared_data / "credit_risk_dataset")["applications"]


def test_a_bad_value_midway_leaves_the_earlier_data_intact(
    credit_risk_frame: pd.DataFrame, mariadb_connection: Any, mariadb_database: str
) -> None:
    schema = schema_for("credit_risk")
    # Given a first load of 1,000 applications
    first = credit_risk_frame.head(1_000)
    load_tables(mariadb_connection, schema, {"applications": first}, database=mariadb_database)
    before = _dump(mariadb_connection, mariadb_database, "applications", "application_id")

    # When a second load of 3,000 rows has a non-numeric age at row 2,500 (after 2,000 rows were inserted)
    second = credit_risk_frame.head(3_000).astype({"person_age": object})
    second.loc[2_499, "person_age"] = "twenty"
    with pytest.raises(LoadError, match=r"row 2500: person_age = 'twenty'"):
        load_tables(
            mariadb_connection, schema, {"applications": second}, database=mariadb_database, chunk_rows=500
        )

    # Then the table holds exactly the first load
    assert _dump(mariadb_connection, mariadb_database, "applications", "application_id") == before
    assert len(before) == 1_000


def test_a_row_mariadb_rejects_midway_rolls_the_whole_load_back(
    credit_risk_frame: pd.DataFrame, mariadb_connection: Any, mariadb_database: str
) -> None:
    schema = schema_for("credit_risk")
    # Given a first load
    load_tables(
        mariadb_connection, schema, {"applications": credit_risk_frame.head(800)}, database=mariadb_database
    )
    before = _dump(mariadb_connection, mariadb_database, "applications", "application_id")

    # When a later load repeats a primary key in its third chunk (only MariaDB can tell)
    second = credit_risk_frame.head(2_000).copy()
    second.loc[1_200, "application_id"] = 5
    with pytest.raises(LoadError, match=r"MariaDB rejected rows 1001\.\.1500"):
        load_tables(
            mariadb_connection, schema, {"applications": second}, database=mariadb_database, chunk_rows=500
        )

    # Then nothing of the failed load is visible
    assert _dump(mariadb_connection, mariadb_database, "applications", "application_id") == before


def test_a_value_too_long_for_its_column_is_rejected_not_truncated(
    credit_risk_frame: pd.DataFrame, mariadb_connection: Any, mariadb_database: str
) -> None:
    frame = credit_risk_frame.head(10).copy()
    frame.loc[3, "loan_grade"] = "AAA"
    with pytest.raises(LoadError, match=r"Data too long for column 'loan_grade'"):
        load_tables(
            mariadb_connection, schema_for("credit_risk"), {"applications": frame}, database=mariadb_database
        )
    with mariadb_connection.cursor() as cursor:
        cursor.execute(f"SELECT COUNT(*) FROM `{mariadb_database}`.`applications`")
        assert cursor.fetchone() == (0,)


def test_loading_the_same_files_twice_gives_the_same_tables(
    credit_risk_frame: pd.DataFrame, mariadb_connection: Any, mariadb_database: str
) -> None:
    schema = schema_for("credit_risk")
    # Given the dataset loaded once
    first = load_tables(
        mariadb_connection, schema, {"applications": credit_risk_frame}, database=mariadb_database
    )
    once = _dump(mariadb_connection, mariadb_database, "applications", "application_id")

    # When it is loaded again
    second = load_tables(
        mariadb_connection, schema, {"applications": credit_risk_frame}, database=mariadb_database
    )

    # Then the tables are identical, not doubled
    assert first.row_counts == second.row_counts == {"applications": 32_581}
    assert _dump(mariadb_connection, mariadb_database, "applications", "application_id") == once


def test_a_missing_required_value_names_the_row_and_column(
    credit_risk_frame: pd.DataFrame, mariadb_connection: Any, mariadb_database: str
) -> None:
    frame = credit_risk_frame.head(20).copy()
    frame.loc[7, "loan_amnt"] = None
    with pytest.raises(LoadError, match="row 8: loan_amnt is missing"):
        load_tables(
            mariadb_connection, schema_for("credit_risk"), {"applications": frame}, database=mariadb_database
        )


def test_input_with_unexpected_columns_is_refused_before_touching_the_database(
    credit_risk_frame: pd.DataFrame, mariadb_connection: Any, mariadb_database: str
) -> None:
    frame = credit_risk_frame.head(5).rename(columns={"loan_amnt": "loan_amount"})
    with pytest.raises(LoadError, match=r"missing \['loan_amnt'\], unexpected \['loan_amount'\]"):
        load_tables(
            mariadb_connection, schema_for("credit_risk"), {"applications": frame}, database=mariadb_database
        )


def test_an_existing_table_with_other_columns_is_refused(
    credit_risk_frame: pd.DataFrame, mariadb_connection: Any, mariadb_database: str
) -> None:
    with mariadb_connection.cursor() as cursor:
        cursor.execute(f"CREATE TABLE `{mariadb_database}`.`applications` (application_id INT PRIMARY KEY)")
    with pytest.raises(LoadError, match="exists with columns"):
        load_tables(
            mariadb_connection,
            schema_for("credit_risk"),
            {"applications": credit_risk_frame.head(5)},
            database=mariadb_database,
        )
