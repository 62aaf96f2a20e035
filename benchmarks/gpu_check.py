"""GPU check of the runtime (run on a machine with an NVIDIA GPU, CuPy and NumPy 2):

1. the digits example through `train` on the GPU (SM_NUM_GPUS from nvidia-smi) and on the CPU;
2. the ChainerMN example through `train` with MPI and the `pure_nccl` communicator;
3. `serve` with a model_fn that puts the model on the GPU: NPY predictions equal the CPU's.

    python benchmarks/gpu_check.py [--epochs 10]

Prints one line per check and a JSON summary; exits non-zero if a check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "digits"
BIN = Path(sys.executable).parent
sys.path.insert(0, str(EXAMPLE))


def _command(name: str) -> str:
    beside = BIN / name
    return str(beside) if beside.exists() else str(shutil.which(name))


def _job(base: Path, hps: dict[str, object], channels: dict[str, Path]) -> Path:
    cfg = base / "input" / "config"
    cfg.mkdir(parents=True)
    (cfg / "hyperparameters.json").write_text(
        json.dumps({k: json.dumps(v) for k, v in hps.items()})
    )
    (cfg / "resourceconfig.json").write_text(
        json.dumps({"current_host": "algo-1", "hosts": ["algo-1"]})
    )
    (cfg / "inputdataconfig.json").write_text(json.dumps({n: {} for n in channels}))
    (base / "input" / "data").mkdir()
    for name, path in channels.items():
        (base / "input" / "data" / name).symlink_to(path)
    return base


def _train(base: Path) -> tuple[int, float, str]:
    started = time.monotonic()
    out = subprocess.run(
        [_command("train")],
        env={**os.environ, "SAGEMAKER_BASE_DIR": str(base)},
        capture_output=True,
        text=True,
        check=False,
    )
    return out.returncode, time.monotonic() - started, out.stdout + out.stderr[-3000:]


def _accuracy(base: Path) -> float:
    return float(
        json.loads((base / "output" / "data" / "metrics.json").read_text())["test_accuracy"]
    )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")))
    args = parser.parse_args()
    from prepare_data import write_channels

    summary: dict[str, object] = {}
    import chainer
    import cupy

    summary["versions"] = {
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "cupy": cupy.__version__,
        "chainer": chainer.__version__,
        "cuda_available": bool(chainer.backends.cuda.available),
    }
    print("versions", summary["versions"], flush=True)
    tmp = Path(tempfile.mkdtemp())
    channels = write_channels(tmp / "data")
    ok = True

    runs = {}
    for label, extra in (("gpu", {}), ("cpu", {"num-gpus": 0})):
        base = _job(
            tmp / label,
            {"sagemaker_program": "train.py", "sagemaker_submit_directory": str(EXAMPLE),
             "epochs": args.epochs, **extra},
            channels,
        )  # fmt: skip
        code, seconds, log = _train(base)
        runs[label] = {"exit": code, "seconds": round(seconds, 2)}
        if code == 0:
            runs[label]["accuracy"] = _accuracy(base)
        else:
            ok = False
            print(log)
        print(label, runs[label], flush=True)
    summary["train"] = runs

    base = _job(
        tmp / "mn",
        {"sagemaker_program": "train_mn.py", "sagemaker_submit_directory": str(EXAMPLE),
         "epochs": 3, "sagemaker_use_mpi": True},
        channels,
    )  # fmt: skip
    if shutil.which("mpirun"):
        code, seconds, log = _train(base)
        mn: dict[str, object] = {"via": "train + mpirun"}
    else:  # no Open MPI here: one rank as an MPI singleton, still through mpi4py
        started = time.monotonic()
        direct = subprocess.run(
            [sys.executable, "-m", "mpi4py", str(EXAMPLE / "train_mn.py"), "--num-gpus", "1",
             "--epochs", "3", "--train", str(channels["train"]), "--test", str(channels["test"]),
             "--model-dir", str(base / "model"),
             "--output-data-dir", str(base / "output" / "data")],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        (base / "output" / "data").mkdir(parents=True, exist_ok=True)
        code, seconds, log = (
            direct.returncode,
            time.monotonic() - started,
            direct.stdout + direct.stderr,
        )
        mn = {"via": "python -m mpi4py (no mpirun on this machine)"}
    mn.update({"exit": code, "seconds": round(seconds, 2)})
    mn["pure_nccl"] = "pure_nccl communicator" in log
    if code == 0:
        mn["accuracy"] = _accuracy(base)
    else:
        ok = False
        print(log[-4000:])
    print("chainermn", mn, flush=True)
    summary["chainermn"] = mn

    # serve with the model on the GPU
    code_dir = tmp / "gpu_code"
    code_dir.mkdir()
    shutil.copy(EXAMPLE / "train.py", code_dir / "train.py")
    (code_dir / "serve_gpu.py").write_text(
        "from train import model_fn as _cpu_model_fn\n"
        "def model_fn(model_dir):\n"
        "    model = _cpu_model_fn(model_dir)\n"
        "    model.to_device('@cupy:0')\n"
        "    return model\n"
    )
    serve_base = tmp / "serve"
    shutil.copytree(tmp / "gpu" / "model", serve_base / "model")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        **os.environ,
        "SAGEMAKER_BASE_DIR": str(serve_base),
        "SAGEMAKER_PROGRAM": "serve_gpu.py",
        "SAGEMAKER_SUBMIT_DIRECTORY": str(code_dir),
        "SAGEMAKER_BIND_TO_PORT": str(port),
        "SAGEMAKER_MODEL_SERVER_WORKERS": "1",
    }
    server = subprocess.Popen([_command("serve")], env=env)
    serve_result: dict[str, object] = {}
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.2)
        test = np.load(channels["test"] / "test.npz")
        x = test["x"].astype(np.float32) / 255.0
        import io

        buf = io.BytesIO()
        np.save(buf, x)
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations",
            data=buf.getvalue(),
            headers={"Content-Type": "application/x-npy", "Accept": "application/x-npy"},
        )
        with urllib.request.urlopen(req, timeout=60) as r:
            served = np.load(io.BytesIO(r.read()))
        from train import model_fn

        with chainer.using_config("train", False), chainer.no_backprop_mode():
            local = model_fn(str(tmp / "gpu" / "model"))(x).array
        diff = float(np.abs(served - local).max())
        serve_result = {
            "shape": list(served.shape),
            "dtype": str(served.dtype),
            "max_abs_diff_vs_cpu": diff,
            "accuracy": float((served.argmax(1) == test["y"]).mean()),
        }
        if diff > 1e-3:
            ok = False
    except Exception as exc:  # report, don't hide
        serve_result = {"error": repr(exc)}
        ok = False
    finally:
        server.terminate()
        server.wait(timeout=30)
    print("serve", serve_result, flush=True)
    summary["serve_gpu"] = serve_result
    summary["ok"] = ok
    text = json.dumps(summary, indent=2)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_check.json").write_text(text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
