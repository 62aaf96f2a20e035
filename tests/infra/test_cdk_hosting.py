"""ChainerModel and ChainerEndpoint: every prop shows in the template."""

from __future__ import annotations

import json
import logging
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_assets as s3_assets
from aws_cdk.assertions import Match, Template

from chainer_sagemaker_cdk import (
    ChainerEndpoint,
    ChainerModel,
    DataCapture,
    EndpointVariant,
    ModelData,
    RuntimeImage,
    SourceCode,
)

IMAGE = RuntimeImage.from_registry("registry.example/chainer:cpu")
KEY_ARN = "arn:aws:kms:us-east-1:123456789012:key/11111111-2222-3333-4444-555555555555"


def _model(stack: cdk.Stack, code: SourceCode, id: str = "Model", **props: Any) -> ChainerModel:
    bucket = s3.Bucket.from_bucket_name(stack, f"{id}Bucket", "model-bucket")
    props.setdefault("image", IMAGE)
    return ChainerModel(
        stack, id, model_data=ModelData.from_bucket(bucket, "job/model.tar.gz"), code=code, **props
    )


def test_model_defaults_follow_the_contract(stack: cdk.Stack, code: SourceCode) -> None:
    _model(stack, code)
    template = Template.from_stack(stack)
    template.has_resource_properties(
        "AWS::SageMaker::Model",
        {
            "PrimaryContainer": {
                "Image": "registry.example/chainer:cpu",
                "ModelDataUrl": "s3://model-bucket/job/model.tar.gz",
                "Environment": {
                    "SAGEMAKER_PROGRAM": "train.py",
                    "SAGEMAKER_SUBMIT_DIRECTORY": Match.any_value(),
                    "SAGEMAKER_REGION": {"Ref": "AWS::Region"},
                    "SAGEMAKER_CONTAINER_LOG_LEVEL": "20",
                    "SAGEMAKER_ENABLE_CLOUDWATCH_METRICS": "false",
                },
            },
            "ExecutionRoleArn": Match.any_value(),
        },
    )
    model = next(iter(template.find_resources("AWS::SageMaker::Model").values()))
    env = model["Properties"]["PrimaryContainer"]["Environment"]
    assert "SAGEMAKER_MODEL_SERVER_WORKERS" not in env
    submit = env["SAGEMAKER_SUBMIT_DIRECTORY"]["Fn::Sub"]
    assert submit.startswith("s3://")  # SageMaker rejects https URLs for code
    for absent in ("VpcConfig", "EnableNetworkIsolation", "ModelName"):
        assert absent not in model["Properties"]


MODEL_ROWS: list[tuple[str, Any, dict[str, Any]]] = [
    (
        "model_server_workers",
        3,
        {
            "PrimaryContainer": {
                "Environment": Match.object_like({"SAGEMAKER_MODEL_SERVER_WORKERS": "3"})
            }
        },
    ),
    (
        "container_log_level",
        logging.WARNING,
        {
            "PrimaryContainer": {
                "Environment": Match.object_like({"SAGEMAKER_CONTAINER_LOG_LEVEL": "30"})
            }
        },
    ),
    (
        "environment",
        {"EXTRA": "1"},
        {"PrimaryContainer": {"Environment": Match.object_like({"EXTRA": "1"})}},
    ),
    ("model_name", "my-model", {"ModelName": "my-model"}),
    (
        "image",
        RuntimeImage.from_registry("other.example/x:1"),
        {"PrimaryContainer": Match.object_like({"Image": "other.example/x:1"})},
    ),
]


@pytest.mark.parametrize(("prop", "value", "fragment"), MODEL_ROWS, ids=[r[0] for r in MODEL_ROWS])
def test_model_prop(
    stack: cdk.Stack, code: SourceCode, prop: str, value: Any, fragment: dict[str, Any]
) -> None:
    _model(stack, code, **{prop: value})
    Template.from_stack(stack).has_resource_properties("AWS::SageMaker::Model", fragment)


def test_model_instance_type_selects_the_variant(stack: cdk.Stack, code: SourceCode) -> None:
    _model(stack, code, instance_type="p3.2xlarge", image=RuntimeImage.official("4.1", "py2"))
    text = str(Template.from_stack(stack).to_json())
    assert "sagemaker-chainer:4.1.0-gpu-py2" in text


def test_model_role_and_vpc(stack: cdk.Stack, code: SourceCode) -> None:
    role = iam.Role.from_role_arn(stack, "Role", "arn:aws:iam::123456789012:role/model")
    vpc = ec2.Vpc.from_vpc_attributes(
        stack,
        "Vpc",
        vpc_id="vpc-1",
        availability_zones=["us-east-1a"],
        private_subnet_ids=["subnet-1"],
    )
    _model(stack, code, role=role, vpc=vpc)
    template = Template.from_stack(stack)
    template.has_resource_properties(
        "AWS::SageMaker::Model",
        {
            "ExecutionRoleArn": "arn:aws:iam::123456789012:role/model",
            "VpcConfig": {"Subnets": ["subnet-1"], "SecurityGroupIds": Match.any_value()},
        },
    )
    group = next(iter(template.find_resources("AWS::EC2::SecurityGroup").values()))
    assert "SecurityGroupIngress" not in group["Properties"]  # models do not talk to each other
    template.resource_count_is("AWS::EC2::SecurityGroupIngress", 0)


def test_model_from_training_job(stack: cdk.Stack, code: SourceCode) -> None:
    ChainerModel.from_training_job(
        stack, "Attached", training_job_name="digits-2026-11-26", code=code, image=IMAGE
    )
    template = Template.from_stack(stack)
    template.has_resource_properties(
        "Custom::AWS",
        {
            "Create": Match.serialized_json(
                Match.object_like(
                    {
                        "action": "describeTrainingJob",
                        "parameters": {"TrainingJobName": "digits-2026-11-26"},
                    }
                )
            )
        },
    )
    model = next(iter(template.find_resources("AWS::SageMaker::Model").values()))
    assert "Fn::GetAtt" in str(model["Properties"]["PrimaryContainer"]["ModelDataUrl"])


def test_model_data_sources(
    stack: cdk.Stack, code: SourceCode, code_dir: Any, tmp_path: Any
) -> None:
    import tarfile

    tarball = tmp_path / "model.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(code_dir / "train.py", arcname="model.npz")
    ChainerModel(
        stack, "FromDir", model_data=ModelData.from_directory(code_dir), code=code, image=IMAGE
    )
    ChainerModel(
        stack, "FromTar", model_data=ModelData.from_tarball(tarball), code=code, image=IMAGE
    )
    models = Template.from_stack(stack).find_resources("AWS::SageMaker::Model")
    urls = [m["Properties"]["PrimaryContainer"]["ModelDataUrl"] for m in models.values()]
    assert all("Fn::Sub" in u and u["Fn::Sub"].startswith("s3://") for u in urls)


def test_endpoint_defaults(stack: cdk.Stack, code: SourceCode) -> None:
    ChainerEndpoint(stack, "Endpoint", model=_model(stack, code))
    template = Template.from_stack(stack)
    template.has_resource_properties(
        "AWS::SageMaker::EndpointConfig",
        {
            "ProductionVariants": [
                {
                    "VariantName": "AllTraffic",
                    "InstanceType": "ml.m5.large",
                    "InitialInstanceCount": 1,
                    "InitialVariantWeight": 1,
                    "ModelName": Match.any_value(),
                }
            ],
            "KmsKeyId": Match.any_value(),
        },
    )
    template.has_resource_properties("AWS::KMS::Key", {"EnableKeyRotation": True})
    template.resource_count_is("AWS::SageMaker::Endpoint", 1)


ENDPOINT_ROWS: list[tuple[str, Any, dict[str, Any]]] = [
    (
        "instance_type",
        "c5.large",
        {"ProductionVariants": [Match.object_like({"InstanceType": "ml.c5.large"})]},
    ),
    (
        "initial_instance_count",
        3,
        {"ProductionVariants": [Match.object_like({"InitialInstanceCount": 3})]},
    ),
    ("kms_key", "given", {"KmsKeyId": KEY_ARN}),
    ("encrypt_storage", False, {"KmsKeyId": Match.absent()}),
    (
        "data_capture",
        "given",
        {
            "DataCaptureConfig": {
                "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
                "DestinationS3Uri": "s3://capture-bucket/data-capture",
                "EnableCapture": True,
                "InitialSamplingPercentage": 100,
            }
        },
    ),
]


@pytest.mark.parametrize(
    ("prop", "value", "fragment"), ENDPOINT_ROWS, ids=[r[0] for r in ENDPOINT_ROWS]
)
def test_endpoint_prop(
    stack: cdk.Stack, code: SourceCode, prop: str, value: Any, fragment: dict[str, Any]
) -> None:
    if prop == "kms_key":
        value = kms.Key.from_key_arn(stack, "Key", KEY_ARN)
    if prop == "data_capture":
        value = DataCapture(bucket=s3.Bucket.from_bucket_name(stack, "Cap", "capture-bucket"))
    ChainerEndpoint(stack, "Endpoint", model=_model(stack, code), **{prop: value})
    Template.from_stack(stack).has_resource_properties("AWS::SageMaker::EndpointConfig", fragment)


def test_endpoint_name_and_variants(stack: cdk.Stack, code: SourceCode) -> None:
    ChainerEndpoint(
        stack,
        "Endpoint",
        endpoint_name="my-endpoint",
        variants=[
            EndpointVariant(model=_model(stack, code, "A"), initial_weight=9),
            EndpointVariant(
                model=_model(stack, code, "B"),
                variant_name="Canary",
                instance_type="ml.c5.xlarge",
                initial_weight=1,
            ),
        ],
    )
    template = Template.from_stack(stack)
    template.has_resource_properties("AWS::SageMaker::Endpoint", {"EndpointName": "my-endpoint"})
    template.has_resource_properties(
        "AWS::SageMaker::EndpointConfig",
        {
            "ProductionVariants": [
                Match.object_like({"VariantName": "AllTraffic", "InitialVariantWeight": 9}),
                Match.object_like({"VariantName": "Canary", "InstanceType": "ml.c5.xlarge"}),
            ]
        },
    )


def test_autoscaling_grant_invoke_and_metrics(stack: cdk.Stack, code: SourceCode) -> None:
    endpoint = ChainerEndpoint(stack, "Endpoint", model=_model(stack, code))
    endpoint.scale_on_invocations(min_capacity=1, max_capacity=4, invocations_per_instance=500)
    caller = iam.Role(stack, "Caller", assumed_by=iam.AccountRootPrincipal())
    endpoint.grant_invoke(caller)
    template = Template.from_stack(stack)
    template.has_resource_properties(
        "AWS::ApplicationAutoScaling::ScalableTarget",
        {
            "ServiceNamespace": "sagemaker",
            "MinCapacity": 1,
            "MaxCapacity": 4,
            "ScalableDimension": "sagemaker:variant:DesiredInstanceCount",
            "ResourceId": {
                "Fn::Join": ["", ["endpoint/", Match.any_value(), "/variant/AllTraffic"]]
            },
        },
    )
    template.has_resource_properties(
        "AWS::ApplicationAutoScaling::ScalingPolicy",
        {
            "TargetTrackingScalingPolicyConfiguration": {
                "TargetValue": 500,
                "PredefinedMetricSpecification": {
                    "PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"
                },
            }
        },
    )
    template.has_resource_properties(
        "AWS::IAM::Policy",
        {
            "PolicyDocument": {
                "Statement": [Match.object_like({"Action": "sagemaker:InvokeEndpoint"})]
            }
        },
    )
    metric = endpoint.metric_invocations()
    assert (metric.namespace, metric.metric_name, metric.statistic) == (
        "AWS/SageMaker",
        "Invocations",
        "Sum",
    )
    assert set(metric.dimensions or {}) == {"EndpointName", "VariantName"}
    assert endpoint.metric_model_latency().metric_name == "ModelLatency"
    assert endpoint.metric_invocation_5xx_errors().metric_name == "Invocation5XXErrors"
    assert endpoint.metric_invocation_4xx_errors().metric_name == "Invocation4XXErrors"
    assert endpoint.metric_cpu_utilization().namespace == "/aws/sagemaker/Endpoints"


def test_isolated_model_carries_its_code(
    stack: cdk.Stack, code: SourceCode, tmp_path: Path
) -> None:
    """As the SageMaker SDK repacks it: code under code/ in model.tar.gz, read from there."""
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "model.npz").write_bytes(b"weights")
    ChainerModel(
        stack,
        "Isolated",
        model_data=ModelData.from_directory(model_dir),
        code=code,
        image=IMAGE,
        enable_network_isolation=True,
    )
    template = Template.from_stack(stack)
    template.has_resource_properties(
        "AWS::SageMaker::Model",
        {
            "EnableNetworkIsolation": True,
            "PrimaryContainer": Match.object_like(
                {
                    "Environment": Match.object_like(
                        {"SAGEMAKER_SUBMIT_DIRECTORY": "/opt/ml/model/code"}
                    )
                }
            ),
        },
    )
    (asset,) = [c for c in stack.node.children if isinstance(c, s3_assets.Asset)]
    digest = asset.node.id.removeprefix("ChainerModelData")  # staged under its content hash
    (archive,) = (Path(tempfile.gettempdir()) / "chainer-sagemaker-cdk").glob(
        f"{digest}*/model.tar.gz"
    )
    with tarfile.open(archive) as tar:
        assert sorted(tar.getnames()) == [
            "code",
            "code/requirements.txt",
            "code/train.py",
            "model.npz",
        ]


def test_model_security_groups(stack: cdk.Stack, code: SourceCode) -> None:
    vpc = ec2.Vpc.from_vpc_attributes(
        stack,
        "Vpc",
        vpc_id="vpc-1",
        availability_zones=["us-east-1a"],
        private_subnet_ids=["subnet-1"],
    )
    group = ec2.SecurityGroup.from_security_group_id(stack, "Sg", "sg-model")
    _model(
        stack,
        code,
        vpc=vpc,
        security_groups=[group],
        vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS),
    )
    template = Template.from_stack(stack)
    template.has_resource_properties(
        "AWS::SageMaker::Model",
        {"VpcConfig": {"Subnets": ["subnet-1"], "SecurityGroupIds": ["sg-model"]}},
    )
    template.resource_count_is("AWS::EC2::SecurityGroup", 0)
    assert "ec2:CreateNetworkInterface" in json.dumps(template.to_json())


def test_variant_on_another_kind_of_instance_warns(stack: cdk.Stack, code: SourceCode) -> None:
    ChainerEndpoint(stack, "Endpoint", model=_model(stack, code), instance_type="ml.p3.2xlarge")
    warnings = cdk.assertions.Annotations.from_stack(stack).find_warning(
        "*", Match.string_like_regexp("image was chosen for ml.m5.large")
    )
    assert len(warnings) == 1
