"""Leakage and label review of the built-in datasets.

Berka: ``loan.status`` is the loan's state at the end of the data (1998-12-31). A running loan
granted in 1998 with status C has been repaid for weeks to months: its 0 says "not in debt yet".
Training keeps only loans observed for at least 12 months. credit_risk and jpmc_loans: the
columns that are the lender's own assessment, or whose timing cannot be checked, are documented.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from training.datasets import berka, catalog
from training.datasets.catalog import CREDIT_RISK, JPMC_LOANS, load_dataset
from training.pipeline import TrainingConfig, split_holdout


@pytest.fixture(scope="module")
def all_loans(shared_data: Path) -> pd.DataFrame:
    """loan.asc, decoded (682 loans with their status)."""
    return berka.read_berka_files(
        shared_data / "pkdd99_financial", shared_data / "pkdd99_financial_trans_assembled" / "trans.asc"
    )["loan"]


def test_given_loan_dates_around_a_year_before_the_status_date_then_only_the_older_are_observed() -> None:
    dates = pd.Series(pd.to_datetime(["1993-07-05", "1997-12-30", "1997-12-31", "1998-01-01", "1998-12-08"]))
    assert berka.outcome_observed(dates).tolist() == [True, True, True, False, False]


def test_given_a_loan_without_a_date_then_outcome_observed_refuses_it() -> None:
    with pytest.raises(ValueError, match="1 loans without a date"):
        berka.outcome_observed(pd.Series([pd.Timestamp("1997-01-01"), pd.NaT]))


def test_real_loans_not_yet_observed_are_running_ones_whose_default_rate_is_far_lower(
    all_loans: pd.DataFrame,
) -> None:
    observed = berka.outcome_observed(all_loans["date"])
    # Every finished loan (A, B) is observed: none is dropped for being young.
    assert set(all_loans.loc[~observed, "status"]) == {"C", "D"}
    assert set(all_loans.loc[all_loans["status"].isin(["A", "B"]), "date"].pipe(berka.outcome_observed)) == {
        True
    }
    # The young loans' labels are mostly "not in debt yet": 4 of 158 against 72 of 524.
    bad = all_loans["status"].isin(["B", "D"])
    assert (int(bad[~observed].sum()), int((~observed).sum())) == (4, 158)
    assert (int(bad[observed].sum()), int(observed.sum())) == (72, 524)


def test_given_berka_when_loaded_then_only_loans_observed_for_a_year_are_trained_on() -> None:
    dataset = load_dataset("berka")
    raw = catalog._raw_frame(catalog.BERKA, None)  # the 392 listed loans, one row each
    young = raw[berka.BERKA_TIME_COLUMN] > pd.Timestamp("1997-12-31")
    assert dataset.cleaning["dropped_outcome_observed_under_12_months"] == int(young.sum()) == 158
    expected = raw.loc[~young, list(dataset.frame.columns)].reset_index(drop=True)
    pd.testing.assert_frame_equal(dataset.frame, expected)
    assert any("observed for at least 12 months" in note for note in dataset.spec.notes)
    assert "1998-12-31" in dataset.spec.positive_class


def test_given_berka_when_split_out_of_time_then_the_holdout_labels_are_observed_for_a_year() -> None:
    # Before: the holdout was the 78 loans from 1998-05-30 on (2 defaults), observed 0-7 months.
    split = split_holdout(load_dataset("berka"), TrainingConfig(seed=0, holdout_fraction=0.2))
    dates = split.holdout[berka.BERKA_TIME_COLUMN]
    assert bool(berka.outcome_observed(dates).all())
    assert (len(split.holdout), int(split.holdout["defaulted"].sum())) == (47, 8)


def test_credit_risk_notes_say_grade_and_rate_are_the_lenders_own_assessment() -> None:
    notes = [note for note in CREDIT_RISK.notes if "lender's own assessment" in note]
    assert len(notes) == 1
    assert "loan_grade" in notes[0]
    assert "loan_int_rate" in notes[0]
    assert {"loan_grade", "loan_int_rate"} <= set(CREDIT_RISK.feature_names)


def test_jpmc_notes_say_the_timing_of_the_outstanding_figures_cannot_be_checked() -> None:
    assert any("no dates" in note and "credit_lines_outstanding" in note for note in JPMC_LOANS.notes)
