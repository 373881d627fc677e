"""The REST routes: parse (card-derived schema), one runtime call, respond. Built once per cold start.

No ``from __future__ import annotations`` here: Powertools reads the route signatures at run time,
and the request/response models are created from the card, so the annotations must be real objects.
"""

import base64
import json
import time
import traceback
from collections import Counter
from collections.abc import Callable, Mapping
from http import HTTPStatus
from itertools import islice
from pathlib import Path
from typing import Annotated, Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.event_handler.openapi.exceptions import (
    RequestUnsupportedContentType,
    RequestValidationError,
)
from aws_lambda_powertools.event_handler.openapi.params import Body
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel

from lambdas.api.errors import (
    JSON_CONTENT_TYPE,
    MAX_ERROR_DETAILS,
    MAX_FIELDS_IN_MESSAGE,
    MODEL_VERSION_HEADER,
    REQUEST_ID_HEADER,
    SECURITY_HEADERS,
    DuplicateKeysError,
    TooManyUnknownFieldsError,
    duplicate_key_details,
    error_response,
    field_error_details,
    fields_text,
    is_empty_body,
    is_malformed_json,
    pydantic_error_details,
    unknown_field_details,
)
from lambdas.api.observability import logger, metrics, tracer
from lambdas.api.schemas import APPLICATION_ID_MAX_LENGTH, ErrorResponse, Health, build_schemas
from lambdas.api.settings import Settings
from lambdas.audit import API_DECISION, API_DECISIONS, API_NOT_DELIVERED
from lambdas.rollout_check.marker import rollout_check_of
from lambdas.scoring.card import FeatureSchema, ModelCard
from lambdas.scoring.drift import DriftSummary, DriftWindow
from lambdas.scoring.runtime import (
    TOP_REASONS,
    BatchScores,
    RepeatedKeyError,
    ScoringModel,
    repeated_key_paths,
    unique_keys_object,
)

API_TITLE = "Loan default scoring API"
API_VERSION = "1.0.0"
SCORE_PATH = "/v1/score"
BATCH_PATH = "/v1/score/batch"
# The keys the request models accept in a batch body and in an application (lambdas/api/schemas.py).
_BATCH_KEYS = frozenset({"applications"})
_APPLICATION_KEYS = frozenset({"application_id", "features"})
_ERROR_CONTENT = {JSON_CONTENT_TYPE: {"model": ErrorResponse}}
# API Gateway (infra/gateway_responses.py) and its web ACL answer these before the function runs, in the
# same format with model_version null: documented on every route, so a generated client knows them.
_GATEWAY_ERRORS: dict[int, Any] = {
    401: {
        "description": "From API Gateway, with authMode=cognito: the Authorization token is missing, "
        "invalid or expired",
        "content": _ERROR_CONTENT,
    },
    403: {
        "description": "From API Gateway: a missing, invalid or expired signature or token, access denied, "
        "no such route or method, or blocked by the web ACL",
        "content": _ERROR_CONTENT,
    },
    429: {
        "description": "From API Gateway: throttled or over quota, or too many requests from one address; "
        "retry later",
        "content": _ERROR_CONTENT,
    },
    502: {
        "description": "From API Gateway: the function failed without answering",
        "content": _ERROR_CONTENT,
    },
    504: {"description": "From API Gateway: no answer in time", "content": _ERROR_CONTENT},
}
_POST_ERRORS: dict[int, Any] = {
    400: {"description": "Malformed JSON, empty body or invalid fields", "content": _ERROR_CONTENT},
    413: {
        # The maximum is infra/firewall.py's MAX_BODY_BYTES (tests/infra/test_body_size_rule.py checks it).
        "description": "request_too_large, before the function runs: from the web ACL, a Content-Length of "
        "5,000,000 bytes or more; from API Gateway, a body over 10 MB. Keep bodies under 5,000,000 bytes: "
        "one that gets past both (chunked, without a Content-Length, or with the web ACL off) but takes "
        "the event over Lambda's 6 MB invoke limit most likely gets a 5xx (internal_error) instead",
        "content": _ERROR_CONTENT,
    },
    415: {
        "description": "Content-Type is not application/json, or the body is compressed",
        "content": _ERROR_CONTENT,
    },
    500: {"description": "Internal fault (no details leak)", "content": _ERROR_CONTENT},
} | _GATEWAY_ERRORS
# Custom responses replace Powertools' default 200, so the GET routes name theirs (with no content given,
# its schema is still the route's return type).
_GET_ERRORS: dict[int, Any] = {500: _POST_ERRORS[500]} | _GATEWAY_ERRORS


class ScoringApi:
    """The resolver with its routes, bound to one loaded model and the settings."""

    def __init__(self, model: ScoringModel, settings: Settings) -> None:
        self.model = model
        self.settings = settings
        self.schemas = build_schemas(model.card, settings.max_batch_applications)
        self.app = APIGatewayRestResolver(enable_validation=True, json_body_deserializer=self._parse_body)
        # The keys of each object a valid request holds, and the most keys a body of each JSON route can
        # hold before its unknown fields alone fill an answer's details (see _parse_body).
        self._feature_keys = frozenset(feature.name for feature in model.card.features)
        features = len(self._feature_keys)
        self._most_keys = {
            SCORE_PATH: len(_APPLICATION_KEYS) + features + MAX_ERROR_DETAILS,
            BATCH_PATH: 1
            + settings.max_batch_applications * (len(_APPLICATION_KEYS) + features)
            + MAX_ERROR_DETAILS,
        }
        self._openapi: str | None = None
        self._drift = (
            DriftWindow(model.card, settings.drift_window_applications)
            if settings.drift_window_applications
            else None
        )
        self._results_per_audit_line = results_per_audit_line(model.card, settings.log_applicant_values)
        # Decisions the running request has written to the audit trail (see _fault).
        self._decisions_recorded = 0
        # Filled by _register_routes: the methods of each path (a known path with another method is a 405).
        self._methods_by_path: dict[str, set[str]] = {}
        self._register_routes()
        self._register_error_handlers()

    # ---- entry -------------------------------------------------------------------------------

    def handle(self, event: Mapping[str, Any], context: LambdaContext) -> dict[str, Any]:
        started = time.perf_counter()
        metrics.add_metric(name="Requests", unit=MetricUnit.Count, value=1)
        # A CodeDeploy pre-traffic check (lambdas/rollout_check) names its deployment on every line of its
        # requests, the audit record included; a real request has no such key (None is not logged).
        logger.append_keys(
            model_version=self.model.model_version,
            caller=_caller(event),
            rollout_check=rollout_check_of(event),
        )
        self._decisions_recorded = 0  # this request's, so that a fault after them can say so
        checked = dict(event)
        rejected = self._check_json_body(checked)
        result = rejected if rejected is not None else self.app.resolve(checked, context)
        metrics.add_metric(name="LatencyMs", unit=MetricUnit.Milliseconds, value=_ms_since(started))
        return result

    def _check_json_body(self, event: dict[str, Any]) -> dict[str, Any] | None:
        """Before routing, for the JSON routes only: an error result unless the body is UTF-8 JSON
        (``application/json`` or a ``+json`` type, in any case). An accepted request's Content-Type is
        rewritten to plain ``application/json``, because Powertools matches it case-sensitively and
        would otherwise parse form posts too."""
        json_route = "POST" in self._methods_by_path.get(_route_path(event), ())
        if event.get("httpMethod") != "POST" or not json_route:
            return None
        media_type = _content_type(event).split(";")[0].strip().lower()
        if media_type != JSON_CONTENT_TYPE and not media_type.endswith("+json"):
            shown = media_type or "none"
            return self._early_error(
                event,
                HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                f"Content-Type must be application/json (got {shown})",
            )
        if event.get("body") and not _is_utf8_body(event):
            compressed = self._compressed_body_error(event)
            if compressed is not None:
                metrics.add_metric(name="ValidationErrors", unit=MetricUnit.Count, value=1)
                return self._proxy_result(compressed)
            return self._early_error(
                event, HTTPStatus.BAD_REQUEST, "malformed_json", "The request body is not UTF-8 JSON"
            )
        headers = {k: v for k, v in (event.get("headers") or {}).items() if str(k).lower() != "content-type"}
        event["headers"] = headers | {"Content-Type": JSON_CONTENT_TYPE}
        return None

    def _early_error(
        self, event: Mapping[str, Any], status: HTTPStatus, code: str, message: str
    ) -> dict[str, Any]:
        """A proxy result for requests rejected before routing (same error format)."""
        metrics.add_metric(name="ValidationErrors", unit=MetricUnit.Count, value=1)
        return self._proxy_result(self._error(status, code, message, request_id=_request_id(event)))

    def _proxy_result(self, response: Response[str]) -> dict[str, Any]:
        return {
            "statusCode": response.status_code,
            "headers": {"Content-Type": JSON_CONTENT_TYPE, **response.headers},
            "multiValueHeaders": {},
            "body": response.body,
            "isBase64Encoded": False,
        }

    def _parse_body(self, text: str) -> Any:
        """The JSON body (:func:`_parse_json_body`), refused before validation when its unknown fields
        alone are more than an answer lists: pydantic and Powertools spend ~20 µs on each error, so
        500,000 unknown keys (a 7 MB body) took 11 s on a development machine, and the ~450,000 that fit
        Lambda's 6 MB request limit would outlast the function's 15 s timeout on its smaller CPU share
        (a 5xx and a busy environment for a client's mistake). Each key needs a colon, so counting the
        colons (a C scan: ~5 µs for a 100-application batch, under 1 µs for one application) rules a
        flood out for every valid request; only a body with more colons than a valid one's keys is
        walked."""
        body = _parse_json_body(text)
        path = _route_path(self.app.current_event.raw_event)
        most_keys = self._most_keys.get(path)
        if most_keys is not None and text.count(":") > most_keys and isinstance(body, dict):
            self._refuse_unknown_field_flood(body, batch=path == BATCH_PATH)
        return body

    def _refuse_unknown_field_flood(self, body: dict[str, Any], *, batch: bool) -> None:
        """Raise TooManyUnknownFieldsError when the objects the request models close (the body, each
        application and its features) hold more than MAX_ERROR_DETAILS unknown keys in all."""
        # In the order validation reports them: an object's own unknown keys after those nested in it.
        objects: list[tuple[dict[str, Any], frozenset[str], tuple[str | int, ...]]] = []
        applications: list[tuple[Any, tuple[str | int, ...]]] = [(body, ())]
        if batch:
            items = body.get("applications")
            applications = []
            # A longer list is refused as a whole (batch_too_large) without looking at its items.
            if isinstance(items, list) and len(items) <= self.settings.max_batch_applications:
                applications = [(item, ("applications", index)) for index, item in enumerate(items)]
        for application, location in applications:
            if isinstance(application, dict):
                features = application.get("features")
                if isinstance(features, dict):
                    objects.append((features, self._feature_keys, (*location, "features")))
                objects.append((application, _APPLICATION_KEYS, location))
        if batch:
            objects.append((body, _BATCH_KEYS, ()))
        total = sum(len(item.keys() - known) for item, known, _ in objects)
        if total <= MAX_ERROR_DETAILS:
            return
        unknown = ((*location, key) for item, known, location in objects for key in item if key not in known)
        raise TooManyUnknownFieldsError(list(islice(unknown, MAX_ERROR_DETAILS)), total)

    def _compressed_body_error(self, event: Mapping[str, Any]) -> Response[str] | None:
        """For a body that is not JSON: a 415 naming the cause when the request declares a content coding
        (gzip, ...), instead of "not valid JSON" (RFC 9110 15.5.16, with Accept-Encoding). Only on that
        error path: a body API Gateway has already decompressed parses, and is accepted."""
        coding = _header(event, "content-encoding").strip().lower()
        if coding in ("", "identity"):
            return None
        response = self._error(
            HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            f"Content-Encoding {coding} is not accepted; send the JSON uncompressed",
            request_id=_request_id(event),
        )
        response.headers["Accept-Encoding"] = "identity"
        return response

    # ---- routes ------------------------------------------------------------------------------

    def _route(self, method: str, path: str, **options: Any) -> Callable[[Callable[..., Any]], Any]:
        """``app.route`` that also records the path's methods."""
        self._methods_by_path.setdefault(path, set()).add(method)
        return self.app.route(path, method, **options)  # type: ignore[no-any-return]

    def _register_routes(self) -> None:
        app = self.app
        route = self._route
        schemas = self.schemas
        score_request = schemas.score_request
        batch_request = schemas.batch_request
        score_result = schemas.score_result
        batch_response = schemas.batch_response
        max_batch = self.settings.max_batch_applications

        @route(
            "POST",
            SCORE_PATH,
            summary="Score one application",
            description="Probability of default, decision and the top reasons that raised the risk.",
            responses={
                200: {"description": "Scored", "content": {JSON_CONTENT_TYPE: {"model": score_result}}}
            }
            | _POST_ERRORS,
            tags=["scoring"],
        )
        def score(request: Annotated[score_request, Body()]) -> Response[str]:  # type: ignore[valid-type]
            return _json_response(self._score([request])[0])

        @route(
            "POST",
            BATCH_PATH,
            summary=f"Score up to {max_batch} applications",
            description=f"At most {max_batch} applications per call; any invalid one rejects the call "
            "with every problem named (applications[i].features.<name>).",
            responses={
                200: {"description": "Scored", "content": {JSON_CONTENT_TYPE: {"model": batch_response}}}
            }
            | _POST_ERRORS,
            tags=["scoring"],
        )
        def score_batch(request: Annotated[batch_request, Body()]) -> Response[str]:  # type: ignore[valid-type]
            results = self._score(request.applications)  # type: ignore[attr-defined]
            return _json_response({"model_version": self.model.model_version, "results": results})

        @route(
            "GET",
            "/v1/model",
            summary="The model card's public part",
            responses={200: {"description": "The model card's public part"}} | _GET_ERRORS,
            tags=["model"],
        )
        def model_card() -> dict[str, Any]:
            return {**self.model.card.public_view(), "max_batch_applications": max_batch}

        @route(
            "GET",
            "/v1/health",
            summary="Liveness and the loaded model version",
            responses={200: {"description": "Alive, with the loaded model version"}} | _GET_ERRORS,
            tags=["model"],
        )
        def health() -> Health:
            return Health(status="ok", model_version=self.model.model_version)

        @route("GET", "/v1/openapi.json", include_in_schema=False)
        def openapi() -> Response[str]:
            return Response(200, content_type=JSON_CONTENT_TYPE, body=self.openapi_json())

        def stamp_headers(
            current: APIGatewayRestResolver, next_middleware: Callable[..., Response[Any]]
        ) -> Response[Any]:
            response = next_middleware(current)
            response.headers[MODEL_VERSION_HEADER] = self.model.model_version
            response.headers[REQUEST_ID_HEADER] = _request_id(current.current_event.raw_event)
            response.headers.update(SECURITY_HEADERS)
            return response

        app.use(middlewares=[stamp_headers])

    def _score(self, requests: list[BaseModel]) -> list[dict[str, Any]]:
        # By alias: keyed by the card's feature names (lambdas/api/schemas.py), not the pydantic fields.
        records = [request.features.model_dump(by_alias=True) for request in requests]  # type: ignore[attr-defined]
        prepared = self.model.prepare_records(records)
        if prepared.errors:  # the schema and the runtime agree, so this is a safety net
            raise _RuntimeValidationError(prepared.errors, single=len(requests) == 1)
        scores = self.model.score(prepared.feed, reasons_for=True, top_k=TOP_REASONS)
        # A rollout check's synthetic application is not an applicant: kept out of the drift windows.
        if self._drift is not None and rollout_check_of(self.app.current_event.raw_event) is None:
            _record_drift(self._drift.record(prepared.feed, scores.probability))
        return self._results(requests, records, scores)

    def _results(
        self, requests: list[BaseModel], records: list[dict[str, Any]], scores: BatchScores
    ) -> list[dict[str, Any]]:
        version = self.model.model_version
        threshold = self.model.card.decision_policy.threshold
        results = []
        for index, request in enumerate(requests):
            probability = float(scores.probability[index])
            results.append(
                {
                    "application_id": request.application_id,  # type: ignore[attr-defined]
                    "model_version": version,
                    "probability_of_default": probability,
                    "decision": self.model.decision_label(bool(scores.decline[index])),
                    "threshold": threshold,
                    "reasons": [
                        {"feature": r.feature, "reason": r.text, "contribution": r.contribution}
                        for r in scores.reasons[index]
                    ],
                }
            )
        self._record(results, records)
        return results

    def _record(self, results: list[dict[str, Any]], records: list[dict[str, Any]]) -> None:
        """One log line and one data point per metric name per request (not per application)."""
        counts = Counter(f"Decision_{r['decision']}" for r in results)
        counts.update(f"ScoreBucket_{_bucket(r['probability_of_default'])}" for r in results)
        for name, count in counts.items():
            metrics.add_metric(name=name, unit=MetricUnit.Count, value=count)
        # The audit record of each decision (lambdas/audit.py): the exact probability and the threshold it
        # was compared with, and the reasons given: the features and the texts the applicant was shown
        # (a number's text follows the side of its baseline, "High income" or "Low income", so the
        # feature alone does not say which); applicant values only when configured.
        threshold = self.model.card.decision_policy.threshold
        logged = [
            {
                "application_id": r["application_id"],
                "decision": r["decision"],
                "probability_of_default": r["probability_of_default"],
                "reasons": [reason["feature"] for reason in r["reasons"]],
                "reason_texts": [reason["reason"] for reason in r["reasons"]],
            }
            | ({"features": record} if self.settings.log_applicant_values else {})
            for r, record in zip(results, records, strict=True)
        ]
        self._decisions_recorded = len(logged)
        if len(logged) == 1:
            logger.info(API_DECISION, extra={**logged[0], "threshold": threshold})
            return
        decisions = {r["decision"]: 0 for r in results}
        for r in results:
            decisions[r["decision"]] += 1
        # A large batch is logged in parts: CloudWatch cuts a longer event, and a cut line is no longer
        # JSON, so it would drop out of the audit trail.
        starts = range(0, len(logged), self._results_per_audit_line)
        for part, start in enumerate(starts, start=1):
            logger.info(
                API_DECISIONS,
                extra={
                    "applications": len(logged),
                    "decisions": decisions,
                    "threshold": threshold,
                    "part": part,
                    "parts": len(starts),
                    "first_index": start,
                    "results": logged[start : start + self._results_per_audit_line],
                },
            )

    def openapi_json(self) -> str:
        """The OpenAPI document of these routes, generated once from the card-derived models."""
        if self._openapi is None:
            document = json.loads(
                self.app.get_openapi_json_schema(
                    title=API_TITLE,
                    version=API_VERSION,
                    description=f"Scores loan applications with model {self.model.card.model_name} "
                    f"(version {self.model.model_version}).",
                )
            )
            self._openapi = json.dumps(_without_unused_422(document))
        return self._openapi

    # ---- errors ------------------------------------------------------------------------------

    def _error(
        self,
        status: HTTPStatus,
        code: str,
        message: str,
        *,
        request_id: str,
        details: list[dict[str, str]] | None = None,
        unlisted: int = 0,
    ) -> Response[str]:
        return error_response(
            status,
            code,
            message,
            request_id=request_id,
            model_version=self.model.model_version,
            details=details or [],
            unlisted=unlisted,
        )

    def _fault(self, request_id: str, error: BaseException) -> Response[str]:
        """Real faults only: logged with the stack trace, answered without it."""
        logger.exception("unhandled fault")
        if self._decisions_recorded:
            # The trail holds this request's decisions, which the caller will not receive: say so there.
            logger.info(
                API_NOT_DELIVERED,
                extra={
                    "status_code": HTTPStatus.INTERNAL_SERVER_ERROR.value,
                    "applications": self._decisions_recorded,
                },
            )
        # The resolver answers the fault instead of raising it, so the handler's trace would look
        # healthy: record it in a subsegment, as X-Ray records a raised exception (fault flag, cause).
        # (X-Ray takes one StackSummary, what Powertools' annotation calls a list of them.)
        with tracer.provider.in_subsegment(name="## fault") as subsegment:
            subsegment.add_exception(error, traceback.extract_tb(error.__traceback__))  # type: ignore[arg-type]
        metrics.add_metric(name="Faults", unit=MetricUnit.Count, value=1)
        return self._error(
            HTTPStatus.INTERNAL_SERVER_ERROR,
            "internal_error",
            "Internal error; quote the request id",
            request_id=request_id,
        )

    def _register_error_handlers(self) -> None:
        app = self.app

        def current_request_id() -> str:
            return _request_id(app.current_event.raw_event)

        def rejected(
            status: HTTPStatus, code: str, message: str, details: list[dict[str, str]], unlisted: int = 0
        ) -> Response[str]:
            """An answer naming the fields, and its "rejected" log line."""
            # The first fields and the count only: a thousand long unknown keys would make a line beyond
            # CloudWatch's 256 KB, cut and so no longer JSON.
            logged_fields = [d["field"] for d in details[:MAX_FIELDS_IN_MESSAGE]]
            logger.info(
                "rejected", extra={"error_fields": logged_fields, "error_count": len(details) + unlisted}
            )
            return self._error(
                status, code, message, request_id=current_request_id(), details=details, unlisted=unlisted
            )

        @app.exception_handler(RequestValidationError)  # type: ignore[untyped-decorator]
        def invalid_request(error: RequestValidationError) -> Response[str]:
            metrics.add_metric(name="ValidationErrors", unit=MetricUnit.Count, value=1)
            errors = error.errors()
            if is_empty_body(errors):
                return self._error(
                    HTTPStatus.BAD_REQUEST,
                    "empty_body",
                    "The request body is empty or JSON null; send a JSON object",
                    request_id=current_request_id(),
                )
            if is_malformed_json(errors):
                compressed = self._compressed_body_error(app.current_event.raw_event)
                if compressed is not None:
                    return compressed
                return self._error(
                    HTTPStatus.BAD_REQUEST,
                    "malformed_json",
                    "The request body is not valid JSON",
                    request_id=current_request_id(),
                )
            details = pydantic_error_details(errors)
            return rejected(
                HTTPStatus.BAD_REQUEST,
                "validation_error",
                f"Invalid request: {fields_text(details)}",
                details,
            )

        @app.exception_handler(DuplicateKeysError)  # type: ignore[untyped-decorator]
        def duplicate_keys(error: DuplicateKeysError) -> Response[str]:
            metrics.add_metric(name="ValidationErrors", unit=MetricUnit.Count, value=1)
            details = duplicate_key_details(error.paths)
            message = f"Each key may appear once in a JSON object; repeated: {fields_text(details)}"
            return rejected(HTTPStatus.BAD_REQUEST, "duplicate_key", message, details)

        @app.exception_handler(TooManyUnknownFieldsError)  # type: ignore[untyped-decorator]
        def too_many_unknown_fields(error: TooManyUnknownFieldsError) -> Response[str]:
            # The answer validation would give, its details capped as usual: the first unknown fields,
            # then how many more problems there are.
            metrics.add_metric(name="ValidationErrors", unit=MetricUnit.Count, value=1)
            details = unknown_field_details(error.locations)
            unlisted = error.total - len(details)
            return rejected(
                HTTPStatus.BAD_REQUEST,
                "validation_error",
                f"Invalid request: {fields_text(details, unlisted)}",
                details,
                unlisted,
            )

        @app.exception_handler(RecursionError)  # type: ignore[untyped-decorator]
        def too_deep(error: RecursionError) -> Response[str]:
            if not _raised_by_json_parser(error):
                return self._fault(current_request_id(), error)
            metrics.add_metric(name="ValidationErrors", unit=MetricUnit.Count, value=1)
            return self._error(
                HTTPStatus.BAD_REQUEST,
                "malformed_json",
                "The request body is nested too deeply to be an application",
                request_id=current_request_id(),
            )

        @app.exception_handler(_RuntimeValidationError)  # type: ignore[untyped-decorator]
        def invalid_values(error: _RuntimeValidationError) -> Response[str]:
            metrics.add_metric(name="ValidationErrors", unit=MetricUnit.Count, value=1)
            details = [
                detail
                for row, errors in sorted(error.errors.items())
                for detail in field_error_details(errors, "" if error.single else f"applications[{row}].")
            ]
            return self._error(
                HTTPStatus.BAD_REQUEST,
                "validation_error",
                "Invalid feature values",
                request_id=current_request_id(),
                details=details,
            )

        @app.exception_handler(RequestUnsupportedContentType)  # type: ignore[untyped-decorator]
        def unsupported(error: RequestUnsupportedContentType) -> Response[str]:
            return self._error(
                HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "Content-Type must be application/json",
                request_id=current_request_id(),
            )

        @app.not_found
        def not_found(error: Exception) -> Response[str]:
            event = app.current_event
            allowed = self._methods_by_path.get(_route_path(event.raw_event))
            if allowed:
                response = self._error(
                    HTTPStatus.METHOD_NOT_ALLOWED,
                    "method_not_allowed",
                    f"{event.path} accepts {', '.join(sorted(allowed))}, not {event.http_method}",
                    request_id=current_request_id(),
                )
                response.headers["Allow"] = ", ".join(sorted(allowed))
                return response
            return self._error(
                HTTPStatus.NOT_FOUND,
                "not_found",
                f"No route {event.http_method} {event.path}",
                request_id=current_request_id(),
            )

        @app.exception_handler(Exception)  # type: ignore[untyped-decorator]
        def fault(error: Exception) -> Response[str]:
            return self._fault(current_request_id(), error)


class _RuntimeValidationError(Exception):
    def __init__(self, errors: Mapping[int, Any], *, single: bool) -> None:
        super().__init__("invalid feature values")
        self.errors = errors
        self.single = single


def create_api(model: ScoringModel, settings: Settings) -> ScoringApi:
    return ScoringApi(model, settings)


def _json_response(body: Mapping[str, Any]) -> Response[str]:
    """Serialised here with json.dumps: Powertools' generic encoder costs ~0.2 ms per result. The
    documented response models (OpenAPI) are checked by the schemathesis run, not on every request."""
    return Response(200, content_type=JSON_CONTENT_TYPE, body=json.dumps(body, allow_nan=False))


def _record_drift(summary: DriftSummary | None) -> None:
    """When a window of applications is complete: its PSI as metrics, a significant shift counted and
    logged (the same metric names as the batch Lambda's, under this function's service dimension)."""
    if summary is None or summary.status == "too_few_rows":
        return
    metrics.add_metric(name="ScorePsi", unit=MetricUnit.NoUnit, value=summary.score_psi)
    metrics.add_metric(name="MaxFeaturePsi", unit=MetricUnit.NoUnit, value=summary.max_feature_psi)
    figures = {
        "applications": summary.rows,
        "status": summary.status,
        "score_psi": summary.score_psi,
        "most_drifted_feature": summary.most_drifted_feature,
        "feature_psi": summary.feature_psi,
    }
    if summary.status == "significant":
        metrics.add_metric(name="WindowsDrifted", unit=MetricUnit.Count, value=1)
        logger.warning("significant drift against the model's reference data", extra={"drift": figures})
    else:
        logger.info("drift window", extra={"drift": figures})


def _is_utf8_body(event: Mapping[str, Any]) -> bool:
    """Whether the client's body was UTF-8. API Gateway passes it as text (the stage has no binary media
    types), each byte it could not decode replaced by U+FFFD; so a literal U+FFFD is refused too (its
    escaped form, \\ufffd, is not). A base64 body (a local or test event) is decoded and checked."""
    body = str(event["body"])
    if not event.get("isBase64Encoded"):
        return "\ufffd" not in body
    try:
        base64.b64decode(body, validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return False
    return True


def _route_path(event: Mapping[str, Any]) -> str:
    """The request path as the routes are written (Powertools also matches a trailing slash)."""
    return str(event.get("path") or "/").rstrip("/") or "/"


def _content_type(event: Mapping[str, Any]) -> str:
    return _header(event, "content-type")


def _header(event: Mapping[str, Any], name: str) -> str:
    """A header (``name`` lower case), from the single-value headers or, failing that, the multi-value
    ones."""
    for key, value in (event.get("headers") or {}).items():
        if str(key).lower() == name and value:
            return str(value)
    for key, values in (event.get("multiValueHeaders") or {}).items():
        if str(key).lower() == name and values:
            return str(values[-1])
    return ""


# Python turns at most 4,300 digits of text into an int (sys.get_int_max_str_digits, a guard against
# quadratic parsing time), and json.loads raises a plain ValueError, not a JSONDecodeError, on a longer
# integer literal: a fault, unless caught. Such a number is far beyond a double, so it is read as one
# just beyond a double and the field's own validation answers it (out of range, or the wrong type).
_BEYOND_DOUBLE = 10**309
_BYTE_ORDER_MARK = "\ufeff"


def _parse_json_body(text: str) -> Any:
    """The request body's JSON (Powertools' ``json_body``: the only parse of the body), an integer
    literal beyond the digit limit read as ±10**309. Parsed a second time only when the first parse
    meets such a literal, so valid requests pay nothing for it. A key repeated within one object raises
    DuplicateKeysError naming every such key (json would keep the last value, other readers of the same
    body may keep the first), answered as a 400 ``duplicate_key``; text that is also not JSON further on
    is still ``malformed_json``. A leading byte order mark is skipped (RFC 8259 8.1 lets a parser
    ignore it; Windows PowerShell 5 writes one into UTF-8 files that clients then send)."""
    if text.startswith(_BYTE_ORDER_MARK):
        text = text[1:]
    try:
        try:
            return _BODY_DECODER.decode(text)
        except json.JSONDecodeError:
            raise
        except ValueError:
            return _BODY_DECODER_LONG_INTS.decode(text)
    except RepeatedKeyError:
        raise DuplicateKeysError(repeated_key_paths(text, parse_int=_json_int)) from None


def _json_int(digits: str) -> int:
    try:
        return int(digits)
    except ValueError:  # only beyond the digit limit: the JSON scanner hands over digits alone
        return -_BEYOND_DOUBLE if digits.startswith("-") else _BEYOND_DOUBLE


# Built once (json.loads(text, object_pairs_hook=...) would build a decoder per request).
_BODY_DECODER = json.JSONDecoder(object_pairs_hook=unique_keys_object)
_BODY_DECODER_LONG_INTS = json.JSONDecoder(object_pairs_hook=unique_keys_object, parse_int=_json_int)


def _raised_by_json_parser(error: BaseException) -> bool:
    """A body nested thousands of levels deep exhausts the JSON parser's recursion: a bad request, not
    a fault. Any other RecursionError stays a fault."""
    frames = traceback.extract_tb(error.__traceback__)
    return any(Path(frame.filename).parent.name == "json" for frame in frames[-3:])


def _request_id(event: Mapping[str, Any]) -> str:
    context = event.get("requestContext") or {}
    return str(context.get("requestId") or "unknown")


def _caller(event: Mapping[str, Any]) -> str | None:
    """Who called: the IAM principal (SigV4) or the Cognito user, when API Gateway says so."""
    context = event.get("requestContext") or {}
    identity = context.get("identity") or {}
    claims = (context.get("authorizer") or {}).get("claims") or {}
    caller = identity.get("userArn") or identity.get("caller") or claims.get("sub")
    return str(caller) if caller else None


# CloudWatch Logs keeps events up to 256 KB. 16 KB of it is ample for the logger's own keys (timestamp,
# request context, caller, model version) and the decision counts; the rest goes to the results.
AUDIT_RESULTS_BUDGET_BYTES = 240 * 1024


def results_per_audit_line(card: ModelCard, log_applicant_values: bool) -> int:
    """How many batch results one audit line may carry, from the largest result this card allows:
    the longest id, label, probability, reasons and reason texts, every value escaped (JSON escapes
    non-ASCII characters as 6-byte sequences), and the largest feature values when they are logged."""
    longest_float = -1.2345678901234567e-300  # the longest repr of a float
    escaped = 6
    features = card.features
    texts = [text for f in features for text in (f.reason, f.reason_high, f.reason_low) if text]
    # A missing value's text, the one derived for a card without reason_missing too (the runtime's rule).
    texts += [f.missing_reason() for f in features if f.nullable]
    result: dict[str, Any] = {
        "application_id": "x" * APPLICATION_ID_MAX_LENGTH * escaped,
        "decision": "x" * max(map(len, card.decision_policy.decision_labels.values())) * escaped,
        "probability_of_default": longest_float,
        "reasons": ["x" * max(len(f.name) for f in features) * escaped] * TOP_REASONS,
        "reason_texts": ["x" * max(map(len, texts)) * escaped] * TOP_REASONS,
    }
    if log_applicant_values:
        result["features"] = {f.name * escaped: _longest_value(f, longest_float, escaped) for f in features}
    return max(1, AUDIT_RESULTS_BUDGET_BYTES // len(json.dumps(result)))


# An integer feature without bounds takes any integer a double can hold: up to 309 digits and a sign.
_LONGEST_INTEGER = -(10**308)


def _longest_value(feature: FeatureSchema, longest_float: float, escaped: int) -> Any:
    """The longest value a feature's field accepts, as the audit line logs it."""
    if feature.categories:
        return "x" * max(map(len, feature.categories)) * escaped
    if feature.type == "integer":
        # Integers are logged with all their digits, not as a float's 24 characters at most.
        if feature.minimum is None or feature.maximum is None:
            return _LONGEST_INTEGER
        return max(int(feature.minimum), int(feature.maximum), key=lambda bound: len(str(bound)))
    return longest_float


def _bucket(probability: float) -> str:
    lower = min(int(probability * 10), 9) * 10
    return f"{lower:02d}_{lower + 10:02d}"


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0


def _without_unused_422(document: dict[str, Any]) -> dict[str, Any]:
    """Powertools documents a 422 it never sends here (validation errors are 400 in our format), and
    its response validation schemas, unused and referring to a removed one, would make the document
    invalid."""
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            operation.get("responses", {}).pop("422", None)
    schemas = document.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError", "ResponseValidationError"):
        schemas.pop(name, None)
    return document
