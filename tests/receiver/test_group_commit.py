"""Group commit: concurrent requests of a connection share one archive object, one token take and
one staging statement, and each still gets its own exact answer (docs/receiver.md#group-commit)."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from segment_elt.control import connections
from segment_elt.ingest import landing
from segment_elt.ingest.archive import ArchiveCorrupt, group_object, object_key, open_archive, requests_in
from segment_elt.ingest.receiver import groups
from segment_elt.local import samples
from segment_elt.pipeline import replay
from tests.helpers import free_port
from tests.receiver.conftest import make_hook
from tests.s3_stand_in import SlowS3


def scrape_families(base: str):
    answer = requests.get(base + "/metrics", timeout=10)
    return [sample for family in text_string_to_metric_families(answer.text) for sample in family.samples]


AT = dt.datetime(2026, 12, 1, 10, 30, tzinfo=dt.UTC)


def test_a_group_object_gives_back_each_request_exactly():
    bodies = ['{"type":"track","event":"caf\u00e9 \\u0000"}', '[ {"n":1},\n{"n":2} ]', '{"s":"\\ud800 \U0001f600"}']
    times = [AT + dt.timedelta(microseconds=i * 7) for i in range(3)]
    obj = group_object(list(zip(times, bodies, strict=True)))
    assert requests_in("any/key.json", obj) == [(t, b.encode()) for t, b in zip(times, bodies, strict=True)]


def test_an_object_from_before_group_commit_is_one_request_at_its_key_time():
    body = b'{"type":"track"}'
    key = object_key("", "acme", "c1", AT, body)
    assert requests_in(key, body) == [(AT, body)]


def test_a_damaged_group_object_is_corrupt_not_a_request():
    obj = group_object([(AT, '{"a":1}')])
    with pytest.raises(ArchiveCorrupt):
        requests_in("k.json", obj[:-3])


def staged(db, connection_id):
    return db.execute(
        "select message_id, received_at, archive_key from raw.segment_events"
        " where connection_id = %s order by message_id",
        (connection_id,),
    ).fetchall()


def test_insert_group_answers_each_request_as_if_they_had_landed_one_after_the_other(db):
    created = connections.create(db, "acme")
    cid = created.connection_id
    e1, e2, e3 = (samples.event("track", user_id="u1", name="A") for _ in range(3))
    landing.insert_events(
        db, connection_id=cid, org_id="acme", text=json.dumps(e3), events=[e3], received_at=AT, archive_key="earlier"
    )
    first, second = [e1, e2], [e2, e3]  # e2 twice in the group, e3 staged before
    new = landing.insert_group(
        db,
        connection_id=cid,
        org_id="acme",
        archive_key="group",
        requests=[
            (AT + dt.timedelta(seconds=1), json.dumps(first), first),
            (AT + dt.timedelta(seconds=2), json.dumps(second), second),
        ],
    )
    assert new == [2, 0]
    rows = {mid: (at, key) for mid, at, key in staged(db, cid)}
    assert rows[e1["messageId"]] == rows[e2["messageId"]] == (AT + dt.timedelta(seconds=1), "group")
    assert rows[e3["messageId"]] == (AT, "earlier")


def test_insert_group_lands_a_body_postgres_refuses_through_sanitised_copies(db):
    cid = connections.create(db, "acme").connection_id
    clean, dirty = samples.event("track", user_id="u1"), samples.event("track", user_id="u2", name="nul \u0000 here")
    new = landing.insert_group(
        db,
        connection_id=cid,
        org_id="acme",
        archive_key="group",
        requests=[(AT, json.dumps(clean), [clean]), (AT, json.dumps(dirty), [dirty])],
    )
    assert new == [1, 1]
    stored = db.execute(
        "select payload->>'event' from raw.segment_events where message_id = %s", (dirty["messageId"],)
    ).fetchone()[0]
    assert stored == "nul \ufffd here"


def test_the_receivers_insert_notes_an_object_holding_events_staged_before(db):
    """note_duplicates: the object's key goes to raw.archive_objects_with_duplicates when any of
    its events was staged before (a privacy deletion then reads it), in either insert path."""
    cid = connections.create(db, "acme").connection_id
    staged_before, fresh = samples.event("track", user_id="u1"), samples.event("track", user_id="u2")
    dirty = samples.event("track", user_id="u3", name="nul \u0000 here")

    def land(key: str, events: list[dict]) -> list[int]:
        return landing.insert_group(
            db,
            connection_id=cid,
            org_id="acme",
            archive_key=key,
            requests=[(AT, json.dumps(events), events)],
            note_duplicates=True,
        )

    assert land("first", [staged_before]) == [1]
    assert land("retried", [fresh, staged_before]) == [1]
    assert land("sanitised", [dirty, staged_before]) == [1]
    assert land("all-new", [samples.event("track", user_id="u4")]) == [1]
    noted = {key for (key,) in db.execute("select archive_key from raw.archive_objects_with_duplicates")}
    assert noted == {"retried", "sanitised"}


def test_one_token_take_answers_each_request_of_a_group_in_order(db):
    cid = connections.create(db, "capped", rate_limit=10).connection_id
    takes = db.execute(
        "select n, outcome, retry_after_s from control.take_tokens_each(%s, %s)", (cid, [4, 4, 4, 2])
    ).fetchall()
    assert [(n, outcome) for n, outcome, _ in takes] == [(1, "ok"), (2, "ok"), (3, "limited"), (4, "ok")]
    assert 11 < takes[2][2] < 13  # 2 tokens left of 10/min: 2 more take 12 s
    db.execute("update control.rate_buckets set tokens = 10 where org_id = 'capped'")
    takes = db.execute("select outcome from control.take_tokens_each(%s, %s)", (cid, [25, 1])).fetchall()
    assert takes == [("ok",), ("limited",)]  # a full bucket takes a request larger than the cap, into debt
    db.execute("update control.connections set deleted_at = now() where connection_id = %s", (cid,))
    assert db.execute("select outcome from control.take_tokens_each(%s, %s)", (cid, [1, 1])).fetchall() == [
        ("gone",),
        ("gone",),
    ]


@pytest.fixture
def slow_s3(monkeypatch):
    """The stand-in S3 endpoint, answering PUTs after 300 ms, as the tests' archive."""
    server = SlowS3(free_port(), 0.3).start()
    monkeypatch.setenv("ARCHIVE_URL", "s3://slow/raw")
    monkeypatch.setenv("AWS_ENDPOINT_URL", server.endpoint)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    yield server
    server.shutdown()


def post_all(hook, events, timeout=10):
    def post(event):
        try:
            return hook.post(event).status_code
        except requests.RequestException:
            return None

    with ThreadPoolExecutor(len(events)) as pool:
        return list(pool.map(post, events))


def archived_requests(archive_url: str, connection_id: str) -> list[tuple[dt.datetime, bytes]]:
    archive = open_archive(archive_url)
    found = []
    for key in archive.list(f"raw/org=acme/connection={connection_id}/"):
        found += requests_in(key, archive.get(key))
    return found


def test_concurrent_requests_share_archive_objects_and_each_gets_its_answer(db, slow_s3, receiver_factory):
    hook = make_hook(db, receiver_factory(workers=1), rate_limit=1_000_000)
    events = [samples.event("track", user_id=f"u{i}", name="Report Created") for i in range(40)]
    answers = post_all(hook, events)
    assert answers == [200] * 40
    assert slow_s3.puts <= 10, f"{slow_s3.puts} PUTs for 40 concurrent requests"
    rows = staged(db, hook.connection_id)
    assert sorted(mid for mid, _, _ in rows) == sorted(e["messageId"] for e in events)
    archived = archived_requests("s3://slow/raw", hook.connection_id)
    assert sorted(json.loads(body)["messageId"] for _, body in archived) == sorted(e["messageId"] for e in events)
    times = {json.loads(body)["messageId"]: at for at, body in archived}
    assert all(times[mid] == at for mid, at, _ in rows)  # each request keeps its own receive time
    metrics = {(s.name, s.labels.get("le")): s.value for s in scrape_families(hook.receiver.url)}
    assert metrics[("segment_elt_receiver_group_requests_sum", None)] == 40
    assert metrics[("segment_elt_receiver_group_requests_count", None)] == slow_s3.puts  # one group, one PUT


def test_one_process_holds_many_more_requests_than_threads_while_its_groups_are_written(db, slow_s3, receiver_factory):
    """The webhook path waits for its group on the event loop, not in a thread: with 2 threads and
    one process, 150 requests at once still make a few groups (a request per thread would mean
    2 per group, 75 PUTs at 300 ms each)."""
    hook = make_hook(db, receiver_factory(workers=1, env={"RECEIVER_THREADS": "2"}), rate_limit=1_000_000)
    assert hook.post(samples.event("track", user_id="u0")).status_code == 200  # the connection read once
    puts = slow_s3.puts
    events = [samples.event("track", user_id=f"u{i}", name="Report Created") for i in range(150)]
    assert post_all(hook, events) == [200] * 150
    assert slow_s3.puts - puts <= 15, f"{slow_s3.puts - puts} PUTs for 150 concurrent requests"
    assert len(staged(db, hook.connection_id)) == 151


def test_past_the_queue_limit_a_request_gets_503_lands_nothing_and_its_retry_lands(db, slow_s3, receiver_factory):
    receiver = receiver_factory(workers=1, env={"RECEIVER_QUEUE_MAX_BYTES": "3000", "RECEIVER_GROUP_WRITERS": "1"})
    hook = make_hook(db, receiver, rate_limit=1_000_000)
    assert hook.post(samples.event("track", user_id="u0")).status_code == 200  # the connection is cached
    events = [
        samples.event("track", user_id=f"u{i}", name="Report Created", properties={"pad": "x" * 300}) for i in range(30)
    ]
    answers = post_all(hook, events)
    refused = [e for e, status in zip(events, answers, strict=True) if status == 503]
    assert refused and set(answers) == {200, 503}, answers
    landed = {mid for mid, _, _ in staged(db, hook.connection_id)}
    assert landed.isdisjoint(e["messageId"] for e in refused)
    # Segment's retries, the queue drained: one at a time, as three at once could fill the
    # 3,000 bytes again if they all arrived before the writer took the first
    assert [hook.post(event).status_code for event in refused[:3]] == [200] * 3
    rejects = db.execute(
        "select status, reason from control.rejects where connection_id = %s", (hook.connection_id,)
    ).fetchall()
    assert (503, groups.OVERLOADED) in rejects


def test_a_request_over_the_cap_in_a_group_gets_429_and_lands_nothing(db, slow_s3, receiver_factory):
    hook = make_hook(db, receiver_factory(workers=1), rate_limit=5)
    events = [samples.event("track", user_id=f"u{i}", name="Report Created") for i in range(12)]
    answers = post_all(hook, events)
    assert sorted(answers) == [200] * 5 + [429] * 7
    landed = {e["messageId"] for e, status in zip(events, answers, strict=True) if status == 200}
    assert {mid for mid, _, _ in staged(db, hook.connection_id)} == landed
    assert {json.loads(b)["messageId"] for _, b in archived_requests("s3://slow/raw", hook.connection_id)} == landed


def test_a_worker_killed_with_a_group_in_flight_loses_nothing_and_double_counts_nothing(db, slow_s3, receiver_factory):
    slow_s3.put_delay_s = 1.5
    receiver = receiver_factory(workers=1)
    hook = make_hook(db, receiver, rate_limit=1_000_000)
    events = [samples.event("track", user_id=f"u{i}", name="Report Created") for i in range(20)]
    first: list = []
    sender = threading.Thread(target=lambda: first.extend(post_all(hook, events)))
    sender.start()
    time.sleep(0.8)  # the group's PUT is under way
    [worker] = receiver.worker_pids()
    os.kill(worker, signal.SIGKILL)
    sender.join()
    assert 200 not in first  # nobody was answered before the group was written
    slow_s3.put_delay_s = 0.01
    deadline = time.monotonic() + 30
    pending = [e for e, status in zip(events, first, strict=True) if status != 200]
    while pending:  # Segment retries what got no 2xx
        assert time.monotonic() < deadline, "the restarted worker does not accept the retries"
        pending = [e for e, status in zip(pending, post_all(hook, pending), strict=True) if status != 200]
    rows = staged(db, hook.connection_id)
    assert sorted(mid for mid, _, _ in rows) == sorted(e["messageId"] for e in events)  # each exactly once
    with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as conn:
        again = replay.replay(
            conn,
            open_archive("s3://slow/raw"),
            hook.connection_id,
            "acme",
            *[dt.datetime.now(dt.UTC).date()] * 2,
        )
    assert again.new == 0  # whatever the killed group wrote to the archive re-lands as duplicates
    assert len(staged(db, hook.connection_id)) == 20
