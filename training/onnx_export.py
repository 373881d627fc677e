"""Convert a fitted sklearn pipeline (preprocessing included) to ONNX in double precision.

Known pitfalls measured with scikit-learn 1.9, skl2onnx 1.20, onnxruntime 1.31, and how this
module avoids them:

- skl2onnx's HistGradientBoosting converter emits a Python ``False`` into an ints attribute
  ("Expected an int, got a boolean"); its classifier output in double precision is a
  ``TreeEnsembleClassifier`` with a double output that onnxruntime rejects; and it ignores native
  categorical splits. Here binary tree ensembles are written as a ``TreeEnsembleRegressor`` with
  double thresholds and leaf values (``*_as_tensor`` attributes), followed by a sigmoid for
  boosting or nothing for averaged forests; categories are ordinal-encoded before the trees.
- float32 inputs move some boosting probabilities by up to 0.03 where a value sits next to a
  split; inputs stay float64 end to end. sklearn forests compare float32-rounded inputs with
  double thresholds, so the forest graph rounds its inputs to float32 first, exactly as sklearn.
- Isotonic calibration converts but disagrees (up to 0.04); calibration here is a sigmoid on the
  logit, appended to the graph (see :func:`append_sigmoid_calibration`).
- Probabilities come out as a plain ``[N, 2]`` tensor (``zipmap`` off), never a list of dicts.
- skl2onnx renames an input whose name holds anything but letters, digits, "_" and "+", or starts
  with a digit ("income.monthly" -> "income_monthly", "a.b" and "a_b" -> "a_b" and "a_b1"); the
  inputs are renamed back to the features' names (:func:`restore_input_names`), so the card, the API
  and the batch use the table's names. Names it keeps are left alone, and so are the graph's bytes.
- Categories enter as int64 codes (their position in the card's ``categories``, -1 when missing),
  not as text: onnxruntime's Python binding converts every string of a text input into a C++ one.
  On the credit_risk champion, one thread, the same rows: 0.8-0.9x the run time on a 60k-row chunk
  in locality order, ~0.95x on 5,000 rows in file order. The graph maps each code back to its
  text first (:func:`encode_category_inputs`), so it stays exact.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
from numpy.typing import NDArray
from onnx import TensorProto, helper, numpy_helper
from skl2onnx import convert_sklearn, update_registered_converter
from skl2onnx.common.data_types import DoubleTensorType, StringTensorType
from sklearn.ensemble import ExtraTreesClassifier, HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from lambdas.scoring.card import NULL_CATEGORY_CODE, FeatureSchema, OnnxElementType, category_code_map
from training.datasets.spec import DatasetSpec
from training.features import MISSING_CATEGORY, DerivedFeatures, category_columns, to_bool_number

OPSET = {"": 17, "ai.onnx.ml": 3}
PROBABILITY_OUTPUT = "probabilities"
LABEL_OUTPUT = "label"
PARITY_TOLERANCE = 1e-5
# A code for a category the model never saw: any code outside -1..k-1 would do. The graph turns
# it into UNSEEN_CATEGORY_TEXT, which no encoder was fitted on, so it behaves as an unseen text.
UNSEEN_CATEGORY_CODE = -2
UNSEEN_CATEGORY_TEXT = "\u0000unseen"
# What skl2onnx makes of a name before numbering it to keep it unique (Topology._generate_unique_name).
_NOT_IN_CONVERTER_NAME = re.compile(r"[^\w+]")


@dataclass(frozen=True)
class _Tree:
    """One binary tree flattened to arrays; leaves have feature -1."""

    feature: NDArray[np.int64]
    threshold: NDArray[np.float64]
    left: NDArray[np.int64]
    right: NDArray[np.int64]
    missing_left: NDArray[np.int64]
    leaf_value: NDArray[np.float64]


def _hgb_trees(model: HistGradientBoostingClassifier) -> list[_Tree]:
    trees = []
    for iteration in model._predictors:
        if len(iteration) != 1:
            raise ValueError("only binary HistGradientBoostingClassifier models are supported")
        nodes = iteration[0].nodes
        if nodes["is_categorical"].any():
            raise ValueError("native categorical splits are not supported; ordinal-encode categories")
        is_leaf = nodes["is_leaf"].astype(bool)
        trees.append(
            _Tree(
                feature=np.where(is_leaf, -1, nodes["feature_idx"]).astype(np.int64),
                threshold=nodes["num_threshold"].astype(np.float64),
                left=nodes["left"].astype(np.int64),
                right=nodes["right"].astype(np.int64),
                missing_left=nodes["missing_go_to_left"].astype(np.int64),
                leaf_value=nodes["value"].astype(np.float64),
            )
        )
    return trees


def _forest_trees(model: RandomForestClassifier | ExtraTreesClassifier) -> list[_Tree]:
    if list(model.classes_) != [0, 1]:
        raise ValueError("only binary 0/1 forests are supported")
    trees = []
    for estimator in model.estimators_:
        tree = estimator.tree_
        values = tree.value[:, 0, :]
        positive_share = values[:, 1] / values.sum(axis=1)
        is_leaf = tree.children_left == -1
        trees.append(
            _Tree(
                feature=np.where(is_leaf, -1, tree.feature).astype(np.int64),
                threshold=tree.threshold.astype(np.float64),
                left=tree.children_left.astype(np.int64),
                right=tree.children_right.astype(np.int64),
                missing_left=tree.missing_go_to_left.astype(np.int64)
                if hasattr(tree, "missing_go_to_left")
                else np.zeros(len(is_leaf), dtype=np.int64),
                leaf_value=positive_share / len(model.estimators_),
            )
        )
    return trees


def _tree_regressor_attributes(trees: list[_Tree], base_value: float) -> dict[str, Any]:
    attrs: dict[str, list[Any]] = {
        k: []
        for k in (
            "nodes_treeids",
            "nodes_nodeids",
            "nodes_featureids",
            "nodes_modes",
            "nodes_truenodeids",
            "nodes_falsenodeids",
            "nodes_missing_value_tracks_true",
            "target_treeids",
            "target_nodeids",
            "target_ids",
        )
    }
    values: list[float] = []
    weights: list[float] = []
    for tree_id, tree in enumerate(trees):
        for node_id in range(len(tree.feature)):
            leaf = tree.feature[node_id] < 0
            attrs["nodes_treeids"].append(tree_id)
            attrs["nodes_nodeids"].append(node_id)
            attrs["nodes_featureids"].append(0 if leaf else int(tree.feature[node_id]))
            attrs["nodes_modes"].append("LEAF" if leaf else "BRANCH_LEQ")
            attrs["nodes_truenodeids"].append(0 if leaf else int(tree.left[node_id]))
            attrs["nodes_falsenodeids"].append(0 if leaf else int(tree.right[node_id]))
            attrs["nodes_missing_value_tracks_true"].append(0 if leaf else int(tree.missing_left[node_id]))
            values.append(0.0 if leaf else float(tree.threshold[node_id]))
            if leaf:
                attrs["target_treeids"].append(tree_id)
                attrs["target_nodeids"].append(node_id)
                attrs["target_ids"].append(0)
                weights.append(float(tree.leaf_value[node_id]))
    result: dict[str, Any] = dict(attrs)
    result["n_targets"] = 1
    result["aggregate_function"] = "SUM"
    result["post_transform"] = "NONE"
    result["nodes_values_as_tensor"] = numpy_helper.from_array(np.asarray(values, dtype=np.float64))
    result["target_weights_as_tensor"] = numpy_helper.from_array(np.asarray(weights, dtype=np.float64))
    result["base_values_as_tensor"] = numpy_helper.from_array(np.asarray([base_value], dtype=np.float64))
    return result


def _emit_binary_tree_classifier(scope: Any, operator: Any, container: Any) -> None:
    model = operator.raw_operator
    name = scope.get_unique_variable_name
    node_name = scope.get_unique_operator_name
    source = operator.inputs[0].full_name
    if isinstance(model, HistGradientBoostingClassifier):
        trees = _hgb_trees(model)
        base = float(np.ravel(model._baseline_prediction)[0])
    else:
        trees = _forest_trees(model)
        base = 0.0
        # sklearn forests round inputs to float32 before comparing with double thresholds.
        rounded = name("float32_input")
        container.add_node("Cast", source, rounded, to=TensorProto.FLOAT, name=node_name("Cast"))
        source = name("rounded_input")
        container.add_node("Cast", rounded, source, to=TensorProto.DOUBLE, name=node_name("Cast"))
    raw = name("tree_sum")
    container.add_node(
        "TreeEnsembleRegressor",
        source,
        raw,
        op_domain="ai.onnx.ml",
        op_version=3,
        name=node_name("TreeEnsembleRegressor"),
        **_tree_regressor_attributes(trees, base),
    )
    # onnxruntime sums in double but hands the result out as float; widen it back.
    raw_double = name("tree_sum_double")
    container.add_node("Cast", raw, raw_double, to=TensorProto.DOUBLE, name=node_name("Cast"))
    positive = name("positive")
    if isinstance(model, HistGradientBoostingClassifier):
        container.add_node("Sigmoid", raw_double, positive, name=node_name("Sigmoid"))
    else:
        container.add_node("Identity", raw_double, positive, name=node_name("Identity"))
    _emit_probabilities_and_label(
        container, name, node_name, positive, operator.outputs[1].full_name, operator.outputs[0].full_name
    )


def _emit_probabilities_and_label(
    container: Any, name: Any, node_name: Any, positive: str, probabilities: str, label: str
) -> None:
    one = name("one")
    container.add_initializer(one, TensorProto.DOUBLE, [1], [1.0])
    negative = name("negative")
    container.add_node("Sub", [one, positive], negative, name=node_name("Sub"))
    container.add_node("Concat", [negative, positive], probabilities, axis=1, name=node_name("Concat"))
    half = name("half")
    container.add_initializer(half, TensorProto.DOUBLE, [1], [0.5])
    above = name("above_half")
    container.add_node("Greater", [positive, half], above, name=node_name("Greater"))
    label_2d = name("label_2d")
    container.add_node("Cast", above, label_2d, to=TensorProto.INT64, name=node_name("Cast"))
    flat = name("flat_shape")
    container.add_initializer(flat, TensorProto.INT64, [1], [-1])
    container.add_node("Reshape", [label_2d, flat], label, name=node_name("Reshape"))


def _derived_shape(operator: Any) -> None:
    rows = operator.inputs[0].get_first_dimension()
    width = operator.inputs[0].get_second_dimension()
    extra = len(operator.raw_operator.operations)
    operator.outputs[0].type = DoubleTensorType([rows, None if width is None else width + extra])


def _derived_converter(scope: Any, operator: Any, container: Any) -> None:
    name = scope.get_unique_variable_name
    node_name = scope.get_unique_operator_name
    source = operator.inputs[0].full_name
    pieces = [source]
    for operation, left, right in operator.raw_operator.operations:
        columns = []
        for index in (left, right):
            index_name = name("column_index")
            container.add_initializer(index_name, TensorProto.INT64, [1], [index])
            column = name("column")
            container.add_node("Gather", [source, index_name], column, axis=1, name=node_name("Gather"))
            columns.append(column)
        result = name(operation)
        if operation == "ratio":
            _emit_ratio(scope, container, columns[0], columns[1], result)
        else:
            container.add_node("Mul", columns, result, name=node_name(operation))
        pieces.append(result)
    container.add_node("Concat", pieces, operator.outputs[0].full_name, axis=1, name=node_name("Concat"))


def _emit_ratio(scope: Any, container: Any, numerator: str, denominator: str, result: str) -> None:
    """Where(Equal(denominator, 0), NaN, Div(numerator, denominator)), as ``DerivedFeatures``: a
    zero denominator (0 or -0) gives NaN (missing), not Div's inf; every other value is Div's."""
    name = scope.get_unique_variable_name
    node_name = scope.get_unique_operator_name
    zero, nan = name("zero"), name("nan")
    container.add_initializer(zero, TensorProto.DOUBLE, [], [0.0])
    container.add_initializer(nan, TensorProto.DOUBLE, [], [float("nan")])
    quotient, zero_denominator = name("quotient"), name("zero_denominator")
    container.add_node("Div", [numerator, denominator], quotient, name=node_name("Div"))
    container.add_node("Equal", [denominator, zero], zero_denominator, name=node_name("Equal"))
    container.add_node("Where", [zero_denominator, nan, quotient], result, name=node_name("Where"))


def _classifier_shape(operator: Any) -> None:
    rows = operator.inputs[0].get_first_dimension()
    from skl2onnx.common.data_types import Int64TensorType

    operator.outputs[0].type = Int64TensorType([rows])
    operator.outputs[1].type = DoubleTensorType([rows, 2])


def _imputer_kept_columns(imputer: SimpleImputer) -> NDArray[np.int64]:
    """The input columns the imputer outputs: sklearn drops a column with no value in training
    (its statistic is NaN) unless ``keep_empty_features``."""
    statistics = np.asarray(imputer.statistics_, dtype=np.float64)
    if imputer.keep_empty_features:
        return np.arange(len(statistics), dtype=np.int64)
    return np.flatnonzero(~np.isnan(statistics)).astype(np.int64)


def _imputer_shape(operator: Any) -> None:
    operator.outputs[0].type = DoubleTensorType(
        [operator.inputs[0].get_first_dimension(), len(_imputer_kept_columns(operator.raw_operator))]
    )


def _imputer_converter(scope: Any, operator: Any, container: Any) -> None:
    """Where(IsNaN(x), fill, x): onnxruntime has no double-precision ai.onnx.ml Imputer."""
    imputer = operator.raw_operator
    if not (isinstance(imputer.missing_values, float) and np.isnan(imputer.missing_values)):
        raise ValueError("only SimpleImputer(missing_values=nan) is supported")
    if getattr(imputer, "add_indicator", False):
        raise ValueError("SimpleImputer(add_indicator=True) is not supported")
    name = scope.get_unique_variable_name
    node_name = scope.get_unique_operator_name
    source = operator.inputs[0].full_name
    statistics = np.asarray(imputer.statistics_, dtype=np.float64)
    kept = _imputer_kept_columns(imputer)
    if len(kept) < len(statistics):
        # As sklearn: a column all-missing in training is dropped, not passed on as NaN.
        kept_name = name("kept_columns")
        container.add_initializer(kept_name, TensorProto.INT64, [len(kept)], kept.tolist())
        source_kept = name("kept_input")
        container.add_node("Gather", [source, kept_name], source_kept, axis=1, name=node_name("Gather"))
        source, statistics = source_kept, statistics[kept]
    fill = name("fill_values")
    container.add_initializer(fill, TensorProto.DOUBLE, [1, len(statistics)], statistics.tolist())
    missing = name("is_missing")
    container.add_node("IsNaN", source, missing, name=node_name("IsNaN"))
    container.add_node(
        "Where",
        [missing, fill, source],
        operator.outputs[0].full_name,
        name=node_name("Where"),
    )


_CLASSIFIER_OPTIONS = {
    "zipmap": [True, False, "columns"],
    "nocl": [True, False],
    "raw_scores": [True, False],
    "output_class_labels": [False, True],
}


def register_converters() -> None:
    """Install the double-precision converters (idempotent)."""
    update_registered_converter(
        DerivedFeatures, "LoanScoringDerivedFeatures", _derived_shape, _derived_converter
    )
    update_registered_converter(SimpleImputer, "SklearnImputer", _imputer_shape, _imputer_converter)
    for model_type, alias in (
        (HistGradientBoostingClassifier, "SklearnHistGradientBoostingClassifier"),
        (RandomForestClassifier, "SklearnRandomForestClassifier"),
        (ExtraTreesClassifier, "SklearnExtraTreesClassifier"),
    ):
        update_registered_converter(
            model_type, alias, _classifier_shape, _emit_binary_tree_classifier, options=_CLASSIFIER_OPTIONS
        )


def onnx_input_types(spec: DatasetSpec) -> list[tuple[str, Any]]:
    return [
        (f.name, StringTensorType([None, 1]) if f.kind == "category" else DoubleTensorType([None, 1]))
        for f in spec.features
    ]


def convert_pipeline(
    pipeline: Pipeline,
    spec: DatasetSpec,
    calibration: tuple[float, float] | None,
    categories: Mapping[str, Sequence[str]],
) -> onnx.ModelProto:
    """The whole fitted pipeline as one ONNX graph, calibration appended when given, its category
    inputs taking int64 codes: positions in ``categories[feature]`` (see :func:`onnx_feed`)."""
    missing = [name for name in category_columns(spec) if name not in categories]
    if missing:
        raise ValueError(f"no categories given for the category features {missing}")
    model = encode_category_inputs(convert_with_text_inputs(pipeline, spec, calibration), categories)
    onnx.checker.check_model(model)
    return model


def convert_with_text_inputs(
    pipeline: Pipeline, spec: DatasetSpec, calibration: tuple[float, float] | None
) -> onnx.ModelProto:
    """The graph as skl2onnx writes it, categories entering as text (the older bundles' inputs)."""
    register_converters()
    options: dict[Any, Any] = {
        cls: {"zipmap": False}
        for cls in (
            LogisticRegression,
            HistGradientBoostingClassifier,
            RandomForestClassifier,
            ExtraTreesClassifier,
        )
    }
    model: onnx.ModelProto = convert_sklearn(
        pipeline,
        initial_types=onnx_input_types(spec),
        options=options,
        target_opset=OPSET,
        final_types=[(LABEL_OUTPUT, None), (PROBABILITY_OUTPUT, None)],
    )
    model = restore_input_names(model, spec.feature_names)
    if calibration is not None:
        model = append_sigmoid_calibration(model, *calibration)
    model.doc_string = f"loan default model for dataset {spec.name}"
    # skl2onnx names the graph with a random UUID; a fixed name keeps the bytes (and the
    # content-addressed model version) identical for identical training.
    model.graph.name = f"{spec.name}_default_risk"
    # skl2onnx lists the opset domains in set order, which follows the process's string hash seed:
    # sorted, identical training gives identical bytes in every process, not one of two versions.
    _replace(model.opset_import, sorted(model.opset_import, key=lambda opset: opset.domain))
    onnx.checker.check_model(model)
    return model


def _converter_named(converter_name: str, name: str) -> bool:
    """Whether skl2onnx could have named ``name``'s input ``converter_name`` (a number after it
    keeps it unique)."""
    if converter_name == name:
        return True
    stem = _NOT_IN_CONVERTER_NAME.sub("_", name)
    stem = f"_{stem}" if re.match("[0-9]", stem) else stem
    return re.fullmatch(f"{re.escape(stem)}[0-9]*", converter_name) is not None


def restore_input_names(model: onnx.ModelProto, names: Sequence[str]) -> onnx.ModelProto:
    """Rename the graph's inputs, which skl2onnx declared from ``names`` in that order, back to
    ``names``, in every node and value_info that refers to them. A graph whose inputs already are
    ``names`` is returned untouched. Changes ``model`` in place and returns it."""
    graph = model.graph
    given = [graph_input.name for graph_input in graph.input]
    # By position, so "a.b" and "a_b" (both "a_b" to skl2onnx, one numbered) each get their own back.
    if len(given) != len(names) or not all(
        _converter_named(g, n) for g, n in zip(given, names, strict=False)
    ):
        raise ValueError(f"the graph's inputs {given} are not the features {list(names)} in order")
    renames = {g: n for g, n in zip(given, names, strict=True) if g != n}
    if not renames:
        return model
    if any(
        a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
        for n in graph.node
        for a in n.attribute
    ):
        raise ValueError("cannot rename the inputs of a graph with subgraphs")
    # A feature named like another value of the graph would merge the two.
    others = {n for node in graph.node for n in node.output} | {t.name for t in graph.initializer}
    others |= {v.name for v in [*graph.output, *graph.value_info]} - set(renames)
    clashes = sorted(others & set(renames.values()))
    if clashes:
        raise ValueError(f"features {clashes} have the names of other values of the converted graph")
    for node in graph.node:
        _replace(node.input, [renames.get(i, i) for i in node.input])
    for value in [*graph.input, *graph.value_info, *graph.output]:
        value.name = renames.get(value.name, value.name)
    return model


def encode_category_inputs(
    model: onnx.ModelProto, categories: Mapping[str, Sequence[str]]
) -> onnx.ModelProto:
    """Turn each text input named in ``categories`` into an int64 ``[N, 1]`` input of the same name.

    A LabelEncoder maps the code back to the text the converted encoders were fitted on:
    NULL_CATEGORY_CODE to MISSING_CATEGORY, position i to ``categories[name][i]``, anything else to
    UNSEEN_CATEGORY_TEXT. Its output replaces the input in every consumer, so the graph computes
    exactly what it did on the text, whatever the consumer (OneHotEncoder, LabelEncoder, ...).
    Changes ``model`` in place and returns it.
    """
    graph = model.graph
    taken = {n for node in graph.node for n in [node.name, *node.input, *node.output]}
    taken |= {v.name for v in [*graph.input, *graph.output, *graph.value_info]}
    taken |= {t.name for t in graph.initializer}
    text_inputs = {i.name for i in graph.input if i.type.tensor_type.elem_type == TensorProto.STRING}
    unknown = sorted(set(categories) - text_inputs)
    if unknown:
        raise ValueError(f"not text inputs of the graph: {unknown}")
    decoders: list[onnx.NodeProto] = []
    renames: dict[str, str] = {}
    inputs: list[onnx.ValueInfoProto] = []
    for graph_input in graph.input:
        name = graph_input.name
        if name not in categories:
            inputs.append(graph_input)
            continue
        known = list(categories[name])
        if len(set(known)) != len(known) or MISSING_CATEGORY in known or UNSEEN_CATEGORY_TEXT in known:
            raise ValueError(
                f"{name}: categories must be distinct, without {MISSING_CATEGORY!r} or the unseen text"
            )
        # Fixed names (no counters): identical training must give identical bytes.
        text, node_name = f"{name}_text", f"{name}_code_to_text"
        if text in taken or node_name in taken:
            raise ValueError(f"{name}: the graph already uses the name {text!r} or {node_name!r}")
        decoders.append(
            helper.make_node(
                "LabelEncoder",
                [name],
                [text],
                name=node_name,
                domain="ai.onnx.ml",
                keys_int64s=[NULL_CATEGORY_CODE, *range(len(known))],
                values_strings=[MISSING_CATEGORY, *known],
                default_string=UNSEEN_CATEGORY_TEXT,
            )
        )
        renames[name] = text
        inputs.append(helper.make_tensor_value_info(name, TensorProto.INT64, [None, 1]))
    if not decoders:
        return model
    for node in graph.node:
        _replace(node.input, [renames.get(i, i) for i in node.input])
    _replace(graph.node, [*decoders, *graph.node])
    _replace(graph.input, inputs)
    # int64 keys with string values need LabelEncoder-2 (ai.onnx.ml 2); skl2onnx imports ai.onnx.ml 1
    # for a linear model. 1 -> 3 changes only LabelEncoder and TreeEnsemble*, which such a graph
    # lacks (the checker would refuse their old attributes).
    ml = next((o for o in model.opset_import if o.domain == "ai.onnx.ml"), None)
    if ml is None:
        model.opset_import.append(helper.make_opsetid("ai.onnx.ml", OPSET["ai.onnx.ml"]))
    elif ml.version < OPSET["ai.onnx.ml"]:
        ml.version = OPSET["ai.onnx.ml"]
    return model


def _double(name: str, value: float) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray([value], dtype=np.float64), name)  # type: ignore[no-untyped-call]


def _int64(name: str, value: int) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray([value], dtype=np.int64), name)  # type: ignore[no-untyped-call]


def append_sigmoid_calibration(model: onnx.ModelProto, slope: float, intercept: float) -> onnx.ModelProto:
    """Replace p by sigmoid(slope * logit(p) + intercept), the Platt map fitted in training."""
    graph = model.graph
    raw_name = "uncalibrated_probabilities"
    renames = {PROBABILITY_OUTPUT: raw_name, LABEL_OUTPUT: "uncalibrated_label"}
    for node in graph.node:
        _replace(node.output, [renames.get(o, o) for o in node.output])
        _replace(node.input, [renames.get(i, i) for i in node.input])
    kept_outputs = [o for o in graph.output if o.name not in renames]
    _replace(graph.output, kept_outputs)
    graph.initializer.extend(
        [
            _double("cal_eps", 1e-15),
            _double("cal_one", 1.0),
            _double("cal_one_minus_eps", 1.0 - 1e-15),
            _double("cal_slope", slope),
            _double("cal_intercept", intercept),
            _double("cal_half", 0.5),
            _int64("cal_positive_index", 1),
            _int64("cal_flat", -1),
        ]
    )
    make = helper.make_node
    graph.node.extend(
        [
            make("Gather", [raw_name, "cal_positive_index"], ["cal_p"], axis=1),
            make("Clip", ["cal_p", "cal_eps", "cal_one_minus_eps"], ["cal_p_clipped"]),
            make("Sub", ["cal_one", "cal_p_clipped"], ["cal_q"]),
            make("Div", ["cal_p_clipped", "cal_q"], ["cal_odds"]),
            make("Log", ["cal_odds"], ["cal_logit"]),
            make("Mul", ["cal_logit", "cal_slope"], ["cal_scaled"]),
            make("Add", ["cal_scaled", "cal_intercept"], ["cal_z"]),
            make("Sigmoid", ["cal_z"], ["cal_positive"]),
            make("Sub", ["cal_one", "cal_positive"], ["cal_negative"]),
            make("Concat", ["cal_negative", "cal_positive"], [PROBABILITY_OUTPUT], axis=1),
            make("Greater", ["cal_positive", "cal_half"], ["cal_above_half"]),
            make("Cast", ["cal_above_half"], ["cal_label_2d"], to=TensorProto.INT64),
            make("Reshape", ["cal_label_2d", "cal_flat"], [LABEL_OUTPUT]),
        ]
    )
    graph.output.extend(
        [
            helper.make_tensor_value_info(LABEL_OUTPUT, TensorProto.INT64, [None]),
            helper.make_tensor_value_info(PROBABILITY_OUTPUT, TensorProto.DOUBLE, [None, 2]),
        ]
    )
    return model


def _replace(field: Any, values: list[Any]) -> None:
    """Protobuf repeated fields cannot be assigned to; clear and refill them."""
    copies: list[Any] = []
    for value in values:
        if isinstance(value, str):
            copies.append(value)
        else:
            copy = type(value)()
            copy.CopyFrom(value)
            copies.append(copy)
    del field[:]
    field.extend(copies)


def category_codes(texts: Sequence[str], categories: Sequence[str]) -> NDArray[np.int64]:
    """Each text's position in ``categories``; NULL_CATEGORY_CODE for MISSING_CATEGORY and
    UNSEEN_CATEGORY_CODE for a text not among them (see :func:`encode_category_inputs`)."""
    positions = category_code_map(categories)  # MISSING_CATEGORY is the card's empty text
    return np.fromiter(
        (positions.get(text, UNSEEN_CATEGORY_CODE) for text in texts), dtype=np.int64, count=len(texts)
    )


def feed_column(
    column: pd.Series, onnx_type: OnnxElementType, categories: Sequence[str] | None
) -> NDArray[Any]:
    """One ``[N, 1]`` graph input from a frame column: doubles, text (missing as MISSING_CATEGORY),
    or the text's codes among ``categories``."""
    if onnx_type == "double":
        return pd.to_numeric(column).to_numpy(dtype=np.float64).reshape(-1, 1)
    texts = column.astype("string").fillna(MISSING_CATEGORY).to_numpy(dtype=object)
    if onnx_type == "string":
        return texts.reshape(-1, 1)
    if categories is None:
        raise ValueError(f"{column.name}: an int64 input needs its categories")
    return category_codes(texts.tolist(), categories).reshape(-1, 1)


def onnx_feed(
    spec: DatasetSpec, frame: pd.DataFrame, categories: Mapping[str, Sequence[str]]
) -> dict[str, NDArray[Any]]:
    """The inputs of a :func:`convert_pipeline` graph (numbers as float64, categories as their codes
    among ``categories[feature]``); frame from model_input_frame."""
    return {
        f.name: feed_column(frame[f.name], "int64", categories[f.name])
        if f.kind == "category"
        else feed_column(frame[f.name], "double", None)
        for f in spec.features
    }


def card_feed(features: Sequence[FeatureSchema], frame: pd.DataFrame) -> dict[str, NDArray[Any]]:
    """The inputs of a bundle's graph as its card describes them (input name, type, categories),
    so a bundle of either category encoding can be scored."""
    return {
        f.onnx_input: feed_column(
            # Booleans as training read them ("yes"/"no", "true", ...), not only numbers.
            frame[f.name].map(to_bool_number) if f.type == "boolean" else frame[f.name],
            f.onnx_type,
            f.categories,
        )
        for f in features
    }


def onnx_probabilities(model_bytes: bytes, feed: dict[str, NDArray[Any]]) -> NDArray[np.float64]:
    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    probabilities = session.run([PROBABILITY_OUTPUT], feed)[0]
    return np.asarray(probabilities, dtype=np.float64)[:, 1]


@dataclass(frozen=True)
class ParityResult:
    max_abs_difference: float
    rows_checked: int
    passed: bool


def check_parity(
    model_bytes: bytes, feed: dict[str, NDArray[Any]], expected: NDArray[np.float64]
) -> ParityResult:
    """Passes when every row's probability is within PARITY_TOLERANCE of ``expected`` (a NaN on
    either side fails). Refuses anything but one expected value per scored row: numpy would
    broadcast a single value against every row, and no rows would pass having compared nothing."""
    if len(expected) == 0:
        raise ValueError("parity needs one expected probability per scored row, and no rows were given")
    actual = onnx_probabilities(model_bytes, feed)
    if actual.shape != np.shape(expected):
        raise ValueError(
            f"parity needs one expected probability per scored row: the graph scored {actual.shape}, "
            f"expected has shape {np.shape(expected)}"
        )
    difference = float(np.max(np.abs(actual - expected)))
    return ParityResult(
        max_abs_difference=difference,
        rows_checked=len(expected),
        passed=bool(np.isfinite(difference) and difference <= PARITY_TOLERANCE),
    )


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
