"""The API Lambda's environment, validated once at cold start into one typed settings object."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from lambdas.audit import audit_logging_problem
from lambdas.model_source import (
    BundleUriError,
    BundleVersionError,
    S3Location,
    parse_expected_version,
    parse_s3_uri,
)
from lambdas.scoring.drift import MIN_ROWS_FOR_VERDICT

# The folder that holds ``lambdas/`` (``/var/task`` in Lambda, the repository root locally).
PACKAGE_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MODEL_BUNDLE_DIR = "model_artifacts/credit_risk"
DEFAULT_MAX_BATCH_APPLICATIONS = 100
DEFAULT_DRIFT_WINDOW_APPLICATIONS = 1000
MAX_BATCH_APPLICATIONS_LIMIT = 1000
_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off", ""})
# Powertools' Logger logs each whole event when this is true (what its strtobool reads as false, after
# lower-casing, is all that is accepted).
LOG_EVENT_VARIABLE = "POWERTOOLS_LOGGER_LOG_EVENT"
_POWERTOOLS_FALSE = frozenset({"0", "n", "no", "f", "false", "off"})


class SettingsError(ValueError):
    """An environment variable has a value the handler cannot work with."""


@dataclass(frozen=True)
class Settings:
    model_bundle_dir: Path
    model_bundle_uri: S3Location | None
    log_applicant_values: bool
    max_batch_applications: int
    # Applications per drift measurement in one execution environment; 0 turns it off.
    drift_window_applications: int = DEFAULT_DRIFT_WINDOW_APPLICATIONS
    # The version the card at model_bundle_uri must name (MODEL_BUNDLE_VERSION, set with the URI by
    # modelBundleVersion); None: no check (a local run pointing at a folder, or the packaged bundle).
    model_bundle_version: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        _check_logging(env)
        bundle_dir = Path(env.get("MODEL_BUNDLE_DIR", DEFAULT_MODEL_BUNDLE_DIR))
        uri = env.get("MODEL_BUNDLE_URI", "").strip()
        return cls(
            model_bundle_dir=bundle_dir if bundle_dir.is_absolute() else PACKAGE_ROOT / bundle_dir,
            model_bundle_uri=_parse_bundle_uri(uri) if uri else None,
            log_applicant_values=_parse_bool(
                "LOG_APPLICANT_VALUES", env.get("LOG_APPLICANT_VALUES", "false")
            ),
            max_batch_applications=_parse_batch_limit(env.get("MAX_BATCH_APPLICATIONS")),
            drift_window_applications=_parse_drift_window(env.get("DRIFT_WINDOW_APPLICATIONS")),
            model_bundle_version=_parse_bundle_version(env.get("MODEL_BUNDLE_VERSION", ""), bool(uri)),
        )


def _check_logging(env: Mapping[str, str]) -> None:
    """Refuse the logging settings that would lose the audit trail or log what the API must not."""
    problem = audit_logging_problem(env)
    if problem is not None:
        raise SettingsError(problem)
    # The whole event is the body (applicant values, whatever LOG_APPLICANT_VALUES says) and the
    # headers (the caller's Authorization, a bearer token with Cognito): never logged.
    raw = env.get(LOG_EVENT_VARIABLE)
    if raw is not None and raw.lower() not in _POWERTOOLS_FALSE:
        raise SettingsError(
            f"{LOG_EVENT_VARIABLE} must be false (or unset), got {raw!r}: Powertools would log every "
            "request whole, the applicants' values and the caller's Authorization header included"
        )


def _parse_bundle_uri(uri: str) -> S3Location:
    try:
        return parse_s3_uri(uri)
    except BundleUriError as error:  # the message names MODEL_BUNDLE_URI
        raise SettingsError(str(error)) from None


def _parse_bundle_version(raw: str, uri_set: bool) -> str | None:
    try:
        return parse_expected_version(raw, uri_set=uri_set)
    except BundleVersionError as error:  # the message names MODEL_BUNDLE_VERSION
        raise SettingsError(str(error)) from None


def _parse_bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise SettingsError(f"{name} must be true or false, got {raw!r}")


def _parse_batch_limit(raw: str | None) -> int:
    if raw is None or not raw.strip():
        return DEFAULT_MAX_BATCH_APPLICATIONS
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"MAX_BATCH_APPLICATIONS must be an integer, got {raw!r}") from None
    if not 1 <= value <= MAX_BATCH_APPLICATIONS_LIMIT:
        raise SettingsError(
            f"MAX_BATCH_APPLICATIONS must be between 1 and {MAX_BATCH_APPLICATIONS_LIMIT}, got {value}"
        )
    return value


def _parse_drift_window(raw: str | None) -> int:
    if raw is None or not raw.strip():
        return DEFAULT_DRIFT_WINDOW_APPLICATIONS
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"DRIFT_WINDOW_APPLICATIONS must be an integer, got {raw!r}") from None
    if value != 0 and value < MIN_ROWS_FOR_VERDICT:
        raise SettingsError(
            f"DRIFT_WINDOW_APPLICATIONS must be 0 (off) or at least {MIN_ROWS_FOR_VERDICT} "
            f"(fewer rows give no drift verdict), got {value}"
        )
    return value
