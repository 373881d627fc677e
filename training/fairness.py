"""Fairness figures per protected attribute, on the holdout rows with the chosen threshold.

Per group: approval rate, observed default rate, true-positive rate (share of actual defaulters
declined) and the good-applicant approval rate (share of repaying applicants approved: the
"equal opportunity" view of lending). Differences are max minus min over the groups whose rate rests
on at least ``min_group_size`` cases: rows for the approval rates (the demographic parity difference
and the adverse impact ratio), repayers for the good-applicant approval rates (the equal opportunity
difference). Smaller groups are listed but not compared. The adverse impact ratio is the lowest
approval rate over the highest among those groups (the "four-fifths rule" flags a ratio below 0.8).
With fewer than two such groups nothing is compared: the difference (or the ratio) is None.

Rows without a value of the attribute form their own group, labelled "missing" (or, should the data
hold a group of that name, a label it does not hold), listed with its rates but never compared: it is
no group of the attribute, and as the most or least approved group it would set the ratio and the
differences for reasons that are not the attribute's.

How sure each rate is: every group lists the denominators of its rates (``count`` for the approval
and default rates, ``defaulters`` for the true-positive rate, ``repayers`` for the good-applicant
approval rate) and a 95% Wilson score interval per rate (``training.metrics.wilson_interval``; None
where the rate is undefined). ``small_sample`` is True when any of those denominators is below
``SMALL_SAMPLE_CASES`` (30): a rate on fewer cases moves by several points with a handful of rows, so
its interval, not its digits, is what to read. The differences above are computed as before; a group
flagged small_sample can still take part in them when it has ``min_group_size`` rows.

How sure each comparison is (``comparison_intervals``, given a ``seed``): a 95% percentile bootstrap
interval of the parity difference, the equal opportunity difference and the adverse impact ratio, and
the share of resamples whose ratio is below 0.8. Each resample draws every compared group's rows with
replacement to the group's own size, and recomputes each figure over the same groups as the figure
itself (the missing-value group is never drawn). A group's rows fall in four cells (approved or
declined, repayer or defaulter), so a resample of them is one multinomial draw on the group's cell
counts: the same distribution as drawing rows, at no cost per row. A difference is max - min over the
groups, which no resample can make negative: where the groups' rates are nearly equal, the interval
sits above the figure and its lower bound above 0 proves no disparity (nor, for the ratio, an upper
bound below 1). It measures the holdout's sampling noise only, not drift nor the model's refitting.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from lambdas.scoring.card import AttributeFairness, ComparisonIntervals, GroupFairness, Interval
from training.metrics import CONFIDENCE, percentile_interval, share, wilson_interval

SMALL_SAMPLE_CASES = 30
FOUR_FIFTHS = 0.8  # an adverse impact ratio below it fails the four-fifths rule of thumb
# Resamples of the comparison intervals: drawn as counts per group, 2,000 cost milliseconds, and a 2.5%
# quantile of 2,000 is steadier than of the 500 the holdout metrics use.
COMPARISON_RESAMPLES = 2000


def fairness_for_attribute(
    attribute: str,
    groups: pd.Series,
    y: NDArray[np.int_],
    declined: NDArray[np.bool_],
    evaluated_on: str,
    min_group_size: int = 30,
    seed: int | None = None,
    resamples: int = COMPARISON_RESAMPLES,
) -> AttributeFairness:
    """The attribute's per-group rates and comparisons; with a ``seed`` (the training seed), also the
    bootstrap intervals of the comparisons (``resamples`` of them), else ``comparison_intervals`` is
    None."""
    texts = groups.astype("string")
    absent = bool(texts.isna().any())
    present = {str(v) for v in texts.dropna()}
    # Absent values never merge with a group whose own value is the text "missing".
    missing_label = "missing"
    while missing_label in present:
        missing_label = f"({missing_label})"
    labels = texts.fillna(missing_label).to_numpy()
    reports = []
    cells: dict[str, NDArray[np.int64]] = {}
    for group in sorted(set(labels)):
        rows = labels == group
        count = int(rows.sum())
        defaulters = int((rows & (y == 1)).sum())
        repayers = int((rows & (y == 0)).sum())
        approved = int((rows & ~declined).sum())
        declined_defaulters = int((rows & (y == 1) & declined).sum())
        approved_repayers = int((rows & (y == 0) & ~declined).sum())
        approved_defaulters = approved - approved_repayers
        cells[str(group)] = np.array(
            [
                approved_repayers,
                repayers - approved_repayers,
                approved_defaulters,
                defaulters - approved_defaulters,
            ],
            dtype=np.int64,
        )
        reports.append(
            GroupFairness(
                group=str(group),
                count=count,
                approval_rate=share(approved, count),
                default_rate=share(defaulters, count),
                true_positive_rate=share(declined_defaulters, defaulters),
                good_applicant_approval_rate=share(approved_repayers, repayers),
                defaulters=defaulters,
                repayers=repayers,
                approval_rate_interval=wilson_interval(approved, count),
                default_rate_interval=wilson_interval(defaulters, count),
                true_positive_rate_interval=wilson_interval(declined_defaulters, defaulters),
                good_applicant_approval_rate_interval=wilson_interval(approved_repayers, repayers),
                small_sample=min(count, defaulters, repayers) < SMALL_SAMPLE_CASES,
            )
        )
    compared = [g for g in reports if g.group != missing_label]
    # Each rate is compared over the groups with enough cases under it: a good-applicant approval
    # rate of a group with 40 rows but 3 repayers moves by a third with one applicant.
    large = [g for g in compared if g.count >= min_group_size]
    enough_repayers = [g for g in compared if (g.repayers or 0) >= min_group_size]

    def spread(values: list[float | None]) -> float | None:
        # None, not 0.0, when fewer than two groups have the rate: 0.0 would read as "no disparity".
        finite = [v for v in values if v is not None]
        return float(max(finite) - min(finite)) if len(finite) >= 2 else None

    approval_rates = [g.approval_rate for g in large if g.approval_rate is not None]
    impact_ratio = (
        float(min(approval_rates) / max(approval_rates))
        if len(approval_rates) >= 2 and max(approval_rates) > 0
        else None
    )
    scope = (
        f"differences over groups with >= {min_group_size} rows "
        f"(equal opportunity: >= {min_group_size} repayers)"
    )
    if len(large) < 2:
        scope += f": fewer than 2 such groups ({len(large)}), so not computed"
    if absent:
        scope += f"; the {missing_label!r} group (no value) is listed, not compared"
    parity_difference = spread([g.approval_rate for g in large])
    opportunity_difference = spread([g.good_applicant_approval_rate for g in enough_repayers])
    intervals = None
    if seed is not None:
        intervals = comparison_intervals(
            {g.group: cells[g.group] for g in large},
            [g.group for g in enough_repayers],
            # Exactly the figures the card holds get an interval: None stays None.
            with_parity=parity_difference is not None,
            with_opportunity=opportunity_difference is not None,
            with_ratio=impact_ratio is not None,
            resamples=resamples,
            seed=seed,
        )
    return AttributeFairness(
        attribute=attribute,
        groups=reports,
        demographic_parity_difference=parity_difference,
        equal_opportunity_difference=opportunity_difference,
        adverse_impact_ratio=impact_ratio,
        evaluated_on=f"{evaluated_on}; {scope}",
        uncertainty=(
            "95% Wilson score interval per rate; small_sample: fewer than "
            f"{SMALL_SAMPLE_CASES} cases in any rate's denominator (rows, defaulters or repayers)"
        ),
        comparison_intervals=intervals,
    )


def comparison_intervals(
    approval_cells: dict[str, NDArray[np.int64]],
    repayer_groups: list[str],
    *,
    with_parity: bool,
    with_opportunity: bool,
    with_ratio: bool,
    resamples: int,
    seed: int,
    confidence: float = CONFIDENCE,
) -> ComparisonIntervals:
    """Percentile bootstrap intervals of the parity difference, the equal opportunity difference and
    the adverse impact ratio.

    ``approval_cells``: per group compared on approval rates, its counts of approved repayers, declined
    repayers, approved defaulters and declined defaulters; ``repayer_groups``: those of them compared
    on good-applicant approval rates. ``with_parity``, ``with_opportunity`` and ``with_ratio`` say which
    figures the card holds (not None): the others get no interval. Each resample draws every group's
    cells from a multinomial of the group's size and observed shares: its rows drawn with replacement.
    """
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    rng = np.random.default_rng(seed)
    names = sorted(approval_cells)  # a fixed drawing order: the same seed gives the same card
    drawn = np.empty((resamples, len(names), 4), dtype=np.int64)
    for column, name in enumerate(names):
        counts = approval_cells[name]
        drawn[:, column] = rng.multinomial(int(counts.sum()), counts / counts.sum(), size=resamples)
    sizes = np.array([approval_cells[name].sum() for name in names], dtype=np.float64)
    approval = (drawn[:, :, 0] + drawn[:, :, 2]) / sizes
    repayers = drawn[:, :, 0] + drawn[:, :, 1]
    # A resample may leave a group without repayers: its rate is undefined there (NaN), as on the holdout.
    good_approval = np.divide(
        drawn[:, :, 0], repayers, out=np.full(repayers.shape, np.nan), where=repayers > 0
    )[:, [name in repayer_groups for name in names]]
    lowest, highest = _extremes(approval)
    ratio = np.divide(lowest, highest, out=np.full(resamples, np.nan), where=highest > 0)
    good_lowest, good_highest = _extremes(good_approval)
    defined_ratios = ratio[np.isfinite(ratio)]
    below = float(np.mean(defined_ratios < FOUR_FIFTHS)) if with_ratio and len(defined_ratios) else None
    return ComparisonIntervals(
        method=(
            "bootstrap within groups: each compared group's rows drawn with replacement to its own size "
            "(a multinomial draw of its approved/declined repayer/defaulter counts), figures recomputed "
            "over the same groups; percentile interval. A difference (max - min) is never negative, so "
            "where rates are nearly equal the interval lies above the figure"
        ),
        resamples=resamples,
        seed=seed,
        confidence=confidence,
        demographic_parity_difference=_percentile(highest - lowest, confidence) if with_parity else None,
        equal_opportunity_difference=(
            _percentile(good_highest - good_lowest, confidence) if with_opportunity else None
        ),
        adverse_impact_ratio=_percentile(ratio, confidence) if with_ratio else None,
        adverse_impact_ratio_below_four_fifths=below,
    )


def _extremes(rates: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Per resample (row) the lowest and highest defined rate; NaN where fewer than two are defined,
    as a figure over fewer than two groups is None."""
    defined = np.isfinite(rates)
    enough = defined.sum(axis=1) >= 2
    lowest = np.where(defined, rates, np.inf).min(axis=1, initial=np.inf)
    highest = np.where(defined, rates, -np.inf).max(axis=1, initial=-np.inf)
    return np.where(enough, lowest, np.nan), np.where(enough, highest, np.nan)


def _percentile(values: NDArray[np.float64], confidence: float) -> Interval | None:
    """The percentile interval of the resamples where the figure is defined; None if it never is."""
    defined = values[np.isfinite(values)]
    return percentile_interval(defined, confidence) if len(defined) else None
