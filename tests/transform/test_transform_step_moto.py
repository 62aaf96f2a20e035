"""The synthesized transform step, executed by moto's Step Functions interpreter.

SageMaker is moto's, with the infra tests' stand-ins (``infra.sfn_standins``) for what moto
lacks and ``transform_standin`` for ``createTransformJob.sync`` (moto completes a transform job
at once; nothing is read or written in S3).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import boto3
import pytest
from aws_cdk import Duration
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_stepfunctions as sfn
from infra import sfn_standins
from infra.render import state_machine_definition
from infra.sfn_run import REGION, create, run
from moto import mock_aws
from transform.transform_standin import transform_standin

from chainer_sagemaker_cdk import (
    ChainerEstimator,
    ChainerModel,
    ChainerTransformer,
    ModelData,
    RuntimeImage,
    SourceCode,
    TrainingInput,
    TrainingPipeline,
    TrainingPipelineFragment,
)

IMAGE = RuntimeImage.from_registry("123456789012.dkr.ecr.us-east-1.amazonaws.com/chainer:1")
FAST = {"retry_interval": Duration.seconds(1), "retry_backoff_rate": 1.0}


@pytest.fixture(scope="module")
def definitions(code_dir: Path) -> dict[str, dict[str, Any]]:
    """A scoring state machine of the user's own (the step alone), and a training pipeline
    fragment followed by a transform of the model it just created."""
    app = cdk.App()
    stack = cdk.Stack(app, "Scoring")
    code = SourceCode.from_directory(code_dir, "train.py")
    model = ChainerModel(
        stack,
        "Model",
        model_data=ModelData.from_s3_url("s3://models/digits/model.tar.gz"),
        code=code,
        image=IMAGE,
        model_name="chainer-digits-v1",
    )
    data = s3.Bucket(stack, "Data")
    transformer = ChainerTransformer(
        stack,
        "Score",
        model=model,
        input_bucket=data,
        input_prefix="digits/test",
        output_bucket=data,
        output_prefix="scores",
        content_type="text/csv",
        split_type="Line",
        batch_strategy="MultiRecord",
        accept="text/csv",
        assemble_with="Line",
        input_filter="$[1:]",
        join_source="Input",
        output_filter="$[0,-1]",
        base_job_name="score-digits",
    )
    step = transformer.step(stack, "Run", **FAST)
    role = iam.Role(stack, "Role", assumed_by=iam.ServicePrincipal("states.amazonaws.com"))
    step.grant_run(role)
    sfn.StateMachine(
        stack, "Machine", definition_body=sfn.DefinitionBody.from_chainable(step), role=role
    )

    pipe = cdk.Stack(app, "TrainThenScore")
    bucket = s3.Bucket(pipe, "Data")
    estimator = ChainerEstimator(
        pipe,
        "Estimator",
        code=code,
        image=IMAGE,
        channels={"train": TrainingInput(bucket=bucket, key_prefix="digits/train")},
        base_job_name="chainer-digits",
    )
    fragment = TrainingPipelineFragment(
        pipe,
        "Train",
        estimator=estimator,
        endpoint_name="chainer-digits",
        poll_interval=Duration.seconds(0),
    )
    after = ChainerTransformer(
        pipe,
        "ScoreTestSet",
        pipeline=fragment,
        input_bucket=bucket,
        input_prefix="digits/test-csv",
        output_bucket=bucket,
        content_type="text/csv",
        split_type="Line",
    ).step(pipe, "Score", **FAST)
    machine = sfn.StateMachine(
        pipe, "Machine", definition_body=sfn.DefinitionBody.from_chainable(fragment.next(after))
    )
    fragment.grant_run(machine)
    after.grant_run(machine)
    whole = cdk.Stack(app, "Pipeline")
    bucket = s3.Bucket(whole, "Data")
    estimator = ChainerEstimator(
        whole,
        "Estimator",
        code=code,
        image=IMAGE,
        channels={"train": TrainingInput(bucket=bucket, key_prefix="digits/train")},
        base_job_name="chainer-digits",
    )
    TrainingPipeline(
        whole,
        "Pipeline",
        estimator=estimator,
        endpoint_name="chainer-digits",
        poll_interval=Duration.seconds(0),
        retry_interval=Duration.seconds(1),
        transform=lambda fragment: ChainerTransformer(
            whole,
            "ScoreTestSet",
            pipeline=fragment,
            input_bucket=bucket,
            input_prefix="digits/test-csv",
            output_bucket=bucket,
            content_type="text/csv",
            split_type="Line",
        ).step(whole, "Score", **FAST),
    )
    assembly = app.synth()
    return {
        name: state_machine_definition(assembly.get_stack_by_name(name).template)
        for name in ("Scoring", "TrainThenScore", "Pipeline")
    }


@pytest.fixture
def aws() -> Iterator[tuple[Any, Any]]:
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        yield (
            boto3.client("stepfunctions", region_name=REGION),
            boto3.client("sagemaker", region_name=REGION),
        )


def test_the_step_runs_a_transform_job_as_synthesized(
    aws: tuple[Any, Any], definitions: dict[str, dict[str, Any]]
) -> None:
    sfn_client, sagemaker = aws
    with sfn_standins.sagemaker_standin(), transform_standin():
        result = run(sfn_client, create(sfn_client, definitions["Scoring"]))
    assert result.status == "SUCCEEDED", result.cause
    done = result.output["transform"]
    assert done["TransformJobStatus"] == "Completed"
    name = done["TransformJobName"]
    assert name.startswith("score-digits--")
    job = sagemaker.describe_transform_job(TransformJobName=name)
    # the model's name is a deploy-time attribute, rendered with a sample value
    assert (
        job["ModelName"]
        == definitions["Scoring"]["States"]["TransformDefaults"]["Parameters"]["ModelName"]
    )
    assert job["TransformInput"]["DataSource"]["S3DataSource"]["S3Uri"].endswith("/digits/test")
    assert job["TransformOutput"]["S3OutputPath"].endswith("/scores")
    assert job["DataProcessing"] == {
        "InputFilter": "$[1:]",
        "OutputFilter": "$[0,-1]",
        "JoinSource": "Input",
    }
    assert job["BatchStrategy"] == "MultiRecord"
    assert done["S3OutputPath"] == job["TransformOutput"]["S3OutputPath"]


def test_input_and_output_are_overridden_per_execution(
    aws: tuple[Any, Any], definitions: dict[str, dict[str, Any]]
) -> None:
    sfn_client, sagemaker = aws
    payload = {
        "TransformJobName": "score-digits--nightly-7",
        "TransformInput": "s3://other-data/2026-12-01/",
        "TransformOutput": "s3://other-data/scores/2026-12-01",
    }
    with sfn_standins.sagemaker_standin(), transform_standin():
        machine = create(sfn_client, definitions["Scoring"])
        result = run(sfn_client, machine, payload)
        second = run(sfn_client, machine)
    assert result.status == "SUCCEEDED", result.cause
    job = sagemaker.describe_transform_job(TransformJobName="score-digits--nightly-7")
    assert (
        job["TransformInput"]["DataSource"]["S3DataSource"]["S3Uri"]
        == "s3://other-data/2026-12-01/"
    )
    assert job["TransformOutput"]["S3OutputPath"] == "s3://other-data/scores/2026-12-01"
    assert second.status == "SUCCEEDED", second.cause
    assert (
        second.output["transform"]["TransformJobName"]
        != result.output["transform"]["TransformJobName"]
    )


def test_throttling_is_retried(
    aws: tuple[Any, Any], definitions: dict[str, dict[str, Any]]
) -> None:
    sfn_client, _ = aws
    with sfn_standins.sagemaker_standin(), transform_standin() as knobs:
        knobs.throttle = 1
        result = run(sfn_client, create(sfn_client, definitions["Scoring"]))
    assert result.status == "SUCCEEDED", result.cause
    failed = [e for e in result.events if e["type"] == "TaskFailed"]
    assert len(failed) == 1
    assert failed[0]["taskFailedEventDetails"]["error"] == "SageMaker.AmazonSageMakerException"


def test_a_failed_job_fails_the_execution_with_its_reason(
    aws: tuple[Any, Any], definitions: dict[str, dict[str, Any]]
) -> None:
    sfn_client, _ = aws
    with sfn_standins.sagemaker_standin(), transform_standin() as knobs:
        knobs.failures["score-digits--bad"] = "ClientError: See job logs for more information"
        result = run(
            sfn_client,
            create(sfn_client, definitions["Scoring"]),
            {"TransformJobName": "score-digits--bad"},
        )
    assert result.status == "FAILED"
    assert result.error == "States.TaskFailed"
    assert (
        json.loads(result.cause or "{}")["FailureReason"]
        == "ClientError: See job logs for more information"
    )


@pytest.mark.parametrize("name", ["TrainThenScore", "Pipeline"])
def test_after_training_the_model_just_created_scores_the_test_set(
    aws: tuple[Any, Any], definitions: dict[str, dict[str, Any]], name: str
) -> None:
    """After the fragment in a state machine of one's own, and as TrainingPipeline's
    ``transform=`` step (after the endpoint is deployed)."""
    sfn_client, sagemaker = aws
    with sfn_standins.sagemaker_standin(), transform_standin():
        result = run(sfn_client, create(sfn_client, definitions[name]))
    assert result.status == "SUCCEEDED", result.cause
    trained = result.output["training"]["TrainingJobName"]
    job = sagemaker.describe_transform_job(TransformJobName=trained)
    assert job["ModelName"] == trained
    sagemaker.describe_model(ModelName=trained)  # the pipeline created it before the transform
    assert job["TransformInput"]["DataSource"]["S3DataSource"]["S3Uri"].endswith("/digits/test-csv")
