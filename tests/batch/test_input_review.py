"""Review of the batch input side: how CSV files with bad lines and awkward headers are read."""

from __future__ import annotations

import io
import random
import tracemalloc

import pytest

from lambdas.batch.formats import UnreadableFileError, _MalformedRows, open_source
from lambdas.scoring.runtime import ScoringModel
from tests.batch.helpers import GOOD_LINE, HEADER, score

SURPLUS_LINE = GOOD_LINE + ",surplus"  # one field more than the header has


def test_given_a_csv_whose_every_row_has_a_field_too_many_then_memory_stays_bounded() -> None:
    # Given: a header one name short (e.g. the data rows end in a delimiter the header lacks), so
    # every row is malformed and pyarrow returns no batch until the end of the file
    rows = 150_000
    data = (HEADER + "\n" + "".join(SURPLUS_LINE + "\n" for _ in range(rows))).encode()
    source = open_source("csv", io.BytesIO(data), csv_block_bytes=64 * 1024)

    # When: the file is read chunk by chunk
    tracemalloc.start()
    try:
        next_number, in_order = 1, True
        for read in source.chunks():
            for row in read.malformed:  # checked as they come: a list of them would be held too
                in_order &= row.row_number == next_number and row.raw_line == SURPLUS_LINE
                next_number += 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    # Then: every row comes back once, in order, while what is held is the reader's buffers and a
    # piece of rows, not the file: it is 5.7 MB, and holding every malformed row took ~57 MB
    assert in_order
    assert next_number == rows + 1
    assert peak < 4 * 1024 * 1024 < len(data), f"{peak:,} bytes held for a {len(data):,}-byte file"


def test_given_every_row_malformed_when_scored_then_all_are_rejected_in_order_with_their_text(
    model: ScoringModel,
) -> None:
    # Given: 3,000 rows with a field too many, read in small blocks
    rows = 3_000
    data = (HEADER + "\n" + "".join(SURPLUS_LINE + "\n" for _ in range(rows))).encode()

    # When
    result = score(model, "csv", data, csv_block_bytes=4096)

    # Then: every row is a rejected row with its number and full line; the scored file is the header
    assert (result.counts.rows_in, result.counts.rows_rejected, result.counts.rows_scored) == (rows, rows, 0)
    rejected = result.rejected_rows()
    assert [int(row["row_number"]) for row in rejected] == list(range(1, rows + 1))
    assert {row["raw_line"] for row in rejected} == {SURPLUS_LINE}
    assert {row["error_code"] for row in rejected} == {"wrong_field_count"}
    assert result.scored.decode().count("\n") == 1


def test_given_runs_of_malformed_rows_between_good_ones_across_blocks_then_every_row_keeps_its_number(
    model: ScoringModel,
) -> None:
    # Given: long runs of malformed rows (longer than a block), blank lines and values spanning lines
    # between well-formed rows whose application_id is their row number; every other well-formed
    # row has an age out of range, so it is rejected with the number the reader gave it
    lines: list[str] = [HEADER]
    expected_rejected: list[int] = []
    number = 0
    for run, bad_run in enumerate([0, 400, 1, 0, 250, 3, 900, 0, 2, 300]):
        for _ in range(bad_run):
            number += 1
            lines.append(SURPLUS_LINE)
            expected_rejected.append(number)
        for _ in range(run + 1):
            number += 1
            age = 12 if number % 2 else 24
            quoted_id = f'"{number}\n"' if run == 4 else str(number)  # run 4: ids span two lines
            lines.append(f"{quoted_id},{age},32000.0,RENT,0.45,true")
            if age == 12:
                expected_rejected.append(number)
        lines.append("")  # a blank line is not a row
    for _ in range(300):  # and a run that ends the file
        number += 1
        lines.append(SURPLUS_LINE)
        expected_rejected.append(number)
    data = ("\n".join(lines) + "\n").encode()

    # When
    result = score(model, "csv", data, csv_block_bytes=2048)

    # Then: rejected rows are in order with their own numbers; a row rejected for its value is
    # numbered as its application_id says
    assert result.counts.rows_in == number
    rejected = result.rejected_rows()
    assert [int(row["row_number"]) for row in rejected] == expected_rejected
    for row in rejected:
        if row["error_code"] == "out_of_range":
            assert int(row["application_id"].strip()) == int(row["row_number"])
    assert result.counts.rows_scored == number - len(expected_rejected)


def test_given_a_bom_and_a_quoted_first_header_name_with_a_line_break_then_the_header_is_one_record(
    model: ScoringModel,
) -> None:
    # Given: Excel's "CSV UTF-8" (a byte-order mark) and a first header name quoted across lines
    header = b'\xef\xbb\xbf"application\nid",age,income,home,loan_ratio,prior_default\n'
    data = header + GOOD_LINE.encode() + b"\n"

    # When
    result = score(model, "csv", data)

    # Then: the header is the whole first record, and the row is scored
    assert result.counts.rows_scored == 1
    assert result.scored.decode().startswith('"application\nid","age"')


def test_given_a_header_ending_in_empty_names_then_the_error_says_the_columns_have_no_name(
    model: ScoringModel,
) -> None:
    # Given: a spreadsheet export whose header ends in empty cells (",,"), as the data rows do
    data = (HEADER + ",,\n" + GOOD_LINE + ",,\n").encode()

    # When / Then: the file is refused, with a message a person can act on (not "['']")
    with pytest.raises(UnreadableFileError) as raised:
        score(model, "csv", data)
    assert raised.value.code == "duplicate_columns"
    assert "2 columns have no name" in raised.value.message


def test_given_random_runs_of_malformed_rows_then_good_rows_are_numbered_as_the_whole_list_says() -> None:
    generator = random.Random(7)
    for _ in range(300):
        # Given: rows, each malformed or good, with runs of every length
        kinds = [generator.random() < 0.6 for _ in range(generator.randint(1, 120))]  # True: malformed
        malformed = [number for number, bad in enumerate(kinds, 1) if bad]
        good = [number for number, bad in enumerate(kinds, 1) if not bad]
        rows = _MalformedRows(piece_bytes=64)
        reported = numbered = 0
        got: list[int] = []
        while numbered < len(good):
            # When: the reader returns a batch of good rows after reporting every malformed row
            # before its last one, and maybe a few after it (pyarrow reports the next block's early)
            count = generator.randint(1, len(good) - numbered)
            last = good[numbered + count - 1]
            ahead = generator.randint(0, 3)
            while reported < len(malformed) and (malformed[reported] < last or ahead):
                ahead -= malformed[reported] > last
                rows.push(malformed[reported], 6, 7, "")
                reported += 1
            got += rows.good_row_numbers(count).tolist()
            numbered += count

        # Then: the good rows get their own numbers, as the whole list of malformed numbers says
        assert got == good
