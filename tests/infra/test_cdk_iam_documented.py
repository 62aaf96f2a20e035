"""The synthesized policies against AWS's documented permissions and AWS's IAM data.

Requirements (tests/infra/iam_documented.py) are requests the roles must be allowed to make;
the policies are evaluated as deployed (tests/infra/iam_check.py: policyuniverse expands the
actions, parliament matches resources and condition values and checks every action, ARN and
condition key against AWS's service authorization data).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from . import iam_check, iam_documented
from .iam_documented import Requirement

DATA_BUCKET_PREFIX = "Data"


def _logical(template: dict[str, Any], kind: str, prefix: str) -> str:
    (found,) = [
        k for k, r in template["Resources"].items() if r["Type"] == kind and k.startswith(prefix)
    ]
    return found


def _definition(template: dict[str, Any]) -> dict[str, Any]:
    (machine,) = [
        r for r in template["Resources"].values() if r["Type"] == "AWS::StepFunctions::StateMachine"
    ]
    return json.loads(iam_check.concrete(template, machine["Properties"]["DefinitionString"]))  # type: ignore[no-any-return]


def _train_parameters(template: dict[str, Any]) -> dict[str, Any]:
    found: list[dict[str, Any]] = []

    def walk(states: dict[str, Any]) -> None:
        for state in states.values():
            if str(state.get("Resource", "")).endswith("createTrainingJob.sync"):
                found.append(state.get("Parameters") or state.get("Arguments"))
            for branch in state.get("Branches", []):
                walk(branch["States"])

    walk(_definition(template)["States"])
    (params,) = found
    return params


def _maximal_execution_requirements(template: dict[str, Any]) -> list[Requirement]:
    data = iam_check.concrete(template, {"Ref": _logical(template, "AWS::S3::Bucket", "Data")})
    key = iam_check.concrete(
        template, {"Fn::GetAtt": [_logical(template, "AWS::KMS::Key", "Key"), "Arn"]}
    )
    params = _train_parameters(template)
    (code_uri,) = [
        c["DataSource"]["S3DataSource"]["S3Uri"]
        for c in params["InputDataConfig"]
        if c["ChannelName"] == "code"
    ]
    code_bucket, code_key = code_uri.removeprefix("s3://").split("/", 1)
    channels = {"train": (data, "train"), "test": (data, "test")}
    channels |= {f"shard{i:02d}": (data, f"shards/{i:02d}") for i in range(17)}
    channels |= {f"override{i}": (data, f"overrides/v{i}") for i in range(5)}
    return iam_documented.training_job(
        job="maximal-0123",
        channels=channels,
        output=(data, "artifacts"),
        keys=[key],
        repository=iam_documented.arn("ecr", "repository/chainer-runtime"),
        code=(code_bucket, code_key),
        vpc=True,
    )


def _role(template: dict[str, Any], prefix: str) -> str:
    return _logical(template, "AWS::IAM::Role", prefix)


def test_execution_role_allows_what_sagemaker_documents(maximal_template: dict[str, Any]) -> None:
    documents = iam_check.role_policies(
        maximal_template, _role(maximal_template, "EstimatorExecutionRole")
    )
    missing = [
        r
        for r in _maximal_execution_requirements(maximal_template)
        if not iam_check.allows(documents, r.action, r.resource, r.context)
    ]
    assert missing == []


def test_execution_role_stays_within_its_prefixes(maximal_template: dict[str, Any]) -> None:
    documents = iam_check.role_policies(
        maximal_template, _role(maximal_template, "EstimatorExecutionRole")
    )
    data = iam_check.concrete(
        maximal_template, {"Ref": _logical(maximal_template, "AWS::S3::Bucket", "Data")}
    )
    assert not iam_check.allows(documents, "s3:GetObject", f"arn:aws:s3:::{data}/other/a")
    assert not iam_check.allows(
        documents, "s3:ListBucket", f"arn:aws:s3:::{data}", {"s3:prefix": "other/"}
    )
    assert not iam_check.allows(documents, "s3:PutObject", f"arn:aws:s3:::{data}/train/a")
    assert not iam_check.allows(
        documents, "kms:CreateGrant", "arn:aws:kms:us-east-1:123456789012:key/x"
    )


@pytest.mark.parametrize("name", ["example_template", "maximal_template"])
def test_state_machine_role_allows_each_integration_pattern(
    request: pytest.FixtureRequest, name: str
) -> None:
    template = request.getfixturevalue(name)
    documents = iam_check.role_policies(template, _role(template, "PipelineRole"))
    prefix = "maximal" if name == "maximal_template" else "chainer-digits"
    endpoint = "maximal-endpoint" if name == "maximal_template" else "chainer-digits"
    role = iam_check.concrete(
        template, {"Fn::GetAtt": [_role(template, "EstimatorExecutionRole"), "Arn"]}
    )
    requirements = iam_documented.state_machine(
        job=f"{prefix}--0a1b2c3d", endpoint=endpoint, role=role, deploy=True
    )
    missing = [
        r for r in requirements if not iam_check.allows(documents, r.action, r.resource, r.context)
    ]
    assert missing == []


def test_job_name_prefix_scoping_has_a_delimiter(example_template: dict[str, Any]) -> None:
    """chainer-digits must not reach chainer-digits-v2's jobs (another estimator's prefix)."""
    documents = iam_check.role_policies(example_template, _role(example_template, "PipelineRole"))
    own = iam_documented.arn("sagemaker", "training-job/chainer-digits--0a1b")
    assert iam_check.allows(documents, "sagemaker:StopTrainingJob", own)
    for other in ("chainer-digitsv2--0a1b", "chainer-digits-v2--0a1b", "chainer-digits-v2-0a1b"):
        arn = iam_documented.arn("sagemaker", f"training-job/{other}")
        assert not iam_check.allows(documents, "sagemaker:StopTrainingJob", arn)


@pytest.mark.parametrize("name", ["example_template", "maximal_template"])
def test_every_action_arn_and_condition_key_exists(
    request: pytest.FixtureRequest, name: str
) -> None:
    template = request.getfixturevalue(name)
    problems = {
        p.logical_id: iam_check.findings(p.document)
        for p in iam_check.policies(template)
        if iam_check.findings(p.document)
    }
    assert problems == {}


def test_model_role_allows_what_createmodel_documents(maximal_template: dict[str, Any]) -> None:
    """ModelB: model data from an S3 URL in the data bucket, an ECR image, data capture."""
    documents = iam_check.role_policies(
        maximal_template, _role(maximal_template, "ModelBExecutionRole")
    )
    data = iam_check.concrete(
        maximal_template, {"Ref": _logical(maximal_template, "AWS::S3::Bucket", "Data")}
    )
    requirements = iam_documented.model(
        model_data=(data, "b/model.tar.gz"),
        repository=iam_documented.arn("ecr", "repository/chainer"),
        capture=(data, "capture"),
    )
    missing = [
        r for r in requirements if not iam_check.allows(documents, r.action, r.resource, r.context)
    ]
    assert missing == []
    assert not iam_check.allows(documents, "s3:PutObject", f"arn:aws:s3:::{data}/b/model.tar.gz")
