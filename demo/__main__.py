"""The local end-to-end demo (``make demo``): train → serve the API → score a file dropped in S3.

1. Trains the credit_risk champion from the copy the repository ships (``--skip-training`` loads
   the committed bundle instead) and prints its card summary.
2. Starts an S3/SQS emulator (moto server) and the local API server, both on 127.0.0.1.
3. Scores one application over HTTP, shows a rejected request, and reads the model endpoint.
4. Drops a CSV (good rows and a few bad ones) into ``incoming/`` of an emulated bucket whose
   notifications go to SQS, runs the batch Lambda on the delivered message, and prints the
   manifest and the first scored rows.
Everything stops when the demo ends; outputs stay in ``.demo/``.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path
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
SHIPPED_DATA = REPO_ROOT / "training" / "data" / "credit_risk_dataset.csv.gz"


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

        print(card_summary(ModelCard.model_validate_json((COMMITTED_BUNDLE / "model_card.json").read_text())))
        return COMMITTED_BUNDLE
    _section("Training credit_risk from the shipped copy (CV of 3 candidates, calibration, ONNX export)")
    bundle = WORK_DIR / "bundle"
    card = train_bundle(load_dataset("credit_risk"), bundle)
    print(card_summary(card))
    return bundle


def demo_api(bundle: Path, env: dict[str, str]) -> None:
    from localapi.server import sample_application

    port = free_loopback_port()
    base = f"http://{LOOPBACK}:{port}"
    command = [sys.executable, "-m", "localapi", "--port", str(port), "--bundle", str(bundle)]
    with background_server(command, f"{base}/v1/health", env=env, cwd=REPO_ROOT):
        _section(f"Scoring API on {base} (API Gateway proxy events into the Lambda handler)")
        application = sample_application(bundle / "model_card.json")
        print("POST /v1/score", json.dumps(application))
        status, body = _http("POST", f"{base}/v1/score", application)
        print(status, json.dumps(body, indent=2))
        bad = {"features": {**application["features"], "loan_grade": "Z"}}
        print("\nPOST /v1/score with an unknown loan_grade:")
        status, body = _http("POST", f"{base}/v1/score", bad)
        print(status, json.dumps(body, indent=2))
        status, body = _http("GET", f"{base}/v1/model")
        print(f"\nGET /v1/model -> {status}: version {body.get('model_version')}, ", end="")
        print(f"champion {body.get('champion')}")


def _demo_csv(rows: int = 200) -> bytes:
    """Applications from the shipped data (label column dropped) plus two rows with bad values."""
    with gzip.open(SHIPPED_DATA, "rt", newline="") as source:
        reader = csv.DictReader(source)
        records = [row for _, row in zip(range(rows), reader, strict=False)]
    fields = [name for name in records[0] if name not in ("loan_status", "person_age")]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=["application_id", *fields], extrasaction="ignore")
    writer.writeheader()
    for number, record in enumerate(records, start=1):
        writer.writerow({"application_id": f"A{number:05d}", **record})
    writer.writerow({**records[0], "application_id": "BAD-1", "loan_grade": "Z"})
    writer.writerow({**records[1], "application_id": "BAD-2", "person_income": "-5"})
    return out.getvalue().encode()


def demo_batch(bundle: Path, env: dict[str, str]) -> None:
    import boto3

    from lambdas.batch.local import create_notified_bucket, drain_queue_once

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
            }
        )
        s3, sqs = boto3.client("s3"), boto3.client("sqs")
        queue_url = create_notified_bucket(s3, sqs, "loan-scoring-demo")
        key = "incoming/demo/applications 2026-11.csv"
        _section(f"Batch: s3://loan-scoring-demo/{key} -> SQS -> batch Lambda (emulator at {endpoint})")
        s3.put_object(Bucket="loan-scoring-demo", Key=key, Body=_demo_csv())
        manifests: list[dict[str, Any]] = []
        for _ in range(5):  # the first message may be the s3:TestEvent
            manifests += drain_queue_once(sqs, queue_url, s3).manifests
            if manifests:
                break
        if not manifests:
            raise RuntimeError("the batch Lambda produced no manifest")
        manifest = manifests[0]
        print(json.dumps(manifest, indent=2))
        listing = s3.list_objects_v2(Bucket="loan-scoring-demo")
        keys = [item["Key"] for item in listing.get("Contents", [])]
        print("\nobjects in the bucket:", *sorted(keys), sep="\n  ")
        scored_key = next(k for k in keys if k.startswith("scored/"))
        scored = s3.get_object(Bucket="loan-scoring-demo", Key=scored_key)["Body"].read().decode()
        print(f"\nfirst rows of {scored_key}:")
        print("\n".join(scored.splitlines()[:4]))
        rejected_key = next(k for k in keys if k.startswith("rejected/"))
        rejected = s3.get_object(Bucket="loan-scoring-demo", Key=rejected_key)["Body"].read().decode()
        print(f"\n{rejected_key}:\n{rejected.strip()}")
        WORK_DIR.mkdir(exist_ok=True)
        (WORK_DIR / "scored.csv").write_text(scored)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demo", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--skip-training", action="store_true", help="use the committed champion bundle")
    args = parser.parse_args(argv)
    bypass_proxies_for_loopback()  # behind a proxy, 127.0.0.1 must still be reached directly
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "POWERTOOLS_TRACE_DISABLED": "true"}
    bundle = train_or_load(args.skip_training)
    demo_api(bundle, env)
    demo_batch(bundle, env)
    _section("Done: the API and the batch path scored with the same ONNX bundle; outputs are in .demo/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
