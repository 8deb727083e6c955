"""POST /webhooks/segment/<connection_id>: verify, cap, archive, stage, answer (docs/receiver.md).

The hot path runs on the event loop (asgi.ReceiverApp): a POST whose connection id is
well-formed, whose body has a Content-Length within the limit and whose connection this process
knows is verified and queued there; anything else (other routes, chunked bodies, odd ids,
too-large bodies, a connection to read, a refusal) goes on to Flask in a thread, whose webhook
route gives the same answers through the same `answer`.
"""

from __future__ import annotations

import json
import logging
import re
import time

from flask import Blueprint, Response, current_app, request
from werkzeug.exceptions import RequestEntityTooLarge

from segment_elt.ingest import landing, signing
from segment_elt.ingest.receiver.backends import Backends, Connection, DatabaseUnavailable
from segment_elt.ingest.receiver.groups import Pending
from segment_elt.ingest.receiver.metrics import LATENCY, count_events, count_request
from segment_elt.ingest.receiver.refusals import DATABASE_DOWN, Refused, record_refusal
from segment_elt.ingest.receiver.state import ReceiverState, receiver_state

bp = Blueprint("webhook", __name__)
log = logging.getLogger("receiver")
CONNECTION_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")  # the whole id (fullmatch)
PREFIX = "/webhooks/segment/"
UNEXPECTED = "temporarily unable to accept events; retry later"


@bp.post("/webhooks/segment/<path:connection_id>")
def receive(connection_id: str):
    def body() -> bytes:
        try:
            return request.get_data(cache=False)
        except RequestEntityTooLarge:
            raise Refused(
                413,
                "too_large",
                f"body larger than {current_app.config['MAX_CONTENT_LENGTH']} bytes: send smaller batches",
            ) from None

    status, payload, headers = answer(
        receiver_state(), connection_id, request.headers.get("X-Signature"), request.content_length, body
    )
    return Response(payload, status, headers, mimetype="application/json")


def answer(
    state: ReceiverState, connection_id: str, signature: str | None, content_length: int | None, read_body
) -> tuple[int, bytes, list[tuple[str, str]]]:
    """Land one webhook request; returns (status, JSON body, extra headers) and logs its line."""
    started = time.perf_counter()
    events: list[dict] = []
    sent = b""
    try:
        sent = read_body()
        connection, text, events = verified(state.backends, connection_id, sent, signature)
        pending = Pending(connection, text, events)
        accepted = state.groups.land(pending)
    except Refused as refused:
        return refused_answer(state, connection_id, started, refused, content_length or len(sent), sent, len(events))
    return accepted_answer(connection_id, started, len(events), accepted, pending.suppressed)


def accepted_answer(
    connection_id: str, started: float, events: int, accepted: int, suppressed: int = 0
) -> tuple[int, bytes, list]:
    """The 200 of a landed request, counted and logged. Events of suppressed people count as
    accepted in the answer, as Segment's own API does (docs/privacy.md#suppression)."""
    duplicates = events - accepted - suppressed
    count_events(accepted, duplicates)
    _finish(connection_id, started, 200, "accepted", events)
    return 200, b'{"accepted":%d,"duplicates":%d}\n' % (accepted + suppressed, duplicates), []


def refused_answer(
    state: ReceiverState,
    connection_id: str,
    started: float,
    refused: Refused,
    body_bytes: int,
    sent: bytes,
    events: int = 0,
) -> tuple[int, bytes, list[tuple[str, str]]]:
    """The answer to a refused request (record_refusal: the rejects log, a database write), counted and logged."""
    headers = record_refusal(state.rejects, connection_id, refused, body_bytes, sent)
    _finish(connection_id, started, refused.status, refused.reason, events)
    return refused.status, json_body(error=refused.message), headers


def _finish(connection_id: str, started: float, status: int, reason: str, events: int) -> None:
    seconds = time.perf_counter() - started
    count_request(status, reason)
    LATENCY.observe(seconds)
    log_line("webhook", connection=connection_id[:64], status=status, events=events, ms=round(seconds * 1000, 2))


def json_body(**fields) -> bytes:
    """What Flask's jsonify sends: sorted keys, compact, ASCII, a final newline."""
    return (json.dumps(fields, sort_keys=True, separators=(",", ":")) + "\n").encode()


def log_line(msg: str, **fields) -> None:
    """The receiver's line per answered request: a record made directly, without logging's
    caller lookup (a third of the cost of log.info with extra); none when the logger is set above INFO."""
    if not log.isEnabledFor(logging.INFO):
        return
    record = logging.LogRecord("receiver", logging.INFO, "", 0, msg, None, None)
    record.fields = fields
    log.handle(record)


def signed_by(connection: Connection, body: bytes, signature: str | None) -> bool:
    return any(signing.verify(secret, body, signature) for secret in connection.secrets)


def verified(
    backends: Backends, connection_id: str, body: bytes, signature: str | None
) -> tuple[Connection, str, list[dict]]:
    """A request's connection, its body's text (what the archive keeps) and its events, once its
    connection is known and its signature and body check out; else raises Refused."""
    settings = backends.settings
    unavailable = settings.retry_after_s
    if not CONNECTION_ID.fullmatch(connection_id):
        raise Refused(404, "unknown_connection", "unknown connection: check the webhook URL")
    try:
        connection = backends.connection(connection_id)
    except DatabaseUnavailable:
        raise Refused(503, "database_unavailable", DATABASE_DOWN, unavailable) from None
    if connection is None:
        raise Refused(404, "unknown_connection", "unknown or deleted connection: check the webhook URL")
    if not signed_by(connection, body, signature):
        # A secret rotated since this process read it: look again, every time, since a 401 is final
        # for Segment (it retries only 5xx and 429). A wrong signature costs one indexed read, as
        # its rejects-log row does anyway.
        try:
            connection = backends.connection(connection_id, reread_older_than_s=0) or connection
        except DatabaseUnavailable:
            raise Refused(503, "database_unavailable", DATABASE_DOWN, unavailable) from None
    if not signed_by(connection, body, signature):
        missing = not signature
        raise Refused(
            401,
            "missing_signature" if missing else "bad_signature",
            "missing X-Signature header"
            if missing
            else "X-Signature does not match the body and the connection's shared secret",
        )
    try:
        text, events = landing.parse_body(body)
    except landing.BadBody as exc:
        raise Refused(400, "bad_body", str(exc)) from None
    return connection, text, events
