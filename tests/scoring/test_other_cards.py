"""A model with other features is served with no code change: bundles trained by the training command
line on other tables (the Berka banking features; hand-made tables with unusual names and values; one
feature; sixty features), each served through the API handler and the batch service, and what cannot
be served refused at training or at load time with an error naming the feature.

Found in this review (each test below failed before its fix):
- a feature name the ONNX converter rewrites ("income.monthly", "years employed", "1st_loan") or one of
  the graph's outputs ("label") trained every candidate, then failed them all with "no candidate passed
  ONNX conversion"; an output's name is now refused before fitting, naming the feature, and the others
  train and serve as written (the graph's inputs are renamed back: tests/training/test_onnx_input_names.py);
- a feature named like a batch output column (probability_of_default, ...) was overwritten in every
  scored file by the score; now refused in the spec file and in the card;
- a feature name with surrounding spaces (" income") could never be found in a batch file (headers are
  matched stripped); now refused in the card;
- a True/False column with missing values was inferred as the categories "False" and "True": clients
  had to send the text "True"; now it is a (nullable) boolean;
- "São Paulo" composed (NFC) and decomposed (NFD) in one column became two categories that look the
  same in the card, the OpenAPI enum and the errors; now the spec file is refused.
"""

from __future__ import annotations

import csv
import io
import json
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from skl2onnx.common._topology import Topology

from lambdas.api.app import create_api
from lambdas.api.wiring import LambdaHandler, make_handler
from lambdas.batch.events import ObjectCreated
from lambdas.batch.formats import OUTPUT_COLUMNS
from lambdas.batch.layout import manifest_key_for, output_keys
from lambdas.batch.service import BatchSettings, process_object
from lambdas.scoring.card import BATCH_OUTPUT_COLUMNS, ModelCard
from lambdas.scoring.runtime import ModelBundleError, ScoringModel
from tests.api.conftest import api_context, settings_for, stored_event
from tests.batch.memory_store import MemoryObjectStore
from tests.scoring.bundles import write_logistic_bundle
from training.cli import main as training_main
from training.datasets.catalog import load_dataset
from training.datasets.spec import ONNX_OUTPUT_NAMES, DatasetSpec, spec_from_file
from training.onnx_export import LABEL_OUTPUT, PROBABILITY_OUTPUT

QUICK = ["--candidates", "logistic_regression", "--jobs", "1"]
BUCKET = "other-cards"
NFC_CITY = unicodedata.normalize("NFC", "São Paulo")
NFD_CITY = unicodedata.normalize("NFD", "São Paulo")
# Texts other code reads as missing, case variants and spaces: each its own category here.
CITIES = ("New York", NFC_CITY, "null", "nan", "NA", "None", "a", "A", " padded ")


def _train(folder: Path, table: pd.DataFrame, spec: dict[str, Any]) -> Path:
    """``table`` (written as Parquet, which keeps every text as it is) trained by the command line."""
    folder.mkdir(parents=True, exist_ok=True)
    table.to_parquet(folder / "table.parquet")
    (folder / "spec.json").write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
    source = ["--source", f"files:{folder / 'table.parquet'}", "--spec-file", str(folder / "spec.json")]
    assert training_main(["train", *source, *QUICK, "--out", str(folder / "bundle")]) == 0
    return folder / "bundle"


@dataclass(frozen=True)
class Served:
    """One bundle, loaded as both Lambdas load it, with the API handler and a batch bucket in memory."""

    model: ScoringModel
    handler: LambdaHandler

    @property
    def card(self) -> ModelCard:
        return self.model.card

    def post(self, event_name: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        event = stored_event(event_name)
        event["body"] = json.dumps(body, ensure_ascii=False)
        result = self.handler(event, api_context())  # type: ignore[arg-type]
        return result["statusCode"], json.loads(result["body"])

    def score(self, features: dict[str, Any]) -> dict[str, Any]:
        status, body = self.post("score.json", {"application_id": "app-1", "features": features})
        assert status == 200, body
        return body

    def batch(self, key: str, body: bytes) -> tuple[dict[str, Any], bytes, bytes]:
        """The file processed by the batch service: its manifest, scored and rejected files."""
        store = MemoryObjectStore()
        etag = store.put_bytes(BUCKET, key, body)
        event = ObjectCreated(BUCKET, key, etag, None, len(body), "ObjectCreated:Put")
        process_object(store, self.model, event, BatchSettings())
        keys = output_keys(key)

        def read(name: str) -> bytes:
            stored = store.read_bytes(BUCKET, name)
            assert stored is not None, name
            return stored.body

        return json.loads(read(manifest_key_for(key))), read(keys.scored), read(keys.rejected)


def _served(bundle: Path, max_batch_applications: int = 5) -> Served:
    model = ScoringModel.load_directory(bundle)
    api = create_api(model, settings_for(bundle, max_batch_applications=max_batch_applications))
    return Served(model, make_handler(api))


def _csv(rows: list[dict[str, Any]]) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(
        {k: "" if v is None else str(v).lower() if isinstance(v, bool) else v for k, v in r.items()}
        for r in rows
    )
    return out.getvalue().encode()


def _csv_rows(data: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(data.decode())))


def _onnx_probability(card: ModelCard, bundle: Path, features: dict[str, Any]) -> float:
    """The graph run on its own, fed as the card describes (category codes: positions in the card's list)."""
    feed: dict[str, np.ndarray] = {}
    for feature in card.features:
        value = features[feature.name]
        if feature.type == "category":
            assert feature.categories is not None
            code = -1 if value is None else feature.categories.index(value)
            feed[feature.onnx_input] = np.array([[code]], dtype=np.int64)
        else:
            feed[feature.onnx_input] = np.array(
                [[np.nan if value is None else float(value)]], dtype=np.float64
            )
    session = ort.InferenceSession(str(bundle / card.onnx.file), providers=["CPUExecutionProvider"])
    (probabilities,) = session.run([card.onnx.probability_output], feed)
    return float(probabilities[0, card.onnx.positive_class_index])


# ---- unusual names and values ---------------------------------------------------------------------


def _unusual_table(rows: int = 400) -> pd.DataFrame:
    rng = np.random.default_rng(7)
    city = rng.choice(np.array(CITIES, dtype=object), rows)
    income = rng.uniform(1_000, 9_000, rows).round(2)
    has_car = rng.choice(np.array([True, False, None], dtype=object), rows, p=[0.45, 0.45, 0.1])
    risk = 1.0 - income / 3_000 + np.where(city == "null", 1.5, 0.0) + np.where(city == "A", -1.0, 0.0)
    return pd.DataFrame(
        {
            "Größe": rng.uniform(150, 200, rows).round(1),  # a non-ASCII name
            "income_monthly": income,
            "years_employed": rng.integers(0, 40, rows),  # integers
            "flag01": rng.integers(0, 2, rows),  # 0/1 integers: inferred as integer
            "is_owner": rng.choice(["yes", "no"], rows),  # declared boolean, given as text
            "has_car": has_car,  # True/False with missing values: inferred
            "city": city,
            "application_id": rng.choice(["x", "y"], rows),  # the API's own keys, as features
            "features": rng.uniform(0, 1, rows),
            "Age": rng.integers(18, 80, rows),  # names differing in case only
            "age": rng.integers(18, 80, rows),
            "default": (rng.uniform(size=rows) < 1 / (1 + np.exp(-risk))).astype(int),
        }
    )


UNUSUAL_SPEC: dict[str, Any] = {
    "name": "unusual",
    "target": "default",
    "features": {
        "Größe": {"unit": "cm"},
        "income_monthly": {"minimum": 0},
        "years_employed": {"type": "integer", "minimum": 0, "maximum": 60},
        "flag01": {},
        "is_owner": {"type": "boolean"},
        "has_car": {},
        "city": {"type": "category"},
        "application_id": {},
        "features": {},
        "Age": {},
        "age": {},
    },
}


@pytest.fixture(scope="module")
def unusual(tmp_path_factory: pytest.TempPathFactory) -> tuple[Served, Path]:
    bundle = _train(tmp_path_factory.mktemp("unusual"), _unusual_table(), UNUSUAL_SPEC)
    return _served(bundle), bundle


def _applicant(**changes: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "Größe": 170.5,
        "income_monthly": 1_500.0,
        "years_employed": 3,
        "flag01": 1,
        "is_owner": True,
        "has_car": False,
        "city": "null",
        "application_id": "y",
        "features": 0.25,
        "Age": 30,
        "age": 61,
    }
    return values | changes


def test_given_a_spec_of_unusual_features_when_trained_then_the_card_holds_them_as_the_table_has_them(
    unusual: tuple[Served, Path],
) -> None:
    served, _ = unusual
    features = {f.name: f for f in served.card.features}
    # Then every feature keeps its name, and the graph's input is that name
    assert list(features) == list(UNUSUAL_SPEC["features"])
    assert all(f.onnx_input == f.name for f in features.values())
    assert {name: f.type for name, f in features.items()} == {
        "Größe": "number",
        "income_monthly": "number",
        "years_employed": "integer",
        "flag01": "integer",
        "is_owner": "boolean",
        "has_car": "boolean",  # was the category ["False", "True"]
        "city": "category",
        "application_id": "category",
        "features": "number",
        "Age": "integer",
        "age": "integer",
    }
    assert features["has_car"].nullable
    # and each text of the table is its own category, exactly as written
    assert features["city"].categories == sorted(CITIES)


@pytest.mark.parametrize("city", CITIES)
def test_given_each_category_when_scored_by_the_api_then_the_graph_gets_that_category(
    unusual: tuple[Served, Path], city: str
) -> None:
    served, bundle = unusual
    applicant = _applicant(city=city)
    body = served.score(applicant)
    # Then the API's probability is the graph's for that category's code (not another's, not missing)
    assert body["probability_of_default"] == pytest.approx(
        _onnx_probability(served.card, bundle, applicant), abs=1e-12
    )
    threshold = served.card.decision_policy.threshold
    assert body["decision"] == ("decline" if body["probability_of_default"] >= threshold else "approve")
    texts = {f.name: {f.reason, f.reason_high, f.reason_low} for f in served.card.features}
    assert all(reason["reason"] in texts[reason["feature"]] for reason in body["reasons"])


@pytest.mark.parametrize(
    ("changes", "field", "code"),
    [
        ({"city": "Sao Paulo"}, "features.city", "unknown_category"),
        ({"city": NFD_CITY}, "features.city", "unknown_category"),  # the card holds the NFC form only
        ({"city": None}, "features.city", "null_not_allowed"),
        ({"has_car": "True"}, "features.has_car", "wrong_type"),
        ({"flag01": True}, "features.flag01", "wrong_type"),
        ({"years_employed": 61}, "features.years_employed", "out_of_range"),
        ({"years_employed": 3.5}, "features.years_employed", "wrong_type"),
        ({"age": "61"}, "features.age", "wrong_type"),
        ({"application_id": "z"}, "features.application_id", "unknown_category"),
    ],
)
def test_given_a_wrong_value_of_an_unusual_feature_when_scored_then_400_names_the_feature(
    unusual: tuple[Served, Path], changes: dict[str, Any], field: str, code: str
) -> None:
    served, _ = unusual
    status, body = served.post("score.json", {"features": _applicant(**changes)})
    assert status == 400, body
    assert [(d["field"], d["code"]) for d in body["error"]["details"]] == [(field, code)]


def test_given_the_unusual_model_when_asked_then_its_schema_and_card_name_every_feature(
    unusual: tuple[Served, Path],
) -> None:
    served, _ = unusual
    # A missing non-ASCII feature is named as the card names it
    applicant = _applicant()
    del applicant["Größe"]
    status, body = served.post("score.json", {"features": applicant})
    assert status == 400
    assert [(d["field"], d["code"]) for d in body["error"]["details"]] == [("features.Größe", "missing")]
    # Nullable booleans take JSON true, false and null
    for has_car in (True, False, None):
        assert served.score(_applicant(has_car=has_car))["application_id"] == "app-1"
    status, card = served.post("model.json", {})
    assert status == 200
    assert [f["name"] for f in card["features"]] == list(UNUSUAL_SPEC["features"])


def test_given_a_batch_file_of_the_unusual_model_when_processed_then_inputs_are_kept_and_scores_match_the_api(
    unusual: tuple[Served, Path],
) -> None:
    served, _ = unusual
    rows = [_applicant(city=city, has_car=None if city == "NA" else city == "A") for city in CITIES]
    rows = [{"row_id": f"r{i}", **row} for i, row in enumerate(rows)]
    rows.append({"row_id": "bad", **_applicant(city="Sao Paulo")})
    manifest, scored, rejected = served.batch("incoming/unusual.csv", _csv(rows))
    assert manifest["status"] == "succeeded", manifest
    assert manifest["counts"]["rows_scored"] == len(CITIES)
    scored_rows = _csv_rows(scored)
    # Then every input column comes back as written (" padded " keeps its spaces, "NA" is no null) ...
    written = _csv_rows(_csv(rows))
    for got, sent in zip(scored_rows, written, strict=False):
        assert {name: got[name] for name in sent} == sent
    # ... and each row's probability is the API's for the same applicant
    for got, row in zip(scored_rows, rows, strict=False):
        features = {k: v for k, v in row.items() if k != "row_id"}
        api = served.score(features)["probability_of_default"]
        assert float(got["probability_of_default"]) == pytest.approx(api, abs=1e-12)
    (bad,) = _csv_rows(rejected)
    assert (bad["row_id"], bad["error_code"]) == ("bad", "unknown_category")
    assert bad["error"].startswith("city: ")
    # and drift is measured for every feature by its card name
    assert set(manifest["drift"]["feature_psi"]) == {f.name for f in served.card.features}


def test_given_a_parquet_file_with_missing_booleans_when_processed_then_every_row_is_scored(
    unusual: tuple[Served, Path],
) -> None:
    served, _ = unusual
    # Given booleans as Arrow booleans with nulls (how a nullable flag reaches Parquet)
    rows = [_applicant(has_car=has_car) for has_car in (True, False, None)]
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), sink)
    manifest, scored, _ = served.batch("incoming/flags.parquet", sink.getvalue())
    # Then each is scored as the API scores it
    assert manifest["counts"]["rows_scored"] == 3, manifest
    got = pq.read_table(io.BytesIO(scored)).column("probability_of_default").to_pylist()
    assert got == pytest.approx([served.score(row)["probability_of_default"] for row in rows], abs=1e-12)


# ---- one feature, sixty features, a real relational dataset ---------------------------------------


def _numeric_table(names: list[str], rows: int) -> pd.DataFrame:
    rng = np.random.default_rng(11)
    table = pd.DataFrame({name: rng.normal(0, 1, rows).round(4) for name in names})
    risk = table[names[: min(5, len(names))]].sum(axis=1)
    table["default"] = (rng.uniform(size=rows) < 1 / (1 + np.exp(-risk))).astype(int)
    return table


def test_given_a_one_feature_model_when_served_then_its_only_reason_is_that_feature(tmp_path: Path) -> None:
    bundle = _train(tmp_path / "one", _numeric_table(["x"], 300), {"name": "one", "target": "default"})
    served = _served(bundle)
    baseline = served.card.reference.reason_baseline["x"]
    assert isinstance(baseline, float)
    for x in (-2.5, 2.5):
        body = served.score({"x": x})
        at_baseline = served.score({"x": baseline})["probability_of_default"]
        contribution = body["probability_of_default"] - at_baseline
        # Then x is the reason exactly when it raised the risk, by its contribution
        expected = [("x", pytest.approx(contribution, abs=1e-9))] if contribution > 0 else []
        assert [(r["feature"], r["contribution"]) for r in body["reasons"]] == expected
    manifest, scored, _ = served.batch("incoming/one.jsonl", b'{"x": -2.5}\n{"x": 2.5, "id": 7}\n')
    assert manifest["counts"]["rows_scored"] == 2
    assert [json.loads(line)["x"] for line in scored.splitlines()] == [-2.5, 2.5]
    assert list(manifest["drift"]["feature_psi"]) == ["x"]


def test_given_a_sixty_feature_model_when_served_then_api_and_batch_agree(tmp_path: Path) -> None:
    names = [f"f{i:02d}" for i in range(60)]
    table = _numeric_table(names, 400)
    bundle = _train(tmp_path / "sixty", table, {"name": "sixty", "target": "default"})
    served = _served(bundle, max_batch_applications=20)
    rows: list[dict[str, Any]] = json.loads(table[names].head(20).to_json(orient="records"))
    applications = [{"application_id": f"a{i}", "features": row} for i, row in enumerate(rows)]
    status, body = served.post("score_batch.json", {"applications": applications})
    assert status == 200, body
    results = body["results"]
    assert [r["application_id"] for r in results] == [a["application_id"] for a in applications]
    assert all(len(r["reasons"]) <= 3 and {x["feature"] for x in r["reasons"]} <= set(names) for r in results)
    manifest, scored, _ = served.batch("incoming/sixty.csv", _csv(rows))
    assert manifest["counts"]["rows_scored"] == 20
    got = [float(row["probability_of_default"]) for row in _csv_rows(scored)]
    assert got == pytest.approx([r["probability_of_default"] for r in results], abs=1e-12)
    assert len(manifest["drift"]["feature_psi"]) == 60


def test_given_the_berka_dataset_when_trained_by_the_cli_then_api_and_batch_score_its_rows_alike(
    tmp_path: Path, shared_data: Path
) -> None:
    assert training_main(["train", "--dataset", "berka", *QUICK, "--out", str(tmp_path / "berka")]) == 0
    served = _served(tmp_path / "berka", max_batch_applications=25)
    names = [f.name for f in served.card.features]
    frame = load_dataset("berka").frame
    rows = json.loads(frame[names].head(25).to_json(orient="records"))
    for row, feature in ((row, f) for row in rows for f in served.card.features if f.type == "boolean"):
        row[feature.name] = bool(row[feature.name])
    status, body = served.post("score_batch.json", {"applications": [{"features": row} for row in rows]})
    assert status == 200, body
    manifest, scored, _ = served.batch(
        "incoming/berka.jsonl", "".join(json.dumps(r) + "\n" for r in rows).encode()
    )
    assert manifest["counts"]["rows_scored"] == 25, manifest
    got = [json.loads(line) for line in scored.splitlines()]
    assert [g["probability_of_default"] for g in got] == pytest.approx(
        [r["probability_of_default"] for r in body["results"]], abs=1e-12
    )
    assert [g["decision"] for g in got] == [r["decision"] for r in body["results"]]


# ---- what cannot be served: refused before fitting, or at load -----------------------------------


def _spec_error(tmp_path: Path, table: pd.DataFrame, spec: dict[str, Any]) -> Callable[[], DatasetSpec]:
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
    return lambda: spec_from_file(path, table)


@pytest.mark.parametrize(
    ("name", "says"),
    [
        (" income", "without leading or trailing spaces"),
        ("label", "model output"),
        ("probabilities", "model output"),
        *((column, "a column the batch adds to every scored row") for column in BATCH_OUTPUT_COLUMNS),
    ],
)
def test_given_a_feature_name_the_model_cannot_hold_when_the_spec_is_read_then_it_is_refused(
    tmp_path: Path, name: str, says: str
) -> None:
    table = pd.DataFrame({name: [1.0, 2.0], "default": [0, 1]})
    read = _spec_error(tmp_path, table, {"name": "t", "target": "default"})
    with pytest.raises(ValueError, match="feature") as error:
        read()
    assert repr(name) in str(error.value)
    assert says in str(error.value)


def test_given_names_the_converter_rewrites_or_keeps_then_the_spec_accepts_them_as_written(
    tmp_path: Path,
) -> None:
    # Names the converter keeps and names it rewrites are all features, as the table names them; only
    # surrounding spaces are refused (a batch file's headers are matched stripped)
    names = ["Größe", "a+b", "x_1", "_x", "1x", "x.y", "x y", "x-y", "é", "e\u0301", "ÅB", "x\t", "日本"]
    rewritten = [name for name in names if Topology._generate_unique_name(name, set()) != name]
    assert len(rewritten) > 1
    for name in names:
        table = pd.DataFrame({name: [1.0, 2.0], "default": [0, 1]})
        read = _spec_error(tmp_path, table, {"name": "t", "target": "default"})
        if name != name.strip():
            with pytest.raises(ValueError, match="without leading or trailing spaces"):
                read()
        else:
            assert read().feature_names == [name]
    assert {LABEL_OUTPUT, PROBABILITY_OUTPUT} == ONNX_OUTPUT_NAMES
    assert BATCH_OUTPUT_COLUMNS == OUTPUT_COLUMNS


def test_given_a_feature_name_with_a_dot_when_trained_by_the_cli_then_it_is_served_as_written(
    tmp_path: Path,
) -> None:
    table = _numeric_table(["income.monthly"], 300)
    bundle = _train(tmp_path / "dot", table, {"name": "t", "target": "default"})
    served = _served(bundle)
    assert [(f.name, f.onnx_input) for f in served.card.features] == [("income.monthly", "income.monthly")]
    applicant = {"income.monthly": 0.5}
    assert served.score(applicant)["probability_of_default"] == pytest.approx(
        _onnx_probability(served.card, bundle, applicant), abs=1e-12
    )


def test_given_categories_differing_only_in_unicode_normalization_then_the_spec_is_refused(
    tmp_path: Path,
) -> None:
    table = pd.DataFrame({"city": [NFC_CITY, NFD_CITY, "Lima"], "default": [0, 1, 0]})
    read = _spec_error(tmp_path, table, {"name": "t", "target": "default"})
    with pytest.raises(ValueError, match="differ only in Unicode normalization"):
        read()


def test_given_true_false_with_missing_values_then_the_feature_is_a_nullable_boolean(tmp_path: Path) -> None:
    # Given the same column read from CSV (True/False and an empty cell) and from Parquet (bools and a null)
    (tmp_path / "t.csv").write_text("flag,default\nTrue,0\n,1\nfalse,0\n")
    from_csv = pd.read_csv(tmp_path / "t.csv")
    pq.write_table(pa.table({"flag": [True, None, False], "default": [0, 1, 0]}), tmp_path / "t.parquet")
    from_parquet = pd.read_parquet(tmp_path / "t.parquet")
    for table in (from_csv, from_parquet):
        spec = _spec_error(tmp_path, table, {"name": "t", "target": "default"})()
        # Then the feature is a boolean, not the categories "False" and "True"
        assert spec.feature("flag").kind == "boolean"


@pytest.mark.parametrize("name", [*BATCH_OUTPUT_COLUMNS, " age", "age ", ""])
def test_given_a_card_feature_name_the_batch_cannot_serve_when_loaded_then_the_load_names_it(
    tmp_path: Path, name: str
) -> None:
    # Given a (hand-edited) card whose feature "age" is renamed; the graph's input keeps its name
    bundle = write_logistic_bundle(tmp_path / "bundle")
    card = json.loads((bundle / "model_card.json").read_text())
    for feature in card["features"]:
        if feature["name"] == "age":
            feature["name"] = name
    reference = card["reference"]
    for key in ("features", "reason_baseline"):
        reference[key] = {name if k == "age" else k: v for k, v in reference[key].items()}
    (bundle / "model_card.json").write_text(json.dumps(card))
    # When the bundle is loaded, then it fails naming the feature
    with pytest.raises(ModelBundleError, match="is not a valid card") as error:
        ScoringModel.load_directory(bundle)
    assert f"feature name {name!r}" in str(error.value)


def test_given_a_csv_whose_category_holds_na_and_null_when_trained_then_they_stay_categories(
    tmp_path: Path,
) -> None:
    # Given a CSV as a data team exports it: "NA" is North America, "null" a category of its system
    rows = ["region,income,default", *(f"{r},{i},{i % 2}" for i, r in enumerate(["NA", "null", "EU"] * 10))]
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "spec.json").write_text(json.dumps({"name": "t", "target": "default"}))
    dataset = load_dataset("t", f"files:{tmp_path / 't.csv'}", tmp_path / "spec.json")
    # Then they are texts, as the batch reads them from a file of the same form (not missing values)
    assert sorted(set(dataset.frame["region"])) == ["EU", "NA", "null"]
