"""The client: boto3 only, importable without aws-cdk-lib.

``Predictor`` invokes an endpoint (SageMaker or a local URL); ``TrainingRun`` starts and
follows a ``TrainingPipeline`` execution.
"""

from chainer_sagemaker_cdk.client.predictor import Predictor, PredictorError
from chainer_sagemaker_cdk.client.serializers import (
    CSVSerializer,
    JSONSerializer,
    NumpyDeserializer,
    NumpySerializer,
)

__all__ = [
    "CSVSerializer",
    "JSONSerializer",
    "NumpyDeserializer",
    "NumpySerializer",
    "Predictor",
    "PredictorError",
]
