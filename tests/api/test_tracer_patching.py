"""With X-Ray tracing on (as in Lambda), the API's Tracer patches no library.

Powertools' Tracer patches every library the X-Ray SDK supports unless told otherwise, importing each one
it finds at cold start. The API function calls no other service while serving, so it patches nothing.
Run in a fresh interpreter with Lambda's tracing environment: the module-level Tracer is built at import.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.scoring.bundles import MODEL_VERSION

REPO_ROOT = Path(__file__).resolve().parents[2]

_SCRIPT = """
import json, sys
from lambdas.api.handler import handler
from lambdas.api.observability import tracer
from aws_xray_sdk.core import patcher

class Context:
    function_name = "loan-scoring-api"; function_version = "1"; memory_limit_in_mb = 1024
    aws_request_id = "r"; invoked_function_arn = "arn:aws:lambda:eu-west-1:123456789012:function:f"
    def get_remaining_time_in_millis(self): return 10000

result = handler(json.load(open(sys.argv[1])), Context())
print("RESULT " + json.dumps({
    "status": result["statusCode"],
    "model_version": json.loads(result["body"])["model_version"],
    "provider": type(tracer.provider).__module__,
    "patched": sorted(patcher._PATCHED_MODULES),
    "imported": sorted(name for name in ("requests", "pymysql", "httpx") if name in sys.modules),
}))
"""

# What Lambda sets for a function with active tracing (the daemon address is never answered here: the
# X-Ray SDK sends its segments over UDP and does not wait for a reply).
_TRACED_LAMBDA_ENV = {
    "AWS_LAMBDA_FUNCTION_NAME": "loan-scoring-api",
    "LAMBDA_TASK_ROOT": str(REPO_ROOT),
    "_X_AMZN_TRACE_ID": "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
    "AWS_XRAY_DAEMON_ADDRESS": "127.0.0.1:2000",
    "AWS_XRAY_CONTEXT_MISSING": "IGNORE_ERROR",
    "AWS_DEFAULT_REGION": "eu-west-1",
}


def test_given_tracing_on_when_the_api_cold_starts_then_it_traces_without_patching_any_library(
    api_bundle: Path, tmp_path: Path
) -> None:
    event = json.loads((REPO_ROOT / "tests" / "events" / "score.json").read_text())
    event_file = tmp_path / "event.json"
    event_file.write_text(json.dumps(event))
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("POWERTOOLS_", "AWS_", "_X_AMZN", "MODEL_BUNDLE"))
    }
    env |= _TRACED_LAMBDA_ENV | {"MODEL_BUNDLE_DIR": str(api_bundle), "PYTHONPATH": str(REPO_ROOT)}
    completed = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(event_file)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        check=False,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    (line,) = [line for line in completed.stdout.splitlines() if line.startswith("RESULT ")]
    result = json.loads(line.removeprefix("RESULT "))

    # The request was served and traced through the real X-Ray SDK, not the no-op stand-in
    assert result["status"] == 200
    assert result["model_version"] == MODEL_VERSION
    assert result["provider"].startswith("aws_xray_sdk")
    # and no library was patched, nor imported for patching
    assert result["patched"] == []
    assert result["imported"] == []
