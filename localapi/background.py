"""A server subprocess on loopback for local runs (the demo, the integration tests); never deployed."""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO

LOOPBACK = "127.0.0.1"


LOOPBACK_NAMES = (LOOPBACK, "localhost")


def bypass_proxies_for_loopback(environ: dict[str, str] | None = None) -> None:
    """Add 127.0.0.1 and localhost to NO_PROXY and no_proxy (in ``os.environ`` by default).

    urllib and botocore send requests through HTTP_PROXY / HTTPS_PROXY unless the host is listed in
    NO_PROXY, and a machine behind a corporate proxy often sets the first without loopback in the
    second: the local API and the S3/SQS emulator would then be asked for through the proxy, which
    cannot reach this machine's 127.0.0.1. Child processes inherit the setting.
    """
    target = os.environ if environ is None else environ
    for variable in ("NO_PROXY", "no_proxy"):
        listed = [name.strip() for name in target.get(variable, "").split(",") if name.strip()]
        target[variable] = ",".join([*listed, *(name for name in LOOPBACK_NAMES if name not in listed)])


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def background_server(
    command: list[str],
    ready_url: str,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    start_seconds: float = 60.0,
) -> Iterator[None]:
    """Run ``command`` until the block ends, once ``ready_url`` answers HTTP (any status).

    The server's stderr goes to an anonymous temporary file, so that a server which exits before it
    answers (a port in use, a missing module, a bad bundle) is reported with its own last line.
    """
    with tempfile.TemporaryFile() as stderr:
        process = subprocess.Popen(  # noqa: S603 - callers pass our own interpreter and modules
            command,
            cwd=cwd,
            env=dict(env) if env is not None else None,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
        try:
            _wait_for_http(ready_url, process, start_seconds, stderr)
            yield
        finally:
            _stop(process)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Terminate, then kill if it is still running (after 10 s, or when a second Ctrl-C cuts the wait)."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _last_line(stream: IO[bytes]) -> str:
    """The last non-empty line written to ``stream`` (the reason a server gave when it exited)."""
    stream.seek(0)
    lines = [line.strip() for line in stream.read().decode(errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else "(nothing on stderr)"


def _wait_for_http(url: str, process: subprocess.Popen[bytes], seconds: float, stderr: IO[bytes]) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"the server for {url} exited with code {process.returncode} before answering: "
                f"{_last_line(stderr)}"
            )
        try:
            with urllib.request.urlopen(url, timeout=2):  # noqa: S310 - loopback URL built by the caller
                return
        except urllib.error.HTTPError:
            return  # it answered
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {seconds:.0f} s")
