"""`segment-elt connections reconcile`: re-resolve a connection's stored events (CONTRACT section 6).

When Airflow's API server answers (AIRFLOW_API_URL, default the one `make up` runs), this
triggers the segment_reconcile DAG there, so it queues behind other dbt runs; otherwise it runs
the same reconcile build in this process.
"""

from __future__ import annotations

import json
import os

import requests

from segment_elt.airflow_env import API_PORT
from segment_elt.config import local_dir


def api_url() -> str:
    return os.environ.get("AIRFLOW_API_URL", f"http://127.0.0.1:{API_PORT}").rstrip("/")


def _credentials() -> tuple[str, str] | None:
    user, password = os.environ.get("AIRFLOW_USERNAME"), os.environ.get("AIRFLOW_PASSWORD")
    if user and password:
        return user, password
    generated = local_dir() / "airflow" / "simple_auth_manager_passwords.json"
    if generated.exists():
        return next(iter(json.loads(generated.read_text()).items()))
    return None


def trigger(connection_id: str) -> str | None:
    """Trigger segment_reconcile through Airflow's REST API; None when no API server answers."""
    base, credentials = api_url(), _credentials()
    try:
        if credentials is None:
            return None
        token = requests.post(f"{base}/auth/token", json={"username": credentials[0], "password": credentials[1]},
                              timeout=5)
    except requests.RequestException:
        return None
    token.raise_for_status()
    answer = requests.post(
        f"{base}/api/v2/dags/segment_reconcile/dagRuns",
        headers={"Authorization": f"Bearer {token.json()['access_token']}"},
        json={"logical_date": None, "conf": {"connection_id": connection_id}},
        timeout=10,
    )
    answer.raise_for_status()
    return answer.json()["dag_run_id"]


def run_here(connection_id: str) -> None:
    """The reconcile build without Airflow."""
    from segment_elt.transform import run_dbt

    run_dbt(["build", "--vars", json.dumps({"reconcile_connection_id": connection_id})])
