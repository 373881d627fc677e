"""Run a script in a bare CPython 3.12 (``-I -S``: no site-packages, no user environment), as Lambda's
python3.12 runtime would see a deployment package, and read back the one ``RESULT <json>`` line it prints."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.conftest import skip_unless_ci


def python312() -> str:
    """The real CPython 3.12 under the dev venv (pyenv's), not the venv itself; else python3.12 on PATH."""
    base = Path(sys.base_prefix) / "bin" / "python3.12"
    if base.is_file():
        return str(base)
    found = shutil.which("python3.12")
    if found is None:
        skip_unless_ci("no CPython 3.12 interpreter found (set PYENV_VERSION=3.11.7:3.12.1)")
    return found


def run_isolated_python312(script: str, args: list[str], *, env: dict[str, str], cwd: Path) -> dict[str, Any]:
    completed = subprocess.run(
        [python312(), "-I", "-S", "-c", script, *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        check=False,
        timeout=120,
    )
    result: dict[str, Any] = script_result(completed)
    return result


def script_result(completed: subprocess.CompletedProcess[str]) -> Any:
    """The parsed ``RESULT <json>`` line of a script that must have exited 0."""
    assert completed.returncode == 0, completed.stderr[-3000:]
    (line,) = [line for line in completed.stdout.splitlines() if line.startswith("RESULT ")]
    return json.loads(line.removeprefix("RESULT "))
