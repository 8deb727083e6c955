"""A 200 means the archive holds the request's exact bytes: a full disk or a short S3 write is a
503 that leaves nothing behind, and a replay never skips an object it cannot read back intact."""

from __future__ import annotations

import datetime as dt
import http.server
import json
import subprocess
import threading
from pathlib import Path

import boto3
import pytest
import requests

from segment_elt.control import connections
from segment_elt.ingest import landing
from segment_elt.ingest.archive import object_key, open_archive, verify_body
from segment_elt.local import samples
from segment_elt.pipeline.replay import ReplayIncomplete, replay
from tests.helpers import free_port
from tests.receiver.conftest import make_hook


@pytest.fixture
def tiny_disk(tmp_path):
    """A 64 KiB tmpfs: the archive fills it within a few requests."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], check=False, capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def padded_event(i: int, size: int = 12_000) -> dict:
    return {**samples.event("track", user_id=f"u{i}"), "properties": {"padding": "x" * size}}


def test_a_full_disk_never_gives_a_200_for_a_partial_object(db, tiny_disk, receiver_factory, monkeypatch):
    monkeypatch.setenv("ARCHIVE_URL", tiny_disk.as_uri())
    hook = make_hook(db, receiver_factory(workers=1), rate_limit=1_000_000)
    answers = {}
    for i in range(12):
        event = padded_event(i)
        answers[event["messageId"]] = hook.post(event).status_code
    assert set(answers.values()) == {200, 503}, answers  # the disk filled up part way

    staged = dict(db.execute("select message_id, archive_key from raw.segment_events").fetchall())
    assert set(staged) == {mid for mid, status in answers.items() if status == 200}
    for key in staged.values():  # every 200 is backed by the exact bytes
        verify_body(key, (tiny_disk / key).read_bytes())
    leftovers = [p.name for p in tiny_disk.rglob("*") if p.is_file() and not p.name.endswith(".json")]
    assert leftovers == []
    assert len(list(tiny_disk.rglob("*.json"))) == len(staged)


class TruncatingProxy(http.server.ThreadingHTTPServer):
    """Forwards S3 requests to the real (moto) server, dropping the second half of every PUT body:
    a faulty network path or server that stores fewer bytes than it was sent."""

    def __init__(self, upstream: str):
        self.upstream = upstream
        super().__init__(("127.0.0.1", free_port()), _Forward)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Forward(http.server.BaseHTTPRequestHandler):
    def _forward(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))
        if self.command == "PUT" and body:
            body = body[: len(body) // 2]
        headers = {k: v for k, v in self.headers.items() if k.lower() not in {"content-length", "host"}}
        answer = requests.request(
            self.command, self.server.upstream + self.path, data=body, headers=headers, timeout=10
        )
        self.send_response(answer.status_code)
        for name, value in answer.headers.items():
            if name.lower() not in {"content-length", "transfer-encoding", "connection", "server", "date"}:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(answer.content)))
        self.end_headers()
        self.wfile.write(answer.content)

    do_GET = do_PUT = do_HEAD = do_DELETE = do_POST = _forward

    def log_message(self, *args) -> None:
        pass


def test_an_s3_put_that_stores_fewer_bytes_is_a_503_and_leaves_no_object(db, s3_archive_url, moto_s3, receiver_factory):
    proxy = TruncatingProxy(moto_s3.endpoint)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        receiver = receiver_factory(workers=1, env={"AWS_ENDPOINT_URL": proxy.endpoint})
        hook = make_hook(db, receiver, rate_limit=1_000_000)
        answer = hook.post(padded_event(0, size=2_000))
    finally:
        proxy.shutdown()
    assert answer.status_code == 503, answer.text
    assert db.execute("select count(*) from raw.segment_events").fetchone()[0] == 0
    bucket = s3_archive_url.removeprefix("s3://").split("/", 1)[0]
    listed = boto3.client("s3", endpoint_url=moto_s3.endpoint).list_objects_v2(Bucket=bucket)
    assert listed.get("KeyCount", 0) == 0


def archived(db, archive_url: str, events: list[dict], at: dt.datetime):
    """Accept requests as the receiver does; returns the connection and the object keys."""
    created = connections.create(db, "acme")
    archive, keys = open_archive(archive_url), []
    for i, event in enumerate(events):
        body = json.dumps(event).encode()
        key = object_key(archive.prefix, "acme", created.connection_id, at + dt.timedelta(seconds=i), body)
        archive.put(key, body)
        keys.append(key)
    return created, keys


def test_replay_fails_naming_an_object_it_cannot_read_back_intact(db, archive_url):
    at = dt.datetime(2026, 10, 5, 12, tzinfo=dt.UTC)
    created, keys = archived(db, archive_url, [samples.event("track", user_id=f"u{i}") for i in range(3)], at)
    truncated = Path(archive_url.removeprefix("file://")) / keys[1]
    truncated.write_bytes(truncated.read_bytes()[:40])  # no longer the body its key names

    with pytest.raises(ReplayIncomplete, match=keys[1]):
        replay(db, open_archive(archive_url), created.connection_id, "acme", at.date(), at.date())
    staged = {r[0] for r in db.execute("select archive_key from raw.segment_events")}
    assert staged == {keys[0], keys[2]}  # the intact ones were re-landed all the same


def test_replay_of_intact_objects_lands_every_event(db, s3_archive_url):
    at = dt.datetime(2026, 10, 5, 23, 59, 58, tzinfo=dt.UTC)
    events = [samples.event("track", user_id=f"u{i}") for i in range(3)]
    created, _ = archived(db, s3_archive_url, events, at)
    done = replay(
        db, open_archive(s3_archive_url), created.connection_id, "acme", at.date(), at.date() + dt.timedelta(days=1)
    )
    assert (done.objects, done.events, done.new, done.failed_keys) == (3, 3, 3, [])
    assert {landing.message_id(e) for e in events} == {
        r[0] for r in db.execute("select message_id from raw.segment_events")
    }
