"""dbt pipeline figures: incremental builds of 100,000 new events on top of 1,000,000 and of a
bigger history (BENCH_BIG_HISTORY, default 5,000,000; the issue's size is 20,000,000), a full
rebuild of 1,000,000, the engagement models' share of both, and the Segment page's views on the
big history's marts.

Events are generated in SQL straight into raw.segment_events (Segment-shaped payloads: 2,000
users in 200 accounts, tracks, pages, identifies and group calls). History accrues at a steady
~16,700 events a day (1M span 60 days, 5M span 300, 20M span 1,200) up to a few minutes ago, and
was staged as it arrived, in time order (loaded_at = received_at), and built as a live install
builds it: in chunks of BENCH_CHUNK events (default 5,000,000), each an incremental run followed
by the retention, which leaves raw.segment_events only its last 30 days (the staging model and
the marts keep everything); so a 20M database needs no full build of 20M events, whose temporary
files alone would not fit here. Payloads carry no `context` object (library, ip, userAgent:
nothing reads them). Each new batch covers the last 2 days and is staged now, as live traffic
is: more history means a longer past, not a denser recent window.

Both databases are built first; then four batches of 100,000 are built incrementally on each in
turn, so the machine's load weighs on both alike, in the order with, without, without, with:
"with" is the whole project, "without" excludes the engagement models of issue 26 (sessions,
int_usage__daily_users and everything built from them), which then catch up on that batch,
untimed, before the next one. Each way's figure is the faster of its two runs (history grows by
100,000 a batch, and as every batch falls in the same last 2 days, each makes that window denser
for the next: the same on every database). The big database then gets the Segment page's views
timed on it (bench_ui.time_views). Before its retention, the 1M database times `dbt run
--full-refresh` without and then with the engagement models; the big one too with
BENCH_FULL_REBUILDS=1 when it is built in one chunk.
BENCH_KEEP_DATABASE=1 leaves both databases running afterwards, for EXPLAIN ANALYZE, and names
them for BENCH_REUSE=<dir of 1M>,<dir of the big one>, which times new batches on them instead
of building (each measure adds its 400,000 events to both; an empty entry builds that one anew);
BENCH_EXPLAIN_MS=N logs the plan (auto_explain, row counts and buffers, no timing) of every
statement slower than N ms in each database's server log (pg/data/server.log).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from benchmarks.figures import Figure, load
from segment_elt import db
from segment_elt.control import connections, entities, schema
from segment_elt.ingest import partitions
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
           'properties', jsonb_build_object('path', '/app', 'seats', n %% 50))
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
NEW = 100_000
SLOWEST_LOGGED = 8
RETENTION_DAYS = 30  # SEGMENT_ELT_RETENTION_DAYS' default
# The engagement models of issue 26 and what is built from them, as dbt selectors.
ENGAGEMENT = ["sessions+", "int_usage__daily_users+"]


def history_end() -> dt.datetime:
    """Where generated history ends: a few minutes ago, so the page's windows (today, 7 and 30
    days) are full."""
    return (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)).replace(microsecond=0)


def generate(
    conn,
    cid: str,
    start: int,
    stop: int,
    end: dt.datetime,
    days: int | None = None,
    history: bool = True,
    total: int | None = None,
) -> None:
    """Events start..stop-1: history in time order, of `total` events (default `stop`) that end
    at `end` over `days` (by default as many as PER_DAY gives), or a new batch scattered over
    the `days` before `end` and staged now."""
    total = total or stop
    days = days or max(1, round(total / PER_DAY))
    for lo in range(start, stop, 500_000):
        conn.execute(
            GENERATE,
            {
                "cid": cid,
                "prefix": "m-",
                "start": lo,
                "stop": min(stop, lo + 500_000),
                "end": end,
                "days": days,
                "arrived_over_time": history,
                "total": total,
            },
        )


def _big_settings() -> dict[str, str]:
    """The embedded PostgreSQL's settings for millions of events (and auto_explain with BENCH_EXPLAIN_MS)."""
    settings = {"shared_buffers": "1GB", "work_mem": "64MB", "maintenance_work_mem": "512MB", "max_wal_size": "2GB"}
    if os.environ.get("BENCH_EXPLAIN_MS"):  # the plan of every statement slower than that, in the server's log
        settings |= {
            "shared_preload_libraries": "auto_explain",
            "auto_explain.log_min_duration": os.environ["BENCH_EXPLAIN_MS"],
            "auto_explain.log_analyze": "on",
            "auto_explain.log_timing": "off",
            "auto_explain.log_buffers": "on",
            "auto_explain.log_nested_statements": "on",
        }
    return settings  # max_wal_size: checkpoints often enough that WAL stays ~2 GB while GBs are written


def start_big_database(tmp: Path, until: int | None = None) -> str:
    """An embedded PostgreSQL sized for millions of events, with the schema (up to migration
    `until`, default the latest); returns its URL."""
    url = embedded.start(tmp / "pg", server_port=embedded.free_port(), settings=_big_settings())
    with db.connect(url) as conn:
        schema.upgrade(conn, until=until)
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


def _say(message: str) -> None:
    print(f"   {dt.datetime.now(dt.UTC):%H:%M:%S} {message} (load {load()})", flush=True)


class _Database:
    """One benchmark database: its URL, connection, where history ends and how many events it holds."""

    def __init__(self, url: str, cid: str, end: dt.datetime, stored: int) -> None:
        self.url, self.cid, self.end, self.stored = url, cid, end, stored

    def build(self, *extra: str) -> float:
        """Seconds of one `dbt run`; the slowest models' seconds go to the log."""
        began = time.monotonic()
        results = run_dbt(["run", "--vars", json.dumps({"as_of": self.end.isoformat()}), *extra], self.url)
        took = time.monotonic() - began
        slowest = sorted(results.results, key=lambda r: r.execution_time, reverse=True)[:SLOWEST_LOGGED]
        _say(
            f"dbt run {' '.join(extra)}: {took:.1f} s; "
            + ", ".join(f"{r.node.name} {r.execution_time:.1f}" for r in slowest)
        )
        return took

    def land_batch(self) -> None:
        """NEW events over the last 2 days, staged now; then what autovacuum would have done by now."""
        with db.connect(self.url, timeout_s=3600) as conn:
            generate(conn, self.cid, self.stored, self.stored + NEW, self.end, days=2, history=False)
            conn.execute("vacuum (analyze) raw.segment_events")
        self.stored += NEW


def keep_retention(conn) -> None:
    """Leave in raw.segment_events only its last RETENTION_DAYS of receive time, as
    segment_maintenance keeps it (every row is consumed by the staging model by then); the
    staging model and the marts keep all of history. It is also what lets 20M events fit on disk."""
    with conn.transaction():
        conn.execute(
            "create temporary table kept on commit drop as select * from raw.segment_events"
            " where received_at > (select max(received_at) from raw.segment_events) - make_interval(days => %s)",
            (RETENTION_DAYS,),
        )
        conn.execute("truncate raw.segment_events")
        conn.execute("insert into raw.segment_events select * from kept")
    # the day partitions a live install has for those days and the week ahead (the rows move in)
    today = dt.datetime.now(dt.UTC).date()
    partitions.create_days(conn, today - dt.timedelta(days=RETENTION_DAYS + 1), today + dt.timedelta(days=7))


def _du(path: Path) -> str:
    total = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return f"{total / 2**30:.1f} GiB"


def prepare(tmp: Path, history: int, chunk: int, full_rebuilds: bool = False) -> tuple[_Database, dict[str, float]]:
    """A database in `tmp` holding `history` events with built marts, as a live install has them:
    history arrives in chunks of `chunk` events, each built incrementally and followed by the
    retention; returns it with the figures of its full rebuilds when asked (one chunk only)."""
    url = start_big_database(tmp)
    end = history_end()
    with db.connect(url, timeout_s=3600) as conn:
        cid = bench_org(conn)
    base = _Database(url, cid, end, 0)
    run_dbt(["seed"], url)
    figures: dict[str, float] = {}
    while base.stored < history:
        upto = min(history, base.stored + chunk)
        with db.connect(url, timeout_s=3600) as conn:
            _say(f"generating events {base.stored:,} to {upto:,} of {history:,}")
            generate(conn, cid, base.stored, upto, end, total=history)
            conn.execute("analyze raw.segment_events")
        base.stored = upto
        _say(f"building them ({_du(tmp)} on disk)")
        figures.setdefault("initial", base.build())
        if full_rebuilds and history <= chunk:  # while raw.segment_events still holds all of history
            figures["full_without_engagement"] = base.build("--full-refresh", "--exclude", *ENGAGEMENT)
            figures["full"] = base.build("--full-refresh")
        with db.connect(url, timeout_s=3600) as conn:
            _say(f"retention, vacuum ({_du(tmp)} on disk)")
            keep_retention(conn)
            # History in a live database has long been vacuumed; do now what autovacuum would
            # otherwise still be doing to the freshly written GBs during the timed runs.
            conn.execute("vacuum (analyze)")
            conn.execute("checkpoint")
    return base, figures


def _reopen(tmp: Path) -> _Database:
    """A database `measure` kept in `tmp`, started again if it was stopped."""
    kept = json.loads((tmp / "bench.json").read_text())
    url = embedded.start(tmp / "pg", settings=_big_settings())
    return _Database(url, kept["cid"], dt.datetime.fromisoformat(kept["end"]), kept["stored"])


def measure(
    histories: list[int],
    chunk: int,
    full_rebuilds=lambda size: False,
    page=None,
    keep: bool = False,
    reuse: list[Path | None] | None = None,
) -> list[dict[str, float]]:
    """Build a database for each of `histories` (or reopen the ones `keep` left in the `reuse`
    directories, in the same order; None builds that one), then time the incremental batches on
    them in turn (see the module's docstring), so that the machine's load weighs on each alike;
    `page(url, cid)` times the page's views on the last one. `keep` leaves them running for
    inspection and reuse (their directories go to the log): remove them by hand."""
    os.environ.setdefault("SEGMENT_ELT_FERNET_KEY", "Y2hhbmdlLW1lLWNoYW5nZS1tZS1jaGFuZ2UtbWUtMTI=")
    reuse = reuse or [None for _ in histories]
    tmps = [reused or Path(tempfile.mkdtemp(prefix="bench-pipeline-")) for reused in reuse]
    kept = False
    try:
        bases, results = [], []
        for tmp, history, reused in zip(tmps, histories, reuse, strict=True):
            if reused:
                base, figures = _reopen(tmp), {}
                _say(f"reopened {tmp}: {base.stored:,} stored")
            else:
                base, figures = prepare(tmp, history, chunk, full_rebuilds(history))
            bases.append(base)
            results.append(figures)
        runs: list[dict[str, list[float]]] = [{"with": [], "without": []} for _ in bases]
        for way in ("with", "without", "without", "with"):
            for base, took_by_way in zip(bases, runs, strict=True):
                base.land_batch()
                excluded = [] if way == "with" else ["--exclude", *ENGAGEMENT]
                took = base.build(*excluded)
                took_by_way[way].append(took)
                _say(f"incremental {way} the engagement models on {base.stored - NEW:,} stored: {took:.1f} s")
                if way == "without":
                    base.build("--select", *ENGAGEMENT)  # catch up on the batch, untimed
        for base, figures, took_by_way, tmp in zip(bases, results, runs, tmps, strict=True):
            figures["incremental"], figures["without_engagement"] = (
                min(took_by_way["with"]),
                min(took_by_way["without"]),
            )
            figures["stored"] = base.stored
            figures["load"] = os.getloadavg()[0]
            figures["disk_gib"] = sum(f.stat().st_size for f in tmp.rglob("*") if f.is_file()) / 2**30
        if page is not None:
            _say("timing the page's views")
            results[-1].update({f"page_{k}": v for k, v in page(bases[-1].url, bases[-1].cid).items()})
        if keep or any(reuse):
            for tmp, base in zip(tmps, bases, strict=True):
                state = {"url": base.url, "cid": base.cid, "end": base.end.isoformat(), "stored": base.stored}
                (tmp / "bench.json").write_text(json.dumps(state))
            _say(f"kept the databases: BENCH_REUSE={','.join(map(str, tmps))}")
            kept = True
        return results
    finally:
        for tmp, history in zip(tmps, histories, strict=True):
            log = tmp / "pg" / "data" / "server.log"
            if os.environ.get("BENCH_EXPLAIN_MS") and log.exists():
                shutil.copy(log, Path(tempfile.gettempdir()) / f"bench-pipeline-{history}.log")
                _say(f"server log with the plans: {tempfile.gettempdir()}/bench-pipeline-{history}.log")
            if not kept:
                if (tmp / "pg").exists():
                    embedded.stop(tmp / "pg", "immediate")
                shutil.rmtree(tmp, ignore_errors=True)


def run() -> list[Figure]:
    from benchmarks import bench_ui

    big_history = int(os.environ.get("BENCH_BIG_HISTORY", 5_000_000))

    def rebuilds(size: int) -> bool:
        return size <= 1_000_000 or os.environ.get("BENCH_FULL_REBUILDS") == "1"

    chunk = int(os.environ.get("BENCH_CHUNK", 5_000_000))
    one, big = measure(
        [1_000_000, big_history],
        chunk,
        full_rebuilds=rebuilds,
        page=bench_ui.time_views,
        keep=os.environ.get("BENCH_KEEP_DATABASE") == "1",
        reuse=[Path(d) if d else None for d in os.environ["BENCH_REUSE"].split(",")]
        if os.environ.get("BENCH_REUSE")
        else None,
    )
    ratio = big["incremental"] / one["incremental"]
    figures = []
    for size, f in ((1_000_000, one), (big_history, big)):
        on = f"on {size:,} stored (load {f['load']:.1f})"
        figures += [
            Figure(f"dbt incremental: {NEW:,} new {on}", f["incremental"], "s", "<= 30 s", f["incremental"] <= 30),
            Figure(f"dbt incremental without the engagement models: {NEW:,} new {on}", f["without_engagement"], "s"),
            Figure(
                f"engagement models' share: with / without, {size:,} stored",
                f["incremental"] / f["without_engagement"],
                "x",
                "<= 1.3x",
                f["incremental"] / f["without_engagement"] <= 1.3,
            ),
        ]
        if "full" in f:
            figures += [
                Figure(f"dbt full rebuild of {size:,} events", f["full"], "s"),
                Figure(
                    f"dbt full rebuild of {size:,} events without the engagement models",
                    f["full_without_engagement"],
                    "s",
                ),
                Figure(
                    f"full rebuild with / without the engagement models, {size:,}",
                    f["full"] / f["full_without_engagement"],
                    "x",
                ),
            ]
        figures.append(Figure(f"database size at {size:,} stored", f["disk_gib"], "GiB"))
    figures.append(
        Figure(f"{big_history // 1_000_000}M-history run / 1M-history run", ratio, "x", "<= 1.3x", ratio <= 1.3)
    )
    figures += bench_ui.figures(
        {k.removeprefix("page_"): v for k, v in big.items() if k.startswith("page_")},
        f"marts of {big['stored']:,} events",
    )
    return figures
