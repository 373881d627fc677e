"""Process one created object end to end: idempotency check, claim, score, upload outputs, manifest last.

Domain orchestration without AWS imports: storage is the small :class:`ObjectStore` interface,
implemented over boto3 in :mod:`lambdas.batch.s3_store` (the only edge module).

Error policy (what the SQS redrive sees):
- the file cannot be read (corrupt gzip, not a table, wrong or missing columns, empty, unsupported
  name): a ``failed`` manifest says why and the message succeeds, because retrying cannot help;
- the object is gone or was overwritten since the event: nothing to do, the message succeeds
  (a newer object has its own event);
- another input in incoming/ has the same rejected file and manifest (``a.csv``, ``a.parquet``): raises,
  as no manifest of its own can be written without overwriting that input's result;
- another invocation holds the file (a duplicate delivery being scored right now): raises
  :class:`FileBusyError`, so SQS delivers the message again after the queue's visibility timeout, by
  which time the other's manifest answers it;
- anything else (S3 errors, throttling, a model that does not load, a bug) raises: SQS
  redelivers, and after the queue's maxReceiveCount the message lands in the dead-letter queue.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
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
    Claim,
    ClaimStage,
    Counts,
    Drift,
    FileError,
    InputObject,
    Manifest,
    OutputObject,
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


# Lambda ends every invocation within 15 minutes, whatever timeout the function is configured with (that
# is its maximum), so a claim this old has no living holder. The margin covers the clocks of the hosts
# that write and read a claim. Messages that find a live claim return after the queue's visibility
# timeout (90 minutes, infra/batch_scoring.py), well after any claim has expired.
LAMBDA_MAX_SECONDS = 15 * 60
CLAIM_MARGIN_SECONDS = 5 * 60
CLAIM_SECONDS = LAMBDA_MAX_SECONDS + CLAIM_MARGIN_SECONDS


@dataclass(frozen=True)
class ObjectInfo:
    etag: str
    version_id: str | None
    size: int


@dataclass(frozen=True)
class StoredBytes:
    body: bytes
    etag: str


@dataclass(frozen=True)
class UploadedObject:
    """What S3 answered an upload: the object's ETag and, in a versioned bucket, its version id."""

    etag: str
    version_id: str | None


class ObjectGoneError(Exception):
    """The object (at the event's version/ETag) no longer exists: there is nothing to score."""


class ObjectReplacedError(Exception):
    """Another object became the current one at the key while this one was scored."""


class SharedOutputNamesError(Exception):
    """Another input in incoming/ maps to the same rejected file and manifest (the layout drops the
    format extension): processing this one would overwrite that one's result."""


class ConditionFailedError(Exception):
    """A conditional put found its key in another state than the one it was made against: S3's 412
    PreconditionFailed, its 409 ConditionalRequestConflict (another conditional write to the key in
    flight), or 404 NoSuchKey for a put that was to replace an object that is gone."""


class FileBusyError(Exception):
    """Another invocation holds the file: its claim (an ``incomplete`` manifest) is live, or it claimed
    the file between this invocation's read of the manifest and its own claim. This delivery must not
    score now; raised so that SQS delivers the message again after the visibility timeout, when the
    other's final manifest makes it a skip (or its claim has expired and this one takes over)."""


class ClaimLostError(Exception):
    """Another invocation took this one's claim over before it published (it judged this one dead, or
    it scores a newer version): nothing more is written, so the new holder's manifest stands."""


class ObjectStore(Protocol):
    def head(self, bucket: str, key: str, version_id: str | None) -> ObjectInfo | None: ...

    def open_stream(self, bucket: str, key: str, *, etag: str, version_id: str | None) -> IO[bytes]: ...

    def download(self, bucket: str, key: str, target: Path, *, etag: str, version_id: str | None) -> None: ...

    def upload_file(self, source: Path, bucket: str, key: str, content_type: str) -> UploadedObject | None:
        """Upload ``source`` to the key; return what S3 answered, or None when the store cannot tell."""
        ...

    def read_bytes(self, bucket: str, key: str) -> StoredBytes | None:
        """The object's bytes and ETag, or None when there is no object at the key."""
        ...

    def put_bytes_if(
        self, bucket: str, key: str, body: bytes, content_type: str, *, replacing: str | None
    ) -> str:
        """Put ``body`` only if the key holds the object whose ETag is ``replacing`` (None: only if the key
        has no object), in one atomic step; return the new object's ETag. Raises
        :class:`ConditionFailedError` when the key is in another state."""
        ...

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
    # How long this invocation's claim keeps other deliveries of the file waiting: longer than it can run.
    claim_seconds: float = CLAIM_SECONDS
    # When the invocation ends (time.monotonic() seconds; None: no limit): scoring stops in time to publish.
    deadline: float | None = None


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
    manifest_key = manifest_key_for(event.key)
    # Read before the head below, so that a claim found here on another version was put before this
    # version was seen current: that version is an older one, whose claim may be taken over. Read after
    # the head, it could be the claim of a newer version uploaded in between, taken from its holder.
    existing = store.read_bytes(event.bucket, manifest_key)
    # Only the current object is scored: an older version's late event must not overwrite the outputs
    # of a newer one (SQS does not keep order). The newer object has its own event.
    info = store.head(event.bucket, event.key, None)
    if info is None:
        logger.warning("object is gone, nothing to score: %s", event.key)
        return Outcome(None, skipped="gone")
    if _replaced(info, event.version_id, event.etag):
        logger.warning("object replaced since the event, skipping the old version: %s", event.key)
        return Outcome(None, skipped="superseded")

    previous = _parse_manifest(existing.body) if existing is not None else None
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
    input_object = InputObject(
        bucket=event.bucket,
        key=event.key,
        etag=info.etag,
        version_id=info.version_id,
        size_bytes=info.size,
        format=detect_format(event.key),
    )
    # One invocation at a time per file: S3 notifications and SQS both deliver at least once, and two
    # invocations scoring at once (during a model rollout, with two model versions) would each publish.
    claim = _Claim.take(
        store, model, input_object, manifest_key, existing, previous, settings, started_at, started
    )
    try:
        return _score_claimed(store, model, input_object, settings, claim, started_at, started)
    except BaseException:
        # Not a timeout or running out of memory, which end the invocation here and now: its claim then
        # holds the file until it expires.
        claim.release()
        raise


def _score_claimed(
    store: ObjectStore,
    model: ScoringModel,
    input_object: InputObject,
    settings: BatchSettings,
    claim: _Claim,
    started_at: str,
    started: float,
) -> Outcome:
    key = input_object.key
    try:
        manifest = _score_and_upload(store, model, input_object, settings, claim, started_at, started)
    except UnreadableFileError as error:
        if _replaced_meanwhile(store, input_object):
            claim.release()
            return _replaced_while_read(key)
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
        claim.release()
        logger.warning("object disappeared while reading: %s", key)
        return Outcome(None, skipped="gone")
    except ObjectReplacedError:
        claim.release()
        return _replaced_while_read(key)
    # The manifest goes last: once it exists, every output it names is complete.
    claim.publish(manifest)
    return Outcome(manifest)


class _Claim:
    """This invocation's hold on a file, kept in the file's manifest: an ``incomplete`` manifest naming
    this attempt, put before scoring and replaced by each later put. Every put is conditional on the ETag
    of the one before it, so once another invocation has taken the file over, nothing of this one lands.
    """

    def __init__(
        self,
        store: ObjectStore,
        model: ScoringModel,
        input_object: InputObject,
        manifest_key: str,
        *,
        replacing: str | None,
        restorable: bytes | None,
        expires_at: datetime,
        started_at: str,
        started: float,
    ) -> None:
        self._store, self._model, self._input = store, model, input_object
        self._key = manifest_key
        self._etag = replacing
        self._restorable = restorable
        self._attempt = uuid.uuid4().hex
        self._expires_at = expires_at
        self._started_at, self._started = started_at, started
        # Set before the first upload: from then on the earlier version's manifest cannot be put back.
        self.outputs_touched = False

    @classmethod
    def take(
        cls,
        store: ObjectStore,
        model: ScoringModel,
        input_object: InputObject,
        manifest_key: str,
        existing: StoredBytes | None,
        previous: Manifest | None,
        settings: BatchSettings,
        started_at: str,
        started: float,
    ) -> _Claim:
        """Claim the file, or raise :class:`FileBusyError` when another invocation holds it."""
        now = datetime.now(UTC)
        holder = _live_claim(previous, input_object, now)
        if holder is not None:
            raise FileBusyError(
                f"{input_object.key!r} is being processed by another invocation (attempt {holder.attempt}, "
                f"{holder.stage}; its claim in {manifest_key} holds until {holder.expires_at.isoformat()}): "
                "not scored now, the message is retried after the queue's visibility timeout"
            )
        is_final = previous is not None and not _is_incomplete(previous)
        claim = cls(
            store,
            model,
            input_object,
            manifest_key,
            replacing=existing.etag if existing is not None else None,
            # An earlier version's final manifest goes back if this attempt stops before any upload.
            restorable=existing.body if existing is not None and is_final else None,
            expires_at=now + timedelta(seconds=settings.claim_seconds),
            started_at=started_at,
            started=started,
        )
        try:
            claim._put(claim._marker("scoring").to_json())
        except ConditionFailedError as error:
            raise FileBusyError(
                f"{input_object.key!r} was claimed by another invocation between this one's read of "
                f"{manifest_key} and its own claim: not scored now, the message is retried after the "
                "queue's visibility timeout"
            ) from error
        return claim

    def start_publishing(self) -> None:
        """Say, before the first upload, that this version's outputs are being written (over an earlier
        version's): should the invocation stop in between, no manifest says "succeeded" over them. Raises
        :class:`ConditionFailedError` when the file was taken over while it was scored."""
        self._put(self._marker("publishing").to_json())

    def publish(self, manifest: Manifest) -> None:
        try:
            self._put(manifest.to_json())
        except ConditionFailedError as error:
            raise ClaimLostError(
                f"the claim on {self._key} (attempt {self._attempt}) was taken over before its manifest was "
                f"put: {self._input.key!r} is the new holder's; this attempt's manifest is not written"
            ) from error

    def release(self) -> None:
        """Give the file up without a final manifest: put back the earlier version's manifest when no
        output was touched (as if this attempt had not run), else a "stopped" claim, which any delivery
        takes over at once. A claim taken over meanwhile is left to its new holder."""
        if self._restorable is not None and not self.outputs_touched:
            body = self._restorable
        else:
            body = self._marker("stopped").to_json()
        try:
            self._put(body)
        except ConditionFailedError:
            return
        except Exception:
            # Already on a way out (an error, a replaced input): the claim then expires on its own.
            logger.warning(
                "could not give up the claim on %s; it holds the file until %s",
                self._key,
                self._expires_at.isoformat(),
                exc_info=True,
            )

    def _put(self, body: bytes) -> None:
        bucket = self._input.bucket
        try:
            self._etag = self._store.put_bytes_if(
                bucket, self._key, body, "application/json", replacing=self._etag
            )
        except ConditionFailedError:
            # The SDK sends a put again when its answer was lost (a 500 or a dropped connection after S3
            # wrote it), and the retry finds the key changed: by that put. Each body put here is this
            # attempt's own (its attempt id, its timings; the put-back manifest only on the way out), so
            # finding it at the key means the put landed.
            stored = self._store.read_bytes(bucket, self._key)
            if stored is None or stored.body != body:
                raise
            self._etag = stored.etag

    def _marker(self, stage: ClaimStage) -> Manifest:
        until = self._expires_at.isoformat(timespec="seconds")
        messages: dict[ClaimStage, str] = {
            "scoring": (
                f"attempt {self._attempt} is scoring this version; other deliveries of the file wait until "
                f"{until} (their messages are retried later); if this manifest is still here after that, "
                "the attempt stopped and the next delivery scores the file"
            ),
            "publishing": (
                f"attempt {self._attempt} is writing this version's outputs over any earlier version's; if "
                f"this manifest is still here after {until}, processing stopped in between (the message is "
                "retried, then dead-lettered) and scored/ and rejected/ may hold parts of both versions"
            ),
            "stopped": (
                f"attempt {self._attempt} stopped before its final manifest (an error, or the input was "
                "replaced or deleted while it was read); "
                + (
                    "scored/ and rejected/ may hold parts of this and an earlier version"
                    if self.outputs_touched
                    else "it had written no output"
                )
                + "; the next delivery scores the file again"
            ),
        }
        return _manifest(
            self._model,
            self._input,
            status="failed",
            outputs=Outputs(),
            result=None,
            error=FileError(code=INCOMPLETE, message=messages[stage]),
            started_at=self._started_at,
            started=self._started,
            upload_seconds=0.0,
            claim=Claim(attempt=self._attempt, stage=stage, expires_at=self._expires_at),
        )


def _live_claim(previous: Manifest | None, input_object: InputObject, now: datetime) -> Claim | None:
    """The claim in the manifest that this invocation must wait for, if there is one.

    Taken over at once: a stopped or expired claim (no holder at work), and a claim still scoring another
    version than this one, found current after the claim was read, so an older version (its holder
    checks the key before it publishes, finds it replaced and publishes nothing; if it got past that
    check first, its "publishing" put wins and this one waits).
    A manifest with no claim is no hold: a final one (another version's), an unreadable one, or an
    ``incomplete`` one written before claims existed, whose writer would not respect a claim anyway.
    """
    if previous is None or previous.claim is None or not _is_incomplete(previous):
        return None
    claim = previous.claim
    if claim.stage == "stopped" or now >= claim.expires_at:
        return None
    held = previous.input
    same_version = (held.key, held.etag, held.version_id) == (
        input_object.key,
        input_object.etag,
        input_object.version_id,
    )
    if claim.stage == "scoring" and not same_version:
        return None
    return claim


def _is_incomplete(manifest: Manifest) -> bool:
    return manifest.error is not None and manifest.error.code == INCOMPLETE


def _score_and_upload(
    store: ObjectStore,
    model: ScoringModel,
    input_object: InputObject,
    settings: BatchSettings,
    claim: _Claim,
    started_at: str,
    started: float,
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
        try:
            result = _score_to_files(store, model, input_object, file_format, settings, scratch_dir)
        except OSError as error:
            if error.errno != errno.ENOSPC:
                raise
            # Retrying cannot help: the same file fills the same space (Lambda: ephemeral storage).
            raise UnreadableFileError(
                "too_large",
                f"the outputs filled the function's scratch space ({scratch_dir.parent}): split the file "
                "into smaller ones and upload those (docs/batch.md, Limits)",
            ) from error
        # Hashed before the claim moves to "publishing", so the hash does not lengthen that stage.
        hash_started = time.perf_counter()
        scored_sha256, rejected_sha256 = _sha256_of(scored_path), _sha256_of(rejected_path)
        hash_seconds = time.perf_counter() - hash_started
        upload_started = time.perf_counter()
        try:
            claim.start_publishing()
        except ConditionFailedError as error:
            # Taken over while scoring: by a newer version's invocation (which then owns the outputs),
            # or by one that found this claim expired.
            if _replaced_meanwhile(store, input_object):
                raise ObjectReplacedError(input_object.key) from error
            raise ClaimLostError(
                f"the claim on {keys.manifest} was taken over while {input_object.key!r} was scored: "
                "nothing of this attempt is published"
            ) from error
        # Checked after the "publishing" put: a newer version's invocation that reads the manifest from
        # here on waits, and one that took the claim over before it made that put fail.
        if _replaced_meanwhile(store, input_object):
            raise ObjectReplacedError(input_object.key)
        claim.outputs_touched = True
        # Each put is atomic in S3 (a multipart upload appears only when completed).
        scored = store.upload_file(scored_path, input_object.bucket, keys.scored, CONTENT_TYPES[file_format])
        rejected = store.upload_file(rejected_path, input_object.bucket, keys.rejected, "text/csv")
        upload_seconds = time.perf_counter() - upload_started
    return _manifest(
        model,
        input_object,
        status="succeeded",
        outputs=Outputs(
            scored=keys.scored,
            rejected=keys.rejected,
            scored_object=_output_object(scored_sha256, scored),
            rejected_object=_output_object(rejected_sha256, rejected),
        ),
        result=result,
        error=None,
        started_at=started_at,
        started=started,
        upload_seconds=upload_seconds,
        hash_seconds=hash_seconds,
    )


def _sha256_of(path: Path) -> str:
    with path.open("rb") as source:
        return hashlib.file_digest(source, "sha256").hexdigest()


def _output_object(sha256: str, uploaded: UploadedObject | None) -> OutputObject:
    if uploaded is None:
        return OutputObject(sha256=sha256)
    return OutputObject(sha256=sha256, etag=uploaded.etag, version_id=uploaded.version_id)


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
                return score_source(
                    model, source, file_format, scored_sink, rejected_sink, deadline=settings.deadline
                )
        stream = store.open_stream(bucket, key, etag=etag, version_id=version_id)
        try:
            source = open_source(
                file_format, stream, chunk_rows=settings.chunk_rows, csv_block_bytes=settings.csv_block_bytes
            )
            return score_source(
                model, source, file_format, scored_sink, rejected_sink, deadline=settings.deadline
            )
        finally:
            stream.close()


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
    hash_seconds: float = 0.0,
    claim: Claim | None = None,
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
        phases = {
            **result.seconds.as_dict(),
            "hash": round(hash_seconds, 4),
            "upload": round(upload_seconds, 4),
        }
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
            "claim": claim,
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
