"""Command line: ``python -m training.dataload load ...`` and ``python -m training.dataload export ...``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import pymysql

from training.aws_settings import aws_setting_error
from training.dataload.connection import DbSettings, SettingsError, connect, settings_from_env
from training.dataload.datasets import DATASET_NAMES, read_dataset_files, schema_for
from training.dataload.exporter import DEFAULT_ROWS_PER_FILE, ExportError, export_database
from training.dataload.loader import DEFAULT_CHUNK_ROWS, LoadError, load_tables
from training.dataload.storage import StorageError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training.dataload",
        description="Load a dataset into MariaDB, or export a MariaDB database in the RDS "
        "snapshot-export layout. "
        "Connection settings come from DB_HOST, DB_PORT, DB_USER, DB_PASSWORD, DB_NAME, DB_TLS, DB_TLS_CA "
        "or the Secrets Manager secret named by DB_SECRET_ARN.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    load = commands.add_parser("load", help="replace a dataset's tables in MariaDB with the files' rows")
    load.add_argument("--dataset", required=True, choices=DATASET_NAMES)
    load.add_argument("--files", required=True, type=Path, help="folder holding the dataset's files")
    load.add_argument("--trans-file", type=Path, help="berka only: the transactions file (trans.asc)")
    load.add_argument(
        "--truncated-trans",
        action="store_true",
        help="berka only: the transactions file may be cut off mid-line (a byte prefix of the "
        "original); load its complete rows and drop the incomplete last line with a warning",
    )
    load.add_argument(
        "--complete-history-file",
        type=Path,
        help="berka only: the list of loans whose whole pre-loan history the transactions file holds "
        "(default: complete_history_loans.csv beside the transactions file, when there is one); "
        "loaded as the table complete_history_loans, to which training then keeps",
    )
    load.add_argument("--database", help="target database (default: the dataset's own name)")
    load.add_argument("--chunk-rows", type=int, default=DEFAULT_CHUNK_ROWS)

    export = commands.add_parser(
        "export", help="write a database as Parquet in the RDS snapshot-export layout"
    )
    export.add_argument("--database", required=True)
    export.add_argument("--out", required=True, help="a folder or s3://bucket/prefix")
    export.add_argument("--export-id", required=True)
    export.add_argument("--tables", nargs="*", help="only these tables (default: all)")
    export.add_argument("--rows-per-file", type=int, default=DEFAULT_ROWS_PER_FILE)
    export.add_argument("--as-database", help="database name to use in the layout (default: --database)")
    return parser


def _connection_failure(settings: DbSettings, error: pymysql.MySQLError) -> str:
    """pymysql's ``(2003, "Can't connect ...")`` as one line that says which settings to check."""
    code, text = error.args if len(error.args) == 2 else (None, str(error))
    return (
        f"cannot connect to MariaDB at {settings.host}:{settings.port} as {settings.user!r}: {text}"
        + (f" (error {code})" if code is not None else "")
        + "; check DB_HOST, DB_PORT, DB_USER and DB_PASSWORD (or the secret named by DB_SECRET_ARN)"
    )


def run(arguments: argparse.Namespace) -> dict[str, object]:
    settings = settings_from_env(os.environ)
    try:
        connection = connect(settings)
    except pymysql.MySQLError as error:
        raise SettingsError(_connection_failure(settings, error)) from error
    try:
        if arguments.command == "load":
            if arguments.trans_file is not None and arguments.dataset != "berka":
                raise LoadError("--trans-file applies to the berka dataset only")
            if arguments.truncated_trans and arguments.dataset != "berka":
                raise LoadError("--truncated-trans applies to the berka dataset only")
            if arguments.complete_history_file is not None and arguments.dataset != "berka":
                raise LoadError("--complete-history-file applies to the berka dataset only")
            frames = read_dataset_files(
                arguments.dataset,
                arguments.files,
                arguments.trans_file,
                truncated_trans=arguments.truncated_trans,
                complete_history_file=arguments.complete_history_file,
            )
            result = load_tables(
                connection,
                schema_for(arguments.dataset),
                frames,
                database=arguments.database,
                chunk_rows=arguments.chunk_rows,
            )
            return {
                "database": result.database,
                "rows": result.row_counts,
                "seconds": round(result.seconds, 2),
            }
        summary = export_database(
            connection,
            arguments.database,
            arguments.out,
            arguments.export_id,
            tables=arguments.tables or None,
            rows_per_file=arguments.rows_per_file,
            layout_database=arguments.as_database,
        )
        return {
            "export_id": summary.export_id,
            "location": summary.location,
            "rows": {table.table: table.rows for table in summary.tables},
            "files": sum(len(table.files) for table in summary.tables),
            "seconds": round(summary.seconds, 2),
        }
    finally:
        connection.close()


def main(argv: Sequence[str] | None = None) -> int:
    arguments = build_parser().parse_args(argv)
    try:
        report = run(arguments)
    except (
        LoadError,
        ExportError,
        SettingsError,
        StorageError,
        FileNotFoundError,
        ValueError,
        pymysql.MySQLError,
    ) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except Exception as error:
        setting = aws_setting_error(error)  # DB_SECRET_ARN without AWS credentials or a region
        if setting is None:
            raise
        print(f"error: {setting}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
