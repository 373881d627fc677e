"""The database's network boundary and how the loader is told to verify it (one shared synthesis)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from infra.data import RDS_CA_BUNDLE
from tests.infra.conftest import Resources


def _one(resources: Resources, kind: str, name_part: str = "") -> tuple[str, dict[str, Any]]:
    (found,) = [(name, r) for name, r in resources.items() if r["Type"] == kind and name_part in name]
    return found


def test_given_the_loader_task_then_it_verifies_the_database_against_the_rds_ca_bundle(
    resources: Resources,
) -> None:
    _, task = _one(resources, "AWS::ECS::TaskDefinition", "LoaderTask")
    (container,) = task["Properties"]["ContainerDefinitions"]
    environment = {variable["Name"]: variable["Value"] for variable in container["Environment"]}
    # Then TLS is on and the server is verified against RDS's own CA bundle, which no system trust
    # store holds (without it verification fails, or would have to be switched off)
    assert environment["DB_TLS"] == "true"
    assert environment["DB_TLS_CA"] == RDS_CA_BUNDLE
    # And the credentials come from the secret at run time, never from the task definition
    assert set(environment) == {"DB_SECRET_ARN", "DB_TLS", "DB_TLS_CA"}
    assert "Secrets" not in container


def test_given_the_database_security_group_then_mariadb_is_admitted_from_two_groups_and_nothing_leaves(
    resources: Resources,
) -> None:
    database_id, database = _one(resources, "AWS::RDS::DBInstance")
    (group_ref,) = database["Properties"]["VPCSecurityGroups"]
    group_id = group_ref["Fn::GetAtt"][0]
    group = resources[group_id]["Properties"]
    # Then RDS, which opens no connections, may send nothing out (CDK's placeholder rule matches no traffic)
    assert group["SecurityGroupEgress"] == [
        {
            "CidrIp": "255.255.255.255/32",
            "Description": "Disallow all traffic",
            "FromPort": 252,
            "IpProtocol": "icmp",
            "ToPort": 86,
        }
    ]
    assert "SecurityGroupIngress" not in group
    # And only the loader's and the rotation function's groups reach the database port
    ingress = [
        r["Properties"]
        for r in resources.values()
        if r["Type"] == "AWS::EC2::SecurityGroupIngress"
        and r["Properties"]["GroupId"] == {"Fn::GetAtt": [group_id, "GroupId"]}
    ]
    sources = sorted(rule["SourceSecurityGroupId"]["Fn::GetAtt"][0] for rule in ingress)
    assert [source.split("SecurityGroup")[0] for source in sources] == [
        "DataDatabaseRotationSingleUser",
        "DataLoader",
    ]
    for rule in ingress:
        assert "CidrIp" not in rule
        assert rule["IpProtocol"] == "tcp"
        assert rule["FromPort"] == rule["ToPort"] == {"Fn::GetAtt": [database_id, "Endpoint.Port"]}


def test_given_the_training_image_then_it_carries_the_rds_ca_bundle_where_the_loader_is_told() -> None:
    # The loader verifies RDS's certificate against DB_TLS_CA: the image must put the bundle there,
    # readable by the unprivileged user the container runs as (the ADD comes before USER)
    dockerfile = (Path(__file__).resolve().parents[2] / "training" / "Dockerfile").read_text()
    (add,) = [line for line in dockerfile.splitlines() if line.startswith("ADD ") and RDS_CA_BUNDLE in line]
    assert "--chmod=644" in add
    assert "https://truststore.pki.rds.amazonaws.com/" in add
    assert dockerfile.index(add) < dockerfile.index("USER trainer")
