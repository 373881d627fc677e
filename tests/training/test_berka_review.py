"""PKDD'99 (Berka) review: bad input is refused clearly, and the documented rules hold on small frames.

Each test builds one account with one loan (1995-06-01) by hand and changes one thing.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import pytest

from tests.training.helpers import berka_one_loan_tables
from training.datasets import catalog
from training.datasets.berka import build_berka_frame, read_berka_files
from training.datasets.spec import spec_from_file

LOAN_DATE = "1995-06-01"


TransRow = tuple[int, str, str, str | None, float, float, str | None, int | None]


def _tables(trans_rows: Sequence[TransRow]) -> dict[str, pd.DataFrame]:
    """One district, account, owner, loan and standing order (to AB/123), and the given transactions.

    Transaction rows: (trans_id, date, type, operation, amount, balance, bank, account).
    """
    trans = pd.DataFrame(
        trans_rows, columns=["trans_id", "date", "type", "operation", "amount", "balance", "bank", "account"]
    ).assign(account_id=1, k_symbol=None)
    return berka_one_loan_tables(trans, loan_date=LOAN_DATE, with_order_and_card=True)


OPENING: TransRow = (1, "1995-01-01", "PRIJEM", "VKLAD", 5000.0, 5000.0, None, None)


# ------------------------------------------------------------------------------------------
# Transaction codes and signs: the sign of a PKDD'99 amount is given by its type
# ------------------------------------------------------------------------------------------


def test_given_the_original_codes_then_credits_and_debits_are_signed_by_type() -> None:
    # Control for the two tests below: PRIJEM is a credit, VYDAJ and VYBER are debits.
    rows = [
        OPENING,
        (2, "1995-05-01", "VYDAJ", "PREVOD NA UCET", 1000.0, 4000.0, None, None),
        (3, "1995-05-02", "VYBER", "VYBER", 500.0, 3500.0, None, None),
    ]
    row = build_berka_frame(_tables(rows)).iloc[0]
    assert row["credit_sum_365d"] == 5000.0
    assert row["debit_sum_365d"] == 1500.0
    assert row["balance_last"] == 3500.0


def test_given_transaction_types_outside_the_pkdd99_codes_then_the_build_names_them() -> None:
    # English re-codings of trans.asc exist (credit / withdrawal): read as is, every amount would
    # silently count as neither credit nor debit (all window sums 0, payment_to_income_ratio NaN).
    rows = [
        (1, "1995-01-01", "credit", "VKLAD", 5000.0, 5000.0, None, None),
        (2, "1995-05-01", "withdrawal", "VYBER", 1000.0, 4000.0, None, None),
    ]
    with pytest.raises(ValueError, match=r"trans\.type.*'credit'.*'withdrawal'"):
        build_berka_frame(_tables(rows))


def test_given_signed_amounts_then_the_build_refuses_them() -> None:
    # PKDD'99 amounts are positive and the type gives the sign; a source that stores debits as
    # negative amounts would turn every debit sum negative and break the day-end balances.
    rows = [OPENING, (2, "1995-05-01", "VYDAJ", "VYBER", -1000.0, 4000.0, None, None)]
    with pytest.raises(ValueError, match=r"trans\.amount.*negative"):
        build_berka_frame(_tables(rows))


# ------------------------------------------------------------------------------------------
# References a loan's features and protected attributes depend on
# ------------------------------------------------------------------------------------------


def test_given_an_account_whose_district_is_unknown_then_the_build_names_it() -> None:
    # Else every district feature is silently NaN (and imputed later).
    tables = _tables([OPENING])
    tables["account"] = tables["account"].assign(district_id=99)
    with pytest.raises(ValueError, match=r"district.*99"):
        build_berka_frame(tables)


def test_given_a_loan_account_without_an_owner_then_the_build_names_it() -> None:
    # Only the owner may ask for a loan; without an OWNER row gender and age (the protected
    # attributes of the fairness report) would silently be missing.
    tables = _tables([OPENING])
    tables["disp"] = tables["disp"].assign(type="DISPONENT")
    with pytest.raises(ValueError, match=r"OWNER.*\[1\]"):
        build_berka_frame(tables)


def test_given_an_owner_without_a_client_row_then_the_build_names_it() -> None:
    tables = _tables([OPENING])
    tables["disp"] = tables["disp"].assign(client_id=42)
    with pytest.raises(ValueError, match=r"client.*42"):
        build_berka_frame(tables)


# ------------------------------------------------------------------------------------------
# Standing orders are dated by a payment *to* their counterparty
# ------------------------------------------------------------------------------------------


def test_given_only_a_credit_from_the_order_counterparty_then_the_order_does_not_count() -> None:
    # The module docstring: an order counts once the account *made a payment* to its counterparty.
    rows = [OPENING, (2, "1995-05-01", "PRIJEM", "PREVOD Z UCTU", 500.0, 5500.0, "AB", 123)]
    row = build_berka_frame(_tables(rows)).iloc[0]
    assert row["standing_order_count"] == 0
    assert row["standing_order_amount"] == 0.0


def test_given_a_payment_to_the_order_counterparty_then_the_order_counts() -> None:
    # Control: the same counterparty as a debit dates the order.
    rows = [OPENING, (2, "1995-05-01", "VYDAJ", "PREVOD NA UCET", 500.0, 4500.0, "AB", 123)]
    row = build_berka_frame(_tables(rows)).iloc[0]
    assert row["standing_order_count"] == 1
    assert row["standing_order_household_amount"] == 500.0


# ------------------------------------------------------------------------------------------
# Catalog: the assembled transactions are only usable with their complete-history list
# ------------------------------------------------------------------------------------------


def _shared_copy(shared_data: Path, root: Path, *, with_list: bool) -> Path:
    """$LOAN_SHARED_DATA-like folder: the seven tables and the assembled trans.asc (links)."""
    (root / "pkdd99_financial").symlink_to(shared_data / "pkdd99_financial", target_is_directory=True)
    assembled = root / "pkdd99_financial_trans_assembled"
    assembled.mkdir()
    source = shared_data / "pkdd99_financial_trans_assembled"
    (assembled / "trans.asc").symlink_to(source / "trans.asc")
    if with_list:
        (assembled / "complete_history_loans.csv").symlink_to(source / "complete_history_loans.csv")
    return root


def test_given_the_assembled_transactions_without_their_list_then_loading_berka_fails(
    shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without complete_history_loans.csv the 290 loans with a partial history (wrong features)
    # would silently be trained on.
    monkeypatch.setenv("LOAN_SHARED_DATA", str(_shared_copy(shared_data, tmp_path, with_list=False)))
    with pytest.raises(FileNotFoundError, match=r"complete_history_loans\.csv"):
        catalog.load_dataset("berka")


def test_given_the_assembled_transactions_with_their_list_then_only_those_loans_are_kept(
    shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOAN_SHARED_DATA", str(_shared_copy(shared_data, tmp_path, with_list=True)))
    dataset = catalog.load_dataset("berka")
    # The 392 listed loans are read; training then also drops the 158 observed for under a year.
    assert dataset.rows_raw == 392
    assert len(dataset.frame) == 392 - 158


# ------------------------------------------------------------------------------------------
# Real data: the checks above hold on the shared PKDD'99 files
# ------------------------------------------------------------------------------------------


def test_real_data_passes_the_new_checks_and_no_order_is_dated_by_a_credit(shared_data: Path) -> None:
    tables = read_berka_files(
        shared_data / "pkdd99_financial",
        trans_file=shared_data / "pkdd99_financial_trans_assembled" / "trans.asc",
    )
    frame = build_berka_frame(tables)
    assert len(frame) == 682
    assert frame["owner_gender"].notna().all()
    assert frame["district_avg_salary"].notna().all()
    # Every counted order has a debit to its counterparty before the loan (no credit-only evidence).
    trans, loan = tables["trans"], tables["loan"][["loan_id", "account_id", "date"]]
    pre = loan.rename(columns={"date": "loan_date"}).merge(trans, on="account_id")
    debits = pre.loc[(pre["date"] < pre["loan_date"]) & pre["type"].isin(["VYDAJ", "VYBER"])]
    debits = debits.dropna(subset=["bank", "account"]).astype({"account": "int64"})
    orders = loan.merge(tables["order"], on="account_id")
    known = orders.merge(
        debits[["loan_id", "bank", "account"]].drop_duplicates(),
        left_on=["loan_id", "bank_to", "account_to"],
        right_on=["loan_id", "bank", "account"],
    )
    expected = loan["loan_id"].map(known.groupby("loan_id").size()).fillna(0).astype("int64")
    assert frame.set_index("loan_id")["standing_order_count"].to_dict() == dict(
        zip(loan["loan_id"], expected, strict=True)
    )


# ------------------------------------------------------------------------------------------
# Spec files (spec.py): a contradictory spec is refused, not resolved silently
# ------------------------------------------------------------------------------------------


def test_given_a_spec_file_declaring_a_dropped_column_as_feature_then_the_error_names_it(
    tmp_path: Path,
) -> None:
    # "drop" says ignore the column; "features" says train on it: the model must not quietly take it.
    table = pd.DataFrame({"zip_code": ["1", "2"], "income": [1.0, 2.0], "bad": [0, 1]})
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(
        json.dumps(
            {"name": "toy", "target": "bad", "drop": ["zip_code"], "features": {"zip_code": {}, "income": {}}}
        )
    )
    with pytest.raises(ValueError, match=r"'zip_code'.*drop"):
        spec_from_file(spec_file, table)
