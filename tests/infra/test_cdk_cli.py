"""The real CDK CLI (npm aws-cdk, pinned in package.json) synthesizes app.py offline."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CDK = REPO / "node_modules" / ".bin" / "cdk"


def test_cdk_synth_of_app_py(tmp_path: Path) -> None:
    assert CDK.exists(), "the npm aws-cdk CLI is installed by `make setup` (npm ci)"
    env = {
        **os.environ,
        "JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION": "1",
        "CDK_DISABLE_CLI_TELEMETRY": "true",
    }
    out = tmp_path / "cdk.out"
    result = subprocess.run(
        [str(CDK), "synth", "--no-notices", "--quiet", "-c", "nag=1", "--output", str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    # cdk.json carries the feature flags `cdk init` of this aws-cdk-lib would write.
    assert "feature flags are not configured" not in result.stdout + result.stderr
    template = json.loads((out / "ChainerDigits.template.json").read_text())
    outputs = template["Outputs"]
    assert {"StateMachineArn", "EndpointName", "ModelDataPrefix"} <= set(outputs)
    assets = json.loads((out / "ChainerDigits.assets.json").read_text())
    assert assets["dockerImages"], "the runtime image is staged as an asset, not built"
    (code,) = [f for f in assets["files"].values() if f["source"]["path"].endswith(".tgz")]
    assert (out / code["source"]["path"]).is_file()
    shutil.rmtree(out)
