"""The DAGs' behaviour through dag.test() against the embedded PostgreSQL and real dbt (docs/dags.md)."""

from __future__ import annotations

import datetime as dt
import json

from segment_elt.control import connections, entities
from segment_elt.ingest import landing
from segment_elt.ingest.archive import object_key, open_archive
from segment_elt.local import samples

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


def land(db, created, events, received_at, archive_url=None):
    """Land events as the receiver does: one request each, archived when an archive is given."""
    for i, event in enumerate(events):
        body = json.dumps(event).encode()
        at = received_at + dt.timedelta(milliseconds=i)
        key = object_key("", created.org_id, created.connection_id, at, body)
        if archive_url:
            open_archive(archive_url).put(key, body)
        landing.insert_events(
            db,
            connection_id=created.connection_id,
            org_id=created.org_id,
            text=body.decode(),
            events=[event],
            received_at=at,
            archive_key=key,
        )


def daily(db) -> dict:
    rows = db.execute(
        "select account_id, event_date, event_name, event_count, unique_users from analytics.account_event_daily"
    ).fetchall()
    return {(r[0], r[1], r[2]): (r[3], r[4]) for r in rows}


def total_events(db) -> int:
    return db.execute("select coalesce(sum(event_count), 0) from analytics.account_event_daily").fetchone()[0]


def run(dag, **conf):
    result = dag.test(run_conf=conf) if conf else dag.test()
    assert result.state == "success", f"{dag.dag_id} ended {result.state}"
    return result


def tracks(n, day_offset=0, user="u1", group="acme-ext", name="Report Created"):
    at = NOW - dt.timedelta(days=day_offset, hours=1)
    return [
        samples.event("track", user_id=user, group_id=group, name=name, at=at + dt.timedelta(seconds=i))
        for i in range(n)
    ]


def test_run_processes_new_events_and_a_rerun_changes_nothing(dags, db, acme):
    land(db, acme, tracks(5) + tracks(3, user="u2"), NOW)
    run(dags["segment_rollups"])
    assert total_events(db) == 8
    assert db.execute("select count(*) from analytics.product_events where account_id = 'a1'").fetchone()[0] == 8
    before = daily(db)
    run(dags["segment_rollups"])
    assert daily(db) == before
    status = db.execute("select status, staged_rows from control.pipeline_runs order by started_at").fetchall()
    assert status == [("success", 8), ("success", 0)]


def test_skipped_intervals_are_caught_up_by_one_run(dags, db, acme):
    land(db, acme, tracks(2), NOW - dt.timedelta(minutes=30))
    run(dags["segment_rollups"])
    for batch in range(3):  # three intervals without a run
        land(db, acme, tracks(4, day_offset=batch, user=f"late{batch}"), NOW - dt.timedelta(minutes=20 - batch))
    run(dags["segment_rollups"])
    assert total_events(db) == 14


def test_failed_run_then_retry_is_exact(dags, db, acme):
    land(db, acme, tracks(6), NOW)
    db.execute("alter table control.allowlist rename to allowlist_moved")  # the dbt build fails mid-way
    result = dags["segment_rollups"].test()
    assert result.state == "failed"
    db.execute("alter table control.allowlist_moved rename to allowlist")
    assert db.execute("select status from control.pipeline_runs").fetchone()[0] == "failed"
    run(dags["segment_rollups"])
    run(dags["segment_rollups"])
    assert total_events(db) == 6


def test_replay_after_allowlist_change_brings_old_events_exactly_once(dags, db, acme, archive_url):
    old_day = (NOW - dt.timedelta(days=3)).replace(hour=12)
    land(db, acme, tracks(4, day_offset=3, name="Invite Sent") + tracks(2, day_offset=3), old_day, archive_url)
    run(dags["segment_rollups"])
    assert total_events(db) == 2
    db.execute("delete from raw.segment_events")  # pruned from staging; the archive still has them
    connections.allowlist(db, acme.connection_id, add=["Invite Sent"])
    conf = dict(
        connection_id=acme.connection_id, start_date=old_day.date().isoformat(), end_date=NOW.date().isoformat()
    )
    run(dags["segment_replay"], **conf)
    assert total_events(db) == 6
    run(dags["segment_replay"], **conf)
    assert total_events(db) == 6
    assert db.execute("select count(*) from raw.segment_events").fetchone()[0] == 6


def test_reconcile_moves_unresolved_events_onto_a_newly_mapped_account(dags, db, acme):
    land(db, acme, tracks(3, group="globex-ext"), NOW)
    run(dags["segment_rollups"])
    assert daily(db)[(None, (NOW - dt.timedelta(hours=1)).date(), "Report Created")][0] == 3
    entities.upsert(
        db,
        "acme",
        entities.ACCOUNTS,
        [dict(account_id="g1", name="Globex", external_id="globex-ext", ps_id=None, vitally_id=None, traits={})],
    )
    run(dags["segment_reconcile"], connection_id=acme.connection_id)
    counts = {k[0]: v[0] for k, v in daily(db).items()}
    assert counts == {"g1": 3}


def test_maintenance_deletes_only_staged_and_archived_rows(dags, db, acme, archive_url):
    old = NOW - dt.timedelta(days=45)
    land(db, acme, tracks(3, day_offset=45), old, archive_url)
    land(db, acme, tracks(2, day_offset=44, user="gone"), old + dt.timedelta(days=1))  # never archived
    land(db, acme, tracks(2), NOW, archive_url)  # recent: kept
    run(dags["segment_rollups"])  # staging consumes them all
    land(db, acme, tracks(1, day_offset=45, user="late"), old, archive_url)  # not yet consumed by staging
    run(dags["segment_maintenance"])
    left = db.execute("select payload->>'userId', count(*) from raw.segment_events group by 1 order by 1").fetchall()
    assert left == [("gone", 2), ("late", 1), ("u1", 2)]
