"""Retention of the staging table (segment_maintenance): prune only what is safe to forget.

A row of raw.segment_events received before the retention window may go only when both
  - the dbt staging model has consumed it (its copy is in staging.stg_segment__events, from
    which every downstream model reads), and
  - its archive object exists as it was written: the size and MD5 recorded with the row when it
    has them (every object), else the body its key names (a read-back sample on S3; see
    Archive.audit),
so that the marts never miss a row and a replay can always bring it back. Every kept row is
counted under the reason it was kept.

Retention works a whole UTC day at a time (docs/scaling.md#retention-at-scale): a day partition
whose day ended before the cutoff is dropped once every row in it may go. When some rows of it
must stay, up to MOVE_AT_MOST of them move to the default partition and the day is dropped;
more than that, or rows the staging model has not consumed yet (it is behind and will catch
up), keep the whole day for the next run. Expired rows in the default partition go row by row
once they may.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections import Counter
from dataclasses import dataclass, field

import psycopg

from segment_elt import db
from segment_elt.ingest import partitions
from segment_elt.ingest.archive import Archive, ObjectDigest

log = logging.getLogger(__name__)
STAGING_MODEL = "staging.stg_segment__events"
STALE_TEMP_FILES = dt.timedelta(hours=1)


# Of one PostgreSQL core, at most, while prune reads an expired day (docs/scaling.md#retention-at-scale).
DATABASE_SHARE = 0.08
MOVE_AT_MOST = 10_000  # kept rows moved out of a day so it can be dropped; more keep the day whole
KEPT_WITH_THEIR_DAY = "in a day kept whole"


@dataclass
class Pruned:
    checked_objects: int = 0
    deleted_rows: int = 0
    dropped_days: int = 0
    kept_rows: dict[str, int] = field(default_factory=dict)
    audited: Counter[str] = field(default_factory=Counter)  # objects found, by how the audit checked them
    removed_temp_files: int = 0

    def keep(self, reason: str, rows: int) -> None:
        if rows:
            self.kept_rows[reason] = self.kept_rows.get(reason, 0) + rows

    def as_dict(self) -> dict:
        return {**vars(self), "audited": dict(self.audited)}


def make_partitions(conn: psycopg.Connection, retention_days: int, now: dt.datetime | None = None) -> int:
    """Create the partitions of today and the DAYS_AHEAD days after it, and of each unexpired day
    whose rows landed in the default partition (they move into it); returns how many were made.
    Expired days' rows stay in the default partition for prune."""
    now = now or dt.datetime.now(dt.UTC)
    today = now.astimezone(dt.UTC).date()
    made = partitions.create_days(conn, today, today + dt.timedelta(days=partitions.DAYS_AHEAD))
    first_kept = (now - dt.timedelta(days=retention_days)).astimezone(dt.UTC).date()
    for day in partitions.default_days(conn):
        if day >= first_kept:
            made += partitions.create_days(conn, day, day)
    return made


ObjectRows = tuple[str, int, bool, dt.datetime, dt.datetime, int | None, bytes | None]


def _objects(
    conn: psycopg.Connection, table: str, cutoff: dt.datetime, since: dt.datetime | None = None
) -> list[ObjectRows]:
    """(archive key, expired rows, whether staging holds all of them, their first and last receive
    time, the object's size and MD5 recorded at write) per object with rows received before
    `cutoff` (and at or after `since`) in `table`."""
    bounds = (since or dt.datetime.min.replace(tzinfo=dt.UTC), cutoff)
    if not db.relations_exist(conn, STAGING_MODEL):
        return [
            (key, rows, False, first, last, None, None)
            for key, rows, first, last in conn.execute(
                f"select archive_key, count(*), min(received_at), max(received_at) from {table}"
                " where received_at >= %s and received_at < %s group by 1",
                bounds,
            )
        ]
    return conn.execute(
        f"""
        select raw.archive_key, count(*), bool_and(staged.message_id is not null),
            min(raw.received_at), max(raw.received_at), max(raw.archive_size),
            (array_agg(raw.archive_md5) filter (where raw.archive_md5 is not null))[1]
        from {table} as raw
        left join {STAGING_MODEL} as staged
            on staged.connection_id = raw.connection_id and staged.message_id = raw.message_id
        where raw.received_at >= %s and raw.received_at < %s
        group by raw.archive_key
        """,
        bounds,
    ).fetchall()


def _objects_of_day(conn: psycopg.Connection, day: dt.date, cutoff: dt.datetime, share: float) -> list[ObjectRows]:
    """_objects of a day partition, read an hour of receive time at a time, each read followed by a
    pause so that together they take at most `share` of a PostgreSQL core: the receivers' inserts
    beside them keep their rate even on a database server of one core."""
    merged: dict[str, ObjectRows] = {}
    start = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
    for hour in range(24):
        began = time.monotonic()
        since = start + dt.timedelta(hours=hour)
        for key, rows, staged, first, last, size, md5 in _objects(
            conn, partitions.name(day), min(cutoff, since + dt.timedelta(hours=1)), since
        ):
            had = merged.get(key)  # an object's rows may straddle an hour
            merged[key] = (
                (key, rows, staged, first, last, size, md5)
                if had is None
                else (
                    key,
                    had[1] + rows,
                    had[2] and staged,
                    min(had[3], first),
                    max(had[4], last),
                    had[5] if had[5] is not None else size,
                    had[6] if had[6] is not None else md5,
                )
            )
        time.sleep((time.monotonic() - began) * (1 / share - 1))
    return list(merged.values())


def _recorded(objects) -> dict[str, ObjectDigest]:
    """key -> the size and MD5 recorded at write, for the objects of `_objects` that have them."""
    return {key: ObjectDigest(size, md5) for key, _, _, _, _, size, md5 in objects if size is not None}


def _audit(
    archive: Archive, keys: list[str], recorded: dict[str, ObjectDigest], batch: int, done: Pruned
) -> dict[str, str]:
    """key -> problem for the objects of `keys` that fail the archive's audit, a batch at a time."""
    problems: dict[str, str] = {}
    for i in range(0, len(keys), batch):
        chunk = keys[i : i + batch]
        problems.update(archive.audit(chunk, recorded, done.audited))
        done.checked_objects += len(chunk)
    return problems


def _keep_problems(done: Pruned, problems: dict[str, str], rows: dict[str, int]) -> None:
    for key, problem in problems.items():
        done.keep("archive object " + problem.split(":", 1)[0], rows[key])
        log.warning("keeping the staged rows of %s: archive object %s", key, problem)


def prune(
    conn: psycopg.Connection,
    archive: Archive,
    retention_days: int,
    now: dt.datetime | None = None,
    batch: int = 1000,
    share: float = DATABASE_SHARE,
) -> Pruned:
    """Drop the expired days that may go and delete the expired rows of the default partition
    that may go (see the module docstring); audits archive objects `batch` keys at a time, and
    reads a day's rows in slices taking at most `share` of a PostgreSQL core."""
    if retention_days < 1:
        raise ValueError("retention must be at least one day")
    cutoff = (now or dt.datetime.now(dt.UTC)) - dt.timedelta(days=retention_days)
    done = Pruned()
    # the default partition first: rows a day moves there this run are counted once, under the day
    _prune_default(conn, archive, cutoff, batch, done)
    for day in partitions.days(conn):
        if dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC) <= cutoff:
            _prune_day(conn, archive, day, cutoff, batch, share, done)
    done.removed_temp_files = archive.remove_stale_temp_files(STALE_TEMP_FILES)
    if done.audited:
        log.info("audited %d archive objects: %s", sum(done.audited.values()), dict(done.audited))
    return done


def _prune_day(
    conn: psycopg.Connection,
    archive: Archive,
    day: dt.date,
    cutoff: dt.datetime,
    batch: int,
    share: float,
    done: Pruned,
) -> None:
    """Drop an expired day's partition, or keep what must stay (module docstring)."""
    with conn.transaction():
        partitions.hold(conn, day)
        objects = _objects_of_day(conn, day, cutoff, share)
        rows = {key: count for key, count, *_ in objects}
        unstaged = sum(count for _, count, staged, *_ in objects if not staged)
        if unstaged:
            done.keep("not yet in the staging model", unstaged)
            done.keep(KEPT_WITH_THEIR_DAY, sum(rows.values()) - unstaged)
            return
        problems = _audit(archive, sorted(rows), _recorded(objects), batch, done)
        _keep_problems(done, problems, rows)
        kept = sum(rows[key] for key in problems)
        if kept > MOVE_AT_MOST:
            done.keep(KEPT_WITH_THEIR_DAY, sum(rows.values()) - kept)
            log.warning("keeping the whole day %s: %d of its rows must stay", day, kept)
            return
        done.deleted_rows += partitions.drop_day(conn, day, sorted(problems))
        done.dropped_days += 1


def _prune_default(conn: psycopg.Connection, archive: Archive, cutoff: dt.datetime, batch: int, done: Pruned) -> None:
    """Delete the default partition's expired rows that may go, an audited batch of objects at a time."""
    objects = _objects(conn, partitions.DEFAULT, cutoff)
    consumed = {key: (rows, first, last) for key, rows, staged, first, last, _, _ in objects if staged}
    recorded = _recorded(objects)
    for _, rows, staged, *_ in objects:
        if not staged:
            done.keep("not yet in the staging model", rows)
    # Keys sort by org, connection and receive time, so a batch's rows lie in a short stretch of
    # received_at: the delete reads that stretch through its index, not every expired row.
    keys = sorted(consumed)
    for i in range(0, len(keys), batch):
        chunk = keys[i : i + batch]
        problems = _audit(archive, chunk, recorded, batch, done)
        _keep_problems(done, problems, {key: consumed[key][0] for key in chunk})
        intact = [key for key in chunk if key not in problems]
        if intact:
            done.deleted_rows += conn.execute(
                f"delete from {partitions.DEFAULT} where received_at between %s and %s and received_at < %s"
                " and archive_key = any(%s)",
                (min(consumed[k][1] for k in intact), max(consumed[k][2] for k in intact), cutoff, intact),
            ).rowcount


def vacuum(conn: psycopg.Connection) -> list[str]:
    """VACUUM (ANALYZE) the default partition, where prune deletes rows, and every day partition
    with deleted rows (an erasure's: docs/privacy.md) so that their data leaves the table files;
    the others only grow and autovacuum keeps them. Needs an autocommit connection; returns the
    partitions vacuumed."""
    dirty = [
        f"raw.{name}"
        for (name,) in conn.execute(
            "select relname from pg_stat_user_tables where schemaname = 'raw'"
            " and relname ~ '^segment_events_p[0-9]{8}$' and n_dead_tup > 0 order by 1"
        )
    ]
    for table in [partitions.DEFAULT, *dirty]:
        conn.execute(f"vacuum (analyze) {table}")
    return [partitions.DEFAULT, *dirty]
