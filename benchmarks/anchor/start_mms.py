"""Start the second anchor: ``sagemaker_inference.model_server.start_model_server``.

Runs inside the MMS virtualenv. The only changes to the toolkit are where it writes its
configuration (``/etc/sagemaker-mms.properties`` moves into ``$ANCHOR_RUN_DIR``) and the listen
address (127.0.0.1 instead of 0.0.0.0). Port, workers and timeout come from the usual
``SAGEMAKER_*`` variables; the model and the user module come from ``$SAGEMAKER_BASE_DIR/model``
(with ``code/`` inside it, as this toolkit expects). multi-model-server keeps its Unix sockets and
pid file under ``/tmp`` at fixed names, so only one of these runs at a time.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from sagemaker_inference import model_server

run_dir = Path(os.environ["ANCHOR_RUN_DIR"])
model_server.MMS_CONFIG_FILE = str(run_dir / "mms.properties")
_generate = model_server._generate_mms_config_properties


def _loopback(env, handler_service=None):
    return _generate(env, handler_service).replace("http://0.0.0.0:", "http://127.0.0.1:")


model_server._generate_mms_config_properties = _loopback
here = str(Path(__file__).resolve().parent)
sys.path.insert(0, here)
os.environ["PYTHONPATH"] = here + os.pathsep + os.environ.get("PYTHONPATH", "")
os.chdir(run_dir)  # its logs/ directory
model_server.start_model_server(handler_service="mms_handler")
