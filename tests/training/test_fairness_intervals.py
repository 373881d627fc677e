"""How sure the fairness comparisons are: 95% bootstrap intervals (rows drawn within each group) of the
demographic parity difference, the equal opportunity difference and the adverse impact ratio, the share
of resamples failing the four-fifths rule, the card fields that hold them, and what ``show`` prints.

The committed champion's adverse impact ratio, 0.872, passes the four-fifths rule, but its interval on
the 6,389 holdout rows reaches below 0.8: a single figure had hidden that the pass is not settled."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from numpy.typing import NDArray

from lambdas.scoring.card import AttributeFairness, ComparisonIntervals, Interval, ModelCard
from training import cli
from training.fairness import COMPARISON_RESAMPLES, FOUR_FIFTHS, fairness_for_attribute

REPO_ROOT = Path(__file__).resolve().parents[2]
CHAMPION = REPO_ROOT / "model_artifacts" / "credit_risk"


def _rows(
    group: str | None, defaulters: int, repayers: int, approved_defaulters: int, approved_repayers: int
) -> pd.DataFrame:
    """One group's rows: ``approved_defaulters`` of its defaulters and ``approved_repayers`` of its
    repayers approved, the others declined."""
    return pd.DataFrame(
        {
            "group": [group] * (defaulters + repayers),
            "y": [1] * defaulters + [0] * repayers,
            "declined": [False] * approved_defaulters
            + [True] * (defaulters - approved_defaulters)
            + [False] * approved_repayers
            + [True] * (repayers - approved_repayers),
        }
    )


def _report(frame: pd.DataFrame, seed: int | None = 7) -> AttributeFairness:
    return fairness_for_attribute(
        "g",
        frame["group"].astype("string"),
        frame["y"].to_numpy(dtype=np.int64),
        frame["declined"].to_numpy(dtype=bool),
        "holdout rows",
        seed=seed,
    )


def _intervals(report: AttributeFairness) -> ComparisonIntervals:
    assert report.comparison_intervals is not None
    return report.comparison_intervals


def _three_groups(scale: int = 1) -> pd.DataFrame:
    """a: approval 0.80, b: 0.70, c: 0.60 (ratio 0.75); good-applicant approval 0.90, 0.80, 0.75."""
    return pd.concat(
        [
            _rows("a", 40 * scale, 160 * scale, 16 * scale, 144 * scale),
            _rows("b", 30 * scale, 120 * scale, 9 * scale, 96 * scale),
            _rows("c", 20 * scale, 80 * scale, 0, 60 * scale),
        ],
        ignore_index=True,
    )


def _width(interval: Interval | None) -> float:
    assert interval is not None
    return interval.upper - interval.lower


# --- The intervals --------------------------------------------------------------------------------------


def test_given_groups_then_each_comparison_has_an_interval_around_its_figure() -> None:
    report = _report(_three_groups())
    assert report.demographic_parity_difference == pytest.approx(0.2)
    assert report.equal_opportunity_difference == pytest.approx(0.15)
    assert report.adverse_impact_ratio == pytest.approx(0.75)
    intervals = _intervals(report)
    for figure, interval in (
        (report.demographic_parity_difference, intervals.demographic_parity_difference),
        (report.equal_opportunity_difference, intervals.equal_opportunity_difference),
        (report.adverse_impact_ratio, intervals.adverse_impact_ratio),
    ):
        assert figure is not None
        assert interval is not None
        assert interval.lower < figure < interval.upper
    # The ratio 0.75 fails the four-fifths rule in most resamples, not all: 450 rows do not settle it
    below = intervals.adverse_impact_ratio_below_four_fifths
    assert below is not None
    assert 0.5 < below < 1.0
    assert (intervals.resamples, intervals.seed, intervals.confidence) == (COMPARISON_RESAMPLES, 7, 0.95)
    assert "within groups" in intervals.method


def test_given_the_same_data_and_seed_then_the_intervals_repeat_and_another_seed_moves_them() -> None:
    frame = _three_groups()
    assert _report(frame, seed=42) == _report(frame, seed=42)
    assert _intervals(_report(frame, seed=42)) != _intervals(_report(frame, seed=43))


def test_given_no_seed_then_no_intervals_are_made_and_the_figures_are_unchanged() -> None:
    frame = _three_groups()
    without = _report(frame, seed=None)
    assert without.comparison_intervals is None
    assert without == _report(frame).model_copy(update={"comparison_intervals": None})


def test_given_smaller_groups_with_the_same_rates_then_every_interval_is_wider() -> None:
    large = _intervals(_report(_three_groups(scale=5)))
    small = _intervals(_report(_three_groups(scale=1)))
    for name in ("demographic_parity_difference", "equal_opportunity_difference", "adverse_impact_ratio"):
        # Five times the rows: about sqrt(5) = 2.2 times narrower
        assert _width(getattr(small, name)) > 1.6 * _width(getattr(large, name)), name


# --- The same comparison rules as the figures ------------------------------------------------------------


def test_given_one_group_large_enough_then_no_figure_and_no_interval() -> None:
    frame = pd.concat([_rows("a", 40, 160, 16, 144), _rows("b", 5, 20, 1, 10)], ignore_index=True)
    report = _report(frame)
    assert (report.demographic_parity_difference, report.adverse_impact_ratio) == (None, None)
    intervals = _intervals(report)
    assert intervals.demographic_parity_difference is None
    assert intervals.equal_opportunity_difference is None
    assert intervals.adverse_impact_ratio is None
    assert intervals.adverse_impact_ratio_below_four_fifths is None


def test_given_a_group_with_few_repayers_then_equal_opportunity_has_no_interval_but_parity_has() -> None:
    # b has 40 rows (compared on approval rates) but 3 repayers (not compared on equal opportunity)
    frame = pd.concat([_rows("a", 40, 160, 16, 144), _rows("b", 37, 3, 10, 1)], ignore_index=True)
    report = _report(frame)
    assert report.equal_opportunity_difference is None
    intervals = _intervals(report)
    assert intervals.equal_opportunity_difference is None
    assert intervals.demographic_parity_difference is not None
    assert intervals.adverse_impact_ratio is not None


def test_given_no_approvals_at_all_then_the_ratio_has_no_interval_and_the_difference_is_zero() -> None:
    frame = pd.concat([_rows("a", 40, 160, 0, 0), _rows("b", 30, 120, 0, 0)], ignore_index=True)
    report = _report(frame)
    assert report.adverse_impact_ratio is None
    intervals = _intervals(report)
    assert intervals.adverse_impact_ratio is None
    assert intervals.adverse_impact_ratio_below_four_fifths is None
    assert intervals.demographic_parity_difference == Interval(lower=0.0, upper=0.0)


def test_given_rows_without_a_value_then_they_take_no_part_in_the_intervals() -> None:
    # Given the three groups, then 300 more rows without a value, all approved
    frame = _three_groups()
    with_missing = pd.concat([frame, _rows(None, 50, 250, 50, 250)], ignore_index=True)
    report = _report(with_missing)
    assert any(g.group == "missing" for g in report.groups)
    # Then the intervals are those of the three groups alone (the same draws, the same seed)
    assert _intervals(report) == _intervals(_report(frame))


# --- Against a slow reference: rows drawn with pandas --------------------------------------------------


def _reference(frame: pd.DataFrame, resamples: int, seed: int) -> dict[str, NDArray[np.float64]]:
    """Row by row: each resample draws every group's rows with replacement to the group's size, then
    pandas computes the three figures per resample over all groups (each has >= 30 rows and repayers)."""
    rng = np.random.default_rng(seed)
    parts = []
    for _, rows in frame.groupby("group"):
        picks = rng.integers(0, len(rows), size=(resamples, len(rows)))
        parts.append(rows.iloc[picks.ravel()].assign(resample=np.repeat(np.arange(resamples), len(rows))))
    drawn = pd.concat(parts, ignore_index=True)
    drawn["approved"] = ~drawn["declined"]
    approval = drawn.groupby(["resample", "group"])["approved"].mean().unstack()
    good = drawn[drawn["y"] == 0].groupby(["resample", "group"])["approved"].mean().unstack()
    return {
        "parity": (approval.max(axis=1) - approval.min(axis=1)).to_numpy(),
        "opportunity": (good.max(axis=1) - good.min(axis=1)).to_numpy(),
        "ratio": (approval.min(axis=1) / approval.max(axis=1)).to_numpy(),
    }


def test_given_a_row_by_row_pandas_bootstrap_then_the_intervals_agree_within_monte_carlo_error() -> None:
    # Given three groups whose ratio (0.60 / 0.72 = 0.83) is near the four-fifths line
    frame = pd.concat(
        [
            _rows("a", 50, 250, 10, 206),
            _rows("b", 20, 100, 2, 76),
            _rows("c", 15, 45, 0, 36),
        ],
        ignore_index=True,
    )
    report = fairness_for_attribute(
        "g",
        frame["group"].astype("string"),
        frame["y"].to_numpy(dtype=np.int64),
        frame["declined"].to_numpy(dtype=bool),
        "holdout rows",
        seed=3,
        resamples=8000,
    )
    assert report.adverse_impact_ratio == pytest.approx(0.6 / 0.72)
    intervals = _intervals(report)
    reference = _reference(frame, resamples=4000, seed=11)
    for name, interval in (
        ("parity", intervals.demographic_parity_difference),
        ("opportunity", intervals.equal_opportunity_difference),
        ("ratio", intervals.adverse_impact_ratio),
    ):
        assert interval is not None
        lower, upper = np.quantile(reference[name], [0.025, 0.975])
        # A 2.5% quantile of n resamples has a standard error of about 2.7 / sqrt(n) standard deviations
        # of the resampled figure (normal tails): 0.03 for 8,000, 0.043 for 4,000, 0.052 for their
        # difference, so 0.2 is about four standard errors (a 90% interval's bounds would be 0.31 off)
        tolerance = 0.2 * reference[name].std()
        assert interval.lower == pytest.approx(lower, abs=tolerance), name
        assert interval.upper == pytest.approx(upper, abs=tolerance), name
    # And the share failing the four-fifths rule: binomial standard error about 0.009 for the difference
    below = intervals.adverse_impact_ratio_below_four_fifths
    assert below == pytest.approx(float(np.mean(reference["ratio"] < FOUR_FIFTHS)), abs=0.035)


# --- The committed champion -------------------------------------------------------------------------------


def test_given_the_committed_champion_then_its_ratio_interval_holds_four_fifths_and_costs_milliseconds() -> (
    None
):
    from training.datasets.catalog import load_dataset
    from training.features import model_input_frame
    from training.onnx_export import card_feed, onnx_probabilities
    from training.pipeline import TrainingConfig, data_fingerprint, split_holdout

    # Given the committed card's holdout rebuilt from the data and seed, and the ONNX model's decisions
    card = ModelCard.model_validate_json((CHAMPION / "model_card.json").read_text())
    dataset = load_dataset(card.dataset)
    split = split_holdout(dataset, TrainingConfig(seed=card.lineage.seed))
    assert data_fingerprint(dataset, split).sha256 == card.data.sha256
    feed = card_feed(card.features, model_input_frame(dataset.spec, split.holdout))
    probability = onnx_probabilities((CHAMPION / card.onnx.file).read_bytes(), feed)
    age = split.holdout["person_age"]
    bands = pd.Series(
        np.select([age < 25, age < 35, age < 50], ["<25", "25-34", "35-49"], "50+"), dtype="string"
    )
    arguments = (
        "person_age",
        bands,
        split.holdout[card.target].to_numpy(dtype=np.int64),
        probability >= card.decision_policy.threshold,
        "holdout rows",
    )
    # When the fairness figures are computed with and without the intervals
    started = time.perf_counter()
    plain = fairness_for_attribute(*arguments)
    middle = time.perf_counter()
    report = fairness_for_attribute(*arguments, seed=card.lineage.seed)
    added = (time.perf_counter() - middle) - (middle - started)
    # Then the figures are the card's, and the ratio's interval (about 0.78-0.96) holds 0.8
    assert report.adverse_impact_ratio == pytest.approx(card.fairness[0].adverse_impact_ratio)
    assert report.adverse_impact_ratio == pytest.approx(0.872, abs=5e-4)
    intervals = _intervals(report)
    ratio = intervals.adverse_impact_ratio
    assert ratio is not None
    assert ratio.lower < FOUR_FIFTHS < ratio.upper
    assert ratio.lower == pytest.approx(0.783, abs=0.02)
    assert ratio.upper == pytest.approx(0.962, abs=0.02)
    parity = intervals.demographic_parity_difference
    assert parity is not None
    assert parity.lower == pytest.approx(0.028, abs=0.02)
    assert parity.upper == pytest.approx(0.199, abs=0.02)
    below = intervals.adverse_impact_ratio_below_four_fifths
    assert below is not None
    assert 0.0 < below < 0.2
    # And everything else is what it was without them
    assert report.model_copy(update={"comparison_intervals": None}) == plain
    # And they cost milliseconds (a generous bound: they add ~5 ms on a laptop)
    assert added < 0.5


# --- The card and show -----------------------------------------------------------------------------------


def _committed_raw() -> dict[str, object]:
    raw: dict[str, object] = json.loads((CHAMPION / "model_card.json").read_text())
    return raw


def test_given_a_card_written_before_the_comparison_intervals_then_it_loads_without_them() -> None:
    raw = _committed_raw()
    for attribute in raw["fairness"]:  # type: ignore[attr-defined]
        attribute.pop("comparison_intervals", None)
    card = ModelCard.model_validate(raw)
    assert card.fairness[0].comparison_intervals is None
    # And show prints the figures as before: no interval, no four-fifths warning
    summary = cli.card_summary(card)
    assert "comparison intervals" not in summary
    assert "four-fifths" not in summary


def _card_with(intervals: ComparisonIntervals) -> ModelCard:
    card = ModelCard.model_validate(_committed_raw())
    attribute = card.fairness[0].model_copy(update={"comparison_intervals": intervals})
    return card.model_copy(update={"fairness": [attribute]})


def _intervals_with_ratio(lower: float, upper: float, below: float) -> ComparisonIntervals:
    return ComparisonIntervals(
        method="bootstrap within groups",
        resamples=2000,
        seed=42,
        confidence=0.95,
        demographic_parity_difference=Interval(lower=0.028, upper=0.199),
        equal_opportunity_difference=Interval(lower=0.015, upper=0.102),
        adverse_impact_ratio=Interval(lower=lower, upper=upper),
        adverse_impact_ratio_below_four_fifths=below,
    )


def test_given_a_ratio_interval_holding_four_fifths_then_show_prints_it_and_warns() -> None:
    card = _card_with(_intervals_with_ratio(0.783, 0.962, 0.065))
    # The card round-trips through JSON with the new fields
    assert ModelCard.model_validate_json(card.model_dump_json()) == card
    lines = cli.card_summary(card).splitlines()
    fairness = next(line for line in lines if line.startswith("fairness person_age"))
    assert "demographic parity diff 0.105 (0.028-0.199)" in fairness
    assert "equal opportunity diff 0.036 (0.015-0.102)" in fairness
    assert "adverse impact ratio 0.872 (0.783-0.962)" in fairness
    assert any(
        "2000 resamples, seed 42" in line and "below 0.8 in 6.5% of resamples" in line for line in lines
    )
    (warning,) = [line for line in lines if line.startswith("WARNING") and "four-fifths" in line]
    assert "person_age" in warning
    assert "0.783-0.962" in warning
    assert "contains 0.8" in warning


def test_given_a_ratio_interval_wholly_above_four_fifths_then_show_does_not_warn_of_it() -> None:
    lines = cli.card_summary(_card_with(_intervals_with_ratio(0.83, 0.96, 0.0))).splitlines()
    assert any("adverse impact ratio 0.872 (0.830-0.960)" in line for line in lines)
    assert not [line for line in lines if line.startswith("WARNING") and "four-fifths" in line]


def test_given_a_share_of_resamples_outside_zero_to_one_then_the_card_refuses_it() -> None:
    with pytest.raises(ValueError, match="adverse_impact_ratio_below_four_fifths"):
        _intervals_with_ratio(0.78, 0.96, 1.5)
