"""Two pipelines whose base job names are prefixes of each other stay out of each other's runs.

``chainer-digits`` and ``chainer-digits-v2`` in one account: each pipeline's role (IAM, checked
with policyuniverse/parliament by ``iam_check``) and each pipeline's clean-up (executed by
moto's Step Functions interpreter with the ``sfn_standins``) reach only the training jobs,
models and endpoint configs of its own runs, named ``<base_job_name>--<run>``
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
from aws_cdk import Duration
from aws_cdk import aws_s3 as s3
from moto import mock_aws

from chainer_sagemaker_cdk import (
    ChainerEstimator,
    RuntimeImage,
    SourceCode,
    TrainingInput,
    TrainingPipeline,
)

from . import iam_check
from .render import state_machine_definition
from .sfn_run import REGION, Run, create, run
from .sfn_standins import sagemaker_standin

BASES = {"One": "chainer-digits", "Two": "chainer-digits-v2"}
FAST = {
    "poll_interval": Duration.seconds(0),
    "retry_interval": Duration.seconds(1),
    "retry_backoff_rate": 1.0,
}
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/chainer:1"


def _pipeline(stack: cdk.Stack, code_dir: Path, base: str) -> TrainingPipeline:
    data = s3.Bucket(stack, "Data")
    estimator = ChainerEstimator(
        stack,
        "Estimator",
        code=SourceCode.from_directory(code_dir, "train.py"),
        image=RuntimeImage.from_registry(IMAGE),
        channels={"train": TrainingInput(bucket=data, key_prefix="digits/train")},
        base_job_name=base,
    )
    return TrainingPipeline(stack, "Pipeline", estimator=estimator, **FAST)


@pytest.fixture(scope="module")
def templates(code_dir: Path) -> dict[str, dict[str, Any]]:
    """One app, one stack per pipeline (the same account and region)."""
    app = cdk.App()
    for stack_name, base in BASES.items():
        _pipeline(cdk.Stack(app, stack_name), code_dir, base)
    assembly = app.synth()
    return {name: assembly.get_stack_by_name(name).template for name in BASES}


@dataclass
class Account:
    """What the executions left in the (moto) account."""

    runs: dict[str, list[Run]]
    configs: set[str]
    models: set[str]
    refused: Run
    accepted: Run


def _names(result: Run) -> str:
    assert result.status == "SUCCEEDED", result.cause
    return str(result.output["training"]["TrainingJobName"])


@pytest.fixture(scope="module")
def account(templates: dict[str, dict[str, Any]]) -> Iterator[Account]:
    """Two runs of ``chainer-digits-v2``, then one of ``chainer-digits`` (whose clean-up lists
    the account's endpoint configs), then two overrides of the job name given to the first."""
    with (
        mock_aws(config={"stepfunctions": {"execute_state_machine": True}}),
        sagemaker_standin(),
    ):
        client = boto3.client("stepfunctions", region_name=REGION)
        sagemaker = boto3.client("sagemaker", region_name=REGION)
        one = create(client, state_machine_definition(templates["One"]), "one")
        two = create(client, state_machine_definition(templates["Two"]), "two")
        runs = {"Two": [run(client, two), run(client, two)], "One": [run(client, one)]}
        refused = run(client, one, {"TrainingJobName": "chainer-digits-v2--exp-7"})
        accepted = run(client, one, {"TrainingJobName": "chainer-digits--exp-7"})
        configs = {
            c["EndpointConfigName"] for c in sagemaker.list_endpoint_configs()["EndpointConfigs"]
        }
        models = {m["ModelName"] for m in sagemaker.list_models()["Models"]}
        yield Account(runs, configs, models, refused, accepted)


def test_clean_up_deletes_none_of_the_other_pipelines_versions(account: Account) -> None:
    two = {_names(r) for r in account.runs["Two"]}
    assert two <= account.configs, "chainer-digits deleted an endpoint config of chainer-digits-v2"
    assert two <= account.models, "chainer-digits deleted a model of chainer-digits-v2"


def test_generated_names_are_base_double_hyphen_uuid(account: Account) -> None:
    for stack_name, runs in account.runs.items():
        for result in runs:
            base, _, run_id = _names(result).partition("--")
            assert base == BASES[stack_name]
            assert len(run_id) == 36  # States.UUID()
            assert run_id.count("-") == 4
            assert len(_names(result)) <= 63


@pytest.mark.parametrize(("own", "other"), [("One", "Two"), ("Two", "One")])
def test_a_pipelines_role_reaches_only_its_own_runs(
    templates: dict[str, dict[str, Any]], account: Account, own: str, other: str
) -> None:
    template = templates[own]
    (role,) = [
        k
        for k, r in template["Resources"].items()
        if r["Type"] == "AWS::IAM::Role" and k.startswith("PipelineRole")
    ]
    documents = iam_check.role_policies(template, role)

    def arn(kind: str, name: str) -> str:
        return f"arn:aws:sagemaker:us-east-1:123456789012:{kind}/{name}"

    actions = {
        "training-job": ("sagemaker:StopTrainingJob", "sagemaker:DescribeTrainingJob"),
        "model": ("sagemaker:DeleteModel", "sagemaker:CreateModel"),
        "endpoint-config": ("sagemaker:DeleteEndpointConfig", "sagemaker:CreateEndpointConfig"),
    }
    for kind, kind_actions in actions.items():
        for action in kind_actions:
            for result in account.runs[own]:
                assert iam_check.allows(documents, action, arn(kind, _names(result))), action
            for result in account.runs[other]:
                name = _names(result)
                assert not iam_check.allows(documents, action, arn(kind, name)), (action, name)


def test_a_job_name_override_must_have_the_pipelines_form(account: Account) -> None:
    refused = account.refused
    assert (refused.status, refused.error) == ("FAILED", "InvalidExecutionInput")
    assert "'chainer-digits--<run>'" in (refused.cause or "")
    assert "chainer-digits-v2--exp-7" not in account.configs
    assert _names(account.accepted) == "chainer-digits--exp-7"


@pytest.mark.parametrize(
    ("base", "says"),
    [
        ("x" * 26, "at most 25"),
        ("chainer--digits", "'--'"),
    ],
)
def test_base_job_names_that_cannot_name_runs_are_refused(
    stack: cdk.Stack, code: SourceCode, base: str, says: str
) -> None:
    with pytest.raises(ValueError, match=says):
        ChainerEstimator(
            stack,
            "Estimator",
            code=code,
            image=RuntimeImage.from_registry(IMAGE),
            base_job_name=base,
        )
