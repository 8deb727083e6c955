"""Segment's tracking API: POST /v1/track, /v1/identify, /v1/page, /v1/screen, /v1/group, /v1/alias,
/v1/batch and their one-letter short forms, so Segment's own SDKs can send here (docs/receiver.md).

A request is authenticated by the connection's write key (HTTP Basic user, or `writeKey` in the
body), checked against Segment's limits and required fields, normalised as Segment normalises
before it delivers to a webhook (type from the path, batch context merged, receivedAt, clock
skew corrected, messageId), and those normalised events land through the same group commit: the
archive keeps them as one JSON document, so a replay gives the same rows.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import time
import zlib
from dataclasses import dataclass

from flask import Blueprint, Response, request

from segment_elt.control.connections import write_key_digest
from segment_elt.ingest import landing
from segment_elt.ingest.receiver.backends import Backends, Connection, DatabaseUnavailable
from segment_elt.ingest.receiver.groups import Pending
from segment_elt.ingest.receiver.metrics import LATENCY, count_events, count_request
from segment_elt.ingest.receiver.refusals import DATABASE_DOWN, Refused, record_refusal
from segment_elt.ingest.receiver.state import ReceiverState, receiver_state
from segment_elt.ingest.receiver.webhook import json_body, log_line

bp = Blueprint("tracking", __name__)

MAX_EVENT_BYTES = 32 * 1024  # Segment's limit per event
MAX_BATCH_BYTES = 500 * 1024  # and per request, after gzip is inflated
CALLS = {
    "track": "track",
    "identify": "identify",
    "page": "page",
    "screen": "screen",
    "group": "group",
    "alias": "alias",
    "t": "track",
    "i": "identify",
    "p": "page",
    "s": "screen",
    "g": "group",
    "a": "alias",
}
BATCH = {"batch", "b"}
KINDS = set(CALLS) | BATCH  # what may follow /v1/
TYPES = set(CALLS.values())
# fields each type needs besides userId or anonymousId (alias: userId itself)
REQUIRED = {"track": ("event",), "group": ("groupId",), "alias": ("previousId", "userId")}
CODES = {
    400: "invalid_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    429: "rate_limited",
    503: "unavailable",
}
CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "POST, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, Content-Type, Content-Encoding",
    "Access-Control-Max-Age": "86400",
}


SUCCESS = json_body(success=True)


def error_body(status: int, message: str) -> bytes:
    """Segment's error answer: {"code": ..., "message": ...} (what its SDKs read and log)."""
    return json_body(code=CODES.get(status, "error"), message=message)


def error(status: int, message: str) -> Response:
    return Response(error_body(status, message), status, mimetype="application/json")


def unknown_path(path: str):
    return error(404, f"no {path[:60]}: the tracking API has /v1/track, identify, page, screen, group, alias, batch")


@bp.after_request
def allow_any_origin(response):
    """Browsers may send from any origin: the write key is public by design. (Flask answers the
    preflight OPTIONS of the route itself; this adds the CORS headers to it and to every answer.)"""
    response.headers.update(CORS)
    return response


@bp.post("/v1/<kind>")
def receive(kind: str):
    if kind not in KINDS:
        return unknown_path(request.path)
    started = time.perf_counter()
    state = receiver_state()
    call = Call(kind)
    try:
        key = basic_user(request.headers.get("Authorization"))
        if key is not None:  # else the key may be in the body
            call.connection = authenticate(state.backends, key)
        if (request.content_length or 0) > MAX_BATCH_BYTES:
            raise _too_large()
        call.raw = request.stream.read(MAX_BATCH_BYTES + 1)
        pending = prepare(state.backends, call, request.headers.get("Content-Encoding"))
        accepted = state.groups.land(pending)
    except Refused as refused:
        return _flask(refused_answer(state, call, started, refused, request.content_length))
    return _flask(accepted_answer(call, started, accepted, pending.suppressed))


def _flask(answer: tuple[int, bytes, list[tuple[str, str]]]) -> Response:
    status, payload, headers = answer
    return Response(payload, status, headers, mimetype="application/json")  # CORS: allow_any_origin


@dataclass
class Call:
    """One tracking API request as it is read: its path's kind, its connection once
    authenticated, its body as sent, and its events once normalised."""

    kind: str
    connection: Connection | None = None
    raw: bytes = b""
    events: int = 0


def prepare(backends: Backends, call: Call, content_encoding: str | None) -> Pending:
    """What a call whose body is read (`call.raw`) lands: the archive text and the normalised
    events; authenticates by the body's writeKey when no header did. Raises Refused."""
    doc = _parse(inflate(call.raw, content_encoding))
    connection = call.connection or authenticate(backends, doc.get("writeKey"))
    call.connection = connection
    events = normalise(doc, CALLS.get(call.kind), dt.datetime.now(dt.UTC))
    call.events = len(events)
    return Pending(connection, json.dumps(events[0] if call.kind in CALLS else events, separators=(",", ":")), events)


def accepted_answer(
    call: Call, started: float, accepted: int, suppressed: int = 0
) -> tuple[int, bytes, list[tuple[str, str]]]:
    """The 200 of a landed call, counted and logged (status, JSON body, extra headers)."""
    count_events(accepted, call.events - accepted - suppressed)
    _finish(call, started, 200, "accepted")
    return 200, SUCCESS, []


def refused_answer(
    state: ReceiverState, call: Call, started: float, refused: Refused, content_length: int | None
) -> tuple[int, bytes, list[tuple[str, str]]]:
    """Segment's error answer to a refused call (record_refusal: the rejects log when the call's
    connection is known, a database write), counted and logged."""
    connection_id = call.connection.connection_id if call.connection else None
    headers = record_refusal(state.rejects, connection_id, refused, content_length or len(call.raw), call.raw)
    _finish(call, started, refused.status, refused.reason)
    return refused.status, error_body(refused.status, refused.message), headers


def _finish(call: Call, started: float, status: int, reason: str) -> None:
    seconds = time.perf_counter() - started
    count_request(status, reason)
    LATENCY.observe(seconds)
    log_line(
        "tracking",
        connection=call.connection.connection_id if call.connection else None,
        path=f"/v1/{call.kind}",
        status=status,
        events=call.events,
        ms=round(seconds * 1000, 2),
    )


def basic_user(header: str | None) -> str | None:
    """The user of an HTTP Basic Authorization header ("" when unreadable), None without one."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return ""
    try:
        return base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")[0]
    except (binascii.Error, UnicodeDecodeError):
        return ""


def authenticate(backends: Backends, key) -> Connection:
    if not isinstance(key, str) or not key:
        raise Refused(401, "missing_write_key", "missing write key: send it as the HTTP Basic user, or as writeKey")
    try:
        connection = backends.connection_by_write_key(write_key_digest(key))
    except DatabaseUnavailable:
        raise Refused(503, "database_unavailable", DATABASE_DOWN, backends.settings.retry_after_s) from None
    if connection is None:
        raise Refused(401, "bad_write_key", "invalid write key: use the one `segment-elt connections create` printed")
    return connection


def _too_large() -> Refused:
    return Refused(400, "too_large", f"request larger than {MAX_BATCH_BYTES // 1024} KB: send smaller batches")


def inflate(raw: bytes, content_encoding: str | None) -> bytes:
    """The body as sent (read up to MAX_BATCH_BYTES + 1), gzip inflated, at most MAX_BATCH_BYTES
    either way (a gzip bomb stops there)."""
    if len(raw) > MAX_BATCH_BYTES:
        raise _too_large()
    encoding = (content_encoding or "identity").strip().lower()
    if encoding in ("", "identity"):
        return raw
    if encoding != "gzip":
        raise Refused(400, "bad_body", f"Content-Encoding {encoding[:40]!r} is not supported: send gzip or none")
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        inflated = inflater.decompress(raw, MAX_BATCH_BYTES + 1)
    except zlib.error:
        raise Refused(400, "bad_body", "the body is not valid gzip (Content-Encoding: gzip)") from None
    if len(inflated) > MAX_BATCH_BYTES or inflater.unconsumed_tail:
        raise _too_large()
    if not inflater.eof or inflater.unused_data:
        raise Refused(400, "bad_body", "the body is not one complete gzip stream (Content-Encoding: gzip)")
    return inflated


def _parse(raw: bytes) -> dict:
    try:
        doc = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise Refused(400, "bad_body", f"body is not valid UTF-8 (byte {exc.start})") from None
    except (ValueError, RecursionError) as exc:
        raise Refused(400, "bad_body", f"body is not valid JSON: {str(exc)[:200]}") from None
    if not isinstance(doc, dict):
        raise Refused(400, "bad_body", "body must be a JSON object")
    return doc


def normalise(doc: dict, kind: str | None, received_at: dt.datetime) -> list[dict]:
    """The events of a call (`kind` its type) or of a batch (kind None), as Segment delivers them;
    raises Refused(400) naming the first event over a limit or missing a field."""
    raw_events: object
    if kind is not None:
        raw_events, context, sent_at = [doc], None, None
    else:
        raw_events, context, sent_at = doc.get("batch"), doc.get("context"), doc.get("sentAt")
        if not isinstance(raw_events, list) or not raw_events:
            raise Refused(400, "bad_body", "a batch needs a non-empty array `batch` of events")
    received = _iso(received_at)
    out = []
    for index, event in enumerate(raw_events):
        where = f"batch element {index}: " if kind is None else ""
        if not isinstance(event, dict):
            raise Refused(400, "bad_body", f"{where}an event must be a JSON object")
        event = {k: v for k, v in event.items() if k != "writeKey"}
        try:
            size = len(json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogatepass"))
        except (ValueError, RecursionError):
            raise Refused(400, "bad_body", f"{where}the event cannot be read as JSON") from None
        if size > MAX_EVENT_BYTES:
            raise Refused(400, "too_large", f"{where}event larger than {MAX_EVENT_BYTES // 1024} KB ({size} bytes)")
        event_type = kind or event.get("type")
        if event_type not in TYPES:
            raise Refused(400, "bad_body", f"{where}`type` must be one of track, identify, page, screen, group, alias")
        missing = [f for f in REQUIRED.get(event_type, ()) if not _present(event.get(f))]
        if not (_present(event.get("userId")) or _present(event.get("anonymousId"))):
            missing.insert(0, "userId or anonymousId")
        if missing:
            raise Refused(400, "missing_field", f"{where}a {event_type} call needs {', '.join(missing)}")
        event["type"] = event_type
        if isinstance(context, dict):
            own = event.get("context")
            event["context"] = {**context, **own} if isinstance(own, dict) else context
        event["messageId"] = landing.message_id(event)  # as sent: a retried request keeps derived ids
        _correct_clock(event, event.get("sentAt", sent_at), received_at)
        event["receivedAt"] = received
        out.append(event)
    return out


def _present(value) -> bool:
    return (isinstance(value, str) and value != "") or (isinstance(value, (int, float)) and not isinstance(value, bool))


def _correct_clock(event: dict, sent_at, received_at: dt.datetime) -> None:
    """Segment's clock skew correction: timestamp = receivedAt - (sentAt - the client's timestamp),
    the client's value kept as originalTimestamp; no client timestamp: receivedAt. A time that is
    not ISO 8601 is left as sent."""
    original = event.get("timestamp", event.get("originalTimestamp"))
    if sent_at is not None:
        event["sentAt"] = sent_at
    if original is None:
        event["timestamp"] = _iso(received_at)
        return
    event["originalTimestamp"] = original
    happened, sent = _instant(original), _instant(sent_at)
    try:
        event["timestamp"] = _iso(received_at - (sent - happened)) if happened and sent else original
    except OverflowError:  # a time near year 1 or 9999
        event["timestamp"] = original


def _instant(value) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00") if value.endswith("Z") else value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=dt.UTC)


def _iso(at: dt.datetime) -> str:
    return at.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
