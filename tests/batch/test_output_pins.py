"""A manifest pins the content of its outputs: their keys are reused by the next upload under the same
input name, so each output's SHA-256, and the ETag and version id S3 answered its upload with, say which
content held the file's decisions."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from boto3.s3.transfer import TransferConfig

from lambdas.batch import s3_store
from lambdas.batch.events import normalise_etag
from lambdas.batch.layout import manifest_key_for
from lambdas.batch.manifest import Manifest
from lambdas.batch.s3_store import S3ObjectStore
from lambdas.batch.service import BatchSettings, process_object
from lambdas.scoring.runtime import ScoringModel
from tests.batch.conftest import Files, NotifiedBucket
from tests.batch.helpers import GOOD_ROWS, csv_bytes
from tests.batch.memory_store import MemoryObjectStore
from tests.batch.test_delivery_review import created

OUTPUTS = ("scored", "rejected")


def _sha256(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def _versioned(bucket: NotifiedBucket) -> None:
    bucket.s3.put_bucket_versioning(Bucket=bucket.bucket, VersioningConfiguration={"Status": "Enabled"})


@pytest.mark.parametrize("output", OUTPUTS)
def test_given_a_scored_file_then_its_manifest_pins_each_output_by_hash_and_etag(
    files: Files, model: ScoringModel, output: str
) -> None:
    # Given a file with good and bad rows, scored
    key = "incoming/pins/file.csv"
    files.put(key, csv_bytes(GOOD_ROWS) + b"not,a,row\n")
    outcome = process_object(files.store, model, files.event(key), BatchSettings())
    assert outcome.manifest is not None

    # Then the stored manifest names the output's key, the hash of its bytes and the ETag it was put with
    outputs = files.manifest(key)["outputs"]
    stored = files.store.read_bytes(files.bucket, outputs[output])
    assert stored is not None
    assert outputs[f"{output}_object"]["sha256"] == _sha256(stored.body)
    assert outputs[f"{output}_object"]["etag"] == stored.etag


def test_given_a_versioned_bucket_and_a_file_uploaded_again_then_the_first_manifest_names_its_versions(
    notified_bucket: NotifiedBucket, model: ScoringModel
) -> None:
    # Given a versioned bucket, a file scored, then another file under its name scored
    _versioned(notified_bucket)
    store = S3ObjectStore(notified_bucket.s3)
    key = "incoming/pins/again.csv"
    notified_bucket.put(key, csv_bytes(GOOD_ROWS[:1]))
    first = process_object(store, model, created(notified_bucket, key), BatchSettings()).manifest
    notified_bucket.put(key, csv_bytes(GOOD_ROWS))
    second = process_object(store, model, created(notified_bucket, key), BatchSettings()).manifest
    assert first is not None
    assert second is not None

    # Then the first manifest's scored output, read at the version it names, is the content it hashed,
    # while the key now holds the second file's
    pinned = first.outputs.scored_object
    assert pinned is not None
    assert pinned.version_id is not None
    assert first.outputs.scored is not None
    old = notified_bucket.s3.get_object(
        Bucket=notified_bucket.bucket, Key=first.outputs.scored, VersionId=pinned.version_id
    )
    assert _sha256(old["Body"].read()) == pinned.sha256
    assert normalise_etag(old["ETag"]) == pinned.etag
    assert second.outputs.scored_object is not None
    assert second.outputs.scored_object.sha256 != pinned.sha256
    assert _sha256(notified_bucket.get(first.outputs.scored)) == second.outputs.scored_object.sha256


def test_given_a_multipart_upload_then_the_store_returns_the_etag_and_version_s3_completed_it_with(
    notified_bucket: NotifiedBucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a versioned bucket and uploads split into 5 MiB parts (S3's smallest)
    _versioned(notified_bucket)
    part = 5 * 1024 * 1024
    monkeypatch.setattr(
        s3_store, "_TRANSFER", TransferConfig(multipart_threshold=part, multipart_chunksize=part)
    )
    source = tmp_path / "scored"
    source.write_bytes(b"x" * (part + 1))
    store = S3ObjectStore(notified_bucket.s3)

    # When a file of two parts is uploaded
    uploaded = store.upload_file(source, notified_bucket.bucket, "scored/pins/big.csv", "text/csv")

    # Then the store returns the completed object's ETag and version, as S3 reports them afterwards
    head = notified_bucket.s3.head_object(Bucket=notified_bucket.bucket, Key="scored/pins/big.csv")
    assert uploaded is not None
    assert uploaded.etag == normalise_etag(head["ETag"])
    assert uploaded.etag.endswith("-2")
    assert uploaded.version_id == head["VersionId"]


def test_given_an_unversioned_bucket_then_the_uploads_version_is_none(
    notified_bucket: NotifiedBucket, tmp_path: Path
) -> None:
    source = tmp_path / "rejected.csv"
    source.write_bytes(b"row,reason\n")

    uploaded = S3ObjectStore(notified_bucket.s3).upload_file(
        source, notified_bucket.bucket, "rejected/pins/small.csv", "text/csv"
    )

    assert uploaded is not None
    assert uploaded.etag == _md5(b"row,reason\n")
    assert uploaded.version_id is None


def _md5(body: bytes) -> str:
    """A single put's ETag: the MD5 of the body."""
    return hashlib.md5(body, usedforsecurity=False).hexdigest()


def test_given_a_manifest_written_before_the_pins_then_it_still_answers_its_version(
    model: ScoringModel,
) -> None:
    # Given a file scored, whose manifest is then replaced by the form written before outputs were pinned
    store, bucket, key = MemoryObjectStore(), "memory-bucket", "incoming/pins/old.csv"
    files = Files(store, bucket)
    files.put(key, csv_bytes(GOOD_ROWS))
    process_object(store, model, files.event(key), BatchSettings())
    stored: dict[str, Any] = files.manifest(key)
    for output in OUTPUTS:
        del stored["outputs"][f"{output}_object"]
    store.put_bytes(bucket, manifest_key_for(key), json.dumps(stored).encode(), "application/json")

    # When the same version is delivered again
    outcome = process_object(store, model, files.event(key), BatchSettings())

    # Then the old manifest parses and is the answer: the file is not scored again
    assert outcome.skipped == "already_done"
    assert outcome.manifest == Manifest.model_validate(stored)
    assert outcome.manifest.outputs.scored == stored["outputs"]["scored"]
    assert outcome.manifest.outputs.scored_object is None
