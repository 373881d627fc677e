from __future__ import annotations

import copy
import io
import json
import logging
import re
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from lambdas.api.app import ScoringApi, create_api
from lambdas.api.observability import logger
from lambdas.api.settings import Settings
from lambdas.api.wiring import LambdaHandler, make_handler
from lambdas.local_context import LocalLambdaContext
from lambdas.scoring.runtime import ScoringModel
from tests.scoring.bundles import write_logistic_bundle

EVENTS_DIR = Path(__file__).resolve().parents[1] / "events"
REPO_ROOT = Path(__file__).resolve().parents[2]


def api_context() -> LocalLambdaContext:
    """The context Lambda would pass the API function (a fixed request id, so log lines are comparable)."""
    return LocalLambdaContext("loan-scoring-api", aws_request_id="8f5c2a7e-0000-4000-8000-000000000001")


def stored_event(name: str) -> dict[str, Any]:
    return copy.deepcopy(json.loads((EVENTS_DIR / name).read_text()))


@pytest.fixture(scope="session")
def api_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_logistic_bundle(tmp_path_factory.mktemp("api-bundle") / "logistic")


def settings_for(bundle: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "model_bundle_dir": bundle,
        "model_bundle_uri": None,
        "log_applicant_values": False,
        "max_batch_applications": 5,
    }
    return Settings(**(values | overrides))


@pytest.fixture(scope="session")
def scoring_api(api_bundle: Path) -> ScoringApi:
    return create_api(ScoringModel.load_directory(api_bundle), settings_for(api_bundle))


@pytest.fixture(scope="session")
def handler(scoring_api: ScoringApi) -> LambdaHandler:
    return make_handler(scoring_api)


Invoke = Callable[[dict[str, Any]], tuple[int, dict[str, Any], dict[str, str]]]


@pytest.fixture
def invoke(handler: LambdaHandler) -> Invoke:
    """Call the handler like Lambda does; return status, JSON body and (flattened) headers."""

    def call(event: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
        result = handler(event, api_context())  # type: ignore[arg-type]
        headers = dict(result.get("headers") or {})
        for key, values in (result.get("multiValueHeaders") or {}).items():
            headers.setdefault(key, values[-1])
        return result["statusCode"], json.loads(result["body"]), headers

    return call


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    """The Powertools logger's JSON lines (its handler holds the stdout of import time, not capsys's)."""
    buffer = io.StringIO()
    handler = logger.registered_handler
    assert isinstance(handler, logging.StreamHandler)
    previous = handler.setStream(buffer)
    try:
        yield buffer
    finally:
        handler.setStream(previous)


@pytest.fixture(scope="module")
def server_url(api_bundle: Path) -> Iterator[str]:
    """`python -m localapi` on a free loopback port, serving the test bundle, for one test module."""
    process = subprocess.Popen(
        [sys.executable, "-m", "localapi", "--port", "0", "--bundle", str(api_bundle)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        first_line = process.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)", first_line)
        assert match, f"server did not start: {first_line!r}"
        # The handler logs to stdout: keep reading it so the pipe never fills and blocks the server.
        threading.Thread(target=process.stdout.read, daemon=True).start()
        yield f"http://127.0.0.1:{match.group(1)}"
    finally:
        process.terminate()
        process.wait(timeout=10)
