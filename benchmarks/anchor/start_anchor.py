"""Start the anchor: ``sagemaker_containers``' own ``server.start`` (nginx -> gunicorn/gevent).

Runs inside the anchor virtualenv. The only change to the library is where it keeps its files:
its nginx template hard-codes ``/tmp/gunicorn.sock`` and ``/tmp/nginx.pid`` and it writes
``/etc/sagemaker-nginx.conf``; those move into ``$ANCHOR_RUN_DIR`` so that the benchmark never
collides with anything else on the machine. Port, workers and timeout come from the usual
``SAGEMAKER_*`` variables.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from sagemaker_containers import _server

run_dir = Path(os.environ["ANCHOR_RUN_DIR"])
sock = run_dir / "gunicorn.sock"
template = Path(_server.nginx_config_template_file).read_text()
template = template.replace("/tmp/gunicorn.sock", str(sock)).replace(
    "/tmp/nginx.pid", str(run_dir / "nginx.pid")
)
# nginx's temp paths default to /var/lib/nginx; keep them private too
temp_paths = (
    f"  client_body_temp_path {run_dir / 'client_body'};\n  proxy_temp_path {run_dir / 'proxy'};"
)
template = template.replace("http {", "http {\n" + temp_paths, 1)
(run_dir / "nginx.conf.template").write_text(template)
_server.nginx_config_template_file = str(run_dir / "nginx.conf.template")
_server.nginx_config_file = str(run_dir / "nginx.conf")
_server.UNIX_SOCKET_BIND = f"unix:{sock}"
sys.path.insert(0, str(Path(__file__).resolve().parent))
_server.start("anchor_serving:main")
