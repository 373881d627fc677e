"""One CLI for the training chain: ``python -m training <command>``.

- ``train``: dataset + source → bundle (model.onnx + model_card.json) in a folder or ``s3://…``.
- ``show``: print a bundle's card summary.
- ``load`` / ``export``: a dataset's files into MariaDB (or RDS) / MariaDB into the RDS
  snapshot-export Parquet layout (see ``python -m training.dataload``).
- ``gate``: may the candidate bundle replace the registered champion? Exit 0 yes, 1 no; with
  ``--verdict <file or s3://…/key.json>`` it writes the decision there as JSON and exits 0 for
  either decision, so a non-zero exit always means the gate itself failed.
- ``register``: gate, then store the bundle under an immutable version in the registry.
- ``loop``: load → export → train (champion scored on the same holdout) → gate → register.

Exit codes: 0 done; 1 the gate refused the candidate (``gate`` without ``--verdict``, ``register``,
``loop``); 2 a clear error, named in one line (bad arguments or input); 3 an unexpected fault (the
traceback is logged). A fault never exits 1, which would read as "the candidate lost the gate".

The Step Functions pipeline in AWS runs ``train``, ``gate --verdict`` and ``register`` in the training
container and branches on the verdict; ``loop`` runs the same steps locally against MariaDB and a
folder or S3 emulator.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import tempfile
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from pydantic import ValidationError

from lambdas.scoring.card import Interval, ModelCard
from training.aws_settings import aws_setting_error
from training.dataload.storage import S3Storage, StorageError, open_storage
from training.datasets.catalog import BUILT_IN, LoadedDataset, load_dataset
from training.fairness import FOUR_FIFTHS, SMALL_SAMPLE_CASES
from training.pipeline import TrainingConfig, default_model_name, train_bundle
from training.registry import (
    DEFAULT_MIN_HOLDOUT_NEGATIVES,
    DEFAULT_MIN_HOLDOUT_POSITIVES,
    Gated,
    GateDecision,
    RegistryError,
    VersionConflictError,
    VersionExistsError,
    champion_card,
    download_bundle,
    gate,
    latest_pointer,
    read_bundle_card,
    register_bundle,
    signed,
)
from training.sources.export import ExportReadError

BUNDLE_FILES = ("model.onnx", "model_card.json")
DEFAULT_DATASET = "credit_risk"
log = logging.getLogger(__name__)


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
    uncertainty = card.holdout_uncertainty
    auc_ci = brier_ci = ""
    if uncertainty is not None:
        ci = f"{uncertainty.confidence:.0%} CI"
        auc_ci = f" ({ci} {uncertainty.roc_auc.lower:.3f}-{uncertainty.roc_auc.upper:.3f})"
        brier_ci = f" ({ci} {uncertainty.brier.lower:.4f}-{uncertainty.brier.upper:.4f})"
    lines += [
        "",
        f"champion {card.champion}: holdout ROC AUC {metrics.roc_auc:.4f}{auc_ci}, "
        f"PR AUC {metrics.pr_auc:.4f}, KS {metrics.ks:.4f}, Brier {metrics.brier:.4f}{brier_ci}, "
        f"log loss {metrics.log_loss:.4f}",
        f"decision: decline when P(default) >= {policy.threshold:.4f} (expected cost; approving a defaulter "
        f"costs {policy.cost_of_approving_defaulter:g}x declining a good applicant; theory "
        f"{policy.theoretical_threshold:.4f})",
    ]
    positives, negatives = card.data.holdout_positives, card.data.holdout_negatives
    warnings: list[str] = []
    if positives is not None and negatives is not None:
        holdout_rate = positives / (positives + negatives) if positives + negatives else None
        lines.append(
            f"holdout classes: {positives} positives, {negatives} negatives (positive rate "
            f"{_percent(holdout_rate)}; all rows used {card.data.positive_rate:.1%})"
            + (
                f"; intervals: stratified bootstrap, {uncertainty.resamples} resamples, "
                f"seed {uncertainty.seed}"
                if uncertainty
                else ""
            )
        )
        if positives < DEFAULT_MIN_HOLDOUT_POSITIVES or negatives < DEFAULT_MIN_HOLDOUT_NEGATIVES:
            warnings.append(
                f"WARNING: the holdout has {positives} positives and {negatives} negatives, fewer than the "
                f"gate's minimum of {DEFAULT_MIN_HOLDOUT_POSITIVES} and {DEFAULT_MIN_HOLDOUT_NEGATIVES}: "
                "its metrics rest on too few cases, and the gate will not let this model replace a champion"
            )
    comparison = card.champion_comparison
    differences = comparison.difference_intervals if comparison is not None else None
    if comparison is not None and comparison.champion_metrics is not None and differences is not None:
        paired = f"{differences.confidence:.0%} paired bootstrap interval"
        lines.append(
            f"vs registered champion {comparison.champion_version} on this holdout: ROC AUC "
            f"{signed(metrics.roc_auc - comparison.champion_metrics.roc_auc)} ({paired} "
            f"{signed(differences.roc_auc.lower)} to {signed(differences.roc_auc.upper)}), Brier "
            f"{signed(metrics.brier - comparison.champion_metrics.brier)} ({paired} "
            f"{signed(differences.brier.lower)} to {signed(differences.brier.upper)})"
        )
    if uncertainty is None and positives is None:
        lines.append("uncertainty: not recorded in this card (written before holdout counts and intervals)")
    decisions = card.holdout_decisions
    if decisions is not None:
        lines.append(
            f"on the holdout: approves {decisions.approval_rate:.1%}, declines "
            f"{_percent(decisions.defaulters_declined_rate)} of defaulters and "
            f"{_percent(decisions.good_applicants_declined_rate)} of repayers; "
            f"{_percent(decisions.approved_who_defaulted_rate)} of the approved default; "
            f"expected cost {decisions.expected_cost_per_application:.4f} per application"
        )
    calibration = card.holdout_calibration
    if calibration is not None:
        lines.append(
            f"calibration on the holdout: expected error {calibration.expected_calibration_error:.4f}, "
            f"largest bin gap {calibration.max_calibration_error:.4f}"
        )
    lines += [
        f"ONNX parity: max |diff| {card.parity.max_abs_difference:.2e} "
        f"over {card.parity.rows_checked} holdout rows "
        f"(tolerance {card.parity.tolerance:g})",
    ]
    for attribute in card.fairness:
        spread = attribute.comparison_intervals
        parity, opportunity, ratio = (
            (
                spread.demographic_parity_difference,
                spread.equal_opportunity_difference,
                spread.adverse_impact_ratio,
            )
            if spread is not None
            else (None, None, None)
        )
        lines.append(
            f"fairness {attribute.attribute}: "
            f"demographic parity diff {_figure(attribute.demographic_parity_difference, parity)}, "
            f"equal opportunity diff {_figure(attribute.equal_opportunity_difference, opportunity)}, "
            f"adverse impact ratio {_figure(attribute.adverse_impact_ratio, ratio)} over "
            + ", ".join(f"{g.group} (n={g.count})" for g in attribute.groups)
        )
        if spread is not None:
            below = spread.adverse_impact_ratio_below_four_fifths
            lines.append(
                f"  comparison intervals ({spread.confidence:.0%} CI): bootstrap within groups, "
                f"{spread.resamples} resamples, seed {spread.seed}"
                + ("" if below is None else f"; ratio below {FOUR_FIFTHS:g} in {below:.1%} of resamples")
            )
            # A ratio whose interval holds values on both sides of 0.8 passes or fails the rule by chance.
            if ratio is not None and ratio.lower < FOUR_FIFTHS <= ratio.upper:
                warnings.append(
                    f"WARNING: fairness {attribute.attribute}: the adverse impact ratio "
                    f"{_figure(attribute.adverse_impact_ratio)} has a {spread.confidence:.0%} interval of "
                    f"{ratio.lower:.3f}-{ratio.upper:.3f}, which contains {FOUR_FIFTHS:g}: this holdout does "
                    "not settle whether the four-fifths rule is met"
                )
        for group in attribute.groups:
            if group.defaulters is None and group.small_sample is None:
                continue  # an older card: no counts or intervals to show
            lines.append(
                f"  {group.group}: n={group.count} "
                f"({group.defaulters} defaulters, {group.repayers} repayers); "
                f"approval {_rate(group.approval_rate, group.approval_rate_interval)}, "
                f"default {_rate(group.default_rate, group.default_rate_interval)}, "
                f"TPR {_rate(group.true_positive_rate, group.true_positive_rate_interval)}, "
                f"good-applicant approval "
                f"{_rate(group.good_applicant_approval_rate, group.good_applicant_approval_rate_interval)}"
                + (" [small sample]" if group.small_sample else "")
            )
        small = [g.group for g in attribute.groups if g.small_sample]
        if small:
            warnings.append(
                f"WARNING: fairness {attribute.attribute}: small sample in {', '.join(small)} (fewer than "
                f"{SMALL_SAMPLE_CASES} rows, defaulters or repayers under a rate): read their rates by "
                "their intervals"
            )
    lines.append(f"training took {card.lineage.training_seconds:.1f} s")
    return "\n".join(lines + warnings)


def _rate(value: float | None, interval: Interval | None) -> str:
    """A rate with its 95% interval where the card has one: ``0.875 (0.640-0.965)``."""
    if value is None:
        return "n/a"
    return f"{value:.3f}" + (f" ({interval.lower:.3f}-{interval.upper:.3f})" if interval else "")


def _percent(share: float | None) -> str:
    return "n/a" if share is None else f"{share:.1%}"


def _figure(value: float | None, interval: Interval | None = None) -> str:
    """A fairness comparison with its interval where the card has one: ``0.872 (0.784-0.957)``."""
    return "n/a (too few large groups)" if value is None else _rate(value, interval)


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m training", description=(__doc__ or "").splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train a dataset into a model bundle")
    _training_arguments(train, sources=True)
    train.add_argument("--out", required=True, help="bundle folder or s3://bucket/prefix/ to write")
    train.add_argument(
        "--champion-registry", default=None, help="score the registered champion on the holdout"
    )
    show = commands.add_parser("show", help="print a bundle's card summary")
    show.add_argument("bundle", type=Path)
    load = commands.add_parser("load", help="load a dataset's files into MariaDB (DB_* env or DB_SECRET_ARN)")
    load.add_argument("--dataset", required=True)
    load.add_argument("--files", required=True, help="folder or s3://bucket/prefix/ with the dataset's files")
    load.add_argument("--database", default=None)
    export = commands.add_parser("export", help="export a MariaDB database in the RDS snapshot-export layout")
    export.add_argument("--database", required=True)
    export.add_argument("--out", required=True, help="folder or s3://bucket/prefix")
    export.add_argument("--export-id", required=True)
    for name, text in (("gate", "gate a candidate bundle"), ("register", "gate, then register a candidate")):
        command = commands.add_parser(name, help=text)
        command.add_argument("--candidate", required=True, help="candidate bundle folder or s3://…/")
        command.add_argument("--registry", required=True, help="registry folder or s3://bucket/prefix")
        _new_registry_argument(command)
    commands.choices["gate"].add_argument(
        "--verdict",
        default=None,
        help="write the decision as JSON to this file or s3://bucket/key and exit 0 for either decision",
    )
    loop = commands.add_parser("loop", help="load → export → train → gate → register, locally")
    # No --source/--spec-file: the loop always trains on the export it has just written.
    _training_arguments(loop, sources=False)
    loop.add_argument("--files", default=None, help="dataset files to load first (default: skip loading)")
    loop.add_argument("--database", default=None, help="MariaDB database (default: the dataset's name)")
    loop.add_argument("--exports", required=True, help="export location: folder or s3://bucket/prefix")
    loop.add_argument("--registry", required=True, help="registry folder or s3://bucket/prefix")
    _new_registry_argument(loop)
    return parser.parse_args(argv)


def _new_registry_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--new-registry",
        action="store_true",
        help="start a new registry at an S3 location although a neighbouring prefix holds one of the model "
        "(without it, such a location is refused as mistyped)",
    )


def _training_arguments(parser: argparse.ArgumentParser, *, sources: bool) -> None:
    built_in = ", ".join(sorted(BUILT_IN))
    if sources:
        parser.add_argument(
            "--dataset",
            default=None,
            help=f"built in: {built_in} (default {DEFAULT_DATASET}); with --spec-file the spec's name",
        )
        parser.add_argument(
            "--source", default=None, help="files | files:<path> | export:<folder or s3://…>[#<id>]"
        )
        parser.add_argument(
            "--spec-file", type=Path, default=None, help="JSON spec for any flat table (files:<path>)"
        )
    else:
        parser.add_argument("--dataset", default=DEFAULT_DATASET, help=f"built in: {built_in}")
    parser.add_argument("--seed", type=_seed, default=42)
    parser.add_argument("--jobs", type=_jobs, default=2, help="parallel fits (processes; -1: all cores)")
    parser.add_argument("--candidates", nargs="*", default=None, help="subset of candidate names")
    parser.add_argument("--cost-approve-defaulter", type=_positive_cost, default=5.0)
    parser.add_argument("--cost-decline-good", type=_positive_cost, default=1.0)


# Option types: a bad number is refused by argparse, naming the option, before any data is read.
def _positive_cost(text: str) -> float:
    value = float(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number above 0, got {text!r}")
    return value


def _jobs(text: str) -> int:
    value = int(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must not be 0 (a positive count, or -1 for all cores)")
    return value


def _seed(text: str) -> int:
    value = int(text)
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"must be in [0, 2**32), got {text!r}")
    return value


def _config(args: argparse.Namespace) -> TrainingConfig:
    return TrainingConfig(
        seed=args.seed,
        n_jobs=args.jobs,
        candidates=args.candidates,
        cost_of_approving_defaulter=args.cost_approve_defaulter,
        cost_of_declining_good_applicant=args.cost_decline_good,
    )


def _is_remote(location: str) -> bool:
    return location.startswith("s3://")


def _materialise(location: str, workspace: Path) -> Path:
    """A local folder holding the files at ``location`` (downloaded when it is on S3)."""
    if not _is_remote(location):
        return Path(location)
    storage = open_storage(location)
    keys = storage.list_keys("")
    if not keys:
        raise FileNotFoundError(f"nothing found under {location}")
    for key in keys:
        target = workspace / key
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(storage.read_bytes(key))
    return workspace


def _check_output(option: str, location: str, *, folder: bool = True) -> None:
    """Refuse a location that cannot take the output now, not after training: another scheme
    (``gs://``, ``S3://``) would otherwise become a local folder named ``gs:``."""
    try:
        open_storage(location)  # an s3:// location without a bucket, or another scheme: ValueError
    except ValueError as error:
        raise ValueError(f"{option} {location!r}: {error}") from error
    if _is_remote(location):
        _check_bucket(option, location)
        return
    # The nearest folder that exists on the way: a file anywhere above (out/bundle under a file named
    # out) or a folder this user cannot write to would fail only when the bundle is written.
    existing = Path(location) if folder else Path(location).parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"{option} {location!r}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{option} {location!r}: {existing} is not writable")


def _check_bucket(option: str, location: str) -> None:
    """An s3:// location whose bucket does not exist (a typo) is refused now: as an output it would fail
    only after training; as a registry every key in it reads as missing, so the gate finds no champion
    and passes any candidate."""
    storage = open_storage(location)
    if not isinstance(storage, S3Storage):
        return
    try:
        storage.client.head_bucket(Bucket=storage.bucket)
    except storage.client.exceptions.ClientError as error:
        if error.response.get("Error", {}).get("Code") in {"404", "NoSuchBucket", "NotFound"}:
            raise ValueError(f"{option} {location!r}: bucket {storage.bucket!r} does not exist") from error
        # Any other answer (403: a role that may write under a prefix but not list): the bucket
        # exists, or the first read or write says why not.


def _check_registry_folder(option: str, location: str) -> None:
    """A local registry folder that does not exist (a typo) is refused by the commands that only read
    the registry: every champion would read as missing, so the gate would pass any candidate and train
    would skip the comparison. ``register`` (and ``loop``) create a new registry."""
    if _is_remote(location) or Path(location).is_dir():
        return
    problem = "is not a folder" if Path(location).exists() else "does not exist"
    raise ValueError(
        f"{option} {location!r} {problem}: is the path mistyped? (a new registry is created by "
        "python -m training register)"
    )


def _publish(bundle: Path, location: str) -> None:
    if not _is_remote(location):
        return
    storage = open_storage(location)
    for name in BUNDLE_FILES:  # the card last: a reader that sees it finds the model beside it
        storage.write_bytes(name, (bundle / name).read_bytes())


def _champion_bundle(
    registry: str, model_name: str, workspace: Path, *, new_registry: bool = False
) -> Path | None:
    if latest_pointer(registry, model_name, new_registry=new_registry) is None:
        return None
    destination = workspace / "champion"
    download_bundle(registry, model_name, destination)
    return destination


def _dataset(args: argparse.Namespace) -> LoadedDataset:
    dataset = load_dataset(args.dataset or DEFAULT_DATASET, args.source, args.spec_file)
    # With a spec file the spec names the model (and its champion in the registry): a --dataset
    # that says otherwise would be silently ignored.
    if args.spec_file is not None and args.dataset not in (None, dataset.spec.name):
        raise ValueError(
            f"--dataset {args.dataset!r} does not match the name {dataset.spec.name!r} in the spec file "
            f"{args.spec_file}; leave --dataset out or make them the same"
        )
    return dataset


def _train(args: argparse.Namespace, out: str, registry: str | None, *, in_loop: bool = False) -> ModelCard:
    """Train and print the card's summary; ``in_loop``: the loop's registry may be new (its first run
    registers into it), and ``out`` is a temporary folder, not worth naming."""
    _check_output("--out", out)
    if registry:
        _check_bucket("--champion-registry", registry)
        if not in_loop:
            _check_registry_folder("--champion-registry", registry)
    config = _config(args)  # invalid settings fail here, before data is read
    dataset = _dataset(args)
    with tempfile.TemporaryDirectory(prefix="training-") as scratch:
        workspace = Path(scratch)
        # The champion of the model being trained: named from the dataset's spec, not --dataset.
        model_name = default_model_name(dataset.spec.name)
        new_registry = bool(getattr(args, "new_registry", False))  # the loop's option
        champion = (
            _champion_bundle(registry, model_name, workspace, new_registry=new_registry) if registry else None
        )
        bundle = workspace / "bundle" if _is_remote(out) else Path(out)
        card = train_bundle(dataset, bundle, replace(config, champion_bundle=champion))
        _publish(bundle, out)
    print(card_summary(card))  # its "vs registered champion" line is the comparison
    if not in_loop:
        print(f"\nbundle written to {out}")
    return card


def _gate_or_register(args: argparse.Namespace) -> int:
    verdict = getattr(args, "verdict", None)
    if verdict:
        _check_output("--verdict", verdict, folder=False)
    _check_bucket("--registry", args.registry)
    with tempfile.TemporaryDirectory(prefix="candidate-") as scratch:
        bundle = _materialise(args.candidate, Path(scratch))
        card = read_bundle_card(bundle)
        if args.command == "gate":
            _check_registry_folder("--registry", args.registry)
        decision = gate(
            card,
            champion_card(args.registry, card["model_name"], new_registry=args.new_registry),
            registry_location=args.registry,
        )
        version = None
        if decision.passed and args.command in ("register", "loop"):
            try:
                version = register_bundle(bundle, args.registry, gated=Gated(decision.champion_version))
            except VersionConflictError:
                raise  # another model under this version: a failed registration, not "nothing to do"
            except VersionExistsError:
                # Versions are content-addressed (ONNX hash): the same model is already registered.
                version = str(card["model_version"])
                print(f"version {version} is already registered; nothing to do")
    print(json.dumps({**decision.as_dict(), "registered_version": version}, indent=2))
    if args.command == "loop" and version is not None:
        # The loop's candidate folder is deleted when it ends: name the bundle that stays.
        registered = open_storage(args.registry).describe(f"{card['model_name']}/{version}")
        print(f"\nregistered at {registered}")
    if args.command == "gate" and verdict:
        _write_verdict(verdict, str(card["model_name"]), decision)
        return 0  # decided either way; the caller branches on the verdict's "passed"
    return 0 if decision.passed else 1


def _write_verdict(location: str, model_name: str, decision: GateDecision) -> None:
    """Write the gate's decision to ``location`` (a file path or ``s3://bucket/key``), as the last step.

    The Step Functions pipeline reads it and branches on ``passed`` (a JSON boolean): the file exists
    only when the gate reached a decision, so a crash can never read as "champion kept".
    """
    if _is_remote(location):
        folder, _, name = location.rpartition("/")
        if not name or not folder[len("s3://") :]:
            raise ValueError(f"--verdict {location!r} must name an object: s3://bucket/<key>")
    else:
        folder, name = str(Path(location).parent), Path(location).name
    verdict = {"model_name": model_name, **decision.as_dict()}
    open_storage(folder).write_bytes(
        name, json.dumps(verdict, indent=2).encode(), content_type="application/json"
    )


def _load(dataset: str, files: str, database: str | None) -> None:
    from training.dataload.__main__ import main as dataload_main

    with tempfile.TemporaryDirectory(prefix="dataset-") as scratch:
        folder = _materialise(files, Path(scratch))
        arguments = ["load", "--dataset", dataset, "--files", str(folder)]
        if database:
            arguments += ["--database", database]
        if dataload_main(arguments) != 0:
            raise SystemExit(2)


def _export(database: str, out: str, export_id: str, layout_database: str | None = None) -> None:
    from training.dataload.__main__ import main as dataload_main

    arguments = ["export", "--database", database, "--out", out, "--export-id", export_id]
    if layout_database:
        arguments += ["--as-database", layout_database]
    if dataload_main(arguments) != 0:
        raise SystemExit(2)


def _bundle_card(bundle: Path) -> ModelCard:
    """The card of a bundle folder for ``show``: only beside the model it describes (a tampered or
    swapped model.onnx would otherwise be summarised as the card's model), and a card that is not a
    model card is named in one line, not in a page of validation errors."""
    card_file = bundle / "model_card.json"
    if not card_file.is_file():
        raise ValueError(f"no model_card.json in {bundle}")
    read_bundle_card(bundle)  # RegistryError: no model.onnx, a hash mismatch, not JSON
    try:
        return ModelCard.model_validate_json(card_file.read_bytes())
    except ValidationError as error:
        problems = [f"{'.'.join(map(str, e['loc'])) or 'card'}: {e['msg']}" for e in error.errors()]
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise ValueError(f"{card_file} is not a valid model card: {'; '.join(problems[:3])}{more}") from None


def _loop(args: argparse.Namespace) -> int:
    """The retraining loop: the same steps the Step Functions pipeline runs in AWS."""
    if args.dataset not in BUILT_IN:
        raise ValueError(f"loop runs the built-in datasets {sorted(BUILT_IN)}, not {args.dataset!r}")
    _config(args)  # invalid training settings fail before anything is loaded or exported
    database = args.database or args.dataset
    if args.files:
        _load(args.dataset, args.files, database)
    export_id = f"{args.dataset}-{datetime.now(UTC).strftime('%Y%m%d%H%M%S')}-{uuid.uuid4().hex[:8]}"
    _export(database, args.exports, export_id, layout_database=args.dataset)
    args.source, args.spec_file = f"export:{args.exports}#{export_id}", None
    with tempfile.TemporaryDirectory(prefix="loop-") as scratch:
        bundle = Path(scratch) / "bundle"
        _train(args, str(bundle), args.registry, in_loop=True)
        args.candidate = str(bundle)  # gated and registered as by register (args.command stays "loop")
        return _gate_or_register(args)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = _parse(sys.argv[1:] if argv is None else argv)
    try:
        if args.command == "show":
            print(card_summary(_bundle_card(args.bundle)))
            return 0
        if args.command == "train":
            _train(args, args.out, args.champion_registry)
            return 0
        if args.command == "load":
            _load(args.dataset, args.files, args.database)
            return 0
        if args.command == "export":
            _export(args.database, args.out, args.export_id)
            return 0
        if args.command in ("gate", "register"):
            return _gate_or_register(args)
        return _loop(args)
    except (ValueError, OSError, RegistryError, StorageError, ExportReadError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # No traceback: a bundle is written only once training is done (card last), and an interrupted
        # registration is completed by registering again.
        print(f"error: {args.command} interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        setting = aws_setting_error(error)
        if setting is not None:
            print(f"error: {setting}", file=sys.stderr)
            return 2
        # Not 1: for gate, register and loop that means "the candidate lost the gate".
        log.exception("unexpected fault")
        print(f"error: unexpected {type(error).__name__}: {error}", file=sys.stderr)
        return 3
