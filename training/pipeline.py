"""The training chain: split → cross-validate candidates → calibrate → select → threshold → fit →
ONNX export with parity check → fairness and drift references → model card → bundle on disk.

Each step is a small typed function; :func:`train_bundle` runs them in order.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import platform
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from numpy.typing import NDArray
from sklearn.model_selection import RepeatedStratifiedKFold
from sklearn.pipeline import Pipeline
from threadpoolctl import threadpool_limits

from lambdas.scoring.card import (
    AttributeFairness,
    CandidateReport,
    ChampionComparison,
    CrossValidatedMetrics,
    DataFingerprint,
    DecisionPolicy,
    DriftReference,
    FeatureSchema,
    Lineage,
    MetricSet,
    ModelCard,
    OnnxInfo,
    Parity,
)
from training.calibration import SigmoidCalibrator, cross_fitted_sigmoid, decide_calibration, fit_sigmoid
from training.candidates import COMPLEXITY_ORDER, SMALL_DATA_ROWS, Candidate, candidates_by_name
from training.datasets.catalog import LoadedDataset
from training.datasets.spec import DatasetSpec, ProtectedAttribute
from training.fairness import fairness_for_attribute
from training.features import MISSING_CATEGORY, model_input_frame
from training.metrics import (
    bootstrap_intervals,
    calibration_report,
    decision_outcomes,
    evaluate,
    paired_bootstrap_differences,
    summarise,
)
from training.onnx_export import (
    LABEL_OUTPUT,
    OPSET,
    PARITY_TOLERANCE,
    PROBABILITY_OUTPUT,
    card_feed,
    check_parity,
    convert_pipeline,
    onnx_feed,
    onnx_probabilities,
    sha256_hex,
)
from training.provenance import source_commit
from training.reference import feature_references, numeric_reference
from training.threshold import choose_threshold

log = logging.getLogger(__name__)

SELECTION_RULE = (
    "Highest mean cross-validated ROC AUC (after calibration where it helped) on the training rows; "
    "ties within 0.0005 go to the lower cross-validated Brier score. The holdout is never used for "
    "selection. A champion whose ONNX export fails parity is dropped and the next candidate is taken."
)
MIN_BOOTSTRAP_RESAMPLES = 100
PACKAGES = ("scikit-learn", "skl2onnx", "onnx", "onnxruntime", "numpy", "pandas", "pydantic")


def default_model_name(dataset: str) -> str:
    """The registry name of a dataset's model (versions of it live under this name)."""
    return f"{dataset}-default-risk"


@dataclass(frozen=True)
class TrainingConfig:
    seed: int = 42
    folds: int = 5
    repeats: int | None = None  # None: 3 on small data (< SMALL_DATA_ROWS rows), else 1
    holdout_fraction: float = 0.2
    cost_of_approving_defaulter: float = 5.0
    cost_of_declining_good_applicant: float = 1.0
    candidates: list[str] | None = None
    model_name: str | None = None
    # Folds run in parallel processes, each fit single-threaded: OpenMP threads of concurrent
    # fits on 2 cores oversubscribe and slow boosting down by an order of magnitude.
    n_jobs: int = 2
    # A registered champion bundle (folder) to score on this run's holdout, for the gate.
    champion_bundle: Path | None = None
    # Stratified bootstrap resamples of the holdout for the champion's ROC AUC and Brier intervals
    # (seeded by ``seed``); a 95% percentile interval needs a few hundred.
    bootstrap_resamples: int = 500

    def __post_init__(self) -> None:
        if not 0 < self.holdout_fraction < 0.5:
            raise ValueError(f"holdout_fraction must be in (0, 0.5), got {self.holdout_fraction}")
        if self.folds < 2:
            raise ValueError(f"folds must be at least 2, got {self.folds}")
        # Checked here, before any fitting: a NaN cost passes the threshold's "> 0" check and only
        # fails minutes later, when the card cannot be written as JSON.
        for name in ("cost_of_approving_defaulter", "cost_of_declining_good_applicant"):
            cost = getattr(self, name)
            if not (math.isfinite(cost) and cost > 0):
                raise ValueError(f"{name} must be a finite number above 0, got {cost}")
        if self.n_jobs == 0:
            raise ValueError("n_jobs must not be 0 (a count of processes, or -1 for all cores)")
        if self.bootstrap_resamples < MIN_BOOTSTRAP_RESAMPLES:
            raise ValueError(
                f"bootstrap_resamples must be at least {MIN_BOOTSTRAP_RESAMPLES} for a 95% interval, "
                f"got {self.bootstrap_resamples}"
            )
        if not 0 <= self.seed < 2**32:
            raise ValueError(f"seed must be in [0, 2**32), got {self.seed}")
        candidates_by_name(self.candidates)  # unknown or repeated names, before any data is read


@dataclass(frozen=True)
class Split:
    train: pd.DataFrame
    holdout: pd.DataFrame
    description: str


@dataclass
class CandidateResult:
    candidate: Candidate
    cv_raw: CrossValidatedMetrics
    cv: CrossValidatedMetrics
    oof_raw: NDArray[np.float64]  # first repeat, uncalibrated
    oof: NDArray[np.float64]  # first repeat, calibrated where chosen
    calibrated: bool
    calibration_reason: str
    fit_seconds: float
    status: str = "candidate"
    dropped_reason: str | None = None
    holdout: MetricSet | None = None
    extra: dict[str, object] = field(default_factory=dict)


def split_holdout(dataset: LoadedDataset, config: TrainingConfig) -> Split:
    """Out-of-time holdout (latest rows) when the dataset has dates, else by a keyed hash of each record
    (see HOLDOUT_BY_RECORD_HASH): either way, rows added later never move an earlier row into the holdout."""
    spec, frame = dataset.spec, dataset.frame
    if spec.time_column:
        when = _time_values(frame[spec.time_column], spec.time_column)
        order = np.argsort(when.to_numpy(), kind="stable")
        ordered = frame.iloc[order].reset_index(drop=True)
        times = when.iloc[order].reset_index(drop=True)
        first_held_out = round(len(ordered) * (1 - config.holdout_fraction))
        if first_held_out >= len(ordered):
            fraction = _percent(config.holdout_fraction)
            raise ValueError(
                f"out-of-time split: {len(ordered)} rows are too few for a {fraction} holdout "
                "(it would hold no row)"
            )
        boundary = times.iloc[first_held_out]
        # Every row dated on the boundary goes to the holdout: no date is on both sides.
        cut = int(times.searchsorted(boundary, side="left"))
        if cut == 0:
            raise ValueError(f"out-of-time split: every row is dated {boundary}; no training rows left")
        latest = _percent(config.holdout_fraction)
        return Split(
            ordered.iloc[:cut].reset_index(drop=True),
            ordered.iloc[cut:].reset_index(drop=True),
            f"out-of-time: latest {latest} by {spec.time_column} (from {boundary})",
        )
    in_holdout = _keyed_hash_fractions(_record_texts(frame, spec), config.seed) < config.holdout_fraction
    if in_holdout.all() or not in_holdout.any():
        raise ValueError(f"holdout by record hash: {int(in_holdout.sum())} of {len(frame)} rows drawn")
    split = Split(
        frame.loc[~in_holdout].reset_index(drop=True),
        frame.loc[in_holdout].reset_index(drop=True),
        f"{HOLDOUT_BY_RECORD_HASH} {_percent(config.holdout_fraction)} (seed {config.seed})",
    )
    # Unlike a stratified draw, the hash may leave a class out of a small dataset's holdout (or training
    # rows): said here, before any model is fitted, rather than by a metric after cross-validation.
    for side, rows in (("holdout", split.holdout), ("training", split.train)):
        for label in (0, 1):
            if not bool((rows[spec.target] == label).any()):
                raise ValueError(
                    f"holdout by record hash: the {len(rows)} {side} rows hold no row of class {label} "
                    f"(the dataset has {int((frame[spec.target] == label).sum())} of its {len(frame)} rows); "
                    "too few rows of that class to split"
                )
    return split


def _percent(fraction: float) -> str:
    """The holdout fraction as a percentage that reads back as the same number ("20%", "12.5%"): the
    description is how a later run tells whether its holdout was drawn by the same rule, so it is never
    rounded (12% and 12.5% must not read alike)."""
    for decimals in range(16):
        text = f"{fraction * 100:.{decimals}f}"
        if float(text) / 100 == fraction:
            return f"{text}%"
    return f"{fraction!r} of the rows"


# Each applicant record goes to the holdout by a keyed hash of its values, not by a random draw of
# today's rows: retraining on grown data (new loans added) keeps every earlier record on its side, so a
# retrained candidate's holdout never holds the champion's training rows, and the gate compares both
# models on rows neither was fitted to. (A fresh stratified draw put ~80% of the champion's training rows
# into the candidate's holdout: the champion looked better than it was and good candidates were refused.)
HOLDOUT_BY_RECORD_HASH = "records by keyed hash"
_RECORD_FIELD_SEPARATOR = "\x1f"


def _record_texts(frame: pd.DataFrame, spec: DatasetSpec) -> list[str]:
    """One canonical text per row: the applicant's record (features and protected attributes, not the
    target, so a corrected label does not move a row), the same whichever source the rows came from (a
    number reads the same from CSV text, an int64, a float64 or a Parquet decimal)."""
    fields: list[list[str]] = []
    for column in _record_columns(spec):
        values = frame[column].tolist()
        numbers = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=np.float64).tolist()
        # Value by value, never by what the rest of the column holds: one new text value in a column of
        # numeric codes must not change every other row's text (and so its side of the split).
        texts = [_value_text(value, number) for value, number in zip(values, numbers, strict=True)]
        fields.append([f"{column}={text}" for text in texts])
    return [_RECORD_FIELD_SEPARATOR.join(row) for row in zip(*fields, strict=True)]


def _record_columns(spec: DatasetSpec) -> list[str]:
    """The columns a record's text is made of: features and protected attributes, not the target."""
    return sorted({*spec.feature_names, *(p.column for p in spec.protected)})


def _value_text(value: Any, number: float) -> str:
    """A number (or a text that reads as one) as a Python float's repr, the shortest text that reads back
    as the same double in any Python 3 (a numpy scalar's repr depends on numpy's version and print
    options); a missing value (None, NaN, NA, "") as ""; any other value as its text."""
    if not math.isnan(number):
        return repr(number)
    if value is None or bool(pd.isna(value)) or value == "":
        return ""
    return str(value)


def _keyed_hash_fractions(texts: Sequence[str], seed: int) -> NDArray[np.float64]:
    """A number in [0, 1) per text, fixed by the text and the seed (BLAKE2b keyed with the seed)."""
    key = f"holdout-seed-{seed}".encode()
    return np.fromiter(
        (
            int.from_bytes(hashlib.blake2b(text.encode(), key=key, digest_size=8).digest(), "big") / 2.0**64
            for text in texts
        ),
        dtype=np.float64,
        count=len(texts),
    )


def _time_values(values: pd.Series, column: str) -> pd.Series:
    """The time column as sortable values: dates given as text are parsed (text sorts "01/2021"
    before "12/2020"); a row without a date is refused, since no side of the cut is right for it."""
    if not (pd.api.types.is_numeric_dtype(values) or pd.api.types.is_datetime64_any_dtype(values)):
        values = pd.to_datetime(values, errors="raise")
    missing = int(values.isna().sum())
    if missing:
        raise ValueError(
            f"time column {column!r}: {missing} rows without a date; out-of-time split needs all"
        )
    return values


def _positive(pipeline: Pipeline, x: pd.DataFrame) -> NDArray[np.float64]:
    return np.asarray(pipeline.predict_proba(x)[:, 1], dtype=np.float64)


def _fit_fold(
    candidate: Candidate,
    spec: DatasetSpec,
    x: pd.DataFrame,
    y: NDArray[np.int_],
    fit_rows: NDArray[np.int_],
    test_rows: NDArray[np.int_],
    seed: int,
) -> NDArray[np.float64]:
    with threadpool_limits(limits=1):
        # Settings for all the training rows (len(y)), as the final model gets: a fold's own, smaller
        # count could pick other settings (below SMALL_DATA_ROWS), and the CV figures, the calibration
        # map and the threshold would then describe another model than the one deployed.
        pipeline = candidate.build(spec, len(y), seed)
        pipeline.fit(x.iloc[fit_rows], y[fit_rows])
        return _positive(pipeline, x.iloc[test_rows])


def cross_validate(
    candidate: Candidate, spec: DatasetSpec, x: pd.DataFrame, y: NDArray[np.int_], config: TrainingConfig
) -> CandidateResult:
    repeats = config.repeats or (3 if len(y) < SMALL_DATA_ROWS else 1)
    # Said before any fitting: with fewer rows of a class than folds, some fold tests on one class only
    # and its metrics are undefined (the error would come from the metrics, after every fold was fitted).
    for label in (0, 1):
        count = int((y == label).sum())
        if count < config.folds:
            raise ValueError(
                f"cross-validation: the {len(y)} training rows hold {count} of class {label}, fewer than "
                f"the {config.folds} folds, each of which needs both classes"
            )
    splitter = RepeatedStratifiedKFold(n_splits=config.folds, n_repeats=repeats, random_state=config.seed)
    oof = np.zeros((repeats, len(y)))
    splits = list(splitter.split(x, y))
    started = time.perf_counter()
    predictions = Parallel(n_jobs=config.n_jobs)(
        delayed(_fit_fold)(candidate, spec, x, y, fit_rows, test_rows, config.seed)
        for fit_rows, test_rows in splits
    )
    fold_rows: list[tuple[int, NDArray[np.int_]]] = []
    for index, ((_, test_rows), predicted) in enumerate(zip(splits, predictions, strict=True)):
        oof[index // config.folds, test_rows] = predicted
        fold_rows.append((index // config.folds, test_rows))
    fit_seconds = time.perf_counter() - started
    # One decision, on the first repeat, applied to every repeat: deciding per repeat could leave a
    # repeat uncalibrated in figures reported as calibrated.
    decision, first = decide_calibration(oof[0], y, config.seed)
    calibrated_oof = (
        np.array([first, *(cross_fitted_sigmoid(oof[r], y, config.seed) for r in range(1, repeats))])
        if decision.use_sigmoid
        else oof
    )

    def folds_metrics(predictions: NDArray[np.float64]) -> CrossValidatedMetrics:
        per_fold = [evaluate(y[rows], predictions[r, rows]) for r, rows in fold_rows]
        mean, std = summarise(per_fold)
        return CrossValidatedMetrics(folds=config.folds, repeats=repeats, mean=mean, std=std)

    return CandidateResult(
        candidate=candidate,
        cv_raw=folds_metrics(oof),
        cv=folds_metrics(calibrated_oof),
        oof_raw=oof[0],
        oof=calibrated_oof[0],
        calibrated=decision.use_sigmoid,
        calibration_reason=decision.reason,
        fit_seconds=fit_seconds,
    )


def rank_candidates(results: list[CandidateResult]) -> list[CandidateResult]:
    """Order by the selection rule (SELECTION_RULE)."""
    best_auc = max(r.cv.mean.roc_auc for r in results)

    def key(result: CandidateResult) -> tuple[bool, float, float, int]:
        # AUCs within 0.0005 of the best are tied: among them, lower Brier, then the simpler model.
        tied = best_auc - result.cv.mean.roc_auc <= 0.0005
        return (
            not tied,
            0.0 if tied else -result.cv.mean.roc_auc,
            result.cv.mean.brier,
            COMPLEXITY_ORDER.get(result.candidate.name, 99),
        )

    return sorted(results, key=key)


@dataclass(frozen=True)
class FittedModel:
    pipeline: Pipeline
    calibrator: SigmoidCalibrator | None

    def predict(self, x: pd.DataFrame) -> NDArray[np.float64]:
        raw = _positive(self.pipeline, x)
        return self.calibrator.apply(raw) if self.calibrator else raw


def fit_final(
    result: CandidateResult, spec: DatasetSpec, x: pd.DataFrame, y: NDArray[np.int_], config: TrainingConfig
) -> FittedModel:
    pipeline = result.candidate.build(spec, len(y), config.seed)
    pipeline.fit(x, y)
    # The calibration map is fitted on out-of-fold scores, as CalibratedClassifierCV(ensemble=False) does.
    calibrator = fit_sigmoid(result.oof_raw, y) if result.calibrated else None
    return FittedModel(pipeline, calibrator)


def _fit_final_single_threaded(
    result: CandidateResult, spec: DatasetSpec, x: pd.DataFrame, y: NDArray[np.int_], config: TrainingConfig
) -> FittedModel:
    with threadpool_limits(limits=1):
        return fit_final(result, spec, x, y, config)


def _protected_groups(attribute: ProtectedAttribute, values: pd.Series) -> pd.Series:
    """Group label per row; a band includes its lower edge (bands (25, 35): 25 is in "25-34").
    Missing values stay missing (reported as their own group), never in a band."""
    if not attribute.bands:
        return values.astype("string")
    bands = np.asarray(attribute.bands, dtype=np.float64)
    labels = attribute.band_labels or tuple(f"band_{i}" for i in range(len(bands) + 1))
    # Unsorted edges or a label count that does not fit would put rows under the wrong label silently.
    if np.any(np.diff(bands) <= 0) or len(labels) != len(bands) + 1:
        raise ValueError(
            f"protected attribute {attribute.column!r}: bands must ascend strictly and have one label "
            f"more than edges, got bands {attribute.bands} and labels {attribute.band_labels}"
        )
    numbers = pd.to_numeric(values).to_numpy(dtype=np.float64, na_value=np.nan)
    codes = np.searchsorted(bands, numbers, side="right")
    # searchsorted puts NaN after every edge, i.e. in the top band: keep it missing instead.
    banded = [None if np.isnan(n) else labels[c] for n, c in zip(numbers, codes, strict=True)]
    return pd.Series(banded, index=values.index, dtype="string")


def fairness_report(
    spec: DatasetSpec,
    holdout: pd.DataFrame,
    probability: NDArray[np.float64],
    threshold: float,
    seed: int | None = None,
) -> list[AttributeFairness]:
    """Fairness figures per protected attribute; with ``seed``, their comparisons' bootstrap intervals."""
    declined = probability >= threshold
    y = holdout[spec.target].to_numpy(dtype=np.int64)
    return [
        fairness_for_attribute(
            attribute.column,
            _protected_groups(attribute, holdout[attribute.column]),
            y,
            declined,
            "holdout rows",
            seed=seed,
        )
        for attribute in spec.protected
    ]


def feature_schema(spec: DatasetSpec, train_inputs: pd.DataFrame) -> list[FeatureSchema]:
    schemas = []
    for feature in spec.features:
        column = train_inputs[feature.name]
        is_category = feature.kind == "category"
        nullable = bool((column == MISSING_CATEGORY).any() if is_category else column.isna().any())
        categories = sorted({str(v) for v in column if v != MISSING_CATEGORY}) if is_category else None
        minimum, maximum = feature.minimum, feature.maximum
        if feature.kind == "boolean":
            minimum, maximum = None, None
        schemas.append(
            FeatureSchema(
                name=feature.name,
                type=feature.kind,
                unit=feature.unit,
                description=feature.description or feature.name,
                nullable=nullable,
                minimum=minimum,
                maximum=maximum,
                categories=categories,
                reason=feature.reason_text(),
                reason_high=feature.directional_reasons()[0],
                reason_low=feature.directional_reasons()[1],
                reason_missing=feature.missing_reason() if nullable else None,
                onnx_input=feature.name,
                onnx_type="int64" if is_category else "double",
            )
        )
    return schemas


def coded_categories(schemas: Sequence[FeatureSchema]) -> dict[str, list[str]]:
    """Per category feature, the categories its int64 codes index (as the card lists them)."""
    return {f.name: f.categories for f in schemas if f.categories is not None}


def data_fingerprint(dataset: LoadedDataset, split: Split) -> DataFingerprint:
    frame = dataset.frame
    holdout_positives = int((split.holdout[dataset.spec.target] == 1).sum())
    row_hashes = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    digest = hashlib.sha256(row_hashes.tobytes() + ",".join(frame.columns).encode()).hexdigest()
    return DataFingerprint(
        source=dataset.source,
        rows_raw=dataset.rows_raw,
        rows_used=len(frame),
        rows_train=len(split.train),
        rows_holdout=len(split.holdout),
        positive_rate=float(frame[dataset.spec.target].mean()),
        sha256=digest,
        cleaning=dataset.cleaning,
        holdout=split.description,
        holdout_positives=holdout_positives,
        holdout_negatives=len(split.holdout) - holdout_positives,
    )


def _git_commit() -> str:
    return source_commit(Path(__file__).resolve().parent)


def lineage(config: TrainingConfig, seconds: float) -> Lineage:
    packages = {}
    for name in PACKAGES:
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = "not installed"
    return Lineage(
        git_commit=_git_commit(),
        packages=packages,
        python=platform.python_version(),
        seed=config.seed,
        created_at=datetime.now(UTC).replace(microsecond=0).isoformat(),
        training_seconds=round(seconds, 2),
    )


def compare_with_champion(
    champion_bundle: Path,
    holdout: pd.DataFrame,
    target: str,
    data: DataFingerprint | None = None,
    *,
    candidate_probability: NDArray[np.float64] | None = None,
    resamples: int = TrainingConfig.bootstrap_resamples,
    seed: int = TrainingConfig.seed,
    record_columns: Sequence[str] | None = None,
) -> ChampionComparison:
    """Score the champion's ONNX model on this run's holdout rows, using the champion's own schema.

    With this run's ``data``, only when no holdout row can have been the champion's training row: both
    holdouts drawn by the same rule (the same record hash and seed, or out of time by the same column),
    and an out-of-time holdout starting no earlier than the champion's. With ``record_columns`` (the
    columns this run's record hash read), a holdout by record hash also needs the champion's records to
    have been the same columns. Otherwise the champion is not scored and the note says why (the gate
    then refuses to compare).

    With ``candidate_probability`` (this run's model on the same ``holdout`` rows, in their order) a
    scored champion also gets ``difference_intervals``: a paired stratified bootstrap of the differences
    candidate - champion in ROC AUC and Brier (``resamples`` resamples, seeded by ``seed``).
    """
    champion = ModelCard.model_validate_json((champion_bundle / "model_card.json").read_text())
    overlap = _holdout_overlap(champion.data.holdout, data.holdout) if data is not None else None
    if overlap is None and data is not None and record_columns is not None:
        overlap = _other_record_columns(champion, data.holdout, record_columns)
    if overlap is not None:
        return ChampionComparison(
            champion_version=champion.model_version, champion_metrics=None, note=f"not scored: {overlap}"
        )
    missing = [f.name for f in champion.features if f.name not in holdout.columns]
    if missing:
        return ChampionComparison(
            champion_version=champion.model_version,
            champion_metrics=None,
            note=f"champion features missing from this dataset: {missing}",
        )
    # By the champion card's own input types: an older champion takes categories as text.
    feed = card_feed(champion.features, holdout)
    model_bytes = (champion_bundle / champion.onnx.file).read_bytes()
    if sha256_hex(model_bytes) != champion.onnx.sha256:
        raise ValueError(f"champion bundle {champion_bundle}: model.onnx does not match the card's sha256")
    probability = onnx_probabilities(model_bytes, feed)
    note = f"champion {champion.model_version} scored on this card's {len(holdout)} holdout rows"
    if data is not None:
        note += f", drawn by the rule its own holdout was ({_holdout_rule(data.holdout)})"
    y_holdout = holdout[target].to_numpy(dtype=np.int64)
    return ChampionComparison(
        champion_version=champion.model_version,
        champion_metrics=evaluate(y_holdout, probability),
        note=note,
        difference_intervals=(
            paired_bootstrap_differences(y_holdout, candidate_probability, probability, resamples, seed)
            if candidate_probability is not None
            else None
        ),
    )


_OUT_OF_TIME = "out-of-time:"
_BOUNDARY = re.compile(r" \(from (?P<boundary>[^()]*)\)$")


def _holdout_rule(description: str) -> str:
    """A holdout description without an out-of-time boundary (which moves as dated rows are added)."""
    return _BOUNDARY.sub("", description)


def _holdout_overlap(champion_holdout: str, holdout: str) -> str | None:
    """Why this holdout may hold rows the champion was trained on, or None when it cannot."""
    if _holdout_rule(champion_holdout) != _holdout_rule(holdout):
        return (
            f"the champion's holdout was drawn another way ({champion_holdout}; this card: {holdout}), so "
            "this holdout may hold rows it was trained on"
        )
    if not holdout.startswith(_OUT_OF_TIME):
        return None
    if not _starts_no_earlier(_boundary(holdout), _boundary(champion_holdout)):
        return (
            f"this out-of-time holdout ({holdout}) does not start at or after the champion's "
            f"({champion_holdout}), so it may hold rows the champion was trained on"
        )
    return None


def _other_record_columns(champion: ModelCard, holdout: str, record_columns: Sequence[str]) -> str | None:
    """Why a holdout by record hash may hold the champion's training rows though drawn by its rule: its
    records were other columns (a feature added or removed), so every record's text, and side, moved."""
    if holdout.startswith(_OUT_OF_TIME):
        return None
    champion_columns = {*(f.name for f in champion.features), *champion.protected_attributes}
    if champion_columns == set(record_columns):
        return None
    added, dropped = (
        sorted(set(record_columns) - champion_columns),
        sorted(champion_columns - set(record_columns)),
    )
    return (
        f"the champion's holdout records were other columns (this card adds {added}, drops {dropped}), so "
        "the record hash put other rows in this holdout, which may hold rows it was trained on"
    )


# An out-of-time holdout's first date or number, or None where its description gives none that reads.
_Boundary = int | float | pd.Timestamp | None


def _starts_no_earlier(boundary: _Boundary, champion: _Boundary) -> bool:
    if isinstance(boundary, int | float) and isinstance(champion, int | float):
        return boundary >= champion
    if (
        isinstance(boundary, pd.Timestamp)
        and isinstance(champion, pd.Timestamp)
        # A date with a time zone and one without (a Parquet timestamp, a CSV's text) do not compare.
        and (boundary.tz is None) == (champion.tz is None)
    ):
        return bool(boundary >= champion)
    return False  # a boundary that cannot be read, or of another kind: not shown to be safe


def _boundary(description: str) -> _Boundary:
    """The first date (or number) of an out-of-time holdout, as its description gives it: an integer
    exactly (a double holds integers only up to 2**53, and nanosecond times go beyond)."""
    found = _BOUNDARY.search(description)
    if found is None:
        return None
    text = found.group("boundary")
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return pd.Timestamp(text)
    except ValueError:
        return None


def _refuse_features_without_values(spec: DatasetSpec, x_train: pd.DataFrame, holdout: str) -> None:
    """Before any fitting: a feature with no value in the training rows (e.g. recorded only for the
    latest loans, all of them in an out-of-time holdout) teaches no model anything and has no drift
    reference; training would otherwise fail only after every candidate was cross-validated."""
    empty = [
        f.name
        for f in spec.features
        if not (
            (x_train[f.name] != MISSING_CATEGORY).any()
            if f.kind == "category"
            else np.isfinite(x_train[f.name].to_numpy(dtype=np.float64)).any()
        )
    ]
    if empty:
        raise ValueError(
            f"features {empty} hold no value in the {len(x_train)} training rows (holdout: {holdout}); "
            "no model can learn from them: drop them from the spec or train on rows that hold them"
        )


# A numeric protected attribute without bands is grouped by its distinct values: an age in years would
# give one fairness group per year, each too small to compare, so beyond this many values bands are needed.
MAX_UNBANDED_GROUPS = 20


def _refuse_unbanded_numeric_attributes(spec: DatasetSpec, holdout: pd.DataFrame) -> None:
    """Before any fitting: fairness figures of a numeric protected attribute given without bands (a spec
    file's ``"protected": ["age"]``) would list every distinct value as its own group."""
    for attribute in spec.protected:
        values = holdout[attribute.column]
        if attribute.bands or pd.api.types.is_bool_dtype(values) or not pd.api.types.is_numeric_dtype(values):
            continue
        distinct = int(values.nunique(dropna=True))
        if distinct > MAX_UNBANDED_GROUPS:
            raise ValueError(
                f"protected attribute {attribute.column!r} is numeric with {distinct} distinct values in the "
                f"{len(holdout)} holdout rows and no bands: its fairness figures would have one group per "
                f'value; give it bands (a spec file\'s "protected": {{"{attribute.column}": '
                '{"bands": [...], "band_labels": [...]}})'
            )


@dataclass(frozen=True)
class TrainingOutcome:
    card: ModelCard
    onnx_bytes: bytes
    results: list[CandidateResult]


def train(dataset: LoadedDataset, config: TrainingConfig | None = None) -> TrainingOutcome:
    config = config or TrainingConfig()
    started = time.perf_counter()
    spec = dataset.spec
    split = split_holdout(dataset, config)
    x_train = model_input_frame(spec, split.train)
    _refuse_features_without_values(spec, x_train, split.description)
    _refuse_unbanded_numeric_attributes(spec, split.holdout)
    y_train = split.train[spec.target].to_numpy(dtype=np.int64)
    x_holdout = model_input_frame(spec, split.holdout)
    y_holdout = split.holdout[spec.target].to_numpy(dtype=np.int64)

    results = []
    for candidate in candidates_by_name(config.candidates):
        result = cross_validate(candidate, spec, x_train, y_train, config)
        log.info(
            "%s: CV ROC AUC %.4f, Brier %.4f", candidate.name, result.cv.mean.roc_auc, result.cv.mean.brier
        )
        results.append(result)

    # Holdout figures for every candidate are reported, never used to choose.
    final_models = Parallel(n_jobs=config.n_jobs)(
        delayed(_fit_final_single_threaded)(result, spec, x_train, y_train, config) for result in results
    )
    fitted: dict[str, FittedModel] = {}
    for result, model in zip(results, final_models, strict=True):
        fitted[result.candidate.name] = model
        result.holdout = evaluate(y_holdout, model.predict(x_holdout))

    schemas = feature_schema(spec, x_train)
    categories = coded_categories(schemas)
    feed = onnx_feed(spec, x_holdout, categories)
    champion: CandidateResult | None = None
    onnx_bytes = b""
    parity_difference = float("nan")
    for result in rank_candidates(results):
        model = fitted[result.candidate.name]
        calibration = (model.calibrator.slope, model.calibrator.intercept) if model.calibrator else None
        try:
            candidate_bytes = convert_pipeline(
                model.pipeline, spec, calibration, categories
            ).SerializeToString()
            parity = check_parity(candidate_bytes, feed, model.predict(x_holdout))
        except Exception as error:
            result.status, result.dropped_reason = "dropped", f"ONNX conversion failed: {error}"
            log.warning("%s dropped: %s", result.candidate.name, result.dropped_reason)
            continue
        if not parity.passed:
            result.status = "dropped"
            result.dropped_reason = f"ONNX parity {parity.max_abs_difference:.2e} exceeds {PARITY_TOLERANCE}"
            log.warning("%s dropped: %s", result.candidate.name, result.dropped_reason)
            continue
        champion, onnx_bytes, parity_difference = result, candidate_bytes, parity.max_abs_difference
        break
    if champion is None:
        raise RuntimeError("no candidate passed ONNX conversion and parity; see the logged reasons")
    champion.status = "champion"

    threshold = choose_threshold(
        y_train, champion.oof, config.cost_of_approving_defaulter, config.cost_of_declining_good_applicant
    )
    final = fitted[champion.candidate.name]
    holdout_probability = final.predict(x_holdout)
    bootstrap_started = time.perf_counter()
    uncertainty = bootstrap_intervals(y_holdout, holdout_probability, config.bootstrap_resamples, config.seed)
    log.info(
        "holdout intervals: ROC AUC %.4f-%.4f, Brier %.4f-%.4f (%d resamples, %.2f s)",
        uncertainty.roc_auc.lower,
        uncertainty.roc_auc.upper,
        uncertainty.brier.lower,
        uncertainty.brier.upper,
        config.bootstrap_resamples,
        time.perf_counter() - bootstrap_started,
    )
    references, baseline = feature_references(spec, x_train)
    fingerprint = data_fingerprint(dataset, split)
    sha = sha256_hex(onnx_bytes)
    card = ModelCard(
        model_name=config.model_name or default_model_name(spec.name),
        model_version=f"{spec.name}-{sha[:12]}",
        dataset=spec.name,
        description=spec.description,
        target=spec.target,
        positive_class=spec.positive_class,
        champion=champion.candidate.name,
        selection_rule=SELECTION_RULE,
        onnx=OnnxInfo(
            sha256=sha,
            opset=dict(OPSET),
            input_names=[f.name for f in spec.features],
            probability_output=PROBABILITY_OUTPUT,
            label_output=LABEL_OUTPUT,
        ),
        features=schemas,
        protected_attributes=[p.column for p in spec.protected],
        decision_policy=DecisionPolicy(
            threshold=threshold.threshold,
            method="minimum expected cost on out-of-fold predictions of the training rows",
            cost_of_approving_defaulter=config.cost_of_approving_defaulter,
            cost_of_declining_good_applicant=config.cost_of_declining_good_applicant,
            expected_cost_per_application=threshold.expected_cost,
            theoretical_threshold=threshold.theoretical_threshold,
            chosen_on=f"{len(y_train)} training rows, out-of-fold (first CV repeat)",
        ),
        candidates=[
            CandidateReport(
                name=r.candidate.name,
                description=r.candidate.description,
                params=r.candidate.params(spec, len(y_train), config.seed),
                calibration="sigmoid" if r.calibrated else "none",
                calibration_reason=r.calibration_reason,
                cv_uncalibrated=r.cv_raw,
                cv=r.cv,
                fit_seconds=round(r.fit_seconds, 2),
                status=r.status,  # type: ignore[arg-type]
                dropped_reason=r.dropped_reason,
            )
            for r in results
        ],
        holdout_metrics=evaluate(y_holdout, holdout_probability),
        holdout_decisions=decision_outcomes(
            y_holdout,
            holdout_probability,
            threshold.threshold,
            config.cost_of_approving_defaulter,
            config.cost_of_declining_good_applicant,
        ),
        holdout_calibration=calibration_report(
            y_holdout, holdout_probability, f"{len(y_holdout)} holdout rows scored by the champion"
        ),
        holdout_uncertainty=uncertainty,
        holdout_metrics_by_candidate={r.candidate.name: r.holdout for r in results if r.holdout is not None},
        parity=Parity(
            max_abs_difference=parity_difference,
            rows_checked=len(y_holdout),
            tolerance=PARITY_TOLERANCE,
            passed=True,
            input_precision=(
                "float64 numbers, categories as int64 codes mapped back to their text in the graph; "
                "double-precision thresholds and leaf values"
            ),
        ),
        fairness=fairness_report(spec, split.holdout, holdout_probability, threshold.threshold, config.seed),
        reference=DriftReference(
            features=references,
            # The ONNX model's scores, the very numbers the runtime's drift counting bins: scikit-learn's
            # differ by up to the parity difference, enough to put a score on an edge in the other bin.
            score=numeric_reference(onnx_probabilities(onnx_bytes, feed)),
            reason_baseline=baseline,
            computed_on="features: training rows; score: holdout rows scored by the champion's ONNX model",
        ),
        data=fingerprint,
        lineage=lineage(config, time.perf_counter() - started),
        champion_comparison=(
            compare_with_champion(
                config.champion_bundle,
                split.holdout,
                spec.target,
                fingerprint,
                # The probabilities holdout_metrics are computed from, for the paired differences.
                candidate_probability=holdout_probability,
                resamples=config.bootstrap_resamples,
                seed=config.seed,
                record_columns=_record_columns(spec),
            )
            if config.champion_bundle
            else None
        ),
        notes=list(spec.notes),
    )
    return TrainingOutcome(card=card, onnx_bytes=onnx_bytes, results=results)


def write_bundle(outcome: TrainingOutcome, out_dir: Path) -> Path:
    """model.onnx + model_card.json, written to temporary names first so a bundle is never half-written.

    Over an existing bundle the old card goes first: a failure or interruption between the two
    renames then leaves a model without a card (which nothing loads), never a card describing
    another model. Temporaries are removed when writing fails.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = out_dir / outcome.card.onnx.file
    card_path = out_dir / "model_card.json"
    temporary_onnx = onnx_path.with_suffix(".onnx.tmp")
    temporary_card = card_path.with_suffix(".json.tmp")
    try:
        temporary_onnx.write_bytes(outcome.onnx_bytes)
        temporary_card.write_text(
            json.dumps(outcome.card.model_dump(mode="json"), indent=2, allow_nan=False) + "\n"
        )
        card_path.unlink(missing_ok=True)
        temporary_onnx.replace(onnx_path)
        temporary_card.replace(card_path)
    finally:
        temporary_onnx.unlink(missing_ok=True)
        temporary_card.unlink(missing_ok=True)
    return out_dir


def train_bundle(dataset: LoadedDataset, out_dir: Path, config: TrainingConfig | None = None) -> ModelCard:
    outcome = train(dataset, config)
    write_bundle(outcome, out_dir)
    return outcome.card
