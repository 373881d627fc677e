"""With X-Ray tracing on (as in Lambda), the batch function's Tracer patches botocore and nothing else.

The function calls S3 through boto3, so botocore is traced; Powertools' default would patch (and import
at cold start) every library the X-Ray SDK supports. Run in a fresh interpreter with Lambda's tracing
environment: the module-level Tracer is built at import.
"""

from __future__ import annotations

from pathlib import Path

from tests.traced_lambda import run_traced

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


def test_given_tracing_on_when_the_batch_function_loads_then_only_botocore_is_patched(tmp_path: Path) -> None:
    result = run_traced(_SCRIPT, [], function_name="loan-scoring-batch", env={}, cwd=tmp_path)

    # The real X-Ray SDK, not a stand-in
    assert result["provider"].startswith("aws_xray_sdk")
    # patching botocore only, and importing no other library to patch it
    assert result["patched"] == ["botocore"]
    assert result["imported"] == []
