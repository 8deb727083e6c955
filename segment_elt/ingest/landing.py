"""Landing events into raw.segment_events: the envelope only, idempotent on (connection, messageId).

Shared by the receiver (live requests, a group at a time) and the replay DAG (archived
objects, a group at a time), so both give the same rows for the same bytes.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math

import psycopg

MAX_MESSAGE_ID_CHARS = 256


class BadBody(ValueError):
    """The body is not JSON, or not an object or an array of objects."""


def parse_body(body: bytes) -> tuple[str, list[dict]]:
    """Decode and parse a request body into its text and its events."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadBody(f"body is not valid UTF-8 (byte {exc.start})") from None
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise BadBody(f"body is not valid JSON: {str(exc)[:200]}") from None
    if isinstance(doc, dict):
        return text, [doc]
    if isinstance(doc, list):
        if not doc:
            raise BadBody("body is an empty JSON array: send at least one event")
        bad = next((i for i, item in enumerate(doc) if not isinstance(item, dict)), None)
        if bad is not None:
            raise BadBody(f"element {bad} of the JSON array is not an object: each event must be a JSON object")
        return text, doc
    raise BadBody("body must be a JSON object (one event) or an array of objects (a batch)")


def without_events(text: str, drop: list[bool]) -> str | None:
    """The body `text` (as parse_body read it) without the events marked in `drop`, every other
    event's bytes as they were; None when none is left. An array keeps its brackets' spacing,
    and its kept elements are joined by ','."""
    if not any(drop):
        return text
    if all(drop):
        return None
    decoder, spans, at = json.JSONDecoder(), [], text.index("[") + 1
    for _ in drop:
        while text[at] in " \t\r\n,":
            at += 1
        _, end = decoder.raw_decode(text, at)
        spans.append((at, end))
        at = end
    kept = [text[start:end] for (start, end), dropped in zip(spans, drop, strict=True) if not dropped]
    return text[: text.index("[") + 1] + ",".join(kept) + text[at:]


def message_id(event: dict) -> str:
    """The event's messageId, or a deterministic id derived from its content."""
    mid = event.get("messageId")
    if isinstance(mid, str) and 0 < len(mid) <= MAX_MESSAGE_ID_CHARS and "\x00" not in mid and mid.isprintable():
        return mid
    canonical = json.dumps(event, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return "derived-" + hashlib.sha256(canonical.encode()).hexdigest()[:32]


def event_type(event: dict) -> str | None:
    kind = event.get("type")
    if isinstance(kind, str) and 0 < len(kind) <= 32 and kind.isprintable():
        return kind
    return None


def _storable(value):
    """A copy PostgreSQL's jsonb can store: NUL and lone surrogates become U+FFFD, non-finite floats null."""
    if isinstance(value, str):
        if "\x00" in value:
            value = value.replace("\x00", "\ufffd")
        return value.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    if isinstance(value, dict):
        return {_storable(k): _storable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_storable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


_INSERT_FROM_BODY = """
insert into raw.segment_events
    (connection_id, org_id, message_id, event_type, received_at, archive_key, payload)
select %(connection_id)s, %(org_id)s, m.message_id, m.event_type, %(received_at)s, %(archive_key)s, e.value
from unnest(%(message_ids)s::text[], %(event_types)s::text[]) with ordinality as m (message_id, event_type, i)
join {elements} with ordinality as e (value, i) on e.i = m.i
on conflict (connection_id, message_id) do nothing
"""
_ARRAY = _INSERT_FROM_BODY.format(elements="jsonb_array_elements(%(body)s::jsonb)")
_OBJECT = _INSERT_FROM_BODY.format(elements="unnest(array[%(body)s::jsonb])")
_SANITISED = _INSERT_FROM_BODY.format(elements="unnest(%(payloads)s::jsonb[])")


def insert_events(
    conn: psycopg.Connection,
    *,
    connection_id: str,
    org_id: str,
    text: str,
    events: list[dict],
    received_at: dt.datetime,
    archive_key: str,
) -> int:
    """Insert the events of one request in the caller's transaction; returns how many were new.

    PostgreSQL parses the exact body text into jsonb; only when it refuses (NUL characters or
    lone surrogates, which jsonb cannot hold) are sanitised copies stored instead. The archive
    keeps the exact bytes either way.
    """
    params = {
        "connection_id": connection_id,
        "org_id": org_id,
        "received_at": received_at,
        "archive_key": archive_key,
        "message_ids": [message_id(e) for e in events],
        "event_types": [event_type(e) for e in events],
        "body": text,
    }
    statement = _OBJECT if text.lstrip().startswith("{") else _ARRAY
    with conn.cursor() as cur:
        try:
            _execute_atomically(conn, cur, statement, params)
        except psycopg.DataError:
            params["payloads"] = [json.dumps(_storable(e), ensure_ascii=False) for e in events]
            cur.execute(_SANITISED, params)
        return cur.rowcount


_INSERT_GROUP = """
insert into raw.segment_events
    (connection_id, org_id, message_id, event_type, received_at, archive_key, payload)
select %(connection_id)s, %(org_id)s, e.mark->>0, e.mark->>1, r.received_at, %(archive_key)s, e.value
from rows from (
    jsonb_array_elements(%(bodies)s::jsonb), jsonb_array_elements(%(marks)s::jsonb),
    unnest(%(received_ats)s::timestamptz[])
) as r (body, marks, received_at)
cross join lateral rows from (
    jsonb_array_elements(case jsonb_typeof(r.body) when 'array' then r.body else jsonb_build_array(r.body) end),
    jsonb_array_elements(r.marks)
) as e (value, mark)
where e.mark <> 'null'
on conflict (connection_id, message_id) do nothing
returning message_id
"""


# The receiver's: the same insert, noting an object any of whose events was staged before
# (a duplicate) in raw.archive_objects_with_duplicates, in the same statement.
_INSERT_GROUP_NOTING = f"""
with landed as ({_INSERT_GROUP}),
noted as (
    insert into raw.archive_objects_with_duplicates (archive_key)
    select %(archive_key)s where (select count(*) from landed) < %(events)s
    on conflict do nothing
)
select message_id from landed
"""


def insert_group(
    conn: psycopg.Connection,
    *,
    connection_id: str,
    org_id: str,
    archive_key: str,
    requests: list[tuple[dt.datetime, str, list[dict]]],
    note_duplicates: bool = False,
) -> list[int]:
    """Insert the events of a group of requests (received time, body text, events) archived under one
    key, all or nothing; returns how many events of each request were new. With `note_duplicates`
    (the receiver, which writes the object), an object holding an event already staged is noted in
    raw.archive_objects_with_duplicates in the same transaction.

    One statement: PostgreSQL parses each exact body text into jsonb. An event whose messageId an
    earlier request of the group already carries counts as that request's duplicate, as if the
    requests had landed one after the other. When PostgreSQL refuses a body (see insert_events),
    the requests land one by one in one transaction instead.
    """
    first_seen: dict[str, int] = {}  # messageId -> the request number that lands it
    # per request, per event: (messageId, type), or None when an earlier event of the group has its id
    marks: list[list[tuple[str, str | None] | None]] = []
    for n, (_, _, events) in enumerate(requests):
        own: list[tuple[str, str | None] | None] = []
        marks.append(own)
        for event in events:
            mid = message_id(event)
            if mid in first_seen:
                own.append(None)
            else:
                first_seen[mid] = n
                own.append((mid, event_type(event)))
    total = sum(len(events) for _, _, events in requests)
    params: dict[str, object] = {
        "connection_id": connection_id,
        "org_id": org_id,
        "archive_key": archive_key,
        "events": total,
        # JSON texts PostgreSQL parses in one go, walked side by side (rows from ...): array
        # parameters would make psycopg escape every element in Python first (the bodies' every
        # quote). messageIds and types are printable without NUL, so jsonb holds them.
        "bodies": "[" + ",".join(text for _, text, _ in requests) + "]",
        "marks": json.dumps(marks, separators=(",", ":")),
        "received_ats": [at for at, _, _ in requests],
    }
    new = [0] * len(requests)
    with conn.cursor() as cur:
        try:
            _execute_atomically(conn, cur, _INSERT_GROUP_NOTING if note_duplicates else _INSERT_GROUP, params)
        except psycopg.DataError:
            with conn.transaction():
                new = [
                    insert_events(
                        conn,
                        connection_id=connection_id,
                        org_id=org_id,
                        text=text,
                        events=events,
                        received_at=at,
                        archive_key=archive_key,
                    )
                    for at, text, events in requests
                ]
                if note_duplicates and sum(new) < total:
                    conn.execute(
                        "insert into raw.archive_objects_with_duplicates (archive_key) values (%s)"
                        " on conflict do nothing",
                        (archive_key,),
                    )
                return new
        for (mid,) in cur.fetchall():
            new[first_seen[mid]] += 1
    return new


def _execute_atomically(conn: psycopg.Connection, cur: psycopg.Cursor, statement: str, params: dict) -> None:
    """One statement that either happens in full or leaves the caller's transaction as it was."""
    if conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE and conn.autocommit:
        cur.execute(statement, params)  # one round trip, atomic on its own
    else:
        with conn.transaction():  # a savepoint, so a refusal leaves the caller's work intact
            cur.execute(statement, params)
