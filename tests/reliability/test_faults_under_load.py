"""Faults under load: a gunicorn worker SIGKILLed mid-request, PostgreSQL stopped and restarted, the
S3 server stopped and restarted, while clients post and retry as Segment does. Afterwards every
event that got a 2xx is in staging exactly once and archived, and the rollups are exact."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time

import boto3
import pytest
import requests

from segment_elt.control import connections
from segment_elt.ingest.archive import open_archive
from segment_elt.local import samples
from segment_elt.pipeline.transform import run_dbt
from tests.receiver.conftest import make_hook

CLIENTS, EVENTS_EACH = 6, int(os.environ.get("FAULT_EVENTS_EACH", 60))


def segment_like_sender(hook, events, outcome, stop_at):
    """Post each event, retrying 5xx, 429 and connection errors with backoff, as Segment does."""
    session = requests.Session()
    for event in events:
        body = json.dumps(event).encode()
        headers = samples.headers(hook.secret, body)
        for attempt in range(40):
            try:
                answer = session.post(hook.url, data=body, headers=headers, timeout=10)
                if answer.status_code < 300:
                    outcome[event["messageId"]] = answer.status_code
                    break
                if answer.status_code < 500 and answer.status_code != 429:
                    outcome[event["messageId"]] = answer.status_code
                    break
            except requests.RequestException:
                session = requests.Session()
            if time.monotonic() > stop_at:
                break
            time.sleep(min(2.0, 0.05 * 2**attempt))


def run_load(hook, chaos):
    outcome: dict[str, int] = {}
    stop_at = time.monotonic() + 120
    batches = [
        [samples.event("track", user_id=f"u{c}", name="Report Created") for _ in range(EVENTS_EACH)]
        for c in range(CLIENTS)
    ]
    threads = [threading.Thread(target=segment_like_sender, args=(hook, b, outcome, stop_at)) for b in batches]
    for t in threads:
        t.start()
    chaos()
    for t in threads:
        t.join()
    return outcome, [e["messageId"] for b in batches for e in b]


def check_exactly_once(db, hook, archive_url, outcome, sent_ids):
    accepted = {mid for mid, status in outcome.items() if status == 200}
    assert accepted == set(sent_ids), f"{len(set(sent_ids) - accepted)} events never accepted"
    rows = db.execute(
        "select message_id, archive_key from raw.segment_events where connection_id = %s", (hook.connection_id,)
    ).fetchall()
    assert len(rows) == len({r[0] for r in rows}) == len(accepted)
    archive = open_archive(archive_url)
    assert all(archive.exists(key) for _, key in rows)
    connections.allowlist(db, hook.connection_id, add=["Report Created"])
    run_dbt(["build"])
    total = db.execute("select sum(event_count) from analytics.account_event_daily").fetchone()[0]
    assert total == len(accepted)


def test_worker_kill_and_database_restart_under_load(db, database_url, archive_url, receiver_factory, pg_server):
    receiver = receiver_factory(workers=3)
    hook = make_hook(db, receiver, rate_limit=1_000_000)

    def chaos():
        time.sleep(0.5)
        os.kill(receiver.worker_pids()[0], signal.SIGKILL)  # mid-request, under load
        time.sleep(0.5)
        pg_server.stop("immediate")
        time.sleep(1.5)
        pg_server.start()

    db.close()
    outcome, sent = run_load(hook, chaos)
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        check_exactly_once(conn, hook, archive_url, outcome, sent)


def test_s3_restart_under_load(db, s3_archive_url, moto_s3, receiver_factory):
    receiver = receiver_factory(workers=3)
    hook = make_hook(db, receiver, rate_limit=1_000_000)
    bucket = s3_archive_url.split("/")[2]

    def chaos():
        time.sleep(0.5)
        moto_s3.stop()
        time.sleep(1.0)
        moto_s3.start()
        boto3.client("s3", endpoint_url=moto_s3.endpoint).create_bucket(Bucket=bucket)

    outcome, sent = run_load(hook, chaos)
    accepted = {mid for mid, status in outcome.items() if status == 200}
    assert accepted == set(sent)
    rows = db.execute("select count(*), count(distinct message_id) from raw.segment_events").fetchone()
    assert rows == (len(accepted), len(accepted))
    # moto keeps no state across a restart: the objects accepted since then are all there
    after = db.execute(
        "select archive_key from raw.segment_events where received_at > now() - interval '1 minute'"
        " order by received_at desc limit 20"
    ).fetchall()
    archive = open_archive(s3_archive_url)
    assert all(archive.exists(key) for (key,) in after)


@pytest.mark.slow
def test_long_fault_run(db, database_url, archive_url, receiver_factory, pg_server, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "EVENTS_EACH", 600)
    test_worker_kill_and_database_restart_under_load(db, database_url, archive_url, receiver_factory, pg_server)
