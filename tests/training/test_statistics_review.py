"""Model-risk review of the card's statistics: fairness comparisons made only over groups with enough
cases under the compared rate, the group of rows without a value never compared nor merged with a real
group, and the committed card's holdout and fairness figures recomputed independently (scikit-learn,
scipy, pandas) from the committed ONNX model on the rebuilt holdout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from numpy.typing import NDArray
from scipy.stats import ks_2samp
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score

from lambdas.scoring.card import AttributeFairness, ModelCard
from training.fairness import fairness_for_attribute

REPO_ROOT = Path(__file__).resolve().parents[2]
CHAMPION = REPO_ROOT / "model_artifacts" / "credit_risk"


def _rows(group: str, defaulters: int, repayers: int, approved_repayers: int) -> pd.DataFrame:
    """One group's rows: every defaulter declined, ``approved_repayers`` of its repayers approved."""
    return pd.DataFrame(
        {
            "group": [group] * (defaulters + repayers),
            "y": [1] * defaulters + [0] * repayers,
            "declined": [True] * defaulters
            + [False] * approved_repayers
            + [True] * (repayers - approved_repayers),
        }
    )


def _report(frame: pd.DataFrame) -> AttributeFairness:
    return fairness_for_attribute(
        "g",
        frame["group"],
        frame["y"].to_numpy(dtype=np.int64),
        frame["declined"].to_numpy(dtype=bool),
        "holdout rows",
    )


# --- Equal opportunity: compared over groups with enough repayers --------------------------------------


def test_given_a_group_of_40_rows_with_3_repayers_then_it_does_not_set_the_equal_opportunity_difference() -> (
    None
):
    # Given a: 150 repayers, 135 approved (0.90); c: 80 repayers, 64 approved (0.80); and b: 40 rows of
    # which 37 defaulted, so its good-applicant approval rate (1 of 3 repayers: 0.33) rests on 3 cases
    frame = pd.concat(
        [_rows("a", 50, 150, 135), _rows("b", 37, 3, 1), _rows("c", 20, 80, 64)], ignore_index=True
    )
    report = _report(frame)
    b = next(g for g in report.groups if g.group == "b")
    assert (b.count, b.repayers, b.small_sample) == (40, 3, True)
    # Then the equal opportunity difference compares a and c only: 0.90 - 0.80, not 0.90 - 0.33 = 0.57
    # (b's rate has a Wilson interval of 0.06-0.79: it can say nothing about a 0.1 gap)
    assert report.equal_opportunity_difference == pytest.approx(0.10)
    # And b's 40 rows still take part in the approval-rate comparisons, whose denominator is rows:
    # approvals a 135/200, b 1/40, c 64/100
    assert report.demographic_parity_difference == pytest.approx(0.675 - 0.025)
    assert report.adverse_impact_ratio == pytest.approx(0.025 / 0.675)
    assert "30 repayers" in report.evaluated_on


# --- Rows without a value of the attribute -------------------------------------------------------------


def test_given_rows_without_a_value_then_they_are_listed_but_never_the_reference_of_the_ratio() -> None:
    # Given F approved 60 of 100, M 70 of 100, and 50 rows without a gender, all approved
    frame = pd.concat(
        [_rows("F", 0, 100, 60), _rows("M", 0, 100, 70), _rows("unknown", 0, 50, 50)], ignore_index=True
    )
    frame["group"] = frame["group"].replace("unknown", None)
    report = _report(frame)
    # Then the missing rows are reported as their own group, with their rates
    missing = next(g for g in report.groups if g.group == "missing")
    assert (missing.count, missing.approval_rate) == (50, 1.0)
    # But the ratio compares the genders: 0.6 / 0.7 = 0.857 (passes the four-fifths rule), not
    # 0.6 / 1.0 = 0.6 against rows whose gender nobody knows
    assert report.adverse_impact_ratio == pytest.approx(0.6 / 0.7)
    assert report.demographic_parity_difference == pytest.approx(0.1)
    assert report.equal_opportunity_difference == pytest.approx(0.1)
    assert "'missing' group (no value) is listed, not compared" in report.evaluated_on


def test_given_only_one_group_besides_the_missing_rows_then_nothing_is_compared() -> None:
    frame = pd.concat([_rows("F", 10, 90, 80), _rows("unknown", 10, 90, 30)], ignore_index=True)
    frame["group"] = frame["group"].replace("unknown", None)
    report = _report(frame)
    assert report.adverse_impact_ratio is None
    assert report.demographic_parity_difference is None
    assert report.equal_opportunity_difference is None
    assert "not computed" in report.evaluated_on


def test_given_a_group_named_missing_then_rows_without_a_value_are_not_merged_into_it() -> None:
    # Given a text attribute holding the value "missing" for 40 rows, and 35 rows with no value at all
    frame = pd.concat(
        [_rows("missing", 10, 30, 30), _rows("unknown", 5, 30, 10), _rows("x", 10, 30, 20)], ignore_index=True
    )
    frame["group"] = frame["group"].replace("unknown", None)
    report = _report(frame)
    counts = {g.group: g.count for g in report.groups}
    # Then they stay two groups (one of 75 rows before), and only the valued groups are compared
    assert counts == {"missing": 40, "(missing)": 35, "x": 40}
    assert report.adverse_impact_ratio == pytest.approx(0.5 / 0.75)
    assert "'(missing)' group (no value)" in report.evaluated_on


# --- The committed card, recomputed independently -------------------------------------------------------


@pytest.fixture(scope="module")
def committed() -> tuple[ModelCard, pd.DataFrame, NDArray[np.float64]]:
    """The committed card, its holdout rebuilt from the data and seed, and the ONNX model's scores."""
    from training.datasets.catalog import load_dataset
    from training.features import model_input_frame
    from training.onnx_export import card_feed, onnx_probabilities
    from training.pipeline import TrainingConfig, data_fingerprint, split_holdout

    card = ModelCard.model_validate_json((CHAMPION / "model_card.json").read_text())
    dataset = load_dataset(card.dataset)
    split = split_holdout(dataset, TrainingConfig(seed=card.lineage.seed))
    assert data_fingerprint(dataset, split).sha256 == card.data.sha256  # the same rows
    feed = card_feed(card.features, model_input_frame(dataset.spec, split.holdout))
    probability = onnx_probabilities((CHAMPION / card.onnx.file).read_bytes(), feed)
    return card, split.holdout, probability


def test_given_the_committed_card_then_its_holdout_metrics_match_an_independent_computation(
    committed: tuple[ModelCard, pd.DataFrame, NDArray[np.float64]],
) -> None:
    card, holdout, probability = committed
    y = holdout[card.target].to_numpy(dtype=np.int64)
    metrics = card.holdout_metrics
    # ONNX and scikit-learn scores differ by the parity difference (1.2e-8): figures agree to ~1e-8
    assert metrics.roc_auc == pytest.approx(roc_auc_score(y, probability), abs=1e-7)
    assert metrics.pr_auc == pytest.approx(average_precision_score(y, probability), abs=1e-7)
    # KS: the two-sample Kolmogorov-Smirnov statistic of defaulters' against repayers' scores
    assert metrics.ks == pytest.approx(ks_2samp(probability[y == 1], probability[y == 0]).statistic, abs=1e-7)
    assert metrics.brier == pytest.approx(brier_score_loss(y, probability), abs=1e-7)
    assert metrics.log_loss == pytest.approx(log_loss(y, probability), abs=1e-7)
    # PR AUC is read against the base rate (21.9% of the holdout defaulted), which the card's counts give
    assert card.data.holdout_positives == int(y.sum())
    assert metrics.pr_auc > 4 * y.mean()


def test_given_the_committed_card_then_its_fairness_figures_match_an_independent_computation(
    committed: tuple[ModelCard, pd.DataFrame, NDArray[np.float64]],
) -> None:
    card, holdout, probability = committed
    (attribute,) = card.fairness
    # Bands by hand: a band includes its lower edge
    age = holdout["person_age"]
    band = pd.Series(
        np.select([age < 25, age < 35, age < 50], ["<25", "25-34", "35-49"], "50+"), index=holdout.index
    )
    frame = pd.DataFrame(
        {
            "band": band,
            "defaulted": holdout[card.target].to_numpy() == 1,
            "approved": probability < card.decision_policy.threshold,
        }
    )
    frame["approved_repayer"] = frame["approved"] & ~frame["defaulted"]
    by_band = frame.groupby("band").agg(
        count=("approved", "size"),
        approval_rate=("approved", "mean"),
        default_rate=("defaulted", "mean"),
        defaulters=("defaulted", "sum"),
        approved_repayers=("approved_repayer", "sum"),
    )
    by_band["repayers"] = by_band["count"] - by_band["defaulters"]
    by_band["good_applicant_approval_rate"] = by_band["approved_repayers"] / by_band["repayers"]
    for group in attribute.groups:
        expected = by_band.loc[group.group]
        assert (group.count, group.defaulters, group.repayers) == (
            expected["count"],
            expected["defaulters"],
            expected["repayers"],
        )
        assert group.approval_rate == pytest.approx(expected["approval_rate"])
        assert group.default_rate == pytest.approx(expected["default_rate"])
        assert group.good_applicant_approval_rate == pytest.approx(expected["good_applicant_approval_rate"])
    # Every band has >= 30 rows and >= 30 repayers: all four are compared, so the card's figures stand
    # under the per-rate rule (the 50+ band, 62 rows with 52 repayers, sets both the ratio and the
    # parity difference)
    assert (by_band["repayers"] >= 30).all()
    approval = by_band["approval_rate"]
    assert attribute.adverse_impact_ratio == pytest.approx(approval.min() / approval.max())
    assert attribute.demographic_parity_difference == pytest.approx(approval.max() - approval.min())
    good = by_band["good_applicant_approval_rate"]
    assert attribute.equal_opportunity_difference == pytest.approx(good.max() - good.min())
