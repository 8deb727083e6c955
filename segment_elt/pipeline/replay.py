"""Re-landing archived requests into staging (segment_replay, segment_daily), idempotently.

A date range of one connection is a few prefix listings of the archive; each request of each
object lands as the receiver landed it, with its original receive time, and events already
staged stay as they are. An object whose key raw.segment_events still holds is not read again.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field

import psycopg

from segment_elt.errors import UserError
from segment_elt.ingest import landing
from segment_elt.ingest.archive import (
    Archive,
    ArchiveCorrupt,
    ArchiveUnavailable,
    ObjectDigest,
    day_prefix,
    requests_in,
    verify_body,
)

MAX_DAYS = 366
log = logging.getLogger(__name__)


@dataclass
class Replayed:
    """Objects listed, of which already staged (not read); events read and newly landed."""

    objects: int = 0
    already_staged: int = 0
    events: int = 0
    new: int = 0
    failed_keys: list[str] = field(default_factory=list)

    def add(self, other: Replayed) -> None:
        self.objects += other.objects
        self.already_staged += other.already_staged
        self.events += other.events
        self.new += other.new
        self.failed_keys += other.failed_keys

    def as_dict(self) -> dict:
        return vars(self)


class ReplayIncomplete(RuntimeError):
    """Some archived objects could not be read back intact; everything else was re-landed."""

    def __init__(self, message: str, done: Replayed):
        super().__init__(message)
        self.done = done


def validate(conn: psycopg.Connection, connection_id: str, start: str, end: str) -> tuple[str, dt.date, dt.date]:
    """Check the params; returns (org_id, start date, end date) or raises UserError."""
    try:
        first, last = dt.date.fromisoformat(start), dt.date.fromisoformat(end)
    except (TypeError, ValueError):
        raise UserError(f"start_date and end_date must be dates YYYY-MM-DD, got {start!r} and {end!r}") from None
    if last < first:
        raise UserError(f"end_date {last} is before start_date {first}")
    if (last - first).days >= MAX_DAYS:
        raise UserError(f"replay at most {MAX_DAYS} days at a time")
    row = conn.execute("select org_id from control.connections where connection_id = %s", (connection_id,)).fetchone()
    if row is None:
        raise UserError(f"no connection {connection_id!r}")
    return row[0], first, last


def replay(
    conn: psycopg.Connection, archive: Archive, connection_id: str, org_id: str, first: dt.date, last: dt.date
) -> Replayed:
    """Re-land every archived request of the range; raises ReplayIncomplete naming the objects that
    could not be read back intact (every object was accepted with a 200, so none may be skipped)."""
    done = Replayed()
    day = first
    while day <= last:
        staged = _staged_keys(conn, connection_id, day)
        for key in archive.list(day_prefix(archive.prefix, org_id, connection_id, day)):
            done.objects += 1
            if key in staged:
                done.already_staged += 1
                continue
            try:
                body = archive.get(key)
                verify_body(key, body)
                requests = [(at, *landing.parse_body(raw)) for at, raw in requests_in(key, body)]
            except (ArchiveUnavailable, ArchiveCorrupt, landing.BadBody) as exc:
                log.error("cannot replay %s: %s", key, exc)
                done.failed_keys.append(key)
                continue
            done.events += sum(len(events) for _, _, events in requests)
            done.new += sum(
                landing.insert_group(
                    conn,
                    connection_id=connection_id,
                    org_id=org_id,
                    archive_key=key,
                    requests=requests,
                    archive_digest=ObjectDigest.of(body),  # the bytes just verified against the key
                )
            )
        day += dt.timedelta(days=1)
    if done.failed_keys:
        shown = ", ".join(done.failed_keys[:5]) + (" ..." if len(done.failed_keys) > 5 else "")
        raise ReplayIncomplete(
            f"{len(done.failed_keys)} of {done.objects} archived objects could not be read back "
            f"intact and were not replayed ({done.events} events of the others were): {shown}",
            done,
        )
    return done


def _staged_keys(conn: psycopg.Connection, connection_id: str, day: dt.date) -> set[str]:
    """The archive keys of the connection's rows staged with a receive time on `day` (UTC)."""
    start = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
    return {
        key
        for (key,) in conn.execute(
            "select distinct archive_key from raw.segment_events"
            " where received_at >= %s and received_at < %s and connection_id = %s",
            (start, start + dt.timedelta(days=1), connection_id),
        )
    }
