"""Model registry in an artifact bucket (or folder): the champion gate and immutable registration.

Layout under the registry location (a folder or ``s3://bucket/prefix``)::

    <model_name>/<model_version>/model.onnx
    <model_name>/<model_version>/model_card.json
    <model_name>/latest.json        {"model_name", "model_version", "onnx_sha256", "registered_at",
                                     "previous_model_version" (the champion it replaced), ...}

A version is immutable: its files are written with create-only writes (S3 ``If-None-Match: *``,
``os.link`` locally), and a version whose stored model, or card fields the functions serve with,
differ is refused. ``latest.json`` is written last, so it only ever points at a complete version (a
card already stored for the version must describe its model), and only over the version of it that
was read (S3 ``If-Match``, a lock locally), which must still name the champion the candidate was
gated against; the API and the next gate read the champion through it.
Registering a stored version again completes an interrupted registration (the missing card, or
the latest.json move); when latest.json points at another version, it moves back to this one (how
the champion is rolled back: the old version's files are still there); otherwise nothing changes.
An S3 location that holds nothing of the model while a neighbouring prefix holds its registry (a
mistyped prefix) is refused rather than read as an empty registry (``--new-registry`` allows it).

Gate rule (``gate``): a candidate may replace the champion only if

1. its ONNX export passed the sklearn-vs-ONNX parity check (``parity.passed``);
2. the comparison is on the same holdout: either the caller passes the champion's metrics
   computed on the candidate's holdout, or both cards describe the same data and holdout split
   (equal ``dataset`` and ``data.sha256`` and ``data.holdout``, and for a holdout by record hash the
   same record columns: ``features`` names and ``protected_attributes``, from which each row's side is
   drawn); otherwise the gate refuses, since metrics on different holdouts are not comparable;
3. holdout ROC AUC >= champion's ROC AUC - ``roc_auc_tolerance`` (default 0.005);
4. holdout Brier score <= champion's Brier + ``brier_tolerance`` (default 0.005);
5. the candidate's holdout (the rows both models are compared on) holds at least
   ``min_holdout_positives`` positives and ``min_holdout_negatives`` negatives (default 30 each,
   read from the card's ``data.holdout_positives`` and ``data.holdout_negatives``). ROC AUC and
   Brier on a handful of defaults (the PKDD'99 out-of-time holdout: 2 defaults in 78 loans) have
   bootstrap intervals wider than any difference the tolerances judge, so they cannot justify
   replacing a champion; the refusal names the counts. Cards written before the counts existed (all
   versions registered so far) lack them: the gate then decides by rules 1-4 as it always did and
   says the counts were unavailable, so registered cards and older candidates keep working (refusing
   them would strand every existing registry on its current champion until a retrain). A candidate
   that is the registered champion itself (same ``model_version``) replaces nothing and is not refused.

The rules compare point estimates with fixed tolerances. When the champion's metrics come from the
candidate's card (``champion_comparison``) and it holds ``difference_intervals`` (a paired bootstrap of
candidate - champion on the same holdout rows), the verdict's notes also give each difference with its
interval and whether the interval holds 0 (within holdout noise): for a reviewer, never for the decision.

With no champion registered, rule 1 alone applies (a holdout below the minimum counts is noted, not
refused: there is nothing to replace, and the first version would otherwise never be registered);
metrics must be finite numbers (NaN would pass every comparison). Cards are read as plain JSON: only
``model_name``, ``model_version``, ``onnx.sha256``, ``onnx.file`` (``model.onnx`` if absent, nothing
else), ``holdout_metrics.roc_auc``, ``holdout_metrics.brier``, ``parity.passed`` (and for rule 2
``dataset``, ``data``, ``features`` and ``protected_attributes``, for rule 5 ``data.holdout_positives``
and ``data.holdout_negatives``, for the notes ``champion_comparison.difference_intervals``) are used.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.dataload.storage import (
    ObjectChangedError,
    ObjectExistsError,
    S3Storage,
    Storage,
    StorageError,
    open_storage,
)
from training.pipeline import HOLDOUT_BY_RECORD_HASH

MODEL_FILE = "model.onnx"
CARD_FILE = "model_card.json"
LATEST_FILE = "latest.json"
DEFAULT_ROC_AUC_TOLERANCE = 0.005
DEFAULT_BRIER_TOLERANCE = 0.005
DEFAULT_MIN_HOLDOUT_POSITIVES = 30
DEFAULT_MIN_HOLDOUT_NEGATIVES = 30
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
# How many neighbouring S3 prefixes are searched for a model's registry when a location holds none.
NEIGHBOURS_SEARCHED = 100


class RegistryError(Exception):
    """A bundle or card is invalid, or the registry refused the operation."""


class VersionExistsError(RegistryError):
    """The model version is already registered (versions are immutable)."""


class VersionConflictError(VersionExistsError):
    """The version is stored with another model: not "already done", a conflict to report."""


# What the serving functions decide and explain with, from the card: a version stored with other values
# for any of these would serve other decisions under the same name (a retrain with other costs gives the
# same ONNX bytes, so the same version name, and another threshold).
SERVED_CARD_FIELDS = ("onnx", "features", "decision_policy", "reference", "target", "positive_class")


@dataclass(frozen=True)
class Gated:
    """The champion a candidate was gated against (None: there was none), checked before latest moves."""

    champion_version: str | None


@dataclass(frozen=True)
class GateRule:
    roc_auc_tolerance: float = DEFAULT_ROC_AUC_TOLERANCE
    brier_tolerance: float = DEFAULT_BRIER_TOLERANCE
    min_holdout_positives: int = DEFAULT_MIN_HOLDOUT_POSITIVES
    min_holdout_negatives: int = DEFAULT_MIN_HOLDOUT_NEGATIVES

    def __post_init__(self) -> None:
        for name in ("min_holdout_positives", "min_holdout_negatives"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a whole number >= 0, got {value!r}")


@dataclass(frozen=True)
class GateDecision:
    """``reasons``: the failed checks first (as they are), then the checks that passed (``ok: …``), then
    remarks that decide nothing (``note: …``)."""

    passed: bool
    candidate_version: str
    champion_version: str | None
    reasons: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {
            "passed": self.passed,
            "candidate_version": self.candidate_version,
            "champion_version": self.champion_version,
            "reasons": self.reasons,
        }


def _path(card: Mapping[str, Any], dotted: str) -> Any:
    value: Any = card
    for part in dotted.split("."):
        if not isinstance(value, Mapping) or part not in value:
            raise RegistryError(f"model card lacks {dotted}")
        value = value[part]
    return value


def _finite(value: Any, what: str) -> float:
    # NaN compares False with everything, so a NaN metric would never look worse than the champion's.
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise RegistryError(f"{what} must be a finite number, got {value!r}")
    return float(value)


def _number(card: Mapping[str, Any], dotted: str) -> float:
    return _finite(_path(card, dotted), f"model card {dotted}")


def _safe_name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not SAFE_NAME.match(value):
        raise RegistryError(f"{what} {value!r} must be 1-128 of letters, digits, '.', '_', '-'")
    return value


def _name(card: Mapping[str, Any], key: str) -> str:
    return _safe_name(_path(card, key), f"model card {key}")


def _count(value: Any, dotted: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise RegistryError(f"model card {dotted} must be a whole number >= 0, got {value!r}")
    return value


def _holdout_counts(card: Mapping[str, Any]) -> tuple[int, int] | None:
    """The holdout's (positives, negatives), or None for a card written before it recorded them
    (both absent or null); one without the other, or a count that is not a count, is an error."""
    data = card.get("data")
    if not isinstance(data, Mapping):
        return None
    positives, negatives = data.get("holdout_positives"), data.get("holdout_negatives")
    if positives is None and negatives is None:
        return None
    return _count(positives, "data.holdout_positives"), _count(negatives, "data.holdout_negatives")


def _why_not_scored(comparison: Any, champion_version: str) -> str:
    """Why the candidate's card holds no champion metrics to compare with."""
    if not isinstance(comparison, Mapping) or comparison.get("champion_version") != champion_version:
        return (
            f"the candidate's card did not score champion {champion_version} on its holdout: train it with "
            "--champion-registry, or pass champion_metrics_on_candidate_holdout"
        )
    # Training declined to score it (its note says why: a holdout that may hold the champion's training
    # rows, or features the dataset lacks). Scoring it anyway would compare on rows it was fitted to.
    return f"training did not score the champion on the candidate's holdout ({comparison.get('note')})"


_DIFFERENCE_INTERVALS = "champion_comparison.difference_intervals"


def _difference_notes(
    candidate: Mapping[str, Any], roc_auc_difference: float, brier_difference: float
) -> list[str]:
    """The differences candidate - champion with the card's paired bootstrap intervals, or nothing for a
    card without them (written before they existed)."""
    comparison = candidate["champion_comparison"]
    if comparison.get("difference_intervals") is None:
        return []
    confidence = _number(candidate, f"{_DIFFERENCE_INTERVALS}.confidence")
    notes = []
    for label, key, difference, higher_is_better in (
        ("ROC AUC", "roc_auc", roc_auc_difference, True),
        ("Brier", "brier", brier_difference, False),
    ):
        lower = _number(candidate, f"{_DIFFERENCE_INTERVALS}.{key}.lower")
        upper = _number(candidate, f"{_DIFFERENCE_INTERVALS}.{key}.upper")
        if lower <= 0 <= upper:
            reading = "holds 0: within holdout noise"
        elif (lower > 0) == higher_is_better:
            reading = "excludes 0: the candidate is better beyond holdout noise"
        else:
            reading = "excludes 0: the candidate is worse beyond holdout noise"
        notes.append(
            f"{label} difference {signed(difference)} ({confidence:.0%} paired bootstrap interval "
            f"{signed(lower)} to {signed(upper)}; {reading})"
        )
    return notes


def signed(value: float) -> str:
    """A difference to 4 places with its sign, where one that rounds to 0 is +0.0000, never -0.0000."""
    return f"{round(value, 4) + 0.0:+.4f}"  # + 0.0 turns -0.0 into 0.0


def _same_holdout(candidate: Mapping[str, Any], champion: Mapping[str, Any]) -> bool:
    def identity(card: Mapping[str, Any]) -> tuple[object, object, object] | None:
        data = card.get("data")
        if not isinstance(data, Mapping) or not data.get("sha256") or not data.get("holdout"):
            return None
        return card.get("dataset"), data.get("sha256"), data.get("holdout")

    left, right = identity(candidate), identity(champion)
    if left is None or left != right:
        return False
    # A holdout by record hash draws each row by the text of its record (features and protected
    # attributes): the same data and rule with other columns put other rows in the holdout.
    if str(left[2]).startswith(HOLDOUT_BY_RECORD_HASH):
        columns = _record_columns(candidate)
        return columns is not None and columns == _record_columns(champion)
    return True


def _record_columns(card: Mapping[str, Any]) -> frozenset[str] | None:
    """The columns a card's records were made of (feature names and protected attributes), or None
    when the card does not say."""
    features, protected = card.get("features"), card.get("protected_attributes", [])
    if not isinstance(features, list) or not isinstance(protected, list):
        return None
    names = [f.get("name") if isinstance(f, Mapping) else None for f in features]
    if not all(isinstance(name, str) for name in [*names, *protected]):
        return None
    return frozenset([*names, *protected])


def gate(
    candidate: Mapping[str, Any],
    champion: Mapping[str, Any] | None,
    rule: GateRule = GateRule(),
    champion_metrics_on_candidate_holdout: Mapping[str, float] | None = None,
    *,
    registry_location: str | Path | None = None,
) -> GateDecision:
    """Decide whether ``candidate`` may replace ``champion`` (see the module docstring); the champion
    was read from ``registry_location``, named in the verdict when it holds none."""
    version = _name(candidate, "model_version")
    failures: list[str] = []
    passed: list[str] = []  # checks that passed: listed apart from the failures, which decide
    notes: list[str] = []

    def reasons() -> list[str]:
        return failures + [f"ok: {check}" for check in passed] + [f"note: {note}" for note in notes]

    if _path(candidate, "parity.passed") is not True:
        failures.append("candidate failed the sklearn-vs-ONNX parity check")
    roc_auc = _number(candidate, "holdout_metrics.roc_auc")
    brier = _number(candidate, "holdout_metrics.brier")
    counts = _holdout_counts(candidate)
    too_few = counts is not None and (
        counts[0] < rule.min_holdout_positives or counts[1] < rule.min_holdout_negatives
    )
    minimum = f"at least {rule.min_holdout_positives} positives and {rule.min_holdout_negatives} negatives"

    if champion is None:
        where = f" at {registry_location}" if registry_location is not None else ""
        notes.append(f"no champion registered{where}: only the parity check applies")
        if counts is not None and too_few:
            notes.append(
                f"holdout has only {counts[0]} positives and {counts[1]} negatives (a replacement needs "
                f"{minimum}): allowed because there is no champion to replace; its metrics are uncertain"
            )
        return GateDecision(not failures, version, None, reasons())

    champion_version = _name(champion, "model_version")
    if counts is None:
        notes.append(
            "holdout class counts unavailable (card written before data.holdout_positives and "
            "data.holdout_negatives): the minimum-count rule was not applied"
        )
    elif too_few and champion_version == version:
        # Gating the registered champion again (a loop rerun, a register completing itself) replaces nothing.
        notes.append(
            f"holdout has only {counts[0]} positives and {counts[1]} negatives (a replacement needs "
            f"{minimum}): allowed because the candidate is the registered champion itself"
        )
    elif too_few:
        failures.append(
            f"the holdout has {counts[0]} positives and {counts[1]} negatives; replacing a champion needs "
            f"{minimum}: metrics on so few cases cannot show the candidate is better"
        )
    else:
        passed.append(f"holdout has {counts[0]} positives and {counts[1]} negatives (needs {minimum})")
    comparison = candidate.get("champion_comparison")
    scored_by_training = False
    if (
        champion_metrics_on_candidate_holdout is None
        and isinstance(comparison, Mapping)
        and comparison.get("champion_version") == champion_version
        and isinstance(comparison.get("champion_metrics"), Mapping)
    ):
        # Training scored this very champion on the candidate's holdout (card.champion_comparison).
        champion_metrics_on_candidate_holdout = comparison["champion_metrics"]
        scored_by_training = True
    if champion_metrics_on_candidate_holdout is not None:
        champion_roc_auc = _finite(
            champion_metrics_on_candidate_holdout.get("roc_auc"),
            "champion roc_auc on the candidate's holdout",
        )
        champion_brier = _finite(
            champion_metrics_on_candidate_holdout.get("brier"), "champion brier on the candidate's holdout"
        )
        passed.append("champion metrics computed on the candidate's holdout")
    elif _same_holdout(candidate, champion):
        champion_roc_auc = _number(champion, "holdout_metrics.roc_auc")
        champion_brier = _number(champion, "holdout_metrics.brier")
        passed.append("both cards describe the same data and holdout")
    else:
        failures.append(
            "the cards' holdouts differ (dataset, data.sha256, data.holdout or, by record hash, the "
            "record columns) and " + _why_not_scored(comparison, champion_version)
        )
        return GateDecision(False, version, champion_version, reasons())

    if roc_auc < champion_roc_auc - rule.roc_auc_tolerance:
        failures.append(
            f"holdout ROC AUC {roc_auc:.4f} is worse than the champion's {champion_roc_auc:.4f} "
            f"by more than {rule.roc_auc_tolerance}"
        )
    else:
        passed.append(
            f"ROC AUC {roc_auc:.4f} vs champion {champion_roc_auc:.4f} (tolerance {rule.roc_auc_tolerance})"
        )
    if brier > champion_brier + rule.brier_tolerance:
        failures.append(
            f"holdout Brier {brier:.4f} is worse than the champion's {champion_brier:.4f} "
            f"by more than {rule.brier_tolerance}"
        )
    else:
        passed.append(
            f"Brier {brier:.4f} vs champion {champion_brier:.4f} (tolerance {rule.brier_tolerance})"
        )
    if scored_by_training:
        # Only beside the card's own champion metrics: the intervals are of those very differences.
        notes += _difference_notes(candidate, roc_auc - champion_roc_auc, brier - champion_brier)
    return GateDecision(not failures, version, champion_version, reasons())


def read_bundle_card(bundle_dir: Path) -> dict[str, Any]:
    """The card of a bundle folder, checked against its model.onnx (hash) and the naming rules."""
    bundle = Path(bundle_dir)
    model_path, card_path = bundle / MODEL_FILE, bundle / CARD_FILE
    for path in (model_path, card_path):
        if not path.is_file():
            raise RegistryError(f"bundle {bundle} lacks {path.name}")
    return _checked_card(card_path.read_bytes(), model_path.read_bytes(), str(card_path), str(model_path))


def _json_object(data: bytes, where: str) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise RegistryError(f"{where} is not valid JSON: {error}") from error
    if not isinstance(value, dict):
        raise RegistryError(f"{where} must hold a JSON object")
    return value


def _checked_card(card_json: bytes, model: bytes, card_where: str, model_where: str) -> dict[str, Any]:
    """The card, if it names a safe model and version and describes ``model`` (sha256, file name)."""
    card = _json_object(card_json, card_where)
    _name(card, "model_name")
    _name(card, "model_version")
    expected = _path(card, "onnx.sha256")
    # The registry stores the model as model.onnx, and the Lambdas load the file the card names: a card
    # naming another file would register a version no Lambda can load.
    onnx_file = card["onnx"].get("file", MODEL_FILE)
    if onnx_file != MODEL_FILE:
        raise RegistryError(f"{card_where} names onnx.file {onnx_file!r}; a bundle's model is {MODEL_FILE}")
    actual = hashlib.sha256(model).hexdigest()
    if expected != actual:
        raise RegistryError(f"{model_where} has sha256 {actual}, but the card says {expected}")
    return card


def latest_pointer(
    registry_location: str | Path, model_name: str, *, new_registry: bool = False
) -> dict[str, Any] | None:
    """The ``latest.json`` of ``model_name``, or None if nothing is registered yet.

    An S3 location holding nothing of ``model_name`` while a neighbouring prefix holds its registry is
    a RegistryError (see :func:`_refuse_mistyped_location`), unless ``new_registry`` says a new registry
    is started there on purpose.
    """
    storage = open_storage(registry_location)
    key = f"{model_name}/{LATEST_FILE}"
    read = _read_latest(storage, key)  # one request: absent is None
    if read is None:
        if not new_registry:
            _refuse_mistyped_location(storage, model_name)
        return None
    return _pointer(read[0], storage.describe(key))


def _read_latest(storage: Storage, key: str) -> tuple[bytes, str] | None:
    if not isinstance(storage, S3Storage):
        return storage.read_versioned(key)
    try:
        return storage.read_versioned(key)
    except storage.client.exceptions.NoSuchBucket as error:  # else a bare botocore error escapes
        raise RegistryError(
            f"registry {storage.describe()}: bucket {storage.bucket!r} does not exist"
        ) from error


def _refuse_mistyped_location(storage: Storage, model_name: str) -> None:
    """Refuse an S3 location without ``model_name`` when a neighbouring prefix holds its registry.

    S3 has no folders: a mistyped prefix (``s3://b/modles`` for ``s3://b/models``, ``s3://b`` for
    ``s3://b/models``, or a model's folder ``s3://b/models/<model>``) reads as an empty registry, so the
    gate would pass any candidate and register it there, beside the real champion. The neighbours are
    the location's siblings, its sub-prefixes and its parent. A location holding any object of the model
    (an interrupted first registration) or with no registry of it nearby (the first publication into a
    new registry) is not refused; neither is a folder (the CLI refuses a folder that does not exist).
    """
    if not isinstance(storage, S3Storage):
        return
    client, bucket, prefix = storage.client, storage.bucket, storage.prefix

    def keys(under: str, *, delimiter: bool = False) -> list[str]:
        """Up to NEIGHBOURS_SEARCHED keys under ``under`` (with ``delimiter``: its sub-prefixes)."""
        arguments: dict[str, Any] = {"Bucket": bucket, "Prefix": under, "MaxKeys": NEIGHBOURS_SEARCHED}
        if delimiter:
            arguments["Delimiter"] = "/"
        page = client.list_objects_v2(**arguments)
        if delimiter:
            return [str(common["Prefix"]) for common in page.get("CommonPrefixes", [])]
        return [str(item["Key"]) for item in page.get("Contents", [])]

    parent = prefix.rstrip("/").rpartition("/")[0]
    parent = f"{parent}/" if parent else ""
    try:
        if keys(f"{prefix}{model_name}/"):
            return
        neighbours = [p for p in keys(parent, delimiter=True) if p != prefix] if prefix else []
        neighbours += keys(prefix, delimiter=True)
        if prefix:
            neighbours.append(parent)
        pointers = [f"{neighbour}{model_name}/{LATEST_FILE}" for neighbour in neighbours]
        found = [pointer for pointer in pointers if pointer in keys(pointer)]
    except client.exceptions.ClientError:
        return  # a role that may not list there: the read of latest.json already said "absent"
    if found:
        registries = ", ".join(
            f"s3://{bucket}/{pointer.removesuffix(f'{model_name}/{LATEST_FILE}')}" for pointer in found
        )
        raise RegistryError(
            f"registry {storage.describe()} holds nothing of {model_name} (no {model_name}/{LATEST_FILE}), "
            f"but {registries} holds its registry: is the location mistyped? Read as an empty registry, any "
            f"candidate would pass the gate and be registered there. To start a new registry of {model_name} "
            "there on purpose, pass --new-registry (python -m training gate, register or loop, or "
            "python -m training.registry register)"
        )


def _pointer(data: bytes, where: str) -> dict[str, Any]:
    pointer = _json_object(data, where)
    # The version becomes part of a key: a corrupt pointer must not send readers elsewhere.
    _safe_name(pointer.get("model_version"), f"{where} model_version")
    return pointer


def champion_card(
    registry_location: str | Path, model_name: str, *, new_registry: bool = False
) -> dict[str, Any] | None:
    """The card of the version ``latest.json`` points at, or None (see :func:`latest_pointer`)."""
    pointer = latest_pointer(registry_location, model_name, new_registry=new_registry)
    if pointer is None:
        return None
    storage = open_storage(registry_location)
    key = f"{model_name}/{pointer['model_version']}/{CARD_FILE}"
    # Named: a bare JSON error would not say which of the registry's files is damaged.
    return _json_object(storage.read_bytes(key), f"champion card {storage.describe(key)}")


def register_bundle(
    bundle_dir: str | Path, registry_location: str | Path, *, gated: Gated | None = None
) -> str:
    """Upload the bundle under ``<model_name>/<model_version>/`` (never overwriting); point latest at it.

    Registering again completes a registration that was interrupted (a model stored without its
    card, or both files stored but latest.json not moved yet). VersionExistsError means there was
    nothing to do (the version is stored and latest) or the stored model or served card fields differ
    from the bundle's (VersionConflictError). With ``gated``, latest.json moves only while it still
    names the champion the candidate was gated against (or this version): another register that
    replaced the champion meanwhile makes this one a RegistryError ("gate again").
    """
    bundle = Path(bundle_dir)
    card = read_bundle_card(bundle)
    model_name, version = card["model_name"], card["model_version"]
    storage = open_storage(registry_location)
    prefix = f"{model_name}/{version}/"
    already_stored = 0
    # model first, card second: a card in the registry always has its model beside it.
    for file_name in (MODEL_FILE, CARD_FILE):
        data = (bundle / file_name).read_bytes()
        try:
            storage.write_bytes(prefix + file_name, data, overwrite=False)
        except ObjectExistsError as error:  # an earlier or concurrent registration stored it
            stored = storage.read_bytes(prefix + file_name)
            # The stored card may differ (timestamps) but describes the same model: the model must match.
            if file_name == MODEL_FILE and stored != data:
                raise VersionConflictError(
                    f"{storage.describe(prefix)} already exists with another model; versions are immutable"
                ) from error
            if file_name == CARD_FILE:
                # latest.json must only point at a version whose stored card describes its stored model.
                _check_stored_card(stored, card, storage.describe(prefix + CARD_FILE))
            already_stored += 1
    latest_key = f"{model_name}/{LATEST_FILE}"
    read = storage.read_versioned(latest_key)
    pointer = _pointer(read[0], storage.describe(latest_key)) if read is not None else None
    current = pointer.get("model_version") if pointer is not None else None
    if already_stored == 2 and current == version:
        raise VersionExistsError(f"{storage.describe(prefix)} already exists; versions are immutable")
    if gated is not None and current not in (gated.champion_version, version):
        # Two registers gated against one champion: the later must not replace the one that won
        # meanwhile, against which it was never gated. (The write below is conditioned on the
        # version read here, so a change in between is refused too.)
        raise RegistryError(
            f"the champion of {model_name} changed from {gated.champion_version} to {current} since "
            f"{version} was gated; gate it again (it is stored, latest.json was not moved)"
        )
    _write_latest(storage, card, prefix, pointer, read[1] if read is not None else None)
    return str(version)


def _check_stored_card(stored: bytes, card: Mapping[str, Any], where: str) -> None:
    stored_card = _json_object(stored, where)
    onnx = stored_card.get("onnx")
    described = (stored_card.get("model_version"), onnx.get("sha256") if isinstance(onnx, dict) else None)
    expected = (card["model_version"], _path(card, "onnx.sha256"))
    if described != expected:
        raise RegistryError(
            f"{where} does not describe this version's model (it says version and sha256 {described}, "
            f"the model is {expected}); latest.json was not moved"
        )
    # Timestamps and training figures may differ; what the functions serve with may not.
    differing = [name for name in SERVED_CARD_FIELDS if stored_card.get(name) != card.get(name)]
    if differing:
        raise VersionConflictError(
            f"{where} is stored with other {', '.join(differing)} than this bundle's card: the version "
            "would serve other decisions under the same name; versions are immutable (train under "
            "another model name, or keep the stored card)"
        )


def _write_latest(
    storage: Storage,
    card: Mapping[str, Any],
    prefix: str,
    replaced: Mapping[str, Any] | None,
    replaced_tag: str | None,
) -> None:
    """Point latest.json at this version, only if it is still the version read (``replaced_tag``; absent
    when None): a register that moved it meanwhile makes this one fail instead of being overwritten."""
    previous = None
    if replaced is not None:
        # Rewriting this version's own pointer keeps the champion it had replaced.
        same = replaced.get("model_version") == card["model_version"]
        previous = replaced.get("previous_model_version" if same else "model_version")
    pointer = {
        "model_name": card["model_name"],
        "model_version": card["model_version"],
        "onnx_sha256": _path(card, "onnx.sha256"),
        "model_key": prefix + MODEL_FILE,
        "card_key": prefix + CARD_FILE,
        "registered_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        # The champion this one replaced, for a rollback: latest.json is replaced in place and the
        # bucket keeps its older versions for 30 days only.
        "previous_model_version": previous,
    }
    body = json.dumps(pointer, indent=2).encode()
    try:
        if replaced_tag is None:
            storage.write_bytes(f"{card['model_name']}/{LATEST_FILE}", body, overwrite=False)
        else:
            storage.write_bytes(f"{card['model_name']}/{LATEST_FILE}", body, if_match=replaced_tag)
    except (ObjectExistsError, ObjectChangedError) as error:
        raise RegistryError(
            f"version {card['model_version']} is stored but latest.json was not updated: another "
            "registration moved it meanwhile; gate it again"
        ) from error
    except StorageError as error:
        raise RegistryError(
            f"version {card['model_version']} is stored but latest.json was not updated: {error}"
        ) from error


def download_bundle(
    registry_location: str | Path, model_name: str, destination: Path, version: str | None = None
) -> str:
    """Fetch a bundle (latest when ``version`` is None) into ``destination``; return its version."""
    if version is None:
        pointer = latest_pointer(registry_location, model_name)
        if pointer is None:
            raise RegistryError(f"no version of {model_name} is registered at {registry_location}")
        version = str(pointer["model_version"])
    _safe_name(version, "version")
    storage = open_storage(registry_location)
    model_key, card_key = (f"{model_name}/{version}/{name}" for name in (MODEL_FILE, CARD_FILE))
    files = {MODEL_FILE: storage.read_bytes(model_key), CARD_FILE: storage.read_bytes(card_key)}
    # Checked before anything is written: a missing or mismatched pair leaves the destination as it was.
    _checked_card(
        files[CARD_FILE], files[MODEL_FILE], storage.describe(card_key), storage.describe(model_key)
    )
    destination.mkdir(parents=True, exist_ok=True)
    staged = {name: destination / f".{name}.{os.getpid()}.tmp" for name in files}
    try:
        for name, data in files.items():
            staged[name].write_bytes(data)
        for name, temporary in staged.items():
            temporary.replace(destination / name)
    finally:
        for temporary in staged.values():
            temporary.unlink(missing_ok=True)
    return version


def gate_and_register(
    bundle_dir: str | Path,
    registry_location: str | Path,
    rule: GateRule = GateRule(),
    champion_metrics_on_candidate_holdout: Mapping[str, float] | None = None,
    *,
    new_registry: bool = False,
) -> tuple[GateDecision, str | None]:
    """Gate the bundle against the registered champion; register it only if the gate passes.

    ``new_registry``: a new registry is started on purpose at an S3 location beside another registry of
    the model (see :func:`latest_pointer`)."""
    card = read_bundle_card(Path(bundle_dir))
    champion = champion_card(registry_location, card["model_name"], new_registry=new_registry)
    decision = gate(
        card, champion, rule, champion_metrics_on_candidate_holdout, registry_location=registry_location
    )
    if not decision.passed:
        return decision, None
    gated = Gated(decision.champion_version)
    return decision, register_bundle(bundle_dir, registry_location, gated=gated)


def main(argv: list[str] | None = None) -> int:
    """``python -m training.registry register --bundle DIR --registry LOCATION``: gate, then register."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m training.registry", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    register = commands.add_parser(
        "register", help="gate a bundle against the champion, register it if it passes"
    )
    register.add_argument(
        "--bundle", type=Path, required=True, help="folder with model.onnx and model_card.json"
    )
    register.add_argument("--registry", required=True, help="a folder or s3://bucket/prefix")
    register.add_argument("--roc-auc-tolerance", type=float, default=DEFAULT_ROC_AUC_TOLERANCE)
    register.add_argument("--brier-tolerance", type=float, default=DEFAULT_BRIER_TOLERANCE)
    register.add_argument(
        "--new-registry",
        action="store_true",
        help="start a new registry at an S3 location although a neighbouring prefix holds one of the model",
    )
    arguments = parser.parse_args(argv)
    rule = GateRule(arguments.roc_auc_tolerance, arguments.brier_tolerance)
    try:
        decision, version = gate_and_register(
            arguments.bundle, arguments.registry, rule, new_registry=arguments.new_registry
        )
    except (RegistryError, StorageError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps({**decision.as_dict(), "registered_version": version}, indent=2))
    return 0 if decision.passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
