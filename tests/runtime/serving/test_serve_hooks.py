"""User hooks, transform_fn, failures inside user code, worker replacement, timeouts, draining."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from servetools import Server, from_npy, npy

NPY, JSON = "application/x-npy", "application/json"

HOOKS = """
import json, os, time
import numpy as np

def model_fn(model_dir):
    with open(os.path.join(model_dir, "model_fn_calls"), "a") as f:
        f.write(f"{os.getpid()}\\n")
    return {"scale": 3.0}

def input_fn(body, content_type):
    if content_type == "application/x-npy":
        assert isinstance(body, bytes)
        return {"x": np.load(__import__("io").BytesIO(body)), "type": content_type}
    assert isinstance(body, str), type(body)
    if body == "crash":
        os._exit(7)
    if body.startswith("sleep"):
        time.sleep(float(body.split()[1]))
        return {"x": np.zeros(1), "type": content_type}
    return {"x": np.asarray(json.loads(body), dtype=np.float64), "type": content_type}

def predict_fn(data, model):
    if data["x"].size and data["x"].flat[0] == 13:
        raise ValueError("unlucky input")
    return {"y": data["x"] * model["scale"], "type": data["type"], "pid": os.getpid()}

def output_fn(prediction, accept):
    body = {"y": prediction["y"].tolist(), "type": prediction["type"], "pid": prediction["pid"],
            "accept": accept}
    return json.dumps(body), "application/vnd.test+json"
"""

TRANSFORM = """
def model_fn(model_dir):
    return "m"

def input_fn(body, content_type):
    raise AssertionError("transform_fn must win over input_fn")

def transform_fn(model, body, content_type, accept):
    return (f"{model}|{body}|{content_type}|{accept}").encode(), "text/plain"
"""

CALLABLE_MODEL = """
import numpy as np

class Doubler:
    def __call__(self, x):
        if np.isnan(x).any():
            raise ValueError("NaN in the input")
        return x * 2

def model_fn(model_dir):
    return Doubler()
"""


def _code(tmp_path: Path, source: str, name: str = "inference.py") -> Path:
    code = tmp_path / f"code-{abs(hash(source))}"
    code.mkdir(exist_ok=True)
    (code / name).write_text(source)
    return code


StartServer = Callable[..., Server]


def test_custom_hooks_get_text_or_bytes_and_bare_types(
    tmp_path: Path, start_server: StartServer
) -> None:
    server = start_server(_code(tmp_path, HOOKS))
    status, headers, body = server.invoke("[1, 2]", "application/json; charset=utf-8", "text/csv")
    assert status == 200
    assert headers["content-type"] == "application/vnd.test+json"
    reply = json.loads(body)
    assert reply["y"] == [3.0, 6.0]
    assert reply["type"] == "application/json"
    assert reply["accept"] == "text/csv"
    status, _, body = server.invoke(npy(np.ones(2)), NPY, "application/x-custom")
    assert status == 200
    assert json.loads(body)["accept"] == "application/x-custom"  # output_fn decides


def test_raising_predict_fn_is_500_and_the_worker_survives(
    tmp_path: Path, start_server: StartServer
) -> None:
    server = start_server(_code(tmp_path, HOOKS))
    pid = json.loads(server.invoke("[1]", JSON)[2])["pid"]
    status, headers, body = server.invoke("[13]", JSON)
    assert status == 500
    assert headers["content-type"] == "application/json"
    error = json.loads(body)
    assert error["error"] == "model_error"
    assert "ValueError: unlucky input" in error["message"]
    status, _, body = server.invoke("[2]", JSON)
    assert status == 200
    assert json.loads(body)["pid"] == pid


def test_crashed_worker_is_replaced(tmp_path: Path, start_server: StartServer) -> None:
    server = start_server(_code(tmp_path, HOOKS))
    with pytest.raises((ConnectionError, OSError)):
        server.invoke("crash", JSON)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if server.invoke("[1]", JSON)[0] == 200:
                break
        except OSError:
            time.sleep(0.1)
    else:
        pytest.fail(f"no replacement worker:\n{server.log()}")
    calls = (server.base / "model" / "model_fn_calls").read_text().split()
    assert len(calls) == 2  # the replacement loaded the model again
    assert server.proc.poll() is None


def test_model_fn_called_once_per_worker_under_concurrent_first_requests(
    tmp_path: Path, start_server: StartServer
) -> None:
    server = start_server(_code(tmp_path, HOOKS), env={"SAGEMAKER_MODEL_SERVER_WORKERS": "2"})
    pids: list[int] = []

    def client() -> None:
        pids.append(json.loads(server.invoke("[1]", JSON)[2])["pid"])

    threads = [threading.Thread(target=client) for _ in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    calls = (server.base / "model" / "model_fn_calls").read_text().split()
    assert len(calls) == 2
    assert len(set(calls)) == 2
    assert len(pids) == 24
    assert set(map(str, pids)) <= set(calls)


def test_transform_fn_replaces_the_other_hooks(tmp_path: Path, start_server: StartServer) -> None:
    server = start_server(_code(tmp_path, TRANSFORM))
    status, headers, body = server.invoke("abc", "text/csv; charset=utf-8", "*/*")
    assert status == 200
    assert headers["content-type"] == "text/plain"
    assert body == b"m|abc|text/csv|application/json"


def test_batched_default_predict_isolates_a_failing_request(
    tmp_path: Path, start_server: StartServer
) -> None:
    server = start_server(_code(tmp_path, CALLABLE_MODEL))
    results: dict[int, tuple[int, bytes]] = {}
    barrier = threading.Barrier(8)

    def client(i: int) -> None:
        x = np.full((2, 3), np.nan if i == 5 else i, np.float32)
        conn = server.connect()
        barrier.wait()
        status, _, body = server.invoke(npy(x), NPY, NPY, conn=conn)
        results[i] = (status, body)
        conn.close()

    for _ in range(3):
        threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for i, (status, body) in results.items():
            if i == 5:
                assert status == 500
                assert "NaN in the input" in json.loads(body)["message"]
            else:
                assert status == 200
                np.testing.assert_array_equal(from_npy(body), np.full((2, 3), 2 * i))


def test_request_timeout_is_504_and_worker_recovers(
    tmp_path: Path, start_server: StartServer
) -> None:
    server = start_server(_code(tmp_path, HOOKS), env={"SAGEMAKER_MODEL_SERVER_TIMEOUT": "1"})
    t0 = time.monotonic()
    status, _, body = server.invoke("sleep 5", JSON)
    assert status == 504
    assert json.loads(body)["error"] == "timeout"
    assert time.monotonic() - t0 < 4
    assert server.invoke("[1]", JSON)[0] == 200


def test_sigterm_finishes_in_flight_requests(tmp_path: Path, start_server: StartServer) -> None:
    server = start_server(_code(tmp_path, HOOKS))
    outcome: list[int] = []
    conn = server.connect()
    thread = threading.Thread(
        target=lambda: outcome.append(server.invoke("sleep 1.5", JSON, conn=conn)[0])
    )
    thread.start()
    time.sleep(0.5)
    server.proc.send_signal(signal.SIGTERM)
    thread.join(10)
    assert outcome == [200]
    assert server.wait_exit(20) == 0
    with pytest.raises(ConnectionRefusedError):
        server.request("GET", "/ping")


def test_ping_waits_for_every_worker(tmp_path: Path, start_server: StartServer) -> None:
    slow = """
import os, time
def model_fn(model_dir):
    try:
        os.close(os.open(os.path.join(model_dir, "first"), os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        time.sleep(2.5)  # the second worker is slow to load
    return lambda x: x
"""
    server = start_server(
        _code(tmp_path, slow), env={"SAGEMAKER_MODEL_SERVER_WORKERS": "2"}, wait=False
    )
    seen: set[int] = set()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            status = server.request("GET", "/ping")[0]
        except OSError:
            status = 0
        seen.add(status)
        if status == 200:
            break
        time.sleep(0.05)
    assert 503 in seen  # a loaded worker answered, but not every worker was ready
    assert 200 in seen


def test_workers_exit_when_the_parent_is_killed(tmp_path: Path, start_server: StartServer) -> None:
    server = start_server(_code(tmp_path, HOOKS), env={"SAGEMAKER_MODEL_SERVER_WORKERS": "2"})
    workers = [int(p) for p in (server.base / "model" / "model_fn_calls").read_text().split()]
    server.proc.kill()
    server.wait_exit(10)
    deadline = time.monotonic() + 10
    alive = workers
    while alive and time.monotonic() < deadline:
        alive = [pid for pid in workers if Path(f"/proc/{pid}").exists() and not _zombie(pid)]
        time.sleep(0.05)
    assert alive == []


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")
    except (OSError, IndexError):
        return True


def test_standard_event_loop_without_uvloop(tmp_path: Path, start_server: StartServer) -> None:
    """uvloop is optional: the same server on asyncio's own loop."""
    server = start_server(_code(tmp_path, HOOKS), env={"CHAINER_SAGEMAKER_UVLOOP": "0"})
    conn = server.connect()
    try:
        for i in range(5):
            status, _, body = server.invoke(f"[{i}]", JSON, conn=conn)
            assert status == 200
            assert json.loads(body)["y"] == [3.0 * i]
        assert server.invoke("[13]", JSON, conn=conn)[0] == 500
        assert server.invoke(b"x" * (7 * 1024 * 1024), JSON, conn=conn)[0] == 413
        assert server.invoke("[1]", JSON, conn=conn)[0] == 200
    finally:
        conn.close()
