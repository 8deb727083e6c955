"""`make up`: the system for real on the embedded defaults until Ctrl-C.

Embedded PostgreSQL, the receiver under gunicorn on RECEIVER_BIND (default 127.0.0.1:8080), and
Airflow (scheduler, API server with the UI on AIRFLOW_PORT (default 8081), DAG processor,
triggerer) with segment_rollups live every 10 minutes.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from segment_elt.local.stack import BIN, airflow_ready, embedded_database, exit_code_of, process, receiver
from segment_elt.settings import settings


def admin_password(path: Path, api_server_runs: Callable[[], bool], timeout_s: float = 300) -> str | None:
    """The password of Airflow's `admin` once the API server has written it to `path` (at its
    first start); None when the server exits or `timeout_s` passes first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            password = json.loads(path.read_text()).get("admin")
        except (OSError, ValueError):  # not written yet, or half written
            password = None
        if password:
            return password
        if not api_server_runs():
            return None
        time.sleep(0.2)
    return None


def main() -> int:
    bind = settings().receiver_bind
    with ExitStack() as stack:
        url = stack.enter_context(embedded_database())
        env = airflow_ready(url)
        base = stack.enter_context(receiver(bind))
        procs = [
            stack.enter_context(process([str(BIN / "airflow"), *args], env, name))
            for name, args in (
                ("scheduler", ["scheduler"]),
                ("dag-processor", ["dag-processor"]),
                ("triggerer", ["triggerer"]),
                ("api-server", ["api-server", "--host", "127.0.0.1", "--port", str(settings().airflow_port)]),
            )
        ]
        passwords = Path(env["AIRFLOW_HOME"]) / "simple_auth_manager_passwords.json"
        api_server = procs[-1]
        password = admin_password(passwords, lambda: api_server.poll() is None)
        login = f"admin / {password}" if password else f"admin / see {passwords} (the API server wrote none)"
        print(f"receiver:   {base}/webhooks/segment/<connection_id>")
        print("            (create one: segment-elt connections create --org ORG)")
        print(f"Airflow UI: http://127.0.0.1:{settings().airflow_port}   login {login}")
        print(f"database:   {url}")
        print("logs:       .local/logs/   Ctrl-C stops everything", flush=True)
        stopping = []
        signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
        try:
            while not stopping:
                dead = [p for p in procs if p.poll() is not None]
                if dead:
                    print(f"an Airflow process exited ({dead[0].args[1]}); see .local/logs/", file=sys.stderr)
                    return 1
                time.sleep(1)
        except KeyboardInterrupt:
            pass
        print("stopping ...")
    return 0


if __name__ == "__main__":
    sys.exit(exit_code_of(main))
