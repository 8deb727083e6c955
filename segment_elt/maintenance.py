"""Retention of the staging table (segment_maintenance): prune only what the archive holds.

Rows of raw.segment_events received before the retention window are deleted only when their
archive object exists, so a replay can always bring them back. The dbt staging model keeps its
own parsed copy, so the marts are unaffected.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import psycopg

from segment_elt.archive import Archive


@dataclass
class Pruned:
    checked_objects: int = 0
    missing_objects: int = 0
    deleted_rows: int = 0
    kept_rows: int = 0

    def as_dict(self) -> dict:
        return vars(self)


def prune(conn: psycopg.Connection, archive: Archive, retention_days: int, now: dt.datetime | None = None,
          batch: int = 1000) -> Pruned:
    if retention_days < 1:
        raise ValueError("retention must be at least one day")
    cutoff = (now or dt.datetime.now(dt.timezone.utc)) - dt.timedelta(days=retention_days)
    done = Pruned()
    keys = [r[0] for r in conn.execute(
        "select distinct archive_key from raw.segment_events where received_at < %s", (cutoff,))]
    for i in range(0, len(keys), batch):
        chunk = keys[i:i + batch]
        archived = [k for k in chunk if archive.exists(k)]
        done.checked_objects += len(chunk)
        done.missing_objects += len(chunk) - len(archived)
        if archived:
            done.deleted_rows += conn.execute(
                "delete from raw.segment_events where received_at < %s and archive_key = any(%s)", (cutoff, archived)
            ).rowcount
    done.kept_rows = conn.execute("select count(*) from raw.segment_events where received_at < %s",
                                  (cutoff,)).fetchone()[0]
    return done


def vacuum(conn: psycopg.Connection) -> None:
    """VACUUM (ANALYZE) the staging table; needs an autocommit connection."""
    conn.execute("vacuum (analyze) raw.segment_events")
