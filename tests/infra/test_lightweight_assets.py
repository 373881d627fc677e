"""The placeholder Lambda assets used by fast synth tests are shared by every pytest worker.

A clean clone's first CI run failed when two xdist workers synthesised at once: both saw no
placeholder, one removed the folder the other was creating, and setup failed with FileExistsError.
"""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from infra.assets import lightweight_asset_dir

_PROCESSES = 6
_ROUNDS = 8


def _make(root: str, barrier: multiprocessing.synchronize.Barrier) -> None:
    barrier.wait()
    lightweight_asset_dir("rollout_check", Path(root))


def test_given_many_processes_building_the_same_placeholder_then_all_succeed(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    for round_number in range(_ROUNDS):
        root = tmp_path / f"round-{round_number}"
        barrier = context.Barrier(_PROCESSES)
        workers = [context.Process(target=_make, args=(str(root), barrier)) for _ in range(_PROCESSES)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(60)
        assert [worker.exitcode for worker in workers] == [0] * _PROCESSES, f"round {round_number}"
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
