"""Least privilege in one place: the statements the execution and pipeline roles receive.

Every grant lands in customer-managed policies of the role (no inline policies, no AWS managed
policies), through :class:`PolicyPrincipal`, which CDK's own ``grant*`` helpers accept; the
statements are merged and split to fit IAM's size limits (:mod:`._policy_document`).

Other modules build statements as IAM JSON with :func:`statement` and add them with
:func:`add`; public ``grant_*`` methods return :func:`grant`'s ``iam.Grant``.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import jsii
from aws_cdk import (
    Acknowledgment,
    Annotations,
    ArnFormat,
    AspectPriority,
    Aspects,
    IAspect,
    RemovalPolicy,
    Validations,
)
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct, DependencyGroup, IConstruct

from ._policy_document import MANAGED_POLICIES_PER_ROLE, MANAGED_POLICY_LIMIT, merge, split
from ._validation import is_unresolved, stack_of

__all__ = [
    "LOG_DELIVERY_ACTIONS",
    "RUN_SEPARATOR",
    "PolicyPrincipal",
    "acknowledge",
    "acknowledge_each",
    "add",
    "bucket_arn",
    "bucket_prefix_read",
    "bucket_prefix_read_statements",
    "bucket_prefix_write",
    "bucket_prefix_write_statements",
    "grant",
    "is_immutable",
    "key_decrypt",
    "key_use",
    "key_use_statements",
    "list_prefix",
    "name_prefix_arn",
    "pass_role",
    "run_name",
    "run_name_arn",
    "run_name_pattern",
    "sagemaker_arn",
    "sagemaker_logs_and_metrics",
    "statement",
]

SAGEMAKER = "sagemaker.amazonaws.com"


def is_immutable(role: iam.IRole) -> bool:
    """True for roles CDK treats as immutable: ``Role.from_role_arn(..., mutable=False)``, roles
    of another account, and ``role.without_policy_updates()``.

    aws-cdk-lib's ``ImmutableRole`` is private; it is recognized by the construct IDs CDK gives
    it (``ImmutableRole<id>`` from ``without_policy_updates``; an ``MutableRole<id>`` sibling
    that holds the wrapped import from ``from_role_arn``). A role built as ``iam.Role`` here is
    mutable: known without the four round trips to the kernel the look-up costs.
    """
    if isinstance(role, iam.Role):
        return False
    node = role.node
    if node.id.startswith("ImmutableRole"):
        return True
    scope = node.scope
    return scope is not None and scope.node.try_find_child(f"MutableRole{node.id}") is not None


@jsii.implements(IAspect)
class _Materialize:
    """Turns the collected statements of a stack's principals into managed policies once the
    app is complete.

    One aspect per stack, on the first principal's container (a leaf: the aspect is visited
    once; on the stack it would be called back for every construct), materializes every
    principal of the stack: each added aspect costs four round trips to the kernel.
    """

    def __init__(self, first: PolicyPrincipal) -> None:
        self._first = first
        self.principals: list[PolicyPrincipal] = []
        self.ran = False

    def visit(self, node: IConstruct) -> None:
        if node is self._first.container:
            self.ran = True
            for principal in self.principals:
                principal._materialize()

    @staticmethod
    def register(principal: PolicyPrincipal) -> None:
        stack = principal._stack
        aspect: _Materialize | None = getattr(stack, "_chainer_materialize", None)
        if aspect is None or aspect.ran:  # a principal made during synth gets its own
            aspect = _Materialize(principal)
            Aspects.of(principal.container).add(aspect, priority=_mutating())
            stack._chainer_materialize = aspect  # type: ignore[attr-defined]
        aspect.principals.append(principal)


_MUTATING: list[float] = []


def _mutating() -> float:
    """``AspectPriority.MUTATING``, read from the kernel once."""
    if not _MUTATING:
        _MUTATING.append(AspectPriority.MUTATING)
    return _MUTATING[0]


class _Policies(DependencyGroup):
    """The role's managed policies as one dependable; they exist once the app synthesizes."""

    def __init__(self) -> None:
        super().__init__()
        self.removal_policy: RemovalPolicy | None = None

    def apply_removal_policy(self, policy: RemovalPolicy) -> None:
        """Apply ``policy`` to every managed policy of the role (when they are created)."""
        self.removal_policy = policy


@jsii.implements(iam.IPrincipal)
class PolicyPrincipal:
    """A role's principal whose policy additions go into customer-managed policies.

    Statements are collected as plain data; when the app synthesizes, they are merged and packed
    into as few managed policies as IAM's 6,144-character limit allows (``<id>/Resource``, then
    ``<id>/Part2``, ...), attached to the role. An immutable role (``mutable=False``,
    ``without_policy_updates()``) gets no policies: :attr:`statements` lists what it needs.
    CDK's own ``grant*`` helpers accept this principal.
    """

    def __init__(self, scope: Construct, id: str, role: iam.IRole) -> None:
        self._role = role
        self.immutable = is_immutable(role)
        self._raw: list[dict[str, Any]] = []
        self._statements: list[iam.PolicyStatement] = []
        self.policies: list[iam.CfnManagedPolicy] = []
        self.container = Construct(scope, id)
        self._stack = stack_of(scope)
        self.policy = _Policies()
        """Depend on this to wait for every policy of the role (``node.add_dependency``)."""
        if not self.immutable:
            _Materialize.register(self)

    @staticmethod
    def for_role(scope: Construct, id: str, role: iam.IRole) -> PolicyPrincipal:
        return PolicyPrincipal(scope, id, role)

    @contextlib.contextmanager
    def batched(self) -> Iterator[None]:
        """Kept for callers of the earlier API: statements are always collected until synth."""
        yield

    @property
    def statements(self) -> list[dict[str, Any]]:
        """The merged statements (IAM JSON, deploy-time values as CDK tokens)."""
        return merge(self._all())

    def _all(self) -> list[dict[str, Any]]:
        objects = self._statements
        if len(objects) > 1:
            # One document renders them all in two round trips to the kernel instead of one
            # per statement; minimize=False keeps them as they are (merged by merge()).
            document = iam.PolicyDocument(statements=objects, minimize=False).to_json()
            rendered: list[dict[str, Any]] = list(document["Statement"])
        else:
            rendered = [s.to_statement_json() for s in objects]
        return [*self._raw, *rendered]

    def add_statements(self, *statements: iam.PolicyStatement | Mapping[str, Any]) -> None:
        for statement in statements:
            if isinstance(statement, iam.PolicyStatement):
                # Read at synth: CDK's grants may still add to a statement after handing it over.
                self._statements.append(statement)
            else:
                self._raw.append(dict(statement))

    def _materialize(self) -> None:
        if self.policies:
            return
        statements = merge(self._all())
        if not statements:
            return
        parts = split(statements, MANAGED_POLICY_LIMIT)
        role_name = self._role.role_name
        documents = [{"Version": "2012-10-17", "Statement": part} for part in parts]
        path = self.container.node.path if len(parts) > 1 else ""
        for i, document in enumerate(documents):
            policy = iam.CfnManagedPolicy(
                self.container,
                "Resource" if i == 0 else f"Part{i + 1}",
                policy_document=document,
                roles=[role_name],
                description=f"Part {i + 1} of {len(parts)} of the policies of {path}"
                if path
                else None,
            )
            if self.policy.removal_policy is not None:
                policy.apply_removal_policy(self.policy.removal_policy)
            self.policies.append(policy)
        self.policy.add(*self.policies)
        # The documents are complete: acknowledge the scoped wildcards they hold, all
        # resolved in one call (each kernel round trip costs).
        for policy, resolved in zip(self.policies, self._stack.resolve(documents), strict=True):
            acknowledge_each(policy, wildcard_acknowledgements(resolved))
        if len(parts) > MANAGED_POLICIES_PER_ROLE - 1:
            Annotations.of(self.container).add_warning_v2(
                "chainer-sagemaker-cdk:policy-count",
                f"{len(parts)} managed policies for one role: IAM's default quota is 10 per "
                "role (20 at most, by quota increase)",
            )

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
        # An immutable role is the caller's to manage: report the statement as added, as CDK's
        # ImmutableRole does, so grants do not fall back to resource policies.
        self.add_statements(statement)
        return iam.AddToPrincipalPolicyResult(statement_added=True, policy_dependable=self.policy)

    def add_to_policy(self, statement: iam.PolicyStatement) -> bool:
        return self.add_to_principal_policy(statement).statement_added


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
    "sagemaker:ListEndpointConfigs",
    "sagemaker:ListModels",
)
_SCOPED_WILDCARDS = (
    (
        ":log-group:/aws/sagemaker/",
        "SageMaker's own log group for this resource type; "
        "SageMaker names the streams (and endpoint groups) at run time",
    ),
    (":training-job/", "job names are generated per execution under this construct's prefix"),
    (":transform-job/", "transform jobs are named per execution under the transformer's prefix"),
    (":model/", "models are named after each execution's training job, under the prefix"),
    (":endpoint-config/", "endpoint configs are named after each execution's job (prefix)"),
    (
        ":model-package/",
        "SageMaker numbers the versions of the pipeline's one model package group",
    ),
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


def wildcard_acknowledgements(document: Mapping[str, Any]) -> dict[str, str]:
    """The cdk-nag AwsSolutions-IAM5 findings of a resolved policy this library can explain.

    One finding id can come from several statements: it is acknowledged only when every
    statement behind it is explained; a wildcard it cannot explain stays a finding.
    """
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
    return {f: why for f, why in reasons.items() if why}


def acknowledge(scope: IConstruct, findings: Sequence[str], reason: str) -> None:
    """Acknowledge findings on ``scope`` (each finding id individually), with a reason."""
    acknowledge_each(scope, {finding: reason for finding in findings})


def acknowledge_each(scope: IConstruct, reasons: Mapping[str, str]) -> None:
    """Acknowledge several findings on ``scope`` at once, each with its own reason."""
    if reasons:
        Validations.of(scope).acknowledge(
            *[Acknowledgment(id=finding, reason=why) for finding, why in reasons.items()]
        )


StatementLike = iam.PolicyStatement | Mapping[str, Any]


def statement(
    actions: Sequence[str], resources: Sequence[str], conditions: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """An Allow statement as IAM JSON (no jsii objects: cheap to build, merged at synth)."""
    out: dict[str, Any] = {"Effect": "Allow", "Action": list(actions), "Resource": list(resources)}
    if conditions:
        out["Condition"] = dict(conditions)
    return out


def _as_policy_statement(value: StatementLike) -> iam.PolicyStatement:
    if isinstance(value, iam.PolicyStatement):
        return value
    return iam.PolicyStatement.from_json(dict(value))


def add(principal: iam.IPrincipal, *statements: StatementLike) -> None:
    """Add statements; plain dicts stay plain where the principal is ours."""
    if isinstance(principal, PolicyPrincipal):
        principal.add_statements(*statements)
    else:
        for value in statements:
            principal.add_to_principal_policy(_as_policy_statement(value))


def grant(grantee: iam.IGrantable, *statements: Mapping[str, Any]) -> iam.Grant:
    """Add ``statements`` to ``grantee``'s policy and return them as one ``iam.Grant``."""
    result: iam.Grant | None = None
    for value in statements:
        one = iam.Grant.add_to_principal(
            grantee=grantee,
            actions=list(value["Action"]),
            resource_arns=list(value["Resource"]),
            conditions=value.get("Condition"),
        )
        result = one if result is None else result.combine(one)
    if result is None:
        return iam.Grant.drop(grantee, "nothing to grant")
    return result


def _prefix(key_prefix: str) -> str:
    return key_prefix.strip("/")


def _bucket_facts(bucket: s3.IBucket) -> tuple[str, str | None]:
    """The bucket's ARN and its key's ARN (or None), asked of the kernel once per bucket: a
    bucket is granted on by the estimator, the serving role and each channel."""
    cached: tuple[str, str | None] | None = getattr(bucket, "_chainer_facts", None)
    if cached is None:
        key = bucket.encryption_key
        cached = (bucket.bucket_arn, key.key_arn if key is not None else None)
        with contextlib.suppress(AttributeError):  # objects that refuse attributes
            bucket._chainer_facts = cached  # type: ignore[attr-defined]
    return cached


def _objects(bucket: s3.IBucket, key_prefix: str) -> str:
    """``bucket.arn_for_objects(...)``, which is ``<bucket ARN>/<pattern>`` in aws-cdk-lib."""
    prefix = _prefix(key_prefix)
    arn = _bucket_facts(bucket)[0]
    return f"{arn}/{prefix}/*" if prefix else f"{arn}/*"


def bucket_arn(scope: IConstruct, bucket_name: str) -> str:
    """``arn:<partition>:s3:::<bucket>``."""
    return stack_of(scope).format_arn(service="s3", region="", account="", resource=bucket_name)


def list_prefix(bucket_arn: str, key_prefix: str) -> dict[str, Any]:
    """``s3:ListBucket`` on the bucket, limited to ``key_prefix`` (and what lies below it).

    SageMaker lists an ``S3Prefix`` data source before it downloads it; the ``s3:prefix``
    condition key limits the listing
    (https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazons3.html).
    """
    prefix = _prefix(key_prefix)
    conditions = {"StringLike": {"s3:prefix": [prefix, f"{prefix}/*"]}} if prefix else None
    return statement(["s3:ListBucket"], [bucket_arn], conditions)


# What SageMaker does with a customer key: decrypt inputs, encrypt outputs, data keys for
# volumes and S3 objects. Named actions, no ``kms:*Encrypt*`` wildcards
# (https://docs.aws.amazon.com/sagemaker/latest/dg/sagemaker-roles.html#sagemaker-roles-createtrainingjob-perms).
KMS_DECRYPT = ["kms:Decrypt"]
KMS_ENCRYPT_DECRYPT = [
    "kms:Decrypt",
    "kms:Encrypt",
    "kms:GenerateDataKey",
    "kms:GenerateDataKeyWithoutPlaintext",
]


def bucket_prefix_read_statements(bucket: s3.IBucket, key_prefix: str) -> list[dict[str, Any]]:
    """List and read the objects under ``key_prefix`` (and decrypt them with the bucket key)."""
    arn, key_arn = _bucket_facts(bucket)
    statements = [
        list_prefix(arn, key_prefix),
        statement(["s3:GetObject"], [_objects(bucket, key_prefix)]),
    ]
    if key_arn is not None:
        statements.append(statement(KMS_DECRYPT, [key_arn]))
    return statements


def bucket_prefix_write_statements(bucket: s3.IBucket, key_prefix: str) -> list[dict[str, Any]]:
    """List, read, write and delete the objects under ``key_prefix``."""
    arn, key_arn = _bucket_facts(bucket)
    statements = [
        list_prefix(arn, key_prefix),
        statement(
            ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"],
            [_objects(bucket, key_prefix)],
        ),
    ]
    if key_arn is not None:
        statements.append(statement(KMS_ENCRYPT_DECRYPT, [key_arn]))
    return statements


def bucket_prefix_read(principal: iam.IPrincipal, bucket: s3.IBucket, key_prefix: str) -> None:
    add(principal, *bucket_prefix_read_statements(bucket, key_prefix))


def bucket_prefix_write(principal: iam.IPrincipal, bucket: s3.IBucket, key_prefix: str) -> None:
    add(principal, *bucket_prefix_write_statements(bucket, key_prefix))


def key_use_statements(key: kms.IKey) -> list[dict[str, Any]]:
    """What SageMaker needs to use a customer key on the role's behalf (volumes, outputs)."""
    return [
        statement(KMS_ENCRYPT_DECRYPT, [key.key_arn]),
        # kms:GrantIsForAWSResource is a condition key of CreateGrant only: with DescribeKey
        # in the same statement, DescribeKey would never be allowed.
        statement(
            ["kms:CreateGrant"], [key.key_arn], {"Bool": {"kms:GrantIsForAWSResource": "true"}}
        ),
        statement(["kms:DescribeKey"], [key.key_arn]),
    ]


def key_use(principal: iam.IPrincipal, key: kms.IKey) -> None:
    add(principal, *key_use_statements(key))


def key_decrypt(principal: iam.IPrincipal, key: kms.IKey) -> None:
    """Decrypt only (objects read from an encrypted bucket)."""
    add(principal, statement(KMS_DECRYPT, [key.key_arn]))


def pass_role(principal: iam.IPrincipal, role: iam.IRole) -> None:
    """``iam:PassRole`` on ``role``, only towards SageMaker."""
    add(
        principal,
        statement(
            ["iam:PassRole"],
            [role.role_arn],
            {"StringEquals": {"iam:PassedToService": SAGEMAKER}},
        ),
    )


def sagemaker_arn(scope: IConstruct, resource: str, name: str) -> str:
    """A SageMaker ARN; SageMaker ARNs hold names in lower case, whatever case they were given
    in (https://docs.aws.amazon.com/sagemaker/latest/dg/security_iam_id-based-policy-examples.html),
    so a plain name is lower-cased here."""
    if not is_unresolved(name):
        name = name.lower()
    return stack_of(scope).format_arn(service="sagemaker", resource=resource, resource_name=name)


def name_prefix_arn(scope: IConstruct, resource: str, prefix: str) -> str:
    """ARNs of resources named ``<prefix>-...``. The hyphen keeps ``chainer-digits`` off
    ``chainer-digitsv2``'s resources, but not off ``chainer-digits-v2``'s: where that matters,
    name the resources with :func:`run_name` and scope them with :func:`run_name_arn`."""
    return sagemaker_arn(scope, resource, f"{prefix.lower()}-*")


RUN_SEPARATOR = "--"
"""Between a base name and a run's own part: ``<base>--<run>``."""


def run_name(base: str, run: str) -> str:
    """The name of one run (job, model, endpoint config) of ``base``: ``<base>--<run>``.

    Why ``--``: ``<base>--*`` is prefix-free over bases that contain no ``--`` (the estimator
    refuses such bases). A name ``B--r`` matches ``A--*`` only if ``A--`` starts ``B--r``:
    for ``A == B`` that is the run of ``A``; ``A`` a proper prefix of ``B`` would need ``B``
    to continue ``A`` with ``--`` (or to end in ``-``, which SageMaker names cannot); ``B`` a
    proper prefix of ``A`` would need ``A`` to continue ``B`` with ``--``. So
    ``chainer-digits--*`` never matches ``chainer-digits-v2--…`` nor any other base's runs,
    whatever their run parts; and unlike an exact-length ``?`` pattern, a Step Functions
    ``StringMatches`` Choice can check the same form (ASL has no string length function).
    SageMaker names allow consecutive hyphens (``^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}``).
    """
    return f"{base}{RUN_SEPARATOR}{run}"


def run_name_pattern(base: str) -> str:
    """Every run name of ``base``, as IAM and Step Functions' ``StringMatches`` read it."""
    return run_name(base, "*")


def run_name_arn(scope: IConstruct, resource: str, base: str) -> str:
    """ARNs of the ``resource`` runs of ``base`` (``<base>--*``, lower case as SageMaker ARNs
    are: bases that differ only in case share their runs)."""
    return sagemaker_arn(scope, resource, run_name_pattern(base.lower()))


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
        statement(["logs:CreateLogGroup", "logs:DescribeLogStreams"], [group_arn]),
        statement(["logs:CreateLogStream", "logs:PutLogEvents"], [f"{group_arn}:log-stream:*"]),
        # PutMetricData has no resource type; the namespace condition scopes it.
        statement(
            ["cloudwatch:PutMetricData"],
            ["*"],
            {"StringLike": {"cloudwatch:namespace": ["/aws/sagemaker/*", "aws/sagemaker/*"]}},
        ),
    )
