"""The export reader on hand-made RDS layouts: choosing the export, types, and clear errors."""

from __future__ import annotations

import io
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from training.dataload.storage import open_storage
from training.sources.export import ExportReadError, list_exports, read_export_tables


def _write_part(root: Path, key: str, table: pa.Table) -> None:
    path = root / key
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)


def _loans_part(ids: list[int]) -> pa.Table:
    return pa.table(
        {
            "loan_id": pa.array(ids, pa.int32()),
            "amount": pa.array([Decimal("1000.10") + i for i in ids], pa.decimal128(15, 2)),
            "date": pa.array(["1994-03-31"] * len(ids), pa.string()),
        }
    )


def _tables_info(export_id: str) -> dict[str, Any]:
    return {
        "perTableStatus": [
            {
                "target": "bank.loan",
                "status": "COMPLETE",
                "schemaMetadata": {
                    "originalTypeMappings": [
                        {"columnName": "loan_id", "originalType": "int", "expectedExportedType": "int32"},
                        {
                            "columnName": "amount",
                            "originalType": "decimal",
                            "expectedExportedType": "decimal(15,2)",
                        },
                        {
                            "columnName": "date",
                            "originalType": "date",
                            "expectedExportedType": "binary (UTF8)",
                        },
                    ]
                },
            }
        ]
    }


def test_parts_are_read_in_batch_and_partition_order_and_types_mapped_back(tmp_path: Path) -> None:
    # Given an RDS-style export with two batches, partition gaps, and the tables-info file
    prefix = "exp-a/bank/bank.loan"
    _write_part(tmp_path, f"{prefix}/2/part-00000-c.gz.parquet", _loans_part([5]))
    _write_part(tmp_path, f"{prefix}/1/part-00003-b.gz.parquet", _loans_part([3, 4]))
    _write_part(tmp_path, f"{prefix}/1/part-00000-a.gz.parquet", _loans_part([1, 2]))
    (tmp_path / "exp-a" / "export_tables_info_exp-a_from_1_to_1.json").write_text(
        json.dumps(_tables_info("exp-a"))
    )

    # When it is read
    loans = read_export_tables(tmp_path, "bank")["loan"]

    # Then rows come in order, ints are int64, DECIMAL is float64 and the DATE strings are dates
    assert loans["loan_id"].tolist() == [1, 2, 3, 4, 5]
    assert loans["loan_id"].dtype == "int64"
    assert loans["amount"].tolist() == [1001.10, 1002.10, 1003.10, 1004.10, 1005.10]
    assert loans["date"].dtype == "datetime64[us]"
    assert (loans["date"] == pd.Timestamp("1994-03-31")).all()


def test_without_the_tables_info_a_date_string_stays_text(tmp_path: Path) -> None:
    _write_part(tmp_path, "exp-a/bank/bank.loan/1/part-00000-a.gz.parquet", _loans_part([1]))
    loans = read_export_tables(tmp_path, "bank")["loan"]
    assert loans["date"].tolist() == ["1994-03-31"]


def test_two_exports_without_an_export_id_is_an_error_naming_both(tmp_path: Path) -> None:
    for export_id in ("exp-a", "exp-b"):
        _write_part(tmp_path, f"{export_id}/bank/bank.loan/1/part-00000-a.gz.parquet", _loans_part([1]))
    assert list_exports(open_storage(tmp_path)) == ["exp-a", "exp-b"]
    with pytest.raises(ExportReadError, match=r"2 exports .*\(exp-a, exp-b\): pass export_id"):
        read_export_tables(tmp_path, "bank")
    assert len(read_export_tables(tmp_path, "bank", export_id="exp-b")["loan"]) == 1


def test_missing_export_database_and_table_are_named(tmp_path: Path) -> None:
    with pytest.raises(ExportReadError, match="no RDS export found"):
        read_export_tables(tmp_path, "bank")
    _write_part(tmp_path, "exp-a/bank/bank.loan/1/part-00000-a.gz.parquet", _loans_part([1]))
    with pytest.raises(ExportReadError, match=r"no export 'exp-z'.*found \['exp-a'\]"):
        read_export_tables(tmp_path, "bank", export_id="exp-z")
    with pytest.raises(ExportReadError, match=r"no database 'shop'; it has \['bank'\]"):
        read_export_tables(tmp_path, "shop")
    with pytest.raises(ExportReadError, match=r"no tables \['trans'\] in bank; it has \['loan'\]"):
        read_export_tables(tmp_path, "bank", tables=["trans"])


def test_an_export_whose_info_says_it_failed_is_refused(tmp_path: Path) -> None:
    _write_part(tmp_path, "exp-a/bank/bank.loan/1/part-00000-a.gz.parquet", _loans_part([1]))
    (tmp_path / "exp-a" / "export_info_exp-a.json").write_text(json.dumps({"status": "FAILED"}))
    with pytest.raises(ExportReadError, match="status 'FAILED', not COMPLETE"):
        read_export_tables(tmp_path, "bank")


def test_a_corrupt_part_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "exp-a/bank/bank.loan/1/part-00000-a.gz.parquet"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not parquet")
    with pytest.raises(ExportReadError, match=r"part-00000-a\.gz\.parquet is not readable Parquet"):
        read_export_tables(tmp_path, "bank")


def test_reads_the_layout_from_s3_over_http(s3_client: Any, s3_bucket: str) -> None:
    # Given the export uploaded under a prefix of an S3 bucket (moto server)
    sink = io.BytesIO()
    pq.write_table(_loans_part([7, 8]), sink)
    s3_client.put_object(
        Bucket=s3_bucket,
        Key="snapshots/exp-s3/bank/bank.loan/1/part-00000-x.gz.parquet",
        Body=sink.getvalue(),
    )
    s3_client.put_object(
        Bucket=s3_bucket,
        Key="snapshots/exp-s3/export_tables_info_exp-s3_from_1_to_1.json",
        Body=json.dumps(_tables_info("exp-s3")).encode(),
    )
    # When read through s3://
    loans = read_export_tables(f"s3://{s3_bucket}/snapshots/", "bank")["loan"]
    # Then it is the same as from a folder
    assert loans["loan_id"].tolist() == [7, 8]
    assert loans["date"].dtype == "datetime64[us]"


def test_unsupported_location_schemes_are_refused() -> None:
    with pytest.raises(ValueError, match="unsupported location 'gs://b/p'"):
        read_export_tables("gs://b/p", "bank")
