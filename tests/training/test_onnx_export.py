"""ONNX export: every candidate family converts with probability parity ≤ 1e-5, in double precision."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest

from training.calibration import SigmoidCalibrator
from training.candidates import CANDIDATES
from training.datasets.catalog import CREDIT_RISK, load_dataset
from training.features import model_input_frame
from training.onnx_export import PARITY_TOLERANCE, check_parity, convert_pipeline, onnx_feed


@pytest.fixture(scope="module")
def sample() -> pd.DataFrame:
    frame = load_dataset("credit_risk").frame.sample(2500, random_state=7).reset_index(drop=True)
    return frame


@pytest.mark.parametrize("candidate", CANDIDATES, ids=lambda c: c.name)
def test_given_fitted_candidate_when_converted_then_probabilities_match(candidate, sample) -> None:
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
    model_bytes = convert_pipeline(pipeline, CREDIT_RISK, None).SerializeToString()
    parity = check_parity(model_bytes, onnx_feed(CREDIT_RISK, x), pipeline.predict_proba(x)[:, 1])
    # Then every row agrees within the tolerance
    assert parity.rows_checked == len(y)
    assert parity.passed, parity.max_abs_difference
    assert parity.max_abs_difference <= PARITY_TOLERANCE


def test_given_calibration_when_appended_then_graph_applies_the_same_sigmoid(sample) -> None:
    x = model_input_frame(CREDIT_RISK, sample)
    y = sample["loan_status"].to_numpy()
    pipeline = CANDIDATES[0].build(CREDIT_RISK, len(y), 0).fit(x, y)
    calibrator = SigmoidCalibrator(slope=0.8, intercept=-0.4)
    model = convert_pipeline(pipeline, CREDIT_RISK, (calibrator.slope, calibrator.intercept))
    expected = calibrator.apply(pipeline.predict_proba(x)[:, 1])
    parity = check_parity(model.SerializeToString(), onnx_feed(CREDIT_RISK, x), expected)
    assert parity.passed, parity.max_abs_difference
    # And the outputs are plain tensors: label [N] int64, probabilities [N, 2] double (no ZipMap)
    session = ort.InferenceSession(model.SerializeToString())
    label, probabilities = session.run(["label", "probabilities"], onnx_feed(CREDIT_RISK, x.head(3)))
    assert probabilities.dtype == np.float64
    assert probabilities.shape == (3, 2)
    assert label.dtype == np.int64
    assert label.shape == (3,)
    assert np.array_equal(label, (probabilities[:, 1] > 0.5).astype(np.int64))


def test_given_boosting_when_a_value_sits_next_to_a_split_then_double_precision_keeps_parity(sample) -> None:
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
    model_bytes = convert_pipeline(pipeline, CREDIT_RISK, None).SerializeToString()
    parity = check_parity(model_bytes, onnx_feed(CREDIT_RISK, nudged), pipeline.predict_proba(nudged)[:, 1])
    assert parity.passed, parity.max_abs_difference


def test_given_derived_ratios_when_converted_then_a_zero_denominator_behaves_as_in_numpy(shared_data) -> None:
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
    scored.loc[0, "income"] = 0.0  # ratio becomes +inf in numpy and in ONNX Div alike
    model_bytes = convert_pipeline(pipeline, JPMC_LOANS, None).SerializeToString()
    parity = check_parity(model_bytes, onnx_feed(JPMC_LOANS, scored), pipeline.predict_proba(scored)[:, 1])
    assert parity.passed, parity.max_abs_difference
    assert np.isinf(pipeline[0].transform(scored.head(1))).any()
