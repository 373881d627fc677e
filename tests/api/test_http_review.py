"""HTTP semantics review: what a bank's API client and its security team meet (Given/When/Then in names).

Real requests through the Lambda handler (stored events) and, end to end, through ``python -m localapi``.
"""

from __future__ import annotations

import base64
import gzip
import json
from typing import Any

import pytest
import requests
from jsonschema import Draft202012Validator

import lambdas.api.errors as errors_module
from infra.gateway_responses import GATEWAY_ERRORS, add_error_responses
from lambdas.api.errors import MAX_ERROR_DETAILS
from tests.api.conftest import Invoke, raw_request, stored_event
from tests.scoring.bundles import MODEL_VERSION, good_application

REQUEST_ID = "c6af9ac6-7b61-11e6-9a41-93e8deadbeef"
MAX_BATCH = 5  # tests/api/conftest.py settings_for


def _event(name: str, raw: str, **headers: str) -> dict[str, Any]:
    event = stored_event(name)
    event["body"] = raw
    for header, value in headers.items():
        event["headers"][header] = value
        event["multiValueHeaders"][header] = [value]
    return event


def _count_detail_conversions(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """One entry per validation error turned into an answer's detail (the work a bad body causes)."""
    calls: list[int] = []
    convert = errors_module._pydantic_detail

    def counting(error: Any) -> dict[str, str]:
        calls.append(1)
        return convert(error)

    monkeypatch.setattr(errors_module, "_pydantic_detail", counting)
    return calls


# ---- a body full of unknown fields ----------------------------------------------------------------
# Before the fix, each unknown key became a pydantic error, copied by Powertools and converted here, only
# for all but 1,000 to be dropped from the answer: a 6 MB body of 500,000 keys took 11 s on this machine,
# beyond the function's 15 s timeout on Lambda's smaller CPU share (a 5xx for a client's mistake).


def test_given_twenty_thousand_unknown_features_when_scored_then_the_work_is_bounded_by_the_answer(
    invoke: Invoke, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a body whose features hold 20,000 unknown keys besides the valid ones
    features = {**good_application(), **{f"k{i}": 1 for i in range(20_000)}}
    conversions = _count_detail_conversions(monkeypatch)
    # When it is scored
    status, body, _ = invoke(_event("score.json", json.dumps({"features": features})))
    # Then the answer is the one validation gives (the first 1,000 unknown fields in body order, then how
    # many more), without validating the 20,000 keys one by one
    assert status == 400
    error = body["error"]
    assert error["code"] == "validation_error"
    assert len(error["details"]) == MAX_ERROR_DETAILS + 1
    assert error["details"][0] == {
        "field": "features.k0",
        "code": "unknown_field",
        "message": "features.k0 is not an accepted field",
    }
    assert error["details"][MAX_ERROR_DETAILS - 1]["field"] == f"features.k{MAX_ERROR_DETAILS - 1}"
    assert error["details"][-1] == {
        "field": "body",
        "code": "too_many_errors",
        "message": f"{20_000 - MAX_ERROR_DETAILS} more problems are not listed",
    }
    assert error["message"].endswith(f" and {20_000 - 20} more")
    assert len(conversions) <= MAX_ERROR_DETAILS


def test_given_unknown_fields_spread_over_a_batch_when_scored_then_each_is_named_with_its_application(
    invoke: Invoke, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the largest batch, each application with 300 unknown features and an unknown key of its own
    applications = [
        {"features": {**good_application(), **{f"x{j}": 1 for j in range(300)}}, "note": "n"}
        for _ in range(MAX_BATCH)
    ]
    conversions = _count_detail_conversions(monkeypatch)
    status, body, _ = invoke(_event("score_batch.json", json.dumps({"applications": applications})))
    # Then they are named as validation names them: an application's features before its own keys
    assert status == 400
    fields = [detail["field"] for detail in body["error"]["details"]]
    assert fields[:2] == ["applications[0].features.x0", "applications[0].features.x1"]
    assert fields[300:302] == ["applications[0].note", "applications[1].features.x0"]
    assert (
        body["error"]["details"][-1]["message"]
        == f"{MAX_BATCH * 301 - MAX_ERROR_DETAILS} more problems are not listed"
    )
    assert len(conversions) <= MAX_ERROR_DETAILS


def test_given_a_large_body_with_few_unknown_fields_when_scored_then_every_problem_is_still_named(
    invoke: Invoke,
) -> None:
    # Given a body with many colons (a long note's text) but only two problems: an unknown key and a wrong
    # type
    raw = json.dumps({"features": {**good_application(), "age": "old"}, "note": ":" * 50_000})
    status, body, _ = invoke(_event("score.json", raw))
    # Then both are named, as before
    assert status == 400
    assert sorted((d["field"], d["code"]) for d in body["error"]["details"]) == [
        ("features.age", "wrong_type"),
        ("note", "unknown_field"),
    ]


def test_given_many_keys_inside_an_unknown_field_when_scored_then_only_that_field_is_named(
    invoke: Invoke,
) -> None:
    # Keys below an unknown field are never validated, so they are no flood
    raw = json.dumps({"features": good_application(), "extra": {f"k{i}": 1 for i in range(5_000)}})
    status, body, _ = invoke(_event("score.json", raw))
    assert status == 400
    assert [(d["field"], d["code"]) for d in body["error"]["details"]] == [("extra", "unknown_field")]


def test_given_an_oversized_batch_full_of_unknown_fields_when_scored_then_400_batch_too_large(
    invoke: Invoke,
) -> None:
    applications = [{"features": {**good_application(), **{f"x{j}": 1 for j in range(300)}}}] * (
        MAX_BATCH + 1
    )
    status, body, _ = invoke(_event("score_batch.json", json.dumps({"applications": applications})))
    assert status == 400
    assert [(d["field"], d["code"]) for d in body["error"]["details"]] == [
        ("applications", "batch_too_large")
    ]


# ---- compressed bodies ----------------------------------------------------------------------------


def _gzip_json() -> bytes:
    return gzip.compress(json.dumps({"features": good_application()}).encode())


@pytest.mark.parametrize("encoding", ["gzip", "GZIP", "br", "deflate"])
def test_given_a_compressed_base64_body_when_scored_then_415_names_the_content_coding(
    invoke: Invoke, encoding: str
) -> None:
    # Given a compressed body, as API Gateway passes bytes that are not UTF-8 (base64)
    event = _event("score.json", base64.b64encode(_gzip_json()).decode(), **{"Content-Encoding": encoding})
    event["isBase64Encoded"] = True
    # When it is scored
    status, body, headers = invoke(event)
    # Then the client learns the body must not be compressed (RFC 9110 15.5.16), not "not UTF-8 JSON"
    assert status == 415
    assert body["error"]["code"] == "unsupported_media_type"
    assert body["error"]["message"] == (
        f"Content-Encoding {encoding.lower()} is not accepted; send the JSON uncompressed"
    )
    assert body["error"]["request_id"] == REQUEST_ID
    assert headers["Accept-Encoding"] == "identity"
    assert (headers["Cache-Control"], headers["X-Model-Version"]) == ("no-store", MODEL_VERSION)


def test_given_a_compressed_body_passed_as_text_when_scored_then_415(invoke: Invoke) -> None:
    # The same bytes as a gateway passing them as text (undecodable bytes replaced)
    raw = _gzip_json().decode("utf-8", errors="replace")
    status, body, headers = invoke(_event("score.json", raw, **{"Content-Encoding": "gzip"}))
    assert status == 415
    assert body["error"]["code"] == "unsupported_media_type"
    assert headers["Accept-Encoding"] == "identity"


def test_given_a_decompressed_body_still_labelled_gzip_when_scored_then_it_is_scored(invoke: Invoke) -> None:
    # A gateway that decompressed the body may keep the header: JSON that parses is accepted
    raw = json.dumps({"features": good_application()})
    status, body, _ = invoke(_event("score.json", raw, **{"Content-Encoding": "gzip"}))
    assert status == 200, body


def test_given_malformed_json_without_content_coding_when_scored_then_still_malformed_json(
    invoke: Invoke,
) -> None:
    status, body, _ = invoke(_event("score.json", '{"features": ', **{"Content-Encoding": "identity"}))
    assert (status, body["error"]["code"]) == (400, "malformed_json")


def test_given_a_gzip_body_through_the_local_server_when_posted_then_415(server_url: str) -> None:
    response = requests.post(
        f"{server_url}/v1/score",
        data=_gzip_json(),
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
        timeout=10,
    )
    assert response.status_code == 415
    assert response.json()["error"]["code"] == "unsupported_media_type"
    assert response.headers["Accept-Encoding"] == "identity"


# ---- byte order mark and charset ------------------------------------------------------------------


def test_given_a_body_with_a_byte_order_mark_when_scored_then_it_is_scored(invoke: Invoke) -> None:
    # Windows PowerShell 5 writes UTF-8 files with a BOM; RFC 8259 8.1 lets a parser ignore it
    raw = "\ufeff" + json.dumps({"application_id": "bom-1", "features": good_application()})
    status, body, _ = invoke(_event("score.json", raw))
    assert status == 200, body
    assert body["application_id"] == "bom-1"


def test_given_a_byte_order_mark_and_a_repeated_key_when_scored_then_400_names_the_key(
    invoke: Invoke,
) -> None:
    raw = '\ufeff{"features": {"age": 30, "age": 24, "income": 1.0, "home": "RENT", "loan_ratio": 0.1, ' + (
        '"prior_default": false}}'
    )
    status, body, _ = invoke(_event("score.json", raw))
    assert (status, body["error"]["code"]) == (400, "duplicate_key")
    assert [d["field"] for d in body["error"]["details"]] == ["features.age"]


def test_given_a_utf8_file_with_a_byte_order_mark_through_the_local_server_when_posted_then_200(
    server_url: str,
) -> None:
    payload = json.dumps({"features": good_application()}).encode("utf-8-sig")
    request = (
        b"POST /v1/score HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode()
        + payload
    )
    status, _, body = raw_request(server_url, request)
    assert status == 200, body


def test_given_a_latin1_charset_when_posted_then_ascii_json_is_scored_and_latin1_bytes_are_refused(
    server_url: str,
) -> None:
    # RFC 8259 defines no charset for application/json: JSON is UTF-8, and an ASCII body reads the same in
    # either; Latin-1 bytes of a non-ASCII id are not UTF-8 and are refused with that reason, never scored
    # under a mangled id.
    headers = {"Content-Type": "application/json; charset=latin-1"}
    ascii_body = json.dumps({"application_id": "Zo\u00eb", "features": good_application()})
    scored = requests.post(f"{server_url}/v1/score", data=ascii_body.encode(), headers=headers, timeout=10)
    assert (scored.status_code, scored.json()["application_id"]) == (200, "Zo\u00eb")
    latin1_body = json.dumps(
        {"application_id": "Zo\u00eb", "features": good_application()}, ensure_ascii=False
    )
    refused = requests.post(
        f"{server_url}/v1/score", data=latin1_body.encode("latin-1"), headers=headers, timeout=10
    )
    assert refused.status_code == 400
    assert refused.json()["error"]["message"] == "The request body is not UTF-8 JSON"


# ---- the OpenAPI document and API Gateway's own errors --------------------------------------------


class _RecordingApi:
    """Stands in for the RestApi: records the gateway responses infra/gateway_responses.py adds."""

    def __init__(self) -> None:
        self.templates: dict[str, str] = {}

    def add_gateway_response(self, construct_id: str, **options: Any) -> None:
        self.templates[options["type"].response_type] = options["templates"]["application/json"]


def _error_response_validator(document: dict[str, Any]) -> Draft202012Validator:
    schema = {"$ref": "#/components/schemas/ErrorResponse", "components": document["components"]}
    return Draft202012Validator(schema)


def test_given_api_gateways_own_errors_when_checked_against_the_document_then_they_match_its_schema(
    invoke: Invoke,
) -> None:
    # Given the documented error schema, and each gateway response as API Gateway renders it
    _, document, _ = invoke(stored_event("openapi.json"))
    validator = _error_response_validator(document)
    api = _RecordingApi()
    add_error_responses(api)  # type: ignore[arg-type]
    assert len(api.templates) == len(GATEWAY_ERRORS)
    for response_type, template in api.templates.items():
        rendered = json.loads(
            template.replace("$context.error.messageString", json.dumps("Forbidden")).replace(
                "$context.requestId", REQUEST_ID
            )
        )
        # Then a client generated from the document parses it (model_version is null there: no model ran)
        problems = [error.message for error in validator.iter_errors(rendered)]
        assert not problems, (response_type, problems)
    # And the function's own errors still match it
    _, function_error, _ = invoke(_event("score.json", "{"))
    assert not list(validator.iter_errors(function_error))


def test_given_the_document_then_every_route_documents_api_gateways_statuses(invoke: Invoke) -> None:
    _, document, _ = invoke(stored_event("openapi.json"))
    error_ref = {"$ref": "#/components/schemas/ErrorResponse"}
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            expected = {"401", "403", "429", "500", "502", "504"} | (
                {"400", "413", "415"} if method == "post" else set()
            )
            assert expected <= set(responses), (method, path, sorted(responses))
            for status in expected:
                assert responses[status]["content"]["application/json"]["schema"] == error_ref


def test_given_the_document_then_every_gateway_code_is_among_the_documented_codes(invoke: Invoke) -> None:
    _, document, _ = invoke(stored_event("openapi.json"))
    described = document["components"]["schemas"]["ErrorBody"]["properties"]["code"]["description"]
    for error in GATEWAY_ERRORS:
        assert error.code in described, error.code
    assert "rate_limited" in described  # the web ACL's answer (infra/firewall.py)
