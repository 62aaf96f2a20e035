"""Local async endpoint: the real ``serve`` with the trained digits model answers request
files with ``<id>.out`` files, and a bad request with ``<id>-error.out`` (item 7); requests
overlap up to the configured concurrency."""

from __future__ import annotations

import io
import json
import threading
from pathlib import Path
from typing import Any

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


GATED = '''\
"""Holds every answer until the test opens the gate (a file): requests that overlap all
reach the server before any is answered."""
import os
import time
from pathlib import Path


def model_fn(model_dir):
    return Path(os.environ["ASYNC_TEST_GATE"])


def predict_fn(data, gate):
    deadline = time.monotonic() + 120
    while not gate.exists():
        if time.monotonic() > deadline:
            raise RuntimeError("the gate never opened")
        time.sleep(0.02)
    return data * 2
'''


def test_requests_overlap_up_to_the_configured_concurrency(tmp_path: Path) -> None:
    """Four requests in flight at once with max_concurrent=4: all are sent while the model
    holds every answer (a sequential sender would wait on the first answer forever, so the
    event would never come); the bad one gets its failure file, the others their outputs."""
    from chainer_sagemaker_cdk.local.async_endpoint import serve_async

    code = tmp_path / "code"
    code.mkdir()
    (code / "gated.py").write_text(GATED)
    (tmp_path / "model").mkdir()
    gate = tmp_path / "gate"
    requests = []
    for i in range(3):
        good = tmp_path / f"req-{i}.json"
        good.write_text(json.dumps([[float(i), 1.0]]))
        requests.append(good)
    bad = tmp_path / "req-bad.json"
    bad.write_text("{not json")
    requests.insert(1, bad)

    sent: list[str] = []
    lock = threading.Lock()
    all_sent = threading.Event()

    def on_sent(inference_id: str) -> None:
        with lock:
            sent.append(inference_id)
            if len(sent) == len(requests):
                all_sent.set()

    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result["outcomes"] = serve_async(
                requests,
                model_data=tmp_path / "model",
                work_dir=tmp_path / "work",
                output_dir=tmp_path / "out",
                failure_dir=tmp_path / "failed",
                environment={
                    "SAGEMAKER_PROGRAM": "gated.py",
                    "ASYNC_TEST_GATE": str(gate),
                    "SAGEMAKER_MODEL_SERVER_TIMEOUT": "300",
                },
                code=code,
                accept="application/json",
                max_concurrent=len(requests),
                on_sent=on_sent,
            )
        except BaseException as exc:  # reported below, in the test's thread
            result["error"] = exc

    runner = threading.Thread(target=run, name="serve-async")
    runner.start()
    try:
        # Bounded by serve's start-up (seconds), not by the requests: none is answered yet.
        overlapped = all_sent.wait(timeout=180)
    finally:
        gate.touch()
        runner.join(timeout=300)
    assert not runner.is_alive()
    assert "error" not in result, result.get("error")
    assert overlapped, f"only {sent} were in flight while the model held its answers"
    outcomes = {o.inference_id: o for o in result["outcomes"]}
    assert [o.inference_id for o in result["outcomes"]] == [r.stem for r in requests]
    for i in range(3):
        outcome = outcomes[f"req-{i}"]
        assert outcome.status == 200
        assert outcome.output is not None
        assert json.loads(outcome.output.read_text()) == [[2.0 * i, 2.0]]
        assert not (tmp_path / "failed" / f"req-{i}-error.out").exists()
    failed = outcomes["req-bad"]
    assert 400 <= failed.status < 500
    assert failed.failure == tmp_path / "failed" / "req-bad-error.out"
    assert failed.failure.read_text().strip()
    assert not (tmp_path / "out" / "req-bad.out").exists()


@pytest.mark.parametrize("value", ["0", "1001"])
def test_concurrency_outside_sagemakers_range_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str
) -> None:
    request = tmp_path / "req.npy"
    np.save(request, np.zeros((1, 64), dtype=np.float32))
    code = main(
        [
            "invoke-async", "--code", str(EXAMPLE), "--program", "train.py",
            "--model-data", str(tmp_path), "--input", str(request),
            "--max-concurrent-invocations", value,
        ]
    )  # fmt: skip
    assert code == 2
    assert "MaxConcurrentInvocationsPerInstance" in capsys.readouterr().err
