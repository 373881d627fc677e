"""AppConfig from cdk.json context: defaults, string coercion from `-c`, and clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from infra.config import AppConfig, ConfigError, config_from_context

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
    ],
)
def test_given_a_bad_value_when_built_then_the_error_names_the_key_and_value(key: str, value: object) -> None:
    with pytest.raises(ConfigError) as error:
        config_from_context({key: value})
    assert repr(key) in str(error.value)
    assert repr(value) in str(error.value)


def test_given_a_misspelt_key_when_built_then_it_is_reported() -> None:
    with pytest.raises(ConfigError, match="lambdaMemory"):
        config_from_context({"lambdaMemory": 512})


def test_given_cdk_feature_flags_when_built_then_they_are_ignored() -> None:
    assert config_from_context({"@aws-cdk/core:checkSecretUsage": True}) == AppConfig()
