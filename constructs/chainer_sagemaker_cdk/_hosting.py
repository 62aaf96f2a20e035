"""The pipeline's endpoint on serverless capacity or with asynchronous inference: the
CreateEndpointConfig parts (API shapes, not CloudFormation's), their IAM, and the combinations
SageMaker refuses.

The dataclasses are ``endpoint.py``'s (one vocabulary for ``ChainerEndpoint`` and the
pipeline); the ranges checked are the API reference's (``ProductionVariantServerlessConfig``,
``AsyncInferenceClientConfig``), the same as ``ChainerEndpoint`` checks.

Serverless endpoints leave out ("Feature exclusions",
https://docs.aws.amazon.com/sagemaker/latest/dg/serverless-endpoints.html) GPUs, VPC
configuration, network isolation, data capture (the pipeline has none) and several variants
(so no shadow variant:
https://docs.aws.amazon.com/sagemaker/latest/dg/shadow-tests-exclusions.html); ``KmsKeyId`` is
allowed (it encrypts the model's image). Instance-count autoscaling has no instances to count,
and a rolling update is refused (``DeploymentGuardrails.validate_for``). Async endpoints
cannot carry a shadow variant either (same exclusions page).
"""

from __future__ import annotations

from typing import Any

from aws_cdk import aws_iam as iam

from . import _iam
from ._validation import require
from .endpoint import AsyncInference, ServerlessConfig
from .instance import is_gpu_instance

__all__ = ["async_grant_invoke", "async_inference_config", "check", "serverless_config"]


def check(
    *,
    serverless: ServerlessConfig | None,
    async_inference: AsyncInference | None,
    instance_type: str,
    instance_count: Any,
    vpc: Any,
    isolate_model: bool,
    autoscaling: Any,
    shadow: Any,
) -> None:
    """Refuse at synth what CreateEndpointConfig (or the endpoint) would refuse later."""
    if async_inference is not None:
        require(
            serverless is None,
            "async_inference",
            "given",
            "an endpoint is serverless or asynchronous, not both: leave one of them out",
        )
        require(
            shadow is None,
            "shadow",
            "given",
            "asynchronous endpoints take no shadow variant: leave shadow out",
        )
    if serverless is None:
        return
    fix = "leave it out with serverless=, or leave serverless out (instances)"
    require(
        not is_gpu_instance(instance_type),
        "endpoint_instance_type",
        instance_type,
        "serverless endpoints run on CPUs: give a CPU instance type (it picks the image)",
    )
    require(instance_count == 1, "endpoint_instance_count", instance_count, fix)
    require(vpc is None, "estimator.vpc", "given", fix + " (no VPC configuration)")
    require(not isolate_model, "isolate_model", isolate_model, fix + " (no network isolation)")
    require(
        autoscaling is None,
        "autoscaling",
        autoscaling,
        fix + " (serverless endpoints scale by themselves up to max_concurrency)",
    )
    require(
        shadow is None,
        "shadow",
        "given",
        "serverless endpoints take no shadow variant: leave shadow out, or use instances",
    )


def serverless_config(config: ServerlessConfig) -> dict[str, Any]:
    """The variant's ``ServerlessConfig``."""
    config.validate("serverless.")
    memory, provisioned = config.memory_size_in_mb, config.provisioned_concurrency
    rendered: dict[str, Any] = {"MemorySizeInMB": memory, "MaxConcurrency": config.max_concurrency}
    if provisioned is not None:
        rendered["ProvisionedConcurrency"] = provisioned
    return rendered


def async_inference_config(config: AsyncInference, serving: iam.IPrincipal) -> dict[str, Any]:
    """``AsyncInferenceConfig``, and what the model's role needs for it: read the requests,
    write the responses and failures, publish to the topics, use the keys
    (https://docs.aws.amazon.com/sagemaker/latest/dg/async-inference-create-endpoint-prerequisites.html)."""
    limit = config.max_concurrent_invocations_per_instance
    _inputs, output, failure = config.validate("async_inference.")
    config.grant_serving(serving)
    out: dict[str, Any] = {
        "S3OutputPath": config.bucket.s3_url_for_object(output),
        "S3FailurePath": config.bucket.s3_url_for_object(failure),
    }
    if config.kms_key is not None:
        out["KmsKeyId"] = config.kms_key.key_arn
    notification = {
        name: topic.topic_arn
        for name, topic in (
            ("SuccessTopic", config.success_topic),
            ("ErrorTopic", config.error_topic),
        )
        if topic is not None
    }
    if notification:
        out["NotificationConfig"] = notification
    rendered: dict[str, Any] = {"OutputConfig": out}
    if limit is not None:
        rendered["ClientConfig"] = {"MaxConcurrentInvocationsPerInstance": limit}
    return rendered


def async_grant_invoke(
    grantee: iam.IGrantable, config: AsyncInference, endpoint_arn: str
) -> iam.Grant:
    """Invoke the async endpoint as ``AsyncPredictor`` does: upload the request under the input
    prefix, InvokeEndpointAsync, read the output or failure object
    (https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonsagemaker.html)."""
    inputs, output, failure = config.validate("async_inference.")
    objects = config.bucket.arn_for_objects
    keys = [k.key_arn for k in (config.bucket.encryption_key, config.kms_key) if k]
    return _iam.grant(
        grantee,
        _iam.statement(
            ["sagemaker:InvokeEndpoint", "sagemaker:InvokeEndpointAsync"], [endpoint_arn]
        ),
        _iam.statement(["s3:PutObject"], [objects(f"{inputs}/*")]),
        _iam.statement(["s3:GetObject"], [objects(f"{output}/*"), objects(f"{failure}/*")]),
        *([_iam.statement(_iam.KMS_ENCRYPT_DECRYPT, keys)] if keys else []),
    )
