"""Snapshot names for the sweeper's tests."""

from __future__ import annotations

import uuid


def run_name(tag: str) -> str:
    """A run's snapshot name as the state machine makes it, ``train-<uuid>``; the UUID is derived from
    ``tag``, so a test names the same snapshot by the same tag."""
    return f"train-{uuid.uuid5(uuid.NAMESPACE_OID, tag)}"
