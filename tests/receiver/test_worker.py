"""The receiver's worker class (segment_elt/ingest/receiver/worker.py) keeps what gunicorn's own
HTTP parser guaranteed, through a real gunicorn and raw sockets: a request's head is bounded as it
arrives, underscore header names are dropped, a client gone mid-body leaves no trace, and a
shutdown with a stalled client ends within gunicorn's graceful timeout."""

from __future__ import annotations

import json
import signal
import socket
import threading
import time

import requests

from segment_elt.ingest.receiver import worker
from segment_elt.local import samples
from tests.receiver.conftest import make_hook


def connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=30)


def answer_to(url: str, request: bytes) -> bytes:
    """The raw answer; a server that refuses before all is sent may reset the connection after it."""
    answer = b""
    with connect(url) as sock:
        try:
            sock.sendall(request)
            while chunk := sock.recv(65536):
                answer += chunk
        except (BrokenPipeError, ConnectionResetError):
            pass
    return answer


def test_an_oversized_head_is_refused_as_it_arrives_and_the_loop_goes_on(db, archive_url, receiver_factory):
    receiver = receiver_factory(workers=1)
    endless = threading.Thread(
        target=answer_to, args=(receiver.url, b"GET /healthz HTTP/1.1\r\nX-Junk: " + b"x" * 50_000_000)
    )
    endless.start()
    many = b"".join(b"X-H%d: v\r\n" % i for i in range(worker.MAX_HEADERS + 1))
    for status, head in [
        (431, b"GET /healthz HTTP/1.1\r\nX-Junk: " + b"x" * 20_000 + b"\r\n\r\n"),  # one long line
        (431, b"GET /healthz HTTP/1.1\r\n" + many + b"\r\n"),  # too many lines
        (414, b"GET /" + b"a" * 10_000 + b" HTTP/1.1\r\n\r\n"),
    ]:
        answered = answer_to(receiver.url, head)
        assert answered.startswith(b"HTTP/1.1 %d " % status), answered[:80]
        assert json.loads(answered.split(b"\r\n\r\n", 1)[1])["error"]
    assert requests.get(receiver.url + "/healthz", timeout=10).status_code == 200  # the loop is free
    endless.join(30)
    assert not endless.is_alive(), "a 50 MB header line is refused long before its end"


def test_underscore_header_names_are_dropped_on_both_paths(db, archive_url, receiver_factory):
    hook = make_hook(db, receiver_factory(workers=1), rate_limit=1_000_000)
    path = hook.url.split("/", 3)[3]
    body = json.dumps(samples.event("track", user_id="u1", name="Underscore")).encode()
    signature = samples.headers(hook.secret, body)["X-Signature"]
    assert hook.post(samples.event("track", user_id="u0")).status_code == 200  # the connection is cached
    head = f"POST /{path} HTTP/1.1\r\nHost: r\r\nConnection: close\r\nX_Signature: {signature}\r\n"
    plain = answer_to(hook.receiver.url, (head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body)
    chunked = answer_to(
        hook.receiver.url,
        (head + "Transfer-Encoding: chunked\r\n\r\n").encode() + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body),
    )
    assert plain.startswith(b"HTTP/1.1 401 ") and chunked.startswith(b"HTTP/1.1 401 ")
    assert b"missing X-Signature header" in plain and b"missing X-Signature header" in chunked


def test_a_client_gone_mid_body_leaves_no_reject_and_lands_nothing(db, archive_url, receiver_factory):
    hook = make_hook(db, receiver_factory(workers=1), rate_limit=1_000_000)
    path = hook.url.split("/", 3)[3]
    body = json.dumps(samples.event("track", user_id="u1", name="Cut")).encode()
    signature = samples.headers(hook.secret, body)["X-Signature"]
    head = f"POST /{path} HTTP/1.1\r\nHost: r\r\nX-Signature: {signature}\r\n"
    for framing, sent in (
        (f"Content-Length: {len(body)}\r\n\r\n", body[:20]),
        ("Transfer-Encoding: chunked\r\n\r\n", b"%x\r\n%s" % (len(body), body[:20])),
    ):
        with connect(hook.receiver.url) as sock:
            sock.sendall((head + framing).encode() + sent)
        time.sleep(0.5)
    assert requests.get(hook.receiver.url + "/healthz", timeout=5).status_code == 200
    assert db.execute("select count(*) from control.rejects").fetchone()[0] == 0
    assert db.execute("select count(*) from raw.segment_events").fetchone()[0] == 0


def test_a_shutdown_with_a_stalled_client_ends_within_the_graceful_timeout(db, archive_url, receiver_factory):
    receiver = receiver_factory(workers=1)
    stalled = connect(receiver.url)
    stalled.sendall(b"POST /webhooks/segment/conn_x HTTP/1.1\r\nHost: r\r\nContent-Length: 100\r\n\r\n{")
    time.sleep(0.3)
    started = time.monotonic()
    receiver.proc.send_signal(signal.SIGTERM)
    receiver.proc.wait(30)
    took = time.monotonic() - started
    stalled.close()
    log = receiver.log.read_text()
    assert took < 15, f"{took:.1f} s"  # past gunicorn's graceful_timeout (15 s) it would SIGKILL
    assert "WORKER TIMEOUT" not in log and "SIGKILL" not in log and "SIGABRT" not in log, log[-2000:]
