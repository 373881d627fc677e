from __future__ import annotations

from pathlib import Path

import pytest

from lambdas.scoring.runtime import ScoringModel
from tests.scoring.bundles import CATEGORY_INPUTS, write_logistic_bundle


@pytest.fixture(scope="session", params=CATEGORY_INPUTS)
def logistic_bundle(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    """The logistic bundle with its category fed as text and, again, as a code: every runtime test
    runs against both encodings."""
    return write_logistic_bundle(tmp_path_factory.mktemp("bundle") / "logistic", request.param)


@pytest.fixture(scope="session")
def model(logistic_bundle: Path) -> ScoringModel:
    return ScoringModel.load_directory(logistic_bundle)
