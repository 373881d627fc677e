"""The init phase of a handler module: collector paused, then frozen; settings never overridden."""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator

import pytest

from lambdas.init_phase import init_phase


@pytest.fixture(autouse=True)
def _restore_collector() -> Iterator[None]:
    yield
    gc.unfreeze()
    gc.enable()


def test_given_an_init_phase_when_it_runs_then_the_collector_is_paused_and_what_it_built_is_frozen() -> None:
    gc.unfreeze()
    with init_phase():
        paused = not gc.isenabled()
        built = [[index] for index in range(1000)]  # long-lived objects, as imports create
    assert paused
    assert gc.isenabled()
    assert gc.get_freeze_count() >= len(built)


def test_given_an_init_phase_that_fails_when_it_ends_then_the_collector_runs_again() -> None:
    with pytest.raises(RuntimeError, match="bad bundle"), init_phase():
        raise RuntimeError("bad bundle")
    assert gc.isenabled()


def test_given_explicit_thread_and_plugin_settings_when_init_runs_then_they_are_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "4")
    monkeypatch.setenv("PYDANTIC_DISABLE_PLUGINS", "some_plugin")
    with init_phase():
        pass
    assert os.environ["OPENBLAS_NUM_THREADS"] == "4"
    assert os.environ["PYDANTIC_DISABLE_PLUGINS"] == "some_plugin"


def test_given_no_settings_when_init_runs_then_blas_threads_and_pydantic_plugins_are_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    monkeypatch.delenv("PYDANTIC_DISABLE_PLUGINS", raising=False)
    with init_phase():
        pass
    assert os.environ["OPENBLAS_NUM_THREADS"] == "1"
    assert os.environ["PYDANTIC_DISABLE_PLUGINS"] == "__all__"
