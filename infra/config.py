"""One typed configuration object for the CDK app, built from cdk.json context and validated up front.

Configuration flows one way: cdk.json context (or ``-c key=value``) -> ``AppConfig`` -> construct
arguments -> Lambda environment variables. Any bad value fails synthesis with a message that names
the context key, the value and what was expected.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, cast

AuthMode = Literal["iam", "cognito"]
Architecture = Literal["x86_64", "arm64"]
RemovalPolicyName = Literal["retain", "snapshot", "destroy"]
# How CodeDeploy shifts the API alias to a new version (infra/rollout.py maps each to a deployment config).
ApiRollout = Literal["canary", "linear", "all_at_once"]
API_ROLLOUTS: tuple[ApiRollout, ...] = ("canary", "linear", "all_at_once")
# S3 Object Lock mode of the audit bucket: "governance" can be lifted by a principal holding
# s3:BypassGovernanceRetention; "compliance" by nobody, not even the account root, until retention ends.
AuditLockMode = Literal["governance", "compliance"]

# Context keys understood by the app (all optional; defaults below). Kept in one place so a typo in
# cdk.json is reported instead of silently ignored.
CONTEXT_KEYS = (
    "environment",
    "modelBundleDir",
    "modelBundleVersion",
    "lambdaMemoryMb",
    "lambdaArchitecture",
    "batchMemoryMb",
    "rdsInstanceClass",
    "rdsMultiAz",
    "rdsDeletionProtection",
    "dataRemovalPolicy",
    "authMode",
    "trainingSchedule",
    "alarmEmail",
    "useNatGateway",
    "lightweightAssets",
    "apiRollout",
    "auditRetentionDays",
    "auditLockMode",
    "apiProvisionedConcurrency",
    "apiSnapStart",
    "batchMaxConcurrency",
    "apiFirewall",
    "apiRateLimitPerAddress",
    "maxBatchApplications",
    "driftWindowApplications",
    "batchOnnxThreads",
)

_ENVIRONMENT_PATTERN = re.compile(r"^[a-z][a-z0-9-]{0,19}$")
_INSTANCE_CLASS_PATTERN = re.compile(r"^db\.[a-z0-9]+\.[a-z0-9]+$")
_SCHEDULE_PATTERN = re.compile(r"^(rate\(.+\)|cron\(.+\)|none)$")
_EMAIL_PATTERN = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_BUNDLE_DIR_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_./-]*$")
# One registry path segment: the same rule training/registry.py (SAFE_NAME) applies to model names and
# versions when it registers them, so only a version that could have been registered is accepted.
REGISTRY_NAME_REGEX = r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"
_BUNDLE_VERSION_PATTERN = re.compile(rf"^{REGISTRY_NAME_REGEX}/{REGISTRY_NAME_REGEX}$")

# Lambda's bounds for an SQS event source's maximum concurrency.
BATCH_MAX_CONCURRENCY_RANGE = (2, 1000)
# The bounds the functions' cold starts apply to the variables these keys set: lambdas/api/settings.py
# (MAX_BATCH_APPLICATIONS_LIMIT; DRIFT_WINDOW_APPLICATIONS, from lambdas/scoring/drift.py's
# MIN_ROWS_FOR_VERDICT) and lambdas/batch/wiring.py (BATCH_ONNX_THREADS). Restated, not imported: those
# modules import numpy and onnxruntime (the batch one Powertools and pyarrow too), which the CDK app does
# not load; tests/infra/test_settings_keys.py feeds the boundary values to both sides.
MAX_BATCH_APPLICATIONS_RANGE = (1, 1000)
MIN_DRIFT_WINDOW_APPLICATIONS = 500
BATCH_ONNX_THREADS_MIN = 1

T = TypeVar("T")


class ConfigError(ValueError):
    """A cdk.json context value is missing, mistyped or out of range; the message names the key."""


@dataclass(frozen=True)
class AppConfig:
    environment: str = "dev"
    model_bundle_dir: str = "model_artifacts/credit_risk"
    # "<model_name>/<model_version>" of a registered bundle in the artifact bucket's models/ registry
    # for the API and batch Lambdas to load at cold start, or None to serve the bundle packaged in them.
    model_bundle_version: str | None = None
    lambda_memory_mb: int = 1024
    lambda_architecture: Architecture = "x86_64"
    batch_memory_mb: int = 2048
    rds_instance_class: str = "db.t4g.micro"
    rds_multi_az: bool = False
    rds_deletion_protection: bool = True
    data_removal_policy: RemovalPolicyName = "retain"
    auth_mode: AuthMode = "iam"
    # EventBridge schedule expression for retraining, or None for on-demand only.
    training_schedule: str | None = "rate(30 days)"
    alarm_email: str | None = None
    use_nat_gateway: bool = False
    # Tests only: ship a tiny placeholder asset instead of the real Docker-free package build.
    lightweight_assets: bool = False
    # "canary" (10 % for 5 minutes, then 100 %), "linear" (+10 % every minute) or "all_at_once" (dev).
    api_rollout: ApiRollout = "canary"
    # How long audit records (every decision, every batch file) are kept unalterable: 7 years by default,
    # a common record-keeping period for credit decisions; set it to what your regulator requires.
    audit_retention_days: int = 2557
    audit_lock_mode: AuditLockMode = "governance"
    # Execution environments kept initialised behind the API's live alias (0 = on demand only). Each one
    # removes a cold start (~0.3 s of init, plus Lambda's own) from the traffic it absorbs, at the price
    # of an always-on function of lambdaMemoryMb.
    api_provisioned_concurrency: int = 0
    # Lambda SnapStart on the API's published versions: new execution environments resume from a snapshot
    # taken after the init phase (imports, bundle loaded and verified) instead of running it. Lambda
    # refuses it together with provisioned concurrency. Python snapshots are billed while the version
    # exists (~$3.90/month at 1024 MB) plus each restore, so it is opt-in.
    api_snap_start: bool = False
    # Most batch function instances the SQS event source runs at once (2 to 1000, SQS event source
    # limits). Each one is a 2 GB, up-to-15-minute invocation: the cap keeps a bulk drop into incoming/
    # from taking the account's Lambda concurrency away from the API; the rest of the files wait in the queue.
    batch_max_concurrency: int = 10
    # An AWS WAF web ACL on the API stage (infra/firewall.py): IP reputation, known bad inputs, common
    # exploits and a per-address rate limit. About $5 a month plus $1 per rule and $0.60 per million
    # requests; switch it off only where another firewall (a central Firewall Manager policy) covers it.
    api_firewall: bool = True
    # Requests one client address may make in 5 minutes before the firewall answers 429 (the stage's
    # own throttle, 50 requests per second, is shared by all callers).
    api_rate_limit_per_address: int = 3000
    # The most applications one POST /v1/score/batch takes (MAX_BATCH_APPLICATIONS): the API's OpenAPI
    # document and GET /v1/model state it. At most 1,000: such a batch stays below the web ACL's body limit.
    max_batch_applications: int = 100
    # Applications per API drift window in each execution environment (DRIFT_WINDOW_APPLICATIONS); 0 turns
    # API drift measurement off, and fewer than MIN_DRIFT_WINDOW_APPLICATIONS would never give a verdict.
    drift_window_applications: int = 1000
    # onnxruntime threads of the batch function (BATCH_ONNX_THREADS). More only help with more vCPUs (a
    # larger batchMemoryMb), and above 1 a probability may differ from the API's in its last bit on about
    # one row in a million (lambdas/scoring/runtime.py).
    batch_onnx_threads: int = 1

    @property
    def stack_prefix(self) -> str:
        return f"LoanScoring-{self.environment}"

    @property
    def registered_model_version(self) -> str | None:
        """The ``<model_version>`` of ``model_bundle_version``, or None for the packaged bundle."""
        if not self.model_bundle_version:
            return None
        return self.model_bundle_version.rpartition("/")[2]


def config_from_context(context: Mapping[str, Any]) -> AppConfig:
    """Build and validate the config from a context mapping (``app.node.try_get_context`` values)."""
    unknown = sorted(key for key in context if key not in CONTEXT_KEYS and _looks_like_ours(key))
    if unknown:
        raise ConfigError(f"unknown context key(s) {unknown}; known keys are {list(CONTEXT_KEYS)}")
    defaults = AppConfig()
    schedule = _get(context, "trainingSchedule", str, defaults.training_schedule or "none")
    _require(
        context,
        "trainingSchedule",
        schedule,
        bool(_SCHEDULE_PATTERN.fullmatch(schedule)),
        "rate(...)|cron(...)|none",
    )
    provisioned = _int_in_range(
        context, "apiProvisionedConcurrency", defaults.api_provisioned_concurrency, 0, 1000
    )
    snap_start = _bool(context, "apiSnapStart", defaults.api_snap_start)
    if snap_start and provisioned:
        raise ConfigError(
            f"context keys 'apiSnapStart' (True) and 'apiProvisionedConcurrency' ({provisioned}): Lambda "
            "does not allow SnapStart with provisioned concurrency; choose one"
        )
    email = _get(context, "alarmEmail", str, "")
    _require(
        context,
        "alarmEmail",
        email,
        email == "" or bool(_EMAIL_PATTERN.fullmatch(email)),
        "an e-mail address",
    )
    return AppConfig(
        environment=_matching(
            context, "environment", _ENVIRONMENT_PATTERN, defaults.environment, "lower-case, <=20"
        ),
        model_bundle_dir=_bundle_dir(context, defaults.model_bundle_dir),
        model_bundle_version=_bundle_version(context),
        lambda_memory_mb=_int_in_range(context, "lambdaMemoryMb", defaults.lambda_memory_mb, 128, 10240),
        lambda_architecture=cast(
            Architecture,
            _choice(context, "lambdaArchitecture", ("x86_64", "arm64"), defaults.lambda_architecture),
        ),
        batch_memory_mb=_int_in_range(context, "batchMemoryMb", defaults.batch_memory_mb, 128, 10240),
        rds_instance_class=_matching(
            context,
            "rdsInstanceClass",
            _INSTANCE_CLASS_PATTERN,
            defaults.rds_instance_class,
            "like db.t4g.micro",
        ),
        rds_multi_az=_bool(context, "rdsMultiAz", defaults.rds_multi_az),
        rds_deletion_protection=_bool(context, "rdsDeletionProtection", defaults.rds_deletion_protection),
        data_removal_policy=cast(
            RemovalPolicyName,
            _choice(
                context, "dataRemovalPolicy", ("retain", "snapshot", "destroy"), defaults.data_removal_policy
            ),
        ),
        auth_mode=cast(AuthMode, _choice(context, "authMode", ("iam", "cognito"), defaults.auth_mode)),
        training_schedule=None if schedule == "none" else schedule,
        alarm_email=email or None,
        use_nat_gateway=_bool(context, "useNatGateway", defaults.use_nat_gateway),
        lightweight_assets=_bool(context, "lightweightAssets", defaults.lightweight_assets),
        api_rollout=cast(ApiRollout, _choice(context, "apiRollout", API_ROLLOUTS, defaults.api_rollout)),
        audit_retention_days=_int_in_range(
            context, "auditRetentionDays", defaults.audit_retention_days, 1, 36500
        ),
        api_provisioned_concurrency=provisioned,
        api_snap_start=snap_start,
        batch_max_concurrency=_int_in_range(
            context,
            "batchMaxConcurrency",
            defaults.batch_max_concurrency,
            BATCH_MAX_CONCURRENCY_RANGE[0],
            BATCH_MAX_CONCURRENCY_RANGE[1],
        ),
        audit_lock_mode=cast(
            AuditLockMode,
            _choice(context, "auditLockMode", ("governance", "compliance"), defaults.audit_lock_mode),
        ),
        api_firewall=_bool(context, "apiFirewall", defaults.api_firewall),
        # WAF's bounds for a rate-based rule's limit.
        api_rate_limit_per_address=_int_in_range(
            context, "apiRateLimitPerAddress", defaults.api_rate_limit_per_address, 10, 2_000_000_000
        ),
        max_batch_applications=_int_in_range(
            context,
            "maxBatchApplications",
            defaults.max_batch_applications,
            MAX_BATCH_APPLICATIONS_RANGE[0],
            MAX_BATCH_APPLICATIONS_RANGE[1],
        ),
        drift_window_applications=_drift_window(context, defaults.drift_window_applications),
        batch_onnx_threads=_int_at_least(
            context, "batchOnnxThreads", defaults.batch_onnx_threads, BATCH_ONNX_THREADS_MIN
        ),
    )


def _looks_like_ours(key: str) -> bool:
    # CDK itself puts feature flags ("@aws-cdk/...") and "aws:cdk:..." keys into the context.
    return not (key.startswith("@") or ":" in key or key.startswith("aws-cdk") or key.startswith("cdk"))


def _get(context: Mapping[str, Any], key: str, expected: type[T], default: T) -> T:
    value = context.get(key, default)
    if value is None:
        return default
    # `cdk -c key=value` passes strings: accept them for numbers and booleans.
    if expected is int and isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if expected is bool and isinstance(value, str) and value.lower() in ("true", "false"):
        value = value.lower() == "true"
    if expected is int and isinstance(value, bool):
        raise ConfigError(f"context key {key!r}: expected an integer, got {value!r}")
    if not isinstance(value, expected):
        raise ConfigError(f"context key {key!r}: expected {expected.__name__}, got {value!r}")
    return value


def _require(context: Mapping[str, Any], key: str, value: object, ok: bool, expected: str) -> None:
    if not ok:
        raise ConfigError(f"context key {key!r}: invalid value {value!r} (expected {expected})")


def _choice(context: Mapping[str, Any], key: str, allowed: tuple[str, ...], default: str) -> str:
    value = _get(context, key, str, default)
    _require(context, key, value, value in allowed, f"one of {list(allowed)}")
    return value


def _bool(context: Mapping[str, Any], key: str, default: bool) -> bool:
    return _get(context, key, bool, default)


def _int_in_range(context: Mapping[str, Any], key: str, default: int, low: int, high: int) -> int:
    value = _get(context, key, int, default)
    _require(context, key, value, low <= value <= high, f"an integer from {low} to {high}")
    return value


def _int_at_least(context: Mapping[str, Any], key: str, default: int, low: int) -> int:
    value = _get(context, key, int, default)
    _require(context, key, value, value >= low, f"an integer, at least {low}")
    return value


def _drift_window(context: Mapping[str, Any], default: int) -> int:
    value = _get(context, "driftWindowApplications", int, default)
    _require(
        context,
        "driftWindowApplications",
        value,
        value == 0 or value >= MIN_DRIFT_WINDOW_APPLICATIONS,
        f"0 (off) or at least {MIN_DRIFT_WINDOW_APPLICATIONS}, the rows a drift verdict needs",
    )
    return value


def _matching(
    context: Mapping[str, Any], key: str, pattern: re.Pattern[str], default: str, expected: str
) -> str:
    value = _get(context, key, str, default)
    _require(context, key, value, bool(pattern.fullmatch(value)), expected)
    return value


def _bundle_dir(context: Mapping[str, Any], default: str) -> str:
    value = _get(context, "modelBundleDir", str, default).rstrip("/")
    valid = bool(_BUNDLE_DIR_PATTERN.fullmatch(value)) and ".." not in value.split("/")
    _require(context, "modelBundleDir", value, valid, "a relative folder inside the repository")
    return value


def _bundle_version(context: Mapping[str, Any]) -> str | None:
    value = _get(context, "modelBundleVersion", str, "")
    _require(
        context,
        "modelBundleVersion",
        value,
        value == "" or bool(_BUNDLE_VERSION_PATTERN.fullmatch(value)),
        "'' for the packaged bundle, or a registered '<model_name>/<model_version>' such as "
        "'credit_risk-default-risk/credit_risk-4d5ce25fd110' (no 'models/' prefix, no trailing '/')",
    )
    return value or None
