"""The committed champion bundle (model_artifacts/credit_risk) loads, validates and scores with reasons."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lambdas.scoring.runtime import ScoringModel

CHAMPION = Path(__file__).resolve().parents[2] / "model_artifacts" / "credit_risk"


@pytest.fixture(scope="module")
def champion() -> ScoringModel:
    if not (CHAMPION / "model_card.json").is_file():
        pytest.skip(f"no champion bundle committed at {CHAMPION} yet")
    return ScoringModel.load_directory(CHAMPION)


def _baseline_application(model: ScoringModel) -> dict[str, object]:
    application: dict[str, object] = {}
    for feature in model.features:
        value = model.card.reference.reason_baseline[feature.name]
        if value is not None and feature.type == "integer":
            value = round(float(value))
        elif value is not None and feature.type == "boolean":
            value = bool(value)
        application[feature.name] = value
    return application


def test_given_the_champion_when_a_baseline_application_is_scored_then_it_has_no_reasons(
    champion: ScoringModel,
) -> None:
    # Given an applicant whose every feature is at its baseline: nothing can raise the risk above itself
    prepared = champion.prepare_records([_baseline_application(champion)])
    assert prepared.errors == {}
    scores = champion.score(prepared.feed)
    assert 0.0 < scores.probability[0] < 1.0
    assert scores.reasons == [[]]


def test_given_the_champion_when_one_feature_moves_then_only_a_riskier_value_is_a_reason(
    champion: ScoringModel,
) -> None:
    base = _baseline_application(champion)
    numeric = [f for f in champion.features if f.type in ("number", "integer") and f.maximum is not None]
    assert numeric, "the champion has bounded numeric features"
    applications = []
    for feature in numeric:
        moved = dict(base)
        top = feature.maximum if feature.type == "number" else int(feature.maximum or 0)
        moved[feature.name] = top
        applications.append(moved)
    prepared = champion.prepare_records(applications)
    assert prepared.errors == {}
    scores = champion.score(prepared.feed, top_k=len(champion.features))
    base_probability = champion.score(champion.prepare_records([base]).feed).probability[0]
    for feature, probability, reasons in zip(numeric, scores.probability, scores.reasons, strict=True):
        # Only the moved feature differs from the baseline, so it is the only possible reason,
        # and it is one exactly when it raised the probability.
        assert {r.feature for r in reasons} <= {feature.name}
        assert bool(reasons) == bool(probability > base_probability + 1e-12)
        if reasons:
            assert reasons[0].contribution == pytest.approx(probability - base_probability, abs=1e-9)
    assert np.all((scores.probability >= 0) & (scores.probability <= 1))


def test_given_a_few_applications_when_scored_then_the_small_request_path_matches_the_block_path(
    champion: ScoringModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given holdout-like applications: some at their baselines, some with missing numbers
    base = _baseline_application(champion)
    rng = np.random.default_rng(7)
    applications: list[dict[str, object]] = [dict(base)]
    for _ in range(40):
        application = dict(base)
        for feature in champion.features:
            if rng.random() < 0.3:
                continue  # keep this one at its baseline
            if feature.categories is not None:
                application[feature.name] = str(rng.choice(feature.categories))
            elif feature.type in ("number", "integer") and feature.nullable and rng.random() < 0.2:
                application[feature.name] = None
            elif feature.type in ("number", "integer"):
                low = feature.minimum if feature.minimum is not None else 0.0
                high = min(
                    feature.maximum if feature.maximum is not None else 1e6, low + 2 * (1 + abs(low)) * 50
                )
                value = float(rng.uniform(low, high))
                application[feature.name] = round(value) if feature.type == "integer" else value
        applications.append(application)
    prepared = champion.prepare_records(applications)
    valid = [a for a, ok in zip(applications, prepared.valid.tolist(), strict=True) if ok]
    assert len(valid) > 20
    compared = 0
    for start in range(0, len(valid), 3):
        feed = champion.prepare_records(valid[start : start + 3]).feed
        # When the same rows go through the small-request path and through the block path
        small = champion.score(feed, top_k=3)
        monkeypatch.setattr("lambdas.scoring.runtime.SMALL_REQUEST_ROWS", 0)
        block = champion.score(feed, top_k=3)
        monkeypatch.undo()
        # Then probabilities, decisions, reasons, texts and contributions are identical
        np.testing.assert_array_equal(small.probability, block.probability)
        np.testing.assert_array_equal(small.decline, block.decline)
        assert small.reasons == block.reasons
        compared += sum(len(reasons) for reasons in block.reasons)
    assert compared > 30
