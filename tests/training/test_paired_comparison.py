"""The champion comparison's paired bootstrap: intervals of the differences candidate - champion in ROC AUC
and Brier, both models scored on the same resampled holdout rows; the card field holding them, the gate
notes that report them (without changing the gate's decision), and a training run that fills them.

New names are reached through their modules (``metrics.paired_bootstrap_differences``), so each test
fails on its own, with the name it misses, where the code lacks it.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray
from sklearn.metrics import brier_score_loss, roc_auc_score

from lambdas.scoring import card as card_schema
from lambdas.scoring.card import ModelCard
from training import cli, metrics, pipeline
from training.datasets.catalog import LoadedDataset, load_dataset
from training.registry import RegistryError, gate

REPO_ROOT = Path(__file__).resolve().parents[2]
COMMITTED_CARD = REPO_ROOT / "model_artifacts" / "credit_risk" / "model_card.json"

Scores = tuple[NDArray[np.int_], NDArray[np.float64], NDArray[np.float64]]


def _correlated(seed: int = 0) -> Scores:
    """Labels, a candidate and a champion whose scores correlate at about 0.99: the champion's log-odds
    plus a little noise and a small gain on the defaulters (candidate ROC AUC ~0.025 higher)."""
    rng = np.random.default_rng(seed)
    y = np.array([1] * 150 + [0] * 600)
    log_odds = rng.normal(size=len(y)) + 1.5 * y - 1.5
    champion = 1 / (1 + np.exp(-log_odds))
    candidate = 1 / (1 + np.exp(-(log_odds + 0.2 * y + rng.normal(scale=0.15, size=len(y)))))
    return y, candidate, champion


def _width(interval: card_schema.Interval) -> float:
    return interval.upper - interval.lower


# --- The paired bootstrap ----------------------------------------------------------------------------------


def test_given_correlated_models_then_the_paired_interval_is_far_narrower_than_an_unpaired_one() -> None:
    y, candidate, champion = _correlated()
    assert np.corrcoef(candidate, champion)[0, 1] > 0.98
    paired = metrics.paired_bootstrap_differences(y, candidate, champion, resamples=300, seed=3)
    # An unpaired interval of the same differences: each model on its own, independent resamples
    own_rows = zip(
        metrics.stratified_resamples(y, 300, seed=1),
        metrics.stratified_resamples(y, 300, seed=2),
        strict=True,
    )
    auc, brier = [], []
    for (p, n), (q, m) in own_rows:
        auc.append(metrics.rank_auc(candidate[p], candidate[n]) - metrics.rank_auc(champion[q], champion[m]))
        brier.append(
            brier_score_loss(y[np.r_[p, n]], candidate[np.r_[p, n]])
            - brier_score_loss(y[np.r_[q, m]], champion[np.r_[q, m]])
        )
    unpaired_auc, unpaired_brier = np.quantile(auc, [0.025, 0.975]), np.quantile(brier, [0.025, 0.975])
    # Then the paired intervals are under a third as wide (about a sixth and an eighth here)
    assert _width(paired.roc_auc) < (unpaired_auc[1] - unpaired_auc[0]) / 3
    assert _width(paired.brier) < (unpaired_brier[1] - unpaired_brier[0]) / 3
    # And they tell apart what the unpaired one cannot: its ROC AUC interval holds 0, the paired one not
    assert unpaired_auc[0] < 0 < unpaired_auc[1]
    assert paired.roc_auc.lower > 0


def test_given_two_models_then_the_intervals_hold_the_observed_differences() -> None:
    y, candidate, champion = _correlated(seed=4)
    paired = metrics.paired_bootstrap_differences(y, candidate, champion, resamples=300, seed=8)
    auc_difference = roc_auc_score(y, candidate) - roc_auc_score(y, champion)
    brier_difference = brier_score_loss(y, candidate) - brier_score_loss(y, champion)
    assert paired.roc_auc.lower < auc_difference < paired.roc_auc.upper
    assert paired.brier.lower < brier_difference < paired.brier.upper
    # And the field says how they were made
    assert (paired.resamples, paired.seed, paired.confidence) == (300, 8, 0.95)
    assert "paired stratified bootstrap" in paired.method
    assert "150 positives and 600 negatives" in paired.method


def test_given_the_same_seed_then_the_intervals_repeat_and_another_seed_gives_others() -> None:
    y, candidate, champion = _correlated()
    first = metrics.paired_bootstrap_differences(y, candidate, champion, resamples=200, seed=5)
    assert metrics.paired_bootstrap_differences(y, candidate, champion, resamples=200, seed=5) == first
    assert metrics.paired_bootstrap_differences(y, candidate, champion, resamples=200, seed=6) != first


def test_given_the_same_seed_then_the_rows_resampled_are_those_of_the_holdout_intervals() -> None:
    # Given a champion scoring every row 0.5: its ROC AUC is 0.5 and its Brier 0.25 in every resample,
    # so the paired differences are the candidate's own resampled metrics shifted by those constants
    y, candidate, _ = _correlated()
    constant = np.full(len(y), 0.5)
    paired = metrics.paired_bootstrap_differences(y, candidate, constant, resamples=200, seed=9)
    own = metrics.bootstrap_intervals(y, candidate, resamples=200, seed=9)
    # Then they are the holdout intervals' own resamples, drawn alike from the training seed
    assert paired.roc_auc.lower == pytest.approx(own.roc_auc.lower - 0.5, abs=1e-12)
    assert paired.roc_auc.upper == pytest.approx(own.roc_auc.upper - 0.5, abs=1e-12)
    assert paired.brier.lower == pytest.approx(own.brier.lower - 0.25, abs=1e-12)
    assert paired.brier.upper == pytest.approx(own.brier.upper - 0.25, abs=1e-12)


def test_given_a_holdout_then_every_resample_keeps_its_class_counts() -> None:
    y = np.array([0, 1, 0, 0, 1, 0, 0, 0, 1, 0] * 7)
    for positive_rows, negative_rows in metrics.stratified_resamples(y, resamples=50, seed=2):
        assert len(positive_rows) == 21
        assert len(negative_rows) == 49
        assert set(y[positive_rows]) == {1}
        assert set(y[negative_rows]) == {0}


def test_given_one_positive_then_every_resample_keeps_it_and_the_intervals_are_defined() -> None:
    # A plain bootstrap leaves the single defaulter out of ~37% of resamples, where ROC AUC is undefined
    y, candidate, champion = _correlated()
    keep = np.r_[0, 150:230]  # one positive, 80 negatives
    paired = metrics.paired_bootstrap_differences(y[keep], candidate[keep], champion[keep], 200, seed=1)
    assert -1.0 <= paired.roc_auc.lower <= paired.roc_auc.upper <= 1.0
    assert -1.0 <= paired.brier.lower <= paired.brier.upper <= 1.0


def test_given_probabilities_of_other_rows_or_no_resamples_then_they_are_refused() -> None:
    y, candidate, champion = _correlated()
    with pytest.raises(ValueError, match="same rows"):
        metrics.paired_bootstrap_differences(y, candidate, champion[:-1], resamples=100, seed=0)
    with pytest.raises(ValueError, match="resamples"):
        metrics.paired_bootstrap_differences(y, candidate, champion, resamples=0, seed=0)


# --- The card field -----------------------------------------------------------------------------------------


def _committed() -> ModelCard:
    return ModelCard.model_validate_json(COMMITTED_CARD.read_text())


def _intervals(roc_auc: tuple[float, float], brier: tuple[float, float]) -> card_schema.DifferenceIntervals:
    return card_schema.DifferenceIntervals(
        method="paired stratified bootstrap",
        resamples=500,
        seed=42,
        confidence=0.95,
        roc_auc=card_schema.Interval(lower=roc_auc[0], upper=roc_auc[1]),
        brier=card_schema.Interval(lower=brier[0], upper=brier[1]),
    )


def test_given_a_card_with_difference_intervals_then_it_survives_its_json_form() -> None:
    committed = _committed()
    comparison = card_schema.ChampionComparison(
        champion_version="credit_risk-000000000000",
        champion_metrics=committed.holdout_metrics,
        note="champion scored on this card's holdout rows",
        difference_intervals=_intervals((-0.0021, 0.0045), (-0.0011, 0.0004)),
    )
    card = committed.model_copy(update={"champion_comparison": comparison})
    loaded = ModelCard.model_validate_json(card.model_dump_json())
    assert loaded == card
    assert loaded.champion_comparison is not None
    assert loaded.champion_comparison.difference_intervals == comparison.difference_intervals


def test_given_a_comparison_written_before_the_intervals_then_the_card_loads_without_them() -> None:
    raw = json.loads(COMMITTED_CARD.read_text())
    assert raw.get("champion_comparison") is None  # the committed card: no comparison at all
    raw["champion_comparison"] = {
        "champion_version": "credit_risk-000000000000",
        "champion_metrics": raw["holdout_metrics"],
        "note": "champion scored on this card's holdout rows",
    }
    comparison = ModelCard.model_validate(raw).champion_comparison
    assert comparison is not None
    assert comparison.difference_intervals is None


def test_given_reversed_difference_bounds_then_the_card_refuses_them() -> None:
    with pytest.raises(ValueError, match="lower"):
        _intervals((0.01, -0.01), (0.0, 0.0))


# --- The gate's notes ---------------------------------------------------------------------------------------


def _card(version: str, roc_auc: float, brier: float) -> dict[str, Any]:
    return {
        "model_name": "credit_risk-default-risk",
        "model_version": version,
        "dataset": "credit_risk",
        "onnx": {"sha256": "0" * 64},
        "holdout_metrics": {"roc_auc": roc_auc, "brier": brier},
        "parity": {"passed": True},
        "data": {"sha256": "data-2", "holdout": "records by keyed hash 20% (seed 42)"},
    }


def _candidate(
    roc_auc: float,
    brier: float,
    champion: tuple[float, float],
    intervals: card_schema.DifferenceIntervals | None,
) -> dict[str, Any]:
    """A candidate card whose training scored champion v1 on its holdout at ``champion`` (ROC AUC, Brier)."""
    candidate = _card("v2", roc_auc, brier)
    candidate["champion_comparison"] = {
        "champion_version": "v1",
        "champion_metrics": {"roc_auc": champion[0], "brier": champion[1]},
        "note": "champion v1 scored on this card's holdout rows",
        "difference_intervals": intervals.model_dump(mode="json") if intervals else None,
    }
    return candidate


CHAMPION = _card("v1", 0.9400, 0.0600)


def _notes_on_differences(reasons: list[str]) -> list[str]:
    return [reason for reason in reasons if "paired bootstrap interval" in reason]


def test_given_a_card_with_intervals_then_the_gate_notes_each_difference_with_its_interval() -> None:
    candidate = _candidate(0.9412, 0.0597, (0.9400, 0.0600), _intervals((-0.0021, 0.0045), (-0.0011, 0.0004)))
    decision = gate(candidate, CHAMPION)
    assert decision.passed
    assert _notes_on_differences(decision.reasons) == [
        "note: ROC AUC difference +0.0012 (95% paired bootstrap interval -0.0021 to +0.0045; "
        "holds 0: within holdout noise)",
        "note: Brier difference -0.0003 (95% paired bootstrap interval -0.0011 to +0.0004; "
        "holds 0: within holdout noise)",
    ]


def test_given_a_tolerance_refusal_within_noise_then_the_gate_still_refuses_and_says_it_is_noise() -> None:
    # Given a candidate 0.006 below the champion's ROC AUC (beyond the 0.005 tolerance), on an interval
    # that holds 0
    within_noise = _intervals((-0.0130, 0.0010), (-0.0010, 0.0010))
    decision = gate(_candidate(0.9340, 0.0600, (0.9400, 0.0600), within_noise), CHAMPION)
    # Then the decision is the tolerance's, as before, and the note tells the reviewer it is noise
    assert not decision.passed
    assert "worse than the champion's 0.9400" in decision.reasons[0]
    (auc_note, _) = _notes_on_differences(decision.reasons)
    assert auc_note.startswith(
        "note: ROC AUC difference -0.0060 (95% paired bootstrap interval -0.0130 to +0.0010"
    )
    assert "holds 0: within holdout noise" in auc_note
    # And a real loss, one the interval keeps below 0, is called so (ROC AUC down, Brier up)
    real_loss = _intervals((-0.0090, -0.0031), (0.0004, 0.0020))
    decision = gate(_candidate(0.9340, 0.0612, (0.9400, 0.0600), real_loss), CHAMPION)
    assert not decision.passed
    notes = _notes_on_differences(decision.reasons)
    assert [note.endswith("excludes 0: the candidate is worse beyond holdout noise)") for note in notes] == [
        True,
        True,
    ]
    # And a real gain is called a gain (ROC AUC up, Brier down)
    real_gain = _intervals((0.0031, 0.0090), (-0.0020, -0.0004))
    notes = _notes_on_differences(
        gate(_candidate(0.9460, 0.0588, (0.9400, 0.0600), real_gain), CHAMPION).reasons
    )
    assert all(note.endswith("excludes 0: the candidate is better beyond holdout noise)") for note in notes)
    assert len(notes) == 2


@pytest.mark.parametrize(
    ("roc_auc", "brier"),
    [(0.9412, 0.0597), (0.9340, 0.0600), (0.9400, 0.0660), (0.9360, 0.0640)],
)
def test_given_the_intervals_then_the_gate_decides_exactly_as_without_them(
    roc_auc: float, brier: float
) -> None:
    with_them = gate(
        _candidate(roc_auc, brier, (0.9400, 0.0600), _intervals((-0.02, 0.02), (-0.01, 0.01))), CHAMPION
    )
    without = gate(_candidate(roc_auc, brier, (0.9400, 0.0600), None), CHAMPION)
    assert with_them.passed == without.passed
    # The same reasons, the interval notes added
    assert [
        r for r in with_them.reasons if r not in _notes_on_differences(with_them.reasons)
    ] == without.reasons
    assert len(_notes_on_differences(with_them.reasons)) == 2
    assert _notes_on_differences(without.reasons) == []


def test_given_champion_metrics_from_the_caller_then_the_cards_intervals_are_not_quoted() -> None:
    # The card's intervals are of the differences from its own champion metrics, not the caller's
    candidate = _candidate(0.9412, 0.0597, (0.9400, 0.0600), _intervals((-0.0021, 0.0045), (-0.0011, 0.0004)))
    decision = gate(
        candidate, CHAMPION, champion_metrics_on_candidate_holdout={"roc_auc": 0.93, "brier": 0.06}
    )
    assert decision.passed
    assert _notes_on_differences(decision.reasons) == []


def test_given_a_malformed_interval_then_the_gate_fails_naming_the_key() -> None:
    candidate = _candidate(0.9412, 0.0597, (0.9400, 0.0600), _intervals((-0.0021, 0.0045), (-0.0011, 0.0004)))
    candidate["champion_comparison"]["difference_intervals"]["brier"]["upper"] = float("nan")
    with pytest.raises(RegistryError, match=r"champion_comparison\.difference_intervals\.brier\.upper"):
        gate(candidate, CHAMPION)


# --- A training run with a registered champion ---------------------------------------------------------


FAST = pipeline.TrainingConfig(candidates=["logistic_regression"], n_jobs=1, bootstrap_resamples=100, seed=42)


def _credit_sample(rows: int) -> LoadedDataset:
    dataset = load_dataset("credit_risk")
    frame = dataset.frame.sample(rows, random_state=11).reset_index(drop=True)
    return LoadedDataset(dataset.spec, frame, dataset.cleaning, "test", rows)


@pytest.fixture(scope="module")
def champion_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A champion trained on 1,000 rows, with the candidate's seed (so its holdout rule is the same)."""
    folder = tmp_path_factory.mktemp("paired_champion")
    pipeline.train_bundle(_credit_sample(1000), folder, FAST)
    return folder


@pytest.fixture(scope="module")
def candidate_card(champion_bundle: Path) -> ModelCard:
    """A candidate trained on those rows and 200 more, the champion scored on its holdout."""
    return pipeline.train(_credit_sample(1200), replace(FAST, champion_bundle=champion_bundle)).card


def test_given_a_champion_bundle_when_trained_then_the_comparison_holds_the_paired_intervals(
    candidate_card: ModelCard,
) -> None:
    comparison = candidate_card.champion_comparison
    assert comparison is not None
    assert comparison.champion_metrics is not None
    differences = comparison.difference_intervals
    assert differences is not None
    # Seeded by the training seed, with the holdout intervals' resample count
    assert (differences.seed, differences.resamples) == (FAST.seed, FAST.bootstrap_resamples)
    holdout = candidate_card.data
    assert (
        f"{holdout.holdout_positives} positives and {holdout.holdout_negatives} negatives"
        in differences.method
    )
    # Around the differences of the card's own figures (candidate holdout_metrics - champion_metrics)
    auc_difference = candidate_card.holdout_metrics.roc_auc - comparison.champion_metrics.roc_auc
    brier_difference = candidate_card.holdout_metrics.brier - comparison.champion_metrics.brier
    assert differences.roc_auc.lower <= auc_difference <= differences.roc_auc.upper
    assert differences.brier.lower <= brier_difference <= differences.brier.upper
    # And the card survives its JSON form
    assert ModelCard.model_validate_json(candidate_card.model_dump_json()) == candidate_card


def test_given_the_trained_card_when_gated_and_shown_then_the_intervals_are_reported(
    candidate_card: ModelCard, champion_bundle: Path
) -> None:
    champion = json.loads((champion_bundle / "model_card.json").read_text())
    decision = gate(candidate_card.model_dump(mode="json"), champion)
    notes = _notes_on_differences(decision.reasons)
    assert [note.split(" difference ")[0] for note in notes] == ["note: ROC AUC", "note: Brier"]
    summary = cli.card_summary(candidate_card)
    assert f"vs registered champion {champion['model_version']} on this holdout" in summary
    assert "95% paired bootstrap interval" in summary


def test_given_no_candidate_probabilities_or_an_unscored_champion_then_there_are_no_intervals(
    candidate_card: ModelCard, champion_bundle: Path
) -> None:
    holdout = pipeline.split_holdout(_credit_sample(1200), FAST).holdout
    # Without the candidate's probabilities the champion is scored as before, without intervals
    plain = pipeline.compare_with_champion(champion_bundle, holdout, "loan_status", candidate_card.data)
    assert plain.champion_metrics is not None
    assert plain.difference_intervals is None
    # And a champion training declines to score gets none either, whatever it is given
    other_rule = candidate_card.data.model_copy(update={"holdout": "records by keyed hash 20% (seed 7)"})
    unscored = pipeline.compare_with_champion(
        champion_bundle,
        holdout,
        "loan_status",
        other_rule,
        candidate_probability=np.full(len(holdout), 0.2),
        resamples=100,
        seed=42,
    )
    assert unscored.champion_metrics is None
    assert unscored.difference_intervals is None
    # And the committed card, trained without a champion, shows no comparison line
    assert "vs registered champion" not in cli.card_summary(_committed())
