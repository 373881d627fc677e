"""The benchmarks' structure on tiny inputs: what each side runs and under which conditions (no timings)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import RepeatedStratifiedKFold

from benchmarks import bench_api, bench_training
from lambdas.scoring.runtime import ScoringModel
from training.candidates import candidates_by_name
from training.datasets.catalog import load_dataset
from training.features import model_input_frame
from training.pipeline import TrainingConfig, split_holdout

REPO_ROOT = Path(__file__).resolve().parents[1]
COMMITTED_BUNDLE = REPO_ROOT / "model_artifacts" / "credit_risk"


def _applications(rows: int) -> list[dict[str, Any]]:
    """credit_risk rows as the API receives them (JSON values, nulls included), valid for the card."""
    model = ScoringModel.load_directory(COMMITTED_BUNDLE)
    types = {f.name: f.type for f in model.card.features}
    frame = load_dataset("credit_risk").frame
    # Rows with a missing number first: the baseline must take JSON nulls as they come.
    ordered = pd.concat([frame[frame.isna().any(axis=1)].head(rows // 2), frame.head(rows)])
    applications = [
        {name: bench_api._json_value(types[name], row[name]) for name in types}
        for row in ordered.to_dict("records")
    ]
    valid = model.prepare_records(applications).valid
    return [a for a, ok in zip(applications, valid, strict=True) if ok][:rows]


class _RecordingPipeline:
    def __init__(self) -> None:
        self.frames: list[pd.DataFrame] = []

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        self.frames.append(frame)
        return np.tile([0.7, 0.3], (len(frame), 1))


def test_api_baseline_scores_the_dataframe_built_from_the_json_as_it_comes() -> None:
    # The seed apps built a DataFrame from the request and called predict_proba: no per-column dtype
    # conversion (the benchmark's own model_input_frame cost ~1.5 ms of a ~6 ms single request).
    applications = _applications(3)
    recorder = _RecordingPipeline()
    baseline = bench_api.seed_app_handler(recorder, threshold=0.25)  # type: ignore[arg-type]
    single = baseline(bench_api._event("/v1/score", {"features": applications[0]}))
    batch = baseline(
        bench_api._event("/v1/score/batch", {"applications": [{"features": a} for a in applications]})
    )
    pd.testing.assert_frame_equal(recorder.frames[0], pd.DataFrame([applications[0]]))
    pd.testing.assert_frame_equal(recorder.frames[1], pd.DataFrame(applications))
    assert json.loads(single["body"]) == {"probability_of_default": 0.3, "decision": "decline"}
    assert [r["decision"] for r in json.loads(batch["body"])] == ["decline"] * 3


def test_api_baseline_gives_the_pipelines_probabilities_without_the_conversion() -> None:
    # Nothing is lost by leaving the conversion out: a real pipeline scores the JSON frame, nulls
    # included, exactly as it scores the converted one.
    dataset = load_dataset("credit_risk")
    spec = dataset.spec
    train = dataset.frame.head(600)
    (candidate,) = candidates_by_name(["hist_gradient_boosting"])
    pipeline = candidate.build(spec, len(train), 0)
    pipeline.fit(model_input_frame(spec, train), train[spec.target].to_numpy(dtype=np.int64))
    applications = _applications(40)
    assert any(value is None for a in applications for value in a.values())
    expected = pipeline.predict_proba(model_input_frame(spec, pd.DataFrame(applications)))[:, 1]
    baseline = bench_api.seed_app_handler(pipeline, threshold=0.5)
    batch = json.loads(
        baseline(
            bench_api._event("/v1/score/batch", {"applications": [{"features": a} for a in applications]})
        )["body"]
    )
    singles = [
        json.loads(baseline(bench_api._event("/v1/score", {"features": a}))["body"]) for a in applications
    ]
    np.testing.assert_array_equal([r["probability_of_default"] for r in batch], expected)
    np.testing.assert_array_equal([r["probability_of_default"] for r in singles], expected)


def test_warm_sides_are_timed_equally_often_in_alternating_blocks() -> None:
    calls: list[str] = []
    sides = {"ours": lambda: calls.append("ours"), "baseline": lambda: calls.append("baseline")}
    timings = bench_api.time_interleaved(sides, repeats=7, warmup=2, rounds=3)
    assert {name: len(t) for name, t in timings.items()} == {"ours": 7, "baseline": 7}
    # Untimed warm-up of each side, then rounds of 3, 2 and 2 calls per side; the side that starts alternates.
    warmup, rounds = calls[:4], calls[4:]
    assert warmup == ["ours"] * 2 + ["baseline"] * 2
    assert rounds == (
        ["ours"] * 3 + ["baseline"] * 3 + ["baseline"] * 2 + ["ours"] * 2 + ["ours"] * 2 + ["baseline"] * 2
    )


def test_every_fresh_process_gets_the_same_single_thread_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    # The baseline's first predict_proba otherwise starts an OpenMP thread per core (ours uses one).
    monkeypatch.setenv("OMP_NUM_THREADS", "8")
    monkeypatch.setenv("_X_AMZN_TRACE_ID", "Root=1-00000000-000000000000000000000000;Sampled=1")
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    env = bench_api.child_env(COMMITTED_BUNDLE)
    assert env["OMP_NUM_THREADS"] == env["OPENBLAS_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "1"
    assert "_X_AMZN_TRACE_ID" not in env
    assert "PYTHONDONTWRITEBYTECODE" not in env
    assert env["MODEL_BUNDLE_DIR"] == str(COMMITTED_BUNDLE)
    assert "training" not in bench_api._BASELINE_COLD  # the seed app imports none of our code itself


def test_warm_entry_point_runs_with_and_without_xray(tmp_path: Path) -> None:
    # The deployed function traces every request: the traced modes must really run the X-Ray recorder.
    applications = _applications(2)
    prepared = SimpleNamespace(bundle=COMMITTED_BUNDLE, applications=applications)
    found = bench_api.warm_entry_point(prepared, repeats=3, rounds=1, workdir=tmp_path)  # type: ignore[arg-type]
    assert {name: f["calls"] for name, f in found.items()} == {
        "off": 3,
        "xray_unsampled": 3,
        "xray_sampled": 3,
    }
    assert found["off"]["provider"] == "NoOpTracingProvider"
    assert "XRay" in found["xray_unsampled"]["provider"]
    assert "XRay" in found["xray_sampled"]["provider"]


def test_training_baseline_uses_the_folds_of_the_champions_cv(monkeypatch: pytest.MonkeyPatch) -> None:
    # On small data (berka: 187 training rows) training repeats its 5 folds 3 times; the baseline had
    # used the first 5 folds only and was averaged over other folds than the champion it is compared to.
    captured: dict[str, Any] = {}

    def fake_cross_val_score(model: Any, x: Any, y: Any, **options: Any) -> np.ndarray:
        captured.update(options, x=x, y=y)
        return np.array([0.9])

    metrics = SimpleNamespace(roc_auc=0.91)
    champion = SimpleNamespace(
        status="champion",
        calibration="none",
        cv=SimpleNamespace(folds=5, repeats=3, mean=metrics),
        cv_uncalibrated=SimpleNamespace(folds=5, repeats=3, mean=metrics),
    )
    monkeypatch.setattr(
        bench_training, "train", lambda *a, **k: SimpleNamespace(card=SimpleNamespace(candidates=[champion]))
    )
    monkeypatch.setattr(bench_training, "card_summary", lambda card: "")
    monkeypatch.setattr(bench_training, "cross_val_score", fake_cross_val_score)
    monkeypatch.setattr(sys, "argv", ["bench_training", "--datasets", "credit_risk"])
    bench_training.main()

    config = TrainingConfig()
    train = split_holdout(load_dataset("credit_risk"), config).train
    assert len(captured["x"]) == len(train)
    training_folds = RepeatedStratifiedKFold(n_splits=5, n_repeats=3, random_state=config.seed)
    expected = list(training_folds.split(captured["x"], captured["y"]))
    used = list(captured["cv"].split(captured["x"], captured["y"]))
    assert len(used) == len(expected) == 15
    for (fit_a, test_a), (fit_b, test_b) in zip(used, expected, strict=True):
        np.testing.assert_array_equal(fit_a, fit_b)
        np.testing.assert_array_equal(test_a, test_b)
