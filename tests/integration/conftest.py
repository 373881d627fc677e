"""Integration fixtures: a real MariaDB and a moto S3/SQS/... server reached over HTTP.

MariaDB
    ``mariadb_settings`` (session): settings of the server on 127.0.0.1:3306 (root, empty
    password; override with LOAN_TEST_DB_HOST / LOAN_TEST_DB_PORT / LOAN_TEST_DB_USER /
    LOAN_TEST_DB_PASSWORD). Without a server the tests SKIP with the reason shown by ``-ra``;
    with ``CI=true`` they FAIL instead, because CI must run them.
    ``mariadb_database`` (per test): the name of a fresh, empty database, dropped afterwards.
    ``mariadb_connection`` (per test): a pymysql connection (autocommit off) whose default
    database is ``mariadb_database``; it is closed before the database is dropped.

AWS emulator
    ``moto_endpoint`` (session): starts ``python -m moto.server`` in a subprocess on a free
    port of 127.0.0.1 and yields its URL. For the whole session it sets ``AWS_ENDPOINT_URL``
    (which boto3 >= 1.28 honours for every service), dummy credentials and ``us-east-1``, so any
    boto3 client made by the code under test goes to the emulator over real HTTP. State is shared
    by the session: give each test its own bucket/queue names (``s3_bucket`` does).
    ``s3_client`` (per test): a boto3 S3 client on the endpoint.
    ``s3_bucket`` (per test): a new, uniquely named bucket.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest

from localapi.background import LOOPBACK, background_server, free_loopback_port
from training.dataload.connection import DbSettings, connect

# ---------------------------------------------------------------------------------------------
# MariaDB
# ---------------------------------------------------------------------------------------------


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


@pytest.fixture(scope="session")
def mariadb_settings() -> DbSettings:
    settings = DbSettings(
        host=os.environ.get("LOAN_TEST_DB_HOST", "127.0.0.1"),
        port=int(os.environ.get("LOAN_TEST_DB_PORT", "3306")),
        user=os.environ.get("LOAN_TEST_DB_USER", "root"),
        password=os.environ.get("LOAN_TEST_DB_PASSWORD", ""),
    )
    try:
        connect(settings, autocommit=True).close()
    except pymysql.MySQLError as error:
        reason = f"no MariaDB answers on {settings.host}:{settings.port} as {settings.user}: {error}"
        if _in_ci():
            pytest.fail(f"CI=true needs MariaDB for the integration tests; {reason}")
        pytest.skip(reason)
    return settings


@pytest.fixture
def mariadb_database(mariadb_settings: DbSettings, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh database named after the test, dropped afterwards (also when the test fails)."""
    name = f"it_{request.node.name[:30]}_{uuid.uuid4().hex[:8]}".lower()
    name = "".join(character if character.isalnum() or character == "_" else "_" for character in name)
    admin = connect(mariadb_settings, autocommit=True)
    try:
        with admin.cursor() as cursor:
            # A connection left inside a transaction would block the DROP: fail after 30 s, never hang.
            cursor.execute("SET SESSION lock_wait_timeout = 30")
            cursor.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
        yield name
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
        admin.close()


@pytest.fixture
def mariadb_connection(
    mariadb_settings: DbSettings, mariadb_database: str
) -> Iterator[pymysql.connections.Connection[Any]]:
    """A connection whose default database is the test's database; closed before that is dropped."""
    connection = connect(mariadb_settings.with_database(mariadb_database))
    try:
        yield connection
    finally:
        connection.close()


# ---------------------------------------------------------------------------------------------
# moto server (AWS emulator over HTTP)
# ---------------------------------------------------------------------------------------------

MOTO_START_SECONDS = 30.0


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """URL of a moto server subprocess; AWS_* variables point boto3 at it for the session."""
    port = free_loopback_port()
    endpoint = f"http://{LOOPBACK}:{port}"
    command = [sys.executable, "-m", "moto.server", "-H", LOOPBACK, "-p", str(port)]
    with (
        background_server(command, f"{endpoint}/moto-api/", start_seconds=MOTO_START_SECONDS),
        pytest.MonkeyPatch.context() as patch,
    ):
        patch.setenv("AWS_ENDPOINT_URL", endpoint)
        patch.setenv("AWS_ACCESS_KEY_ID", "testing")
        patch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        patch.setenv("AWS_SESSION_TOKEN", "testing")
        patch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        patch.setenv("AWS_REGION", "us-east-1")
        patch.delenv("AWS_PROFILE", raising=False)
        yield endpoint


@pytest.fixture
def s3_client(moto_endpoint: str) -> Any:
    import boto3

    return boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")


@pytest.fixture
def s3_bucket(s3_client: Any) -> str:
    name = f"test-{uuid.uuid4().hex[:16]}"
    s3_client.create_bucket(Bucket=name)
    return name


@pytest.fixture
def mariadb_env(mariadb_settings: DbSettings, monkeypatch: pytest.MonkeyPatch) -> DbSettings:
    """The DB_* variables set as a container task gets them (the CLIs read their settings from env)."""
    monkeypatch.setenv("DB_HOST", mariadb_settings.host)
    monkeypatch.setenv("DB_PORT", str(mariadb_settings.port))
    monkeypatch.setenv("DB_USER", mariadb_settings.user)
    monkeypatch.setenv("DB_PASSWORD", mariadb_settings.password)
    return mariadb_settings


@pytest.fixture(params=["folder", "s3"])
def registry(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A model registry location, once as a local folder and once as a prefix of a new bucket."""
    if request.param == "folder":
        return str(tmp_path / "registry")
    bucket = request.getfixturevalue("s3_bucket")
    return f"s3://{bucket}/models"
