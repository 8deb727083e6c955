"""dbt pipeline figures: one incremental build of 100,000 new events on top of 1,000,000 and of
5,000,000 stored events, and a full rebuild of 1,000,000.

Events are generated in SQL straight into raw.segment_events (Segment-shaped payloads: 2,000
users in 200 accounts, tracks, pages, identifies and group calls). History accrues at a steady
~16,700 events a day (1M span 60 days, 5M span 300) and was staged as it arrived, in time
order (loaded_at = received_at); the new batch covers the last 2 days and is staged now, as live
traffic is: more history means a longer past, not a denser recent window.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from benchmarks.figures import Figure
from segment_elt import db
from segment_elt.control import connections, entities, schema
from segment_elt.local import embedded
from segment_elt.pipeline.transform import run_dbt

GENERATE = """
insert into raw.segment_events
    (connection_id, org_id, message_id, event_type, received_at, loaded_at, archive_key, payload)
select %(cid)s, 'bench', %(prefix)s || n, kind, at + interval '2 seconds',
       case when %(arrived_over_time)s then at + interval '2 seconds' else now() end, 'bench/' || n,
       jsonb_build_object(
           'type', kind, 'messageId', %(prefix)s || n, 'userId', 'user-' || u,
           'anonymousId', 'anon-' || u, 'timestamp', to_char(at, 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
           'event', case when kind = 'track'
                         then (array['Report Created','Invite Sent','Export Downloaded','Login'])[1 + n %% 4] end,
           'groupId', case when kind = 'group' then 'ext-' || (u / 10) end,
           'traits', case when kind = 'identify'
                               then jsonb_build_object('email', 'user-' || u || '@example.com', 'plan', 'pro')
                          when kind = 'group' then jsonb_build_object('name', 'Account ' || (u / 10)) end,
           'properties', jsonb_build_object('path', '/app', 'seats', n %% 50),
           'context', jsonb_build_object('library', jsonb_build_object('name', 'analytics.js', 'version', '1.0'),
                                         'ip', '203.0.113.7', 'userAgent', 'Mozilla/5.0'))
from (
    select n,
           (n * 7 + n / 100) %% 2000 as u,
           case when n %% 100 = 0 then 'group' when n %% 50 = 1 then 'identify'
                when n %% 5 = 2 then 'page' else 'track' end as kind,
           %(end)s::timestamptz - case
               when %(arrived_over_time)s then (%(total)s - n) * (%(days)s * 86400.0 / %(total)s)  -- in time order
               else (n::bigint * 7919) %% (%(days)s * 86400)  -- scattered over the window
           end * interval '1 second' as at
    from generate_series(%(start)s, %(stop)s - 1) as n
) as g
"""


PER_DAY = 16_667  # history accrues at a steady rate: 1M stored events span 60 days, 5M span 300


def _generate(conn, cid: str, start: int, stop: int, days: int | None = None, history: bool = True) -> None:
    days = days or max(1, round(stop / PER_DAY))
    for lo in range(start, stop, 500_000):
        conn.execute(
            GENERATE,
            {
                "cid": cid,
                "prefix": "m-",
                "start": lo,
                "stop": min(stop, lo + 500_000),
                "end": "2026-11-01T00:00:00Z",
                "days": days,
                "arrived_over_time": history,
                "total": stop,
            },
        )


def _timed_build(url: str, *extra: str) -> float:
    began = time.monotonic()
    run_dbt(["run", "--vars", json.dumps({"as_of": "2026-11-01T00:00:00Z"}), *extra], url)
    return time.monotonic() - began


def start_big_database(tmp: Path) -> str:
    """An embedded PostgreSQL sized for millions of events, with the schema; returns its URL."""
    url = embedded.start(
        tmp / "pg",
        server_port=embedded.free_port(),
        settings={"shared_buffers": "1GB", "work_mem": "64MB", "maintenance_work_mem": "512MB", "max_wal_size": "8GB"},
    )
    with db.connect(url) as conn:
        schema.upgrade(conn)
    return url


def bench_org(conn) -> str:
    """Org `bench`: a connection with the generated event names allowlisted and 200 accounts;
    returns the connection id."""
    cid = connections.create(conn, "bench").connection_id
    connections.allowlist(conn, cid, add=["Report Created", "Invite Sent", "Export Downloaded", "$page"])
    entities.upsert(
        conn,
        "bench",
        entities.ACCOUNTS,
        [
            dict(
                account_id=f"acct-{i}",
                name=f"Account {i}",
                external_id=f"ext-{i}",
                ps_id=None,
                vitally_id=None,
                traits={},
            )
            for i in range(200)
        ],
    )
    return cid


def measure(history: int, new: int = 100_000, full_rebuild: bool = False) -> dict[str, float]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    os.environ.setdefault("SEGMENT_ELT_FERNET_KEY", "Y2hhbmdlLW1lLWNoYW5nZS1tZS1jaGFuZ2UtbWUtMTI=")
    try:
        url = start_big_database(tmp)
        with db.connect(url, timeout_s=3600) as conn:
            cid = bench_org(conn)
            _generate(conn, cid, 0, history)
            conn.execute("analyze raw.segment_events")
        figures = {}
        run_dbt(["seed"], url)
        initial = _timed_build(url)
        if full_rebuild:
            figures["full"] = initial
        with db.connect(url, timeout_s=3600) as conn:
            # History in a live database has long been vacuumed; do now what autovacuum would
            # otherwise still be doing to the freshly written GBs during the timed run.
            conn.execute("vacuum (analyze)")
            conn.execute("checkpoint")
            _generate(conn, cid, history, history + new, days=2, history=False)  # new arrivals
        figures["incremental"] = _timed_build(url)
        return figures
    finally:
        embedded.stop(tmp / "pg", "immediate")
        shutil.rmtree(tmp, ignore_errors=True)


def run() -> list[Figure]:
    one = measure(1_000_000, full_rebuild=True)
    five = measure(int(os.environ.get("BENCH_BIG_HISTORY", 5_000_000)))
    ratio = five["incremental"] / one["incremental"]
    return [
        Figure("dbt full rebuild of 1,000,000 events", one["full"], "s"),
        Figure(
            "dbt incremental: 100,000 new on 1,000,000 stored",
            one["incremental"],
            "s",
            "<= 30 s",
            one["incremental"] <= 30,
        ),
        Figure(
            "dbt incremental: 100,000 new on 5,000,000 stored",
            five["incremental"],
            "s",
            "<= 30 s",
            five["incremental"] <= 30,
        ),
        Figure("5M-history run / 1M-history run", ratio, "x", "<= 1.3x", ratio <= 1.3),
    ]
