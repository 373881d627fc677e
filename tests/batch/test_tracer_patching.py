"""With X-Ray tracing on (as in Lambda), the batch function's Tracer patches botocore and nothing else.

The function calls S3 through boto3, so botocore is traced; Powertools' default would patch (and import
at cold start) every library the X-Ray SDK supports. Run in a fresh interpreter with Lambda's tracing
environment: the module-level Tracer is built at import.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

_SCRIPT = """
import json, sys
from lambdas.batch.wiring import tracer
from aws_xray_sdk.core import patcher

print("RESULT " + json.dumps({
    "provider": type(tracer.provider).__module__,
    "patched": sorted(patcher._PATCHED_MODULES),
    "imported": sorted(name for name in ("requests", "pymysql", "httpx") if name in sys.modules),
}))
"""

# What Lambda sets for a function with active tracing.
_TRACED_LAMBDA_ENV = {
    "AWS_LAMBDA_FUNCTION_NAME": "loan-scoring-batch",
    "LAMBDA_TASK_ROOT": str(REPO_ROOT),
    "_X_AMZN_TRACE_ID": "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
    "AWS_XRAY_DAEMON_ADDRESS": "127.0.0.1:2000",
    "AWS_XRAY_CONTEXT_MISSING": "IGNORE_ERROR",
    "AWS_DEFAULT_REGION": "eu-west-1",
}


def test_given_tracing_on_when_the_batch_function_loads_then_only_botocore_is_patched(tmp_path: Path) -> None:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("POWERTOOLS_", "AWS_", "_X_AMZN", "MODEL_BUNDLE"))
    }
    env |= _TRACED_LAMBDA_ENV | {"PYTHONPATH": str(REPO_ROOT)}
    completed = subprocess.run(
        [sys.executable, "-c", _SCRIPT],
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

    # The real X-Ray SDK, not a stand-in
    assert result["provider"].startswith("aws_xray_sdk")
    # patching botocore only, and importing no other library to patch it
    assert result["patched"] == ["botocore"]
    assert result["imported"] == []
