"""Imbalance-aware evaluation: ranking (ROC AUC, PR AUC, KS), probability quality (Brier, log loss,
calibration by bins), what the chosen threshold's decisions do on held-out rows, and how uncertain
those figures are (Wilson score intervals for rates, stratified bootstrap for ROC AUC and Brier, and
a paired one for their differences from the registered champion on the same rows)."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
from numpy.typing import NDArray
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score, roc_curve

from lambdas.scoring.card import (
    CalibrationBin,
    CalibrationReport,
    DecisionOutcomes,
    DifferenceIntervals,
    HoldoutUncertainty,
    Interval,
    MetricSet,
)

METRIC_NAMES = ("roc_auc", "pr_auc", "ks", "brier", "log_loss")
HIGHER_IS_BETTER = {"roc_auc": True, "pr_auc": True, "ks": True, "brier": False, "log_loss": False}
CALIBRATION_BINS = 10
CONFIDENCE = 0.95
Z_95 = 1.959963984540054  # the standard normal's 97.5% quantile: a two-sided 95% interval


def evaluate(y_true: NDArray[np.int_], probability: NDArray[np.float64]) -> MetricSet:
    if len(np.unique(y_true)) < 2:
        raise ValueError("metrics need both classes in the evaluated rows")
    false_positive_rate, true_positive_rate, _ = roc_curve(y_true, probability)
    clipped = np.clip(probability, 1e-15, 1 - 1e-15)
    return MetricSet(
        roc_auc=float(roc_auc_score(y_true, probability)),
        # "PR AUC" is average precision (precision summed over recall steps): the trapezoidal area under
        # the PR curve interpolates linearly between points, which overstates it.
        pr_auc=float(average_precision_score(y_true, probability)),
        # KS: the largest gap between the score distributions of defaulters and repayers (= max TPR - FPR).
        ks=float(np.max(true_positive_rate - false_positive_rate)),
        brier=float(brier_score_loss(y_true, probability)),
        log_loss=float(log_loss(y_true, clipped, labels=[0, 1])),
    )


def summarise(fold_metrics: list[MetricSet]) -> tuple[MetricSet, MetricSet]:
    """Mean and standard deviation over folds. The deviation is the folds' own spread (ddof=0, as
    scikit-learn's search results give std_test_score), not an estimate of a population's: with 5-15
    folds the ddof=1 figure is 3.5-12% larger."""
    table = np.array([[getattr(m, name) for name in METRIC_NAMES] for m in fold_metrics])
    mean = MetricSet(**{name: float(v) for name, v in zip(METRIC_NAMES, table.mean(axis=0), strict=True)})
    std = MetricSet(**{name: float(v) for name, v in zip(METRIC_NAMES, table.std(axis=0), strict=True)})
    return mean, std


def share(numerator: int, denominator: int) -> float | None:
    """None where there is nothing to take a share of (undefined, not zero)."""
    return float(numerator / denominator) if denominator else None


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> Interval | None:
    """The Wilson score interval of the proportion ``successes / trials`` (95% with the default ``z``).

    With p = successes / trials and n = trials::

        centre = (p + z²/2n) / (1 + z²/n)
        half   = z / (1 + z²/n) · sqrt(p(1 - p)/n + z²/4n²)

    Unlike the normal (Wald) interval it stays inside [0, 1] and is not zero-width at 0/n or n/n:
    0 of n gives [0, z²/(n + z²)]. None when there are no trials (undefined, not [0, 0]).
    """
    if trials < 0 or not 0 <= successes <= trials:
        raise ValueError(f"successes must be within 0..trials, got {successes} successes of {trials} trials")
    if trials == 0:
        return None
    p = successes / trials
    z2 = z * z
    scale = 1 + z2 / trials
    centre = (p + z2 / (2 * trials)) / scale
    half = z / scale * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials))
    # At 0/n and n/n the bound is exactly 0 or 1 (the formula gives it up to rounding).
    lower = 0.0 if successes == 0 else max(0.0, centre - half)
    upper = 1.0 if successes == trials else min(1.0, centre + half)
    return Interval(lower=lower, upper=upper)


def rank_auc(positive_scores: NDArray[np.float64], negative_scores: NDArray[np.float64]) -> float:
    """ROC AUC as the share of (positive, negative) pairs ranked right, ties counting half
    (the Mann-Whitney statistic): equal to ``roc_auc_score`` (a test checks it, ties included). For the
    bootstrap's hundreds of resamples: 0.28 ms against roc_auc_score's 3.6 ms on 6,482 holdout rows,
    whose input checks and curve building the resamples do not need."""
    negatives = np.sort(negative_scores)
    below = np.searchsorted(negatives, positive_scores, side="left")
    tied = np.searchsorted(negatives, positive_scores, side="right") - below
    return float((below.sum() + 0.5 * tied.sum()) / (len(positive_scores) * len(negatives)))


def stratified_resamples(
    y_true: NDArray[np.int_], resamples: int, seed: int
) -> Iterator[tuple[NDArray[np.intp], NDArray[np.intp]]]:
    """The rows of each stratified bootstrap resample, as (positive rows, negative rows) indices into
    ``y_true``: the positive rows drawn with replacement to their own count, then the negative rows to
    theirs, so every resample has both classes (ROC AUC is defined) and the holdout's positive rate."""
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    positive_rows = np.flatnonzero(y_true == 1)
    negative_rows = np.flatnonzero(y_true == 0)
    if len(positive_rows) == 0 or len(negative_rows) == 0:
        raise ValueError("bootstrap intervals need both classes in the evaluated rows")
    rng = np.random.default_rng(seed)
    # A generator expression, not a generator function: the checks above run when it is called.
    # Within a resample the positives are drawn first (a tuple's items are evaluated in order).
    return (
        (
            positive_rows[rng.integers(0, len(positive_rows), len(positive_rows))],
            negative_rows[rng.integers(0, len(negative_rows), len(negative_rows))],
        )
        for _ in range(resamples)
    )


def _squared_errors(y_true: NDArray[np.int_], probability: NDArray[np.float64]) -> NDArray[np.float64]:
    """Each row's Brier term: (1 - p)² for a positive, p² for a negative."""
    return np.where(y_true == 1, (1 - probability) ** 2, probability**2)


def percentile_interval(values: NDArray[np.float64], confidence: float) -> Interval:
    """The central ``confidence`` interval of bootstrap figures (percentile method)."""
    lower, upper = np.quantile(values, [(1 - confidence) / 2, (1 + confidence) / 2])
    return Interval(lower=float(lower), upper=float(upper))


def _class_counts(y_true: NDArray[np.int_]) -> str:
    positives = int((y_true == 1).sum())
    return f"{positives} positives and {len(y_true) - positives} negatives"


def bootstrap_intervals(
    y_true: NDArray[np.int_],
    probability: NDArray[np.float64],
    resamples: int,
    seed: int,
    confidence: float = CONFIDENCE,
) -> HoldoutUncertainty:
    """Percentile intervals of ROC AUC and Brier score from a stratified bootstrap of the rows
    (``stratified_resamples``).

    The interval is the (1 - confidence)/2 and (1 + confidence)/2 quantiles of the resampled
    metrics. It measures sampling noise of the holdout rows only: not drift, nor the model's own
    variance from refitting.
    """
    probability = np.asarray(probability, dtype=np.float64)
    draws = stratified_resamples(y_true, resamples, seed)  # checks resamples and classes first
    errors = _squared_errors(y_true, probability)
    auc = np.empty(resamples)
    brier = np.empty(resamples)
    for r, (p, n) in enumerate(draws):
        auc[r] = rank_auc(probability[p], probability[n])
        brier[r] = (errors[p].sum() + errors[n].sum()) / (len(p) + len(n))
    return HoldoutUncertainty(
        method=(
            f"stratified bootstrap of the holdout rows: {_class_counts(y_true)} each drawn with "
            "replacement to their own count; percentile interval"
        ),
        resamples=resamples,
        seed=seed,
        confidence=confidence,
        roc_auc=percentile_interval(auc, confidence),
        brier=percentile_interval(brier, confidence),
    )


def paired_bootstrap_differences(
    y_true: NDArray[np.int_],
    candidate_probability: NDArray[np.float64],
    champion_probability: NDArray[np.float64],
    resamples: int,
    seed: int,
    confidence: float = CONFIDENCE,
) -> DifferenceIntervals:
    """Percentile intervals of the differences candidate - champion in ROC AUC and in Brier score, from a
    paired stratified bootstrap: each resample (``stratified_resamples``, as ``bootstrap_intervals``
    draws them with the same seed) scores both models on the same rows.

    Both models are scored on the same holdout, so a row that is hard for one is mostly hard for the
    other: their metrics move together from resample to resample, and the interval of the difference is
    narrower than independent resamples of each model would make it. An interval that holds 0 means the
    holdout cannot tell the two apart. Like ``bootstrap_intervals``, it measures the holdout's sampling
    noise only (not drift, nor either model's variance from refitting).
    """
    candidate = np.asarray(candidate_probability, dtype=np.float64)
    champion = np.asarray(champion_probability, dtype=np.float64)
    if not len(y_true) == len(candidate) == len(champion):
        raise ValueError(
            f"a paired bootstrap needs both models' probabilities on the same rows: {len(y_true)} labels, "
            f"{len(candidate)} candidate and {len(champion)} champion probabilities"
        )
    draws = stratified_resamples(y_true, resamples, seed)  # checks resamples and classes first
    error_difference = _squared_errors(y_true, candidate) - _squared_errors(y_true, champion)
    auc = np.empty(resamples)
    brier = np.empty(resamples)
    for r, (p, n) in enumerate(draws):
        auc[r] = rank_auc(candidate[p], candidate[n]) - rank_auc(champion[p], champion[n])
        brier[r] = (error_difference[p].sum() + error_difference[n].sum()) / (len(p) + len(n))
    return DifferenceIntervals(
        method=(
            f"paired stratified bootstrap of the holdout rows: {_class_counts(y_true)} each drawn with "
            "replacement to their own count, the same rows for both models; percentile interval of "
            "candidate - champion"
        ),
        resamples=resamples,
        seed=seed,
        confidence=confidence,
        roc_auc=percentile_interval(auc, confidence),
        brier=percentile_interval(brier, confidence),
    )


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
    index = np.searchsorted(np.arange(1, bins) / bins, probability, side="right")  # by the stated edges
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
