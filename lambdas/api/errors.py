"""One error format for every 4xx and 5xx: a stable code, a message, field details and the request id."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from http import HTTPStatus
from typing import Any

from aws_lambda_powertools.event_handler import Response

from lambdas.scoring.runtime import REPEATED_KEY_CODE, REPEATED_KEY_MESSAGE, FieldError

JSON_CONTENT_TYPE = "application/json"
MODEL_VERSION_HEADER = "X-Model-Version"
REQUEST_ID_HEADER = "X-Request-Id"
# On every answer: decisions about applicants are never kept by a browser or proxy cache, and no
# client guesses another type than the declared JSON.
SECURITY_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}

_RANGE_TYPES = frozenset(
    {"greater_than_equal", "less_than_equal", "greater_than", "less_than", "number_too_large"}
)
# Bounds on what a bad request can make us send back: a body with 150,000 unknown keys would otherwise
# get a 19 MB answer, beyond Lambda's 6 MB response limit (and the log line beyond CloudWatch's 256 KB).
MAX_ERROR_DETAILS = 1000
MAX_FIELD_CHARS = 200
MAX_FIELDS_IN_MESSAGE = 20


def error_response(
    status: HTTPStatus,
    code: str,
    message: str,
    *,
    request_id: str,
    model_version: str,
    details: Sequence[Mapping[str, str]] = (),
    unlisted: int = 0,
) -> Response[str]:
    """``unlisted``: problems found beyond ``details`` and never made into details (counted only)."""
    listed = list(details[:MAX_ERROR_DETAILS])
    more = max(0, len(details) - MAX_ERROR_DETAILS) + unlisted
    if more:
        listed.append(detail("body", "too_many_errors", f"{more} more problems are not listed"))
    body = {
        "error": {"code": code, "message": message, "details": listed, "request_id": request_id},
        "model_version": model_version,
    }
    return Response(
        status_code=status.value,
        content_type=JSON_CONTENT_TYPE,
        body=json.dumps(body),
        headers={MODEL_VERSION_HEADER: model_version, REQUEST_ID_HEADER: request_id, **SECURITY_HEADERS},
    )


def detail(field: str, code: str, message: str) -> dict[str, str]:
    return {"field": field, "code": code, "message": message}


def fields_text(details: Sequence[Mapping[str, str]], unlisted: int = 0) -> str:
    """The distinct fields of ``details`` for a message: the first few, then how many more (``unlisted``
    fields beyond ``details`` included)."""
    fields = sorted({d["field"] for d in details})
    shown = ", ".join(fields[:MAX_FIELDS_IN_MESSAGE])
    hidden = max(0, len(fields) - MAX_FIELDS_IN_MESSAGE) + unlisted
    return f"{shown} and {hidden} more" if hidden > 0 else shown


def field_error_details(errors: Iterable[FieldError], prefix: str) -> list[dict[str, str]]:
    """Runtime errors (bare feature names) as API details (``features.<name>`` under ``prefix``)."""
    return [detail(f"{prefix}features.{e.field}", e.code, e.message) for e in errors]


class DuplicateKeysError(Exception):
    """The request body holds a key twice in one JSON object; ``paths`` says where, each once, in the
    order the keys first appear (``features.age``, ``applications[1].features.age``)."""

    def __init__(self, paths: Sequence[str]) -> None:
        super().__init__("a key appears more than once in one JSON object")
        self.paths = list(paths)


def duplicate_key_details(paths: Sequence[str]) -> list[dict[str, str]]:
    """One ``duplicate_key`` detail per repeated key (a long key shortened, as for other fields)."""
    details = []
    for path in paths:
        field = path if len(path) <= MAX_FIELD_CHARS else path[:MAX_FIELD_CHARS] + "…"
        details.append(detail(field, REPEATED_KEY_CODE, f"{field} {REPEATED_KEY_MESSAGE}"))
    return details


class TooManyUnknownFieldsError(Exception):
    """The body holds more unknown fields than an answer lists, found before validation: validating
    hundreds of thousands of them costs seconds (the function's timeout, a 5xx for a client's mistake).
    ``locations`` are the first MAX_ERROR_DETAILS as pydantic locates them, ``total`` counts them all."""

    def __init__(self, locations: Sequence[tuple[str | int, ...]], total: int) -> None:
        super().__init__(f"{total} unknown fields")
        self.locations = list(locations)
        self.total = total


def unknown_field_details(locations: Iterable[tuple[str | int, ...]]) -> list[dict[str, str]]:
    """``unknown_field`` details exactly as validation would give them for these locations (within the
    body, so placed under "body" as Powertools places them)."""
    return [
        _pydantic_detail({"type": "extra_forbidden", "loc": ("body", *location)}) for location in locations
    ]


def pydantic_error_details(errors: Sequence[Any]) -> list[dict[str, str]]:
    """Pydantic/Powertools validation errors as details with our stable codes and field paths."""
    return [_pydantic_detail(error) for error in errors]


def is_malformed_json(errors: Sequence[Any]) -> bool:
    return any(error.get("type") == "json_invalid" for error in errors)


def is_empty_body(errors: Sequence[Any]) -> bool:
    return any(
        error.get("type") == "missing" and tuple(error.get("loc", ())) == ("body",) for error in errors
    )


def _pydantic_detail(error: Mapping[str, Any]) -> dict[str, str]:
    # Powertools locates the request body as "body": only that first part, a key of that name within it
    # is a field like any other (features.body).
    location = list(error.get("loc", ()))
    if location[:1] == ["body"]:
        location = location[1:]
    field = _field_path(location)
    if len(field) > MAX_FIELD_CHARS:  # an unknown key can be megabytes long
        field = field[:MAX_FIELD_CHARS] + "…"
    kind = str(error.get("type", ""))
    value = error.get("input")
    message = str(error.get("msg", "invalid value"))
    if kind == "missing":
        return detail(field, "missing", f"{field} is required")
    if kind == "extra_forbidden":
        return detail(field, "unknown_field", f"{field} is not an accepted field")
    if kind == "finite_number":
        return detail(field, "not_finite", f"{field} must be a finite number (not NaN or Infinity)")
    if kind in _RANGE_TYPES:
        return detail(field, "out_of_range", f"{field}: {message}")
    if kind == "too_long" and field == "applications":
        return detail(field, "batch_too_large", f"applications: {message}")
    if kind == "too_short" and field == "applications":
        return detail(field, "empty_batch", "applications must hold at least one application")
    if value is None and (kind.endswith("_type") or kind in {"literal_error", "enum"}):
        return detail(field, "null_not_allowed", f"{field} may not be null")
    if kind == "literal_error":
        code = "unknown_category" if isinstance(value, str) else "wrong_type"
        return detail(field, code, f"{field}: {message}")
    if kind.endswith("_type") or kind in {"int_from_float", "model_attributes_type"}:
        return detail(field, "wrong_type", f"{field}: {message}")
    return detail(field, "invalid_value", f"{field}: {message}")


def _field_path(location: Sequence[object]) -> str:
    if not location:
        return "body"
    path = ""
    for part in location:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            name = str(part) or '""'  # an empty key: named as one, not taken for the body
            path += f".{name}" if path else name
    return path
