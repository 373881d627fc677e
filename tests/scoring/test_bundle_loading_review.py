"""Loading a model bundle: every inconsistent card, graph or S3 location fails the load with a message
naming what is wrong, instead of loading and then deciding wrongly (or failing every request)."""

from __future__ import annotations

import hashlib
import json
import math
import socket
import uuid
from collections.abc import Callable
from typing import Any

import boto3
import onnx
import pytest
from botocore.config import Config

from lambdas.model_source import BundleUriError, S3Location, load_model_from_s3, parse_s3_uri
from lambdas.scoring.runtime import ModelBundleError, ScoringModel
from tests.scoring import bundles

SOURCE = "s3://models/credit/v1/"
Card = dict[str, Any]


def _card(category_input: str = "string") -> Card:
    onnx_bytes = bundles.logistic_onnx_bytes(category_input)
    card: Card = bundles.logistic_card(onnx_bytes, category_input=category_input).model_dump(mode="json")
    return card


def _feature(card: Card, name: str) -> dict[str, Any]:
    features: list[dict[str, Any]] = card["features"]
    (feature,) = [f for f in features if f["name"] == name]
    return feature


def _load(card: Card, onnx_bytes: bytes | None = None, category_input: str = "string") -> ScoringModel:
    # json.dumps writes a float NaN as the token NaN, which JSON parsers (pydantic's too) accept.
    model = onnx_bytes if onnx_bytes is not None else bundles.logistic_onnx_bytes(category_input)
    return ScoringModel.from_bytes(model, json.dumps(card).encode(), source=SOURCE)


def _with_extra_feature(card: Card, **change: object) -> None:
    """A copy of age named ``extra``, with its baseline and reference, changed as given."""
    card["features"].append({**_feature(card, "age"), "name": "extra", "onnx_input": "extra", **change})
    card["reference"]["reason_baseline"]["extra"] = 30.0
    card["reference"]["features"]["extra"] = card["reference"]["features"]["age"]
    card["onnx"]["input_names"].append(change.get("onnx_input", "extra"))


# ---- the card ---------------------------------------------------------------------------------

CARD_DEFECTS: dict[str, tuple[Callable[[Card], object], str]] = {
    "feature without a drift reference": (
        lambda c: c["reference"]["features"].pop("age"),
        r"reference\.features must hold one reference per feature: missing \['age'\], not features \[\]",
    ),
    "drift reference for no feature": (
        lambda c: c["reference"]["features"].update(gone=c["reference"]["features"]["age"]),
        r"missing \[\], not features \['gone'\]",
    ),
    "drift reference of the wrong kind": (
        lambda c: c["reference"]["features"].update(
            age={"kind": "categorical", "proportions": {"30": 1.0}, "mode": "30", "null_rate": 0.0}
        ),
        r"reference\.features of \['age'\] have the wrong kind",
    ),
    "unknown schema version": (
        lambda c: c.update(schema_version="2.0"),
        r"schema_version '2\.0' is not supported",
    ),
    "threshold above 1": (lambda c: c["decision_policy"].update(threshold=1.5), "threshold"),
    "threshold below 0": (lambda c: c["decision_policy"].update(threshold=-0.1), "threshold"),
    "NaN threshold": (lambda c: c["decision_policy"].update(threshold=float("nan")), "threshold"),
    "NaN minimum": (lambda c: _feature(c, "age").update(minimum=float("nan")), "minimum"),
    "infinite bin edge": (
        lambda c: c["reference"]["features"]["age"].update(bin_edges=[float("inf")]),
        "bin_edges",
    ),
    "minimum above maximum": (
        lambda c: _feature(c, "age").update(minimum=200.0),
        "age: minimum 200.0 is above maximum 100.0",
    ),
    "duplicate text categories": (
        lambda c: _feature(c, "home").update(categories=["RENT", "OWN", "RENT", "MORTGAGE"]),
        "home: categories must be distinct and non-empty",
    ),
    "empty text category": (
        lambda c: _feature(c, "home").update(categories=["RENT", "OWN", "MORTGAGE", ""]),
        "home: categories must be distinct and non-empty",
    ),
    "empty reason": (lambda c: _feature(c, "age").update(reason=""), "reason"),
    "blank reason": (lambda c: _feature(c, "age").update(reason="   "), "reason"),
    "feature listed twice": (
        lambda c: _with_extra_feature(c, name="age", onnx_input="extra"),
        r"each feature name must appear once in features, repeated: \['age'\]",
    ),
    "two features on one input": (
        lambda c: _with_extra_feature(c, onnx_input="age"),
        r"each onnx_input must appear once in features, repeated: \['age'\]",
    ),
    "input_names disagree with the features": (
        lambda c: c["onnx"].update(input_names=["age", "income"]),
        "onnx.input_names",
    ),
    "no decline label": (
        lambda c: c["decision_policy"].update(decision_labels={"approve": "ok"}),
        "decision_labels must map approve and decline",
    ),
    "one label for both decisions": (
        lambda c: c["decision_policy"].update(decision_labels={"approve": "x", "decline": "x"}),
        "decision_labels must map approve and decline",
    ),
    "negative class index": (lambda c: c["onnx"].update(positive_class_index=-1), "positive_class_index"),
    "model file outside the bundle": (
        lambda c: c["onnx"].update(file="../other/model.onnx"),
        "onnx.file must be a file name",
    ),
    "model file at an absolute path": (
        lambda c: c["onnx"].update(file="/etc/model.onnx"),
        "onnx.file must be a file name",
    ),
    "hash with an algorithm prefix": (
        lambda c: c["onnx"].update(sha256="sha256:" + c["onnx"]["sha256"]),
        "onnx.sha256 must be 64 hexadecimal digits",
    ),
}


@pytest.mark.parametrize("defect", list(CARD_DEFECTS))
def test_given_an_inconsistent_card_when_loading_then_the_card_is_refused_naming_the_field(
    defect: str,
) -> None:
    change, message = CARD_DEFECTS[defect]
    card = _card()
    change(card)

    with pytest.raises(ModelBundleError, match=rf"model card {SOURCE} is not a valid card:(.|\n)*{message}"):
        _load(card)


def test_given_a_card_hash_in_upper_case_when_loading_then_it_is_the_same_hash() -> None:
    card = _card()
    card["onnx"]["sha256"] = card["onnx"]["sha256"].upper()

    model = _load(card)

    assert model.card.onnx.sha256 == hashlib.sha256(bundles.logistic_onnx_bytes()).hexdigest()


# ---- reason baselines -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("feature", "value", "message"),
    [
        ("age", 150.0, "reason baseline of age is 150, but the feature must be between 18 and 100"),
        (
            "loan_ratio",
            -0.5,
            "reason baseline of loan_ratio is -0.5, but the feature must be between 0 and 1",
        ),
        ("age", None, "reason baseline of age is null, but the feature is not nullable"),
        ("home", None, "reason baseline of home is null, but the feature is not nullable"),
        ("home", "CASTLE", "reason baseline of home is not one of its categories: 'CASTLE'"),
    ],
)
def test_given_a_reason_baseline_the_feature_cannot_take_when_loading_then_it_is_refused(
    feature: str, value: object, message: str
) -> None:
    # The text-category model (the int64 one already refused an unknown category).
    card = _card("string")
    card["reference"]["reason_baseline"][feature] = value

    with pytest.raises(ModelBundleError, match=message):
        _load(card)


def test_given_a_null_baseline_for_a_nullable_feature_when_loading_then_it_loads() -> None:
    card = _card()
    card["reference"]["reason_baseline"]["income"] = None  # income is nullable

    assert math.isnan(float(_load(card).baseline("income")))


# ---- the ONNX graph against the card ----------------------------------------------------------


def _reshaped_input(name: str, dims: list[int | None]) -> bytes:
    """The logistic model with input ``name`` declared with ``dims`` (None: symbolic)."""
    model = onnx.load_from_string(bundles.logistic_onnx_bytes())
    (graph_input,) = [i for i in model.graph.input if i.name == name]
    shape = graph_input.type.tensor_type.shape
    del shape.dim[:]
    for size in dims:
        dim = shape.dim.add()
        if size is not None:
            dim.dim_value = size
    serialized: bytes = model.SerializeToString()
    return serialized


def _rehashed(card: Card, onnx_bytes: bytes) -> Card:
    card["onnx"]["sha256"] = hashlib.sha256(onnx_bytes).hexdigest()
    return card


def test_given_a_card_feature_the_graph_lacks_when_loading_then_the_message_names_it() -> None:
    card = _card()
    _with_extra_feature(card)

    with pytest.raises(
        ModelBundleError,
        match=rf"ONNX graph of model version {bundles.MODEL_VERSION} \({SOURCE}\) does not match its card: "
        r"card features it has no input for: \['extra'\]$",
    ):
        _load(card)


def test_given_inputs_the_card_does_not_list_or_of_another_type_when_loading_then_each_is_named() -> None:
    card = _card()
    card["features"] = [f for f in card["features"] if f["name"] != "age"]
    card["onnx"]["input_names"].remove("age")
    del card["reference"]["features"]["age"]
    _feature(card, "loan_ratio")["onnx_type"] = "string"
    _feature(card, "loan_ratio")["type"] = "category"
    # A consistent card (a category feature has a categorical drift reference): only the graph disagrees
    card["reference"]["features"]["loan_ratio"] = {
        "kind": "categorical",
        "proportions": {"0.15": 1.0},
        "mode": "0.15",
        "null_rate": 0.0,
    }

    with pytest.raises(ModelBundleError) as refused:
        _load(card)

    assert str(refused.value).endswith(
        "does not match its card: inputs the card does not list: ['age']; "
        "input loan_ratio is tensor(double), the card says tensor(string)"
    )


def test_given_an_input_with_a_fixed_batch_size_when_loading_then_the_shape_is_refused() -> None:
    # Loads in onnxruntime, but any request of two rows (every reason computation) would fail.
    onnx_bytes = _reshaped_input("loan_ratio", [1, 1])

    with pytest.raises(
        ModelBundleError, match=r"input loan_ratio has shape \[1, 1\], the runtime feeds \[rows, 1\]"
    ):
        _load(_rehashed(_card(), onnx_bytes), onnx_bytes)


def test_given_inputs_with_symbolic_dimensions_when_loading_then_they_are_accepted() -> None:
    onnx_bytes = _reshaped_input("loan_ratio", [None, None])

    model = _load(_rehashed(_card(), onnx_bytes), onnx_bytes)

    assert model.score(model.prepare_records([bundles.good_application()]).feed).probability.shape == (1,)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"probability_output": "label"},
            r"output label is tensor\(int64\) of shape \[None\], not a \[rows, classes\] tensor",
        ),
        (
            {"positive_class_index": 2},
            "positive_class_index 2 is outside output probabilities, which has 2 columns",
        ),
    ],
)
def test_given_a_probability_output_the_runtime_cannot_read_when_loading_then_it_is_refused(
    change: dict[str, object], message: str
) -> None:
    card = _card()
    card["onnx"].update(change)

    with pytest.raises(ModelBundleError, match=message):
        _load(card)


@pytest.mark.parametrize("onnx_bytes", [b"not an onnx model", bundles.logistic_onnx_bytes()[:1000]])
def test_given_model_bytes_that_are_not_onnx_but_match_the_card_hash_when_loading_then_the_file_is_named(
    onnx_bytes: bytes,
) -> None:
    with pytest.raises(
        ModelBundleError, match=rf"^model file model\.onnx \({SOURCE}\) is not a model onnxruntime can load: "
    ):
        _load(_rehashed(_card(), onnx_bytes), onnx_bytes)


# ---- MODEL_BUNDLE_URI and S3 ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("s3://my models/credit/", "has an invalid bucket name 'my models'"),
        ("s3://models/credit/v1/model_card.json", "must name the bundle's folder, not one of its files"),
        ("s3://models/credit/v1/model.onnx", "must name the bundle's folder, not one of its files"),
    ],
)
def test_given_a_malformed_bundle_uri_when_parsed_then_the_variable_and_problem_are_named(
    uri: str, message: str
) -> None:
    with pytest.raises(BundleUriError, match=f"MODEL_BUNDLE_URI {message}"):
        parse_s3_uri(uri)


@pytest.mark.parametrize(
    ("uri", "location"),
    [
        ("s3://models", S3Location("models", "")),
        ("s3://models/credit/v1/", S3Location("models", "credit/v1/")),
    ],
)
def test_given_a_bundle_uri_with_or_without_trailing_slash_when_parsed_then_it_names_the_folder(
    uri: str, location: S3Location
) -> None:
    assert parse_s3_uri(uri) == location


def _client(endpoint: str, *, timeout_seconds: int = 2) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="eu-west-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(
            retries={"total_max_attempts": 1}, connect_timeout=timeout_seconds, read_timeout=timeout_seconds
        ),
    )


def test_given_an_unreachable_s3_endpoint_when_loading_then_the_error_names_the_object() -> None:
    with socket.socket() as probe:  # a port nothing listens on: the connection is refused at once
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    with pytest.raises(
        ModelBundleError, match=r"^cannot read s3://models/credit/v1/model_card\.json: "
    ) as refused:
        load_model_from_s3(_client(f"http://127.0.0.1:{port}"), parse_s3_uri(SOURCE), threads=1)

    assert "testing" not in str(refused.value)  # no credentials in the message


def test_given_a_bucket_that_does_not_exist_when_loading_then_the_bucket_is_named(s3_endpoint: str) -> None:
    # A name no other test creates: an in-process moto server shares its buckets with every other moto
    # use in this worker process.
    bucket = f"no-such-bucket-{uuid.uuid4().hex[:12]}"
    source = f"s3://{bucket}/credit/v1/"
    # A generous timeout: a new moto server's first request is slow (0.35 s against 5 ms for the next,
    # measured on an idle machine); on a loaded one the 2 s read timeout became a flaky failure.
    client = _client(s3_endpoint, timeout_seconds=60)
    with pytest.raises(ModelBundleError, match=rf"^model bundle {source}: bucket {bucket} does not exist$"):
        load_model_from_s3(client, parse_s3_uri(source), threads=1)
