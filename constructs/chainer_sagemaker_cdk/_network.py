"""VPC placement shared by training jobs and models."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from aws_cdk import aws_iam as iam
from constructs import Construct

from ._iam import acknowledge, add, statement
from ._validation import require, stack_of

if TYPE_CHECKING:
    from aws_cdk import aws_ec2 as ec2

__all__ = ["VpcPlacement"]


class VpcPlacement:
    """Subnets and security groups in a VPC, and the ENI rights SageMaker needs there."""

    def __init__(
        self,
        scope: Construct,
        vpc: ec2.IVpc | None,
        subnets: ec2.SubnetSelection | None,
        groups: Sequence[ec2.ISecurityGroup] | None,
        description: str,
        *,
        hosts_talk: bool = False,
    ) -> None:
        """``hosts_talk``: a created group lets its members reach each other (multi-host MPI)."""
        self.vpc = vpc
        self.subnet_ids: list[str] = []
        self.security_groups: list[ec2.ISecurityGroup] = []
        if vpc is None:
            require(not groups, "security_groups", "given", "also give vpc, or leave them out")
            require(subnets is None, "vpc_subnets", "given", "also give vpc, or leave it out")
            return
        self.subnet_ids = list(vpc.select_subnets(**_selection(subnets)).subnet_ids)
        if groups:
            self.security_groups = list(groups)
            return
        from aws_cdk import aws_ec2  # only with a VPC: a large module to import

        group = aws_ec2.SecurityGroup(
            scope, "SecurityGroup", vpc=vpc, allow_all_outbound=True, description=description
        )
        if hosts_talk:
            group.add_ingress_rule(group, aws_ec2.Port.all_traffic(), "hosts of the same job (MPI)")
            # cdk-nag reads any all-ports rule as open to the world; this one's source is the
            # group itself.
            for pack in ("HIPAA.Security", "NIST.800.53.R5"):
                acknowledge(
                    group,
                    [f"{pack}-EC2RestrictedCommonPorts"],
                    "The only ingress rule's source is this security group: the hosts "
                    "of one training job reach each other (SSH, MPI); no CIDR is open.",
                )
        self.security_groups = [group]

    def render(self) -> dict[str, Any] | None:
        """``VpcConfig`` for SageMaker, or None outside a VPC."""
        if self.vpc is None:
            return None
        return {
            "SecurityGroupIds": [g.security_group_id for g in self.security_groups],
            "Subnets": list(self.subnet_ids),
        }

    def grant(self, scope: Construct, principal: iam.IPrincipal) -> None:
        """ENI rights, only in a VPC."""
        if self.vpc is None:
            return
        stack = stack_of(scope)
        eni = stack.format_arn(service="ec2", resource="network-interface", resource_name="*")
        subnets = [
            stack.format_arn(service="ec2", resource="subnet", resource_name=s)
            for s in self.subnet_ids
        ]
        groups = [
            stack.format_arn(
                service="ec2", resource="security-group", resource_name=g.security_group_id
            )
            for g in self.security_groups
        ]
        # https://docs.aws.amazon.com/sagemaker/latest/dg/sagemaker-roles.html#sagemaker-roles-createtrainingjob-perms
        add(
            principal,
            statement(["ec2:CreateNetworkInterface"], [eni, *subnets, *groups]),
            statement(
                [
                    "ec2:CreateNetworkInterfacePermission",
                    "ec2:DeleteNetworkInterface",
                    "ec2:DeleteNetworkInterfacePermission",
                ],
                [eni],
            ),
            # Describe* calls have no resource-level permissions.
            statement(
                [
                    "ec2:DescribeNetworkInterfaces",
                    "ec2:DescribeVpcs",
                    "ec2:DescribeSubnets",
                    "ec2:DescribeSecurityGroups",
                    "ec2:DescribeDhcpOptions",
                ],
                ["*"],
            ),
        )


def _selection(subnets: ec2.SubnetSelection | None) -> dict[str, Any]:
    if subnets is None:
        return {}
    fields = (
        "availability_zones",
        "one_per_az",
        "subnet_filters",
        "subnet_group_name",
        "subnets",
        "subnet_type",
    )
    return {f: getattr(subnets, f) for f in fields if getattr(subnets, f) is not None}
