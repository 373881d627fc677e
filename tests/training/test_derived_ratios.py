"""Derived ratios with a zero denominator: undefined, so NaN (missing) in training and in the ONNX
graph alike. Every candidate then trains on rows with a zero income and converts with parity."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import pytest
from numpy.typing import NDArray
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import DoubleTensorType
from sklearn.pipeline import Pipeline

from tests.training.helpers import small_fit
from training.candidates import CANDIDATES, Candidate
from training.datasets.catalog import CREDIT_RISK, JPMC_LOANS, load_dataset
from training.features import DerivedFeatures, derived_operations, model_input_frame
from training.onnx_export import (
    OPSET,
    PARITY_TOLERANCE,
    check_parity,
    convert_pipeline,
    onnx_feed,
    register_converters,
)
from training.pipeline import coded_categories, feature_schema

REPO_ROOT = Path(__file__).resolve().parents[2]
# Zeros of both signs, NaN, infinities, a subnormal and a huge value: every IEEE corner of Div.
EDGE_VALUES = [0.0, -0.0, 1.0, -2.5, 7.0, 5e-324, 1e308, np.inf, -np.inf, np.nan]
OPERATIONS = (("ratio", 0, 1), ("product", 0, 1), ("ratio", 1, 0))


def _edge_pairs() -> NDArray[np.float64]:
    """Every (left, right) pair of the edge values, one row each."""
    return np.array(list(itertools.product(EDGE_VALUES, EDGE_VALUES)), dtype=np.float64)


def _onnx_derived(derive: DerivedFeatures, x: NDArray[np.float64]) -> NDArray[np.float64]:
    """The DerivedFeatures graph on its own, run by onnxruntime."""
    register_converters()
    model: onnx.ModelProto = convert_sklearn(
        derive, initial_types=[("x", DoubleTensorType([None, x.shape[1]]))], target_opset=OPSET
    )
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {"x": x})[0], dtype=np.float64)


def test_given_zero_denominators_then_ratios_are_nan_and_every_other_value_is_numpy_division() -> None:
    x = _edge_pairs()
    left, right = x[:, 0], x[:, 1]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):  # 1e308 / 5e-324 overflows
        derived = DerivedFeatures(OPERATIONS).fit(x).transform(x)
        division, reverse, product = left / right, right / left, left * right
    # The inputs pass through, then left/right, left*right, right/left
    assert derived.shape == (len(x), 5)
    np.testing.assert_array_equal(derived[:, :2], x)
    # A zero denominator (0 or -0, whatever the numerator, NaN included) is NaN, never inf
    assert np.isnan(derived[right == 0, 2]).all()
    assert np.isnan(derived[left == 0, 4]).all()
    # Every other value is exactly numpy's division (NaN in gives NaN out, inf/finite stays inf)
    np.testing.assert_array_equal(derived[right != 0, 2], division[right != 0])
    np.testing.assert_array_equal(derived[left != 0, 4], reverse[left != 0])
    assert np.isinf(derived[right != 0, 2]).any()  # the edge values do still reach inf
    # Products are untouched: exactly numpy's multiplication
    np.testing.assert_array_equal(derived[:, 3], product)


def test_given_zero_denominators_when_converted_then_onnx_gives_nan_and_otherwise_numpy_division() -> None:
    x = _edge_pairs()
    left, right = x[:, 0], x[:, 1]
    derive = DerivedFeatures(OPERATIONS).fit(x)
    actual = _onnx_derived(derive, x)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):  # 1e308 / 5e-324 overflows
        division, reverse, product = left / right, right / left, left * right
        training = derive.transform(x)
    assert actual.shape == (len(x), 5)
    np.testing.assert_array_equal(actual[:, :2], x)
    assert np.isnan(actual[right == 0, 2]).all()
    assert np.isnan(actual[left == 0, 4]).all()
    np.testing.assert_array_equal(actual[right != 0, 2], division[right != 0])
    np.testing.assert_array_equal(actual[left != 0, 4], reverse[left != 0])
    np.testing.assert_array_equal(actual[:, 3], product)
    # And bit for bit what training computes (NaN where training has NaN)
    np.testing.assert_array_equal(actual, training)


@pytest.fixture(scope="module")
def jpmc_with_zero_incomes(shared_data: Path) -> pd.DataFrame:
    """JPMC model inputs with a zero income in every 25th row (the file has none), half of those
    with zero debt and loan too (0/0)."""
    frame = load_dataset("jpmc_loans", f"files:{shared_data / 'jpmc_loan_data' / 'Loan_Data.csv'}").frame
    sample = frame.sample(1500, random_state=3).reset_index(drop=True)
    x = model_input_frame(JPMC_LOANS, sample)
    x["default"] = sample["default"].to_numpy()
    x.loc[x.index % 25 == 0, "income"] = 0.0
    x.loc[x.index % 50 == 0, ["loan_amt_outstanding", "total_debt_outstanding"]] = 0.0
    return x


def _fitted(candidate: Candidate, x: pd.DataFrame, y: Any) -> Pipeline:
    return small_fit(candidate, JPMC_LOANS, x, y)


def _scored_rows(x: pd.DataFrame) -> pd.DataFrame:
    """The training rows plus unseen ones: income 0, -0 and missing."""
    extra = x.head(30).copy()
    extra.loc[:9, "income"] = 0.0
    extra.loc[10:19, "income"] = -0.0
    extra.loc[20:, "income"] = np.nan
    return pd.concat([x, extra], ignore_index=True)


@pytest.mark.parametrize("candidate", CANDIDATES, ids=lambda c: c.name)
def test_given_zero_incomes_when_every_candidate_trains_then_it_converts_with_parity(
    candidate: Candidate, jpmc_with_zero_incomes: pd.DataFrame
) -> None:
    # Given JPMC training rows, 60 of them with a zero income (debt/income, loan/income undefined)
    x = jpmc_with_zero_incomes.drop(columns="default")
    y = jpmc_with_zero_incomes["default"].to_numpy()
    assert (x["income"] == 0).sum() == 60
    # When the candidate trains (it used to fail with "Input X contains infinity")
    pipeline = _fitted(candidate, x, y)
    # Then its ONNX graph agrees with sklearn on rows with zero, negative-zero and missing incomes
    scored = _scored_rows(x)
    categories = coded_categories(feature_schema(JPMC_LOANS, x))
    model_bytes = convert_pipeline(pipeline, JPMC_LOANS, None, categories).SerializeToString()
    expected = pipeline.predict_proba(scored)[:, 1]
    parity = check_parity(model_bytes, onnx_feed(JPMC_LOANS, scored, categories), expected)
    assert parity.rows_checked == len(scored)
    assert parity.passed, parity.max_abs_difference
    assert parity.max_abs_difference <= PARITY_TOLERANCE
    assert np.isfinite(expected).all()
    # And a zero-income row's ratios are missing to the model: NaN for boosting, the training
    # median for the models that impute after deriving
    zero_income = scored[scored["income"] == 0]
    numeric = pipeline[0].named_transformers_["numeric"]
    if candidate.name == "hist_gradient_boosting":
        assert np.isnan(pipeline[0].transform(zero_income)[:, -2:]).all()
    else:
        imputed = numeric[:3].transform(zero_income[list(numeric.feature_names_in_)])
        medians = numeric.named_steps["impute_derived"].statistics_[-2:]
        assert np.array_equal(imputed[:, -2:], np.tile(medians, (len(zero_income), 1)))
        assert np.isfinite(medians).all()
    if candidate.name == "logistic_regression":
        # A zero income no longer pins the linear model's probability to exactly 0 or 1
        probabilities = pipeline.predict_proba(zero_income)[:, 1]
        assert ((probabilities > 0) & (probabilities < 1)).all()


@pytest.mark.parametrize(
    "candidate", [c for c in CANDIDATES if c.name != "hist_gradient_boosting"], ids=lambda c: c.name
)
def test_given_a_feature_missing_in_every_training_row_then_ratios_still_divide_their_own_columns(
    candidate: Candidate, jpmc_with_zero_incomes: pd.DataFrame
) -> None:
    # Given training rows where the first numeric feature (before the ratios' columns) is never known
    x = jpmc_with_zero_incomes.drop(columns="default")
    x["credit_lines_outstanding"] = np.nan
    y = jpmc_with_zero_incomes["default"].to_numpy()
    # When a candidate that imputes before deriving trains
    pipeline = _fitted(candidate, x, y)
    # Then the derived columns are debt/income and loan/income of each row, not of shifted columns
    numeric = pipeline[0].named_transformers_["numeric"]
    derived = numeric[:2].transform(x[list(numeric.feature_names_in_)])[:, -2:]
    known = (x["income"] != 0).to_numpy()
    expected = np.column_stack(
        [x["total_debt_outstanding"] / x["income"], x["loan_amt_outstanding"] / x["income"]]
    )[known]
    assert np.allclose(derived[known], expected)
    # And the graph still agrees with sklearn
    categories = coded_categories(feature_schema(JPMC_LOANS, x))
    model_bytes = convert_pipeline(pipeline, JPMC_LOANS, None, categories).SerializeToString()
    parity = check_parity(model_bytes, onnx_feed(JPMC_LOANS, x, categories), pipeline.predict_proba(x)[:, 1])
    assert parity.passed, parity.max_abs_difference


def test_committed_champion_has_no_derived_features_so_zero_denominators_cannot_touch_it() -> None:
    # The credit_risk spec declares no ratios or products...
    assert CREDIT_RISK.derived == ()
    assert derived_operations(CREDIT_RISK) == ()
    # ...and the committed graph divides, multiplies and compares nothing a ratio would emit
    model = onnx.load(REPO_ROOT / "model_artifacts" / "credit_risk" / "model.onnx")
    assert not {"Div", "Mul", "Equal", "Where"} & {node.op_type for node in model.graph.node}
