"""Settings from the Lambda environment, tracing switch, and loading a bundle from S3 (moto over HTTP)."""

from __future__ import annotations

from pathlib import Path

import boto3
import pytest
from aws_lambda_powertools import Tracer

from lambdas.api.bundle import load_model
from lambdas.api.observability import tracing_disabled
from lambdas.api.settings import PACKAGE_ROOT, Settings, SettingsError
from lambdas.model_source import S3Location
from lambdas.scoring.runtime import ModelBundleError
from tests.scoring.bundles import MODEL_VERSION


def test_given_an_empty_environment_when_settings_load_then_defaults_apply() -> None:
    settings = Settings.from_env({})
    assert settings.model_bundle_dir == PACKAGE_ROOT / "model_artifacts" / "credit_risk"
    assert settings.model_bundle_uri is None
    assert settings.log_applicant_values is False
    assert settings.max_batch_applications == 100


def test_given_all_variables_when_settings_load_then_they_are_parsed() -> None:
    settings = Settings.from_env(
        {
            "MODEL_BUNDLE_DIR": "/opt/bundle",
            "MODEL_BUNDLE_URI": "s3://models/credit/v7",
            "LOG_APPLICANT_VALUES": "TRUE",
            "MAX_BATCH_APPLICATIONS": "250",
        }
    )
    assert settings.model_bundle_dir == Path("/opt/bundle")
    assert settings.model_bundle_uri == S3Location(bucket="models", prefix="credit/v7/")
    assert settings.log_applicant_values is True
    assert settings.max_batch_applications == 250


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("MODEL_BUNDLE_URI", "https://models/credit/", "must look like s3://"),
        ("MODEL_BUNDLE_URI", "s3:///credit/", "has no bucket"),
        ("LOG_APPLICANT_VALUES", "maybe", "LOG_APPLICANT_VALUES must be true or false"),
        ("MAX_BATCH_APPLICATIONS", "ten", "must be an integer"),
        ("MAX_BATCH_APPLICATIONS", "0", "between 1 and 1000"),
        ("MAX_BATCH_APPLICATIONS", "5000", "between 1 and 1000"),
    ],
)
def test_given_a_bad_variable_when_settings_load_then_the_error_names_it(
    name: str, value: str, message: str
) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env({name: value})


@pytest.mark.parametrize(
    ("env", "disabled"),
    [
        ({}, True),
        ({"LAMBDA_TASK_ROOT": "/var/task"}, False),
        # Powertools looks at LAMBDA_TASK_ROOT, not the function name: the Tracer would disable itself.
        ({"AWS_LAMBDA_FUNCTION_NAME": "f"}, True),
        ({"LAMBDA_TASK_ROOT": "/var/task", "POWERTOOLS_TRACE_DISABLED": "true"}, True),
        ({"LAMBDA_TASK_ROOT": "/var/task", "AWS_SAM_LOCAL": "true"}, True),
    ],
)
def test_given_an_environment_when_deciding_tracing_then_powertools_rules_apply(
    env: dict[str, str], disabled: bool
) -> None:
    assert tracing_disabled(env) is disabled


_IN_LAMBDA = {"LAMBDA_TASK_ROOT": "/var/task"}


@pytest.mark.parametrize(
    "env",
    [
        # Every spelling Powertools' strtobool reads as true, or false
        *({**_IN_LAMBDA, "POWERTOOLS_TRACE_DISABLED": value} for value in ("t", "Y", "TRUE", "1", "on")),
        *({**_IN_LAMBDA, "POWERTOOLS_TRACE_DISABLED": value} for value in ("f", "N", "false", "0", "off")),
        # Emulator variables count when they hold a value, as os.getenv's truthiness has it
        {**_IN_LAMBDA, "AWS_SAM_LOCAL": ""},
        {**_IN_LAMBDA, "AWS_CHALICE_CLI_MODE": ""},
        {**_IN_LAMBDA, "AWS_CHALICE_CLI_MODE": "1"},
        {"LAMBDA_TASK_ROOT": ""},
    ],
)
def test_given_an_environment_when_deciding_tracing_then_it_matches_the_tracers_own_check(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the environment as Powertools' Tracer would read it
    for name in ("LAMBDA_TASK_ROOT", "POWERTOOLS_TRACE_DISABLED", "AWS_SAM_LOCAL", "AWS_CHALICE_CLI_MODE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    # Then the switch decides as the Tracer itself does
    assert tracing_disabled(env) is bool(Tracer._is_tracer_disabled())


def test_given_a_bundle_in_s3_when_loading_then_it_is_fetched_and_verified(
    s3_endpoint: str, api_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in {
        "AWS_ENDPOINT_URL": s3_endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "eu-west-1",
    }.items():
        monkeypatch.setenv(name, value)
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="models", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    for file in ("model.onnx", "model_card.json"):
        s3.put_object(Bucket="models", Key=f"credit/v2/{file}", Body=(api_bundle / file).read_bytes())
    s3.put_object(
        Bucket="models", Key="bad/model_card.json", Body=(api_bundle / "model_card.json").read_bytes()
    )
    s3.put_object(Bucket="models", Key="bad/model.onnx", Body=b"not the model")

    model = load_model(Settings.from_env({"MODEL_BUNDLE_URI": "s3://models/credit/v2"}))
    assert model.model_version == MODEL_VERSION

    with pytest.raises(ModelBundleError, match=r"s3://models/bad/.*does not match its card"):
        load_model(Settings.from_env({"MODEL_BUNDLE_URI": "s3://models/bad/"}))

    with pytest.raises(ModelBundleError, match=r"model bundle s3://models/absent/ has no model_card\.json"):
        load_model(Settings.from_env({"MODEL_BUNDLE_URI": "s3://models/absent/"}))
