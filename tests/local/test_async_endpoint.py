"""Local async endpoint: the real ``serve`` with the trained digits model answers request
files with ``<id>.out`` files, and a bad request with ``<id>-error.out`` (item 7)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from chainer_sagemaker_cdk.local import pack_model
from chainer_sagemaker_cdk.local.__main__ import main

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "digits"


def test_request_files_in_output_files_out(
    trained_model: Path,
    test_images: tuple[np.ndarray, np.ndarray],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    x, y = test_images
    good = tmp_path / "req-1.npy"
    np.save(good, x[:64])
    bad = tmp_path / "req-2.json"
    bad.write_text(json.dumps({"not": "an array"}))
    tar = pack_model(trained_model, tmp_path / "model.tar.gz")
    code = main(
        [
            "invoke-async", "--code", str(EXAMPLE), "--program", "train.py",
            "--model-data", str(tar), "--input", str(good), "--input", str(bad),
            "--accept", "application/x-npy",
            "--output-dir", str(tmp_path / "out"), "--failure-dir", str(tmp_path / "failed"),
            "--work-dir", str(tmp_path / "work"),
        ]
    )  # fmt: skip
    assert code == 1  # one request failed
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert (lines[0]["inferenceId"], lines[0]["status"]) == ("req-1", 200)
    assert lines[1]["inferenceId"] == "req-2"
    assert lines[1]["status"] >= 400
    scores = np.load(io.BytesIO((tmp_path / "out" / "req-1.out").read_bytes()))
    assert scores.shape == (64, 10)
    assert (scores.argmax(axis=1) == y[:64]).mean() > 0.8
    assert not (tmp_path / "failed" / "req-1-error.out").exists()
    failure = (tmp_path / "failed" / "req-2-error.out").read_text()
    assert failure.strip()  # the server's own error message
    assert not (tmp_path / "out" / "req-2.out").exists()


@pytest.mark.parametrize(
    ("name", "message"), [("missing.npy", "no such file"), ("req.bin", "--content-type")]
)
def test_bad_requests_are_refused_before_serving(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, message: str
) -> None:
    (tmp_path / "req.bin").write_bytes(b"\0")
    code = main(
        [
            "invoke-async", "--code", str(EXAMPLE), "--program", "train.py",
            "--model-data", str(tmp_path), "--input", str(tmp_path / name),
        ]
    )  # fmt: skip
    assert code == 2
    assert message in capsys.readouterr().err
