"""Methodology review: the out-of-time split, calibration across CV repeats, the cost threshold,
fairness bands and small groups, and drift reference bins, each on small hand-checkable data; then
(second review) what the holdout may and may not reach, and the champion comparison the gate reads."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from numpy.typing import NDArray
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.metrics import brier_score_loss
from sklearn.model_selection import RepeatedStratifiedKFold
from sklearn.pipeline import Pipeline

from training.calibration import cross_fitted_sigmoid, decide_calibration, fit_sigmoid
from training.candidates import Candidate
from training.datasets.catalog import AGE_BANDS, LoadedDataset, load_dataset
from training.datasets.spec import DatasetSpec, ProtectedAttribute
from training.fairness import fairness_for_attribute
from training.pipeline import (
    TrainingConfig,
    _holdout_overlap,
    _record_texts,
    cross_validate,
    fairness_report,
    split_holdout,
    train,
    train_bundle,
)
from training.reference import numeric_reference
from training.registry import gate
from training.threshold import choose_threshold, expected_cost


def _spec(**overrides: Any) -> DatasetSpec:
    fields: dict[str, Any] = dict(
        name="toy", description="toy", target="y", positive_class="y = 1", features=()
    )
    return DatasetSpec(**{**fields, **overrides})


def _dataset(spec: DatasetSpec, frame: pd.DataFrame) -> LoadedDataset:
    return LoadedDataset(spec=spec, frame=frame, cleaning={}, source="test", rows_raw=len(frame))


# --- Out-of-time split -------------------------------------------------------------------------


def test_given_rows_sharing_the_boundary_date_when_split_then_no_date_is_on_both_sides() -> None:
    # Given 10 loans, the 8th and 9th on the same day: a plain 80/20 cut falls between them
    dates = pd.to_datetime(
        [
            "2020-01-01",
            "2020-01-02",
            "2020-01-03",
            "2020-01-04",
            "2020-01-05",
            "2020-01-06",
            "2020-01-07",
            "2020-01-09",
            "2020-01-09",
            "2020-01-10",
        ]
    )
    frame = pd.DataFrame({"date": dates, "y": [0, 1] * 5})
    split = split_holdout(_dataset(_spec(time_column="date"), frame), TrainingConfig())
    # Then every loan of the boundary day is in the holdout, which starts strictly after the training rows
    assert split.train["date"].max() < split.holdout["date"].min()
    assert len(split.train) + len(split.holdout) == 10
    assert "2020-01-09" in split.description


def test_given_dates_as_text_when_split_out_of_time_then_the_holdout_is_the_latest_by_date() -> None:
    # Given US-style date texts, whose character order is not their date order (01/.../2021 < 12/.../2020)
    dates = [f"{month:02d}/15/2020" for month in range(1, 13)] + ["01/15/2021", "02/15/2021", "03/15/2021"]
    frame = pd.DataFrame({"date": dates, "y": [0, 1, 0] * 5})
    split = split_holdout(_dataset(_spec(time_column="date"), frame), TrainingConfig())
    # Then the holdout holds the 3 latest loans, the 2021 ones
    assert sorted(split.holdout["date"]) == ["01/15/2021", "02/15/2021", "03/15/2021"]


def test_given_a_loan_without_a_date_when_split_out_of_time_then_it_is_refused_by_name() -> None:
    frame = pd.DataFrame(
        {"date": pd.to_datetime(pd.Series(["2020-01-01", None, "2020-01-03"] * 4)), "y": [0, 1, 0] * 4}
    )
    with pytest.raises(ValueError, match=r"'date': 4 rows without a date"):
        split_holdout(_dataset(_spec(time_column="date"), frame), TrainingConfig())


# --- Calibration across repeated CV ------------------------------------------------------------

_SCRIPT = {"fits": 0.0, "slope": 1.0, "intercept": 0.0}


class _ScriptedModel(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    """Scores column "z" overconfidently (logit x3) in the first repeat's 5 folds and by the sample's
    own Platt map (nothing left to calibrate) in later repeats'. Fits run in order (n_jobs=1)."""

    def fit(self, x: pd.DataFrame, y: NDArray[np.int_]) -> _ScriptedModel:
        self.classes_ = np.array([0, 1])
        first_repeat = _SCRIPT["fits"] < 5
        self.slope_ = 3.0 if first_repeat else _SCRIPT["slope"]
        self.intercept_ = 0.0 if first_repeat else _SCRIPT["intercept"]
        _SCRIPT["fits"] += 1
        return self

    def predict_proba(self, x: pd.DataFrame) -> NDArray[np.float64]:
        p = 1 / (1 + np.exp(-(self.slope_ * x["z"].to_numpy() + self.intercept_)))
        return np.column_stack([1 - p, p])


def test_given_sigmoid_chosen_on_the_first_repeat_then_every_repeat_is_calibrated() -> None:
    # Given a model that needs calibration in the first repeat only (later repeats are already calibrated)
    rng = np.random.default_rng(3)
    z = rng.normal(0, 1.5, 1500)
    y = (rng.uniform(size=z.size) < 1 / (1 + np.exp(-z))).astype(np.int64)
    x = pd.DataFrame({"z": z})
    platt = fit_sigmoid(1 / (1 + np.exp(-z)), y)
    settled = platt.apply(1 / (1 + np.exp(-z)))
    config = TrainingConfig(seed=7, repeats=3, n_jobs=1)
    # (on their own, the later repeats would not be calibrated)
    assert not decide_calibration(settled, y, config.seed)[0].use_sigmoid
    _SCRIPT.update(fits=0.0, slope=platt.slope, intercept=platt.intercept)
    candidate = Candidate(
        "scripted", "test", lambda spec, rows, seed: Pipeline([("model", _ScriptedModel())])
    )
    result = cross_validate(candidate, _spec(), x, y, config)
    # Then sigmoid is chosen, and the calibrated CV figures are those of every repeat calibrated
    assert result.calibrated
    oof = [cross_fitted_sigmoid(1 / (1 + np.exp(-3 * z)), y, config.seed)] + [
        cross_fitted_sigmoid(settled, y, config.seed)
    ] * 2
    splits = RepeatedStratifiedKFold(n_splits=5, n_repeats=3, random_state=config.seed).split(x, y)
    briers = [brier_score_loss(y[rows], oof[index // 5][rows]) for index, (_, rows) in enumerate(splits)]
    assert result.cv.mean.brier == pytest.approx(np.mean(briers), abs=1e-12)


# --- Cost threshold ----------------------------------------------------------------------------


def test_given_the_best_cut_between_adjacent_floats_then_the_threshold_makes_that_cut() -> None:
    # Given a defaulter at 0.3 and a good applicant one float below it: declining only the first is free
    y = np.array([1, 0])
    p = np.array([0.3, np.nextafter(0.3, 0.0)])
    choice = choose_threshold(y, p, cost_fn=5, cost_fp=1)
    assert choice.expected_cost == 0.0
    # Then the threshold declines exactly that row, so the stated cost is what the threshold gives
    assert list(p >= choice.threshold) == [True, False]
    assert expected_cost(y, p, choice.threshold, 5, 1) == choice.expected_cost


# --- Fairness ----------------------------------------------------------------------------------


def test_given_age_bands_then_edges_go_up_a_band_and_missing_ages_stay_missing() -> None:
    ages = [18.0, 24.9, 25.0, 34.0, 35.0, 49.9, 50.0, 80.0, np.nan]
    holdout = pd.DataFrame({"person_age": ages, "y": [0, 1] * 4 + [0]})
    (report,) = fairness_report(_spec(protected=AGE_BANDS), holdout, np.zeros(len(ages)), 0.5)
    counts = {g.group: g.count for g in report.groups}
    assert counts == {"<25": 2, "25-34": 2, "35-49": 2, "50+": 2, "missing": 1}


def test_given_missing_ages_as_nullable_integers_when_reported_then_they_are_missing() -> None:
    holdout = pd.DataFrame({"person_age": pd.array([30, None], dtype="Int64"), "y": [0, 1]})
    (report,) = fairness_report(_spec(protected=AGE_BANDS), holdout, np.zeros(2), 0.5)
    assert {g.group for g in report.groups} == {"25-34", "missing"}


@pytest.mark.parametrize(
    ("bands", "labels"),
    [((35.0, 25.0), ("a", "b", "c")), ((25.0, 35.0), ("<25", "25+")), ((25.0,), ("a", "b", "c"))],
)
def test_given_unusable_bands_when_reported_then_refused(
    bands: tuple[float, ...], labels: tuple[str, ...]
) -> None:
    attribute = ProtectedAttribute("person_age", bands=bands, band_labels=labels)
    holdout = pd.DataFrame({"person_age": [20.0, 30.0, 40.0], "y": [0, 1, 0]})
    with pytest.raises(ValueError, match="person_age"):
        fairness_report(_spec(protected=(attribute,)), holdout, np.zeros(3), 0.5)


def test_given_fewer_than_two_large_groups_then_the_card_says_differences_not_computed() -> None:
    # Given 40 rows in one group and 5 in the other: no difference can be measured
    groups = pd.Series(["a"] * 40 + ["b"] * 5)
    y = np.array([0, 1] * 20 + [1] * 5)
    declined = np.array([False] * 40 + [True] * 5)
    report = fairness_for_attribute("g", groups, y, declined, "holdout rows")
    assert report.demographic_parity_difference is None
    assert report.equal_opportunity_difference is None
    assert report.adverse_impact_ratio is None
    assert "not computed" in report.evaluated_on
    # And with two large groups the text says nothing of the kind
    both = fairness_for_attribute(
        "g", pd.Series(["a", "b"] * 30), np.array([0, 1] * 30), np.zeros(60, bool), "x"
    )
    assert "not computed" not in both.evaluated_on


# --- Drift reference bins ----------------------------------------------------------------------


def _bin_shares(reference_edges: list[float], values: NDArray[np.float64]) -> NDArray[np.float64]:
    counts = np.bincount(
        np.searchsorted(reference_edges, values, side="right"), minlength=len(reference_edges) + 1
    )
    return np.asarray(counts / counts.sum(), dtype=np.float64)


def test_given_a_boolean_feature_when_referenced_then_its_two_values_get_their_own_bins() -> None:
    # Given 95% false, 5% true (every decile is 0: quantile edges alone give no cut point)
    values = np.array([0.0] * 95 + [1.0] * 5)
    reference = numeric_reference(values)
    # Then a shift to 70% true moves the binned shares (one bin for both values would hide it); the
    # outer bins, below false and above true, are empty
    assert reference.proportions == pytest.approx([0.0, 0.95, 0.05, 0.0])
    shifted = np.array([0.0] * 30 + [1.0] * 70)
    assert _bin_shares(reference.bin_edges, shifted) == pytest.approx([0.0, 0.3, 0.7, 0.0])


def test_given_a_mass_at_the_minimum_of_many_values_when_referenced_then_it_keeps_its_bin() -> None:
    # Given 92% zeros and 80 different positive amounts
    values = np.concatenate([np.zeros(920), np.arange(1.0, 81.0).repeat(1)])
    reference = numeric_reference(values)
    # Then the zeros fill the first bin alone
    assert reference.proportions[0] == pytest.approx(920 / 1000)
    assert len(reference.proportions) >= 2


def test_given_a_mass_at_the_maximum_when_referenced_then_it_keeps_its_bin() -> None:
    # Given counts 0..3 with a quarter of the rows at the maximum, 3
    values = np.array([0.0] * 25 + [1.0] * 25 + [2.0] * 25 + [3.0] * 25)
    reference = numeric_reference(values)
    assert reference.proportions == pytest.approx([0.0, 0.25, 0.25, 0.25, 0.25, 0.0])


@pytest.mark.parametrize("values", [[5.0] * 100, [0.0] * 50 + [1.0] * 30 + [2.0] * 20])
def test_given_few_values_when_serving_moves_beyond_them_then_the_shift_shows_in_the_bins(
    values: list[float],
) -> None:
    # Given a feature with a single value, or small counts 0..2, in training
    reference = numeric_reference(np.array(values))
    # When every served value is above the largest, or below the smallest, training saw
    for served in (max(values) + 495.0, min(values) - 3.0):
        shares = _bin_shares(reference.bin_edges, np.full(100, served))
        # Then they fill a bin that training left empty, which the PSI of the feature sees
        (filled,) = np.flatnonzero(shares)
        assert reference.proportions[filled] == 0.0


def test_given_continuous_values_when_referenced_then_bins_are_deciles() -> None:
    values = np.random.default_rng(0).normal(size=1000)
    reference = numeric_reference(values)
    assert len(reference.bin_edges) == 9
    assert reference.proportions == pytest.approx([0.1] * 10)


def test_given_a_score_of_one_when_approving_all_is_cheapest_then_the_threshold_stays_a_probability() -> None:
    # Given a repayer scored 1.0 (a forest's unanimous vote) and declining a repayer costing 10x
    y = np.array([0, 1, 0, 0])
    p = np.array([1.0, 0.9, 0.2, 0.1])
    choice = choose_threshold(y, p, cost_fn=1, cost_fp=10)
    # Then the threshold is a probability the card can hold (declining at or above it: no threshold in
    # [0, 1] approves a score of 1.0), and its stated cost is what it gives
    assert 0.0 <= choice.threshold <= 1.0
    assert expected_cost(y, p, choice.threshold, 1, 10) == pytest.approx(choice.expected_cost)


# --- What the holdout reaches (second review) --------------------------------------------------

FAST = TrainingConfig(candidates=["logistic_regression"], n_jobs=1, bootstrap_resamples=100)


def _credit_sample(rows: int, seed: int = 11) -> LoadedDataset:
    dataset = load_dataset("credit_risk")
    frame = dataset.frame.sample(rows, random_state=seed).reset_index(drop=True)
    return LoadedDataset(dataset.spec, frame, dataset.cleaning, "test", rows)


def test_given_the_holdout_labels_inverted_then_nothing_learnt_from_the_training_rows_changes() -> None:
    # Given a dated sample (out-of-time holdout: the latest 200 rows whatever their labels), and the
    # same sample with the holdout's labels inverted (which reverses any ranking by holdout ROC AUC)
    sample = _credit_sample(1000)
    spec = replace(sample.spec, time_column="applied_on")
    frame = sample.frame.assign(applied_on=pd.date_range("2020-01-01", periods=1000, freq="D"))
    inverted = frame.copy()
    inverted.loc[800:, "loan_status"] = 1 - frame["loan_status"][800:]
    # Two calibrated candidates: the champion's calibration map is in its ONNX graph
    config = replace(FAST, candidates=["logistic_regression", "random_forest"])
    first, second = (
        train(LoadedDataset(spec, f, sample.cleaning, "test", len(f)), config) for f in (frame, inverted)
    )
    # Then selection, calibration, threshold, model and drift references are the same: the holdout's
    # labels reach none of them, only the figures reported on the holdout
    assert first.onnx_bytes == second.onnx_bytes
    for part in ("champion", "decision_policy", "reference", "features", "parity"):
        assert getattr(first.card, part) == getattr(second.card, part), part
    for one, other in zip(first.card.candidates, second.card.candidates, strict=True):
        assert one.model_copy(update={"fit_seconds": 0}) == other.model_copy(update={"fit_seconds": 0})
    assert first.card.holdout_metrics != second.card.holdout_metrics


@pytest.fixture(scope="module")
def champion_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A champion trained on a 1,000-row sample with seed 42 (holdout by keyed record hash)."""
    folder = tmp_path_factory.mktemp("champion")
    train_bundle(_credit_sample(1000), folder, replace(FAST, seed=42))
    return folder


def test_given_a_champion_trained_on_the_same_rows_split_by_another_seed_then_it_is_not_scored(
    champion_bundle: Path,
) -> None:
    # Given the champion's rows split with seed 7: about 80% of this holdout was its training data
    card = train(_credit_sample(1000), replace(FAST, seed=7, champion_bundle=champion_bundle)).card
    # Then it is not scored on them (the gate then refuses to compare), and the card says why
    assert card.champion_comparison is not None
    assert card.champion_comparison.champion_metrics is None
    assert "drawn another way" in card.champion_comparison.note
    # And with its own seed the same rows are its holdout too: it is scored
    same = train(_credit_sample(1000), replace(FAST, seed=42, champion_bundle=champion_bundle)).card
    assert same.champion_comparison is not None
    assert same.champion_comparison.champion_metrics is not None


def test_given_a_champion_trained_on_fewer_rows_then_it_is_scored_on_a_holdout_it_never_saw(
    champion_bundle: Path,
) -> None:
    # Given a candidate trained on a larger sample holding the champion's 1,000 rows and 200 more
    outcome = train(_credit_sample(1200), replace(FAST, seed=42, champion_bundle=champion_bundle))
    # Then the champion is scored: the holdout rule is its own, so none of its training rows is here
    comparison = outcome.card.champion_comparison
    assert comparison is not None
    assert comparison.champion_metrics is not None
    assert "drawn by the rule its own holdout was" in comparison.note
    assert outcome.card.data.holdout == "records by keyed hash 20% (seed 42)"


def test_given_newer_rows_appended_when_split_again_then_no_champion_training_row_is_in_the_holdout() -> None:
    # Given 1,800 rows a champion was trained on, and the same rows with 200 newer ones
    sample = _credit_sample(2000)
    frame = sample.frame.assign(row_id=np.arange(2000))
    older = LoadedDataset(sample.spec, frame.iloc[:1800], sample.cleaning, "test", 1800)
    newer = LoadedDataset(sample.spec, frame, sample.cleaning, "test", 2000)
    champion_training = set(split_holdout(older, TrainingConfig()).train["row_id"])
    # When the grown data is split for the candidate
    candidate_holdout = set(split_holdout(newer, TrainingConfig()).holdout["row_id"])
    # Then none of the rows both models are compared on was the champion's training data
    assert not candidate_holdout & champion_training


def test_given_one_record_from_two_sources_then_it_lands_on_the_same_side() -> None:
    # Given the same records as CSV text gives them (int64, float64, text) and as an export may (floats
    # for integers, Parquet decimals), in another row and column order
    sample = _credit_sample(400)
    exported = sample.frame.iloc[::-1].copy()
    exported["person_income"] = exported["person_income"].astype("float64")
    exported["loan_int_rate"] = pd.Series(
        [None if pd.isna(v) else Decimal(str(v)) for v in exported["loan_int_rate"]],
        index=exported.index,
        dtype=object,
    )
    exported = exported[list(reversed(exported.columns))]
    # When each is split
    first = split_holdout(sample, TrainingConfig())
    second = split_holdout(
        LoadedDataset(sample.spec, exported, sample.cleaning, "test", 400), TrainingConfig()
    )
    # Then the same records form the holdout, about the configured fraction of them
    key = ["person_income", "person_age", "loan_amnt", "loan_grade", "loan_intent"]

    def records(frame: pd.DataFrame) -> list[tuple[float | str, ...]]:
        return sorted(map(tuple, frame[key].astype({"person_income": "float64"}).to_numpy().tolist()))

    assert records(first.holdout) == records(second.holdout)
    assert 40 <= len(first.holdout) <= 120
    assert first.description == "records by keyed hash 20% (seed 42)"


@pytest.mark.parametrize(
    ("champion", "candidate", "scored"),
    [
        # Dated rows added after the champion's boundary: the holdout starts later, no overlap
        (
            "out-of-time: latest 20% by d (from 2021-01-01 00:00:00)",
            "out-of-time: latest 20% by d (from 2021-03-01 00:00:00)",
            True,
        ),
        # Older rows backfilled moved the boundary earlier: the champion trained on some of this holdout
        (
            "out-of-time: latest 20% by d (from 2021-03-01 00:00:00)",
            "out-of-time: latest 20% by d (from 2021-01-01 00:00:00)",
            False,
        ),
        ("out-of-time: latest 20% by d (from 5.0)", "out-of-time: latest 20% by d (from 7.5)", True),
        ("out-of-time: latest 20% by d (from 7.5)", "out-of-time: latest 20% by d (from 5.0)", False),
        (
            "out-of-time: latest 20% by d (from 2021-01-01 00:00:00)",
            "out-of-time: latest 20% by e (from 2021-03-01 00:00:00)",
            False,
        ),
        ("stratified random 20% (seed 42)", "records by keyed hash 20% (seed 42)", False),
        ("records by keyed hash 20% (seed 7)", "records by keyed hash 20% (seed 42)", False),
        ("records by keyed hash 20% (seed 42)", "records by keyed hash 20% (seed 42)", True),
    ],
)
def test_given_two_holdout_rules_then_the_champion_is_scored_only_where_it_cannot_have_trained_on_them(
    champion: str, candidate: str, scored: bool
) -> None:
    assert (_holdout_overlap(champion, candidate) is None) is scored


def test_given_a_candidate_whose_training_declined_to_score_the_champion_then_the_gate_says_why() -> None:
    # Given a candidate trained on grown data, whose training did not score the champion (the champion's
    # holdout was drawn another way, so this holdout may hold its training rows)
    note = "not scored: the champion's holdout was drawn another way (stratified random 20% (seed 42); ...)"

    def card(version: str, sha: str, holdout: str) -> dict[str, Any]:
        return {
            "model_name": "credit-risk-default-risk",
            "model_version": version,
            "dataset": "credit_risk",
            "holdout_metrics": {"roc_auc": 0.95, "brier": 0.05},
            "parity": {"passed": True},
            "data": {"sha256": sha, "holdout": holdout},
        }

    champion = card("v1", "data-1", "stratified random 20% (seed 42)")
    candidate = card("v2", "data-2", "records by keyed hash 20% (seed 42)") | {
        "champion_comparison": {"champion_version": "v1", "champion_metrics": None, "note": note}
    }
    # When gated
    decision = gate(candidate, champion)
    # Then it is refused, naming training's reason instead of asking for the very comparison refused
    assert not decision.passed
    assert note in decision.reasons[0]
    assert "pass champion_metrics_on_candidate_holdout" not in decision.reasons[0]


def test_given_numpy_print_options_changed_then_the_holdout_is_the_same() -> None:
    # Given a sample split as usual, and split again under numpy's 1.25 print style (as numpy 1.x prints)
    sample = _credit_sample(400)
    usual = split_holdout(sample, TrainingConfig())
    with np.printoptions(legacy="1.25"):
        legacy = split_holdout(sample, TrainingConfig())
    # Then the same rows form the holdout: a record's text is plain Python, e.g. "person_income=59000.0"
    assert usual.holdout.equals(legacy.holdout)
    texts = _record_texts(sample.frame.head(3), sample.spec)
    assert all("np." not in text for text in texts)
    assert any("person_income=" in text and ".0" in text for text in texts)
