"""What a first-time user met walking through the demo, the CDK app's entry point and the scoring API.

The demo runs in a subprocess through a small harness (as in tests/api/test_demo_review.py) on the
committed bundle; one good run is shared by the tests that read its output.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from lambdas.scoring.card import ModelCard
from lambdas.scoring.runtime import ModelBundleError, ScoringModel
from tests.api.test_demo_review import _run_demo

REPO_ROOT = Path(__file__).resolve().parents[1]
BUNDLE = REPO_ROOT / "model_artifacts" / "credit_risk"
CARD = ModelCard.model_validate_json((BUNDLE / "model_card.json").read_bytes())


# argv[1] is the demo's output folder, the rest goes to the demo. PATCH is replaced.
@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> subprocess.CompletedProcess[str]:
    completed = _run_demo(tmp_path_factory.mktemp("demo"), "", "--skip-training")
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed


def _batch_section(stdout: str) -> list[str]:
    lines = stdout.splitlines()
    start = next(n for n, line in enumerate(lines) if line.startswith("=== Batch"))
    return lines[start + 1 :]


def _manifest(stdout: str) -> dict[str, Any]:
    """The manifest the demo prints (indented JSON, from a line ``{`` to a line ``}``)."""
    section = _batch_section(stdout)
    start = section.index("{")
    found: dict[str, Any] = json.loads("\n".join(section[start : section.index("}", start) + 1]))
    return found


def _printed_rejected_ids(stdout: str) -> list[str]:
    """The application ids of the rejected file the demo prints after its ``rejected/...:`` line."""
    section = _batch_section(stdout)
    start = next(n for n, line in enumerate(section) if line.startswith("rejected/")) + 1
    end = next((n for n, line in enumerate(section) if n > start and line.startswith("===")), len(section))
    text = "\n".join(line for line in section[start:end] if line.strip())
    return [row["application_id"] for row in csv.DictReader(io.StringIO(text))]


# ------------------------------------------------------------------------------------------------
# 1. The batch section prints no raw CloudWatch metrics line, and still shows the handler's errors
# ------------------------------------------------------------------------------------------------


def test_given_a_good_run_when_the_demo_drives_the_batch_handler_then_no_metrics_json_is_printed(
    demo_run: subprocess.CompletedProcess[str],
) -> None:
    emf = [line for line in _batch_section(demo_run.stdout) if '"_aws"' in line]
    assert emf == []


def test_given_a_failing_file_when_the_demo_drives_the_batch_handler_then_its_error_still_shows(
    tmp_path: Path,
) -> None:
    # Given a batch service that fails on every file (the handler logs it and counts MessagesFailed)
    patch = """
    import lambdas.batch.service as service
    def process_object(*args, **kwargs):
        raise RuntimeError("planted failure")
    service.process_object = process_object
    """
    # When the demo runs
    completed = _run_demo(tmp_path, patch, "--skip-training")
    # Then it fails, the handler's error line is in its output, and no metrics line is
    assert completed.returncode == 1, completed.stdout[-3000:]
    output = completed.stdout + completed.stderr
    assert "message failed, it will be retried" in output
    assert "planted failure" in output
    assert '"_aws"' not in output


# ------------------------------------------------------------------------------------------------
# 2. The demo's file: a seeded random sample of the shipped data, plus the two planted bad rows
# ------------------------------------------------------------------------------------------------


def _demo_ids() -> list[str]:
    from demo.__main__ import _demo_csv

    return [row["application_id"] for row in csv.DictReader(io.StringIO(_demo_csv().decode()))]


def test_given_the_demo_file_then_it_samples_the_whole_shipped_data_the_same_way_every_run() -> None:
    ids = _demo_ids()
    assert ids == _demo_ids()
    assert ids[-2:] == ["BAD-1", "BAD-2"]
    assert len(set(ids)) == len(ids) == 202
    # Rows from all over the 32k-row file, not its first 200
    assert max(int(application_id[1:]) for application_id in ids[:-2]) > 10_000


def test_given_a_good_run_then_the_file_looks_like_the_population(
    demo_run: subprocess.CompletedProcess[str],
) -> None:
    manifest = _manifest(demo_run.stdout)
    counts, drift = manifest["counts"], manifest["drift"]
    # Only the planted rows are rejected, as the demo says
    assert _printed_rejected_ids(demo_run.stdout) == ["BAD-1", "BAD-2"]
    assert counts["rows_rejected"] == 2
    # Declines near the card's holdout share; no drift beyond sampling noise
    assert CARD.holdout_decisions is not None
    expected_declines = 1 - CARD.holdout_decisions.approval_rate
    assert abs(counts["declined"] / counts["rows_scored"] - expected_declines) < 0.08
    assert drift["max_feature_psi"] < 0.25
    assert drift["score_psi"] < 0.25


# ------------------------------------------------------------------------------------------------
# 3. --skip-training does not present the card's training time as this run's
# ------------------------------------------------------------------------------------------------


def test_given_skip_training_when_the_demo_prints_the_card_then_the_training_time_is_the_cards(
    demo_run: subprocess.CompletedProcess[str],
) -> None:
    took = f"training took {CARD.lineage.training_seconds:.1f} s"
    lines = demo_run.stdout.splitlines()
    assert took not in lines
    assert f"{took} when this card was made" in lines


# ------------------------------------------------------------------------------------------------
# 4. app.py: a bad context value is one line on stderr, exit status 1
# ------------------------------------------------------------------------------------------------


def test_given_a_bad_context_value_when_the_cdk_app_runs_then_one_error_line_and_status_1(
    tmp_path: Path,
) -> None:
    # Given cdk.json's context with an out-of-range memory size, passed as the CDK CLI passes it
    committed = json.loads((REPO_ROOT / "cdk.json").read_text())["context"]
    env = {
        **os.environ,
        "CDK_CONTEXT_JSON": json.dumps({**committed, "lambdaMemoryMb": 99999}),
        "CDK_OUTDIR": str(tmp_path / "cdk.out"),
        "JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION": "1",
    }
    # When the app runs (what `cdk synth -c lambdaMemoryMb=99999` starts)
    completed = subprocess.run(
        [sys.executable, "app.py"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    # Then it exits 1 with the error on one line, no traceback
    assert completed.returncode == 1, completed.stderr[-3000:]
    assert "Traceback" not in completed.stderr
    errors = [line for line in completed.stderr.splitlines() if "lambdaMemoryMb" in line]
    assert errors == [
        "error: context key 'lambdaMemoryMb': invalid value 99999 (expected an integer from 128 to 10240)"
    ]


# ------------------------------------------------------------------------------------------------
# 5. ScoringModel.load_directory takes a str, as lambdas/scoring/README.md shows
# ------------------------------------------------------------------------------------------------


def test_given_a_str_path_when_loading_a_bundle_then_it_loads_like_a_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(REPO_ROOT)
    model = ScoringModel.load_directory("model_artifacts/credit_risk")
    assert model.model_version == ScoringModel.load_directory(BUNDLE).model_version == CARD.model_version


def test_given_a_str_path_without_a_card_when_loading_then_the_bundle_error_names_it(tmp_path: Path) -> None:
    with pytest.raises(ModelBundleError, match=r"has no model_card\.json"):
        ScoringModel.load_directory(str(tmp_path))
