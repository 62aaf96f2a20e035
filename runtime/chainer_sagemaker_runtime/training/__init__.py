"""The `train` command: SageMaker training contract, single process or MPI."""

from __future__ import annotations

import signal
from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """``train`` (the console script's entry point).

    As PID 1 the kernel drops a signal that has no handler, and importing the command's modules
    takes tens of milliseconds: so a SIGTERM/SIGINT that arrives during that import is held
    here and handed to the command's stop controller once it is installed. (What is left is
    the interpreter's own start, before any of this package runs.) The command is imported
    here, not at module level, so that ``python -m ...training.ranks`` stays light.
    """
    held: list[int] = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda number, _frame: held.append(number))
    from chainer_sagemaker_runtime.training.cli import main as _main

    return _main(argv, held=held)
