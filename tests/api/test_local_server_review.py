"""The local server's edges found in review: slow or idle clients, body framing, handler faults, the CLI.

Each test names what API Gateway does and checks the local server does the same (or answers in the
API's error format where API Gateway would never invoke the function).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import requests

from localapi.server import main, proxy_event
from tests.api.conftest import raw_request
from tests.scoring.bundles import MODEL_VERSION, good_application

REPO_ROOT = Path(__file__).resolve().parents[2]


def _address(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


POST_HEAD = b"POST /v1/score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"


def _score_body() -> bytes:
    return json.dumps({"features": good_application()}).encode()


@pytest.mark.parametrize(
    "stalled",
    [
        b"",  # connected, nothing sent (a browser's preconnect)
        POST_HEAD + b"Content-Length: 100\r\n\r\n{",
    ],
    ids=["idle-connection", "body-pending"],
)
def test_given_a_stalled_connection_when_another_client_calls_then_it_is_answered(
    server_url: str, stalled: bytes
) -> None:
    with socket.create_connection(_address(server_url), timeout=10) as connection:
        connection.sendall(stalled)
        # Before: the single-threaded server waited on the stalled client forever; this timed out.
        response = requests.get(f"{server_url}/v1/health", timeout=10)
    assert response.status_code == 200
    assert response.json()["model_version"] == MODEL_VERSION


def test_given_a_body_shorter_than_its_content_length_when_the_client_stops_then_the_function_is_not_invoked(
    server_url: str,
) -> None:
    # Given a complete application, declared 50 bytes longer than sent: API Gateway never invokes the
    # function with part of a body (before, the truncated body was scored: 200).
    body = _score_body()
    request = POST_HEAD + f"Content-Length: {len(body) + 50}\r\n\r\n".encode() + body
    status, _, answer = raw_request(server_url, request)
    assert status == 400
    assert json.loads(answer)["error"]["code"] == "bad_request"


@pytest.mark.parametrize(
    "framing",
    [
        b"Content-Length: \xb2",  # '\u00b2'.isdigit() is True, int() refuses it: the connection was dropped
        b"Content-Length: 2\r\nContent-Length: 5",  # conflicting lengths: the first one was used
    ],
    ids=["superscript-digit", "conflicting-lengths"],
)
def test_given_an_unusable_content_length_when_sent_then_400_in_the_error_format(
    server_url: str, framing: bytes
) -> None:
    request = POST_HEAD + framing + b"\r\n\r\n{}abc"
    status, _, answer = raw_request(server_url, request)
    assert status == 400
    assert json.loads(answer)["error"]["code"] == "bad_request"
    assert requests.get(f"{server_url}/v1/health", timeout=10).status_code == 200


def test_given_a_lower_case_user_agent_when_the_event_is_built_then_identity_has_it() -> None:
    # HTTP header names are case-insensitive; fetch and HTTP/2 clients send them in lower case.
    event = proxy_event("GET", "/v1/health", {"user-agent": ["node"]}, b"", "127.0.0.1")
    assert event["requestContext"]["identity"]["userAgent"] == "node"


def test_given_a_handler_that_raises_when_called_then_502_in_the_error_format_and_the_server_lives_on(
    in_process_server: Any,
) -> None:
    calls: list[str] = []

    def failing_then_ok(event: Mapping[str, Any], context: Any) -> dict[str, Any]:
        calls.append(event["path"])
        if len(calls) == 1:
            raise RuntimeError("out of memory, say")
        return {"statusCode": 204, "headers": {}, "body": ""}

    url = in_process_server(failing_then_ok)
    # API Gateway answers a failed invocation with 502 (before: the connection was dropped, no answer).
    response = requests.get(f"{url}/v1/health", timeout=10)
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "internal_error"
    assert "out of memory" not in response.text
    # Answered by API Gateway, not by a model: none is named
    assert response.json()["model_version"] is None
    assert "X-Model-Version" not in response.headers
    assert response.json()["error"]["request_id"] == response.headers["X-Request-Id"]
    assert requests.get(f"{url}/v1/health", timeout=10).status_code == 204


def test_given_concurrent_requests_when_served_then_the_handler_runs_one_at_a_time(
    in_process_server: Any,
) -> None:
    running = 0
    most = 0
    guard = threading.Lock()

    def slow(event: Mapping[str, Any], context: Any) -> dict[str, Any]:
        nonlocal running, most
        with guard:
            running += 1
            most = max(most, running)
        time.sleep(0.05)  # long enough for the other requests to arrive meanwhile
        with guard:
            running -= 1
        return {"statusCode": 200, "headers": {}, "body": "ok"}

    url = in_process_server(slow)
    statuses: list[int] = []

    def call() -> None:
        # A route the stage has: "/" has no method there, API Gateway's 403 never invokes the handler
        statuses.append(requests.get(f"{url}/v1/health", timeout=10).status_code)

    clients = [threading.Thread(target=call) for _ in range(4)]
    for client in clients:
        client.start()
    for client in clients:
        client.join()
    assert statuses == [200] * 4
    assert most == 1  # one Lambda execution environment: never two invocations at once


def test_given_a_port_in_use_when_starting_then_a_clear_error_and_no_traceback(api_bundle: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "localapi", "--port", str(port), "--bundle", str(api_bundle)],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode == 1
    assert f"error: cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


def test_given_a_port_beyond_65535_when_starting_then_a_usage_error(
    api_bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--port", "70000", "--bundle", str(api_bundle)])
    assert exit_info.value.code == 2
    assert "70000 is not a TCP port" in capsys.readouterr().err
