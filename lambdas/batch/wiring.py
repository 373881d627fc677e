"""Batch-scoring Lambda: S3 ObjectCreated notifications delivered by SQS, one file per record.

Parse (SQS record -> S3 objects), one domain call per object (``process_object``), report partial
batch failures so only the failed messages return to the queue. Powertools objects are created
once, here; decorators in a fixed order (logger outermost, then tracer, then metrics). Lambda enters
through :mod:`lambdas.batch.handler`, which imports this module in its init phase; tests and the
local drain (:mod:`lambdas.batch.local`) call :func:`handler` here directly.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from lambdas.audit import BATCH_FILE, audit_logging_problem
from lambdas.batch.events import ObjectCreated, parse_s3_notification
from lambdas.batch.formats import DEFAULT_CHUNK_ROWS, DEFAULT_CSV_BLOCK_BYTES
from lambdas.batch.manifest import Drift, Manifest
from lambdas.batch.s3_store import S3ObjectStore
from lambdas.batch.service import BatchSettings, FileBusyError, process_object, remove_scratch_left_behind
from lambdas.model_source import (
    MODEL_BUNDLE_URI,
    MODEL_BUNDLE_VERSION,
    BundleUriError,
    BundleVersionError,
    S3Location,
    load_model_from_s3,
    parse_expected_version,
    parse_s3_uri,
)
from lambdas.scoring.runtime import ScoringModel

logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME", "loan-scoring-batch"))
# Patches botocore only, the one library this function calls other services through (S3). By default
# the Tracer would patch every library the X-Ray SDK supports, importing each one it finds at cold start.
tracer = Tracer(patch_modules=["botocore"])
metrics = Metrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "LoanScoring"))
# A failed message is reported in batchItemFailures (SQS returns it after the visibility timeout and, after
# maxReceiveCount, moves it to the dead-letter queue) and never raised as the invocation's error, even when
# it is the only one: a file busy in another invocation is expected under at-least-once delivery and must
# not raise the BatchFailures alarm. That alarm counts MessagesFailed (real failures) and Lambda Errors
# (timeouts, crashes).
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


class SettingsError(RuntimeError):
    """An environment variable of the function is missing or invalid."""


def check_audit_logging(env: Mapping[str, str]) -> None:
    """At cold start: refuse a logging setting under which the "file processed" lines would never reach
    the audit trail (a level above INFO, pretty-printed lines), rather than score files nobody can audit."""
    problem = audit_logging_problem(env)
    if problem is not None:
        raise SettingsError(problem)


def model_bundle_uri() -> S3Location | None:
    """The registered bundle to serve (set by ``modelBundleVersion``), or None for the packaged one."""
    raw = os.environ.get(MODEL_BUNDLE_URI, "").strip()
    if not raw:
        return None
    try:
        return parse_s3_uri(raw)
    except BundleUriError as error:  # the message names MODEL_BUNDLE_URI
        raise SettingsError(str(error)) from None


def model_bundle_version() -> str | None:
    """The version the registered bundle's card must name (set with the URI by ``modelBundleVersion``);
    None: no check (a local run pointing MODEL_BUNDLE_URI at a folder, or the packaged bundle)."""
    try:
        return parse_expected_version(
            os.environ.get(MODEL_BUNDLE_VERSION, ""),
            uri_set=bool(os.environ.get(MODEL_BUNDLE_URI, "").strip()),
        )
    except BundleVersionError as error:  # the message names MODEL_BUNDLE_VERSION
        raise SettingsError(str(error)) from None


def model_bundle_path() -> Path:
    configured = os.environ.get("MODEL_BUNDLE_DIR")
    if not configured:
        raise SettingsError("MODEL_BUNDLE_DIR is not set (the folder with model.onnx and model_card.json)")
    path = Path(configured)
    if not path.is_absolute():
        # In Lambda the package is unpacked at LAMBDA_TASK_ROOT; locally, paths are relative to cwd.
        path = Path(os.environ.get("LAMBDA_TASK_ROOT", os.getcwd())) / path
    return path


def _positive_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError as error:
        raise SettingsError(f"{name} must be a positive integer, got {raw!r}") from error
    if value <= 0:
        raise SettingsError(f"{name} must be a positive integer, got {raw!r}")
    return value


@cache
def loaded_model() -> ScoringModel:
    """Loaded once per execution environment (cold start), reused by every invocation."""
    # One onnxruntime thread by default: a 2 GB function has about one vCPU; raise it with the memory.
    threads = _positive_int("BATCH_ONNX_THREADS", 1)
    # The same registered version as the API when modelBundleVersion is deployed, else the packaged one.
    location = model_bundle_uri()
    expected_version = model_bundle_version()
    if location is not None:
        return load_model_from_s3(
            object_store().client, location, threads=threads, expected_version=expected_version
        )
    return ScoringModel.load_directory(model_bundle_path(), threads=threads)


@cache
def object_store() -> S3ObjectStore:
    return S3ObjectStore()


# When the running invocation ends (time.monotonic() seconds), set by the handler from Lambda's context.
_invocation_deadline: float | None = None


def batch_settings() -> BatchSettings:
    work_dir = os.environ.get("BATCH_WORK_DIR")
    return BatchSettings(
        chunk_rows=_positive_int("BATCH_CHUNK_ROWS", DEFAULT_CHUNK_ROWS),
        csv_block_bytes=_positive_int("BATCH_CSV_BLOCK_BYTES", DEFAULT_CSV_BLOCK_BYTES),
        work_dir=Path(work_dir) if work_dir else None,
        deadline=_invocation_deadline,
    )


def clear_scratch_left_behind() -> None:
    """At a Lambda environment's init: remove what an invocation cut off by a timeout or a crash left in
    the scratch folder (see :func:`remove_scratch_left_behind`). Outside Lambda, other processes may
    be using that folder, so nothing is touched."""
    if "AWS_LAMBDA_FUNCTION_NAME" not in os.environ:
        return
    removed = remove_scratch_left_behind(batch_settings().work_dir)
    if removed:
        logger.warning("removed %d scratch folder(s) left by an invocation that did not finish", removed)


@tracer.capture_method
def record_handler(record: SQSRecord) -> None:
    """One SQS message = one S3 notification (possibly several records, or a test event)."""
    try:
        _handle_notification(record.body)
    except Exception as error:
        # Re-raised: the message returns to the queue and, after maxReceiveCount, to the DLQ.
        if _only_busy(error):
            # Expected with at-least-once delivery: no fault, so no error line with a stack trace.
            logger.warning(
                "message returned to the queue: another invocation is processing its file",
                extra={"message_id": record.message_id, "reason": str(error)},
            )
        else:
            # A fault (or an object the service could not take): the BatchFailures alarm counts these.
            metrics.add_metric(name="MessagesFailed", unit=MetricUnit.Count, value=1)
            logger.exception("message failed, it will be retried", extra={"message_id": record.message_id})
        raise


def _only_busy(error: BaseException) -> bool:
    """True when every object of the message failed only because another invocation holds it."""
    if isinstance(error, ExceptionGroup):
        return all(_only_busy(inner) for inner in error.exceptions)
    return isinstance(error, FileBusyError)


def _handle_notification(body: str) -> None:
    objects = parse_s3_notification(body)
    if not objects:  # s3:TestEvent, or no ObjectCreated record
        metrics.add_metric(name="NotificationsIgnored", unit=MetricUnit.Count, value=1)
    errors: list[Exception] = []
    for created in objects:
        # One object's failure must not hold back the others in the message: each try would stop at it
        # and they would reach the dead-letter queue unscored. The message still fails (and returns);
        # on the next try the objects done now are skipped by their manifests.
        try:
            _handle_object(created)
        except Exception as error:
            errors.append(error)
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise ExceptionGroup(f"{len(errors)} of the message's {len(objects)} objects failed", errors)


def _handle_object(created: ObjectCreated) -> None:
    try:
        outcome = process_object(object_store(), loaded_model(), created, batch_settings())
    except FileBusyError:
        metrics.add_metric(name="FilesBusy", unit=MetricUnit.Count, value=1)
        raise
    manifest = outcome.manifest
    if outcome.skipped is not None:
        logger.info("skipped", extra={"key": created.key, "reason": outcome.skipped})
        metrics.add_metric(name="FilesSkipped", unit=MetricUnit.Count, value=1)
    if manifest is None:
        return
    if outcome.skipped == "already_done":
        # The audit line again, marked: an invocation stopped between the manifest and its audit line
        # would otherwise leave a file scored but never in the trail, since the retry ends here. A
        # redelivered event repeats it too; the input's key, ETag and version tell repeats apart.
        _log_file_processed(created, manifest, redelivered=True)
        return
    if outcome.skipped is not None:
        return
    _log_file_processed(created, manifest, redelivered=False)
    if manifest.status == "failed":
        metrics.add_metric(name="FilesUnreadable", unit=MetricUnit.Count, value=1)
    else:
        metrics.add_metric(name="FilesScored", unit=MetricUnit.Count, value=1)
        metrics.add_metric(name="RowsScored", unit=MetricUnit.Count, value=manifest.counts.rows_scored)
        metrics.add_metric(name="RowsRejected", unit=MetricUnit.Count, value=manifest.counts.rows_rejected)
        _record_drift(created.key, manifest.drift)


def _log_file_processed(created: ObjectCreated, manifest: Manifest, *, redelivered: bool) -> None:
    """The file's audit line (lambdas/audit.py): what was read, what came out, the counts."""
    logger.info(
        BATCH_FILE,
        extra={
            "key": created.key,
            "uploaded_by": created.uploader,  # the notification's principal: who dropped the file
            "input": manifest.input.model_dump(),
            "model_version": manifest.model_version,
            "outputs": manifest.outputs.model_dump(),
            "status": manifest.status,
            "counts": manifest.counts.model_dump(),
            # The code only: a message may quote the file (a JSON line, a CSV row) and this line
            # goes to the audit bucket, which holds no applicant values. The manifest has the message.
            "error": {"code": manifest.error.code} if manifest.error else None,
            "drift": manifest.drift.model_dump(exclude={"feature_psi"}) if manifest.drift else None,
            "seconds": manifest.timings.total_seconds,
            "redelivered": redelivered,
        },
    )


def _record_drift(key: str, drift: Drift | None) -> None:
    """PSI metrics per file with enough rows for a verdict; a significant shift is counted and logged."""
    if drift is None or drift.status == "too_few_rows":
        return
    metrics.add_metric(name="ScorePsi", unit=MetricUnit.NoUnit, value=drift.score_psi)
    metrics.add_metric(name="MaxFeaturePsi", unit=MetricUnit.NoUnit, value=drift.max_feature_psi)
    if drift.status == "significant":
        metrics.add_metric(name="FilesDrifted", unit=MetricUnit.Count, value=1)
        logger.warning(
            "significant drift against the model's reference data",
            extra={"key": key, "drift": drift.model_dump()},
        )


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    # The Lambda version on every line, audit lines included (the function_arn may name an alias).
    logger.append_keys(function_version=context.function_version)
    global _invocation_deadline
    _invocation_deadline = time.monotonic() + context.get_remaining_time_in_millis() / 1000
    try:
        return process_partial_response(
            event=event, record_handler=record_handler, processor=processor, context=context
        )
    finally:
        _invocation_deadline = None
