"""The synthesized state machine, executed by moto's Step Functions interpreter.

The definition is the one CDK writes, with only CloudFormation's tokens filled in
(``render.state_machine_definition``). SageMaker is moto's, with the stand-ins of
``sfn_standins`` for what moto lacks (``.sync``, UpdateEndpoint, status transitions, throttling).
The pipelines under test poll with 0-second waits and retry after 1 second without backoff
(``poll_interval``, ``retry_interval``, ``retry_backoff_rate``, ``resource_limit_wait``).
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
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_stepfunctions as sfn
from moto import mock_aws
from moto.backends import get_backend

from chainer_sagemaker_cdk import (
    ChainerEstimator,
    RuntimeImage,
    SourceCode,
    TrainingInput,
    TrainingPipeline,
    TrainingPipelineFragment,
)
from chainer_sagemaker_cdk.pipeline import InvocationScaling

from .render import state_machine_definition
from .sfn_run import REGION, Run, create, run, start, wait
from .sfn_standins import Scenario, sagemaker_standin

ENDPOINT = "chainer-digits"
FAST = {
    "poll_interval": Duration.seconds(0),
    "retry_interval": Duration.seconds(1),
    "retry_backoff_rate": 1.0,
    "resource_limit_wait": Duration.seconds(1),
}


def _estimator(stack: cdk.Stack, code_dir: Path) -> ChainerEstimator:
    data = s3.Bucket(stack, "Data")
    return ChainerEstimator(
        stack,
        "Estimator",
        code=SourceCode.from_directory(code_dir, "train.py"),
        image=RuntimeImage.from_registry("123456789012.dkr.ecr.us-east-1.amazonaws.com/c:1"),
        channels={
            "train": TrainingInput(bucket=data, key_prefix="digits/train"),
            "test": TrainingInput(bucket=data, key_prefix="digits/test"),
        },
        hyperparameters={"epochs": 10, "units": 1000},
        base_job_name="chainer-digits",
        tags={"project": "digits"},
    )


@pytest.fixture(scope="module")
def definition(code_dir: Path) -> dict[str, Any]:
    """app.py's pipeline shape, with stack and pipeline tags."""
    app = cdk.App()
    stack = cdk.Stack(app, "Run")
    pipeline = TrainingPipeline(
        stack, "Pipeline", estimator=_estimator(stack, code_dir), endpoint_name=ENDPOINT, **FAST
    )
    cdk.Tags.of(stack).add("team", "ml")
    cdk.Tags.of(pipeline).add("cost-center", "42")
    return state_machine_definition(app.synth().get_stack_by_name("Run").template)


@pytest.fixture(scope="module")
def scaled_definition(code_dir: Path) -> dict[str, Any]:
    app = cdk.App()
    stack = cdk.Stack(app, "Scaled")
    TrainingPipeline(
        stack,
        "Pipeline",
        estimator=_estimator(stack, code_dir),
        endpoint_name=ENDPOINT,
        autoscaling=InvocationScaling(max_capacity=4, invocations_per_instance=500),
        keep_versions=None,
        **FAST,
    )
    return state_machine_definition(app.synth().get_stack_by_name("Scaled").template)


@pytest.fixture(scope="module")
def embedded_definition(code_dir: Path) -> dict[str, Any]:
    """The fragment between a user's own states."""
    app = cdk.App()
    stack = cdk.Stack(app, "Mine")
    fragment = TrainingPipelineFragment(
        stack, "Train", estimator=_estimator(stack, code_dir), endpoint_name=ENDPOINT, **FAST
    )
    prepare = sfn.Pass(stack, "Prepare", result_path=sfn.JsonPath.DISCARD)
    notify = sfn.Pass(stack, "Notify", result=sfn.Result.from_string("done"), result_path="$.note")
    machine = sfn.StateMachine(
        stack,
        "Mine",
        definition_body=sfn.DefinitionBody.from_chainable(prepare.next(fragment).next(notify)),
    )
    fragment.grant_run(machine)
    return state_machine_definition(app.synth().get_stack_by_name("Mine").template)


@pytest.fixture(scope="module")
def _moto() -> Iterator[None]:
    """One mock for the module (starting one costs about a second); reset per test."""
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        yield


@pytest.fixture
def aws(_moto: None) -> tuple[Any, Any]:
    for service in ("sagemaker", "stepfunctions", "applicationautoscaling"):
        get_backend(service).reset()
    return (
        boto3.client("stepfunctions", region_name=REGION),
        boto3.client("sagemaker", region_name=REGION),
    )


def _job_name(result: Run) -> str:
    return str(result.output["training"]["TrainingJobName"])


def _tags(sagemaker: Any, arn: str) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in sagemaker.list_tags(ResourceArn=arn)["Tags"]}


def test_unpatched_moto_stops_at_sync(aws: tuple[Any, Any], definition: dict[str, Any]) -> None:
    """Without the stand-ins moto cannot run ``createTrainingJob.sync``: when this fails, moto
    has learnt it, and the stand-in can shrink (see sfn_standins)."""
    sfn_client, _ = aws
    result = run(sfn_client, create(sfn_client, definition))
    assert result.status == "FAILED"
    assert "Unsupported sync callback procedure" in (result.cause or "")


def test_first_deploy_creates_the_endpoint(
    aws: tuple[Any, Any], definition: dict[str, Any]
) -> None:
    sfn_client, sagemaker = aws
    with sagemaker_standin() as scenario:
        result = run(sfn_client, create(sfn_client, definition))
    assert result.status == "SUCCEEDED", result.cause
    job = _job_name(result)
    assert job.startswith("chainer-digits-")
    endpoint = sagemaker.describe_endpoint(EndpointName=ENDPOINT)
    assert endpoint["EndpointStatus"] == "InService"
    assert endpoint["EndpointConfigName"] == job
    assert "CreateEndpoint" in scenario.calls
    assert "UpdateEndpoint" not in scenario.calls
    model = sagemaker.describe_model(ModelName=job)
    assert (
        model["ExecutionRoleArn"] != sagemaker.describe_training_job(TrainingJobName=job)["RoleArn"]
    ), "the model runs under its own role"
    # Tags.of(stack), Tags.of(pipeline) and the estimator's tags reach every created resource.
    wanted = {"team": "ml", "cost-center": "42", "project": "digits"}
    for arn in (
        sagemaker.describe_training_job(TrainingJobName=job)["TrainingJobArn"],
        model["ModelArn"],
        sagemaker.describe_endpoint_config(EndpointConfigName=job)["EndpointConfigArn"],
        endpoint["EndpointArn"],
    ):
        assert wanted.items() <= _tags(sagemaker, arn).items(), arn


def test_updates_and_keeps_the_newest_versions(
    aws: tuple[Any, Any], definition: dict[str, Any]
) -> None:
    sfn_client, sagemaker = aws
    with sagemaker_standin() as scenario:
        machine = create(sfn_client, definition)
        jobs = []
        for _ in range(3):
            result = run(sfn_client, machine)
            assert result.status == "SUCCEEDED", result.cause
            jobs.append(_job_name(result))
    assert scenario.calls.count("CreateEndpoint") == 1
    assert scenario.calls.count("UpdateEndpoint") == 2
    assert sagemaker.describe_endpoint(EndpointName=ENDPOINT)["EndpointConfigName"] == jobs[2]
    configs = {
        c["EndpointConfigName"] for c in sagemaker.list_endpoint_configs()["EndpointConfigs"]
    }
    assert configs == {jobs[1], jobs[2]}  # keep_versions=2: the one in service and the previous
    models = {m["ModelName"] for m in sagemaker.list_models()["Models"]}
    assert models == {jobs[1], jobs[2]}


def test_failed_endpoint_is_deleted_and_recreated(
    aws: tuple[Any, Any], definition: dict[str, Any]
) -> None:
    sfn_client, sagemaker = aws
    with sagemaker_standin(Scenario(update_outcome="Failed")) as scenario:
        machine = create(sfn_client, definition)
        failed = run(sfn_client, machine)
        assert failed.status == "FAILED"
        assert failed.error == "EndpointDeploymentFailed"
        assert failed.cause == scenario.failure_reason
        assert sagemaker.describe_endpoint(EndpointName=ENDPOINT)["EndpointStatus"] == "Failed"
        scenario.update_outcome = "InService"
        recovered = run(sfn_client, machine)
    assert recovered.status == "SUCCEEDED", recovered.cause
    assert scenario.calls.count("DeleteEndpoint") == 1
    assert scenario.calls.count("CreateEndpoint") == 2
    assert "UpdateEndpoint" not in scenario.calls  # a Failed endpoint accepts only a delete
    endpoint = sagemaker.describe_endpoint(EndpointName=ENDPOINT)
    assert endpoint["EndpointConfigName"] == _job_name(recovered)


def test_rollback_is_waited_on_and_reported(
    aws: tuple[Any, Any], definition: dict[str, Any]
) -> None:
    sfn_client, sagemaker = aws
    with sagemaker_standin() as scenario:
        machine = create(sfn_client, definition)
        first = run(sfn_client, machine)
        assert first.status == "SUCCEEDED", first.cause
        scenario.update_outcome = "RolledBack"
        rolled_back = run(sfn_client, machine)
    assert rolled_back.status == "FAILED"
    assert rolled_back.error == "EndpointDeploymentRolledBack"
    assert rolled_back.cause == scenario.failure_reason
    # RollingBack was polled through (a wait), not taken for an end state.
    statuses = [
        json.loads(e["taskSucceededEventDetails"]["output"]).get("EndpointStatus")
        for e in rolled_back.events
        if e["type"] == "TaskSucceeded"
        and e["taskSucceededEventDetails"]["resource"] == "describeEndpoint"
    ]
    assert "RollingBack" in statuses
    endpoint = sagemaker.describe_endpoint(EndpointName=ENDPOINT)
    assert endpoint["EndpointConfigName"] == _job_name(first)  # still the previous version


def test_overlapping_executions_do_not_break_each_other(
    aws: tuple[Any, Any], definition: dict[str, Any]
) -> None:
    """Two executions at once. Both find no endpoint and create; the second meets the first's
    ("already existing"), looks again, waits while it is busy, then updates it. The newer
    deployment wins; the older one succeeds if it saw its own config in service first, else it
    reports that a newer execution replaced it (never an UpdateEndpoint error)."""
    sfn_client, sagemaker = aws
    with sagemaker_standin(Scenario(endpoint_polls=3, training_polls=0)) as scenario:
        machine = create(sfn_client, definition)
        executions = [start(sfn_client, machine), start(sfn_client, machine)]
        results = [wait(sfn_client, e) for e in executions]
    succeeded = [r for r in results if r.status == "SUCCEEDED"]
    assert succeeded
    for result in results:
        if result.status != "SUCCEEDED":
            assert result.error == "EndpointDeploymentFailed"
            assert "a newer execution updated it" in (result.cause or "")
    assert scenario.calls.count("UpdateEndpoint") >= 1
    final = sagemaker.describe_endpoint(EndpointName=ENDPOINT)
    assert final["EndpointStatus"] == "InService"
    assert final["EndpointConfigName"] in {_job_name(r) for r in succeeded}


def test_training_failure_reports_the_failure_reason(
    aws: tuple[Any, Any], definition: dict[str, Any]
) -> None:
    sfn_client, _ = aws
    reason = "AlgorithmError: ExecuteUserScriptError: exit code 1"
    with sagemaker_standin(Scenario(training_failure=reason)) as scenario:
        result = run(sfn_client, create(sfn_client, definition))
    assert result.status == "FAILED"
    assert result.error == "TrainingFailed"
    assert json.loads(result.cause or "{}")["FailureReason"] == reason
    assert "CreateModel" not in scenario.calls


def test_capacity_error_fails_with_its_own_name(
    aws: tuple[Any, Any], definition: dict[str, Any]
) -> None:
    sfn_client, _ = aws
    reason = "CapacityError: Unable to provision requested ML compute capacity."
    with sagemaker_standin(Scenario(training_failure=reason)):
        result = run(sfn_client, create(sfn_client, definition))
    assert (result.status, result.error) == ("FAILED", "TrainingCapacityError")


def test_throttled_calls_are_retried(aws: tuple[Any, Any], definition: dict[str, Any]) -> None:
    sfn_client, _ = aws
    throttle = {"CreateTrainingJob": 1, "DescribeEndpoint": 1}
    with sagemaker_standin(Scenario(throttle=dict(throttle))) as scenario:
        result = run(sfn_client, create(sfn_client, definition))
    assert result.status == "SUCCEEDED", result.cause
    assert scenario.throttle == dict.fromkeys(throttle, 0)
    errors = [
        e["taskFailedEventDetails"]["error"] for e in result.events if e["type"] == "TaskFailed"
    ]
    assert errors.count("SageMaker.AmazonSageMakerException") == 1  # optimized: the training task
    assert errors.count("SageMaker.ThrottlingException") == 1  # aws-sdk: the endpoint lookup


def test_a_lookup_error_is_not_taken_for_a_missing_endpoint(
    aws: tuple[Any, Any], definition: dict[str, Any]
) -> None:
    sfn_client, _ = aws
    with sagemaker_standin(Scenario(deny={"DescribeEndpoint"})) as scenario:
        result = run(sfn_client, create(sfn_client, definition))
    assert result.status == "FAILED"
    assert result.error == "SageMaker.AccessDeniedException"
    assert "CreateEndpoint" not in scenario.calls


def test_a_create_retried_after_it_succeeded_goes_on(
    aws: tuple[Any, Any], definition: dict[str, Any]
) -> None:
    """CreateModel succeeds but its reply is lost (a 5xx); the retry meets the model."""
    sfn_client, _ = aws
    with sagemaker_standin(Scenario(fail_after_create={"CreateModel"})) as scenario:
        result = run(sfn_client, create(sfn_client, definition))
    assert result.status == "SUCCEEDED", result.cause
    assert scenario.calls.count("CreateModel") == 2


def test_overrides_of_name_hyperparameters_and_channels(
    aws: tuple[Any, Any], definition: dict[str, Any]
) -> None:
    sfn_client, sagemaker = aws
    payload = {
        "TrainingJobName": "chainer-digits--exp-7",
        "Hyperparameters": {"epochs": "20", "sagemaker_program": '"evil.py"'},
        "Channels": {"train": "s3://other-bucket/train-v2"},
    }
    with sagemaker_standin():
        result = run(sfn_client, create(sfn_client, definition), payload)
    assert result.status == "SUCCEEDED", result.cause
    job = sagemaker.describe_training_job(TrainingJobName="chainer-digits--exp-7")
    hps = job["HyperParameters"]
    assert (hps["epochs"], hps["units"]) == ("20", "1000")
    assert hps["sagemaker_program"] == '"train.py"'  # reserved keys come from the construct
    assert hps["sagemaker_job_name"] == '"chainer-digits--exp-7"'
    uris = {
        c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in job["InputDataConfig"]
    }
    assert uris["train"] == "s3://other-bucket/train-v2"
    assert uris["test"].endswith("/digits/test")


@pytest.mark.parametrize(
    ("payload", "says"),
    [
        ({"TrainingJobName": "someone-else-1"}, "must start with 'chainer-digits--'"),
        ({"TrainingJobName": "chainer-digits"}, "must start with 'chainer-digits--'"),
        ({"Channels": {"validation": "s3://b/v"}}, "channels (test, train)"),
        ({"Channels": {"train": "s3://b/t", "extra": "s3://b/e"}}, "channels (test, train)"),
    ],
)
def test_bad_input_fails_before_anything_is_created(
    aws: tuple[Any, Any], definition: dict[str, Any], payload: dict[str, Any], says: str
) -> None:
    sfn_client, _ = aws
    with sagemaker_standin() as scenario:
        result = run(sfn_client, create(sfn_client, definition), payload)
    assert (result.status, result.error) == ("FAILED", "InvalidExecutionInput")
    assert says in (result.cause or "")
    assert scenario.calls == []


def test_the_fragment_in_a_users_state_machine(
    aws: tuple[Any, Any], embedded_definition: dict[str, Any]
) -> None:
    sfn_client, sagemaker = aws
    with sagemaker_standin():
        result = run(sfn_client, create(sfn_client, embedded_definition))
    assert result.status == "SUCCEEDED", result.cause
    entered = result.entered()
    assert entered[0] == "Prepare"
    assert entered[-1] == "Notify"
    assert result.output["note"] == "done"
    assert sagemaker.describe_endpoint(EndpointName=ENDPOINT)["EndpointStatus"] == "InService"


def test_the_clients_fit_runs_the_pipeline(
    aws: tuple[Any, Any], definition: dict[str, Any]
) -> None:
    """client.fit(wait=True) against the real definition: its input passes the input check."""
    from chainer_sagemaker_cdk.client import TrainingRunError, fit

    sfn_client, sagemaker = aws
    logs = boto3.client("logs", region_name=REGION)
    with sagemaker_standin():
        machine = create(sfn_client, definition)
        run_ = fit(
            machine,
            {"train": "s3://other-bucket/train-v2"},
            hyperparameters={"epochs": 20},
            job_name="chainer-digits--fit-1",
            poll=0.05,
            sfn_client=sfn_client,
            logs_client=logs,
        )
        assert run_.training_job_name() == "chainer-digits--fit-1"
        job = sagemaker.describe_training_job(TrainingJobName="chainer-digits--fit-1")
        assert job["HyperParameters"]["epochs"] == "20"
        with pytest.raises(TrainingRunError, match="must start with"):
            fit(machine, job_name="other-1", poll=0.05, sfn_client=sfn_client, logs=False)


def test_autoscaling_is_registered_after_each_deployment(
    aws: tuple[Any, Any], scaled_definition: dict[str, Any]
) -> None:
    """Registered once the endpoint is InService (it must exist), deregistered before each
    update, registered again after it."""
    sfn_client, _ = aws
    scaling = boto3.client("application-autoscaling", region_name=REGION)
    with sagemaker_standin():
        machine = create(sfn_client, scaled_definition)
        first = run(sfn_client, machine)
        assert first.status == "SUCCEEDED", first.cause
        second = run(sfn_client, machine)
    assert second.status == "SUCCEEDED", second.cause
    assert second.entered().index("SuspendScaling") < second.entered().index("UpdateEndpoint")
    (target,) = scaling.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]
    assert target["ResourceId"] == f"endpoint/{ENDPOINT}/variant/AllTraffic"
    assert (target["MinCapacity"], target["MaxCapacity"]) == (1, 4)
    (policy,) = scaling.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"]
    config = policy["TargetTrackingScalingPolicyConfiguration"]
    assert config["TargetValue"] == 500
