"""The webhook's hot path on the event loop (asgi.ReceiverApp) answers exactly as the Flask route
it stands in front of.

A chunked body has no Content-Length, so it goes on to Flask (in a thread); the same request
with a Content-Length takes the event loop's path. Both answers must be the same bytes, for every outcome, and
the body what Flask's jsonify writes.
"""

from __future__ import annotations

import base64
import gzip
import json
import re
import socket

import pytest
from flask import Flask, jsonify

from segment_elt.control import connections
from segment_elt.local import samples
from tests.receiver.conftest import make_hook


def exchange(base_url: str, request: bytes) -> bytes:
    """The raw HTTP answer (status line, headers, body) without its Date header."""
    host, port = base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)  # a half-closed connection still gets its answer
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return re.sub(rb"(?i)date: [^\r]*\r\n", b"", answer)  # uvicorn writes it in lower case


def post(path: str, body: bytes, signature: str | None, chunked: bool, headers: str = "") -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: receiver\r\nConnection: close\r\nContent-Type: application/json\r\n{headers}"
    if signature is not None:
        head += f"X-Signature: {signature}\r\n"
    if chunked:
        return (
            (head + "Transfer-Encoding: chunked\r\n\r\n").encode()
            + (f"{len(body):x}\r\n".encode() + body + b"\r\n" if body else b"")
            + b"0\r\n\r\n"
        )
    return (head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body


@pytest.fixture
def hook(db, archive_url, receiver_factory):
    return make_hook(db, receiver_factory(env={"SEGMENT_ELT_MAX_BODY_BYTES": "4096"}), rate_limit=1_000_000)


def test_fast_path_and_flask_give_the_same_bytes(hook):
    base = hook.url.split("/webhooks")[0]
    path = f"/webhooks/segment/{hook.connection_id}"

    def signed(body: bytes) -> str:
        return samples.headers(hook.secret, body)["X-Signature"]

    event = json.dumps(samples.event("track", user_id="u1", name="Fast", message_id="fast-1")).encode()
    array = json.dumps([samples.event("track", user_id="u2", name="Fast") for _ in range(3)]).encode()
    unicode = '{"type":"track","event":"é","userId":"ü","messageId":"fast-ü"}'.encode()
    cases = [  # (path, body, X-Signature, the status both must answer)
        (path, event, signed(event), 200),
        (path, array, signed(array), 200),
        (path, unicode, signed(unicode), 200),
        (path, b"{nope", signed(b"{nope"), 400),
        (path, b"[]", signed(b"[]"), 400),
        (path, b'{"a":1}', None, 401),
        (path, b'{"a":1}', "0" * 40, 401),
        (path, event, "0" * 40 + "\r\nX-Signature: " + signed(event), 401),  # two headers: one value "a,b"
        ("/webhooks/segment/no-such-connection", b'{"a":1}', "0" * 40, 404),
    ]
    for target, body, signature, status in cases:
        exchange(base, post(target, body, signature, chunked=False))  # landed once: both answers are duplicates
        fast = exchange(base, post(target, body, signature, chunked=False))
        flask = exchange(base, post(target, body, signature, chunked=True))
        assert fast == flask, body[:40]
        assert fast.startswith(f"HTTP/1.1 {status} ".encode()), (body[:40], fast)
        answered = fast.split(b"\r\n\r\n", 1)[1]
        with Flask(__name__).app_context():  # the body as Flask's jsonify writes it
            assert answered == jsonify(json.loads(answered)).get_data(), answered


def test_tracking_calls_on_the_loop_and_in_flask_give_the_same_bytes(db, archive_url, receiver_factory):
    receiver = receiver_factory(workers=1)  # one process: the write key is cached after the first call
    created = connections.create(db, "acme", rate_limit=1_000_000)
    auth = "Authorization: Basic " + base64.b64encode(f"{created.write_key}:".encode()).decode() + "\r\n"
    wrong = "Authorization: Basic " + base64.b64encode(b"nope:").decode() + "\r\n"
    track = json.dumps({"userId": "u1", "event": "Fast", "messageId": "t-1"}).encode()
    batch = json.dumps({"batch": [{"type": "identify", "userId": "u2", "messageId": "t-2"}]}).encode()
    cases = [  # (path, body, extra headers, the status both must answer)
        ("/v1/track", track, auth, 200),
        ("/v1/b", batch, auth, 200),
        ("/v1/t", gzip.compress(track), auth + "Content-Encoding: gzip\r\n", 200),
        ("/v1/track", b"{nope", auth, 400),
        ("/v1/track", json.dumps({"userId": "u1"}).encode(), auth, 400),  # no event name
        ("/v1/batch", track[:-3], auth + "Content-Encoding: gzip\r\n", 400),
        ("/v1/track", track, wrong, 401),
    ]
    for path, body, headers, status in cases:
        exchange(receiver.url, post(path, body, None, chunked=False, headers=headers))  # the key read, the event landed
        loop = exchange(receiver.url, post(path, body, None, chunked=False, headers=headers))
        flask = exchange(receiver.url, post(path, body, None, chunked=True, headers=headers))
        assert loop == flask, (path, body[:40])
        assert loop.startswith(f"HTTP/1.1 {status} ".encode()), (path, loop)
        assert b"access-control-allow-origin: *" in loop.lower()
