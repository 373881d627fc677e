"""MariaDB connection settings from the environment or a Secrets Manager secret, and connecting.

Environment variables (each one wins over the secret when set):

- ``DB_HOST`` (default ``127.0.0.1``), ``DB_PORT`` (default ``3306``), ``DB_USER`` (default ``root``),
  ``DB_PASSWORD`` (default empty), ``DB_NAME`` (default database of the connection, optional)
- ``DB_TLS``: ``true``/``false`` (default false); ``DB_TLS_CA``: CA bundle to verify the server
  with (setting it turns TLS on; RDS needs its own bundle, which no system store holds). With TLS
  the server certificate and host name are verified; without it the connection is plain, never
  TLS without verification.
- ``DB_SECRET_ARN``: a Secrets Manager secret in the standard RDS shape
  ``{"engine", "host", "port", "username", "password", "dbname"}``; its values fill whatever
  the variables above leave unset.

The defaults are the local development server (root, empty password on 127.0.0.1:3306).
"""

from __future__ import annotations

import contextlib
import json
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pymysql

TRUE_WORDS = frozenset({"1", "true", "yes", "on", "required"})
FALSE_WORDS = frozenset({"", "0", "false", "no", "off"})


class SettingsError(ValueError):
    """The connection settings are incomplete or malformed."""


@dataclass(frozen=True)
class DbSettings:
    host: str = "127.0.0.1"
    port: int = 3306
    user: str = "root"
    password: str = ""
    database: str | None = None
    tls: bool = False
    tls_ca: str | None = None

    def with_database(self, database: str | None) -> DbSettings:
        return replace(self, database=database)

    def __repr__(self) -> str:  # never print the password
        return (
            f"DbSettings(host={self.host!r}, port={self.port}, user={self.user!r}, "
            f"database={self.database!r}, tls={self.tls}, tls_ca={self.tls_ca!r})"
        )


def fetch_secret_string(secret_arn: str) -> str:
    """The SecretString of a Secrets Manager secret (the only AWS call of this module)."""
    import boto3  # only needed when a secret is configured

    response = boto3.client("secretsmanager").get_secret_value(SecretId=secret_arn)
    secret: str = response["SecretString"]
    return secret


def _parse_port(value: object, source: str) -> int:
    try:
        port = int(str(value))
    except ValueError as error:
        raise SettingsError(f"{source} must be a port number, got {value!r}") from error
    if not 0 < port < 65536:
        raise SettingsError(f"{source} must be between 1 and 65535, got {port}")
    return port


def _parse_flag(value: str, source: str) -> bool:
    word = value.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise SettingsError(f"{source} must be true or false, got {value!r}")


def _parse_secret(text: str, secret_arn: str) -> dict[str, Any]:
    try:
        secret = json.loads(text)
    except json.JSONDecodeError as error:
        raise SettingsError(f"secret {secret_arn} is not JSON: {error}") from error
    if not isinstance(secret, dict):
        raise SettingsError(f"secret {secret_arn} must be a JSON object with username and password")
    missing = [key for key in ("username", "password") if key not in secret]
    if missing:
        raise SettingsError(f"secret {secret_arn} lacks {', '.join(missing)}")
    return secret


def settings_from_env(
    env: Mapping[str, str], fetch_secret: Callable[[str], str] = fetch_secret_string
) -> DbSettings:
    """Build the settings: explicit variables, then the secret (if DB_SECRET_ARN), then defaults."""
    defaults = DbSettings()
    secret: dict[str, Any] = {}
    secret_arn = env.get("DB_SECRET_ARN", "").strip()
    if secret_arn:
        secret = _parse_secret(fetch_secret(secret_arn), secret_arn)

    def pick(variable: str, secret_key: str, default: str | None) -> str | None:
        if variable in env:
            return env[variable]
        if secret_key in secret and secret[secret_key] is not None:
            return str(secret[secret_key])
        return default

    host = pick("DB_HOST", "host", defaults.host) or defaults.host
    port_text = pick("DB_PORT", "port", str(defaults.port))
    tls_ca = env.get("DB_TLS_CA", "").strip() or None
    tls = _parse_flag(env.get("DB_TLS", ""), "DB_TLS") or tls_ca is not None
    return DbSettings(
        host=host,
        port=_parse_port(port_text, "DB_PORT" if "DB_PORT" in env else "the secret's port"),
        user=pick("DB_USER", "username", defaults.user) or defaults.user,
        password=pick("DB_PASSWORD", "password", defaults.password) or "",
        database=pick("DB_NAME", "dbname", None) or None,
        tls=tls,
        tls_ca=tls_ca,
    )


def tls_context(settings: DbSettings) -> ssl.SSLContext | None:
    """A verifying TLS context (CA bundle if given, else the system store), or None without TLS."""
    if not settings.tls:
        return None
    if settings.tls_ca is not None and not Path(settings.tls_ca).is_file():
        raise SettingsError(f"DB_TLS_CA {settings.tls_ca!r} is not a file: the server cannot be verified")
    context = ssl.create_default_context(cafile=settings.tls_ca)
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def connect(settings: DbSettings, *, autocommit: bool = False) -> pymysql.connections.Connection[Any]:
    """Open a connection in strict SQL mode (a bad value is an error, never a silent truncation)."""
    return pymysql.connect(
        host=settings.host,
        port=settings.port,
        user=settings.user,
        password=settings.password,
        database=settings.database,
        ssl=tls_context(settings),
        # Without this PyMySQL would negotiate TLS that verifies nothing whenever the server offers it.
        ssl_disabled=not settings.tls,
        charset="utf8mb4",
        autocommit=autocommit,
        local_infile=False,
        init_command="SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ZERO_DATE,NO_ENGINE_SUBSTITUTION'",
        connect_timeout=10,
    )


def rollback_quietly(connection: pymysql.connections.Connection[Any]) -> None:
    """Roll back after a failure without hiding it.

    When the failure was a lost connection, ROLLBACK cannot be sent (the server rolls the
    transaction back itself) and pymysql would raise ``InterfaceError(0, '')``, which would replace
    the error that says what happened.
    """
    if not connection.open:
        return
    with contextlib.suppress(pymysql.MySQLError, OSError):
        connection.rollback()
