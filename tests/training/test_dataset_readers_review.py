"""Dataset readers review: derived features checked against values worked out by hand from the raw files.

PKDD'99 balances are not always consistent within a day: a row's balance can be 0.10 CZK off the
chain (e.g. account 142 on 1993-07-31 in the original trans.asc: interest +49.70 to 17,759.70, then the
statement fee -14.60 to 17,745.00, not 17,745.10). The day's closing balance must still be the one
the account closed with, which the next day's first transaction confirms.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import pytest

from tests.training.helpers import berka_one_loan_tables
from training.datasets.berka import build_berka_frame, read_berka_files, read_complete_history_loans

LOAN_DATE = "1993-08-10"

# (trans_id, date, type, operation, amount, balance, k_symbol)
TransRow = tuple[int, str, str, str | None, float, float, str | None]


def _one_loan_tables(trans_rows: Sequence[TransRow]) -> dict[str, pd.DataFrame]:
    """One district, account (opened 1993-07-01), owner and loan (granted LOAN_DATE), and the transactions."""
    trans = pd.DataFrame(
        trans_rows, columns=["trans_id", "date", "type", "operation", "amount", "balance", "k_symbol"]
    ).assign(account_id=1, bank=None, account=None)
    return berka_one_loan_tables(trans, loan_date=LOAN_DATE, account_opened="1993-07-01")


def test_given_a_month_end_with_a_rounding_drift_then_the_closing_balance_is_the_last_booking() -> None:
    # As in the original file (account 142, 1993-07-31): interest (highest trans_id) is booked first,
    # the fee after it, and the fee's balance is 0.10 below the chain, so both balances look "reached
    # but never left". 17,710.00 + 49.70 - 14.60 = 17,745.10: the account closed at 17,745.00.
    tables = _one_loan_tables(
        [
            (1, "1993-07-01", "PRIJEM", "VKLAD", 17_710.0, 17_710.0, None),
            (2, "1993-07-31", "VYDAJ", "VYBER", 14.6, 17_745.0, "SLUZBY"),
            (3_535_061, "1993-07-31", "PRIJEM", None, 49.7, 17_759.7, "UROK"),
        ]
    )

    row = build_berka_frame(tables).iloc[0]

    assert row["balance_last"] == pytest.approx(17_745.0)
    # 17,710 for 30 days (07-01..07-30), 17,745 for 10 days (07-31..08-09)
    assert row["balance_mean"] == pytest.approx((17_710.0 * 30 + 17_745.0 * 10) / 40)


def test_given_a_day_ending_negative_with_a_rounding_drift_then_the_negative_days_are_counted() -> None:
    # As in the original file (account 8225, 1998-01-31, loan 6682 of status D): interest and sanction
    # rows, a fee and a withdrawal into the red; the sanction's balance is 0.10 off. The account closed
    # at -214.80 (the next credit of 18,103.00 brings it to 17,888.20) and stayed negative 10 days.
    tables = _one_loan_tables(
        [
            (1, "1993-07-01", "PRIJEM", "VKLAD", 3_416.3, 3_416.3, None),
            (10, "1993-07-31", "VYDAJ", "VYBER", 14.6, 3_489.2, "SLUZBY"),
            (11, "1993-07-31", "VYDAJ", "VYBER", 3_700.0, -210.8, None),
            (3_455_455, "1993-07-31", "PRIJEM", None, 28.5, 3_444.8, "UROK"),
            (3_455_456, "1993-07-31", "VYDAJ", "VYBER", 3.9, -214.8, "SANKC. UROK"),
            (3_497_941, "1993-07-31", "PRIJEM", None, 28.5, 3_506.3, "UROK"),
            (3_497_942, "1993-07-31", "VYDAJ", "VYBER", 2.6, 3_503.8, "SANKC. UROK"),
            (3_682_616, "1993-07-31", "PRIJEM", None, 33.0, 3_477.8, "UROK"),
        ]
    )

    row = build_berka_frame(tables).iloc[0]

    assert row["balance_last"] == pytest.approx(-214.8)
    assert row["balance_min"] == pytest.approx(-214.8)
    assert row["negative_balance_days"] == 10  # 07-31..08-09


def test_given_a_day_whose_rows_chain_exactly_then_the_closing_balance_is_unchanged() -> None:
    # Control: a consistent day whose last booking is not the highest trans_id.
    tables = _one_loan_tables(
        [
            (1, "1993-07-01", "PRIJEM", "VKLAD", 1_000.0, 1_000.0, None),
            (2, "1993-07-31", "VYDAJ", "VYBER", 14.6, 1_035.1, "SLUZBY"),
            (3, "1993-07-31", "PRIJEM", None, 49.7, 1_049.7, "UROK"),
        ]
    )

    row = build_berka_frame(tables).iloc[0]

    assert row["balance_last"] == pytest.approx(1_035.1)


# ------------------------------------------------------------------------------------------
# Real data: every day-end balance follows from the previous one and the day's amounts
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def listed_frame(shared_data: Path) -> pd.DataFrame:
    trans_file = shared_data / "pkdd99_financial_trans_assembled" / "trans.asc"
    tables = read_berka_files(shared_data / "pkdd99_financial", trans_file=trans_file)
    tables["complete_history_loans"] = read_complete_history_loans(
        trans_file.parent / "complete_history_loans.csv", tables["loan"]
    )
    return build_berka_frame(tables).set_index("loan_id")


@pytest.mark.parametrize(
    ("loan_id", "feature", "by_hand"),
    [
        # account 103, 1997-11-30: 4,759.80 + 15,200 + 15.50 + 17.50 - 14.60; the last pre-loan day
        (4988, "balance_last", 19_978.2),
        # account 9201, 1998-01-31: 27,594.80 + 136.70 + 150.50 - 14.60; the last pre-loan day
        (6866, "balance_last", 27_867.4),
        # account 8225, 1998-01-31: closed at -214.80 (1998-02-09: 17,888.20 after a credit of 18,103)
        (6682, "balance_min", -214.8),
        (6682, "negative_balance_days", 9),  # 1998-01-31..1998-02-08
    ],
)
def test_given_the_shared_transactions_then_hand_checked_balances_match(
    listed_frame: pd.DataFrame, loan_id: int, feature: str, by_hand: float
) -> None:
    assert listed_frame.loc[loan_id, feature] == pytest.approx(by_hand)


def _closings_by_carrying_forward(pre: pd.DataFrame) -> list[float]:
    """Day-end balances of one loan: the previous day-end plus the day's signed amounts, snapped to the
    nearest balance of the day's rows (the data's balances drift by cents); the first day starts from
    the balance before its first booking that no row of the day reaches."""
    closings: list[float] = []
    previous: float | None = None
    for _, day in pre.groupby("date", sort=True):
        signed = day["amount"].where(day["type"] == "PRIJEM", -day["amount"])
        balances = day["balance"].round(2).tolist()
        if previous is None:
            before = (day["balance"] - signed).round(2).tolist()
            previous = next((value for value in before if value not in balances), before[0])
        target = previous + float(signed.sum())
        previous = min(balances, key=lambda balance: abs(balance - target))
        closings.append(previous)
    return closings


def test_given_the_shared_transactions_then_day_end_balances_carry_forward(
    shared_data: Path, listed_frame: pd.DataFrame
) -> None:
    trans = pd.read_csv(
        shared_data / "pkdd99_financial_trans_assembled" / "trans.asc",
        sep=";",
        usecols=["account_id", "date", "type", "amount", "balance"],
    )
    loans = pd.read_csv(
        shared_data / "pkdd99_financial" / "loan.asc", sep=";", usecols=["loan_id", "account_id", "date"]
    )
    loans = loans.loc[loans["loan_id"].isin(listed_frame.index)]
    computed = {feature: listed_frame[feature].to_dict() for feature in ("balance_last", "balance_min")}
    wrong: dict[tuple[int, str], tuple[float, float]] = {}
    for loan_id, account_id, yymmdd in loans[["loan_id", "account_id", "date"]].itertuples(index=False):
        pre = trans.loc[(trans["account_id"] == account_id) & (trans["date"] < yymmdd)]  # YYMMDD, all 19YY
        closings = _closings_by_carrying_forward(pre)
        for feature, expected in (("balance_last", closings[-1]), ("balance_min", min(closings))):
            got = float(computed[feature][loan_id])
            if got != pytest.approx(expected):
                wrong[(int(loan_id), feature)] = (got, expected)
    assert len(loans) == 392
    assert wrong == {}
