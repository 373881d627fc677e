"""A file too big for one invocation fails with a manifest that says so, instead of timing out.

Before, a file that could not be scored within Lambda's 15 minutes (or whose outputs filled /tmp) ended
each of its three tries in a timeout or a crash, then went to the dead-letter queue with only its claim
as a manifest. Now scoring stops while there is still time to publish, and the file gets a failed
manifest with the code ``too_large`` and what to do; the message is consumed, since a retry would meet
the same limit.
"""

from __future__ import annotations

import errno
import io
import json
import time
from typing import Any

import pytest

from lambdas.batch import service, wiring
from lambdas.batch.events import ObjectCreated
from lambdas.batch.formats import UnreadableFileError, open_source
from lambdas.batch.layout import manifest_key_for
from lambdas.batch.scoring import PUBLISH_FLOOR_SECONDS, score_source
from lambdas.batch.service import BatchSettings, Outcome, process_object
from lambdas.local_context import LocalLambdaContext
from lambdas.scoring.runtime import ScoringModel
from tests.batch.helpers import GOOD_LINE, HEADER
from tests.batch.memory_store import MemoryObjectStore, put_and_announce

BUCKET = "limits-bucket"
KEY = "incoming/limits/applications.csv"
ROWS = 2_000
BLOCK_BYTES = 16 * 1024  # a few hundred rows a block: the file is many chunks


def _csv() -> bytes:
    return (HEADER + "\n" + "\n".join([GOOD_LINE] * ROWS) + "\n").encode()


def _delivered(store: MemoryObjectStore, body: bytes) -> ObjectCreated:
    return put_and_announce(store, BUCKET, KEY, body)


def _manifest(store: MemoryObjectStore) -> dict[str, Any]:
    stored = store.read_bytes(BUCKET, manifest_key_for(KEY))
    assert stored is not None
    parsed: dict[str, Any] = json.loads(stored.body)
    return parsed


def _score(model: ScoringModel, deadline: float | None) -> int:
    source = open_source("csv", io.BytesIO(_csv()), csv_block_bytes=BLOCK_BYTES)
    result = score_source(model, source, "csv", io.BytesIO(), io.BytesIO(), deadline=deadline)
    return result.counts.rows_scored


def test_given_time_enough_to_publish_then_every_row_is_scored(model: ScoringModel) -> None:
    assert _score(model, deadline=time.monotonic() + PUBLISH_FLOOR_SECONDS + 600) == ROWS
    assert _score(model, deadline=None) == ROWS


def test_given_less_time_left_than_publishing_needs_then_scoring_stops_after_the_chunk_and_says_why(
    model: ScoringModel,
) -> None:
    # Given an invocation ending before the outputs could be published
    deadline = time.monotonic() + PUBLISH_FLOOR_SECONDS - 1

    # When / Then: it stops after its first chunk, naming the rows read and what to do
    with pytest.raises(UnreadableFileError) as stopped:
        _score(model, deadline)
    assert stopped.value.code == "too_large"
    assert stopped.value.message.startswith("the file cannot be scored within one invocation: ")
    rows_read = int(stopped.value.message.split(": ")[1].split(" rows")[0].replace(",", ""))
    assert 0 < rows_read < ROWS
    assert "split it into files of fewer rows" in stopped.value.message


def test_given_a_file_too_big_for_the_invocation_when_delivered_then_it_fails_with_a_manifest_and_no_outputs(
    model: ScoringModel,
) -> None:
    store = MemoryObjectStore()
    event = _delivered(store, _csv())
    settings = BatchSettings(
        csv_block_bytes=BLOCK_BYTES, deadline=time.monotonic() + PUBLISH_FLOOR_SECONDS - 1
    )

    outcome = process_object(store, model, event, settings)

    # Then: a final failed manifest (the message is consumed), and nothing under scored/ or rejected/
    assert outcome.manifest is not None
    manifest = _manifest(store)
    assert (manifest["status"], manifest["error"]["code"]) == ("failed", "too_large")
    for folder in ("scored/limits/", "rejected/limits/"):
        assert list(store.keys_in_folder(BUCKET, folder)) == []
    # (where the same file, given time, does put its output)
    given_time = MemoryObjectStore()
    process_object(
        given_time, model, _delivered(given_time, _csv()), BatchSettings(csv_block_bytes=BLOCK_BYTES)
    )
    assert list(given_time.keys_in_folder(BUCKET, "scored/limits/")) == ["scored/limits/applications.csv"]
    # And a redelivery is answered by that manifest, not scored again
    assert process_object(store, model, event, BatchSettings()).skipped == "already_done"


def test_given_outputs_that_fill_the_scratch_space_then_the_file_fails_as_too_large(
    model: ScoringModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(*_: Any) -> Any:
        raise OSError(errno.ENOSPC, "No space left on device")

    store = MemoryObjectStore()
    event = _delivered(store, _csv())
    monkeypatch.setattr(service, "_score_to_files", full)

    process_object(store, model, event, BatchSettings())

    manifest = _manifest(store)
    assert (manifest["status"], manifest["error"]["code"]) == ("failed", "too_large")
    assert "filled the function's scratch space" in manifest["error"]["message"]


def test_given_another_os_error_then_it_is_raised_for_a_retry(
    model: ScoringModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_: Any) -> Any:
        raise OSError(errno.EIO, "Input/output error")

    store = MemoryObjectStore()
    event = _delivered(store, _csv())
    monkeypatch.setattr(service, "_score_to_files", broken)

    with pytest.raises(OSError, match="Input/output error"):
        process_object(store, model, event, BatchSettings())


def test_given_an_invocation_then_the_handler_hands_its_end_to_the_service(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[BatchSettings] = []

    def capture(_store: Any, _model: Any, _event: Any, settings: BatchSettings) -> Outcome:
        seen.append(settings)
        return Outcome(None, skipped="gone")

    monkeypatch.setattr(wiring, "process_object", capture)
    monkeypatch.setattr(wiring, "object_store", lambda: None)
    monkeypatch.setattr(wiring, "loaded_model", lambda: None)
    body = json.dumps(
        {
            "Records": [
                {"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": BUCKET}, "object": {"key": KEY}}}
            ]
        }
    )
    record = {
        "messageId": "m-1",
        "receiptHandle": "r",
        "body": body,
        "attributes": {},
        "eventSource": "aws:sqs",
    }

    before = time.monotonic()
    wiring.handler({"Records": [record]}, LocalLambdaContext("batch", remaining_millis=120_000))
    after = time.monotonic()

    (settings,) = seen
    assert settings.deadline is not None
    assert before + 120 <= settings.deadline <= after + 120
    assert wiring.batch_settings().deadline is None  # outside an invocation: no limit
