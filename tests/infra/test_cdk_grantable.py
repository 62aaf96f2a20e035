"""``TrainingPipeline`` is an ``iam.IGrantable``: CDK's ``grant*`` reach its state machine's role.

The state machine's role is what runs the execution's calls (a state a user adds after the
pipeline, ``transform=``'s step); the training jobs run under the estimator's role, which
``bucket.grant_read(estimator)`` reaches.
"""

from __future__ import annotations

from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3

from chainer_sagemaker_cdk import ChainerEstimator, RuntimeImage, SourceCode, TrainingPipeline

from . import iam_check

IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/chainer:1"


def _role(template: dict[str, Any], prefix: str) -> str:
    (role,) = [
        k
        for k, r in template["Resources"].items()
        if r["Type"] == "AWS::IAM::Role" and k.startswith(prefix)
    ]
    return role


@pytest.fixture(scope="module")
def granted(code: SourceCode) -> tuple[dict[str, Any], iam.Grant, TrainingPipeline]:
    app = cdk.App()
    stack = cdk.Stack(app, "Grantable")
    estimator = ChainerEstimator(
        stack, "Estimator", code=code, image=RuntimeImage.from_registry(IMAGE)
    )
    pipeline = TrainingPipeline(stack, "Pipeline", estimator=estimator, deploy=False)
    reports = s3.Bucket(stack, "Reports")
    grant = reports.grant_read(pipeline)  # a TypeError unless the pipeline is an IGrantable
    template = app.synth().get_stack_by_name("Grantable").template
    return template, grant, pipeline


def test_bucket_grant_read_lands_in_the_state_machine_roles_policy(
    granted: tuple[dict[str, Any], iam.Grant, TrainingPipeline],
) -> None:
    template, grant, _ = granted
    assert grant.success
    (bucket,) = [
        k
        for k, r in template["Resources"].items()
        if r["Type"] == "AWS::S3::Bucket" and k.startswith("Reports")
    ]
    arn = iam_check.concrete(template, {"Fn::GetAtt": [bucket, "Arn"]})
    machine_role = iam_check.role_policies(template, _role(template, "PipelineRole"))
    job_role = iam_check.role_policies(template, _role(template, "EstimatorExecutionRole"))
    assert iam_check.allows(machine_role, "s3:GetObject", f"{arn}/report.json")
    assert iam_check.allows(machine_role, "s3:ListBucket", arn)
    assert not iam_check.allows(job_role, "s3:GetObject", f"{arn}/report.json")
    # In the role's managed policies, next to what the states need; no inline policy.
    kinds = {r["Type"] for r in template["Resources"].values()}
    assert "AWS::IAM::Policy" not in kinds


def test_grant_principal_is_the_state_machine_roles(
    granted: tuple[dict[str, Any], iam.Grant, TrainingPipeline],
) -> None:
    _, _, pipeline = granted
    assert pipeline.grant_principal.policy_fragment.principal_json == (
        pipeline.role.policy_fragment.principal_json
    )
