"""Session 12 review: the holdout by record hash and the champion comparison's rules, at their edges (a
column of numbers and text, holdout fractions the description rounded, out-of-time boundaries with time
zones or beyond a double's integers, a spec that adds a feature, a holdout without one class)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from training.datasets.catalog import LoadedDataset, load_dataset
from training.datasets.spec import DatasetSpec, FeatureSpec
from training.pipeline import (
    TrainingConfig,
    _holdout_overlap,
    _record_texts,
    split_holdout,
    train,
    train_bundle,
)

FAST = TrainingConfig(candidates=["logistic_regression"], n_jobs=1, bootstrap_resamples=100, seed=42)

_TOY = DatasetSpec(
    name="toy",
    description="toy",
    target="y",
    positive_class="y = 1",
    features=(FeatureSpec("x", "number"), FeatureSpec("grade", "category")),
)


def _toy(frame: pd.DataFrame) -> LoadedDataset:
    return LoadedDataset(spec=_TOY, frame=frame, cleaning={}, source="test", rows_raw=len(frame))


def _credit_sample(rows: int) -> LoadedDataset:
    dataset = load_dataset("credit_risk")
    frame = dataset.frame.sample(rows, random_state=11).reset_index(drop=True)
    return LoadedDataset(dataset.spec, frame, dataset.cleaning, "test", rows)


# --- Record texts: one row's text depends on that row only ----------------------------------------------


def test_given_a_coded_category_column_gaining_a_text_value_then_earlier_records_keep_their_side() -> None:
    # Given 500 records whose category is a numeric code (as a CSV reader gives it: int64)
    rng = np.random.default_rng(3)
    older = pd.DataFrame(
        {
            "x": rng.normal(size=500).round(3),
            "grade": rng.integers(1, 6, size=500),
            "y": (np.arange(500) % 4 == 0).astype(np.int64),
        }
    ).assign(row_id=np.arange(500))
    # and the same records with one newer loan whose grade is text ("U", unknown): the column is now text
    newer = pd.concat(
        [
            older.astype({"grade": object}),
            pd.DataFrame({"x": [0.5], "grade": ["U"], "y": [1], "row_id": [500]}),
        ],
        ignore_index=True,
    )
    champion_training = set(split_holdout(_toy(older), TrainingConfig()).train["row_id"])
    # When the grown data is split for a candidate
    candidate_holdout = set(split_holdout(_toy(newer), TrainingConfig()).holdout["row_id"])
    # Then none of the champion's training records is in the holdout both are compared on
    assert not candidate_holdout & champion_training
    # And a record's text is the same alone as among the others: NaN, None and "" alike are missing
    mixed = pd.DataFrame({"x": [1.0, np.nan, None, 4.0], "grade": [2, "", None, "U"]})
    assert _record_texts(mixed.head(1), _TOY) == _record_texts(mixed, _TOY)[:1]
    assert _record_texts(mixed, _TOY)[1:3] == ["grade=\x1fx=", "grade=\x1fx="]


# --- The holdout description: what a later run compares rules by ----------------------------------------


def test_given_holdout_fractions_the_percent_rounds_alike_then_their_rules_differ() -> None:
    sample = _credit_sample(400)
    # Given a champion's holdout of 12% of the records and a candidate's of 12.5% (the 0.5 point more
    # holds records the champion trained on)
    champion = split_holdout(sample, replace(FAST, holdout_fraction=0.12))
    candidate = split_holdout(sample, replace(FAST, holdout_fraction=0.125))
    assert set(map(tuple, candidate.holdout.to_numpy().tolist())) - set(
        map(tuple, champion.holdout.to_numpy().tolist())
    )
    # Then the descriptions tell them apart, and the champion would not be scored on this holdout
    assert champion.description != candidate.description
    assert "12.5%" in candidate.description
    assert _holdout_overlap(champion.description, candidate.description) is not None
    # And the usual fraction reads as before
    assert split_holdout(sample, FAST).description == "records by keyed hash 20% (seed 42)"


# --- Out-of-time boundaries -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("champion", "candidate"),
    [
        # Dates without a time zone (a CSV's text) and with one (a Parquet timestamp in UTC)
        (
            "out-of-time: latest 20% by d (from 2021-01-01 00:00:00)",
            "out-of-time: latest 20% by d (from 2021-03-01 00:00:00+00:00)",
        ),
        (
            "out-of-time: latest 20% by d (from 2021-01-01 00:00:00+00:00)",
            "out-of-time: latest 20% by d (from 2021-03-01 00:00:00)",
        ),
    ],
)
def test_given_boundaries_with_and_without_a_time_zone_then_the_champion_is_not_scored(
    champion: str, candidate: str
) -> None:
    # Not comparable as they stand: not shown to be safe, so not scored (and no TypeError at the end of a run)
    reason = _holdout_overlap(champion, candidate)
    assert reason is not None
    assert "does not start at or after" in reason


def test_given_integer_boundaries_beyond_a_doubles_precision_then_an_earlier_one_is_seen() -> None:
    # Given a numeric time column in nanoseconds since 1970: 100 ns apart, the same double
    champion = "out-of-time: latest 20% by t (from 1600000000000000100)"
    candidate = "out-of-time: latest 20% by t (from 1600000000000000000)"
    # Then the candidate's holdout starts earlier: the champion is not scored on it
    assert _holdout_overlap(champion, candidate) is not None
    assert _holdout_overlap(candidate, champion) is None


# --- A champion whose records were other columns --------------------------------------------------------


@pytest.fixture(scope="module")
def narrow_champion(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A champion trained on 1,000 credit_risk rows with a spec lacking loan_grade."""
    sample = _credit_sample(1000)
    spec = replace(sample.spec, features=tuple(f for f in sample.spec.features if f.name != "loan_grade"))
    folder = tmp_path_factory.mktemp("narrow_champion")
    train_bundle(LoadedDataset(spec, sample.frame, sample.cleaning, "test", 1000), folder, FAST)
    return folder


def test_given_a_champion_whose_records_had_other_columns_then_it_is_not_scored(
    narrow_champion: Path,
) -> None:
    # Given a candidate whose spec adds loan_grade, on the champion's rows and 200 more: each record's text,
    # and so the side its hash puts it on, changed, so most of this holdout was the champion's training data
    sample = _credit_sample(1200)
    narrow = replace(sample.spec, features=tuple(f for f in sample.spec.features if f.name != "loan_grade"))
    frame = sample.frame.assign(row_id=np.arange(1200))
    champion_training = set(
        split_holdout(LoadedDataset(narrow, frame.iloc[:1000], {}, "test", 1000), FAST).train["row_id"]
    )
    assert set(split_holdout(LoadedDataset(sample.spec, frame, {}, "test", 1200), FAST).holdout["row_id"]) & (
        champion_training
    )
    # When trained against that champion
    card = train(sample, replace(FAST, champion_bundle=narrow_champion)).card
    # Then the champion is not scored (the gate then refuses to compare), and the card says why
    assert card.champion_comparison is not None
    assert card.champion_comparison.champion_metrics is None
    assert "loan_grade" in card.champion_comparison.note


# --- A holdout without one class ------------------------------------------------------------------------


def test_given_a_small_dataset_whose_holdout_draws_no_positive_then_the_split_says_so() -> None:
    # Given 60 records with 6 defaulters, none of which the record hash puts in the holdout
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "x": rng.normal(size=60),
            "grade": rng.choice(["a", "b"], 60),
            "y": (np.arange(60) < 6).astype(np.int64),
        }
    )
    # When split (before any model is fitted)
    # Then the error names the holdout, the class it lacks and the counts
    expected = (
        r"holdout by record hash: the 7 holdout rows hold no row of class 1 \(the dataset has 6 of its 60"
    )
    with pytest.raises(ValueError, match=expected):
        split_holdout(_toy(frame), TrainingConfig())


def test_given_too_few_dated_rows_for_any_holdout_then_the_split_says_so() -> None:
    # Given four dated rows and a 10% out-of-time holdout (round(4 * 0.9) = 4: no row left to hold out)
    frame = pd.DataFrame(
        {"x": [1.0, 2.0, 3.0, 4.0], "y": [0, 1, 0, 1], "d": pd.date_range("2021-01-01", periods=4)}
    )
    spec = DatasetSpec(
        name="tiny",
        description="",
        target="y",
        positive_class="1",
        features=(FeatureSpec("x", "number"),),
        time_column="d",
    )
    dataset = LoadedDataset(spec, frame, {}, "test", 4)
    # Then the split refuses with a message naming the cause, not an IndexError
    with pytest.raises(ValueError, match="4 rows are too few for a 10% holdout"):
        split_holdout(dataset, TrainingConfig(holdout_fraction=0.1))
