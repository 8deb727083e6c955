"""Segment's tracking API on the receiver (/v1/track ... /v1/batch), through a real gunicorn: write key
auth, Segment's normalisation (type, context, receivedAt, clock skew), Segment's limits and answers,
gzip, CORS, and hostile inputs refused with Segment's 400 shape, landing nothing."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from segment_elt.control import connections
from segment_elt.ingest.archive import open_archive
from segment_elt.pipeline import replay

CLI = str(Path(sys.executable).parent / "segment-elt")
SENT_AT = "2026-01-01T12:00:10.000Z"  # by the client's clock, which is far off: only differences count


@pytest.fixture
def api(db, archive_url, receiver_factory):
    receiver = receiver_factory(workers=1)
    created = connections.create(db, "acme", rate_limit=1_000_000)
    return receiver.url, created


def post(url: str, path: str, payload, key: str | None = None, headers: dict | None = None) -> requests.Response:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return requests.post(url + path, data=body, auth=(key, "") if key else None, headers=headers or {}, timeout=30)


def staged(db, connection_id: str) -> list[dict]:
    return [
        r[0]
        for r in db.execute(
            "select payload from raw.segment_events where connection_id = %s order by payload->>'messageId'",
            (connection_id,),
        )
    ]


def rejected(db, connection_id: str) -> list[tuple]:
    return db.execute(
        "select status, reason from control.rejects where connection_id = %s order by rejected_at", (connection_id,)
    ).fetchall()


def instant(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_calls_and_batches_land_normalised_as_segment_delivers_them(api, db):
    url, created = api
    key, cid = created.write_key, created.connection_id
    answer = post(
        url,
        "/v1/track",
        {
            "userId": "u1",
            "event": "Report Created",
            "messageId": "m-track",
            "timestamp": "2026-01-01T12:00:00.000Z",
            "sentAt": SENT_AT,
            "properties": {"rows": 3},
        },
        key,
    )
    assert answer.status_code == 200 and answer.json() == {"success": True}
    batch = {
        "batch": [
            {
                "type": "identify",
                "userId": "u1",
                "traits": {"email": "a@x.io"},
                "messageId": "m-id",
                "timestamp": "2026-01-01T12:00:05.000Z",
                "context": {"locale": "fr"},
            },
            {"type": "page", "anonymousId": "anon-1", "name": "Home", "timestamp": "2026-01-01T12:00:06.000Z"},
        ],
        "context": {"library": {"name": "test"}, "locale": "en"},
        "sentAt": SENT_AT,
    }
    assert post(url, "/v1/batch", batch, key).json() == {"success": True}
    # the short forms, the body's writeKey (the browser's form), and a gzip body
    assert post(url, "/v1/i", {"userId": "u2", "writeKey": key, "messageId": "m-short"}).status_code == 200
    zipped = gzip.compress(json.dumps({"userId": "u3", "groupId": "g1", "messageId": "m-gz"}).encode())
    assert post(url, "/v1/g", zipped, key, {"Content-Encoding": "gzip"}).json() == {"success": True}

    rows = {r["messageId"]: r for r in staged(db, cid)}
    assert len(rows) == 5
    track = rows["m-track"]
    assert track["type"] == "track" and track["properties"] == {"rows": 3}
    received = instant(track["receivedAt"])
    assert abs(received - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=1)
    # clock skew: the event happened 10 s before it was sent, so 10 s before it was received
    assert instant(track["timestamp"]) == received - dt.timedelta(seconds=10)
    assert track["originalTimestamp"] == "2026-01-01T12:00:00.000Z" and track["sentAt"] == SENT_AT
    identify = rows["m-id"]
    assert identify["context"] == {"library": {"name": "test"}, "locale": "fr"}  # the event's own keys win
    assert instant(identify["timestamp"]) == instant(identify["receivedAt"]) - dt.timedelta(seconds=5)
    page = next(r for r in rows.values() if r["type"] == "page")
    assert page["messageId"].startswith("derived-") and page["context"]["locale"] == "en"
    assert rows["m-short"]["type"] == "identify" and "writeKey" not in rows["m-short"]
    assert rows["m-gz"]["type"] == "group"

    # a retried batch (the SDKs retry on timeouts) lands nothing twice, derived ids included
    assert post(url, "/v1/batch", batch, key).status_code == 200
    assert len(staged(db, cid)) == 5

    # the archive holds the normalised events: a replay of it gives the same rows
    before = staged(db, cid)
    db.execute("delete from raw.segment_events where connection_id = %s", (cid,))
    today = dt.datetime.now(dt.UTC).date()
    replay.replay(db, open_archive(os.environ["ARCHIVE_URL"]), cid, "acme", today, today)
    assert staged(db, cid) == before


def test_cors_preflight_and_answers_for_browsers(api):
    url, created = api
    preflight = requests.options(
        url + "/v1/t",
        headers={
            "Origin": "https://app.example.com",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type, authorization",
        },
        timeout=10,
    )
    assert preflight.status_code in (200, 204)
    assert preflight.headers["Access-Control-Allow-Origin"] == "*"
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
    assert "authorization" in preflight.headers["Access-Control-Allow-Headers"].lower()
    sent = post(
        url,
        "/v1/t",
        {"userId": "u1", "event": "x", "writeKey": created.write_key},
        headers={"Origin": "https://app.example.com", "Content-Type": "text/plain"},
    )
    assert sent.status_code == 200 and sent.headers["Access-Control-Allow-Origin"] == "*"
    refused = post(url, "/v1/t", {"userId": "u1", "event": "x"}, "wrong", {"Origin": "https://app.example.com"})
    assert refused.status_code == 401 and refused.headers["Access-Control-Allow-Origin"] == "*"


def test_wrong_or_missing_write_keys_get_401_and_land_nothing(api, db):
    url, created = api
    event = {"userId": "u1", "event": "Report Created"}
    for answer in (
        post(url, "/v1/track", event, "not-the-key"),
        post(url, "/v1/track", event),
        post(url, "/v1/track", {**event, "writeKey": "nope"}),
        post(url, "/v1/track", event, headers={"Authorization": "Basic %%%"}),
    ):
        assert answer.status_code == 401
        assert set(answer.json()) == {"code", "message"} and answer.json()["code"] == "unauthorized"
    assert staged(db, created.connection_id) == []
    unknown = requests.post(url + "/v1/nope", json=event, auth=(created.write_key, ""), timeout=10)
    assert unknown.status_code == 404 and unknown.json()["code"] == "not_found"
    wrong_method = requests.get(url + "/v1/track", timeout=10)
    assert wrong_method.status_code == 405 and wrong_method.json()["code"] == "method_not_allowed"


def test_the_orgs_cap_holds_on_the_tracking_api(api, db):
    url, _ = api
    tiny = connections.create(db, "tiny", rate_limit=1)
    event = {"type": "track", "userId": "u1", "event": "x"}
    assert post(url, "/v1/batch", {"batch": [event, event]}, tiny.write_key).status_code == 200  # a full bucket
    limited = post(url, "/v1/track", event, tiny.write_key)
    assert limited.status_code == 429 and limited.json()["code"] == "rate_limited"
    assert int(limited.headers["Retry-After"]) >= 1
    assert len(staged(db, tiny.connection_id)) == 1  # the batch's two events share one derived messageId
    assert rejected(db, tiny.connection_id)[0][0] == 429


def test_hostile_inputs_get_segments_400_land_nothing_and_are_logged(api, db):
    url, created = api
    key, cid = created.write_key, created.connection_id
    big = "x" * (32 * 1024)
    bomb = gzip.compress(b'{"batch": [' + b" " * (20 * 1024 * 1024) + b"]}")  # 20 MB of spaces in 20 KB
    cases = {
        "an event over 32 KB": post(url, "/v1/track", {"userId": "u1", "event": "x", "properties": {"p": big}}, key),
        "a batch over 500 KB": post(
            url,
            "/v1/batch",
            {"batch": [{"type": "track", "userId": "u1", "event": "x", "properties": {"p": "y" * 30_000}}] * 20},
            key,
        ),
        "a gzip bomb": post(url, "/v1/batch", bomb, key, {"Content-Encoding": "gzip"}),
        "gzip that is not": post(url, "/v1/batch", b"not gzip", key, {"Content-Encoding": "gzip"}),
        "truncated gzip": post(
            url,
            "/v1/batch",
            gzip.compress(json.dumps({"batch": [{"type": "track", "userId": "u1", "event": "fine"}]}).encode())[:-8],
            key,
            {"Content-Encoding": "gzip"},
        ),
        "bad JSON": post(url, "/v1/track", b'{"userId": "u1", "event": ', key),
        "not an object": post(url, "/v1/track", [1, 2], key),
        "a track without event": post(url, "/v1/track", {"userId": "u1"}, key),
        "no userId or anonymousId": post(url, "/v1/page", {"name": "Home"}, key),
        "a group without groupId": post(url, "/v1/group", {"userId": "u1"}, key),
        "an alias without previousId": post(url, "/v1/alias", {"userId": "u1"}, key),
        "a batch element without a type": post(
            url,
            "/v1/batch",
            {"batch": [{"type": "track", "userId": "u1", "event": "fine"}, {"userId": "u1", "event": "x"}]},
            key,
        ),
        "an empty batch": post(url, "/v1/batch", {"batch": []}, key),
        "a deep nest": post(
            url, "/v1/track", b'{"userId": "u1", "event": "x", "p": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", key
        ),
    }
    for case, answer in cases.items():
        assert answer.status_code == 400, (case, answer.status_code, answer.text)
        assert set(answer.json()) == {"code", "message"}, case
        assert answer.json()["code"] == "invalid_request" and answer.json()["message"], case
    assert "32 KB" in cases["an event over 32 KB"].json()["message"]
    assert "500 KB" in cases["a gzip bomb"].json()["message"]
    assert "event" in cases["a track without event"].json()["message"]
    assert "element 1" in cases["a batch element without a type"].json()["message"]
    assert staged(db, cid) == []
    # each refusal is in the connection's rejects log; the oversize batch and the gzip bomb share their
    # reason, so the second of them is folded into the first unless a second passed between them
    logged = rejected(db, cid)
    assert {status for status, _ in logged} == {400} and len(cases) - 1 <= len(logged) <= len(cases)
    assert any("32 KB" in reason for _, reason in logged)


def test_the_write_key_is_printed_once_and_rotates(database_url, archive_url, receiver_factory, db):
    env = {**os.environ, "PUBLIC_BASE_URL": "https://events.example.com"}
    made = subprocess.run(
        [CLI, "connections", "create", "--org", "acme", "--json"], capture_output=True, text=True, env=env, timeout=60
    )
    assert made.returncode == 0, made.stderr
    created = json.loads(made.stdout)
    assert created["tracking_api_host"] == "https://events.example.com" and len(created["write_key"]) == 32
    text = subprocess.run(
        [CLI, "connections", "create", "--org", "acme"], capture_output=True, text=True, env=env, timeout=60
    ).stdout
    assert "write key: " in text and "API host: https://events.example.com" in text
    stored = db.execute(
        "select write_key_enc from control.connections where connection_id = %s", (created["connection_id"],)
    ).fetchone()[0]
    assert created["write_key"] not in stored

    other = text.split()[1]  # "connection conn_... for org acme"
    old_key = text.split("write key: ")[1].split()[0]
    db.execute(
        "update control.connections set write_key_enc = null, write_key_sha256 = null where connection_id = %s",
        (other,),
    )  # as made before write keys existed
    first = json.loads(
        subprocess.run(
            [CLI, "connections", "rotate-write-key", other, "--json"],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        ).stdout
    )["write_key"]
    rotated = subprocess.run(
        [CLI, "connections", "rotate-write-key", created["connection_id"], "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert rotated.returncode == 0, rotated.stderr
    new = json.loads(rotated.stdout)["write_key"]
    assert new != created["write_key"]
    url = receiver_factory(workers=1).url
    event = {"userId": "u1", "event": "Report Created"}
    assert post(url, "/v1/track", event, created["write_key"]).status_code == 401
    assert post(url, "/v1/track", event, new).status_code == 200
    assert post(url, "/v1/track", event, first).status_code == 200
    assert post(url, "/v1/track", event, old_key).status_code == 401
    missing = subprocess.run(
        [CLI, "connections", "rotate-write-key", "conn_nope"], capture_output=True, text=True, env=env, timeout=60
    )
    assert missing.returncode == 1 and missing.stderr.startswith("error: no connection 'conn_nope'")
