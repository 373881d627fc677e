"""The built batch Lambda package alone, in a bare CPython 3.12 without pandas, scores a CSV end to end.

The package does not ship pandas, and pyarrow takes other code paths when pandas is absent (a Python
``str`` handed to a ``pyarrow.compute`` function is one place where "pandas made unimportable" and
"pandas never installed" were seen to differ). So the domain entry point (``score_source``) runs here
from the package folder only (``-I -S``: no site-packages, no environment, nothing from the dev venv),
with pandas genuinely not installed, on a small file that exercises every column path: empty cells in
nullable and non-nullable numeric columns, a category the model does not know, text in a numeric
column, and good rows that are approved and declined.
"""

from __future__ import annotations

import csv
import io
import sys
from pathlib import Path
from typing import Any

import pytest

from infra.lambda_package import DEFAULT_MODEL_BUNDLE_DIR, build_lambda_package
from lambdas.batch.formats import OUTPUT_COLUMNS, RAW_LINE_COLUMN, REJECTED_FIXED_COLUMNS
from lambdas.scoring.card import ModelCard
from tests.isolated_python import run_isolated_python312

# The credit_risk bundle's features, plus an id column the model does not know (carried through).
HEADER = (
    "application_id,person_income,person_home_ownership,person_emp_length,loan_intent,loan_grade,"
    "loan_amnt,loan_int_rate,loan_percent_income,cb_person_default_on_file,cb_person_cred_hist_length"
)
ROWS = (
    "APP-001,120000,MORTGAGE,10,HOMEIMPROVEMENT,A,6000,6.5,0.05,N,12",  # low risk: approved
    "APP-002,18000,RENT,0,MEDICAL,G,15000,22.5,0.83,Y,2",  # high risk: declined
    "APP-003,65000,OWN,,EDUCATION,B,9000,,0.14,N,6",  # empty nullable numbers: scored
    "APP-004,50000,CASTLE,3,PERSONAL,B,5000,11.0,0.10,N,4",  # unknown category: rejected
    "APP-005,50000,RENT,3,VENTURE,C,lots,13.0,0.10,N,4",  # text in a numeric column: rejected
    "APP-006,21000,RENT,,DEBTCONSOLIDATION,F,12000,,0.57,Y,3",  # empty nullable numbers, high risk
    "APP-007,,RENT,3,VENTURE,C,5000,13.0,0.10,N,4",  # empty non-nullable number: rejected
)
EMPTY_NUMERIC_IDS = {"APP-003", "APP-006"}
REJECTED = {  # id -> (error code, field the error names)
    "APP-004": ("unknown_category", "person_home_ownership"),
    "APP-005": ("wrong_type", "loan_amnt"),
    "APP-007": ("null_not_allowed", "person_income"),
}

# Runs inside the isolated interpreter: prove pandas is absent, score the CSV from the package only.
_SCORE_SCRIPT = """
import importlib.util, io, json, sys, time
package, csv_file = sys.argv[1], sys.argv[2]
stdlib = list(sys.path)
sys.path[:] = [package] + stdlib
assert all(entry.startswith(sys.base_prefix) for entry in stdlib), stdlib
assert "pandas" not in sys.modules
assert importlib.util.find_spec("pandas") is None
try:
    import pandas
except ModuleNotFoundError:
    pandas_importable = False
else:
    pandas_importable = True

started = time.perf_counter()
from pathlib import Path
from lambdas.batch.formats import open_source
from lambdas.batch.scoring import score_source
from lambdas.scoring.runtime import ScoringModel

model = ScoringModel.load_directory(Path(package) / "model_artifacts" / "credit_risk", threads=1)
scored, rejected = io.BytesIO(), io.BytesIO()
with open(csv_file, "rb") as stream:
    result = score_source(model, open_source("csv", stream), "csv", scored, rejected)
seconds = time.perf_counter() - started
outside = sorted(
    name for name, module in list(sys.modules.items())
    if name.split(".")[0] in ("numpy", "pyarrow", "onnxruntime", "pydantic", "lambdas")
    and getattr(module, "__file__", None) and not module.__file__.startswith(package)
)
print("RESULT " + json.dumps({
    "counts": vars(result.counts), "columns": result.columns, "model_version": model.model_version,
    "scored_csv": scored.getvalue().decode("utf-8"), "rejected_csv": rejected.getvalue().decode("utf-8"),
    "pandas_loaded": "pandas" in sys.modules, "pandas_importable": pandas_importable,
    "outside": outside, "seconds": seconds, "executable": sys.executable,
}))
"""


def _rows_by_id(text: str) -> dict[str, dict[str, Any]]:
    return {row["application_id"]: row for row in csv.DictReader(io.StringIO(text))}


@pytest.mark.slow
# Same package, same group: under `pytest -n 2 --dist loadgroup` (make test) these tests share one
# worker; the builder's per-cache-entry file lock keeps other workers from building it concurrently.
@pytest.mark.xdist_group("batch-lambda-package")
def test_given_the_built_batch_package_without_pandas_when_scoring_a_mixed_csv_then_every_row_is_accounted(
    tmp_path: Path,
) -> None:
    # Given the batch package as the CDK asset builds it (cached under build/ after the first run)
    package = tmp_path / "batch-package"
    report = build_lambda_package("batch", package)
    print(f"\n{report.summary()}")
    assert not (package / "pandas").exists()
    bundle = package / DEFAULT_MODEL_BUNDLE_DIR
    assert (bundle / "model_card.json").is_file(), "the credit_risk bundle must ship in the package"
    card = ModelCard.model_validate_json((bundle / "model_card.json").read_bytes())
    assert [feature.name for feature in card.features] == HEADER.split(",")[1:]
    # And a CSV with good rows, empty numeric cells and invalid rows
    csv_file = tmp_path / "applications.csv"
    csv_file.write_text("\n".join((HEADER, *ROWS)) + "\n")

    # When a bare CPython 3.12 (-I isolated, -S no site-packages) scores it with the package's code
    outcome = run_isolated_python312(
        _SCORE_SCRIPT,
        [str(package), str(csv_file)],
        env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
        cwd=tmp_path,
    )

    # Then it ran without pandas, on the package's modules only
    assert outcome["executable"] != sys.executable
    assert outcome["pandas_importable"] is False
    assert outcome["pandas_loaded"] is False
    assert outcome["outside"] == []
    # And every row is either scored or rejected, with the expected counts
    counts = outcome["counts"]
    assert counts["rows_in"] == counts["rows_scored"] + counts["rows_rejected"] == len(ROWS)
    assert (counts["rows_scored"], counts["rows_rejected"]) == (len(ROWS) - len(REJECTED), len(REJECTED))
    assert counts["approved"] + counts["declined"] == counts["rows_scored"]
    # And each invalid row is rejected with its code and an error naming the field, values kept as sent
    rejected = _rows_by_id(outcome["rejected_csv"])
    assert set(rejected) == set(REJECTED)
    header = HEADER.split(",")
    for row_number, row_text in enumerate(ROWS, start=1):
        values = dict(zip(header, row_text.split(","), strict=True))
        if values["application_id"] not in REJECTED:
            continue
        got = rejected[values["application_id"]]
        code, field = REJECTED[values["application_id"]]
        assert got["error_code"] == code
        assert got["error"].startswith(f"{field}: ")
        assert got["row_number"] == str(row_number)
        assert {name: got[name] for name in header} == values
    assert next(csv.reader(io.StringIO(outcome["rejected_csv"]))) == [
        *REJECTED_FIXED_COLUMNS,
        *header,
        RAW_LINE_COLUMN,
    ]
    # And the scored file carries the id and input columns through, then the model's columns
    scored_text = outcome["scored_csv"]
    assert next(csv.reader(io.StringIO(scored_text))) == [*header, *OUTPUT_COLUMNS]
    scored = _rows_by_id(scored_text)
    assert list(scored) == [r.split(",")[0] for r in ROWS if r.split(",")[0] not in REJECTED]
    assert set(scored) >= EMPTY_NUMERIC_IDS
    for application_id in EMPTY_NUMERIC_IDS:
        assert scored[application_id]["person_emp_length"] == ""
        assert scored[application_id]["loan_int_rate"] == ""
    labels = card.decision_policy.decision_labels
    for row in scored.values():
        assert 0.0 <= float(row["probability_of_default"]) <= 1.0
        assert row["model_version"] == card.model_version == outcome["model_version"]
        assert row["decision"] in (labels["approve"], labels["decline"])
        # Reasons explain declines only: every declined row has them, approved rows none
        assert (row["reasons"] != "") == (row["decision"] == labels["decline"])
    decisions = [row["decision"] for row in scored.values()]
    assert decisions.count(labels["decline"]) == counts["declined"]
    assert scored["APP-001"]["decision"] == labels["approve"]
    assert scored["APP-002"]["decision"] == labels["decline"]
    assert scored["APP-006"]["decision"] == labels["decline"]  # declined with empty numeric cells
    print(f"isolated import + load + score of {len(ROWS)} rows: {outcome['seconds']:.3f} s")
