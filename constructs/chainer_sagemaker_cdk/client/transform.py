"""Batch transform jobs from the client (boto3 only): start one, wait for it, read its results.

``TransformJob.start(request)`` takes CreateTransformJob parameters, for example
``ChainerTransformer.transform_job_request(name)`` resolved at deploy time, or those
:func:`transform_request` builds; ``wait()`` polls DescribeTransformJob until the job ends and
raises :class:`TransformJobError` with SageMaker's ``FailureReason`` when it did not complete.
:func:`read_outputs` turns the ``.out`` objects (S3 or a local directory, as local mode writes
them) back into one NumPy array, in input order.
"""

from __future__ import annotations

import io
import json
import re
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

__all__ = ["TransformJob", "TransformJobError", "read_outputs", "transform", "transform_request"]

_DONE = {"Completed", "Failed", "Stopped"}


class TransformJobError(Exception):
    """The job ended other than Completed; ``status`` and ``failure_reason`` say how."""

    def __init__(self, name: str, status: str, failure_reason: str) -> None:
        super().__init__(f"transform job {name} {status}: {failure_reason or 'no reason given'}")
        self.name = name
        self.status = status
        self.failure_reason = failure_reason


def transform_request(
    job_name: str,
    model_name: str,
    input_uri: str,
    output_uri: str,
    *,
    instance_type: str = "ml.m5.large",
    instance_count: int = 1,
    content_type: str | None = None,
    split_type: str | None = None,
    compression_type: str | None = None,
    batch_strategy: str | None = None,
    max_payload_in_mb: int | None = None,
    max_concurrent_transforms: int | None = None,
    accept: str | None = None,
    assemble_with: str | None = None,
    output_kms_key: str | None = None,
    volume_kms_key: str | None = None,
    input_filter: str | None = None,
    output_filter: str | None = None,
    join_source: str | None = None,
    environment: Mapping[str, str] | None = None,
    tags: Mapping[str, str] | None = None,
    manifest: bool = False,
) -> dict[str, Any]:
    """CreateTransformJob parameters (the SageMaker SDK's ``Transformer.transform`` options)."""
    for name, uri in (("input_uri", input_uri), ("output_uri", output_uri)):
        if not uri.startswith("s3://"):
            raise ValueError(f"{name} must be an s3:// URI, got {uri!r}")
    source = {"S3DataType": "ManifestFile" if manifest else "S3Prefix", "S3Uri": input_uri}
    request: dict[str, Any] = {
        "TransformJobName": job_name,
        "ModelName": model_name,
        "TransformInput": _some(
            {"DataSource": {"S3DataSource": source}},
            ContentType=content_type,
            SplitType=split_type,
            CompressionType=compression_type,
        ),
        "TransformOutput": _some(
            {"S3OutputPath": output_uri},
            Accept=accept,
            AssembleWith=assemble_with,
            KmsKeyId=output_kms_key,
        ),
        "TransformResources": _some(
            {"InstanceType": instance_type, "InstanceCount": instance_count},
            VolumeKmsKeyId=volume_kms_key,
        ),
    }
    _some(
        request,
        BatchStrategy=batch_strategy,
        MaxPayloadInMB=max_payload_in_mb,
        MaxConcurrentTransforms=max_concurrent_transforms,
        Environment=dict(environment) if environment else None,
        Tags=[{"Key": k, "Value": v} for k, v in tags.items()] if tags else None,
    )
    processing = _some(
        {}, InputFilter=input_filter, OutputFilter=output_filter, JoinSource=join_source
    )
    if processing:
        request["DataProcessing"] = processing
    return request


def _some(target: dict[str, Any], **values: Any) -> dict[str, Any]:
    target.update({k: v for k, v in values.items() if v is not None})
    return target


class TransformJob:
    """One SageMaker transform job."""

    def __init__(self, name: str, *, sagemaker_client: Any = None, s3_client: Any = None) -> None:
        import boto3

        self.name = name
        self._sagemaker = sagemaker_client or boto3.client("sagemaker")
        self._s3 = s3_client
        self._described: dict[str, Any] | None = None

    @classmethod
    def start(
        cls, request: Mapping[str, Any], *, sagemaker_client: Any = None, s3_client: Any = None
    ) -> TransformJob:
        """CreateTransformJob with ``request`` (see :func:`transform_request`)."""
        job = cls(
            str(request["TransformJobName"]), sagemaker_client=sagemaker_client, s3_client=s3_client
        )
        job._sagemaker.create_transform_job(**request)
        return job

    def describe(self) -> dict[str, Any]:
        described = dict(self._sagemaker.describe_transform_job(TransformJobName=self.name))
        described.pop("ResponseMetadata", None)
        self._described = described
        return described

    @property
    def status(self) -> str:
        return str(self.describe()["TransformJobStatus"])

    def wait(
        self,
        *,
        poll: float = 30.0,
        timeout: float | None = None,
        log: Callable[[str], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> dict[str, Any]:
        """Poll until the job ends; its description when Completed, else TransformJobError."""
        started = time.monotonic()
        last = None
        while True:
            described = self.describe()
            status = str(described["TransformJobStatus"])
            if log is not None and status != last:
                log(f"[transform] {self.name}: {status}")
            last = status
            if status in _DONE:
                break
            if timeout is not None and time.monotonic() - started > timeout:
                raise TimeoutError(
                    f"transform job {self.name} still {status} after {timeout:.0f} s"
                )
            sleep(poll)
        if status != "Completed":
            raise TransformJobError(self.name, status, str(described.get("FailureReason", "")))
        return described

    def stop(self) -> None:
        self._sagemaker.stop_transform_job(TransformJobName=self.name)

    @property
    def output_path(self) -> str:
        described = self._described or self.describe()
        return str(described["TransformOutput"]["S3OutputPath"])

    def read(self, **options: Any) -> np.ndarray:
        """The job's results as one array (:func:`read_outputs` of its output path)."""
        accept = (self._described or self.describe())["TransformOutput"].get("Accept")
        options.setdefault("content_type", accept or "text/csv")
        return read_outputs(self.output_path, s3_client=self._s3, **options)


def transform(
    model_name: str,
    input_uri: str,
    output_uri: str,
    *,
    job_name: str | None = None,
    wait: bool = True,
    poll: float = 30.0,
    sagemaker_client: Any = None,
    s3_client: Any = None,
    **options: Any,
) -> TransformJob:
    """Start a transform job of ``model_name`` over ``input_uri`` (and wait for it).

    ``options`` are :func:`transform_request`'s; ``job_name`` left out is
    ``<model_name>-<timestamp>`` (as the SageMaker SDK names them).
    """
    name = job_name or f"{model_name[:40]}-{time.strftime('%Y-%m-%d-%H-%M-%S', time.gmtime())}"
    request = transform_request(name, model_name, input_uri, output_uri, **options)
    job = TransformJob.start(request, sagemaker_client=sagemaker_client, s3_client=s3_client)
    if wait:
        job.wait(poll=poll)
    return job


# -- results ----------------------------------------------------------------------------------
def _natural(key: str) -> list[Any]:
    """``part-2`` before ``part-10``: digits compare as numbers."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", key)]


def _list_outputs(location: str | Path, s3_client: Any) -> list[tuple[str, Callable[[], bytes]]]:
    text = str(location)
    if text.startswith("s3://"):
        if s3_client is None:
            import boto3

            s3_client = boto3.client("s3")
        url = urlparse(text)
        bucket, prefix = url.netloc, url.path.lstrip("/")
        keys = []
        for page in s3_client.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=prefix
        ):
            keys += [o["Key"] for o in page.get("Contents", []) if o["Key"].endswith(".out")]

        def reader(key: str) -> Callable[[], bytes]:
            return lambda: bytes(s3_client.get_object(Bucket=bucket, Key=key)["Body"].read())

        return [(k, reader(k)) for k in sorted(keys, key=_natural)]
    root = Path(urlparse(text).path if text.startswith("file://") else text)
    if root.is_file():
        return [(root.name, root.read_bytes)]
    files = sorted(
        (p for p in root.rglob("*.out") if p.is_file()),
        key=lambda p: _natural(p.relative_to(root).as_posix()),
    )
    return [(p.relative_to(root).as_posix(), p.read_bytes) for p in files]


def _decode(data: bytes, content_type: str, where: str) -> list[np.ndarray]:
    kind = content_type.split(";")[0].strip()
    if kind == "application/x-npy":
        stream, arrays = io.BytesIO(data), []
        while stream.tell() < len(data):  # AssembleWith None: one NPY per request, concatenated
            arrays.append(np.lib.format.read_array(stream, allow_pickle=False))
            while stream.tell() < len(data) and data[stream.tell() : stream.tell() + 1] == b"\n":
                stream.seek(1, io.SEEK_CUR)  # AssembleWith Line puts a newline after each
        return [np.atleast_2d(a) for a in arrays]
    text = data.decode("utf-8")
    lines = [line for line in text.splitlines() if line.strip()]
    if kind == "text/csv":
        return (
            [np.asarray([[float(v) for v in line.split(",")] for line in lines])] if lines else []
        )
    if kind in ("application/json", "application/jsonlines", "application/x-jsonlines"):
        try:
            values = [json.loads(line) for line in lines]
        except ValueError:
            values = [json.loads(text)]  # one JSON document over several lines
        return [np.atleast_2d(np.asarray(v, dtype=np.float64)) for v in values]
    raise ValueError(f"{where}: cannot read {content_type!r} results; use text/csv, JSON or NPY")


def read_outputs(
    location: str | Path | Sequence[str | Path],
    *,
    content_type: str = "text/csv",
    dtype: Any = np.float32,
    s3_client: Any = None,
) -> np.ndarray:
    """Every ``.out`` object under ``location`` (an ``s3://`` prefix, a directory, or a list of
    those in the order wanted) as one array of rows, in key order (``part-2`` before
    ``part-10``), which is input order when the inputs are named that way.

    ``content_type`` is the job's ``Accept``: CSV lines, JSON (one document per line, or per
    object) or NPY (arrays concatenated as AssembleWith None writes them).
    """
    locations = [location] if isinstance(location, str | Path) else list(location)
    rows: list[np.ndarray] = []
    found = 0
    for place in locations:
        for name, read in _list_outputs(place, s3_client):
            found += 1
            rows += _decode(read(), content_type, name)
    if not found:
        raise FileNotFoundError(f"no .out objects under {location}; did the job complete?")
    if not rows:
        return np.zeros((0, 0), dtype=dtype)
    return np.concatenate([r.reshape(len(r), -1) for r in rows]).astype(dtype)
