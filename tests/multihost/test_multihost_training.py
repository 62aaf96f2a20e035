"""Local mode runs a job of N instances as N hosts, each like a SageMaker training container:
its own network, PID, UTS and mount namespace, its own /opt/ml, sshd and `train` as PID 1,
joined on a private bridge; ChainerMN runs across them through the runtime's own flow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from hosttools import STACK, Log, left_behind

from chainer_sagemaker_cdk.local import CloudAssembly, run_training

MIN_ACCURACY = 0.8  # two epochs of the ChainerMN example (it reaches ~0.95; one process: 0.9)


def _channels(digits: Path) -> dict[str, str | Path]:
    return {"train": digits / "train", "test": digits / "test"}


def test_a_two_host_chainermn_job_runs_through_the_cli(
    assembly: Path, digits: Path, tmp_path: Path
) -> None:
    work = tmp_path / "run"
    result = subprocess.run(
        [
            sys.executable, "-m", "chainer_sagemaker_cdk.local", "--cdk-out", str(assembly),
            "--stack", STACK, "train", "--job", "Mn2", "--work-dir", str(work),
            "--channel", f"train={digits / 'train'}", "--channel", f"test={digits / 'test'}",
        ],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    out = result.stdout
    assert result.returncode == 0, out[-4000:] + result.stderr[-2000:]
    # Every host's log is streamed with its prefix; the runtime's real master/worker flow ran.
    assert "[algo-1] Server listening on 0.0.0.0 port 22" in out  # each host's own sshd
    assert "[algo-2] Server listening on 0.0.0.0 port 22" in out
    assert "[algo-2] Accepted publickey for root from 10.213.0.1" in out  # over the bridge
    assert "[algo-1] [train] running: mpirun --host algo-1,algo-2 -np 2" in out
    assert "rank 0 of 2 (intra rank 0, inter rank 0) on algo-1" in out
    assert "rank 1 of 2 (intra rank 0, inter rank 1) on algo-2" in out
    # Every host's exit code and outcome is reported.
    assert "[local] algo-1: exit code 0, success" in out
    assert "[local] algo-2: exit code 0" in out
    # Each host had its own tree, naming itself as current_host.
    for host in ("algo-1", "algo-2"):
        config = work / "hosts" / host / "ml" / "input" / "config" / "resourceconfig.json"
        resource = json.loads(config.read_text())
        assert resource == {
            "current_host": host,
            "hosts": ["algo-1", "algo-2"],
            "network_interface_name": "eth0",
        }
    # The master's model and output are packed as SageMaker does; the model is a real one.
    with tarfile.open(work / "artifacts" / "model.tar.gz") as tar:
        assert sorted(tar.getnames()) == ["model.npz", "model_config.json"]
        metrics = json.loads(tar.extractfile("model_config.json").read())  # type: ignore[union-attr]
    with tarfile.open(work / "artifacts" / "output.tar.gz") as tar:
        assert "success" in tar.getnames()
    assert not (work / "hosts" / "algo-2" / "ml" / "model" / "model.npz").exists()
    accuracy = json.loads(
        (work / "hosts" / "algo-1" / "ml" / "output" / "data" / "metrics.json").read_text()
    )
    assert accuracy["ranks"] == 2
    assert accuracy["test_accuracy"] >= MIN_ACCURACY, (accuracy, metrics)


def test_a_three_host_chainermn_job(assembly: Path, digits: Path, tmp_path: Path, log: Log) -> None:
    job = CloudAssembly(assembly).training_job(STACK, "Mn3")
    result = run_training(job, _channels(digits), tmp_path, log=log)
    assert result.succeeded, log.text[-4000:]
    for rank, host in enumerate(("algo-1", "algo-2", "algo-3")):
        assert f"rank {rank} of 3 (intra rank 0, inter rank {rank}) on {host}" in log.text
    assert [(o.host, o.exit_code) for o in result.hosts] == [
        ("algo-1", 0),
        ("algo-2", 0),
        ("algo-3", 0),
    ]
    assert result.hosts[0].outcome == "success"
    metrics = json.loads((result.base_dir / "output" / "data" / "metrics.json").read_text())
    assert metrics["ranks"] == 3
    assert metrics["test_accuracy"] >= MIN_ACCURACY
    assert left_behind() == []  # the namespaces went with their processes


def _probes(log: Log) -> list[dict[str, object]]:
    return sorted(
        (json.loads(line.split("probe: ", 1)[1]) for _, line in log.matching("probe: ")),
        key=lambda p: int(p["rank"]),  # type: ignore[call-overload]
    )


def test_each_host_is_its_own_machine_and_each_rank_knows_its_host(
    assembly: Path, tmp_path: Path, log: Log
) -> None:
    """Two hosts with two slots each: ranks 0-1 on algo-1, 2-3 on algo-2 (map by slot); each
    sees its own host's name, address, `train` as PID 1, its own resourceconfig.json, and the
    job's environment (as every host's container has it on SageMaker)."""
    files = tmp_path / "objects"
    keys = ["a.rec", "b.rec", "c.rec", "sub/d.rec", "sub/e.rec"]
    for key in keys:
        (files / key).parent.mkdir(parents=True, exist_ok=True)
        (files / key).write_text(key)
    job = CloudAssembly(assembly).training_job(STACK, "Probe2x2")
    channels = {"shards": files, "whole": files}
    result = run_training(
        job, channels, tmp_path / "run", log=log, hyperparameters={"mode": "report"}
    )
    assert result.succeeded, log.text[-4000:]
    probes = _probes(log)
    assert [p["rank"] for p in probes] == [0, 1, 2, 3]
    for probe in probes:
        host = "algo-1" if int(probe["rank"]) < 2 else "algo-2"  # type: ignore[call-overload]
        assert probe["hostname"] == host
        assert probe["address"] == f"10.213.0.{host[-1]}"
        assert "train" in str(probe["pid1"])
        assert probe["resourceconfig.current_host"] == host
        # What the runtime tells the rank about its host (docs/contract.md §2).
        for key in ("training_env.current_host", "SM_CURRENT_HOST", "CURRENT_HOST"):
            assert probe[key] == host, (key, probe)
        assert probe["SM_TRAINING_ENV.current_host"] == host, probe
        assert probe["PROBE_JOB_SETTING"] == "set on the job", probe
        # ShardedByS3Key: each host its share of the objects (round-robin over the sorted
        # keys); FullyReplicated: all of them.
        assert probe["channel shards"] == (keys[0::2] if host == "algo-1" else keys[1::2])
        assert probe["channel whole"] == keys
    # A script that saves on hosts[0] only saves once, on the master.
    assert (tmp_path / "run" / "hosts" / "algo-1" / "ml" / "model" / "model.txt").exists()
    assert not (tmp_path / "run" / "hosts" / "algo-2" / "ml" / "model" / "model.txt").exists()


def test_pipe_mode_feeds_one_fifo_per_epoch(assembly: Path, tmp_path: Path, log: Log) -> None:
    """A Pipe channel arrives as /opt/ml/input/data/train_0, then train_1, each carrying the
    channel's files one after the other; a FastFile channel is a directory, as in File mode.
    The host runs in its own namespaces."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.bin").write_bytes(os.urandom(300_000))
    (data / "b.bin").write_bytes(b"records\n" * 1000)
    expected = (data / "a.bin").read_bytes() + (data / "b.bin").read_bytes()
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "vocabulary.txt").write_text("a b c\n")
    job = CloudAssembly(assembly).training_job(STACK, "PipeReader")
    channels: dict[str, str | Path] = {"train": data, "extra": extra}
    result = run_training(job, channels, tmp_path / "work", log=log, hosts="namespaces")
    assert result.succeeded, log.text[-4000:]
    assert "epoch 0: 308000 bytes from /opt/ml/input/data/train_0" in log.text
    assert "epoch 1: 308000 bytes from /opt/ml/input/data/train_1" in log.text
    epochs = json.loads((result.base_dir / "model" / "epochs.json").read_text())
    import hashlib

    digest = hashlib.sha256(expected).hexdigest()
    assert epochs == [{"bytes": len(expected), "sha256": digest}] * 2
    config = json.loads((result.base_dir / "input" / "config" / "inputdataconfig.json").read_text())
    assert config["train"]["TrainingInputMode"] == "Pipe"
    assert config["extra"]["TrainingInputMode"] == "FastFile"
    assert "extra: ['vocabulary.txt']" in log.text  # FastFile: files, as File mode
    left = sorted(p.name for p in (result.base_dir / "input" / "data").iterdir())
    assert left == ["extra"]  # no FIFO left behind


def test_without_root_local_mode_says_so_and_offers_the_emulation(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from chainer_sagemaker_cdk.local import NamespacesUnavailable, TrainingJobSpec

    monkeypatch.setattr(os, "geteuid", lambda: 1000)  # as an ordinary user
    job = TrainingJobSpec("/S/Job", {}, 2, "ml.m5.xlarge", {}, code_asset=str(tmp_path))
    with pytest.raises(NamespacesUnavailable) as raised:
        run_training(job, {}, tmp_path)
    message = str(raised.value)
    assert "cannot run the job's 2 host(s) as separate hosts here" in message
    assert "need root" in message
    assert "--hosts emulated" in message
    assert "an emulation" in message


@pytest.mark.parametrize("count", [0, 251])
def test_host_counts_outside_the_subnet_are_refused(count: int, tmp_path: Path) -> None:
    from chainer_sagemaker_cdk.local import LocalModeError
    from chainer_sagemaker_cdk.local.hosts import host_layouts

    with pytest.raises(LocalModeError, match="1 to 250 hosts"):
        host_layouts(count, tmp_path)
