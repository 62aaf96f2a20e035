"""The main job (`make demo`): train the digits example through the runtime's `train` command.

Prepares the digits channels, lays out a fresh SageMaker tree under demo-out/, runs `train`
exactly as SageMaker would start it, and reports the test accuracy and where the artifacts are.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "demo-out"
sys.path.insert(0, str(REPO / "examples" / "digits"))

from prepare_data import write_channels  # noqa: E402


def main() -> int:
    started = time.monotonic()
    shutil.rmtree(OUT, ignore_errors=True)
    base = OUT / "ml"
    print("[demo] preparing the digits channels", flush=True)
    channels = write_channels(OUT / "data")
    cfg = base / "input" / "config"
    cfg.mkdir(parents=True)
    hps = {
        "sagemaker_program": "train.py",
        "sagemaker_submit_directory": str(REPO / "examples" / "digits"),
        "epochs": 10,
    }
    (cfg / "hyperparameters.json").write_text(
        json.dumps({k: json.dumps(v) for k, v in hps.items()})
    )
    (cfg / "resourceconfig.json").write_text(
        json.dumps({"current_host": "algo-1", "hosts": ["algo-1"]})
    )
    (cfg / "inputdataconfig.json").write_text(json.dumps({name: {} for name in channels}))
    for name, path in channels.items():
        (base / "input" / "data").mkdir(parents=True, exist_ok=True)
        (base / "input" / "data" / name).symlink_to(path)
    print("[demo] running `train`", flush=True)
    env = {**os.environ, "SAGEMAKER_BASE_DIR": str(base)}
    code = subprocess.run(
        [str(Path(sys.executable).parent / "train")], env=env, check=False
    ).returncode
    if code != 0:
        print(
            f"[demo] training failed: {(base / 'output' / 'failure').read_text()}", file=sys.stderr
        )
        return code
    metrics = json.loads((base / "output" / "data" / "metrics.json").read_text())
    print(f"[demo] test accuracy {metrics['test_accuracy']:.4f}")
    print(f"[demo] model: {base / 'model'}; outcome: {base / 'output' / 'success'}")
    print(f"[demo] finished in {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
