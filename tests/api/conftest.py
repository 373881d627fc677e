from __future__ import annotations

import copy
import io
import json
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from lambdas.api.app import ScoringApi, create_api
from lambdas.api.observability import logger
from lambdas.api.settings import Settings
from lambdas.api.wiring import LambdaHandler, make_handler
from lambdas.audit import API_DECISIONS
from lambdas.local_context import LocalLambdaContext
from lambdas.scoring.runtime import ScoringModel
from localapi.server import _make_request_handler
from tests.conftest import captured_log
from tests.scoring.bundles import MODEL_VERSION, write_logistic_bundle

EVENTS_DIR = Path(__file__).resolve().parents[1] / "events"
REPO_ROOT = Path(__file__).resolve().parents[2]


def api_context() -> LocalLambdaContext:
    """The context Lambda would pass the API function (a fixed request id, so log lines are comparable)."""
    return LocalLambdaContext("loan-scoring-api", aws_request_id="8f5c2a7e-0000-4000-8000-000000000001")


def stored_event(name: str) -> dict[str, Any]:
    return copy.deepcopy(json.loads((EVENTS_DIR / name).read_text()))


# CloudWatch Logs' largest event (UTF-8 bytes of the message, plus 26 bytes it counts for each event).
MAX_EVENT_BYTES = 256 * 1024 - 26


def batch_audit_lines(api: ScoringApi, applications: list[dict[str, Any]]) -> list[str]:
    """Score ``applications`` in one POST /v1/score/batch through the Lambda handler and return its
    audit lines ("scored batch"), each checked to fit one CloudWatch Logs event (a longer line is cut,
    is no longer JSON and drops out of the trail)."""
    event = stored_event("score_batch.json")
    event["body"] = json.dumps({"applications": applications})
    with captured_log(logger) as log:
        result = make_handler(api)(event, api_context())  # type: ignore[arg-type]
    assert result["statusCode"] == 200, result
    lines = [line for line in log.getvalue().splitlines() if f'"message":"{API_DECISIONS}"' in line]
    assert lines, "no audit line"
    assert max(len(line.encode()) for line in lines) <= MAX_EVENT_BYTES
    return lines


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
    with captured_log(logger) as buffer:
        yield buffer


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


def raw_request(server_url: str, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """One request written byte for byte (what requests would refuse to send), the write side then
    closed; the answer's status, headers and body."""
    host, port = server_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(request)
        connection.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head, "the server closed the connection without an answer"
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in header_lines)
    return int(status_line.split()[1]), headers, body


@pytest.fixture
def in_process_server() -> Iterator[Any]:
    """Start a local API server in this process around a given handler function (the toy bundle's
    model version); stopped at the end."""
    servers: list[ThreadingHTTPServer] = []

    def start(handler: Any) -> str:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _make_request_handler(handler, MODEL_VERSION))
        servers.append(server)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{server.server_port}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()
