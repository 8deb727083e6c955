"""Segment page figures: the server time of the connections view and the account view (queries and
HTML, what the API server does after authorising) on 5,000,000 staged events with built marts.

Events are generated as in bench_pipeline (2,000 users in 200 accounts, ~16,700 a day, so 5M span
300 days) but ending now, so the views' windows (today, 7 and 30 days) are full; dbt builds the
marts once. Each view is timed as the median of RUNS calls. The page reads the marts and
indexes only: the figure `seq scans of raw.segment_events` counts the sequential scans of the
staging table PostgreSQL made during all the timed calls (pg_stat_user_tables), and must be 0.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.bench_pipeline import GENERATE, PER_DAY, bench_org, start_big_database
from benchmarks.figures import Figure
from segment_elt import db
from segment_elt.local import embedded
from segment_elt.pipeline.transform import run_dbt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "plugins"))
from segment_ui import page_queries, views

RUNS = 20
TARGET_MS = 300


def _stage(conn, cid: str, total: int, end: dt.datetime) -> None:
    days = max(1, round(total / PER_DAY))
    for lo in range(0, total, 500_000):
        conn.execute(
            GENERATE,
            {
                "cid": cid,
                "prefix": "m-",
                "start": lo,
                "stop": min(total, lo + 500_000),
                "end": end,
                "days": days,
                "arrived_over_time": True,
                "total": total,
            },
        )


def _median_ms(call) -> float:
    call()  # warm: the first call of a fresh server process
    times = []
    for _ in range(RUNS):
        began = time.perf_counter()
        call()
        times.append((time.perf_counter() - began) * 1000)
    return statistics.median(times)


def _seq_scans(conn) -> int:
    time.sleep(1.1)  # a backend reports its table statistics at most once a second, when a transaction ends
    conn.execute("select 1")
    conn.execute("select pg_stat_clear_snapshot()")
    return conn.execute(
        "select seq_scan from pg_stat_user_tables where schemaname = 'raw' and relname = 'segment_events'"
    ).fetchone()[0]


def measure(total: int) -> dict[str, float]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-ui-"))
    os.environ.setdefault("SEGMENT_ELT_FERNET_KEY", "Y2hhbmdlLW1lLWNoYW5nZS1tZS1jaGFuZ2UtbWUtMTI=")
    try:
        url = start_big_database(tmp)
        end = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
        with db.connect(url, timeout_s=3600) as conn:
            cid = bench_org(conn)
            _stage(conn, cid, total, end)
            conn.execute("analyze raw.segment_events")
        run_dbt(["build", "--exclude", "resource_type:test"], url)
        with db.connect(url, timeout_s=3600) as conn:
            conn.execute("vacuum (analyze)")
            before = _seq_scans(conn)
            figures = {
                "connections": _median_ms(
                    lambda: views.connections_page(
                        page_queries.connections_overview(conn), page_queries.last_rollups_run(conn)
                    )
                ),
                "account": _median_ms(
                    lambda: views.account_page(page_queries.account_view(conn, "bench", "acct-42"), None)
                ),
                "debugger": _median_ms(
                    lambda: views.debugger_page(
                        page_queries.debugger(conn, cid),
                        "",
                        "all",
                        page_queries.allowlist(conn, cid),
                        page_queries.seen_event_names(conn, cid),
                        3,
                    )
                ),
            }
            figures["seq_scans"] = _seq_scans(conn) - before
            conn.execute("select * from raw.segment_events limit 1")  # one seq scan: the counter must see it
            if _seq_scans(conn) - before != figures["seq_scans"] + 1:
                raise RuntimeError("pg_stat_user_tables did not count a sequential scan; the figure would mean nothing")
            figures["staged"] = conn.execute("select count(*) from raw.segment_events").fetchone()[0]
        return figures
    finally:
        embedded.stop(tmp / "pg", "immediate")
        shutil.rmtree(tmp, ignore_errors=True)


def run() -> list[Figure]:
    f = measure(int(os.environ.get("BENCH_UI_EVENTS", 5_000_000)))
    on = f"on {f['staged']:,} staged events"
    return [
        Figure(
            f"Segment page: connections view {on}",
            f["connections"],
            "ms",
            f"<= {TARGET_MS} ms",
            f["connections"] <= TARGET_MS,
        ),
        Figure(f"Segment page: account view {on}", f["account"], "ms", f"<= {TARGET_MS} ms", f["account"] <= TARGET_MS),
        Figure(f"Segment page: debugger {on}", f["debugger"], "ms"),
        Figure(
            "Segment page: seq scans of raw.segment_events during the timed loads",
            f["seq_scans"],
            "",
            "0",
            f["seq_scans"] == 0,
        ),
    ]
