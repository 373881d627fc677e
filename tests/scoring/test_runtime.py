"""Unit tests of the scoring runtime on a hand-built logistic bundle (Given/When/Then in the names)."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lambdas.scoring import runtime as runtime_module
from lambdas.scoring.card import NULL_CATEGORY_CODE, ModelCard
from lambdas.scoring.runtime import CodedColumn, ColumnInput, ModelBundleError, ScoringModel
from tests.scoring import bundles
from tests.scoring.bundles import (
    BASELINE,
    INTERCEPT,
    THRESHOLD,
    coefficient,
    count_onnx_rows,
    good_application,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def _expected_probability(application: dict[str, object]) -> float:
    z = INTERCEPT + sum(coefficient(name, value) for name, value in application.items())
    return 1.0 / (1.0 + math.exp(-z))


# ---- loading ---------------------------------------------------------------------------------


def test_given_a_bundle_when_loaded_then_version_and_features_come_from_the_card(model: ScoringModel) -> None:
    assert model.model_version == bundles.MODEL_VERSION
    assert [f.name for f in model.features] == list(bundles.FEATURE_ORDER)


def test_given_a_tampered_onnx_file_when_loading_then_the_hash_mismatch_is_named(
    logistic_bundle: Path, tmp_path: Path
) -> None:
    copy = Path(shutil.copytree(logistic_bundle, tmp_path / "tampered"))
    (copy / "model.onnx").write_bytes((copy / "model.onnx").read_bytes() + b"\0")
    with pytest.raises(ModelBundleError, match="does not match its card: sha256"):
        ScoringModel.load_directory(copy)


def test_given_a_folder_without_card_when_loading_then_the_error_names_the_card(tmp_path: Path) -> None:
    with pytest.raises(ModelBundleError, match=r"model_card\.json"):
        ScoringModel.load_directory(tmp_path)


def test_given_bytes_when_loading_from_bytes_then_it_scores_like_the_folder(
    logistic_bundle: Path, model: ScoringModel
) -> None:
    from_bytes = ScoringModel.from_bytes(
        (logistic_bundle / "model.onnx").read_bytes(), (logistic_bundle / "model_card.json").read_bytes()
    )
    feed = model.prepare_records([good_application()]).feed
    assert from_bytes.score(feed).probability[0] == model.score(feed).probability[0]


def test_given_a_card_that_is_not_json_when_loading_from_bytes_then_a_bundle_error_is_raised() -> None:
    with pytest.raises(ModelBundleError, match="not a valid card"):
        ScoringModel.from_bytes(bundles.logistic_onnx_bytes(), b"{not json")


# ---- scoring and decisions -------------------------------------------------------------------


def test_given_an_application_when_scored_then_probability_matches_the_logistic_formula(
    model: ScoringModel,
) -> None:
    application = good_application()
    scores = model.score(model.prepare_records([application]).feed)
    assert scores.probability[0] == pytest.approx(_expected_probability(application), abs=1e-12)


def test_given_probabilities_around_the_threshold_when_deciding_then_at_or_above_declines(
    model: ScoringModel,
) -> None:
    low = {**good_application(), "loan_ratio": 0.0, "prior_default": False, "home": "OWN"}
    high = {**good_application(), "loan_ratio": 0.9}
    scores = model.score(model.prepare_records([low, high]).feed)
    assert scores.probability[0] < THRESHOLD <= scores.probability[1]
    assert scores.decline.tolist() == [False, True]
    assert model.decision_label(False) == "approve"
    assert model.decision_label(True) == "decline"


# ---- reasons ---------------------------------------------------------------------------------


def test_given_a_logistic_model_when_reasons_computed_then_logit_contributions_equal_coef_times_delta(
    model: ScoringModel,
) -> None:
    rng = np.random.default_rng(7)
    applications = [
        {
            "age": int(rng.integers(18, 80)),
            "income": float(rng.uniform(5_000, 150_000)),
            "home": str(rng.choice(bundles.HOME_CATEGORIES)),
            "loan_ratio": float(rng.uniform(0, 1)),
            "prior_default": bool(rng.integers(0, 2)),
        }
        for _ in range(20)
    ]
    scores = model.score(model.prepare_records(applications).feed, top_k=len(bundles.FEATURE_ORDER))
    checked = 0
    for application, probability, reasons in zip(
        applications, scores.probability, scores.reasons, strict=True
    ):
        for reason in reasons:
            value = application[reason.feature]
            exact = coefficient(reason.feature, value) - coefficient(reason.feature, BASELINE[reason.feature])
            measured = _logit(float(probability)) - _logit(float(probability) - reason.contribution)
            assert measured == pytest.approx(exact, abs=1e-9)
            checked += 1
        # Every feature that raises the logit is reported, and only those.
        raising = {
            name
            for name, value in application.items()
            if coefficient(name, value) - coefficient(name, BASELINE[name]) > 1e-12
        }
        assert {r.feature for r in reasons} == raising
    assert checked > 20


def test_given_top_k_when_reasons_computed_then_they_are_the_largest_positive_in_order(
    model: ScoringModel,
) -> None:
    scores = model.score(model.prepare_records([good_application()]).feed, top_k=2)
    (reasons,) = scores.reasons
    assert [r.feature for r in reasons] == ["loan_ratio", "prior_default"]
    assert reasons[0].contribution > reasons[1].contribution > 0
    assert reasons[0].text == "Loan is large relative to income"


def test_given_a_row_mask_when_scoring_then_reasons_only_for_selected_rows(model: ScoringModel) -> None:
    feed = model.prepare_records([good_application(), good_application()]).feed
    scores = model.score(feed, reasons_for=np.array([False, True]))
    assert scores.reasons[0] == []
    assert len(scores.reasons[1]) == 3
    without = model.score(feed, reasons_for=False)
    assert without.reasons == [[], []]
    np.testing.assert_array_equal(without.probability, scores.probability)


def test_given_reasons_when_scoring_then_onnx_runs_once(
    model: ScoringModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = count_onnx_rows(model, monkeypatch)
    model.score(model.prepare_records([good_application()] * 4).feed)
    assert calls == [4 + 4 * len(bundles.FEATURE_ORDER)]


def test_given_scored_rows_when_explained_afterwards_then_reasons_match_scoring_with_reasons(
    model: ScoringModel,
) -> None:
    applications = [
        good_application(),
        {**good_application(), "home": "OWN", "prior_default": False},
        {**good_application(), "income": None, "loan_ratio": 0.05},
        {**good_application(), "age": 61, "income": 150000.0},
    ]
    feed = model.prepare_records(applications).feed
    together = model.score(feed, reasons_for=True, top_k=3)
    rows = np.array([0, 2, 3], dtype=np.intp)
    # When rows already scored are explained with their known probabilities
    afterwards = model.explain(feed, together.probability, rows, top_k=3)
    texts = model.explain_texts(feed, together.probability, rows, top_k=3, separator=" | ")
    # Then the reasons are the same as when they are computed in the scoring call
    assert afterwards == [together.reasons[row] for row in rows.tolist()]
    assert texts == [" | ".join(r.text for r in together.reasons[row]) for row in rows.tolist()]
    assert texts[0]
    assert model.explain(feed, together.probability, np.empty(0, dtype=np.intp)) == []


def test_given_explain_when_called_then_only_the_perturbed_rows_run(
    model: ScoringModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    feed = model.prepare_records([good_application()] * 3).feed
    probability = model.score(feed, reasons_for=False).probability
    calls = count_onnx_rows(model, monkeypatch)
    model.explain_texts(feed, probability, np.array([0, 2], dtype=np.intp))
    assert calls == [2 * len(bundles.FEATURE_ORDER)]


# ---- record validation -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "code"),
    [
        ("age", "24", "wrong_type"),
        ("age", 24.5, "wrong_type"),
        ("age", True, "wrong_type"),
        ("age", 17, "out_of_range"),
        ("loan_ratio", 1.5, "out_of_range"),
        ("loan_ratio", float("nan"), "not_finite"),
        ("income", float("inf"), "not_finite"),
        ("home", "CASTLE", "unknown_category"),
        ("home", 3, "wrong_type"),
        ("prior_default", 1, "wrong_type"),
        ("age", None, "null_not_allowed"),
    ],
)
def test_given_a_bad_value_when_preparing_records_then_the_field_and_code_are_reported(
    model: ScoringModel, field: str, value: object, code: str
) -> None:
    prepared = model.prepare_records([good_application(), {**good_application(), field: value}])
    assert prepared.valid.tolist() == [True, False]
    assert [(e.field, e.code) for e in prepared.errors[1]] == [(field, code)]
    assert field in prepared.errors[1][0].message


def test_given_missing_and_unknown_fields_when_preparing_records_then_both_are_named(
    model: ScoringModel,
) -> None:
    record = {k: v for k, v in good_application().items() if k != "age"} | {"shoe_size": 42}
    errors = model.prepare_records([record]).errors[0]
    assert {(e.field, e.code) for e in errors} == {("age", "missing"), ("shoe_size", "unknown_field")}


def test_given_a_null_in_a_nullable_feature_when_prepared_then_it_is_valid_and_fed_as_nan(
    model: ScoringModel,
) -> None:
    prepared = model.prepare_records([{**good_application(), "income": None}])
    assert prepared.valid.tolist() == [True]
    assert math.isnan(prepared.feed["income"][0, 0])
    assert 0.0 < model.score(prepared.feed).probability[0] < 1.0


# ---- column validation -----------------------------------------------------------------------


def test_given_csv_text_columns_when_prepared_then_valid_rows_score_like_records(model: ScoringModel) -> None:
    columns = {
        "age": ["24", "17", "x", "30"],
        "income": ["32000", "", "1000", "nan"],
        "home": ["RENT", "OWN", "CASTLE", "OWN"],
        "loan_ratio": ["0.45", "0.1", "0.2", "0.3"],
        "prior_default": ["true", "N", "maybe", "0"],
        "id": ["a", "b", "c", "d"],
    }
    prepared = model.prepare_columns(columns)
    assert prepared.valid.tolist() == [True, False, False, False]
    assert {(e.field, e.code) for e in prepared.errors[1]} == {("age", "out_of_range")}
    assert {(e.field, e.code) for e in prepared.errors[2]} == {
        ("age", "wrong_type"),
        ("home", "unknown_category"),
        ("prior_default", "wrong_type"),
    }
    assert {(e.field, e.code) for e in prepared.errors[3]} == {("income", "not_finite")}
    from_columns = model.score(prepared.valid_feed()).probability
    from_records = model.score(model.prepare_records([good_application()]).feed).probability
    np.testing.assert_allclose(from_columns, from_records, rtol=0, atol=1e-15)


def test_given_coded_columns_when_prepared_then_feed_and_errors_match_plain_cells(
    model: ScoringModel,
) -> None:
    plain: dict[str, list[object]] = {
        "age": ["24", "17", "x", "30", "24"],
        "income": ["32000", "", "1000", "5", None],
        "home": ["RENT", "OWN", "CASTLE", None, "RENT"],
        "loan_ratio": ["0.45", "0.1", "0.2", "0.3", "0.45"],
        "prior_default": ["true", "N", "maybe", "0", "true"],
    }
    coded: dict[str, ColumnInput] = {}
    for name, cells in plain.items():
        distinct = list(dict.fromkeys(cells))
        codes = np.array([distinct.index(cell) for cell in cells], dtype=np.intp)
        coded[name] = CodedColumn(codes=codes, values=distinct)
    expected = model.prepare_columns(plain)
    # When the same cells arrive as codes into their distinct values
    prepared = model.prepare_columns(coded)
    # Then the validity, the errors and the feed are the same
    assert prepared.valid.tolist() == expected.valid.tolist()
    assert prepared.errors == expected.errors
    assert ("home", "unknown_category") in {(e.field, e.code) for e in prepared.errors[2]}
    for name, column in expected.feed.items():
        np.testing.assert_array_equal(prepared.feed[name], column)


def test_given_typed_arrays_when_prepared_then_masks_find_nulls_ranges_and_non_integers(
    model: ScoringModel,
) -> None:
    columns = {
        "age": np.array([24, 30, 200], dtype=np.int64),
        "income": np.array([np.nan, 1.0, 2.0]),
        "home": np.array(["RENT", None, "OWN"], dtype=object),
        "loan_ratio": np.array([0.1, 0.2, np.inf]),
        "prior_default": np.array([True, False, True]),
    }
    prepared = model.prepare_columns(columns)
    assert prepared.valid.tolist() == [True, False, False]
    assert {(e.field, e.code) for e in prepared.errors[1]} == {("home", "null_not_allowed")}
    assert {(e.field, e.code) for e in prepared.errors[2]} == {
        ("age", "out_of_range"),
        ("loan_ratio", "not_finite"),
    }
    assert prepared.feed["age"].shape == (3, 1)


@pytest.mark.parametrize("cell", [[24], [24, 25], []], ids=["one element", "two elements", "empty"])
def test_given_columns_of_lists_when_prepared_then_each_list_is_a_wrong_type_not_a_value(
    model: ScoringModel, cell: list[int]
) -> None:
    # Given columns (as JSON Lines give them) whose every cell is a list of the same length
    columns: dict[str, list[object]] = {
        "age": [cell, cell],
        "income": [1.0, 2.0],
        "home": [["RENT"], ["RENT"]],
        "loan_ratio": [0.1, 0.2],
        "prior_default": [False, True],
    }
    # When prepared
    prepared = model.prepare_columns(columns)
    # Then both rows are rejected for those two fields, one column row per row
    assert prepared.valid.tolist() == [False, False]
    for row in (0, 1):
        codes = {(e.field, e.code) for e in prepared.errors[row]}
        assert codes == {("age", "wrong_type"), ("home", "wrong_type")}
    assert prepared.feed["age"].shape == (2, 1)


def test_given_a_missing_feature_column_when_prepared_then_value_error_names_it(model: ScoringModel) -> None:
    with pytest.raises(ValueError, match="missing feature columns: home, loan_ratio"):
        model.prepare_columns({"age": [1], "income": [1.0], "prior_default": [True]})


# ---- leanness --------------------------------------------------------------------------------


def test_given_the_runtime_when_imported_then_neither_pandas_nor_sklearn_is_loaded() -> None:
    code = (
        "import sys, lambdas.scoring.runtime; "
        "print(sorted(m for m in ('pandas', 'sklearn') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


# ---- category encodings: text (older bundles) and codes -----------------------------------------


def _encoded_model(tmp_path: Path, category_input: str, *, home_nullable: bool = False) -> ScoringModel:
    onnx_bytes = bundles.logistic_onnx_bytes(category_input)
    card = bundles.logistic_card(onnx_bytes, category_input=category_input).model_dump(mode="json")
    for feature in card["features"]:
        if feature["name"] == "home":
            feature["nullable"] = home_nullable
    return ScoringModel.from_bytes(onnx_bytes, json.dumps(card).encode(), source=str(tmp_path))


def _random_columns(rows: int, seed: int) -> dict[str, list[object]]:
    rng = np.random.default_rng(seed)
    return {
        "age": rng.integers(18, 90, rows).astype(str).tolist(),
        "income": [("" if i % 7 == 0 else f"{v:.0f}") for i, v in enumerate(rng.uniform(0, 2e5, rows))],
        "home": rng.choice([*bundles.HOME_CATEGORIES, "CASTLE"], rows, p=[0.4, 0.3, 0.29, 0.01]).tolist(),
        "loan_ratio": rng.uniform(0, 1, rows).round(3).astype(str).tolist(),
        "prior_default": rng.choice(["true", "false"], rows).tolist(),
    }


def test_given_a_coded_category_when_prepared_then_the_feed_holds_its_position_among_the_card_categories(
    tmp_path: Path,
) -> None:
    model = _encoded_model(tmp_path, "int64")
    applications = [{**good_application(), "home": home} for home in ("MORTGAGE", "RENT", "OWN")]
    feed = model.prepare_records(applications).feed["home"]
    assert feed.dtype == np.int64
    assert feed.reshape(-1).tolist() == [
        bundles.HOME_CATEGORIES.index(h) for h in ("MORTGAGE", "RENT", "OWN")
    ]


@pytest.mark.parametrize("rows", [3, 40, 3000])  # the small-request path, the numpy path, locality order
def test_given_the_same_rows_when_scored_with_text_or_coded_categories_then_every_result_is_identical(
    tmp_path: Path, rows: int
) -> None:
    text_model, coded_model = (_encoded_model(tmp_path, encoding) for encoding in ("string", "int64"))
    columns = _random_columns(rows, seed=rows)
    by_text, by_code = text_model.prepare_columns(columns), coded_model.prepare_columns(columns)
    assert by_text.errors == by_code.errors
    assert 0 < int(by_code.valid.sum()) < rows or rows == 3
    text_scores = text_model.score(by_text.valid_feed(), reasons_for=True)
    coded_scores = coded_model.score(by_code.valid_feed(), reasons_for=True)
    np.testing.assert_array_equal(coded_scores.probability, text_scores.probability)
    assert coded_scores.decline.tolist() == text_scores.decline.tolist()
    assert coded_scores.reasons == text_scores.reasons
    declined = np.flatnonzero(coded_scores.decline)
    assert coded_model.explain_texts(
        by_code.valid_feed(), coded_scores.probability, declined
    ) == text_model.explain_texts(by_text.valid_feed(), text_scores.probability, declined)


def test_given_a_nullable_coded_category_when_null_then_it_is_fed_the_null_code_and_scored_as_the_null_text(
    tmp_path: Path,
) -> None:
    text_model = _encoded_model(tmp_path, "string", home_nullable=True)
    coded_model = _encoded_model(tmp_path, "int64", home_nullable=True)
    application = {**good_application(), "home": None}
    prepared = coded_model.prepare_records([application])
    assert not prepared.errors
    assert prepared.feed["home"].reshape(-1).tolist() == [NULL_CATEGORY_CODE]
    cells = coded_model.prepare_columns({name: [value] for name, value in application.items()})
    assert cells.feed["home"].reshape(-1).tolist() == [NULL_CATEGORY_CODE]
    coded = coded_model.score(prepared.feed).probability
    text = text_model.score(text_model.prepare_records([application]).feed).probability
    np.testing.assert_array_equal(coded, text)
    assert coded[0] == pytest.approx(_expected_probability({**application, "home": ""}), abs=1e-12)


def test_given_a_coded_baseline_that_is_not_a_category_when_loading_then_the_bundle_is_refused() -> None:
    onnx_bytes = bundles.logistic_onnx_bytes("int64")
    card = bundles.logistic_card(onnx_bytes, category_input="int64").model_dump(mode="json")
    card["reference"]["reason_baseline"]["home"] = "CASTLE"
    with pytest.raises(ModelBundleError, match="reason baseline of home is not one of its categories"):
        ScoringModel.from_bytes(onnx_bytes, json.dumps(card).encode())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"name": "age", "onnx_type": "int64"}, "age: an int64 \\(coded\\) input must be a category"),
        ({"name": "home", "categories": None}, "home: an int64 \\(coded\\) input must be a category"),
        ({"name": "age", "onnx_type": "string"}, "age: a string input must be a category"),
        ({"name": "home", "categories": ["RENT", "OWN", "RENT"]}, "home: coded categories must be distinct"),
        (
            {"name": "home", "categories": ["RENT", ""]},
            "home: coded categories must be distinct and non-empty",
        ),
    ],
)
def test_given_an_input_type_that_does_not_fit_its_feature_when_reading_the_card_then_it_is_named(
    change: dict[str, object], message: str
) -> None:
    onnx_bytes = bundles.logistic_onnx_bytes("int64")
    card = bundles.logistic_card(onnx_bytes, category_input="int64").model_dump(mode="json")
    for feature in card["features"]:
        if feature["name"] == change["name"]:
            feature.update(change)
    with pytest.raises(ValueError, match=message):
        ModelCard.model_validate(card)


@pytest.mark.parametrize("base", [31, 2**21])  # packed into one int64, and too wide to pack
def test_given_rows_of_reason_codes_when_keyed_then_keys_are_equal_exactly_where_rows_are(base: int) -> None:
    rng = np.random.default_rng(base)
    codes = rng.integers(-1, min(base - 1, 6), size=(2000, 3)).astype(np.int64)
    codes[:, 1] = np.where(rng.random(2000) < 0.5, base - 2, codes[:, 1])  # the largest code, often
    keys = runtime_module._row_keys(codes, base=base)
    assert keys.shape == (2000,)
    _, by_rows = np.unique(codes, axis=0, return_inverse=True)
    _, by_keys = np.unique(keys, return_inverse=True)
    same_rows = by_rows.reshape(-1)[:, None] == by_rows.reshape(-1)[None, :]
    same_keys = by_keys.reshape(-1)[:, None] == by_keys.reshape(-1)[None, :]
    assert np.array_equal(same_rows, same_keys)
    assert 10 < np.unique(keys).size < 2000
