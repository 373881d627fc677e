"""Decision threshold by expected cost.

Declining is the positive decision (predicted default). With c_fn the cost of approving an
applicant who defaults and c_fp the cost of declining one who would have repaid, the expected
cost per application at threshold t is (c_fn * FN(t) + c_fp * FP(t)) / N. For perfectly
calibrated probabilities the optimum is t* = c_fp / (c_fp + c_fn); the threshold used is the
empirical minimiser on out-of-fold predictions of the training rows (never the holdout).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class ThresholdChoice:
    threshold: float
    expected_cost: float
    theoretical_threshold: float


def expected_cost(
    y: NDArray[np.int_], probability: NDArray[np.float64], threshold: float, cost_fn: float, cost_fp: float
) -> float:
    declined = probability >= threshold
    missed_defaults = np.sum(~declined & (y == 1))
    declined_good = np.sum(declined & (y == 0))
    return float((cost_fn * missed_defaults + cost_fp * declined_good) / len(y))


def choose_threshold(
    y: NDArray[np.int_], probability: NDArray[np.float64], cost_fn: float = 5.0, cost_fp: float = 1.0
) -> ThresholdChoice:
    if cost_fn <= 0 or cost_fp <= 0:
        raise ValueError(f"costs must be positive, got cost_fn={cost_fn}, cost_fp={cost_fp}")
    order = np.argsort(-probability, kind="stable")
    sorted_p = probability[order]
    sorted_y = y[order]
    # Declining the k highest-scored rows: cost = c_fn * defaults not declined + c_fp * goods declined.
    defaults_declined = np.concatenate([[0], np.cumsum(sorted_y == 1)])
    goods_declined = np.concatenate([[0], np.cumsum(sorted_y == 0)])
    costs = cost_fn * (defaults_declined[-1] - defaults_declined) + cost_fp * goods_declined
    # Only cut between distinct scores, so a threshold reproduces exactly the counted split.
    valid = np.ones(len(costs), dtype=bool)
    valid[1:-1] = sorted_p[1:] != sorted_p[:-1]
    # Declining at or above a threshold in [0, 1] always declines a score of 1.0: with one, declining
    # nobody has no threshold (above 1 the card refuses it).
    valid[0] = sorted_p[0] < 1.0
    best = int(np.argmin(np.where(valid, costs, np.inf)))
    if best == 0:
        threshold = float(np.nextafter(sorted_p[0], np.inf))
    elif best == len(sorted_p):
        threshold = float(sorted_p[-1])
    else:
        midpoint = float((sorted_p[best - 1] + sorted_p[best]) / 2)
        # Between adjacent floats the midpoint rounds onto the lower score, which would decline it too.
        threshold = midpoint if midpoint > sorted_p[best] else float(sorted_p[best - 1])
    return ThresholdChoice(
        threshold=threshold,
        expected_cost=float(costs[best] / len(y)),
        theoretical_threshold=cost_fp / (cost_fp + cost_fn),
    )
