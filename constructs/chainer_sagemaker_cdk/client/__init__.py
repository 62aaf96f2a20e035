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
from chainer_sagemaker_cdk.client.training_run import (
    TrainingRun,
    TrainingRunError,
    execution_input,
    fit,
)

__all__ = [
    "CSVSerializer",
    "JSONSerializer",
    "NumpyDeserializer",
    "NumpySerializer",
    "Predictor",
    "PredictorError",
    "TrainingRun",
    "TrainingRunError",
    "execution_input",
    "fit",
]
