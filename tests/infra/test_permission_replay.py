"""Permission replay: the Lambdas' real code paths run against the moto server while every AWS call they
make is recorded, then each call is checked against the IAM policy the synthesised template gives that
function's role (the mapping and the evaluation are in tests/infra/iam_replay.py).

moto does not enforce IAM. A past review found by reading that the batch role could not read
manifests/, which lambdas/batch/service.py reads before every file: on AWS every file would have failed
with AccessDenied. These tests catch that class of bug mechanically; mutated templates and calls the
design forbids show that the evaluator does deny.

Emulated resources are mapped to the stack's by what they do, never by name: the data bucket is the one
whose notifications feed the batch function's SQS event source, the artifact bucket the one its
MODEL_BUNDLE_URI names; the functions are found by their Powertools service name.
"""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
from boto3.s3.transfer import TransferConfig

from infra.scoring_functions import service_name
from lambdas.api.wiring import create_handler
from lambdas.batch import s3_store
from lambdas.batch.local import DrainResult, drain_queue
from lambdas.local_context import LocalLambdaContext
from tests.batch.conftest import (  # noqa: F401  (fixtures)
    NotifiedBucket,
    batch_bundle,
    batch_environment,
    notified_bucket,
)
from tests.batch.helpers import BAD_ROWS, GOOD_ROWS, csv_bytes, file_bytes
from tests.infra.conftest import Synthesised, role_statements
from tests.infra.iam_replay import (
    REGION,
    CallRecorder,
    Names,
    RecordedCall,
    ReplayError,
    Stack,
    check,
    denied,
    report,
)
from tests.integration.conftest import moto_endpoint, s3_client  # noqa: F401  (fixtures)

BATCH = "batch function"
API = "API function"
# Lambda's SQS event source mapping polls and deletes messages with the function's execution role;
# lambdas/batch/local.py plays its part here.
EVENT_SOURCE = "event source mapping"
EVENT_SOURCE_OPERATIONS = {"ReceiveMessage", "GetQueueAttributes", "DeleteMessage"}
MIXED_ROWS = [*GOOD_ROWS, *(row for row, _ in BAD_ROWS)]
EVENTS_DIR = Path(__file__).resolve().parents[1] / "events"


@pytest.fixture(scope="module")
def stack(synthesised: Synthesised) -> Stack:
    """The default app: both functions serve the bundle packaged with them."""
    return Stack(synthesised.template_json)


@pytest.fixture(scope="module")
def registry_stack(synthesised_with_registry_model: Synthesised) -> Stack:
    """modelBundleVersion set: both functions load that registered bundle from the artifact bucket."""
    return Stack(synthesised_with_registry_model.template_json)


@dataclass(frozen=True)
class BatchParts:
    """The batch function, its role, and the queue and bucket the stack wires it to (logical ids)."""

    function: str
    role: str
    queue: str
    data_bucket: str

    @classmethod
    def of(cls, stack: Stack) -> BatchParts:
        function = stack.function(service_name("batch"))
        queue = stack.event_source_queue(function)
        return cls(function, stack.role_of(function), queue, stack.bucket_notifying(queue))


def upload_bundle(s3: Any, bucket: str, prefix: str, bundle: Path) -> None:
    """The test bundle registered under the stack's configured registry prefix, its card naming the
    version of that prefix (the Lambdas refuse a card that is not the deployed MODEL_BUNDLE_VERSION)."""
    version = prefix.rstrip("/").rpartition("/")[2]
    for path in sorted(bundle.iterdir()):
        body = path.read_bytes()
        if path.name == "model_card.json":
            body = json.dumps({**json.loads(body), "model_version": version}).encode()
        s3.put_object(Bucket=bucket, Key=f"{prefix}{path.name}", Body=body)


def new_bucket(s3: Any, kind: str) -> str:
    name = f"{kind}-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


# ---------------------------------------------------------------------------------------------------
# The batch function, driven through the emulator
# ---------------------------------------------------------------------------------------------------


@dataclass
class BatchReplay:
    """A notified bucket configured like the stack's data bucket; the code's calls are recorded."""

    bucket: NotifiedBucket
    recorder: CallRecorder
    event_source: Any  # the SQS client of the (emulated) event source mapping
    extra_buckets: dict[str, str] = field(default_factory=dict)  # emulated name -> logical id

    def drain(self) -> DrainResult:
        # Manifests are read back with the test's own client (not recorded).
        return drain_queue(self.event_source, self.bucket.queue_url, self.bucket.s3)

    def names(self, parts: BatchParts) -> Names:
        queue_name = self.bucket.queue_url.rstrip("/").rsplit("/", 1)[-1]
        return Names(
            buckets={self.bucket.bucket: parts.data_bucket, **self.extra_buckets},
            queues={queue_name: parts.queue},
        )


def start_batch_replay(
    stack: Stack, parts: BatchParts, bucket: NotifiedBucket, endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> BatchReplay:
    if stack.is_versioned(parts.data_bucket):  # then the function reads inputs by version id
        bucket.s3.put_bucket_versioning(Bucket=bucket.bucket, VersioningConfiguration={"Status": "Enabled"})
    recorder = CallRecorder()
    # Every client the function's code makes with boto3.client() (lambdas/batch/s3_store.py) records.
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", recorder.session(BATCH))
    event_source = recorder.session(EVENT_SOURCE).client("sqs", endpoint_url=endpoint, region_name=REGION)
    return BatchReplay(bucket, recorder, event_source)


def assert_scored(result: DrainResult, rows_scored: int, rows_rejected: int) -> dict[str, Any]:
    assert not result.failed_message_ids
    (manifest,) = result.manifests
    assert manifest["status"] == "succeeded", manifest
    assert (manifest["counts"]["rows_scored"], manifest["counts"]["rows_rejected"]) == (
        rows_scored,
        rows_rejected,
    )
    return manifest


def assert_failed(result: DrainResult, code: str) -> None:
    assert not result.failed_message_ids
    (manifest,) = result.manifests
    assert (manifest["status"], manifest["error"]["code"]) == ("failed", code)


def score_mixed_file(file_format: str) -> Callable[[BatchReplay, pytest.MonkeyPatch], None]:
    def run(replay: BatchReplay, monkeypatch: pytest.MonkeyPatch) -> None:
        replay.bucket.put(f"incoming/replay/mixed.{file_format}", file_bytes(file_format, MIXED_ROWS))
        assert_scored(replay.drain(), len(GOOD_ROWS), len(BAD_ROWS))

    return run


def score_with_multipart_uploads(replay: BatchReplay, monkeypatch: pytest.MonkeyPatch) -> None:
    # Outputs above 64 MiB go up in parts; a 1-byte threshold takes that path with a small file.
    monkeypatch.setattr(s3_store, "_TRANSFER", TransferConfig(multipart_threshold=1, max_concurrency=1))
    replay.bucket.put("incoming/replay/large.csv", csv_bytes(MIXED_ROWS))
    assert_scored(replay.drain(), len(GOOD_ROWS), len(BAD_ROWS))


def corrupt_gzip(replay: BatchReplay, monkeypatch: pytest.MonkeyPatch) -> None:
    replay.bucket.put("incoming/replay/corrupt.csv.gz", b"this is not gzip at all")
    assert_failed(replay.drain(), "corrupt_gzip")


def unsupported_name(replay: BatchReplay, monkeypatch: pytest.MonkeyPatch) -> None:
    replay.bucket.put("incoming/replay/notes.txt", b"not a table")
    assert_failed(replay.drain(), "unsupported_format")


def redelivered_after_manifest(replay: BatchReplay, monkeypatch: pytest.MonkeyPatch) -> None:
    key = "incoming/replay/twice.csv"
    replay.drain()  # the s3:TestEvent sent when the notification was configured
    replay.bucket.put(key, csv_bytes(MIXED_ROWS))
    # Keep a copy of the notification (left visible) to deliver it again once its manifest is complete
    (peeked,) = replay.bucket.sqs.receive_message(
        QueueUrl=replay.bucket.queue_url, WaitTimeSeconds=1, VisibilityTimeout=0
    )["Messages"]
    body = peeked["Body"]
    assert "twice.csv" in body  # the key is URL-encoded in the notification
    first = assert_scored(replay.drain(), len(GOOD_ROWS), len(BAD_ROWS))
    replay.bucket.sqs.send_message(QueueUrl=replay.bucket.queue_url, MessageBody=body)
    already = len(replay.recorder.calls)
    again = assert_scored(replay.drain(), len(GOOD_ROWS), len(BAD_ROWS))
    assert again["timings"] == first["timings"]  # skipped: the complete manifest was not rewritten
    assert "PutObject" not in {call.operation for call in replay.recorder.calls[already:]}


def deleted_before_delivery(replay: BatchReplay, monkeypatch: pytest.MonkeyPatch) -> None:
    key = "incoming/replay/gone.csv"
    replay.bucket.put(key, csv_bytes(GOOD_ROWS))
    replay.bucket.s3.delete_object(Bucket=replay.bucket.bucket, Key=key)
    result = replay.drain()
    assert (result.failed_message_ids, result.manifests) == ([], [])  # skipped as gone, not retried


@dataclass(frozen=True)
class Scenario:
    name: str
    run: Callable[[BatchReplay, pytest.MonkeyPatch], None]
    operations: frozenset[str]  # what the function must have called (so a replay is never vacuous)


_SCORES = frozenset({"HeadObject", "GetObject", "PutObject"})
BATCH_SCENARIOS = [
    Scenario("csv-good-and-bad-rows", score_mixed_file("csv"), _SCORES),
    Scenario("csv.gz", score_mixed_file("csv.gz"), _SCORES),
    Scenario("jsonl", score_mixed_file("jsonl"), _SCORES),
    Scenario("parquet", score_mixed_file("parquet"), _SCORES),
    Scenario(
        "multipart-uploads",
        score_with_multipart_uploads,
        _SCORES | {"CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload"},
    ),
    Scenario("corrupt-gzip", corrupt_gzip, _SCORES),
    Scenario("unsupported-name", unsupported_name, frozenset({"HeadObject", "GetObject", "PutObject"})),
    Scenario("redelivered-after-complete-manifest", redelivered_after_manifest, _SCORES),
    Scenario("deleted-before-delivery", deleted_before_delivery, frozenset({"HeadObject"})),
]


def assert_allowed(stack: Stack, role: str, calls: list[RecordedCall], names: Names) -> None:
    decisions = check(stack, role, calls, names)
    assert decisions, "nothing was checked"
    refused = [d for d in decisions if not d.allowed]
    assert not refused, report(stack, role, refused)


@pytest.mark.parametrize("scenario", BATCH_SCENARIOS, ids=lambda scenario: scenario.name)
def test_given_a_batch_scenario_when_its_calls_are_replayed_then_the_batch_role_allows_each_one(
    stack: Stack,
    notified_bucket: NotifiedBucket,  # noqa: F811
    moto_endpoint: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    scenario: Scenario,
) -> None:
    # Given the batch function's role and wiring in the default stack
    parts = BatchParts.of(stack)
    replay = start_batch_replay(stack, parts, notified_bucket, moto_endpoint, monkeypatch)

    # When the scenario runs through the real handler, recorded
    scenario.run(replay, monkeypatch)

    # Then it made the calls the scenario is about, and the role allows every one of them
    assert scenario.operations <= replay.recorder.operations(BATCH), replay.recorder.calls
    assert replay.recorder.operations(EVENT_SOURCE) >= EVENT_SOURCE_OPERATIONS
    assert_allowed(stack, parts.role, replay.recorder.calls, replay.names(parts))


def test_given_a_versioned_data_bucket_when_a_file_is_scored_then_inputs_are_read_by_version_id(
    stack: Stack,
    notified_bucket: NotifiedBucket,  # noqa: F811
    moto_endpoint: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The stack's data bucket is versioned, so reads need s3:GetObjectVersion: the replay must see that
    parts = BatchParts.of(stack)
    assert stack.is_versioned(parts.data_bucket)
    replay = start_batch_replay(stack, parts, notified_bucket, moto_endpoint, monkeypatch)

    score_mixed_file("csv")(replay, monkeypatch)

    reads = [
        c
        for c in replay.recorder.calls
        if c.operation == "GetObject" and c.params["Key"].startswith("incoming/")
    ]
    assert reads
    assert all(c.params.get("VersionId") for c in reads), reads
    actions = {d.requirement.action for d in check(stack, parts.role, reads, replay.names(parts))}
    assert "s3:GetObjectVersion" in actions


def test_given_a_registered_model_when_the_batch_loads_it_from_s3_and_scores_then_its_role_allows_each_call(
    registry_stack: Stack,
    notified_bucket: NotifiedBucket,  # noqa: F811
    s3_client: Any,  # noqa: F811
    batch_bundle: Path,  # noqa: F811
    moto_endpoint: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given the registered bundle at the prefix the stack configures, in a bucket playing the artifact bucket
    parts = BatchParts.of(registry_stack)
    artifacts, prefix = registry_stack.bundle_location(parts.function)
    registry = new_bucket(s3_client, "artifacts")
    upload_bundle(s3_client, registry, prefix, batch_bundle)
    environment = registry_stack.environment(
        parts.function, {artifacts: registry, parts.data_bucket: notified_bucket.bucket}
    )
    monkeypatch.setenv("MODEL_BUNDLE_URI", environment["MODEL_BUNDLE_URI"])
    replay = start_batch_replay(registry_stack, parts, notified_bucket, moto_endpoint, monkeypatch)
    replay.extra_buckets[registry] = artifacts

    # When a file is scored (the model is loaded from S3 on the first one)
    score_mixed_file("csv")(replay, monkeypatch)

    # Then the bundle came from the registry, and every call is allowed
    loaded = {c.params["Key"] for c in replay.recorder.calls if c.params.get("Bucket") == registry}
    assert loaded == {f"{prefix}model_card.json", f"{prefix}model.onnx"}
    assert_allowed(registry_stack, parts.role, replay.recorder.calls, replay.names(parts))


# ---------------------------------------------------------------------------------------------------
# The API function
# ---------------------------------------------------------------------------------------------------


def test_given_a_registered_model_when_the_api_loads_it_from_s3_and_answers_then_its_role_allows_each_call(
    registry_stack: Stack,
    s3_client: Any,  # noqa: F811
    batch_bundle: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given the API function's environment from the template, the artifact bucket mapped to an emulated one
    function = registry_stack.function(service_name("api"))
    role = registry_stack.role_of(function)
    artifacts, prefix = registry_stack.bundle_location(function)
    registry = new_bucket(s3_client, "artifacts")
    upload_bundle(s3_client, registry, prefix, batch_bundle)
    environment = registry_stack.environment(function, {artifacts: registry})
    recorder = CallRecorder()
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", recorder.session(API))

    # When it cold-starts (lambdas/api/bundle.py loads the bundle) and answers requests
    handler = create_handler(environment)
    for name in ("health.json", "score.json", "model.json"):
        event = json.loads((EVENTS_DIR / name).read_text())
        response = handler(event, LocalLambdaContext("loan-scoring-api"))  # type: ignore[arg-type]
        assert response["statusCode"] == 200, (name, response["body"])

    # Then it read exactly the registered bundle, and its role allows every call
    assert {(c.operation, c.params["Key"]) for c in recorder.calls} == {
        ("GetObject", f"{prefix}model_card.json"),
        ("GetObject", f"{prefix}model.onnx"),
    }
    assert_allowed(registry_stack, role, recorder.calls, Names(buckets={registry: artifacts}))


# ---------------------------------------------------------------------------------------------------
# The checks can fail: mutated templates deny the replayed calls
# ---------------------------------------------------------------------------------------------------


def _without_resource(template: dict[str, Any], role: str, action: str, suffix: str) -> None:
    """Drop the ``.../<suffix>`` resource from the role's statements granting ``action``."""
    for statement in role_statements(template["Resources"], role):
        if action in statement["Action"] and isinstance(statement["Resource"], list):
            statement["Resource"] = [
                r for r in statement["Resource"] if not json.dumps(r).endswith(f'"{suffix}"]]}}')
            ]


def drop_manifest_read(template: dict[str, Any], parts: BatchParts) -> None:
    _without_resource(template, parts.role, "s3:GetObject*", "/manifests/*")


def drop_manifest_write(template: dict[str, Any], parts: BatchParts) -> None:
    _without_resource(template, parts.role, "s3:PutObject", "/manifests/*")


def list_only_read_prefixes(template: dict[str, Any], parts: BatchParts) -> None:
    """grant_read_under(..., probes_missing_keys=False): listing limited by s3:prefix."""
    for statement in role_statements(template["Resources"], parts.role):
        if statement["Action"] == "s3:ListBucket" and statement["Resource"] == {
            "Fn::GetAtt": [parts.data_bucket, "Arn"]
        }:
            statement["Condition"] = {"StringLike": {"s3:prefix": ["incoming/*", "manifests/*"]}}


def drop_data_key_grant(template: dict[str, Any], parts: BatchParts) -> None:
    key, _ = Stack(template).bucket_key(parts.data_bucket)
    for resource in template["Resources"].values():
        if resource["Type"] == "AWS::IAM::Policy" and {"Ref": parts.role} in resource["Properties"]["Roles"]:
            document = resource["Properties"]["PolicyDocument"]
            document["Statement"] = [
                s for s in document["Statement"] if s["Resource"] != {"Fn::GetAtt": [key, "Arn"]}
            ]


def key_policy_without_iam_delegation(template: dict[str, Any], parts: BatchParts) -> None:
    key, _ = Stack(template).bucket_key(parts.data_bucket)
    policy = template["Resources"][key]["Properties"]["KeyPolicy"]
    policy["Statement"] = [s for s in policy["Statement"] if s.get("Action") != "kms:*"]


def drop_delete_message(template: dict[str, Any], parts: BatchParts) -> None:
    for statement in role_statements(template["Resources"], parts.role):
        if isinstance(statement["Action"], list) and "sqs:DeleteMessage" in statement["Action"]:
            statement["Action"] = [a for a in statement["Action"] if a != "sqs:DeleteMessage"]


def bucket_policy_denies_manifest_reads(template: dict[str, Any], parts: BatchParts) -> None:
    """A bucket-policy Deny of manifest reads for everyone: an explicit deny wins over the role's allow."""
    for resource in template["Resources"].values():
        if resource["Type"] == "AWS::S3::BucketPolicy" and resource["Properties"]["Bucket"] == {
            "Ref": parts.data_bucket
        }:
            resource["Properties"]["PolicyDocument"]["Statement"].append(
                {
                    "Effect": "Deny",
                    "Principal": {"AWS": "*"},
                    "Action": "s3:GetObject*",
                    "Resource": {
                        "Fn::Join": ["", [{"Fn::GetAtt": [parts.data_bucket, "Arn"]}, "/manifests/*"]]
                    },
                }
            )


# mutation -> the (operation, IAM action) pairs that must then be denied, and nothing else
MUTATIONS: dict[Callable[[dict[str, Any], BatchParts], None], set[tuple[str, str]]] = {
    drop_manifest_read: {("GetObject", "s3:GetObject")},  # the bug a review found by reading
    drop_manifest_write: {("PutObject", "s3:PutObject")},
    list_only_read_prefixes: {("GetObject", "s3:ListBucket")},  # a missing manifest would be a 403
    drop_data_key_grant: {("GetObject", "kms:Decrypt"), ("PutObject", "kms:GenerateDataKey")},
    key_policy_without_iam_delegation: {("GetObject", "kms:Decrypt"), ("PutObject", "kms:GenerateDataKey")},
    drop_delete_message: {("DeleteMessage", "sqs:DeleteMessage")},
    bucket_policy_denies_manifest_reads: {("GetObject", "s3:GetObject")},
}


def test_given_a_mutated_template_when_a_file_is_replayed_then_exactly_the_removed_permission_is_denied(
    stack: Stack,
    notified_bucket: NotifiedBucket,  # noqa: F811
    moto_endpoint: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given one new file replayed through the batch function, allowed by the real template
    parts = BatchParts.of(stack)
    replay = start_batch_replay(stack, parts, notified_bucket, moto_endpoint, monkeypatch)
    score_mixed_file("csv")(replay, monkeypatch)
    calls, names = replay.recorder.calls, replay.names(parts)
    assert not denied(stack, parts.role, calls, names)

    # When each mutation is applied to a copy of the template, then exactly its permission is refused
    wrong = {}
    for mutation, expected in MUTATIONS.items():
        template = copy.deepcopy(dict(stack.template))
        mutation(template, parts)
        refused = {
            (d.requirement.call.operation, d.requirement.action)
            for d in denied(Stack(template), parts.role, calls, names)
        }
        if refused != expected:
            wrong[mutation.__name__] = refused
    assert not wrong, wrong


# ---------------------------------------------------------------------------------------------------
# Least privilege: calls the design forbids are denied (docs/batch.md, infra/batch_scoring.py,
# infra/registered_bundle.py)
# ---------------------------------------------------------------------------------------------------

DATA, ARTIFACTS, QUEUE = "data-bucket", "artifact-bucket", "incoming-queue"


def s3_call(caller: str, operation: str, bucket: str, key: str | None = None, **params: str) -> RecordedCall:
    return RecordedCall(
        caller, "s3", operation, {"Bucket": bucket, **({"Key": key} if key else {}), **params}, 200
    )


@pytest.fixture(scope="module")
def synthetic_names(registry_stack: Stack) -> Names:
    parts = BatchParts.of(registry_stack)
    artifacts, _ = registry_stack.bundle_location(parts.function)
    return Names(buckets={DATA: parts.data_bucket, ARTIFACTS: artifacts}, queues={QUEUE: parts.queue})


def _role(stack: Stack, caller: str) -> str:
    return stack.role_of(stack.function(service_name("batch" if caller == BATCH else "api")))


FORBIDDEN = [
    pytest.param(
        s3_call(BATCH, "DeleteObject", DATA, "incoming/a.csv"), "s3:DeleteObject", id="batch-deletes-input"
    ),
    pytest.param(
        s3_call(BATCH, "DeleteObject", DATA, "scored/a.csv"), "s3:DeleteObject", id="batch-deletes-output"
    ),
    pytest.param(
        s3_call(BATCH, "PutObject", DATA, "incoming/a.csv"), "s3:PutObject", id="batch-writes-input"
    ),
    pytest.param(
        s3_call(BATCH, "PutObject", DATA, "elsewhere/a.csv"), "s3:PutObject", id="batch-writes-elsewhere"
    ),
    pytest.param(s3_call(BATCH, "GetObject", DATA, "scored/a.csv"), "s3:GetObject", id="batch-reads-outputs"),
    pytest.param(
        s3_call(BATCH, "PutObject", ARTIFACTS, "models/m/v/model.onnx"),
        "s3:PutObject",
        id="batch-writes-registry",
    ),
    pytest.param(
        s3_call(BATCH, "GetObject", ARTIFACTS, "models/other/version/model.onnx"),
        "s3:GetObject",
        id="batch-reads-another-registered-version",
    ),
    pytest.param(
        RecordedCall(BATCH, "sqs", "SendMessage", {"QueueUrl": f"http://emulator/123456789012/{QUEUE}"}, 200),
        "sqs:SendMessage",
        id="batch-sends-to-its-queue",
    ),
    pytest.param(
        s3_call(API, "PutObject", ARTIFACTS, "models/m/v/model.onnx"),
        "s3:PutObject",
        id="api-writes-registry",
    ),
    pytest.param(
        s3_call(API, "DeleteObject", ARTIFACTS, "models/m/v/model.onnx"),
        "s3:DeleteObject",
        id="api-deletes-registry",
    ),
    pytest.param(
        s3_call(API, "GetObject", ARTIFACTS, "candidates/run/model.onnx"),
        "s3:GetObject",
        id="api-reads-candidates",
    ),
    pytest.param(
        s3_call(API, "ListObjectsV2", ARTIFACTS, Prefix="candidates/"),
        "s3:ListBucket",
        id="api-lists-candidates",
    ),
    pytest.param(s3_call(API, "ListObjectsV2", ARTIFACTS), "s3:ListBucket", id="api-lists-whole-registry"),
    pytest.param(
        s3_call(API, "GetObject", DATA, "incoming/a.csv"), "s3:GetObject", id="api-reads-batch-files"
    ),
]
ALLOWED = [
    pytest.param(s3_call(BATCH, "PutObject", DATA, "scored/a/b.csv"), id="batch-writes-scored"),
    pytest.param(s3_call(BATCH, "HeadObject", DATA, "incoming/a/b.csv"), id="batch-heads-input"),
    # s3transfer aborts a multipart upload whose part failed (not reachable through the emulator)
    pytest.param(s3_call(BATCH, "AbortMultipartUpload", DATA, "scored/a/b.csv"), id="batch-aborts-an-upload"),
    pytest.param(s3_call(API, "ListObjectsV2", ARTIFACTS, Prefix="models/m/"), id="api-lists-models"),
    pytest.param(
        s3_call(API, "GetObject", ARTIFACTS, "models/m/v2/model.onnx"), id="api-reads-any-registered-version"
    ),
]


@pytest.mark.parametrize(("call", "action"), FORBIDDEN)
def test_given_a_call_the_design_forbids_when_evaluated_then_the_role_is_denied_it(
    registry_stack: Stack, synthetic_names: Names, call: RecordedCall, action: str
) -> None:
    role = _role(registry_stack, call.caller)
    refused = {d.requirement.action for d in denied(registry_stack, role, [call], synthetic_names)}
    assert action in refused, report(
        registry_stack, role, denied(registry_stack, role, [call], synthetic_names)
    )


@pytest.mark.parametrize("call", ALLOWED)
def test_given_a_call_within_the_design_when_evaluated_then_the_role_is_allowed_it(
    registry_stack: Stack, synthetic_names: Names, call: RecordedCall
) -> None:
    role = _role(registry_stack, call.caller)
    refused = denied(registry_stack, role, [call], synthetic_names)
    assert not refused, report(registry_stack, role, refused)


def test_given_a_request_without_tls_when_evaluated_then_the_bucket_and_queue_policies_deny_it(
    registry_stack: Stack, synthetic_names: Names
) -> None:
    role = _role(registry_stack, BATCH)
    calls = [
        s3_call(BATCH, "GetObject", DATA, "incoming/a.csv"),
        RecordedCall(EVENT_SOURCE, "sqs", "ReceiveMessage", {"QueueUrl": QUEUE}, 200),
    ]
    assert not denied(registry_stack, role, calls, synthetic_names)
    reasons = {
        d.requirement.action: d.reason
        for d in denied(registry_stack, role, calls, synthetic_names, secure_transport=False)
    }
    assert "AWS::S3::BucketPolicy" in reasons["s3:GetObject"]
    assert "AWS::SQS::QueuePolicy" in reasons["sqs:ReceiveMessage"]


# ---------------------------------------------------------------------------------------------------
# No silent pass: what the replay cannot judge is an error naming it
# ---------------------------------------------------------------------------------------------------


def test_given_an_operation_missing_from_the_table_when_checked_then_the_error_names_it(
    registry_stack: Stack, synthetic_names: Names
) -> None:
    call = s3_call(BATCH, "RestoreObject", DATA, "incoming/a.csv")
    with pytest.raises(ReplayError, match="no IAM mapping for s3:RestoreObject"):
        check(registry_stack, _role(registry_stack, BATCH), [call], synthetic_names)


def test_given_a_bucket_the_test_did_not_map_when_checked_then_the_error_names_it(
    registry_stack: Stack, synthetic_names: Names
) -> None:
    call = s3_call(BATCH, "GetObject", "someone-elses", "a")
    with pytest.raises(ReplayError, match="bucket 'someone-elses' is not mapped"):
        check(registry_stack, _role(registry_stack, BATCH), [call], synthetic_names)


def test_given_a_condition_key_the_replay_cannot_evaluate_when_it_applies_then_the_check_fails_naming_it(
    registry_stack: Stack, synthetic_names: Names
) -> None:
    parts = BatchParts.of(registry_stack)
    template = copy.deepcopy(dict(registry_stack.template))
    for statement in role_statements(template["Resources"], parts.role):
        if "s3:PutObject" in statement["Action"]:
            statement["Condition"] = {"StringEquals": {"aws:PrincipalTag/team": "scoring"}}
    call = s3_call(BATCH, "PutObject", DATA, "scored/a.csv")
    with pytest.raises(ReplayError, match="condition key 'aws:PrincipalTag/team'"):
        check(Stack(template), parts.role, [call], synthetic_names)
