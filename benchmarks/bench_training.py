"""Training benchmark: per dataset, wall time of the whole training and the candidates' CV table.

Run: ``uv run python -m benchmarks.bench_training [--datasets credit_risk jpmc_loans berka]``.
The baseline in the same run is a default HistGradientBoostingClassifier cross-validated on the same
training rows and folds (the issue quotes 0.945-0.947 for it on all rows), so the champion's gain is
a ratio measured on the same data, machine and load. The folds are the ones the champion's card says
its CV used: on small data (berka) training repeats the folds three times, and a baseline on the
first repeat alone would be averaged over other folds than the champion.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.model_selection import RepeatedStratifiedKFold, cross_val_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OrdinalEncoder

from training.cli import card_summary
from training.datasets.catalog import load_dataset
from training.features import category_columns, model_input_frame, numeric_columns
from training.pipeline import TrainingConfig, split_holdout, train


def baseline_cv_auc(dataset_name: str, config: TrainingConfig, repeats: int) -> tuple[float, float]:
    """Default HGB on the same training rows and the same folds as the pipeline's CV (``repeats``: the
    champion card's ``cv.repeats``)."""
    dataset = load_dataset(dataset_name)
    spec = dataset.spec
    train_rows = split_holdout(dataset, config).train
    x = model_input_frame(spec, train_rows)
    y = train_rows[spec.target].to_numpy()
    columns = ColumnTransformer(
        [
            ("n", "passthrough", numeric_columns(spec)),
            (
                "c",
                OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1),
                category_columns(spec),
            ),
        ]
    )
    model = Pipeline([("prepare", columns), ("model", HistGradientBoostingClassifier(random_state=0))])
    folds = RepeatedStratifiedKFold(n_splits=config.folds, n_repeats=repeats, random_state=config.seed)
    started = time.perf_counter()
    scores = cross_val_score(model, x, y, cv=folds, scoring="roc_auc", error_score="raise")
    return float(np.mean(scores)), time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="*", default=["credit_risk", "jpmc_loans", "berka"])
    args = parser.parse_args()
    for name in args.datasets:
        print(f"=== {name}")
        started = time.perf_counter()
        config = TrainingConfig()
        outcome = train(load_dataset(name), config)
        wall = time.perf_counter() - started
        print(card_summary(outcome.card))
        champion = next(c for c in outcome.card.candidates if c.status == "champion")
        champion_cv = champion.cv.mean.roc_auc
        baseline_auc, baseline_seconds = baseline_cv_auc(name, config, champion.cv.repeats)
        print(f"whole training wall time: {wall:.1f} s")
        print(
            f"baseline default HGB, same rows and folds ({champion.cv.folds} folds x {champion.cv.repeats}): "
            f"CV ROC AUC {baseline_auc:.4f} ({baseline_seconds:.1f} s); champion CV ROC AUC "
            f"{champion_cv:.4f} ({champion.calibration} calibration; uncalibrated "
            f"{champion.cv_uncalibrated.mean.roc_auc:.4f}); ratio {champion_cv / baseline_auc:.4f}"
        )
        print()


if __name__ == "__main__":
    main()
