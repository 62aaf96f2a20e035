"""The client: boto3 only, importable without aws-cdk-lib.

``Predictor`` invokes an endpoint (SageMaker or a local URL); ``TrainingRun`` starts and
follows a ``TrainingPipeline`` execution; ``TransformJob`` / ``transform`` run a batch
transform and ``read_outputs`` reads its results into NumPy; ``approve`` / ``reject`` answer a
pipeline's approval request; ``AsyncPredictor`` invokes an async endpoint through S3.
"""

from chainer_sagemaker_cdk.client.approval import approve, reject
from chainer_sagemaker_cdk.client.async_inference import AsyncInferenceError, AsyncPredictor
from chainer_sagemaker_cdk.client.predictor import Predictor, PredictorError
from chainer_sagemaker_cdk.client.serializers import (
    CSVSerializer,
    JSONSerializer,
    NumpyDeserializer,
    NumpySerializer,
)
from chainer_sagemaker_cdk.client.training_run import (
    TrainingRun,
    TrainingRunError,
    execution_input,
    fit,
)
from chainer_sagemaker_cdk.client.transform import (
    TransformJob,
    TransformJobError,
    read_outputs,
    transform,
    transform_request,
)

__all__ = [
    "AsyncInferenceError",
    "AsyncPredictor",
    "CSVSerializer",
    "JSONSerializer",
    "NumpyDeserializer",
    "NumpySerializer",
    "Predictor",
    "PredictorError",
    "TrainingRun",
    "TrainingRunError",
    "TransformJob",
    "TransformJobError",
    "approve",
    "execution_input",
    "fit",
    "read_outputs",
    "reject",
    "transform",
    "transform_request",
]
