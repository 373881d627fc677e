from __future__ import annotations

from pathlib import Path

import pytest

from lambdas.scoring.runtime import ScoringModel
from tests.scoring.bundles import write_logistic_bundle


@pytest.fixture(scope="session")
def logistic_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_logistic_bundle(tmp_path_factory.mktemp("bundle") / "logistic")


@pytest.fixture(scope="session")
def model(logistic_bundle: Path) -> ScoringModel:
    return ScoringModel.load_directory(logistic_bundle)
