"""ChainerEndpoint as a serverless and as an asynchronous endpoint (issue 14, item 1).

One nag-checked app holds both (synth fails on any cdk-nag finding); the per-prop and
refused-combination tests use cheap fresh stacks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sns as sns

from chainer_sagemaker_cdk import (
    AsyncInference,
    ChainerEndpoint,
    ChainerModel,
    ChainerValidationError,
    DataCapture,
    EndpointVariant,
    ModelData,
    RuntimeImage,
    ServerlessConfig,
    SourceCode,
)

from . import iam_check
from .conftest import nag_app
from .render import fill, resources_of_type
from .test_cdk_botocore import MODEL, _validate

IMAGE = RuntimeImage.from_registry("123456789012.dkr.ecr.us-east-1.amazonaws.com/chainer:1")
KEY_ARN = "arn:aws:kms:us-east-1:123456789012:key/11111111-2222-3333-4444-555555555555"
OK_TOPIC = "arn:aws:sns:us-east-1:123456789012:inference-done"
ERROR_TOPIC = "arn:aws:sns:us-east-1:123456789012:inference-failed"


def _model(stack: cdk.Stack, code: SourceCode, id: str, **props: Any) -> ChainerModel:
    bucket = s3.Bucket.from_bucket_name(stack, f"{id}Bucket", "model-bucket")
    props.setdefault("image", IMAGE)
    props.setdefault("model_data", ModelData.from_bucket(bucket, "job/model.tar.gz"))
    return ChainerModel(stack, id, code=code, **props)


def _async(stack: cdk.Stack, **props: Any) -> AsyncInference:
    return AsyncInference(bucket=s3.Bucket.from_bucket_name(stack, "Io", "io-bucket"), **props)


@pytest.fixture(scope="module")
def assembly(
    tmp_path_factory: pytest.TempPathFactory, code: SourceCode
) -> cdk.cx_api.CloudAssembly:
    app = nag_app(tmp_path_factory.mktemp("serverless-async"))
    stack = cdk.Stack(app, "ServerlessAsync", env=cdk.Environment(account="123456789012"))
    ChainerEndpoint(
        stack,
        "Serverless",
        model=_model(stack, code, "SModel"),
        serverless=ServerlessConfig(
            memory_size_in_mb=3072, max_concurrency=20, provisioned_concurrency=2
        ),
    )
    endpoint = ChainerEndpoint(
        stack,
        "Async",
        model=_model(stack, code, "AModel"),
        instance_type="ml.m5.large",
        async_inference=_async(
            stack,
            success_topic=sns.Topic.from_topic_arn(stack, "Ok", OK_TOPIC),
            error_topic=sns.Topic.from_topic_arn(stack, "Err", ERROR_TOPIC),
            kms_key=kms.Key.from_key_arn(stack, "OutKey", KEY_ARN),
            max_concurrent_invocations_per_instance=4,
        ),
    )
    endpoint.scale_on_backlog(max_capacity=3, backlog_per_instance=5)
    caller = iam.Role(stack, "Caller", assumed_by=iam.AccountRootPrincipal())
    endpoint.grant_invoke(caller)
    # The caller's own role: how it holds its grants is the caller's choice (as in app.py).
    findings = [f"{pack}-IAMNoInlinePolicy" for pack in ("HIPAA.Security", "NIST.800.53.R5")]
    findings += [
        f"AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:s3:::io-bucket/{p}/*]"
        for p in ("async-input", "async-output", "async-failures")
    ]
    cdk.Validations.of(caller).acknowledge(
        *[
            cdk.Acknowledgment(id=f, reason="request and result keys are per request")
            for f in findings
        ]
    )
    return app.synth()


@pytest.fixture(scope="module")
def template(assembly: cdk.cx_api.CloudAssembly) -> dict[str, Any]:
    return assembly.get_stack_by_name("ServerlessAsync").template  # type: ignore[no-any-return]


def _config(template: dict[str, Any], prefix: str) -> dict[str, Any]:
    (config,) = [
        r["Properties"]
        for k, r in resources_of_type(template, "AWS::SageMaker::EndpointConfig").items()
        if k.startswith(prefix)
    ]
    return config


def test_serverless_variant(template: dict[str, Any]) -> None:
    config = _config(template, "Serverless")
    (variant,) = config["ProductionVariants"]
    assert variant["ServerlessConfig"] == {
        "MemorySizeInMB": 3072,
        "MaxConcurrency": 20,
        "ProvisionedConcurrency": 2,
    }
    for absent in ("InstanceType", "InitialInstanceCount"):
        assert absent not in variant
    assert "KmsKeyId" in config  # SageMaker encrypts the model's image with it


def test_async_config(template: dict[str, Any]) -> None:
    config = _config(template, "Async")
    assert fill(config["AsyncInferenceConfig"]) == {
        "OutputConfig": {
            "S3OutputPath": "s3://io-bucket/async-output",
            "S3FailurePath": "s3://io-bucket/async-failures",
            "KmsKeyId": KEY_ARN,
            "NotificationConfig": {"SuccessTopic": OK_TOPIC, "ErrorTopic": ERROR_TOPIC},
        },
        "ClientConfig": {"MaxConcurrentInvocationsPerInstance": 4},
    }


@pytest.mark.parametrize("prefix", ["Serverless", "Async"])
def test_configs_validate_against_botocore(template: dict[str, Any], prefix: str) -> None:
    params = fill(_config(template, prefix))
    params["EndpointConfigName"] = "config"
    assert _validate(MODEL.operation_model("CreateEndpointConfig"), params) == []


def test_async_role_least_privilege(template: dict[str, Any]) -> None:
    docs = [
        fill(p["Properties"]["PolicyDocument"])
        for p in resources_of_type(template, "AWS::IAM::ManagedPolicy").values()
        if "AModel" in str(p["Properties"].get("Roles"))
    ]
    assert docs
    bucket = "arn:aws:s3:::io-bucket"
    assert iam_check.allows(docs, "s3:GetObject", f"{bucket}/async-input/r.json")
    assert not iam_check.allows(docs, "s3:GetObject", f"{bucket}/async-output/r.out")
    for prefix in ("async-output", "async-failures"):
        assert iam_check.allows(docs, "s3:PutObject", f"{bucket}/{prefix}/r.out")
    assert not iam_check.allows(docs, "s3:PutObject", f"{bucket}/async-input/r.json")
    assert not iam_check.allows(docs, "s3:PutObject", f"{bucket}/elsewhere/r.out")
    assert iam_check.allows(docs, "sns:Publish", OK_TOPIC)
    assert iam_check.allows(docs, "sns:Publish", ERROR_TOPIC)
    assert not iam_check.allows(docs, "sns:Publish", OK_TOPIC + "-other")
    assert iam_check.allows(docs, "kms:GenerateDataKey", KEY_ARN)
    serverless_docs = [
        fill(p["Properties"]["PolicyDocument"])
        for p in resources_of_type(template, "AWS::IAM::ManagedPolicy").values()
        if "SModel" in str(p["Properties"].get("Roles"))
    ]
    assert not iam_check.allows(serverless_docs, "sns:Publish", OK_TOPIC)


def test_backlog_scaling_down_to_zero(template: dict[str, Any]) -> None:
    (target,) = resources_of_type(template, "AWS::ApplicationAutoScaling::ScalableTarget").values()
    assert target["Properties"]["MinCapacity"] == 0
    assert target["Properties"]["MaxCapacity"] == 3
    policies = resources_of_type(template, "AWS::ApplicationAutoScaling::ScalingPolicy").values()
    tracking = [
        p["Properties"]["TargetTrackingScalingPolicyConfiguration"]
        for p in policies
        if p["Properties"]["PolicyType"] == "TargetTrackingScaling"
    ]
    (spec,) = tracking
    assert spec["TargetValue"] == 5
    metric = spec["CustomizedMetricSpecification"]
    assert metric["MetricName"] == "ApproximateBacklogSizePerInstance"
    assert metric["Statistic"] == "Average"
    steps = [p for p in policies if p["Properties"]["PolicyType"] == "StepScaling"]
    assert steps, "no step policy starts the first instance from zero"
    alarms = resources_of_type(template, "AWS::CloudWatch::Alarm").values()
    assert any(a["Properties"]["MetricName"] == "HasBacklogWithoutCapacity" for a in alarms)
    endpoints = resources_of_type(template, "AWS::SageMaker::Endpoint")
    async_endpoint = next(r for k, r in endpoints.items() if k.startswith("Async"))
    assert async_endpoint["Properties"]["RetainAllVariantProperties"] is True
    serverless = next(r for k, r in endpoints.items() if k.startswith("Serverless"))
    assert "RetainAllVariantProperties" not in serverless["Properties"]


def test_invocation_scaling_retains_variant_properties(code: SourceCode) -> None:
    stack = cdk.Stack(cdk.App(), "Retain")
    endpoint = ChainerEndpoint(stack, "E", model=_model(stack, code, "M"))
    props = stack.resolve(endpoint.resource._cfn_properties)  # before scaling: left out
    assert props.get("retainAllVariantProperties") is None
    endpoint.scale_on_invocations(max_capacity=2, invocations_per_instance=100)
    template = cdk.assertions.Template.from_stack(stack).to_json()
    (resource,) = resources_of_type(template, "AWS::SageMaker::Endpoint").values()
    assert resource["Properties"]["RetainAllVariantProperties"] is True


REFUSED: list[tuple[str, dict[str, Any], str]] = [
    ("memory", {"serverless": ServerlessConfig(memory_size_in_mb=1500)}, "memory_size_in_mb"),
    ("memory-high", {"serverless": ServerlessConfig(memory_size_in_mb=7168)}, "memory_size_in_mb"),
    ("concurrency", {"serverless": ServerlessConfig(max_concurrency=201)}, "max_concurrency"),
    (
        "provisioned",
        {"serverless": ServerlessConfig(max_concurrency=2, provisioned_concurrency=3)},
        "provisioned_concurrency",
    ),
    (
        "instance-type",
        {"serverless": ServerlessConfig(), "instance_type": "ml.m5.large"},
        "instance_type",
    ),
    (
        "instance-count",
        {"serverless": ServerlessConfig(), "initial_instance_count": 2},
        "initial_instance_count",
    ),
    ("async", {"serverless": ServerlessConfig(), "async": True}, "async_inference"),
    ("capture", {"serverless": ServerlessConfig(), "capture": True}, "data_capture"),
    ("gpu", {"serverless": ServerlessConfig(), "gpu": True}, "model.instance_type"),
    ("isolation", {"serverless": ServerlessConfig(), "isolated": True}, "model"),
    ("vpc", {"serverless": ServerlessConfig(), "vpc": True}, "model"),
    (
        "async-limit",
        {"async": True, "limit": 1001},
        "max_concurrent_invocations_per_instance",
    ),
]


@pytest.mark.parametrize(("case", "props", "named"), REFUSED, ids=[r[0] for r in REFUSED])
def test_refused_combinations(
    code: SourceCode, code_dir: Path, case: str, props: dict[str, Any], named: str
) -> None:
    stack = cdk.Stack(cdk.App(), "Refused")
    props = dict(props)
    model_props: dict[str, Any] = {}
    if props.pop("gpu", False):
        model_props["instance_type"] = "ml.g4dn.xlarge"
    if props.pop("isolated", False):
        model_props["enable_network_isolation"] = True
        model_props["model_data"] = ModelData.from_directory(code_dir)
    if props.pop("vpc", False):
        model_props["vpc"] = ec2.Vpc(stack, "Vpc", max_azs=1, nat_gateways=0)
    model = _model(stack, code, "M", **model_props)
    limit = props.pop("limit", None)
    if props.pop("async", False):
        props["async_inference"] = _async(stack, max_concurrent_invocations_per_instance=limit)
    if props.pop("capture", False):
        bucket = s3.Bucket.from_bucket_name(stack, "Cap", "capture-bucket")
        props["data_capture"] = DataCapture(bucket=bucket)
    if props.pop("key", False):
        props["kms_key"] = kms.Key.from_key_arn(stack, "K", KEY_ARN)
    with pytest.raises(ChainerValidationError, match=named):
        ChainerEndpoint(stack, "E", model=model, **props)


@pytest.mark.parametrize("given", ["kms_key", "encrypt_storage", "default"])
def test_serverless_config_takes_a_kms_key(code: SourceCode, given: str) -> None:
    """KmsKeyId is optional on a serverless endpoint config (SageMaker encrypts the model's
    image with it): https://docs.aws.amazon.com/sagemaker/latest/dg/serverless-endpoints-create-config.html
    """
    stack = cdk.Stack(cdk.App(), "ServerlessKey")
    props: dict[str, Any] = {
        "kms_key": {"kms_key": kms.Key.from_key_arn(stack, "K", KEY_ARN)},
        "encrypt_storage": {"encrypt_storage": True},
        "default": {},
    }[given]
    ChainerEndpoint(
        stack, "E", model=_model(stack, code, "M"), serverless=ServerlessConfig(), **props
    )
    template = cdk.assertions.Template.from_stack(stack).to_json()
    (config,) = resources_of_type(template, "AWS::SageMaker::EndpointConfig").values()
    key = config["Properties"]["KmsKeyId"]
    if given == "kms_key":
        assert key == KEY_ARN
    else:  # the endpoint's own key, with rotation, as for instances
        (key_id,) = resources_of_type(template, "AWS::KMS::Key")
        assert key == {"Fn::GetAtt": [key_id, "Arn"]}
    params = fill(config["Properties"])
    params["EndpointConfigName"] = "config"
    assert _validate(MODEL.operation_model("CreateEndpointConfig"), params) == []


def test_serverless_without_a_key_when_asked(code: SourceCode) -> None:
    stack = cdk.Stack(cdk.App(), "ServerlessNoKey")
    ChainerEndpoint(
        stack,
        "E",
        model=_model(stack, code, "M"),
        serverless=ServerlessConfig(),
        encrypt_storage=False,
    )
    template = cdk.assertions.Template.from_stack(stack).to_json()
    (config,) = resources_of_type(template, "AWS::SageMaker::EndpointConfig").values()
    assert "KmsKeyId" not in config["Properties"]
    assert not resources_of_type(template, "AWS::KMS::Key")


def test_serverless_refuses_several_variants_and_instance_scaling(code: SourceCode) -> None:
    stack = cdk.Stack(cdk.App(), "Variants")
    a, b = _model(stack, code, "A"), _model(stack, code, "B")
    with pytest.raises(ChainerValidationError, match="variants"):
        ChainerEndpoint(
            stack,
            "Two",
            variants=[
                EndpointVariant(model=a, serverless=ServerlessConfig()),
                EndpointVariant(model=b, variant_name="B"),
            ],
        )
    endpoint = ChainerEndpoint(stack, "One", model=a, serverless=ServerlessConfig())
    with pytest.raises(ChainerValidationError, match="serverless"):
        endpoint.scale_on_invocations(max_capacity=2, invocations_per_instance=10)
    with pytest.raises(ChainerValidationError, match="async_inference"):
        endpoint.scale_on_backlog(max_capacity=2, backlog_per_instance=1)


def test_async_invoke_grant(template: dict[str, Any]) -> None:
    """What AsyncPredictor needs: InvokeEndpointAsync, the request upload, the two results."""
    docs = [
        fill(p["Properties"]["PolicyDocument"])
        for t in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy")
        for p in resources_of_type(template, t).values()
        if "Caller" in str(p["Properties"].get("Roles"))
    ]
    endpoints = resources_of_type(template, "AWS::SageMaker::Endpoint")
    arn = fill({"Ref": next(k for k in endpoints if k.startswith("Async"))})
    assert iam_check.allows(docs, "sagemaker:InvokeEndpointAsync", arn)
    assert not iam_check.allows(docs, "sagemaker:InvokeEndpointAsync", arn + "-other")
    bucket = "arn:aws:s3:::io-bucket"
    assert iam_check.allows(docs, "s3:PutObject", f"{bucket}/async-input/r")
    assert not iam_check.allows(docs, "s3:PutObject", f"{bucket}/async-output/r")
    assert iam_check.allows(docs, "s3:GetObject", f"{bucket}/async-output/r.out")
    assert iam_check.allows(docs, "s3:GetObject", f"{bucket}/async-failures/r.out")
    assert iam_check.allows(docs, "kms:Decrypt", KEY_ARN)


def test_snapshot_and_cfn_lint(template: dict[str, Any]) -> None:
    """The whole template is visible in review (snapshot) and cfn-lint finds nothing."""
    from .test_cdk_compliance import _lint
    from .test_cdk_snapshots import _check

    _check("ServerlessAsync", template)
    findings = [
        f"{m.rule.id} {m.message} ({'/'.join(map(str, m.path))})"
        for m in _lint(template)
        if m.rule.id.startswith(("E", "W"))
    ]
    assert findings == []


def test_scaling_requests_validate_against_botocore(template: dict[str, Any]) -> None:
    """The target and both policies, as RegisterScalableTarget / PutScalingPolicy requests."""
    import botocore.session

    service = botocore.session.get_session().get_service_model("application-autoscaling")
    (target,) = resources_of_type(template, "AWS::ApplicationAutoScaling::ScalableTarget").values()
    register = fill(target["Properties"])
    assert _validate(service.operation_model("RegisterScalableTarget"), register) == []
    keys = ("ServiceNamespace", "ResourceId", "ScalableDimension")
    policies = resources_of_type(template, "AWS::ApplicationAutoScaling::ScalingPolicy").values()
    assert len(policies) == 2
    for policy in policies:
        params = fill(policy["Properties"])
        params.pop("ScalingTargetId")
        params.update({k: register[k] for k in keys})
        assert _validate(service.operation_model("PutScalingPolicy"), params) == []


def test_local_invoke_async_reads_the_configured_concurrency(
    assembly: cdk.cx_api.CloudAssembly,
) -> None:
    """`invoke-async` sends as many requests at once as the stack's async endpoint takes."""
    from chainer_sagemaker_cdk.local.async_endpoint import configured_concurrency

    out = Path(assembly.directory)
    assert configured_concurrency(out, "ServerlessAsync", "/ServerlessAsync/AModel") == 4
    assert configured_concurrency(out, "ServerlessAsync", "/ServerlessAsync/SModel") is None
