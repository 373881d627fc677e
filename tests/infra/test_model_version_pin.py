"""modelBundleVersion pins the served model: both functions get MODEL_BUNDLE_VERSION, the version they
must find in the card of the registered folder (checked at cold start, see lambdas/model_source.py)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.infra.conftest import REGISTERED_MODEL, Resources, Synthesised

_HANDLERS = ("lambdas.api.handler.handler", "lambdas.batch.handler.handler")
# <model_name>/<model_version>: the version is the last segment.
_VERSION = REGISTERED_MODEL.rpartition("/")[2]


def _variables(resources: Resources, handler: str) -> dict[str, Any]:
    (function,) = (
        r
        for r in resources.values()
        if r["Type"] == "AWS::Lambda::Function" and r["Properties"]["Handler"] == handler
    )
    variables: dict[str, Any] = function["Properties"]["Environment"]["Variables"]
    return variables


@pytest.mark.parametrize("handler", _HANDLERS)
def test_given_model_bundle_version_when_synthesised_then_the_function_expects_that_version_and_not_otherwise(
    synthesised_with_registry_model: Synthesised, resources: Resources, handler: str
) -> None:
    # Given -c modelBundleVersion=<model>/<version>
    registered = _variables(synthesised_with_registry_model.template_json["Resources"], handler)
    # Then the function expects <version>, the folder its MODEL_BUNDLE_URI ends with
    assert registered["MODEL_BUNDLE_VERSION"] == _VERSION
    uri_parts = registered["MODEL_BUNDLE_URI"]["Fn::Join"][1]
    assert uri_parts[-1].endswith(f"/{_VERSION}/")
    # And with the default context (the packaged bundle) there is no version to expect
    assert "MODEL_BUNDLE_VERSION" not in _variables(resources, handler)
