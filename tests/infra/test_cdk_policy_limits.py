"""IAM's size limits: statements merged, split across managed policies, every policy deployable.

Sizes are measured on the deployed documents with the longest values AWS allows for the
deploy-time parts (63-character bucket names, the longest partition and region).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from chainer_sagemaker_cdk._policy_document import (
    INLINE_POLICIES_LIMIT,
    MANAGED_POLICIES_PER_ROLE,
    MANAGED_POLICY_LIMIT,
    estimated_length,
    merge,
    split,
)

from . import iam_check


def _listing(prefix: str) -> dict[str, Any]:
    return {
        "Effect": "Allow",
        "Action": "s3:ListBucket",
        "Resource": "arn:aws:s3:::b",
        "Condition": {"StringLike": {"s3:prefix": [prefix, f"{prefix}/*"]}},
    }


def test_merge_joins_condition_values_resources_and_actions() -> None:
    statements = [
        _listing("a"),
        _listing("b"),
        {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b/a/*"},
        {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b/b/*"},
        {"Effect": "Allow", "Action": ["kms:Decrypt"], "Resource": "k"},
        {"Effect": "Allow", "Action": ["kms:Decrypt"], "Resource": "k"},
        {"Effect": "Allow", "Action": ["kms:Encrypt"], "Resource": "k"},
    ]
    assert merge(statements) == [
        {
            "Effect": "Allow",
            "Action": "s3:ListBucket",
            "Resource": "arn:aws:s3:::b",
            "Condition": {"StringLike": {"s3:prefix": ["a", "a/*", "b", "b/*"]}},
        },
        {
            "Effect": "Allow",
            "Action": "s3:GetObject",
            "Resource": ["arn:aws:s3:::b/a/*", "arn:aws:s3:::b/b/*"],
        },
        {"Effect": "Allow", "Action": ["kms:Decrypt", "kms:Encrypt"], "Resource": "k"},
    ]


def test_merge_keeps_statements_whose_conditions_differ_in_two_keys() -> None:
    a = {**_listing("a"), "Condition": {"StringLike": {"s3:prefix": ["a"], "s3:delimiter": ["/"]}}}
    b = {**_listing("b"), "Condition": {"StringLike": {"s3:prefix": ["b"], "s3:delimiter": ["-"]}}}
    assert len(merge([a, b])) == 2
    bool_a = {**_listing("a"), "Condition": {"Bool": {"aws:SecureTransport": ["true"]}}}
    bool_b = {**_listing("a"), "Condition": {"Bool": {"aws:SecureTransport": ["false"]}}}
    assert len(merge([bool_a, bool_b])) == 2  # Bool is not an any-of operator here


def test_split_packs_within_the_limit_and_refuses_a_statement_too_large() -> None:
    statements = [
        {"Effect": "Allow", "Action": [f"s3:GetObject{i}"], "Resource": ["x" * 500]}
        for i in range(30)
    ]
    parts = split(statements, MANAGED_POLICY_LIMIT)
    assert len(parts) > 1
    assert [s for p in parts for s in p] == statements
    for part in parts:
        assert (
            estimated_length({"Version": "2012-10-17", "Statement": part}) <= MANAGED_POLICY_LIMIT
        )
    with pytest.raises(ValueError, match="over the 6144-character"):
        split([{"Effect": "Allow", "Action": ["a:b"], "Resource": ["x" * 7000]}], 6144)


def test_token_estimate_bounds_the_deployed_length() -> None:
    # A bucket ARN token stands for at most 83 characters; the estimate allows 128.
    assert estimated_length("${Token[TOKEN.12]}/x") == 128 + 2 + 2
    assert estimated_length("arn:${Token[AWS.Partition.8]}") == len('"arn:aws-us-gov"')


def test_twenty_channels_vpc_kms_and_grants_fit_iam_limits(
    maximal_template: dict[str, Any],
) -> None:
    """The maximal stack: 19 channels + the code channel, a VPC, KMS, 5 grant_read_input."""
    deployed = iam_check.policies(maximal_template, worst=True)
    by_role: dict[str, list[iam_check.Policy]] = {}
    for policy in deployed:
        for role in policy.roles:
            by_role.setdefault(role, []).append(policy)
        limit = INLINE_POLICIES_LIMIT if policy.inline else MANAGED_POLICY_LIMIT
        assert iam_check.size(policy.document) <= limit, policy.logical_id
    for role, attached in by_role.items():
        managed = [p for p in attached if not p.inline]
        assert len(managed) <= MANAGED_POLICIES_PER_ROLE, role
        inline = sum(iam_check.size(p.document) for p in attached if p.inline)
        assert inline <= INLINE_POLICIES_LIMIT, role
    execution = [p for p in deployed if p.logical_id.startswith("EstimatorExecutionPolicy")]
    assert len(execution) >= 2, "this much access needs a second policy"
    # One ListBucket statement for all 24 prefixes of the data bucket (merged conditions).
    listings = [
        s
        for p in execution
        for s in p.document["Statement"]
        if s["Action"] in ("s3:ListBucket", ["s3:ListBucket"])
        and "StringLike" in s.get("Condition", {})
    ]
    prefixes = [v for s in listings for v in s["Condition"]["StringLike"]["s3:prefix"]]
    assert len(listings) <= 3
    assert "shards/16/*" in prefixes
    assert "overrides/v4" in prefixes
    text = json.dumps([p.document for p in deployed])
    assert '"Sid"' not in text
