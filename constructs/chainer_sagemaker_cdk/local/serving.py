"""Serving a model on this machine with the container runtime's ``serve``."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

from chainer_sagemaker_cdk.local._commands import LocalModeError, runtime_command

__all__ = ["LocalEndpoint"]


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


class LocalEndpoint:
    """``serve`` on ``host:port`` for one model; a context manager that stops it cleanly.

    ``model_data`` is a ``model.tar.gz`` (extracted like SageMaker does) or a directory;
    ``environment`` is the model's container environment (``SAGEMAKER_PROGRAM``,
    ``SAGEMAKER_SUBMIT_DIRECTORY``, ...); ``code`` replaces the submit directory with a local
    code tarball or directory (the staged code asset).
    """

    def __init__(
        self,
        model_data: Path,
        work_dir: Path,
        *,
        environment: Mapping[str, str] | None = None,
        code: str | Path | None = None,
        port: int = 8080,
        host: str = "127.0.0.1",
        workers: int | None = None,
        startup_timeout: float = 120.0,
    ) -> None:
        self.model_data = Path(model_data)
        self.work_dir = Path(work_dir).resolve()
        self.environment = dict(environment or {})
        self.code = code
        self.host = host
        self.port = port
        self.workers = workers
        self.startup_timeout = startup_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: Path | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _prepare(self) -> Path:
        base = self.work_dir / "serve-ml"
        if base.exists():
            shutil.rmtree(base)
        model_dir = base / "model"
        model_dir.mkdir(parents=True)
        if self.model_data.is_dir():
            shutil.copytree(self.model_data, model_dir, dirs_exist_ok=True)
        elif self.model_data.is_file():
            with tarfile.open(self.model_data, "r:*") as tar:
                tar.extractall(model_dir, filter="data")
        else:
            raise LocalModeError(f"model data {self.model_data} does not exist")
        return base

    def start(self) -> LocalEndpoint:
        if not _port_free(self.host, self.port):
            raise LocalModeError(
                f"port {self.port} on {self.host} is in use; pass another port (--port)"
            )
        serve = runtime_command("serve")
        base = self._prepare()
        env = {**os.environ, **self.environment}
        env.update(
            {
                "SAGEMAKER_BASE_DIR": str(base),
                "SAGEMAKER_BIND_TO_PORT": str(self.port),
                "SAGEMAKER_BIND_TO_HOST": self.host,
            }
        )
        if self.code is not None:
            env["SAGEMAKER_SUBMIT_DIRECTORY"] = str(self.code)
        if self.workers is not None:
            env["SAGEMAKER_MODEL_SERVER_WORKERS"] = str(self.workers)
        self._log = base / "serve.log"
        log_file = self._log.open("wb")
        self._proc = subprocess.Popen(
            [serve], env=env, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        log_file.close()
        self._wait_until_ready()
        return self

    def _wait_until_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise LocalModeError(
                    f"serve exited with code {self._proc.returncode} before it was ready:\n"
                    + self.log_tail()
                )
            try:
                ping = self.url + "/ping"  # always http://host:port, built above
                with urllib.request.urlopen(ping, timeout=2) as response:  # noqa: S310
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        self.stop()
        raise LocalModeError(
            f"serve did not answer /ping within {self.startup_timeout:.0f} s:\n" + self.log_tail()
        )

    def log_tail(self, lines: int = 30) -> str:
        if self._log is None or not self._log.exists():
            return ""
        return "\n".join(self._log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (the server drains in-flight requests), then SIGKILL after ``timeout``."""
        if self._proc is None:
            return None
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        code = self._proc.returncode
        self._proc = None
        return code

    def __enter__(self) -> LocalEndpoint:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
