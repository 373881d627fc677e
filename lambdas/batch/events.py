"""S3 event notifications as they arrive in an SQS message body. Pure parsing, no AWS imports.

S3 URL-encodes object keys in notifications the way HTML forms do: spaces become '+', and other
reserved or non-ASCII bytes are percent-encoded UTF-8. ``unquote_plus`` reverses exactly that.
When a notification is first configured S3 sends an ``s3:TestEvent`` message, which carries no
object and is ignored.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from urllib.parse import unquote_plus

TEST_EVENT = "s3:TestEvent"


class MalformedEventError(ValueError):
    """The message body is not an S3 event notification we understand."""


@dataclass(frozen=True)
class ObjectCreated:
    bucket: str
    key: str
    etag: str | None
    version_id: str | None
    size: int | None
    event_name: str
    # Who uploaded the file (the notification's userIdentity.principalId), for the audit record.
    uploader: str | None = None


def parse_s3_notification(body: str) -> list[ObjectCreated]:
    """Objects created according to one SQS message body; empty for test events and other events."""
    try:
        payload = json.loads(body)
    except json.JSONDecodeError as error:
        raise MalformedEventError(f"SQS message body is not JSON: {error}") from error
    if not isinstance(payload, dict):
        raise MalformedEventError("SQS message body is not a JSON object")
    if payload.get("Event") == TEST_EVENT:
        return []
    records = payload.get("Records")
    if not isinstance(records, list):
        raise MalformedEventError("SQS message body has no 'Records' list (not an S3 event notification)")
    created: list[ObjectCreated] = []
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            raise MalformedEventError(f"Records[{index}] is not an object")
        event_name = str(record.get("eventName", ""))
        if not event_name.startswith("ObjectCreated:"):
            continue
        created.append(_object_created(record, index, event_name))
    return created


def _object_created(record: dict[str, object], index: int, event_name: str) -> ObjectCreated:
    s3 = record.get("s3")
    if not isinstance(s3, dict):
        raise MalformedEventError(f"Records[{index}].s3 is missing")
    bucket = s3.get("bucket")
    obj = s3.get("object")
    if not isinstance(bucket, dict) or not isinstance(bucket.get("name"), str):
        raise MalformedEventError(f"Records[{index}].s3.bucket.name is missing")
    if not isinstance(obj, dict) or not isinstance(obj.get("key"), str):
        raise MalformedEventError(f"Records[{index}].s3.object.key is missing")
    etag = obj.get("eTag")
    version_id = obj.get("versionId")
    size = obj.get("size")
    identity = record.get("userIdentity")
    uploader = identity.get("principalId") if isinstance(identity, dict) else None
    return ObjectCreated(
        bucket=bucket["name"],
        key=unquote_plus(obj["key"], encoding="utf-8", errors="strict"),
        etag=normalise_etag(etag) if isinstance(etag, str) and etag else None,
        # "null" is S3's name for the one unversioned object of a key; HeadObject reports none (see
        # s3_store), so both must say None or the event looks like an older version and is skipped.
        version_id=version_id if isinstance(version_id, str) and version_id not in ("", "null") else None,
        size=size if isinstance(size, int) else None,
        event_name=event_name,
        uploader=uploader if isinstance(uploader, str) and uploader else None,
    )


def normalise_etag(etag: str) -> str:
    """ETags come quoted from GetObject/HeadObject and unquoted in notifications; compare them bare."""
    return etag.strip('"')
