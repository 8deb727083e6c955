"""Landing events into raw.segment_events: the envelope only, idempotent on (connection, messageId).

Shared by the receiver (live requests, a group at a time) and the replay DAG (archived
objects, a group at a time), so both give the same rows for the same bytes.

The table is partitioned by UTC receive day and PostgreSQL keeps (connection_id, message_id)
unique only within a partition, so landing keeps it unique across them (docs/tables.md#dedup-across-partitions):
each statement skips the messageIds any partition already holds, under the connection's landing
lock, taken first in the same statement (a session function). Statements whose rows all fall in the database's
current UTC day, away from midnight, take it shared: they all write one partition, whose unique
index settles their races. Any other statement (a replay, a late or early clock, the minutes
around midnight) takes it exclusive, so its check sees every other writer's rows committed.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import weakref

import psycopg
from psycopg.types.numeric import Int8

from segment_elt.ingest.archive import ObjectDigest

MAX_MESSAGE_ID_CHARS = 256
# Shared-mode statements start at least this long after midnight and must have landed before the
# next one, so two shared writers of different days never overlap (_LOCK_FUNCTION; one that lands
# late is rolled back with a serialization failure, which the receiver answers 503 and retries).
SHARED_MARGIN = dt.timedelta(minutes=5)


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


def insert_events(
    conn: psycopg.Connection,
    *,
    connection_id: str,
    org_id: str,
    text: str,
    events: list[dict],
    received_at: dt.datetime,
    archive_key: str,
    archive_digest: ObjectDigest | None = None,
) -> int:
    """Insert the events of one request, all or nothing; returns how many were new (see insert_group)."""
    return insert_group(
        conn,
        connection_id=connection_id,
        org_id=org_id,
        archive_key=archive_key,
        requests=[(received_at, text, events)],
        archive_digest=archive_digest,
    )[0]


def insert_group(
    conn: psycopg.Connection,
    *,
    connection_id: str,
    org_id: str,
    archive_key: str,
    requests: list[tuple[dt.datetime, str, list[dict]]],
    archive_digest: ObjectDigest | None = None,
    note_duplicates: bool = False,
) -> list[int]:
    """Insert the events of a group of requests (received time, body text, events) archived under one
    key, all or nothing; returns how many events of each request were new. `archive_digest` is what
    the put of the archive object answered; every writer of an object passes it (None: rows with no
    object of their own). With `note_duplicates` (the receiver, which writes the object), an object
    holding an event already staged is noted in raw.archive_objects_with_duplicates in the same
    statement.

    One statement (and one round trip): PostgreSQL parses each exact body text into jsonb. An event whose messageId an
    earlier request of the group already carries counts as that request's duplicate, as if the
    requests had landed one after the other. When PostgreSQL refuses a body,
    the requests land one by one in one transaction instead, a refused one as sanitised copies
    (NUL characters or lone surrogates, which jsonb cannot hold, become U+FFFD); the archive keeps
    the exact bytes either way.
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
    noted = sum(len(events) for _, _, events in requests) if note_duplicates else None
    try:
        landed = _land(
            conn,
            connection_id,
            org_id,
            archive_key,
            archive_digest,
            noted,
            [text for _, text, _ in requests],
            marks,
            [at for at, _, _ in requests],
        )
    except psycopg.DataError:
        if len(requests) > 1:
            with conn.transaction():
                return [
                    insert_group(
                        conn,
                        connection_id=connection_id,
                        org_id=org_id,
                        archive_key=archive_key,
                        requests=[request],
                        archive_digest=archive_digest,
                        note_duplicates=note_duplicates,
                    )[0]
                    for request in requests
                ]
        sanitised = "[" + ",".join(json.dumps(_storable(e), ensure_ascii=False) for e in requests[0][2]) + "]"
        landed = _land(
            conn, connection_id, org_id, archive_key, archive_digest, noted, [sanitised], marks, [requests[0][0]]
        )
    new = [0] * len(requests)
    for mid in landed:
        new[first_seen[mid]] += 1
    return new


# The landing lock (module docstring): exclusive, or shared and then the end of the UTC day the
# shared statement must have landed within is returned.
_LOCK_FUNCTION = """
create or replace function pg_temp.landing_lock(
    p_connection_id text, p_received_ats timestamptz[], p_margin interval
) returns timestamptz language plpgsql as $$
declare
    v_day_start timestamptz := (clock_timestamp() at time zone 'UTC')::date::timestamp at time zone 'UTC';
    v_shared boolean;
begin
    select
        min(r.at) >= v_day_start and max(r.at) < v_day_start + interval '1 day'
        and clock_timestamp() >= v_day_start + p_margin
        and clock_timestamp() < v_day_start + interval '1 day' - p_margin
    into v_shared
    from unnest(p_received_ats) as r (at);
    if v_shared then
        perform pg_advisory_xact_lock_shared(hashtext('raw.segment_events'), hashtext(p_connection_id));
        return v_day_start + interval '1 day';
    end if;
    perform pg_advisory_xact_lock(hashtext('raw.segment_events'), hashtext(p_connection_id));
    return null;
end $$
"""

# Land a group's events (the request bodies as one JSON array; their marks, [messageId, type] per
# event or null for one an earlier event of the group carries; their receive times) under the
# landing lock: the insert, a statement after the lock, sees every writer that held it before.
# Returns the messageIds landed. With p_events (the group's number of events), an object whose
# events did not all land (duplicates) is noted in raw.archive_objects_with_duplicates. `seen`
# reads the group's ids already staged with one index scan of each partition for all of them
# (= any); a probe per event rescans every partition's index once per event, 6-10x the cost for
# a 100-event body (docs/scaling.md#the-receivers-hot-path-on-the-partitioned-table).
_LAND_FUNCTION = """
create or replace function pg_temp.land_group(
    p_connection_id text, p_org_id text, p_archive_key text, p_archive_size bigint, p_archive_md5 bytea,
    p_events integer, p_bodies jsonb, p_marks jsonb, p_received_ats timestamptz[], p_margin interval
) returns table (landed_id text) language plpgsql as $$
declare
    v_day_end timestamptz := pg_temp.landing_lock(p_connection_id, p_received_ats, p_margin);
    v_rows integer;
begin
    return query
    with seen as materialized (
        select staged.message_id
        from raw.segment_events as staged
        where staged.connection_id = p_connection_id and staged.message_id = any (array(
            select m.mark->>0
            from jsonb_array_elements(p_marks) as b (marks), jsonb_array_elements(b.marks) as m (mark)
            where m.mark <> 'null'
        ))
    )
    insert into raw.segment_events as landed
        (connection_id, org_id, message_id, event_type, received_at, archive_key, archive_size, archive_md5, payload)
    select p_connection_id, p_org_id, e.mark->>0, e.mark->>1, r.received_at, p_archive_key, p_archive_size,
        p_archive_md5, e.value
    from rows from (
        jsonb_array_elements(p_bodies), jsonb_array_elements(p_marks), unnest(p_received_ats)
    ) as r (body, marks, received_at)
    cross join lateral rows from (
        jsonb_array_elements(case jsonb_typeof(r.body) when 'array' then r.body else jsonb_build_array(r.body) end),
        jsonb_array_elements(r.marks)
    ) as e (value, mark)
    where e.mark <> 'null' and not exists (select from seen where seen.message_id = e.mark->>0)
    on conflict do nothing
    returning landed.message_id;
    get diagnostics v_rows = row_count;
    if v_rows < p_events then
        insert into raw.archive_objects_with_duplicates (archive_key) values (p_archive_key) on conflict do nothing;
    end if;
    if v_rows > 0 and clock_timestamp() >= v_day_end then
        raise exception 'a shared landing ran past the end of its UTC day (%); retry it', v_day_end
            using errcode = 'serialization_failure';
    end if;
end $$
"""
_MADE: weakref.WeakKeyDictionary[psycopg.Connection, int] = weakref.WeakKeyDictionary()


def _land(
    conn: psycopg.Connection,
    connection_id: str,
    org_id: str,
    archive_key: str,
    digest: ObjectDigest | None,
    note_events: int | None,
    bodies: list[str],
    marks: list,
    received_ats: list[dt.datetime],
) -> list[str]:
    """One statement that lands the group or nothing (pg_temp.land_group, made once per session)."""
    if _MADE.get(conn) != conn.info.backend_pid:
        conn.execute(_LOCK_FUNCTION)
        conn.execute(_LAND_FUNCTION)
        if conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:  # no rollback can undo them
            _MADE[conn] = conn.info.backend_pid
    # JSON texts PostgreSQL parses in one go, walked side by side (rows from ...): array
    # parameters would make psycopg escape every element in Python first (the bodies' every
    # quote). messageIds and types are printable without NUL, so jsonb holds them.
    call = (
        "select landed_id from pg_temp.land_group(%s, %s, %s, %s, %s, %s, %s::jsonb, %s::jsonb, %s::timestamptz[], %s)",
        (
            connection_id,
            org_id,
            archive_key,
            # int8, the column's type: psycopg would send a small int as int2, whose conversion
            # measured ~10% of the insert (benchmarks/bench_digests.py)
            Int8(digest.size) if digest else None,
            digest.md5 if digest else None,
            note_events,
            "[" + ",".join(bodies) + "]",
            json.dumps(marks, separators=(",", ":")),
            received_ats,
            SHARED_MARGIN,
        ),
    )
    if conn.autocommit and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
        rows = conn.execute(*call).fetchall()  # atomic on its own
    else:
        with conn.transaction():  # a savepoint, so a refusal leaves the caller's work intact
            rows = conn.execute(*call).fetchall()
    return [mid for (mid,) in rows]
