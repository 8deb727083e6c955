"""Orgs and connections: create, list, delete, secret and write key rotation, allowlists, rate limits, recent events."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets
from dataclasses import dataclass

import psycopg

from segment_elt import db
from segment_elt.control import crypto
from segment_elt.errors import UserError
from segment_elt.settings import settings

ORG_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MAX_EVENT_NAME = 200
MAX_RECENT = 10_000
DEFAULT_RATE_LIMIT_PER_MINUTE = 600
WRITE_KEY_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


@dataclass
class Created:
    connection_id: str
    org_id: str
    name: str | None
    webhook_url: str
    secret: str
    write_key: str
    tracking_api_host: str
    rate_limit_per_minute: int


def webhook_url(connection_id: str) -> str:
    return f"{settings().public_base_url}/webhooks/segment/{connection_id}"


def tracking_api_host() -> str:
    """Where Segment's SDKs send (their `host`): the receiver answers /v1/track, /v1/batch ... there."""
    return settings().public_base_url


def write_key_digest(write_key: str) -> str:
    """What control.connections.write_key_sha256 holds: the key identifies its connection by it."""
    return hashlib.sha256(write_key.encode("utf-8", "surrogatepass")).hexdigest()


def _new_write_key() -> tuple[str, str, str]:
    """A new write key, its Fernet token and its digest."""
    key = "".join(secrets.choice(WRITE_KEY_ALPHABET) for _ in range(32))  # like Segment's; 190 bits
    return key, crypto.encrypt(key), write_key_digest(key)


def create(conn: psycopg.Connection, org_id: str, name: str | None = None, rate_limit: int | None = None) -> Created:
    if not ORG_ID.match(org_id):
        raise UserError(
            f"org id {org_id!r} is invalid: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    if rate_limit is not None and rate_limit <= 0:
        raise UserError("--rate-limit must be a positive number of events per minute")
    connection_id = "conn_" + secrets.token_hex(12)
    secret = crypto.new_secret()
    write_key, write_key_enc, write_key_sha256 = _new_write_key()
    with conn.transaction():
        conn.execute(
            "insert into control.orgs (org_id, rate_limit_per_minute) values (%s, %s) on conflict (org_id) do nothing",
            (org_id, rate_limit or DEFAULT_RATE_LIMIT_PER_MINUTE),
        )
        if rate_limit is not None:
            _set_org_rate_limit(conn, org_id, rate_limit)
        conn.execute(
            "insert into control.connections (connection_id, org_id, name, secret_enc, write_key_enc, write_key_sha256)"
            " values (%s, %s, %s, %s, %s, %s)",
            (connection_id, org_id, name, crypto.encrypt(secret), write_key_enc, write_key_sha256),
        )
    cap = db.one(conn, "select rate_limit_per_minute from control.orgs where org_id = %s", (org_id,))[0]
    return Created(connection_id, org_id, name, webhook_url(connection_id), secret, write_key, tracking_api_host(), cap)


def rotate_write_key(conn: psycopg.Connection, connection_id: str) -> str:
    """Give the connection a new tracking API write key (also the way a connection made before
    write keys existed gets one); returns it. The previous key is refused from now on (a receiver
    process that cached it stops accepting it within backends.SECRETS_TTL_S)."""
    require_live(conn, connection_id)
    write_key, write_key_enc, write_key_sha256 = _new_write_key()
    conn.execute(
        "update control.connections set write_key_enc = %s, write_key_sha256 = %s where connection_id = %s",
        (write_key_enc, write_key_sha256, connection_id),
    )
    return write_key


@dataclass
class Rotation:
    connection_id: str
    secret: str | None  # the new secret (shown once), None when finishing
    previous_until: dt.datetime | None  # the previous secret verifies until then; None: refused now


def rotate_secret(conn: psycopg.Connection, connection_id: str, grace: dt.timedelta) -> Rotation:
    """Give the connection a new secret; the current one keeps verifying for `grace`, so Segment's
    settings can be updated without a single refused request. One rotation at a time."""
    require_live(conn, connection_id)
    secret = crypto.new_secret()
    with conn.transaction():
        (rotating_until,) = db.one(
            conn,
            "select previous_secret_until from control.connections where connection_id = %s for update",
            (connection_id,),
        )
        if rotating_until is not None and rotating_until > dt.datetime.now(dt.UTC):
            raise UserError(
                f"{connection_id} is already rotating: its previous secret verifies until "
                f"{rotating_until:%Y-%m-%d %H:%M} UTC; finish that first with `connections rotate-secret "
                f"{connection_id} --finish`"
            )
        (until,) = db.one(
            conn,
            "update control.connections set previous_secret_enc = secret_enc, secret_enc = %s,"
            " previous_secret_until = now() + %s where connection_id = %s returning previous_secret_until",
            (crypto.encrypt(secret), grace, connection_id),
        )
    return Rotation(connection_id, secret, until)


def finish_rotation(conn: psycopg.Connection, connection_id: str) -> Rotation:
    """Refuse the previous secret from now on."""
    require_live(conn, connection_id)
    conn.execute(
        "update control.connections set previous_secret_enc = null, previous_secret_until = null"
        " where connection_id = %s",
        (connection_id,),
    )
    return Rotation(connection_id, None, None)


def require_live(conn: psycopg.Connection, connection_id: str) -> str:
    row = conn.execute(
        "select org_id from control.connections where connection_id = %s and deleted_at is null", (connection_id,)
    ).fetchone()
    if row is None:
        raise UserError(f"no connection {connection_id!r}: see `segment-elt connections list`")
    return row[0]


def list_connections(conn: psycopg.Connection, org_id: str | None = None) -> list[dict]:
    rows = conn.execute(
        """
        select c.connection_id, c.org_id, c.name, c.created_at, o.rate_limit_per_minute,
               (select count(*) from control.allowlist a where a.connection_id = c.connection_id) as allowlisted_events,
               coalesce(ob.enabled, false) as outbound_enabled, ob.region as outbound_region
        from control.connections c
        join control.orgs o on o.org_id = c.org_id
        left join control.outbound ob on ob.connection_id = c.connection_id
        where c.deleted_at is null and (%(org)s::text is null or c.org_id = %(org)s)
        order by c.org_id, c.created_at
        """,
        {"org": org_id},
    ).fetchall()
    keys = [
        "connection_id",
        "org_id",
        "name",
        "created_at",
        "rate_limit_per_minute",
        "allowlisted_events",
        "outbound_enabled",
        "outbound_region",
    ]
    out = [dict(zip(keys, row, strict=True)) for row in rows]
    for item in out:
        item["webhook_url"] = webhook_url(item["connection_id"])
        item["created_at"] = item["created_at"].isoformat()
    return out


def delete(conn: psycopg.Connection, connection_id: str) -> None:
    """Soft-delete: the URL answers 404 at once; staged events stay for the rollups."""
    require_live(conn, connection_id)
    conn.execute("update control.connections set deleted_at = now() where connection_id = %s", (connection_id,))


def _clean_names(names: list[str]) -> list[str]:
    cleaned = []
    for raw in names:
        name = raw.strip()
        if not name:
            continue
        if len(name) > MAX_EVENT_NAME or not name.isprintable():
            raise UserError(
                f"event name {raw[:40]!r} is invalid: printable text of at most {MAX_EVENT_NAME} characters"
            )
        cleaned.append(name)
    return cleaned


def allowlist(
    conn: psycopg.Connection,
    connection_id: str,
    *,
    set_to: list[str] | None = None,
    add: list[str] | None = None,
    remove: list[str] | None = None,
) -> list[str]:
    """Edit a connection's allowlist (track event names, or $page, $screen, $identify, $group, $alias)."""
    require_live(conn, connection_id)
    with conn.transaction():
        if set_to is not None:
            conn.execute("delete from control.allowlist where connection_id = %s", (connection_id,))
            add = set_to
        for name in _clean_names(add or []):
            conn.execute(
                "insert into control.allowlist (connection_id, event_name) values (%s, %s) on conflict do nothing",
                (connection_id, name),
            )
        names = _clean_names(remove or [])
        if names:
            conn.execute(
                "delete from control.allowlist where connection_id = %s and event_name = any(%s)",
                (connection_id, names),
            )
    return [
        r[0]
        for r in conn.execute(
            "select event_name from control.allowlist where connection_id = %s order by event_name", (connection_id,)
        )
    ]


def _set_org_rate_limit(conn: psycopg.Connection, org_id: str, per_minute: int) -> None:
    conn.execute("update control.orgs set rate_limit_per_minute = %s where org_id = %s", (per_minute, org_id))
    conn.execute("update control.rate_buckets set tokens = least(tokens, %s) where org_id = %s", (per_minute, org_id))


def set_rate_limit(conn: psycopg.Connection, connection_id: str, per_minute: int) -> str:
    """Set the events-per-minute cap of the connection's org (shared by all its connections)."""
    if per_minute <= 0:
        raise UserError("PER_MINUTE must be a positive number of events per minute")
    org_id = require_live(conn, connection_id)
    with conn.transaction():
        _set_org_rate_limit(conn, org_id, per_minute)
    return org_id


def recent_events(conn: psycopg.Connection, connection_id: str, limit: int = 50) -> list[dict]:
    """The newest staged events, with what Segment sent as group and user ids (the debug list)."""
    require_live(conn, connection_id)
    if not 1 <= limit <= MAX_RECENT:
        raise UserError(f"--limit must be between 1 and {MAX_RECENT}")
    rows = conn.execute(
        """
        select e.received_at, e.message_id, e.event_type, n.event_name,
               (a.event_name is not null) as in_allowlist,
               coalesce(e.payload->>'groupId', e.payload->'context'->>'groupId') as external_group_id,
               e.payload->>'userId' as external_user_id
        from raw.segment_events e
        cross join lateral (select case e.event_type
            when 'track' then e.payload->>'event' when 'page' then '$page' when 'screen' then '$screen'
            when 'identify' then '$identify' when 'group' then '$group' when 'alias' then '$alias' end as event_name) n
        left join control.allowlist a on a.connection_id = e.connection_id and a.event_name = n.event_name
        where e.connection_id = %s
        order by e.received_at desc, e.message_id
        limit %s
        """,
        (connection_id, limit),
    ).fetchall()
    keys = [
        "received_at",
        "message_id",
        "event_type",
        "event_name",
        "in_allowlist",
        "external_group_id",
        "external_user_id",
    ]
    return [dict(zip(keys, row, strict=True), received_at=row[0].isoformat()) for row in rows]


def rejects(conn: psycopg.Connection, connection_id: str, limit: int = 50) -> list[dict]:
    """The newest refusals the receivers answered for the connection (control.rejects)."""
    require_live(conn, connection_id)
    if not 1 <= limit <= MAX_RECENT:
        raise UserError(f"--limit must be between 1 and {MAX_RECENT}")
    rows = conn.execute(
        "select rejected_at, status, reason, repeats, body_bytes, body_head from control.rejects"
        " where connection_id = %s order by rejected_at desc limit %s",
        (connection_id, limit),
    ).fetchall()
    keys = ["rejected_at", "status", "reason", "repeats", "body_bytes", "body_head"]
    return [dict(zip(keys, row, strict=True), rejected_at=row[0].isoformat()) for row in rows]
