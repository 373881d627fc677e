"""The check's two synthetic requests and what a healthy version must answer. Pure: no AWS, no I/O.

1. ``GET /v1/model``: 200, the card's public part, with the model version the deploy configured (when
   known) in the body and in ``X-Model-Version``, a decision policy and a feature schema.
2. ``POST /v1/score`` of one application built from that schema (every feature filled with a value
   its schema accepts): 200, the same model version, a probability of default in [0, 1], the card's
   threshold and the decision the card's policy gives for that probability.

Both are API Gateway REST proxy events, as the stage sends them, marked as a rollout check
(:mod:`lambdas.rollout_check.marker`) so the API never takes the application for a real applicant.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeGuard

from lambdas.rollout_check.marker import marker_for

MODEL_PATH = "/v1/model"
SCORE_PATH = "/v1/score"
# The stage name the events carry: no real stage has it, so the requests stand out in traces too.
STAGE = "rollout-check"
USER_AGENT = "loan-scoring-rollout-check"
MODEL_VERSION_HEADER = "X-Model-Version"
# The API refuses longer application ids (lambdas/api/schemas.py, APPLICATION_ID_MAX_LENGTH).
APPLICATION_ID_MAX_LENGTH = 128
# How much of an answer's error text a failure reason quotes.
_QUOTED_CHARS = 500


class CheckFailed(Exception):  # noqa: N818 - a verdict, not a fault of the check
    """The new version answered what a healthy version would not; the message says what and where."""


@dataclass(frozen=True)
class CheckIdentity:
    """The CodeDeploy lifecycle event being checked; it names every request the check sends."""

    deployment_id: str
    lifecycle_event_hook_execution_id: str

    def request_id(self, step: str) -> str:
        """The request id (the API's correlation id and X-Request-Id) of one step's request."""
        return f"rollout-check-{self.deployment_id}-{step}"

    @property
    def application_id(self) -> str:
        return f"rollout-check-{self.deployment_id}"[:APPLICATION_ID_MAX_LENGTH]


@dataclass(frozen=True)
class ServedModel:
    """What ``GET /v1/model`` said the new version serves."""

    model_version: str
    threshold: float
    approve_below_threshold: bool
    approve_label: str
    decline_label: str
    features: tuple[Mapping[str, Any], ...]


@dataclass(frozen=True)
class ScoreOutcome:
    model_version: str
    probability_of_default: float
    decision: str


def proxy_event(
    identity: CheckIdentity, method: str, path: str, step: str, body: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """An API Gateway REST (v1) Lambda proxy event, as the stage would send it, marked as a check."""
    headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
    if body is not None:
        headers["Content-Type"] = "application/json"
    return {
        "resource": path,
        "path": path,
        "httpMethod": method,
        "headers": headers,
        "multiValueHeaders": {name: [value] for name, value in headers.items()},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {
            "resourcePath": path,
            "httpMethod": method,
            "path": f"/{STAGE}{path}",
            "stage": STAGE,
            "protocol": "HTTP/1.1",
            "requestId": identity.request_id(step),
            "identity": {"userAgent": USER_AGENT},
            **marker_for(identity.deployment_id, identity.lifecycle_event_hook_execution_id),
        },
        "body": None if body is None else json.dumps(body),
        "isBase64Encoded": False,
    }


def model_request(identity: CheckIdentity) -> dict[str, Any]:
    return proxy_event(identity, "GET", MODEL_PATH, "model")


def score_request(identity: CheckIdentity, served: ServedModel) -> dict[str, Any]:
    body = {"application_id": identity.application_id, "features": application_features(served)}
    return proxy_event(identity, "POST", SCORE_PATH, "score", body)


def judge_model(result: Mapping[str, Any], expected_model_version: str | None) -> ServedModel:
    """The served model, if ``GET /v1/model`` answered as a healthy version does; else CheckFailed."""
    what = f"GET {MODEL_PATH}"
    body = _ok_json(result, what)
    version = body.get("model_version")
    if not isinstance(version, str) or not version:
        raise CheckFailed(f"{what}: no model_version in the answer")
    if expected_model_version and version != expected_model_version:
        raise CheckFailed(
            f"{what}: the new version serves model {version}, but the deploy configured "
            f"{expected_model_version}"
        )
    header = _header(result, MODEL_VERSION_HEADER)
    if header != version:
        raise CheckFailed(f"{what}: {MODEL_VERSION_HEADER} is {header!r}, the body says {version!r}")
    policy = body.get("decision_policy")
    if not isinstance(policy, Mapping):
        raise CheckFailed(f"{what}: no decision_policy in the answer")
    threshold = policy.get("threshold")
    if not _is_probability(threshold):
        raise CheckFailed(f"{what}: the decision threshold {threshold!r} is not a probability")
    # The API always publishes the direction (a card's bool); the check must not guess which decision
    # is right when a version leaves it out or sends something else.
    approve_below_threshold = policy.get("approve_below_threshold")
    if not isinstance(approve_below_threshold, bool):
        raise CheckFailed(
            f"{what}: the decision policy's approve_below_threshold {approve_below_threshold!r} is not "
            "true or false"
        )
    labels = policy.get("decision_labels")
    if not isinstance(labels, Mapping) or not all(
        isinstance(labels.get(key), str) and labels.get(key) for key in ("approve", "decline")
    ):
        raise CheckFailed(f"{what}: decision_labels {labels!r} do not name approve and decline")
    features = body.get("features")
    if not isinstance(features, list) or not features:
        raise CheckFailed(f"{what}: the answer lists no features")
    if not all(isinstance(f, Mapping) and isinstance(f.get("name"), str) for f in features):
        raise CheckFailed(f"{what}: a feature of the answer has no name")
    return ServedModel(
        model_version=version,
        threshold=float(threshold),
        approve_below_threshold=approve_below_threshold,
        approve_label=str(labels["approve"]),
        decline_label=str(labels["decline"]),
        features=tuple(features),
    )


def application_features(served: ServedModel) -> dict[str, Any]:
    """One value per feature that its schema accepts: the first category, the middle of a number's
    range (a bound, or 0, when the range is open), ``False`` for a boolean. Every feature is filled,
    nullable ones too, so the whole input path of the model runs."""
    return {str(feature["name"]): _valid_value(feature) for feature in served.features}


def judge_score(result: Mapping[str, Any], served: ServedModel, identity: CheckIdentity) -> ScoreOutcome:
    """The score, if ``POST /v1/score`` answered as a healthy version does; else CheckFailed."""
    what = f"POST {SCORE_PATH}"
    body = _ok_json(result, what)
    if body.get("model_version") != served.model_version:
        raise CheckFailed(
            f"{what}: scored with model {body.get('model_version')!r}, GET {MODEL_PATH} said "
            f"{served.model_version!r}"
        )
    if body.get("application_id") != identity.application_id:
        raise CheckFailed(f"{what}: answered for application {body.get('application_id')!r}")
    probability = body.get("probability_of_default")
    if not _is_probability(probability):
        raise CheckFailed(f"{what}: probability_of_default {probability!r} is not a probability in [0, 1]")
    threshold = body.get("threshold")
    if not isinstance(threshold, int | float) or isinstance(threshold, bool) or threshold != served.threshold:
        raise CheckFailed(f"{what}: threshold {threshold!r}, the model's is {served.threshold!r}")
    declined = (
        probability >= served.threshold if served.approve_below_threshold else probability < served.threshold
    )
    expected = served.decline_label if declined else served.approve_label
    decision = body.get("decision")
    if decision != expected:
        raise CheckFailed(
            f"{what}: decision {decision!r} for probability {probability!r}; the decision policy "
            f"(threshold {served.threshold!r}) gives {expected!r}"
        )
    if not isinstance(body.get("reasons"), list):
        raise CheckFailed(f"{what}: no list of reasons in the answer")
    return ScoreOutcome(
        model_version=served.model_version, probability_of_default=float(probability), decision=expected
    )


def _valid_value(feature: Mapping[str, Any]) -> Any:
    name, kind = feature["name"], feature.get("type")
    if kind == "category":
        categories = feature.get("categories")
        if not isinstance(categories, list) or not categories:
            raise CheckFailed(f"feature {name}: a category without categories in GET {MODEL_PATH}")
        return categories[0]
    if kind == "boolean":
        return False
    if kind in ("number", "integer"):
        low, high = _bound(feature, "minimum"), _bound(feature, "maximum")
        if low is not None and high is not None:
            value = (low + high) / 2
        else:
            value = low if low is not None else high if high is not None else 0.0
        if kind == "number":
            return value
        whole = math.floor(value)
        return math.ceil(low) if low is not None and whole < low else whole
    raise CheckFailed(f"feature {name}: type {kind!r} is not one the check can fill")


def _bound(feature: Mapping[str, Any], key: str) -> float | None:
    value = feature.get(key)
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise CheckFailed(f"feature {feature['name']}: {key} {value!r} is not a number")
    return float(value)


def _ok_json(result: Mapping[str, Any], what: str) -> Mapping[str, Any]:
    """The JSON object body of a 200 proxy result; otherwise CheckFailed quoting the API's error."""
    status = result.get("statusCode")
    body = _json_body(result)
    if status != 200:
        error = body.get("error") if isinstance(body, Mapping) else None
        if isinstance(error, Mapping):
            detail = f"{error.get('code')}: {str(error.get('message'))[:_QUOTED_CHARS]}"
        else:
            detail = f"body {str(result.get('body'))[:_QUOTED_CHARS]!r}"
        request_id = _header(result, "X-Request-Id")
        raise CheckFailed(f"{what} answered {status!r} ({detail}); request id {request_id}")
    if not isinstance(body, Mapping):
        shown = str(result.get("body"))[:_QUOTED_CHARS]
        raise CheckFailed(f"{what} answered 200 without a JSON object: {shown!r}")
    return body


def _json_body(result: Mapping[str, Any]) -> Any:
    raw = result.get("body")
    if not isinstance(raw, str):
        return None
    try:
        text = base64.b64decode(raw).decode("utf-8") if result.get("isBase64Encoded") else raw
        return json.loads(text)
    except ValueError:  # not base64, not UTF-8 or not JSON
        return None


def _header(result: Mapping[str, Any], name: str) -> str | None:
    """A response header, its name in any case, from the single- or the multi-value headers."""
    for key, value in (result.get("headers") or {}).items():
        if str(key).lower() == name.lower():
            return str(value)
    for key, values in (result.get("multiValueHeaders") or {}).items():
        if str(key).lower() == name.lower() and values:
            return str(values[-1])
    return None


def _is_probability(value: Any) -> TypeGuard[float]:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and 0.0 <= value <= 1.0
    )
