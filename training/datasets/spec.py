"""Dataset specs: what a flat frame's columns mean to the model, and how it is cleaned.

A spec names the target, the model features (with types, units, valid ranges and the reason
text used when a feature raises risk), the protected attributes kept only for fairness figures,
and the columns to drop. Any flat CSV or Parquet table trains from a small JSON spec file.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, cast

import pandas as pd

FeatureKind = Literal["number", "integer", "category", "boolean"]
_KINDS: tuple[str, ...] = ("number", "integer", "category", "boolean")


@dataclass(frozen=True)
class FeatureSpec:
    name: str
    kind: FeatureKind
    description: str = ""
    reason: str = ""
    unit: str | None = None
    minimum: float | None = None
    maximum: float | None = None
    label: str = ""  # short noun phrase for reason texts, e.g. "interest rate"

    def reason_text(self) -> str:
        return self.reason or f"{self.name.replace('_', ' ').capitalize()} raised the risk"

    def directional_reasons(self) -> tuple[str | None, str | None]:
        """("High <label>", "Low <label>") for numbers; categories and booleans have none."""
        if self.kind not in ("number", "integer"):
            return None, None
        label = self.label or self.name.replace("_", " ")
        return f"High {label}", f"Low {label}"

    def missing_reason(self) -> str:
        """The card's ``reason_missing`` of a nullable feature, "<Label> not provided": a missing value
        that raised the risk is described as missing, not as a value the applicant does not have."""
        label = self.label or self.name.replace("_", " ")
        return f"{label[:1].upper()}{label[1:]} not provided"  # not capitalize(): "FICO" stays


@dataclass(frozen=True)
class DerivedFeature:
    """A ratio or product of two numeric features, computed inside the exported ONNX graph."""

    name: str
    operation: Literal["ratio", "product"]
    left: str
    right: str


@dataclass(frozen=True)
class ProtectedAttribute:
    """A column kept for fairness figures only; numeric ones are reported in bands."""

    column: str
    bands: tuple[float, ...] = ()
    band_labels: tuple[str, ...] = ()


@dataclass(frozen=True)
class CleaningResult:
    frame: pd.DataFrame
    counts: dict[str, int]


Cleaner = Callable[[pd.DataFrame], CleaningResult]


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    description: str
    target: str
    positive_class: str
    features: tuple[FeatureSpec, ...]
    protected: tuple[ProtectedAttribute, ...] = ()
    derived: tuple[DerivedFeature, ...] = ()
    time_column: str | None = None
    id_column: str | None = None
    cleaner: Cleaner | None = None
    notes: tuple[str, ...] = field(default=())

    @property
    def feature_names(self) -> list[str]:
        return [feature.name for feature in self.features]

    def feature(self, name: str) -> FeatureSpec:
        for feature in self.features:
            if feature.name == name:
                return feature
        raise KeyError(name)


def count_missing(frame: pd.DataFrame, columns: list[str]) -> dict[str, int]:
    """Missing-value counts per column (only columns that have any), for the card."""
    return {
        f"missing_{column}": int(frame[column].isna().sum())
        for column in columns
        if frame[column].isna().any()
    }


def default_cleaning(spec: DatasetSpec, frame: pd.DataFrame) -> CleaningResult:
    """Rules every dataset gets: a target that is 0/1 and ranges enforced.

    Rows outside a feature's declared [minimum, maximum] are impossible values and are dropped,
    counted per feature; missing values are kept (the pipeline imputes) and counted.
    """
    counts: dict[str, int] = {}
    missing_target = frame[spec.target].isna()
    counts["dropped_missing_target"] = int(missing_target.sum())
    frame = frame.loc[~missing_target]
    target_values = set(pd.unique(frame[spec.target]))
    if not target_values <= {0, 1}:
        raise ValueError(
            f"target column {spec.target!r} must be binary 0/1, "
            f"found values {sorted(map(str, target_values))[:10]}"
        )
    for feature in spec.features:
        if feature.minimum is None and feature.maximum is None:
            continue
        values = pd.to_numeric(frame[feature.name], errors="coerce")
        outside = pd.Series(False, index=frame.index)
        if feature.minimum is not None:
            outside |= values < feature.minimum
        if feature.maximum is not None:
            outside |= values > feature.maximum
        counts[f"dropped_out_of_range_{feature.name}"] = int(outside.sum())
        frame = frame.loc[~outside]
    counts.update(count_missing(frame, spec.feature_names))
    return CleaningResult(frame=frame.reset_index(drop=True), counts=counts)


SPEC_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")  # registry-safe with "-default-risk"
FEATURE_OPTIONS = frozenset({"type", "unit", "description", "reason", "minimum", "maximum", "label"})


def spec_from_file(path: Path, frame: pd.DataFrame) -> DatasetSpec:
    """Build a spec for any flat table from a small JSON file.

    Keys: ``name``, ``target`` (required); ``features`` (name → {type, unit, description, reason,
    minimum, maximum, label}; when absent every other column is a feature with its type inferred);
    ``protected`` (list of names, or name → {bands, band_labels}); ``drop`` (columns to ignore);
    ``id_column``; ``time_column``; ``description``; ``positive_class``. Mistakes are ValueErrors
    naming the file and the key.
    """
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"spec file {path} is not valid JSON: {error}") from error
    if not isinstance(raw, dict) or "target" not in raw or "name" not in raw:
        raise ValueError(f"spec file {path} must be a JSON object with at least 'name' and 'target'")
    spec_name = raw["name"]
    if not isinstance(spec_name, str) or not SPEC_NAME.match(spec_name):
        raise ValueError(
            f"spec file {path}: name {spec_name!r} must be 1-100 of letters, digits, '.', '_', '-' "
            "(it names the model in the registry)"
        )
    target = str(raw["target"])
    if target not in frame.columns:
        raise ValueError(f"spec file {path}: target column {target!r} is not in the table")
    protected = _parse_protected(raw.get("protected", []), path)
    drop = raw.get("drop", [])
    if not isinstance(drop, list) or not all(isinstance(column, str) for column in drop):
        raise ValueError(f"spec file {path}: 'drop' must be a list of column names")
    unknown_drop = [column for column in drop if column not in frame.columns]
    if unknown_drop:
        raise ValueError(f"spec file {path}: 'drop' names columns not in the table: {unknown_drop}")
    # Columns that must never be model features: the target would leak the label, protected
    # attributes are for fairness figures only, ids and dates identify rather than describe.
    roles = {target: "the target", **{p.column: "protected" for p in protected}}
    for optional in ("id_column", "time_column"):
        if raw.get(optional):
            roles[str(raw[optional])] = f"the {optional}"
    excluded = {*roles, *drop}
    declared = raw.get("features") or {}
    if not isinstance(declared, dict):
        raise ValueError(f"spec file {path}: 'features' must be an object of feature name -> options")
    names = list(declared) if declared else [c for c in frame.columns if c not in excluded]
    features = []
    for name in names:
        if name not in frame.columns:
            raise ValueError(f"spec file {path}: feature {name!r} is not in the table")
        if name in roles:
            raise ValueError(f"spec file {path}: feature {name!r} is {roles[name]} and cannot be a feature")
        if name in drop:  # contradictory: say so rather than pick one
            raise ValueError(f"spec file {path}: feature {name!r} is also listed in 'drop'")
        options = _feature_options(declared.get(name, {}), name, path)
        kind = str(options.get("type") or infer_kind(frame[name]))
        if kind not in _KINDS:
            raise ValueError(
                f"spec file {path}: feature {name!r} has type {kind!r}, expected one of {_KINDS}"
            )
        features.append(
            FeatureSpec(
                name=name,
                kind=cast(FeatureKind, kind),
                description=str(options.get("description", "")),
                reason=str(options.get("reason", "")),
                unit=cast(str | None, options.get("unit")),
                minimum=cast(float | None, options.get("minimum")),
                maximum=cast(float | None, options.get("maximum")),
                label=str(options.get("label", "")),
            )
        )
    return DatasetSpec(
        name=spec_name,
        description=str(raw.get("description", f"Flat table described by {path.name}")),
        target=target,
        positive_class=str(raw.get("positive_class", f"{target} = 1")),
        features=tuple(features),
        protected=protected,
        id_column=cast(str | None, raw.get("id_column")),
        time_column=cast(str | None, raw.get("time_column")),
    )


def _feature_options(options: object, name: str, path: Path) -> dict[str, object]:
    if not isinstance(options, dict):
        raise ValueError(
            f"spec file {path}: feature {name!r} must map to an object of options, got {options!r}"
        )
    unknown = sorted(set(options) - FEATURE_OPTIONS)
    if unknown:
        raise ValueError(
            f"spec file {path}: feature {name!r} has unknown options {unknown}; "
            f"known: {sorted(FEATURE_OPTIONS)}"
        )
    for bound in ("minimum", "maximum"):
        value = options.get(bound)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise ValueError(f"spec file {path}: feature {name!r} {bound} must be a number, got {value!r}")
    low, high = options.get("minimum"), options.get("maximum")
    if isinstance(low, int | float) and isinstance(high, int | float) and low > high:
        raise ValueError(f"spec file {path}: feature {name!r} has minimum {low} above maximum {high}")
    return options


def _parse_protected(raw: object, path: Path) -> tuple[ProtectedAttribute, ...]:
    if isinstance(raw, list):
        return tuple(ProtectedAttribute(column=str(name)) for name in raw)
    if isinstance(raw, Mapping):
        attributes = []
        for name, options in raw.items():
            bands = options.get("bands", []) if isinstance(options, Mapping) else None
            labels = options.get("band_labels", []) if isinstance(options, Mapping) else None
            if not isinstance(bands, list) or not all(
                isinstance(b, int | float) and not isinstance(b, bool) for b in bands
            ):
                raise ValueError(f"spec file {path}: protected {name!r} bands must be a list of numbers")
            if not isinstance(labels, list):
                raise ValueError(f"spec file {path}: protected {name!r} band_labels must be a list")
            attributes.append(
                ProtectedAttribute(
                    column=str(name),
                    bands=tuple(float(b) for b in bands),
                    band_labels=tuple(str(label) for label in labels),
                )
            )
        return tuple(attributes)
    raise ValueError(f"spec file {path}: 'protected' must be a list of columns or an object")


def infer_kind(values: pd.Series) -> FeatureKind:
    if pd.api.types.is_bool_dtype(values):
        return "boolean"
    if pd.api.types.is_integer_dtype(values):
        return "integer"
    if pd.api.types.is_numeric_dtype(values):
        return "number"
    return "category"
