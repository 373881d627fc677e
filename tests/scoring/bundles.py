"""A small logistic-regression model bundle built by hand (onnx.helper), for runtime and handler tests.

The graph is exactly ``sigmoid(intercept + sum(coef * x))`` over one-hot categories, so tests know the
true coefficient contribution of every feature. The card is a complete, valid :class:`ModelCard`.
The category enters as text (``category_input="string"``, the older bundles) or as its code
(``"int64"``: its position in the card's categories), the two encodings the runtime reads.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from lambdas.scoring.card import ModelCard
from lambdas.scoring.runtime import ScoringModel

MODEL_VERSION = "test-logistic-2026-01-01-abc123"
INTERCEPT = -1.5
# (name, type, minimum, maximum, nullable, coefficient) of the numeric inputs, in graph order.
NUMERIC_FEATURES: tuple[tuple[str, str, float | None, float | None, bool, float], ...] = (
    ("age", "integer", 18.0, 100.0, False, -0.03),
    ("income", "number", 0.0, None, True, -0.00002),
    ("loan_ratio", "number", 0.0, 1.0, False, 4.0),
    ("prior_default", "boolean", None, None, False, 0.8),
)
HOME_CATEGORIES = ("RENT", "OWN", "MORTGAGE")
HOME_COEFFICIENTS = (0.5, -0.4, -0.2)
BASELINE: dict[str, float | str | None] = {
    "age": 30.0,
    "income": 55000.0,
    "loan_ratio": 0.15,
    "prior_default": 0.0,
    "home": "MORTGAGE",
}
THRESHOLD = 0.4
FEATURE_ORDER = ("age", "income", "home", "loan_ratio", "prior_default")
CATEGORY_INPUTS = ("string", "int64")


def coefficient(feature: str, value: object) -> float:
    """The logit term a feature value adds (for categories: the coefficient of that category)."""
    if feature == "home":
        return 0.0 if value == "" else HOME_COEFFICIENTS[HOME_CATEGORIES.index(str(value))]
    if not isinstance(value, int | float):
        raise TypeError(f"{feature} needs a number, got {value!r}")
    (coef,) = [c for name, *_, c in NUMERIC_FEATURES if name == feature]
    return coef * float(value)


def logistic_onnx_bytes(category_input: str = "string") -> bytes:
    nodes = []
    columns = []
    inputs = []
    for name, *_ in NUMERIC_FEATURES:
        inputs.append(helper.make_tensor_value_info(name, TensorProto.DOUBLE, [None, 1]))
        # A missing (NaN) number contributes nothing: replaced by 0 before the linear term.
        nodes.append(helper.make_node("IsNaN", [name], [f"{name}_isnan"]))
        nodes.append(helper.make_node("Where", [f"{name}_isnan", "zero", name], [f"{name}_filled"]))
        columns.append(f"{name}_filled")
    coded = category_input == "int64"
    inputs.append(
        helper.make_tensor_value_info("home", TensorProto.INT64 if coded else TensorProto.STRING, [None, 1])
    )
    # One-hot of the text, or of the code (the position in HOME_CATEGORIES); anything else is all zeros.
    categories = (
        {"cats_int64s": list(range(len(HOME_CATEGORIES)))}
        if coded
        else {"cats_strings": list(HOME_CATEGORIES)}
    )
    nodes.append(
        helper.make_node(
            "OneHotEncoder", ["home"], ["home_onehot_f"], domain="ai.onnx.ml", zeros=1, **categories
        )
    )
    nodes.append(helper.make_node("Cast", ["home_onehot_f"], ["home_onehot_d"], to=TensorProto.DOUBLE))
    nodes.append(helper.make_node("Reshape", ["home_onehot_d", "onehot_shape"], ["home_onehot"]))
    columns.append("home_onehot")
    nodes.append(helper.make_node("Concat", columns, ["design"], axis=1))
    nodes.append(helper.make_node("MatMul", ["design", "weights"], ["linear"]))
    nodes.append(helper.make_node("Add", ["linear", "intercept"], ["logit"]))
    nodes.append(helper.make_node("Sigmoid", ["logit"], ["p_default"]))
    nodes.append(helper.make_node("Sub", ["one", "p_default"], ["p_repaid"]))
    nodes.append(helper.make_node("Concat", ["p_repaid", "p_default"], ["probabilities"], axis=1))
    nodes.append(helper.make_node("Greater", ["p_default", "half"], ["is_default"]))
    nodes.append(helper.make_node("Cast", ["is_default"], ["label_2d"], to=TensorProto.INT64))
    nodes.append(helper.make_node("Reshape", ["label_2d", "flat_shape"], ["label"]))
    weights = np.array([[c] for *_, c in NUMERIC_FEATURES] + [[c] for c in HOME_COEFFICIENTS])
    initializers = [
        numpy_helper.from_array(np.array(0.0), "zero"),
        numpy_helper.from_array(np.array(1.0), "one"),
        numpy_helper.from_array(np.array(0.5), "half"),
        numpy_helper.from_array(np.array([INTERCEPT]), "intercept"),
        numpy_helper.from_array(weights.astype(np.float64), "weights"),
        numpy_helper.from_array(np.array([-1, len(HOME_CATEGORIES)], dtype=np.int64), "onehot_shape"),
        numpy_helper.from_array(np.array([-1], dtype=np.int64), "flat_shape"),
    ]
    graph = helper.make_graph(
        nodes,
        "logistic",
        inputs,
        [
            helper.make_tensor_value_info("label", TensorProto.INT64, [None]),
            helper.make_tensor_value_info("probabilities", TensorProto.DOUBLE, [None, 2]),
        ],
        initializers,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)]
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    serialized: bytes = model.SerializeToString()
    return serialized


def _metrics() -> dict[str, float]:
    return {"roc_auc": 0.8, "pr_auc": 0.5, "ks": 0.4, "brier": 0.15, "log_loss": 0.45}


def _numeric_reference() -> dict[str, object]:
    return {
        "bin_edges": [0.5],
        "proportions": [0.5, 0.5],
        "mean": 0.5,
        "std": 0.2,
        "median": 0.5,
        "null_rate": 0.0,
    }


def logistic_card(
    onnx_bytes: bytes, *, sha256: str | None = None, category_input: str = "string"
) -> ModelCard:
    descriptions = {
        "age": ("Age of the applicant", "years", "Young applicant"),
        "income": ("Yearly income", "USD", "Low income"),
        "loan_ratio": ("Loan amount divided by income", None, "Loan is large relative to income"),
        "prior_default": ("Has defaulted before", None, "Previous default on file"),
        "home": ("Home ownership", None, "Home ownership status"),
    }
    numeric = {name: (kind, low, high, nullable) for name, kind, low, high, nullable, _ in NUMERIC_FEATURES}
    features = []
    for name in FEATURE_ORDER:
        description, unit, reason = descriptions[name]
        if name == "home":
            features.append(
                {
                    "name": name,
                    "type": "category",
                    "description": description,
                    "nullable": False,
                    "categories": list(HOME_CATEGORIES),
                    "reason": reason,
                    "onnx_input": name,
                    "onnx_type": category_input,
                }
            )
        else:
            kind, low, high, nullable = numeric[name]
            features.append(
                {
                    "name": name,
                    "type": kind,
                    "unit": unit,
                    "description": description,
                    "nullable": nullable,
                    "minimum": low,
                    "maximum": high,
                    "reason": reason,
                    "onnx_input": name,
                    "onnx_type": "double",
                }
            )
    cv = {"folds": 5, "repeats": 1, "mean": _metrics(), "std": _metrics()}
    card = {
        "model_name": "test-logistic",
        "model_version": MODEL_VERSION,
        "dataset": "synthetic",
        "description": "Hand-built logistic model for tests",
        "target": "default",
        "positive_class": "1",
        "champion": "logistic",
        "selection_rule": "only candidate",
        "onnx": {
            "sha256": sha256 or hashlib.sha256(onnx_bytes).hexdigest(),
            "opset": {"": 17, "ai.onnx.ml": 3},
            "input_names": list(FEATURE_ORDER),
            "probability_output": "probabilities",
            "label_output": "label",
        },
        "features": features,
        "protected_attributes": [],
        "decision_policy": {
            "threshold": THRESHOLD,
            "method": "fixed for tests",
            "cost_of_approving_defaulter": 5.0,
            "cost_of_declining_good_applicant": 1.0,
            "expected_cost_per_application": 0.5,
            "theoretical_threshold": 1 / 6,
            "chosen_on": "none",
        },
        "candidates": [
            {
                "name": "logistic",
                "description": "logistic",
                "params": {},
                "calibration": "none",
                "calibration_reason": "linear",
                "cv_uncalibrated": cv,
                "cv": cv,
                "fit_seconds": 0.1,
                "status": "champion",
            }
        ],
        "holdout_metrics": _metrics(),
        "holdout_metrics_by_candidate": {"logistic": _metrics()},
        "parity": {
            "max_abs_difference": 0.0,
            "rows_checked": 0,
            "tolerance": 1e-5,
            "passed": True,
            "input_precision": "float64",
        },
        "fairness": [],
        "reference": {
            "features": {
                name: (
                    {
                        "kind": "categorical",
                        "proportions": {"RENT": 0.5, "OWN": 0.2, "MORTGAGE": 0.3},
                        "mode": "MORTGAGE",
                        "null_rate": 0.0,
                    }
                    if name == "home"
                    else {"kind": "numeric", **_numeric_reference()}
                )
                for name in FEATURE_ORDER
            },
            "score": {"kind": "numeric", **_numeric_reference()},
            "reason_baseline": BASELINE,
            "computed_on": "synthetic",
        },
        "data": {
            "source": "synthetic",
            "rows_raw": 0,
            "rows_used": 0,
            "rows_train": 0,
            "rows_holdout": 0,
            "positive_rate": 0.2,
            "sha256": "0" * 64,
            "cleaning": {},
            "holdout": "none",
        },
        "lineage": {
            "git_commit": "test",
            "packages": {},
            "python": "3.12",
            "seed": 0,
            "created_at": "2026-01-01T00:00:00Z",
            "training_seconds": 0.0,
        },
    }
    return ModelCard.model_validate(card)


def write_logistic_bundle(folder: Path, category_input: str = "string") -> Path:
    """Write model.onnx + model_card.json into ``folder`` (created) and return it."""
    folder.mkdir(parents=True, exist_ok=True)
    onnx_bytes = logistic_onnx_bytes(category_input)
    card = logistic_card(onnx_bytes, category_input=category_input)
    (folder / "model.onnx").write_bytes(onnx_bytes)
    (folder / "model_card.json").write_text(card.model_dump_json(indent=2))
    return folder


def good_application() -> dict[str, object]:
    return {"age": 24, "income": 32000.0, "home": "RENT", "loan_ratio": 0.45, "prior_default": True}


def count_onnx_rows(model: ScoringModel, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The rows of every ONNX call ``model`` makes from now on (the list fills as it runs)."""
    calls: list[int] = []
    original = model._session.run

    def counting_run(outputs: list[str], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        calls.append(next(iter(feed.values())).shape[0])
        return original(outputs, feed)  # type: ignore[no-any-return]

    monkeypatch.setattr(model._session, "run", counting_run)
    return calls
