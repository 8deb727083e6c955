"""`segment-elt connections reconcile`: re-resolve a connection's stored events (docs/cli.md#connections-reconcile).

When Airflow's API server answers (AIRFLOW_API_URL, default the one `make up` runs), this
triggers the segment_reconcile DAG there, so it queues behind other dbt runs; otherwise it runs
the same reconcile build in this process.
"""

from __future__ import annotations

import json

import requests

from segment_elt.dag_ids import RECONCILE
from segment_elt.errors import UserError
from segment_elt.pipeline import airflow_api
from segment_elt.settings import settings


def api_url() -> str:
    return settings().airflow_api_url


def _credentials() -> tuple[str, str] | None:
    current = settings()
    if current.airflow_username and current.airflow_password:
        return current.airflow_username, current.airflow_password
    generated = current.local_dir / "airflow" / "simple_auth_manager_passwords.json"
    if generated.exists():
        return next(iter(json.loads(generated.read_text()).items()))
    return None


def trigger(connection_id: str) -> str | None:
    """Trigger segment_reconcile through Airflow's REST API; None when no API server answers."""
    base, credentials = api_url(), _credentials()
    try:
        if credentials is None:
            return None
        token = requests.post(
            f"{base}/auth/token", json={"username": credentials[0], "password": credentials[1]}, timeout=5
        )
    except requests.RequestException:
        return None
    if token.status_code in (401, 403):
        raise UserError(
            f"Airflow at {base} refused the credentials of user {credentials[0]!r} "
            f"(HTTP {token.status_code}): check AIRFLOW_USERNAME and AIRFLOW_PASSWORD"
        )
    airflow_api.require_ok(token, "log in", base)
    return trigger_as(base, token.json()["access_token"], connection_id)


def trigger_as(base: str, token: str, connection_id: str) -> str:
    """Trigger segment_reconcile through the REST API at `base` as the user of `token`; its run id."""
    return airflow_api.trigger_as(base, token, RECONCILE, {"connection_id": connection_id})


def run_here(connection_id: str) -> None:
    """The reconcile build without Airflow, once no Airflow run or other process writes the models."""
    from segment_elt.pipeline.runs import WriterBusy
    from segment_elt.pipeline.transform import run_dbt

    try:
        run_dbt(["build", "--vars", json.dumps({"reconcile_connection_id": connection_id})])
    except WriterBusy as exc:
        raise UserError(str(exc)) from None
