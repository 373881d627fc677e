"""Process one created object end to end: idempotency check, score, upload outputs, manifest last.

Domain orchestration without AWS imports: storage is the small :class:`ObjectStore` interface,
implemented over boto3 in :mod:`lambdas.batch.s3_store` (the only edge module).

Error policy (what the SQS redrive sees):
- the file cannot be read (corrupt gzip, not a table, wrong or missing columns, empty, unsupported
  name): a ``failed`` manifest says why and the message succeeds, because retrying cannot help;
- the object is gone or was overwritten since the event: nothing to do, the message succeeds
  (a newer object has its own event);
- another input in incoming/ has the same rejected file and manifest (``a.csv``, ``a.parquet``): raises,
  as no manifest of its own can be written without overwriting that input's result;
- anything else (S3 errors, throttling, a model that does not load, a bug) raises: SQS
  redelivers, and after the queue's maxReceiveCount the message lands in the dead-letter queue.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Protocol

from lambdas.batch.events import ObjectCreated
from lambdas.batch.formats import (
    DEFAULT_CHUNK_ROWS,
    DEFAULT_CSV_BLOCK_BYTES,
    UnreadableFileError,
    open_source,
)
from lambdas.batch.layout import (
    INCOMING_PREFIX,
    FileFormat,
    UnsupportedKeyError,
    check_key_lengths,
    detect_format,
    is_incoming_key,
    manifest_key_for,
    output_keys,
    output_stem,
)
from lambdas.batch.manifest import (
    INCOMPLETE,
    Chunking,
    Counts,
    Drift,
    FileError,
    InputObject,
    Manifest,
    Outputs,
    ReasonsPolicy,
    Timings,
)
from lambdas.batch.scoring import REASONS_TOP_K, FileResult, score_source
from lambdas.scoring.runtime import ScoringModel

logger = logging.getLogger(__name__)

CONTENT_TYPES: dict[FileFormat, str] = {
    "csv": "text/csv",
    "csv.gz": "application/gzip",
    "jsonl": "application/x-ndjson",
    "parquet": "application/vnd.apache.parquet",
}


@dataclass(frozen=True)
class ObjectInfo:
    etag: str
    version_id: str | None
    size: int


class ObjectGoneError(Exception):
    """The object (at the event's version/ETag) no longer exists: there is nothing to score."""


class ObjectReplacedError(Exception):
    """Another object became the current one at the key while this one was scored."""


class SharedOutputNamesError(Exception):
    """Another input in incoming/ maps to the same rejected file and manifest (the layout drops the
    format extension): processing this one would overwrite that one's result."""


class ObjectStore(Protocol):
    def head(self, bucket: str, key: str, version_id: str | None) -> ObjectInfo | None: ...

    def open_stream(self, bucket: str, key: str, *, etag: str, version_id: str | None) -> IO[bytes]: ...

    def download(self, bucket: str, key: str, target: Path, *, etag: str, version_id: str | None) -> None: ...

    def upload_file(self, source: Path, bucket: str, key: str, content_type: str) -> None: ...

    def put_bytes(self, bucket: str, key: str, body: bytes, content_type: str) -> None: ...

    def get_bytes(self, bucket: str, key: str) -> bytes | None: ...

    def keys_in_folder(self, bucket: str, prefix: str, *, page_size: int = 1000) -> Iterator[str]:
        """The keys that start with ``prefix`` and have no ``/`` after it, in order, fetched lazily."""
        ...


# Scratch folders of one file each (outputs, a Parquet input) are named with this prefix.
SCRATCH_PREFIX = "batch-"


@dataclass(frozen=True)
class BatchSettings:
    chunk_rows: int = DEFAULT_CHUNK_ROWS
    csv_block_bytes: int = DEFAULT_CSV_BLOCK_BYTES
    work_dir: Path | None = None  # local scratch for outputs (Lambda: /tmp, sized by ephemeral storage)


@dataclass(frozen=True)
class Outcome:
    manifest: Manifest | None
    skipped: str | None = None  # why nothing was done: already_done, gone, superseded, not_incoming


def process_object(
    store: ObjectStore, model: ScoringModel, event: ObjectCreated, settings: BatchSettings
) -> Outcome:
    if not is_incoming_key(event.key):
        logger.warning("ignoring object outside incoming/: %s", event.key)
        return Outcome(None, skipped="not_incoming")
    # Before any work: S3 would refuse an over-long manifest key only after the file was scored and its
    # outputs uploaded. Raised, not skipped: with no manifest possible, the dead-letter queue (and its
    # alarm) is where this shows.
    check_key_lengths(event.key)
    # Only the current object is scored: an older version's late event must not overwrite the outputs
    # of a newer one (SQS does not keep order). The newer object has its own event.
    info = store.head(event.bucket, event.key, None)
    if info is None:
        logger.warning("object is gone, nothing to score: %s", event.key)
        return Outcome(None, skipped="gone")
    if _replaced(info, event.version_id, event.etag):
        logger.warning("object replaced since the event, skipping the old version: %s", event.key)
        return Outcome(None, skipped="superseded")

    manifest_key = manifest_key_for(event.key)
    existing = store.get_bytes(event.bucket, manifest_key)
    if existing is not None:
        previous = _parse_manifest(existing)
        if previous is not None and previous.is_complete_for(event.key, info.etag, info.version_id):
            logger.info("already processed (manifest %s): %s", manifest_key, event.key)
            return Outcome(previous, skipped="already_done")
    # Output names drop the format extension: another input with them would have its result overwritten
    # (or, both running at once, a manifest could count one file's rows over the other's rejected file).
    # Raised, not skipped: no manifest of its own can be written, so the dead-letter queue (and its alarm)
    # is where this shows; a redrive succeeds once one of the two is renamed or removed.
    sharing = _input_sharing_outputs(store, event.bucket, event.key)
    if sharing is not None:
        raise SharedOutputNamesError(
            f"cannot process {event.key!r}: {sharing!r} is also in {INCOMING_PREFIX} and has the same "
            f"manifest ({manifest_key}) and rejected file, as output names drop the format extension; "
            "rename or remove one of the two, then redrive this message"
        )

    started_at, started = _now(), time.perf_counter()
    file_format = detect_format(event.key)
    input_object = InputObject(
        bucket=event.bucket,
        key=event.key,
        etag=info.etag,
        version_id=info.version_id,
        size_bytes=info.size,
        format=file_format,
    )
    # A manifest that is not this version's: the outputs it describes (an earlier version's, or an
    # earlier attempt's) are the ones this version's will overwrite.
    replaces_outputs = existing is not None
    try:
        manifest = _score_and_upload(
            store, model, input_object, settings, started_at, started, replaces_outputs=replaces_outputs
        )
    except UnreadableFileError as error:
        if _replaced_meanwhile(store, input_object):
            return _replaced_while_read(event.key)
        manifest = _manifest(
            model,
            input_object,
            status="failed",
            outputs=Outputs(),
            result=None,
            error=FileError(code=error.code, message=error.message),
            started_at=started_at,
            started=started,
            upload_seconds=0.0,
        )
    except ObjectGoneError:
        logger.warning("object disappeared while reading: %s", event.key)
        return Outcome(None, skipped="gone")
    except ObjectReplacedError:
        return _replaced_while_read(event.key)
    # The manifest goes last: once it exists, every output it names is complete.
    store.put_bytes(
        event.bucket, manifest_key, manifest.model_dump_json(indent=2).encode(), "application/json"
    )
    return Outcome(manifest)


def _score_and_upload(
    store: ObjectStore,
    model: ScoringModel,
    input_object: InputObject,
    settings: BatchSettings,
    started_at: str,
    started: float,
    *,
    replaces_outputs: bool,
) -> Manifest:
    if input_object.size_bytes == 0:
        raise UnreadableFileError("empty_file", "the file is empty (0 bytes)")
    try:
        keys = output_keys(input_object.key)
    except UnsupportedKeyError as error:
        raise UnreadableFileError("unsupported_format", str(error)) from error
    file_format = keys.file_format
    with tempfile.TemporaryDirectory(prefix=SCRATCH_PREFIX, dir=settings.work_dir) as scratch:
        scratch_dir = Path(scratch)
        scored_path, rejected_path = scratch_dir / "scored", scratch_dir / "rejected.csv"
        result = _score_to_files(store, model, input_object, file_format, settings, scratch_dir)
        if _replaced_meanwhile(store, input_object):
            raise ObjectReplacedError(input_object.key)
        upload_started = time.perf_counter()
        if replaces_outputs:
            # The earlier manifest goes first: it would say "succeeded" over this version's scored file
            # (and the earlier rejected one) if the invocation stopped between the uploads below.
            marker = _incomplete_manifest(model, input_object, started_at, started)
            store.put_bytes(
                input_object.bucket,
                keys.manifest,
                marker.model_dump_json(indent=2).encode(),
                "application/json",
            )
        # Each put is atomic in S3 (a multipart upload appears only when completed).
        store.upload_file(scored_path, input_object.bucket, keys.scored, CONTENT_TYPES[file_format])
        store.upload_file(rejected_path, input_object.bucket, keys.rejected, "text/csv")
        upload_seconds = time.perf_counter() - upload_started
    return _manifest(
        model,
        input_object,
        status="succeeded",
        outputs=Outputs(scored=keys.scored, rejected=keys.rejected),
        result=result,
        error=None,
        started_at=started_at,
        started=started,
        upload_seconds=upload_seconds,
    )


def _score_to_files(
    store: ObjectStore,
    model: ScoringModel,
    input_object: InputObject,
    file_format: FileFormat,
    settings: BatchSettings,
    scratch_dir: Path,
) -> FileResult:
    bucket, key = input_object.bucket, input_object.key
    etag, version_id = input_object.etag, input_object.version_id
    with (
        (scratch_dir / "scored").open("wb") as scored_sink,
        (scratch_dir / "rejected.csv").open("wb") as rejected_sink,
    ):
        if file_format == "parquet":
            # Parquet keeps its index at the end of the file: it needs random access, so a local copy.
            local_input = scratch_dir / "input.parquet"
            store.download(bucket, key, local_input, etag=etag, version_id=version_id)
            with local_input.open("rb") as local_stream:
                source = open_source(file_format, local_stream, chunk_rows=settings.chunk_rows)
                return score_source(model, source, file_format, scored_sink, rejected_sink)
        stream = store.open_stream(bucket, key, etag=etag, version_id=version_id)
        try:
            source = open_source(
                file_format, stream, chunk_rows=settings.chunk_rows, csv_block_bytes=settings.csv_block_bytes
            )
            return score_source(model, source, file_format, scored_sink, rejected_sink)
        finally:
            stream.close()


def _incomplete_manifest(
    model: ScoringModel, input_object: InputObject, started_at: str, started: float
) -> Manifest:
    message = (
        "this version's outputs are being written over an earlier version's; if this manifest stays, "
        "processing stopped in between (the message is retried, then dead-lettered) and scored/ and "
        "rejected/ may hold parts of both versions"
    )
    return _manifest(
        model,
        input_object,
        status="failed",
        outputs=Outputs(),
        result=None,
        error=FileError(code=INCOMPLETE, message=message),
        started_at=started_at,
        started=started,
        upload_seconds=0.0,
    )


def _manifest(
    model: ScoringModel,
    input_object: InputObject,
    *,
    status: str,
    outputs: Outputs,
    result: FileResult | None,
    error: FileError | None,
    started_at: str,
    started: float,
    upload_seconds: float,
) -> Manifest:
    counts = Counts()
    chunking = None
    drift = None
    phases: dict[str, float] = {}
    if result is not None:
        c = result.counts
        counts = Counts(
            rows_in=c.rows_in,
            rows_scored=c.rows_scored,
            rows_rejected=c.rows_rejected,
            approved=c.approved,
            declined=c.declined,
        )
        chunking = Chunking(chunks=c.chunks, max_rows_per_chunk=c.max_chunk_rows)
        phases = {**result.seconds.as_dict(), "upload": round(upload_seconds, 4)}
        if result.drift is not None:
            drift = Drift(**asdict(result.drift), max_feature_psi=result.drift.max_feature_psi)
    return Manifest.model_validate(
        {
            "status": status,
            "input": input_object,
            "model_name": model.card.model_name,
            "model_version": model.model_version,
            "outputs": outputs,
            "counts": counts,
            "error": error,
            "reasons": ReasonsPolicy(top_k=REASONS_TOP_K),
            "chunking": chunking,
            "drift": drift,
            "timings": Timings(
                started_at=started_at,
                finished_at=_now(),
                total_seconds=round(time.perf_counter() - started, 4),
                phases=phases,
            ),
        }
    )


def remove_scratch_left_behind(work_dir: Path | None) -> int:
    """Delete the scratch folders of invocations that never finished; return how many there were.

    A timeout or running out of memory ends an invocation without its ``finally``, and Lambda keeps
    /tmp when it resets the environment: each folder left holds a whole file's scored rows, filling the
    ephemeral storage later files need and keeping applicant data past its invocation. Call it only
    where nothing else can be using these folders: a Lambda environment's init (one invocation at a
    time per environment), never on a shared machine.
    """
    root = work_dir if work_dir is not None else Path(tempfile.gettempdir())
    removed = 0
    for path in root.glob(f"{SCRATCH_PREFIX}*"):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
            removed += 1
    return removed


def _replaced(current: ObjectInfo, version_id: str | None, etag: str | None) -> bool:
    """Whether the current object is another one than the given version (or, unversioned, ETag)."""
    if version_id is not None:
        return current.version_id != version_id
    return etag is not None and current.etag != etag


def _replaced_meanwhile(store: ObjectStore, input_object: InputObject) -> bool:
    """Checked just before publishing: a newer object may have been uploaded and scored by another
    invocation while this one was read (a long file gives it minutes), and its outputs and manifest
    must not be overwritten with this older one's. A deleted object does not stop publishing."""
    current = store.head(input_object.bucket, input_object.key, None)
    return current is not None and _replaced(current, input_object.version_id, input_object.etag)


def _input_sharing_outputs(store: ObjectStore, bucket: str, key: str) -> str | None:
    """Another input in incoming/ whose rejected file and manifest are this one's, if there is one.

    Checked before scoring, so of two such inputs the one that arrives second is always refused, and
    two present at once are both refused (S3 lists what was written before, strongly consistent)."""
    stem = output_stem(key)
    exact = f"{INCOMING_PREFIX}{stem}"
    # Every supported suffix starts with ".": the other inputs are <stem>.<suffix> in any spelling, and
    # <stem> itself when that is an unsupported name (which keeps its whole name as its stem).
    for candidate in store.keys_in_folder(bucket, f"{exact}."):
        if candidate != key and is_incoming_key(candidate) and output_stem(candidate) == stem:
            return candidate
    if exact == key or not is_incoming_key(exact) or output_stem(exact) != stem:
        return None
    # Listed rather than a HeadObject, which S3 answers for a missing key with 404 only to a caller that
    # may list the whole bucket: a key sorts before every longer key it begins, so one key says it all.
    first = next(store.keys_in_folder(bucket, exact, page_size=1), None)
    return exact if first == exact else None


def _replaced_while_read(key: str) -> Outcome:
    logger.warning("object replaced while it was read, not publishing the old version: %s", key)
    return Outcome(None, skipped="superseded")


def _parse_manifest(body: bytes) -> Manifest | None:
    try:
        return Manifest.model_validate_json(body)
    except ValueError:
        return None  # an unreadable old manifest never blocks rescoring


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")
