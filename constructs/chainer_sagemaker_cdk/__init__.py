"""AWS CDK constructs to train and host Chainer models on Amazon SageMaker."""

from ._validation import ChainerValidationError
from .endpoint import ChainerEndpoint, DataCapture, EndpointVariant
from .estimator import ChainerEstimator
from .hyperparameters import MpiOptions, encode_hyperparameters, reserved_hyperparameters
from .image import ImageConfig, RuntimeImage
from .instance import gpu_count, is_gpu_instance, normalize_instance_type
from .model import ChainerModel, model_environment
from .model_data import ModelData, ModelDataConfig
from .pipeline import TrainingPipelineFragment
from .source import CodeConfig, SourceCode
from .training_input import Compression, DataDistribution, InputMode, TrainingInput
from .training_pipeline import TrainingPipeline

__all__ = [
    "ChainerEndpoint",
    "ChainerEstimator",
    "ChainerModel",
    "ChainerValidationError",
    "CodeConfig",
    "Compression",
    "DataCapture",
    "DataDistribution",
    "EndpointVariant",
    "ImageConfig",
    "InputMode",
    "ModelData",
    "ModelDataConfig",
    "MpiOptions",
    "RuntimeImage",
    "SourceCode",
    "TrainingInput",
    "TrainingPipeline",
    "TrainingPipelineFragment",
    "encode_hyperparameters",
    "gpu_count",
    "is_gpu_instance",
    "model_environment",
    "normalize_instance_type",
    "reserved_hyperparameters",
]
