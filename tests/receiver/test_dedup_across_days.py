"""raw.segment_events is unique on (connection_id, message_id) across its day partitions, also when
writers race: several connections land the same messageIds at the same moment, received on both
sides of a UTC midnight (a Segment retry crossing midnight) or on different days (a replay beside
live traffic), and every id is staged once and counted new once."""

from __future__ import annotations

import datetime as dt
import json
import random
import threading

import pytest

from segment_elt import db
from segment_elt.control import connections
from segment_elt.ingest import landing, partitions

IDS = 120
WRITERS = 6
ROUNDS = 4


def race(database_url: str, cid: str, org: str, received_ats: list[dt.datetime], prefix: str) -> int:
    """Each writer (its own connection) lands the same IDS events in groups of 5, in its own random
    order, all starting together; returns how many events the writers were told were new."""
    ids = [f"{prefix}-{n}" for n in range(IDS)]
    start, news, errors = threading.Barrier(len(received_ats)), [], []

    def writer(n: int, at: dt.datetime) -> None:
        mine = random.Random(n).sample(ids, len(ids))
        try:
            with db.connect(database_url) as conn:
                start.wait()
                for i in range(0, len(mine), 5):
                    events = [{"type": "track", "event": "Race", "messageId": mid} for mid in mine[i : i + 5]]
                    news.extend(
                        landing.insert_group(
                            conn,
                            connection_id=cid,
                            org_id=org,
                            archive_key=f"race/{prefix}/{n}/{i}",
                            requests=[(at, json.dumps(events), events)],
                        )
                    )
        except Exception as exc:  # reported by the test, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n, at)) for n, at in enumerate(received_ats)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    return sum(news)


def staged_once(conn, cid: str, prefix: str) -> bool:
    counts = conn.execute(
        "select count(*), count(distinct message_id) from raw.segment_events"
        " where connection_id = %s and message_id like %s",
        (cid, prefix + "-%"),
    ).fetchone()
    return counts == (IDS, IDS)


@pytest.fixture
def acme(db):
    return connections.create(db, "acme")


def test_a_retry_across_midnight_racing_the_first_delivery_is_dropped(db, database_url, acme):
    midnight = dt.datetime.combine(dt.datetime.now(dt.UTC).date() - dt.timedelta(days=3), dt.time(), tzinfo=dt.UTC)
    partitions.create_days(db, midnight.date() - dt.timedelta(days=1), midnight.date())
    sides = [midnight - dt.timedelta(milliseconds=300), midnight + dt.timedelta(milliseconds=300)]
    for r in range(ROUNDS):
        prefix = f"midnight{r}"
        assert race(database_url, acme.connection_id, acme.org_id, sides * (WRITERS // 2), prefix) == IDS
        assert staged_once(db, acme.connection_id, prefix)
    per_day = db.execute(
        "select (received_at at time zone 'UTC')::date, count(*) from raw.segment_events group by 1"
    ).fetchall()
    assert len(per_day) == 2  # both partitions got some: the race was across them


def test_live_traffic_racing_a_replay_of_another_day_stages_each_event_once(db, database_url, acme):
    now = dt.datetime.now(dt.UTC)
    partitions.create_days(db, now.date() - dt.timedelta(days=2), now.date())
    for r in range(ROUNDS):
        prefix = f"replay{r}"
        sides = [dt.datetime.now(dt.UTC), now - dt.timedelta(days=2)]
        assert race(database_url, acme.connection_id, acme.org_id, sides * (WRITERS // 2), prefix) == IDS
        assert staged_once(db, acme.connection_id, prefix)


def test_live_writers_of_one_day_race_on_its_unique_index(db, database_url, acme):
    for r in range(ROUNDS):
        prefix = f"live{r}"
        at = dt.datetime.now(dt.UTC)
        assert race(database_url, acme.connection_id, acme.org_id, [at] * WRITERS, prefix) == IDS
        assert staged_once(db, acme.connection_id, prefix)


def test_a_day_without_a_partition_lands_in_the_default_one(db, acme):
    far = dt.datetime(2031, 5, 4, 12, tzinfo=dt.UTC)
    event = {"type": "track", "event": "Late", "messageId": "far"}
    landed = landing.insert_events(
        db,
        connection_id=acme.connection_id,
        org_id=acme.org_id,
        text=json.dumps(event),
        events=[event],
        received_at=far,
        archive_key="far/1",
    )
    assert landed == 1
    assert partitions.default_days(db) == [far.date()]


def _unique_index_scans(conn) -> dict[str, int]:
    """Scans of each day partition's (connection_id, message_id) index so far, as the statistics have them."""
    conn.execute("select pg_stat_clear_snapshot()")
    return dict(
        conn.execute(
            "select indexrelname, idx_scan from pg_stat_user_indexes where schemaname = 'raw'"
            " and relname like 'segment\\_events\\_p%%' and indexrelname like '%%\\_key'"
        ).fetchall()
    )


def test_a_body_probes_each_partition_once_for_all_its_events(db, database_url, acme):
    """The cross-partition check reads each partition's index once per statement, not once per
    event (which made a 100-event body cost ~10x on a month of partitions)."""
    now = dt.datetime.now(dt.UTC)
    partitions.create_days(db, now.date() - dt.timedelta(days=5), now.date() - dt.timedelta(days=1))
    old = {"type": "track", "event": "Old", "messageId": "staged-3-days-ago"}
    landing.insert_events(
        db,
        connection_id=acme.connection_id,
        org_id=acme.org_id,
        text=json.dumps(old),
        events=[old],
        received_at=now - dt.timedelta(days=3),
        archive_key="old/1",
    )
    events = [old] + [{"type": "track", "event": "Many", "messageId": f"many-{n}"} for n in range(100)]
    with db.connect(database_url) as conn:
        before = _unique_index_scans(conn)
        landed = landing.insert_events(
            conn,
            connection_id=acme.connection_id,
            org_id=acme.org_id,
            text=json.dumps(events),
            events=events,
            received_at=now,
            archive_key="many/1",
        )
        conn.execute("select pg_stat_force_next_flush()")
    assert landed == 100  # the one staged 3 days ago is dropped
    with db.connect(database_url) as conn:
        after = _unique_index_scans(conn)
    today = partitions.name(now.date()).split(".")[1] + "_key"  # also checked per inserted row by ON CONFLICT
    scans = {name: after[name] - before.get(name, 0) for name in after if name != today}
    assert len(scans) >= 5 and set(scans.values()) == {1}, scans
