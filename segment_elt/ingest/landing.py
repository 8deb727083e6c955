"""Landing events into raw.segment_events: the envelope only, idempotent on (connection, messageId).

Shared by the receiver (live requests, a group at a time) and the replay DAG (archived
objects, a group at a time), so both give the same rows for the same bytes.

The table is partitioned by UTC receive day and PostgreSQL keeps (connection_id, message_id)
unique only within a partition, so landing keeps it unique across them (docs/tables.md#dedup):
each statement skips the messageIds any partition already holds, under the connection's landing
lock, taken first in the same transaction. Statements whose rows all fall in the database's
current UTC day, away from midnight, take it shared: they all write one partition, whose unique
index settles their races. Any other statement (a replay, a late or early clock, the minutes
around midnight) takes it exclusive, so its check sees every other writer's rows committed.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math

import psycopg

MAX_MESSAGE_ID_CHARS = 256
# Shared-mode statements start at least this long after midnight and must have landed before the
# next one, so two shared writers of different days never overlap (see _landing_lock).
SHARED_MARGIN = dt.timedelta(minutes=5)


class BadBody(ValueError):
    """The body is not JSON, or not an object or an array of objects."""


class LandedTooLate(psycopg.OperationalError):
    """A shared-mode statement ran into the next UTC day; it was rolled back and may be retried."""


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
where not exists (
    select 1 from raw.segment_events as staged
    where staged.connection_id = %(connection_id)s and staged.message_id = m.message_id
)
on conflict do nothing
returning clock_timestamp()
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
    try:
        return len(_land(conn, _OBJECT if text.lstrip().startswith("{") else _ARRAY, params, [received_at]))
    except psycopg.DataError:
        params["payloads"] = [json.dumps(_storable(e), ensure_ascii=False) for e in events]
        return len(_land(conn, _SANITISED, params, [received_at]))


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
where e.mark <> 'null' and not exists (
    select 1 from raw.segment_events as staged
    where staged.connection_id = %(connection_id)s and staged.message_id = e.mark->>0
)
on conflict do nothing
returning message_id, clock_timestamp()
"""


def insert_group(
    conn: psycopg.Connection,
    *,
    connection_id: str,
    org_id: str,
    archive_key: str,
    requests: list[tuple[dt.datetime, str, list[dict]]],
) -> list[int]:
    """Insert the events of a group of requests (received time, body text, events) archived under one
    key, all or nothing; returns how many events of each request were new.

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
    params = {
        "connection_id": connection_id,
        "org_id": org_id,
        "archive_key": archive_key,
        # JSON texts PostgreSQL parses in one go, walked side by side (rows from ...): array
        # parameters would make psycopg escape every element in Python first (the bodies' every
        # quote). messageIds and types are printable without NUL, so jsonb holds them.
        "bodies": "[" + ",".join(text for _, text, _ in requests) + "]",
        "marks": json.dumps(marks, separators=(",", ":")),
        "received_ats": [at for at, _, _ in requests],
    }
    try:
        landed = _land(conn, _INSERT_GROUP, params, [at for at, _, _ in requests])
    except psycopg.DataError:
        with conn.transaction():
            return [
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
    new = [0] * len(requests)
    for mid, _ in landed:
        new[first_seen[mid]] += 1
    return new


def _land(conn: psycopg.Connection, statement: str, params: dict, received_ats: list[dt.datetime]) -> list[tuple]:
    """Run one landing statement under the landing lock, all or nothing (a transaction, or a
    savepoint in the caller's); returns the rows it inserted."""
    with conn.transaction(), conn.cursor() as cur:
        day_end = _landing_lock(cur, params["connection_id"], received_ats)
        cur.execute(statement, params)
        return _in_time(cur.fetchall(), day_end)


_LANDING_LOCK = """
with decided as (
    select
        day_start + interval '1 day' as day_end,
        min(r.at) >= day_start
        and max(r.at) < day_start + interval '1 day'
        and clock_timestamp() >= day_start + %(margin)s
        and clock_timestamp() < day_start + interval '1 day' - %(margin)s as shared
    from unnest(%(received_ats)s::timestamptz[]) as r (at),
        lateral (select (clock_timestamp() at time zone 'UTC')::date::timestamp at time zone 'UTC' as day_start) as d
    group by day_start
)
select
    case when shared then day_end end,
    case
        when shared then pg_advisory_xact_lock_shared(hashtext('raw.segment_events'), hashtext(%(connection_id)s))::text
        else pg_advisory_xact_lock(hashtext('raw.segment_events'), hashtext(%(connection_id)s))::text
    end
from decided
"""


def _landing_lock(cur: psycopg.Cursor, connection_id: str, received_ats: list[dt.datetime]) -> dt.datetime | None:
    """Take the connection's landing lock in the caller's transaction (see the module docstring);
    returns the end of the day a shared-mode statement must land within, None in exclusive mode."""
    cur.execute(_LANDING_LOCK, {"received_ats": received_ats, "margin": SHARED_MARGIN, "connection_id": connection_id})
    row = cur.fetchone()
    return row[0] if row else None


def _in_time(rows: list[tuple], day_end: dt.datetime | None) -> list[tuple]:
    """The rows a statement returned (each ending with its insert time), or LandedTooLate when a
    shared-mode statement inserted one after its day ended (the transaction then rolls back)."""
    if day_end is not None and rows and max(row[-1] for row in rows) >= day_end:
        raise LandedTooLate(f"a shared-mode landing ran past the end of its UTC day ({day_end}); retry it")
    return rows
