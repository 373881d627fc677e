"""How the loader negotiates TLS: verified or not at all, never TLS that verifies nothing."""

from __future__ import annotations

import socket
import struct
import threading
from pathlib import Path
from typing import Any

import pymysql
import pytest
from pymysql.constants import CLIENT

from training.dataload.connection import DbSettings, SettingsError, connect


def _handshake_offering_tls() -> bytes:
    """A MariaDB 10.11 initial handshake (protocol 10) whose capabilities include CLIENT.SSL."""
    capabilities = CLIENT.PROTOCOL_41 | CLIENT.SECURE_CONNECTION | CLIENT.PLUGIN_AUTH | CLIENT.SSL
    payload = (
        b"\x0a"
        + b"10.11.16-MariaDB\x00"
        + struct.pack("<I", 7)  # connection id
        + b"abcdefgh\x00"  # scramble, first part
        + struct.pack("<H", capabilities & 0xFFFF)
        + b"\x2d"  # utf8mb4
        + struct.pack("<H", 2)  # status: autocommit
        + struct.pack("<H", capabilities >> 16)
        + b"\x15"  # scramble length
        + b"\x00" * 10
        + b"ijklmnopqrst\x00"  # scramble, second part
        + b"mysql_native_password\x00"
    )
    return struct.pack("<I", len(payload))[:3] + b"\x00" + payload


def _client_flags_sent_to_a_server_offering_tls(settings: DbSettings) -> int:
    """Connect to a one-shot server that offers TLS; return the capability flags the client answers
    with (CLIENT.SSL set means it asked to switch to TLS)."""
    listener = socket.create_server(("127.0.0.1", 0))
    answer: dict[str, bytes] = {}

    def serve() -> None:
        connection, _ = listener.accept()
        with connection:
            connection.sendall(_handshake_offering_tls())
            answer["packet"] = connection.recv(4096)

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    port = listener.getsockname()[1]
    with pytest.raises((pymysql.MySQLError, OSError)):  # the server hangs up after the first answer
        connect(DbSettings("127.0.0.1", port, "loader", "pw", None, settings.tls, settings.tls_ca))
    server.join(timeout=10)
    listener.close()
    flags: int = struct.unpack("<I", answer["packet"][4:8])[0]
    return flags


def test_given_tls_off_when_the_server_offers_tls_then_no_unverified_tls_is_negotiated() -> None:
    # Given TLS off (DB_TLS unset), when the server offers TLS, then the client does not switch to a
    # TLS session that would check no certificate: plain means plain (and RDS, which requires TLS,
    # refuses it, so a missing DB_TLS shows up instead of passing unverified)
    assert not _client_flags_sent_to_a_server_offering_tls(DbSettings(tls=False)) & CLIENT.SSL


def test_given_tls_on_when_the_server_offers_tls_then_the_client_asks_for_it() -> None:
    assert _client_flags_sent_to_a_server_offering_tls(DbSettings(tls=True)) & CLIENT.SSL


def test_given_tls_off_then_the_local_server_is_reached_over_plain_tcp(mariadb_settings: Any) -> None:
    connection = connect(mariadb_settings)
    try:
        assert connection.ssl is False
        cursor = connection.cursor()
        cursor.execute("SELECT 1")
        assert cursor.fetchone() == (1,)
    finally:
        connection.close()


def test_given_a_ca_bundle_that_is_not_there_then_the_error_names_it(tmp_path: Path) -> None:
    # Given DB_TLS_CA pointing at a file the image lacks, then the loader says so before connecting
    missing = str(tmp_path / "rds-global-bundle.pem")
    with pytest.raises(SettingsError, match=r"DB_TLS_CA .*rds-global-bundle\.pem.* is not a file"):
        connect(DbSettings("127.0.0.1", 1, "loader", "pw", None, True, missing))
