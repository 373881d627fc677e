"""Batch behaviour that no other test noticed when it was broken on purpose (mutation testing).

Each test's comment names the mutant of lambdas/batch/ that survived the suite without it. The service
tests run on the in-memory store, except the versioned-bucket one (the moto server).
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lambdas.batch import scoring
from lambdas.batch.events import ObjectCreated, parse_s3_notification
from lambdas.batch.formats import UnreadableFileError, open_source
from lambdas.batch.layout import FileFormat, manifest_key_for
from lambdas.batch.s3_store import S3ObjectStore
from lambdas.batch.scoring import (
    HASH_BYTES_PER_SECOND,
    PUBLISH_FLOOR_SECONDS,
    UPLOAD_BYTES_PER_SECOND,
    score_source,
)
from lambdas.batch.service import (
    BatchSettings,
    ObjectInfo,
    UploadedObject,
    process_object,
    remove_scratch_left_behind,
)
from lambdas.scoring.runtime import ScoringModel
from tests.batch.conftest import NotifiedBucket
from tests.batch.helpers import (
    COLUMNS,
    GOOD_ROWS,
    csv_bytes,
    expected_decision,
    file_bytes,
    jsonl_bytes,
    read_scored,
    score,
)
from tests.batch.memory_store import MemoryObjectStore, put_and_announce
from tests.batch.test_delivery_review import created

BUCKET = "mutants-bucket"


class RecordingStore(MemoryObjectStore):
    """The in-memory store, recording every write the batch makes: (key, content type)."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[tuple[str, str]] = []

    def put_bytes_if(
        self, bucket: str, key: str, body: bytes, content_type: str, *, replacing: str | None
    ) -> str:
        self.writes.append((key, content_type))
        return super().put_bytes_if(bucket, key, body, content_type, replacing=replacing)

    def upload_file(self, source: Path, bucket: str, key: str, content_type: str) -> UploadedObject:
        self.writes.append((key, content_type))
        return super().upload_file(source, bucket, key, content_type)


def _deliver(store: MemoryObjectStore, key: str, body: bytes) -> ObjectCreated:
    return put_and_announce(store, BUCKET, key, body)


def _manifest(store: MemoryObjectStore, key: str) -> dict[str, Any]:
    stored = store.read_bytes(BUCKET, key)
    assert stored is not None, key
    parsed: dict[str, Any] = json.loads(stored.body)
    return parsed


# ---- keys the batch must leave alone ------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        "incoming/team-a/",  # the S3 console's "Create folder": a zero-byte object whose key ends in "/"
        "scored/team-a/applications.csv",  # outside incoming/ (a notification filter set too wide)
    ],
)
def test_given_a_folder_marker_or_a_key_outside_incoming_then_nothing_is_scored_or_written(
    model: ScoringModel, key: str
) -> None:
    # Mutants: is_incoming_key without its "/" check (layout.py); process_object without its
    # not-incoming skip (service.py).
    # Given the object's event
    store = RecordingStore()
    event = _deliver(store, key, b"" if key.endswith("/") else b"application_id\n1\n")

    # When it is processed
    outcome = process_object(store, model, event, BatchSettings())

    # Then it is skipped and no manifest or output is written for it
    assert (outcome.manifest, outcome.skipped) == (None, "not_incoming")
    assert store.writes == []


# ---- scratch clean-up ---------------------------------------------------------------------------------


def test_given_a_symlink_named_like_scratch_then_the_clean_up_leaves_it_and_its_target(
    tmp_path: Path,
) -> None:
    # Mutant: remove_scratch_left_behind without its is_symlink check (service.py), which made the
    # function's init fail (shutil.rmtree refuses a symlink) on a link it did not create.
    # Given one scratch folder left behind, and a link named like one pointing at someone else's folder
    others = tmp_path / "others"
    others.mkdir()
    (others / "keep.txt").write_text("not ours")
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "batch-abc123").mkdir()
    (tmp_path / "work" / "batch-link").symlink_to(others, target_is_directory=True)

    # When the scratch left behind is removed
    removed = remove_scratch_left_behind(tmp_path / "work")

    # Then only the real scratch folder goes
    assert removed == 1
    assert sorted(path.name for path in (tmp_path / "work").iterdir()) == ["batch-link"]
    assert (others / "keep.txt").read_text() == "not ours"


# ---- event parsing -------------------------------------------------------------------------------------


def test_given_an_event_whose_etag_is_quoted_then_the_file_is_scored_not_skipped_as_replaced(
    model: ScoringModel,
) -> None:
    # Mutant: the event's ETag kept as sent, quotes included (events.py); the file then looked replaced
    # since the event (HeadObject's ETag is compared bare) and was skipped with nothing written.
    # Given a file, and its notification carrying the ETag quoted, as GetObject and HeadObject send it
    store = RecordingStore()
    key = "incoming/quoted/applications.csv"
    delivered = _deliver(store, key, csv_bytes(GOOD_ROWS))
    record = {
        "eventName": "ObjectCreated:Put",
        "s3": {"bucket": {"name": BUCKET}, "object": {"key": key, "eTag": f'"{delivered.etag}"', "size": 1}},
    }
    (event,) = parse_s3_notification(json.dumps({"Records": [record]}))

    # When it is processed
    outcome = process_object(store, model, event, BatchSettings())

    # Then it is scored: every row, under the bare ETag
    assert event.etag == delivered.etag
    assert outcome.skipped is None
    assert outcome.manifest is not None
    assert outcome.manifest.status == "succeeded"
    assert outcome.manifest.counts.rows_scored == len(GOOD_ROWS)
    assert outcome.manifest.input.etag == delivered.etag


def test_given_the_same_bytes_uploaded_again_in_a_versioned_bucket_then_the_new_version_is_scored(
    notified_bucket: NotifiedBucket, model: ScoringModel
) -> None:
    # Mutant: Manifest.is_complete_for without its version id comparison (manifest.py): the second
    # upload, whose ETag is the first's, was skipped as already done and no manifest named it.
    # Given a versioned bucket and a file scored, then uploaded again byte for byte (same ETag)
    notified_bucket.s3.put_bucket_versioning(
        Bucket=notified_bucket.bucket, VersioningConfiguration={"Status": "Enabled"}
    )
    store = S3ObjectStore(notified_bucket.s3)
    key = "incoming/again/applications.csv"
    notified_bucket.put(key, csv_bytes(GOOD_ROWS))
    first = process_object(store, model, created(notified_bucket, key), BatchSettings())
    notified_bucket.put(key, csv_bytes(GOOD_ROWS))
    event = created(notified_bucket, key)
    assert first.manifest is not None
    assert event.etag == first.manifest.input.etag
    assert event.version_id != first.manifest.input.version_id

    # When the second version's event is processed
    second = process_object(store, model, event, BatchSettings())

    # Then that version is scored, and the file's manifest names it
    assert second.skipped is None
    stored = json.loads(notified_bucket.get(manifest_key_for(key)))
    assert (stored["status"], stored["input"]["version_id"]) == ("succeeded", event.version_id)
    assert stored["counts"]["rows_scored"] == len(GOOD_ROWS)


# ---- feature columns -----------------------------------------------------------------------------------


def test_given_two_columns_whose_names_differ_only_in_spaces_then_the_file_is_unreadable_naming_them(
    model: ScoringModel,
) -> None:
    # Mutant: the "more than one column holds a feature" check counting > 2 (scoring.py): the file was
    # scored from whichever column came first, the other silently ignored.
    # Given a header with "age" and " age " holding different ages
    data = b"application_id,age,income,home,loan_ratio,prior_default, age \nA-1,24,32000,RENT,0.45,true,70\n"

    # When / Then it is not scored at all, and the error names both columns
    with pytest.raises(UnreadableFileError) as unreadable:
        score(model, "csv", data)
    assert unreadable.value.code == "duplicate_columns"
    assert "'age'" in unreadable.value.message
    assert "' age '" in unreadable.value.message


def test_given_a_csv_with_one_unnamed_column_then_it_is_scored_and_the_column_carried_through(
    model: ScoringModel,
) -> None:
    # Mutant: _check_unique refusing a single empty header name (formats.py), made for a header with
    # several; pandas' to_csv writes its index as exactly one such column.
    # Given a pandas export: an unnamed index column first
    data = csv_bytes(GOOD_ROWS, ("", *COLUMNS)).replace(b"\n,", b"\n7,")

    # When it is scored
    outcome = score(model, "csv", data)

    # Then every row is scored, the index column kept in place
    assert (outcome.counts.rows_scored, outcome.counts.rows_rejected) == (len(GOOD_ROWS), 0)
    rows = read_scored("csv", outcome.scored)
    assert [row[""] for row in rows] == ["7"] * len(GOOD_ROWS)
    assert [row["decision"] for row in rows] == [expected_decision(row) for row in GOOD_ROWS]


# ---- chunks ----------------------------------------------------------------------------------------------


def test_given_json_lines_then_no_chunk_holds_more_than_the_chunk_rows(model: ScoringModel) -> None:
    # Mutant: a JSON Lines chunk ending only past chunk_rows lines (formats.py), one row more than the
    # memory bound the chunk size sets; the manifest's chunking says what was held.
    # Given 6 rows, read 3 at a time
    outcome = score(model, "jsonl", jsonl_bytes([*GOOD_ROWS, *GOOD_ROWS]), chunk_rows=3)

    # Then two chunks of 3 rows, every row scored
    counts = outcome.counts
    assert (counts.chunks, counts.max_chunk_rows, counts.rows_scored) == (2, 3, 6)


# ---- what the service writes -------------------------------------------------------------------------------


def test_given_an_empty_parquet_file_then_its_manifest_says_the_file_is_empty(model: ScoringModel) -> None:
    # Mutant: process_object without its 0-byte check (service.py): a 0-byte Parquet file failed as
    # "not a readable Parquet file" (not_a_table), which sends its sender looking for a format problem.
    store = RecordingStore()
    key = "incoming/empty/applications.parquet"
    event = _deliver(store, key, b"")

    outcome = process_object(store, model, event, BatchSettings())

    assert outcome.manifest is not None
    stored = _manifest(store, "manifests/empty/applications.json")
    assert (stored["status"], stored["error"]["code"]) == ("failed", "empty_file")
    assert stored["counts"]["rows_in"] == 0
    assert [key for key, _ in store.writes if not key.startswith("manifests/")] == []


@pytest.mark.parametrize(
    ("suffix", "file_format", "media_type"),
    [
        ("csv", "csv", "text/csv"),
        ("csv.gz", "csv.gz", "application/gzip"),
        ("jsonl", "jsonl", "application/x-ndjson"),
        ("parquet", "parquet", "application/vnd.apache.parquet"),
    ],
)
def test_given_each_format_then_the_outputs_are_stored_with_their_media_types(
    model: ScoringModel, suffix: str, file_format: str, media_type: str
) -> None:
    # Mutant: the scored Parquet file stored as text/csv (service.py); a browser or a tool that goes by
    # the Content-Type then opens it as text.
    store = RecordingStore()
    event = _deliver(store, f"incoming/types/applications.{suffix}", file_bytes(file_format, GOOD_ROWS))

    process_object(store, model, event, BatchSettings())

    types = dict(store.writes)
    assert types[f"scored/types/applications.{suffix}"] == media_type
    assert types["rejected/types/applications.csv"] == "text/csv"
    assert types["manifests/types/applications.json"] == "application/json"


class DeletedWhileRead(RecordingStore):
    """The input is deleted once this invocation has opened it: from then on, HeadObject finds nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.deleted = False

    def open_stream(self, bucket: str, key: str, *, etag: str, version_id: str | None) -> IO[bytes]:
        stream = super().open_stream(bucket, key, etag=etag, version_id=version_id)
        self.deleted = True
        return stream

    def head(self, bucket: str, key: str, version_id: str | None) -> ObjectInfo | None:
        return None if self.deleted else super().head(bucket, key, version_id)


def test_given_the_input_deleted_after_it_was_read_then_its_results_are_still_published(
    model: ScoringModel,
) -> None:
    # Mutant: _replaced_meanwhile treating a deleted input as replaced (service.py): the file, read in
    # full, was dropped as "superseded" with no outputs and no manifest, and no newer object would
    # ever have its own event to score it.
    store = DeletedWhileRead()
    key = "incoming/deleted/applications.csv"
    event = _deliver(store, key, csv_bytes(GOOD_ROWS))

    outcome = process_object(store, model, event, BatchSettings())

    assert store.deleted
    assert outcome.skipped is None
    stored = _manifest(store, "manifests/deleted/applications.json")
    assert (stored["status"], stored["counts"]["rows_scored"]) == ("succeeded", len(GOOD_ROWS))
    written = [key for key, _ in store.writes]
    assert "scored/deleted/applications.csv" in written
    assert "rejected/deleted/applications.csv" in written


# ---- the time left to publish --------------------------------------------------------------------------


class _StoppedClock:
    """``time`` for lambdas.batch.scoring with time.monotonic() standing still at 0: the deadline
    check then compares the time publishing needs with the deadline, whatever the machine's speed."""

    monotonic = staticmethod(lambda: 0.0)
    perf_counter = staticmethod(time.perf_counter)


def test_given_time_for_the_floor_and_hashing_but_not_the_upload_then_scoring_stops_as_too_large(
    model: ScoringModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Mutant: the time to upload the outputs left out of what publishing needs (scoring.py): the
    # invocation went on scoring when the upload could no longer finish before Lambda's end.
    # Given a one-chunk file and the size of its outputs
    data = csv_bytes(GOOD_ROWS * 4000)
    measured = score(model, "csv", data)
    written = len(measured.scored) + len(measured.rejected)
    upload, hashing = written / UPLOAD_BYTES_PER_SECOND, written / HASH_BYTES_PER_SECOND
    monkeypatch.setattr(scoring, "time", _StoppedClock)

    def scored_rows(deadline: float) -> int:
        source = open_source("csv", io.BytesIO(data))
        result = score_source(model, source, "csv", io.BytesIO(), io.BytesIO(), deadline=deadline)
        return result.counts.rows_scored

    # When the time left covers the floor, hashing and the upload, every row is scored
    assert scored_rows(PUBLISH_FLOOR_SECONDS + hashing + 1.5 * upload) == len(GOOD_ROWS) * 4000
    # but when it covers the floor and hashing and only half the upload, scoring stops as too_large
    with pytest.raises(UnreadableFileError) as stopped:
        scored_rows(PUBLISH_FLOOR_SECONDS + hashing + 0.5 * upload)
    assert stopped.value.code == "too_large"


def test_given_a_negative_number_in_a_rejected_row_then_the_rejected_file_shows_it_as_sent(
    model: ScoringModel,
) -> None:
    # Mutant: spreadsheet_safe quoting every cell that starts with "-" or "+", plain numbers too
    # (formats.py): the rejected file showed '-5 for the age that was sent as -5.
    # Given a row whose age is negative (out of range), next to a formula-like id
    data = csv_bytes([{**GOOD_ROWS[0], "application_id": "=HYPERLINK(1)", "age": -5}])

    outcome = score(model, "csv", data)

    # Then the number is shown as it was sent, while the formula gets its leading quote
    (rejected,) = outcome.rejected_rows()
    assert rejected["error_code"] == "out_of_range"
    assert (rejected["age"], rejected["application_id"]) == ("-5", "'=HYPERLINK(1)")


@pytest.mark.parametrize("file_format", ["csv", "parquet"])
def test_given_an_empty_cell_in_a_rejected_row_then_the_rejected_file_shows_it_empty(
    model: ScoringModel, file_format: FileFormat
) -> None:
    # Mutant: the rejected file's text of a missing value dropped (formats.py): an empty CSV cell or a
    # Parquet null was shown as the word None, a value the sender never sent.
    # Given a row rejected for its age, whose income is missing
    data = file_bytes(file_format, [{**GOOD_ROWS[0], "age": 12, "income": None}])

    outcome = score(model, file_format, data)

    (rejected,) = outcome.rejected_rows()
    assert rejected["error_code"] == "out_of_range"
    assert (rejected["age"], rejected["income"]) == ("12", "")


def test_given_an_at_sign_formula_as_the_only_formula_then_both_csv_outputs_defuse_it(
    model: ScoringModel,
) -> None:
    # Mutant: "@" missing from FORMULA_TRIGGERS (formats.py): a chunk whose only formula-like cell
    # starts with "@" was written to the scored CSV as is, and so was the rejected file's cell.
    # Given one good and one rejected row, each with an id a spreadsheet would run as a formula
    rows = [
        {**GOOD_ROWS[0], "application_id": "@SUM(A1)"},
        {**GOOD_ROWS[0], "application_id": "@A2", "age": 12},
    ]

    outcome = score(model, "csv", csv_bytes(rows))

    (scored,) = read_scored("csv", outcome.scored)
    (rejected,) = outcome.rejected_rows()
    assert (scored["application_id"], rejected["application_id"]) == ("'@SUM(A1)", "'@A2")


def test_given_a_scored_file_then_its_manifest_counts_approvals_and_declines_as_decided(
    model: ScoringModel,
) -> None:
    # Mutant: the manifest's approved and declined counts swapped (service.py); the scored rows said
    # otherwise, and no test compared the two.
    store = RecordingStore()
    rows = [*GOOD_ROWS, GOOD_ROWS[1], GOOD_ROWS[1]]  # more approvals than declines: a swap shows
    event = _deliver(store, "incoming/counts/applications.csv", csv_bytes(rows))

    process_object(store, model, event, BatchSettings())

    decisions = [expected_decision(row) for row in rows]
    assert decisions.count("approve") != decisions.count("decline")
    counts = _manifest(store, "manifests/counts/applications.json")["counts"]
    assert (counts["approved"], counts["declined"]) == (
        decisions.count("approve"),
        decisions.count("decline"),
    )
    stored = store.read_bytes(BUCKET, "scored/counts/applications.csv")
    assert stored is not None
    scored = read_scored("csv", stored.body)
    assert [row["decision"] for row in scored] == decisions


@pytest.mark.parametrize("file_format", ["csv", "parquet"])
def test_given_an_input_column_named_like_a_model_column_then_the_model_value_replaces_it(
    model: ScoringModel, file_format: FileFormat
) -> None:
    # Mutant: the input's columns named like the model's kept next to them (formats.py): writing the
    # scored file raised a ValueError (two "decision" columns), a fault retried into the dead-letter queue.
    # Given a file that carries a decision of its own (an earlier run's, say)
    rows = [{**row, "decision": "old"} for row in GOOD_ROWS]
    columns = (*COLUMNS, "decision")
    data = csv_bytes(rows, columns) if file_format == "csv" else _parquet_with_decision(rows)

    outcome = score(model, file_format, data)

    # Then each row has one decision: the model's
    scored = read_scored(file_format, outcome.scored)
    assert [row["decision"] for row in scored] == [expected_decision(row) for row in GOOD_ROWS]
    names = list(scored[0])
    assert names.count("decision") == 1
    assert names == [*COLUMNS, "probability_of_default", "decision", "reasons", "model_version"]


def _parquet_with_decision(rows: list[dict[str, Any]]) -> bytes:
    table = pa.Table.from_pylist(rows)
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()
