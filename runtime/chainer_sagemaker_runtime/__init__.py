"""Runtime for Chainer on Amazon SageMaker: the container's `train` and `serve` commands."""

__version__ = "0.1.0"
