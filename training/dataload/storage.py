"""Where exports and bundles are written to and read from: a local folder or an ``s3://bucket/prefix``.

One small interface so the exporter, the export reader and the registry do not care which. Keys
are always ``/``-separated and relative to the location. boto3 is imported only when an S3
location is used (and it honours ``AWS_ENDPOINT_URL``, which is how tests reach the emulator).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol


class StorageError(Exception):
    """A location could not be read or written."""


class ObjectExistsError(StorageError):
    """A write that must not overwrite found the key already there."""


class ObjectChangedError(StorageError):
    """A write conditioned on the version read (``if_match``) found another version there, or none."""


class Storage(Protocol):
    """A flat key space under one location."""

    def describe(self, key: str = "") -> str:
        """A human-readable address of ``key`` (for messages)."""
        ...

    def list_keys(self, prefix: str = "") -> list[str]:
        """All keys under ``prefix`` (relative to the location), sorted."""
        ...

    def read_bytes(self, key: str) -> bytes: ...

    def read_versioned(self, key: str) -> tuple[bytes, str] | None:
        """The object and a tag of this version of it (for ``write_bytes(if_match=...)``), or None."""
        ...

    def write_bytes(
        self,
        key: str,
        data: bytes,
        *,
        overwrite: bool = True,
        content_type: str | None = None,
        if_match: str | None = None,
    ) -> None:
        """Write ``data`` at ``key``; with ``overwrite=False`` raise ObjectExistsError if it exists; with
        ``if_match`` (a tag from read_versioned) raise ObjectChangedError unless that version is there.

        ``content_type`` is stored as the S3 object's Content-Type (folders ignore it).
        """
        ...

    def exists(self, key: str) -> bool: ...


@dataclass(frozen=True)
class LocalStorage:
    root: Path

    def describe(self, key: str = "") -> str:
        return str(self.root / key) if key else str(self.root)

    def list_keys(self, prefix: str = "") -> list[str]:
        if not self.root.is_dir():
            return []
        keys = [path.relative_to(self.root).as_posix() for path in self.root.rglob("*") if path.is_file()]
        return sorted(key for key in keys if key.startswith(prefix))

    def read_bytes(self, key: str) -> bytes:
        path = self.root / key
        try:
            return path.read_bytes()
        except OSError as error:
            raise StorageError(f"cannot read {path}: {error}") from error

    def read_versioned(self, key: str) -> tuple[bytes, str] | None:
        path = self.root / key
        if not path.is_file():
            return None
        data = self.read_bytes(key)
        return data, hashlib.sha256(data).hexdigest()

    def write_bytes(
        self,
        key: str,
        data: bytes,
        *,
        overwrite: bool = True,
        content_type: str | None = None,
        if_match: str | None = None,
    ) -> None:
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write beside the target, then rename: a reader never sees half a file.
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            temporary.write_bytes(data)
        except BaseException:
            temporary.unlink(missing_ok=True)  # a half-written temporary must not stay beside the object
            raise
        if if_match is not None:
            try:
                self._replace_if_unchanged(path, temporary, if_match)
            finally:
                temporary.unlink(missing_ok=True)
            return
        if overwrite:
            temporary.replace(path)
            return
        try:
            # os.link fails if the target exists, which makes "create only" atomic.
            os.link(temporary, path)
        except FileExistsError as error:
            raise ObjectExistsError(f"{path} already exists") from error
        finally:
            temporary.unlink(missing_ok=True)

    def exists(self, key: str) -> bool:
        return (self.root / key).is_file()

    @staticmethod
    def _replace_if_unchanged(path: Path, temporary: Path, tag: str) -> None:
        """Compare and replace under an exclusive lock beside the file (the writers of one folder share
        a machine or a file system with locks)."""
        with open(path.with_name(f".{path.name}.lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                current = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
                if current != tag:
                    raise ObjectChangedError(f"{path} changed since it was read")
                temporary.replace(path)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


@dataclass(frozen=True)
class S3Storage:
    bucket: str
    prefix: str  # "" or ends with "/"
    client: Any

    def _full_key(self, key: str) -> str:
        return f"{self.prefix}{key}"

    def describe(self, key: str = "") -> str:
        return f"s3://{self.bucket}/{self._full_key(key)}"

    def list_keys(self, prefix: str = "") -> list[str]:
        keys: list[str] = []
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self._full_key(prefix)):
                keys.extend(item["Key"][len(self.prefix) :] for item in page.get("Contents", []))
        except self.client.exceptions.NoSuchBucket as error:
            raise StorageError(f"bucket {self.bucket!r} does not exist") from error
        return sorted(keys)

    def read_bytes(self, key: str) -> bytes:
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._full_key(key))
        except self.client.exceptions.NoSuchKey as error:
            raise StorageError(f"{self.describe(key)} does not exist") from error
        body: bytes = response["Body"].read()
        return body

    def read_versioned(self, key: str) -> tuple[bytes, str] | None:
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._full_key(key))
        except self.client.exceptions.NoSuchKey:
            return None
        body: bytes = response["Body"].read()
        return body, str(response["ETag"])

    def write_bytes(
        self,
        key: str,
        data: bytes,
        *,
        overwrite: bool = True,
        content_type: str | None = None,
        if_match: str | None = None,
    ) -> None:
        arguments: dict[str, Any] = {"Bucket": self.bucket, "Key": self._full_key(key), "Body": data}
        if content_type:
            arguments["ContentType"] = content_type
        if if_match is not None:
            # S3 conditional write: the PUT fails (412, or 404 when the key is gone) unless the object
            # is still the version read.
            arguments["IfMatch"] = if_match
        elif not overwrite:
            # S3 conditional write: the PUT fails with 412 if the key exists (no check-then-write race).
            arguments["IfNoneMatch"] = "*"
        try:
            self.client.put_object(**arguments)
        except self.client.exceptions.ClientError as error:
            code = error.response.get("Error", {}).get("Code", "")
            # 409 ConditionalRequestConflict: another conditional write to the key at the same time.
            if if_match is not None and code in {
                "PreconditionFailed",
                "412",
                "NoSuchKey",
                "404",
                "ConditionalRequestConflict",
                "409",
            }:
                raise ObjectChangedError(f"{self.describe(key)} changed since it was read") from error
            if code in {"PreconditionFailed", "412"}:
                raise ObjectExistsError(f"{self.describe(key)} already exists") from error
            raise StorageError(f"cannot write {self.describe(key)}: {error}") from error

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._full_key(key))
        except self.client.exceptions.ClientError as error:
            if error.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
                return False
            raise
        return True


def open_storage(location: str | Path) -> Storage:
    """A local folder path or ``s3://bucket[/prefix]``."""
    text = str(location)
    if text.startswith("s3://"):
        bucket, _, prefix = text[len("s3://") :].partition("/")
        if not bucket:
            raise ValueError(f"S3 location {text!r} has no bucket name")
        prefix = prefix.strip("/")
        import boto3  # only S3 locations need the AWS SDK

        return S3Storage(bucket=bucket, prefix=f"{prefix}/" if prefix else "", client=boto3.client("s3"))
    if "://" in text:
        raise ValueError(f"unsupported location {text!r}: use a local folder or s3://bucket/prefix")
    return LocalStorage(Path(text))
