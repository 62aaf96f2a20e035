"""Least privilege in one place: the statements the execution and pipeline roles receive.

Every grant lands in one customer-managed policy per role (no inline policies, no AWS managed
policies), through :class:`PolicyPrincipal`, which CDK's own ``grant*`` helpers accept.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import jsii
from aws_cdk import Acknowledgment, ArnFormat, Validations
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct, IConstruct, IValidation

from ._validation import stack_of

__all__ = [
    "LOG_DELIVERY_ACTIONS",
    "PolicyPrincipal",
    "acknowledge",
    "acknowledge_each",
    "add",
    "bucket_prefix_read",
    "bucket_prefix_write",
    "key_decrypt",
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
        self._pending: list[iam.PolicyStatement] | None = None

    @contextlib.contextmanager
    def batched(self) -> Iterator[None]:
        """Collect the statements added inside the block and add them in one call."""
        outer = self._pending is not None
        if not outer:
            self._pending = []
        try:
            yield
        finally:
            if not outer:
                pending, self._pending = self._pending or [], None
                if pending:
                    self.policy.add_statements(*pending)

    def add_statements(self, *statements: iam.PolicyStatement) -> None:
        if self._pending is not None:
            self._pending.extend(statements)
        else:
            self.policy.add_statements(*statements)

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

    def add_to_principal_policy(
        self, statement: iam.PolicyStatement
    ) -> iam.AddToPrincipalPolicyResult:
        self.add_statements(statement)
        return iam.AddToPrincipalPolicyResult(statement_added=True, policy_dependable=self.policy)

    def add_to_policy(self, statement: iam.PolicyStatement) -> bool:
        return self.add_to_principal_policy(statement).statement_added

    @staticmethod
    def for_role(scope: Construct, id: str, role: iam.IRole) -> PolicyPrincipal:
        policy = iam.ManagedPolicy(scope, id, roles=[role])
        policy.node.add_validation(_AcknowledgeScopedWildcards(policy))
        return PolicyPrincipal(role, policy)


def _render(value: Any) -> str:
    """A resolved CloudFormation value as cdk-nag prints it in finding ids."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and len(value) == 1:
        ((fn, arg),) = value.items()
        if fn == "Ref":
            return f"<{arg}>"
        if fn == "Fn::GetAtt":
            return f"<{arg[0]}.{arg[1]}>"
        if fn == "Fn::Join":
            return str(arg[0]).join(_render(part) for part in arg[1])
    return json.dumps(value, sort_keys=True)


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def wildcard_reason(actions: Sequence[str], resource: str) -> str | None:
    """Why a wildcard in one of this library's statements is needed, or None if it is not ours."""
    if resource == "*":
        if all(a.startswith(_UNSCOPABLE) for a in actions):
            return (
                f"{', '.join(sorted(actions))}: no resource-level permissions exist for "
                "these actions (PutMetricData is limited by a namespace condition)"
            )
        return None
    for marker, reason in _SCOPED_WILDCARDS:
        if marker in resource:
            return reason
    if _S3_OBJECTS.match(resource):
        return _S3_REASON
    return None


# What a state machine needs to deliver its logs; these actions have no resource-level
# permissions (Step Functions docs), so they are granted on "*".
LOG_DELIVERY_ACTIONS = (
    "logs:CreateLogDelivery",
    "logs:GetLogDelivery",
    "logs:UpdateLogDelivery",
    "logs:DeleteLogDelivery",
    "logs:ListLogDeliveries",
    "logs:PutResourcePolicy",
    "logs:DescribeResourcePolicies",
    "logs:DescribeLogGroups",
)
_UNSCOPABLE = (
    "ecr:GetAuthorizationToken",
    "cloudwatch:PutMetricData",
    "ec2:Describe",
    *LOG_DELIVERY_ACTIONS,
    "xray:",
)
_SCOPED_WILDCARDS = (
    (
        ":log-group:/aws/sagemaker/",
        "SageMaker's own log group for this resource type; "
        "SageMaker names the streams (and endpoint groups) at run time",
    ),
    (":training-job/", "job names are generated per execution under this construct's prefix"),
    (":model/", "models are named after each execution's training job, under the prefix"),
    (":endpoint-config/", "endpoint configs are named after each execution's job (prefix)"),
    (":network-interface/*", "SageMaker creates and deletes the job's ENIs at run time"),
    (
        ":log-group:/aws/lambda/*",
        "the deploy-time lookup function's own log group, named after its generated name",
    ),
)
_S3_OBJECTS = re.compile(r"^(arn:(<AWS::Partition>|aws[a-z-]*):s3:::[^/]+|<[^>]+\.Arn>)/.*\*$")
_S3_REASON = "objects under the one key prefix this job uses; object keys are generated at run time"
_KMS_DATA_KEY = ("kms:GenerateDataKey*", "kms:ReEncrypt*")
_KMS_REASON = "KMS data-key actions of CDK's encrypt/decrypt grant, on one key ARN only"


def _merge(reasons: dict[str, str | None], finding: str, reason: str | None) -> None:
    """Record why ``finding`` is fine; one unexplained statement makes it unexplained."""
    if finding in reasons and reasons[finding] is None:
        return
    previous = reasons.get(finding)
    if reason is None or not previous or reason in previous:
        reasons[finding] = reason
    else:
        reasons[finding] = f"{previous}; {reason}"


@jsii.implements(IValidation)
class _AcknowledgeScopedWildcards:
    """Acknowledge (cdk-nag AwsSolutions-IAM5) exactly the scoped wildcards this library writes.

    Runs at synth, once the policy is complete; a wildcard it cannot explain stays a finding.
    """

    def __init__(self, policy: iam.ManagedPolicy) -> None:
        self._policy = policy

    def validate(self) -> list[str]:
        document = stack_of(self._policy).resolve(self._policy.document)
        # One finding id can come from several statements: acknowledge it only when every
        # statement behind it is explained.
        reasons: dict[str, str | None] = {}
        for statement in document.get("Statement", []):
            actions = [str(a) for a in _as_list(statement.get("Action", []))]
            for action in actions:
                if "*" in action:
                    finding = f"AwsSolutions-IAM5[Action::{action}]"
                    _merge(reasons, finding, _KMS_REASON if action in _KMS_DATA_KEY else None)
            for resource in _as_list(statement.get("Resource", [])):
                rendered = _render(resource)
                if "*" in rendered:
                    finding = f"AwsSolutions-IAM5[Resource::{rendered}]"
                    _merge(reasons, finding, wildcard_reason(actions, rendered))
        acknowledge_each(self._policy, {f: why for f, why in reasons.items() if why})
        return []


def acknowledge(scope: IConstruct, findings: Sequence[str], reason: str) -> None:
    """Acknowledge findings on ``scope`` (each finding id individually), with a reason."""
    acknowledge_each(scope, {finding: reason for finding in findings})


def acknowledge_each(scope: IConstruct, reasons: Mapping[str, str]) -> None:
    """Acknowledge several findings on ``scope`` at once, each with its own reason."""
    if reasons:
        Validations.of(scope).acknowledge(
            *[Acknowledgment(id=finding, reason=why) for finding, why in reasons.items()]
        )


def add(principal: iam.IPrincipal, *statements: iam.PolicyStatement) -> None:
    """Add statements in one call where the principal is ours (fewer kernel round trips)."""
    if isinstance(principal, PolicyPrincipal):
        principal.add_statements(*statements)
    else:
        for statement in statements:
            principal.add_to_principal_policy(statement)


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


# What SageMaker does with a customer key: decrypt inputs, encrypt outputs, data keys for
# volumes and S3 objects. Named actions, no ``kms:*Encrypt*`` wildcards.
KMS_DECRYPT = ["kms:Decrypt"]
KMS_ENCRYPT_DECRYPT = [
    "kms:Decrypt",
    "kms:Encrypt",
    "kms:GenerateDataKey",
    "kms:GenerateDataKeyWithoutPlaintext",
]


def _key_statement(key: kms.IKey, actions: list[str]) -> iam.PolicyStatement:
    return iam.PolicyStatement(actions=actions, resources=[key.key_arn])


def bucket_prefix_read(principal: iam.IPrincipal, bucket: s3.IBucket, key_prefix: str) -> None:
    """List and read the objects under ``key_prefix`` (and decrypt them with the bucket key)."""
    statements = [
        _list(bucket, key_prefix),
        iam.PolicyStatement(actions=["s3:GetObject"], resources=[_objects(bucket, key_prefix)]),
    ]
    key = bucket.encryption_key
    if key is not None:
        statements.append(_key_statement(key, KMS_DECRYPT))
    add(principal, *statements)


def bucket_prefix_write(principal: iam.IPrincipal, bucket: s3.IBucket, key_prefix: str) -> None:
    """List, read, write and delete the objects under ``key_prefix``."""
    statements = [
        _list(bucket, key_prefix),
        iam.PolicyStatement(
            actions=["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"],
            resources=[_objects(bucket, key_prefix)],
        ),
    ]
    key = bucket.encryption_key
    if key is not None:
        statements.append(_key_statement(key, KMS_ENCRYPT_DECRYPT))
    add(principal, *statements)


def key_use(principal: iam.IPrincipal, key: kms.IKey) -> None:
    """What SageMaker needs to use a customer key on the role's behalf (volumes, outputs)."""
    add(
        principal,
        _key_statement(key, KMS_ENCRYPT_DECRYPT),
        iam.PolicyStatement(
            actions=["kms:CreateGrant", "kms:DescribeKey"],
            resources=[key.key_arn],
            conditions={"Bool": {"kms:GrantIsForAWSResource": "true"}},
        ),
    )


def key_decrypt(principal: iam.IPrincipal, key: kms.IKey) -> None:
    """Decrypt only (objects read from an encrypted bucket)."""
    add(principal, _key_statement(key, KMS_DECRYPT))


def pass_role(principal: iam.IPrincipal, role: iam.IRole) -> None:
    """``iam:PassRole`` on ``role``, only towards SageMaker."""
    add(
        principal,
        iam.PolicyStatement(
            actions=["iam:PassRole"],
            resources=[role.role_arn],
            conditions={"StringEquals": {"iam:PassedToService": SAGEMAKER}},
        ),
    )


def sagemaker_logs_and_metrics(scope: Construct, principal: iam.IPrincipal, kind: str) -> None:
    """CloudWatch Logs in SageMaker's own log group for ``kind`` (TrainingJobs or Endpoints),
    and metrics in SageMaker's namespaces only."""
    stack = stack_of(scope)
    group = f"/aws/sagemaker/{kind}"
    group_arn = stack.format_arn(
        service="logs",
        resource="log-group",
        resource_name=group if kind == "TrainingJobs" else f"{group}/*",
        arn_format=ArnFormat.COLON_RESOURCE_NAME,
    )
    add(
        principal,
        iam.PolicyStatement(
            actions=["logs:CreateLogGroup", "logs:DescribeLogStreams"], resources=[group_arn]
        ),
        iam.PolicyStatement(
            actions=["logs:CreateLogStream", "logs:PutLogEvents"],
            resources=[f"{group_arn}:log-stream:*"],
        ),
        # PutMetricData has no resource type; the namespace condition scopes it.
        iam.PolicyStatement(
            actions=["cloudwatch:PutMetricData"],
            resources=["*"],
            conditions={
                "StringLike": {"cloudwatch:namespace": ["/aws/sagemaker/*", "aws/sagemaker/*"]}
            },
        ),
    )
