"""The model version is the ONNX file's hash, so identical training must give identical bytes in any
process: Python's string hash seed changes set order between processes, and skl2onnx had let it
decide the order of the opset domains (two seeds, two versions of the same model)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

# Fits a small boosting pipeline on a fixed sample and prints the converted graph's domains and hash.
_CONVERT = """
import hashlib
from training.candidates import CANDIDATES
from training.datasets.catalog import CREDIT_RISK, load_dataset
from training.features import model_input_frame
from training.onnx_export import convert_pipeline
from training.pipeline import coded_categories, feature_schema

frame = load_dataset("credit_risk").frame.sample(1500, random_state=1).reset_index(drop=True)
x, y = model_input_frame(CREDIT_RISK, frame), frame["loan_status"].to_numpy()
(boosting,) = [c for c in CANDIDATES if c.name == "hist_gradient_boosting"]
pipeline = boosting.build(CREDIT_RISK, len(y), 0)
pipeline.set_params(model__max_iter=5)
pipeline.fit(x, y)
model = convert_pipeline(pipeline, CREDIT_RISK, None, coded_categories(feature_schema(CREDIT_RISK, x)))
print(",".join(o.domain for o in model.opset_import), hashlib.sha256(model.SerializeToString()).hexdigest())
"""


def _convert_with_hash_seed(seed: int) -> str:
    env = {**os.environ, "PYTHONHASHSEED": str(seed), "PYTHONPATH": str(REPO_ROOT)}
    completed = subprocess.run(
        [sys.executable, "-c", _CONVERT], cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=False
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    return completed.stdout.strip().splitlines()[-1]


def test_given_other_hash_seeds_when_the_same_training_is_converted_then_the_bytes_are_identical() -> None:
    # Seeds 0 and 1 listed the domains in opposite orders before the fix
    first, second = _convert_with_hash_seed(0), _convert_with_hash_seed(1)
    assert first == second
    assert first.split()[0] == ",ai.onnx.ml"  # sorted: the default domain "" first
