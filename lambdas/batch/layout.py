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
S3_MAX_KEY_BYTES = 1024  # S3's limit on a key, counted in UTF-8 bytes

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


class KeyTooLongError(ValueError):
    """An output key of the input would be longer than S3 allows, so not even a manifest can be written."""


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


def output_stem(key: str) -> str:
    """What an incoming key's rejected file and manifest are named by: its path under incoming/ without
    a supported format's suffix (an unsupported name keeps its own). Inputs with one stem share those
    names: ``a.csv``, ``a.parquet`` and ``a.CSV`` all have ``manifests/a.json``, as ``a.txt.csv`` and the
    unsupported ``a.txt`` have ``manifests/a.txt.json``."""
    relative = _relative(key)
    file_format = detect_format(key)
    return relative[: -len(_suffix_of(key, file_format))] if file_format else relative


def manifest_key_for(key: str) -> str:
    """Manifest key of any incoming object, also of one whose format is not supported."""
    return f"{MANIFESTS_PREFIX}{output_stem(key)}.json"


def check_key_lengths(key: str) -> None:
    """Raise :class:`KeyTooLongError` when an output key of ``key`` would be longer than S3 allows.

    The manifest key is the one that can outgrow its input: by 2 bytes for ``.csv`` (``.json``
    replaces it) and by 6 for an unsupported name (which keeps its extension)."""
    named = {"manifest": manifest_key_for(key)}
    if detect_format(key) is not None:
        keys = output_keys(key)
        named |= {"scored": keys.scored, "rejected": keys.rejected}
    for kind, output in named.items():
        size = len(output.encode("utf-8"))
        if size > S3_MAX_KEY_BYTES:
            raise KeyTooLongError(
                f"cannot process {key!r}: its {kind} key would be {size} bytes, over S3's "
                f"{S3_MAX_KEY_BYTES}-byte key limit; shorten the name by {size - S3_MAX_KEY_BYTES} bytes"
            )


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
