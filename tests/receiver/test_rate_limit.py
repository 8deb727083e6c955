"""The per-org cap holds in aggregate across gunicorn workers (a token bucket in PostgreSQL)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from segment_elt.ingest.archive import open_archive, requests_in
from segment_elt.local import samples
from tests.receiver.conftest import make_hook


def archived_requests(archive_url, connection_id):
    archive = open_archive(archive_url)
    return sum(len(requests_in(k, archive.get(k))) for k in archive.list("") if f"connection={connection_id}/" in k)


def burst_is_capped(db, archive_url, hook, cap: int = 600, requests: int = 1000) -> int:
    """Post `requests` single events from 16 clients to an org capped at `cap` per minute and check
    the token bucket's bound (a full minute's cap, plus what it refilled while the burst lasted),
    the 429s' Retry-After, and that exactly what was accepted is staged and archived; returns
    how many were accepted."""
    events = [samples.event("track", user_id=f"u{i}") for i in range(requests)]
    started = time.monotonic()
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(hook.post, events))
    elapsed = time.monotonic() - started
    accepted = [a for a in answers if a.status_code == 200]
    refused = [a for a in answers if a.status_code == 429]
    assert len(accepted) + len(refused) == requests
    assert cap <= len(accepted) <= cap + elapsed * cap / 60 + 1, (len(accepted), elapsed)
    assert all(int(a.headers["Retry-After"]) >= 1 for a in refused)
    staged = db.execute(
        "select count(*) from raw.segment_events where connection_id = %s", (hook.connection_id,)
    ).fetchone()[0]
    assert staged == len(accepted) == archived_requests(archive_url, hook.connection_id)
    return len(accepted)


def test_burst_of_single_events_is_capped_across_workers(db, archive_url, receiver_factory):
    burst_is_capped(db, archive_url, make_hook(db, receiver_factory(workers=3), org="burst", rate_limit=600))


def test_cap_is_shared_by_the_connections_of_an_org(db, archive_url, receiver_factory):
    receiver = receiver_factory()
    first = make_hook(db, receiver, org="shared", rate_limit=4)
    second = make_hook(db, receiver, org="shared")
    assert [first.post(samples.event("track")).status_code for _ in range(3)] == [200] * 3
    assert [second.post(samples.event("track")).status_code for _ in range(2)] == [200, 429]


def test_a_batch_larger_than_the_cap_is_accepted_when_the_bucket_is_full(db, archive_url, receiver_factory):
    hook = make_hook(db, receiver_factory(), org="big", rate_limit=600)
    body, first = samples.batch_body([samples.event("track", user_id=f"u{i}") for i in range(1000)])
    answer = hook.post(body, signed=first)
    assert answer.status_code == 200 and answer.json()["accepted"] == 1000
    after = hook.post(samples.event("track", user_id="late"))
    assert after.status_code == 429
    assert int(after.headers["Retry-After"]) >= 40  # the bucket is 400 events in debt at 10 per second
    staged = db.execute(
        "select count(*) from raw.segment_events where connection_id = %s", (hook.connection_id,)
    ).fetchone()[0]
    assert staged == 1000 and archived_requests(archive_url, hook.connection_id) == 1
