"""Telling someone a run failed, is late, or its data is stale: a JSON POST to
SEGMENT_ELT_ALERT_WEBHOOK_URL and/or an email through SEGMENT_ELT_ALERT_SMTP_URL.

The webhook body carries `text` (what Slack and Microsoft Teams incoming webhooks show) and the
run's fields for anything else that reads JSON; the email's subject is the same text. Sending
is best effort: a channel that is down is logged, and never changes the run's outcome or record.
"""

from __future__ import annotations

import logging
import smtplib
import socket
from email.message import EmailMessage
from urllib.parse import unquote, urlsplit

import requests

from segment_elt.settings import settings

log = logging.getLogger(__name__)
TIMEOUT_S = 10


def notify(dag_id: str, run_id: str, status: str, reason: str) -> bool:
    """Send a run's `status` (failed, late, stale) to every configured channel; True when each
    accepted it, False when one did not or none is configured."""
    current = settings()
    text = f"segment-elt: {dag_id} run {run_id} {status}: {reason or 'see the task logs'}"
    body = {"text": text, "dag_id": dag_id, "run_id": run_id, "status": status, "reason": reason}
    sent = []
    if current.alert_webhook_url:
        sent.append(_post(current.alert_webhook_url, body))
    if current.alert_smtp_url and current.alert_email_to:
        sent.append(_email(current.alert_smtp_url, current.alert_email_from, current.alert_email_to, body))
    return bool(sent) and all(sent)


def _post(url: str, body: dict) -> bool:
    try:
        answer = requests.post(url, json=body, timeout=TIMEOUT_S)
    except requests.RequestException as exc:
        log.warning("could not send the %s alert to %s: %s", body["status"], url.split("?")[0], exc)
        return False
    if not answer.ok:
        log.warning("the alert webhook answered %s to the %s alert", answer.status_code, body["status"])
    return answer.ok


def _email(smtp_url: str, sender: str | None, recipients: str, body: dict) -> bool:
    """smtp://[user:password@]host[:port] (STARTTLS when the server offers it) or smtps:// (TLS)."""
    parts = urlsplit(smtp_url)
    host = parts.hostname or ""  # SEGMENT_ELT_ALERT_SMTP_URL's pattern requires one
    message = EmailMessage()
    message["Subject"] = body["text"][:200]
    message["From"] = sender or f"segment-elt@{socket.getfqdn()}"
    message["To"] = recipients
    message.set_content("\n".join([body["text"], "", *(f"{k}: {v}" for k, v in body.items() if k != "text")]))
    client = smtplib.SMTP_SSL if parts.scheme == "smtps" else smtplib.SMTP
    try:
        with client(host, parts.port or (465 if parts.scheme == "smtps" else 25), timeout=TIMEOUT_S) as smtp:
            if parts.scheme == "smtp" and smtp.has_extn("starttls"):
                smtp.starttls()
            if parts.username:
                smtp.login(unquote(parts.username), unquote(parts.password or ""))
            smtp.send_message(message)
    except (OSError, smtplib.SMTPException) as exc:
        log.warning("could not email the %s alert through %s:%s: %s", body["status"], parts.hostname, parts.port, exc)
        return False
    return True
