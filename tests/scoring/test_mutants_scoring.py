"""Behaviour of the scoring area that no other test pinned down, found by mutation testing: each test
here failed on a hand-made change (a mutant) of lambdas/scoring/ that the rest of the suite let through."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import onnx
import pytest

from lambdas.scoring.card import ModelCard
from lambdas.scoring.drift import (
    MIN_ROWS_FOR_VERDICT,
    PSI_SIGNIFICANT,
    ROWS_PER_EXTRA_BIN,
    DriftMonitor,
    DriftSummary,
)
from lambdas.scoring.runtime import ModelBundleError, ScoringModel
from tests.scoring import bundles
from tests.scoring.bundles import FEATURE_ORDER, good_application


def _card_data(category_input: str = "string") -> dict[str, Any]:
    onnx_bytes = bundles.logistic_onnx_bytes(category_input)
    data: dict[str, Any] = bundles.logistic_card(onnx_bytes, category_input=category_input).model_dump(
        mode="json"
    )
    return data


def _feature(data: dict[str, Any], name: str) -> dict[str, Any]:
    features: list[dict[str, Any]] = data["features"]
    (feature,) = [f for f in features if f["name"] == name]
    return feature


def _load(data: dict[str, Any], category_input: str = "string") -> ScoringModel:
    return ScoringModel.from_bytes(bundles.logistic_onnx_bytes(category_input), json.dumps(data).encode())


# ---- the card ---------------------------------------------------------------------------------------


def test_given_a_feature_whose_range_is_one_value_when_loading_then_it_loads_and_takes_only_that_value() -> (
    None
):
    # Given a card whose loan_ratio may only be 0.15 (minimum == maximum: a range, not an empty one)
    data = _card_data()
    _feature(data, "loan_ratio").update(minimum=0.15, maximum=0.15)
    # When loaded (mutant: minimum >= maximum refused the card)
    model = _load(data)
    # Then that value is valid and any other is out of range, named
    batch = model.prepare_records(
        [{**good_application(), "loan_ratio": 0.15}, {**good_application(), "loan_ratio": 0.16}]
    )
    assert batch.valid.tolist() == [True, False]
    assert [(e.field, e.code) for e in batch.errors[1]] == [("loan_ratio", "out_of_range")]
    assert "between 0.15 and 0.15" in batch.errors[1][0].message


def test_given_a_reference_with_a_repeated_bin_edge_when_loading_then_the_card_is_refused() -> None:
    # Given a card whose income reference repeats its edge (an empty bin between two equal cut points)
    data = _card_data()
    data["reference"]["features"]["income"].update(bin_edges=[0.5, 0.5], proportions=[0.5, 0.0, 0.5])
    # When loaded, Then it is refused naming the edges (mutant: only descending edges were refused)
    with pytest.raises(ModelBundleError, match="bin_edges must be strictly ascending"):
        _load(data)


def test_given_a_description_ending_in_a_full_stop_when_a_missing_value_is_a_reason_then_it_is_dropped() -> (
    None
):
    # Given a card without reason_missing whose income description is a sentence
    data = _card_data()
    _feature(data, "income")["description"] = "Yearly income."
    model = _load(data)
    # When an application without income (the graph reads it as 0: a higher risk) is explained
    scores = model.score(model.prepare_records([{**good_application(), "income": None}]).feed, top_k=5)
    # Then the derived text reads as a phrase (mutant: "Yearly income. not provided")
    assert ("income", "Yearly income not provided") in [(r.feature, r.text) for r in scores.reasons[0]]


# ---- decisions ---------------------------------------------------------------------------------------


def test_given_a_card_with_its_own_decision_labels_when_deciding_then_those_labels_are_given() -> None:
    # Given a card that names its decisions "accept" and "refer"
    data = _card_data()
    data["decision_policy"]["decision_labels"] = {"approve": "accept", "decline": "refer"}
    model = _load(data)
    low = {**good_application(), "loan_ratio": 0.0, "prior_default": False, "home": "OWN"}
    scores = model.score(model.prepare_records([low, good_application()]).feed, reasons_for=False)
    # Then each decision is given with the card's label (mutant: the fixed "approve" / "decline")
    assert [model.decision_label(bool(d)) for d in scores.decline] == ["accept", "refer"]


def test_given_a_graph_with_the_default_class_first_when_scored_then_the_cards_class_index_is_read() -> None:
    # Given the logistic graph with its probability columns swapped (P(default) first) and a card
    # that says so (positive_class_index 0)
    graph = onnx.load_from_string(bundles.logistic_onnx_bytes())
    (concat,) = [node for node in graph.graph.node if node.output == ["probabilities"]]
    concat.input[:] = ["p_default", "p_repaid"]
    onnx_bytes = graph.SerializeToString()
    data = bundles.logistic_card(onnx_bytes).model_dump(mode="json")
    data["onnx"]["positive_class_index"] = 0
    model = ScoringModel.from_bytes(onnx_bytes, json.dumps(data).encode())
    # When an application is scored
    application = good_application()
    scores = model.score(model.prepare_records([application]).feed)
    # Then its probability of default is the first column's, and the decision follows it
    # (mutant: the second column, P(repaid), was read as the probability of default)
    logit = bundles.INTERCEPT + sum(bundles.coefficient(n, v) for n, v in application.items())
    expected = 1.0 / (1.0 + math.exp(-logit))
    assert expected > bundles.THRESHOLD
    assert scores.probability[0] == pytest.approx(expected, abs=1e-12)
    assert scores.decline.tolist() == [True]


# ---- validation ---------------------------------------------------------------------------------------


def test_given_a_nan_among_a_columns_cells_when_prepared_then_it_is_not_finite_not_a_missing_value() -> None:
    # Given an income column of mixed cells (as JSON Lines values arrive) holding a NaN, an empty cell and
    # a number; income may be missing
    model = _load(_card_data())
    rows = 3
    columns: dict[str, list[object]] = {
        name: [str(good_application()[name])] * rows for name in FEATURE_ORDER if name != "income"
    }
    columns["income"] = [float("nan"), None, "32000"]
    # When prepared
    batch = model.prepare_columns(columns)
    # Then the NaN is refused as the API refuses it, while the empty cell is a missing income
    # (mutant: the NaN was taken for a missing income and scored)
    assert batch.valid.tolist() == [False, True, True]
    assert [(e.field, e.code) for e in batch.errors[0]] == [("income", "not_finite")]
    api = model.prepare_records([{**good_application(), "income": float("nan")}])
    assert [(e.field, e.code) for e in api.errors[0]] == [("income", "not_finite")]


# ---- reasons ------------------------------------------------------------------------------------------


def test_given_a_missing_baseline_when_a_number_raises_the_risk_then_its_generic_text_is_used() -> None:
    # Given a card whose loan_ratio may be missing and has no baseline value (the graph reads a missing
    # number as 0), with texts for either side of the baseline
    data = _card_data()
    _feature(data, "loan_ratio").update(
        nullable=True, reason_high="Loan ratio above the typical", reason_low="Loan ratio below the typical"
    )
    data["reference"]["reason_baseline"]["loan_ratio"] = None
    model = _load(data)
    # When applications with a loan ratio (which raises the risk against none) are explained, alone
    # (the small-request path) and six at a time (the block path)
    for count in (1, 6):
        feed = model.prepare_records([good_application()] * count).feed
        for reasons in model.score(feed, top_k=5).reasons:
            texts = {r.feature: r.text for r in reasons}
            # Then the value is on neither side of a missing baseline: the card's generic text
            # (mutant: "below the typical" on the small path)
            assert texts["loan_ratio"] == "Loan is large relative to income"


# ---- drift: the rows a category of many values needs ---------------------------------------------------


def _uniform_category_card(values: int) -> tuple[ModelCard, list[str]]:
    """The logistic test card whose category has ``values`` values of equal reference share (the graph
    itself is not run here: drift reads the card and the feed)."""
    data = _card_data()
    states = [f"S{i:03d}" for i in range(values)]
    _feature(data, "home")["categories"] = states
    data["reference"]["features"]["home"] = {
        "kind": "categorical",
        "proportions": {state: 1.0 / values for state in states},
        "mode": states[0],
        "null_rate": 0.0,
    }
    data["reference"]["reason_baseline"]["home"] = states[0]
    return ModelCard.model_validate(data), states


def _summary(card: ModelCard, home: list[str], income: np.ndarray | None = None) -> DriftSummary:
    """Drift of rows with these homes (and incomes): every other number, and the score, half each side
    of its reference's one edge (0.5), as the references have them."""
    rows = len(home)
    halves = np.where(np.arange(rows) % 2 == 0, 0.2, 0.8).reshape(-1, 1)
    feed = {name: halves for name in FEATURE_ORDER if name != "home"}
    feed["home"] = np.asarray(home, dtype=object).reshape(-1, 1)
    if income is not None:
        feed["income"] = income.reshape(-1, 1)
    monitor = DriftMonitor(card)
    monitor.add(feed, halves.reshape(-1))
    return monitor.summary()


def _repeated(states: list[str], counts: list[int]) -> list[str]:
    return [state for state, count in zip(states, counts, strict=True) for _ in range(count)]


def test_given_exactly_the_rows_a_categorys_bins_need_when_judged_then_its_figure_counts_unscaled() -> None:
    # Given a category of 22 values of equal reference share: it needs ROWS_PER_EXTRA_BIN * (22 - 1) =
    # 525 rows to count at full weight (more than MIN_ROWS_FOR_VERDICT)
    card, states = _uniform_category_card(22)
    rows = ROWS_PER_EXTRA_BIN * (22 - 1)
    assert rows == 525 > MIN_ROWS_FOR_VERDICT
    # When a file of exactly that many rows has 104 of them in the first state (20 or 21 in the others)
    counts = [104, 21] + [20] * 20
    assert sum(counts) == rows
    summary = _summary(card, _repeated(states, counts))
    # Then the category's figure, just above the significant line, counts as it is: significant
    # (mutant: the rows needed counted every bin, 550, and scaled it to 0.24, "moderate")
    assert PSI_SIGNIFICANT <= summary.feature_psi["home"] < PSI_SIGNIFICANT * 550 / 525
    assert summary.status == "significant"
    assert summary.most_drifted_feature == "home"


def test_given_a_category_too_noisy_for_its_rows_when_a_number_shifts_then_the_number_is_most_drifted() -> (
    None
):
    # Given a category of 100 values (it needs 2,475 rows) and a file of 500 rows in which half the
    # states hold 8 rows each and the other half 2: a figure of about 0.42, which at a fifth of the
    # rows it needs weighs about 0.08 in the verdict
    card, states = _uniform_category_card(100)
    home = _repeated(states, [8] * 50 + [2] * 50)
    # And incomes of which three quarters fall below the reference's edge (half do): a figure of 0.27
    income = np.where(np.arange(500) % 4 == 0, 0.8, 0.2)
    summary = _summary(card, home, income)
    assert summary.feature_psi["home"] > summary.feature_psi["income"] > PSI_SIGNIFICANT
    # Then the verdict is the income's, and the income is named as the feature that drifted most
    # (mutant: the largest unscaled figure, the noisy category, was named)
    assert summary.status == "significant"
    assert summary.most_drifted_feature == "income"
