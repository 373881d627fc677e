"""The local server end to end: real HTTP on 127.0.0.1 → API Gateway proxy event → the same handler.

Schemathesis fuzzes every documented operation from the server's own OpenAPI document (valid and
invalid requests): no 5xx, and every response matches the documented status codes and schemas.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    positive_data_acceptance,
    response_schema_conformance,
    status_code_conformance,
)

from lambdas.scoring.runtime import ScoringModel
from localapi.server import sample_application
from tests.api.conftest import raw_request
from tests.conftest import skip_unless_ci
from tests.scoring.bundles import MODEL_VERSION, good_application

REPO_ROOT = Path(__file__).resolve().parents[2]
MAX_EXAMPLES = 25  # per operation; keeps the whole run well under a minute on 2 shared cores


@pytest.fixture(scope="module")
def api_schema(server_url: str) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{server_url}/v1/openapi.json")


def test_given_the_local_server_when_curl_like_post_then_handler_result_comes_back(server_url: str) -> None:
    response = requests.post(f"{server_url}/v1/score", json={"features": good_application()}, timeout=10)
    assert response.status_code == 200
    assert response.headers["X-Model-Version"] == MODEL_VERSION
    assert response.json()["decision"] == "decline"
    assert re.fullmatch(r"[0-9a-f-]{36}", response.headers["X-Request-Id"])


def test_given_a_form_post_when_sent_then_415(server_url: str) -> None:
    response = requests.post(f"{server_url}/v1/score", data={"age": "3"}, timeout=10)
    assert response.status_code == 415
    assert response.json()["error"]["code"] == "unsupported_media_type"


@pytest.mark.parametrize(
    ("framing", "status", "code"),
    [
        ("Content-Length: -1", 400, "bad_request"),
        ("Content-Length: abc", 400, "bad_request"),
        ("Content-Length: 20000000", 413, "request_too_large"),
        ("Content-Length: 5000000", 413, "request_too_large"),
        # Read as API Gateway reads it (no longer a 411): "{}" is no chunk size, the framing is broken
        ("Transfer-Encoding: chunked", 400, "bad_request"),
    ],
)
def test_given_a_body_the_server_cannot_read_when_sent_then_a_json_error_and_the_server_still_answers(
    server_url: str, framing: str, status: int, code: str
) -> None:
    request = f"POST /v1/score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{framing}\r\n\r\n{{}}"
    answered_status, headers, body = raw_request(server_url, request.encode())
    assert answered_status == status
    error = json.loads(body)["error"]
    assert error["code"] == code
    assert headers["X-Model-Version"] == MODEL_VERSION
    assert requests.get(f"{server_url}/v1/health", timeout=10).status_code == 200


def test_given_an_unknown_method_when_sent_then_501_in_the_error_format(server_url: str) -> None:
    response = requests.request("BREW", f"{server_url}/v1/health", timeout=10)
    assert response.status_code == 501
    assert response.json()["error"]["code"] == "method_not_implemented"


def test_given_head_on_a_get_route_when_sent_then_api_gateways_403_headers_and_no_body(
    server_url: str,
) -> None:
    # The stage has no HEAD method (API Gateway adds none for a GET): its 403, not the function's 405
    response = requests.head(f"{server_url}/v1/health", timeout=10)
    assert response.status_code == 403
    assert "X-Model-Version" not in response.headers
    assert "Allow" not in response.headers
    assert response.content == b""


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
    positive_data_acceptance,
]


# schemathesis.pytest.from_fixture does not work with this pytest, so each operation's hypothesis
# strategy is driven explicitly: valid (positive) and schema-violating (negative) requests.
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_given_fuzzed_requests_when_sent_then_no_5xx_and_responses_match_the_schema(
    api_schema: schemathesis.BaseSchema, mode: GenerationMode
) -> None:
    operations = [result.ok() for result in api_schema.get_all_operations()]  # type: ignore[union-attr]
    assert {f"{op.method.upper()} {op.path}" for op in operations} == {
        "POST /v1/score",
        "POST /v1/score/batch",
        "GET /v1/model",
        "GET /v1/health",
    }
    for operation in operations:
        if mode is GenerationMode.NEGATIVE and operation.method.upper() == "GET":
            continue  # nothing to violate: no parameters, no body

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
            phases=[Phase.explicit, Phase.generate],
        )
        def fuzz(case: Any) -> None:
            case.call_and_validate(checks=CHECKS)

        fuzz()


@pytest.mark.parametrize("bundle_name", ["test", "champion"])
def test_given_a_bundle_when_printing_the_sample_then_it_is_a_valid_application(
    api_bundle: Path, bundle_name: str
) -> None:
    bundle = api_bundle if bundle_name == "test" else REPO_ROOT / "model_artifacts" / "credit_risk"
    if not (bundle / "model_card.json").is_file():
        skip_unless_ci(f"no bundle at {bundle}")
    sample = sample_application(bundle / "model_card.json")
    model = ScoringModel.load_directory(bundle)
    assert model.prepare_records([sample["features"]]).errors == {}
