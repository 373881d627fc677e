"""Network: isolated subnets (no NAT by default), the endpoints in-VPC tasks need, and flow logs.

The endpoints only carry this account's traffic: the interface endpoints admit principals of this
account, the S3 gateway endpoint reaches this account's buckets plus the one AWS-owned bucket ECR
serves image layers from (see :meth:`Network._restrict_endpoints`). The interface endpoints' security
groups admit HTTPS from the VPC and have no outbound rule (an endpoint never opens a connection).

Subnet CIDRs never depend on ``useNatGateway``: a subnet whose CIDR changes is replaced, and the new one
would overlap the old (the update fails) and take the database's subnet group with it. The two isolated
subnets keep the whole primary block (10.0.0.0/17 and 10.0.128.0/17, what the VPC has always had);
with the NAT, the public and egress subnets go into a second CIDR block of the VPC.
"""

from __future__ import annotations

from aws_cdk import Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra.log_groups import encrypted_log_group
from infra.nag import suppress

VPC_CIDR = "10.0.0.0/16"
ISOLATED_CIDR_MASK = 17  # two AZs x /17 = the whole primary block
# useNatGateway only: a secondary block for the NAT gateway's public subnet and the egress subnets.
EGRESS_VPC_CIDR = "10.1.0.0/16"
PUBLIC_SUBNET_CIDR = "10.1.255.0/24"  # one NAT gateway, in the first AZ
EGRESS_SUBNET_CIDRS = ("10.1.0.0/18", "10.1.64.0/18")  # one per AZ
HTTPS = ec2.Port.tcp(443)

# Interface endpoints for what runs inside the VPC without internet access: pulling the training
# image (ECR API + Docker registry, layers come through the S3 gateway), container logs, the DB secret
# and its rotation, KMS for the encrypted buckets, and STS for the SDKs' regional credential calls.
# Each with the IAM prefix of its service's actions (the Docker registry's are ecr: actions too).
_INTERFACE_ENDPOINTS: dict[str, tuple[ec2.InterfaceVpcEndpointAwsService, str]] = {
    "EcrApi": (ec2.InterfaceVpcEndpointAwsService.ECR, "ecr"),
    "EcrDocker": (ec2.InterfaceVpcEndpointAwsService.ECR_DOCKER, "ecr"),
    "Logs": (ec2.InterfaceVpcEndpointAwsService.CLOUDWATCH_LOGS, "logs"),
    "SecretsManager": (ec2.InterfaceVpcEndpointAwsService.SECRETS_MANAGER, "secretsmanager"),
    "Kms": (ec2.InterfaceVpcEndpointAwsService.KMS, "kms"),
    "Sts": (ec2.InterfaceVpcEndpointAwsService.STS, "sts"),
}


class Network(Construct):
    """A two-AZ VPC whose workloads reach AWS only through VPC endpoints.

    ``useNatGateway`` adds internet egress subnets for Fargate tasks (``task_subnets``: where the loader
    is run), for code an operator adds that calls outside AWS: none of the stack's own calls needs it.
    The database and the secret-rotation function stay in the isolated subnets, which never get a route
    out; so do the training tasks, whose subnets infra/training_pipeline.py selects.
    """

    def __init__(
        self, scope: Construct, construct_id: str, *, use_nat_gateway: bool, logs_key: kms.IKey
    ) -> None:
        """``logs_key`` encrypts the flow logs."""
        super().__init__(scope, construct_id)
        self.vpc = ec2.Vpc(
            self,
            "Vpc",
            ip_addresses=ec2.IpAddresses.cidr(VPC_CIDR),
            max_azs=2,  # RDS subnet groups need two AZs
            nat_gateways=0,  # the optional NAT is built below, outside the isolated subnets' block
            subnet_configuration=[
                ec2.SubnetConfiguration(
                    name="isolated",
                    subnet_type=ec2.SubnetType.PRIVATE_ISOLATED,
                    cidr_mask=ISOLATED_CIDR_MASK,
                )
            ],
            # Removes the default security group's rules through a CDK custom-resource provider function
            # whose role CDK builds itself, with AWS's AWSLambdaBasicExecutionRole (no role or log group
            # setting exists for it): it runs CDK's code during deployments only.
            restrict_default_security_group=True,
        )
        self.isolated_subnets = ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_ISOLATED)
        self.egress_subnets: list[ec2.PrivateSubnet] = self._build_egress() if use_nat_gateway else []
        # Subnets for Fargate tasks that may need egress (the TaskSubnetIds output): behind the NAT if any.
        self.task_subnets = ec2.SubnetSelection(
            subnets=list(self.egress_subnets) or list(self.vpc.isolated_subnets)
        )
        gateway_subnets = [self.isolated_subnets]
        if self.egress_subnets:
            # S3 traffic from the egress subnets too goes through the gateway endpoint, not the NAT.
            gateway_subnets.append(ec2.SubnetSelection(subnets=list(self.egress_subnets)))
        self.s3_endpoint = self.vpc.add_gateway_endpoint(
            "S3", service=ec2.GatewayVpcEndpointAwsService.S3, subnets=gateway_subnets
        )
        endpoint_groups = {name: self._endpoint_security_group(name) for name in _INTERFACE_ENDPOINTS}
        self.interface_endpoints: dict[str, ec2.InterfaceVpcEndpoint] = {
            name: self.vpc.add_interface_endpoint(
                name,
                service=service,
                private_dns_enabled=True,
                # One network interface in each AZ's isolated subnet, whatever useNatGateway says (so the
                # endpoints never move); private DNS serves them to every subnet of the VPC.
                subnets=self.isolated_subnets,
                security_groups=[endpoint_groups[name]],
            )
            for name, (service, _) in _INTERFACE_ENDPOINTS.items()
        }
        self._restrict_endpoints()
        for name, endpoint in self.interface_endpoints.items():
            if self.egress_subnets:
                # The endpoint's own rule admits the primary block only.
                endpoint.connections.allow_from(
                    ec2.Peer.ipv4(EGRESS_VPC_CIDR), HTTPS, "HTTPS from the egress subnets"
                )
            suppress(
                endpoint_groups[name],
                "AwsSolutions-EC23",
                "The endpoint security group admits HTTPS (443) from the VPC's own CIDR blocks only; "
                "cdk-nag cannot evaluate the primary CIDR because it is a CloudFormation reference.",
            )
            # The rules read CidrIp and throw on the primary block's reference (Fn::GetAtt Vpc.CidrBlock),
            # and a rule that throws is reported as a finding: they never see the 10.0.0.0/16 it resolves to.
            for rule in ("NIST.800.53.R5-EC2RestrictedSSH", "NIST.800.53.R5-EC2RestrictedCommonPorts"):
                suppress(
                    endpoint_groups[name],
                    rule,
                    "SC-7/AC-17 ask that SSH and common admin/database ports not be open to 0.0.0.0/0. The "
                    "rule fires only because the ingress CIDR is a CloudFormation token (the VPC's primary "
                    f"block, {VPC_CIDR}), which cdk-nag cannot resolve: the group admits TCP 443 from the "
                    "VPC's own CIDR blocks only, no SSH, no other port, nothing from the internet.",
                )
        flow_log_group = encrypted_log_group(
            self, "FlowLogs", key=logs_key, retention=logs.RetentionDays.ONE_MONTH
        )
        self.vpc.add_flow_log(
            "FlowLog", destination=ec2.FlowLogDestination.to_cloud_watch_logs(flow_log_group)
        )

    def _endpoint_security_group(self, name: str) -> ec2.SecurityGroup:
        """The group of one interface endpoint: HTTPS in from the VPC (the endpoint adds that rule), and
        no outbound rule. An endpoint's network interfaces only answer connections, which a security
        group lets back out whatever its outbound rules say; CDK's own group for an endpoint would
        allow all outbound traffic to 0.0.0.0/0, a rule nothing uses and every review has to explain."""
        return ec2.SecurityGroup(
            self,
            f"{name}EndpointSecurityGroup",
            vpc=self.vpc,
            description=f"{name} interface endpoint: HTTPS from the VPC, nothing outbound",
            allow_all_outbound=False,
        )

    def _restrict_endpoints(self) -> None:
        """Endpoint policies in place of the default full access (they grant nothing: IAM still must)."""
        account = Stack.of(self).account
        for name, (_, action_prefix) in _INTERFACE_ENDPOINTS.items():
            # Whatever calls AWS from the VPC (the training and loader tasks, their image pulls and logs,
            # the secret-rotation function) does so with this account's roles: credentials of another
            # account cannot use these endpoints to reach their own account's resources.
            self.interface_endpoints[name].add_to_policy(
                iam.PolicyStatement(
                    sid="ThisAccountsPrincipalsOnly",
                    principals=[iam.AnyPrincipal()],
                    actions=[f"{action_prefix}:*"],
                    resources=["*"],
                    conditions={"StringEquals": {"aws:PrincipalAccount": account}},
                )
            )
        # Every bucket the tasks in the VPC use is this account's (export and artifact buckets). RDS
        # writes snapshot exports itself, and CloudFormation and Lambda fetch the CDK assets (this
        # account's too) outside the VPC; no custom resource runs in the VPC (their responses go to an
        # AWS-owned bucket). So no other account's bucket: nothing is copied out to one through here.
        self.s3_endpoint.add_to_policy(
            iam.PolicyStatement(
                sid="ThisAccountsBucketsOnly",
                principals=[iam.AnyPrincipal()],
                actions=["s3:*"],
                resources=["*"],
                conditions={"StringEquals": {"aws:ResourceAccount": account}},
            )
        )
        # Image pulls from ECR (the training and loader image): ECR stores layers in an AWS-owned bucket
        # per region, fetched through this endpoint (ECR user guide, "Amazon ECR interface VPC endpoints
        # (AWS PrivateLink)", "Create the Amazon S3 gateway endpoint"). Read-only, that bucket only.
        self.s3_endpoint.add_to_policy(
            iam.PolicyStatement(
                sid="EcrImageLayers",
                principals=[iam.AnyPrincipal()],
                actions=["s3:GetObject"],
                resources=[_ecr_layer_bucket_objects(Stack.of(self))],
            )
        )

    def _build_egress(self) -> list[ec2.PrivateSubnet]:
        """A second CIDR block with one public subnet (NAT gateway) and an egress subnet per AZ."""
        vpc_id = self.vpc.vpc_id
        zones = self.vpc.availability_zones
        block = ec2.CfnVPCCidrBlock(self, "EgressCidrBlock", vpc_id=vpc_id, cidr_block=EGRESS_VPC_CIDR)
        gateway = ec2.CfnInternetGateway(self, "InternetGateway")
        attachment = ec2.CfnVPCGatewayAttachment(
            self, "InternetGatewayAttachment", vpc_id=vpc_id, internet_gateway_id=gateway.ref
        )
        public = ec2.PublicSubnet(
            self,
            "PublicSubnet",
            vpc_id=vpc_id,
            availability_zone=zones[0],
            cidr_block=PUBLIC_SUBNET_CIDR,
            map_public_ip_on_launch=False,  # only the NAT gateway lives here
        )
        public.node.add_dependency(block)
        public.add_default_internet_route(gateway.ref, attachment)
        suppress(
            public,
            "NIST.800.53.R5-VPCNoUnrestrictedRouteToIGW",
            "useNatGateway only: AC-4(21)/CM-7 ask that workloads not have unrestricted internet routes. "
            "This 0.0.0.0/0 route belongs to the public subnet that holds only the NAT gateway (no public "
            "IPs are assigned); without it the NAT, the point of the option, cannot reach the internet. "
            "Deployers who must not have it leave useNatGateway off (the default: no IGW at all).",
        )
        nat = public.add_nat_gateway()
        egress = []
        for index, (zone, cidr) in enumerate(zip(zones, EGRESS_SUBNET_CIDRS, strict=True), start=1):
            subnet = ec2.PrivateSubnet(
                self, f"EgressSubnet{index}", vpc_id=vpc_id, availability_zone=zone, cidr_block=cidr
            )
            subnet.node.add_dependency(block)
            subnet.add_default_nat_route(nat.ref)
            egress.append(subnet)
        return egress


def _ecr_layer_bucket_objects(stack: Stack) -> str:
    """The objects of the AWS-owned bucket ECR serves image layers from, in the stack's region."""
    return f"arn:{stack.partition}:s3:::prod-{stack.region}-starport-layer-bucket/*"
