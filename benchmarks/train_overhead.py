"""Launch overhead of `train`: median wall time of `train` running a script that exits at its
first line, minus the same script run directly with `python`, over N runs (interleaved).

    .venv/bin/python benchmarks/train_overhead.py [--runs 20]

Target (issue 2): under 0.25 s.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def _time(argv: list[str], env: dict[str, str], cwd: Path) -> float:
    started = time.perf_counter()
    subprocess.run(
        argv, env=env, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "ml"
        code = base / "code"
        cfg = base / "input" / "config"
        code.mkdir(parents=True)
        cfg.mkdir(parents=True)
        (code / "noop.py").write_text("raise SystemExit(0)\n")
        hps = {"sagemaker_program": json.dumps("noop.py"), "epochs": "1"}
        (cfg / "hyperparameters.json").write_text(json.dumps(hps))
        env = {**os.environ, "SAGEMAKER_BASE_DIR": str(base)}
        direct_argv = [sys.executable, "noop.py", "--epochs", "1"]
        train_argv = [str(BIN / "train")]
        _time(train_argv, env, code)  # warm the page cache
        direct, through = [], []
        for _ in range(args.runs):
            direct.append(_time(direct_argv, env, code))
            through.append(_time(train_argv, env, code))
    d, t = statistics.median(direct), statistics.median(through)
    print(f"runs: {args.runs}")
    print(f"python noop.py        median {d * 1000:7.1f} ms")
    print(f"train (runs noop.py)  median {t * 1000:7.1f} ms")
    print(f"launch overhead       median {(t - d) * 1000:7.1f} ms  (target < 250 ms)")


if __name__ == "__main__":
    main()
