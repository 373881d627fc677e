"""Review of the PSI drift monitoring: known answers by hand, empty bins, missing values, categories
the reference never had, the verdict thresholds, the API window, rejected batch rows, and the proof
that the runtime bins the training rows into exactly the card's reference shares."""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lambdas.batch.formats import open_source
from lambdas.batch.scoring import score_source
from lambdas.scoring.card import ModelCard, category_code_map
from lambdas.scoring.drift import (
    MIN_ROWS_FOR_VERDICT,
    MISSING_CATEGORY_TEXT,
    PSI_MODERATE,
    PSI_SIGNIFICANT,
    SHARE_FLOOR,
    DriftMonitor,
    DriftWindow,
    _status,
)
from lambdas.scoring.runtime import NULL_CATEGORY, ScoringModel
from tests.conftest import skip_unless_ci
from tests.scoring.bundles import CATEGORY_INPUTS, FEATURE_ORDER, logistic_card, logistic_onnx_bytes

REPO_ROOT = Path(__file__).resolve().parents[2]
CHAMPION = REPO_ROOT / "model_artifacts" / "credit_risk"


def _psi(actual: Sequence[float], expected: Sequence[float]) -> float:
    """The formula, by hand: sum of (a - e) * ln(a / e), a share of 0 counted as SHARE_FLOOR."""
    total = 0.0
    for a, e in zip(actual, expected, strict=True):
        a, e = max(a, SHARE_FLOOR), max(e, SHARE_FLOOR)
        total += (a - e) * math.log(a / e)
    return total


def _card(
    category_input: str,
    *,
    income: Mapping[str, Any] | None = None,
    home: Mapping[str, Any] | None = None,
    home_categories: list[str] | str | None = "unchanged",
) -> ModelCard:
    """The logistic test card with its income or home reference (or home's categories) replaced."""
    data = logistic_card(logistic_onnx_bytes(category_input), category_input=category_input).model_dump(
        mode="json"
    )
    references = data["reference"]["features"]
    if income is not None:
        references["income"] = {"kind": "numeric", "mean": 0.0, "std": 1.0, "median": 0.0, **income}
    if home is not None:
        references["home"] = {"kind": "categorical", "mode": "RENT", **home}
    if home_categories != "unchanged":
        (feature,) = [f for f in data["features"] if f["name"] == "home"]
        feature["categories"] = home_categories
    return ModelCard.model_validate(data)


def _feed(card: ModelCard, rows: int, **columns: Sequence[Any]) -> dict[str, np.ndarray]:
    """A feed of ``rows`` rows as the runtime builds it: given columns, the rest at a fixed value."""
    feed: dict[str, np.ndarray] = {}
    for name in FEATURE_ORDER:
        feature = card.feature(name)
        values = list(columns.get(name, [0.0 if feature.type != "category" else "RENT"] * rows))
        assert len(values) == rows
        if feature.onnx_type == "int64":
            codes = category_code_map(feature.categories or [])
            feed[feature.onnx_input] = np.asarray([codes[v] for v in values], dtype=np.int64).reshape(-1, 1)
        elif feature.onnx_type == "string":
            feed[feature.onnx_input] = np.asarray(values, dtype=object).reshape(-1, 1)
        else:
            feed[feature.onnx_input] = np.asarray(values, dtype=np.float64).reshape(-1, 1)
    return feed


def _summary(card: ModelCard, feed: dict[str, np.ndarray], probability: float = 0.2) -> Any:
    monitor = DriftMonitor(card)
    monitor.add(feed, np.full(_rows(feed), probability))
    return monitor.summary()


def _rows(feed: Mapping[str, np.ndarray]) -> int:
    return int(next(iter(feed.values())).shape[0])


# ---- the formula, on known answers ------------------------------------------------------------


@pytest.mark.parametrize("category_input", CATEGORY_INPUTS)
def test_given_values_on_the_edges_and_missing_ones_when_monitored_then_the_psi_is_the_hand_computed_one(
    category_input: str,
) -> None:
    # Given income's reference: edges 10 and 20, shares 20/50/30 % of the present values, 10 % missing
    card = _card(
        category_input, income={"bin_edges": [10.0, 20.0], "proportions": [0.2, 0.5, 0.3], "null_rate": 0.1}
    )
    # When 10 rows arrive: one below 10, two on 10, one between, two on 20, one above, three missing
    incomes = [5.0, 10.0, 10.0, 15.0, 20.0, 20.0, 25.0, math.nan, math.nan, math.nan]
    summary = _summary(card, _feed(card, 10, income=incomes))
    # Then a value on an edge belongs to the bin above it (as training's searchsorted "right" put it),
    # missing values are a bin of their own, and present shares are scaled by the present rate:
    # actual [0.1, 0.3, 0.3, 0.3] against expected [0.18, 0.45, 0.27, 0.1]
    by_hand = (
        (0.1 - 0.18) * math.log(0.1 / 0.18)
        + (0.3 - 0.45) * math.log(0.3 / 0.45)
        + (0.3 - 0.27) * math.log(0.3 / 0.27)
        + (0.3 - 0.1) * math.log(0.3 / 0.1)
    )
    assert by_hand == pytest.approx(0.330726, abs=1e-6)
    assert summary.feature_psi["income"] == pytest.approx(by_hand, abs=1e-6)
    assert summary.rows == 10
    assert summary.status == "too_few_rows"


@pytest.mark.parametrize("category_input", CATEGORY_INPUTS)
def test_given_a_bin_the_reference_left_empty_when_data_fills_it_then_the_psi_is_large_and_finite(
    category_input: str,
) -> None:
    # Given a reference whose top bin (>= 20) training never filled
    card = _card(
        category_input, income={"bin_edges": [10.0, 20.0], "proportions": [0.5, 0.5, 0.0], "null_rate": 0.0}
    )
    # When every one of 600 rows lands in it
    summary = _summary(card, _feed(card, 600, income=[25.0] * 600))
    # Then the empty shares are floored on both sides: large, finite, the formula's value
    by_hand = _psi([0.0, 0.0, 1.0, 0.0], [0.5, 0.5, 0.0, 0.0])
    assert math.isfinite(summary.feature_psi["income"])
    assert summary.feature_psi["income"] == pytest.approx(by_hand, abs=1e-6)
    assert summary.feature_psi["income"] > 10
    assert summary.status == "significant"
    assert summary.most_drifted_feature == "income"


@pytest.mark.parametrize("category_input", CATEGORY_INPUTS)
def test_given_a_listed_category_the_reference_never_had_when_it_arrives_then_it_counts_against_a_zero_share(
    category_input: str,
) -> None:
    # Given a card that accepts MORTGAGE, though the training rows had only RENT and OWN
    card = _card(category_input, home={"proportions": {"RENT": 0.6, "OWN": 0.4}, "null_rate": 0.0})
    # When half of 600 applications say MORTGAGE
    homes = ["MORTGAGE"] * 300 + ["RENT"] * 180 + ["OWN"] * 120
    summary = _summary(card, _feed(card, 600, home=homes))
    # Then MORTGAGE has a bin of its own with an expected share of 0 (floored)
    by_hand = _psi([0.3, 0.2, 0.5, 0.0, 0.0], [0.6, 0.4, 0.0, 0.0, 0.0])
    assert summary.feature_psi["home"] == pytest.approx(by_hand, abs=1e-6)
    assert summary.status == "significant"


def test_given_a_card_without_categories_when_an_unseen_one_arrives_then_it_is_not_counted_as_missing() -> (
    None
):
    # Given a text category whose card lists no categories (validation then accepts any text), and a
    # reference with 10 % missing
    card = _card(
        "string",
        home={"proportions": {"RENT": 0.5, "OWN": 0.2, "MORTGAGE": 0.3}, "null_rate": 0.1},
        home_categories=None,
    )
    model = ScoringModel.from_bytes(logistic_onnx_bytes("string"), card.model_dump_json().encode())
    record = {"age": 30, "income": 1.0, "home": "CASTLE", "loan_ratio": 0.1, "prior_default": False}
    assert model.prepare_records([record]).errors == {}  # the runtime lets the unseen text through
    # When 600 applications have the reference's shares, except that the 10 % it had missing say CASTLE
    homes = ["RENT"] * 270 + ["OWN"] * 108 + ["MORTGAGE"] * 162 + ["CASTLE"] * 60
    summary = _summary(card, _feed(card, 600, home=homes))
    # Then CASTLE is a category training never saw (its own bin, expected 0), not a missing value:
    # nothing is missing now, where the reference had 10 %
    by_hand = _psi([0.45, 0.18, 0.27, 0.1, 0.0], [0.45, 0.18, 0.27, 0.0, 0.1])
    assert summary.feature_psi["home"] == pytest.approx(by_hand, abs=1e-6)
    assert summary.status == "significant"


def test_given_the_drift_module_when_it_spots_a_missing_category_then_it_uses_the_runtimes_null_text() -> (
    None
):
    assert MISSING_CATEGORY_TEXT == NULL_CATEGORY


@pytest.mark.parametrize("category_input", CATEGORY_INPUTS)
def test_given_missing_categories_when_monitored_then_they_count_in_the_missing_bin(
    category_input: str,
) -> None:
    # Given a nullable category whose reference had 20 % missing
    card = _card(
        category_input, home={"proportions": {"RENT": 0.5, "OWN": 0.2, "MORTGAGE": 0.3}, "null_rate": 0.2}
    )
    # When 600 rows arrive with the reference's shares, missing ones as the runtime feeds them
    homes = ["RENT"] * 240 + ["OWN"] * 96 + ["MORTGAGE"] * 144 + [NULL_CATEGORY] * 120
    summary = _summary(card, _feed(card, 600, home=homes))
    # Then the distribution is the reference's: PSI 0
    assert summary.feature_psi["home"] == pytest.approx(0.0, abs=1e-9)


def test_given_scores_when_monitored_then_they_are_binned_by_the_score_references_edges() -> None:
    # Given the test card's score reference: edge 0.5, 50 % either side
    card = _card("string")
    feed = _feed(card, 600)
    # When 600 probabilities arrive: 150 below 0.5, 150 exactly 0.5 and 300 above
    monitor = DriftMonitor(card)
    monitor.add(feed, np.asarray([0.1] * 150 + [0.5] * 150 + [0.9] * 300))
    # Then 0.5 counts above the edge: 25 % / 75 % against 50 % / 50 %
    assert monitor.summary().score_psi == pytest.approx(_psi([0.25, 0.75, 0.0], [0.5, 0.5, 0.0]), abs=1e-6)


# ---- the verdict ---------------------------------------------------------------------------------


def test_given_the_documented_thresholds_when_judged_then_the_bounds_fall_as_documented() -> None:
    assert (PSI_MODERATE, PSI_SIGNIFICANT, MIN_ROWS_FOR_VERDICT) == (0.1, 0.25, 500)
    rows = MIN_ROWS_FOR_VERDICT
    assert _status(rows, 0.0999) == "stable"
    assert _status(rows, 0.1) == "moderate"  # "moderate from 0.1"
    assert _status(rows, 0.2499) == "moderate"
    assert _status(rows, 0.25) == "significant"  # "0.25 or more counts as significant"
    assert _status(rows - 1, 5.0) == "too_few_rows"  # "fewer than 500 scored rows"


# ---- the API window -------------------------------------------------------------------------------


def test_given_a_window_when_a_request_fills_it_then_it_is_measured_whole_and_the_next_one_starts_empty() -> (
    None
):
    card = _card("string")
    window = DriftWindow(card, size=500)
    # When requests of 300 applications arrive: the second brings the window to 600 (at least 500)
    first = window.record(_feed(card, 300), np.full(300, 0.2))
    second = window.record(_feed(card, 300), np.full(300, 0.2))
    third = window.record(_feed(card, 300), np.full(300, 0.2))
    # Then the window closes with the request that fills it, whole, and the next one starts empty
    assert first is None
    assert second is not None
    assert second.rows == 600
    assert third is None


# ---- batch: only the scored rows ---------------------------------------------------------------


def test_given_rejected_rows_in_a_file_when_scored_then_they_are_not_in_the_files_psi(tmp_path: Path) -> None:
    # Given a model and a file of 600 valid rows, and the same file with 300 rows validation rejects
    card = _card("int64")
    model = ScoringModel.from_bytes(logistic_onnx_bytes("int64"), card.model_dump_json().encode())
    header = "age,income,home,loan_ratio,prior_default"
    valid = [f"{30 + i % 40},{1000 + i},{('RENT', 'OWN', 'MORTGAGE')[i % 3]},0.1,false" for i in range(600)]
    rejected = ["150,1000,RENT,0.1,false", "40,-5,RENT,0.1,false", "40,1000,CASTLE,0.1,false"] * 100

    def drift(lines: list[str]) -> Any:
        data = "\n".join([header, *lines]).encode()
        result = score_source(model, open_source("csv", io.BytesIO(data)), "csv", io.BytesIO(), io.BytesIO())
        return result.counts, result.drift

    counts, clean = drift(valid)
    mixed_counts, mixed = drift(valid[:300] + rejected + valid[300:])
    # Then the rejected rows are counted as rejected and leave the PSI exactly as it was
    assert (counts.rows_scored, mixed_counts.rows_scored, mixed_counts.rows_rejected) == (600, 600, 300)
    assert mixed == clean
    assert mixed.rows == 600


# ---- the card's references: the runtime bins the training rows into exactly its shares -------------


def test_given_the_champions_training_rows_when_binned_by_the_runtime_then_the_cards_shares_come_back() -> (
    None
):
    from training.datasets.catalog import load_dataset
    from training.pipeline import TrainingConfig, data_fingerprint, split_holdout

    if not (CHAMPION / "model_card.json").is_file():
        skip_unless_ci(f"no champion bundle committed at {CHAMPION}")
    model = ScoringModel.load_directory(CHAMPION)
    card = model.card
    # Given the shipped data split as the champion's training split it (same fingerprint, same seed)
    dataset = load_dataset(card.dataset)
    split = split_holdout(dataset, TrainingConfig(seed=card.lineage.seed))
    if data_fingerprint(dataset, split).sha256 != card.data.sha256:
        skip_unless_ci("the committed champion was trained on other data than training/data/ holds")
    assert len(split.train) == card.data.rows_train

    def fed(frame: Any) -> dict[str, np.ndarray]:
        # The training rows as a file gives them to the runtime: text cells, missing ones empty
        columns = {
            f.name: ["" if value is None or value != value else value for value in frame[f.name].tolist()]
            for f in card.features
        }
        prepared = model.prepare_columns(columns)
        assert prepared.errors == {}
        return prepared.feed

    # When the training rows are binned by the runtime's drift counting
    monitor = DriftMonitor(card)
    train_feed = fed(split.train)
    monitor.add(train_feed, np.zeros(len(split.train)))
    # Then every feature's shares (missing bin included) are the card's reference shares, to the row
    for name, histogram in {**monitor._numeric, **monitor._categories}.items():
        np.testing.assert_allclose(
            histogram.counts / histogram.counts.sum(), histogram.expected, rtol=0, atol=1e-12, err_msg=name
        )
    assert set(monitor._numeric) | set(monitor._categories) == {f.name for f in card.features}
    # And the holdout rows scored by the runtime fall into the score reference's shares
    holdout_feed = fed(split.holdout)
    scores = DriftMonitor(card)
    scores.add(holdout_feed, model.score(holdout_feed, reasons_for=False).probability)
    score = scores._score
    np.testing.assert_allclose(score.counts / score.counts.sum(), score.expected, rtol=0, atol=1e-12)
