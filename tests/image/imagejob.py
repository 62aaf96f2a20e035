"""One SageMaker training host's /opt/ml tree on this machine, for a container to mount."""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def job_tree(
    base: Path,
    *,
    program: str,
    code: Path | str,
    hyperparameters: Mapping[str, Any] | None = None,
    hosts: tuple[str, ...] = ("algo-1",),
    current_host: str = "algo-1",
    channels: tuple[str, ...] = (),
) -> Path:
    """Write ``base`` as SageMaker writes /opt/ml: the config files (hyperparameters encoded
    like the SDK, code at /opt/ml/code), empty model and output dirs. ``code`` is a file or
    directory copied into the code dir, or the script's text."""
    cfg = base / "input" / "config"
    cfg.mkdir(parents=True)
    hps = {k: json.dumps(v) for k, v in (hyperparameters or {}).items()}
    hps["sagemaker_program"] = json.dumps(program)
    hps["sagemaker_submit_directory"] = json.dumps("/opt/ml/code")
    (cfg / "hyperparameters.json").write_text(json.dumps(hps))
    (cfg / "resourceconfig.json").write_text(
        json.dumps(
            {"current_host": current_host, "hosts": list(hosts), "network_interface_name": "eth0"}
        )
    )
    data = {
        c: {"TrainingInputMode": "File", "S3DistributionType": "FullyReplicated"} for c in channels
    }
    (cfg / "inputdataconfig.json").write_text(json.dumps(data))
    code_dir = base / "code"
    code_dir.mkdir()
    if isinstance(code, Path) and code.is_dir():
        shutil.copytree(code, code_dir, dirs_exist_ok=True)
    elif isinstance(code, Path):
        shutil.copy(code, code_dir / program)
    else:
        (code_dir / program).write_text(code)
    for sub in ("model", "output/data", "input/data"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    return base


def mounts(base: Path, channels: Mapping[str, Path]) -> list[str]:
    """``-v`` arguments: the tree at /opt/ml, each channel read-only at its data dir."""
    args = ["-v", f"{base}:/opt/ml"]
    for name, path in channels.items():
        args += ["-v", f"{path}:/opt/ml/input/data/{name}:ro"]
    return args
