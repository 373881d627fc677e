"""The data path's behaviours a mutation run found unpinned: connection settings, loading (types,
NULLs, transactions), the exporter's RDS layout and type mapping, storage writes, the export
reader and the loader's command line."""

from __future__ import annotations

import datetime as dt
import io
import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pymysql.constants import CLIENT

from training.dataload import __main__ as dataload_cli
from training.dataload import exporter, loader
from training.dataload.connection import DbSettings, SettingsError, connect, settings_from_env
from training.dataload.datasets import read_dataset_files
from training.dataload.exporter import ExportError, export_database
from training.dataload.loader import LoadError, load_tables
from training.dataload.schemas import Column, DatabaseSchema, ForeignKey, TableSchema, berka_schema, quote
from training.dataload.storage import LocalStorage, open_storage
from training.sources.export import ExportReadError, read_export_tables

pytestmark = pytest.mark.mariadb


def _no_secret(arn: str) -> str:
    raise AssertionError(f"no secret should be fetched, got {arn}")


def _rows(connection: Any, sql: str) -> list[tuple[Any, ...]]:
    with connection.cursor() as cursor:
        cursor.execute(sql)
        return list(cursor.fetchall())


def _table_names(connection: Any, database: str) -> list[str]:
    rows = _rows(
        connection,
        f"SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = '{database}' ORDER BY 1",
    )
    return [str(name) for (name,) in rows]


# --- connection settings -------------------------------------------------------------------------


@pytest.mark.parametrize("port", ["1", "65535"])
def test_given_the_edge_ports_then_they_are_accepted(port: str) -> None:
    assert settings_from_env({"DB_PORT": port}, _no_secret).port == int(port)


@pytest.mark.parametrize("port", ["0", "65536"])
def test_given_a_port_just_outside_the_range_then_it_is_refused_naming_the_variable(port: str) -> None:
    with pytest.raises(SettingsError, match=rf"DB_PORT must be between 1 and 65535, got {port}"):
        settings_from_env({"DB_PORT": port}, _no_secret)


def test_given_a_bad_port_in_the_secret_then_the_error_names_the_secret_not_the_variable() -> None:
    secret = json.dumps({"username": "loader", "password": "pw", "port": 70000})
    with pytest.raises(SettingsError, match=r"the secret's port must be between"):
        settings_from_env({"DB_SECRET_ARN": "arn:db"}, lambda arn: secret)


def test_given_a_secret_with_null_fields_then_the_defaults_fill_them() -> None:
    # RDS secrets can carry "dbname": null; null must not become the text "None"
    secret = json.dumps({"username": "loader", "password": "pw", "host": None, "port": None, "dbname": None})
    settings = settings_from_env({"DB_SECRET_ARN": "arn:db"}, lambda arn: secret)
    assert settings == DbSettings(user="loader", password="pw")


def test_given_an_empty_password_variable_and_a_secret_then_the_variable_wins() -> None:
    secret = json.dumps({"username": "loader", "password": "from-secret"})
    settings = settings_from_env({"DB_SECRET_ARN": "arn:db", "DB_PASSWORD": ""}, lambda arn: secret)
    assert settings.password == ""
    assert settings.user == "loader"


def test_given_an_empty_host_variable_then_the_local_server_is_used() -> None:
    assert settings_from_env({"DB_HOST": ""}, _no_secret).host == "127.0.0.1"


@pytest.mark.parametrize("secret", ['["loader", "pw"]', '{"username": "loader"}'])
def test_given_a_secret_of_the_wrong_shape_then_it_is_refused_naming_the_secret(secret: str) -> None:
    with pytest.raises(SettingsError, match=r"secret arn:db (must be a JSON object|lacks password)"):
        settings_from_env({"DB_SECRET_ARN": "arn:db"}, lambda arn: secret)


def test_given_a_connection_then_the_server_may_not_ask_for_local_files(mariadb_settings: DbSettings) -> None:
    # LOAD DATA LOCAL lets a (spoofed) server read any file of the client: never offered
    connection = connect(mariadb_settings)
    try:
        assert connection.client_flag & CLIENT.LOCAL_FILES == 0
    finally:
        connection.close()


# --- schemas ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("identifier", ["a`b", "a\x00b", ""])
def test_given_an_identifier_that_could_break_out_of_its_quotes_then_it_is_refused(identifier: str) -> None:
    with pytest.raises(ValueError, match="invalid SQL identifier"):
        quote(identifier)


def test_given_a_decimal_without_a_scale_or_precision_then_mariadbs_defaults_apply() -> None:
    assert Column("amount", "DECIMAL(10)").decimal_scale == 0
    assert Column("amount", "DECIMAL(12, 3)").decimal_scale == 3
    assert Column("amount", "DECIMAL(12, 3)").decimal_precision == 12
    assert Column("amount", "DECIMAL").decimal_precision == 10
    assert Column("amount", "DECIMAL").decimal_scale == 0
    assert Column("amount", "DOUBLE").decimal_scale is None
    assert Column("amount", "DOUBLE").decimal_precision is None


BERKA_KEY_TYPES: dict[str, dict[str, str]] = {
    "district": {"district_id": "int", "name": "string"},
    "account": {"account_id": "int", "district_id": "int", "date": "date"},
    "client": {"client_id": "int", "district_id": "int"},
    "disp": {"disp_id": "int", "client_id": "int", "account_id": "int"},
    "card": {"card_id": "int", "disp_id": "int"},
    "loan": {"loan_id": "int", "account_id": "int", "amount": "decimal"},
    "order": {"order_id": "int", "account_id": "int"},
    "trans": {"trans_id": "int", "account_id": "int", "k_symbol": "string"},
}


def test_given_nullable_columns_then_every_other_berka_column_is_not_null() -> None:
    schema = berka_schema(BERKA_KEY_TYPES, {"trans": {"k_symbol"}})
    assert schema.table("trans").columns[2] == Column("k_symbol", "VARCHAR(255)", nullable=True)
    assert schema.table("account").columns[2] == Column("date", "DATE", nullable=False)
    # Without the list only the keys are NOT NULL
    assert berka_schema(BERKA_KEY_TYPES).table("account").columns[2].nullable


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"bank": {"bank_id": "int"}}, r"unknown tables: \['bank'\]"),
        ({"loan": {"loan_id": "int", "amount": "decimal"}}, r"table loan lacks key columns \['account_id'\]"),
        (
            {"loan": {"loan_id": "int", "account_id": "int", "amount": "money"}},
            r"loan.amount has kind 'money'",
        ),
    ],
)
def test_given_berka_column_types_with_a_mistake_then_the_error_names_it(
    change: dict[str, dict[str, str]], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        berka_schema({**BERKA_KEY_TYPES, **change})


# --- datasets --------------------------------------------------------------------------------------

CREDIT_RISK_HEADER = (
    "person_age,person_income,person_home_ownership,person_emp_length,loan_intent,loan_grade,loan_amnt,"
    "loan_int_rate,loan_status,loan_percent_income,cb_person_default_on_file,cb_person_cred_hist_length"
)


def _credit_risk_file(folder: Path, header: str, rows: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "credit_risk_dataset.csv").write_text("\n".join([header, *rows]) + "\n")
    return folder


def test_given_the_credit_risk_file_then_application_ids_are_the_1_based_row_numbers(tmp_path: Path) -> None:
    rows = [
        "22,59000,RENT,123.0,PERSONAL,D,35000,16.02,1,0.59,Y,3",
        "21,9600,OWN,5.0,EDUCATION,B,1000,,0,0.1,N,2",
    ]
    frame = read_dataset_files("credit_risk", _credit_risk_file(tmp_path, CREDIT_RISK_HEADER, rows))[
        "applications"
    ]
    assert frame["application_id"].tolist() == [1, 2]


def test_given_text_pandas_would_read_as_missing_then_it_stays_text(tmp_path: Path) -> None:
    # "NA" and "null" are words of the file, not missing values; only an empty field is missing
    rows = ["22,59000,NA,123.0,null,D,35000,,1,0.59,N,3"]
    frame = read_dataset_files("credit_risk", _credit_risk_file(tmp_path, CREDIT_RISK_HEADER, rows))[
        "applications"
    ]
    assert frame.loc[0, "person_home_ownership"] == "NA"
    assert frame.loc[0, "loan_intent"] == "null"
    assert frame["loan_int_rate"].isna().tolist() == [True]


def test_given_a_header_in_another_order_then_the_file_is_refused(tmp_path: Path) -> None:
    names = CREDIT_RISK_HEADER.split(",")
    swapped = ",".join([names[1], names[0], *names[2:]])
    with pytest.raises(ValueError, match=r"header .* differs from the expected"):
        read_dataset_files("credit_risk", _credit_risk_file(tmp_path, swapped, []))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"truncated_trans": True}, "truncated_trans applies to the berka dataset only"),
        (
            {"complete_history_file": Path("list.csv")},
            "complete_history_file applies to the berka dataset only",
        ),
    ],
)
def test_given_berka_options_for_another_dataset_then_they_are_refused(
    tmp_path: Path, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        read_dataset_files("credit_risk", tmp_path, **options)


def test_given_a_complete_history_list_named_explicitly_then_it_wins_over_the_one_beside_the_file(
    shared_data: Path, tmp_path: Path
) -> None:
    # Given the assembled transactions, whose own list sits beside them, and another list elsewhere
    assembled = shared_data / "pkdd99_financial_trans_assembled"
    assert (assembled / "complete_history_loans.csv").is_file()
    chosen = tmp_path / "chosen.csv"
    chosen.write_text("loan_id,history_source\n5316,prefix\n5314,prefix\n")

    # When read for loading with the list named, then that list is the table
    frames = read_dataset_files(
        "berka", shared_data / "pkdd99_financial", assembled / "trans.asc", complete_history_file=chosen
    )
    assert sorted(frames["complete_history_loans"]["loan_id"].tolist()) == [5314, 5316]

    # And a named list that is not there is an error naming it, not a fallback to the other one
    with pytest.raises(FileNotFoundError, match=r"complete-history list .*missing\.csv not found"):
        read_dataset_files(
            "berka",
            shared_data / "pkdd99_financial",
            assembled / "trans.asc",
            complete_history_file=tmp_path / "missing.csv",
        )


# --- loading: a small schema with every kind, and an optional child table ----------------------------

PARENT = TableSchema(
    name="parent",
    columns=(
        Column("id", "INT", nullable=False),
        Column("code", "VARCHAR(32)", nullable=False),
        Column("note", "VARCHAR(64)"),
        Column("amount", "DECIMAL(16,8)"),
        Column("ratio", "DOUBLE"),
        Column("day", "DATE"),
        Column("moment", "DATETIME"),
    ),
    primary_key=("id",),
)
CHILD = TableSchema(
    name="child",
    columns=(Column("parent_id", "INT", nullable=False),),
    primary_key=("parent_id",),
    foreign_keys=(ForeignKey("parent_id", "parent", "id"),),
    optional=True,
)
SMALL = DatabaseSchema(dataset="small", default_database="small", tables=(PARENT, CHILD))


def _parent_frame(count: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": list(range(1, count + 1)),
            "code": [f"c{i}" for i in range(1, count + 1)],
            "note": ["n"] * count,
            "amount": ["1.5"] * count,
            "ratio": [0.5] * count,
            "day": [dt.date(1995, 1, 2)] * count,
            "moment": [dt.datetime(1995, 1, 2, 3, 4, 5)] * count,
        }
    )


def test_given_nulls_unicode_and_exact_values_when_loaded_and_exported_then_they_read_back_the_same(
    mariadb_connection: Any, mariadb_database: str, tmp_path: Path
) -> None:
    # Given values that are easy to lose: NULL in every nullable kind, four-byte characters, keys
    # that differ only in case or accent, and a decimal a direct decimal->float cast gets wrong
    frame = pd.DataFrame(
        {
            "id": [1, 2, 3, 4],
            "code": ["a", "A", "é", "e"],
            "note": ["naïve 😀 日本", None, "None", ""],
            "amount": ["9.59191866", None, "-0.00000001", "12345678.12345678"],
            "ratio": [0.1, None, -2.5, 1e300],
            "day": [dt.date(1993, 1, 31), None, dt.date(1999, 12, 31), "1996-02-29"],
            "moment": [
                dt.datetime(1993, 1, 31, 23, 59, 58),
                None,
                dt.datetime(2000, 1, 1),
                "1996-02-29T12:00:00",
            ],
        }
    )
    load_tables(mariadb_connection, SMALL, {"parent": frame}, database=mariadb_database)

    # When exported and read back for training
    export_database(mariadb_connection, mariadb_database, tmp_path, "exp-1")
    read = read_export_tables(tmp_path, mariadb_database, ["parent"])["parent"]

    # Then every value is the one loaded, NULLs are missing values (not the text "None")
    assert read["code"].tolist() == ["a", "A", "é", "e"]
    assert read["note"].tolist()[0] == "naïve 😀 日本"
    assert pd.isna(read["note"].tolist()[1])
    assert read["note"].tolist()[2:] == ["None", ""]
    assert read["amount"].tolist()[0] == float("9.59191866")
    assert pd.isna(read["amount"].tolist()[1])
    assert read["amount"].tolist()[2:] == [float("-0.00000001"), float("12345678.12345678")]
    assert read["ratio"].tolist()[0] == 0.1
    assert pd.isna(read["ratio"].tolist()[1])
    assert read["ratio"].tolist()[2:] == [-2.5, 1e300]
    assert str(read["day"].dtype).startswith("datetime64")
    assert read["day"].tolist()[0] == pd.Timestamp("1993-01-31")
    assert pd.isna(read["day"].tolist()[1])
    assert read["day"].tolist()[3] == pd.Timestamp("1996-02-29")
    assert str(read["moment"].dtype).startswith("datetime64")
    assert read["moment"].tolist()[0] == pd.Timestamp("1993-01-31 23:59:58")
    assert pd.isna(read["moment"].tolist()[1])
    assert read["moment"].tolist()[3] == pd.Timestamp("1996-02-29 12:00:00")


KEYED = DatabaseSchema(
    dataset="keyed",
    default_database="keyed",
    tables=(
        TableSchema(
            name="codes",
            columns=(Column("code", "VARCHAR(8)", nullable=False), Column("share", "DECIMAL(2,2)")),
            primary_key=("code",),
        ),
    ),
)


def test_given_text_keys_that_differ_only_in_case_or_accent_then_they_are_distinct_rows(
    mariadb_connection: Any, mariadb_database: str
) -> None:
    # Given keys a case- or accent-insensitive collation would call duplicates, and a DECIMAL(2,2)
    # (no digit before the point) holding zero and its largest value
    frame = pd.DataFrame({"code": ["a", "A", "é", "e"], "share": ["0", "0.99", "-0.99", None]})

    # When loaded, then each is its own row with its own value
    load_tables(mariadb_connection, KEYED, {"codes": frame}, database=mariadb_database)
    stored = _rows(mariadb_connection, f"SELECT code, share FROM `{mariadb_database}`.`codes`")
    assert sorted((code, None if share is None else str(share)) for code, share in stored) == [
        ("A", "0.99"),
        ("a", "0.00"),
        ("e", None),
        ("é", "-0.99"),
    ]


def test_given_an_optional_table_left_out_when_loaded_then_it_is_not_created(
    mariadb_connection: Any, mariadb_database: str
) -> None:
    result = load_tables(mariadb_connection, SMALL, {"parent": _parent_frame(2)}, database=mariadb_database)
    assert result.row_counts == {"parent": 2}
    assert _table_names(mariadb_connection, mariadb_database) == ["parent"]


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("id", 2.5, r"row 2: id = 2.5 is not a valid INT \(not a whole number\)"),
        ("ratio", float("inf"), r"row 2: ratio = inf is not a valid DOUBLE \(infinite\)"),
        # Refused by the loader itself: the driver would spell out all 400 billion digits
        (
            "amount",
            "1e400000000000",
            r"row 2: amount = '1e400000000000' is not a valid DECIMAL\(16,8\) "
            r"\(more than 8 digits before the decimal point\)",
        ),
        ("amount", "100000000", r"row 2: amount = '100000000' .*more than 8 digits before the decimal point"),
        ("day", "1995-02-30", r"row 2: day = '1995-02-30' is not a valid DATE"),
    ],
)
def test_given_a_value_its_column_cannot_hold_exactly_then_the_load_names_row_column_and_value(
    mariadb_connection: Any, mariadb_database: str, column: str, value: Any, message: str
) -> None:
    frame = _parent_frame(3).astype({column: object})
    frame.loc[1, column] = value
    with pytest.raises(LoadError, match=message):
        load_tables(mariadb_connection, SMALL, {"parent": frame}, database=mariadb_database)
    assert _rows(mariadb_connection, f"SELECT * FROM `{mariadb_database}`.`parent`") == []


def test_given_decimals_at_the_edges_of_their_column_then_they_are_stored_exactly(
    mariadb_connection: Any, mariadb_database: str
) -> None:
    frame = _parent_frame(4).astype({"amount": object})
    frame["amount"] = ["99999999.99999999", "-99999999.99999999", "0", "0E-20"]
    load_tables(mariadb_connection, SMALL, {"parent": frame}, database=mariadb_database)
    stored = _rows(mariadb_connection, f"SELECT amount FROM `{mariadb_database}`.`parent` ORDER BY id")
    assert [str(amount) for (amount,) in stored] == [
        "99999999.99999999",
        "-99999999.99999999",
        "0E-8",
        "0E-8",
    ]


def test_given_a_date_with_a_time_of_day_for_a_date_column_then_it_is_refused_not_cut(
    mariadb_connection: Any, mariadb_database: str
) -> None:
    # A DATE column would keep the day and drop the time without an error
    frame = _parent_frame(2).astype({"day": object})
    frame.loc[0, "day"] = pd.Timestamp("1995-01-02 00:00:00")  # midnight: the date itself
    frame.loc[1, "day"] = pd.Timestamp("1995-01-02 13:30:00")
    with pytest.raises(LoadError, match=r"row 2: day = .* is not a valid DATE \(has a time of day"):
        load_tables(mariadb_connection, SMALL, {"parent": frame}, database=mariadb_database)


def test_given_a_frame_lacking_a_column_then_the_load_names_it_before_touching_the_database(
    mariadb_connection: Any, mariadb_database: str
) -> None:
    frame = _parent_frame(2).drop(columns=["ratio"])
    with pytest.raises(LoadError, match=r"table parent: .*missing \['ratio'\], unexpected none"):
        load_tables(mariadb_connection, SMALL, {"parent": frame}, database=mariadb_database)
    assert _table_names(mariadb_connection, mariadb_database) == []


def test_given_an_unknown_table_then_the_load_is_refused_naming_it(
    mariadb_connection: Any, mariadb_database: str
) -> None:
    frames = {"parent": _parent_frame(1), "orphans": pd.DataFrame({"id": [1]})}
    with pytest.raises(LoadError, match=r"unknown tables: \['orphans'\]"):
        load_tables(mariadb_connection, SMALL, frames, database=mariadb_database)
    assert _table_names(mariadb_connection, mariadb_database) == []


def test_given_chunks_of_zero_rows_then_the_load_is_refused_before_touching_the_database(
    mariadb_connection: Any, mariadb_database: str
) -> None:
    with pytest.raises(ValueError, match="chunk_rows must be at least 1"):
        load_tables(
            mariadb_connection, SMALL, {"parent": _parent_frame(1)}, database=mariadb_database, chunk_rows=0
        )
    assert _table_names(mariadb_connection, mariadb_database) == []


@pytest.fixture
def loaded_small(mariadb_connection: Any, mariadb_database: str) -> list[tuple[Any, ...]]:
    """The small schema loaded with three parents; its rows, read back."""
    load_tables(mariadb_connection, SMALL, {"parent": _parent_frame(3)}, database=mariadb_database)
    rows = _rows(mariadb_connection, f"SELECT * FROM `{mariadb_database}`.`parent` ORDER BY id")
    mariadb_connection.commit()
    assert len(rows) == 3
    return rows


def test_given_an_autocommit_connection_when_a_load_fails_midway_then_the_old_rows_are_whole(
    mariadb_settings: DbSettings, mariadb_database: str, loaded_small: list[tuple[Any, ...]]
) -> None:
    # Given a connection in autocommit mode (each statement would commit on its own)
    connection = connect(mariadb_settings.with_database(mariadb_database), autocommit=True)
    try:
        # When a load fails in its second chunk, after the DELETE and the first chunk ran
        frame = _parent_frame(6).astype({"ratio": object})
        frame.loc[4, "ratio"] = "lots"
        with pytest.raises(LoadError, match=r"row 5: ratio = 'lots'"):
            load_tables(connection, SMALL, {"parent": frame}, database=mariadb_database, chunk_rows=2)
        # Then the table holds the earlier rows, not the first chunk of the failed load
        assert _rows(connection, f"SELECT * FROM `{mariadb_database}`.`parent` ORDER BY id") == loaded_small
    finally:
        connection.close()


def test_given_rows_lost_between_the_input_and_the_table_then_the_count_check_rolls_the_load_back(
    mariadb_connection: Any,
    mariadb_database: str,
    loaded_small: list[tuple[Any, ...]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given chunking that skips the last chunk (rows the INSERTs never send)
    chunks = loader._chunks

    def losing_the_last_chunk(total: int, size: int) -> Iterator[tuple[int, int]]:
        yield from list(chunks(total, size))[:-1]

    monkeypatch.setattr(loader, "_chunks", losing_the_last_chunk)
    with pytest.raises(LoadError, match=r"table parent: 4 rows in MariaDB after the load, expected 5"):
        load_tables(
            mariadb_connection, SMALL, {"parent": _parent_frame(5)}, database=mariadb_database, chunk_rows=4
        )
    assert (
        _rows(mariadb_connection, f"SELECT * FROM `{mariadb_database}`.`parent` ORDER BY id") == loaded_small
    )


def test_given_an_interrupt_midway_when_loading_then_the_transaction_is_rolled_back(
    mariadb_connection: Any,
    mariadb_database: str,
    loaded_small: list[tuple[Any, ...]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a Ctrl-C (not an Exception) while the second chunk is prepared
    convert = loader._converted_rows
    calls: list[int] = []

    def interrupted(*arguments: Any) -> list[tuple[Any, ...]]:
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return convert(*arguments)

    monkeypatch.setattr(loader, "_converted_rows", interrupted)
    with pytest.raises(KeyboardInterrupt):
        load_tables(
            mariadb_connection, SMALL, {"parent": _parent_frame(4)}, database=mariadb_database, chunk_rows=2
        )

    # Then the connection is not left inside the load's transaction: it reads the earlier rows
    assert (
        _rows(mariadb_connection, f"SELECT * FROM `{mariadb_database}`.`parent` ORDER BY id") == loaded_small
    )


# --- exporting -----------------------------------------------------------------------------------


def _create(connection: Any, database: str, ddl: str, rows: list[tuple[Any, ...]]) -> None:
    with connection.cursor() as cursor:
        cursor.execute(ddl.replace("`db`", f"`{database}`"))
        if rows:
            placeholders = ", ".join(["%s"] * len(rows[0]))
            table = ddl.split("`db`.")[1].split(" ")[0]
            cursor.executemany(f"INSERT INTO `{database}`.{table} VALUES ({placeholders})", rows)
    connection.commit()


def _part(path: Path) -> pa.Table:
    return pq.read_table(io.BytesIO(path.read_bytes()))


def test_given_mariadb_types_then_the_parts_hold_the_rds_mapping_and_read_back(
    mariadb_connection: Any, mariadb_database: str, tmp_path: Path
) -> None:
    # Given the types whose RDS mapping is not the obvious one, with their extreme values and NULLs
    _create(
        mariadb_connection,
        mariadb_database,
        "CREATE TABLE `db`.`kinds` (id INT PRIMARY KEY, big_unsigned BIGINT UNSIGNED, "
        "int_unsigned INT UNSIGNED, wide DECIMAL(39,2), lapse TIME, blob_value BLOB, day DATE)",
        [
            (
                1,
                18446744073709551615,
                4294967295,
                "1234567890123456789012345678901234567.25",
                "-01:02:03",
                b"\x00\xff",
                "1996-02-29",
            ),
            (2, None, None, None, None, None, None),
        ],
    )

    summary = export_database(mariadb_connection, mariadb_database, tmp_path, "exp-1")

    # Then the part file holds RDS's types (unsigned widened, DECIMAL over 38 digits and DATE as text)
    part = _part(tmp_path / summary.tables[0].files[0])
    assert part.schema.field("big_unsigned").type == pa.decimal128(20, 0)
    assert part.schema.field("int_unsigned").type == pa.int64()
    assert part.schema.field("wide").type == pa.string()
    assert part.schema.field("day").type == pa.string()
    assert part.to_pylist() == [
        {
            "id": 1,
            "big_unsigned": Decimal("18446744073709551615"),
            "int_unsigned": 4294967295,
            "wide": "1234567890123456789012345678901234567.25",
            "lapse": "-01:02:03",
            "blob_value": b"\x00\xff",
            "day": "1996-02-29",
        },
        {
            "id": 2,
            "big_unsigned": None,
            "int_unsigned": None,
            "wide": None,
            "lapse": None,
            "blob_value": None,
            "day": None,
        },
    ]
    # And the reader turns the wide decimal's text into a number and the date text into a date
    read = read_export_tables(tmp_path, mariadb_database)["kinds"]
    assert read["wide"].tolist()[0] == float("1234567890123456789012345678901234567.25")
    assert read["day"].tolist()[0] == pd.Timestamp("1996-02-29")
    info = json.loads((tmp_path / "exp-1" / "export_tables_info_exp-1_from_1_to_1.json").read_text())
    original = {
        m["columnName"]: m["originalType"]
        for m in info["perTableStatus"][0]["schemaMetadata"]["originalTypeMappings"]
    }
    assert original["wide"] == "decimal"
    assert original["big_unsigned"] == "bigint"


def test_given_times_with_fractions_and_signs_then_their_text_keeps_them(
    mariadb_connection: Any, mariadb_database: str, tmp_path: Path
) -> None:
    times = ["-00:00:00.500000", "10:00:00.250000", "-838:59:59", "838:59:59.999999", "00:00:00"]
    _create(
        mariadb_connection,
        mariadb_database,
        "CREATE TABLE `db`.`times` (id INT PRIMARY KEY, lapse TIME(6))",
        list(enumerate(times)),
    )
    export_database(mariadb_connection, mariadb_database, tmp_path, "exp-1")
    assert read_export_tables(tmp_path, mariadb_database)["times"]["lapse"].tolist() == times


def test_given_parts_then_they_are_numbered_from_zero_as_rds_names_them(
    mariadb_connection: Any, mariadb_database: str, tmp_path: Path
) -> None:
    _create(
        mariadb_connection,
        mariadb_database,
        "CREATE TABLE `db`.`loans` (id INT PRIMARY KEY)",
        [(i,) for i in range(5)],
    )
    summary = export_database(mariadb_connection, mariadb_database, tmp_path, "exp-1", rows_per_file=2)
    names = [Path(name).name[: len("part-00000-")] for name in summary.tables[0].files]
    assert names == ["part-00000-", "part-00001-", "part-00002-"]
    assert all(
        name.startswith(f"exp-1/{mariadb_database}/{mariadb_database}.loans/1/")
        for name in summary.tables[0].files
    )


def test_given_an_empty_table_then_it_is_exported_as_one_part_with_its_columns(
    mariadb_connection: Any, mariadb_database: str, tmp_path: Path
) -> None:
    _create(
        mariadb_connection, mariadb_database, "CREATE TABLE `db`.`empty` (id INT PRIMARY KEY, note TEXT)", []
    )
    summary = export_database(mariadb_connection, mariadb_database, tmp_path, "exp-1")
    assert len(summary.tables[0].files) == 1
    read = read_export_tables(tmp_path, mariadb_database)["empty"]
    assert list(read.columns) == ["id", "note"]
    assert len(read) == 0


def test_given_a_covering_secondary_index_then_rows_are_still_written_in_primary_key_order(
    mariadb_connection: Any, mariadb_database: str, tmp_path: Path
) -> None:
    # A full scan of (id, code) may use the index on code, which orders the rows by code
    _create(
        mariadb_connection,
        mariadb_database,
        "CREATE TABLE `db`.`codes` (id INT PRIMARY KEY, code VARCHAR(8) NOT NULL, UNIQUE KEY by_code (code))",
        [(i, f"c{99 - i:02d}") for i in range(50)],
    )
    export_database(mariadb_connection, mariadb_database, tmp_path, "exp-1")
    assert read_export_tables(tmp_path, mariadb_database)["codes"]["id"].tolist() == list(range(50))


def test_given_rows_added_between_two_tables_then_the_export_is_still_one_snapshot(
    mariadb_settings: DbSettings, mariadb_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an autocommit connection (no transaction of its own) and two tables of one row each
    connection = connect(mariadb_settings.with_database(mariadb_database), autocommit=True)
    other = connect(mariadb_settings.with_database(mariadb_database), autocommit=True)
    try:
        for table in ("a_first", "b_second"):
            _create(connection, mariadb_database, f"CREATE TABLE `db`.`{table}` (id INT PRIMARY KEY)", [(1,)])
        export_table = exporter._export_table

        exported: list[int] = []

        def writing_in_between(*arguments: Any) -> Any:
            result = export_table(*arguments)
            exported.append(1)
            if len(exported) == 1:  # another client commits after the first table was read
                with other.cursor() as cursor:
                    cursor.execute(f"INSERT INTO `{mariadb_database}`.`b_second` VALUES (2)")
            return result

        monkeypatch.setattr(exporter, "_export_table", writing_in_between)
        summary = export_database(connection, mariadb_database, tmp_path, "exp-1")
    finally:
        connection.close()
        other.close()
    # Then the second table is exported as it was when the export started
    assert [table.rows for table in summary.tables] == [1, 1]


def test_given_an_export_then_the_connection_is_not_left_inside_its_snapshot(
    mariadb_settings: DbSettings, mariadb_connection: Any, mariadb_database: str, tmp_path: Path
) -> None:
    _create(mariadb_connection, mariadb_database, "CREATE TABLE `db`.`loans` (id INT PRIMARY KEY)", [(1,)])
    export_database(mariadb_connection, mariadb_database, tmp_path, "exp-1")
    # When another client adds a row after the export
    other = connect(mariadb_settings.with_database(mariadb_database), autocommit=True)
    try:
        with other.cursor() as cursor:
            cursor.execute(f"INSERT INTO `{mariadb_database}`.`loans` VALUES (2)")
    finally:
        other.close()
    # Then the exporting connection sees it (its read view ended with the export)
    assert _rows(mariadb_connection, f"SELECT id FROM `{mariadb_database}`.`loans` ORDER BY id") == [
        (1,),
        (2,),
    ]


@pytest.mark.parametrize("export_id", ["a/b", " exp", "exp ", ""])
def test_given_an_export_id_that_is_not_a_plain_name_then_it_is_refused(
    mariadb_connection: Any, mariadb_database: str, tmp_path: Path, export_id: str
) -> None:
    with pytest.raises(ValueError, match="must be a non-empty name without '/' or spaces"):
        export_database(mariadb_connection, mariadb_database, tmp_path, export_id)
    assert list(tmp_path.iterdir()) == []


def test_given_parts_of_zero_rows_then_the_export_is_refused(
    mariadb_connection: Any, mariadb_database: str, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="rows_per_file must be at least 1"):
        export_database(mariadb_connection, mariadb_database, tmp_path, "exp-1", rows_per_file=0)


def test_given_an_export_id_already_used_then_the_earlier_export_is_kept(
    mariadb_connection: Any, mariadb_database: str, tmp_path: Path
) -> None:
    _create(mariadb_connection, mariadb_database, "CREATE TABLE `db`.`loans` (id INT PRIMARY KEY)", [(1,)])
    export_database(mariadb_connection, mariadb_database, tmp_path, "exp-1")
    before = {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()}
    with pytest.raises(ExportError, match="already holds an export; choose another export id"):
        export_database(mariadb_connection, mariadb_database, tmp_path, "exp-1")
    assert {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()} == before


def test_given_an_unknown_table_then_the_export_names_it_and_writes_nothing(
    mariadb_connection: Any, mariadb_database: str, tmp_path: Path
) -> None:
    _create(mariadb_connection, mariadb_database, "CREATE TABLE `db`.`loans` (id INT PRIMARY KEY)", [(1,)])
    with pytest.raises(ExportError, match=r"has no tables \['nope'\]; it has \['loans'\]"):
        export_database(mariadb_connection, mariadb_database, tmp_path, "exp-1", tables=["loans", "nope"])
    assert list(tmp_path.rglob("*")) == []


def test_given_another_layout_name_then_export_info_names_the_tables_under_it(
    mariadb_connection: Any, mariadb_database: str, tmp_path: Path
) -> None:
    _create(mariadb_connection, mariadb_database, "CREATE TABLE `db`.`loans` (id INT PRIMARY KEY)", [(1,)])
    export_database(
        mariadb_connection, mariadb_database, tmp_path, "exp-1", tables=["loans"], layout_database="bank"
    )
    info = json.loads((tmp_path / "exp-1" / "export_info_exp-1.json").read_text())
    assert info["exportOnly"] == ["bank.loans"]
    assert info["status"] == "COMPLETE"
    assert read_export_tables(tmp_path, "bank")["loans"]["id"].tolist() == [1]


def test_given_the_tables_info_cannot_be_written_then_the_export_is_marked_failed(
    mariadb_connection: Any, mariadb_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given storage that fails on the tables-info file, written after every part
    _create(mariadb_connection, mariadb_database, "CREATE TABLE `db`.`loans` (id INT PRIMARY KEY)", [(1,)])
    write_json = exporter._write_json

    def failing_on_tables_info(storage: Any, key: str, document: dict[str, Any]) -> None:
        if "export_tables_info_" in key:
            raise OSError("disk full")
        write_json(storage, key, document)

    monkeypatch.setattr(exporter, "_write_json", failing_on_tables_info)
    with pytest.raises(OSError, match="disk full"):
        export_database(mariadb_connection, mariadb_database, tmp_path, "exp-1")

    # Then export_info says FAILED with the cause (never COMPLETE without its tables-info)
    info = json.loads((tmp_path / "exp-1" / "export_info_exp-1.json").read_text())
    assert info["status"] == "FAILED"
    assert info["failureCause"] == "disk full"


# --- storage ---------------------------------------------------------------------------------------


def test_given_a_write_that_fails_midway_then_the_old_object_is_whole_and_no_temporary_is_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = LocalStorage(tmp_path)
    storage.write_bytes("a/latest.json", b"old")
    write_bytes = Path.write_bytes

    def half_then_fail(self: Path, data: Any) -> int:
        write_bytes(self, bytes(data)[:2])
        raise OSError("No space left on device")

    monkeypatch.setattr(Path, "write_bytes", half_then_fail)
    with pytest.raises(OSError, match="No space left"):
        storage.write_bytes("a/latest.json", b"new and longer")
    monkeypatch.undo()
    assert storage.read_bytes("a/latest.json") == b"old"
    assert storage.list_keys() == ["a/latest.json"]


def test_given_create_only_writes_then_only_the_objects_are_left(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    storage.write_bytes("m/v1/model.onnx", b"model", overwrite=False)
    storage.write_bytes("m/v2/model.onnx", b"model", overwrite=False)
    assert storage.list_keys() == ["m/v1/model.onnx", "m/v2/model.onnx"]
    assert storage.list_keys("m/v2/") == ["m/v2/model.onnx"]


def test_given_a_bucket_without_a_prefix_then_keys_sit_at_the_bucket_root(
    s3_client: Any, s3_bucket: str
) -> None:
    storage = open_storage(f"s3://{s3_bucket}")
    storage.write_bytes("exp-1/export_info_exp-1.json", b"{}")
    listed = s3_client.list_objects_v2(Bucket=s3_bucket)["Contents"]
    assert [item["Key"] for item in listed] == ["exp-1/export_info_exp-1.json"]
    assert storage.list_keys() == ["exp-1/export_info_exp-1.json"]
    assert storage.exists("exp-1/export_info_exp-1.json")
    assert not storage.exists("exp-1/other.json")


# --- the export reader -----------------------------------------------------------------------------


def _write_part(root: Path, key: str, table: pa.Table) -> None:
    path = root / key
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)


@pytest.mark.parametrize("status", ["IN_PROGRESS", "STARTING", "CANCELED"])
def test_given_an_export_not_complete_then_it_is_refused(tmp_path: Path, status: str) -> None:
    _write_part(tmp_path, "exp-a/bank/bank.loan/1/part-00000-a.gz.parquet", pa.table({"id": [1]}))
    (tmp_path / "exp-a" / "export_info_exp-a.json").write_text(json.dumps({"status": status}))
    with pytest.raises(ExportReadError, match=rf"export exp-a has status '{status}', not COMPLETE"):
        read_export_tables(tmp_path, "bank")


def test_given_parts_without_info_files_and_other_names_then_they_are_found_and_ordered(
    tmp_path: Path,
) -> None:
    # Parts named without RDS's uuid or gzip suffix are table data too, ordered by their number
    prefix = "exp-a/bank/bank.loan/1"
    _write_part(tmp_path, f"{prefix}/part-10.parquet", pa.table({"id": [10]}))
    _write_part(tmp_path, f"{prefix}/part-2.parquet", pa.table({"id": [2]}))
    _write_part(tmp_path, f"{prefix}/part-00001-x.gz.parquet", pa.table({"id": [1]}))
    _write_part(tmp_path, f"{prefix}/.part-00003-x.gz.parquet.123.tmp", pa.table({"id": [3]}))
    assert read_export_tables(tmp_path, "bank")["loan"]["id"].tolist() == [1, 2, 10]


def test_given_parquet_dates_and_zoned_timestamps_then_they_read_as_datetimes(tmp_path: Path) -> None:
    table = pa.table(
        {
            "day": pa.array([dt.date(1995, 3, 1)], pa.date32()),
            "moment": pa.array([dt.datetime(1995, 3, 1, 12, tzinfo=dt.UTC)], pa.timestamp("ms", tz="UTC")),
        }
    )
    _write_part(tmp_path, "exp-a/bank/bank.loan/1/part-00000-a.gz.parquet", table)
    read = read_export_tables(tmp_path, "bank")["loan"]
    assert read["day"].tolist() == [pd.Timestamp("1995-03-01")]
    assert read["moment"].tolist() == [pd.Timestamp("1995-03-01 12:00", tz="UTC")]


# --- the loader's command line ---------------------------------------------------------------------


def test_given_a_transactions_file_for_credit_risk_then_the_cli_refuses_it(
    mariadb_env: DbSettings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = dataload_cli.main(
        [
            "load",
            "--dataset",
            "credit_risk",
            "--files",
            str(tmp_path),
            "--trans-file",
            str(tmp_path / "t.asc"),
        ]
    )
    assert code == 2
    assert "--trans-file applies to the berka dataset only" in capsys.readouterr().err


def test_given_no_server_on_the_port_then_the_cli_says_where_it_tried_and_the_error_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("DB_HOST", "127.0.0.1")
    monkeypatch.setenv("DB_PORT", str(port))
    for variable in ("DB_SECRET_ARN", "DB_USER", "DB_PASSWORD", "DB_TLS", "DB_TLS_CA"):
        monkeypatch.delenv(variable, raising=False)
    code = dataload_cli.main(["load", "--dataset", "credit_risk", "--files", str(tmp_path)])
    error = capsys.readouterr().err
    assert code == 2
    assert f"cannot connect to MariaDB at 127.0.0.1:{port} as 'root'" in error
    assert "(error 2003)" in error


def test_given_tables_with_no_names_then_the_cli_exports_every_table(
    mariadb_env: DbSettings,
    mariadb_connection: Any,
    mariadb_database: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for table in ("loans", "people"):
        _create(
            mariadb_connection, mariadb_database, f"CREATE TABLE `db`.`{table}` (id INT PRIMARY KEY)", [(1,)]
        )
    out = tmp_path / "exports"
    arguments = ["export", "--database", mariadb_database, "--out", str(out), "--export-id", "e1", "--tables"]
    assert dataload_cli.main([*arguments, "--as-database", "bank"]) == 0
    assert json.loads(capsys.readouterr().out)["rows"] == {"loans": 1, "people": 1}
    assert sorted(read_export_tables(out, "bank")) == ["loans", "people"]
