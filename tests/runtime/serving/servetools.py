"""A ``serve`` process on a free loopback port, and a small real HTTP client for it."""

from __future__ import annotations

import http.client
import io
import os
import signal
import socket
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = ROOT / "examples" / "digits"
SERVE = str(Path(sys.executable).parent / "serve")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def extract_model(tarball: Path, model_dir: Path) -> None:
    with tarfile.open(tarball) as tar:
        tar.extractall(model_dir, filter="data")


def npy(array: Any) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.asarray(array), allow_pickle=False)
    return buf.getvalue()


def from_npy(body: bytes) -> Any:
    return np.load(io.BytesIO(body), allow_pickle=False)


class Server:
    """``serve`` started as SageMaker would start it, with its output kept in a log file."""

    def __init__(
        self, base: Path, code: Path | str | None, program: str | None, env: dict[str, str]
    ) -> None:
        self.base = base
        self.port = free_port()
        self.log_path = base / "serve.log"
        full_env = {
            **os.environ,
            "SAGEMAKER_BASE_DIR": str(base),
            "SAGEMAKER_BIND_TO_PORT": str(self.port),
            "SAGEMAKER_BIND_TO_HOST": "127.0.0.1",
            "SAGEMAKER_MODEL_SERVER_WORKERS": "1",
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
            **env,
        }
        for name, value in (("SAGEMAKER_PROGRAM", program), ("SAGEMAKER_SUBMIT_DIRECTORY", code)):
            if value is None:
                full_env.pop(name, None)
            else:
                full_env[name] = str(value)
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [SERVE], env=full_env, stdout=self._log, stderr=subprocess.STDOUT, cwd=base
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"serve exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if self.request("GET", "/ping")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"serve did not become ready in {timeout} s:\n{self.log()}")

    def wait_exit(self, timeout: float = 60) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            self._log.close()

    def connect(self, timeout: float = 30) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(
        self,
        method: str,
        path: str,
        body: bytes | str | None = None,
        headers: dict[str, str] | None = None,
        conn: http.client.HTTPConnection | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        own = conn is None
        c = conn or self.connect()
        try:
            c.request(method, path, body=body, headers=headers or {})
            resp = c.getresponse()
            data = resp.read()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
        finally:
            if own:
                c.close()

    def invoke(
        self, body: bytes | str, content_type: str | None, accept: str | None = None, **kw: Any
    ) -> tuple[int, dict[str, str], bytes]:
        headers = {}
        if content_type is not None:
            headers["Content-Type"] = content_type
        if accept is not None:
            headers["Accept"] = accept
        return self.request("POST", "/invocations", body, headers, **kw)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if not self._log.closed:
            self._log.close()


def npy_with_header(header: str, data: bytes = b"") -> bytes:
    """An NPY 1.0 body with a hand-written header (for the bad-input corpus)."""
    raw = header.encode("latin1")
    return b"\x93NUMPY\x01\x00" + len(raw).to_bytes(2, "little") + raw + data
