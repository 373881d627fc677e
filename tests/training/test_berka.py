"""PKDD'99 (Berka): decoding of the original files and the point-in-time per-loan frame."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from training.datasets.berka import (
    BERKA_COLUMN_TYPES,
    BERKA_FEATURES,
    BERKA_NULLABLE_COLUMNS,
    BERKA_PROTECTED,
    BERKA_TABLES,
    BERKA_TARGET,
    BERKA_TIME_COLUMN,
    build_berka_frame,
    coerce_berka_tables,
    read_berka_files,
    read_complete_history_loan_ids,
    read_trans_prefix,
)

FEATURES = list(BERKA_FEATURES)
EXPECTED_ROWS = {
    "account": 4500,
    "client": 5369,
    "disp": 5369,
    "district": 77,
    "order": 6471,
    "card": 892,
    "loan": 682,
    "trans": 79_302,
}


@pytest.fixture(scope="module")
def berka_dir(shared_data: Path) -> Path:
    return shared_data / "pkdd99_financial"


@pytest.fixture(scope="module")
def trans_file(shared_data: Path) -> Path:
    return shared_data / "pkdd99_financial_trans_assembled" / "trans.asc"


@pytest.fixture(scope="module")
def tables(berka_dir: Path, trans_file: Path) -> dict[str, pd.DataFrame]:
    return read_berka_files(berka_dir, trans_file=trans_file)


@pytest.fixture(scope="module")
def frame(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    return build_berka_frame(tables)


@pytest.fixture(scope="module")
def complete_ids(shared_data: Path) -> set[int]:
    return read_complete_history_loan_ids(
        shared_data / "pkdd99_financial_trans_assembled" / "complete_history_loans.csv"
    )


# ------------------------------------------------------------------------------------------
# Decoding
# ------------------------------------------------------------------------------------------


def test_all_tables_read_with_expected_row_counts(tables):
    assert tuple(tables) == BERKA_TABLES
    assert {name: len(frame) for name, frame in tables.items()} == EXPECTED_ROWS


def test_missing_trans_file_is_reported(berka_dir):
    # The shared pkdd99_financial folder has no trans.asc: without trans_file this must fail clearly.
    with pytest.raises(FileNotFoundError, match="trans"):
        read_berka_files(berka_dir)


@pytest.mark.parametrize("name", BERKA_TABLES)
def test_columns_and_dtypes_follow_declared_types(tables, name):
    frame = tables[name]
    declared = BERKA_COLUMN_TYPES[name]
    assert list(frame.columns) == list(declared)
    for column, logical in declared.items():
        dtype = frame[column].dtype
        nullable = column in BERKA_NULLABLE_COLUMNS[name]
        if logical == "int":
            assert str(dtype) == ("Int64" if nullable else "int64"), column
        elif logical in ("decimal", "float"):
            assert dtype == np.float64, column
        elif logical == "date":
            assert dtype == np.dtype("datetime64[ns]"), column
            assert (frame[column].dropna() == frame[column].dropna().dt.normalize()).all()
        else:
            assert logical == "string"
            assert pd.api.types.is_string_dtype(dtype), column
        if not nullable:
            assert not frame[column].isna().any(), column


def test_logical_types_are_from_the_documented_set():
    allowed = {"int", "decimal", "float", "date", "datetime", "string"}
    assert set(BERKA_COLUMN_TYPES) == set(BERKA_TABLES)
    for name, columns in BERKA_COLUMN_TYPES.items():
        assert set(columns.values()) <= allowed
        assert BERKA_NULLABLE_COLUMNS[name] <= set(columns)
    assert "district_id" in BERKA_COLUMN_TYPES["district"]
    assert "A1" not in BERKA_COLUMN_TYPES["district"]


def test_birth_number_decodes_gender_and_birth_date(tables):
    client = tables["client"].set_index("client_id")
    woman = client.loc[1]  # "706213": month 62 = December + 50
    assert woman["birth_number"] == "706213"
    assert woman["gender"] == "F"
    assert woman["birth_date"] == pd.Timestamp("1970-12-13")
    man = client.loc[2]  # "450204": 19xx, not 2045
    assert (man["gender"], man["birth_date"]) == ("M", pd.Timestamp("1945-02-04"))
    third = client.loc[3]  # "406009"
    assert (third["gender"], third["birth_date"]) == ("F", pd.Timestamp("1940-10-09"))
    months = client["birth_number"].str.slice(2, 4).astype(int)
    assert ((months > 50) == (client["gender"] == "F")).all()
    assert client["birth_date"].dt.year.between(1900, 1999).all()


def test_dates_are_parsed(tables):
    loan = tables["loan"].set_index("loan_id")
    assert loan.loc[5314, "date"] == pd.Timestamp("1993-07-05")
    card = tables["card"].set_index("card_id")
    assert card.loc[1005, "issued"] == pd.Timestamp("1993-11-07")  # "931107 00:00:00"
    account = tables["account"]
    assert account["date"].min() == pd.Timestamp("1993-01-01")
    assert account["date"].max() == pd.Timestamp("1997-12-29")
    assert tables["loan"]["date"].max() == pd.Timestamp("1998-12-08")
    trans = tables["trans"]
    assert trans["date"].min() == pd.Timestamp("1993-01-01")
    assert trans["date"].max() == pd.Timestamp("1998-12-05")


def test_district_question_marks_are_missing(tables):
    district = tables["district"].set_index("district_id")
    assert district.loc[69, "A2"] == "Jesenik"
    assert pd.isna(district.loc[69, "A12"])
    assert pd.isna(district.loc[69, "A15"])
    assert district.drop(index=69).notna().all().all()
    assert district.loc[1, "A2"] == "Hl.m. Praha"
    assert district.loc[1, "A4"] == 1_204_953
    assert district.loc[1, "A13"] == pytest.approx(0.43)
    assert district.loc[1, "A16"] == 99_107


def test_crlf_line_ends_are_handled(tables, berka_dir, trans_file):
    assert b"\r\n" in (berka_dir / "loan.asc").read_bytes()[:200]
    assert b"\r\n" in trans_file.read_bytes()[:200]
    assert set(tables["loan"]["status"]) == {"A", "B", "C", "D"}  # last column, not "A\r"
    assert set(tables["disp"]["type"]) == {"OWNER", "DISPONENT"}
    for name, frame in tables.items():
        for column in frame.columns:
            if BERKA_COLUMN_TYPES[name][column] == "string":
                assert not frame[column].dropna().str.contains("\r").any(), (name, column)
    # trans ends with two possibly empty fields (bank; account)
    trans = tables["trans"]
    assert trans["bank"].dropna().str.fullmatch("[A-Z]{2}").all()
    assert trans["account"].notna().sum() > 0


def test_text_codes_and_money(tables):
    order = tables["order"]
    assert order["k_symbol"].isna().sum() == 1379  # " " in the file
    assert set(order["k_symbol"].dropna()) == {"SIPO", "UVER", "POJISTNE", "LEASING"}
    first = order.set_index("order_id").loc[29402]
    assert (first["bank_to"], first["account_to"], first["amount"]) == ("ST", 89597016, 3372.70)
    loan = tables["loan"].set_index("loan_id").loc[5314]
    assert (loan["amount"], loan["duration"], loan["payments"]) == (96396.0, 12, 8033.0)
    assert tables["loan"]["status"].value_counts().to_dict() == {"C": 403, "A": 203, "D": 45, "B": 31}
    trans = tables["trans"]
    assert set(trans["type"]) == {"PRIJEM", "VYDAJ", "VYBER"}
    assert (trans["k_symbol"] == "SANKC. UROK").sum() == 107


def test_complete_history_loan_ids(complete_ids, tables):
    assert len(complete_ids) == 392
    assert complete_ids <= set(tables["loan"]["loan_id"])


def test_coerce_accepts_a_database_export(tables):
    """Tables as MariaDB or an RDS Parquet export give them back.

    Decimal money, date objects, narrower ints, no birth_number (the CTU schema has none).
    """
    loan = tables["loan"]
    exported_loan = pd.DataFrame(
        {
            "loan_id": loan["loan_id"].astype("int32"),
            "account_id": loan["account_id"].astype("int32"),
            "date": [d.date() for d in loan["date"]],
            "amount": [Decimal(f"{v:.2f}") for v in loan["amount"]],
            "duration": loan["duration"].astype("int32"),
            "payments": [Decimal(f"{v:.2f}") for v in loan["payments"]],
            "status": loan["status"].astype(object),
        }
    )
    client = tables["client"]
    exported_client = pd.DataFrame(
        {
            "client_id": client["client_id"],
            "gender": client["gender"].astype(object),
            "birth_date": pd.to_datetime(client["birth_date"]).astype("datetime64[us]"),
            "district_id": client["district_id"],
        }
    )
    district = tables["district"]
    exported_district = district.assign(
        A12=[None if pd.isna(v) else Decimal(str(v)) for v in district["A12"]],
        A15=district["A15"].astype("float64"),
    )
    back = coerce_berka_tables(
        {"loan": exported_loan, "client": exported_client, "district": exported_district}
    )
    pd.testing.assert_frame_equal(back["loan"], loan)
    pd.testing.assert_frame_equal(back["client"], client.drop(columns="birth_number"))
    pd.testing.assert_frame_equal(back["district"], district)


# ------------------------------------------------------------------------------------------
# Transactions files cut off mid-line (a byte prefix of the original trans.asc)
# ------------------------------------------------------------------------------------------

TRANS_HEADER = (
    b'"trans_id";"account_id";"date";"type";"operation";"amount";"balance";"k_symbol";"bank";"account"'
)
TRANS_ROWS = (
    b'695247;2378;930101;"PRIJEM";"VKLAD";700.00;700.00;"";;',
    b'171812;576;930101;"PRIJEM";"VKLAD";900.00;900.00;"";;',
)
FULL_LAST_ROW = b'3526882;11021;940331;"PRIJEM";"PREVOD Z UCTU";5025.00;31012.40;"";"AB";12345678'
CUT_LAST_LINE = b'3526882;11021;940331;"PRIJE'


def _trans_asc(folder: Path, last_line: bytes = b"") -> Path:
    """A tiny trans.asc in the original format (CRLF) ending with ``last_line`` (no line end)."""
    path = folder / "trans.asc"
    path.write_bytes(b"".join(line + b"\r\n" for line in (TRANS_HEADER, *TRANS_ROWS)) + last_line)
    return path


def test_a_trans_file_cut_off_mid_line_is_rejected_by_default_with_a_clear_message(berka_dir, tmp_path):
    cut = _trans_asc(tmp_path, CUT_LAST_LINE)
    with pytest.raises(ValueError, match="cut off mid-line") as raised:
        read_berka_files(berka_dir, trans_file=cut)
    message = str(raised.value)
    assert str(cut) in message
    assert "PRIJE" in message
    assert "truncated_trans=True" in message
    assert "--truncated-trans" in message


def test_a_last_line_with_closed_quotes_but_missing_fields_is_rejected_by_default(berka_dir, tmp_path):
    # pandas alone would read it with empty k_symbol/bank/account: the field count gives the cut away.
    cut = _trans_asc(tmp_path, b'3526882;11021;940331;"PRIJEM";"VKLAD"')
    with pytest.raises(ValueError, match="not a complete trans row of 10 fields"):
        read_berka_files(berka_dir, trans_file=cut)


def test_opt_in_keeps_the_complete_rows_and_reports_the_dropped_line(berka_dir, tmp_path, caplog):
    cut = _trans_asc(tmp_path, CUT_LAST_LINE)

    with caplog.at_level("WARNING", logger="training.datasets.berka"):
        trans, dropped = read_trans_prefix(cut)

    assert dropped == len(CUT_LAST_LINE)
    assert trans["trans_id"].tolist() == [695247, 171812]
    assert list(trans.columns) == list(BERKA_COLUMN_TYPES["trans"])
    assert trans["amount"].tolist() == [700.0, 900.0]
    [record] = caplog.records
    assert str(cut) in record.getMessage()
    assert "dropped the incomplete last line (27 bytes" in record.getMessage()
    assert "kept 2 complete rows" in record.getMessage()

    tables = read_berka_files(berka_dir, trans_file=cut, truncated_trans=True)
    pd.testing.assert_frame_equal(tables["trans"], trans)
    assert len(tables["loan"]) == EXPECTED_ROWS["loan"]  # the other tables are read whole


def test_a_complete_last_row_without_line_end_is_not_treated_as_truncated(berka_dir, tmp_path):
    # Decision: by default a last line without CRLF that parses to a full row (10 fields, quotes
    # closed) is a row. With truncated_trans the file is declared a cut prefix, and such a line
    # is dropped all the same: a cut can shorten the last field without a visible sign.
    unterminated = _trans_asc(tmp_path, FULL_LAST_ROW)

    default = read_berka_files(berka_dir, trans_file=unterminated)["trans"]
    assert default["trans_id"].tolist() == [695247, 171812, 3526882]
    assert default.loc[2, "account"] == 12345678
    assert default.loc[2, "bank"] == "AB"

    prefix, dropped = read_trans_prefix(unterminated)
    assert dropped == len(FULL_LAST_ROW)
    (tmp_path / "complete").mkdir()
    complete = read_berka_files(berka_dir, trans_file=_trans_asc(tmp_path / "complete"))["trans"]
    pd.testing.assert_frame_equal(prefix, complete)


def test_opt_in_on_a_file_ending_with_a_line_end_drops_nothing(berka_dir, tmp_path, caplog):
    complete = _trans_asc(tmp_path)
    with caplog.at_level("WARNING", logger="training.datasets.berka"):
        prefix, dropped = read_trans_prefix(complete)
    assert dropped == 0
    assert caplog.records == []
    pd.testing.assert_frame_equal(prefix, read_berka_files(berka_dir, trans_file=complete)["trans"])


def test_a_file_without_any_line_end_is_rejected_even_when_opted_in(tmp_path):
    header_only = tmp_path / "trans.asc"
    header_only.write_bytes(TRANS_HEADER[:30])
    with pytest.raises(ValueError, match="no line end at all"):
        read_trans_prefix(header_only)


def test_the_shared_partial_trans_file_gives_its_49102_complete_rows(shared_data):
    path = shared_data / "pkdd99_financial_trans_partial" / "trans.asc"
    trans, dropped = read_trans_prefix(path)
    assert dropped == len(CUT_LAST_LINE)  # the PROVENANCE.md's cut line 3526882;11021;940331;"PRIJE
    assert len(trans) == 49_102
    assert trans["date"].min() == pd.Timestamp("1993-01-01")
    assert trans["date"].max() == pd.Timestamp("1994-03-31")
    assert 3526882 not in set(trans["trans_id"])


# ------------------------------------------------------------------------------------------
# Per-loan frame
# ------------------------------------------------------------------------------------------


def test_frame_has_one_row_per_loan(frame, tables):
    assert len(frame) == 682
    assert frame["loan_id"].is_unique
    assert set(frame["loan_id"]) == set(tables["loan"]["loan_id"])
    assert frame.index.equals(pd.RangeIndex(682))
    assert list(frame.columns) == [
        "loan_id",
        BERKA_TIME_COLUMN,
        *FEATURES,
        BERKA_TARGET,
        "owner_gender",
        "owner_age_years",
        "owner_age_band",
    ]


def test_target_mapping(frame, tables):
    status = tables["loan"].set_index("loan_id")["status"]
    by_loan = frame.set_index("loan_id")
    expected = status.reindex(by_loan.index).map({"A": 0, "B": 1, "C": 0, "D": 1})
    assert (by_loan[BERKA_TARGET] == expected).all()
    assert frame[BERKA_TARGET].dtype == np.int64
    assert int(frame[BERKA_TARGET].sum()) == 76


def test_positive_rate_among_complete_history_loans(frame, complete_ids):
    subset = frame[frame["loan_id"].isin(complete_ids)]
    assert len(subset) == 392
    assert int(subset[BERKA_TARGET].sum()) == 35
    assert subset[BERKA_TARGET].mean() == pytest.approx(35 / 392)


def test_feature_documentation_matches_the_frame(frame):
    dtypes = {"number": "float64", "integer": "int64", "boolean": "bool"}
    for name, doc in BERKA_FEATURES.items():
        assert {"type", "unit", "description", "reason"} <= set(doc), name
        assert doc["type"] in ("number", "integer", "category", "boolean"), name
        assert doc["unit"] is None or isinstance(doc["unit"], str), name
        assert isinstance(doc["description"], str), name
        assert doc["description"], name
        assert isinstance(doc["reason"], str), name
        assert doc["reason"], name
        if doc["type"] == "category":
            categories = doc["categories"]
            assert isinstance(categories, list), name
            assert set(frame[name]) <= set(categories), name
        else:
            assert str(frame[name].dtype) == dtypes[str(doc["type"])], name
    for column in (*BERKA_PROTECTED, "owner_age_years", BERKA_TARGET, BERKA_TIME_COLUMN, "loan_id"):
        assert column not in BERKA_FEATURES
    assert "order" in str(BERKA_FEATURES["standing_order_count"]["description"])


def test_protected_attributes(frame, tables):
    assert set(frame["owner_gender"]) == {"F", "M"}
    assert isinstance(frame["owner_age_band"].dtype, pd.CategoricalDtype)
    assert frame["owner_age_band"].cat.ordered
    assert frame["owner_age_band"].notna().all()
    # Owner of loan 5314 (account 1787): compute the age by hand.
    disp = tables["disp"]
    owner = disp[(disp["account_id"] == 1787) & (disp["type"] == "OWNER")]["client_id"].item()
    birth = tables["client"].set_index("client_id").loc[owner, "birth_date"]
    row = frame.set_index("loan_id").loc[5314]
    loan_date = pd.Timestamp("1993-07-05")
    age = loan_date.year - birth.year - ((loan_date.month, loan_date.day) < (birth.month, birth.day))
    assert row["owner_age_years"] == age


def test_no_transaction_features_are_missing_on_complete_history_loans(frame, complete_ids):
    subset = frame[frame["loan_id"].isin(complete_ids)]
    assert (subset["trans_count"] > 0).all()
    undefined_allowed = {"cash_withdrawal_share"}  # no debit before the loan -> NaN
    numeric = [n for n, d in BERKA_FEATURES.items() if d["type"] == "number" and n not in undefined_allowed]
    assert subset[numeric].notna().all().all()


def test_features_agree_with_a_plain_per_loan_computation(frame, tables):
    trans, loan = tables["trans"], tables["loan"]
    by_loan = frame.set_index("loan_id")
    sample = loan.sort_values("loan_id").iloc[::23]
    for row in sample.itertuples():
        pre = trans[(trans["account_id"] == row.account_id) & (trans["date"] < row.date)]
        got = by_loan.loc[row.loan_id]
        assert got["trans_count"] == len(pre)
        recent = pre[pre["date"] >= row.date - pd.Timedelta(days=90)]
        credit = recent.loc[recent["type"] == "PRIJEM", "amount"].sum()
        assert got["credit_sum_90d"] == pytest.approx(credit)
        year = pre[pre["date"] >= row.date - pd.Timedelta(days=365)]
        debit = year.loc[year["type"].isin(["VYDAJ", "VYBER"]), "amount"].sum()
        assert got["debit_sum_365d"] == pytest.approx(debit)
        assert got["sanction_count"] == (pre["k_symbol"] == "SANKC. UROK").sum()
        assert got["negative_balance_trans_count"] == (pre["balance"] < 0).sum()
        opened = tables["account"].set_index("account_id").loc[row.account_id, "date"]
        assert got["account_age_days"] == (row.date - opened).days
        if len(pre):  # closing balance of the last day: the balance reached but never left that day
            last_day = pre[pre["date"] == pre["date"].max()]
            signed = np.where(last_day["type"] == "PRIJEM", 1, -1) * last_day["amount"]
            reached = set(np.round(last_day["balance"], 2))
            left = set(np.round(last_day["balance"] - signed, 2))
            closing = reached - left
            if len(closing) == 1:
                assert got["balance_last"] == pytest.approx(closing.pop())


def _toy_tables(trans_rows: list[tuple[int, str, str, str, float, float]]) -> dict[str, pd.DataFrame]:
    """One district/account/owner/loan (1995-01-21) and the given transactions."""
    district = {"district_id": [1], "A2": ["Town"], "A3": ["region"], "A4": [100_000]}
    district |= {f"A{i}": [1] for i in range(5, 10)}
    district |= {"A10": [50.0], "A11": [10_000], "A12": [None], "A13": [4.0], "A14": [120], "A15": [None]}
    district |= {"A16": [2_000]}
    trans = pd.DataFrame(
        trans_rows, columns=["trans_id", "date", "type", "operation", "amount", "balance"]
    ).assign(account_id=1, k_symbol=None, bank=None, account=None)
    return {
        "account": pd.DataFrame(
            {"account_id": [1], "district_id": [1], "frequency": ["POPLATEK MESICNE"], "date": ["1995-01-01"]}
        ),
        "client": pd.DataFrame(
            {"client_id": [1], "gender": ["F"], "birth_date": [dt.date(1960, 1, 21)], "district_id": [1]}
        ),
        "disp": pd.DataFrame({"disp_id": [1], "client_id": [1], "account_id": [1], "type": ["OWNER"]}),
        "district": pd.DataFrame(district),
        "order": pd.DataFrame(
            {
                "order_id": [1],
                "account_id": [1],
                "bank_to": ["AB"],
                "account_to": [123],
                "amount": [50.0],
                "k_symbol": ["SIPO"],
            }
        ),
        "card": pd.DataFrame({"card_id": [1], "disp_id": [1], "type": ["gold"], "issued": ["1995-01-21"]}),
        "loan": pd.DataFrame(
            {
                "loan_id": [7],
                "account_id": [1],
                "date": ["1995-01-21"],
                "amount": [12_000],
                "duration": [12],
                "payments": [1000.0],
                "status": ["D"],
            }
        ),
        "trans": trans,
    }


def test_hand_computed_balances_on_a_toy_account():
    # 1995-01-11: the credit is booked before the withdrawal although its trans_id is higher.
    toy = _toy_tables(
        [
            (10, "1995-01-01", "PRIJEM", "VKLAD", 1000.0, 1000.0),
            (11, "1995-01-11", "VYDAJ", "VYBER", 3500.0, -500.0),
            (12, "1995-01-11", "PRIJEM", "VKLAD", 2000.0, 3000.0),
            (13, "1995-01-16", "PRIJEM", "VKLAD", 600.0, 100.0),
            (14, "1995-01-21", "VYDAJ", "VYBER", 5000.0, -4900.0),  # on the loan date: ignored
        ]
    )
    row = build_berka_frame(toy).iloc[0]
    assert row["loan_id"] == 7
    assert row[BERKA_TARGET] == 1
    assert row["trans_count"] == 4
    assert row["balance_last"] == 100.0
    # 1000 for 10 days, -500 for 5 days, 100 for 5 days
    assert row["balance_mean"] == pytest.approx((1000 * 10 - 500 * 5 + 100 * 5) / 20)
    assert row["balance_mean_90d"] == pytest.approx(row["balance_mean"])
    assert row["balance_min"] == -500.0
    assert row["negative_balance_days"] == 5
    assert row["negative_balance_trans_count"] == 1
    assert row["credit_sum_90d"] == 3600.0
    assert row["debit_sum_90d"] == 3500.0
    assert row["cash_withdrawal_share"] == 1.0
    assert row["avg_monthly_credit_365d"] == pytest.approx(3600.0)  # less than a month: one month
    assert row["payment_to_income_ratio"] == pytest.approx(1000 / 3600)
    assert row["payment_to_district_salary_ratio"] == pytest.approx(0.1)
    assert row["account_age_days"] == 20
    assert not row["has_card"]  # the only card is issued on the loan date
    assert row["card_type"] == "none"
    assert row["standing_order_count"] == 0  # never paid before the loan
    assert row["district_unemployment_rate"] == 4.0  # 1995 missing -> 1996
    assert row["district_crimes_per_1000"] == pytest.approx(20.0)
    assert row["account_frequency"] == "monthly"
    assert row["owner_gender"] == "F"
    assert row["owner_age_years"] == 35


# ------------------------------------------------------------------------------------------
# Point in time
# ------------------------------------------------------------------------------------------


def _events_from(tables: dict[str, pd.DataFrame], offsets_days: tuple[int, ...]) -> dict[str, pd.DataFrame]:
    """Copies of the tables with, for every loan, extreme transactions and cards dated loan date + offset.

    The transactions include payments to every standing-order counterparty of the account (which
    would make those orders count if dated before the loan), sanctions and negative balances.
    """
    loan, trans, disp, card, order = (tables[n] for n in ("loan", "trans", "disp", "card", "order"))
    dates = pd.concat(
        [loan[["account_id", "date"]].assign(date=loan["date"] + pd.Timedelta(days=d)) for d in offsets_days],
        ignore_index=True,
    )
    kinds = pd.DataFrame(
        {
            "type": ["VYDAJ", "PRIJEM", "VYBER"],
            "operation": ["VYBER", "VKLAD", "VYBER"],
            "amount": [1_000_000.0, 500_000.0, 77.0],
            "balance": [-1_000_000.0, 500_000.0, -123.0],
            "k_symbol": ["SANKC. UROK", None, "UROK"],
        }
    )
    plain = dates.merge(kinds, how="cross").assign(bank=None, account=None)
    paid_orders = dates.merge(order[["account_id", "bank_to", "account_to", "amount"]], on="account_id")
    paid_orders = paid_orders.rename(columns={"bank_to": "bank", "account_to": "account"}).assign(
        type="VYDAJ", operation="PREVOD NA UCET", balance=-5.0, k_symbol="SIPO"
    )
    extra = pd.concat([plain, paid_orders], ignore_index=True)
    extra["trans_id"] = trans["trans_id"].max() + 1 + np.arange(len(extra))
    extra = extra.astype({"account": "Int64"})
    changed = dict(tables)
    changed["trans"] = pd.concat([trans, extra[list(trans.columns)]], ignore_index=True)

    owners = disp.merge(dates, on="account_id")
    cards = owners.assign(type="gold", issued=owners["date"])[["disp_id", "type", "issued"]]
    cards.insert(0, "card_id", card["card_id"].max() + 1 + np.arange(len(cards)))
    changed["card"] = pd.concat([card, cards], ignore_index=True)
    return changed


def _compared(frame: pd.DataFrame, loan_ids: pd.Series) -> pd.DataFrame:
    columns = [*FEATURES, BERKA_TARGET, *BERKA_PROTECTED, "owner_age_years", BERKA_TIME_COLUMN]
    return frame.set_index("loan_id").loc[loan_ids.to_numpy(), columns]


def test_records_on_or_after_the_loan_date_change_no_feature(tables, frame):
    changed = _events_from(tables, offsets_days=(0, 1, 30, 400))
    # A later second loan on every account must not disturb the first one either.
    loan = tables["loan"]
    later = loan.assign(loan_id=loan["loan_id"] + 100_000, date=loan["date"] + pd.Timedelta(days=1))
    changed["loan"] = pd.concat([loan, later], ignore_index=True)
    assert len(changed["trans"]) > len(tables["trans"]) + 4 * 3 * 682

    rebuilt = build_berka_frame(changed)
    assert len(rebuilt) == 2 * 682
    pd.testing.assert_frame_equal(_compared(rebuilt, loan["loan_id"]), _compared(frame, loan["loan_id"]))


def test_records_before_the_loan_date_do_change_features(tables, frame):
    """Control: the same records dated one day before each loan are seen, so the test above can fail."""
    rebuilt = build_berka_frame(_events_from(tables, offsets_days=(-1,)))
    before = _compared(frame, tables["loan"]["loan_id"])
    after = _compared(rebuilt, tables["loan"]["loan_id"])
    assert (after["trans_count"] > before["trans_count"]).all()
    assert (after["sanction_count"] == before["sanction_count"] + 1).all()
    assert (after["balance_last"] != before["balance_last"]).all()
    assert after["has_card"].all()
    assert (after["card_type"] == "gold").all()
    assert not before["has_card"].all()
    # Every order is now paid before its loan: all of them count, including the loans' own
    # repayment orders (UVER), which never count on the real data.
    orders_per_account = tables["order"].groupby("account_id").size()
    accounts = tables["loan"].set_index("loan_id")["account_id"]
    expected = accounts.map(orders_per_account).fillna(0).astype("int64")
    assert (after["standing_order_count"] == expected.loc[after.index]).all()
    assert (after["standing_order_count"] > before["standing_order_count"]).any()
