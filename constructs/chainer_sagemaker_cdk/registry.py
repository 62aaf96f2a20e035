"""Model registry: each model the pipeline accepts becomes a version of a model package group.

With ``TrainingPipeline(registry=ModelRegistry())`` the stack gets an
``AWS::SageMaker::ModelPackageGroup`` and every execution, once the model passed the quality
gate (and the approval), registers it with ``CreateModelPackage`` (aws-sdk integration): the
image, the model data, the serving environment, the training job's name and the gated metrics'
values (``CustomerMetadataProperties``: inline metric values; ``ModelMetrics`` would need
statistics files in S3). The version is registered ``Approved`` (the gate and the approval were
the decision) and the pipeline's model is created from it (``PrimaryContainer.ModelPackageName``),
so the endpoint serves exactly the registered version.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from aws_cdk import aws_iam as iam
from constructs import Construct

from ._validation import is_unresolved, require
from .model_data import ModelData, ModelDataConfig, _lookup_model_data

__all__ = ["ModelRegistry"]

_GROUP_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
CONTENT_TYPES = ("application/json", "application/x-npy", "text/csv")
"""What ``serve`` accepts and answers (docs/contract.md §3.2, §3.3)."""


@dataclass(frozen=True)
class ModelRegistry:
    """Where accepted models are registered.

    :param group_name: the model package group; left out, the estimator's ``base_job_name``.
    :param description: the group's description; left out, none.
    """

    group_name: str | None = None
    description: str | None = None

    def resolve_name(self, default: str) -> str:
        name = self.group_name or default
        require(
            is_unresolved(name) or bool(_GROUP_NAME.match(name)),
            "ModelRegistry.group_name",
            name,
            "use at most 63 letters, digits and hyphens",
        )
        return name


def package_request(
    group: str,
    container: dict[str, Any],
    instance_type: str,
    metric_values: dict[str, str],
) -> dict[str, Any]:
    """CreateModelPackage's parameters (``metric_values``: metric name -> JSONPath expression
    of its value as a string). No ``Tags``: a version in a group carries the group's tags, and
    CreateModelPackage refuses a tag argument with ``ModelPackageGroupName`` (API reference)."""
    return {
        "ModelPackageGroupName": group,
        "ModelPackageDescription.$": "States.Format('Trained by {}', $.training.TrainingJobName)",
        "ModelApprovalStatus": "Approved",
        "InferenceSpecification": {
            "Containers": [container],
            "SupportedContentTypes": list(CONTENT_TYPES),
            "SupportedResponseMIMETypes": list(CONTENT_TYPES),
            "SupportedRealtimeInferenceInstanceTypes": [instance_type],
        },
        "CustomerMetadataProperties": {
            "TrainingJobName.$": "$.training.TrainingJobName",
            **{f"{name}.$": path for name, path in metric_values.items()},
        },
    }


_PACKAGE_ARN = re.compile(
    r"^arn:aws[a-z-]*:sagemaker:[a-z0-9-]+:[0-9]{12}:model-package/[a-zA-Z0-9-]{1,63}/[0-9]+$"
)


def model_package_data(model_package_arn: str) -> ModelData:
    """``ModelData.from_model_package``: the version's ``ModelDataUrl``, looked up at deploy
    time (DescribeModelPackage, as ``from_training_job`` looks up DescribeTrainingJob)."""
    require(
        is_unresolved(model_package_arn) or bool(_PACKAGE_ARN.match(model_package_arn)),
        "model_package_arn",
        model_package_arn,
        "give a model package version's ARN, arn:aws:sagemaker:<region>:<account>:"
        "model-package/<group>/<version> (ModelRegistry registers them)",
    )
    return _ModelPackageData(model_package_arn)


class _ModelPackageData(ModelData):
    def __init__(self, arn: str) -> None:
        self.arn = arn

    def bind(self, scope: Construct, grantee: iam.IGrantable) -> ModelDataConfig:
        return _lookup_model_data(
            scope,
            grantee,
            action="describeModelPackage",
            parameters={"ModelPackageName": self.arn},
            resource_arn=self.arn,
            url_field=_URL_FIELD,
            description="Deploy-time lookup of a model package version's model artifacts",
        )


_URL_FIELD = "InferenceSpecification.Containers.0.ModelDataUrl"
