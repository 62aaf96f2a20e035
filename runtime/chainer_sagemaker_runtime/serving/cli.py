"""The ``serve`` command (docs/contract.md §3): ``main(argv) -> int``; errors become exit codes.

BLAS thread counts are pinned to 1 before NumPy is first imported, because every worker is one
core's worth of compute: several BLAS threads per worker only fight each other for the same
cores (users who set ``OMP_NUM_THREADS`` and friends themselves keep their values).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import replace

from chainer_sagemaker_runtime.errors import RuntimeFailure
from chainer_sagemaker_runtime.serving.config import ServingConfig

__all__ = ["main"]

_BLAS_THREAD_VARS = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="serve",
        description="Serve a Chainer model with the SageMaker inference contract "
        "(settings come from SAGEMAKER_* environment variables).",
    )
    parser.add_argument("command", nargs="?", help="ignored ('serve', as SageMaker passes it)")
    parser.add_argument("--port", type=int, help="overrides SAGEMAKER_BIND_TO_PORT")
    parser.add_argument("--workers", type=int, help="overrides SAGEMAKER_MODEL_SERVER_WORKERS")
    parser.add_argument("--host", help="overrides SAGEMAKER_BIND_TO_HOST (default 0.0.0.0)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(sys.argv[1:] if argv is None else argv)
    for name in _BLAS_THREAD_VARS:
        os.environ.setdefault(name, "1")
    try:
        config = ServingConfig.from_env()
        overrides = {"port": args.port, "workers": args.workers, "host": args.host}
        config = replace(config, **{k: v for k, v in overrides.items() if v is not None})
        logging.basicConfig(
            level=config.log_level,
            format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s",
            stream=sys.stderr,
        )
        from chainer_sagemaker_runtime.serving.handler import Hooks
        from chainer_sagemaker_runtime.serving.master import serve
        from chainer_sagemaker_runtime.serving.usercode import import_user_module

        hooks = Hooks.from_module(import_user_module(config))
        return serve(config, hooks)
    except RuntimeFailure as exc:
        print(f"serve: error: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
