"""A failed, late or stale run tells someone: the DAGs POST to SEGMENT_ELT_ALERT_WEBHOOK_URL and
email through SEGMENT_ELT_ALERT_SMTP_URL (here stand-ins on loopback), and a channel that is down
changes nothing about the run."""

from __future__ import annotations

import email
import email.policy
import http.server
import json
import socketserver
import threading

from segment_elt.local.embedded import free_port
from segment_elt.pipeline import alerts
from tests.dags.test_dag_runs import NOW, land, total_events, tracks


class Webhook(http.server.ThreadingHTTPServer):
    """Keeps the JSON bodies posted to it and answers 200, as a Slack incoming webhook does."""

    def __init__(self):
        self.received: list[dict] = []
        super().__init__(("127.0.0.1", free_port()), _Keep)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hooks/segment-elt"


class _Keep(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.server.received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args) -> None:
        pass


def test_a_failed_rollups_run_posts_an_alert(dags, db, acme, monkeypatch):
    webhook = Webhook()
    threading.Thread(target=webhook.serve_forever, daemon=True).start()
    monkeypatch.setenv("SEGMENT_ELT_ALERT_WEBHOOK_URL", webhook.url)
    land(db, acme, tracks(2), NOW)
    db.execute("alter table control.allowlist rename to allowlist_moved")  # the dbt build fails
    try:
        result = dags["segment_rollups"].test()
    finally:
        webhook.shutdown()
    assert result.state == "failed"
    (alert,) = webhook.received
    assert alert["dag_id"] == "segment_rollups" and alert["run_id"] == result.run_id and alert["status"] == "failed"
    assert alert["text"].startswith(f"segment-elt: segment_rollups run {result.run_id} failed")
    assert db.execute("select status from control.pipeline_runs").fetchone()[0] == "failed"


def test_an_unreachable_webhook_is_logged_not_raised(monkeypatch, caplog):
    monkeypatch.setenv("SEGMENT_ELT_ALERT_WEBHOOK_URL", f"http://127.0.0.1:{free_port()}/down")
    assert alerts.notify("segment_rollups", "manual__x", "failed", "boom") is False
    assert "could not send the failed alert" in caplog.text
    monkeypatch.delenv("SEGMENT_ELT_ALERT_WEBHOOK_URL")
    assert alerts.notify("segment_rollups", "manual__x", "failed", "boom") is False


def test_a_late_run_on_stale_data_says_both_and_fails_after_building(dags, db, acme, monkeypatch):
    webhook = Webhook()
    threading.Thread(target=webhook.serve_forever, daemon=True).start()
    monkeypatch.setenv("SEGMENT_ELT_ALERT_WEBHOOK_URL", webhook.url)
    land(db, acme, tracks(2), NOW)
    db.execute("update raw.segment_events set loaded_at = now() - interval '7 hours'")  # nothing since
    db.execute(
        "insert into control.pipeline_runs (dag_id, run_id, run_type, started_at, finished_at, status,"
        " high_water) values ('segment_rollups', 'scheduled__before', 'scheduled', now() - interval '46 min',"
        " now() - interval '45 min', 'success', now() - interval '1 day')"
    )
    try:
        result = dags["segment_rollups"].test()
    finally:
        webhook.shutdown()
    assert result.state == "failed"
    *early, failed = webhook.received  # the late and stale alerts come from tasks that run side by side
    late, stale = sorted(early, key=lambda alert: alert["status"])
    assert (late["status"], stale["status"], failed["status"]) == ("late", "stale", "failed")
    assert late["reason"].startswith("no successful segment_rollups run for 45 min (last success finished ")
    assert "SEGMENT_ELT_ROLLUPS_LATE_MINUTES=30); this run catches up" in late["reason"]
    assert stale["reason"].startswith("raw.segment_events: newest row landed 7.")
    assert "SEGMENT_ELT_RAW_STALE_HOURS=6" in stale["text"]
    # what had landed is built and recorded: staleness fails the run, not the build
    assert total_events(db) == 2
    assert db.execute("select status from control.pipeline_runs where run_id = %s", (result.run_id,)).fetchone() == (
        "success",
    )


class Mailbox(socketserver.ThreadingTCPServer):
    """An SMTP server that keeps each message's envelope and text (no TLS, no auth), as a relay would."""

    daemon_threads = True

    def __init__(self):
        self.messages: list[dict] = []
        super().__init__(("127.0.0.1", free_port()), _Smtp)


class _Smtp(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        envelope = {"to": []}
        self.wfile.write(b"220 stand-in ESMTP\r\n")
        while line := self.rfile.readline().decode():
            verb = line[:4].upper()
            if verb == "EHLO":
                self.wfile.write(b"250-stand-in\r\n250 SIZE 1000000\r\n")
            elif verb == "MAIL":
                envelope["from"] = line.split(":", 1)[1].split()[0]  # without ESMTP parameters (SIZE=)
                self.wfile.write(b"250 ok\r\n")
            elif verb == "RCPT":
                envelope["to"].append(line.split(":", 1)[1].strip())
                self.wfile.write(b"250 ok\r\n")
            elif verb == "DATA":
                self.wfile.write(b"354 go on\r\n")
                data = b"".join(iter(lambda: self.rfile.readline(), b".\r\n"))
                self.server.messages.append({**envelope, "data": data.decode()})
                self.wfile.write(b"250 kept\r\n")
            elif verb == "QUIT":
                self.wfile.write(b"221 bye\r\n")
                return
            else:
                self.wfile.write(b"250 ok\r\n")


def test_an_alert_is_emailed_when_smtp_is_configured_and_an_smtp_outage_is_logged(monkeypatch, caplog):
    mailbox = Mailbox()
    threading.Thread(target=mailbox.serve_forever, daemon=True).start()
    monkeypatch.setenv("SEGMENT_ELT_ALERT_SMTP_URL", f"smtp://127.0.0.1:{mailbox.server_address[1]}")
    monkeypatch.setenv("SEGMENT_ELT_ALERT_EMAIL_TO", "cs-oncall@example.com, data@example.com")
    monkeypatch.setenv("SEGMENT_ELT_ALERT_EMAIL_FROM", "segment-elt@example.com")
    try:
        assert alerts.notify("segment_rollups", "scheduled__x", "failed", "dbt.product_events_run failed") is True
    finally:
        mailbox.shutdown()
    (mail,) = mailbox.messages
    assert mail["from"] == "<segment-elt@example.com>"
    assert mail["to"] == ["<cs-oncall@example.com>", "<data@example.com>"]
    message = email.message_from_string(mail["data"], policy=email.policy.default)
    assert message["Subject"] == "segment-elt: segment_rollups run scheduled__x failed: dbt.product_events_run failed"
    assert "reason: dbt.product_events_run failed" in message.get_content()
    monkeypatch.setenv("SEGMENT_ELT_ALERT_SMTP_URL", f"smtp://127.0.0.1:{free_port()}")
    assert alerts.notify("segment_rollups", "scheduled__x", "failed", "boom") is False
    assert "could not email the failed alert through 127.0.0.1" in caplog.text


def test_a_run_is_late_only_past_the_limit_after_a_success(db, monkeypatch):
    from segment_elt.pipeline import runs

    assert runs.late_by(db) is None  # no success yet: nothing to be late against
    db.execute(
        "insert into control.pipeline_runs (dag_id, run_id, run_type, finished_at, status) values"
        " ('segment_rollups', 'manual__1', 'manual', now() - interval '20 min', 'success')"
    )
    assert runs.late_by(db) is None
    monkeypatch.setenv("SEGMENT_ELT_ROLLUPS_LATE_MINUTES", "15")
    assert runs.late_by(db).startswith("no successful segment_rollups run for 20 min")
