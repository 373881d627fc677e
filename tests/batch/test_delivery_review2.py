"""Second delivery-path review, through the emulator: a notification with several records whose first
cannot be processed; two inputs whose output names collide (the layout drops the format extension
from the rejected file and the manifest, so ``a.csv`` and ``a.parquet`` share ``manifests/a.json``);
and a new version whose outputs are half written over an earlier version's when the invocation stops.
"""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from lambdas.audit import BATCH_FILE
from lambdas.batch.layout import S3_MAX_KEY_BYTES, manifest_key_for
from lambdas.batch.local import drain_queue_once
from lambdas.batch.manifest import Manifest
from lambdas.batch.s3_store import S3ObjectStore
from lambdas.batch.service import BatchSettings, SharedOutputNamesError, process_object
from lambdas.scoring.runtime import ScoringModel
from tests.batch.conftest import NotifiedBucket
from tests.batch.helpers import BAD_ROWS, GOOD_ROWS, csv_bytes, file_bytes, read_rejected
from tests.batch.test_delivery_review import created, discard_pending_messages


def record(bucket: str, key: str) -> dict[str, Any]:
    """An ObjectCreated record without an ETag or version: the current object is scored."""
    return {"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": bucket}, "object": {"key": key}}}


# ---- one message, several records --------------------------------------------------------------


def test_given_a_message_whose_first_record_fails_then_its_other_records_are_still_scored(
    notified_bucket: NotifiedBucket,
) -> None:
    # Given one notification holding two records: first a key whose manifest S3 cannot hold (raises
    # every time), then a good file
    good = "incoming/multi/good.csv"
    notified_bucket.put(good, file_bytes("csv", GOOD_ROWS))
    discard_pending_messages(notified_bucket)
    too_long = "incoming/" + "x" * (S3_MAX_KEY_BYTES - len("incoming/") - len(".csv")) + ".csv"
    body = {"Records": [record(notified_bucket.bucket, too_long), record(notified_bucket.bucket, good)]}
    message_id = notified_bucket.sqs.send_message(
        QueueUrl=notified_bucket.queue_url, MessageBody=json.dumps(body)
    )["MessageId"]

    # When the handler runs on it
    result = drain_queue_once(notified_bucket.sqs, notified_bucket.queue_url, wait_seconds=0)

    # Then the message is reported failed (it returns, then goes to the dead-letter queue), and the good
    # file was scored anyway: it used to wait behind the failing record on every try and land in the
    # dead-letter queue unscored
    assert result.failed_message_ids == [message_id]
    manifest = notified_bucket.get_json("manifests/multi/good.json")
    assert manifest["status"] == "succeeded"
    assert manifest["counts"]["rows_scored"] == len(GOOD_ROWS)


# ---- inputs whose rejected file and manifest share a name ---------------------------------------

ROWS = GOOD_ROWS + [row for row, _ in BAD_ROWS[:1]]  # 3 scored, 1 rejected
OTHER_ROWS = GOOD_ROWS[:1] + [row for row, _ in BAD_ROWS]  # 1 scored, 3 rejected


def _body(key: str, rows: list[dict[str, Any]]) -> bytes:
    name = key.lower()
    file_format = next(f for f in ("csv.gz", "csv", "jsonl", "parquet") if name.endswith("." + f))
    return file_bytes(file_format, rows)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("incoming/c/a.csv", "incoming/c/a.parquet"),
        ("incoming/c/a.csv", "incoming/c/a.csv.gz"),
        ("incoming/c/a.csv", "incoming/c/a.CSV"),
        # An unsupported name keeps its extension in its manifest key: a.txt -> manifests/c/a.txt.json
        ("incoming/c/a.txt.jsonl", "incoming/c/a.txt"),
        # Listed names come back decoded (boto3 asks S3 for URL-encoded keys in the listing)
        ("incoming/c/été + b.csv", "incoming/c/été + b.jsonl"),
    ],
)
def test_given_a_scored_file_when_another_input_would_share_its_manifest_then_that_input_is_refused(
    notified_bucket: NotifiedBucket, model: ScoringModel, first: str, second: str
) -> None:
    # Given a file scored, and inputs whose names only start like it (their outputs are their own)
    neighbours = ["incoming/c/a.v2.csv", "incoming/c/ab.csv", "incoming/c/a/x.csv"]
    for key in [first, *neighbours]:
        notified_bucket.put(key, _body(key, ROWS))
    assert notified_bucket.drain().failed_message_ids == []
    manifest_key = manifest_key_for(first)
    manifest_before = notified_bucket.get_json(manifest_key)
    rejected_before = notified_bucket.get(manifest_before["outputs"]["rejected"])

    # When another input arrives whose manifest key is the same
    notified_bucket.put(second, _body(second, OTHER_ROWS) if not second.endswith(".txt") else b"notes")
    result = notified_bucket.drain()

    # Then its message fails (and, after the retries, waits in the dead-letter queue with the reason):
    # it used to overwrite the first file's manifest and rejected rows, losing that file's result
    assert len(result.failed_message_ids) == 1
    assert notified_bucket.get_json(manifest_key) == manifest_before
    assert notified_bucket.get(manifest_before["outputs"]["rejected"]) == rejected_before
    with pytest.raises(SharedOutputNamesError) as raised:
        process_object(
            S3ObjectStore(notified_bucket.s3), model, created(notified_bucket, second), BatchSettings()
        )
    assert first in str(raised.value)
    assert manifest_key in str(raised.value)
    # while the first file's own redelivery is still answered by its manifest
    store = S3ObjectStore(notified_bucket.s3)
    again = process_object(store, model, created(notified_bucket, first), BatchSettings())
    assert (again.skipped, again.manifest) == ("already_done", Manifest.model_validate(manifest_before))
    # and the neighbours were scored into their own outputs
    for key in neighbours:
        neighbour = notified_bucket.get_json(manifest_key_for(key))
        assert neighbour["input"]["key"] == key


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("a.csv", "a.jsonl"),
        # Found by the unsupported name itself, not by the listing of "a.txt." (where a.txt is not)
        ("a.txt.csv", "a.txt"),
    ],
)
def test_given_two_inputs_sharing_output_names_when_both_arrive_then_neither_publishes(
    notified_bucket: NotifiedBucket, first: str, second: str
) -> None:
    # Given both files in incoming/ before either is processed
    notified_bucket.put(f"incoming/both/{first}", _body(first, ROWS))
    notified_bucket.put(
        f"incoming/both/{second}", b"notes" if second.endswith(".txt") else _body(second, ROWS)
    )

    # When their events are handled
    result = notified_bucket.drain()

    # Then both are refused (whichever came last used to own the shared names, the other's result lost)
    assert len(result.failed_message_ids) == 2
    assert notified_bucket.keys("manifests/") == []
    assert notified_bucket.keys("rejected/") == []


class ScoresAnotherBeforeItsManifest(S3ObjectStore):
    """Runs ``other`` once, just before this invocation's first manifest put (its claim): another
    invocation handling an input with the same output names, from start to finish, in between."""

    def __init__(self, client: Any, other: Any) -> None:
        super().__init__(client)
        self._other = other
        self.ran_other = False

    def put_bytes_if(
        self, bucket: str, key: str, body: bytes, content_type: str, *, replacing: str | None
    ) -> str:
        other, self._other = self._other, None
        if other is not None:
            self.ran_other = True
            other()
        return super().put_bytes_if(bucket, key, body, content_type, replacing=replacing)


def test_given_two_colliding_inputs_processed_at_once_then_the_second_is_refused_before_writing(
    notified_bucket: NotifiedBucket, model: ScoringModel
) -> None:
    # Given a.csv (1 rejected row) and a.parquet (3 rejected rows), both in incoming/
    notified_bucket.put("incoming/race/a.csv", _body("a.csv", ROWS))
    notified_bucket.put("incoming/race/a.parquet", _body("a.parquet", OTHER_ROWS))
    store = S3ObjectStore(notified_bucket.s3)

    def process_the_parquet() -> None:
        process_object(store, model, created(notified_bucket, "incoming/race/a.parquet"), BatchSettings())

    # When a.csv is processed with a.parquet's whole processing slotted in before a.csv's first write
    racing = ScoresAnotherBeforeItsManifest(notified_bucket.s3, process_the_parquet)
    with pytest.raises(SharedOutputNamesError):
        process_object(racing, model, created(notified_bucket, "incoming/race/a.csv"), BatchSettings())

    # Then a.csv is refused by the listing before it writes anything, so the race never starts (a.csv's
    # manifest used to count its 1 rejected row over a.parquet's 3 in rejected/race/a.csv)
    assert not racing.ran_other
    assert notified_bucket.keys("manifests/") == []
    assert notified_bucket.keys("rejected/") == []


# ---- a new version's outputs written over an earlier version's, and processing stops between -----


class StopsBeforeTheRejectedUpload(S3ObjectStore):
    """Ends the invocation (as Lambda's timeout would) once the scored file is uploaded, before the
    rejected file."""

    def upload_file(self, source: Any, bucket: str, key: str, content_type: str) -> None:
        if key.startswith("rejected/"):
            raise TimeoutError("the invocation ran out of time")
        super().upload_file(source, bucket, key, content_type)


def test_given_a_new_version_whose_upload_stops_halfway_then_no_manifest_says_done_over_its_outputs(
    notified_bucket: NotifiedBucket, model: ScoringModel
) -> None:
    # Given a file scored (1 row), then a new version of it (3 rows, 1 of them rejected)
    key = "incoming/halfway/file.csv"
    notified_bucket.put(key, file_bytes("csv", GOOD_ROWS[:1]))
    store = S3ObjectStore(notified_bucket.s3)
    assert process_object(store, model, created(notified_bucket, key), BatchSettings()).manifest is not None
    notified_bucket.put(key, _body(key, [*GOOD_ROWS[:2], BAD_ROWS[0][0]]))

    # When the new version's processing stops after its scored file was uploaded
    with pytest.raises(TimeoutError):
        process_object(
            StopsBeforeTheRejectedUpload(notified_bucket.s3),
            model,
            created(notified_bucket, key),
            BatchSettings(),
        )

    # Then the manifest no longer says "succeeded" for the first version while scored/ holds the new
    # version's rows (and rejected/ the old one's): it says this version is incomplete, names no outputs
    manifest = notified_bucket.get_json("manifests/halfway/file.json")
    current_etag = notified_bucket.s3.head_object(Bucket=notified_bucket.bucket, Key=key)["ETag"].strip('"')
    assert (manifest["status"], (manifest["error"] or {}).get("code")) == ("failed", "incomplete")
    assert manifest["input"]["etag"] == current_etag
    assert manifest["outputs"] == {"scored": None, "rejected": None}
    # and the retry scores the new version rather than taking that manifest for done
    retried = process_object(store, model, created(notified_bucket, key), BatchSettings())
    assert retried.skipped is None
    final = notified_bucket.get_json("manifests/halfway/file.json")
    assert (final["status"], final["counts"]["rows_scored"], final["counts"]["rows_rejected"]) == (
        "succeeded",
        2,
        1,
    )
    assert len(read_rejected(notified_bucket.get("rejected/halfway/file.csv"))) == 1


def test_given_a_file_whose_audit_line_was_lost_when_its_event_is_redelivered_then_the_trail_gets_it(
    notified_bucket: NotifiedBucket, batch_log: io.StringIO
) -> None:
    # Given a file scored, its manifest written, and then its audit line lost (as when the invocation
    # stops between the two): only the manifest remains
    key = "incoming/audit-gap/file.csv"
    notified_bucket.put(key, csv_bytes(GOOD_ROWS))
    notified_bucket.drain()
    manifest = notified_bucket.get_json("manifests/audit-gap/file.json")
    batch_log.seek(0)
    batch_log.truncate()
    # When the same event is delivered again (the retry of that message)
    notification = {
        "Records": [
            {
                "eventName": "ObjectCreated:Put",
                "s3": {
                    "bucket": {"name": notified_bucket.bucket},
                    "object": {"key": key, "eTag": manifest["input"]["etag"], "size": 1},
                },
            }
        ]
    }
    notified_bucket.sqs.send_message(QueueUrl=notified_bucket.queue_url, MessageBody=json.dumps(notification))
    notified_bucket.drain()
    # Then the file is not scored again, and its audit line is written from the manifest, marked
    assert notified_bucket.get_json("manifests/audit-gap/file.json") == manifest
    entries = [json.loads(line) for line in batch_log.getvalue().splitlines() if line.startswith("{")]
    (line,) = [entry for entry in entries if entry.get("message") == BATCH_FILE]
    assert line["redelivered"] is True
    assert line["input"] == manifest["input"]
    assert line["counts"] == manifest["counts"]
