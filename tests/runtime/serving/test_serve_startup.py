"""Start-up: where the code comes from, requirements, and failing fast with a clear message."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from servetools import EXAMPLE, Server, from_npy, npy

StartServer = Callable[..., Server]
TINY = "def model_fn(model_dir):\n    return lambda x: x + 1\n"


def _code(tmp_path: Path, source: str, name: str = "inference.py") -> Path:
    code = tmp_path / "src"
    code.mkdir(exist_ok=True)
    (code / name).write_text(source)
    return code


def _fails(server: Server, exit_code: int | None = None) -> str:
    code = server.wait_exit(60)
    assert code != 0
    if exit_code is not None:
        assert code == exit_code, server.log()
    return server.log()


def test_missing_model_fn_stops_start_up(tmp_path: Path, start_server: StartServer) -> None:
    server = start_server(_code(tmp_path, "def predict_fn(x, m):\n    return x\n"), wait=False)
    log = _fails(server)
    assert "defines no model_fn(model_dir)" in log


def test_raising_model_fn_stops_start_up_with_its_error(
    tmp_path: Path, start_server: StartServer
) -> None:
    source = "def model_fn(model_dir):\n    raise FileNotFoundError('model.npz is missing')\n"
    server = start_server(
        _code(tmp_path, source), env={"SAGEMAKER_MODEL_SERVER_WORKERS": "2"}, wait=False
    )
    log = _fails(server, exit_code=3)
    assert "FileNotFoundError: model.npz is missing" in log
    assert "model_fn(" in log


def test_import_error_stops_start_up(tmp_path: Path, start_server: StartServer) -> None:
    server = start_server(_code(tmp_path, "import no_such_module_xyz\n"), wait=False)
    log = _fails(server)
    assert "No module named 'no_such_module_xyz'" in log


def test_unset_program_and_bad_numbers_are_reported_together(
    tmp_path: Path, start_server: StartServer
) -> None:
    env = {"SAGEMAKER_MODEL_SERVER_WORKERS": "many", "SAGEMAKER_MODEL_SERVER_TIMEOUT": "-1"}
    server = start_server(_code(tmp_path, TINY), program=None, env=env, wait=False)
    log = _fails(server, exit_code=2)
    assert "SAGEMAKER_PROGRAM is not set" in log
    assert "SAGEMAKER_MODEL_SERVER_WORKERS='many'" in log
    assert "SAGEMAKER_MODEL_SERVER_TIMEOUT='-1'" in log


def test_program_not_found_names_both_places(tmp_path: Path, start_server: StartServer) -> None:
    server = start_server(_code(tmp_path, TINY), program="missing.py", wait=False)
    log = _fails(server)
    assert "SAGEMAKER_PROGRAM='missing.py'" in log


def test_requirements_installed_once_before_the_workers(
    tmp_path: Path, start_server: StartServer
) -> None:
    code = _code(tmp_path, TINY)
    (code / "requirements.txt").write_text("numpy\n")  # already installed: no network needed
    server = start_server(code, env={"SAGEMAKER_MODEL_SERVER_WORKERS": "2"})
    log = server.log()
    assert log.count("Installing requirements") == 1
    assert log.index("Installing requirements") < log.index("model server ready")


def test_module_is_imported_not_run_as_main(tmp_path: Path, start_server: StartServer) -> None:
    source = TINY + "if __name__ == '__main__':\n    raise SystemExit('ran as a script')\n"
    server = start_server(_code(tmp_path, source))
    status, _, body = server.invoke(npy(np.zeros((1, 2), np.float32)), "application/x-npy", "*/*")
    assert status == 200
    assert json.loads(body) == [[1.0, 1.0]]


def test_code_bundled_in_the_model_archive(
    tmp_path: Path, start_server: StartServer, digits_model: dict[str, Path]
) -> None:
    """No SAGEMAKER_SUBMIT_DIRECTORY: the code comes from model.tar.gz's code/ directory."""
    bundle = tmp_path / "model.tar.gz"
    with tarfile.open(bundle, "w:gz") as tar:
        for path in sorted(digits_model["dir"].iterdir()):
            tar.add(path, arcname=path.name)
        tar.add(EXAMPLE / "train.py", arcname="code/train.py")
    server = start_server(None, "train.py", model_tarball=bundle)
    status, _, body = server.invoke(npy(np.zeros((2, 784), np.float32)), "application/x-npy")
    assert status == 200
    assert np.asarray(json.loads(body)).shape == (2, 10)


# s3:// code, from a real S3-compatible server ----------------------------------------------
S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    moto = Path(sys.executable).parent / "moto_server"
    proc = subprocess.Popen(
        [str(moto), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail("moto_server did not start")
            time.sleep(0.1)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(10)


def test_code_from_an_s3_sourcedir_tarball(
    tmp_path: Path,
    start_server: StartServer,
    digits_model: dict[str, Path],
    moto_endpoint: str,
) -> None:
    import boto3

    archive = tmp_path / "sourcedir.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(EXAMPLE / "train.py", arcname="train.py")
    s3 = boto3.client(
        "s3",
        endpoint_url=moto_endpoint,
        **{
            "aws_access_key_id": "testing",
            "aws_secret_access_key": "testing",
            "region_name": "us-east-1",
        },
    )
    s3.create_bucket(Bucket="serve-code")
    s3.upload_file(str(archive), "serve-code", "model-1/sourcedir.tar.gz")
    env = {**S3_ENV, "AWS_ENDPOINT_URL": moto_endpoint}
    server = start_server(
        "s3://serve-code/model-1/sourcedir.tar.gz",
        "train.py",
        model_tarball=digits_model["tarball"],
        env=env,
    )
    assert (server.base / "code" / "train.py").is_file()
    x = np.zeros((3, 784), np.float32)
    status, _, body = server.invoke(npy(x), "application/x-npy", "application/x-npy")
    assert status == 200
    assert from_npy(body).shape == (3, 10)

    missing = start_server("s3://serve-code/nope/sourcedir.tar.gz", "train.py", env=env, wait=False)
    log = _fails(missing)
    assert "cannot download the code from s3://serve-code/nope/sourcedir.tar.gz" in log


# the SageMaker Python SDK's own serializers -----------------------------------------------
_SDK_SCRIPT = """
import io, json, sys
import numpy as np
try:
    from sagemaker.serializers import NumpySerializer
    from sagemaker.deserializers import NumpyDeserializer
except ImportError:
    try:  # SDK v3 moved them
        from sagemaker.core.serializers import NumpySerializer
        from sagemaker.core.deserializers import NumpyDeserializer
    except ImportError:  # SDK v1, the one the Chainer predictor shipped with
        from sagemaker.predictor import npy_serializer, numpy_deserializer

        class NumpySerializer:
            CONTENT_TYPE = npy_serializer.content_type
            serialize = staticmethod(npy_serializer)

        class NumpyDeserializer:
            ACCEPT = numpy_deserializer.accept
            deserialize = staticmethod(numpy_deserializer)
if sys.argv[1] == "serialize":
    x = np.load(sys.argv[2])
    ser = NumpySerializer()
    open(sys.argv[3], "wb").write(ser.serialize(x))
    print(json.dumps({"content_type": ser.CONTENT_TYPE, "accept": NumpyDeserializer().ACCEPT}))
else:
    de = NumpyDeserializer()
    accept = de.ACCEPT[0] if isinstance(de.ACCEPT, (tuple, list)) else de.ACCEPT
    y = de.deserialize(io.BytesIO(open(sys.argv[2], "rb").read()), accept)
    np.save(sys.argv[3], y)
"""


def _sdk_python() -> str | None:
    candidates = [os.environ.get("SAGEMAKER_SDK_PYTHON", "")]
    # scripts/setup.sh makes .venv-sdk (SageMaker Python SDK 1.72) for the SDK comparisons
    candidates.append(str(Path(__file__).resolve().parents[3] / ".venv-sdk/bin/python"))
    return next((c for c in candidates if c and Path(c).is_file()), None)


def test_sagemaker_sdk_numpy_serializer_round_trip(
    tmp_path: Path, digits_server: Server, digits_model: dict[str, Path]
) -> None:
    sdk = _sdk_python()
    assert sdk is not None, (
        "run `make setup` (it creates .venv-sdk with the SageMaker Python SDK), or set "
        "SAGEMAKER_SDK_PYTHON to an interpreter that has `pip install sagemaker`"
    )
    x = (np.load(digits_model["test"] / "test.npz")["x"][:4] / 255.0).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    script = tmp_path / "sdk.py"
    script.write_text(_SDK_SCRIPT)
    # SDK v1's generated protobuf modules predate protobuf 4; the pure-Python parser reads them
    env = {**os.environ, "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "python"}
    out = subprocess.run(
        [sdk, str(script), "serialize", str(tmp_path / "x.npy"), str(tmp_path / "body")],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    types = json.loads(out.stdout.strip().splitlines()[-1])
    accept = types["accept"][0] if isinstance(types["accept"], list) else types["accept"]
    status, headers, reply = digits_server.invoke(
        (tmp_path / "body").read_bytes(), types["content_type"], accept
    )
    assert status == 200
    assert headers["content-type"] == accept
    (tmp_path / "reply").write_bytes(reply)
    subprocess.run(
        [sdk, str(script), "deserialize", str(tmp_path / "reply"), str(tmp_path / "y.npy")],
        check=True,
        capture_output=True,
        env=env,
    )
    y = np.load(tmp_path / "y.npy")
    assert y.shape == (4, 10)
    assert y.dtype == np.float32
