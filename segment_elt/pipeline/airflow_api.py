"""Triggering a DAG through Airflow's public REST API (`POST /api/v2/dags/{dag_id}/dagRuns`), as a
signed-in user: the CLI's reconcile and the Segment page's actions."""

from __future__ import annotations

import requests

from segment_elt.errors import UserError


def trigger_as(base: str, token: str, dag_id: str, conf: dict) -> str:
    """Trigger `dag_id` with `conf` through the REST API at `base` as the user of `token`; its run
    id. Raises UserError, in one line, when Airflow refuses."""
    answer = requests.post(
        f"{base}/api/v2/dags/{dag_id}/dagRuns",
        headers={"Authorization": f"Bearer {token}"},
        json={"logical_date": None, "conf": conf},
        timeout=10,
    )
    require_ok(answer, f"trigger {dag_id}", base)
    return answer.json()["dag_run_id"]


def require_ok(answer: requests.Response, doing: str, base: str) -> None:
    if not answer.ok:
        said = " ".join(answer.text.split())[:200]
        raise UserError(f"Airflow at {base} did not {doing} (HTTP {answer.status_code}): {said}")
