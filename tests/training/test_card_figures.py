"""The model card's decision, calibration and adverse-impact figures, checked against hand counts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from training.fairness import fairness_for_attribute
from training.metrics import calibration_report, decision_outcomes


def test_given_scores_and_a_threshold_then_the_outcomes_are_the_confusion_matrix_as_rates() -> None:
    # Given two defaulters and three repayers; declined: at or above 0.5 (the first and third rows)
    y = np.array([1, 1, 0, 0, 0])
    probability = np.array([0.9, 0.1, 0.5, 0.2, 0.05])
    outcomes = decision_outcomes(y, probability, 0.5, 5.0, 1.0)
    assert outcomes.rows == 5
    assert outcomes.approval_rate == pytest.approx(3 / 5)
    assert outcomes.defaulters_declined_rate == pytest.approx(1 / 2)
    assert outcomes.good_applicants_declined_rate == pytest.approx(1 / 3)
    assert outcomes.declined_who_defaulted_rate == pytest.approx(1 / 2)
    assert outcomes.approved_who_defaulted_rate == pytest.approx(1 / 3)
    # One approved defaulter at 5, one declined repayer at 1, over five applications
    assert outcomes.expected_cost_per_application == pytest.approx(6 / 5)


def test_given_everyone_declined_then_the_rates_of_the_approved_are_undefined_not_zero() -> None:
    outcomes = decision_outcomes(np.array([1, 0, 0]), np.array([0.7, 0.6, 0.9]), 0.5, 5.0, 1.0)
    assert outcomes.approval_rate == 0.0
    assert outcomes.approved_who_defaulted_rate is None
    assert outcomes.good_applicants_declined_rate == 1.0


def test_given_scores_then_calibration_bins_compare_predicted_and_observed() -> None:
    # Given two rows near 0.05 (one defaulted), one at 0.15 (repaid), and 0.95 and 1.0 (both defaulted)
    y = np.array([0, 1, 0, 1, 1])
    probability = np.array([0.05, 0.05, 0.15, 0.95, 1.0])
    report = calibration_report(y, probability, "5 rows")
    counts = [b.count for b in report.bins]
    assert counts == [2, 1, 0, 0, 0, 0, 0, 0, 0, 2]  # 1.0 belongs to the last bin
    assert report.bins[0].observed_default_rate == 0.5
    assert report.bins[9].mean_probability == pytest.approx(0.975)
    assert report.bins[4].mean_probability is None
    # Gaps 0.45 (2 rows), 0.15 (1 row), 0.025 (2 rows): weighted by rows
    assert report.expected_calibration_error == pytest.approx((2 * 0.45 + 0.15 + 2 * 0.025) / 5)
    assert report.max_calibration_error == pytest.approx(0.45)


def test_given_outcomes_drawn_from_the_scores_then_the_calibration_error_is_small() -> None:
    # Given defaults drawn with exactly the predicted probability, and the same scores pushed up
    rng = np.random.default_rng(7)
    probability = rng.uniform(0, 1, 100_000)
    y = (rng.uniform(0, 1, probability.size) < probability).astype(np.int64)
    calibrated = calibration_report(y, probability, "drawn")
    overconfident = calibration_report(y, np.sqrt(probability), "drawn")
    assert calibrated.expected_calibration_error < 0.01
    assert overconfident.expected_calibration_error > 0.1


def test_given_group_approval_rates_then_the_adverse_impact_ratio_is_lowest_over_highest() -> None:
    # Given group a approved 20 of 40, group b 32 of 40, and a 5-row group c approved none
    groups = pd.Series(["a"] * 40 + ["b"] * 40 + ["c"] * 5)
    y = np.zeros(85, dtype=np.int64)
    declined = np.array([True] * 20 + [False] * 20 + [True] * 8 + [False] * 32 + [True] * 5)
    report = fairness_for_attribute("g", groups, y, declined, "holdout rows")
    # Then only the large groups are compared: 0.5 / 0.8, below the four-fifths line
    assert report.adverse_impact_ratio == pytest.approx(0.5 / 0.8)
    assert report.demographic_parity_difference == pytest.approx(0.3)
