"""The edge: :class:`ObjectStore` over boto3 S3. The only batch module that imports an AWS library.

boto3 honours ``AWS_ENDPOINT_URL``, so the same code talks to a local emulator in tests and the demo.
Errors other than "the object is gone" and a failed write condition propagate: the SQS message is
retried, then dead-lettered.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError

from lambdas.batch.events import normalise_etag
from lambdas.batch.service import (
    ConditionFailedError,
    ObjectGoneError,
    ObjectInfo,
    StoredBytes,
    UploadedObject,
)

_GONE_CODES = frozenset({"404", "NoSuchKey", "NoSuchVersion", "412", "PreconditionFailed"})
# A conditional put's "not in the state you expected": 412 for IfNoneMatch on an existing key or IfMatch
# on another ETag, 409 while another conditional write to the key is in flight, NoSuchKey (404) for
# IfMatch on a key with no object; a 404 for another reason (NoSuchBucket) is an error.
_CONDITION_CODES = frozenset({"412", "PreconditionFailed", "409", "ConditionalRequestConflict", "NoSuchKey"})
# Multipart above 64 MiB, 4 parts in flight: bounded memory, and the object appears only when complete.
_TRANSFER = TransferConfig(
    multipart_threshold=64 * 1024 * 1024, multipart_chunksize=64 * 1024 * 1024, max_concurrency=4
)


class S3ObjectStore:
    def __init__(self, client: Any | None = None) -> None:
        # Typed loosely: the optional VersionId/IfMatch keywords are passed as **kwargs.
        self._s3: Any = client if client is not None else boto3.client("s3")

    @property
    def client(self) -> Any:
        """The boto3 S3 client, shared with the model loader (one client per execution environment)."""
        return self._s3

    def head(self, bucket: str, key: str, version_id: str | None) -> ObjectInfo | None:
        try:
            response = self._s3.head_object(Bucket=bucket, Key=key, **_version(version_id))
        except ClientError as error:
            if _is_gone(error):
                return None
            raise
        current_version = response.get("VersionId")
        return ObjectInfo(
            etag=normalise_etag(response["ETag"]),
            # Unversioned buckets report no version (or "null" once versioning was suspended).
            version_id=current_version if current_version not in (None, "null") else None,
            size=int(response["ContentLength"]),
        )

    def open_stream(self, bucket: str, key: str, *, etag: str, version_id: str | None) -> IO[bytes]:
        body: IO[bytes] = self._get(bucket, key, etag, version_id)["Body"]
        return body

    def download(self, bucket: str, key: str, target: Path, *, etag: str, version_id: str | None) -> None:
        body = self._get(bucket, key, etag, version_id)["Body"]
        try:
            with target.open("wb") as sink:
                shutil.copyfileobj(body, sink, length=1024 * 1024)
        finally:
            body.close()

    def upload_file(self, source: Path, bucket: str, key: str, content_type: str) -> UploadedObject | None:
        # boto3's upload_file returns nothing, and the function may not read scored/ back (no HEAD): S3's
        # answer to the PutObject, or to the CompleteMultipartUpload, is taken from the client's events,
        # matched to this upload by its bucket and key through the request's own context.
        token = f"upload-{uuid.uuid4().hex}"
        answers: list[dict[str, Any]] = []

        def mark(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
            if params.get("Bucket") == bucket and params.get("Key") == key:
                context[token] = True

        def keep(http_response: Any, parsed: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
            if context.get(token) and http_response.status_code < 300 and "ETag" in parsed:
                answers.append(parsed)

        hooks = [
            (f"{event}.s3.{operation}", handler, f"{token}-{event}-{operation}")
            for operation in ("PutObject", "CompleteMultipartUpload")
            for event, handler in (("before-parameter-build", mark), ("after-call", keep))
        ]
        events = self._s3.meta.events
        for name, handler, unique_id in hooks:
            events.register(name, handler, unique_id=unique_id)
        try:
            self._s3.upload_file(
                str(source), bucket, key, ExtraArgs={"ContentType": content_type}, Config=_TRANSFER
            )
        finally:
            for name, handler, unique_id in hooks:
                events.unregister(name, handler, unique_id=unique_id)
        if not answers:
            return None
        version_id = answers[-1].get("VersionId")
        return UploadedObject(
            etag=normalise_etag(answers[-1]["ETag"]),
            version_id=version_id if version_id not in (None, "null") else None,
        )

    def put_bytes_if(
        self, bucket: str, key: str, body: bytes, content_type: str, *, replacing: str | None
    ) -> str:
        # S3 checks the condition and writes in one step; no extra IAM action beyond s3:PutObject.
        condition = {"IfMatch": f'"{replacing}"'} if replacing is not None else {"IfNoneMatch": "*"}
        try:
            response = self._s3.put_object(
                Bucket=bucket, Key=key, Body=body, ContentType=content_type, **condition
            )
        except ClientError as error:
            if _error_codes(error) & _CONDITION_CODES:
                expected = f"the object with ETag {replacing}" if replacing is not None else "no object"
                raise ConditionFailedError(
                    f"s3://{bucket}/{key} no longer holds {expected}: {error}"
                ) from error
            raise
        return normalise_etag(response["ETag"])

    def read_bytes(self, bucket: str, key: str) -> StoredBytes | None:
        try:
            response = self._s3.get_object(Bucket=bucket, Key=key)
        except ClientError as error:
            if _is_gone(error):
                return None
            raise
        body: bytes = response["Body"].read()
        return StoredBytes(body=body, etag=normalise_etag(response["ETag"]))

    def keys_in_folder(self, bucket: str, prefix: str, *, page_size: int = 1000) -> Iterator[str]:
        # Delimiter "/": keys in subfolders come back as one common prefix each, not listed one by one.
        # Needs s3:ListBucket, which the function has on its bucket (infra/batch_scoring.py).
        paginator = self._s3.get_paginator("list_objects_v2")
        pages = paginator.paginate(
            Bucket=bucket, Prefix=prefix, Delimiter="/", PaginationConfig={"PageSize": page_size}
        )
        for page in pages:
            for item in page.get("Contents", []):
                yield str(item["Key"])

    def _get(self, bucket: str, key: str, etag: str, version_id: str | None) -> dict[str, Any]:
        # IfMatch: never score bytes other than the version the manifest will name.
        try:
            response: dict[str, Any] = self._s3.get_object(
                Bucket=bucket, Key=key, IfMatch=f'"{etag}"', **_version(version_id)
            )
        except ClientError as error:
            if _is_gone(error):
                raise ObjectGoneError(f"s3://{bucket}/{key} is gone or changed: {error}") from error
            raise
        return response


def _version(version_id: str | None) -> dict[str, str]:
    return {"VersionId": version_id} if version_id else {}


def _is_gone(error: ClientError) -> bool:
    return bool(_error_codes(error) & _GONE_CODES)


def _error_codes(error: ClientError) -> set[str]:
    """The error's code and its HTTP status, either of which may be the one to recognise."""
    code = str(error.response.get("Error", {}).get("Code", ""))
    status = str(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
    return {code, status} - {""}
