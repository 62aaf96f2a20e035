"""The client's transform jobs: started and followed against moto's standalone server on
loopback (CreateTransformJob, DescribeTransformJob, S3), the waiting loop against botocore's
Stubber (moto completes jobs at once and never fails them), and results read into NumPy."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest
from botocore.stub import Stubber
from support import moto_server

from chainer_sagemaker_cdk.client import (
    TransformJob,
    TransformJobError,
    read_outputs,
    transform,
    transform_request,
)

CREDS = {
    "aws_access_key_id": "testing",
    "aws_secret_access_key": "testing",
    "region_name": "us-east-1",
}


@pytest.fixture(scope="module")
def aws() -> Iterator[dict[str, Any]]:
    with moto_server() as url:
        yield {
            "sagemaker_client": boto3.client("sagemaker", endpoint_url=url, **CREDS),
            "s3_client": boto3.client("s3", endpoint_url=url, **CREDS),
        }


def test_start_wait_and_read_back_through_moto(aws: dict[str, Any]) -> None:
    s3 = aws["s3_client"]
    s3.create_bucket(Bucket="scores")
    rows = np.arange(30, dtype=np.float32).reshape(6, 5) / 7
    # what the job leaves: one .out per input object, named after it (part-10 after part-2)
    for name, part in (
        ("part-2.csv", rows[:2]),
        ("part-10.csv", rows[4:]),
        ("sub/part-3.csv", rows[2:4]),
    ):
        body = "".join(",".join(repr(float(v)) for v in r) + "\n" for r in part)
        s3.put_object(Bucket="scores", Key=f"digits/{name}.out", Body=body.encode())
    s3.put_object(Bucket="scores", Key="digits/_manifest", Body=b"not an output")
    job = transform(
        "chainer-digits-1234",
        "s3://data/digits/test",
        "s3://scores/digits",
        job_name="score-digits-1",
        content_type="text/csv",
        split_type="Line",
        batch_strategy="MultiRecord",
        accept="text/csv",
        assemble_with="Line",
        input_filter="$[1:]",
        poll=0,
        **aws,
    )
    described = job.describe()
    assert described["TransformJobStatus"] == "Completed"
    assert described["DataProcessing"] == {"InputFilter": "$[1:]"}
    assert described["TransformInput"]["SplitType"] == "Line"
    got = job.read()
    assert got.dtype == np.float32
    # natural key order: part-2, part-10, sub/part-3 sorts as part-2 < part-10 < sub/...
    np.testing.assert_array_equal(got, np.concatenate([rows[:2], rows[4:], rows[2:4]]))


def test_the_request_matches_botocores_model() -> None:
    import botocore.session
    from botocore.validate import ParamValidator

    request = transform_request(
        "j-1",
        "m-1",
        "s3://a/in",
        "s3://a/out",
        content_type="application/json",
        split_type="Line",
        max_payload_in_mb=6,
        max_concurrent_transforms=2,
        join_source="Input",
        output_filter="$['id','SageMakerOutput']",
        tags={"team": "ml"},
        environment={"X": "1"},
    )
    shape = (
        botocore.session.get_session()
        .get_service_model("sagemaker")
        .operation_model("CreateTransformJob")
    )
    report = ParamValidator().validate(request, shape.input_shape)
    assert not report.has_errors(), report.generate_report()
    with pytest.raises(ValueError, match="s3:// URI"):
        transform_request("j", "m", "data/in", "s3://a/out")


def _described(status: str, reason: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "TransformJobName": "j-1",
        "TransformJobArn": "arn:aws:sagemaker:us-east-1:123456789012:transform-job/j-1",
        "TransformJobStatus": status,
        "ModelName": "m-1",
        "TransformInput": {
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://a/in"}}
        },
        "TransformOutput": {"S3OutputPath": "s3://a/out"},
        "TransformResources": {"InstanceType": "ml.m5.large", "InstanceCount": 1},
        "CreationTime": "2026-12-01T00:00:00Z",
    }
    if reason:
        out["FailureReason"] = reason
    return out


def test_wait_polls_until_the_job_ends_and_raises_its_failure_reason() -> None:
    client = boto3.client("sagemaker", **CREDS)
    stubber = Stubber(client)
    for status in ("InProgress", "InProgress"):
        stubber.add_response(
            "describe_transform_job", _described(status), {"TransformJobName": "j-1"}
        )
    stubber.add_response(
        "describe_transform_job",
        _described("Failed", "ClientError: See job logs for more information"),
        {"TransformJobName": "j-1"},
    )
    seen: list[str] = []
    slept: list[float] = []
    with stubber, pytest.raises(TransformJobError) as caught:
        TransformJob("j-1", sagemaker_client=client).wait(
            poll=5, log=seen.append, sleep=slept.append
        )
    assert caught.value.status == "Failed"
    assert caught.value.failure_reason == "ClientError: See job logs for more information"
    assert seen == ["[transform] j-1: InProgress", "[transform] j-1: Failed"]
    assert slept == [5, 5]
    stubber.assert_no_pending_responses()


def test_read_outputs_of_local_mode_in_each_format(tmp_path: Path) -> None:
    import io

    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    (tmp_path / "csv").mkdir()
    (tmp_path / "csv" / "x.csv.out").write_text("0.0,1.0,2.0\n3.0,4.0,5.0\n")
    np.testing.assert_array_equal(read_outputs(tmp_path / "csv"), a)
    (tmp_path / "json").mkdir()
    (tmp_path / "json" / "x.jsonl.out").write_text("[[0,1,2]]\n[[3,4,5]]\n")
    np.testing.assert_array_equal(
        read_outputs(tmp_path / "json", content_type="application/json"), a
    )
    (tmp_path / "npy").mkdir()
    blobs = []
    for row in a:  # AssembleWith None: one NPY reply per request, back to back
        buffer = io.BytesIO()
        np.save(buffer, row[None], allow_pickle=False)
        blobs.append(buffer.getvalue())
    (tmp_path / "npy" / "x.npy.out").write_bytes(b"".join(blobs))
    np.testing.assert_array_equal(
        read_outputs(tmp_path / "npy", content_type="application/x-npy"), a
    )
    with pytest.raises(FileNotFoundError, match=r"no \.out objects"):
        read_outputs(tmp_path / "empty-dir-that-is-missing")
