"""A missing value that raised the risk is explained as missing, not as a value the applicant lacks.

A nullable feature left empty gets the card's ``reason_missing`` (or, on a card written before it
existed, "<description> not provided"), on every path that gives reasons: a few applications (the
small path), many (the block path, locality order included), ``explain`` and the batch's joined
``explain_texts``. A present value keeps its ``reason_high`` / ``reason_low`` text, and the API sizes
its audit lines for the missing-value texts too (Given/When/Then in names)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from lambdas.api.app import create_api, results_per_audit_line
from lambdas.scoring.card import FeatureSchema, ModelCard
from lambdas.scoring.runtime import LOCALITY_MIN_ROWS, SMALL_REQUEST_ROWS, ScoringModel
from tests.api.conftest import batch_audit_lines, settings_for
from tests.conftest import skip_unless_ci
from tests.scoring import bundles
from tests.scoring.bundles import good_application, write_logistic_bundle
from training.datasets.catalog import BUILT_IN
from training.datasets.spec import FeatureSpec
from training.pipeline import feature_schema

CHAMPION = Path(__file__).resolve().parents[2] / "model_artifacts" / "credit_risk"
# CloudWatch Logs' largest event (UTF-8 bytes of the message, plus 26 bytes it counts for each event).
MAX_EVENT_BYTES = 256 * 1024 - 26


def _reasons_on_every_path(
    model: ScoringModel, applications: Sequence[dict[str, object]], top_k: int = 3
) -> list[list[tuple[str, str]]]:
    """(feature, text) of each application's reasons, after checking that every path gives the same:
    each application scored alone, all together (repeated past LOCALITY_MIN_ROWS, so the block path
    reorders them), ``explain`` after scoring, and the batch's ``explain_texts``."""
    prepared = model.prepare_records(applications)
    assert prepared.errors == {}
    alone = [
        [(r.feature, r.text) for r in model.score(model.prepare_records([a]).feed, top_k=top_k).reasons[0]]
        for a in applications
    ]
    repeats = LOCALITY_MIN_ROWS // len(applications) + 1
    many = {name: np.tile(column, (repeats, 1)) for name, column in prepared.feed.items()}
    rows = len(applications) * repeats
    assert rows > max(SMALL_REQUEST_ROWS, LOCALITY_MIN_ROWS)
    together = model.score(many, top_k=top_k)
    selected = np.arange(rows, dtype=np.intp)
    explained = model.explain(many, together.probability, selected, top_k=top_k)
    joined = model.explain_texts(many, together.probability, selected, top_k=top_k)
    for row in range(rows):
        expected = alone[row % len(applications)]
        assert [(r.feature, r.text) for r in together.reasons[row]] == expected, row
        assert [(r.feature, r.text) for r in explained[row]] == expected, row
        assert joined[row] == "; ".join(text for _, text in expected), row
    return alone


def _with_features(card: ModelCard, **updates: dict[str, object]) -> ModelCard:
    """``card`` with some features changed (feature name -> field updates), validated again."""
    data = card.model_dump(mode="json")
    for feature in data["features"]:
        feature.update(updates.get(feature["name"], {}))
    return ModelCard.model_validate(data)


def _model(onnx_bytes: bytes, card: ModelCard) -> ScoringModel:
    return ScoringModel.from_bytes(onnx_bytes, card.model_dump_json().encode())


# ---- the committed champion ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def champion_parts() -> tuple[bytes, ModelCard]:
    if not (CHAMPION / "model_card.json").is_file():
        skip_unless_ci(f"no champion bundle committed at {CHAMPION} yet")
    card = ModelCard.model_validate_json((CHAMPION / "model_card.json").read_bytes())
    return (CHAMPION / card.onnx.file).read_bytes(), card


def _risky_applications(card: ModelCard) -> tuple[dict[str, object], dict[str, object]]:
    """A weak-grade application with employment length and interest rate missing, and the same with
    both given (no employment, a high rate): on the champion all three raise the risk."""
    base: dict[str, object] = dict(card.reference.reason_baseline)
    base |= {"loan_grade": "D", "loan_percent_income": 0.3}
    missing = base | {"person_emp_length": None, "loan_int_rate": None}
    present = base | {"person_emp_length": 0.0, "loan_int_rate": 20.0}
    return missing, present


@pytest.mark.parametrize(
    "card_has_reason_missing", [True, False], ids=["card-as-committed", "card-before-reason-missing"]
)
def test_given_the_champion_when_missing_values_raise_the_risk_then_the_texts_say_they_are_missing(
    champion_parts: tuple[bytes, ModelCard], card_has_reason_missing: bool
) -> None:
    onnx_bytes, card = champion_parts
    # Given the committed card (training wrote reason_missing for its nullable features) or the same card
    # as written before the field existed (bundles registered earlier: the derived text)
    expected = {
        "person_emp_length": "Employment length not provided",
        "loan_int_rate": "Interest rate not provided",
    }
    assert {f.name: f.reason_missing for f in card.features if f.reason_missing} == expected
    if not card_has_reason_missing:
        card = _with_features(
            card, person_emp_length={"reason_missing": None}, loan_int_rate={"reason_missing": None}
        )
        expected = {
            "person_emp_length": "Years in current employment not provided",
            "loan_int_rate": "Interest rate of the loan not provided",
        }
    model = _model(onnx_bytes, card)
    missing, present = _risky_applications(card)
    # When both applications are explained, on every path
    missing_reasons, present_reasons = _reasons_on_every_path(model, [missing, present])
    # Then the missing values are reasons, said to be missing, never "Short employment history" etc.
    assert [r for r in missing_reasons if r[0] in expected] == [
        (name, text) for name, text in expected.items()
    ]
    assert ("loan_grade", "Weak loan grade") in missing_reasons
    # and the given values keep the text of their side of the baseline
    assert {r for r in present_reasons if r[0] in expected} == {
        ("person_emp_length", "Low employment length"),
        ("loan_int_rate", "High interest rate"),
    }


# ---- a small card: numbers and categories, both category encodings --------------------------------


@pytest.fixture(params=bundles.CATEGORY_INPUTS)
def small_parts(request: pytest.FixtureRequest) -> tuple[bytes, ModelCard]:
    """The logistic bundle with directional texts, income nullable (its card) and home made nullable."""
    onnx_bytes = bundles.logistic_onnx_bytes(request.param)
    card = _with_features(
        bundles.logistic_card(onnx_bytes, category_input=request.param),
        income={"reason_high": "Income above the typical", "reason_low": "Income below the typical"},
        home={"nullable": True},
    )
    assert card.feature("income").nullable
    assert card.feature("income").reason_missing is None
    return onnx_bytes, card


def test_given_a_card_without_reason_missing_when_a_missing_value_raises_the_risk_then_the_text_is_derived(
    small_parts: tuple[bytes, ModelCard],
) -> None:
    onnx_bytes, card = small_parts
    model = _model(onnx_bytes, card)
    # Given applications with no income, no home, and both given (income below the baseline, renting)
    no_income = {**good_application(), "income": None}
    no_home = {**good_application(), "home": None}
    given = good_application()
    # When explained with every reason that raised the risk
    reasons = _reasons_on_every_path(model, [no_income, no_home, given], top_k=5)
    # Then a missing value gets the card's description followed by "not provided"
    assert ("income", "Yearly income not provided") in reasons[0]
    assert ("home", "Home ownership not provided") in reasons[1]
    # and a given value keeps its side's text (numbers) or the category's text
    assert ("income", "Income below the typical") in reasons[1]
    assert ("income", "Income below the typical") in reasons[2]
    assert ("home", "Home ownership status") in reasons[2]


def test_given_a_card_with_reason_missing_when_a_missing_value_raises_the_risk_then_that_text_is_used(
    small_parts: tuple[bytes, ModelCard],
) -> None:
    onnx_bytes, card = small_parts
    card = _with_features(
        card,
        income={"reason_missing": "Income not provided"},
        home={"reason_missing": "Housing not provided"},
    )
    model = _model(onnx_bytes, card)
    reasons = _reasons_on_every_path(
        model, [{**good_application(), "income": None, "home": None}, good_application()], top_k=5
    )
    assert {"Income not provided", "Housing not provided"} <= {text for _, text in reasons[0]}
    assert not {"Income not provided", "Housing not provided"} & {text for _, text in reasons[1]}


def test_given_a_card_when_reason_missing_is_blank_then_it_is_refused() -> None:
    card = bundles.logistic_card(bundles.logistic_onnx_bytes())
    with pytest.raises(ValidationError, match="reason_missing"):
        _with_features(card, income={"reason_missing": "  "})


def test_given_a_feature_spec_when_nullable_then_its_card_text_names_the_missing_value() -> None:
    assert FeatureSpec("loan_int_rate", "number", label="interest rate").missing_reason() == (
        "Interest rate not provided"
    )
    assert FeatureSpec("fico", "integer", label="FICO score").missing_reason() == "FICO score not provided"
    assert FeatureSpec("emp_length", "number").missing_reason() == "Emp length not provided"


# ---- the API's audit lines ------------------------------------------------------------------------


def _card_with(edit: Callable[[dict[str, Any]], None]) -> ModelCard:
    data = bundles.logistic_card(bundles.logistic_onnx_bytes()).model_dump(mode="json")
    edit(data)
    return ModelCard.model_validate(data)


def _income(data: dict[str, Any]) -> dict[str, Any]:
    (income,) = [f for f in data["features"] if f["name"] == "income"]
    assert FeatureSchema.model_validate(income).nullable
    assert isinstance(income, dict)
    return income


@pytest.mark.parametrize("field", ["description", "reason_missing"])
def test_given_a_long_missing_value_text_when_audit_lines_are_sized_then_it_counts(field: str) -> None:
    # Given a nullable feature whose missing-value text (its own, or derived from the description)
    # is far longer than every other text of the card
    long_card = _card_with(lambda data: _income(data).update({field: "\u00e9" * 2000}))
    short_card = _card_with(lambda data: _income(data).update({field: "Income"}))
    # When the API sizes its audit lines, then fewer results fit in one
    assert results_per_audit_line(long_card, False) < results_per_audit_line(short_card, False)


def test_given_long_derived_missing_texts_when_the_largest_batch_is_logged_then_every_line_fits(
    tmp_path: Path,
) -> None:
    # Given a card whose nullable income has a long description (JSON escapes each character to 6
    # bytes) and no reason_missing, and the largest batch, every application without an income
    bundle = write_logistic_bundle(tmp_path / "long")
    data = json.loads((bundle / "model_card.json").read_text())
    _income(data)["description"] = "\u00e9" * 2000
    (bundle / "model_card.json").write_text(json.dumps(data))
    limit = 1000
    api = create_api(ScoringModel.load_directory(bundle), settings_for(bundle, max_batch_applications=limit))
    applications = [
        {"application_id": f"{i:04d}", "features": {**good_application(), "income": None}}
        for i in range(limit)
    ]
    # When it is scored, then no audit line is longer than a log event, and every result carries the
    # long text
    raw = batch_audit_lines(api, applications)
    logged = [r for line in raw for r in json.loads(line)["results"]]
    assert len(logged) == limit
    assert all("\u00e9" * 2000 + " not provided" in r["reason_texts"] for r in logged)


def test_given_training_rows_with_a_missing_value_then_only_that_features_card_entry_says_so() -> None:
    # Given credit_risk's spec and training inputs where the interest rate is missing once
    spec = BUILT_IN["credit_risk"]
    rows = {f.name: [1.0, 2.0] if f.kind != "category" else ["a", "b"] for f in spec.features}
    rows["loan_int_rate"] = [11.5, float("nan")]
    schemas = {s.name: s for s in feature_schema(spec, pd.DataFrame(rows))}

    # Then the nullable feature's entry carries the spec's missing text, and the others none
    assert schemas["loan_int_rate"].nullable
    assert schemas["loan_int_rate"].reason_missing == spec.feature("loan_int_rate").missing_reason()
    assert schemas["loan_int_rate"].missing_reason().endswith("not provided")
    assert all(s.reason_missing is None for name, s in schemas.items() if name != "loan_int_rate")
