"""A failed or stale run tells someone: the DAGs POST to SEGMENT_ELT_ALERT_WEBHOOK_URL (here a
stand-in webhook on loopback), and a webhook that is down changes nothing about the run."""

from __future__ import annotations

import http.server
import json
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


def test_a_stale_source_fails_the_run_after_building_and_says_why(dags, db, acme, monkeypatch):
    webhook = Webhook()
    threading.Thread(target=webhook.serve_forever, daemon=True).start()
    monkeypatch.setenv("SEGMENT_ELT_ALERT_WEBHOOK_URL", webhook.url)
    land(db, acme, tracks(2), NOW)
    db.execute("update raw.segment_events set loaded_at = now() - interval '7 hours'")  # nothing since
    try:
        result = dags["segment_rollups"].test()
    finally:
        webhook.shutdown()
    assert result.state == "failed"
    stale, failed = webhook.received
    assert (stale["status"], failed["status"]) == ("stale", "failed")
    assert stale["reason"].startswith("raw.segment_events: newest row landed 7.")
    assert "SEGMENT_ELT_RAW_STALE_HOURS=6" in stale["text"]
    # what had landed is built and recorded: staleness fails the run, not the build
    assert total_events(db) == 2
    assert db.execute("select status from control.pipeline_runs").fetchone()[0] == "success"
