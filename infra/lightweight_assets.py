"""Placeholder Lambda assets for fast synth tests (context ``lightweightAssets=true``), never deployed.

Kept free of CDK imports so that many processes can be started cheaply to check the file lock.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from infra.lambda_package import REPO_ROOT, exclusive_lock

LIGHTWEIGHT_ASSETS_ROOT = REPO_ROOT / "build" / "lightweight-assets"

_LIGHTWEIGHT_HANDLER = '''"""Placeholder for infra tests (context lightweightAssets=true); never deployed."""


def handler(event, context):
    raise RuntimeError("lightweight test asset: synthesise without lightweightAssets to deploy")
'''


def lightweight_asset_dir(function: str, root: Path = LIGHTWEIGHT_ASSETS_ROOT) -> Path:
    """The placeholder package of ``function`` under ``root``, written once. Every pytest worker
    synthesises, so the check and the rewrite happen under one file lock (beside the folder, so it
    never changes the asset's hash)."""
    folder = root / function
    handler_file = folder / "lambdas" / function / "handler.py"
    with exclusive_lock(root / f"{function}.lock"):
        if not handler_file.is_file() or handler_file.read_text() != _LIGHTWEIGHT_HANDLER:
            shutil.rmtree(folder, ignore_errors=True)
            handler_file.parent.mkdir(parents=True)
            for package in (folder / "lambdas", handler_file.parent):
                (package / "__init__.py").write_text("")
            handler_file.write_text(_LIGHTWEIGHT_HANDLER)
    return folder
