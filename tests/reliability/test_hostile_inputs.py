"""Hostile input against the real receiver: no 5xx, no stack trace, nothing landed on a 4xx,
every valid event landed exactly once. A corpus of named cases plus a property-based fuzz."""

from __future__ import annotations

import json

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from segment_elt.ingest.archive import open_archive
from segment_elt.local import samples
from tests.receiver.conftest import make_hook

OK, BAD, UNSIGNED, MISSING = {200}, {400}, {401}, {404}


def ev(**fields):
    base = {"type": "track", "event": "Hostile", "userId": "u1", "messageId": None}
    base.update(fields)
    if base["messageId"] is None:
        del base["messageId"]
    return json.dumps(base).encode()


def _cases():
    c = []
    add = lambda name, body, expect, **kw: c.append((name, body, expect, kw))  # noqa: E731
    # not JSON, or not events
    for name, body in [
        ("truncated object", b'{"type": "track", "event": "x"'),
        ("truncated array", b'[{"type": "track"},'),
        ("trailing comma", b'{"type": "track",}'),
        ("single quotes", b"{'type': 'track'}"),
        ("bare word", b"hello"),
        ("empty body", b""),
        ("whitespace", b"   \n"),
        ("json null", b"null"),
        ("json true", b"true"),
        ("json number", b"123"),
        ("json string", b'"event"'),
        ("empty array", b"[]"),
        ("array of numbers", b"[1,2,3]"),
        ("array of strings", b'["a"]'),
        ("array with null", b'[{"type":"track"}, null]'),
        ("nested arrays", b"[[{}]]"),
        ("array of arrays", b"[[], []]"),
        ("raw NUL byte", b'{"type": "tr\x00ack"}'),
        ("invalid utf-8", b'{"type": "\xff\xfe"}'),
        ("utf-16 body", json.dumps({"type": "track"}).encode("utf-16")),
        ("BOM prefixed", b"\xef\xbb\xbf" + ev()),
        ("deeply nested 100k", b"[" * 100000 + b"]" * 100000),
        ("deeply nested objects", b'{"a":' * 50000 + b"1" + b"}" * 50000),
        ("two documents", ev() + ev()),
        ("comment", b'{"type": "track"} // hi'),
    ]:
        add(name, body, BAD)
    # wrong types at every envelope field: accepted as JSON objects, nothing interpreted
    for field, value in [
        ("messageId", 12345),
        ("messageId", {"a": 1}),
        ("messageId", ["x"]),
        ("messageId", True),
        ("messageId", ""),
        ("messageId", "x" * 5000),
        ("messageId", "a\u0000b"),
        ("type", 7),
        ("type", {"t": 1}),
        ("type", "x" * 500),
        ("userId", {"id": 1}),
        ("userId", 12345678901234567890),
        ("anonymousId", []),
        ("groupId", 3.5),
        ("timestamp", 1700000000),
        ("timestamp", "not a date"),
        ("event", {"name": "x"}),
        ("context", "a string"),
        ("properties", [1, 2]),
        ("traits", "plain"),
        ("sentAt", None),
        ("integrations", 0),
    ]:
        add(f"{field}={str(value)[:20]!r}", ev(**{field: value}), OK)
    # strings PostgreSQL's jsonb cannot store as they are
    add("NUL escape in value", ev(properties={"s": "a\u0000b"}), OK)
    add("NUL escape in key", ev(properties={"a\u0000": 1}), OK)
    add("lone high surrogate", b'{"type": "track", "event": "\\ud800"}', OK)
    add("lone low surrogate", b'{"type": "track", "properties": {"x": "\\udc00z"}}', OK)
    add("surrogate pair", b'{"type": "track", "event": "\\ud83d\\ude00"}', OK)
    add("duplicate keys", b'{"type": "track", "type": "page", "event": "x"}', OK)
    add("number beyond 64-bit", b'{"type": "track", "properties": {"n": 123456789012345678901234567890}}', OK)
    add("huge exponent", b'{"type": "track", "properties": {"n": 1e400}}', OK)
    add("negative huge exponent", b'{"type": "track", "properties": {"n": -1e-400}}', OK)
    add("NaN literal", b'{"type": "track", "properties": {"n": NaN}}', OK)
    add("Infinity literal", b'{"type": "track", "properties": {"n": -Infinity}}', OK)
    add("empty object", b"{}", OK)
    add("unicode everywhere", ev(event="événement 事件 🎉", userId="ユーザー"), OK)
    add("big document (8 MB)", ev(properties={"blob": "x" * 8_000_000}), OK)
    add("wide object", json.dumps({f"k{i}": i for i in range(50_000)}).encode(), OK)
    add("array of empty objects", b"[{}, {}, {}]", OK)
    # transport-level hostility
    add("text/plain content type", ev(), OK, headers={"Content-Type": "text/plain"})
    add("form content type", b"a=1&b=2", BAD, headers={"Content-Type": "application/x-www-form-urlencoded"})
    add("gigantic header", ev(), {400, 431}, headers={"X-Junk": "x" * 20_000}, json_body=False)
    add("many headers", ev(), {200, 400, 431}, headers={f"X-H{i}": "v" for i in range(150)}, json_body=False)
    add("signature not hex", ev(), UNSIGNED, signature="zz" * 20)
    add("signature unicode", ev(), UNSIGNED, signature="é" * 40)
    add("signature empty", ev(), UNSIGNED, signature="")
    add("signature of other body", ev(), UNSIGNED, signature=samples.headers("x", b"{}")["X-Signature"])
    for method in ("GET", "PUT", "DELETE", "PATCH"):
        add(f"method {method}", ev(), {405}, method=method)
    for path in (
        "../../etc/passwd",
        "..%2F..%2Fetc",
        "%2e%2e",
        "conn%00x",
        "a" * 300,
        "%E2%98%83",
        "conn;drop table",
        "conn'--",
        "x/y/z",
        "CON",
        " ",
    ):
        add(f"path {path[:20]!r}", ev(), MISSING | {405}, path=path)
    return c


CASES = _cases()


def test_corpus_is_large():
    assert len(CASES) >= 60


@pytest.fixture(scope="module")
def target(pg_server, tmp_path_factory):
    """One receiver for the whole corpus (module scope keeps it fast)."""
    import os

    import psycopg

    from tests.helpers import start_receiver

    url = pg_server.create_database()
    archive = (tmp_path_factory.mktemp("hostile") / "archive").as_uri()
    receiver = start_receiver(
        {"DATABASE_URL": url, "ARCHIVE_URL": archive, "SEGMENT_ELT_FERNET_KEY": os.environ["SEGMENT_ELT_FERNET_KEY"]},
        tmp_path_factory.mktemp("logs"),
    )
    with psycopg.connect(url, autocommit=True) as conn:
        hook = make_hook(conn, receiver, org="hostile", rate_limit=10_000_000)
        yield hook, conn, archive
    receiver.stop()


def _counts(conn, archive):
    staged = conn.execute("select count(*) from raw.segment_events").fetchone()[0]
    return staged, len(list(open_archive(archive).list("")))


def _send(hook, body, kw):
    signature = kw.get("signature", samples.headers(hook.secret, body)["X-Signature"])
    headers = {"Content-Type": "application/json", "X-Signature": signature, **kw.get("headers", {})}
    url = hook.url if "path" not in kw else hook.url.rsplit("/", 1)[0] + "/" + kw["path"]
    return requests.request(kw.get("method", "POST"), url, data=body, headers=headers, timeout=60)


@pytest.mark.parametrize("name,body,expect,kw", CASES, ids=[c[0] for c in CASES])
def test_hostile_case(target, name, body, expect, kw):
    hook, conn, archive = target
    before = _counts(conn, archive)
    answer = _send(hook, body, kw)
    assert answer.status_code in expect, (name, answer.status_code, answer.text[:300])
    assert answer.status_code < 500
    assert "Traceback" not in answer.text and 'File "' not in answer.text
    after = _counts(conn, archive)
    if answer.status_code >= 400:
        assert after == before, f"{name}: something landed on a {answer.status_code}"
        if kw.get("json_body", True) and answer.status_code != 431:
            assert "error" in answer.json()
    else:
        events = json.loads(body.decode("utf-8", "replace")) if body.strip() else {}
        n = len(events) if isinstance(events, list) else 1
        assert answer.json()["accepted"] + answer.json()["duplicates"] == n
        assert after[1] == before[1] + 1  # the request is archived


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
events = st.dictionaries(
    st.sampled_from(["type", "messageId", "userId", "event", "context", "properties", "x"]), json_values, max_size=6
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=st.lists(events, min_size=1, max_size=5), as_array=st.booleans())
def test_fuzzed_events_land_exactly_once(target, batch, as_array):
    hook, _conn, _ = target
    body = json.dumps(batch if as_array or len(batch) > 1 else batch[0]).encode()
    answer = _send(hook, body, {})
    assert answer.status_code == 200, answer.text[:300]
    again = _send(hook, body, {})
    assert again.status_code == 200
    assert again.json()["accepted"] == 0  # a redelivery never double-counts
    assert answer.json()["accepted"] + answer.json()["duplicates"] == len(batch)
