"""PKDD'99 financial data set (Berka, Czech bank): decoding and a point-in-time per-loan frame.

Two steps:

1. :func:`read_berka_files` reads the original ``.asc`` files of the PKDD'99 Discovery Challenge
   and decodes them into the table and column names of the CTU Prague Relational Learning
   Repository's ``financial`` database (``district.A1`` becomes ``district_id``, ``client`` gets
   ``gender`` and ``birth_date``, YYMMDD integers become dates, money becomes float). These decoded
   frames are the canonical form: the same tables loaded into MariaDB and read back (for example
   from an RDS Parquet export) are brought to the same dtypes by :func:`coerce_berka_tables`, using
   :data:`BERKA_COLUMN_TYPES` and :data:`BERKA_NULLABLE_COLUMNS`.

2. :func:`build_berka_frame` turns the tables into one row per loan: the features documented in
   :data:`BERKA_FEATURES`, the target :data:`BERKA_TARGET` and the protected attributes
   :data:`BERKA_PROTECTED` (kept for fairness reports, never features).

Point-in-time rule: every feature of a loan is computed only from records dated strictly before
the loan's date (``loan.date``). Tables without dates are handled as follows:

* ``order`` (standing orders) has no date. A standing order counts for a loan only if the account
  made a payment to the order's counterparty (same ``account_id``, ``trans.bank == order.bank_to``,
  ``trans.account == order.account_to``) dated strictly before the loan date, i.e. the order is
  dated by its first observed payment. Orders never paid before the loan (among them every loan's
  own repayment order, ``k_symbol == "UVER"``, which the loan itself creates) are ignored. So the
  order features depend only on pre-loan transactions.
* ``disp`` (who may use the account) has no date: the number of disponents is taken as known at the
  loan date.
* ``district`` holds 1995 and 1996 statistics. Unemployment and crime use the 1996 figures for
  loans granted from 1997-01-01 on and the 1995 figures for earlier loans (1995 is the earliest
  year available, so loans before 1996 see regional aggregates published later; these describe the
  region, not the customer). A missing 1995 value falls back to 1996.
* ``account.date`` (opening) and ``client`` birth dates precede the loan by construction.

Label: ``loan.status`` as of the end of the data (:data:`BERKA_STATUS_DATE`); B (finished unpaid)
and D (running, in debt) are defaults, A and C (running, no problem so far) are not. A C loan
granted shortly before that date has barely been repaid, so :func:`outcome_observed` marks the
loans observed for at least :data:`BERKA_MIN_OBSERVED_MONTHS` months; :func:`build_berka_frame`
keeps every loan, training keeps the observed ones only (``training.datasets.catalog``).

Loans with a complete transaction history: a ``trans`` table that is only part of the original
(such as the assembled ``trans.asc`` of 79,302 rows) holds the whole pre-loan history of some
loans only; features of the others would be computed from part of their history. Such a table
comes with the list of the loans it covers, ``complete_history_loans.csv`` beside the transactions
file (:func:`read_complete_history_loans`), which travels as the table
:data:`COMPLETE_HISTORY_TABLE` (``loan_id``, ``history_source``) through MariaDB and the export.
:func:`build_berka_frame` keeps only the listed loans when that table is given and not empty.
:func:`trans_coverage_gaps` is the check that a ``trans`` table without such a list is not a
partial one: it names the calendar months, between the first opening of a loan account and the
last loan, in which the table holds no transaction at all (the original has thousands in every
month); training refuses a table with gaps and no list (``training.datasets.catalog``).

Cut-off transaction files: a copy of ``trans.asc`` that is only a byte prefix of the original
(e.g. the first 3 MiB) ends in the middle of a row. Reading such a file is opt-in
(``read_berka_files(..., truncated_trans=True)`` or :func:`read_trans_prefix`): only the rows whose
line end is in the file are kept and the dropped bytes are reported. Without the option a last line
that has no line end must still be a complete row (right number of fields, quotes closed), else
the file is rejected as cut off.
"""

from __future__ import annotations

import csv
import io
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final

import numpy as np
import pandas as pd

__all__ = [
    "BERKA_COLUMN_TYPES",
    "BERKA_FEATURES",
    "BERKA_MIN_OBSERVED_MONTHS",
    "BERKA_NULLABLE_COLUMNS",
    "BERKA_PROTECTED",
    "BERKA_STATUS_DATE",
    "BERKA_TABLES",
    "BERKA_TARGET",
    "BERKA_TIME_COLUMN",
    "COMPLETE_HISTORY_FILE",
    "COMPLETE_HISTORY_TABLE",
    "build_berka_frame",
    "coerce_berka_tables",
    "complete_history_file_beside",
    "month_ranges",
    "outcome_observed",
    "read_berka_files",
    "read_complete_history_loan_ids",
    "read_complete_history_loans",
    "read_trans_prefix",
    "trans_coverage_gaps",
]

log = logging.getLogger(__name__)

BERKA_TABLES: Final[tuple[str, ...]] = (
    "account",
    "client",
    "disp",
    "district",
    "order",
    "card",
    "loan",
    "trans",
)

# Logical type of every decoded column, in table column order (the CTU ``financial`` schema;
# ``client.birth_number`` is kept in addition). Meaning, for a loader creating typed tables:
#   "int"      whole number (64-bit is enough), e.g. BIGINT / INT
#   "decimal"  money in CZK with 2 decimals, e.g. DECIMAL(15,2); held as float64 in pandas
#   "float"    non-money real number (ratios, rates), e.g. DOUBLE
#   "date"     calendar date without time, e.g. DATE; held as datetime64[ns] at midnight
#   "datetime" date and time (no current column uses it)
#   "string"   short text code or name, e.g. VARCHAR(32)
BERKA_COLUMN_TYPES: Final[dict[str, dict[str, str]]] = {
    "account": {"account_id": "int", "district_id": "int", "frequency": "string", "date": "date"},
    "client": {
        "client_id": "int",
        "gender": "string",
        "birth_date": "date",
        "district_id": "int",
        "birth_number": "string",
    },
    "disp": {"disp_id": "int", "client_id": "int", "account_id": "int", "type": "string"},
    "district": {
        "district_id": "int",  # A1
        "A2": "string",  # district name
        "A3": "string",  # region
        "A4": "int",  # no. of inhabitants
        "A5": "int",  # no. of municipalities with < 499 inhabitants
        "A6": "int",  # ... 500-1999
        "A7": "int",  # ... 2000-9999
        "A8": "int",  # ... > 10000
        "A9": "int",  # no. of cities
        "A10": "float",  # ratio of urban inhabitants (%)
        "A11": "int",  # average salary (CZK)
        "A12": "float",  # unemployment rate '95 (%)
        "A13": "float",  # unemployment rate '96 (%)
        "A14": "int",  # no. of entrepreneurs per 1000 inhabitants
        "A15": "int",  # no. of committed crimes '95
        "A16": "int",  # no. of committed crimes '96
    },
    "order": {
        "order_id": "int",
        "account_id": "int",
        "bank_to": "string",
        "account_to": "int",
        "amount": "decimal",
        "k_symbol": "string",
    },
    "card": {"card_id": "int", "disp_id": "int", "type": "string", "issued": "date"},
    "loan": {
        "loan_id": "int",
        "account_id": "int",
        "date": "date",
        "amount": "decimal",
        "duration": "int",
        "payments": "decimal",
        "status": "string",
    },
    "trans": {
        "trans_id": "int",
        "account_id": "int",
        "date": "date",
        "type": "string",
        "operation": "string",
        "amount": "decimal",
        "balance": "decimal",
        "k_symbol": "string",
        "bank": "string",
        "account": "int",
    },
}

# Columns that may be missing (NULL); every other column must be present in every row.
# Missing ints use pandas' nullable "Int64", other columns NaN / NaT.
BERKA_NULLABLE_COLUMNS: Final[dict[str, frozenset[str]]] = {
    "account": frozenset(),
    "client": frozenset(),
    "disp": frozenset(),
    "district": frozenset({"A12", "A15"}),
    "order": frozenset({"k_symbol"}),
    "card": frozenset(),
    "loan": frozenset(),
    "trans": frozenset({"operation", "k_symbol", "bank", "account"}),
}

# The list of loans whose whole pre-loan history a partial trans table holds: its file name (beside
# the transactions file) and its table (loan_id, history_source) in MariaDB and in the export.
COMPLETE_HISTORY_FILE: Final = "complete_history_loans.csv"
COMPLETE_HISTORY_TABLE: Final = "complete_history_loans"
COMPLETE_HISTORY_COLUMNS: Final[tuple[str, ...]] = ("loan_id", "history_source")

# Header of each original .asc file, and the decoded name where it differs.
_RAW_COLUMNS: Final[dict[str, tuple[str, ...]]] = {
    "account": ("account_id", "district_id", "frequency", "date"),
    "client": ("client_id", "birth_number", "district_id"),
    "disp": ("disp_id", "client_id", "account_id", "type"),
    "district": tuple(f"A{i}" for i in range(1, 17)),
    "order": ("order_id", "account_id", "bank_to", "account_to", "amount", "k_symbol"),
    "card": ("card_id", "disp_id", "type", "issued"),
    "loan": ("loan_id", "account_id", "date", "amount", "duration", "payments", "status"),
    "trans": (
        "trans_id",
        "account_id",
        "date",
        "type",
        "operation",
        "amount",
        "balance",
        "k_symbol",
        "bank",
        "account",
    ),
}
_RENAMES: Final[dict[str, dict[str, str]]] = {"district": {"A1": "district_id"}}

BERKA_TARGET: Final = "defaulted"
BERKA_TIME_COLUMN: Final = "loan_date"
BERKA_PROTECTED: Final[tuple[str, ...]] = ("owner_gender", "owner_age_band")

# loan.status: A finished OK, B finished unpaid, C running OK, D running in debt.
_DEFAULT_BY_STATUS: Final[dict[str, int]] = {"A": 0, "B": 1, "C": 0, "D": 1}
# loan.status describes each loan at the end of the data set (its last transactions are dated
# 1998-12-31). A running loan's "C" only says it has not gone into debt yet: for loans granted in
# the last 12 months of the data that is weeks to months of repayment (4 of 158 are B/D, 2.5%,
# against 72 of 524, 13.7%, for loans observed longer), so their 0 is not a "repaid" label.
BERKA_STATUS_DATE: Final = pd.Timestamp("1998-12-31")
BERKA_MIN_OBSERVED_MONTHS: Final = 12

_FREQUENCY_LABELS: Final[dict[str, str]] = {
    "POPLATEK MESICNE": "monthly",
    "POPLATEK TYDNE": "weekly",
    "POPLATEK PO OBRATU": "after_transaction",
}
_CARD_TYPES: Final[tuple[str, ...]] = ("none", "junior", "classic", "gold")  # by increasing rank
_AGE_BANDS: Final[tuple[tuple[int, str], ...]] = (
    (25, "<25"),
    (35, "25-34"),
    (45, "35-44"),
    (55, "45-54"),
    (1000, "55+"),
)
_WINDOWS_DAYS: Final[tuple[int, ...]] = (90, 180, 365)
_DAYS_PER_MONTH: Final = 365.25 / 12
_CREDIT_TYPES: Final = frozenset({"PRIJEM"})  # credit
_DEBIT_TYPES: Final = frozenset({"VYDAJ", "VYBER"})  # withdrawal, withdrawal in cash
_CASH_WITHDRAWAL_OPERATION: Final = "VYBER"
_SANCTION_K_SYMBOL: Final = "SANKC. UROK"  # sanction interest for a negative balance
_ORDER_KINDS: Final[dict[str, str]] = {"SIPO": "household", "POJISTNE": "insurance", "LEASING": "leasing"}


def _feature(type_: str, unit: str | None, description: str, reason: str) -> dict[str, object]:
    return {"type": type_, "unit": unit, "description": description, "reason": reason}


def _window_features() -> dict[str, dict[str, object]]:
    out: dict[str, dict[str, object]] = {}
    for days in _WINDOWS_DAYS:
        out[f"credit_sum_{days}d"] = _feature(
            "number",
            "CZK",
            f"Sum of credits (incoming amounts) in the {days} days before the loan date.",
            f"Low incoming money in the {days} days before the loan",
        )
    for days in _WINDOWS_DAYS:
        out[f"debit_sum_{days}d"] = _feature(
            "number",
            "CZK",
            f"Sum of debits (withdrawals, transfers out) in the {days} days before the loan date.",
            f"High outgoing money in the {days} days before the loan",
        )
    return out


# Every feature column of build_berka_frame, in column order. "type": number (float64, may be NaN
# where undefined, e.g. no transaction before the loan), integer (int64), boolean (bool),
# category (text label; "categories" lists the values). "reason" is the text shown when the
# feature pushes the risk up.
BERKA_FEATURES: Final[dict[str, dict[str, object]]] = {
    # --- loan terms ---
    "loan_amount": _feature("number", "CZK", "Amount of the loan.", "Large loan amount"),
    "loan_duration_months": _feature(
        "integer", "months", "Duration of the loan (12, 24, 36, 48 or 60 months).", "Long loan duration"
    ),
    "loan_payment": _feature("number", "CZK/month", "Monthly loan payment.", "High monthly payment"),
    "payment_to_income_ratio": _feature(
        "number",
        None,
        "Monthly payment divided by the average monthly credits in the 365 days before the loan "
        "(months counted from the first transaction if the account is younger, at least one month). "
        "NaN when there were no credits.",
        "Monthly payment is high compared with the money coming into the account",
    ),
    "payment_to_district_salary_ratio": _feature(
        "number",
        None,
        "Monthly payment divided by the average salary of the account's district.",
        "Monthly payment is high compared with salaries in the district",
    ),
    # --- account ---
    "account_age_days": _feature(
        "integer", "days", "Days from the account's opening to the loan date.", "Recently opened account"
    ),
    "account_frequency": {
        **_feature(
            "category",
            None,
            "Frequency of statements of the account (account.frequency: POPLATEK MESICNE = monthly, "
            "POPLATEK TYDNE = weekly, POPLATEK PO OBRATU = after_transaction).",
            "Statement frequency associated with higher risk",
        ),
        "categories": list(_FREQUENCY_LABELS.values()),
    },
    "disponent_count": _feature(
        "integer",
        "persons",
        "Number of disponents (users other than the owner) of the account. disp has no date: taken "
        "as known at the loan date.",
        "Number of people allowed to use the account",
    ),
    "has_card": _feature(
        "boolean",
        None,
        "A credit card of the account (any disposition) was issued strictly before the loan date.",
        "No credit card before the loan",
    ),
    "card_type": {
        **_feature(
            "category",
            None,
            "Highest card type issued on the account strictly before the loan date "
            "(none < junior < classic < gold).",
            "Card type held before the loan",
        ),
        "categories": list(_CARD_TYPES),
    },
    # --- transactions before the loan date ---
    "trans_count": _feature(
        "integer", "transactions", "Number of transactions before the loan date.", "Few transactions"
    ),
    "balance_last": _feature(
        "number",
        "CZK",
        "Balance at the end of the last day with a transaction before the loan date.",
        "Low balance just before the loan",
    ),
    "balance_mean": _feature(
        "number",
        "CZK",
        "Average daily balance (time-weighted end-of-day balance) from the first transaction to the "
        "day before the loan.",
        "Low average balance before the loan",
    ),
    "balance_mean_90d": _feature(
        "number",
        "CZK",
        "Average daily balance in the 90 days before the loan date.",
        "Low average balance in the 90 days before the loan",
    ),
    "balance_mean_365d": _feature(
        "number",
        "CZK",
        "Average daily balance in the 365 days before the loan date.",
        "Low average balance in the year before the loan",
    ),
    "balance_min": _feature(
        "number",
        "CZK",
        "Lowest end-of-day balance before the loan date.",
        "Very low lowest balance before the loan",
    ),
    "balance_min_365d": _feature(
        "number",
        "CZK",
        "Lowest end-of-day balance in the 365 days before the loan date.",
        "Very low lowest balance in the year before the loan",
    ),
    **_window_features(),
    "avg_monthly_credit_365d": _feature(
        "number",
        "CZK/month",
        "Average monthly credits in the 365 days before the loan (credits divided by the months "
        "covered by the account's history in that window, at least one month).",
        "Low monthly income into the account",
    ),
    "negative_balance_days": _feature(
        "integer",
        "days",
        "Days before the loan date that ended with a negative balance.",
        "Days with a negative balance before the loan",
    ),
    "negative_balance_trans_count": _feature(
        "integer",
        "transactions",
        "Transactions before the loan date that left a negative balance.",
        "Transactions leaving the account negative before the loan",
    ),
    "sanction_count": _feature(
        "integer",
        "transactions",
        'Sanction-interest charges for a negative balance (k_symbol "SANKC. UROK") before the loan date.',
        "Sanction interest charged for a negative balance",
    ),
    "cash_withdrawal_share": _feature(
        "number",
        None,
        "Share of debited money (before the loan date) withdrawn in cash (operation VYBER). NaN "
        "when there was no debit.",
        "Large share of money withdrawn in cash",
    ),
    # --- standing orders (dated by their first payment, see module docstring) ---
    "standing_order_count": _feature(
        "integer",
        "orders",
        "Standing orders of the account with a payment to their counterparty before the loan date "
        "(order has no date: an order is known from its first observed payment).",
        "Number of standing orders",
    ),
    "standing_order_amount": _feature(
        "number",
        "CZK",
        "Total amount of those standing orders (one payment each).",
        "High fixed outgoing payments",
    ),
    **{
        f"standing_order_{kind}_amount": _feature(
            "number",
            "CZK",
            f'Amount of those standing orders with k_symbol "{code}" ({kind}).',
            f"High {kind} payments",
        )
        for code, kind in _ORDER_KINDS.items()
    },
    # --- district of the account ---
    "district_avg_salary": _feature(
        "number",
        "CZK/month",
        "Average salary in the account's district (A11).",
        "Low salaries in the district",
    ),
    "district_unemployment_rate": _feature(
        "number",
        "%",
        "Unemployment rate of the account's district: 1996 (A13) for loans from 1997 on, else 1995 "
        "(A12, falling back to A13 where missing).",
        "High unemployment in the district",
    ),
    "district_entrepreneurs_per_1000": _feature(
        "number",
        "per 1000 inhabitants",
        "Entrepreneurs per 1000 inhabitants in the account's district (A14).",
        "Few entrepreneurs in the district",
    ),
    "district_crimes_per_1000": _feature(
        "number",
        "per 1000 inhabitants",
        "Committed crimes per 1000 inhabitants in the account's district: 1996 (A16) for loans from "
        "1997 on, else 1995 (A15, falling back to A16 where missing); inhabitants A4.",
        "High crime rate in the district",
    ),
    "district_urban_ratio": _feature(
        "number", "%", "Share of urban inhabitants in the account's district (A10).", "District urbanisation"
    ),
}

_OUTPUT_COLUMNS: Final[tuple[str, ...]] = (
    "loan_id",
    BERKA_TIME_COLUMN,
    *BERKA_FEATURES,
    BERKA_TARGET,
    "owner_gender",
    "owner_age_years",
    "owner_age_band",
)


# ---------------------------------------------------------------------------------------------
# Reading and decoding
# ---------------------------------------------------------------------------------------------


def read_berka_files(
    folder: Path, trans_file: Path | None = None, *, truncated_trans: bool = False
) -> dict[str, pd.DataFrame]:
    """Read the eight PKDD'99 ``.asc`` files and decode them to the CTU ``financial`` form.

    ``folder`` holds ``account.asc``, ``client.asc``, ... ; ``trans`` is read from ``trans_file``
    when given, else from ``folder / "trans.asc"``. Returns ``{table name: frame}`` for every name
    in :data:`BERKA_TABLES`, with the columns and dtypes of :data:`BERKA_COLUMN_TYPES`.

    A file whose last line has no line end is accepted when that line is a complete row (the
    right number of fields, quotes closed); otherwise it is taken as cut off mid-line and a
    ``ValueError`` names the file. ``truncated_trans=True`` declares the transactions file a
    possibly cut-off prefix of the original: it is read with :func:`read_trans_prefix`, which keeps
    only the rows whose line end is in the file and logs a warning when it drops a last line. The
    other seven tables are always read whole.
    """
    folder = Path(folder)
    tables: dict[str, pd.DataFrame] = {}
    for name in BERKA_TABLES:
        path = Path(trans_file) if name == "trans" and trans_file is not None else folder / f"{name}.asc"
        if not path.is_file():
            raise FileNotFoundError(f"PKDD'99 table {name!r} not found at {path}")
        if name == "trans" and truncated_trans:
            tables[name], _ = read_trans_prefix(path)
        else:
            tables[name] = _decode_table(name, _read_asc(path, name)[0])
    return tables


def read_trans_prefix(path: Path) -> tuple[pd.DataFrame, int]:
    """Read a ``trans.asc`` that may be cut off mid-line: (decoded frame, dropped trailing bytes).

    Only rows whose line end (CRLF in the original files; a bare LF also counts) is in the file
    are kept. Bytes after the last line end are an incomplete row: they are dropped, reported in
    the second value (0 when the file ends with a line end) and logged as a warning. They are
    dropped even when they happen to form a row with every field, since a cut can shorten the last
    field (``12345678`` read as ``1234``) without any visible sign. So reading a complete file this
    way gives the same frame as :func:`read_berka_files`, unless that file lacks its final line end.
    """
    path = Path(path)
    raw, dropped = _read_asc(path, "trans", drop_incomplete_last_line=True)
    if dropped:
        log.warning(
            "%s: dropped the incomplete last line (%d bytes without a line end: %r); kept %d complete rows",
            path,
            len(dropped),
            _preview(dropped),
            len(raw),
        )
    return _decode_table("trans", raw), len(dropped)


def read_complete_history_loan_ids(path: Path) -> set[int]:
    """Loan ids listed in ``complete_history_loans.csv`` (column ``loan_id``)."""
    return set(read_complete_history_loans(path)["loan_id"].tolist())


def complete_history_file_beside(trans_file: Path) -> Path | None:
    """The ``complete_history_loans.csv`` in the transactions file's folder, if there is one."""
    candidate = Path(trans_file).parent / COMPLETE_HISTORY_FILE
    return candidate if candidate.is_file() else None


def read_complete_history_loans(path: Path, loan: pd.DataFrame | None = None) -> pd.DataFrame:
    """The list of loans whose whole pre-loan history the transactions hold: ``loan_id``, ``history_source``.

    The file is a CSV with a ``loan_id`` column (``history_source``, ``account_id`` and ``loan_date``
    as YYMMDD are optional). Refused with a ``ValueError`` naming the file (and the line): a
    missing or non-integer loan id, a loan listed twice, a list without loans. With ``loan`` (the
    decoded loan table) every listed loan must be in it, with the same ``account_id`` and date
    where the list gives them, so a list of another version of the data is not taken for this one.
    Rows are sorted by ``loan_id``.
    """
    path = Path(path)
    loan_ids: list[int] = []
    sources: list[str | None] = []
    accounts: dict[int, str] = {}
    dates: dict[int, str] = {}
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or "loan_id" not in reader.fieldnames:
            raise ValueError(f"{path}: no 'loan_id' column (header {reader.fieldnames})")
        for row in reader:
            line = reader.line_num
            text = (row.get("loan_id") or "").strip()
            if not (text.isascii() and text.isdigit()):
                raise ValueError(f"{path}, line {line}: loan_id {text!r} is not a loan id (a whole number)")
            loan_id = int(text)
            loan_ids.append(loan_id)
            source = (row.get("history_source") or "").strip()
            sources.append(source or None)
            if (row.get("account_id") or "").strip():
                accounts[loan_id] = str(row["account_id"]).strip()
            if (row.get("loan_date") or "").strip():
                dates[loan_id] = str(row["loan_date"]).strip()
    if not loan_ids:
        raise ValueError(f"{path}: lists no loans")
    listed = pd.Series(loan_ids, dtype="int64")
    repeated = sorted(set(listed[listed.duplicated()].tolist()))
    if repeated:
        raise ValueError(f"{path}: loans listed more than once: {repeated[:10]}")
    if loan is not None:
        _check_list_against_loans(path, listed, accounts, dates, loan)
    frame = pd.DataFrame(
        {"loan_id": listed, "history_source": _text_series(pd.Series(sources, dtype=object))}
    )
    return frame.sort_values("loan_id", kind="stable").reset_index(drop=True)


def _check_list_against_loans(
    path: Path, listed: pd.Series, accounts: Mapping[int, str], dates: Mapping[int, str], loan: pd.DataFrame
) -> None:
    known = coerce_berka_tables({"loan": loan})["loan"]
    account_of = dict(zip(known["loan_id"].tolist(), known["account_id"].tolist(), strict=True))
    date_of = dict(zip(known["loan_id"].tolist(), known["date"].dt.strftime("%y%m%d").tolist(), strict=True))
    unknown = sorted(set(listed.tolist()) - set(account_of))
    if unknown:
        raise ValueError(
            f"{path}: lists loans the loan table does not hold: {unknown[:10]} "
            f"({len(unknown)} of {len(listed)}); is it the list of another version of the data?"
        )
    for loan_id, account in accounts.items():
        if account != str(account_of[loan_id]):
            raise ValueError(
                f"{path}: loan {loan_id} is listed with account {account}, the loan table has "
                f"account {account_of[loan_id]}"
            )
    for loan_id, yymmdd in dates.items():
        if yymmdd != date_of[loan_id]:
            raise ValueError(
                f"{path}: loan {loan_id} is listed with date {yymmdd} (YYMMDD), the loan table has "
                f"{date_of[loan_id]}"
            )


def trans_coverage_gaps(tables: Mapping[str, pd.DataFrame]) -> list[str]:
    """Months (``YYYY-MM``) of loan history in which the ``trans`` table holds no transaction at all.

    The history needed runs from the first opening of an account that has a loan to the day
    before the last loan date. The original table has thousands of transactions in every month
    of it; a month without any marks a partial table (a prefix, or pieces put together), in which
    some loans' pre-loan histories are incomplete. An empty list proves nothing more than that.
    Uses ``loan`` (``account_id``, ``date``), ``account`` (``account_id``, ``date``) and ``trans``
    (``date``).
    """
    loan, account, trans = tables["loan"], tables["account"], tables["trans"]
    if len(loan) == 0:
        return []
    opened = pd.to_datetime(account.loc[account["account_id"].isin(loan["account_id"]), "date"])
    last_day = pd.to_datetime(loan["date"]).max() - pd.Timedelta(days=1)
    first_day = opened.min() if len(opened) else pd.to_datetime(loan["date"]).min()
    if pd.isna(first_day) or first_day > last_day:
        return []
    needed = pd.period_range(first_day, last_day, freq="M")
    held = set(pd.to_datetime(trans["date"]).dt.to_period("M").dropna())
    return [str(month) for month in needed if month not in held]


def month_ranges(months: Sequence[str]) -> str:
    """``["1994-04", "1994-05", "1995-01"]`` -> ``"1994-04..1994-05, 1995-01"``."""
    periods = [pd.Period(month, freq="M") for month in months]
    ranges: list[str] = []
    start = previous = None
    for period in periods:
        if previous is not None and period == previous + 1:
            previous = period
            continue
        if start is not None and previous is not None:
            ranges.append(str(start) if start == previous else f"{start}..{previous}")
        start = previous = period
    if start is not None and previous is not None:
        ranges.append(str(start) if start == previous else f"{start}..{previous}")
    return ", ".join(ranges)


def _read_asc(
    path: Path, name: str, *, drop_incomplete_last_line: bool = False
) -> tuple[pd.DataFrame, bytes]:
    """The file's rows as text, and the bytes dropped after its last line end (only when asked)."""
    expected = _RAW_COLUMNS[name]
    source: Path | io.BytesIO = path
    tail = _unterminated_tail(path)
    dropped = b""
    if tail:
        size = path.stat().st_size
        if drop_incomplete_last_line:
            if len(tail) == size:
                raise ValueError(f"{path}: no line end at all, not even after the header")
            with path.open("rb") as handle:
                source = io.BytesIO(handle.read(size - len(tail)))
            dropped = tail
        elif not _is_complete_row(tail, len(expected)):
            hint = (
                " To read the complete rows before it, pass truncated_trans=True "
                "(python -m training.dataload load ... --truncated-trans)."
                if name == "trans"
                else ""
            )
            raise ValueError(
                f"{path}: the file looks cut off mid-line: its last line has no line end and is not a "
                f"complete {name} row of {len(expected)} fields: {_preview(tail)!r}.{hint}"
            )
    # Everything as text first: the decoding below is explicit per column. The C parser accepts
    # CRLF line ends; quotes are removed by the CSV reader.
    raw = pd.read_csv(
        source,
        sep=";",
        quotechar='"',
        dtype=str,
        keep_default_na=False,
        na_filter=False,
        encoding="utf-8",
    )
    if tuple(raw.columns) != expected:
        raise ValueError(
            f"{path}: header {list(raw.columns)} is not the PKDD'99 {name} header {list(expected)}"
        )
    return raw, dropped


_TAIL_BLOCK: Final = 64 * 1024


def _unterminated_tail(path: Path) -> bytes:
    """The bytes after the file's last line feed: empty when the file ends with a line end."""
    tail = b""
    with path.open("rb") as handle:
        position = handle.seek(0, os.SEEK_END)
        while position > 0:
            start = max(0, position - _TAIL_BLOCK)
            handle.seek(start)
            block = handle.read(position - start)
            cut = block.rfind(b"\n")
            if cut >= 0:
                return block[cut + 1 :] + tail
            tail = block + tail
            position = start
    return tail


def _is_complete_row(line: bytes, fields: int) -> bool:
    """Whether ``line`` (no line feed) is one ``;``-separated row of ``fields`` fields with closed quotes."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:  # cut inside a multi-byte character
        return False
    try:
        rows = list(csv.reader(io.StringIO(text, newline=""), delimiter=";", quotechar='"', strict=True))
    except csv.Error:  # e.g. end of data inside a quoted field
        return False
    return len(rows) == 1 and len(rows[0]) == fields


def _preview(data: bytes, limit: int = 80) -> str:
    text = data.decode("utf-8", errors="replace")
    return text if len(text) <= limit else text[:limit] + "..."


def _decode_table(name: str, raw: pd.DataFrame) -> pd.DataFrame:
    frame = raw.rename(columns=_RENAMES.get(name, {}))
    if name == "card":
        frame["issued"] = _strip_midnight(frame["issued"])
    if name == "client":
        birth_number = _clean_text(frame["birth_number"])
        gender, birth_date = _decode_birth_number(birth_number)
        frame = frame.assign(gender=gender, birth_date=birth_date)
    return _coerce_table(name, frame, yymmdd=True)


def _strip_midnight(issued: pd.Series) -> pd.Series:
    text = issued.astype("string").str.strip()
    ok = text.str.fullmatch(r"\d{6}( 00:00:00)?").fillna(False)
    if not bool(ok.all()):
        bad = text[~ok].head(3).tolist()
        raise ValueError(f"card.issued: expected 'YYMMDD 00:00:00', got {bad}")
    return text.str.slice(0, 6)


def _decode_birth_number(birth_number: pd.Series) -> tuple[pd.Series, pd.Series]:
    """``YYMMDD`` for men, ``YY(MM+50)DD`` for women -> (gender 'M'/'F', birth date 19YY-MM-DD)."""
    ok = birth_number.str.fullmatch(r"\d{6}").fillna(False)
    if not bool(ok.all()):
        raise ValueError(f"client.birth_number: not YYMMDD: {birth_number[~ok].head(3).tolist()}")
    number = birth_number.astype("int64")
    month_code = number // 100 % 100
    female = month_code > 50
    gender = pd.Series(np.where(female, "F", "M"), index=birth_number.index)
    corrected = number - np.where(female, 5000, 0)
    return _text_series(gender), _yymmdd_to_date(pd.Series(corrected, index=birth_number.index), "client")


def _yymmdd_to_date(number: pd.Series, where: str) -> pd.Series:
    """YYMMDD integers (all dates of the data set are 19YY) -> datetime64[ns]."""
    parts = pd.DataFrame(
        {"year": 1900 + number // 10000, "month": number // 100 % 100, "day": number % 100},
        index=number.index,
    )
    try:
        return pd.to_datetime(parts).astype("datetime64[ns]")
    except (ValueError, OverflowError) as error:
        raise ValueError(f"{where}: invalid YYMMDD date: {error}") from error


# ---------------------------------------------------------------------------------------------
# Canonical dtypes (also for the same tables read back from MariaDB or Parquet)
# ---------------------------------------------------------------------------------------------


def coerce_berka_tables(tables: Mapping[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """Bring Berka tables from any source (decoded files, MariaDB, Parquet export) to the canonical dtypes.

    Known columns (:data:`BERKA_COLUMN_TYPES`) are converted: ids/ints to ``int64`` (``Int64``
    where nullable), money/floats to ``float64`` (``decimal.Decimal`` values accepted), dates to
    ``datetime64[ns]`` (``datetime.date`` or ISO strings accepted), text stripped with empty as
    missing. Other columns are kept as they are. ``client`` without ``gender``/``birth_date`` but
    with ``birth_number`` gets them decoded. The input frames are not modified.
    """
    out: dict[str, pd.DataFrame] = {}
    for name, frame in tables.items():
        if name == COMPLETE_HISTORY_TABLE:
            out[name] = _coerce_complete_history(frame)
            continue
        if name not in BERKA_COLUMN_TYPES:
            raise ValueError(
                f"unknown Berka table {name!r}; expected one of {(*BERKA_TABLES, COMPLETE_HISTORY_TABLE)}"
            )
        frame = frame.copy()
        if name == "district" and "A1" in frame.columns and "district_id" not in frame.columns:
            frame = frame.rename(columns={"A1": "district_id"})
        if name == "client" and "birth_number" in frame.columns and "gender" not in frame.columns:
            gender, birth_date = _decode_birth_number(_clean_text(frame["birth_number"]))
            frame = frame.assign(gender=gender, birth_date=birth_date)
        out[name] = _coerce_table(name, frame, yymmdd=False)
    return out


def _coerce_complete_history(frame: pd.DataFrame) -> pd.DataFrame:
    where = COMPLETE_HISTORY_TABLE
    if "loan_id" not in frame.columns:
        raise ValueError(f"{where}: column 'loan_id' missing")
    columns = {"loan_id": _coerce_column(frame["loan_id"], "int", False, f"{where}.loan_id", yymmdd=False)}
    source = (
        frame["history_source"] if "history_source" in frame.columns else pd.Series(None, index=frame.index)
    )
    columns["history_source"] = _clean_text(source)
    return pd.DataFrame(columns, index=frame.index).reset_index(drop=True)


def _coerce_table(name: str, frame: pd.DataFrame, *, yymmdd: bool) -> pd.DataFrame:
    types = BERKA_COLUMN_TYPES[name]
    nullable = BERKA_NULLABLE_COLUMNS[name]
    columns: dict[str, pd.Series] = {}
    for column, logical in types.items():
        if column not in frame.columns:
            if yymmdd:  # decoding the original files: every column must be there
                raise ValueError(f"{name}: column {column!r} missing")
            continue
        where = f"{name}.{column}"
        columns[column] = _coerce_column(frame[column], logical, column in nullable, where, yymmdd=yymmdd)
    extra = [c for c in frame.columns if c not in types]
    result = pd.DataFrame(columns, index=frame.index)
    if extra:
        result = pd.concat([result, frame[extra]], axis=1)
    return result.reset_index(drop=True)


def _coerce_column(values: pd.Series, logical: str, nullable: bool, where: str, *, yymmdd: bool) -> pd.Series:
    if logical == "string":
        result = _clean_text(values)
    elif logical in ("int", "decimal", "float"):
        if values.dtype == object or pd.api.types.is_string_dtype(values.dtype):
            values = _clean_text(values)
        try:
            numbers = pd.to_numeric(values, errors="raise")
        except (ValueError, TypeError) as error:
            raise ValueError(f"{where}: not numeric: {error}") from error
        numbers = pd.Series(numbers, index=values.index).astype("float64")
        if logical == "int":
            finite = numbers.dropna()
            if not bool((finite == np.round(finite)).all()):
                raise ValueError(f"{where}: non-integer values")
            result = (
                numbers.astype("Int64") if nullable else _require_complete(numbers, where).astype("int64")
            )
        else:
            result = numbers
    elif logical in ("date", "datetime"):
        if pd.api.types.is_datetime64_any_dtype(values.dtype) and not isinstance(
            values.dtype, pd.DatetimeTZDtype
        ):
            result = values.astype("datetime64[ns]")
            if logical == "date":
                result = result.dt.normalize()
        elif yymmdd:
            text = _clean_text(values)
            ok = text.str.fullmatch(r"\d{6}").fillna(False) | text.isna()
            if not bool(ok.all()):
                raise ValueError(f"{where}: not YYMMDD: {text[~ok].head(3).tolist()}")
            result = pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns]")
            present = text.notna()
            if bool(present.any()):
                result[present] = _yymmdd_to_date(text[present].astype("int64"), where)
        else:
            parsed = pd.to_datetime(values, errors="raise")
            if isinstance(parsed.dtype, pd.DatetimeTZDtype):
                parsed = parsed.dt.tz_convert(None)
            result = pd.Series(parsed, index=values.index).astype("datetime64[ns]")
            if logical == "date":
                result = result.dt.normalize()
    else:  # pragma: no cover - guarded by BERKA_COLUMN_TYPES
        raise ValueError(f"{where}: unknown logical type {logical!r}")
    if not nullable:
        _require_complete(result, where)
    return result


def _require_complete(values: pd.Series, where: str) -> pd.Series:
    missing = int(values.isna().sum())
    if missing:
        raise ValueError(f"{where}: {missing} missing values in a NOT NULL column")
    return values


def _clean_text(values: pd.Series) -> pd.Series:
    """Strip; empty, whitespace-only and '?' become missing; pandas' default text dtype."""
    text = values.astype("string").str.strip()
    return _text_series(text.mask(text.isin(["", "?"])))


def _text_series(values: pd.Series) -> pd.Series:
    # object with None for missing, then pandas' default text dtype ("str" in pandas 3, object before).
    as_object = values.astype(object).where(values.notna(), None)
    return as_object.infer_objects()


# ---------------------------------------------------------------------------------------------
# Per-loan frame
# ---------------------------------------------------------------------------------------------

_REQUIRED: Final[dict[str, tuple[str, ...]]] = {
    "loan": ("loan_id", "account_id", "date", "amount", "duration", "payments", "status"),
    "account": ("account_id", "district_id", "frequency", "date"),
    "disp": ("disp_id", "client_id", "account_id", "type"),
    "client": ("client_id", "gender", "birth_date"),
    "district": ("district_id", "A4", "A10", "A11", "A12", "A13", "A14", "A15", "A16"),
    "card": ("disp_id", "type", "issued"),
    "order": ("account_id", "bank_to", "account_to", "amount", "k_symbol"),
    "trans": _RAW_COLUMNS["trans"],  # every column of the original trans table is used
}


def build_berka_frame(tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per loan: ids, date, :data:`BERKA_FEATURES`, the target and the protected attributes.

    Columns: ``loan_id``, ``loan_date``, the features in :data:`BERKA_FEATURES` order,
    ``defaulted`` (status B or D -> 1, A or C -> 0), then ``owner_gender`` ('F'/'M'),
    ``owner_age_years`` (whole years at the loan date) and ``owner_age_band`` (ordered category).

    ``tables`` maps the names of :data:`BERKA_TABLES` to decoded frames (from
    :func:`read_berka_files`, or from MariaDB/Parquet; they are coerced first). Features use only
    records dated strictly before each loan's date; see the module docstring for the tables
    without dates. Rows are sorted by ``loan_id``, index reset. When ``tables`` also holds a
    non-empty :data:`COMPLETE_HISTORY_TABLE`, only the loans it lists are kept (a listed loan the
    loan table lacks is an error); an empty one restricts nothing.

    Refused with a ``ValueError``: codes outside PKDD'99's (``loan.status``, ``account.frequency``,
    ``card.type``, ``trans.type``), negative ``trans.amount`` (the type gives the sign), and a loan
    whose account, account district, OWNER disposition or owner's client row is missing.
    """
    missing_tables = [name for name in BERKA_TABLES if name not in tables]
    if missing_tables:
        raise ValueError(f"missing Berka tables: {missing_tables}")
    t = coerce_berka_tables({name: tables[name] for name in BERKA_TABLES})
    listed: set[int] | None = None
    if COMPLETE_HISTORY_TABLE in tables and len(tables[COMPLETE_HISTORY_TABLE]):
        listed = set(
            coerce_berka_tables({COMPLETE_HISTORY_TABLE: tables[COMPLETE_HISTORY_TABLE]})[
                COMPLETE_HISTORY_TABLE
            ]["loan_id"].tolist()
        )
        unknown_listed = sorted(listed - set(t["loan"]["loan_id"].tolist()))
        if unknown_listed:
            raise ValueError(
                f"{COMPLETE_HISTORY_TABLE} lists loans the loan table does not hold: {unknown_listed[:10]}"
            )

    for name, columns in _REQUIRED.items():
        absent = [c for c in columns if c not in t[name].columns]
        if absent:
            raise ValueError(f"{name}: missing columns {absent}")

    loan = t["loan"]
    unknown_status = sorted(set(loan["status"].dropna()) - set(_DEFAULT_BY_STATUS))
    if unknown_status or bool(loan["status"].isna().any()):
        raise ValueError(f"loan.status: unexpected values {unknown_status or ['<missing>']}")
    loans = (
        loan.rename(columns={"date": BERKA_TIME_COLUMN})
        .loc[:, ["loan_id", "account_id", BERKA_TIME_COLUMN, "amount", "duration", "payments", "status"]]
        .sort_values("loan_id", kind="stable")
        .reset_index(drop=True)
    )
    if loans["loan_id"].duplicated().any():
        raise ValueError("loan.loan_id is not unique")

    frame = loans[["loan_id", BERKA_TIME_COLUMN]].copy()
    frame["loan_amount"] = loans["amount"].astype("float64")
    frame["loan_duration_months"] = loans["duration"].astype("int64")
    frame["loan_payment"] = loans["payments"].astype("float64")

    frame = frame.join(_account_features(loans, t["account"], t["district"]))
    frame = frame.join(_disp_card_features(loans, t["disp"], t["card"]))
    _check_transaction_codes(t["trans"])
    pre = _pre_loan_transactions(loans, t["trans"])
    frame = frame.join(_transaction_features(loans, pre))
    frame = frame.join(_order_features(loans, t["order"], pre))

    income = frame["avg_monthly_credit_365d"]
    frame["payment_to_income_ratio"] = (frame["loan_payment"] / income.where(income > 0)).astype("float64")
    salary = frame["district_avg_salary"]
    frame["payment_to_district_salary_ratio"] = (frame["loan_payment"] / salary.where(salary > 0)).astype(
        "float64"
    )

    frame[BERKA_TARGET] = loans["status"].map(_DEFAULT_BY_STATUS).astype("int64")
    frame = frame.join(_owner_attributes(loans, t["disp"], t["client"]))
    if listed is not None:  # the same loans' rows as without the list: the features are per loan
        frame = frame.loc[frame["loan_id"].isin(listed)]
    return frame.loc[:, list(_OUTPUT_COLUMNS)].reset_index(drop=True)


def outcome_observed(loan_dates: pd.Series) -> pd.Series:
    """Whether each loan's status has been observed for at least :data:`BERKA_MIN_OBSERVED_MONTHS`.

    True for loans granted at least that many months before :data:`BERKA_STATUS_DATE` (on or before
    1997-12-31). Every finished loan (A, B) passes: the shortest loans run 12 months. The loans that
    fail are running ones (C, D) whose label would mostly be "not in debt yet"; training drops them
    (``training.datasets.catalog``), D loans among them, so the default rate of the kept loans is
    not inflated by keeping the recent loans that failed fast and dropping the others.
    """
    last_date = BERKA_STATUS_DATE - pd.DateOffset(months=BERKA_MIN_OBSERVED_MONTHS)
    dates = pd.to_datetime(loan_dates)
    if bool(dates.isna().any()):
        raise ValueError(f"{BERKA_TIME_COLUMN}: {int(dates.isna().sum())} loans without a date")
    return dates <= last_date


def _per_loan(loans: pd.DataFrame, values: pd.DataFrame, fill: Mapping[str, float]) -> pd.DataFrame:
    """Align per-loan aggregates (indexed by loan_id) to the row order of ``loans``."""
    aligned = values.reindex(pd.Index(loans["loan_id"], name="loan_id")).reset_index(drop=True)
    for column, value in fill.items():
        aligned[column] = aligned[column].fillna(value)
    return aligned


def _account_features(loans: pd.DataFrame, account: pd.DataFrame, district: pd.DataFrame) -> pd.DataFrame:
    if account["account_id"].duplicated().any():
        raise ValueError("account.account_id is not unique")
    acc = loans[["account_id", BERKA_TIME_COLUMN]].merge(account, on="account_id", how="left", validate="m:1")
    if acc["date"].isna().any():
        raise ValueError("loan.account_id without an account row")
    out = pd.DataFrame(index=loans.index)
    out["account_age_days"] = (acc[BERKA_TIME_COLUMN] - acc["date"]).dt.days.astype("int64")
    unknown = sorted(set(acc["frequency"].dropna()) - set(_FREQUENCY_LABELS))
    if unknown:
        raise ValueError(f"account.frequency: unexpected codes {unknown}")
    out["account_frequency"] = _text_series(acc["frequency"].map(_FREQUENCY_LABELS))

    unknown_districts = sorted(set(acc["district_id"]) - set(district["district_id"]))
    if unknown_districts:  # else every district feature would silently be NaN
        raise ValueError(f"account.district_id without a district row: {unknown_districts[:10]}")
    dist = acc[["district_id", BERKA_TIME_COLUMN]].merge(
        district, on="district_id", how="left", validate="m:1"
    )
    late = dist[BERKA_TIME_COLUMN] >= pd.Timestamp("1997-01-01")  # 1996 statistics known by then
    unemployment = dist["A13"].where(late, dist["A12"].fillna(dist["A13"]))
    crimes = dist["A16"].astype("float64").where(late, dist["A15"].astype("float64").fillna(dist["A16"]))
    inhabitants = dist["A4"].astype("float64")
    out["district_avg_salary"] = dist["A11"].astype("float64")
    out["district_unemployment_rate"] = unemployment.astype("float64")
    out["district_entrepreneurs_per_1000"] = dist["A14"].astype("float64")
    out["district_crimes_per_1000"] = (crimes / inhabitants.where(inhabitants > 0) * 1000).astype("float64")
    out["district_urban_ratio"] = dist["A10"].astype("float64")
    return out


def _disp_card_features(loans: pd.DataFrame, disp: pd.DataFrame, card: pd.DataFrame) -> pd.DataFrame:
    disponents = disp.loc[disp["type"] == "DISPONENT"].groupby("account_id").size()
    out = pd.DataFrame(index=loans.index)
    out["disponent_count"] = loans["account_id"].map(disponents).fillna(0).astype("int64")

    rank = {name: position for position, name in enumerate(_CARD_TYPES)}
    cards = card.merge(disp[["disp_id", "account_id"]], on="disp_id", how="inner")
    cards = cards.merge(loans[["loan_id", "account_id", BERKA_TIME_COLUMN]], on="account_id", how="inner")
    cards = cards.loc[cards["issued"] < cards[BERKA_TIME_COLUMN]]
    unknown = sorted(set(cards["type"].dropna()) - set(rank))
    if unknown:
        raise ValueError(f"card.type: unexpected values {unknown}")
    best = cards.assign(rank=cards["type"].map(rank)).groupby("loan_id")["rank"].max()
    best_rank = loans["loan_id"].map(best).fillna(0).astype("int64")
    out["has_card"] = (best_rank > 0).astype("bool")
    out["card_type"] = _text_series(best_rank.map(dict(enumerate(_CARD_TYPES))))
    return out


def _check_transaction_codes(trans: pd.DataFrame) -> None:
    """PKDD'99 amounts are positive and ``type`` gives the sign: refuse anything else.

    Any other type (e.g. an English re-coding's "credit") would count as neither credit nor debit,
    and a negative amount would turn a debit into a credit in the balances, both silently.
    """
    unknown = sorted(set(trans["type"].dropna()) - _CREDIT_TYPES - _DEBIT_TYPES)
    if unknown or bool(trans["type"].isna().any()):
        known = sorted(_CREDIT_TYPES | _DEBIT_TYPES)
        raise ValueError(
            f"trans.type: unexpected values {unknown or ['<missing>']}; PKDD'99 codes are {known}"
        )
    negative = trans.loc[trans["amount"] < 0, "trans_id"]
    if len(negative):
        raise ValueError(
            f"trans.amount: {len(negative)} negative amounts (e.g. trans_id {negative.head(3).tolist()}); "
            "PKDD'99 amounts are positive and trans.type gives the sign"
        )


def _pre_loan_transactions(loans: pd.DataFrame, trans: pd.DataFrame) -> pd.DataFrame:
    """Each loan's account transactions dated strictly before its date, sorted by (loan, date, trans_id).

    A transaction appears once per loan of its account, so several loans per account work too.
    Only whole days before the loan date are kept, so no feature depends on the booking order on
    the loan day itself.
    """
    columns = ["trans_id", "account_id", "date", "type", "operation", "amount", "balance", "k_symbol", "bank"]
    pre = loans[["loan_id", "account_id", BERKA_TIME_COLUMN]].merge(
        trans[[*columns, "account"]], on="account_id", how="inner"
    )
    pre = pre.loc[pre["date"] < pre[BERKA_TIME_COLUMN]]
    pre = pre.sort_values(["loan_id", "date", "trans_id"], kind="stable").reset_index(drop=True)
    pre["days_before"] = (pre[BERKA_TIME_COLUMN] - pre["date"]).dt.days.astype("int64")
    return pre


def _transaction_features(loans: pd.DataFrame, pre: pd.DataFrame) -> pd.DataFrame:
    amount = pre["amount"].astype("float64")
    is_credit = pre["type"].isin(_CREDIT_TYPES).to_numpy(dtype=bool)
    is_debit = pre["type"].isin(_DEBIT_TYPES).to_numpy(dtype=bool)
    is_cash = is_debit & (pre["operation"] == _CASH_WITHDRAWAL_OPERATION).fillna(False).to_numpy(dtype=bool)
    days_before = pre["days_before"].to_numpy()

    columns: dict[str, object] = {
        "loan_id": pre["loan_id"],
        "one": 1,
        "negative": (pre["balance"] < 0).astype("int64"),
        "sanction": (pre["k_symbol"] == _SANCTION_K_SYMBOL).fillna(False).astype("int64"),
        "debit_all": np.where(is_debit, amount, 0.0),
        "cash_all": np.where(is_cash, amount, 0.0),
    }
    for days in _WINDOWS_DAYS:
        inside = days_before <= days
        columns[f"credit_sum_{days}d"] = np.where(is_credit & inside, amount, 0.0)
        columns[f"debit_sum_{days}d"] = np.where(is_debit & inside, amount, 0.0)
    sums = pd.DataFrame(columns).groupby("loan_id").sum()

    per_trans = pd.DataFrame(index=sums.index)
    per_trans["trans_count"] = sums["one"]
    per_trans["negative_balance_trans_count"] = sums["negative"]
    per_trans["sanction_count"] = sums["sanction"]
    for days in _WINDOWS_DAYS:
        per_trans[f"credit_sum_{days}d"] = sums[f"credit_sum_{days}d"]
        per_trans[f"debit_sum_{days}d"] = sums[f"debit_sum_{days}d"]
    debit_all = sums["debit_all"]
    per_trans["cash_withdrawal_share"] = sums["cash_all"] / debit_all.where(debit_all > 0)

    daily = _daily_balance_features(pre)
    aggregated = per_trans.join(daily)
    covered = aggregated.pop("covered_days_365d")
    months = np.maximum(covered / _DAYS_PER_MONTH, 1.0)
    aggregated["avg_monthly_credit_365d"] = aggregated["credit_sum_365d"] / months

    integer_columns = (
        "trans_count",
        "negative_balance_trans_count",
        "sanction_count",
        "negative_balance_days",
    )
    zero_columns = (
        *integer_columns,
        *(f"{kind}_sum_{d}d" for kind in ("credit", "debit") for d in _WINDOWS_DAYS),
    )
    aligned = _per_loan(loans, aggregated, dict.fromkeys(zero_columns, 0))
    # No transaction before the loan: no income observed.
    aligned["avg_monthly_credit_365d"] = aligned["avg_monthly_credit_365d"].fillna(0.0)
    for column in integer_columns:
        aligned[column] = aligned[column].astype("int64")
    for column in aligned.columns:
        if column not in integer_columns:
            aligned[column] = aligned[column].astype("float64")
    return aligned


def _day_end_balances(pre: pd.DataFrame) -> pd.DataFrame:
    """Balance at the end of each (loan, day) with transactions: columns loan_id, date, loan_date, balance.

    trans_id does not give the booking order within a day (on most days with several
    transactions the highest trans_id is not the last booking), so the day's closing balance is
    found from the balances themselves: each transaction moves the balance from
    ``balance - signed amount`` to ``balance``; chained over the day, every intermediate value
    is reached once and left once, and the closing balance is the one value reached but never
    left. Where that is not unique (a row's balance is some cents off the chain, as on some month
    ends of the original data), the closing balance is the day's balance nearest to the previous
    day-end plus the day's signed amounts, carried from the nearest day resolved exactly; only a
    loan without such a day falls back to the balance of the highest trans_id.
    """
    keys = ["loan_id", "date"]
    amount = pre["amount"].to_numpy(dtype="float64")
    after = pre["balance"].to_numpy(dtype="float64")
    signed = np.where(pre["type"].isin(_CREDIT_TYPES).to_numpy(dtype=bool), amount, -amount)
    after_cents = np.round(after * 100).astype("int64")
    before_cents = np.round((after - signed) * 100).astype("int64")
    grouped = pre.assign(signed_cents=np.round(signed * 100).astype("int64")).groupby(keys, sort=True)
    day_end = grouped.agg(
        balance=("balance", "last"), loan_date=(BERKA_TIME_COLUMN, "first"), net_cents=("signed_cents", "sum")
    ).reset_index()

    moves = pd.DataFrame(
        {
            "loan_id": np.concatenate([pre["loan_id"].to_numpy(), pre["loan_id"].to_numpy()]),
            "date": np.concatenate([pre["date"].to_numpy(), pre["date"].to_numpy()]),
            "cents": np.concatenate([after_cents, before_cents]),
            "count": np.concatenate([np.ones(len(pre), "int64"), -np.ones(len(pre), "int64")]),
        }
    )
    net = moves.groupby([*keys, "cents"], sort=False)["count"].sum()
    open_ends = net[net == 1].reset_index()
    closing = open_ends[open_ends.groupby(keys)["cents"].transform("size") == 1]
    found = day_end[keys].merge(closing[[*keys, "cents"]], on=keys, how="left")["cents"]

    # Unresolved days: previous day-end + the days' amounts, anchored on the nearest resolved day
    # (before it, else after it: both are before the loan date).
    carried = day_end.groupby("loan_id")["net_cents"].cumsum()
    anchor = (found - carried).groupby(day_end["loan_id"]).ffill()
    anchor = anchor.groupby(day_end["loan_id"]).bfill()
    estimate = anchor + carried
    unresolved = found.isna() & estimate.notna()
    if bool(unresolved.any()):
        rows = pd.DataFrame(
            {
                "loan_id": pre["loan_id"],
                "date": pre["date"],
                "trans_id": pre["trans_id"],
                "cents": after_cents,
            }
        )
        wanted = day_end.loc[unresolved, keys].assign(estimate=estimate[unresolved])
        rows = rows.merge(wanted, on=keys, how="inner")
        # Prefer the balances reached but never left; a day without any takes all its balances.
        rows = rows.merge(open_ends[[*keys, "cents"]], on=[*keys, "cents"], how="left", indicator="match")
        rows["open_end"] = rows["match"] == "both"
        rows = rows.loc[rows["open_end"] | ~rows.groupby(keys)["open_end"].transform("any")]
        rows["distance"] = (rows["cents"] - rows["estimate"]).abs()
        nearest = rows.sort_values(
            [*keys, "distance", "trans_id"], ascending=[True, True, True, False], kind="stable"
        ).drop_duplicates(keys)
        snapped = day_end[keys].merge(nearest[[*keys, "cents"]], on=keys, how="left")["cents"]
        found = found.fillna(snapped)
    day_end["balance"] = (found / 100).where(found.notna(), day_end["balance"]).astype("float64")
    return day_end.drop(columns="net_cents")


def _daily_balance_features(pre: pd.DataFrame) -> pd.DataFrame:
    """End-of-day balances held from their day to the next transaction day (or the loan date)."""
    day_end = _day_end_balances(pre)
    next_day = day_end.groupby("loan_id")["date"].shift(-1).fillna(day_end["loan_date"])
    start = day_end["date"]
    held = (next_day - start).dt.days.to_numpy(dtype="float64")
    balance = day_end["balance"].to_numpy(dtype="float64")

    columns: dict[str, object] = {
        "loan_id": day_end["loan_id"],
        "weighted_all": balance * held,
        "held_all": held,
        "negative_balance_days": np.where(balance < 0, held, 0.0),
    }
    for days in (90, 365):
        window_start = day_end["loan_date"] - pd.Timedelta(days=days)
        clipped = (
            (next_day - start.where(start > window_start, window_start))
            .dt.days.clip(lower=0)
            .to_numpy(dtype="float64")
        )
        columns[f"weighted_{days}"] = balance * clipped
        columns[f"held_{days}"] = clipped
        columns[f"min_{days}"] = np.where(clipped > 0, balance, np.inf)
    parts = pd.DataFrame(columns)
    grouped = parts.groupby("loan_id")
    sums = grouped[
        [
            "weighted_all",
            "held_all",
            "negative_balance_days",
            "weighted_90",
            "held_90",
            "weighted_365",
            "held_365",
        ]
    ].sum()

    out = pd.DataFrame(index=sums.index)
    out["balance_last"] = day_end.groupby("loan_id")["balance"].last()
    out["balance_mean"] = sums["weighted_all"] / sums["held_all"]
    out["balance_mean_90d"] = sums["weighted_90"] / sums["held_90"]
    out["balance_mean_365d"] = sums["weighted_365"] / sums["held_365"]
    out["balance_min"] = day_end.groupby("loan_id")["balance"].min()
    out["balance_min_365d"] = grouped["min_365"].min().replace(np.inf, np.nan)
    out["negative_balance_days"] = sums["negative_balance_days"]
    out["covered_days_365d"] = sums["held_365"]
    return out


def _order_features(loans: pd.DataFrame, order: pd.DataFrame, pre: pd.DataFrame) -> pd.DataFrame:
    # Counterparties the account paid before the loan date: the evidence that dates an order.
    # Only debits: money received from the same counterparty says nothing about the order.
    is_payment = pre["type"].isin(_DEBIT_TYPES) & pre["bank"].notna() & pre["account"].notna()
    paid = (
        pre.loc[is_payment, ["loan_id", "bank", "account"]]
        .drop_duplicates()
        .rename(columns={"bank": "bank_to", "account": "account_to"})
    )
    paid["account_to"] = paid["account_to"].astype("int64")
    orders = loans[["loan_id", "account_id"]].merge(
        order[["account_id", "bank_to", "account_to", "amount", "k_symbol"]], on="account_id", how="inner"
    )
    orders["account_to"] = orders["account_to"].astype("int64")
    known = orders.merge(paid, on=["loan_id", "bank_to", "account_to"], how="inner")
    amount = known["amount"].astype("float64")
    columns: dict[str, object] = {
        "loan_id": known["loan_id"],
        "standing_order_count": 1,
        "standing_order_amount": amount,
    }
    for code, kind in _ORDER_KINDS.items():
        columns[f"standing_order_{kind}_amount"] = np.where(known["k_symbol"] == code, amount, 0.0)
    sums = pd.DataFrame(columns).groupby("loan_id").sum()
    names = [
        "standing_order_count",
        "standing_order_amount",
        *(f"standing_order_{k}_amount" for k in _ORDER_KINDS.values()),
    ]
    aligned = _per_loan(loans, sums.reindex(columns=names), dict.fromkeys(names, 0))
    aligned["standing_order_count"] = aligned["standing_order_count"].astype("int64")
    for name in names[1:]:
        aligned[name] = aligned[name].astype("float64")
    return aligned


def _owner_attributes(loans: pd.DataFrame, disp: pd.DataFrame, client: pd.DataFrame) -> pd.DataFrame:
    owners = (
        disp.loc[disp["type"] == "OWNER", ["disp_id", "account_id", "client_id"]]
        .sort_values("disp_id", kind="stable")
        .drop_duplicates("account_id")
    )
    owner = loans[["account_id", BERKA_TIME_COLUMN]].merge(
        owners, on="account_id", how="left", validate="m:1"
    )
    # Only the owner may ask for a loan; without one the protected attributes would be missing.
    no_owner = sorted(set(owner.loc[owner["client_id"].isna(), "account_id"]))
    if no_owner:
        raise ValueError(f"loan accounts without an OWNER disposition (disp): account {no_owner[:10]}")
    owner = owner.merge(
        client[["client_id", "gender", "birth_date"]], on="client_id", how="left", validate="m:1"
    )
    no_client = sorted(set(owner.loc[owner["birth_date"].isna(), "client_id"]))
    if no_client:
        raise ValueError(f"loan account owners (disp.client_id) without a client row: {no_client[:10]}")
    loan_date = owner[BERKA_TIME_COLUMN]
    birth = owner["birth_date"]
    before_birthday = (loan_date.dt.month < birth.dt.month) | (
        (loan_date.dt.month == birth.dt.month) & (loan_date.dt.day < birth.dt.day)
    )
    age = loan_date.dt.year - birth.dt.year - before_birthday.astype("int64")
    out = pd.DataFrame(index=loans.index)
    out["owner_gender"] = _text_series(owner["gender"])
    out["owner_age_years"] = age.astype("int64")  # every loan has an owner with a birth date (checked above)
    labels = [label for _, label in _AGE_BANDS]
    bins = [-np.inf, *(upper for upper, _ in _AGE_BANDS[:-1]), np.inf]
    out["owner_age_band"] = pd.cut(age.astype("float64"), bins=bins, labels=labels, right=False, ordered=True)
    return out
