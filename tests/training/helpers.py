"""Shared by the training tests."""

from __future__ import annotations

from typing import Any

import pandas as pd
from sklearn.pipeline import Pipeline

from training.candidates import Candidate
from training.datasets.spec import DatasetSpec


def small_fit(candidate: Candidate, spec: DatasetSpec, x: pd.DataFrame, y: Any) -> Pipeline:
    """The candidate fitted with few trees: for tests about inputs and conversion, not the model."""
    pipeline = candidate.build(spec, len(y), 0)
    if candidate.name == "hist_gradient_boosting":
        pipeline.set_params(model__max_iter=40)
    if candidate.name == "random_forest":
        pipeline.set_params(model__n_estimators=10)
    return pipeline.fit(x, y)
