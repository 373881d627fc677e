"""Review of the scoring runtime's scoring and reasons: the small-request path, the block path and the
locality-ordered path agree with one another and with the logistic bundle's exact contributions."""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lambdas.scoring import runtime
from lambdas.scoring.runtime import BatchScores, Reason, ScoringModel
from tests.scoring import bundles
from tests.scoring.bundles import BASELINE, INTERCEPT, coefficient, good_application

FEATURES = len(bundles.FEATURE_ORDER)


def _model(category_input: str, *, home_nullable: bool = False, **policy: Any) -> ScoringModel:
    onnx_bytes = bundles.logistic_onnx_bytes(category_input)
    card = bundles.logistic_card(onnx_bytes, category_input=category_input).model_dump(mode="json")
    for feature in card["features"]:
        if feature["name"] == "home":
            feature["nullable"] = home_nullable
    card["decision_policy"].update(policy)
    return ScoringModel.from_bytes(onnx_bytes, json.dumps(card).encode())


MODELS = {
    (encoding, nullable): _model(encoding, home_nullable=nullable)
    for encoding in bundles.CATEGORY_INPUTS
    for nullable in (False, True)
}


@contextmanager
def _path(small: int, locality: int) -> Iterator[None]:
    with (
        mock.patch.object(runtime, "SMALL_REQUEST_ROWS", small),
        mock.patch.object(runtime, "LOCALITY_MIN_ROWS", locality),
    ):
        yield


def _all_paths(model: ScoringModel, feed: dict[str, np.ndarray], top_k: int) -> dict[str, BatchScores]:
    paths = {"small": (10**9, 10**9), "block": (0, 10**9), "locality": (0, 1)}
    results = {}
    for name, (small, locality) in paths.items():
        with _path(small, locality):
            results[name] = model.score(feed, reasons_for=True, top_k=top_k)
    return results


def _exact_logit_contributions(application: dict[str, object]) -> dict[str, float]:
    """coef * (x - baseline) per feature; the graph reads a missing number (NaN) as 0."""
    exact = {}
    for name, value in application.items():
        if name != "home":
            value = 0.0 if value is None else float(value)  # type: ignore[arg-type]
        elif value is None:
            value = ""
        exact[name] = coefficient(name, value) - coefficient(name, BASELINE[name])
    return exact


def _probability(application: dict[str, object]) -> float:
    z = INTERCEPT + sum(
        _exact_logit_contributions(application)[name] + coefficient(name, BASELINE[name])
        for name in application
    )
    return 1.0 / (1.0 + math.exp(-z))


def _applications(home_nullable: bool) -> st.SearchStrategy[dict[str, object]]:
    homes: list[str | None] = [*bundles.HOME_CATEGORIES, *([None] if home_nullable else [])]
    return st.fixed_dictionaries(
        {
            "age": st.one_of(st.just(30), st.integers(18, 100)),
            "income": st.one_of(
                st.none(), st.just(55000.0), st.just(0.0), st.floats(0.0, 2e5, allow_nan=False)
            ),
            "home": st.sampled_from(homes),
            "loan_ratio": st.one_of(st.just(0.15), st.floats(0.0, 1.0, allow_nan=False)),
            "prior_default": st.booleans(),
        }
    )


@st.composite
def _cases(draw: st.DrawFn) -> tuple[ScoringModel, list[dict[str, object]], int]:
    encoding = draw(st.sampled_from(bundles.CATEGORY_INPUTS))
    nullable = draw(st.booleans())
    applications = draw(st.lists(_applications(nullable), min_size=1, max_size=9))
    top_k = draw(st.integers(0, FEATURES + 1))
    return MODELS[(encoding, nullable)], applications, top_k


# ---- properties: every path, the exact contributions ------------------------------------------------


ROUNDING = 1e-12


def _assert_same_reasons(reasons: list[Reason], expected: list[Reason]) -> None:
    """Same contributions (within ROUNDING) and texts, in the same order except where two contributions
    are within ROUNDING of each other (then rounding may order, or cut at top_k, either way)."""
    assert len(reasons) == len(expected)
    for got, want in zip(reasons, expected, strict=True):
        assert got.contribution == pytest.approx(want.contribution, abs=ROUNDING)
    by_feature = {reason.feature: reason for reason in expected}
    for position, got in enumerate(reasons):
        if got.feature == expected[position].feature:
            continue
        # Swapped with a tie, or (at the top_k cut) in place of a tie with the last one
        tied = by_feature.get(got.feature, expected[-1])
        assert abs(tied.contribution - got.contribution) <= ROUNDING
    for got in reasons:
        if got.feature in by_feature:
            assert got.text == by_feature[got.feature].text


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_cases())
def test_given_any_valid_applications_when_scored_by_every_path_then_all_agree_with_the_exact_contributions(
    case: tuple[ScoringModel, list[dict[str, object]], int],
) -> None:
    model, applications, top_k = case
    prepared = model.prepare_records(applications)
    assert prepared.errors == {}
    # When the same rows go through the small-request path, the block path and the locality order
    results = _all_paths(model, prepared.feed, top_k)
    small = results["small"]
    # Then probabilities and decisions are identical, and so are the reasons up to float rounding:
    # onnxruntime may round the last bit differently for another number of rows in one call
    for scores in results.values():
        np.testing.assert_array_equal(scores.probability, small.probability)
        np.testing.assert_array_equal(scores.decline, small.decline)
        for row_reasons, small_reasons in zip(scores.reasons, small.reasons, strict=True):
            _assert_same_reasons(row_reasons, small_reasons)
    # And the reasons are the top_k features whose exact logit contribution is positive, largest first
    # (up to 1e-9 on the logit scale: closer than that, float rounding may hide or reorder a reason)
    for row, application in enumerate(applications):
        probability, reasons = small.probability[row], small.reasons[row]
        assert probability == pytest.approx(_probability(application), abs=1e-12)
        assert bool(small.decline[row]) == (probability >= bundles.THRESHOLD)
        exact = _exact_logit_contributions(application)
        reported = [reason.feature for reason in reasons]
        assert len(reported) <= top_k
        assert all(reason.contribution > 0.0 and exact[reason.feature] > -1e-9 for reason in reasons)
        assert all(exact[a] >= exact[b] - 1e-9 for a, b in itertools.pairwise(reported))
        left_out = [name for name, value in exact.items() if value > 1e-9 and name not in reported]
        if len(reported) < top_k:
            assert left_out == []
        elif reported:  # top_k reasons: whatever was left out is no larger than the last one
            assert all(exact[name] <= exact[reported[-1]] + 1e-9 for name in left_out)


@pytest.mark.parametrize("encoding", bundles.CATEGORY_INPUTS)
@pytest.mark.parametrize("rows", [1023, 1024, 1025, 2100])
def test_given_file_sized_calls_with_duplicates_and_missing_values_then_each_row_gets_its_own_results(
    rows: int, encoding: str
) -> None:
    # Given rows around LOCALITY_MIN_ROWS: many exact duplicates, baselines, missing incomes and homes
    model = MODELS[(encoding, True)]
    rng = np.random.default_rng(rows)
    distinct = [
        {
            "age": int(rng.choice([30, int(rng.integers(18, 101))])),
            "income": rng.choice([None, 55000.0, float(rng.uniform(0, 2e5))]),
            "home": rng.choice([*bundles.HOME_CATEGORIES, None]),
            "loan_ratio": float(rng.choice([0.15, float(rng.uniform(0, 1))])),
            "prior_default": bool(rng.integers(0, 2)),
        }
        for _ in range(300)
    ]
    applications = [distinct[i] for i in rng.integers(0, len(distinct), rows).tolist()]
    feed = model.prepare_records(applications).feed
    # When scored with reasons for every other row, in locality order and in input order
    mask = np.arange(rows) % 2 == 0
    ordered = model.score(feed, reasons_for=mask, top_k=FEATURES)
    with _path(0, 10**9):
        as_given = model.score(feed, reasons_for=mask, top_k=FEATURES)
    # Then each row has its own probability and reasons, the same either way
    expected = np.array([_probability(application) for application in applications])
    np.testing.assert_allclose(ordered.probability, expected, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(ordered.probability, as_given.probability)
    assert ordered.reasons == as_given.reasons
    for row, application in enumerate(applications):
        exact = _exact_logit_contributions(application)
        if mask[row]:
            assert {r.feature for r in ordered.reasons[row]} == {n for n, v in exact.items() if v > 1e-12}
        else:
            assert ordered.reasons[row] == []


# ---- the decision rule -------------------------------------------------------------------------------


@pytest.mark.parametrize("approve_below", [True, False])
def test_given_a_probability_exactly_at_the_threshold_when_deciding_then_it_falls_on_the_decline_side(
    approve_below: bool,
) -> None:
    # Given a card whose threshold is exactly this application's probability
    application = good_application()
    scorer = MODELS[("int64", False)]
    probability = float(scorer.score(scorer.prepare_records([application]).feed).probability[0])
    model = _model("int64", threshold=probability, approve_below_threshold=approve_below)
    feed = model.prepare_records([application]).feed
    for small, locality in ((10**9, 10**9), (0, 10**9), (0, 1)):
        with _path(small, locality):
            scores = model.score(feed)
        assert scores.probability[0] == probability
        # approve_below_threshold: approve below, decline at or above; otherwise the other way round
        assert bool(scores.decline[0]) is approve_below


# ---- defects found in review ---------------------------------------------------------------------------


@pytest.mark.parametrize("top_k", [-1, -3])
def test_given_a_negative_top_k_when_scoring_or_explaining_then_it_is_refused(top_k: int) -> None:
    # Given an applicant with a feature that lowers the risk (older than the baseline): four reasons
    model = MODELS[("int64", False)]
    feed = model.prepare_records([{**good_application(), "age": 70}]).feed
    # When asked for a negative number of reasons, Then it is refused on every path instead of each
    # path dropping a different tail (the small path dropped positive reasons, the block path features)
    for small in (10**9, 0):
        with _path(small, 10**9), pytest.raises(ValueError, match="top_k"):
            model.score(feed, top_k=top_k)
    probability = model.score(feed, reasons_for=False).probability
    rows = np.array([0], dtype=np.intp)
    with pytest.raises(ValueError, match="top_k"):
        model.explain(feed, probability, rows, top_k=top_k)
    with pytest.raises(ValueError, match="top_k"):
        model.explain_texts(feed, probability, rows, top_k=top_k)


def _numeric_categories_model() -> ScoringModel:
    """The coded logistic bundle whose home categories include the text "1" (as a coded grade would)."""
    onnx_bytes = bundles.logistic_onnx_bytes("int64")
    card = bundles.logistic_card(onnx_bytes, category_input="int64").model_dump(mode="json")
    for feature in card["features"]:
        if feature["name"] == "home":
            feature["categories"] = ["RENT", "OWN", "MORTGAGE", "1"]
    return ScoringModel.from_bytes(onnx_bytes, json.dumps(card).encode())


@pytest.mark.parametrize(
    "cells",
    [[1, True], [True, 1], [1.0, 1], [1, 1.0], [np.int64(1), True, 1.0, 1]],
    ids=["int then bool", "bool then int", "float then int", "int then float", "numpy int, bool, float, int"],
)
def test_given_equal_values_of_different_types_in_a_category_column_then_each_cell_is_judged_by_its_own_type(
    cells: list[object],
) -> None:
    # Given a JSON Lines column (Python values) mixing 1, true and 1.0 for a category with the text "1"
    model = _numeric_categories_model()
    rows = len(cells)
    application = good_application()
    columns = {name: [value] * rows for name, value in application.items() if name != "home"}
    columns["home"] = cells
    # When prepared as columns
    prepared = model.prepare_columns(columns)
    # Then the verdict of each cell is the one it gets alone (1 and numpy 1 are the text "1"; true and
    # 1.0 are not text), whatever the other cells and their order
    alone = [
        model.prepare_columns({name: [value] for name, value in application.items()} | {"home": [cell]})
        for cell in cells
    ]
    for row, single in enumerate(alone):
        assert prepared.valid[row] == single.valid[0]
        assert prepared.errors.get(row) == single.errors.get(0)
        assert prepared.feed["home"][row, 0] == single.feed["home"][0, 0]
    expected_valid = [not isinstance(cell, bool | float) for cell in cells]
    assert prepared.valid.tolist() == expected_valid
