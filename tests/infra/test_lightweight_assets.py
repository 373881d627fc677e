"""The placeholder Lambda assets used by fast synth tests are shared by every pytest worker.

A clean clone's CI run failed when two xdist workers synthesised at once: both saw no placeholder,
one removed the folder the other was creating, and setup failed with FileExistsError.
"""

from __future__ import annotations

import threading
from pathlib import Path

from infra.lightweight_assets import lightweight_asset_dir

# Threads stand in for the worker processes: the file lock (flock) is taken on a file opened by each
# call, so calls in one process exclude each other as calls in two processes do.
_CALLERS = 8
_ROUNDS = 20


def test_given_many_callers_building_the_same_placeholder_at_once_then_all_succeed(tmp_path: Path) -> None:
    for round_number in range(_ROUNDS):
        root = tmp_path / f"round-{round_number}"
        start = threading.Barrier(_CALLERS)
        failures: list[BaseException] = []

        def build(
            root: Path = root, start: threading.Barrier = start, failures: list[BaseException] = failures
        ) -> None:
            start.wait()
            try:
                lightweight_asset_dir("rollout_check", root)
            except BaseException as error:  # collected: a thread's exception would be lost
                failures.append(error)

        callers = [threading.Thread(target=build) for _ in range(_CALLERS)]
        for caller in callers:
            caller.start()
        for caller in callers:
            caller.join()
        assert failures == [], f"round {round_number}"
        handler = root / "rollout_check" / "lambdas" / "rollout_check" / "handler.py"
        assert "lightweight test asset" in handler.read_text()


def test_given_a_stale_placeholder_then_it_is_replaced(tmp_path: Path) -> None:
    handler = tmp_path / "api" / "lambdas" / "api" / "handler.py"
    handler.parent.mkdir(parents=True)
    handler.write_text("old placeholder\n")
    (tmp_path / "api" / "leftover.txt").write_text("from an earlier layout\n")

    folder = lightweight_asset_dir("api", tmp_path)

    assert folder == tmp_path / "api"
    assert "lightweight test asset" in handler.read_text()
    assert not (folder / "leftover.txt").exists()
    assert (folder / "lambdas" / "__init__.py").is_file()
