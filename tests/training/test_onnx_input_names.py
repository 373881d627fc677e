"""Feature names as bank tables have them ("Loan Amount", "income.monthly", "1st_loan", "loan-amount",
"Größe" decomposed) train and serve under those names.

Found in this review (each test below failed before its fix): skl2onnx renames a graph input whose
name holds anything but letters, digits, "_" and "+" (and puts "_" before a digit first), so the spec
file refused such names and every data team had to rename its columns. Now the converted graph's
inputs are renamed back to the features' names, so the card, the API and the batch use the names the
table has; "a.b" and "a_b", which the converter would both call "a_b", are two inputs.
"""

from __future__ import annotations

import csv
import io
import json
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import pytest
from numpy.typing import NDArray

import training.pipeline as training_pipeline
from lambdas.api.app import create_api
from lambdas.api.wiring import make_handler
from lambdas.batch.events import ObjectCreated
from lambdas.batch.layout import manifest_key_for, output_keys
from lambdas.batch.service import BatchSettings, process_object
from lambdas.scoring.runtime import ScoringModel
from tests.api.conftest import api_context, settings_for, stored_event
from tests.batch.memory_store import MemoryObjectStore
from tests.training.helpers import small_fit
from training.candidates import CANDIDATES, Candidate
from training.datasets.catalog import load_dataset
from training.datasets.spec import (
    ONNX_CALIBRATION_NAMES,
    DatasetSpec,
    FeatureKind,
    FeatureSpec,
    spec_from_file,
)
from training.features import model_input_frame
from training.onnx_export import (
    check_parity,
    convert_pipeline,
    convert_with_text_inputs,
    onnx_feed,
    restore_input_names,
)
from training.pipeline import (
    FittedModel,
    TrainingConfig,
    coded_categories,
    feature_schema,
    train,
    write_bundle,
)

GROESSE_NFD = unicodedata.normalize("NFD", "Größe")
# Name -> kind; "a.b" and "a_b" are both "a_b" to the converter, and act on the risk in opposite ways.
FEATURES: dict[str, FeatureKind] = {
    "Loan Amount": "number",
    "income.monthly": "number",
    "1st_loan": "integer",
    "loan-amount": "number",
    GROESSE_NFD: "number",
    "home type": "category",
    "a.b": "number",
    "a_b": "number",
}
BUCKET = "names"


def _table(rows: int) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    table = pd.DataFrame(
        {
            "Loan Amount": rng.uniform(1_000, 30_000, rows).round(0),
            "income.monthly": rng.uniform(1_000, 9_000, rows).round(2),
            "1st_loan": rng.integers(0, 2, rows),
            "loan-amount": rng.normal(0, 1, rows).round(3),
            GROESSE_NFD: rng.uniform(150, 200, rows).round(1),
            "home type": rng.choice(["RENT", "OWN", "MORTGAGE"], rows),
            "a.b": rng.normal(0, 1, rows).round(3),
            "a_b": rng.normal(0, 1, rows).round(3),
        }
    )
    risk = (
        2.0 * table["a.b"]
        - 2.0 * table["a_b"]
        + table["Loan Amount"] / 15_000
        - table["income.monthly"] / 5_000
        + np.where(table["home type"] == "RENT", 1.0, 0.0)
    )
    table["default"] = (rng.uniform(size=rows) < 1 / (1 + np.exp(-risk))).astype(int)
    return table


def _spec(names: list[str]) -> DatasetSpec:
    features = tuple(FeatureSpec(name, FEATURES[name]) for name in names)
    return DatasetSpec(name="names", description="", target="default", positive_class="", features=features)


def _write_spec(folder: Path, table: pd.DataFrame) -> Path:
    path = folder / "spec.json"
    spec = {"name": "names", "target": "default", "features": {name: {} for name in FEATURES}}
    path.write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
    return path


# ---- the spec file -------------------------------------------------------------------------------


def test_given_names_the_converter_would_rewrite_when_the_spec_is_read_then_they_are_kept_as_written(
    tmp_path: Path,
) -> None:
    table = _table(40)
    spec = spec_from_file(_write_spec(tmp_path, table), table)
    assert spec.feature_names == list(FEATURES)
    # The decomposed form stays decomposed: it is the column's name in the table
    assert GROESSE_NFD in spec.feature_names


@pytest.mark.parametrize(
    ("name", "says"),
    [
        (" income", "leading or trailing spaces"),
        ("income\t", "leading or trailing spaces"),
        ("", "non-blank"),
        ("label", "model output"),
        ("probabilities", "model output"),
    ],
)
def test_given_a_name_no_graph_or_scored_file_can_hold_when_the_spec_is_read_then_it_is_refused(
    tmp_path: Path, name: str, says: str
) -> None:
    table = pd.DataFrame({name: [1.0, 2.0], "default": [0, 1]})
    path = tmp_path / "spec.json"
    path.write_text(json.dumps({"name": "t", "target": "default"}), encoding="utf-8")
    with pytest.raises(ValueError, match="feature") as error:
        spec_from_file(path, table)
    assert f"feature {name!r}" in str(error.value)
    assert says in str(error.value)


@pytest.mark.parametrize("name", ["cal_one", "cal_p", "uncalibrated_probabilities"])
def test_given_a_name_the_calibration_gives_a_value_when_the_spec_is_read_then_it_is_refused(
    tmp_path: Path, name: str
) -> None:
    # Before: read, fitted, then every calibrated candidate failed conversion ("used as output names
    # multiple times", "Shape of initializer cal_one does not match") and was dropped
    table = pd.DataFrame({name: [1.0, 2.0], "default": [0, 1]})
    path = tmp_path / "spec.json"
    path.write_text(json.dumps({"name": "t", "target": "default"}), encoding="utf-8")
    with pytest.raises(ValueError, match="feature") as error:
        spec_from_file(path, table)
    assert f"feature {name!r} is a name the model's graph uses for its calibration" in str(error.value)


def test_given_the_calibrated_graph_then_the_names_its_calibration_adds_are_the_refused_ones() -> None:
    spec = _spec(["a_b"])
    table = _table(200)
    x = model_input_frame(spec, table)
    (logistic,) = [c for c in CANDIDATES if c.name == "logistic_regression"]
    pipeline = small_fit(logistic, spec, x, table["default"].to_numpy())

    def value_names(model: onnx.ModelProto) -> set[str]:
        graph = model.graph
        return {n for node in graph.node for n in [*node.input, *node.output]} | {
            t.name for t in graph.initializer
        }

    plain = value_names(convert_with_text_inputs(pipeline, spec, None))
    calibrated = value_names(convert_with_text_inputs(pipeline, spec, (1.0, 0.0)))
    assert calibrated - plain == ONNX_CALIBRATION_NAMES


# ---- the converted graph -------------------------------------------------------------------------


@pytest.mark.parametrize("candidate", CANDIDATES, ids=lambda c: c.name)
def test_given_each_candidate_with_such_names_when_converted_then_its_inputs_are_the_names_and_it_agrees(
    candidate: Candidate,
) -> None:
    spec = _spec(list(FEATURES))
    table = _table(400)
    x = model_input_frame(spec, table)
    pipeline = small_fit(candidate, spec, x, table["default"].to_numpy())
    categories = coded_categories(feature_schema(spec, x))
    for calibration in (None, (0.9, -0.1)):
        model = convert_pipeline(pipeline, spec, calibration, categories)
        # Then the graph is valid, loads, takes one input per feature under its name ...
        onnx.checker.check_model(model, full_check=True)
        model_bytes = model.SerializeToString()
        session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
        assert [i.name for i in session.get_inputs()] == list(FEATURES)
        # ... and scores as the sklearn pipeline does, each value reaching its own feature
        expected = pipeline.predict_proba(x)[:, 1]
        if calibration is not None:
            logit = np.log(np.clip(expected, 1e-15, 1 - 1e-15) / (1 - np.clip(expected, 1e-15, 1 - 1e-15)))
            expected = 1 / (1 + np.exp(-(calibration[0] * logit + calibration[1])))
        parity = check_parity(model_bytes, onnx_feed(spec, x, categories), expected)
        assert parity.passed, parity


@pytest.mark.parametrize("names", [["a.b", "a_b"], ["a_b", "a.b"]], ids=["dot_first", "underscore_first"])
def test_given_two_names_the_converter_calls_alike_when_converted_then_each_value_feeds_its_own_feature(
    names: list[str],
) -> None:
    spec = _spec(names)
    table = _table(400)
    x = model_input_frame(spec, table)
    (logistic,) = [c for c in CANDIDATES if c.name == "logistic_regression"]
    pipeline = small_fit(logistic, spec, x, table["default"].to_numpy())
    model_bytes = convert_pipeline(pipeline, spec, None, {}).SerializeToString()
    expected = pipeline.predict_proba(x)[:, 1]
    # Given the two features act in opposite ways (a swap would move the scores far beyond parity)
    swapped = x.rename(columns={"a.b": "a_b", "a_b": "a.b"})[names]
    assert np.max(np.abs(pipeline.predict_proba(swapped)[:, 1] - expected)) > 0.1
    # Then the graph scores as the pipeline, so each input is the feature of its name
    assert check_parity(model_bytes, onnx_feed(spec, x, {}), expected).passed


def test_given_a_graph_whose_inputs_are_the_names_when_restored_then_its_bytes_are_unchanged() -> None:
    # Valid names: the converter keeps them, and the graph must stay byte for byte what it was
    spec = _spec(["a_b", "home type"])
    table = _table(200)
    x = model_input_frame(spec, table)
    (logistic,) = [c for c in CANDIDATES if c.name == "logistic_regression"]
    pipeline = small_fit(logistic, spec, x, table["default"].to_numpy())
    model = convert_with_text_inputs(pipeline, spec, None)
    before = model.SerializeToString()
    assert restore_input_names(model, ["a_b", "home type"]).SerializeToString() == before
    # and names that are not the graph's inputs in order are refused, not applied to other inputs
    with pytest.raises(ValueError, match="not the features"):
        restore_input_names(model, ["home type", "a_b"])


# ---- trained, then served by the API and the batch -----------------------------------------------


@dataclass(frozen=True)
class Trained:
    bundle: Path
    fitted: FittedModel
    spec: DatasetSpec
    rows: pd.DataFrame


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    folder = tmp_path_factory.mktemp("names")
    table = _table(300)
    table.to_parquet(folder / "table.parquet")
    dataset = load_dataset("names", f"files:{folder / 'table.parquet'}", _write_spec(folder, table))
    fitted: list[FittedModel] = []
    original = training_pipeline._fit_final_single_threaded

    def keep(*args: Any) -> FittedModel:
        model = original(*args)
        fitted.append(model)
        return model

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(training_pipeline, "_fit_final_single_threaded", keep)
        config = TrainingConfig(candidates=["logistic_regression"], n_jobs=1, bootstrap_resamples=100)
        outcome = train(dataset, config)
    (model,) = fitted
    bundle = write_bundle(outcome, folder / "bundle")
    return Trained(bundle, model, dataset.spec, table.head(5).drop(columns="default"))


def _sklearn_probabilities(trained: Trained) -> NDArray[np.float64]:
    return trained.fitted.predict(model_input_frame(trained.spec, trained.rows))


def test_given_such_names_when_trained_then_the_card_names_each_input_by_its_feature(
    trained: Trained,
) -> None:
    card = ScoringModel.load_directory(trained.bundle).card
    assert [f.name for f in card.features] == list(FEATURES)
    assert [f.onnx_input for f in card.features] == list(FEATURES)
    assert card.parity.max_abs_difference <= 1e-5


def test_given_such_names_when_scored_by_the_api_then_it_gives_the_pipelines_probabilities(
    trained: Trained,
) -> None:
    model = ScoringModel.load_directory(trained.bundle)
    handler = make_handler(create_api(model, settings_for(trained.bundle)))
    records: list[dict[str, Any]] = json.loads(trained.rows.to_json(orient="records", force_ascii=False))
    event = stored_event("score_batch.json")
    event["body"] = json.dumps(
        {"applications": [{"application_id": f"a{i}", "features": r} for i, r in enumerate(records)]},
        ensure_ascii=False,
    )
    result = handler(event, api_context())  # type: ignore[arg-type]
    body = json.loads(result["body"])
    assert result["statusCode"] == 200, body
    got = [r["probability_of_default"] for r in body["results"]]
    assert got == pytest.approx(_sklearn_probabilities(trained).tolist(), abs=1e-9)
    # Reasons name the features as the card does
    assert {reason["feature"] for r in body["results"] for reason in r["reasons"]} <= set(FEATURES)


def test_given_such_names_when_a_csv_is_scored_by_the_batch_then_it_gives_the_pipelines_probabilities(
    trained: Trained,
) -> None:
    model = ScoringModel.load_directory(trained.bundle)
    text = io.StringIO()
    trained.rows.to_csv(text, index=False)
    body = text.getvalue().encode()
    store = MemoryObjectStore()
    key = "incoming/names.csv"
    etag = store.put_bytes(BUCKET, key, body)
    process_object(
        store, model, ObjectCreated(BUCKET, key, etag, None, len(body), "ObjectCreated:Put"), BatchSettings()
    )
    manifest_object = store.read_bytes(BUCKET, manifest_key_for(key))
    scored_object = store.read_bytes(BUCKET, output_keys(key).scored)
    assert manifest_object is not None
    assert scored_object is not None
    manifest = json.loads(manifest_object.body)
    assert manifest["counts"]["rows_scored"] == len(trained.rows), manifest
    scored = list(csv.DictReader(io.StringIO(scored_object.body.decode())))
    # Then every column comes back under its own name, and the scores are the pipeline's
    assert list(scored[0])[: len(FEATURES)] == list(FEATURES)
    got = [float(row["probability_of_default"]) for row in scored]
    assert got == pytest.approx(_sklearn_probabilities(trained).tolist(), abs=1e-9)
    assert set(manifest["drift"]["feature_psi"]) == set(FEATURES)
