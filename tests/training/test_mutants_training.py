"""Behaviour of the evaluation, calibration and selection code that the other tests let slip: each test
here fails on a small change to the source (a mutant) that every earlier test passed."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from lambdas.scoring.card import CrossValidatedMetrics, Interval, MetricSet
from training.calibration import decide_calibration
from training.candidates import CANDIDATES, SMALL_DATA_ROWS
from training.datasets.catalog import BUILT_IN
from training.fairness import fairness_for_attribute
from training.metrics import decision_outcomes, percentile_interval, summarise
from training.pipeline import CandidateResult, rank_candidates
from training.registry import GateRule, gate


def _metrics(roc_auc: float, brier: float = 0.1) -> MetricSet:
    return MetricSet(roc_auc=roc_auc, pr_auc=0.5, ks=0.5, brier=brier, log_loss=0.3)


def _result(name: str, roc_auc: float, brier: float) -> CandidateResult:
    cv = CrossValidatedMetrics(folds=5, repeats=1, mean=_metrics(roc_auc, brier), std=_metrics(0.0, 0.0))
    candidate = next(c for c in CANDIDATES if c.name == name)
    empty = np.zeros(1)
    return CandidateResult(candidate, cv, cv, empty, empty, False, "", 0.0)


def test_given_two_folds_then_the_spread_is_the_folds_own_deviation() -> None:
    # Given fold ROC AUCs 0.80 and 0.90 and Brier scores 0.10 and 0.14
    mean, std = summarise([_metrics(0.80, 0.10), _metrics(0.90, 0.14)])
    # Then the mean is their average and the deviation their own spread (ddof=0): 0.05 and 0.02, not the
    # sample estimate (ddof=1) of 0.0707 and 0.0283
    assert mean.roc_auc == pytest.approx(0.85)
    assert std.roc_auc == pytest.approx(0.05)
    assert std.brier == pytest.approx(0.02)


def test_given_bootstrap_figures_then_the_interval_is_their_central_share() -> None:
    # Given 1,001 resampled figures 0, 1, ..., 1000
    figures = np.arange(1001, dtype=np.float64)
    # Then the 95% interval cuts 2.5% off each end, and the 90% one 5%
    interval = percentile_interval(figures, 0.95)
    assert (interval.lower, interval.upper) == pytest.approx((25.0, 975.0))
    narrower = percentile_interval(figures, 0.90)
    assert (narrower.lower, narrower.upper) == pytest.approx((50.0, 950.0))


def test_given_unequal_costs_then_each_error_is_charged_its_own_cost() -> None:
    # Given two defaulters approved (scores below 0.5) and one repayer declined (0.7)
    y = np.array([1, 1, 0, 0, 1])
    probability = np.array([0.1, 0.2, 0.7, 0.3, 0.9])
    # When approving a defaulter costs 5 and declining a repayer costs 1
    outcomes = decision_outcomes(y, probability, 0.5, 5.0, 1.0)
    # Then the cost is (2 x 5 + 1 x 1) / 5 rows, not (2 x 1 + 1 x 5) / 5
    assert outcomes.expected_cost_per_application == pytest.approx(11 / 5)
    assert outcomes.approved_who_defaulted_rate == pytest.approx(2 / 3)


def test_given_calibrated_scores_on_few_rows_then_the_out_of_fold_brier_shows_the_cost_of_fitting() -> None:
    # Given scores that are already calibrated (defaults drawn with exactly that probability), 100 rows
    worse, chosen = 0, 0
    for draw in range(30):
        rng = np.random.default_rng(draw)
        probability = rng.uniform(0.05, 0.95, 100)
        y = (rng.uniform(size=100) < probability).astype(np.int64)
        decision, _ = decide_calibration(probability, y, seed=0)
        worse += decision.brier_calibrated > decision.brier_uncalibrated
        chosen += decision.use_sigmoid
    # Then a sigmoid fitted on other rows than those it maps mostly does worse than the raw scores (22 of
    # 30 draws) and is rarely chosen (6 of 30); one fitted on the rows it maps looks better in 29 draws of
    # 30 and would be chosen in 21
    assert worse >= 15
    assert chosen <= 10


@pytest.mark.parametrize(("squash", "chosen"), [(1.5, True), (1.2, False)])
def test_given_a_brier_gain_either_side_of_half_a_percent_then_only_the_larger_calibrates(
    squash: float, chosen: bool
) -> None:
    # Given calibrated scores pushed away from 0.5 (their logit times ``squash``), 4,000 rows: the
    # out-of-fold sigmoid lowers Brier by 1.9% at 1.5 and by 0.2% at 1.2
    rng = np.random.default_rng(3)
    true_p = rng.uniform(0.05, 0.95, 4000)
    y = (rng.uniform(size=4000) < true_p).astype(np.int64)
    scores = 1 / (1 + np.exp(-squash * np.log(true_p / (1 - true_p))))
    decision, probability = decide_calibration(scores, y, seed=0)
    # Then calibration is used only for the gain above the 0.5% margin
    assert decision.use_sigmoid is chosen
    assert np.array_equal(probability, scores) is not chosen


def test_given_an_auc_lead_just_beyond_the_tie_then_the_higher_auc_wins_despite_its_brier() -> None:
    # Given boosting ahead by 0.001 in ROC AUC (beyond the 0.0005 tie) but with the worse Brier
    ranked = rank_candidates(
        [_result("random_forest", 0.9400, 0.050), _result("hist_gradient_boosting", 0.9410, 0.060)]
    )
    # Then boosting is chosen: Brier only decides among tied AUCs
    assert [r.candidate.name for r in ranked] == ["hist_gradient_boosting", "random_forest"]


def test_given_untied_candidates_then_they_follow_in_order_of_auc() -> None:
    # Given boosting best, and the forest and logistic regression clearly behind it, the worse listed first
    ranked = rank_candidates(
        [
            _result("logistic_regression", 0.90, 0.05),
            _result("random_forest", 0.93, 0.06),
            _result("hist_gradient_boosting", 0.95, 0.07),
        ]
    )
    # Then the next best by ROC AUC follows the best (the one tried should the best fail ONNX parity)
    assert [r.candidate.name for r in ranked] == [
        "hist_gradient_boosting",
        "random_forest",
        "logistic_regression",
    ]


def test_given_tied_auc_and_equal_brier_then_the_simpler_model_is_chosen() -> None:
    # Given all three candidates with the same ROC AUC and Brier, listed most complex first
    ranked = rank_candidates(
        [
            _result("hist_gradient_boosting", 0.9, 0.07),
            _result("random_forest", 0.9, 0.07),
            _result("logistic_regression", 0.9, 0.07),
        ]
    )
    # Then the simplest comes first: logistic regression, then the forest, then boosting
    assert [r.candidate.name for r in ranked] == [
        "logistic_regression",
        "random_forest",
        "hist_gradient_boosting",
    ]


def test_given_a_resample_without_a_groups_repayers_then_it_does_not_read_as_equal_opportunity() -> None:
    # Given two groups of 20 rows with one repayer each (compared: min_group_size=1): a approves its
    # repayer, b declines it, and every defaulter is declined, so the equal opportunity difference is 1
    groups = pd.Series(["a"] * 20 + ["b"] * 20)
    y = np.array(([0] + [1] * 19) * 2)
    declined = np.array([False] + [True] * 19 + [True] * 20)
    report = fairness_for_attribute("g", groups, y, declined, "holdout rows", min_group_size=1, seed=5)
    assert report.equal_opportunity_difference == 1.0
    # Then the resamples that drew no repayer of a group (about 6 in 10) have no difference, rather than a
    # difference of 0 over the one group left: every defined one is 1
    assert report.comparison_intervals is not None
    assert report.comparison_intervals.equal_opportunity_difference == Interval(lower=1.0, upper=1.0)


def _card(version: str, roc_auc: float, brier: float) -> dict[str, Any]:
    return {
        "model_name": "credit-risk-default-risk",
        "model_version": version,
        "dataset": "credit_risk",
        "holdout_metrics": {"roc_auc": roc_auc, "brier": brier},
        "parity": {"passed": True},
        "data": {"sha256": "data-1", "holdout": "stratified random 20% (seed 7)"},
    }


def test_given_a_candidate_worse_by_exactly_the_tolerance_then_the_gate_passes_it() -> None:
    # Given tolerances of 1/16 and a candidate worse than the champion by exactly that (binary-exact numbers)
    rule = GateRule(roc_auc_tolerance=0.0625, brier_tolerance=0.0625)
    champion = _card("v1", 0.875, 0.125)
    # Then "worse by more than the tolerance" does not hold, on either metric
    assert gate(_card("v2", 0.8125, 0.125), champion, rule).passed
    assert gate(_card("v2", 0.875, 0.1875), champion, rule).passed
    # And a step beyond it fails
    assert not gate(_card("v2", 0.8125 - 1e-9, 0.125), champion, rule).passed
    assert not gate(_card("v2", 0.875, 0.1875 + 1e-9), champion, rule).passed


@pytest.mark.parametrize("verdict", [None, "true", 1])
def test_given_a_parity_verdict_that_is_not_true_then_the_gate_refuses_the_candidate(verdict: object) -> None:
    # Given a candidate better than the champion whose parity check did not say true (null, text, a number)
    candidate = _card("v2", 0.95, 0.05)
    candidate["parity"] = {"passed": verdict}
    # Then it is refused, with or without a champion: only a passed parity check lets it through
    for champion in (_card("v1", 0.90, 0.08), None):
        decision = gate(candidate, champion)
        assert not decision.passed
        assert decision.reasons[0] == "candidate failed the sklearn-vs-ONNX parity check"


def test_given_a_retrain_identical_to_the_champion_then_the_notes_say_within_noise() -> None:
    # Given a candidate whose training scored champion v1 on its holdout with the very same figures, so
    # that every paired resample differs by exactly 0
    candidate = _card("v2", 0.9, 0.07)
    zero = {"lower": 0.0, "upper": 0.0}
    candidate["champion_comparison"] = {
        "champion_version": "v1",
        "champion_metrics": {"roc_auc": 0.9, "brier": 0.07},
        "note": "champion v1 scored on this card's holdout rows",
        "difference_intervals": {
            "method": "paired stratified bootstrap",
            "resamples": 200,
            "seed": 7,
            "confidence": 0.95,
            "roc_auc": zero,
            "brier": zero,
        },
    }
    decision = gate(candidate, _card("v1", 0.9, 0.07))
    # Then an interval of [0, 0] holds 0: neither better nor worse beyond noise
    assert decision.passed
    notes = [reason for reason in decision.reasons if "paired bootstrap interval" in reason]
    assert notes == [
        "note: ROC AUC difference +0.0000 (95% paired bootstrap interval +0.0000 to +0.0000; "
        "holds 0: within holdout noise)",
        "note: Brier difference +0.0000 (95% paired bootstrap interval +0.0000 to +0.0000; "
        "holds 0: within holdout noise)",
    ]


def _params(name: str, rows: int) -> dict[str, str | int | float | bool | None]:
    candidate = next(c for c in CANDIDATES if c.name == name)
    return candidate.params(BUILT_IN["credit_risk"], rows, 0)


def test_given_imbalanced_classes_then_the_linear_model_and_the_forest_weight_them_and_boosting_not() -> None:
    # The card's promise: the linear model and the forest weight classes inversely to their frequency,
    # boosting keeps unweighted log-loss so its probabilities stay close to calibrated
    assert _params("logistic_regression", 5000)["class_weight"] == "balanced"
    assert _params("random_forest", 5000)["class_weight"] == "balanced_subsample"
    assert _params("hist_gradient_boosting", 5000)["class_weight"] is None


def test_given_exactly_the_small_data_limit_then_boosting_takes_the_large_data_settings() -> None:
    # Given 2,000 training rows (SMALL_DATA_ROWS) and one fewer
    large = _params("hist_gradient_boosting", SMALL_DATA_ROWS)
    small = _params("hist_gradient_boosting", SMALL_DATA_ROWS - 1)
    # Then from 2,000 rows on, boosting learns at 0.1 with 31-leaf trees; below, at 0.05 with 8 leaves
    assert (large["learning_rate"], large["max_leaf_nodes"]) == (0.1, 31)
    assert (small["learning_rate"], small["max_leaf_nodes"]) == (0.05, 8)
