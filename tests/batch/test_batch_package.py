"""The batch Lambda's deployment package works on its own: a bare CPython 3.12 (``-S -I``: no
site-packages, no environment) that sees only the built package plus boto3 as the Lambda runtime
provides it, imports the handler and scores a file.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from infra.lambda_package import LAMBDA_UNZIPPED_LIMIT_BYTES, build_lambda_package
from tests.batch.helpers import GOOD_ROWS, csv_bytes
from tests.scoring.bundles import write_logistic_bundle

# What Lambda's python3.12 runtime puts on sys.path itself. The package leaves out boto3, botocore and
# s3transfer; the others also come with the package's own dependencies (jmespath for Powertools), and
# the package's copies come first on the path.
RUNTIME_PROVIDED = ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "urllib3", "six")

PROBE = """
import gc, io, json, os, sys
package, runtime, bundle, csv_path = sys.argv[1:5]
sys.path[:0] = [package, runtime]
os.environ.update(MODEL_BUNDLE_DIR=bundle, AWS_DEFAULT_REGION="eu-west-1")
import lambdas.batch.handler as handler
from lambdas.batch import wiring
init = {"model_loaded": wiring.loaded_model.cache_info().currsize, "collector_enabled": gc.isenabled(),
        "frozen_objects": gc.get_freeze_count()}
from lambdas.batch.formats import open_source
from lambdas.batch.scoring import score_source
from lambdas.scoring.runtime import ScoringModel
try:
    import pandas
    has_pandas = True
except ImportError:
    has_pandas = False
model = ScoringModel.load_directory(__import__("pathlib").Path(bundle))
scored, rejected = io.BytesIO(), io.BytesIO()
with open(csv_path, "rb") as stream:
    result = score_source(model, open_source("csv", stream), "csv", scored, rejected)
print(json.dumps({"handler": callable(handler.handler), "init": init,
                  "rows_scored": result.counts.rows_scored, "rows_in": result.counts.rows_in,
                  "has_pandas": has_pandas,
                  "scored_lines": scored.getvalue().decode().count("\\n")}))
"""


def _runtime_provided_dir(target: Path) -> Path:
    """A folder standing in for Lambda's /var/runtime: links to the dev environment's boto3 and friends."""
    target.mkdir()
    for name in RUNTIME_PROVIDED:
        spec = importlib.util.find_spec(name)
        assert spec is not None, f"{name} missing from the dev environment"
        assert spec.origin is not None, f"{name} has no file"
        origin = Path(spec.origin)
        source = origin.parent if origin.name == "__init__.py" else origin
        (target / source.name).symlink_to(source)
    return target


@pytest.mark.slow
def test_given_the_built_batch_package_when_imported_by_bare_python312_then_the_handler_loads_and_scores(
    tmp_path: Path,
) -> None:
    # Given: the package built Docker-free from the lock file (cached under build/ after the first run)
    report = build_lambda_package("batch", tmp_path / "package")
    print(report.summary())
    assert report.unzipped_bytes <= LAMBDA_UNZIPPED_LIMIT_BYTES
    assert not (tmp_path / "package" / "pandas").exists()
    bundle = write_logistic_bundle(tmp_path / "bundle")
    csv_path = tmp_path / "input.csv"
    csv_path.write_bytes(csv_bytes(GOOD_ROWS))
    runtime = _runtime_provided_dir(tmp_path / "runtime")
    python312 = shutil.which("python3.12") or sys.executable

    # When: an isolated interpreter imports the handler from the package and scores a CSV
    probe = PROBE
    completed = subprocess.run(
        [
            python312,
            "-S",
            "-I",
            "-c",
            probe,
            str(tmp_path / "package"),
            str(runtime),
            str(bundle),
            str(csv_path),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )

    # Then
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    # The entry module's init phase loaded the model, left the collector on and froze what it built
    init = result.pop("init")
    assert init["model_loaded"] == 1
    assert init["collector_enabled"] is True
    assert init["frozen_objects"] > 10_000
    assert result == {
        "handler": True,
        "rows_scored": len(GOOD_ROWS),
        "rows_in": len(GOOD_ROWS),
        "has_pandas": False,
        "scored_lines": len(GOOD_ROWS) + 1,
    }
