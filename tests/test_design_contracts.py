"""Contracts of DESIGN.md (../shared/DESIGN.md) that the code had drifted from, pinned by example."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from training.dataload.storage import open_storage
from training.sources.export import list_exports, read_export_tables


def _write_loans(root: Path, key: str, ids: list[int]) -> None:
    path = root / key
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"loan_id": pa.array(ids, pa.int64())}), path)


def test_given_export_parts_named_part_star_parquet_when_read_then_every_part_is_read(tmp_path: Path) -> None:
    # Given DESIGN's layout <export-id>/<database>/<database>.<table>/<partition>/part-*.parquet, with
    # one part named as RDS names it and two named otherwise (no uuid, no partition number)
    prefix = "exp-a/bank/bank.loan/1"
    _write_loans(tmp_path, f"{prefix}/part-00000-3f2a.gz.parquet", [1, 2])
    _write_loans(tmp_path, f"{prefix}/part-00001.parquet", [3])
    _write_loans(tmp_path, f"{prefix}/part-last.parquet", [4])

    # When the table is read
    loans = read_export_tables(tmp_path, "bank")["loan"]

    # Then no part is skipped: every row is there, numbered parts in partition order
    assert sorted(loans["loan_id"].tolist()) == [1, 2, 3, 4]
    assert [i for i in loans["loan_id"].tolist() if i != 4] == [1, 2, 3]


def test_given_an_export_whose_only_part_has_no_uuid_when_listed_then_it_is_found(tmp_path: Path) -> None:
    # Given an export holding one part named part-00000.parquet
    _write_loans(tmp_path, "exp-b/bank/bank.loan/1/part-00000.parquet", [7])

    # When the exports are listed and the table read
    exports = list_exports(open_storage(tmp_path))
    loans = read_export_tables(tmp_path, "bank")["loan"]

    # Then the export is found and its row read
    assert exports == ["exp-b"]
    assert loans["loan_id"].tolist() == [7]
