"""Quality gate and approval, executed by moto's Step Functions interpreter.

One synthesized pipeline with a gate (``validation:accuracy >= 0.9``, ``validation:loss < 0.5``)
and an approval topic. The topic is moto's SNS with a moto SQS queue subscribed (raw delivery),
so the test reads the approval message as a reviewer's subscription would and answers with
``client.approval`` through moto's ``SendTaskSuccess``/``SendTaskFailure``. SageMaker is moto's
with the ``sfn_standins`` (``Scenario.final_metrics`` is the job's ``FinalMetricDataList``).
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import boto3
import pytest
from aws_cdk import Duration
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sns as sns
from moto import mock_aws
from moto.backends import get_backend

from chainer_sagemaker_cdk import (
    ChainerEstimator,
    RuntimeImage,
    SourceCode,
    TrainingInput,
    TrainingPipeline,
)
from chainer_sagemaker_cdk._approval import Approval
from chainer_sagemaker_cdk.client.approval import approve, reject
from chainer_sagemaker_cdk.client.approval import main as approval_cli
from chainer_sagemaker_cdk.guardrails import DeploymentGuardrails
from chainer_sagemaker_cdk.quality_gate import MetricThreshold, QualityGate
from chainer_sagemaker_cdk.registry import ModelRegistry

from .render import state_machine_definition
from .sfn_run import REGION, create, start, wait
from .sfn_standins import sagemaker_standin, task_failure_cause

ENDPOINT = "chainer-digits"
TOPIC = "approvals"
GROUP = "digits-models"
GOOD = {"validation:accuracy": 0.93, "validation:loss": 0.21, "train:progress": 100.0}


@pytest.fixture(scope="module")
def definition(code_dir: Path) -> dict[str, Any]:
    app = cdk.App()
    stack = cdk.Stack(app, "Gated")
    estimator = ChainerEstimator(
        stack,
        "Estimator",
        code=SourceCode.from_directory(code_dir, "train.py"),
        image=RuntimeImage.from_registry("123456789012.dkr.ecr.us-east-1.amazonaws.com/c:1"),
        channels={"train": TrainingInput(bucket=s3.Bucket(stack, "Data"), key_prefix="d")},
        base_job_name="chainer-digits",
        metric_definitions={
            "validation:accuracy": r"validation/main/accuracy=(\S+)",
            "validation:loss": r"validation/main/loss=(\S+)",
        },
    )
    topic = sns.Topic(stack, "Approvals", topic_name=TOPIC)
    TrainingPipeline(
        stack,
        "Pipeline",
        estimator=estimator,
        endpoint_name=ENDPOINT,
        quality_gate=QualityGate(
            thresholds=[
                MetricThreshold("validation:accuracy", ">=", 0.9),
                MetricThreshold("validation:loss", "<", 0.5),
            ],
            compare_with_serving=True,
        ),
        approval=Approval(topic=topic, timeout=Duration.hours(1)),
        registry=ModelRegistry(group_name=GROUP),
        guardrails=DeploymentGuardrails(traffic="CANARY", step_percent=20),
        poll_interval=Duration.seconds(0),
        retry_interval=Duration.seconds(1),
        retry_backoff_rate=1.0,
    )
    return state_machine_definition(app.synth().get_stack_by_name("Gated").template)


@pytest.fixture(scope="module")
def _moto() -> Iterator[None]:
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        yield


@pytest.fixture
def aws(_moto: None) -> dict[str, Any]:
    for service in ("sagemaker", "stepfunctions", "sns", "sqs"):
        get_backend(service).reset()
    clients = {n: boto3.client(n, region_name=REGION) for n in ("stepfunctions", "sagemaker")}
    sns_client = boto3.client("sns", region_name=REGION)
    sqs = boto3.client("sqs", region_name=REGION)
    topic = sns_client.create_topic(Name=TOPIC)["TopicArn"]
    queue = sqs.create_queue(QueueName="reviewers")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])
    sns_client.subscribe(
        TopicArn=topic,
        Protocol="sqs",
        Endpoint=queue_arn["Attributes"]["QueueArn"],
        Attributes={"RawMessageDelivery": "true"},
    )
    # The stack's AWS::SageMaker::ModelPackageGroup, as CloudFormation creates it.
    clients["sagemaker"].create_model_package_group(ModelPackageGroupName=GROUP)
    return {**clients, "sqs": sqs, "queue": queue}


def _with_topic(definition: dict[str, Any], timeout: int | None = None) -> str:
    """The synthesized definition with the topic token filled in with moto's topic ARN."""
    filled = copy.deepcopy(definition)
    task = filled["States"]["RequestApproval"]
    task["Parameters"]["TopicArn"] = f"arn:aws:sns:{REGION}:123456789012:{TOPIC}"
    if timeout is not None:
        task["TimeoutSeconds"] = timeout
    return json.dumps(filled)


def _machine(aws: dict[str, Any], definition: dict[str, Any], timeout: int | None = None) -> str:
    return create(aws["stepfunctions"], json.loads(_with_topic(definition, timeout)))


def _message(aws: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
    """The approval request as the reviewers' queue receives it (bounded wait)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = aws["sqs"].receive_message(QueueUrl=aws["queue"], WaitTimeSeconds=0)
        for message in got.get("Messages", []):
            return json.loads(message["Body"])  # type: ignore[no-any-return]
        time.sleep(0.05)
    raise AssertionError(f"no approval message within {timeout} s")


def _nothing_deployed(aws: dict[str, Any], calls: list[str]) -> None:
    assert not {"CreateModel", "CreateEndpointConfig", "CreateEndpoint"} & set(calls)
    assert aws["sagemaker"].list_models()["Models"] == []
    packages = aws["sagemaker"].list_model_packages(ModelPackageGroupName=GROUP)
    assert packages["ModelPackageSummaryList"] == []
    assert aws["sagemaker"].list_endpoints()["Endpoints"] == []


@pytest.mark.parametrize(
    ("metrics", "cause"),
    [
        (
            {**GOOD, "validation:accuracy": 0.85},
            "validation:accuracy = 0.85 does not meet the threshold >= 0.9",
        ),
        (
            {**GOOD, "validation:loss": 0.5},
            "validation:loss = 0.5 does not meet the threshold < 0.5",
        ),
        (
            None,  # moto's job reports train:progress only
            "validation:accuracy: the training job reported no value (threshold >= 0.9)",
        ),
    ],
    ids=["accuracy-below", "loss-at-limit", "metric-missing"],
)
def test_gate_rejects_and_nothing_is_deployed(
    aws: dict[str, Any],
    definition: dict[str, Any],
    metrics: dict[str, float] | None,
    cause: str,
) -> None:
    with sagemaker_standin() as scenario:
        scenario.final_metrics = metrics
        result = wait(aws["stepfunctions"], start(aws["stepfunctions"], _machine(aws, definition)))
    assert result.status == "FAILED"
    assert result.error == "ModelRejected"
    assert cause in (result.cause or ""), result.cause
    assert "RequestApproval" not in result.entered()
    _nothing_deployed(aws, scenario.calls)
    assert aws["sqs"].receive_message(QueueUrl=aws["queue"]).get("Messages", []) == []


def test_gate_passes_and_approval_deploys(aws: dict[str, Any], definition: dict[str, Any]) -> None:
    sfn_client = aws["stepfunctions"]
    with sagemaker_standin() as scenario:
        scenario.final_metrics = GOOD
        execution = start(sfn_client, _machine(aws, definition))
        message = _message(aws)
        assert "CreateModel" not in scenario.calls, "nothing is deployed before the approval"
        token = message["TaskToken"]
        assert message["Approve"] == (
            f"python -m chainer_sagemaker_cdk.client.approval approve {token}"
        )
        assert token in message["Reject"]
        assert message["TrainingJobName"].startswith("chainer-digits-")
        assert {m["MetricName"]: m["Value"] for m in message["Metrics"]} == GOOD
        approve(token, note={"by": "reviewer"}, sfn_client=sfn_client)
        result = wait(sfn_client, execution)
    assert result.status == "SUCCEEDED", result.cause
    assert result.output["approval"] == {"approved": True, "by": "reviewer"}
    endpoint = aws["sagemaker"].describe_endpoint(EndpointName=ENDPOINT)
    assert endpoint["EndpointStatus"] == "InService"
    job = message["TrainingJobName"]
    assert endpoint["EndpointConfigName"] == job
    # Registered as version 1 of the group, with its metrics; the model is that version.
    package = aws["sagemaker"].describe_model_package(
        ModelPackageName=result.output["registered"]["ModelPackageArn"]
    )
    assert (package["ModelPackageGroupName"], package["ModelPackageVersion"]) == (GROUP, 1)
    assert package["ModelApprovalStatus"] == "Approved"
    assert package["CustomerMetadataProperties"] == {
        "TrainingJobName": job,
        "validation:accuracy": "0.93",
        "validation:loss": "0.21",
    }
    (container,) = package["InferenceSpecification"]["Containers"]
    assert container["ModelDataUrl"] == result.output["training"]["ModelArtifacts"]
    model = aws["sagemaker"].describe_model(ModelName=job)
    assert model["PrimaryContainer"] == {"ModelPackageName": package["ModelPackageArn"]}


def test_rejected_approval_fails_with_the_reason(
    aws: dict[str, Any], definition: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rejected from the shell command the message gives (``python -m ...approval reject``)."""
    sfn_client = aws["stepfunctions"]
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    with sagemaker_standin() as scenario, task_failure_cause():
        scenario.final_metrics = GOOD
        execution = start(sfn_client, _machine(aws, definition))
        token = _message(aws)["TaskToken"]
        assert approval_cli(["reject", token, "worse on March data"]) == 0
        result = wait(sfn_client, execution)
    assert (result.status, result.error, result.cause) == (
        "FAILED",
        "ModelRejected",
        "worse on March data",
    )
    _nothing_deployed(aws, scenario.calls)


def test_unanswered_approval_times_out(aws: dict[str, Any], definition: dict[str, Any]) -> None:
    """The synthesized definition with its TimeoutSeconds shortened to 1 second."""
    sfn_client = aws["stepfunctions"]
    with sagemaker_standin() as scenario:
        scenario.final_metrics = GOOD
        execution = start(sfn_client, _machine(aws, definition, timeout=1))
        _message(aws)
        result = wait(sfn_client, execution)
    assert (result.status, result.error) == ("FAILED", "ApprovalTimedOut")
    assert "No approval within 1 seconds" not in (result.cause or "")  # the synthesized cause
    assert "No approval within 3600 seconds" in (result.cause or "")
    _nothing_deployed(aws, scenario.calls)


def _approved_run(aws: dict[str, Any], machine: str) -> Any:
    sfn_client = aws["stepfunctions"]
    execution = start(sfn_client, machine)
    approve(_message(aws)["TaskToken"], sfn_client=sfn_client)
    return wait(sfn_client, execution)


def test_canary_update_rolled_back_fails_with_the_reason(
    aws: dict[str, Any], definition: dict[str, Any]
) -> None:
    """The second model passes the gate and the approval; its canary update is rolled back
    (an alarm fired): the execution fails, the endpoint keeps serving the first model."""
    with sagemaker_standin() as scenario:
        scenario.final_metrics = GOOD
        machine = _machine(aws, definition)
        first = _approved_run(aws, machine)
        assert first.status == "SUCCEEDED", first.cause
        scenario.update_outcome = "RolledBack"
        scenario.failure_reason = "Alarm chainer-digits-5xx fired during the canary bake"
        second = _approved_run(aws, machine)
    assert (second.status, second.error) == ("FAILED", "EndpointDeploymentRolledBack")
    assert second.cause == scenario.failure_reason
    (config,) = scenario.deployment_configs
    routing = config["BlueGreenUpdatePolicy"]["TrafficRoutingConfiguration"]
    assert routing["Type"] == "CANARY"
    assert routing["CanarySize"] == {"Type": "CAPACITY_PERCENT", "Value": 20}
    assert len(config["AutoRollbackConfiguration"]["Alarms"]) == 2
    endpoint = aws["sagemaker"].describe_endpoint(EndpointName=ENDPOINT)
    assert endpoint["EndpointConfigName"] == first.output["training"]["TrainingJobName"]


def test_a_model_worse_than_the_serving_one_is_rejected(
    aws: dict[str, Any], definition: dict[str, Any]
) -> None:
    """0.91 meets the threshold (>= 0.9) but the version in service reported 0.93."""
    with sagemaker_standin() as scenario:
        scenario.final_metrics = GOOD
        machine = _machine(aws, definition)
        first = _approved_run(aws, machine)
        assert first.status == "SUCCEEDED", first.cause
        assert "NoEndpointYet" in first.entered()  # nothing to compare with yet
        scenario.final_metrics = {**GOOD, "validation:accuracy": 0.91}
        second = wait(aws["stepfunctions"], start(aws["stepfunctions"], machine))
    assert (second.status, second.error) == ("FAILED", "ModelRejected")
    assert second.cause == "validation:accuracy = 0.91 is worse than 0.93 of the model in service"
    assert scenario.calls.count("CreateModel") == 1
    packages = aws["sagemaker"].list_model_packages(ModelPackageGroupName=GROUP)
    assert len(packages["ModelPackageSummaryList"]) == 1


def test_answers_need_a_token_and_a_reason() -> None:
    with pytest.raises(ValueError, match="TaskToken"):
        approve("")
    with pytest.raises(ValueError, match="say why"):
        reject("token", "  ")
