"""``python -m chainer_sagemaker_cdk.local``: train and serve a synthesized app on this machine.

    python -m chainer_sagemaker_cdk.local train --stack DigitsStack \\
        --channel train=data/train --channel test=data/test --work-dir local-run
    python -m chainer_sagemaker_cdk.local serve --stack DigitsStack \\
        --model-data local-run/artifacts/model.tar.gz --port 8080
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from chainer_sagemaker_cdk.local import async_endpoint, container, transform
from chainer_sagemaker_cdk.local._commands import LocalModeError
from chainer_sagemaker_cdk.local.assembly import AssemblyError, CloudAssembly


def _pairs(values: Sequence[str], what: str) -> dict[str, str]:
    pairs = {}
    for value in values:
        name, sep, rest = value.partition("=")
        if not sep or not name:
            raise LocalModeError(f"--{what} wants NAME=VALUE, got {value!r}")
        pairs[name] = rest
    return pairs


def _hp_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m chainer_sagemaker_cdk.local", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--cdk-out", type=Path, default=Path("cdk.out"), help="cloud assembly (default: cdk.out)"
    )
    parser.add_argument("--stack", help="stack name (needed when the assembly has several)")
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="run the stack's training job here")
    train.add_argument("--job", help="construct path of the estimator (when the stack has several)")
    train.add_argument("--channel", action="append", default=[], metavar="NAME=DIR|file://|s3://")
    train.add_argument("--hyperparameter", action="append", default=[], metavar="NAME=JSON")
    train.add_argument("--work-dir", type=Path, default=Path("local-run"))
    train.add_argument(
        "--hosts",
        choices=("auto", "namespaces", "emulated"),
        default="auto",
        help="how the job's instances run: each as its own host in Linux namespaces "
        "(needs root; the default for more than one instance), or 'emulated': every host's "
        "processes under one mpirun on this machine, sharing one tree (an emulation)",
    )
    train.add_argument(
        "--env", action="append", default=[], metavar="NAME=VALUE", help="add to every host's env"
    )
    serve = sub.add_parser("serve", help="serve a model of the stack here until interrupted")
    serve.add_argument(
        "--model-data",
        type=Path,
        help="model.tar.gz or a directory (default: the model's own staged model data asset)",
    )
    serve.add_argument("--model", help="construct path of the model (when the stack has several)")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--work-dir", type=Path, default=Path("local-run"))
    container.add_arguments(train)
    container.add_arguments(serve)
    transform.add_arguments(
        sub.add_parser("transform", help="run a batch transform here with the model's serve")
    )
    async_endpoint.add_arguments(
        sub.add_parser("invoke-async", help="request files in, output files out (async endpoint)")
    )
    return parser


def _serve(args: argparse.Namespace) -> int:
    assembly = CloudAssembly(args.cdk_out)
    models = assembly.models(args.stack)
    if args.model:
        models = [m for m in models if m.path.endswith(args.model)]
    if len(models) != 1:
        raise LocalModeError(
            f"name one model with --model; the stack has {[m.path for m in models]}"
            if models
            else "the stack has no ChainerModel; nothing to serve"
        )
    model = models[0]
    model_data = args.model_data or (
        Path(model.model_data_asset) if model.model_data_asset else None
    )
    if model_data is None:
        raise LocalModeError(
            f"{model.path} gets its model data at deploy time (a training job); pass "
            "--model-data model.tar.gz (for example from `train`'s artifacts)"
        )
    endpoint = container.endpoint_class(args)(
        model_data,
        args.work_dir,
        environment=model.environment,
        code=model.code_asset,
        port=args.port,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with endpoint:
        print(f"[local] serving {model.path} at {endpoint.url} (Ctrl-C stops)", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "train":
            job = CloudAssembly(args.cdk_out).training_job(args.stack, args.job)
            hps = {
                k: _hp_value(v) for k, v in _pairs(args.hyperparameter, "hyperparameter").items()
            }
            signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop like Ctrl-C
            try:
                result = container.training_runner(args)(
                    job,
                    _pairs(args.channel, "channel"),
                    args.work_dir,
                    hyperparameters=hps,
                    hosts=args.hosts,
                    environment=_pairs(args.env, "env"),
                )
            except KeyboardInterrupt:
                print("[local] training stopped", file=sys.stderr)
                return 130
            if not result.succeeded:
                print(f"[local] training failed: {result.failure_reason}", file=sys.stderr)
                return result.exit_code or 1
            print(
                f"[local] model: {result.model_artifact}\n[local] output: {result.output_artifact}"
            )
            return 0
        if args.command == "transform":
            return transform.command(args)
        if args.command == "invoke-async":
            return async_endpoint.command(args)
        return _serve(args)
    except (LocalModeError, AssemblyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
