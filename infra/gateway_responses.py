"""API Gateway's own errors (auth, throttling, size, WAF, timeouts) in the scoring API's error format.

API Gateway answers these before the function runs, by default with ``{"message": "..."}``. Gateway
responses make them look like lambdas/api/errors.py's: ``{"error": {"code", "message", "details",
"request_id"}, "model_version": null}`` with an ``X-Request-Id`` header, so one client parser covers all.
"""

from __future__ import annotations

import json
from typing import NamedTuple

from aws_cdk import aws_apigateway as apigw

from lambdas.api.stage import MISSING_ROUTE_CODE, MISSING_ROUTE_MESSAGE

JSON_CONTENT_TYPE = "application/json"
REQUEST_ID_HEADER = "X-Request-Id"  # as lambdas/api/errors.py
# As the function's SECURITY_HEADERS (lambdas/api/errors.py): never cached, never sniffed.
SECURITY_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
# A context variable, not 'quoted' (a literal) nor method.request.header.* (what the client sent).
# $context.requestId is the id the function reports too (requestContext.requestId).
REQUEST_ID_SOURCE = "context.requestId"
# API Gateway substitutes this with its message already quoted as a JSON string.
GATEWAY_MESSAGE = "$context.error.messageString"


class GatewayError(NamedTuple):
    response_type: apigw.ResponseType
    code: str
    # None: API Gateway's own message; a text replaces it where that message would mislead.
    message: str | None = None


# One stable code per response type. Status codes stay API Gateway's own (noted on each line); where
# the function has a code for the same situation, it is the same code (internal_error, not_found,
# unsupported_media_type).
GATEWAY_ERRORS: tuple[GatewayError, ...] = (
    GatewayError(apigw.ResponseType.UNAUTHORIZED, "unauthorized"),  # 401: Cognito token missing/invalid
    GatewayError(apigw.ResponseType.ACCESS_DENIED, "access_denied"),  # 403: authenticated, not allowed
    GatewayError(apigw.ResponseType.INVALID_SIGNATURE, "invalid_signature"),  # 403: also a stale clock
    GatewayError(apigw.ResponseType.EXPIRED_TOKEN, "expired_token"),  # 403: refresh the credentials
    # 403 for two causes API Gateway cannot tell apart for us: a request without a signature (IAM auth)
    # or a token, and a path or method the API does not have (answered like this even when signed, and
    # in authMode=cognito too). "Missing Authentication Token" sends callers of a mistyped path after
    # their credentials, so the code and the message name both causes; the status stays 403, because a
    # 404 would be wrong for every unsigned call to a real route.
    # The local server answers a path or method the stage lacks with the same (lambdas/api/stage.py).
    GatewayError(apigw.ResponseType.MISSING_AUTHENTICATION_TOKEN, MISSING_ROUTE_CODE, MISSING_ROUTE_MESSAGE),
    GatewayError(apigw.ResponseType.RESOURCE_NOT_FOUND, "not_found"),  # 404
    GatewayError(apigw.ResponseType.THROTTLED, "throttled"),  # 429: the stage's rate/burst limits
    GatewayError(apigw.ResponseType.QUOTA_EXCEEDED, "quota_exceeded"),  # 429: a usage plan's quota
    GatewayError(apigw.ResponseType.REQUEST_TOO_LARGE, "request_too_large"),  # 413
    # 403: a web ACL rule that blocks without a custom response (a WAF custom response wins over this).
    GatewayError(apigw.ResponseType.WAF_FILTERED, "blocked"),
    GatewayError(apigw.ResponseType.BAD_REQUEST_BODY, "bad_request_body"),  # 400: request validator
    GatewayError(apigw.ResponseType.BAD_REQUEST_PARAMETERS, "bad_request_parameters"),  # 400: validator
    GatewayError(apigw.ResponseType.UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),  # 415
    GatewayError(apigw.ResponseType.INTEGRATION_TIMEOUT, "integration_timeout"),  # 504
    # Catch-alls for every other type (e.g. INTEGRATION_FAILURE, API_CONFIGURATION_ERROR), each with
    # the status API Gateway chose.
    GatewayError(apigw.ResponseType.DEFAULT_4_XX, "client_error"),
    GatewayError(apigw.ResponseType.DEFAULT_5_XX, "internal_error"),
)


def add_error_responses(api: apigw.RestApi) -> None:
    """A JSON gateway response in the API's error format for every type in GATEWAY_ERRORS.

    model_version is null: the function did not run, so no model answered (and no X-Model-Version).
    """
    for error in GATEWAY_ERRORS:
        # The shape lambdas/api/stage.py's gateway_error_body gives the local server's answers
        # (tests/api/test_localapi_review15.py renders this template and compares them).
        body = {
            "error": {
                "code": error.code,
                "message": GATEWAY_MESSAGE if error.message is None else error.message,
                "details": [],
                "request_id": "$context.requestId",
            },
            "model_version": None,
        }
        # Unquote the message variable: API Gateway's value comes quoted.
        template = json.dumps(body).replace(json.dumps(GATEWAY_MESSAGE), GATEWAY_MESSAGE)
        name = "".join(part.capitalize() for part in error.response_type.response_type.split("_"))
        api.add_gateway_response(
            f"{name}Response",
            type=error.response_type,
            response_headers={
                REQUEST_ID_HEADER: REQUEST_ID_SOURCE,
                # Static values are quoted. Explicit, so the body is declared JSON whatever the Accept.
                "Content-Type": f"'{JSON_CONTENT_TYPE}'",
                **{name: f"'{value}'" for name, value in SECURITY_HEADERS.items()},
            },
            templates={JSON_CONTENT_TYPE: template},
        )
