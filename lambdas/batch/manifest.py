"""The manifest written last for every input file: what was read, what came out, and why not.

A manifest is the "done" marker: outputs without a manifest for the same input ETag/version are
leftovers of an interrupted attempt and will be overwritten by the retry. An ``incomplete`` manifest
(see :data:`INCOMPLETE`) is never done: it is an invocation's claim on the file while it scores and
publishes (see :class:`Claim`), replaced by the final manifest.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, SerializerFunctionWrapHandler, model_serializer

MANIFEST_SCHEMA_VERSION = "1"
Status = Literal["succeeded", "failed"]
# The error code of the manifest an invocation puts before it scores a file (its claim) and again before
# the file's outputs replace those of an earlier version of it, replaced by the final manifest: should
# processing stop in between, no manifest says "succeeded" over outputs that are partly the new
# version's, and the retry scores the file again.
INCOMPLETE = "incomplete"
# How far the claim's holder got: "scoring" (reading the input, nothing uploaded), "publishing" (past
# its last check that the input is current, uploading the outputs), "stopped" (it ended without a
# final manifest: an error, or the input was replaced or deleted; anyone may take the file over).
ClaimStage = Literal["scoring", "publishing", "stopped"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InputObject(_Strict):
    bucket: str
    key: str
    etag: str
    version_id: str | None = None
    size_bytes: int
    format: str | None


class OutputObject(_Strict):
    """What one upload put at an output key. The key is reused by the next upload under the same input
    name (its old version expires): the hash, and the version where the bucket keeps versions, say which
    content held this file's decisions."""

    sha256: str  # hex, of the bytes uploaded (the local file, before the upload)
    etag: str | None = None  # as S3 answered the upload: not a content hash for a multipart upload
    version_id: str | None = None  # None in an unversioned bucket


class Outputs(_Strict):
    scored: str | None = None
    rejected: str | None = None
    # Optional: manifests written before these fields still parse (and still answer their version).
    scored_object: OutputObject | None = None
    rejected_object: OutputObject | None = None

    @model_serializer(mode="wrap")
    def _without_absent_objects(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Outputs not uploaded (a claim, a failed file) keep the form written before these fields, in the
        # manifest and the audit line, which readers that predate them parse too.
        dumped: dict[str, Any] = handler(self)
        return {
            name: value
            for name, value in dumped.items()
            if value is not None or name not in ("scored_object", "rejected_object")
        }


class Counts(_Strict):
    rows_in: int = 0
    rows_scored: int = 0
    rows_rejected: int = 0
    approved: int = 0
    declined: int = 0


class FileError(_Strict):
    code: str
    message: str


class ReasonsPolicy(_Strict):
    computed_for: Literal["declined"] = "declined"
    top_k: int


class Timings(_Strict):
    started_at: str
    finished_at: str
    total_seconds: float
    phases: dict[str, float]


class Drift(_Strict):
    """Population stability index of the scored rows against the model card's reference distributions
    (see lambdas/scoring/drift.py): under 0.1 stable, from 0.1 moderate, from 0.25 significant."""

    rows: int
    status: Literal["stable", "moderate", "significant", "too_few_rows"]
    score_psi: float
    max_feature_psi: float
    most_drifted_feature: str | None
    feature_psi: dict[str, float]


class Chunking(_Strict):
    chunks: int
    max_rows_per_chunk: int


class Claim(_Strict):
    """On an ``incomplete`` manifest only: the invocation that holds the file, and until when.

    ``attempt`` is unique per invocation, so two claims never have the same bytes (nor the same ETag,
    which the conditional puts compare). Past ``expires_at`` the holder cannot be running any more (see
    ``lambdas/batch/service.py``), and another delivery takes the file over."""

    attempt: str
    stage: ClaimStage
    expires_at: AwareDatetime


class Manifest(_Strict):
    schema_version: str = MANIFEST_SCHEMA_VERSION
    status: Status
    input: InputObject
    model_name: str
    model_version: str
    outputs: Outputs
    counts: Counts
    error: FileError | None = None
    reasons: ReasonsPolicy
    chunking: Chunking | None = None
    drift: Drift | None = None
    timings: Timings
    claim: Claim | None = None

    def to_json(self) -> bytes:
        """The stored form; a manifest without a claim (every final one) has no ``claim`` key at all."""
        return self.model_dump_json(indent=2, exclude={"claim"} if self.claim is None else None).encode()

    def is_complete_for(self, key: str, etag: str, version_id: str | None) -> bool:
        """True when this manifest already answers this exact object version (skip rescoring)."""
        if self.error is not None and self.error.code == INCOMPLETE:
            return False
        return self.input.key == key and self.input.etag == etag and self.input.version_id == version_id
