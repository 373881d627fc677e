"""Sigmoid (Platt) calibration on the logit of a model's probability.

Chosen over isotonic because it converts exactly to ONNX (isotonic converts but disagrees by up
to 0.04 with skl2onnx 1.20) and is stable on small data. It is applied only where it improves the
cross-validated Brier score, measured on out-of-fold predictions with the calibrator itself fitted
out of fold (so the comparison is honest).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss
from sklearn.model_selection import StratifiedKFold

_EPS = 1e-15


def logit(probability: NDArray[np.float64]) -> NDArray[np.float64]:
    clipped = np.clip(probability, _EPS, 1 - _EPS)
    return np.asarray(np.log(clipped / (1 - clipped)), dtype=np.float64)


@dataclass(frozen=True)
class SigmoidCalibrator:
    slope: float
    intercept: float

    def apply(self, probability: NDArray[np.float64]) -> NDArray[np.float64]:
        return np.asarray(
            1.0 / (1.0 + np.exp(-(self.slope * logit(probability) + self.intercept))), dtype=np.float64
        )


def fit_sigmoid(probability: NDArray[np.float64], y: NDArray[np.int_]) -> SigmoidCalibrator:
    # Nearly unregularised: Platt scaling is a two-parameter fit on plenty of rows.
    model = LogisticRegression(C=1e6, solver="lbfgs", max_iter=1000)
    model.fit(logit(probability).reshape(-1, 1), y)
    return SigmoidCalibrator(slope=float(model.coef_[0, 0]), intercept=float(model.intercept_[0]))


def cross_fitted_sigmoid(
    probability: NDArray[np.float64], y: NDArray[np.int_], seed: int, folds: int = 5
) -> NDArray[np.float64]:
    """Calibrated out-of-fold probabilities, each row calibrated by a map fitted without it."""
    calibrated = np.empty_like(probability)
    for fit_rows, apply_rows in StratifiedKFold(folds, shuffle=True, random_state=seed).split(probability, y):
        calibrator = fit_sigmoid(probability[fit_rows], y[fit_rows])
        calibrated[apply_rows] = calibrator.apply(probability[apply_rows])
    return calibrated


@dataclass(frozen=True)
class CalibrationDecision:
    use_sigmoid: bool
    brier_uncalibrated: float
    brier_calibrated: float
    reason: str


def decide_calibration(
    probability: NDArray[np.float64], y: NDArray[np.int_], seed: int, min_relative_gain: float = 0.005
) -> tuple[CalibrationDecision, NDArray[np.float64]]:
    """Calibrate only for a gain above 0.5% of the Brier score: a fixed margin, not a noise test (on
    credit_risk's training rows it is 0.7-5 standard errors of the mean row-wise gain)."""
    calibrated = cross_fitted_sigmoid(probability, y, seed)
    before = float(brier_score_loss(y, probability))
    after = float(brier_score_loss(y, calibrated))
    use = before - after > min_relative_gain * before
    reason = (
        f"sigmoid lowers out-of-fold Brier from {before:.5f} to {after:.5f}"
        if use
        else f"sigmoid lowers out-of-fold Brier by less than {min_relative_gain:.1%} "
        f"({before:.5f} -> {after:.5f})"
    )
    return CalibrationDecision(use, before, after, reason), (calibrated if use else probability)
