"""Request and response models built from the model card: one schema for validation and OpenAPI.

A model trained on other features gives other models here with no code change: each feature's type,
range, categories and nullability become a strict pydantic field.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, create_model
from pydantic_core import PydanticCustomError

from lambdas.scoring.card import FeatureSchema, ModelCard

APPLICATION_ID_MAX_LENGTH = 128


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _ApplicantData(_Closed):
    """Request models hold applicant values: their repr and str name the model, never the values.

    Powertools' resolver formats the route arguments into a debug message on every request, so a
    value-free repr also keeps applicant data out of debug logs (and skips pydantic's repr work)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(<applicant data not shown>)"

    def __str__(self) -> str:
        return repr(self)


class ErrorDetail(_Closed):
    field: str = Field(description="Where the problem is, e.g. features.person_age or applications[2]")
    code: str = Field(
        description="Stable code: missing, unknown_field, wrong_type, not_finite, out_of_range, "
        "unknown_category, null_not_allowed, batch_too_large, empty_batch, invalid_value, "
        "duplicate_key (a key that appears more than once in one JSON object), "
        "too_many_errors (the last detail when more than 1,000 problems were found)"
    )
    message: str


class ErrorBody(_Closed):
    code: str = Field(
        description="Stable code: malformed_json, empty_body, duplicate_key (a key repeated within one JSON "
        "object; every such key named in details), unsupported_media_type, validation_error, not_found, "
        "method_not_allowed, internal_error. From API Gateway or its web ACL, before the function runs "
        "(model_version null): unauthorized, access_denied, invalid_signature, expired_token, "
        "not_found_or_unauthenticated, not_found, throttled, quota_exceeded, rate_limited, "
        "request_too_large, blocked, bad_request_body, bad_request_parameters, unsupported_media_type, "
        "integration_timeout, client_error, internal_error"
    )
    message: str
    details: list[ErrorDetail]
    # Null only in the web ACL's answers (infra/firewall.py: its 429 and 413), which cannot name the request.
    request_id: str | None


class ErrorResponse(_Closed):
    error: ErrorBody
    # Null when API Gateway or its web ACL answered (infra/gateway_responses.py): no model ran. Typed
    # clients generated from this document parse those answers with the same model.
    model_version: str | None = Field(
        description="The model that answered; null when the function did not run"
    )


class ReasonOut(_Closed):
    feature: str
    reason: str = Field(description="The card's text for this feature")
    contribution: float = Field(description="Drop in probability of default with the feature at its baseline")


class Health(_Closed):
    status: Literal["ok"]
    model_version: str


@dataclass(frozen=True)
class ApiSchemas:
    features: type[BaseModel]
    score_request: type[BaseModel]
    batch_request: type[BaseModel]
    score_result: type[BaseModel]
    batch_response: type[BaseModel]


def build_schemas(card: ModelCard, max_batch_applications: int) -> ApiSchemas:
    fields: dict[str, Any] = {
        _field_name(position, feature.name): _feature_field(feature)
        for position, feature in enumerate(card.features)
    }
    features = create_model(  # type: ignore[call-overload]
        "Features",
        __base__=_ApplicantData,
        __doc__=f"The inputs of model {card.model_name}; every feature is required (null where allowed).",
        **fields,
    )
    score_request = create_model(
        "ScoreRequest",
        __base__=_ApplicantData,
        application_id=(
            str | None,
            Field(default=None, min_length=1, max_length=APPLICATION_ID_MAX_LENGTH, description="Your id"),
        ),
        features=(features, ...),
    )
    batch_request = create_model(
        "BatchScoreRequest",
        __base__=_ApplicantData,
        applications=(
            list[score_request],  # type: ignore[valid-type]
            Field(
                min_length=1,
                max_length=max_batch_applications,
                description=f"1 to {max_batch_applications} applications",
            ),
        ),
    )
    labels = card.decision_policy.decision_labels
    decision: Any = Literal.__getitem__((labels["approve"], labels["decline"]))  # type: ignore[attr-defined]
    score_result = create_model(
        "ScoreResult",
        __config__=ConfigDict(extra="forbid"),
        application_id=(str | None, ...),
        model_version=(str, ...),
        probability_of_default=(float, Field(ge=0.0, le=1.0)),
        decision=(decision, ...),
        threshold=(float, ...),
        reasons=(list[ReasonOut], Field(description="Features that raised the risk, largest first")),
    )
    batch_response = create_model(
        "BatchScoreResponse",
        __config__=ConfigDict(extra="forbid"),
        model_version=(str, ...),
        results=(list[score_result], ...),  # type: ignore[valid-type]
    )
    return ApiSchemas(features, score_request, batch_request, score_result, batch_response)


def _field_name(position: int, name: str) -> str:
    """The pydantic field of a card feature: its own name, unless pydantic would not hold that as a
    plain field (``_x`` is a private attribute, never validated; ``model_config``, ``json`` and the
    other members of BaseModel clash or shadow). Those get a field of their own, read and written as
    the card's name through an alias, so clients, error details and the OpenAPI document see the name.
    That field's name is no identifier, so it never equals another feature's own name."""
    plain = name.isidentifier() and not name.startswith(("_", "model_")) and not hasattr(_ApplicantData, name)
    return name if plain else f"feature {position}"


def _feature_field(feature: FeatureSchema) -> tuple[Any, Any]:
    description = feature.description + (f" ({feature.unit})" if feature.unit else "")
    python_type: Any
    if feature.type == "category":
        python_type = Literal[tuple(feature.categories)] if feature.categories else str  # type: ignore[misc]
        info = Field(description=description)
    elif feature.type == "boolean":
        python_type = bool
        info = Field(strict=True, description=description)
    elif feature.type == "integer":
        # JSON Schema's integer includes 64.0, so integral floats pass (lax int); text and booleans don't.
        python_type = Annotated[
            int, Field(ge=feature.minimum, le=feature.maximum), BeforeValidator(_json_number_only)
        ]
        info = Field(description=description)
    else:
        # The constraints before the validator, so that they stay on the float schema itself.
        python_type = Annotated[
            float,
            Field(strict=True, allow_inf_nan=False, ge=feature.minimum, le=feature.maximum),
            BeforeValidator(_within_float_range),
        ]
        info = Field(description=description)
    annotated = Annotated[python_type, info]
    # Required, and read by the card's name only (see _field_name; the field's own name is no input).
    return (annotated | None if feature.nullable else annotated), Field(alias=feature.name)


def _json_number_only(value: object) -> object:
    """A JSON number for an integer feature: integral floats become ints here (pydantic cannot parse
    ones beyond 64 bits, such as 1e300), and integers beyond a double's range are out of range."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PydanticCustomError("int_type", "Input should be a valid integer")
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return _within_float_range(value)


def _within_float_range(value: object) -> object:
    """The model takes doubles: a JSON integer too large for one (10**400) is out of range, not a fault."""
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            float(value)
        except OverflowError:
            raise PydanticCustomError(
                "number_too_large", "Input should be within the range of a 64-bit float"
            ) from None
    return value
