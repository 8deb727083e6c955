"""A stand-in for Segment's HTTP Tracking API on loopback: checks Basic auth, records every body
it receives, answers what a test scripts (e.g. 429 then 200), and dedupes as Segment does: a
message whose messageId it kept in the last 24 hours is answered 200 and dropped."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from segment_elt.control import connections, crypto
from segment_elt.outbound import segment_api
from tests.helpers import free_port

DEDUPE_WINDOW_S = 24 * 3600


class StandIn:
    def __init__(self):
        self.keys: set[str] = set()
        self.batches: list[tuple[str, str, list[dict]]] = []  # (path, write key, batch) of every batch answered 2xx
        self.bodies: list[bytes] = []  # every request body exactly as received
        self.arrivals: list[float] = []  # time.monotonic() of every request
        # write key -> answers to give first: (status, headers) or (status, headers, "kept") for
        # a batch Segment kept although its answer never reached the sender
        self.script: dict[str, list[tuple]] = defaultdict(list)
        self.kept: list[tuple[str, dict]] = []  # (write key, message) Segment keeps after its dedupe
        self.dropped: list[dict] = []  # messages dropped as duplicates of a messageId kept within 24 h
        self._kept_at: dict[str, float] = {}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                stand_in.arrivals.append(time.monotonic())
                stand_in.bodies.append(body)
                auth = self.headers.get("Authorization", "")
                key = base64.b64decode(auth.removeprefix("Basic ")).decode().split(":")[0] if auth else ""
                if key not in stand_in.keys:
                    return self._answer(401, {}, {"error": "invalid write key"})
                batch = json.loads(body)["batch"]
                if stand_in.script[key]:
                    status, headers, *kept = stand_in.script[key].pop(0)
                    if kept:
                        stand_in.keep(key, batch)
                    return self._answer(status, headers, {"error": "scripted"})
                stand_in.batches.append((self.path, key, batch))
                stand_in.keep(key, batch)
                self._answer(200, {}, {"success": True})

            def _answer(self, status, headers, body):
                data = json.dumps(body).encode()
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def keep(self, key: str, batch: list[dict]) -> None:
        now = time.time()
        for message in batch:
            if now - self._kept_at.get(message["messageId"], -DEDUPE_WINDOW_S) < DEDUPE_WINDOW_S:
                self.dropped.append(message)
                continue
            self._kept_at[message["messageId"]] = now
            self.kept.append((key, message))

    def messages(self, key: str | None = None) -> list[dict]:
        """What Segment kept (after its dedupe), in order of arrival."""
        return [m for k, m in self.kept if key in (None, k)]


@pytest.fixture
def segment(monkeypatch):
    stand_in = StandIn()
    monkeypatch.setitem(segment_api.SEGMENT_API_BASES, "us", f"{stand_in.url}/us")
    monkeypatch.setitem(segment_api.SEGMENT_API_BASES, "eu", f"{stand_in.url}/eu")
    monkeypatch.delenv("SEGMENT_API_URL", raising=False)
    yield stand_in
    stand_in.server.shutdown()


def enable(db, segment, org: str, write_key: str, region: str = "us") -> str:
    cid = connections.create(db, org).connection_id
    segment.keys.add(write_key)
    db.execute(
        "insert into control.outbound (connection_id, write_key_enc, region) values (%s, %s, %s)",
        (cid, crypto.encrypt(write_key), region),
    )
    return cid


@pytest.fixture
def marts(db):
    """The outbound relations as the dbt models shape them, filled per test."""
    db.execute("create schema analytics; create schema audiences")
    db.execute("create table analytics.outbound_identify (org_id text, user_id text, traits jsonb)")
    db.execute("create table analytics.outbound_group (org_id text, account_id text, group_id text, traits jsonb)")
    db.execute(
        "create table analytics.outbound_moments (org_id text, account_id text, moment text,"
        " occurrence_key text, properties jsonb)"
    )
    db.execute("create table audiences.power_users (org_id text, user_id text)")
    return db
