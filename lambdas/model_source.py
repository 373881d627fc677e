"""Where a Lambda's model comes from when it is not packaged: a registered bundle in S3.

Shared by the API and the batch Lambda so both load a ``MODEL_BUNDLE_URI`` the same way. An adapter,
not domain code: it talks to S3 through the boto3 client each Lambda passes in, and imports nothing
from AWS at module level (the API imports boto3 only when the variable is set: cold start matters).

The bucket is not trusted to hold what was deployed: ``MODEL_BUNDLE_VERSION`` (set with the URI by
``modelBundleVersion``) is the version the folder's card must name, so an out-of-band overwrite of the
folder fails the cold start instead of serving (and auditing) a model nobody deployed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from lambdas.scoring.card import ModelCard
from lambdas.scoring.runtime import CARD_FILE, ModelBundleError, ScoringModel
from lambdas.version_names import hash_prefix_mismatch

MODEL_BUNDLE_URI = "MODEL_BUNDLE_URI"
MODEL_BUNDLE_VERSION = "MODEL_BUNDLE_VERSION"
# What S3 answers for an object that is not there, given s3:ListBucket on the bucket.
_MISSING_CODES = frozenset({"NoSuchKey", "404"})
# What S3 answers for an object that is not there to a caller without s3:ListBucket (or one not allowed
# to read it): a mistyped folder must not read as a permissions problem only.
_DENIED_CODES = frozenset({"AccessDenied", "403"})
# The characters botocore accepts in a bucket name (S3's own rules are stricter for new buckets).
_BUCKET_NAME = re.compile(r"[a-zA-Z0-9.\-_]{1,255}")
# A registered version is one folder name (training/registry.py's naming rule).
_VERSION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class BundleUriError(ValueError):
    """``MODEL_BUNDLE_URI`` is not an ``s3://bucket/prefix/`` URI."""


class BundleVersionError(ValueError):
    """``MODEL_BUNDLE_VERSION`` is not a version name, or is set without ``MODEL_BUNDLE_URI``."""


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


def parse_expected_version(raw: str, *, uri_set: bool) -> str | None:
    """``MODEL_BUNDLE_VERSION``: the version a registered bundle's card must name, or None for no check.

    None (unset or empty) is for local runs pointing ``MODEL_BUNDLE_URI`` at a folder; the deployed
    functions get it with the URI whenever ``modelBundleVersion`` is set. Without a URI the packaged
    bundle is served, which ships in the immutable deployment package: a version set then pins nothing,
    so it is refused rather than ignored.
    """
    version = raw.strip()
    if not version:
        return None
    if not uri_set:
        raise BundleVersionError(
            f"{MODEL_BUNDLE_VERSION} is set but {MODEL_BUNDLE_URI} is not: the version pins a registered "
            "bundle, and without its folder the packaged one would be served"
        )
    if not _VERSION_NAME.fullmatch(version):
        raise BundleVersionError(
            f"{MODEL_BUNDLE_VERSION} must be a registered version name (1-128 of letters, digits, "
            f"'.', '_', '-'), got {raw!r}"
        )
    return version


def load_model_from_s3(
    s3_client: Any, location: S3Location, *, threads: int, expected_version: str | None = None
) -> ScoringModel:
    """Fetch the card, then the ONNX file it names; the sha256 is checked against the card.

    ``expected_version`` (``MODEL_BUNDLE_VERSION``) is the version the function was deployed with: a card
    naming another one is refused before the model is fetched (see :func:`check_version`). None means no
    check: the Lambdas pass what their environment says, which is None only in local runs.

    Raises ModelBundleError naming the S3 object when a part is missing, unreadable or not the
    deployed version.
    """
    card_json = _read(s3_client, location, CARD_FILE)
    # The card names the ONNX file; parse it first to know which object to fetch.
    try:
        card = ModelCard.model_validate_json(card_json)
    except ValueError as error:  # pydantic.ValidationError is a ValueError
        raise ModelBundleError(
            f"model card {location.uri}{CARD_FILE} is not a valid card: {error}"
        ) from error
    if expected_version is not None:
        check_version(card, expected_version, location)
    onnx_bytes = _read(s3_client, location, card.onnx.file)
    # Checks the file's sha256 against the card's (which check_version tied to a derived version).
    return ScoringModel.from_bytes(onnx_bytes, card_json, source=location.uri, threads=threads)


def check_version(card: ModelCard, expected_version: str, location: S3Location) -> None:
    """Refuse a card that is not the deployed version, or whose model is not the one its version names.

    String comparisons only (cold start): the card must name ``expected_version``; and when that version
    is of training's form ``<card dataset>-<12 hex>``, the hex must begin the card's ONNX sha256, which
    the loader then checks against the file's bytes. Other version names embed no hash: only the name
    is compared.
    """
    if card.model_version != expected_version:
        raise ModelBundleError(
            f"model bundle {location.uri} holds model version {card.model_version!r}, but this function "
            f"was deployed with {expected_version!r} ({MODEL_BUNDLE_VERSION}): refusing to serve a model "
            "that was not deployed (was the folder overwritten?)"
        )
    named_prefix = hash_prefix_mismatch(expected_version, card.dataset, card.onnx.sha256)
    if named_prefix is not None:
        raise ModelBundleError(
            f"model bundle {location.uri}: version {expected_version!r} names a model whose sha256 starts "
            f"with {named_prefix}, but its card describes a model with sha256 "
            f"{card.onnx.sha256}: refusing to serve a model that was not deployed (was the folder "
            "overwritten?)"
        )


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
        if code in _DENIED_CODES:
            raise ModelBundleError(
                f"cannot read s3://{location.bucket}/{key}: access denied, which S3 also answers for an "
                "object that does not exist to a caller that may not list the bucket (is the folder "
                f"{location.uri} right, and does it hold {file}?): {error}"
            ) from error
        raise ModelBundleError(f"cannot read s3://{location.bucket}/{key}: {error}") from error
    except BotoCoreError as error:  # no credentials, endpoint unreachable, timeout, body cut short
        raise ModelBundleError(f"cannot read s3://{location.bucket}/{key}: {error}") from error
    return data
