"""Run a script in a fresh interpreter with the environment Lambda gives a function with active X-Ray
tracing, and read back the one ``RESULT <json>`` line it prints. The handler modules build their Tracer
at import, so tracing has to be on before they are imported."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.isolated_python import script_result

REPO_ROOT = Path(__file__).resolve().parents[1]

# What Lambda sets for a function with active tracing (the daemon address is never answered here: the
# X-Ray SDK sends its segments over UDP and does not wait for a reply).
TRACED_LAMBDA_ENV = {
    "LAMBDA_TASK_ROOT": str(REPO_ROOT),
    "_X_AMZN_TRACE_ID": "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
    "AWS_XRAY_DAEMON_ADDRESS": "127.0.0.1:2000",
    "AWS_XRAY_CONTEXT_MISSING": "IGNORE_ERROR",
    "AWS_DEFAULT_REGION": "eu-west-1",
}


def run_traced(script: str, args: list[str], *, function_name: str, env: dict[str, str], cwd: Path) -> Any:
    """``script`` run as function ``function_name`` with ``env`` added; its RESULT line, parsed."""
    clean = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("POWERTOOLS_", "AWS_", "_X_AMZN", "MODEL_BUNDLE"))
    }
    completed = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        env=clean
        | TRACED_LAMBDA_ENV
        | {"AWS_LAMBDA_FUNCTION_NAME": function_name, "PYTHONPATH": str(REPO_ROOT)}
        | env,
        cwd=cwd,
        check=False,
        timeout=120,
    )
    return script_result(completed)
