"""Calibration and threshold review: reliability bins at their edges, the cost threshold at ties and
at the extremes against every possible cut, and the served calibration map at raw scores of 0 and 1."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from numpy.typing import NDArray

from tests.training.helpers import small_fit
from training.calibration import SigmoidCalibrator
from training.candidates import CANDIDATES
from training.datasets.catalog import CREDIT_RISK, load_dataset
from training.features import model_input_frame
from training.metrics import CALIBRATION_BINS, calibration_report
from training.onnx_export import convert_pipeline, onnx_feed, onnx_probabilities
from training.pipeline import coded_categories, feature_schema
from training.threshold import choose_threshold, expected_cost


def _around_every_edge() -> NDArray[np.float64]:
    """Each inner bin edge, and the 50 floats on either side of it; then 0 and 1."""
    edges = [b / CALIBRATION_BINS for b in range(1, CALIBRATION_BINS)]
    near = [edge + step * np.spacing(edge) for edge in edges for step in range(-50, 51)]
    return np.array([0.0, *near, 1.0])


def test_given_scores_at_and_beside_bin_edges_then_each_row_is_in_the_bin_its_edges_state() -> None:
    # Given scores on every edge, one float either side of it, and 0 and 1 (0.8999999999999999 times 10
    # rounds to 9.0: it was counted in the bin stated as [0.9, 1.0])
    probability = _around_every_edge()
    y = np.zeros(len(probability), dtype=np.int64)
    report = calibration_report(y, probability, "edges")
    # Then each bin holds exactly the scores within its stated [lower, upper) (the last one with 1.0)
    for b, calibration_bin in enumerate(report.bins):
        last = b == len(report.bins) - 1
        inside = (probability >= calibration_bin.lower) & (
            (probability <= calibration_bin.upper) if last else (probability < calibration_bin.upper)
        )
        assert calibration_bin.count == int(inside.sum()), (calibration_bin.lower, calibration_bin.upper)


def test_given_a_score_one_float_below_an_edge_then_its_bin_mean_lies_inside_the_bin() -> None:
    below = float(np.nextafter(0.9, 0.0))
    report = calibration_report(np.array([1]), np.array([below]), "1 row")
    assert report.bins[8].count == 1
    assert report.bins[8].mean_probability == below


_SCORES = np.array([0.0, 0.1, np.nextafter(0.5, 0.0), 0.5, np.nextafter(0.5, 1.0), 0.9, 1.0])
_COSTS = (0.5, 1.0, 5.0, 10.0)


def _cheapest_cut(y: NDArray[np.int_], p: NDArray[np.float64], cost_fn: float, cost_fp: float) -> float:
    """The lowest expected cost of any threshold in [0, 1]: at every score and just above it."""
    cuts = {0.0, 1.0, *p.tolist(), *np.nextafter(p, 2.0).tolist()}
    return min(expected_cost(y, p, t, cost_fn, cost_fp) for t in cuts if 0.0 <= t <= 1.0)


def test_given_tied_and_extreme_scores_then_the_threshold_is_the_cheapest_cut_and_costs_what_it_says() -> (
    None
):
    # Given a few rows drawn from tied scores, 0, 1 and neighbouring floats, under unequal costs
    rng = np.random.default_rng(20)
    for _ in range(3000):
        rows = int(rng.integers(1, 8))
        p = rng.choice(_SCORES, rows)
        y = rng.integers(0, 2, rows)
        cost_fn, cost_fp = float(rng.choice(_COSTS)), float(rng.choice(_COSTS))
        choice = choose_threshold(y, p, cost_fn, cost_fp)
        # Then the threshold is a probability, gives the stated cost, and no other cut is cheaper
        # (approving all, declining all and every cut between tied scores included)
        assert 0.0 <= choice.threshold <= 1.0
        given = expected_cost(y, p, choice.threshold, cost_fn, cost_fp)
        assert given == pytest.approx(choice.expected_cost, abs=1e-12)
        assert given <= _cheapest_cut(y, p, cost_fn, cost_fp) + 1e-12, (p, y, cost_fn, cost_fp)


def test_given_a_forest_scoring_exactly_0_and_1_then_the_graphs_calibration_matches_sklearns() -> None:
    # Given a 10-tree forest, whose unanimous leaves score rows exactly 0 and 1 (the clipped ends of the
    # logit), and a steep Platt map
    frame = load_dataset("credit_risk").frame.sample(1500, random_state=3).reset_index(drop=True)
    x = model_input_frame(CREDIT_RISK, frame)
    y = frame["loan_status"].to_numpy()
    forest = next(c for c in CANDIDATES if c.name == "random_forest")
    pipeline = small_fit(forest, CREDIT_RISK, x, y)
    raw = pipeline.predict_proba(x)[:, 1]
    assert (raw == 0.0).any()
    assert (raw == 1.0).any()
    calibrator = SigmoidCalibrator(slope=2.5, intercept=-0.7)
    categories = coded_categories(feature_schema(CREDIT_RISK, x))
    model = convert_pipeline(pipeline, CREDIT_RISK, (calibrator.slope, calibrator.intercept), categories)
    # When the graph scores the rows
    served = onnx_probabilities(model.SerializeToString(), onnx_feed(CREDIT_RISK, x, categories))
    # Then it gives sklearn's calibrated probability on every row, the clipped ends included
    expected = calibrator.apply(raw)
    ends = pd.Series(raw).isin([0.0, 1.0]).to_numpy()
    assert np.max(np.abs(served - expected)) < 1e-7
    assert np.max(np.abs(served[ends] - expected[ends])) < 1e-12
