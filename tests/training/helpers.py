"""Shared by the training tests."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pandas as pd
from sklearn.pipeline import Pipeline

from training.candidates import Candidate
from training.datasets.spec import DatasetSpec


def small_fit(candidate: Candidate, spec: DatasetSpec, x: pd.DataFrame, y: Any) -> Pipeline:
    """The candidate fitted with few trees: for tests about inputs and conversion, not the model."""
    pipeline = candidate.build(spec, len(y), 0)
    if candidate.name == "hist_gradient_boosting":
        pipeline.set_params(model__max_iter=40)
    if candidate.name == "random_forest":
        pipeline.set_params(model__n_estimators=10)
    return pipeline.fit(x, y)


def berka_one_loan_tables(
    trans: pd.DataFrame,
    *,
    loan_date: str,
    account_opened: str = "1995-01-01",
    with_order_and_card: bool = False,
) -> dict[str, pd.DataFrame]:
    """PKDD'99 tables of one district, account, owner and loan (id 7, on account 1), with ``trans``
    as the account's transactions; with ``with_order_and_card``, a standing order (SIPO, 500 to
    AB/123) and a classic card issued 1995-02-01, else neither."""
    district: dict[str, list[object]] = {
        "district_id": [1],
        "A2": ["Town"],
        "A3": ["region"],
        "A4": [100_000],
    }
    district |= {f"A{i}": [1] for i in range(5, 10)}
    district |= {"A10": [50.0], "A11": [10_000], "A12": [3.0], "A13": [4.0], "A14": [120], "A15": [1_000]}
    district |= {"A16": [2_000]}
    order: dict[str, list[object]] = {
        "order_id": [1],
        "account_id": [1],
        "bank_to": ["AB"],
        "account_to": [123],
        "amount": [500.0],
        "k_symbol": ["SIPO"],
    }
    card: dict[str, list[object]] = {
        "card_id": [1],
        "disp_id": [1],
        "type": ["classic"],
        "issued": ["1995-02-01"],
    }
    if not with_order_and_card:
        order = {column: [] for column in order}
        card = {column: [] for column in card}
    return {
        "account": pd.DataFrame(
            {
                "account_id": [1],
                "district_id": [1],
                "frequency": ["POPLATEK MESICNE"],
                "date": [account_opened],
            }
        ),
        "client": pd.DataFrame(
            {"client_id": [1], "gender": ["M"], "birth_date": [dt.date(1960, 1, 1)], "district_id": [1]}
        ),
        "disp": pd.DataFrame({"disp_id": [1], "client_id": [1], "account_id": [1], "type": ["OWNER"]}),
        "district": pd.DataFrame(district),
        "order": pd.DataFrame(order),
        "card": pd.DataFrame(card),
        "loan": pd.DataFrame(
            {
                "loan_id": [7],
                "account_id": [1],
                "date": [loan_date],
                "amount": [12_000],
                "duration": [12],
                "payments": [1000.0],
                "status": ["A"],
            }
        ),
        "trans": trans,
    }
