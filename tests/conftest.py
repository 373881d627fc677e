"""Shared fixtures: where the public datasets live, and markers that skip with a visible reason."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from localapi.background import bypass_proxies_for_loopback

REPO_ROOT = Path(__file__).resolve().parents[1]
# The tests' servers (moto, the local API) are on 127.0.0.1: never through a proxy the machine sets.
bypass_proxies_for_loopback()


def shared_data_dir() -> Path:
    """The public datasets folder: $LOAN_SHARED_DATA, else ../shared/data beside the checkout."""
    configured = os.environ.get("LOAN_SHARED_DATA")
    return Path(configured) if configured else REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    folder = shared_data_dir()
    if not folder.is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI needs the shared datasets at {folder}")
        pytest.skip(f"shared datasets not found at {folder} (set LOAN_SHARED_DATA)")
    return folder
