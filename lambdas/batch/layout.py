"""Where a batch file's outputs live, derived from its input key (DESIGN.md, "Batch scoring").

``incoming/<path>/<name>.<ext>`` maps to ``scored/<path>/<name>.<ext>``,
``rejected/<path>/<name>.csv`` and ``manifests/<path>/<name>.json``. Pure string logic.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

FileFormat = Literal["csv", "csv.gz", "jsonl", "parquet"]

INCOMING_PREFIX = "incoming/"
SCORED_PREFIX = "scored/"
REJECTED_PREFIX = "rejected/"
MANIFESTS_PREFIX = "manifests/"

# Longest suffix first so "x.csv.gz" is gzip-compressed CSV, not an unknown ".gz".
_SUFFIXES: tuple[tuple[str, FileFormat], ...] = (
    (".csv.gz", "csv.gz"),
    (".csv", "csv"),
    (".jsonl", "jsonl"),
    (".parquet", "parquet"),
)
SUPPORTED_SUFFIXES = tuple(suffix for suffix, _ in _SUFFIXES)


class UnsupportedKeyError(ValueError):
    """The key is not under incoming/ or does not end in a supported suffix."""


@dataclass(frozen=True)
class OutputKeys:
    input_key: str
    file_format: FileFormat
    scored: str
    rejected: str
    manifest: str


def detect_format(key: str) -> FileFormat | None:
    lowered = key.lower()
    for suffix, file_format in _SUFFIXES:
        if lowered.endswith(suffix) and len(key) > len(suffix):
            return file_format
    return None


def is_incoming_key(key: str) -> bool:
    return key.startswith(INCOMING_PREFIX) and not key.endswith("/")


def manifest_key_for(key: str) -> str:
    """Manifest key of any incoming object, also of one whose format is not supported."""
    relative = _relative(key)
    file_format = detect_format(key)
    stem = relative[: -len(_suffix_of(key, file_format))] if file_format else relative
    return f"{MANIFESTS_PREFIX}{stem}.json"


def output_keys(key: str) -> OutputKeys:
    relative = _relative(key)
    file_format = detect_format(key)
    if file_format is None:
        raise UnsupportedKeyError(
            f"unsupported file type for {key!r}: the name must end in one of {', '.join(SUPPORTED_SUFFIXES)}"
        )
    suffix = _suffix_of(key, file_format)
    stem = relative[: -len(suffix)]
    return OutputKeys(
        input_key=key,
        file_format=file_format,
        scored=f"{SCORED_PREFIX}{stem}{suffix}",
        rejected=f"{REJECTED_PREFIX}{stem}.csv",
        manifest=f"{MANIFESTS_PREFIX}{stem}.json",
    )


def _relative(key: str) -> str:
    if not is_incoming_key(key):
        raise UnsupportedKeyError(f"{key!r} is not an object under {INCOMING_PREFIX!r}")
    return key[len(INCOMING_PREFIX) :]


def _suffix_of(key: str, file_format: FileFormat | None) -> str:
    # Keep the original spelling (".CSV" stays ".CSV") so the scored file mirrors the input name.
    for suffix, candidate in _SUFFIXES:
        if candidate == file_format:
            return key[-len(suffix) :]
    return ""
