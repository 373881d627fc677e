"""Methodology review 3 (a model-risk validator's questions): do the cross-validated figures describe the
model that is deployed, can the gate compare figures from different holdout rows, and does a feature
with no value in the training rows stop training before any fitting, by name."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.pipeline import Pipeline

from training import pipeline as training_pipeline
from training.candidates import SMALL_DATA_ROWS, Candidate, candidates_by_name
from training.datasets.catalog import LoadedDataset, load_dataset
from training.datasets.spec import DatasetSpec, FeatureKind, FeatureSpec, ProtectedAttribute
from training.features import model_input_frame
from training.pipeline import TrainingConfig, cross_validate, fit_final, split_holdout, train, train_bundle
from training.registry import gate

FAST = TrainingConfig(candidates=["logistic_regression"], n_jobs=1, bootstrap_resamples=100, seed=42)


def _toy_spec(**overrides: Any) -> DatasetSpec:
    fields: dict[str, Any] = dict(
        name="toy",
        description="toy",
        target="y",
        positive_class="y = 1",
        features=(FeatureSpec("x", "number"), FeatureSpec("z", "number")),
    )
    return DatasetSpec(**{**fields, **overrides})


def _toy_rows(rows: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x, z = rng.normal(size=rows), rng.normal(size=rows)
    y = (rng.uniform(size=rows) < 1 / (1 + np.exp(-(1.5 * x - z)))).astype(np.int64)
    return pd.DataFrame({"x": x, "z": z, "y": y})


# --- Cross-validation fits the settings of the model it stands for -------------------------------------


def test_given_training_rows_just_above_the_small_data_size_then_every_fold_fits_the_final_settings() -> None:
    # Given 2,200 training rows: each of 5 folds fits on 1,760 rows, below SMALL_DATA_ROWS (2,000), where
    # the boosting candidate's settings change (8 leaves instead of 31, a lower learning rate, ...)
    rows = SMALL_DATA_ROWS + SMALL_DATA_ROWS // 10
    frame = _toy_rows(rows)
    spec = _toy_spec()
    x, y = model_input_frame(spec, frame), frame["y"].to_numpy(dtype=np.int64)
    boosting = candidates_by_name(["hist_gradient_boosting"])[0]
    built: list[dict[str, Any]] = []

    def recording_build(spec: DatasetSpec, rows: int, seed: int) -> Pipeline:
        pipeline = boosting.build(spec, rows, seed)
        pipeline.set_params(model__max_iter=5)  # few trees: this test is about the settings, not the fit
        built.append(pipeline.named_steps["model"].get_params())
        return pipeline

    candidate = Candidate(boosting.name, boosting.description, recording_build)
    config = TrainingConfig(n_jobs=1, repeats=1)
    # When cross-validated (which selects, calibrates and sets the threshold) and then fitted on all rows
    result = cross_validate(candidate, spec, x, y, config)
    folds = list(built)
    fit_final(result, spec, x, y, config)
    final = built[-1]
    # Then every fold model has the deployed model's settings: the CV figures, the calibration map fitted
    # on the folds' out-of-fold scores and the threshold all describe the model the card ships
    assert len(folds) == config.folds
    assert all(fold == final for fold in folds), (folds[0]["max_leaf_nodes"], final["max_leaf_nodes"])


# --- The gate never compares figures from different holdout rows ---------------------------------------


def _credit_sample(rows: int) -> LoadedDataset:
    dataset = load_dataset("credit_risk")
    frame = dataset.frame.sample(rows, random_state=11).reset_index(drop=True)
    return LoadedDataset(dataset.spec, frame, dataset.cleaning, "test", rows)


def _without(dataset: LoadedDataset, feature: str) -> LoadedDataset:
    spec = replace(dataset.spec, features=tuple(f for f in dataset.spec.features if f.name != feature))
    return LoadedDataset(spec, dataset.frame, dataset.cleaning, dataset.source, dataset.rows_raw)


@pytest.fixture(scope="module")
def narrow_champion(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A champion trained on a 1,000-row sample without loan_grade (holdout by keyed record hash)."""
    folder = tmp_path_factory.mktemp("narrow_champion")
    train_bundle(_without(_credit_sample(1000), "loan_grade"), folder, FAST)
    return folder


def _json(card: Any) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(card.model_dump_json())
    return found


def test_given_the_same_data_split_by_other_record_columns_then_the_gate_does_not_compare_the_cards(
    narrow_champion: Path,
) -> None:
    # Given a candidate whose spec adds loan_grade, trained on exactly the champion's rows: both cards
    # name the same data (sha256) and the same holdout rule, but each record's text, and so its side of
    # the split, changed: most of the candidate's holdout rows were the champion's training rows
    sample = _credit_sample(1000)
    numbered = LoadedDataset(sample.spec, sample.frame.assign(row_id=np.arange(1000)), {}, "t", 1000)
    champion_holdout = set(split_holdout(_without(numbered, "loan_grade"), FAST).holdout["row_id"])
    candidate_holdout = set(split_holdout(numbered, FAST).holdout["row_id"])
    assert len(candidate_holdout - champion_holdout) > len(candidate_holdout) / 2
    champion = json.loads((narrow_champion / "model_card.json").read_text())
    for champion_bundle in (narrow_champion, None):
        card = _json(train(sample, replace(FAST, champion_bundle=champion_bundle)).card)
        assert (card["data"]["sha256"], card["data"]["holdout"]) == (
            champion["data"]["sha256"],
            champion["data"]["holdout"],
        )
        # When gated against that champion (trained with the champion scored, or without)
        decision = gate(card, champion)
        # Then the cards' own holdout figures (on different rows) are not compared: the gate refuses
        assert not decision.passed, decision.reasons
        assert "holdouts differ" in decision.reasons[0]
        assert not any(reason.startswith("ok: ROC AUC") for reason in decision.reasons)
        if champion_bundle is not None:
            # naming training's own reason for not scoring the champion
            assert "loan_grade" in decision.reasons[0]


def _card(version: str, features: list[str], holdout: str, roc_auc: float) -> dict[str, Any]:
    return {
        "model_name": "toy-default-risk",
        "model_version": version,
        "dataset": "toy",
        "onnx": {"sha256": "0" * 64},
        "holdout_metrics": {"roc_auc": roc_auc, "brier": 0.1},
        "parity": {"passed": True},
        "features": [{"name": name} for name in features],
        "protected_attributes": ["age"],
        "data": {"sha256": "data-1", "holdout": holdout, "holdout_positives": 60, "holdout_negatives": 240},
    }


@pytest.mark.parametrize(
    ("holdout", "candidate_features", "compared"),
    [
        # The same records: the same rows whatever the order the card lists its features in
        ("records by keyed hash 20% (seed 42)", ["b", "a"], True),
        # Out of time, or a stratified draw (older cards): the rows do not depend on the features
        ("out-of-time: latest 20% by d (from 2021-01-01 00:00:00)", ["a", "b", "c"], True),
        ("stratified random 20% (seed 42)", ["a", "b", "c"], True),
        # By record hash with another feature: other rows
        ("records by keyed hash 20% (seed 42)", ["a", "b", "c"], False),
    ],
)
def test_given_cards_of_the_same_data_then_the_gate_compares_them_only_on_the_same_rows(
    holdout: str, candidate_features: list[str], compared: bool
) -> None:
    champion = _card("toy-1", ["a", "b"], holdout, 0.90)
    candidate = _card("toy-2", candidate_features, holdout, 0.91)
    decision = gate(candidate, champion)
    assert decision.passed is compared
    assert ("ok: both cards describe the same data and holdout" in decision.reasons) is compared


# --- A feature the training rows never hold ------------------------------------------------------------


@pytest.mark.parametrize("kind", ["number", "category"])
def test_given_a_feature_without_any_value_in_the_training_rows_then_training_stops_naming_it(
    kind: FeatureKind, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given dated loans whose feature z was recorded only for the latest ones: the out-of-time split puts
    # every row that has it in the holdout, so no model can learn from it (and it has no drift reference)
    frame = _toy_rows(600).assign(when=pd.date_range("2020-01-01", periods=600, freq="D"))
    frame["z"] = frame["z"].astype(object) if kind == "number" else frame["z"].round().astype(str)
    frame.loc[:479, "z"] = None
    spec = _toy_spec(time_column="when", features=(FeatureSpec("x", "number"), FeatureSpec("z", kind)))
    dataset = LoadedDataset(spec, frame, {}, "test", 600)

    def no_fitting(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a candidate was cross-validated")

    monkeypatch.setattr(training_pipeline, "cross_validate", no_fitting)
    # When trained, then it stops before any fitting, naming the feature and the rows
    with pytest.raises(ValueError, match=r"\['z'\] hold no value in the 480 training rows"):
        train(dataset, FAST)


def test_given_fewer_defaulters_in_the_training_rows_than_folds_then_cv_stops_before_fitting() -> None:
    # Given 176 training rows with 4 defaulters: one of 5 folds would test on repayers only
    frame = _toy_rows(176).assign(y=(np.arange(176) < 4).astype(np.int64))
    spec = _toy_spec()
    y = frame["y"].to_numpy(dtype=np.int64)
    fitted: list[int] = []
    logistic = candidates_by_name(["logistic_regression"])[0]

    def recording_build(spec: DatasetSpec, rows: int, seed: int) -> Pipeline:
        fitted.append(rows)
        return logistic.build(spec, rows, seed)

    candidate = Candidate(logistic.name, logistic.description, recording_build)
    # When cross-validated, then it is refused before any fold is fitted, naming the counts
    with pytest.raises(ValueError, match=r"the 176 training rows hold 4 of class 1, fewer than the 5 folds"):
        cross_validate(candidate, spec, model_input_frame(spec, frame), y, FAST)
    assert fitted == []


# --- A numeric protected attribute needs bands -----------------------------------------------------------


@pytest.mark.parametrize(("bands", "refused"), [((), True), ((30.0, 50.0), False)])
def test_given_a_numeric_protected_attribute_without_bands_then_training_stops_before_fitting(
    bands: tuple[float, ...], refused: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given applicants' ages in years as a protected attribute (a spec file's "protected": ["age"])
    frame = _toy_rows(600).assign(age=np.random.default_rng(1).integers(18, 80, size=600))
    spec = _toy_spec(
        protected=(
            ProtectedAttribute(
                "age", bands=bands, band_labels=("<30", "30-49", "50+")[: len(bands) + 1] if bands else ()
            ),
        )
    )
    dataset = LoadedDataset(spec, frame, {}, "test", 600)

    def no_fitting(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a candidate was cross-validated")

    monkeypatch.setattr(training_pipeline, "cross_validate", no_fitting)
    # When trained without bands, then it stops before any fitting: one fairness group per year of age
    # would be listed, each too small to compare
    if refused:
        with pytest.raises(
            ValueError, match=r"protected attribute 'age' is numeric with \d+ distinct values"
        ):
            train(dataset, FAST)
    else:  # with bands, it goes on to cross-validation
        with pytest.raises(AssertionError, match="a candidate was cross-validated"):
            train(dataset, FAST)
