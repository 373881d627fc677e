"""One CLI for the training chain: ``python -m training <command>``.

- ``train``: dataset + source → bundle folder (model.onnx + model_card.json); prints the summary.
- ``show``: print a bundle's card summary.
Loading MariaDB, exporting and registering bundles have their own subcommands once available.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from lambdas.scoring.card import ModelCard
from training.datasets.catalog import BUILT_IN, load_dataset
from training.pipeline import TrainingConfig, train_bundle


def card_summary(card: ModelCard) -> str:
    lines = [
        f"model {card.model_name}  version {card.model_version}",
        f"dataset {card.dataset}: {card.data.rows_used} rows used of {card.data.rows_raw} "
        f"(train {card.data.rows_train}, holdout {card.data.rows_holdout}: {card.data.holdout}); "
        f"positive rate {card.data.positive_rate:.3f}",
        "cleaning: " + ", ".join(f"{k}={v}" for k, v in card.data.cleaning.items()),
        "",
        f"{'candidate':<24}{'calib':<9}{'CV ROC AUC':>14}{'PR AUC':>9}{'KS':>8}{'Brier':>9}{'LogLoss':>9}"
        f"{'holdout AUC':>13}  status",
    ]
    for candidate in card.candidates:
        cv = candidate.cv.mean
        holdout = card.holdout_metrics_by_candidate.get(candidate.name)
        lines.append(
            f"{candidate.name:<24}{candidate.calibration:<9}{cv.roc_auc:>8.4f}±{candidate.cv.std.roc_auc:.4f}"
            f"{cv.pr_auc:>9.4f}{cv.ks:>8.4f}{cv.brier:>9.4f}{cv.log_loss:>9.4f}"
            f"{holdout.roc_auc if holdout else float('nan'):>13.4f}  {candidate.status}"
            + (f" ({candidate.dropped_reason})" if candidate.dropped_reason else "")
        )
    metrics = card.holdout_metrics
    policy = card.decision_policy
    lines += [
        "",
        f"champion {card.champion}: holdout ROC AUC {metrics.roc_auc:.4f}, PR AUC {metrics.pr_auc:.4f}, "
        f"KS {metrics.ks:.4f}, Brier {metrics.brier:.4f}, log loss {metrics.log_loss:.4f}",
        f"decision: decline when P(default) >= {policy.threshold:.4f} (expected cost; approving a defaulter "
        f"costs {policy.cost_of_approving_defaulter:g}x declining a good applicant; theory "
        f"{policy.theoretical_threshold:.4f})",
        f"ONNX parity: max |diff| {card.parity.max_abs_difference:.2e} "
        f"over {card.parity.rows_checked} holdout rows "
        f"(tolerance {card.parity.tolerance:g})",
    ]
    for attribute in card.fairness:
        lines.append(
            f"fairness {attribute.attribute}: "
            f"demographic parity diff {attribute.demographic_parity_difference:.3f}, "
            f"equal opportunity diff {attribute.equal_opportunity_difference:.3f} over "
            + ", ".join(f"{g.group} (n={g.count})" for g in attribute.groups)
        )
    lines.append(f"training took {card.lineage.training_seconds:.1f} s")
    return "\n".join(lines)


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train a dataset into a model bundle")
    train.add_argument("--dataset", default="credit_risk", help=f"built in: {', '.join(sorted(BUILT_IN))}")
    train.add_argument(
        "--source", default=None, help="files | files:<path> | export:<folder or s3://…>[#<export-id>]"
    )
    train.add_argument(
        "--spec-file", type=Path, default=None, help="JSON spec for any flat table (with files:<path>)"
    )
    train.add_argument("--out", type=Path, required=True, help="bundle folder to write")
    train.add_argument("--seed", type=int, default=42)
    train.add_argument("--candidates", nargs="*", default=None, help="subset of candidate names")
    train.add_argument("--cost-approve-defaulter", type=float, default=5.0)
    train.add_argument("--cost-decline-good", type=float, default=1.0)
    show = commands.add_parser("show", help="print a bundle's card summary")
    show.add_argument("bundle", type=Path)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = _parse(sys.argv[1:] if argv is None else argv)
    if args.command == "show":
        card_file = args.bundle / "model_card.json"
        if not card_file.exists():
            print(f"error: no model_card.json in {args.bundle}", file=sys.stderr)
            return 2
        print(card_summary(ModelCard.model_validate_json(card_file.read_text())))
        return 0
    dataset = load_dataset(args.dataset, args.source, args.spec_file)
    config = TrainingConfig(
        seed=args.seed,
        candidates=args.candidates,
        cost_of_approving_defaulter=args.cost_approve_defaulter,
        cost_of_declining_good_applicant=args.cost_decline_good,
    )
    card = train_bundle(dataset, args.out, config)
    print(card_summary(card))
    print(f"\nbundle written to {args.out}")
    return 0
