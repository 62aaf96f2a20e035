"""Local batch transform with the real ``serve`` and the digits model: the held-out test set
(359 rows as CSV lines in 4 files) gives the Predictor's predictions in the input's order, in
SageMaker's ``.out`` layout; batching, filters, a rejected record, and the command line."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support import free_port

from chainer_sagemaker_cdk.client import Predictor
from chainer_sagemaker_cdk.local import LocalEndpoint, pack_model
from chainer_sagemaker_cdk.local.transform import (
    TransformConfig,
    _batches,
    run_transform,
    split_records,
)

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "digits"
# Where each of the 4 input objects lies under the input prefix (subfolders kept).
LAYOUT = ["a/part-0.csv", "a/part-1.csv", "b/part-2.csv", "part-3.csv"]
CSV = {"content_type": "text/csv", "accept": "text/csv", "split_type": "Line"}


def _csv_line(row: np.ndarray) -> str:
    return ",".join(repr(float(v)) for v in row)


@pytest.fixture(scope="module")
def digits_x(test_images: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    return test_images[0]


@pytest.fixture(scope="module")
def csv_input(tmp_path_factory: pytest.TempPathFactory, digits_x: np.ndarray) -> Path:
    root = tmp_path_factory.mktemp("transform-in")
    for rel, part in zip(LAYOUT, np.array_split(digits_x, 4), strict=True):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("".join(_csv_line(r) + "\n" for r in part))
    return root


@pytest.fixture(scope="module")
def model_tar(trained_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return pack_model(trained_model, tmp_path_factory.mktemp("tar") / "model.tar.gz")


@pytest.fixture(scope="module")
def transform_url(model_tar: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``serve`` started as a transform container (SAGEMAKER_BATCH and friends set)."""
    env = {"SAGEMAKER_PROGRAM": "train.py", **TransformConfig().container_environment()}
    work = tmp_path_factory.mktemp("serve")
    with LocalEndpoint(
        model_tar, work, environment=env, code=EXAMPLE, port=free_port(), workers=2
    ) as ep:
        yield ep.url


@pytest.fixture(scope="module")
def expected(transform_url: str, digits_x: np.ndarray) -> np.ndarray:
    """What the Predictor gets for the same rows."""
    with Predictor.local(transform_url) as predictor:
        return np.asarray(predictor.predict(digits_x))


def _read_csv_outputs(out: Path) -> np.ndarray:
    rows = []
    for rel in LAYOUT:
        text = (out / f"{rel}.out").read_text()
        rows += [[float(v) for v in line.split(",")] for line in text.splitlines()]
    return np.asarray(rows, dtype=np.float32)


def _quiet(line: str) -> None:
    pass


def _check_digits(
    config: TransformConfig, url: str, csv_input: Path, expected: np.ndarray, out: Path
) -> int:
    result = run_transform(
        config, csv_input, out, endpoint_url=url, log=_quiet, work_dir=out.parent
    )
    assert result.succeeded, result.data_log
    assert result.records == 359
    # SageMaker's layout: <output>/<path under the input prefix>.out, one per input object
    outputs = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert outputs == sorted(f"{rel}.out" for rel in LAYOUT)
    got = _read_csv_outputs(out)
    assert got.shape == expected.shape == (359, 10)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert (got.argmax(1) == expected.argmax(1)).all()
    return result.requests


@pytest.mark.parametrize(("strategy", "requests"), [("MultiRecord", 4), ("SingleRecord", 359)])
def test_digits_test_set_gives_the_predictors_predictions_in_order(
    transform_url: str,
    csv_input: Path,
    expected: np.ndarray,
    tmp_path: Path,
    strategy: str,
    requests: int,
) -> None:
    config = TransformConfig(
        **CSV, batch_strategy=strategy, assemble_with="Line", max_concurrent_transforms=4
    )
    assert _check_digits(config, transform_url, csv_input, expected, tmp_path / "out") == requests


@pytest.mark.parametrize(
    ("strategy", "content_type", "row", "requests"),
    [
        ("SingleRecord", "application/json", lambda r: [r], 359),  # one [[...]] per request
        ("MultiRecord", "application/jsonlines", lambda r: r, 4),  # JSON Lines mini-batches
    ],
    ids=["SingleRecord-json", "MultiRecord-jsonlines"],
)
def test_json_records(
    transform_url: str,
    digits_x: np.ndarray,
    expected: np.ndarray,
    tmp_path: Path,
    strategy: str,
    content_type: str,
    row: Any,
    requests: int,
) -> None:
    src = tmp_path / "in"
    src.mkdir()
    for i, part in enumerate(np.array_split(digits_x, 4)):
        (src / f"part-{i}.jsonl").write_text(
            "".join(json.dumps(row(r.tolist())) + "\n" for r in part)
        )
    config = TransformConfig(
        content_type=content_type,
        accept=content_type,
        split_type="Line",
        batch_strategy=strategy,
        assemble_with="Line",
        max_concurrent_transforms=2,
    )
    result = run_transform(
        config, src, tmp_path / "out", endpoint_url=transform_url, log=_quiet, work_dir=tmp_path
    )
    assert result.succeeded, result.data_log
    assert result.requests == requests
    rows = [
        np.ravel(json.loads(line))
        for i in range(4)
        for line in (tmp_path / "out" / f"part-{i}.jsonl.out").read_text().splitlines()
    ]
    np.testing.assert_allclose(np.asarray(rows), expected, rtol=1e-5, atol=1e-5)


def test_max_payload_bounds_each_request(
    transform_url: str, digits_x: np.ndarray, expected: np.ndarray, tmp_path: Path
) -> None:
    """One 2.8 MB object, MaxPayloadInMB=1: several requests, each under 1 MB, one .out."""
    src = tmp_path / "all.csv"
    src.write_text("".join(_csv_line(r) + "\n" for r in digits_x))
    assert src.stat().st_size > 2 * 1024 * 1024
    config = TransformConfig(
        **CSV, batch_strategy="MultiRecord", max_payload_in_mb=1, assemble_with="Line"
    )
    result = run_transform(
        config, src, tmp_path / "out", endpoint_url=transform_url, log=_quiet, work_dir=tmp_path
    )
    assert result.succeeded, result.data_log
    assert result.requests == 3
    lines = (tmp_path / "out" / "all.csv.out").read_text().splitlines()
    got = np.asarray([[float(v) for v in line.split(",")] for line in lines])
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_a_rejected_record_fails_its_object_as_sagemaker_reports_it(
    transform_url: str, csv_input: Path, tmp_path: Path
) -> None:
    src = tmp_path / "in"
    src.mkdir()
    good = (csv_input / "part-3.csv").read_text()
    (src / "good.csv").write_text(good)
    lines = good.splitlines()
    (src / "bad.csv").write_text("\n".join([*lines[:5], "0.5,not-a-number", *lines[5:10]]) + "\n")
    config = TransformConfig(**CSV, batch_strategy="MultiRecord", assemble_with="Line")
    result = run_transform(
        config, src, tmp_path / "out", endpoint_url=transform_url, log=_quiet, work_dir=tmp_path
    )
    assert not result.succeeded
    assert result.failure_reason == "ClientError: See job logs for more information"
    assert not (tmp_path / "out" / "bad.csv.out").exists(), "no partial output for a failed object"
    assert len((tmp_path / "out" / "good.csv.out").read_text().splitlines()) == len(lines)
    uri = (src / "bad.csv").as_uri()
    assert f"[sagemaker logs]: {uri}: ClientError: 400" in result.data_log
    log_text = (tmp_path / "data-log.txt").read_text()
    assert "the CSV rows do not all have the same number of columns" in log_text
    # the server kept serving: the good object after the bad one was transformed
    assert result.files[1].output is not None


def test_filters_and_join_as_sagemakers_data_processing(
    transform_url: str, csv_input: Path, expected: np.ndarray, tmp_path: Path
) -> None:
    """An id column: InputFilter $[1:] drops it, JoinSource Input appends the prediction to
    the input record, OutputFilter $[0,-1] keeps the id and the last score (the docs' example)."""
    src = tmp_path / "in"
    src.mkdir()
    rows = (csv_input / "a" / "part-0.csv").read_text().splitlines()
    (src / "ids.csv").write_text("".join(f"id-{i},{row}\n" for i, row in enumerate(rows)))
    config = TransformConfig(
        **CSV,
        batch_strategy="MultiRecord",
        assemble_with="Line",
        input_filter="$[1:]",
        join_source="Input",
        output_filter="$[0,-1]",
    )
    result = run_transform(
        config, src, tmp_path / "out", endpoint_url=transform_url, log=_quiet, work_dir=tmp_path
    )
    assert result.succeeded, result.data_log
    out = [line.split(",") for line in (tmp_path / "out" / "ids.csv.out").read_text().splitlines()]
    assert [o[0] for o in out] == [f"id-{i}" for i in range(len(rows))]
    np.testing.assert_allclose(
        [float(o[1]) for o in out], expected[: len(rows), -1], rtol=1e-5, atol=1e-5
    )


def test_split_records_as_sagemaker_splits() -> None:
    assert split_records(b"1,2\r\n\n3,4\n", "Line") == [b"1,2", b"3,4"]
    assert split_records(b"1,2\n3,4", "None") == [b"1,2\n3,4"]
    tf = b"".join(struct.pack("<Q", len(p)) + b"crc0" + p + b"crc1" for p in (b"abc", b"de"))
    assert [r[12:-4] for r in split_records(tf, "TFRecord")] == [b"abc", b"de"]
    rec = b"".join(
        struct.pack("<II", 0xCED7230A, len(p)) + p + b"\0" * (-len(p) % 4)
        for p in (b"abcde", b"xy")
    )
    assert len(split_records(rec, "RecordIO")) == 2
    with pytest.raises(ValueError, match="magic"):
        split_records(b"\0" * 8, "RecordIO")


def test_batches_fit_the_payload() -> None:
    records = [b"x" * 400_000] * 5
    assert _batches(records, "MultiRecord", 1, b"\n") == [[0, 1], [2, 3], [4]]
    assert _batches(records, "MultiRecord", 0, b"\n") == [[0, 1, 2, 3, 4]]
    assert _batches(records, "SingleRecord", 6, b"\n") == [[i] for i in range(5)]


@pytest.fixture(scope="module")
def cdk_out(trained_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An app with a ChainerModel (the trained model as a directory asset) and a
    ChainerTransformer, synthesized in-process (no CLI: the CLI path is tested in tests/e2e)."""
    import aws_cdk as cdk
    from aws_cdk import aws_s3 as s3

    from chainer_sagemaker_cdk import (
        ChainerModel,
        ChainerTransformer,
        ModelData,
        RuntimeImage,
        SourceCode,
    )

    out = tmp_path_factory.mktemp("transform-app") / "cdk.out"
    app = cdk.App(outdir=str(out))
    stack = cdk.Stack(app, "Scoring")
    model = ChainerModel(
        stack,
        "Model",
        model_data=ModelData.from_directory(trained_model),
        code=SourceCode.from_directory(EXAMPLE, "train.py"),
        image=RuntimeImage.from_registry("123456789012.dkr.ecr.us-east-1.amazonaws.com/chainer:1"),
    )
    data = s3.Bucket(stack, "Data")
    ChainerTransformer(
        stack,
        "Score",
        model=model,
        input_bucket=data,
        input_prefix="digits/test",
        output_bucket=data,
        content_type="text/csv",
        accept="text/csv",
        split_type="Line",
        batch_strategy="MultiRecord",
        assemble_with="Line",
        max_concurrent_transforms=2,
    )
    app.synth()
    return out


def test_command_line_runs_the_synthesized_transform(
    cdk_out: Path, csv_input: Path, expected: np.ndarray, tmp_path: Path
) -> None:
    """The transformer's settings and its model's code and data come from cdk.out; serve is
    started and stopped by the command; progress goes to stderr."""
    result = subprocess.run(
        [
            sys.executable, "-m", "chainer_sagemaker_cdk.local", "--cdk-out", str(cdk_out),
            "transform", "--input", f"file://{csv_input}", "--output", str(tmp_path / "out"),
            "--workers", "1", "--work-dir", str(tmp_path / "work"),
        ],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
        env={**os.environ, "JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "[transform] 4/4 files, 359/359 records" in result.stderr
    assert "records/s" in result.stderr
    assert (
        "MaxConcurrentTransforms=2, MaxPayloadInMB=6, BatchStrategy=MULTI_RECORD" in result.stderr
    )
    assert "359 records in 4 files, 4 requests" in result.stdout
    np.testing.assert_allclose(_read_csv_outputs(tmp_path / "out"), expected, rtol=1e-5, atol=1e-5)


def test_command_line_names_the_problem(cdk_out: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable, "-m", "chainer_sagemaker_cdk.local", "--cdk-out", str(cdk_out),
            "transform", "--input", str(tmp_path / "missing"), "--output", str(tmp_path / "out"),
            "--split-type", "Line", "--work-dir", str(tmp_path / "work"),
            "--endpoint-url", "http://127.0.0.1:9",
        ],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2
    assert "does not exist" in result.stderr


def test_s3_input_and_output_read_back_by_the_client(
    transform_url: str,
    csv_input: Path,
    expected: np.ndarray,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """s3:// in and out (moto's server on loopback; boto3 follows AWS_ENDPOINT_URL), the
    results read back into NumPy by the client, in input order."""
    import boto3
    from support import moto_server

    from chainer_sagemaker_cdk.client import read_outputs

    with moto_server() as url:
        for name, value in {
            "AWS_ENDPOINT_URL": url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }.items():
            monkeypatch.setenv(name, value)
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="data")
        for rel in LAYOUT:
            s3.upload_file(str(csv_input / rel), "data", f"digits/test/{rel}")
        config = TransformConfig(**CSV, batch_strategy="MultiRecord", assemble_with="Line")
        result = run_transform(
            config,
            "s3://data/digits/test",
            "s3://data/scores",
            endpoint_url=transform_url,
            log=_quiet,
            work_dir=tmp_path,
        )
        assert result.succeeded, result.data_log
        assert result.files[0].source == "s3://data/digits/test/a/part-0.csv"
        keys = sorted(
            o["Key"] for o in s3.list_objects_v2(Bucket="data", Prefix="scores/")["Contents"]
        )
        assert keys == sorted(f"scores/{rel}.out" for rel in LAYOUT)
        got = read_outputs("s3://data/scores", content_type="text/csv")
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_a_manifest_lists_the_objects(
    transform_url: str, csv_input: Path, expected: np.ndarray, tmp_path: Path
) -> None:
    """S3DataType ManifestFile: only the listed objects, named by their key under the prefix."""
    manifest = tmp_path / "inputs.manifest"
    manifest.write_text(
        json.dumps([{"prefix": f"{csv_input.as_uri()}/"}, "b/part-2.csv", "a/part-0.csv"])
    )
    config = TransformConfig(
        **CSV, batch_strategy="MultiRecord", assemble_with="Line", s3_data_type="ManifestFile"
    )
    result = run_transform(
        config,
        manifest,
        tmp_path / "out",
        endpoint_url=transform_url,
        log=_quiet,
        work_dir=tmp_path,
    )
    assert result.succeeded, result.data_log
    assert [f.relative for f in result.files] == ["b/part-2.csv", "a/part-0.csv"]
    outputs = sorted(
        p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.out")
    )
    assert outputs == ["a/part-0.csv.out", "b/part-2.csv.out"]
    first = np.loadtxt(tmp_path / "out" / "a" / "part-0.csv.out", delimiter=",")
    np.testing.assert_allclose(first, expected[: len(first)], rtol=1e-5, atol=1e-5)


def test_whole_objects_as_npy_read_back_by_the_client(
    transform_url: str, digits_x: np.ndarray, expected: np.ndarray, tmp_path: Path
) -> None:
    """SplitType None: each .npy object is one request; AssembleWith None keeps the replies'
    bytes; the client's read_outputs decodes them, in input order."""
    from chainer_sagemaker_cdk.client import read_outputs

    src = tmp_path / "in"
    src.mkdir()
    for i, part in enumerate(np.array_split(digits_x, 4)):
        np.save(src / f"part-{i}.npy", part, allow_pickle=False)
    config = TransformConfig(content_type="application/x-npy", accept="application/x-npy")
    result = run_transform(
        config, src, tmp_path / "out", endpoint_url=transform_url, log=_quiet, work_dir=tmp_path
    )
    assert result.succeeded, result.data_log
    assert result.requests == 4
    got = read_outputs(tmp_path / "out", content_type="application/x-npy")
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
