"""Which code trained a model: the commit recorded in the card's lineage.

Light on purpose (standard library only): infrastructure code imports it at synthesis to stamp the
training image, and the training run reads it back.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

# Set in the training image from the commit the image was built from (training/Dockerfile): the image
# holds no .git and no git, so the checkout cannot be asked at training time.
SOURCE_COMMIT_VARIABLE = "TRAINING_SOURCE_COMMIT"
UNKNOWN = "unknown"


def checkout_commit(folder: Path) -> str:
    """HEAD of the git checkout holding ``folder``, with ``-dirty`` when tracked files differ from it
    (a model must not be credited to a commit whose code did not train it); "unknown" without git."""

    def git(*arguments: str) -> str:
        completed = subprocess.run(  # noqa: S603 - fixed arguments from this module
            ["git", *arguments],  # noqa: S607 - git from PATH is the point
            capture_output=True,
            text=True,
            check=True,
            cwd=folder,
            timeout=10,
        )
        return completed.stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        changed = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return UNKNOWN
    return f"{commit}-dirty" if changed else commit


def source_commit(folder: Path) -> str:
    """The checkout's commit when there is one, else the image's stamped commit, else "unknown"."""
    commit = checkout_commit(folder)
    if commit != UNKNOWN:
        return commit
    return os.environ.get(SOURCE_COMMIT_VARIABLE, "").strip() or UNKNOWN
