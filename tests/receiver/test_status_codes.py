"""Every status code of docs/receiver.md, through real HTTP, gunicorn, PostgreSQL and both archives."""

from __future__ import annotations

import json

import requests

from segment_elt.control import connections
from segment_elt.ingest.archive import open_archive, requests_in
from segment_elt.local import samples
from tests.receiver.conftest import make_hook

CALLS = ["track", "page", "screen", "identify", "group", "alias"]


def staged(db, hook):
    return db.execute(
        "select count(*) from raw.segment_events where connection_id = %s", (hook.connection_id,)
    ).fetchone()[0]


def archived(hook, archive_url):
    return [k for k in open_archive(archive_url).list("") if f"connection={hook.connection_id}/" in k]


def test_every_call_type_lands_once_in_staging_and_archive(db, hook, archive):
    for kind in CALLS:
        event = samples.event(kind, user_id="u1", group_id="g1", name="Signed Up", traits={"email": "a@b.test"})
        answer = hook.post(event)
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"accepted": 1, "duplicates": 0}
    rows = db.execute("select event_type, archive_key, payload from raw.segment_events").fetchall()
    assert sorted(r[0] for r in rows) == sorted(CALLS)
    store = open_archive(archive)
    for _, key, payload in rows:
        [(_, body)] = requests_in(key, store.get(key))  # sequential posts: a group of one each
        assert json.loads(body) == payload
        assert key.startswith(
            f"{store.prefix + '/' if store.prefix else ''}org=acme/connection={hook.connection_id}/dt="
        )


def test_retried_request_never_double_counts(db, hook, archive):
    event = samples.event("track", user_id="u1")
    assert hook.post(event).json() == {"accepted": 1, "duplicates": 0}
    assert hook.post(event).json() == {"accepted": 0, "duplicates": 1}
    assert staged(db, hook) == 1
    assert len(archived(hook, archive)) == 2  # every accepted request is archived


def test_batches_signed_whole_or_on_their_first_event(db, hook, archive):
    events = [samples.event(CALLS[i % 6], user_id=f"u{i % 50}", group_id="g1") for i in range(4000)]
    body, first = samples.batch_body(events)
    answer = hook.post(body, signed=first)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"accepted": 4000, "duplicates": 0}
    more = [samples.event("track", user_id="u9") for _ in range(3)]
    body, _ = samples.batch_body(more)
    assert hook.post(body).json() == {"accepted": 3, "duplicates": 0}  # signed over the whole body
    assert staged(db, hook) == 4003


def test_signature_over_another_element_is_refused(db, hook, archive):
    events = [samples.event("track", user_id="u1"), samples.event("track", user_id="u2")]
    body, _ = samples.batch_body(events)
    second = json.dumps(events[1], separators=(",", ":")).encode()
    answer = hook.post(body, signed=second)
    assert answer.status_code == 401
    assert staged(db, hook) == 0 and archived(hook, archive) == []


def test_signature_hex_is_case_insensitive(db, hook, archive):
    body = json.dumps(samples.event("track", user_id="u1")).encode()
    upper = samples.headers(hook.secret, body)["X-Signature"].upper()
    answer = requests.post(hook.url, data=body, headers={"X-Signature": upper, "Content-Type": "application/json"})
    assert answer.status_code == 200


def test_401_for_missing_or_wrong_signature_lands_nothing(db, hook, archive):
    event = samples.event("track", user_id="u1")
    missing = requests.post(hook.url, data=json.dumps(event), headers={"Content-Type": "application/json"})
    assert missing.status_code == 401 and "error" in missing.json()
    assert hook.post(event, secret="wrong").status_code == 401
    assert staged(db, hook) == 0 and archived(hook, archive) == []


def test_400_for_bodies_that_are_not_events(db, hook, archive):
    for body in (b"not json", b'"a string"', b"[1, 2]", b"[]", b'{"type": "track"', b"\xff\xfe{}"):
        answer = hook.post(body)
        assert answer.status_code == 400, (body, answer.text)
        assert answer.json()["error"]
    assert staged(db, hook) == 0 and archived(hook, archive) == []


def test_event_without_message_id_gets_a_deterministic_id(db, hook, archive):
    event = samples.event("track", user_id="u1")
    del event["messageId"]
    assert hook.post(event).json() == {"accepted": 1, "duplicates": 0}
    assert hook.post(event).json() == {"accepted": 0, "duplicates": 1}
    mid = db.execute("select message_id from raw.segment_events").fetchone()[0]
    assert mid.startswith("derived-")


def test_404_for_unknown_and_deleted_connections(db, hook, archive):
    event = samples.event("track", user_id="u1")
    unknown = requests.post(hook.url.rsplit("/", 1)[0] + "/conn_nope", data=json.dumps(event))
    assert unknown.status_code == 404
    assert hook.post(event).status_code == 200
    connections.delete(db, hook.connection_id)
    assert hook.post(samples.event("track", user_id="u2")).status_code == 404  # at once, even cached
    assert staged(db, hook) == 1


def test_413_above_the_configured_maximum(db, archive, receiver_factory):
    small = make_hook(db, receiver_factory(env={"SEGMENT_ELT_MAX_BODY_BYTES": "2000"}))
    big = samples.event("track", user_id="u1", properties={"blob": "x" * 3000})
    answer = small.post(big)
    assert answer.status_code == 413 and "error" in answer.json()
    assert small.post(samples.event("track", user_id="u1")).status_code == 200


def test_429_when_the_org_cap_would_be_exceeded(db, archive, receiver_factory):
    capped = make_hook(db, receiver_factory(), org="tiny", rate_limit=3)
    answers = [capped.post(samples.event("track", user_id=f"u{i}")) for i in range(5)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429, 429]
    assert int(answers[3].headers["Retry-After"]) >= 1
    assert staged(db, capped) == 3


def test_health_and_readiness(hook, archive):
    base = hook.receiver.url
    assert requests.get(f"{base}/healthz").json() == {"status": "ok"}
    assert requests.get(f"{base}/readyz").status_code == 200
