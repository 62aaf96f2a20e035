"""The main job (`make demo`): synthesize app.py, then train, serve and predict on this machine.

1. `cdk synth` of the example app with the CDK CLI from npm (offline; no AWS account);
2. the digits channels (scikit-learn's bundled data, shaped like MNIST);
3. local mode runs the synthesized training job with the container runtime's `train`;
4. local mode serves the trained model with `serve` and the client's Predictor sends the
   test images, one request per image and then all in one batch;
5. prints accuracy, latency and where the template and artifacts are.
"""

from __future__ import annotations

import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "demo-out"
STACK = "ChainerDigits"
os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")


def say(message: str) -> None:
    print(f"[demo] {message}", flush=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def synth(cdk_out: Path) -> None:
    say("1/5 synthesizing app.py with the AWS CDK CLI")
    cdk = REPO / "node_modules" / ".bin" / "cdk"
    subprocess.run(
        [str(cdk), "synth", "--quiet", "--no-notices", "--output", str(cdk_out)],
        cwd=REPO,
        check=True,
    )


def main() -> int:
    import numpy as np

    from chainer_sagemaker_cdk.client import Predictor
    from chainer_sagemaker_cdk.local import CloudAssembly, LocalEndpoint, run_training

    sys.path.insert(0, str(REPO / "examples" / "digits"))
    from prepare_data import write_channels

    started = time.monotonic()
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir()
    cdk_out = OUT / "cdk.out"
    synth(cdk_out)
    say("2/5 writing the digits channels")
    channels = write_channels(OUT / "data")

    assembly = CloudAssembly(cdk_out)
    job = assembly.training_job(STACK)
    say(f"3/5 training {job.path} locally ({job.instance_count} x {job.instance_type})")
    result = run_training(job, channels, OUT / "run", job_name="chainer-digits-local")
    if not result.succeeded:
        say(f"training failed: {result.failure_reason}")
        return result.exit_code or 1

    model = assembly.models(STACK)[0]
    test = np.load(channels["test"] / "test.npz")
    x, y = test["x"].astype(np.float32) / 255.0, test["y"]
    port = _free_port()
    say(f"4/5 serving {model.path} locally on port {port}")
    with (
        LocalEndpoint(
            result.model_artifact,
            OUT / "run",
            environment=model.environment,
            code=model.code_asset,
            port=port,
        ) as endpoint,
        Predictor.local(endpoint.url) as predictor,
    ):
        say(f"5/5 predicting {len(x)} test images at {endpoint.url}")
        latencies, predicted = [], []
        for row in x:
            t0 = time.perf_counter()
            predicted.append(int(predictor.predict(row[None, :]).argmax(axis=1)[0]))
            latencies.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        batch = predictor.predict(x).argmax(axis=1)
        batch_ms = (time.perf_counter() - t0) * 1000
    accuracy = float((np.array(predicted) == y).mean())
    assert (batch == np.array(predicted)).all(), "batch and single predictions disagree"
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99) - 1]
    template = cdk_out / f"{STACK}.template.json"
    say("done")
    print(
        f"""
  test accuracy        {accuracy:.4f} on {len(x)} held-out digits
  latency (1 image)    p50 {statistics.median(latencies):.2f} ms, p99 {p99:.2f} ms (NPY over HTTP)
  batch of {len(x):<4}        {batch_ms:.1f} ms
  template             {template}
  model artifact       {result.model_artifact}
  output artifact      {result.output_artifact}
  training             {result.seconds:.1f} s; whole demo {time.monotonic() - started:.1f} s
""",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
