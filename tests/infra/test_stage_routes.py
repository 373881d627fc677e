"""The stage's resources and methods are lambdas/api/stage.py's ROUTES, which the local server emulates.

A route declared in the stack but missing from the table would get a 403 locally and work on AWS (or
the reverse): the local server and the stack must read the one table.
"""

from __future__ import annotations

from typing import Any

import pytest

from lambdas.api.stage import ROUTES, Route
from tests.infra.conftest import Resources, Synthesised

# What the stack's methods use for the authorised routes, by authMode.
AUTHORISED_TYPES = {"AWS_IAM", "COGNITO_USER_POOLS"}


@pytest.fixture(scope="module", params=["synthesised", "synthesised_with_options"])
def variant(request: pytest.FixtureRequest) -> Resources:
    """The default app (IAM auth) and the one with every option (Cognito auth)."""
    synthesised: Synthesised = request.getfixturevalue(request.param)
    found: Resources = synthesised.template_json["Resources"]
    return found


def _paths(resources: Resources) -> dict[str, str]:
    """Logical id of every AWS::ApiGateway::Resource -> its full path from the API's root."""
    parts = {
        name: (r["Properties"]["ParentId"], r["Properties"]["PathPart"])
        for name, r in resources.items()
        if r["Type"] == "AWS::ApiGateway::Resource"
    }

    def path_of(name: str) -> str:
        parent, part = parts[name]
        prefix = path_of(parent["Ref"]) if "Ref" in parent else ""  # else the root (Fn::GetAtt)
        return f"{prefix}/{part}"

    return {name: path_of(name) for name in parts}


def _resource_path(reference: dict[str, Any], paths: dict[str, str]) -> str:
    if "Ref" in reference:
        return paths[reference["Ref"]]
    assert reference["Fn::GetAtt"][1] == "RootResourceId", reference
    return "/"


def test_given_the_stack_then_its_methods_are_exactly_the_shared_route_table(variant: Resources) -> None:
    # Given every method of the one REST API, with its resource's path and its authorisation
    paths = _paths(variant)
    methods = [r["Properties"] for r in variant.values() if r["Type"] == "AWS::ApiGateway::Method"]
    declared = {
        Route(
            props["HttpMethod"],
            _resource_path(props["ResourceId"], paths),
            authorised=props["AuthorizationType"] != "NONE",
        )
        for props in methods
    }
    # Then they are the table's routes, each once, authorised where the table says so
    assert len(methods) == len(declared)
    assert declared == set(ROUTES)
    # And an authorised route uses the stack's authoriser (IAM or Cognito), not a type the table cannot tell
    assert {props["AuthorizationType"] for props in methods} - {"NONE"} <= AUTHORISED_TYPES


def test_given_the_table_then_routes_are_unique_absolute_and_without_parameters() -> None:
    keys = [(route.method, route.path) for route in ROUTES]
    assert len(keys) == len(set(keys))
    for route in ROUTES:
        # The local server matches paths literally (no {proxy+} or {id}), with no trailing slash
        assert route.path.startswith("/v1/"), route
        assert not route.path.endswith("/"), route
        assert "{" not in route.path, route
        assert route.method in {"GET", "POST", "PUT", "PATCH", "DELETE"}, route
