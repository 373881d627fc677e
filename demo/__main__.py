"""The local end-to-end demo (``make demo``): train → serve the API → score a file dropped in S3.

1. Trains the credit_risk champion from the copy the repository ships (``--skip-training`` loads
   the committed bundle instead) and prints its card summary.
2. Starts the local API server on 127.0.0.1, scores one application over HTTP, shows a rejected
   request, and reads the model endpoint.
3. Starts an S3/SQS emulator (moto server) on 127.0.0.1, drops a CSV (200 applications sampled at
   random, with a fixed seed, from the shipped data, plus two planted bad rows) into ``incoming/`` of
   an emulated bucket whose notifications go to SQS, runs the batch Lambda on the delivered message,
   and prints the manifest, the first scored rows and the rejected rows.
Each step's result is checked (status codes, model version, decisions, rows in = scored + rejected): a
wrong result, a missing or corrupt data file or a server that cannot start ends the demo with one
``demo: error: …`` line and exit code 1; Ctrl-C or SIGTERM stops it with exit code 130. The servers
are stopped on every path; outputs stay in ``.demo/``.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import json
import os
import random
import signal
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

from localapi.background import (
    LOOPBACK,
    background_server,
    bypass_proxies_for_loopback,
    free_loopback_port,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
WORK_DIR = REPO_ROOT / ".demo"
COMMITTED_BUNDLE = REPO_ROOT / "model_artifacts" / "credit_risk"
SHIPPED_DATA = REPO_ROOT / "training" / "data" / "credit_risk_dataset.csv.gz"  # what training reads
BUCKET = "loan-scoring-demo"
# The demo file's rows are a random sample of the shipped data, whose order is not random (its first
# rows are mostly defaulters); a fixed seed drops the same file, with the same results, on every run.
SAMPLE_SEED = 2026
# The demo file's rows with bad values, and the field each one must be rejected for.
BAD_ROWS = {"BAD-1": "loan_grade", "BAD-2": "person_income"}


class DemoError(Exception):
    """A step of the demo did not give the expected result (reported as one line, exit code 1)."""


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise DemoError(message)


def check_shipped_data(path: Path) -> None:
    """Fail before anything starts when the shipped data file is missing or corrupt (not gzip, cut
    short, or without the columns the demo and training use)."""
    shown = path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path
    hint = "restore it with `git checkout -- training/data`"
    try:
        with gzip.open(path, "rt", newline="") as source:
            reader = csv.DictReader(source)
            rows = sum(1 for _ in reader)  # reads to the end: a truncated file fails its gzip check here
            columns = reader.fieldnames or []
    except FileNotFoundError:
        raise DemoError(f"the shipped data file {shown} is missing; {hint}") from None
    except (OSError, EOFError, UnicodeDecodeError, csv.Error) as error:
        raise DemoError(f"the shipped data file {shown} is corrupt ({error}); {hint}") from None
    missing = sorted({"loan_status", "loan_grade", "person_income"} - set(columns))
    if missing or rows < 10:
        raise DemoError(
            f"the shipped data file {shown} is not the credit_risk table "
            f"({rows} rows, missing columns {missing}); {hint}"
        )


def _http(method: str, url: str, body: object | None = None, raw: bytes | None = None) -> tuple[int, Any]:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    headers = {"Content-Type": "application/json"}
    request = urllib.request.Request(url, data=data, method=method, headers=headers)  # noqa: S310 - loopback
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - loopback URL
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _section(title: str) -> None:
    print(f"\n=== {title}", flush=True)


def train_or_load(skip_training: bool) -> Path:
    from training.cli import card_summary
    from training.datasets.catalog import load_dataset
    from training.pipeline import train_bundle

    if skip_training:
        _section(f"Loading the committed champion bundle {COMMITTED_BUNDLE.relative_to(REPO_ROOT)}")
        from lambdas.scoring.card import ModelCard

        card = ModelCard.model_validate_json((COMMITTED_BUNDLE / "model_card.json").read_text())
        # Nothing is trained in this run: the time is the card's, from when the bundle was made.
        took = f"training took {card.lineage.training_seconds:.1f} s"
        print(card_summary(card).replace(took, f"{took} when this card was made"))
        return COMMITTED_BUNDLE
    _section("Training credit_risk from the shipped copy (CV of 3 candidates, calibration, ONNX export)")
    bundle = WORK_DIR / "bundle"
    card = train_bundle(load_dataset("credit_risk"), bundle)
    print(card_summary(card))
    return bundle


def demo_api(bundle: Path, env: dict[str, str]) -> None:
    from localapi.server import sample_application

    version = _model_version(bundle)
    port = free_loopback_port()
    base = f"http://{LOOPBACK}:{port}"
    command = [sys.executable, "-m", "localapi", "--port", str(port), "--bundle", str(bundle)]
    with background_server(command, f"{base}/v1/health", env=env, cwd=REPO_ROOT):
        _section(f"Scoring API on {base} (API Gateway proxy events into the Lambda handler)")
        application = sample_application(bundle / "model_card.json")
        print("POST /v1/score", json.dumps(application))
        status, body = _http("POST", f"{base}/v1/score", application)
        print(status, json.dumps(body, indent=2))
        check_score(status, body, version)
        bad = {"features": {**application["features"], "loan_grade": "Z"}}
        print("\nPOST /v1/score with an unknown loan_grade:")
        status, body = _http("POST", f"{base}/v1/score", bad)
        print(status, json.dumps(body, indent=2))
        check_rejected_request(status, body, "features.loan_grade", "unknown_category")
        status, body = _http("GET", f"{base}/v1/model")
        print(f"\nGET /v1/model -> {status}: version {body.get('model_version')}, ", end="")
        print(f"champion {body.get('champion')}")
        served = body.get("model_version")
        _require(
            status == 200 and served == version,
            f"GET /v1/model answered {status}, version {served!r}; expected 200, {version}",
        )


def _model_version(bundle: Path) -> str:
    from lambdas.scoring.card import ModelCard

    return ModelCard.model_validate_json((bundle / "model_card.json").read_bytes()).model_version


def check_score(status: int, body: Any, version: str) -> None:
    """A valid application: 200, this bundle's version, a probability and the decision its threshold gives."""
    _require(
        status == 200 and isinstance(body, dict), f"POST /v1/score answered {status}, expected 200: {body}"
    )
    probability, threshold = body.get("probability_of_default"), body.get("threshold")
    _require(
        isinstance(probability, float | int)
        and 0.0 <= probability <= 1.0
        and isinstance(threshold, float | int),
        f"POST /v1/score gave no probability in [0, 1] and threshold: {body}",
    )
    expected = "decline" if probability >= threshold else "approve"
    _require(
        body.get("decision") == expected and body.get("model_version") == version,
        f"POST /v1/score gave decision {body.get('decision')!r} of version {body.get('model_version')!r}, "
        f"expected {expected!r} of {version}",
    )


def check_rejected_request(status: int, body: Any, field: str, code: str) -> None:
    """An invalid application: 400 with the offending field named."""
    details = body.get("error", {}).get("details", []) if isinstance(body, dict) else []
    named = any(detail.get("field") == field and detail.get("code") == code for detail in details)
    _require(
        status == 400 and named,
        f"POST /v1/score with a bad {field} answered {status}, expected 400 naming it",
    )


def _demo_csv(rows: int = 200) -> bytes:
    """Applications sampled from the shipped data (label column dropped) plus two rows with bad values;
    each sampled row's id is its row number in the shipped file."""
    with gzip.open(SHIPPED_DATA, "rt", newline="") as source:
        records = list(csv.DictReader(source))
    sampled = random.Random(SAMPLE_SEED).sample(range(len(records)), min(rows, len(records)))
    fields = [name for name in records[0] if name not in ("loan_status", "person_age")]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=["application_id", *fields], extrasaction="ignore")
    writer.writeheader()
    for index in sorted(sampled):
        writer.writerow({"application_id": f"A{index + 1:05d}", **records[index]})
    # Rows 2 and 3 of the shipped file are valid, so each bad row is rejected for its one bad value.
    writer.writerow({**records[1], "application_id": "BAD-1", "loan_grade": "Z"})
    writer.writerow({**records[2], "application_id": "BAD-2", "person_income": "-5"})
    return out.getvalue().encode()


def demo_batch(bundle: Path, env: dict[str, str]) -> None:
    import boto3

    from lambdas.batch.local import create_notified_bucket, drain_queue_once

    version = _model_version(bundle)
    port = free_loopback_port()
    endpoint = f"http://{LOOPBACK}:{port}"
    command = [sys.executable, "-m", "moto.server", "-H", LOOPBACK, "-p", str(port)]
    with background_server(command, f"{endpoint}/moto-api/", env=env, cwd=REPO_ROOT):
        os.environ.update(
            {
                "AWS_ENDPOINT_URL": endpoint,
                "AWS_ACCESS_KEY_ID": "demo",
                "AWS_SECRET_ACCESS_KEY": "demo",
                "AWS_DEFAULT_REGION": "us-east-1",
                "MODEL_BUNDLE_DIR": str(bundle.resolve()),
                "POWERTOOLS_METRICS_NAMESPACE": "LoanScoringDemo",
                "POWERTOOLS_TRACE_DISABLED": "true",
                "POWERTOOLS_LOG_LEVEL": "WARNING",
                # The handler's metrics are CloudWatch EMF lines on stdout: raw JSON in the demo's output
                "POWERTOOLS_METRICS_DISABLED": "true",
            }
        )
        s3, sqs = boto3.client("s3"), boto3.client("sqs")
        queue_url = create_notified_bucket(s3, sqs, BUCKET)
        key = "incoming/demo/applications 2026-11.csv"
        _section(f"Batch: s3://{BUCKET}/{key} -> SQS -> batch Lambda (emulator at {endpoint})")
        payload = _demo_csv()
        s3.put_object(Bucket=BUCKET, Key=key, Body=payload)
        manifests: list[dict[str, Any]] = []
        for _ in range(5):  # the first message may be the s3:TestEvent
            manifests += drain_queue_once(sqs, queue_url, s3).manifests
            if manifests:
                break
        _require(bool(manifests), "the batch Lambda produced no manifest")
        manifest = manifests[0]
        print(json.dumps(manifest, indent=2))
        listing = s3.list_objects_v2(Bucket=BUCKET)
        keys = [item["Key"] for item in listing.get("Contents", [])]
        print("\nobjects in the bucket:", *sorted(keys), sep="\n  ")
        outputs = manifest.get("outputs") or {}
        _require(
            bool(outputs.get("scored")) and bool(outputs.get("rejected")),
            f"the manifest names no scored and rejected files (status {manifest.get('status')!r}, "
            f"error {manifest.get('error')!r})",
        )
        scored = s3.get_object(Bucket=BUCKET, Key=outputs["scored"])["Body"].read().decode()
        print(f"\nfirst rows of {outputs['scored']}:")
        print("\n".join(scored.splitlines()[:4]))
        rejected = s3.get_object(Bucket=BUCKET, Key=outputs["rejected"])["Body"].read().decode()
        print(f"\n{outputs['rejected']}:\n{rejected.strip()}")
        check_batch(manifest, scored, rejected, rows_in=_count_rows(payload.decode()), version=version)
        _write_atomically(WORK_DIR / "scored.csv", scored)


def _count_rows(text: str) -> int:
    return sum(1 for _ in csv.DictReader(io.StringIO(text)))


def check_batch(manifest: dict[str, Any], scored: str, rejected: str, *, rows_in: int, version: str) -> None:
    """The file's contract: every row scored or rejected, the outputs match the manifest's counts, the
    bundle's version on every scored row, and each bad row rejected for its bad field."""
    counts = manifest.get("counts") or {}
    _require(manifest.get("status") == "succeeded", f"the batch manifest says {manifest.get('status')!r}")
    _require(
        counts.get("rows_in") == rows_in == counts.get("rows_scored", 0) + counts.get("rows_rejected", 0),
        f"rows in the file {rows_in}, manifest counts {counts}: rows in must equal rows scored + rejected",
    )
    scored_rows = list(csv.DictReader(io.StringIO(scored)))
    rejected_rows = list(csv.DictReader(io.StringIO(rejected)))
    _require(
        len(scored_rows) == counts["rows_scored"] and len(rejected_rows) == counts["rows_rejected"],
        f"the outputs hold {len(scored_rows)} scored and {len(rejected_rows)} rejected rows, "
        f"the manifest counts {counts['rows_scored']} and {counts['rows_rejected']}",
    )
    versions = {row.get("model_version") for row in scored_rows}
    _require(
        versions == {version},
        f"scored rows carry model versions {sorted(map(str, versions))}, expected {version}",
    )
    errors = {row.get("application_id"): row.get("error", "") for row in rejected_rows}
    for application_id, field in BAD_ROWS.items():
        _require(
            field in errors.get(application_id, ""),
            f"row {application_id} was not rejected for {field} (rejected: {errors.get(application_id)!r})",
        )


def _write_atomically(path: Path, text: str) -> None:
    """Write to a temporary name, then rename: an interrupted demo leaves the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    temporary.replace(path)


def _raise_interrupt(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (a closed terminal, a CI timeout, `kill`) unwinds like Ctrl-C, so that the servers and
    the training worker processes are stopped instead of being left running."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demo", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--skip-training", action="store_true", help="use the committed champion bundle")
    args = parser.parse_args(argv)
    bypass_proxies_for_loopback()  # behind a proxy, 127.0.0.1 must still be reached directly
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "POWERTOOLS_TRACE_DISABLED": "true"}
    with _sigterm_as_interrupt():
        try:
            check_shipped_data(SHIPPED_DATA)
            bundle = train_or_load(args.skip_training)
            demo_api(bundle, env)
            demo_batch(bundle, env)
        except KeyboardInterrupt:
            print("\ndemo: interrupted; what it started is stopped", file=sys.stderr)
            return 130
        # Expected failures (a wrong result, a bad data file, a server that cannot start, an unreachable
        # emulator) as one line; anything else is a bug and keeps its traceback.
        except (DemoError, OSError, EOFError, RuntimeError, ValueError) as error:
            print(f"demo: error: {' '.join(str(error).split())}", file=sys.stderr)
            return 1
    _section("Done: the API and the batch path scored with the same ONNX bundle; outputs are in .demo/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
