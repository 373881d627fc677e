"""Reason texts follow the side of the baseline a number is on (a model need not be monotone)."""

from __future__ import annotations

import pytest

from lambdas.scoring.runtime import ScoringModel
from tests.scoring import bundles
from tests.scoring.bundles import BASELINE, count_onnx_rows, good_application


def _directional_model() -> ScoringModel:
    onnx_bytes = bundles.logistic_onnx_bytes()
    card = bundles.logistic_card(onnx_bytes)
    features = [
        feature.model_copy(
            update={
                "reason_high": f"High {feature.name}",
                "reason_low": f"Low {feature.name}",
            }
        )
        if feature.onnx_type == "double"
        else feature
        for feature in card.features
    ]
    card = card.model_copy(update={"features": features})
    return ScoringModel.from_bytes(onnx_bytes, card.model_dump_json().encode())


def test_given_values_on_either_side_of_the_baseline_when_explained_then_texts_name_the_side() -> None:
    model = _directional_model()
    # Given an applicant younger and poorer than the baseline, with a larger loan ratio
    application = good_application()
    assert application["age"] < BASELINE["age"]  # type: ignore[operator]
    assert application["income"] < BASELINE["income"]  # type: ignore[operator]
    assert application["loan_ratio"] > BASELINE["loan_ratio"]  # type: ignore[operator]
    # When scored with all reasons
    (reasons,) = model.score(model.prepare_records([application]).feed, top_k=5).reasons
    texts = {reason.feature: reason.text for reason in reasons}
    # Then each number is described from its own side of the baseline; categories keep their text
    assert texts["loan_ratio"] == "High loan_ratio"
    assert texts["income"] == "Low income"
    assert texts["age"] == "Low age"
    assert texts["home"] == "Home ownership status"


def test_given_a_card_without_directional_texts_when_explained_then_the_generic_text_is_used() -> None:
    model = ScoringModel.from_bytes(
        bundles.logistic_onnx_bytes(),
        bundles.logistic_card(bundles.logistic_onnx_bytes()).model_dump_json().encode(),
    )
    (reasons,) = model.score(model.prepare_records([good_application()]).feed, top_k=1).reasons
    assert reasons[0].text == "Loan is large relative to income"


def test_given_features_at_their_baseline_when_explained_then_they_are_not_re_scored(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = _directional_model()
    calls = count_onnx_rows(model, monkeypatch)
    # Given an applicant whose age and home are exactly the baseline values
    application = {**good_application(), "age": 30, "home": "MORTGAGE"}
    assert BASELINE["age"] == 30.0
    assert BASELINE["home"] == "MORTGAGE"
    (reasons,) = model.score(model.prepare_records([application]).feed, top_k=5).reasons
    # Then only the three other features are re-scored, in the same single call
    assert calls == [1 + 3]
    assert {reason.feature for reason in reasons} == {"income", "loan_ratio", "prior_default"}
