"""Preprocessing that travels with the model: every step here converts to ONNX.

Raw features arrive one column each (numbers as float64, categories as strings); derived ratios
and products are computed inside the pipeline so the serving side needs only the raw features.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

from training.datasets.spec import DatasetSpec, DerivedFeature

MISSING_CATEGORY = ""  # how a null category travels (the encoders treat it as unseen)


class DerivedFeatures(TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """Appends ratios and products of numeric columns (by position in the input block).

    ``operations`` holds (operation, left index, right index) triples. A ratio whose denominator
    is zero (0 or -0) is undefined, so it is NaN (missing), never IEEE division's inf: the models
    then treat it as missing (median-imputed for the linear model and the forest, routed by the
    boosting trees), and an inf cannot fail sklearn's input checks or pin a linear model's
    probability to 0 or 1. Every other value is plain IEEE division (NaN in gives NaN out); the
    ONNX converter (``training.onnx_export``) emits the same, so training and serving agree.
    """

    def __init__(self, operations: tuple[tuple[str, int, int], ...] = ()) -> None:
        self.operations = operations

    def fit(self, x: Any, y: Any = None) -> DerivedFeatures:
        self.n_features_in_ = np.asarray(x).shape[1]
        return self

    def transform(self, x: Any) -> NDArray[np.float64]:
        values = np.asarray(x, dtype=np.float64)
        columns = [values]
        with np.errstate(divide="ignore", invalid="ignore"):
            for operation, left, right in self.operations:
                if operation == "ratio":
                    denominator = values[:, [right]]
                    ratio = values[:, [left]] / denominator
                    columns.append(np.where(denominator == 0, np.nan, ratio))
                else:
                    columns.append(values[:, [left]] * values[:, [right]])
        return np.hstack(columns)


def numeric_columns(spec: DatasetSpec) -> list[str]:
    return [f.name for f in spec.features if f.kind in ("number", "integer", "boolean")]


def category_columns(spec: DatasetSpec) -> list[str]:
    return [f.name for f in spec.features if f.kind == "category"]


def derived_operations(spec: DatasetSpec) -> tuple[tuple[str, int, int], ...]:
    numeric = numeric_columns(spec)
    operations = []
    for derived in spec.derived:
        _check_derived(derived, numeric)
        operations.append((derived.operation, numeric.index(derived.left), numeric.index(derived.right)))
    return tuple(operations)


def _check_derived(derived: DerivedFeature, numeric: list[str]) -> None:
    for column in (derived.left, derived.right):
        if column not in numeric:
            raise ValueError(
                f"derived feature {derived.name!r} uses {column!r}, which is not a numeric feature"
            )


def model_input_frame(spec: DatasetSpec, frame: pd.DataFrame) -> pd.DataFrame:
    """The raw feature columns in the dtypes the sklearn pipeline takes (float64 / str); the ONNX
    graph takes categories as codes instead (``training.onnx_export.onnx_feed``)."""
    columns: dict[str, pd.Series] = {}
    for feature in spec.features:
        values = frame[feature.name]
        if feature.kind == "category":
            columns[feature.name] = values.astype("string").fillna(MISSING_CATEGORY).astype(object)
        elif feature.kind == "boolean":
            columns[feature.name] = values.map(to_bool_number).astype(np.float64)
        else:
            columns[feature.name] = pd.to_numeric(values, errors="raise").astype(np.float64)
    return pd.DataFrame(columns, index=frame.index)


def to_bool_number(value: object) -> float:
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return float("nan")
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("true", "1", "yes", "y"):
            return 1.0
        if lowered in ("false", "0", "no", "n"):
            return 0.0
        raise ValueError(f"not a boolean: {value!r}")
    return 1.0 if bool(value) else 0.0


Encoding = Literal["onehot_scaled", "onehot", "ordinal"]


def preprocessor(spec: DatasetSpec, encoding: Encoding) -> ColumnTransformer:
    """Column handling per model family.

    - ``onehot_scaled`` (linear models): median-impute, derive, median-impute the derived columns,
      standardise; one-hot categories.
    - ``onehot`` (bagged trees): median-impute (sklearn forests convert wrongly with NaN), derive,
      median-impute the derived columns (a zero-denominator ratio is NaN).
    - ``ordinal`` (boosting): NaN passes through (the trees learn where missing goes); categories
      become ordinal codes, unseen ones -1.
    """
    numeric = numeric_columns(spec)
    categories = category_columns(spec)
    derive = DerivedFeatures(derived_operations(spec))
    if encoding == "ordinal":
        numeric_steps: Pipeline | DerivedFeatures = derive
        category_step: Any = OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1)
    else:
        # keep_empty_features: a column with no value in training would otherwise be dropped (as 0 it
        # is a constant the model ignores), which shifts every later column and makes the derived
        # ratios, chosen by position, divide the wrong columns.
        steps: list[tuple[str, Any]] = [
            ("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
            ("derive", derive),
            ("impute_derived", SimpleImputer(strategy="median", keep_empty_features=True)),
        ]
        if encoding == "onehot_scaled":
            steps.append(("scale", StandardScaler()))
        numeric_steps = Pipeline(steps)
        category_step = OneHotEncoder(handle_unknown="ignore", sparse_output=False)
    transformers: list[tuple[str, Any, list[str]]] = [("numeric", numeric_steps, numeric)]
    if categories:
        transformers.append(("category", category_step, categories))
    return ColumnTransformer(transformers, sparse_threshold=0.0)
