"""Drift (PSI) of scored rows against the card's references: stable on the training population,
significant when a feature or the score shifts, exact on a hand-checked case, additive over chunks."""

from __future__ import annotations

import gzip
import math
from pathlib import Path

import numpy as np
import pytest

from lambdas.scoring.drift import MIN_ROWS_FOR_VERDICT, SHARE_FLOOR, DriftMonitor, DriftWindow
from lambdas.scoring.runtime import ScoringModel
from tests.conftest import skip_unless_ci

REPO_ROOT = Path(__file__).resolve().parents[2]
CHAMPION = REPO_ROOT / "model_artifacts" / "credit_risk"
SHIPPED_CSV = REPO_ROOT / "training" / "data" / "credit_risk_dataset.csv.gz"


@pytest.fixture(scope="module")
def champion() -> ScoringModel:
    if not (CHAMPION / "model_card.json").is_file():
        skip_unless_ci(f"no champion bundle committed at {CHAMPION}")
    return ScoringModel.load_directory(CHAMPION)


@pytest.fixture(scope="module")
def population(champion: ScoringModel) -> dict[str, np.ndarray]:
    """5,000 valid rows drawn at random from the shipped credit_risk file, as a scoring feed."""
    with gzip.open(SHIPPED_CSV, "rt") as handle:
        header, *lines = handle.read().splitlines()
    names = header.split(",")
    picks = np.random.default_rng(3).choice(len(lines), 6000, replace=False)
    cells = [lines[i].split(",") for i in picks.tolist()]
    columns = {name: [row[position] for row in cells] for position, name in enumerate(names)}
    prepared = champion.prepare_columns(columns)
    feed = prepared.valid_feed()
    return {name: column[:5000] for name, column in feed.items()}


def _summary(model: ScoringModel, feed: dict[str, np.ndarray]) -> tuple[DriftMonitor, np.ndarray]:
    monitor = DriftMonitor(model.card)
    probability = model.score(feed, reasons_for=False).probability
    monitor.add(feed, probability)
    return monitor, probability


def test_given_rows_from_the_training_population_when_monitored_then_it_is_stable(
    champion: ScoringModel, population: dict[str, np.ndarray]
) -> None:
    monitor, _ = _summary(champion, population)
    summary = monitor.summary()
    assert summary.rows == 5000
    assert set(summary.feature_psi) == {feature.name for feature in champion.features}
    assert summary.max_feature_psi < 0.05, summary.feature_psi
    assert summary.score_psi < 0.05
    assert summary.status == "stable"


def test_given_incomes_tripled_when_monitored_then_income_drifts_significantly_and_the_score_moves(
    champion: ScoringModel, population: dict[str, np.ndarray]
) -> None:
    # Given the same applicants, each earning three times as much (loan sizes unchanged)
    shifted = dict(population)
    shifted["person_income"] = population["person_income"] * 3
    summary = _summary(champion, shifted)[0].summary()
    # Then income is the most drifted feature and the verdict is significant
    assert summary.most_drifted_feature == "person_income"
    assert summary.feature_psi["person_income"] > 0.25
    assert summary.feature_psi["loan_amnt"] < 0.05
    assert summary.status == "significant"
    # And the score moves with it (0.24 measured, below "significant": the loan-to-income ratio the model
    # leans on is unchanged)
    assert summary.score_psi > 0.1


def test_given_only_the_scores_shifted_when_monitored_then_the_score_alone_makes_the_verdict(
    champion: ScoringModel, population: dict[str, np.ndarray]
) -> None:
    # Given the same applicants scored higher (a model or feed change that moves no feature)
    monitor = DriftMonitor(champion.card)
    probability = champion.score(population, reasons_for=False).probability
    monitor.add(population, np.sqrt(probability))
    summary = monitor.summary()
    # Then every feature is stable, and the score's shift alone makes the verdict significant
    assert summary.max_feature_psi < 0.05, summary.feature_psi
    assert summary.score_psi > 0.25
    assert summary.status == "significant"


def test_given_a_category_that_took_over_when_monitored_then_its_feature_drifts(
    champion: ScoringModel, population: dict[str, np.ndarray]
) -> None:
    shifted = dict(population)
    # Grade E as the model is fed it: its text, or its code (its position in the card's categories)
    grade = champion.card.feature("loan_grade")
    fed_e: object = "E" if grade.onnx_type == "string" else (grade.categories or []).index("E")
    shifted["loan_grade"] = np.full_like(population["loan_grade"], fed_e)
    summary = _summary(champion, shifted)[0].summary()
    assert summary.most_drifted_feature == "loan_grade"
    assert summary.status == "significant"


def test_given_chunks_when_monitored_then_the_figures_equal_one_pass(
    champion: ScoringModel, population: dict[str, np.ndarray]
) -> None:
    whole, probability = _summary(champion, population)
    chunked = DriftMonitor(champion.card)
    for start in range(0, 5000, 1300):
        chunked.add(
            {name: column[start : start + 1300] for name, column in population.items()},
            probability[start : start + 1300],
        )
    assert chunked.summary() == whole.summary()


def test_given_a_hand_checked_case_when_monitored_then_the_psi_is_exact(model: ScoringModel) -> None:
    # Given the logistic test card: score bins [< 0.5, >= 0.5] at 50 % each, no missing values
    monitor = DriftMonitor(model.card)
    feed = model.prepare_records(
        [{"age": 30, "income": 1.0, "home": "RENT", "loan_ratio": 0.1, "prior_default": False}]
    ).feed
    # When 600 rows all score below 0.5 (a probability array stands in for the model's answers)
    many = {name: np.repeat(column, 600, axis=0) for name, column in feed.items()}
    monitor.add(many, np.full(600, 0.2))
    # Then the score PSI is the formula's value with empty bins floored, computed here by hand
    actual = [1.0, SHARE_FLOOR, SHARE_FLOOR]  # below 0.5, at or above 0.5, missing
    expected = [0.5, 0.5, SHARE_FLOOR]
    by_hand = sum((a - e) * math.log(a / e) for a, e in zip(actual, expected, strict=True))
    summary = monitor.summary()
    assert summary.score_psi == pytest.approx(by_hand, abs=1e-6)
    assert summary.rows == 600


def test_given_few_rows_when_monitored_then_there_is_no_verdict(
    champion: ScoringModel, population: dict[str, np.ndarray]
) -> None:
    few = {name: column[: MIN_ROWS_FOR_VERDICT - 1] for name, column in population.items()}
    summary = _summary(champion, few)[0].summary()
    assert summary.rows == MIN_ROWS_FOR_VERDICT - 1
    assert summary.status == "too_few_rows"


def test_given_a_window_when_requests_fill_it_then_one_summary_equals_a_single_pass_and_it_restarts(
    champion: ScoringModel, population: dict[str, np.ndarray]
) -> None:
    window = DriftWindow(champion.card, size=600)
    probability = champion.score(population, reasons_for=False).probability
    answers = []
    # When requests of 100 applications arrive, 1,200 in all
    for start in range(0, 1200, 100):
        request = {name: column[start : start + 100] for name, column in population.items()}
        answers.append(window.record(request, probability[start : start + 100]))
    # Then the 6th and 12th requests close a window, each equal to one pass over its 600 rows
    assert [i for i, answer in enumerate(answers) if answer is not None] == [5, 11]
    for answer, start in ((answers[5], 0), (answers[11], 600)):
        single = DriftMonitor(champion.card)
        single.add(
            {name: column[start : start + 600] for name, column in population.items()},
            probability[start : start + 600],
        )
        assert answer == single.summary()
