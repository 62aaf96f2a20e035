"""Local mode in the runtime image: the synthesized job and model run in containers.

What SageMaker does with the image, done with podman or docker on this machine:

- training: one container per host (``algo-1`` .. ``algo-N``), each started as
  ``<engine> run IMAGE train`` (``train`` is PID 1, no ``--init``), on a private network of the
  job's own where each host's name resolves (the network's DNS, ``--network-alias``); each host
  has its own ``/opt/ml`` tree (``resourceconfig.json`` names it the current host), the channels
  are mounted read-only at ``/opt/ml/input/data/<name>``, and the staged code asset read-only at
  ``/opt/ml/input/code-asset`` (``sagemaker_submit_directory`` points there, where SageMaker
  would give an ``s3://`` URL). The job ends when every container has exited; its result is
  ``algo-1``'s (SageMaker reports the first host's failure), packed like :func:`run_training`.
- serving: one ``<engine> run IMAGE serve`` with ``/opt/ml/model`` mounted and port 8080
  published on ``127.0.0.1``; ``/ping`` is awaited, SIGTERM stops it (the server drains).

Containers and networks are removed when the job or endpoint ends, whatever happened.
The engine is ``docker`` when a Docker engine answers, else ``podman``; podman reads its storage
and configuration from ``CONTAINERS_CONF``/``CONTAINERS_STORAGE_CONF`` (in this repository:
``eval "$(scripts/image.sh env)"``, the storage ``make image`` built into).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from chainer_sagemaker_cdk.local._commands import LocalModeError
from chainer_sagemaker_cdk.local.artifacts import pack_model, pack_output
from chainer_sagemaker_cdk.local.assembly import TrainingJobSpec
from chainer_sagemaker_cdk.local.serving import LocalEndpoint
from chainer_sagemaker_cdk.local.training import (
    LocalTrainingResult,
    resolve_channel,
    run_training,
    shard,
)

__all__ = [
    "ContainerEndpoint",
    "ContainerEngine",
    "add_arguments",
    "endpoint_class",
    "run_training_in_container",
    "training_runner",
]

CODE_MOUNT = "/opt/ml/input/code-asset"


class ContainerEngine:
    """The ``podman`` or ``docker`` command line, with the few operations local mode needs."""

    def __init__(self, command: str | None = None) -> None:
        self.command = command or self.detect()

    @staticmethod
    def detect() -> str:
        """``docker`` when its engine answers, else ``podman``; an error naming the fix."""
        if shutil.which("docker"):
            probe = subprocess.run(["docker", "info"], capture_output=True, check=False)
            if probe.returncode == 0:
                return "docker"
        if shutil.which("podman"):
            return "podman"
        raise LocalModeError(
            "--container needs podman or a running Docker engine; install podman "
            "(apt-get install podman runc netavark aardvark-dns, or run scripts/image.sh)"
        )

    def __call__(
        self, *args: str, check: bool = True, timeout: float | None = 120
    ) -> subprocess.CompletedProcess[str]:
        out = subprocess.run(
            [self.command, *args], capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and out.returncode != 0:
            raise LocalModeError(
                f"`{self.command} {' '.join(args[:3])} ...` failed ({out.returncode}): "
                f"{out.stderr.strip()[-800:]}"
            )
        return out

    def require_image(self, image: str) -> None:
        if self("image", "inspect", image, check=False).returncode != 0:
            raise LocalModeError(
                f"image {image!r} is not in {self.command}'s storage; build it first "
                "(make image) or pass the image you built with --container IMAGE"
            )

    def remove(self, *containers: str) -> None:
        if containers:
            self("rm", "-f", *containers, check=False)

    def exit_code(self, container: str) -> int:
        out = self("inspect", "--format", "{{.State.ExitCode}}", container)
        return int(out.stdout.strip())

    @contextlib.contextmanager
    def network(self, name: str, subnet: str | None = None) -> Iterator[str]:
        """A private bridge network for one job (DNS names on), removed afterwards."""
        self("network", "create", *(["--subnet", subnet] if subnet else []), name)
        try:
            yield name
        finally:
            self("network", "rm", "-f", name, check=False)


def _link_or_copy(file: Path, at: Path) -> None:
    """A hard link where ``file`` is on the same file system, else a copy (a container does
    not see this machine's paths, so a symlink would dangle in it)."""
    try:
        os.link(file, at)
    except OSError:
        shutil.copy2(file, at)


def _lay_out_host(
    base: Path, job: TrainingJobSpec, host: str, hosts: list[str], hps: Mapping[str, str]
) -> None:
    cfg = base / "input" / "config"
    cfg.mkdir(parents=True)
    (cfg / "hyperparameters.json").write_text(json.dumps(dict(hps), indent=2, sort_keys=True))
    (cfg / "resourceconfig.json").write_text(
        json.dumps({"current_host": host, "hosts": hosts, "network_interface_name": "eth0"})
    )
    data_config: dict[str, Any] = {}
    for name, declared in job.channels.items():
        data_config[name] = {
            "TrainingInputMode": declared.get("inputMode", job.input_mode),
            "S3DistributionType": declared.get("distribution", "FullyReplicated"),
            "RecordWrapperType": declared.get("recordWrapperType", "None"),
            **({"ContentType": declared["contentType"]} if declared.get("contentType") else {}),
        }
    (cfg / "inputdataconfig.json").write_text(json.dumps(data_config, indent=2, sort_keys=True))
    for sub in ("model", "output/data", "code", "input/data"):
        (base / sub).mkdir(parents=True, exist_ok=True)


def _follow(
    engine: ContainerEngine, container: str, prefix: str, log: Callable[[str], None]
) -> threading.Thread:
    def pump() -> None:
        proc = subprocess.Popen(
            [engine.command, "logs", "-f", container],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        assert proc.stdout is not None
        for raw in iter(proc.stdout.readline, b""):
            log(prefix + raw.decode("utf-8", "replace").rstrip("\n").replace("\x1b[J", ""))
        proc.wait()

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    return thread


def run_training_in_container(
    job: TrainingJobSpec,
    channels: Mapping[str, str | Path],
    work_dir: Path,
    *,
    image: str,
    hyperparameters: Mapping[str, Any] | None = None,
    job_name: str = "local-training-job",
    engine: ContainerEngine | None = None,
    subnet: str | None = None,
    timeout: float = 3600.0,
    log: Callable[[str], None] = print,
    environment: Mapping[str, str] | None = None,
    hosts: str = "auto",  # the CLI's --hosts; containers are always hosts of their own
) -> LocalTrainingResult:
    """Run ``job`` in ``image``, one container per host; like :func:`run_training` otherwise
    (``environment`` is added to every host's; ``hosts`` only takes ``auto``/``namespaces``:
    a container is a host of its own)."""
    if hosts == "emulated":
        raise LocalModeError(
            "--hosts emulated shares one tree between hosts; with --container each host is a "
            "container of its own: leave --hosts out"
        )
    missing = sorted(set(job.channels) - set(channels))
    if missing:
        raise LocalModeError(
            f"channel(s) {missing} of {job.path} have no data: pass e.g. "
            f"--channel {missing[0]}=DIR (a directory, file:// or s3:// URI)"
        )
    if job.code_asset is None:
        raise LocalModeError(f"{job.path} has no code asset in the assembly; synthesize again")
    engine = engine or ContainerEngine()
    engine.require_image(image)
    work_dir = Path(work_dir).resolve()
    hosts_dir = work_dir / "hosts"
    if hosts_dir.exists():
        shutil.rmtree(hosts_dir)
    names = [f"algo-{i}" for i in range(1, job.instance_count + 1)]
    code = Path(job.code_asset)
    hps = dict(job.hyperparameters)
    hps["sagemaker_submit_directory"] = json.dumps(
        CODE_MOUNT if code.is_dir() else f"{CODE_MOUNT}/{code.name}"
    )
    hps.update({k: json.dumps(v) for k, v in (hyperparameters or {}).items()})
    tag = f"chainer-local-{uuid.uuid4().hex[:8]}"
    work_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        tmp = Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="channels-", dir=work_dir))
        )
        local_channels = {n: resolve_channel(n, s, tmp) for n, s in channels.items()}
        network = stack.enter_context(engine.network(tag, subnet))
        containers = [f"{tag}-{host}" for host in names]
        stack.callback(engine.remove, *containers)
        log(
            f"[local] training {job.path} as {job_name} in {image}: {len(names)} container(s) "
            f"on network {network} ({engine.command}), trees under {hosts_dir}"
        )
        started = time.monotonic()
        pumps = []
        for host, name in zip(names, containers, strict=True):
            base = hosts_dir / host / "ml"
            _lay_out_host(base, job, host, names, hps)
            mounts = ["-v", f"{base}:/opt/ml"]
            for ch, path in local_channels.items():
                sharded = job.channels.get(ch, {}).get("distribution") == "ShardedByS3Key"
                if sharded and len(names) > 1:
                    index, shards = names.index(host), hosts_dir / host / "shards"
                    path = shard(ch, path, index, len(names), shards, place=_link_or_copy)
                mounts += ["-v", f"{path}:/opt/ml/input/data/{ch}:ro"]
            target = CODE_MOUNT if code.is_dir() else f"{CODE_MOUNT}/{code.name}"
            mounts += ["-v", f"{code}:{target}:ro"]
            env = {**job.environment, **(environment or {}), "TRAINING_JOB_NAME": job_name}
            engine(
                "run", "-d", "--name", name, "--hostname", host, "--network", network,
                "--network-alias", host, *mounts,
                *[arg for k, v in env.items() for arg in ("-e", f"{k}={v}")],
                image, "train",
            )  # fmt: skip
            pumps.append(_follow(engine, name, f"[{host}] ", log))
        deadline = started + timeout
        codes = []
        for name in containers:
            left = max(1.0, deadline - time.monotonic())
            try:
                engine("wait", name, timeout=left)
            except subprocess.TimeoutExpired:
                log(f"[local] {name} still runs after {timeout:.0f} s; stopping the job")
                engine("stop", "-t", "30", *containers, check=False, timeout=60)
            codes.append(engine.exit_code(name))
        for pump in pumps:
            pump.join(timeout=10)
        seconds = time.monotonic() - started
    base = hosts_dir / names[0] / "ml"
    output = base / "output"
    failure = (output / "failure").read_text().strip() if (output / "failure").exists() else None
    artifacts = work_dir / "artifacts"
    model_tar = pack_model(base / "model", artifacts / "model.tar.gz")
    output_tar = pack_output(output, artifacts / "output.tar.gz")
    log(
        f"[local] training {'succeeded' if codes[0] == 0 else 'failed'} in {seconds:.1f} s "
        f"(exit codes {dict(zip(names, codes, strict=True))})"
    )
    return LocalTrainingResult(codes[0], failure, base, model_tar, output_tar, seconds)


class ContainerEndpoint(LocalEndpoint):
    """``serve`` in ``image`` with the model at ``/opt/ml/model``, port 8080 published on
    ``host:port``; a context manager like :class:`LocalEndpoint`."""

    def __init__(
        self,
        model_data: Path,
        work_dir: Path,
        *,
        image: str,
        engine: ContainerEngine | None = None,
        environment: Mapping[str, str] | None = None,
        code: str | Path | None = None,
        port: int = 8080,
        host: str = "127.0.0.1",
        workers: int | None = None,
        startup_timeout: float = 120.0,
    ) -> None:
        super().__init__(
            model_data,
            work_dir,
            environment=environment,
            code=code,
            port=port,
            host=host,
            workers=workers,
            startup_timeout=startup_timeout,
        )
        self.image = image
        self.engine = engine or ContainerEngine()
        self.container: str | None = None
        self.ready_seconds: float | None = None

    def start(self) -> ContainerEndpoint:
        self.engine.require_image(self.image)
        base = self._prepare()
        name = f"chainer-serve-{uuid.uuid4().hex[:8]}"
        env = dict(self.environment)
        mounts = ["-v", f"{base / 'model'}:/opt/ml/model:ro"]
        if self.code is not None:
            code = Path(self.code)
            target = CODE_MOUNT if code.is_dir() else f"{CODE_MOUNT}/{code.name}"
            mounts += ["-v", f"{code.resolve()}:{target}:ro"]
            env["SAGEMAKER_SUBMIT_DIRECTORY"] = target
        if self.workers is not None:
            env["SAGEMAKER_MODEL_SERVER_WORKERS"] = str(self.workers)
        started = time.monotonic()
        self.engine(
            "run", "-d", "--name", name, "-p", f"{self.host}:{self.port}:8080", *mounts,
            *[arg for k, v in env.items() for arg in ("-e", f"{k}={v}")],
            self.image, "serve",
        )  # fmt: skip
        self.container = name
        try:
            self._wait_for_ping(started)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_for_ping(self, started: float) -> None:
        assert self.container is not None
        deadline = started + self.startup_timeout
        while time.monotonic() < deadline:
            state = self.engine("inspect", "--format", "{{.State.Running}}", self.container)
            if state.stdout.strip() != "true":
                raise LocalModeError(
                    f"serve exited with code {self.engine.exit_code(self.container)} before it "
                    "was ready:\n" + self.log_tail()
                )
            try:
                with urllib.request.urlopen(self.url + "/ping", timeout=2) as response:  # noqa: S310
                    if response.status == 200:
                        self.ready_seconds = time.monotonic() - started
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        raise LocalModeError(
            f"serve did not answer /ping within {self.startup_timeout:.0f} s:\n" + self.log_tail()
        )

    def log_tail(self, lines: int = 30) -> str:
        if self.container is None:
            return ""
        out = self.engine("logs", "--tail", str(lines), self.container, check=False)
        return (out.stdout + out.stderr).strip()

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (the server drains), SIGKILL after ``timeout``; the container is removed."""
        if self.container is None:
            return None
        name, self.container = self.container, None
        try:
            self.engine("stop", "-t", str(int(timeout)), name, check=False, timeout=timeout + 30)
            return self.engine.exit_code(name)
        finally:
            self.engine.remove(name)

    def __enter__(self) -> ContainerEndpoint:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--container IMAGE`` for the ``train`` and ``serve`` subcommands."""
    parser.add_argument(
        "--container",
        metavar="IMAGE",
        help="run in this runtime image (podman, or docker when its engine runs), as SageMaker "
        "does: e.g. chainer-sagemaker:cpu from `make image`",
    )


def training_runner(args: argparse.Namespace) -> Callable[..., LocalTrainingResult]:
    """:func:`run_training`, or :func:`run_training_in_container` with ``--container``."""
    if getattr(args, "container", None):
        return functools.partial(run_training_in_container, image=args.container)
    return run_training


def endpoint_class(args: argparse.Namespace) -> Callable[..., LocalEndpoint]:
    """:class:`LocalEndpoint`, or :class:`ContainerEndpoint` with ``--container``."""
    if getattr(args, "container", None):
        return functools.partial(ContainerEndpoint, image=args.container)
    return LocalEndpoint
