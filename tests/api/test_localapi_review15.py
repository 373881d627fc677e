"""The local server against the deployed API (review 15): what the handler and an HTTP client see.

The deployed stage (infra/serving.py) is a REST API with no binary media types, served over HTTP/1.1;
the local server must build the same events and speak the same HTTP, or a client or handler bug passes
locally and fails on AWS (or the reverse).
"""

from __future__ import annotations

import http.client
import io
import json
import socket
import struct
import threading
import time
from collections.abc import Mapping
from http.server import ThreadingHTTPServer
from typing import Any

import pytest
import requests

from infra.gateway_responses import GATEWAY_ERRORS, add_error_responses
from lambdas.api.app import ScoringApi
from lambdas.api.stage import MISSING_ROUTE_CODE, MISSING_ROUTE_MESSAGE, ROUTES, gateway_error_body
from localapi.server import MAX_BODY_BYTES, BodyError, _make_request_handler, proxy_event, read_chunked_body
from tests.api.conftest import Invoke, stored_event
from tests.scoring.bundles import MODEL_VERSION, good_application

LATIN1_APPLICATION = json.dumps(
    {"application_id": "Zo\u00eb", "features": good_application()}, ensure_ascii=False
).encode("latin-1")


def _address(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


def _read_until_closed(connection: socket.socket) -> bytes:
    answer = b""
    while chunk := connection.recv(65536):
        answer += chunk
    return answer


def _score_head(length: int, *extra: str) -> bytes:
    lines = [
        "POST /v1/score HTTP/1.1",
        "Host: x",
        "Content-Type: application/json",
        f"Content-Length: {length}",
    ]
    return ("\r\n".join([*lines, *extra]) + "\r\n\r\n").encode()


# ---- the event ------------------------------------------------------------------------------------


def test_given_a_body_that_is_not_utf8_when_the_event_is_built_then_it_is_text_as_api_gateway_sends() -> None:
    # Given Latin-1 bytes posted as JSON. The stage has no binaryMediaTypes, so API Gateway passes every
    # body as UTF-8 text (isBase64Encoded false), undecodable bytes replaced; before, the local event was
    # base64 and the handler refused it, while the deployed function scored it under a mangled id.
    event = proxy_event(
        "POST", "/v1/score", {"Content-Type": ["application/json"]}, LATIN1_APPLICATION, "::1"
    )
    assert event["isBase64Encoded"] is False
    assert json.loads(event["body"])["application_id"] == "Zo\ufffd"


def test_given_latin1_bytes_as_api_gateway_passes_them_when_scored_then_400_not_utf8(invoke: Invoke) -> None:
    event = stored_event("score.json")
    event["body"] = LATIN1_APPLICATION.decode("utf-8", errors="replace")
    status, body, _ = invoke(event)
    assert (status, body["error"]["code"]) == (400, "malformed_json")


def test_given_a_trailing_slash_when_the_event_is_built_then_resource_is_the_route_and_path_as_sent() -> None:
    # API Gateway routes /v1/health/ to the /v1/health resource and passes the path as sent.
    event = proxy_event("GET", "/v1/health/", {}, b"", "127.0.0.1")
    assert (event["path"], event["resource"]) == ("/v1/health/", "/v1/health")
    context = event["requestContext"]
    assert (context["path"], context["resourcePath"]) == ("/local/v1/health/", "/v1/health")


# ---- HTTP/1.1: persistent connections, pipelining, 100-continue -----------------------------------


def test_given_two_pipelined_requests_when_sent_on_one_connection_then_both_are_answered(
    server_url: str,
) -> None:
    # Before: HTTP/1.0 answers, the connection closed after the first; the second request was dropped.
    request = b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n"
    with socket.create_connection(_address(server_url), timeout=10) as connection:
        connection.sendall(request * 2)
        connection.shutdown(socket.SHUT_WR)
        answer = _read_until_closed(connection)
    assert answer.count(b"HTTP/1.1 200 OK\r\n") == 2


def test_given_a_keep_alive_client_when_it_calls_three_times_then_one_connection_serves_them(
    server_url: str,
) -> None:
    host, port = _address(server_url)
    client = http.client.HTTPConnection(host, port, timeout=10)
    sockets = []
    try:
        for _ in range(3):
            client.request("GET", "/v1/health")
            response = client.getresponse()
            assert json.loads(response.read())["model_version"] == MODEL_VERSION
            sockets.append(client.sock)
    finally:
        client.close()
    assert sockets[0] is not None
    assert sockets == [sockets[0]] * 3


def test_given_expect_100_continue_when_posting_then_the_server_says_continue_before_the_body(
    server_url: str,
) -> None:
    # curl sends Expect: 100-continue with bodies over 1 MB (a large batch) and waited a second for it.
    body = json.dumps({"features": good_application()}).encode()
    with socket.create_connection(_address(server_url), timeout=10) as connection:
        connection.sendall(_score_head(len(body), "Expect: 100-continue"))
        connection.settimeout(2)
        try:
            interim = connection.recv(100)
        except TimeoutError:
            interim = b""  # before: no 100 Continue, the client waits (curl: one second)
        connection.settimeout(10)
        connection.sendall(body)
        connection.shutdown(socket.SHUT_WR)
        answer = _read_until_closed(connection)
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")


def test_given_expect_100_continue_and_a_body_too_large_when_sent_then_413_and_no_continue(
    server_url: str,
) -> None:
    # The client is told not to send 6 MB the server would not read.
    with socket.create_connection(_address(server_url), timeout=10) as connection:
        connection.sendall(_score_head(6_000_000, "Expect: 100-continue"))
        answer = _read_until_closed(connection)
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert b"100 Continue" not in answer


# ---- answers of the gateway, not the function -----------------------------------------------------


def test_given_a_handler_that_raises_when_called_then_the_502_names_no_model_as_api_gateways_does(
    in_process_server: Any,
) -> None:
    def failing(event: Mapping[str, Any], context: Any) -> dict[str, Any]:
        raise RuntimeError("init failed")

    response = requests.get(f"{in_process_server(failing)}/v1/health", timeout=10)
    # API Gateway's 502 (infra/gateway_responses.py DEFAULT_5XX): no model answered, so model_version is
    # null and there is no X-Model-Version; a client that reads it as "model X failed" is misled.
    assert response.status_code == 502
    assert response.json()["model_version"] is None
    assert "X-Model-Version" not in response.headers
    assert response.json()["error"]["code"] == "internal_error"


def test_given_a_client_that_leaves_before_the_answer_when_it_is_written_then_one_log_line_no_traceback(
    in_process_server: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    def slow_and_large(event: Mapping[str, Any], context: Any) -> dict[str, Any]:
        time.sleep(0.3)  # the client is gone by now
        return {"statusCode": 200, "headers": {}, "body": "x" * 4_000_000}

    url = in_process_server(slow_and_large)
    with socket.create_connection(_address(url), timeout=10) as connection:
        connection.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # reset on close
    # Before: socketserver printed "Exception occurred during processing of request" and a traceback,
    # as if the server had failed (Ctrl-C on a curl, a browser leaving the page).
    err = ""
    deadline = time.monotonic() + 10
    while "left before the answer" not in err and time.monotonic() < deadline:
        time.sleep(0.05)
        err += capsys.readouterr().err
    assert "left before the answer" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/nothing"),
        ("GET", "/v1/score"),
        ("HEAD", "/v1/health"),
        ("OPTIONS", "/v1/score"),
        ("DELETE", "/v1/health"),
        ("GET", "/"),
        ("GET", "/v1"),
        ("GET", "/V1/health"),  # paths are case-sensitive
        ("GET", "//x/v1/health"),  # before: urlsplit took "x" for a host and served /v1/health
    ],
)
def test_given_a_route_the_stage_lacks_when_called_then_api_gateways_403(
    server_url: str, method: str, path: str
) -> None:
    response = requests.request(method, f"{server_url}{path}", timeout=10)
    assert response.status_code == 403
    # Answered before the function (infra/gateway_responses.py): no model named (a HEAD answer has no body)
    assert "X-Model-Version" not in response.headers
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    request_id = response.headers["X-Request-Id"]
    if method == "HEAD":
        assert response.content == b""
        return
    # The body the gateway response template renders, its request id the header's
    assert response.json() == {
        "error": {
            "code": "not_found_or_unauthenticated",
            "message": MISSING_ROUTE_MESSAGE,
            "details": [],
            "request_id": request_id,
        },
        "model_version": None,
    }


class _RecordingApi:
    """Stands in for the RestApi: records the gateway response templates by response type."""

    def __init__(self) -> None:
        self.templates: dict[str, str] = {}

    def add_gateway_response(self, construct_id: str, **options: Any) -> None:
        self.templates[options["type"].response_type] = options["templates"]["application/json"]


def test_given_the_gateway_response_templates_when_rendered_then_they_are_the_local_bodies() -> None:
    # The deployed templates (infra/gateway_responses.py) and the local answers have one shape
    api = _RecordingApi()
    add_error_responses(api)  # type: ignore[arg-type]
    for error in GATEWAY_ERRORS:
        message = error.message or "API Gateway's own"
        template = api.templates[error.response_type.response_type]
        rendered = template.replace("$context.error.messageString", json.dumps(message))
        rendered = rendered.replace("$context.requestId", "req-1")
        assert json.loads(rendered) == gateway_error_body(error.code, message, "req-1"), error.code
    # And the 403 for a route the stage lacks carries the shared code and message
    template = api.templates["MISSING_AUTHENTICATION_TOKEN"]
    rendered = json.loads(template.replace("$context.requestId", "req-1"))
    assert rendered == gateway_error_body(MISSING_ROUTE_CODE, MISSING_ROUTE_MESSAGE, "req-1")
    assert rendered["error"]["code"] == "not_found_or_unauthenticated"


def test_given_a_route_the_stage_lacks_when_called_then_the_handler_is_never_invoked(
    in_process_server: Any,
) -> None:
    calls: list[str] = []

    def recording(event: Mapping[str, Any], context: Any) -> dict[str, Any]:
        calls.append(f"{event['httpMethod']} {event['path']}")
        return {"statusCode": 200, "headers": {}, "body": "ok"}

    url = in_process_server(recording)
    assert requests.get(f"{url}/v1/nothing", timeout=10).status_code == 403
    assert requests.head(f"{url}/v1/health", timeout=10).status_code == 403
    assert requests.get(f"{url}/v1/health/", timeout=10).status_code == 200  # routed to /v1/health
    assert calls == ["GET /v1/health/"]


def test_given_the_function_then_it_serves_exactly_the_stages_routes(scoring_api: ScoringApi) -> None:
    # The stage sends the function its routes only: a route on one side alone is a 403 or a dead route
    stage = {(route.method, route.path) for route in ROUTES}
    function = {
        (method, path) for path, methods in scoring_api._methods_by_path.items() for method in methods
    }
    assert function == stage


def test_given_a_403_then_a_pipelined_request_on_the_same_connection_is_still_answered(
    server_url: str,
) -> None:
    # API Gateway's 403 keeps the connection when no body is left unread
    request = b"GET /v1/nothing HTTP/1.1\r\nHost: x\r\n\r\nGET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n"
    with socket.create_connection(_address(server_url), timeout=10) as connection:
        connection.sendall(request)
        connection.shutdown(socket.SHUT_WR)
        answer = _read_until_closed(connection)
    assert answer.startswith(b"HTTP/1.1 403 ")
    assert answer.count(b"HTTP/1.1 200 OK\r\n") == 1


def test_given_a_body_to_a_route_the_stage_lacks_when_sent_then_403_and_the_body_is_not_taken_for_a_request(
    server_url: str,
) -> None:
    # The body looks like a request: answered as one, it would smuggle a second answer
    smuggled = b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n"
    request = (
        f"PUT /v1/score HTTP/1.1\r\nHost: x\r\nContent-Length: {len(smuggled)}\r\n\r\n".encode() + smuggled
    )
    with socket.create_connection(_address(server_url), timeout=10) as connection:
        connection.sendall(request)
        answer = _read_until_closed(connection)  # the server closes: no shutdown needed
    assert answer.startswith(b"HTTP/1.1 403 ")
    assert b"Connection: close\r\n" in answer
    assert b"200 OK" not in answer


def test_given_a_body_too_large_for_a_route_the_stage_lacks_then_the_web_acls_413_comes_first(
    server_url: str,
) -> None:
    # The web ACL sees the request before API Gateway looks for its route
    with socket.create_connection(_address(server_url), timeout=10) as connection:
        connection.sendall(b"POST /v1/nothing HTTP/1.1\r\nHost: x\r\nContent-Length: 5000000\r\n\r\n")
        answer = _read_until_closed(connection)
    assert answer.startswith(b"HTTP/1.1 413 ")


# ---- chunked request bodies -------------------------------------------------------------------------


def _chunked_head(*extra: str, path: str = "/v1/score") -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: x", "Content-Type: application/json", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _chunked(body: bytes, size: int) -> bytes:
    """``body`` in chunks of ``size`` bytes, then the last chunk."""
    pieces = [body[i : i + size] for i in range(0, len(body), size)]
    return b"".join(f"{len(piece):x}\r\n".encode() + piece + b"\r\n" for piece in pieces) + b"0\r\n\r\n"


def test_given_a_chunked_body_when_posted_then_it_is_scored(server_url: str) -> None:
    body = json.dumps({"features": good_application()}).encode()
    response = requests.post(
        f"{server_url}/v1/score", data=iter([body]), headers={"Content-Type": "application/json"}, timeout=10
    )
    assert response.request.headers["Transfer-Encoding"] == "chunked"
    assert response.status_code == 200
    framed = requests.post(
        f"{server_url}/v1/score", data=body, headers={"Content-Type": "application/json"}, timeout=10
    )
    assert response.json()["probability_of_default"] == framed.json()["probability_of_default"]


def test_given_many_chunks_with_extensions_and_a_trailer_when_posted_then_the_whole_body_is_scored(
    server_url: str,
) -> None:
    body = json.dumps({"application_id": "chunky", "features": good_application()}).encode()
    framed = _chunked(body, 7).replace(b"7\r\n", b"7;name=value\r\n", 1)
    trailer = framed.removesuffix(b"\r\n") + b"X-Checksum: 1\r\n\r\n"
    with socket.create_connection(_address(server_url), timeout=10) as connection:
        connection.sendall(_chunked_head("Transfer-Encoding: chunked") + trailer)
        connection.shutdown(socket.SHUT_WR)
        answer = _read_until_closed(connection)
    head, _, payload = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert json.loads(payload)["application_id"] == "chunky"


def test_given_expect_100_continue_and_a_chunked_body_when_posting_then_continue_then_scored(
    server_url: str,
) -> None:
    body = json.dumps({"features": good_application()}).encode()
    with socket.create_connection(_address(server_url), timeout=10) as connection:
        connection.sendall(_chunked_head("Transfer-Encoding: chunked", "Expect: 100-continue"))
        interim = connection.recv(100)
        connection.sendall(_chunked(body, 100))
        connection.shutdown(socket.SHUT_WR)
        answer = _read_until_closed(connection)
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")


@pytest.mark.parametrize(
    ("framing", "body", "status"),
    [
        # A chunk that alone reaches the web ACL's limit: refused before its data is read
        pytest.param(
            ("Transfer-Encoding: chunked",),
            f"{MAX_BODY_BYTES:x}\r\n".encode(),
            413,
            id="one-chunk-at-the-limit",
        ),
        pytest.param(("Transfer-Encoding: chunked",), b"zz\r\n{}\r\n0\r\n\r\n", 400, id="size-not-hex"),
        pytest.param(("Transfer-Encoding: chunked",), b"-2\r\n{}\r\n0\r\n\r\n", 400, id="negative-size"),
        pytest.param(
            ("Transfer-Encoding: chunked",), b"1\r\n{}\r\n0\r\n\r\n", 400, id="data-longer-than-size"
        ),
        pytest.param(("Transfer-Encoding: chunked",), b"2\n{}\r\n0\r\n\r\n", 400, id="bare-lf"),
        pytest.param(("Transfer-Encoding: chunked",), b"2\r\n{}\r\n", 400, id="no-last-chunk"),
        pytest.param(("Transfer-Encoding: chunked",), b"9" * 8200 + b"\r\n", 400, id="size-line-too-long"),
        pytest.param(
            ("Transfer-Encoding: chunked",), b"0\r\nno colon\r\n\r\n", 400, id="trailer-without-colon"
        ),
        pytest.param(
            ("Transfer-Encoding: chunked",),
            b"0\r\n" + b"X: 1\r\n" * 101 + b"\r\n",
            400,
            id="too-many-trailers",
        ),
        # Framing that is ambiguous or that API Gateway would not decode
        pytest.param(
            ("Transfer-Encoding: chunked", "Content-Length: 2"),
            b"2\r\n{}\r\n0\r\n\r\n",
            400,
            id="with-content-length",
        ),
        pytest.param(
            ("Transfer-Encoding: gzip, chunked",), b"2\r\n{}\r\n0\r\n\r\n", 400, id="gzip-then-chunked"
        ),
        pytest.param(
            ("Transfer-Encoding: chunked, chunked",), b"2\r\n{}\r\n0\r\n\r\n", 400, id="chunked-twice"
        ),
        pytest.param(("Transfer-Encoding: identity",), b"{}", 400, id="identity"),
    ],
)
def test_given_a_chunked_body_the_server_cannot_read_when_sent_then_a_json_error_and_no_invocation(
    in_process_server: Any, framing: tuple[str, ...], body: bytes, status: int
) -> None:
    calls: list[Any] = []

    def recording(event: Mapping[str, Any], context: Any) -> dict[str, Any]:
        calls.append(event)
        return {"statusCode": 200, "headers": {}, "body": "ok"}

    url = in_process_server(recording)
    with socket.create_connection(_address(url), timeout=10) as connection:
        connection.sendall(_chunked_head(*framing) + body)
        connection.shutdown(socket.SHUT_WR)
        answer = _read_until_closed(connection)
    head, _, payload = answer.partition(b"\r\n\r\n")
    assert head.startswith(f"HTTP/1.1 {status} ".encode()), head
    code = "request_too_large" if status == 413 else "bad_request"
    assert json.loads(payload)["error"]["code"] == code
    assert b"Connection: close\r\n" in head  # the rest of the body is not taken for a request
    assert calls == []
    assert requests.get(f"{url}/v1/health", timeout=10).status_code == 200


def test_given_chunks_that_add_up_to_the_limit_then_413_as_soon_as_they_reach_it() -> None:
    # Four chunks of 3 bytes under a 10-byte limit: the fourth is refused before its data is read
    stream = io.BytesIO(b"3\r\nabc\r\n" * 3 + b"3\r\n")
    with pytest.raises(BodyError) as raised:
        read_chunked_body(stream, max_bytes=10)
    assert (raised.value.status, raised.value.message) == (413, "The body must be smaller than 10 bytes")
    assert stream.read() == b""
    # And 9 bytes are read whole, their chunk extensions and trailer dropped
    framed = b"3;x=1\r\nabc\r\n6\r\ndefghi\r\n0\r\nX-Sum: 9\r\n\r\nnext"
    stream = io.BytesIO(framed)
    assert read_chunked_body(stream, max_bytes=10) == b"abcdefghi"
    assert stream.read() == b"next"  # a pipelined request after the body is left unread


def test_given_a_chunked_body_that_stalls_when_the_timeout_passes_then_the_connection_is_dropped() -> None:
    calls: list[Any] = []

    def recording(event: Mapping[str, Any], context: Any) -> dict[str, Any]:
        calls.append(event)
        return {"statusCode": 200, "headers": {}, "body": "ok"}

    handler = _make_request_handler(recording, MODEL_VERSION)
    # The server's own timeout, shortened for the test (SOCKET_TIMEOUT_SECONDS otherwise)
    short = type("ShortTimeout", (handler,), {"timeout": 0.5})
    server = ThreadingHTTPServer(("127.0.0.1", 0), short)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with socket.create_connection(("127.0.0.1", server.server_port), timeout=10) as connection:
            # Given a chunk that promises 100 bytes and sends 2, the connection left open
            connection.sendall(_chunked_head("Transfer-Encoding: chunked") + b"64\r\n{}")
            answer = _read_until_closed(connection)
    finally:
        server.shutdown()
        server.server_close()
    # Then the server closes it without invoking the function on part of a body
    assert answer == b""
    assert calls == []
