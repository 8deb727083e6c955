"""The receiver as gunicorn serves it: an ASGI app on uvicorn's event loop (receiver/gunicorn.conf.py).

One event-loop thread per process reads every request and answers it; a webhook request whose
connection this process knows (read less than backends.SECRETS_TTL_S ago) and whose body is
signed and parses is verified right there and queued for its group commit, and the loop goes on
with other requests until the group's writer wakes it (docs/receiver.md#worker-model). Nothing
on that path blocks the loop. Everything else (a first or stale connection read, any refusal,
the tracking API, health, metrics, chunked bodies) runs the Flask app in a thread of a pool, as
under a threaded WSGI server, and gives the same answers through the same code (webhook.answer).
"""

from __future__ import annotations

import asyncio
import logging
import time

from a2wsgi import WSGIMiddleware
from flask import Flask

from segment_elt.ingest import landing
from segment_elt.ingest.receiver import create_app
from segment_elt.ingest.receiver.backends import Backends
from segment_elt.ingest.receiver.groups import GroupCommitter, Pending, Refused
from segment_elt.ingest.receiver.webhook import (
    CONNECTION_ID,
    PREFIX,
    UNEXPECTED,
    accepted_answer,
    answer,
    json_body,
    refused_answer,
    signed_by,
)

log = logging.getLogger("receiver")
# the most one header line may take (name and value), as gunicorn's limit_request_field_size
MAX_HEADER_BYTES = 16384
JSON = (b"content-type", b"application/json")


def create_asgi_app() -> ReceiverApp:
    return ReceiverApp(create_app())


class ReceiverApp:
    """POST /webhooks/segment/<id> with a Content-Length within the limit is answered on the
    loop; anything else goes to the Flask app (a2wsgi runs it in a thread pool)."""

    def __init__(self, app: Flask):
        self.flask = app
        settings = app.config["SETTINGS"]
        self.backends: Backends = app.extensions["segment_elt"]
        self.committer: GroupCommitter = app.extensions["segment_elt.groups"]
        self.max_bytes = app.config["MAX_CONTENT_LENGTH"]
        self.retry_after = str(settings.retry_after_s).encode()
        self.threads = WSGIMiddleware(_terminated_input(app.wsgi_app), workers=settings.receiver_threads)

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            return await self._lifespan(receive, send)
        if scope["type"] != "http":
            return
        if any(len(name) + len(value) > MAX_HEADER_BYTES for name, value in scope["headers"]):
            return await _send(send, 431, json_body(error=f"a header line is longer than {MAX_HEADER_BYTES} bytes"))
        path = scope["path"]
        if scope["method"] == "POST" and path.startswith(PREFIX) and CONNECTION_ID.fullmatch(path, len(PREFIX)):
            length = signature = None
            odd = False  # chunked, or X-Signature twice: Flask's reading of it is the answer
            for name, value in scope["headers"]:
                if name == b"content-length":
                    length = value
                elif name == b"x-signature":
                    odd, signature = odd or signature is not None, value.decode("latin-1")
                elif name == b"transfer-encoding":
                    odd = True
            if length is not None and length.isdigit() and int(length) <= self.max_bytes and not odd:
                return await self._webhook(path[len(PREFIX):], signature, int(length), receive, send)
        return await self.threads(scope, receive, send)

    async def _lifespan(self, receive, send):
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.committer.start()  # this process's writers, each with its connections made
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _webhook(self, connection_id: str, signature: str | None, length: int, receive, send):
        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client went away mid-body: nobody reads an answer
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        try:
            status, payload, headers = await self._answer(connection_id, signature, length, body)
        except Exception:
            log.exception("unexpected error")
            status, payload, headers = 503, json_body(error=UNEXPECTED), [("Retry-After", self.retry_after.decode())]
        await _send(send, status, payload, [(k.lower().encode(), v.encode()) for k, v in headers])

    async def _answer(self, connection_id: str, signature: str | None, length: int, body: bytes):
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        connection = self.backends.cached_connection(connection_id)
        if connection is not None and signed_by(connection, body, signature):
            try:
                text, events = landing.parse_body(body)
            except landing.BadBody:
                pass  # answered below, with the rejects log written off the loop
            else:
                try:
                    new = await self.committer.land_async(Pending(connection, text, events))
                except Refused as refused:
                    return await loop.run_in_executor(self.threads.executor, refused_answer, self.flask.extensions,
                                                      connection_id, started, refused, length, body, len(events))
                return accepted_answer(connection_id, started, len(events), new)
        # a connection to read, a refusal to record: the blocking path, in a thread
        return await loop.run_in_executor(self.threads.executor, answer, self.flask.extensions, connection_id,
                                          signature, length, lambda: body)


def _terminated_input(wsgi_app):
    """a2wsgi's request body ends where the request's does (uvicorn has decoded any chunking), so
    Flask may read a body that has no Content-Length (WSGI's `wsgi.input_terminated`)."""

    def app(environ, start_response):
        environ["wsgi.input_terminated"] = True
        return wsgi_app(environ, start_response)

    return app


async def _send(send, status: int, payload: bytes, headers: list | None = None) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [JSON, (b"content-length", str(len(payload)).encode()), *(headers or [])]})
    await send({"type": "http.response.body", "body": payload})
