"""The `train` command: SageMaker training contract, single process or MPI."""

from chainer_sagemaker_runtime.training.cli import main

__all__ = ["main"]
