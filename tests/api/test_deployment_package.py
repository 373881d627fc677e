"""The built Lambda package alone, in a bare CPython 3.12 (nothing from the dev environment), serves requests.

The package is built Docker-free by ``infra.lambda_package`` (manylinux wheels for Lambda's python3.12).
If the champion bundle is not in the repository yet, the hand-built logistic bundle is copied into the
package and MODEL_BUNDLE_DIR points at it, exactly as a deployment with another bundle would.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from infra.lambda_package import DEFAULT_MODEL_BUNDLE_DIR, LAMBDA_UNZIPPED_LIMIT_BYTES, build_lambda_package
from lambdas.scoring.card import ModelCard
from tests.api.conftest import stored_event
from tests.isolated_python import run_isolated_python312
from tests.scoring.bundles import write_logistic_bundle

REPO_ROOT = Path(__file__).resolve().parents[2]
MIB = 1024 * 1024

# Runs inside the isolated interpreter: import the handler from the package, invoke it with events.
_INVOKE_SCRIPT = """
import gc, json, sys, time
package, events_file = sys.argv[1], sys.argv[2]
sys.path[:0] = [package]
started = time.perf_counter()
from lambdas.api.handler import handler

class Context:
    function_name = "loan-scoring-api"; function_version = "1"; memory_limit_in_mb = 1024
    invoked_function_arn = "arn:aws:lambda:eu-west-1:123456789012:function:loan-scoring-api"
    aws_request_id = "req-1"
    def get_remaining_time_in_millis(self): return 10000

results = [handler(event, Context()) for event in json.load(open(events_file))]
cold_start_seconds = time.perf_counter() - started
heavy = sorted(m for m in ("pandas", "sklearn", "boto3") if m in sys.modules)
outside = sorted(
    name for name, module in list(sys.modules.items())
    if name.split(".")[0] in ("numpy", "onnxruntime", "pydantic", "aws_lambda_powertools")
    and getattr(module, "__file__", None) and not module.__file__.startswith(package)
)
collector = {"enabled": gc.isenabled(), "frozen_objects": gc.get_freeze_count()}
print("RESULT " + json.dumps({"results": results, "heavy": heavy, "outside": outside, "collector": collector,
                              "cold_start_seconds": cold_start_seconds, "executable": sys.executable}))
"""


def _score_event_from_card(card: ModelCard) -> dict[str, Any]:
    """A valid application for any card: every feature at its reason baseline (median or mode)."""
    features: dict[str, Any] = {}
    for feature in card.features:
        value = card.reference.reason_baseline[feature.name]
        if feature.type == "integer" and value is not None:
            value = round(float(value))
        elif feature.type == "boolean" and value is not None:
            value = bool(value)
        features[feature.name] = value
    event = stored_event("score.json")
    event["body"] = json.dumps({"application_id": "pkg-1", "features": features})
    return event


@pytest.mark.slow
def test_given_the_built_api_package_when_invoked_in_isolated_python312_then_it_scores(
    tmp_path: Path,
) -> None:
    # Given the package as the CDK asset builds it
    package = tmp_path / "api-package"
    report = build_lambda_package("api", package)
    sizes = f"unzipped {report.unzipped_bytes / MIB:.1f} MiB, zipped {report.zipped_bytes / MIB:.1f} MiB"
    print(f"\napi package: {sizes}")
    assert report.unzipped_bytes <= LAMBDA_UNZIPPED_LIMIT_BYTES
    # The tracer's SDK ships too (it imports botocore, which Lambda's runtime provides, only when tracing)
    assert (package / "aws_xray_sdk" / "core").is_dir()
    bundle = package / DEFAULT_MODEL_BUNDLE_DIR
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
    if not (bundle / "model_card.json").is_file():
        bundle = write_logistic_bundle(package / "test_bundle")
        env["MODEL_BUNDLE_DIR"] = "test_bundle"  # relative to the package root, like Lambda's /var/task
    card = ModelCard.model_validate_json((bundle / "model_card.json").read_bytes())
    events = [_score_event_from_card(card), stored_event("health.json"), stored_event("model.json")]
    events_file = tmp_path / "events.json"
    events_file.write_text(json.dumps(events))

    # When a bare CPython 3.12 (-I isolated, -S no site-packages) imports and invokes the handler
    outcome = run_isolated_python312(_INVOKE_SCRIPT, [str(package), str(events_file)], env=env, cwd=tmp_path)

    # Then every request succeeds with the bundle's model version, from the package's code only
    assert outcome["executable"] != sys.executable
    assert [r["statusCode"] for r in outcome["results"]] == [200, 200, 200]
    scored = json.loads(outcome["results"][0]["body"])
    assert scored["model_version"] == card.model_version
    assert scored["application_id"] == "pkg-1"
    assert 0.0 <= scored["probability_of_default"] <= 1.0
    assert outcome["heavy"] == []
    assert outcome["outside"] == []
    # The init phase paused the garbage collector and froze what it built; requests run with it on
    assert outcome["collector"]["enabled"] is True
    assert outcome["collector"]["frozen_objects"] > 10_000
    print(f"isolated cold start (import + load + 3 requests): {outcome['cold_start_seconds']:.3f} s")
