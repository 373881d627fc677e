"""Shared fixtures: where the public datasets live, and markers that skip with a visible reason."""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

import pytest
from aws_lambda_powertools import Logger
from moto.server import ThreadedMotoServer

from localapi.background import bypass_proxies_for_loopback

REPO_ROOT = Path(__file__).resolve().parents[1]
# The tests' servers (moto, the local API) are on 127.0.0.1: never through a proxy the machine sets.
bypass_proxies_for_loopback()


def shared_data_dir() -> Path:
    """The public datasets folder: $LOAN_SHARED_DATA, else ../shared/data beside the checkout."""
    configured = os.environ.get("LOAN_SHARED_DATA")
    return Path(configured) if configured else REPO_ROOT.parent / "shared" / "data"


def skip_unless_ci(reason: str) -> NoReturn:
    """Skip a test whose prerequisite is missing, with ``reason``; under ``CI=true`` fail instead, since
    CI must run every test (a skip there would pass what it never checked)."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true must run every test: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    folder = shared_data_dir()
    if not folder.is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI needs the shared datasets at {folder}")
        pytest.skip(f"shared datasets not found at {folder} (set LOAN_SHARED_DATA)")
    return folder


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """An S3 emulator (moto, in this process) on a free loopback port, for one test module. It shares
    its buckets with every other moto use in the process: name buckets so that no other test makes them."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@contextmanager
def captured_log(logger: Logger) -> Iterator[io.StringIO]:
    """A Powertools logger's JSON lines while the block runs (its handler holds the stdout of import
    time, so capsys does not see them)."""
    buffer = io.StringIO()
    handler = logger.registered_handler
    assert isinstance(handler, logging.StreamHandler)
    previous = handler.setStream(buffer)
    try:
        yield buffer
    finally:
        handler.setStream(previous)
