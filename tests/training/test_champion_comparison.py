"""compare_with_champion scores a registered champion by its own card: categories fed as text to an
older bundle, as codes among the champion card's categories to a newer one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from onnx import TensorProto
from sklearn.pipeline import Pipeline

from lambdas.scoring.card import FeatureSchema, ModelCard
from training.candidates import candidates_by_name
from training.datasets.catalog import CREDIT_RISK, load_dataset
from training.features import model_input_frame
from training.metrics import evaluate
from training.onnx_export import convert_pipeline, convert_with_text_inputs, sha256_hex
from training.pipeline import coded_categories, compare_with_champion, feature_schema

REPO_ROOT = Path(__file__).resolve().parents[2]
# A real card to copy the fields this test does not care about from.
TEMPLATE_CARD = REPO_ROOT / "model_artifacts" / "credit_risk" / "model_card.json"


@pytest.fixture(scope="module")
def fitted() -> tuple[Pipeline, list[FeatureSchema], pd.DataFrame]:
    """A small boosting champion, its card features, and raw holdout rows with a missing category
    and a category never seen in training."""
    frame = load_dataset("credit_risk").frame.sample(3000, random_state=11).reset_index(drop=True)
    train, holdout = frame.iloc[:2500], frame.iloc[2500:].reset_index(drop=True)
    x_train = model_input_frame(CREDIT_RISK, train)
    (boosting,) = candidates_by_name(["hist_gradient_boosting"])
    pipeline = boosting.build(CREDIT_RISK, len(x_train), 0).set_params(model__max_iter=40)
    pipeline.fit(x_train, train["loan_status"].to_numpy())
    holdout.loc[:19, "loan_intent"] = None
    holdout.loc[20:39, "loan_grade"] = "Z"
    holdout.loc[40:59, "person_home_ownership"] = "HOUSEBOAT"
    return pipeline, feature_schema(CREDIT_RISK, x_train), holdout


def _bundle(folder: Path, model_bytes: bytes, features: list[FeatureSchema]) -> Path:
    template = ModelCard.model_validate_json(TEMPLATE_CARD.read_text())
    sha = sha256_hex(model_bytes)
    card = template.model_copy(
        update={
            "model_version": f"credit_risk-{sha[:12]}",
            "onnx": template.onnx.model_copy(update={"sha256": sha}),
            "features": features,
        }
    )
    folder.mkdir()
    (folder / card.onnx.file).write_bytes(model_bytes)
    (folder / "model_card.json").write_text(card.model_dump_json())
    return folder


def _expected(pipeline: Pipeline, holdout: pd.DataFrame) -> object:
    """sklearn's metrics on the holdout: onnxruntime sums the trees in another order (about 1e-8 per
    probability); a missing or unseen category fed wrongly would move them by far more."""
    probability = pipeline.predict_proba(model_input_frame(CREDIT_RISK, holdout))[:, 1]
    metrics = evaluate(holdout["loan_status"].to_numpy(dtype=np.int64), probability).model_dump()
    return pytest.approx(metrics, rel=0, abs=1e-7)


def test_given_a_coded_champion_when_compared_then_it_scores_as_sklearn(
    fitted: tuple[Pipeline, list[FeatureSchema], pd.DataFrame], tmp_path: Path
) -> None:
    pipeline, features, holdout = fitted
    assert {f.onnx_type for f in features if f.type == "category"} == {"int64"}
    model = convert_pipeline(pipeline, CREDIT_RISK, None, coded_categories(features))
    bundle = _bundle(tmp_path / "coded", model.SerializeToString(), features)
    comparison = compare_with_champion(bundle, holdout, "loan_status")
    assert comparison.champion_metrics is not None
    assert comparison.champion_metrics.model_dump() == _expected(pipeline, holdout)
    assert comparison.champion_version.startswith("credit_risk-")


def test_given_an_older_text_input_champion_when_compared_then_it_is_fed_text(
    fitted: tuple[Pipeline, list[FeatureSchema], pd.DataFrame], tmp_path: Path
) -> None:
    # Given a champion written before categories were coded: text inputs, card onnx_type "string"
    pipeline, features, holdout = fitted
    text_features = [
        f.model_copy(update={"onnx_type": "string"}) if f.type == "category" else f for f in features
    ]
    model = convert_with_text_inputs(pipeline, CREDIT_RISK, None)
    assert {i.type.tensor_type.elem_type for i in model.graph.input} == {
        TensorProto.STRING,
        TensorProto.DOUBLE,
    }
    bundle = _bundle(tmp_path / "text", model.SerializeToString(), text_features)
    # When compared on the same holdout, then it scores the same as sklearn
    comparison = compare_with_champion(bundle, holdout, "loan_status")
    assert comparison.champion_metrics is not None
    assert comparison.champion_metrics.model_dump() == _expected(pipeline, holdout)
