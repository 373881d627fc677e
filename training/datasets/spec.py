"""Dataset specs: what a flat frame's columns mean to the model, and how it is cleaned.

A spec names the target, the model features (with types, units, valid ranges and the reason
text used when a feature raises risk), the protected attributes kept only for fairness figures,
and the columns to drop. Any flat CSV or Parquet table trains from a small JSON spec file.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, cast

import numpy as np
import pandas as pd

from lambdas.scoring.card import BATCH_OUTPUT_COLUMNS

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
SPEC_KEYS = frozenset(
    {
        "name",
        "target",
        "features",
        "protected",
        "drop",
        "id_column",
        "time_column",
        "description",
        "positive_class",
    }
)
# Text that reads as a date (ISO 2021-03-04, with or without a time; 04/03/2021, 4.3.21): such a column
# identifies when a row was recorded, it does not describe the applicant.
_DATE_TEXT = re.compile(r"^\s*(\d{4}-\d{1,2}-\d{1,2}([ T].*)?|\d{1,2}[/.]\d{1,2}[/.]\d{2,4})\s*$")
_BOOLEAN_TEXT = frozenset({"true", "false", "1", "0", "yes", "no", "y", "n"})
# Names the graph gives values of its own (training/onnx_export.py): its outputs, and those of the
# calibration appended to it (fixed names). A feature cannot be a graph input of the same name. Any other
# name is fine: the graph's inputs are renamed back to the features' names after conversion.
ONNX_OUTPUT_NAMES = frozenset({"label", "probabilities"})
ONNX_CALIBRATION_NAMES = frozenset(
    {
        "uncalibrated_label",
        "uncalibrated_probabilities",
        "cal_above_half",
        "cal_eps",
        "cal_flat",
        "cal_half",
        "cal_intercept",
        "cal_label_2d",
        "cal_logit",
        "cal_negative",
        "cal_odds",
        "cal_one",
        "cal_one_minus_eps",
        "cal_p",
        "cal_p_clipped",
        "cal_positive",
        "cal_positive_index",
        "cal_q",
        "cal_scaled",
        "cal_slope",
        "cal_z",
    }
)


def spec_from_file(path: Path, frame: pd.DataFrame) -> DatasetSpec:
    """Build a spec for any flat table from a small JSON file.

    Keys: ``name``, ``target`` (required); ``features`` (name → {type, unit, description, reason,
    minimum, maximum, label}; when absent every other column is a feature with its type inferred);
    ``protected`` (list of names, or name → {bands, band_labels}); ``drop`` (columns to ignore);
    ``id_column``; ``time_column``; ``description``; ``positive_class``. Mistakes are ValueErrors
    naming the file and the key.
    """
    raw = _read_spec_json(path)
    if not isinstance(raw, dict) or "target" not in raw or "name" not in raw:
        raise ValueError(f"spec file {path} must be a JSON object with at least 'name' and 'target'")
    # A misspelt key ("protect", "feature") would otherwise be ignored: a protected attribute would
    # silently become a model feature, a column to drop would be trained on.
    unknown_keys = sorted(set(raw) - SPEC_KEYS)
    if unknown_keys:
        raise ValueError(f"spec file {path}: unknown keys {unknown_keys}; known: {sorted(SPEC_KEYS)}")
    spec_name = raw["name"]
    if not isinstance(spec_name, str) or not SPEC_NAME.match(spec_name):
        raise ValueError(
            f"spec file {path}: name {spec_name!r} must be 1-100 of letters, digits, '.', '_', '-' "
            "(it names the model in the registry)"
        )
    target = _column(raw, "target", path, frame)
    assert target is not None  # present: checked above
    protected = _parse_protected(raw.get("protected", []), path)
    _check_protected(protected, path, frame)
    drop = raw.get("drop", [])
    if not isinstance(drop, list) or not all(isinstance(column, str) for column in drop):
        raise ValueError(f"spec file {path}: 'drop' must be a list of column names")
    unknown_drop = [column for column in drop if column not in frame.columns]
    if unknown_drop:
        raise ValueError(f"spec file {path}: 'drop' names columns not in the table: {unknown_drop}")
    # Columns that must never be model features: the target would leak the label, protected
    # attributes are for fairness figures only, ids and dates identify rather than describe.
    id_column = _column(raw, "id_column", path, frame)
    time_column = _column(raw, "time_column", path, frame)
    roles: dict[str, str] = {}
    for column, role in (
        (target, "the target"),
        *((p.column, "protected") for p in protected),
        (id_column, "the id_column"),
        (time_column, "the time_column"),
    ):
        if column is None:
            continue
        if column in roles:  # one column, two roles: the later one would silently win
            raise ValueError(f"spec file {path}: column {column!r} is both {roles[column]} and {role}")
        roles[column] = role
    if time_column is not None:
        _check_dates(frame[time_column], time_column, path)
    excluded = {*roles, *drop}
    declared = raw.get("features")
    if declared is not None and (not isinstance(declared, dict) or not declared):
        raise ValueError(
            f"spec file {path}: 'features' must be an object of feature name -> options, with at least one "
            "(leave it out to use every other column)"
        )
    inferred = declared is None
    declared = declared or {}
    names = list(declared) if declared else [c for c in frame.columns if c not in excluded]
    features = []
    for name in names:
        if name not in frame.columns:
            raise ValueError(f"spec file {path}: feature {name!r} is not in the table")
        if name in roles:
            raise ValueError(f"spec file {path}: feature {name!r} is {roles[name]} and cannot be a feature")
        if name in drop:  # contradictory: say so rather than pick one
            raise ValueError(f"spec file {path}: feature {name!r} is also listed in 'drop'")
        _check_feature_name(name, path)
        options = _feature_options(declared.get(name, {}), name, path)
        kind = str(options.get("type") or infer_kind(frame[name]))
        if kind not in _KINDS:
            raise ValueError(
                f"spec file {path}: feature {name!r} has type {kind!r}, expected one of {_KINDS}"
            )
        if inferred and kind == "category":
            _check_inferred_category(frame[name], name, path)
        _check_values(frame[name], name, kind, path)
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
        id_column=id_column,
        time_column=time_column,
    )


def _read_spec_json(path: Path) -> object:
    """The spec file's JSON; a key given twice in one object, or NaN/Infinity, is an error, not the last
    value silently (a feature listed twice would keep only its second options)."""

    def unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
        result: dict[str, object] = {}
        for key, value in pairs:
            if key in result:
                raise ValueError(f"spec file {path}: key {key!r} is given twice in one object")
            result[key] = value
        return result

    def refuse_constant(name: str) -> object:
        raise ValueError(f"spec file {path}: {name} is not a number a spec can hold")

    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"spec file {path} is not UTF-8 text: {error}") from error
    except OSError as error:
        raise ValueError(f"spec file {path} cannot be read: {error.strerror or error}") from error
    try:
        return json.loads(text, object_pairs_hook=unique_keys, parse_constant=refuse_constant)
    except json.JSONDecodeError as error:
        raise ValueError(f"spec file {path} is not valid JSON: {error}") from error


def _column(raw: Mapping[str, object], key: str, path: Path, frame: pd.DataFrame) -> str | None:
    """A key that names one column of the table (``target``, ``id_column``, ``time_column``), or None."""
    value = raw.get(key)
    if value is None and key != "target":
        return None
    if not isinstance(value, str) or not value:
        raise ValueError(f"spec file {path}: {key!r} must be a column name, got {value!r}")
    if value not in frame.columns:
        raise ValueError(f"spec file {path}: {key} column {value!r} is not in the table")
    return value


def _check_protected(protected: tuple[ProtectedAttribute, ...], path: Path, frame: pd.DataFrame) -> None:
    """Protected columns exist once each, and bands fit (checked here: the fairness figures that use
    them come after every candidate is fitted)."""
    seen: set[str] = set()
    for attribute in protected:
        where = f"spec file {path}: protected {attribute.column!r}"
        if attribute.column in seen:
            raise ValueError(f"{where} is listed twice")
        seen.add(attribute.column)
        if attribute.column not in frame.columns:
            raise ValueError(f"{where} is not a column of the table")
        if not attribute.bands:
            if attribute.band_labels:
                raise ValueError(f"{where} has band_labels but no bands")
            continue
        if not all(math.isfinite(b) for b in attribute.bands) or any(
            low >= high for low, high in zip(attribute.bands, attribute.bands[1:], strict=False)
        ):
            raise ValueError(f"{where} bands must be finite and ascend strictly, got {list(attribute.bands)}")
        if attribute.band_labels and len(attribute.band_labels) != len(attribute.bands) + 1:
            raise ValueError(
                f"{where} has {len(attribute.bands)} band edges, so needs {len(attribute.bands) + 1} "
                f"band_labels (one more than edges), got {list(attribute.band_labels)}"
            )
        values = frame[attribute.column]
        text = values.loc[pd.to_numeric(values, errors="coerce").isna() & values.notna()]
        if len(text):
            raise ValueError(f"{where} has bands, so must hold numbers, but holds {text.tolist()[0]!r}")


def _check_dates(values: pd.Series, column: str, path: Path) -> None:
    """The time column must read as dates (or numbers): the out-of-time split parses it."""
    if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_datetime64_any_dtype(values):
        return
    present = values.dropna()
    try:
        parsed = pd.to_datetime(present, errors="coerce")
    except (ValueError, TypeError):
        parsed = pd.Series(pd.NaT, index=present.index)
    unreadable = present.loc[parsed.isna()]
    if len(unreadable):
        raise ValueError(
            f"spec file {path}: time_column {column!r} holds {len(unreadable)} values that do not read "
            f"as dates in one format, e.g. {unreadable.tolist()[0]!r}"
        )


def _check_inferred_category(values: pd.Series, name: str, path: Path) -> None:
    """A text column taken as a feature without being declared, which is not what it looks like: dates
    (one new category per day, none of them seen at scoring), or numbers with some text among them."""
    present = values.dropna()
    if not len(present):
        return
    if pd.api.types.is_datetime64_any_dtype(values) or present.astype(str).str.match(_DATE_TEXT).all():
        raise ValueError(
            f"spec file {path}: column {name!r} holds dates (e.g. {present.tolist()[0]!r}), which would be "
            "taken as a category feature: name it as time_column, list it in 'drop', or declare the features"
        )
    numbers = pd.to_numeric(present, errors="coerce")
    text = present.loc[numbers.isna()]
    if len(text) and numbers.notna().mean() > 0.5:
        raise ValueError(
            f"spec file {path}: column {name!r} holds numbers and some text (e.g. {text.tolist()[0]!r}), "
            "which would make every number a category: clean it, or declare its type in 'features'"
        )


def _check_feature_name(name: str, path: Path) -> None:
    """A name the model's graph, the card and the batch's scored files can hold as it is."""
    where = f"spec file {path}: feature {name!r}"
    # Batch files' headers are matched with surrounding spaces stripped: such a name is never found.
    if not name.strip() or name != name.strip():
        raise ValueError(f"{where} must be non-blank, without leading or trailing spaces; rename the column")
    if name in ONNX_OUTPUT_NAMES:
        raise ValueError(f"{where} is the name of a model output {sorted(ONNX_OUTPUT_NAMES)}; rename it")
    if name in ONNX_CALIBRATION_NAMES:
        raise ValueError(f"{where} is a name the model's graph uses for its calibration; rename the column")
    if name in BATCH_OUTPUT_COLUMNS:
        raise ValueError(
            f"{where} is a column the batch adds to every scored row {BATCH_OUTPUT_COLUMNS}: it would "
            "overwrite the feature in scored files; rename the column"
        )


def _check_values(values: pd.Series, name: str, kind: str, path: Path) -> None:
    """Values the declared type cannot hold: finite numbers for a number, whole ones for an integer
    (the card's schema makes the API refuse any other value), booleans for a boolean; and categories
    clients could not tell apart."""
    present = values.dropna()
    if kind == "category":
        _check_category_forms(present, name, path)
    if kind in ("number", "integer"):
        # A CSV's "inf" reads as a float; kept, it would first fail inside scikit-learn.
        infinite = present.loc[np.isinf(pd.to_numeric(present, errors="coerce"))]
        if len(infinite):
            count = len(infinite)
            raise ValueError(
                f"spec file {path}: feature {name!r} holds {count} infinite value{'s' * (count > 1)}, "
                f"e.g. {infinite.tolist()[0]!r}; numbers must be finite (the API refuses Infinity too)"
            )
    if kind == "integer":
        numbers = pd.to_numeric(present, errors="coerce")
        fractional = present.loc[numbers.notna() & (numbers != numbers.round())]
        if len(fractional):
            raise ValueError(
                f"spec file {path}: feature {name!r} is integer but holds {len(fractional)} values that are "
                f"not whole numbers, e.g. {fractional.tolist()[0]!r}; declare it as number"
            )
    elif kind == "boolean":
        not_boolean = present.loc[~present.map(_is_boolean)]
        if len(not_boolean):
            raise ValueError(
                f"spec file {path}: feature {name!r} is boolean but holds {len(not_boolean)} other values, "
                f"e.g. {not_boolean.tolist()[0]!r}; booleans are true/false, 1/0, yes/no or y/n"
            )


def _check_category_forms(present: pd.Series, name: str, path: Path) -> None:
    """Two texts that differ only in Unicode normalization ("São" composed, NFC, or as "a" plus a
    combining tilde, NFD) look the same in the card, the API's enum and its errors, yet would be two
    categories: a client sending the other form gets the other category's score, or an error."""
    forms: dict[str, str] = {}
    for text in pd.unique(present.astype(str)).tolist():
        seen = forms.setdefault(unicodedata.normalize("NFC", text), text)
        if seen != text:
            raise ValueError(
                f"spec file {path}: feature {name!r} holds {seen!r} and {text!r}, which differ only in "
                "Unicode normalization (NFC/NFD) and would be two categories that look the same: "
                "normalize the column to NFC"
            )


def _is_boolean(value: object) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in _BOOLEAN_TEXT
    try:
        return float(value) in (0.0, 1.0)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


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
    # Text options go into the model card, which refuses anything else only once training is done.
    for text_option in ("type", "unit", "description", "reason", "label"):
        value = options.get(text_option)
        if value is not None and not isinstance(value, str):
            raise ValueError(f"spec file {path}: feature {name!r} {text_option} must be text, got {value!r}")
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
    # True/False with missing values: an object column (CSV and Parquet alike), still booleans, not the
    # categories "True" and "False" (which API clients would have to send as text).
    present = values.dropna()
    if values.dtype == object and len(present) and all(isinstance(v, bool | np.bool_) for v in present):
        return "boolean"
    if pd.api.types.is_integer_dtype(values):
        return "integer"
    if pd.api.types.is_numeric_dtype(values):
        return "number"
    return "category"
