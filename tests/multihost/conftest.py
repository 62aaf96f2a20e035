"""Fixtures for multi-host local runs: one synthesized app holding every job the tests run, the
digits channels, a timestamped log."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hosttools import STACK, Log

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "digits"
SCRIPTS = Path(__file__).resolve().parent / "scripts"
os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")


@pytest.fixture(scope="session")
def assembly(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``cdk.out`` of one stack with every estimator the tests run (synthesized once)."""
    from aws_cdk import App, Stack
    from aws_cdk import aws_s3 as s3

    from chainer_sagemaker_cdk import (
        ChainerEstimator,
        DataDistribution,
        InputMode,
        SourceCode,
        TrainingInput,
    )

    out = tmp_path_factory.mktemp("multihost") / "cdk.out"
    app = App(outdir=str(out))
    stack = Stack(app, STACK)
    mn = SourceCode.from_directory(EXAMPLE, "train_mn.py")
    probe = SourceCode.from_directory(SCRIPTS, "probe.py")
    for count in (2, 3):
        ChainerEstimator(
            stack,
            f"Mn{count}",
            code=mn,
            instance_count=count,
            hyperparameters={"epochs": 2},
        )
        ChainerEstimator(stack, f"Probe{count}", code=probe, instance_count=count)
    bucket = s3.Bucket(stack, "Data")
    ChainerEstimator(
        stack,
        "Probe2x2",
        code=probe,
        instance_count=2,
        process_slots_per_host=2,
        environment={"PROBE_JOB_SETTING": "set on the job"},
        channels={
            "shards": TrainingInput(bucket=bucket, distribution=DataDistribution.SHARDED_BY_S3_KEY),
            "whole": TrainingInput(bucket=bucket),
        },
    )
    ChainerEstimator(
        stack,
        "PipeReader",
        code=SourceCode.from_directory(SCRIPTS, "read_pipe.py"),
        channels={
            "train": TrainingInput(bucket=bucket, input_mode=InputMode.PIPE),
            "extra": TrainingInput(bucket=bucket, input_mode=InputMode.FAST_FILE),
        },
    )
    app.synth()
    return out


@pytest.fixture(scope="session")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("digits")
    subprocess.run(
        [sys.executable, str(EXAMPLE / "prepare_data.py"), str(out)],
        check=True,
        capture_output=True,
    )
    return out


@pytest.fixture
def log() -> Log:
    return Log()
