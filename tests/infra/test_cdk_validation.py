"""Bad props fail at synth, in the user's words: the prop, the bad value and the fix."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_s3 as s3

from chainer_sagemaker_cdk import (
    ChainerEndpoint,
    ChainerEstimator,
    ChainerModel,
    ChainerValidationError,
    DataCapture,
    EndpointVariant,
    ModelData,
    RuntimeImage,
    SourceCode,
    TrainingInput,
    TrainingPipeline,
)

IMAGE = RuntimeImage.from_registry("registry.example/chainer:1")


def _estimator(stack: cdk.Stack, code: SourceCode, **props: Any) -> ChainerEstimator:
    props.setdefault("image", IMAGE)
    return ChainerEstimator(stack, "Estimator", code=code, **props)


ESTIMATOR_CASES: list[tuple[dict[str, Any], str, str, str]] = [
    ({"instance_type": "m5"}, "instance_type", "'m5'", "ml.m5.xlarge"),
    ({"instance_type": "ml.ml.m5.xlarge"}, "instance_type", "ml.ml.", "ml.p3.2xlarge"),
    ({"instance_count": 0}, "instance_count", "0", "1 or more"),
    ({"volume_size": cdk.Size.gibibytes(0)}, "volume_size", "0 GiB", "Size.gibibytes(1)"),
    ({"max_run": cdk.Duration.days(29)}, "max_run", "2505600 s", "Duration.days(28)"),
    ({"max_wait": cdk.Duration.hours(1)}, "max_wait", "1 hour", "use_spot_instances=True"),
    (
        {"use_spot_instances": True, "max_wait": cdk.Duration.hours(1)},
        "max_wait",
        "3600 s",
        "at least max_run",
    ),
    (
        {"checkpoint_local_path": "/opt/ml/c"},
        "checkpoint_local_path",
        "/opt/ml/c",
        "checkpoint_bucket",
    ),
    ({"base_job_name": "x" * 26}, "base_job_name", "x" * 26, "at most 25"),
    ({"base_job_name": "bad_name"}, "base_job_name", "bad_name", "hyphens"),
    (
        {"hyperparameters": {"sagemaker_program": "x.py"}},
        "hyperparameters",
        "sagemaker_program",
        "use_mpi",
    ),
    ({"container_log_level": 7}, "container_log_level", "7", "logging.INFO"),
    ({"metric_definitions": {"loss": ""}}, "metric_definitions", "loss", "500 characters"),
    ({"environment": {"1X": "y"}}, "environment", "1X", "letters, digits and _"),
    ({"num_processes": -1}, "num_processes", "-1", "0 or more"),
    ({"process_slots_per_host": -1}, "process_slots_per_host", "-1", "0 or more"),
    ({"max_retry_attempts": 0}, "max_retry_attempts", "0", "1 or more"),
    ({"vpc_subnets": ec2.SubnetSelection()}, "vpc_subnets", "given", "also give vpc"),
    (
        {"extra_request_fields": {"TensorBoard": {}}},
        "extra_request_fields",
        "TensorBoard",
        "TensorBoardOutputConfig",
    ),
    (
        {"extra_request_fields": {"RoleArn": "x"}},
        "extra_request_fields",
        "RoleArn",
        "set by the estimator's props",
    ),
    (
        {
            "enable_network_isolation": True,
            "channels": {
                "code": TrainingInput(
                    bucket=s3.Bucket.from_bucket_name(cdk.Stack(), "C", "code-bucket")
                )
            },
        },
        "channels",
        "code",
        "rename yours",
    ),
]


@pytest.mark.parametrize(
    ("props", "prop", "value", "fix"),
    ESTIMATOR_CASES,
    ids=[c[1] + f"-{i}" for i, c in enumerate(ESTIMATOR_CASES)],
)
def test_estimator_errors(
    stack: cdk.Stack, code: SourceCode, props: dict[str, Any], prop: str, value: str, fix: str
) -> None:
    with pytest.raises(ChainerValidationError) as caught:
        _estimator(stack, code, **props)
    _check(caught.value, prop, value, fix)


def _check(error: ChainerValidationError, prop: str, value: str, fix: str) -> None:
    message = str(error)
    assert error.prop == prop
    assert message.startswith(f"{prop}=")
    assert value in message
    assert fix in message


def test_isolated_code_must_be_a_tarball(stack: cdk.Stack) -> None:
    bucket = s3.Bucket.from_bucket_name(stack, "Code", "code-bucket")
    with pytest.raises(ChainerValidationError) as caught:
        ChainerEstimator(
            stack,
            "E",
            code=SourceCode.from_bucket(bucket, "src/code.zip", "t.py"),
            image=IMAGE,
            enable_network_isolation=True,
        )
    _check(caught.value, "code", "code.zip", ".tar.gz or .tgz")


def test_channel_name(stack: cdk.Stack, code: SourceCode) -> None:
    bucket = s3.Bucket.from_bucket_name(stack, "B", "bucket-b")
    with pytest.raises(ChainerValidationError) as caught:
        _estimator(stack, code, channels={"bad name": TrainingInput(bucket=bucket)})
    _check(caught.value, "channels", "bad name", "1-64 letters")


def test_unresolved_tokens_are_not_checked(stack: cdk.Stack, code: SourceCode) -> None:
    count = cdk.CfnParameter(stack, "Count", type="Number").value_as_number
    kind = cdk.CfnParameter(stack, "Kind").value_as_string
    estimator = _estimator(stack, code, instance_count=count, instance_type=kind)
    assert cdk.Token.is_unresolved(estimator.instance_type)


SOURCE_CASES: list[tuple[Callable[[Path], Any], str, str, str]] = [
    (
        lambda d: SourceCode.from_directory(d / "missing", "train.py"),
        "source_dir",
        "missing",
        "existing directory",
    ),
    (lambda d: SourceCode.from_directory(d, "nope.py"), "entry_point", "nope.py", "create"),
    (
        lambda d: SourceCode.from_directory(d, "/abs/train.py"),
        "entry_point",
        "/abs/train.py",
        "relative",
    ),
    (
        lambda d: SourceCode.from_directory(d, "train.py", [d / "nodep"]),
        "dependencies",
        "nodep",
        "existing directories",
    ),
    (lambda d: SourceCode.from_tarball(d / "train.py", "train.py"), "path", "train.py", ".tar.gz"),
    (
        lambda d: ModelData.from_s3_url("https://bucket/model.tar.gz"),
        "model_data",
        "https://",
        "s3://my-bucket",
    ),
    (
        lambda d: ModelData.from_training_job("bad name"),
        "training_job_name",
        "bad name",
        "existing SageMaker training job",
    ),
    (lambda d: ModelData.from_directory(d / "missing"), "directory", "missing", "existing"),
    (lambda d: RuntimeImage.official("6.0.0"), "framework_version", "6.0.0", "4.0.0, 4.1.0, 5.0.0"),
    (lambda d: RuntimeImage.official("5"), "framework_version", "'5'", "4.0.0, 4.1.0, 5.0.0"),
    (lambda d: RuntimeImage.official("5.0", "py4"), "py_version", "py4", "py2 or py3"),
    (
        lambda d: RuntimeImage.from_asset(build_args={"VARIANT": "gpu"}),
        "build_args",
        "VARIANT",
        "follows the instance type",
    ),
    (lambda d: RuntimeImage.from_registry(""), "image_uri", "''", "full image URI"),
]


@pytest.mark.parametrize(
    ("build", "prop", "value", "fix"),
    SOURCE_CASES,
    ids=[c[1] + f"-{i}" for i, c in enumerate(SOURCE_CASES)],
)
def test_source_and_image_errors(
    code_dir: Path, build: Callable[[Path], Any], prop: str, value: str, fix: str
) -> None:
    with pytest.raises(ChainerValidationError) as caught:
        build(code_dir)
    _check(caught.value, prop, value, fix)


def test_asset_image_without_dockerfile(stack: cdk.Stack, code: SourceCode, tmp_path: Path) -> None:
    with pytest.raises(ChainerValidationError) as caught:
        _estimator(stack, code, image=RuntimeImage.from_asset(tmp_path))
    _check(caught.value, "directory", str(tmp_path), "from_registry")


def _model(stack: cdk.Stack, code: SourceCode, id: str = "Model", **props: Any) -> ChainerModel:
    bucket = s3.Bucket.from_bucket_name(stack, f"{id}Data", "data-bucket")
    return ChainerModel(
        stack,
        id,
        model_data=ModelData.from_bucket(bucket, "m/model.tar.gz"),
        code=code,
        image=IMAGE,
        **props,
    )


HOSTING_CASES: list[tuple[Callable[[cdk.Stack, SourceCode], Any], str, str, str]] = [
    (lambda s, c: _model(s, c, model_server_workers=0), "model_server_workers", "0", "1 or more"),
    (lambda s, c: _model(s, c, model_name="bad_name"), "model_name", "bad_name", "63 letters"),
    (lambda s, c: _model(s, c, container_log_level=3), "container_log_level", "3", "logging"),
    (lambda s, c: ChainerEndpoint(s, "E"), "model/variants", "neither", "exactly one"),
    (
        lambda s, c: _model(s, c, enable_network_isolation=True),
        "enable_network_isolation",
        "True",
        "ModelData.from_directory",
    ),
    (
        lambda s, c: ChainerEndpoint(s, "E", model=_model(s, c), instance_type="ml.g5.xlarge"),
        "encrypt_storage",
        "True",
        "encrypt_storage=False",
    ),
    (
        lambda s, c: ChainerEndpoint(s, "E", model=_model(s, c), endpoint_name="a_b"),
        "endpoint_name",
        "a_b",
        "63 letters",
    ),
    (
        lambda s, c: ChainerEndpoint(
            s,
            "E",
            variants=[
                EndpointVariant(model=_model(s, c), variant_name="A"),
                EndpointVariant(model=_model(s, c, "M2"), variant_name="A"),
            ],
        ),
        "variants",
        "['A', 'A']",
        "distinct",
    ),
    (
        lambda s, c: ChainerEndpoint(
            s,
            "E",
            model=_model(s, c),
            data_capture=DataCapture(
                bucket=s3.Bucket.from_bucket_name(s, "Cap", "cap"), sampling_percentage=101
            ),
        ),
        "sampling_percentage",
        "101",
        "0 to 100",
    ),
    (
        lambda s, c: ChainerEndpoint(s, "E", model=_model(s, c)).scale_on_invocations(
            min_capacity=3, max_capacity=2, invocations_per_instance=10
        ),
        "min_capacity/max_capacity",
        "(3, 2)",
        "min_capacity <= max_capacity",
    ),
    (
        lambda s, c: ChainerEndpoint(s, "E", model=_model(s, c)).scale_on_invocations(
            max_capacity=2, invocations_per_instance=10, variant_name="Other"
        ),
        "variant_name",
        "Other",
        "AllTraffic",
    ),
    (
        lambda s, c: TrainingPipeline(s, "P", estimator=_estimator(s, c), endpoint_name="x y"),
        "endpoint_name",
        "x y",
        "63 letters",
    ),
    (
        lambda s, c: TrainingPipeline(
            s, "P", estimator=_estimator(s, c), endpoint_instance_type="ml.m5d.large"
        ),
        "encrypt_endpoint_storage",
        "True",
        "encrypt_endpoint_storage=False",
    ),
    (
        lambda s, c: TrainingPipeline(
            s, "P", estimator=_estimator(s, c), endpoint_instance_count=0
        ),
        "endpoint_instance_count",
        "0",
        "1 or more",
    ),
]


@pytest.mark.parametrize(
    ("build", "prop", "value", "fix"),
    HOSTING_CASES,
    ids=[c[1] + f"-{i}" for i, c in enumerate(HOSTING_CASES)],
)
def test_hosting_and_pipeline_errors(
    stack: cdk.Stack,
    code: SourceCode,
    build: Callable[[cdk.Stack, SourceCode], Any],
    prop: str,
    value: str,
    fix: str,
) -> None:
    with pytest.raises(ChainerValidationError) as caught:
        build(stack, code)
    _check(caught.value, prop, value, fix)


def test_log_level_names_are_accepted(stack: cdk.Stack, code: SourceCode) -> None:
    assert _estimator(stack, code, container_log_level=logging.ERROR).container_log_level == 40
