"""Synthesized IAM policies as deployed documents, checked with maintained IAM libraries.

* ``concrete`` turns a template's intrinsics into the values they take once deployed: sample
  names, or with ``worst=True`` the longest values AWS allows (63-character bucket names, the
  longest region and partition), for IAM's size limits.
* ``allows`` answers "does this set of policies allow this request": actions are expanded by
  policyuniverse (its wildcard expansion over AWS's action list), resources and ``*Like``
  condition values are matched by parliament's glob matcher, and the condition operators our
  policies use (String*, Arn*, Bool) are applied to the request's context.
* ``findings`` runs parliament's checks: unknown actions, resources that match no ARN format of
  the action, condition keys the action does not support.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import parliament
from policyuniverse.statement import Statement as UniverseStatement

SAMPLE = {
    "AWS::Region": "us-east-1",
    "AWS::AccountId": "123456789012",
    "AWS::Partition": "aws",
    "AWS::URLSuffix": "amazonaws.com",
    "AWS::StackName": "Stack",
}
WORST = {
    "AWS::Region": "ap-southeast-5",
    "AWS::AccountId": "123456789012",
    "AWS::Partition": "aws-us-gov",
    "AWS::URLSuffix": "amazonaws.com.cn",
    "AWS::StackName": "s" * 128,
}


def _name(logical_id: str, worst: bool, length: int = 63) -> str:
    base = re.sub(r"[^a-z0-9]", "", logical_id.lower()) or "x"
    return (base * 10)[:length] if worst else base[:40]


def _ref(template: Mapping[str, Any], logical_id: str, worst: bool) -> str:
    pseudo = WORST if worst else SAMPLE
    if logical_id in pseudo:
        return pseudo[logical_id]
    kind = template["Resources"].get(logical_id, {}).get("Type", "")
    region, partition = pseudo["AWS::Region"], pseudo["AWS::Partition"]
    name = _name(logical_id, worst)
    if kind == "AWS::KMS::Key":
        return "11111111-2222-3333-4444-555555555555"
    if kind == "AWS::SageMaker::Endpoint":
        return f"arn:{partition}:sagemaker:{region}:123456789012:endpoint/{name}"
    if kind == "AWS::SageMaker::Model":
        return f"arn:{partition}:sagemaker:{region}:123456789012:model/{name}"
    if kind == "AWS::EC2::SecurityGroup":
        return "sg-0123456789abcdef0"
    if kind == "AWS::StepFunctions::StateMachine":
        return f"arn:{partition}:states:{region}:123456789012:stateMachine:{name}"
    if kind == "AWS::SNS::Topic":  # a topic's Ref is its ARN
        return f"arn:{partition}:sns:{region}:123456789012:{name}"
    return name


def _getatt(template: Mapping[str, Any], logical_id: str, attribute: str, worst: bool) -> str:
    pseudo = WORST if worst else SAMPLE
    region, partition = pseudo["AWS::Region"], pseudo["AWS::Partition"]
    kind = template["Resources"].get(logical_id, {}).get("Type", "")
    name = _name(logical_id, worst)
    if kind == "AWS::S3::Bucket" and attribute == "Arn":
        return f"arn:{partition}:s3:::{name}"
    if kind == "AWS::KMS::Key" and attribute == "Arn":
        key = "11111111-2222-3333-4444-555555555555"
        return f"arn:{partition}:kms:{region}:123456789012:key/{key}"
    if kind == "AWS::CloudWatch::Alarm" and attribute == "Arn":
        return f"arn:{partition}:cloudwatch:{region}:123456789012:alarm:{name}"
    if kind == "AWS::IAM::Role" and attribute == "Arn":
        return f"arn:{partition}:iam::123456789012:role/{_name(logical_id, worst, 64)}"
    if kind == "AWS::EC2::SecurityGroup":
        return "sg-0123456789abcdef0"
    return name


def concrete(template: Mapping[str, Any], value: Any, *, worst: bool = False) -> Any:
    """``value`` with every intrinsic function replaced by what it deploys as."""
    if isinstance(value, list):
        return [concrete(template, v, worst=worst) for v in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1:
        ((fn, arg),) = value.items()
        if fn == "Ref":
            return _ref(template, arg, worst)
        if fn == "Fn::GetAtt":
            return _getatt(template, arg[0], arg[1], worst)
        if fn == "Fn::Join":
            return str(arg[0]).join(str(concrete(template, p, worst=worst)) for p in arg[1])
        if fn == "Fn::Sub":
            text = arg if isinstance(arg, str) else arg[0]
            return re.sub(r"\$\{([^}]+)\}", lambda m: _ref(template, m.group(1), worst), text)
        if fn == "Fn::Select":
            return concrete(template, arg[1], worst=worst)[int(arg[0])]
        if fn == "Fn::Split":
            return str(concrete(template, arg[1], worst=worst)).split(arg[0])
        if fn == "Fn::FindInMap":
            return "520713654638"
    return {k: concrete(template, v, worst=worst) for k, v in value.items()}


@dataclass
class Policy:
    logical_id: str
    roles: list[str]
    document: dict[str, Any]
    inline: bool = False
    sizes: dict[str, int] = field(default_factory=dict)


def policies(template: Mapping[str, Any], *, worst: bool = False) -> list[Policy]:
    """Every managed and inline policy of the template, deployed."""
    out: list[Policy] = []
    for logical_id, resource in template["Resources"].items():
        props = resource.get("Properties", {})
        if resource["Type"] in ("AWS::IAM::ManagedPolicy", "AWS::IAM::Policy"):
            roles = [r["Ref"] for r in props.get("Roles", []) if isinstance(r, dict)]
            document = concrete(template, props["PolicyDocument"], worst=worst)
            out.append(Policy(logical_id, roles, document, resource["Type"] == "AWS::IAM::Policy"))
    return out


def role_policies(template: Mapping[str, Any], role: str) -> list[dict[str, Any]]:
    return [p.document for p in policies(template) if role in p.roles]


def size(document: Mapping[str, Any]) -> int:
    """Characters IAM counts: the JSON without white space."""
    return len(json.dumps(document, separators=(",", ":")))


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _condition_holds(
    operator: str, key: str, wanted: list[Any], context: Mapping[str, str]
) -> bool:
    if key not in context:
        return False
    have = str(context[key])
    base = operator.removeprefix("ForAnyValue:")
    if base in ("StringEquals", "ArnEquals", "Bool"):
        return any(have == str(w).lower() if base == "Bool" else have == str(w) for w in wanted)
    if base in ("StringLike", "ArnLike"):
        return any(parliament.is_glob_match(str(w), have) for w in wanted)
    raise AssertionError(f"condition operator {operator} is not modelled here")


def _statement_allows(
    statement: Mapping[str, Any], action: str, resource: str, context: Mapping[str, str]
) -> bool:
    if action.lower() not in UniverseStatement(dict(statement)).actions_expanded:
        return False
    if not any(parliament.is_glob_match(r, resource) for r in _as_list(statement["Resource"])):
        return False
    for operator, block in statement.get("Condition", {}).items():
        for key, wanted in block.items():
            if not _condition_holds(operator, key, _as_list(wanted), context):
                return False
    return True


def allows(
    documents: Iterable[Mapping[str, Any]],
    action: str,
    resource: str,
    context: Mapping[str, str] | None = None,
) -> bool:
    """True if an Allow statement matches and no Deny does (identity policies only)."""
    context = context or {}
    allowed = False
    for document in documents:
        for statement in document["Statement"]:
            if _statement_allows(statement, action, resource, context):
                if statement["Effect"] == "Deny":
                    return False
                allowed = True
    return allowed


def findings(document: Mapping[str, Any]) -> list[str]:
    """parliament's findings that mean a statement is wrong (unknown action, resource or key)."""
    policy = parliament.analyze_policy_string(
        json.dumps(document), include_community_auditors=False
    )
    wrong = {
        "UNKNOWN_ACTION",
        "UNKNOWN_PREFIX",
        "RESOURCE_MISMATCH",
        "UNKNOWN_CONDITION_FOR_ACTION",
        "MALFORMED",
        "INVALID_ARN",
    }
    return [f"{f.issue}: {f.detail}" for f in policy.findings if f.issue in wrong]
