"""Running a synthesized training job on this machine with the container runtime's ``train``.

Lays out the ``/opt/ml`` tree SageMaker would write (hyperparameters.json, resourceconfig.json
for ``algo-1..algo-N``, inputdataconfig.json, the channels), runs ``train``, and packs
``model.tar.gz`` and ``output.tar.gz`` like SageMaker. A job of several instances runs every
host's processes on this machine under one mpirun.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from chainer_sagemaker_cdk.local._commands import LocalModeError, runtime_command, stream
from chainer_sagemaker_cdk.local.artifacts import pack_model, pack_output
from chainer_sagemaker_cdk.local.assembly import TrainingJobSpec

__all__ = ["LocalTrainingResult", "resolve_channel", "run_training"]


@dataclass(frozen=True)
class LocalTrainingResult:
    exit_code: int
    failure_reason: str | None
    base_dir: Path
    model_artifact: Path
    output_artifact: Path
    seconds: float

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


def _lay_out(
    base: Path, job: TrainingJobSpec, hps: dict[str, str], channels: Mapping[str, Path]
) -> None:
    cfg = base / "input" / "config"
    cfg.mkdir(parents=True)
    hosts = [f"algo-{i}" for i in range(1, job.instance_count + 1)]
    (cfg / "hyperparameters.json").write_text(json.dumps(hps, indent=2, sort_keys=True))
    (cfg / "resourceconfig.json").write_text(
        json.dumps({"current_host": hosts[0], "hosts": hosts, "network_interface_name": "eth0"})
    )
    data_config: dict[str, Any] = {}
    for name, path in channels.items():
        declared = job.channels.get(name, {})
        data_config[name] = {
            "TrainingInputMode": declared.get("inputMode", job.input_mode),
            "S3DistributionType": declared.get("distribution", "FullyReplicated"),
            "RecordWrapperType": declared.get("recordWrapperType", "None"),
            **({"ContentType": declared["contentType"]} if declared.get("contentType") else {}),
        }
        dest = base / "input" / "data" / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.symlink_to(path, target_is_directory=path.is_dir())
    (cfg / "inputdataconfig.json").write_text(json.dumps(data_config, indent=2, sort_keys=True))
    for sub in ("model", "output/data", "code"):
        (base / sub).mkdir(parents=True, exist_ok=True)


def run_training(
    job: TrainingJobSpec,
    channels: Mapping[str, str | Path],
    work_dir: Path,
    *,
    hyperparameters: Mapping[str, Any] | None = None,
    job_name: str = "local-training-job",
    log: Callable[[str], None] = print,
) -> LocalTrainingResult:
    """Run ``job`` here; ``hyperparameters`` override the synthesized ones (SDK-encoded)."""
    missing = sorted(set(job.channels) - set(channels))
    if missing:
        raise LocalModeError(
            f"channel(s) {missing} of {job.path} have no data: pass e.g. "
            f"--channel {missing[0]}=DIR (a directory, file:// or s3:// URI)"
        )
    if job.code_asset is None:
        raise LocalModeError(f"{job.path} has no code asset in the assembly; synthesize again")
    train = runtime_command("train")
    work_dir = Path(work_dir).resolve()
    base = work_dir / "ml"
    if base.exists():
        shutil.rmtree(base)
    with tempfile.TemporaryDirectory(
        prefix="channels-", dir=work_dir if work_dir.exists() else None
    ) as tmp:
        local_channels = {n: resolve_channel(n, s, Path(tmp)) for n, s in channels.items()}
        hps = dict(job.hyperparameters)
        hps["sagemaker_submit_directory"] = json.dumps(job.code_asset)
        hps.update({k: json.dumps(v) for k, v in (hyperparameters or {}).items()})
        _lay_out(base, job, hps, local_channels)
        env = {
            **os.environ,
            **job.environment,
            "SAGEMAKER_BASE_DIR": str(base),
            "TRAINING_JOB_NAME": job_name,
        }
        if job.instance_count > 1:
            env["CHAINER_SAGEMAKER_LOCAL_HOSTS"] = "1"
        log(
            f"[local] training {job.path} as {job_name}: {job.instance_count} x "
            f"{job.instance_type} on this machine, tree {base}"
        )
        started = time.monotonic()
        code = stream([train], env=env, prefix="[algo-1] ", log=log)
        seconds = time.monotonic() - started
    output = base / "output"
    failure = (output / "failure").read_text().strip() if (output / "failure").exists() else None
    artifacts = work_dir / "artifacts"
    model_tar = pack_model(base / "model", artifacts / "model.tar.gz")
    output_tar = pack_output(output, artifacts / "output.tar.gz")
    log(f"[local] training {'succeeded' if code == 0 else 'failed'} in {seconds:.1f} s")
    return LocalTrainingResult(code, failure, base, model_tar, output_tar, seconds)
