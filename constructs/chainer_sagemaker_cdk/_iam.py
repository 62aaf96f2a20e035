"""Least privilege in one place: the statements the execution and pipeline roles receive.

Every grant lands in one customer-managed policy per role (no inline policies, no AWS managed
policies), through :class:`PolicyPrincipal`, which CDK's own ``grant*`` helpers accept.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jsii
from aws_cdk import Acknowledgment, ArnFormat, Stack, Validations
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

__all__ = [
    "PolicyPrincipal",
    "acknowledge",
    "bucket_prefix_read",
    "bucket_prefix_write",
    "key_use",
    "pass_role",
    "sagemaker_logs_and_metrics",
]

SAGEMAKER = "sagemaker.amazonaws.com"


@jsii.implements(iam.IPrincipal)
class PolicyPrincipal:
    """A role's principal whose policy additions go into one customer-managed policy."""

    def __init__(self, role: iam.IRole, policy: iam.ManagedPolicy) -> None:
        self._role = role
        self.policy = policy

    @property
    def role(self) -> iam.IRole:
        return self._role

    @property
    def assume_role_action(self) -> str:
        return self._role.assume_role_action

    @property
    def grant_principal(self) -> iam.IPrincipal:
        return self  # type: ignore[return-value]

    @property
    def policy_fragment(self) -> iam.PrincipalPolicyFragment:
        return self._role.policy_fragment

    @property
    def principal_account(self) -> str | None:
        return self._role.principal_account

    def add_to_principal_policy(self, statement: iam.PolicyStatement) -> iam.AddToPrincipalPolicyResult:
        self.policy.add_statements(statement)
        return iam.AddToPrincipalPolicyResult(statement_added=True, policy_dependable=self.policy)

    def add_to_policy(self, statement: iam.PolicyStatement) -> bool:
        return self.add_to_principal_policy(statement).statement_added

    @staticmethod
    def for_role(scope: Construct, id: str, role: iam.IRole) -> PolicyPrincipal:
        policy = iam.ManagedPolicy(scope, id, roles=[role])
        return PolicyPrincipal(role, policy)


def acknowledge(scope: Construct, findings: Sequence[str], reason: str) -> None:
    """Acknowledge compliance findings on ``scope`` (each finding id individually), with a reason."""
    for finding in findings:
        Validations.of(scope).acknowledge(Acknowledgment(id=finding, reason=reason))


def _prefix(key_prefix: str) -> str:
    return key_prefix.strip("/")


def _objects(bucket: s3.IBucket, key_prefix: str) -> str:
    prefix = _prefix(key_prefix)
    return bucket.arn_for_objects(f"{prefix}/*" if prefix else "*")


def _list(bucket: s3.IBucket, key_prefix: str) -> iam.PolicyStatement:
    prefix = _prefix(key_prefix)
    conditions: dict[str, Any] = {}
    if prefix:
        conditions = {"StringLike": {"s3:prefix": [prefix, f"{prefix}/*"]}}
    return iam.PolicyStatement(
        actions=["s3:ListBucket"], resources=[bucket.bucket_arn], conditions=conditions or None
    )


def bucket_prefix_read(principal: iam.IPrincipal, bucket: s3.IBucket, key_prefix: str) -> None:
    """List and read the objects under ``key_prefix`` (and decrypt them with the bucket key)."""
    principal.add_to_principal_policy(_list(bucket, key_prefix))
    principal.add_to_principal_policy(
        iam.PolicyStatement(actions=["s3:GetObject"], resources=[_objects(bucket, key_prefix)])
    )
    if bucket.encryption_key is not None:
        bucket.encryption_key.grant_decrypt(principal)


def bucket_prefix_write(principal: iam.IPrincipal, bucket: s3.IBucket, key_prefix: str) -> None:
    """List, read, write and delete the objects under ``key_prefix``."""
    principal.add_to_principal_policy(_list(bucket, key_prefix))
    principal.add_to_principal_policy(
        iam.PolicyStatement(
            actions=["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"],
            resources=[_objects(bucket, key_prefix)],
        )
    )
    if bucket.encryption_key is not None:
        bucket.encryption_key.grant_encrypt_decrypt(principal)


def key_use(principal: iam.IPrincipal, key: kms.IKey) -> None:
    """What SageMaker needs to use a customer key on the role's behalf (volumes, outputs)."""
    key.grant_encrypt_decrypt(principal)
    principal.add_to_principal_policy(
        iam.PolicyStatement(
            actions=["kms:CreateGrant", "kms:DescribeKey"],
            resources=[key.key_arn],
            conditions={"Bool": {"kms:GrantIsForAWSResource": "true"}},
        )
    )


def pass_role(principal: iam.IPrincipal, role: iam.IRole) -> None:
    """``iam:PassRole`` on ``role``, only towards SageMaker."""
    principal.add_to_principal_policy(
        iam.PolicyStatement(
            actions=["iam:PassRole"],
            resources=[role.role_arn],
            conditions={"StringEquals": {"iam:PassedToService": SAGEMAKER}},
        )
    )


def sagemaker_logs_and_metrics(scope: Construct, principal: iam.IPrincipal, kind: str) -> None:
    """CloudWatch Logs in SageMaker's own log group for ``kind`` (TrainingJobs or Endpoints),
    and metrics in SageMaker's namespaces only."""
    stack = Stack.of(scope)
    group = f"/aws/sagemaker/{kind}"
    group_arn = stack.format_arn(
        service="logs", resource="log-group", resource_name=group if kind == "TrainingJobs"
        else f"{group}/*", arn_format=ArnFormat.COLON_RESOURCE_NAME,
    )
    principal.add_to_principal_policy(
        iam.PolicyStatement(
            actions=["logs:CreateLogGroup", "logs:DescribeLogStreams"], resources=[group_arn]
        )
    )
    principal.add_to_principal_policy(
        iam.PolicyStatement(
            actions=["logs:CreateLogStream", "logs:PutLogEvents"],
            resources=[f"{group_arn}:log-stream:*"],
        )
    )
    principal.add_to_principal_policy(
        iam.PolicyStatement(
            actions=["cloudwatch:PutMetricData"],
            resources=["*"],  # PutMetricData has no resource type; the namespace condition scopes it
            conditions={"StringLike": {"cloudwatch:namespace": ["/aws/sagemaker/*", "aws/sagemaker/*"]}},
        )
    )
