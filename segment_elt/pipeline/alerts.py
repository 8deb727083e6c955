"""Telling someone a run failed or its data is stale: a JSON POST to SEGMENT_ELT_ALERT_WEBHOOK_URL.

The body carries `text` (what Slack and Microsoft Teams incoming webhooks show) and the run's
fields for anything else that reads JSON. Sending is best effort: a webhook that is down is
logged, and never changes the run's outcome or record.
"""

from __future__ import annotations

import logging

import requests

from segment_elt.settings import settings

log = logging.getLogger(__name__)
TIMEOUT_S = 10


def notify(dag_id: str, run_id: str, status: str, reason: str) -> bool:
    """POST a run's `status` (failed, stale) to the webhook; True when it answered 2xx, False
    otherwise or when no webhook is configured."""
    url = settings().alert_webhook_url
    if not url:
        return False
    body = {"text": f"segment-elt: {dag_id} run {run_id} {status}: {reason or 'see the task logs'}",
            "dag_id": dag_id, "run_id": run_id, "status": status, "reason": reason}
    try:
        answer = requests.post(url, json=body, timeout=TIMEOUT_S)
    except requests.RequestException as exc:
        log.warning("could not send the %s alert to %s: %s", status, url.split("?")[0], exc)
        return False
    if not answer.ok:
        log.warning("the alert webhook answered %s to the %s alert", answer.status_code, status)
    return answer.ok
