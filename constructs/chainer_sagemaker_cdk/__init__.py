"""AWS CDK constructs to train and host Chainer models on Amazon SageMaker.

The constructs load lazily (PEP 562), so ``chainer_sagemaker_cdk.client`` and
``chainer_sagemaker_cdk.local`` import without starting aws-cdk-lib (and its Node process):
the client needs boto3 only.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._approval import Approval
    from ._transform_step import TransformStep
    from ._validation import ChainerValidationError
    from .endpoint import (
        AsyncInference,
        ChainerEndpoint,
        DataCapture,
        EndpointVariant,
        ServerlessConfig,
    )
    from .estimator import ChainerEstimator
    from .guardrails import DeploymentGuardrails
    from .hyperparameters import MpiOptions, encode_hyperparameters, reserved_hyperparameters
    from .image import ImageConfig, RuntimeImage
    from .instance import gpu_count, is_gpu_instance, normalize_instance_type
    from .model import ChainerModel, model_environment
    from .model_data import ModelData, ModelDataConfig
    from .pipeline import TrainingPipelineFragment
    from .quality_gate import MetricThreshold, QualityGate
    from .registry import ModelRegistry
    from .shadow import ShadowDeployment
    from .source import CodeConfig, SourceCode
    from .training_input import (
        Compression,
        DataDistribution,
        InputMode,
        RecordWrapper,
        TrainingInput,
    )
    from .training_pipeline import TrainingPipeline
    from .transformer import ChainerTransformer

_WHERE = {
    "Approval": "_approval",
    "AsyncInference": "endpoint",
    "ServerlessConfig": "endpoint",
    "MetricThreshold": "quality_gate",
    "QualityGate": "quality_gate",
    "ChainerEndpoint": "endpoint",
    "ChainerEstimator": "estimator",
    "ChainerModel": "model",
    "ChainerTransformer": "transformer",
    "ChainerValidationError": "_validation",
    "CodeConfig": "source",
    "Compression": "training_input",
    "DataCapture": "endpoint",
    "DataDistribution": "training_input",
    "DeploymentGuardrails": "guardrails",
    "EndpointVariant": "endpoint",
    "ImageConfig": "image",
    "InputMode": "training_input",
    "RecordWrapper": "training_input",
    "ModelData": "model_data",
    "ModelDataConfig": "model_data",
    "ModelRegistry": "registry",
    "MpiOptions": "hyperparameters",
    "RuntimeImage": "image",
    "ShadowDeployment": "shadow",
    "SourceCode": "source",
    "TrainingInput": "training_input",
    "TrainingPipeline": "training_pipeline",
    "TrainingPipelineFragment": "pipeline",
    "TransformStep": "_transform_step",
    "encode_hyperparameters": "hyperparameters",
    "gpu_count": "instance",
    "is_gpu_instance": "instance",
    "model_environment": "model",
    "normalize_instance_type": "instance",
    "reserved_hyperparameters": "hyperparameters",
}

__all__ = [
    "Approval",
    "AsyncInference",
    "ChainerEndpoint",
    "ChainerEstimator",
    "ChainerModel",
    "ChainerTransformer",
    "ChainerValidationError",
    "CodeConfig",
    "Compression",
    "DataCapture",
    "DataDistribution",
    "DeploymentGuardrails",
    "EndpointVariant",
    "ImageConfig",
    "InputMode",
    "MetricThreshold",
    "ModelData",
    "ModelDataConfig",
    "ModelRegistry",
    "MpiOptions",
    "QualityGate",
    "RecordWrapper",
    "RuntimeImage",
    "ServerlessConfig",
    "ShadowDeployment",
    "SourceCode",
    "TrainingInput",
    "TrainingPipeline",
    "TrainingPipelineFragment",
    "TransformStep",
    "encode_hyperparameters",
    "gpu_count",
    "is_gpu_instance",
    "model_environment",
    "normalize_instance_type",
    "reserved_hyperparameters",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
