"""Runtime images (asset, ECR, registry, official) and instance types."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk import aws_ecr as ecr

from chainer_sagemaker_cdk import (
    ChainerEstimator,
    RuntimeImage,
    SourceCode,
    gpu_count,
    is_gpu_instance,
    normalize_instance_type,
)
from chainer_sagemaker_cdk.image import OFFICIAL_ACCOUNTS, resolve_official_version

from .render import state_machine_definition


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("ml.p3.2xlarge", "ml.p3.2xlarge"),
        ("p3.2xlarge", "ml.p3.2xlarge"),
        ("ML.M5.XLARGE", "ml.m5.xlarge"),
        ("g4dn.metal", "ml.g4dn.metal"),
    ],
)
def test_instance_types_never_render_ml_ml(given: str, expected: str) -> None:
    assert normalize_instance_type(given) == expected


@pytest.mark.parametrize(
    ("instance_type", "gpus"),
    [
        ("ml.m5.xlarge", 0),
        ("ml.c5.18xlarge", 0),
        ("ml.p2.xlarge", 1),
        ("ml.p2.8xlarge", 8),
        ("ml.p2.16xlarge", 16),
        ("ml.p3.2xlarge", 1),
        ("ml.p3.8xlarge", 4),
        ("ml.p3.16xlarge", 8),
        ("ml.p3dn.24xlarge", 8),
        ("ml.p4d.24xlarge", 8),
        ("ml.p5.48xlarge", 8),
        ("ml.g4dn.xlarge", 1),
        ("ml.g4dn.12xlarge", 4),
        ("ml.g5.2xlarge", 1),
        ("ml.g5.48xlarge", 8),
        ("ml.g6.12xlarge", 4),
        ("p3.2xlarge", 1),
    ],
)
def test_gpu_counts(instance_type: str, gpus: int) -> None:
    assert gpu_count(instance_type) == gpus
    assert is_gpu_instance(instance_type) == (gpus > 0)


@pytest.mark.parametrize(
    ("version", "resolved"),
    [
        ("4.0.0", "4.0.0"),
        ("4.0", "4.0.0"),
        ("4.1", "4.1.0"),
        ("5.0", "5.0.0"),
        ("5.0.0", "5.0.0"),
    ],
)
def test_official_versions(version: str, resolved: str) -> None:
    assert resolve_official_version(version) == resolved


def _image_of(
    stack: cdk.Stack, code: SourceCode, image: RuntimeImage, instance_type: str = "ml.m5.xlarge"
) -> tuple[str, dict[str, Any]]:
    from chainer_sagemaker_cdk import TrainingPipeline

    estimator = ChainerEstimator(
        stack, "Estimator", code=code, image=image, instance_type=instance_type
    )
    TrainingPipeline(stack, "Pipeline", estimator=estimator, deploy=False)
    template = cdk.assertions.Template.from_stack(stack).to_json()
    train = state_machine_definition(template)["States"]["Train"]["Parameters"]
    return train["AlgorithmSpecification"]["TrainingImage"], template


@pytest.mark.parametrize(
    ("region", "account", "suffix"),
    [
        ("us-west-2", "520713654638", "amazonaws.com"),
        ("eu-south-1", "048378556238", "amazonaws.com"),
        ("cn-north-1", "422961961927", "amazonaws.com.cn"),
        ("us-gov-west-1", "246785580436", "amazonaws.com"),
    ],
)
def test_official_image_in_a_known_region(
    code: SourceCode, region: str, account: str, suffix: str
) -> None:
    stack = cdk.Stack(
        cdk.App(), "Official", env=cdk.Environment(account="111111111111", region=region)
    )
    uri, template = _image_of(stack, code, RuntimeImage.official("5.0", "py3"), "p3.2xlarge")
    assert uri == f"{account}.dkr.ecr.{region}.{suffix}/sagemaker-chainer:5.0.0-gpu-py3"
    assert "repository/sagemaker-chainer" in json.dumps(template)


def test_official_image_env_agnostic_uses_a_mapping(stack: cdk.Stack, code: SourceCode) -> None:
    uri, template = _image_of(stack, code, RuntimeImage.official("4.0.0", "py2"))
    assert uri.startswith("520713654638.dkr.ecr.us-east-1.")  # sample-filled FindInMap
    assert uri.endswith("/sagemaker-chainer:4.0.0-cpu-py2")
    mapping = template["Mappings"]["ChainerOfficialImageAccounts"]
    assert {r: v["account"] for r, v in mapping.items()} == dict(OFFICIAL_ACCOUNTS)
    assert "AWS::LanguageExtensions" in template["Transform"]


def test_ecr_repository_image_grants_pull(stack: cdk.Stack, code: SourceCode) -> None:
    repo = ecr.Repository.from_repository_name(stack, "Repo", "my-chainer")
    uri, template = _image_of(stack, code, RuntimeImage.from_ecr_repository(repo, "v1"))
    assert uri.endswith("/my-chainer:v1")
    text = json.dumps(template)
    assert "ecr:BatchGetImage" in text
    assert ":repository/my-chainer" in text


def test_registry_ecr_uri_grants_pull_on_that_repository(
    stack: cdk.Stack, code: SourceCode
) -> None:
    uri, template = _image_of(
        stack,
        code,
        RuntimeImage.from_registry("999999999999.dkr.ecr.eu-west-1.amazonaws.com/team/chainer:7"),
    )
    assert uri == "999999999999.dkr.ecr.eu-west-1.amazonaws.com/team/chainer:7"
    assert "ecr:eu-west-1:999999999999:repository/team/chainer" in json.dumps(template)


@pytest.mark.parametrize(
    ("instance_type", "variant"), [("ml.m5.xlarge", "cpu"), ("ml.p3.2xlarge", "gpu")]
)
def test_asset_image_variant_and_build_args(
    tmp_path: Path, code: SourceCode, instance_type: str, variant: str
) -> None:
    context = tmp_path / "runtime"
    context.mkdir()
    (context / "Dockerfile").write_text("FROM scratch\n")
    out = tmp_path / "out"
    app = cdk.App(outdir=str(out))
    stack = cdk.Stack(app, "Asset")
    _image_of(
        stack,
        code,
        RuntimeImage.from_asset(
            context, chainer_version="7.8.1", python_version="3.11", cupy_package="cupy-cuda12x"
        ),
        instance_type,
    )
    app.synth()
    images = json.loads((out / "Asset.assets.json").read_text())["dockerImages"]
    (image,) = images.values()
    assert image["source"]["dockerBuildArgs"] == {
        "VARIANT": variant,
        "CHAINER_VERSION": "7.8.1",
        "PYTHON_VERSION": "3.11",
        "CUPY_PACKAGE": "cupy-cuda12x",
    }
    assert image["source"]["platform"] == "linux/amd64"


def test_default_image_is_this_repository_runtime() -> None:
    from chainer_sagemaker_cdk.image import default_runtime_directory

    assert default_runtime_directory() == Path(__file__).resolve().parents[2] / "runtime"


def test_serving_variant_follows_the_endpoint_instance(tmp_path: Path, code: SourceCode) -> None:
    """GPU training, CPU endpoint: two image variants."""
    from chainer_sagemaker_cdk import TrainingPipeline

    context = tmp_path / "runtime"
    context.mkdir()
    (context / "Dockerfile").write_text("FROM scratch\n")
    app = cdk.App(outdir=str(tmp_path / "out"))
    stack = cdk.Stack(app, "Variants")
    estimator = ChainerEstimator(
        stack,
        "Estimator",
        code=code,
        instance_type="ml.p3.2xlarge",
        image=RuntimeImage.from_asset(context),
    )
    TrainingPipeline(stack, "Pipeline", estimator=estimator, endpoint_instance_type="ml.c5.large")
    app.synth()
    images = json.loads((tmp_path / "out" / "Variants.assets.json").read_text())["dockerImages"]
    assert sorted(i["source"]["dockerBuildArgs"]["VARIANT"] for i in images.values()) == [
        "cpu",
        "gpu",
    ]
