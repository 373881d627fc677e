"""Imbalance-aware evaluation: ranking (ROC AUC, PR AUC, KS) and probability quality (Brier, log loss)."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score, roc_curve

from lambdas.scoring.card import MetricSet

METRIC_NAMES = ("roc_auc", "pr_auc", "ks", "brier", "log_loss")
HIGHER_IS_BETTER = {"roc_auc": True, "pr_auc": True, "ks": True, "brier": False, "log_loss": False}


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
