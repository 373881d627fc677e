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
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from lambdas.scoring.card import AttributeFairness, GroupFairness
from training.metrics import share, wilson_interval

SMALL_SAMPLE_CASES = 30


def fairness_for_attribute(
    attribute: str,
    groups: pd.Series,
    y: NDArray[np.int_],
    declined: NDArray[np.bool_],
    evaluated_on: str,
    min_group_size: int = 30,
) -> AttributeFairness:
    texts = groups.astype("string")
    absent = bool(texts.isna().any())
    present = {str(v) for v in texts.dropna()}
    # Absent values never merge with a group whose own value is the text "missing".
    missing_label = "missing"
    while missing_label in present:
        missing_label = f"({missing_label})"
    labels = texts.fillna(missing_label).to_numpy()
    reports = []
    for group in sorted(set(labels)):
        rows = labels == group
        count = int(rows.sum())
        defaulters = int((rows & (y == 1)).sum())
        repayers = int((rows & (y == 0)).sum())
        approved = int((rows & ~declined).sum())
        declined_defaulters = int((rows & (y == 1) & declined).sum())
        approved_repayers = int((rows & (y == 0) & ~declined).sum())
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
    return AttributeFairness(
        attribute=attribute,
        groups=reports,
        demographic_parity_difference=spread([g.approval_rate for g in large]),
        equal_opportunity_difference=spread([g.good_applicant_approval_rate for g in enough_repayers]),
        adverse_impact_ratio=impact_ratio,
        evaluated_on=f"{evaluated_on}; {scope}",
        uncertainty=(
            "95% Wilson score interval per rate; small_sample: fewer than "
            f"{SMALL_SAMPLE_CASES} cases in any rate's denominator (rows, defaulters or repayers)"
        ),
    )
