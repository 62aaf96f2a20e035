"""Issue 12 (IAM, limits, CDK idioms): one specification per defect, each failing before."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk import assertions
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3

from chainer_sagemaker_cdk import (
    ChainerEndpoint,
    ChainerEstimator,
    ChainerModel,
    ChainerValidationError,
    ModelData,
    RuntimeImage,
    SourceCode,
    TrainingInput,
    gpu_count,
)

from . import iam_check
from .conftest import REPO

KEY_ARN = "arn:aws:kms:us-east-1:123456789012:key/11111111-2222-3333-4444-555555555555"


def _estimator(stack: cdk.Stack, code: SourceCode, image: RuntimeImage, **props: Any) -> Any:
    props.setdefault("output_bucket", s3.Bucket.from_bucket_name(stack, "Out", "out-bucket"))
    return ChainerEstimator(stack, "Estimator", code=code, image=image, **props)


def _template(stack: cdk.Stack) -> dict[str, Any]:
    return assertions.Template.from_stack(stack).to_json()  # type: ignore[no-any-return]


def _execution_documents(template: dict[str, Any]) -> list[dict[str, Any]]:
    (role,) = [k for k in template["Resources"] if k.startswith("EstimatorExecutionRole")]
    return iam_check.role_policies(template, role)


# -- network isolation ------------------------------------------------------------------------
def test_isolated_job_may_list_its_code_prefix(
    stack: cdk.Stack, code: SourceCode, registry_image: RuntimeImage
) -> None:
    est = _estimator(stack, code, registry_image, enable_network_isolation=True)
    template = _template(stack)
    bucket = iam_check.concrete(template, stack.resolve(est.code.bucket_name))
    key = est.code.object_key
    documents = _execution_documents(template)
    assert iam_check.allows(
        documents, "s3:ListBucket", f"arn:aws:s3:::{bucket}", {"s3:prefix": key}
    )
    assert iam_check.allows(documents, "s3:GetObject", f"arn:aws:s3:::{bucket}/{key}")
    assert not iam_check.allows(
        documents, "s3:ListBucket", f"arn:aws:s3:::{bucket}", {"s3:prefix": "other.tgz"}
    )


# -- local NVMe storage -----------------------------------------------------------------------
NVME_TRAINING = [
    "ml.g4dn.xlarge",
    "ml.g5.2xlarge",
    "ml.g6.xlarge",
    "ml.p3dn.24xlarge",
    "ml.p4d.24xlarge",
    "ml.p4de.24xlarge",
    "ml.p5.48xlarge",
    "ml.trn1.32xlarge",
    "ml.trn1n.32xlarge",
    "ml.trn2.48xlarge",
    "ml.p6-b200.48xlarge",
    "ml.dl1.24xlarge",
    "ml.m5d.xlarge",
]


@pytest.mark.parametrize("instance_type", NVME_TRAINING)
def test_volume_key_on_local_nvme_types_is_refused(
    stack: cdk.Stack, code: SourceCode, registry_image: RuntimeImage, instance_type: str
) -> None:
    key = kms.Key.from_key_arn(stack, "K", KEY_ARN)
    with pytest.raises(ChainerValidationError, match=r"volume_kms_key.*NVMe"):
        _estimator(stack, code, registry_image, instance_type=instance_type, volume_kms_key=key)


def test_volume_key_on_ebs_types_is_sent(
    stack: cdk.Stack, code: SourceCode, registry_image: RuntimeImage
) -> None:
    key = kms.Key.from_key_arn(stack, "K", KEY_ARN)
    est = _estimator(stack, code, registry_image, instance_type="ml.p3.8xlarge", volume_kms_key=key)
    assert est.training_job_request("j")["ResourceConfig"]["VolumeKmsKeyId"] == KEY_ARN


@pytest.mark.parametrize(
    "instance_type", ["ml.p4de.24xlarge", "ml.trn1.2xlarge", "ml.dl1.24xlarge"]
)
def test_endpoint_refuses_storage_key_on_local_nvme_types(
    stack: cdk.Stack, code: SourceCode, registry_image: RuntimeImage, instance_type: str
) -> None:
    model = ChainerModel(
        stack,
        "Model",
        model_data=ModelData.from_s3_url("s3://bucket-b/model.tar.gz"),
        code=code,
        image=registry_image,
        instance_type=instance_type,
    )
    with pytest.raises(ChainerValidationError, match="encrypt_storage"):
        ChainerEndpoint(stack, "Endpoint", model=model)


# -- images -------------------------------------------------------------------------------------
def test_two_runtime_images_with_different_build_args_are_two_images(
    stack: cdk.Stack, code: SourceCode
) -> None:
    a = ChainerEstimator(
        stack, "A", code=code, image=RuntimeImage.from_asset(chainer_version="7.8.1")
    )
    b = ChainerEstimator(
        stack, "B", code=code, image=RuntimeImage.from_asset(chainer_version="7.7.0")
    )
    c = ChainerEstimator(stack, "C", code=code)
    uris = {json.dumps(stack.resolve(e.image.image_uri)) for e in (a, b, c)}
    assert len(uris) == 3


@pytest.mark.parametrize("instance_type", ["ml.c7g.xlarge", "ml.m6g.large", "ml.c6gn.large"])
def test_graviton_hosting_types_are_refused_for_the_amd64_images(
    stack: cdk.Stack, code: SourceCode, instance_type: str
) -> None:
    with pytest.raises(ChainerValidationError, match="Graviton"):
        ChainerModel(
            stack,
            "Model",
            model_data=ModelData.from_s3_url("s3://bucket-b/model.tar.gz"),
            code=code,
            instance_type=instance_type,
        )


def test_graviton_types_take_an_image_from_a_registry(stack: cdk.Stack, code: SourceCode) -> None:
    ChainerModel(
        stack,
        "Model",
        model_data=ModelData.from_s3_url("s3://bucket-b/model.tar.gz"),
        code=code,
        instance_type="ml.c7g.xlarge",
        image=RuntimeImage.from_registry("123456789012.dkr.ecr.us-east-1.amazonaws.com/c:arm64"),
    )


def test_p6_b200_has_eight_gpus() -> None:
    assert gpu_count("ml.p6-b200.48xlarge") == 8


# -- endpoint grants and metrics ----------------------------------------------------------------
def _model(stack: cdk.Stack, code: SourceCode, image: RuntimeImage) -> ChainerModel:
    return ChainerModel(
        stack,
        "Model",
        model_data=ModelData.from_s3_url("s3://bucket-b/model.tar.gz"),
        code=code,
        image=image,
    )


def test_grant_invoke_uses_the_lower_case_endpoint_arn(
    stack: cdk.Stack, code: SourceCode, registry_image: RuntimeImage
) -> None:
    endpoint = ChainerEndpoint(
        stack, "Endpoint", model=_model(stack, code, registry_image), endpoint_name="Chainer-Digits"
    )
    client = iam.Role(stack, "Client", assumed_by=iam.AccountRootPrincipal())
    grant = endpoint.grant_invoke(client)
    assert isinstance(grant, iam.Grant)
    # Ref of AWS::SageMaker::Endpoint is the ARN SageMaker gives it (lower case).
    assert stack.resolve(endpoint.endpoint_arn) == {"Ref": stack.get_logical_id(endpoint.resource)}
    from chainer_sagemaker_cdk.endpoint import IChainerEndpoint

    imported = ChainerEndpoint.from_endpoint_name(stack, "Imported", "Mixed-Case")
    assert isinstance(imported, IChainerEndpoint)
    assert stack.resolve(imported.endpoint_arn)["Fn::Join"][1][-1].endswith("endpoint/mixed-case")


def test_metrics_take_a_statistic_and_cover_the_alpha_set(
    stack: cdk.Stack, code: SourceCode, registry_image: RuntimeImage
) -> None:
    endpoint = ChainerEndpoint(stack, "Endpoint", model=_model(stack, code, registry_image))
    assert endpoint.metric_invocations(statistic="Average").statistic == "Average"
    assert endpoint.metric_model_latency(statistic="p99").statistic == "p99"
    for name in (
        "invocations_per_instance",
        "overhead_latency",
        "cpu_utilization",
        "memory_utilization",
        "disk_utilization",
        "gpu_utilization",
        "gpu_memory_utilization",
    ):
        metric = getattr(endpoint, f"metric_{name}")(period=cdk.Duration.minutes(1))
        assert metric.metric_name
    imported = ChainerEndpoint.from_endpoint_attributes(
        stack, "Imported", endpoint_name="e", variant_names=["Blue"]
    )
    assert imported.metric_invocations().dimensions == {"EndpointName": "e", "VariantName": "Blue"}


# -- the README's channel override ----------------------------------------------------------
def test_readme_channel_override_is_granted(
    stack: cdk.Stack, code: SourceCode, registry_image: RuntimeImage
) -> None:
    """README: override `train` with s3://my-data/digits/train-v2 after grant_read_input."""
    data = s3.Bucket.from_bucket_name(stack, "Data", "data-bucket")
    est = _estimator(
        stack,
        code,
        registry_image,
        channels={"train": TrainingInput(bucket=data, key_prefix="digits/train")},
    )
    my_data = s3.Bucket.from_bucket_name(stack, "MyData", "my-data")
    assert isinstance(est.grant_read_input(my_data, "digits/train-v2"), iam.Grant)
    documents = _execution_documents(_template(stack))
    assert iam_check.allows(
        documents, "s3:ListBucket", "arn:aws:s3:::my-data", {"s3:prefix": "digits/train-v2/"}
    )
    assert iam_check.allows(documents, "s3:GetObject", "arn:aws:s3:::my-data/digits/train-v2/a")
    readme = (REPO / "README.md").read_text()
    assert 'estimator.grant_read_input(my_data, "digits/train-v2")' in readme


# -- API limits at synth ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("props", "prop"),
    [
        ({"hyperparameters": {"k" * 257: 1}}, "hyperparameters"),
        ({"hyperparameters": {"k": "v" * 2499}}, "hyperparameters"),  # 2501 encoded
        ({"environment": {"K": "v" * 513}}, "environment"),
        ({"environment": {"K" * 513: "v"}}, "environment"),
        ({"tags": {f"t{i}": "v" for i in range(51)}}, "tags"),
        ({"tags": {"k" * 129: "v"}}, "tags"),
        ({"tags": {"k": "v" * 257}}, "tags"),
        ({"max_retry_attempts": 31}, "max_retry_attempts"),
    ],
)
def test_api_limits_are_checked_at_synth(
    stack: cdk.Stack, code: SourceCode, registry_image: RuntimeImage, props: Any, prop: str
) -> None:
    with pytest.raises(ChainerValidationError) as raised:
        _estimator(stack, code, registry_image, **props)
    assert raised.value.prop == prop
    assert "SageMaker takes" in str(raised.value) or "tags" in str(raised.value)


def test_model_environment_values_up_to_1024(
    stack: cdk.Stack, code: SourceCode, registry_image: RuntimeImage
) -> None:
    with pytest.raises(ChainerValidationError, match="environment"):
        ChainerModel(
            stack,
            "Model",
            model_data=ModelData.from_s3_url("s3://bucket-b/model.tar.gz"),
            code=code,
            image=registry_image,
            environment={"K": "v" * 1025},
        )


# -- spot, output encryption, roles, names ----------------------------------------------------
def test_spot_waits_as_long_again_for_capacity_and_warns_without_checkpoints(
    stack: cdk.Stack, code: SourceCode, registry_image: RuntimeImage
) -> None:
    est = _estimator(
        stack, code, registry_image, use_spot_instances=True, max_run=cdk.Duration.hours(3)
    )
    stopping = est.training_job_request("j")["StoppingCondition"]
    assert stopping == {"MaxRuntimeInSeconds": 3 * 3600, "MaxWaitTimeInSeconds": 6 * 3600}
    assertions.Annotations.from_stack(stack).has_warning(
        "/Test/Estimator", assertions.Match.string_like_regexp("checkpoint_bucket")
    )


def test_artifacts_are_encrypted_with_the_buckets_key(
    stack: cdk.Stack, code: SourceCode, registry_image: RuntimeImage
) -> None:
    key = kms.Key(stack, "BucketKey", enable_key_rotation=True)
    bucket = s3.Bucket(stack, "Out2", encryption=s3.BucketEncryption.KMS, encryption_key=key)
    est = _estimator(stack, code, registry_image, output_bucket=bucket)
    output = stack.resolve(est.training_job_request("j")["OutputDataConfig"])
    assert output["KmsKeyId"] == stack.resolve(key.key_arn)
    default = ChainerEstimator(stack, "Default", code=code, image=registry_image)
    assert "KmsKeyId" in default.training_job_request("j")["OutputDataConfig"]


@pytest.mark.parametrize("how", ["from_role_arn", "without_policy_updates"])
def test_immutable_roles_get_no_policies(
    stack: cdk.Stack, code: SourceCode, registry_image: RuntimeImage, how: str
) -> None:
    if how == "from_role_arn":
        role = iam.Role.from_role_arn(
            stack, "Given", "arn:aws:iam::123456789012:role/ml", mutable=False
        )
    else:
        role = iam.Role(
            stack, "Own", assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com")
        ).without_policy_updates()
    est = _estimator(stack, code, registry_image, role=role)
    resources = _template(stack).get("Resources", {})
    assert not [r for r in resources.values() if r["Type"].startswith("AWS::IAM::Policy")]
    assert not [r for r in resources.values() if r["Type"] == "AWS::IAM::ManagedPolicy"]
    assert est.principal.statements, "what the role needs is still listed"


def test_default_job_names_are_readable(stack: cdk.Stack, code: SourceCode) -> None:
    est = ChainerEstimator(
        stack, "Estimator", code=code, image=RuntimeImage.from_registry("r.example/c:1")
    )
    assert est.base_job_name.startswith("estimator-")
    assert len(est.base_job_name) <= 25  # "--" and a UUID fit in 63 characters
    long = ChainerEstimator(
        stack,
        "AgnosticEstimatorWithAVeryLongName",
        code=code,
        image=RuntimeImage.from_registry("r/c:1"),
    )
    assert long.base_job_name.startswith("agnosticestimatorw"[:16])
    assert len(long.base_job_name) <= 25


def test_cdk_json_sets_the_installed_cdks_recommended_flags() -> None:
    import tarfile

    import aws_cdk

    (tgz,) = (Path(aws_cdk.__file__).parent / "_jsii").glob("aws-cdk-lib@*.jsii.tgz")
    with tarfile.open(tgz) as archive:
        member = archive.extractfile("package/recommended-feature-flags.json")
        assert member is not None
        recommended = json.load(member)
    context = json.loads((REPO / "cdk.json").read_text())["context"]
    assert {k: context.get(k) for k in recommended} == recommended


# -- CDK idioms ---------------------------------------------------------------------------------
def test_constructs_are_grantable_resources_with_grants(
    stack: cdk.Stack, code: SourceCode, registry_image: RuntimeImage
) -> None:
    est = _estimator(stack, code, registry_image)
    bucket = s3.Bucket.from_bucket_name(stack, "Other", "other-bucket")
    grant = bucket.grant_read(est)  # was a TypeError: not an IGrantable
    assert grant.success
    model = _model(stack, code, registry_image)
    assert isinstance(model.grant_key(kms.Key.from_key_arn(stack, "K", KEY_ARN)), iam.Grant)
    assert isinstance(est, cdk.Resource)
    assert isinstance(model, cdk.Resource)
    documents = _execution_documents(_template(stack))
    assert iam_check.allows(documents, "s3:GetObject", "arn:aws:s3:::other-bucket/x")


def test_importers_and_removal_policies(
    stack: cdk.Stack, code: SourceCode, registry_image: RuntimeImage
) -> None:
    from chainer_sagemaker_cdk.model import IChainerModel

    model = ChainerModel.from_model_name(stack, "Existing", "my-model")
    assert isinstance(model, IChainerModel)
    assert stack.resolve(model.model_arn)["Fn::Join"][1][-1].endswith("model/my-model")
    endpoint = ChainerEndpoint(
        stack,
        "Endpoint",
        model=_model(stack, code, registry_image),
        removal_policy=cdk.RemovalPolicy.RETAIN,
    )
    assert isinstance(endpoint, cdk.Resource)
    template = assertions.Template.from_stack(stack)
    template.has_resource("AWS::SageMaker::Endpoint", {"DeletionPolicy": "Retain"})
    template.has_resource("AWS::SageMaker::EndpointConfig", {"DeletionPolicy": "Retain"})


def test_extra_fields_deep_merge_and_are_checked(
    stack: cdk.Stack, code: SourceCode, registry_image: RuntimeImage
) -> None:
    est = _estimator(
        stack,
        code,
        registry_image,
        extra_request_fields={
            "ResourceConfig": {"KeepAlivePeriodInSeconds": 600},
            "StoppingCondition": {"MaxPendingTimeInSeconds": 7200},
            "AlgorithmSpecification": {"EnableSageMakerMetricsTimeSeries": True},
            "TensorBoardOutputConfig": {"S3OutputPath": "s3://tb-bucket/runs"},
        },
    )
    request = est.training_job_request("j")
    assert request["ResourceConfig"]["InstanceType"] == "ml.m5.xlarge"
    assert request["ResourceConfig"]["KeepAlivePeriodInSeconds"] == 600
    assert request["StoppingCondition"]["MaxPendingTimeInSeconds"] == 7200
    assert request["AlgorithmSpecification"]["EnableSageMakerMetricsTimeSeries"] is True
    documents = _execution_documents(_template(stack))
    assert iam_check.allows(documents, "s3:PutObject", "arn:aws:s3:::tb-bucket/runs/j/events")


def test_extra_fields_instance_groups_replace_the_instance_type(
    stack: cdk.Stack, code: SourceCode, registry_image: RuntimeImage
) -> None:
    groups = [{"InstanceType": "ml.m5.xlarge", "InstanceCount": 1, "InstanceGroupName": "a"}]
    est = _estimator(
        stack,
        code,
        registry_image,
        extra_request_fields={
            "ResourceConfig": {
                "InstanceGroups": groups,
                "InstanceType": None,
                "InstanceCount": None,
            }
        },
    )
    resources = est.training_job_request("j")["ResourceConfig"]
    assert resources == {"VolumeSizeInGB": 30, "InstanceGroups": groups}


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        ({"StoppingCondition": {"MaxPendingTimeInSeconds": 60}}, "1800 to 2419200"),
        ({"ResourceConfig": {"KeepAlivePeriodInSecond": 1}}, "KeepAlivePeriodInSeconds"),
        ({"ResourceConfig": {"InstanceType": "ml.c5.xlarge"}}, "set by the estimator's props"),
        ({"RoleArn": "arn:aws:iam::1:role/x"}, "set by the estimator's props"),
    ],
)
def test_extra_fields_errors_name_the_field(
    stack: cdk.Stack, code: SourceCode, registry_image: RuntimeImage, extra: Any, match: str
) -> None:
    with pytest.raises(ChainerValidationError, match=match):
        _estimator(stack, code, registry_image, extra_request_fields=extra)


def test_estimator_removal_policy_reaches_its_bucket_and_key(
    stack: cdk.Stack, code: SourceCode, registry_image: RuntimeImage
) -> None:
    ChainerEstimator(
        stack,
        "Estimator",
        code=code,
        image=registry_image,
        removal_policy=cdk.RemovalPolicy.DESTROY,
    )
    template = assertions.Template.from_stack(stack)
    template.has_resource("AWS::S3::Bucket", {"DeletionPolicy": "Delete"})
    template.has_resource("AWS::KMS::Key", {"DeletionPolicy": "Delete"})
