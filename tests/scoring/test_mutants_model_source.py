"""Loading a bundle from S3: behaviours no test noticed when changed (a hand-made mutation run of
lambdas/model_source.py). S3 is an in-memory stand-in client: what matters here is which objects are
read and what each S3 error becomes."""

from __future__ import annotations

import hashlib
import io
from typing import Any

import pytest
from botocore.exceptions import ClientError

from lambdas.model_source import (
    BundleVersionError,
    load_model_from_s3,
    parse_expected_version,
    parse_s3_uri,
)
from lambdas.scoring.card import ModelCard
from lambdas.scoring.runtime import ModelBundleError
from tests.scoring.bundles import MODEL_VERSION, logistic_card, logistic_onnx_bytes

FOLDER = "s3://models/credit/v1/"
ONNX = logistic_onnx_bytes()
TAMPERED = ONNX + b"\x00"


class _Bucket:
    """``get_object`` of one bucket's objects; a missing key answers ``missing_code``."""

    def __init__(self, objects: dict[str, bytes], missing_code: str = "NoSuchKey") -> None:
        self.objects, self.missing_code = objects, missing_code
        self.read: list[str] = []

    def get_object(self, *, Bucket: str, Key: str) -> dict[str, Any]:  # noqa: N803 (boto3's names)
        self.read.append(Key)
        if Key not in self.objects:
            answer = {"Error": {"Code": self.missing_code, "Message": "stand-in"}}
            raise ClientError(answer, "GetObject")  # type: ignore[arg-type]
        return {"Body": io.BytesIO(self.objects[Key])}


def _bundle(card: ModelCard, onnx_bytes: bytes = ONNX) -> _Bucket:
    return _Bucket(
        {
            "credit/v1/model_card.json": card.model_dump_json().encode(),
            f"credit/v1/{card.onnx.file}": onnx_bytes,
        }
    )


def test_given_a_card_naming_its_onnx_file_when_loading_then_that_object_is_read() -> None:
    card = logistic_card(ONNX)
    card = card.model_copy(update={"onnx": card.onnx.model_copy(update={"file": "credit.onnx"})})
    s3 = _bundle(card)
    model = load_model_from_s3(s3, parse_s3_uri(FOLDER), threads=1)
    assert model.model_version == MODEL_VERSION
    assert s3.read == ["credit/v1/model_card.json", "credit/v1/credit.onnx"]


def test_given_a_card_of_another_version_when_loading_then_the_model_is_never_fetched() -> None:
    s3 = _bundle(logistic_card(ONNX))
    with pytest.raises(ModelBundleError, match="was deployed with 'other-version'"):
        load_model_from_s3(s3, parse_s3_uri(FOLDER), threads=1, expected_version="other-version")
    assert s3.read == ["credit/v1/model_card.json"]


def test_given_a_model_whose_bytes_differ_from_the_card_hash_when_loading_then_it_is_refused() -> None:
    s3 = _bundle(logistic_card(ONNX), onnx_bytes=TAMPERED)
    with pytest.raises(ModelBundleError, match=f"sha256 is {hashlib.sha256(TAMPERED).hexdigest()}"):
        load_model_from_s3(s3, parse_s3_uri(FOLDER), threads=1)


def test_given_an_invalid_card_when_loading_then_a_bundle_error_names_the_object() -> None:
    s3 = _Bucket({"credit/v1/model_card.json": b'{"model_version": "v1"}'})
    with pytest.raises(
        ModelBundleError, match=r"model card s3://models/credit/v1/model_card\.json is not a valid"
    ):
        load_model_from_s3(s3, parse_s3_uri(FOLDER), threads=1)


def test_given_threads_when_loading_then_the_session_uses_them() -> None:
    model = load_model_from_s3(_bundle(logistic_card(ONNX)), parse_s3_uri(FOLDER), threads=3)
    options = model._session.get_session_options()
    assert options.intra_op_num_threads == 3


@pytest.mark.parametrize("missing_code", ["NoSuchKey", "404"])
def test_given_a_folder_without_the_card_when_loading_then_the_error_says_which_file_is_missing(
    missing_code: str,
) -> None:
    with pytest.raises(
        ModelBundleError, match=r"^model bundle s3://models/credit/v1/ has no model_card\.json$"
    ):
        load_model_from_s3(_Bucket({}, missing_code), parse_s3_uri(FOLDER), threads=1)


def test_given_access_denied_when_loading_then_the_error_says_the_object_may_not_exist() -> None:
    # S3 answers 403 for a missing key to a caller that may not list the bucket: a mistyped folder
    with pytest.raises(ModelBundleError) as refused:
        load_model_from_s3(_Bucket({}, "AccessDenied"), parse_s3_uri(FOLDER), threads=1)
    message = str(refused.value)
    assert message.startswith("cannot read s3://models/credit/v1/model_card.json: access denied")
    assert "an object that does not exist" in message


def test_given_another_s3_error_when_loading_then_the_error_keeps_its_code() -> None:
    with pytest.raises(
        ModelBundleError, match=r"cannot read s3://models/credit/v1/model_card\.json: .*SlowDown"
    ):
        load_model_from_s3(_Bucket({}, "SlowDown"), parse_s3_uri(FOLDER), threads=1)


def test_a_pinned_version_is_read_without_surrounding_blanks() -> None:
    assert parse_expected_version(" v1\n", uri_set=True) == "v1"
    assert parse_expected_version("  ", uri_set=False) is None


@pytest.mark.parametrize("version", ["..", ".hidden", "-v1"])
def test_a_pinned_version_that_is_not_a_folder_name_is_refused(version: str) -> None:
    with pytest.raises(BundleVersionError, match="must be a registered version name"):
        parse_expected_version(version, uri_set=True)
