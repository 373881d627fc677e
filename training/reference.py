"""Reference distributions for drift monitoring and the per-feature baselines used for reasons."""

from __future__ import annotations

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from lambdas.scoring.card import CategoricalReference, NumericReference
from training.datasets.spec import DatasetSpec
from training.features import MISSING_CATEGORY


def numeric_reference(values: NDArray[np.float64], bins: int = 10) -> NumericReference:
    finite = values[np.isfinite(values)]
    if len(finite) == 0:
        raise ValueError("a numeric reference needs at least one finite value")
    # Inner cut points only: the outer bins are open, so serving-time values beyond the training
    # range still land in a bin.
    distinct = np.unique(finite)
    if len(distinct) <= bins:
        # Few values (booleans, small counts): one bin per value, and one each below the smallest and
        # above the largest, which training never saw: quantile edges would merge a value repeated at
        # the maximum into the bin below (a boolean got one bin), and a feature with a single value
        # would have one bin, blind to any shift.
        inner = np.append(distinct, np.nextafter(distinct[-1], np.inf))
    else:
        inner = np.unique(np.quantile(finite, np.linspace(0, 1, bins + 1)[1:-1]))
        # An edge at the minimum bounds an empty bin; one at the next value keeps a mass at the
        # minimum (e.g. 95% zeros) apart from the rest.
        inner = np.unique(np.where(inner > distinct[0], inner, distinct[1]))
    counts = np.bincount(np.searchsorted(inner, finite, side="right"), minlength=len(inner) + 1)
    return NumericReference(
        bin_edges=[float(e) for e in inner],
        proportions=[float(c) for c in counts / counts.sum()],
        mean=float(finite.mean()),
        std=float(finite.std()),
        median=float(np.median(finite)),
        null_rate=float(1 - len(finite) / len(values)),
    )


def categorical_reference(values: pd.Series) -> CategoricalReference:
    present = values[values != MISSING_CATEGORY]
    shares = present.value_counts(normalize=True)
    return CategoricalReference(
        proportions={str(k): float(v) for k, v in shares.items()},
        mode=str(shares.index[0]),
        null_rate=float(1 - len(present) / len(values)),
    )


def feature_references(
    spec: DatasetSpec, frame: pd.DataFrame
) -> tuple[dict[str, NumericReference | CategoricalReference], dict[str, float | str | None]]:
    """Per-feature reference and the reason baseline (median, or mode for categories)."""
    references: dict[str, NumericReference | CategoricalReference] = {}
    baseline: dict[str, float | str | None] = {}
    for feature in spec.features:
        column = frame[feature.name]
        if feature.kind == "category":
            categorical = categorical_reference(column)
            references[feature.name] = categorical
            baseline[feature.name] = categorical.mode
        else:
            numeric = numeric_reference(column.to_numpy(dtype=np.float64))
            references[feature.name] = numeric
            baseline[feature.name] = numeric.median
    return references, baseline
