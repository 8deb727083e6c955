"""Retention at scale: one receive day past retention of ROWS staged rows in OBJECTS archive
objects (one connection, spread over the day's 24 hours), every row consumed by the staging model,
on the S3 stand-in answering every GET and LIST page after 40 ms (tests/s3_stand_in.py, a
realistic in-region call), pruned twice from the same data, side by side:

- before: an install at migration 12 (raw.segment_events unpartitioned) running the delete-based
  prune and VACUUM of git revision BENCH_MAINT_BEFORE (default 580ff1c, the tree before
  partitioning; empty skips it), with that revision's landing for the insert rate;
- now: a copy of the same database upgraded (migration 13, timed: what the upgrade of an existing
  install costs), with the partitions of the retention's days (empty) as a live install has,
  running segment_maintenance's make_partitions, prune (a day dropped whole) and vacuum.

Beside each, the receiver's insert rate (single-event requests landed with landing.insert_events,
each its own commit) while maintenance runs, against the same rate on the idle database in the
windows just before and just after it. In production the maintenance task runs on an Airflow
worker and S3 is elsewhere; here they share 2 cores with PostgreSQL, so on a machine with 2 or
more cores (BENCH_MAINT_PIN=0 turns it off) PostgreSQL and the inserting process are pinned to
core 0 and the maintenance task and the S3 stand-in to the others: the ratio then shows what
maintenance costs the inserts through the database (its locks, I/O and CPU there), not the
benchmark's own client competing for the same cores.

Last, landing itself before and after partitioning: events/s landed in requests of 1 and of 100
events on the idle databases, the unpartitioned one with BEFORE's landing and the partitioned
one with this tree's, in alternating windows.

The issue's day is 2M rows in 70,000 objects (BENCH_MAINT_ROWS=2000000 BENCH_MAINT_OBJECTS=70000,
about a quarter of an hour here); the default is a tenth of it because the machine is shared.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time
import types
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3

from benchmarks.bench_pipeline import start_big_database
from benchmarks.bench_receiver import process_tree
from benchmarks.figures import Figure
from segment_elt import db
from segment_elt.control import connections, schema
from segment_elt.ingest import landing, partitions
from segment_elt.ingest.archive import ObjectDigest, object_key, open_archive
from segment_elt.local import embedded, samples
from segment_elt.pipeline import maintenance
from tests.helpers import free_port
from tests.s3_stand_in import SlowS3Process

ROWS = int(os.environ.get("BENCH_MAINT_ROWS", "200000"))
OBJECTS = int(os.environ.get("BENCH_MAINT_OBJECTS", "7000"))
ROWS = ROWS // OBJECTS * OBJECTS  # the same number of events in every object
CALL_LATENCY_S = 0.040
RETENTION_DAYS = 30
RATE_SECONDS = 10
HOT_PATH_EVENTS = (1, 100)  # events per request in the before / now landing comparison
# cores of PostgreSQL and the inserting receiver, and of the maintenance task and the S3 stand-in
PIN = os.environ.get("BENCH_MAINT_PIN", "1") == "1" and (os.cpu_count() or 1) >= 2
DATABASE_CORES = {0}
ELSEWHERE_CORES = set(range(1, os.cpu_count() or 1))
BEFORE = os.environ.get("BENCH_MAINT_BEFORE", "580ff1c")
ROOT = Path(__file__).resolve().parents[1]


def _archive_day(conn, stand_in: SlowS3Process, cid: str, org: str, day: dt.datetime) -> dict[str, ObjectDigest]:
    """OBJECTS objects of ROWS/OBJECTS events each (JSON arrays), PUT in parallel, and their rows
    (at migration 12: without the digests recorded at write, which it returns by key)."""
    bucket = "bench-archive"
    os.environ.update(AWS_ENDPOINT_URL=stand_in.endpoint, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench")
    boto3.client("s3", endpoint_url=stand_in.endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
    archive = open_archive(f"s3://{bucket}/raw", timeout_s=30)
    per_object = ROWS // OBJECTS
    step = dt.timedelta(days=1) / OBJECTS

    def put(i: int) -> tuple[str, dt.datetime, ObjectDigest]:
        at = day + i * step
        events = [samples.event("track", user_id=f"u{i % 500}", message_id=f"m-{i}-{e}") for e in range(per_object)]
        body = json.dumps(events).encode()
        key = object_key(archive.prefix, org, cid, at, body)
        return key, at, archive.put(key, body)

    with ThreadPoolExecutor(32) as pool:
        placed = list(pool.map(put, range(OBJECTS)))
    conn.execute(
        """
        insert into raw.segment_events
            (connection_id, org_id, message_id, event_type, received_at, archive_key, payload)
        select %(cid)s, %(org)s, 'm-' || (o - 1) || '-' || (e - 1), 'track', o_at, o_key,
               jsonb_build_object('type', 'track', 'event', 'Report Created', 'userId', 'u' || ((o - 1) %% 500))
        from unnest(%(keys)s::text[], %(ats)s::timestamptz[]) with ordinality as o (o_key, o_at, o),
             generate_series(1, %(per)s) as e
        """,
        {
            "cid": cid,
            "org": org,
            "keys": [k for k, _, _ in placed],
            "ats": [a for _, a, _ in placed],
            "per": per_object,
        },
    )
    # the staging model's copy, with its unique index (dbt_project/models/staging/stg_segment__events.sql)
    conn.execute("create schema if not exists staging")
    conn.execute(
        f"create table {maintenance.STAGING_MODEL} as select connection_id, message_id, received_at"
        " from raw.segment_events"
    )
    conn.execute(f"create unique index on {maintenance.STAGING_MODEL} (connection_id, message_id)")
    conn.execute("vacuum (analyze) raw.segment_events")
    os.environ["ARCHIVE_URL"] = archive.url
    return {key: digest for key, _, digest in placed}


def _record_digests(conn, digests: dict[str, ObjectDigest]) -> None:
    """Give the upgraded copy's rows their objects' size and MD5, as rows landed since migration 14 have."""
    conn.execute(
        "update raw.segment_events as raw set archive_size = d.size, archive_md5 = d.md5"
        " from unnest(%s::text[], %s::bigint[], %s::bytea[]) as d (key, size, md5) where raw.archive_key = d.key",
        (list(digests), [d.size for d in digests.values()], [d.md5 for d in digests.values()]),
    )


def _insert_loop(url: str, cid: str, org: str, revision: str | None, per: int, count, stop) -> None:
    """An InsertRate process: land requests of `per` events one after the other until `stop`; counts events."""
    module = _at_revision(revision, "segment_elt/ingest/landing.py") if revision else landing
    with db.connect(url) as conn:
        n = 0
        while not stop.is_set():
            events = [
                samples.event("track", message_id=f"live-{cid}-{n}-{e}-{time.monotonic_ns()}") for e in range(per)
            ]
            module.insert_events(
                conn,
                connection_id=cid,
                org_id=org,
                text=json.dumps(events[0] if per == 1 else events),
                events=events,
                received_at=dt.datetime.now(dt.UTC),
                archive_key=f"live/{n}.json",
            )
            n += 1
            count.value = n * per


class InsertRate:
    """Single-event inserts as the receiver lands them (with the landing of git revision
    `revision`, default this tree's), from a process of their own as a receiver's are, counted."""

    def __init__(self, url: str, cid: str, org: str, revision: str | None = None, per: int = 1):
        self.url, self.cid, self.org, self.revision, self.per = url, cid, org, revision, per

    def per_second_while(self, work) -> tuple[float, float]:
        """Inserts/s while `work()` runs (or for RATE_SECONDS when it is None), and the seconds it took."""
        spawn = multiprocessing.get_context("spawn")
        count, stop = spawn.Value("q", 0), spawn.Event()
        args = (self.url, self.cid, self.org, self.revision, self.per, count, stop)
        process = spawn.Process(target=_insert_loop, args=args)
        process.start()
        pin(process.pid, DATABASE_CORES)
        while count.value == 0 and process.is_alive():  # started and landing
            time.sleep(0.05)
        began, first = time.monotonic(), count.value
        if work is None:
            time.sleep(RATE_SECONDS)
        else:
            work()
        elapsed, done = time.monotonic() - began, count.value - first
        stop.set()
        process.join()
        return done / elapsed, elapsed


def pin(pid: int, cores: set[int]) -> None:
    """Run the process and its descendants (and what they start later) on `cores` only."""
    if not PIN:
        return
    for process in process_tree(pid):
        threads = Path(f"/proc/{process}/task")
        for task in [int(t.name) for t in threads.iterdir()] if threads.exists() else []:
            with contextlib.suppress(ProcessLookupError):  # ended meanwhile
                os.sched_setaffinity(task, cores)


def postmaster_pid(base: Path) -> int:
    return int((base / "data" / "postmaster.pid").read_text().split()[0])


def _at_revision(revision: str, path: str) -> types.ModuleType:
    """The module at `path` as git revision `revision` has it (imports resolve in this tree)."""
    source = subprocess.run(
        ["git", "show", f"{revision}:{path}"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    name = f"bench_before_{revision}_{Path(path).stem}"
    module = types.ModuleType(name)
    sys.modules[name] = module
    exec(compile(source, f"{revision}:{path}", "exec"), module.__dict__)
    return module


def _before_prune() -> types.ModuleType | None:
    """BEFORE's maintenance module, or None (said in one line) when it is not wanted or not in git."""
    if not BEFORE:
        return None
    try:
        return _at_revision(BEFORE, "segment_elt/pipeline/maintenance.py")
    except (subprocess.CalledProcessError, OSError):
        print(f"BENCH_MAINT_BEFORE={BEFORE!r} is not a revision of this git checkout: measuring now only", flush=True)
        return None


def _measure(url: str, live_cid: str, archive_url: str, stand_in: SlowS3Process, steps, revision: str | None) -> dict:
    """Run steps (name -> fn(conn, archive)) one after the other on one connection while the live
    connection inserts; the seconds of each, of the audit within them, S3 calls, the insert rates.
    With `revision`, its landing and its archive (and so its audit) are used."""
    rate = InsertRate(url, live_cid, "live", revision)
    idle_before, _ = rate.per_second_while(None)
    opener = _at_revision(revision, "segment_elt/ingest/archive.py").open_archive if revision else open_archive
    archive = opener(archive_url, timeout_s=30)
    audit, figures = archive.audit, {"audit_s": 0.0, "load": [os.getloadavg()[0]]}

    def timed_audit(keys: list[str], *recorded_and_counts) -> dict[str, str]:
        began = time.monotonic()
        try:
            return audit(keys, *recorded_and_counts)
        finally:
            figures["audit_s"] += time.monotonic() - began

    archive.audit = timed_audit  # the S3 share of the prune, apart from PostgreSQL's
    reads_before = stand_in.reads

    def maintain() -> None:
        with db.connect(url, timeout_s=3600) as conn:
            for name, step in steps:
                began = time.monotonic()
                figures[name] = step(conn, archive)
                figures[f"{name}_s"] = time.monotonic() - began

    busy_rate, figures["total_s"] = rate.per_second_while(maintain)
    idle_after, _ = rate.per_second_while(None)
    figures["load"].append(os.getloadavg()[0])
    figures.update(idle=(idle_before + idle_after) / 2, busy=busy_rate, calls=stand_in.reads - reads_before)
    return figures


def _alternating(before_url: str, now_url: str, live_cid: str, per: int, rounds: int = 3) -> tuple[float, float]:
    """Idle events/s landed in requests of `per` events with BEFORE's landing on its unpartitioned
    table and with this tree's on the partitioned one (the retention's ~38 day partitions), in
    alternating windows so that the machine's load falls on both alike: their means."""
    rates: dict[str, list[float]] = {"before": [], "now": []}
    for _ in range(rounds):
        rates["before"].append(InsertRate(before_url, live_cid, "live", BEFORE, per).per_second_while(None)[0])
        rates["now"].append(InsertRate(now_url, live_cid, "live", None, per).per_second_while(None)[0])
    return sum(rates["before"]) / rounds, sum(rates["now"]) / rounds


def run() -> list[Figure]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-maintenance-"))
    url = start_big_database(tmp, until=12)  # an install from before partitioning
    stand_in = SlowS3Process(free_port(), 0.0, CALL_LATENCY_S)
    pin(postmaster_pid(tmp / "pg"), DATABASE_CORES)  # with the backends it has and will start
    pin(stand_in.proc.pid, ELSEWHERE_CORES)
    pin(os.getpid(), ELSEWHERE_CORES)  # the maintenance task (an Airflow worker's)
    try:
        with db.connect(url, timeout_s=3600) as conn:
            created = connections.create(conn, "bench", rate_limit=1_000_000)
            live = connections.create(conn, "live", rate_limit=1_000_000)
            day = (dt.datetime.now(dt.UTC) - dt.timedelta(days=RETENTION_DAYS + 5)).replace(
                hour=0, minute=0, second=0, microsecond=0
            )
            began = time.monotonic()
            digests = _archive_day(conn, stand_in, created.connection_id, "bench", day)
            print(f"seeded {ROWS:,} rows in {OBJECTS:,} objects in {time.monotonic() - began:.0f} s", flush=True)
        server = url.rsplit("/", 1)[0]
        with db.connect(f"{server}/template1", timeout_s=3600) as conn:
            conn.execute(f"create database bench_now template {url.rsplit('/', 1)[1]}")
        now_url = f"{server}/bench_now"
        with db.connect(now_url, timeout_s=3600) as conn:
            began = time.monotonic()
            schema.upgrade(conn)
            migration_s = time.monotonic() - began
            _record_digests(conn, digests)
            # the day partitions a live install has: the retention's days (landing probes each)
            today = dt.datetime.now(dt.UTC).date()
            partitions.create_days(conn, today - dt.timedelta(days=RETENTION_DAYS), today)
        print(f"migration 13 over {ROWS:,} rows: {migration_s:.1f} s", flush=True)
        archive_url = os.environ["ARCHIVE_URL"]
        before = None
        old = _before_prune()
        if old is not None:
            before = _measure(
                url,
                live.connection_id,
                archive_url,
                stand_in,
                [
                    ("prune", lambda conn, archive: old.prune(conn, archive, RETENTION_DAYS)),
                    ("vacuum", lambda conn, archive: old.vacuum(conn)),
                ],
                BEFORE,
            )
            print(f"before ({BEFORE}): {before}", flush=True)
            assert before["prune"].deleted_rows == ROWS, before["prune"].as_dict()
        now = _measure(
            now_url,
            live.connection_id,
            archive_url,
            stand_in,
            [
                ("make_partitions", lambda conn, archive: maintenance.make_partitions(conn, RETENTION_DAYS)),
                ("prune", lambda conn, archive: maintenance.prune(conn, archive, RETENTION_DAYS)),
                ("vacuum", lambda conn, archive: maintenance.vacuum(conn)),
            ],
            None,
        )
        print(f"now: {now}", flush=True)
        assert now["prune"].deleted_rows == ROWS and now["prune"].dropped_days >= 1, now["prune"].as_dict()
        if before is not None:
            for per in HOT_PATH_EVENTS:
                now[f"hot_path_{per}"] = _alternating(url, now_url, live.connection_id, per)
                print(f"idle events/s in {per}-event requests, before / now: {now[f'hot_path_{per}']}", flush=True)
    finally:
        stand_in.stop()
        embedded.stop(tmp / "pg")
        shutil.rmtree(tmp, ignore_errors=True)
    return _figures(migration_s, before, now)


def _figures(migration_s: float, before: dict | None, now: dict) -> list[Figure]:
    scale = f"{ROWS:,} rows / {OBJECTS:,} objects"
    full_day = 2_000_000 / ROWS
    total = now["total_s"]

    def side(key: str) -> str:
        if before is None:
            return ""
        return f" (before {before[key]:.1f} s, {before[key] / max(now[key], 1e-9):.1f}x)"

    figures = [
        Figure(f"maintenance ({scale}, S3 40 ms/call): make_partitions + prune + vacuum{side('total_s')}", total, "s"),
        Figure(f"maintenance ({scale}): prune{side('prune_s')}", now["prune_s"], "s"),
        Figure(f"maintenance ({scale}): of the prune, auditing the archive{side('audit_s')}", now["audit_s"], "s"),
        Figure(f"maintenance ({scale}): vacuum{side('vacuum_s')}", now["vacuum_s"], "s"),
        Figure(f"maintenance ({scale}): S3 calls (GET + LIST pages)", now["calls"], "calls"),
        Figure(f"migration 13 of an install with {scale.split(' /')[0]}", migration_s, "s"),
    ]
    if full_day > 1:
        figures.append(
            Figure(
                "maintenance, 2M rows / 70,000 objects extrapolated linearly",
                total * full_day,
                "s",
                "<= 300 s",
                total * full_day <= 300,
            )
        )
    else:
        figures.append(Figure(f"maintenance at {scale}", total, "s", "<= 300 s", total <= 300))
    if before is not None:
        figures.append(
            Figure(
                f"receiver inserts/s, idle database, before (unpartitioned, {BEFORE}'s landing)",
                before["idle"],
                "inserts/s",
            )
        )
        figures.append(
            Figure(
                "receiver inserts/s during maintenance before (ratio to idle)",
                before["busy"],
                f"inserts/s ({before['busy'] / before['idle']:.2f}x; load {_load(before)})",
            )
        )
    figures.append(Figure("receiver inserts/s, idle database, now (partitioned)", now["idle"], "inserts/s"))
    for per in HOT_PATH_EVENTS:
        if f"hot_path_{per}" in now:
            old_rate, new_rate = now[f"hot_path_{per}"]
            figures.append(
                Figure(
                    f"landing events/s idle in {per}-event requests, now (before {old_rate:,.0f}/s),"
                    f" {RATE_SECONDS} s windows alternating x3",
                    new_rate,
                    f"events/s ({new_rate / old_rate:.2f}x)",
                )
            )
    figures.append(
        Figure(
            "receiver inserts/s during maintenance now (ratio to idle)",
            now["busy"],
            f"inserts/s ({now['busy'] / now['idle']:.2f}x; load {_load(now)})",
            ">= 0.9x idle",
            now["busy"] >= 0.9 * now["idle"],
        )
    )
    return figures


def _load(measured: dict) -> str:
    """The machine's 1-minute load average before and after a measurement."""
    return "-".join(f"{load:.1f}" for load in measured["load"])
