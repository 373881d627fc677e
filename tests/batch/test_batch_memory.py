"""A large file is streamed: the rows held at once are bounded by the block size, not the file size."""

from __future__ import annotations

import threading
import time

import numpy as np
import psutil
import pytest

from tests.batch.conftest import NotifiedBucket

ROWS = 150_000
BLOCK_BYTES = 256 * 1024


def large_csv(rows: int) -> bytes:
    generator = np.random.default_rng(7)
    ages = generator.integers(18, 90, rows)
    incomes = generator.integers(5_000, 200_000, rows)
    homes = np.array(["RENT", "OWN", "MORTGAGE"])[generator.integers(0, 3, rows)]
    ratios = np.round(generator.uniform(0.0, 1.0, rows), 3)
    defaults = np.array(["true", "false"])[generator.integers(0, 2, rows)]
    lines = ["application_id,age,income,home,loan_ratio,prior_default"]
    lines += [
        f"L-{i},{a},{inc},{h},{r},{d}"
        for i, (a, inc, h, r, d) in enumerate(
            zip(
                ages.tolist(),
                incomes.tolist(),
                homes.tolist(),
                ratios.tolist(),
                defaults.tolist(),
                strict=True,
            )
        )
    ]
    return ("\n".join(lines) + "\n").encode()


class PeakRss:
    """Samples this process's resident memory in a thread; ``growth`` is peak minus the start."""

    def __init__(self) -> None:
        self._process = psutil.Process()
        self.start = self._process.memory_info().rss
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._process.memory_info().rss)
            time.sleep(0.005)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def growth(self) -> int:
        return self.peak - self.start


def test_given_a_large_csv_when_scored_then_rows_are_held_in_bounded_chunks_and_memory_stays_flat(
    notified_bucket: NotifiedBucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given: a warm function (model loaded, pools allocated), 150k rows (~5.5 MB of CSV), 256 KiB blocks
    monkeypatch.setenv("BATCH_CSV_BLOCK_BYTES", str(BLOCK_BYTES))
    notified_bucket.put("incoming/large/warm-up.csv", large_csv(20_000))
    assert notified_bucket.drain().manifests[0]["status"] == "succeeded"
    body = large_csv(ROWS)
    notified_bucket.put("incoming/large/applications.csv", body)
    del body

    # When
    with PeakRss() as rss:
        result = notified_bucket.drain()

    # Then: every row accounted for, in many small chunks, with memory far below the whole file's
    (manifest,) = result.manifests
    assert manifest["status"] == "succeeded"
    counts = manifest["counts"]
    assert counts["rows_in"] == ROWS
    assert counts["rows_in"] == counts["rows_scored"] + counts["rows_rejected"]
    assert manifest["chunking"]["chunks"] >= 15
    assert manifest["chunking"]["max_rows_per_chunk"] <= BLOCK_BYTES // 30  # rows are >= 30 bytes each
    # Holding the whole file as Python values would take hundreds of MB; a warm chunk costs a few MB.
    print(f"peak RSS growth {rss.growth / 2**20:.1f} MiB over {manifest['chunking']}")
    assert rss.growth < 48 * 1024 * 1024, f"RSS grew by {rss.growth / 2**20:.0f} MiB"
