"""Retention lets a staged row go only when dbt's staging model holds it and its archive object reads
back intact; every kept row is reported with its reason. An expired day goes whole (its partition
dropped) once all of it may; rows in the default partition go row by row."""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from pathlib import Path

import boto3
import pytest

from segment_elt.control import connections
from segment_elt.ingest import landing, partitions
from segment_elt.ingest.archive import object_key, open_archive
from segment_elt.local import samples
from segment_elt.pipeline import maintenance
from segment_elt.pipeline.transform import run_dbt

NOW = dt.datetime(2026, 12, 1, 12, tzinfo=dt.UTC)
EXPIRED = NOW - dt.timedelta(days=40)


def accept(db, archive_url: str, created, events: list[dict], at: dt.datetime) -> list[str]:
    """Land requests as the receiver does (archive, then staging); returns their object keys."""
    archive, keys = open_archive(archive_url), []
    for i, event in enumerate(events):
        body = json.dumps(event).encode()
        received = at + dt.timedelta(seconds=i)
        key = object_key(archive.prefix, created.org_id, created.connection_id, received, body)
        archive.put(key, body)
        landing.insert_events(
            db,
            connection_id=created.connection_id,
            org_id=created.org_id,
            text=body.decode(),
            events=[event],
            received_at=received,
            archive_key=key,
        )
        keys.append(key)
    return keys


def stage(database_url: str) -> None:
    """What each rollups run does first: the dbt staging model consumes the new raw rows."""
    run_dbt(["run", "-s", "stg_segment__events"], url=database_url)


def remaining(db) -> int:
    return db.execute("select count(*) from raw.segment_events").fetchone()[0]


def events(n: int, user: str = "u") -> list[dict]:
    return [samples.event("track", user_id=f"{user}{i}") for i in range(n)]


def test_rows_staging_has_not_consumed_are_kept_until_it_has(db, database_url, archive_url):
    created = connections.create(db, "acme")
    accept(db, archive_url, created, events(3), EXPIRED)
    archive = open_archive(archive_url)

    kept = maintenance.prune(db, archive, 30, now=NOW)  # staging was never built (dbt failing for weeks)
    assert (kept.deleted_rows, kept.kept_rows) == (0, {"not yet in the staging model": 3})

    stage(database_url)
    accept(db, archive_url, created, events(2, user="late"), EXPIRED)  # arrived after that staging run
    done = maintenance.prune(db, archive, 30, now=NOW)
    assert (done.deleted_rows, done.kept_rows) == (3, {"not yet in the staging model": 2})
    assert db.execute("select count(*) from staging.stg_segment__events").fetchone()[0] == 3


def test_rows_whose_archive_object_is_missing_or_corrupt_are_kept(db, database_url, archive_url):
    created = connections.create(db, "acme")
    keys = accept(db, archive_url, created, events(4), EXPIRED)
    accept(db, archive_url, created, events(2, user="recent"), NOW - dt.timedelta(days=1))
    stage(database_url)
    root = Path(archive_url.removeprefix("file://"))
    (root / keys[0]).unlink()
    (root / keys[1]).write_bytes((root / keys[1]).read_bytes()[:10])  # truncated

    done = maintenance.prune(db, open_archive(archive_url), 30, now=NOW)
    assert done.deleted_rows == 2
    assert done.kept_rows == {"archive object missing": 1, "archive object corrupt": 1}
    assert {
        r[0]
        for r in db.execute(
            "select archive_key from raw.segment_events where received_at < %s", (NOW - dt.timedelta(days=30),)
        )
    } == {keys[0], keys[1]}
    assert remaining(db) == 4


def test_on_s3_a_corrupt_object_is_found_and_its_rows_kept(db, database_url, s3_archive_url, moto_s3):
    created = connections.create(db, "acme")
    keys = accept(db, s3_archive_url, created, events(30), EXPIRED)
    stage(database_url)
    bucket = s3_archive_url.removeprefix("s3://").split("/", 1)[0]
    s3 = boto3.client("s3", endpoint_url=moto_s3.endpoint)
    for key in keys[:15]:  # half the batch overwritten with other bytes: any sample meets one
        s3.put_object(Bucket=bucket, Key=key, Body=b"{}")
    s3.delete_object(Bucket=bucket, Key=keys[29])

    done = maintenance.prune(db, open_archive(s3_archive_url), 30, now=NOW)
    assert done.kept_rows == {"archive object corrupt": 15, "archive object missing": 1}
    assert done.deleted_rows == 14


def test_stale_temporary_files_are_removed_and_fresh_ones_left(db, archive_url):
    root = Path(archive_url.removeprefix("file://"))
    root.mkdir(parents=True, exist_ok=True)
    stale, fresh = root / ".a.json.1.tmp", root / ".b.json.2.tmp"
    for path in (stale, fresh):
        path.write_bytes(b"partial")
    old = (dt.datetime.now() - dt.timedelta(hours=2)).timestamp()
    os.utime(stale, (old, old))
    done = maintenance.prune(db, open_archive(archive_url), 30, now=NOW)
    assert done.removed_temp_files == 1
    assert not stale.exists() and fresh.exists()


def test_batches_across_connections_delete_exactly_the_intact_expired_rows(db, database_url, archive_url):
    """Each batch's delete is bounded by its rows' receive times (maintenance.prune): batches that
    span two connections with interleaved times, and a kept object inside a batch's span, come
    out exact."""
    acme, globex = connections.create(db, "acme"), connections.create(db, "globex")
    expired = []
    for i in range(4):
        expired += accept(db, archive_url, acme, events(2, f"a{i}-"), EXPIRED + dt.timedelta(minutes=2 * i))
        expired += accept(db, archive_url, globex, events(2, f"g{i}-"), EXPIRED + dt.timedelta(minutes=2 * i + 1))
    fresh = accept(db, archive_url, acme, events(2, "new"), NOW - dt.timedelta(days=1))
    stage(database_url)
    corrupt = sorted(expired)[4]  # in the middle of the second batch of 3
    (Path(archive_url.removeprefix("file://")) / corrupt).write_bytes(b"{}")
    done = maintenance.prune(db, open_archive(archive_url), 30, now=NOW, batch=3)
    assert (done.deleted_rows, done.kept_rows) == (15, {"archive object corrupt": 1})
    assert {key for (key,) in db.execute("select archive_key from raw.segment_events")} == {corrupt, *fresh}


def exists(db, relation: str) -> bool:
    return db.execute("select to_regclass(%s)", (relation,)).fetchone()[0] is not None


@pytest.fixture
def expired_day(db):
    """The partitions of EXPIRED's day and the next: rows received then land in them, not the default."""
    partitions.create_days(db, EXPIRED.date(), EXPIRED.date() + dt.timedelta(days=1))
    return EXPIRED.date()


def test_an_expired_day_staged_and_archived_intact_is_dropped_whole(db, database_url, archive_url, expired_day):
    created = connections.create(db, "acme")
    accept(db, archive_url, created, events(5), EXPIRED)
    accept(db, archive_url, created, events(2, user="recent"), NOW - dt.timedelta(days=1))
    stage(database_url)

    done = maintenance.prune(db, open_archive(archive_url), 30, now=NOW)
    assert (done.deleted_rows, done.dropped_days, done.kept_rows, done.checked_objects) == (5, 2, {}, 5)
    assert not exists(db, partitions.name(expired_day))
    assert remaining(db) == 2


def test_a_day_with_rows_staging_has_not_consumed_is_kept_whole_until_it_has(
    db, database_url, archive_url, expired_day
):
    created = connections.create(db, "acme")
    accept(db, archive_url, created, events(3), EXPIRED)
    stage(database_url)
    accept(db, archive_url, created, events(2, user="late"), EXPIRED + dt.timedelta(hours=1))

    kept = maintenance.prune(db, open_archive(archive_url), 30, now=NOW)
    assert (kept.deleted_rows, kept.kept_rows) == (0, {"not yet in the staging model": 2, "in a day kept whole": 3})
    assert exists(db, partitions.name(expired_day)) and remaining(db) == 5

    stage(database_url)
    done = maintenance.prune(db, open_archive(archive_url), 30, now=NOW)
    assert (done.deleted_rows, done.kept_rows) == (5, {})
    assert not exists(db, partitions.name(expired_day))


def test_rows_of_bad_objects_move_to_the_default_partition_and_go_once_repaired(
    db, database_url, archive_url, expired_day
):
    created = connections.create(db, "acme")
    keys = accept(db, archive_url, created, events(4), EXPIRED)
    stage(database_url)
    bad = Path(archive_url.removeprefix("file://")) / keys[2]
    good_bytes = bad.read_bytes()
    bad.write_bytes(b"{}")

    done = maintenance.prune(db, open_archive(archive_url), 30, now=NOW)
    assert (done.deleted_rows, done.dropped_days, done.kept_rows) == (3, 2, {"archive object corrupt": 1})
    assert not exists(db, partitions.name(expired_day))
    assert [k for (k,) in db.execute(f"select archive_key from {partitions.DEFAULT}")] == [keys[2]]

    bad.write_bytes(good_bytes)
    again = maintenance.prune(db, open_archive(archive_url), 30, now=NOW)
    assert (again.deleted_rows, again.kept_rows) == (1, {})
    assert remaining(db) == 0


def test_a_day_with_more_bad_rows_than_move_at_most_is_kept_whole(
    db, database_url, archive_url, expired_day, monkeypatch
):
    monkeypatch.setattr(maintenance, "MOVE_AT_MOST", 1)
    created = connections.create(db, "acme")
    keys = accept(db, archive_url, created, events(4), EXPIRED)
    stage(database_url)
    for key in keys[:2]:
        (Path(archive_url.removeprefix("file://")) / key).unlink()

    done = maintenance.prune(db, open_archive(archive_url), 30, now=NOW)
    assert (done.deleted_rows, done.kept_rows) == (0, {"archive object missing": 2, "in a day kept whole": 2})
    assert exists(db, partitions.name(expired_day)) and remaining(db) == 4


def test_partitions_are_made_ahead_and_unexpired_rows_leave_the_default_partition(db, archive_url):
    created = connections.create(db, "acme")
    accept(db, archive_url, created, events(2, user="recent"), NOW - dt.timedelta(days=3))  # no partition yet
    accept(db, archive_url, created, events(1, user="old"), EXPIRED)  # expired: stays for prune
    assert len(partitions.default_days(db)) == 2

    before = set(partitions.days(db))  # the days the migration made, ahead of the real today
    made = maintenance.make_partitions(db, 30, now=NOW)
    assert made == len(set(partitions.days(db)) - before)
    assert {NOW.date() + dt.timedelta(days=n) for n in range(partitions.DAYS_AHEAD + 1)} <= set(partitions.days(db))
    assert partitions.default_days(db) == [EXPIRED.date()]
    assert db.execute(f"select count(*) from {partitions.name((NOW - dt.timedelta(days=3)).date())}").fetchone() == (2,)
    assert maintenance.make_partitions(db, 30, now=NOW) == 0


def test_vacuum_reaches_the_default_partition_and_the_days_rows_were_deleted_from(db, archive_url):
    """Erasure deletes rows from any day (docs/privacy.md): those days are vacuumed, the others left to autovacuum."""
    created = connections.create(db, "acme")
    today = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    accept(db, archive_url, created, events(3), today)
    accept(db, archive_url, created, events(3, user="next"), today + dt.timedelta(days=1))
    db.execute("delete from raw.segment_events where payload->>'userId' = 'u1'")
    db.execute("select pg_stat_force_next_flush()")
    assert maintenance.vacuum(db) == [partitions.DEFAULT, partitions.name(today.date())]


def test_a_day_is_read_an_hour_at_a_time_pausing_to_keep_its_share_of_the_database(
    db, database_url, archive_url, expired_day, monkeypatch
):
    """An object whose rows straddle an hour is one object all the same; after each hour's read
    prune pauses (1 / share - 1) times as long as the read took."""
    created = connections.create(db, "acme")
    archive = open_archive(archive_url)
    hour = dt.datetime.combine(expired_day, dt.time(13), tzinfo=dt.UTC)
    first, second = events(2)
    body = json.dumps([first, second]).encode()
    key = object_key(archive.prefix, created.org_id, created.connection_id, hour, body)
    digest = archive.put(key, body)
    landing.insert_group(
        db,
        connection_id=created.connection_id,
        org_id=created.org_id,
        archive_key=key,
        requests=[
            (hour - dt.timedelta(milliseconds=500), json.dumps(first), [first]),
            (hour + dt.timedelta(milliseconds=500), json.dumps(second), [second]),
        ],
        archive_digest=digest,
    )
    stage(database_url)
    reads, pauses = [], []
    real_objects = maintenance._objects

    def timed_objects(*args, **kwargs):
        began = time.monotonic()
        try:
            return real_objects(*args, **kwargs)
        finally:
            reads.append(time.monotonic() - began)

    monkeypatch.setattr(maintenance, "_objects", timed_objects)
    monkeypatch.setattr(maintenance.time, "sleep", pauses.append)

    done = maintenance.prune(db, open_archive(archive_url), 30, now=NOW, share=0.25)
    assert (done.deleted_rows, done.checked_objects, done.kept_rows) == (2, 1, {})
    day_reads = reads[1:]  # the first read is the default partition's, unpaced
    assert len(pauses) == len(day_reads) == 48  # the expired day and the next, an hour at a time
    assert all(pause >= 3 * read for pause, read in zip(pauses, day_reads, strict=True))
