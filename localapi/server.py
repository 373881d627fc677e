"""Serve the scoring Lambda on 127.0.0.1: each HTTP request becomes an API Gateway REST proxy event.

    python -m localapi --port 8080 --bundle model_artifacts/credit_risk
    python -m localapi --print-sample > application.json     # a valid application for the bundle
    curl -s -H 'Content-Type: application/json' -d @application.json http://127.0.0.1:8080/v1/score

The event has the shape API Gateway (REST, Lambda proxy integration) sends: resource, path, method,
single and multi-value headers and query parameters, a request context with a fresh request id and
the caller's source IP, and the body as text (the stage has no binary media types, so bytes that are
not UTF-8 arrive replaced by U+FFFD, never base64). The proxy result is written back as the HTTP
response, over HTTP/1.1 as API Gateway speaks it (persistent connections, pipelining, 100-continue,
chunked request bodies). A path or method the stage has no route for (lambdas/api/stage.py) never
reaches the handler: API Gateway's own 403 answers it, as on AWS.
Requests are read concurrently (an idle or slow client blocks no one) and passed to the handler one at
a time, like one Lambda execution environment.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Final, Literal, Protocol
from urllib.parse import parse_qs, urlsplit

from pydantic import ValidationError

from lambdas.api.errors import (
    JSON_CONTENT_TYPE,
    REQUEST_ID_HEADER,
    SECURITY_HEADERS,
    error_response,
)
from lambdas.api.settings import SettingsError
from lambdas.api.stage import (
    MISSING_ROUTE_CODE,
    MISSING_ROUTE_MESSAGE,
    MISSING_ROUTE_STATUS,
    gateway_error_body,
    has_route,
)
from lambdas.api.wiring import LambdaHandler, create_handler
from lambdas.local_context import LocalLambdaContext
from lambdas.scoring.card import ModelCard
from lambdas.scoring.runtime import ModelBundleError

LOCAL_HOST = "127.0.0.1"
STAGE = "local"
# Bodies of this many bytes or more are refused with a 413, as the deployed API's web ACL does
# (infra/firewall.py: larger ones would not fit Lambda's 6 MB event); API Gateway's own limit is 10 MB.
# Chunked bodies too: the web ACL cannot see their size, but no such body fits Lambda's event either.
MAX_BODY_BYTES = 5_000_000
# A chunked body's framing: the longest chunk-size or trailer line, the most trailer fields (what
# http.client allows a header section).
MAX_FRAMING_LINE_BYTES = 8192
MAX_TRAILER_FIELDS = 100
CHUNKED: Final = "chunked"
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]+")
# A connection that sends nothing (a browser's preconnect) or stops mid-body is dropped after this.
SOCKET_TIMEOUT_SECONDS = 30.0
# Stable codes for the errors the server answers itself (as API Gateway would, before the function).
_SERVER_ERROR_CODES = {
    400: "bad_request",
    413: "request_too_large",  # the code API Gateway's and the web ACL's 413 carry
    414: "uri_too_long",
    431: "headers_too_large",
    501: "method_not_implemented",
    502: "internal_error",  # the function failed: API Gateway answers 502
    505: "http_version_not_supported",
}


class BodyError(Exception):
    """A request body that cannot be read as API Gateway reads it: answered with ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _Stream(Protocol):
    def read(self, size: int, /) -> bytes: ...
    def readline(self, size: int, /) -> bytes: ...


def read_chunked_body(stream: _Stream, max_bytes: int) -> bytes:
    """A chunked request body (RFC 9112, 7.1) from ``stream``; trailer fields are read and dropped.

    Raises BodyError: 413 as soon as the chunk sizes reach ``max_bytes`` (the rest is not read), 400
    for broken framing or a body that ends before its last chunk.
    """
    body = bytearray()
    while True:
        line = _framing_line(stream, "chunk size")
        size_text = line.split(b";", 1)[0].strip(b" \t")  # a chunk extension after ';' is ignored
        if not _CHUNK_SIZE.fullmatch(size_text):
            raise BodyError(400, f"A chunk must start with its size in hexadecimal (got {line[:40]!r})")
        size = int(size_text, 16)
        if size == 0:
            break
        if len(body) + size >= max_bytes:
            raise BodyError(413, f"The body must be smaller than {max_bytes} bytes")
        data = stream.read(size)
        if len(data) < size:
            raise BodyError(400, f"The chunked body ended inside a chunk ({len(data)} of {size} bytes)")
        body += data
        if stream.read(2) != b"\r\n":
            raise BodyError(400, f"A chunk of {size} bytes is not followed by CRLF (is its size right?)")
    for _ in range(MAX_TRAILER_FIELDS + 1):  # the fields and the empty line that ends them
        field = _framing_line(stream, "trailer")
        if not field:
            return bytes(body)
        if b":" not in field:
            raise BodyError(400, f"A trailer field must be 'name: value' (got {field[:40]!r})")
    raise BodyError(400, f"The chunked body has more than {MAX_TRAILER_FIELDS} trailer fields")


def _framing_line(stream: _Stream, what: str) -> bytes:
    """One CRLF-terminated line of a chunked body's framing, without its CRLF."""
    line = stream.readline(MAX_FRAMING_LINE_BYTES + 1)
    if line.endswith(b"\r\n"):
        return line[:-2]
    if len(line) > MAX_FRAMING_LINE_BYTES:
        raise BodyError(
            400, f"A {what} line of the chunked body is longer than {MAX_FRAMING_LINE_BYTES} bytes"
        )
    if not line or not line.endswith(b"\n"):
        raise BodyError(400, f"The chunked body ended before its last chunk (in a {what} line)")
    raise BodyError(400, f"A {what} line of the chunked body must end with CRLF, not a bare LF")


def _split_target(raw_path: str) -> tuple[str, str]:
    """The path and query of a request target. Origin-form ('/...') is split at '?' only: urlsplit
    would take '//host/v1/score' for a host and the path /v1/score."""
    if raw_path.startswith("/"):
        path, _, query = raw_path.partition("?")
        return path, query
    split = urlsplit(raw_path)  # absolute-form, as sent to a proxy
    return split.path or "/", split.query


def resource_of(raw_path: str) -> str:
    """The resource API Gateway matches a request target to: it routes /v1/health/ to /v1/health (the
    routes have no parameters)."""
    return _split_target(raw_path)[0].rstrip("/") or "/"


def proxy_event(
    method: str, raw_path: str, headers: Mapping[str, list[str]], body: bytes, source_ip: str
) -> dict[str, Any]:
    """An API Gateway REST (v1) Lambda proxy event for one HTTP request."""
    path, query_text = _split_target(raw_path)
    resource = resource_of(raw_path)
    query = parse_qs(query_text, keep_blank_values=True)
    # Without binary media types API Gateway passes any body as UTF-8 text, undecodable bytes replaced: the
    # handler must see what the deployed function sees, not a base64 body it never gets there.
    text_body = body.decode("utf-8", errors="replace") if body else None
    now = datetime.now(UTC)
    return {
        "resource": resource,
        "path": path,
        "httpMethod": method,
        "headers": {name: values[-1] for name, values in headers.items()} or None,
        "multiValueHeaders": dict(headers) or None,
        "queryStringParameters": {k: v[-1] for k, v in query.items()} or None,
        "multiValueQueryStringParameters": query or None,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {
            "resourcePath": resource,
            "httpMethod": method,
            "path": f"/{STAGE}{path}",
            "stage": STAGE,
            "accountId": "000000000000",
            "apiId": "local",
            "protocol": "HTTP/1.1",
            "requestId": str(uuid.uuid4()),
            "extendedRequestId": str(uuid.uuid4()),
            "requestTime": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "requestTimeEpoch": int(now.timestamp() * 1000),
            "domainName": LOCAL_HOST,
            "identity": {"sourceIp": source_ip, "userAgent": _last_value(headers, "User-Agent")},
        },
        "body": text_body,
        "isBase64Encoded": False,
    }


def _last_value(headers: Mapping[str, list[str]], name: str) -> str | None:
    """A header's last value, its name matched in any case (clients differ: curl vs fetch)."""
    values = [value for key, values in headers.items() if key.lower() == name.lower() for value in values]
    return values[-1] if values else None


def _make_request_handler(lambda_handler: LambdaHandler, model_version: str) -> type[BaseHTTPRequestHandler]:
    # One execution environment runs one invocation at a time (and Powertools' logger and metrics are
    # per-process state): connections are served in threads, the handler under this lock.
    invocation_lock = threading.Lock()

    class ProxyRequestHandler(BaseHTTPRequestHandler):
        server_version = "loan-scoring-local/1.0"
        # As API Gateway: persistent connections and pipelining (HTTP/1.0 closed after each answer and
        # dropped a pipelined request), and 100 Continue for a client that waits for it (curl, > 1 MB).
        protocol_version = "HTTP/1.1"
        timeout = SOCKET_TIMEOUT_SECONDS
        _expects_continue = False

        def handle_expect_100(self) -> bool:
            # Deferred to _proxy: a body that would be refused (413, 403) is answered instead of invited.
            self._expects_continue = True
            return True

        def _proxy(self) -> None:
            expects_continue, self._expects_continue = self._expects_continue, False
            framing = self._body_framing()
            if framing is None:
                return  # answered
            # The web ACL's 413 (above) comes first; then API Gateway answers a route it lacks itself.
            if not has_route(self.command, resource_of(self.path)):
                # A path or method the stage lacks: the function never runs.
                self._answer_as_gateway(
                    MISSING_ROUTE_STATUS, MISSING_ROUTE_CODE, MISSING_ROUTE_MESSAGE, close=framing != 0
                )
                return
            if expects_continue and framing:
                super().handle_expect_100()
            try:
                body = (
                    self._read(framing)
                    if isinstance(framing, int)
                    else read_chunked_body(self.rfile, MAX_BODY_BYTES)
                )
            except BodyError as error:
                self.send_error(error.status, error.message)
                return
            headers: dict[str, list[str]] = {}
            for name, value in self.headers.items():
                headers.setdefault(name, []).append(value)
            event = proxy_event(self.command, self.path, headers, body, self.client_address[0])
            context = LocalLambdaContext("loan-scoring-api-local", remaining_millis=15_000)
            try:
                with invocation_lock:
                    result = lambda_handler(event, context)  # type: ignore[arg-type]
            except Exception:  # a failed invocation is API Gateway's 502, not a dropped connection
                self.log_error("the handler raised:\n%s", traceback.format_exc())
                self.send_error(502, "Internal server error")
                return
            self._write(result)

        def _read(self, length: int) -> bytes:
            body = self.rfile.read(length) if length else b""
            if len(body) < length:  # the client closed early: API Gateway never invokes with part of a body
                raise BodyError(400, f"The body ended after {len(body)} of {length} bytes (Content-Length)")
            return body

        def _body_framing(self) -> int | Literal["chunked"] | None:
            """The body's length from Content-Length, CHUNKED, or None after answering a request whose
            body cannot be read as API Gateway would (ambiguous framing, a bad length, too large)."""
            encodings = self.headers.get_all("Transfer-Encoding")
            if encodings is not None:
                codings = [coding.strip().lower() for value in encodings for coding in value.split(",")]
                if self.headers.get_all("Content-Length"):  # which one frames the body (request smuggling)?
                    self.send_error(400, "Send either Transfer-Encoding or Content-Length, not both")
                    return None
                if codings != [CHUNKED]:
                    self.send_error(400, f"Transfer-Encoding must be chunked (got {', '.join(encodings)!r})")
                    return None
                return CHUNKED
            declared = {value.strip() for value in self.headers.get_all("Content-Length") or ["0"]}
            if len(declared) > 1:  # which one frames the body is ambiguous (request smuggling)
                self.send_error(400, f"Conflicting Content-Length headers: {', '.join(sorted(declared))}")
                return None
            (length,) = declared
            # ASCII digits only: str.isdigit also accepts '²' and other digits int() refuses or reads.
            if not (length.isascii() and length.isdigit()):
                self.send_error(400, f"Content-Length must be a non-negative integer (got {length!r})")
                return None
            if int(length) >= MAX_BODY_BYTES:
                self.send_error(413, f"The body must be smaller than {MAX_BODY_BYTES} bytes")
                return None
            return int(length)

        def _answer_as_gateway(self, status: int, code: str, message: str, *, close: bool) -> None:
            """An answer API Gateway gives itself (infra/gateway_responses.py): the function gave none, so
            no model is named. ``close``: a body left unread must not be taken for the next request."""
            request_id = str(uuid.uuid4())
            headers = {"Content-Type": JSON_CONTENT_TYPE, REQUEST_ID_HEADER: request_id, **SECURITY_HEADERS}
            if close:
                self.close_connection = True
                headers["Connection"] = "close"
            body = gateway_error_body(code, message, request_id)
            self._write({"statusCode": status, "headers": headers, "body": json.dumps(body)})

        def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
            """Errors of the server itself (bad request line, unknown method, the checks above) in the
            API's JSON error format rather than http.server's HTML page."""
            status = HTTPStatus(code)
            error_code, text = _SERVER_ERROR_CODES.get(code, "bad_request"), message or status.phrase
            if status is HTTPStatus.BAD_GATEWAY:  # API Gateway's own answer to a failed function
                self._answer_as_gateway(code, error_code, text, close=True)
                return
            response = error_response(
                status, error_code, text, request_id=str(uuid.uuid4()), model_version=model_version
            )
            body, headers = str(response.body), dict(response.headers)
            self.close_connection = True  # the unread body, if any, must not be taken for a request
            self._write(
                {
                    "statusCode": response.status_code,
                    "headers": {"Content-Type": JSON_CONTENT_TYPE, "Connection": "close", **headers},
                    "body": body,
                }
            )

        def _write(self, result: Mapping[str, Any]) -> None:
            raw = result.get("body") or ""
            payload = base64.b64decode(raw) if result.get("isBase64Encoded") else str(raw).encode()
            self.send_response(int(result["statusCode"]))
            sent: set[str] = set()
            for name, values in (result.get("multiValueHeaders") or {}).items():
                for value in values:
                    self.send_header(name, str(value))
                sent.add(name.lower())
            for name, value in (result.get("headers") or {}).items():
                if name.lower() not in sent and name.lower() != "content-length":
                    self.send_header(name, str(value))
            self.send_header("Content-Length", str(len(payload)))
            try:
                self.end_headers()
                if self.command != "HEAD":  # HEAD: the headers of the answer, never a body
                    self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                # The client's doing (Ctrl-C on curl), not a server fault: one line, not a traceback.
                self.close_connection = True
                self.log_error("the client left before the answer was sent")

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = _proxy  # noqa: N815

        def log_message(self, format: str, *args: Any) -> None:
            sys.stderr.write(f"{time.strftime('%H:%M:%S')} {self.address_string()} {format % args}\n")

    return ProxyRequestHandler


def serve(bundle: Path, port: int) -> int:
    lambda_handler = create_handler({**os.environ, "MODEL_BUNDLE_DIR": str(bundle.resolve())})
    model_version = ModelCard.model_validate_json((bundle / "model_card.json").read_bytes()).model_version
    try:
        server = ThreadingHTTPServer((LOCAL_HOST, port), _make_request_handler(lambda_handler, model_version))
    except OSError as error:  # mostly: the port is in use
        print(f"error: cannot listen on {LOCAL_HOST}:{port}: {error.strerror or error}", file=sys.stderr)
        return 1
    print(f"Serving the scoring API on http://{LOCAL_HOST}:{server.server_port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def sample_application(card_file: Path) -> dict[str, Any]:
    """A valid application for any card: each feature at its baseline (median or mode), numbers then
    raised by half (within the card's range) so that some features move the risk and reasons show."""
    card = ModelCard.model_validate_json(card_file.read_bytes())
    features: dict[str, Any] = {}
    for feature in card.features:
        value = card.reference.reason_baseline[feature.name]
        if feature.type in ("number", "integer") and isinstance(value, int | float):
            value = value * 1.5
            if feature.maximum is not None:
                value = min(value, feature.maximum)
            value = round(value) if feature.type == "integer" else round(float(value), 4)
        elif feature.type == "boolean" and value is not None:
            value = bool(value)
        features[feature.name] = value
    return {"application_id": "demo-0001", "features": features}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localapi", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=_port, default=8080, help="0 picks a free port (printed)")
    parser.add_argument("--bundle", type=Path, default=Path("model_artifacts/credit_risk"))
    parser.add_argument(
        "--print-sample", action="store_true", help="print a valid sample application for the bundle and exit"
    )
    args = parser.parse_args(argv)
    if not (args.bundle / "model_card.json").is_file():
        print(f"error: {args.bundle} is not a model bundle (no model_card.json)", file=sys.stderr)
        return 2
    try:
        if args.print_sample:
            print(json.dumps(sample_application(args.bundle / "model_card.json"), indent=2))
            return 0
        return serve(args.bundle, args.port)
    except (ModelBundleError, SettingsError, ValidationError) as error:
        # A bundle or setting that cannot be used: one line naming it (the demo shows it), no traceback.
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2


def _port(text: str) -> int:
    """A TCP port for argparse: 0 to 65535 (bind() would otherwise fail with a traceback)."""
    if not (text.isascii() and text.isdigit() and int(text) <= 65535):
        raise argparse.ArgumentTypeError(f"{text} is not a TCP port (0 to 65535)")
    return int(text)
