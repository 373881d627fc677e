"""Mutation run on the dataset code (berka, spec, catalog, features): behaviours no other test pinned.

Each Berka test builds one account with one loan by hand (as tests/training/test_berka_review.py does)
and changes one thing, so a wrong boundary, window or guard shows in one feature.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.training.helpers import berka_one_loan_tables
from training import features
from training.datasets import berka, catalog
from training.datasets import spec as spec_module
from training.datasets.berka import build_berka_frame

LOAN_DATE = "1995-06-01"

# (trans_id, date, type, operation, amount, balance, bank, account)
TransRow = tuple[int, str, str, str | None, float, float, str | None, int | None]

OPENING: TransRow = (1, "1995-01-01", "PRIJEM", "VKLAD", 5000.0, 5000.0, None, None)


def _tables(trans_rows: Sequence[TransRow], loan_date: str = LOAN_DATE) -> dict[str, pd.DataFrame]:
    """One district, account (opened 1995-01-01), owner and loan, the transactions; no order or card."""
    trans = pd.DataFrame(
        list(trans_rows),
        columns=["trans_id", "date", "type", "operation", "amount", "balance", "bank", "account"],
    ).assign(account_id=1, k_symbol=None)
    return berka_one_loan_tables(trans, loan_date=loan_date)


def _row(tables: dict[str, pd.DataFrame]) -> pd.Series:
    frame = build_berka_frame(tables)
    assert len(frame) == 1
    return frame.iloc[0]


# ------------------------------------------------------------------------------------------
# District statistics: 1996 figures from 1997-01-01 on, 1995 figures before
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("loan_date", "unemployment", "crimes_per_1000"),
    [
        ("1996-12-31", 3.0, 10.0),  # 1995: A12, A15 (1,000 crimes / 100,000 inhabitants)
        ("1997-01-01", 4.0, 20.0),  # 1996: A13, A16 (2,000 crimes)
    ],
)
def test_given_a_loan_on_either_side_of_1997_then_the_district_figures_of_the_known_year_are_used(
    loan_date: str, unemployment: float, crimes_per_1000: float
) -> None:
    row = _row(_tables([OPENING], loan_date=loan_date))
    assert row["district_unemployment_rate"] == unemployment
    assert row["district_crimes_per_1000"] == pytest.approx(crimes_per_1000)


# ------------------------------------------------------------------------------------------
# Ratios: an undefined denominator gives NaN (missing), never inf
# ------------------------------------------------------------------------------------------


def test_given_no_transaction_before_the_loan_then_no_income_and_the_income_ratio_is_missing() -> None:
    # The only transaction is on the loan date: not before it.
    row = _row(_tables([(1, LOAN_DATE, "PRIJEM", "VKLAD", 5000.0, 5000.0, None, None)]))
    assert row["trans_count"] == 0
    assert row["credit_sum_365d"] == 0.0
    assert row["avg_monthly_credit_365d"] == 0.0  # documented: no transaction, no income observed
    assert np.isnan(row["payment_to_income_ratio"])  # documented: NaN when there were no credits
    assert np.isnan(row["balance_last"])
    assert np.isnan(row["balance_min_365d"])
    assert np.isnan(row["cash_withdrawal_share"])
    assert row["negative_balance_days"] == 0


def test_given_only_debits_before_the_loan_then_the_income_ratio_is_missing_not_infinite() -> None:
    row = _row(_tables([(1, "1995-01-01", "VYDAJ", "VYBER", 100.0, -100.0, None, None)]))
    assert row["trans_count"] == 1
    assert row["avg_monthly_credit_365d"] == 0.0
    assert np.isnan(row["payment_to_income_ratio"])
    assert row["cash_withdrawal_share"] == 1.0


def test_given_a_district_with_no_inhabitants_or_salary_then_its_ratios_are_missing_not_infinite() -> None:
    tables = _tables([OPENING])
    tables["district"] = tables["district"].assign(A4=0, A11=0)
    row = _row(tables)
    assert np.isnan(row["district_crimes_per_1000"])
    assert np.isnan(row["payment_to_district_salary_ratio"])
    assert row["district_avg_salary"] == 0.0


# ------------------------------------------------------------------------------------------
# Windows: sums, time-weighted means and minimums over the 90 / 180 / 365 days before the loan
# ------------------------------------------------------------------------------------------

YEAR_LOAN_DATE = "1996-06-01"  # its 365-day window starts 1995-06-02, its 90-day window 1996-03-03
YEAR_HISTORY: list[TransRow] = [
    (1, "1995-01-01", "PRIJEM", "VKLAD", 5000.0, 5000.0, None, None),
    (2, "1995-02-01", "VYDAJ", "VYBER", 6000.0, -1000.0, None, None),  # -1000 held 28 days, all before
    (3, "1995-03-01", "PRIJEM", "VKLAD", 3000.0, 2000.0, None, None),  # 2000 held into the window
    (4, "1996-01-01", "PRIJEM", "VKLAD", 12000.0, 14000.0, None, None),  # 152 days before the loan
    (5, "1996-05-01", "VYDAJ", "PREVOD NA UCET", 4000.0, 10000.0, None, None),  # 31 days before
]


def test_given_a_history_longer_than_a_year_then_the_window_features_see_only_their_window() -> None:
    row = _row(_tables(YEAR_HISTORY, loan_date=YEAR_LOAN_DATE))
    assert row["trans_count"] == 5
    assert (row["credit_sum_90d"], row["credit_sum_180d"], row["credit_sum_365d"]) == (0.0, 12000.0, 12000.0)
    assert (row["debit_sum_90d"], row["debit_sum_180d"], row["debit_sum_365d"]) == (4000.0, 4000.0, 4000.0)
    assert row["balance_min"] == -1000.0
    # The -1000 day ended before the window: the year's lowest is the 2000 held into it.
    assert row["balance_min_365d"] == 2000.0
    # 1995-06-02..1996-01-01: 213 days at 2000; ..1996-05-01: 121 days at 14000; ..1996-06-01: 31 at 10000.
    assert row["balance_mean_365d"] == pytest.approx((213 * 2000 + 121 * 14000 + 31 * 10000) / 365)
    # 1996-03-03..1996-05-01: 59 days at 14000; then 31 days at 10000.
    assert row["balance_mean_90d"] == pytest.approx((59 * 14000 + 31 * 10000) / 90)
    assert row["negative_balance_days"] == 28
    assert row["negative_balance_trans_count"] == 1
    # A whole year covered: 12000 over 365 days of average (365.25 / 12-day) months.
    assert row["avg_monthly_credit_365d"] == pytest.approx(12000 / (365 / (365.25 / 12)))
    assert row["payment_to_income_ratio"] == pytest.approx(1000 / row["avg_monthly_credit_365d"])


def test_given_an_account_younger_than_a_year_then_months_count_from_its_first_transaction() -> None:
    # 1995-01-01..1995-06-01: 151 days of history, about five months.
    row = _row(_tables([OPENING]))
    assert row["avg_monthly_credit_365d"] == pytest.approx(5000 / (151 / (365.25 / 12)))


def test_given_a_balance_of_exactly_zero_then_it_is_not_counted_as_negative() -> None:
    rows = [OPENING, (2, "1995-05-01", "VYDAJ", "VYBER", 5000.0, 0.0, None, None)]
    row = _row(_tables(rows))
    assert row["balance_last"] == 0.0
    assert row["negative_balance_days"] == 0
    assert row["negative_balance_trans_count"] == 0


# ------------------------------------------------------------------------------------------
# Dispositions, standing orders and the owner's age band
# ------------------------------------------------------------------------------------------


def _with_a_disponent(tables: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """The tables with a second client (F, born 1962) as the account's disponent (disp_id 2)."""
    tables["client"] = pd.DataFrame(
        {
            "client_id": [1, 2],
            "gender": ["M", "F"],
            "birth_date": [dt.date(1960, 1, 1), dt.date(1962, 1, 1)],
            "district_id": [1, 1],
        }
    )
    tables["disp"] = pd.DataFrame(
        {"disp_id": [1, 2], "client_id": [1, 2], "account_id": [1, 1], "type": ["OWNER", "DISPONENT"]}
    )
    return tables


def test_given_an_owner_and_a_disponent_then_one_disponent_is_counted() -> None:
    tables = _with_a_disponent(_tables([OPENING]))
    row = _row(tables)
    assert row["disponent_count"] == 1
    assert row["owner_gender"] == "M"  # the owner's, not the disponent's


def test_given_paid_orders_of_each_kind_then_each_amount_goes_to_its_kind() -> None:
    tables = _tables(
        [
            OPENING,
            *(
                (1 + n, "1995-05-01", "VYDAJ", "PREVOD NA UCET", 10.0, 5000.0 - 10 * n, "AB", n)
                for n in (1, 2, 3, 5)
            ),
        ]
    )
    tables["order"] = pd.DataFrame(
        {
            "order_id": [1, 2, 3, 4, 5],
            "account_id": [1, 1, 1, 1, 1],
            "bank_to": ["AB"] * 5,
            "account_to": [1, 2, 3, 4, 5],
            "amount": [100.0, 200.0, 300.0, 400.0, 50.0],
            "k_symbol": ["SIPO", "POJISTNE", "LEASING", "UVER", None],
        }
    )
    row = _row(tables)
    assert row["standing_order_count"] == 4  # the UVER order to AB/4 was never paid before the loan
    assert row["standing_order_amount"] == 650.0
    assert row["standing_order_household_amount"] == 100.0
    assert row["standing_order_insurance_amount"] == 200.0
    assert row["standing_order_leasing_amount"] == 300.0


@pytest.mark.parametrize(
    ("birth_date", "band"),
    [
        (dt.date(1970, 6, 2), "<25"),  # 24 on the loan date, 25 the next day
        (dt.date(1970, 6, 1), "25-34"),  # 25 on the loan date
        (dt.date(1960, 6, 2), "25-34"),  # 34
        (dt.date(1960, 6, 1), "35-44"),
        (dt.date(1940, 6, 1), "55+"),
    ],
)
def test_given_an_owner_whose_birthday_is_near_the_loan_date_then_a_band_edge_belongs_to_the_band_above(
    birth_date: dt.date, band: str
) -> None:
    tables = _tables([OPENING])
    tables["client"] = tables["client"].assign(birth_date=[birth_date])
    assert _row(tables)["owner_age_band"] == band


def test_given_cards_of_several_types_then_the_highest_issued_before_the_loan_counts() -> None:
    tables = _with_a_disponent(_tables([OPENING]))
    cards = {"card_id": [1, 2, 3], "disp_id": [1, 2, 1], "type": ["junior", "classic", "gold"]}
    # The gold card is issued on the loan date: not before it.
    tables["card"] = pd.DataFrame({**cards, "issued": ["1995-02-01", "1995-03-01", LOAN_DATE]})
    row = _row(tables)
    assert bool(row["has_card"])
    assert row["card_type"] == "classic"  # the disponent's card counts too (any disposition)


# ------------------------------------------------------------------------------------------
# Several loans of one account: each sees its own history
# ------------------------------------------------------------------------------------------


def test_given_two_loans_of_one_account_then_an_order_counts_for_each_loan_paid_before() -> None:
    payment: TransRow = (2, "1995-07-01", "VYDAJ", "PREVOD NA UCET", 100.0, 4900.0, "AB", 1)
    tables = _tables([OPENING, payment])
    tables["order"] = pd.DataFrame(
        {
            "order_id": [1],
            "account_id": [1],
            "bank_to": ["AB"],
            "account_to": [1],
            "amount": [100.0],
            "k_symbol": ["SIPO"],
        }
    )
    later = tables["loan"].assign(loan_id=[8], date=["1995-09-01"])
    earliest = tables["loan"].assign(loan_id=[9], date=["1995-08-01"])
    tables["loan"] = pd.concat([tables["loan"], later, earliest], ignore_index=True)
    by_loan = build_berka_frame(tables).set_index("loan_id")
    assert by_loan["standing_order_count"].to_dict() == {7: 0, 8: 1, 9: 1}
    assert by_loan["trans_count"].to_dict() == {7: 1, 8: 2, 9: 2}


# ------------------------------------------------------------------------------------------
# Dates with a time of day (a DATETIME column read back from a database): only whole days count
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("as_text", [False, True], ids=["datetime", "text"])
def test_given_dates_with_a_time_of_day_then_records_of_the_loan_day_stay_out(as_text: bool) -> None:
    # A deposit at 08:00 on the loan day, the loan at 10:00: the deposit is not before the loan date.
    tables = _tables([OPENING, (2, LOAN_DATE, "PRIJEM", "VKLAD", 9000.0, 14000.0, None, None)])
    loan_time, deposit_time = pd.Timestamp(f"{LOAN_DATE} 10:00"), pd.Timestamp(f"{LOAN_DATE} 08:00")
    trans_dates = [pd.Timestamp("1995-01-01"), deposit_time]
    tables["loan"] = tables["loan"].assign(date=[str(loan_time)] if as_text else [loan_time])
    tables["trans"] = tables["trans"].assign(date=[str(d) for d in trans_dates] if as_text else trans_dates)
    row = _row(tables)
    assert row["loan_date"] == pd.Timestamp(LOAN_DATE)
    assert row["trans_count"] == 1
    assert row["credit_sum_90d"] == 0.0
    assert row["balance_last"] == 5000.0


# ------------------------------------------------------------------------------------------
# Refused input: codes outside PKDD'99's, missing values in NOT NULL columns, impossible ids
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("table", "column", "value", "message"),
    [
        ("loan", "status", "E", r"loan\.status.*'E'"),
        ("account", "frequency", "POPLATEK ROCNE", r"account\.frequency.*POPLATEK ROCNE"),
        ("loan", "account_id", 1.5, r"loan\.account_id.*non-integer"),
        ("district", "A13", None, r"district\.A13.*NOT NULL"),
        ("loan", "payments", None, r"loan\.payments.*NOT NULL"),
    ],
)
def test_given_a_value_the_data_set_cannot_hold_then_the_build_names_the_column(
    table: str, column: str, value: object, message: str
) -> None:
    tables = _tables([OPENING])
    tables[table] = tables[table].copy()
    tables[table][column] = pd.Series([value], dtype=object)
    with pytest.raises(ValueError, match=message):
        build_berka_frame(tables)


def test_given_an_unknown_card_type_then_the_build_names_it() -> None:
    tables = _tables([OPENING])
    tables["card"] = pd.DataFrame(
        {"card_id": [1], "disp_id": [1], "type": ["platinum"], "issued": ["1995-02-01"]}
    )
    with pytest.raises(ValueError, match=r"card\.type.*platinum"):
        build_berka_frame(tables)


def test_given_an_order_without_an_amount_then_the_build_refuses_it() -> None:
    tables = _tables([OPENING])
    tables["order"] = pd.DataFrame(
        {
            "order_id": [1],
            "account_id": [1],
            "bank_to": ["AB"],
            "account_to": [1],
            "amount": [None],
            "k_symbol": ["SIPO"],
        }
    )
    with pytest.raises(ValueError, match=r"order\.amount.*NOT NULL"):
        build_berka_frame(tables)


def test_given_a_loan_id_twice_then_the_build_refuses_it() -> None:
    tables = _tables([OPENING])
    tables["loan"] = pd.concat([tables["loan"], tables["loan"]], ignore_index=True)
    with pytest.raises(ValueError, match=r"loan_id is not unique"):
        build_berka_frame(tables)


def test_given_a_slightly_negative_amount_then_the_build_refuses_it() -> None:
    rows = [OPENING, (2, "1995-05-01", "VYDAJ", "VYBER", -0.5, 5000.5, None, None)]
    with pytest.raises(ValueError, match=r"trans\.amount.*negative"):
        build_berka_frame(_tables(rows))


def test_given_a_complete_history_list_naming_an_unknown_loan_then_the_build_refuses_it() -> None:
    tables = _tables([OPENING])
    tables[berka.COMPLETE_HISTORY_TABLE] = pd.DataFrame({"loan_id": [7, 99], "history_source": ["a", "a"]})
    with pytest.raises(ValueError, match=r"complete_history_loans.*99"):
        build_berka_frame(tables)


# ------------------------------------------------------------------------------------------
# The complete-history list file and the coverage check
# ------------------------------------------------------------------------------------------


def _loan_table() -> pd.DataFrame:
    return berka.coerce_berka_tables({"loan": _tables([OPENING])["loan"]})["loan"]


def test_given_a_list_whose_loan_date_and_account_match_then_it_is_read(tmp_path: Path) -> None:
    path = tmp_path / berka.COMPLETE_HISTORY_FILE
    path.write_text("loan_id,account_id,loan_date,history_source\n7,1,950601,prefix\n")
    listed = berka.read_complete_history_loans(path, _loan_table())
    assert listed["loan_id"].tolist() == [7]
    assert listed["history_source"].tolist() == ["prefix"]


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ("7,1,950602", r"loan 7 .*date 950602.*950601"),  # the list of another version of the data
        ("7,2,950601", r"loan 7 .*account 2.*account 1"),
        ("7,1,950601\n7,1,950601", r"more than once.*\[7\]"),
    ],
)
def test_given_a_list_that_disagrees_with_the_loan_table_then_it_is_refused(
    tmp_path: Path, rows: str, message: str
) -> None:
    path = tmp_path / berka.COMPLETE_HISTORY_FILE
    path.write_text(f"loan_id,account_id,loan_date\n{rows}\n")
    with pytest.raises(ValueError, match=message):
        berka.read_complete_history_loans(path, _loan_table())


def _coverage_tables(opened: list[str], loan_date: str, trans_dates: list[str]) -> dict[str, pd.DataFrame]:
    """Account 1 holds the loan; any further account is opened without a loan."""
    return {
        "loan": pd.DataFrame({"loan_id": [1], "account_id": [1], "date": [pd.Timestamp(loan_date)]}),
        "account": pd.DataFrame({"account_id": range(1, len(opened) + 1), "date": pd.to_datetime(opened)}),
        "trans": pd.DataFrame({"account_id": 1, "date": pd.to_datetime(trans_dates)}),
    }


def test_given_a_loan_on_the_first_of_a_month_then_that_month_is_not_history() -> None:
    tables = _coverage_tables(["1995-01-10"], "1995-03-01", ["1995-01-10", "1995-02-28"])
    assert berka.trans_coverage_gaps(tables) == []


def test_given_an_account_without_a_loan_opened_earlier_then_its_months_are_not_history() -> None:
    tables = _coverage_tables(["1995-01-10", "1994-06-01"], "1995-03-01", ["1995-01-10", "1995-02-28"])
    assert berka.trans_coverage_gaps(tables) == []


def test_given_one_day_of_history_without_a_transaction_then_its_month_is_a_gap() -> None:
    tables = _coverage_tables(["1995-02-28"], "1995-03-01", ["1995-03-01"])
    assert berka.trans_coverage_gaps(tables) == ["1995-02"]


@pytest.mark.parametrize(
    ("months", "text"),
    [
        (["1994-04", "1994-05", "1995-01"], "1994-04..1994-05, 1995-01"),
        (["1994-04", "1994-06"], "1994-04, 1994-06"),
        (["1994-12", "1995-01", "1995-02"], "1994-12..1995-02"),
        ([], ""),
    ],
)
def test_given_gap_months_then_runs_of_consecutive_months_are_joined(months: list[str], text: str) -> None:
    assert berka.month_ranges(months) == text


# ------------------------------------------------------------------------------------------
# Spec files: what a small JSON file may say, and the cleaning every dataset gets
# ------------------------------------------------------------------------------------------

SPEC_TABLE = pd.DataFrame(
    {
        "score": [-1.0, 0.0, 5.0, 10.0, 11.0, np.nan],
        "count": [1, 2, 3, 4, 5, 6],
        "share": [0.5, 1.0, 1.5, 2.0, 2.5, 3.0],
        "flag": [True, False, True, False, True, False],
        "region": list("ababab"),
        "gender": list("FMFMFM"),
        "age": [20, 30, 40, 50, 60, 70],
        "bad": [0, 1, 0, 1, 0, 1],
    }
)


def _spec(
    tmp_path: Path, raw: dict[str, object], table: pd.DataFrame = SPEC_TABLE
) -> spec_module.DatasetSpec:
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(raw))
    return spec_module.spec_from_file(path, table)


def test_given_a_declared_range_then_its_bounds_are_kept_and_values_beyond_dropped(tmp_path: Path) -> None:
    spec = _spec(
        tmp_path,
        {
            "name": "t",
            "target": "bad",
            "features": {"score": {"minimum": 0, "maximum": 10}, "count": {"minimum": 2}},
        },
    )
    result = spec_module.default_cleaning(spec, SPEC_TABLE)
    assert result.frame["score"].tolist()[:3] == [0.0, 5.0, 10.0]  # both bounds are valid values
    assert np.isnan(result.frame["score"].iloc[3])  # missing values are kept (the pipeline imputes)
    # A bound on one side only is enforced too: count 1 (row 0) was dropped with score -1 already.
    assert result.counts == {
        "dropped_missing_target": 0,
        "dropped_out_of_range_score": 2,
        "dropped_out_of_range_count": 0,
        "missing_score": 1,
    }
    only_minimum = spec_module.default_cleaning(spec, SPEC_TABLE.assign(score=5.0))
    assert only_minimum.counts["dropped_out_of_range_count"] == 1
    assert "missing_score" not in only_minimum.counts  # only columns with missing values are counted


def test_given_a_missing_or_non_binary_target_then_cleaning_drops_or_refuses_it(tmp_path: Path) -> None:
    spec = _spec(tmp_path, {"name": "t", "target": "bad", "features": {"count": {}}})
    result = spec_module.default_cleaning(spec, SPEC_TABLE.assign(bad=[0, 1, np.nan, 1, 0, 1]))
    assert result.counts["dropped_missing_target"] == 1
    assert len(result.frame) == 5
    with pytest.raises(ValueError, match=r"must be binary 0/1.*'2'"):
        spec_module.default_cleaning(spec, SPEC_TABLE.assign(bad=[0, 1, 2, 1, 0, 1]))


@pytest.mark.filterwarnings("ignore:Could not infer format:UserWarning")  # the time_column case
@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"protect": ["gender"]}, r"unknown keys \['protect'\]"),
        ({"id_column": "bad"}, r"column 'bad' is both the target and the id_column"),
        ({"features": {"score": {"minimum": True}}}, r"minimum must be a number"),
        ({"features": {"count": {"type": "boolean"}}}, r"'count' is boolean but holds"),
        ({"features": {"share": {"type": "integer"}}}, r"'share' is integer but holds 3 values .* 0\.5"),
        ({"features": {"score": {}}, "drop": ["score"]}, r"'score' is also listed in 'drop'"),
        ({"features": {"score": {}}, "time_column": "region"}, r"time_column 'region' holds 6 values"),
        ({"features": {"score": {}}, "protected": ["height"]}, r"protected 'height' is not a column"),
        ({"protected": {"age": {"bands": [30, 30]}}}, r"bands must be finite and ascend strictly"),
        ({"protected": {"age": {"bands": [True]}}}, r"bands must be a list of numbers"),
        (
            {"protected": {"age": {"bands": [30], "band_labels": ["young", "old", "older"]}}},
            r"needs 2 band_labels",
        ),
    ],
)
def test_given_a_spec_file_with_a_mistake_then_it_is_refused_naming_it(
    tmp_path: Path, raw: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        _spec(tmp_path, {"name": "t", "target": "bad", **raw})


@pytest.mark.parametrize(("kind", "value"), [("number", np.inf), ("integer", -np.inf), (None, np.inf)])
def test_given_an_infinite_value_in_a_number_column_then_the_spec_refuses_it_naming_the_feature(
    tmp_path: Path, kind: str | None, value: float
) -> None:
    # A CSV's "inf" reads as a float: kept, it would fail only inside scikit-learn, far from its cause,
    # and no client could send it (the API refuses Infinity).
    table = SPEC_TABLE.assign(score=[0.0, 1.0, value, 3.0, 4.0, 5.0])
    options = {"type": kind} if kind else {}
    with pytest.raises(ValueError, match=r"feature 'score' holds 1 infinite value, e\.g\. -?inf; numbers"):
        _spec(tmp_path, {"name": "t", "target": "bad", "features": {"score": options}}, table)


def test_given_a_column_name_with_surrounding_spaces_then_the_spec_refuses_it(tmp_path: Path) -> None:
    # Batch files' headers are matched with surrounding spaces stripped: such a feature is never found.
    table = SPEC_TABLE.rename(columns={"score": " score"})
    with pytest.raises(ValueError, match=r"feature ' score' must be non-blank, without leading or trailing"):
        _spec(tmp_path, {"name": "t", "target": "bad", "features": {" score": {}}}, table)


# ------------------------------------------------------------------------------------------
# Catalog: the built-in cleaning rules and the ranges the API's request schema is built from
# ------------------------------------------------------------------------------------------


def _credit_risk_rows(ages: list[int], employment_years: list[float]) -> pd.DataFrame:
    count = len(ages)
    return pd.DataFrame(
        {
            "person_age": ages,
            "person_income": [50_000.0] * count,
            "person_home_ownership": ["RENT"] * count,
            "person_emp_length": employment_years,
            "loan_intent": ["PERSONAL"] * count,
            "loan_grade": ["B"] * count,
            "loan_amnt": [5_000.0] * count,
            "loan_int_rate": [10.0] * count,
            "loan_status": [i % 2 for i in range(count)],
            "loan_percent_income": [0.1] * count,
            "cb_person_default_on_file": ["N"] * count,
            "cb_person_cred_hist_length": [3.0] * count,
        }
    )


def test_given_credit_risk_ages_at_the_limits_then_18_and_100_are_kept_and_beyond_them_dropped() -> None:
    assert catalog.CREDIT_RISK.cleaner is not None
    result = catalog.CREDIT_RISK.cleaner(_credit_risk_rows([17, 18, 100, 101], [0.0] * 4))
    assert result.frame["person_age"].tolist() == [18, 100]
    assert result.counts["dropped_impossible_age"] == 2


def test_given_employment_since_age_14_then_it_is_kept_and_longer_employment_dropped() -> None:
    assert catalog.CREDIT_RISK.cleaner is not None
    # Age 40: employed since 14 at the earliest, so at most 26 years.
    result = catalog.CREDIT_RISK.cleaner(_credit_risk_rows([40, 40, 40], [25.0, 26.0, 27.0]))
    assert result.frame["person_emp_length"].tolist() == [25.0, 26.0]
    assert result.counts["dropped_employment_longer_than_life"] == 1


def test_committed_credit_risk_card_has_the_ranges_and_types_of_the_spec() -> None:
    # The API validates requests against the card's schema: a spec changed without retraining would
    # clean training data by other ranges than the API enforces.
    card = json.loads((catalog.REPO_ROOT / "model_artifacts" / "credit_risk" / "model_card.json").read_text())
    by_name = {feature["name"]: feature for feature in card["features"]}
    assert list(by_name) == catalog.CREDIT_RISK.feature_names
    for feature in catalog.CREDIT_RISK.features:
        schema = by_name[feature.name]
        assert (schema["type"], schema["minimum"], schema["maximum"]) == (
            feature.kind,
            feature.minimum,
            feature.maximum,
        ), feature.name


def test_jpmc_fico_range_is_the_fico_scale_and_holds_every_real_score(shared_data: Path) -> None:
    fico = catalog.JPMC_LOANS.feature("fico_score")
    assert (fico.minimum, fico.maximum) == (300, 850)
    table = pd.read_csv(shared_data / "jpmc_loan_data" / "Loan_Data.csv")
    for feature in catalog.JPMC_LOANS.features:
        assert feature.minimum is not None, feature.name
        assert feature.maximum is not None, feature.name
        assert table[feature.name].between(feature.minimum, feature.maximum).all(), feature.name


# ------------------------------------------------------------------------------------------
# features.py: raw columns in the dtypes the pipeline takes
# ------------------------------------------------------------------------------------------


def test_given_booleans_in_every_accepted_form_then_the_pipeline_gets_1_0_or_missing() -> None:
    spec = spec_module.DatasetSpec(
        name="t",
        description="",
        target="bad",
        positive_class="",
        features=(spec_module.FeatureSpec("flag", "boolean"),),
    )
    values = [True, False, "yes", "N", " y ", "0", 1, 0.0, None, float("nan"), pd.NA, np.nan]
    frame = pd.DataFrame({"flag": pd.Series(values, dtype=object)})
    flags = features.model_input_frame(spec, frame)["flag"].tolist()
    assert flags[:8] == [1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0]
    assert all(np.isnan(flag) for flag in flags[8:])  # missing stays missing, never False or True
    with pytest.raises(ValueError, match=r"not a boolean: 'maybe'"):
        features.model_input_frame(spec, pd.DataFrame({"flag": ["maybe"]}))


def test_given_undeclared_features_then_types_are_inferred_and_dates_or_mixed_text_refused(
    tmp_path: Path,
) -> None:
    spec = _spec(tmp_path, {"name": "t", "target": "bad", "drop": ["score", "share", "gender", "age"]})
    assert {f.name: f.kind for f in spec.features} == {
        "count": "integer",
        "flag": "boolean",
        "region": "category",
    }
    dated = SPEC_TABLE.assign(
        region=["2021-03-04", "2021-03-05 10:00", "4.3.21", "04/03/2021", np.nan, "2021-1-2"]
    )
    with pytest.raises(ValueError, match=r"column 'region' holds dates"):
        _spec(tmp_path, {"name": "t", "target": "bad"}, dated)
    # Declared as a category, the same column is what the spec says it is.
    declared = _spec(
        tmp_path, {"name": "t", "target": "bad", "features": {"region": {"type": "category"}}}, dated
    )
    assert declared.feature("region").kind == "category"
    # Four numbers of six, and two texts: a number column with typos, not six categories.
    mixed = SPEC_TABLE.assign(region=["1", "2", "3", "4", "n/a", "x"])
    with pytest.raises(ValueError, match=r"column 'region' holds numbers and some text"):
        _spec(tmp_path, {"name": "t", "target": "bad", "drop": ["score", "share", "gender", "age"]}, mixed)


def test_given_a_spec_then_reasons_name_the_direction_and_a_missing_value_keeps_the_labels_case() -> None:
    fico = catalog.JPMC_LOANS.feature("fico_score")
    assert fico.directional_reasons() == ("High FICO score", "Low FICO score")
    assert fico.missing_reason() == "FICO score not provided"
    assert catalog.CREDIT_RISK.feature("loan_grade").directional_reasons() == (None, None)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"name": "t", "target": "bad", "target": "count"}', r"key 'target' is given twice"),
        ('{"name": "t", "target": "bad", "features": {"score": {"minimum": NaN}}}', r"NaN is not a number"),
    ],
)
def test_given_json_a_spec_cannot_hold_then_it_is_refused(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "spec.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        spec_module.spec_from_file(path, SPEC_TABLE)


def test_given_a_minimum_equal_to_the_maximum_then_the_spec_accepts_it(tmp_path: Path) -> None:
    spec = _spec(
        tmp_path, {"name": "t", "target": "bad", "features": {"score": {"minimum": 5, "maximum": 5}}}
    )
    assert (spec.feature("score").minimum, spec.feature("score").maximum) == (5, 5)


def test_given_records_repeated_under_another_id_then_one_is_dropped_and_counted() -> None:
    raw = pd.DataFrame({"customer_id": [1, 2, 3], "income": [10.0, 10.0, 20.0], "default": [0, 0, 1]})
    unique, duplicates = catalog.drop_duplicate_records(catalog.JPMC_LOANS, raw)
    assert duplicates == 1
    assert unique["customer_id"].tolist() == [1, 3]


@pytest.mark.parametrize("source", ["files:", "export:", "s3://bucket/prefix"])
def test_given_a_source_without_a_location_or_kind_then_loading_refuses_it(source: str) -> None:
    with pytest.raises(ValueError, match=r"expected 'files', 'files:<path>' or 'export:<location>"):
        catalog.load_dataset("credit_risk", source)


def test_given_a_spec_file_with_an_export_source_then_loading_refuses_it(tmp_path: Path) -> None:
    (tmp_path / "spec.json").write_text(json.dumps({"name": "t", "target": "bad"}))
    with pytest.raises(ValueError, match=r"a spec file needs a table given as files:<path"):
        catalog.load_dataset("t", f"export:{tmp_path}", tmp_path / "spec.json")


def test_given_a_target_with_empty_cells_then_the_loaded_target_is_whole_numbers(tmp_path: Path) -> None:
    # An empty cell makes pandas read the column as floats; the frame's target is 0/1 integers again.
    (tmp_path / "table.csv").write_text("income,bad\n1.0,0\n2.0,\n3.0,1\n4.0,0\n")
    (tmp_path / "spec.json").write_text(json.dumps({"name": "t", "target": "bad"}))
    dataset = catalog.load_dataset("t", f"files:{tmp_path / 'table.csv'}", tmp_path / "spec.json")
    assert dataset.frame["bad"].dtype == np.int64
    assert dataset.frame["bad"].tolist() == [0, 1, 0]
    assert dataset.cleaning["dropped_missing_target"] == 1


def _berka_export_with_gaps(listed: list[int]) -> dict[str, pd.DataFrame]:
    """Two loans (A and B) of an account whose transactions leave February to June 1995 empty."""
    tables = _tables([OPENING])
    later = tables["loan"].assign(loan_id=[8], date=["1995-07-01"], status=["B"])
    tables["loan"] = pd.concat([tables["loan"], later], ignore_index=True)
    tables[berka.COMPLETE_HISTORY_TABLE] = pd.DataFrame(
        {"loan_id": pd.Series(listed, dtype="int64"), "history_source": "prefix"}
    )
    return tables


def test_given_an_export_whose_list_of_complete_loans_is_empty_then_partial_transactions_are_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(catalog, "_read_berka_export", lambda location: _berka_export_with_gaps([]))
    with pytest.raises(ValueError, match=r"no transaction in 5 months.*1995-02\.\.1995-06.*an empty\) table"):
        catalog.load_dataset("berka", "export:s3://bucket/exports")
    # Control: with the loans listed, the same transactions train those loans.
    monkeypatch.setattr(catalog, "_read_berka_export", lambda location: _berka_export_with_gaps([7, 8]))
    assert len(catalog.load_dataset("berka", "export:s3://bucket/exports").frame) == 2


def test_given_a_boolean_feature_then_every_encoding_passes_it_to_the_model() -> None:
    spec = spec_module.DatasetSpec(
        name="t",
        description="",
        target="bad",
        positive_class="",
        features=(spec_module.FeatureSpec("amount", "number"), spec_module.FeatureSpec("flag", "boolean")),
    )
    frame = pd.DataFrame({"amount": [1.0, 2.0, 3.0, 4.0], "flag": [True, False, False, True]})
    inputs = features.model_input_frame(spec, frame)
    for encoding in ("onehot_scaled", "onehot", "ordinal"):
        transformed = features.preprocessor(spec, encoding).fit_transform(inputs)
        assert transformed.shape == (4, 2), encoding
        # The flag's column separates the rows the flag separates.
        assert len({round(v, 9) for v in transformed[[0, 3], 1]}) == 1, encoding
        assert transformed[0, 1] != transformed[1, 1], encoding


def test_given_missing_or_numeric_categories_or_text_in_a_number_then_normalised_or_refused() -> None:
    spec = spec_module.DatasetSpec(
        name="t",
        description="",
        target="bad",
        positive_class="",
        features=(spec_module.FeatureSpec("amount", "number"), spec_module.FeatureSpec("grade", "category")),
    )
    frame = pd.DataFrame({"amount": [1.0, 2.0, np.nan], "grade": pd.Series([1, None, 3], dtype=object)})
    inputs = features.model_input_frame(spec, frame)
    # A missing category travels as MISSING_CATEGORY (as the serving side sends it), codes as text.
    assert inputs["grade"].tolist() == ["1", features.MISSING_CATEGORY, "3"]
    assert inputs["amount"].dtype == np.float64
    with pytest.raises(ValueError, match=r"Unable to parse string"):
        features.model_input_frame(spec, frame.assign(amount=["1.0", "two", "3"]))


def test_given_a_first_day_whose_balances_drift_then_its_closing_is_carried_back_from_the_next_day() -> None:
    # The day of account 142's drift (see test_dataset_readers_review.py) as the first day of history:
    # 17,710.00 + 49.70 - 14.60 = 17,745.10, but the account closed at 17,745.00, which the next day's
    # credit (+100.00 to 17,845.00) confirms.
    rows = [
        (1, "1995-01-01", "PRIJEM", "VKLAD", 17_710.0, 17_710.0, None, None),
        (2, "1995-01-01", "VYDAJ", "VYBER", 14.6, 17_745.0, None, None),
        (3, "1995-01-01", "PRIJEM", None, 49.7, 17_759.7, None, None),
        (4, "1995-01-15", "PRIJEM", "VKLAD", 100.0, 17_845.0, None, None),
    ]
    row = _row(_tables(rows))
    assert row["balance_min"] == pytest.approx(17_745.0)
    # 01-01..01-14 at 17,745.00; 01-15..05-31 (137 days) at 17,845.00
    assert row["balance_mean"] == pytest.approx((17_745.0 * 14 + 17_845.0 * 137) / 151)


def test_given_an_unterminated_last_line_with_a_field_too_many_then_the_file_is_refused_as_cut_off(
    shared_data: Path, tmp_path: Path
) -> None:
    header = (
        b'"trans_id";"account_id";"date";"type";"operation";"amount";"balance";"k_symbol";"bank";"account"'
    )
    row = b'695247;2378;930101;"PRIJEM";"VKLAD";700.00;700.00;"";;'
    last = b'3526882;11021;940331;"PRIJEM";"PREVOD Z UCTU";5025.00;31012.40;"";"AB";12345678;"X"'
    trans_file = tmp_path / "trans.asc"
    trans_file.write_bytes(header + b"\r\n" + row + b"\r\n" + last)
    with pytest.raises(ValueError, match=r"cut off mid-line.*not a complete trans row of 10 fields"):
        berka.read_berka_files(shared_data / "pkdd99_financial", trans_file)
