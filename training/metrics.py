"""Imbalance-aware evaluation: ranking (ROC AUC, PR AUC, KS), probability quality (Brier, log loss,
calibration by bins) and what the chosen threshold's decisions do on held-out rows."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score, roc_curve

from lambdas.scoring.card import CalibrationBin, CalibrationReport, DecisionOutcomes, MetricSet

METRIC_NAMES = ("roc_auc", "pr_auc", "ks", "brier", "log_loss")
HIGHER_IS_BETTER = {"roc_auc": True, "pr_auc": True, "ks": True, "brier": False, "log_loss": False}
CALIBRATION_BINS = 10


def evaluate(y_true: NDArray[np.int_], probability: NDArray[np.float64]) -> MetricSet:
    if len(np.unique(y_true)) < 2:
        raise ValueError("metrics need both classes in the evaluated rows")
    false_positive_rate, true_positive_rate, _ = roc_curve(y_true, probability)
    clipped = np.clip(probability, 1e-15, 1 - 1e-15)
    return MetricSet(
        roc_auc=float(roc_auc_score(y_true, probability)),
        pr_auc=float(average_precision_score(y_true, probability)),
        ks=float(np.max(true_positive_rate - false_positive_rate)),
        brier=float(brier_score_loss(y_true, probability)),
        log_loss=float(log_loss(y_true, clipped, labels=[0, 1])),
    )


def summarise(fold_metrics: list[MetricSet]) -> tuple[MetricSet, MetricSet]:
    """Mean and standard deviation over folds."""
    table = np.array([[getattr(m, name) for name in METRIC_NAMES] for m in fold_metrics])
    mean = MetricSet(**{name: float(v) for name, v in zip(METRIC_NAMES, table.mean(axis=0), strict=True)})
    std = MetricSet(**{name: float(v) for name, v in zip(METRIC_NAMES, table.std(axis=0), strict=True)})
    return mean, std


def share(numerator: int, denominator: int) -> float | None:
    """None where there is nothing to take a share of (undefined, not zero)."""
    return float(numerator / denominator) if denominator else None


def decision_outcomes(
    y_true: NDArray[np.int_],
    probability: NDArray[np.float64],
    threshold: float,
    cost_of_approving_defaulter: float,
    cost_of_declining_good_applicant: float,
) -> DecisionOutcomes:
    """The confusion matrix of the decision rule (decline at or above ``threshold``), as rates."""
    declined = probability >= threshold
    defaulted = y_true == 1
    approved_defaulters = int((~declined & defaulted).sum())
    declined_repayers = int((declined & ~defaulted).sum())
    rows = len(y_true)
    return DecisionOutcomes(
        rows=rows,
        threshold=threshold,
        approval_rate=float((~declined).mean()),
        defaulters_declined_rate=share(int((declined & defaulted).sum()), int(defaulted.sum())),
        good_applicants_declined_rate=share(declined_repayers, int((~defaulted).sum())),
        declined_who_defaulted_rate=share(int((declined & defaulted).sum()), int(declined.sum())),
        approved_who_defaulted_rate=share(approved_defaulters, int((~declined).sum())),
        expected_cost_per_application=(
            cost_of_approving_defaulter * approved_defaulters
            + cost_of_declining_good_applicant * declined_repayers
        )
        / rows,
    )


def calibration_report(
    y_true: NDArray[np.int_],
    probability: NDArray[np.float64],
    evaluated_on: str,
    bins: int = CALIBRATION_BINS,
) -> CalibrationReport:
    """Observed default rate against mean predicted probability in ``bins`` equal-width bins of [0, 1]
    (the last bin includes 1.0); the expected calibration error weights each bin's gap by its rows."""
    index = np.minimum((probability * bins).astype(np.int64), bins - 1)
    report_bins: list[CalibrationBin] = []
    gaps: list[tuple[int, float]] = []
    for b in range(bins):
        rows = index == b
        count = int(rows.sum())
        mean_probability = float(probability[rows].mean()) if count else None
        observed = float(y_true[rows].mean()) if count else None
        if mean_probability is not None and observed is not None:
            gaps.append((count, abs(observed - mean_probability)))
        report_bins.append(
            CalibrationBin(
                lower=b / bins,
                upper=(b + 1) / bins,
                count=count,
                mean_probability=mean_probability,
                observed_default_rate=observed,
            )
        )
    total = sum(count for count, _ in gaps)
    return CalibrationReport(
        expected_calibration_error=float(sum(count * gap for count, gap in gaps) / total),
        max_calibration_error=float(max(gap for _, gap in gaps)),
        bins=report_bins,
        evaluated_on=evaluated_on,
    )
