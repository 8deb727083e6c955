"""With PostgreSQL or the S3 server down, requests get 503 fast; after restart the same requests land once."""

from __future__ import annotations

import time

import boto3

from segment_elt.ingest.archive import open_archive
from segment_elt.local import samples
from tests.receiver.conftest import make_hook


def timed(hook, event):
    started = time.monotonic()
    answer = hook.post(event)
    return answer, time.monotonic() - started


def test_database_down_gives_503_then_recovers(db, database_url, archive_url, receiver_factory, pg_server):
    hook = make_hook(db, receiver_factory())
    events = [samples.event("track", user_id=f"u{i}") for i in range(5)]
    assert hook.post(events[0]).status_code == 200  # warm: the connection is cached
    db.close()
    pg_server.stop("fast")
    try:
        for event in events[1:]:
            answer, took = timed(hook, event)
            assert answer.status_code == 503 and took < 10
            assert int(answer.headers["Retry-After"]) >= 1
    finally:
        pg_server.start()
    for event in events:  # Segment retries the same requests
        assert hook.post(event).status_code == 200
    import psycopg

    with psycopg.connect(database_url) as conn:
        rows = conn.execute("select count(*), count(distinct message_id) from raw.segment_events").fetchone()
    assert rows == (5, 5)
    keys = [k for k in open_archive(archive_url).list("") if hook.connection_id in k]
    assert len(keys) >= 5


def test_s3_down_or_stuck_gives_503_then_recovers(db, s3_archive_url, moto_s3, receiver_factory):
    hook = make_hook(db, receiver_factory())
    events = [samples.event("track", user_id=f"u{i}") for i in range(4)]
    assert hook.post(events[0]).status_code == 200
    moto_s3.pause()  # a stuck server: the receiver must give up in time
    try:
        answer, took = timed(hook, events[1])
        assert answer.status_code == 503 and took < 10, took
    finally:
        moto_s3.resume()
    moto_s3.stop()  # a server that is gone
    try:
        answer, took = timed(hook, events[2])
        assert answer.status_code == 503 and took < 10
    finally:
        moto_s3.start()
    bucket = s3_archive_url.split("/")[2]
    boto3.client("s3", endpoint_url=moto_s3.endpoint).create_bucket(Bucket=bucket)  # moto keeps no state
    for event in events[1:]:
        assert hook.post(event).status_code == 200
    staged = db.execute("select count(*), count(distinct message_id) from raw.segment_events").fetchone()
    assert staged == (4, 4)
    keys = [k for k in open_archive(s3_archive_url).list("raw/") if hook.connection_id in k]
    assert len(keys) == 3  # every request accepted since the restart is in the new bucket
