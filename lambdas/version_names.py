"""How a model version's name pins its model: standard library only, so the deploy's synthesis
(infra/rollout.py) applies the same rule as the Lambdas' cold start (lambdas/model_source.py) without
importing the scoring runtime."""

from __future__ import annotations

import re

# How training names a version: ``<dataset>-<first 12 hex of the ONNX file's sha256>``
# (training/pipeline.py). Only a version of that form, for the card's dataset, embeds the model's hash.
_DERIVED_VERSION = re.compile(r"(?P<dataset>.+)-(?P<sha256_prefix>[0-9a-f]{12})")


def hash_prefix_mismatch(model_version: str, dataset: str, sha256: str) -> str | None:
    """The sha256 prefix ``model_version`` names when it is ``<dataset>-<12 hex>`` and ``sha256`` does not
    begin with it; None when it does, or when the name embeds no hash (a label only).

    The one rule that ties a version label to one model: the Lambdas' cold start
    (lambdas/model_source.py) and the deploy's synthesis (infra/rollout.py) apply it, without the scoring
    runtime.
    """
    derived = _DERIVED_VERSION.fullmatch(model_version)
    if derived is None or derived["dataset"] != dataset:
        return None
    prefix = derived["sha256_prefix"]
    # A digest in upper case is the same hash (the card's validator lower-cases it).
    return None if sha256.lower().startswith(prefix) else prefix
