"""Connection settings from the environment and from a Secrets Manager secret (moto over HTTP)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from training.dataload.connection import DbSettings, SettingsError, settings_from_env, tls_context


def _no_secret(arn: str) -> str:
    raise AssertionError(f"no secret should be fetched, got {arn}")


def test_without_variables_the_local_development_server_is_used() -> None:
    assert settings_from_env({}, _no_secret) == DbSettings()


def test_variables_set_every_field_and_a_ca_turns_tls_on() -> None:
    env = {
        "DB_HOST": "db.internal",
        "DB_PORT": "3307",
        "DB_USER": "loader",
        "DB_PASSWORD": "s3cret",
        "DB_NAME": "credit_risk",
        "DB_TLS_CA": "/etc/ssl/rds-ca.pem",
    }
    settings = settings_from_env(env, _no_secret)
    assert settings == DbSettings(
        "db.internal", 3307, "loader", "s3cret", "credit_risk", True, "/etc/ssl/rds-ca.pem"
    )
    assert "s3cret" not in repr(settings)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DB_PORT": "mysql"}, "DB_PORT must be a port number"),
        ({"DB_PORT": "70000"}, "between 1 and 65535"),
        ({"DB_TLS": "maybe"}, "DB_TLS must be true or false"),
    ],
)
def test_malformed_variables_are_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        settings_from_env(env, _no_secret)


def test_tls_context_verifies_the_server() -> None:
    assert tls_context(DbSettings()) is None
    context = tls_context(DbSettings(tls=True))
    assert context is not None
    assert context.check_hostname


def test_an_rds_secret_from_secrets_manager_fills_what_the_variables_leave_unset(moto_endpoint: str) -> None:
    import boto3

    # Given an RDS-shaped secret in Secrets Manager (emulated)
    secret = {
        "engine": "mariadb",
        "host": "loans.cluster.example",
        "port": 3306,
        "username": "admin",
        "password": "from-secret",
        "dbname": "berka",
    }
    arn = boto3.client("secretsmanager").create_secret(Name="rds-loans", SecretString=json.dumps(secret))[
        "ARN"
    ]

    # When the settings name it and override the host (e.g. a tunnel)
    settings = settings_from_env({"DB_SECRET_ARN": arn, "DB_HOST": "127.0.0.1"})

    # Then the secret supplies the rest
    assert settings == DbSettings("127.0.0.1", 3306, "admin", "from-secret", "berka", False, None)


@pytest.mark.parametrize(
    ("secret_text", "message"),
    [
        ("not json", "is not JSON"),
        ('["a"]', "must be a JSON object"),
        ('{"username": "u"}', "lacks password"),
    ],
)
def test_a_malformed_secret_is_reported(secret_text: str, message: str) -> None:
    def fetch(_: str) -> str:
        return secret_text

    with pytest.raises(SettingsError, match=message):
        settings_from_env({"DB_SECRET_ARN": "arn:aws:secretsmanager:x"}, fetch)


def test_a_server_without_tls_refuses_a_tls_connection(mariadb_settings: Any) -> None:
    import pymysql

    from training.dataload.connection import connect

    # Given the local server (no certificate) and its working credentials, when TLS with verification
    # is required, then the connection fails for want of TLS (not, say, for a wrong password: 1045)
    settings = mariadb_settings
    with pytest.raises(pymysql.OperationalError, match="SSL is required") as refused:
        connect(DbSettings(settings.host, settings.port, settings.user, settings.password, None, True, None))
    assert refused.value.args[0] == 2026  # CR_SSL_CONNECTION_ERROR
