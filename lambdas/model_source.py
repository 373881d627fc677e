"""Where a Lambda's model comes from when it is not packaged: a registered bundle in S3.

Shared by the API and the batch Lambda so both load a ``MODEL_BUNDLE_URI`` the same way. An adapter,
not domain code: it talks to S3 through the boto3 client each Lambda passes in, and imports nothing
from AWS at module level (the API imports boto3 only when the variable is set: cold start matters).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from lambdas.scoring.card import ModelCard
from lambdas.scoring.runtime import CARD_FILE, ModelBundleError, ScoringModel

MODEL_BUNDLE_URI = "MODEL_BUNDLE_URI"
# What S3 answers for an object that is not there, given s3:ListBucket on the bucket.
_MISSING_CODES = frozenset({"NoSuchKey", "404"})
# The characters botocore accepts in a bucket name (S3's own rules are stricter for new buckets).
_BUCKET_NAME = re.compile(r"[a-zA-Z0-9.\-_]{1,255}")


class BundleUriError(ValueError):
    """``MODEL_BUNDLE_URI`` is not an ``s3://bucket/prefix/`` URI."""


@dataclass(frozen=True)
class S3Location:
    bucket: str
    prefix: str  # "" or ends with "/"

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


def parse_s3_uri(uri: str) -> S3Location:
    if not uri.startswith("s3://"):
        raise BundleUriError(f"{MODEL_BUNDLE_URI} must look like s3://bucket/prefix/, got {uri!r}")
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    if not bucket:
        raise BundleUriError(f"{MODEL_BUNDLE_URI} has no bucket: {uri!r}")
    if not _BUCKET_NAME.fullmatch(bucket):
        raise BundleUriError(f"{MODEL_BUNDLE_URI} has an invalid bucket name {bucket!r}: {uri!r}")
    # The URI of the card or model object (as the console copies it) instead of their folder.
    if prefix.endswith((CARD_FILE, ".onnx")):
        raise BundleUriError(
            f"{MODEL_BUNDLE_URI} must name the bundle's folder, not one of its files: {uri!r}"
        )
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    return S3Location(bucket=bucket, prefix=prefix)


def load_model_from_s3(s3_client: Any, location: S3Location, *, threads: int) -> ScoringModel:
    """Fetch the card, then the ONNX file it names; the sha256 is checked against the card.

    Raises ModelBundleError naming the S3 object when a part is missing or unreadable.
    """
    card_json = _read(s3_client, location, CARD_FILE)
    # The card names the ONNX file; parse it first to know which object to fetch.
    try:
        onnx_file = ModelCard.model_validate_json(card_json).onnx.file
    except ValueError as error:  # pydantic.ValidationError is a ValueError
        raise ModelBundleError(
            f"model card {location.uri}{CARD_FILE} is not a valid card: {error}"
        ) from error
    onnx_bytes = _read(s3_client, location, onnx_file)
    return ScoringModel.from_bytes(onnx_bytes, card_json, source=location.uri, threads=threads)


def _read(s3_client: Any, location: S3Location, file: str) -> bytes:
    # The caller's client has loaded botocore already.
    from botocore.exceptions import BotoCoreError, ClientError

    key = f"{location.prefix}{file}"
    try:
        data: bytes = s3_client.get_object(Bucket=location.bucket, Key=key)["Body"].read()
    except ClientError as error:
        code = str(error.response.get("Error", {}).get("Code", ""))
        if code in _MISSING_CODES:
            raise ModelBundleError(f"model bundle {location.uri} has no {file}") from error
        if code == "NoSuchBucket":
            raise ModelBundleError(
                f"model bundle {location.uri}: bucket {location.bucket} does not exist"
            ) from error
        raise ModelBundleError(f"cannot read s3://{location.bucket}/{key}: {error}") from error
    except BotoCoreError as error:  # no credentials, endpoint unreachable, timeout, body cut short
        raise ModelBundleError(f"cannot read s3://{location.bucket}/{key}: {error}") from error
    return data
