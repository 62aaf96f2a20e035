"""IAM policy statements as plain data: merge them, estimate their deployed size, split them.

IAM limits a customer-managed policy to 6,144 characters and a role's inline policies to
10,240 characters together, white space not counted
(https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_iam-quotas.html#reference_iam-quotas-entity-length),
and a role to 10 managed policies unless the quota is raised (20 at most). A job with many
channels, a VPC and keys passes 6,144 characters in one policy, so the statements are merged
and then packed into as many policies as needed.

Hand-written rather than aws-cdk-lib's ``PolicyDocument(minimize=True)`` and its private
``_splitDocument``: minimizing there does not merge condition values (one ``s3:ListBucket``
per channel prefix stays one statement each), the split is private API, and both work on
unresolved documents through the jsii kernel, one round trip per statement. Here statements are
Python dicts; deploy-time values are CDK token strings whose deployed length is bounded from
what they stand for (see :func:`estimated_length`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = [
    "INLINE_POLICIES_LIMIT",
    "MANAGED_POLICIES_PER_ROLE",
    "MANAGED_POLICY_LIMIT",
    "Statement",
    "compact",
    "estimated_length",
    "merge",
    "normalize",
    "split",
]

Statement = dict[str, Any]

MANAGED_POLICY_LIMIT = 6144
INLINE_POLICIES_LIMIT = 10240
MANAGED_POLICIES_PER_ROLE = 10  # the default quota (adjustable up to 20)

# Deployed length of a CDK token by what it stands for: pseudo parameters by their longest
# value in any partition, anything else (an ARN, a name, an ID of a resource) by a bound that
# covers S3 bucket ARNs (<= 83), KMS key ARNs (<= 86), role ARNs with the default path, ECR
# repository ARNs of CDK's asset repositories, subnet and security group IDs.
_TOKEN = re.compile(r"\$\{Token\[([A-Za-z.]*?)\.?\d+\]\}")
_PSEUDO = {
    "AWS.Partition": len("aws-us-gov"),
    "AWS.Region": len("ap-southeast-5"),
    "AWS.AccountId": 12,
    "AWS.URLSuffix": len("amazonaws.com.cn"),
    "AWS.StackName": 128,
}
_OTHER_TOKEN = 128
# Condition operators whose values are alternatives: two statements that differ only in the
# values of one such key allow the union of what each allows.
_ANY_OF = frozenset(
    {
        "StringEquals",
        "StringLike",
        "StringEqualsIgnoreCase",
        "ArnEquals",
        "ArnLike",
        "ForAnyValue:StringEquals",
        "ForAnyValue:StringLike",
    }
)


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _unique(values: Iterable[Any]) -> list[Any]:
    seen: list[Any] = []
    for value in values:
        if value not in seen:
            seen.append(value)
    return seen


def normalize(statement: Mapping[str, Any]) -> Statement:
    """``Action``/``Resource`` as sorted unique lists, condition values as lists; no ``Sid``."""
    out: Statement = {"Effect": statement.get("Effect", "Allow")}
    for key in ("Action", "NotAction", "Resource", "NotResource"):
        if key in statement:
            out[key] = sorted(set(map(str, _as_list(statement[key]))))
    if statement.get("Condition"):
        out["Condition"] = {
            op: {k: sorted(set(map(str, _as_list(v)))) for k, v in block.items()}
            for op, block in statement["Condition"].items()
        }
    for key in ("Principal", "NotPrincipal"):
        if key in statement:
            out[key] = statement[key]
    return out


def _key(statement: Statement, *without: str) -> str:
    return json.dumps({k: v for k, v in statement.items() if k not in without}, sort_keys=True)


def _merge_conditions(statements: list[Statement]) -> list[Statement]:
    """Same effect, actions and resources; conditions that differ in one any-of key's values.

    Only statements equal but for their conditions can merge, so each is compared with the
    earlier ones of its group alone (the key is computed once per statement, not per pair).
    """
    out: list[Statement] = []
    groups: dict[str, list[Statement]] = {}
    for statement in statements:
        if "Principal" in statement:
            out.append(statement)
            continue
        group = groups.setdefault(_key(statement, "Condition"), [])
        for existing in group:
            merged = _union_condition(existing.get("Condition"), statement.get("Condition"))
            if merged is not None:
                existing["Condition"] = merged
                break
        else:
            group.append(statement)
            out.append(statement)
    return out


def _union_condition(ca: dict[str, Any] | None, cb: dict[str, Any] | None) -> dict[str, Any] | None:
    """The union of two statements' conditions when it allows exactly what both allow."""
    if ca is None or cb is None or set(ca) != set(cb):
        return None
    differing = [
        (op, k) for op in ca for k in set(ca[op]) | set(cb[op]) if ca[op].get(k) != cb[op].get(k)
    ]
    if not differing:
        return dict(ca)  # identical
    if len(differing) != 1:
        return None
    op, k = differing[0]
    if op not in _ANY_OF or k not in ca[op] or k not in cb[op]:
        return None
    merged = {o: dict(block) for o, block in ca.items()}
    merged[op][k] = sorted(set(ca[op][k]) | set(cb[op][k]))
    return merged


def _merge_on(statements: list[Statement], field: str) -> list[Statement]:
    """Statements equal but for ``field`` (Action or Resource): one statement, the union."""
    out: list[Statement] = []
    index: dict[str, Statement] = {}
    for statement in statements:
        if field not in statement or "Principal" in statement:
            out.append(statement)
            continue
        key = _key(statement, field)
        existing = index.get(key)
        if existing is None:
            index[key] = statement
            out.append(statement)
        else:
            existing[field] = sorted(set(existing[field]) | set(statement[field]))
    return out


def merge(statements: Iterable[Mapping[str, Any]]) -> list[Statement]:
    """Fewer statements that allow exactly what ``statements`` allow, in first-seen order.

    Duplicates go; statements that differ only in resources, only in actions, or only in the
    values of one any-of condition key become one. Deny statements and ``Not*`` elements are
    merged by the same rules (each rule keeps the meaning for both effects).
    """
    current = [normalize(s) for s in statements]  # lists everywhere while merging
    current = _unique(current)
    for _ in range(3):  # each pass can enable another; three reach a fixed point in practice
        before = len(current)
        current = _merge_conditions(current)
        current = _merge_on(current, "Resource")
        current = _merge_on(current, "Action")
        if len(current) == before:
            break
    return [compact(s) for s in current]


def _token_length(match: re.Match[str]) -> str:
    return "x" * _PSEUDO.get(match.group(1), _OTHER_TOKEN)


def estimated_length(value: Any) -> int:
    """An upper bound of the characters IAM counts for ``value`` once deployed (no white space)."""
    text = json.dumps(value, separators=(",", ":"))
    return len(_TOKEN.sub(_token_length, text))


def compact(statement: Statement) -> Statement:
    """One-element lists as plain values, as IAM and CDK write them."""
    out = dict(statement)
    for key in ("Action", "NotAction", "Resource", "NotResource"):
        if key in out and len(out[key]) == 1:
            out[key] = out[key][0]
    if "Condition" in out:
        out["Condition"] = {
            op: {k: v[0] if isinstance(v, list) and len(v) == 1 else v for k, v in block.items()}
            for op, block in out["Condition"].items()
        }
    return out


def _document(statements: Sequence[Statement]) -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": list(statements)}


def split(statements: Sequence[Statement], limit: int, *, parts: int = 1) -> list[list[Statement]]:
    """Pack ``statements`` in order into at least ``parts`` documents of at most ``limit``.

    Raises ValueError when one statement alone is over the limit.
    """
    empty = estimated_length(_document([]))
    bins: list[list[Statement]] = []
    size = 0
    for statement in statements:
        length = estimated_length(statement) + 1  # and its comma
        if empty + length > limit:
            raise ValueError(
                f"one IAM statement is about {length} characters, over the {limit}-character "
                f"policy limit: {json.dumps(statement)[:200]}..."
            )
        if not bins or size + length > limit:
            bins.append([])
            size = empty
        bins[-1].append(statement)
        size += length
    # Keep every existing policy non-empty: move statements off the fullest bins.
    while 0 < len(bins) < parts:
        source = max(bins, key=len)
        if len(source) < 2:
            break
        bins.append([source.pop()])
    return bins
