"""AppConfig from cdk.json context: defaults, string coercion from `-c`, and clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import aws_cdk as cdk
import pytest

from app import build_app
from infra.config import REGISTRY_NAME_REGEX, AppConfig, ConfigError, config_from_context
from training.registry import SAFE_NAME

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_given_the_committed_cdk_json_when_built_then_it_is_valid_and_secure_by_default() -> None:
    context = json.loads((REPO_ROOT / "cdk.json").read_text())["context"]
    config = config_from_context(context)
    assert config.auth_mode == "iam"
    assert config.lambda_architecture == "x86_64"
    assert config.rds_deletion_protection is True
    assert config.use_nat_gateway is False
    assert config.lightweight_assets is False
    assert config.alarm_email is None  # "" in cdk.json means no topic
    assert config.model_bundle_version is None  # "" in cdk.json: serve the packaged bundle
    assert config.api_rollout == "canary"  # a new API version gets 10 % of traffic first
    assert (config.audit_retention_days, config.audit_lock_mode) == (2557, "governance")
    assert config.api_provisioned_concurrency == 0  # on demand unless asked
    assert config.api_snap_start is False  # snapshots are billed while a version exists: opt-in
    assert config.batch_max_concurrency == 10  # a bulk drop leaves account concurrency for the API
    assert config.api_firewall is True  # a web ACL in front of the public API stage
    assert config.api_rate_limit_per_address == 3000


def test_given_cli_strings_when_built_then_numbers_and_booleans_are_coerced() -> None:
    config = config_from_context({"lambdaMemoryMb": "2048", "rdsMultiAz": "true", "trainingSchedule": "none"})
    assert config.lambda_memory_mb == 2048
    assert config.rds_multi_az is True
    assert config.training_schedule is None


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("lambdaArchitecture", "arm"),
        ("authMode", "apikey"),
        ("lambdaMemoryMb", 64),
        ("lambdaMemoryMb", "lots"),
        ("rdsInstanceClass", "t4g.micro"),
        ("dataRemovalPolicy", "keep"),
        ("trainingSchedule", "monthly"),
        ("alarmEmail", "ops-at-example"),
        ("environment", "Prod_1"),
        ("modelBundleDir", "../outside"),
        ("rdsMultiAz", "yes"),
        ("apiRollout", "blue_green"),
        ("apiRollout", "Canary"),
        ("auditRetentionDays", 0),
        ("auditRetentionDays", "forever"),
        ("auditLockMode", "none"),
        ("apiProvisionedConcurrency", -1),
        ("apiProvisionedConcurrency", 5000),
        ("batchMaxConcurrency", 1),  # SQS event sources need at least 2
        ("batchMaxConcurrency", 1001),
        ("batchMaxConcurrency", "unlimited"),
        ("apiFirewall", "off"),
        ("apiSnapStart", "on"),
        ("apiRateLimitPerAddress", 9),  # below WAF's smallest rate limit
        ("apiRateLimitPerAddress", 2_000_000_001),
    ],
)
def test_given_a_bad_value_when_built_then_the_error_names_the_key_and_value(key: str, value: object) -> None:
    with pytest.raises(ConfigError) as error:
        config_from_context({key: value})
    assert repr(key) in str(error.value)
    assert repr(value) in str(error.value)


@pytest.mark.parametrize("value", ["2", 1000])
def test_given_a_batch_max_concurrency_at_the_sqs_bounds_when_built_then_it_is_kept(value: object) -> None:
    assert config_from_context({"batchMaxConcurrency": value}).batch_max_concurrency == int(str(value))


def test_given_cli_strings_when_the_firewall_is_configured_then_they_are_coerced() -> None:
    config = config_from_context({"apiFirewall": "false", "apiRateLimitPerAddress": "500"})
    assert (config.api_firewall, config.api_rate_limit_per_address) == (False, 500)


def test_given_snap_start_from_the_cli_when_built_then_it_is_on() -> None:
    assert config_from_context({"apiSnapStart": "true"}).api_snap_start is True


def test_given_snap_start_and_provisioned_concurrency_when_built_then_the_error_names_both() -> None:
    # Lambda rejects the pair at deploy time; synthesis says so first
    with pytest.raises(ConfigError) as error:
        config_from_context({"apiSnapStart": True, "apiProvisionedConcurrency": "2"})
    assert "'apiSnapStart'" in str(error.value)
    assert "'apiProvisionedConcurrency' (2)" in str(error.value)
    assert config_from_context({"apiSnapStart": True, "apiProvisionedConcurrency": 0}).api_snap_start


def test_given_no_api_rollout_when_built_then_the_api_rolls_out_as_a_canary() -> None:
    assert config_from_context({}).api_rollout == "canary"


@pytest.mark.parametrize("rollout", ["canary", "linear", "all_at_once"])
def test_given_an_allowed_api_rollout_when_built_then_it_is_kept(rollout: str) -> None:
    assert config_from_context({"apiRollout": rollout}).api_rollout == rollout


def test_given_a_bad_api_rollout_when_built_then_the_error_lists_the_allowed_values() -> None:
    with pytest.raises(ConfigError) as error:
        config_from_context({"apiRollout": "instant"})
    assert "'apiRollout'" in str(error.value)
    assert "['canary', 'linear', 'all_at_once']" in str(error.value)


def test_given_a_misspelt_key_when_built_then_it_is_reported() -> None:
    with pytest.raises(ConfigError, match="lambdaMemory"):
        config_from_context({"lambdaMemory": 512})


def test_given_cdk_feature_flags_when_built_then_they_are_ignored() -> None:
    assert config_from_context({"@aws-cdk/core:checkSecretUsage": True}) == AppConfig()


def test_given_a_registered_model_version_when_built_then_it_is_kept() -> None:
    config = config_from_context({"modelBundleVersion": "credit_risk-default-risk/credit_risk-4d5ce25fd110"})
    assert config.model_bundle_version == "credit_risk-default-risk/credit_risk-4d5ce25fd110"
    assert config_from_context({"modelBundleVersion": ""}).model_bundle_version is None


@pytest.mark.parametrize(
    "value",
    [
        "credit_risk-default-risk",  # no version
        "credit_risk-default-risk/",
        "credit_risk-default-risk/v1/",  # trailing slash
        "/credit_risk-default-risk/v1",
        "models/credit_risk-default-risk/v1",  # the registry prefix is added by the stack
        "s3://bucket/models/credit_risk-default-risk/v1/",
        "credit_risk-default-risk/../v1",
        "../v1",
        "credit risk/v1",
        "credit_risk-default-risk/v1*",
        "a/" + "v" * 129,  # registry names are at most 128 characters
        42,
    ],
)
def test_given_a_bad_model_bundle_version_when_built_then_the_error_names_the_key_and_shape(
    value: object,
) -> None:
    with pytest.raises(ConfigError) as error:
        config_from_context({"modelBundleVersion": value})
    message = str(error.value)
    assert "'modelBundleVersion'" in message
    assert repr(value) in message
    if isinstance(value, str):
        assert "<model_name>/<model_version>" in message


def test_model_bundle_version_accepts_exactly_the_names_the_registry_registers() -> None:
    # Given the registry's own rule for names and versions, then the config uses the same one.
    assert SAFE_NAME.pattern == f"^{REGISTRY_NAME_REGEX}$"


def test_given_a_misspelt_context_key_when_the_app_is_built_then_it_is_refused() -> None:
    # Given `cdk deploy -c batchMaxConcurency=2` (one "r" short)
    app = cdk.App(context={"batchMaxConcurency": "2"})
    # Then the app refuses it, naming the key, instead of deploying the default of 10
    with pytest.raises(ConfigError, match=r"unknown context key\(s\) \['batchMaxConcurency'\]"):
        build_app(app)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("environment", "dev\n"),
        ("modelBundleVersion", "credit_risk/credit_risk-eba769cb291e\n"),
        ("modelBundleDir", "model_artifacts/credit_risk\n"),
        ("trainingSchedule", "rate(30 days)\n"),
        ("alarmEmail", "ops@example.com\n"),
    ],
)
def test_given_a_value_with_a_trailing_newline_then_it_is_refused(key: str, value: str) -> None:
    # A pattern's "$" also matches before a final newline: a value pasted with one would reach
    # resource names, environment variables and S3 keys
    with pytest.raises(ConfigError, match=key):
        config_from_context({key: value})
