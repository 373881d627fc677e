"""Batch scoring end to end on a moto server over HTTP: S3 put -> S3 notification -> SQS -> handler.

Every test checks the invariant rows_in = rows_scored + rows_rejected and the manifest.
"""

from __future__ import annotations

import gzip
import json
from typing import Any

import pytest

from lambdas.batch.layout import manifest_key_for
from lambdas.batch.local import drain_queue_once
from tests.batch.conftest import NotifiedBucket
from tests.batch.helpers import (
    BAD_ROWS,
    COLUMNS,
    GOOD_ROWS,
    csv_bytes,
    expected_decision,
    expected_probability,
    file_bytes,
    read_rejected,
    read_scored,
)
from tests.scoring.bundles import MODEL_VERSION


def assert_invariant(manifest: dict[str, Any]) -> None:
    counts = manifest["counts"]
    assert counts["rows_in"] == counts["rows_scored"] + counts["rows_rejected"]
    assert counts["rows_scored"] == counts["approved"] + counts["declined"]


def only_manifest(bucket: NotifiedBucket, key: str) -> dict[str, Any]:
    result = bucket.drain()
    assert result.failed_message_ids == []
    manifests = [m for m in result.manifests if m["input"]["key"] == key]
    assert len(manifests) == 1, result.manifests
    assert bucket.get_json(manifest_key_for(key)) == manifests[0]
    return manifests[0]


def test_given_good_and_bad_rows_in_one_csv_when_delivered_then_each_row_lands_in_exactly_one_output(
    notified_bucket: NotifiedBucket,
) -> None:
    # Given: three good rows, three rows each breaking one rule, and one line with a missing field
    rows = [GOOD_ROWS[0], BAD_ROWS[0][0], GOOD_ROWS[1], BAD_ROWS[1][0], BAD_ROWS[2][0], GOOD_ROWS[2]]
    body = csv_bytes(rows) + b"C-1,33,1000\n"
    notified_bucket.put("incoming/team/mixed.csv", body)

    # When: the handler runs on the messages the emulator delivered
    manifest = only_manifest(notified_bucket, "incoming/team/mixed.csv")

    # Then: 7 rows in, 3 scored, 4 rejected, with row numbers and the card's error codes
    assert manifest["status"] == "succeeded"
    assert manifest["model_version"] == MODEL_VERSION
    assert manifest["counts"]["rows_in"] == 7
    assert manifest["counts"]["rows_scored"] == 3
    assert manifest["counts"]["rows_rejected"] == 4
    assert_invariant(manifest)
    outputs = manifest["outputs"]
    assert (outputs["scored"], outputs["rejected"]) == ("scored/team/mixed.csv", "rejected/team/mixed.csv")
    assert manifest["input"]["etag"]
    assert manifest["input"]["size_bytes"] == len(body)

    scored = read_scored("csv", notified_bucket.get("scored/team/mixed.csv"))
    assert [row["application_id"] for row in scored] == ["A-1", "A-2", "A-3"]
    assert list(scored[0])[: len(COLUMNS)] == list(COLUMNS)
    for row, original in zip(scored, GOOD_ROWS, strict=True):
        assert float(row["probability_of_default"]) == pytest.approx(expected_probability(original), abs=1e-9)
        assert row["decision"] == expected_decision(original)
        assert row["model_version"] == MODEL_VERSION
        assert (row["reasons"] != "") == (row["decision"] == "decline")

    rejected = read_rejected(notified_bucket.get("rejected/team/mixed.csv"))
    assert [int(row["row_number"]) for row in rejected] == [2, 4, 5, 7]
    assert [row["error_code"] for row in rejected] == [code for _, code in BAD_ROWS] + ["wrong_field_count"]
    assert rejected[0]["application_id"] == "B-1"
    assert rejected[0]["age"] == "12"
    assert "age" in rejected[0]["error"]


@pytest.mark.parametrize("file_format", ["csv", "csv.gz", "jsonl", "parquet"])
def test_given_each_format_when_delivered_then_scored_in_the_same_format_with_extra_columns(
    notified_bucket: NotifiedBucket, file_format: str
) -> None:
    # Given: the same good and bad rows in one file of this format
    rows = GOOD_ROWS + [row for row, _ in BAD_ROWS]
    key = f"incoming/formats/applications.{file_format}"
    notified_bucket.put(key, file_bytes(file_format, rows))

    # When
    manifest = only_manifest(notified_bucket, key)

    # Then: same format out, id column carried, probabilities those of the model
    assert manifest["status"] == "succeeded"
    assert manifest["input"]["format"] == file_format
    assert (
        manifest["counts"]["rows_in"],
        manifest["counts"]["rows_scored"],
        manifest["counts"]["rows_rejected"],
    ) == (6, 3, 3)
    assert_invariant(manifest)
    assert manifest["outputs"]["scored"] == f"scored/formats/applications.{file_format}"
    scored = read_scored(file_format, notified_bucket.get(manifest["outputs"]["scored"]))
    assert [row["application_id"] for row in scored] == ["A-1", "A-2", "A-3"]
    for row, original in zip(scored, GOOD_ROWS, strict=True):
        assert float(row["probability_of_default"]) == pytest.approx(expected_probability(original), abs=1e-9)
        assert row["decision"] == expected_decision(original)
    rejected = read_rejected(notified_bucket.get("rejected/formats/applications.csv"))
    assert [row["error_code"] for row in rejected] == [code for _, code in BAD_ROWS]
    assert [int(row["row_number"]) for row in rejected] == [4, 5, 6]


@pytest.mark.parametrize(
    ("name", "body", "code"),
    [
        ("corrupt.csv.gz", gzip.compress(csv_bytes(GOOD_ROWS * 50))[:-40] + b"garbage!", "corrupt_gzip"),
        ("not-gzip.csv.gz", b"this is not gzip at all", "corrupt_gzip"),
        (
            "wrong-header.csv",
            csv_bytes(GOOD_ROWS).replace(b"loan_ratio", b"loan_ration", 1),
            "missing_columns",
        ),
        ("empty.csv", b"", "empty_file"),
        ("header-only.csv", csv_bytes([]), "no_data_rows"),
        ("binary.parquet", b"PAR1 definitely not parquet", "not_a_table"),
        ("list.jsonl", b"[1, 2, 3]\n", "not_a_table"),
        ("notes.txt", b"hello", "unsupported_format"),
    ],
)
def test_given_an_unreadable_file_then_a_failed_manifest_says_why_and_the_message_is_not_retried(
    notified_bucket: NotifiedBucket, name: str, body: bytes, code: str
) -> None:
    key = f"incoming/bad/{name}"
    notified_bucket.put(key, body)

    manifest = only_manifest(notified_bucket, key)

    assert manifest["status"] == "failed"
    assert manifest["error"]["code"] == code
    assert manifest["error"]["message"]
    assert manifest["counts"] == {
        "rows_in": 0,
        "rows_scored": 0,
        "rows_rejected": 0,
        "approved": 0,
        "declined": 0,
    }
    assert_invariant(manifest)
    assert manifest["outputs"] == {"scored": None, "rejected": None}
    assert notified_bucket.keys("scored/") == []
    # The message was consumed (not left for redelivery): the queue is empty.
    assert notified_bucket.drain().received == 0


def test_given_a_wrong_header_then_the_manifest_names_the_missing_column(
    notified_bucket: NotifiedBucket,
) -> None:
    notified_bucket.put("incoming/h.csv", csv_bytes(GOOD_ROWS).replace(b"home", b"house", 1))
    manifest = only_manifest(notified_bucket, "incoming/h.csv")
    assert "home" in manifest["error"]["message"]
    assert "house" in manifest["error"]["message"]


def test_given_duplicate_delivery_when_handled_twice_then_scored_once_and_outputs_unchanged(
    notified_bucket: NotifiedBucket,
) -> None:
    # Given: a file scored once
    key = "incoming/dup/file.csv"
    notified_bucket.put(key, csv_bytes(GOOD_ROWS))
    first = only_manifest(notified_bucket, key)
    scored_before = notified_bucket.s3.head_object(Bucket=notified_bucket.bucket, Key="scored/dup/file.csv")

    # When: the very same notification arrives again (SQS at-least-once delivery)
    notification = {
        "Records": [
            {
                "eventName": "ObjectCreated:Put",
                "s3": {
                    "bucket": {"name": notified_bucket.bucket},
                    "object": {"key": "incoming/dup/file.csv", "eTag": first["input"]["etag"], "size": 1},
                },
            }
        ]
    }
    notified_bucket.sqs.send_message(QueueUrl=notified_bucket.queue_url, MessageBody=json.dumps(notification))
    second = only_manifest(notified_bucket, key)

    # Then: the existing complete manifest is the answer; nothing was rewritten
    assert second == first
    scored_after = notified_bucket.s3.head_object(Bucket=notified_bucket.bucket, Key="scored/dup/file.csv")
    assert scored_after["LastModified"] == scored_before["LastModified"]
    assert scored_after["ETag"] == scored_before["ETag"]


def test_given_a_new_version_of_the_same_key_when_delivered_then_it_is_scored_again(
    notified_bucket: NotifiedBucket,
) -> None:
    key = "incoming/again.csv"
    notified_bucket.put(key, csv_bytes(GOOD_ROWS[:1]))
    first = only_manifest(notified_bucket, key)
    notified_bucket.put(key, csv_bytes(GOOD_ROWS))
    second = only_manifest(notified_bucket, key)
    assert first["input"]["etag"] != second["input"]["etag"]
    assert (first["counts"]["rows_scored"], second["counts"]["rows_scored"]) == (1, 3)


def test_given_a_key_with_spaces_and_unicode_when_delivered_then_outputs_use_the_decoded_name(
    notified_bucket: NotifiedBucket,
) -> None:
    key = "incoming/Équipe crédit/demandes été 2026 + bis.csv"
    notified_bucket.put(key, csv_bytes(GOOD_ROWS))

    manifest = only_manifest(notified_bucket, key)

    assert manifest["status"] == "succeeded"
    assert manifest["input"]["key"] == key
    assert_invariant(manifest)
    assert notified_bucket.keys("scored/") == ["scored/Équipe crédit/demandes été 2026 + bis.csv"]
    assert notified_bucket.keys("manifests/") == ["manifests/Équipe crédit/demandes été 2026 + bis.json"]


def test_given_the_test_event_and_a_malformed_message_then_only_the_malformed_one_is_reported_failed(
    notified_bucket: NotifiedBucket,
) -> None:
    # Given: the s3:TestEvent S3 sent when the notification was configured, a good file, and junk
    notified_bucket.put("incoming/ok.csv", csv_bytes(GOOD_ROWS))
    junk_id = notified_bucket.sqs.send_message(
        QueueUrl=notified_bucket.queue_url, MessageBody="not an S3 event"
    )["MessageId"]

    result = notified_bucket.drain()

    # Then: the test event is ignored, the file is scored, and only the junk goes back to the queue
    assert result.failed_message_ids == [junk_id]
    assert [m["input"]["key"] for m in result.manifests] == ["incoming/ok.csv"]
    assert notified_bucket.keys("manifests/") == ["manifests/ok.json"]


def test_given_a_versioned_bucket_and_two_versions_when_events_arrive_out_of_order_then_the_newest_wins(
    notified_bucket: NotifiedBucket,
) -> None:
    # Given: versioning on, and two versions of one key (the second with all three good rows)
    notified_bucket.s3.put_bucket_versioning(
        Bucket=notified_bucket.bucket, VersioningConfiguration={"Status": "Enabled"}
    )
    key = "incoming/versions/file.csv"
    notified_bucket.put(key, csv_bytes(GOOD_ROWS[:1]))
    notified_bucket.put(key, csv_bytes(GOOD_ROWS))
    messages = []
    while batch := notified_bucket.sqs.receive_message(
        QueueUrl=notified_bucket.queue_url, MaxNumberOfMessages=10
    ).get("Messages", []):
        messages += batch
    bodies = [m["Body"] for m in messages if "Records" in json.loads(m["Body"])]
    assert len(bodies) == 2

    # When: the newer version's event is handled first, the older one's afterwards
    for body in reversed(bodies):
        notified_bucket.sqs.send_message(QueueUrl=notified_bucket.queue_url, MessageBody=body)
        notified_bucket.drain()

    # Then: the manifest and outputs describe the current version
    current = notified_bucket.s3.head_object(Bucket=notified_bucket.bucket, Key=key)
    manifest = notified_bucket.get_json("manifests/versions/file.json")
    assert manifest["input"]["version_id"] == current["VersionId"]
    assert manifest["counts"]["rows_scored"] == len(GOOD_ROWS)
    assert_invariant(manifest)


def test_given_only_a_malformed_message_when_drained_then_the_whole_batch_stays_in_the_queue(
    notified_bucket: NotifiedBucket,
) -> None:
    notified_bucket.drain()  # the s3:TestEvent
    junk_id = notified_bucket.sqs.send_message(QueueUrl=notified_bucket.queue_url, MessageBody="{}")[
        "MessageId"
    ]

    result = drain_queue_once(
        notified_bucket.sqs, notified_bucket.queue_url, notified_bucket.s3, wait_seconds=0
    )

    assert result.failed_message_ids == [junk_id]
    attributes = notified_bucket.sqs.get_queue_attributes(
        QueueUrl=notified_bucket.queue_url, AttributeNames=["ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    assert attributes["ApproximateNumberOfMessagesNotVisible"] == "1"  # not deleted: it will come back
