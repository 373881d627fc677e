"""The parity check and the bundle's hash: behaviours no test noticed when changed (a hand-made mutation
run of training/onnx_export.py). The graph's probabilities are stood in for, so each difference is exact."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pytest

from training import onnx_export
from training.onnx_export import PARITY_TOLERANCE, check_parity, sha256_hex


def _graph_scores(monkeypatch: pytest.MonkeyPatch, probabilities: list[float]) -> None:
    def scored(model_bytes: bytes, feed: dict[str, Any]) -> np.ndarray:
        return np.asarray(probabilities, dtype=np.float64)

    monkeypatch.setattr(onnx_export, "onnx_probabilities", scored)


def test_a_difference_of_exactly_the_tolerance_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    _graph_scores(monkeypatch, [PARITY_TOLERANCE, 0.5])
    parity = check_parity(b"graph", {}, np.asarray([0.0, 0.5]))
    assert parity.max_abs_difference == PARITY_TOLERANCE
    assert parity.passed


def test_one_row_beyond_the_tolerance_fails_however_close_the_others_are(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The mean difference (3e-5 / 4) is within the tolerance; the worst row is not
    _graph_scores(monkeypatch, [0.0, 0.0, 0.0, 3 * PARITY_TOLERANCE])
    parity = check_parity(b"graph", {}, np.zeros(4))
    assert parity.max_abs_difference == pytest.approx(3 * PARITY_TOLERANCE)
    assert parity.rows_checked == 4
    assert not parity.passed


def test_the_bundle_hash_is_the_full_sha256() -> None:
    assert sha256_hex(b"model bytes") == hashlib.sha256(b"model bytes").hexdigest()
