"""Privacy figure: deleting PEOPLE people (one `privacy delete` batch) from an archive of EVENTS
events in OBJECTS group objects, all of them staged and modelled, on the embedded PostgreSQL and a
file:// archive. The issue's size is 1,000 people, 1M events, 100,000 objects (the defaults);
BENCH_PRIVACY_EVENTS / BENCH_PRIVACY_OBJECTS / BENCH_PRIVACY_PEOPLE scale it down. Events belong to
USERS userIds drawn at random, so each deleted person has ~EVENTS/USERS events spread over many
objects. The run is timed per step (erasure.run's `seconds`): the archive (reading every object,
rewriting those holding the people, re-pointing staged rows), the rest of the stores, and the
rebuild of every model downstream of staging (dbt); a plain read of every object (no deletion)
is timed too, to show how much of the archive step is reading."""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import shutil
import tempfile
import time
from pathlib import Path

from benchmarks.figures import Figure
from segment_elt import db
from segment_elt.control import connections, privacy, schema
from segment_elt.ingest import landing
from segment_elt.ingest.archive import group_object, object_key, open_archive, requests_in
from segment_elt.local import embedded
from segment_elt.pipeline import erasure
from segment_elt.pipeline.transform import run_dbt

EVENTS = int(os.environ.get("BENCH_PRIVACY_EVENTS", "1000000"))
OBJECTS = int(os.environ.get("BENCH_PRIVACY_OBJECTS", "100000"))
PEOPLE = int(os.environ.get("BENCH_PRIVACY_PEOPLE", "1000"))
USERS = max(PEOPLE * 20, 1000)
REQUESTS_PER_OBJECT = 2
LIMIT_S = 3600


def _land(conn, archive, created) -> None:
    rng = random.Random(25)
    per_request = max(1, EVENTS // OBJECTS // REQUESTS_PER_OBJECT)
    start = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
    n = 0
    for o in range(OBJECTS):
        at = start + dt.timedelta(seconds=o * 30 * 86400 / OBJECTS)
        requests = []
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
            requests.append((at + dt.timedelta(milliseconds=r), json.dumps(events), events))
        body = group_object([(when, text) for when, text, _ in requests])
        key = object_key(archive.prefix, created.org_id, created.connection_id, at, body)
        archive.put(key, body)
        if o % 1000 == 0:  # one commit per 1,000 objects: loading is not what is measured
            if o:
                conn.execute("commit")
            conn.execute("begin")
        landing.insert_group(
            conn, connection_id=created.connection_id, org_id=created.org_id, archive_key=key, requests=requests
        )
    conn.execute("commit")


def run() -> list[Figure]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-privacy-"))
    os.environ.update(SEGMENT_ELT_LOCAL_DIR=str(tmp), ARCHIVE_URL=(tmp / "archive").as_uri())
    os.environ.setdefault("SEGMENT_ELT_FERNET_KEY", "Y2hhbmdlLW1lLWNoYW5nZS1tZS1jaGFuZ2UtbWUtMTI=")
    try:
        url = embedded.start(tmp / "pg", server_port=embedded.free_port())
        os.environ["DATABASE_URL"] = url
        archive = open_archive(os.environ["ARCHIVE_URL"])
        started = time.monotonic()
        with db.connect(url, timeout_s=7200) as conn:
            schema.upgrade(conn)
            created = connections.create(conn, "bench")
            connections.allowlist(conn, created.connection_id, add=["Report Created"])
            _land(conn, archive, created)
        run_dbt(["build"], url)
        loaded_s = time.monotonic() - started

        started = time.monotonic()
        objects = 0
        for key in archive.list(""):
            for _, raw in requests_in(key, archive.get(key)):
                landing.parse_body(raw)
            objects += 1
        read_s = time.monotonic() - started

        seconds: dict[str, float] = {}
        with db.connect(url, timeout_s=7200) as conn:
            privacy.request(conn, "bench", privacy.DELETE_ONLY, [f"u{i}" for i in range(PEOPLE)])
            started = time.monotonic()
            erasure.run(conn, archive, seconds=seconds)
            total_s = time.monotonic() - started
            counts = conn.execute(
                "select sum((counts->>'archive_events')::bigint), sum((counts->>'archive_objects')::bigint)"
                " from control.regulations"
            ).fetchone()
            left = conn.execute("select count(*) from raw.segment_events").fetchone()[0]
    finally:
        embedded.stop(tmp / "pg", "immediate")
        shutil.rmtree(tmp, ignore_errors=True)
    print(
        f"privacy: {PEOPLE} people of {USERS} deleted from {EVENTS:,} events in {objects:,} objects (loaded and "
        f"modelled in {loaded_s:.0f} s): {counts[0]:,} events removed, {left:,} staged rows left; seconds per step "
        f"{ {step: round(took, 1) for step, took in seconds.items()} } (a plain read of every object: {read_s:.1f}), "
        f"total {total_s:.0f} s"
    )
    return [
        Figure(
            f"privacy delete, {PEOPLE:,} people from {EVENTS:,} events in {objects:,} archive objects, wall time",
            total_s,
            "s",
            f"<= {LIMIT_S} s",
            total_s <= LIMIT_S,
        ),
        Figure(
            "  archive: read every object, rewrite those holding the people, re-point staged rows",
            seconds["archive"],
            "s",
        ),
        Figure("    a plain read of every object (measured apart)", read_s, "s"),
        Figure("  identify: the anonymousIds stitched to the people", seconds["identify"], "s"),
        Figure(
            "  staged rows left over, staging model, rejects log, outbound record",
            seconds["raw"] + seconds["staging_and_control"],
            "s",
        ),
        Figure("  the rest: recording the regulations' states and counts", total_s - sum(seconds.values()), "s"),
        Figure("  rebuild of every model downstream of staging", seconds["rebuild"], "s"),
        Figure("  archive objects rewritten, counted once per person in them", counts[1] or 0, "objects"),
    ]
