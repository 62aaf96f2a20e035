"""Two transformers whose base job names are prefixes of each other stay out of each other's
transform jobs.

``chainer-digits`` and ``chainer-digits-v2`` in one account, each run by a scoring state
machine of its own (the :class:`TransformStep` alone): each machine's role (IAM, checked with
policyuniverse/parliament by ``infra.iam_check``) reaches only the transform jobs of its own
base, named ``<base_job_name>--<run>``, and each step's input check (executed by moto's Step
Functions interpreter) refuses a job name of any other form before a job is created
(docs/contract.md §5).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import boto3
import pytest
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_stepfunctions as sfn
from infra import iam_check, sfn_standins
from infra.render import state_machine_definition
from infra.sfn_run import REGION, Run, create, run
from moto import mock_aws
from transform.transform_standin import transform_standin

from chainer_sagemaker_cdk import (
    ChainerModel,
    ChainerTransformer,
    ModelData,
    RuntimeImage,
    SourceCode,
)

BASES = {"One": "chainer-digits", "Two": "chainer-digits-v2"}
IMAGE = RuntimeImage.from_registry("123456789012.dkr.ecr.us-east-1.amazonaws.com/chainer:1")
# Names the first step must refuse: the second base's form, old and new.
FOREIGN = ("chainer-digits-v2-x", "chainer-digits-v2--x")
OWN = "chainer-digits--nightly-7"


def _scoring(stack: cdk.Stack, code: SourceCode, base: str) -> None:
    model = ChainerModel(
        stack,
        "Model",
        model_data=ModelData.from_s3_url("s3://models/digits/model.tar.gz"),
        code=code,
        image=IMAGE,
    )
    data = s3.Bucket(stack, "Data")
    step = ChainerTransformer(
        stack,
        "Score",
        model=model,
        input_bucket=data,
        output_bucket=data,
        base_job_name=base,
    ).step(stack, "Run", retry_attempts=0)
    role = iam.Role(stack, "MachineRole", assumed_by=iam.ServicePrincipal("states.amazonaws.com"))
    step.grant_run(role)
    sfn.StateMachine(
        stack, "Machine", definition_body=sfn.DefinitionBody.from_chainable(step), role=role
    )


@pytest.fixture(scope="module")
def templates(code_dir: Path) -> dict[str, dict[str, Any]]:
    """One app, one stack per base (the same account and region)."""
    app = cdk.App()
    code = SourceCode.from_directory(code_dir, "train.py")
    for stack_name, base in BASES.items():
        _scoring(cdk.Stack(app, stack_name), code, base)
    assembly = app.synth()
    return {name: assembly.get_stack_by_name(name).template for name in BASES}


@dataclass
class Account:
    """What the executions did, and the transform jobs they left in the (moto) account."""

    generated: dict[str, Run]
    foreign: dict[str, Run]
    own: Run
    jobs: set[str]


@pytest.fixture(scope="module")
def account(templates: dict[str, dict[str, Any]]) -> Iterator[Account]:
    """One generated name per base, then the first step given each foreign name and its own."""
    with (
        mock_aws(config={"stepfunctions": {"execute_state_machine": True}}),
        sfn_standins.sagemaker_standin(),
        transform_standin(),
    ):
        client = boto3.client("stepfunctions", region_name=REGION)
        sagemaker = boto3.client("sagemaker", region_name=REGION)
        machines = {
            name: create(client, state_machine_definition(template), name.lower())
            for name, template in templates.items()
        }
        generated = {name: run(client, machine) for name, machine in machines.items()}
        foreign = {
            name: run(client, machines["One"], {"TransformJobName": name}) for name in FOREIGN
        }
        own = run(client, machines["One"], {"TransformJobName": OWN})
        jobs = {
            j["TransformJobName"] for j in sagemaker.list_transform_jobs()["TransformJobSummaries"]
        }
        yield Account(generated, foreign, own, jobs)


def _job(result: Run) -> str:
    assert result.status == "SUCCEEDED", result.cause
    return str(result.output["transform"]["TransformJobName"])


def test_generated_names_are_base_double_hyphen_uuid(account: Account) -> None:
    for stack_name, result in account.generated.items():
        base, _, run_id = _job(result).partition("--")
        assert base == BASES[stack_name]
        assert len(run_id) == 36  # States.UUID()
        assert run_id.count("-") == 4
        assert len(_job(result)) <= 63


@pytest.mark.parametrize(("own", "other"), [("One", "Two"), ("Two", "One")])
def test_a_steps_role_reaches_only_its_own_transform_jobs(
    templates: dict[str, dict[str, Any]], account: Account, own: str, other: str
) -> None:
    template = templates[own]
    (role,) = [
        k
        for k, r in template["Resources"].items()
        if r["Type"] == "AWS::IAM::Role" and k.startswith("MachineRole")
    ]
    documents = iam_check.role_policies(template, role)

    def arn(name: str) -> str:
        return f"arn:aws:sagemaker:us-east-1:123456789012:transform-job/{name.lower()}"

    names = {k: _job(r) for k, r in account.generated.items()}
    for action in (
        "sagemaker:CreateTransformJob",
        "sagemaker:StopTransformJob",
        "sagemaker:DescribeTransformJob",
        "sagemaker:AddTags",
    ):
        assert iam_check.allows(documents, action, arn(names[own])), action
        assert not iam_check.allows(documents, action, arn(names[other])), (action, names[other])
        for name in FOREIGN:
            allowed = iam_check.allows(documents, action, arn(name))
            assert allowed == (own == "Two" and name.startswith("chainer-digits-v2--")), name


@pytest.mark.parametrize("name", FOREIGN)
def test_a_job_name_override_must_have_the_steps_form(account: Account, name: str) -> None:
    refused = account.foreign[name]
    assert (refused.status, refused.error) == ("FAILED", "InvalidExecutionInput")
    assert "'chainer-digits--<run>'" in (refused.cause or "")
    assert name not in account.jobs, "the refused name reached CreateTransformJob"


def test_an_override_of_the_steps_form_runs(account: Account) -> None:
    assert _job(account.own) == OWN
    assert OWN in account.jobs
