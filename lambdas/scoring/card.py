"""The model card: the contract between training and everything that serves the model.

Training writes it next to ``model.onnx``; the scoring runtime, the API schema, batch column
checks, reason texts and drift references are all derived from it. Pure pydantic, no AWS.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

CARD_SCHEMA_VERSION = "1.0"

FeatureType = Literal["number", "integer", "category", "boolean"]
# How a feature enters the ONNX graph: numbers and booleans as doubles; categories either as their
# text ("string", the older bundles) or as a code ("int64"): the category's position in the card's
# ``categories``, NULL_CATEGORY_CODE for a missing one. Codes spare onnxruntime the conversion of
# every Python string into a C++ one (see training/onnx_export.py for the figures).
OnnxElementType = Literal["double", "string", "int64"]
NULL_CATEGORY_CODE = -1
# Text with at least one non-blank character: a reason is shown to the applicant.
_NOT_BLANK = r"\S"
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
# The columns the batch adds to every scored row (lambdas/batch/formats.py's OUTPUT_COLUMNS): an input
# column of one of these names is replaced there, so a feature of that name would lose its values.
BATCH_OUTPUT_COLUMNS = ("probability_of_default", "decision", "reasons", "model_version")


def category_code_map(categories: Sequence[str]) -> dict[str, int]:
    """The int64 contract in one place: each category's code is its position in ``categories``, and
    the empty text (a missing category) is NULL_CATEGORY_CODE."""
    codes = {category: position for position, category in enumerate(categories)}
    codes[""] = NULL_CATEGORY_CODE
    return codes


class _Strict(BaseModel):
    # No NaN or infinity anywhere: a NaN threshold, range or bin edge would make every comparison
    # with it false (everything approved, every value in range) instead of failing the load.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class FeatureSchema(_Strict):
    """One model input as API clients and batch files provide it."""

    name: str
    type: FeatureType
    unit: str | None = None
    description: str
    nullable: bool
    minimum: float | None = None
    maximum: float | None = None
    categories: list[str] | None = None
    reason: str = Field(
        pattern=_NOT_BLANK, description="Text shown when this feature raises the applicant's risk"
    )
    # Numbers: the model need not be monotone, so the text follows the side of the baseline the
    # applicant's value is on ("High interest rate" / "Low interest rate").
    reason_high: str | None = Field(default=None, description="Reason when the value is above the baseline")
    reason_low: str | None = Field(default=None, description="Reason when the value is below the baseline")
    # A missing value says nothing about the applicant ("Short employment history" would be untrue):
    # optional, so cards written before it existed stay valid (see missing_reason for their text).
    reason_missing: str | None = Field(
        default=None,
        pattern=_NOT_BLANK,
        description="Reason when the value is missing (a nullable feature) and that raised the risk; "
        "when absent, the description followed by ' not provided'",
    )
    onnx_input: str
    onnx_type: OnnxElementType

    @field_validator("name")
    @classmethod
    def _servable_name(cls, name: str) -> str:
        # Batch files' headers are matched with surrounding spaces stripped: such a name is never found.
        if not name.strip() or name != name.strip():
            raise ValueError(f"feature name {name!r} must be non-blank, without leading or trailing spaces")
        if name in BATCH_OUTPUT_COLUMNS:
            raise ValueError(
                f"feature name {name!r} is a column the batch adds to every scored row "
                f"{BATCH_OUTPUT_COLUMNS}: it would overwrite the feature in scored files"
            )
        return name

    @model_validator(mode="after")
    def _onnx_type_fits(self) -> FeatureSchema:
        if self.onnx_type == "int64" and (self.type != "category" or self.categories is None):
            raise ValueError(
                f"{self.name}: an int64 (coded) input must be a category with its categories listed"
            )
        # A code is a position in the list: each category once, and no empty text (the null one).
        # A code is a position in the list; as text, the empty string is how a missing value reaches the
        # model, so listing it would let a non-nullable feature take it. A duplicate is a wrong card.
        listed = self.categories or []
        if len(set(listed)) != len(listed) or "" in listed:
            kind = "coded categories" if self.onnx_type == "int64" else "categories"
            raise ValueError(f"{self.name}: {kind} must be distinct and non-empty, got {listed}")
        if self.onnx_type == "string" and self.type != "category":
            raise ValueError(f"{self.name}: a string input must be a category")
        # An empty range would refuse every value of the feature.
        if self.minimum is not None and self.maximum is not None and self.minimum > self.maximum:
            raise ValueError(f"{self.name}: minimum {self.minimum} is above maximum {self.maximum}")
        return self

    def missing_reason(self) -> str:
        """The text shown when a missing value raised the risk: ``reason_missing``, else (older cards)
        the description followed by "not provided", e.g. "Interest rate of the loan not provided"."""
        if self.reason_missing is not None:
            return self.reason_missing
        return f"{self.description.strip().rstrip('.') or self.name} not provided"


class OnnxInfo(_Strict):
    file: str = "model.onnx"
    sha256: str
    opset: dict[str, int]
    input_names: list[str]
    probability_output: str
    label_output: str = Field(
        description="The graph's class-label output: probability of default >= 0.5, the converters' "
        "convention. It is NOT the decision: decisions compare probability_output with "
        "decision_policy.threshold, and nothing here reads this output"
    )
    positive_class_index: int = Field(default=1, ge=0)

    @field_validator("file")
    @classmethod
    def _file_name(cls, value: str) -> str:
        # The ONNX file sits next to the card: a plain name, never a path out of the bundle's folder.
        if not value or value in (".", "..") or "/" in value or "\\" in value:
            raise ValueError(f"onnx.file must be a file name in the bundle's folder, got {value!r}")
        return value

    @field_validator("sha256")
    @classmethod
    def _hex_digest(cls, value: str) -> str:
        # Hex is case-insensitive: an upper-case digest is the same hash, compared as hashlib writes it.
        digest = value.lower()
        if not _SHA256_HEX.fullmatch(digest):
            raise ValueError(f"onnx.sha256 must be 64 hexadecimal digits, got {value!r}")
        return digest


class Interval(_Strict):
    """A confidence interval: 95% unless the figure that holds it says otherwise."""

    lower: float
    upper: float

    @model_validator(mode="after")
    def _ordered(self) -> Interval:
        if self.lower > self.upper:
            raise ValueError(f"interval lower bound {self.lower} is above its upper bound {self.upper}")
        return self


class MetricSet(_Strict):
    roc_auc: float
    pr_auc: float
    ks: float
    brier: float
    log_loss: float


class CrossValidatedMetrics(_Strict):
    folds: int
    repeats: int
    mean: MetricSet
    std: MetricSet


class CandidateReport(_Strict):
    name: str
    description: str
    params: dict[str, str | int | float | bool | None]
    calibration: Literal["none", "sigmoid"]
    calibration_reason: str
    cv_uncalibrated: CrossValidatedMetrics
    cv: CrossValidatedMetrics
    fit_seconds: float
    status: Literal["champion", "candidate", "dropped"]
    dropped_reason: str | None = None


class DecisionPolicy(_Strict):
    threshold: float = Field(ge=0.0, le=1.0)  # a probability: outside [0, 1] it decides nothing
    approve_below_threshold: bool = True
    decision_labels: dict[str, str] = Field(
        default_factory=lambda: {"approve": "approve", "decline": "decline"}
    )
    method: str
    cost_of_approving_defaulter: float
    cost_of_declining_good_applicant: float
    expected_cost_per_application: float
    theoretical_threshold: float
    chosen_on: str

    @field_validator("decision_labels")
    @classmethod
    def _approve_and_decline(cls, labels: dict[str, str]) -> dict[str, str]:
        # Serving looks both up, and the API's decision enum needs two different texts.
        if set(labels) != {"approve", "decline"} or labels["approve"] == labels["decline"]:
            raise ValueError(
                f"decision_labels must map approve and decline to two different texts, got {labels}"
            )
        return labels


class Parity(_Strict):
    max_abs_difference: float
    rows_checked: int
    tolerance: float
    passed: bool
    input_precision: str


class DecisionOutcomes(_Strict):
    """The decision policy applied to the holdout rows: what the decisions do, beyond how scores rank.

    Defaults are the positive class; "declined" means P(default) at or above the threshold."""

    rows: int
    threshold: float
    approval_rate: float
    defaulters_declined_rate: float | None = Field(
        description="Share of actual defaulters declined (recall of defaults); None without defaulters"
    )
    good_applicants_declined_rate: float | None = Field(
        description="Share of applicants who repaid that were declined; None without repayers"
    )
    declined_who_defaulted_rate: float | None = Field(
        description="Share of declined applicants who defaulted (precision of declines); None if none were"
    )
    approved_who_defaulted_rate: float | None = Field(
        description="Default rate of the approved applicants (what the book carries); None if none approved"
    )
    expected_cost_per_application: float = Field(
        description="With the policy's costs: approved defaulters and declined repayers, per holdout row"
    )


class CalibrationBin(_Strict):
    lower: float
    upper: float
    count: int
    mean_probability: float | None
    observed_default_rate: float | None


class CalibrationReport(_Strict):
    """Predicted against observed default rates on held-out rows, in equal-width probability bins."""

    expected_calibration_error: float = Field(
        description="Row-weighted mean over bins of |observed default rate - mean predicted probability|"
    )
    max_calibration_error: float = Field(description="Largest such gap over the non-empty bins")
    bins: list[CalibrationBin]
    evaluated_on: str


class GroupFairness(_Strict):
    group: str
    count: int
    approval_rate: float | None
    default_rate: float | None
    true_positive_rate: float | None = Field(description="Share of actual defaulters the model declines")
    good_applicant_approval_rate: float | None = Field(
        description="Share of applicants who repaid that the model approves (equal opportunity)"
    )
    # Optional (None in cards written before they existed). Denominators: approval and default rate
    # ``count``, true-positive rate ``defaulters``, good-applicant approval rate ``repayers``.
    defaulters: int | None = Field(default=None, ge=0, description="Actual defaulters in the group")
    repayers: int | None = Field(default=None, ge=0, description="Applicants in the group who repaid")
    approval_rate_interval: Interval | None = Field(
        default=None, description="95% Wilson score interval; None where the rate is undefined"
    )
    default_rate_interval: Interval | None = Field(default=None, description="95% Wilson score interval")
    true_positive_rate_interval: Interval | None = Field(
        default=None, description="95% Wilson score interval; None without defaulters"
    )
    good_applicant_approval_rate_interval: Interval | None = Field(
        default=None, description="95% Wilson score interval; None without repayers"
    )
    small_sample: bool | None = Field(
        default=None,
        description="True when any rate's denominator (count, defaulters, repayers) is below the "
        "attribute's stated minimum (see AttributeFairness.uncertainty): read its rates with care",
    )


class ComparisonIntervals(_Strict):
    """Bootstrap intervals of an attribute's comparisons: each group's rows drawn with replacement to
    the group's own size, the comparisons recomputed over the same groups as the figures themselves."""

    method: str
    resamples: int = Field(ge=1)
    seed: int
    confidence: float = Field(gt=0.0, lt=1.0)
    # None where the figure itself is None (fewer than two groups to compare).
    demographic_parity_difference: Interval | None
    equal_opportunity_difference: Interval | None
    adverse_impact_ratio: Interval | None
    adverse_impact_ratio_below_four_fifths: float | None = Field(
        ge=0.0,
        le=1.0,
        description="Share of the resamples whose adverse impact ratio is below 0.8 (fails the "
        "four-fifths rule): near 0 or 1 the holdout settles the rule, in between it does not",
    )


class AttributeFairness(_Strict):
    attribute: str
    groups: list[GroupFairness]
    # None when fewer than two groups are large enough to compare (older cards show 0.0 there).
    demographic_parity_difference: float | None
    equal_opportunity_difference: float | None
    adverse_impact_ratio: float | None = Field(
        default=None,
        description="Lowest over highest approval rate of the compared groups; below 0.8 fails the "
        "four-fifths rule of thumb for adverse impact",
    )
    evaluated_on: str
    uncertainty: str | None = Field(
        default=None, description="How the groups' intervals and small_sample flags were made"
    )
    # Optional: None in cards written before it existed.
    comparison_intervals: ComparisonIntervals | None = Field(
        default=None,
        description="95% bootstrap intervals of the parity and equal-opportunity differences and of "
        "the adverse impact ratio",
    )


class NumericReference(_Strict):
    kind: Literal["numeric"] = "numeric"
    bin_edges: list[float] = Field(
        description="Inner cut points, ascending; the outer bins are open (value < first, >= last)"
    )
    proportions: list[float] = Field(
        description="Share of the non-missing values per bin: len(bin_edges) + 1"
    )
    mean: float
    std: float
    median: float
    null_rate: float

    @model_validator(mode="after")
    def _bins_match_proportions(self) -> NumericReference:
        if len(self.proportions) != len(self.bin_edges) + 1:
            raise ValueError(
                f"a numeric reference needs len(bin_edges) + 1 proportions, got {len(self.bin_edges)} "
                f"edges and {len(self.proportions)} proportions"
            )
        if any(b <= a for a, b in zip(self.bin_edges, self.bin_edges[1:], strict=False)):
            raise ValueError("bin_edges must be strictly ascending")
        return self


class CategoricalReference(_Strict):
    kind: Literal["categorical"] = "categorical"
    proportions: dict[str, float]
    mode: str
    null_rate: float


class DriftReference(_Strict):
    features: dict[str, NumericReference | CategoricalReference]
    score: NumericReference
    reason_baseline: dict[str, float | str | None] = Field(
        description="Per feature, the value a feature is replaced by to measure its contribution"
    )
    computed_on: str


class DataFingerprint(_Strict):
    source: str
    rows_raw: int
    rows_used: int
    rows_train: int
    rows_holdout: int
    positive_rate: float
    sha256: str
    cleaning: dict[str, int]
    holdout: str
    # Optional: None in cards written before they existed.
    holdout_positives: int | None = Field(
        default=None, ge=0, description="Holdout rows of the positive class"
    )
    holdout_negatives: int | None = Field(default=None, ge=0, description="Holdout rows of the other class")


class Lineage(_Strict):
    git_commit: str
    packages: dict[str, str]
    python: str
    seed: int
    created_at: str
    training_seconds: float


class HoldoutUncertainty(_Strict):
    """Bootstrap intervals of the champion's holdout ROC AUC and Brier score."""

    method: str
    resamples: int = Field(ge=1)
    seed: int
    confidence: float = Field(gt=0.0, lt=1.0)
    roc_auc: Interval
    brier: Interval


class DifferenceIntervals(_Strict):
    """Paired bootstrap intervals of this card's model minus the registered champion, on the same
    holdout rows: each resample draws the rows once and scores both models on them."""

    method: str
    resamples: int = Field(ge=1)
    seed: int
    confidence: float = Field(gt=0.0, lt=1.0)
    roc_auc: Interval = Field(description="Of ROC AUC (this card's model - champion): above 0 is better")
    brier: Interval = Field(description="Of Brier score (this card's model - champion): below 0 is better")


class ChampionComparison(_Strict):
    """The registered champion scored on this card's holdout rows, so a gate compares like with like."""

    champion_version: str
    champion_metrics: MetricSet | None
    note: str
    # Optional: None in cards written before it existed, and where the champion was not scored.
    difference_intervals: DifferenceIntervals | None = None


class ModelCard(_Strict):
    schema_version: str = CARD_SCHEMA_VERSION
    model_name: str
    model_version: str
    dataset: str
    description: str
    target: str
    positive_class: str
    champion: str
    selection_rule: str
    onnx: OnnxInfo
    features: list[FeatureSchema]
    protected_attributes: list[str]
    decision_policy: DecisionPolicy
    candidates: list[CandidateReport]
    holdout_metrics: MetricSet
    # Optional so that cards written before these figures existed still load.
    holdout_decisions: DecisionOutcomes | None = None
    holdout_calibration: CalibrationReport | None = None
    holdout_uncertainty: HoldoutUncertainty | None = None
    holdout_metrics_by_candidate: dict[str, MetricSet]
    parity: Parity
    fairness: list[AttributeFairness]
    reference: DriftReference
    data: DataFingerprint
    lineage: Lineage
    champion_comparison: ChampionComparison | None = None
    notes: list[str] = Field(default_factory=list)

    @field_validator("schema_version")
    @classmethod
    def _supported_version(cls, version: str) -> str:
        if version != CARD_SCHEMA_VERSION:
            raise ValueError(
                f"card schema_version {version!r} is not supported (this runtime reads {CARD_SCHEMA_VERSION})"
            )
        return version

    @model_validator(mode="after")
    def _features_are_distinct_inputs(self) -> ModelCard:
        # One feature per name and per ONNX input: a second entry would be validated but never fed.
        for what, names in (
            ("feature name", [f.name for f in self.features]),
            ("onnx_input", [f.onnx_input for f in self.features]),
        ):
            repeated = sorted({name for name in names if names.count(name) > 1})
            if repeated:
                raise ValueError(f"each {what} must appear once in features, repeated: {repeated}")
        inputs = sorted(f.onnx_input for f in self.features)
        if sorted(self.onnx.input_names) != inputs:
            raise ValueError(
                f"onnx.input_names {sorted(self.onnx.input_names)} differ from the features' "
                f"onnx_input {inputs}"
            )
        return self

    @model_validator(mode="after")
    def _every_feature_has_its_drift_reference(self) -> ModelCard:
        # Drift is measured feature by feature against these: a feature without one would silently be
        # left out of every PSI, and one of the other kind binned wrongly (or not at all).
        names = {f.name for f in self.features}
        missing = sorted(names - set(self.reference.features))
        extra = sorted(set(self.reference.features) - names)
        if missing or extra:
            raise ValueError(
                f"reference.features must hold one reference per feature: missing {missing}, "
                f"not features {extra}"
            )
        wrong_kind = sorted(
            f.name
            for f in self.features
            if (f.type == "category") != (self.reference.features[f.name].kind == "categorical")
        )
        if wrong_kind:
            raise ValueError(
                f"reference.features of {wrong_kind} have the wrong kind: a category feature needs a "
                "categorical reference, any other feature a numeric one"
            )
        return self

    def feature(self, name: str) -> FeatureSchema:
        for feature in self.features:
            if feature.name == name:
                return feature
        raise KeyError(name)

    def public_view(self) -> dict[str, object]:
        """What GET /v1/model shows: no lineage internals, no reference histograms. Of the data, the
        holdout's class counts: PR AUC and the decision rates are read against its base rate."""
        return self.model_dump(
            mode="json",
            include={
                "data": {"rows_holdout", "holdout_positives", "holdout_negatives"},
                "model_name": True,
                "model_version": True,
                "dataset": True,
                "description": True,
                "target": True,
                "positive_class": True,
                "champion": True,
                "selection_rule": True,
                "features": True,
                "decision_policy": True,
                "holdout_metrics": True,
                "holdout_decisions": True,
                "holdout_calibration": True,
                "holdout_uncertainty": True,
                "parity": True,
                "fairness": True,
            },
        )
