"""ONNX export edge cases found in review: a numeric feature with no value in training (sklearn's
imputer drops it, the graph must too), the parity check's own inputs, and booleans fed by the card."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.pipeline import Pipeline

from lambdas.scoring.card import FeatureSchema
from tests.training.helpers import small_fit
from training.calibration import SigmoidCalibrator
from training.candidates import CANDIDATES, Candidate
from training.datasets.catalog import CREDIT_RISK, load_dataset
from training.features import model_input_frame
from training.onnx_export import PARITY_TOLERANCE, card_feed, check_parity, convert_pipeline, onnx_feed
from training.pipeline import coded_categories, feature_schema

IMPUTING = [c for c in CANDIDATES if c.name in ("logistic_regression", "random_forest")]


@pytest.fixture(scope="module")
def training() -> tuple[pd.DataFrame, np.ndarray]:
    frame = load_dataset("credit_risk").frame.sample(1500, random_state=5).reset_index(drop=True)
    return model_input_frame(CREDIT_RISK, frame), frame["loan_status"].to_numpy()


def _fit(candidate: Candidate, x: pd.DataFrame, y: np.ndarray) -> Pipeline:
    return small_fit(candidate, CREDIT_RISK, x, y)


@pytest.mark.filterwarnings("ignore:Skipping features without any observed values:UserWarning")
@pytest.mark.parametrize("candidate", IMPUTING, ids=lambda c: c.name)
def test_given_a_numeric_feature_missing_in_every_training_row_then_the_graph_drops_it_as_sklearn(
    candidate: Candidate, training: tuple[pd.DataFrame, np.ndarray]
) -> None:
    # Given training rows where employment length is never known, and imputers left to drop such a
    # column (keep_empty_features=False, sklearn's default; our pipelines keep it): the median imputer
    # has no statistic for it and drops the column
    x, y = training
    x = x.assign(person_emp_length=np.nan)
    pipeline = candidate.build(CREDIT_RISK, len(y), 0)
    pipeline.set_params(
        prepare__numeric__impute__keep_empty_features=False,
        prepare__numeric__impute_derived__keep_empty_features=False,
    )
    if candidate.name == "random_forest":
        pipeline.set_params(model__n_estimators=10)
    pipeline.fit(x, y)
    imputer = pipeline[0].named_transformers_["numeric"].named_steps["impute"]
    assert np.isnan(imputer.statistics_).sum() == 1
    # When converted (it failed: the scaler's width check for the linear model, onnxruntime's Where
    # shapes for the forest), then the graph scores as sklearn, with the feature known or not
    scored = x.head(60).copy()
    scored.loc[:29, "person_emp_length"] = 4.0
    categories = coded_categories(feature_schema(CREDIT_RISK, x))
    model = convert_pipeline(pipeline, CREDIT_RISK, (1.2, -0.3), categories)
    expected = pipeline.predict_proba(scored)[:, 1]
    parity = check_parity(
        model.SerializeToString(),
        onnx_feed(CREDIT_RISK, scored, categories),
        SigmoidCalibrator(1.2, -0.3).apply(expected),
    )
    assert parity.passed, parity.max_abs_difference
    assert parity.rows_checked == len(scored)


@pytest.fixture(scope="module")
def boosting(training: tuple[pd.DataFrame, np.ndarray]) -> tuple[bytes, dict[str, np.ndarray], np.ndarray]:
    """A converted boosting model, the feed of 20 rows and sklearn's probabilities for them.
    (Boosting: its graph scores zero rows, where the linear model's graph fails.)"""
    x, y = training
    pipeline = _fit(CANDIDATES[2], x, y)
    categories = coded_categories(feature_schema(CREDIT_RISK, x))
    model_bytes = convert_pipeline(pipeline, CREDIT_RISK, None, categories).SerializeToString()
    rows = x.head(20)
    return model_bytes, onnx_feed(CREDIT_RISK, rows, categories), pipeline.predict_proba(rows)[:, 1]


def test_given_one_expected_value_for_many_rows_then_parity_refuses_instead_of_broadcasting(
    boosting: tuple[bytes, dict[str, np.ndarray], np.ndarray],
) -> None:
    # Every row scored 20 times over the same rows: one expected value broadcast against all of them
    # passed (rows_checked 1) although 19 rows were never compared with their own probability
    model_bytes, feed, expected = boosting
    repeated = {name: np.repeat(values[:1], 20, axis=0) for name, values in feed.items()}
    with pytest.raises(ValueError, match="one expected probability per scored row"):
        check_parity(model_bytes, repeated, expected[:1])
    # A column vector would broadcast to a 20 x 20 comparison
    with pytest.raises(ValueError, match="one expected probability per scored row"):
        check_parity(model_bytes, feed, expected.reshape(-1, 1))


def test_given_no_rows_then_parity_refuses_rather_than_passing_on_nothing(
    boosting: tuple[bytes, dict[str, np.ndarray], np.ndarray],
) -> None:
    model_bytes, feed, expected = boosting
    empty = {name: values[:0] for name, values in feed.items()}
    with pytest.raises(ValueError, match="one expected probability per scored row"):
        check_parity(model_bytes, empty, expected[:0])


def test_given_a_nan_on_one_side_then_parity_fails(
    boosting: tuple[bytes, dict[str, np.ndarray], np.ndarray],
) -> None:
    model_bytes, feed, expected = boosting
    assert check_parity(model_bytes, feed, expected).max_abs_difference <= PARITY_TOLERANCE
    with_nan = expected.copy()
    with_nan[7] = np.nan  # NaN compares false with everything: it must not slip through
    parity = check_parity(model_bytes, feed, with_nan)
    assert not parity.passed
    assert np.isnan(parity.max_abs_difference)


def test_given_a_boolean_feature_as_text_then_card_feed_reads_it_as_training_does() -> None:
    # Training reads "yes"/"no"/"true"/... for a boolean feature (model_input_frame); scoring the
    # champion on the raw holdout by its card raised "Unable to parse string"
    feature = FeatureSchema(
        name="has_card",
        type="boolean",
        description="A card",
        nullable=True,
        reason="No card",
        onnx_input="has_card",
        onnx_type="double",
    )
    raw = pd.DataFrame({"has_card": ["yes", "No", "TRUE", "0", None, True, False]})
    feed = card_feed([feature], raw)["has_card"]
    assert feed.dtype == np.float64
    assert feed.shape == (7, 1)
    np.testing.assert_array_equal(feed.ravel(), [1.0, 0.0, 1.0, 0.0, np.nan, 1.0, 0.0])
