"""`make demo`: the whole job end to end on the embedded defaults, then stop what it started.

Embedded PostgreSQL -> receiver under gunicorn -> a connection -> signed Segment events (single,
batched, a duplicate, a bad signature, a burst over a cap) -> segment_rollups once (airflow dags
test) -> what landed, the rollups, identity resolution per event, the indicators.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from collections import Counter

import requests
from tabulate import tabulate

from segment_elt import db
from segment_elt.control import connections, entities
from segment_elt.ingest.archive import open_archive
from segment_elt.local import samples
from segment_elt.local.embedded import free_port
from segment_elt.local.stack import BIN, airflow_ready, embedded_database, exit_code_of, receiver
from segment_elt.outbound import sync
from segment_elt.settings import settings

ORG = f"acme-{dt.datetime.now(dt.UTC):%Y%m%d%H%M%S}"  # a fresh org per demo run
ALLOWLIST = ["Report Created", "Dashboard Viewed", "Invite Sent", "Export Downloaded", "$page", "$identify", "$group"]
ACCOUNTS = [
    dict(
        account_id="acct-acme",
        name="Acme",
        external_id="acme-ext-1",
        ps_id=None,
        vitally_id=None,
        traits={"plan": "enterprise"},
    ),
    dict(
        account_id="acct-globex",
        name="Globex",
        external_id=None,
        ps_id="globex-ext-9",
        vitally_id=None,
        traits={"plan": "pro"},
    ),
]
CONTACTS: list[dict] = [
    dict(contact_id="c-bob", account_id="acct-acme", email="bob@acme.test", product_external_user_id=None, traits={}),
    dict(contact_id="c-erin", account_id="acct-globex", email=None, product_external_user_id="u-erin", traits={}),
]


def post(url: str, secret: str, body: bytes, signed: bytes | None = None) -> requests.Response:
    headers = samples.headers(secret, signed if signed is not None else body)
    return requests.post(url, data=body, headers=headers, timeout=15)


def table(rows, headers) -> str:
    return tabulate(rows, headers=headers, disable_numparse=True)


def land_sample_events(conn, base_url: str) -> str:
    created = connections.create(conn, ORG, "Acme web")
    connections.allowlist(conn, created.connection_id, add=ALLOWLIST)
    entities.upsert(conn, ORG, entities.ACCOUNTS, ACCOUNTS)
    entities.upsert(conn, ORG, entities.CONTACTS, CONTACTS)
    hook = f"{base_url}/webhooks/segment/{created.connection_id}"
    print(f"connection {created.connection_id} (org {ORG}), webhook {hook}\n")

    events = samples.workday()
    # a user who never sent a group call: resolved through the contact chain
    events.insert(0, samples.event("track", user_id="u-erin", name="Report Created"))
    statuses: Counter = Counter()
    for event in events[:-6]:
        body = json.dumps(event).encode()
        statuses[post(hook, created.secret, body).status_code] += 1
    body, first = samples.batch_body(events[-6:])
    answer = post(hook, created.secret, body, signed=first)
    print(f"batch of 6 signed on its first event (Segment Actions style): {answer.status_code} {answer.text.strip()}")
    duplicate = json.dumps(events[0]).encode()
    answer = post(hook, created.secret, duplicate)
    print(f"the first event again (a Segment retry):               {answer.status_code} {answer.text.strip()}")
    answer = post(hook, "not-the-secret", duplicate)
    print(f"an event with a wrong signature:                       {answer.status_code} {answer.text.strip()}")
    print(f"single events: {dict(statuses)} (status: count)")

    burst = connections.create(conn, f"{ORG}-burst", "Over the cap", rate_limit=30)
    burst_hook = f"{base_url}/webhooks/segment/{burst.connection_id}"
    outcome: Counter = Counter()
    for i in range(40):
        one = json.dumps(samples.event("track", user_id=f"b{i}", name="Burst")).encode()
        outcome[post(burst_hook, burst.secret, one).status_code] += 1
    print(f"a burst of 40 events against a 30/minute cap: {dict(outcome)} (429 carries Retry-After)\n")
    return created.connection_id


def show_landing(conn, connection_id: str) -> None:
    staged = conn.execute(
        "select event_type, count(*) from raw.segment_events where connection_id = %s group by 1 order by 1",
        (connection_id,),
    ).fetchall()
    print(table(staged, ["staged event_type", "rows"]))
    keys = [k for k in open_archive(settings().archive_url).list("") if f"connection={connection_id}" in k]
    print(f"\narchive {settings().archive_url}: {len(keys)} objects, e.g.\n  {keys[0] if keys else '-'}\n")
    recent = connections.recent_events(conn, connection_id, 8)
    print(
        table(
            [
                (
                    r["received_at"][11:23],
                    r["event_type"],
                    r["event_name"],
                    r["in_allowlist"],
                    r["external_group_id"],
                    r["external_user_id"],
                )
                for r in recent
            ],
            ["received", "type", "event_name", "in_allowlist", "externalGroupId", "externalUserId"],
        )
    )


def run_rollups(url: str) -> None:
    env = airflow_ready(url)
    print("\nrunning segment_rollups once (segment-elt pipeline run-once) ...", flush=True)
    started = dt.datetime.now()
    result = subprocess.run(
        [str(BIN / "segment-elt"), "pipeline", "run-once", "--json"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
    )
    took = (dt.datetime.now() - started).total_seconds()
    if result.returncode != 0:
        print(result.stdout[-4000:], result.stderr[-4000:], sep="\n")
        raise SystemExit(f"segment_rollups failed (exit {result.returncode})")
    figures = json.loads(result.stdout)
    print(f"segment_rollups finished in {took:.0f} s: {json.dumps(figures, default=str)}\n")


def show_rollups(conn, connection_id: str) -> None:
    print(
        table(
            conn.execute(
                "select account_id, event_date, event_name, event_count, unique_users"
                " from analytics.account_event_daily where org_id = %(org)s"
                " order by event_date, account_id nulls last, event_name",
                {"org": ORG},
            ).fetchall(),
            ["account_id", "event_date", "event_name", "events", "unique_users"],
        )
    )
    print()
    print(
        table(
            conn.execute(
                "select event_at::timestamp(0), user_id, event_name, account_id, contact_id, matched_by"
                " from analytics.product_events where connection_id = %s order by event_at",
                (connection_id,),
            ).fetchall(),
            ["event_at", "user_id", "event_name", "account_id", "contact_id", "matched_by"],
        )
    )
    print()
    print(
        table(
            conn.execute(
                "select account_id, event_name, events_7d, events_30d, active_users_7d, active_users_30d,"
                " last_seen_at::timestamp(0) from analytics.account_indicators where org_id = %(org)s"
                " order by account_id nulls last, event_name",
                {"org": ORG},
            ).fetchall(),
            ["account_id", "event_name", "7d", "30d", "users_7d", "users_30d", "last_seen_at"],
        )
    )
    print()
    print(
        table(
            conn.execute(
                "select account_id, health_score from analytics.account_health where org_id = %(org)s"
                " order by account_id",
                {"org": ORG},
            ).fetchall(),
            ["account_id", "health_score"],
        )
    )
    pending = sync.preview(org_id=ORG)
    print(
        f"\noutbound: with `segment-elt connections outbound {connection_id} --write-key K --region us` the next"
        f" run would send {len(pending)} messages to Segment, e.g.:"
    )
    for kind in ("identify", "group", "track"):
        example = next((m for m in pending if m["type"] == kind), None)
        if example:
            print("  " + json.dumps({k: v for k, v in example.items() if k != "context"}, default=str)[:200])


def main() -> int:
    with embedded_database() as url, receiver(f"127.0.0.1:{free_port()}") as base_url:
        with db.connect() as conn:
            connection_id = land_sample_events(conn, base_url)
            show_landing(conn, connection_id)
        run_rollups(url)
        with db.connect() as conn:
            show_rollups(conn, connection_id)
    print("\ndemo done: everything it started is stopped; data stays in .local/ (make clean removes it)")
    return 0


if __name__ == "__main__":
    sys.exit(exit_code_of(main))
