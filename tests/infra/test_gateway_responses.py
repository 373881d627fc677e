"""API Gateway's own errors (before the function runs) answer in the function's error format."""

from __future__ import annotations

import json
import re
from http import HTTPStatus
from typing import Any

import pytest

from infra.gateway_responses import GATEWAY_ERRORS
from tests.infra.conftest import REPO_ROOT, Resources, Synthesised

MESSAGE_VARIABLE = "$context.error.messageString"
REQUEST_ID_VARIABLE = "$context.requestId"
# Response types whose situation the function also answers, and the status it answers it with.
FUNCTION_OVERLAPS = {
    "DEFAULT_5XX": HTTPStatus.INTERNAL_SERVER_ERROR,
    "UNSUPPORTED_MEDIA_TYPE": HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
    "RESOURCE_NOT_FOUND": HTTPStatus.NOT_FOUND,
}
CODES = {error.response_type.response_type: error.code for error in GATEWAY_ERRORS}
STATIC_MESSAGES = {
    error.response_type.response_type: error.message for error in GATEWAY_ERRORS if error.message is not None
}


@pytest.fixture(scope="module", params=["synthesised", "synthesised_with_options"])
def variant(request: pytest.FixtureRequest) -> Resources:
    """The default app (IAM auth) and the one with every option (Cognito auth)."""
    synthesised: Synthesised = request.getfixturevalue(request.param)
    found: Resources = synthesised.template_json["Resources"]
    return found


def _gateway_responses(resources: Resources) -> dict[str, dict[str, Any]]:
    """Logical id -> properties of every AWS::ApiGateway::GatewayResponse."""
    return {
        name: resource["Properties"]
        for name, resource in resources.items()
        if resource["Type"] == "AWS::ApiGateway::GatewayResponse"
    }


def _by_type(resources: Resources) -> dict[str, dict[str, Any]]:
    return {props["ResponseType"]: props for props in _gateway_responses(resources).values()}


def _render(template: str, message: str, request_id: str) -> Any:
    """What API Gateway sends: the variables substituted (the message arrives as a quoted JSON string)."""
    return json.loads(
        template.replace(MESSAGE_VARIABLE, json.dumps(message)).replace(REQUEST_ID_VARIABLE, request_id)
    )


def _function_codes() -> dict[HTTPStatus, set[str]]:
    """The codes lambdas/api/app.py answers with, by status (``HTTPStatus.X, "code"`` in its calls)."""
    source = (REPO_ROOT / "lambdas" / "api" / "app.py").read_text()
    found: dict[HTTPStatus, set[str]] = {}
    for status, code in re.findall(r'HTTPStatus\.([A-Z_]+),\s*"([a-z_]+)"', source):
        found.setdefault(HTTPStatus[status], set()).add(code)
    return found


def test_given_the_api_then_each_response_type_of_the_table_is_customised_once_with_its_own_status(
    variant: Resources,
) -> None:
    # Given the one REST API
    (api_id,) = [name for name, r in variant.items() if r["Type"] == "AWS::ApiGateway::RestApi"]
    # When its gateway responses are listed
    responses = list(_gateway_responses(variant).values())
    # Then there is exactly one per type of the table, and no other
    types = [props["ResponseType"] for props in responses]
    assert sorted(types) == sorted(CODES)
    assert len(types) == len(set(types)) == len(GATEWAY_ERRORS)
    # And each belongs to the API and keeps API Gateway's status for its type (none is overridden)
    for props in responses:
        assert props["RestApiId"] == {"Ref": api_id}
        assert "StatusCode" not in props, props["ResponseType"]


def test_given_each_response_when_rendered_then_it_is_exactly_the_error_format(variant: Resources) -> None:
    for response_type, props in _by_type(variant).items():
        # Given its only template, the JSON one
        (template,) = props["ResponseTemplates"].values()
        assert list(props["ResponseTemplates"]) == ["application/json"]
        # When API Gateway fills in a message with quotes and a backslash, and the request id
        body = _render(template, 'Say "no" \\ twice', "req-0123")
        # Then it parses to the error format, with the type's stable code and no model
        assert set(body) == {"error", "model_version"}, response_type
        assert set(body["error"]) == {"code", "message", "details", "request_id"}, response_type
        assert body["error"]["code"] == CODES[response_type]
        assert body["error"]["details"] == []
        assert body["error"]["request_id"] == "req-0123"
        assert body["model_version"] is None
        # And the message is API Gateway's own, unless the table replaces a misleading one
        expected = STATIC_MESSAGES.get(response_type, 'Say "no" \\ twice')
        assert body["error"]["message"] == expected, response_type
        assert (MESSAGE_VARIABLE in template) == (response_type not in STATIC_MESSAGES)


def test_given_each_response_then_it_sends_the_request_id_header_and_json_and_no_cors(
    variant: Resources,
) -> None:
    # Given the function's request id header name (lambdas/api/errors.py)
    errors_source = (REPO_ROOT / "lambdas" / "api" / "errors.py").read_text()
    header = re.search(r'REQUEST_ID_HEADER = "([^"]+)"', errors_source)
    assert header is not None
    # And the security headers the function sets on every answer
    security = re.search(r"SECURITY_HEADERS = (\{[^}]+\})", errors_source)
    assert security is not None
    security_headers = json.loads(security.group(1))
    assert security_headers == {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
    for response_type, props in _by_type(variant).items():
        # Then the header carries API Gateway's request id (a context variable, not a quoted literal
        # nor a request header), the content type is JSON and the function's security headers are
        # set; nothing else, CORS headers included
        assert props["ResponseParameters"] == {
            f"gatewayresponse.header.{header.group(1)}": "context.requestId",
            "gatewayresponse.header.Content-Type": "'application/json'",
            **{f"gatewayresponse.header.{name}": f"'{value}'" for name, value in security_headers.items()},
        }, response_type


def test_given_the_deployment_then_it_waits_for_every_gateway_response(variant: Resources) -> None:
    # Given the stage's deployment, then it is created after the responses (which it then includes)
    (deployment,) = [r for r in variant.values() if r["Type"] == "AWS::ApiGateway::Deployment"]
    assert set(_gateway_responses(variant)) <= set(deployment.get("DependsOn", []))


def test_given_the_table_then_codes_are_unique_snake_case_and_match_the_functions_where_they_overlap() -> (
    None
):
    codes = [error.code for error in GATEWAY_ERRORS]
    # Then each code is stable lower_snake_case and names one response type
    assert all(re.fullmatch(r"[a-z]+(_[a-z0-9]+)*", code) for code in codes), codes
    assert len(codes) == len(set(codes))
    # And where the function answers the same situation, the code is the function's
    function_codes = _function_codes()
    assert function_codes, "no codes found in lambdas/api/app.py"
    for response_type, status in FUNCTION_OVERLAPS.items():
        assert CODES[response_type] in function_codes[status], response_type
    # And a code the function also uses is never given to a different situation
    for response_type, code in CODES.items():
        statuses = {status for status, found in function_codes.items() if code in found}
        assert statuses <= {FUNCTION_OVERLAPS.get(response_type)}, (response_type, code)


def test_given_an_unknown_path_or_an_unsigned_call_then_the_code_and_message_name_both_causes() -> None:
    # Given API Gateway's MISSING_AUTHENTICATION_TOKEN (403), which with IAM auth answers both
    (missing,) = [
        e for e in GATEWAY_ERRORS if e.response_type.response_type == "MISSING_AUTHENTICATION_TOKEN"
    ]
    # Then neither the code nor the message blames only the credentials
    assert missing.code == "not_found_or_unauthenticated"
    assert missing.message is not None
    assert "route" in missing.message
    assert "authentication" in missing.message
