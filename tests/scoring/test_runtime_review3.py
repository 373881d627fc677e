"""Review 3 of the scoring runtime: what the model answers is checked before any decision is made on it.

A model that gives NaN, or a "probability" outside [0, 1], for a valid application is a broken model:
NaN compares false with the threshold, so it used to be decided "approve" (the batch wrote such rows
as approved), and 1.5 or -0.2 reached API clients in a 200 whose published schema says 0 to 1.
"""

from __future__ import annotations

from collections.abc import Callable
from unittest import mock

import numpy as np
import pytest

from lambdas.scoring import runtime
from lambdas.scoring.runtime import ModelOutputError, ScoringModel
from tests.scoring.bundles import MODEL_VERSION, THRESHOLD, good_application

# (SMALL_REQUEST_ROWS, LOCALITY_MIN_ROWS) that send a call down each scoring path.
PATHS = {"small": (10**9, 10**9), "block": (0, 10**9), "locality": (0, 1)}


def _answering(
    model: ScoringModel, monkeypatch: pytest.MonkeyPatch, positive: Callable[[np.ndarray], np.ndarray]
) -> None:
    """From now on the model's positive-class column is what ``positive`` makes of the real one."""
    original = model._session.run

    def run(outputs: list[str], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        (probabilities,) = original(outputs, feed)
        changed = np.array(probabilities, dtype=np.float64)
        changed[:, 1] = positive(changed[:, 1].copy())
        changed[:, 0] = 1.0 - changed[:, 1]
        return [changed]

    monkeypatch.setattr(model._session, "run", run)


def _feed(model: ScoringModel, rows: int) -> dict[str, np.ndarray]:
    prepared = model.prepare_records([good_application() for _ in range(rows)])
    assert not prepared.errors
    return prepared.feed


@pytest.mark.parametrize("bad", [np.nan, 1.5, -0.2, np.inf])
@pytest.mark.parametrize("path", sorted(PATHS))
@pytest.mark.parametrize("reasons", [True, False])
def test_given_a_model_answering_outside_0_1_when_scoring_then_no_decision_is_made(
    model: ScoringModel, monkeypatch: pytest.MonkeyPatch, bad: float, path: str, reasons: bool
) -> None:
    # Given a model that answers one row of three with something that is not a probability
    def one_bad(column: np.ndarray) -> np.ndarray:
        column[1] = bad
        return column

    _answering(model, monkeypatch, one_bad)
    small, locality = PATHS[path]
    # When three valid applications are scored, by any path, with or without reasons
    with (
        mock.patch.object(runtime, "SMALL_REQUEST_ROWS", small),
        mock.patch.object(runtime, "LOCALITY_MIN_ROWS", locality),
        pytest.raises(ModelOutputError) as raised,
    ):
        model.score(_feed(model, 3), reasons_for=reasons)
    # Then the call fails naming the model version, instead of deciding on it (NaN used to be "approve")
    assert MODEL_VERSION in str(raised.value)
    assert "outside [0, 1]" in str(raised.value)


def test_given_a_model_answering_nan_for_perturbed_rows_only_when_explaining_then_it_fails(
    model: ScoringModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given two applications scored correctly
    feed = _feed(model, 2)
    scores = model.score(feed, reasons_for=False)
    # And then a model answering NaN (what its perturbed rows get: one feature at its baseline)
    _answering(model, monkeypatch, lambda column: np.full_like(column, np.nan))
    rows = np.arange(2, dtype=np.intp)
    # When their reasons are asked for, as objects or as the batch's texts
    # Then no reason list is made from NaN contributions (NaN > 0 is false: reasons silently vanished)
    with pytest.raises(ModelOutputError):
        model.explain(feed, scores.probability, rows)
    with pytest.raises(ModelOutputError):
        model.explain_texts(feed, scores.probability, rows)


@pytest.mark.parametrize("edge", [0.0, 1.0])
def test_given_a_model_answering_exactly_0_or_1_when_scoring_then_it_is_a_probability(
    model: ScoringModel, monkeypatch: pytest.MonkeyPatch, edge: float
) -> None:
    # Given a model whose answers are exactly at an end of [0, 1] (a saturated sigmoid)
    _answering(model, monkeypatch, lambda column: np.full_like(column, edge))
    # When scored
    scores = model.score(_feed(model, 2), reasons_for=True)
    # Then they are probabilities like any other, decided against the threshold
    assert scores.probability.tolist() == [edge, edge]
    assert scores.decline.tolist() == [edge >= THRESHOLD] * 2
