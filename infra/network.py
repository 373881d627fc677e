"""Network: isolated subnets only (no NAT by default), the endpoints in-VPC tasks need, and flow logs."""

from __future__ import annotations

from aws_cdk import RemovalPolicy
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra.nag import suppress

# Interface endpoints for what runs inside the VPC without internet access: pulling the training
# image (ECR API + Docker registry, layers come through the S3 gateway), container logs, the DB secret
# and its rotation, KMS for the encrypted buckets, and STS for the SDKs' regional credential calls.
_INTERFACE_ENDPOINTS: dict[str, ec2.InterfaceVpcEndpointAwsService] = {
    "EcrApi": ec2.InterfaceVpcEndpointAwsService.ECR,
    "EcrDocker": ec2.InterfaceVpcEndpointAwsService.ECR_DOCKER,
    "Logs": ec2.InterfaceVpcEndpointAwsService.CLOUDWATCH_LOGS,
    "SecretsManager": ec2.InterfaceVpcEndpointAwsService.SECRETS_MANAGER,
    "Kms": ec2.InterfaceVpcEndpointAwsService.KMS,
    "Sts": ec2.InterfaceVpcEndpointAwsService.STS,
}


class Network(Construct):
    """A two-AZ VPC whose workloads reach AWS only through VPC endpoints."""

    def __init__(self, scope: Construct, construct_id: str, *, use_nat_gateway: bool) -> None:
        super().__init__(scope, construct_id)
        subnets = [ec2.SubnetConfiguration(name="isolated", subnet_type=ec2.SubnetType.PRIVATE_ISOLATED)]
        if use_nat_gateway:
            subnets += [ec2.SubnetConfiguration(name="public", subnet_type=ec2.SubnetType.PUBLIC)]
        self.vpc = ec2.Vpc(
            self,
            "Vpc",
            max_azs=2,  # RDS subnet groups need two AZs
            nat_gateways=1 if use_nat_gateway else 0,
            subnet_configuration=subnets,
            restrict_default_security_group=True,
        )
        self.isolated_subnets = ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_ISOLATED)
        self.vpc.add_gateway_endpoint(
            "S3", service=ec2.GatewayVpcEndpointAwsService.S3, subnets=[self.isolated_subnets]
        )
        self.interface_endpoints: dict[str, ec2.InterfaceVpcEndpoint] = {
            name: self.vpc.add_interface_endpoint(
                name,
                service=service,
                private_dns_enabled=True,
                # One AZ halves the hourly endpoint cost; the other AZ reaches it through private DNS.
                subnets=ec2.SubnetSelection(subnets=[self.vpc.isolated_subnets[0]]),
            )
            for name, service in _INTERFACE_ENDPOINTS.items()
        }
        for endpoint in self.interface_endpoints.values():
            suppress(
                endpoint,
                "AwsSolutions-EC23",
                "The endpoint security group admits HTTPS (443) from the VPC's own CIDR only; cdk-nag cannot "
                "evaluate the CIDR because it is a CloudFormation reference.",
            )
        flow_log_group = logs.LogGroup(
            self, "FlowLogs", retention=logs.RetentionDays.ONE_MONTH, removal_policy=RemovalPolicy.DESTROY
        )
        self.vpc.add_flow_log(
            "FlowLog", destination=ec2.FlowLogDestination.to_cloud_watch_logs(flow_log_group)
        )

    @property
    def secrets_manager_endpoint(self) -> ec2.InterfaceVpcEndpoint:
        return self.interface_endpoints["SecretsManager"]
