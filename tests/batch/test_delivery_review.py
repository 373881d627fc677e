"""Delivery-path defects found in review (events, idempotency, output keys, audit log), each through
the emulator: an event the handler misread, a key whose outputs S3 cannot hold, an older version that
overwrote a newer one's outputs, and applicant data copied into the audit trail.
"""

from __future__ import annotations

import io
import json
from typing import IO, Any

import pytest

from lambdas.audit import BATCH_FILE
from lambdas.batch.events import ObjectCreated
from lambdas.batch.layout import S3_MAX_KEY_BYTES, KeyTooLongError
from lambdas.batch.s3_store import S3ObjectStore
from lambdas.batch.service import BatchSettings, process_object
from lambdas.scoring.runtime import ScoringModel
from tests.batch.conftest import NotifiedBucket
from tests.batch.helpers import GOOD_ROWS, csv_bytes, read_scored


def discard_pending_messages(bucket: NotifiedBucket) -> None:
    """Drop what S3 sent so far (the test event, the puts), so a test can hand-craft the notification."""
    while messages := bucket.sqs.receive_message(QueueUrl=bucket.queue_url, MaxNumberOfMessages=10).get(
        "Messages", []
    ):
        for message in messages:
            bucket.sqs.delete_message(QueueUrl=bucket.queue_url, ReceiptHandle=message["ReceiptHandle"])


def created(bucket: NotifiedBucket, key: str) -> ObjectCreated:
    """The ObjectCreated event S3 sends for the object now at ``key``."""
    head = bucket.s3.head_object(Bucket=bucket.bucket, Key=key)
    return ObjectCreated(
        bucket=bucket.bucket,
        key=key,
        etag=head["ETag"].strip('"'),
        version_id=head.get("VersionId"),
        size=head["ContentLength"],
        event_name="ObjectCreated:Put",
    )


# ---- events: the "null" version id -------------------------------------------------------------


def test_given_an_event_whose_version_id_is_the_null_version_then_the_current_object_is_scored(
    notified_bucket: NotifiedBucket,
) -> None:
    # Given an object written while versioning was off or suspended: S3 calls its version "null",
    # and HeadObject answers without a version (or "null") for it
    key = "incoming/null-version/file.csv"
    notified_bucket.put(key, csv_bytes(GOOD_ROWS))
    etag = notified_bucket.s3.head_object(Bucket=notified_bucket.bucket, Key=key)["ETag"].strip('"')
    discard_pending_messages(notified_bucket)
    record = {
        "eventName": "ObjectCreated:Put",
        "s3": {
            "bucket": {"name": notified_bucket.bucket},
            "object": {"key": key, "eTag": etag, "size": 1, "versionId": "null"},
        },
    }
    notified_bucket.sqs.send_message(
        QueueUrl=notified_bucket.queue_url, MessageBody=json.dumps({"Records": [record]})
    )

    # When the handler runs on that notification
    result = notified_bucket.drain()

    # Then the file is scored: the event's "null" and HeadObject's answer name the same object
    # (it used to be skipped as "replaced since the event", with no manifest at all)
    assert result.failed_message_ids == []
    (manifest,) = result.manifests
    assert manifest["status"] == "succeeded"
    assert manifest["input"]["version_id"] is None
    assert manifest["counts"]["rows_scored"] == len(GOOD_ROWS)


# ---- output keys beyond S3's 1024-byte limit ---------------------------------------------------


@pytest.mark.parametrize(
    ("name", "manifest_bytes"),
    [
        # 1023 bytes in 518 characters: "é" is 2 bytes; the manifest key adds 2 bytes (".json" vs ".csv")
        ("é" * 505 + ".csv", 1025),
        # An unsupported name keeps its extension in the manifest key: 6 bytes more than the input
        ("a" * 1010 + ".txt", 1029),
    ],
)
def test_given_an_input_key_whose_manifest_key_would_exceed_s3s_limit_then_it_fails_before_scoring(
    notified_bucket: NotifiedBucket, model: ScoringModel, name: str, manifest_bytes: int
) -> None:
    # Given an object whose own key fits S3's limit but whose manifest key would not
    key = f"incoming/{name}"
    assert len(key.encode()) <= S3_MAX_KEY_BYTES
    notified_bucket.put(key, csv_bytes(GOOD_ROWS))

    # When it is processed
    event = created(notified_bucket, key)
    with pytest.raises(KeyTooLongError) as raised:
        process_object(S3ObjectStore(notified_bucket.s3), model, event, BatchSettings())

    # Then the error says which limit and by how much, and nothing was written: no outputs without
    # a manifest (S3 refuses the manifest put only after the file was scored and its outputs uploaded)
    assert f"{manifest_bytes} bytes" in str(raised.value)
    assert f"{S3_MAX_KEY_BYTES}-byte" in str(raised.value)
    assert f"shorten the name by {manifest_bytes - S3_MAX_KEY_BYTES} bytes" in str(raised.value)
    assert notified_bucket.keys("scored/") == []
    assert notified_bucket.keys("rejected/") == []
    assert notified_bucket.keys("manifests/") == []


def test_given_an_input_key_at_the_limit_whose_outputs_fit_then_it_is_scored(
    notified_bucket: NotifiedBucket, model: ScoringModel
) -> None:
    # A .jsonl key maps to a manifest key of the same length: 1024 bytes in, 1024 bytes out
    key = "incoming/" + "j" * (S3_MAX_KEY_BYTES - len("incoming/") - len(".jsonl")) + ".jsonl"
    assert len(key.encode()) == S3_MAX_KEY_BYTES
    notified_bucket.put(key, b"".join(json.dumps(row).encode() + b"\n" for row in GOOD_ROWS))

    outcome = process_object(
        S3ObjectStore(notified_bucket.s3), model, created(notified_bucket, key), BatchSettings()
    )

    assert outcome.manifest is not None
    assert outcome.manifest.status == "succeeded"
    assert len(outcome.manifest.outputs.scored or "") < S3_MAX_KEY_BYTES


# ---- a version replaced while it was being scored ----------------------------------------------


class ReplacedWhileReading(S3ObjectStore):
    """Calls ``replace`` once, after the input stream was opened: another upload of the same key,
    scored to completion by another invocation while this one is still scoring the older bytes."""

    def __init__(self, client: Any, replace: Any) -> None:
        super().__init__(client)
        self._replace = replace

    def open_stream(self, bucket: str, key: str, *, etag: str, version_id: str | None) -> IO[bytes]:
        stream = super().open_stream(bucket, key, etag=etag, version_id=version_id)
        replace, self._replace = self._replace, None
        if replace is not None:
            replace()
        return stream


@pytest.mark.parametrize(
    "first_body",
    [
        pytest.param(csv_bytes(GOOD_ROWS[:1]), id="readable"),
        pytest.param(csv_bytes(GOOD_ROWS).replace(b"loan_ratio", b"loan_ration", 1), id="wrong-header"),
    ],
)
def test_given_a_newer_version_scored_while_an_older_one_was_scoring_then_the_older_does_not_overwrite_it(
    notified_bucket: NotifiedBucket, model: ScoringModel, first_body: bytes
) -> None:
    # Given a versioned bucket and a first version (one row, or a wrong header) whose event is handled
    notified_bucket.s3.put_bucket_versioning(
        Bucket=notified_bucket.bucket, VersioningConfiguration={"Status": "Enabled"}
    )
    key = "incoming/race/file.csv"
    notified_bucket.put(key, first_body)
    first = created(notified_bucket, key)
    store = S3ObjectStore(notified_bucket.s3)

    def upload_and_score_the_corrected_file() -> None:
        # While the first version is read, the corrected file (three rows) is uploaded and scored
        notified_bucket.put(key, csv_bytes(GOOD_ROWS))
        newer = process_object(store, model, created(notified_bucket, key), BatchSettings())
        assert newer.manifest is not None
        assert newer.manifest.counts.rows_scored == len(GOOD_ROWS)

    # When the first version's scoring finishes after the second version's
    outcome = process_object(
        ReplacedWhileReading(notified_bucket.s3, upload_and_score_the_corrected_file),
        model,
        first,
        BatchSettings(),
    )

    # Then the older version publishes nothing (neither outputs nor a succeeded or failed manifest):
    # the manifest and outputs are the current version's
    assert (outcome.manifest, outcome.skipped) == (None, "superseded")
    current = notified_bucket.s3.head_object(Bucket=notified_bucket.bucket, Key=key)
    manifest = notified_bucket.get_json("manifests/race/file.json")
    assert manifest["status"] == "succeeded"
    assert manifest["input"]["version_id"] == current["VersionId"] != first.version_id
    assert manifest["counts"]["rows_scored"] == len(GOOD_ROWS)
    scored = read_scored("csv", notified_bucket.get("scored/race/file.csv"))
    assert [row["application_id"] for row in scored] == [row["application_id"] for row in GOOD_ROWS]


# ---- the audit line carries no applicant data ----------------------------------------------------


def test_given_an_unreadable_file_whose_error_quotes_its_data_then_the_audit_log_holds_only_the_code(
    notified_bucket: NotifiedBucket, batch_log: io.StringIO
) -> None:
    # Given a JSON Lines file whose first line is an array holding an applicant's data
    secret = "Jane Roe, SSN 078-05-1120"
    notified_bucket.put("incoming/audit/array.jsonl", json.dumps([secret, 52000]).encode() + b"\n")
    # When the file is processed
    (manifest,) = notified_bucket.drain().manifests

    # Then the manifest (next to the data, for the data team) quotes the line, and the audit line
    # (shipped to the Object Lock audit bucket for years) names the error code only
    assert manifest["error"]["code"] == "not_a_table"
    assert secret in manifest["error"]["message"]
    entries = [json.loads(line) for line in batch_log.getvalue().splitlines() if line.startswith("{")]
    (line,) = [entry for entry in entries if entry.get("message") == BATCH_FILE]
    assert line["status"] == "failed"
    assert line["error"] == {"code": "not_a_table"}
    assert "078-05-1120" not in batch_log.getvalue()
