"""The training image carries the commit it was built from, which the card's lineage then records."""

from __future__ import annotations

import json
from pathlib import Path

from tests.infra.conftest import REPO_ROOT, Synthesised
from training.provenance import SOURCE_COMMIT_VARIABLE, checkout_commit


def test_given_the_synthesised_app_then_the_training_image_is_built_with_the_checkout_commit(
    synthesised: Synthesised,
) -> None:
    manifests = list(synthesised.template_path.parent.glob("*.assets.json"))
    images = [
        image
        for manifest in manifests
        for image in json.loads(manifest.read_text()).get("dockerImages", {}).values()
    ]
    dockerfile = "training/Dockerfile"
    (training_image,) = [image for image in images if image["source"].get("dockerFile") == dockerfile]
    commit = training_image["source"]["dockerBuildArgs"]["SOURCE_COMMIT"]
    assert commit == checkout_commit(REPO_ROOT)
    assert commit != "unknown"  # the tests run in a checkout


def test_given_the_dockerfile_then_the_build_arg_reaches_the_variable_training_reads() -> None:
    lines = (Path(REPO_ROOT) / "training" / "Dockerfile").read_text().splitlines()
    assert "ARG SOURCE_COMMIT=unknown" in lines
    assert f"ENV {SOURCE_COMMIT_VARIABLE}=${{SOURCE_COMMIT}}" in lines
