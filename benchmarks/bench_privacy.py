"""Privacy figure: deleting PEOPLE people (one `privacy delete` batch) from an archive of EVENTS
events in OBJECTS group objects, all of them staged and modelled, on the embedded PostgreSQL and
the S3 stand-in answering every call (GET, LIST page, PUT, DELETE) after 40 ms (tests/s3_stand_in.py,
a realistic in-region call; boto3 against it, as against S3).

The issue's size is 1,000 people from 1M events in 100,000 objects:

    BENCH_PRIVACY_EVENTS=1000000 BENCH_PRIVACY_OBJECTS=100000 python -m benchmarks privacy

`make bench` runs a tenth of it (100,000 events, 10,000 objects, 1,000 people): the full size
takes ~18 minutes on 2 shared cores (10 of them the deletion). Events belong to USERS
userIds drawn at random, so each deleted person has ~EVENTS/USERS events spread over as many
objects. The run is timed per step (erasure.run's `seconds`): finding the objects that can hold
the people (one listing and the staged rows' archive keys), the archive (reading those objects,
rewriting the ones holding the people, re-pointing staged rows), the rest of the stores, and the
rebuild of every model downstream of staging (dbt). Reading every object, as the erasure did
before, is timed on a sample and scaled.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
import requests

from benchmarks.bench_pipeline import start_big_database
from benchmarks.figures import Figure
from segment_elt import db
from segment_elt.control import connections, privacy
from segment_elt.ingest import landing
from segment_elt.ingest.archive import group_object, object_key, open_archive, requests_in
from segment_elt.local import embedded
from segment_elt.pipeline import erasure
from segment_elt.pipeline.transform import run_dbt
from tests.helpers import free_port
from tests.s3_stand_in import SlowS3Process

EVENTS = int(os.environ.get("BENCH_PRIVACY_EVENTS", "100000"))
OBJECTS = int(os.environ.get("BENCH_PRIVACY_OBJECTS", "10000"))
PEOPLE = int(os.environ.get("BENCH_PRIVACY_PEOPLE", "1000"))
USERS = max(PEOPLE * 20, 1000)
REQUESTS_PER_OBJECT = 2
CALL_LATENCY_S = 0.040
READ_SAMPLE = 5000  # objects read to time a read of every one
BUCKET = "bench-privacy"
LIMIT_S = 3600


def _objects(org_id: str, connection_id: str):
    """(key, body, rows) of each archive object, rows as raw.segment_events holds them."""
    rng = random.Random(25)
    per_request = max(1, EVENTS // OBJECTS // REQUESTS_PER_OBJECT)
    start = dt.datetime.now(dt.UTC) - dt.timedelta(days=20)
    n = 0
    for o in range(OBJECTS):
        at = start + dt.timedelta(seconds=o * 20 * 86400 / OBJECTS)
        requests_ = []
        for r in range(REQUESTS_PER_OBJECT):
            events = []
            for _ in range(per_request):
                n += 1
                events.append(
                    {
                        "type": "track",
                        "event": "Report Created",
                        "messageId": f"m-{n}",
                        "userId": f"u{rng.randrange(USERS)}",
                        "timestamp": at.isoformat(),
                        "properties": {"plan": "pro"},
                    }
                )
            requests_.append((at + dt.timedelta(milliseconds=r), json.dumps(events), events))
        body = group_object([(when, text) for when, text, _ in requests_])
        key = object_key("raw", org_id, connection_id, at, body)
        rows = [
            (connection_id, org_id, event["messageId"], "track", when, key, json.dumps(event))
            for when, _, events in requests_
            for event in events
        ]
        yield key, body, rows


def _land(url: str, endpoint: str, created) -> None:
    """PUT every object (32 at once, plain HTTP: the stand-in checks no signature) and COPY its rows."""
    session = requests.Session()
    session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=32))

    def put(item) -> list:
        key, body, rows = item
        session.put(f"{endpoint}/{BUCKET}/{key}", data=body, timeout=60).raise_for_status()
        return rows

    with db.connect(url, timeout_s=7200) as conn, ThreadPoolExecutor(32) as pool:
        with conn.cursor().copy(
            "copy raw.segment_events (connection_id, org_id, message_id, event_type, received_at, archive_key,"
            " payload) from stdin"
        ) as copy:
            for rows in pool.map(put, _objects(created.org_id, created.connection_id)):
                for row in rows:
                    copy.write_row(row)
        conn.execute("analyze raw.segment_events")


def _read_every_object_s(archive, keys: list[str]) -> float:
    """A read of every object as the erasure did before (erasure.ARCHIVE_THREADS at once), timed on a sample."""
    sample = keys[:: max(1, len(keys) // READ_SAMPLE)]

    def read(key: str) -> None:
        for _, raw in requests_in(key, archive.get(key)):
            landing.parse_body(raw)

    started = time.monotonic()
    with ThreadPoolExecutor(erasure.ARCHIVE_THREADS) as pool:
        list(pool.map(read, sample))
    return (time.monotonic() - started) * len(keys) / len(sample)


def run() -> list[Figure]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-privacy-"))
    stand_in = SlowS3Process(free_port(), CALL_LATENCY_S, CALL_LATENCY_S)
    os.environ.update(
        SEGMENT_ELT_LOCAL_DIR=str(tmp),
        ARCHIVE_URL=f"s3://{BUCKET}/raw",
        AWS_ENDPOINT_URL=stand_in.endpoint,
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_DEFAULT_REGION="us-east-1",
    )
    os.environ.setdefault("SEGMENT_ELT_FERNET_KEY", "Y2hhbmdlLW1lLWNoYW5nZS1tZS1jaGFuZ2UtbWUtMTI=")
    try:
        boto3.client("s3", endpoint_url=stand_in.endpoint).create_bucket(Bucket=BUCKET)
        url = start_big_database(tmp)
        os.environ["DATABASE_URL"] = url
        archive = open_archive(os.environ["ARCHIVE_URL"], timeout_s=60)
        started = time.monotonic()
        with db.connect(url) as conn:
            created = connections.create(conn, "bench")
            connections.allowlist(conn, created.connection_id, add=["Report Created"])
        _land(url, stand_in.endpoint, created)
        run_dbt(["build"], url)
        loaded_s = time.monotonic() - started
        keys = list(archive.list("raw/"))
        read_all_s = _read_every_object_s(archive, keys)

        seconds: dict[str, float] = {}
        with db.connect(url, timeout_s=7200) as conn:
            privacy.request(conn, "bench", privacy.DELETE_ONLY, [f"u{i}" for i in range(PEOPLE)])
            reads_before = stand_in.reads
            started = time.monotonic()
            erasure.run(conn, archive, seconds=seconds)
            total_s = time.monotonic() - started
            reads = stand_in.reads - reads_before
            counts = conn.execute(
                "select sum((counts->>'archive_events')::bigint), sum((counts->>'raw_rows')::bigint)"
                " from control.regulations"
            ).fetchone()
            left = conn.execute("select count(*) from raw.segment_events").fetchone()[0]
            now_named = {key for (key,) in conn.execute("select distinct archive_key from raw.segment_events")}
            rewritten = len(now_named - set(keys))
    finally:
        embedded.stop(tmp / "pg", "immediate")
        stand_in.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print(
        f"privacy: {PEOPLE} people of {USERS} deleted from {EVENTS:,} events in {len(keys):,} objects on the S3 "
        f"stand-in (+{CALL_LATENCY_S * 1000:.0f} ms per call; loaded and modelled in {loaded_s:.0f} s): "
        f"{counts[0]:,} archive events and {counts[1]:,} staged rows removed, {left:,} staged rows left, "
        f"{rewritten:,} objects rewritten, {reads:,} GETs and LIST pages; seconds per step "
        f"{ {step: round(took, 1) for step, took in seconds.items()} } (a read of every object: ~{read_all_s:.0f}), "
        f"total {total_s:.0f} s"
    )
    size = f"{PEOPLE:,} people from {EVENTS:,} events in {len(keys):,} objects"
    return [
        Figure(
            f"privacy delete, {size} (S3 stand-in +40 ms), wall time",
            total_s,
            "s",
            f"<= {LIMIT_S} s",
            total_s <= LIMIT_S,
        ),
        Figure("  list the org's archive objects", seconds.get("list", 0.0), "s"),
        Figure(
            "  find the objects that can hold the people: staged rows and their archive keys",
            seconds.get("find", 0.0),
            "s",
        ),
        Figure("  identify: the anonymousIds stitched to the people", seconds["identify"], "s"),
        Figure(
            "  archive: read the objects found, rewrite those holding the people, re-point rows",
            seconds["archive"],
            "s",
        ),
        Figure("    objects read (GETs and LIST pages) / objects in the archive", reads / len(keys) * 100, "%"),
        Figure("    reading every object instead (the erasure before; timed on a sample)", read_all_s, "s"),
        Figure(
            "  staged rows left over, staging model, rejects log, outbound record",
            seconds["raw"] + seconds["staging_and_control"],
            "s",
        ),
        Figure("  rebuild of every model downstream of staging", seconds["rebuild"], "s"),
        Figure("  the rest: recording the regulations' states and counts", total_s - sum(seconds.values()), "s"),
    ]
