"""How sure the card's holdout figures are: Wilson intervals, counts and a small-sample flag for the
fairness rates, the holdout's class counts and bootstrap intervals for the champion's ROC AUC and
Brier, the gate's minimum of holdout positives and negatives, and the summary ``show`` prints.

New names are reached through their modules (``metrics.wilson_interval``), so each test fails on its
own, with the name it misses, where the code lacks it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import brier_score_loss, roc_auc_score

from lambdas.scoring import card as card_schema
from lambdas.scoring.card import ModelCard
from training import cli, fairness, metrics, pipeline, registry
from training.datasets.catalog import load_dataset
from training.registry import GateRule, RegistryError, gate

REPO_ROOT = Path(__file__).resolve().parents[2]
COMMITTED_CARD = REPO_ROOT / "model_artifacts" / "credit_risk" / "model_card.json"
Z95_SQUARED = 1.959963984540054**2


# --- Wilson score interval ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("successes", "trials", "lower", "upper"),
    [
        # Newcombe (1998), "Two-sided confidence intervals for the single proportion", Table I
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (1, 29, 0.0061, 0.1718),
        # By hand: p = 0.8, n = 10, z^2 = 3.8415: centre (0.8 + 0.19207) / 1.38415 = 0.71674,
        # half-width 1.95996 / 1.38415 * sqrt(0.016 + 0.0096037) = 0.22657
        (8, 10, 0.4902, 0.9433),
    ],
)
def test_given_known_proportions_then_the_wilson_interval_matches_the_published_values(
    successes: int, trials: int, lower: float, upper: float
) -> None:
    interval = metrics.wilson_interval(successes, trials)
    assert interval is not None
    assert interval.lower == pytest.approx(lower, abs=5e-5)
    assert interval.upper == pytest.approx(upper, abs=5e-5)


@pytest.mark.parametrize("trials", [1, 20, 78])
def test_given_none_or_all_successes_then_the_interval_reaches_0_or_1_exactly(trials: int) -> None:
    # Given 0 of n: the lower bound is 0 and the upper is z^2 / (n + z^2) (the formula at p = 0)
    none = metrics.wilson_interval(0, trials)
    assert none is not None
    assert none.lower == 0.0
    assert none.upper == pytest.approx(Z95_SQUARED / (trials + Z95_SQUARED), rel=1e-12)
    # And n of n mirrors it, with the upper bound exactly 1
    every = metrics.wilson_interval(trials, trials)
    assert every is not None
    assert every.upper == 1.0
    assert every.lower == pytest.approx(1 - none.upper, rel=1e-12)


def test_given_no_trials_then_the_interval_is_undefined_not_zero() -> None:
    assert metrics.wilson_interval(0, 0) is None


@pytest.mark.parametrize(("successes", "trials"), [(-1, 10), (11, 10), (1, -1)])
def test_given_impossible_counts_then_the_interval_is_refused(successes: int, trials: int) -> None:
    with pytest.raises(ValueError, match="successes"):
        metrics.wilson_interval(successes, trials)


# --- Fairness: counts, intervals, small-sample flag -------------------------------------------------


def _group(report: Any, name: str) -> Any:
    return next(g for g in report.groups if g.group == name)


def test_given_groups_then_each_rate_has_its_counts_and_a_wilson_interval() -> None:
    # Given group a: 40 defaulters (30 declined) and 60 repayers (6 declined);
    # group b: 10 defaulters (5 declined) and 30 repayers (3 declined); group c: 35 repayers, none declined
    y = np.array([1] * 40 + [0] * 60 + [1] * 10 + [0] * 30 + [0] * 35)
    declined = np.array(
        [True] * 30 + [False] * 10 + [True] * 6 + [False] * 54
        + [True] * 5 + [False] * 5 + [True] * 3 + [False] * 27
        + [False] * 35
    )  # fmt: skip
    groups = pd.Series(["a"] * 100 + ["b"] * 40 + ["c"] * 35)
    # When the fairness figures are computed
    report = fairness.fairness_for_attribute("g", groups, y, declined, "holdout rows")
    a, b, c = _group(report, "a"), _group(report, "b"), _group(report, "c")
    # Then each group carries the denominators of its rates
    assert (a.count, a.defaulters, a.repayers) == (100, 40, 60)
    assert (b.count, b.defaulters, b.repayers) == (40, 10, 30)
    assert (c.count, c.defaulters, c.repayers) == (35, 0, 35)
    # And every rate has the Wilson interval of its own numerator and denominator
    assert a.approval_rate_interval == metrics.wilson_interval(64, 100)
    assert a.default_rate_interval == metrics.wilson_interval(40, 100)
    assert a.true_positive_rate_interval == metrics.wilson_interval(30, 40)
    assert a.good_applicant_approval_rate_interval == metrics.wilson_interval(54, 60)
    assert b.true_positive_rate_interval == metrics.wilson_interval(5, 10)
    assert a.approval_rate_interval.lower < a.approval_rate < a.approval_rate_interval.upper
    # And a rate with nothing to take a share of has no interval either (undefined, not [0, 0])
    assert c.true_positive_rate is None
    assert c.true_positive_rate_interval is None
    assert c.default_rate_interval == metrics.wilson_interval(0, 35)
    # And small_sample marks the groups with fewer than 30 cases under any rate (b: 10 defaulters,
    # c: no defaulter), not a: its smallest denominator is 40
    assert fairness.SMALL_SAMPLE_CASES == 30
    assert (a.small_sample, b.small_sample, c.small_sample) == (False, True, True)
    # And the rule is written in the card next to the figures
    assert "Wilson" in (report.uncertainty or "")
    assert "30" in (report.uncertainty or "")


def test_given_a_group_of_78_with_16_defaulters_then_its_true_positive_rate_is_flagged_as_uncertain() -> None:
    # Given the committed card's "50+" band: 78 rows, 16 defaulters of whom 14 declined
    y = np.array([1] * 16 + [0] * 62 + [1] * 100 + [0] * 100)
    declined = np.array([True] * 14 + [False] * 2 + [False] * 62 + [True] * 80 + [False] * 120)
    groups = pd.Series(["50+"] * 78 + ["25-34"] * 200)
    report = fairness.fairness_for_attribute("person_age", groups, y, declined, "holdout rows")
    older = _group(report, "50+")
    # Then its rate of 0.875 comes with an interval some 0.3 wide, and the group is flagged
    assert older.true_positive_rate == pytest.approx(0.875)
    assert older.true_positive_rate_interval.upper - older.true_positive_rate_interval.lower > 0.25
    assert older.small_sample is True
    assert _group(report, "25-34").small_sample is False


# --- Bootstrap of the holdout metrics ------------------------------------------------------------------


def test_given_scores_with_ties_then_the_rank_auc_is_sklearns() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 500)
    scores = rng.integers(0, 8, 500) / 8 + 0.1 * y  # many ties, some signal
    assert metrics.rank_auc(scores[y == 1], scores[y == 0]) == pytest.approx(
        roc_auc_score(y, scores), abs=1e-12
    )


def _scored(positives: int, negatives: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.array([1] * positives + [0] * negatives)
    probability = 1 / (1 + np.exp(-(rng.normal(size=len(y)) + 1.5 * y - 1.5)))
    return y, probability


def test_given_a_holdout_then_the_bootstrap_intervals_bracket_the_metrics_and_repeat_with_the_seed() -> None:
    y, probability = _scored(150, 600)
    first = metrics.bootstrap_intervals(y, probability, resamples=300, seed=7)
    # Then the intervals hold the holdout's own ROC AUC and Brier
    assert first.roc_auc.lower < roc_auc_score(y, probability) < first.roc_auc.upper
    assert first.brier.lower < brier_score_loss(y, probability) < first.brier.upper
    # And the card says how they were made
    assert (first.resamples, first.seed, first.confidence) == (300, 7, 0.95)
    assert "stratified" in first.method
    # And the same seed gives the same intervals, another seed others
    assert metrics.bootstrap_intervals(y, probability, resamples=300, seed=7) == first
    assert metrics.bootstrap_intervals(y, probability, resamples=300, seed=8) != first


def test_given_one_positive_then_every_resample_keeps_it_and_the_interval_is_defined() -> None:
    # Given a holdout with a single defaulter: a plain bootstrap leaves it out of ~37% of resamples,
    # where ROC AUC is undefined; a stratified one keeps the class counts of the holdout
    y, probability = _scored(1, 80)
    uncertainty = metrics.bootstrap_intervals(y, probability, resamples=200, seed=1)
    assert math.isfinite(uncertainty.roc_auc.lower)
    assert math.isfinite(uncertainty.roc_auc.upper)
    assert 0.0 <= uncertainty.roc_auc.lower <= uncertainty.roc_auc.upper <= 1.0


def test_given_few_positives_then_the_auc_interval_is_wider_than_with_many() -> None:
    # The width shrinks about as 1/sqrt(positives): 10 against 300 positives, ~5x (2.6x-7.6x by seed)
    few = metrics.bootstrap_intervals(*_scored(10, 300), resamples=300, seed=42)
    many = metrics.bootstrap_intervals(*_scored(300, 1200), resamples=300, seed=42)
    assert few.roc_auc.upper - few.roc_auc.lower > 2 * (many.roc_auc.upper - many.roc_auc.lower)


def test_given_perfectly_separated_scores_then_the_auc_interval_is_one_point() -> None:
    y = np.array([0] * 50 + [1] * 50)
    probability = np.linspace(0.01, 0.99, 100)
    uncertainty = metrics.bootstrap_intervals(y, probability, resamples=100, seed=0)
    assert (uncertainty.roc_auc.lower, uncertainty.roc_auc.upper) == (1.0, 1.0)


def test_given_too_few_resamples_then_the_training_config_refuses_them() -> None:
    with pytest.raises(ValueError, match="bootstrap_resamples"):
        pipeline.TrainingConfig(bootstrap_resamples=10)


# --- The card a training run writes ---------------------------------------------------------------------


TOY_SPEC = {
    "name": "toy_uncertainty",
    "target": "default",
    "protected": ["region"],
    "features": {
        "income": {"type": "number", "minimum": 0, "maximum": 1e7, "reason": "Low income"},
        "grade": {"type": "category", "reason": "Weak grade"},
    },
}


@pytest.fixture(scope="module")
def toy_card(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModelCard, pd.DataFrame]:
    # Given a small table (400 rows, holdout 80) with a protected region, trained quickly
    folder = tmp_path_factory.mktemp("toy_uncertainty")
    rng = np.random.default_rng(11)
    rows = 400
    income = rng.uniform(10_000, 120_000, rows)
    grade = rng.choice(["A", "B", "C"], rows)
    risk = 1.0 - income / 40_000 + np.where(grade == "C", 1.0, 0.0)
    default = (rng.uniform(size=rows) < 1 / (1 + np.exp(-risk))).astype(int)
    region = rng.choice(["north", "south", "west"], rows, p=[0.6, 0.3, 0.1])
    table = pd.DataFrame({"income": income.round(2), "grade": grade, "region": region, "default": default})
    table.to_csv(folder / "toy.csv", index=False)
    (folder / "spec.json").write_text(json.dumps(TOY_SPEC))
    dataset = load_dataset("toy_uncertainty", f"files:{folder / 'toy.csv'}", folder / "spec.json")
    config = pipeline.TrainingConfig(candidates=["logistic_regression"], n_jobs=1, seed=5)
    outcome = pipeline.train(dataset, config)
    return outcome.card, pipeline.split_holdout(dataset, config).holdout


def test_given_a_training_run_then_the_card_holds_the_holdout_counts_and_metric_intervals(
    toy_card: tuple[ModelCard, pd.DataFrame],
) -> None:
    card, holdout = toy_card
    # Then the card counts the holdout's defaulters and repayers
    positives = int(holdout["default"].sum())
    assert (card.data.holdout_positives, card.data.holdout_negatives) == (positives, len(holdout) - positives)
    # And the champion's ROC AUC and Brier come with bootstrap intervals around them, seeded by the config
    uncertainty = card.holdout_uncertainty
    assert uncertainty is not None
    assert uncertainty.seed == 5
    assert uncertainty.resamples == pipeline.TrainingConfig().bootstrap_resamples
    assert uncertainty.roc_auc.lower <= card.holdout_metrics.roc_auc <= uncertainty.roc_auc.upper
    assert uncertainty.brier.lower <= card.holdout_metrics.brier <= uncertainty.brier.upper
    # And the fairness groups carry their counts, intervals and flags; counts add up to the holdout
    (region,) = card.fairness
    assert sum(g.count for g in region.groups) == len(holdout)
    assert sum(g.defaulters or 0 for g in region.groups) == positives
    assert all(g.count == (g.defaulters or 0) + (g.repayers or 0) for g in region.groups)
    assert all(g.small_sample is not None for g in region.groups)
    assert any(g.small_sample for g in region.groups)  # "west": ~8 rows of 80
    # And the card survives its JSON form
    assert ModelCard.model_validate_json(card.model_dump_json()) == card


# --- Card schema: the new fields are optional -----------------------------------------------------------


_UNCERTAINTY_GROUP_FIELDS = (
    "defaulters",
    "repayers",
    "approval_rate_interval",
    "default_rate_interval",
    "true_positive_rate_interval",
    "good_applicant_approval_rate_interval",
    "small_sample",
)


def _card_written_before_uncertainty() -> ModelCard:
    """The committed card as cards were written before the uncertainty figures existed."""
    raw = json.loads(COMMITTED_CARD.read_text())
    raw.pop("holdout_uncertainty")
    raw["data"].pop("holdout_positives")
    raw["data"].pop("holdout_negatives")
    for attribute in raw["fairness"]:
        attribute.pop("uncertainty")
        attribute.pop("comparison_intervals", None)
        for group in attribute["groups"]:
            for name in _UNCERTAINTY_GROUP_FIELDS:
                group.pop(name)
    return ModelCard.model_validate(raw)


def test_given_a_card_written_before_the_uncertainty_figures_then_it_loads_with_them_absent() -> None:
    card = _card_written_before_uncertainty()
    assert card.holdout_uncertainty is None
    assert (card.data.holdout_positives, card.data.holdout_negatives) == (None, None)
    group = card.fairness[0].groups[0]
    assert (group.defaulters, group.small_sample, group.true_positive_rate_interval) == (None, None, None)


def test_given_the_committed_card_then_it_carries_the_uncertainty_the_readme_quotes() -> None:
    card = ModelCard.model_validate_json(COMMITTED_CARD.read_text())
    assert (card.data.holdout_positives, card.data.holdout_negatives) == (1398, 4991)
    assert card.data.rows_holdout == 1398 + 4991
    uncertainty = card.holdout_uncertainty
    assert uncertainty is not None
    assert uncertainty.roc_auc.lower < card.holdout_metrics.roc_auc < uncertainty.roc_auc.upper
    assert uncertainty.brier.lower < card.holdout_metrics.brier < uncertainty.brier.upper
    (oldest,) = [group for group in card.fairness[0].groups if group.group == "50+"]
    assert (oldest.count, oldest.defaulters, oldest.repayers, oldest.small_sample) == (62, 10, 52, True)
    interval = oldest.true_positive_rate_interval
    assert interval is not None
    assert (round(interval.lower, 3), round(interval.upper, 3)) == (0.397, 0.892)


def test_given_an_interval_whose_bounds_are_reversed_then_the_card_refuses_it() -> None:
    with pytest.raises(ValueError, match="lower"):
        card_schema.Interval(lower=0.9, upper=0.8)


# --- The gate: a minimum of holdout positives and negatives ------------------------------------------------


def _card(
    version: str, roc_auc: float, brier: float, positives: int | None = None, negatives: int | None = None
) -> dict[str, Any]:
    data: dict[str, Any] = {"sha256": "data-1", "holdout": "out-of-time: latest 20%"}
    if positives is not None:
        data["holdout_positives"] = positives
    if negatives is not None:
        data["holdout_negatives"] = negatives
    return {
        "model_name": "berka-default-risk",
        "model_version": version,
        "dataset": "berka",
        "onnx": {"sha256": "0" * 64},
        "holdout_metrics": {"roc_auc": roc_auc, "brier": brier},
        "parity": {"passed": True},
        "data": data,
    }


def test_given_a_better_candidate_on_two_defaults_then_the_gate_refuses_it_naming_the_counts() -> None:
    # Given the berka case: 78 holdout loans of which 2 defaulted, and better-looking metrics
    decision = gate(_card("v2", 0.95, 0.02, 2, 76), _card("v1", 0.80, 0.09, 2, 76))
    assert not decision.passed
    refusal = decision.reasons[0]
    assert "2 positives" in refusal
    assert "76 negatives" in refusal
    assert "at least 30 positives" in refusal


def test_given_the_registered_champion_gated_again_then_too_few_cases_replace_nothing_and_pass() -> None:
    # Given a loop rerun whose candidate is the champion's own version (content-addressed, same model)
    decision = gate(_card("v1", 0.95, 0.02, 2, 76), _card("v1", 0.95, 0.02, 2, 76))
    assert decision.passed
    assert any("2 positives" in reason and "champion itself" in reason for reason in decision.reasons)


def test_given_too_few_negatives_then_the_gate_refuses_too() -> None:
    decision = gate(_card("v2", 0.95, 0.02, 500, 12), _card("v1", 0.80, 0.09, 500, 12))
    assert not decision.passed
    assert any("12 negatives" in reason for reason in decision.reasons)


def test_given_enough_cases_then_the_gate_compares_metrics_as_before() -> None:
    decision = gate(_card("v2", 0.95, 0.02, 30, 30), _card("v1", 0.80, 0.09, 30, 30))
    assert decision.passed
    assert any("30 positives and 30 negatives" in reason for reason in decision.reasons)


def test_given_a_lower_minimum_in_the_rule_then_it_is_the_one_applied() -> None:
    rule = GateRule(min_holdout_positives=2, min_holdout_negatives=2)
    assert gate(_card("v2", 0.95, 0.02, 2, 76), _card("v1", 0.80, 0.09, 2, 76), rule).passed
    assert registry.DEFAULT_MIN_HOLDOUT_POSITIVES == registry.DEFAULT_MIN_HOLDOUT_NEGATIVES == 30


def test_given_a_card_without_counts_then_the_gate_decides_as_before_and_says_they_were_unavailable() -> None:
    # Given cards written before the counts existed (as every registered card so far)
    decision = gate(_card("v2", 0.95, 0.02), _card("v1", 0.80, 0.09))
    assert decision.passed
    assert any("counts unavailable" in reason for reason in decision.reasons)
    # And a worse one still fails on its metrics
    assert not gate(_card("v2", 0.70, 0.02), _card("v1", 0.80, 0.09)).passed
    # And counts written as null (an older card loaded and written again) read as unavailable too
    nulls = _card("v2", 0.95, 0.02)
    nulls["data"].update(holdout_positives=None, holdout_negatives=None)
    assert gate(nulls, _card("v1", 0.80, 0.09)).passed


def test_given_no_champion_then_too_few_cases_are_noted_but_the_first_version_may_register() -> None:
    decision = gate(_card("v1", 0.95, 0.02, 2, 76), None)
    assert decision.passed
    assert any("2 positives" in reason and "no champion" in reason for reason in decision.reasons)


@pytest.mark.parametrize("count", [-1, 2.5, True, "2"])
def test_given_a_malformed_count_then_the_gate_fails_naming_the_key(count: Any) -> None:
    candidate = _card("v2", 0.95, 0.02, 40, 76)
    candidate["data"]["holdout_positives"] = count
    with pytest.raises(RegistryError, match=r"data\.holdout_positives"):
        gate(candidate, _card("v1", 0.80, 0.09, 40, 76))


def test_given_a_minimum_below_zero_then_the_rule_is_refused() -> None:
    with pytest.raises(ValueError, match="min_holdout_positives"):
        GateRule(min_holdout_positives=-1)


# --- python -m training show --------------------------------------------------------------------------


def _committed() -> ModelCard:
    return ModelCard.model_validate_json(COMMITTED_CARD.read_text())


def test_given_a_card_without_uncertainty_then_show_says_so_and_warns_of_nothing() -> None:
    summary = cli.card_summary(_card_written_before_uncertainty())
    assert "WARNING" not in summary
    assert "95% CI" not in summary
    # The absence is said, so an older card's bare figures are not read as certain
    assert "uncertainty: not recorded in this card" in summary


def test_given_the_committed_card_then_show_prints_its_intervals_and_warns_of_the_small_group() -> None:
    summary = cli.card_summary(_committed())
    assert "95% CI" in summary
    assert "uncertainty: not recorded in this card" not in summary
    # Two warnings: the small "50+" band, and the impact ratio whose interval holds 0.8 (0.784-0.957)
    warnings = [line for line in summary.splitlines() if line.startswith("WARNING")]
    assert len(warnings) == 2, warnings
    assert sum("50+" in line for line in warnings) == 1
    assert sum("four-fifths rule" in line and "0.784-0.957" in line for line in warnings) == 1


def test_given_intervals_and_small_groups_then_show_prints_them_compactly_with_warnings() -> None:
    # Given the committed card with the new figures filled in: a holdout of 2 positives and a small group
    card = _committed()
    interval = card_schema.Interval
    uncertainty = card_schema.HoldoutUncertainty(
        method="stratified bootstrap, percentile",
        resamples=500,
        seed=42,
        confidence=0.95,
        roc_auc=interval(lower=0.9401, upper=0.9569),
        brier=interval(lower=0.0488, upper=0.0553),
    )
    attribute = card.fairness[0]
    groups = [
        g.model_copy(
            update={
                "defaulters": 16 if g.group == "50+" else 500,
                "repayers": 62 if g.group == "50+" else 500,
                "small_sample": g.group == "50+",
                "true_positive_rate_interval": interval(lower=0.6398, upper=0.9650),
            }
        )
        for g in attribute.groups
    ]
    card = card.model_copy(
        update={
            "holdout_uncertainty": uncertainty,
            "data": card.data.model_copy(update={"holdout_positives": 2, "holdout_negatives": 76}),
            "fairness": [attribute.model_copy(update={"groups": groups})],
        }
    )
    # When it is summarised
    lines = cli.card_summary(card).splitlines()
    # Then the holdout metrics show their intervals on the champion's line
    champion = next(line for line in lines if line.startswith("champion "))
    assert "ROC AUC 0.9442 (95% CI 0.940-0.957)" in champion
    assert "Brier 0.0538 (95% CI 0.0488-0.0553)" in champion
    # And the small group's true-positive rate is shown with its interval and counts
    assert any(
        "50+" in line and "TPR 0.700 (0.640-0.965" in line and "16 defaulters" in line for line in lines
    )
    # And one warning names the holdout's counts against the gate's minimum, another the small group
    warnings = [line for line in lines if line.startswith("WARNING")]
    assert any("2 positives" in w and "76 negatives" in w and "30" in w for w in warnings)
    assert any("person_age" in w and "50+" in w for w in warnings)
