"""ONNX export: every candidate family converts with probability parity ≤ 1e-5, in double precision,
its categories entering as int64 codes (exact: the graph maps each code back to its text)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest
from sklearn.pipeline import Pipeline

from lambdas.scoring.card import NULL_CATEGORY_CODE
from tests.training.helpers import small_fit
from training.calibration import SigmoidCalibrator
from training.candidates import CANDIDATES, Candidate
from training.datasets.catalog import CREDIT_RISK, load_dataset
from training.datasets.spec import DatasetSpec
from training.features import MISSING_CATEGORY, model_input_frame
from training.onnx_export import (
    OPSET,
    PARITY_TOLERANCE,
    UNSEEN_CATEGORY_CODE,
    UNSEEN_CATEGORY_TEXT,
    category_codes,
    check_parity,
    convert_pipeline,
    convert_with_text_inputs,
    encode_category_inputs,
    onnx_feed,
    onnx_probabilities,
)
from training.pipeline import coded_categories, feature_schema


def _categories(x: pd.DataFrame, spec: DatasetSpec = CREDIT_RISK) -> dict[str, list[str]]:
    """The categories the card lists for these training inputs (what the codes index)."""
    return coded_categories(feature_schema(spec, x))


@pytest.fixture(scope="module")
def sample() -> pd.DataFrame:
    frame = load_dataset("credit_risk").frame.sample(2500, random_state=7).reset_index(drop=True)
    return frame


@pytest.mark.parametrize("candidate", CANDIDATES, ids=lambda c: c.name)
def test_given_fitted_candidate_when_converted_then_probabilities_match(
    candidate: Candidate, sample: pd.DataFrame
) -> None:
    # Given a fitted pipeline on data with missing values (emp length, interest rate)
    x = model_input_frame(CREDIT_RISK, sample)
    y = sample["loan_status"].to_numpy()
    assert x["loan_int_rate"].isna().any()
    pipeline = candidate.build(CREDIT_RISK, len(y), 0)
    if candidate.name == "hist_gradient_boosting":
        pipeline.set_params(model__max_iter=80)
    if candidate.name == "random_forest":
        pipeline.set_params(model__n_estimators=20)
    pipeline.fit(x, y)
    # When converted and run in onnxruntime
    categories = _categories(x)
    model_bytes = convert_pipeline(pipeline, CREDIT_RISK, None, categories).SerializeToString()
    parity = check_parity(model_bytes, onnx_feed(CREDIT_RISK, x, categories), pipeline.predict_proba(x)[:, 1])
    # Then every row agrees within the tolerance
    assert parity.rows_checked == len(y)
    assert parity.passed, parity.max_abs_difference
    assert parity.max_abs_difference <= PARITY_TOLERANCE


def test_given_calibration_when_appended_then_graph_applies_the_same_sigmoid(sample: pd.DataFrame) -> None:
    x = model_input_frame(CREDIT_RISK, sample)
    y = sample["loan_status"].to_numpy()
    pipeline = CANDIDATES[0].build(CREDIT_RISK, len(y), 0).fit(x, y)
    calibrator = SigmoidCalibrator(slope=0.8, intercept=-0.4)
    categories = _categories(x)
    model = convert_pipeline(pipeline, CREDIT_RISK, (calibrator.slope, calibrator.intercept), categories)
    expected = calibrator.apply(pipeline.predict_proba(x)[:, 1])
    parity = check_parity(model.SerializeToString(), onnx_feed(CREDIT_RISK, x, categories), expected)
    assert parity.passed, parity.max_abs_difference
    # And the outputs are plain tensors: label [N] int64, probabilities [N, 2] double (no ZipMap)
    session = ort.InferenceSession(model.SerializeToString())
    label, probabilities = session.run(
        ["label", "probabilities"], onnx_feed(CREDIT_RISK, x.head(3), categories)
    )
    assert probabilities.dtype == np.float64
    assert probabilities.shape == (3, 2)
    assert label.dtype == np.int64
    assert label.shape == (3,)
    assert np.array_equal(label, (probabilities[:, 1] > 0.5).astype(np.int64))


def test_given_boosting_when_a_value_sits_next_to_a_split_then_double_precision_keeps_parity(
    sample: pd.DataFrame,
) -> None:
    # Given boosting trained on the sample and inputs nudged by one float64 ulp around every split value
    x = model_input_frame(CREDIT_RISK, sample)
    y = sample["loan_status"].to_numpy()
    pipeline = next(c for c in CANDIDATES if c.name == "hist_gradient_boosting").build(CREDIT_RISK, len(y), 0)
    pipeline.set_params(model__max_iter=60)
    pipeline.fit(x, y)
    thresholds = np.unique(
        np.concatenate(
            [
                p[0].nodes["num_threshold"][~p[0].nodes["is_leaf"].astype(bool)]
                for p in pipeline[-1]._predictors
            ]
        )
    )
    nudged = pd.concat([x.head(len(thresholds))] * 2, ignore_index=True)
    values = np.concatenate([np.nextafter(thresholds, -np.inf), np.nextafter(thresholds, np.inf)])
    nudged["loan_percent_income"] = values[: len(nudged)]
    categories = _categories(x)
    model_bytes = convert_pipeline(pipeline, CREDIT_RISK, None, categories).SerializeToString()
    parity = check_parity(
        model_bytes, onnx_feed(CREDIT_RISK, nudged, categories), pipeline.predict_proba(nudged)[:, 1]
    )
    assert parity.passed, parity.max_abs_difference


def test_given_derived_ratios_when_converted_then_a_zero_denominator_is_missing_in_both(
    shared_data: Path,
) -> None:
    # Given the JPMC spec (debt/income and loan/income computed inside the graph) and a zero income
    from training.datasets.catalog import JPMC_LOANS

    frame = load_dataset("jpmc_loans", f"files:{shared_data / 'jpmc_loan_data' / 'Loan_Data.csv'}").frame
    sample = frame.sample(1500, random_state=2).reset_index(drop=True)
    x = model_input_frame(JPMC_LOANS, sample)
    y = sample["default"].to_numpy()
    pipeline = next(c for c in CANDIDATES if c.name == "hist_gradient_boosting").build(JPMC_LOANS, len(y), 0)
    pipeline.set_params(model__max_iter=40)
    pipeline.fit(x, y)
    scored = x.copy()
    scored.loc[0, "income"] = 0.0  # both ratios are undefined: NaN (missing), not IEEE's +inf
    categories = _categories(x, JPMC_LOANS)
    model_bytes = convert_pipeline(pipeline, JPMC_LOANS, None, categories).SerializeToString()
    parity = check_parity(
        model_bytes, onnx_feed(JPMC_LOANS, scored, categories), pipeline.predict_proba(scored)[:, 1]
    )
    assert parity.passed, parity.max_abs_difference
    # The boosting trees see the two ratios as missing, and no inf anywhere
    prepared = pipeline[0].transform(scored.head(2))
    assert np.isnan(prepared[0, -2:]).all()
    assert np.isfinite(prepared[1]).all()
    assert not np.isinf(prepared).any()


CATEGORY_FEATURES = [f.name for f in CREDIT_RISK.features if f.kind == "category"]


def _fitted(candidate: Candidate, x: pd.DataFrame, y: Any) -> Pipeline:
    return small_fit(candidate, CREDIT_RISK, x, y)


@pytest.fixture(scope="module")
def with_missing(sample: pd.DataFrame) -> pd.DataFrame:
    """Model inputs with every category missing in every 10th row: the encoders learn the missing text."""
    x = model_input_frame(CREDIT_RISK, sample)
    x.loc[x.index % 10 == 0, CATEGORY_FEATURES] = MISSING_CATEGORY
    return x


def test_given_converted_pipeline_then_category_inputs_are_int64_codes_and_the_card_says_so(
    sample: pd.DataFrame,
) -> None:
    x = model_input_frame(CREDIT_RISK, sample)
    pipeline = _fitted(CANDIDATES[0], x, sample["loan_status"].to_numpy())
    categories = _categories(x)
    model = convert_pipeline(pipeline, CREDIT_RISK, None, categories)
    # The graph takes every feature under its own name, categories as int64 [N, 1], numbers as double
    session = ort.InferenceSession(model.SerializeToString())
    types = {i.name: (i.type, i.shape) for i in session.get_inputs()}
    assert [i.name for i in session.get_inputs()] == [f.name for f in CREDIT_RISK.features]
    for feature in CREDIT_RISK.features:
        expected = "tensor(int64)" if feature.kind == "category" else "tensor(double)"
        assert types[feature.name] == (expected, [None, 1])
    # Each code input goes to one LabelEncoder only (code -> text), the encoders read its output
    for name in CATEGORY_FEATURES:
        consumers = [n for n in model.graph.node if name in n.input]
        assert [(n.op_type, n.name, list(n.output)) for n in consumers] == [
            ("LabelEncoder", f"{name}_code_to_text", [f"{name}_text"])
        ]
    # int64 keys with text values need ai.onnx.ml 2+; skl2onnx imported 1 for the linear model
    assert {o.domain: o.version for o in model.opset_import}["ai.onnx.ml"] == OPSET["ai.onnx.ml"]
    # And the card describes the same inputs
    schemas = {f.name: f for f in feature_schema(CREDIT_RISK, x)}
    assert {n for n, f in schemas.items() if f.onnx_type == "int64"} == set(CATEGORY_FEATURES)
    assert all(f.onnx_type == "double" for n, f in schemas.items() if n not in CATEGORY_FEATURES)
    assert all(schemas[n].categories == categories[n] for n in CATEGORY_FEATURES)


@pytest.mark.parametrize("candidate", CANDIDATES, ids=lambda c: c.name)
def test_given_missing_and_unseen_categories_when_coded_then_graph_matches_sklearn_and_text_graph(
    candidate: Candidate, with_missing: pd.DataFrame, sample: pd.DataFrame
) -> None:
    # Given a pipeline fitted with some missing categories, and rows whose categories are all
    # missing (code -1) or all never seen in training (code -2)
    pipeline = _fitted(candidate, with_missing, sample["loan_status"].to_numpy())
    categories = _categories(with_missing)
    assert all(MISSING_CATEGORY not in c for c in categories.values())
    rows = pd.concat([with_missing.head(50)] * 2, ignore_index=True)
    rows.loc[:49, CATEGORY_FEATURES] = MISSING_CATEGORY
    rows.loc[50:, CATEGORY_FEATURES] = "never seen in training"
    feed = onnx_feed(CREDIT_RISK, rows, categories)
    for name in CATEGORY_FEATURES:
        assert feed[name].dtype == np.int64
        assert feed[name].ravel().tolist() == [NULL_CATEGORY_CODE] * 50 + [UNSEEN_CATEGORY_CODE] * 50
    expected = pipeline.predict_proba(rows)[:, 1]
    if candidate.name != "hist_gradient_boosting":
        # One-hot encoders learned a column for the missing text, so the two codes must not be
        # confused. (The ordinal encoder codes it 0, next to unseen -1: no split falls between.)
        assert np.any(expected[:50] != expected[50:])
    # When scored by the coded graph
    coded = convert_pipeline(pipeline, CREDIT_RISK, None, categories).SerializeToString()
    parity = check_parity(coded, feed, expected)
    # Then it agrees with sklearn, and bit for bit with the same graph fed text
    assert parity.passed, parity.max_abs_difference
    text_graph = convert_with_text_inputs(pipeline, CREDIT_RISK, None).SerializeToString()
    text_feed = {**feed, **{n: rows[[n]].to_numpy(dtype=object) for n in CATEGORY_FEATURES}}
    assert np.array_equal(onnx_probabilities(coded, feed), onnx_probabilities(text_graph, text_feed))


def test_given_same_fitted_pipeline_when_converted_twice_then_bytes_are_identical(
    with_missing: pd.DataFrame, sample: pd.DataFrame
) -> None:
    boosting = next(c for c in CANDIDATES if c.name == "hist_gradient_boosting")
    pipeline = _fitted(boosting, with_missing, sample["loan_status"].to_numpy())
    categories = _categories(with_missing)
    first = convert_pipeline(pipeline, CREDIT_RISK, (0.9, -0.1), categories).SerializeToString()
    second = convert_pipeline(pipeline, CREDIT_RISK, (0.9, -0.1), categories).SerializeToString()
    assert first == second


def test_category_codes_are_positions_with_missing_and_unseen_codes() -> None:
    codes = category_codes(["B", "", "A", "Z", "C"], ["A", "B", "C"])
    assert codes.dtype == np.int64
    assert codes.tolist() == [1, NULL_CATEGORY_CODE, 0, UNSEEN_CATEGORY_CODE, 2]


@pytest.mark.parametrize(
    ("categories", "message"),
    [
        ({"loan_grade": ["A", "A"]}, "distinct"),
        ({"loan_grade": ["A", MISSING_CATEGORY]}, "distinct"),
        ({"loan_grade": ["A", UNSEEN_CATEGORY_TEXT]}, "distinct"),
        ({"loan_amnt": ["A"]}, "not text inputs"),
        ({"no_such_input": ["A"]}, "not text inputs"),
    ],
)
def test_given_unusable_categories_when_encoding_inputs_then_it_refuses(
    sample: pd.DataFrame, categories: dict[str, list[str]], message: str
) -> None:
    x = model_input_frame(CREDIT_RISK, sample)
    pipeline = _fitted(CANDIDATES[0], x, sample["loan_status"].to_numpy())
    model = convert_with_text_inputs(pipeline, CREDIT_RISK, None)
    with pytest.raises(ValueError, match=message):
        encode_category_inputs(model, categories)


def test_given_a_category_feature_without_categories_when_converting_then_it_refuses(
    sample: pd.DataFrame,
) -> None:
    x = model_input_frame(CREDIT_RISK, sample)
    pipeline = _fitted(CANDIDATES[0], x, sample["loan_status"].to_numpy())
    partial = {k: v for k, v in _categories(x).items() if k != "loan_grade"}
    with pytest.raises(ValueError, match="loan_grade"):
        convert_pipeline(pipeline, CREDIT_RISK, None, partial)
