"""What the deployed API Gateway stage decides before the function runs: its routes, and its answer to
a route it lacks. One definition for the stack that declares the stage (infra/serving.py,
infra/gateway_responses.py) and the local server that emulates it (localapi/server.py).

No AWS imports: the local server and the function's package import this module as they are.
"""

from __future__ import annotations

from typing import Any, NamedTuple


class Route(NamedTuple):
    method: str
    path: str  # the resource path, from the root; no parameters
    # IAM (SigV4) or Cognito authorisation, by the stack's authMode; False: a public method.
    authorised: bool = True


# Every method the stage has. A request for any other path or method never reaches the function:
# API Gateway answers it itself, with MISSING_ROUTE_STATUS (no HEAD for a GET route, no OPTIONS).
ROUTES: tuple[Route, ...] = (
    Route("POST", "/v1/score"),
    Route("POST", "/v1/score/batch"),
    Route("GET", "/v1/model"),
    Route("GET", "/v1/openapi.json"),
    Route("GET", "/v1/health", authorised=False),  # reveals no data: callable without credentials
)

# API Gateway's answer to a path or method the stage lacks (response type MISSING_AUTHENTICATION_TOKEN).
# It also answers an unsigned call to a real route so: the code and the message name both causes (a 404
# would be wrong for every unsigned call), and the status stays API Gateway's own 403.
MISSING_ROUTE_STATUS = 403
MISSING_ROUTE_CODE = "not_found_or_unauthenticated"
MISSING_ROUTE_MESSAGE = (
    "No such route or method, or the request carries no authentication (SigV4 signature or token)"
)


def has_route(method: str, resource: str) -> bool:
    """Whether the stage has ``method`` on ``resource`` (the matched path: case-sensitive, no trailing
    slash)."""
    return any(route.method == method and route.path == resource for route in ROUTES)


def gateway_error_body(code: str, message: str, request_id: str) -> dict[str, Any]:
    """The body of an answer API Gateway gives itself, in the function's error format: no details, and
    model_version null (no model ran). The shape of infra/gateway_responses.py's templates, which
    tests/api/test_localapi_review15.py renders and compares with this."""
    return {
        "error": {"code": code, "message": message, "details": [], "request_id": request_id},
        "model_version": None,
    }
