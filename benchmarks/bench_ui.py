"""Segment page figures: the server time of each view (connections, account, debugger, identity,
outbound, privacy: queries and HTML, what the API server does after authorising) on BENCH_UI_EVENTS
(default 5,000,000) staged events with built marts. bench_pipeline times the same views on its
big history (BENCH_BIG_HISTORY) with `time_views`.

Events are generated as in bench_pipeline (2,000 users in 200 accounts, ~16,700 a day, so 5M span
300 days, ending a few minutes ago, so the views' windows, today, 7 and 30 days, are full); dbt
builds the marts once. Each view is timed as the median of RUNS calls. The page reads the marts
and indexes only: the figure `seq scans of raw.segment_events` counts the sequential scans of the
staging table PostgreSQL made during all the timed calls (pg_stat_user_tables), and must be 0.
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.bench_pipeline import bench_org, generate, history_end, start_big_database
from benchmarks.figures import Figure
from segment_elt import db
from segment_elt.control import privacy, resolution
from segment_elt.control.lag import marts_lag
from segment_elt.local import embedded
from segment_elt.pipeline.transform import run_dbt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "plugins"))
from segment_ui import page_queries, views

RUNS = 20
VIEWS = ("connections", "account", "debugger", "identity", "outbound", "privacy")
TARGET_MS = 300


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
    # the table is partitioned by day: its partitions are scanned, never the parent
    return conn.execute(
        "select coalesce(sum(seq_scan), 0) from pg_stat_user_tables"
        " where relid in (select inhrelid from pg_inherits where inhparent = 'raw.segment_events'::regclass)"
    ).fetchone()[0]


def time_views(url: str, cid: str) -> dict[str, float]:
    """The median server time of each view of org `bench` on built marts (as plugins/segment_ui/app.py
    serves them), the sequential scans of raw.segment_events they made, and how many events are staged."""
    from segment_ui.app import REGULATION_TYPES, REGULATIONS_SHOWN  # imports Airflow's API server: only here

    with db.connect(url, timeout_s=3600) as conn:
        calls = {
            "connections": lambda: views.connections_page(
                page_queries.connections_overview(conn), page_queries.last_rollups_run(conn), marts_lag(conn)
            ),
            "account": lambda: views.account_page(page_queries.account_view(conn, "bench", "acct-42"), None),
            "debugger": lambda: views.debugger_page(
                page_queries.debugger(conn, cid),
                "",
                "all",
                page_queries.allowlist(conn, cid),
                page_queries.seen_event_names(conn, cid),
                3,
            ),
            "identity": lambda: views.identity_page(
                [resolution.report(conn, cid, resolution.DEFAULT_DAYS)], resolution.DEFAULT_DAYS, None
            ),
            "outbound": lambda: views.outbound_page(page_queries.outbound_view(conn)),
            "privacy": lambda: views.privacy_page(
                privacy.status(conn, limit=REGULATIONS_SHOWN),
                privacy.suppressed_counts(conn),
                REGULATION_TYPES,
                "",
                None,
            ),
        }
        before = _seq_scans(conn)
        figures = {name: _median_ms(call) for name, call in calls.items()}
        figures["seq_scans"] = _seq_scans(conn) - before
        conn.execute("select * from raw.segment_events limit 1")  # one seq scan: the counter must see it
        if _seq_scans(conn) - before <= figures["seq_scans"]:
            raise RuntimeError("pg_stat_user_tables did not count a sequential scan; the figure would mean nothing")
        figures["staged"] = conn.execute("select count(*) from raw.segment_events").fetchone()[0]
    return figures


def measure(total: int) -> dict[str, float]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-ui-"))
    os.environ.setdefault("SEGMENT_ELT_FERNET_KEY", "Y2hhbmdlLW1lLWNoYW5nZS1tZS1jaGFuZ2UtbWUtMTI=")
    try:
        url = start_big_database(tmp)
        with db.connect(url, timeout_s=3600) as conn:
            cid = bench_org(conn)
            generate(conn, cid, 0, total, history_end())
            conn.execute("analyze raw.segment_events")
        run_dbt(["build", "--exclude", "resource_type:test"], url)
        with db.connect(url, timeout_s=3600) as conn:
            conn.execute("vacuum (analyze)")
        return time_views(url, cid)
    finally:
        embedded.stop(tmp / "pg", "immediate")
        shutil.rmtree(tmp, ignore_errors=True)


def figures(f: dict[str, float], where: str = "") -> list[Figure]:
    """The page's figures from time_views' result: every view within TARGET_MS."""
    on = f"on {f['staged']:,} staged events" + (f" ({where})" if where else "")
    return [
        *(
            Figure(f"Segment page: {view} view {on}", f[view], "ms", f"<= {TARGET_MS} ms", f[view] <= TARGET_MS)
            for view in VIEWS
        ),
        Figure(
            f"Segment page: seq scans of raw.segment_events during the timed loads {on}",
            f["seq_scans"],
            "",
            "0",
            f["seq_scans"] == 0,
        ),
    ]


def run() -> list[Figure]:
    return figures(measure(int(os.environ.get("BENCH_UI_EVENTS", 5_000_000))))
