"""The receiver as gunicorn serves it: an ASGI app on uvicorn's event loop (receiver/gunicorn.conf.py).

One event-loop thread per process reads every request. A webhook request whose connection this
process knows (read less than backends.SECRETS_TTL_S ago), or a tracking API call whose HTTP
Basic write key it knows, is verified, parsed and queued for its group commit right there, and
the loop goes on with other requests until the group's writer wakes it
(docs/receiver.md#worker-model). Nothing on that path waits on the network, PostgreSQL or the
archive. Everything else (a
connection's row to read, the rejects log of a refusal, health, metrics, chunked bodies) runs
the Flask app in a thread of a pool, as under a threaded WSGI server, through the same code
(webhook.answer, tracking.prepare and their answers), so the answers are the same either way.
"""

from __future__ import annotations

import asyncio
import logging
import time

from a2wsgi import WSGIMiddleware
from flask import Flask
from werkzeug.exceptions import ClientDisconnected

from segment_elt.control.connections import write_key_digest
from segment_elt.ingest import landing
from segment_elt.ingest.receiver import create_app, tracking, webhook
from segment_elt.ingest.receiver.backends import Connection
from segment_elt.ingest.receiver.groups import Pending
from segment_elt.ingest.receiver.refusals import Refused
from segment_elt.ingest.receiver.state import receiver_state

log = logging.getLogger("receiver")
JSON = ("Content-Type", "application/json")
TRACKING = "/v1/"


def create_asgi_app() -> ReceiverApp:
    return ReceiverApp(create_app())


class ReceiverApp:
    """Webhook requests and tracking API calls that can be answered without I/O on the loop;
    anything else goes to the Flask app (a2wsgi runs it in a thread pool)."""

    def __init__(self, app: Flask):
        self.state = receiver_state(app)
        settings = app.config["SETTINGS"]
        self.backends = self.state.backends
        self.committer = self.state.groups
        self.max_bytes = app.config["MAX_CONTENT_LENGTH"]
        self.retry_after = str(settings.retry_after_s)
        self.threads = WSGIMiddleware(_terminated_input(app.wsgi_app), workers=settings.receiver_threads)

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            return await self._lifespan(receive, send)
        if scope["type"] != "http":
            return
        path = scope["path"]
        if scope["method"] == "POST":
            if path.startswith(webhook.PREFIX) and webhook.CONNECTION_ID.fullmatch(path, len(webhook.PREFIX)):
                headers = _plain_headers(scope, self.max_bytes)
                if headers is not None:
                    return await self._webhook(path[len(webhook.PREFIX) :], headers, receive, send)
            elif path.startswith(TRACKING) and path[len(TRACKING) :] in tracking.KINDS:
                headers = _plain_headers(scope, tracking.MAX_BATCH_BYTES)
                if headers is not None and (connection := self._by_basic_key(headers.get("authorization"))):
                    return await self._tracking(path[len(TRACKING) :], connection, headers, receive, send)
        return await self.threads(scope, _refusing_disconnect(receive), send)

    async def _lifespan(self, receive, send):
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.committer.start()  # this process's writers, each with its connections made
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _by_basic_key(self, authorization: str | None) -> Connection | None:
        key = tracking.basic_user(authorization)
        return self.backends.cached_connection_by_write_key(write_key_digest(key)) if key else None

    def _in_thread(self, fn, *args):
        return asyncio.get_running_loop().run_in_executor(self.threads.executor, fn, *args)

    async def _webhook(self, connection_id: str, headers: dict[str, str], receive, send):
        signature = headers.get("x-signature")
        await self._respond(
            receive,
            send,
            lambda body: self._webhook_answer(connection_id, signature, body),
            webhook.json_body(error=webhook.UNEXPECTED),
        )

    async def _respond(self, receive, send, answer_body, unexpected: bytes, extra: tuple = ()):
        """Read the whole body, answer it with `answer_body(body)` (a coroutine giving status,
        payload, headers) and send that, plus `extra` headers; 503 with `unexpected` on a bug."""
        body = await _body(receive)
        if body is None:
            return  # the client went away mid-body: nobody reads an answer
        try:
            status, payload, headers = await answer_body(body)
        except Exception:
            log.exception("unexpected error")
            status, payload, headers = 503, unexpected, [("Retry-After", self.retry_after)]
        await _send(send, status, payload, [*headers, *extra])

    async def _webhook_answer(self, connection_id: str, signature: str | None, body: bytes):
        started = time.perf_counter()
        connection = self.backends.cached_connection(connection_id)
        if connection is not None and webhook.signed_by(connection, body, signature):
            try:
                text, events = landing.parse_body(body)
            except landing.BadBody:
                pass  # answered below, with the rejects log written in a thread
            else:
                pending = Pending(connection, text, events)
                try:
                    new = await self.committer.land_async(pending)
                except Refused as refused:
                    return await self._in_thread(
                        webhook.refused_answer,
                        self.state,
                        connection_id,
                        started,
                        refused,
                        len(body),
                        body,
                        len(events),
                    )
                return webhook.accepted_answer(connection_id, started, len(events), new, pending.suppressed)
        # a connection's row to read, a refusal to record: the blocking path, in a thread
        return await self._in_thread(webhook.answer, self.state, connection_id, signature, len(body), lambda: body)

    async def _tracking(self, kind: str, connection: Connection, headers: dict[str, str], receive, send):
        await self._respond(
            receive,
            send,
            lambda body: self._tracking_answer(kind, connection, headers, body),
            tracking.error_body(503, webhook.UNEXPECTED),
            tuple(tracking.CORS.items()),
        )

    async def _tracking_answer(self, kind: str, connection: Connection, headers: dict[str, str], body: bytes):
        started = time.perf_counter()
        call = tracking.Call(kind, connection, body)
        try:
            pending = tracking.prepare(self.backends, call, headers.get("content-encoding"))
            new = await self.committer.land_async(pending)
        except Refused as refused:
            return await self._in_thread(tracking.refused_answer, self.state, call, started, refused, len(body))
        return tracking.accepted_answer(call, started, new, pending.suppressed)


def _plain_headers(scope, max_bytes: int) -> dict[str, str] | None:
    """The request's headers by lower-case name, when its body has a Content-Length of at most
    max_bytes, it is not chunked and no header comes twice; else None (Flask's reading of such a
    request is the answer: werkzeug joins a repeated header's values with commas)."""
    found: dict[str, str] = {}
    for name, value in scope["headers"]:
        key = name.decode("latin-1")
        if key in found or key == "transfer-encoding":
            return None
        found[key] = value.decode("latin-1")
    length = found.get("content-length", "")
    return found if length.isdigit() and int(length) <= max_bytes else None


async def _body(receive) -> bytes | None:
    """The whole body, or None when the client went away first."""
    parts = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(parts)


def _refusing_disconnect(receive):
    """`receive` for a request Flask reads in a thread: a client gone before the end of its body
    is werkzeug's ClientDisconnected there (a 400 nobody reads), not the end of a shorter body."""

    async def receive_body():
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected()
        return message

    return receive_body


def _terminated_input(wsgi_app):
    """A chunked body ends where uvicorn's decoding of it does, so Flask may read a body that has
    no Content-Length (WSGI's `wsgi.input_terminated`); one with a Content-Length is read to it."""

    def app(environ, start_response):
        if "CONTENT_LENGTH" not in environ:
            environ["wsgi.input_terminated"] = True
        return wsgi_app(environ, start_response)

    return app


async def _send(send, status: int, payload: bytes, headers: list[tuple[str, str]] | None = None) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (name.lower().encode("latin-1"), value.encode("latin-1"))  # as a2wsgi passes Flask's on
                for name, value in (JSON, ("Content-Length", str(len(payload))), *(headers or []))
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
