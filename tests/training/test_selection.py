"""Selection, calibration and threshold logic on small, hand-checkable data."""

from __future__ import annotations

import numpy as np
import pytest

from lambdas.scoring.card import CrossValidatedMetrics, MetricSet
from training.calibration import decide_calibration, fit_sigmoid
from training.candidates import CANDIDATES
from training.metrics import evaluate
from training.pipeline import CandidateResult, rank_candidates
from training.threshold import choose_threshold, expected_cost


def test_given_costs_when_choosing_threshold_then_it_minimises_expected_cost() -> None:
    # Given scores where two defaulters sit at 0.3 and 0.9 and goods at 0.1, 0.2, 0.4
    y = np.array([0, 0, 1, 0, 1])
    p = np.array([0.1, 0.2, 0.3, 0.4, 0.9])
    # When a missed default costs 5 and a declined good costs 1
    choice = choose_threshold(y, p, cost_fn=5, cost_fp=1)
    # Then declining from 0.3 up (one good declined, cost 1/5) beats every other cut
    assert 0.2 < choice.threshold <= 0.3
    assert choice.expected_cost == pytest.approx(1 / 5)
    assert expected_cost(y, p, choice.threshold, 5, 1) == pytest.approx(choice.expected_cost)
    for other in (0.05, 0.15, 0.35, 0.5, 0.95):
        assert expected_cost(y, p, other, 5, 1) >= choice.expected_cost
    assert choice.theoretical_threshold == pytest.approx(1 / 6)


def test_given_equal_costs_when_choosing_threshold_then_it_moves_up() -> None:
    y = np.array([0, 0, 1, 0, 1])
    p = np.array([0.1, 0.2, 0.3, 0.4, 0.9])
    assert choose_threshold(y, p, 1, 1).threshold > choose_threshold(y, p, 5, 1).threshold


def test_given_non_positive_cost_when_choosing_threshold_then_error() -> None:
    with pytest.raises(ValueError, match="costs must be positive"):
        choose_threshold(np.array([0, 1]), np.array([0.1, 0.9]), cost_fn=0)


def test_given_overconfident_scores_when_deciding_then_sigmoid_is_chosen() -> None:
    # Given true probabilities squashed towards 0 and 1 (overconfident model)
    rng = np.random.default_rng(0)
    true_p = rng.uniform(0.05, 0.95, 4000)
    y = (rng.uniform(size=4000) < true_p).astype(int)
    logit = np.log(true_p / (1 - true_p))
    overconfident = 1 / (1 + np.exp(-3 * logit))
    decision, _calibrated = decide_calibration(overconfident, y, seed=0)
    assert decision.use_sigmoid
    assert decision.brier_calibrated < decision.brier_uncalibrated
    # And the fitted slope undoes the squashing
    assert fit_sigmoid(overconfident, y).slope == pytest.approx(1 / 3, rel=0.2)


def test_given_calibrated_scores_when_deciding_then_no_calibration() -> None:
    rng = np.random.default_rng(1)
    true_p = rng.uniform(0.05, 0.95, 4000)
    y = (rng.uniform(size=4000) < true_p).astype(int)
    decision, calibrated = decide_calibration(true_p, y, seed=0)
    assert not decision.use_sigmoid
    assert np.array_equal(calibrated, true_p)


def _result(name: str, auc: float, brier: float) -> CandidateResult:
    metrics = MetricSet(roc_auc=auc, pr_auc=0.5, ks=0.5, brier=brier, log_loss=0.3)
    cv = CrossValidatedMetrics(folds=5, repeats=1, mean=metrics, std=metrics)
    candidate = next(c for c in CANDIDATES if c.name == name)
    empty = np.zeros(1)
    return CandidateResult(candidate, cv, cv, empty, empty, False, "", 0.0)


def test_given_candidates_when_ranked_then_best_auc_first_and_ties_by_brier() -> None:
    ranked = rank_candidates(
        [
            _result("logistic_regression", 0.87, 0.10),
            _result("random_forest", 0.9400, 0.050),
            _result("hist_gradient_boosting", 0.9403, 0.060),
        ]
    )
    # AUCs 0.9400 and 0.9403 tie (within 0.0005): the lower Brier wins
    assert [r.candidate.name for r in ranked] == [
        "random_forest",
        "hist_gradient_boosting",
        "logistic_regression",
    ]
    clear = rank_candidates(
        [_result("random_forest", 0.93, 0.05), _result("hist_gradient_boosting", 0.95, 0.06)]
    )
    assert clear[0].candidate.name == "hist_gradient_boosting"


def test_given_known_scores_when_evaluated_then_metrics_match_hand_values() -> None:
    y = np.array([0, 0, 1, 1])
    p = np.array([0.1, 0.4, 0.35, 0.8])
    metrics = evaluate(y, p)
    assert metrics.roc_auc == pytest.approx(0.75)
    assert metrics.ks == pytest.approx(0.5)
    assert metrics.brier == pytest.approx(np.mean((p - y) ** 2))
    with pytest.raises(ValueError, match="both classes"):
        evaluate(np.array([1, 1]), np.array([0.2, 0.3]))
