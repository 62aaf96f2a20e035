"""A local asynchronous endpoint: request files in, output (or failure) files out.

SageMaker's async inference reads each request from S3, sends it to the container's
``/invocations`` and writes the reply to the output path as ``<inference id>.out``, or the
error to the failure path as ``<inference id>-error.out``:
https://docs.aws.amazon.com/sagemaker/latest/dg/async-inference-check-predictions.html

Here the real ``serve`` runs on loopback (:class:`~chainer_sagemaker_cdk.local.LocalEndpoint`)
and the request files are local files. Up to ``max_concurrent`` requests are in flight at once,
each on its own connection, as SageMaker sends at most ``MaxConcurrentInvocationsPerInstance``
to one instance (``serve`` answers them with its workers; a busy worker queues them). What it
does not model: the queue's TTL and retries, SNS notifications, S3 (use files), several
instances.

    python -m chainer_sagemaker_cdk.local invoke-async --model-data model.tar.gz \\
        --input request.npy --output-dir async-output --failure-dir async-failures
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import sys
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from chainer_sagemaker_cdk.local._commands import LocalModeError

__all__ = ["AsyncOutcome", "add_arguments", "command", "invoke_async", "serve_async"]

_TYPES = {".npy": "application/x-npy", ".json": "application/json", ".csv": "text/csv"}


@dataclass(frozen=True)
class AsyncOutcome:
    """One request's result: ``output`` on success, ``failure`` otherwise (never both)."""

    inference_id: str
    request: Path
    status: int
    output: Path | None
    failure: Path | None

    @property
    def succeeded(self) -> bool:
        return self.output is not None


def content_type_of(request: Path, given: str | None) -> str:
    """``given``, or the type the file's suffix names; a clear error otherwise."""
    if given:
        return given
    try:
        return _TYPES[request.suffix.lower()]
    except KeyError:
        raise LocalModeError(
            f"cannot tell the content type of {request.name}: pass --content-type "
            f"(or name it {', '.join(sorted(_TYPES))})"
        ) from None


def invoke_async(
    endpoint_url: str,
    request: Path,
    *,
    output_dir: Path,
    failure_dir: Path,
    content_type: str | None = None,
    accept: str | None = None,
    inference_id: str | None = None,
    timeout: float = 300.0,
    on_sent: Callable[[str], None] | None = None,
) -> AsyncOutcome:
    """Send one request file to a running model server; write its output or failure file.

    ``on_sent(inference_id)`` is called once the request is on the wire, before the reply.
    """
    request = Path(request)
    inference_id = inference_id or str(uuid.uuid4())
    headers = {"Content-Type": content_type_of(request, content_type)}
    if accept:
        headers["Accept"] = accept
    host, _, port = endpoint_url.removeprefix("http://").rstrip("/").partition(":")
    conn = http.client.HTTPConnection(host, int(port or 80), timeout=timeout)
    try:
        conn.request("POST", "/invocations", body=request.read_bytes(), headers=headers)
        if on_sent is not None:
            on_sent(inference_id)
        response = conn.getresponse()
        status, body = response.status, response.read()
    except (OSError, http.client.HTTPException) as exc:
        status, body = 0, f"the model server did not answer: {exc}".encode()
    finally:
        conn.close()
    if 200 <= status < 300:
        output_dir.mkdir(parents=True, exist_ok=True)
        out = output_dir / f"{inference_id}.out"
        out.write_bytes(body)
        return AsyncOutcome(inference_id, request, status, out, None)
    failure_dir.mkdir(parents=True, exist_ok=True)
    failed = failure_dir / f"{inference_id}-error.out"
    failed.write_bytes(body)
    return AsyncOutcome(inference_id, request, status, None, failed)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve_async(
    requests: Sequence[Path],
    *,
    model_data: Path,
    work_dir: Path,
    output_dir: Path,
    failure_dir: Path,
    environment: Mapping[str, str] | None = None,
    code: str | Path | None = None,
    content_type: str | None = None,
    accept: str | None = None,
    workers: int | None = None,
    max_concurrent: int = 1,
    on_sent: Callable[[str], None] | None = None,
) -> list[AsyncOutcome]:
    """Start ``serve`` for the model, answer every request file, stop it.

    Up to ``max_concurrent`` requests are in flight at once (``MaxConcurrentInvocations
    PerInstance``); the outcomes come back in the order of ``requests``. Each request's
    inference id is its file name without the suffix, so ``req-7.npy`` ends as ``req-7.out``
    (or ``req-7-error.out``).
    """
    from chainer_sagemaker_cdk.local.serving import LocalEndpoint

    check_concurrency(max_concurrent)
    ids = [Path(r).stem for r in requests]
    if len(set(ids)) != len(ids):
        raise LocalModeError(f"two requests share a name (the inference id): {ids}")
    endpoint = LocalEndpoint(
        model_data,
        work_dir,
        environment=environment,
        code=code,
        port=_free_port(),
        workers=workers,
    )
    with (
        endpoint,
        ThreadPoolExecutor(max_concurrent, thread_name_prefix="invoke-async") as pool,
    ):
        futures = [
            pool.submit(
                invoke_async,
                endpoint.url,
                Path(r),
                output_dir=output_dir,
                failure_dir=failure_dir,
                content_type=content_type,
                accept=accept,
                inference_id=i,
                on_sent=on_sent,
            )
            for r, i in zip(requests, ids, strict=True)
        ]
        return [f.result() for f in futures]


def check_concurrency(value: int) -> None:
    """SageMaker's range for ``MaxConcurrentInvocationsPerInstance`` (1 to 1000)."""
    if not 1 <= value <= 1000:
        raise LocalModeError(
            f"--max-concurrent-invocations {value}: use 1 to 1000 (SageMaker's range for "
            "MaxConcurrentInvocationsPerInstance)"
        )


# -- command line -------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``invoke-async`` subcommand's options."""
    parser.add_argument("--input", action="append", required=True, type=Path, help="request file")
    parser.add_argument("--output-dir", type=Path, default=Path("async-output"))
    parser.add_argument("--failure-dir", type=Path, default=Path("async-failures"))
    parser.add_argument("--model", help="construct path of the ChainerModel (several in the stack)")
    parser.add_argument("--model-data", type=Path, help="model.tar.gz or a directory")
    parser.add_argument("--code", type=Path, help="the serving code, without a cloud assembly")
    parser.add_argument("--program", help="with --code: the module defining model_fn")
    parser.add_argument("--content-type", help="default: from the suffix (.npy, .json, .csv)")
    parser.add_argument("--accept")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument(
        "--max-concurrent-invocations",
        type=int,
        help="requests in flight at once; default: the stack's async endpoint's "
        "MaxConcurrentInvocationsPerInstance for the model, else 1",
    )
    parser.add_argument("--work-dir", type=Path, default=Path("local-run"))


def configured_concurrency(cdk_out: Path, stack: str | None, model_path: str) -> int | None:
    """``MaxConcurrentInvocationsPerInstance`` of the stack's async endpoint serving the model
    at ``model_path`` (None: no such endpoint, or SageMaker's choice).

    Read from the ``ChainerEndpoint``'s construct metadata in the manifest.
    """
    from chainer_sagemaker_cdk.endpoint import ASYNC_ENDPOINT_METADATA
    from chainer_sagemaker_cdk.local.assembly import CloudAssembly

    entries = CloudAssembly(cdk_out)._entries(stack, ASYNC_ENDPOINT_METADATA)
    for _, data in entries:
        if model_path.strip("/") in [p.strip("/") for p in data.get("modelPaths", [])]:
            value = data.get("maxConcurrentInvocationsPerInstance")
            return int(value) if value is not None else None
    return None


def _model(
    args: argparse.Namespace,
) -> tuple[dict[str, str], str | None, Path | None, int | None]:
    """The model's environment, code, data and configured concurrency."""
    if args.code is not None:
        if not args.program:
            raise LocalModeError("--code needs --program (the module that defines model_fn)")
        return {"SAGEMAKER_PROGRAM": args.program}, str(args.code), None, None
    from chainer_sagemaker_cdk.local.assembly import CloudAssembly

    models = CloudAssembly(args.cdk_out).models(args.stack)
    if args.model:
        models = [m for m in models if m.path.strip("/").endswith(args.model.strip("/"))]
    if len(models) != 1:
        raise LocalModeError(
            f"name one model with --model; the stack has {[m.path for m in models]}"
            if models
            else "no such ChainerModel in the stack; nothing to serve"
        )
    model = models[0]
    data = Path(model.model_data_asset) if model.model_data_asset else None
    concurrency = configured_concurrency(args.cdk_out, args.stack, model.path)
    return dict(model.environment), model.code_asset, data, concurrency


def command(args: argparse.Namespace) -> int:
    """Exit 0 when every request has its output file, 1 when any has a failure file."""
    environment, code, model_data, configured = _model(args)
    concurrency = args.max_concurrent_invocations
    if concurrency is None:
        concurrency = configured or 1
    model_data = args.model_data or model_data
    if model_data is None:
        raise LocalModeError(
            "the model gets its data at deploy time (a training job); pass --model-data "
            "model.tar.gz (for example from `train`'s artifacts)"
        )
    check_concurrency(concurrency)
    for request in args.input:
        if not request.is_file():
            raise LocalModeError(f"--input {request}: no such file")
        content_type_of(request, args.content_type)  # refused before serve starts
    outcomes = serve_async(
        args.input,
        model_data=model_data,
        work_dir=args.work_dir,
        output_dir=args.output_dir,
        failure_dir=args.failure_dir,
        environment=environment,
        code=code,
        content_type=args.content_type,
        accept=args.accept,
        workers=args.workers,
        max_concurrent=concurrency,
    )
    for o in outcomes:
        print(
            json.dumps(
                {
                    "inferenceId": o.inference_id,
                    "status": o.status,
                    "output": str(o.output) if o.output else None,
                    "failure": str(o.failure) if o.failure else None,
                }
            )
        )
    failed = [o for o in outcomes if not o.succeeded]
    if failed:
        print(f"[local] {len(failed)} of {len(outcomes)} requests failed", file=sys.stderr)
        return 1
    return 0
