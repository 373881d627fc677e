"""Behind an HTTP proxy (HTTP_PROXY set, loopback not in NO_PROXY), the demo and the tests still reach
their servers on 127.0.0.1 directly: urllib and botocore would otherwise ask the proxy for them."""

from __future__ import annotations

import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from botocore.utils import should_bypass_proxies

from localapi.background import LOOPBACK, bypass_proxies_for_loopback, free_loopback_port


class _Ok(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: object) -> None:
        return None


@pytest.fixture
def loopback_url() -> Iterator[str]:
    server = HTTPServer((LOOPBACK, 0), _Ok)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://{LOOPBACK}:{server.server_port}/"
    server.shutdown()
    server.server_close()


@pytest.fixture
def proxy_without_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    """A proxy nothing listens on (a free port), and NO_PROXY listing another host only."""
    dead_proxy = f"http://{LOOPBACK}:{free_loopback_port()}"
    for variable in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.setenv(variable, dead_proxy)
    for variable in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(variable, "intranet.example")


def _get(url: str) -> bytes:
    # A fresh opener reads the proxy variables now (urlopen's shared opener keeps its first reading).
    with urllib.request.build_opener().open(url, timeout=5) as response:
        body: bytes = response.read()
        return body


@pytest.mark.usefixtures("proxy_without_loopback")
def test_given_a_proxy_without_loopback_when_bypassed_then_urllib_and_botocore_go_direct(
    loopback_url: str,
) -> None:
    # Given the proxy settings: loopback requests go to the proxy, which is not there
    with pytest.raises((urllib.error.URLError, ConnectionError, socket.timeout)):
        _get(loopback_url)
    assert not should_bypass_proxies(loopback_url)
    # When the demo / test set-up adds loopback to NO_PROXY
    bypass_proxies_for_loopback()
    # Then both clients reach 127.0.0.1 directly, and the other listed host is kept
    assert _get(loopback_url) == b"ok"
    assert should_bypass_proxies(loopback_url)
    assert should_bypass_proxies("http://localhost:5000/")
    assert should_bypass_proxies("http://intranet.example/")


def test_given_loopback_already_listed_when_bypassed_again_then_nothing_is_repeated() -> None:
    environ = {"NO_PROXY": "intranet.example, 127.0.0.1"}
    bypass_proxies_for_loopback(environ)
    bypass_proxies_for_loopback(environ)
    assert environ == {
        "NO_PROXY": "intranet.example,127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }
