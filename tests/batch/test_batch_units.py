"""Pure parts of the batch Lambda, no network: event parsing, key layout, readers, row numbers, scratch."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

import numpy as np
import pytest

from lambdas.batch.events import MalformedEventError, parse_s3_notification
from lambdas.batch.formats import UnreadableFileError, _MalformedRows, open_source
from lambdas.batch.layout import UnsupportedKeyError, detect_format, manifest_key_for, output_keys
from lambdas.batch.service import remove_scratch_left_behind
from lambdas.batch.wiring import clear_scratch_left_behind


def notification(key: str, event_name: str = "ObjectCreated:Put") -> str:
    record = {
        "eventName": event_name,
        "s3": {"bucket": {"name": "b"}, "object": {"key": key, "eTag": "abc", "size": 3, "versionId": "v1"}},
    }
    return json.dumps({"Records": [record]})


def test_given_an_encoded_key_then_plus_is_a_space_and_percent_escapes_are_utf8() -> None:
    (created,) = parse_s3_notification(notification("incoming/%C3%89quipe+cr%C3%A9dit/a%2Bb+c.csv"))
    assert created.key == "incoming/Équipe crédit/a+b c.csv"
    assert (created.bucket, created.etag, created.version_id, created.size) == ("b", "abc", "v1", 3)


def test_given_the_s3_test_event_then_there_is_nothing_to_do() -> None:
    body = json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "b"})
    assert parse_s3_notification(body) == []


def test_given_a_removal_event_then_it_is_ignored() -> None:
    assert parse_s3_notification(notification("incoming/a.csv", "ObjectRemoved:Delete")) == []


@pytest.mark.parametrize(
    "body", ["not json", "[]", json.dumps({"Records": [{"eventName": "ObjectCreated:Put"}]})]
)
def test_given_a_body_that_is_not_an_s3_event_then_the_error_says_so(body: str) -> None:
    with pytest.raises(MalformedEventError):
        parse_s3_notification(body)


@pytest.mark.parametrize(
    ("key", "scored", "rejected", "manifest"),
    [
        ("incoming/a/b.csv", "scored/a/b.csv", "rejected/a/b.csv", "manifests/a/b.json"),
        ("incoming/x.csv.gz", "scored/x.csv.gz", "rejected/x.csv", "manifests/x.json"),
        ("incoming/p/q.parquet", "scored/p/q.parquet", "rejected/p/q.csv", "manifests/p/q.json"),
        ("incoming/j.JSONL", "scored/j.JSONL", "rejected/j.csv", "manifests/j.json"),
    ],
)
def test_given_an_incoming_key_then_outputs_mirror_its_path(
    key: str, scored: str, rejected: str, manifest: str
) -> None:
    keys = output_keys(key)
    assert (keys.scored, keys.rejected, keys.manifest) == (scored, rejected, manifest)
    assert manifest_key_for(key) == manifest


def test_given_an_unsupported_name_then_the_error_lists_the_supported_suffixes() -> None:
    assert detect_format("incoming/a.txt") is None
    with pytest.raises(UnsupportedKeyError, match=r"\.csv\.gz"):
        output_keys("incoming/a.txt")
    assert manifest_key_for("incoming/a.txt") == "manifests/a.txt.json"


def test_given_malformed_rows_then_good_rows_keep_their_own_row_numbers() -> None:
    # Rows 2 and 5 were malformed: the 1st..5th good rows are rows 1, 3, 4, 6, 7.
    rows = _MalformedRows(piece_bytes=1024)
    rows.push(2, 2, 3, "a,b,c")
    rows.push(5, 2, 1, "a")
    assert rows.good_row_numbers(3).tolist() == [1, 3, 4]
    assert rows.good_row_numbers(2).tolist() == [6, 7]
    assert _MalformedRows(piece_bytes=1024).good_row_numbers(3).tolist() == [1, 2, 3]


def test_given_a_csv_with_a_bom_and_a_short_line_then_header_and_row_numbers_are_right() -> None:
    data = "\ufeffa,b\n1,2\n3\n4,5\n".encode()
    source = open_source("csv", io.BytesIO(data), csv_block_bytes=1024)
    assert source.columns == ["a", "b"]
    reads = list(source.chunks())
    rows = np.concatenate([read.chunk.row_numbers for read in reads]).tolist()
    malformed = [row.row_number for read in reads for row in read.malformed]
    assert (rows, malformed) == ([1, 3], [2])


def test_given_a_truncated_gzip_then_reading_raises_corrupt_gzip() -> None:
    rows = "".join(f"{i},{i * 7919 % 10007}\n" for i in range(20_000)).encode()
    data = gzip.compress(b"a,b\n" + rows)
    data = data[: len(data) // 2]  # cut in the middle of the deflate stream
    with pytest.raises(UnreadableFileError) as raised:
        list(open_source("csv.gz", io.BytesIO(data), csv_block_bytes=4096).chunks())
    assert raised.value.code == "corrupt_gzip"


def test_given_latin1_text_then_reading_raises_not_utf8() -> None:
    data = "a,b\n1,caf\xe9\n".encode("latin-1")
    with pytest.raises(UnreadableFileError) as raised:
        list(open_source("csv", io.BytesIO(data)).chunks())
    assert raised.value.code == "not_utf8"


def test_given_duplicate_column_names_then_the_file_is_unreadable() -> None:
    with pytest.raises(UnreadableFileError, match="more than once"):
        open_source("csv", io.BytesIO(b"a,a\n1,2\n"))


def test_given_json_lines_with_a_bom_blank_and_bad_lines_then_rows_are_numbered_by_line() -> None:
    data = '\ufeff{"a": 1}\n\n[2]\n{"a": 3}\n'.encode()
    source = open_source("jsonl", io.BytesIO(data), chunk_rows=10)
    assert source.columns == []  # JSON Lines has no header: each line is judged alone
    (read,) = list(source.chunks())
    assert read.chunk.row_numbers.tolist() == [1, 4]
    assert [(row.row_number, row.error_code) for row in read.malformed] == [(3, "not_json_object")]


# ---- scratch left by an invocation that did not finish ------------------------------------------


def _leftovers(root: Path) -> None:
    """What a timed-out invocation leaves in /tmp, next to what is not ours."""
    (root / "batch-abc123").mkdir()
    (root / "batch-abc123" / "scored").write_bytes(b"loan_id,probability\n1,0.5\n")
    (root / "batch-abc123" / "nested").mkdir()
    (root / "other-tool").mkdir()
    (root / "batch-notes.txt").write_text("a file, not a scratch folder")


def test_given_scratch_folders_left_behind_when_removed_then_only_ours_go(tmp_path: Path) -> None:
    _leftovers(tmp_path)
    assert remove_scratch_left_behind(tmp_path) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["batch-notes.txt", "other-tool"]


@pytest.mark.parametrize("in_lambda", [True, False])
def test_given_the_environment_when_the_batch_function_inits_then_scratch_is_cleared_only_in_lambda(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, in_lambda: bool
) -> None:
    # Given leftovers in the function's work folder
    _leftovers(tmp_path)
    monkeypatch.setenv("BATCH_WORK_DIR", str(tmp_path))
    if in_lambda:
        monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "loan-scoring-batch")
    else:
        monkeypatch.delenv("AWS_LAMBDA_FUNCTION_NAME", raising=False)
    # When the init-phase clean-up runs
    clear_scratch_left_behind()
    # Then in Lambda the scratch folder is gone; on a shared machine nothing is touched
    assert (tmp_path / "batch-abc123").exists() is not in_lambda
    assert (tmp_path / "other-tool").is_dir()
