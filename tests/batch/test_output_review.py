"""Output review: what a spreadsheet makes of the CSV outputs, and JSON Lines text with no UTF-8 form."""

from __future__ import annotations

import csv
import gzip
import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lambdas.batch.layout import FileFormat
from lambdas.scoring.runtime import ScoringModel
from tests.batch.helpers import GOOD_ROWS, HEADER, read_scored, score

FORMULAS = ['=HYPERLINK("http://x","y")', "+1+cmd|' /C calc'!A0", "-2+3", "@SUM(A1)", "\t=1", "\r=1"]


def _quoted(cell: str) -> str:
    return '"' + cell.replace('"', '""') + '"'


def _csv_rows(data: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(data.decode(), newline="")))


@pytest.mark.parametrize("file_format", ["csv", "csv.gz"])
def test_given_cells_a_spreadsheet_would_run_as_formulas_then_the_csv_outputs_prefix_a_quote(
    model: ScoringModel, file_format: FileFormat
) -> None:
    good = "A-1,24,32000.0,RENT,0.45,true"
    bad = "A-2,24,32000.0,CASTLE,0.45,true"
    lines = [f"{HEADER},=note"]
    lines += [f"{good},{_quoted(cell)}" for cell in FORMULAS] + [f"{good},-3.5", f"{good},+7", f"{good},"]
    lines += [f"{bad},{_quoted(FORMULAS[0])}", "=1+1,2"]
    data = ("\n".join(lines) + "\n").encode()
    outcome = score(model, file_format, gzip.compress(data) if file_format == "csv.gz" else data)

    scored = _csv_rows(gzip.decompress(outcome.scored) if file_format == "csv.gz" else outcome.scored)
    assert scored[0][6] == "'=note"
    assert [row[6] for row in scored[1:]] == ["'" + cell for cell in FORMULAS] + ["-3.5", "+7", ""]
    assert {row[0] for row in scored[1:]} == {"A-1"}  # other cells untouched
    rejected = _csv_rows(outcome.rejected)
    assert rejected[0][9] == "'=note"
    assert rejected[1][3] == "A-2"
    assert rejected[1][9] == "'" + FORMULAS[0]
    assert rejected[2][-1] == "'=1+1,2"  # raw_line


def test_given_formula_like_cells_then_parquet_and_json_lines_outputs_keep_them_exact(
    model: ScoringModel,
) -> None:
    table = pa.Table.from_pylist([{**GOOD_ROWS[0], "note": cell} for cell in FORMULAS])
    sink = io.BytesIO()
    pq.write_table(table, sink)
    parquet = read_scored("parquet", score(model, "parquet", sink.getvalue()).scored)
    lines = "".join(json.dumps({**GOOD_ROWS[0], "note": cell}) + "\n" for cell in FORMULAS).encode()
    jsonl = read_scored("jsonl", score(model, "jsonl", lines).scored)

    assert [row["note"] for row in parquet] == FORMULAS
    assert [row["note"] for row in jsonl] == FORMULAS


def test_given_a_json_string_with_a_lone_surrogate_then_the_row_is_scored_and_the_escape_kept(
    model: ScoringModel,
) -> None:
    # Valid JSON text (RFC 8259 allows any \\u escape), but "\ud800" has no UTF-8 form.
    # The second line holds U+2028, which str.splitlines() would take for a line break.
    lines = (
        json.dumps({**GOOD_ROWS[0], "note": "\ud800 é\u2028x"})
        + "\n"
        + json.dumps({**GOOD_ROWS[1], "note": "é\u2028y"})
        + "\n"
    ).encode()

    outcome = score(model, "jsonl", lines)

    assert outcome.counts.rows_scored == 2
    written = outcome.scored.decode("utf-8").split("\n")[:-1]
    assert "\\ud800" in written[0]
    assert '"note":"é\u2028y"' in written[1]  # lines without one stay unescaped
    assert [json.loads(line)["note"] for line in written] == ["\ud800 é\u2028x", "é\u2028y"]
