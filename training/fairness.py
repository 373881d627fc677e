"""Fairness figures per protected attribute, on the holdout rows with the chosen threshold.

Per group: approval rate, observed default rate, true-positive rate (share of actual defaulters
declined) and the good-applicant approval rate (share of repaying applicants approved: the
"equal opportunity" view of lending). Differences are max minus min over groups with at least
``min_group_size`` rows (smaller groups are listed but not used for the differences), and the
adverse impact ratio is the lowest approval rate over the highest among those groups (the
"four-fifths rule" flags a ratio below 0.8). With fewer than two such groups nothing is compared:
the differences and the ratio are None.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from lambdas.scoring.card import AttributeFairness, GroupFairness
from training.metrics import share


def fairness_for_attribute(
    attribute: str,
    groups: pd.Series,
    y: NDArray[np.int_],
    declined: NDArray[np.bool_],
    evaluated_on: str,
    min_group_size: int = 30,
) -> AttributeFairness:
    labels = groups.astype("string").fillna("missing").to_numpy()
    reports = []
    for group in sorted(set(labels)):
        rows = labels == group
        defaulters = rows & (y == 1)
        repayers = rows & (y == 0)
        reports.append(
            GroupFairness(
                group=str(group),
                count=int(rows.sum()),
                approval_rate=share(int((rows & ~declined).sum()), int(rows.sum())),
                default_rate=share(int(defaulters.sum()), int(rows.sum())),
                true_positive_rate=share(int((defaulters & declined).sum()), int(defaulters.sum())),
                good_applicant_approval_rate=share(int((repayers & ~declined).sum()), int(repayers.sum())),
            )
        )
    large = [g for g in reports if g.count >= min_group_size]

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
    scope = f"differences over groups with >= {min_group_size} rows"
    if len(large) < 2:
        scope += f": fewer than 2 such groups ({len(large)}), so not computed"
    return AttributeFairness(
        attribute=attribute,
        groups=reports,
        demographic_parity_difference=spread([g.approval_rate for g in large]),
        equal_opportunity_difference=spread([g.good_applicant_approval_rate for g in large]),
        adverse_impact_ratio=impact_ratio,
        evaluated_on=f"{evaluated_on}; {scope}",
    )
