"""Two deliveries of one file at the same moment: one invocation at a time per file, held by a claim.

S3 notifications and SQS standard queues deliver at least once, so two invocations may be handed the
same object version together; during a model rollout they may run different model versions. The file's
manifest is the claim (an ``incomplete`` manifest put with S3 conditional writes, lambdas/batch/service.py).
The interleavings are forced: a store wrapper runs "the other invocation" at one point of this one.
Every test checks rows in = rows scored + rows rejected and the manifest; the claim tests run against
the moto server (S3's conditional puts) and the in-memory store, whose conditional puts behave alike.
"""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Literal

import pytest

from infra.batch_scoring import BATCH_TIMEOUT, VISIBILITY_TIMEOUT
from lambdas.audit import BATCH_FILE
from lambdas.batch.events import ObjectCreated
from lambdas.batch.layout import manifest_key_for
from lambdas.batch.local import drain_queue_once
from lambdas.batch.s3_store import S3ObjectStore
from lambdas.batch.service import (
    CLAIM_SECONDS,
    LAMBDA_MAX_SECONDS,
    BatchSettings,
    ClaimLostError,
    ConditionFailedError,
    FileBusyError,
    ObjectGoneError,
    ObjectInfo,
    Outcome,
    StoredBytes,
    process_object,
)
from lambdas.scoring.runtime import ScoringModel
from tests.batch.conftest import Files, NotifiedBucket, Store
from tests.batch.helpers import BAD_ROWS, GOOD_ROWS, csv_bytes, read_rejected, read_scored
from tests.batch.memory_store import MemoryObjectStore

KEY = "incoming/race/applications.csv"
ROWS = [*GOOD_ROWS, *(row for row, _ in BAD_ROWS)]  # 3 scored, 3 rejected
NEXT_VERSION = "test-logistic-2026-02-01-def456"

Point = Literal["manifest_read", "input_read", "rejected_upload"]


@pytest.fixture(scope="module")
def next_model(batch_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> ScoringModel:
    """The same bundle registered as the next version: a model rollout, two versions serving at once."""
    folder = tmp_path_factory.mktemp("next-bundle")
    shutil.copytree(batch_bundle, folder, dirs_exist_ok=True)
    card = json.loads((folder / "model_card.json").read_text())
    (folder / "model_card.json").write_text(json.dumps({**card, "model_version": NEXT_VERSION}))
    model = ScoringModel.load_directory(folder)
    assert model.model_version == NEXT_VERSION
    return model


class Killed(BaseException):
    """The invocation ends here, as Lambda's timeout or running out of memory ends it: no handler runs."""


class Interleaved:
    """One invocation's view of the store: delegates every call, counts the reads of the input, and runs
    ``meanwhile`` (what another invocation does in the meantime) once, at ``at``. Once ``dead``, every
    call fails: the process is gone and nothing of it reaches S3 any more."""

    def __init__(self, inner: Store, at: Point | None = None, meanwhile: Callable[[], None] | None = None):
        self.inner, self.at, self._meanwhile = inner, at, meanwhile
        self.input_reads = 0
        self.dead = False

    def _reach(self, point: Point) -> None:
        if self.dead:
            raise RuntimeError("the invocation is gone")
        if point == self.at and self._meanwhile is not None:
            meanwhile, self._meanwhile = self._meanwhile, None
            meanwhile()

    def _alive(self) -> None:
        if self.dead:
            raise RuntimeError("the invocation is gone")

    def head(self, bucket: str, key: str, version_id: str | None) -> ObjectInfo | None:
        self._alive()
        return self.inner.head(bucket, key, version_id)

    def read_bytes(self, bucket: str, key: str) -> StoredBytes | None:
        self._alive()
        stored = self.inner.read_bytes(bucket, key)
        # process_object reads the file's manifest first (and again only after a refused put)
        self._reach("manifest_read")
        return stored

    def put_bytes_if(
        self, bucket: str, key: str, body: bytes, content_type: str, *, replacing: str | None
    ) -> str:
        self._alive()
        return self.inner.put_bytes_if(bucket, key, body, content_type, replacing=replacing)

    def open_stream(self, bucket: str, key: str, *, etag: str, version_id: str | None) -> IO[bytes]:
        self.input_reads += 1
        self._reach("input_read")
        return self.inner.open_stream(bucket, key, etag=etag, version_id=version_id)

    def download(self, bucket: str, key: str, target: Path, *, etag: str, version_id: str | None) -> None:
        self.input_reads += 1
        self._reach("input_read")
        self.inner.download(bucket, key, target, etag=etag, version_id=version_id)

    def upload_file(self, source: Path, bucket: str, key: str, content_type: str) -> None:
        if key.startswith("rejected/"):
            self._reach("rejected_upload")
        self._alive()
        self.inner.upload_file(source, bucket, key, content_type)

    def keys_in_folder(self, bucket: str, prefix: str, *, page_size: int = 1000) -> Iterator[str]:
        self._alive()
        return self.inner.keys_in_folder(bucket, prefix, page_size=page_size)


def assert_published(files: Files, key: str, model: ScoringModel) -> dict[str, Any]:
    """The file's manifest says succeeded with ``model``'s version, and its outputs hold its counts."""
    manifest = files.manifest(key)
    counts = manifest["counts"]
    assert manifest["status"] == "succeeded"
    assert manifest["error"] is None
    assert "claim" not in manifest
    assert counts["rows_in"] == counts["rows_scored"] + counts["rows_rejected"]
    assert (counts["rows_in"], counts["rows_scored"], counts["rows_rejected"]) == (6, 3, 3)
    assert manifest["model_version"] == model.model_version
    scored = read_scored("csv", files.read(manifest["outputs"]["scored"]))
    assert len(scored) == counts["rows_scored"]
    # The version the manifest names is the version that scored the rows
    assert {row["model_version"] for row in scored} == {model.model_version}
    assert len(read_rejected(files.read(manifest["outputs"]["rejected"]))) == counts["rows_rejected"]
    return manifest


def assert_claim(manifest: dict[str, Any], stage: str) -> None:
    assert (manifest["status"], manifest["error"]["code"]) == ("failed", "incomplete")
    assert manifest["claim"]["stage"] == stage
    assert manifest["outputs"] == {"scored": None, "rejected": None}
    counts = manifest["counts"]
    assert counts["rows_in"] == counts["rows_scored"] + counts["rows_rejected"] == 0


def expired() -> BatchSettings:
    """Settings whose claims have expired as soon as they are put: the holder is taken for dead."""
    return BatchSettings(claim_seconds=0)


# ---- two deliveries of one version at the same moment ------------------------------------------


def test_given_two_deliveries_when_the_other_claims_between_this_ones_read_and_claim_then_only_it_scores(
    files: Files, model: ScoringModel, next_model: ScoringModel
) -> None:
    # Given a file and two deliveries of its event, run by two model versions (a rollout)
    files.put(KEY, csv_bytes(ROWS))
    event = files.event(KEY)
    other = Interleaved(files.store)
    outcomes: list[Outcome] = []

    def the_other_delivery() -> None:
        # It reads the same state (no manifest), claims, scores and publishes
        outcomes.append(process_object(other, next_model, event, BatchSettings()))

    # When this one has read the manifest (none yet) and the other runs before this one claims
    this = Interleaved(files.store, "manifest_read", the_other_delivery)
    with pytest.raises(FileBusyError, match="claimed by another invocation") as raised:
        process_object(this, model, event, BatchSettings())

    # Then this one's conditional claim failed (S3's 412) and it read nothing; the other scored once
    assert isinstance(raised.value.__cause__, ConditionFailedError)
    assert (this.input_reads, other.input_reads) == (0, 1)
    (published,) = outcomes
    assert published.skipped is None
    manifest = assert_published(files, KEY, next_model)
    # and when this one's message is retried, the other's manifest makes it a skip
    retried = process_object(Interleaved(files.store), model, event, BatchSettings())
    assert retried.skipped == "already_done"
    assert files.manifest(KEY) == manifest


@pytest.mark.parametrize(("point", "stage"), [("input_read", "scoring"), ("rejected_upload", "publishing")])
def test_given_a_file_being_scored_when_a_second_delivery_arrives_then_it_waits_and_its_retry_is_a_skip(
    files: Files, model: ScoringModel, next_model: ScoringModel, point: Point, stage: str
) -> None:
    # Given a file whose first delivery is being scored (or its outputs uploaded)
    files.put(KEY, csv_bytes(ROWS))
    event = files.event(KEY)
    second = Interleaved(files.store)
    seen: list[dict[str, Any]] = []

    def the_second_delivery() -> None:
        seen.append(files.manifest(KEY))
        with pytest.raises(FileBusyError, match="being processed by another invocation"):
            process_object(second, next_model, event, BatchSettings())

    # When the second delivery of the same version is handled meanwhile
    first = Interleaved(files.store, point, the_second_delivery)
    outcome = process_object(first, model, event, BatchSettings())

    # Then the second found the first's live claim and scored nothing (it used to score the file
    # too, and with another model version the manifest could name another version than the rows)
    (claim,) = seen
    assert_claim(claim, stage)
    assert claim["input"]["etag"] == event.etag
    assert second.input_reads == 0
    assert first.input_reads == 1
    assert outcome.skipped is None
    manifest = assert_published(files, KEY, model)
    # and its retry is a skip answered by the first's manifest
    retried = process_object(second, next_model, event, BatchSettings())
    assert (retried.skipped, second.input_reads) == ("already_done", 0)
    assert files.manifest(KEY) == manifest


def test_given_a_duplicate_message_while_the_file_is_scored_then_it_returns_to_the_queue_and_is_skipped(
    notified_bucket: NotifiedBucket, model: ScoringModel, batch_log: io.StringIO
) -> None:
    # Given a file, its S3 notification in the queue, and failed messages visible again at once (the
    # stack's queue returns them after its 90-minute visibility timeout)
    notified_bucket.sqs.set_queue_attributes(
        QueueUrl=notified_bucket.queue_url, Attributes={"VisibilityTimeout": "0"}
    )
    files = Files(S3ObjectStore(notified_bucket.s3), notified_bucket.bucket)
    files.put(KEY, csv_bytes(ROWS))
    failed: list[list[str]] = []

    def the_handler_on_the_notification() -> None:
        result = drain_queue_once(notified_bucket.sqs, notified_bucket.queue_url, wait_seconds=0)
        failed.append(result.failed_message_ids)

    # When the Lambda handler gets the notification while another delivery scores the file
    scoring = Interleaved(files.store, "input_read", the_handler_on_the_notification)
    process_object(scoring, model, files.event(KEY), BatchSettings())

    # Then that message was reported failed (it stays in the queue), the file scored once
    (failed_ids,) = failed
    assert len(failed_ids) == 1
    # and logged as a warning naming why, not as an error with a stack trace (nothing is at fault)
    logged = [json.loads(line) for line in batch_log.getvalue().splitlines() if line.startswith("{")]
    (busy,) = [entry for entry in logged if entry.get("message_id") == failed_ids[0]]
    assert busy["level"] == "WARNING"
    assert "another invocation" in busy["message"]
    assert "being processed by another invocation" in busy["reason"]
    assert "exception" not in busy
    manifest = assert_published(files, KEY, model)
    # and when it comes back, it is a skip whose audit line is written again, marked as a repeat
    batch_log.seek(0)
    batch_log.truncate()
    again = drain_queue_once(notified_bucket.sqs, notified_bucket.queue_url, wait_seconds=0)
    assert again.received == 1
    assert again.failed_message_ids == []
    assert files.manifest(KEY) == manifest
    entries = [json.loads(line) for line in batch_log.getvalue().splitlines() if line.startswith("{")]
    (line,) = [entry for entry in entries if entry.get("message") == BATCH_FILE]
    assert (line["redelivered"], line["counts"]) == (True, manifest["counts"])
    assert line["function_version"] == "$LATEST"  # the Lambda version that answered (local: $LATEST)


# ---- a holder that died: its claim expires and is taken over ----------------------------------


@pytest.mark.parametrize("stale", [True, False], ids=["expired", "live"])
def test_given_a_claim_whose_holder_died_then_it_is_taken_over_once_expired(
    files: Files, model: ScoringModel, next_model: ScoringModel, stale: bool
) -> None:
    # Given a delivery killed (timeout, out of memory) after its scored upload: no handler ran
    files.put(KEY, csv_bytes(ROWS))
    event = files.event(KEY)

    def die() -> None:
        dying.dead = True
        raise Killed

    dying = Interleaved(files.store, "rejected_upload", die)
    with pytest.raises(Killed):
        process_object(dying, model, event, expired() if stale else BatchSettings())
    left = files.manifest(KEY)
    assert_claim(left, "publishing")

    # When the message is delivered again
    retry = Interleaved(files.store)
    if not stale:
        # Then a claim within its lifetime (the holder could still be at work) holds the file
        with pytest.raises(FileBusyError, match=r"publishing; its claim .* holds until"):
            process_object(retry, next_model, event, BatchSettings())
        assert files.manifest(KEY) == left
        assert retry.input_reads == 0
        return
    # Then an expired claim is taken over: the file is scored again and published
    outcome = process_object(retry, next_model, event, BatchSettings())
    assert outcome.skipped is None
    assert retry.input_reads == 1
    assert_published(files, KEY, next_model)


def test_given_an_invocation_that_fails_with_an_error_then_its_claim_is_given_up_for_the_retry(
    files: Files, model: ScoringModel
) -> None:
    # Given a delivery that fails with an error (S3 refusing an upload) after its scored upload
    files.put(KEY, csv_bytes(ROWS))
    event = files.event(KEY)

    def refuse() -> None:
        raise OSError("S3 refused the upload")

    with pytest.raises(OSError, match="refused"):
        process_object(Interleaved(files.store, "rejected_upload", refuse), model, event, BatchSettings())

    # Then its claim says it stopped (outputs may be partial), within what would be its lifetime
    left = files.manifest(KEY)
    assert_claim(left, "stopped")
    assert "may hold parts" in left["error"]["message"]
    assert datetime.fromisoformat(left["claim"]["expires_at"]) > datetime.now(UTC)
    # and the retry takes it over at once rather than waiting for it to expire
    assert process_object(Interleaved(files.store), model, event, BatchSettings()).skipped is None
    assert_published(files, KEY, model)


# ---- a claim lost to a takeover ------------------------------------------------------------------


@pytest.mark.parametrize("point", ["input_read", "rejected_upload"])
def test_given_a_claim_taken_over_then_its_former_holder_does_not_overwrite_the_new_manifest(
    files: Files, model: ScoringModel, next_model: ScoringModel, point: Point
) -> None:
    # Given a delivery taken for dead (its claim expired) while it is still scoring or uploading
    files.put(KEY, csv_bytes(ROWS))
    event = files.event(KEY)
    taking_over = Interleaved(files.store)
    outcomes: list[Outcome] = []

    def the_next_delivery() -> None:
        outcomes.append(process_object(taking_over, next_model, event, BatchSettings()))

    # When another delivery takes the file over and publishes, and then the slow one goes on
    slow = Interleaved(files.store, point, the_next_delivery)
    with pytest.raises(ClaimLostError, match="taken over"):
        process_object(slow, model, event, expired())

    # Then the new holder's manifest stands, with its own model version: the slow one's next put,
    # conditional on its own claim, failed (before its uploads, or its final manifest after them)
    (outcome,) = outcomes
    assert outcome.skipped is None
    manifest = assert_published(files, KEY, next_model)
    assert outcome.manifest is not None
    assert manifest["input"] == outcome.manifest.input.model_dump()


# ---- a newer version while an older one is published ----------------------------------------------


def test_given_an_older_version_being_published_when_a_newer_one_arrives_then_it_waits_for_it(
    files: Files, model: ScoringModel
) -> None:
    # Given a first version whose outputs are being uploaded (past its check that it is current)
    files.put(KEY, csv_bytes(GOOD_ROWS[:1]))
    older = files.event(KEY)
    newer_store = Interleaved(files.store)
    newer: list[ObjectCreated] = []

    def the_corrected_file_arrives() -> None:
        files.put(KEY, csv_bytes(ROWS))
        newer.append(files.event(KEY))
        with pytest.raises(FileBusyError):
            process_object(newer_store, model, newer[0], BatchSettings())

    # When a corrected file is uploaded and its event handled meanwhile
    outcome = process_object(
        Interleaved(files.store, "rejected_upload", the_corrected_file_arrives), model, older, BatchSettings()
    )

    # Then the newer version waited (it would otherwise score while the older one's outputs land
    # over its own): the older one published consistently, outputs and manifest its own
    assert outcome.manifest is not None
    published = files.manifest(KEY)
    assert published["input"]["etag"] == older.etag
    assert published["counts"] == outcome.manifest.counts.model_dump()
    assert published["counts"]["rows_in"] == published["counts"]["rows_scored"] == 1
    assert len(read_scored("csv", files.read(published["outputs"]["scored"]))) == 1
    assert newer_store.input_reads == 0
    # and its retry scores the newer version
    assert process_object(newer_store, model, newer[0], BatchSettings()).skipped is None
    assert files.manifest(KEY)["input"]["etag"] == newer[0].etag
    assert_published(files, KEY, model)


# ---- giving up a claim without publishing ------------------------------------------------------


@pytest.mark.parametrize("earlier", [True, False], ids=["earlier-version", "first-version"])
def test_given_the_input_gone_while_read_then_the_claim_puts_back_what_was_there(
    files: Files, model: ScoringModel, earlier: bool
) -> None:
    # Given a file (scored once already, or new) whose input disappears while it is read
    if earlier:
        files.put(KEY, csv_bytes(GOOD_ROWS[:1]))
        process_object(files.store, model, files.event(KEY), BatchSettings())
    before = files.store.read_bytes(files.bucket, manifest_key_for(KEY))
    files.put(KEY, csv_bytes(ROWS))

    def deleted() -> None:
        raise ObjectGoneError(f"{KEY} was deleted")

    # When it is processed
    outcome = process_object(
        Interleaved(files.store, "input_read", deleted), model, files.event(KEY), BatchSettings()
    )

    # Then nothing is published: the earlier version's manifest is back as it was, or (no manifest to
    # put back, and the function may not delete) a "stopped" claim that any delivery takes over
    assert (outcome.manifest, outcome.skipped) == (None, "gone")
    if before is not None:
        assert files.read(manifest_key_for(KEY)) == before.body
        counts = files.manifest(KEY)["counts"]
        assert counts["rows_in"] == counts["rows_scored"] + counts["rows_rejected"] == 1
        return
    left = files.manifest(KEY)
    assert_claim(left, "stopped")
    assert "it had written no output" in left["error"]["message"]


# ---- the stores' conditional puts ----------------------------------------------------------------


def conditional_puts(store: Store, bucket: str) -> list[str]:
    """What each step of a sequence of conditional puts on one key gives: "ok" or "412"."""
    results: list[str] = []
    etags: list[str] = []

    def attempt(body: bytes, replacing: str | None) -> None:
        try:
            etags.append(
                store.put_bytes_if(bucket, "manifests/c.json", body, "application/json", replacing=replacing)
            )
        except ConditionFailedError:
            results.append("412")
        else:
            results.append("ok")

    attempt(b"a", replacing="0" * 32)  # a replace of an object that is not there
    attempt(b"a", replacing=None)  # create: the key is free
    attempt(b"b", replacing=None)  # create again: taken
    attempt(b"b", replacing="0" * 32)  # another ETag than the current one
    attempt(b"b", replacing=etags[0])  # the current one
    attempt(b"c", replacing=etags[0])  # the one before: replaced meanwhile
    stored = store.read_bytes(bucket, "manifests/c.json")
    assert stored == StoredBytes(body=b"b", etag=etags[-1])
    assert len(set(etags)) == 2
    return results


def test_given_the_same_conditional_puts_then_the_memory_store_answers_as_s3_does(
    notified_bucket: NotifiedBucket,
) -> None:
    expected = ["412", "ok", "412", "412", "ok", "412"]
    assert conditional_puts(S3ObjectStore(notified_bucket.s3), notified_bucket.bucket) == expected
    assert conditional_puts(MemoryObjectStore(), "memory-bucket") == expected


def test_given_the_stack_then_a_retried_message_never_finds_a_claim_of_a_running_invocation() -> None:
    # A claim outlives any invocation (Lambda's 15-minute maximum, whatever the function's timeout) and
    # a message refused for a live claim returns only after the visibility timeout, when that claim has
    # ended: so duplicates are not refused again and again into the dead-letter queue (3 receives)
    assert BATCH_TIMEOUT.to_seconds() <= LAMBDA_MAX_SECONDS < CLAIM_SECONDS
    assert VISIBILITY_TIMEOUT.to_seconds() > CLAIM_SECONDS
