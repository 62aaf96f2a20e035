"""Every prop changes the synthesized template: (prop, value, where, expected fragment)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3

from chainer_sagemaker_cdk import (
    ChainerEstimator,
    InputMode,
    RuntimeImage,
    SourceCode,
    TrainingInput,
    TrainingPipeline,
)

from . import iam_check
from .render import fill, resources_of_type, state_machine_definition

Fixture = Callable[[cdk.Stack], Any]


def _bucket(stack: cdk.Stack) -> s3.IBucket:
    return s3.Bucket.from_bucket_name(stack, "Given", "given-bucket")


def _key(stack: cdk.Stack) -> kms.IKey:
    return kms.Key.from_key_arn(
        stack,
        "GivenKey",
        "arn:aws:kms:us-east-1:123456789012:key/11111111-2222-3333-4444-555555555555",
    )


def _vpc(stack: cdk.Stack) -> ec2.IVpc:
    return ec2.Vpc.from_vpc_attributes(
        stack,
        "Vpc",
        vpc_id="vpc-1",
        availability_zones=["us-east-1a"],
        private_subnet_ids=["subnet-1"],
    )


KEY_ARN = "arn:aws:kms:us-east-1:123456789012:key/11111111-2222-3333-4444-555555555555"

# (prop, value factory, path in the Train state's Parameters or in the definition, expected)
ESTIMATOR_ROWS: list[tuple[str, Fixture, tuple[str, ...], Any]] = [
    ("instance_type", lambda s: "p3.2xlarge", ("ResourceConfig", "InstanceType"), "ml.p3.2xlarge"),
    (
        "instance_type",
        lambda s: "ml.p3.2xlarge",
        ("ResourceConfig", "InstanceType"),
        "ml.p3.2xlarge",
    ),
    ("instance_count", lambda s: 3, ("ResourceConfig", "InstanceCount"), 3),
    (
        "input_mode",
        lambda s: InputMode.PIPE,
        ("AlgorithmSpecification", "TrainingInputMode"),
        "Pipe",
    ),
    (
        "image",
        lambda s: RuntimeImage.from_registry("registry.example/x:2"),
        ("AlgorithmSpecification", "TrainingImage"),
        "registry.example/x:2",
    ),
    ("output_bucket", _bucket, ("OutputDataConfig", "S3OutputPath"), "s3://given-bucket/models"),
    (
        "output_prefix",
        lambda s: "out/put/",
        ("OutputDataConfig", "S3OutputPath"),
        "s3://{bucket}/out/put",
    ),
    ("output_kms_key", _key, ("OutputDataConfig", "KmsKeyId"), KEY_ARN),
    ("volume_size", lambda s: cdk.Size.gibibytes(50), ("ResourceConfig", "VolumeSizeInGB"), 50),
    ("volume_kms_key", _key, ("ResourceConfig", "VolumeKmsKeyId"), KEY_ARN),
    (
        "max_run",
        lambda s: cdk.Duration.hours(2),
        ("StoppingCondition",),
        {"MaxRuntimeInSeconds": 7200},
    ),
    ("use_spot_instances", lambda s: True, ("EnableManagedSpotTraining",), True),
    (
        "use_spot_instances",
        lambda s: True,
        ("StoppingCondition", "MaxWaitTimeInSeconds"),
        172800,
    ),  # twice max_run
    (
        "checkpoint_bucket",
        _bucket,
        ("CheckpointConfig",),
        {"S3Uri": "s3://given-bucket/checkpoints", "LocalPath": "/opt/ml/checkpoints"},
    ),
    (
        "encrypt_inter_container_traffic",
        lambda s: True,
        ("EnableInterContainerTrafficEncryption",),
        True,
    ),
    ("enable_network_isolation", lambda s: True, ("EnableNetworkIsolation",), True),
    (
        "metric_definitions",
        lambda s: {"loss": "loss=([0-9.]+)"},
        ("AlgorithmSpecification", "MetricDefinitions"),
        [{"Name": "loss", "Regex": "loss=([0-9.]+)"}],
    ),
    ("environment", lambda s: {"A": "1"}, ("Environment",), {"A": "1"}),
    ("tags", lambda s: {"team": "ml"}, ("Tags",), [{"Key": "team", "Value": "ml"}]),
    ("max_retry_attempts", lambda s: 2, ("RetryStrategy",), {"MaximumRetryAttempts": 2}),
    (
        "role",
        lambda s: iam.Role.from_role_arn(s, "R", "arn:aws:iam::123456789012:role/given"),
        ("RoleArn",),
        "arn:aws:iam::123456789012:role/given",
    ),
    ("vpc", _vpc, ("VpcConfig", "Subnets"), ["subnet-1"]),
    (
        "channels",
        lambda s: {"train": TrainingInput(bucket=_bucket(s), key_prefix="d/train")},
        ("InputDataConfig",),
        [
            {
                "ChannelName": "train",
                "DataSource": {
                    "S3DataSource": {
                        "S3DataType": "S3Prefix",
                        "S3DataDistributionType": "FullyReplicated",
                        "S3Uri.$": "$.config.Channels.train",
                    }
                },
            }
        ],
    ),
]

# Props that land in the pipeline's prepare states: (prop, value, state, path, expected)
RESERVED_ROWS: list[tuple[str, Any, str, Any]] = [
    ("container_log_level", logging.DEBUG, "sagemaker_container_log_level", "10"),
    ("use_mpi", True, "sagemaker_use_mpi", "true"),
    ("num_processes", 8, "sagemaker_num_processes", "8"),
    ("process_slots_per_host", 4, "sagemaker_process_slots_per_host", "4"),
    ("additional_mpi_options", "-x A=1", "sagemaker_additional_mpi_options", '"-x A=1"'),
]


def _dig(data: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        data = data[part]
    return data


def _pipeline(
    stack: cdk.Stack,
    code: SourceCode,
    default_image: RuntimeImage,
    deploy: bool = False,
    pipeline_props: dict[str, Any] | None = None,
    **props: Any,
) -> dict[str, Any]:
    props.setdefault("image", default_image)
    estimator = ChainerEstimator(stack, "Estimator", code=code, **props)
    TrainingPipeline(
        stack, "Pipeline", estimator=estimator, deploy=deploy, **(pipeline_props or {})
    )
    return cdk.assertions.Template.from_stack(stack).to_json()  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("prop", "factory", "path", "expected"),
    ESTIMATOR_ROWS,
    ids=[f"{r[0]}-{i}" for i, r in enumerate(ESTIMATOR_ROWS)],
)
def test_estimator_prop(
    stack: cdk.Stack,
    code: SourceCode,
    registry_image: RuntimeImage,
    prop: str,
    factory: Fixture,
    path: tuple[str, ...],
    expected: Any,
) -> None:
    template = _pipeline(stack, code, registry_image, **{prop: factory(stack)})
    train = state_machine_definition(template)["States"]["Train"]["Parameters"]
    if isinstance(expected, str) and "{bucket}" in expected:
        (bucket_id,) = resources_of_type(template, "AWS::S3::Bucket")
        expected = expected.format(bucket=fill({"Ref": bucket_id}))
    assert _dig(train, path) == expected


def test_estimator_prop_defaults(
    stack: cdk.Stack, code: SourceCode, registry_image: RuntimeImage
) -> None:
    train = state_machine_definition(_pipeline(stack, code, registry_image))["States"]["Train"]
    params = train["Parameters"]
    assert params["ResourceConfig"] == {
        "InstanceType": "ml.m5.xlarge",
        "InstanceCount": 1,
        "VolumeSizeInGB": 30,
    }
    assert params["StoppingCondition"] == {"MaxRuntimeInSeconds": 86400}
    for absent in (
        "VpcConfig",
        "CheckpointConfig",
        "Environment",
        "RetryStrategy",
        "InputDataConfig",
    ):
        assert absent not in params
    assert train["Resource"] == "arn:aws:states:::sagemaker:createTrainingJob.sync"


@pytest.mark.parametrize(("prop", "value", "key", "expected"), RESERVED_ROWS)
def test_reserved_hyperparameter_prop(
    stack: cdk.Stack,
    code: SourceCode,
    registry_image: RuntimeImage,
    prop: str,
    value: Any,
    key: str,
    expected: str,
) -> None:
    definition = state_machine_definition(_pipeline(stack, code, registry_image, **{prop: value}))
    config = definition["States"]["ResolveConfig"]["Parameters"]["config"]
    assert config["ReservedHyperparameters"][key] == expected


def test_hyperparameters_and_base_job_name(
    stack: cdk.Stack, code: SourceCode, registry_image: RuntimeImage
) -> None:
    definition = state_machine_definition(
        _pipeline(
            stack,
            code,
            registry_image,
            hyperparameters={"lr": 0.1, "opt": "sgd"},
            base_job_name="my-job",
        )
    )
    defaults = definition["States"]["Defaults"]["Parameters"]["defaults"]
    assert defaults["Hyperparameters"] == {"lr": "0.1", "opt": '"sgd"'}
    assert defaults["TrainingJobName.$"] == "States.Format('{}--{}', 'my-job', States.UUID())"


def test_checkpoint_prefix_and_local_path(
    stack: cdk.Stack, code: SourceCode, registry_image: RuntimeImage
) -> None:
    definition = state_machine_definition(
        _pipeline(
            stack,
            code,
            registry_image,
            checkpoint_bucket=_bucket(stack),
            checkpoint_prefix="ck",
            checkpoint_local_path="/opt/ml/ck",
        )
    )
    assert definition["States"]["Train"]["Parameters"]["CheckpointConfig"] == {
        "S3Uri": "s3://given-bucket/ck",
        "LocalPath": "/opt/ml/ck",
    }


def test_max_wait_and_vpc_groups(
    stack: cdk.Stack, code: SourceCode, registry_image: RuntimeImage
) -> None:
    group = ec2.SecurityGroup.from_security_group_id(stack, "Sg", "sg-123")
    definition = state_machine_definition(
        _pipeline(
            stack,
            code,
            registry_image,
            use_spot_instances=True,
            max_wait=cdk.Duration.hours(30),
            vpc=_vpc(stack),
            vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS),
            security_groups=[group],
        )
    )
    params = definition["States"]["Train"]["Parameters"]
    assert params["StoppingCondition"]["MaxWaitTimeInSeconds"] == 108000
    assert params["VpcConfig"] == {"SecurityGroupIds": ["sg-123"], "Subnets": ["subnet-1"]}


def test_channel_options(stack: cdk.Stack, code: SourceCode, registry_image: RuntimeImage) -> None:
    from chainer_sagemaker_cdk import Compression, DataDistribution, RecordWrapper

    channel = TrainingInput(
        bucket=_bucket(stack),
        key_prefix="x",
        content_type="text/csv",
        distribution=DataDistribution.SHARDED_BY_S3_KEY,
        compression=Compression.GZIP,
        input_mode=InputMode.FAST_FILE,
        record_wrapper=RecordWrapper.RECORD_IO,
    )
    definition = state_machine_definition(
        _pipeline(stack, code, registry_image, channels={"my-data": channel})
    )
    (rendered,) = definition["States"]["Train"]["Parameters"]["InputDataConfig"]
    assert rendered["ContentType"] == "text/csv"
    assert rendered["CompressionType"] == "Gzip"
    assert rendered["InputMode"] == "FastFile"
    assert rendered["RecordWrapperType"] == "RecordIO"
    assert rendered["DataSource"]["S3DataSource"]["S3DataDistributionType"] == "ShardedByS3Key"
    assert rendered["DataSource"]["S3DataSource"]["S3Uri.$"] == "$.config.Channels['my-data']"
    defaults = definition["States"]["Defaults"]["Parameters"]["defaults"]
    assert defaults["Channels"] == {"my-data": "s3://given-bucket/x"}


# -- pipeline props ------------------------------------------------------------------------------
def _deployed(
    stack: cdk.Stack, code: SourceCode, image: RuntimeImage, **pipeline_props: Any
) -> dict[str, Any]:
    deploy = pipeline_props.pop("deploy", True)
    return _pipeline(stack, code, image, deploy=deploy, pipeline_props=pipeline_props)


PIPELINE_ROWS: list[tuple[str, Fixture, Callable[[dict[str, Any], dict[str, Any]], Any], Any]] = [
    (
        "endpoint_name",
        lambda s: "my-endpoint",
        lambda d, t: d["States"]["CreateEndpoint"]["Parameters"]["EndpointName"],
        "my-endpoint",
    ),
    (
        "endpoint_instance_type",
        lambda s: "c5.2xlarge",
        lambda d, t: d["States"]["CreateEndpointConfig"]["Parameters"]["ProductionVariants"][0][
            "InstanceType"
        ],
        "ml.c5.2xlarge",
    ),
    (
        "endpoint_instance_count",
        lambda s: 3,
        lambda d, t: d["States"]["CreateEndpointConfig"]["Parameters"]["ProductionVariants"][0][
            "InitialInstanceCount"
        ],
        3,
    ),
    (
        "endpoint_kms_key",
        _key,
        lambda d, t: d["States"]["CreateEndpointConfig"]["Parameters"]["KmsKeyId"],
        KEY_ARN,
    ),
    (
        "encrypt_endpoint_storage",
        lambda s: False,
        lambda d, t: "KmsKeyId" in d["States"]["CreateEndpointConfig"]["Parameters"],
        False,
    ),
    (
        "model_server_workers",
        lambda s: 4,
        lambda d, t: d["States"]["CreateModel"]["Parameters"]["PrimaryContainer"]["Environment"][
            "SAGEMAKER_MODEL_SERVER_WORKERS"
        ],
        "4",
    ),
    (
        "model_environment_variables",
        lambda s: {"SAGEMAKER_MODEL_SERVER_TIMEOUT": "90"},
        lambda d, t: d["States"]["CreateModel"]["Parameters"]["PrimaryContainer"]["Environment"][
            "SAGEMAKER_MODEL_SERVER_TIMEOUT"
        ],
        "90",
    ),
    (
        "poll_interval",
        lambda s: cdk.Duration.minutes(2),
        lambda d, t: d["States"]["WaitForEndpoint"]["Seconds"],
        120,
    ),
    ("timeout", lambda s: cdk.Duration.hours(5), lambda d, t: d["TimeoutSeconds"], 18000),
    (
        "state_machine_name",
        lambda s: "my-pipeline",
        lambda d, t: next(iter(resources_of_type(t, "AWS::StepFunctions::StateMachine").values()))[
            "Properties"
        ]["StateMachineName"],
        "my-pipeline",
    ),
    (
        "log_retention",
        lambda s: logs.RetentionDays.ONE_MONTH,
        lambda d, t: next(iter(resources_of_type(t, "AWS::Logs::LogGroup").values()))["Properties"][
            "RetentionInDays"
        ],
        30,
    ),
    (
        "logs_kms_key",
        _key,
        lambda d, t: next(iter(resources_of_type(t, "AWS::Logs::LogGroup").values()))["Properties"][
            "KmsKeyId"
        ],
        KEY_ARN,
    ),
    (
        "role",
        lambda s: iam.Role.from_role_arn(s, "SmRole", "arn:aws:iam::123456789012:role/sm"),
        lambda d, t: next(iter(resources_of_type(t, "AWS::StepFunctions::StateMachine").values()))[
            "Properties"
        ]["RoleArn"],
        "arn:aws:iam::123456789012:role/sm",
    ),
    (
        "deploy",
        lambda s: False,
        # Training only: no model, endpoint config or endpoint states.
        lambda d, t: (
            [s for s in d["States"] if "Endpoint" in s or "Model" in s] + ["Train" in d["States"]]
        ),
        [True],
    ),
]


@pytest.mark.parametrize(
    ("prop", "factory", "extract", "expected"), PIPELINE_ROWS, ids=[r[0] for r in PIPELINE_ROWS]
)
def test_pipeline_prop(
    stack: cdk.Stack,
    code: SourceCode,
    registry_image: RuntimeImage,
    prop: str,
    factory: Fixture,
    extract: Callable[[dict[str, Any], dict[str, Any]], Any],
    expected: Any,
) -> None:
    template = _deployed(stack, code, registry_image, **{prop: factory(stack)})
    assert extract(state_machine_definition(template), template) == expected


def test_pipeline_defaults(
    stack: cdk.Stack, code: SourceCode, registry_image: RuntimeImage
) -> None:
    template = _deployed(stack, code, registry_image)
    definition = state_machine_definition(template)
    states = definition["States"]
    variant = states["CreateEndpointConfig"]["Parameters"]["ProductionVariants"][0]
    assert variant["InstanceType"] == "ml.m5.large"
    assert variant["InitialInstanceCount"] == 1
    assert states["CreateEndpointConfig"]["Parameters"]["KmsKeyId"].startswith("arn:")
    assert states["WaitForEndpoint"]["Seconds"] == 30
    assert definition["TimeoutSeconds"] == 86400 + 7200
    (machine,) = resources_of_type(template, "AWS::StepFunctions::StateMachine").values()
    props = machine["Properties"]
    assert props["TracingConfiguration"] == {"Enabled": True}
    assert props["LoggingConfiguration"]["Level"] == "ALL"
    assert props["LoggingConfiguration"]["IncludeExecutionData"] is True
    (group,) = resources_of_type(template, "AWS::Logs::LogGroup").values()
    assert group["Properties"]["RetentionInDays"] == 365
    assert "KmsKeyId" in group["Properties"]


def test_isolated_training_gets_its_code_as_a_channel(
    stack: cdk.Stack, code: SourceCode, registry_image: RuntimeImage
) -> None:
    """The SDK's layout: a "code" channel and sagemaker_submit_directory inside it."""
    definition = state_machine_definition(
        _pipeline(
            stack,
            code,
            registry_image,
            enable_network_isolation=True,
            channels={"train": TrainingInput(bucket=_bucket(stack), key_prefix="t")},
        )
    )
    channels = definition["States"]["Train"]["Parameters"]["InputDataConfig"]
    assert [c["ChannelName"] for c in channels] == ["train", "code"]
    assert channels[1]["DataSource"]["S3DataSource"]["S3Uri"].startswith("s3://")
    reserved = definition["States"]["ResolveConfig"]["Parameters"]["config"][
        "ReservedHyperparameters"
    ]
    code_url = channels[1]["DataSource"]["S3DataSource"]["S3Uri"]
    # the runtime finds the archive in the channel under its S3 file name, a .tgz
    assert code_url.endswith(".tgz")
    assert reserved["sagemaker_submit_directory"] == (
        f'"/opt/ml/input/data/code/{code_url.rsplit("/", 1)[-1]}"'
    )


def test_isolate_model(stack: cdk.Stack, code: SourceCode, registry_image: RuntimeImage) -> None:
    definition = state_machine_definition(
        _pipeline(stack, code, registry_image, deploy=True, pipeline_props={"isolate_model": True})
    )
    model = definition["States"]["CreateModel"]["Parameters"]
    assert model["EnableNetworkIsolation"] is True
    assert model["PrimaryContainer"]["Environment"]["SAGEMAKER_SUBMIT_DIRECTORY"] == (
        "/opt/ml/model/code"
    )


def test_extra_request_fields(
    stack: cdk.Stack, code: SourceCode, registry_image: RuntimeImage
) -> None:
    tensorboard = {"S3OutputPath": "s3://given-bucket/tb", "LocalPath": "/opt/ml/output/tb"}
    definition = state_machine_definition(
        _pipeline(
            stack,
            code,
            registry_image,
            extra_request_fields={"TensorBoardOutputConfig": tensorboard},
        )
    )
    assert definition["States"]["Train"]["Parameters"]["TensorBoardOutputConfig"] == tensorboard


def test_mpi_defaults_follow_the_gpus(
    stack: cdk.Stack, code: SourceCode, registry_image: RuntimeImage
) -> None:
    gpu = ChainerEstimator(
        stack,
        "Gpu",
        code=code,
        image=registry_image,
        instance_type="ml.p3.8xlarge",
        instance_count=2,
    )
    cpu = ChainerEstimator(
        stack,
        "Cpu",
        code=code,
        image=registry_image,
        instance_type="ml.c5.xlarge",
        instance_count=3,
    )
    assert (gpu.gpus_per_instance, gpu.mpi_slots_per_host, gpu.mpi_num_processes) == (4, 4, 8)
    assert (cpu.gpus_per_instance, cpu.mpi_slots_per_host, cpu.mpi_num_processes) == (0, 1, 3)
    # not sent: the SDK leaves unset MPI options out, and the runtime computes the same
    assert "sagemaker_process_slots_per_host" not in gpu.reserved_hyperparameters(None)


def test_more_slots_than_gpus_warns(
    stack: cdk.Stack, code: SourceCode, registry_image: RuntimeImage
) -> None:
    ChainerEstimator(
        stack,
        "Gpu",
        code=code,
        image=registry_image,
        instance_type="ml.p3.2xlarge",
        process_slots_per_host=4,
    )
    warnings = cdk.assertions.Annotations.from_stack(stack).find_warning(
        "*", cdk.assertions.Match.string_like_regexp("exceeds the 1 GPU")
    )
    assert len(warnings) == 1


def test_vpc_subnets_select_subnets(
    stack: cdk.Stack, code: SourceCode, registry_image: RuntimeImage
) -> None:
    vpc = ec2.Vpc.from_vpc_attributes(
        stack,
        "Vpc2",
        vpc_id="vpc-2",
        availability_zones=["us-east-1a"],
        private_subnet_ids=["subnet-private"],
        isolated_subnet_ids=["subnet-isolated"],
    )
    definition = state_machine_definition(
        _pipeline(
            stack,
            code,
            registry_image,
            vpc=vpc,
            vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_ISOLATED),
        )
    )
    assert definition["States"]["Train"]["Parameters"]["VpcConfig"]["Subnets"] == [
        "subnet-isolated"
    ]


def test_grant_read_input(stack: cdk.Stack, code: SourceCode, registry_image: RuntimeImage) -> None:
    estimator = ChainerEstimator(stack, "Estimator", code=code, image=registry_image)
    estimator.grant_read_input(_bucket(stack), "extra/data")
    template = cdk.assertions.Template.from_stack(stack).to_json()
    (role,) = [k for k in template["Resources"] if k.startswith("EstimatorExecutionRole")]
    documents = iam_check.role_policies(template, role)
    bucket = "arn:aws:s3:::given-bucket"
    assert iam_check.allows(documents, "s3:ListBucket", bucket, {"s3:prefix": "extra/data/x"})
    assert iam_check.allows(documents, "s3:GetObject", f"{bucket}/extra/data/x")
    assert not iam_check.allows(documents, "s3:ListBucket", bucket, {"s3:prefix": "extra/other"})
    assert not iam_check.allows(documents, "s3:GetObject", f"{bucket}/extra/other")
