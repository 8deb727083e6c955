"""Outbound sync to Segment (docs/outbound.md): computed traits, audiences, account traits, moments.

For each connection with outbound enabled, the desired messages come from the dbt models
analytics.outbound_identify / outbound_group / outbound_moments and the audience tables (schema
`audiences`). Each is compared with what Segment last accepted (control.outbound_sent): only
changes are sent (an audience left becomes false), moments once per occurrence. Only what Segment
accepted is marked sent; per-connection, per-run counts go to control.outbound_runs and the log.

Segment drops a message whose messageId it saw in the last ~24 hours. So a messageId is derived
from the content *and* the messageId Segment last accepted for the same key: a retry of the same
change keeps its id (and dedupes at Segment), while a value that comes back (A -> B -> A) chains
from B's id and gets a new one.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib.metadata
import json
import logging
from collections import Counter
from dataclasses import asdict, dataclass, field

import psycopg
from psycopg import sql

from segment_elt import db
from segment_elt.control import connections, crypto, privacy
from segment_elt.errors import UserError
from segment_elt.outbound.segment_api import (
    Outcome,
    SegmentClient,
    SegmentRejected,
    SegmentUnavailable,
)

log = logging.getLogger(__name__)
CONTEXT = {"library": {"name": "segment-elt", "version": importlib.metadata.version("segment-elt")}}
NO_PRODUCT_GROUP_ID = "group_without_product_group_id"
SUPPRESSED = "suppressed_user"


class OutboundFailed(RuntimeError):
    """At least one connection could not sync; the others did."""


@dataclass
class Counts:
    sent: int = 0
    skipped_unchanged: int = 0
    oversized: int = 0
    failed: int = 0
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> messages not sent for it
    error: str | None = None


@dataclass
class Pending:
    kind: str
    key: str
    message: dict


@dataclass
class Plan:
    """What one connection's sync will send, and what it leaves out."""

    todo: list[Pending] = field(default_factory=list)
    unchanged: int = 0
    skipped: Counter = field(default_factory=Counter)


def message_id(connection_id: str, kind: str, key: str, previous_message_id: str | None, content: dict) -> str:
    """The same change always gets the same id; the next change of the key chains from the last accepted one."""
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), default=str)
    chained = f"{connection_id}|{kind}|{key}|{previous_message_id or ''}|{canonical}"
    return f"segment-elt-{hashlib.sha256(chained.encode()).hexdigest()[:32]}"


def audiences(conn: psycopg.Connection, org_id: str) -> dict[str, set[str]]:
    """user id -> the audiences (tables of schema `audiences`) they are in."""
    members: dict[str, set[str]] = {}
    names = [
        r[0]
        for r in conn.execute(
            "select table_name from information_schema.tables where table_schema = 'audiences' order by 1"
        )
    ]
    for name in names:
        query = sql.SQL("select user_id from audiences.{} where org_id = %s").format(sql.Identifier(name))
        for (user_id,) in conn.execute(query, (org_id,)):
            members.setdefault(user_id, set()).add(name)
    return members


def desired(conn: psycopg.Connection, org_id: str, sent: dict, skipped: Counter) -> list[Pending]:
    """Every message that would bring Segment up to date, before diffing with what it has (`sent`).

    Messages that cannot be sent are counted in `skipped` by reason: a group call needs the
    groupId the product itself sent for the account, or Segment would create a second group; a
    suppressed person (docs/privacy.md) is sent nothing.
    """
    out: list[Pending] = []
    if db.relations_exist(conn, "analytics.outbound_identify"):
        member_of = audiences(conn, org_id)
        suppressed = privacy.suppressed(conn, org_id)
        key = privacy.hash_key(conn) if suppressed else b""
        for user_id, traits in conn.execute(
            "select user_id, traits from analytics.outbound_identify where org_id = %s order by user_id", (org_id,)
        ):
            if suppressed and privacy.subject_hash(key, org_id, user_id) in suppressed:
                skipped[SUPPRESSED] += 1
                continue
            traits = dict(traits)
            previous = (sent.get(("identify", user_id)) or {}).get("traits", {})
            for audience in member_of.get(user_id, ()):
                traits[audience] = True
            for name, value in previous.items():  # left an audience: false (sent once, then unchanged)
                if isinstance(value, bool) and name not in traits and _is_audience(conn, name):
                    traits[name] = False
            out.append(Pending("identify", user_id, {"type": "identify", "userId": user_id, "traits": traits}))
    if db.relations_exist(conn, "analytics.outbound_group"):
        for account_id, group_id, traits in conn.execute(
            "select account_id, group_id, traits from analytics.outbound_group where org_id = %s order by 1", (org_id,)
        ):
            if group_id is None:
                skipped[NO_PRODUCT_GROUP_ID] += 1
                continue
            out.append(
                Pending(
                    "group",
                    account_id,
                    {"type": "group", "groupId": group_id, "anonymousId": f"account:{account_id}", "traits": traits},
                )
            )
    if db.relations_exist(conn, "analytics.outbound_moments"):
        for account_id, moment, key, properties in conn.execute(
            "select account_id, moment, occurrence_key, properties from analytics.outbound_moments"
            " where org_id = %s order by 3",
            (org_id,),
        ):
            out.append(
                Pending(
                    "track",
                    key,
                    {
                        "type": "track",
                        "event": moment,
                        "anonymousId": f"account:{account_id}",
                        "properties": properties,
                    },
                )
            )
    return out


def _is_audience(conn: psycopg.Connection, name: str) -> bool:
    return db.relations_exist(conn, f'audiences."{name}"') if name.isidentifier() else False


def changes(conn: psycopg.Connection, connection_id: str, org_id: str) -> Plan:
    """The messages whose content differs from what Segment last accepted, each with its messageId."""
    sent = {
        (kind, key): (payload, last_id)
        for kind, key, payload, last_id in conn.execute(
            "select kind, key, payload, message_id from control.outbound_sent where connection_id = %s",
            (connection_id,),
        )
    }
    plan = Plan()
    for item in desired(conn, org_id, {k: payload for k, (payload, _) in sent.items()}, plan.skipped):
        previous, last_id = sent.get((item.kind, item.key), (None, None))
        if previous is not None and (item.kind == "track" or _content(previous) == _content(item.message)):
            plan.unchanged += 1
            continue
        item.message.update(
            messageId=message_id(connection_id, item.kind, item.key, last_id, item.message), context=CONTEXT
        )
        plan.todo.append(item)
    return plan


def _content(message: dict) -> dict:
    return {k: v for k, v in message.items() if k not in ("messageId", "context", "timestamp")}


def sync_connection(conn: psycopg.Connection, connection_id: str, org_id: str, **client_options) -> Counts:
    """Send one connection's changes; Segment's refusal or a write key that cannot be read ends in `error`."""
    plan = changes(conn, connection_id, org_id)
    counts = Counts(skipped_unchanged=plan.unchanged, skipped=dict(plan.skipped))
    by_id = {item.message["messageId"]: item for item in plan.todo}
    try:
        outcome = client_for(conn, connection_id, **client_options).send([item.message for item in plan.todo])
    except (SegmentRejected, SegmentUnavailable) as exc:
        outcome, counts.error = exc.outcome, str(exc)
    except (LookupError, crypto.SecretKeyError) as exc:
        outcome, counts.error = Outcome(), f"the write key cannot be used: {exc}"
    for message in outcome.accepted:
        item = by_id[message["messageId"]]
        conn.execute(
            "insert into control.outbound_sent (connection_id, kind, key, payload, message_id)"
            " values (%s, %s, %s, %s, %s)"
            " on conflict (connection_id, kind, key) do update set payload = excluded.payload,"
            " message_id = excluded.message_id, sent_at = now()",
            (connection_id, item.kind, item.key, json.dumps(_content(message), default=str), message["messageId"]),
        )
    counts.sent, counts.oversized = len(outcome.accepted), len(outcome.oversized)
    counts.failed = len(plan.todo) - counts.sent - counts.oversized
    for message in outcome.oversized:
        log.warning(
            "outbound %s: %s %s is over Segment's 32 KB limit; skipped",
            connection_id,
            message["type"],
            by_id[message["messageId"]].key,
        )
    return counts


def _record_run(conn: psycopg.Connection, connection_id: str, started: dt.datetime, counts: Counts) -> None:
    conn.execute(
        "insert into control.outbound_runs (connection_id, started_at, status, sent, skipped_unchanged, oversized,"
        " failed, skipped, error) values (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (
            connection_id,
            started,
            "failed" if counts.error else "success",
            counts.sent,
            counts.skipped_unchanged,
            counts.oversized,
            counts.failed,
            json.dumps(counts.skipped),
            counts.error,
        ),
    )
    log.info("outbound %s: %s", connection_id, json.dumps(asdict(counts)))


@dataclass(frozen=True)
class Destination:
    """Where a connection's outbound sync sends (control.outbound); the write key stays encrypted."""

    connection_id: str
    org_id: str
    region: str
    enabled: bool


def configure(
    conn: psycopg.Connection,
    connection_id: str,
    *,
    write_key: str | None = None,
    region: str | None = None,
    enabled: bool | None = None,
) -> Destination:
    """Set a live connection's outbound write key (stored encrypted), region and enabled flag; None
    keeps a value as it was. The first call needs the write key and starts enabled, in region us."""
    org_id = connections.require_live(conn, connection_id)
    key = crypto.encrypt(write_key) if write_key else None
    existing = conn.execute("select 1 from control.outbound where connection_id = %s", (connection_id,)).fetchone()
    if existing is None and key is None:
        raise UserError("--write-key is required the first time (the write key of the Segment source to send to)")
    if existing is None:
        conn.execute(
            "insert into control.outbound (connection_id, write_key_enc, region, enabled) values (%s, %s, %s, %s)",
            (connection_id, key, region or "us", enabled is not False),
        )
    else:
        conn.execute(
            "update control.outbound set write_key_enc = coalesce(%s, write_key_enc),"
            " region = coalesce(%s, region), enabled = coalesce(%s, enabled), updated_at = now()"
            " where connection_id = %s",
            (key, region, enabled, connection_id),
        )
    region, enabled = db.one(
        conn, "select region, enabled from control.outbound where connection_id = %s", (connection_id,)
    )
    return Destination(connection_id, org_id, region, enabled)


def client_for(conn: psycopg.Connection, connection_id: str, **options) -> SegmentClient:
    row = conn.execute(
        "select write_key_enc, region from control.outbound where connection_id = %s", (connection_id,)
    ).fetchone()
    if row is None:
        raise LookupError(
            f"connection {connection_id} has no outbound settings: "
            "run `segment-elt connections outbound CONNECTION_ID --write-key K --region us|eu`"
        )
    return SegmentClient(crypto.decrypt(row[0]), row[1], **options)


def sync_all(database_url: str | None = None, **client_options) -> dict:
    """Sync every enabled connection, each recorded in control.outbound_runs whatever befell the others;
    then raise OutboundFailed naming the connections that failed, so the task shows the failure."""
    results: dict[str, dict] = {}
    with db.connect(database_url, timeout_s=300) as conn:
        enabled = conn.execute(
            "select o.connection_id, c.org_id from control.outbound o join control.connections c using (connection_id)"
            " where o.enabled and c.deleted_at is null order by 1"
        ).fetchall()
        if not enabled:
            log.info("outbound sync: no connection has outbound enabled")
        for connection_id, org_id in enabled:
            started = dt.datetime.now(dt.UTC)
            try:
                counts = sync_connection(conn, connection_id, org_id, **client_options)
            except Exception as exc:  # one connection's fault must not stop the others
                log.exception("outbound %s: sync failed", connection_id)
                counts = Counts(error=f"{type(exc).__name__}: {exc}")
            _record_run(conn, connection_id, started, counts)
            results[connection_id] = asdict(counts)
    failed = {k: v["error"] for k, v in results.items() if v["error"]}
    if failed:
        raise OutboundFailed(
            f"outbound failed for {len(failed)} of {len(results)} connections: "
            + "; ".join(f"{k}: {v}" for k, v in failed.items())
        )
    return results


def preview(database_url: str | None = None, org_id: str | None = None) -> list[dict]:
    """What the next sync would send for every connection of an org (nothing is sent or marked)."""
    with db.connect(database_url) as conn:
        rows = conn.execute(
            "select connection_id, org_id from control.connections"
            " where deleted_at is null and (%s::text is null or org_id = %s)",
            (org_id, org_id),
        ).fetchall()
        return [item.message for connection_id, org in rows for item in changes(conn, connection_id, org).todo]
