"""Dataset loaders on the real files: row counts, types, cleaning counts, spec files."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from training.datasets.catalog import CREDIT_RISK, SHIPPED_CREDIT_RISK, load_dataset
from training.datasets.spec import spec_from_file


def test_given_shipped_credit_risk_copy_when_loaded_then_counts_match_the_original(shared_data: Path) -> None:
    # Given the compressed copy in the repo and the original CSV in shared data
    shipped = pd.read_csv(SHIPPED_CREDIT_RISK)
    original = pd.read_csv(shared_data / "credit_risk_dataset" / "credit_risk_dataset.csv")
    # Then they are the same table
    pd.testing.assert_frame_equal(shipped, original)
    assert len(shipped) == 32_581


def test_given_credit_risk_when_cleaned_then_each_rule_is_counted() -> None:
    dataset = load_dataset("credit_risk")
    counts = dataset.cleaning
    assert dataset.rows_raw == 32_581
    # Ages above 100 (144, 123, ...) are impossible; employment of 123 years is longer than life.
    assert counts["dropped_impossible_age"] == 5
    assert counts["dropped_employment_longer_than_life"] >= 2
    assert counts["dropped_duplicates"] == 165
    assert counts["missing_loan_int_rate"] > 3000
    assert counts["missing_person_emp_length"] > 800
    dropped = sum(v for k, v in counts.items() if k.startswith("dropped_"))
    assert len(dataset.frame) == 32_581 - dropped
    assert dataset.frame["person_age"].max() <= 100
    assert set(dataset.frame["loan_status"].unique()) == {0, 1}


def test_given_credit_risk_when_loaded_then_age_is_protected_not_a_feature() -> None:
    assert "person_age" not in CREDIT_RISK.feature_names
    assert [p.column for p in CREDIT_RISK.protected] == ["person_age"]
    assert "person_age" in load_dataset("credit_risk").frame.columns


def test_given_jpmc_file_when_loaded_then_ten_thousand_typed_rows(shared_data: Path) -> None:
    dataset = load_dataset("jpmc_loans", f"files:{shared_data / 'jpmc_loan_data' / 'Loan_Data.csv'}")
    assert len(dataset.frame) == 10_000
    assert dataset.frame["default"].sum() == 1_851
    assert "customer_id" not in dataset.frame.columns
    assert pd.api.types.is_integer_dtype(dataset.frame["fico_score"])


def test_given_berka_files_when_loaded_then_only_complete_history_loans(shared_data: Path) -> None:
    dataset = load_dataset("berka")
    # 392 listed loans (35 defaults), less the 158 granted in 1998 whose status C/D has been observed
    # for under a year (4 of them D): their 0 would mean "not in debt yet", not "repaid".
    assert dataset.rows_raw == 392
    assert dataset.cleaning["dropped_outcome_observed_under_12_months"] == 158
    assert len(dataset.frame) == 234
    assert dataset.frame["defaulted"].sum() == 31
    assert {"owner_gender", "owner_age_band", "loan_date"} <= set(dataset.frame.columns)


def test_given_spec_file_when_loaded_then_types_inferred_and_protected_kept(tmp_path: Path) -> None:
    table = pd.DataFrame(
        {
            "id": range(6),
            "income": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
            "region": ["a", "b", "a", "b", "a", "b"],
            "gender": ["F", "M", "F", "M", "F", "M"],
            "bad": [0, 1, 0, 1, 0, 1],
        }
    )
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(
        json.dumps({"name": "toy", "target": "bad", "protected": ["gender"], "drop": ["id"]})
    )
    spec = spec_from_file(spec_file, table)
    assert [(f.name, f.kind) for f in spec.features] == [("income", "number"), ("region", "category")]
    assert [p.column for p in spec.protected] == ["gender"]


def test_given_spec_file_with_unknown_target_when_loaded_then_error_names_it(tmp_path: Path) -> None:
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps({"name": "toy", "target": "nope"}))
    with pytest.raises(ValueError, match="'nope'"):
        spec_from_file(spec_file, pd.DataFrame({"a": [1]}))


def test_given_unknown_source_kind_when_loading_then_clear_error() -> None:
    with pytest.raises(ValueError, match="expected 'files'"):
        load_dataset("credit_risk", "ftp:somewhere")
