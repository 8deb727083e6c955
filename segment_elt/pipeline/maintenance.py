"""Retention of the staging table (segment_maintenance): prune only what is safe to forget.

A row of raw.segment_events received before the retention window is deleted only when both
  - the dbt staging model has consumed it (its copy is in staging.stg_segment__events, from
    which every downstream model reads), and
  - its archive object exists as it was written: the size and MD5 recorded with the row when it
    has them (every object), else the body its key names (a read-back sample on S3; see
    Archive.audit),
so that the marts never miss a row and a replay can always bring it back. Every kept row is
counted under the reason it was kept.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter
from dataclasses import dataclass, field

import psycopg

from segment_elt import db
from segment_elt.ingest.archive import Archive, ObjectDigest

log = logging.getLogger(__name__)
STAGING_MODEL = "staging.stg_segment__events"
STALE_TEMP_FILES = dt.timedelta(hours=1)


@dataclass
class Pruned:
    checked_objects: int = 0
    deleted_rows: int = 0
    kept_rows: dict[str, int] = field(default_factory=dict)
    audited: Counter[str] = field(default_factory=Counter)  # objects found, by how the audit checked them
    removed_temp_files: int = 0

    def keep(self, reason: str, rows: int) -> None:
        self.kept_rows[reason] = self.kept_rows.get(reason, 0) + rows

    def as_dict(self) -> dict:
        return {**vars(self), "audited": dict(self.audited)}


def _expired_objects(
    conn: psycopg.Connection, cutoff: dt.datetime
) -> list[tuple[str, int, bool, dt.datetime, dt.datetime, int | None, bytes | None]]:
    """(archive key, expired rows, whether staging holds all of them, their first and last receive
    time, the object's size and MD5 recorded at write) per object with expired rows."""
    if not db.relations_exist(conn, STAGING_MODEL):
        return [
            (key, rows, False, first, last, None, None)
            for key, rows, first, last in conn.execute(
                "select archive_key, count(*), min(received_at), max(received_at) from raw.segment_events"
                " where received_at < %s group by 1",
                (cutoff,),
            )
        ]
    return conn.execute(
        f"""
        select raw.archive_key, count(*), bool_and(staged.message_id is not null),
            min(raw.received_at), max(raw.received_at), max(raw.archive_size),
            (array_agg(raw.archive_md5) filter (where raw.archive_md5 is not null))[1]
        from raw.segment_events as raw
        left join {STAGING_MODEL} as staged
            on staged.connection_id = raw.connection_id and staged.message_id = raw.message_id
        where raw.received_at < %s
        group by raw.archive_key
        """,
        (cutoff,),
    ).fetchall()


def prune(
    conn: psycopg.Connection, archive: Archive, retention_days: int, now: dt.datetime | None = None, batch: int = 1000
) -> Pruned:
    if retention_days < 1:
        raise ValueError("retention must be at least one day")
    cutoff = (now or dt.datetime.now(dt.UTC)) - dt.timedelta(days=retention_days)
    done = Pruned()
    objects = _expired_objects(conn, cutoff)
    consumed = {key: (rows, first, last) for key, rows, staged, first, last, _, _ in objects if staged}
    recorded = {key: ObjectDigest(size, md5) for key, _, _, _, _, size, md5 in objects if size is not None}
    for _, rows, staged, _, _, _, _ in objects:
        if not staged:
            done.keep("not yet in the staging model", rows)
    # Keys sort by org, connection and receive time, so a batch's rows lie in a short stretch of
    # received_at: the delete reads that stretch through its index, not every expired row.
    keys = sorted(consumed)
    for i in range(0, len(keys), batch):
        chunk = keys[i : i + batch]
        problems = archive.audit(chunk, recorded, done.audited)
        done.checked_objects += len(chunk)
        for key, problem in problems.items():
            reason = "archive object " + problem.split(":", 1)[0]
            done.keep(reason, consumed[key][0])
            log.warning("keeping the staged rows of %s: archive object %s", key, problem)
        intact = [key for key in chunk if key not in problems]
        if intact:
            done.deleted_rows += conn.execute(
                "delete from raw.segment_events where received_at between %s and %s and received_at < %s"
                " and archive_key = any(%s)",
                (min(consumed[k][1] for k in intact), max(consumed[k][2] for k in intact), cutoff, intact),
            ).rowcount
    done.removed_temp_files = archive.remove_stale_temp_files(STALE_TEMP_FILES)
    if done.audited:
        log.info("audited %d archive objects: %s", sum(done.audited.values()), dict(done.audited))
    return done


def vacuum(conn: psycopg.Connection) -> None:
    """VACUUM (ANALYZE) the staging table; needs an autocommit connection."""
    conn.execute("vacuum (analyze) raw.segment_events")
