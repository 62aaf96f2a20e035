"""The pipeline's endpoint serverless, asynchronous or shadowed first: the template (requests
against botocore's model, IAM, cdk-nag) and executions in moto's Step Functions interpreter.

Three pipelines synthesized once, with the three cdk-nag packs. The executions run each
definition twice: the first creates the endpoint, the second updates it; the stand-ins
(``sfn_standins``) record each CreateEndpointConfig request whole (moto keeps only part of it)
and each UpdateEndpoint's config. The shadow flow's tests with a busy endpoint start from an
endpoint in service made by direct calls and run one execution. The shadow's alarms are
moto's CloudWatch alarms, named as the template names them, their state set by the test
(nothing computes them from metrics here).
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import boto3
import botocore.session
import pytest
from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sns as sns
from moto import mock_aws
from moto.backends import get_backend

from chainer_sagemaker_cdk import (
    AsyncInference,
    ChainerEstimator,
    ChainerValidationError,
    DeploymentGuardrails,
    RuntimeImage,
    ServerlessConfig,
    ShadowDeployment,
    SourceCode,
    TrainingInput,
    TrainingPipeline,
)
from chainer_sagemaker_cdk.pipeline import InvocationScaling

from . import iam_check
from .conftest import nag_app
from .render import state_machine_definition
from .sfn_run import REGION, Run, create, run
from .sfn_standins import sagemaker_standin
from .test_cdk_botocore import JOB, MODEL, SAMPLES, _validate
from .test_cdk_snapshots import _check

ENDPOINT = "chainer-digits"
FAST = {
    "poll_interval": Duration.seconds(0),
    "retry_interval": Duration.seconds(1),
    "retry_backoff_rate": 1.0,
}
SERVICES = {
    "sagemaker": MODEL,
    "cloudwatch": botocore.session.get_session().get_service_model("cloudwatch"),
}
SERVERLESS = ServerlessConfig(memory_size_in_mb=3072, max_concurrency=8, provisioned_concurrency=2)


def _estimator(stack: cdk.Stack, code_dir: Path, data: s3.IBucket) -> ChainerEstimator:
    return ChainerEstimator(
        stack,
        "Estimator",
        code=SourceCode.from_directory(code_dir, "train.py"),
        image=RuntimeImage.from_registry("123456789012.dkr.ecr.us-east-1.amazonaws.com/c:1"),
        channels={"train": TrainingInput(bucket=data, key_prefix="digits/train")},
        base_job_name="chainer-digits",
        output_bucket=data,
    )


def _stack(app: cdk.App, name: str) -> tuple[cdk.Stack, s3.IBucket]:
    stack = cdk.Stack(app, name)
    return stack, s3.Bucket.from_bucket_name(stack, "Data", "digits-data")


@pytest.fixture(scope="module")
def templates(
    tmp_path_factory: pytest.TempPathFactory, code_dir: Path
) -> dict[str, dict[str, Any]]:
    """Serverless, async and shadow pipelines, synthesized with the cdk-nag packs (a finding
    fails the synth)."""
    app = nag_app(tmp_path_factory.mktemp("hosting-out"))
    stack, data = _stack(app, "Serverless")
    TrainingPipeline(
        stack,
        "Pipeline",
        estimator=_estimator(stack, code_dir, data),
        endpoint_name=ENDPOINT,
        serverless=SERVERLESS,
        guardrails=DeploymentGuardrails(traffic="ALL_AT_ONCE", wait_interval=Duration.seconds(0)),
        **FAST,
    )
    stack, data = _stack(app, "Async")
    key = kms.Key(stack, "ResponsesKey", enable_key_rotation=True)
    # Imported: their ARNs are literal in the template (a Ref would be sampled as a name).
    topics = [
        sns.Topic.from_topic_arn(stack, n, f"arn:aws:sns:us-east-1:123456789012:digits-{n}")
        for n in ("succeeded", "failed")
    ]
    TrainingPipeline(
        stack,
        "Pipeline",
        estimator=_estimator(stack, code_dir, data),
        endpoint_name=ENDPOINT,
        async_inference=AsyncInference(
            bucket=s3.Bucket.from_bucket_name(stack, "Requests", "digits-requests"),
            success_topic=topics[0],
            error_topic=topics[1],
            kms_key=key,
            max_concurrent_invocations_per_instance=4,
        ),
        **FAST,
    )
    stack, data = _stack(app, "Shadow")
    TrainingPipeline(
        stack,
        "Pipeline",
        estimator=_estimator(stack, code_dir, data),
        endpoint_name=ENDPOINT,
        endpoint_instance_count=2,
        shadow=ShadowDeployment(bake_time=Duration.seconds(0), sampling_percent=50),
        **FAST,
    )
    _readme_stack(app, code_dir)
    assembly = app.synth()
    return {
        name: assembly.get_stack_by_name(name).template
        for name in ("Serverless", "Async", "Shadow", "Readme")
    }


def readme_block(heading: str, index: int) -> str:
    """The ``index``-th Python block of the README section under ``heading``."""
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    start = text.index(f"\n{heading}\n")
    end = text.find("\n### ", start + 1)
    section = text[start : end if end > 0 else len(text)]
    return textwrap.dedent(re.findall(r"```python\n(.*?)```", section, re.DOTALL)[index])


def _readme_stack(app: cdk.App, code_dir: Path) -> None:
    """The README's pipeline blocks of these features, run as written."""
    stack, data = _stack(app, "Readme")
    key = kms.Key(stack, "TopicKey", enable_key_rotation=True)
    names: dict[str, Any] = {
        "self": stack,
        "estimator": _estimator(stack, code_dir, data),
        "TrainingPipeline": TrainingPipeline,
        "my_accuracy_alarm": cloudwatch.Alarm.from_alarm_arn(
            stack, "Accuracy", "arn:aws:cloudwatch:us-east-1:123456789012:alarm:digits-accuracy"
        ),
        "requests_bucket": s3.Bucket.from_bucket_name(stack, "Requests", "digits-requests"),
        "done_topic": sns.Topic(stack, "Done", master_key=key, enforce_ssl=True),
        "client_role": iam.Role(stack, "Client", assumed_by=iam.AccountRootPrincipal()),
    }
    for heading, index in (
        ("### Deployment guardrails (`DeploymentGuardrails`)", 0),
        ("### Deployment guardrails (`DeploymentGuardrails`)", 1),
        ("### Shadow deployments (`ShadowDeployment`)", 0),
        ("### `TrainingPipeline` and `TrainingPipelineFragment`", 2),
    ):
        # The README's own text, from this repository: what a user copies must run.
        code = compile(readme_block(heading, index), f"README {heading}", "exec")
        exec(code, names)  # noqa: S102
    # The client's role is the user's: its policy's findings are theirs to accept.
    for finding in (
        *[
            f"AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:s3:::digits-requests/{p}/*]"
            for p in ("async-input", "async-output", "async-failures")
        ],
        "HIPAA.Security-IAMNoInlinePolicy",
        "NIST.800.53.R5-IAMNoInlinePolicy",
    ):
        cdk.Validations.of(names["client_role"]).acknowledge(
            cdk.Acknowledgment(id=finding, reason="a client's objects under the async prefixes")
        )


def _machine(template: dict[str, Any], construct: str) -> dict[str, Any]:
    """The states of the state machine under ``construct``."""
    (machine,) = [
        r
        for k, r in template["Resources"].items()
        if r["Type"] == "AWS::StepFunctions::StateMachine" and k.startswith(construct)
    ]
    return state_machine_definition({"Resources": {"M": machine}})["States"]  # type: ignore[no-any-return]


def _definition(templates: dict[str, dict[str, Any]], name: str) -> dict[str, Any]:
    return state_machine_definition(templates[name])


def _sampled(value: Any) -> Any:
    """Execution-time (``.$``) fields replaced by sample values (botocore test's, else a name)."""
    if isinstance(value, list):
        return [_sampled(v) for v in value]
    if not isinstance(value, dict):
        return value
    return {
        k[:-2] if k.endswith(".$") else k: SAMPLES.get(k[:-2], JOB)
        if k.endswith(".$")
        else _sampled(v)
        for k, v in value.items()
    }


def _request(states: dict[str, Any], state: str) -> dict[str, Any]:
    """A state's parameters with sample values for the execution-time fields."""
    return _sampled(states[state]["Parameters"])  # type: ignore[no-any-return]


# -- the template -----------------------------------------------------------------------------
def test_serverless_variant_has_no_instances(
    templates: dict[str, dict[str, Any]],
) -> None:
    states = _definition(templates, "Serverless")["States"]
    request = _request(states, "CreateEndpointConfig")
    (variant,) = request["ProductionVariants"]
    assert variant["ServerlessConfig"] == {
        "MemorySizeInMB": 3072,
        "MaxConcurrency": 8,
        "ProvisionedConcurrency": 2,
    }
    assert "InstanceType" not in variant
    assert "InitialInstanceCount" not in variant
    assert request["KmsKeyId"]  # optional on serverless: it encrypts the model's image
    assert _validate(MODEL.operation_model("CreateEndpointConfig"), request) == []


def test_async_config_and_what_the_model_role_may_do(
    templates: dict[str, dict[str, Any]],
) -> None:
    template = templates["Async"]
    states = _definition(templates, "Async")["States"]
    request = _request(states, "CreateEndpointConfig")
    config = request["AsyncInferenceConfig"]
    assert config["OutputConfig"]["S3OutputPath"] == "s3://digits-requests/async-output"
    assert config["OutputConfig"]["S3FailurePath"] == "s3://digits-requests/async-failures"
    assert config["OutputConfig"]["NotificationConfig"] == {
        "SuccessTopic": "arn:aws:sns:us-east-1:123456789012:digits-succeeded",
        "ErrorTopic": "arn:aws:sns:us-east-1:123456789012:digits-failed",
    }
    assert config["ClientConfig"] == {"MaxConcurrentInvocationsPerInstance": 4}
    assert _validate(MODEL.operation_model("CreateEndpointConfig"), request) == []
    role = next(
        k
        for k, r in template["Resources"].items()
        if r["Type"] == "AWS::IAM::Role" and "ServingRole" in k
    )
    documents = iam_check.role_policies(template, role)
    bucket = "arn:aws:s3:::digits-requests"
    assert iam_check.allows(documents, "s3:GetObject", f"{bucket}/async-input/req-1")
    assert iam_check.allows(documents, "s3:PutObject", f"{bucket}/async-output/r.out")
    assert iam_check.allows(documents, "s3:PutObject", f"{bucket}/async-failures/r-error.out")
    assert not iam_check.allows(documents, "s3:PutObject", f"{bucket}/async-input/req-1")
    topic = "arn:aws:sns:us-east-1:123456789012:digits-failed"
    assert iam_check.allows(documents, "sns:Publish", topic)
    assert not iam_check.allows(documents, "sns:Publish", topic + "-other")


def test_shadow_config_puts_the_new_model_beside_production(
    templates: dict[str, dict[str, Any]],
) -> None:
    states = _definition(templates, "Shadow")["States"]
    request = _request(states, "CreateShadowConfig")
    (production,) = request["ProductionVariants"]
    (shadow,) = request["ShadowProductionVariants"]
    assert (production["VariantName"], production["InitialVariantWeight"]) == ("AllTraffic", 1)
    assert (shadow["VariantName"], shadow["InitialVariantWeight"]) == ("Shadow", 0.5)
    assert shadow["InitialInstanceCount"] == 2
    assert _validate(MODEL.operation_model("CreateEndpointConfig"), request) == []
    assert states["RouteByStatus"]["Choices"][0]["Next"] == "ReadProductionModel"
    assert len(states["CheckShadowAlarms"]["Parameters"]["AlarmNames"]) == 2


def test_readme_blocks_give_what_they_say(templates: dict[str, dict[str, Any]]) -> None:
    template = templates["Readme"]
    rolling = _machine(template, "Rolling")["UpdateEndpoint"]["Parameters"]["DeploymentConfig"]
    assert rolling["RollingUpdatePolicy"]["MaximumBatchSize"] == {
        "Type": "INSTANCE_COUNT",
        "Value": 1,
    }
    shadowed = _machine(template, "Shadowed")
    assert shadowed["BakeShadow"]["Seconds"] == 7200
    assert "BlueGreenUpdatePolicy" in shadowed["UpdateEndpoint"]["Parameters"]["DeploymentConfig"]
    assert len(shadowed["CheckShadowAlarms"]["Parameters"]["AlarmNames"]) == 3
    variant = _machine(template, "Serverless")["CreateEndpointConfig"]["Parameters"][
        "ProductionVariants"
    ][0]
    assert variant["ServerlessConfig"] == {"MemorySizeInMB": 2048, "MaxConcurrency": 5}
    role = next(k for k in template["Resources"] if k.startswith("Client"))
    documents = iam_check.role_policies(template, role)
    assert iam_check.allows(documents, "sagemaker:InvokeEndpointAsync", "*")
    assert iam_check.allows(documents, "s3:PutObject", "arn:aws:s3:::digits-requests/async-input/r")
    assert not iam_check.allows(
        documents, "s3:PutObject", "arn:aws:s3:::digits-requests/async-output/r"
    )


def test_shadow_may_read_configs_and_its_alarms_only(
    templates: dict[str, dict[str, Any]],
) -> None:
    template = templates["Shadow"]
    role = next(
        k
        for k, r in template["Resources"].items()
        if r["Type"] == "AWS::IAM::Role" and k.startswith("PipelineRole")
    )
    documents = iam_check.role_policies(template, role)
    config = "arn:aws:sagemaker:us-east-1:123456789012:endpoint-config/chainer-digits--1"
    assert iam_check.allows(documents, "sagemaker:DescribeEndpointConfig", config)
    assert not iam_check.allows(
        documents, "sagemaker:DescribeEndpointConfig", config.replace("digits--", "digits-v2--")
    )
    names = _definition(templates, "Shadow")["States"]["CheckShadowAlarms"]["Parameters"][
        "AlarmNames"
    ]
    alarm = "arn:aws:cloudwatch:us-east-1:123456789012:alarm:"
    for name in names:
        assert iam_check.allows(documents, "cloudwatch:DescribeAlarms", alarm + name)
    assert not iam_check.allows(documents, "cloudwatch:DescribeAlarms", alarm + "other")


@pytest.mark.parametrize("stack", ["Serverless", "Async", "Shadow"])
def test_every_sdk_request_fits_botocore(templates: dict[str, dict[str, Any]], stack: str) -> None:
    """Each aws-sdk task (SageMaker, CloudWatch) against its operation in botocore's model,
    the execution-time fields sampled."""
    states = _definition(templates, stack)["States"]
    checked = set()
    for name, state in states.items():
        resource = state.get("Resource", "")
        if ":aws-sdk:" not in resource or state.get("Type") != "Task":
            continue
        service, api = resource.split(":aws-sdk:")[1].split(":")
        if service not in ("sagemaker", "cloudwatch"):
            continue
        operation = SERVICES[service].operation_model(api[0].upper() + api[1:])
        assert _validate(operation, _request(states, name)) == [], name
        checked.add(operation.name)
    assert {"CreateEndpointConfig", "UpdateEndpoint", "DescribeEndpoint"} <= checked
    if stack == "Shadow":
        assert {"DescribeEndpointConfig", "DeleteEndpointConfig", "DescribeAlarms"} <= checked


@pytest.mark.parametrize(
    ("props", "message"),
    [
        ({"serverless": SERVERLESS, "async_inference": "async"}, "not both"),
        ({"serverless": SERVERLESS, "endpoint_instance_type": "ml.g4dn.xlarge"}, "run on CPUs"),
        ({"serverless": SERVERLESS, "endpoint_instance_count": 2}, "leave it out with serverless"),
        ({"serverless": SERVERLESS, "isolate_model": True}, "no network isolation"),
        ({"serverless": SERVERLESS, "vpc": "vpc"}, "no VPC configuration"),
        ({"serverless": SERVERLESS, "shadow": ShadowDeployment()}, "no shadow variant"),
        (
            {
                "serverless": SERVERLESS,
                "autoscaling": InvocationScaling(max_capacity=2, invocations_per_instance=9),
            },
            "scale by themselves",
        ),
        (
            {"serverless": SERVERLESS, "guardrails": DeploymentGuardrails(traffic="ROLLING")},
            "cannot take a rolling update",
        ),
        ({"serverless": ServerlessConfig(memory_size_in_mb=1000)}, "1024, 2048"),
        ({"guardrails": DeploymentGuardrails(traffic="ROLLING")}, "use 2 or more instances"),
        ({"shadow": ShadowDeployment(sampling_percent=0)}, "1 to 100 percent"),
        ({"shadow": ShadowDeployment(default_alarms=False)}, "promoted unchecked"),
    ],
)
def test_combinations_sagemaker_refuses_fail_at_synth(
    code_dir: Path, props: dict[str, Any], message: str
) -> None:
    app = cdk.App()
    stack, data = _stack(app, "Refused")
    if props.get("async_inference") == "async":
        props = {**props, "async_inference": AsyncInference(bucket=data)}
    estimator = _estimator(stack, code_dir, data)
    if props.pop("vpc", None):
        estimator = ChainerEstimator(
            stack,
            "InVpc",
            code=SourceCode.from_directory(code_dir, "train.py"),
            image=RuntimeImage.from_registry("123456789012.dkr.ecr.us-east-1.amazonaws.com/c:1"),
            base_job_name="in-vpc",
            vpc=ec2.Vpc(stack, "Vpc", max_azs=1, nat_gateways=0),
        )
    with pytest.raises(ChainerValidationError, match=message):
        TrainingPipeline(stack, "Pipeline", estimator=estimator, **props)


# -- executions -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def _moto() -> Iterator[None]:
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        yield


@pytest.fixture
def aws(_moto: None) -> tuple[Any, Any]:
    for service in ("sagemaker", "stepfunctions", "cloudwatch"):
        get_backend(service).reset()
    return (
        boto3.client("stepfunctions", region_name=REGION),
        boto3.client("sagemaker", region_name=REGION),
    )


def _job(result: Run) -> str:
    return str(result.output["training"]["TrainingJobName"])


def _create_then_update(sfn_client: Any, definition: dict[str, Any]) -> tuple[Run, Run]:
    machine = create(sfn_client, definition)
    first = run(sfn_client, machine)
    assert first.status == "SUCCEEDED", first.cause
    second = run(sfn_client, machine)
    return first, second


def test_serverless_endpoint_created_and_updated(
    aws: tuple[Any, Any], templates: dict[str, dict[str, Any]]
) -> None:
    sfn_client, sagemaker = aws
    with sagemaker_standin() as scenario:
        first, second = _create_then_update(sfn_client, _definition(templates, "Serverless"))
    assert second.status == "SUCCEEDED", second.cause
    assert (scenario.calls.count("CreateEndpoint"), scenario.updates) == (1, [_job(second)])
    assert [r["EndpointConfigName"] for r in scenario.endpoint_config_requests] == [
        _job(first),
        _job(second),
    ]
    for request in scenario.endpoint_config_requests:
        (variant,) = request["ProductionVariants"]
        assert variant["ServerlessConfig"]["MemorySizeInMB"] == 3072
        assert "InstanceType" not in variant
    assert (
        scenario.deployment_configs[0]["BlueGreenUpdatePolicy"]["TrafficRoutingConfiguration"][
            "Type"
        ]
        == "ALL_AT_ONCE"
    )
    endpoint = sagemaker.describe_endpoint(EndpointName=ENDPOINT)
    assert (endpoint["EndpointStatus"], endpoint["EndpointConfigName"]) == (
        "InService",
        _job(second),
    )


def test_async_endpoint_created_and_updated(
    aws: tuple[Any, Any], templates: dict[str, dict[str, Any]]
) -> None:
    sfn_client, sagemaker = aws
    with sagemaker_standin() as scenario:
        _, second = _create_then_update(sfn_client, _definition(templates, "Async"))
    assert second.status == "SUCCEEDED", second.cause
    assert scenario.updates == [_job(second)]
    for request in scenario.endpoint_config_requests:
        output = request["AsyncInferenceConfig"]["OutputConfig"]
        assert output["S3OutputPath"] == "s3://digits-requests/async-output"
    config = sagemaker.describe_endpoint_config(EndpointConfigName=_job(second))
    assert config["AsyncInferenceConfig"]["ClientConfig"] == {
        "MaxConcurrentInvocationsPerInstance": 4
    }
    assert sagemaker.describe_endpoint(EndpointName=ENDPOINT)["EndpointConfigName"] == _job(second)


def _shadow_alarms(definition: dict[str, Any], firing: str | None) -> list[str]:
    """The shadow's alarms in moto's CloudWatch, ``firing`` in ALARM, the others OK."""
    cloudwatch = boto3.client("cloudwatch", region_name=REGION)
    names = list(definition["States"]["CheckShadowAlarms"]["Parameters"]["AlarmNames"])
    for name in names:
        cloudwatch.put_metric_alarm(
            AlarmName=name,
            Namespace="AWS/SageMaker",
            MetricName="Invocation5XXErrors",
            Statistic="Sum",
            Period=60,
            EvaluationPeriods=1,
            Threshold=1,
            ComparisonOperator="GreaterThanOrEqualToThreshold",
        )
        state = "ALARM" if name == firing else "OK"
        cloudwatch.set_alarm_state(AlarmName=name, StateValue=state, StateReason="test")
    return names


def test_shadow_with_quiet_alarms_is_promoted(
    aws: tuple[Any, Any], templates: dict[str, dict[str, Any]]
) -> None:
    sfn_client, sagemaker = aws
    definition = _definition(templates, "Shadow")
    _shadow_alarms(definition, firing=None)
    with sagemaker_standin() as scenario:
        first, second = _create_then_update(sfn_client, definition)
    assert second.status == "SUCCEEDED", second.cause
    requests = {r["EndpointConfigName"]: r for r in scenario.endpoint_config_requests}
    shadow_name = scenario.updates[0]
    shadow = requests[shadow_name]
    assert shadow["ProductionVariants"][0]["ModelName"] == _job(first)
    assert shadow["ShadowProductionVariants"][0]["ModelName"] == _job(second)
    # Shadow first, then the promotion to the new model's own config.
    assert scenario.updates == [shadow_name, _job(second)]
    assert "ShadowProductionVariants" not in requests[_job(second)]
    entered = second.entered()
    assert entered.index("CheckShadowAlarms") < entered.index("UpdateEndpoint")
    assert sagemaker.describe_endpoint(EndpointName=ENDPOINT)["EndpointConfigName"] == _job(second)
    configs = {
        c["EndpointConfigName"] for c in sagemaker.list_endpoint_configs()["EndpointConfigs"]
    }
    assert shadow_name not in configs  # deleted once the promotion is in service


def test_shadow_with_a_firing_alarm_leaves_production_untouched(
    aws: tuple[Any, Any], templates: dict[str, dict[str, Any]]
) -> None:
    sfn_client, sagemaker = aws
    definition = _definition(templates, "Shadow")
    names = _shadow_alarms(definition, firing=None)
    with sagemaker_standin() as scenario:
        machine = create(sfn_client, definition)
        first = run(sfn_client, machine)
        assert first.status == "SUCCEEDED", first.cause
        _shadow_alarms(definition, firing=names[1])
        second = run(sfn_client, machine)
    assert (second.status, second.error) == ("FAILED", "ShadowNotPromoted")
    cause = second.cause or ""
    assert "an alarm is in ALARM after the bake" in cause
    assert f'alarms ["{names[0]}","{names[1]}"], states ["OK","ALARM"]' in cause
    assert _job(first) in (second.cause or "")  # production still serves the first model
    shadow_name = scenario.updates[0]
    # Shadowed, then back to the first config; never the second model as production.
    assert scenario.updates == [shadow_name, _job(first)]
    endpoint = sagemaker.describe_endpoint(EndpointName=ENDPOINT)
    assert (endpoint["EndpointStatus"], endpoint["EndpointConfigName"]) == (
        "InService",
        _job(first),
    )
    configs = {
        c["EndpointConfigName"] for c in sagemaker.list_endpoint_configs()["EndpointConfigs"]
    }
    assert shadow_name not in configs


def test_shadow_whose_alarms_are_gone_is_not_promoted(
    aws: tuple[Any, Any], templates: dict[str, dict[str, Any]]
) -> None:
    """DescribeAlarms leaves a missing alarm out: that is not a quiet alarm."""
    sfn_client, sagemaker = aws
    definition = _definition(templates, "Shadow")
    names = _shadow_alarms(definition, firing=None)
    with sagemaker_standin() as scenario:
        machine = create(sfn_client, definition)
        first = run(sfn_client, machine)
        assert first.status == "SUCCEEDED", first.cause
        boto3.client("cloudwatch", region_name=REGION).delete_alarms(AlarmNames=names[:1])
        second = run(sfn_client, machine)
    assert (second.status, second.error) == ("FAILED", "ShadowNotPromoted")
    assert f'1 of its 2 alarms exist (["{names[1]}"])' in (second.cause or "")
    assert scenario.updates[1:] == [_job(first)]
    assert sagemaker.describe_endpoint(EndpointName=ENDPOINT)["EndpointConfigName"] == _job(first)


def test_hosting_templates_snapshot(templates: dict[str, dict[str, Any]]) -> None:
    """The three pipelines' templates (regenerate: UPDATE_SNAPSHOTS=1, as test_cdk_snapshots)."""
    _check("PipelineHosting", {k: templates[k] for k in ("Serverless", "Async", "Shadow")})


def test_shadow_that_sagemaker_rolls_back_fails_before_any_check(
    aws: tuple[Any, Any], templates: dict[str, dict[str, Any]]
) -> None:
    """The shadow variant never comes up (its update rolls back): production keeps serving."""
    sfn_client, sagemaker = aws
    definition = _definition(templates, "Shadow")
    _shadow_alarms(definition, firing=None)
    with sagemaker_standin() as scenario:
        machine = create(sfn_client, definition)
        first = run(sfn_client, machine)
        assert first.status == "SUCCEEDED", first.cause
        scenario.update_outcome = "RolledBack"
        second = run(sfn_client, machine)
    assert (second.status, second.error) == ("FAILED", "EndpointDeploymentRolledBack")
    assert second.cause == scenario.failure_reason
    assert "CheckShadowAlarms" not in second.entered()
    assert len(scenario.updates) == 1  # the shadow's update only: no promotion
    assert sagemaker.describe_endpoint(EndpointName=ENDPOINT)["EndpointConfigName"] == _job(first)
    assert scenario.deleted_configs == scenario.updates  # the unused shadow config


# -- the shadow flow meets a busy endpoint (SageMaker's own update, or another deployment) ----
SECOND = "chainer-digits--second"
"""The second execution's job (its input names it): the promotion's config."""


def _shadow_configs(scenario: Any) -> list[str]:
    """The shadow configs created, in order (the requests with a shadow variant)."""
    return [
        r["EndpointConfigName"]
        for r in scenario.endpoint_config_requests
        if "ShadowProductionVariants" in r
    ]


def _configs_left(sagemaker: Any) -> set[str]:
    return {c["EndpointConfigName"] for c in sagemaker.list_endpoint_configs()["EndpointConfigs"]}


FIRST = "chainer-digits--first"
"""The model in production when these executions start."""


def _config(sagemaker: Any, name: str) -> None:
    sagemaker.create_endpoint_config(
        EndpointConfigName=name,
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": FIRST,
                "InstanceType": "ml.m5.large",
                "InitialInstanceCount": 2,
            }
        ],
    )


def _serving(sfn_client: Any, sagemaker: Any, definition: dict[str, Any]) -> str:
    """The state machine, and the endpoint in service with ``FIRST`` as a first execution
    leaves it (its model and config named after its job), made by direct calls: a first
    execution would take most of each test's time."""
    sagemaker.create_model(
        ModelName=FIRST,
        ExecutionRoleArn="arn:aws:iam::123456789012:role/serving",
        PrimaryContainer={"Image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/c:1"},
    )
    _config(sagemaker, FIRST)
    sagemaker.create_endpoint(EndpointName=ENDPOINT, EndpointConfigName=FIRST)
    for _ in range(10):  # the stand-in's endpoint is Creating for a few describes
        if sagemaker.describe_endpoint(EndpointName=ENDPOINT)["EndpointStatus"] == "InService":
            return create(sfn_client, definition)
    raise AssertionError("the endpoint did not come into service")


def test_shadow_and_promotion_refused_as_in_progress_wait_and_go_again(
    aws: tuple[Any, Any], templates: dict[str, dict[str, Any]]
) -> None:
    """SageMaker updates the endpoint itself (SystemUpdating) as the shadow's update arrives,
    and again as the promotion's. The shadow's config (production as read before the wait) is
    deleted and the shadow starts over from the production read after it. The promotion waits
    until the endpoint is free and goes again: the shadow passed its bake and alarms, it is not
    shadowed again."""
    sfn_client, sagemaker = aws
    definition = _definition(templates, "Shadow")
    _shadow_alarms(definition, firing=None)
    with sagemaker_standin() as scenario:
        machine = _serving(sfn_client, sagemaker, definition)
        scenario.busy_before["chainer-digits--*-*-*-*-*"] = None  # a uuid: a shadow config
        scenario.busy_before[SECOND] = None
        second = run(sfn_client, machine, {"TrainingJobName": SECOND})
    assert second.status == "SUCCEEDED", second.cause
    refused, shadowed = _shadow_configs(scenario)
    assert scenario.updates == [refused, shadowed, SECOND, SECOND]  # each refused once
    assert second.entered().count("CheckShadowAlarms") == 1
    endpoint = sagemaker.describe_endpoint(EndpointName=ENDPOINT)
    assert (endpoint["EndpointStatus"], endpoint["EndpointConfigName"]) == ("InService", SECOND)
    # Deleted by the shadow's states, before the versions' clean-up could.
    assert scenario.deleted_configs[:2] == [refused, shadowed]
    assert not {refused, shadowed} & _configs_left(sagemaker)


def test_restore_refused_as_in_progress_waits_and_is_sent_again(
    aws: tuple[Any, Any], templates: dict[str, dict[str, Any]]
) -> None:
    """An alarm fired; SageMaker's own update meets the restore: it waits and goes again."""
    sfn_client, sagemaker = aws
    definition = _definition(templates, "Shadow")
    names = _shadow_alarms(definition, firing=None)
    with sagemaker_standin() as scenario:
        machine = _serving(sfn_client, sagemaker, definition)
        _shadow_alarms(definition, firing=names[0])
        scenario.busy_before[FIRST] = None
        second = run(sfn_client, machine, {"TrainingJobName": SECOND})
    assert (second.status, second.error) == ("FAILED", "ShadowNotPromoted")
    assert f"production still serves {FIRST}" in (second.cause or "")
    (shadow_name,) = _shadow_configs(scenario)
    assert scenario.updates == [shadow_name, FIRST, FIRST]
    endpoint = sagemaker.describe_endpoint(EndpointName=ENDPOINT)
    assert (endpoint["EndpointStatus"], endpoint["EndpointConfigName"]) == ("InService", FIRST)
    assert scenario.deleted_configs == [shadow_name]
    assert shadow_name not in _configs_left(sagemaker)


def test_restore_not_sent_over_another_deployment(
    aws: tuple[Any, Any], templates: dict[str, dict[str, Any]]
) -> None:
    """Another deployment replaced the shadow config while the restore was refused: the shadow
    is gone already, and updating back to the old production would undo that deployment."""
    sfn_client, sagemaker = aws
    definition = _definition(templates, "Shadow")
    names = _shadow_alarms(definition, firing=None)
    other = "chainer-digits--other"
    with sagemaker_standin() as scenario:
        machine = _serving(sfn_client, sagemaker, definition)
        _config(sagemaker, other)
        _shadow_alarms(definition, firing=names[0])
        scenario.busy_before[FIRST] = other
        second = run(sfn_client, machine, {"TrainingJobName": SECOND})
    assert (second.status, second.error) == ("FAILED", "ShadowNotPromoted")
    cause = second.cause or ""
    assert "an alarm is in ALARM after the bake" in cause
    assert f"another deployment moved it to {other}" in cause
    (shadow_name,) = _shadow_configs(scenario)
    assert scenario.updates == [shadow_name, FIRST]  # the refused restore, not resent
    assert sagemaker.describe_endpoint(EndpointName=ENDPOINT)["EndpointConfigName"] == other
    assert scenario.deleted_configs == [shadow_name]
    assert shadow_name not in _configs_left(sagemaker)


def test_promotion_rolled_back_removes_the_shadow(
    aws: tuple[Any, Any], templates: dict[str, dict[str, Any]]
) -> None:
    """The promotion rolls back (its guardrails' alarms): the endpoint is back on the shadow
    config, still copying traffic to the new model; the shadow is removed, as after an alarm."""
    sfn_client, sagemaker = aws
    definition = _definition(templates, "Shadow")
    _shadow_alarms(definition, firing=None)
    with sagemaker_standin() as scenario:
        machine = _serving(sfn_client, sagemaker, definition)
        scenario.outcome_of[SECOND] = "RolledBack"
        second = run(sfn_client, machine, {"TrainingJobName": SECOND})
    assert (second.status, second.error) == ("FAILED", "ShadowNotPromoted")
    assert second.cause == (
        f"The shadow model {SECOND} passed its bake, but its promotion rolled back "
        f"({scenario.failure_reason}); production still serves {FIRST}"
    )
    (shadow_name,) = _shadow_configs(scenario)
    assert scenario.updates == [shadow_name, SECOND, FIRST]
    endpoint = sagemaker.describe_endpoint(EndpointName=ENDPOINT)
    assert (endpoint["EndpointStatus"], endpoint["EndpointConfigName"]) == ("InService", FIRST)
    assert scenario.deleted_configs == [shadow_name]
    assert shadow_name not in _configs_left(sagemaker)


def test_shadow_replaced_during_its_bake_is_not_promoted(
    aws: tuple[Any, Any], templates: dict[str, dict[str, Any]]
) -> None:
    """Another deployment moves the endpoint off the shadow config during the bake: quiet
    alarms then say nothing about the shadow, and that deployment is left alone."""
    sfn_client, sagemaker = aws
    definition = _definition(templates, "Shadow")
    _shadow_alarms(definition, firing=None)
    other = "chainer-digits--other"
    with sagemaker_standin() as scenario:
        machine = _serving(sfn_client, sagemaker, definition)
        _config(sagemaker, other)
        scenario.replaced_after["chainer-digits--*-*-*-*-*"] = other  # a uuid: a shadow config
        second = run(sfn_client, machine, {"TrainingJobName": SECOND})
    assert (second.status, second.error) == ("FAILED", "ShadowNotPromoted")
    assert f"another deployment moved the endpoint to {other} during the bake" in (
        second.cause or ""
    )
    assert "CheckShadowAlarms" not in second.entered()
    (shadow_name,) = _shadow_configs(scenario)
    assert scenario.updates == [shadow_name]  # neither promoted nor restored
    assert sagemaker.describe_endpoint(EndpointName=ENDPOINT)["EndpointConfigName"] == other
    assert scenario.deleted_configs == [shadow_name]
