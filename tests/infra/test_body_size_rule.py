"""The web ACL's body size rule (infra/firewall.py): a body Lambda could not take is answered 413 in the
API's error format, and every body the rule lets through fits a synchronous Lambda invoke as the proxy
event localapi/ builds (body, headers twice, request context)."""

from __future__ import annotations

import json
import random
import re
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from infra.firewall import (
    BODY_TOO_LARGE_PATTERN,
    CUSTOM_RESPONSE_BODIES,
    MANAGED_RULE_GROUPS,
    MAX_BODY_BYTES,
    REQUEST_TOO_LARGE_BODY_KEY,
)
from infra.gateway_responses import GATEWAY_ERRORS, SECURITY_HEADERS
from lambdas.api.app import BATCH_PATH, SCORE_PATH, create_api
from lambdas.api.schemas import APPLICATION_ID_MAX_LENGTH, build_schemas
from lambdas.api.settings import MAX_BATCH_APPLICATIONS_LIMIT, Settings
from lambdas.scoring.card import FeatureSchema, ModelCard
from lambdas.scoring.runtime import ScoringModel
from localapi.server import proxy_event
from tests.infra.conftest import REPO_ROOT, Resources

# A synchronous invoke's request payload (the whole event as JSON), as Lambda counts it.
LAMBDA_MAX_REQUEST_BYTES = 6_291_456
# API Gateway's REST quota on a request line and header values together.
MAX_HEADER_BYTES = 10_240
# What API Gateway's event carries beyond localapi's (more identity fields; with Cognito, the token's
# claims, which are no larger than the token in the headers).
ROOM_FOR_WHAT_API_GATEWAY_ADDS = MAX_HEADER_BYTES + 4_096
BUNDLE = REPO_ROOT / "model_artifacts" / "credit_risk"
# The shortest round-trip text of a double is at most 17 digits, an exponent and a sign: the longest
# number a client's JSON writer produces (json.dumps, JavaScript's JSON.stringify).
LONG_NUMBERS = (1.2345678901234567e-300, -1.2345678901234567e-300, 12345678.901234567, 0.12345678901234568)
# An id character JSON writers escape to 12 bytes (a surrogate pair: \ud83d\ude00).
ASTRAL = "\U0001f600"


# ---- the rule as synthesised ----------------------------------------------------------------------


def _web_acl(resources: Resources) -> dict[str, Any]:
    (acl,) = [r for r in resources.values() if r["Type"] == "AWS::WAFv2::WebACL"]
    properties: dict[str, Any] = acl["Properties"]
    return properties


def test_given_the_web_acl_when_read_then_a_content_length_of_the_maximum_or_more_is_answered_413(
    resources: Resources,
) -> None:
    acl = _web_acl(resources)
    rules = sorted(acl["Rules"], key=lambda r: r["Priority"])
    (rule,) = [r for r in rules if r["Name"] == "RequestTooLarge"]
    # Then it matches the Content-Length header (WAF matches a header's name in any case) on the digits
    assert rule["Statement"] == {
        "RegexMatchStatement": {
            "FieldToMatch": {"SingleHeader": {"Name": "content-length"}},
            "RegexString": BODY_TOO_LARGE_PATTERN,
            "TextTransformations": [{"Priority": 0, "Type": "NONE"}],
        }
    }
    # And answers 413, not cached, not sniffed, like every other answer of the API
    assert rule["Action"] == {
        "Block": {
            "CustomResponse": {
                "ResponseCode": 413,
                "CustomResponseBodyKey": REQUEST_TOO_LARGE_BODY_KEY,
                "ResponseHeaders": [
                    {"Name": name, "Value": value} for name, value in SECURITY_HEADERS.items()
                ],
            }
        }
    }
    # And its matches are counted in a CloudWatch metric of their own
    assert rule["VisibilityConfig"] == {
        "CloudWatchMetricsEnabled": True,
        "MetricName": "loan-scoring-dev-request-too-large",
        "SampledRequestsEnabled": True,
    }
    # And it comes after the rate limit (which still counts the request) and before the managed groups
    names = [r["Name"] for r in rules]
    assert names == ["RateLimitPerAddress", "RequestTooLarge", *MANAGED_RULE_GROUPS]


def test_given_the_413_body_when_read_then_it_is_api_gateways_413_in_the_api_error_format(
    resources: Resources,
) -> None:
    body = _web_acl(resources)["CustomResponseBodies"][REQUEST_TOO_LARGE_BODY_KEY]
    assert body == {
        "ContentType": "APPLICATION_JSON",
        "Content": CUSTOM_RESPONSE_BODIES[REQUEST_TOO_LARGE_BODY_KEY],
    }
    parsed = json.loads(body["Content"])
    # Then the code is the one API Gateway's own 413 has, so a client handles both alike
    (gateway_413,) = [
        error.code for error in GATEWAY_ERRORS if error.response_type.response_type == "REQUEST_TOO_LARGE"
    ]
    assert parsed["error"]["code"] == gateway_413 == "request_too_large"
    # And the message names the limit; nothing ran, so no request id, details or model version
    assert f"{MAX_BODY_BYTES:,} bytes" in parsed["error"]["message"]
    assert parsed == {
        "error": {
            "code": "request_too_large",
            "message": parsed["error"]["message"],
            "details": [],
            "request_id": None,
        },
        "model_version": None,
    }


@pytest.fixture(scope="module")
def openapi_document() -> dict[str, Any]:
    settings = Settings(
        model_bundle_dir=BUNDLE,
        model_bundle_uri=None,
        log_applicant_values=False,
        max_batch_applications=MAX_BATCH_APPLICATIONS_LIMIT,
    )
    document: dict[str, Any] = json.loads(
        create_api(ScoringModel.load_directory(BUNDLE), settings).openapi_json()
    )
    return document


def test_given_the_openapi_document_then_its_413_names_the_web_acls_maximum_and_api_gateways(
    openapi_document: dict[str, Any],
) -> None:
    for path in (SCORE_PATH, BATCH_PATH):
        description = openapi_document["paths"][path]["post"]["responses"]["413"]["description"]
        assert f"{MAX_BODY_BYTES:,} bytes" in description, (path, description)
        assert "10 MB" in description, (path, description)


def test_given_the_web_acls_answers_when_checked_against_the_document_then_they_match_its_schema(
    openapi_document: dict[str, Any],
) -> None:
    schema = {"$ref": "#/components/schemas/ErrorResponse", "components": openapi_document["components"]}
    validator = Draft202012Validator(schema)
    for key, content in CUSTOM_RESPONSE_BODIES.items():
        problems = [error.message for error in validator.iter_errors(json.loads(content))]
        assert not problems, (key, problems)


# ---- the pattern against Content-Length values ----------------------------------------------------


def _refused(content_length: str) -> bool:
    # WAF reports a match anywhere in the value; the pattern anchors itself.
    return re.search(BODY_TOO_LARGE_PATTERN, content_length) is not None


@pytest.mark.parametrize(
    ("value", "refused"),
    [
        ("0", False),
        ("1", False),
        ("999999", False),
        ("4999999", False),
        ("5000000", True),
        ("5000001", True),
        ("5999999", True),
        ("6000000", True),
        ("6000001", True),
        ("9999999", True),
        ("10000000", True),
        ("10485760", True),  # API Gateway's 10 MB
        ("10485761", True),
        ("123456789012345678901234567890", True),
        ("0004999999", False),
        ("0005000000", True),
        ("0006000000", True),
        ("05000000", True),
        ("00000000", False),
        ("0000000000000001", False),
        ("00000000000000010000000", True),
        (" 5000000", True),  # blanks around a value, should a proxy keep them
        ("5000000\t", True),
        (" 4999999 ", False),
        # Not a Content-Length: left to API Gateway, which refuses it
        ("", False),
        ("abc", False),
        ("-5000000", False),
        ("+5000000", False),
        ("5e6", False),
        ("5000000.0", False),
        ("5,000,000", False),
        ("\uff15\uff10\uff10\uff10\uff10\uff10\uff10", False),  # fullwidth digits: [0-9] only, as in PCRE
        ("\u0665\u0660\u0660\u0660\u0660\u0660\u0660", False),  # Arabic-Indic digits
    ],
)
def test_given_a_content_length_when_matched_then_refused_exactly_from_the_maximum(
    value: str, refused: bool
) -> None:
    assert _refused(value) is refused


def test_given_many_lengths_with_and_without_leading_zeros_then_refused_iff_at_least_the_maximum() -> None:
    rng = random.Random(20240601)
    lengths = {MAX_BODY_BYTES + delta for delta in range(-1000, 1001)}
    lengths |= {
        power + delta for power in (10**k for k in range(13)) for delta in (-1, 0, 1) if power + delta >= 0
    }
    lengths |= {rng.randrange(10 ** rng.randint(1, 12)) for _ in range(20_000)}
    wrong = [
        (text, length)
        for length in sorted(lengths)
        for text in (str(length), "0" * rng.randint(1, 5) + str(length))
        if _refused(text) is not (length >= MAX_BODY_BYTES)
    ]
    assert wrong == []


def test_given_the_pattern_then_it_keeps_to_what_python_and_wafs_pcre_read_alike() -> None:
    compiled = re.compile(BODY_TOO_LARGE_PATTERN)
    # WAF refuses capturing groups, and a regex string over 512 characters
    assert compiled.groups == 0
    assert len(BODY_TOO_LARGE_PATTERN) <= 512
    # No class shorthand (\d, \s, \w, \b): Python's take in other scripts' characters, PCRE's do not
    escapes = set(re.findall(r"\\.", BODY_TOO_LARGE_PATTERN))
    assert escapes <= {r"\t"}, escapes
    # Anchored at both ends, so a match is the whole value, whichever engine looks
    assert BODY_TOO_LARGE_PATTERN.startswith("^")
    assert BODY_TOO_LARGE_PATTERN.endswith("$")


# ---- what fits a Lambda invoke ---------------------------------------------------------------------


def _card() -> ModelCard:
    return ModelCard.model_validate_json((BUNDLE / "model_card.json").read_text())


def _longest_value(feature: FeatureSchema) -> Any:
    """The value of ``feature`` with the longest JSON text that the API accepts."""
    if feature.type == "category":
        return max(feature.categories or ["x" * 64], key=lambda category: len(json.dumps(category)))
    if feature.type == "boolean":
        return False
    low = -1.7976931348623157e308 if feature.minimum is None else feature.minimum
    high = 1.7976931348623157e308 if feature.maximum is None else feature.maximum
    candidates: list[Any] = [low, high, *(value for value in LONG_NUMBERS if low <= value <= high)]
    if feature.type == "integer":
        candidates = [int(low), int(high)]
    return max(candidates, key=lambda value: len(json.dumps(value)))


def _largest_application(application_id: str) -> dict[str, Any]:
    return {
        "application_id": application_id,
        "features": {feature.name: _longest_value(feature) for feature in _card().features},
    }


def _body_of(size: int, application: dict[str, Any], indent: int | None) -> str:
    """A batch body of exactly ``size`` bytes: as many copies of ``application`` as fit, then blanks."""
    one = json.dumps({"applications": [application]}, indent=indent)
    per_application = len(json.dumps({"applications": [application] * 2}, indent=indent)) - len(one)
    count = (size - len(one)) // per_application + 1
    body = json.dumps({"applications": [application] * count}, indent=indent)
    body += " " * (size - len(body))
    assert body.isascii()
    assert len(body) == size
    return body


def _event_bytes(body: str) -> int:
    """The size of the proxy event of a signed POST of ``body`` whose header values fill API Gateway's
    quota (the session token takes what the others leave)."""
    headers = {
        "Accept": "application/json",
        "Content-Type": "application/json",
        "Content-Length": str(len(body.encode())),
        "Host": "abcdef1234.execute-api.eu-west-1.amazonaws.com",
        "User-Agent": "Boto3/1.35.0 md/Botocore#1.35.0 ua/2.0 os/linux#6.8 lang/python#3.12.1",
        "X-Amz-Date": "20250101T000000Z",
        "Authorization": "AWS4-HMAC-SHA256 Credential=ASIAEXAMPLEEXAMPLE12/20250101/eu-west-1/execute-api/"
        "aws4_request, SignedHeaders=content-type;host;x-amz-date;x-amz-security-token, Signature="
        + "0"
        * 64,
        "X-Amzn-Trace-Id": "Root=1-67748e00-0123456789abcdef01234567",
        "X-Forwarded-For": "203.0.113.7",
        "X-Forwarded-Port": "443",
        "X-Forwarded-Proto": "https",
    }
    request_line = f"POST /dev{BATCH_PATH} HTTP/1.1"
    used = len(request_line) + sum(len(value) for value in headers.values())
    headers["X-Amz-Security-Token"] = "T" * (MAX_HEADER_BYTES - used)
    event = proxy_event(
        "POST", BATCH_PATH, {name: [value] for name, value in headers.items()}, body.encode(), "203.0.113.7"
    )
    return len(json.dumps(event).encode())


@pytest.mark.parametrize(
    "application_id", ["a" * APPLICATION_ID_MAX_LENGTH, ASTRAL * APPLICATION_ID_MAX_LENGTH]
)
@pytest.mark.parametrize("indent", [None, 2])
def test_given_the_largest_valid_batch_then_it_is_far_below_the_maximum_and_its_event_fits(
    application_id: str, indent: int | None
) -> None:
    # Given the most applications a deployment can allow, each with the longest id and values the card takes
    applications = [_largest_application(application_id)] * MAX_BATCH_APPLICATIONS_LIMIT
    body = json.dumps({"applications": applications}, indent=indent)
    # Then the API validates it (it is a request a client may send) ...
    build_schemas(_card(), MAX_BATCH_APPLICATIONS_LIMIT).batch_request.model_validate_json(body)
    # ... and it is under half the maximum, its event well within Lambda's limit
    assert len(body.encode()) < MAX_BODY_BYTES // 2
    assert _event_bytes(body) + ROOM_FOR_WHAT_API_GATEWAY_ADDS <= LAMBDA_MAX_REQUEST_BYTES


@pytest.mark.parametrize("indent", [None, 2])
def test_given_the_largest_body_the_rule_lets_through_then_its_event_fits_lambdas_limit(
    indent: int | None,
) -> None:
    # Given a body one byte under the maximum, of the card's largest applications (compact or indented)
    body = _body_of(MAX_BODY_BYTES - 1, _largest_application("a" * APPLICATION_ID_MAX_LENGTH), indent)
    assert not _refused(str(len(body)))
    # Then its proxy event, escaped quotes and full headers included, fits a synchronous invoke
    assert _event_bytes(body) + ROOM_FOR_WHAT_API_GATEWAY_ADDS <= LAMBDA_MAX_REQUEST_BYTES


def test_given_a_6_mb_body_then_its_event_is_over_lambdas_limit_so_the_maximum_is_lower() -> None:
    # The limit is not 6,000,000: escaping the quotes alone takes such a body's event over Lambda's limit
    body = _body_of(6_000_000, _largest_application("a" * APPLICATION_ID_MAX_LENGTH), None)
    assert _refused(str(len(body)))
    assert _event_bytes(body) > LAMBDA_MAX_REQUEST_BYTES


def test_given_the_local_server_then_it_refuses_bodies_from_the_web_acls_limit_with_its_code() -> None:
    # The README's local API stands in for the deployed one: the same limit, the same code
    from localapi import server

    assert server.MAX_BODY_BYTES == MAX_BODY_BYTES
    assert server._SERVER_ERROR_CODES[413] == "request_too_large"
