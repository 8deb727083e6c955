"""Suppression through a real receiver: a suppressed person's events are answered 200 and land
nowhere (archive, staging), counted in /metrics and noted in the rejects log; other events of the
same request land byte for byte; unsuppress lands them again; outbound sends nothing about them."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections import Counter

import requests

from segment_elt.control import connections, privacy
from segment_elt.ingest.archive import open_archive, requests_in
from segment_elt.ingest.receiver.backends import SUPPRESSIONS_TTL_S
from segment_elt.outbound import sync
from tests.receiver.conftest import Hook, make_hook
from tests.receiver.test_metrics import scrape

T0 = dt.datetime(2026, 11, 3, 10, 0, tzinfo=dt.UTC)


def event(n: int, user: str) -> dict:
    return {"type": "track", "event": "Report Created", "messageId": f"m-{n}", "userId": user}


def staged(db) -> set[str]:
    return {m for (m,) in db.execute("select message_id from raw.segment_events")}


def archived_text(archive_url: str) -> str:
    archive = open_archive(archive_url)
    return "".join(raw.decode() for key in archive.list("") for _, raw in requests_in(key, archive.get(key)))


def test_suppressed_people_are_accepted_and_land_nowhere_until_unsuppressed(db, archive_url, receiver_factory):
    receiver = receiver_factory(workers=1)
    hook = make_hook(db, receiver, rate_limit=1_000_000)
    privacy.request(db, "acme", privacy.SUPPRESS, ["alice"])

    mixed = b'[{"type":"track","event":"A","messageId":"m-1","userId":"alice"},  {"messageId":"m-2","userId":"bob"}]'
    answers = [hook.post(mixed), hook.post(event(3, "alice")), hook.post([event(4, "alice"), event(5, "bob")])]
    assert [(a.status_code, a.json()) for a in answers] == [
        (200, {"accepted": 2, "duplicates": 0}),
        (200, {"accepted": 1, "duplicates": 0}),
        (200, {"accepted": 2, "duplicates": 0}),
    ]
    key = connections.create(db, "acme").write_key  # the tracking API (Segment's SDKs) too
    tracked = requests.post(receiver.url + "/v1/track", json=event(6, "alice"), auth=(key, ""), timeout=10)
    assert tracked.status_code == 200
    assert staged(db) == {"m-2", "m-5"}
    archived = archived_text(archive_url)
    assert "alice" not in archived and '{"messageId":"m-2","userId":"bob"}' in archived  # bob's bytes as sent

    figures = scrape(receiver.url)
    assert figures[("segment_elt_receiver_suppressed_events_total", ())] == 4
    assert figures[("segment_elt_receiver_events_total", (("outcome", "landed"),))] == 2
    assert figures.get(("segment_elt_receiver_events_total", (("outcome", "duplicate"),)), 0) == 0
    noted = db.execute("select status, reason from control.rejects where connection_id = %s", (hook.connection_id,))
    assert Counter(status for status, _ in noted) == {200: 1}  # folded within a second, like any reject
    assert db.execute("select reason from control.rejects").fetchone()[0].startswith("suppressed: events of suppressed")

    privacy.request(db, "acme", privacy.UNSUPPRESS, ["alice"])
    time.sleep(SUPPRESSIONS_TTL_S + 0.5)
    assert hook.post(event(7, "alice")).json() == {"accepted": 1, "duplicates": 0}
    assert staged(db) == {"m-2", "m-5", "m-7"}
    assert [row["regulation_type"] for row in privacy.status(db, "acme")] == ["UNSUPPRESS", "SUPPRESS"]


def test_outbound_sends_nothing_about_a_suppressed_person(db):
    created = connections.create(db, "acme")
    db.execute("create schema analytics")
    db.execute("create table analytics.outbound_identify (org_id text, user_id text, traits jsonb)")
    db.execute(
        "insert into analytics.outbound_identify values ('acme', 'alice', %s), ('acme', 'bob', %s)",
        (json.dumps({"account_id": "a1"}), json.dumps({"account_id": "a2"})),
    )
    privacy.request(db, "acme", privacy.SUPPRESS_WITH_DELETE, ["alice"])
    plan = sync.changes(db, created.connection_id, "acme")
    assert [item.key for item in plan.todo] == ["bob"]
    assert plan.skipped == {sync.SUPPRESSED: 1}


def test_suppression_matches_the_stitched_anonymous_ids_and_the_email_of_the_person(db, archive_url, receiver_factory):
    """A person is their userId, the anonymousIds stitched to it and (when given) their email:
    an event with only a stitched anonymousId or with that email is not landed; another
    person's is. An anonymousId a suppressed identify links to them afterwards is theirs from
    then on, unless it was first linked to someone else (a shared device)."""
    from tests.privacy.test_erasure import land

    archive = open_archive(archive_url)
    created = connections.create(db, "acme", rate_limit=1_000_000)
    identify = {"type": "identify", "timestamp": "2026-11-03T10:00:00+00:00"}
    before = [
        identify | {"messageId": "m-1", "userId": "alice", "anonymousId": "visitor-1"},
        identify | {"messageId": "m-2", "userId": "bob", "anonymousId": "visitor-2"},
    ]
    land(db, archive, created.connection_id, "acme", T0, [json.dumps(before)])
    privacy.request(db, "acme", privacy.SUPPRESS, ["alice"], email=" Alice@X.io")
    assert privacy.suppressed_counts(db) == [{"org_id": "acme", "suppressed": 1}]  # people, not their ids

    receiver = receiver_factory(workers=1)
    hook = Hook(receiver.webhook(created.connection_id), created.connection_id, "acme", created.secret, receiver)

    def anon(n: int, visitor: str) -> dict:
        return {"type": "track", "event": "Report Created", "messageId": f"m-{n}", "anonymousId": visitor}

    posted = [
        anon(3, "visitor-1"),  # alice's device: stitched to her before the suppression
        anon(4, "visitor-2"),  # bob's
        event(5, "carol") | {"properties": {"email": "alice@x.io "}},  # her email, whoever sends it
        [identify | {"messageId": "m-6", "userId": "alice", "anonymousId": "visitor-3"}, anon(7, "visitor-3")],
        anon(8, "visitor-3"),  # a new device her suppressed identify linked to her
        identify | {"messageId": "m-9", "userId": "alice", "anonymousId": "visitor-2"},  # bob's device
        anon(10, "visitor-2"),  # stays bob's: first linked to him
        event(11, "bob") | {"anonymousId": "visitor-1"},  # a userId decides: bob's event
    ]
    assert all(hook.post(body).status_code == 200 for body in posted)
    assert staged(db) == {"m-1", "m-2", "m-4", "m-10", "m-11"}
    assert scrape(receiver.url)[("segment_elt_receiver_suppressed_events_total", ())] == 6

    privacy.request(db, "acme", privacy.UNSUPPRESS, ["alice"])
    assert db.execute("select count(*) from control.suppressions").fetchone()[0] == 0  # every id of hers


def test_unsuppress_ends_every_suppression_of_the_person(db, archive_url):
    """Suppressed twice (the second time with an email and a newly stitched anonymousId): one
    unsuppress removes every id recorded for them, and nothing of anyone else."""
    from tests.privacy.test_erasure import land

    archive = open_archive(archive_url)
    created = connections.create(db, "acme")
    privacy.request(db, "acme", privacy.SUPPRESS, ["alice", "bob"])
    identify = {"type": "identify", "messageId": "m-1", "userId": "alice", "anonymousId": "visitor-1"}
    land(db, archive, created.connection_id, "acme", T0, [json.dumps(identify)])
    privacy.request(db, "acme", privacy.SUPPRESS_WITH_DELETE, ["alice"], email="alice@x.io")
    kinds = Counter(kind for (kind,) in db.execute("select kind from control.suppressions"))
    assert kinds == {"userId": 2, "anonymousId": 1, "email": 1}
    privacy.request(db, "acme", privacy.UNSUPPRESS, ["alice"])
    assert db.execute("select kind from control.suppressions").fetchall() == [("userId",)]  # bob's
