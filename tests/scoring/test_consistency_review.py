"""One application, every path, the same answer.

The API (POST /v1/score and /v1/score/batch), the batch file formats (CSV, gzip CSV, JSON Lines,
Parquet) and the runtime must give the same application a bit-identical probability, the same decision
(also exactly at the threshold) and the same reasons, wherever the row sits in a call; and a value
exactly at a tree split must go the way scikit-learn sends it.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lambdas.api.app import create_api
from lambdas.api.settings import Settings
from lambdas.api.wiring import make_handler
from lambdas.batch.formats import DEFAULT_CHUNK_ROWS, DEFAULT_CSV_BLOCK_BYTES, open_source
from lambdas.batch.layout import FileFormat
from lambdas.batch.scoring import REASON_SEPARATOR, score_source
from lambdas.scoring.runtime import ScoringModel
from tests.api.conftest import api_context, stored_event
from tests.conftest import skip_unless_ci
from tests.scoring import bundles

REPO_ROOT = Path(__file__).resolve().parents[2]
CHAMPION = REPO_ROOT / "model_artifacts" / "credit_risk"
SAMPLE = REPO_ROOT / "training" / "data" / "credit_risk_dataset.csv.gz"
# An application of the logistic bundle whose probability onnxruntime rounded one way in a call of
# one row (or as the last row of any odd-sized call: the double Sigmoid's scalar tail) and the other
# way everywhere else (its vectorised loop): 1.1e-16 apart.
ROUNDS_BY_POSITION = {"age": 40, "income": 32741.0, "home": "OWN", "loan_ratio": 0.86, "prior_default": False}

Outcome = tuple[float, str, str]  # probability, decision, reason texts as a scored file joins them


# ---- the paths ------------------------------------------------------------------------------------


class _Api:
    """The API Lambda's handler serving ``model``, called like Lambda calls it."""

    def __init__(self, model: ScoringModel, bundle: Path) -> None:
        settings = Settings(
            model_bundle_dir=bundle,
            model_bundle_uri=None,
            log_applicant_values=False,
            max_batch_applications=1000,
        )
        self._handler = make_handler(create_api(model, settings))

    def _post(self, event_name: str, body: dict[str, Any]) -> dict[str, Any]:
        event = stored_event(event_name)
        event["body"] = json.dumps(body)
        result = self._handler(event, api_context())  # type: ignore[arg-type]
        assert result["statusCode"] == 200, result["body"]
        return json.loads(result["body"])  # type: ignore[no-any-return]

    def single(self, features: dict[str, Any]) -> dict[str, Any]:
        return self._post("score.json", {"features": features})

    def batch(self, applications: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        body = {"applications": [{"features": features} for features in applications]}
        return self._post("score_batch.json", body)["results"]  # type: ignore[no-any-return]


def _api_outcome(result: dict[str, Any]) -> Outcome:
    texts = REASON_SEPARATOR.join(reason["reason"] for reason in result["reasons"])
    return result["probability_of_default"], result["decision"], texts


def _file_outcome(row: dict[str, Any]) -> Outcome:
    return float(row["probability_of_default"]), row["decision"], row["reasons"]


def _score_file(
    model: ScoringModel,
    file_format: FileFormat,
    data: bytes,
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    csv_block_bytes: int = DEFAULT_CSV_BLOCK_BYTES,
) -> list[Outcome]:
    """The batch Lambda's domain path (read, validate, score, reasons, write) on one file's bytes."""
    scored, rejected = io.BytesIO(), io.BytesIO()
    source = open_source(
        file_format, io.BytesIO(data), chunk_rows=chunk_rows, csv_block_bytes=csv_block_bytes
    )
    result = score_source(model, source, file_format, scored, rejected)
    assert result.counts.rows_rejected == 0, result.counts
    output = scored.getvalue()
    if file_format == "parquet":
        rows: list[dict[str, Any]] = pq.read_table(io.BytesIO(output)).to_pylist()
    elif file_format == "jsonl":
        rows = [json.loads(line) for line in output.decode().splitlines()]
    else:
        text = (gzip.decompress(output) if file_format == "csv.gz" else output).decode()
        rows = list(csv.DictReader(io.StringIO(text)))
    return [_file_outcome(row) for row in rows]


def _files(csv_text: str, records: Sequence[dict[str, Any]], table: pa.Table) -> dict[FileFormat, bytes]:
    """The same rows as each format the batch reads: CSV text as given, JSON Lines, Parquet."""
    parquet = io.BytesIO()
    pq.write_table(table, parquet)
    return {
        "csv": csv_text.encode(),
        "csv.gz": gzip.compress(csv_text.encode()),
        "jsonl": "".join(json.dumps(record) + "\n" for record in records).encode(),
        "parquet": parquet.getvalue(),
    }


def _csv_text(names: Sequence[str], rows: Sequence[dict[str, str]]) -> str:
    """A CSV file: the header, then each row's cells (none of them needs quoting here)."""
    lines = [",".join(names), *(",".join(row[name] for name in names) for row in rows)]
    return "".join(line + "\n" for line in lines)


def _logistic(folder: Path, encoding: str, threshold: float | None = None) -> tuple[ScoringModel, Path]:
    """The logistic test bundle, its card's threshold replaced when one is given."""
    onnx_bytes = bundles.logistic_onnx_bytes(encoding)
    card = bundles.logistic_card(onnx_bytes, category_input=encoding).model_dump(mode="json")
    if threshold is not None:
        card["decision_policy"]["threshold"] = threshold
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(onnx_bytes)
    (folder / "model_card.json").write_text(json.dumps(card))
    return ScoringModel.load_directory(folder), folder


def _logistic_text(application: dict[str, Any]) -> dict[str, str]:
    """An application of the logistic bundle as CSV cells."""
    cells = {}
    for name, value in application.items():
        cells[name] = (
            "" if value is None else ("true" if value is True else "false" if value is False else str(value))
        )
    return cells


def _logistic_table(applications: Sequence[dict[str, Any]]) -> pa.Table:
    """Applications of the logistic bundle as a Parquet writer types them (int64 age, bool flag)."""
    types = {
        "age": pa.int64(),
        "income": pa.float64(),
        "home": pa.string(),
        "loan_ratio": pa.float64(),
        "prior_default": pa.bool_(),
    }
    return pa.table({name: pa.array([a[name] for a in applications], kind) for name, kind in types.items()})


# ---- the decision rule at the threshold -----------------------------------------------------------


@pytest.mark.parametrize("encoding", bundles.CATEGORY_INPUTS)
def test_given_a_probability_exactly_at_the_threshold_then_every_path_declines_it_with_the_same_reasons(
    encoding: str, tmp_path: Path
) -> None:
    # Given a card whose threshold is exactly this application's probability (as a call of one row
    # computes it), and another application to share calls with
    application, other = ROUNDS_BY_POSITION, bundles.good_application()
    probe, _ = _logistic(tmp_path / "probe", encoding)
    threshold = float(
        probe.score(probe.prepare_records([application]).feed, reasons_for=False).probability[0]
    )
    model, bundle = _logistic(tmp_path / "at-threshold", encoding, threshold)
    api = _Api(model, bundle)

    # When it is scored alone and among others (first, middle, last of odd and even calls) by the API
    outcomes: dict[str, Outcome] = {"api single": _api_outcome(api.single(application))}
    for calls in ([application], [other, application], [other, other, application], [application, other] * 3):
        for position, result in enumerate(api.batch(calls)):
            if calls[position] is application:
                outcomes[f"api batch of {len(calls)}, position {position}"] = _api_outcome(result)
    # ... and as a file of each format, alone and as the last row of an odd-sized file
    for rows in ([application], [other, other, application]):
        table = _logistic_table(rows)
        csv_text = _csv_text(list(application), [_logistic_text(row) for row in rows])
        for file_format, data in _files(csv_text, rows, table).items():
            scored = _score_file(model, file_format, data)
            outcomes[f"{file_format} file of {len(rows)}"] = scored[-1]

    # Then every path gives the same probability, exactly the threshold, declines it (at or above the
    # threshold declines, as training's figures count it) and gives the same reasons
    expected: Outcome = (threshold, "decline", outcomes["api single"][2])
    assert expected[2]
    assert {path: outcome for path, outcome in outcomes.items() if outcome != expected} == {}


# ---- real rows: every path, bit for bit ----------------------------------------------------------------


@pytest.fixture(scope="module")
def champion() -> ScoringModel:
    if not (CHAMPION / "model_card.json").is_file():
        skip_unless_ci(f"no committed champion bundle at {CHAMPION}")
    return ScoringModel.load_directory(CHAMPION)


def _sample_rows(
    model: ScoringModel, rows: int
) -> tuple[list[str], list[dict[str, str]], list[dict[str, Any]]]:
    """The header, the CSV cells and the API records of the sample file's first ``rows`` valid rows."""
    with gzip.open(SAMPLE, "rt", newline="") as stream:
        reader = csv.DictReader(stream)
        cells = [row for _, row in zip(range(rows + 100), reader, strict=False)]
        header = list(reader.fieldnames or [])
    records = []
    for row in cells:
        record: dict[str, Any] = {}
        for feature in model.features:
            text = row[feature.name]
            # Numbers as JSON floats (the file's "59000" is the API's 59000.0), a blank cell as null
            record[feature.name] = text if feature.categories is not None else float(text) if text else None
        records.append(record)
    valid = model.prepare_records(records).valid.tolist()
    kept = [index for index, ok in enumerate(valid) if ok][:rows]
    assert len(kept) == rows
    return header, [cells[i] for i in kept], [records[i] for i in kept]


def test_given_real_rows_when_scored_by_the_api_and_every_file_format_then_all_is_bit_identical(
    champion: ScoringModel,
) -> None:
    # Given 1,500 real applications (missing employment lengths and rates among them)
    header, cells, records = _sample_rows(champion, 1_500)
    assert any(record["person_emp_length"] is None for record in records)
    assert any(record["loan_int_rate"] is None for record in records)
    api = _Api(champion, CHAMPION)

    # When each is scored alone by the API, and in batches of 1,000 (the last one 500)
    single = [api.single(record) for record in records]
    batch = [
        result
        for start in range(0, len(records), 1_000)
        for result in api.batch(records[start : start + 1_000])
    ]
    # Then the API gives each the same result either way: probability, decision, reasons and contributions
    assert [(r["probability_of_default"], r["decision"], r["reasons"]) for r in batch] == [
        (r["probability_of_default"], r["decision"], r["reasons"]) for r in single
    ]

    # When the same rows are files of each format, read in chunks of 3 rows (so many rows are the last
    # of an odd-sized call) and in one chunk
    names = [feature.name for feature in champion.features]
    table = pa.table(
        {
            name: pa.array(
                [record[name] for record in records],
                pa.string() if champion.card.feature(name).categories is not None else pa.float64(),
            )
            for name in names
        }
    )
    files = _files(_csv_text(header, cells), records, table)
    expected = [
        (p, d, texts if d == "decline" else "")  # the batch gives reasons for declines only
        for p, d, texts in map(_api_outcome, single)
    ]
    for file_format, data in files.items():
        for chunking in ({"chunk_rows": 3, "csv_block_bytes": 200}, {}):
            scored = _score_file(champion, file_format, data, **chunking)  # type: ignore[arg-type]
            # Then each row has the API's probability to the bit, its decision and its reasons
            differ = [
                row for row, (got, want) in enumerate(zip(scored, expected, strict=True)) if got != want
            ]
            assert differ == [], (file_format, chunking, [(scored[r], expected[r]) for r in differ[:3]])
    assert any(outcome[1] == "decline" for outcome in expected)
    assert any(outcome[1] == "approve" for outcome in expected)


def test_given_real_rows_then_a_row_scored_alone_and_explained_among_others_gets_the_same_reasons(
    champion: ScoringModel,
) -> None:
    # Given 4,000 real applications, and every feature allowed as a reason (so that a feature which
    # changed nothing would show, with a contribution of a rounding difference)
    _, _, records = _sample_rows(champion, 4_000)
    top_k = len(champion.features)
    feed = champion.prepare_records(records).feed
    probability = champion.score(feed, reasons_for=False).probability
    # When each row is scored alone with its reasons (the API's path) and all are explained together
    # with their known probabilities (the batch's path)
    explained = champion.explain(feed, probability, np.arange(len(records)), top_k=top_k)
    alone = [champion.score(champion.prepare_records([record]).feed, top_k=top_k) for record in records]
    # Then both give the same probability and the same reasons (features, texts, contributions, order)
    differ = [
        (row, scores.reasons[0], explained[row])
        for row, scores in enumerate(alone)
        if scores.probability[0] != probability[row] or scores.reasons[0] != explained[row]
    ]
    assert not differ, differ[:3]
    # And no reason is a feature that changed nothing (a contribution of a rounding difference, 1e-16)
    contributions = [reason.contribution for scores in alone for reason in scores.reasons[0]]
    assert min(contributions) > 1e-12


# ---- one application written in every accepted way ------------------------------------------------------


@pytest.mark.parametrize("encoding", bundles.CATEGORY_INPUTS)
def test_given_integers_as_floats_booleans_and_a_missing_value_in_any_form_then_results_are_identical(
    encoding: str, tmp_path: Path
) -> None:
    # Given an application with an integer, a boolean, a category and a missing (nullable) income,
    # declined by a card with a low threshold so that the files carry its reasons
    model, bundle = _logistic(tmp_path / "bundle", encoding, threshold=0.05)
    application: dict[str, Any] = {
        "age": 24,
        "income": None,
        "home": "RENT",
        "loan_ratio": 0.45,
        "prior_default": True,
    }
    api = _Api(model, bundle)
    reference = _api_outcome(api.single(application))
    assert reference[1] == "decline"
    assert "Yearly income not provided" in reference[2]

    # When the API gets the integer as 24.0, and files hold it as "24", "24.0", " 24 " and the boolean as
    # "true", "1", "yes", "T"; JSON Lines as 24 and 24.0; Parquet as int64 or float64 and bool or 1.0
    outcomes = {"api 24.0": _api_outcome(api.single({**application, "age": 24.0}))}
    outcomes |= {
        f"api batch {i}": _api_outcome(r)
        for i, r in enumerate(api.batch([application, {**application, "age": 24.0}]))
    }
    variants = [("24", "true"), ("24.0", "1"), (" 24 ", "yes"), ("2.4e1", "T")]
    names = list(application)
    cells = [_logistic_text(application) | {"age": age, "prior_default": flag} for age, flag in variants]
    csv_text = _csv_text(names, cells)
    records = [application, {**application, "age": 24.0}]
    tables = [
        _logistic_table([application]),
        pa.table(
            {
                "age": pa.array([24.0], pa.float64()),
                "income": pa.array([None], pa.float64()),
                "home": pa.array(["RENT"]).dictionary_encode(),
                "loan_ratio": pa.array([0.45]),
                "prior_default": pa.array([1.0]),
            }
        ),
    ]
    for index, table in enumerate(tables):
        files = _files(csv_text, records, table)
        for file_format, data in files.items():
            if index and file_format != "parquet":
                continue
            for row, outcome in enumerate(_score_file(model, file_format, data)):
                outcomes[f"{file_format} {index} row {row}"] = outcome
    # Then every form gives the API's probability, decision and reasons
    assert {path: outcome for path, outcome in outcomes.items() if outcome != reference} == {}


# ---- equal contributions ---------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", bundles.CATEGORY_INPUTS)
def test_given_two_exactly_equal_contributions_then_every_path_orders_and_cuts_them_by_card_order(
    encoding: str, tmp_path: Path
) -> None:
    # Given an applicant whose age and income raise the logit by exactly the same amount (0.3 each:
    # the two perturbed probabilities are the same double), declined by a card with a low threshold
    model, bundle = _logistic(tmp_path / "bundle", encoding, threshold=0.05)
    application = {
        "age": 18,
        "income": 37000.0,
        "home": "MORTGAGE",
        "loan_ratio": 0.15,
        "prior_default": False,
    }
    feed = model.prepare_records([application] * 5).feed
    scores = model.score(feed, top_k=2)
    age, income = scores.reasons[0]
    assert (age.feature, income.feature) == ("age", "income")
    assert age.contribution == income.contribution > 0.0
    # When the tie is cut at one reason by the runtime's paths (small request, block, explain, texts)
    one = [model.score(model.prepare_records([application]).feed, top_k=1).reasons[0]]
    one += model.score(feed, top_k=1).reasons
    one += model.explain(feed, scores.probability, np.arange(5), top_k=1)
    texts = model.explain_texts(feed, scores.probability, np.arange(5), top_k=1)
    # Then each keeps the first in card order (age), and so do the API and every file format
    assert {tuple((r.feature, r.text) for r in reasons) for reasons in one} == {(("age", age.text),)}
    assert set(texts) == {age.text}
    api = _Api(model, bundle)
    outcomes = [_api_outcome(api.single(application)), *map(_api_outcome, api.batch([application] * 3))]
    rows = [application] * 3
    csv_text = _csv_text(list(application), [_logistic_text(row) for row in rows])
    for file_format, data in _files(csv_text, rows, _logistic_table(rows)).items():
        outcomes += _score_file(model, file_format, data)
    assert {outcome[2] for outcome in outcomes} == {REASON_SEPARATOR.join([age.text, income.text])}


# ---- a decline without a positive contribution ----------------------------------------------------


@pytest.mark.parametrize("encoding", bundles.CATEGORY_INPUTS)
def test_given_a_declined_application_with_no_feature_raising_the_risk_then_every_path_gives_no_reason(
    encoding: str, tmp_path: Path
) -> None:
    # Given the baseline applicant itself (no feature differs from its baseline, so none raised the
    # risk) under a card whose threshold declines it
    model, bundle = _logistic(tmp_path / "bundle", encoding, threshold=0.01)
    baseline = {"age": 30, "income": 55000.0, "home": "MORTGAGE", "loan_ratio": 0.15, "prior_default": False}
    api = _Api(model, bundle)
    # When scored by the API (alone and in a batch) and as a file of each format
    outcomes = [_api_outcome(api.single(baseline)), *map(_api_outcome, api.batch([baseline] * 3))]
    rows = [baseline] * 3
    files = _files(
        _csv_text(list(baseline), [_logistic_text(row) for row in rows]), rows, _logistic_table(rows)
    )
    for file_format, data in files.items():
        outcomes += _score_file(model, file_format, data)
    # Then each path declines it, with the same probability, and lists no reason (an empty list in the
    # API, an empty text in a file): no feature is named that did not raise the risk
    probability = outcomes[0][0]
    assert probability >= 0.01
    assert set(outcomes) == {(probability, "decline", "")}
    assert api.single(baseline)["reasons"] == []


# ---- tree splits: a value at a split goes the way scikit-learn sends it -------------------------------


def _numeric_thresholds(pipeline: Any) -> np.ndarray:
    model = pipeline[-1]
    if hasattr(model, "_predictors"):  # HistGradientBoostingClassifier
        nodes = [p[0].nodes for p in model._predictors]
        return np.unique(np.concatenate([n["num_threshold"][~n["is_leaf"].astype(bool)] for n in nodes]))
    trees = [estimator.tree_ for estimator in model.estimators_]
    return np.unique(np.concatenate([t.threshold[t.children_left >= 0] for t in trees]))


@pytest.mark.parametrize("candidate_name", ["hist_gradient_boosting", "random_forest"])
def test_given_values_exactly_at_every_split_threshold_then_the_runtime_gives_sklearns_probabilities(
    candidate_name: str, champion: ScoringModel
) -> None:
    import pandas as pd

    from tests.training.helpers import small_fit
    from training.candidates import CANDIDATES
    from training.datasets.catalog import CREDIT_RISK, load_dataset
    from training.features import model_input_frame
    from training.onnx_export import convert_pipeline, sha256_hex

    # Given a candidate trained on credit_risk rows, converted as training converts the champion and
    # served by the runtime under the champion's card (same features, categories and codes)
    frame = load_dataset("credit_risk").frame.sample(2_000, random_state=3).reset_index(drop=True)
    x = model_input_frame(CREDIT_RISK, frame)
    candidate = next(c for c in CANDIDATES if c.name == candidate_name)
    pipeline = small_fit(candidate, CREDIT_RISK, x, frame["loan_status"].to_numpy())
    categories = {f.name: list(f.categories) for f in champion.features if f.categories is not None}
    onnx_bytes = convert_pipeline(pipeline, CREDIT_RISK, None, categories).SerializeToString()
    card = champion.card.model_dump(mode="json")
    card["onnx"]["sha256"] = sha256_hex(onnx_bytes)
    model = ScoringModel.from_bytes(onnx_bytes, json.dumps(card).encode())

    # When each numeric feature of a few applications is set exactly to every split threshold (of any
    # feature, so each feature's own thresholds are among them) and to the doubles either side
    thresholds = _numeric_thresholds(pipeline)
    values = np.concatenate([thresholds, np.nextafter(thresholds, -np.inf), np.nextafter(thresholds, np.inf)])
    base = x.head(3)
    variants = []
    for feature in (f for f in model.features if f.categories is None):
        low, high = feature.minimum, feature.maximum
        usable = values[
            (values >= (low if low is not None else -np.inf))
            & (values <= (high if high is not None else np.inf))
        ]
        for _, row in base.iterrows():
            block = base.loc[[row.name] * len(usable)].copy()
            block[feature.name] = usable
            variants.append(block)
    nudged = pd.concat(variants, ignore_index=True)
    expected = pipeline.predict_proba(nudged)[:, 1]
    records: list[dict[str, Any]] = [
        {
            str(name): (None if isinstance(value, float) and np.isnan(value) else value)
            for name, value in row.items()
        }
        for row in nudged[[f.name for f in model.features]].to_dict("records")
    ]
    prepared = model.prepare_records(records)
    assert prepared.errors == {}
    served = model.score(prepared.feed, reasons_for=False).probability
    # ... and as CSV text, each value written as its shortest repr (what a client's CSV writer does)
    columns = {
        f.name: [
            "" if v is None else repr(v) if isinstance(v, float) else str(v)
            for v in (r[f.name] for r in records)
        ]
        for f in model.features
    }
    from_text = model.prepare_columns(columns)
    assert from_text.errors == {}
    served_from_text = model.score(from_text.feed, reasons_for=False).probability

    # Then every row gets sklearn's probability (up to the float32 tree sum onnxruntime hands out,
    # far below a leaf's weight: a split taken the other way would show), from JSON and text alike
    assert len(records) > 1_000
    np.testing.assert_allclose(served, expected, rtol=0, atol=1e-7)
    np.testing.assert_array_equal(served_from_text, served)
