"""Batch fixtures: the hand-built logistic bundle, and an emulated bucket whose incoming/ notifies SQS.

The moto server fixtures come from tests/integration/conftest.py (a real HTTP endpoint started by the
tests; AWS_ENDPOINT_URL points boto3 at it for the whole session).
"""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest

from lambdas.batch import wiring as batch_wiring
from lambdas.batch.events import ObjectCreated
from lambdas.batch.layout import manifest_key_for
from lambdas.batch.local import DrainResult, create_notified_bucket, drain_queue
from lambdas.batch.s3_store import S3ObjectStore
from lambdas.scoring.runtime import ScoringModel
from tests.batch.memory_store import MemoryObjectStore
from tests.conftest import captured_log
from tests.integration.conftest import moto_endpoint, s3_client  # noqa: F401  (fixtures)
from tests.scoring.bundles import write_logistic_bundle

FEATURE_HEADER = "application_id,age,income,home,loan_ratio,prior_default"


@pytest.fixture(scope="session")
def batch_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_logistic_bundle(tmp_path_factory.mktemp("batch-bundle") / "logistic")


@pytest.fixture(scope="module")
def model(batch_bundle: Path) -> ScoringModel:
    """The batch bundle loaded, for tests that call ``score_source`` directly."""
    return ScoringModel.load_directory(batch_bundle)


@pytest.fixture
def batch_environment(
    batch_bundle: Path,
    moto_endpoint: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[None]:
    monkeypatch.setenv("MODEL_BUNDLE_DIR", str(batch_bundle))
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "LoanScoringTests")
    monkeypatch.delenv("BATCH_CHUNK_ROWS", raising=False)
    monkeypatch.delenv("BATCH_CSV_BLOCK_BYTES", raising=False)
    batch_wiring.loaded_model.cache_clear()
    batch_wiring.object_store.cache_clear()
    yield
    batch_wiring.loaded_model.cache_clear()
    batch_wiring.object_store.cache_clear()


@dataclass
class NotifiedBucket:
    """A bucket whose ObjectCreated events under incoming/ go to an SQS queue, like the CDK stack's."""

    s3: Any
    sqs: Any
    bucket: str
    queue_url: str

    def put(self, key: str, body: bytes) -> None:
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=body)

    def drain(self) -> DrainResult:
        """Run the handler on what the emulator delivered, until the queue is empty."""
        return drain_queue(self.sqs, self.queue_url, self.s3)

    def get(self, key: str) -> bytes:
        data: bytes = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        return data

    def get_json(self, key: str) -> Any:
        return json.loads(self.get(key))

    def keys(self, prefix: str = "") -> list[str]:
        response = self.s3.list_objects_v2(Bucket=self.bucket, Prefix=prefix)
        return sorted(item["Key"] for item in response.get("Contents", []))


@pytest.fixture
def notified_bucket(batch_environment: None, moto_endpoint: str) -> NotifiedBucket:  # noqa: F811
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    sqs = boto3.client("sqs", endpoint_url=moto_endpoint, region_name="us-east-1")
    name = f"batch-{uuid.uuid4().hex[:12]}"
    queue_url = create_notified_bucket(s3, sqs, name, queue_name=name)
    return NotifiedBucket(s3=s3, sqs=sqs, bucket=name, queue_url=queue_url)


@pytest.fixture
def batch_log() -> Iterator[io.StringIO]:
    """The batch logger's JSON lines (its handler holds the stdout of import time, not capsys's)."""
    with captured_log(batch_wiring.logger) as buffer:
        yield buffer


# ---- one file's bucket, on moto or in memory (the claim tests run on both) ----------------------

Store = S3ObjectStore | MemoryObjectStore


@dataclass
class Files:
    store: Store
    bucket: str

    def put(self, key: str, body: bytes) -> None:
        if isinstance(self.store, MemoryObjectStore):
            self.store.put_bytes(self.bucket, key, body, "text/csv")
        else:
            self.store.client.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType="text/csv")

    def event(self, key: str) -> ObjectCreated:
        """The ObjectCreated event of the object now at ``key``."""
        info = self.store.head(self.bucket, key, None)
        assert info is not None
        return ObjectCreated(self.bucket, key, info.etag, info.version_id, info.size, "ObjectCreated:Put")

    def read(self, key: str) -> bytes:
        stored = self.store.read_bytes(self.bucket, key)
        assert stored is not None, key
        return stored.body

    def manifest(self, key: str) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.read(manifest_key_for(key)))
        return parsed


@pytest.fixture(params=["s3", "memory"])
def files(request: pytest.FixtureRequest) -> Files:
    """A file's bucket for the claim tests: on the moto server (S3's conditional puts) or in memory."""
    if request.param == "memory":
        return Files(MemoryObjectStore(), "memory-bucket")
    bucket: NotifiedBucket = request.getfixturevalue("notified_bucket")
    return Files(S3ObjectStore(bucket.s3), bucket.bucket)
