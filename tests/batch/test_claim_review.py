"""Review of the per-file claim (lambdas/batch/service.py): failure points and interleavings that the
claim tests (tests/batch/test_concurrent_delivery.py) did not reach.

- A conditional put whose answer is lost (a 500 or a dropped connection after S3 wrote it) is sent again
  by the SDK, and the retry is refused (412): the key changed, by that very put. It was read as "another
  invocation got there first": the file's own claim turned away its only delivery (for 90 minutes, one of
  its 3 receives), or a put that landed failed its message.
- The manifest was read after the head: an older version's delivery could find, there, the claim of a
  newer version put in between, take it (a claim still scoring another version is taken over at once)
  and make the newer version's invocation lose it.

The interleavings are forced with store wrappers (and, to let an invocation go on after another ran,
one thread waiting on an event); both stores: the moto server and the in-memory one.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from lambdas.batch.events import ObjectCreated
from lambdas.batch.layout import manifest_key_for
from lambdas.batch.s3_store import S3ObjectStore
from lambdas.batch.service import (
    BatchSettings,
    FileBusyError,
    ObjectInfo,
    ObjectStore,
    Outcome,
    process_object,
)
from lambdas.scoring.runtime import ScoringModel
from tests.batch.conftest import Files, Store
from tests.batch.helpers import GOOD_ROWS, csv_bytes
from tests.batch.memory_store import MemoryObjectStore
from tests.batch.test_concurrent_delivery import (
    KEY,
    ROWS,
    Interleaved,
    assert_claim,
    assert_published,
)

# Waits between the two threads of one test; reached only when the code under test hangs.
WAIT_SECONDS = 60


# ---- a conditional put whose answer was lost, retried by the SDK -----------------------------------


class RetriedAfterLanding(Interleaved):
    """The in-memory store, with its ``nth`` conditional put sent twice: it lands, and the second send
    (the SDK's retry after a lost answer) finds the key changed and is refused, as S3 refuses it."""

    def __init__(self, inner: Store, nth: int) -> None:
        super().__init__(inner)
        self.nth, self.puts, self.retried = nth, 0, False

    def put_bytes_if(
        self, bucket: str, key: str, body: bytes, content_type: str, *, replacing: str | None
    ) -> str:
        self.puts += 1
        etag = self.inner.put_bytes_if(bucket, key, body, content_type, replacing=replacing)
        if self.puts != self.nth:
            return etag
        self.retried = True
        return self.inner.put_bytes_if(bucket, key, body, content_type, replacing=replacing)


@contextmanager
def answer_lost(files: Files, nth: int) -> Iterator[tuple[ObjectStore, Callable[[], bool]]]:
    """The store to process with, whose ``nth`` conditional manifest put lands and is retried; and
    whether that retry happened. Against moto it is botocore's own retry: a ``needs-retry`` handler asks
    for one after the put's successful first attempt, as botocore does for a 500 or a lost connection."""
    if isinstance(files.store, MemoryObjectStore):
        store = RetriedAfterLanding(files.store, nth)
        yield store, lambda: store.retried
        return
    assert isinstance(files.store, S3ObjectStore)
    events = files.store.client.meta.events
    puts: list[int] = []

    def retry_once(request_dict: dict[str, Any], attempts: int, response: Any, **_: Any) -> int | None:
        headers = request_dict["headers"]
        if "If-Match" not in headers and "If-None-Match" not in headers:
            return None  # an output upload, not a manifest put
        if attempts == 1:
            puts.append(response[0].status_code if response is not None else 0)
            if len(puts) == nth:
                assert puts[-1] == 200, "the first attempt landed"
                return 0  # send it again, now
        return None

    events.register("needs-retry.s3.PutObject", retry_once)
    try:
        yield files.store, lambda: len(puts) >= nth
    finally:
        events.unregister("needs-retry.s3.PutObject", retry_once)


@pytest.mark.parametrize("nth", [1, 2, 3], ids=["claim", "publishing", "final"])
def test_given_a_manifest_put_whose_answer_was_lost_when_the_sdk_retries_it_then_the_file_is_published(
    files: Files, model: ScoringModel, nth: int
) -> None:
    # Given a file, and its nth manifest put (the claim, "publishing", the final manifest) retried by
    # the SDK after it landed, the retry refused by S3 (the key holds that put now)
    files.put(KEY, csv_bytes(ROWS))
    event = files.event(KEY)

    # When the file is processed
    with answer_lost(files, nth) as (store, retried):
        outcome = process_object(store, model, event, BatchSettings())
        assert retried()

    # Then the put is known for this invocation's own and the file is published, scored once (the
    # claim's retry raised FileBusyError: the file's only delivery waited 90 minutes for its own claim
    # to expire; the later ones raised ClaimLostError over a put that had landed)
    assert outcome.skipped is None
    assert outcome.manifest is not None
    manifest = assert_published(files, KEY, model)
    assert manifest["input"]["etag"] == event.etag
    # and a redelivery is answered by that manifest
    again = process_object(files.store, model, event, BatchSettings())
    assert again.skipped == "already_done"
    assert files.manifest(KEY) == manifest


@pytest.mark.parametrize("nth", [1, 2], ids=["claim", "final"])
def test_given_a_corrupt_file_and_a_lost_answer_then_its_failed_manifest_is_written_once(
    files: Files, model: ScoringModel, nth: int
) -> None:
    # Given a file that can never be read (a header missing a feature), and its claim's or its failed
    # manifest's put retried by the SDK after it landed
    files.put(KEY, b"application_id,unknown\n1,2\n")
    event = files.event(KEY)

    # When it is processed
    with answer_lost(files, nth) as (store, retried):
        outcome = process_object(store, model, event, BatchSettings())
        assert retried()

    # Then its failed manifest says why, on this delivery
    assert outcome.skipped is None
    manifest = files.manifest(KEY)
    assert (manifest["status"], manifest["error"]["code"]) == ("failed", "missing_columns")
    assert "claim" not in manifest
    assert manifest["outputs"] == {"scored": None, "rejected": None}
    assert (
        manifest["counts"]["rows_in"]
        == manifest["counts"]["rows_scored"] + manifest["counts"]["rows_rejected"]
    )
    # and a redelivery is answered by it, not read again
    redelivered = Interleaved(files.store)
    assert process_object(redelivered, model, event, BatchSettings()).skipped == "already_done"
    assert redelivered.input_reads == 0
    assert files.manifest(KEY) == manifest


# ---- an older version's delivery and the claim of a newer version -----------------------------------


class AfterFirstHead(Interleaved):
    """Runs ``meanwhile`` once, just after this invocation's first HeadObject of the input answered."""

    def __init__(self, inner: Store, meanwhile: Callable[[], None]) -> None:
        super().__init__(inner)
        self._after_head: Callable[[], None] | None = meanwhile

    def head(self, bucket: str, key: str, version_id: str | None) -> ObjectInfo | None:
        info = super().head(bucket, key, version_id)
        meanwhile, self._after_head = self._after_head, None
        if meanwhile is not None:
            meanwhile()
        return info


@pytest.mark.parametrize("earlier", [True, False], ids=["earlier-manifest", "first-version"])
def test_given_an_older_versions_delivery_when_a_newer_version_is_claimed_meanwhile_then_it_keeps_its_claim(
    files: Files, model: ScoringModel, earlier: bool
) -> None:
    # Given a file (scored once already, or new) and the delivery of its current version
    if earlier:
        files.put(KEY, csv_bytes(GOOD_ROWS[1:2]))
        process_object(files.store, model, files.event(KEY), BatchSettings())
    files.put(KEY, csv_bytes(GOOD_ROWS[:1]))
    older = files.event(KEY)
    newer: list[ObjectCreated] = []
    claimed, resume = threading.Event(), threading.Event()
    newer_outcomes: list[Outcome | Exception] = []

    def hold_while_scoring() -> None:
        claimed.set()
        assert resume.wait(WAIT_SECONDS)

    newer_store = Interleaved(files.store, "input_read", hold_while_scoring)

    def the_newer_delivery() -> None:
        try:
            newer_outcomes.append(process_object(newer_store, model, newer[0], BatchSettings()))
        except Exception as error:  # looked at below, in the test's thread
            newer_outcomes.append(error)

    newer_thread = threading.Thread(target=the_newer_delivery, daemon=True)

    def a_corrected_file_arrives_and_is_claimed() -> None:
        files.put(KEY, csv_bytes(ROWS))
        newer.append(files.event(KEY))
        newer_thread.start()
        assert claimed.wait(WAIT_SECONDS)  # the newer version's invocation holds its claim and scores

    # When the corrected file arrives and is claimed just after the older delivery found its version
    # current, and the newer delivery goes on once the older one is done
    this = AfterFirstHead(files.store, a_corrected_file_arrives_and_is_claimed)
    try:
        with pytest.raises(FileBusyError, match="claimed by another invocation"):
            process_object(this, model, older, BatchSettings())
    finally:
        resume.set()
        if newer_thread.ident is not None:  # started by the hook
            newer_thread.join(WAIT_SECONDS)

    # Then the older delivery's claim put was refused and it read nothing (it used to take the newer
    # version's claim over, score the old version for nothing and make the newer one's invocation lose
    # its claim: ClaimLostError, the corrected file published 90 minutes later at best)
    assert this.input_reads == 0
    (newer_outcome,) = newer_outcomes
    assert isinstance(newer_outcome, Outcome), newer_outcome
    assert newer_outcome.skipped is None
    manifest = assert_published(files, KEY, model)
    assert manifest["input"]["etag"] == newer[0].etag
    # and the older delivery's retry is a skip
    assert process_object(files.store, model, older, BatchSettings()).skipped == "superseded"
    assert files.manifest(KEY) == manifest


# ---- checked and found right: manifests the claim code did not write -------------------------------


def test_given_an_unreadable_manifest_then_the_file_is_claimed_over_it_and_published(
    files: Files, model: ScoringModel
) -> None:
    # Given a file whose manifest key holds bytes that are not a manifest
    files.put(KEY, csv_bytes(ROWS))
    files.put(manifest_key_for(KEY), b"{not json")

    # When it is processed, then it is scored and published over them
    assert process_object(files.store, model, files.event(KEY), BatchSettings()).skipped is None
    assert_published(files, KEY, model)


def test_given_an_incomplete_manifest_of_the_code_before_claims_then_it_holds_nothing(
    files: Files, model: ScoringModel
) -> None:
    # Given the "incomplete" manifest the earlier code put before its uploads (no claim), left by a stop
    files.put(KEY, csv_bytes(ROWS))
    event = files.event(KEY)

    def stop() -> None:
        raise OSError("stop")

    stopped = Interleaved(files.store, "rejected_upload", stop)
    with pytest.raises(OSError, match="stop"):
        process_object(stopped, model, event, BatchSettings())
    left = files.manifest(KEY)
    assert_claim(left, "stopped")
    del left["claim"]
    files.put(manifest_key_for(KEY), json.dumps(left, indent=2).encode())

    # When the file is delivered again, then it is scored at once and published
    retry = Interleaved(files.store)
    assert process_object(retry, model, event, BatchSettings()).skipped is None
    assert retry.input_reads == 1
    assert_published(files, KEY, model)
