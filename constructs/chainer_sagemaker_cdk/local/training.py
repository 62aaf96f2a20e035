"""Running a synthesized training job on this machine with the container runtime's ``train``.

Lays out the ``/opt/ml`` tree SageMaker would write (hyperparameters.json, resourceconfig.json
for ``algo-1..algo-N``, inputdataconfig.json, the channels), runs ``train``, and packs
``model.tar.gz`` and ``output.tar.gz`` like SageMaker.

How the hosts of a job run (``hosts``):

- ``"namespaces"`` (the default for more than one instance): every host is its own network,
  PID, UTS, IPC and mount namespace with its own ``/opt/ml`` tree, hostname, ``eth0`` on a
  private bridge and sshd, each running ``train`` as PID 1 (:mod:`.netns`); the runtime's own
  master/worker flow connects them. Needs root.
- ``"emulated"``: every host's processes under one mpirun on this machine, sharing one tree
  (``CHAINER_SAGEMAKER_LOCAL_HOSTS=1``): an emulation, with no sshd, no host names and no
  master/worker flow, for machines where namespaces cannot be created.
- ``"auto"``: one instance runs ``train`` directly; more use namespaces.

Pipe-mode channels get SageMaker's per-epoch FIFOs (:mod:`.pipe`); FastFile works as File.
A ``ShardedByS3Key`` channel gives each separate host its share of the files (:func:`shard`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from chainer_sagemaker_cdk.local._commands import LocalModeError, runtime_command, stream
from chainer_sagemaker_cdk.local.artifacts import pack_model, pack_output
from chainer_sagemaker_cdk.local.assembly import TrainingJobSpec
from chainer_sagemaker_cdk.local.hosts import HostLayout, host_layouts, write_host_files
from chainer_sagemaker_cdk.local.netns import (
    NamespaceCluster,
    NamespacesUnavailable,
    namespaces_unavailable,
)
from chainer_sagemaker_cdk.local.pipe import PipeFeeder

__all__ = ["HostOutcome", "HostsMode", "LocalTrainingResult", "resolve_channel", "run_training"]

HostsMode = Literal["auto", "namespaces", "emulated"]
# Variables of this process that every host sees too (credentials and endpoints for S3 code and
# channels); everything else a host sees is the job's own environment, as in a container.
_PASSED_PREFIXES = ("AWS_",)
_SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# StopTrainingJob's grace for local runs: the runtime's own SIGTERM grace (30 s) and a margin.
STOP_GRACE_SECONDS = 40.0


@dataclass(frozen=True)
class HostOutcome:
    """How one host's ``train`` ended: exit code, and its ``success``/``failure`` file."""

    host: str
    exit_code: int | None  # None: the host never started
    outcome: str  # "success", "failure" or "none" (no file written)
    failure_reason: str | None
    seconds: float | None = None


@dataclass(frozen=True)
class LocalTrainingResult:
    exit_code: int
    failure_reason: str | None
    base_dir: Path  # the master's /opt/ml tree
    model_artifact: Path
    output_artifact: Path
    seconds: float
    hosts: tuple[HostOutcome, ...] = field(default=())

    @property
    def succeeded(self) -> bool:
        return self.exit_code == 0


def _download_s3_prefix(url: str, target: Path) -> Path:
    import boto3

    parsed = urlparse(url)
    bucket, prefix = parsed.netloc, parsed.path.lstrip("/")
    s3 = boto3.client("s3")
    count = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            key = obj["Key"]
            if key.endswith("/"):
                continue
            rel = key[len(prefix) :].lstrip("/") or Path(key).name
            dest = target / rel
            if not dest.resolve().is_relative_to(target.resolve()):
                raise LocalModeError(f"refusing S3 key {key!r}: it would land outside {target}")
            dest.parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(bucket, key, str(dest))
            count += 1
    if count == 0:
        raise LocalModeError(f"no objects under {url}; upload the channel's data there first")
    return target


def resolve_channel(name: str, source: str | Path, downloads: Path) -> Path:
    """A channel's data as a local directory: a path, a ``file://`` URI or an ``s3://`` prefix."""
    text = str(source)
    if text.startswith("s3://"):
        return _download_s3_prefix(text, downloads / name)
    path = Path(urlparse(text).path if text.startswith("file://") else text)
    if not path.exists():
        raise LocalModeError(f"channel {name!r}: {path} does not exist")
    return path.resolve()


def _symlink(file: Path, link: Path) -> None:
    link.symlink_to(file)


def shard(
    name: str,
    source: Path,
    index: int,
    count: int,
    into: Path,
    place: Callable[[Path, Path], None] = _symlink,
) -> Path:
    """Host ``index`` (of ``count``)'s share of a ``ShardedByS3Key`` channel: every
    ``count``-th file of ``source`` in key order, starting at the ``index``-th, placed at
    their paths under ``into / name`` (``place(file, at)``: a symlink; a container, which does
    not see this machine's paths, takes a hard link or copy). SageMaker gives each instance
    about 1/N of the objects without saying which; local mode picks round-robin over the
    sorted keys, so every file lands on exactly one host (a host may get none when there are
    fewer files than hosts)."""
    files = sorted(p for p in source.rglob("*") if p.is_file()) if source.is_dir() else [source]
    target = into / name
    target.mkdir(parents=True)
    for file in files[index::count]:
        at = target / (file.relative_to(source) if source.is_dir() else file.name)
        at.parent.mkdir(parents=True, exist_ok=True)
        place(file, at)
    return target


def _lay_out(
    base: Path,
    job: TrainingJobSpec,
    hps: dict[str, str],
    channels: Mapping[str, Path],
    *,
    current_host: str = "algo-1",
    separate_hosts: bool = False,
) -> list[PipeFeeder]:
    """Write one host's tree; returns the (not yet started) feeders of its Pipe channels.

    With ``separate_hosts`` (each host its own tree) a ``ShardedByS3Key`` channel gets this
    host's shard (:func:`shard`); otherwise every host sees all of it."""
    cfg = base / "input" / "config"
    cfg.mkdir(parents=True)
    hosts = [f"algo-{i}" for i in range(1, job.instance_count + 1)]
    (cfg / "hyperparameters.json").write_text(json.dumps(hps, indent=2, sort_keys=True))
    (cfg / "resourceconfig.json").write_text(
        json.dumps({"current_host": current_host, "hosts": hosts, "network_interface_name": "eth0"})
    )
    data_config: dict[str, Any] = {}
    feeders: list[PipeFeeder] = []
    data_dir = base / "input" / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    index = hosts.index(current_host)
    for name, path in channels.items():
        declared = job.channels.get(name, {})
        mode = declared.get("inputMode", job.input_mode)
        distribution = declared.get("distribution", "FullyReplicated")
        if separate_hosts and distribution == "ShardedByS3Key" and len(hosts) > 1:
            path = shard(name, path, index, len(hosts), base.parent / "shards")
        data_config[name] = {
            "TrainingInputMode": mode,
            "S3DistributionType": distribution,
            "RecordWrapperType": declared.get("recordWrapperType", "None"),
            **({"ContentType": declared["contentType"]} if declared.get("contentType") else {}),
        }
        if mode == "Pipe":
            feeders.append(
                PipeFeeder(
                    name,
                    path,
                    data_dir,
                    gzipped=declared.get("compression") == "Gzip",
                    record_io=declared.get("recordWrapperType") == "RecordIO",
                )
            )
        else:  # File, and FastFile (which streams on demand on SageMaker: the same files here)
            (data_dir / name).symlink_to(path, target_is_directory=path.is_dir())
    (cfg / "inputdataconfig.json").write_text(json.dumps(data_config, indent=2, sort_keys=True))
    for sub in ("model", "output/data", "code"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    return feeders


@contextlib.contextmanager
def _feeding(feeders: list[PipeFeeder], log: Callable[[str], None]) -> Iterator[None]:
    for feeder in feeders:
        feeder.start()
    try:
        yield
    finally:
        for feeder in feeders:
            feeder.stop()
            if feeder.error is not None:
                log(f"[local] Pipe mode: {feeder.error}")


def _outcome(host: str, tree: Path, code: int | None, seconds: float | None) -> HostOutcome:
    output = tree / "output"
    if (output / "failure").exists():
        reason = (output / "failure").read_text(errors="replace").strip()
        return HostOutcome(host, code, "failure", reason, seconds)
    if (output / "success").exists():
        return HostOutcome(host, code, "success", None, seconds)
    return HostOutcome(host, code, "none", None, seconds)


def _host_environment(train: str, job: TrainingJobSpec, extra: Mapping[str, str]) -> dict[str, str]:
    """A host's environment: the job's, as SageMaker gives a container, not this shell's."""
    env = {
        "PATH": f"{Path(train).parent}:{_SYSTEM_PATH}",
        "HOME": "/root",
        "LANG": "C.UTF-8",
        **{k: v for k, v in os.environ.items() if k.startswith(_PASSED_PREFIXES)},
    }
    env.update(job.environment)
    env.update(extra)
    return env


def _resolve_mode(mode: HostsMode, instance_count: int) -> str:
    if mode == "emulated" or (mode == "auto" and instance_count == 1):
        return "direct"
    why = namespaces_unavailable()
    if why is not None:
        raise NamespacesUnavailable(
            f"cannot run the job's {instance_count} host(s) as separate hosts here: {why}. "
            "To run every host's processes under one mpirun on this machine instead, pass "
            '--hosts emulated (hosts="emulated"): an emulation, with one shared /opt/ml tree, '
            "no sshd, no host names and no master/worker flow"
        )
    return "namespaces"


def run_training(
    job: TrainingJobSpec,
    channels: Mapping[str, str | Path],
    work_dir: Path,
    *,
    hyperparameters: Mapping[str, Any] | None = None,
    job_name: str = "local-training-job",
    log: Callable[[str], None] = print,
    hosts: HostsMode = "auto",
    environment: Mapping[str, str] | None = None,
    absent_hosts: Collection[str] = (),
    on_start: Callable[[NamespaceCluster], None] | None = None,
) -> LocalTrainingResult:
    """Run ``job`` here; ``hyperparameters`` override the synthesized ones (SDK-encoded).

    ``hosts`` chooses how a job's hosts run (see the module docstring); ``environment`` adds
    variables to every host's environment (after the job's own). For tests of the multi-host
    flow, with namespaces: ``absent_hosts`` names hosts that never start (an instance that never
    boots), and ``on_start`` is called with the running cluster once every host has started
    (to signal or kill a host). Ctrl-C (KeyboardInterrupt) stops the job as StopTrainingJob
    does, then re-raises.
    """
    missing = sorted(set(job.channels) - set(channels))
    if missing:
        raise LocalModeError(
            f"channel(s) {missing} of {job.path} have no data: pass e.g. "
            f"--channel {missing[0]}=DIR (a directory, file:// or s3:// URI)"
        )
    if job.code_asset is None:
        raise LocalModeError(f"{job.path} has no code asset in the assembly; synthesize again")
    mode = _resolve_mode(hosts, job.instance_count)
    unknown = sorted(set(absent_hosts) - {f"algo-{i}" for i in range(1, job.instance_count + 1)})
    if unknown or (absent_hosts and mode != "namespaces"):
        raise LocalModeError(
            f"absent_hosts {sorted(absent_hosts)} must name hosts of the job (algo-1.."
            f"algo-{job.instance_count}) run as namespaces"
        )
    train = runtime_command("train")
    work_dir = Path(work_dir).resolve()
    for old in ("ml", "hosts"):
        if (work_dir / old).exists():
            shutil.rmtree(work_dir / old)
    with tempfile.TemporaryDirectory(
        prefix="channels-", dir=work_dir if work_dir.exists() else None
    ) as tmp:
        local_channels = {n: resolve_channel(n, s, Path(tmp)) for n, s in channels.items()}
        hps = dict(job.hyperparameters)
        hps["sagemaker_submit_directory"] = json.dumps(job.code_asset)
        hps.update({k: json.dumps(v) for k, v in (hyperparameters or {}).items()})
        if mode == "direct":
            return _run_direct(
                job, hps, local_channels, work_dir, train, job_name, log, environment
            )
        return _run_namespaces(
            job, hps, local_channels, work_dir, train, job_name, log,
            environment, absent_hosts, on_start,
        )  # fmt: skip


def _finish(
    work_dir: Path,
    outcomes: list[HostOutcome],
    master_tree: Path,
    seconds: float,
    log: Callable[[str], None],
) -> LocalTrainingResult:
    """Pack the master's model and output as SageMaker does and report every host."""
    artifacts = work_dir / "artifacts"
    model_tar = pack_model(master_tree / "model", artifacts / "model.tar.gz")
    output_tar = pack_output(master_tree / "output", artifacts / "output.tar.gz")
    failed = [o for o in outcomes if o.exit_code != 0]
    code = failed[0].exit_code if failed else 0
    reason = next((o.failure_reason for o in outcomes if o.failure_reason), None)
    if failed and reason is None:
        reason = f"{failed[0].host} exited with code {failed[0].exit_code} without a failure file"
    log(f"[local] training {'succeeded' if not failed else 'failed'} in {seconds:.1f} s")
    return LocalTrainingResult(
        1 if code is None else code,
        reason,
        master_tree,
        model_tar,
        output_tar,
        seconds,
        tuple(outcomes),
    )


def _run_direct(
    job: TrainingJobSpec,
    hps: dict[str, str],
    channels: Mapping[str, Path],
    work_dir: Path,
    train: str,
    job_name: str,
    log: Callable[[str], None],
    environment: Mapping[str, str] | None,
) -> LocalTrainingResult:
    """One ``train`` process with ``SAGEMAKER_BASE_DIR``; several hosts emulated under one
    mpirun (``CHAINER_SAGEMAKER_LOCAL_HOSTS=1``)."""
    base = work_dir / "ml"
    feeders = _lay_out(base, job, hps, channels)
    env = {
        **os.environ,
        **job.environment,
        **(environment or {}),
        "SAGEMAKER_BASE_DIR": str(base),
        "TRAINING_JOB_NAME": job_name,
    }
    if job.instance_count > 1:
        env["CHAINER_SAGEMAKER_LOCAL_HOSTS"] = "1"
        log(
            f"[local] EMULATION: the {job.instance_count} hosts run as processes of one mpirun "
            "on this machine, sharing one /opt/ml tree (no sshd, no host names)"
        )
    log(
        f"[local] training {job.path} as {job_name}: {job.instance_count} x "
        f"{job.instance_type} on this machine, tree {base}"
    )
    started = time.monotonic()
    with _feeding(feeders, log):
        code = stream([train], env=env, prefix="[algo-1] ", log=log)
    seconds = time.monotonic() - started
    outcome = _outcome("algo-1", base, code, seconds)
    log(f"[local] algo-1: exit code {code}, {outcome.outcome}")
    return _finish(work_dir, [outcome], base, seconds, log)


def _run_namespaces(
    job: TrainingJobSpec,
    hps: dict[str, str],
    channels: Mapping[str, Path],
    work_dir: Path,
    train: str,
    job_name: str,
    log: Callable[[str], None],
    environment: Mapping[str, str] | None,
    absent_hosts: Collection[str],
    on_start: Callable[[NamespaceCluster], None] | None,
) -> LocalTrainingResult:
    """Every host its own namespaces and tree, each running ``train`` as PID 1."""
    layouts: list[HostLayout] = host_layouts(job.instance_count, work_dir)
    write_host_files(layouts, work_dir)
    feeders = [
        f
        for h in layouts
        for f in _lay_out(h.tree, job, hps, channels, current_host=h.name, separate_hosts=True)
    ]
    env = {**_host_environment(train, job, environment or {}), "TRAINING_JOB_NAME": job_name}
    log(
        f"[local] training {job.path} as {job_name}: {job.instance_count} x "
        f"{job.instance_type}, each host its own namespaces on a private bridge "
        f"({', '.join(f'{h.name} {h.address}' for h in layouts)}); trees under {work_dir / 'hosts'}"
    )
    started = time.monotonic()
    with NamespaceCluster(layouts, [train], env, log=log) as cluster, _feeding(feeders, log):
        cluster.start(absent=absent_hosts)
        if on_start is not None:
            on_start(cluster)
        try:
            cluster.wait()
        except KeyboardInterrupt:
            log(f"[local] interrupted: stopping every host (SIGTERM, SIGKILL after "
                f"{STOP_GRACE_SECONDS:.0f} s), then removing the namespaces")  # fmt: skip
            try:
                cluster.stop(STOP_GRACE_SECONDS)
            finally:
                cluster.close()
            raise
    seconds = time.monotonic() - started
    outcomes = []
    for layout in layouts:
        run = cluster.hosts[layout.name]
        took = None if run.ended_at is None else run.ended_at - run.started_at
        outcome = _outcome(layout.name, layout.tree, run.exit_code, took)
        outcomes.append(outcome)
        if run.proc is None:
            log(f"[local] {layout.name}: never started")
        else:
            log(f"[local] {layout.name}: exit code {run.exit_code}, {outcome.outcome}")
    return _finish(work_dir, outcomes, layouts[0].tree, seconds, log)
