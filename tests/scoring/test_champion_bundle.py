"""The committed champion bundle (model_artifacts/credit_risk) loads, validates and scores with reasons."""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from lambdas.scoring import runtime
from lambdas.scoring.card import NumericReference
from lambdas.scoring.runtime import ScoringModel
from tests.conftest import skip_unless_ci

CHAMPION = Path(__file__).resolve().parents[2] / "model_artifacts" / "credit_risk"


@pytest.fixture(scope="module")
def champion() -> ScoringModel:
    if not (CHAMPION / "model_card.json").is_file():
        skip_unless_ci(f"no champion bundle committed at {CHAMPION} yet")
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


def _sample_file_rows(model: ScoringModel, rows: int) -> list[dict[str, object]]:
    """The first ``rows`` valid applications of the sample file the repo ships (training/data)."""
    sample = CHAMPION.parents[1] / "training" / "data" / "credit_risk_dataset.csv.gz"
    applications: list[dict[str, object]] = []
    with gzip.open(sample, "rt", newline="") as stream:
        for record in csv.DictReader(stream):
            application: dict[str, object] = {}
            for feature in model.features:
                text = record[feature.name]
                if feature.categories is not None:
                    application[feature.name] = text
                elif text == "":
                    application[feature.name] = None
                else:
                    application[feature.name] = (
                        float(text) if feature.type == "number" else round(float(text))
                    )
            applications.append(application)
    prepared = model.prepare_records(applications)
    valid = [a for a, ok in zip(applications, prepared.valid.tolist(), strict=True) if ok]
    assert len(valid) >= rows, f"the sample has only {len(valid)} valid rows"
    return valid[:rows]


def test_given_a_file_sized_call_when_rows_are_scored_in_locality_order_then_results_match_input_order(
    champion: ScoringModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given 3,000 rows of the shipped sample (some numbers missing): above LOCALITY_MIN_ROWS
    feed = champion.prepare_records(_sample_file_rows(champion, 3000)).feed
    assert runtime.LOCALITY_MIN_ROWS <= 3000
    # When they are scored, with and without reasons, and the declined ones explained afterwards
    ordered = champion.score(feed, reasons_for=False)
    ordered_reasons = champion.score(feed, reasons_for=True, top_k=3)
    declined = np.flatnonzero(ordered.decline)
    ordered_texts = champion.explain_texts(feed, ordered.probability, declined)
    monkeypatch.setattr(runtime, "LOCALITY_MIN_ROWS", 10**9)  # and again in input order
    as_given = champion.score(feed, reasons_for=False)
    as_given_reasons = champion.score(feed, reasons_for=True, top_k=3)
    as_given_texts = champion.explain_texts(feed, as_given.probability, declined)
    # Then every figure is identical: the order only changes how fast the trees are walked
    assert 200 < declined.size < 2800
    np.testing.assert_array_equal(ordered.probability, as_given.probability)
    np.testing.assert_array_equal(ordered_reasons.probability, as_given.probability)
    assert ordered_reasons.reasons == as_given_reasons.reasons
    assert ordered_texts == as_given_texts
    assert sum(map(bool, ordered_texts)) > 0.9 * declined.size


def test_given_a_file_sized_call_when_scored_then_rows_reach_the_model_sorted_by_reference_bins(
    champion: ScoringModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    feed = champion.prepare_records(_sample_file_rows(champion, 2000)).feed
    numeric = [f.onnx_input for f in champion.features if f.onnx_type == "double"]
    coded = [f.onnx_input for f in champion.features if f.onnx_type == "int64"]
    fed: list[dict[str, np.ndarray]] = []
    original = champion._session.run

    def recording_run(outputs: list[str], run_feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        fed.append(run_feed)
        return original(outputs, run_feed)  # type: ignore[no-any-return]

    monkeypatch.setattr(champion._session, "run", recording_run)
    # When a file-sized call is scored
    scores = champion.score(feed, reasons_for=False)
    # Then the model got the same rows, reordered so that their keys ascend: the coded categories'
    # codes, then the numbers' reference bins, each in card order
    assert not np.any(np.stack([feed[name].reshape(-1) for name in numeric]) == -1.0)  # -1 marks NaN below
    scored = np.nan_to_num(np.stack([fed[0][name].reshape(-1) for name in numeric]), nan=-1.0)
    given = np.nan_to_num(np.stack([feed[name].reshape(-1) for name in numeric]), nan=-1.0)
    assert not np.array_equal(scored, given)
    assert sorted(map(tuple, scored.T.tolist())) == sorted(map(tuple, given.T.tolist()))
    digits = [fed[0][name].reshape(-1) + 1 for name in coded]
    for values, name in zip(scored, numeric, strict=True):
        reference = champion.card.reference.features[name]
        assert isinstance(reference, NumericReference)
        edges = np.asarray(reference.bin_edges)
        digits.append(np.where(values == -1.0, edges.size + 1, np.searchsorted(edges, values, side="right")))
    keys = list(zip(*(d.tolist() for d in digits), strict=True))
    assert keys == sorted(keys)
    # And the perturbed rows of each declined row are consecutive: one run of pairs per row
    declined = np.flatnonzero(scores.decline)
    pairs = champion._perturbation_pairs(champion._blocks(feed), declined)
    runs = 1 + int(np.count_nonzero(np.diff(pairs.row)))
    assert runs == np.unique(pairs.row).size > 100


def test_given_onnx_inputs_named_unlike_the_features_when_a_file_is_scored_then_order_and_results_hold(
    champion: ScoringModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the champion with every graph input renamed (the card maps each feature to its input)
    model = onnx.load_from_string((CHAMPION / champion.card.onnx.file).read_bytes())
    renamed = {f.onnx_input: f"input_{index}" for index, f in enumerate(champion.features)}
    for graph_input in model.graph.input:
        graph_input.name = renamed[graph_input.name]
    for node in model.graph.node:
        for position, name in enumerate(node.input):
            node.input[position] = renamed.get(name, name)
    onnx_bytes = model.SerializeToString()
    card = champion.card.model_dump(mode="json")
    card["onnx"]["sha256"] = hashlib.sha256(onnx_bytes).hexdigest()
    card["onnx"]["input_names"] = [renamed[name] for name in card["onnx"]["input_names"]]
    for feature in card["features"]:
        feature["onnx_input"] = renamed[feature["onnx_input"]]
    other = ScoringModel.from_bytes(onnx_bytes, json.dumps(card).encode())
    applications = _sample_file_rows(champion, 2000)
    feed = champion.prepare_records(applications).feed
    other_feed = other.prepare_records(applications).feed
    fed: dict[str, list[dict[str, np.ndarray]]] = {"own names": [], "renamed": []}
    for key, scorer in (("own names", champion), ("renamed", other)):
        monkeypatch.setattr(scorer._session, "run", _recording(scorer._session.run, fed[key]))
    # When the same file-sized call is scored by both
    expected = champion.score(feed, reasons_for=True, top_k=3)
    scores = other.score(other_feed, reasons_for=True, top_k=3)
    # Then the rows reached the model in the same (reordered) order: the locality key found every
    # feature's reference under the feature's name ...
    for name, new_name in renamed.items():
        np.testing.assert_array_equal(fed["renamed"][0][new_name], fed["own names"][0][name])
    assert not np.array_equal(
        fed["renamed"][0][renamed["person_income"]][:2000], other_feed[renamed["person_income"]]
    )
    # ... and every figure is the same as with the features' own names
    np.testing.assert_array_equal(scores.probability, expected.probability)
    assert scores.reasons == expected.reasons


def _recording(run: Any, calls: list[dict[str, np.ndarray]]) -> Any:
    def recording_run(outputs: list[str], run_feed: dict[str, np.ndarray]) -> Any:
        calls.append(run_feed)
        return run(outputs, run_feed)

    return recording_run


def test_given_the_committed_card_then_its_holdout_decision_and_calibration_figures_are_reproduced() -> None:
    # Given the holdout the card was evaluated on, rebuilt from the same data and seed
    from training.datasets.catalog import load_dataset
    from training.features import model_input_frame
    from training.metrics import calibration_report, decision_outcomes
    from training.onnx_export import card_feed, onnx_probabilities
    from training.pipeline import TrainingConfig, data_fingerprint, split_holdout

    card = ScoringModel.load_directory(CHAMPION).card
    dataset = load_dataset(card.dataset)
    split = split_holdout(dataset, TrainingConfig(seed=card.lineage.seed))
    assert data_fingerprint(dataset, split).sha256 == card.data.sha256  # the same rows
    # When the committed ONNX model scores it
    feed = card_feed(card.features, model_input_frame(dataset.spec, split.holdout))
    probability = onnx_probabilities((CHAMPION / card.onnx.file).read_bytes(), feed)
    y = split.holdout[card.target].to_numpy(dtype=np.int64)
    policy = card.decision_policy
    # Then the card's decision outcomes and calibration bins are what these scores give
    assert card.holdout_decisions == decision_outcomes(
        y,
        probability,
        policy.threshold,
        policy.cost_of_approving_defaulter,
        policy.cost_of_declining_good_applicant,
    )
    assert card.holdout_calibration is not None
    recomputed = calibration_report(y, probability, card.holdout_calibration.evaluated_on)
    assert [b.count for b in card.holdout_calibration.bins] == [b.count for b in recomputed.bins]
    assert card.holdout_calibration.expected_calibration_error == pytest.approx(
        recomputed.expected_calibration_error, abs=1e-7
    )
