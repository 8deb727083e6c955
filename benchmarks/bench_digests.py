"""Recorded digests: what retention's audit gains, and what landing pays for them.

- The audit of OBJECTS archive objects (the issue's day: 70,000, one connection over 24 hour
  prefixes) on the S3 stand-in answering every GET and LIST page after 40 ms (tests/s3_stand_in.py,
  in its own process), in batches of 1,000 as segment_maintenance's prune calls it: today's
  audit before recorded digests (each batch lists its hour prefixes in full and reads a sample of
  10 objects back, kept below as the baseline) beside the audit against recorded sizes and MD5s
  (a listing per 1,000 keys, nothing read back), and the latter in one call for the whole day (as
  a prune by partition may call it). S3 calls counted by the stand-in.
- The receiver's staging insert (landing.insert_group, groups of GROUP requests, each group its own
  commit) with the digest columns beside the same statement without them on a schema before
  migration 14, one of each in turn on one PostgreSQL (median per group); and the bytes of a
  staged row.
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import math
import os
import random
import shutil
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from unittest import mock

import psycopg

from benchmarks.figures import Figure
from segment_elt.control import connections, schema
from segment_elt.ingest import landing
from segment_elt.ingest.archive import (
    AUDIT_CALLS_AT_ONCE,
    ArchiveCorrupt,
    ObjectDigest,
    group_object,
    object_key,
    open_archive,
    verify_body,
)
from segment_elt.local import embedded, samples
from tests.helpers import free_port
from tests.s3_stand_in import SlowS3Process

OBJECTS = int(os.environ.get("BENCH_DIGEST_OBJECTS", "70000"))
CALL_LATENCY_S = 0.040
BATCH = 1000  # keys per audit call, as maintenance.prune batches them
GROUP = 8  # requests per group commit (docs/receiver.md#sizing: ~7.5 at 1,000 requests/s)
GROUPS = int(os.environ.get("BENCH_DIGEST_GROUPS", "1500"))  # of each kind, per commit mode
BUCKET = "bench-audit"


def audit_as_before(archive, keys: list[str]) -> dict[str, str]:
    """The audit before digests were recorded (S3Archive.audit until migration 14), the baseline:
    list every hour prefix of the batch in full, read back a random sample of 10 against the keys'
    digests (all of them when one does not match), 16 calls at a time."""

    def corruption(key: str) -> tuple[str, str] | None:
        try:
            verify_body(key, archive.get(key))
        except ArchiveCorrupt as exc:
            return key, f"corrupt: {exc}"
        return None

    with ThreadPoolExecutor(AUDIT_CALLS_AT_ONCE) as pool:
        listed: set[str] = set()
        hour_prefixes = sorted({key.rsplit("/", 1)[0] + "/" for key in keys})
        for found_keys in pool.map(lambda prefix: list(archive.list(prefix)), hour_prefixes):
            listed.update(found_keys)
        problems = {key: "missing" for key in keys if key not in listed}
        present = [key for key in keys if key in listed]
        for keys_to_read in (random.sample(present, min(10, len(present))), present):
            found = dict(problem for problem in pool.map(corruption, keys_to_read) if problem)
            problems.update(found)
            if not found:
                break
    return problems


def _seed(stand_in: SlowS3Process, day: dt.datetime) -> dict[str, ObjectDigest]:
    """OBJECTS objects of one request each over the day, PUT straight to the stand-in (plain HTTP:
    boto3 would take minutes to sign 70,000 PUTs); their keys and what each put wrote."""
    archive = open_archive(f"s3://{BUCKET}/raw")
    port = int(stand_in.endpoint.rsplit(":", 1)[1])
    step = dt.timedelta(days=1) / OBJECTS

    def put(indexes: range) -> dict[str, ObjectDigest]:
        client, written = http.client.HTTPConnection("127.0.0.1", port, timeout=30), {}
        for i in indexes:
            at = day + i * step
            event = samples.event("track", user_id=f"u{i % 500}", message_id=f"m-{i}")
            body = group_object([(at, json.dumps(event))])
            key = object_key(archive.prefix, "bench", "conn_bench", at, body)
            client.request("PUT", f"/{BUCKET}/{key}", body=body)
            client.getresponse().read()
            written[key] = ObjectDigest.of(body)
        client.close()
        return written

    recorded: dict[str, ObjectDigest] = {}
    with ThreadPoolExecutor(8) as pool:
        for found in pool.map(put, [range(n, OBJECTS, 8) for n in range(8)]):
            recorded.update(found)
    return recorded


def _audits() -> list[Figure]:
    stand_in = SlowS3Process(free_port(), 0.0, CALL_LATENCY_S)
    saved = {k: os.environ.get(k) for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    os.environ.update(AWS_ENDPOINT_URL=stand_in.endpoint, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench")
    try:
        began = time.monotonic()
        recorded = _seed(stand_in, dt.datetime(2026, 10, 1, tzinfo=dt.UTC))
        print(f"seeded {OBJECTS:,} objects in {time.monotonic() - began:.0f} s", flush=True)
        archive = open_archive(f"s3://{BUCKET}/raw", timeout_s=30)
        archive.check()  # the client, made once before the clocks start
        keys = sorted(recorded)
        batches = [keys[i : i + BATCH] for i in range(0, len(keys), BATCH)]
        ways = {
            "today (listing + 10 read back per 1,000)": lambda: [audit_as_before(archive, b) for b in batches],
            "recorded size + MD5, batches of 1,000": lambda: [archive.audit(b, recorded) for b in batches],
            "recorded size + MD5, one call for the day": lambda: [archive.audit(keys, recorded)],
        }
        measured = {}
        for way, audit in ways.items():
            calls, began = stand_in.reads, time.monotonic()
            problems = [p for found in audit() for p in found]
            measured[way] = (time.monotonic() - began, stand_in.reads - calls)
            assert not problems, problems[:3]
            print(f"audit, {way}: {measured[way][0]:.1f} s, {measured[way][1]:,} calls", flush=True)
    finally:
        stand_in.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    today_s = measured["today (listing + 10 read back per 1,000)"][0]
    figures = []
    for way, (seconds, calls) in measured.items():
        ratio = f" ({today_s / seconds:.1f}x faster than today)" if not way.startswith("today") else ""
        figures.append(Figure(f"audit of {OBJECTS:,} S3 objects, 40 ms/call, {way}", seconds, f"s{ratio}"))
        figures.append(Figure(f"  S3 calls (GET + LIST pages), {way}", calls, "calls"))
    return figures


def _requests(tag: str, g: int) -> list[tuple[dt.datetime, str, list[dict]]]:
    """A group of GROUP single-event requests, realistic events (samples.event)."""
    requests = []
    for r in range(GROUP):
        event = samples.event("track", user_id=f"u{r}", message_id=f"{tag}-{g}-{r}")
        requests.append((dt.datetime.now(dt.UTC), json.dumps(event), [event]))
    return requests


def _inserts(tmp: Path) -> list[Figure]:
    """Group inserts with the digest columns (latest schema) and without (before migration 14),
    one of each in turn (the order alternating) so that the machine's other load hits both alike;
    durable commits as the receiver's, then with synchronous_commit off (the statement's own cost).
    Figures are medians per group, and the median ratio of each pair: on a shared machine the
    means are the other work's stalls."""
    url = embedded.start(tmp / "pg", server_port=embedded.free_port())
    statements = {
        "with": landing._INSERT_GROUP,
        "without": landing._INSERT_GROUP.replace(", archive_size, archive_md5", "").replace(
            ", %(archive_size)s, %(archive_md5)s", ""
        ),
    }
    assert "archive_size" not in statements["without"], "the baseline statement no longer matches landing's"
    databases = {}
    for name, migrations in (("with", schema.MIGRATIONS), ("without", [m for m in schema.MIGRATIONS if m[0] < 14])):
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'create database "{name}"')
        conn = psycopg.connect(embedded.url(tmp / "pg", name), autocommit=True)
        with mock.patch.object(schema, "MIGRATIONS", migrations):
            schema.upgrade(conn)
        databases[name] = (conn, connections.create(conn, "bench", rate_limit=1_000_000).connection_id)
    digest = ObjectDigest(24_000, bytes(range(16)))
    seconds: dict[tuple[str, str], list[float]] = {(c, name): [] for c in ("durable", "async") for name in databases}
    try:
        for commit in ("durable", "async"):
            for conn, _ in databases.values():
                conn.execute(f"set synchronous_commit = {'on' if commit == 'durable' else 'off'}")
            for g in range(GROUPS):
                for name in ("with", "without") if g % 2 == 0 else ("without", "with"):
                    conn, cid = databases[name]
                    requests = _requests(commit[0] + name[:2], g)  # ids of the same length in both
                    with mock.patch.object(landing, "_INSERT_GROUP", statements[name]):
                        began = time.perf_counter()
                        landing.insert_group(
                            conn,
                            connection_id=cid,
                            org_id="bench",
                            archive_key=f"raw/{commit[0]}{name[:2]}/{g:06}.json",
                            requests=requests,
                            archive_digest=digest if name == "with" else None,
                        )
                        seconds[commit, name].append(time.perf_counter() - began)
        row_bytes = {
            name: conn.execute(
                "select avg(pg_column_size(events.*))::float from raw.segment_events as events"
            ).fetchone()[0]
            for name, (conn, _) in databases.items()
        }
    finally:
        for conn, _ in databases.values():
            conn.close()
        embedded.stop(tmp / "pg")
    figures = []
    for commit, label in (("durable", "durable commits"), ("async", "synchronous_commit off")):
        us = {name: statistics.median(seconds[commit, name]) * 1e6 for name in databases}
        # each group with the columns over the one without beside it (the drift of the load cancels),
        # per order of the pair (which of the two goes first moves the ratio by up to 10% on a
        # shared machine), and the geometric mean of the two orders' medians
        pairs = [a / b for a, b in zip(seconds[commit, "with"], seconds[commit, "without"], strict=True)]
        ratio = math.sqrt(statistics.median(pairs[0::2]) * statistics.median(pairs[1::2]))
        figures += [
            Figure(f"staging insert, groups of {GROUP}, {label}: without digest columns", us["without"], "µs/group"),
            Figure(
                f"staging insert, groups of {GROUP}, {label}: with archive_size + archive_md5",
                us["with"],
                f"µs/group (ratio of pairs {ratio:.2f}x)",
                "<= 1.05x" if commit == "durable" else "",
                ratio <= 1.05 if commit == "durable" else None,
            ),
        ]
    added = row_bytes["with"] - row_bytes["without"]
    figures.append(
        Figure(
            "  bytes per staged row (pg_column_size), with digest columns", row_bytes["with"], f"bytes (+{added:.0f})"
        )
    )
    return figures


def run() -> list[Figure]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-digests-"))
    try:
        return _inserts(tmp) + _audits()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
