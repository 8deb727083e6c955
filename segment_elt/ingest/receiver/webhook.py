"""POST /webhooks/segment/<connection_id>: verify, cap, archive, stage, answer (docs/receiver.md)."""

from __future__ import annotations

import logging
import re
import time

from flask import Blueprint, current_app, jsonify, request
from werkzeug.exceptions import RequestEntityTooLarge

from segment_elt.ingest import landing, signing
from segment_elt.ingest.receiver.backends import Backends, Connection, DatabaseUnavailable
from segment_elt.ingest.receiver.groups import DATABASE_DOWN, GroupCommitter, Pending, Refused
from segment_elt.ingest.receiver.metrics import EVENTS, LATENCY, REQUESTS

bp = Blueprint("webhook", __name__)
log = logging.getLogger("receiver")
CONNECTION_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@bp.post("/webhooks/segment/<path:connection_id>")
def receive(connection_id: str):
    started = time.perf_counter()
    backends: Backends = current_app.extensions["segment_elt"]
    events, sent = 0, b""
    try:
        try:
            sent = request.get_data(cache=False)
        except RequestEntityTooLarge:
            raise Refused(413, "too_large", f"body larger than {backends.settings.max_body_bytes} bytes: send smaller batches") from None
        events, accepted = land_request(backends, connection_id, sent)
        status, body, retry_after = 200, {"accepted": accepted, "duplicates": events - accepted}, None
        reason = "accepted"
        EVENTS.labels("landed").inc(accepted)
        EVENTS.labels("duplicate").inc(events - accepted)
    except Refused as refused:
        status, body, retry_after = refused.status, {"error": refused.message}, refused.retry_after
        reason = refused.reason
        if refused.status != 404 and refused.message != DATABASE_DOWN:  # unknown, or nowhere to write
            current_app.extensions["segment_elt.rejects"].record(
                connection_id, status, refused.message, request.content_length or len(sent),
                sent if status == 400 else None)
    response = jsonify(body)
    response.status_code = status
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    seconds = time.perf_counter() - started
    REQUESTS.labels(str(status), reason).inc()
    LATENCY.observe(seconds)
    ms = round(seconds * 1000, 2)
    log.info("webhook", extra={"fields": {"connection": connection_id[:64], "status": status, "events": events, "ms": ms}})
    return response


def _signed_by(connection: Connection, body: bytes, signature: str | None) -> bool:
    return any(signing.verify(secret, body, signature) for secret in connection.secrets)


def land_request(backends: Backends, connection_id: str, body: bytes) -> tuple[int, int]:
    """Land one request; returns (events in it, events new to staging) or raises Refused."""
    settings = backends.settings
    unavailable = settings.retry_after_s
    if not CONNECTION_ID.match(connection_id):
        raise Refused(404, "unknown_connection", "unknown connection: check the webhook URL")
    try:
        connection = backends.connection(connection_id)
    except DatabaseUnavailable:
        raise Refused(503, "database_unavailable", DATABASE_DOWN, unavailable) from None
    if connection is None:
        raise Refused(404, "unknown_connection", "unknown or deleted connection: check the webhook URL")
    signature = request.headers.get("X-Signature")
    if not _signed_by(connection, body, signature):
        # A secret rotated since this process read it: look again, every time, since a 401 is final
        # for Segment (it retries only 5xx and 429). A wrong signature costs one indexed read, as
        # its rejects-log row does anyway.
        try:
            connection = backends.connection(connection_id, reread_older_than_s=0) or connection
        except DatabaseUnavailable:
            raise Refused(503, "database_unavailable", DATABASE_DOWN, unavailable) from None
    if not _signed_by(connection, body, signature):
        missing = not signature
        raise Refused(401, "missing_signature" if missing else "bad_signature",
                      "missing X-Signature header" if missing else "X-Signature does not match the body and the connection's shared secret")
    try:
        text, events = landing.parse_body(body)
    except landing.BadBody as exc:
        raise Refused(400, "bad_body", str(exc)) from None
    return land_events(connection, text, events)


def land_events(connection: Connection, text: str, events: list[dict]) -> tuple[int, int]:
    """Cap, archive and stage the events of one authenticated request (`text`, what the archive
    keeps, is its exact body decoded) in the next group commit; returns (events, events new to
    staging) or raises Refused."""
    committer: GroupCommitter = current_app.extensions["segment_elt.groups"]
    return len(events), committer.land(Pending(connection, text, events))
