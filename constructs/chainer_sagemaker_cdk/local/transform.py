"""Batch transform on this machine: what a SageMaker transform job does, with the real ``serve``.

``run_transform`` reads every input object (a local file or directory, ``file://`` or an
``s3://`` prefix), splits it into records as SageMaker does (``SplitType`` ``Line``: one record
per non-blank line; ``None``: the whole object; ``RecordIO`` and ``TFRecord``: one framed record
each, sent with its framing), groups records into requests (``MultiRecord``: as many as fit in
``MaxPayloadInMB``; ``SingleRecord``: one), sends up to ``MaxConcurrentTransforms`` requests at
a time to ``POST /invocations``, and writes ``<relative path>.out`` per input object under the
output (a directory or an ``s3://`` prefix), in the input's order, joined by ``AssembleWith``
(``Line``: a newline after every output record). ``DataProcessing`` filters are JSONPath
(jsonpath-ng) over CSV records (as arrays of fields) and JSON records.

As on SageMaker (https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_TransformOutput.html),
an object with a failed request gets no ``.out`` file, the other objects still do, and the job
fails: ``ClientError: See job logs for more information`` when the model answered 4xx,
``AlgorithmError: ...`` otherwise. The per-object reasons are written as SageMaker's data log
writes them (``[sagemaker logs]: <uri>: ClientError: 400``, then the model's message) to
stderr and ``<work dir>/data-log.txt``. Unset batch settings come from the container's
``GET /execution-parameters``, as SageMaker asks for them. Failed requests are retried
``InvocationsMaxRetries`` times, except 4xx answers (the same request gets the same answer).

Not modelled: instances (one local server stands for ``InstanceCount`` instances),
SageMaker's own limits on instance storage. ``ManifestFile`` inputs are read as the API
reference describes them (a JSON list: ``{"prefix": ...}``, then keys relative to it).
"""

from __future__ import annotations

import argparse
import csv
import gzip
import http.client
import io
import json
import socket
import struct
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from chainer_sagemaker_cdk.local._commands import LocalModeError

__all__ = [
    "TransformConfig",
    "TransformResult",
    "execution_parameters",
    "run_transform",
    "split_records",
    "transform_model",
]

MB = 1024 * 1024
SPLIT_TYPES = ("None", "Line", "RecordIO", "TFRecord")
_LINE_TYPES = ("text/csv", "application/jsonlines", "application/x-jsonlines", "text/plain")


@dataclass(frozen=True)
class TransformConfig:
    """A transform job's settings, in CreateTransformJob's spelling and meaning.

    ``None`` for ``batch_strategy``, ``max_payload_in_mb`` and ``max_concurrent_transforms``
    means: ask the container (``GET /execution-parameters``), else SageMaker's defaults
    (SingleRecord, 6 MB, 1).
    """

    content_type: str | None = None
    split_type: str = "None"
    compression_type: str = "None"
    batch_strategy: str | None = None
    max_payload_in_mb: int | None = None
    max_concurrent_transforms: int | None = None
    assemble_with: str = "None"
    accept: str | None = None
    input_filter: str | None = None
    output_filter: str | None = None
    join_source: str = "None"
    invocations_timeout: float = 600.0
    invocations_max_retries: int = 3
    environment: Mapping[str, str] = field(default_factory=dict)
    s3_data_type: str = "S3Prefix"
    """``ManifestFile``: the input is a manifest (``[{"prefix": ...}, "key", ...]``)."""

    def __post_init__(self) -> None:
        checks = (
            ("split_type", self.split_type, SPLIT_TYPES),
            ("compression_type", self.compression_type, ("None", "Gzip")),
            ("batch_strategy", self.batch_strategy, (None, "SingleRecord", "MultiRecord")),
            ("assemble_with", self.assemble_with, ("None", "Line")),
            ("join_source", self.join_source, ("None", "Input")),
            ("s3_data_type", self.s3_data_type, ("S3Prefix", "ManifestFile")),
        )
        for name, value, allowed in checks:
            if value not in allowed:
                shown = ", ".join(a for a in allowed if a)
                raise LocalModeError(f"{name}={value!r} is not valid: use one of {shown}")
        payload = self.max_payload_in_mb
        if payload is not None and not 0 <= payload <= 100:
            raise LocalModeError(f"max_payload_in_mb={payload} is not valid: use 0 to 100")
        if self.max_concurrent_transforms is not None and self.max_concurrent_transforms < 0:
            raise LocalModeError("max_concurrent_transforms must be 0 (the container's) or more")

    @classmethod
    def from_metadata(cls, data: Mapping[str, Any]) -> TransformConfig:
        """The settings a ``ChainerTransformer`` recorded in ``cdk.out``."""
        source = data.get("transformInput", {})
        output = data.get("transformOutput", {})
        processing = data.get("dataProcessing") or {}
        client = data.get("modelClientConfig") or {}
        return cls(
            content_type=source.get("ContentType"),
            split_type=source.get("SplitType", "None"),
            compression_type=source.get("CompressionType", "None"),
            batch_strategy=data.get("batchStrategy"),
            max_payload_in_mb=data.get("maxPayloadInMB"),
            max_concurrent_transforms=data.get("maxConcurrentTransforms"),
            assemble_with=output.get("AssembleWith", "None"),
            accept=output.get("Accept"),
            input_filter=processing.get("InputFilter"),
            output_filter=processing.get("OutputFilter"),
            join_source=processing.get("JoinSource", "None"),
            invocations_timeout=float(client.get("InvocationsTimeoutInSeconds", 600)),
            invocations_max_retries=int(client.get("InvocationsMaxRetries", 3)),
            environment=dict(data.get("environment", {})),
            s3_data_type=data.get("s3DataType", "S3Prefix"),
        )

    def with_overrides(self, **values: Any) -> TransformConfig:
        """A copy with the given (non-None) settings replaced."""
        return replace(self, **{k: v for k, v in values.items() if v is not None})

    def container_environment(self) -> dict[str, str]:
        """What SageMaker sets in a transform container (as the SageMaker SDK's local mode)."""
        env = {"SAGEMAKER_BATCH": "true", **self.environment}
        if self.max_payload_in_mb:
            env["SAGEMAKER_MAX_PAYLOAD_IN_MB"] = str(self.max_payload_in_mb)
        if self.max_concurrent_transforms:
            env["SAGEMAKER_MAX_CONCURRENT_TRANSFORMS"] = str(self.max_concurrent_transforms)
        if self.batch_strategy:
            env["SAGEMAKER_BATCH_STRATEGY"] = (
                "MULTI_RECORD" if self.batch_strategy == "MultiRecord" else "SINGLE_RECORD"
            )
        return env


@dataclass
class FileResult:
    """One input object: its records, and its ``.out`` file or the reason it has none."""

    source: str
    relative: str
    records: int
    output: str | None = None
    error: str | None = None
    client_error: bool = False


@dataclass
class TransformResult:
    files: list[FileResult]
    records: int
    requests: int
    seconds: float
    data_log: list[str]
    config: TransformConfig

    @property
    def succeeded(self) -> bool:
        return all(f.error is None for f in self.files)

    @property
    def failure_reason(self) -> str | None:
        """DescribeTransformJob's ``FailureReason`` for this outcome."""
        failed = [f for f in self.files if f.error is not None]
        if not failed:
            return None
        kind = "ClientError" if any(f.client_error for f in failed) else "AlgorithmError"
        return f"{kind}: See job logs for more information"

    @property
    def outputs(self) -> list[str]:
        return [f.output for f in self.files if f.output is not None]

    @property
    def records_per_second(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else 0.0


# -- records ---------------------------------------------------------------------------------
def split_records(data: bytes, split_type: str) -> list[bytes]:
    """Records of one object as SageMaker splits them (RecordIO/TFRecord keep their framing)."""
    if split_type == "None":
        return [data] if data else []
    if split_type == "Line":
        lines = (line.rstrip(b"\r") for line in data.split(b"\n"))
        return [line for line in lines if line.strip()]
    if split_type == "TFRecord":
        return list(_tfrecords(data))
    return list(_recordio(data))


def _tfrecords(data: bytes) -> Iterator[bytes]:
    # uint64 length, uint32 masked CRC of the length, data, uint32 masked CRC of the data
    at = 0
    while at < len(data):
        if at + 12 > len(data):
            raise ValueError("truncated TFRecord header")
        (length,) = struct.unpack_from("<Q", data, at)
        end = at + 12 + length + 4
        if end > len(data):
            raise ValueError("truncated TFRecord")
        yield data[at:end]
        at = end


_RECORDIO_MAGIC = 0xCED7230A


def _recordio(data: bytes) -> Iterator[bytes]:
    # MXNet RecordIO: uint32 magic, uint32 (cflag << 29 | length), data padded to 4 bytes;
    # cflag 1/2/3 continue a record over several parts (kept together here).
    at = 0
    start = 0
    while at < len(data):
        if at + 8 > len(data):
            raise ValueError("truncated RecordIO header")
        magic, word = struct.unpack_from("<II", data, at)
        if magic != _RECORDIO_MAGIC:
            raise ValueError(f"bad RecordIO magic at byte {at}")
        cflag, length = word >> 29, word & ((1 << 29) - 1)
        at += 8 + ((length + 3) & ~3)
        if at > len(data):
            raise ValueError("truncated RecordIO record")
        if cflag in (0, 3):
            yield data[start:at]
            start = at


def _batches(
    records: Sequence[bytes], strategy: str, payload_mb: int, joiner: bytes
) -> list[list[int]]:
    """Record indexes per request: one each, or as many as fit in ``payload_mb`` (0: all)."""
    if strategy == "SingleRecord":
        return [[i] for i in range(len(records))]
    limit = payload_mb * MB
    batches: list[list[int]] = []
    current: list[int] = []
    size = 0
    for i, record in enumerate(records):
        extra = len(record) + len(joiner)
        if current and limit and size + extra > limit:
            batches.append(current)
            current, size = [], 0
        current.append(i)
        size += extra
    if current:
        batches.append(current)
    return batches


# -- DataProcessing ---------------------------------------------------------------------------
class _Filters:
    """InputFilter, JoinSource and OutputFilter over CSV (arrays of fields) and JSON records."""

    def __init__(self, config: TransformConfig) -> None:
        self.config = config
        self.active = bool(
            config.input_filter or config.output_filter or config.join_source == "Input"
        )
        self._input = _compile(config.input_filter)
        self._output = _compile(config.output_filter)
        self.csv_in = (config.content_type or "").split(";")[0].strip() == "text/csv"
        accept = (config.accept or config.content_type or "").split(";")[0].strip()
        self.csv_out = accept == "text/csv"

    def parse_input(self, record: bytes) -> Any:
        text = record.decode("utf-8")
        if self.csv_in:
            return next(csv.reader([text]))
        return json.loads(text)

    def input_record(self, record: bytes) -> bytes:
        if self._input is None:
            return record
        return self._dump(_select(self._input, self.parse_input(record)), self.csv_in)

    def output_record(self, source: bytes, output: bytes) -> bytes:
        if not self.active:
            return output
        value: Any = self._parse_output(output)
        if self.config.join_source == "Input":
            joined = self.parse_input(source)
            if isinstance(joined, dict):
                joined = {**joined, "SageMakerOutput": value}
            elif isinstance(joined, list):
                joined = [*joined, *(value if isinstance(value, list) else [value])]
            else:
                joined = [joined, value]
            value = joined
        if self._output is not None:
            value = _select(self._output, value)
        return self._dump(value, self.csv_out)

    def _parse_output(self, output: bytes) -> Any:
        text = output.decode("utf-8")
        if self.csv_out:
            return next(csv.reader([text]))
        return json.loads(text)

    @staticmethod
    def _dump(value: Any, as_csv: bool) -> bytes:
        if as_csv:
            buffer = io.StringIO()
            csv.writer(buffer, lineterminator="").writerow(
                value if isinstance(value, list) else [value]
            )
            return buffer.getvalue().encode()
        return json.dumps(value, separators=(",", ":")).encode()


def _compile(path: str | None) -> Any:
    if not path:
        return None
    try:
        from jsonpath_ng.ext import parse  # type: ignore[attr-defined]
    except ImportError as exc:  # pragma: no cover - a dependency of the package
        raise LocalModeError(
            "the JSONPath filters need jsonpath-ng: pip install jsonpath-ng"
        ) from exc
    try:
        return parse(path)
    except Exception as exc:
        raise LocalModeError(f"the JSONPath {path!r} does not parse: {exc}") from None


def _select(compiled: Any, value: Any) -> Any:
    """One value for a plain path (``$.features``, ``$[0]``), a list for slices, unions and
    wildcards (``$[1:]``, ``$[0,2]``, ``$[*]``), an object for several keys of an object
    (``$['id','SageMakerOutput']``), as SageMaker's filters give them."""
    matches = compiled.find(value)
    fields = getattr(getattr(compiled, "right", compiled), "fields", None)
    if isinstance(value, dict) and fields is not None and len(fields) > 1:
        return {str(m.path): m.value for m in matches}
    values = [m.value for m in matches]
    text = str(compiled)
    if len(values) == 1 and not any(c in text for c in (":", ",", "*", "..")):
        return values[0]
    return values


# -- HTTP ---------------------------------------------------------------------------------------
def execution_parameters(endpoint_url: str, timeout: float = 10.0) -> dict[str, Any]:
    """The container's ``GET /execution-parameters`` answer, or ``{}`` when it has none."""
    try:
        url = endpoint_url.rstrip("/") + "/execution-parameters"
        with urllib.request.urlopen(url, timeout=timeout) as reply:  # noqa: S310 - http URL
            data = json.loads(reply.read())
    except (urllib.error.URLError, OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


class _Client:
    """One kept-alive connection per thread to the model server."""

    def __init__(
        self, endpoint_url: str, timeout: float, content_type: str | None, accept: str | None
    ) -> None:
        url = urlparse(endpoint_url)
        if url.scheme != "http" or not url.hostname:
            raise LocalModeError(f"the endpoint URL must be http://host:port, got {endpoint_url!r}")
        self.host, self.port = url.hostname, url.port or 80
        self.path = url.path.rstrip("/") + "/invocations"
        self.timeout = timeout
        self.headers = {}
        if content_type:
            self.headers["Content-Type"] = content_type
        if accept:
            self.headers["Accept"] = accept
        self._local = threading.local()

    def post(self, body: bytes) -> tuple[int, bytes, str]:
        for attempt in (1, 2):  # a kept-alive connection the server closed: reconnect once
            conn = getattr(self._local, "conn", None)
            if conn is None:
                conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
                self._local.conn = conn
            try:
                conn.request("POST", self.path, body=body, headers=self.headers)
                reply = conn.getresponse()
                return reply.status, reply.read(), reply.getheader("Content-Type", "")
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                conn.close()
                self._local.conn = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")


# -- the job ----------------------------------------------------------------------------------
@dataclass
class _Work:
    result: FileResult
    records: list[bytes]
    batches: list[list[int]]
    futures: list[Future[tuple[int, bytes, str]]]


def _read(uri: str) -> bytes:
    if uri.startswith("s3://"):
        import boto3

        url = urlparse(uri)
        body = boto3.client("s3").get_object(Bucket=url.netloc, Key=url.path.lstrip("/"))["Body"]
        return bytes(body.read())
    return Path(urlparse(uri).path if uri.startswith("file://") else uri).read_bytes()


def _manifest_inputs(source: str, work_dir: Path) -> list[tuple[Path, str, str]]:
    """The objects a manifest lists: ``[{"prefix": "s3://bucket/p/"}, "a.csv", "b/c.csv"]``
    (https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_TransformS3DataSource.html)."""
    try:
        entries = json.loads(_read(source))
        prefix = str(entries[0]["prefix"])
        keys = [str(k) for k in entries[1:]]
    except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:
        raise LocalModeError(
            f'{source} is not a manifest ([{{"prefix": "s3://..."}}, "key", ...]): {exc}'
        ) from None
    out = []
    downloads = (work_dir / "transform-input" / "manifest").resolve()
    for rel in keys:
        uri = prefix + rel
        if uri.startswith("s3://"):
            local = (downloads / rel).resolve()
            if not local.is_relative_to(downloads):
                raise LocalModeError(f"refusing manifest entry {rel!r}: it leaves the prefix")
            local.parent.mkdir(parents=True, exist_ok=True)
            local.write_bytes(_read(uri))
        else:
            local = Path(urlparse(uri).path if uri.startswith("file://") else uri)
            if not local.is_file():
                raise LocalModeError(f"manifest entry {uri} does not exist")
        out.append((local, rel, uri))
    return out


def _inputs(
    source: str | Path, work_dir: Path, manifest: bool = False
) -> tuple[list[tuple[Path, str, str]], str]:
    """(local file, path relative to the input, the URI SageMaker would name) per object."""
    text = str(source)
    if manifest:
        return _manifest_inputs(text, work_dir), text
    if text.startswith("s3://"):
        from chainer_sagemaker_cdk.local.training import resolve_channel

        downloads = work_dir / "transform-input"
        root = resolve_channel("input", text, downloads)
        files = sorted(p for p in root.rglob("*") if p.is_file())
        if len(files) == 1 and not text.endswith("/") and text.endswith("/" + files[0].name):
            return [(files[0], files[0].name, text)], text  # one object named in full
        base = text.rstrip("/")
        out = [(p, p.relative_to(root).as_posix(), "") for p in files]
        out = [(p, rel, f"{base}/{rel}") for p, rel, _ in out]
        return out, text
    path = Path(urlparse(text).path if text.startswith("file://") else text).resolve()
    if path.is_file():
        return [(path, path.name, path.as_uri())], text
    if not path.is_dir():
        raise LocalModeError(f"the transform input {path} does not exist")
    files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
    if not files:
        raise LocalModeError(f"the transform input {path} holds no files")
    return [(p, p.relative_to(path).as_posix(), p.as_uri()) for p in files], text


class _Sink:
    """Where the ``.out`` objects go: a directory, or an ``s3://`` prefix (boto3)."""

    def __init__(self, output: str | Path) -> None:
        text = str(output)
        self.s3: Any = None
        if text.startswith("s3://"):
            import boto3

            url = urlparse(text)
            self.bucket, self.prefix = url.netloc, url.path.strip("/")
            self.s3 = boto3.client("s3")
            self.directory = None
        else:
            self.directory = Path(urlparse(text).path if text.startswith("file://") else text)
            self.directory.mkdir(parents=True, exist_ok=True)

    def write(self, relative: str, data: bytes) -> str:
        name = f"{relative}.out"
        if self.s3 is not None:
            key = f"{self.prefix}/{name}" if self.prefix else name
            self.s3.put_object(Bucket=self.bucket, Key=key, Body=data)
            return f"s3://{self.bucket}/{key}"
        assert self.directory is not None
        target = (self.directory / name).resolve()
        if not target.is_relative_to(self.directory.resolve()):
            raise LocalModeError(f"refusing to write {name!r} outside {self.directory}")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        return str(target)


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _split_reply(body: bytes, count: int, accept: str) -> list[bytes] | None:
    """One output record per input record of the request, or None when they cannot be told
    apart (then the count does not match)."""
    if count == 1:
        return [body.rstrip(b"\r\n") if accept in _LINE_TYPES else body]
    if accept == "application/json":
        try:
            value = json.loads(body)
        except ValueError:
            return None
        if isinstance(value, list) and len(value) == count:
            return [json.dumps(v, separators=(",", ":")).encode() for v in value]
        return None
    lines = [line.rstrip(b"\r") for line in body.split(b"\n")]
    while lines and not lines[-1]:
        lines.pop()
    return lines if len(lines) == count else None


def run_transform(
    config: TransformConfig,
    source: str | Path,
    output: str | Path,
    *,
    endpoint_url: str,
    work_dir: Path | None = None,
    log: Callable[[str], None] = _stderr,
    progress_every: float = 2.0,
) -> TransformResult:
    """Transform every object under ``source`` with the model server at ``endpoint_url``."""
    started = time.monotonic()
    work = Path(work_dir or Path("local-run")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    asked = execution_parameters(endpoint_url)
    strategy = config.batch_strategy or (
        "MultiRecord"
        if str(asked.get("BatchStrategy", "")).upper() == "MULTI_RECORD"
        else "SingleRecord"
    )
    payload = config.max_payload_in_mb
    if payload is None:
        payload = int(asked.get("MaxPayloadInMB", 6) or 6)
    concurrency = config.max_concurrent_transforms or int(
        asked.get("MaxConcurrentTransforms", 1) or 1
    )
    config = replace(
        config,
        batch_strategy=strategy,
        max_payload_in_mb=payload,
        max_concurrent_transforms=concurrency,
    )
    data_log = [
        f"[sagemaker logs]: MaxConcurrentTransforms={concurrency}, MaxPayloadInMB={payload}, "
        f"BatchStrategy={strategy.upper().replace('RECORD', '_RECORD')}"
    ]
    log(data_log[0])
    filters = _Filters(config)
    accept = (config.accept or "").split(";")[0].strip()
    client = _Client(endpoint_url, config.invocations_timeout, config.content_type, config.accept)
    sink = _Sink(output)
    joiner = b"\n" if config.split_type == "Line" else b""
    inputs, _ = _inputs(source, work, manifest=config.s3_data_type == "ManifestFile")

    def call(body: bytes) -> tuple[int, bytes, str]:
        reply: tuple[int, bytes, str] = (500, b"", "")
        for _ in range(config.invocations_max_retries + 1):
            try:
                reply = client.post(body)
            except (OSError, http.client.HTTPException) as exc:
                reply = (500, f"the request failed: {exc}".encode(), "text/plain")
            if reply[0] < 500:
                return reply
        return reply

    jobs: list[_Work] = []
    requests = 0
    done_records = 0
    last_report = [started]

    def report(files_done: int, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - last_report[0] < progress_every:
            return
        last_report[0] = now
        total = sum(j.result.records for j in jobs)
        rate = done_records / max(now - started, 1e-9)
        log(
            f"[transform] {files_done}/{len(inputs)} files, {done_records}/{total} records, "
            f"{rate:.0f} records/s"
        )

    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="transform") as pool:
        for path, relative, uri in inputs:
            result = FileResult(source=uri, relative=relative, records=0)
            try:
                data = path.read_bytes()
                if config.compression_type == "Gzip":
                    data = gzip.decompress(data)
                records = split_records(data, config.split_type)
                sent = [filters.input_record(r) for r in records]
            except (OSError, ValueError, UnicodeDecodeError) as exc:
                result.error = f"{uri}: ClientError: the object cannot be read as records: {exc}"
                result.client_error = True
                jobs.append(_Work(result, [], [], []))
                continue
            result.records = len(records)
            batches = _batches(sent, strategy, payload, joiner)
            too_big = [
                b for b in batches if payload and len(b) == 1 and len(sent[b[0]]) > payload * MB
            ]
            if too_big:
                result.error = f"{uri}: ClientError: Too much data for max payload size"
                result.client_error = True
                jobs.append(_Work(result, records, [], []))
                continue
            futures = [
                pool.submit(call, joiner.join(sent[i] for i in batch) + (joiner if joiner else b""))
                for batch in batches
            ]
            requests += len(futures)
            jobs.append(_Work(result, records, batches, futures))
        for files_done, job in enumerate(jobs, start=1):
            _finish(job, filters, accept, config, sink)
            done_records += job.result.records if job.result.error is None else 0
            if job.result.error is not None:
                for line in job.result.error.split("\n"):
                    data_log.append(f"[sagemaker logs]: {line}")
                    log(data_log[-1])
            report(files_done, final=files_done == len(jobs))
    seconds = time.monotonic() - started
    (work / "data-log.txt").write_text("\n".join(data_log) + "\n")
    return TransformResult(
        files=[j.result for j in jobs],
        records=sum(j.result.records for j in jobs),
        requests=requests,
        seconds=seconds,
        data_log=data_log,
        config=config,
    )


def _finish(
    job: _Work, filters: _Filters, accept: str, config: TransformConfig, sink: _Sink
) -> None:
    """Wait for one object's requests; write its ``.out`` only if every request succeeded."""
    result = job.result
    if result.error is not None:
        return
    replies = [f.result() for f in job.futures]
    for status, body, _ in replies:
        if status >= 400:
            message = _message(body)
            if status < 500:
                result.error = (
                    f"{result.source}: ClientError: {status}\n{result.source}: Message:\n{message}"
                )
                result.client_error = True
            else:
                result.error = (
                    f"{result.source}: Bad HTTP status received from algorithm: {status}\n"
                    f"{result.source}: Message:\n{message}"
                )
            return
    per_record = filters.active or config.assemble_with == "Line"
    parts: list[bytes] = []
    for (_, body, content_type), batch in zip(replies, job.batches, strict=True):
        if not per_record:
            parts.append(body)
            continue
        # the reply's own type first: a JSON request may be answered as JSON Lines
        kind = content_type.split(";")[0].strip() or accept
        outputs = _split_reply(body, len(batch), kind)
        if outputs is None:
            result.error = (
                f"{result.source}: AlgorithmError: the model answered a request of "
                f"{len(batch)} records with a reply that does not hold {len(batch)} records "
                f"({kind or 'no content type'}); answer one output record per input record"
            )
            return
        for index, out in zip(batch, outputs, strict=True):
            try:
                record = filters.output_record(job.records[index], out)
            except (ValueError, UnicodeDecodeError, StopIteration) as exc:
                result.error = (
                    f"{result.source}: ClientError: the filters failed on record {index + 1}: {exc}"
                )
                result.client_error = True
                return
            parts.append(record + (b"\n" if config.assemble_with == "Line" else b""))
    result.output = sink.write(result.relative, b"".join(parts))


def _message(body: bytes) -> str:
    text = body.decode("utf-8", "replace")
    try:
        payload = json.loads(text)
    except ValueError:
        return text[:2000]
    if isinstance(payload, dict) and "message" in payload:
        return str(payload["message"])[:2000]
    return text[:2000]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def transform_model(
    config: TransformConfig,
    source: str | Path,
    output: str | Path,
    *,
    model_data: Path,
    work_dir: Path,
    environment: Mapping[str, str] | None = None,
    code: str | Path | None = None,
    workers: int | None = None,
    port: int | None = None,
    log: Callable[[str], None] = _stderr,
) -> TransformResult:
    """Start ``serve`` for the model as a transform container (``SAGEMAKER_BATCH`` and the
    batch settings in its environment, as SageMaker sets them), transform, stop it."""
    from chainer_sagemaker_cdk.local.serving import LocalEndpoint

    env = {**(environment or {}), **config.container_environment()}
    endpoint = LocalEndpoint(
        model_data, work_dir, environment=env, code=code, port=port or _free_port(), workers=workers
    )
    with endpoint:
        log(f"[transform] serve is up at {endpoint.url}")
        return run_transform(
            config, source, output, endpoint_url=endpoint.url, work_dir=work_dir, log=log
        )


# -- command line -------------------------------------------------------------------------------
TRANSFORM_METADATA = "chainer-sagemaker:transform"  # written by ChainerTransformer


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``transform`` subcommand's options (flags override the synthesized transformer)."""
    parser.add_argument("--input", required=True, help="file, directory, file:// or s3:// prefix")
    parser.add_argument("--output", required=True, help="directory or s3:// prefix for the .out")
    parser.add_argument("--transformer", help="construct path of the ChainerTransformer")
    parser.add_argument("--model", help="construct path of a ChainerModel (no transformer)")
    parser.add_argument("--model-data", type=Path, help="model.tar.gz or a directory")
    parser.add_argument("--code", type=Path, help="the serving code, without a cloud assembly")
    parser.add_argument("--program", help="with --code: the module defining model_fn")
    parser.add_argument("--endpoint-url", help="use a model server that is already running")
    parser.add_argument(
        "--manifest",
        action="store_true",
        help="--input is a manifest file (S3DataType ManifestFile)",
    )
    parser.add_argument("--content-type")
    parser.add_argument("--split-type", choices=SPLIT_TYPES)
    parser.add_argument("--compression-type", choices=("None", "Gzip"))
    parser.add_argument("--batch-strategy", choices=("SingleRecord", "MultiRecord"))
    parser.add_argument("--max-payload-mb", type=int, dest="max_payload_in_mb")
    parser.add_argument("--max-concurrent", type=int, dest="max_concurrent_transforms")
    parser.add_argument("--assemble-with", choices=("None", "Line"))
    parser.add_argument("--accept")
    parser.add_argument("--input-filter")
    parser.add_argument("--output-filter")
    parser.add_argument("--join-source", choices=("None", "Input"))
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--workers", type=int, help="model server workers (default: one per CPU)")
    parser.add_argument("--work-dir", type=Path, default=Path("local-run"))


def _model_from_assembly(
    args: argparse.Namespace,
) -> tuple[TransformConfig, dict[str, str], str | None, Path | None]:
    from chainer_sagemaker_cdk.local.assembly import AssemblyError, CloudAssembly

    assembly = CloudAssembly(args.cdk_out)
    stack = args.stack
    entries = assembly._entries(stack, TRANSFORM_METADATA)  # same reader as models/jobs
    if args.transformer:
        entries = [
            (p, d) for p, d in entries if p.rstrip("/").endswith(args.transformer.strip("/"))
        ]
        if len(entries) != 1:
            raise AssemblyError(f"no single transformer {args.transformer!r} in the stack")
    config = TransformConfig()
    data: dict[str, Any] = {}
    if len(entries) == 1 and not args.model:
        data = entries[0][1]
        config = TransformConfig.from_metadata(data)
    elif len(entries) > 1 and not args.model:
        raise AssemblyError(f"name one transformer with --transformer: {[p for p, _ in entries]}")
    if "trainingJobPath" in data:
        job = assembly.training_job(stack, data["trainingJobPath"].rsplit("/", 1)[-1])
        program = json.loads(job.hyperparameters.get("sagemaker_program", '""'))
        return config, {"SAGEMAKER_PROGRAM": program}, job.code_asset, None
    wanted = args.model or data.get("modelPath")
    models = assembly.models(stack)
    if wanted:
        models = [m for m in models if m.path.strip("/").endswith(wanted.strip("/"))]
    if len(models) != 1:
        raise LocalModeError(
            f"name one model with --model; the stack has {[m.path for m in assembly.models(stack)]}"
            if models or not wanted
            else f"no model {wanted!r} in the stack"
        )
    model = models[0]
    data_path = Path(model.model_data_asset) if model.model_data_asset else None
    return config, dict(model.environment), model.code_asset, data_path


def command(args: argparse.Namespace) -> int:
    """``python -m chainer_sagemaker_cdk.local transform``: exit 0 when every object was
    transformed, 1 when the job failed (the reason and the data log on stderr)."""
    environment: dict[str, str] = {}
    code: str | None = None
    model_data: Path | None = None
    config = TransformConfig()
    if args.code is not None:
        if not args.program:
            raise LocalModeError("--code needs --program (the module that defines model_fn)")
        environment = {"SAGEMAKER_PROGRAM": args.program}
        code = str(args.code)
    elif args.endpoint_url is None or args.transformer:
        config, environment, code, model_data = _model_from_assembly(args)
    overrides = {
        name: getattr(args, name)
        for name in (
            "content_type",
            "split_type",
            "compression_type",
            "batch_strategy",
            "max_payload_in_mb",
            "max_concurrent_transforms",
            "assemble_with",
            "accept",
            "input_filter",
            "output_filter",
            "join_source",
        )
    }
    extra = {}
    for pair in args.env:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise LocalModeError(f"--env wants NAME=VALUE, got {pair!r}")
        extra[name] = value
    if args.manifest:
        overrides["s3_data_type"] = "ManifestFile"
    config = config.with_overrides(**overrides)
    if extra:
        config = replace(config, environment={**config.environment, **extra})
    if args.endpoint_url:
        result = run_transform(
            config, args.input, args.output, endpoint_url=args.endpoint_url, work_dir=args.work_dir
        )
    else:
        model_data = args.model_data or model_data
        if model_data is None:
            raise LocalModeError(
                "the model gets its data at deploy time (a training job); pass --model-data "
                "model.tar.gz (for example from `train`'s artifacts)"
            )
        result = transform_model(
            config,
            args.input,
            args.output,
            model_data=model_data,
            work_dir=args.work_dir,
            environment=environment,
            code=code,
            workers=args.workers,
        )
    done = len(result.outputs)
    print(
        f"[local] transform: {result.records} records in {len(result.files)} files, "
        f"{result.requests} requests, {result.records_per_second:.0f} records/s; "
        f"{done} .out files under {args.output}"
    )
    if not result.succeeded:
        print(f"[local] transform failed: {result.failure_reason}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m chainer_sagemaker_cdk.local.transform`` (the same as the ``transform``
    subcommand of ``python -m chainer_sagemaker_cdk.local``)."""
    from chainer_sagemaker_cdk.local.assembly import AssemblyError

    parser = argparse.ArgumentParser(prog="python -m chainer_sagemaker_cdk.local transform")
    parser.add_argument("--cdk-out", type=Path, default=Path("cdk.out"))
    parser.add_argument("--stack")
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return command(args)
    except (LocalModeError, AssemblyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
