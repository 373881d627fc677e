"""With X-Ray tracing on (as in Lambda), the API's Tracer patches no library.

Powertools' Tracer patches every library the X-Ray SDK supports unless told otherwise, importing each one
it finds at cold start. The API function calls no other service while serving, so it patches nothing.
Run in a fresh interpreter with Lambda's tracing environment: the module-level Tracer is built at import.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.scoring.bundles import MODEL_VERSION
from tests.traced_lambda import REPO_ROOT, run_traced

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


def test_given_tracing_on_when_the_api_cold_starts_then_it_traces_without_patching_any_library(
    api_bundle: Path, tmp_path: Path
) -> None:
    event = json.loads((REPO_ROOT / "tests" / "events" / "score.json").read_text())
    event_file = tmp_path / "event.json"
    event_file.write_text(json.dumps(event))
    result = run_traced(
        _SCRIPT,
        [str(event_file)],
        function_name="loan-scoring-api",
        env={"MODEL_BUNDLE_DIR": str(api_bundle)},
        cwd=tmp_path,
    )

    # The request was served and traced through the real X-Ray SDK, not the no-op stand-in
    assert result["status"] == 200
    assert result["model_version"] == MODEL_VERSION
    assert result["provider"].startswith("aws_xray_sdk")
    # and no library was patched, nor imported for patching
    assert result["patched"] == []
    assert result["imported"] == []
