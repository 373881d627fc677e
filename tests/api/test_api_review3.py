"""Review 3 of the serving path: a broken model's answers, feature names pydantic treats specially, and
the reason texts in the audit trail (Given/When/Then in names)."""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lambdas.api.app import ScoringApi, create_api
from lambdas.api.observability import logger
from lambdas.api.wiring import make_handler
from lambdas.audit import API_DECISION, API_DECISIONS
from lambdas.scoring.runtime import ScoringModel
from tests.api.conftest import api_context, batch_audit_lines, settings_for, stored_event
from tests.conftest import captured_log
from tests.scoring.bundles import FEATURE_ORDER, MODEL_VERSION, good_application, write_logistic_bundle

# CloudWatch Logs' largest event (UTF-8 bytes of the message, plus 26 bytes it counts for each event).
MAX_EVENT_BYTES = 256 * 1024 - 26


def _call(
    api: ScoringApi, body: object, event_name: str = "score.json"
) -> tuple[int, dict[str, Any], list[dict[str, Any]]]:
    """Status, JSON body and the JSON log lines of one request."""
    event = stored_event(event_name)
    event["body"] = json.dumps(body)
    with captured_log(logger) as log:
        result = make_handler(api)(event, api_context())  # type: ignore[arg-type]
    lines = [json.loads(line) for line in log.getvalue().splitlines() if line.startswith("{")]
    return result["statusCode"], json.loads(result["body"]), lines


def _card_edited(folder: Path, edit: Callable[[dict[str, Any]], None]) -> Path:
    """The logistic bundle in ``folder`` with its card changed by ``edit`` (a function of the JSON)."""
    bundle = write_logistic_bundle(folder)
    card = json.loads((bundle / "model_card.json").read_text())
    edit(card)
    (bundle / "model_card.json").write_text(json.dumps(card))
    return bundle


# ---- a model that answers something other than a probability ---------------------------------------


@pytest.mark.parametrize("answer", [1.5, -0.2, float("nan")])
def test_given_a_model_answering_outside_0_1_when_scored_then_500_and_no_decision_is_recorded(
    api_bundle: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], answer: float
) -> None:
    # Given a loaded model that answers every row with something that is not a probability
    api = create_api(ScoringModel.load_directory(api_bundle), settings_for(api_bundle))
    original = api.model._session.run

    def broken(outputs: list[str], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        (probabilities,) = original(outputs, feed)
        return [
            np.column_stack([1.0 - np.full(len(probabilities), answer), np.full(len(probabilities), answer)])
        ]

    monkeypatch.setattr(api.model._session, "run", broken)
    capsys.readouterr()
    # When an application is scored
    status, body, lines = _call(api, {"application_id": "a-1", "features": good_application()})
    # Then it is a fault, not a 200 with a "probability" of 1.5 (outside the published schema's 0 to 1)
    assert status == 500, body
    assert body["error"]["code"] == "internal_error"
    # and no decision reaches the audit trail or the decision metrics; the log names the model's fault
    assert not [line for line in lines if line.get("message") in (API_DECISION, API_DECISIONS)]
    (fault,) = [line for line in lines if line.get("message") == "unhandled fault"]
    assert "ModelOutputError" in fault["exception"]
    assert MODEL_VERSION in fault["exception"]
    assert "Decision_" not in capsys.readouterr().out


# ---- feature names pydantic treats specially --------------------------------------------------------

# Card feature names that are no plain pydantic field: a leading underscore (a private attribute, never
# validated), names of BaseModel's own members (model_config broke the cold start, json only warned),
# and a name that is no identifier.
RENAMED = {
    "age": "_age",
    "income": "model_config",
    "home": "json",
    "loan_ratio": "model_dump",
    "prior_default": "prior default",
}


def _renamed(card: dict[str, Any]) -> None:
    for feature in card["features"]:
        feature["name"] = RENAMED.get(feature["name"], feature["name"])
    reference = card["reference"]
    for key in ("features", "reason_baseline"):
        reference[key] = {RENAMED.get(name, name): value for name, value in reference[key].items()}


@pytest.fixture(scope="module")
def renamed_api(tmp_path_factory: pytest.TempPathFactory) -> ScoringApi:
    bundle = _card_edited(tmp_path_factory.mktemp("renamed") / "logistic", _renamed)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # pydantic warns of a field that shadows a BaseModel member
        return create_api(ScoringModel.load_directory(bundle), settings_for(bundle))


def _renamed_application() -> dict[str, object]:
    return {RENAMED.get(name, name): value for name, value in good_application().items()}


def test_given_card_feature_names_pydantic_reserves_when_scored_then_they_are_accepted_by_their_names(
    renamed_api: ScoringApi, api_bundle: Path
) -> None:
    # Given a card whose features are named _age, model_config, json, model_dump and "prior default"
    # (a flat table's columns can be named anything) and the same application under those names
    # When it is scored
    status, body, lines = _call(renamed_api, {"application_id": "a-1", "features": _renamed_application()})
    # Then it is scored exactly as under the usual names, reasons named as the card names them
    assert status == 200, body
    plain = create_api(ScoringModel.load_directory(api_bundle), settings_for(api_bundle))
    _, expected, _ = _call(plain, {"application_id": "a-1", "features": good_application()})
    assert body["probability_of_default"] == expected["probability_of_default"]
    assert [r["feature"] for r in body["reasons"]] == [
        RENAMED.get(r["feature"], r["feature"]) for r in expected["reasons"]
    ]
    (audit,) = [line for line in lines if line.get("message") == API_DECISION]
    assert audit["reasons"] == [r["feature"] for r in body["reasons"]]


def test_given_card_feature_names_pydantic_reserves_when_a_value_is_wrong_then_the_detail_names_it(
    renamed_api: ScoringApi,
) -> None:
    # Given the application with _age out of range, model_config missing, and a key that is the name
    # of the pydantic field behind _age (the card's names are the only way in)
    application = _renamed_application() | {"_age": 7, "feature 0": 30}
    del application["model_config"]
    # When it is scored
    status, body, _ = _call(renamed_api, {"features": application})
    # Then each detail names the card's feature, as the client sent it
    assert status == 400, body
    assert {(d["field"], d["code"]) for d in body["error"]["details"]} == {
        ("features._age", "out_of_range"),
        ("features.model_config", "missing"),
        ("features.feature 0", "unknown_field"),
    }


def test_given_card_feature_names_pydantic_reserves_then_the_openapi_document_lists_them(
    renamed_api: ScoringApi,
) -> None:
    document = json.loads(renamed_api.openapi_json())
    features = document["components"]["schemas"]["Features"]
    expected = [RENAMED.get(name, name) for name in FEATURE_ORDER]
    assert list(features["properties"]) == expected
    assert features["required"] == expected


# ---- the reason texts in the audit trail ------------------------------------------------------------


def _directional(card: dict[str, Any]) -> None:
    """Reason texts that follow the side of the baseline, as the champion's card has them."""
    for feature in card["features"]:
        if feature["name"] in ("age", "income", "loan_ratio"):
            feature["reason_high"] = f"High {feature['name']}"
            feature["reason_low"] = f"Low {feature['name']}"


@pytest.fixture(scope="module")
def directional_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _card_edited(tmp_path_factory.mktemp("directional") / "logistic", _directional)


def test_given_reasons_that_follow_the_value_when_scored_then_the_audit_line_holds_the_texts_given(
    directional_bundle: Path,
) -> None:
    # Given a card where a feature's reason text depends on the applicant's value ("Low income" or
    # "High income"), so the feature's name alone does not say what the applicant was told
    api = create_api(ScoringModel.load_directory(directional_bundle), settings_for(directional_bundle))
    # When one application (no income: below the baseline, among its top reasons) and a batch are scored
    low_income = {**good_application(), "income": 0.0}
    status, body, lines = _call(api, {"application_id": "a-1", "features": low_income})
    assert status == 200, body
    batch = {"applications": [{"features": good_application()}, {"features": low_income}]}
    batch_status, batch_body, batch_lines = _call(api, batch, "score_batch.json")
    assert batch_status == 200, batch_body
    # Then each audit record holds the reason texts given, in the order given
    (single,) = [line for line in lines if line.get("message") == API_DECISION]
    assert single["reason_texts"] == [r["reason"] for r in body["reasons"]]
    assert {"Low income", "High loan_ratio"} <= set(single["reason_texts"])
    (batch_line,) = [line for line in batch_lines if line.get("message") == API_DECISIONS]
    assert [r["reason_texts"] for r in batch_line["results"]] == [
        [reason["reason"] for reason in result["reasons"]] for result in batch_body["results"]
    ]


def test_given_the_longest_reason_texts_when_the_largest_batch_is_logged_then_every_line_fits(
    tmp_path: Path,
) -> None:
    # Given a card with long reason texts that JSON escapes to 6 bytes a character, values logged,
    # and the largest batch, every application declined with three reasons
    def long_texts(card: dict[str, Any]) -> None:
        for index, feature in enumerate(card["features"]):
            feature["reason"] = f"{index}" + "\u00e9" * 400

    bundle = _card_edited(tmp_path / "long", long_texts)
    limit = 1000
    api = create_api(
        ScoringModel.load_directory(bundle),
        settings_for(bundle, log_applicant_values=True, max_batch_applications=limit),
    )
    applications = [
        {"application_id": f"{i:04d}" + "\x01" * 124, "features": good_application()} for i in range(limit)
    ]
    # When it is scored, then no audit line is longer than a CloudWatch Logs event, and together they
    # hold every decision
    raw = batch_audit_lines(api, applications)
    logged = [r for line in raw for r in json.loads(line)["results"]]
    assert len(logged) == limit
    assert all(len(r["reason_texts"]) == 3 for r in logged)
