"""Helpers for runtime tests: a SageMaker tree per job and the real `train` command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "digits"
BIN = Path(sys.executable).parent


def encode_hyperparameters(hps: Mapping[str, Any]) -> dict[str, str]:
    """What the SageMaker SDK writes: every value JSON-encoded."""
    return {k: json.dumps(v) for k, v in hps.items()}


@dataclass
class JobTree:
    """One job's /opt/ml tree (SAGEMAKER_BASE_DIR)."""

    base: Path

    @property
    def output(self) -> Path:
        return self.base / "output"

    @property
    def model(self) -> Path:
        return self.base / "model"

    def configure(
        self,
        hyperparameters: Mapping[str, Any],
        *,
        hosts: list[str] | None = None,
        current_host: str | None = None,
        channels: Mapping[str, Path] | None = None,
    ) -> JobTree:
        cfg = self.base / "input" / "config"
        cfg.mkdir(parents=True, exist_ok=True)
        hosts = hosts or ["algo-1"]
        (cfg / "hyperparameters.json").write_text(
            json.dumps(encode_hyperparameters(hyperparameters))
        )
        (cfg / "resourceconfig.json").write_text(
            json.dumps(
                {
                    "current_host": current_host or hosts[0],
                    "hosts": hosts,
                    "network_interface_name": "eth0",
                }
            )
        )
        data_cfg = {}
        for name, src in (channels or {}).items():
            dst = self.base / "input" / "data" / name
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.symlink_to(src, target_is_directory=True)
            data_cfg[name] = {
                "TrainingInputMode": "File",
                "S3DistributionType": "FullyReplicated",
                "RecordWrapperType": "None",
            }
        (cfg / "inputdataconfig.json").write_text(json.dumps(data_cfg))
        return self

    def env(self, **extra: str) -> dict[str, str]:
        environ = dict(os.environ)
        environ["SAGEMAKER_BASE_DIR"] = str(self.base)
        environ.pop("SM_TRAINING_ENV", None)
        environ.update(extra)
        return environ

    def train(self, timeout: float = 300, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "train")],
            env=self.env(**extra),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def failure(self) -> str:
        return (self.output / "failure").read_text()
