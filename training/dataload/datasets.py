"""Which files make up each dataset and how they become the frames the loader writes."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from training.dataload.schemas import CREDIT_RISK, JPMC_LOANS, DatabaseSchema, berka_schema

log = logging.getLogger(__name__)

DATASET_NAMES = ("credit_risk", "berka", "jpmc_loans")

CREDIT_RISK_FILE = "credit_risk_dataset.csv"
JPMC_FILE = "Loan_Data.csv"


def schema_for(dataset: str) -> DatabaseSchema:
    if dataset == "credit_risk":
        return CREDIT_RISK
    if dataset == "jpmc_loans":
        return JPMC_LOANS
    if dataset == "berka":
        from training.datasets import berka

        return berka_schema(berka.BERKA_COLUMN_TYPES, getattr(berka, "BERKA_NULLABLE_COLUMNS", None))
    raise ValueError(f"unknown dataset {dataset!r}; expected one of {', '.join(DATASET_NAMES)}")


def _csv_in(folder: Path, file_name: str) -> Path:
    path = folder if folder.is_file() else folder / file_name
    if not path.is_file() and (folder / f"{file_name}.gz").is_file():
        path = folder / f"{file_name}.gz"  # the compressed copy the repository ships
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found, nor {file_name}.gz beside it (pass the folder holding {file_name} or "
            f"{file_name}.gz, or the file)"
        )
    return path


def _read_flat_csv(path: Path, schema: DatabaseSchema, generated: tuple[str, ...]) -> pd.DataFrame:
    frame = pd.read_csv(path, keep_default_na=False, na_values=[""])  # as training reads a file
    table = schema.tables[0]
    expected = [name for name in table.column_names if name not in generated]
    if list(frame.columns) != expected:
        raise ValueError(f"{path}: header {list(frame.columns)} differs from the expected {expected}")
    return frame


def read_credit_risk_csv(path: Path) -> pd.DataFrame:
    """The CSV as pandas reads it (the reference frame the export must reproduce)."""
    return _read_flat_csv(path, CREDIT_RISK, generated=("application_id",))


def read_dataset_files(
    dataset: str,
    folder: Path,
    trans_file: Path | None = None,
    *,
    truncated_trans: bool = False,
    complete_history_file: Path | None = None,
) -> dict[str, pd.DataFrame]:
    """The frames to load, keyed by table name, with the schema's columns.

    berka only: ``trans_file`` replaces ``folder / "trans.asc"``, and ``truncated_trans=True``
    reads the transactions file as a possibly cut-off prefix (complete rows only, a dropped last
    line is logged; see :func:`training.datasets.berka.read_trans_prefix`). The list of loans
    whose whole pre-loan history the transactions hold (``complete_history_file``, by default
    ``complete_history_loans.csv`` beside the transactions file when there is one) becomes the
    table ``complete_history_loans``, checked against the loan table. Without a list, transactions
    that leave whole months of loan history empty (a partial table) are loaded with a warning:
    training from them is refused until the list is loaded too.
    """
    if truncated_trans and dataset != "berka":
        raise ValueError("truncated_trans applies to the berka dataset only")
    if complete_history_file is not None and dataset != "berka":
        raise ValueError("complete_history_file applies to the berka dataset only")
    if dataset == "credit_risk":
        frame = read_credit_risk_csv(_csv_in(folder, CREDIT_RISK_FILE))
        # Surrogate key = 1-based row number in the file: stable across reloads of the same file.
        frame.insert(0, "application_id", range(1, len(frame) + 1))
        return {"applications": frame}
    if dataset == "jpmc_loans":
        return {"loans": _read_flat_csv(_csv_in(folder, JPMC_FILE), JPMC_LOANS, generated=())}
    if dataset == "berka":
        return _read_berka(folder, trans_file, truncated_trans, complete_history_file)
    raise ValueError(f"unknown dataset {dataset!r}; expected one of {', '.join(DATASET_NAMES)}")


def _read_berka(
    folder: Path, trans_file: Path | None, truncated_trans: bool, complete_history_file: Path | None
) -> dict[str, pd.DataFrame]:
    from training.datasets import berka

    trans_path = Path(trans_file) if trans_file is not None else Path(folder) / "trans.asc"
    frames = dict(berka.read_berka_files(folder, trans_file=trans_file, truncated_trans=truncated_trans))
    list_path = complete_history_file or berka.complete_history_file_beside(trans_path)
    if list_path is not None:
        if not Path(list_path).is_file():
            raise FileNotFoundError(f"complete-history list {list_path} not found")
        frames[berka.COMPLETE_HISTORY_TABLE] = berka.read_complete_history_loans(list_path, frames["loan"])
        return frames
    gaps = berka.trans_coverage_gaps(frames)
    if gaps:
        log.warning(
            "%s holds no transaction in %d months of the loans' history (%s) and no %s is beside it: "
            "it is a partial table, and training from this load will be refused until the list of "
            "loans whose whole history it holds is loaded with it",
            trans_path,
            len(gaps),
            berka.month_ranges(gaps),
            berka.COMPLETE_HISTORY_FILE,
        )
    return frames
