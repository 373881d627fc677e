"""An in-memory :class:`ObjectStore` with the S3 behaviour the batch code relies on, no AWS library.

For tests (kept out of the deployment package): ETags are the MD5 of the body (as S3's for a single
put), reads are pinned to an ETag, a conditional put checks and writes in one step under a lock (S3
serialises conditional writes to a key the same way), and a key listing stops at the next ``/``. The
store is unversioned, like a bucket whose versioning was never enabled.
"""

from __future__ import annotations

import hashlib
import io
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from lambdas.batch.events import ObjectCreated
from lambdas.batch.service import (
    ConditionFailedError,
    ObjectGoneError,
    ObjectInfo,
    StoredBytes,
    UploadedObject,
)


@dataclass(frozen=True)
class _Object:
    body: bytes
    etag: str
    content_type: str


class MemoryObjectStore:
    def __init__(self) -> None:
        self._objects: dict[tuple[str, str], _Object] = {}
        self._lock = threading.Lock()

    def put_bytes(
        self, bucket: str, key: str, body: bytes, content_type: str = "application/octet-stream"
    ) -> str:
        """An unconditional put, as S3's PutObject without a condition; returns the ETag."""
        with self._lock:
            return self._store(bucket, key, body, content_type)

    def put_bytes_if(
        self, bucket: str, key: str, body: bytes, content_type: str, *, replacing: str | None
    ) -> str:
        with self._lock:
            current = self._objects.get((bucket, key))
            if (current.etag if current is not None else None) != replacing:
                expected = f"the object with ETag {replacing}" if replacing is not None else "no object"
                raise ConditionFailedError(f"memory://{bucket}/{key} no longer holds {expected}")
            return self._store(bucket, key, body, content_type)

    def read_bytes(self, bucket: str, key: str) -> StoredBytes | None:
        current = self._current(bucket, key)
        return StoredBytes(body=current.body, etag=current.etag) if current is not None else None

    def head(self, bucket: str, key: str, version_id: str | None) -> ObjectInfo | None:
        current = self._current(bucket, key)
        if current is None or version_id is not None:  # unversioned: no object has a version id
            return None
        return ObjectInfo(etag=current.etag, version_id=None, size=len(current.body))

    def open_stream(self, bucket: str, key: str, *, etag: str, version_id: str | None) -> IO[bytes]:
        return io.BytesIO(self._pinned(bucket, key, etag, version_id))

    def download(self, bucket: str, key: str, target: Path, *, etag: str, version_id: str | None) -> None:
        target.write_bytes(self._pinned(bucket, key, etag, version_id))

    def upload_file(self, source: Path, bucket: str, key: str, content_type: str) -> UploadedObject:
        return UploadedObject(self.put_bytes(bucket, key, source.read_bytes(), content_type), None)

    def keys_in_folder(self, bucket: str, prefix: str, *, page_size: int = 1000) -> Iterator[str]:
        with self._lock:
            keys = [
                key
                for stored_bucket, key in self._objects
                if stored_bucket == bucket and key.startswith(prefix) and "/" not in key[len(prefix) :]
            ]
        # S3 lists keys in the order of their UTF-8 bytes.
        yield from sorted(keys, key=lambda key: key.encode("utf-8"))

    def _store(self, bucket: str, key: str, body: bytes, content_type: str) -> str:
        etag = hashlib.md5(body, usedforsecurity=False).hexdigest()
        self._objects[(bucket, key)] = _Object(body=bytes(body), etag=etag, content_type=content_type)
        return etag

    def _current(self, bucket: str, key: str) -> _Object | None:
        with self._lock:
            return self._objects.get((bucket, key))

    def _pinned(self, bucket: str, key: str, etag: str, version_id: str | None) -> bytes:
        # As S3's GetObject with IfMatch: never other bytes than the version the manifest will name.
        current = self._current(bucket, key)
        if current is None or current.etag != etag or version_id is not None:
            raise ObjectGoneError(f"memory://{bucket}/{key} is gone or changed")
        return current.body


def put_and_announce(store: MemoryObjectStore, bucket: str, key: str, body: bytes) -> ObjectCreated:
    """Put ``body`` at ``key`` and return the ObjectCreated event S3 would send for it."""
    store.put_bytes(bucket, key, body)
    info = store.head(bucket, key, None)
    assert info is not None
    return ObjectCreated(bucket, key, info.etag, info.version_id, info.size, "ObjectCreated:Put")
