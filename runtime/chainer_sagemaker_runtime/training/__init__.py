"""The `train` command: SageMaker training contract, single process or MPI."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """``train``; imported lazily so that ``python -m ...training.ranks`` stays light."""
    from chainer_sagemaker_runtime.training.cli import main as _main

    return _main(argv)
