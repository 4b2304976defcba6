"""Network: the VPC that the KMIP tasks and the in-VPC Lambdas (CMK API: it tests keystores; rotation:
it probes L1 keys) run in. DECISIONS 16: the path to an on-premises HSM is the customer's VPN or Direct
Connect; the CDK app is only told which subnets route there (an existing VPC) and which CIDRs/ports
the HSM listens on (egress rules). Without an existing VPC a new two-AZ VPC is created."""

from __future__ import annotations

from aws_cdk import RemovalPolicy
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra_cdk.components.functions import retention
from infra_cdk.config import DeployConfig


class Network(Construct):
    def __init__(self, scope: Construct, cid: str, *, config: DeployConfig) -> None:
        super().__init__(scope, cid)
        if config.uses_existing_vpc:
            # from_vpc_attributes needs no lookup, so synthesis stays offline and deterministic.
            self.vpc = ec2.Vpc.from_vpc_attributes(
                self,
                "Vpc",
                vpc_id=config.vpc_id,
                availability_zones=config.availability_zones,
                private_subnet_ids=config.private_subnet_ids,
                public_subnet_ids=config.public_subnet_ids or None,
                vpc_cidr_block=config.vpc_cidr or None,
            )
        else:
            self.vpc = ec2.Vpc(
                self,
                "Vpc",
                max_azs=2,
                nat_gateways=config.nat_gateways,
                subnet_configuration=[
                    ec2.SubnetConfiguration(name="public", subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=24),
                    ec2.SubnetConfiguration(
                        name="private", subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS, cidr_mask=22
                    ),
                ],
                gateway_endpoints={
                    "DynamoDb": ec2.GatewayVpcEndpointOptions(
                        service=ec2.GatewayVpcEndpointAwsService.DYNAMODB
                    ),
                    "S3": ec2.GatewayVpcEndpointOptions(service=ec2.GatewayVpcEndpointAwsService.S3),
                },
            )
            flow_logs = logs.LogGroup(
                self,
                "FlowLogs",
                retention=retention(config.log_retention_days),
                removal_policy=RemovalPolicy.RETAIN,
            )
            self.vpc.add_flow_log(
                "FlowLog",
                destination=ec2.FlowLogDestination.to_cloud_watch_logs(flow_logs),
                traffic_type=ec2.FlowLogTrafficType.REJECT,
                max_aggregation_interval=ec2.FlowLogMaxAggregationInterval.TEN_MINUTES,
            )
        self.private_subnets = ec2.SubnetSelection(
            subnets=self.vpc.private_subnets if config.uses_existing_vpc else None,
            subnet_type=None if config.uses_existing_vpc else ec2.SubnetType.PRIVATE_WITH_EGRESS,
        )
        self.config = config

    def egress_group(self, cid: str, description: str) -> ec2.SecurityGroup:
        """A security group that may reach AWS APIs (HTTPS) and the configured HSM CIDRs/ports only."""
        group = ec2.SecurityGroup(self, cid, vpc=self.vpc, description=description, allow_all_outbound=False)
        group.add_egress_rule(ec2.Peer.any_ipv4(), ec2.Port.tcp(443), "AWS APIs and cloud keystores (HTTPS)")
        for cidr in self.config.hsm_cidrs:
            for port in self.config.hsm_ports:
                group.add_egress_rule(
                    ec2.Peer.ipv4(cidr), ec2.Port.tcp(port), "on-prem HSM over VPN/Direct Connect"
                )
        return group
