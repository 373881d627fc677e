"""Audit trail review (session 15), end to end: the lines the functions write on every decision path,
the subscription filter against lines a caller can influence, and what the audit stream's delivery
role may do in the synthesised template."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import pytest

from infra.audit_trail import audit_filter_pattern
from lambdas.api import app as api_app
from lambdas.api.app import create_api
from lambdas.api.observability import logger as api_logger
from lambdas.api.wiring import make_handler
from lambdas.audit import API_DECISION, API_NOT_DELIVERED, BATCH_FILE
from lambdas.batch import wiring as batch_wiring
from lambdas.batch.manifest import Counts, Drift, InputObject, Manifest, Outputs, ReasonsPolicy, Timings
from lambdas.batch.scoring import PUBLISH_FLOOR_SECONDS
from lambdas.batch.service import Outcome
from lambdas.local_context import LocalLambdaContext
from lambdas.scoring.runtime import ScoringModel
from tests.api.conftest import MAX_EVENT_BYTES, api_bundle, api_context, settings_for, stored_event  # noqa: F401
from tests.api.test_audit_review import _filter_matches
from tests.batch.helpers import GOOD_LINE, HEADER
from tests.batch.memory_store import MemoryObjectStore
from tests.conftest import captured_log
from tests.infra.conftest import Resources, role_statements, synthesise
from tests.scoring.bundles import write_logistic_bundle

PATTERN = audit_filter_pattern().log_pattern_string
BUCKET = "audit-bucket-review"


def _shipped(output: str) -> list[dict[str, Any]]:
    """The captured lines the audit subscription filter would send to the stream, one CloudWatch Logs
    event per output line (as Lambda stores a function's stdout)."""
    return [json.loads(line) for line in output.splitlines() if _filter_matches(PATTERN, line)]


# ---- API: a caller-controlled value cannot forge or split an audit record ----------------------


@pytest.fixture(scope="module")
def api_handler(api_bundle: Path) -> Any:  # noqa: F811
    return make_handler(create_api(ScoringModel.load_directory(api_bundle), settings_for(api_bundle)))


def _score_event(application_id: str) -> dict[str, Any]:
    event = stored_event("score.json")
    body = json.loads(event["body"])
    body["application_id"] = application_id
    event["body"] = json.dumps(body)
    return event


def test_given_an_application_id_holding_a_newline_and_a_forged_record_then_one_true_record_is_shipped(
    api_handler: Any,
) -> None:
    # Given an id that, written raw, would end the line and start a forged "approve" audit record
    forged = '\n{"message":"scored","application_id":"someone-else","decision":"approve"}'
    application_id = "A-1" + forged

    # When it is scored
    with captured_log(api_logger) as log:
        result = api_handler(_score_event(application_id), api_context())

    # Then the filter ships exactly one record, the real one, with the id as sent (escaped in the line)
    assert result["statusCode"] == 200
    (record,) = _shipped(log.getvalue())
    assert record["application_id"] == application_id
    assert record["decision"] == json.loads(result["body"])["decision"]
    # And no line of the output starts with the forged text
    assert not [line for line in log.getvalue().splitlines() if line.startswith('{"message"')]


def test_given_lines_with_the_audit_words_but_another_message_then_the_filter_leaves_them_out() -> None:
    # Given lines a non-audit path could write: the words elsewhere, a nested "message", a longer message
    lines = [
        json.dumps({"message": "rejected", "note": "scored"}),
        json.dumps({"message": "unhandled fault", "exception": 'message = "scored"'}),
        json.dumps({"level": "INFO", "detail": {"message": "scored"}}),
        json.dumps({"message": "scored batch of files"}),
        json.dumps({"message": "Scored"}),
        'scored {"message":"scored"}',
    ]
    # Then none is shipped, while the audit lines themselves are
    assert [line for line in lines if _filter_matches(PATTERN, line)] == []
    assert _filter_matches(PATTERN, json.dumps({"message": API_DECISION}))
    assert _filter_matches(PATTERN, json.dumps({"message": BATCH_FILE}))


def test_given_a_fault_after_scoring_then_the_decision_is_shipped_once_and_the_fault_line_is_not(
    api_handler: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a request that is scored (and audited) and then fails while its answer is written
    def broken(_: Any) -> Any:
        raise RuntimeError("serialisation failed")

    monkeypatch.setattr(api_app, "_json_response", broken)

    with captured_log(api_logger) as log:
        result = api_handler(_score_event("A-500"), api_context())

    # Then the caller gets a 500, and the trail holds the one decision that was made, then says that it
    # was not delivered (same request id)
    assert result["statusCode"] == 500
    record, undelivered = _shipped(log.getvalue())
    assert (record["message"], record["application_id"]) == (API_DECISION, "A-500")
    assert (undelivered["message"], undelivered["status_code"]) == (API_NOT_DELIVERED, 500)
    assert undelivered["correlation_id"] == record["correlation_id"]
    messages = [
        json.loads(line)["message"] for line in log.getvalue().splitlines() if line.startswith('{"level"')
    ]
    assert "unhandled fault" in messages


# ---- batch: one record per file on every path, the file's key cannot forge one ------------------


def _notification(key: str, etag: str, **extra: Any) -> dict[str, Any]:
    record = {
        "eventName": "ObjectCreated:Put",
        "s3": {"bucket": {"name": BUCKET}, "object": {"key": quote_plus(key), "eTag": etag}},
        **extra,
    }
    return {
        "Records": [
            {
                "messageId": "m-1",
                "receiptHandle": "r",
                "body": json.dumps({"Records": [record]}),
                "attributes": {},
                "eventSource": "aws:sqs",
            }
        ]
    }


@pytest.fixture
def batch_store(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> MemoryObjectStore:
    """The batch function's store and model: an in-memory bucket and the test bundle."""
    store = MemoryObjectStore()
    model = ScoringModel.load_directory(write_logistic_bundle(tmp_path / "bundle"))
    monkeypatch.setattr(batch_wiring, "object_store", lambda: store)
    monkeypatch.setattr(batch_wiring, "loaded_model", lambda: model)
    return store


def _deliver(key: str, etag: str, remaining_millis: int = 900_000, **extra: Any) -> list[dict[str, Any]]:
    """One SQS message about ``key`` through the batch handler: the records the filter ships."""
    context = LocalLambdaContext("loan-scoring-batch", remaining_millis=remaining_millis)
    with captured_log(batch_wiring.logger) as log:
        result = batch_wiring.handler(_notification(key, etag, **extra), context)  # type: ignore[arg-type]
    assert result == {"batchItemFailures": []}
    return _shipped(log.getvalue())


def _csv(rows: int) -> bytes:
    return ("\n".join([HEADER, *[GOOD_LINE] * rows]) + "\n").encode()


def test_given_a_file_too_big_for_the_invocation_then_one_record_says_so_and_a_redelivery_one_more_marked(
    batch_store: MemoryObjectStore,
) -> None:
    # Given a file delivered to an invocation with less time left than publishing needs
    key = "incoming/review/large.csv"
    etag = batch_store.put_bytes(BUCKET, key, _csv(50))

    # When it is processed, then delivered again
    first = _deliver(key, etag, remaining_millis=int((PUBLISH_FLOOR_SECONDS - 1) * 1000))
    again = _deliver(key, etag)

    # Then each delivery ships exactly one record: the failure with its code, the input pinned, no
    # outputs and no decisions counted; the repeat marked as such
    (record,) = first
    assert (record["message"], record["status"], record["error"]) == (
        BATCH_FILE,
        "failed",
        {"code": "too_large"},
    )
    assert (record["input"]["key"], record["input"]["etag"]) == (key, etag)
    assert record["outputs"] == {"scored": None, "rejected": None}
    assert record["counts"]["rows_scored"] == 0
    assert record["model_version"] == batch_wiring.loaded_model().model_version
    assert record["redelivered"] is False
    (repeat,) = again
    assert repeat["redelivered"] is True
    from_manifest = ("input", "model_version", "outputs", "status", "counts", "error")
    assert [repeat[name] for name in from_manifest] == [record[name] for name in from_manifest]


def test_given_a_key_holding_a_newline_and_a_forged_record_then_one_true_record_is_shipped(
    batch_store: MemoryObjectStore,
) -> None:
    # Given an input whose name, written raw, would end the line and start a forged record
    key = 'incoming/x\n{"message":"file processed","key":"incoming/other.csv","status":"succeeded"}.csv'
    etag = batch_store.put_bytes(BUCKET, key, _csv(2))

    # When it is processed, then exactly one record is shipped, naming the key as uploaded
    (record,) = _deliver(key, etag)
    assert (record["key"], record["input"]["key"], record["status"]) == (key, key, "succeeded")
    assert record["counts"]["rows_scored"] == 2
    # And no applicant's id or values from the file
    assert "A-1" not in json.dumps(record)
    assert "32000" not in json.dumps(record)


def test_given_the_longest_file_record_then_it_fits_one_cloudwatch_event(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a 1,024-byte key of characters JSON escapes to 6 bytes each (in the record four times) and a
    # drift verdict
    key = "incoming/" + "\x01" * (1024 - len("incoming/") - len(".csv")) + ".csv"
    manifest = Manifest(
        status="succeeded",
        input=InputObject(
            bucket=BUCKET, key=key, etag="e" * 34, version_id="v" * 32, size_bytes=1, format="csv"
        ),
        model_name="m" * 200,
        model_version="m" * 200,
        outputs=Outputs(
            scored=key.replace("incoming/", "scored/"), rejected=key.replace("incoming/", "rejected/")
        ),
        counts=Counts(rows_in=10**12, rows_scored=10**12),
        reasons=ReasonsPolicy(top_k=3),
        drift=Drift(
            rows=10**12,
            status="significant",
            score_psi=-1.2345678901234567e-300,
            max_feature_psi=-1.2345678901234567e-300,
            most_drifted_feature="f" * 200,
            feature_psi={f"f{i}": 1.0 for i in range(1000)},
        ),
        timings=Timings(started_at="t0", finished_at="t1", total_seconds=1.0, phases={}),
    )
    monkeypatch.setattr(batch_wiring, "process_object", lambda *args: Outcome(manifest))
    monkeypatch.setattr(batch_wiring, "object_store", lambda: None)
    monkeypatch.setattr(batch_wiring, "loaded_model", lambda: None)

    # When it is logged, then the line fits one event (a longer one is cut and drops out of the trail)
    with captured_log(batch_wiring.logger) as log:
        batch_wiring._handle_notification(_notification(key, "e")["Records"][0]["body"])
    (line,) = [line for line in log.getvalue().splitlines() if _filter_matches(PATTERN, line)]
    assert len(line.encode()) <= MAX_EVENT_BYTES
    assert json.loads(line)["key"] == key


def test_given_a_file_uploaded_by_a_principal_then_its_record_names_the_uploader(
    batch_store: MemoryObjectStore,
) -> None:
    key = "incoming/review/who.csv"
    etag = batch_store.put_bytes(BUCKET, key, _csv(2))

    (record,) = _deliver(key, etag, userIdentity={"principalId": "AWS:AIDAEXAMPLEUPLOADER"})

    assert "AWS:AIDAEXAMPLEUPLOADER" in json.dumps(record)


def test_given_a_file_uploaded_again_under_its_name_then_the_first_record_still_pins_its_own_outputs(
    batch_store: MemoryObjectStore,
) -> None:
    # Given a file scored, then replaced by another upload under the same name and scored again
    key = "incoming/review/again.csv"
    (first,) = _deliver(key, batch_store.put_bytes(BUCKET, key, _csv(2)))
    scored = first["outputs"]["scored"]
    stored = batch_store.read_bytes(BUCKET, scored)
    assert stored is not None
    first_output = stored.etag
    (second,) = _deliver(key, batch_store.put_bytes(BUCKET, key, _csv(3)))
    assert second["outputs"]["scored"] == scored  # the same name, now the second file's decisions

    # Then the first record identifies the output its decisions were written to
    assert first_output in json.dumps(first["outputs"])


# ---- the audit stream's delivery role, in the synthesised template -------------------------------


@pytest.fixture(scope="module")
def resources(tmp_path_factory: pytest.TempPathFactory) -> Resources:
    found: Resources = synthesise(tmp_path_factory.mktemp("cdk-out-audit")).template_json["Resources"]
    return found


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _destination(resources: Resources) -> tuple[str, dict[str, Any], list[str]]:
    """The delivery role's logical id, the stream's S3 destination and the stream's DependsOn."""
    (stream,) = [r for r in resources.values() if r["Type"] == "AWS::KinesisFirehose::DeliveryStream"]
    destination: dict[str, Any] = stream["Properties"]["ExtendedS3DestinationConfiguration"]
    role: str = destination["RoleARN"]["Fn::GetAtt"][0]
    return role, destination, _listed(stream.get("DependsOn", []))


def test_given_the_audit_stream_then_its_delivery_role_may_do_only_what_firehose_documents_for_s3(
    resources: Resources,
) -> None:
    # Given the role the stream writes records with, and what the stream names: its bucket, the key it
    # encrypts records with, and the log group of its delivery errors
    role, destination, _ = _destination(resources)
    bucket = destination["BucketARN"]
    key = destination["EncryptionConfiguration"]["KMSEncryptionConfig"]["AWSKMSKeyARN"]
    errors = {"Fn::GetAtt": [destination["CloudWatchLoggingOptions"]["LogGroupName"]["Ref"], "Arn"]}
    statements = role_statements(resources, role)
    granted = {
        (action, json.dumps(resource, sort_keys=True))
        for statement in statements
        for action in _listed(statement["Action"])
        for resource in _listed(statement["Resource"])
    }
    objects = {"Fn::Join": ["", [bucket, "/*"]]}

    # Then it may do what AWS documents for a Firehose S3 destination and nothing more: no deletes, no
    # retention, legal-hold or tag changes on records, no other key use
    expected = [
        *(
            (action, bucket)
            for action in ("s3:GetBucketLocation", "s3:ListBucket", "s3:ListBucketMultipartUploads")
        ),
        *((action, objects) for action in ("s3:AbortMultipartUpload", "s3:GetObject", "s3:PutObject")),
        ("kms:Decrypt", key),
        ("kms:GenerateDataKey", key),
        ("logs:PutLogEvents", errors),
    ]
    assert granted == {(action, json.dumps(resource, sort_keys=True)) for action, resource in expected}
    assert {statement["Effect"] for statement in statements} == {"Allow"}
    # And the key only through S3, as S3 uses it for the records
    (key_use,) = [s for s in statements if "kms:Decrypt" in _listed(s["Action"])]
    assert key_use["Condition"] == {
        "StringEquals": {
            "kms:ViaService": {"Fn::Join": ["", ["s3.", {"Ref": "AWS::Region"}, ".amazonaws.com"]]}
        }
    }


def test_given_the_audit_stream_then_it_is_created_after_its_delivery_role_may_write(
    resources: Resources,
) -> None:
    # Given the policies that give the delivery role its permissions
    role, _, depends_on = _destination(resources)
    policies = [
        name
        for name, r in resources.items()
        if r["Type"] == "AWS::IAM::Policy" and {"Ref": role} in r["Properties"]["Roles"]
    ]
    # Then the stream waits for them (Firehose checks its access to the bucket when it is created)
    assert policies
    assert set(policies) <= set(depends_on)


def test_given_the_audit_key_then_only_the_delivery_role_may_use_it(resources: Resources) -> None:
    # Given the key the records are encrypted with
    role, destination, _ = _destination(resources)
    key = destination["EncryptionConfiguration"]["KMSEncryptionConfig"]["AWSKMSKeyARN"]
    # Then the delivery role's is the one IAM policy that names it: the stream's own encryption uses the
    # grant Firehose creates on the key, so CDK's extra "Service Role" (assumable by any Firehose stream
    # of the account, without the delivery role's external id) held the key for nothing
    naming_the_key = [
        r["Properties"]["Roles"]
        for r in resources.values()
        if r["Type"] == "AWS::IAM::Policy"
        and json.dumps(key) in json.dumps(r["Properties"]["PolicyDocument"])
    ]
    assert naming_the_key == [[{"Ref": role}]]
