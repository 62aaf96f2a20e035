"""The synthesized transform step, executed by moto's Step Functions interpreter.

SageMaker is moto's, with the infra tests' stand-ins (``infra.sfn_standins``) for what moto
lacks. Their ``.sync`` resolver knows training jobs only; this module adds the same resolver
for ``createTransformJob.sync`` (poll DescribeTransformJob until Completed, else fail the task
with ``States.TaskFailed`` and the description as the cause), plus two knobs on moto's
transform jobs: throttle the next N CreateTransformJob calls, fail a job with a FailureReason.
moto completes a transform job at once; nothing is read or written in S3.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
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
from moto.sagemaker import models as sm_models

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


class _Knobs:
    throttle = 0
    failures: dict[str, str] = {}  # noqa: RUF012 - reset per test by the fixture


@contextlib.contextmanager
def _transform_standin() -> Iterator[type[_Knobs]]:
    integration = sfn_standins._SageMakerIntegration
    training_resolver = integration._build_sync_resolver
    backend = sm_models.SageMakerModelBackend
    create_job, describe_job = backend.create_transform_job, backend.describe_transform_job

    def build(
        self: Any,
        env: Any,
        resource_runtime_part: Any,
        normalised_parameters: dict[str, Any],
        state_credentials: Any,
    ) -> Callable[[], Any]:
        part, params, creds = resource_runtime_part, normalised_parameters, state_credentials
        if self._get_boto_service_action() != "create_transform_job":
            return training_resolver(self, env, part, params, creds)
        env.stack.pop()
        client = self._client(part, creds)
        name = params["TransformJobName"]

        def resolve() -> Any:
            described = client.describe_transform_job(TransformJobName=name)
            described.pop("ResponseMetadata", None)
            if described["TransformJobStatus"] in ("InProgress", "Stopping"):
                return None
            if described["TransformJobStatus"] == "Completed":
                return sfn_standins._jsonable(described)
            raise sfn_standins.FailureEventException(
                sfn_standins.FailureEvent(
                    env=env,
                    error_name=sfn_standins.StatesErrorName(
                        typ=sfn_standins.StatesErrorNameType.StatesTaskFailed
                    ),
                    event_type=sfn_standins.HistoryEventType.TaskFailed,
                    event_details=sfn_standins.EventDetails(
                        taskFailedEventDetails=sfn_standins.TaskFailedEventDetails(
                            resource=self._get_sfn_resource(),
                            resourceType=self._get_sfn_resource_type(),
                            error=sfn_standins.StatesErrorNameType.StatesTaskFailed.to_name(),
                            cause=json.dumps(sfn_standins._jsonable(described)),
                        )
                    ),
                )
            )

        return resolve

    def create_transform_job(self: Any, *args: Any, **kwargs: Any) -> Any:
        if _Knobs.throttle:
            _Knobs.throttle -= 1
            raise sfn_standins.ThrottlingError("Rate exceeded")
        return create_job(self, *args, **kwargs)

    def describe_transform_job(self: Any, transform_job_name: str) -> Any:
        described = dict(describe_job(self, transform_job_name))
        reason = _Knobs.failures.get(transform_job_name)
        if reason:
            described.update(TransformJobStatus="Failed", FailureReason=reason)
        return described

    with contextlib.ExitStack() as stack:
        stack.enter_context(sfn_standins._patched(integration, "_build_sync_resolver", build))
        stack.enter_context(
            sfn_standins._patched(backend, "create_transform_job", create_transform_job)
        )
        stack.enter_context(
            sfn_standins._patched(backend, "describe_transform_job", describe_transform_job)
        )
        _Knobs.throttle, _Knobs.failures = 0, {}
        yield _Knobs


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
    with sfn_standins.sagemaker_standin(), _transform_standin():
        result = run(sfn_client, create(sfn_client, definitions["Scoring"]))
    assert result.status == "SUCCEEDED", result.cause
    done = result.output["transform"]
    assert done["TransformJobStatus"] == "Completed"
    name = done["TransformJobName"]
    assert name.startswith("score-digits-")
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
        "TransformJobName": "score-digits-nightly-7",
        "TransformInput": "s3://other-data/2026-12-01/",
        "TransformOutput": "s3://other-data/scores/2026-12-01",
    }
    with sfn_standins.sagemaker_standin(), _transform_standin():
        machine = create(sfn_client, definitions["Scoring"])
        result = run(sfn_client, machine, payload)
        second = run(sfn_client, machine)
    assert result.status == "SUCCEEDED", result.cause
    job = sagemaker.describe_transform_job(TransformJobName="score-digits-nightly-7")
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
    with sfn_standins.sagemaker_standin(), _transform_standin() as knobs:
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
    with sfn_standins.sagemaker_standin(), _transform_standin() as knobs:
        knobs.failures["score-digits-bad"] = "ClientError: See job logs for more information"
        result = run(
            sfn_client,
            create(sfn_client, definitions["Scoring"]),
            {"TransformJobName": "score-digits-bad"},
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
    with sfn_standins.sagemaker_standin(), _transform_standin():
        result = run(sfn_client, create(sfn_client, definitions[name]))
    assert result.status == "SUCCEEDED", result.cause
    trained = result.output["training"]["TrainingJobName"]
    job = sagemaker.describe_transform_job(TransformJobName=trained)
    assert job["ModelName"] == trained
    sagemaker.describe_model(ModelName=trained)  # the pipeline created it before the transform
    assert job["TransformInput"]["DataSource"]["S3DataSource"]["S3Uri"].endswith("/digits/test-csv")
