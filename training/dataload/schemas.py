"""MariaDB schemas of the datasets: table definitions with keys and SQL types.

- ``credit_risk``: one table ``applications``, the CSV's columns plus a surrogate primary key
  ``application_id`` (the 1-based row number in the file, so reloading gives the same ids).
- ``jpmc_loans``: one table ``loans`` keyed by the file's ``customer_id``.
- ``berka``: the eight PKDD'99 tables under the CTU "financial" database's names, with its
  primary and foreign keys. Column types come from the Berka reader's ``BERKA_COLUMN_TYPES``
  (money as DECIMAL, dates as DATE, gender and birth_date decoded from birth_number). One
  optional ninth table, ``complete_history_loans`` (``loan_id`` -> ``loan``, ``history_source``):
  the loans whose whole pre-loan history a partial ``trans`` holds, loaded when the transactions
  file comes with that list (``complete_history_loans.csv`` beside it). Training keeps only the
  listed loans when the table is there and not empty; an empty or absent table restricts nothing.

Tables are listed parents first, which is the insert order (deletes go in reverse). An optional
table is created and filled only when the load gives rows for it; a load without it empties the
table if an earlier load left one, so its rows never describe other data than the load's.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

# Logical column kinds shared with the dataset readers, and the MariaDB type each is stored as.
SQL_TYPE_BY_KIND: dict[str, str] = {
    "int": "BIGINT",
    "decimal": "DECIMAL(15,2)",
    "float": "DOUBLE",
    "date": "DATE",
    "datetime": "DATETIME",
    "string": "VARCHAR(255)",
}


@dataclass(frozen=True)
class Column:
    name: str
    sql_type: str
    nullable: bool = True

    @property
    def kind(self) -> str:
        """The logical kind of the SQL type (how Python values are prepared for it)."""
        base = self.sql_type.split("(")[0].strip().upper()
        if base in {"INT", "INTEGER", "BIGINT", "SMALLINT", "TINYINT", "MEDIUMINT"}:
            return "int"
        if base in {"DECIMAL", "NUMERIC"}:
            return "decimal"
        if base in {"DOUBLE", "FLOAT", "REAL"}:
            return "float"
        if base == "DATE":
            return "date"
        if base in {"DATETIME", "TIMESTAMP"}:
            return "datetime"
        return "string"

    @property
    def decimal_scale(self) -> int | None:
        """Digits after the point of a DECIMAL/NUMERIC column (MariaDB's default is 0), else None."""
        if self.kind != "decimal":
            return None
        _, _, arguments = self.sql_type.partition("(")
        parts = arguments.rstrip(") ").split(",")
        return int(parts[1]) if len(parts) == 2 else 0

    @property
    def decimal_precision(self) -> int | None:
        """All digits of a DECIMAL/NUMERIC column (MariaDB's default is 10), else None."""
        if self.kind != "decimal":
            return None
        _, _, arguments = self.sql_type.partition("(")
        first = arguments.rstrip(") ").split(",")[0].strip()
        return int(first) if first else 10


@dataclass(frozen=True)
class ForeignKey:
    column: str
    parent_table: str
    parent_column: str


@dataclass(frozen=True)
class TableSchema:
    name: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...]
    foreign_keys: tuple[ForeignKey, ...] = ()
    optional: bool = False  # a load may leave it out (then it is emptied if it exists)

    @property
    def column_names(self) -> list[str]:
        return [column.name for column in self.columns]

    def create_sql(self, database: str) -> str:
        lines = [
            f"{quote(column.name)} {column.sql_type} {'NULL' if column.nullable else 'NOT NULL'}"
            for column in self.columns
        ]
        lines.append(f"PRIMARY KEY ({', '.join(quote(name) for name in self.primary_key)})")
        lines.extend(
            f"FOREIGN KEY ({quote(key.column)}) REFERENCES {quote(database)}.{quote(key.parent_table)} "
            f"({quote(key.parent_column)})"
            for key in self.foreign_keys
        )
        body = ",\n  ".join(lines)
        return (
            f"CREATE TABLE IF NOT EXISTS {quote(database)}.{quote(self.name)} (\n  {body}\n)"
            " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"
        )


@dataclass(frozen=True)
class DatabaseSchema:
    dataset: str
    default_database: str
    tables: tuple[TableSchema, ...]  # parents first

    def table(self, name: str) -> TableSchema:
        for table in self.tables:
            if table.name == name:
                return table
        raise KeyError(f"dataset {self.dataset} has no table {name!r}")


def quote(identifier: str) -> str:
    """Backtick-quote an identifier (names such as `order`, `date` and `default` are reserved)."""
    if "`" in identifier or "\x00" in identifier or not identifier:
        raise ValueError(f"invalid SQL identifier {identifier!r}")
    return f"`{identifier}`"


CREDIT_RISK = DatabaseSchema(
    dataset="credit_risk",
    default_database="credit_risk",
    tables=(
        TableSchema(
            name="applications",
            columns=(
                Column("application_id", "INT", nullable=False),
                Column("person_age", "INT", nullable=False),
                Column("person_income", "INT", nullable=False),
                Column("person_home_ownership", "VARCHAR(16)", nullable=False),
                Column("person_emp_length", "DECIMAL(5,1)"),
                Column("loan_intent", "VARCHAR(32)", nullable=False),
                Column("loan_grade", "VARCHAR(2)", nullable=False),
                Column("loan_amnt", "INT", nullable=False),
                Column("loan_int_rate", "DECIMAL(5,2)"),
                Column("loan_status", "TINYINT", nullable=False),
                Column("loan_percent_income", "DECIMAL(4,2)", nullable=False),
                Column("cb_person_default_on_file", "VARCHAR(1)", nullable=False),
                Column("cb_person_cred_hist_length", "INT", nullable=False),
            ),
            primary_key=("application_id",),
        ),
    ),
)

# The JPMC amounts carry up to 8 decimals in the file; DECIMAL(16,8) keeps them exactly.
JPMC_LOANS = DatabaseSchema(
    dataset="jpmc_loans",
    default_database="jpmc_loans",
    tables=(
        TableSchema(
            name="loans",
            columns=(
                Column("customer_id", "INT", nullable=False),
                Column("credit_lines_outstanding", "INT", nullable=False),
                Column("loan_amt_outstanding", "DECIMAL(16,8)", nullable=False),
                Column("total_debt_outstanding", "DECIMAL(16,8)", nullable=False),
                Column("income", "DECIMAL(16,8)", nullable=False),
                Column("years_employed", "INT", nullable=False),
                Column("fico_score", "INT", nullable=False),
                Column("default", "TINYINT", nullable=False),
            ),
            primary_key=("customer_id",),
        ),
    ),
)

# Keys of the CTU "financial" database; parents first.
BERKA_KEYS: dict[str, tuple[str, tuple[ForeignKey, ...]]] = {
    "district": ("district_id", ()),
    "account": ("account_id", (ForeignKey("district_id", "district", "district_id"),)),
    "client": ("client_id", (ForeignKey("district_id", "district", "district_id"),)),
    "disp": (
        "disp_id",
        (
            ForeignKey("client_id", "client", "client_id"),
            ForeignKey("account_id", "account", "account_id"),
        ),
    ),
    "card": ("card_id", (ForeignKey("disp_id", "disp", "disp_id"),)),
    "loan": ("loan_id", (ForeignKey("account_id", "account", "account_id"),)),
    "order": ("order_id", (ForeignKey("account_id", "account", "account_id"),)),
    "trans": ("trans_id", (ForeignKey("account_id", "account", "account_id"),)),
}

# Optional: loaded only with a partial trans table that comes with its list (see the module docstring).
BERKA_COMPLETE_HISTORY = TableSchema(
    name="complete_history_loans",
    columns=(Column("loan_id", "BIGINT", nullable=False), Column("history_source", "VARCHAR(255)")),
    primary_key=("loan_id",),
    foreign_keys=(ForeignKey("loan_id", "loan", "loan_id"),),
    optional=True,
)


def berka_schema(
    column_types: Mapping[str, Mapping[str, str]],
    nullable_columns: Mapping[str, Collection[str]] | None = None,
) -> DatabaseSchema:
    """The berka schema from the reader's logical column types (table -> column -> kind).

    ``nullable_columns`` (table -> columns that may be missing) makes every other column NOT NULL;
    without it only the keys are NOT NULL.
    """
    unknown_tables = sorted(set(column_types) - set(BERKA_KEYS))
    if unknown_tables:
        raise ValueError(f"berka column types name unknown tables: {unknown_tables}")
    tables: list[TableSchema] = []
    for table_name, (key_column, foreign_keys) in BERKA_KEYS.items():
        if table_name not in column_types:
            raise ValueError(f"berka column types lack table {table_name!r}")
        kinds = column_types[table_name]
        not_null = {key_column} | {key.column for key in foreign_keys}
        if nullable_columns is not None:
            not_null |= set(kinds) - set(nullable_columns.get(table_name, ()))
        columns: list[Column] = []
        for column_name, kind in kinds.items():
            if kind not in SQL_TYPE_BY_KIND:
                raise ValueError(
                    f"berka column {table_name}.{column_name} has kind {kind!r}; "
                    f"expected one of {sorted(SQL_TYPE_BY_KIND)}"
                )
            columns.append(Column(column_name, SQL_TYPE_BY_KIND[kind], nullable=column_name not in not_null))
        missing_keys = sorted(({key_column} | {key.column for key in foreign_keys}) - set(kinds))
        if missing_keys:
            raise ValueError(f"berka table {table_name} lacks key columns {missing_keys}")
        tables.append(TableSchema(table_name, tuple(columns), (key_column,), foreign_keys))
    tables.append(BERKA_COMPLETE_HISTORY)  # a child of loan: after it
    return DatabaseSchema(dataset="berka", default_database="berka", tables=tuple(tables))
